#!/usr/bin/env python3
"""Load benchmark for any OpenAI-compatible server (baton serve, llama-server, vLLM, ...).

Sends streamed completions (or chat completions) built from a fixed, committed prompt set
(tests/bench/prompts.json, prompts of 10 to about 700 tokens, chosen per request by a seeded
RNG) and measures, per request, from the client's side of the socket:

  TTFT   time to first token: request sent -> first chunk that carries text
  ITL    inter-token latency: the gap between consecutive text chunks
  TPOT   time per output token: (e2e - TTFT) / (output tokens - 1)
  e2e    request sent -> end of the stream ("data: [DONE]")
With --server-metrics (baton serve), the server's own mean TTFT over the point (from
baton:time_to_first_token_seconds in /metrics) is reported beside the client's: the
difference is what HTTP, JSON and the socket add.

Output tokens are the server's `usage.completion_tokens` (asked for with
stream_options.include_usage; llama-server sends usage in its last chunk anyway), else the
number of text chunks.

Two modes, one point per value:
  --concurrency 1,2,4,8,16   closed loop: C clients, each sends its next request when the
                             previous one has ended (--requests per point, or --duration)
  --rates 0.5,1,2,4          open loop: Poisson arrivals at R requests/s (exponential gaps,
                             seeded), each request on its own thread, --requests or --duration

Each point reports TTFT, TPOT, ITL and e2e (p50 and p99), output tokens/s (all output tokens
of the point / the point's wall time, first send to last end), requests ok and failed.
Every point is appended as one JSON line to --jsonl and one row to --csv (header written when
the file is new), with --label naming the system. Standard library only.

Example:
  tests/bench/load.py --url http://127.0.0.1:8080 --label baton-2st \\
      --concurrency 1,2,4,8,16 --max-tokens 64 --jsonl out.jsonl --csv out.csv
"""

import argparse
import csv
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
CSV_FIELDS = [
    "label", "mode", "concurrency", "rate", "requests_ok", "requests_failed", "wall_s",
    "output_tokens", "output_tok_s", "req_s",
    "ttft_p50_ms", "ttft_p99_ms", "ttft_mean_ms", "tpot_p50_ms", "tpot_p99_ms",
    "itl_p50_ms", "itl_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "max_tokens", "endpoint",
    "server_ttft_mean_ms", "loadavg_1m",
]


def percentile(xs, p):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


class Target:
    """Where requests go and what they look like."""

    def __init__(self, args):
        u = urllib.parse.urlparse(args.url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"load.py: --url must be http://HOST[:PORT], not '{args.url}'")
        self.host, self.port = u.hostname, u.port or 80
        self.base = u.path.rstrip("/")
        self.args = args
        self.headers = {"Content-Type": "application/json"}
        if args.api_key:
            self.headers["Authorization"] = "Bearer " + args.api_key

    def body(self, prompt):
        a = self.args
        b = {"max_tokens": a.max_tokens, "temperature": a.temperature, "stream": True,
             "stream_options": {"include_usage": True}}
        if a.model:
            b["model"] = a.model
        if a.ignore_eos:
            b["ignore_eos"] = True  # vLLM's and llama-server's extra: every request is max_tokens
        if a.endpoint == "chat":
            b["messages"] = [{"role": "user", "content": prompt}]
            return self.base + "/v1/chat/completions", b
        b["prompt"] = prompt
        return self.base + "/v1/completions", b


def chunk_text(obj, endpoint):
    ch = obj.get("choices") or []
    if not ch:
        return ""
    if endpoint == "chat":
        return (ch[0].get("delta") or {}).get("content") or ""
    return ch[0].get("text") or ""


def one_request(target, prompt, timeout):
    """Sends one streamed request; returns a result dict (ok, ttft, itls, e2e, tokens, error)."""
    path, body = target.body(prompt)
    data = json.dumps(body).encode()
    res = {"ok": False, "ttft": None, "itl": [], "e2e": None, "tokens": 0, "error": None}
    conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        t0 = time.perf_counter()
        conn.request("POST", path, body=data, headers=target.headers)
        resp = conn.getresponse()
        if resp.status != 200:
            res["error"] = f"HTTP {resp.status}: {resp.read(300).decode(errors='replace')}"
            return res
        t_last = None
        chunks = 0
        usage_tokens = None
        done = False
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            now = time.perf_counter()
            obj = json.loads(payload)
            if "error" in obj:
                res["error"] = "stream error: " + json.dumps(obj["error"])[:300]
                return res
            if obj.get("usage") and obj["usage"].get("completion_tokens") is not None:
                usage_tokens = obj["usage"]["completion_tokens"]
            if chunk_text(obj, target.args.endpoint):
                chunks += 1
                if t_last is None:
                    res["ttft"] = now - t0
                else:
                    res["itl"].append(now - t_last)
                t_last = now
        res["e2e"] = time.perf_counter() - t0
        if not done:
            res["error"] = "stream ended without data: [DONE]"
            return res
        if res["ttft"] is None:
            res["error"] = "no text in the stream"
            return res
        res["tokens"] = usage_tokens if usage_tokens is not None else chunks
        res["ok"] = True
        return res
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
        return res
    finally:
        conn.close()


