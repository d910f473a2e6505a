#!/usr/bin/env bash
# The Q4_K_M, Q8_0, Q4_0 and Q5_K_M variants of SmolLM2 (issue #12's quant types) against
# llama.cpp.
#
# Each variant is rebuilt here from the cached Q4_1 file by tests/tools/requant with its
# committed manifest (tests/data/quant/smollm2-<name>.manifest) into a temporary directory
# of the build, then:
#  - it is llama-quantize's file byte for byte: its sha256 must be the one the golden files
#    name (tests/data/golden/smollm2-<name>-greedy.tsv's header: the file llama.cpp ran), and
#    tests/bench/gguf_tensors.py's listing (name, type, dims, sha256 of every tensor's data)
#    must equal the committed listing of llama-quantize's file (smollm2-<name>.tensors, from
#    make_quant_variants.sh), which names the tensors that differ when the file does;
#  - a second requant of the same input is the same file (deterministic);
#  - greedy tokens (default numerics) follow llama.cpp's goldens
#    (tests/data/golden/smollm2-<name>-greedy.tsv, make_quant_goldens.py) up to near-ties
#    on at least 90% of the prompts, judged by golden_lib.sh's check like the Q4_1 file's,
#    with a near-tie up to 0.6 instead of 0.25: measured on these files, baton's first-step
#    top-1/top-2 margin differs from llama.cpp's by up to 0.59 (Q4_K_M) and 0.25 (Q8_0)
#    (Q4_1: 0.34), and baton's own scalar and AVX2 kernels differ from each other by up to
#    0.32 on Q4_K_M, so a flip below 0.6 is summation order and 8-bit activation rounding,
#    not model math (Q4_0 and Q5_K_M, on 2026-12-07: divergences at llama.cpp margins up to
#    0.17 and 0.32). Part of Q4_K_M's excess is that llama.cpp quantizes the activations of
#    its q4_K/q6_K products to Q8_K (one f32 scale per 256) where baton uses its 32-blocks
#    (worker/kernels/kernels.h says so); with those tensors made q5_0 it is 0.38.
#    No --numerics llamacpp check: that mode reproduces llama.cpp built for AVX-512, and these
#    goldens come from this AVX2 host's build (make_quant_goldens.py says how to remake them);
#  - perplexity over the golden's first chunks of GPL-3 at n_ctx 512 within 1% of
#    llama.cpp's, on the same number of scored tokens.
# Bad manifests are refused with a message naming the tensor (a tensor missing, an unknown
# type, a row length that is not a multiple of the type's block).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/golden_lib.sh"
need_model
SRC=$MODEL
DATA="${BT_TEST_DATA:-$E2E_DIR/../data}"
REQUANT="${BT_BUILD_DIR:?BT_BUILD_DIR must point to the build (ctest sets it)}/tests/requant"
if [[ ! -x $REQUANT ]]; then
    fail "requant is not built at $REQUANT"
    finish
    exit 1
