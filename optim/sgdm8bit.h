// optim/sgdm8bit.h: bitsandbytes' SGD8bit (momentum) math, once, for the CPU loop (optim/sgdm8bit.c)
// and the CUDA kernel (optim/sgdm8bit.cuh): the per-step scalars (host) and the per-element update (HD).
// The scalars are fp32, as bitsandbytes' kernels receive them. See sgdm8bit.c for the algorithm.
//
// CPU and GPU must give the same bits (the 8-bit codes are compared exactly): every operation is one of
// optim_common.h's FADD_RN/FSUB_RN/FMUL_RN, so nvcc never fuses a multiply-add, and the host side is
// compiled with fp-contract off (the pragma below for gcc; sgdm8bit.c turns it off for its loops too).
#ifndef OPTIM_SGDM8BIT_H
#define OPTIM_SGDM8BIT_H

#include "common/numerics.h"
#include "optim/optim_common.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define SGDM8BIT_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

typedef struct {
    float lr;
    float momentum;   // beta1 of the kernel
    float wd;
    int decays;       // wd > 0 (and the tensor must be marked decay)
    int first;        // step 1: the buffer is set to the gradient
} Sgdm8bitScalars;

// This step's scalars: lr is the scheduled learning rate, t the step number (1-based).
static inline Sgdm8bitScalars sgdm8bit_scalars(const OptHyper* h, double lr, int t) {
    Sgdm8bitScalars k;
    k.lr = (float)lr;
    k.momentum = (float)h->momentum;
    k.wd = (float)h->weight_decay;
    k.decays = k.wd > 0.0f;
    k.first = t == 1;
    return k;
}

// One element, both kernels (8-bit blockwise and the 32-bit one for small tensors): coupled L2
// (g += p*wd on a tensor marked decay), buffer = g on step 1 else momentum*buffer + g (no dampening),
// then p - lr * buffer (the 32-bit kernel writes p + 1.0f * (-lr * buffer): the same fp32 value). s is
// the old buffer (dequantized), *p the parameter; returns the new buffer.
HD static inline float sgdm8bit_update(const Sgdm8bitScalars* k, int decays, float* p, float s, float g) {
    if (decays && k->decays) g = FADD_RN(g, FMUL_RN(*p, k->wd));
    s = k->first ? g : FADD_RN(FMUL_RN(s, k->momentum), g);
    *p = FSUB_RN(*p, FMUL_RN(k->lr, s));
    return s;
}

#ifdef SGDM8BIT_NO_CONTRACT
#pragma GCC pop_options
#undef SGDM8BIT_NO_CONTRACT
#endif

#endif
