// optim/blas.cuh: what the matrix optimizers share on the GPU (optim/muon.cuh's Newton-Schulz,
// optim/galore.cuh's projections): one cuBLAS handle, a GEMM written in the row-major terms of the CPU
// code, the workspace carving, and the split of the tensors into the matrices they treat their own way
// and the rest (AdamW through optim.cuh's chunk kernel). Included by optim/muon.cuh and optim/galore.cuh,
// which optim/optim.cuh includes after its own definitions (GpuOpt, the state layout).
//
// Why cuBLAS and not the model's cuBLASLt wrapper (cuda/matmul.cuh): these kernels are also built into
// bench/bench_optim.cu, which has no model and no cuBLASLt setup, and GaLore needs fp64 (the Gram matrix)
// and strict fp32 (its projections, no TF32): plain cuBLAS has both. The handle runs on the default
// stream, like every kernel here, with reduced-precision split-K reductions disallowed (a bf16 GEMM then
// accumulates in fp32 all the way, as the CPU's fp32 matmul does) and no TF32 (cuBLAS's default math).
// Its workspace comes from the caller's ledger allocation (OPT_BLAS_WORKSPACE_BYTES, NVIDIA's suggested
// size on Hopper), set before each step's GEMMs, so cuBLAS allocates nothing of its own outside the
// ledger after the handle's creation. Results are bit-reproducible run to run on the same GPU: one
// stream, a fixed workspace, the same shapes (cuBLAS's documented reproducibility conditions).
#ifndef OPTIM_BLAS_CUH
#define OPTIM_BLAS_CUH

#include <cublas_v2.h>
#include "common/cuda_util.cuh"

#define OPT_BLAS_WORKSPACE_BYTES ((size_t)32 << 20)

static cublasHandle_t g_opt_blas = NULL;

// The handle (created on first use), using ws (bytes) as its workspace from now on.
static cublasHandle_t opt_blas(void* ws, size_t bytes) {
    if (!g_opt_blas) {
        CUBLAS_CHECK(cublasCreate(&g_opt_blas));
        CUBLAS_CHECK(cublasSetMathMode(g_opt_blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    }
    CUBLAS_CHECK(cublasSetWorkspace(g_opt_blas, ws, bytes));
    return g_opt_blas;
}

// C (M, N) = op(A) @ op(B), every matrix row-major as in the CPU code, fp32 accumulation; dt: the storage
// type of all three (CUDA_R_16BF: bf16 in and out, each output rounded to nearest once; CUDA_R_32F).
// ta = 0: A is (M, K) with row stride lda; ta = 1: A is stored (K, M) and used transposed. Same for B
// ((K, N), or stored (N, K) with tb = 1).
// The mapping to column-major cuBLAS: a row-major (R, S) matrix with row stride ld is the column-major
// (S, R) matrix with leading dimension ld, its transpose. So row-major C = op(A) op(B) is column-major
// C^T = op(B)^T op(A)^T: cuBLAS's first operand is our B (op N when tb = 0: column-major (N, K) = m x k),
// its second our A (op N when ta = 0: column-major (K, M) = k x n), m = N, n = M, ldc = C's row stride.
static void gemm_rm(cublasHandle_t h, int M, int N, int K, const void* A, int lda, int ta, const void* B, int ldb, int tb,
                    void* C, int ldc, cudaDataType_t dt) {
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B, dt, ldb, A, dt,
                              lda, &zero, C, dt, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The same for `batch` products at once (cublasGemmStridedBatchedEx): product j reads A + j sa, B + j sb
// and writes C + j sc (strides in elements of dt). Each product is computed as gemm_rm would: fp32
// accumulation, the output rounded to dt once.
static void gemm_rm_batched(cublasHandle_t h, int M, int N, int K, const void* A, int lda, int ta, long long sa, const void* B, int ldb,
                            int tb, long long sb, void* C, int ldc, long long sc, int batch, cudaDataType_t dt) {
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &one, B, dt, ldb, sb,
                                            A, dt, lda, sa, &zero, C, dt, ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Offsets of sub-buffers inside one workspace allocation: each starts on a 256-byte boundary (what
// cuBLAS wants of its workspace, and full alignment for the tensor-core GEMMs).
static size_t ws_carve(size_t* total, size_t bytes) {
    const size_t off = (*total + 255) & ~(size_t)255;
    *total = off + bytes;
    return off;
}

// The tensors is_matrix() selects (1 in the returned flags, the caller frees them; *nmat of them) hold
// nstate_matrix fp32 states, the others the 2 of AdamW (CHECKed against the state layout).
static int* matrix_opt_split(const GpuOpt* o, const ParamShape* shapes, int n, int (*is_matrix)(const ParamShape*), int nstate_matrix,
                             int* nmat) {
    int* flag = (int*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    *nmat = 0;
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        flag[i] = is_matrix(&shapes[i]);
        *nmat += flag[i];
        CHECK(ts->nstate == (flag[i] ? nstate_matrix : 2));
        for (int s = 0; s < ts->nstate; s++) CHECK(ts->dtype[s] == DT_F32);
    }
    return flag;
}

#endif
