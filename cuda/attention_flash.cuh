// cuda/attention_flash.cuh: causal self-attention on tensor cores (bf16 in, fp32 accumulate),
// FlashAttention-2 (Dao 2023) forward and backward, with exactly the semantics of cuda/attention.cuh:
//   qkv (B, T, 3C) bf16 = q | k | v, each split into NH heads of HS = C / NH
//   forward:  out (B, T, C) bf16 = softmax(q k^T * scale, causal) v,  lse (B, NH, T) fp32 = the natural
//             log-sum-exp of each query row's scaled scores, scale = 1 / sqrt(HS)
//   backward: dqkv (B, T, 3C) bf16 fully overwritten, dpre (B, NH, T) fp32 scratch for D_i = dO_i . O_i;
//             P = exp(S - lse), dP = dO V^T, dS = P (dP - D), dQ = dS K scale, dK = dS^T Q scale, dV = P^T dO
// No (T, T) matrix exists in device memory. Head sizes 32, 64, 128.
//
// Tile plan (every kernel: 128 threads = 4 warps, each warp owns 16 rows, the mma's M):
//   forward   block = 64 queries (FA_BQ) of one (b, h); loops over key tiles of 64 (FA_BK) from key 0 to the
//             diagonal tile (the last tile holding a key <= the block's last query): S = Q K^T (16 x 64 per
//             warp), online softmax in registers (running max and sum per row, O rescaled), P rounded to
//             bf16 and fed from registers into O += P V. Only tiles crossing the diagonal are masked
//             elementwise; keys past T sit in masked columns, rows past T load as zeros and are not stored.
//   dK/dV     block = 64 keys (FA_BKV); loops over query tiles of BN = 64 (HS <= 64) or 32 (HS = 128) from
//             the diagonal on: S^T = K Q^T and dP^T = V dO^T (16 x BN per warp), P^T = exp2(S^T scale log2e -
//             lse log2e), dS^T = P^T (dP^T - D); dV += P^T dO, dK += dS^T Q (P^T, dS^T rounded to bf16).
//   dQ        block = 64 queries; loops over key tiles of BN from key 0 to the diagonal: S = Q K^T, dP =
//             dO V^T, dS = P (dP - D), dQ += dS K.
//   D_i comes from cuda/attention.cuh's attention_backward_pre_kernel (fp32).
// Tiles are staged in shared memory by 16-byte cp.async (rows past T are stored as zeros by plain 16-byte
// shared stores, never read from global memory; ldmatrix reads them as zeros),
// double-buffered: while the block computes on tile n, tile n + 1 is in flight (one __syncthreads a step).
//
// Fragments (PTX ISA, mma.m16n8k16 .row.col f32.bf16.bf16.f32; g = lane / 4, t = lane % 4):
//   A (16 x 16 bf16, 4 regs): a0a1 (row g, cols 2t, 2t+1), a2a3 (row g+8), a4a5 (row g, cols 8+2t..), a6a7
//   B (16 x 8, 2 regs): b0b1 (k = 2t, 2t+1; n = g), b2b3 (k = 8+2t..)
//   C/D (16 x 8 fp32, 4 regs): c0c1 (row g, cols 2t, 2t+1), c2c3 (row g + 8)
// Operands come from shared memory by ldmatrix.x4 (plain for A and for B stored [n][k]; .trans for B stored
// [k][n], i.e. V, dO, Q, K as the right factor of P V, P^T dO, dS^T Q, dS K). The accumulators of two
// adjacent n8 tiles are exactly one A fragment, so P and dS never go through shared memory. Every index
// rule lives in cuda/attention_flash_plan.h, shared with the host emulation (test/test_attention_flash.c).
//
// Determinism: every output element (out, lse, dq, dk, dv) is written by exactly one thread, after a
// fixed sequence of mma's and shuffles (tile order fixed by the loops); no atomics, so results are
// bitwise reproducible run to run.
//
// Shared memory (row = HS + 8 bf16: 16 bytes of padding make ldmatrix and the 32-bit fragment stores
// bank-conflict-free) per block, HS 32 / 64 / 128:
//   forward: Q + 2 x (K, V), 64-row tiles                          25.0 / 45.0 / 85.0 KiB
//   dK/dV:   K, V (64 rows) + 2 x (Q, dO) (BN rows) + 2 x (lse, D)  31.0 / 55.0 / 68.5 KiB
//   dQ:      Q, dO (64 rows) + 2 x (K, V) (BN rows)                 30.0 / 54.0 / 68.0 KiB
// (above 48 KiB: cudaFuncSetAttribute once per kernel). Registers per thread, fp32 accumulators at HS 128:
// forward O 64 + S 32 + Q fragments 32; dK/dV: dK 64 + dV 64 + S^T 16 + dP^T 16; dQ: dQ 64 + S 16 + dP 16.
// ptxas (nvcc 13.0, sm_90), registers at HS 32 / 64 / 128, no spills: forward 98 / 157 / 253, dK/dV
// 155 / 212 / 244, dQ 128 / 165 / 166 (2-3 blocks of 128 threads per SM).
// Alignment: 16-byte loads and stores need C % 8 == 0 and HS % 8 == 0 (true for the head sizes here)
// and 16-byte aligned base pointers (cudaMalloc gives 256).
#ifndef CUDA_ATTENTION_FLASH_CUH
#define CUDA_ATTENTION_FLASH_CUH

