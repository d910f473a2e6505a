#!/usr/bin/env bash
# test_split_measured.sh - the measured split across real ranks (issue 11, third CI must-show):
# SmolLM2 on 3 stages under mpirun, one stage rank moved by cgroup_exec.sh into a cgroup v1 cpu
# group with a CFS quota of a fifth of a core, `--split measured`: the coordinator probes each stage
# in turn (Probe/ProbeReply before the Hello) and logs each one's speed and layers.
#   last: the last stage (stage 2 counting from 0, rank 3) capped: it gets strictly fewer layers
#         than each of the others, and fewer than the compute split (the same cost model with
#         equal speeds) gives it;
#   middle: the middle stage (rank 2) capped: fewer layers than the compute split gives it
#         (not necessarily fewer than the last, which also holds the output head, as much work
#         as 10 of SmolLM2's layers; nor than the first, whose probe may find this shared
#         2-core machine busy: the uncapped stages' speeds are what they measure);
# and in both runs the greedy ids equal the singleton's. Skips (77) without the model or a
# writable cgroup v1 cpu hierarchy.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model smol
root=/sys/fs/cgroup/cpu
own=$(sed -n 's/^[0-9]*:[^:]*\bcpu\b[^:]*://p' /proc/self/cgroup | head -1)
base=$root${own%/}/bt_split_measured_$$
if [[ ! -f $root/cpu.cfs_quota_us || -z $own ]] || ! mkdir "$base" 2>/dev/null; then
    echo "SKIP: no writable cgroup v1 cpu hierarchy at $root${own%/}"
    exit 77
fi
cleanup() {
    local d
    for d in "$base"/rank*; do [[ -d $d ]] && rmdir "$d" 2>/dev/null; done
    rmdir "$base" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

args=(generate --model "$MODEL" --threads 1 --ctx 256 --max-batch 64 --max-seqs 4
      --temperature 0 --max-tokens 8 --ignore-eos --print-ids --prompt "The quick brown fox")
timeout 60 "$BATON" "${args[@]}" >"$WORK/s.out" 2>"$WORK/s.err" || fail "singleton: exit $?"
ids_of "$WORK/s.err" >"$WORK/s.ids"
[[ -s $WORK/s.ids ]] || fail "singleton: no ids"

# Layers per stage of the compute split (equal speeds), from baton info: "rank first last".
"$BATON" info --model "$MODEL" --ctx 256 --max-batch 64 --max-seqs 4 --stages 3 \
    --split compute >"$WORK/compute.out" 2>&1 || fail "info --split compute: exit $?"
compute_layers() { # RANK
    awk -v r="$1" '$2 == r && $3 ~ /^[0-9]+-[0-9]+$/ { split($3, a, "-"); print a[2] - a[1] + 1 }' \
        "$WORK/compute.out"
}

# plan_of ERR - "rank speed cores layers" per stage from the coordinator's log.
plan_of() {
    sed -n 's/^baton: --split measured: stage rank \([0-9]*\) on .*: speed \([0-9.]*\) (probe: [0-9.]* ms per layer pass, \([0-9.]*\) cores): layers \([0-9]*\)-\([0-9]*\), .*/\1 \2 \3 \4 \5/p' "$1" |
        awk '{ print $1, $2, $3, $5 - $4 + 1 }'
}

# run NAME CAPPED_RANK: 3 stages, CAPPED_RANK at a fifth of a core; leaves the plan in $WORK/NAME.plan
run() {
    local name=$1 capped=$2
    mpi_run 4 bash "$MPI_DIR/cgroup_exec.sh" --cpu "$base" 20000 "$capped" "$BATON" "${args[@]}" \
        --split measured >"$WORK/$name.out" 2>"$WORK/$name.err"
    local rc=$?
    plan_of "$WORK/$name.err" >"$WORK/$name.plan"
    echo "$name: stage rank, speed, cores during the probe, layers:"
    sed 's/^/    /' "$WORK/$name.plan"
    ids_of "$WORK/$name.err" >"$WORK/$name.ids"
    if [[ $rc -eq 0 ]] && cmp -s "$WORK/s.ids" "$WORK/$name.ids"; then
        pass "$name: rank $capped at a fifth of a core: exit 0, the singleton's greedy ids"
    else
        fail "$name: rank $capped at a fifth of a core: exit $rc, ids differ from the singleton's"
        tail -5 "$WORK/$name.err"
    fi
    if [[ $(wc -l <"$WORK/$name.plan") -ne 3 ]]; then
        fail "$name: the coordinator logged no measured plan of 3 stages"
        tail -5 "$WORK/$name.err"
        return 1
    fi
    local cores
    cores=$(awk -v r="$capped" '$1 == r { print $3 }' "$WORK/$name.plan")
    if awk -v c="$cores" 'BEGIN { exit !(c > 0 && c < 0.35) }'; then
        pass "$name: the capped stage's probe ran on $cores cores (quota: 0.2)"
    else
        fail "$name: the capped stage's probe ran on $cores cores; the quota did not hold"
    fi
}
layers_of() { awk -v r="$2" '$1 == r { print $4 }' "$WORK/$1.plan"; }

run last 3
l1=$(layers_of last 1) l2=$(layers_of last 2) l3=$(layers_of last 3) c3=$(compute_layers 3)
if [[ -n $l3 && -n $c3 && $l3 -lt $l1 && $l3 -lt $l2 && $l3 -lt $c3 ]]; then
    pass "last stage at a fifth of a core: $l3 layers, others $l1 and $l2 (compute split: $c3)"
else
    fail "last stage at a fifth of a core: $l3 layers, others $l1 and $l2 (compute split: $c3)"
fi

run middle 2
l1=$(layers_of middle 1) l2=$(layers_of middle 2) c2=$(compute_layers 2)
if [[ -n $l2 && -n $c2 && $l2 -lt $c2 ]]; then
    pass "middle stage at a fifth of a core: $l2 layers, first $l1 (compute split: $c2)"
else
    fail "middle stage at a fifth of a core: $l2 layers, first $l1 (compute split: $c2)"
fi
finish
