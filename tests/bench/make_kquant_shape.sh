#!/usr/bin/env bash
# make_kquant_shape.sh - a model whose Q4_K_M is made of K-quants: the synthetic TinyLlama-1.1B
# shape (2048 wide, 22 layers, random weights) in Q4_K_M, Q5_K_M, Q4_0 and Q4_1, by
# llama-quantize, for comparing the two engines' kernels where those types carry the model.
#
# usage: tests/bench/make_kquant_shape.sh [OUT_DIR]     (default ~/.cache/baton/synth)
#
# SmolLM2 (576 wide) and Gemma 3 270M (640 wide) are not multiples of 256, so llama-quantize's
# Q4_K_M of them is mostly Q5_0 and Q8_0 (make_quant_variants.sh). At 2048 wide every matrix
# can be a K-quant: Q4_K_M is Q4_K with Q6_K for the output, half of ffn_down and attn_v,
# as on the Llama and Mistral files people download; Q5_K_M the same with Q5_K for Q4_K; Q4_0
# is Q4_0 with a Q6_K output.
#   1. tests/tools/synth_model --shape tinyllama-1.1b --type q8_0 OUT_DIR/tl-q8_0.gguf
#      (seeded: the same bytes every time; the vocabulary is SmolLM2's, $BATON_MODEL);
#   2. llama-quantize --allow-requantize it to OUT_DIR/tl-{Q4_K_M,Q5_K_M,Q4_0,Q4_1}.gguf
#      ($LLAMA_QUANTIZE, default the llama.cpp sdist's build from build_llama_server.sh).
# Then, for example:
#   tests/bench/compare_llamacpp.sh --models "OUT_DIR/tl-Q4_1.gguf OUT_DIR/tl-Q4_K_M.gguf" \
#       --only "pp tg" --rounds 3
# GOOD FOR SPEED ONLY: the weights are noise. Files that exist are kept. Offline.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$HOME/.cache/baton/synth}
quantize=${LLAMA_QUANTIZE:-$HOME/.cache/baton/llama-server/build/bin/llama-quantize}
synth=${BT_BUILD_DIR:-$root/build}/tests/synth_model
[[ -x $quantize ]] || { echo "make_kquant_shape: no llama-quantize at $quantize" >&2; exit 2; }
[[ -x $synth ]] || { echo "make_kquant_shape: $synth is not built" >&2; exit 2; }
mkdir -p "$out"
src=$out/tl-q8_0.gguf
[[ -s $src ]] || "$synth" --shape tinyllama-1.1b --type q8_0 "$src"
for ftype in Q4_K_M Q5_K_M Q4_0 Q4_1; do
    dst=$out/tl-$ftype.gguf
    if [[ ! -s $dst ]]; then
        "$quantize" --allow-requantize "$src" "$dst.tmp" "$ftype" >"$out/tl-$ftype.log" 2>&1 ||
            { echo "llama-quantize $ftype failed: see $out/tl-$ftype.log" >&2; exit 1; }
        mv "$dst.tmp" "$dst"
    fi
    echo "$dst: $(python3 "$here/gguf_tensors.py" tensors "$dst" | cut -f2 | sort | uniq -c |
        awk '{printf "%s %s, ", $1, $2}')$(stat -c %s "$dst") bytes"
done
