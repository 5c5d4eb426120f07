// optim/lomo.h: the math of LOMO (optim/lomo.c explains it): the per-step scalars and the per-element
// update, HD so a CUDA kernel would call the same function (lomo has none: it needs the fused backward).
#ifndef OPTIM_LOMO_H
#define OPTIM_LOMO_H

#include "optim/optim_common.h"

typedef struct {
    float lr;
    float decay;   // 1 - lr * wd, applied only when wd > 0 on a decaying tensor (as the reference)
    int decays;    // wd > 0
} LomoScalars;

static inline LomoScalars lomo_scalars(const OptHyper* h, double lr) {
    LomoScalars s;
    s.lr = (float)lr;
    s.decay = optim_decay_factor(lr, h->weight_decay);
    s.decays = h->weight_decay > 0.0;
    return s;
}

// theta = theta * (1 - lr*wd) - lr*g      (the decay only when wd > 0 and the tensor decays)
HD static inline float lomo_update(float th, float g, LomoScalars s, int decays) {
    if (decays && s.decays) th = th * s.decay;
    return th - s.lr * g;
}

#endif
