#!/usr/bin/env bash
# tests/tools/synth_model: a synthetic llama GGUF of a real shape (TinyLlama-1.1B cut to 4
# layers, Q4_0: ~210 MiB in a temp dir, removed at exit) that baton loads and runs.
# 1. The file size is what the shape predicts (weights from the shape's matrix sizes at
#    Q4_0's 18 bytes per 32 values, plus the F32 norms), within 3% (the rest is the copied
#    vocabulary and the padding).
# 2. `baton info` names the shape: n_embd 2048, 32 heads (kv 4), 4 layers, untied, synthetic;
#    the vocabulary (tokenize ids, tokenizer and chat-template lines) is the default model's.
# 3. `baton generate --max-tokens 8 --temperature 0` gives 8 tokens with finite logprobs,
#    exit 0, on one stage; the same ids on 2 stages (the weights keep activations finite
#    through every layer, and a split does not change the result).
# 4. The same seed gives a byte-identical file; another seed another one.
# The refusals of bad arguments are in test_synth_model_args.sh (no model needed).
source "$(dirname "$0")/lib.sh"
need_model
SYNTH="${BT_BUILD_DIR:-}/tests/synth_model"
if [[ ! -x $SYNTH ]]; then
    echo "FAIL synth_model is not built ($SYNTH)"
    exit 1
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bt_synth.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
F="$WORK/tl4.gguf"

# 1. Size against the shape.
if ! "$SYNTH" --shape tinyllama-1.1b --layers 4 --type q4_0 --vocab-from "$MODEL" "$F" \
    >"$WORK/synth.out" 2>&1; then
    fail "synth_model tinyllama-1.1b: $(cat "$WORK/synth.out")"
    finish
    exit
fi
pass "synth_model: $(cat "$WORK/synth.out")"
vocab=$("$BATON" info --model "$MODEL" | sed -n 's/^vocabulary: *\([0-9]*\) tokens.*/\1/p')
size=$(stat -c %s "$F")
verdict=$(python3 - "$size" "$vocab" <<'PY'
import sys
size, V = int(sys.argv[1]), int(sys.argv[2])
E, F, L, H, HKV = 2048, 5632, 4, 32, 4
D = E // H
per_layer = E * H * D + 2 * E * HKV * D + H * D * E + 3 * E * F
weights = (2 * V * E + L * per_layer) // 32 * 18 + (2 * L + 1) * E * 4
dev = (size - weights) / weights
print("ok" if 0 <= dev < 0.03 else "bad", "file %d bytes, shape predicts %d (%+.2f%%)"
      % (size, weights, 100 * dev))
PY
)
if [[ $verdict == ok* ]]; then pass "size: ${verdict#ok }"; else fail "size: ${verdict#bad }"; fi

# 2. baton info.
info=$("$BATON" info --model "$F" 2>&1)
for want in "^layers: +4$" "^embedding: +2048$" "^feed-forward: +5632$" \
    "^heads: +32 \(kv 4, head dim 64\)$" "^tied output: +no$" "^name: +synthetic tinyllama-1.1b" \
    "^vocabulary: +$vocab tokens"; do
    if grep -qE "$want" <<<"$info"; then pass "info /$want/"; else fail "info /$want/: $info"; fi
done

# The vocabulary is the default model's: same ids for text with specials and non-ASCII, the
# same tokenizer and chat-template lines of `baton info`.
text="Hello <|im_start|> wörld, 12345 tokens"
t_model=$("$BATON" tokenize --model "$MODEL" --prompt "$text" --ids 2>/dev/null)
t_synth=$("$BATON" tokenize --model "$F" --prompt "$text" --ids 2>/dev/null)
if [[ -n $t_model && $t_synth == "$t_model" ]]; then pass "tokenize: $t_synth"; else fail "tokenize: '$t_synth' != '$t_model'"; fi
v_model=$("$BATON" info --model "$MODEL" | grep -E '^(vocabulary|chat template):')
v_synth=$(grep -E '^(vocabulary|chat template):' <<<"$info")
if [[ $v_synth == "$v_model" ]]; then pass "info: same vocabulary lines"; else fail "info: '$v_synth' != '$v_model'"; fi

# 3. Generation, 1 and 2 stages.
gen() { # STAGES -> "ids|logprobs" on stdout, status of baton
    local out rc
    out=$("$BATON" generate --model "$F" --prompt "The capital of France is" --max-tokens 8 \
        --temperature 0 --ignore-eos --print-ids --stages "$1" 2>&1 >/dev/null)
    rc=$?
    echo "$(sed -n 's/^output ids: //p' <<<"$out")|$(sed -n 's/^output logprobs: //p' <<<"$out")"
    [[ $rc -eq 0 ]] || { echo "$out" >&2; return $rc; }
}
if r1=$(gen 1); then
    ids1=${r1%%|*} lps1=${r1#*|}
    n=$(wc -w <<<"$ids1")
    if [[ $n -eq 8 ]]; then pass "1 stage: 8 tokens ($ids1)"; else fail "1 stage: $n tokens ($ids1)"; fi
    if [[ -n $lps1 ]] && ! grep -qiE 'nan|inf' <<<"$lps1"; then
        pass "1 stage: finite logprobs ($lps1)"
    else
        fail "1 stage: logprobs not finite: '$lps1'"
    fi
    if r2=$(gen 2); then
        ids2=${r2%%|*}
        if [[ $ids2 == "$ids1" ]]; then pass "2 stages: same ids"; else fail "2 stages: '$ids2' != '$ids1'"; fi
    else
        fail "2 stages: generate failed"
    fi
else
    fail "1 stage: generate failed"
fi

# 4. Determinism in the seed (smol-135m cut to 2 layers: 3 x 60 MiB, small and quick).
rm -f "$F" # keep the temp dir's peak to a few hundred MiB
"$SYNTH" --shape smol-135m --layers 2 --type q8_0 --seed 7 --vocab-from "$MODEL" "$WORK/a.gguf" >/dev/null &&
    "$SYNTH" --shape smol-135m --layers 2 --type q8_0 --seed 7 --vocab-from "$MODEL" "$WORK/b.gguf" >/dev/null &&
    "$SYNTH" --shape smol-135m --layers 2 --type q8_0 --seed 8 --vocab-from "$MODEL" "$WORK/c.gguf" >/dev/null
if [[ $? -ne 0 ]]; then
    fail "synth_model smol-135m runs failed"
else
    if cmp -s "$WORK/a.gguf" "$WORK/b.gguf"; then pass "seed 7 twice: identical files"; else fail "seed 7 twice: files differ"; fi
    if cmp -s "$WORK/a.gguf" "$WORK/c.gguf"; then fail "seeds 7 and 8: identical files"; else pass "seeds 7 and 8: files differ"; fi
fi
finish