#include "common/cuda_util.cuh"
#include "cuda/attention.cuh"  // attention_backward_pre_kernel (D_i)
#include "cuda/attention_flash_plan.h"

#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

// ---- PTX wrappers ----------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t fa_saddr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes global -> shared, asynchronous (completes at fa_cp_wait_all)
__device__ __forceinline__ void fa_cp16(bf16d* dst, const bf16d* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(fa_saddr(dst)), "l"(__cvta_generic_to_global(src)) : "memory");
}
__device__ __forceinline__ void fa_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void fa_cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

// four 8x8 bf16 matrices from shared memory; lane gives the address of one row (fa_ldsm_row/col)
__device__ __forceinline__ void fa_ldsm(uint32_t d[4], const bf16d* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(fa_saddr(p)) : "memory");
}
__device__ __forceinline__ void fa_ldsm_t(uint32_t d[4], const bf16d* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3]) : "r"(fa_saddr(p)) : "memory");
}

// c (16 x 8 fp32) += a (16 x 16 bf16) b (16 x 8 bf16)
__device__ __forceinline__ void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// two floats -> two bf16 (round to nearest even, as f32_to_bf16), lo in the low half
__device__ __forceinline__ uint32_t fa_pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}
__device__ __forceinline__ void fa_st32(bf16d* p, uint32_t v) { *reinterpret_cast<uint32_t*>(p) = v; }
__device__ __forceinline__ void fa_st128(bf16d* dst, const bf16d* src) {
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
}

// rows [r0, r0 + ROWS) of a (T, HS) matrix whose row r starts at src + r * rs -> dst (ROWS, LD) in shared
// memory; rows at or past T are stored as zeros (never read from global memory)
template <int HS, int ROWS>
__device__ __forceinline__ void fa_load_tile(bf16d* dst, const bf16d* src, size_t rs, int r0, int T) {
    constexpr int LD = FA_LD(HS);
    static_assert(ROWS * HS / 8 % FA_THREADS == 0, "tile chunks must split evenly over the block");
#pragma unroll
    for (int n = 0; n < ROWS * HS / 8 / FA_THREADS; n++) {
        const int c = threadIdx.x + FA_THREADS * n;
        const int row = fa_chunk_row(c, HS), col = fa_chunk_col(c, HS);
        bf16d* d = dst + row * LD + col;
        if (r0 + row < T) fa_cp16(d, src + (size_t)(r0 + row) * rs + col);
        else *reinterpret_cast<uint4*>(d) = make_uint4(0u, 0u, 0u, 0u);
    }
}

