// optim/quant8.c: the 8-bit dynamic maps and block-wise (de)quantization (see quant8.h).
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "quant8.h"
#include "quant8_plan.h"
#include "common/util.h"

// The maps must be the same fp32 values on every machine, so no operation may be fused into a
// multiply-add (the Makefile builds with -ffp-contract=fast). GCC honours the pragma below; clang
// ignores pragmas under -ffp-contract=fast, so linspace_f32 also rounds its product explicitly.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static Q8Map q8_signed_map_;
static Q8Map q8_unsigned_map_;

// torch.linspace(start, end, steps) in fp32 as PyTorch (>= 2.0) computes it on the CPU: the first half
// counts up from start, the second half counts down from end, so both ends are exact.
static void linspace_f32(float start, float end, int steps, float* out) {
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++) {
        volatile float delta = step * (float)(i < halfway ? i : steps - 1 - i);  // rounded, never fused
        out[i] = i < halfway ? start + delta : end - delta;
    }
}

static int cmp_float(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x > y) - (x < y);
}

void q8_build_dynamic_map(int is_signed, float out[Q8_CODES]) {
    float bounds[129];  // at most 2^7 + 1 boundaries
    int n = 0;
    for (int i = 0; i < 7; i++) {
        const int k = is_signed ? (1 << i) : (1 << (i + 1));  // midpoints at this exponent
        linspace_f32(0.1f, 1.0f, k + 1, bounds);
        // Python's 10 ** (i - 6) is a double that meets an fp32 tensor: rounded to fp32 once.
        const float scale = (float)pow(10.0, (double)(i - 6));
        for (int j = 0; j < k; j++) {
            const float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            out[n++] = scale * mean;
            if (is_signed) out[n++] = -scale * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    // n == 256 by construction: signed 2 * 127 + 2, unsigned 254 + 2.
    qsort(out, Q8_CODES, sizeof(float), cmp_float);
}

// An order-preserving key (see q8_bucket) back to the fp32 value.
static float key_to_float(uint32_t key) {
    const uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    float x;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

// The midpoints and the bucket table of a map (see Q8Map in quant8.h).
static void q8_build_tables(Q8Map* m) {
    for (int j = 0; j < Q8_CODES - 1; j++) m->mid[j] = (m->code[j] + m->code[j + 1]) * 0.5f;
    m->mid[Q8_CODES - 1] = NAN;
    for (uint32_t k = 0; k < Q8_BUCKETS; k++) {
        // the bucket's smallest and largest values (inverse of q8_bucket's transform)
        const float lo = key_to_float(k << 16), hi = key_to_float((k << 16) | 0xFFFFu);
        m->first[k] = isnan(lo) ? 0 : q8_search(m->code, lo);
        // q8_nearest takes at most one step up from first[]: the map's codes are farther apart than
        // a bucket is wide (1/128 octave), so a bucket never straddles two midpoints
        CHECK(isnan(hi) || q8_search(m->code, hi) <= m->first[k] + 1);
    }
}

// Built before main() runs, so every thread (and every optimizer step) sees finished tables.
__attribute__((constructor)) static void q8_build_maps(void) {
    q8_build_dynamic_map(1, q8_signed_map_.code);
    q8_build_dynamic_map(0, q8_unsigned_map_.code);
    q8_build_tables(&q8_signed_map_);
    q8_build_tables(&q8_unsigned_map_);
}

const Q8Map* q8_map_signed(void) { return &q8_signed_map_; }
const Q8Map* q8_map_unsigned(void) { return &q8_unsigned_map_; }

void q8_quantize_blockwise(const Q8Map* map, int sign_guard, const float* x, size_t n, size_t block,
                           uint8_t* codes, float* absmax) {
    const size_t nb = q8_num_blocks(n, block);
    for (size_t b = 0; b < nb; b++) {
        const size_t lo = b * block, hi = lo + block < n ? lo + block : n;
        float amax = 0.0f;
        for (size_t i = lo; i < hi; i++) if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
        absmax[b] = amax;
        for (size_t i = lo; i < hi; i++) codes[i] = q8_quantize(map, sign_guard, x[i], amax);
    }
}

void q8_dequantize_blockwise(const Q8Map* map, const uint8_t* codes, const float* absmax, size_t n,
                             size_t block, float* out) {
    for (size_t i = 0; i < n; i++) out[i] = q8_dequantize(map, codes[i], absmax[i / block]);
}

// The kernels' compact lookup table (quant8_plan.h): the CPU's first[] over the buckets of
// 2^-24 <= |x| <= 1 (and a little above), negative then positive, then the one answer below 2^-24.
void q8_tab_build(const Q8Map* m, uint8_t* tab) {
    memset(tab, 0, Q8_TAB_BYTES);
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t e = Q8_TAB_E0; e <= Q8_TAB_E1; e++) {
            const uint32_t top = (s << 15) | e;   // the float's top 16 bits
            const uint32_t key = s ? (~top & 0xFFFFu) : (top | 0x8000u);  // q8_bucket of those floats
            tab[s * Q8_TAB_N + (e - Q8_TAB_E0)] = m->first[key];
        }
    // |x| < 2^-24: the search is monotone, so its answers at the two ends of the range (and at +-0)
    // being equal makes it one answer for the whole range
    const float below = nextafterf(ldexpf(1.0f, -24), 0.0f);
    const uint8_t tiny = q8_search(m->code, 0.0f);
    CHECK(q8_search(m->code, below) == tiny && q8_search(m->code, -below) == tiny && q8_search(m->code, -0.0f) == tiny);
    tab[2 * Q8_TAB_N] = tiny;
}
