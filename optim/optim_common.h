// optim/optim_common.h: small helpers shared by the optimizer files (header only, static inline).
//
// Scalars the PyTorch way. The reference implementations are PyTorch code in which hyperparameters
// are Python floats (double): an expression like `1 - lr * weight_decay` or `1 - beta1 ** step` is
// evaluated in double and rounded to fp32 once, when it meets an fp32 tensor. We do the same (the
// `double` casts below are deliberate), so our fp32 elementwise math sees the same constants as the
// reference and the tests can compare at a few ulps.
#ifndef OPTIM_OPTIM_COMMON_H
#define OPTIM_OPTIM_COMMON_H

#include <math.h>
#include "optim.h"

// Elementwise loops over big tensors run on all cores; small ones stay serial (a parallel region
// costs more than a few thousand fused multiply-adds). Every loop is elementwise, so the result does
// not depend on the thread count. Written as a macro so a build without OpenMP has no unknown-pragma
// warning.
#define OPTIM_OMP_MIN_NUMEL 32768
#define OPTIM_PRAGMA_(x) _Pragma(#x)
#ifdef _OPENMP
#define OPTIM_PARALLEL_FOR(n) OPTIM_PRAGMA_(omp parallel for schedule(static) if ((n) >= OPTIM_OMP_MIN_NUMEL))
#else
#define OPTIM_PARALLEL_FOR(n)
#endif

// Weight decay for this tensor: the trainer marks which tensors decay (2-D weight matrices in GPT-2
// practice; biases and LayerNorm gains do not); every optimizer honours the mark.
static inline float optim_wd(const OptHyper* h, const OptTensor* p) {
    return p->shape->decay ? h->weight_decay : 0.0f;
}

// Decoupled weight decay multiplier 1 - lr*wd (AdamW, Lion, SophiaG, LOMO), in double like Python.
static inline float optim_decay_factor(float lr, float wd) {
    return (float)(1.0 - (double)lr * (double)wd);
}

// 1 - c, in double like Python's `1 - beta1`, rounded to fp32 once.
static inline float optim_one_minus(float c) {
    return (float)(1.0 - (double)c);
}

// torch.sign: -1, 0 or +1, and sign(0) = sign(-0) = 0 (Lion and Sophia rely on sign(0) = 0).
static inline float optim_sign(float x) {
    return (float)((x > 0.0f) - (x < 0.0f));
}

// One entry of a layout.
static inline StateSpec optim_spec(const char* name, DType dtype, size_t count) {
    StateSpec s = { name, dtype, count };
    return s;
}

#endif
