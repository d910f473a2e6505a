#!/usr/bin/env bash
# Gemma 3 270M (base, Q4_K_M; the second real model) against llama.cpp: greedy tokens and
# perplexity from tests/tools/make_gemma3_goldens.py (tests/data/golden/gemma3-*).
#
# - Greedy, 32 tokens on 10 prompts, default numerics: equal to llama.cpp's up to the end or
#   up to a step where llama.cpp's own top-1/top-2 margin is below NEAR_TIE (0.25, as the
#   SmolLM2 test) on at least 9 of 10 prompts (golden_lib.sh's check). Both engines round the
#   matmul inputs to 8 bits in a different summation order, and llama.cpp quantizes the inputs
#   of its q4_K/q6_K products to Q8_K (one scale per 256) where baton uses 32-blocks.
# - Perplexity of GPL-3 at n_ctx 512 and 1024 over the golden's first chunks within 1% of
#   llama.cpp's, on the same number of scored tokens. At 1024 the local layers' window (512
#   keys) masks the oldest keys of every scored position: a cache without the window scores
#   otherwise (measured: 228 instead of 18.3).
# Exercises every Gemma 3 step: embeddings times sqrt(n_embd), per-head Q/K norms, NeoX rope
# with base 1e6 (global layers) and 10000 (local), the sliding window on 15 of 18 layers, post
# norms, GeGLU and the tied output.
# The model comes from deploy/fetch-model.sh gemma3-270m (cached; skip 77 only when it cannot
# be fetched).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/golden_lib.sh"
# Not lib.sh's need_model (the SmolLM2 file): this test needs only the Gemma file. (The word
# need_model here is what labels the ctest "model" in tests/CMakeLists.txt.)
if ! MODEL=$("$E2E_DIR/../../deploy/fetch-model.sh" gemma3-270m); then
    echo "SKIP: deploy/fetch-model.sh gemma3-270m could not fetch the model"
    exit 77
fi
# baton info names the family and the steps it runs.
info=$("$BATON" info --model "$MODEL" 2>&1)
want="uses:         NeoX rope, GeGLU (tanh GELU), Q/K norms, post norms, embeddings x 25.2982, sliding window 512 on 15 of 18 layers (rope base 10000), tied output"
if grep -q "^architecture: gemma3$" <<<"$info" && grep -qxF "$want" <<<"$info"; then
    pass "baton info: gemma3, $(sed -n 's/^uses: *//p' <<<"$info")"
else
    fail "baton info: want 'architecture: gemma3' and '$want' in: $info"
fi
# --numerics llamacpp reproduces llama.cpp's llama graph only: refused by name, exit 2.
expect 2 "numerics llamacpp: reproduces the llama architecture only, not gemma3" -- \
    generate --model "$MODEL" --prompt hi --max-tokens 1 --numerics llamacpp
GREEDY_STEM=gemma3
check "gemma3 fast numerics" near-tie

ppl_golden "$GOLDEN/gemma3-perplexity.txt" # the text and its sha256; skip 77 if it differs
for ctx in 512 1024; do
    read -r want chunks scored < <(awk -F= -v c="$ctx" '$1=="n_ctx"{n=$2}
        n==c && $1=="ppl"{p=$2} n==c && $1=="n_chunks"{k=$2} n==c && $1=="n_scored"{s=$2}
        END{print p, k, s}' "$GOLDEN/gemma3-perplexity.txt")
    out=$("$BATON" perplexity --model "$MODEL" --file "$PPL_TEXT" --ctx "$ctx" --chunks "$chunks" \
        --threads 2 2>/dev/null)
    got=$(sed -n 's/^perplexity: \([0-9.]*\) .*/\1/p' <<<"$out")
    echo "baton --ctx $ctx: $out"
    echo "llama.cpp --ctx $ctx: $want over $scored tokens"
    if ppl_within "$got" "$want" 0.01; then
        pass "gemma3 perplexity --ctx $ctx: $got within 1% of llama.cpp's $want"
    else
        fail "gemma3 perplexity --ctx $ctx: ${got:-none} not within 1% of llama.cpp's $want"
    fi
    grep -q "over $scored scored tokens" <<<"$out" && pass "--ctx $ctx: scored $scored tokens like llama.cpp" \
        || fail "--ctx $ctx: scored token count differs from llama.cpp's $scored"
done
finish
