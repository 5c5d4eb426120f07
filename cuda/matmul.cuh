// cuda/matmul.cuh: the model's matmuls through cuBLASLt, and the bias gradient.
//
// Row-major conventions of the model (as the CPU's cpu/matmul.c):
//   forward   out (N, OC) = inp (N, IC) @ W^T + bias,  W (OC, IC)
//   backward  dinp (N, IC) = dout (N, OC) @ W           (overwrites dinp)
//             dW  (OC, IC) += dout^T @ inp               (accumulates: gradient accumulation)
//             dbias (OC)   += column sums of dout        (our kernel, deterministic)
// cuBLAS is column-major, so a row-major (R, K) matrix is a column-major (K, R) one and each product
// is written transposed. The bias is fused through the BIAS epilogue when its pointer is 16-byte
// aligned, else added by a kernel. fp32 storage uses TF32 tensor cores unless g_matmul_tf32 is 0
// (the tests set 0 to compare against fp32 references tightly).
// Determinism: the reduction-scheme preference excludes in-place (atomic) split-K reductions, and the
// algorithm chosen for a given shape is cached, so the same shapes always run the same kernels.
//
// ---- audit: the matmuls of one d12 step (GPT-2 124M, B=32, T=1024: BT = 32768 rows, C = 768, Vp = 50304),
// bf16 storage, fp32 accumulation. (m, n, k) as passed to cuBLASLt (column-major; "T" = op transposed);
// time at 80% of the H200's 790 dense bf16 TFLOP/s (632 TFLOP/s). x12: once per layer.
//   role            m      n      k    layout (A,B)  epilogue      GFLOP   ms     per step
//   fwd qkv       2304  32768    768   T, N          BIAS          116.0  0.183   x12  2.20
//   fwd attproj    768  32768    768   T, N          BIAS           38.7  0.061   x12  0.73
//   fwd fc        3072  32768    768   T, N          BIAS          154.6  0.245   x12  2.94
//   fwd fcproj     768  32768   3072   T, N          BIAS          154.6  0.245   x12  2.94
//   fwd lm head  50304  32768    768   T, N          none         2531.9  4.006   x1   4.01
//   dX qkv         768  32768   2304   N, N          none (beta 0) 116.0  0.183   x12  2.20
//   dX attproj     768  32768    768   N, N          none (beta 0)  38.7  0.061   x12  0.73
//   dX fc          768  32768   3072   N, N          none (beta 0) 154.6  0.245   x12  2.94
//   dX fcproj     3072  32768    768   N, N          none (beta 0) 154.6  0.245   x12  2.94
//   dX lm head     768  32768  50304   N, N          none (beta 0)2531.9  4.006   x1   4.01
//   dW qkv         768   2304  32768   N, T          none (beta 1) 116.0  0.183   x12  2.20
//   dW attproj     768    768  32768   N, T          none (beta 1)  38.7  0.061   x12  0.73
//   dW fc          768   3072  32768   N, T          none (beta 1) 154.6  0.245   x12  2.94
//   dW fcproj     3072    768  32768   N, T          none (beta 1) 154.6  0.245   x12  2.94
//   dW lm head     768  50304  32768   N, T          none (beta 1)2531.9  4.006   x1   4.01
//   total: 24294 GFLOP = 38.4 ms per step at 632 TFLOP/s (the LM head's three: 12.0 ms of it). Attention's
//   own products (not here) add 4 B NH HS T (T+1)/2 x 3.5 x 12 layers = 2.2 TFLOP, ~3.4 ms.
// Beside the GEMMs, the bias gradients (bias_grad below: a read of dout per biased matmul): 3C + C + 4C +
// C = 9C columns of BT rows per layer, 453 MB in bf16, 5.4 GB per step = 1.36 ms at 4 TB/s.
// What was checked for waste:
//   - the bias gradient's own kernel: it was 64-byte warp accesses (one bf16 column per lane) and 32 row
//     chunks; now 16-byte vectors (a warp reads 512 contiguous bytes of a row) over up to 1024 blocks
//     (cuda/memk_plan.h), so it should run near bandwidth. Not moved into the dW GEMM as
//     CUBLASLT_EPILOGUE_BGRADB: that epilogue WRITES the bias gradient (we accumulate, +=, across
//     micro-steps: it would need a scratch vector and an add), its support depends on the (type,
//     transpose, epilogue) combination and on the heuristic's kernels, and whether its reduction is
//     deterministic across split-K algorithms is not documented; blind, it is not worth 1.36 ms.
//   - the LM head runs over Vp = 50304 (padded, 47 zero rows of wte) instead of V = 50257: 0.09% more
//     flops, for 128-aligned rows; its dW also covers the padded rows (zero dlogits): same 0.09%.
//   - descriptors and layouts are created per call (host time only, a few microseconds each, ~150 calls per
//     step, overlapped with the GPU's queue); the algorithm is the heuristic's first, cached per shape:
//     timing the heuristic's top few per shape once could find faster kernels but needs a GPU.
//   - GELU is not fused as an epilogue: see cuda/gelu.cuh for why.
#ifndef CUDA_MATMUL_CUH
#define CUDA_MATMUL_CUH

