#!/usr/bin/env bash
# scripts/sweep_table.sh: one markdown table of every run under results/sweep/s*/OPT/lr_*/ (written by
# scripts/sweep_defaults.sh): optimizer, lr, and the final val loss at each horizon that ran it. A 200-step
# value marked * comes from the CPU loss table (results/cpu/OPT/, the same default run at the lr that
# results/cpu/meta.txt lists, 2 threads) where results/sweep/s200/ has no run of that lr.
#   scripts/sweep_table.sh            # prints | optimizer | lr | val @60 | val @200 |
set -euo pipefail
cd "$(dirname "$0")/.."
val() { sed -n 's/^summary:.*val_loss=\([^ ]*\).*/\1/p' "$1" 2>/dev/null || true; }
echo "| optimizer | lr | val loss, 60 steps | val loss, 200 steps |"
echo "|---|---|---|---|"
for o in sgd sgdm adam adamw lion sophia lomo adafactor came adalomo adam8bit adamw8bit paged_adamw8bit; do
    cpu_lr=$(awk -v o="$o" '$1 == o { print $2 }' results/cpu/meta.txt 2>/dev/null || true)
    lrs=$( { ls -d results/sweep/s*/"$o"/lr_* 2>/dev/null | sed 's/.*lr_//'; [ -n "$cpu_lr" ] && echo "$cpu_lr"; } | sort -u |
          awk '{ k = ($0 == "default") ? -1 : $0 + 0; print k, $0 }' | sort -g | cut -d" " -f2 || true)
    for lr in $lrs; do
        a=$(val "results/sweep/s60/$o/lr_$lr/stdout.txt"); b=$(val "results/sweep/s200/$o/lr_$lr/stdout.txt")
        [ -z "$b" ] && [ "$lr" = "$cpu_lr" ] && b=$(val "results/cpu/$o/stdout.txt") && [ -n "$b" ] && b="$b*"
        echo "| $o | $lr | ${a:--} | ${b:--} |"
    done
done
