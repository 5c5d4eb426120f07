#!/usr/bin/env bash
# test/sh/fused_gpu.sh: what of the CUDA trainer's lomo and adalomo (the update inside backward, unit by
# unit: train_gpt2.cu's train_step_fused, optim/lomo.cuh, optim/adalomo.cuh) runs without a GPU. Their
# memory plan (-memory-only 1 touches no device): no model-wide gradient buffer, a scratch of unit 0 + one
# block instead, so the ledger's total is below adamw's by at least the gradients; the optimizers are
# listed with CUDA kernels; -zero 1 and gradient accumulation are refused in one line. The kernels and the
# training runs need a GPU (test_gpt2cu: check_optimizer_fused, check_trainer_fused; scripts/gpu_check.sh).
# Skipped (a note, no PASS line) when ./train_gpu was not built (CI builds it before make test).
cd "$(dirname "$0")/../.."
. test/lib.sh
GPU=./train_gpu
if [ ! -x "$GPU" ]; then echo "note: $GPU not built (make train_gpu); CUDA lomo/adalomo planning tests skipped"; exit 0; fi
D12="-model d12 -b 32 -t 1024 -memory-only 1"
for o in lomo adalomo adamw sgd; do $GPU $D12 -opt $o >"$TMP/$o.txt" 2>&1 || echo "exit $?" >>"$TMP/$o.txt"; done
$GPU $D12 -opt lomo -precision fp32 >"$TMP/lomo32.txt" 2>&1 || echo "exit $?" >>"$TMP/lomo32.txt"
bytes() { grep -E "^\| [a-z]+ +\| $2 +\|" "$1" | awk -F'|' '{gsub(/ /, "", $4); print $4}'; }
total() { grep -E "^\| TOTAL " "$1" | awk -F'|' '{gsub(/ /, "", $4); print $4}'; }
# d12: unit 0 = wte (50304 x 768) + wpe (1024 x 768) + lnf.w, lnf.b (768 each); a block = 12 tensors,
# 7087872 elements; every tensor padded to 64 bytes of fp32 (16 elements): all of these are multiples
U0=$((50304 * 768 + 1024 * 768 + 768 + 768)); U1=7087872; G=$((124475904 * 2))
for o in lomo adalomo; do
    f="$TMP/$o.txt"
    if grep -q "^exit" "$f"; then fail "gpu $o d12 -memory-only" "$(tail -3 "$f" | tr '\n' ' ')"; continue; fi
    grep -Eq "\| grads \(bf16\) " "$f" && fail "gpu $o d12: no model-wide gradient buffer" "$(grep 'grads' "$f" | head -2)" \
        || pass "gpu $o d12: no model-wide gradient buffer in the ledger"
    got=$(bytes "$f" "fused-backward gradient scratch \(bf16\)")
    [ "$got" = "$(((U0 + U1) * 2))" ] && pass "gpu $o d12: a fused-backward gradient scratch of unit 0 + one block ($got bytes)" \
        || fail "gpu $o d12 scratch" "want $(((U0 + U1) * 2)), got '$got'"
    ta=$(total "$TMP/adamw.txt"); tl=$(total "$f"); ga=$(bytes "$TMP/adamw.txt" "grads \(bf16\)")
    [ -n "$ta" ] && [ -n "$tl" ] && [ "$ga" = "$G" ] && [ $((ta - tl)) -ge "$ga" ] \
        && pass "gpu $o d12: ledger total $tl below adamw's $ta by at least the gradients ($ga)" \
        || fail "gpu $o d12 total" "adamw $ta (grads '$ga'), $o $tl"
done
# against sgd (no state either): the saving is the gradients less the scratch, up to the optimizers' small tables
ts=$(total "$TMP/sgd.txt"); tl=$(total "$TMP/lomo.txt"); d=$((ts - tl)); want=$((G - (U0 + U1) * 2))
[ -n "$ts" ] && [ $((d - want)) -le 1048576 ] && [ $((want - d)) -le 1048576 ] \
    && pass "gpu lomo d12: ledger total below sgd's by the gradients less the scratch ($d bytes, want $want within 1 MiB)" \
    || fail "gpu lomo d12 vs sgd" "sgd $ts lomo $tl: $d, want $want"
# adalomo's factored scratch: one ledger line for every unit; a deep model (gpt2-xl, 48 blocks) plans
n=$(grep -c "factored" "$TMP/adalomo.txt")
[ "$n" = 1 ] && grep -q "adalomo factored scratch (all units)" "$TMP/adalomo.txt" \
    && pass "gpu adalomo d12: its factored scratch in one ledger line" || fail "gpu adalomo factored lines" "$(grep factored "$TMP/adalomo.txt" | head -3 | tr '\n' ' ')"
expect_exit "gpu adalomo d48 -memory-only: plans (49 units)" 0 "summary: opt=adalomo" -- $GPU -model d48 -b 1 -t 1024 -memory-only 1 -opt adalomo
# fp32: the scratch in fp32, no fp32 gradients
grep -q "fused-backward gradient scratch (fp32)" "$TMP/lomo32.txt" && ! grep -Eq "\| grads \(fp32\) " "$TMP/lomo32.txt" \
    && pass "gpu lomo d12 fp32: an fp32 unit scratch, no model-wide fp32 gradients" || fail "gpu lomo fp32" "$(grep grads "$TMP/lomo32.txt" | tr '\n' ' ')"
# the list: both with CUDA kernels
for o in lomo adalomo; do
    $GPU -opt list | grep -Eq "^$o +[0-9.]+ +yes " && pass "gpu -opt list: $o has CUDA kernels" || fail "gpu -opt list $o" "$($GPU -opt list | grep "^$o ")"
done
# refused in one line before any device is touched
SMALL="-model 2:64:2 -b 2 -t 16 -x 1 -v 0 -gen 0"
expect_exit "gpu lomo -zero 1: refused in one line" 2 "lomo: -zero 1 shards optimizer state" -- $GPU $SMALL -opt lomo -zero 1
expect_exit "gpu adalomo -zero 1: refused in one line" 2 "adalomo: -zero 1 shards optimizer state" -- $GPU $SMALL -opt adalomo -zero 1
expect_exit "gpu lomo: gradient accumulation refused" 2 "cannot accumulate" -- $GPU $SMALL -opt lomo -d 64
