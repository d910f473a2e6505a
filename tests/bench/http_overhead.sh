#!/usr/bin/env bash
# http_overhead.sh - what the HTTP layer adds to time to first token: the same prompt's TTFT
# through `baton serve` (client side, and the server's own baton:time_to_first_token_seconds)
# against `baton bench --pp N --tg 0` (the engine alone, N = the prompt's token count).
# Singleton (1 in-process stage), --threads 2, one request at a time. Never run in CI.
#
#   tests/bench/http_overhead.sh [--requests 30] [--prompt-index 2] [--kinds medium]
#                                [--client python|c]
#
# --client python (default): load.py with the openai-style streaming client; its own reading
# and JSON parsing count as overhead. --client c: tests/tools/http_ttft.c (built as
# build/tests/http_ttft), a blocking-socket client that adds almost nothing, so its
# client-minus-server difference is the server's HTTP layer.
# Prints one JSON line per measurement (the client's row, then bench's line).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
requests=30
index=2
kinds=medium
client=python
while [[ $# -gt 0 ]]; do
    case $1 in
    --requests) requests=$2; shift 2 ;;
    --prompt-index) index=$2; shift 2 ;;
    --kinds) kinds=$2; shift 2 ;;
    --client) client=$2; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "http_overhead: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ $client == python || $client == c ]] ||
    { echo "http_overhead: --client must be python or c, not '$client'" >&2; exit 2; }
model=${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}
baton=${BATON:-$root/build/coordinator/baton}
port=${BT_BENCH_PORT:-18080}
url=http://127.0.0.1:$port
log=$(mktemp)
"$baton" serve --model "$model" --threads 2 --port "$port" 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
    curl -sf -o /dev/null "$url/ready" && break
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
done
# The prompt's token count as the server counts it (usage.prompt_tokens of a 1-token request).
n=$(python3 - "$here/prompts.json" "$kinds" "$index" "$url" <<'PY'
import json, sys, urllib.request
kinds = set(sys.argv[2].split(","))
prompts = [p["prompt"] for p in json.load(open(sys.argv[1]))["prompts"] if p["kind"] in kinds]
body = json.dumps({"prompt": prompts[int(sys.argv[3])], "max_tokens": 1}).encode()
req = urllib.request.Request(sys.argv[4] + "/v1/completions", body,
                             {"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req))["usage"]["prompt_tokens"])
PY
)
echo "http_overhead: prompt $index of kinds '$kinds': $n tokens" >&2
case $client in
python)
    python3 "$here/load.py" --url "$url" --label "serve-pp$n" --concurrency 1 \
        --requests "$requests" --kinds "$kinds" --prompt-index "$index" --max-tokens 1 \
        --warmup 3 --server-metrics
    ;;
c)
    prompt=$(python3 -c "import json, sys
kinds = set(sys.argv[2].split(','))
print([p['prompt'] for p in json.load(open(sys.argv[1]))['prompts'] if p['kind'] in kinds]
      [int(sys.argv[3])], end='')" "$here/prompts.json" "$kinds" "$index")
    "${BT_BUILD_DIR:-$root/build}/tests/http_ttft" --port "$port" --prompt "$prompt" \
        --requests "$requests" --warmup 3
    ;;
esac
kill -TERM $pid
wait $pid || true
# The engine alone: one prompt of n tokens from an empty cache, TTFT = n / pp_tps.
"$baton" bench --model "$model" --threads 2 --pp "$n" --tg 0 --reps "$requests" 2>/dev/null |
    grep '^{' | python3 -c "import json, sys
r = json.loads(sys.stdin.read()); r['ttft_ms'] = round(r['pp'] / r['pp_tps'] * 1000, 3)
print(json.dumps(r))"
