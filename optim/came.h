// optim/came.h: the math of CAME (optim/came.c explains it) that the CPU loop and the CUDA kernels
// (optim/factored.cuh) share: the per-step scalars, computed on the host in double from the
// Python-float hyperparameters, and the per-element pieces (HD). The factored second moment and the
// factored instability use optim/factored.h's.
#ifndef OPTIM_CAME_H
#define OPTIM_CAME_H

#include "optim/optim_common.h"
#include "optim/factored.h"

typedef struct {
    float eps1;             // added to g^2
    float b1, omb1;         // first moment of the clipped update
    float b2, omb2;         // second moment (constant beta2)
    float b3, omb3;         // the instability's EMA
    float eps2;             // added to the residual
    double clip_threshold;
    double beta2, beta3;    // as typed (factored.c's EMAs round them, and 1 - them, once)
    float lr;               // this step's lr
    double lr_d;            // the same, as a Python float (the decay alpha -wd*lr is computed in double)
    double wd;              // weight decay of decaying tensors (the others use 0)
} CameScalars;

static inline CameScalars came_scalars(const OptHyper* h, double lr) {
    CameScalars s;
    s.eps1 = (float)h->eps;
    s.b1 = (float)h->beta1;
    s.omb1 = optim_one_minus(h->beta1);
    s.b2 = (float)h->beta2;
    s.omb2 = optim_one_minus(h->beta2);
    s.b3 = (float)h->beta3;
    s.omb3 = optim_one_minus(h->beta3);
    s.eps2 = (float)h->eps2;
    s.clip_threshold = h->clip_threshold;
    s.beta2 = h->beta2;
    s.beta3 = h->beta3;
    s.lr = (float)lr;
    s.lr_d = lr;
    s.wd = h->weight_decay;
    return s;
}

// The clipped update U of one element (pre: the second moment's V^-1/2 there).
HD static inline float came_u(float pre, float g, float clip_div) { return pre * g / clip_div; }

// The new momentum m = b1*m + (1-b1)*U, stored and returned.
HD static inline float came_momentum(float* m, float u, CameScalars s) {
    const float mk = fac_ema(*m, s.b1, s.omb1, u);
    *m = mk;
    return mk;
}

// The instability residual (U - m)^2 + eps2, with the clipped U and the new m.
HD static inline float came_residual(float u, float mk, CameScalars s) {
    const float d = u - mk;
    return d * d + s.eps2;
}

// theta += (-wd*lr)*theta (when the tensor decays), then theta -= conf*m*lr: conf is the instability's
// S^-1/2 for a matrix and 1 for a vector (1*m is m exactly, so a vector's step is theta - m*lr).
HD static inline float came_apply(float th, float conf, float mk, CameScalars s, double wd, float wd_alpha) {
    return fac_decay(th, wd, wd_alpha) - conf * mk * s.lr;
}

#endif
