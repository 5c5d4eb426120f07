// optim/muon.cuh: the CUDA side of optim/muon.c (`-opt muon`): the same steps, with muon.h's scalars and
// per-element functions (the ones the CPU loop calls). Included by optim/optim.cuh.
//
// Hidden matrices (muon_uses_muon), one after the other (the workspace holds one matrix at a time):
//   1. muon_prep_kernel, 32x32 tiles of the (rows, cols) parameter: m = lerp(m, g, 1 - beta),
//      u = bf16(Nesterov(g, m)) into X (s, l), transposed through shared memory when rows > cols (so
//      both the reads and the writes are coalesced), and each tile's sum of u^2 in double.
//   2. muon_norm_kernel, one block: the tiles' sums (fixed order) -> bf16(bf16(||X||_F) + 1e-7).
//   3. muon_normalize_kernel: X = bf16(X / that).
//   4. 5 times the quintic, every matmul a cuBLAS bf16 GEMM with fp32 accumulation and one rounding
//      of its output to bf16 (optim/blas.cuh), every elementwise op a muon_axpy_kernel rounding as
//      muon.c does: A = X X^T; cA = bf16(c*A); T = cA A; B = bf16(bf16(b*A) + T); BX = B X;
//      X = bf16(bf16(a*X) + BX).
//   5. muon_apply_kernel, tiles again: update = bf16(X^T or X * scale), p = p*(1 - lr*wd) - lr*update,
//      the fp32 master and the bf16 copy (opt_store).
// That is 4 + 5*6 launches per matrix (d12: 48 matrices, ~1600 launches, all on the default stream,
// no host sync); the cost is the GEMMs, ~1.5 TFLOP per d12 step (5 * (4 s^2 l + 2 s^3) per matrix).
// Everything else (embeddings, vectors): Muon's own AdamW (muon_adamw) through optim.cuh's multi-tensor
// chunk kernel, the Muon matrices skipped. That AdamW is the official adam_update (lerps, bias
// corrections as divisions, eps after the square root), not adam.h's torch.optim.AdamW order, so it
// calls muon.h, as the CPU does.
//
// Agreement with the CPU: the momentum and the whole AdamW part are the same fp32 operations in the
// same order (muon.h's explicit fmaf lerps; g*g and the clip product never contracted), so they agree
// to the last bit (the test allows 1e-6 relative). The sum of squares is double in another order
// (~1e-16 relative), so the bf16 norm is the CPU's. The GEMMs sum their fp32 products in another order
// than cpu/matmul.c (~sqrt(K) * 2^-24 relative), so an output within that distance of a bf16 rounding
// boundary rounds the other way (one bf16 ulp, 2^-8 relative), and the quintic, whose singular values
// oscillate in [0.7, 1.2] instead of converging, spreads that over the 5 iterations to most entries:
// measured on the CPU by reordering its own sums (test/tolerance_muon_ns.c), the result moves by up to
// ~3% in relative Frobenius norm and ~16 bf16 ulps of the largest entry, about what an fp32 iteration
// changes (2-5%); that is the nature of a bf16 Newton-Schulz, not a GPU error. test_gpt2cu's check 3d
// allows twice that per step; 4 or 6 iterations instead of 5 move it by 30-40%.
//
// Workspace (the ledger's MEM_WORKSPACE, allocated once at setup), for the largest Muon matrix:
// 2 bytes * (2*s*l + 3*s*s) (X, BX, A, cA, T) + 8 per 32x32 tile + the cuBLAS workspace
// (OPT_BLAS_WORKSPACE_BYTES). d12, for (768, 3072): 12.98 MB + 32 MiB.
#ifndef OPTIM_MUON_CUH
#define OPTIM_MUON_CUH

#include <limits.h>
#include "optim/muon.h"
#include "optim/blas.cuh"
#include "optim/factored.cuh" // block_sum_double, warp_sum_double

#define MUON_TILE 32
#define MUON_TILE_ROWS 8 // a (32, 8) block walks a 32x32 tile, 4 rows per thread
#define MUON_THREADS 256

typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    int rows, cols;     // the parameter (rows, cols)
    int s, l, tr;       // X is (s, l), s = min(rows, cols); tr: X = u^T (rows > cols)
    int decay;          // weight decay applies
    float* m;           // (rows, cols) momentum_buffer
} MuonMatrix;

