#!/usr/bin/env bash
# cgroup_exec.sh BASE CAP_BYTES PROGRAM [ARGS...] - run by mpirun in place of PROGRAM: a stage
# rank (OMPI_COMM_WORLD_RANK > 0) moves itself into a cgroup v1 memory group of its own,
# BASE/rank<R>, limited to CAP_BYTES, then execs PROGRAM; rank 0 (the coordinator) execs it
# as it is. All ranks of a test run on this one host, so this stands in for each stage's host
# having less memory than the model.
set -eu
base=$1 cap=$2
shift 2
rank=${OMPI_COMM_WORLD_RANK:-0}
if [[ $rank != 0 ]]; then
    dir=$base/rank$rank
    mkdir -p "$dir"
    echo "$cap" >"$dir/memory.limit_in_bytes"
    echo $$ >"$dir/cgroup.procs"
fi
exec "$@"
