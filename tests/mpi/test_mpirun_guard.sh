#!/usr/bin/env bash
# test_mpirun_guard.sh - deploy/mpirun-guard, which deploy/baton-run, the Slurm scripts and
# these tests run mpirun under.
#   With real mpirun: the exit status, stdin (to rank 0) and SIGTERM (to the ranks) pass
#   through as without the guard (SIGTERM: the job ends, a rank's trap saw it), with this bash
#   and with the path of bash before 5.1.
#   The hang it exists for: mpirun that never returns from its finalize after every rank has
#   ended (Open MPI 4.1 + PMIx, about 1 aborting job in 100 here, so no job can be made to show
#   it on demand). It is stood in for by a launcher that starts ranks and never reaps them,
#   which is what the stuck mpirun does: the guard ends it after BATON_MPIRUN_GRACE seconds
#   and exits with the lowest rank's non-zero exit code, else 128 + its signal, else 0.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
GUARD=$MPI_DIR/../../deploy/mpirun-guard
marker="bt-guard-$$-$RANDOM"
flags=(--bind-to none --oversubscribe)
[[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none

# real_mpirun GUARD WHAT: the exit status, stdin and SIGTERM through GUARD.
real_mpirun() {
    local GUARD=$1 what=$2
    rm -f "$WORK"/ready.* "$WORK"/term.*
    timeout 60 "$GUARD" "$BT_MPIEXEC" -np 2 "${flags[@]}" bash -c \
        "exit \$((OMPI_COMM_WORLD_RANK == 1 ? 3 : 0)) # $marker" >/dev/null 2>&1
    rc=$?
    [[ $rc -eq 3 ]] && pass "$what: mpirun's status passes through (rank 1 exits 3: 3)" ||
        fail "$what: mpirun's status: $rc, not 3"

    got=$(echo "line for rank 0" | timeout 60 "$GUARD" "$BT_MPIEXEC" -np 1 "${flags[@]}" bash -c \
        "read -r l; echo \"got: \$l\" # $marker" 2>/dev/null)
    [[ $got == "got: line for rank 0" ]] && pass "$what: stdin reaches rank 0" || fail "$what: stdin: '$got'"

    "$GUARD" "$BT_MPIEXEC" -np 2 "${flags[@]}" bash -c \
        "trap 'touch $WORK/term.\$OMPI_COMM_WORLD_RANK; exit 5' TERM
         touch $WORK/ready.\$OMPI_COMM_WORLD_RANK; sleep 30 & wait # $marker" >/dev/null 2>&1 &
    job=$!
    for _ in $(seq 1 200); do
        [[ -f $WORK/ready.0 && -f $WORK/ready.1 ]] && break
        sleep 0.1
    done
    kill -TERM "$job"
    wait "$job"
    rc=$?
    # mpirun sends SIGTERM to each rank, and kills the rest once one has exited: under load
    # the second rank may be killed before its trap runs.
    if [[ (-f $WORK/term.0 || -f $WORK/term.1) && $rc -ne 0 ]]; then
        pass "$what: SIGTERM to the guard reaches the ranks through mpirun (exit $rc)"
    else
        fail "$what: SIGTERM: exit $rc, ranks that got it: $(cd "$WORK" && echo term.*)"
    fi
    [[ -z $(procs_matching "$marker") ]] || fail "$what: processes left"
}
real_mpirun "$GUARD" "bash $BASH_VERSION"
# Bash before 5.1 (no wait -n -p; RHEL 8 has 4.4) looks once a second: that path, forced.
sed 's/^((BASH_VERSINFO.*$/: old bash/' "$GUARD" >"$WORK/guard_old_bash"
chmod +x "$WORK/guard_old_bash"
grep -q BASH_VERSINFO "$WORK/guard_old_bash" && fail "could not force the bash < 5.1 path"
real_mpirun "$WORK/guard_old_bash" "bash < 5.1 path"

# --- a launcher stuck after its ranks ended ---
cat >"$WORK/stuck_launcher.py" <<'EOF'
import os, sys, time
# stuck_launcher.py CODES MARKER: one child per code (n >= 0: exit n, n < 0: signal -n), with
# OMPI_COMM_WORLD_RANK set; never reaps them, as mpirun stuck in its finalize does not.
for rank, code in enumerate(int(c) for c in sys.argv[1].split(",")):
    if os.fork() == 0:
        os.environ["OMPI_COMM_WORLD_RANK"] = str(rank)
        end = "kill -%d $$" % -code if code < 0 else "exit %d" % code
        os.execvp("bash", ["bash", "-c", "sleep 1.5; %s # %s" % (end, sys.argv[2])])
time.sleep(120)
EOF
stuck() {
    local codes=$1 want=$2 guard=${3:-$GUARD} t0=$SECONDS
    BATON_MPIRUN_GRACE=2 timeout 60 "$guard" python3 "$WORK/stuck_launcher.py" "$codes" "$marker" \
        2>"$WORK/stuck.err"
    local rc=$? took=$((SECONDS - t0))
    if [[ $rc -eq $want ]] && ((took <= 8)) &&
        grep -q "mpirun-guard: mpirun (pid [0-9]*) was still running 2 s after every process it started had ended (rank 0 (pid [0-9]*): .*): an Open MPI hang in its finalize; ended it, exit $want" "$WORK/stuck.err"; then
        pass "stuck launcher, ranks $codes: ended in ${took} s, exit $want, the ranks named"
    else
        fail "stuck launcher, ranks $codes: exit $rc (want $want) in ${took} s: $(cat "$WORK/stuck.err")"
    fi
    [[ -z $(procs_matching "$marker") ]] || fail "stuck launcher, ranks $codes: processes left"
}
stuck 0,1,-15 1  # an MPI_Abort(1) by rank 1 while the others are ended by SIGTERM
stuck -15,0 143  # no rank exited non-zero: the lowest one a signal ended
stuck 0,0 0
grep -q "rank 1 (pid [0-9]*): exit 0" "$WORK/stuck.err" && pass "each rank's status is named" ||
    fail "the ranks' statuses: $(cat "$WORK/stuck.err")"
stuck 0,7 7 "$WORK/guard_old_bash"

BATON_MPIRUN_GRACE=soon "$GUARD" true 2>"$WORK/grace.err"
rc=$?
[[ $rc -eq 2 ]] && grep -q "BATON_MPIRUN_GRACE must be a positive number of seconds, not 'soon'" \
    "$WORK/grace.err" && pass "a bad BATON_MPIRUN_GRACE: exit 2, named" ||
    fail "a bad BATON_MPIRUN_GRACE: exit $rc, $(cat "$WORK/grace.err")"
finish
