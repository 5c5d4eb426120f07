// optim/galore.cuh: the CUDA side of optim/galore.c (`-opt galore_adamw`): the same steps, galore.h's
// scalars and per-element functions (the ones the CPU loop calls). Included by optim/optim.cuh.
//
// Projected matrices (galore_projected), one after the other (the workspace holds one at a time), G
// (rows, cols), r = min(-rank, rows, cols), s = min(rows, cols), "right" when rows >= cols:
//   1. galore_grad_kernel: Gf = the clipped fp32 gradient (what the CPU's step receives); on a refresh
//      step also Gd = Gf widened to double.
//   2. Refresh, when the CPU refreshes ((t - 1) % T == 0, or the projector was never computed), batched
//      before the matrices' steps (galore.h's galore_eig_chunks: the refreshing matrices grouped by s,
//      chunks of at most GALORE_EIG_BATCH): per matrix of a chunk, Gd = the clipped gradient in double and
//      its Gram matrix of the smaller side, G^T G (right) or G G^T (left), by cublasDsyrk into the chunk's
//      slot j (products of fp32 values are exact in double; the sums, in cuBLAS's order, differ from the
//      CPU's loop by ~1e-16 relative); then ONE cusolverDnXsyevBatched call in double for the chunk (the
//      s x s eigendecompositions, eigenvalues ascending, as cusolverDnDsyevd returns them), and per matrix
//      galore_proj_kernel: the eigenvectors of the r largest eigenvalues (columns s-1, s-2, ...), each with
//      galore.c's sign convention (its largest-magnitude component positive, the first one on a tie),
//      rounded to fp32 into galore_proj, and galore_step = t. Both solvers are exact to ~1e-13 at the
//      eigenvalue gaps of real gradients, so both sides hold the same projector to fp32 rounding (the
//      test allows 2e-6, as the CPU's own test against torch's float64 SVD). g_galore_eig_batched = 0
//      takes cusolverDnDsyevd matrix by matrix instead (the earlier path; bench_optim times both).
//   3. R = G P^T (right, (rows, r)) or P^T G (left, (r, cols)): a cuBLAS fp32 GEMM (no TF32).
//   4. galore_adam_kernel: Adam on R (galore_adam), N = m / (sqrt(v) + eps) back into R.
//   5. U = N P (right) or P N (left), fp32 GEMM into Gf's space; galore_apply_kernel: p += -step_size *
//      alpha * U, then the decoupled decay (galore_param), the master and the bf16 copy (opt_store).
// Everything else (embeddings, vectors): the same Adam without projection (alpha 1) through optim.cuh's
// multi-tensor chunk kernel, the projected matrices skipped.
// Host syncs: one at the first step (reading galore_step, so a resumed run refreshes exactly when the
// CPU would), and one after each refresh step (cuSOLVER's info flags: a failed eigendecomposition stops
// the run with an internal error instead of training on a garbage projector).
//
// Agreement with the CPU: the projector as above; R sums its fp32 products in cuBLAS's order instead of
// the CPU's loop (~sqrt(K) * 2^-24 relative), nvcc fuses galore.h's multiply-adds where gcc (with
// contraction off in galore.c) does not (1 ulp), and Adam's m / (sqrt(v) + eps) passes relative errors
// through unamplified: m, v agree to ~1e-6 of the tensor's largest element, the parameters to ~lr * 1e-6
// plus an ulp per step (the test's tolerances: 1e-4 of the largest m, v; 1e-6 absolute on the master).
//
// Why batched and exact, not an iterative top-r solver: test_gpt2cu checks the projector against the
// CPU's exact one within 2e-6 per element, and a randomized range finder or subspace iteration reaches
// that only when the eigenvalue gap at r converges it, which real gradients do not promise (their
// spectrum decays slowly around r = 128 of 768); the eigenvectors also seed the Adam moments' basis,
// which m and v keep across refreshes. cuSOLVER's Jacobi syevjBatched takes only n <= 32;
// cusolverDnXsyevBatched takes any n (n * lda * batch < 2^31) in double, so the refresh keeps the
// exact eigenvectors and pays the solver's launch and latency cost once per chunk instead of per matrix.
// Refresh cost at d12 (48 matrices, all s = 768, r = 128; measured 397 ms with one syevd per matrix, ~8 ms
// each, launch- and latency-bound: a 768 x 768 problem keeps the GPU nearly idle): the Grams are 65 GFLOP
// of fp64 (syrk: rows * s^2 per matrix), ~2 ms at ~40 TFLOP/s of fp64 tensor cores; the eigensolvers
// ~(4/3 + 2 + up to 4/3) s^3 = 2.1 GFLOP each, 100 GFLOP, and their tridiagonalization's matrix-vector
// half streams ~n^3/3 * 8 bytes = 1.2 GB per matrix from L2/HBM: ~12 ms at ~4.5 TB/s for all 48. In 3
// chunks of 16, if a batched call costs about what one syevd did in latency (~8 ms), the refresh is
// ~25-30 ms, plus ~3.4 ms of the normal step: expected 30-40 ms (goal 40 ms). If XsyevBatched instead
// loops over its matrices internally, it stays ~400 ms: bench_optim prints the refresh both ways.
//
// Workspace (MEM_WORKSPACE, allocated once at setup): Gf (4 B) and Gd (8 B) per element of the largest
// projected matrix, the chunk's Gram / eigenvector matrices (GALORE_EIG_BATCH x 8 s^2) and eigenvalues,
// R (4 rows r or 4 r cols), the per-matrix info flags, the cuBLAS workspace; then the eigensolvers'
// device workspace (a second line: the larger of XsyevBatched's for a full chunk and Dsyevd's, as
// cuSOLVER reports them; a dry ledger records GALORE_EIG_BATCH times LAPACK's dsyevd bound, 8 (1 + 6 s +
// 2 s^2) bytes, and the real one allocates the larger of the two, so both agree unless cuSOLVER asks for
// more). d12 (largest (3072, 768), s = 768, r = 128): 29.9 MB + 75.5 MB (16 Grams) + 32 MiB (139.0 MB), and at least
// 151.6 MB of eigensolver workspace (the one-matrix path took 34.6 MB + 32 MiB and 19.9 MB). XsyevBatched's
// host workspace, if it asks for one, is a malloc outside the ledger (host memory).
// Cost of a normal step: 2 fp32 GEMMs of 2*rows*cols*r FLOPs per matrix.
#ifndef OPTIM_GALORE_CUH
#define OPTIM_GALORE_CUH

