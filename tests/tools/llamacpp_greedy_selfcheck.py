#!/usr/bin/env python3
"""How reproducible llama.cpp's own greedy output is: feeds each prompt of
tests/data/golden/smollm2-greedy.tsv to llama.cpp one token at a time (instead of in one
batch, as the golden was made) and counts the prompts whose 32 greedy tokens stay the same,
and where the others diverge (with llama.cpp's top-1/top-2 margin there).

Offline tool, like make_goldens.py; never run by CI:
    /opt/llcpp-venv/bin/python tests/tools/llamacpp_greedy_selfcheck.py [MODEL]
"""
import os
import sys

import llama_cpp
import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "data", "golden")


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser(
        "~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf")
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(GOLDEN, "smollm2-greedy.tsv"))
            if not l.startswith("#")]
    margins = [list(map(float, l.split())) for l in
               open(os.path.join(GOLDEN, "smollm2-greedy-margins.tsv")) if not l.startswith("#")]
    llm = Llama(model_path=model, n_ctx=512, n_batch=512, n_threads=2, verbose=False)
    same = 0
    for k, (_, ids, gen) in enumerate(rows):
        ids = [int(x) for x in ids.split()]
        gen = [int(x) for x in gen.split()]
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        for t in ids:
            llm.eval([t])
        out = []
        for _ in range(len(gen)):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                           shape=(llm.n_vocab(),))
            tok = int(np.argmax(logits))
            out.append(tok)
            llm.eval([tok])
        d = next((i for i in range(len(gen)) if out[i] != gen[i]), None)
        same += d is None
        print("prompt %d: %s" % (k + 1, "same 32 tokens" if d is None else
                                 "diverges at token %d (batched-run margin %.3f)"
                                 % (d, margins[k][d])))
    print("llama.cpp, prompt token by token vs in one batch: %d of %d prompts give the same "
          "32 greedy tokens" % (same, len(rows)))


if __name__ == "__main__":
    main()
