#!/usr/bin/env bash
# build_llama_server.sh [CACHE_DIR] - llama.cpp's llama-server for the load benchmarks: prints
# its path, building it first when missing (build_llamacpp.sh has the details).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${1:-} ]]; then
    exec "$here/build_llamacpp.sh" --cache "$1" llama-server
fi
exec "$here/build_llamacpp.sh" llama-server
