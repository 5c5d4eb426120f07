// optim/adam_mini.h: Adam-mini's math, once, for the CPU loop (optim/adam_mini.c) and a future CUDA
// kernel. Scalars are computed on the host in double and rounded to fp32 once (Python floats meeting
// fp32 tensors); the per-element functions are HD (host and device). See adam_mini.c for the algorithm.
#ifndef OPTIM_ADAM_MINI_H
#define OPTIM_ADAM_MINI_H

#include <math.h>
#include "common/numerics.h"

typedef struct {
    float lr;
    float decay;            // 1 - lr*wd
    int decays;             // wd > 0: the official code multiplies only then
    float beta2;
    float one_minus_beta1;  // lerp weight of m
    float one_minus_beta2;
    float bc2_sqrt;         // sqrt(1 - beta2^t)
    float inv_bc1;          // 1 / (1 - beta1^t), the block branches' (1 / bias_correction_1)
    float step_size;        // lr / (1 - beta1^t), the Adam branch's
    float eps;
} AdamMiniScalars;

// torch.lerp(self, end, w) with a scalar weight as PyTorch's kernels evaluate it: one fused multiply-add
// from the nearer end (see muon_lerp in optim/muon.h).
HD static inline float adam_mini_lerp(float self, float end, float w) {
    const float diff = end - self;
    return fabsf(w) < 0.5f ? fmaf(w, diff, self) : fmaf(w - 1.0f, diff, end);
}

// vmean.mul_(beta2).add_(mean_g2, alpha=1 - beta2) for one block (add with alpha: one fused multiply-add).
HD static inline float adam_mini_vmean(const AdamMiniScalars* k, float vmean, float mean_g2) {
    return fmaf(k->one_minus_beta2, mean_g2, vmean * k->beta2);
}

// The block's step multiplier (1 / bc1) / (sqrt(vmean) / sqrt(bc2) + eps).
HD static inline float adam_mini_block_step(const AdamMiniScalars* k, float vmean) {
    return k->inv_bc1 / (sqrtf(vmean) / k->bc2_sqrt + k->eps);
}

// One element of a block: decay, m.lerp_(g, 1 - beta1), p -= (m * stepsize) * lr.
HD static inline void adam_mini_element(const AdamMiniScalars* k, float* p, float* m, float g, float block_step) {
    float th = *p;
    if (k->decays) th = th * k->decay;
    const float mi = adam_mini_lerp(*m, g, k->one_minus_beta1);
    *m = mi;
    *p = th - (mi * block_step) * k->lr;
}

// One element of an Adam block (biases): v.mul_(beta2).addcmul_(g, g, value=1 - beta2), decay,
// m.lerp_(g, 1 - beta1), p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1).
HD static inline void adam_mini_adam(const AdamMiniScalars* k, float* p, float* m, float* v, float g) {
    const float vi = *v * k->beta2 + k->one_minus_beta2 * g * g;
    *v = vi;
    float th = *p;
    if (k->decays) th = th * k->decay;
    const float mi = adam_mini_lerp(*m, g, k->one_minus_beta1);
    *m = mi;
    const float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
    *p = th + (-k->step_size * mi) / denom;
}

#endif
