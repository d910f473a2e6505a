#!/usr/bin/env bash
# compare_llamacpp.sh - baton against llama.cpp on the same file, threads and workloads, one
# engine at a time, alternating, written as CSV and drawn with gnuplot (never run in CI).
#
#   tests/bench/compare_llamacpp.sh [--out DIR] [--rounds R] [--threads T]
#       [--models "A.gguf B.gguf"] [--conc "1 4 16 32 64"] [--depths "0 1024 2048 4096 8000"]
#       [--kv "f16 q8_0"] [--prompts "2048 4096 8000"] [--only "pp tg conc depth prompt"]
#       [--nice N] [--isa avx2|named]
#   tests/bench/compare_llamacpp.sh --replot --out DIR
#       (medians and plots again from DIR/runs.csv, e.g. after joining the rows of two runs)
#
# Workloads, each measured by both engines in every round (the order of the two engines flips
# from round to round, so drift of a shared machine falls on both):
#   pp     a 512-token prompt from an empty cache, per model
#          baton bench --pp 512 --tg 0          | llama-bench -p 512 -n 0
#   tg     128 decoded tokens of one stream, per model
#          baton bench --pp 0 --tg 128          | llama-bench -p 0 -n 128
#   conc   C streams from 1-token prompts, 128 tokens each, first model
#          baton bench --pp 0 --tg 128 --concurrency C
#                                               | llama-batched-bench -npp 1 -ntg 128 -npl C
#   depth  64 decoded tokens of one stream after D tokens of context, first model, per KV type
#          baton bench --pp 0 --tg 64 --depth D --kv-type K
#                                               | llama-bench -p 0 -n 64 -d D -ctk K -ctv K
#          (D + 64 must fit the model's trained context, which baton enforces: SmolLM2's is
#          8192, hence 8000 as the deepest default)
#   prompt a P-token prompt from an empty cache, first model: where attention over the
#          prompt itself grows (quadratic in P) and takes over from the matrix products
#          baton bench --pp P --tg 0 --ctx P+64  | llama-bench -p P -n 0
# --isa avx2: both engines on AVX2 only, the kernels a Zen 2 runs, on a machine with AVX-512:
# baton with BATON_KERNELS=avx2, llama.cpp built with AVX, AVX2, FMA, F16C and BMI2 alone
# (build_llamacpp.sh --isa avx2). A stand-in for an AVX2 machine's ratios: the same kernels
# on another core, caches and memory.
# --isa named: llama.cpp built with the CPU's features named instead of -march=native
# (build_llamacpp.sh --isa named), baton as it is. On the AVX-512 Xeon of stop 36, the native
# build's flash attention over an f16 KV cache ran 2-2.7x slower than the named build's.
# llama.cpp always runs with flash attention on (-fa 1: its faster setting on these CPUs) and
# the same thread count; baton with its defaults. Every run is one repetition (--reps 1,
# -r 1); rounds give the spread.
#
# Output in DIR (default ./compare-llamacpp): runs.csv (one row per run: round, engine, model,
# workload, x, kv, tok_s, peak_rss_mib from /usr/bin/time), summary.csv (median over rounds)
# and, with gnuplot, tokps_concurrency.png, tokps_depth.png and tokps_prompt.png
# (plot_compare.gp), plus
# membw.json (tests/tools/membw: the machine's read bandwidth, for the decode-bandwidth
# fraction) and the llama.cpp version.
#
# llama.cpp's tools are built from the llama-cpp-python sdist by build_llamacpp.sh when
# missing. baton and membw come from build/ (BATON overrides baton's path).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/bench_lib.sh"

