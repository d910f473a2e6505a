#!/usr/bin/env bash
# run_mpi_test.sh MPIEXEC NP PROGRAM [ARGS...] - runs PROGRAM on NP ranks for ctest.
# The launcher flags live here: --allow-run-as-root only as root, --oversubscribe only when
# NP exceeds the cores, no core binding (ranks share cores with other tests), shared-memory
# transport without the single-copy mechanism that containers forbid (ptrace/CMA).
# A hard wall-clock limit (BT_MPI_TIMEOUT seconds, default 120) keeps a hung job from
# outliving the test. Open MPI's launchers run under deploy/mpirun-guard, as deploy/baton-run
# runs them: mpirun that hangs in its own finalize after every rank has ended is ended there,
# with the ranks' status, instead of at the limit.
set -u
if [ $# -lt 3 ]; then
    echo "usage: $0 MPIEXEC NP PROGRAM [ARGS...]" >&2
    exit 2
fi
mpiexec=$1
np=$2
shift 2

flags=(-np "$np" --bind-to none)
guard=()
if "$mpiexec" --version 2>/dev/null | grep -Eq "Open MPI|OpenRTE"; then
    guard=("$(cd "$(dirname "$0")/../../deploy" && pwd)/mpirun-guard")
    [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
    cores=$(nproc 2>/dev/null || echo 1)
    [ "$np" -gt "$cores" ] && flags+=(--oversubscribe)
    export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
    # Shared memory and self only: no probing for network interfaces on a one-node test.
    export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader}
    export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
fi
exec timeout --kill-after=10 "${BT_MPI_TIMEOUT:-120}" "${guard[@]}" "$mpiexec" "${flags[@]}" "$@"
