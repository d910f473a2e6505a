#!/usr/bin/env bash
# stage_rss.sh - shows that each stage maps the whole model file but touches only its own
# tensors: runs a 2-stage (or S-stage) decode under mpirun and, while it runs, reads from
# /proc/PID/smaps how much of the model file's mapping is resident in each rank.
#   tests/bench/stage_rss.sh [STAGES=2]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stages=${1:-2}
model=${BATON_MODEL:-${BATON_CACHE:-$HOME/.cache/baton}/SmolLM2-135M-Instruct.Q4_1.gguf}
"$here/../../deploy/baton-run" --stages "$stages" --threads 1 bench --model "$model" --pp 256 \
    --tg 2000 --concurrency 4 --reps 1 --split compute >/dev/null 2>&1 &
job=$!
sleep 8
echo "| rank | role | model file mapped MiB | model file resident MiB | process RSS MiB |"
echo "|---:|---|---:|---:|---:|"
for pid in $(pgrep -f "coordinator/baton bench"); do
    rank=$(tr '\0' '\n' </proc/"$pid"/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [[ -n $rank ]] || continue
    read -r size rss < <(awk -v f="$model" '
        $0 ~ f { m = 1; next }
        /^[0-9a-f]+-[0-9a-f]+ / { m = 0 }
        m && /^Size:/ { s += $2 }
        m && /^Rss:/ { r += $2 }
        END { printf "%.1f %.1f\n", s / 1024, r / 1024 }' /proc/"$pid"/smaps)
    total=$(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' /proc/"$pid"/status)
    role=$([[ $rank == 0 ]] && echo coordinator || echo "stage $rank")
    echo "| $rank | $role | $size | $rss | $total |"
done | sort -t'|' -k2 -n
kill "$job" 2>/dev/null || true
wait "$job" 2>/dev/null || true
pkill -f "coordinator/baton bench" 2>/dev/null || true
