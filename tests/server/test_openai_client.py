"""test_openai_client.py - `baton serve` with 2 stages under mpirun, spoken to by OpenAI's own
Python client (from PyPI): completions and chat, streamed and not, n=2, logprobs on both
endpoints, stream_options.include_usage, one id/created per stream, the role in the first
chat delta, a 400 and a 401 raised as the client's exception classes, and an error in the
middle of a stream (a stage SIGKILLed) raised by the client."""

import os
import signal

import openai

import lib

KEY = "sk-test-" + "5" * 24
S = None  # the server, shared by the tests of this file
PROMPT = "The capital of France is"
MSGS = [{"role": "user", "content": "Name three colours."}]


def client(key=KEY):
    return S.openai(api_key=key)


def test_models_list():
    ms = client().models.list()
    ids = [m.id for m in ms.data]
    assert ids == [S.reported_model], "models %r, startup line says %r" % (ids, S.reported_model)
    assert ms.data[0].object == "model" and ms.data[0].owned_by, ms.data[0]


def test_completion_plain():
    r = client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=8,
                                    temperature=0)
    assert r.object == "text_completion", r.object
    assert r.id and r.created > 0 and r.model == S.reported_model, r
    assert len(r.choices) == 1 and r.choices[0].index == 0
    c = r.choices[0]
    assert c.finish_reason in ("length", "stop"), c.finish_reason
    assert isinstance(c.text, str) and c.text, "empty text: %r" % r
    u = r.usage
    assert u.prompt_tokens == len(S.tokenize(PROMPT, add_special=True)) or \
        u.prompt_tokens == len(S.tokenize(PROMPT)), (u, S.tokenize(PROMPT))
    assert 1 <= u.completion_tokens <= 8 and u.total_tokens == u.prompt_tokens + \
        u.completion_tokens, u
    if c.finish_reason == "length":
        assert u.completion_tokens == 8, u


def test_completion_length_and_ignore_eos():
    r = client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=5,
                                    temperature=0, extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length", r.choices[0]
    assert r.usage.completion_tokens == 5, r.usage


def test_completion_stream_same_as_plain():
    kw = dict(model=S.reported_model, prompt=PROMPT, max_tokens=12, temperature=0)
    whole = client().completions.create(**kw).choices[0].text
    chunks = list(client().completions.create(stream=True, **kw))
    assert chunks, "no chunks"
    assert len({c.id for c in chunks}) == 1, "ids differ: %r" % {c.id for c in chunks}
    assert len({c.created for c in chunks}) == 1, "created differ"
    text = "".join(ch.text for c in chunks for ch in c.choices)
    assert text == whole, "streamed %r, whole %r" % (text, whole)
    fins = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert len(fins) == 1 and fins[0] in ("stop", "length"), fins
    assert all(c.usage is None for c in chunks), "usage without include_usage"


def test_completion_stream_include_usage():
    chunks = list(client().completions.create(
        model=S.reported_model, prompt=PROMPT, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    last = chunks[-1]
    assert last.choices == [], "last chunk has choices: %r" % last
    assert last.usage is not None and last.usage.completion_tokens == 6, last.usage
    assert last.usage.total_tokens == last.usage.prompt_tokens + 6, last.usage
    assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1


def test_completion_n2():
    r = client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=6, n=2,
                                    temperature=1, seed=11, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1], [c.index for c in r.choices]
    assert all(c.finish_reason == "length" for c in r.choices), r.choices
    assert r.usage.completion_tokens == 12, r.usage
    # The same seed gives the same two completions (the sampler is seeded per completion).
    r2 = client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=6, n=2,
                                     temperature=1, seed=11, extra_body={"ignore_eos": True})
    assert [c.text for c in sorted(r.choices, key=lambda c: c.index)] == \
        [c.text for c in sorted(r2.choices, key=lambda c: c.index)], (r.choices, r2.choices)


def test_completion_n2_stream():
    chunks = list(client().completions.create(
        model=S.reported_model, prompt=PROMPT, max_tokens=4, n=2, temperature=1, seed=3,
        stream=True, extra_body={"ignore_eos": True}))
    idx = {ch.index for c in chunks for ch in c.choices}
    assert idx == {0, 1}, idx
    fins = sorted((ch.index, ch.finish_reason) for c in chunks for ch in c.choices
                  if ch.finish_reason)
    assert fins == [(0, "length"), (1, "length")], fins


