// optim/adafactor.h: the math of Adafactor (optim/adafactor.c explains it) that the CPU loop and the CUDA
// kernels (optim/factored.cuh) share: the per-step scalars, computed on the host in double from the
// Python-float hyperparameters, and the per-element update (HD). The factored second moment itself is
// optim/factored.h's.
#ifndef OPTIM_ADAFACTOR_H
#define OPTIM_ADAFACTOR_H

#include "optim/optim_common.h"
#include "optim/factored.h"

typedef struct {
    float eps1;             // added to g^2
    double beta2t;          // 1 - t^decay_rate
    float b2, omb2;         // beta2_t and 1 - beta2_t, each rounded once
    float b1, omb1;         // -beta1's momentum (used only with use_beta1)
    double clip_threshold;
    double rho;             // relative step min(1e-2, 1/sqrt(t)), or this step's lr with -l
    double eps2;            // floor of the parameter scale
    int scale_parameter;    // multiply rho by max(eps2, RMS(theta))
    double wd;              // weight decay of decaying tensors (the others use 0)
} AdafactorScalars;

// lr: this step's (scheduled) lr; t: the step, 1-based.
static inline AdafactorScalars adafactor_scalars(const OptHyper* h, double lr, int t) {
    AdafactorScalars s;
    const double tt = (double)t;
    const double beta2t = 1.0 - pow(tt, h->decay_rate);
    s.eps1 = (float)h->eps;
    s.beta2t = beta2t;
    s.b2 = (float)beta2t;
    s.omb2 = (float)(1.0 - beta2t);
    s.b1 = (float)h->beta1;
    s.omb1 = optim_one_minus(h->beta1);
    s.clip_threshold = h->clip_threshold;
    s.rho = h->relative_step ? fmin(1e-2, 1.0 / sqrt(tt)) : lr;
    s.eps2 = h->eps2;
    s.scale_parameter = h->scale_parameter;
    s.wd = h->weight_decay;
    return s;
}

// This tensor's step size lr_t = rho * max(eps2, RMS(theta)) (rms_theta: RMS of theta before the step).
HD static inline float adafactor_step_size(AdafactorScalars s, double rms_theta) {
    return (float)(s.rho * (s.scale_parameter ? fmax(s.eps2, rms_theta) : 1.0));
}

// One element: U = pre*g/clip_div*lr_t; with a momentum m (NULL without -beta1) U = EMA of U; then HF's
// weight decay theta += (-wd*lr_t)*theta and theta -= U. wd: this tensor's (0 if it does not decay),
// wd_alpha = fac_wd_alpha(wd, lr_t).
HD static inline float adafactor_update(float th, float g, float pre, float clip_div, float lr_t, float* m,
                                        AdafactorScalars s, double wd, float wd_alpha) {
    float u = pre * g / clip_div * lr_t;
    if (m) {
        *m = fac_ema(*m, s.b1, s.omb1, u);
        u = *m;
    }
    return fac_decay(th, wd, wd_alpha) - u;
}

#endif
