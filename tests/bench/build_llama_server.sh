#!/usr/bin/env bash
# build_llama_server.sh - build llama.cpp's `llama-server` for the load benchmark (never run in CI).
#
#   tests/bench/build_llama_server.sh [CACHE_DIR]      (default ~/.cache/baton/llama-server)
#
# The yardstick is the llama.cpp that llama-cpp-python 0.3.36 vendors, the same version
# tests/bench/llamacpp_bench.py measures, so the two benchmarks compare the same library.
# Its source comes from the package's sdist on PyPI (pip download, no git clone): one download,
# then the build runs offline. -DLLAMA_CURL=OFF: no libcurl (the model is a local file);
# -DGGML_NATIVE=ON: -march=native, the machine's AVX2/AVX-512 kernels, as the Python build.
# Only the llama-server target is built, with -j2 (BT_JOBS overrides).
# Idempotent: when the binary exists it is not rebuilt. Prints the binary's path on stdout.
set -euo pipefail

version=0.3.36
cache=${1:-$HOME/.cache/baton/llama-server}
jobs=${BT_JOBS:-2}
bin=$cache/build/bin/llama-server

if [[ -x $bin ]]; then
    echo "$bin"
    exit 0
fi
command -v cmake >/dev/null || { echo "build_llama_server: cmake not found" >&2; exit 2; }
mkdir -p "$cache"

sdist=$(ls "$cache"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)
if [[ -z $sdist ]]; then
    echo "build_llama_server: downloading the llama-cpp-python $version sdist" >&2
    # --no-binary on this package only: pip prepares the sdist's metadata in an isolated
    # environment, whose build backend (scikit-build-core) may then come as a wheel.
    python3 -m pip download --quiet --no-binary llama-cpp-python --no-deps \
        -d "$cache" "llama-cpp-python==$version" >&2
    sdist=$(ls "$cache"/llama_cpp_python-"$version".tar.gz)
fi
src=$cache/llama_cpp_python-$version
if [[ ! -d $src/vendor/llama.cpp ]]; then
    tar -xzf "$sdist" -C "$cache"
fi
[[ -f $src/vendor/llama.cpp/CMakeLists.txt ]] ||
    { echo "build_llama_server: $src/vendor/llama.cpp has no CMakeLists.txt" >&2; exit 1; }

cmake -S "$src/vendor/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$cache/build" --target llama-server -j "$jobs" >&2
[[ -x $bin ]] || { echo "build_llama_server: the build did not produce $bin" >&2; exit 1; }
echo "$bin"
