#!/usr/bin/env bash
# kernels_ab.sh - two baton binaries (before / after a kernel change) alternating on the same
# model and threads: `baton bench` pp512 + tg128, then decode of 16, 32 and 64 streams
# (`--concurrency C --pp 0 --tg 128`), A then B in every round, B then A in the next, and the
# load average before each run (other processes on a shared machine move these numbers by
# tens of percent: compare A and B only within a round). Never run in CI.
#
#   tests/bench/kernels_ab.sh OLD_BATON NEW_BATON [ROUNDS] > results.csv
#
# Output: CSV `round,binary,workload,tok_s,load1` on stdout (workload pp512, tg128, c16, c32,
# c64). BATON_MODEL as for every baton command (deploy/fetch-model.sh when unset); THREADS
# (default 2).
set -euo pipefail

old=${1:?usage: kernels_ab.sh OLD_BATON NEW_BATON [ROUNDS]}
new=${2:?usage: kernels_ab.sh OLD_BATON NEW_BATON [ROUNDS]}
rounds=${3:-3}
threads=${THREADS:-2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export BATON_MODEL=${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}
for b in "$old" "$new"; do
    [[ -x $b ]] || { echo "kernels_ab.sh: $b is not an executable" >&2; exit 2; }
done

# json_field LINE KEY - one number from baton bench's JSON line
json_field() {
    python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

# run ROUND LABEL BINARY - every workload once with BINARY
run() {
    local round=$1 label=$2 bin=$3 line load
    load=$(cut -d' ' -f1 /proc/loadavg)
    line=$("$bin" bench --threads "$threads" --pp 512 --tg 128 --reps 1 2>/dev/null | grep '^{')
    echo "$round,$label,pp512,$(json_field "$line" pp_tps),$load"
    echo "$round,$label,tg128,$(json_field "$line" tg_tps),$load"
    for c in 16 32 64; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        line=$("$bin" bench --threads "$threads" --concurrency "$c" --pp 0 --tg 128 --reps 1 \
            2>/dev/null | grep '^{')
        echo "$round,$label,c$c,$(json_field "$line" tg_tps),$load"
    done
}

echo "round,binary,workload,tok_s,load1"
for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then
        run "$r" old "$old"
        run "$r" new "$new"
    else
        run "$r" new "$new"
        run "$r" old "$old"
    fi
done
