#!/usr/bin/env python3
"""Render the chat-template corpus with Jinja, as transformers' apply_chat_template does.

Offline tool: CI never runs it; its outputs are committed next to the templates in
tests/data/chat_templates/corpus/ (copied from the llama-cpp-python 0.3.36 sdist,
vendor/llama.cpp/models/templates/, MIT; see that directory's README).

    /opt/llcpp-venv/bin/python tests/tools/make_chat_goldens.py   # needs jinja2 (3.1.x)

For every NAME.jinja it writes NAME.sys.out and NAME.nosys.out: the template's own rendering
of two fixed conversations, with add_generation_prompt=True:

  sys:   system + user + assistant + user
  nosys: user + assistant + user          (a template's default system prompt shows here)

The environment is transformers' (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, the {% generation %} tag, raise_exception, tojson; strftime_now fixed to 26 Jul 2024 so the output does not
depend on the day). bos_token and eos_token are the family's (FAMILY_TOKENS, by file name).
A template that raises renders to a file holding "ERROR: <message>" (only refused templates
may do so; unit.test_chat_corpus checks the recognised ones byte for byte).
"""

import datetime
import json
import os
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

SYSTEM = "You are a helpful assistant."
CONV_SYS = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi there, how can I help?"},
    {"role": "user", "content": "What is 2+2?"},
]
CONV_NOSYS = CONV_SYS[1:]

LLAMA3 = ("<|begin_of_text|>", "<|eot_id|>")
DEEPSEEK = ("<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>")
# (substring of the file name, (bos_token, eos_token)); first match wins.
FAMILY_TOKENS = [
    ("Llama-3", LLAMA3),
    ("llama-3", LLAMA3),
    ("functionary", LLAMA3),
    ("DeepSeek-R1-Distill-Llama", DEEPSEEK),
    ("deepseek", DEEPSEEK),
    ("DeepSeek", DEEPSEEK),
    ("Qwen", ("", "<|im_end|>")),
    ("QwQ", ("", "<|im_end|>")),
    ("gemma", ("<bos>", "<eos>")),
    ("Phi-3", ("<s>", "<|endoftext|>")),
    ("mistral", ("<s>", "</s>")),
    ("Mistral", ("<s>", "</s>")),
    ("SmolLM3", ("", "<|im_end|>")),
    ("granite", ("", "<|end_of_text|>")),
    ("gpt-oss", ("<|startoftext|>", "<|return|>")),
]
DEFAULT_TOKENS = ("<s>", "</s>")


def tokens_of(name):
    for key, tok in FAMILY_TOKENS:
        if key in name:
            return tok
    return DEFAULT_TOKENS


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body
    (it only records which characters are the assistant's)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime(2024, 7, 26).strftime(fmt)


def render(text, messages, bos, eos):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    tpl = env.from_string(text)
    return tpl.render(messages=messages, add_generation_prompt=True, bos_token=bos,
                      eos_token=eos)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = os.path.join(here, "..", "data", "chat_templates", "corpus")
    names = sorted(f for f in os.listdir(corpus) if f.endswith(".jinja"))
    n_err = 0
    for f in names:
        text = open(os.path.join(corpus, f), encoding="utf-8").read()
        bos, eos = tokens_of(f)
        stem = f[: -len(".jinja")]
        for tag, conv in (("sys", CONV_SYS), ("nosys", CONV_NOSYS)):
            try:
                out = render(text, [dict(m) for m in conv], bos, eos)
            except Exception as e:  # a template's own error is part of the record
                out = "ERROR: %s: %s" % (type(e).__name__, str(e).split("\n")[0])
                n_err += 1
            with open(os.path.join(corpus, "%s.%s.out" % (stem, tag)), "w", encoding="utf-8",
                      newline="") as o:
                o.write(out)
    print("rendered %d templates (%d renders raised), jinja2 %s" % (len(names), n_err,
                                                                   jinja2.__version__))


if __name__ == "__main__":
    sys.exit(main())
