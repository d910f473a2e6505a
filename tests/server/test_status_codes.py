"""test_status_codes.py - every error status of `baton serve` (issue #9, "Errors and safe
defaults"), one test each, over real sockets, each answer in OpenAI's error shape
{"error": {"message", "type", "param", "code"}}:
400 bad JSON, wrong type, out of range, context overflow (both token counts named);
401 missing and wrong key (/health and /ready open); 404 unknown model and unknown route;
405 wrong method; 413 body over the limit answered before the body is sent; 503 with
Retry-After when the queue is full, while draining, and before ready; /health 200.
A corpus of malformed JSON bodies gets only 400s and the server keeps serving.

The main server has 2 stages (mpirun -np 3), --api-key, --ctx 512, --max-seqs 1,
--max-queue 2; draining and not-ready get servers of their own."""

import glob
import json
import os
import re
import signal
import socket
import threading
import time

import requests

import lib

KEY = "sk-status-" + "7" * 20
S = None
CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "malformed")


def expect_error(r, status, what, param=None, words=()):
    assert r.status_code == status, "%s: got %d %r (want %d)" % (what, r.status_code,
                                                                  r.text[:300], status)
    e = lib.error_body(r)
    if param is not None:
        assert e["param"] == param or param in e["message"], \
            "%s: the error does not name %r: %r" % (what, param, e)
    for w in words:
        assert w in e["message"], "%s: message lacks %r: %r" % (what, w, e["message"])
    return e


def test_health_200():
    r = requests.get(S.url + "/health", timeout=10)
    assert r.status_code == 200 and r.json() == {}, (r.status_code, r.text)
    r = requests.get(S.url + "/ready", timeout=10)
    assert r.status_code == 200 and r.json().get("status") == "ready", (r.status_code, r.text)


def test_400_bad_json():
    for body in (b"{", b'{"prompt": "x",}', b"not json at all"):
        expect_error(S.post("/v1/completions", raw=body), 400, "body %r" % body)


def test_400_wrong_type():
    cases = [({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
             ({"prompt": "x", "temperature": "hot"}, "temperature"),
             ({"prompt": "x", "max_tokens": 1.5}, "max_tokens"),
             ({"prompt": "x", "stream": "yes"}, "stream"),
             ({"prompt": "x", "stop": 5}, "stop"),
             ({"prompt": 17}, "prompt")]
    for body, param in cases:
        expect_error(S.post("/v1/completions", body), 400, "body %r" % body, param=param)
    expect_error(S.post("/v1/chat/completions", {"messages": "hello"}), 400, "messages str",
                 param="messages")


def test_400_out_of_range():
    cases = [({"prompt": "x", "temperature": -0.5}, "temperature"),
             ({"prompt": "x", "top_p": 0}, "top_p"),
             ({"prompt": "x", "top_p": 1.5}, "top_p"),
             ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
             ({"prompt": "x", "n": 0}, "n"),
             ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
             ({"prompt": "x", "logprobs": 21}, "logprobs"),
             ({"prompt": "x", "logit_bias": {"5": 500}}, "logit_bias"),
             ({"prompt": "x", "n": 3, "best_of": 2}, "best_of")]
    for body, param in cases:
        expect_error(S.post("/v1/completions", body), 400, "body %r" % body, param=param)


def test_400_context_overflow():
    r = S.post("/tokenize", {"prompt": "x"})
    assert r.status_code == 200, r.text
    n_ctx = r.json()["max_model_len"]
    assert n_ctx == 512, "max_model_len %d with --ctx 512" % n_ctx
    prompt = "hello " * (n_ctx + 40)
    n_prompt = len(S.tokenize(prompt))
    assert n_prompt > n_ctx
    for path, body in (("/v1/completions", {"prompt": prompt, "max_tokens": 4}),
                       ("/v1/chat/completions",
                        {"messages": [{"role": "user", "content": prompt}], "max_tokens": 4})):
        r = S.post(path, body)
        e = expect_error(r, 400, path + " overflow", words=(str(n_ctx),))
        # The prompt's own count (chat: the rendered template adds a few tokens).
        counts = [int(w) for w in re.findall(r"\d+", e["message"])]
        assert any(n_prompt <= c <= n_prompt + 40 for c in counts), \
            "%s: message gives no prompt token count near %d: %r" % (path, n_prompt,
                                                                       e["message"])


def test_401_missing_and_wrong_key():
    body = {"prompt": "x", "max_tokens": 1}
    for hdr in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + KEY[:-1]},
                {"Authorization": "Basic " + KEY}, {"Authorization": KEY}):
        r = requests.post(S.url + "/v1/completions", json=body, headers=hdr, timeout=30)
        expect_error(r, 401, "headers %r" % hdr)
        for path in ("/v1/models", "/metrics"):
            r = requests.get(S.url + path, headers=hdr, timeout=30)
            assert r.status_code == 401, "GET %s %r -> %d" % (path, hdr, r.status_code)
    for path in ("/health", "/ready"):
        r = requests.get(S.url + path, timeout=10)
        assert r.status_code == 200, "%s without a key -> %d (must stay open)" % (
            path, r.status_code)


