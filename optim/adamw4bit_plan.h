// optim/adamw4bit_plan.h: the work plan of adamw4bit's CUDA kernels (optim/adamw4bit.cuh), written once
// for the kernels (nvcc) and for their host emulation (test/test_optim_q4_plan.c, gcc): the tensor table,
// its tile and block numbering (host, built at setup), and the index functions (HD) that say which thread
// touches which element, which accesses are vectors, and how maxima are folded.
//
// The plan (adamw4bit.cuh has the per-step sequence and the costs):
//  - Thread blocks of A4_WARPS = 8 warps (256 threads), persistent grids (a few blocks per SM), each
//    block walking its units (tiles, or groups of 8 quantization blocks) with stride gridDim; the tensor
//    of a unit by a forward cursor (the units a thread visits ascend): the last tensor whose first unit
//    is <= the unit (a tensor without units shares its first with the next one and is never chosen).
//  - Step 1, statistics of v for the rank-1 matrices: TILES of A4_TILE_ROWS = 64 rows x A4_TILE_COLS =
//    256 columns (the last ones shorter), row tiles outer, column tiles inner. In a tile, warp w takes
//    rows r0+w, r0+w+8, ... (A4_SBATCH of them loaded before any is used), lane l the columns c0+8l ..
//    c0+8l+7 of each: one 16-byte load of bf16 gradients (two of fp32) and one 4-byte load of v codes
//    when the group is whole and aligned (a4_stats_vec), else element by element; the same values either
//    way. Per row: the lane's max of its 8 |v|, then the warp's by xor-shuffles (lane 0 has the tile row's
//    max). Per column: each lane's running max over its rows, the 8 warps' combined in shared memory in
//    warp order. Across tiles: atomicMax on the float's bits into scratch zeroed before the pass (one
//    per row per column tile, one per column per row tile).
//  - Step 2, the per-block update: a WARP per 128-element block (m's scale block), lane l the elements
//    4l .. 4l+3 (bytes 2l and 2l+1 of each code array); a 16-byte master and an 8-byte bf16 gradient load
//    when the 4 are whole and aligned (a4_block_vec); block maxima by xor-shuffles.
//  - Maxima, the CPU's way (adamw4bit.c: `if (a > max) max = a` from 0): a4_fold = fmaxf(acc, |x|) with
//    acc never NaN: a NaN |x| is skipped (fmaxf returns the other operand), +Inf is kept, -0 folds to +0.
//    So every maximum is >= +0 and never NaN, and for such floats the order of their bits as unsigned
//    integers is their order: an integer atomicMax gives exactly the CPU's value, in any order (max of
//    non-NaN floats is exact, commutative and associative), from scratch zeroed (= +0.0f).
#ifndef OPTIM_ADAMW4BIT_PLAN_H
#define OPTIM_ADAMW4BIT_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "common/numerics.h"
#include "optim/adamw4bit.h"   // A4_BLOCK

