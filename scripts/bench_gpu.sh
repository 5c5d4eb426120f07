#!/usr/bin/env bash
# scripts/bench_gpu.sh: the CUDA trainer's benchmark. GPT-2 124M (d12), T=1024, B=32, bf16, AdamW:
# tok/s, MFU, device peak memory, and the per-step GPU time split forward / backward / optimizer
# (cudaEvents, printed by ./train_gpu). Runs with -r 0 and -r 1 (GELU recompute).
# Data: data/gcide/gcide_train.bin when present, else a synthetic shard written here (throughput does
# not depend on the text; the GPU machines have no network for `make data`).
# Writes $OUT/bench_gpu.md (markdown table) and the raw logs; prints the table last.
#   OUT=dir STEPS=30 scripts/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./out/gpu_check}
STEPS=${STEPS:-30}
mkdir -p "$OUT"
[ -x ./train_gpu ] || make train_gpu >/dev/null
data=data/gcide/gcide_train.bin
if [ ! -f "$data" ]; then
    data="$OUT/synthetic_train.bin"
    python3 scripts/synthetic_shard.py "$data"
fi
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo unknown)
table="$OUT/bench_gpu.md"
{
    echo "### CUDA trainer benchmark: d12, B=32, T=1024, bf16, adamw, $STEPS steps ($card)"
    echo
    echo "| run | tok/s | MFU (median step) | device peak MiB | fwd ms | bwd ms | opt ms | train loss |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$table"
for r in 0 1; do
    log="$OUT/bench_r$r.log"
    set +e
    ./train_gpu -model d12 -b 32 -t 1024 -x "$STEPS" -opt adamw -l 6e-4 -precision bf16 -r "$r" -i "$data" -j "$data" \
        -v 0 -m 1 -gen 0 -u 5 > "$log" 2>&1
    rc=$?
    set -e
    if [ $rc -ne 0 ]; then
        echo "| -r $r | failed (exit $rc, see $(basename "$log")) | | | | | | |" >> "$table"
        continue
    fi
    summary=$(grep '^summary:' "$log" | tail -1)
    field() { echo "$summary" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    split=$(grep '^gpu time per step' "$log" | tail -1)
    fwd=$(echo "$split" | sed -n 's/.*forward \([0-9.]*\) ms.*/\1/p')
    bwd=$(echo "$split" | sed -n 's/.*backward \([0-9.]*\) ms.*/\1/p')
    opt=$(echo "$split" | sed -n 's/.*optimizer \([0-9.]*\) ms.*/\1/p')
    mfu=$(grep '^step' "$log" | sed -n 's/.*MFU \([0-9.]*\)%.*/\1/p' | tail -n +2 | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)] "%"; else print "n/a"}')
    echo "| -r $r | $(field tok_per_s) | $mfu | $(field peak_mib) | $fwd | $bwd | $opt | $(field train_loss) |" >> "$table"
done
echo >> "$table"
echo "MFU: 6N + 12LCT flops per token over the card's dense bf16 datasheet peak (989 TFLOP/s for H100/H200 SXM). Peak memory: cudaMemGetInfo total - free (includes the CUDA context). Step 1 is left out of tok/s and the time split." >> "$table"
cat "$table"
