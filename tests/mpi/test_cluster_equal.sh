#!/usr/bin/env bash
# test_cluster_equal.sh tiny|smol NP - the invariant of DESIGN.md section 4 across real ranks:
# with the lossless f32 codec, `baton generate` under mpirun -np NP (NP-1 stages) gives
# exactly the ids and logprobs of the singleton run (no mpirun, one in-process stage), greedy
# and seeded (T 0.8, seed 7); and multi_generate with 8 concurrent prompts of varied lengths
# under mpirun equals the singleton --sequential run line for line. On SmolLM2, --numerics
# llamacpp reaches every rank (Hello): the 32 greedy ids equal llama.cpp's golden ones.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kind=${1:?usage: test_cluster_equal.sh tiny|smol NP}
np=${2:?usage: test_cluster_equal.sh tiny|smol NP}
pick_model "$kind"
: "${MULTI_GENERATE:?MULTI_GENERATE must point to multi_generate}"
if [[ $kind == tiny ]]; then n_tok=24; else n_tok=10; fi
common=(--model "$MODEL" --threads 1 --act-codec f32 --ignore-eos --print-ids --max-tokens "$n_tok")
prompts=("Hello" "The quick brown fox jumps over the lazy dog, and then the dog" \
         "In the beginning")
modes=("--temperature 0" "--temperature 0.8 --seed 7")

i=0
for p in "${prompts[@]}"; do
    for m in "${modes[@]}"; do
        i=$((i + 1))
        # shellcheck disable=SC2086
        timeout 60 "$BATON" generate "${common[@]}" $m --prompt "$p" >"$WORK/s$i.out" 2>"$WORK/s$i.err"
        rc1=$?
        # shellcheck disable=SC2086
        mpi_run "$np" "$BATON" generate "${common[@]}" $m --prompt "$p" >"$WORK/m$i.out" 2>"$WORK/m$i.err"
        rc2=$?
        what="$kind np$np '${p:0:20}' $m"
        if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
            fail "$what: exit $rc1 (singleton) / $rc2 (mpirun)"
            tail -5 "$WORK/s$i.err" "$WORK/m$i.err"
            continue
        fi
        ids_of "$WORK/s$i.err" >"$WORK/s$i.ids"
        ids_of "$WORK/m$i.err" >"$WORK/m$i.ids"
        n_ids=$(grep -c '^output ids:' "$WORK/s$i.ids")
        n_out=$(sed -n 's/^output ids: //p' "$WORK/s$i.ids" | wc -w)
        if [[ $n_ids -ne 1 || $n_out -ne $n_tok ]]; then
            fail "$what: singleton printed $n_ids id lines with $n_out ids (want 1 with $n_tok)"
        elif cmp -s "$WORK/s$i.ids" "$WORK/m$i.ids"; then
            pass "$what: ids and logprobs equal"
        else
            fail "$what: differ"
            diff "$WORK/s$i.ids" "$WORK/m$i.ids" | head -6
        fi
    done
done

if [[ $kind == smol ]]; then
    golden=$(awk -F'\t' '$1 == "\"The quick brown fox\"" {print $3}' \
        "$BT_TEST_DATA/golden/smollm2-greedy.tsv")
    mpi_run "$np" "$BATON" generate --model "$MODEL" --threads 1 --numerics llamacpp \
        --temperature 0 --max-tokens 32 --ignore-eos --print-ids --prompt "The quick brown fox" \
        >"$WORK/lc.out" 2>"$WORK/lc.err"
    got=$(sed -n 's/^output ids: //p' "$WORK/lc.err")
    if [[ -n $golden && $got == "$golden" ]]; then
        pass "smol np$np --numerics llamacpp: 32 greedy ids equal llama.cpp's"
    else
        fail "smol np$np --numerics llamacpp: ids '$got', llama.cpp '$golden'"
        tail -3 "$WORK/lc.err"
    fi
fi

