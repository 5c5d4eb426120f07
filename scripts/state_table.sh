#!/usr/bin/env bash
# scripts/state_table.sh [MODEL]: for every optimizer, the exact optimizer-state bytes and the memory
# ledger of a model (default d12, GPT-2 124M) at the default batch (B=8, T=64), bf16 mode, from
# ./train -memory-only 1 (nothing is allocated). Markdown to stdout; the README's table comes from it.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-d12}
TRAIN=${TRAIN:-./train_cpu}
if [ ! -x "$TRAIN" ]; then
    [ "$TRAIN" = ./train_cpu ] || { echo "error: TRAIN=$TRAIN is not an executable trainer; build it or unset TRAIN" >&2; exit 2; }
    echo "building ./train_cpu (make train_cpu)" >&2
    make -s train_cpu >/dev/null || { echo "error: could not build ./train_cpu; run 'make train_cpu' and read its errors" >&2; exit 2; }
fi
$TRAIN -memory-only 1 -model "$MODEL" -opt adamw >/dev/null ||
    { echo "error: '$TRAIN -memory-only 1 -model $MODEL' failed: is '$MODEL' a model (dN or L:C:H)?" >&2; exit 2; }
echo "| optimizer | state bytes | state B/param | grads bytes | params+master+grads+state | ledger total |"
echo "|---|---:|---:|---:|---:|---:|"
for o in $($TRAIN -opt list | awk 'NR > 1 {print $1}'); do
    $TRAIN -memory-only 1 -model "$MODEL" -opt "$o" | awk -F'|' -v o="$o" '
        /total params/ {p = $4} /total master/ {m = $4} /total grads/ {g = $4} /total optimizer/ {s = $4} /TOTAL/ {t = $4}
        /^summary/ { split($0, f, "params="); split(f[2], q, " "); n = q[1] }
        END { s += 0; printf "| %s | %.0f | %.4f | %.0f | %.0f (%.2f GiB) | %.0f (%.2f GiB) |\n",
              o, s, s / n, g, p + m + g + s, (p + m + g + s) / 2^30, t, t / 2^30 }'
done
