#!/usr/bin/env bash
# test_families_stages.sh - Qwen 2 (Q/K/V biases, tied output) and Phi-3 (fused attn_qkv and
# gate-up tensors, read as row views) through the pipeline: the synthetic file of each
# (tests/tools/synth_model --arch, the family's vocabulary from ../shared/testdata/vocab;
# exit 77 when that folder is absent) split over 2 stages under mpirun -np 3 gives exactly the
# singleton's greedy ids and logprobs with the lossless f32 codec; then the same with stages
# that have no model file and are shipped their slices (a slice holds exactly what its stage
# reads: bt_weights_needs, so the fused tensors and, for the tied Qwen 2, token_embd on the
# last stage must travel).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
VOCAB="${BT_SHARED_DIR:-$MPI_DIR/../../../shared}/testdata/vocab"
if [[ ! -d $VOCAB ]]; then
    echo "SKIP: $VOCAB (llama.cpp's vocabulary files) is absent"
    exit 77
fi
SYNTH="${BT_BUILD_DIR:-}/tests/synth_model"
if [[ ! -x $SYNTH ]]; then
    echo "FAIL synth_model is not built ($SYNTH)"
    exit 1
fi
marker="bt-families-$$"
common=(--threads 1 --act-codec f32 --ignore-eos --temperature 0 --print-ids --max-tokens 12
    --prompt "Once upon a time, in a land far away,")
declare -A VOCAB_OF=([qwen2]=qwen2 [phi3]=phi-3)
for fam in qwen2 phi3; do
    MODEL=$WORK/$fam.gguf
    if ! "$SYNTH" --arch "$fam" --vocab-from "$VOCAB/ggml-vocab-${VOCAB_OF[$fam]}.gguf" "$MODEL" \
        >"$WORK/synth.out" 2>&1; then
        fail "$fam: synth_model: $(cat "$WORK/synth.out")"
        continue
    fi
    timeout 60 "$BATON" generate --model "$MODEL" "${common[@]}" >"$WORK/s.out" 2>"$WORK/s.err"
    ids_of "$WORK/s.err" >"$WORK/s.ids"
    if [[ $(sed -n 's/^output ids: //p' "$WORK/s.ids" | wc -w) -ne 12 ]]; then
        fail "$fam singleton: no 12 ids"
        tail -5 "$WORK/s.err"
        continue
    fi
    mpi_run 3 "$BATON" generate --model "$MODEL" "${common[@]}" >"$WORK/m.out" 2>"$WORK/m.err"
    rc=$?
    ids_of "$WORK/m.err" >"$WORK/m.ids"
    if [[ $rc -eq 0 ]] && cmp -s "$WORK/s.ids" "$WORK/m.ids"; then
        pass "$fam: 2 stages give the singleton's ids and logprobs ($(grep -m1 '^baton generate: ready' "$WORK/m.err" | cut -c1-120))"
    else
        fail "$fam: 2 stages: exit $rc, ids differ from the singleton's"
        diff "$WORK/s.ids" "$WORK/m.ids" | head -4
        tail -5 "$WORK/m.err"
    fi
    nowhere=$WORK/$marker/none.gguf
    mpi_run 1 "$BATON" generate --model "$MODEL" "${common[@]}" \
        : -np 1 "$BATON" generate --model "$nowhere" --slice-cache "$WORK/$marker/c1" "${common[@]}" \
        : -np 1 "$BATON" generate --model "$nowhere" --slice-cache "$WORK/$marker/c2" "${common[@]}" \
        >"$WORK/sl.out" 2>"$WORK/sl.err"
    rc=$?
    ids_of "$WORK/sl.err" >"$WORK/sl.ids"
    ready=$(grep -m1 '^baton generate: ready' "$WORK/sl.err")
    if [[ $rc -eq 0 ]] && cmp -s "$WORK/s.ids" "$WORK/sl.ids" && [[ $ready == *shipped* ]]; then
        pass "$fam: 2 stages from shipped slices give the singleton's ids ($ready)"
    else
        fail "$fam: shipped slices: exit $rc, ready line '$ready', ids differ or stages not shipped"
        tail -5 "$WORK/sl.err"
    fi
    left=$(procs_matching "$marker")
    [[ -z $left ]] || fail "$fam: processes left: $left"
done
finish
