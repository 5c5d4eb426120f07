// cuda/memk_plan.h: the work split of the memory-bound kernels (cuda/layernorm.cuh, gelu.cuh,
// encoder.cuh, classifier.cuh and matmul.cuh's bias gradient), written once and compiled by nvcc (the
// kernels) and by gcc (the host emulation in test/test_memk_plan.c), so the emulation runs the kernels'
// own mapping:
//   - 16-byte vectors: W = 16 / sizeof(T) elements per access (8 bf16, 4 fp32);
//   - elementwise kernels (GELU, residual, encoder forward): thread g takes elements [g W, g W + W), the
//     last thread the scalar tail when N % W != 0;
//   - rows (LayerNorm forward and backward, the classifier): a group of G threads (a warp, or the
//     classifier's block) takes a row's vectors round robin: thread l has vectors l, l + G, l + 2G, ...;
//   - the one-pass LayerNorm backward: blocks of LNB_WARPS warps over contiguous row chunks, warp w of a
//     block the chunk's rows w, w + LNB_WARPS, ...; dweight/dbias partial sums per warp in row order,
//     the block's warps added in order 0..LNB_WARPS-1, the blocks' partials in order by a second kernel;
//   - the bias gradient (column sums of dout): blocks of 32 lanes x BG_ROWS row lanes; lane l of column
//     block cb the W columns cb 32 W + l W ...; row lane y the chunk's rows y, y + BG_ROWS, ...; the row
//     lanes added in order, the chunks in order by a second kernel.
// Every reduction order is fixed by these functions and the shapes alone (never by the device), so the
// sums are bit-identical run to run.
// Preconditions of the vector paths (the launchers check them and take the scalar kernels otherwise):
// 16-byte aligned base pointers (cudaMalloc gives 256; the trainer's tensors start at multiples of C
// elements and of 128 elements), and for the row kernels C % W == 0 (C % 8 == 0 holds for every dN model).
// C (gcc -std=gnu11) and C++ (nvcc); no CUDA headers needed.
#ifndef CUDA_MEMK_PLAN_H
#define CUDA_MEMK_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include "common/numerics.h"

#define MEMK_VEC_BYTES 16
#define MEMK_WARP 32
#define EW_THREADS 256        // elementwise kernels' block
#define LNF_WARPS 8           // LayerNorm forward: rows (warps) per block
#define CLS_THREADS 512       // the classifier: one block per row of logits
#define ENC_WTE_THREADS 128   // encoder backward: one block per distinct token (d12: 96 vectors per row)

// elements of a storage type of `elt` bytes per 16-byte access
HD static inline int memk_vec_elems(size_t elt) { return (int)(MEMK_VEC_BYTES / elt); }
HD static inline int memk_aligned16(const void* p) { return ((uintptr_t)p & (uintptr_t)15) == 0; }
HD static inline size_t memk_ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

// ---- elementwise ------------------------------------------------------------------------------------
// Threads for N elements, and how many elements thread g handles from g W on: W (one vector), the tail
// (1..W-1, scalar accesses: only the last thread), or 0 (past the end).
HD static inline size_t memk_ew_threads(size_t N, int W) { return memk_ceil_div(N, (size_t)W); }
HD static inline int memk_ew_count(size_t g, size_t N, int W) {
    const size_t lo = g * (size_t)W;
    if (lo >= N) return 0;
    return N - lo >= (size_t)W ? W : (int)(N - lo);
}

// ---- rows -------------------------------------------------------------------------------------------
// Thread `lane` of a group of G takes the row's vectors memk_row_vec(lane, k, G) for k < memk_row_iters.
HD static inline int memk_row_vec(int lane, int k, int G) { return lane + G * k; }
HD static inline int memk_row_iters(int nv, int lane, int G) { return lane < nv ? (nv - lane + G - 1) / G : 0; }
// Of vector v of a row whose first V elements are real (the classifier's vocabulary inside Vp), how many
// are real: W, a partial count (the vector holding column V - 1), or 0 (padding).
HD static inline int memk_real_in_vec(int v, int W, int V) {
    const int r = V - v * W;
    return r <= 0 ? 0 : (r >= W ? W : r);
}

