#!/usr/bin/env python3
"""Special-token goldens for issue #13's vocabularies (llama-bpe, qwen2, phi-3) from llama.cpp.

Offline tool: CI never runs it; its outputs are committed under tests/data/golden/. The vocab
files are llama.cpp's, in ../shared/testdata/vocab/ (never copied into the project).

    /opt/llcpp-venv/bin/python tests/tools/make_vocab_goldens.py [--shared DIR] [--out DIR]

Writes vocab-NAME-special.inp / .out (the format of smollm2-tokenize.*: each .inp string
followed by "\\n__ggml_vocab_test__\\n", .out one line of " <id>" per string), tokenized with
add_special=False, parse_special=True: each family's chat markers in rendered conversations,
with whitespace and newlines beside them (Phi-3's specials strip the whitespace after them in
llama.cpp: its RSTRIP attribute, set by model name), doubled, partial and inside words.
"""

import argparse
import os

import llama_cpp
from llama_cpp import Llama

SEPARATOR = "\n__ggml_vocab_test__\n"

COMMON = [
    "plain text, no markers",
    " leading space and trailing space ",
]

TESTS = {
    "llama-bpe": COMMON + [
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
        "December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|> spaced <|eot_id|>\n\n<|eot_id|>",
        "<|eot_id|><|eot_id|>x",
        "<|start_header_id|",
        "a<|end_of_text|>b <|finetune_right_pad_id|>",
    ],
    "qwen2": COMMON + [
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
        "assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|> spaced <|im_end|> \n <|endoftext|>",
        "<|im_end|><|im_end|>x",
        "<|im_start",
        "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    ],
    "phi-3": COMMON + [
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\n"
        "Hi there, how can I help?<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n",
        "<|user|>\n\n  \tspaces after<|end|>   \n",
        "before  <|end|>after",
        "<s><|user|>\nHi<|endoftext|> next</s> after",
        "<|end|><|end|>",
        "<|user|",
        "x<|assistant|>",
        "<|user|>\n",
    ],
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default=os.path.join(here, "..", "..", "..", "shared"))
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "golden"))
    a = ap.parse_args()
    for name, tests in TESTS.items():
        path = os.path.join(a.shared, "testdata", "vocab", "ggml-vocab-%s.gguf" % name)
        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        stem = os.path.join(a.out, "vocab-%s-special" % name)
        with open(stem + ".inp", "w", encoding="utf-8", newline="") as f:
            for s in tests:
                assert SEPARATOR not in s
                f.write(s + SEPARATOR)
        with open(stem + ".out", "w", encoding="utf-8", newline="") as f:
            for s in tests:
                ids = llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
                f.write("".join(" %d" % t for t in ids) + "\n")
        print("%s: %d strings (llama-cpp-python %s)" % (name, len(tests), llama_cpp.__version__))


if __name__ == "__main__":
    main()
