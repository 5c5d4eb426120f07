// optim/quant8.h: bitsandbytes' 8-bit block-wise dynamic quantization, the storage format of the
// 8-bit optimizers (optim/adam8bit.c).
//
// A state tensor of n fp32 values is cut into blocks of `block` consecutive elements (the last block
// may be short). Each block keeps one fp32 absmax = max |value| over the block, and each element one
// byte: the index of the nearest entry of a fixed 256-entry codebook (a "map") to value / absmax.
// Dequantization is code[index] * absmax. Storage: n + 4 * ceil(n / block) bytes.
//
// The maps are bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), a
// "dynamic" float: for i = 0..6, the k midpoints of linspace(0.1, 1, k + 1) scaled by 10^(i-6), with
// k = 2^i (signed) or 2^(i+1) (unsigned); the signed map adds their negatives; both add 0 and 1.0;
// sorted ascending. So small values get relative, not absolute, resolution (each decade below the
// absmax has its own codes, fewer the smaller), which is what Adam's moments need: most of a block is
// far below its absmax.
//   signed   (first moment m):  code[0] = -0.99297, code[127] = 0, code[128] = 5.5e-7, code[255] = 1.
//                               There is no -1: a block whose absmax comes from a negative value
//                               stores it as -0.99297 * absmax.
//   unsigned (second moment v): code[0] = 0, code[1] = 3.25e-7, code[254] = 0.99648, code[255] = 1.
// The values are fp32 computed as bitsandbytes computes them with PyTorch >= 2.0, whose CPU
// torch.linspace is the scalar two-sided formula (start + i*step for the first half, end - (n-1-i)*step
// for the second) with every operation rounded to fp32. PyTorch 1.x's vectorized linspace, or a build
// that fuses multiply-adds, gives ~40 of the 256 entries 1-2 ulp off; quant8.c turns contraction off so
// our maps are the same on every machine. test/ref_optim_8bit.py recomputes them independently.
//
// Rounding is deterministic round-to-nearest by bitsandbytes' search (quantize_2D in csrc/kernels.cu):
// a 7-step binary search from index 127 lands on an even index p, then the value is compared with the
// midpoints (code[p-1]+code[p])/2 and (code[p]+code[p+1])/2. Exact ties go to p. A NaN (0/0 in a
// block of zeros) lands on index 0. For the signed map, bitsandbytes adds a sign guard: if the chosen
// code's sign differs from the value's, the index moves one step towards the value's sign, so a tiny
// negative m is stored as the smallest negative code, never as 0 (q8_quantize, sign_guard = 1).
#ifndef OPTIM_QUANT8_H
#define OPTIM_QUANT8_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>
#include "common/numerics.h"
#include "common/util.h"          // CHECK
#include "optim/optim_common.h"   // FDIV_RN, optim_spec

#ifdef __cplusplus
extern "C" {
#endif

#define Q8_CODES 256
#define Q8_BUCKETS 65536

// A map with what a fast search needs. q8_nearest() returns exactly what bitsandbytes' search
// (q8_search) returns, for every fp32 input, but in one table lookup and one comparison instead of
// eight dependent ones (the search dominated the step's time):
//  - that search is round-to-nearest with fp32 midpoints mid[j] = (code[j] + code[j+1]) * 0.5f and
//    a tie going to the even index of the pair; the answer only grows with x;
//  - fp32 values are bucketed by the top 16 bits of an order-preserving integer key (sign, exponent,
//    7 mantissa bits: 1/128 of an octave, finer than the map's codes), first[] holds the search's
//    answer for each bucket's smallest value, and q8_nearest steps up from it past the one midpoint
//    a bucket can contain (quant8.c checks, when it builds the table, that no bucket holds two).
// test_optim_8bit checks q8_nearest == q8_search on every bucket edge, every midpoint +-2 ulps and
// random values; a one-off check over all 2^32 fp32 bit patterns found no difference.
typedef struct {
    float code[Q8_CODES];          // ascending
    float mid[Q8_CODES];           // mid[j] = (code[j] + code[j+1]) * 0.5f; mid[255] = NaN (a stop)
    uint8_t first[Q8_BUCKETS];     // search answer for the smallest value of each key bucket
} Q8Map;

// The two maps, built once at program start.
const Q8Map* q8_map_signed(void);    // for the first moment m
const Q8Map* q8_map_unsigned(void);  // for the second moment v

// Builds bitsandbytes' create_dynamic_map(is_signed, 7, 8) into out (the code[] of the maps above).
void q8_build_dynamic_map(int is_signed, float out[Q8_CODES]);

// bitsandbytes' search, literally (quantize_2D): the reference q8_nearest is built from and tested
// against. Index of the code nearest to x (x already divided by the block absmax).
HD static inline uint8_t q8_search(const float* code, float x) {
    int p = 127;
    for (int step = 64; step > 0; step >>= 1) p += (x > code[p]) ? step : -step;
    // p is even now, and x lies between code[p-1] and code[p+1]: pick by midpoint, ties stay at p.
    if (x > code[p]) return (uint8_t)((x > (code[p + 1] + code[p]) * 0.5f) ? p + 1 : p);
    if (p == 0) return 0;
    return (uint8_t)((x < (code[p - 1] + code[p]) * 0.5f) ? p - 1 : p);
}

// An fp32 value's bucket: the top 16 bits of its bits made order-preserving as an unsigned integer.
static inline uint32_t q8_bucket(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof(b));
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return b >> 16;
}

