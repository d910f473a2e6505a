#!/usr/bin/env bash
# test_stage_errors.sh - without mpirun, the stages are threads of one process; an error that
# every stage thread hits at setup is reported once (by the coordinator, naming a stage), not
# once per thread, and the exit status is the runtime failure's 1 (docs/api.md).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_model
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_e2e.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# 60M KV tokens (the most a Hello allows is 2^26) is hundreds of GB per stage: each of the
# three stage threads fails to allocate its KV cache. --stage-mem 500000G: a budget that holds
# it, or the plan would shrink the KV to this host's free memory (split.h) and nothing fails.
"$BATON" generate --model "$MODEL" --threads 1 --stages 3 --kv-tokens 60000000 --stage-mem 500000G \
    --prompt "Hello" --max-tokens 2 >"$WORK/out" 2>"$WORK/err"
rc=$?
sed 's/^/     /' "$WORK/err" | head -8
[[ $rc -eq 1 ]] && pass "exit status 1" || fail "exit status $rc, expected 1"
n=$(grep -c 'cannot allocate' "$WORK/err")
[[ $n -eq 1 ]] && pass "the setup error is reported once" ||
    fail "the setup error is reported $n times"
grep -qE '^baton generate: stage rank [1-3] failed to start: kv: cannot allocate' "$WORK/err" &&
    pass "the message names the stage" || fail "no message names the failing stage"
n=$(wc -l <"$WORK/err")
[[ $n -eq 1 ]] && pass "nothing else on stderr" || fail "$n lines on stderr, expected 1"
finish
