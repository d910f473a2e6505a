#!/usr/bin/env bash
# test_baton_run.sh - deploy/baton-run on one machine (no --hostfile) runs a real 2-stage job
# with Open MPI's out-of-band channel and TCP transport restricted to the loopback interface
# (read from the running mpirun's environment), and the job completes.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model smol
marker="bt-baton-run-test-$$-$RANDOM"
"$MPI_DIR/../../deploy/baton-run" --baton "$BATON" --stages 2 --threads 1 generate \
    --model "$MODEL" --prompt "Tell me a story. ($marker)" --temperature 0 --ignore-eos \
    --max-tokens 64 >"$WORK/out" 2>"$WORK/err" &
job=$!
launcher=""
for _ in $(seq 1 100); do
    launcher=$(pgrep -f -- "^mpirun .*$marker" | head -1) # not deploy/mpirun-guard
    [[ -n $launcher ]] && break
    sleep 0.05
done
if [[ -n $launcher ]]; then
    env_of=$(tr '\0' '\n' <"/proc/$launcher/environ" 2>/dev/null)
    for v in OMPI_MCA_oob_tcp_if_include OMPI_MCA_btl_tcp_if_include; do
        if grep -qx "$v=lo" <<<"$env_of"; then
            pass "mpirun runs with $v=lo"
        else
            fail "mpirun runs without $v=lo"
        fi
    done
else
    fail "no mpirun process for the job"
fi
wait "$job"
rc=$?
[[ $rc -eq 0 ]] && pass "the job exits 0" || { fail "the job exits $rc"; tail -5 "$WORK/err"; }
grep -qE '^generation: 64 tokens' "$WORK/err" && pass "64 tokens generated" ||
    fail "the generation did not complete"
finish
