#!/usr/bin/env bash
# study.sh - the measurements of docs/benchmarks.md, "Scaling study", in one go (about 17
# minutes on the project's 2-core machine), then the model's check, the projection and
# the plots:
#
#   tests/bench/scaling/study.sh OUTDIR [--baton PATH] [--nice N]
#
# OUTDIR gets scaling.csv (+ .cores, .log), predicted.csv, projection.csv, predict.txt and
# the PNGs. The sets, each a sweep.sh call (one round each; the repeated configurations
# across sets give the noise):
#   1. stages 1-4 at unshaped and 1gbit, 1 and 16 sequences, f16, both models; the 1-stage
#      unshaped runs at 1, 4, 16 and 32 sequences are predict.py's calibration;
#   2. the 1.1B shape on 2 stages at 16 sequences: every codec with and without zstd on
#      unshaped, 1gbit, 100mbit, 10mbit; f16 and f32 with the added delays (1gbit+0.2ms,
#      1gbit+1ms, 1gbit+20ms);
#   3. SmolLM2 likewise (its 576-wide rows are small: the links matter less);
#   4. the 2-stage f16 runs at 16 sequences (unshaped, 1gbit) again: with sets 1 and 2, three
#      samples of each, for the noise.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,18p' "$0"; exit 2; }
out=$1
shift
mkdir -p "$out"
csv=$out/scaling.csv
sw() { "$here/sweep.sh" --out "$csv" --split compute "$@"; }
extra=("$@")
# Tokens per sequence: 8 for the 1.1B shape (about 20-40 tokens/s here), 16 for SmolLM2.
tg_of() { if [[ $1 == tinyllama ]]; then echo 8; else echo 16; fi; }
for m in smol tinyllama; do
    # 1: calibration (with the cores two stages get) and stages
    sw --models $m --stages 1 --profiles unshaped --codecs f16 --zstd 0 \
        --concurrency 1,4,16,32 --tg "$(tg_of $m)" "${extra[@]}"
    sw --models $m --stages 1,2,3,4 --profiles 1gbit --codecs f16 --zstd 0 \
        --concurrency 1,16 --tg "$(tg_of $m)" --no-cores "${extra[@]}"
    sw --models $m --stages 2,3,4 --profiles unshaped --codecs f16 --zstd 0 \
        --concurrency 1,16 --tg "$(tg_of $m)" --no-cores "${extra[@]}"
done
# 2, 3: codecs x profiles at 16 sequences on 2 stages
for m in tinyllama smol; do
    sw --models $m --stages 2 --profiles unshaped,1gbit,100mbit,10mbit --codecs f32,f16,bf16,q8 \
        --zstd 0,1 --concurrency 16 --tg "$(tg_of $m)" --no-cores "${extra[@]}"
    sw --models $m --stages 2 --profiles 1gbit+0.2ms,1gbit+1ms,1gbit+20ms --codecs f32,f16 \
        --zstd 0 --concurrency 16 --tg "$(tg_of $m)" --no-cores "${extra[@]}"
done
# The noise: the 2-stage f16 runs at 16 sequences (unshaped, 1gbit) once more at the end, a
# third sample of each beside those of sets 1 and 2 (predict.py's "spread" column).
for m in smol tinyllama; do
    sw --models $m --stages 2 --profiles unshaped,1gbit --codecs f16 --zstd 0 --concurrency 16 \
        --tg "$(tg_of $m)" --no-cores "${extra[@]}"
done
baton=${BATON:-$root/build/coordinator/baton}
"$here/predict.py" "$csv" --baton "$baton" --out "$out/predicted.csv" \
    --project "$out/projection.csv" | tee "$out/predict.txt"
"$here/plot.sh" "$csv" "$out" --codec f16 --concurrency 16
"$here/plot.sh" "$csv" "$out/c1" --codec f16 --concurrency 1
