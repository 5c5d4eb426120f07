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
// This is torch.optim.SGD's momentum form (b = mu*b + g, b = g on the first step, lr outside the
// buffer) with the buffer in 8 bits. bitsandbytes' SGD8bit accepts nesterov and dampening but its
// kernels implement neither: -nesterov 1 is refused here rather than silently ignored, and so is
// momentum 0 (bitsandbytes raises "SGD without momentum is not supported").
// Non-finite gradients: no guard in the 1-state kernels; a NaN reaches s and p as in bitsandbytes. We
// count them in OptStep.nonfinite for the trainer. Differences from the kernel, on purpose, as
// adam8bit.c: exact division instead of __fdividef, no padding lanes in a short last block.
//
// Defaults: sgdm's (lr 1e-3, momentum 0.9, weight_decay 0; bitsandbytes has no lr default and requires
// a non-zero momentum), qblock 256, min_8bit_size 4096.
#include <math.h>
#include "optim_common.h"
#include "quant8.h"
#include "sgdm8bit.h"
#include "common/util.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define BNB_8BIT_FLOOR 4096  // bitsandbytes keeps fp32 state below max(min_8bit_size, 4096)

static int sgdm8bit_is_quantized(const OptHyper* h, const ParamShape* s) {
    size_t min_size = h->min_8bit_size > BNB_8BIT_FLOOR ? (size_t)h->min_8bit_size : BNB_8BIT_FLOOR;
    return s->numel >= min_size;
}

static int sgdm8bit_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (h->momentum == 0.0f) user_error("-opt sgdm8bit needs -momentum > 0 (bitsandbytes' SGD8bit has no plain SGD); use -opt sgd");
    if (h->nesterov) user_error("-opt sgdm8bit has no Nesterov momentum (bitsandbytes' kernels ignore it); drop -nesterov or use -opt sgdm");
    if (!sgdm8bit_is_quantized(h, s)) {
        out[0] = optim_spec("state1", DT_F32, s->numel);
        return 1;
    }
    CHECK(h->qblock > 0);
    out[0] = optim_spec("state1_q8", DT_U8, s->numel);
    out[1] = optim_spec("absmax1", DT_F32, q8_num_blocks(s->numel, (size_t)h->qblock));
    return 2;
}

static Sgdm8bitScalars sgdm8bit_scalars(const OptHyper* h, const OptTensor* p, const OptStep* st) {
    Sgdm8bitScalars k;
    k.lr = st->lr;
    k.momentum = h->momentum;
    k.wd = optim_wd(h, p);
    k.decays = k.wd > 0.0f;
    k.first = st->t == 1;
    return k;
}

// One block of n elements: new buffers once for the absmax, again to update p and requantize (same
// fp32 operations on the same inputs, so the same values, and no scratch at any -qblock).
static void sgdm8bit_block(const Sgdm8bitScalars* k, const Q8Map* map, float* p, const float* g, uint8_t* c,
                           float* absmax, size_t n) {
    const float am_old = *absmax;
    float am_new = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float s = sgdm8bit_buffer(k, q8_dequantize(map, c[i], am_old), g[i], p[i]);
        if (fabsf(s) > am_new) am_new = fabsf(s);  // the kernel's fmaxf: NaN skipped
    }
    for (size_t i = 0; i < n; i++) {
        const float s = sgdm8bit_buffer(k, q8_dequantize(map, c[i], am_old), g[i], p[i]);
        p[i] = sgdm8bit_param(k, p[i], s);
        c[i] = q8_quantize(map, 1, s, am_new);
    }
    *absmax = am_new;
}

static void sgdm8bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Sgdm8bitScalars k = sgdm8bit_scalars(h, p, st);
    const size_t n = p->shape->numel;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    long bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(g[i]);
    st->nonfinite += bad;
    if (!sgdm8bit_is_quantized(h, p->shape)) {
        float* s = (float*)p->state[0];   // (numel) state1
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) {
            s[i] = sgdm8bit_buffer(&k, s[i], g[i], theta[i]);
            theta[i] = sgdm8bit_param(&k, theta[i], s[i]);
        }
        return;
    }
    const size_t block = (size_t)h->qblock, nblocks = q8_num_blocks(n, block);
    uint8_t* c = (uint8_t*)p->state[0];   // (numel) state1 codes
    float* absmax = (float*)p->state[1];  // (nblocks) absmax1
    const Q8Map* map = q8_map_signed();
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * block, len = lo + block < n ? block : n - lo;
        sgdm8bit_block(&k, map, theta + lo, g + lo, c + lo, absmax + b, len);
    }
}

const Optimizer OPT_SGDM8BIT = {
    .name = "sgdm8bit",
    .description = "bitsandbytes SGD8bit: momentum buffer b = mu*b + g in 8 bits (signed dynamic map, fp32 absmax per -qblock)",
    .paper = "Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, arXiv 2110.02861",
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    // lr 0.1 as sgdm's (results/sweep/: sgdm's best on the default run)
    .defaults = { .lr = 0.1, .momentum = 0.9f, .nesterov = 0, .weight_decay = 0.0f, .qblock = 256,
                  .min_8bit_size = 4096 },
    .layout = sgdm8bit_layout,
    .init = NULL,
    .step = sgdm8bit_step,
    .hessian = NULL,
};
