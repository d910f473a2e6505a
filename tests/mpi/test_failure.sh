#!/usr/bin/env bash
# test_failure.sh [CASE...] - a stage that dies or hangs mid-generation ends the whole job with
# a message naming it; a healthy stage, or a coordinator that was itself stopped, is never
# blamed. Cases (default: kill stop):
#   kill          SIGKILL of stage rank 2 (mpirun -np 3): the job exits non-zero within 10 s
#                 with an error naming rank 2, and no process of the job is left;
#   stop          SIGSTOP of stage rank 1 with --stage-timeout-ms 2000 --heartbeat-ms 200: the
#                 coordinator reports rank 1 in under 8 s, the job exits non-zero, and no
#                 process is left, the stopped one included;
#   stop_hb20     the same with --heartbeat-ms 20: the healthy rank 2 heartbeating fast must
#                 not hide the stopped rank 1 (reported within 5 s, rank 2 not blamed);
#   stop_hb90     SIGSTOP of the last stage (rank 2) with --heartbeat-ms 90: rank 1, whose
#                 activations then cannot leave, keeps heartbeating and is not blamed;
#   coord_pause   SIGSTOP of the coordinator for 3.5 s (--stage-timeout-ms 1000), then SIGCONT:
#                 the generation completes, exit 0, no stage declared dead;
#   long_prompt   a 1,900-token prompt in micro-batches of 1,024 rows with --stage-timeout-ms
#                 1000: each stage computes for seconds at a time (one thread), heartbeating
#                 meanwhile; exit 0 and the whole prompt processed.
#   dead_kill     deploy/baton-run --stages 2, SIGKILL of stage rank 2: mpirun ends the job at
#                 once, but baton's own line names the rank, its layers and this host ("stage
#                 rank 2 (layers A-B on HOST) is gone"), the exit status is mpirun's 137, the
#                 healthy rank 1 is not named, nothing is left, all within 15 s;
#   dead_segv     the same with SIGSEGV of stage rank 1 (a crash): exit status 139;
#   dead_two      deploy/baton-run --stages 3, SIGKILL of ranks 3 and 2 at once (mpirun's pause
#                 before its SIGTERM is cut short, so the coordinator's SIGTERM handler may be
#                 the one that speaks): only ranks 2 and 3 are named, never the healthy rank 1.
# Leftovers are SIGCONT+SIGKILLed at the end so CI never hangs, and counted as failures.
# Needs SmolLM2 (the tiny model's 256-token context ends a generation too soon).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model smol
marker="bt-failure-test-$$-$RANDOM"