// A fragments of k-step kk from the accumulators acc[n tile][4] of 16 x (8 * n tiles), rounded to bf16
__device__ __forceinline__ void fa_acc_to_a(uint32_t a[4], const float (*acc)[4], int kk) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const float* c = acc[2 * kk + fa_p_ntile(r)];
        a[r] = fa_pack(c[fa_p_creg(r)], c[fa_p_creg(r) + 1]);
    }
}

// acc[NT][4] (16 rows x 8*NT) += A (16 x 16, fragment a) times the 16 x (8*NT) block of a shared tile
// stored [n][k] (rows n0 .., cols k0 ..): plain ldmatrix, two n tiles per load
template <int NT, int LD>
__device__ __forceinline__ void fa_mma_bn(float (*acc)[4], const uint32_t a[4], const bf16d* tile, int n0, int k0, int lane) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t d[4];
        fa_ldsm(d, tile + (n0 + 16 * np + fa_ldsm_row(lane)) * LD + k0 + fa_ldsm_col(lane));
        fa_mma(acc[2 * np], a, d[fa_bn_reg(0, 0)], d[fa_bn_reg(0, 1)]);
        fa_mma(acc[2 * np + 1], a, d[fa_bn_reg(1, 0)], d[fa_bn_reg(1, 1)]);
    }
}
// the same for a shared tile stored [k][n] (rows k0 .. k0 + 15, cols from n 0): ldmatrix .trans
template <int NT, int LD>
__device__ __forceinline__ void fa_mma_bt(float (*acc)[4], const uint32_t a[4], const bf16d* tile, int k0, int lane) {
#pragma unroll
    for (int np = 0; np < NT / 2; np++) {
        uint32_t d[4];
        fa_ldsm_t(d, tile + (k0 + fa_ldsm_row(lane)) * LD + 16 * np + fa_ldsm_col(lane));
        fa_mma(acc[2 * np], a, d[fa_bt_reg(0, 0)], d[fa_bt_reg(0, 1)]);
        fa_mma(acc[2 * np + 1], a, d[fa_bt_reg(1, 0)], d[fa_bt_reg(1, 1)]);
    }
}

// A fragment: rows r0 .. r0 + 15, cols k0 .. k0 + 15 of a shared tile
template <int LD>
__device__ __forceinline__ void fa_load_a(uint32_t a[4], const bf16d* tile, int r0, int k0, int lane) {
    fa_ldsm(a, tile + (r0 + fa_ldsm_row(lane)) * LD + k0 + fa_ldsm_col(lane));
}

// This warp's accumulators (16 x HS, acc[HS/8][4]) times `mul` -> bf16 in its own 16 rows of a shared
// tile (at st), then 16-byte stores of the rows < T: row r goes to dst + (row0 + r) * rs.
template <int HS>
__device__ __forceinline__ void fa_store_rows(bf16d* dst, size_t rs, int row0, int T, bf16d* st, const float (*acc)[4],
                                              const float mul[2], int lane) {
    constexpr int LD = FA_LD(HS);
#pragma unroll
    for (int n = 0; n < HS / 8; n++)
#pragma unroll
        for (int r = 0; r < 2; r++)
            fa_st32(st + fa_c_row(lane, 2 * r) * LD + 8 * n + fa_c_col(lane, 2 * r),
                    fa_pack(acc[n][2 * r] * mul[r], acc[n][2 * r + 1] * mul[r]));
    __syncwarp();
#pragma unroll
    for (int n = 0; n < FA_WROWS * HS / 8 / 32; n++) {
        const int c = lane + 32 * n;
        const int row = fa_chunk_row(c, HS), col = fa_chunk_col(c, HS);
        if (row0 + row < T) fa_st128(dst + (size_t)(row0 + row) * rs + col, st + row * LD + col);
    }
}

