#!/usr/bin/env python3
"""predict.py - the pipeline performance model of docs/architecture.md ("Performance model"),
checked against the scaling sweep's measurements and used to project larger pipelines.

    tests/bench/scaling/predict.py scaling.csv [--out predicted.csv] [--project projection.csv]
        [--baton build/coordinator/baton] [--cores 2] [--hop-us 150] [--coord-us 300]

Input: the CSV of sweep.sh (one row per configuration and round). Rows of one configuration
are merged (median tokens/s over rounds).

Calibration (per model, from the measurement itself, nothing fitted to the rows it is
compared with): the 1-stage rows on the unshaped profile give the compute time of the whole
model per micro-batch of r rows, t_full(r) = busy x C / (tok/s x m), where C sequences form m
micro-batches of r rows (the scheduler's rule, micro_batches() below) and busy is the stage's
measured busy fraction. Between the measured r, t_full is interpolated linearly (and
extrapolated from the last two points).

Per stage: t_s(r) = t_full(r) x cost_s / cost_all, with cost = bytes + multiply-adds of the
stage's tensors (the rule of baton's --split compute, coordinator/engine/split.c; the token
embedding is a lookup and costs nothing, the head counts on the last stage), layer ranges from
`baton info --stages S --split compute`.

Links: a hop costs hop_us (the test bed's TCP latency, fixed beforehand: --hop-us) plus the
profile's added delay, plus bytes x 8 / rate. Bytes per micro-batch between stages: the
measured activation bytes per token of the row (act_bytes_per_token, which is the codec's size
plus the frame's per-row fields; zstd's ratio is taken as measured), times r, plus 64 header
bytes. Coordinator <-> stage hops carry ids and samples (~16 bytes per row).

A round (every sequence one token further) takes the largest of
  - each stage's compute over all m micro-batches (a stage works on one at a time),
  - each link's transfer time over all m micro-batches (bandwidth),
  - one micro-batch's way around (compute of every stage + every hop + coord_us), which m
    micro-batches in flight overlap only if they are more than one: round >= cycle of the
    largest micro-batch,
  - all stages' compute over the cores the machine gives them: the hosts of the test bed
    share this machine's 2 vCPUs, which give two busy processes less than twice one's speed
    (CSV.cores from sweep.sh measures it: two 1-stage runs at once against one; the median
    per model is used, else --cores); the projection gives each host its own core,
and tokens/s = C / round.

Projection (--project): a 70B-shaped llama (80 layers, n_embd 8192, n_ff 28672, 64 heads, 8 KV
heads, vocabulary 49152 as synth_model writes, Q4_0 everywhere like synth_model --type q4_0)
over 8 to 64 stages, one core per host, at 1 Gbit/s and 100 Mbit/s, f16 activations (16,386
bytes per row) and f32; hosts as fast as one core here (speed 1) and 32 times faster (a
many-core host with perfect scaling, to show where the links start to count), at 1, 4 x
stages and 16 x stages sequences (2 and 8 rows per micro-batch with 2 x stages in flight;
16 x stages sequences form S micro-batches of 16 rows under the scheduler's 16-row floor,
stop 27: the committed projection in docs/img/scaling/ predates it, --prompt-group 0).
Layers are split by dynamic programming to minimise the largest stage (the head on the last). Compute per layer is scaled from the measured Q4_0 1.1B shape
(tinyllama) by cost units: t_layer70(r) = t_full_tinyllama(r) / cost_all_tinyllama x
cost_layer70, i.e. time per byte streamed + multiply-add as measured at 2048 wide, applied at
8192 wide.
"""
import argparse
import csv
import math
import os
import re
import statistics
import subprocess
import sys

DECODE_GROUP = 4  # common/stage_layout.h BT_DECODE_GROUP
# common/stage_layout.h BT_PROMPT_GROUP; --prompt-group 0 models data measured before the
# scheduler's rule (docs/img/scaling/, stop 26 and earlier).
PROMPT_GROUP = 16
Q_BYTES = {"f32": (4, 1), "f16": (2, 1), "q8_0": (34, 32), "q4_0": (18, 32), "q4_1": (20, 32)}
CODEC_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8": 36.0 / 32.0}
ROW_FIELDS = 10  # bytes per row besides the activations (seq, pos, token), docs/benchmarks.md
FRAME_BYTES = 64
SAMPLE_BYTES = 16
RATES = {"unshaped": None, "10gbit": 10e9, "1gbit": 1e9, "100mbit": 100e6, "10mbit": 10e6}
TCP_OVERHEAD = 1514.0 / 1448.0  # Ethernet + IP + TCP headers per full segment


