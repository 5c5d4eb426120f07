// optim/sgd.cuh: the CUDA twins of optim/sgd.c (`-opt sgd`, `-opt sgdm`): one fused multi-tensor
// launch per step (optim/optim.cuh walks the chunk table). The per-element math is sgd.c's, line
// for line and in the same order, so results match the CPU to rounding of fused multiply-adds.
#ifndef OPTIM_SGD_CUH
#define OPTIM_SGD_CUH

#include "common/cuda_util.cuh"

// theta = theta - lr * (g + wd * theta)        (coupled L2, only when wd != 0)
__device__ __forceinline__ float sgd_update(float th, float g, float lr, float wd) {
    float d = g;
    if (wd != 0.0f) d = d + wd * th;
    return th - lr * d;
}

// b = mu * b + d; d = nesterov ? d + mu * b : b; theta = theta - lr * d
__device__ __forceinline__ float sgdm_update(float th, float g, float* buf, float lr, float wd, float mu, int nesterov) {
    float d = g;
    if (wd != 0.0f) d = d + wd * th;
    float b = mu * (*buf) + d;
    *buf = b;
    d = nesterov ? d + mu * b : b;
    return th - lr * d;
}

#endif
