// optim/lion.cuh: the CUDA twin of optim/lion.c (`-opt lion`), one fused multi-tensor launch per step
// (optim/optim.cuh walks the chunk table). Same math, same order as lion.c; the scalars (1 - beta,
// the decay factor 1 - lr*wd) are computed on the host in double and rounded once, as optim_common.h does.
#ifndef OPTIM_LION_CUH
#define OPTIM_LION_CUH

#include "common/cuda_util.cuh"

typedef struct {
    float lr;
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float decay;       // 1 - lr * wd for decaying tensors (non-decaying tensors use 1: lion.c's wd 0)
} LionScalars;

// theta = theta * decay - lr * sign(beta1*m + (1-beta1)*g);  m = beta2*m + (1-beta2)*g
__device__ __forceinline__ float lion_update(float th, float g, float* m, const LionScalars& a, int decays) {
    const float mi = *m;
    const float c = a.beta1 * mi + a.one_minus_beta1 * g;
    const float s = (float)((c > 0.0f) - (c < 0.0f)); // torch.sign: sign(0) = 0
    th = th * (decays ? a.decay : 1.0f) - a.lr * s;
    *m = a.beta2 * mi + a.one_minus_beta2 * g;
    return th;
}

// As lion_step(): the decay factor in double like Python's 1 - lr * weight_decay.
static LionScalars lion_scalars(float lr, float beta1, float beta2, float wd) {
    LionScalars s;
    s.lr = lr;
    s.beta1 = beta1;
    s.beta2 = beta2;
    s.one_minus_beta1 = (float)(1.0 - (double)beta1);
    s.one_minus_beta2 = (float)(1.0 - (double)beta2);
    s.decay = (float)(1.0 - (double)lr * (double)wd);
    return s;
}

#endif
