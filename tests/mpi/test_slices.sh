#!/usr/bin/env bash
# test_slices.sh tiny|smol - slices shipped to stage ranks that have no model file (issue 11),
# on one machine: `mpirun -np 1 baton generate --model M : -np 2 baton generate --model
# /nonexistent/...` puts the coordinator on rank 0 with the model and 2 stage ranks whose
# --model path does not exist, each stage with a slice cache of its own. Checks, with greedy
# f32 `baton generate` ids and logprobs equal to the singleton's every time:
#   run 1: both stages are shipped their slice (start-up line), the cache holds 2 entries
#          (slice + manifest each, no temp file);
#   run 2: both load from the cache, nothing shipped;
#   a flipped byte in stage 2's slice: run 3 names the entry and the chunk, deletes it and
#          has it shipped again; stage 1 still from the cache;
#   a partial entry (stage 1's manifest gone): run 4 says so and ships it again;
#   a local file of another model at the stages' --model (another header): its hash differs,
#          the stages say so and load from the cache;
#   the model itself at the stages' --model: "local file";
#   one stage ready at once (the model at its --model) and heartbeating every millisecond
#          while the other's slice is shipped: the coordinator keeps reading every rank
#          during the shipping (its HelloReply and Heartbeats are not an error);
#   a --slice-cache that cannot be created: exit 1 naming the stage and the directory;
#   a disk that fills during the fetch: exit 1 with the stage's error, no temp file left;
#   after each job no process of it is left.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kind=${1:?usage: test_slices.sh tiny|smol}
pick_model "$kind"
if [[ $kind == tiny ]]; then n_tok=16; else n_tok=8; fi
marker="bt-slices-$$"
common=(--threads 1 --act-codec f32 --ignore-eos --temperature 0 --print-ids --max-tokens "$n_tok"
    --prompt "The quick brown fox")
C1=$WORK/$marker/h1 # the stages' caches: rank 1 and rank 2 would be on separate hosts
C2=$WORK/$marker/h2

timeout 60 "$BATON" generate --model "$MODEL" "${common[@]}" >"$WORK/s.out" 2>"$WORK/s.err"
ids_of "$WORK/s.err" >"$WORK/s.ids"
if [[ $(sed -n 's/^output ids: //p' "$WORK/s.ids" | wc -w) -ne $n_tok ]]; then
    fail "singleton: no $n_tok ids"
    cat "$WORK/s.err"
    finish
    exit 1
fi

# job NAME STAGE_MODEL: coordinator with the model, stages with STAGE_MODEL and their caches.
job() {
    local name=$1 stage_model=$2
    mpi_run 1 "$BATON" generate --model "$MODEL" "${common[@]}" \
        : -np 1 "$BATON" generate --model "$stage_model" --slice-cache "$C1" "${common[@]}" \
        : -np 1 "$BATON" generate --model "$stage_model" --slice-cache "$C2" "${common[@]}" \
        >"$WORK/$name.out" 2>"$WORK/$name.err"
    local rc=$?
    ids_of "$WORK/$name.err" >"$WORK/$name.ids"
    if [[ $rc -eq 0 ]] && cmp -s "$WORK/s.ids" "$WORK/$name.ids"; then
        pass "$name: ids and logprobs equal the singleton's"
    else
        fail "$name: exit $rc, ids differ from the singleton's"
        tail -5 "$WORK/$name.err"
    fi
    local left
    left=$(procs_matching "$marker")
    [[ -z $left ]] || fail "$name: processes left: $left"
    READY=$(grep '^baton generate: ready in' "$WORK/$name.err")
}
# expect NAME RANK WORDS: the start-up line says WORDS for stage rank RANK.
expect() {
    local got
    got=$(echo "$READY" | tr ';' '\n' | grep "stage rank $2 ")
    if [[ $got == *"$3"* ]]; then
        pass "$1: stage rank $2: $3"
    else
        fail "$1: stage rank $2: '$got', want '$3'"
    fi
}
entries() { # files in cache $1 as "N slices, M manifests, T temp"
    echo "$(find "$1" -name '*.gguf' | wc -l) slices, $(find "$1" -name '*.manifest' | wc -l)" \
        "manifests, $(find "$1" -name '*.tmp.*' | wc -l) temp"
}

