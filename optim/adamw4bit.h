// optim/adamw4bit.h: the per-element math of 4-bit AdamW (optim/adamw4bit.c explains the algorithm),
// written once for the CPU loop and a future CUDA kernel (HD: host and device).
#ifndef OPTIM_ADAMW4BIT_H
#define OPTIM_ADAMW4BIT_H

#include <math.h>
#include "common/numerics.h"
#include "optim/quant4.h"

#define A4_BLOCK 128       // block size of m's scales (and of v's for vectors): lpmm's GROUP_SIZE
#define A4_THRESHOLD 4096  // tensors with numel <= this keep fp32 m, v: lpmm's QUANT.*.THRESHOLD

// The per-step scalars, computed on the host in double from the user's values and rounded to fp32 once
// (the reference is PyTorch code with Python floats).
typedef struct {
    float decay;       // 1 - lr*wd                 (param.mul_ before the update)
    float beta2;
    float lerp_w;      // 1 - beta1                 (exp_avg.lerp_(grad, 1 - beta1))
    float one_minus_beta2;
    float step_size;   // lr / (1 - beta1^t)
    float bc2_sqrt;    // sqrt(1 - beta2^t)
    float eps;
} Adam4Scalars;

static inline Adam4Scalars adamw4bit_scalars(double lr, double wd, double beta1, double beta2, double eps, int t) {
    Adam4Scalars k;
    k.decay = (float)(1.0 - lr * wd);
    k.beta2 = (float)beta2;
    k.lerp_w = (float)(1.0 - beta1);
    k.one_minus_beta2 = (float)(1.0 - beta2);
    k.step_size = (float)(lr / (1.0 - pow(beta1, (double)t)));
    k.bc2_sqrt = (float)sqrt(1.0 - pow(beta2, (double)t));
    k.eps = (float)eps;
    return k;
}

// torch.lerp(a, b, w) as PyTorch's CPU kernel evaluates it (two forms, exact at both ends).
HD static inline float a4_lerp(float a, float b, float w) {
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

// New m and v of one element from the decoded old ones.
HD static inline void adamw4bit_moments(const Adam4Scalars* k, float g, float* m, float* v) {
    *m = a4_lerp(*m, g, k->lerp_w);
    *v = *v * k->beta2 + k->one_minus_beta2 * g * g;
}

// The parameter after the step: decay first, then p + (-step_size * m) / (sqrt(v)/bc2_sqrt + eps).
HD static inline float adamw4bit_param(const Adam4Scalars* k, float p, float m, float v) {
    p = p * k->decay;
    const float denom = sqrtf(v) / k->bc2_sqrt + k->eps;
    return p + (-k->step_size * m) / denom;
}

// Decoding: map[code] * scale; m's scale is its block's max |m|; v's is min(row max, column max) for a
// matrix (rank-1 normalization) or its block's max for a vector.
HD static inline float a4_decode(const Q4Map* map, uint8_t code, float scale) { return map->code[code] * scale; }
HD static inline uint8_t a4_encode(const Q4Map* map, float x, float scale) { return q4_nearest(map, x / scale); }
HD static inline float a4_rank1_scale(float row_max, float col_max) { return row_max < col_max ? row_max : col_max; }

#endif
