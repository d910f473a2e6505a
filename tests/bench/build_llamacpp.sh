#!/usr/bin/env bash
# build_llamacpp.sh - build llama.cpp's tools, the yardstick of the comparison benchmarks
# (never run in CI).
#
#   tests/bench/build_llamacpp.sh [--cache DIR] [--isa avx2|named] [TOOL...]
#       TOOL: llama-server (the default), llama-bench, llama-batched-bench, llama-quantize,
#       llama-perplexity, ... (any tool target of llama.cpp's CMake project)
#       DIR: default ~/.cache/baton/llama-server (the name predates the other tools), or
#       ~/.cache/baton/llama-avx2 with --isa avx2 (~/.cache/baton/llama-named with --isa named)
#       --isa avx2: AVX, AVX2, FMA, F16C and BMI2 only (no AVX-512, no AVX-VNNI), the
#       instruction sets of a Zen 2: on an AVX-512 machine, llama.cpp's side of a comparison
#       with baton's AVX2 level (BATON_KERNELS=avx2), for the ratios such a machine would see
#       --isa named: the CPU's x86 features named one by one (GGML_NATIVE=OFF), the build an
#       AMX CPU gets (below), on any CPU: to see what -march=native changes in llama.cpp
#
# Prints each tool's path, one per line, in the order asked.
#
# The yardstick is the llama.cpp that llama-cpp-python 0.3.36 vendors, the same version
# tests/tools/make_goldens.py and tests/bench/llamacpp_bench.py use, so every comparison
# measures the same library. Its source comes from the package's sdist on PyPI (pip download,
# no git clone): one download, then the build runs offline. -DLLAMA_CURL=OFF: no libcurl (the
# model is a local file); -DGGML_NATIVE=ON: -march=native, the machine's AVX2/AVX-512 kernels,
# as the Python build. Except on a CPU with AMX: there this llama.cpp's AMX kernels (which
# -march=native turns on) die of SIGILL at their first tile load on a worker thread
# (tinygemm_kernel_amx; ggml-org/llama.cpp PR #26954), so the build names the CPU's other
# x86 features instead (GGML_NATIVE=OFF, GGML_AVX512/_VNNI/_VBMI/_BF16, GGML_AVX_VNNI, ...):
# every vector kernel and weight repacking llama.cpp has for this CPU, without AMX.
# Only the tools asked for are built, with -j2 (BT_JOBS overrides).
# Idempotent: a tool whose binary exists is not rebuilt.
set -euo pipefail

version=0.3.36
cache=""
isa_only=""
while [[ ${1:-} == --* ]]; do
    case $1 in
    --cache) cache=${2:?--cache needs a directory} ;;
    --isa) isa_only=${2:?--isa needs a value} ;;
    *) echo "build_llamacpp: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift 2
done
[[ -z $isa_only || $isa_only == avx2 || $isa_only == named ]] ||
    { echo "build_llamacpp: --isa '$isa_only': not avx2 or named" >&2; exit 2; }
[[ -n $cache ]] || cache=$HOME/.cache/baton/llama-${isa_only:-server}
tools=("$@")
((${#tools[@]})) || tools=(llama-server)
jobs=${BT_JOBS:-2}
bin=$cache/build/bin

missing=()
for t in "${tools[@]}"; do
    [[ $t =~ ^llama-[a-z-]+$ ]] || { echo "build_llamacpp: '$t' is not a llama.cpp tool name" >&2; exit 2; }
    [[ -x $bin/$t ]] || missing+=("$t")
done
if ((${#missing[@]})); then
    command -v cmake >/dev/null || { echo "build_llamacpp: cmake not found" >&2; exit 2; }
    mkdir -p "$cache"
    sdist=$(ls "$cache"/llama_cpp_python-"$version".tar.gz 2>/dev/null || true)
    if [[ -z $sdist ]]; then
        echo "build_llamacpp: downloading the llama-cpp-python $version sdist" >&2
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
        { echo "build_llamacpp: $src/vendor/llama.cpp has no CMakeLists.txt" >&2; exit 1; }
    isa=(-DGGML_NATIVE=ON)
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    if [[ $isa_only == avx2 ]]; then
        isa=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
             -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF
             -DGGML_AMX_INT8=OFF)
    elif [[ $isa_only == named || $flags == *" amx_int8 "* ]]; then
        isa=(-DGGML_NATIVE=OFF)
        has() { [[ $flags == *" $1 "* ]] && echo ON || echo OFF; }
        isa+=(-DGGML_AVX="$(has avx)" -DGGML_AVX2="$(has avx2)" -DGGML_FMA="$(has fma)"
              -DGGML_F16C="$(has f16c)" -DGGML_BMI2="$(has bmi2)" -DGGML_AVX_VNNI="$(has avx_vnni)"
              -DGGML_AVX512="$(has avx512f)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
              -DGGML_AVX512_VBMI="$(has avx512vbmi)" -DGGML_AVX512_BF16="$(has avx512_bf16)")
        echo "build_llamacpp: the CPU's features named, without AMX: ${isa[*]}" >&2
    fi
    cmake -S "$src/vendor/llama.cpp" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
        -DLLAMA_CURL=OFF "${isa[@]}" -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >&2
    cmake --build "$cache/build" --target "${missing[@]}" -j "$jobs" >&2
fi
for t in "${tools[@]}"; do
    [[ -x $bin/$t ]] || { echo "build_llamacpp: the build did not produce $bin/$t" >&2; exit 1; }
    echo "$bin/$t"
done
