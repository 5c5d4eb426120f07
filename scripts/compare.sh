#!/usr/bin/env bash
# scripts/compare.sh: compares finished (or unfinished) runs from their log.jsonl alone.
#   scripts/compare.sh [-o PNG] [--csv] [--no-plot] RUN_DIR...
# Prints a markdown table to stdout (run, optimizer, lr, final train and val loss, state bytes and
# B/param, peak MiB, tok/s, steps; --csv: the same as CSV) and draws the loss curves (train loss as lines,
# val loss as points) into PNG (default compare.png; --no-plot: no plot, no gnuplot needed).
# The numbers: scripts/compare.py's docstring. Logs written before the config record existed work, with
# "?" where only the config knows. A missing directory or a log without steps: a message, exit 2.
# Set-up: python3 (standard library), gnuplot-nox for the PNG (scripts/plot_setup.sh says before it
# installs it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
png=compare.png; csv=""; plot=1; dirs=()
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        -o) [ $# -ge 2 ] || { echo "error: -o needs a file name (e.g. -o compare.png)" >&2; exit 2; }; png=$2; shift ;;
        --csv) csv=--csv ;;
        --no-plot) plot=0 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
        *) dirs+=("$1") ;;
    esac
    shift
done
[ ${#dirs[@]} -gt 0 ] || { echo "error: no run directory given; usage:" >&2; usage >&2; exit 2; }
case $png in *.png) ;; *) echo "error: -o $png: the plot is a PNG, give a name ending in .png" >&2; exit 2 ;; esac
if [ $plot = 1 ]; then . "$here/plot_setup.sh"; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/compare.py" $csv --dat "$tmp" "${dirs[@]}"
[ $plot = 1 ] || exit 0

if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then term="pngcairo size 1000,600 font 'sans,10'"
else term="png size 1000,600"; fi
plots=""; i=1
while IFS= read -r name; do
    name=${name//\'/}   # the legend is a quoted gnuplot string
    plots+="'$tmp/$i.dat' using 1:2 with lines lw 2 lc $i title '$name', "
    [ -s "$tmp/$i.val.dat" ] && plots+="'$tmp/$i.val.dat' using 1:2 with points pt 7 ps 1.2 lc $i notitle, "
    i=$((i + 1))
done < "$tmp/names.txt"
mkdir -p "$(dirname "$png")"
gnuplot <<GP
set terminal $term
set linetype 9 lc rgb '#8c564b'; set linetype 10 lc rgb '#e377c2'; set linetype 11 lc rgb '#7f7f7f'
set linetype 12 lc rgb '#bcbd22'; set linetype 13 lc rgb '#17becf'; set linetype cycle 13
set output '$png.tmp'
set title "Loss curves of $((i - 1)) run(s) (lines: train loss per step; dots: val loss)"
set xlabel 'step'; set ylabel 'loss (nats/token)'
set key outside right noenhanced
set grid
plot ${plots%, }
GP
mv "$png.tmp" "$png"
echo "wrote $png" >&2
