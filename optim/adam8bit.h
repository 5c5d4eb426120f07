// optim/adam8bit.h: the math of the 8-bit Adam family (optim/adam8bit.c explains it), once for both
// backends: the per-step scalars (fp32, as bitsandbytes' kernel receives them) and the per-element
// pieces of the step (HD: adam8bit.c's block loop and adam8bit.cuh's kernels call the same functions).
//
// CPU and GPU must give the same bits (the codes are compared exactly): every operation is one of
// optim_common.h's FADD_RN/FMUL_RN/FDIV_RN/FSQRT_RN, in the kernel's order, so nvcc never fuses a
// multiply-add; on the host the functions below are compiled with fp-contract off (the pragma here
// for gcc; a file that includes this header should also turn contraction off for its own loops, as
// adam8bit.c does, or gcc will not inline these into them).
#ifndef OPTIM_ADAM8BIT_H
#define OPTIM_ADAM8BIT_H

#include <math.h>
#include "optim/optim_common.h"
#include "optim/quant8.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define ADAM8BIT_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

typedef struct {
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float step_size;  // -lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    float eps_hat;    // sqrt(1 - beta2^t) * eps
    float decay;      // 1 - lr * wd (applied to tensors marked decay, when wd > 0)
    int decays;       // wd > 0
} Adam8bitScalars;

// In fp32 as the kernel receives them: beta, eps, lr and wd are fp32 kernel arguments there, so
// 1 - beta and 1 - lr*wd are fp32 operations (not Python doubles); beta^t is evaluated in double and
// rounded once. The volatiles keep a host compiler from fusing -lr*c2 or lr*wd into what follows.
static inline Adam8bitScalars adam8bit_scalars(const OptHyper* h, double lr, int t) {
    Adam8bitScalars k;
    const float beta1 = (float)h->beta1, beta2 = (float)h->beta2, eps = (float)h->eps;
    const float lr_f = (float)lr, wd = (float)h->weight_decay;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.one_minus_beta1 = 1.0f - beta1;
    k.one_minus_beta2 = 1.0f - beta2;
    const float c1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float c2 = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    volatile float nlc2 = -lr_f * c2;
    k.step_size = nlc2 / c1;
    k.eps_hat = c2 * eps;
    volatile float lw = lr_f * wd;
    k.decay = 1.0f - lw;
    k.decays = wd > 0.0f;
    return k;
}

// p after one Adam update with new moments m, v (callers skip elements with a non-finite g):
// p + step_size * (m / (sqrt(v) + eps_hat)), then the decoupled decay. decays: the tensor's mark.
HD static inline float adam8bit_param(Adam8bitScalars k, int decays, float p, float m, float v) {
    p = FADD_RN(p, FMUL_RN(k.step_size, FDIV_RN(m, FADD_RN(FSQRT_RN(v), k.eps_hat))));
    if (decays && k.decays) p = FMUL_RN(p, k.decay);
    return p;
}

// New m, v of one element from its codes and the block's old absmax (mcode: the signed map, vcode: the
// unsigned one); 0, 0 for a non-finite g. v first, then m, as the kernel.
HD static inline void adam8bit_moments(Adam8bitScalars k, const float* mcode, const float* vcode, float g,
                                       uint8_t cm, uint8_t cv, float am, float av, float* m, float* v) {
    if (!isfinite(g)) { *m = 0.0f; *v = 0.0f; return; }
    *v = FADD_RN(FMUL_RN(FMUL_RN(vcode[cv], av), k.beta2), FMUL_RN(FMUL_RN(k.one_minus_beta2, g), g));
    *m = FADD_RN(FMUL_RN(FMUL_RN(mcode[cm], am), k.beta1), FMUL_RN(k.one_minus_beta1, g));
}

// The fp32-state path of small tensors: bitsandbytes' 32-bit kernel, no non-finite guard.
HD static inline float adam8bit_fp32_update(float th, float g, float* m, float* v, Adam8bitScalars k, int decays) {
    const float mi = FADD_RN(FMUL_RN(*m, k.beta1), FMUL_RN(k.one_minus_beta1, g));
    const float vi = FADD_RN(FMUL_RN(*v, k.beta2), FMUL_RN(k.one_minus_beta2, FMUL_RN(g, g)));
    *m = mi;
    *v = vi;
    return adam8bit_param(k, decays, th, mi, vi);
}

#ifdef ADAM8BIT_NO_CONTRACT
#pragma GCC pop_options
#undef ADAM8BIT_NO_CONTRACT
#endif

#endif