// The same answer as q8_search(m->code, x), fast (see Q8Map).
static inline uint8_t q8_nearest(const Q8Map* m, float x) {
    if (isnan(x)) return 0;  // the search's comparisons all fail on NaN: it ends at index 0
    const int c = m->first[q8_bucket(x)];
    const float mid = m->mid[c];
    return (uint8_t)(c + ((x > mid) | ((x == mid) & c)));  // a tie (x == mid) goes to the even index
}

// Code of state value s in a block with this absmax: nearest(s / absmax), plus bitsandbytes' sign
// guard when sign_guard is set (the signed map, for m). The index wraps like bitsandbytes' unsigned
// char: in an all-zero block (absmax 0, s/absmax = NaN) m gets index 0, guarded to 255; both decode
// to 0 because absmax is 0.
HD static inline uint8_t q8_sign_guard(const float* code, int sign_guard, uint8_t c, float s) {
    if (sign_guard && !!signbit(code[c]) != !!signbit(s)) c = (uint8_t)(s > 0.0f ? c + 1 : c - 1);
    return c;
}
static inline uint8_t q8_quantize(const Q8Map* m, int sign_guard, float s, float absmax) {
    return q8_sign_guard(m->code, sign_guard, q8_nearest(m, s / absmax), s);
}
// The same code by bitsandbytes' search on a bare codebook (the CUDA kernel's way: its codebook sits in
// shared memory, where the 64 KiB bucket table would not fit).
HD static inline uint8_t q8_quantize_search(const float* code, int sign_guard, float s, float absmax) {
    return q8_sign_guard(code, sign_guard, q8_search(code, FDIV_RN(s, absmax)), s);
}

static inline float q8_dequantize(const Q8Map* m, uint8_t c, float absmax) { return m->code[c] * absmax; }

// Number of blocks of `block` elements covering n elements: ceil(n / block).
static inline size_t q8_num_blocks(size_t n, size_t block) { return (n + block - 1) / block; }

// Quantizes x (n) block by block: absmax (q8_num_blocks(n, block)) and codes (n).
void q8_quantize_blockwise(const Q8Map* map, int sign_guard, const float* x, size_t n, size_t block,
                           uint8_t* codes, float* absmax);
// The inverse: out (n) = map->code[codes[i]] * absmax[i / block].
void q8_dequantize_blockwise(const Q8Map* map, const uint8_t* codes, const float* absmax, size_t n,
                             size_t block, float* out);

// ---- the 8-bit optimizers' shared CPU pieces (adam8bit.c; the 1-state lion8bit.c and sgdm8bit.c) -----
// bitsandbytes keeps fp32 state for tensors under max(min_8bit_size, 4096) elements (its 4096 floor is
// hard-coded next to the min_8bit_size test).
#define Q8_FP32_FLOOR 4096
static inline int q8_is_quantized(const OptHyper* h, size_t numel) {
    const size_t min_size = h->min_8bit_size > Q8_FP32_FLOOR ? (size_t)h->min_8bit_size : Q8_FP32_FLOOR;
    return numel >= min_size;
}

// The layout of a 1-state optimizer (bitsandbytes' kOptimizerStatic8bit1StateBlockwise family): the
// state in 8 bits (state1_q8, signed map) with an fp32 absmax per -qblock block (absmax1), or an fp32
// state1 below the floor.
static inline int q8_layout_1state(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (!q8_is_quantized(h, s->numel)) {
        out[0] = optim_spec("state1", DT_F32, s->numel);
        return 1;
    }
    CHECK(h->qblock > 0);  // the trainer validates -qblock
    out[0] = optim_spec("state1_q8", DT_U8, s->numel);
    out[1] = optim_spec("absmax1", DT_F32, q8_num_blocks(s->numel, (size_t)h->qblock));
    return 2;
}

// Non-finite gradient elements (the 1-state kernels have no guard; the trainer reports the count).
static inline long q8_count_nonfinite(const float* g, size_t n) {
    long bad = 0;
    for (size_t i = 0; i < n; i++) bad += !isfinite(g[i]);
    return bad;
}

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define QUANT8_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
// One element of a 1-state optimizer (lion8bit_update, sgdm8bit_update behind a void* for their
// scalars): the new state from the dequantized old one s and the gradient g, the new parameter in *p.
typedef float (*Q8Update1)(const void* k, int decays, float* p, float s, float g);

// One block of n elements of a 1-state optimizer, as bitsandbytes' kernel: new states once for the
// block's new absmax (p left alone), again to update p and requantize (the same fp32 operations on the
// same inputs give the same values, so no scratch at any -qblock). Called with a constant `update`
// inside each optimizer's parallel loop, where gcc inlines it (a direct call, no pointer at run time).
static inline void q8_block_1state(Q8Update1 update, const void* k, int decays, const Q8Map* map, float* p,
                                   const float* g, uint8_t* c, float* absmax, size_t n) {
    const float am_old = *absmax;
    float am_new = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float th = p[i];
        const float s = update(k, decays, &th, q8_dequantize(map, c[i], am_old), g[i]);
        if (fabsf(s) > am_new) am_new = fabsf(s);  // the kernel's fmaxf: NaN skipped
    }
    for (size_t i = 0; i < n; i++) {
        const float s = update(k, decays, &p[i], q8_dequantize(map, c[i], am_old), g[i]);
        c[i] = q8_quantize(map, 1, s, am_new);
    }
    *absmax = am_new;
}
#ifdef QUANT8_NO_CONTRACT
#pragma GCC pop_options
#undef QUANT8_NO_CONTRACT
#endif

#ifdef __cplusplus
}
#endif

#endif
