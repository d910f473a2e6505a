#!/usr/bin/env bash
# sweep.sh - the scaling study: decode throughput over stages, link profiles, activation
# codecs and concurrency, with real ranks on the one-machine test bed (deploy/netns/), one
# host per rank: the coordinator on bt-h0, stage s on bt-h<s>, Open MPI over TCP only.
# Writes one CSV row per configuration and round.
#
#   tests/bench/scaling/sweep.sh [--models smol,tinyllama] [--stages 1,2,3,4]
#       [--profiles unshaped,10gbit,1gbit,100mbit,10mbit,1gbit+0.2ms,1gbit+1ms,1gbit+20ms]
#       [--codecs f32,f16,bf16,q8] [--zstd 0,1] [--concurrency 1,4,16,32] [--tg 16] [--reps 1]
#       [--rounds 1] [--split compute] [--out scaling.csv] [--baton PATH] [--nice N]
#       [--no-cores] [--dry-run]
#
# Every flag takes a comma list and defaults to the whole set above (2048 configurations:
# pick subsets). --rounds R runs every configuration once per round, in the same order, so
# slow drift of the machine hits all of them alike; each round is a row of its own.
#
# Models: smol = SmolLM2-135M (deploy/fetch-model.sh, or $BATON_MODEL); tinyllama = the
# TinyLlama-1.1B shape in Q4_0 with seeded random weights, written by tests/tools/synth_model
# into $BT_SCALING_DIR (default /tmp/bt-scaling) when missing (660 MB; speed only).
#
# Programs: baton with the link delay compiled in (the profiles' +DELAY needs it; baton
# --version says so): --baton PATH, else $BT_LINKDELAY_BUILD/coordinator/baton (default
# build-linkdelay/ in the repository), configured with -DBT_LINK_DELAY=ON and built when
# missing. The shipped build lacks the delay; a test build is not for production.
#
# Each configuration: deploy/netns/run.sh --hosts STAGES+1 --profile P -- baton bench --pp 0
# --tg TG --concurrency C --reps R --threads 1 --act-codec X --act-zstd Z --split S --inflight
# 2xSTAGES (one warm-up round, then R; the median). Columns: see tests/bench/scaling/README.md.
# --inflight is given because predict.py's micro-batch rule and the committed data take 2 x
# stages in flight on one stage too; the engine's own default there is 1 since stop 26.
# (The scheduler's 16-row floor, stop 27, applies either way; predict.py models it, and
# --prompt-group 0 models data measured before it.)
#
# How many cores the machine gives two stages at once: at the start of every round, for each
# model, `baton bench` (1 stage, in-process, --concurrency 16) alone and then two copies at
# the same time; cores = the two copies' tokens/s together / the one's. One row per model and
# round in OUT.cores (model,round,solo_tok_s,pair_tok_s,cores,load1); predict.py uses it for
# the stages' shared cores (--no-cores skips it).
#
# Needs root (the test bed). The test bed is brought up for the largest stage count and taken
# down at the end; one that is already up is refused (someone else's).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
TB=$root/deploy/netns/testbed.sh
RUN=$root/deploy/netns/run.sh

models=smol,tinyllama
stages_list=1,2,3,4
profiles=unshaped,10gbit,1gbit,100mbit,10mbit,1gbit+0.2ms,1gbit+1ms,1gbit+20ms
codecs=f32,f16,bf16,q8
zstds=0,1
concs=1,4,16,32
tg=16
reps=1
rounds=1
split=compute
out=scaling.csv
baton=""
nice=""
dry=0
cores_cal=1
args=("$@")
die() {
    echo "sweep.sh: $*" >&2
    exit 2
}
while [[ $# -gt 0 ]]; do
    [[ $1 == --dry-run ]] && { dry=1; shift; continue; }
    [[ $1 == --no-cores ]] && { cores_cal=0; shift; continue; }
    [[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
    case $1 in
    --models) models=$2 ;;
    --stages) stages_list=$2 ;;
    --profiles) profiles=$2 ;;
    --codecs) codecs=$2 ;;
    --zstd) zstds=$2 ;;
    --concurrency) concs=$2 ;;
    --tg) tg=$2 ;;
    --reps) reps=$2 ;;
    --rounds) rounds=$2 ;;
    --split) split=$2 ;;
    --out) out=$2 ;;
    --baton) baton=$2 ;;
    --nice) nice=$2 ;;
    -h | --help) sed -n '2,37p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
    shift 2
