#!/usr/bin/env bash
# slices_big.sh - a model bigger than each host: the Llama-2-7B shape (synthetic, Q4_0, 3.6 GiB)
# on the one-machine test bed (deploy/netns/), the coordinator on bt-h0 and 4 stages on
# bt-h1..bt-h4, every host capped by a memory cgroup well below the model's size. Three ways
# the weights reach the stages, one job each, in this order:
#   shared   every host reads the one model file (a shared filesystem), page cache dropped first
#   shipped  stage hosts see no model file (testbed.sh limit I --hide), empty slice caches: the
#            coordinator ships each stage its slice
#   cached   the same hosts again: each stage loads its slice from its own cache
# and prints one row each: time to ready (launch to every HelloReply), time to first token,
# decode tokens/s, bytes shipped, and each host's peak memory (its cgroup's max usage).
# Needs root; the test bed is taken down at the end. Never run in CI (minutes, 4 GiB of disk).
#
#   tests/bench/slices_big.sh [--shape llama2-7b] [--mem 1536M] [--profile 1gbit] [--tokens 16]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
shape=llama2-7b
mem=1536M
profile=1gbit
tokens=16
while [[ $# -gt 0 ]]; do
    case $1 in
    --shape) shape=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --profile) profile=$2; shift 2 ;;
    --tokens) tokens=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "slices_big: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ $(id -u) -eq 0 ]] || { echo "slices_big: needs root (network namespaces, cgroups)" >&2; exit 2; }
build=${BT_BUILD_DIR:-$root/build}
baton=${BATON:-$build/coordinator/baton}
vocab=${BATON_MODEL:-$("$root/deploy/fetch-model.sh")}
dir=${BATON_CACHE:-$HOME/.cache/baton}/synth
model=$dir/$shape-q4_0.gguf
if [[ ! -f $model ]]; then
    mkdir -p "$dir"
    "$build/tests/synth_model" --shape "$shape" --type q4_0 --seed 7 --vocab-from "$vocab" "$model" >&2
fi
TB=$root/deploy/netns/testbed.sh
RUN=$root/deploy/netns/run.sh
trap '"$TB" down >/dev/null 2>&1 || true' EXIT
"$TB" up 5 --mem "$mem" >&2
"$TB" shape "$profile" >&2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cache=$(dirname "$model")/bt-slices # inside the hidden directory on the stage hosts
args=(generate --model "$model" --slice-cache "$cache" --threads 1 --ctx 512 --kv-tokens 1024
    --max-batch 64 --max-seqs 4 --temperature 0 --ignore-eos --max-tokens "$tokens"
    --prompt "The quick brown fox")
cg=/sys/fs/cgroup/memory/bt-testbed
size=$(stat -c %s "$model")
echo "model: $shape Q4_0, $size bytes; 5 hosts capped at $mem each; links $profile"
echo "| weights | ready s | TTFT ms | decode tok/s | shipped MiB | peak MiB per host (h0..h4) |"
echo "|---|---:|---:|---:|---:|---|"
job() {
    local name=$1 log
    log=$(mktemp)
    for h in 0 1 2 3 4; do echo 0 >"$cg/bt-h$h/memory.max_usage_in_bytes" 2>/dev/null || true; done
    sync
    echo 3 >/proc/sys/vm/drop_caches
    if ! timeout 900 "$RUN" --hosts 5 -- "${args[@]}" >/dev/null 2>"$log"; then
        echo "slices_big: $name failed:" >&2
        tail -5 "$log" >&2
        rm -f "$log"
        return 1
    fi
    local ready ttft tps shipped peaks=""
    ready=$(sed -n 's/^baton generate: ready in \([0-9.]*\) s.*/\1/p' "$log")
    ttft=$(sed -n 's/.*time to first token \([0-9.]*\) ms.*/\1/p' "$log")
    tps=$(sed -n 's/^generation: .* (\([0-9.]*\) tok\/s.*/\1/p' "$log")
    shipped=$(awk '/^baton generate: ready in/ { n = split($0, p, "shipped ");
        for (i = 2; i <= n; i++) s += p[i] + 0 } END { printf "%.0f", s }' "$log")
    for h in 0 1 2 3 4; do
        peaks+="$(awk '{ printf "%.0f", $1 / 1048576 }' "$cg/bt-h$h/memory.max_usage_in_bytes") "
    done
    echo "| $name | $ready | $ttft | $tps | $shipped | ${peaks% } |"
    grep '^baton generate: ready in' "$log" >&2
    rm -f "$log"
}
job shared
for h in 1 2 3 4; do "$TB" limit "$h" --mem "$mem" --hide "$model" >&2; done
"$TB" exec 1 test -e "$model" && { echo "slices_big: host 1 still sees the model" >&2; exit 1; }
job shipped
job cached
