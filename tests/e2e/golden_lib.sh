# shellcheck shell=bash
# golden_lib.sh - sourced (after lib.sh) by the e2e tests that compare baton's greedy tokens
# with llama.cpp's goldens (tests/data/golden/<stem>-greedy.tsv and <stem>-greedy-margins.tsv,
# from tests/tools/make_goldens.py and make_quant_goldens.py): test_greedy_golden.sh (the Q4_1
# file) and test_quant_variants.sh (its Q4_K_M and Q8_0 re-quantizations).
#
# Verdicts per prompt: "exact" (all 32 tokens equal; in mode exact the per-step margins too),
# "tie" (equal up to a step where llama.cpp's own top-1/top-2 margin is below NEAR_TIE, so a
# different summation order may flip it), else a real divergence. check() passes when at
# least 90% of at least 10 prompts are exact or tie.
GREEDY_STEM=${GREEDY_STEM:-smollm2} # which golden files check() reads
NEAR_TIE=0.25 # a caller may raise it for files measured noisier (test_quant_variants.sh)

# compare MODE PROMPT_N GOT_IDS GOT_MARGINS WANT_IDS WANT_MARGINS -> one verdict line
compare() {
    python3 - "$@" "$NEAR_TIE" <<'PY'
import sys
mode, n, got, got_m, want, want_m, tie = sys.argv[1:]
got, want, want_m = got.split(), want.split(), [float(m) for m in want_m.split()]
got_m = [float(m) for m in got_m.split()]
d = next((i for i in range(len(want)) if i >= len(got) or got[i] != want[i]), None)
if d is None:
    if mode == "exact":
        bad = [i for i in range(len(want)) if abs(got_m[i] - want_m[i]) > 6e-5]
        if bad:
            i = bad[0]
            print("margin all tokens equal, but step %d's margin is %.5f, llama.cpp's %.4f"
                  % (i, got_m[i], want_m[i]))
            sys.exit()
    print("exact all %d tokens equal%s" % (len(want), ", margins too" if mode == "exact" else ""))
elif mode != "exact" and want_m[d] < float(tie):
    print("tie equal for %d tokens, then a llama.cpp near-tie (margin %.3f): baton %s, llama.cpp %s"
          % (d, want_m[d], got[d] if d < len(got) else "none", want[d]))
else:
    print("differ at token %d where llama.cpp's margin is %.3f: baton %s, llama.cpp %s"
          % (d, want_m[d], got[d] if d < len(got) else "none", want[d]))
PY
}

# check NAME MODE FLAGS...: runs every prompt of $GOLDEN/$GREEDY_STEM-greedy.tsv on $MODEL
# (need_model's, or the caller's), counts the verdicts, asserts the bar.
check() {
    local name=$1 mode=$2
    shift 2
    local total=0 good=0 exact=0 prompt_json prompt_ids gen_ids margins prompt out
    exec 3<"$GOLDEN/$GREEDY_STEM-greedy-margins.tsv"
    while IFS=$'\t' read -r prompt_json prompt_ids gen_ids; do
        [[ $prompt_json == \#* || -z $prompt_json ]] && continue
        while read -r margins <&3 && [[ $margins == \#* ]]; do :; done
        total=$((total + 1))
        # The x keeps the prompt's trailing newlines from $(...).
        prompt=$(python3 -c 'import json,sys; sys.stdout.write(json.loads(sys.argv[1]) + "x")' \
            "$prompt_json")
        prompt=${prompt%x}
        out=$("$BATON" generate --model "$MODEL" --prompt "$prompt" --temperature 0 \
            --max-tokens 32 --ignore-eos --print-ids --logprobs 2 --threads 2 "$@" 2>&1 >/dev/null)
        if [[ $(sed -n 's/^prompt ids: //p' <<<"$out") != "$prompt_ids" ]]; then
            fail "$name prompt $total tokenization differs from llama.cpp: $prompt_json"
            continue
        fi
        verdict=$(compare "$mode" "$total" "$(sed -n 's/^output ids: //p' <<<"$out")" \
            "$(margins_of <<<"$out")" "$gen_ids" "$margins")
        case $verdict in
        exact*) exact=$((exact + 1)); good=$((good + 1)); pass "$name prompt $total: ${verdict#exact }" ;;
        tie*) good=$((good + 1)); pass "$name prompt $total: ${verdict#tie }" ;;
        *) echo "note $name prompt $total: ${verdict#* }" ;;
        esac
    done <"$GOLDEN/$GREEDY_STEM-greedy.tsv"
    exec 3<&-
    echo "$name: $good of $total prompts pass; $exact of $total have all 32 tokens equal"
    if [[ $total -ge 10 && $((good * 10)) -ge $((total * 9)) ]]; then
        pass "$name: at least 90% of $total prompts"
    else
        fail "$name: only $good of $total prompts (need 90%, at least 10 prompts)"
    fi
}

# ppl_golden FILE: reads the n_ctx 512 block of a perplexity golden (make_goldens.py's
# format) into PPL_TEXT, PPL_WANT, PPL_CHUNKS and PPL_SCORED; exits 77 (skip) when the text
# it was computed on is missing here or is another version of it.
ppl_golden() {
    local golden=$1 want_sha
    PPL_TEXT=$(awk -F= '$1=="file"{print $2; exit}' "$golden")
    want_sha=$(awk -F= '$1=="file_sha256"{print $2; exit}' "$golden")
    PPL_WANT=$(awk -F= '$1=="n_ctx"{c=$2} $1=="ppl" && c==512 {print $2; exit}' "$golden")
    PPL_CHUNKS=$(awk -F= '$1=="n_ctx"{c=$2} $1=="n_chunks" && c==512 {print $2; exit}' "$golden")
    PPL_SCORED=$(awk -F= '$1=="n_ctx"{c=$2} $1=="n_scored" && c==512 {print $2; exit}' "$golden")
    if [[ ! -r $PPL_TEXT ]] || [[ $(sha256sum "$PPL_TEXT" | cut -d' ' -f1) != "$want_sha" ]]; then
        echo "SKIP: $PPL_TEXT is missing or not the text $golden was computed on"
        exit 77
    fi
}

# ppl_within GOT WANT REL: true when GOT is within REL (0.01 = 1%) of WANT.
ppl_within() {
    python3 -c 'import sys; g,w,r=map(float,sys.argv[1:]); sys.exit(0 if abs(g-w)/w <= r else 1)' \
        "${1:-0}" "$2" "$3"
}
