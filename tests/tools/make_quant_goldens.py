#!/usr/bin/env python3
"""Greedy and perplexity goldens from llama.cpp for the re-quantized SmolLM2 variants.

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/ and read
by tests/e2e/test_quant_variants.sh. The variant files come from
tests/bench/make_quant_variants.sh (llama-quantize from the same llama.cpp sdist; byte for
byte what tests/tools/requant makes from the manifests in tests/data/quant/):

    tests/bench/make_quant_variants.sh OUT_DIR
    /opt/llcpp-venv/bin/python tests/tools/make_quant_goldens.py \\
        q4_k_m=OUT_DIR/SmolLM2-135M-Instruct.Q4_K_M.gguf q8_0=OUT_DIR/SmolLM2-135M-Instruct.Q8_0.gguf

The committed files were made on the 2-core AVX2 host (no AVX-512), so they are llama.cpp's
AVX2 arithmetic; smollm2-greedy.tsv came from an AVX-512 build, which is what baton's
--numerics llamacpp reproduces. Remade on an AVX-512 host, they would allow an exact check.

For each NAME=FILE it writes, with make_goldens.py's code and formats:
  smollm2-NAME-greedy.tsv, smollm2-NAME-greedy-margins.tsv
      the same prompts as smollm2-greedy.tsv, 32 greedy ids each, and llama.cpp's top-1 minus
      top-2 logit at every step;
  smollm2-NAME-perplexity.txt
      perplexity at n_ctx 512 over the first PPL_CHUNKS chunks of GPL-3 (the CI test
      evaluates the same chunks with `baton perplexity --chunks`), plus the file's sha256.
"""

import argparse
import os
import sys

import make_goldens as mg

PPL_CHUNKS = 4  # 1020 scored tokens: ~15 s of baton on CI's 2 cores per variant
LABELS = {"q4_k_m": "Q4_K_M", "q8_0": "Q8_0", "q4_0": "Q4_0", "q5_k_m": "Q5_K_M"}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="+", metavar="NAME=FILE",
                    help="variant name (%s) and its GGUF" % ", ".join(LABELS))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden"))
    ap.add_argument("--llama-commit", default=os.environ.get("LLAMA_COMMIT", ""))
    args = ap.parse_args()
    version = mg.llama_version()
    if args.llama_commit:
        version += " (llama.cpp %s)" % args.llama_commit
    for v in args.variants:
        name, _, path = v.partition("=")
        if name not in LABELS or not os.path.isfile(path):
            raise SystemExit("%s: want NAME=FILE with NAME in %s and FILE a GGUF"
                             % (v, ", ".join(LABELS)))
        stem = "smollm2-" + name
        label = "%s (sha256 %s, from the Q4_1 file by llama-quantize)" % (
            LABELS[name], mg.sha256_file(path))
        llm = mg.load(path, 2048)
        n = mg.greedy_goldens(llm, args.out, version, stem=stem, label=label)
        del llm
        mg.perplexity_goldens(path, args.out, version, stem=stem, label=label, ctxs=(512,),
                              max_chunks=PPL_CHUNKS)
        print("%s: %d greedy prompts and perplexity written to %s" % (name, n, args.out))


if __name__ == "__main__":
    sys.exit(main())
