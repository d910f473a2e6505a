#!/usr/bin/env bash
# long_context.sh - decode speed and peak RSS at long contexts (docs/benchmarks.md, "Long
# contexts (issue #12)"): `baton bench --depth D --pp 0 --tg N` for each depth, with an older
# baton (e.g. one built from main in a separate directory) and this one with --kv-type f16 and
# q8_0, one after another per depth (so the three of a depth see the same machine), under
# /usr/bin/time -v for the peak RSS. Writes one JSON line per run: cfg, depth, the load
# average before it, rss_kb and bench's own JSON line. Never run in CI.
#
#   tests/bench/long_context.sh [--old PATH] [--new PATH] [--depths "1000 2000 4000 8000"]
#                               [--tg N] [--threads N] [--rounds R] [--out FILE]
#
#   --old PATH   baton before the change (left out: only the new one runs); it needs bench
#                --depth: for docs/benchmarks.md it was main's tree with this branch's
#                coordinator/cli/cmd_bench.c, built in a separate directory
#   --new PATH   baton to measure (default: build/coordinator/baton)
#   --tg N       decode steps timed per run (32)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
old="" new="$root/build/coordinator/baton" depths="1000 2000 4000 8000" tg=32 threads=2
rounds=1 out=/dev/stdout
while [[ $# -gt 0 ]]; do
    case $1 in
    --old) old=$2; shift 2 ;;
    --new) new=$2; shift 2 ;;
    --depths) depths=$2; shift 2 ;;
    --tg) tg=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "long_context.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
if [[ ! -x /usr/bin/time ]]; then
    echo "long_context.sh: /usr/bin/time (GNU time) is needed for the peak RSS" >&2
    exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for round in $(seq "$rounds"); do
    for d in $depths; do
        for cfg in old new_f16 new_q8_0; do
            case $cfg in
            old) [[ -n $old ]] || continue; bin=$old; kt=() ;;
            new_f16) bin=$new; kt=(--kv-type f16) ;;
            new_q8_0) bin=$new; kt=(--kv-type q8_0) ;;
            esac
            load=$(cut -d' ' -f1 /proc/loadavg)
            /usr/bin/time -v -o "$tmp/time" "$bin" bench --threads "$threads" --depth "$d" \
                --pp 0 --tg "$tg" --reps 1 "${kt[@]}" >"$tmp/out" 2>/dev/null
            rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$tmp/time")
            echo "{\"cfg\":\"$cfg\",\"round\":$round,\"depth\":$d,\"load\":$load,\"rss_kb\":${rss:-0},\"bench\":$(tail -1 "$tmp/out")}" >>"$out"
        done
    done
done
