// common/bf16.h: bfloat16 storage on the CPU. bf16 is the top 16 bits of an IEEE fp32:
// 1 sign, 8 exponent, 7 mantissa bits. Arithmetic is always fp32; bf16 is only a storage format.
#ifndef COMMON_BF16_H
#define COMMON_BF16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_to_f32(bf16 h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest, ties to even (what torch's .to(torch.bfloat16) does). NaN stays NaN.
static inline bf16 f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x0040u); // quiet NaN
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (bf16)(u >> 16);
}

// Stochastic rounding: round up with probability equal to the discarded fraction, using 16
// random bits. Unbiased in expectation, so tiny updates to bf16 weights are not lost on average.
static inline bf16 f32_to_bf16_sr(float f, uint32_t random_bits) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return f32_to_bf16(f); // inf / nan: no rounding
    u += (random_bits & 0xffffu);
    return (bf16)(u >> 16);
}

#endif
