// common/rng.h: a small, seedable, portable random number generator (xorshift* with a
// splitmix64 seed scrambler). Same seed -> same numbers on every machine; the whole state is one
// uint64 so checkpoints can save and restore it exactly.
#ifndef COMMON_RNG_H
#define COMMON_RNG_H

#include <stdint.h>
#include <math.h>
#include "common/numerics.h"

typedef struct { uint64_t s; } Rng;

static inline void rng_seed(Rng* r, uint64_t seed) {
    // splitmix64 so that nearby seeds give unrelated streams; never a zero state
    uint64_t z = mix64(seed + 0x9E3779B97F4A7C15ull);
    r->s = z ? z : 0x2545F4914F6CDD1Dull;
}

static inline uint32_t rng_u32(Rng* r) {
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (uint32_t)((r->s * 0x2545F4914F6CDD1Dull) >> 32);
}

// uniform in [0, 1)
static inline float rng_f32(Rng* r) { return (rng_u32(r) >> 8) / 16777216.0f; }

// standard normal by Box-Muller (one value per call; simple beats fast at init time)
static inline float rng_normal(Rng* r) {
    float u1 = rng_f32(r), u2 = rng_f32(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

#endif