typedef struct {
    int nmat;
    MuonMatrix* mat;    // (nmat) the Muon matrices in the trainer's order (same host allocation as this)
    size_t max_tiles;
    bf16d* X;           // (s, l) the matrix being orthogonalized
    bf16d* BX;          // (s, l) B X
    bf16d* A;           // (s, s) X X^T
    bf16d* cA;          // (s, s) c*A, then B
    bf16d* T;           // (s, s) (c*A) A
    double* part;       // (tiles) sums of u^2 per 32x32 tile
    float* denom;       // (1) bf16(bf16(||X||_F) + 1e-7)
    void* blas_ws;      // (OPT_BLAS_WORKSPACE_BYTES)
} MuonGpu;

static unsigned muon_grid(size_t n) {
    const size_t b = (n + MUON_THREADS - 1) / MUON_THREADS;
    return (unsigned)(b < 1 ? 1 : b < (size_t)OPT_MAX_GRID ? b : (size_t)OPT_MAX_GRID);
}

// Sum over a (32, 8) block in a fixed order: each warp (one threadIdx.y) by shuffles, then the 8 warps
// in order; thread (0, 0) gets the sum. red: MUON_TILE_ROWS doubles of shared memory.
__device__ double muon_tile_sum(double v, double* red) {
    v = warp_sum_double(v);
    if (threadIdx.x == 0) red[threadIdx.y] = v;
    __syncthreads();
    double s = 0.0;
    if (threadIdx.x == 0 && threadIdx.y == 0)
        for (int w = 0; w < MUON_TILE_ROWS; w++) s += red[w];
    return s;
}

// 1. Momentum, the Nesterov matrix rounded to bf16 into X (transposed when mt.tr), tile sums of squares.
template <typename G>
__global__ void __launch_bounds__(MUON_TILE * MUON_TILE_ROWS) muon_prep_kernel(const G* grad, MuonMatrix mt, bf16d* X, double* part,
                                                                              MuonScalars k, float clip_scale) {
    __shared__ float tile[MUON_TILE][MUON_TILE + 1];
    __shared__ double red[MUON_TILE_ROWS];
    const int c0 = blockIdx.x * MUON_TILE, r0 = blockIdx.y * MUON_TILE, tx = threadIdx.x;
    double ss = 0.0;
    for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
        const int r = r0 + j, c = c0 + tx;
        float u = 0.0f;
        if (r < mt.rows && c < mt.cols) {
            const size_t i = (size_t)r * mt.cols + c;
            const float g = opt_grad(grad, mt.param_off + i, clip_scale);
            const float mi = muon_momentum(&k, mt.m[i], g);
            mt.m[i] = mi;
            u = muon_bf16(muon_nesterov(&k, g, mi));
            ss += (double)u * (double)u;
            if (!mt.tr) X[i] = stf<bf16d>(u);
        }
        tile[j][tx] = u; // tile[r - r0][c - c0]
    }
    if (mt.tr) { // (uniform over the block) X (cols, rows): its row c0 + j, column r0 + tx is u(r0 + tx, c0 + j)
        __syncthreads();
        for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
            const int c = c0 + j, r = r0 + tx;
            if (c < mt.cols && r < mt.rows) X[(size_t)c * mt.rows + r] = stf<bf16d>(tile[tx][j]);
        }
    }
    const double s = muon_tile_sum(ss, red);
    if (threadIdx.x == 0 && threadIdx.y == 0) part[blockIdx.y * gridDim.x + blockIdx.x] = s;
}

// 2. The divisor of the normalization, from the tiles' sums (one block, fixed order).
__global__ void __launch_bounds__(MUON_THREADS) muon_norm_kernel(const double* part, int nparts, float* denom) {
    __shared__ double red[32];
    double s = 0.0;
    for (int p = threadIdx.x; p < nparts; p += blockDim.x) s += part[p];
    s = block_sum_double(s, red);
    if (threadIdx.x == 0) {
        const float norm = muon_bf16((float)sqrt(s));
        *denom = muon_bf16(norm + MUON_NS_EPS);
    }
}

// 3. X = bf16(X / denom).
__global__ void __launch_bounds__(MUON_THREADS) muon_normalize_kernel(bf16d* X, size_t n, const float* denom) {
    const float d = *denom;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        X[i] = stf<bf16d>(ldf(X[i]) / d);
}