#include <limits.h>
#include <cusolverDn.h>
#include "optim/galore.h"
#include "optim/blas.cuh"

#define GALORE_THREADS 256
#define GALORE_EIG_BATCH 16  // matrices per batched eigensolver call (d12: 3 calls of 16)

// 1: one cusolverDnXsyevBatched call per chunk of a refresh; 0: cusolverDnDsyevd matrix by matrix (the
// earlier path, kept for bench_optim's comparison and as a fallback). Read at each refresh step.
static int g_galore_eig_batched = 1;

static void cusolver_fail_(cusolverStatus_t s, const char* expr, const char* file, int line) {
    if (s == CUSOLVER_STATUS_ALLOC_FAILED && g_cuda_oom_hook) g_cuda_oom_hook(expr);
    fprintf(stderr, "internal error at %s:%d: cuSOLVER error %d in %s\n", file, line, (int)s, expr);
    exit(1);
}
#define CUSOLVER_CHECK(call) do { cusolverStatus_t s_ = (call); if (s_ != CUSOLVER_STATUS_SUCCESS) cusolver_fail_(s_, #call, __FILE__, __LINE__); } while (0)

static cusolverDnHandle_t g_opt_solver = NULL;
static cusolverDnParams_t g_opt_solver_params = NULL;

// The cuSOLVER handle (created on first use): default stream, deterministic results.
static cusolverDnHandle_t opt_solver(void) {
    if (!g_opt_solver) {
        CUSOLVER_CHECK(cusolverDnCreate(&g_opt_solver));
        CUSOLVER_CHECK(cusolverDnSetDeterministicMode(g_opt_solver, CUSOLVER_DETERMINISTIC_RESULTS));
        CUSOLVER_CHECK(cusolverDnCreateParams(&g_opt_solver_params));
    }
    return g_opt_solver;
}

typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    int rows, cols, r, s, right;
    int decay;          // weight decay applies
    float* m;           // exp_avg (rows, r) right, (r, cols) left
    float* v;           // exp_avg_sq, the same shape
    float* P;           // galore_proj (r, cols) right, (rows, r) left
    float* pstep;       // galore_step (1): the step of the last refresh, 0 = never
    int need;           // host: galore_step was 0 at the first step (refresh whatever the step)
} GaloreMatrix;

typedef struct {
    int nmat;
    int checked;        // the galore_step values have been read (first step)
    GaloreMatrix* mat;  // (nmat) in the trainer's order (same host allocation as this struct)
    int* s;             // (nmat) host: each matrix's s (same allocation)
    int* need_now;      // (nmat) host: refreshes at this step (same allocation)
    int* order;         // (nmat) host: the refresh order (galore_eig_chunks; same allocation)
    int* cstart;        // (nmat + 1) host: its chunks (same allocation)
    float* Gf;          // (rows, cols) the clipped fp32 gradient; after the projection, U
    double* Gd;         // (rows, cols) the gradient in double (refresh steps)
    double* gram;       // (GALORE_EIG_BATCH, s, s) a chunk's Gram matrices (lower triangles), then eigenvectors as columns
    double* eig;        // (GALORE_EIG_BATCH, s) eigenvalues, ascending
    float* R;           // (rows, r) or (r, cols): the projected gradient, then N
    int* info;          // (nmat) cuSOLVER's status of each eigendecomposition of a refresh, in refresh order
    void* blas_ws;      // (OPT_BLAS_WORKSPACE_BYTES)
    void* work;         // (work_bytes) the eigensolvers' device workspace
    size_t work_bytes;
    void* hwork;        // (hwork_bytes) XsyevBatched's host workspace (malloc; NULL if none)
    size_t hwork_bytes;
} GaloreGpu;

static unsigned galore_grid(size_t n) {
    const size_t b = (n + GALORE_THREADS - 1) / GALORE_THREADS;
    return (unsigned)(b < 1 ? 1 : b < (size_t)OPT_MAX_GRID ? b : (size_t)OPT_MAX_GRID);
}

// 1. Gf = the clipped gradient as fp32 (opt_grad: the CPU's fp32 product), Gd (if not NULL) = Gf in double.
template <typename G>
__global__ void __launch_bounds__(GALORE_THREADS) galore_grad_kernel(const G* grad, float* Gf, double* Gd, size_t n, float clip_scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = opt_grad(grad, i, clip_scale);
        Gf[i] = g;
        if (Gd) Gd[i] = (double)g;
    }
}

// (|z|, index) pairs: the larger magnitude wins, the lower index on a tie (galore.c's scan), a total
// order, so any reduction tree gives the same winner.
__device__ __forceinline__ void galore_argmax_merge(double* a, int* ia, double b, int ib) {
    if (b > *a || (b == *a && ib < *ia)) { *a = b; *ia = ib; }
}