// ---- forward ---------------------------------------------------------------------------------------
// grid (ceil(T / 64), B * NH), 128 threads, fa_fwd_smem(HS) bytes. sl2 = scale * log2(e).
template <int HS>
__global__ void __launch_bounds__(FA_THREADS) attn_flash_fwd_kernel(bf16d* out, float* lse, const bf16d* qkv, int T, int C, int NH,
                                                                   float sl2) {
    constexpr int LD = FA_LD(HS), KS = HS / 16, NO = HS / 8, NS = FA_BK / 8;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16d* qs = reinterpret_cast<bf16d*>(fa_smem); // (FA_BQ, LD) queries q0 ..
    bf16d* kvs = qs + FA_BQ * LD;                   // buffer u: K (FA_BK, LD) at kvs + 2u FA_BK LD, V after it
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = fa_qtile(blockIdx.x, gridDim.x) * FA_BQ;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t rs = 3 * (size_t)C;
    const bf16d* qg = qkv + (size_t)b * T * rs + h * HS; // q rows (T, HS) with row stride rs; k at +C, v at +2C
    const int last = fa_last_key(q0, FA_BQ, T);
    fa_load_tile<HS, FA_BQ>(qs, qg, rs, q0, T);
    fa_load_tile<HS, FA_BK>(kvs, qg + C, rs, 0, T);
    fa_load_tile<HS, FA_BK>(kvs + FA_BK * LD, qg + 2 * C, rs, 0, T);
    fa_cp_commit();

    uint32_t qf[KS][4];  // (16, HS) this warp's queries, A fragments per k-step
    float o[NO][4];      // (16, HS) unnormalized output
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; // rows g, g+8: running max (log2 units), this lane's partial sum
#pragma unroll
    for (int n = 0; n < NO; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    for (int k0 = 0, u = 0; k0 <= last; k0 += FA_BK, u ^= 1) {
        fa_cp_wait_all();
        __syncthreads(); // tile u is in; every warp is done with tile u ^ 1
        if (k0 == 0) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++) fa_load_a<LD>(qf[kk], qs, FA_WROWS * w, 16 * kk, lane);
        }
        if (k0 + FA_BK <= last) {
            bf16d* nb = kvs + (u ^ 1) * 2 * FA_BK * LD;
            fa_load_tile<HS, FA_BK>(nb, qg + C, rs, k0 + FA_BK, T);
            fa_load_tile<HS, FA_BK>(nb + FA_BK * LD, qg + 2 * C, rs, k0 + FA_BK, T);
            fa_cp_commit();
        }
        const bf16d* kb = kvs + u * 2 * FA_BK * LD; // (FA_BK, LD) keys k0 ..
        const bf16d* vb = kb + FA_BK * LD;           // (FA_BK, LD) values k0 ..

        float s[NS][4]; // (16, FA_BK) scores of this warp's queries
#pragma unroll
        for (int n = 0; n < NS; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) fa_mma_bn<NS, LD>(s, qf[kk], kb, 0, 16 * kk, lane);

        // scale to log2 units, mask, row max over the tile (4 lanes share a row)
        const bool mask = fa_tile_needs_mask(q0, k0, FA_BK);
        float mt[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NS; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float x = s[n][i] * sl2;
                if (mask && fa_masked(q0 + FA_WROWS * w + fa_c_row(lane, i), k0 + 8 * n + fa_c_col(lane, i))) x = -INFINITY;
                s[n][i] = x;
                mt[i >> 1] = fmaxf(mt[i >> 1], x);
            }
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 1));
            mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 2));
            const float mn = fmaxf(m[r], mt[r]); // finite: every row sees key k0 <= its query in its first tile
            const float corr = exp2f(m[r] - mn); // 0 on the first tile (m = -inf)
            m[r] = mn;
            l[r] *= corr;
#pragma unroll
            for (int n = 0; n < NO; n++) { o[n][2 * r] *= corr; o[n][2 * r + 1] *= corr; }
        }
