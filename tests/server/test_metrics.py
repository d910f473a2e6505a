"""test_metrics.py - GET /metrics of `baton serve` (2 stages under mpirun) parsed by a real
Prometheus text parser (prometheus_client.parser.text_string_to_metric_families, which
raises on malformed exposition): every name of the spec exists with its type and labels, the
per-stage gauges have one series per stage, and the counters and histograms move by the
right amounts after known requests."""

import lib

S = None
P = "baton:"
HISTOGRAMS = ["time_to_first_token_seconds", "inter_token_latency_seconds",
              "e2e_request_latency_seconds", "request_queue_time_seconds",
              "request_prompt_tokens", "request_generation_tokens"]
# prometheus_client strips the _total suffix from a counter family's name.
COUNTERS = ["prompt_tokens", "generation_tokens", "request_success", "request_errors",
            "num_preemptions"]
GAUGES = ["num_requests_running", "num_requests_waiting"]
STAGE_GAUGES = ["kv_cache_usage_perc", "kv_blocks_used", "kv_blocks_total",
                "stage_busy_fraction", "stage_seconds_since_heartbeat"]
STAGE_COUNTERS = ["stage_activation_bytes_sent"]


def sample(fams, name, **labels):
    """The value of the sample named name whose labels include labels (0 if absent)."""
    for fam in fams.values():
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_names_and_types():
    fams = S.metrics()
    missing = []
    for names, typ in ((HISTOGRAMS, "histogram"), (COUNTERS, "counter"), (GAUGES, "gauge"),
                       (STAGE_GAUGES, "gauge"), (STAGE_COUNTERS, "counter")):
        for n in names:
            f = fams.get(P + n)
            if f is None:
                missing.append("%s%s (%s)" % (P, n, typ))
            elif f.type != typ:
                missing.append("%s%s is %s, want %s" % (P, n, f.type, typ))
    assert not missing, "metrics missing or mistyped:\n" + "\n".join(missing)
    for n in STAGE_GAUGES + STAGE_COUNTERS:
        stages = sorted(s.labels.get("stage") for s in fams[P + n].samples)
        assert stages == ["1", "2"], "%s%s: stage labels %r (want 1, 2)" % (P, n, stages)
    for s in fams[P + "kv_blocks_total"].samples:
        assert s.value > 0, "kv_blocks_total %r" % s
    for s in fams[P + "kv_cache_usage_perc"].samples:
        assert 0 <= s.value <= 1, "kv_cache_usage_perc %r (a fraction 0..1 as vLLM's)" % s
    for s in fams[P + "stage_seconds_since_heartbeat"].samples:
        assert 0 <= s.value < 10, "a live stage's heartbeat is %r s old" % s.value
    for h in HISTOGRAMS:
        buckets = [s for s in fams[P + h].samples if s.name.endswith("_bucket")]
        assert buckets and buckets[-1].labels.get("le") == "+Inf", "%s: buckets %r" % (h, buckets)


def test_counters_move():
    before = S.metrics()
    r = S.post("/v1/completions", {"prompt": "The sky is", "max_tokens": 7, "ignore_eos": True,
                                   "temperature": 0})
    assert r.status_code == 200, r.text
    u = r.json()["usage"]
    r2 = S.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                         "max_tokens": 5, "ignore_eos": True, "stream": True})
    assert r2.status_code == 200
    events = lib.sse_events(r2)
    assert events[-1] == "[DONE]"
    bad = S.post("/v1/completions", {"prompt": "x", "temperature": -3})
    assert bad.status_code == 400
    nf = S.get("/no/such/route")
    assert nf.status_code == 404
    after = S.metrics()

    def d(name, **labels):
        return sample(after, P + name, **labels) - sample(before, P + name, **labels)

    assert d("generation_tokens_total") == 7 + 5, d("generation_tokens_total")
    assert d("prompt_tokens_total") >= u["prompt_tokens"] + 2, d("prompt_tokens_total")
    assert d("request_success_total", finished_reason="length") == 2, \
        d("request_success_total", finished_reason="length")
    assert d("request_errors_total", code="400") == 1, d("request_errors_total", code="400")
    assert d("request_errors_total", code="404") == 1, d("request_errors_total", code="404")
    for h in ("e2e_request_latency_seconds", "time_to_first_token_seconds",
              "request_generation_tokens", "request_prompt_tokens",
              "request_queue_time_seconds"):
        assert d(h + "_count") == 2, "%s_count moved by %r" % (h, d(h + "_count"))
    assert d("request_generation_tokens_sum") == 12, d("request_generation_tokens_sum")
    # 7 + 5 tokens: at most 6 + 4 gaps between tokens (fewer if tokens come in groups).
    assert 1 <= d("inter_token_latency_seconds_count") <= 10, \
        d("inter_token_latency_seconds_count")
    # Stage 1 sends activations to stage 2; the last stage sends sampled tokens, not
    # activations, so its counter may stay 0.
    assert d("stage_activation_bytes_sent_total", stage="1") > 0, \
        "stage 1 sent no activation bytes"
    assert sample(after, P + "num_requests_running") == 0
    assert sample(after, P + "num_requests_waiting") == 0


def test_kv_blocks_used_during_a_request():
    # While a long stream runs, the stages hold KV blocks; afterwards none.
    import requests
    resp = requests.post(S.url + "/v1/completions", json={"prompt": "Tell me a story",
                                                         "max_tokens": 100, "ignore_eos": True,
                                                         "stream": True}, stream=True,
                         timeout=60)
    it = resp.iter_lines()
    n = 0
    for line in it:
        if line.startswith(b"data:"):
            n += 1
            if n == 5:
                break
    mid = S.metrics()
    for st in ("1", "2"):
        assert sample(mid, P + "kv_blocks_used", stage=st) >= 1, "stage %s: no block used" % st
    assert sample(mid, P + "num_requests_running") == 1
    for _ in it:
        pass
    lib.wait_until(lambda: all(v == 0 for _, v in S.metric_values(P + "kv_blocks_used")), 10,
                   "kv_blocks_used back to 0")


if __name__ == "__main__":
    try:
        S = lib.Server(stages=2)
        with S:
            lib.run_tests([test_names_and_types, test_counters_move,
                           test_kv_blocks_used_during_a_request])
    except lib.Skip as e:
        print("SKIP: %s" % e)
        raise SystemExit(lib.SKIP)
