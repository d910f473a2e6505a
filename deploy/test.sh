#!/usr/bin/env bash
# The CI test run: packages, model, the server tests' venv, a -Werror build with every ctest,
# then an ASan/UBSan build running the unit tests, the fuzz corpus replays and the server e2e
# tests (label server_asan), then a clang libFuzzer build (libraries
# instrumented too) that replays the corpora and fuzzes every target for a bounded time, then
# a ThreadSanitizer build of the thread pool's and the forward pass's tests (lanes: threads
# writing disjoint rows of shared buffers).
# Exits non-zero on any failure, a fuzzer's crash, leak or timeout included.
# Usage: deploy/test.sh                    (from any directory)
#   BT_JOBS          parallel build/test jobs (default: nproc)
#   BT_BUILD_PREFIX  build directory names: <prefix>, <prefix>-asan, <prefix>-fuzz and
#                    <prefix>-tsan
#                    (default: build)
#   BT_FUZZ_SECONDS  fuzzing time per target (default: 60; 0 = corpus replay only)
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
# Issue #13's second real model (Gemma 3 270M): its tokenizer, golden and stage tests run on the real file.
BATON_GEMMA_MODEL=$(deploy/fetch-model.sh gemma3-270m)
export BATON_GEMMA_MODEL

step "server tests' Python venv (tests/server/setup_venv.sh)"
# The server tests (ctest -L server) run from this venv; without PyPI they are skipped (77).
[[ $B == /* ]] && venv_dir="$B/server-venv" || venv_dir="$ROOT/$B/server-venv"
export BT_SERVER_VENV="${BT_SERVER_VENV:-$venv_dir}"
venv_rc=0
tests/server/setup_venv.sh >/dev/null || venv_rc=$?
if [[ $venv_rc -eq 77 ]]; then
    echo "test.sh: PyPI unreachable: the server tests will be skipped"
elif [[ $venv_rc -ne 0 ]]; then
    exit "$venv_rc"
fi

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

step "ctest: the server e2e tests under sanitizers (openai client, status codes, load, batch)"
ctest --test-dir "$B-asan" --output-on-failure -j"$JOBS" --timeout 900 -L server_asan

step "$B-fuzz (clang, libFuzzer on instrumented libraries, ASan+UBSan, Werror)"
CC=clang BT_BUILD_DIR="$B-fuzz" deploy/build.sh -DBT_FUZZ=ON -DBT_SANITIZE=ON -DBT_WERROR=ON

step "fuzz: corpus replays, then ${BT_FUZZ_SECONDS:-60} s per target"
ctest --test-dir "$B-fuzz" --output-on-failure -j"$JOBS" --timeout 600 -L fuzz
FUZZ_S="${BT_FUZZ_SECONDS:-60}"
if [[ $FUZZ_S -gt 0 ]]; then
    for src in tests/fuzz/fuzz_*.c; do
        name=$(basename "$src" .c)
        corpus=tests/fuzz/corpus/${name#fuzz_}
        # New inputs go to a scratch directory (the committed corpus stays as it is); a crash
        # leaves its input as $B-fuzz/<name>-crash-<sha1> to add to the corpus with the fix.
        work="$B-fuzz/fuzz-work/$name"
        rm -rf "$work" && mkdir -p "$work"
        log="$B-fuzz/fuzz-work/$name.log"
        if ! "$B-fuzz/tests/$name" -max_total_time="$FUZZ_S" -timeout=10 -print_final_stats=1 \
            -artifact_prefix="$B-fuzz/$name-" "$work" "$corpus" >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "test.sh: $name failed (log: $log)" >&2
            exit 1
        fi
        echo "$name: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
    done
fi

step "$B-tsan (ThreadSanitizer, Werror: test_threadpool and test_forward only)"
cmake -S "$ROOT" -B "$B-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBT_TSAN=ON -DBT_WERROR=ON
cmake --build "$B-tsan" -j"$JOBS" --target test_threadpool test_forward

step "ctest: the thread pool and the forward pass (lanes included) under ThreadSanitizer"
# A report makes the test exit 66 (TSan's exitcode), which fails it.
ctest --test-dir "$B-tsan" --output-on-failure --timeout 900 -R '^unit\.test_(threadpool|forward)$'

step "all passed"
