// optim/adam8bit.cuh: the CUDA twins of optim/adam8bit.c (`-opt adam8bit`, `-opt adamw8bit`,
// `-opt paged_adamw8bit`): block-wise 8-bit m and v (optim/quant8.h).
//
// Quantized tensors: one thread block per quantization block (a grid-stride loop over all blocks of
// all quantized tensors: one launch per step). The two 256-entry codebooks are loaded into shared
// memory once per thread block. Per block, as adam8bit_block(): dequantize with the old absmax, update
// v then m (a non-finite g zeroes both and is counted), block max |m|, |v| of the updated moments (a
// block reduction), the parameter update from the fp32 moments, requantize with the new absmax by
// bitsandbytes' search (q8_search, the same answer as the CPU's q8_nearest table) plus the sign guard.
// Each thread keeps up to Q8_REGS elements in registers between the two passes; blocks larger than
// Q8_REGS * blockDim recompute the rest, as the CPU does (the same fp32 operations give the same values).
// Small tensors (fp32 state) go through the multi-tensor chunk kernel (adam8bit_f32_update).
//
// Every operation is an explicit round-to-nearest intrinsic (__fmul_rn, __fadd_rn, __fdiv_rn,
// __fsqrt_rn) in adam8bit.c's order: nvcc never contracts them into fused multiply-adds, and
// adam8bit.c turns contraction off, so the moments are bit-identical to the CPU's and the codes equal.
#ifndef OPTIM_ADAM8BIT_CUH
#define OPTIM_ADAM8BIT_CUH

#include <math.h>
#include "common/cuda_util.cuh"

#define Q8_REGS 8

typedef struct {
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float step_size;  // -lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    float eps_hat;    // sqrt(1 - beta2^t) * eps
    float decay;      // 1 - lr * wd (applied to tensors marked decay, when wd > 0)
    int decays;       // wd > 0
    int qblock;
} Adam8Scalars;

// adam8bit_scalars() of adam8bit.c, in fp32 as there (the volatile keeps a host compiler from fusing).
static Adam8Scalars adam8bit_scalars_host(float lr, float beta1, float beta2, float eps, float wd, int t, int qblock) {
    Adam8Scalars k;
    k.beta1 = beta1;
    k.beta2 = beta2;
    k.one_minus_beta1 = 1.0f - beta1;
    k.one_minus_beta2 = 1.0f - beta2;
    const float c1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float c2 = (float)sqrt(1.0 - pow((double)beta2, (double)t));
    volatile float nlc2 = -lr * c2;
    k.step_size = nlc2 / c1;
    k.eps_hat = c2 * eps;
    volatile float lw = lr * wd;
    k.decay = 1.0f - lw;
    k.decays = wd > 0.0f;
    k.qblock = qblock;
    return k;
}

// adam8bit_param(): p + step_size * (m / (sqrt(v) + eps_hat)), then the decoupled decay.
__device__ __forceinline__ float adam8bit_param_d(const Adam8Scalars& k, int decays, float p, float m, float v) {
    p = __fadd_rn(p, __fmul_rn(k.step_size, __fdiv_rn(m, __fadd_rn(__fsqrt_rn(v), k.eps_hat))));
    if (decays) p = __fmul_rn(p, k.decay);
    return p;
}

// The fp32-state path (adam8bit_step_fp32): bitsandbytes' 32-bit kernel, no non-finite guard.
__device__ __forceinline__ float adam8bit_f32_update(float th, float g, float* m, float* v, const Adam8Scalars& k, int decays) {
    const float mi = __fadd_rn(__fmul_rn(*m, k.beta1), __fmul_rn(k.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(*v, k.beta2), __fmul_rn(k.one_minus_beta2, __fmul_rn(g, g)));
    *m = mi;
    *v = vi;
    return adam8bit_param_d(k, decays, th, mi, vi);
}

// adam8bit_moments(): new m, v from the codes and the block's old absmax; 0, 0 for a non-finite g.
__device__ __forceinline__ void adam8bit_moments_d(const Adam8Scalars& k, const float* mmap, const float* vmap, float g,
                                                   uint8_t cm, uint8_t cv, float am, float av, float* m, float* v) {
    if (!isfinite(g)) { *m = 0.0f; *v = 0.0f; return; }
    *v = __fadd_rn(__fmul_rn(__fmul_rn(vmap[cv], av), k.beta2), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
    *m = __fadd_rn(__fmul_rn(__fmul_rn(mmap[cm], am), k.beta1), __fmul_rn(k.one_minus_beta1, g));
}

// q8_search() of quant8.h on a codebook in shared memory: bitsandbytes' 7-step binary search and the
// midpoint comparison, ties to the even index, NaN to index 0.
__device__ __forceinline__ uint8_t q8_search_d(const float* code, float x) {
    int p = 127;
    for (int step = 64; step > 0; step >>= 1) p += (x > code[p]) ? step : -step;
    if (x > code[p]) return (uint8_t)((x > __fmul_rn(__fadd_rn(code[p + 1], code[p]), 0.5f)) ? p + 1 : p);
    if (p == 0) return 0;
    return (uint8_t)((x < __fmul_rn(__fadd_rn(code[p - 1], code[p]), 0.5f)) ? p - 1 : p);
}

// q8_quantize(): nearest code of s / absmax, plus the sign guard for the signed map (wrapping as uint8).
__device__ __forceinline__ uint8_t q8_quantize_d(const float* code, int sign_guard, float s, float absmax) {
    uint8_t c = q8_search_d(code, __fdiv_rn(s, absmax));
    if (sign_guard && (signbit(code[c]) != 0) != (signbit(s) != 0)) c = (uint8_t)(s > 0.0f ? c + 1 : c - 1);
    return c;
}

#endif
