#!/usr/bin/env bash
# From a fresh clone to a running server: install packages, build, fetch the model, start
# `baton serve` on it with 2 pipeline stages (mpirun through deploy/baton-run), wait until it is
# ready, ask it one chat question with curl, print the answer and the URLs, and keep serving
# until Ctrl-C (which drains and stops every rank).
# Usage: deploy/quickstart.sh ["your question"]
#   BT_BUILD_DIR as for deploy/build.sh; BT_PORT (default 8080), BT_HOST (default 127.0.0.1).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PROMPT="${1:-What are three good reasons to learn the C programming language? Answer briefly.}"
HOST="${BT_HOST:-127.0.0.1}"
PORT="${BT_PORT:-8080}"
BUILD="${BT_BUILD_DIR:-build}"

deploy/install-deps.sh
deploy/build.sh
MODEL=$(deploy/fetch-model.sh)
NAME=$(basename "$MODEL" .gguf) # the server's model id (see docs/api.md)
URL="http://$HOST:$PORT"
if curl -s -o /dev/null --max-time 2 "$URL/health"; then
    echo "quickstart: something already answers on $URL; stop it or set BT_PORT" >&2
    exit 1
fi

LOG=$(mktemp -t baton-serve.XXXXXX.log)
echo "quickstart: deploy/baton-run --stages 2 serve --model $MODEL --host $HOST --port $PORT"
echo "quickstart: server log: $LOG"
# Its own session: Ctrl-C reaches this script only, which then asks the server to drain
# (SIGTERM) and waits for every rank, instead of mpirun and the ranks each getting SIGINT.
setsid deploy/baton-run --stages 2 --baton "$BUILD/coordinator/baton" serve --model "$MODEL" \
    --host "$HOST" --port "$PORT" >"$LOG" 2>&1 &
SERVER=$!

# Whatever ends this script (Ctrl-C, an error below) also stops the server.
stop_server() {
    if kill -0 "$SERVER" 2>/dev/null; then
        echo
        echo "quickstart: stopping the server (it finishes running requests first)"
        kill -TERM "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
}
trap stop_server EXIT
trap 'exit 0' INT TERM

# Ready means a one-token probe went through both stages (GET /ready answers 200).
echo "quickstart: loading the model on 2 stages..."
for _ in $(seq 1 300); do
    if ! kill -0 "$SERVER" 2>/dev/null; then
        echo "quickstart: the server exited while starting; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    curl -sf -o /dev/null --max-time 2 "$URL/ready" && break
    sleep 0.2
done
if ! curl -sf -o /dev/null --max-time 2 "$URL/ready"; then
    echo "quickstart: the server did not become ready within 60 s; its log:" >&2
    cat "$LOG" >&2
    exit 1
fi

BODY=$(python3 -c 'import json, sys
print(json.dumps({"model": sys.argv[1], "max_tokens": 128,
                  "messages": [{"role": "user", "content": sys.argv[2]}]}))' "$NAME" "$PROMPT")
echo "quickstart: curl $URL/v1/chat/completions"
echo "quickstart: question: $PROMPT"
REPLY=$(curl -sS --max-time 120 "$URL/v1/chat/completions" \
    -H "Content-Type: application/json" -d "$BODY")
python3 -c 'import json, sys
r = json.loads(sys.argv[1])
if "error" in r:
    sys.exit("quickstart: the server answered an error: " + r["error"]["message"])
print("quickstart: answer:\n" + r["choices"][0]["message"]["content"].strip())' "$REPLY"

cat <<EOF

baton is serving $NAME on 2 stages:
  OpenAI-compatible API  $URL/v1   (model "$NAME"; see docs/api.md)
  chat page              $URL/
  readiness, metrics     $URL/ready  $URL/metrics
Press Ctrl-C to stop.
EOF
# Waits on the server; Ctrl-C interrupts the wait, exits, and the EXIT trap drains it.
wait "$SERVER" || true
echo "quickstart: the server exited on its own; its log: $LOG" >&2
cat "$LOG" >&2
exit 1
