// cuda/attention_cublas_plan.h: the plan of the cuBLAS attention route (cuda/attention_cublas.cuh), in
// plain C shared by nvcc and gcc, so that test/test_attention_cublas.c runs exactly the GEMMs and the
// element indexing the GPU runs, through a host model of cublasGemmStridedBatchedEx:
//   - attn_layout: where each buffer lives in the device scratch (byte offsets, sizes);
//   - attn_plan_forward / attn_plan_backward: every GEMM as the fields passed to cuBLAS;
//   - the HD index functions of the permute, softmax and dS kernels, and their elementwise math.
// See cuda/attention_cublas.cuh for the math and the column-major mapping of each GEMM.
#ifndef CUDA_ATTENTION_CUBLAS_PLAN_H
#define CUDA_ATTENTION_CUBLAS_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "common/numerics.h"

// The scratch buffers. X is the (B*NH, T, Tp) fp32 score buffer; its rows are reused as two bf16 halves
// (P in the first Tp bf16 of a row, dP / dS in the second). Q, K, V, O are (B*NH, T, HS) bf16 each;
// in the backward O holds dO, then dQ; V is overwritten by dV, K by dK (after their last reads).
enum { ATTN_BUF_X, ATTN_BUF_Q, ATTN_BUF_K, ATTN_BUF_V, ATTN_BUF_O, ATTN_BUF_WS, ATTN_NBUF };
#define ATTN_ALIGN 256                            // every buffer starts 256-byte aligned (cuBLAS's workspace needs it)
#define ATTN_WORKSPACE_BYTES ((size_t)32 << 20)   // cuBLAS workspace: 32 MiB, NVIDIA's suggestion for Hopper
#define ATTN_ROW_UNROLL 4                         // elements per lane per chunk of the row kernels
#define ATTN_ROW_CHUNK (32 * ATTN_ROW_UNROLL)     // a warp converts a score row to P in chunks of this many

typedef struct {
    int B, T, C, NH, HS;
    int BH;      // B * NH: the GEMMs' batch count (head z = b * NH + h)
    int Tp;      // T rounded up to a multiple of 8: X's row pitch in fp32 elements (16-byte aligned rows)
    float scale; // 1 / sqrt(HS)
    size_t off[ATTN_NBUF], bytes[ATTN_NBUF]; // byte offset and size of each buffer in the scratch
    size_t total;                            // scratch bytes
} AttnLayout;

static inline size_t attn_round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static inline int attn_hs_supported(int HS) { return HS > 0 && HS % 8 == 0; }

static inline void attn_layout(AttnLayout* L, int B, int T, int C, int NH) {
    L->B = B; L->T = T; L->C = C; L->NH = NH;
    L->HS = C / NH;
    L->BH = B * NH;
    L->Tp = (int)attn_round_up((size_t)T, 8);
    L->scale = 1.0f / sqrtf((float)L->HS);
    const size_t head = (size_t)L->BH * T * L->HS * 2; // one (BH, T, HS) bf16 buffer
    L->bytes[ATTN_BUF_X] = (size_t)L->BH * T * L->Tp * 4;
    L->bytes[ATTN_BUF_Q] = head;
    L->bytes[ATTN_BUF_K] = head;
    L->bytes[ATTN_BUF_V] = head;
    L->bytes[ATTN_BUF_O] = head;
    L->bytes[ATTN_BUF_WS] = ATTN_WORKSPACE_BYTES;
    size_t at = 0;
    for (int i = 0; i < ATTN_NBUF; i++) {
        L->off[i] = at;
        at = attn_round_up(at + L->bytes[i], ATTN_ALIGN);
    }
    L->total = at;
}

