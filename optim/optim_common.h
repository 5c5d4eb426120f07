// optim/optim_common.h: small helpers shared by the optimizer files (header only, static inline).
//
// Included by the CPU loops (optim/NAME.c) and, through optim/NAME.h, by the CUDA kernels: what runs on
// both sides is marked HD (common/numerics.h).
//
// Scalars the PyTorch way. The reference implementations are PyTorch code in which hyperparameters
// are Python floats (double): an expression like `1 - lr * weight_decay` or `1 - beta1 ** step` is
// evaluated in double and rounded to fp32 once, when it meets an fp32 tensor. OptHyper keeps the
// hyperparameters as the doubles the user typed, and each optimizer's scalars function (optim/NAME.h)
// does the same arithmetic in double, so our fp32 elementwise math sees the same constants as the
// reference and the tests can compare at a few ulps.
#ifndef OPTIM_OPTIM_COMMON_H
#define OPTIM_OPTIM_COMMON_H

#include <math.h>
#include "common/numerics.h"
#include "optim/optim.h"

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
static inline double optim_wd(const OptHyper* h, const OptTensor* p) {
    return p->shape->decay ? h->weight_decay : 0.0;
}

// Decoupled weight decay multiplier 1 - lr*wd (AdamW, Lion, SophiaG, LOMO), in double like Python.
static inline float optim_decay_factor(double lr, double wd) {
    return (float)(1.0 - lr * wd);
}

// 1 - c, in double like Python's `1 - beta1` (c the double the user typed), rounded to fp32 once.
static inline float optim_one_minus(double c) {
    return (float)(1.0 - c);
}

// torch.sign: -1, 0 or +1, and sign(0) = sign(-0) = 0 (Lion and Sophia rely on sign(0) = 0).
HD static inline float optim_sign(float x) {
    return (float)((x > 0.0f) - (x < 0.0f));
}

// fp32 operations that must never fuse into a multiply-add (the 8-bit optimizers, whose CPU and GPU
// steps must agree bit for bit): on the device the explicit round-to-nearest intrinsics, which nvcc
// never contracts; on the host the plain operators, in a function compiled with fp-contract off (the
// including file's job: see optim/adam8bit.h). Macros, so nothing depends on inlining.
#ifdef __CUDA_ARCH__
#define FADD_RN(a, b) __fadd_rn((a), (b))
#define FSUB_RN(a, b) __fsub_rn((a), (b))
#define FMUL_RN(a, b) __fmul_rn((a), (b))
#define FDIV_RN(a, b) __fdiv_rn((a), (b))
#define FSQRT_RN(a) __fsqrt_rn(a)
#else
#define FADD_RN(a, b) ((a) + (b))
#define FSUB_RN(a, b) ((a) - (b))
#define FMUL_RN(a, b) ((a) * (b))
#define FDIV_RN(a, b) ((a) / (b))
#define FSQRT_RN(a) sqrtf(a)
#endif

// One entry of a layout.
static inline StateSpec optim_spec(const char* name, DType dtype, size_t count) {
    StateSpec s = { name, dtype, count };
    return s;
}

#endif
