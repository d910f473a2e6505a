#!/usr/bin/env bash
# From a fresh clone to generated text: install packages, build, fetch the model, and run one
# chat-style prompt through the baton CLI.
# Usage: deploy/quickstart.sh ["your prompt"]   (BT_BUILD_DIR as for deploy/build.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Open MPI refuses to run as root and to oversubscribe small machines unless told to.
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe="${OMPI_MCA_rmaps_base_oversubscribe:-1}"

PROMPT="${1:-What are three good reasons to learn the C programming language? Answer briefly.}"

deploy/install-deps.sh
deploy/build.sh
MODEL=$(deploy/fetch-model.sh)

echo "quickstart: baton generate --model $MODEL --chat --max-tokens 64"
echo "quickstart: prompt: $PROMPT"
"${BT_BUILD_DIR:-build}"/coordinator/baton generate --model "$MODEL" --chat --prompt "$PROMPT" --max-tokens 64
