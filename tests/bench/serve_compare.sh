#!/usr/bin/env bash
# serve_compare.sh - baton serve (1 stage, 2 stages under mpirun) beside llama.cpp's
# llama-server on the same model file, the same cores and the same load.py workload, one
# system at a time (an idle MPI rank still polls, so the systems never run side by side),
# alternating systems at every point. Never run in CI; measure on an otherwise idle machine.
#
#   tests/bench/serve_compare.sh [--out DIR] [--rounds R] [--concurrency "1 2 4 8 16"]
#                                [--rates "0.5 1 2 4"] [--max-tokens N] [--systems "..."]
#                                [--requests N]  (per point; default load.py's)
#                                [--kinds K]     (load.py's prompt kinds, default all)
#                                [--nice N]      (the whole run at scheduling priority N: on a
#                                shared machine, -15 keeps other users' builds from deciding
#                                the numbers; llama.cpp's spinning thread barrier suffers most.
#                                With the kernel's autogroups on, a process's nice value only
#                                counts within its session, so the run moves to a session of its
#                                own (setsid) and sets that group's nice, /proc/self/autogroup)
#
# Systems (labels in the output): baton-1stage (singleton, 1 in-process stage, --threads 2),
# baton-2stages (deploy/baton-run --stages 2: mpirun -np 3, 1 thread per stage),
# llama-server (--threads 2, -np = the point's concurrency; 16 slots for the Poisson points;
# --ctx-size = slots x CTX, so every slot has the context baton's sequences have).
# Output: DIR/load.jsonl, DIR/load.csv (load.py's), DIR/*.log (servers' stderr), and the PNGs
# of plot_load.gp in DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/bench_lib.sh"
out=bench-out
rounds=1
conc="1 2 4 8 16"
rates="0.5 1 2 4"
max_tokens=64
systems="baton-1stage baton-2stages llama-server"
ctx=2048
requests=()
kinds=short,medium,long
prio=()
nice_arg=""
args=("$@")
port=${BT_BENCH_PORT:-18080}
while [[ $# -gt 0 ]]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --requests) requests=(--requests "$2"); shift 2 ;;
    --kinds) kinds=$2; shift 2 ;;
    --nice) prio=(nice -n "$2"); nice_arg=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "serve_compare: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
bench_autogroup "$nice_arg" "${args[@]}"
mkdir -p "$out"
bench_programs serve_compare "$systems"

trap bench_stop EXIT

# start SYSTEM SLOTS: starts the system on $port in the background and waits until it answers
# (baton: GET /ready 200; llama-server: GET /health 200, i.e. the model is loaded).
start() {
    local sys=$1 slots=$2 probe=/ready
    local kv=$((slots * ctx))
    case $sys in
    baton-1stage)
        ${prio[@]+"${prio[@]}"} "$baton" serve --model "$model" --threads 2 --port "$port" --ctx "$ctx" \
            --max-seqs "$slots" --kv-tokens "$kv" 2>>"$out/$sys.log" &
        ;;
    baton-2stages)
        ${prio[@]+"${prio[@]}"} "$root/deploy/baton-run" --stages 2 --baton "$baton" serve --model "$model" \
            --port "$port" --ctx "$ctx" --max-seqs "$slots" --kv-tokens "$kv" \
            --split compute 2>>"$out/$sys.log" &
        ;;
    llama-server)
        probe=/health
        ${prio[@]+"${prio[@]}"} "$llama" -m "$model" --threads 2 --threads-batch 2 -np "$slots" --ctx-size "$kv" \
            --host 127.0.0.1 --port "$port" --no-webui >>"$out/$sys.log" 2>&1 &
        ;;
    *) echo "serve_compare: unknown system '$sys'" >&2; exit 2 ;;
    esac
    pid=$!
    bench_wait_ready "serve_compare: $sys" "http://127.0.0.1:$port$probe" "$out/$sys.log"
}

load() { # load LABEL ARGS...
    local label=$1
    shift
    ${prio[@]+"${prio[@]}"} python3 "$here/load.py" --url "http://127.0.0.1:$port" --label "$label" \
        --max-tokens "$max_tokens" --kinds "$kinds" --jsonl "$out/load.jsonl" --csv "$out/load.csv" \
        ${requests[@]+"${requests[@]}"} "$@" ||
        echo "serve_compare: $label: some requests failed (see $out/load.jsonl)" >&2
}

maxc=1
for c in $conc; do ((c > maxc)) && maxc=$c; done
for r in $(seq 1 "$rounds"); do
    for c in $conc; do
        for sys in $systems; do
            echo "serve_compare: round $r, $sys, $c concurrent clients" >&2
            slots=$c
            [[ $sys == baton-* ]] && slots=$maxc # baton's --max-seqs is a limit, not a cost
            start "$sys" "$slots"
            load "$sys" --concurrency "$c"
            bench_stop
        done
    done
    if [[ -n $rates ]]; then
        for sys in $systems; do
            echo "serve_compare: round $r, $sys, Poisson rates $rates" >&2
            start "$sys" "$maxc"
            load "$sys" --rates "${rates// /,}"
            bench_stop
        done
    fi
done
if command -v gnuplot >/dev/null; then
    gnuplot -e "csv='$out/load.csv'; labels='$systems'; outdir='$out'" "$here/plot_load.gp"
    echo "serve_compare: plots in $out" >&2
fi
