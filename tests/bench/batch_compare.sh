#!/usr/bin/env bash
# batch_compare.sh - `baton batch` (1 stage, 2 stages under mpirun; each with fdatasync and with
# --no-sync) beside llama.cpp's llama-server fed the same request bodies, on the same model file
# and the same cores, one system at a time (an idle MPI rank still polls, so systems never run
# side by side), the order reversed every other round. Never run in CI; measure on an
# otherwise idle machine (the load average before and after each system is recorded).
#
#   tests/bench/batch_compare.sh [--out DIR] [--requests N] [--max-tokens N] [--kinds K]
#                                [--seed S] [--rounds R] [--systems "..."] [--parallel "64"]
#                                [--ctx N] [--nice N]
#
#   --requests N    requests in the batch file (1000)
#   --max-tokens N  tokens each request generates (16; every request has ignore_eos and
#                   temperature 0, so every system does the same work)
#   --kinds K       prompts.json kinds to draw from (short: 7-15 tokens; short,medium: 7-155)
#   --parallel "P"  llama-server slots (--parallel P, --ctx-size P x CTX) and as many client
#                   workers; one llama-server run per value ("16 64": 16 as serve_compare.sh's
#                   highest point; 64 = baton's --max-seqs, the sequences baton decodes
#                   together, so both systems may hold the same number of requests at once)
#   --ctx N         context per sequence (512); baton gets --ctx N --max-seqs 64
#                   --kv-tokens 64 x N, the KV memory llama-server gets with 64 slots
#   --nice N        the whole run at scheduling priority N in a session of its own (see
#                   serve_compare.sh: autogroups)
#
# Systems (labels): baton-1stage-sync, baton-1stage-nosync (singleton, --threads 2),
# baton-2stages-sync, baton-2stages-nosync (deploy/baton-run --stages 2 --threads 1: mpirun -np
# 3), baton-1stage-sync1 (not in the default list: --sync-lines 1, an fdatasync after every
# result line, durability's worst case), llama-server-pP (--threads 2 --threads-batch 2 --parallel P -cb, fed by
# batch_bench.py client: P workers, POST /v1/completions, not streamed).
# Wall time: baton's own (its summary: from the first submission, after the model is loaded
# and the input checked) and the client's for llama-server (first send to last answer, the
# model loaded before). Output: DIR/batch.jsonl (one JSON object per system and round),
# DIR/batch.csv, a table on stdout, DIR/batch_tokps.png (plot_batch.gp, with gnuplot);
# DIR/*.log (stderr of every run), DIR/in.jsonl (the batch).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/bench_lib.sh"
out=bench-batch
requests=1000
max_tokens=16
kinds=short
seed=1
rounds=1
systems="baton-1stage-sync baton-1stage-nosync baton-2stages-sync baton-2stages-nosync llama-server"
parallel="16 64"
ctx=512
prio=()
nice_arg=""
args=("$@")
port=${BT_BENCH_PORT:-18081}
while [[ $# -gt 0 ]]; do
    case $1 in
    --out) out=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --max-tokens) max_tokens=$2; shift 2 ;;
    --kinds) kinds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --systems) systems=$2; shift 2 ;;
    --parallel) parallel=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    --nice) prio=(nice -n "$2"); nice_arg=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "batch_compare: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
bench_autogroup "$nice_arg" "${args[@]}"
mkdir -p "$out"
bench_programs batch_compare "$systems"
py() { ${prio[@]+"${prio[@]}"} python3 "$here/batch_bench.py" "$@"; }

in=$out/in.jsonl
py make --requests "$requests" --max-tokens "$max_tokens" --kinds "$kinds" --seed "$seed" --out "$in"
seqs=64
kv=$((seqs * ctx))
echo "batch_compare: $requests requests ($kinds prompts, $max_tokens tokens each), $(nproc) cores," \
    "$(lscpu | sed -n 's/^Model name: *//p'), output on $(df -T "$out" | awk 'NR == 2 { print $2 }')" >&2

trap bench_stop EXIT

# run_baton LABEL STAGES SYNC: one baton batch run from an empty output; its summary -> $res
run_baton() {
    local label=$1 stages=$2 sync=$3 o=$out/out-$1.jsonl log=$out/$1.log
    local flags=(batch --input "$in" --output "$o" --model "$model" --ctx "$ctx" --max-seqs "$seqs"
        --kv-tokens "$kv" --progress-interval 30)
    [[ $sync == nosync ]] && flags+=(--no-sync)
    [[ $sync == sync1 ]] && flags+=(--sync-lines 1)
    rm -f "$o" "$o.batch"
    local t0 rc=0
    t0=$(date +%s.%N)
    if [[ $stages == 1 ]]; then
        ${prio[@]+"${prio[@]}"} "$baton" "${flags[@]}" --threads 2 2>"$log" || rc=$?
    else
        ${prio[@]+"${prio[@]}"} "$root/deploy/baton-run" --stages "$stages" --threads 1 --baton "$baton" \
            "${flags[@]}" --split compute 2>"$log" || rc=$?
    fi
    total=$(echo "$(date +%s.%N) - $t0" | bc)
    [[ $rc == 0 ]] || echo "batch_compare: $label exited $rc (see $log)" >&2
    local ns=()
    [[ $sync == nosync ]] && ns=(--no-sync)
    res=$(py baton --log "$log" --output "$o" ${ns[@]+"${ns[@]}"}) || res='{"error": "no summary"}'
}