// 2. Block k: the eigenvector of the k-th largest eigenvalue (column s-1-k of Z, column-major (s, s)) with
// the sign convention, into row k of P (r, cols) (right) or column k of P (rows, r) (left).
__global__ void __launch_bounds__(GALORE_THREADS) galore_proj_kernel(const double* Z, int s, int r, int right, float* P, float* pstep, float t) {
    __shared__ double bv[32];
    __shared__ int bi[32];
    const int k = blockIdx.x;
    const double* z = Z + (size_t)(s - 1 - k) * s;
    double best = -1.0;
    int at = s;
    for (int i = threadIdx.x; i < s; i += blockDim.x) galore_argmax_merge(&best, &at, fabs(z[i]), i);
    for (int off = 16; off > 0; off >>= 1) {
        const double ob = __shfl_down_sync(0xffffffffu, best, off);
        const int oi = __shfl_down_sync(0xffffffffu, at, off);
        galore_argmax_merge(&best, &at, ob, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (lane == 0) { bv[warp] = best; bi[warp] = at; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < nwarps; w++) galore_argmax_merge(&bv[0], &bi[0], bv[w], bi[w]);
        if (bi[0] >= s) bi[0] = 0; // all NaN: galore.c keeps index 0
    }
    __syncthreads();
    const double sign = z[bi[0]] < 0.0 ? -1.0 : 1.0;
    for (int i = threadIdx.x; i < s; i += blockDim.x) {
        const float x = (float)(sign * z[i]);
        if (right) P[(size_t)k * s + i] = x;   // row k of Vh (r, cols), cols = s
        else P[(size_t)i * r + k] = x;         // column k of U (rows, r), rows = s
    }
    if (k == 0 && threadIdx.x == 0) *pstep = t;
}

// 4. Adam in the projected space: R becomes N = m / (sqrt(v) + eps).
__global__ void __launch_bounds__(GALORE_THREADS) galore_adam_kernel(float* R, float* m, float* v, size_t n, GaloreScalars k) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        R[i] = galore_adam(&k, R[i], m + i, v + i);
}

// 5. The parameter update from U (rows, cols), the master and the bf16 copy.
__global__ void __launch_bounds__(GALORE_THREADS) galore_apply_kernel(float* master, bf16d* pbf16, size_t param_off, const float* U, size_t n,
                                                                      GaloreScalars k, int sr, uint64_t seed, int step) {
    const uint64_t base = sr_stream(seed, step, param_off);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t gi = param_off + i;
        opt_store(master, pbf16, gi, galore_param(&k, master[gi], U[i]), sr, base, i);
    }
}

// The tensors that are not projected, per element (optim.cuh's chunk kernel): kd decays, kn does not.
struct GaloreOp {
    GaloreScalars kd, kn;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        const GaloreScalars* k = t.decay ? &kd : &kn;
        return galore_param(k, th, galore_adam(k, g, (float*)t.sp[0] + li, (float*)t.sp[1] + li)); // exp_avg, exp_avg_sq
    }
};

