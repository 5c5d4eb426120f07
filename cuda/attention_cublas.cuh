// cuda/attention_cublas.cuh: causal self-attention through cuBLAS GEMMs, forward and backward: the route
// llm.c takes without cuDNN, leaner on memory. Same semantics as cuda/attention.cuh (bf16 storage):
//
//   qkv  (B, T, 3C) bf16: q[b,t,h,d] = qkv[(b*T + t)*3C + h*HS + d], k at +C, v at +2C, HS = C / NH
//   out  (B, T, C)  bf16: out[b,t,h*HS + d] = sum_{j<=t} P_tj v[b,j,h,d]
//   lse  (B, NH, T) fp32: natural-log log-sum-exp over keys j <= i of s_ij = (q_i . k_j) * scale, scale = 1/sqrt(HS)
//   backward: dqkv (B, T, 3C) bf16 fully overwritten; dpre (B, NH, T) fp32 scratch, D_i = sum_d dout[i,d] out[i,d]
//   P = exp(S - lse) (masked), dP = dO V^T, dS = P (dP - D), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO.
//
// Per head z = b*NH + h (BH = B*NH heads, one strided batch), Q, K, V, O, dO row-major (T, HS):
//   forward   S = scale Q K^T  (T, T) fp32       softmax kernel: lse, P = exp(S - lse) bf16
//             O = P V          (T, HS) bf16
//   backward  S = scale Q K^T  (T, T) fp32       P kernel: P = exp(S - lse) with the saved lse, bf16
//             dP = dO V^T      (T, T) bf16       dS kernel: dS = P (dP - D) bf16
//             dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q   (T, HS) bf16
// cuBLAS is column-major: a row-major (R, K) matrix with row pitch ld is a column-major (K, R) one with the
// same ld. So each product is computed transposed (C^T = op(B)^T op(A)^T), with A and B swapped:
//   S^T  = K Q^T      m=T  n=T  k=HS  A=K  (OP_T, lda HS)   B=Q  (OP_N, ldb HS)   C=S  fp32 ldc Tp
//   O^T  = V^T P^T    m=HS n=T  k=T   A=V  (OP_N, lda HS)   B=P  (OP_N, ldb 2Tp)  C=O  bf16 ldc HS
//   dP^T = V dO^T     m=T  n=T  k=HS  A=V  (OP_T, lda HS)   B=dO (OP_N, ldb HS)   C=dP bf16 ldc 2Tp
//   dV^T = dO^T P     m=HS n=T  k=T   A=dO (OP_N, lda HS)   B=P  (OP_T, ldb 2Tp)  C=dV bf16 ldc HS
//   dQ^T = K^T dS^T   m=HS n=T  k=T   A=K  (OP_N, lda HS)   B=dS (OP_N, ldb 2Tp)  C=dQ bf16 ldc HS, alpha=scale
//   dK^T = Q^T dS     m=HS n=T  k=T   A=Q  (OP_N, lda HS)   B=dS (OP_T, ldb 2Tp)  C=dK bf16 ldc HS, alpha=scale
// (strides per head: T*HS for the (T, HS) operands, T*Tp fp32 / 2*T*Tp bf16 for X). The exact fields are
// built once, in cuda/attention_cublas_plan.h, which test/test_attention_cublas.c executes on the CPU
// through a host model of cublasGemmStridedBatchedEx (test/test_attention_cublas_gpu.cu is the check on a GPU,
// against cuda/attention.cuh). scale is folded into the GEMMs' alpha, so X holds
// the scaled logits. All GEMMs: bf16 A and B, CUBLAS_COMPUTE_32F (fp32 accumulation), default math mode
// plus CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION (no split-K partial sums in bf16).
// The whole (T, T) products are computed (the causal half is wasted work); the kernels mask j > i.
//
// Precision: S is kept in fp32 (a bf16 logit of size ~10 would be off by ~0.04, 4% in P). P, dP and dS
// are bf16 (relative error 2^-8 each, the same as llm.c's bf16 att / datt); D and lse are fp32.
//
// Memory: nothing of size (T, T) survives a call: the forward keeps only lse (B, NH, T), and the
// backward recomputes S from Q and K and P from the saved lse. The scratch (attn_cublas_scratch_bytes,
// allocated once by the trainer for its largest (B, T) and shared by all layers) holds, each buffer
// 256-byte aligned, Tp = T rounded up to a multiple of 8:
//   X       BH * T * Tp * 4 bytes: S in fp32 (row pitch Tp). Its rows are then reused as bf16 halves: the
//           P kernel rewrites each row's P into the row's first Tp bf16 in place, and dP (then dS, in place)
//           goes into the second Tp bf16. So S, P and dP/dS all fit in 4 bytes per score.
//   Q K V O 4 * BH * T * HS * 2 bytes: the heads in (BH, T, HS) layout (the GEMMs need a uniform batch
//           stride, which the (B, T, 3C) layout does not have). O is the forward's output before the
//           merge; in the backward it holds dO, then dQ; dV overwrites V and dK overwrites K, each after
//           that buffer's last read.
//   WS      32 MiB, the cuBLAS workspace (cublasSetWorkspace), so cuBLAS never allocates behind the ledger.
//   total = BH*T*Tp*4 + 8*B*T*C + 32 MiB (+ alignment padding)
//   d12 (B=32, T=1024, NH=12, HS=64): 1536 MiB + 192 MiB + 32 MiB = 1760 MiB (llm.c keeps a bf16
//   (B, NH, T, T) attention matrix per layer, 768 MiB per layer, 9 GiB for 12 layers, plus a preatt scratch).
//
// Determinism: every GEMM is one cuBLAS call with fixed shapes on one stream and a fixed workspace, which
// cuBLAS documents as bitwise reproducible on the same GPU model and library version; every kernel
// writes each element from exactly one thread with fixed reduction orders, no atomics. Forward and
// backward P are bitwise the same (same GEMM on the same inputs, same formula from the same lse).
//
// Alignment: the scratch buffers are 256-byte aligned and every ld is a multiple of 8 elements when
// HS % 8 == 0 (Tp is), so cuBLAS gets 16-byte aligned bf16 operands. The permute kernels move 16-byte
// vectors when the caller's pointers are 16-byte aligned, else single elements.
#ifndef CUDA_ATTENTION_CUBLAS_CUH
#define CUDA_ATTENTION_CUBLAS_CUH

