#!/usr/bin/env python3
"""Gemma 3 tokenizer goldens from llama.cpp (through llama-cpp-python), for issue #13.

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/.

    deploy/fetch-model.sh gemma3-270m         # caches gemma-3-270m-q4_k_m.gguf
    /opt/llcpp-venv/bin/python tests/tools/make_gemma_goldens.py [--model PATH] [--out DIR]

Files written (the format of make_goldens.py's smollm2-tokenize.*, llama.cpp's
test-tokenizer-0: every .inp string followed by "\\n__ggml_vocab_test__\\n"; .out one line per
string of " <id>" items):

  gemma3-tokenize.inp / .out
      Plain strings, add_special=False, parse_special=False (`baton tokenize --no-special`).
  gemma3-tokenize-special.inp / .out
      Strings with Gemma's control tokens, add_special=False, parse_special=True
      (`baton tokenize`, the default).
  gemma3-tokenize-bos.out
      The .inp strings of gemma3-tokenize with add_special=True (BOS), parse_special=False
      (`baton tokenize --add-special --no-special`).

Every plain string must round-trip through llama.cpp's detokenize (checked here: the tool
fails otherwise), so the tests check baton's round trip on all of them.
"""

import argparse
import hashlib
import os
import sys

import llama_cpp
from llama_cpp import Llama

MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
SEPARATOR = "\n__ggml_vocab_test__\n"

# Plain strings: what SentencePiece with Gemma's vocabulary (no prefix space, runs of spaces,
# newlines and tabs as user-defined tokens, byte fallback) can get wrong.
TOKENIZE_TESTS = [
    "a",
    " ",
    "  ",
    "   ",
    "                                ",
    "\t",
    "\t\t\t",
    "\n",
    "\n\n",
    "\n\n\n\n\n",
    "\r\n",
    " \n \n",
    "Hello world",
    " Hello world",
    "Hello world ",
    "  leading two, trailing two  ",
    "several   inner    spaces\tand\ttabs",
    "line one\nline two\n\nline four\r\nline five",
    "Hello, World! HELLO world... hello? don't I'll you're",
    "1 12 123 1234 12345 3.14159 -42 1e10 0x1F 007",
    "2026-12-05T15:33:33Z, $1,234.56, 99%",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"hi %d\\n\", 42);\n    return 0;\n}\n",
    "def fib(n):\n\tif n < 2:\n\t\treturn n\n\treturn fib(n - 1) + fib(n - 2)\n",
    '{"name": "baton", "list": [1, 2, 3], "ok": true}',
    "https://example.com/path/to/page?query=1&x=y#frag mailto:someone@example.org",
    "Cafe\u0301 vs Caf\u00e9, na\u00efve fa\u00e7ade, \u00c5ngstr\u00f6m, F\u00fchrer, C\u1eeda Vi\u1ec7t",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0421\u044a\u0435\u0448\u044c "
    "\u0436\u0435 \u0435\u0449\u0451 \u044d\u0442\u0438\u0445 \u043c\u044f\u0433\u043a\u0438\u0445 "
    "\u0431\u0443\u043b\u043e\u043a.",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5!",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3068"
    "\u3072\u3089\u304c\u306a\u3002",
    "\uc548\ub155\ud558\uc138\uc694 \uc138\uacc4!",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645! \u0647\u0630\u0627 "
    "\u0646\u0635 \u0639\u0631\u0628\u064a.",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd, \u05d6\u05d4 \u05d8\u05e7\u05e1\u05d8 "
    "\u05d1\u05e2\u05d1\u05e8\u05d9\u05ea.",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e! \u092f\u0939 "
    "\u0939\u093f\u0902\u0926\u0940 \u092a\u093e\u0920 \u0939\u0948\u0964",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "emoji \U0001f600\U0001f601\U0001f999 and ZWJ \U0001f468\u200d\U0001f469\u200d\U0001f467"
    "\u200d\U0001f466 \U0001f469\U0001f3fd\u200d\U0001f4bb",
    "flags \U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea keycap 1\ufe0f\u20e3 skin \U0001f44d\U0001f3ff",
    # byte fallback: characters that are no token of the vocabulary
    "\U0001d54f\U0001d550\U0001d551 \U00010348 \U0001f9ff\U0001fa90 \ue000 \U000f0000",
    "NBSP\u00a0here, ZWSP\u200bthere, soft\u00adhyphen",
    "control \x01\x02\x1f bytes and DEL \x7f",
    # Gemma's markers as plain text: never control ids without parse_special
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>text<eos> <pad> <unk> <mask>",
    "a<end_of_turn>b",
    "<start_of_image> <image_soft_token> </s> <s>",
    ".",
    "!!!???...",
    "The quick brown fox jumps over the lazy dog. " * 4,
]

# parse_special=True: Gemma's control tokens become their ids.
SPECIAL_TESTS = [
    "<bos>",
    "<start_of_turn>",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    " <start_of_turn> spaced <end_of_turn> ",
    "<end_of_turn><end_of_turn>",
    "text<eos>more<pad>",
    "<start_of_turn",
    "<<start_of_turn>>",
    "\n\n<start_of_turn>\n\n",
    "<start_of_image>img<end_of_image>",
    "plain text with no specials",
    # U+2581 in the input is SentencePiece's space: it comes back as " " (llama.cpp does not
    # round-trip it), so it lives here where only the ids are compared.
    "\u2581 literal U+2581 \u2581\u2581 and NBSP\u00a0here",
    # the Gemma chat format with a system message folded into the user turn, as
    # `baton tokenize --chat --chat-template gemma --system "Be brief." --prompt hi` renders it
    "<start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n",
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_inp(path, tests):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for s in tests:
            assert SEPARATOR not in s, s
            f.write(s + SEPARATOR)


def write_out(path, tests, tokenize):
    with open(path, "w", encoding="utf-8", newline="") as f:
        for s in tests:
            f.write("".join(" %d" % t for t in tokenize(s)) + "\n")


def main():
    default_model = os.path.join(os.path.expanduser("~"), ".cache", "baton",
                                 "gemma-3-270m-q4_k_m.gguf")
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden"))
    a = ap.parse_args()
    if sha256_file(a.model) != MODEL_SHA256:
        sys.exit("make_gemma_goldens: %s is not the gemma3-270m file (sha256)" % a.model)
    assert len(TOKENIZE_TESTS) >= 40
    llm = Llama(model_path=a.model, vocab_only=True, verbose=False)

    def plain(s):
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)

    def bos(s):
        return llm.tokenize(s.encode("utf-8"), add_bos=True, special=False)

    def special(s):
        return llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)

    bad = [s for s in TOKENIZE_TESTS if llm.detokenize(plain(s)).decode("utf-8") != s]
    if bad:
        sys.exit("make_gemma_goldens: llama.cpp does not round-trip %r" % bad)
    out = a.out
    write_inp(os.path.join(out, "gemma3-tokenize.inp"), TOKENIZE_TESTS)
    write_out(os.path.join(out, "gemma3-tokenize.out"), TOKENIZE_TESTS, plain)
    write_out(os.path.join(out, "gemma3-tokenize-bos.out"), TOKENIZE_TESTS, bos)
    write_inp(os.path.join(out, "gemma3-tokenize-special.inp"), SPECIAL_TESTS)
    write_out(os.path.join(out, "gemma3-tokenize-special.out"), SPECIAL_TESTS, special)
    print("gemma3 tokenizer goldens: %d plain, %d special (llama-cpp-python %s)" %
          (len(TOKENIZE_TESTS), len(SPECIAL_TESTS), llama_cpp.__version__))


if __name__ == "__main__":
    main()