// ---- LayerNorm backward: one pass ------------------------------------------------------------------
#define LNB_WARPS 8           // warps per block; each block's shared memory: LNB_WARPS x 2 x lnb_sh_cols floats
#define LNB_MAX_BLOCKS 512    // row chunks at most (d12 B=32 T=1024: 512 chunks of 64 rows)
// Rows per block: as many blocks as give every warp a row, at most LNB_MAX_BLOCKS; then as few blocks as
// cover N with that many rows (no empty block).
HD static inline int lnb_rows_per_block(int N) {
    size_t b = memk_ceil_div((size_t)N, LNB_WARPS);
    if (b > LNB_MAX_BLOCKS) b = LNB_MAX_BLOCKS;
    if (b < 1) b = 1;
    return (int)memk_ceil_div((size_t)N, b);
}
HD static inline int lnb_blocks(int N) { return N <= 0 ? 0 : (int)memk_ceil_div((size_t)N, (size_t)lnb_rows_per_block(N)); }
// Block p's rows [lo, hi); warp w takes rows lo + w + LNB_WARPS i < hi, in increasing order.
HD static inline int lnb_row_lo(int p, int N) { const int r = p * lnb_rows_per_block(N); return r < N ? r : N; }
HD static inline int lnb_row_hi(int p, int N) { const int r = (p + 1) * lnb_rows_per_block(N); return r < N ? r : N; }
// Each warp's shared-memory sums are laid out lane-minor, so that the 32 lanes adding element j of their
// k-th vectors touch 32 consecutive floats (32 banks, no conflict): lane's element j of its k-th vector
// (column (lane + 32 k) W + j) sits at slot (k W + j) 32 + lane. A warp's region holds lnb_sh_cols floats
// (C rounded up to a whole round of 32 vectors).
HD static inline int lnb_sh_cols(int C, int W) { return (int)memk_ceil_div((size_t)(C / W), MEMK_WARP) * MEMK_WARP * W; }
HD static inline int lnb_sh_slot(int k, int j, int lane, int W) { return (k * W + j) * MEMK_WARP + lane; }
HD static inline int lnb_sh_slot_of_col(int c, int W) {
    const int v = c / W;
    return lnb_sh_slot(v / MEMK_WARP, c % W, v % MEMK_WARP, W);
}

// ---- bias gradient: column sums ---------------------------------------------------------------------
#define BG_ROWS 8             // row lanes per block (threadIdx.y); 32 x BG_ROWS threads
#define BG_MAX_CHUNKS 256     // row chunks at most
#define BG_TARGET_BLOCKS 1024 // enough blocks to fill an H200 (132 SMs) several times over
HD static inline int bg_col_blocks(int OC, int W) { return (int)memk_ceil_div((size_t)OC, (size_t)(MEMK_WARP * W)); }
HD static inline int bg_rows_per_chunk(int N, int OC, int W) {
    size_t want = memk_ceil_div(BG_TARGET_BLOCKS, (size_t)bg_col_blocks(OC, W));
    if (want > BG_MAX_CHUNKS) want = BG_MAX_CHUNKS;
    const size_t most = memk_ceil_div((size_t)N, BG_ROWS); // every row lane gets a row
    if (want > most) want = most;
    if (want < 1) want = 1;
    return (int)memk_ceil_div((size_t)N, want);
}
HD static inline int bg_chunks(int N, int OC, int W) { return N <= 0 ? 0 : (int)memk_ceil_div((size_t)N, (size_t)bg_rows_per_chunk(N, OC, W)); }
// first column of lane l in column block cb
HD static inline int bg_col(int cb, int lane, int W) { return (cb * MEMK_WARP + lane) * W; }

// The column-reduction scratch (floats) both need, for a model of C channels: the LayerNorm's 2 x chunks
// x C and the bias gradients' chunks x OC with OC <= 4 C (the widest bias is the FC's, 4 C).
HD static inline size_t memk_partial_floats(size_t C) {
    const size_t ln = 2 * (size_t)LNB_MAX_BLOCKS * C, bg = (size_t)BG_MAX_CHUNKS * 4 * C;
    return ln > bg ? ln : bg;
}

#endif