#include <cublas_v2.h>
#include "common/cuda_util.cuh"
#include "cuda/attention_cublas_plan.h"

#define ATTN_ROWS_PER_BLOCK 8 // the row kernels: one warp per (head, query row), 8 warps per block

static cublasHandle_t g_attn_cublas = NULL;
static void* g_attn_cublas_ws = NULL; // the workspace pointer last given to cuBLAS

static size_t attn_cublas_scratch_bytes(int B, int T, int C, int NH) {
    AttnLayout L;
    attn_layout(&L, B, T, C, NH);
    return L.total;
}

static int attn_cublas_supported(int HS) { return attn_hs_supported(HS); }

static inline int attn_aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }

// ---- permutes ----------------------------------------------------------------------------------------
// qkv (B, T, 3C) -> Q, K, V (BH, T, HS). One thread per VEC consecutive d (VEC = 8: one 16-byte vector;
// HS % 8 == 0 keeps every vector inside one head's row and 16-byte aligned when the pointers are).
template <int VEC>
__global__ void attn_split_qkv_kernel(bf16d* q, bf16d* k, bf16d* v, const bf16d* qkv, int BH, int T, int C, int NH, int HS) {
    const int nv = HS / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // over (z, t, d / VEC)
    if (idx >= (size_t)BH * T * nv) return;
    const int z = (int)(idx / ((size_t)T * nv)), b = z / NH, h = z % NH;
    const int t = (int)(idx / nv % T), d = (int)(idx % nv) * VEC;
    bf16d* dst[3] = { q, k, v };
    for (int part = 0; part < 3; part++) {
        const bf16d* s = qkv + attn_qkv_idx(b, t, part, h, d, T, C, HS);
        bf16d* o = dst[part] + attn_head_idx(z, t, d, T, HS);
        if (VEC == 8) *(uint4*)o = *(const uint4*)s;
        else for (int e = 0; e < VEC; e++) o[e] = s[e];
    }
}

