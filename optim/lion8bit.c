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
// The layout, the block loop (both passes) and the fp32 floor are quant8.h's 1-state pieces, shared
// with sgdm8bit.c; the per-element math is lion8bit.h's, which the CUDA kernel (optim/lion8bit.cuh, one
// template shared with sgdm8bit) calls too, so the codes are equal on both sides.
// The 32-bit kernel that bitsandbytes runs for small tensors (kOptimizer32bit1State<LION>) differs in
// one place: it adds the weight decay to the gradient (g += p*wd, coupled, for every 1-state optimizer),
// so lion8bit's small 2-D tensors with -c > 0 decay like L2, its big ones decoupled. In GPT-2 every
// tensor that decays is big, so this never shows in training; the test checks both paths.
// Non-finite gradients: the 1-state kernels have no guard (unlike the 2-state Adam kernel); a NaN
// reaches s and p as in bitsandbytes. We count them in OptStep.nonfinite for the trainer.
// Differences from the kernel, on purpose, as adam8bit.c: exact division instead of __fdividef, and no
// padding lanes in a short last block.
//
// Defaults: lr 1e-3 (lion's; bitsandbytes' Lion8bit defaults to 1e-4), betas (0.9, 0.99), weight_decay 0,
// qblock 256, min_8bit_size 4096 (bitsandbytes').
#include <math.h>
#include "common/util.h"

// No fused multiply-adds, so CPU and GPU agree bit for bit (lion8bit.h). GCC honours this; clang ignores
// it under -ffp-contract=fast (see adam8bit.c).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim_common.h"
#include "quant8.h"
#include "lion8bit.h"   // after the pragma, as adam8bit.c: the header's functions inline into the loops below

// lion8bit.h's update behind quant8.h's element interface (a constant pointer: inlined in the loop).
static float lion8bit_elem(const void* k, int decays, float* p, float s, float g) {
    return lion8bit_update((const Lion8bitScalars*)k, decays, p, s, g);
}

static void lion8bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Lion8bitScalars k = lion8bit_scalars(h, st->lr);
    const int decays = p->shape->decay;
    const size_t n = p->shape->numel;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    st->nonfinite += q8_count_nonfinite(g, n);
    if (!q8_is_quantized(h, n)) {
        float* s = (float*)p->state[0];   // (numel) state1
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) s[i] = lion8bit_update_fp32(&k, decays, &theta[i], s[i], g[i]);
        return;
    }
    const size_t block = (size_t)h->qblock, nblocks = q8_num_blocks(n, block);
    uint8_t* c = (uint8_t*)p->state[0];   // (numel) state1 codes
    float* absmax = (float*)p->state[1];  // (nblocks) absmax1
    const Q8Map* map = q8_map_signed();
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * block, len = lo + block < n ? block : n - lo;
        q8_block_1state(lion8bit_elem, &k, decays, map, theta + lo, g + lo, c + lo, absmax + b, len);
    }
}

const Optimizer OPT_LION8BIT = {
    .name = "lion8bit",
    .description = "bitsandbytes Lion8bit: Lion's momentum in 8 bits (signed dynamic map, fp32 absmax per -qblock)",
    .paper = "Chen et al. 2023 (Lion), arXiv 2302.06675; Dettmers et al. 2022 (8-bit states), arXiv 2110.02861",
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    // lr 1e-3 as lion's (results/sweep/: lion's best on the default run; the 8-bit state tracks it)
    .defaults = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.99, .weight_decay = 0.0, .qblock = 256,
                  .min_8bit_size = 4096 },
    .layout = q8_layout_1state,
    .init = NULL,
    .step = lion8bit_step,
    .hessian = NULL,
};
