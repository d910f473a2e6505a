#!/usr/bin/env bash
# tests/tools/synth_model refuses bad arguments with a message naming the bad value (exit 2)
# and leaves no output file; runs without the model (each refusal comes before any read).
source "$(dirname "$0")/lib.sh"
SYNTH="${BT_BUILD_DIR:-}/tests/synth_model"
if [[ ! -x $SYNTH ]]; then
    echo "FAIL synth_model is not built ($SYNTH)"
    exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_synth_args.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# refuse PATTERN ARGS...: synth_model ARGS exits 2, stderr matches PATTERN, no out.gguf.
refuse() {
    local pattern=$1 err rc
    shift
    err=$("$SYNTH" "$@" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq 2 ]] && grep -qE -- "$pattern" <<<"$err" && [[ ! -e $WORK/out.gguf ]]; then
        pass "synth_model $* -> 2: $err"
    else
        fail "synth_model $* -> $rc (want 2, /$pattern/, no file): $err"
    fi
}
refuse "unknown --shape 'llama2-70b' \(known: smol-135m tinyllama-1.1b llama2-7b llama3-8b\)" \
    --shape llama2-70b --type q4_0 "$WORK/out.gguf"
refuse "unknown --type 'q4_k' \(known: q4_0 q4_1 q8_0\)" --shape llama2-7b --type q4_k "$WORK/out.gguf"
refuse "--layers '0' must be 1\.\.1024" --shape llama2-7b --type q4_0 --layers 0 "$WORK/out.gguf"
refuse "--seed 'x1' is not an unsigned integer" --shape llama2-7b --type q4_0 --seed x1 "$WORK/out.gguf"
refuse "^usage: synth_model" --type q4_0 "$WORK/out.gguf"
# --arch (the family files): an unknown family, one mixed with --shape or --layers, one
# without its vocabulary.
refuse "unknown --arch 'mistral' \(known: llama3 qwen2 qwen3 phi3\)" --arch mistral \
    --vocab-from "$WORK/v.gguf" "$WORK/out.gguf"
refuse "--arch fixes the shape" --arch qwen2 --shape smol-135m --vocab-from "$WORK/v.gguf" \
    "$WORK/out.gguf"
refuse "--arch fixes the shape" --arch qwen2 --layers 2 --vocab-from "$WORK/v.gguf" "$WORK/out.gguf"
refuse "--arch phi3 needs --vocab-from" --arch phi3 "$WORK/out.gguf"
# A vocabulary file that is not a GGUF: named, exit 1, nothing written.
echo "not a gguf" >"$WORK/vocab.txt"
err=$("$SYNTH" --shape smol-135m --type q4_0 --layers 1 --vocab-from "$WORK/vocab.txt" \
    "$WORK/out.gguf" 2>&1 >/dev/null)
rc=$?
if [[ $rc -eq 1 ]] && grep -q -- "--vocab-from $WORK/vocab.txt" <<<"$err" && [[ ! -e $WORK/out.gguf ]]; then
    pass "bad --vocab-from -> 1: $err"
else
    fail "bad --vocab-from -> $rc (want 1, naming the file, no out.gguf): $err"
fi
finish
