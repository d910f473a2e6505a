"""test_equal_generate.py - what the server generates is what `baton generate` generates: for
the same prompt and parameters (greedy; and seeded sampling with the CLI's filters spelled
out), the completion's tokens, their logprobs and the text equal `baton generate
--print-ids`'s, with 1 stage (singleton) and with 2 stages (mpirun -np 3), on
/v1/completions and on /v1/chat/completions (generate --chat).

The server's tokens are identified through the API alone: each id generate printed is
turned into its piece by POST /detokenize and must equal the server's logprobs token at that
position; the prompt length must equal usage.prompt_tokens."""

import os
import subprocess

import lib

N_TOK = 16
PROMPTS = ["The quick brown fox", "In 1905, Albert Einstein published"]
CHAT = "Write one sentence about the sea."
# generate's CLI defaults for the filters, spelled out for both sides (the server's OpenAI
# defaults turn them off).
SEEDED_CLI = ["--temperature", "0.8", "--seed", "7", "--top-k", "40", "--top-p", "0.95",
              "--min-p", "0.05"]
SEEDED_API = {"temperature": 0.8, "seed": 7, "top_k": 40, "top_p": 0.95, "min_p": 0.05}
GREEDY_CLI = ["--temperature", "0"]
GREEDY_API = {"temperature": 0}


def generate(stages, args):
    """Runs baton generate (same launcher and stages as the server) and returns
    (prompt ids, output ids, output logprobs, stdout text)."""
    cmd = lib.mpi_prefix(stages) + [lib.baton_path(), "generate", "--model", lib.model_path(),
                                     "--threads", "1", "--print-ids", "--ignore-eos",
                                     "--max-tokens", str(N_TOK)] + args
    env = dict(os.environ)
    env.update(lib.mpi_env())
    p = subprocess.run(cmd, capture_output=True, timeout=180, env=env)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 0, "%s -> exit %d:\n%s" % (" ".join(cmd), p.returncode, err)
    found = {}
    for line in err.splitlines():
        for key in ("prompt ids:", "output ids:", "output logprobs:"):
            if line.startswith(key):
                found[key] = line[len(key):].split()
    assert len(found) == 3, "no --print-ids lines in:\n%s" % err
    return ([int(x) for x in found["prompt ids:"]], [int(x) for x in found["output ids:"]],
            [float(x) for x in found["output logprobs:"]], p.stdout.decode("utf-8"))


def pieces(server, ids):
    out = []
    for i in ids:
        r = server.post("/detokenize", {"tokens": [i]})
        assert r.status_code == 200, "/detokenize [%d] -> %d %s" % (i, r.status_code, r.text)
        out.append(r.json()["prompt"])
    return out


def check_same(what, server, gen, tokens, logprobs, text, n_prompt):
    p_ids, ids, lps, out = gen
    assert len(ids) == N_TOK, "%s: generate gave %d ids" % (what, len(ids))
    assert n_prompt == len(p_ids), "%s: server prompt %d tokens, generate %d (%r)" % (
        what, n_prompt, len(p_ids), p_ids)
    want = pieces(server, ids)
    assert tokens == want, "%s: server tokens %r\n generate's ids %r are %r" % (
        what, tokens, ids, want)
    for k, (a, b) in enumerate(zip(logprobs, lps)):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(b)), \
            "%s: logprob %d: server %.9g, generate %.9g" % (what, k, a, b)
    # generate ends its streamed text with one newline.
    out = out[:-1] if out.endswith("\n") else out
    assert text == out, "%s: server text %r, generate %r" % (what, text, out)


def completion(server, prompt, params):
    body = {"prompt": prompt, "max_tokens": N_TOK, "ignore_eos": True, "logprobs": 1}
    body.update(params)
    r = server.post("/v1/completions", body)
    assert r.status_code == 200, "%r -> %d %s" % (body, r.status_code, r.text)
    j = r.json()
    c = j["choices"][0]
    return c["logprobs"]["tokens"], c["logprobs"]["token_logprobs"], c["text"], \
        j["usage"]["prompt_tokens"]


def chat(server, content, params):
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": N_TOK,
            "ignore_eos": True, "logprobs": True}
    body.update(params)
    r = server.post("/v1/chat/completions", body)
    assert r.status_code == 200, "%r -> %d %s" % (body, r.status_code, r.text)
    j = r.json()
    c = j["choices"][0]
    lp = c["logprobs"]["content"]
    return [t["token"] for t in lp], [t["logprob"] for t in lp], c["message"]["content"], \
        j["usage"]["prompt_tokens"]


def run_stages(stages):
    with lib.Server(stages=stages) as s:
        for prompt in PROMPTS:
            for name, cli, api in (("greedy", GREEDY_CLI, GREEDY_API),
                                   ("seeded", SEEDED_CLI, SEEDED_API)):
                what = "%d stage(s) %s %r" % (stages, name, prompt)
                gen = generate(stages, cli + ["--prompt", prompt])
                check_same(what, s, gen, *completion(s, prompt, api))
                print("ok   %s" % what, flush=True)
        what = "%d stage(s) chat greedy %r" % (stages, CHAT)
        gen = generate(stages, GREEDY_CLI + ["--chat", "--prompt", CHAT])
        check_same(what, s, gen, *chat(s, CHAT, GREEDY_API))
        print("ok   %s" % what, flush=True)


def test_one_stage():
    run_stages(1)


def test_two_stages():
    run_stages(2)


if __name__ == "__main__":
    lib.run_tests([test_one_stage, test_two_stages])
