#!/usr/bin/env bash
# Configure and build baton. Extra arguments are passed to the cmake configure step.
# Usage: deploy/build.sh [-DBT_WERROR=ON ...]
#   BT_BUILD_DIR  build directory (default: <repo>/build; relative paths are from the repo root)
#   BT_BUILD_TYPE CMAKE_BUILD_TYPE (default: RelWithDebInfo, i.e. -O2 -g with asserts on)
#   BT_JOBS       parallel jobs (default: nproc)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD_DIR="${BT_BUILD_DIR:-build}"
JOBS="${BT_JOBS:-$(nproc)}"

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="${BT_BUILD_TYPE:-RelWithDebInfo}" "$@"
cmake --build "$BUILD_DIR" -j"$JOBS"
