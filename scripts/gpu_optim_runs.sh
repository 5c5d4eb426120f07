#!/usr/bin/env bash
# scripts/gpu_optim_runs.sh: every optimizer with CUDA kernels, end to end on the GPU, in two tables.
#   1. The default run (`./train_gpu -opt NAME`, nothing else: d4, -b 8 -t 64, 200 steps, the optimizer's
#      default lr, GCIDE): final train and val loss, state B/param, device peak MiB, tok/s. The same
#      command as the CPU's default run, so the val column can be set beside the CPU trainer's.
#   2. GPT-2 124M (d12, -b 32 -t 1024, bf16, STEPS_E2E steps, warmup 2): tok/s, device peak MiB and the
#      optimizer's share of the step (cudaEvents), so each optimizer's memory and speed cost is measured
#      at GPT-2 scale on a real card, not computed.
# Needs data/gcide/*.bin (make data; carry them to a GPU machine). Writes $OUT/default_runs.md,
# $OUT/e2e.md and $OUT/runs.tgz (log.jsonl and stdout of every run; no checkpoints); prints both tables.
#   OUT=./out/gpu_runs bash scripts/gpu_optim_runs.sh [NAME ...]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out/gpu_runs}
STEPS_E2E=${STEPS_E2E:-8}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
opts=("$@")
train=data/gcide/gcide_train.bin
val=data/gcide/gcide_val.bin
if [ ! -f "$train" ] || [ ! -f "$val" ]; then
    echo "gpu_optim_runs: $train and $val are missing: run 'make data' (and carry data/gcide on a GPU machine)" >&2
    exit 2
fi
[ -x ./train_gpu ] || make train_gpu > "$OUT/build.log" 2>&1 || { echo "gpu_optim_runs: make train_gpu failed (see $OUT/build.log)" >&2; exit 1; }
# every optimizer with CUDA kernels (its -opt list), adamw, the baseline, first
if [ ${#opts[@]} -eq 0 ]; then
    mapfile -t all < <(bash scripts/opt_names.sh ./train_gpu)
    opts=(adamw)
    for o in "${all[@]}"; do [ "$o" = adamw ] || opts+=("$o"); done
fi
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
rev=$(bash scripts/revision.sh "$OUT")
runs=$(mktemp -d /tmp/gpu_optim_runs_XXXXXX)
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

d1="$OUT/default_runs.md"
{
    echo "### The default run on the GPU: \`./train_gpu -opt NAME\` ($card, $(date -u +%Y-%m-%d), revision $rev)"
    echo
    echo "| optimizer | train loss | val loss | state B/param | device peak MiB | tok/s | wall s |"
    echo "|---|---|---|---|---|---|---|"
} > "$d1"
for o in "${opts[@]}"; do
    dir="$runs/default/$o"
    mkdir -p "$dir"
    start=$SECONDS
    timeout "$RUN_TIMEOUT" ./train_gpu -opt "$o" -o "$dir" -overwrite 1 > "$dir/stdout.txt" 2>&1
    rc=$?
    rm -f "$dir"/checkpoint*.bin
    s=$(grep '^summary:' "$dir/stdout.txt" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$s" ]; then
        echo "| $o | failed (exit $rc): $(tail -1 "$dir/stdout.txt" | cut -c1-80) | | | | | |" >> "$d1"
        continue
    fi
    echo "| $o | $(field "$s" train_loss) | $(field "$s" val_loss) | $(field "$s" state_bytes_per_param) | $(field "$s" peak_mib) | $(field "$s" tok_per_s) | $((SECONDS - start)) |" >> "$d1"
done

d2="$OUT/e2e.md"
{
    echo "### GPT-2 124M end to end: \`./train_gpu -model d12 -b 32 -t 1024 -x $STEPS_E2E -u 2 -opt NAME\` ($card, $(date -u +%Y-%m-%d), revision $rev)"
    echo
    echo "| optimizer | tok/s | state B/param | device peak MiB | forward ms | backward ms | optimizer ms | train loss (mean of the steps) |"
    echo "|---|---|---|---|---|---|---|---|"
} > "$d2"
for o in "${opts[@]}"; do
    dir="$runs/e2e/$o"
    mkdir -p "$dir"
    timeout "$RUN_TIMEOUT" ./train_gpu -model d12 -b 32 -t 1024 -x "$STEPS_E2E" -u 2 -opt "$o" -v 0 -m 1 -gen 0 -i "$train" -j "$val" \
        > "$dir/stdout.txt" 2>&1
    rc=$?
    s=$(grep '^summary:' "$dir/stdout.txt" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$s" ]; then
        echo "| $o | failed (exit $rc): $(tail -1 "$dir/stdout.txt" | cut -c1-80) | | | | | | |" >> "$d2"
        continue
    fi
    split=$(grep '^gpu time per step' "$dir/stdout.txt" | tail -1)
    fwd=$(echo "$split" | sed -n 's/.*forward \([0-9.]*\) ms.*/\1/p')
    bwd=$(echo "$split" | sed -n 's/.*backward \([0-9.]*\) ms.*/\1/p')
    opt=$(echo "$split" | sed -n 's/.*optimizer \([0-9.]*\) ms.*/\1/p')
    echo "| $o | $(field "$s" tok_per_s) | $(field "$s" state_bytes_per_param) | $(field "$s" peak_mib) | $fwd | $bwd | $opt | $(field "$s" train_loss) |" >> "$d2"
done
echo >> "$d2"
echo "Device peak: cudaMemGetInfo total - free at its highest (the CUDA context included). Step 1 is left out of tok/s and the time split." >> "$d2"
tar czf "$OUT/runs.tgz" -C "$runs" . && rm -rf "$runs"
cat "$d1"; echo; cat "$d2"
