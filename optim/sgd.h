// optim/sgd.h: the math of sgd and sgdm (optim/sgd.c explains it), once for both backends: the per-step
// scalars (host, from the Python-float hyperparameters) and the per-element update (HD: the CPU loop in
// sgd.c and the CUDA kernel in sgd.cuh call the same function).
#ifndef OPTIM_SGD_H
#define OPTIM_SGD_H

#include "optim/optim_common.h"

typedef struct {
    float lr;        // this step's lr (torch's alpha=-lr, rounded to fp32)
    float wd;        // coupled L2 of the tensors marked decay (the others use 0)
    float momentum;  // mu; sgdm with momentum 0 keeps no buffer and is sgd
    int nesterov;
} SgdScalars;

static inline SgdScalars sgd_scalars(const OptHyper* h, double lr) {
    SgdScalars s;
    s.lr = (float)lr;
    s.wd = (float)h->weight_decay;
    s.momentum = (float)h->momentum;
    s.nesterov = h->nesterov;
    return s;
}

// theta = theta - lr * (g + wd * theta)        (coupled L2, only when wd != 0)
HD static inline float sgd_update(float th, float g, SgdScalars s, int decays) {
    const float wd = decays ? s.wd : 0.0f;
    float d = g;
    if (wd != 0.0f) d = d + wd * th;
    return th - s.lr * d;
}

// b = mu * b + d; d = nesterov ? d + mu * b : b; theta = theta - lr * d
HD static inline float sgdm_update(float th, float g, float* buf, SgdScalars s, int decays) {
    const float wd = decays ? s.wd : 0.0f;
    float d = g;
    if (wd != 0.0f) d = d + wd * th;
    const float b = s.momentum * (*buf) + d;   // dampening 0: torch adds d with alpha 1
    *buf = b;
    d = s.nesterov ? d + s.momentum * b : b;
    return th - s.lr * d;
}

#endif