// O (BH, T, HS) -> out (B, T, C), or with three sources dQ, dK, dV -> dqkv (B, T, 3C) (nsrc = 3, dst pitch 3C).
template <int VEC>
__global__ void attn_merge_kernel(bf16d* dst, const bf16d* s0, const bf16d* s1, const bf16d* s2, int nsrc,
                                  int BH, int T, int C, int NH, int HS) {
    const int nv = HS / VEC;
    const size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; // over (z, t, d / VEC)
    if (idx >= (size_t)BH * T * nv) return;
    const int z = (int)(idx / ((size_t)T * nv)), b = z / NH, h = z % NH;
    const int t = (int)(idx / nv % T), d = (int)(idx % nv) * VEC;
#pragma unroll
    for (int part = 0; part < 3; part++) {
        if (part >= nsrc) break;
        const bf16d* s = (part == 0 ? s0 : part == 1 ? s1 : s2) + attn_head_idx(z, t, d, T, HS);
        bf16d* o = dst + (nsrc == 3 ? attn_qkv_idx(b, t, part, h, d, T, C, HS) : attn_out_idx(b, t, h, d, T, C, HS));
        if (VEC == 8) *(uint4*)o = *(const uint4*)s;
        else for (int e = 0; e < VEC; e++) o[e] = s[e];
    }
}

// ---- row kernels: one warp per (head z, query row i) ------------------------------------------------
// Rewrites score row (z, i) of X (fp32, j < T) as P_ij = exp(S_ij - lse) in bf16, in place: P's element j
// lands on bytes [2j, 2j + 2) of the row, inside S's element j/2. Going left to right in chunks, with the
// whole chunk read before any of it is written, every S element a write lands on (index < chunk end) has
// already been read, by this chunk or an earlier one. The __syncwarp between the reads and the writes
// orders them across the warp's lanes (and is a compiler barrier between the float and bf16 views).
// Keys j > i get P = 0 (the dense P V and P^T dO GEMMs read them), without reading S there.
__device__ __forceinline__ void attn_write_p_row(float* X, int z, int i, float lse, int T, int Tp) {
    const int lane = threadIdx.x % 32;
    const float* srow = X + attn_s_idx(z, i, 0, T, Tp);
    bf16d* prow = (bf16d*)X + attn_p_idx(z, i, 0, T, Tp);
    for (int j0 = 0; j0 < T; j0 += ATTN_ROW_CHUNK) {
        float p[ATTN_ROW_UNROLL];
#pragma unroll
        for (int u = 0; u < ATTN_ROW_UNROLL; u++) {
            int j = j0 + u * 32 + lane;
            p[u] = (j <= i && j < T) ? attn_p_value(srow[j], lse, i, j) : 0.0f;
        }
        __syncwarp();
#pragma unroll
        for (int u = 0; u < ATTN_ROW_UNROLL; u++) {
            int j = j0 + u * 32 + lane;
            if (j < T) prow[j] = stf<bf16d>(p[u]);
        }
        __syncwarp();
    }
}