def summarize(results, wall, label, mode, concurrency, rate, args):
    ok = [r for r in results if r["ok"]]
    failed = [r for r in results if not r["ok"]]
    ttft = [r["ttft"] for r in ok]
    e2e = [r["e2e"] for r in ok]
    tpot = [(r["e2e"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
    itl = [g for r in ok for g in r["itl"]]
    tokens = sum(r["tokens"] for r in ok)

    def ms(x):
        return None if x is None else round(x * 1000.0, 3)

    row = {
        "label": label, "mode": mode, "concurrency": concurrency, "rate": rate,
        "requests_ok": len(ok), "requests_failed": len(failed), "wall_s": round(wall, 3),
        "output_tokens": tokens, "output_tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "req_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "ttft_p50_ms": ms(percentile(ttft, 50)), "ttft_p99_ms": ms(percentile(ttft, 99)),
        "ttft_mean_ms": ms(sum(ttft) / len(ttft)) if ttft else None,
        "tpot_p50_ms": ms(percentile(tpot, 50)), "tpot_p99_ms": ms(percentile(tpot, 99)),
        "itl_p50_ms": ms(percentile(itl, 50)), "itl_p99_ms": ms(percentile(itl, 99)),
        "e2e_p50_ms": ms(percentile(e2e, 50)), "e2e_p99_ms": ms(percentile(e2e, 99)),
        "max_tokens": args.max_tokens, "endpoint": args.endpoint,
    }
    errors = {}
    for r in failed:
        errors[r["error"]] = errors.get(r["error"], 0) + 1
    return row, errors


def run_closed(target, prompts, rng, c, args):
    """C clients in a closed loop until --requests are done or --duration has passed."""
    n_total = args.requests if args.requests else None
    deadline = None
    lock = threading.Lock()
    results = []
    issued = [0]
    order = [rng.choice(prompts) for _ in range(n_total or 100000)]

    def worker():
        while True:
            with lock:
                if n_total is not None and issued[0] >= n_total:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                prompt = order[issued[0] % len(order)]
                issued[0] += 1
            r = one_request(target, prompt, args.timeout)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    if args.duration:
        deadline = t0 + args.duration
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def run_poisson(target, prompts, rng, rate, args):
    """Open loop: arrivals with exponential gaps of mean 1/rate, one thread per request."""
    n_total = args.requests if args.requests else None
    results = []
    lock = threading.Lock()
    threads = []

    def fire(prompt):
        r = one_request(target, prompt, args.timeout)
        with lock:
            results.append(r)

    t0 = time.perf_counter()
    t_next = t0
    i = 0
    while True:
        if n_total is not None and i >= n_total:
            break
        if args.duration and t_next - t0 >= args.duration:
            break
        delay = t_next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=fire, args=(rng.choice(prompts),), daemon=True)
        th.start()
        threads.append(th)
        i += 1
        t_next += rng.expovariate(rate)
    for th in threads:
        th.join()
    return results, time.perf_counter() - t0


def server_ttft(target):
    """(sum, count) of baton:time_to_first_token_seconds from the server's /metrics, or None."""
    conn = http.client.HTTPConnection(target.host, target.port, timeout=10)
    try:
        conn.request("GET", target.base + "/metrics", headers=target.headers)
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        if resp.status != 200:
            return None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    vals = {}
    for line in text.splitlines():
        for key in ("sum", "count"):
            name = "baton:time_to_first_token_seconds_" + key
            if line.startswith(name + " ") or line.startswith(name + "{"):
                vals[key] = vals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return (vals["sum"], vals["count"]) if len(vals) == 2 else None


def parse_list(s, kind, name):
    try:
        xs = [kind(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"load.py: {name} must be a comma-separated list of numbers, not '{s}'")
    if not xs or any(x <= 0 for x in xs):
        raise SystemExit(f"load.py: {name} needs positive values, not '{s}'")
    return xs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL")
    ap.add_argument("--model", default="", help="the request's model field (none if empty)")
    ap.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""))
    ap.add_argument("--label", default="server", help="names the system in the output")
    ap.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    ap.add_argument("--prompts", default=os.path.join(HERE, "prompts.json"))
    ap.add_argument("--kinds", default="short,medium,long",
                    help="prompt kinds to draw from (short, medium, long)")
    ap.add_argument("--prompt-index", type=int, default=-1,
                    help="send only this prompt of the set (e.g. to compare TTFT with baton bench)")
    ap.add_argument("--server-metrics", action="store_true",
                    help="also report the server's own mean TTFT over the point, from "
                         "baton:time_to_first_token_seconds in /metrics (baton serve)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                    help="let requests stop at EOS (default: every request is max_tokens)")
    ap.add_argument("--concurrency", default="", help="closed-loop sweep, e.g. 1,2,4,8,16")
    ap.add_argument("--rates", default="", help="Poisson arrival rates in req/s, e.g. 0.5,1,2")
    ap.add_argument("--requests", type=int, default=0,
                    help="requests per point (default: 4 x concurrency, at least 8; "
                         "Poisson: 8 x rate, at least 8) unless --duration")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds per point")
    ap.add_argument("--warmup", type=int, default=1, help="untimed requests before the first point")
    ap.add_argument("--timeout", type=float, default=300.0, help="socket timeout per request")
    ap.add_argument("--jsonl", default="", help="append one JSON line per point")
    ap.add_argument("--csv", default="", help="append one CSV row per point")
    args = ap.parse_args()

    if args.max_tokens < 1:
        raise SystemExit("load.py: --max-tokens must be at least 1")
    if not args.concurrency and not args.rates:
        raise SystemExit("load.py: give --concurrency LIST and/or --rates LIST")
    with open(args.prompts, encoding="utf-8") as f:
        kinds = set(args.kinds.split(","))
        prompts = [p["prompt"] for p in json.load(f)["prompts"] if p["kind"] in kinds]
    if not prompts:
        raise SystemExit(f"load.py: no prompts of kinds '{args.kinds}' in {args.prompts}")
    if args.prompt_index >= 0:
        if args.prompt_index >= len(prompts):
            raise SystemExit(f"load.py: --prompt-index {args.prompt_index} is past the "
                             f"{len(prompts)} prompts of kinds '{args.kinds}'")
        prompts = [prompts[args.prompt_index]]
    target = Target(args)
    rng = random.Random(args.seed)

    for _ in range(args.warmup):
        r = one_request(target, prompts[0], args.timeout)
        if not r["ok"]:
            raise SystemExit(f"load.py: warm-up request to {args.url} failed: {r['error']}")

    points = [("concurrency", c) for c in parse_list(args.concurrency, int, "--concurrency")] \
        if args.concurrency else []
    points += [("poisson", r) for r in parse_list(args.rates, float, "--rates")] if args.rates else []
    rc = 0
    for mode, v in points:
        saved = args.requests
        if not args.requests and not args.duration:
            args.requests = max(8, 4 * v) if mode == "concurrency" else max(8, int(8 * v))
        # Every point draws the same prompt sequence, so systems see the same workload.
        prng = random.Random(f"{args.seed}-{mode}-{v}")
        before = server_ttft(target) if args.server_metrics else None
        if mode == "concurrency":
            results, wall = run_closed(target, prompts, prng, v, args)
            row, errors = summarize(results, wall, args.label, mode, v, "", args)
        else:
            results, wall = run_poisson(target, prompts, prng, v, args)
            row, errors = summarize(results, wall, args.label, mode, "", v, args)
        args.requests = saved
        # The machine's 1-minute load average at the end of the point, for the record: on a
        # shared machine, other processes' load explains numbers that move.
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        after = server_ttft(target) if args.server_metrics else None
        if before and after and after[1] > before[1]:
            row["server_ttft_mean_ms"] = round((after[0] - before[0]) / (after[1] - before[1])
                                               * 1000.0, 3)
        row["errors"] = errors
        print(json.dumps(row), flush=True)
        for e, n in errors.items():
            print(f"load.py: {n} x {e}", file=sys.stderr)
        if row["requests_failed"]:
            rc = 1
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if args.csv:
            new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
            with open(args.csv, "a", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
                if new:
                    w.writeheader()
                w.writerow(row)
    return rc


if __name__ == "__main__":
    sys.exit(main())