# 36 streams on 2 stages (np 3): 36 >= 16 x 2, so the scheduler puts decode rows in
# micro-batches of 16 (a prompt tile), not ceil(36 / 4 in flight) = 9, rounded to 12
# (scheduler.h; its debug line says so, counting the engine's 1-token readiness probe too).
# Greedy tokens and logprobs through `baton batch` under mpirun must equal the same requests
# one at a time in one process.
if [[ $kind == smol && $np == 3 ]]; then
    streams="$MPI_DIR/../support/batch_streams.py"
    python3 "$streams" make "$WORK/b36.jsonl" 36 8
    bcommon=(--model "$MODEL" --input "$WORK/b36.jsonl" --threads 1 --act-codec f32 --restart)
    timeout 120 "$BATON" batch "${bcommon[@]}" --output "$WORK/b36.one" --max-seqs 1 \
        2>"$WORK/b36.one.err"
    rc1=$?
    BATON_LOG=debug mpi_run "$np" "$BATON" batch "${bcommon[@]}" --output "$WORK/b36.all" \
        2>"$WORK/b36.all.err"
    rc2=$?
    what="smol np3 batch of 36 streams (16-row decode micro-batches) vs one at a time"
    if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
        fail "$what: exit $rc1 (one at a time) / $rc2 (mpirun)"
        tail -3 "$WORK/b36.one.err" "$WORK/b36.all.err"
    elif ! grep -q 'decode rows in micro-batches of 16 (a prompt tile), not 12' \
        "$WORK/b36.all.err"; then
        fail "$what: the scheduler's debug log does not say the decode rows went 16 a batch"
    elif [[ $(python3 "$streams" norm "$WORK/b36.one" | wc -l) -ne 36 ]]; then
        fail "$what: $(wc -l <"$WORK/b36.one") results one at a time, want 36"
    elif cmp -s <(python3 "$streams" norm "$WORK/b36.one") \
        <(python3 "$streams" norm "$WORK/b36.all"); then
        pass "$what: tokens and logprobs equal"
    else
        fail "$what: differ"
        diff <(python3 "$streams" norm "$WORK/b36.one") \
            <(python3 "$streams" norm "$WORK/b36.all") | cut -c1-200 | head -6
    fi
fi

# Concurrent (continuous batching over NP-1 ranks) vs one at a time in one process.
mg_modes=("--temperature 0")
[[ $kind == tiny ]] && mg_modes+=("--temperature 0.8 --seed 7")
for m in "${mg_modes[@]}"; do
    mg=(--model "$MODEL" --threads 1 --act-codec f32 --prompts "$BT_TEST_DATA/prompts/mixed8.txt")
    [[ $kind == tiny ]] && mg+=(--ctx 256)
    # shellcheck disable=SC2086
    timeout 120 "$MULTI_GENERATE" "${mg[@]}" $m --sequential >"$WORK/seq.out" 2>"$WORK/seq.err"
    rc1=$?
    # shellcheck disable=SC2086
    mpi_run "$np" "$MULTI_GENERATE" "${mg[@]}" $m >"$WORK/conc.out" 2>"$WORK/conc.err"
    rc2=$?
    what="$kind np$np multi_generate 8 concurrent vs sequential $m"
    n_lines=$(wc -l <"$WORK/seq.out")
    if [[ $rc1 -ne 0 || $rc2 -ne 0 ]]; then
        fail "$what: exit $rc1 (sequential) / $rc2 (mpirun)"
        tail -5 "$WORK/seq.err" "$WORK/conc.err"
    elif [[ $n_lines -ne 8 ]]; then
        fail "$what: $n_lines result lines, want 8"
    elif cmp -s "$WORK/seq.out" "$WORK/conc.out"; then
        pass "$what: equal ($(grep -h 'steps' "$WORK/conc.err" | head -1))"
    else
        fail "$what: differ"
        diff "$WORK/seq.out" "$WORK/conc.out" | cut -c1-200 | head -8
    fi
done
finish
