// optim/sophia.h: the math of SophiaG (optim/sophia.c explains it): the per-step scalars (host, double,
// rounded to fp32 once) and the per-element updates, HD: the CUDA kernels (optim/sophia.cuh) call the
// same functions.
#ifndef OPTIM_SOPHIA_H
#define OPTIM_SOPHIA_H

#include "optim/optim_common.h"

typedef struct {
    float lr;
    float beta1, one_minus_beta1;
    float beta2, one_minus_beta2;   // the Hessian EMA
    float rho_bs;                   // rho * bs, in double as Python computes it
    float decay;                    // 1 - lr * wd for decaying tensors (non-decaying tensors use 1)
} SophiaScalars;

static inline SophiaScalars sophia_scalars(const OptHyper* h, double lr) {
    SophiaScalars s;
    s.lr = (float)lr;
    s.beta1 = (float)h->beta1;
    s.one_minus_beta1 = optim_one_minus(h->beta1);
    s.beta2 = (float)h->beta2;
    s.one_minus_beta2 = optim_one_minus(h->beta2);
    s.rho_bs = (float)(h->rho * h->bs);
    s.decay = optim_decay_factor(lr, h->weight_decay);
    return s;
}

// theta = theta*decay; m = beta1*m + (1-beta1)*g; theta -= lr * sign(m) * min(|m| / (rho*bs*h + 1e-15), 1)
HD static inline float sophia_update(float th, float g, float* m, float hess, SophiaScalars s, int decays) {
    const float tiny = 1e-15f;          // the reference's guard against h = 0
    th = th * (decays ? s.decay : 1.0f);
    const float mi = s.beta1 * (*m) + s.one_minus_beta1 * g;
    *m = mi;
    float ratio = fabsf(mi) / (s.rho_bs * hess + tiny);
    if (ratio > 1.0f) ratio = 1.0f;     // clamp(max=1); a NaN stays NaN, as in torch
    return th - s.lr * optim_sign(mi) * ratio;
}

// h = beta2*h + (1-beta2)*g_hat*g_hat, g_hat the GNB gradient
HD static inline float sophia_hessian_update(float hess, float ghat, SophiaScalars s) {
    return s.beta2 * hess + s.one_minus_beta2 * ghat * ghat;
}

#endif
