#!/usr/bin/env bash
# make_quant_variants.sh - the Q4_K_M, Q8_0, Q4_0 and Q5_K_M variants of SmolLM2 by llama-quantize, the
# manifests they imply, and the proof that tests/tools/requant rebuilds them byte for byte.
#
# usage: tests/bench/make_quant_variants.sh [OUT_DIR]      (default build/quant-variants)
#
# For each variant (llama-quantize's ftype name, our name, llama_ftype number):
#   1. llama-quantize --allow-requantize SmolLM2-Q4_1.gguf OUT_DIR/...<VARIANT>.gguf VARIANT
#      (the llama.cpp sdist's build: $LLAMA_QUANTIZE, default
#      ~/.cache/baton/llama-server/build/bin/llama-quantize; tests/bench/build_llama_server.sh
#      builds it);
#   2. writes tests/data/quant/smollm2-<name>.manifest: general.file_type and one
#      "tensor type" line per tensor, read from llama-quantize's output, and
#      smollm2-<name>.tensors: gguf_tensors.py's listing of that output (name, type, dims,
#      sha256 of the data), which the CI test (tests/e2e/test_quant_variants.sh) compares
#      requant's file with, so CI re-proves the byte identity (n_embd 576 is not a
#      multiple of 256, so most Q4_K / Q6_K picks fell back to Q5_0 / Q8_0: the manifest
#      records what llama-quantize did, not what Q4_K_M means on a bigger model);
#   3. runs requant (BT_BUILD_DIR, default build) on the same source with that manifest;
#   4. compares the two files with tests/bench/gguf_tensors.py, a GGUF reader of its own
#      (Python standard library): every tensor's name, type, dims and the sha256 of its data
#      bytes must be equal, and so must every metadata key, type and value (arrays by the
#      sha256 of their raw bytes); and the two files must be equal as a whole (cmp: requant
#      writes llama-quantize's tensor order and layout). Differences are listed per tensor;
#      exit 1 if any.
# Offline (CI uses the committed manifests); the golden files for the variants come from
# tests/tools/make_quant_goldens.py on the files this writes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/build/quant-variants}
quantize=${LLAMA_QUANTIZE:-$HOME/.cache/baton/llama-server/build/bin/llama-quantize}
requant=${BT_BUILD_DIR:-$root/build}/tests/requant
src=${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}
reader="python3 $here/gguf_tensors.py"
[[ -x $quantize ]] || { echo "make_quant_variants: no llama-quantize at $quantize" >&2; exit 2; }
[[ -x $requant ]] || { echo "make_quant_variants: $requant is not built" >&2; exit 2; }
mkdir -p "$out"
status=0
for v in Q4_K_M:q4_k_m Q8_0:q8_0 Q4_0:q4_0 Q5_K_M:q5_k_m; do
    ftype=${v%:*} name=${v#*:}
    ref=$out/SmolLM2-135M-Instruct.$ftype.gguf
    mine=$out/SmolLM2-135M-Instruct.$ftype.requant.gguf
    manifest=$root/tests/data/quant/smollm2-$name.manifest
    "$quantize" --allow-requantize "$src" "$ref" "$ftype" >"$out/$name.quantize.log" 2>&1 ||
        { echo "llama-quantize $ftype failed: see $out/$name.quantize.log" >&2; exit 1; }
    $reader tensors "$ref" >"$out/$name.ref.tensors"
    $reader kv "$ref" >"$out/$name.ref.kv"
    file_type=$(awk -F'\t' '$1=="general.file_type"{print $3}' "$out/$name.ref.kv")
    {
        echo "# SmolLM2-135M-Instruct $ftype as llama-quantize made it from the Q4_1 file"
        echo "# (tests/bench/make_quant_variants.sh; input of tests/tools/requant)."
        echo "general.file_type $file_type"
        cut -f1,2 "$out/$name.ref.tensors" | tr '\t' ' '
    } >"$manifest"
    LC_ALL=C sort "$out/$name.ref.tensors" >"$root/tests/data/quant/smollm2-$name.tensors"
    start=$(date +%s.%N)
    "$requant" "$src" "$manifest" "$mine"
    secs=$(echo "$(date +%s.%N) - $start" | bc)
    $reader tensors "$mine" >"$out/$name.requant.tensors"
    $reader kv "$mine" >"$out/$name.requant.kv"
    n=$(wc -l <"$out/$name.ref.tensors")
    diffs=$(LC_ALL=C join -t $'\t' -a1 -a2 -e MISSING -o 0,1.2,1.4,2.2,2.4 \
        <(LC_ALL=C sort "$out/$name.ref.tensors") <(LC_ALL=C sort "$out/$name.requant.tensors") |
        awk -F'\t' '$2!=$4 || $3!=$5')
    if cmp -s <(sort "$out/$name.ref.tensors") <(sort "$out/$name.requant.tensors"); then
        echo "$ftype: all $n tensors byte-identical to llama-quantize's (requant ${secs}s)"
    else
        echo "$ftype: tensors differ from llama-quantize's (name, llama-quantize type/sha, requant type/sha):"
        echo "$diffs"
        status=1
    fi
    if cmp -s "$ref" "$mine"; then
        echo "$ftype: the whole file is llama-quantize's byte for byte (sha256 $(sha256sum "$mine" | cut -d' ' -f1))"
    else
        echo "$ftype: the files differ as a whole (first difference: $(cmp "$ref" "$mine" | head -1))"
        status=1
    fi
    if cmp -s "$out/$name.ref.kv" "$out/$name.requant.kv"; then
        echo "$ftype: metadata identical ($(wc -l <"$out/$name.ref.kv") keys, general.file_type $file_type)"
    else
        echo "$ftype: metadata differs:"
        diff "$out/$name.ref.kv" "$out/$name.requant.kv" || true
        status=1
    fi
    echo "$ftype: types $(cut -f2 "$out/$name.ref.tensors" | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')manifest $manifest"
done
exit $status
