// cuda/attention_flash_plan.h: the index plan of the tensor-core flash-attention kernels
// (cuda/attention_flash.cuh), written once and compiled by nvcc (the kernels) and by gcc (the host
// emulation in test/test_attention_flash.c), so the emulation runs the kernels' own mapping:
//   - tile sizes and the shared-memory row stride;
//   - which 16-byte chunk of a tile each thread loads;
//   - the mma.m16n8k16 accumulator (C/D) layout: which row/column each lane's c0..c3 hold;
//   - the ldmatrix.x4 row addresses, and which ldmatrix result register becomes which A or B
//     fragment register (plain and .trans);
//   - the accumulator -> A-operand reuse (P and dS are fed back into the next mma from registers);
//   - the causal rule: which key tiles a query tile visits, which tiles need the elementwise mask,
//     and which (warp, tile) pairs are skipped as entirely masked.
// The emulation checks these against the PTX ISA's fragment tables, written independently there.
// C (gcc -std=gnu11) and C++ (nvcc); no CUDA headers needed.
#ifndef CUDA_ATTENTION_FLASH_PLAN_H
#define CUDA_ATTENTION_FLASH_PLAN_H

#include "common/numerics.h"

// ---- tiles ------------------------------------------------------------------------------------------
#define FA_THREADS 128            // 4 warps per block, every kernel
#define FA_WARPS 4
#define FA_WROWS 16               // rows (queries, or keys in the dK/dV kernel) per warp: the mma's M
#define FA_BQ 64                  // forward and dQ kernel: queries per block (4 warps x 16)
#define FA_BK 64                  // forward: keys per tile
#define FA_BKV 64                 // dK/dV kernel: keys per block (4 warps x 16)
#define FA_BWD_BN(HS) ((HS) <= 64 ? 64 : 32) // backward inner tile: queries (dK/dV) or keys (dQ) per step
#define FA_PAD 8                  // bf16 of padding per shared row: a row is HS + 8 bf16 = HS*2 + 16 bytes,
#define FA_LD(HS) ((HS) + FA_PAD) // so 8 rows of a ldmatrix phase start 4 banks apart (conflict-free)

// ---- global -> shared tile loads: 16-byte chunks (8 bf16), chunk c of a (rows, HS) tile -------------
// thread tid loads chunks c = tid + FA_THREADS * n, n = 0 .. rows*HS/8/FA_THREADS - 1 (a warp covers
// whole rows: consecutive lanes, consecutive 16 bytes of global and shared memory)
HD static inline int fa_chunk_row(int c, int hs) { return c / (hs / 8); }
HD static inline int fa_chunk_col(int c, int hs) { return (c % (hs / 8)) * 8; }

// ---- mma.m16n8k16 accumulator fragment (C and D, fp32): lane's register i (0..3) --------------------
// g = lane / 4 (groupID), t = lane % 4 (thread in group): c0, c1 at row g, cols 2t, 2t+1; c2, c3 at row
// g + 8, same cols.
HD static inline int fa_c_row(int lane, int i) { return (lane >> 2) + 8 * (i >> 1); }
HD static inline int fa_c_col(int lane, int i) { return 2 * (lane & 3) + (i & 1); }

// ---- ldmatrix.x4 over a 16x16 bf16 block (rows R0.., cols C0.. of a shared tile) ---------------------
// Lanes 8m..8m+7 give the row addresses of 8x8 matrix m: m = 0 rows 0-7 cols 0-7, m = 1 rows 8-15
// cols 0-7, m = 2 rows 0-7 cols 8-15, m = 3 rows 8-15 cols 8-15. Lane's address: element
// (R0 + fa_ldsm_row(lane), C0 + fa_ldsm_col(lane)). The result registers d[0..3] are then, per lane:
//  - A operand (the block is A's 16 rows x 16 k, plain ldmatrix): a[r] = d[r]
//  - B operand, two n8 tiles, from a tile stored [n][k] (K for Q K^T, V for dO V^T, Q and dO for the
//    dK/dV kernel's S^T and dP^T; plain ldmatrix): n tile nt's b[j] = d[fa_bn_reg(nt, j)]
//  - B operand, two n8 tiles, from a tile stored [k][n] (V for P V, dO and Q for dV and dK, K for
//    dQ; ldmatrix .trans): n tile nt's b[j] = d[fa_bt_reg(nt, j)]
HD static inline int fa_ldsm_row(int lane) { return (lane & 7) + 8 * ((lane >> 3) & 1); }
HD static inline int fa_ldsm_col(int lane) { return 8 * (lane >> 4); }
HD static inline int fa_bn_reg(int nt, int j) { return nt + 2 * j; }
HD static inline int fa_bt_reg(int nt, int j) { return 2 * nt + j; }

// ---- accumulators -> A operand (P for P V and P^T dO, dS for dS K and dS^T Q) -------------------------
// The A fragment for k-step kk (columns 16kk .. 16kk+15 of the accumulator row block) is packed from
// the accumulators of n tiles 2kk and 2kk+1: A register r (two bf16, low half first) =
// bf16(acc[2kk + fa_p_ntile(r)][fa_p_creg(r)]), bf16(acc[same][fa_p_creg(r) + 1]).
HD static inline int fa_p_ntile(int r) { return r >> 1; }
HD static inline int fa_p_creg(int r) { return 2 * (r & 1); }

// ---- causal tile rules (query i sees keys j <= i) ------------------------------------------------------
HD static inline int fa_masked(int i, int j) { return j > i; }
// the last key any query of [q0, q0 + nq) needs (keys past T are never visited)
HD static inline int fa_last_key(int q0, int nq, int T) { int e = q0 + nq < T ? q0 + nq : T; return e - 1; }
// a key tile [k0, k0 + nk) needs the elementwise mask against queries from q0 on
HD static inline int fa_tile_needs_mask(int q0, int k0, int nk) { return k0 + nk - 1 > q0; }
// every (query <= i_max, key >= j_min) pair is masked: a warp skips such a tile (its mma work only)
HD static inline int fa_all_masked(int i_max, int j_min) { return j_min > i_max; }
// blocks of the forward and dQ kernels take query tiles last-first (the longest rows start first)
HD static inline int fa_qtile(int bx, int nblocks) { return nblocks - 1 - bx; }

// ---- shared memory per block (bytes) ------------------------------------------------------------------
// forward: Q (FA_BQ, LD) + 2 buffers x [K (FA_BK, LD), V (FA_BK, LD)]
HD static inline int fa_fwd_smem(int hs) { return (FA_BQ + 4 * FA_BK) * FA_LD(hs) * 2; }
// dK/dV: K, V (FA_BKV, LD) + 2 buffers x [Q, dO (BN, LD)] + 2 buffers x [lse*log2e, D (BN fp32)]
HD static inline int fa_dkv_smem(int hs) { return (2 * FA_BKV + 4 * FA_BWD_BN(hs)) * FA_LD(hs) * 2 + 4 * FA_BWD_BN(hs) * 4; }
// dQ: Q, dO (FA_BQ, LD) + 2 buffers x [K, V (BN, LD)]
HD static inline int fa_dq_smem(int hs) { return (2 * FA_BQ + 4 * FA_BWD_BN(hs)) * FA_LD(hs) * 2; }

#endif
