#!/usr/bin/env bash
# tests/bench/load.py against a real `baton serve` (singleton, real socket): a closed-loop
# point and a Poisson point each complete every request with the token counts asked for, the
# latencies are ordered as they must be (TTFT <= e2e, the server's own TTFT <= the client's),
# the CSV gets a header and one row per point; and a server that refuses the requests (wrong
# API key) makes load.py fail, naming the status, instead of reporting numbers.
source "$(dirname "$0")/lib.sh"
need_model
if ! "$BATON" serve --help >/dev/null 2>&1; then
    echo "SKIP: this baton has no serve command"
    exit 77
fi
command -v curl >/dev/null || { echo "SKIP: curl not found"; exit 77; }
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

wait_for() { # wait_for SECONDS CMD...: polls CMD every 0.1 s; false when it never held
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
listening() { grep -qE 'listening on http://[0-9.]+:[0-9]+' "$tmp/err"; }
ready() { curl -sf -o /dev/null "$url/ready"; }

"$BATON" serve --model "$MODEL" --threads 2 --port 0 --api-key k1 --ctx 1024 \
    2>"$tmp/err" &
pid=$!
if ! wait_for 60 listening; then
    fail "serve: no 'listening on' line within 60 s: $(cat "$tmp/err")"
    finish
    exit
fi
url=$(grep -oE 'http://[0-9.]+:[0-9]+' "$tmp/err" | head -1)
wait_for 120 ready || fail "serve: /ready not 200 within 120 s: $(cat "$tmp/err")"

OPENAI_API_KEY=k1 python3 "$here/bench/load.py" --url "$url" --label t --concurrency 2 \
    --rates 4 --requests 4 --max-tokens 8 --kinds short,medium --server-metrics \
    --csv "$tmp/out.csv" --jsonl "$tmp/out.jsonl" >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
if python3 - "$tmp/out.jsonl" <<'PY'; then
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["mode"] for r in rows] == ["concurrency", "poisson"], rows
for r in rows:
    assert r["requests_ok"] == 4 and r["requests_failed"] == 0, r
    assert r["output_tokens"] == 32, r            # 4 requests x max_tokens 8 (EOS ignored)
    assert 0 < r["ttft_p50_ms"] <= r["e2e_p50_ms"], r
    assert 0 < r["ttft_p99_ms"] <= r["e2e_p99_ms"], r
    assert r["tpot_p50_ms"] > 0 and r["itl_p50_ms"] > 0, r
    assert r["output_tok_s"] > 0, r
    # the server's TTFT is measured inside the client's
    assert 0 < r["server_ttft_mean_ms"] <= r["ttft_mean_ms"], r
PY
    pass "load.py: 2 points, 4 requests each, 8 tokens each, latencies ordered (rc $rc)"
else
    fail "load.py: rc $rc: $(cat "$tmp/stdout" "$tmp/stderr")"
fi
if [[ $(wc -l <"$tmp/out.csv") -eq 3 ]] && head -1 "$tmp/out.csv" | grep -q '^label,mode,concurrency'; then
    pass "load.py: CSV header and one row per point"
else
    fail "load.py: CSV: $(cat "$tmp/out.csv")"
fi

OPENAI_API_KEY=wrong python3 "$here/bench/load.py" --url "$url" --concurrency 1 \
    --requests 1 --max-tokens 4 >"$tmp/stdout2" 2>"$tmp/stderr2"
rc=$?
if [[ $rc -ne 0 ]] && grep -q "HTTP 401" "$tmp/stderr2" && [[ ! -s $tmp/stdout2 ]]; then
    pass "load.py: a 401 fails the run and names the status"
else
    fail "load.py with a wrong key: rc $rc: $(cat "$tmp/stdout2" "$tmp/stderr2")"
fi

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=
[[ $rc -eq 0 ]] && pass "serve: SIGTERM, exit 0" || fail "serve: SIGTERM gave exit $rc"
finish
