# plot_compare.gp - compare_llamacpp.sh's summary.csv drawn: decode tokens/s of baton and
# llama.cpp against the number of concurrent streams, and against the context depth (one line
# per engine and KV cache type); prompt tokens/s against the prompt's length.
#
#   gnuplot -e "summary='DIR/summary.csv'; outdir='DIR'; plots='conc depth prompt'" \
#       tests/bench/plot_compare.gp
#
# plots names the PNGs to draw (those whose workloads were measured).
#
# Columns of summary.csv: 1 model, 2 workload, 3 x, 4 kv, 5 baton_tok_s, 6 llamacpp_tok_s.
if (!exists("summary")) summary = "summary.csv"
if (!exists("outdir")) outdir = "."
if (!exists("plots")) plots = "conc depth"

set datafile separator ","
set terminal pngcairo size 900,520 font ",11" noenhanced
set grid
set key top left box opaque
set yrange [0:*]
set pointsize 1.3
set ylabel "generated tokens/s"
rows(w) = "< awk -F, '$2 == \"" . w . "\"' " . summary
rows_kv(w, kv) = "< awk -F, '$2 == \"" . w . "\" && $4 == \"" . kv . "\"' " . summary

if (strstrt(plots, "conc")) {
    set output outdir . "/tokps_concurrency.png"
    set title "Decode throughput against concurrent streams (128 tokens each, 1-token prompts)"
    set xlabel "concurrent streams"
    set logscale x 2
    plot rows("conc") using 3:5 with linespoints lw 2 pt 7 title "baton", \
         rows("conc") using 3:6 with linespoints lw 2 pt 5 dt 2 title "llama.cpp (flash attention)"
}

if (strstrt(plots, "depth")) {
    set output outdir . "/tokps_depth.png"
    set title "Decode of one stream against context depth (64 tokens after D tokens of context)"
    set xlabel "context depth (tokens)"
    unset logscale x
    set key top right
    set xrange [0:*]
    plot rows_kv("depth", "f16") using 3:5 with linespoints lw 2 pt 7 title "baton, f16 KV", \
         rows_kv("depth", "f16") using 3:6 with linespoints lw 2 pt 5 dt 2 title "llama.cpp, f16 KV", \
         rows_kv("depth", "q8_0") using 3:5 with linespoints lw 2 pt 9 title "baton, q8_0 KV", \
         rows_kv("depth", "q8_0") using 3:6 with linespoints lw 2 pt 11 dt 2 title "llama.cpp, q8_0 KV"
}

if (strstrt(plots, "prompt")) {
    set output outdir . "/tokps_prompt.png"
    set title "Prompt processing against prompt length (one prompt from an empty cache)"
    set xlabel "prompt tokens"
    set ylabel "prompt tokens/s"
    unset logscale x
    set key top right
    set xrange [0:*]
    plot rows("prompt") using 3:5 with linespoints lw 2 pt 7 title "baton", \
         rows("prompt") using 3:6 with linespoints lw 2 pt 5 dt 2 title "llama.cpp (flash attention)"
}
