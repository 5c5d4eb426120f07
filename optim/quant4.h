// optim/quant4.h: the 4-bit state formats of Li et al. 2023 ("Memory Efficient Optimizers with 4-bit
// States", NeurIPS 2023, thu-ml/low-bit-optimizers, lpmm/functional.py and
// lpmm/cpp_extension/quantization_kernel.cu), used by optim/adamw4bit.c.
//
// A state value x is stored as a 4-bit index into a 16-entry map (codebook) of x / scale, where the
// scale comes from a normalization of the whole tensor; two indices per byte, element 2k in the low
// nibble of byte k and element 2k+1 in the high nibble (as the official pack_nonlinear_4bit_kernel packs
// them), so n values take (n + 1) / 2 bytes. Decoding is map[index] * scale.
//
// The two maps of the official default configuration (lpmm/configs/default.yml):
//   signed dynamic map, for the first moment m: create_dynamic_map(signed=True, max_exponent_bits=3,
//     total_bits=4): for i = 0..2, the 2^i midpoints of linspace(0.1, 1, 2^i + 1) scaled by 10^(i-2),
//     and their negatives, plus 0 and 1, sorted:
//       -0.8875 -0.6625 -0.4375 -0.2125 -0.0775 -0.0325 -0.0055 0 0.0055 0.0325 0.0775 0.2125 0.4375
//        0.6625 0.8875 1
//     (fp32 values computed the way torch computes them: linspace, midpoints and the product in fp32).
//   linear map without zero, for the second moment v ("power-1", unsigned): linspace(0, 1, 17)[1:] =
//     k/16 for k = 1..16 (exact in fp32). Without a zero code, a v that is nonzero never decodes to 0,
//     which is what keeps 1/sqrt(v) from exploding (the paper's "zero-point problem").
//
// Rounding is the official kernel's deterministic nearest (quantize_bsearch<false>, q4_search below, and
// q4_nearest, the same answer computed without branches): x <= map[0] gives
// 0, x >= map[15] gives 15; otherwise a binary search finds lo, the first entry above x, and x rounds
// up to lo only if (map[lo-1] + map[lo]) * 0.5f < x (a tie goes down). A NaN (0 / 0 in an all-zero
// block or row) fails every comparison and the kernel returns lo - 1 = -1, masked to 15; its scale is 0
// then, so it decodes to 0 either way.
#ifndef OPTIM_QUANT4_H
#define OPTIM_QUANT4_H

#include <stddef.h>
#include <stdint.h>
#include "common/numerics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define Q4_CODES 16

// Builds create_dynamic_map(True, 3, 4) into out (what q4_map_signed returns); for the tests.
void q4_build_signed_map(float out[Q4_CODES]);

// A map with the midpoints q4_nearest needs.
typedef struct {
    float code[Q4_CODES];      // ascending
    float mid[Q4_CODES - 1];   // mid[k] = (code[k] + code[k+1]) * 0.5f, as the kernel computes it
} Q4Map;

// The two maps, built before main() (quant4.c).
const Q4Map* q4_map_signed(void);    // for m
const Q4Map* q4_map_linear(void);    // for v, no zero

// Index of the map entry nearest to x, by the official kernel's algorithm literally: the reference that
// q4_nearest is tested against.
HD static inline uint8_t q4_search(const float* code, float x) {
    if (x <= code[0]) return 0;
    if (code[Q4_CODES - 1] <= x) return Q4_CODES - 1;
    int lo = 0, hi = Q4_CODES;
    while (lo < hi) {
        const int mi = (lo + hi) >> 1;
        if (code[mi] <= x) lo = mi + 1;
        else hi = mi;
    }
    if (lo == 0) return Q4_CODES - 1;  // NaN: the kernel's lo - 1 = -1, masked to 4 bits
    const float mid = (code[lo - 1] + code[lo]) * 0.5f;
    return (uint8_t)(mid < x ? lo : lo - 1);
}

// The same answer as q4_search, without branches (so loops over elements vectorize): the number of
// midpoints strictly below x. For code[lo-1] <= x < code[lo] every midpoint below code[lo-1] counts and
// none above code[lo] does, so the count is lo - 1, plus 1 exactly when mid[lo-1] < x: the kernel's
// rule, ties going down. x <= code[0] counts 0 and x >= code[15] counts 15, as the kernel's early exits;
// NaN counts 0 and is mapped to 15.
HD static inline uint8_t q4_nearest(const Q4Map* m, float x) {
    int c = 0;
    for (int k = 0; k < Q4_CODES - 1; k++) c += m->mid[k] < x;
    return (uint8_t)(x != x ? Q4_CODES - 1 : c);
}

// The same answer as q4_nearest (the count of midpoints strictly below x; NaN -> 15) by a 4-step binary
// search over the 15 ascending midpoints: 4 dependent comparisons instead of 15 (the CUDA kernel's way,
// its maps in shared memory). test_optim_q8_plan checks it against q4_nearest and q4_search.
HD static inline uint8_t q4_nearest_bs(const Q4Map* m, float x) {
    int c = 0;
    c += m->mid[c + 7] < x ? 8 : 0;
    c += m->mid[c + 3] < x ? 4 : 0;
    c += m->mid[c + 1] < x ? 2 : 0;
    c += m->mid[c] < x ? 1 : 0;
    return (uint8_t)(x != x ? Q4_CODES - 1 : c);
}

// The 4-bit code of element i of a packed array.
HD static inline uint8_t q4_get(const uint8_t* packed, size_t i) {
    return (uint8_t)((packed[i >> 1] >> ((i & 1) * 4)) & 0xF);
}

// Packs the codes of elements 2k and 2k+1 into byte k.
HD static inline uint8_t q4_pair(uint8_t even, uint8_t odd) { return (uint8_t)(even | (odd << 4)); }

// Bytes for n packed 4-bit codes.
HD static inline size_t q4_bytes(size_t n) { return (n + 1) / 2; }

#ifdef __cplusplus
}
#endif

#endif
