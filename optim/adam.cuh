// optim/adam.cuh: the CUDA twins of optim/adam.c (`-opt adam`, `-opt adamw`), one fused multi-tensor
// launch per step (optim/optim.cuh). Same math, same order as adam.c; the scalars (bias
// corrections, 1 - beta, the decay factor) are computed on the host in double exactly as adam.c does.
#ifndef OPTIM_ADAM_CUH
#define OPTIM_ADAM_CUH

#include "common/cuda_util.cuh"

typedef struct {
    float beta1, beta2, eps;
    float one_minus_beta1, one_minus_beta2;
    float step_size;   // lr / (1 - beta1^t)
    float bc2_sqrt;    // sqrt(1 - beta2^t)
    float decay;       // adamw: 1 - lr * wd for decaying tensors (non-decaying: 1)
    float l2;          // adam: wd for decaying tensors (non-decaying: 0)
    int decoupled;
} AdamScalars;

__device__ __forceinline__ float adam_update(float th, float g, float* m, float* v, const AdamScalars& a, int decays) {
    const float l2 = decays ? a.l2 : 0.0f;
    if (l2 != 0.0f) g = g + l2 * th;
    if (a.decoupled) th = th * (decays ? a.decay : 1.0f);
    float mi = a.beta1 * (*m) + a.one_minus_beta1 * g;
    float vi = a.beta2 * (*v) + a.one_minus_beta2 * g * g;
    *m = mi;
    *v = vi;
    float denom = sqrtf(vi) / a.bc2_sqrt + a.eps;
    return th + (-a.step_size * mi) / denom;
}

#endif
