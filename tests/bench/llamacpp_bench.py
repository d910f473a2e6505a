#!/usr/bin/env python3
"""llama.cpp speed yardstick for baton (through llama-cpp-python), on the same model file.

Measures, like llama-bench's pp512 / tg128:
  pp  prompt processing: one llama_decode of a PP-token prompt (n_batch = PP, logits for the
      last token only) from an empty KV cache; tokens/s = PP / seconds.
  tg  generation: TG single-token decodes from an empty KV cache, each token the argmax of the
      previous logits (greedy); tokens/s = TG / seconds.
Each is run --reps times (default 3) after one untimed warm-up; the median is reported.

Usage:
  /opt/llcpp-venv/bin/python tests/bench/llamacpp_bench.py [--threads 2] [--model PATH]
        [--pp 512] [--tg 128] [--reps 3] [--mode speed|rss|both]
Output: one JSON line, e.g.
  {"pp512_tps": ..., "tg128_tps": ..., "threads": 2, "peak_rss_mb": ..., ...}
--mode rss (or both) adds the process's peak RSS (ru_maxrss) after loading and running.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = os.path.expanduser("~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf")
TEXT_FILE = "/usr/share/common-licenses/GPL-3"


def rss_mb(which="peak"):
    if which == "peak":
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def clear(llm):
    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)


def prompt_tokens(llm, n):
    """n real text tokens (GPL-3 text, repeated if short) so the prompt is ordinary input."""
    text = ""
    if os.path.exists(TEXT_FILE):
        with open(TEXT_FILE, encoding="utf-8") as f:
            text = f.read()
    toks = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []
    if not toks:
        toks = list(range(100, 100 + n))
    while len(toks) < n:
        toks = toks + toks
    return toks[:n]


def bench_pp(llm, toks):
    clear(llm)
    t0 = time.perf_counter()
    llm.eval(toks)
    llama_cpp.llama_synchronize(llm.ctx)
    return len(toks) / (time.perf_counter() - t0)


def bench_tg(llm, n, first_tok):
    clear(llm)
    n_vocab = llm.n_vocab()
    tok = first_tok
    t0 = time.perf_counter()
    for _ in range(n):
        llm.eval([tok])
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                       shape=(n_vocab,))
        tok = int(np.argmax(logits))
    return n / (time.perf_counter() - t0)


def cpu_flags():
    info = llama_cpp.llama_print_system_info().decode()
    return [kv.split("=")[0].strip() for kv in info.replace("CPU :", "").split("|")
            if kv.strip().endswith("= 1")]


def main():
    ap = argparse.ArgumentParser(description="llama.cpp pp/tg yardstick")
    ap.add_argument("--model", default=os.environ.get("BATON_MODEL", DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pp", type=int, default=512)
    ap.add_argument("--tg", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mode", choices=("speed", "rss", "both"), default="speed")
    args = ap.parse_args()

    rss_before = rss_mb("current")
    t0 = time.perf_counter()
    llm = Llama(model_path=args.model, n_ctx=max(args.pp, args.tg) + 16, n_batch=args.pp,
                n_ubatch=args.pp, n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb("current")

    toks = prompt_tokens(llm, args.pp)
    bench_pp(llm, toks)                        # warm-up
    pp = [bench_pp(llm, toks) for _ in range(args.reps)]
    bench_tg(llm, 8, toks[0])                  # warm-up
    tg = [bench_tg(llm, args.tg, toks[0]) for _ in range(args.reps)]

    out = {
        "pp%d_tps" % args.pp: round(statistics.median(pp), 2),
        "tg%d_tps" % args.tg: round(statistics.median(tg), 2),
        "threads": args.threads,
        "n_batch": args.pp,
        "reps": args.reps,
        "pp_runs": [round(x, 2) for x in pp],
        "tg_runs": [round(x, 2) for x in tg],
        "load_s": round(load_s, 3),
        "model": os.path.basename(args.model),
        "llama_cpp_python": llama_cpp.__version__,
        "cpu_features": cpu_flags(),
    }
    if args.mode in ("rss", "both"):
        out["rss_before_load_mb"] = round(rss_before, 1)
        out["rss_after_load_mb"] = round(rss_loaded, 1)
        out["peak_rss_mb"] = round(rss_mb("peak"), 1)
    if args.mode == "rss":
        out = {k: v for k, v in out.items() if not k.endswith("_runs")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