// 4. The quintic's elementwise steps: out = bf16(bf16(coef * x) + y), or bf16(coef * x) without y.
// out may be x (each element is read and written by one thread).
__global__ void __launch_bounds__(MUON_THREADS) muon_axpy_kernel(bf16d* out, const bf16d* x, const bf16d* y, float coef, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float xi = ldf(x[i]);
        out[i] = stf<bf16d>(y ? muon_ns_axpy(coef, xi, ldf(y[i])) : muon_bf16(coef * xi));
    }
}

// 5. The update applied: tiles of the (rows, cols) parameter, X read through shared memory when mt.tr.
__global__ void __launch_bounds__(MUON_TILE * MUON_TILE_ROWS) muon_apply_kernel(float* master, bf16d* pbf16, MuonMatrix mt, const bf16d* X,
                                                                               MuonScalars k, int sr, uint64_t seed, int step) {
    __shared__ float tile[MUON_TILE][MUON_TILE + 1];
    const int c0 = blockIdx.x * MUON_TILE, r0 = blockIdx.y * MUON_TILE, tx = threadIdx.x;
    if (mt.tr) { // tile[c - c0][r - r0] = X[c][r], X (cols, rows), read along its rows
        for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
            const int c = c0 + j, r = r0 + tx;
            tile[j][tx] = c < mt.cols && r < mt.rows ? ldf(X[(size_t)c * mt.rows + r]) : 0.0f;
        }
        __syncthreads();
    }
    const uint64_t base = sr_stream(seed, step, mt.param_off);
    for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
        const int r = r0 + j, c = c0 + tx;
        if (r >= mt.rows || c >= mt.cols) continue;
        const size_t i = (size_t)r * mt.cols + c, gi = mt.param_off + i;
        const float x = mt.tr ? tile[tx][j] : ldf(X[i]);
        const float update = muon_bf16(x * k.scale);
        opt_store(master, pbf16, gi, muon_param(&k, master[gi], update), sr, base, i);
    }
}

// The AdamW part, per element (optim.cuh's chunk kernel): kd for the tensors that decay, kn for the rest.
struct MuonAdamwOp {
    MuonScalars kd, kn;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        float p = th;
        muon_adamw(t.decay ? &kd : &kn, &p, (float*)t.sp[0] + li, (float*)t.sp[1] + li, g); // exp_avg, exp_avg_sq
        return p;
    }
};

// muon.c's layout: momentum_buffer for the Muon matrices, exp_avg and exp_avg_sq for the rest.
static void muon_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    int nmat = 0;
    int* skip = matrix_opt_split(o, shapes, n, muon_uses_muon, 1, &nmat);
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, skip, led); // chunks: the AdamW tensors
    MuonGpu* q = (MuonGpu*)xcalloc(1, sizeof(MuonGpu) + (size_t)nmat * sizeof(MuonMatrix));
    q->mat = (MuonMatrix*)(q + 1);
    size_t max_sl = 0, max_ss = 0;
    for (int i = 0; i < n; i++) {
        if (!skip[i]) continue;
        CHECK(shapes[i].rows <= INT_MAX && shapes[i].cols <= INT_MAX);
        MuonMatrix* mt = &q->mat[q->nmat++];
        mt->param_off = param_offsets[i];
        mt->rows = (int)shapes[i].rows;
        mt->cols = (int)shapes[i].cols;
        mt->tr = mt->rows > mt->cols;
        mt->s = mt->tr ? mt->cols : mt->rows;
        mt->l = mt->tr ? mt->rows : mt->cols;
        mt->decay = shapes[i].decay;
        mt->m = (float*)ht[i].sp[0];
        const size_t sl = (size_t)mt->s * mt->l, ss = (size_t)mt->s * mt->s;
        const size_t tiles = (size_t)ceil_div_u(mt->rows, MUON_TILE) * ceil_div_u(mt->cols, MUON_TILE);
        if (sl > max_sl) max_sl = sl;
        if (ss > max_ss) max_ss = ss;
        if (tiles > q->max_tiles) q->max_tiles = tiles;
    }
    if (q->nmat > 0) {
        size_t total = 0;
        const size_t oX = ws_carve(&total, max_sl * sizeof(bf16d)), oBX = ws_carve(&total, max_sl * sizeof(bf16d));
        const size_t oA = ws_carve(&total, max_ss * sizeof(bf16d)), ocA = ws_carve(&total, max_ss * sizeof(bf16d));
        const size_t oT = ws_carve(&total, max_ss * sizeof(bf16d)), opart = ws_carve(&total, q->max_tiles * sizeof(double));
        const size_t oden = ws_carve(&total, sizeof(float)), oblas = ws_carve(&total, OPT_BLAS_WORKSPACE_BYTES);
        char* ws = (char*)dev_alloc(led, MEM_WORKSPACE, "muon workspace (+cuBLAS)", total);
        if (ws) {
            q->X = (bf16d*)(ws + oX);
            q->BX = (bf16d*)(ws + oBX);
            q->A = (bf16d*)(ws + oA);
            q->cA = (bf16d*)(ws + ocA);
            q->T = (bf16d*)(ws + oT);
            q->part = (double*)(ws + opart);
            q->denom = (float*)(ws + oden);
            q->blas_ws = ws + oblas;
        }
    }
    free(skip);
    free(ht);
    o->own = q;
}

