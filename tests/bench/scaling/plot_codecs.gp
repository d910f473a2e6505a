# plot_codecs.gp - decode throughput of each activation codec (with and without zstd) on each
# link profile, at one concurrency and stage count (plot.sh writes the data).
#
#   gnuplot -e "dat='codecs_tinyllama.dat'; png='codecs_tinyllama.png'; what='1.1B shape'" plot_codecs.gp
#
# dat: whitespace-separated, a header "codec PROFILE...", then one row per codec ("f16+zstd1"),
# "-" where not measured.
if (!exists("dat")) dat = "codecs.dat"
if (!exists("png")) png = "codecs.png"
if (!exists("what")) what = ""
set terminal pngcairo size 1000,520 font ",11" noenhanced
set output png
set datafile missing "-"
set key outside right top box opaque
set grid ytics
set ylabel "decode tokens/s"
set yrange [0:*]
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -20 left
set title "codec x link profile: " . what
n = system("head -1 " . dat . " | wc -w") + 0
plot for [i = 2:n] dat using i:xtic(1) title columnhead(i)