#pragma unroll
        for (int n = 0; n < NS; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float p = exp2f(s[n][i] - m[i >> 1]);
                s[n][i] = p;
                l[i >> 1] += p; // the fp32 p (P V uses p rounded to bf16)
            }
        // o (16, HS) += P (16, FA_BK) V (FA_BK, HS)
#pragma unroll
        for (int kk = 0; kk < FA_BK / 16; kk++) {
            uint32_t pa[4];
            fa_acc_to_a(pa, s, kk);
            fa_mma_bt<NO, LD>(o, pa, vb, 16 * kk, lane);
        }
    }

    // the row sums over the 4 lanes of a row; out = o / l (bf16), lse = (m + log2 l) ln 2
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        inv[r] = 1.0f / l[r];
    }
    const int i0 = q0 + FA_WROWS * w; // this warp's first query
    // qs rows i0 - q0 .. + 15 were read only by this warp (its Q fragments, in the loop's first step, after
    // that step's barrier), and no cp.async is in flight (the last step issues none): no barrier needed
    fa_store_rows<HS>(out + (size_t)b * T * C + h * HS, C, i0, T, qs + FA_WROWS * w * LD, o, inv, lane);
    if ((lane & 3) == 0) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int i = i0 + fa_c_row(lane, 2 * r);
            if (i < T) lse[(size_t)bh * T + i] = (m[r] + log2f(l[r])) * FA_LN2;
        }
    }
}