nowhere=$WORK/$marker/absent/model.gguf
job run1 "$nowhere"
expect run1 1 "shipped"
expect run1 2 "shipped"
for c in "$C1" "$C2"; do
    got=$(entries "$c")
    [[ $got == "1 slices, 1 manifests, 0 temp" ]] && pass "run1: cache ${c##*/}: $got" ||
        fail "run1: cache ${c##*/}: $got, want 1 slice, 1 manifest, 0 temp"
done

job run2 "$nowhere"
expect run2 1 "weights from the slice cache"
expect run2 2 "weights from the slice cache"

slice2=$(find "$C2" -name '*-last.gguf')
size=$(stat -c %s "$slice2")
off=$((size * 3 / 4))
printf '\x5a' | dd of="$slice2" bs=1 seek="$off" conv=notrunc status=none
job run3 "$nowhere"
expect run3 1 "weights from the slice cache"
expect run3 2 "shipped"
if grep -qE "stage rank 2: slice cache entry ${slice2##*/}: chunk [0-9]+ \(bytes [0-9]+\.\.[0-9]+\) has hash" \
    "$WORK/run3.err"; then
    pass "run3: the flipped byte is named: entry and chunk"
else
    fail "run3: no line naming the corrupt entry and its chunk"
    grep -i "slice" "$WORK/run3.err" | head -3
fi

entry1=$(find "$C1" -name '*-first.gguf')
rm "$entry1.manifest"
# Temp files a killed writer left (its pid gone), and one of a live process (this shell's): the
# refetch of the entry removes the first two and keeps the third.
sleep 0 &
dead=$!
wait $dead
touch "$entry1.tmp.$dead" "$entry1.manifest.tmp.$dead" "$entry1.tmp.$$"
job run4 "$nowhere"
expect run4 1 "shipped"
expect run4 2 "weights from the slice cache"
grep -q "stage rank 1: slice cache entry .*-first.gguf: no manifest (a partial entry)" "$WORK/run4.err" &&
    pass "run4: the partial entry is named" || fail "run4: no line naming the partial entry"
if [[ ! -e $entry1.tmp.$dead && ! -e $entry1.manifest.tmp.$dead && -e $entry1.tmp.$$ ]]; then
    pass "run4: a dead writer's temp files removed, a live one's kept"
else
    fail "run4: temp files: $(ls "$C1")"
fi
rm -f "$entry1.tmp.$$"

# Another model at the stages' path, with another header (the model hash covers the header and
# the size, not the weights): untied (an output.weight), or one byte longer.
other=$WORK/$marker/other.gguf
if [[ $kind == tiny ]]; then
    "${BT_BUILD_DIR:?}/tests/make_tiny_model" "$other" --type q4_1 --layers 6 --untied >/dev/null
else
    cp "$MODEL" "$other" && printf 'x' >>"$other" # the hash covers the size
fi
job run5 "$other"
expect run5 1 "weights from the slice cache"
expect run5 2 "weights from the slice cache"
[[ $(grep -c "is another model than the coordinator's (model hash differs)" "$WORK/run5.err") -eq 2 ]] &&
    pass "run5: both stages say their local file is another model" ||
    fail "run5: no 'another model' line from each stage"

job run6 "$MODEL"
expect run6 1 "weights from the local file"
expect run6 2 "weights from the local file"

# Stage rank 1 ready at once and heartbeating every millisecond while stage rank 2's slice is
# shipped (hundreds of heartbeats on the smol model): the coordinator reads them and stage 1's
# HelloReply while it ships, instead of failing on them or on the transport's queue limit.
C3=$WORK/$marker/h3
mpi_run 1 "$BATON" generate --model "$MODEL" "${common[@]}" --heartbeat-ms 1 \
    : -np 1 "$BATON" generate --model "$MODEL" --slice-cache "$C1" "${common[@]}" --heartbeat-ms 1 \
    : -np 1 "$BATON" generate --model "$nowhere" --slice-cache "$C3" "${common[@]}" --heartbeat-ms 1 \
    >"$WORK/hb.out" 2>"$WORK/hb.err"
