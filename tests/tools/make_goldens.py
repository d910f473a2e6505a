#!/usr/bin/env python3
"""Generate baton's golden reference data from llama.cpp (through llama-cpp-python).

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/.

How to run (llama-cpp-python must be installed in some venv; we use /opt/llcpp-venv):

    python3 -m venv /opt/llcpp-venv
    /opt/llcpp-venv/bin/pip install llama-cpp-python      # builds llama.cpp, GGML_NATIVE=ON
    deploy/fetch-model.sh                                 # caches the SmolLM2 Q4_1 model
    /opt/llcpp-venv/bin/python tests/tools/make_goldens.py [--model PATH] [--out DIR]

Files written to tests/data/golden/ (or --out):

  smollm2-tokenize.inp / .out
      Tokenizer vectors in llama.cpp's test-tokenizer-0 format: every test string in .inp is
      followed by "\\n__ggml_vocab_test__\\n"; .out has one line per string, each id written as
      " <id>". Tokenized with add_special=False, parse_special=False.
  smollm2-tokenize-special.inp / .out
      Same format, strings containing special tokens, tokenized with parse_special=True.
  smollm2-greedy.tsv
      Per line: prompt as a JSON string, TAB, prompt ids (parse_special=True, no BOS added),
      TAB, the first 32 greedily generated ids (argmax of the logits computed here; never stops
      at EOS). Lines starting with '#' are comments.
  smollm2-greedy-margins.tsv
      One line per greedy prompt: llama.cpp's top-1 minus top-2 logit at each generated step,
      so a test can tell a near-tie flip from a real divergence.
  smollm2-perplexity.txt
      key=value lines for n_ctx 512 and 1024 over /usr/share/common-licenses/GPL-3, computed the
      way llama.cpp's tools/perplexity does it (see perplexity() below).

Everything runs with n_threads=2 on the CPU. The llama.cpp version used is written into each
file so that a change of reference is visible in review.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import llama_cpp
from llama_cpp import Llama

MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SEPARATOR = "\n__ggml_vocab_test__\n"
PPL_FILE = "/usr/share/common-licenses/GPL-3"
N_GREEDY = 32

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Plain-text tokenizer tests: scripts, emoji, code, whitespace, numbers, punctuation.
TOKENIZE_TESTS = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "\n\n\n",
    "\r\n",
    "line one\r\nline two\r\n",
    "Hello world",
    " Hello world",
    "Hello, World! HELLO world... hello?",
    "don't I'll you're we've she's they'd it'S DON'T",
    "MiXeD CaSe camelCaseIdentifier snake_case_name SCREAMING_CASE",
    "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε! Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "你好，世界！我想在apple工作1314151天～",
    "日本語のテキスト、カタカナとひらがな。",
    "안녕하세요 세계! 한국어 문장입니다.",
    "مرحبا بالعالم! هذا نص عربي.",
    "नमस्ते दुनिया! यह हिंदी पाठ है।",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Cửa Việt, Führer, naïve café, Ångström, façade",
    "emoji 😀😁🦙 and ZWJ 👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈",
    "flags 🇫🇷🇩🇪🇯🇵 keycap 1️⃣ skin 👍🏿",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"hi %d\\n\", 42);\n    return 0;\n}\n",
    "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n",
    "class Foo(Bar):\n    __slots__ = ('x',)\n    def __init__(self, x=None): self.x = x or {}\n",
    '{"name": "baton", "version": [0, 1, 0], "nested": {"ok": true, "v": null, "f": -1.5e-3}}',
    "x    y        z\t\t\tw",
    "trailing spaces   ",
    "   leading spaces",
    "\n\n  \t \n mixed whitespace \t\n",
    "3 33 333 3333 33333 333333 3333333",
    "1234567890123456789012345678901234567890",
    "pi = 3.14159265358979, e=2.71828; 1,000,000.00 and -42 and 0x7fffffff and 1e-9",
    "!!!!!! ??? ... --- *** ((( ))) [[]] {{}} <<>> ;;; ::: ''' \"\"\"",
    "@user #hashtag $100 50% a&b ~tilde `code` ^caret |pipe \\backslash",
    "https://example.com/path/to/page?query=1&other=two#frag and http://x.y/z",
    "mailto:someone@example.org ftp://files.example.net/pub/file.tar.gz",
    "½ ¾ ° © ® ™ € £ ¥ § ¶ • … — – « » „ “ ” ‘ ’",
    "ied 4 ½ months",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé wïth çömbïnïng: e\u0301 a\u0308 n\u0303 (decomposed)",
    "zero\u200bwidth\u200cjoiners\u200dand\u00a0nbsp",
    "<|im_start|> is not special here, nor <|endoftext|>",
    "a",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
]

# Tests where special tokens must be recognised (parse_special=True).
SPECIAL_TESTS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|im_start|>user\nHello<|im_end|>\n",
    "<|im_start|>system\n" + SYSTEM + "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    "<|im_start|>assistant\n",
    "text before<|endoftext|>text after",
    "<repo_name>baton<file_sep>src/main.c\nint main(void) { return 0; }<|endoftext|>",
    "<reponame>x<filename>a.py<gh_stars>10<issue_start>bug<issue_comment>fix<issue_closed>",
    "<jupyter_start><jupyter_text>md<jupyter_code>print(1)<jupyter_output>1<empty_output>",
    "<|im_start|><|im_end|><|im_start|>",
    " <|im_start|> spaced <|im_end|> ",
    "<|im_start|incomplete and <|im_end| broken <|endoftext",
]


def chat(user, system=SYSTEM):
    return ("<|im_start|>system\n" + system + "<|im_end|>\n<|im_start|>user\n" + user +
            "<|im_end|>\n<|im_start|>assistant\n")


GREEDY_PROMPTS = [
    chat("Hello"),
    chat("What is the capital of France?"),
    chat("Write a haiku about the sea."),
    chat("Explain what a linked list is in two sentences."),
    chat("List three primary colors.", system="You are a concise assistant."),
    chat("Translate 'good morning' into Spanish."),
    "The quick brown fox",
    "Once upon a time, in a small village,",
    "def fibonacci(n):\n",
    "The capital of Germany is",
    "1, 2, 3, 4, 5,",
    "Привет! Как",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def llama_version():
    """llama-cpp-python version plus the vendored llama.cpp commit when it can be found."""
    return "llama-cpp-python %s, flash_attn off, KV cache f16" % llama_cpp.__version__


def load(model, n_ctx, logits_all=False, n_batch=512):
    return Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=min(n_batch, 512),
                 n_threads=2, n_threads_batch=2, logits_all=logits_all, verbose=False,
                 seed=0)


def add_bos_of(llm):
    return bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))


def write_vectors(out_dir, stem, tests, tokenize):
    for s in tests:
        assert SEPARATOR not in s, s
    with open(os.path.join(out_dir, stem + ".inp"), "w", encoding="utf-8", newline="") as f:
        for s in tests:
            f.write(s + SEPARATOR)
    with open(os.path.join(out_dir, stem + ".out"), "w", encoding="utf-8", newline="") as f:
        for s in tests:
            f.write("".join(" %d" % t for t in tokenize(s)) + "\n")


def tokenizer_goldens(llm, out_dir):
    def plain(s):
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)

    def special(s):
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)

    # Round trip: decoding the ids must give the text back (BPE, no clean_spaces for smollm).
    for s in TOKENIZE_TESTS:
        back = llm.detokenize(plain(s)).decode("utf-8")
        if back != s:
            print("warning: detokenize round trip differs for %r -> %r" % (s, back))
    write_vectors(out_dir, "smollm2-tokenize", TOKENIZE_TESTS, plain)
    write_vectors(out_dir, "smollm2-tokenize-special", SPECIAL_TESTS, special)
    return len(TOKENIZE_TESTS), len(SPECIAL_TESTS)


def greedy(llm, prompt_ids, n):
    """Pure greedy decoding: evaluate the prompt, then repeatedly argmax the last logits."""
    ctx = llm.ctx
    n_vocab = llm.n_vocab()
    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
    llm.eval(prompt_ids)
    out = []
    margins = []
    for _ in range(n):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))
        tok = int(np.argmax(logits))  # first index of the maximum, like llama.cpp's greedy
        top2 = np.partition(logits, -2)[-2:]
        margins.append(float(top2[1] - top2[0]))
        out.append(tok)
        llm.eval([tok])
    return out, margins


def greedy_goldens(llm, out_dir, version, stem="smollm2", label="Q4_1"):
    """Writes <stem>-greedy.tsv and <stem>-greedy-margins.tsv (make_quant_goldens.py passes
    the stem and label of a re-quantized variant)."""
    path = os.path.join(out_dir, stem + "-greedy.tsv")
    mpath = os.path.join(out_dir, stem + "-greedy-margins.tsv")
    with open(path, "w", encoding="utf-8", newline="\n") as f, \
            open(mpath, "w", encoding="utf-8", newline="\n") as fm:
        fm.write("# For each line of " + stem + "-greedy.tsv (same order): at each of the %d greedy "
                 "steps, llama.cpp's top-1 minus top-2 logit. A small margin (< ~0.1) is a "
                 "near-tie that a different summation order may flip.\n" % N_GREEDY)
        f.write("# SmolLM2-135M-Instruct %s greedy decoding from %s, n_threads=2, CPU.\n"
                % (label, version))
        f.write("# Columns: prompt (JSON string) TAB prompt ids (parse_special=True, no BOS) "
                "TAB first %d generated ids.\n" % N_GREEDY)
        f.write("# Greedy = argmax of the logits (first index on ties), no sampling, no repeat "
                "penalty. Generation does NOT stop at EOS: always %d ids, even past <|im_end|> "
                "(2) or <|endoftext|> (0).\n" % N_GREEDY)
        for p in GREEDY_PROMPTS:
            ids = llm.tokenize(p.encode("utf-8"), add_bos=False, special=True)
            gen, margins = greedy(llm, ids, N_GREEDY)
            fm.write(" ".join("%.4f" % m for m in margins) + "\n")
            f.write("%s\t%s\t%s\n" % (json.dumps(p, ensure_ascii=False),
                                      " ".join(map(str, ids)), " ".join(map(str, gen))))
            print("greedy %r -> %r" % (p[-40:], llm.detokenize(gen, special=True)[:80]))
    return len(GREEDY_PROMPTS)


def perplexity(model, text, n_ctx, max_chunks=None):
    """Mirror llama.cpp tools/perplexity/perplexity.cpp (perplexity(), ppl_stride = 0):

    - tokens = common_tokenize(text, add_special=true, parse_special=false);
    - n_chunk = n_tokens / n_ctx (the tail is dropped), each chunk evaluated alone from an
      empty KV cache (a BOS replaces the chunk's first token only if the vocab adds BOS);
    - first = n_ctx/2; the logits at positions first .. n_ctx-2 score the tokens at positions
      first+1 .. n_ctx-1, i.e. n_ctx - 1 - first tokens per chunk (255 for n_ctx 512);
    - nll = -(logit[tok] - max - log(sum exp(logit - max))), summed in double;
    - ppl = exp(sum nll / count).
    """
    llm = load(model, n_ctx, logits_all=True, n_batch=n_ctx)
    add_bos = add_bos_of(llm)
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(tokens) < 2 * n_ctx:
        raise SystemExit("%s: %d tokens, need >= %d for n_ctx %d"
                         % (PPL_FILE, len(tokens), 2 * n_ctx, n_ctx))
    n_chunk = len(tokens) // n_ctx
    if max_chunks:
        n_chunk = min(n_chunk, max_chunks)
    first = n_ctx // 2
    nll = 0.0
    count = 0
    for c in range(n_chunk):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        llm.eval(chunk)
        logits = np.asarray(llm.scores[first:n_ctx - 1, :], dtype=np.float32)
        targets = np.asarray(tokens[c * n_ctx + first + 1:(c + 1) * n_ctx])
        mx = logits.max(axis=1)
        sum_exp = np.exp((logits - mx[:, None]).astype(np.float32)).astype(np.float64).sum(axis=1)
        tgt = logits[np.arange(len(targets)), targets]
        lp = (tgt - mx).astype(np.float64) - np.log(sum_exp)
        nll += float(-lp.sum())
        count += len(targets)
        print("ppl n_ctx=%d [%d/%d] %.4f" % (n_ctx, c + 1, n_chunk, math.exp(nll / count)))
    del llm
    return {"n_tokens": len(tokens), "n_chunks": n_chunk, "n_scored": count,
            "ppl": math.exp(nll / count), "add_bos": int(add_bos)}


def perplexity_goldens(model, out_dir, version, stem="smollm2", label="Q4_1", ctxs=(512, 1024),
                       max_chunks=None):
    with open(PPL_FILE, "r", encoding="utf-8") as f:
        text = f.read()
    path = os.path.join(out_dir, stem + "-perplexity.txt")
    lines = ["# Perplexity of SmolLM2-135M-Instruct " + label + ", computed like llama.cpp's perplexity "
             "tool (second half of each n_ctx chunk scored: n_ctx/2 - 1 tokens per chunk).",
             "# One block per n_ctx, separated by a blank line."]
    for n_ctx in ctxs:
        r = perplexity(model, text, n_ctx, max_chunks)
        lines += ["", "file=%s" % PPL_FILE, "file_sha256=%s" % sha256_file(PPL_FILE),
                  "n_ctx=%d" % n_ctx, "n_tokens=%d" % r["n_tokens"], "add_bos=%d" % r["add_bos"],
                  "n_chunks=%d" % r["n_chunks"], "n_scored=%d" % r["n_scored"],
                  "ppl=%.6f" % r["ppl"], "llama_cpp=%s" % version]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--model", default=os.environ.get(
        "BATON_MODEL", os.path.expanduser("~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf")))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden"))
    ap.add_argument("--llama-commit", default=os.environ.get("LLAMA_COMMIT", ""),
                    help="vendored llama.cpp commit, recorded in the outputs")
    args = ap.parse_args()

    if sha256_file(args.model) != MODEL_SHA256:
        raise SystemExit("%s: sha256 is not the SmolLM2 Q4_1 file %s" % (args.model, MODEL_SHA256))
    os.makedirs(args.out, exist_ok=True)
    version = llama_version()
    if args.llama_commit:
        version += " (llama.cpp %s)" % args.llama_commit
    print("reference:", version)
    print(llama_cpp.llama_print_system_info().decode())

    llm = load(args.model, 2048)
    if add_bos_of(llm):
        raise SystemExit("unexpected: this model's vocab adds BOS; the goldens assume it does not")
    n_tok, n_spec = tokenizer_goldens(llm, args.out)
    n_greedy = greedy_goldens(llm, args.out, version)
    del llm
    perplexity_goldens(args.model, args.out, version)
    print("wrote %d tokenize, %d special, %d greedy vectors and perplexity to %s"
          % (n_tok, n_spec, n_greedy, os.path.abspath(args.out)))


if __name__ == "__main__":
    sys.exit(main())