#include "common/cuda_util.cuh"
#include "cuda/gelu.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/memk_plan.h"

#define MATMUL_WORKSPACE_BYTES ((size_t)32 << 20) // 32 MiB, what NVIDIA suggests for Hopper
#define MATMUL_CACHE_SIZE 128

typedef struct {
    int m, n, k, transa, transb, epilogue, beta_nonzero;
    int align[4];
    int dtype, compute;
    cublasLtMatmulAlgo_t algo;
} MatmulAlgoEntry;

static cublasLtHandle_t g_lt = NULL;
static void* g_lt_workspace = NULL;
static int g_matmul_tf32 = 1;
static MatmulAlgoEntry g_algo_cache[MATMUL_CACHE_SIZE];
static int g_algo_cache_n = 0;

static void matmul_setup(Ledger* led) {
    if (led->dry) { ledger_record(led, MEM_WORKSPACE, "cuBLASLt workspace", MATMUL_WORKSPACE_BYTES, NULL); return; }
    if (!g_lt) CUBLAS_CHECK(cublasLtCreate(&g_lt));
    g_lt_workspace = dev_alloc(led, MEM_WORKSPACE, "cuBLASLt workspace", MATMUL_WORKSPACE_BYTES);
}

// Largest power of two (<= 256) dividing the address: what cuBLASLt may assume about the pointer.
static int ptr_alignment(const void* p) {
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a % (uintptr_t)al) != 0) al >>= 1;
    return al;
}

template <typename T> struct CudaType;
template <> struct CudaType<float> { static constexpr cudaDataType_t value = CUDA_R_32F; };
template <> struct CudaType<bf16d> { static constexpr cudaDataType_t value = CUDA_R_16BF; };