cleanup() {
    local left
    left=$(procs_matching "$marker")
    if [[ -n $left ]]; then
        # shellcheck disable=SC2086
        kill -CONT $left 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# start_job NAME NP [BATON FLAGS...] - baton generate in the background (pid in $job, output in
# $WORK/NAME.out, errors in $WORK/NAME.err), with the marker on its command line; through
# deploy/baton-run when LAUNCH=baton-run, else through run_mpi_test.sh.
start_job() {
    local name=$1 np=$2
    shift 2
    local gen=(generate --model "$MODEL" --threads 1 --temperature 0 --ignore-eos --ctx 8192 "$@")
    if [[ ${LAUNCH:-} == baton-run ]]; then
        timeout --kill-after=10 90 "$MPI_DIR/../../deploy/baton-run" --baton "$BATON" \
            --stages $((np - 1)) "${gen[@]}" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    else
        BT_MPI_TIMEOUT=90 mpi_run "$np" "$BATON" "${gen[@]}" >"$WORK/$name.out" \
            2>"$WORK/$name.err" &
    fi
    job=$!
}

# wait_output NAME BYTES - waits until the job has streamed BYTES bytes (it is generating).
wait_output() {
    local t0
    t0=$(now_ms)
    while [[ $(wc -c <"$WORK/$1.out") -lt $2 ]]; do
        if ! kill -0 "$job" 2>/dev/null; then
            fail "$1: the job ended before producing output"
            tail -5 "$WORK/$1.err"
            return 1
        fi
        if (($(now_ms) - t0 > 60000)); then
            fail "$1: no output within 60 s"
            return 1
        fi
        sleep 0.1
    done
}

# no_leftovers NAME - nothing of the job may survive it (give the launcher a moment to reap).
no_leftovers() {
    local left t_end
    t_end=$(($(now_ms) + 3000))
    while left=$(procs_matching "$marker") && [[ -n $left ]] && (($(now_ms) < t_end)); do
        sleep 0.1
    done
    if [[ -n $left ]]; then
        fail "$1: processes left behind: $(echo $left)"
        # shellcheck disable=SC2086
        ps -o pid,stat,args -p "$(echo $left | tr ' ' ,)" | cut -c1-150
        # shellcheck disable=SC2086
        kill -CONT $left 2>/dev/null
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    else
        pass "$1: no process left"
    fi
}

# run_case NAME SIGNAL RANK DEADLINE_S [BATON FLAGS...] - SIGNAL to stage RANK of a 3-rank job
# once it generates; the job must end within DEADLINE_S, non-zero, blaming RANK and no other.
run_case() {
    local name=$1 sig=$2 rank=$3 deadline=$4
    shift 4
    local err="$WORK/$name.err"
    start_job "$name" 3 --prompt "Tell me a very long story. ($marker)" --max-tokens 100000 "$@"
    wait_output "$name" 16 || return
    local victim
    victim=$(find_rank "$rank")
    if [[ -z $victim ]]; then
        fail "$name: no baton process with OMPI_COMM_WORLD_RANK=$rank"
        return
    fi
    kill "-$sig" "$victim"
    local t_sig
    t_sig=$(now_ms)
    while kill -0 "$job" 2>/dev/null && (($(now_ms) - t_sig < 20000)); do
        sleep 0.05
    done
    local elapsed=$(($(now_ms) - t_sig))
    if kill -0 "$job" 2>/dev/null; then
        fail "$name: the job still runs 20 s after SIG$sig of rank $rank"
        kill -CONT "$victim" 2>/dev/null
        kill -TERM "$job" 2>/dev/null
    fi
    wait "$job"
    local rc=$?
    echo "     $name: exit $rc ${elapsed} ms after SIG$sig of rank $rank (pid $victim)," \
        "$(wc -c <"$WORK/$name.out") bytes of output"
    grep -iE 'error|rank' "$err" | head -4 | sed 's/^/     /'
    [[ $rc -ne 0 ]] && pass "$name: exit status $rc" || fail "$name: exit status 0"
    ((elapsed < deadline * 1000)) && pass "$name: ended in ${elapsed} ms (< ${deadline} s)" ||
        fail "$name: took ${elapsed} ms (limit ${deadline} s)"
    if grep -qE "rank $rank\b" "$err"; then
        pass "$name: the error names rank $rank"
    else
        fail "$name: no message names rank $rank"
        tail -5 "$err"
    fi
    # The healthy stage is never the one blamed.
    local other=$((3 - rank))
    if grep -qE "^baton [a-z]+: stage rank $other\b" "$err"; then
        fail "$name: the healthy rank $other is blamed"
    else
        pass "$name: the healthy rank $other is not blamed"
    fi
    no_leftovers "$name"
}

# coord_pause: the coordinator stopped for 3.5 s, over three times --stage-timeout-ms, while
# the stages keep heartbeating into its queue; resumed, it must not blame them.
coord_pause() {
    local name=coord_pause
    start_job "$name" 3 --prompt "Tell me a very long story. ($marker)" --max-tokens 160 \
        --heartbeat-ms 100 --stage-timeout-ms 1000
    wait_output "$name" 16 || return
    local coord
    coord=$(find_rank 0)
    if [[ -z $coord ]]; then
        fail "$name: no coordinator process (rank 0)"
        return
    fi
    kill -STOP "$coord"
    sleep 3.5
    kill -CONT "$coord"
    local t0
    t0=$(now_ms)
    while kill -0 "$job" 2>/dev/null && (($(now_ms) - t0 < 60000)); do
        sleep 0.1
    done
    kill -0 "$job" 2>/dev/null && kill -TERM "$job"
    wait "$job"
    local rc=$?
    grep -iE 'error|rank|generation:' "$WORK/$name.err" | head -4 | sed 's/^/     /'
    [[ $rc -eq 0 ]] && pass "$name: exit status 0" || fail "$name: exit status $rc"
    if grep -qE '^generation: 160 tokens' "$WORK/$name.err"; then
        pass "$name: all 160 tokens generated"
    else
        fail "$name: the generation did not complete"
    fi
    no_leftovers "$name"
}

# long_prompt: micro-batches of 1,024 prompt rows keep each stage computing for longer than
# --stage-timeout-ms 1000 on one thread; its heartbeats must go on meanwhile.
long_prompt() {
    local name=long_prompt text="$WORK/long.txt"
    # Our own documentation as the text: about 1,900 tokens, within the 8,192-token context.
    cat "$MPI_DIR/../../docs/architecture.md" "$MPI_DIR/../../docs/deployment.md" |
        head -c 7000 >"$text"
    echo "($marker)" >>"$text"
    [[ -s $text ]] || { fail "$name: no text"; return; }
    start_job "$name" 3 --file "$text" --max-tokens 4 --stage-timeout-ms 1000 \
        --prefill-chunk 1024 --max-batch 1024
    local t0
    t0=$(now_ms)
    wait "$job"
    local rc=$?
    echo "     $name: exit $rc after $(($(now_ms) - t0)) ms"
    grep -iE 'error|rank|prompt:|generation:' "$WORK/$name.err" | head -4 | sed 's/^/     /'
    [[ $rc -eq 0 ]] && pass "$name: exit status 0" || fail "$name: exit status $rc"
    local n
    n=$(sed -n 's/^prompt: \([0-9]*\) tokens.*/\1/p' "$WORK/$name.err")
    if [[ -n $n && $n -ge 1500 ]]; then
        pass "$name: a $n-token prompt (two 1,024-row micro-batches)"
    else
        fail "$name: prompt of '${n}' tokens, expected over 1,500"
    fi
    no_leftovers "$name"
}

# dead_case NAME NP SIGNAL EXIT HEALTHY RANK... - SIGNAL to the stage RANKs (at once) of an
# NP-rank job started by deploy/baton-run. mpirun ends the job itself with exit status EXIT;
# baton must still print its own line naming a killed rank with its layers and this host, and
# never name the HEALTHY rank.
dead_case() {
    local name=$1 np=$2 sig=$3 want=$4 healthy=$5
    shift 5
    local err="$WORK/$name.err" r pids=()
    LAUNCH=baton-run start_job "$name" "$np" \
        --prompt "Tell me a very long story. ($marker)" --max-tokens 100000
    wait_output "$name" 16 || return
    for r in "$@"; do
        pids+=("$(find_rank "$r")")
        [[ -n ${pids[-1]} ]] || { fail "$name: no baton process of rank $r"; return; }
    done
    kill "-$sig" "${pids[@]}"
    local t_sig
    t_sig=$(now_ms)
    while kill -0 "$job" 2>/dev/null && (($(now_ms) - t_sig < 15000)); do
        sleep 0.05
    done
    local elapsed=$(($(now_ms) - t_sig))
    if kill -0 "$job" 2>/dev/null; then
        fail "$name: the job still runs 15 s after SIG$sig of rank(s) $*"
        kill -TERM "$job" 2>/dev/null
    else
        pass "$name: ended in ${elapsed} ms"
    fi
    wait "$job"
    local rc=$?
    echo "     $name: exit $rc, SIG$sig to rank(s) $* (pids ${pids[*]})"
    grep '^baton ' "$err" | head -4 | sed 's/^/     /'
    [[ $rc -eq $want ]] && pass "$name: exit status $rc" ||
        fail "$name: exit status $rc, expected $want"
    local ranks
    ranks=$(IFS='|'; echo "$*")
    if grep -qE "^baton generate: stage rank ($ranks) \(layers [0-9]+-[0-9]+ on $(hostname)\) is gone: its process [0-9]+ ended" "$err"; then
        pass "$name: baton names the dead stage, its layers and host"
    else
        fail "$name: no line of baton's names rank $* with its layers and host"
        tail -8 "$err"
    fi
    # (The start-up line names every stage with where its weights came from: not a blame.)
    if grep -vE "^baton [a-z]+: ready in " "$err" | grep -qE "^baton [a-z]+: .*stage rank $healthy\b"; then
        fail "$name: the healthy rank $healthy is named"
    else
        pass "$name: the healthy rank $healthy is not named"
    fi
    no_leftovers "$name"
}

cases=("$@")
[[ ${#cases[@]} -gt 0 ]] || cases=(kill stop)
for c in "${cases[@]}"; do
    case $c in
    kill) run_case kill KILL 2 10 ;;
    stop) run_case stop STOP 1 8 --stage-timeout-ms 2000 --heartbeat-ms 200 ;;
    stop_hb20) run_case stop_hb20 STOP 1 5 --stage-timeout-ms 2000 --heartbeat-ms 20 ;;
    stop_hb90) run_case stop_hb90 STOP 2 5 --stage-timeout-ms 2000 --heartbeat-ms 90 ;;
    coord_pause) coord_pause ;;
    long_prompt) long_prompt ;;
    dead_kill) dead_case dead_kill 3 KILL 137 1 2 ;;
    dead_segv) dead_case dead_segv 3 SEGV 139 2 1 ;;
    dead_two) dead_case dead_two 4 KILL 137 1 3 2 ;;
    *) echo "unknown case '$c'"; exit 2 ;;
    esac
done
finish
