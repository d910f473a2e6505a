#!/usr/bin/env bash
# Greedy generation against llama.cpp's (tests/data/golden/smollm2-greedy.tsv and its
# per-step top-1/top-2 logit margins, both from tests/tools/make_goldens.py).
#
# What is checked: the prompt tokenizes to llama.cpp's ids, and the 32 greedy tokens equal
# llama.cpp's up to the end or up to a step where llama.cpp's own top two logits are within
# NEAR_TIE (0.25) of each other. Why not 32 equal tokens everywhere: both engines quantize
# activations to 8 bits in every matrix product, so any difference in float summation order
# flips some roundings and moves logits by ~0.1-0.3 on this model; llama.cpp does not agree
# with itself either when the same prompt is fed token by token instead of in one batch (7 of
# these 12 prompts give the same 32 tokens). A divergence at a margin above NEAR_TIE would
# mean a real difference in the model math. At least 90% of at least 10 prompts must pass;
# the number of prompts whose 32 tokens are all equal is printed too.
source "$(dirname "$0")/lib.sh"
need_model
NEAR_TIE=0.25

total=0
agree=0
exact=0
exec 3<"$GOLDEN/smollm2-greedy-margins.tsv"
while IFS=$'\t' read -r prompt_json prompt_ids gen_ids; do
    [[ $prompt_json == \#* || -z $prompt_json ]] && continue
    margins=""
    while read -r margins <&3 && [[ $margins == \#* ]]; do :; done
    total=$((total + 1))
    # The x keeps the prompt's trailing newlines from $(...).
    prompt=$(python3 -c 'import json,sys; sys.stdout.write(json.loads(sys.argv[1]) + "x")' \
        "$prompt_json")
    prompt=${prompt%x}
    out=$("$BATON" generate --model "$MODEL" --prompt "$prompt" --temperature 0 --max-tokens 32 \
        --ignore-eos --print-ids --threads 2 2>&1 >/dev/null)
    got_prompt=$(sed -n 's/^prompt ids: //p' <<<"$out")
    got_gen=$(sed -n 's/^output ids: //p' <<<"$out")
    if [[ $got_prompt != "$prompt_ids" ]]; then
        fail "prompt $total tokenization differs from llama.cpp: $prompt_json"
        continue
    fi
    verdict=$(python3 - "$got_gen" "$gen_ids" "$margins" "$NEAR_TIE" <<'PY'
import sys
got, want, margins, tie = sys.argv[1].split(), sys.argv[2].split(), sys.argv[3].split(), float(sys.argv[4])
d = next((i for i in range(len(want)) if i >= len(got) or got[i] != want[i]), None)
if d is None:
    print("exact all %d tokens equal" % len(want))
elif float(margins[d]) < tie:
    print("tie equal for %d tokens, then a llama.cpp near-tie (margin %.3f): baton %s, llama.cpp %s"
          % (d, float(margins[d]), got[d] if d < len(got) else "none", want[d]))
else:
    print("differ at token %d where llama.cpp's margin is %.3f: baton %s, llama.cpp %s"
          % (d, float(margins[d]), got[d] if d < len(got) else "none", want[d]))
PY
    )
    case $verdict in
    exact*) exact=$((exact + 1)); agree=$((agree + 1)); pass "prompt $total: ${verdict#exact }" ;;
    tie*) agree=$((agree + 1)); pass "prompt $total: ${verdict#tie }" ;;
    *) echo "note prompt $total: ${verdict#differ }" ;;
    esac
done <"$GOLDEN/smollm2-greedy.tsv"

echo "greedy: $agree of $total prompts agree with llama.cpp up to the end or a near-tie;" \
    "$exact of $total have all 32 tokens equal"
if [[ $total -ge 10 && $((agree * 10)) -ge $((total * 9)) ]]; then
    pass "at least 90% of $total prompts agree"
else
    fail "only $agree of $total prompts agree (need 90%, at least 10 prompts)"
fi
finish
