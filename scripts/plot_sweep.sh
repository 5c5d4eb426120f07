#!/usr/bin/env bash
# scripts/plot_sweep.sh DIR [TITLE]: DIR/loss.png, the loss curves of one table of scripts/loss_table.sh,
# one panel per optimizer family (DIR/plot/panels.txt, written by scripts/results.py: "title|key=label
# ..."), each optimizer at its best learning rate with the sweep's seed: lines the EMA (0.9) of the train
# loss, dots the val loss; AdamW, the reference, dashed grey in every panel.
# Set-up: gnuplot-nox (scripts/plot_setup.sh installs it when run as root, else says what to run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/plot_setup.sh
d=${1:?usage: scripts/plot_sweep.sh DIR [TITLE]}
title=${2:-$(basename "$d")}
[ -s "$d/plot/panels.txt" ] || { echo "plot_sweep.sh: no curves in $d yet" >&2; exit 0; }

if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then term="pngcairo font 'sans,9'"; else term="png"; fi
n=$(wc -l < "$d/plot/panels.txt")
cols=$(( n < 3 ? n : 3 )); rows=$(( (n + cols - 1) / cols ))

# y range: the lowest EMA at the bottom; at the top the highest EMA after the first 10% of the steps (the
# first steps, near ln(50257) = 10.8, would squash everything else)
curves=()
for f in "$d"/plot/*.dat; do case $f in *.val.dat) ;; *) curves+=("$f") ;; esac; done
lo=$(awk '$3 == $3 + 0 { print $3 }' "${curves[@]}" | sort -g | head -n 1)
top=$(for f in "${curves[@]}"; do awk '{ e[NR] = $3 } END { print e[int(NR / 10) + 1] }' "$f"; done | sort -g | tail -n 1)
range="*:*"
if [ -n "$lo" ] && [ -n "$top" ]; then range=$(awk -v lo="$lo" -v hi="$top" 'BEGIN { m = (hi - lo) * 0.05 + 0.01; printf "%.3f:%.3f", lo - m, hi + m }'); fi

{
    echo "set terminal $term size $((cols * 460)),$((rows * 330 + 40))"
    echo "set output '$d/loss.png'"
    echo "set multiplot layout $rows,$cols title \"${title//\"/}\" noenhanced"
    echo "set grid; set key top right noenhanced; set xlabel 'step'; set ylabel 'loss'"
    echo "set yrange [$range]"
    echo "set linetype 1 lc rgb '#1f77b4'; set linetype 2 lc rgb '#d62728'; set linetype 3 lc rgb '#2ca02c'; set linetype 4 lc rgb '#9467bd'"
    while IFS='|' read -r ptitle keys; do
        plots=""; i=1
        for kv in $keys; do
            k=${kv%%=*}; label=${kv#*=}; label=${label//_/ }
            if [ "$k" = adamw ] && [ "$keys" != "adamw=adamw" ]; then style="lw 1.5 dt 2 lc rgb '#777777'"; c="rgb '#777777'"
            else style="lw 2 lc $i"; c="$i"; i=$((i + 1)); fi
            plots+="'$d/plot/$k.dat' using 1:3 with lines $style title '$label', "
            [ -s "$d/plot/$k.val.dat" ] && plots+="'$d/plot/$k.val.dat' using 1:2 with points pt 7 ps 0.8 lc $c notitle, "
        done
        echo "set title '$ptitle' noenhanced"
        echo "plot ${plots%, }"
    done < "$d/plot/panels.txt"
    echo "unset multiplot"
} > "$d/plot/loss.gp"
gnuplot "$d/plot/loss.gp"
