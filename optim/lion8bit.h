// optim/lion8bit.h: bitsandbytes' Lion8bit math, once, for the CPU loop (optim/lion8bit.c) and a future
// CUDA kernel. The scalars are fp32, as bitsandbytes' kernels receive and combine them (1 - beta and
// 1 - lr*wd are computed in fp32 inside the kernel). See lion8bit.c for the algorithm.
#ifndef OPTIM_LION8BIT_H
#define OPTIM_LION8BIT_H

#include "common/numerics.h"

typedef struct {
    float lr;
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;  // 1.0f - beta, in fp32
    float decay;                             // 1.0f - lr * wd, in fp32
    float wd;
    int decays;                              // wd > 0
} Lion8bitScalars;

// bitsandbytes' sgn: -1, 0 or +1 (sgn(0) = 0).
HD static inline float lion8bit_sgn(float x) { return (float)((0.0f < x) - (x < 0.0f)); }

// The 8-bit kernel (kOptimizerStatic8bit1StateBlockwise, LION), one element: s is the dequantized
// momentum, *p the parameter. Weight decay is decoupled (p *= 1 - lr*wd), the sign of the beta1
// interpolation is the step, the momentum is updated with beta2. Returns the new momentum.
HD static inline float lion8bit_update(const Lion8bitScalars* k, float* p, float s, float g) {
    float th = *p;
    if (k->decays) th = th * k->decay;
    const float step = k->lr * lion8bit_sgn(s * k->beta1 + k->one_minus_beta1 * g);
    *p = th - step;
    return s * k->beta2 + k->one_minus_beta2 * g;
}

// The 32-bit kernel (kOptimizer32bit1State, LION) that bitsandbytes runs for small tensors: there the
// weight decay is added to the gradient (g += p*wd, coupled) for every optimizer, Lion included.
HD static inline float lion8bit_update_fp32(const Lion8bitScalars* k, float* p, float s, float g) {
    if (k->decays) g = g + *p * k->wd;
    *p = *p - 1.0f * (k->lr * lion8bit_sgn(s * k->beta1 + k->one_minus_beta1 * g));
    return s * k->beta2 + k->one_minus_beta2 * g;
}

#endif
