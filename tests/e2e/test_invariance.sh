#!/usr/bin/env bash
# A completion's tokens and logprobs do not depend on what else runs or how the KV cache is
# shared: `generate --n 4` under a KV cache too small for the four (preemption and recompute)
# gives four copies of the `--n 1` completion, and a seeded sampled run gives the same with and
# without KV pressure, on 1 and 2 stages (the lossless default codec). The CLI probe of issue 8.
# A cache too small for a group's forks, or for its beams, ends in tokens or a clear error.
source "$(dirname "$0")/lib.sh"
need_model

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
P="Write a detailed essay about the history of the printing press and its effect on Europe."

# ids_and_lps FILE: the "output ids" and "output logprobs" lines of a --print-ids run.
ids_and_lps() { grep -E '^output (ids|logprobs)' "$1" | sed 's/ (completion)//'; }

run() { # NAME ARGS...: stderr to $tmp/NAME, status checked
    local name=$1
    shift
    if ! "$BATON" generate --model "$MODEL" --prompt "$P" --max-tokens 48 --ignore-eos --ctx 128 \
        --print-ids "$@" >/dev/null 2>"$tmp/$name"; then
        fail "generate $*: $(tail -1 "$tmp/$name")"
        return 1
    fi
}

# The issue's own probe: 8 greedy completions of 300 tokens in a 1024-token KV cache (forks
# preempted and recomputed) are one text, the --n 1 text (the old sgemm prompt path gave 3).
if "$BATON" generate --model "$MODEL" --prompt "$P" --temperature 0 --max-tokens 300 \
    --ignore-eos --ctx 1024 --kv-tokens 1024 --n 8 --print-ids >/dev/null 2>"$tmp/eight" &&
    "$BATON" generate --model "$MODEL" --prompt "$P" --temperature 0 --max-tokens 300 \
        --ignore-eos --ctx 1024 --print-ids >/dev/null 2>"$tmp/alone"; then
    want=$(grep -E '^output ids' "$tmp/alone" | sed 's/^output ids: //')
    n_same=$(grep -E '^output ids' "$tmp/eight" | sed 's/^output ids (completion): //' |
        grep -cxF -- "$want")
    pre=$(grep -oE '[0-9]+ preemptions?' "$tmp/eight" | head -1)
    if [[ -n $want && $n_same -eq 8 ]]; then
        pass "--n 8, 300 tokens, 1024 KV tokens (${pre:-no preemption}): 8 of 8 equal --n 1"
    else
        fail "--n 8, 300 tokens, 1024 KV tokens (${pre:-no preemption}): $n_same of 8 equal --n 1"
    fi
else
    fail "generate (300 tokens): $(tail -1 "$tmp/eight") $(tail -1 "$tmp/alone")"
fi

for stages in 1 2; do
    run one.$stages --temperature 0 --stages $stages || continue
    ids_and_lps "$tmp/one.$stages" >"$tmp/one.$stages.ref"
    run four.$stages --temperature 0 --stages $stages --n 4 --kv-tokens 128 || continue
    n_same=0
    for k in 0 1 2 3; do
        # completion k: its ids line and its logprobs line
        grep -E '^output (ids|logprobs)' "$tmp/four.$stages" | sed 's/ (completion)//' |
            awk -v k=$k 'NR == 2 * k + 1 || NR == 2 * k + 2' >"$tmp/four.$stages.$k"
        cmp -s "$tmp/four.$stages.$k" "$tmp/one.$stages.ref" && n_same=$((n_same + 1))
    done
    pre=$(grep -oE '[0-9]+ preemptions?' "$tmp/four.$stages" | head -1)
    if [[ -z $pre ]]; then
        fail "$stages stage(s): --n 4 with 128 KV tokens preempted nothing (the test needs it)"
    elif [[ $n_same -eq 4 ]]; then
        pass "$stages stage(s): --n 4 greedy with 128 KV tokens ($pre) == --n 1, ids and logprobs"
    else
        fail "$stages stage(s): only $n_same of 4 completions equal --n 1 ($pre)"
    fi

    run seeded.$stages --temperature 0.8 --seed 5 --stages $stages --n 3 --kv-tokens 1024 ||
        continue
    run seeded_small.$stages --temperature 0.8 --seed 5 --stages $stages --n 3 --kv-tokens 128 ||
        continue
    ids_and_lps "$tmp/seeded.$stages" >"$tmp/a"
    ids_and_lps "$tmp/seeded_small.$stages" >"$tmp/b"
    pre=$(grep -oE '[0-9]+ preemptions?' "$tmp/seeded_small.$stages" | head -1)
    if [[ -z $pre ]]; then
        fail "$stages stage(s): seeded --n 3 with 128 KV tokens preempted nothing"
    elif [[ -s $tmp/a ]] && cmp -s "$tmp/a" "$tmp/b"; then
        pass "$stages stage(s): seeded --n 3 with 128 KV tokens ($pre) == with 1024"
    else
        fail "$stages stage(s): seeded completions differ under KV pressure ($pre)"
    fi
