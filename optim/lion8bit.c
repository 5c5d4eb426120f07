// optim/lion8bit.c: bitsandbytes' Lion8bit (`-opt lion8bit`): Lion (optim/lion.c) with its one
// momentum state stored in 8 bits, block-wise, as bitsandbytes' CUDA kernel
// kOptimizerStatic8bit1StateBlockwise<LION> (csrc/kernels.cu) computes it, on the CPU.
//
// State, as adamw8bit's m (optim/quant8.h): one byte per element with the signed dynamic map plus one
// fp32 absmax per block of -qblock elements (256 by default, bitsandbytes' 1-state block size):
//   bytes/param = 1 + 4/qblock = 1.0156 at qblock 256. State names state1_q8 (u8), absmax1 (f32).
// Tensors with fewer than max(min_8bit_size, 4096) elements keep an fp32 state1 (4 B/param), as
// bitsandbytes does. All state starts as zero bytes (code 0 with absmax 0 decodes to 0).
//
// The 8-bit step, per block, in the kernel's order (fp32 throughout; 1 - beta and 1 - lr*wd computed
// in fp32 as the kernel does):
//   for each element: p = p * (1 - lr*wd)                        decoupled decay, only when wd > 0
//                     s = code[c] * absmax_old                    dequantize
//                     p = p - lr * sgn(beta1*s + (1-beta1)*g)      sgn(0) = 0
//                     s = beta2*s + (1-beta2)*g
//   absmax_new = max |s| over the block (of the UPDATED momentum)
//   c = nearest code of s / absmax_new, with the sign guard (quant8.h)
// The 32-bit kernel that bitsandbytes runs for small tensors (kOptimizer32bit1State<LION>) differs in
// one place: it adds the weight decay to the gradient (g += p*wd, coupled, for every 1-state optimizer),
// so lion8bit's small 2-D tensors with -c > 0 decay like L2, its big ones decoupled. In GPT-2 every
// tensor that decays is big, so this never shows in training; the test checks both paths.
// Non-finite gradients: the 1-state kernels have no guard (unlike the 2-state Adam kernel); a NaN
// reaches s and p as in bitsandbytes. We count them in OptStep.nonfinite for the trainer.
// Differences from the kernel, on purpose, as adam8bit.c: exact division instead of __fdividef, and no
// padding lanes in a short last block.
//
// Defaults (bitsandbytes Lion8bit): lr 1e-4, betas (0.9, 0.99), weight_decay 0, min_8bit_size 4096.
#include <math.h>
#include "optim_common.h"
#include "quant8.h"
#include "lion8bit.h"
#include "common/util.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define BNB_8BIT_FLOOR 4096  // bitsandbytes keeps fp32 state below max(min_8bit_size, 4096)

static int lion8bit_is_quantized(const OptHyper* h, const ParamShape* s) {
    size_t min_size = h->min_8bit_size > BNB_8BIT_FLOOR ? (size_t)h->min_8bit_size : BNB_8BIT_FLOOR;
    return s->numel >= min_size;
}

static int lion8bit_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (!lion8bit_is_quantized(h, s)) {
        out[0] = optim_spec("state1", DT_F32, s->numel);
        return 1;
    }
    CHECK(h->qblock > 0);
    out[0] = optim_spec("state1_q8", DT_U8, s->numel);
    out[1] = optim_spec("absmax1", DT_F32, q8_num_blocks(s->numel, (size_t)h->qblock));
    return 2;
}

static Lion8bitScalars lion8bit_scalars(const OptHyper* h, const OptTensor* p, const OptStep* st) {
    Lion8bitScalars k;
    k.lr = st->lr;
    k.beta1 = h->beta1;
    k.beta2 = h->beta2;
    k.one_minus_beta1 = 1.0f - h->beta1;
    k.one_minus_beta2 = 1.0f - h->beta2;
    k.wd = optim_wd(h, p);
    k.decay = 1.0f - k.lr * k.wd;
    k.decays = k.wd > 0.0f;
    return k;
}

// One block of n elements: new momenta once for the absmax, again to update p and requantize (same
// fp32 operations on the same inputs, so the same values, and no scratch at any -qblock).
static void lion8bit_block(const Lion8bitScalars* k, const Q8Map* map, float* p, const float* g, uint8_t* c,
                           float* absmax, size_t n) {
    const float am_old = *absmax;
    float am_new = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float th = p[i];
        const float s = lion8bit_update(k, &th, q8_dequantize(map, c[i], am_old), g[i]);
        if (fabsf(s) > am_new) am_new = fabsf(s);  // the kernel's fmaxf: NaN skipped
    }
    for (size_t i = 0; i < n; i++) {
        const float s = lion8bit_update(k, &p[i], q8_dequantize(map, c[i], am_old), g[i]);
        c[i] = q8_quantize(map, 1, s, am_new);
    }
    *absmax = am_new;
}

static long count_nonfinite(const float* g, size_t n) {
    long bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(g[i]);
    return bad;
}

static void lion8bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Lion8bitScalars k = lion8bit_scalars(h, p, st);
    const size_t n = p->shape->numel;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    st->nonfinite += count_nonfinite(g, n);
    if (!lion8bit_is_quantized(h, p->shape)) {
        float* s = (float*)p->state[0];   // (numel) state1
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) s[i] = lion8bit_update_fp32(&k, &theta[i], s[i], g[i]);
        return;
    }
    const size_t block = (size_t)h->qblock, nblocks = q8_num_blocks(n, block);
    uint8_t* c = (uint8_t*)p->state[0];   // (numel) state1 codes
    float* absmax = (float*)p->state[1];  // (nblocks) absmax1
    const Q8Map* map = q8_map_signed();
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * block, len = lo + block < n ? block : n - lo;
        lion8bit_block(&k, map, theta + lo, g + lo, c + lo, absmax + b, len);
    }
}

const Optimizer OPT_LION8BIT = {
    .name = "lion8bit",
    .description = "bitsandbytes Lion8bit: Lion's momentum in 8 bits (signed dynamic map, fp32 absmax per -qblock)",
    .paper = "Chen et al. 2023 (Lion), arXiv 2302.06675; Dettmers et al. 2022 (8-bit states), arXiv 2110.02861",
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    // lr 1e-3 as lion's (results/sweep/: lion's best on the default run; the 8-bit state tracks it)
    .defaults = { .lr = 1e-3, .beta1 = 0.9f, .beta2 = 0.99f, .weight_decay = 0.0f, .qblock = 256,
                  .min_8bit_size = 4096 },
    .layout = lion8bit_layout,
    .init = NULL,
    .step = lion8bit_step,
    .hessian = NULL,
};
