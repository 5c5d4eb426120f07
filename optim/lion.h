// optim/lion.h: the math of lion (optim/lion.c explains it), once for both backends: the per-step
// scalars (host, double, rounded to fp32 once) and the per-element update (HD: lion.c's loop and
// lion.cuh's kernel call it).
#ifndef OPTIM_LION_H
#define OPTIM_LION_H

#include "optim/optim_common.h"

typedef struct {
    float lr;
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float decay;       // 1 - lr * wd for decaying tensors (non-decaying tensors use 1)
} LionScalars;

static inline LionScalars lion_scalars(const OptHyper* h, double lr) {
    LionScalars s;
    s.lr = (float)lr;
    s.beta1 = (float)h->beta1;
    s.beta2 = (float)h->beta2;
    s.one_minus_beta1 = optim_one_minus(h->beta1);
    s.one_minus_beta2 = optim_one_minus(h->beta2);
    s.decay = optim_decay_factor(lr, h->weight_decay);
    return s;
}

// theta = theta * decay - lr * sign(beta1*m + (1-beta1)*g);  m = beta2*m + (1-beta2)*g
HD static inline float lion_update(float th, float g, float* m, LionScalars s, int decays) {
    const float mi = *m;
    const float c = s.beta1 * mi + s.one_minus_beta1 * g;
    th = th * (decays ? s.decay : 1.0f) - s.lr * optim_sign(c);
    *m = s.beta2 * mi + s.one_minus_beta2 * g;
    return th;
}

#endif