// ---- backward: dK, dV --------------------------------------------------------------------------------
// grid (ceil(T / 64), B * NH), 128 threads, fa_dkv_smem(HS) bytes. Block = keys k0 .. k0 + 63.
template <int HS>
__global__ void __launch_bounds__(FA_THREADS) attn_flash_dkv_kernel(bf16d* dqkv, const bf16d* qkv, const bf16d* dout, const float* lse,
                                                                   const float* dpre, int T, int C, int NH, float sl2, float scale) {
    constexpr int LD = FA_LD(HS), BN = FA_BWD_BN(HS), KS = HS / 16, NN = BN / 8, NO = HS / 8;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16d* ks = reinterpret_cast<bf16d*>(fa_smem); // (FA_BKV, LD) keys k0 ..
    bf16d* vs = ks + FA_BKV * LD;                   // (FA_BKV, LD) values k0 ..
    bf16d* qds = vs + FA_BKV * LD;                  // buffer u: Q (BN, LD) at qds + 2u BN LD, dO (BN, LD) after it
    float* fs = reinterpret_cast<float*>(qds + 4 * BN * LD); // buffer u: lse log2e (BN) at fs + 2u BN, D (BN) after it
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int k0 = blockIdx.x * FA_BKV;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kw = k0 + FA_WROWS * w; // this warp's first key
    const size_t rs = 3 * (size_t)C;
    const bf16d* qg = qkv + (size_t)b * T * rs + h * HS;   // q rows (T, HS), row stride rs; k at +C, v at +2C
    const bf16d* og = dout + (size_t)b * T * C + h * HS;   // dout rows (T, HS), row stride C
    const float* lg = lse + (size_t)bh * T;                // (T)
    const float* dg = dpre + (size_t)bh * T;               // (T)
    // query tile i0 -> buffer u (rows past T: zeros, lse = +inf so that P = 0, D = 0)
    auto load_q = [&](int i0, int u) {
        bf16d* qb = qds + u * 2 * BN * LD;
        fa_load_tile<HS, BN>(qb, qg, rs, i0, T);
        fa_load_tile<HS, BN>(qb + BN * LD, og, C, i0, T);
        float* fb = fs + u * 2 * BN;
        for (int r = threadIdx.x; r < BN; r += FA_THREADS) {
            const int i = i0 + r;
            fb[r] = i < T ? lg[i] * FA_LOG2E : INFINITY;
            fb[BN + r] = i < T ? dg[i] : 0.0f;
        }
    };
    fa_load_tile<HS, FA_BKV>(ks, qg + C, rs, k0, T);
    fa_load_tile<HS, FA_BKV>(vs, qg + 2 * C, rs, k0, T);
    load_q(k0, 0);
    fa_cp_commit();

    float dk[NO][4], dv[NO][4]; // (16, HS) this warp's keys: sum dS^T Q, sum P^T dO
#pragma unroll
    for (int n = 0; n < NO; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) dk[n][i] = dv[n][i] = 0.0f;

    for (int i0 = k0, u = 0; i0 < T; i0 += BN, u ^= 1) {
        fa_cp_wait_all();
        __syncthreads(); // buffer u is in; every warp is done with buffer u ^ 1
        if (i0 + BN < T) {
            load_q(i0 + BN, u ^ 1);
            fa_cp_commit();
        }
        if (fa_all_masked(i0 + BN - 1, kw)) continue; // every query of the tile precedes this warp's keys
        const bf16d* qb = qds + u * 2 * BN * LD; // (BN, LD) queries i0 ..
        const bf16d* ob = qb + BN * LD;          // (BN, LD) dout rows i0 ..
        const float* lb = fs + u * 2 * BN;       // (BN) lse log2e
        const float* db = lb + BN;               // (BN) D

        float st[NN][4], dpt[NN][4]; // (16 keys, BN queries): S^T, then P^T; dP^T, then dS^T
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) st[n][i] = dpt[n][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t a[4];
            fa_load_a<LD>(a, ks, FA_WROWS * w, 16 * kk, lane);
            fa_mma_bn<NN, LD>(st, a, qb, 0, 16 * kk, lane);
            fa_load_a<LD>(a, vs, FA_WROWS * w, 16 * kk, lane);
            fa_mma_bn<NN, LD>(dpt, a, ob, 0, 16 * kk, lane);
        }
        const bool mask = fa_tile_needs_mask(i0, k0, FA_BKV);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int qi = 8 * n + fa_c_col(lane, i); // query i0 + qi, key kw + fa_c_row(lane, i)
                float p = exp2f(st[n][i] * sl2 - lb[qi]);
                if (mask && fa_masked(i0 + qi, kw + fa_c_row(lane, i))) p = 0.0f;
                st[n][i] = p;
                dpt[n][i] = p * (dpt[n][i] - db[qi]);
            }
        // dv (16, HS) += P^T (16, BN) dO (BN, HS);  dk (16, HS) += dS^T (16, BN) Q (BN, HS)
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t a[4];
            fa_acc_to_a(a, st, kk);
            fa_mma_bt<NO, LD>(dv, a, ob, 16 * kk, lane);
            fa_acc_to_a(a, dpt, kk);
            fa_mma_bt<NO, LD>(dk, a, qb, 16 * kk, lane);
        }
    }

    // ks and vs rows kw - k0 .. + 15 were read only by this warp; no copy into them is in flight
    bf16d* rowk = dqkv + (size_t)b * T * rs + C + h * HS;
    const float sc[2] = {scale, scale}, one[2] = {1.0f, 1.0f};
    fa_store_rows<HS>(rowk, rs, kw, T, ks + FA_WROWS * w * LD, dk, sc, lane);
    fa_store_rows<HS>(rowk + C, rs, kw, T, vs + FA_WROWS * w * LD, dv, one, lane);
}

