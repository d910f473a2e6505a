#!/usr/bin/env bash
# Signals on a running `generate` (issue 8): SIGINT prints the completions that had finished
# and a final "interrupted" line, exit 130; a model file truncated under a running stage is
# reported by name (SIGBUS caught), exit 1. Waits poll for a condition with a bound.
source "$(dirname "$0")/lib.sh"
need_model
tmp=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

# wait_for SECONDS CMD...: polls CMD every 0.1 s; false when it never held.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}
n_finished() { grep -c "^completion [0-9]* of 3 finished" "$tmp/err" 2>/dev/null; }
some_finished() { [[ $(n_finished) -ge 1 ]]; }
gone() { ! kill -0 "$pid" 2>/dev/null; }

# Seed 1: two completions end within ~40 tokens, the third runs towards 4000.
BATON_MODEL="$MODEL" "$BATON" generate --prompt "Tell me a story" --n 3 --seed 1 \
    --max-tokens 4000 --ctx 4096 --threads 2 >"$tmp/out" 2>"$tmp/err" &
pid=$!
if ! wait_for 120 some_finished; then
    fail "SIGINT: no completion finished within 120 s: $(cat "$tmp/err")"
else
    kill -INT "$pid"
    wait_for 60 gone || fail "SIGINT: still running 60 s after the signal"
    wait "$pid"
    rc=$?
    pid=
    k=$(n_finished)
    blocks=$(grep -c "^=== completion" "$tmp/out")
    if [[ $rc -eq 130 && $k -ge 1 && $k -lt 3 && $blocks -eq $k ]] &&
        grep -q "interrupted by SIGINT; $k of 3 completions finished" "$tmp/err" &&
        ! grep -q "finish cancelled" "$tmp/out"; then
        pass "SIGINT: exit 130, the $k finished completions printed, status line"
    else
        fail "SIGINT: rc $rc, $k finished, $blocks printed: $(cat "$tmp/err") // $(head -c 2000 "$tmp/out")"
    fi
fi

# A copy of the model truncated while generate runs: the stage's next read of a weight page
# past the new end faults; the message names the file.
cp "$MODEL" "$tmp/model.gguf"
"$BATON" generate --model "$tmp/model.gguf" --prompt hi --max-tokens 4000 --ctx 4096 \
    --ignore-eos --seed 1 --threads 2 >"$tmp/out2" 2>"$tmp/err2" &
pid=$!
streaming() { [[ -s $tmp/out2 ]]; }
if ! wait_for 120 streaming; then
    fail "SIGBUS: no output within 120 s: $(cat "$tmp/err2")"
else
    truncate -s 1M "$tmp/model.gguf"
    wait_for 60 gone || fail "SIGBUS: still running 60 s after the truncation"
    wait "$pid"
    rc=$?
    pid=
    if [[ $rc -eq 1 ]] &&
        grep -q "model file '$tmp/model.gguf' was truncated or changed while in use" "$tmp/err2"; then
        pass "SIGBUS: exit 1 naming the truncated model"
    else
        fail "SIGBUS: rc $rc: $(cat "$tmp/err2")"
    fi
fi
finish
