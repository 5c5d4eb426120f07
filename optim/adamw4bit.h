// optim/adamw4bit.h: the per-element math of 4-bit AdamW (optim/adamw4bit.c explains the algorithm),
// written once for the CPU loop and the CUDA kernels (optim/adamw4bit.cuh): the per-step scalars (host)
// and the per-element pieces (HD: host and device).
//
// Every operation is one of optim_common.h's *_RN macros, so nvcc fuses no multiply-add and the GPU does
// the CPU's operations in the CPU's order (adamw4bit.c, and this header for gcc, turn contraction off):
// the new moments, scales and 4-bit codes are the same bits on both sides.
#ifndef OPTIM_ADAMW4BIT_H
#define OPTIM_ADAMW4BIT_H

#include <math.h>
#include "common/numerics.h"
#include "optim/optim_common.h"
#include "optim/quant4.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define ADAMW4BIT_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

#define A4_BLOCK 128       // block size of m's scales (and of v's for vectors): lpmm's GROUP_SIZE
#define A4_THRESHOLD 4096  // tensors with numel <= this keep fp32 m, v: lpmm's QUANT.*.THRESHOLD

// The per-step scalars, computed on the host in double from the user's values and rounded to fp32 once
// (the reference is PyTorch code with Python floats). lr: the scheduled learning rate, t the step.
typedef struct {
    float decay;       // 1 - lr*wd                 (param.mul_ before the update, on tensors marked decay)
    float beta2;
    float lerp_w;      // 1 - beta1                 (exp_avg.lerp_(grad, 1 - beta1))
    float one_minus_beta2;
    float step_size;   // lr / (1 - beta1^t)
    float bc2_sqrt;    // sqrt(1 - beta2^t)
    float eps;
} Adam4Scalars;

static inline Adam4Scalars adamw4bit_scalars(const OptHyper* h, double lr, int t) {
    Adam4Scalars k;
    k.decay = (float)(1.0 - lr * h->weight_decay);
    k.beta2 = (float)h->beta2;
    k.lerp_w = (float)(1.0 - h->beta1);
    k.one_minus_beta2 = (float)(1.0 - h->beta2);
    k.step_size = (float)(lr / (1.0 - pow(h->beta1, (double)t)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(h->beta2, (double)t));
    k.eps = (float)h->eps;
    return k;
}

// torch.lerp(a, b, w) as PyTorch's CPU kernel evaluates it (two forms, exact at both ends).
HD static inline float a4_lerp(float a, float b, float w) {
    return w < 0.5f ? FADD_RN(a, FMUL_RN(w, FSUB_RN(b, a))) : FSUB_RN(b, FMUL_RN(FSUB_RN(b, a), FSUB_RN(1.0f, w)));
}

// New m and v of one element from the decoded old ones.
HD static inline void adamw4bit_moments(const Adam4Scalars* k, float g, float* m, float* v) {
    *m = a4_lerp(*m, g, k->lerp_w);
    *v = FADD_RN(FMUL_RN(*v, k->beta2), FMUL_RN(FMUL_RN(k->one_minus_beta2, g), g));
}

// The parameter after the step: decay first (decays: the tensor's mark), then
// p + (-step_size * m) / (sqrt(v)/bc2_sqrt + eps).
HD static inline float adamw4bit_param(const Adam4Scalars* k, int decays, float p, float m, float v) {
    if (decays) p = FMUL_RN(p, k->decay);
    const float denom = FADD_RN(FDIV_RN(FSQRT_RN(v), k->bc2_sqrt), k->eps);
    return FADD_RN(p, FDIV_RN(FMUL_RN(-k->step_size, m), denom));
}

// Decoding: map[code] * scale; m's scale is its block's max |m|; v's is min(row max, column max) for a
// matrix (rank-1 normalization) or its block's max for a vector.
HD static inline float a4_decode(const Q4Map* map, uint8_t code, float scale) { return FMUL_RN(map->code[code], scale); }
HD static inline uint8_t a4_encode(const Q4Map* map, float x, float scale) { return q4_nearest(map, FDIV_RN(x, scale)); }
HD static inline float a4_rank1_scale(float row_max, float col_max) { return row_max < col_max ? row_max : col_max; }

#ifdef ADAMW4BIT_NO_CONTRACT
#pragma GCC pop_options
#undef ADAMW4BIT_NO_CONTRACT
#endif

#endif
