# plot_load.gp - PNGs from tests/bench/load.py's CSV: one line per system (--label).
#
#   gnuplot -e "csv='load.csv'; labels='baton-1stage baton-2stages llama-server'; \
#               outdir='docs/img'" tests/bench/plot_load.gp
#
# Writes, from the concurrency-sweep rows (mode "concurrency"):
#   OUTDIR/load_tokps.png      output tokens/s against concurrent clients
#   OUTDIR/load_ttft_p99.png   p99 time to first token (ms) against concurrent clients
# and, when the CSV has Poisson rows (mode "poisson"):
#   OUTDIR/load_poisson_ttft_p99.png   p99 TTFT against the arrival rate
# Columns (load.py's CSV_FIELDS): 1 label, 2 mode, 3 concurrency, 4 rate, 9 output_tok_s,
# 12 ttft_p99_ms. Rows of one label at the same x (several rounds) are averaged (smooth unique).
if (!exists("csv")) csv = "load.csv"
if (!exists("outdir")) outdir = "."
if (!exists("labels")) labels = "baton llama-server"
if (!exists("title")) title = ""

set datafile separator ","
set terminal pngcairo size 900,560 font ",11" noenhanced
set key top left Left reverse box opaque width 1
set grid
set logscale x 2
set xlabel "concurrent clients (closed loop)"
set style data linespoints

# The rows of label L in mode M (read through grep: with rows of other labels in between,
# gnuplot would break the line at every skipped row).
rows(l, m) = "< grep '^" . l . "," . m . ",' " . csv

set output outdir . "/load_tokps.png"
set title "output tokens/s" . title
set ylabel "output tokens/s"
set yrange [0:*]
plot for [l in labels] rows(l, "concurrency") using 3:9 smooth unique with linespoints title l lw 2 pt 7

set output outdir . "/load_ttft_p99.png"
set title "p99 time to first token" . title
set ylabel "p99 TTFT (ms)"
set logscale y 10
set yrange [*:*]
plot for [l in labels] rows(l, "concurrency") using 3:12 smooth unique with linespoints title l lw 2 pt 7

stats csv using (strcol(2) eq "poisson" ? 1 : 0) skip 1 nooutput
if (STATS_sum > 0) {
    set output outdir . "/load_poisson_ttft_p99.png"
    set title "p99 time to first token, Poisson arrivals" . title
    set xlabel "arrival rate (requests/s)"
    set ylabel "p99 TTFT (ms)"
    plot for [l in labels] rows(l, "poisson") using 4:12 smooth unique with linespoints title l lw 2 pt 7
}
