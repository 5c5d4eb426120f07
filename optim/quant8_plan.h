// optim/quant8_plan.h: the work plan of the blockwise 8-bit optimizer kernels (optim/quant8.cuh's 1-state
// kernel, optim/adam8bit.cuh's 2-state kernel), written once (HD) for the kernels and for the host
// emulation that checks it (test/test_optim_q8_plan.c): which thread handles which elements, the loop
// bounds of the persistent grid, the tensor cursor, the vector-or-scalar choice, the order of the absmax
// reduction, and the table lookup that replaces bitsandbytes' 8-step binary search with the same answer.
//
// The plan (quant8.cuh explains why; the numbers are there):
//  - A TEAM of lanes owns one quantization block of Q = qblock elements at a time. Every lane handles
//    Q8_VEC = 8 consecutive elements per ROUND (one 16-byte load of bf16 gradients, two of fp32 master,
//    one 8-byte load per code state): team = min(Q / 8, Q8_THREADS) lanes, rounds = Q / (8 * team).
//    Q <= 256: the team is 8, 16 or 32 lanes of one warp (a warp holds 32 / team teams), its absmax a
//    butterfly of xor-shuffles inside the team (no barrier). Q > 256: the team is the whole thread block
//    (64..256 threads), the warps' maxima meet in shared memory behind one __syncthreads per block.
//  - Element e of round r, team lane l: block offset 8 * (r * team + l) + e (consecutive lanes read
//    consecutive 16-byte pieces: every warp load is fully coalesced).
//  - The first `keep` rounds stay in registers between the two passes (keep = 1 for Q <= 2048, else 2:
//    Q <= 4096 moves every byte once); later rounds are recomputed in pass 2 from the unchanged inputs,
//    as the CPU's q8_block_* do (the same fp32 operations give the same values).
//  - Persistent grid: a few thread blocks per SM (occupancy), each looping over consecutive groups of
//    teams_per_block quantization blocks (base = blockIdx * tpb, stride gridDim * tpb; the team's block is
//    base + team index, idle past the last block). The codebooks and lookup tables go to shared memory
//    once per thread block.
//  - The tensor of a block: a cursor that only moves forward (the blocks a thread visits ascend), to the
//    last tensor whose first block is <= the block (opt_find_unit's answer, without its binary search).
//  - Vector loads where the 8 elements are whole and aligned: the tensor's parameter offset a multiple
//    of 8 elements and its code pointers of 8 bytes (Q8Tensor.vec, set at setup), the flat buffers 16-byte
//    aligned (checked at each launch), and the 8 elements inside the tensor; otherwise element by element
//    (odd offsets, a short last block, the tail of a tensor). Either way the same values.
#ifndef OPTIM_QUANT8_PLAN_H
#define OPTIM_QUANT8_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include "common/numerics.h"
#include "optim/quant8.h"

