#!/usr/bin/env bash
# test_gemma3_window.sh - the window pool of Gemma 3's local layers (worker/kv_cache.h,
# common/kv_plan.h) changes no number: on a prompt of more than twice the window (512), greedy
# ids and logprobs with the pool at its minimum (--max-seqs 1, and --max-batch 64 with
# prefill chunks of 64 and of 37 rows, so that each step's rows reach the pool's bound and the
# chunks straddle blocks) are exactly those of the same run with BATON_KV_WINDOW=off (every
# layer keeps every position, the cache as before the pool), on one stage and on 2 stages
# under mpirun (np 3). Two sequences at once on 2 stages (--max-seqs 2: the blocks one
# releases are taken by the other) give the ids of each prompt run alone without the window.
# A block released too early would be overwritten by later positions (or the other
# sequence's) and change the numbers; a read of a released entry aborts on the stage's
# assert. `baton info` reports the pool at its real size. The model comes from
# deploy/fetch-model.sh gemma3-270m (cached; skip 77 only when it cannot be fetched).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${MULTI_GENERATE:?MULTI_GENERATE must point to multi_generate}"
pick_model gemma3
need_text
head -c 5200 "$text" >"$WORK/prompt.txt"

# The pool's size as baton info computes it (the stage allocates the same, to the byte: the
# handshake compares): --max-seqs 1 --max-batch 64 at --ctx 2048: 15 local layers of 37 blocks
# (592 positions: 511 keys before a step's first row, 64 rows, block rounding).
info=$("$BATON" info --model "$MODEL" --ctx 2048 --max-seqs 1 --max-batch 64 2>&1)
want="kv cache:     6.0 MiB global (3 layers) + 8.7 MiB window (15 layers, 592 positions) = 14.7 MiB at 2048 tokens (f16), 1 sequence of up to 64 rows a step; 36.0 MiB without the window"
if grep -qxF "$want" <<<"$info"; then
    pass "baton info: $(sed -n 's/^kv cache: *//p' <<<"$info")"
else
    fail "baton info: want '$want' in: $(grep 'kv cache' <<<"$info")"
fi
off_info=$(BATON_KV_WINDOW=off "$BATON" info --model "$MODEL" --ctx 2048 --max-seqs 1 2>&1)
if grep -q "^kv cache: *36.0 MiB for 2048 tokens" <<<"$off_info"; then
    pass "BATON_KV_WINDOW=off: $(sed -n 's/^kv cache: *//p' <<<"$off_info")"
else
    fail "BATON_KV_WINDOW=off: want 36.0 MiB for 2048 tokens in: $(grep 'kv cache' <<<"$off_info")"
fi

# The split planner counts each stage's window pool: 3 stages of layers 0, 1-16, 17 (local
# layers 0-4, 6-10, 12-16): 0.6 MiB (one local layer), 12.1 (2 global + 14 local), 2.0 (one
# global). A budget short of the requested KV shrinks a stage's global blocks, the window pool
# staying at its bound: 150 MiB leaves stage 2 28160 tokens (63.1 MiB; 4032 without the pool).
plan=$("$BATON" info --model "$MODEL" --ctx 2048 --max-seqs 1 --max-batch 64 --stages 3 \
    --stage-mem 1G 2>&1 | awk '$3 ~ /^[0-9]+-[0-9]+$/ {printf "%s %s %s,", $3, $5, $6}')
if [[ $plan == "0-0 0.6 (2048),1-16 12.1 (2048),17-17 2.0 (2048)," ]]; then
    pass "baton info --stages 3: KV per stage with the window pool: $plan"
else
    fail "baton info --stages 3: KV per stage '$plan', want 0.6, 12.1 and 2.0 MiB"
fi
plan=$("$BATON" info --model "$MODEL" --ctx 2048 --kv-tokens 65536 --max-seqs 1 --max-batch 64 \
    --layers 0-0,1-16,17-17 --stage-mem 1G,150M,1G 2>&1)
if grep -Eq '^ +1 +2 +1-16 .* 63\.1 \(28160\) .*KV shrunk to fit' <<<"$plan"; then
    pass "baton info: a 150 MiB budget shrinks stage 2's KV to 28160 tokens (63.1 MiB)"
else
    fail "baton info: want stage 2 shrunk to 63.1 MiB (28160 tokens) in: $plan"
fi

common=(--model "$MODEL" --threads 1 --act-codec f32 --ignore-eos --print-ids --logprobs 1
        --max-tokens 8 --temperature 0 --ctx 2048 --file "$WORK/prompt.txt")
BATON_KV_WINDOW=off timeout 300 "$BATON" generate "${common[@]}" --max-seqs 1 \
    >"$WORK/ref.out" 2>"$WORK/ref.err"
rc=$?
ids_of "$WORK/ref.err" >"$WORK/ref.ids"
n_prompt=$(sed -n 's/^prompt ids: //p' "$WORK/ref.err" | wc -w)
if [[ $rc -ne 0 || $(sed -n 's/^output ids: //p' "$WORK/ref.ids" | wc -w) -ne 8 ]]; then
    fail "reference without the window: exit $rc, no 8 ids"
    tail -5 "$WORK/ref.err"
    finish
    exit
fi
if [[ $n_prompt -le 1024 ]]; then
    fail "the prompt is $n_prompt tokens; the test needs more than twice the window (1024)"
