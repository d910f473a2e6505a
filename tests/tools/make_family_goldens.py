#!/usr/bin/env python3
"""llama.cpp's reference results on the synthetic family files (issue #13: Llama 3, Qwen 2,
Qwen 3, Phi-3), for tests/e2e/test_families.sh.

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/.

    cmake --build build --target synth_model
    /opt/llcpp-venv/bin/python tests/tools/make_family_goldens.py \
        [--synth build/tests/synth_model] [--vocab-dir ../shared/testdata/vocab] [--out DIR]

For each family it writes the file with `synth_model --arch FAMILY` (seed 1, q8_0, the
family's vocabulary from --vocab-dir), loads it in llama.cpp (n_ctx 2048, 2 threads, f16 KV,
flash attention as --flash-attn says, off by default: llama.cpp's own on/off difference on
these files is in docs/testing.md) and writes tests/data/golden/family-<family>.tsv:

  # comment lines: llama.cpp version, the file's sha256 (the test rebuilds the file and checks
  #   it is byte-identical before comparing) and the column meanings
  prompt (JSON string) TAB prompt ids (llama.cpp's tokenization, BOS as the vocabulary says)
  TAB 16 greedy ids TAB the top-1 minus top-2 logit at each of those steps
  TAB the top 32 of the last prompt position as id:logprob (log-softmax of the logits, so a
  constant shift of all logits does not count) TAB max |logit| over the whole vocabulary

Token ids are stored next to the results so that a tokenizer difference shows as such, not as
a forward-pass one.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

FAMILIES = {  # --arch: vocabulary file
    "llama3": "ggml-vocab-llama-bpe.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "qwen3": "ggml-vocab-qwen2.gguf",
    "phi3": "ggml-vocab-phi-3.gguf",
}
N_GREEDY = 16
N_TOP = 32
PROMPTS = [
    "The quick brown fox jumps over the lazy dog",
    "Once upon a time, in a land far away,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Привет, мир! 你好，世界！ 12345 + 678 = ",
    "Q: What is the capital of France?\nA:",
    "In 1969, Apollo 11 landed on the Moon. The astronauts were",
    "a",
    # ~1300 tokens: positions far enough that the long-wavelength rope pairs turn by a radian
    # or more, so Llama 3's rope_freqs factors (8 on those pairs) change the result (baton
    # without them moves this prompt's logprobs by 0.6 and its first token).
    " ".join(["The river ran past the old mill, where the miller's daughter counted sacks of "
              "grain by lamplight while the wheel turned slowly in the dark water."] * 40),
]


def logits_last(m):
    return np.ctypeslib.as_array(m._ctx.get_logits(), shape=(m.n_vocab(),)).astype(np.float64)


def log_softmax(x):
    mx = x.max()
    return x - mx - np.log(np.exp(x - mx).sum())


def one_family(arch, args):
    path = os.path.join(args.tmp, "family-%s.gguf" % arch)
    vocab = os.path.join(args.vocab_dir, FAMILIES[arch])
    subprocess.run([args.synth, "--arch", arch, "--vocab-from", vocab, "--seed", "1", path],
                   check=True, stdout=subprocess.DEVNULL)
    sha = hashlib.sha256(open(path, "rb").read()).hexdigest()
    m = Llama(path, n_ctx=2048, n_threads=2, n_batch=512, logits_all=False, verbose=False,
              flash_attn=args.flash_attn)
    lines = [
        "# llama.cpp via llama-cpp-python %s: synth_model --arch %s --seed 1 --type q8_0, "
        "flash_attn=%d" % (llama_cpp.__version__, arch, args.flash_attn),
        "# file_sha256=%s" % sha,
        "# prompt\tprompt ids\t%d greedy ids\tgreedy margins\ttop %d id:logprob at the last "
        "prompt position\tmax |logit|" % (N_GREEDY, N_TOP),
    ]
    for p in PROMPTS:
        ids = m.tokenize(p.encode(), add_bos=True, special=True)
        m.reset()
        m.eval(ids)
        first = logits_last(m)
        lp = log_softmax(first)
        top = np.argsort(-first, kind="stable")[:N_TOP]
        gen, margins = [], []
        lg = first
        for _ in range(N_GREEDY):
            o = np.argsort(-lg, kind="stable")[:2]
            gen.append(int(o[0]))
            margins.append(float(lg[o[0]] - lg[o[1]]))
            m.eval([int(o[0])])
            lg = logits_last(m)
        lines.append("\t".join([
            json.dumps(p, ensure_ascii=False),
            " ".join(map(str, ids)),
            " ".join(map(str, gen)),
            " ".join("%.4f" % x for x in margins),
            " ".join("%d:%.5f" % (int(t), lp[t]) for t in top),
            "%.4f" % float(np.abs(first).max()),
        ]))
    os.unlink(path)
    out = os.path.join(args.out, "family-%s.tsv" % arch)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser()
    ap.add_argument("--synth", default=os.path.join(root, "build/tests/synth_model"))
    ap.add_argument("--vocab-dir", default=os.path.join(root, "../shared/testdata/vocab"))
    ap.add_argument("--out", default=os.path.join(root, "tests/data/golden"))
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--flash-attn", type=int, default=0)
    ap.add_argument("families", nargs="*", default=list(FAMILIES))
    args = ap.parse_args()
    for a in args.families:
        if a not in FAMILIES:
            sys.exit("unknown family %s (known: %s)" % (a, " ".join(FAMILIES)))
        one_family(a, args)


if __name__ == "__main__":
    main()
