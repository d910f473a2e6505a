#!/usr/bin/env bash
# test_gemma3_stages.sh - Gemma 3 270M through the pipeline (DESIGN.md section 4's invariant on
# the second real model): with the lossless f32 codec, 1, 2 and 3 stages under mpirun (np 2, 3,
# 4) and 3 stage threads give exactly the ids and logprobs of the singleton run (one in-process
# stage), greedy and seeded, on a prompt of about 700 tokens, so that the local layers' window
# of 512 keys masks the oldest ones and the rope of the local and global layers both matter;
# 8 concurrent prompts of varied lengths under mpirun (np 3) equal the singleton --sequential
# run line for line; perplexity at --ctx 1024 (the window again) prints the same summed
# log-likelihood on 3 stages as on 1. The output matrix (the tied 262144 x 640 embedding) is
# on the last stage only. The model comes from deploy/fetch-model.sh gemma3-270m (cached; skip
# 77 only when it cannot be fetched).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${MULTI_GENERATE:?MULTI_GENERATE must point to multi_generate}"
pick_model gemma3
need_text
head -c 3000 "$text" >"$WORK/prompt.txt"
common=(--model "$MODEL" --threads 1 --act-codec f32 --ignore-eos --print-ids --logprobs 1
        --max-tokens 12 --file "$WORK/prompt.txt")
modes=("--temperature 0" "--temperature 0.8 --seed 7")
i=0
for m in "${modes[@]}"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    timeout 120 "$BATON" generate "${common[@]}" $m >"$WORK/s$i.out" 2>"$WORK/s$i.err"
    rc=$?
    ids_of "$WORK/s$i.err" >"$WORK/s$i.ids"
    n_prompt=$(sed -n 's/^prompt ids: //p' "$WORK/s$i.err" | wc -w)
    if [[ $rc -ne 0 || $(sed -n 's/^output ids: //p' "$WORK/s$i.ids" | wc -w) -ne 12 ]]; then
        fail "singleton $m: exit $rc, no 12 ids"
        tail -5 "$WORK/s$i.err"
        continue
    fi
    if [[ $n_prompt -le 600 ]]; then
        fail "the prompt is $n_prompt tokens; the test needs more than the window (512)"
    fi
    for run in "t 3" "m 2" "m 3" "m 4"; do
        read -r how n <<<"$run"
        if [[ $how == t ]]; then
            what="$n stage threads $m"
            # shellcheck disable=SC2086
            timeout 120 "$BATON" generate "${common[@]}" $m --stages "$n" >"$WORK/o.out" 2>"$WORK/o.err"
        else
            what="$((n - 1)) stage(s) under mpirun np $n $m"
            # shellcheck disable=SC2086
            mpi_run "$n" "$BATON" generate "${common[@]}" $m >"$WORK/o.out" 2>"$WORK/o.err"
        fi
        rc=$?
        ids_of "$WORK/o.err" >"$WORK/o.ids"
        if [[ $rc -ne 0 ]]; then
            fail "gemma3 $what: exit $rc"
            tail -5 "$WORK/o.err"
        elif cmp -s "$WORK/s$i.ids" "$WORK/o.ids"; then
            pass "gemma3 $what: ids and logprobs equal the singleton's ($n_prompt prompt tokens)"
        else
            fail "gemma3 $what: differ from the singleton"
            diff "$WORK/s$i.ids" "$WORK/o.ids" | cut -c1-200 | head -6
        fi
    done
done

# Continuous batching over 2 stage ranks vs one at a time in one process.
mg=(--model "$MODEL" --threads 1 --act-codec f32 --prompts "$BT_TEST_DATA/prompts/mixed8.txt"
    --temperature 0)
timeout 180 "$MULTI_GENERATE" "${mg[@]}" --sequential >"$WORK/seq.out" 2>"$WORK/seq.err"
rc1=$?
mpi_run 3 "$MULTI_GENERATE" "${mg[@]}" >"$WORK/conc.out" 2>"$WORK/conc.err"
rc2=$?
if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
    fail "gemma3 multi_generate: exit $rc1 (sequential) / $rc2 (mpirun np 3)"
    tail -5 "$WORK/seq.err" "$WORK/conc.err"
elif [[ $(wc -l <"$WORK/seq.out") -ne 8 ]]; then
    fail "gemma3 multi_generate: $(wc -l <"$WORK/seq.out") result lines, want 8"
elif cmp -s "$WORK/seq.out" "$WORK/conc.out"; then
    pass "gemma3 multi_generate: 8 concurrent on 2 stages equal sequential on 1"
else
    fail "gemma3 multi_generate: 8 concurrent on 2 stages differ from sequential on 1"
    diff "$WORK/seq.out" "$WORK/conc.out" | cut -c1-200 | head -6
fi

# Perplexity at --ctx 1024: one stage and three (mpirun np 4), the same nll to the bit.
ppl=(perplexity --model "$MODEL" --threads 1 --act-codec f32 --file "$text" --ctx 1024
     --chunks 1 --print-nll)
timeout 180 "$BATON" "${ppl[@]}" >"$WORK/p1.out" 2>"$WORK/p1.err"
rc1=$?
mpi_run 4 "$BATON" "${ppl[@]}" >"$WORK/p3.out" 2>"$WORK/p3.err"
rc2=$?
nll1=$(sed -n 's/^nll: //p' "$WORK/p1.err" "$WORK/p1.out" | head -1)
nll3=$(sed -n 's/^nll: //p' "$WORK/p3.err" "$WORK/p3.out" | head -1)
if [[ $rc1 -ne 0 || $rc2 -ne 0 || -z $nll1 ]]; then
    fail "gemma3 perplexity --ctx 1024: exit $rc1 (1 stage) / $rc2 (mpirun np 4), nll '$nll1'"
    tail -3 "$WORK/p1.err" "$WORK/p3.err"
elif [[ $nll1 == "$nll3" ]]; then
    pass "gemma3 perplexity --ctx 1024: 3 stages give the 1-stage nll $nll1"
else
    fail "gemma3 perplexity --ctx 1024: nll $nll1 (1 stage) vs $nll3 (3 stages)"
fi
finish