out=compare-llamacpp
rounds=3
threads=2
models=""
conc="1 4 16 32 64"
depths="0 1024 2048 4096 8000"
prompts="2048 4096 8000"
kvs="f16 q8_0"
only="pp tg conc depth prompt"
nice=""
isa=""
replot=0
args=("$@")
while (($#)); do
    case $1 in
    --replot) replot=1 && shift && continue ;;
    --out) out=$2 ;;
    --rounds) rounds=$2 ;;
    --threads) threads=$2 ;;
    --models) models=$2 ;;
    --conc) conc=$2 ;;
    --depths) depths=$2 ;;
    --prompts) prompts=$2 ;;
    --kv) kvs=$2 ;;
    --only) only=$2 ;;
    --nice) nice=$2 ;;
    --isa) isa=$2 ;;
    *) echo "compare_llamacpp: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
    esac
    shift 2 || { echo "compare_llamacpp: $1 needs a value" >&2; exit 2; }
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "compare_llamacpp: --rounds '$rounds' is not a count" >&2; exit 2; }
[[ $threads =~ ^[1-9][0-9]*$ ]] || { echo "compare_llamacpp: --threads '$threads' is not a count" >&2; exit 2; }
[[ -z $isa || $isa == avx2 || $isa == named ]] ||
    { echo "compare_llamacpp: --isa '$isa': not avx2 or named" >&2; exit 2; }
bench_autogroup "$nice" "${args[@]}"

bench_programs compare_llamacpp baton
[[ -n $models ]] || models=$model
for m in $models; do
    [[ -f $m ]] || { echo "compare_llamacpp: model file $m not found" >&2; exit 2; }
done
first_model=${models%% *}
isa_args=()
if [[ -n $isa ]]; then
    isa_args=(--isa "$isa")
    [[ $isa == named ]] || export BATON_KERNELS=$isa
fi
mapfile -t tools < <("$here/build_llamacpp.sh" "${isa_args[@]}" llama-bench llama-batched-bench)
llama_bench=${tools[0]}
llama_batched=${tools[1]}
membw=$root/build/tests/membw
command -v /usr/bin/time >/dev/null || { echo "compare_llamacpp: /usr/bin/time (Debian's time) is needed for peak RSS" >&2; exit 2; }

csv=$out/runs.csv
if ((replot)); then
    [[ -f $csv ]] || { echo "compare_llamacpp: --replot: $csv not found" >&2; exit 2; }
    only=$(awk -F, 'NR > 1 {print $4}' "$csv" | sort -u | tr '\n' ' ')
    rounds=0
fi
mkdir -p "$out"
((replot)) || echo "round,engine,model,workload,x,kv,tok_s,peak_rss_mib" >"$csv"
if [[ -x $membw ]] && ((!replot)); then
    "$membw" --threads "$threads" >"$out/membw.json"
    echo "memory read bandwidth ($threads threads): $(cat "$out/membw.json")" >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# timed CMD... - runs CMD under /usr/bin/time; its stdout goes to $tmp/stdout and the peak
# RSS in MiB to $rss. A failed run stops the script with its output.
timed() {
    if ! /usr/bin/time -f "%M" -o "$tmp/rss" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; then
        echo "compare_llamacpp: failed: $*" >&2
        tail -20 "$tmp/stderr" >&2
        exit 1
    fi
    rss=$(awk '{printf "%.1f", $1 / 1024}' "$tmp/rss")
}

# json_field FIELD - the number FIELD of the last JSON line of $tmp/stdout.
json_field() {
    python3 - "$1" "$tmp/stdout" <<'PY'
import json, sys
field, path = sys.argv[1:]
lines = [l for l in open(path) if l.startswith("{")]
print("%.2f" % json.loads(lines[-1])[field])
PY
}

record() { # round engine model workload x kv tok_s
    echo "$1,$2,$(basename "$3"),$4,$5,$6,$7,$rss" >>"$csv"
    printf '%-7s %-8s %-28s %-6s %6s %-5s %8s tok/s  %7s MiB\n' "r$1" "$2" "$(basename "$3")" \
        "$4" "$5" "$6" "$7" "$rss" >&2
}

run_baton() { # round model workload x kv
    local r=$1 m=$2 w=$3 x=$4 kv=$5 a=(--model "$2" --threads "$threads" --reps 1) f=tg_tps
    case $w in
    pp) a+=(--pp 512 --tg 0) f=pp_tps ;;
    tg) a+=(--pp 0 --tg 128) ;;
    conc) a+=(--pp 0 --tg 128 --concurrency "$x") ;;
    depth) a+=(--pp 0 --tg 64 --depth "$x" --kv-type "$kv") ;;
    prompt) a+=(--pp "$x" --tg 0 --ctx $((x + 64))) f=pp_tps ;;
    esac
    timed "$baton" bench "${a[@]}"
    record "$r" baton "$m" "$w" "$x" "$kv" "$(json_field "$f")"
}

