// optim/muon.h: Muon's math, once, for the CPU loop (optim/muon.c) and the CUDA kernels (optim/muon.cuh).
// The per-step scalars are computed on the host in double and rounded to fp32 once (Python-float
// semantics, muon_scalars); the per-element functions are HD (host and device). See muon.c for the
// algorithm.
#ifndef OPTIM_MUON_H
#define OPTIM_MUON_H

#include <math.h>
#include "common/numerics.h"
#include "optim/optim_common.h"

#define MUON_NS_STEPS 5
// The quintic Newton-Schulz coefficients of the official code, Python floats that meet bf16 tensors:
// on CUDA (and in PyTorch >= 2.1 on the CPU) the scalar stays fp32 and the product is rounded to bf16.
#define MUON_NS_A 3.4445f
#define MUON_NS_B (-4.7750f)
#define MUON_NS_C 2.0315f
#define MUON_NS_EPS 1e-7f  // added to the Frobenius norm before dividing

typedef struct {
    // Muon part (hidden matrices)
    float lr;              // scheduled lr of the Muon part
    float decay;           // 1 - lr*wd (double, rounded once)
    float beta;            // momentum
    float one_minus_beta;  // 1 - momentum (double, rounded once): lerp weight of the buffer update
    int nesterov;
    float scale;           // max(1, rows/cols)^0.5 (double, rounded once)
    // AdamW part (embeddings, vectors)
    float adam_lr;         // scheduled lr of the AdamW part
    float adam_decay;      // 1 - adam_lr*wd
    float one_minus_beta1, one_minus_beta2;
    float bc1, bc2;        // 1 - beta^t (double, rounded once: a tensor divided by a Python float)
    float eps;
} MuonScalars;

// The tensors Muon orthogonalizes: the hidden 2-D matrices (the rest take its AdamW part).
static inline int muon_uses_muon(const ParamShape* s) {
    return s->ndim == 2 && (s->role == PARAM_MATRIX || s->role == PARAM_ATTN_QKV);
}

// The scalars of one tensor (rows, cols) for step t: wd is the tensor's weight decay (0 where the trainer
// does not decay it), lr the scheduled lr of the Muon part (OptStep.lr), lr_scale the schedule alone.
static inline MuonScalars muon_scalars(const OptHyper* h, size_t rows, size_t cols, double wd, double lr, float lr_scale, int t) {
    MuonScalars k;
    k.lr = (float)lr;
    k.decay = (float)(1.0 - (double)k.lr * wd);
    k.beta = (float)h->momentum;
    k.one_minus_beta = optim_one_minus(h->momentum);
    k.nesterov = h->nesterov;
    const double ratio = (double)rows / (double)cols;
    k.scale = (float)sqrt(ratio > 1.0 ? ratio : 1.0);
    k.adam_lr = (float)((double)h->aux_lr * (double)lr_scale);
    k.adam_decay = (float)(1.0 - (double)k.adam_lr * wd);
    k.one_minus_beta1 = optim_one_minus(h->beta1);
    k.one_minus_beta2 = optim_one_minus(h->beta2);
    k.bc1 = (float)(1.0 - pow((double)h->beta1, (double)t));
    k.bc2 = (float)(1.0 - pow((double)h->beta2, (double)t));
    k.eps = (float)h->eps;
    return k;
}

// x rounded to bf16 and widened again: a value a bf16 tensor holds.
HD static inline float muon_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

// torch.lerp(self, end, w) with a scalar weight as PyTorch's kernels evaluate it: one fused multiply-add
// from the nearer end, fma(w, end - self, self) for |w| < 0.5, else fma(w - 1, end - self, end) (the CPU
// kernel's explicit fmadd; CUDA's `self + w*diff` / `end - diff*(1 - w)` contracted by nvcc: the same).
HD static inline float muon_lerp(float self, float end, float w) {
    const float diff = end - self;
    return fabsf(w) < 0.5f ? fmaf(w, diff, self) : fmaf(w - 1.0f, diff, end);
}

// momentum.lerp_(grad, 1 - beta): the new momentum buffer.
HD static inline float muon_momentum(const MuonScalars* k, float m, float g) {
    return muon_lerp(m, g, k->one_minus_beta);
}

// The matrix that goes into Newton-Schulz: grad.lerp_(momentum, beta) (Nesterov) or the momentum.
HD static inline float muon_nesterov(const MuonScalars* k, float g, float m_new) {
    return k->nesterov ? muon_lerp(g, m_new, k->beta) : m_new;
}

// bf16(bf16(coef * x) + y): `coef * X + Y` on bf16 tensors X, Y (both already bf16 values).
HD static inline float muon_ns_axpy(float coef, float x, float y) {
    return muon_bf16(muon_bf16(coef * x) + y);
}

// p.mul_(1 - lr*wd); p.add_(update, alpha=-lr), update a bf16 value after the shape scale. torch's add
// with alpha is one fused multiply-add (the CPU kernel's fmadd, nvcc's contraction).
HD static inline float muon_param(const MuonScalars* k, float p, float update) {
    return fmaf(-k->lr, update, p * k->decay);
}

// The official adam_update for the AdamW part: lerp the moments, divide by the bias corrections,
// u = m_hat / (sqrt(v_hat) + eps); then p.mul_(1 - lr*wd); p.add_(u, alpha=-lr).
HD static inline void muon_adamw(const MuonScalars* k, float* p, float* m, float* v, float g) {
    const float mi = muon_lerp(*m, g, k->one_minus_beta1);
    const float vi = muon_lerp(*v, FMUL_RN(g, g), k->one_minus_beta2); // g*g never fused into the lerp
    *m = mi;
    *v = vi;
    const float u = (mi / k->bc1) / (sqrtf(vi / k->bc2) + k->eps);
    *p = fmaf(-k->adam_lr, u, *p * k->adam_decay);
}

#endif
