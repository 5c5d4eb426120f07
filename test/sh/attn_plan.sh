#!/usr/bin/env bash
# test/sh/attn_plan.sh: what of the CUDA trainer's attention routes (-attn) and memory plan runs without a
# GPU. ./train_gpu plans its memory without touching a device (-memory-only 1), so its ledger shows each
# route's scratch exactly and the activations' layout. The routes themselves need a GPU
# (test_gpt2cu -attn, scripts/gpu_check.sh). Skipped (a note, no PASS line) when ./train_gpu was not
# built (CI builds it before make test).
cd "$(dirname "$0")/../.."
. test/lib.sh
GPU=./train_gpu
# the flag on both trainers: a bad route is a user error; the CPU trainer notes that the flag is the GPU's
expect_exit "cpu: -attn takes auto|cudnn|flash|cublas|ref" 2 "-attn must be auto, cudnn, flash, cublas or ref, got 'fast'" -- $TRAIN -attn fast
expect_exit "cpu: -attn flash is noted as the CUDA trainer's" 0 "note: -attn is the CUDA trainer's" -- $TRAIN -model 1:32:2 -b 1 -t 16 -x 1 -v 0 -gen 0 -attn flash -memory-only 1
if [ ! -x "$GPU" ]; then skip_test "CUDA attention planning (make train_gpu)" "train_gpu not built"; exit 0; fi
D12="-model d12 -b 32 -t 1024 -memory-only 1 -opt adamw"
for r in auto ref cublas flash cudnn; do $GPU $D12 -r 1 -attn $r >"$TMP/$r.txt" 2>&1; done
# auto is the reference until a GPU run verifies a faster route (cuda/attention_routes.cuh: ATTN_VERIFIED)
grep -q "^attention: ref route (-attn auto" "$TMP/auto.txt" && pass "gpu -attn auto: the reference until a route is verified on a GPU" \
    || fail "gpu -attn auto" "$(grep '^attention' "$TMP/auto.txt")"
# cublas: one layer's scratch, B*NH*T*T*4 (scores, P in place, dP) + 8*B*T*C (q, k, v, o) + 32 MiB cuBLAS
# workspace = 1536 + 192 + 32 MiB at d12 (cuda/attention_cublas.cuh)
want=$((32 * 12 * 1024 * 1024 * 4 + 8 * 32 * 1024 * 768 + 32 * 1048576))
grep -Eq "attention scratch \(cublas route, one layer\) +\| +$want " "$TMP/cublas.txt" \
    && pass "gpu -attn cublas: its one-layer scratch in the ledger ($want bytes at d12, B=32)" \
    || fail "gpu -attn cublas scratch" "$(grep -E '^attention|cublas' "$TMP/cublas.txt" | tr '\n' ' ')"
# flash: no scratch at all, the same ledger as the reference
diff <(grep -v '^attention' "$TMP/ref.txt") <(grep -v '^attention' "$TMP/flash.txt") >/dev/null && grep -q "^attention: flash route" "$TMP/flash.txt" \
    && pass "gpu -attn flash: no scratch (the ledger equals the reference's)" \
    || fail "gpu -attn flash ledger" "$(diff <(grep -v '^attention' "$TMP/ref.txt") <(grep -v '^attention' "$TMP/flash.txt") | head -3 | tr '\n' ' ')"
# cudnn: with cuDNN built in, the dry run records the documented workspace bound; without, one line and ref
if ldd $GPU 2>/dev/null | grep -q libcudnn; then
    grep -q "cuDNN attention workspace (bound)" "$TMP/cudnn.txt" && grep -q "^attention: cudnn route" "$TMP/cudnn.txt" \
        && pass "gpu -attn cudnn: the dry ledger records cuDNN's workspace bound" || fail "gpu -attn cudnn bound" "$(grep -E '^attention|cuDNN' "$TMP/cudnn.txt" | tr '\n' ' ')"
else
    grep -q "^attention: -attn cudnn cannot run here (this build has no cuDNN" "$TMP/cudnn.txt" \
        && pass "gpu -attn cudnn without cuDNN: one line, the ref route" || fail "gpu -attn cudnn fallback" "$(grep '^attention' "$TMP/cudnn.txt")"
fi
# fp32 storage: the tensor-core routes say so and run the reference
$GPU -model 2:128:2 -b 2 -t 64 -memory-only 1 -precision fp32 -attn flash >"$TMP/fp32.txt" 2>&1
grep -q "^attention: -attn flash cannot run here (it runs bf16 storage only" "$TMP/fp32.txt" \
    && pass "gpu -precision fp32 -attn flash: one line, the ref route" || fail "gpu fp32 flash fallback" "$(grep '^attention' "$TMP/fp32.txt")"
# the activations at d12, B=32, T=1024, -r 1: per layer ln1, atty, res2, ln2, res3 (5 BTC), qkv (3 BTC),
# fch (4 BTC); once: the recomputed GELU (4 BTC), encoded, lnf, tmp = dln (3 BTC), and the logits
# (B T Vp), inside which the backward's dres, datty, dqkv, dfch live (train_gpt2.cu, Acts): no other
# backward scratch. In bf16 elements, every buffer rounded up to 128 (all of these are multiples).
BTC=$((32 * 1024 * 768))
want=$(( 2 * (12 * 12 * BTC + 4 * BTC + 3 * BTC + 32 * 1024 * 50304) ))
grep -Eq "activations \(bf16\) +\| +$want " "$TMP/flash.txt" \
    && pass "gpu d12 -r 1: activations $want bytes (the backward scratch inside the logits, dln = tmp)" \
    || fail "gpu d12 -r 1 activations" "want $want: $(grep 'activations (bf16)' "$TMP/flash.txt")"
