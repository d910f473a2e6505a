#!/usr/bin/env bash
# plot.sh - PNGs of a scaling sweep's CSV (sweep.sh) with gnuplot (Debian: gnuplot-nox):
#
#   tests/bench/scaling/plot.sh scaling.csv OUTDIR [--codec f16] [--zstd 0] [--concurrency 16]
#
#   OUTDIR/stages_<model>_c<C>.png   tokens/s vs stages (1-4), one line per profile, for one
#                                    codec, zstd level and concurrency
#   OUTDIR/codecs_<model>.png        tokens/s of every codec and zstd level per profile, at
#                                    the concurrency on 2 stages
# Values are medians over the CSV's rounds; the .dat files beside the PNGs hold them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -ge 2 ]] || { sed -n '2,11p' "$0"; exit 2; }
csv=$1
out=$2
shift 2
codec=f16
zstd=0
conc=16
while [[ $# -gt 0 ]]; do
    case $1 in
    --codec) codec=$2 ;;
    --zstd) zstd=$2 ;;
    --concurrency) conc=$2 ;;
    *) echo "plot.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift 2
done
command -v gnuplot >/dev/null || { echo "plot.sh: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 2; }
mkdir -p "$out"
python3 - "$csv" "$out" "$codec" "$zstd" "$conc" <<'PY' | while read -r kind _ dat what; do
import csv, statistics, sys
path, out, codec, zstd, conc = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
med = {}
for r in rows:
    k = (r["model"], int(r["stages"]), r["profile"], r["codec"], r["zstd"], r["concurrency"])
    med.setdefault(k, []).append(float(r["tok_s"]))
med = {k: statistics.median(v) for k, v in med.items()}
order = ["unshaped", "10gbit", "1gbit", "100mbit", "10mbit"]
def pkey(p):
    rate, _, d = p.partition("+")
    return (order.index(rate) if rate in order else 9, d)
for model in sorted({k[0] for k in med}):
    profs = sorted({k[2] for k in med if k[0] == model}, key=pkey)
    stages = sorted({k[1] for k in med if k[0] == model and k[3] == codec and k[4] == zstd and k[5] == conc})
    if len(stages) > 1:
        ps = [p for p in profs if any((model, s, p, codec, zstd, conc) in med for s in stages)]
        f = "%s/stages_%s_c%s.dat" % (out, model, conc)
        with open(f, "w") as o:
            o.write("stages " + " ".join(ps) + "\n")
            for s in stages:
                o.write("%d " % s + " ".join("%.1f" % med[(model, s, p, codec, zstd, conc)]
                        if (model, s, p, codec, zstd, conc) in med else "-" for p in ps) + "\n")
        print("stages", model, f, "%s,%s%s,%s-seqs" % (model, codec, "+zstd" + zstd if zstd != "0" else "", conc))
    cz = sorted({(k[3], k[4]) for k in med if k[0] == model and k[1] == 2 and k[5] == conc},
                key=lambda x: (["f32", "f16", "bf16", "q8"].index(x[0]), int(x[1])))
    if len(cz) > 1:
        ps = [p for p in profs if any((model, 2, p, c, z, conc) in med for c, z in cz)]
        f = "%s/codecs_%s.dat" % (out, model)
        with open(f, "w") as o:
            o.write("codec " + " ".join(ps) + "\n")
            for c, z in cz:
                o.write(c + ("+zstd" + z if z != "0" else "") + " " + " ".join(
                    "%.1f" % med[(model, 2, p, c, z, conc)] if (model, 2, p, c, z, conc) in med
                    else "-" for p in ps) + "\n")
        print("codecs", model, f, "%s,2-stages,%s-seqs" % (model, conc))
PY
    png=${dat%.dat}.png
    gnuplot -e "dat='$dat'; png='$png'; what='${what//,/ }'" "$here/plot_$kind.gp"
    echo "$png"
done