// ---- element indices (all in elements of the array's own type) --------------------------------------
// qkv (B, T, 3C): part 0 q, 1 k, 2 v; head h's slice is columns [h*HS, (h+1)*HS) of the part.
HD static inline size_t attn_qkv_idx(int b, int t, int part, int h, int d, int T, int C, int HS) {
    return ((size_t)b * T + t) * 3 * C + (size_t)part * C + (size_t)h * HS + d;
}
// out, dout (B, T, C)
HD static inline size_t attn_out_idx(int b, int t, int h, int d, int T, int C, int HS) {
    return ((size_t)b * T + t) * C + (size_t)h * HS + d;
}
// Q, K, V, O, dO, dQ, dK, dV in the scratch: (BH, T, HS), head z = b * NH + h
HD static inline size_t attn_head_idx(int z, int t, int d, int T, int HS) { return ((size_t)z * T + t) * HS + d; }
// S in X: (BH, T, Tp) fp32, row i = query, column j = key
HD static inline size_t attn_s_idx(int z, int i, int j, int T, int Tp) { return ((size_t)z * T + i) * Tp + j; }
// P in X viewed as bf16: row (z, i) is bf16 elements [0, T) of S's row (z, i), pitch 2*Tp
HD static inline size_t attn_p_idx(int z, int i, int j, int T, int Tp) { return ((size_t)z * T + i) * 2 * Tp + j; }
// dP, then dS (in place), in X viewed as bf16: the second half of S's row (z, i)
HD static inline size_t attn_dp_idx(int z, int i, int j, int T, int Tp) { return ((size_t)z * T + i) * 2 * Tp + Tp + j; }
// lse, dpre (B, NH, T)
HD static inline size_t attn_lse_idx(int z, int i, int T) { return (size_t)z * T + i; }

// ---- elementwise math -------------------------------------------------------------------------------
// P_ij = exp(s_ij - lse_i) for keys j <= i, else 0 (S already holds the scaled logits).
HD static inline float attn_p_value(float s, float lse, int i, int j) { return j <= i ? expf(s - lse) : 0.0f; }
// dS_ij = P_ij (dP_ij - D_i), 0 above the diagonal.
HD static inline float attn_ds_value(float p, float dp, float D, int i, int j) { return j <= i ? p * (dp - D) : 0.0f; }

// ---- the GEMMs --------------------------------------------------------------------------------------
// One cublasGemmStridedBatchedEx call, column-major: for each z < batch,
//   C_z (m x n, ldc) = alpha * op(A_z) (m x k) * op(B_z) (k x n) + beta * C_z,
// A_z = A + a_off + z * stride_a (stored k x m with lda when transa, else m x k), likewise B_z and C_z.
// A and B are bf16; C is fp32 or bf16; fp32 accumulation (CUBLAS_COMPUTE_32F).
// Offsets and strides are in elements of the operand's type, from the start of its buffer.
typedef struct {
    const char* name;
    int transa, transb;  // 1: op(X) = X^T (CUBLAS_OP_T), 0: CUBLAS_OP_N
    int m, n, k;
    float alpha, beta;
    int a_buf, b_buf, c_buf;      // ATTN_BUF_*
    size_t a_off, b_off, c_off;
    int lda, ldb, ldc;
    long long stride_a, stride_b, stride_c;
    int c_fp32;                   // C's type: 1 fp32, 0 bf16
    int batch;
} AttnGemm;

#define ATTN_FWD_GEMMS 2
#define ATTN_BWD_GEMMS 5

static inline AttnGemm attn_gemm_make(const char* name, int transa, int transb, int m, int n, int k, float alpha,
                                      int a_buf, size_t a_off, int lda, long long sa,
                                      int b_buf, size_t b_off, int ldb, long long sb,
                                      int c_buf, size_t c_off, int ldc, long long sc, int c_fp32, int batch) {
    AttnGemm g;
    g.name = name; g.transa = transa; g.transb = transb; g.m = m; g.n = n; g.k = k;
    g.alpha = alpha; g.beta = 0.0f;
    g.a_buf = a_buf; g.a_off = a_off; g.lda = lda; g.stride_a = sa;
    g.b_buf = b_buf; g.b_off = b_off; g.ldb = ldb; g.stride_b = sb;
    g.c_buf = c_buf; g.c_off = c_off; g.ldc = ldc; g.stride_c = sc;
    g.c_fp32 = c_fp32; g.batch = batch;
    return g;
}

// S = scale Q K^T, row-major (T, T) per head = column-major S^T = K Q^T:
//   m = T (keys j), n = T (queries i), k = HS; A = K (HS x T col-major, transposed), B = Q (HS x T, as is).
static inline AttnGemm attn_gemm_scores(const AttnLayout* L) {
    const int T = L->T, HS = L->HS, Tp = L->Tp;
    const long long sh = (long long)T * HS;
    return attn_gemm_make("S = scale Q K^T", 1, 0, T, T, HS, L->scale,
                          ATTN_BUF_K, 0, HS, sh, ATTN_BUF_Q, 0, HS, sh,
                          ATTN_BUF_X, 0, Tp, (long long)T * Tp, 1, L->BH);
}

