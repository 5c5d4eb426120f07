// common/numerics.h: the numerics that the CPU and the GPU must agree on bit for bit, written once and
// compiled by both gcc and nvcc (HD marks a function that runs on the host and on the device):
//  - bf16 storage: widening, round to nearest even, stochastic rounding;
//  - mix64, the hash behind every counter-based random stream;
//  - the stochastic-rounding stream: the random bits that round element i of the tensor at flat offset
//    `offset` after optimizer step `step` are sr_bits(sr_stream(seed, step, offset), i), on either side,
//    so a resumed run, or the other trainer, rounds exactly the same bits.
// bf16 is the top 16 bits of an IEEE fp32: 1 sign, 8 exponent, 7 mantissa bits. Arithmetic is always
// fp32; bf16 is only a storage format.
#ifndef COMMON_NUMERICS_H
#define COMMON_NUMERICS_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define HD __host__ __device__
#else
#define HD
#endif

typedef uint16_t bf16; // the bits; on the device the same bits are also an __nv_bfloat16

HD static inline uint32_t f32_bits(float f) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

HD static inline float f32_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

HD static inline float bf16_to_f32(bf16 h) { return f32_from_bits((uint32_t)h << 16); }

// Round to nearest, ties to even (what torch's .to(torch.bfloat16) does). NaN stays NaN (quiet).
HD static inline bf16 f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16)((u >> 16) | 0x0040u);
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (bf16)(u >> 16);
}

// Stochastic rounding: round up with probability equal to the discarded fraction, using 16 random
// bits. Unbiased in expectation, so tiny updates to bf16 weights are not lost on average.
HD static inline bf16 f32_to_bf16_sr(float f, uint32_t random_bits) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u) return f32_to_bf16(f); // inf / nan: no rounding
    u += (random_bits & 0xffffu);
    return (bf16)(u >> 16);
}

// splitmix64's finalizer: a bijective 64-bit hash with good avalanche.
HD static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// The stochastic-rounding stream of one tensor after one step: `offset` is the tensor's first element
// in the flat parameter buffer, so every tensor (and every element) gets its own bits.
HD static inline uint64_t sr_stream(uint64_t seed, int step, uint64_t offset) {
    return mix64(seed * 0x9E3779B97F4A7C15ull + (uint64_t)step * 0xD1B54A32D192ED03ull + offset);
}
// The random bits for element i of that tensor.
HD static inline uint32_t sr_bits(uint64_t stream, uint64_t i) { return (uint32_t)mix64(stream + i); }

// The bf16 copy of an updated fp32 master value: round to nearest, or stochastic rounding with
// element i's bits of the stream. Every optimizer's store goes through this, on both sides.
HD static inline bf16 master_to_bf16(float master, int stochastic, uint64_t stream, uint64_t i) {
    return stochastic ? f32_to_bf16_sr(master, sr_bits(stream, i)) : f32_to_bf16(master);
}

#endif
