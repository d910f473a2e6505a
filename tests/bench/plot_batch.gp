# plot_batch.gp - a bar chart from batch_compare.sh's CSV: generated tokens/s per system, one
# bar per round side by side.
#
#   gnuplot -e "csv='docs/img/batch_throughput.csv'; outdir='docs/img'; rounds=2" \
#       tests/bench/plot_batch.gp
#
# Writes OUTDIR/batch_tokps.png. Columns (batch_compare.sh's CSV): 1 label, 2 round,
# 8 gen_tok_s. Systems are placed in the order of `systems` (labels as in the CSV); rows of
# rounds above `rounds` are left out.
if (!exists("csv")) csv = "batch.csv"
if (!exists("outdir")) outdir = "."
if (!exists("rounds")) rounds = 2
if (!exists("systems")) systems = "baton-1stage-sync baton-1stage-nosync baton-2stages-sync baton-2stages-nosync llama-server-p64 llama-server-p16"

set datafile separator ","
set terminal pngcairo size 900,520 font ",11" noenhanced
set output outdir . "/batch_tokps.png"
set grid ytics
set key top right box opaque
set ylabel "generated tokens/s (1,000 requests x 16 tokens)"
set yrange [0:*]
set style fill solid 0.8 border -1
set boxwidth 0.8 / rounds
n = words(systems)
set xrange [0.4:n + 0.6]
set xtics rotate by -20 left
set for [i = 1:n] xtics add (word(systems, i) i)
# the position of label l in systems (0 when absent: off the plot)
idx(l) = strstrt(" " . systems . " ", " " . l . " ") ? \
    words(substr(" " . systems . " ", 1, strstrt(" " . systems . " ", " " . l . " "))) + 1 : 0
x(l, r) = idx(l) + (r - (rounds + 1) / 2.0) * 0.8 / rounds
plot for [r = 1:rounds] "< grep -v '^label' " . csv . " | awk -F, '$2 == " . r . "'" \
    using (x(strcol(1), r)):8 with boxes title sprintf("round %d", r)