fi
for run in "1 --max-batch 64 --prefill-chunk 64" "1 --max-batch 64 --prefill-chunk 37" \
    "1 --max-batch 512 --prefill-chunk 256" "3 --max-batch 64 --prefill-chunk 64" \
    "3 --max-batch 64 --prefill-chunk 37"; do
    read -r np flags <<<"$run"
    # shellcheck disable=SC2086
    if [[ $np == 1 ]]; then
        what="1 stage, $flags"
        timeout 300 "$BATON" generate "${common[@]}" --max-seqs 1 $flags >"$WORK/o.out" 2>"$WORK/o.err"
    else
        what="2 stages (mpirun np 3), $flags"
        BT_MPI_TIMEOUT=300 mpi_run "$np" "$BATON" generate "${common[@]}" --max-seqs 1 $flags \
            >"$WORK/o.out" 2>"$WORK/o.err"
    fi
    rc=$?
    ids_of "$WORK/o.err" >"$WORK/o.ids"
    if [[ $rc -ne 0 ]]; then
        fail "window pool, $what: exit $rc"
        tail -5 "$WORK/o.err"
    elif cmp -s "$WORK/ref.ids" "$WORK/o.ids"; then
        pass "window pool, $what: ids and logprobs equal those without the window ($n_prompt prompt tokens)"
    else
        fail "window pool, $what: differ from the run without the window"
        diff "$WORK/ref.ids" "$WORK/o.ids" | cut -c1-200 | head -6
    fi
done

# Two long prompts at once on 2 stages, each sequence's released blocks reused by the other:
# equal to one at a time without the window.
# multi_generate's prompt file: "MAX_TOKENS<TAB>TEXT" per line.
{
    printf '8\t%s\n' "$(head -c 4600 "$text" | tr '\n\t' '  ')"
    printf '8\t%s\n' "$(tail -c 4800 "$text" | tr '\n\t' '  ')"
} >"$WORK/two.txt"
mg=(--model "$MODEL" --threads 1 --act-codec f32 --prompts "$WORK/two.txt" --temperature 0
    --ctx 2048)
BATON_KV_WINDOW=off timeout 300 "$MULTI_GENERATE" "${mg[@]}" --sequential >"$WORK/seq.out" 2>"$WORK/seq.err"
rc1=$?
BT_MPI_TIMEOUT=300 mpi_run 3 "$MULTI_GENERATE" "${mg[@]}" --max-seqs 2 --max-batch 64 --prefill-chunk 64 \
    >"$WORK/conc.out" 2>"$WORK/conc.err"
rc2=$?
if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
    fail "two at once: exit $rc1 (sequential, no window) / $rc2 (mpirun np 3, window pool)"
    tail -5 "$WORK/seq.err" "$WORK/conc.err"
elif [[ $(wc -l <"$WORK/seq.out") -ne 2 ]]; then
    fail "two at once: $(wc -l <"$WORK/seq.out") result lines, want 2"
elif cmp -s "$WORK/seq.out" "$WORK/conc.out"; then
    pass "two long prompts at once on 2 stages with the window pool equal each alone without it"
else
    fail "two long prompts at once on 2 stages differ from each alone without the window"
    diff "$WORK/seq.out" "$WORK/conc.out" | cut -c1-200 | head -6
fi

# `generate` without --max-seqs sizes for its one request (a sequence), so the pool is at its
# one-sequence size by default: on a ~4000-token prompt at --ctx 4096 the local layers keep
# ~1040 positions (27.2 MiB of KV in all against 72.0 MiB without the window), and the
# process's peak RSS stays at least 25 MiB below the same run with BATON_KV_WINDOW=off (with
# 64 sequences, the default of the other commands, the pool would be the global pool's size
# and the two would be equal), with the same ids.
head -c 18800 "$text" >"$WORK/long.txt"
long=(--model "$MODEL" --threads 1 --ignore-eos --print-ids --max-tokens 2 --temperature 0
      --ctx 4096 --file "$WORK/long.txt")
BATON_KV_WINDOW=off /usr/bin/time -f "%M" -o "$WORK/off.rss" timeout 300 "$BATON" generate \
    "${long[@]}" >/dev/null 2>"$WORK/off.err"
rc1=$?
/usr/bin/time -f "%M" -o "$WORK/on.rss" timeout 300 "$BATON" generate "${long[@]}" \
    >/dev/null 2>"$WORK/on.err"
rc2=$?
off_kib=$(tail -1 "$WORK/off.rss")
on_kib=$(tail -1 "$WORK/on.rss")
if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
    fail "generate by default: exit $rc1 (without the window) / $rc2 (with it)"
    tail -3 "$WORK/off.err" "$WORK/on.err"
elif ! cmp -s <(ids_of "$WORK/off.err") <(ids_of "$WORK/on.err"); then
    fail "generate by default: ids differ with and without the window"
elif ((off_kib - on_kib < 25 * 1024)); then
    fail "generate by default: peak RSS $((on_kib / 1024)) MiB with the window pool, $((off_kib / 1024)) MiB without: want 25 MiB less"
else
    pass "generate by default ($(sed -n 's/^prompt ids: //p' "$WORK/on.err" | wc -w) prompt tokens, --ctx 4096): peak RSS $((on_kib / 1024)) MiB with the window pool, $((off_kib / 1024)) MiB without"
fi
finish
