// optim/adam8bit.c: bitsandbytes' block-wise 8-bit Adam (`-opt adam8bit`), AdamW (`-opt adamw8bit`)
// and paged AdamW (`-opt paged_adamw8bit`), as bitsandbytes' CUDA kernel
// kOptimizerStatic8bit2StateBlockwise (csrc/kernels.cu) computes them, on the CPU.
//
// State. m and v are stored as one byte per element plus one fp32 absmax per block of -qblock
// elements (optim/quant8.h): m with the signed dynamic map, v with the unsigned one.
//   bytes/param = 1 (m) + 1 (v) + 2 * 4 / qblock = 2.03125 at qblock 256 (bitsandbytes' default
//   since v0.44), 2.0039 at -qblock 2048 (the paper's B), versus 8 for fp32 Adam.
// Tensors with fewer than max(min_8bit_size, 4096) elements keep fp32 m and v (8 B/param), exactly as
// bitsandbytes does (its 4096 floor is hard-coded next to the min_8bit_size test). State names:
// m_q8, v_q8 (u8), m_absmax, v_absmax (f32) for quantized tensors; exp_avg, exp_avg_sq (f32) for the
// others. All state starts as zero bytes, as bitsandbytes' torch.zeros: code 0 with absmax 0 decodes
// to 0.
//
// The step, per block of qblock elements, in this order (fp32 throughout, t = 1, 2, ...):
//   c1 = 1 - beta1^t,  c2 = sqrt(1 - beta2^t)
//   step_size = -lr * c2 / c1                   bias correction folded into the step and into eps:
//   eps_hat = c2 * eps                           algebraically torch's  lr/c1 * m / (sqrt(v)/c2 + eps)
//   for each element with a finite gradient g:
//     v = beta2 * deq(v) + (1 - beta2) * g * g  (v first, then m, as the kernel does)
//     m = beta1 * deq(m) + (1 - beta1) * g
//   for a non-finite g (NaN, +-Inf): m = v = 0 and the element's update is skipped: bitsandbytes does
//     this silently; we also count it in OptStep.nonfinite so the trainer reports it.
//   absmax_m = max |m| and absmax_v = max |v| over the block, of the UPDATED moments
//   p = p + step_size * m / (sqrt(v) + eps_hat)
//   p = p * (1 - lr * wd)                       decoupled weight decay AFTER the step (torch's AdamW
//                                                decays before it: a difference of lr * wd * |update|)
//   m, v requantized with the new absmax: nearest code, plus the sign guard for m (quant8.h).
// p is updated from the fp32 m and v of this step; only what is stored for the next step is 8-bit.
// Scalars are fp32 as the kernel receives them: 1 - beta1, 1 - beta2 and 1 - lr*wd are computed in
// fp32 (optim_common.h's torch-style helpers would compute them in double). The math lives in
// optim/adam8bit.h, shared with the CUDA kernels (optim/adam8bit.cuh).
// The fp32 path for small tensors is bitsandbytes' 32-bit kernel (kOptimizer32bit2State), the same
// algebra with v += (1 - beta2) * (g * g) and no non-finite guard: a NaN gradient reaches m, v and p
// there, as in bitsandbytes and torch; it is still counted.
//
// adam8bit vs adamw8bit: the same kernel; only the default weight decay differs (0 vs 1e-2). So
// adam8bit with -c > 0 decays like AdamW, not like torch.optim.Adam's L2 term. paged_adamw8bit is
// adamw8bit whose state bitsandbytes allocates in CUDA managed memory and prefetches before each
// update; on the CPU there is nothing to page, so it is exactly adamw8bit.
// Weight decay applies to tensors the trainer marks `decay` (optim_wd); lr is the scheduled st->lr.
//
// A property of the algorithm worth knowing (bitsandbytes has it too; test/ref_optim_8bit.py shows it):
// v's smallest nonzero code is 3.25e-7 of the block's absmax, so an element whose |g| stays below
// ~4e-4 of the block's largest has its v stored as 0 while its m survives (m's map reaches 5.5e-7, and
// m ~ |g| where v ~ g^2). Its next update divides an EMA m by the sqrt of one step's g^2 and can be
// large. In a test matrix whose rows' gradient scales spanned 1e3 or more inside a 256-block, the
// parameters blew up within 12 steps; at a 100x spread 8-bit tracks fp32. Smaller blocks (-qblock 256
// rather than 2048) make such mixes rarer.
//
// Where we differ from the CUDA kernel, on purpose: beta^t is evaluated in double and rounded once
// (the kernel uses the fast __powf), divisions are exact (the kernel's __fdividef is approximate), and
// the padding lanes of a short last block, which the kernel loads as code 128 and folds into absmax,
// do not exist here (they could only matter if every real |m| in the block were below 5e-7 of the
// previous absmax). Every operation is rounded to fp32 in the kernel's order, with no fused
// multiply-add, so test/ref_optim_8bit.py can transcribe the step and match it code for code.
//
// Where a simplified sketch differs (see docs/optimizers.md): quantization is block-wise (one fp32 absmax
// per block of 256 or 2048) with non-linear dynamic maps (signed for m, unsigned for v), the absmax comes
// from the updated moments, the parameter update uses the fp32 moments before requantization, and small
// tensors keep fp32 state.
#include <math.h>
#include "optim_common.h"
#include "quant8.h"
#include "common/util.h"

