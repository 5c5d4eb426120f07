#!/usr/bin/env bash
# scripts/sweep.sh OPT: tries a few peak learning rates for one optimizer on a short horizon (same data,
# seed, model and batch as scripts/loss_table.sh --cpu, fewer steps) and reports the best by the final
# val loss. Put the winner in loss_table.sh's lr_table (or pass --lr OPT=LR to it).
#   scripts/sweep.sh came                          # the default grid for came, d4, 60 steps
#   scripts/sweep.sh adamw --lrs "3e-4 1e-3 3e-3" --steps 100 --model d4 --out results/sweep
# Options: --lrs "..." (default: a grid around the optimizer's usual lr, below), --steps N [60],
# --model S [d4], -b B [8], -t T [64], --train BIN [./train_cpu], --out DIR [results/sweep].
# --lrs may include the word `default`: that run passes no -l (the optimizer's own default; for adafactor
# its relative step, which -l would turn off). A diverged run (non-finite loss, exit 3) counts as the
# worst. Anything after `--` goes to every run. scripts/sweep_defaults.sh runs this for every optimizer.
set -euo pipefail
cd "$(dirname "$0")/.."
opt=${1:?usage: scripts/sweep.sh OPT [--lrs \"a b c\"] [--steps N] [--model S] [-b B] [-t T] [--train BIN] [--out DIR]}
shift
lrs=""; steps=60; model=d4; B=8; T=64; train=./train_cpu; out=results/sweep; extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --lrs) lrs=$2; shift ;; --steps) steps=$2; shift ;; --model) model=$2; shift ;;
        -b) B=$2; shift ;; -t) T=$2; shift ;; --train) train=$2; shift ;; --out) out=$2; shift ;;
        --) shift; extra=("$@"); break ;;
        *) echo "error: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
# default grids: half-decades around each family's usual peak lr for small GPT-2 models
if [ -z "$lrs" ]; then
    case $opt in
        sgd|lomo|sgdm) lrs="0.03 0.1 0.3 1" ;;
        lion) lrs="3e-5 1e-4 3e-4 1e-3" ;;
        adalomo|adafactor) lrs="1e-3 3e-3 1e-2 3e-2" ;;   # adafactor: -l turns its relative step off
        *) lrs="3e-4 1e-3 3e-3 1e-2" ;;
    esac
fi
[ -x "$train" ] || make -s "$(basename "$train")" >&2
dir="$out/$opt"
mkdir -p "$dir"
echo "| lr | final train loss | val loss | status |"
echo "|---|---|---|---|"
best=""; best_val=""
for lr in $lrs; do
    rdir="$dir/lr_$lr"; mkdir -p "$rdir"; rm -f "$rdir/log.jsonl"
    rc=0; lrflag=(-l "$lr"); [ "$lr" = default ] && lrflag=()
    $train -model "$model" -b "$B" -t "$T" -x "$steps" -v "$steps" -m 8 -gen 0 -seed 1337 -opt "$opt" "${lrflag[@]}" \
        -o "$rdir" "${extra[@]}" > "$rdir/stdout.txt" 2>&1 || rc=$?
    rm -f "$rdir/checkpoint.bin"
    s=$(grep '^summary:' "$rdir/stdout.txt" || true)
    tl=$(echo "$s" | sed -n 's/.*train_loss=\([^ ]*\).*/\1/p'); vl=$(echo "$s" | sed -n 's/.*val_loss=\([^ ]*\).*/\1/p')
    status=ok; [ "$rc" -ne 0 ] && status="exit $rc"
    echo "| $lr | ${tl:-n/a} | ${vl:-n/a} | $status |"
    if [ "$rc" -eq 0 ] && [ -n "$vl" ] && [ "$vl" != nan ] && [ "$vl" != inf ]; then
        if [ -z "$best_val" ] || awk -v a="$vl" -v b="$best_val" 'BEGIN { exit !(a < b) }'; then best=$lr; best_val=$vl; fi
    fi
done
if [ -n "$best" ]; then echo; echo "best: opt=$opt lr=$best val_loss=$best_val (model $model, B=$B, T=$T, $steps steps)"
else echo; echo "best: opt=$opt none (every run failed; see $dir/*/stdout.txt)"; exit 1; fi