// ---- backward: dQ -----------------------------------------------------------------------------------
// grid (ceil(T / 64), B * NH), 128 threads, fa_dq_smem(HS) bytes. Block = queries q0 .. q0 + 63.
template <int HS>
__global__ void __launch_bounds__(FA_THREADS) attn_flash_dq_kernel(bf16d* dqkv, const bf16d* qkv, const bf16d* dout, const float* lse,
                                                                  const float* dpre, int T, int C, int NH, float sl2, float scale) {
    constexpr int LD = FA_LD(HS), BN = FA_BWD_BN(HS), KS = HS / 16, NN = BN / 8, NO = HS / 8;
    extern __shared__ __align__(16) unsigned char fa_smem[];
    bf16d* qs = reinterpret_cast<bf16d*>(fa_smem); // (FA_BQ, LD) queries q0 ..
    bf16d* os = qs + FA_BQ * LD;                    // (FA_BQ, LD) dout rows q0 ..
    bf16d* kvs = os + FA_BQ * LD;                   // buffer u: K (BN, LD) at kvs + 2u BN LD, V (BN, LD) after it
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = fa_qtile(blockIdx.x, gridDim.x) * FA_BQ;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int iw = q0 + FA_WROWS * w; // this warp's first query
    const size_t rs = 3 * (size_t)C;
    const bf16d* qg = qkv + (size_t)b * T * rs + h * HS; // q rows (T, HS), row stride rs; k at +C, v at +2C
    const int last = fa_last_key(q0, FA_BQ, T);
    fa_load_tile<HS, FA_BQ>(qs, qg, rs, q0, T);
    fa_load_tile<HS, FA_BQ>(os, dout + (size_t)b * T * C + h * HS, C, q0, T);
    fa_load_tile<HS, BN>(kvs, qg + C, rs, 0, T);
    fa_load_tile<HS, BN>(kvs + BN * LD, qg + 2 * C, rs, 0, T);
    fa_cp_commit();
    float l2[2], dd[2]; // rows g, g + 8: lse log2e (+inf past T: P = 0) and D
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = iw + fa_c_row(lane, 2 * r);
        l2[r] = i < T ? lse[(size_t)bh * T + i] * FA_LOG2E : INFINITY;
        dd[r] = i < T ? dpre[(size_t)bh * T + i] : 0.0f;
    }
    float dq[NO][4]; // (16, HS) sum dS K
#pragma unroll
    for (int n = 0; n < NO; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

    for (int k0 = 0, u = 0; k0 <= last; k0 += BN, u ^= 1) {
        fa_cp_wait_all();
        __syncthreads(); // buffer u is in; every warp is done with buffer u ^ 1
        if (k0 + BN <= last) {
            bf16d* nb = kvs + (u ^ 1) * 2 * BN * LD;
            fa_load_tile<HS, BN>(nb, qg + C, rs, k0 + BN, T);
            fa_load_tile<HS, BN>(nb + BN * LD, qg + 2 * C, rs, k0 + BN, T);
            fa_cp_commit();
        }
        if (fa_all_masked(iw + FA_WROWS - 1, k0)) continue; // every key of the tile follows this warp's queries
        const bf16d* kb = kvs + u * 2 * BN * LD; // (BN, LD) keys k0 ..
        const bf16d* vb = kb + BN * LD;          // (BN, LD) values k0 ..

        float s[NN][4], dp[NN][4]; // (16, BN): S, then P; dP, then dS
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) s[n][i] = dp[n][i] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            uint32_t a[4];
            fa_load_a<LD>(a, qs, FA_WROWS * w, 16 * kk, lane);
            fa_mma_bn<NN, LD>(s, a, kb, 0, 16 * kk, lane);
            fa_load_a<LD>(a, os, FA_WROWS * w, 16 * kk, lane);
            fa_mma_bn<NN, LD>(dp, a, vb, 0, 16 * kk, lane);
        }
        const bool mask = fa_tile_needs_mask(q0, k0, BN);
#pragma unroll
        for (int n = 0; n < NN; n++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                float p = exp2f(s[n][i] * sl2 - l2[i >> 1]);
                if (mask && fa_masked(iw + fa_c_row(lane, i), k0 + 8 * n + fa_c_col(lane, i))) p = 0.0f;
                dp[n][i] = p * (dp[n][i] - dd[i >> 1]);
            }
        // dq (16, HS) += dS (16, BN) K (BN, HS)
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t a[4];
            fa_acc_to_a(a, dp, kk);
            fa_mma_bt<NO, LD>(dq, a, kb, 16 * kk, lane);
        }
    }
    // qs rows iw - q0 .. + 15 were read only by this warp
    const float sc[2] = {scale, scale};
    fa_store_rows<HS>(dqkv + (size_t)b * T * rs + h * HS, rs, iw, T, qs + FA_WROWS * w * LD, dq, sc, lane);
}