#ifdef __cplusplus
extern "C" {
#endif

#define A4_WARPS 8                          // warps per thread block (both kernels)
#define A4_THREADS (32 * A4_WARPS)
#define A4_LANE 4                           // step 2: elements per lane (A4_BLOCK = 32 * A4_LANE)
#define A4_SVEC 8                           // step 1: consecutive columns per lane
#define A4_TILE_ROWS 64                     // step 1: tile rows (8 per warp)
#define A4_TILE_COLS (32 * A4_SVEC)         // step 1: tile columns (a group of 8 per lane)
#define A4_SBATCH 4                         // step 1: rows a warp loads before it uses them

// One quantized tensor (numel > A4_THRESHOLD) as the kernels see it. Pointers are device pointers in the
// kernels, host pointers in the emulation.
typedef struct {
    size_t param_off;       // first element in the flat master / gradient / bf16 buffers
    size_t numel;
    size_t rows, cols;      // a matrix; a vector is (1, numel)
    uint8_t* mq;            // (numel/2) m codes
    uint8_t* vq;            // (numel/2) v codes
    float* m_scale;         // (ceil(numel/128)) m block scales
    float* v_a;             // v_row (rows) for a matrix, v_scale (ceil(numel/128)) for a vector
    float* v_b;             // v_col (cols) for a matrix, NULL for a vector
    float* row_new;         // (rows) scratch: the new row maxima (matrix)
    float* col_new;         // (cols) scratch: the new column maxima (matrix)
    size_t block0;          // its first 128-element block over all quantized tensors
    size_t tile0;           // its first statistics tile (a vector: the next tensor's, it has none)
    size_t nct;             // column tiles (a vector: 0)
    int rank1;              // a matrix: v scaled by min(row max, column max)
    int decay;              // weight decay applies
    int svec;               // step 1 may use vector loads: cols % 8 == 0, param_off % 8 == 0, vq 4-byte aligned
} A4PlanTensor;

// Fills block0, tile0, nct and svec of t[0..n) (everything else set by the caller); the totals.
static inline void a4_plan_build(A4PlanTensor* t, int n, size_t* nblocks, size_t* ntiles) {
    size_t nb = 0, nt = 0;
    for (int i = 0; i < n; i++) {
        t[i].block0 = nb;
        t[i].tile0 = nt;
        nb += (t[i].numel + A4_BLOCK - 1) / A4_BLOCK;
        if (t[i].rank1) {
            t[i].nct = (t[i].cols + A4_TILE_COLS - 1) / A4_TILE_COLS;
            nt += (t[i].rows + A4_TILE_ROWS - 1) / A4_TILE_ROWS * t[i].nct;
        } else {
            t[i].nct = 0;
        }
        t[i].svec = t[i].rank1 && t[i].cols % A4_SVEC == 0 && t[i].param_off % A4_SVEC == 0 && (uintptr_t)t[i].vq % 4 == 0;
    }
    *nblocks = nb;
    *ntiles = nt;
}

// The tensor of block qb (step 2) or tile x (step 1): from cursor ti (a tensor at or before it), forward.
HD static inline int a4_cursor_block(const A4PlanTensor* t, int nq, int ti, size_t qb) {
    while (ti + 1 < nq && t[ti + 1].block0 <= qb) ti++;
    return ti;
}
HD static inline int a4_cursor_tile(const A4PlanTensor* t, int nq, int ti, size_t x) {
    while (ti + 1 < nq && t[ti + 1].tile0 <= x) ti++;
    return ti;
}

// ---- step 1: the statistics tiles ----
typedef struct {
    size_t r0, r1;          // rows [r0, r1)
    size_t c0;              // first column
} A4Tile;

// Tile x (global) of matrix t: row tiles outer, column tiles inner.
HD static inline A4Tile a4_tile(const A4PlanTensor* t, size_t x) {
    const size_t lt = x - t->tile0, rt = lt / t->nct, ct = lt % t->nct;
    A4Tile s;
    s.r0 = rt * A4_TILE_ROWS;
    s.r1 = s.r0 + A4_TILE_ROWS < t->rows ? s.r0 + A4_TILE_ROWS : t->rows;
    s.c0 = ct * A4_TILE_COLS;
    return s;
}
// The k-th row of warp w in a tile (past the tile: >= r1), lane l's first column, and how many of its
// A4_SVEC columns lie in the matrix (0..8).
HD static inline size_t a4_tile_row(const A4Tile* s, int warp, int k) { return s->r0 + (size_t)warp + (size_t)k * A4_WARPS; }
HD static inline size_t a4_tile_col(const A4Tile* s, int lane) { return s->c0 + (size_t)lane * A4_SVEC; }
HD static inline int a4_group_len(size_t c, size_t cols) { return c >= cols ? 0 : (cols - c < A4_SVEC ? (int)(cols - c) : A4_SVEC); }
// Whether a lane's group goes by vectors: whole, and (svec, base_ok: the flat buffers 16-byte aligned)
// every group of the matrix starts at a multiple of 8 elements (16 bytes of bf16, 4 bytes of codes).
HD static inline int a4_stats_vec(const A4PlanTensor* t, int base_ok, int n) { return base_ok && t->svec && n == A4_SVEC; }

// ---- step 2: the 128-element blocks ----
// Lane l's first element (in its tensor) of block b, and how many of its A4_LANE lie in the tensor.
HD static inline size_t a4_lane_i0(size_t b, int lane) { return b * A4_BLOCK + (size_t)A4_LANE * (size_t)lane; }
HD static inline int a4_lane_len(size_t i0, size_t n) { return i0 >= n ? 0 : (n - i0 < A4_LANE ? (int)(n - i0) : A4_LANE); }
// Whether a lane's 4 elements go by vectors (16-byte master, 8-byte bf16 or 16-byte fp32 gradient).
HD static inline int a4_block_vec(const A4PlanTensor* t, int base_ok, int nv) { return base_ok && t->param_off % A4_LANE == 0 && nv == A4_LANE; }

// ---- maxima ----
HD static inline float a4_fold(float acc, float x) { return fmaxf(acc, fabsf(x)); }

#ifdef __cplusplus
}
#endif

#endif