def test_completion_logprobs():
    r = client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=6,
                                    temperature=0, logprobs=2, extra_body={"ignore_eos": True})
    c = r.choices[0]
    lp = c.logprobs
    assert lp is not None, "no logprobs: %r" % c
    n = r.usage.completion_tokens
    assert n == 6
    assert len(lp.tokens) == n and len(lp.token_logprobs) == n and len(lp.top_logprobs) == n \
        and len(lp.text_offset) == n, lp
    for i in range(n):
        top = lp.top_logprobs[i]
        assert 1 <= len(top) <= 3, "top_logprobs[%d] has %d entries: %r" % (i, len(top), top)
        assert lp.token_logprobs[i] <= 0, lp.token_logprobs
        # Greedy: the chosen token is the most likely one, with its own logprob.
        best = max(top.items(), key=lambda kv: kv[1])
        assert best[0] == lp.tokens[i] and abs(best[1] - lp.token_logprobs[i]) < 1e-5, \
            (i, top, lp.tokens[i], lp.token_logprobs[i])
    for i in range(n - 1):
        assert lp.text_offset[i + 1] - lp.text_offset[i] == len(lp.tokens[i]), \
            ("text_offset does not follow the tokens", lp.text_offset, lp.tokens)
    if not any(t.startswith("bytes:") for t in lp.tokens):
        assert "".join(lp.tokens) == c.text, (lp.tokens, c.text)


def test_completion_logprobs_stream():
    chunks = list(client().completions.create(
        model=S.reported_model, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=1,
        stream=True, extra_body={"ignore_eos": True}))
    toks = [t for c in chunks for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens]
    assert len(toks) == 4, "streamed logprob tokens %r" % toks


def test_chat_plain():
    r = client().chat.completions.create(model=S.reported_model, messages=MSGS, max_tokens=10,
                                         temperature=0)
    assert r.object == "chat.completion", r.object
    m = r.choices[0].message
    assert m.role == "assistant" and isinstance(m.content, str) and m.content, m
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 5, r.usage


