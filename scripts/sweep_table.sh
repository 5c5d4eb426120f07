#!/usr/bin/env bash
# scripts/sweep_table.sh: one markdown table of every run under results/sweep/s*/OPT/lr_*/ (written by
# scripts/sweep_defaults.sh): optimizer, lr, and the final val loss at each horizon that ran it. A 200-step
# value marked * comes from the CPU default-run table (results/cpu/OPT/, the same default run at the lr
# that results/cpu/meta.txt lists) where results/sweep/s200/ has no run of that lr.
#   scripts/sweep_table.sh            # prints | optimizer | lr | val @60 | val @200 |
set -euo pipefail
cd "$(dirname "$0")/.."
val() { sed -n 's/^summary:.*val_loss=\([^ ]*\).*/\1/p' "$1" 2>/dev/null || true; }
# same_lr A B: the same learning rate, however written (1e-3 = 0.001; "default" only equals itself)
same_lr() { [ "$1" = "$2" ] || { [ "$1" != default ] && [ "$2" != default ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 == b + 0) }'; }; }
echo "| optimizer | lr | val loss, 60 steps | val loss, 200 steps |"
echo "|---|---|---|---|"
for o in sgd sgdm adam adamw lion sophia lomo adafactor came adalomo adam8bit adamw8bit paged_adamw8bit adamw4bit galore_adamw muon \
         adam_mini lion8bit sgdm8bit; do
    cpu_lr=$(awk -v o="$o" '$1 == o { print $2 }' results/cpu/meta.txt 2>/dev/null || true)
    swept=$(ls -d results/sweep/s*/"$o"/lr_* 2>/dev/null | sed 's/.*lr_//' | sort -u || true)
    # the CPU table's lr joins the list unless a swept lr is the same number
    extra=$cpu_lr
    for lr in $swept; do [ -n "$extra" ] && same_lr "$lr" "$extra" && extra=""; done
    lrs=$( { for lr in $swept; do echo "$lr"; done; [ -n "$extra" ] && echo "$extra"; } |
          awk '{ k = ($0 == "default") ? -1 : $0 + 0; print k, $0 }' | sort -g | cut -d" " -f2 || true)
    for lr in $lrs; do
        a=$(val "results/sweep/s60/$o/lr_$lr/stdout.txt"); b=$(val "results/sweep/s200/$o/lr_$lr/stdout.txt")
        [ -z "$b" ] && [ -n "$cpu_lr" ] && same_lr "$lr" "$cpu_lr" && b=$(val "results/cpu/$o/stdout.txt") && [ -n "$b" ] && b="$b*"
        echo "| $o | $lr | ${a:--} | ${b:--} |"
    done
done
