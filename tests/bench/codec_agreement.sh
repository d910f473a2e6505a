#!/bin/sh
# codec_agreement.sh - the activation-codec table of docs/benchmarks.md: wire bytes per token
# and top-1 agreement / logit error against f32 over 1000 greedy steps of SmolLM2, model split
# in two stages at layer 15, for f32 f16 bf16 q8 with zstd 0, 1 and 3 (plus a 1-ulp control).
#
#   tests/bench/codec_agreement.sh [TOOL [MODEL]]
#
# TOOL defaults to build/tests/codec_agreement (build it first: cmake --build build --target
# codec_agreement), MODEL to ~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf. Env: STEPS
# (1000), THREADS (2), SPLIT (15), BATCH (16). Prints the markdown table on stdout, progress
# on stderr. Takes about two minutes on 2 idle cores.
set -eu

tool=${1:-build/tests/codec_agreement}
model=${2:-${HOME}/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf}

if [ ! -x "$tool" ]; then
    echo "codec_agreement.sh: no tool at $tool (build the codec_agreement target)" >&2
    exit 2
fi
if [ ! -r "$model" ]; then
    echo "codec_agreement.sh: no model at $model" >&2
    exit 2
fi

start=$(date +%s)
"$tool" --model "$model" --steps "${STEPS:-1000}" --split "${SPLIT:-15}" \
    --threads "${THREADS:-2}" --batch "${BATCH:-16}"
echo
echo "($(($(date +%s) - start)) s on $(nproc) cores, $(uname -m); enc+dec timings are the" \
    "fastest of 3 round trips per frame, one thread)"