def test_404_unknown_model():
    e = expect_error(S.post("/v1/completions", {"model": "gpt-nope", "prompt": "x",
                                                 "max_tokens": 1}), 404, "model gpt-nope",
                     words=("gpt-nope",))
    assert e["code"] in ("model_not_found", 404, "404"), e
    expect_error(S.post("/v1/chat/completions", {"model": "gpt-nope",
                                                 "messages": [{"role": "user", "content": "x"}]}),
                 404, "chat model gpt-nope")
    r = S.post("/v1/completions", {"model": S.reported_model, "prompt": "x", "max_tokens": 1})
    assert r.status_code == 200, "the served model's own name -> %d %s" % (r.status_code, r.text)


def test_404_unknown_route():
    for path in ("/v1/nope", "/v2/completions", "/v1/completions/x", "/index.php"):
        expect_error(S.get(path), 404, "GET " + path)
    expect_error(S.post("/v1/embeddings", {"input": "x"}), 404, "POST /v1/embeddings")


def test_405_wrong_method():
    expect_error(S.get("/v1/completions"), 405, "GET /v1/completions")
    expect_error(S.get("/v1/chat/completions"), 405, "GET /v1/chat/completions")
    expect_error(requests.delete(S.url + "/v1/completions", headers=S.headers(), timeout=10),
                 405, "DELETE /v1/completions")
    expect_error(S.post("/v1/models", {}), 405, "POST /v1/models")