// Forward softmax: lse_i = max + log(sum exp(S_ij - max)) over j <= i (online per lane, then merged
// across the warp in a fixed shuffle order), then the row's P.
__global__ void attn_softmax_forward_kernel(float* X, float* lse, int BH, int T, int Tp) {
    const int row = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32; // z * T + i
    if (row >= BH * T) return; // whole warps leave together
    const int z = row / T, i = row % T, lane = threadIdx.x % 32;
    const float* srow = X + attn_s_idx(z, i, 0, T, Tp);
    float m = -INFINITY, l = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        float s = srow[j];
        float mn = fmaxf(m, s);
        l = l * expf(m - mn) + expf(s - mn); // m = -inf on a lane's first key: l = 0 * 0 + 1
        m = mn;
    }
    const float M = warp_max(m); // finite: lane 0 always has key 0
    l = (m == -INFINITY) ? 0.0f : l * expf(m - M);
    const float L = warp_sum(l);
    const float lse_i = M + logf(L);
    if (lane == 0) lse[attn_lse_idx(z, i, T)] = lse_i;
    attn_write_p_row(X, z, i, lse_i, T, Tp);
}

// Backward: P from the recomputed S and the forward's lse.
__global__ void attn_p_kernel(float* X, const float* lse, int BH, int T, int Tp) {
    const int row = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (row >= BH * T) return;
    const int z = row / T, i = row % T;
    attn_write_p_row(X, z, i, lse[attn_lse_idx(z, i, T)], T, Tp);
}

// Backward: dout (B, T, C) -> dO (BH, T, HS), and D_i = sum_d dout[i,d] out[i,d] into dpre (fp32; the
// lanes split d, then a fixed-order warp sum). Any HS.
__global__ void attn_dout_kernel(bf16d* dO, float* dpre, const bf16d* dout, const bf16d* out, int BH, int T, int C, int NH, int HS) {
    const int row = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (row >= BH * T) return;
    const int z = row / T, i = row % T, lane = threadIdx.x % 32, b = z / NH, h = z % NH;
    float acc = 0.0f;
    for (int d = lane; d < HS; d += 32) {
        const size_t o = attn_out_idx(b, i, h, d, T, C, HS);
        bf16d g = dout[o];
        acc += ldf(g) * ldf(out[o]);
        dO[attn_head_idx(z, i, d, T, HS)] = g;
    }
    acc = warp_sum(acc);
    if (lane == 0) dpre[attn_lse_idx(z, i, T)] = acc;
}

// Backward: dS_ij = P_ij (dP_ij - D_i) in place over dP (each element read and written by one thread).
__global__ void attn_ds_kernel(float* X, const float* dpre, int BH, int T, int Tp) {
    const int row = blockIdx.x * ATTN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (row >= BH * T) return;
    const int z = row / T, i = row % T, lane = threadIdx.x % 32;
    const bf16d* prow = (const bf16d*)X + attn_p_idx(z, i, 0, T, Tp);
    bf16d* dsrow = (bf16d*)X + attn_dp_idx(z, i, 0, T, Tp);
    const float D = dpre[attn_lse_idx(z, i, T)];
    for (int j = lane; j < T; j += 32) {
        float ds = j <= i ? attn_ds_value(ldf(prow[j]), ldf(dsrow[j]), D, i, j) : 0.0f;
        dsrow[j] = stf<bf16d>(ds);
    }
}

