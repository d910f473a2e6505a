#!/usr/bin/env python3
"""Helpers of batch_compare.sh (standard library only). Three subcommands:

  make     writes an OpenAI batch file of N completions drawn (seeded) from prompts.json:
           temperature 0, a fixed max_tokens, ignore_eos, so every request generates exactly
           max_tokens tokens on every system
             batch_bench.py make --requests 1000 --max-tokens 32 --kinds short,medium \\
                 --seed 1 --out in.jsonl
  client   feeds the bodies of such a file to an OpenAI-compatible server (llama-server) with
           P concurrent workers, POST /v1/completions, not streamed; counts the answers'
           usage.prompt_tokens and usage.completion_tokens; wall time is first send to last
           answer. Prints one JSON object (the same fields as `baton`).
             batch_bench.py client --url http://127.0.0.1:18080 --input in.jsonl --workers 64
  baton    reads baton batch's stderr (its summary lines start with "baton batch:") and the
           output file, prints one JSON object:
             batch_bench.py baton --log stderr.log --output out.jsonl
"""

import argparse
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


def cmd_make(a):
    with open(a.prompts) as f:
        kinds = set(a.kinds.split(","))
        prompts = [p["prompt"] for p in json.load(f)["prompts"] if p["kind"] in kinds]
    if not prompts:
        raise SystemExit(f"batch_bench: no prompts of kinds '{a.kinds}' in {a.prompts}")
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for i in range(a.requests):
            body = {"prompt": rng.choice(prompts), "max_tokens": a.max_tokens,
                    "temperature": 0, "ignore_eos": True}
            f.write(json.dumps({"custom_id": f"req-{i}", "method": "POST",
                                "url": "/v1/completions", "body": body}) + "\n")


def cmd_client(a):
    u = urllib.parse.urlparse(a.url)
    if u.scheme != "http" or not u.hostname:
        raise SystemExit(f"batch_bench: --url must be http://HOST[:PORT], not '{a.url}'")
    jobs = []
    with open(a.input) as f:
        for line in f:
            if line.strip():
                e = json.loads(line)
                jobs.append((e["custom_id"], e["url"], json.dumps(e["body"]).encode()))
    lock = threading.Lock()
    nxt = [0]
    res = {"ok": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0}
    errors = []
    t_last = [0.0]

    def worker():
        conn = None
        while True:
            with lock:
                if nxt[0] >= len(jobs):
                    break
                cid, path, data = jobs[nxt[0]]
                nxt[0] += 1
            err, usage = None, None
            for attempt in range(2):  # one retry on a dropped keep-alive connection
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(u.hostname, u.port or 80,
                                                          timeout=a.timeout)
                    conn.request("POST", path, body=data,
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    body = r.read()
                    if r.status != 200:
                        err = f"{cid}: HTTP {r.status}: {body[:300].decode(errors='replace')}"
                    else:
                        usage = json.loads(body).get("usage") or {}
                    break
                except (OSError, http.client.HTTPException) as ex:
                    if conn is not None:
                        conn.close()
                    conn = None
                    err = f"{cid}: {type(ex).__name__}: {ex}"
            now = time.perf_counter()
            with lock:
                t_last[0] = max(t_last[0], now)
                if usage is not None:
                    res["ok"] += 1
                    res["prompt_tokens"] += usage.get("prompt_tokens") or 0
                    res["completion_tokens"] += usage.get("completion_tokens") or 0
                else:
                    res["failed"] += 1
                    errors.append(err)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors[:20]:
        print("batch_bench: " + e, file=sys.stderr)
    res["wall_s"] = round(t_last[0] - t0, 3)
    res["requests"] = len(jobs)
    print(json.dumps(res))
    return 1 if res["failed"] else 0


def cmd_baton(a):
    with open(a.log, errors="replace") as f:
        log = f.read()
    res = {}
    m = re.search(r"baton batch: (\d+) of (\d+) requests have a line: (\d+) ok, (\d+) refused; "
                  r"this run: (\d+) lines \((\d+) ok\) in ([\d.]+) s", log)
    if not m:
        print("batch_bench: no summary line in " + a.log, file=sys.stderr)
        return 1
    res["requests"] = int(m.group(2))
    res["ok"] = int(m.group(6))
    res["failed"] = int(m.group(5)) - int(m.group(6))
    res["wall_s"] = float(m.group(7))
    m = re.search(r"baton batch: tokens: (\d+) prompt, (\d+) generated", log)
    res["prompt_tokens"], res["completion_tokens"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"baton batch: pipeline: stage busy ([\d.%, ]+) of the run.*?; (\d+) fdatasync",
                  log)
    res["stage_busy_pct"] = [float(x) for x in re.findall(r"([\d.]+)%", m.group(1))]
    # With --no-sync the summary still counts the points where it would have synced (the
    # writer calls bt_batch_output_sync, which then does nothing): report 0 calls and keep the
    # count as sync_points.
    res["sync_points"] = int(m.group(2))
    res["fdatasyncs"] = 0 if a.no_sync else int(m.group(2))
    m = re.search(r"baton batch: TTFT p50 ([\d.]+) ms.*?TPOT p50 ([\d.]+) ms", log)
    if m:
        res["ttft_p50_ms"], res["tpot_p50_ms"] = float(m.group(1)), float(m.group(2))
    # the output file itself: one line per request, each a 200 with max_tokens tokens
    lines, ok200, gen = 0, 0, 0
    with open(a.output) as f:
        for line in f:
            r = json.loads(line)
            lines += 1
            if r["response"] and r["response"]["status_code"] == 200:
                ok200 += 1
                gen += r["response"]["body"]["usage"]["completion_tokens"]
    res["output_lines"], res["output_ok"], res["output_completion_tokens"] = lines, ok200, gen
    print(json.dumps(res))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--kinds", default="short,medium")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--prompts", default=os.path.join(HERE, "prompts.json"))
    p.add_argument("--out", required=True)
    p = sub.add_parser("client")
    p.add_argument("--url", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--timeout", type=float, default=600)
    p = sub.add_parser("baton")
    p.add_argument("--log", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--no-sync", action="store_true", help="the run had --no-sync")
    a = ap.parse_args()
    return {"make": cmd_make, "client": cmd_client, "baton": cmd_baton}[a.cmd](a) or 0


if __name__ == "__main__":
    sys.exit(main())