run_llama() { # round model workload x kv
    local r=$1 m=$2 w=$3 x=$4 kv=$5
    local a=(-m "$m" -t "$threads" -fa 1 -r 1 -o jsonl)
    case $w in
    pp) a+=(-p 512 -n 0) ;;
    tg) a+=(-p 0 -n 128) ;;
    depth) a+=(-p 0 -n 64 -d "$x" -ctk "$kv" -ctv "$kv") ;;
    prompt) a+=(-p "$x" -n 0) ;;
    conc)
        timed "$llama_batched" -m "$m" -t "$threads" -fa on -npp 1 -ntg 128 -npl "$x" \
            -c $((x * 130 + 256)) --output-format jsonl
        record "$r" llama.cpp "$m" "$w" "$x" "$kv" "$(json_field speed_tg)"
        return
        ;;
    esac
    timed "$llama_bench" "${a[@]}"
    record "$r" llama.cpp "$m" "$w" "$x" "$kv" "$(json_field avg_ts)"
}

# pair ROUND MODEL WORKLOAD X KV - both engines, baton first in odd rounds.
pair() {
    if (($1 % 2)); then
        run_baton "$@"
        run_llama "$@"
    else
        run_llama "$@"
        run_baton "$@"
    fi
}

for ((r = 1; r <= rounds; r++)); do
    for m in $models; do
        [[ " $only " == *" pp "* ]] && pair "$r" "$m" pp 512 f16
        [[ " $only " == *" tg "* ]] && pair "$r" "$m" tg 128 f16
    done
    if [[ " $only " == *" conc "* ]]; then
        for c in $conc; do pair "$r" "$first_model" conc "$c" f16; done
    fi
    if [[ " $only " == *" depth "* ]]; then
        for kv in $kvs; do
            for d in $depths; do pair "$r" "$first_model" depth "$d" "$kv"; done
        done
    fi
    if [[ " $only " == *" prompt "* ]]; then
        for p in $prompts; do pair "$r" "$first_model" prompt "$p" f16; done
    fi
done

# Medians over rounds, and baton / llama.cpp per point.
python3 - "$csv" "$out/summary.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
groups = {}
for r in rows:
    key = (r["model"], r["workload"], int(r["x"]), r["kv"])
    groups.setdefault(key, {}).setdefault(r["engine"], []).append(r)
with open(sys.argv[2], "w") as f:
    f.write("model,workload,x,kv,baton_tok_s,llamacpp_tok_s,ratio,baton_rss_mib,llamacpp_rss_mib,rounds\n")
    for key in sorted(groups):
        g = groups[key]
        med = lambda e, c: statistics.median(float(r[c]) for r in g.get(e, [])) if g.get(e) else float("nan")
        b, l = med("baton", "tok_s"), med("llama.cpp", "tok_s")
        f.write("%s,%s,%d,%s,%.2f,%.2f,%.3f,%.1f,%.1f,%d\n" % (*key, b, l, b / l if l else float("nan"),
                med("baton", "peak_rss_mib"), med("llama.cpp", "peak_rss_mib"), len(g.get("baton", []))))
PY
column -s, -t "$out/summary.csv" >&2
"$llama_bench" -m "$first_model" -p 0 -n 1 -r 1 -o jsonl -t 1 2>/dev/null |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["build_commit"])' \
        >"$out/llamacpp_version" || true
if command -v gnuplot >/dev/null; then
    plots=""
    [[ " $only " == *" conc "* ]] && plots+=" conc"
    [[ " $only " == *" depth "* ]] && plots+=" depth"
    grep -q '^[^,]*,prompt,' "$out/summary.csv" && plots+=" prompt"
    if [[ -n $plots ]]; then
        gnuplot -e "summary='$out/summary.csv'; outdir='$out'; plots='$plots'" "$here/plot_compare.gp"
        echo "compare_llamacpp: plots ($plots) in $out/tokps_*.png" >&2
    fi
else
    echo "compare_llamacpp: gnuplot not installed (apt install gnuplot-nox); no plots" >&2
fi
