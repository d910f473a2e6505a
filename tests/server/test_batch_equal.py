"""test_batch_equal.py - `baton batch` answers a request line with exactly the body `baton serve`
answers the same body with (issue #10): for completions and chat requests (greedy, seeded
sampling, n > 1, best_of, logprobs, stop strings, beams) the body's choices and usage are
equal, and the rest of it has the same shape (ids and timestamps aside); for requests the
server refuses, the status code and the whole error body are equal.

The server runs as a singleton, the batch with 2 stages under mpirun (-np 3): equal bodies also
show that the pipeline gives what one process gives (lossless activations)."""

import json
import os
import subprocess
import tempfile

import lib

LONG = "word " * 600
REQUESTS = [
    ("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 12,
                         "temperature": 0}),
    ("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0.9,
                         "seed": 11, "top_p": 0.9, "logprobs": 2}),
    ("/v1/completions", {"prompt": "List three colors:", "max_tokens": 16, "temperature": 0.7,
                         "seed": 3, "n": 2, "stop": ["\n\n"]}),
    ("/v1/completions", {"prompt": "The sky is", "max_tokens": 8, "temperature": 0.8,
                         "seed": 5, "best_of": 3, "n": 2}),
    ("/v1/completions", {"prompt": "Water boils at", "max_tokens": 6, "use_beam_search": True,
                         "n": 2}),
    ("/v1/completions", {"prompt": [1, 504, 3458], "max_tokens": 5, "temperature": 0,
                         "ignore_eos": True}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hello."}],
                              "max_tokens": 12, "temperature": 0, "logprobs": True,
                              "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Name a fruit."}],
                              "max_tokens": 10, "temperature": 0.5, "seed": 9}),
    # refused: the same status and error body from both
    ("/v1/completions", {"prompt": "x", "temperature": 200}),
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}),
    ("/v1/completions", {"prompt": "x", "model": "no-such-model"}),
    ("/v1/completions", {"prompt": LONG}),
    ("/v1/completions", {}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "top_logprobs": 2}),
    ("/v1/chat/completions", {"messages": "hello"}),
]
ARGS = ["--ctx", "512", "--max-seqs", "8"]


def comparable(body):
    """The body without what differs between two answers to one request (id, created)."""
    return {k: v for k, v in body.items() if k not in ("id", "created")}


def test_batch_bodies_equal_server():
    with tempfile.TemporaryDirectory() as work:
        inp = os.path.join(work, "in.jsonl")
        out = os.path.join(work, "out.jsonl")
        with open(inp, "w") as f:
            for i, (url, body) in enumerate(REQUESTS):
                f.write(json.dumps({"custom_id": "c%02d" % i, "method": "POST", "url": url,
                                    "body": body}) + "\n")
        cmd = lib.mpi_prefix(2) + [lib.baton_path(), "batch", "--model", lib.model_path(),
                                   "--threads", "1", "--input", inp, "--output", out] + ARGS
        env = dict(os.environ)
        env.update(lib.mpi_env())
        p = subprocess.run(cmd, capture_output=True, timeout=300, env=env)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 3, "%s -> exit %d (want 3: some refusals):\n%s" % (
            " ".join(cmd), p.returncode, err)
        got = {}
        for line in open(out):
            r = json.loads(line)
            got[r["custom_id"]] = r
        assert len(got) == len(REQUESTS), "%d lines for %d requests" % (len(got), len(REQUESTS))

        with lib.Server(stages=1, args=ARGS) as s:
            for i, (url, body) in enumerate(REQUESTS):
                r = got["c%02d" % i]
                assert r["error"] is None and r["id"].startswith("batch_req_"), r
                resp = s.post(url, body)
                what = "%s %s" % (url, json.dumps(body)[:80])
                assert r["response"]["status_code"] == resp.status_code, \
                    "%s: batch status %d, server %d" % (what, r["response"]["status_code"],
                                                        resp.status_code)
                want, have = resp.json(), r["response"]["body"]
                if resp.status_code == 200:
                    assert r["response"]["request_id"] == have["id"], r
                    want, have = comparable(want), comparable(have)
                assert have == want, "%s:\nbatch  %s\nserver %s" % (
                    what, json.dumps(have)[:1500], json.dumps(want)[:1500])
                print("ok   %d %s" % (resp.status_code, what), flush=True)


if __name__ == "__main__":
    lib.run_tests([test_batch_bodies_equal_server])
