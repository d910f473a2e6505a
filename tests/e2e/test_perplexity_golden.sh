#!/usr/bin/env bash
# Perplexity of GPL-3 (shipped by Debian's base-files) at n_ctx 512 against llama.cpp's on the
# same text (tests/data/golden/smollm2-perplexity.txt): within 1% with the default numerics,
# and equal to the printed 4 decimals with --numerics llamacpp (llama.cpp's own arithmetic).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/golden_lib.sh"
need_model

ppl_golden "$GOLDEN/smollm2-perplexity.txt"
text=$PPL_TEXT want_ppl=$PPL_WANT
out=$("$BATON" perplexity --model "$MODEL" --file "$text" --ctx 512 --threads 2 2>/dev/null)
got_ppl=$(sed -n 's/^perplexity: \([0-9.]*\) .*/\1/p' <<<"$out")
echo "baton: $out"
echo "llama.cpp: $want_ppl"
if ppl_within "$got_ppl" "$want_ppl" 0.01; then
    pass "perplexity $got_ppl within 1% of llama.cpp's $want_ppl"
else
    fail "perplexity ${got_ppl:-none} not within 1% of llama.cpp's $want_ppl"
fi
grep -q "over 3570 scored tokens" <<<"$out" && pass "scored 3570 tokens like llama.cpp" \
    || fail "scored token count differs from llama.cpp's 3570"

out=$("$BATON" perplexity --model "$MODEL" --file "$text" --ctx 512 --threads 2 \
    --numerics llamacpp 2>/dev/null)
got_ppl=$(sed -n 's/^perplexity: \([0-9.]*\) .*/\1/p' <<<"$out")
echo "baton --numerics llamacpp: $out"
if python3 -c 'import sys; g,w=map(float,sys.argv[1:]); sys.exit(0 if abs(g-w) <= 6e-5 else 1)' \
    "${got_ppl:-0}" "$want_ppl"; then
    pass "numerics llamacpp: perplexity $got_ppl equals llama.cpp's $want_ppl to 4 decimals"
else
    fail "numerics llamacpp: perplexity ${got_ppl:-none} differs from llama.cpp's $want_ppl"
fi
finish