// No fused multiply-adds, so the step is bit-reproducible and matches the test's transcription. GCC
// honours this; clang ignores it under -ffp-contract=fast, and the step may then differ from the
// transcription by ulps (still within test_optim_8bit's tolerances; clang -ffp-contract=on is exact).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim/adam8bit.h"   // after the pragma: the header's functions inline into the loops below

// bitsandbytes keeps fp32 state below min_8bit_size and, whatever min_8bit_size says, below 4096
// (quant8.h's q8_is_quantized).
static int adam8bit_is_quantized(const OptHyper* h, const ParamShape* s) { return q8_is_quantized(h, s->numel); }

static int adam8bit_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (!adam8bit_is_quantized(h, s)) {
        out[0] = optim_spec("exp_avg", DT_F32, s->numel);
        out[1] = optim_spec("exp_avg_sq", DT_F32, s->numel);
        return 2;
    }
    CHECK(h->qblock > 0);  // the trainer validates -qblock
    const size_t nblocks = q8_num_blocks(s->numel, (size_t)h->qblock);
    out[0] = optim_spec("m_q8", DT_U8, s->numel);
    out[1] = optim_spec("v_q8", DT_U8, s->numel);
    out[2] = optim_spec("m_absmax", DT_F32, nblocks);
    out[3] = optim_spec("v_absmax", DT_F32, nblocks);
    return 4;
}

// One block of n elements. The moments are computed twice (once for the new absmax, once to update
// p and requantize) rather than kept in scratch: the same fp32 operations on the same inputs give the
// same values, and a block needs no memory at any -qblock. Returns the non-finite gradient count.
static long adam8bit_block(Adam8bitScalars k, int decays, float* p, const float* g, uint8_t* cm, uint8_t* cv,
                           float* am, float* av, size_t n) {
    const Q8Map* mmap = q8_map_signed();    // for m
    const Q8Map* vmap = q8_map_unsigned();  // for v
    const float am_old = *am, av_old = *av;
    float am_new = 0.0f, av_new = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float m, v;
        adam8bit_moments(k, mmap->code, vmap->code, g[i], cm[i], cv[i], am_old, av_old, &m, &v);
        // max |.| as the kernel's fmaxf (which skips NaN), written as a compare so it stays inline
        if (fabsf(m) > am_new) am_new = fabsf(m);
        if (fabsf(v) > av_new) av_new = fabsf(v);
    }
    long nonfinite = 0;
    for (size_t i = 0; i < n; i++) {
        float m, v;
        adam8bit_moments(k, mmap->code, vmap->code, g[i], cm[i], cv[i], am_old, av_old, &m, &v);
        if (isfinite(g[i])) p[i] = adam8bit_param(k, decays, p[i], m, v);
        else nonfinite++;
        cm[i] = q8_quantize(mmap, 1, m, am_new);
        cv[i] = q8_quantize(vmap, 0, v, av_new);
    }
    *am = am_new;
    *av = av_new;
    return nonfinite;
}