#ifdef __cplusplus
extern "C" {
#endif

#define Q8_VEC 8          // elements per lane per round
#define Q8_THREADS 256    // threads per thread block (and the largest team)
#define Q8_KEEP_MAX 2     // rounds kept in registers at most

// One quantized tensor (or -zero 1 slice: whole blocks of one tensor, its own param_off) as the kernels see it.
typedef struct {
    size_t param_off;     // first element in the flat master / gradient / bf16 buffers
    size_t numel;
    size_t block0;        // its first quantization block over all quantized tensors
    uint8_t* code[2];     // (numel) state1 / m codes, then v codes (2-state; NULL for the 1-state)
    float* absmax[2];     // (nblocks) their absmax
    int decay;            // weight decay applies
    int vec;              // param_off % 8 == 0 and every code pointer 8-byte aligned
} Q8Tensor;

typedef struct {
    int qblock;
    int team;             // lanes per quantization block
    int rounds;           // rounds of Q8_VEC elements per lane per block
    int keep;             // rounds kept in registers (template argument of the kernels: 1 or 2)
    int threads;          // blockDim
    int tpb;              // teams per thread block
    int block_team;       // team > 32: the whole thread block, barrier reduction
} Q8Plan;

// qblock: a power of two >= 64 (the trainer checks).
HD static inline Q8Plan q8_plan(int qblock) {
    Q8Plan p;
    p.qblock = qblock;
    p.team = qblock / Q8_VEC < Q8_THREADS ? qblock / Q8_VEC : Q8_THREADS;
    p.rounds = qblock / (Q8_VEC * p.team);
    p.keep = p.rounds < Q8_KEEP_MAX ? p.rounds : Q8_KEEP_MAX;
    p.block_team = p.team > 32;
    p.threads = p.block_team ? p.team : Q8_THREADS;
    p.tpb = p.threads / p.team;
    return p;
}

// Offset in its quantization block of the first of the 8 elements of round r of team lane l.
HD static inline int q8_elem0(const Q8Plan* p, int r, int l) { return Q8_VEC * (r * p->team + l); }

// Length of block b of a tensor of n elements (the last may be short).
HD static inline int q8_block_len(size_t n, int qblock, size_t b) {
    const size_t lo = b * (size_t)qblock;
    return (int)(n - lo < (size_t)qblock ? n - lo : (size_t)qblock);
}

// The tensor of block qb: from cursor ti (a tensor at or before it), forward to the last tensor whose
// first block is <= qb.
HD static inline int q8_cursor(const Q8Tensor* t, int nq, int ti, size_t qb) {
    while (ti + 1 < nq && t[ti + 1].block0 <= qb) ti++;
    return ti;
}

// Whether the 8 elements from block offset e0 of block b go by vector loads and stores.
HD static inline int q8_vec_ok(const Q8Tensor* t, int base_ok, int qblock, size_t b, int e0) {
    return base_ok && t->vec && b * (size_t)qblock + (size_t)e0 + Q8_VEC <= t->numel;
}

// The xor-shuffle offsets of a team's butterfly max: team/2 .. 1 inside a warp team, 16 .. 1 for a
// block team's warps (whose maxima then meet in shared memory, warp 0 first).
HD static inline int q8_first_xor(const Q8Plan* p) { return p->block_team ? 16 : p->team / 2; }

// ---- the quantize lookup ------------------------------------------------------------------------------
// q8_search's answer (quant8.h: bitsandbytes' search, the CPU's q8_nearest) from a compact table of the
// CPU's buckets. x = s / absmax lies in [-1, 1] (or is NaN when absmax is 0 or not finite). The table keeps
// the buckets (top 16 bits of the float: sign, exponent, 7 mantissa bits) of 2^-24 <= |x| < 2^0 + 1/128
// for both signs: 2 * 3073 bytes, plus one byte for |x| < 2^-24, where the search gives one answer for
// the whole range (q8_tab_build checks it: the maps' smallest nonzero codes are 3.25e-7 and 5.5e-7, and
// the search is monotone). Anything else (NaN, Inf, |x| > 1.0039) takes the search itself.
// Cost: two shared-memory loads and a few integer operations, against the search's eight dependent loads.
#define Q8_TAB_E0 0x3380u                          // (bits >> 16) & 0x7fff of 2^-24
#define Q8_TAB_E1 0x3F80u                          // of 1.0
#define Q8_TAB_N (Q8_TAB_E1 - Q8_TAB_E0 + 1)      // 3073 buckets per sign
#define Q8_TAB_BYTES 6148                          // 2 * Q8_TAB_N + 1 (|x| < 2^-24), rounded up to 4

// Fills tab (Q8_TAB_BYTES) from the CPU's map (quant8.c); CHECKs the tiny range's one answer.
void q8_tab_build(const Q8Map* m, uint8_t* tab);

// code: the map's 256 codes, mid: its midpoints (mid[255] = NaN), tab: q8_tab_build's table.
HD static inline uint8_t q8_tab_nearest(const uint8_t* tab, const float* mid, const float* code, float x) {
    const uint32_t b = f32_bits(x), e = (b >> 16) & 0x7FFFu;
    if (e - Q8_TAB_E0 <= Q8_TAB_E1 - Q8_TAB_E0) {
        const int c = tab[(b >> 31) * Q8_TAB_N + (e - Q8_TAB_E0)];
        const float md = mid[c];
        return (uint8_t)(c + ((x > md) | ((x == md) & c)));  // q8_nearest's step: a tie goes to the even index
    }
    if (e < Q8_TAB_E0) return tab[2 * Q8_TAB_N];
    return q8_search(code, x);  // NaN, Inf, |x| > 1
}

// q8_quantize / q8_quantize_search by the table: the same code.
HD static inline uint8_t q8_quantize_tab(const uint8_t* tab, const float* mid, const float* code, int sign_guard, float s,
                                         float absmax) {
    return q8_sign_guard(code, sign_guard, q8_tab_nearest(tab, mid, code, FDIV_RN(s, absmax)), s);
}

#ifdef __cplusplus
}
#endif

#endif
