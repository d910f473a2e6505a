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

pass() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

finish() {
    echo "$n_pass passed, $n_fail failed"
    [[ $n_fail -eq 0 ]]
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
