// optim/adalomo.h: the math of AdaLomo (optim/adalomo.c explains it) that the CPU loop and the CUDA
// kernels (optim/adalomo.cuh) share: the per-tensor scalars and the per-element update (HD). The
// factored second moment itself is optim/factored.h's (the same as Adafactor's).
#ifndef OPTIM_ADALOMO_H
#define OPTIM_ADALOMO_H

#include <math.h>
#include "optim/optim_common.h"
#include "optim/factored.h"

// A tensor's step: lr_t = lr * max(eps2, RMS(theta)) (theta before this step), in double, rounded once.
// (Adafactor's adafactor_step_size with rho = lr and scale_parameter on: the same expression.)
static inline float adalomo_lr_t(double lr, double eps2, double rms_theta) { return (float)(lr * fmax(eps2, rms_theta)); }

typedef struct {
    float neg_lr;   // -lr_t
    float decay;    // 1 - lr_t*wd, in double, rounded once (applied only when wd > 0)
    int decays;     // wd > 0 (wd: this tensor's, 0 where the trainer marks no decay)
} AdalomoTensorScalars;

HD static inline AdalomoTensorScalars adalomo_tensor_scalars(float lr_t, double wd) {
    AdalomoTensorScalars s;
    s.neg_lr = -lr_t;
    s.decay = (float)(1.0 - (double)lr_t * wd);
    s.decays = wd > 0.0;
    return s;
}

// One element: U = pre*g/clip_div (pre = V^-1/2 of the factored or full second moment, clip_div the
// update clipping divisor), theta = theta*(1 - lr_t*wd) - lr_t*U.
HD static inline float adalomo_update(float th, float g, float pre, float clip_div, AdalomoTensorScalars s) {
    const float u = pre * g / clip_div;
    if (s.decays) th = th * s.decay;
    return th + s.neg_lr * u;
}

#endif
