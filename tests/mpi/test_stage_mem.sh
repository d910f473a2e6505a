#!/usr/bin/env bash
# test_stage_mem.sh - memory-aware planning across real ranks (issue 11, second CI must-show):
# each stage process is capped by a cgroup v1 memory limit of its own (cgroup_exec.sh) below the
# model file's size, and reads that limit itself (StageInfo). With 1 stage (mpirun -np 2) the
# coordinator refuses the plan before any stage loads a weight: exit 2 and a message naming
# stage rank 1, what it needs and what it has (the cgroup's number). With 3 stages (mpirun
# -np 4) each fits and the run generates the singleton's greedy ids. Skips (77) without the
# model or a writable cgroup v1 memory hierarchy.
#
#   test_stage_mem.sh [smol|synth]
#
# smol: SmolLM2 (94 MiB). synth: a model of a few hundred MiB written here by synth_model (the
# TinyLlama-1.1B shape cut to 8 layers, Q4_0, 299 MiB, seeded random weights with SmolLM2's
# tokenizer: good for memory, not for text).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kind=${1:-smol}
pick_model smol
if [[ $kind == synth ]]; then
    "${BT_BUILD_DIR:?}/tests/synth_model" --shape tinyllama-1.1b --type q4_0 --layers 8 --seed 1 \
        --vocab-from "$MODEL" "$WORK/synth.gguf" || { echo "synth_model failed"; exit 1; }
    MODEL=$WORK/synth.gguf
    last_layer=7
else
    last_layer=29
fi
root=/sys/fs/cgroup/memory
own=$(sed -n 's/^[0-9]*:[^:]*\bmemory\b[^:]*://p' /proc/self/cgroup | head -1)
base=$root${own%/}/bt_stage_mem_$$
if [[ ! -d $root || -z $own ]] || ! mkdir "$base" 2>/dev/null; then
    echo "SKIP: no writable cgroup v1 memory hierarchy at $root${own%/}"
    exit 77
fi
cleanup() {
    local d
    for d in "$base"/rank*; do [[ -d $d ]] && rmdir "$d" 2>/dev/null; done
    rmdir "$base" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

size=$(stat -c %s "$MODEL")
cap=$((size * ${BT_STAGE_MEM_CAP_PCT:-80} / 100)) # below the model: one stage cannot hold it
cap_mib=$(awk -v c="$cap" 'BEGIN { printf "%.1f", c / 1048576 }')
echo "model $size bytes, each stage capped at $cap bytes ($cap_mib MiB)"
wrap=(bash "$MPI_DIR/cgroup_exec.sh" "$base" "$cap")
args=(generate --model "$MODEL" --threads 1 --ctx 256 --max-batch 64 --max-seqs 4
      --temperature 0 --max-tokens 8 --ignore-eos --print-ids --prompt "The quick brown fox")

# 1 stage: refused up front.
mpi_run 2 "${wrap[@]}" "$BATON" "${args[@]}" >"$WORK/one.out" 2>"$WORK/one.err"
rc=$?
msg=$(grep -m1 "stage rank 1 (layers 0-$last_layer" "$WORK/one.err")
if [[ $rc -eq 2 && $msg == *"needs "*" MiB (weights "*" + KV "*" + scratch "* &&
      $msg == *"but has $cap_mib MiB (cgroup)"* ]]; then
    pass "1 stage under a $cap_mib MiB cgroup: refused with exit 2: $msg"
else
    fail "1 stage under a $cap_mib MiB cgroup: exit $rc, message '$msg'"
    tail -5 "$WORK/one.err"
fi
if grep -q 'HelloReply\|output ids' "$WORK/one.err"; then
    fail "1 stage: the stage got as far as loading"
fi

# 3 stages: each fits its cap, and the tokens are the singleton's.
timeout 60 "$BATON" "${args[@]}" >"$WORK/s.out" 2>"$WORK/s.err" || fail "singleton: exit $?"
# Out of the page cache (where the singleton's reads charged it to this test's group), so the
# stages' page faults charge the model's pages to their own capped groups: each then really
# holds its slice within its cap (clean pages beyond it are reclaimed, not an OOM). The
# peaks printed are for information: cgroup v1 charges a shared file page to the first group
# that faults it in, so the first stage may carry pages the others read after it.
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$MODEL" 2>/dev/null || true
mpi_run 4 "${wrap[@]}" "$BATON" "${args[@]}" >"$WORK/m.out" 2>"$WORK/m.err"
rc=$?
for r in 1 2 3; do
    peak=$(cat "$base/rank$r/memory.max_usage_in_bytes" 2>/dev/null || echo '?')
    echo "stage rank $r: cgroup peak usage $peak bytes of $cap"
done
ids_of "$WORK/s.err" >"$WORK/s.ids"
ids_of "$WORK/m.err" >"$WORK/m.ids"
if [[ $rc -eq 0 && -s $WORK/s.ids ]] && cmp -s "$WORK/s.ids" "$WORK/m.ids"; then
    pass "3 stages under $cap_mib MiB cgroups each: generated the singleton's ids"
else
    fail "3 stages under $cap_mib MiB cgroups each: exit $rc"
    tail -5 "$WORK/m.err"
fi
finish
