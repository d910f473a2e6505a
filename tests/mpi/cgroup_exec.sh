#!/usr/bin/env bash
# cgroup_exec.sh - run by mpirun in place of PROGRAM: a stage rank (OMPI_COMM_WORLD_RANK > 0)
# moves itself into cgroup v1 groups of its own, then execs PROGRAM; rank 0 (the coordinator)
# execs it as it is. All ranks of a test run on this one host, so this stands in for each
# stage's host having less memory, or fewer cores, than the others.
#
#   cgroup_exec.sh BASE CAP_BYTES PROGRAM [ARGS...]
#       every stage rank R in the memory group BASE/rank<R>, limited to CAP_BYTES
#   cgroup_exec.sh --cpu BASE QUOTA_US RANK[,RANK...] PROGRAM [ARGS...]
#       the stage ranks listed in the cpu group BASE/rank<R> with a CFS quota of QUOTA_US per
#       100000 us period (50000: half a core); the other ranks run as they are
set -eu
rank=${OMPI_COMM_WORLD_RANK:-0}
if [[ $1 == --cpu ]]; then
    base=$2 quota=$3 ranks=$4
    shift 4
    if [[ ,$ranks, == *,$rank,* ]]; then
        dir=$base/rank$rank
        mkdir -p "$dir"
        echo 100000 >"$dir/cpu.cfs_period_us"
        echo "$quota" >"$dir/cpu.cfs_quota_us"
        echo $$ >"$dir/cgroup.procs"
    fi
    exec "$@"
fi
base=$1 cap=$2
shift 2
if [[ $rank != 0 ]]; then
    dir=$base/rank$rank
    mkdir -p "$dir"
    echo "$cap" >"$dir/memory.limit_in_bytes"
    echo $$ >"$dir/cgroup.procs"
fi
exec "$@"