// Forward: g[0] S (fp32 into X), then (after the softmax kernel) g[1] O = P V (bf16 into O).
static inline void attn_plan_forward(const AttnLayout* L, AttnGemm g[ATTN_FWD_GEMMS]) {
    const int T = L->T, HS = L->HS, Tp = L->Tp;
    const long long sh = (long long)T * HS, sp = 2LL * T * Tp;
    g[0] = attn_gemm_scores(L);
    // O = P V, row-major (T, HS) = column-major O^T (HS x T) = V^T P^T:
    //   m = HS, n = T (queries), k = T (keys); A = V stored (HS x T) = V^T as is; B = P stored column-major
    //   (T keys x T queries, ld 2Tp) = P^T as is.
    g[1] = attn_gemm_make("O = P V", 0, 0, HS, T, T, 1.0f,
                          ATTN_BUF_V, 0, HS, sh, ATTN_BUF_X, 0, 2 * Tp, sp,
                          ATTN_BUF_O, 0, HS, sh, 0, L->BH);
}

// Backward, in this order (kernels between them in cuda/attention_cublas.cuh):
//   g[0] S = scale Q K^T (fp32 into X)            -> P kernel: P = exp(S - lse), in place, bf16
//   g[1] dP = dO V^T (bf16, second half of X's rows) -> dS kernel: dS = P (dP - D), in place over dP
//   g[2] dV = P^T dO        into V (V's last read was g[1])
//   g[3] dQ = scale dS K    into O (dO's last read was g[2])
//   g[4] dK = scale dS^T Q  into K (K's last read was g[3])
static inline void attn_plan_backward(const AttnLayout* L, AttnGemm g[ATTN_BWD_GEMMS]) {
    const int T = L->T, HS = L->HS, Tp = L->Tp;
    const long long sh = (long long)T * HS, sp = 2LL * T * Tp;
    g[0] = attn_gemm_scores(L);
    // dP = dO V^T, row-major (T, T) = column-major dP^T = V dO^T: m = T (keys), n = T (queries), k = HS;
    //   A = V stored (HS x T), transposed; B = dO stored (HS x T) as is; C at bf16 offset Tp, ld 2Tp.
    g[1] = attn_gemm_make("dP = dO V^T", 1, 0, T, T, HS, 1.0f,
                          ATTN_BUF_V, 0, HS, sh, ATTN_BUF_O, 0, HS, sh,
                          ATTN_BUF_X, (size_t)Tp, 2 * Tp, sp, 0, L->BH);
    // dV = P^T dO, row-major (T, HS) = column-major dV^T (HS x T keys) = dO^T P:
    //   m = HS, n = T (keys), k = T (queries); A = dO stored (HS x T) = dO^T as is;
    //   B = P stored (T keys x T queries) = P^T, transposed to P (queries x keys).
    g[2] = attn_gemm_make("dV = P^T dO", 0, 1, HS, T, T, 1.0f,
                          ATTN_BUF_O, 0, HS, sh, ATTN_BUF_X, 0, 2 * Tp, sp,
                          ATTN_BUF_V, 0, HS, sh, 0, L->BH);
    // dQ = scale dS K, row-major (T, HS) = column-major dQ^T (HS x T queries) = K^T dS^T:
    //   m = HS, n = T (queries), k = T (keys); A = K stored (HS x T) = K^T as is; B = dS stored = dS^T as is.
    g[3] = attn_gemm_make("dQ = scale dS K", 0, 0, HS, T, T, L->scale,
                          ATTN_BUF_K, 0, HS, sh, ATTN_BUF_X, (size_t)Tp, 2 * Tp, sp,
                          ATTN_BUF_O, 0, HS, sh, 0, L->BH);
    // dK = scale dS^T Q, row-major (T, HS) = column-major dK^T (HS x T keys) = Q^T dS:
    //   m = HS, n = T (keys), k = T (queries); A = Q stored (HS x T) = Q^T as is; B = dS stored = dS^T, transposed.
    g[4] = attn_gemm_make("dK = scale dS^T Q", 0, 1, HS, T, T, L->scale,
                          ATTN_BUF_Q, 0, HS, sh, ATTN_BUF_X, (size_t)Tp, 2 * Tp, sp,
                          ATTN_BUF_K, 0, HS, sh, 0, L->BH);
}

#endif
