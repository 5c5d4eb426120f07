// optim/sgdm8bit.c: bitsandbytes' SGD8bit (`-opt sgdm8bit`): SGD with momentum whose buffer is stored
// in 8 bits, block-wise, as bitsandbytes' CUDA kernel kOptimizerStatic8bit1StateBlockwise<MOMENTUM>
// (csrc/kernels.cu) computes it, on the CPU.
//
// State, as adamw8bit's m (optim/quant8.h): one byte per element with the signed dynamic map plus one
// fp32 absmax per block of -qblock elements (256 by default, bitsandbytes' 1-state block size):
//   bytes/param = 1 + 4/qblock = 1.0156 at qblock 256. State names state1_q8 (u8), absmax1 (f32).
// Tensors with fewer than max(min_8bit_size, 4096) elements keep an fp32 state1 (4 B/param), as
// bitsandbytes does (kernel kOptimizer32bit1State<MOMENTUM>, the same algebra).
//
// The step, per block, in the kernel's order (fp32 throughout):
//   for each element: g = g + p*wd                coupled L2, only when wd > 0 (torch.optim.SGD's too)
//                     s = code[c] * absmax_old    dequantize
//                     s = g on step 1, else s = momentum*s + g      (no dampening)
//   absmax_new = max |s| over the block (of the UPDATED buffer)
//   p = p - lr * s                                 from the fp32 s, before requantization
//   c = nearest code of s / absmax_new, with the sign guard (quant8.h)
// The layout, the block loop (both passes) and the fp32 floor are quant8.h's 1-state pieces, shared
// with lion8bit.c; the per-element math is sgdm8bit.h's, which the CUDA kernel (optim/sgdm8bit.cuh, one
// template shared with lion8bit) calls too, so the codes are equal on both sides.
// This is torch.optim.SGD's momentum form (b = mu*b + g, b = g on the first step, lr outside the
// buffer) with the buffer in 8 bits. bitsandbytes' SGD8bit accepts nesterov and dampening but its
// kernels implement neither: -nesterov 1 is refused here rather than silently ignored, and so is
// momentum 0 (bitsandbytes raises "SGD without momentum is not supported").
// Non-finite gradients: no guard in the 1-state kernels; a NaN reaches s and p as in bitsandbytes. We
// count them in OptStep.nonfinite for the trainer. Differences from the kernel, on purpose, as
// adam8bit.c: exact division instead of __fdividef, no padding lanes in a short last block.
//
// Defaults: sgdm's (lr 0.1, momentum 0.9, weight_decay 0; bitsandbytes has no lr default and requires
// a non-zero momentum), qblock 256, min_8bit_size 4096.
#include <math.h>
#include "common/util.h"

// No fused multiply-adds, so CPU and GPU agree bit for bit (sgdm8bit.h). GCC honours this; clang ignores
// it under -ffp-contract=fast (see adam8bit.c).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim_common.h"
#include "quant8.h"
#include "sgdm8bit.h"   // after the pragma: the header's functions inline into the loops below

static int sgdm8bit_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (h->momentum == 0.0f) user_error("-opt sgdm8bit needs -momentum > 0 (bitsandbytes' SGD8bit has no plain SGD); use -opt sgd");
    if (h->nesterov) user_error("-opt sgdm8bit has no Nesterov momentum (bitsandbytes' kernels ignore it); drop -nesterov or use -opt sgdm");
    return q8_layout_1state(h, s, out);
}

// sgdm8bit.h's update behind quant8.h's element interface (a constant pointer: inlined in the loop).
static float sgdm8bit_elem(const void* k, int decays, float* p, float s, float g) {
    return sgdm8bit_update((const Sgdm8bitScalars*)k, decays, p, s, g);
}

static void sgdm8bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Sgdm8bitScalars k = sgdm8bit_scalars(h, st->lr, st->t);
    const int decays = p->shape->decay;
    const size_t n = p->shape->numel;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    st->nonfinite += q8_count_nonfinite(g, n);
    if (!q8_is_quantized(h, n)) {
        float* s = (float*)p->state[0];   // (numel) state1
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) s[i] = sgdm8bit_update(&k, decays, &theta[i], s[i], g[i]);
        return;
    }
    const size_t block = (size_t)h->qblock, nblocks = q8_num_blocks(n, block);
    uint8_t* c = (uint8_t*)p->state[0];   // (numel) state1 codes
    float* absmax = (float*)p->state[1];  // (nblocks) absmax1
    const Q8Map* map = q8_map_signed();
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * block, len = lo + block < n ? block : n - lo;
        q8_block_1state(sgdm8bit_elem, &k, decays, map, theta + lo, g + lo, c + lo, absmax + b, len);
    }
}

const Optimizer OPT_SGDM8BIT = {
    .name = "sgdm8bit",
    .description = "bitsandbytes SGD8bit: momentum buffer b = mu*b + g in 8 bits (signed dynamic map, fp32 absmax per -qblock)",
    .paper = "Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, arXiv 2110.02861",
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    // lr 0.1 as sgdm's (results/sweep/: sgdm's best on the default run)
    .defaults = { .lr = 0.1, .momentum = 0.9, .nesterov = 0, .weight_decay = 0.0, .qblock = 256,
                  .min_8bit_size = 4096 },
    .layout = sgdm8bit_layout,
    .init = NULL,
    .step = sgdm8bit_step,
    .hessian = NULL,
};
