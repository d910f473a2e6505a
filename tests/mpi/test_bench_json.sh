#!/usr/bin/env bash
# test_bench_json.sh - what `baton bench` reports for the scaling study, under mpirun -np 3
# (2 stages) on the tiny model (64 wide), 4 sequences x 6 tokens, 2 measured rounds:
#   - "codec" and "zstd" are the ones the stages used: f32 by default on one host (no stage on
#     another host: "remote_stages" false), f16 and 1 when asked;
#   - "act_bytes" counts the activation frames stage 1 sent stage 2 over all 3 rounds
#     (warm-up included): at least the codec's bytes for every token (f32 4 x 64, f16 2 x 64)
#     and at most 200 bytes more per token (frame header and row fields); f16 about half f32;
#   - "tg_ttft_s" and "tg_tpot_s" are positive and TPOT is below the round's wall time per
#     token step.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
pick_model tiny
tg=6
conc=4
reps=2
common=(bench --model "$MODEL" --threads 1 --pp 0 --tg "$tg" --concurrency "$conc" --reps "$reps")

field() { sed -n "s/.*\"$2\":\\([^,}]*\\).*/\\1/p" "$1" | tr -d '"'; }

for c in default f16; do
    flags=()
    [[ $c == f16 ]] && flags=(--act-codec f16 --act-zstd 1)
    if ! mpi_run 3 "$BATON" "${common[@]}" "${flags[@]}" >"$WORK/$c.out" 2>"$WORK/$c.err"; then
        fail "bench ($c): $(tail -3 "$WORK/$c.err")"
        continue
    fi
    tail -1 "$WORK/$c.out" >"$WORK/$c.json"
    echo "     $c: $(cat "$WORK/$c.json")"
done
[[ -s $WORK/default.json && -s $WORK/f16.json ]] || { finish; exit; }

got="$(field "$WORK/default.json" codec) $(field "$WORK/default.json" zstd) $(field "$WORK/default.json" remote_stages)"
[[ $got == "f32 0 false" ]] && pass "default on one host: codec f32, zstd 0, no remote stage" ||
    fail "default on one host: '$got', want 'f32 0 false'"
got="$(field "$WORK/f16.json" codec) $(field "$WORK/f16.json" zstd)"
[[ $got == "f16 1" ]] && pass "--act-codec f16 --act-zstd 1 reported as used" ||
    fail "--act-codec f16 --act-zstd 1 reported as '$got'"

tokens=$(((reps + 1) * conc * tg))
b32=$(field "$WORK/default.json" act_bytes)
b16=$(field "$WORK/f16.json" act_bytes)
if [[ $b32 -ge $((tokens * 256)) && $b32 -le $((tokens * (256 + 200))) ]]; then
    pass "f32 act_bytes $b32 for $tokens tokens ($((b32 / tokens)) per token; 256 of them the activations)"
else
    fail "f32 act_bytes $b32 for $tokens tokens, want $((tokens * 256)) to $((tokens * 456))"
fi
# zstd on f16 may shrink the 128 bytes of a row, never grow them much.
if [[ $b16 -ge $((tokens * 64)) && $b16 -le $((tokens * (128 + 200))) && $b16 -lt $b32 ]]; then
    pass "f16+zstd act_bytes $b16 ($((b16 / tokens)) per token), less than f32's"
else
    fail "f16+zstd act_bytes $b16 for $tokens tokens, want $((tokens * 64)) to $((tokens * 328)) and < $b32"
fi

ttft=$(field "$WORK/default.json" tg_ttft_s)
tpot=$(field "$WORK/default.json" tg_tpot_s)
tps=$(field "$WORK/default.json" tg_tps)
if awk -v a="$ttft" -v b="$tpot" -v t="$tps" -v c="$conc" \
    'BEGIN { exit !(a > 0 && b > 0 && b < 10 * c / t) }'; then
    pass "tg_ttft_s $ttft, tg_tpot_s $tpot (tokens/s $tps)"
else
    fail "tg_ttft_s '$ttft', tg_tpot_s '$tpot' with tokens/s '$tps'"
fi
finish