fi
WORK=$(mktemp -d "$BT_BUILD_DIR/quant-variants.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ppl_golden "$GOLDEN/smollm2-q8_0-perplexity.txt" # skips when GPL-3 is not here

for name in q4_k_m q8_0 q4_0 q5_k_m; do
    manifest=$DATA/quant/smollm2-$name.manifest
    MODEL=$WORK/smollm2-$name.gguf
    start=$(date +%s%N)
    if ! err=$("$REQUANT" "$SRC" "$manifest" "$MODEL" 2>&1); then
        fail "$name: requant: $err"
        continue
    fi
    pass "$name: requant in $((($(date +%s%N) - start) / 1000000)) ms"
    if diff <(python3 "$E2E_DIR/../bench/gguf_tensors.py" tensors "$MODEL" | LC_ALL=C sort) \
        "$DATA/quant/smollm2-$name.tensors" >"$WORK/tensors.diff"; then
        pass "$name: all $(wc -l <"$DATA/quant/smollm2-$name.tensors") tensors byte-identical to llama-quantize's"
    else
        fail "$name: tensors differ from llama-quantize's (< requant, > llama-quantize): $(head -c 2000 "$WORK/tensors.diff")"
    fi
    want_sha=$(sed -n '1s/.*(sha256 \([0-9a-f]*\),.*/\1/p' "$GOLDEN/smollm2-$name-greedy.tsv")
    got_sha=$(sha256sum "$MODEL" | cut -d' ' -f1)
    if [[ -n $want_sha && $got_sha == "$want_sha" ]]; then
        pass "$name: the file is the one llama.cpp's goldens ran on (sha256 $got_sha)"
    else
        fail "$name: sha256 $got_sha, the goldens ran on ${want_sha:-(none in the golden header)}"
    fi
    if [[ $name == q8_0 ]]; then # once: the determinism of the tool, not of a variant
        if "$REQUANT" "$SRC" "$manifest" "$WORK/again.gguf" 2>&1 &&
            cmp -s "$MODEL" "$WORK/again.gguf"; then
            pass "$name: a second requant is the same file"
        else
            fail "$name: a second requant differs from the first"
        fi
        rm -f "$WORK/again.gguf"
    fi

    # shellcheck disable=SC2034 # read by golden_lib.sh's check
    GREEDY_STEM=smollm2-$name NEAR_TIE=0.6
    check "$name fast numerics" near-tie

    ppl_golden "$GOLDEN/smollm2-$name-perplexity.txt"
    out=$("$BATON" perplexity --model "$MODEL" --file "$PPL_TEXT" --ctx 512 --chunks "$PPL_CHUNKS" \
        --threads 2 2>&1)
    got=$(sed -n 's/^perplexity: \([0-9.]*\) over .*/\1/p' <<<"$out")
    echo "$name baton: $out"
    if ppl_within "$got" "$PPL_WANT" 0.01; then
        pass "$name: perplexity $got within 1% of llama.cpp's $PPL_WANT"
    else
        fail "$name: perplexity ${got:-none} not within 1% of llama.cpp's $PPL_WANT"
    fi
    if grep -q "over $PPL_SCORED scored tokens" <<<"$out"; then
        pass "$name: scored $PPL_SCORED tokens like llama.cpp"
    else
        fail "$name: scored token count differs from llama.cpp's $PPL_SCORED"
    fi
done

# Bad manifests: refused, the message names what is wrong, no output file left.
bad() {
    local what=$1 pattern=$2 err
    if err=$("$REQUANT" "$SRC" "$WORK/bad.manifest" "$WORK/bad.gguf" 2>&1); then
        fail "requant accepted a manifest with $what"
    elif grep -qE -- "$pattern" <<<"$err" && [[ ! -e $WORK/bad.gguf ]]; then
        pass "requant refuses $what: $err"
    else
        fail "requant on $what: message '$err' lacks /$pattern/ (or left $WORK/bad.gguf)"
    fi
}
m=$DATA/quant/smollm2-q8_0.manifest
grep -v '^blk.3.ffn_up.weight ' "$m" >"$WORK/bad.manifest"
bad "a tensor missing" "tensor blk.3.ffn_up.weight of .* is not in manifest"
sed 's/^blk.3.ffn_up.weight q8_0/blk.3.ffn_up.weight q3_K/' "$m" >"$WORK/bad.manifest"
bad "an unknown type" "tensor blk.3.ffn_up.weight: type 'q3_K' has no quantizer"
sed 's/^token_embd.weight q8_0/token_embd.weight q4_K/' "$m" >"$WORK/bad.manifest"
bad "a row length not a multiple of the block" "tensor token_embd.weight: ne\[0\] 576 is not a multiple of q4_K's block of 256"
{ cat "$m"; echo "blk.99.attn_q.weight q8_0"; } >"$WORK/bad.manifest"
bad "a tensor the file lacks" "names tensor blk.99.attn_q.weight, which .* lacks"
finish