rc=$?
ids_of "$WORK/hb.err" >"$WORK/hb.ids"
READY=$(grep '^baton generate: ready in' "$WORK/hb.err")
if [[ $rc -eq 0 ]] && cmp -s "$WORK/s.ids" "$WORK/hb.ids"; then
    pass "heartbeats during shipping: ids and logprobs equal the singleton's"
else
    fail "heartbeats during shipping: exit $rc, $(grep -m1 -i 'error\|shipp' "$WORK/hb.err")"
fi
expect hb 1 "weights from the local file"
expect hb 2 "shipped"
[[ -z $(procs_matching "$marker") ]] || fail "heartbeats during shipping: processes left"

# A cache directory that cannot be made: the job fails, naming the stage and the path.
mpi_run 1 "$BATON" generate --model "$MODEL" "${common[@]}" \
    : -np 2 "$BATON" generate --model "$nowhere" --slice-cache /proc/self/no/cache "${common[@]}" \
    >"$WORK/bad.out" 2>"$WORK/bad.err"
rc=$(abort_status $? "$WORK/bad.err")
if [[ $rc -eq 1 ]] && grep -q "stage rank [12] failed to start: slice cache: cannot create '/proc/self/no'" "$WORK/bad.err"; then
    pass "an unusable --slice-cache: exit 1 naming the stage and the directory"
else
    fail "an unusable --slice-cache: exit $rc, $(grep -m1 'slice cache' "$WORK/bad.err")"
fi
[[ -z $(procs_matching "$marker") ]] || fail "bad cache: processes left"

# A stage whose disk fills while its slice arrives (a file size limit of 40 KiB, SIGXFSZ
# ignored so that the write fails instead): the coordinator stops shipping and ends the job
# with the stage's error, and the failing stage leaves no temp file. TCP between the ranks:
# the shared-memory transport's own files would hit the limit first.
full=$WORK/$marker/full
OMPI_MCA_btl=tcp,self mpi_run 1 "$BATON" generate --model "$MODEL" "${common[@]}" \
    : -np 2 bash -c 'trap "" XFSZ; ulimit -f 40; exec "$0" "$@"' "$BATON" generate \
    --model "$nowhere" --slice-cache "$full" "${common[@]}" >"$WORK/full.out" 2>"$WORK/full.err"
rc=$(abort_status $? "$WORK/full.err")
if [[ $rc -eq 1 ]] && grep -q "stage rank [12] failed to start: slice cache: writing '$full/.*': File too large" "$WORK/full.err"; then
    pass "a disk full during the fetch: exit 1 naming the stage and the file"
else
    fail "a disk full during the fetch: exit $rc, $(grep -m1 -i 'slice\|error' "$WORK/full.err")"
    tail -15 "$WORK/full.err" # mpirun's own report, when the status is not the abort's
fi
# The stage that failed removes its temp file before it reports. The other stage may still be
# writing when the job's abort stops it (both fetch at once): a temp file it leaves is named by
# its dead writer's pid, and the next writer into the directory removes it (run4 above).
failed=$(sed -n "s/.*stage rank \([12]\) failed to start: slice cache: writing.*/\1/p" \
    "$WORK/full.err" | head -1)
own=-last.gguf.tmp.
[[ $failed == 1 ]] && own=-first.gguf.tmp.
left=$(find "$full" -name "*$own*" 2>/dev/null)
if [[ -n $failed && -z $left ]]; then
    pass "a disk full during the fetch: the failing stage (rank $failed) left no temp file"
else
    fail "a disk full during the fetch: rank '$failed' failed; its temp files left: $left"
fi
[[ -z $(procs_matching "$marker") ]] || fail "disk full: processes left"
finish