// galore.c's layout: exp_avg, exp_avg_sq, galore_proj, galore_step for a projected matrix; else the first two.
static void galore_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    const OptHyper* h = &o->hyper;
    int nmat = 0;
    int* skip = matrix_opt_split(o, shapes, n, galore_projected, 4, &nmat);
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, skip, led); // chunks: the unprojected tensors
    const size_t cnt = (size_t)(nmat > 0 ? nmat : 1);
    GaloreGpu* q = (GaloreGpu*)xcalloc(1, sizeof(GaloreGpu) + cnt * sizeof(GaloreMatrix) + (4 * cnt + 1) * sizeof(int));
    q->mat = (GaloreMatrix*)(q + 1);
    q->s = (int*)(q->mat + cnt);
    q->need_now = q->s + cnt;
    q->order = q->need_now + cnt;
    q->cstart = q->order + cnt;
    size_t max_numel = 0, max_s = 0, max_low = 0;
    for (int i = 0; i < n; i++) {
        if (!skip[i]) continue;
        CHECK(shapes[i].rows <= INT_MAX && shapes[i].cols <= INT_MAX);
        q->s[q->nmat] = (int)(shapes[i].rows < shapes[i].cols ? shapes[i].rows : shapes[i].cols);
        GaloreMatrix* mt = &q->mat[q->nmat++];
        mt->param_off = param_offsets[i];
        mt->rows = (int)shapes[i].rows;
        mt->cols = (int)shapes[i].cols;
        mt->r = (int)galore_rank(h, &shapes[i]);
        mt->right = mt->rows >= mt->cols;
        mt->s = mt->right ? mt->cols : mt->rows;
        mt->decay = shapes[i].decay;
        mt->m = (float*)ht[i].sp[0];
        mt->v = (float*)ht[i].sp[1];
        mt->P = (float*)ht[i].sp[2];
        mt->pstep = (float*)ht[i].sp[3];
        const size_t numel = shapes[i].numel, low = (size_t)mt->r * (mt->right ? mt->rows : mt->cols);
        if (numel > max_numel) max_numel = numel;
        if ((size_t)mt->s > max_s) max_s = (size_t)mt->s;
        if (low > max_low) max_low = low;
    }
    if (q->nmat > 0) {
        // the largest chunk: GALORE_EIG_BATCH matrices, or the most of one s there are
        const int nch = galore_eig_chunks(q->s, NULL, q->nmat, GALORE_EIG_BATCH, q->order, q->cstart);
        int max_chunk = 1;
        for (int k = 0; k < nch; k++) if (q->cstart[k + 1] - q->cstart[k] > max_chunk) max_chunk = q->cstart[k + 1] - q->cstart[k];
        size_t total = 0;
        const size_t oGf = ws_carve(&total, max_numel * sizeof(float)), oGd = ws_carve(&total, max_numel * sizeof(double));
        const size_t ogram = ws_carve(&total, (size_t)max_chunk * max_s * max_s * sizeof(double));
        const size_t oeig = ws_carve(&total, (size_t)max_chunk * max_s * sizeof(double));
        const size_t oR = ws_carve(&total, max_low * sizeof(float)), oinfo = ws_carve(&total, (size_t)q->nmat * sizeof(int));
        const size_t oblas = ws_carve(&total, OPT_BLAS_WORKSPACE_BYTES);
        char* ws = (char*)dev_alloc(led, MEM_WORKSPACE, "galore workspace (+cuBLAS)", total);
        if (ws) {
            q->Gf = (float*)(ws + oGf);
            q->Gd = (double*)(ws + oGd);
            q->gram = (double*)(ws + ogram);
            q->eig = (double*)(ws + oeig);
            q->R = (float*)(ws + oR);
            q->info = (int*)(ws + oinfo);
            q->blas_ws = ws + oblas;
        }
        // the eigensolvers' workspace: a chunk's worth of LAPACK dsyevd's bound for JOBZ = 'V', or what
        // cuSOLVER asks if more (XsyevBatched for each group's largest chunk, Dsyevd for one matrix)
        size_t wbytes = (size_t)max_chunk * (1 + 6 * max_s + 2 * max_s * max_s) * sizeof(double);
        if (!led->dry) {
            for (int k = 0; k < nch; k++) {
                const int sk = q->s[q->order[q->cstart[k]]], ck = q->cstart[k + 1] - q->cstart[k];
                size_t dev = 0, host = 0;
                CUSOLVER_CHECK(cusolverDnXsyevBatched_bufferSize(opt_solver(), g_opt_solver_params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                                                 sk, CUDA_R_64F, q->gram, sk, CUDA_R_64F, q->eig, CUDA_R_64F, &dev, &host, ck));
                if (dev > wbytes) wbytes = dev;
                if (host > q->hwork_bytes) q->hwork_bytes = host;
                int lw = 0;
                CUSOLVER_CHECK(cusolverDnDsyevd_bufferSize(opt_solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, sk, q->gram, sk, q->eig, &lw));
                if ((size_t)lw * sizeof(double) > wbytes) wbytes = (size_t)lw * sizeof(double);
            }
        }
        CHECK(wbytes / sizeof(double) <= INT_MAX);
        q->work_bytes = wbytes;
        q->work = dev_alloc(led, MEM_WORKSPACE, "galore eigensolver work", wbytes);
        q->hwork = q->hwork_bytes > 0 ? xmalloc(q->hwork_bytes) : NULL;
    }
    free(skip);
    free(ht);
    o->own = q;
}

