// optim/sgdm8bit.h: bitsandbytes' SGD8bit (momentum) math, once, for the CPU loop (optim/sgdm8bit.c)
// and a future CUDA kernel. The scalars are fp32, as bitsandbytes' kernels receive them. See
// sgdm8bit.c for the algorithm.
#ifndef OPTIM_SGDM8BIT_H
#define OPTIM_SGDM8BIT_H

#include "common/numerics.h"

typedef struct {
    float lr;
    float momentum;   // beta1 of the kernel
    float wd;
    int decays;       // wd > 0
    int first;        // step 1: the buffer is set to the gradient
} Sgdm8bitScalars;

// One element, both kernels (8-bit blockwise and the 32-bit one for small tensors): coupled L2
// (g += p*wd), buffer = g on step 1 else momentum*buffer + g (no dampening). Returns the new buffer;
// the caller applies sgdm8bit_param with it.
HD static inline float sgdm8bit_buffer(const Sgdm8bitScalars* k, float s, float g, float p) {
    if (k->decays) g = g + p * k->wd;
    return k->first ? g : s * k->momentum + g;
}

// p - lr * buffer (the 32-bit kernel writes p + 1.0f * (-lr * buffer): the same fp32 value).
HD static inline float sgdm8bit_param(const Sgdm8bitScalars* k, float p, float s) { return p - k->lr * s; }

#endif
