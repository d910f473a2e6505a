#!/usr/bin/env python3
"""Greedy and perplexity goldens from llama.cpp for Gemma 3 270M (base) Q4_K_M.

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/ and read
by tests/e2e/test_gemma3_golden.sh. Run with the venv that has llama-cpp-python:

    /opt/llcpp-venv/bin/python tests/tools/make_gemma3_goldens.py [--model PATH] [--out DIR]

(the model: `deploy/fetch-model.sh gemma3-270m` prints its cached path).

It writes, with make_goldens.py's code and formats:
  gemma3-greedy.tsv, gemma3-greedy-margins.tsv
      GREEDY_PROMPTS (plain text: the file is a base model), tokenized as llama.cpp does for
      this vocabulary (BOS 2 added, as tokenizer.ggml.add_bos_token says), 32 greedy ids each
      (never stopping at EOS), and llama.cpp's top-1 minus top-2 logit at every step;
  gemma3-perplexity.txt
      perplexity at n_ctx 512 and 1024 (n_batch = n_ctx) over the first PPL_CHUNKS chunks of
      GPL-3, with BOS replacing each chunk's first token as
      llama-perplexity does when the vocabulary adds BOS; the CI test evaluates the same
      chunks with `baton perplexity --chunks`.

Made on the 2-core AVX2 host (llama.cpp's AVX2 arithmetic, flash attention off, f16 KV).
"""

import argparse
import os
import sys

import llama_cpp

import make_goldens as mg

MODEL_SHA256 = None  # recorded in the output header; any Gemma 3 270M file is accepted
PPL_CHUNKS = {512: 6, 1024: 2}  # chunks per n_ctx: at 1024 the local layers' window of 512
                                # keys masks the oldest keys of the second half
STEM = "gemma3"
LABEL = "Q4_K_M"

GREEDY_PROMPTS = [
    "The capital of France is",
    "The quick brown fox",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n",
    "1, 2, 3, 4, 5,",
    "The three primary colors are",
    "Water boils at a temperature of",
    "In 1969, the first humans to walk on the Moon were",
    "import numpy as np\n\n# Compute the mean of a list\n",
    "Le chat est assis sur",
]


def greedy_goldens(llm, out_dir, version, sha):
    path = os.path.join(out_dir, STEM + "-greedy.tsv")
    mpath = os.path.join(out_dir, STEM + "-greedy-margins.tsv")
    with open(path, "w", encoding="utf-8", newline="\n") as f, \
            open(mpath, "w", encoding="utf-8", newline="\n") as fm:
        fm.write("# For each line of %s-greedy.tsv (same order): at each of the %d greedy "
                 "steps, llama.cpp's top-1 minus top-2 logit.\n" % (STEM, mg.N_GREEDY))
        f.write("# Gemma 3 270M %s (sha256 %s) greedy decoding from %s, n_threads=2, CPU.\n"
                % (LABEL, sha, version))
        f.write("# Columns: prompt (JSON string) TAB prompt ids (BOS added, parse_special=True) "
                "TAB first %d generated ids (argmax, never stopping at EOS).\n" % mg.N_GREEDY)
        for p in GREEDY_PROMPTS:
            ids = llm.tokenize(p.encode("utf-8"), add_bos=True, special=True)
            gen, margins = mg.greedy(llm, ids, mg.N_GREEDY)
            fm.write(" ".join("%.4f" % m for m in margins) + "\n")
            f.write("%s\t%s\t%s\n" % (mg.json.dumps(p, ensure_ascii=False),
                                      " ".join(map(str, ids)), " ".join(map(str, gen))))
            print("greedy %r -> %r" % (p[-40:], llm.detokenize(gen, special=True)[:80]))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.expanduser(
        "~/.cache/baton/gemma-3-270m-q4_k_m.gguf"))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden"))
    ap.add_argument("--ppl-only", action="store_true", help="only remake the perplexity file")
    args = ap.parse_args()
    sha = mg.sha256_file(args.model)
    version = mg.llama_version()
    print("reference:", version, "model sha256", sha)
    llm = mg.load(args.model, 2048)
    if not mg.add_bos_of(llm):
        raise SystemExit("unexpected: this vocabulary does not add BOS; Gemma's does")
    if not args.ppl_only:
        greedy_goldens(llm, args.out, version, sha)
    del llm
    with open(mg.PPL_FILE, "r", encoding="utf-8") as f:
        text = f.read()
    lines = ["# Perplexity of Gemma 3 270M " + LABEL + " (sha256 " + sha + "), computed like "
             "llama.cpp's perplexity tool (second half of each n_ctx chunk scored: n_ctx/2 - 1 "
             "tokens per chunk; BOS replaces each chunk's first token).",
             "# One block per n_ctx, separated by a blank line."]
    for n_ctx, chunks in sorted(PPL_CHUNKS.items()):
        r = mg.perplexity(args.model, text, n_ctx, chunks)
        lines += ["", "file=%s" % mg.PPL_FILE, "file_sha256=%s" % mg.sha256_file(mg.PPL_FILE),
                  "n_ctx=%d" % n_ctx, "n_tokens=%d" % r["n_tokens"], "add_bos=%d" % r["add_bos"],
                  "n_chunks=%d" % r["n_chunks"], "n_scored=%d" % r["n_scored"],
                  "ppl=%.6f" % r["ppl"], "llama_cpp=%s" % version]
    with open(os.path.join(args.out, STEM + "-perplexity.txt"), "w", encoding="utf-8",
              newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote %s-greedy.tsv, margins and perplexity to %s" % (STEM, os.path.abspath(args.out)))


if __name__ == "__main__":
    sys.exit(main())
