#!/usr/bin/env python3
"""batch_streams.py - the many-stream batch of the shell tests that compare `baton batch` run
all at once with the same requests one at a time (tests/e2e/lib.sh lanes_check,
tests/mpi/test_cluster_equal.sh).

    batch_streams.py make OUT.jsonl N MAX_TOKENS
        N greedy completion requests (custom_id r0..r<N-1>, logprobs, EOS ignored) on 12
        topics with 0-3 extra sentences, so the prompts differ in length.
    batch_streams.py norm RESULTS.jsonl
        One line per result in custom_id order: the index, its tokens and its logprobs, for
        comparing two runs with cmp.
"""
import json
import sys

TOPICS = ["the sea", "a red bicycle", "the history of Rome", "how bread is made",
          "a quiet village in winter", "the moon landing", "why cats purr", "a recipe for soup",
          "the life of bees", "mountains at dawn", "an old clock", "learning to swim"]


def make(out, n, max_tokens):
    with open(out, "w") as f:
        for i in range(n):
            prompt = "Write a short note about %s.%s" % (TOPICS[i % len(TOPICS)],
                                                        " Be brief." * (i % 4))
            body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                    "ignore_eos": True, "logprobs": 1}
            f.write(json.dumps({"custom_id": "r%d" % i, "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")


def norm(path):
    rows = []
    for line in open(path):
        r = json.loads(line)
        lp = r["response"]["body"]["choices"][0]["logprobs"]
        rows.append((int(r["custom_id"][1:]), lp["tokens"], lp["token_logprobs"]))
    for i, t, l in sorted(rows):
        print(i, json.dumps(t), " ".join(repr(x) for x in l))


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "make":
        make(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "norm":
        norm(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