// ---- host side --------------------------------------------------------------------------------------
static int attn_flash_supported(int HS) { return HS == 32 || HS == 64 || HS == 128; }

#define FA_DISPATCH(hs, CALL) \
    switch (hs) { case 32: CALL(32); break; case 64: CALL(64); break; case 128: CALL(128); break; \
                  default: fprintf(stderr, "internal error: no flash attention kernel for head size %d\n", hs); exit(1); }

// the dynamic shared-memory limit of a kernel, raised once (per process: one device)
static void fa_smem_attr(const void* kernel, int bytes, int* done) {
    if (*done) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    *done = 1;
}

template <int HS>
static void attn_flash_forward_hs(bf16d* out, float* lse, const bf16d* qkv, int B, int T, int C, int NH) {
    static int attr = 0;
    const int smem = fa_fwd_smem(HS);
    fa_smem_attr((const void*)attn_flash_fwd_kernel<HS>, smem, &attr);
    const float sl2 = 1.0f / sqrtf((float)HS) * FA_LOG2E;
    attn_flash_fwd_kernel<HS><<<dim3(ceil_div_u(T, FA_BQ), B * NH), FA_THREADS, smem>>>(out, lse, qkv, T, C, NH, sl2);
    KERNEL_CHECK();
}

template <int HS>
static void attn_flash_backward_hs(bf16d* dqkv, float* dpre, const bf16d* dout, const bf16d* qkv, const bf16d* out,
                                   const float* lse, int B, int T, int C, int NH) {
    static int attr_kv = 0, attr_q = 0;
    const int smem_kv = fa_dkv_smem(HS), smem_q = fa_dq_smem(HS);
    fa_smem_attr((const void*)attn_flash_dkv_kernel<HS>, smem_kv, &attr_kv);
    fa_smem_attr((const void*)attn_flash_dq_kernel<HS>, smem_q, &attr_q);
    const float scale = 1.0f / sqrtf((float)HS), sl2 = scale * FA_LOG2E;
    attention_backward_pre_kernel<bf16d, HS><<<dim3(ceil_div_u(T, ATT_ROWS), B * NH), ATT_ROWS * ATT_LANES>>>(dpre, out, dout, T, C, NH);
    KERNEL_CHECK();
    attn_flash_dkv_kernel<HS><<<dim3(ceil_div_u(T, FA_BKV), B * NH), FA_THREADS, smem_kv>>>(dqkv, qkv, dout, lse, dpre, T, C, NH, sl2, scale);
    KERNEL_CHECK();
    attn_flash_dq_kernel<HS><<<dim3(ceil_div_u(T, FA_BQ), B * NH), FA_THREADS, smem_q>>>(dqkv, qkv, dout, lse, dpre, T, C, NH, sl2, scale);
    KERNEL_CHECK();
}

static void attn_flash_forward(bf16d* out, float* lse, const bf16d* qkv, int B, int T, int C, int NH) {
#define FA_FWD(HS) attn_flash_forward_hs<HS>(out, lse, qkv, B, T, C, NH)
    FA_DISPATCH(C / NH, FA_FWD);
#undef FA_FWD
}

// dqkv (B, T, 3C) is overwritten; dpre (B, NH, T) fp32 scratch
static void attn_flash_backward(bf16d* dqkv, float* dpre, const bf16d* dout, const bf16d* qkv, const bf16d* out,
                                const float* lse, int B, int T, int C, int NH) {
#define FA_BWD(HS) attn_flash_backward_hs<HS>(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH)
    FA_DISPATCH(C / NH, FA_BWD);
#undef FA_BWD
}

#endif
