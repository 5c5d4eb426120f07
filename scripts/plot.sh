#!/usr/bin/env bash
# scripts/plot.sh: the PNGs of the result tables, drawn by gnuplot from the .dat files that
# scripts/results.py writes under DIR/plot/.
#   scripts/plot.sh loss DIR     DIR/loss.png (small multiples: one panel per optimizer family, AdamW
#                                dashed in every panel as the common reference; EMA of the train loss as
#                                lines, val loss as points, one y scale for all panels) and DIR/memory.png
#                                (peak memory per optimizer as bars, the optimizer-state part beside it)
#   scripts/plot.sh memory DIR   DIR/memory_7b.png (where the memory of the 7B shape goes, per optimizer:
#                                stacked bars) and DIR/memory_sizes.png (total per model size)
# loss reads DIR/plot/memory.dat, DIR/plot/OPT.dat, OPT.val.dat and DIR/meta.txt (scripts/loss_table.sh
# writes them); memory reads DIR/plot/memory_7b.dat and memory_sizes.dat (scripts/memory_table.sh).
# Anything missing: a message saying which file and what writes it, exit 2. The subtitles come from
# meta.txt's run description and git line, never from a file path.
# Set-up: gnuplot-nox (scripts/plot_setup.sh says before it installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/plot.sh loss|memory DIR"
mode=${1:-}; d=${2:-}
[ -n "$mode" ] && [ -n "$d" ] || { echo "error: $usage" >&2; exit 2; }
case $mode in loss|memory) ;; *) echo "error: unknown mode '$mode' ($usage)" >&2; exit 2 ;; esac
[ -d "$d" ] || { echo "error: $d is not a directory ($usage)" >&2; exit 2; }

# need FILE WRITER: a readable, non-empty FILE, or a message naming what writes it
need() {
    [ -s "$1" ] && return 0
    echo "error: $1 is missing or empty; it is written by $2: run that first (plot.sh only draws)" >&2
    exit 2
}
if [ "$mode" = loss ]; then
    need "$d/meta.txt" "scripts/loss_table.sh (the run description for the subtitle)"
    need "$d/plot/memory.dat" "scripts/loss_table.sh (through scripts/results.py loss $d)"
else
    need "$d/plot/memory_7b.dat" "scripts/memory_table.sh (through scripts/results.py memory $d)"
    need "$d/plot/memory_sizes.dat" "scripts/memory_table.sh (through scripts/results.py memory $d)"
fi
. scripts/plot_setup.sh

# pngcairo when gnuplot has it (antialiased), else the plain png terminal
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then PNGCAIRO=1; else PNGCAIRO=0; fi
term() { # term W H
    if [ $PNGCAIRO = 1 ]; then echo "pngcairo size $1,$2 font 'sans,10'"; else echo "png size $1,$2"; fi
}

# gnuplot's default palette repeats after 8 line types; 20 distinct colours (every optimizer its own)
COLOURS="set linetype 9 lc rgb '#8c564b'; set linetype 10 lc rgb '#e377c2'; set linetype 11 lc rgb '#7f7f7f';
set linetype 12 lc rgb '#bcbd22'; set linetype 13 lc rgb '#17becf'; set linetype 14 lc rgb '#393b79';
set linetype 15 lc rgb '#637939'; set linetype 16 lc rgb '#7fff00'; set linetype 17 lc rgb '#7b4173';
set linetype 18 lc rgb '#ff00ff'; set linetype 19 lc rgb '#31a354'; set linetype 20 lc rgb '#fd8d3c'; set linetype cycle 20"

# The subtitle: meta.txt's run description without the trainer's path (often a temporary copy), and
# its git line. Enhanced text: a bare _ would make a subscript.
subtitle() {
    local desc git
    desc=$(sed -n 's/^trainer: [^;]*; *//p' "$d/meta.txt" | head -n1 || true)
    git=$(sed -n 's/^\(.*; \)\{0,1\}git: //p' "$d/meta.txt" | head -n1 || true)
    local s="${desc}${git:+; git $git}"
    echo "${s//_/\\\\_}"
}

# family OPT: the panel an optimizer goes in (an optimizer added later lands in "other")
family() {
    case $1 in
        adam|adamw|adam_mini) echo "1 Adam, AdamW, Adam-mini" ;;
        sgd*|lomo|lion*) echo "3 sign and SGD (any precision)" ;;
        *8bit*|*4bit*) echo "2 quantized Adam (8-bit, 4-bit moments)" ;;
        adafactor|came|adalomo) echo "4 factored second moment" ;;
        galore*|muon*) echo "5 low-rank and orthogonalized" ;;
        sophia*) echo "6 second order" ;;
        *) echo "7 other" ;;
    esac
}

