#!/usr/bin/env bash
# scripts/plot.sh: the PNGs of the result tables, drawn by gnuplot from the .dat files that
# scripts/results.py writes under DIR/plot/.
#   scripts/plot.sh loss DIR     DIR/loss.png (every optimizer's loss curve on one chart: EMA of the
#                                train loss as lines, val loss as points) and DIR/memory.png (peak
#                                memory per optimizer as bars, the optimizer-state part shaded)
#   scripts/plot.sh memory DIR   DIR/memory_7b.png (where the memory of a 7B model goes, per optimizer:
#                                stacked bars) and DIR/memory_sizes.png (total per model size)
# Set-up: gnuplot-nox (see scripts/plot_setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/plot_setup.sh
mode=${1:?usage: scripts/plot.sh loss|memory DIR}; d=${2:?usage: scripts/plot.sh loss|memory DIR}

# pngcairo when gnuplot has it (antialiased), else the plain png terminal
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then TERM_PNG="pngcairo size 1000,600 font 'sans,10'"
else TERM_PNG="png size 1000,600"; fi

# gnuplot's default palette repeats after 8 line types; 16 distinct colours for 13+ optimizers
COLOURS="set linetype 9 lc rgb '#8c564b'; set linetype 10 lc rgb '#e377c2'; set linetype 11 lc rgb '#7f7f7f';
set linetype 12 lc rgb '#bcbd22'; set linetype 13 lc rgb '#17becf'; set linetype 14 lc rgb '#393b79';
set linetype 15 lc rgb '#637939'; set linetype 16 lc rgb '#843c39'; set linetype cycle 16"

case $mode in
loss)
    opts=$(awk 'NR > 1 { print $1 }' "$d/plot/memory.dat")
    title=$(sed -n 's/^trainer: //p' "$d/meta.txt" 2>/dev/null | head -n1)
    title=${title//_/\\\\_}   # enhanced text: a bare _ would make a subscript
    plots=""; i=1
    for o in $opts; do
        [ -s "$d/plot/$o.dat" ] || continue
        plots+="'$d/plot/$o.dat' using 1:3 with lines lw 2 lc $i title '$o', "
        [ -s "$d/plot/$o.val.dat" ] && plots+="'$d/plot/$o.val.dat' using 1:2 with points pt 7 ps 1 lc $i notitle, "
        i=$((i + 1))
    done
    gnuplot <<GP
set terminal $TERM_PNG
$COLOURS
set output '$d/loss.png'
set title "Training loss, every optimizer (lines: EMA 0.9 of train loss; dots: val loss)\n{/*0.8 $title}"
set xlabel 'step'; set ylabel 'loss (nats/token)'
set key outside right noenhanced
set grid
plot ${plots%, }
GP
    gnuplot <<GP
set terminal $TERM_PNG
$COLOURS
set output '$d/memory.png'
set title "Peak memory per optimizer (ledger high-water mark)\n{/*0.8 $title}"
set ylabel 'MiB'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set xtics rotate by -35 noenhanced
set offsets graph 0, graph 0, graph 0.06, 0
set grid ytics
set key top right noenhanced
set yrange [0:*]
plot '$d/plot/memory.dat' using 2:xtic(1) title 'peak (all categories)' lc rgb '#4a7ebb', \
     '' using 3 title 'optimizer state' lc rgb '#d9541e'
GP
    ;;
memory)
    gnuplot <<GP
set terminal $TERM_PNG
$COLOURS
set output '$d/memory_7b.png'
set title "Where the memory goes: GPT 6.7B shape (L32 C4096), bf16 + fp32 master, per optimizer\n{/*0.8 exact ledger bytes; activations of the CPU trainer at the stated B, T}"
set ylabel 'GB (10^9 bytes)'
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.75
set xtics rotate by -35 noenhanced
set offsets graph 0, graph 0, graph 0.06, 0
set grid ytics
set key outside right noenhanced
set yrange [0:*]
plot '$d/plot/memory_7b.dat' using 2:xtic(1) title columnheader(2), \
     '' using 3 title columnheader(3), '' using 4 title columnheader(4), \
     '' using 5 title columnheader(5), '' using 6 title columnheader(6), \
     80 with lines lw 2 dt 2 lc rgb 'black' title '80 GB'
GP
    ncol=$(head -n1 "$d/plot/memory_sizes.dat" | wc -w)
    gnuplot <<GP
set terminal $TERM_PNG
$COLOURS
set output '$d/memory_sizes.png'
set title "Training memory (params + master + grads + optimizer state) by model size\n{/*0.8 exact ledger bytes for GPT shapes; log scale}"
set ylabel 'GB (10^9 bytes)'
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set xtics rotate by -35 noenhanced
set grid ytics
set key outside right noenhanced
plot for [c=2:$ncol] '$d/plot/memory_sizes.dat' using c:xtic(1) title columnheader(c) lc (c-1)
GP
    ;;
*) echo "error: unknown mode '$mode' (loss or memory)" >&2; exit 2 ;;
esac