// The refresh of the matrices with q->need_now set, chunk by chunk (galore.c's galore_svd_projector for
// each): Grams, one batched eigensolver call (or Dsyevd per matrix), the projectors. info[p] is the
// status of matrix order[p].
template <typename G>
static int galore_refresh(GaloreGpu* q, cublasHandle_t hb, const G* grad, float clip_scale, int t) {
    const int nch = galore_eig_chunks(q->s, q->need_now, q->nmat, GALORE_EIG_BATCH, q->order, q->cstart);
    const double one = 1.0, zero = 0.0;
    for (int k = 0; k < nch; k++) {
        const int first = q->cstart[k], count = q->cstart[k + 1] - first, s = q->s[q->order[first]];
        const size_t ss = (size_t)s * s;
        for (int j = 0; j < count; j++) {
            const GaloreMatrix* mt = &q->mat[q->order[first + j]];
            const size_t numel = (size_t)mt->rows * mt->cols;
            galore_grad_kernel<G><<<galore_grid(numel), GALORE_THREADS>>>(grad + mt->param_off, q->Gf, q->Gd, numel, clip_scale);
            KERNEL_CHECK();
            // Gd row-major (rows, cols) is column-major Gd^T (cols, rows) with leading dimension cols; the Gram
            // (s, s) is symmetric, so its column-major lower triangle is also the row-major one (cuSOLVER reads that).
            double* gram = q->gram + (size_t)j * ss;
            if (mt->right)  // G^T G (cols, cols) = Gd^T (Gd^T)^T: syrk op N, n = cols, k = rows
                CUBLAS_CHECK(cublasDsyrk(hb, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, mt->cols, mt->rows, &one, q->Gd, mt->cols, &zero, gram, s));
            else            // G G^T (rows, rows) = (Gd^T)^T Gd^T: syrk op T, n = rows, k = cols
                CUBLAS_CHECK(cublasDsyrk(hb, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, mt->rows, mt->cols, &one, q->Gd, mt->cols, &zero, gram, s));
        }
        if (g_galore_eig_batched) {
            size_t dev = 0, host = 0;
            CUSOLVER_CHECK(cusolverDnXsyevBatched_bufferSize(opt_solver(), g_opt_solver_params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, s,
                                                             CUDA_R_64F, q->gram, s, CUDA_R_64F, q->eig, CUDA_R_64F, &dev, &host, count));
            CHECK(dev <= q->work_bytes && host <= q->hwork_bytes);
            CUSOLVER_CHECK(cusolverDnXsyevBatched(opt_solver(), g_opt_solver_params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, s, CUDA_R_64F,
                                                  q->gram, s, CUDA_R_64F, q->eig, CUDA_R_64F, q->work, q->work_bytes, q->hwork, q->hwork_bytes,
                                                  q->info + first, count));
        } else {
            for (int j = 0; j < count; j++)
                CUSOLVER_CHECK(cusolverDnDsyevd(opt_solver(), CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, s, q->gram + (size_t)j * ss, s,
                                                q->eig + (size_t)j * s, (double*)q->work, (int)(q->work_bytes / sizeof(double)),
                                                q->info + first + j));
        }
        for (int j = 0; j < count; j++) {
            const GaloreMatrix* mt = &q->mat[q->order[first + j]];
            galore_proj_kernel<<<mt->r, GALORE_THREADS>>>(q->gram + (size_t)j * ss, mt->s, mt->r, mt->right, mt->P, mt->pstep, (float)t);
            KERNEL_CHECK();
        }
    }
    return nch > 0 ? q->cstart[nch] : 0;
}