# run_llama LABEL P: llama-server with P slots, fed by P workers; the client's result -> $res
run_llama() {
    local label=$1 p=$2 log=$out/$1.log
    ${prio[@]+"${prio[@]}"} "$llama" -m "$model" --threads 2 --threads-batch 2 --parallel "$p" -cb \
        --ctx-size $((p * ctx)) --host 127.0.0.1 --port "$port" --no-webui >"$log" 2>&1 &
    pid=$!
    bench_wait_ready "batch_compare: $label" "http://127.0.0.1:$port/health" "$log"
    local t0
    t0=$(date +%s.%N)
    res=$(py client --url "http://127.0.0.1:$port" --input "$in" --workers "$p" 2>>"$log") ||
        echo "batch_compare: $label: some requests failed (see $log)" >&2
    total=$(echo "$(date +%s.%N) - $t0" | bc)
    bench_stop
}

sys_list=()
for s in $systems; do
    if [[ $s == llama-server ]]; then
        for p in $parallel; do sys_list+=("llama-server-p$p"); done
    else
        sys_list+=("$s")
    fi
done
for r in $(seq 1 "$rounds"); do
    order=("${sys_list[@]}")
    if ((r % 2 == 0)); then # reversed every other round
        order=()
        for ((i = ${#sys_list[@]} - 1; i >= 0; i--)); do order+=("${sys_list[$i]}"); done
    fi
    for sys in "${order[@]}"; do
        load0=$(cut -d' ' -f1 /proc/loadavg)
        echo "batch_compare: round $r, $sys (load average $load0)" >&2
        case $sys in
        baton-1stage-sync) run_baton "$sys" 1 sync ;;
        baton-1stage-nosync) run_baton "$sys" 1 nosync ;;
        baton-1stage-sync1) run_baton "$sys" 1 sync1 ;;
        baton-2stages-sync) run_baton "$sys" 2 sync ;;
        baton-2stages-nosync) run_baton "$sys" 2 nosync ;;
        llama-server-p*) run_llama "$sys" "${sys#llama-server-p}" ;;
        *) echo "batch_compare: unknown system '$sys'" >&2; exit 2 ;;
        esac
        load1=$(cut -d' ' -f1 /proc/loadavg)
        python3 -c '
import json, sys
r = json.loads(sys.argv[1])
r.update(label=sys.argv[2], round=int(sys.argv[3]), load_before=float(sys.argv[4]),
         load_after=float(sys.argv[5]), process_s=round(float(sys.argv[6]), 2),
         max_tokens=int(sys.argv[7]), kinds=sys.argv[8])
w = r.get("wall_s") or 0
if w:
    r["req_s"] = round(r["ok"] / w, 2)
    r["gen_tok_s"] = round(r["completion_tokens"] / w, 1)
    r["all_tok_s"] = round((r["prompt_tokens"] + r["completion_tokens"]) / w, 1)
print(json.dumps(r))' "$res" "$sys" "$r" "$load0" "$load1" "$total" "$max_tokens" "$kinds" >>"$out/batch.jsonl"
        tail -n1 "$out/batch.jsonl" >&2
    done
done

# CSV and table of this run's lines (batch.jsonl is appended to across runs)
python3 - "$out/batch.jsonl" "$out/batch.csv" "$rounds" "${#sys_list[@]}" <<'EOF'
import csv, json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = rows[-int(sys.argv[3]) * int(sys.argv[4]):]
fields = ["label", "round", "requests", "ok", "failed", "wall_s", "req_s", "gen_tok_s", "all_tok_s",
          "prompt_tokens", "completion_tokens", "stage_busy_pct", "fdatasyncs", "ttft_p50_ms",
          "tpot_p50_ms", "process_s", "load_before", "load_after", "max_tokens", "kinds"]
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (" ".join(map(str, r[k])) if isinstance(r.get(k), list) else r.get(k))
                    for k in fields})
print("| system | round | ok/failed | wall s | req/s | gen tok/s | (prompt+gen) tok/s "
      "| stage busy % | fdatasyncs | load before/after |")
print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
for r in rows:
    busy = ", ".join(f"{x:.1f}" for x in r.get("stage_busy_pct", [])) or "-"
    print(f"| {r['label']} | {r['round']} | {r.get('ok')}/{r.get('failed')} | {r.get('wall_s')} "
          f"| {r.get('req_s')} | {r.get('gen_tok_s')} | {r.get('all_tok_s')} | {busy} "
          f"| {r.get('fdatasyncs', '-')} | {r['load_before']}/{r['load_after']} |")
EOF
if command -v gnuplot >/dev/null; then
    gnuplot -e "csv='$out/batch.csv'; outdir='$out'; rounds=$rounds; systems='${sys_list[*]}'" \
        "$here/plot_batch.gp"
    echo "batch_compare: chart in $out/batch_tokps.png" >&2
fi