# plot_loss_panels DIR OUT.png: the small multiples (scripts/loss_table.sh's loss.png)
plot_loss_panels() {
    local dir=$1 png=$2 sub o f
    local opts; opts=$(awk 'NR > 1 { print $1 }' "$dir/plot/memory.dat")
    # one y range for every panel: the EMA and val points from step max/10 on (the first steps' ~10.8
    # nats would flatten everything else; they are clipped, said in the title)
    local range; range=$(for o in $opts; do
        [ -s "$dir/plot/$o.dat" ] && awk '{ print $1, $3 }' "$dir/plot/$o.dat"
        [ -s "$dir/plot/$o.val.dat" ] && awk '{ print $1, $2 }' "$dir/plot/$o.val.dat"
    done | awk '{ s[NR] = $1; y[NR] = $2; if ($1 > m) m = $1 }
               END { lo = 1e30; hi = -1e30; for (i = 1; i <= NR; i++) if (s[i] >= m / 10) { if (y[i] < lo) lo = y[i]; if (y[i] > hi) hi = y[i] }
                     if (NR == 0) { lo = 0; hi = 1 } pad = (hi - lo) * 0.05 + 1e-3; printf "%g:%g", lo - pad, hi + pad }')
    local fams; fams=$(for o in $opts; do family "$o"; done | sort -u)
    local n; n=$(echo "$fams" | grep -c .)
    local cols=3; [ "$n" -le 4 ] && cols=2
    local rows=$(( (n + cols - 1) / cols ))
    sub=$(subtitle)
    {
        echo "set terminal $(term $((cols * 520)) $((rows * 380 + 70)))"
        echo "$COLOURS"
        echo "set output '$png'"
        echo "set multiplot layout $rows,$cols title \"Training loss by optimizer family (lines: EMA 0.9 of the train loss; dots: val loss; dashed: adamw in every panel)\\n{/*0.8 $sub; y axis clipped to the range after step max/10}\""
        echo "set grid; set key top right noenhanced; set yrange [$range]; set xlabel 'step'; set ylabel 'loss (nats/token)'"
        local i=1
        while IFS= read -r fam; do
            local plots="" c=1
            for o in $opts; do
                [ "$(family "$o")" = "$fam" ] && [ -s "$dir/plot/$o.dat" ] || continue
                plots+="'$dir/plot/$o.dat' using 1:3 with lines lw 2 lc $c title '$o', "
                [ -s "$dir/plot/$o.val.dat" ] && plots+="'$dir/plot/$o.val.dat' using 1:2 with points pt 7 ps 1 lc $c notitle, "
                c=$((c + 1))
            done
            if [ -s "$dir/plot/adamw.dat" ] && [ "$(family adamw)" != "$fam" ]; then
                plots+="'$dir/plot/adamw.dat' using 1:3 with lines lw 1.5 dt 2 lc rgb '#555555' title 'adamw', "
            fi
            [ -n "$plots" ] || plots="NaN notitle, "
            echo "set title '${fam#* }' noenhanced"
            echo "plot ${plots%, }"
            i=$((i + 1))
        done <<< "$fams"
        echo "unset multiplot"
    } | gnuplot
}

# plot_memory_bars DIR OUT.png: peak memory and optimizer state per optimizer
plot_memory_bars() {
    local dir=$1 png=$2 sub; sub=$(subtitle)
    local n; n=$(awk 'NR > 1' "$dir/plot/memory.dat" | wc -l)
    gnuplot <<GP
set terminal $(term 1000 640)
set output '$png'
set title "Peak memory per optimizer (ledger high-water mark)\n{/*0.8 $sub}"
set ylabel 'MiB'
set style fill solid 0.8 border -1
# bars at x = 0..n-1 (boxes at explicit positions: every label under its pair, nothing past the edges);
# labels rotated about their right end hang down-left from their tick and never leave the canvas
set xtics rotate by 35 right noenhanced
set xrange [-0.6:$n - 0.4]
set bmargin 7
set offsets 0, 0, graph 0.1, 0
set grid ytics
set key top left noenhanced
set yrange [0:*]
plot '$dir/plot/memory.dat' skip 1 using (\$0 - 0.2):2:(0.38):xtic(1) with boxes title 'peak (all categories)' lc rgb '#4a7ebb', \
     '' skip 1 using (\$0 + 0.2):3:(0.38) with boxes title 'optimizer state' lc rgb '#d9541e'
GP
}

case $mode in
loss)
    plot_loss_panels "$d" "$d/loss.png"
    plot_memory_bars "$d" "$d/memory.png"
    ;;
memory)
    gnuplot <<GP
set terminal $(term 1000 640)
$COLOURS
set output '$d/memory_7b.png'
set title "Where the memory goes: the 7B shape (GPT-3 6.7B, 32:4096:32), bf16 + fp32 master, per optimizer\n{/*0.8 exact ledger bytes; activations of the CPU trainer at the stated B, T}"
set ylabel 'GB (10^9 bytes)'
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.75
set xtics rotate by 35 right noenhanced
set bmargin 7
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
set terminal $(term 1000 640)
$COLOURS
set output '$d/memory_sizes.png'
set title "Training memory (params + master + grads + optimizer state) by model size\n{/*0.8 exact ledger bytes for GPT shapes; log scale}"
set ylabel 'GB (10^9 bytes)'
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set xtics rotate by 35 right noenhanced
set bmargin 7
set grid ytics
set key outside right noenhanced
plot for [c=2:$ncol] '$d/plot/memory_sizes.dat' using c:xtic(1) title columnheader(c) lc (c-1)
GP
    ;;
esac
