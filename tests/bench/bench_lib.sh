# bench_lib.sh - sourced by the comparison scripts (serve_compare.sh, batch_compare.sh): a
# session of their own for --nice, the programs they compare, and the server each runs in the
# background ($pid) with its readiness probe. Expects `here` and `root` to be set.

# bench_autogroup NICE ARGS... - with --nice (NICE not empty) and the kernel's autogroups on,
# a process's nice value only counts within its session: re-executes the calling script ($0
# ARGS) in a session of its own and sets that session's autogroup nice to NICE.
bench_autogroup() {
    local nice=$1
    shift
    if [[ -n $nice && $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null) == 1 &&
        -z ${BT_BENCH_AUTOGROUP:-} ]]; then
        exec setsid -w env BT_BENCH_AUTOGROUP=1 bash -c \
            'echo "$1" >/proc/self/autogroup && shift && exec "$@"' _ "$nice" "$0" "$@"
    fi
}

# bench_programs NAME SYSTEMS - sets model, baton and, when SYSTEMS names llama-server, llama
# (built by build_llama_server.sh when missing); exits 2 when baton is not built. As root,
# lets mpirun run.
bench_programs() {
    model=${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}
    baton=${BATON:-$root/build/coordinator/baton}
    [[ -x $baton ]] || { echo "$1: $baton is not built" >&2; exit 2; }
    if [[ $2 == *llama-server* ]]; then
        llama=${LLAMA_SERVER:-$("$here/build_llama_server.sh")}
    fi
    [[ $(id -u) -eq 0 ]] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    return 0
}

# bench_stop - ends the background server $pid, if any (the scripts trap it on EXIT).
pid=""
bench_stop() {
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}

# bench_wait_ready NAME URL LOG - waits until URL answers 200 (baton: /ready; llama-server:
# /health, i.e. its model is loaded); exits 1 when $pid ends first or after 120 s.
bench_wait_ready() {
    for _ in $(seq 1 600); do
        curl -sf -o /dev/null "$2" && return 0
        kill -0 "$pid" 2>/dev/null || { echo "$1 exited (see $3)" >&2; exit 1; }
        sleep 0.2
    done
    echo "$1 not ready after 120 s (see $3)" >&2
    exit 1
}
