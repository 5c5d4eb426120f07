// optim/adam.h: the math of adam and adamw (optim/adam.c explains it), once for both backends: the
// per-step scalars, computed on the host in double from the Python-float hyperparameters and rounded to
// fp32 once each, and the per-element update (HD: adam.c's loop and adam.cuh's kernel call it).
#ifndef OPTIM_ADAM_H
#define OPTIM_ADAM_H

#include "optim/optim_common.h"

typedef struct {
    float beta1, beta2, eps;
    float one_minus_beta1, one_minus_beta2;
    float step_size;   // lr / (1 - beta1^t)
    float bc2_sqrt;    // sqrt(1 - beta2^t)
    float decay;       // adamw: 1 - lr * wd for decaying tensors (non-decaying: 1)
    float l2;          // adam: wd for decaying tensors (non-decaying: 0)
    int decoupled;     // adamw
} AdamScalars;

// t: the step (1-based); lr: this step's lr; decoupled: AdamW's weight decay instead of Adam's L2.
static inline AdamScalars adam_scalars(const OptHyper* h, double lr, int t, int decoupled) {
    AdamScalars s;
    s.beta1 = (float)h->beta1;
    s.beta2 = (float)h->beta2;
    s.eps = (float)h->eps;
    s.one_minus_beta1 = optim_one_minus(h->beta1);
    s.one_minus_beta2 = optim_one_minus(h->beta2);
    const double bc1 = 1.0 - pow(h->beta1, (double)t);
    const double bc2 = 1.0 - pow(h->beta2, (double)t);
    s.step_size = (float)(lr / bc1);
    s.bc2_sqrt = (float)sqrt(bc2);
    s.decoupled = decoupled;
    s.decay = decoupled ? optim_decay_factor(lr, h->weight_decay) : 1.0f;
    s.l2 = decoupled ? 0.0f : (float)h->weight_decay;
    return s;
}

// One element, in torch's order; updates *m, *v, returns the new theta. decays: the tensor takes
// weight decay (the trainer's mark).
HD static inline float adam_update(float th, float g, float* m, float* v, AdamScalars s, int decays) {
    const float l2 = decays ? s.l2 : 0.0f;
    if (l2 != 0.0f) g = g + l2 * th;
    if (s.decoupled) th = th * (decays ? s.decay : 1.0f);
    const float mi = s.beta1 * (*m) + s.one_minus_beta1 * g;
    const float vi = s.beta2 * (*v) + s.one_minus_beta2 * g * g;
    *m = mi;
    *v = vi;
    const float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
    return th + (-s.step_size * mi) / denom;
}

#endif