// D (m, n) column-major = op(A) op(B) (+ bias over the m rows) + beta * D.
// A is (m, k) column-major with lda (or (k, m) when transa); B is (k, n) with ldb (or (n, k) when transb).
template <typename T>
static void matmul_lt(T* d, const T* a, const T* b, const T* bias, int m, int n, int k, int lda, int ldb, int ldd,
                      int transa, int transb, float beta) {
    cudaDataType_t dt = CudaType<T>::value;
    cublasComputeType_t ct = (dt == CUDA_R_32F && g_matmul_tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    cublasLtMatmulDesc_t desc;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, ct, CUDA_R_32F));
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = transb ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
    cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
    int fused_bias = bias != NULL && ptr_alignment(bias) >= 16;
    if (fused_bias) {
        epi = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &dt, sizeof(dt)));
    }
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    cublasLtMatrixLayout_t la, lb, ld;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, dt, transa ? k : m, transa ? m : k, lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, dt, transb ? n : k, transb ? k : n, ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, dt, m, n, ldd));
    int al[4] = { ptr_alignment(a), ptr_alignment(b), ptr_alignment(d), ptr_alignment(d) };
    int bnz = beta != 0.0f;
    // the algorithm: cached per (shape, types, epilogue, alignments)
    MatmulAlgoEntry* hit = NULL;
    for (int i = 0; i < g_algo_cache_n; i++) {
        MatmulAlgoEntry* e = &g_algo_cache[i];
        if (e->m == m && e->n == n && e->k == k && e->transa == transa && e->transb == transb && e->epilogue == (int)epi &&
            e->beta_nonzero == bnz && e->dtype == (int)dt && e->compute == (int)ct && !memcmp(e->align, al, sizeof(al))) { hit = e; break; }
    }
    cublasLtMatmulAlgo_t algo;
    if (hit) {
        algo = hit->algo;
    } else {
        cublasLtMatmulPreference_t pref;
        CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
        size_t ws = MATMUL_WORKSPACE_BYTES;
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
        uint32_t red = CUBLASLT_REDUCTION_SCHEME_MASK & ~(uint32_t)CUBLASLT_REDUCTION_SCHEME_INPLACE;
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red, sizeof(red)));
        const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES };
        for (int i = 0; i < 4; i++) {
            uint32_t v = (uint32_t)al[i];
            CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &v, sizeof(v)));
        }
        cublasLtMatmulHeuristicResult_t res;
        int nres = 0;
        CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g_lt, desc, la, lb, ld, ld, pref, 1, &res, &nres));
        CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
        if (nres == 0) {
            fprintf(stderr, "internal error at %s:%d: cuBLASLt has no algorithm for m=%d n=%d k=%d transa=%d transb=%d\n",
                    __FILE__, __LINE__, m, n, k, transa, transb);
            exit(1);
        }
        algo = res.algo;
        if (g_algo_cache_n < MATMUL_CACHE_SIZE) {
            MatmulAlgoEntry* e = &g_algo_cache[g_algo_cache_n++];
            e->m = m; e->n = n; e->k = k; e->transa = transa; e->transb = transb; e->epilogue = (int)epi;
            e->beta_nonzero = bnz; e->dtype = (int)dt; e->compute = (int)ct;
            memcpy(e->align, al, sizeof(al));
            e->algo = algo;
        }
    }
    float alpha = 1.0f;
    CUBLAS_CHECK(cublasLtMatmul(g_lt, desc, &alpha, a, la, b, lb, &beta, d, ld, d, ld, &algo, g_lt_workspace,
                                MATMUL_WORKSPACE_BYTES, 0));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(ld));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
    if (bias && !fused_bias) add_bias<T>(d, bias, (size_t)n, m); // d is (n rows, m cols) row-major
}

// out (N, OC) = inp (N, IC) @ W^T (+ bias). Column-major: out^T (OC, N) = W^T... i.e. A = W as (IC, OC)
// transposed, B = inp as (IC, N).
template <typename T>
static void matmul_forward(T* out, const T* inp, const T* w, const T* bias, int N, int IC, int OC) {
    matmul_lt<T>(out, w, inp, bias, OC, N, IC, IC, IC, OC, 1, 0, 0.0f);
}

// Stage 1 of dbias: partial (P, OC) column sums over row chunks; block (32 columns x 8 row lanes).
template <typename T>
__global__ void bias_grad_partial_kernel(float* partial, const T* dout, int N, int OC) {
    __shared__ float s[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int chunk = blockIdx.y, P = gridDim.y;
    int rows_per = (N + P - 1) / P;
    int r0 = chunk * rows_per, r1 = min(N, r0 + rows_per);
    float acc = 0.0f;
    if (c < OC) for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += ldf(dout[(size_t)r * OC + c]);
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < OC) {
        float t = 0.0f;
        for (int y = 0; y < 8; y++) t += s[y][threadIdx.x];
        partial[(size_t)chunk * OC + c] = t;
    }
}

template <typename T>
__global__ void bias_grad_finish_kernel(T* dbias, const float* partial, int P, int OC) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= OC) return;
    float t = 0.0f;
    for (int p = 0; p < P; p++) t += partial[(size_t)p * OC + c];
    dbias[c] = stf<T>(ldf(dbias[c]) + t);
}