def test_413_before_the_body():
    # Headers announce 8 MiB (the limit is 1 MiB); no byte of the body is sent. The answer must
    # come anyway, quickly: the server refuses on the header alone.
    sock = lib.raw_connect(S)
    try:
        sock.sendall(("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" %
                      (KEY, 8 << 20)).encode())
        t0 = time.monotonic()
        status, hdrs, body = lib.read_http_response(sock, timeout=10)
        dt = time.monotonic() - t0
    finally:
        sock.close()
    assert status == 413, "got %d %r" % (status, body[:200])
    assert dt < 5, "413 took %.1f s" % dt
    e = json.loads(body)["error"]
    assert e["message"], e
    # The server still serves.
    r = S.post("/v1/completions", {"prompt": "x", "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_413_body_sent():
    # A 1 MiB + body sent whole: read while sending, since a server that answers early and
    # closes may reset a connection whose unread body is still arriving.
    body = b'{"prompt": "' + b"a" * (1 << 20) + b'"}'
    head = ("POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" %
            (KEY, len(body))).encode()
    sock = lib.raw_connect(S)

    def send():
        try:
            sock.sendall(head + body)
        except OSError:
            pass

    t = threading.Thread(target=send)
    t.start()
    try:
        status, _hdrs, rbody = lib.read_http_response(sock, timeout=20)
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(20)
        sock.close()
    assert status == 413, "got %d %r" % (status, rbody[:200])
    assert json.loads(rbody)["error"]["message"], rbody


def test_503_queue_full():
    # --max-seqs 1 --max-queue 2: of 6 simultaneous 200-token requests, at most 2 are
    # accepted; the rest get 503 with Retry-After at once.
    results = []
    lock = threading.Lock()

    def one():
        t0 = time.monotonic()
        r = S.post("/v1/completions", {"prompt": "Once upon a time", "max_tokens": 200,
                                        "ignore_eos": True, "temperature": 0})
        with lock:
            results.append((r, time.monotonic() - t0))

    ts = [threading.Thread(target=one) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(180)
    codes = sorted(r.status_code for r, _ in results)
    assert len(codes) == 6, codes
    assert set(codes) <= {200, 503}, codes
    assert codes.count(200) >= 1 and codes.count(503) >= 4, \
        "with --max-queue 2, 6 requests -> %r" % codes
    for r, dt in results:
        if r.status_code == 503:
            expect_error(r, 503, "queue full")
            ra = r.headers.get("Retry-After")
            assert ra and ra.isdigit() and int(ra) >= 1, "Retry-After %r" % ra
            assert dt < 10, "a 503 took %.1f s (must not wait for the queue)" % dt
    r = S.post("/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert r.status_code == 200, "after the burst: %d %s" % (r.status_code, r.text)


MALFORMED = [
    b"", b" ", b"{", b"}", b"[", b'{"prompt": "x"', b'{"prompt": "x",}', b'{"prompt" "x"}',
    b"{'prompt': 'x'}", b'{"prompt": "x"} trailing', b'{"prompt": "x"}{"prompt": "y"}',
    b"[1, 2]", b'"a string"', b"42", b"null", b"true", b"\x00\x01\x02",
    b'{"prompt": "a\xff\xfeb"}', b'{"prompt": "\xc3"}', b'{"prompt": "\\ud800"}',
    b'{"prompt": "\\x41"}', b'{"prompt": "tab\there"}',
    b'{"prompt": "x", "max_tokens": 1e999}', b'{"prompt": "x", "temperature": -1e999}',
    b'{"prompt": "x", "max_tokens": 123456789012345678901234567890}',
    b'{"prompt": "x", "max_tokens": 9223372036854775807}',
b'{"prompt": "x", "temperature": NaN}',
    b'{"prompt": "x", "temperature": Infinity}', b'{"prompt": "x", "top_p": -0.0e}',
    b"[" * 100000 + b"]" * 100000, b'{"a":' * 40000 + b"1" + b"}" * 40000,
    b'{"prompt": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    b'{"prompt": {"text": "x"}}', b'{"prompt": null}', b'{"prompt": [1.5, 2]}',
    b'{"prompt": "x", "prompt": 5}', b'{"max_tokens": 4}',
    b'{"prompt": "x", "stop": [1, 2]}', b'{"prompt": "x", "stop": {"a": 1}}',
    b'{"prompt": "x", "logit_bias": {"abc": 1}}', b'{"prompt": "x", "logit_bias": [1]}',
    b'{"prompt": "x", "logit_bias": {"999999999": 1}}', b'{"prompt": "x", "n": "2"}',
    b'{"prompt": "x", "stream_options": 5, "stream": true}',
    b'{"prompt": "x", "model": 7}',
    b'{"prompt": "x", "stop_token_ids": ["a"]}', b'{"prompt": "x", "top_k": -5}',
]
MALFORMED_CHAT = [
    b'{"messages": []}', b'{"messages": "hi"}', b'{"messages": [{"role": "user"}]}',
    b'{"messages": [{"role": 5, "content": "x"}]}', b'{"messages": [{"content": "x"}]}',
    b'{"messages": [{"role": "wizard", "content": "x"}]}', b'{"messages": [null]}',
    b'{"messages": [{"role": "user", "content": 5}]}', b'{"prompt": "x"}',
    b'{"messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}',
    b'{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -2}',
]


def corpus():
    files = sorted(glob.glob(os.path.join(CORPUS, "*.json")))
    out = []
    for f in files:
        with open(f, "rb") as fh:
            out.append((os.path.basename(f), fh.read()))
    return out


def test_malformed_corpus_only_400():
    bad = []
    cases = [("/v1/completions", "inline %d" % i, b) for i, b in enumerate(MALFORMED)]
    cases += [("/v1/chat/completions", "chat %d" % i, b) for i, b in enumerate(MALFORMED_CHAT)]
    cases += [("/v1/completions", name, b) for name, b in corpus()]
    cases += [("/v1/chat/completions", name, b) for name, b in corpus()]
    assert len(cases) > 60
    for path, name, body in cases:
        try:
            r = S.post(path, raw=body, timeout=30)
        except requests.RequestException as e:
            bad.append("%s %s %r: %s" % (path, name, body[:60], e))
            continue
        if r.status_code != 400:
            bad.append("%s %s %r -> %d %s" % (path, name, body[:60], r.status_code, r.text[:120]))
            continue
        try:
            lib.error_body(r)
        except AssertionError as e:
            bad.append("%s %s: %s" % (path, name, e))
    assert S.proc.poll() is None, "the server died: %s" % S.output()[-2000:]
    r = S.post("/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert r.status_code == 200, "after the corpus: %d %s" % (r.status_code, r.text)
    assert not bad, "%d of %d malformed bodies not a clean 400:\n%s" % (len(bad), len(cases),
                                                                     "\n".join(bad))


def test_503_draining():
    with lib.Server(stages=1, args=["--shutdown-timeout", "60"]) as d:
        long_req = {"prompt": "Once upon a time", "max_tokens": 150, "ignore_eos": True,
                    "temperature": 0, "stream": True}
        resp = requests.post(d.url + "/v1/completions", json=long_req, stream=True, timeout=60)
        assert resp.status_code == 200
        it = resp.iter_lines()
        next(l for l in it if l.startswith(b"data:"))  # it is generating
        d.signal_server(signal.SIGTERM)
        lib.wait_until(lambda: requests.get(d.url + "/ready", timeout=5).status_code == 503, 10,
                       "/ready 503 after SIGTERM")
        r = requests.post(d.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1},
                          timeout=30)
        expect_error(r, 503, "new request while draining")
        assert r.headers.get("Retry-After"), "503 while draining without Retry-After"
        assert requests.get(d.url + "/health", timeout=5).status_code == 200
        # The running stream still finishes, then the process exits 0.
        rest = [l for l in it if l.startswith(b"data:")]
        assert rest and rest[-1] == b"data: [DONE]", rest[-3:]
        rc = d.wait_exit(30)
        assert rc == 0, "exit %r after the drain:\n%s" % (rc, d.output()[-2000:])


def test_503_not_ready():
    # Not ready = the engine cannot serve. While loading, the window is milliseconds (the
    # socket is bound after the stages' Hello and the one-token probe follows at once), so it
    # is provoked by a stage that stops answering: SIGSTOP of stage rank 1 with
    # --stage-timeout-ms 2000. Once the stage is failed, /ready must answer 503 and a
    # completion 503 with Retry-After (while the process lives), then the process exits
    # non-zero.
    with lib.Server(stages=2, args=["--stage-timeout-ms", "2000", "--heartbeat-ms", "200"]) as srv:
        pid = srv.rank_pids().get(1)
        assert pid, "no rank 1 process: %r" % srv.rank_pids()
        os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        saw = None
        try:
            while time.monotonic() - t0 < 15 and srv.proc.poll() is None:
                try:
                    r = requests.get(srv.url + "/ready", timeout=5)
                except requests.ConnectionError:
                    break
                if r.status_code == 503:
                    saw = time.monotonic() - t0
                    break
                assert r.status_code == 200, "/ready -> %d" % r.status_code
                time.sleep(0.1)
            assert saw is not None, ("/ready never answered 503 after stage rank 1 stopped "
                                     "(exit %r); output:\n%s" % (srv.proc.poll(),
                                                                  srv.output()[-2000:]))
            print("  /ready 503 %.1f s after SIGSTOP of rank 1" % saw)
            lib.error_body(r)
            r = requests.post(srv.url + "/v1/completions", json={"prompt": "x", "max_tokens": 1},
                              timeout=30)
            expect_error(r, 503, "request when not ready")
            assert r.headers.get("Retry-After"), "503 when not ready without Retry-After"
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        rc = srv.wait_exit(30)
        assert rc not in (None, 0), "exit %r after a stage failed (want non-zero)" % rc


def test_clean_exit():
    """Last on the shared server: after everything above, SIGTERM drains it to exit 0."""
    S.stop_cleanly()


TESTS = [test_health_200, test_400_bad_json, test_400_wrong_type, test_400_out_of_range,
         test_400_context_overflow, test_401_missing_and_wrong_key, test_404_unknown_model,
         test_404_unknown_route, test_405_wrong_method, test_413_before_the_body,
         test_413_body_sent, test_503_queue_full, test_malformed_corpus_only_400]

if __name__ == "__main__":
    try:
        S = lib.Server(stages=2, api_key=KEY, args=["--ctx", "512", "--max-seqs", "1",
                                                    "--max-queue", "2"])
        with S:
            # Draining and not-ready start servers of their own, after the shared one's tests.
            lib.run_tests(TESTS + [test_clean_exit, test_503_draining, test_503_not_ready])
    except lib.Skip as e:
        print("SKIP: %s" % e)
        raise SystemExit(lib.SKIP)
