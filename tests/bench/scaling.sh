#!/usr/bin/env bash
# scaling.sh - decode throughput of 1 stage vs 2 stages (one compute thread each) with
# 1, 4, 16 and 32 concurrent sequences, through mpirun (deploy/baton-run), and the pipeline
# bubble (1 - mean stage busy fraction). Prints a markdown table.
#   tests/bench/scaling.sh [TG=64] [REPS=2]   (env: SPLIT=compute, CODEC=f32)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run="$here/../../deploy/baton-run"
tg=${1:-64}
reps=${2:-2}
split=${SPLIT:-compute}
codec=${CODEC:-f32}
echo "| sequences | 1 stage tok/s | 2 stages tok/s | speed-up | 2-stage busy (stage 1, 2) | bubble |"
echo "|---:|---:|---:|---:|---|---:|"
for c in 1 4 16 32; do
    one=$("$run" --stages 1 --threads 1 bench --pp 0 --tg "$tg" --concurrency "$c" --reps "$reps" \
        --act-codec "$codec" 2>/dev/null | tail -1)
    two=$("$run" --stages 2 --threads 1 bench --pp 0 --tg "$tg" --concurrency "$c" --reps "$reps" \
        --act-codec "$codec" --split "$split" 2>/dev/null | tail -1)
    python3 - "$c" "$one" "$two" <<'PY'
import json, sys
c, one, two = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
busy = ", ".join("%.0f%%" % (100 * b) for b in two["stage_busy"])
print("| %s | %.1f | %.1f | %.2fx | %s | %.0f%% |" % (c, one["tg_tps"], two["tg_tps"],
      two["tg_tps"] / one["tg_tps"], busy, 100 * two["bubble"]))
PY
done
