#!/usr/bin/env bash
# test_perplexity_stages.sh tiny|smol [f16|q8_0] - perplexity runs through the pipeline
# (score_prompt requests): with the lossless f32 codec, 2 stages under mpirun (np 3) and 2
# stage threads give exactly the summed log-likelihood (--print-nll, a hex float), the
# per-chunk lines and the perplexity of the singleton run with one in-process stage, with the
# given --kv-type (default f16). With q8_0 the stages' cache must really be q8_0: the nll
# differs from the f16 run's (a --kv-type that did not reach the stage ranks would make the
# mpirun run differ from the singleton). The tiny model's 16-wide heads are not whole q8_0
# blocks: q8_0 is refused before any stage starts, naming the head size.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
kind=${1:?usage: test_perplexity_stages.sh tiny|smol [f16|q8_0]}
kv_type=${2:-f16}
pick_model "$kind"
text=/usr/share/common-licenses/GPL-3
if [[ ! -r $text ]]; then
    echo "SKIP: $text (Debian's base-files) is missing"
    exit 77
fi
common=(perplexity --model "$MODEL" --threads 1 --act-codec f32 --file "$text" --ctx 128
        --chunks 6 --print-nll --kv-type "$kv_type")
if [[ $kind == tiny && $kv_type == q8_0 ]]; then
    err=$(timeout 60 "$BATON" "${common[@]}" 2>&1 >/dev/null)
    rc=$?
    if [[ $rc -eq 2 ]] && grep -q -- "--kv-type q8_0: head_dim 16 is not a multiple of 32" <<<"$err"; then
        pass "tiny: --kv-type q8_0 refused by head size (exit 2)"
    else
        fail "tiny: --kv-type q8_0 -> $rc: $err"
    fi
    finish
    exit
fi
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
if [[ $kv_type != f16 ]]; then
    timeout 120 "$BATON" "${common[@]/$kv_type/f16}" >"$WORK/f.out" 2>"$WORK/f.err"
    numbers "$WORK/f.err" "$WORK/f.out" >"$WORK/f.num"
    if grep -q '^nll: ' "$WORK/f.num" && ! cmp -s "$WORK/s.num" "$WORK/f.num"; then
        pass "$kind: --kv-type $kv_type scores otherwise than f16 ($(sed -n 's/^nll: //p' "$WORK/f.num"))"
    else
        fail "$kind: --kv-type $kv_type gave the f16 numbers (or f16 failed)"
    fi
fi
for run in t m; do
    what="$kind $kv_type: $([[ $run == t ]] && echo "2 stage threads" || echo "2 stages under mpirun")"
    if cmp -s "$WORK/s.num" "$WORK/$run.num"; then
        pass "$what: nll, chunks and perplexity equal the 1-stage run's ($(sed -n 's/^nll: //p' "$WORK/s.num"))"
    else
        fail "$what: differs from the 1-stage run"
        diff "$WORK/s.num" "$WORK/$run.num" | head -8
    fi
done
finish
