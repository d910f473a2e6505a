#!/usr/bin/env bash
# test_perplexity_stages.sh tiny|smol - perplexity runs through the pipeline (score_prompt
# requests): with the lossless f32 codec, 2 stages under mpirun (np 3) and 2 stage threads
# give exactly the summed log-likelihood (--print-nll, a hex float), the per-chunk lines and
# the perplexity of the singleton run with one in-process stage.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kind=${1:?usage: test_perplexity_stages.sh tiny|smol}
pick_model "$kind"
text=/usr/share/common-licenses/GPL-3
if [[ ! -r $text ]]; then
    echo "SKIP: $text (Debian's base-files) is missing"
    exit 77
fi
common=(perplexity --model "$MODEL" --threads 1 --act-codec f32 --file "$text" --ctx 128
        --chunks 6 --print-nll)
# Everything but the timing: the per-chunk lines, the nll and the perplexity.
numbers() {
    grep -E '^\[[0-9]+\] |^nll: ' "$1"
    sed -n 's/^\(perplexity: [0-9.]* over .* chunks of [0-9]*)\).*/\1/p' "$2"
}
timeout 120 "$BATON" "${common[@]}" >"$WORK/s.out" 2>"$WORK/s.err"
rc1=$?
timeout 120 "$BATON" "${common[@]}" --stages 2 >"$WORK/t.out" 2>"$WORK/t.err"
rc2=$?
mpi_run 3 "$BATON" "${common[@]}" >"$WORK/m.out" 2>"$WORK/m.err"
rc3=$?
if [[ $rc1 -ne 0 || $rc2 -ne 0 || $rc3 -ne 0 ]]; then
    fail "$kind: exit $rc1 (singleton) / $rc2 (2 stage threads) / $rc3 (mpirun np 3)"
    tail -5 "$WORK/s.err" "$WORK/t.err" "$WORK/m.err"
    finish
    exit
fi
numbers "$WORK/s.err" "$WORK/s.out" >"$WORK/s.num"
numbers "$WORK/t.err" "$WORK/t.out" >"$WORK/t.num"
numbers "$WORK/m.err" "$WORK/m.out" >"$WORK/m.num"
if [[ $(grep -c '^\[' "$WORK/s.num") -ne 6 ]] || ! grep -q '^nll: ' "$WORK/s.num" ||
    ! grep -q '^perplexity: .* over 378 scored tokens (6 chunks of 128)' "$WORK/s.num"; then
    fail "$kind: the singleton run printed no 6 chunks, nll and 378 scored tokens"
    cat "$WORK/s.num"
fi
for run in t m; do
    what="$kind: $([[ $run == t ]] && echo "2 stage threads" || echo "2 stages under mpirun")"
    if cmp -s "$WORK/s.num" "$WORK/$run.num"; then
        pass "$what: nll, chunks and perplexity equal the 1-stage run's ($(sed -n 's/^nll: //p' "$WORK/s.num"))"
    else
        fail "$what: differs from the 1-stage run"
        diff "$WORK/s.num" "$WORK/$run.num" | head -8
    fi
done
finish
