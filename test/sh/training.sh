#!/usr/bin/env bash
# test/sh/training.sh: training-loop behaviour on the default dataset with a tiny model.
cd "$(dirname "$0")/../.."
. test/lib.sh
SMALL="-model 2:32:2 -b 2 -t 16 -v 0 -gen 0"

# Sophia's Hessian estimate runs exactly every k applied steps
$TRAIN $SMALL -x 10 -opt sophia -k 3 -o "$TMP/sophia" > "$TMP/sophia.out" 2>&1
steps=$(grep '"type":"hessian"' "$TMP/sophia/log.jsonl" 2>/dev/null | sed -E 's/.*"step":([0-9]+).*/\1/' | tr '\n' ' ')
[ "$steps" = "3 6 9 " ] && pass "sophia: Hessian update at steps 3 6 9 with -k 3 -x 10" || fail "sophia: Hessian update every k steps" "got '$steps'"

# fused-backward optimizers cannot accumulate gradients
expect_exit "lomo: gradient accumulation refused" 2 "cannot accumulate" -- $TRAIN $SMALL -x 2 -opt lomo -d 64

# log.jsonl: one step record per step, val records, one summary; the summary line on stdout
out=$($TRAIN $SMALL -x 6 -v 3 -o "$TMP/log" 2>&1)
n_step=$(grep -c '"type":"step"' "$TMP/log/log.jsonl"); n_val=$(grep -c '"type":"val"' "$TMP/log/log.jsonl")
n_sum=$(grep -c '"type":"summary"' "$TMP/log/log.jsonl")
[ "$n_step" = 6 ] && [ "$n_val" = 2 ] && [ "$n_sum" = 1 ] && pass "log.jsonl: 6 step, 2 val, 1 summary records" \
    || fail "log.jsonl records" "step $n_step val $n_val summary $n_sum"
last=$(echo "$out" | tail -n 1)
if echo "$last" | grep -Eq '^summary: opt=adamw steps=6 train_loss=[0-9.]+ val_loss=[0-9.]+ tok_per_s=[0-9.]+ peak_mib=[0-9.]+ state_bytes=[0-9]+ state_bytes_per_param=8\.0000'; then
    pass "summary line carries opt, steps, losses, tok/s, peak, state bytes"
else fail "summary line" "$last"; fi
echo "$out" | grep -Eq '^step +1/6 \| loss [0-9.]+ \| lr [0-9.e+-]+ \| norm [0-9.]+ \| [0-9.]+ ms | [0-9]+ tok/s \| [0-9hms]+, eta [0-9hms]+$' \
    && pass "step line format" || fail "step line format" "$(echo "$out" | grep '^step' | head -n 1)"
echo "$out" | grep -q "| TOTAL" && pass "memory table printed at start" || fail "memory table printed at start" "no TOTAL row"

# gradient accumulation: -d 2*b*t averages two micro-batches; the loss printed is their mean
out=$($TRAIN $SMALL -x 1 -d 64 2>&1)
echo "$out" | grep -q "64 tokens/step (2 micro-steps)" && pass "gradient accumulation: 2 micro-steps" || fail "gradient accumulation" "$(echo "$out" | grep tokens/step)"

# a plain text file as training data: tokenized on the fly and cached
printf 'The cat sat on the mat. %.0s' $(seq 1 300) > "$TMP/cats.txt"
rm -rf data/cache/test-cats-*
out=$($TRAIN $SMALL -x 3 -i "$TMP/cats.txt" 2>&1); rc=$?
[ $rc -eq 0 ] && echo "$out" | grep -q "^summary:" && pass "text file input trains" || fail "text file input" "rc=$rc $(echo "$out" | tail -n 2 | tr '\n' ' ')"

# fp32 precision: no master copy, 4-byte grads in the ledger
out=$($TRAIN $SMALL -x 1 -precision fp32 2>&1)
echo "$out" | grep -q "master weights" && fail "fp32: no master copy" "master line present" || pass "fp32: no master copy in the ledger"

# the default run's memory table: params 2, master 4, grads 2, adamw state 8 bytes/param
out=$($TRAIN -memory-only 1 2>&1)
for row in "total params  *\|.*\| +2\.0000" "total master  *\|.*\| +4\.0000" "total grads  *\|.*\| +2\.0000" "total optimizer *\|.*\| +8\.0000"; do
    echo "$out" | grep -Eq "$row" && pass "bf16 adamw ledger: $(echo "$row" | cut -d' ' -f2) bytes/param" || fail "bf16 adamw ledger row" "$row"
done