done
cmp -s "$tmp/one.1.ref" "$tmp/one.2.ref" && pass "1 stage == 2 stages" || fail "1 vs 2 stages differ"

# A KV cache of 3 blocks (48 tokens) for --n 4 of a 20-token prompt: the 19-token prefix takes
# 2 and the four branches' copies of its partial block do not fit, so two branches take over
# and two are computed alone from the prompt (the run used to stop with "scheduler stalled").
Q="Write a detailed essay about the history of the printing press and its effect on Europe and on Asia."
tight() { # KV_TOKENS NAME
    "$BATON" generate --model "$MODEL" --prompt "$Q" --max-tokens 24 --ignore-eos --ctx 48 \
        --kv-tokens "$1" --n 4 --temperature 0.8 --seed 5 --print-ids >/dev/null 2>"$tmp/$2"
}
if tight 48 tight48 && tight 1024 tight1024; then
    ids_and_lps "$tmp/tight48" >"$tmp/a"
    ids_and_lps "$tmp/tight1024" >"$tmp/b"
    pre=$(grep -oE '[0-9]+ preemptions?' "$tmp/tight48" | head -1)
    [[ $(wc -l <"$tmp/a") -eq 8 && -n $pre ]] && cmp -s "$tmp/a" "$tmp/b" &&
        pass "seeded --n 4 in 48 KV tokens ($pre) == in 1024" ||
        fail "seeded --n 4 in 48 KV tokens (${pre:-no preemption}) differs from 1024"
else
    fail "generate --n 4 in 48 KV tokens: $(tail -1 "$tmp/tight48")"
fi
# Beams are never preempted: 4 beams that outgrow 256 KV tokens fail the request with a
# message naming the cache (exit 1), not the engine with "scheduler stalled".
expect 1 "beam search: 4 beams of [0-9]+ tokens found no free block in the 256-token KV cache \(raise --kv-tokens\)" \
    -- generate --model "$MODEL" --prompt "$P" --max-tokens 100 --ignore-eos --ctx 256 \
    --kv-tokens 256 --beam-width 4 --temperature 0
# The last stage samples and scores the rows of a batch in parallel on its threads: a seeded
# --n 3 with top-5 logprobs on one thread is the two-thread run's, bit for bit.
if run seeded_t1 --temperature 0.8 --seed 5 --n 3 --logprobs 5 --threads 1 &&
    run seeded_t2 --temperature 0.8 --seed 5 --n 3 --logprobs 5 --threads 2; then
    ids_and_lps "$tmp/seeded_t1" >"$tmp/a"
    ids_and_lps "$tmp/seeded_t2" >"$tmp/b"
    [[ -s $tmp/a ]] && cmp -s "$tmp/a" "$tmp/b" && pass "seeded --n 3: 1 thread == 2 threads" ||
        fail "seeded --n 3 differs between 1 and 2 threads"
fi
finish