done
IFS=, read -r -a M <<<"$models"
IFS=, read -r -a S <<<"$stages_list"
IFS=, read -r -a P <<<"$profiles"
IFS=, read -r -a C <<<"$codecs"
IFS=, read -r -a Z <<<"$zstds"
IFS=, read -r -a N <<<"$concs"
for m in "${M[@]}"; do [[ $m == smol || $m == tinyllama ]] || die "--models: '$m' is not smol or tinyllama"; done
for s in "${S[@]}"; do [[ $s =~ ^[1-9]$ ]] || die "--stages: '$s' is not 1 to 9"; done
for c in "${C[@]}"; do [[ $c =~ ^(f32|f16|bf16|q8)$ ]] || die "--codecs: '$c' is not f32, f16, bf16 or q8"; done
for z in "${Z[@]}"; do [[ $z =~ ^([0-9]|1[0-9])$ ]] || die "--zstd: '$z' is not a level 0 to 19"; done
for n in "${N[@]}"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "--concurrency: '$n' is not a positive number"; done
for p in "${P[@]}"; do
    [[ $p =~ ^(unshaped|10gbit|1gbit|100mbit|10mbit)(\+[0-9.]+(ms|us))?$ ]] ||
        die "--profiles: '$p' is not RATE[+DELAY] (unshaped|10gbit|1gbit|100mbit|10mbit, +0.2ms|+1ms|+20ms)"
done
for v in "$tg" "$reps" "$rounds"; do [[ $v =~ ^[1-9][0-9]*$ ]] || die "--tg/--reps/--rounds: '$v' is not a positive number"; done