template <typename G>
static void galore_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    GaloreGpu* q = (GaloreGpu*)o->own;
    const OptHyper* h = &o->hyper;
    const int t = a->step;
    if (q->nmat > 0) {
        if (!q->checked) { // galore.c refreshes whenever galore_step is 0 (a fresh start; a resumed run has it)
            for (int i = 0; i < q->nmat; i++) {
                float ps = 0.0f;
                CUDA_CHECK(cudaMemcpy(&ps, q->mat[i].pstep, sizeof(float), cudaMemcpyDeviceToHost));
                q->mat[i].need = ps == 0.0f;
            }
            q->checked = 1;
        }
        cublasHandle_t hb = opt_blas(q->blas_ws, OPT_BLAS_WORKSPACE_BYTES);
        int nref = 0;
        for (int i = 0; i < q->nmat; i++) {
            q->need_now[i] = q->mat[i].need || (t - 1) % h->update_proj_gap == 0;
            nref += q->need_now[i];
        }
        if (nref > 0) {  // the refreshes first, batched; then every matrix's step with its projector
            CHECK(galore_refresh<G>(q, hb, grad, a->clip_scale, t) == nref);
            for (int i = 0; i < q->nmat; i++) q->mat[i].need = 0;
        }
        for (int i = 0; i < q->nmat; i++) {
            GaloreMatrix* mt = &q->mat[i];
            const GaloreScalars k = galore_scalars(a->lr, mt->decay ? h->weight_decay : 0.0, h->beta1, h->beta2, h->eps, h->galore_scale, t);
            const size_t numel = (size_t)mt->rows * mt->cols;
            const size_t low = (size_t)mt->r * (mt->right ? mt->rows : mt->cols);
            galore_grad_kernel<G><<<galore_grid(numel), GALORE_THREADS>>>(grad + mt->param_off, q->Gf, (double*)NULL, numel, a->clip_scale);
            KERNEL_CHECK();
            if (mt->right)  // R (rows, r) = G (rows, cols) @ P^T: P stored (r, cols) = (N, K), used transposed
                gemm_rm(hb, mt->rows, mt->r, mt->cols, q->Gf, mt->cols, 0, mt->P, mt->cols, 1, q->R, mt->r, CUDA_R_32F);
            else            // R (r, cols) = P^T @ G (rows, cols): P stored (rows, r) = (K, M), used transposed
                gemm_rm(hb, mt->r, mt->cols, mt->rows, mt->P, mt->r, 1, q->Gf, mt->cols, 0, q->R, mt->cols, CUDA_R_32F);
            galore_adam_kernel<<<galore_grid(low), GALORE_THREADS>>>(q->R, mt->m, mt->v, low, k);
            KERNEL_CHECK();
            if (mt->right)  // U (rows, cols) = N (rows, r) @ P (r, cols), into Gf (G is no longer needed)
                gemm_rm(hb, mt->rows, mt->cols, mt->r, q->R, mt->r, 0, mt->P, mt->cols, 0, q->Gf, mt->cols, CUDA_R_32F);
            else            // U (rows, cols) = P (rows, r) @ N (r, cols)
                gemm_rm(hb, mt->rows, mt->cols, mt->r, mt->P, mt->r, 0, q->R, mt->cols, 0, q->Gf, mt->cols, CUDA_R_32F);
            galore_apply_kernel<<<galore_grid(numel), GALORE_THREADS>>>(master, pbf16, mt->param_off, q->Gf, numel, k, a->sr, a->seed, t);
            KERNEL_CHECK();
        }
        if (nref > 0) {
            int* info = (int*)xcalloc((size_t)nref, sizeof(int));
            CUDA_CHECK(cudaMemcpy(info, q->info, (size_t)nref * sizeof(int), cudaMemcpyDeviceToHost));
            for (int p = 0; p < nref; p++)
                if (info[p] != 0) {
                    const int i = q->order[p];
                    fprintf(stderr, "internal error at %s:%d: cuSOLVER %s info %d on galore matrix %d (%d, %d) at step %d\n", __FILE__, __LINE__,
                            g_galore_eig_batched ? "XsyevBatched" : "Dsyevd", info[p], i, q->mat[i].rows, q->mat[i].cols, t);
                    exit(1);
                }
            free(info);
        }
    }
    const GaloreOp op = { galore_scalars(a->lr, h->weight_decay, h->beta1, h->beta2, h->eps, 1.0, t),
                          galore_scalars(a->lr, 0.0, h->beta1, h->beta2, h->eps, 1.0, t) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_GALORE_ADAMW_CUDA = GPU_OPTIMIZER(NULL, galore_setup, galore_step_launch);

#endif
