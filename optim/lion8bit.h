// optim/lion8bit.h: bitsandbytes' Lion8bit math, once, for the CPU loop (optim/lion8bit.c) and the CUDA
// kernel (optim/lion8bit.cuh): the per-step scalars (host) and the per-element updates (HD). The scalars
// are fp32, as bitsandbytes' kernels receive and combine them (1 - lr*wd is computed in fp32 inside the
// kernel). See lion8bit.c for the algorithm.
//
// CPU and GPU must give the same bits (the 8-bit codes are compared exactly, as adam8bit's): every
// operation is one of optim_common.h's FADD_RN/FSUB_RN/FMUL_RN, so nvcc never fuses a multiply-add, and
// the host side is compiled with fp-contract off (the pragma below for gcc; lion8bit.c turns it off for
// its own loops too, which is where these functions are inlined).
#ifndef OPTIM_LION8BIT_H
#define OPTIM_LION8BIT_H

#include "common/numerics.h"
#include "optim/optim_common.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define LION8BIT_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

typedef struct {
    float lr;
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;  // 1 - beta, rounded to fp32
    float decay;                             // 1.0f - lr * wd, in fp32
    float wd;
    int decays;                              // wd > 0 (and the tensor must be marked decay)
} Lion8bitScalars;

// This step's scalars; lr is the scheduled learning rate. Weight decay applies to a tensor only when its
// mark says so (the `decays` argument of the updates below). The volatile keeps a host compiler from
// fusing lr*wd into the subtraction.
static inline Lion8bitScalars lion8bit_scalars(const OptHyper* h, double lr) {
    Lion8bitScalars k;
    k.lr = (float)lr;
    k.beta1 = (float)h->beta1;
    k.beta2 = (float)h->beta2;
    k.one_minus_beta1 = (float)(1.0 - h->beta1);
    k.one_minus_beta2 = (float)(1.0 - h->beta2);
    k.wd = (float)h->weight_decay;
    volatile float lw = k.lr * k.wd;
    k.decay = 1.0f - lw;
    k.decays = k.wd > 0.0f;
    return k;
}

// bitsandbytes' sgn: -1, 0 or +1 (sgn(0) = 0).
HD static inline float lion8bit_sgn(float x) { return (float)((0.0f < x) - (x < 0.0f)); }

// The 8-bit kernel (kOptimizerStatic8bit1StateBlockwise, LION), one element: s is the dequantized
// momentum, *p the parameter, decays the tensor's mark. Weight decay is decoupled (p *= 1 - lr*wd), the
// sign of the beta1 interpolation is the step, the momentum is updated with beta2. Returns the new
// momentum.
HD static inline float lion8bit_update(const Lion8bitScalars* k, int decays, float* p, float s, float g) {
    float th = *p;
    if (decays && k->decays) th = FMUL_RN(th, k->decay);
    const float step = FMUL_RN(k->lr, lion8bit_sgn(FADD_RN(FMUL_RN(s, k->beta1), FMUL_RN(k->one_minus_beta1, g))));
    *p = FSUB_RN(th, step);
    return FADD_RN(FMUL_RN(s, k->beta2), FMUL_RN(k->one_minus_beta2, g));
}

// The 32-bit kernel (kOptimizer32bit1State, LION) that bitsandbytes runs for small tensors: there the
// weight decay is added to the gradient (g += p*wd, coupled) for every optimizer, Lion included. (The
// kernel writes p - 1.0f * (lr * sgn): the same fp32 value.)
HD static inline float lion8bit_update_fp32(const Lion8bitScalars* k, int decays, float* p, float s, float g) {
    if (decays && k->decays) g = FADD_RN(g, FMUL_RN(*p, k->wd));
    *p = FSUB_RN(*p, FMUL_RN(k->lr, lion8bit_sgn(FADD_RN(FMUL_RN(s, k->beta1), FMUL_RN(k->one_minus_beta1, g)))));
    return FADD_RN(FMUL_RN(s, k->beta2), FMUL_RN(k->one_minus_beta2, g));
}

#ifdef LION8BIT_NO_CONTRACT
#pragma GCC pop_options
#undef LION8BIT_NO_CONTRACT
#endif

#endif