n_conf=$((${#M[@]} * ${#S[@]} * ${#P[@]} * ${#C[@]} * ${#Z[@]} * ${#N[@]}))
if [[ $dry -eq 1 ]]; then
    echo "$n_conf configurations x $rounds rounds"
    for m in "${M[@]}"; do for s in "${S[@]}"; do for p in "${P[@]}"; do for c in "${C[@]}"; do
        for z in "${Z[@]}"; do for n in "${N[@]}"; do echo "$m stages=$s $p $c zstd=$z conc=$n"; done; done
    done; done; done; done
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "needs root (the test bed: network namespaces, tc)"
# --nice N: this script in a session of its own with autogroup nice N (bench_lib.sh), and
# each rank too (below), so other users' builds do not decide the numbers.
source "$root/tests/bench/bench_lib.sh"
bench_autogroup "$nice" "${args[@]}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [[ -z $baton ]]; then
    bdir=${BT_LINKDELAY_BUILD:-$root/build-linkdelay}
    baton=$bdir/coordinator/baton
    if [[ ! -x $baton ]]; then
        echo "sweep.sh: building baton with the link delay in $bdir" >&2
        cmake -S "$root" -B "$bdir" -DBT_LINK_DELAY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$bdir" --target baton -j"${BT_JOBS:-2}" >/dev/null
    fi
fi
"$baton" --version | grep -q '^link delay: built in' ||
    die "'$baton' lacks the link delay (baton --version); build with -DBT_LINK_DELAY=ON"

dir=${BT_SCALING_DIR:-/tmp/bt-scaling}
mkdir -p "$dir"
# mpirun's daemons start sessions of their own (setsid), so the ranks are not in this
# script's autogroup: with --nice each rank sets its own autogroup's nice before it becomes
# baton (a wrapper run.sh starts in place of baton; the same process).
if [[ -n $nice ]]; then
    printf '#!/bin/sh\necho %s >/proc/self/autogroup 2>/dev/null\nexec %q "$@"\n' "$nice" "$baton" \
        >"$dir/baton-nice"
    chmod +x "$dir/baton-nice"
    baton=$dir/baton-nice
fi

model_path() {
    case $1 in
    smol) echo "${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}" ;;
    tinyllama)
        local f=$dir/tinyllama-1.1b.q4_0.gguf synth=${SYNTH_MODEL:-$root/build/tests/synth_model}
        if [[ ! -s $f ]]; then
            [[ -x $synth ]] || die "$synth not built (cmake --build build --target synth_model)"
            BATON_MODEL=$(model_path smol) "$synth" --shape tinyllama-1.1b --type q4_0 "$f.tmp" >&2
            mv "$f.tmp" "$f"
        fi
        echo "$f"
        ;;
    esac
}

if ip netns list | grep -q '^bt-h[0-9]' || ip link show bt-br0 >/dev/null 2>&1; then
    die "a test bed is already up ($TB status); not taking it over"
fi
max_s=0
for s in "${S[@]}"; do [[ $s -gt $max_s ]] && max_s=$s; done
trap '"$TB" down >/dev/null 2>&1 || true' EXIT
"$TB" up $((max_s + 1)) >&2

header="model,n_embd,stages,profile,rate,delay_us,codec,zstd,concurrency,tg,reps,round,tok_s,ttft_s,tpot_s,act_bytes_per_token,stage_busy,bubble,wall_s,load1"
[[ -s $out ]] || echo "$header" >"$out"
[[ $(head -1 "$out") == "$header" ]] || die "$out has other columns; give another --out"
log=$out.log
[[ -s $out.cores ]] || echo "model,round,solo_tok_s,pair_tok_s,cores,load1" >"$out.cores"
# cores_row MODEL PATH ROUND: the solo and paired 1-stage runs, appended to OUT.cores.
cores_row() {
    local b=(bench --model "$2" --threads 1 --pp 0 --tg "$tg" --concurrency 16 --reps "$reps"
        --inflight 2)
    local solo
    solo=$("$baton" "${b[@]}" 2>>"$log" | tail -1)
    "$baton" "${b[@]}" 2>>"$log" | tail -1 >"$dir/pair.a" &
    local pa=$!
    "$baton" "${b[@]}" 2>>"$log" | tail -1 >"$dir/pair.b"
    wait "$pa"
    python3 - "$1" "$3" "$solo" "$(cat "$dir/pair.a")" "$(cat "$dir/pair.b")" >>"$out.cores" <<'PY'
import json, sys
m, r, s, a, b = sys.argv[1:]
s, a, b = (json.loads(x)["tg_tps"] for x in (s, a, b))
print("%s,%s,%.2f,%.2f,%.3f,%s" % (m, r, s, a + b, (a + b) / s, open("/proc/loadavg").read().split()[0]))
PY
    echo "sweep.sh: cores: $(tail -1 "$out.cores")" >&2
}
i=0
for ((r = 1; r <= rounds; r++)); do
    for m in "${M[@]}"; do
        mp=$(model_path "$m")
        [[ $cores_cal -eq 0 ]] || cores_row "$m" "$mp" "$r"
        for s in "${S[@]}"; do for p in "${P[@]}"; do for c in "${C[@]}"; do for z in "${Z[@]}"; do
            for n in "${N[@]}"; do
                i=$((i + 1))
                t0=$(date +%s.%N)
                set +e
                timeout --kill-after=10 900 "$RUN" --hosts $((s + 1)) --profile "$p" --baton "$baton" -- \
                    bench --model "$mp" --threads 1 --pp 0 --tg "$tg" --concurrency "$n" --reps "$reps" \
                    --act-codec "$c" --act-zstd "$z" --split "$split" --inflight $((2 * s)) \
                    >"$dir/last.out" 2>"$dir/last.err"
                rc=$?
                set -e
                t1=$(date +%s.%N)
                {
                    echo "== round $r: $m stages=$s $p $c zstd=$z conc=$n: exit $rc"
                    cat "$dir/last.err" "$dir/last.out"
                } >>"$log"
                json=$(tail -1 "$dir/last.out")
                if [[ $rc -ne 0 || $json != "{"* ]]; then
                    echo "sweep.sh: [$i/$((n_conf * rounds))] $m stages=$s $p $c zstd=$z conc=$n failed (exit $rc; see $log)" >&2
                    continue
                fi
                row=$(python3 - "$json" "$m" "$s" "$p" "$c" "$z" "$n" "$tg" "$reps" "$r" "$t0" "$t1" "$mp" <<'PY'
import json, sys, struct
j = json.loads(sys.argv[1])
m, s, p, c, z, n, tg, reps, rnd, t0, t1, path = sys.argv[2:]
s, n, tg, reps = int(s), int(n), int(tg), int(reps)
rate, _, delay = p.partition("+")
if delay.endswith("ms"):
    delay_us = round(float(delay[:-2]) * 1000)
elif delay.endswith("us"):
    delay_us = int(delay[:-2])
else:
    delay_us = 0
assert j["codec"] == c and j["zstd"] == int(z) and j["stages"] == s, (j, c, z, s)
# Tokens through the pipeline: warm-up round and reps rounds, n sequences of tg tokens each.
hops = s - 1
bpt = j["act_bytes"] / ((reps + 1) * n * tg) / hops if hops else 0.0
n_embd = {"smol": 576, "tinyllama": 2048}[m]
load1 = open("/proc/loadavg").read().split()[0]
print(",".join(str(x) for x in [m, n_embd, s, p, rate, delay_us, c, z, n, tg, reps, rnd,
      "%.2f" % j["tg_tps"], "%.4f" % j["tg_ttft_s"], "%.5f" % j["tg_tpot_s"], "%.0f" % bpt,
      ";".join("%.3f" % b for b in j["stage_busy"]), "%.3f" % j["bubble"],
      "%.1f" % (float(t1) - float(t0)), load1]))
PY
)
                echo "$row" >>"$out"
                echo "sweep.sh: [$i/$((n_conf * rounds))] $row" >&2
            done
        done; done; done; done
    done
done
