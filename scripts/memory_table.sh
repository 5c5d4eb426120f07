#!/usr/bin/env bash
# scripts/memory_table.sh: the article's memory tables, from our exact memory ledger, without training
# and without allocating (the trainer's -memory-only 1): runs in seconds for any model size.
#   scripts/memory_table.sh [-b B] [-t T] [--out DIR] [--train BIN] [--opts "adamw came ..."]
# Prints markdown to stdout and writes DIR (default results/memory)/memory.md, memory_7b.png (where the
# memory of a 7B model goes, per optimizer) and memory_sizes.png (totals by size), plus the ledgers.
#  1. training memory by optimizer for 1B..175B: the article's formula next to our exact bytes
#  2. where the memory goes for 7B   3. state bytes/param, article vs ours   4. 80 GB GPUs for 7B
# Sizes: GPT-3's shapes (Brown et al. 2020, table 2.1) with GPT-2's vocabulary and 1024 positions:
# 1.3B "XL" 24:2048 (16 heads of 128), 6.7B 32:4096:32, 13B 40:5120:40 (GPT-3 uses C=5140, which 40
# heads do not divide; 5120 keeps head size 128), 175B 96:12288:96, and a 70B shape 80:8192:64
# (Llama-2 70B's depth and width). The article's figures: scripts/article_figures.tsv.
# Set-up: python3 (standard library), gnuplot-nox for the PNGs (scripts/plot_setup.sh: it says before
# it installs it, first thing, before any ledger is computed).
set -euo pipefail
cd "$(dirname "$0")/.."
B=1; T=1024; out=results/memory; train=./train_cpu; opts=""
while [ $# -gt 0 ]; do
    case "$1" in
        -b) B=$2; shift ;; -t) T=$2; shift ;;
        --out) out=$2; shift ;; --train) train=$2; shift ;; --opts) opts=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done
command -v python3 >/dev/null 2>&1 || { echo "error: python3 is missing (the tables need it): install python3, then rerun" >&2; exit 2; }
. scripts/plot_setup.sh
rev=$(bash scripts/revision.sh "$out")   # before anything is written: our own outputs do not count as changes
if [ ! -x "$train" ]; then
    echo "building $train (make $(basename "$train"))" >&2
    make -s "$(basename "$train")" >&2 || { echo "error: could not build $train; run 'make $(basename "$train")' and read its errors" >&2; exit 2; }
fi
[ -n "$opts" ] || opts=$($train -opt list | awk 'NR > 1 { print $1 }' | tr '\n' ' ')

mkdir -p "$out/ledger"
cat > "$out/sizes.txt" <<SIZES
# key nominal_params model_spec description
1B 1e9 24:2048:16 GPT-3 XL 1.3B
7B 7e9 32:4096:32 GPT-3 6.7B
13B 13e9 40:5120:40 GPT-3 13B
70B 70e9 80:8192:64 70B, Llama-2-70B depth and width
175B 175e9 96:12288:96 GPT-3 175B
SIZES
echo "$opts" > "$out/opts.txt"
{
    echo "command: $0 -b $B -t $T (each ledger: $train -memory-only 1 -model SHAPE -b $B -t $T -opt OPT)"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git: $rev"
    echo "activations at B=$B, T=$T; precision bf16 with fp32 master weights"
} > "$out/meta.txt"
while read -r key _ spec _; do
    case $key in \#*|"") continue ;; esac
    for o in $opts; do
        $train -memory-only 1 -model "$spec" -b "$B" -t "$T" -opt "$o" > "$out/ledger/${key}__${o}.txt" ||
            { echo "error: '$train -memory-only 1 -model $spec -b $B -t $T -opt $o' failed (see $out/ledger/${key}__${o}.txt)" >&2; exit 2; }
    done
done < "$out/sizes.txt"
python3 scripts/results.py memory "$out" > "$out/memory.md"
bash scripts/plot.sh memory "$out"
cat "$out/memory.md"
echo "wrote $out/memory.md, $out/memory_7b.png, $out/memory_sizes.png" >&2