// Newton-Schulz on q->X (s, l), s <= l, in place (muon.c's muon_newton_schulz after the normalization).
static void muon_newton_schulz_gpu(const MuonGpu* q, cublasHandle_t hb, int s, int l) {
    const size_t ss = (size_t)s * s, sl = (size_t)s * l;
    for (int it = 0; it < MUON_NS_STEPS; it++) {
        // A (s, s) = X (s, l) @ X^T: the second operand X stored (s, l) = (N, K), used transposed
        gemm_rm(hb, s, s, l, q->X, l, 0, q->X, l, 1, q->A, s, CUDA_R_16BF);
        muon_axpy_kernel<<<muon_grid(ss), MUON_THREADS>>>(q->cA, q->A, (const bf16d*)NULL, MUON_NS_C, ss);  // c*A
        KERNEL_CHECK();
        // T (s, s) = cA (s, s) @ A (s, s)
        gemm_rm(hb, s, s, s, q->cA, s, 0, q->A, s, 0, q->T, s, CUDA_R_16BF);
        muon_axpy_kernel<<<muon_grid(ss), MUON_THREADS>>>(q->cA, q->A, q->T, MUON_NS_B, ss);  // B = b*A + T, into cA
        KERNEL_CHECK();
        // BX (s, l) = B (s, s) @ X (s, l)
        gemm_rm(hb, s, l, s, q->cA, s, 0, q->X, l, 0, q->BX, l, CUDA_R_16BF);
        muon_axpy_kernel<<<muon_grid(sl), MUON_THREADS>>>(q->X, q->X, q->BX, MUON_NS_A, sl);  // X = a*X + B X
        KERNEL_CHECK();
    }
}

template <typename G>
static void muon_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const MuonGpu* q = (const MuonGpu*)o->own;
    const OptHyper* h = &o->hyper;
    if (q->nmat > 0) {
        cublasHandle_t hb = opt_blas(q->blas_ws, OPT_BLAS_WORKSPACE_BYTES);
        const dim3 block(MUON_TILE, MUON_TILE_ROWS);
        for (int i = 0; i < q->nmat; i++) {
            const MuonMatrix mt = q->mat[i];
            const MuonScalars k = muon_scalars(h, (size_t)mt.rows, (size_t)mt.cols, mt.decay ? h->weight_decay : 0.0, a->lr,
                                               a->lr_scale, a->step);
            const dim3 tiles(ceil_div_u(mt.cols, MUON_TILE), ceil_div_u(mt.rows, MUON_TILE));
            const size_t sl = (size_t)mt.s * mt.l;
            muon_prep_kernel<G><<<tiles, block>>>(grad, mt, q->X, q->part, k, a->clip_scale);
            KERNEL_CHECK();
            muon_norm_kernel<<<1, MUON_THREADS>>>(q->part, (int)(tiles.x * tiles.y), q->denom);
            KERNEL_CHECK();
            muon_normalize_kernel<<<muon_grid(sl), MUON_THREADS>>>(q->X, sl, q->denom);
            KERNEL_CHECK();
            muon_newton_schulz_gpu(q, hb, mt.s, mt.l);
            muon_apply_kernel<<<tiles, block>>>(master, pbf16, mt, q->X, k, a->sr, a->seed, a->step);
            KERNEL_CHECK();
        }
    }
    // the AdamW part (only its fields of the scalars are read; the shape does not enter them)
    const MuonAdamwOp op = { muon_scalars(h, 1, 1, h->weight_decay, a->lr, a->lr_scale, a->step),
                             muon_scalars(h, 1, 1, 0.0, a->lr, a->lr_scale, a->step) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_MUON_CUDA = GPU_OPTIMIZER(NULL, muon_setup, muon_step_launch);

#endif