def micro_batches(c, stages):
    """Row counts of the micro-batches C decoding sequences form (coordinator/engine/
    sched_core.c): at most 2 x stages in flight, the cap rounded up to the decode group above
    one group, never single rows, and never below the prompt group once C >= prompt group x
    stages."""
    m_max = 2 * stages
    cap = -(-c // m_max)
    if cap > DECODE_GROUP:
        cap = -(-cap // DECODE_GROUP) * DECODE_GROUP
    if cap < 2 and c >= 2:
        cap = 2
    if PROMPT_GROUP and c >= PROMPT_GROUP * stages and cap < PROMPT_GROUP:
        cap = PROMPT_GROUP
    sizes = []
    left = c
    while left > 0 and len(sizes) < m_max:
        sizes.append(min(cap, left))
        left -= sizes[-1]
    return sizes


def interp(points, r):
    """Piecewise-linear t(r) through the calibration points [(r, t)], extrapolated."""
    pts = sorted(points)
    if len(pts) == 1:
        return pts[0][1] * r / pts[0][0]
    for (r0, t0), (r1, t1) in zip(pts, pts[1:]):
        if r <= r1:
            return t0 + (t1 - t0) * (r - r0) / (r1 - r0)
    (r0, t0), (r1, t1) = pts[-2], pts[-1]
    return t1 + (t1 - t0) * (r - r1) / (r1 - r0)


def tensor_costs(baton, model):
    """Per-layer and head cost (bytes + multiply-adds) of a GGUF, from `baton info --tensors`."""
    out = subprocess.run([baton, "info", "--model", model, "--tensors"], capture_output=True,
                         text=True, check=True).stdout
    layers, head, tied = {}, 0, "tied output:  yes" in out
    for m in re.finditer(r"^\s+(\S+)\s+\S+\s+\[(\d+), (\d+), (\d+), (\d+)\] (\d+) bytes", out,
                         re.M):
        name = m.group(1)
        cost = int(m.group(6)) + math.prod(int(m.group(i)) for i in range(2, 6))
        lm = re.match(r"blk\.(\d+)\.", name)
        if lm:
            layers[int(lm.group(1))] = layers.get(int(lm.group(1)), 0) + cost
        elif name == "token_embd.weight":
            if tied:
                head += cost
        else:
            head += cost
    return [layers[i] for i in sorted(layers)], head


def baton_split(baton, model, stages):
    """Layer ranges baton plans with --split compute: [(first, last)] per stage."""
    out = subprocess.run([baton, "info", "--model", model, "--stages", str(stages), "--split",
                          "compute", "--stage-mem", ",".join(["64G"] * stages)],
                         capture_output=True, text=True, check=True).stdout
    ranges = [tuple(int(x) for x in m.groups())
              for m in re.finditer(r"^\s+\d+\s+\d+\s+(\d+)-(\d+)\s", out, re.M)]
    if len(ranges) != stages:
        raise SystemExit("predict.py: cannot read the %d-stage split of %s from baton info:\n%s"
                         % (stages, model, out))
    return ranges


def minmax_split(costs, head, stages):
    """Contiguous split of the layers into `stages` parts minimising the largest part's cost
    (the head counts on the last part): dynamic programming over (parts, layers)."""
    n = len(costs)
    pre = [0]
    for c in costs:
        pre.append(pre[-1] + c)
    inf = float("inf")
    # best[k][i]: the least largest cost of splitting layers [0, i) into k parts
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            extra = head if (k == stages and i == n) else 0
            for j in range(k - 1, i):
                v = max(best[k - 1][j], pre[i] - pre[j] + extra)
                if v < best[k][i]:
                    best[k][i], cut[k][i] = v, j
    ranges, i = [], n
    for k in range(stages, 0, -1):
        j = cut[k][i]
        ranges.append((j, i - 1))
        i = j
    return ranges[::-1]


def link_time(nbytes, rate):
    return 0.0 if rate is None else nbytes * 8.0 * TCP_OVERHEAD / rate


def predict(c, stages, stage_frac, t_full, bytes_row, rate, delay_s, hop_s, coord_s, cores):
    """Tokens/s, and the round's binding term, for C sequences on the pipeline."""
    sizes = micro_batches(c, stages)
    t_stage = [[f * t_full(r) for r in sizes] for f in stage_frac]
    busy = [sum(ts) for ts in t_stage]
    act = [FRAME_BYTES + r * bytes_row for r in sizes]
    small = [FRAME_BYTES + r * SAMPLE_BYTES for r in sizes]
    link_busy = max([sum(link_time(a, rate) for a in act)] if stages > 1 else [0.0])
    lat = hop_s + delay_s
    cycles = []
    for j, r in enumerate(sizes):
        hops = (stages + 1) * lat + 2 * link_time(small[j], rate)
        hops += (stages - 1) * link_time(act[j], rate)
        cycles.append(sum(ts[j] for ts in t_stage) + hops + coord_s)
    bounds = {"stage": max(busy), "link": link_busy, "cycle": max(cycles),
              "cores": sum(busy) / cores if cores else 0.0}
    kind = max(bounds, key=bounds.get)
    return c / bounds[kind], kind


def profile_parts(p):
    rate, _, delay = p.partition("+")
    d = 0.0
    if delay.endswith("ms"):
        d = float(delay[:-2]) / 1e3
    elif delay.endswith("us"):
        d = float(delay[:-2]) / 1e6
    return RATES[rate], d


def model_path(name):
    if name == "smol":
        return os.environ.get("BATON_MODEL") or os.path.expanduser(
            "~/.cache/baton/SmolLM2-135M-Instruct.Q4_1.gguf")
    return os.path.join(os.environ.get("BT_SCALING_DIR", "/tmp/bt-scaling"),
                        "tinyllama-1.1b.q4_0.gguf")


def shape_costs(n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, wtype="q4_0"):
    """Cost units of a llama shape as synth_model writes it (every 2-D tensor in wtype)."""
    def t(ne0, ne1):
        b, blk = Q_BYTES[wtype]
        return ne0 * ne1 // blk * b + ne0 * ne1

    kvd = n_embd // n_head * n_head_kv
    layer = (t(n_embd, n_embd) * 2 + t(n_embd, kvd) * 2 + t(n_embd, n_ff) * 2 + t(n_ff, n_embd)
             + 2 * (4 * n_embd + n_embd))
    head = t(n_embd, n_vocab) + 4 * n_embd + n_embd
    return [layer] * n_layer, head


def main():
    global PROMPT_GROUP
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--out", help="CSV of every measured configuration with the prediction")
    ap.add_argument("--project", help="CSV of the 70B-shape projection")
    ap.add_argument("--baton", default=os.environ.get("BATON", "build/coordinator/baton"))
    ap.add_argument("--cores", type=float, default=2.0,
                    help="cores the test bed's hosts share, when CSV.cores does not say")
    ap.add_argument("--hop-us", type=float, default=150.0, help="one-way latency of a hop")
    ap.add_argument("--coord-us", type=float, default=300.0,
                    help="coordinator turnaround per micro-batch")
    ap.add_argument("--prompt-group", type=int, default=PROMPT_GROUP,
                    help="the scheduler's smallest decode micro-batch once every stage can "
                    "have one (0: before stop 27, as docs/img/scaling/ was measured)")
    a = ap.parse_args()
    PROMPT_GROUP = a.prompt_group
    hop_s, coord_s = a.hop_us / 1e6, a.coord_us / 1e6

    rows = list(csv.DictReader(open(a.csv)))
    cores_of = {}
    if os.path.exists(a.csv + ".cores"):
        per = {}
        for r in csv.DictReader(open(a.csv + ".cores")):
            per.setdefault(r["model"], []).append(float(r["cores"]))
        cores_of = {m: statistics.median(v) for m, v in per.items()}
        for m, v in sorted(per.items()):
            print("cores for %s: %s (median %.2f)" % (m, ", ".join("%.2f" % x for x in v),
                                                     cores_of[m]))
    if not rows:
        raise SystemExit("predict.py: %s has no rows" % a.csv)
    key_cols = ["model", "stages", "profile", "codec", "zstd", "concurrency"]
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in key_cols), []).append(r)

    # Calibration per model: t_full(r) from the 1-stage unshaped rows.
    calib, costs, splits = {}, {}, {}
    for model in sorted({r["model"] for r in rows}):
        pts = {}
        for r in rows:
            if r["model"] != model or r["stages"] != "1" or r["profile"] != "unshaped":
                continue
            c = int(r["concurrency"])
            sizes = micro_batches(c, 1)
            busy = float(r["stage_busy"].split(";")[0])
            t = busy * c / (float(r["tok_s"]) * len(sizes))
            pts.setdefault(sizes[0], []).append(t)
        if not pts:
            print("predict.py: no 1-stage unshaped rows for %s: nothing to calibrate with"
                  % model, file=sys.stderr)
            continue
        calib[model] = [(rr, statistics.median(ts)) for rr, ts in pts.items()]
        costs[model] = tensor_costs(a.baton, model_path(model))

    def stage_fracs(model, stages):
        layer, head = costs[model]
        total = sum(layer) + head
        if (model, stages) not in splits:
            splits[(model, stages)] = baton_split(a.baton, model_path(model), stages)
        fr = []
        for s, (b, e) in enumerate(splits[(model, stages)]):
            cst = sum(layer[b:e + 1]) + (head if s == stages - 1 else 0)
            fr.append(cst / total)
        return fr

    out_rows, errs = [], []
    for key, rs in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1]), kv[0][2],
                                                          kv[0][3], kv[0][4], int(kv[0][5]))):
        model, stages, profile, codec, zstd, conc = key
        if model not in calib:
            continue
        stages, conc = int(stages), int(conc)
        meas = statistics.median(float(r["tok_s"]) for r in rs)
        bpt = statistics.median(float(r["act_bytes_per_token"]) for r in rs)
        if stages > 1 and bpt <= 0:
            n_embd = int(rs[0]["n_embd"])
            bpt = CODEC_BYTES[codec] * n_embd + ROW_FIELDS
        rate, delay = profile_parts(profile)
        pts = calib[model]
        pred, kind = predict(conc, stages, stage_fracs(model, stages), lambda r: interp(pts, r),
                             bpt, rate, delay, hop_s, coord_s, cores_of.get(model, a.cores))
        err = (pred - meas) / meas
        # The 1-stage unshaped rows are the calibration: their match is by construction.
        calibration = stages == 1 and profile == "unshaped"
        errs.append((abs(err), calibration))
        spread = ""
        if len(rs) > 1:
            v = [float(r["tok_s"]) for r in rs]
            spread = "%.0f%%" % (100 * (max(v) - min(v)) / statistics.median(v))
        out_rows.append(dict(model=model, stages=stages, profile=profile, codec=codec, zstd=zstd,
                             concurrency=conc, rounds=len(rs), measured_tok_s="%.2f" % meas,
                             predicted_tok_s="%.2f" % pred, error="%+.1f%%" % (100 * err),
                             bound=kind, spread=spread,
                             role="calibration" if calibration else "check"))
    cols = ["model", "stages", "profile", "codec", "zstd", "concurrency", "rounds",
            "measured_tok_s", "predicted_tok_s", "error", "bound", "spread", "role"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for o in out_rows:
        print("| " + " | ".join(str(o[c]) for c in cols) + " |")
    checks = [e for e, cal in errs if not cal]
    if checks:
        within = sum(e <= 0.15 for e in checks)
        print("\n%d configurations checked (and %d of calibration): mean |error| %.1f%%, median "
              "%.1f%%, max %.1f%%; within 15%%: %d (%.0f%%)"
              % (len(checks), len(errs) - len(checks), 100 * statistics.mean(checks),
                 100 * statistics.median(checks), 100 * max(checks), within,
                 100.0 * within / len(checks)))
    if a.out:
        with open(a.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(out_rows)

    if a.project:
        if "tinyllama" not in calib:
            raise SystemExit("predict.py: --project needs the tinyllama 1-stage rows")
        layer_t, head_t = costs["tinyllama"]
        unit = sum(layer_t) + head_t
        layer70, head70 = shape_costs(80, 8192, 28672, 64, 8, 49152)
        total70 = sum(layer70) + head70
        pts = calib["tinyllama"]

        def t_full70(r, speed=1.0):
            return interp(pts, r) / unit * total70 / speed

        proj = []
        for stages in (8, 16, 32, 64):
            ranges = minmax_split(layer70, head70, stages)
            fr = [(sum(layer70[b:e + 1]) + (head70 if s == stages - 1 else 0)) / total70
                  for s, (b, e) in enumerate(ranges)]
            for profile in ("1gbit", "100mbit"):
                rate, _ = profile_parts(profile)
                for codec, speed in (("f16", 1), ("f32", 1), ("f16", 32), ("f32", 32)):
                    bpr = CODEC_BYTES[codec] * 8192 + ROW_FIELDS
                    for conc in (1, 4 * stages, 16 * stages):
                        tps, kind = predict(conc, stages, fr, lambda r: t_full70(r, speed), bpr,
                                            rate, 0.0, hop_s, coord_s, stages)
                        proj.append(dict(stages=stages, profile=profile, codec=codec, speed=speed,
                                         concurrency=conc, tok_s="%.3f" % tps,
                                         ms_per_token_per_seq="%.0f" % (1e3 * conc / tps),
                                         bound=kind, layers_per_stage="%d-%d" % (
                                             min(e - b + 1 for b, e in ranges),
                                             max(e - b + 1 for b, e in ranges))))
        pc = ["stages", "profile", "codec", "speed", "concurrency", "tok_s", "ms_per_token_per_seq",
              "bound", "layers_per_stage"]
        print("\n70B shape: %.1f G cost units per token (%.1fx the 1.1B shape); 1 stage on this "
              "machine's core would take %.1f s per token alone\n"
              % (total70 / 1e9, total70 / unit, t_full70(1)))
        print("| " + " | ".join(pc) + " |")
        print("|" + "---|" * len(pc))
        for p in proj:
            print("| " + " | ".join(str(p[c]) for c in pc) + " |")
        with open(a.project, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=pc)
            w.writeheader()
            w.writerows(proj)


if __name__ == "__main__":
    main()
