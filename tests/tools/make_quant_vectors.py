#!/usr/bin/env python3
"""Known-answer vectors for baton's reference quantizers, written by llama.cpp's own code.

Offline tool: CI never runs it; its output tests/data/quant/ggml_vectors.txt is committed and
read by tests/unit/test_quantize_ref.c.

It calls ggml's quantize_row_<type>_ref and dequantize_row_<type> through ctypes in the
libggml-base.so that llama-cpp-python built (the same llama.cpp sdist as llama-quantize):

    /opt/llcpp-venv/bin/python tests/tools/make_quant_vectors.py [--lib PATH] [--out FILE]

Input: one row of 1280 floats (5 super-blocks of 256) from a fixed LCG, shaped to reach the
quantizers' branches: small weights like a model's (block 0), outliers (1), all positive so
that the min clamps to 0 (2), a zero and a constant sub-block (3), and an all-zero
super-block (4; q6_K's early exit). The floats are stored as their bits, so the C test does
not need to reproduce the generator.

File format (text, '#' comments):
    input <n> <n float32 bit patterns as 8 hex digits, space separated>
    quant <type> <row bytes as hex>              one per quantized type
    dequant <type> <n float32 bit patterns>      ggml's dequantization of that type's bytes
"""

import argparse
import ctypes
import os
import struct
import sys

TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K"]
BLOCK = {"q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
         "q8_0": (32, 34), "q4_K": (256, 144), "q5_K": (256, 176), "q6_K": (256, 210)}
DEQUANT = ["q4_1", "q8_0", "q4_K", "q5_K", "q6_K", "q5_0"]
N = 1280


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def make_input():
    s = 20261205
    out = []

    def rnd():
        nonlocal s
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        return (s >> 8) / float(1 << 24) - 0.5  # [-0.5, 0.5)

    for i in range(N):
        blk, j = divmod(i, 256)
        r = rnd()
        if blk == 0:
            v = 0.04 * r
        elif blk == 1:
            v = r * (6.0 if j % 37 == 0 else 0.5)
        elif blk == 2:
            v = 0.3 + abs(r)
        elif blk == 3:
            v = 0.0 if j < 32 else (0.125 if j < 64 else r)
        else:
            v = 0.0
        out.append(f32(v))
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="/opt/llcpp-venv/lib/python3.11/site-packages/llama_cpp/"
                    "lib/libggml-base.so")
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "quant", "ggml_vectors.txt"))
    args = ap.parse_args()
    lib = ctypes.CDLL(args.lib)
    x = make_input()
    xs = (ctypes.c_float * N)(*x)
    lines = ["# ggml known answers for tests/unit/test_quantize_ref.c, written by "
             "tests/tools/make_quant_vectors.py",
             "# from %s (llama-cpp-python's build of the llama.cpp sdist)" % os.path.basename(
                 os.path.realpath(args.lib)),
             "input %d %s" % (N, " ".join("%08x" % struct.unpack("<I", struct.pack("<f", v))[0]
                                         for v in x))]
    for t in TYPES:
        elems, nbytes = BLOCK[t]
        size = N // elems * nbytes
        buf = ctypes.create_string_buffer(size)
        fn = getattr(lib, "quantize_row_%s_ref" % t)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        fn(xs, buf, N)
        lines.append("quant %s %s" % (t, buf.raw.hex()))
        if t in DEQUANT:
            y = (ctypes.c_float * N)()
            dq = getattr(lib, "dequantize_row_%s" % t)
            dq.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
            dq(buf, y, N)
            lines.append("dequant %s %s" % (t, " ".join(
                "%08x" % struct.unpack("<I", struct.pack("<f", v))[0] for v in y)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %d types to %s" % (len(TYPES), args.out))


if __name__ == "__main__":
    sys.exit(main())
