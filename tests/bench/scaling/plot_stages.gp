# plot_stages.gp - decode throughput against the number of stages, one line per link profile
# (plot.sh writes the data: median tokens/s over rounds of one codec and concurrency).
#
#   gnuplot -e "dat='stages_smol_c16.dat'; png='stages_smol_c16.png'; what='SmolLM2, f16, 16 seqs'" plot_stages.gp
#
# dat: whitespace-separated, a header line naming the profiles, then "stages tok/s..." rows
# ("-" where not measured). The machine has 2 cores: beyond 2 stages the lines measure the
# links and overheads, not more compute.
if (!exists("dat")) dat = "stages.dat"
if (!exists("png")) png = "stages.png"
if (!exists("what")) what = ""
set terminal pngcairo size 800,500 font ",11" noenhanced
set output png
set datafile missing "-"
set key top left box opaque
set grid
set xlabel "stages (one host each; 2 cores in all: compute gains end at 2)"
set ylabel "decode tokens/s"
set xtics 1
set yrange [0:*]
set title "throughput vs stages per link profile: " . what
n = system("head -1 " . dat . " | wc -w") + 0
plot for [i = 2:n] dat using 1:i with linespoints lw 2 pt 7 title columnhead(i)
