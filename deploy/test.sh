#!/usr/bin/env bash
# The CI test run: packages, model, a -Werror build with every ctest, then an ASan/UBSan build
# running the unit tests and the fuzz corpus replays. Exits non-zero on any failure.
# Usage: deploy/test.sh                    (from any directory)
#   BT_JOBS          parallel build/test jobs (default: nproc)
#   BT_BUILD_PREFIX  build directory names: <prefix> and <prefix>-asan (default: build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS="${BT_JOBS:-$(nproc)}"
export BT_JOBS="$JOBS"
B="${BT_BUILD_PREFIX:-build}"

# Open MPI refuses to run as root and to oversubscribe small machines unless told to; in
# containers its single-copy shared-memory path (CMA) is usually forbidden.
if [[ $(id -u) -eq 0 ]]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe="${OMPI_MCA_rmaps_base_oversubscribe:-1}"
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"

step() { echo; echo "=== test.sh: $* ($(date +%H:%M:%S))"; }

step "dependencies"
deploy/install-deps.sh

step "model"
BATON_MODEL=$(deploy/fetch-model.sh)
export BATON_MODEL

step "build (Werror)"
BT_BUILD_DIR="$B" deploy/build.sh -DBT_WERROR=ON -DBT_SANITIZE=OFF

step "ctest: all tests"
ctest --test-dir "$B" --output-on-failure -j"$JOBS" --timeout 600

step "$B-asan (ASan+UBSan, Werror)"
BT_BUILD_DIR="$B-asan" deploy/build.sh -DBT_SANITIZE=ON -DBT_WERROR=ON

step "ctest: unit + fuzz replay under sanitizers"
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
ctest --test-dir "$B-asan" --output-on-failure -j"$JOBS" --timeout 600 -L 'unit|fuzz'

step "all passed"