// ---- cuBLAS --------------------------------------------------------------------------------------------
// The handle, created on first use; its workspace is the scratch's WS buffer (set again only when the
// scratch moves: cublasSetWorkspace is a host-side setting, no allocation, no sync).
static cublasHandle_t attn_cublas_handle(void* ws) {
    if (!g_attn_cublas) {
        CUBLAS_CHECK(cublasCreate(&g_attn_cublas));
        // By default cuBLAS may do a split-K reduction in the OUTPUT type when it is narrower than the
        // compute type (cuBLAS docs, cublasMath_t): the bf16-output GEMMs (O, dP, dV, dQ, dK, k = T) would
        // then sum partial products in bf16, not fp32 as this route promises. Forbid it.
        CUBLAS_CHECK(cublasSetMathMode(g_attn_cublas, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
        // The handle stays on the legacy default stream (the one our kernels use): no cublasSetStream,
        // which would also silently reset the workspace below to cuBLAS's own pool.
    }
    if (ws != g_attn_cublas_ws) {
        CUBLAS_CHECK(cublasSetWorkspace(g_attn_cublas, ws, ATTN_WORKSPACE_BYTES));
        g_attn_cublas_ws = ws;
    }
    return g_attn_cublas;
}

// Runs one planned GEMM on the scratch: exactly the plan's fields (see attention_cublas_plan.h).
static void attn_gemm(cublasHandle_t handle, const AttnGemm* g, const AttnLayout* L, void* scratch) {
    char* base = (char*)scratch;
    const void* A = base + L->off[g->a_buf] + g->a_off * sizeof(bf16d);
    const void* Bm = base + L->off[g->b_buf] + g->b_off * sizeof(bf16d);
    void* Cm = base + L->off[g->c_buf] + g->c_off * (g->c_fp32 ? sizeof(float) : sizeof(bf16d));
    const float alpha = g->alpha, beta = g->beta;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, g->transa ? CUBLAS_OP_T : CUBLAS_OP_N, g->transb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                            g->m, g->n, g->k, &alpha,
                                            A, CUDA_R_16BF, g->lda, g->stride_a,
                                            Bm, CUDA_R_16BF, g->ldb, g->stride_b, &beta,
                                            Cm, g->c_fp32 ? CUDA_R_32F : CUDA_R_16BF, g->ldc, g->stride_c,
                                            g->batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static bf16d* attn_buf(const AttnLayout* L, void* scratch, int buf) { return (bf16d*)((char*)scratch + L->off[buf]); }

static void attn_check_shape(int B, int T, int C, int NH) {
    if (B <= 0 || T <= 0 || NH <= 0 || C % NH != 0 || !attn_cublas_supported(C / NH)) {
        fprintf(stderr, "internal error: cuBLAS attention needs C %% NH == 0 and a head size that is a multiple of 8 "
                        "(B=%d T=%d C=%d NH=%d)\n", B, T, C, NH);
        exit(1);
    }
}

// out (B, T, C), lse (B, NH, T) from qkv (B, T, 3C). scratch: attn_cublas_scratch_bytes(B, T, C, NH) bytes.
static void attn_cublas_forward(bf16d* out, float* lse, const bf16d* qkv, int B, int T, int C, int NH, void* scratch) {
    attn_check_shape(B, T, C, NH);
    AttnLayout L;
    attn_layout(&L, B, T, C, NH);
    AttnGemm g[ATTN_FWD_GEMMS];
    attn_plan_forward(&L, g);
    cublasHandle_t handle = attn_cublas_handle((char*)scratch + L.off[ATTN_BUF_WS]);
    bf16d *q = attn_buf(&L, scratch, ATTN_BUF_Q), *k = attn_buf(&L, scratch, ATTN_BUF_K);
    bf16d *v = attn_buf(&L, scratch, ATTN_BUF_V), *o = attn_buf(&L, scratch, ATTN_BUF_O);
    float* X = (float*)((char*)scratch + L.off[ATTN_BUF_X]);
    const int HS = L.HS;
    const int vec8 = attn_aligned16(qkv) && attn_aligned16(out) && attn_aligned16(scratch);
    const unsigned rows = ceil_div_u((size_t)L.BH * T, ATTN_ROWS_PER_BLOCK);
    const unsigned grid8 = ceil_div_u((size_t)L.BH * T * HS / 8, 256), grid1 = ceil_div_u((size_t)L.BH * T * HS, 256);
    // qkv -> Q, K, V (BH, T, HS)
    if (vec8) attn_split_qkv_kernel<8><<<grid8, 256>>>(q, k, v, qkv, L.BH, T, C, NH, HS);
    else attn_split_qkv_kernel<1><<<grid1, 256>>>(q, k, v, qkv, L.BH, T, C, NH, HS);
    KERNEL_CHECK();
    attn_gemm(handle, &g[0], &L, scratch); // S = scale Q K^T  (BH, T, Tp) fp32
    attn_softmax_forward_kernel<<<rows, 32 * ATTN_ROWS_PER_BLOCK>>>(X, lse, L.BH, T, L.Tp); // lse, P in place
    KERNEL_CHECK();
    attn_gemm(handle, &g[1], &L, scratch); // O = P V  (BH, T, HS) bf16
    // O -> out (B, T, C)
    if (vec8) attn_merge_kernel<8><<<grid8, 256>>>(out, o, NULL, NULL, 1, L.BH, T, C, NH, HS);
    else attn_merge_kernel<1><<<grid1, 256>>>(out, o, NULL, NULL, 1, L.BH, T, C, NH, HS);
    KERNEL_CHECK();
}

// dqkv (B, T, 3C) overwritten; dpre (B, NH, T) fp32 scratch (D_i); dout, out (B, T, C); lse from the forward.
static void attn_cublas_backward(bf16d* dqkv, float* dpre, const bf16d* dout, const bf16d* qkv, const bf16d* out,
                                 const float* lse, int B, int T, int C, int NH, void* scratch) {
    attn_check_shape(B, T, C, NH);
    AttnLayout L;
    attn_layout(&L, B, T, C, NH);
    AttnGemm g[ATTN_BWD_GEMMS];
    attn_plan_backward(&L, g);
    cublasHandle_t handle = attn_cublas_handle((char*)scratch + L.off[ATTN_BUF_WS]);
    bf16d *q = attn_buf(&L, scratch, ATTN_BUF_Q), *k = attn_buf(&L, scratch, ATTN_BUF_K);
    bf16d *v = attn_buf(&L, scratch, ATTN_BUF_V), *o = attn_buf(&L, scratch, ATTN_BUF_O);
    float* X = (float*)((char*)scratch + L.off[ATTN_BUF_X]);
    const int HS = L.HS;
    const int vec8 = attn_aligned16(qkv) && attn_aligned16(dqkv) && attn_aligned16(scratch);
    const unsigned rows = ceil_div_u((size_t)L.BH * T, ATTN_ROWS_PER_BLOCK);
    const unsigned grid8 = ceil_div_u((size_t)L.BH * T * HS / 8, 256), grid1 = ceil_div_u((size_t)L.BH * T * HS, 256);
    if (vec8) attn_split_qkv_kernel<8><<<grid8, 256>>>(q, k, v, qkv, L.BH, T, C, NH, HS);
    else attn_split_qkv_kernel<1><<<grid1, 256>>>(q, k, v, qkv, L.BH, T, C, NH, HS);
    KERNEL_CHECK();
    attn_dout_kernel<<<rows, 32 * ATTN_ROWS_PER_BLOCK>>>(o, dpre, dout, out, L.BH, T, C, NH, HS); // dO into O, D
    KERNEL_CHECK();
    attn_gemm(handle, &g[0], &L, scratch); // S = scale Q K^T  fp32
    attn_p_kernel<<<rows, 32 * ATTN_ROWS_PER_BLOCK>>>(X, lse, L.BH, T, L.Tp); // P = exp(S - lse), in place
    KERNEL_CHECK();
    attn_gemm(handle, &g[1], &L, scratch); // dP = dO V^T  bf16, second half of X's rows
    attn_ds_kernel<<<rows, 32 * ATTN_ROWS_PER_BLOCK>>>(X, dpre, L.BH, T, L.Tp); // dS = P (dP - D), in place
    KERNEL_CHECK();
    attn_gemm(handle, &g[2], &L, scratch); // dV = P^T dO        -> V
    attn_gemm(handle, &g[3], &L, scratch); // dQ = scale dS K    -> O
    attn_gemm(handle, &g[4], &L, scratch); // dK = scale dS^T Q  -> K
    // dQ (in O), dK (in K), dV (in V) -> dqkv (B, T, 3C)
    if (vec8) attn_merge_kernel<8><<<grid8, 256>>>(dqkv, o, k, v, 3, L.BH, T, C, NH, HS);
    else attn_merge_kernel<1><<<grid1, 256>>>(dqkv, o, k, v, 3, L.BH, T, C, NH, HS);
    KERNEL_CHECK();
}

#endif