// Stage 1 with 16-byte loads (cuda/memk_plan.h's bias-gradient split; OC % W == 0, dout 16-byte
// aligned): block (32 lanes, BG_ROWS row lanes), blockIdx.x the column block (32 W columns),
// blockIdx.y the row chunk. Lane l sums its W columns over the row lane's rows in increasing order; the
// row lanes are added in order y = 0..BG_ROWS-1; partial (P, OC).
template <typename T>
__global__ void __launch_bounds__(MEMK_WARP * BG_ROWS) bias_grad_partial_vec_kernel(float* partial, const T* dout, int N, int OC) {
    const int W = Pack<T>::N;
    __shared__ float s[BG_ROWS][8][MEMK_WARP]; // [row lane][element of the vector][lane]: conflict-free
    const int lane = threadIdx.x, y = threadIdx.y;
    const int c = bg_col(blockIdx.x, lane, W);
    const int rpc = bg_rows_per_chunk(N, OC, W);
    const int r0 = blockIdx.y * rpc, r1 = min(N, r0 + rpc);
    float acc[Pack<T>::N];
#pragma unroll
    for (int j = 0; j < W; j++) acc[j] = 0.0f;
    if (c < OC) {
        for (int r = r0 + y; r < r1; r += BG_ROWS) {
            const Pack<T> d = ld_pack(dout + (size_t)r * OC + c);
#pragma unroll
            for (int j = 0; j < W; j++) acc[j] += ldf(d.v[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < W; j++) s[y][j][lane] = acc[j];
    __syncthreads();
    // thread t of the block: the block's column t (lane t / W, element t % W), summed over the row lanes
    const int t = y * MEMK_WARP + lane;
    if (t < MEMK_WARP * W) {
        const int col = blockIdx.x * MEMK_WARP * W + t;
        if (col < OC) {
            float tot = 0.0f;
            for (int q = 0; q < BG_ROWS; q++) tot += s[q][t % W][t / W];
            partial[(size_t)blockIdx.y * OC + col] = tot;
        }
    }
}

// dbias (OC) += column sums of dout (N, OC), deterministic. partial: memk_partial_floats(C) floats
// (OC <= 4 C).
template <typename T>
static void bias_grad(T* dbias, float* partial, const T* dout, int N, int OC) {
    const int W = Pack<T>::N;
    if (N > 0 && OC % W == 0 && memk_aligned16(dout)) {
        const int P = bg_chunks(N, OC, W);
        dim3 grid(bg_col_blocks(OC, W), P), block(MEMK_WARP, BG_ROWS);
        bias_grad_partial_vec_kernel<T><<<grid, block>>>(partial, dout, N, OC);
        KERNEL_CHECK();
        bias_grad_finish_kernel<T><<<ceil_div_u(OC, 256), 256>>>(dbias, partial, P, OC);
        KERNEL_CHECK();
        return;
    }
    dim3 grid(ceil_div_u(OC, 32), NUM_PARTIALS), block(32, 8);
    bias_grad_partial_kernel<T><<<grid, block>>>(partial, dout, N, OC);
    KERNEL_CHECK();
    bias_grad_finish_kernel<T><<<ceil_div_u(OC, 256), 256>>>(dbias, partial, NUM_PARTIALS, OC);
    KERNEL_CHECK();
}

// dinp (N, IC) = dout @ W (overwritten); dw (OC, IC) += dout^T @ inp; dbias (OC) += column sums.
// partial: memk_partial_floats(C) floats of scratch (bias_grad). dinp may be NULL (not needed).
template <typename T>
static void matmul_backward(T* dinp, T* dw, T* dbias, float* partial, const T* dout, const T* inp, const T* w,
                            int N, int IC, int OC) {
    // dinp^T (IC, N) = W^T (IC, OC) @ dout^T (OC, N): A = W as column-major (IC, OC), B = dout as (OC, N)
    if (dinp) matmul_lt<T>(dinp, w, dout, (const T*)NULL, IC, N, OC, IC, OC, IC, 0, 0, 0.0f);
    // dW^T (IC, OC) += inp^T (IC, N) @ dout (N, OC): A = inp as (IC, N), B = dout^T given as (OC, N), transposed
    matmul_lt<T>(dw, inp, dout, (const T*)NULL, IC, OC, N, IC, OC, IC, 0, 1, 1.0f);
    if (dbias) bias_grad<T>(dbias, partial, dout, N, OC);
}

#endif