#ifdef _OPENMP
#define ADAM8BIT_PARALLEL_FOR(n) \
    OPTIM_PRAGMA_(omp parallel for schedule(static) reduction(+ : nonfinite) if ((n) >= OPTIM_OMP_MIN_NUMEL))
#else
#define ADAM8BIT_PARALLEL_FOR(n)
#endif

static long adam8bit_step_quantized(Adam8bitScalars k, const OptHyper* h, OptTensor* p) {
    const int decays = p->shape->decay;
    const size_t n = p->shape->numel, block = (size_t)h->qblock;
    const size_t nblocks = q8_num_blocks(n, block);
    float* theta = p->param;              // (numel)
    const float* grad = p->grad;          // (numel)
    uint8_t* cm = (uint8_t*)p->state[0];  // (numel) m codes
    uint8_t* cv = (uint8_t*)p->state[1];  // (numel) v codes
    float* am = (float*)p->state[2];      // (nblocks) m absmax
    float* av = (float*)p->state[3];      // (nblocks) v absmax
    long nonfinite = 0;
    ADAM8BIT_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) {
        const size_t lo = b * block, len = lo + block < n ? block : n - lo;
        nonfinite += adam8bit_block(k, decays, theta + lo, grad + lo, cm + lo, cv + lo, am + b, av + b, len);
    }
    return nonfinite;
}

static long adam8bit_step_fp32(Adam8bitScalars k, OptTensor* p) {
    const size_t n = p->shape->numel;
    const int decays = p->shape->decay;
    float* theta = p->param;          // (numel)
    const float* grad = p->grad;      // (numel)
    float* m = (float*)p->state[0];   // (numel) exp_avg
    float* v = (float*)p->state[1];   // (numel) exp_avg_sq
    long nonfinite = 0;
    ADAM8BIT_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) {
        nonfinite += !isfinite(grad[i]);
        theta[i] = adam8bit_fp32_update(theta[i], grad[i], m + i, v + i, k, decays);
    }
    return nonfinite;
}

static void adam8bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Adam8bitScalars k = adam8bit_scalars(h, st->lr, st->t);
    st->nonfinite += adam8bit_is_quantized(h, p->shape) ? adam8bit_step_quantized(k, h, p)
                                                         : adam8bit_step_fp32(k, p);
}

#define ADAM8BIT_DEFAULTS(wd)                                                                   \
    { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = (wd), .qblock = 256, \
      .min_8bit_size = 4096 }
#define ADAM8BIT_PAPER "Dettmers et al. 2022, 8-bit Optimizers via Block-wise Quantization, arXiv 2110.02861"

const Optimizer OPT_ADAM8BIT = {
    .name = "adam8bit",
    .description = "bitsandbytes Adam8bit: m, v in 8 bits (dynamic maps, fp32 absmax per -qblock), wd 0",
    .paper = ADAM8BIT_PAPER,
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    .defaults = ADAM8BIT_DEFAULTS(0.0),
    .layout = adam8bit_layout,
    .init = NULL,
    .step = adam8bit_step,
    .hessian = NULL,
};

const Optimizer OPT_ADAMW8BIT = {
    .name = "adamw8bit",
    .description = "bitsandbytes AdamW8bit: adam8bit with decoupled weight decay 1e-2 after the step",
    .paper = ADAM8BIT_PAPER,
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    .defaults = ADAM8BIT_DEFAULTS(1e-2),
    .layout = adam8bit_layout,
    .init = NULL,
    .step = adam8bit_step,
    .hessian = NULL,
};

const Optimizer OPT_PAGED_ADAMW8BIT = {
    .name = "paged_adamw8bit",
    .description = "bitsandbytes PagedAdamW8bit: on the CPU exactly adamw8bit; on the GPU its state lives in managed memory",
    .paper = ADAM8BIT_PAPER,
    .flags = 0,
    .shard = OPT_SHARD_QBLOCK,
    .defaults = ADAM8BIT_DEFAULTS(1e-2),
    .layout = adam8bit_layout,
    .init = NULL,
    .step = adam8bit_step,
    .hessian = NULL,
};
