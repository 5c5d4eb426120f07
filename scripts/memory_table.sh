#!/usr/bin/env bash
# scripts/memory_table.sh: the article's memory tables, from our exact memory ledger, without training
# and without allocating (the trainer's -memory-only 1): runs in seconds for any model size.
#   scripts/memory_table.sh [-b B] [-t T] [--out DIR] [--train BIN] [--opts "adamw came ..."]
# Prints markdown to stdout and writes DIR (default results/memory)/memory.md, memory_7b.png (where the
# memory of a 7B model goes, per optimizer) and memory_sizes.png (totals by size), plus the ledgers.
#  1. training memory by optimizer for 1B..175B: the article's formula next to our exact bytes
#  2. where the memory goes for 7B   3. state bytes/param, article vs ours   4. 80 GB GPUs for 7B
#  5. memory per GPU of 7B with ZeRO-1 over 1, 2, 4, 8 GPUs
# The GPU counts and the per-GPU memory are the trainer's own ZeRO-1 plan: the ledger of the rank that
# keeps the most, `-memory-only 1 -zero 1 -plan-world N` (every optimizer that shards; lomo and adalomo
# do not, so each GPU keeps everything), for N = 2, 4, 8 and then upward until it fits in 80 GB.
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
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
    echo "ZeRO-1 per GPU (tables 4, 5): $train -memory-only 1 -model 32:4096:32 -b $B -t $T -opt OPT -zero 1 -plan-world N, the largest rank's ledger, N = 2, 3, ... until it fits 80 GB with activations, and 4, 8"
} > "$out/meta.txt"
while read -r key _ spec _; do
    case $key in \#*|"") continue ;; esac
    for o in $opts; do
        $train -memory-only 1 -model "$spec" -b "$B" -t "$T" -opt "$o" > "$out/ledger/${key}__${o}.txt" ||
            { echo "error: '$train -memory-only 1 -model $spec -b $B -t $T -opt $o' failed (see $out/ledger/${key}__${o}.txt)" >&2; exit 2; }
    done
done < "$out/sizes.txt"

# ZeRO-1 over N GPUs, 7B: the largest rank's planned ledger (ledger/7B__OPT__zN.txt), or "noshard"
# for the optimizers that refuse -zero 1
GPU_BYTES=80000000000
static_and_acts() { # FILE -> "params+master+grads+optimizer activations" bytes of the ledger's totals
    awk -F'|' '/^\| total (params|master|grads|optimizer) /{ s += $4 } /^\| total activations /{ a = $4 } END { printf "%.0f %.0f\n", s, a }' "$1"
}
spec7=$(awk '$1 == "7B" { print $3 }' "$out/sizes.txt")
rm -f "$out"/ledger/7B__*__z*.txt # an earlier run's plans
plan() { # OPT N: 7B's ZeRO-1 plan at N ranks into ledger/7B__OPT__zN.txt; fails for an optimizer that cannot shard
    local f="$out/ledger/7B__$1__z$2.txt"
    $train -memory-only 1 -model "$spec7" -b "$B" -t "$T" -opt "$1" -zero 1 -plan-world "$2" > "$f" 2>&1 && return 0
    grep -q "keeps no state worth sharding" "$f" && { echo noshard > "$f"; return 1; }
    echo "error: '$train -memory-only 1 -model $spec7 -b $B -t $T -opt $1 -zero 1 -plan-world $2' failed (see $f)" >&2; exit 2
}
for o in $opts; do
    n=2 # upward until the largest rank's four components and activations fit (at most 16), then 2, 4, 8
    while plan "$o" $n; do
        read -r st ac < <(static_and_acts "$out/ledger/7B__${o}__z$n.txt")
        [ $((st + ac)) -le $GPU_BYTES ] || [ $n -ge 16 ] && break
        n=$((n + 1))
    done
    [ "$(cat "$out/ledger/7B__${o}__z2.txt")" = noshard ] && continue
    for n in 4 8; do [ -f "$out/ledger/7B__${o}__z$n.txt" ] || plan "$o" $n; done
done
python3 scripts/results.py memory "$out" > "$out/memory.md"
bash scripts/plot.sh memory "$out"
cat "$out/memory.md"
echo "wrote $out/memory.md, $out/memory_7b.png, $out/memory_sizes.png" >&2