def test_chat_max_completion_tokens():
    r = client().chat.completions.create(model=S.reported_model, messages=MSGS,
                                         max_completion_tokens=3, temperature=0,
                                         extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length", r


def test_chat_stream_role_first_and_same_text():
    kw = dict(model=S.reported_model, messages=MSGS, max_tokens=12, temperature=0)
    whole = client().chat.completions.create(**kw).choices[0].message.content
    chunks = list(client().chat.completions.create(stream=True, **kw))
    assert all(c.object == "chat.completion.chunk" for c in chunks), {c.object for c in chunks}
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    text = "".join(ch.delta.content or "" for c in chunks for ch in c.choices)
    assert text == whole, "streamed %r, whole %r" % (text, whole)
    fins = [ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason]
    assert len(fins) == 1, fins


def test_chat_stream_include_usage_n2():
    chunks = list(client().chat.completions.create(
        model=S.reported_model, messages=MSGS, max_tokens=5, n=2, temperature=1, seed=5,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None, last
    assert last.usage.completion_tokens == 10, last.usage
    assert {ch.index for c in chunks for ch in c.choices} == {0, 1}
    for i in (0, 1):
        first = next(ch for c in chunks for ch in c.choices if ch.index == i)
        assert first.delta.role == "assistant", ("choice %d's first delta" % i, first)


def test_chat_n2():
    r = client().chat.completions.create(model=S.reported_model, messages=MSGS, max_tokens=5,
                                         n=2, temperature=1, seed=9,
                                         extra_body={"ignore_eos": True})
    assert sorted(c.index for c in r.choices) == [0, 1]
    assert r.usage.completion_tokens == 10, r.usage


def test_chat_logprobs():
    r = client().chat.completions.create(model=S.reported_model, messages=MSGS, max_tokens=5,
                                         temperature=0, logprobs=True, top_logprobs=2,
                                         extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == 5, content
    for i, t in enumerate(content):
        assert t.logprob <= 0 and len(t.top_logprobs) == 2, t
        assert t.bytes == list(t.token.encode("utf-8")) or not t.token, t
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob, t
        # Greedy: the chosen token is the first alternative.
        assert t.top_logprobs[0].token == t.token and \
            abs(t.top_logprobs[0].logprob - t.logprob) < 1e-5, (i, t)
    assert "".join(t.token for t in content) == r.choices[0].message.content


def test_chat_logprobs_stream():
    chunks = list(client().chat.completions.create(
        model=S.reported_model, messages=MSGS, max_tokens=4, temperature=0, logprobs=True,
        top_logprobs=1, stream=True, extra_body={"ignore_eos": True}))
    got = [t for c in chunks for ch in c.choices if ch.logprobs and ch.logprobs.content
           for t in ch.logprobs.content]
    assert len(got) == 4 and all(len(t.top_logprobs) == 1 for t in got), got


def test_400_bad_request_error():
    try:
        client().completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=4,
                                    temperature=-1)
    except openai.BadRequestError as e:
        assert e.status_code == 400
        assert "temperature" in str(e), "message does not name the field: %s" % e
        return
    raise AssertionError("temperature -1 was accepted")


def test_400_chat_bad_request_error():
    try:
        client().chat.completions.create(model=S.reported_model, messages=MSGS, max_tokens=4,
                                         top_logprobs=99, logprobs=True)
    except openai.BadRequestError as e:
        assert "top_logprobs" in str(e), "message does not name the field: %s" % e
        return
    raise AssertionError("top_logprobs 99 was accepted")


def test_401_wrong_key():
    for key in ("sk-wrong", KEY[:-1], KEY + "x"):
        try:
            client(key).completions.create(model=S.reported_model, prompt=PROMPT, max_tokens=1)
        except openai.AuthenticationError as e:
            assert e.status_code == 401
            continue
        raise AssertionError("key %r was accepted" % key)


def test_404_model_not_found():
    try:
        client().completions.create(model="no-such-model", prompt=PROMPT, max_tokens=1)
    except openai.NotFoundError as e:
        assert "no-such-model" in str(e), e
        return
    raise AssertionError("model no-such-model was accepted")


def test_error_mid_stream_raised():
    """Last: SIGKILL of stage rank 2 while a long stream runs; the client must raise (an
    error event after the stream started), not end the stream quietly."""
    stream = client().completions.create(model=S.reported_model, prompt=PROMPT,
                                         max_tokens=1000, temperature=0, stream=True,
                                         extra_body={"ignore_eos": True})
    got = []
    killed = False
    try:
        for chunk in stream:
            got.append(chunk)
            if len(got) == 3 and not killed:
                pid = S.rank_pids().get(2)
                assert pid, "no rank 2 process: %r" % S.rank_pids()
                os.kill(pid, signal.SIGKILL)
                killed = True
    except openai.APIError as e:
        assert killed, "raised before the kill: %s" % e
        assert "rank 2" in str(e), "error does not name the rank: %s" % e
        rc = S.wait_exit(30)
        assert rc not in (None, 0), "server exit %r after a stage died (want non-zero)" % rc
        return
    raise AssertionError("stream ended without an error after %d chunks (killed=%s)" %
                         (len(got), killed))


TESTS = [test_models_list, test_completion_plain, test_completion_length_and_ignore_eos,
         test_completion_stream_same_as_plain, test_completion_stream_include_usage,
         test_completion_n2, test_completion_n2_stream, test_completion_logprobs,
         test_completion_logprobs_stream, test_chat_plain, test_chat_max_completion_tokens,
         test_chat_stream_role_first_and_same_text, test_chat_stream_include_usage_n2,
         test_chat_n2, test_chat_logprobs, test_chat_logprobs_stream, test_400_bad_request_error,
         test_400_chat_bad_request_error, test_401_wrong_key, test_404_model_not_found,
         test_error_mid_stream_raised]

if __name__ == "__main__":
    try:
        S = lib.Server(stages=2, api_key=KEY)
        with S:
            lib.run_tests(TESTS)
    except lib.Skip as e:
        print("SKIP: %s" % e)
        raise SystemExit(lib.SKIP)
