// optim/muon.cuh: the CUDA side of optim/muon.c (`-opt muon`): the same steps, with muon.h's scalars and
// per-element functions (the ones the CPU loop calls). Included by optim/optim.cuh.
//
// Hidden matrices (muon_uses_muon), a batch of same-shaped matrices at a time (optim/muon_plan.h: the
// matrices grouped by (s, l) after the transpose rule, each group cut into batches that fit
// MUON_BATCH_BYTES; d12: 4 batches of 12). Per batch, every launch covers all of its matrices:
//   1. muon_prep_kernel, grid (tiles, count), a 32x32 tile of one matrix's (rows, cols) parameter per
//      block: m = lerp(m, g, 1 - beta), u = bf16(Nesterov(g, m)) into that matrix's X (s, l), transposed
//      through shared memory when rows > cols (so both the reads and the writes are coalesced), and each
//      tile's sum of u^2 in double.
//   2. muon_norm_kernel, one block per matrix: its tiles' sums (fixed order) -> bf16(bf16(||X||_F) + 1e-7).
//   3. muon_normalize_kernel, grid (blocks, count): X = bf16(X / that matrix's divisor).
//   4. 5 times the quintic (muon_plan.h's muon_ns_op): 3 strided-batched cuBLAS bf16 GEMMs with fp32
//      accumulation and one rounding of each output to bf16 (optim/blas.cuh), and 3 muon_axpy_kernel
//      passes over the batch's contiguous buffers, rounding as muon.c does: A = X X^T; cA = bf16(c*A);
//      T = cA A; B = bf16(bf16(b*A) + T); BX = B X; X = bf16(bf16(a*X) + BX).
//   5. muon_apply_kernel, tiles again: update = bf16(X^T or X * scale), p = p*(1 - lr*wd) - lr*update,
//      the fp32 master and the bf16 copy (opt_store); each matrix's own decay and shape scale.
// That is 4 + 5*6 = 34 launches per batch (d12: 4 batches, 136 launches per step, all on the default
// stream, no host sync), where the matrix-at-a-time version took 34 per matrix (48 matrices: 1632). The
// per-matrix arithmetic is unchanged: the same GEMMs (a strided-batched GEMM computes each product as
// the single one does: fp32 accumulation, one rounding), the same roundings, the same order of the
// elementwise operations; only the batching changed, so test_gpt2cu's tolerances (below) still hold.
// test/test_muon_plan.c runs this plan on the CPU (its batches, buffer strides, transposes and index
// functions, muon.c's matmul standing in for cuBLAS) and gets muon.c's step bit for bit.
// Cost at d12: 5 (4 s^2 l + 2 s^3) FLOPs per matrix, 1.52 TFLOP per step: ~2.2-2.5 ms at 600-700 TFLOP/s
// of dense bf16 on an H200 (a batch's GEMM is 12 products of 0.9-3.6 GFLOP each, enough to fill it).
// The elementwise passes, 2 bytes per element read or written: per iteration the X update reads X, BX
// and writes X (6 B x 85 M elements of X over the 48 matrices) and the two s^2 passes move 10 B x 28 M,
// 0.8 GB, so 4 GB for the 5 iterations; the normalization 0.34 GB; prep and apply 12 B per parameter
// each (gradient, momentum or master read and written, X, the bf16 copy), 2 GB: ~6.4 GB, ~1.5 ms at
// ~4.3 TB/s (a batch's 113 MB of X and BX does not stay in the 50 MB L2). Expected ~3.5-4 ms per step on
// an H200 (measured 13.3 ms matrix at a time, launch-bound). The 3 ms goal needs the X update fused into
// the B X GEMM's epilogue with muon.c's two roundings (bf16 of the product, then bf16(bf16(a X) + it)):
// not expressible as a cuBLAS epilogue (alpha/beta round once), a CUTLASS epilogue could; it saves ~0.4 ms.
// Smaller batches keep the passes in L2 but add launches: bench_optim times caps of 40, 80, 320 MiB.
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
// Workspace (the ledger's MEM_WORKSPACE, allocated once at setup), for the largest batch (muon_plan.h):
// X, BX (count s l) and A, cA, T (count s^2) in bf16, 8 bytes per tile, 4 per matrix, then the cuBLAS
// workspace (OPT_BLAS_WORKSPACE_BYTES). d12: 155.9 MB + 32 MiB (a batch of 12 (768, 3072) matrices),
// where the one-matrix workspace was 12.98 MB + 32 MiB; plus the matrix table (MEM_OTHER, 48 entries).
#ifndef OPTIM_MUON_CUH
#define OPTIM_MUON_CUH

#include <limits.h>
#include "optim/muon.h"
#include "optim/muon_plan.h"
#include "optim/blas.cuh"
#include "optim/factored.cuh" // block_sum_double, warp_sum_double

#define MUON_TILE_ROWS 8 // a (32, 8) block walks a 32x32 tile, 4 rows per thread
#define MUON_THREADS 256

// The cap on a batch's Newton-Schulz buffers, read at setup: MUON_BATCH_BYTES (160 MiB: d12's batches of
// 12 matrices). Smaller batches keep the elementwise passes in L2 (50 MB on an H100/H200) at the price of
// more launches; bench_optim times a few caps so a GPU run can choose.
static size_t g_muon_batch_bytes = MUON_BATCH_BYTES;

typedef struct {
    MuonPlan plan;      // host: the batches and the matrix table (its m pointers filled in)
    MuonMatrix* d_mat;  // (plan.nmat) the same table on the device, in batch order
    bf16d* X;           // (count, s, l) the batch being orthogonalized
    bf16d* BX;          // (count, s, l) B X
    bf16d* A;           // (count, s, s) X X^T
    bf16d* cA;          // (count, s, s) c*A, then B
    bf16d* T;           // (count, s, s) (c*A) A
    double* part;       // (count, tiles) sums of u^2 per 32x32 tile
    float* denom;       // (count) bf16(bf16(||X||_F) + 1e-7)
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

// 1. Block (t, j): tile t of the batch's matrix j (tab[j]): the momentum, the Nesterov matrix rounded to
// bf16 into X_j = Xb + j sl (transposed when tr), the tile's sum of squares into part[j tiles + t].
template <typename G>
__global__ void __launch_bounds__(MUON_TILE * MUON_TILE_ROWS) muon_prep_kernel(const G* grad, const MuonMatrix* tab, bf16d* Xb, double* part,
                                                                              size_t sl, size_t tiles, MuonScalars k, float clip_scale) {
    __shared__ float tile[MUON_TILE][MUON_TILE + 1];
    __shared__ double red[MUON_TILE_ROWS];
    const MuonMatrix mt = tab[blockIdx.y];
    bf16d* X = Xb + (size_t)blockIdx.y * sl;
    int r0, c0;
    muon_tile_origin(&mt, blockIdx.x, &r0, &c0);
    const int tx = threadIdx.x;
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
            if (!mt.tr) X[muon_x_index(&mt, r, c)] = stf<bf16d>(u);
        }
        tile[j][tx] = u; // tile[r - r0][c - c0]
    }
    if (mt.tr) { // (uniform over the block) X (cols, rows): its row c0 + j, column r0 + tx is u(r0 + tx, c0 + j)
        __syncthreads();
        for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
            const int c = c0 + j, r = r0 + tx;
            if (c < mt.cols && r < mt.rows) X[muon_x_index(&mt, r, c)] = stf<bf16d>(tile[tx][j]);
        }
    }
    const double s = muon_tile_sum(ss, red);
    if (threadIdx.x == 0 && threadIdx.y == 0) part[(size_t)blockIdx.y * tiles + blockIdx.x] = s;
}

// 2. Block j: the divisor of matrix j's normalization, from its tiles' sums (fixed order).
__global__ void __launch_bounds__(MUON_THREADS) muon_norm_kernel(const double* part, size_t tiles, float* denom) {
    __shared__ double red[32];
    const double* pj = part + (size_t)blockIdx.x * tiles;
    double s = 0.0;
    for (size_t p = threadIdx.x; p < tiles; p += blockDim.x) s += pj[p];
    s = block_sum_double(s, red);
    if (threadIdx.x == 0) {
        const float norm = muon_bf16((float)sqrt(s));
        denom[blockIdx.x] = muon_bf16(norm + MUON_NS_EPS);
    }
}

// 3. Blocks (*, j): X_j = bf16(X_j / denom[j]), X_j the sl elements at Xb + j sl.
__global__ void __launch_bounds__(MUON_THREADS) muon_normalize_kernel(bf16d* Xb, size_t sl, const float* denom) {
    const float d = denom[blockIdx.y];
    bf16d* X = Xb + (size_t)blockIdx.y * sl;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < sl; i += (size_t)gridDim.x * blockDim.x)
        X[i] = stf<bf16d>(ldf(X[i]) / d);
}

// 4. The quintic's elementwise steps over a whole batch: out = bf16(bf16(coef * x) + y), or bf16(coef * x)
// without y. out may be x (each element is read and written by one thread).
__global__ void __launch_bounds__(MUON_THREADS) muon_axpy_kernel(bf16d* out, const bf16d* x, const bf16d* y, float coef, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float xi = ldf(x[i]);
        out[i] = stf<bf16d>(y ? muon_ns_axpy(coef, xi, ldf(y[i])) : muon_bf16(coef * xi));
    }
}

// 5. Block (t, j): the update of tile t of matrix j applied, X_j read through shared memory when tr. kd:
// the step's scalars for the matrices that decay, kn for the others; the shape scale is the matrix's own.
__global__ void __launch_bounds__(MUON_TILE * MUON_TILE_ROWS) muon_apply_kernel(float* master, bf16d* pbf16, const MuonMatrix* tab,
                                                                               const bf16d* Xb, size_t sl, MuonScalars kd, MuonScalars kn,
                                                                               int sr, uint64_t seed, int step) {
    __shared__ float tile[MUON_TILE][MUON_TILE + 1];
    const MuonMatrix mt = tab[blockIdx.y];
    const bf16d* X = Xb + (size_t)blockIdx.y * sl;
    MuonScalars k = mt.decay ? kd : kn;
    k.scale = mt.scale;
    int r0, c0;
    muon_tile_origin(&mt, blockIdx.x, &r0, &c0);
    const int tx = threadIdx.x;
    if (mt.tr) { // tile[c - c0][r - r0] = X[c][r], X (cols, rows), read along its rows
        for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
            const int c = c0 + j, r = r0 + tx;
            tile[j][tx] = c < mt.cols && r < mt.rows ? ldf(X[muon_x_index(&mt, r, c)]) : 0.0f;
        }
        __syncthreads();
    }
    const uint64_t base = sr_stream(seed, step, mt.param_off);
    for (int j = threadIdx.y; j < MUON_TILE; j += MUON_TILE_ROWS) {
        const int r = r0 + j, c = c0 + tx;
        if (r >= mt.rows || c >= mt.cols) continue;
        const size_t i = (size_t)r * mt.cols + c, gi = mt.param_off + i;
        const float x = mt.tr ? tile[tx][j] : ldf(X[muon_x_index(&mt, r, c)]);
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
    const size_t cnt = (size_t)(nmat > 0 ? nmat : 1);
    size_t* rows = (size_t*)xcalloc(cnt, sizeof(size_t));
    size_t* cols = (size_t*)xcalloc(cnt, sizeof(size_t));
    size_t* offs = (size_t*)xcalloc(cnt, sizeof(size_t));
    int* decay = (int*)xcalloc(cnt, sizeof(int));
    int* tensor = (int*)xcalloc(cnt, sizeof(int));
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!skip[i]) continue;
        CHECK(shapes[i].rows <= INT_MAX && shapes[i].cols <= INT_MAX);
        rows[k] = shapes[i].rows;
        cols[k] = shapes[i].cols;
        offs[k] = param_offsets[i];
        decay[k] = shapes[i].decay;
        tensor[k++] = i;
    }
    MuonPlan plan;
    muon_plan_build(&plan, rows, cols, decay, offs, nmat, g_muon_batch_bytes, OPT_BLAS_WORKSPACE_BYTES);
    // the tables move into q's own allocation (the caller frees o->own alone)
    MuonGpu* q = (MuonGpu*)xcalloc(1, sizeof(MuonGpu) + cnt * (sizeof(MuonMatrix) + sizeof(MuonBatch)));
    q->plan = plan;
    q->plan.mat = (MuonMatrix*)(q + 1);
    q->plan.batch = (MuonBatch*)(q->plan.mat + cnt);
    memcpy(q->plan.mat, plan.mat, (size_t)plan.nmat * sizeof(MuonMatrix));
    memcpy(q->plan.batch, plan.batch, (size_t)plan.nbatch * sizeof(MuonBatch));
    muon_plan_free(&plan);
    for (int j = 0; j < q->plan.nmat; j++) q->plan.mat[j].m = (float*)ht[tensor[q->plan.mat[j].index]].sp[0];
    if (nmat > 0) {
        const MuonPlan* p = &q->plan;
        char* ws = (char*)dev_alloc(led, MEM_WORKSPACE, "muon workspace (+cuBLAS)", p->total);
        if (ws) {
            q->X = (bf16d*)(ws + p->off_X);
            q->BX = (bf16d*)(ws + p->off_BX);
            q->A = (bf16d*)(ws + p->off_A);
            q->cA = (bf16d*)(ws + p->off_cA);
            q->T = (bf16d*)(ws + p->off_T);
            q->part = (double*)(ws + p->off_part);
            q->denom = (float*)(ws + p->off_denom);
            q->blas_ws = ws + p->off_blas;
        }
        const size_t tb = (size_t)nmat * sizeof(MuonMatrix);
        q->d_mat = (MuonMatrix*)dev_alloc(led, MEM_OTHER, "muon matrix table", tb);
        if (!led->dry) CUDA_CHECK(cudaMemcpy(q->d_mat, p->mat, tb, cudaMemcpyHostToDevice));
    }
    free(rows);
    free(cols);
    free(offs);
    free(decay);
    free(tensor);
    free(skip);
    free(ht);
    o->own = q;
}

static bf16d* muon_buf(const MuonGpu* q, int b) {
    switch (b) {
    case MUON_BUF_X: return q->X;
    case MUON_BUF_BX: return q->BX;
    case MUON_BUF_A: return q->A;
    case MUON_BUF_CA: return q->cA;
    case MUON_BUF_T: return q->T;
    default: return NULL;
    }
}

// Newton-Schulz on the batch's X (count, s, l), s <= l, in place (muon.c's muon_newton_schulz after the
// normalization), each operation one launch over the whole batch.
static void muon_newton_schulz_gpu(const MuonGpu* q, cublasHandle_t hb, const MuonBatch* bt) {
    for (int it = 0; it < MUON_NS_STEPS; it++)
        for (int op = 0; op < MUON_NS_OPS; op++) {
            const MuonOp o = muon_ns_op(op, bt->s, bt->l);
            if (o.gemm) {
                gemm_rm_batched(hb, o.M, o.N, o.K, muon_buf(q, o.a), o.lda, o.ta, o.sa, muon_buf(q, o.b), o.ldb, o.tb, o.sb, muon_buf(q, o.c),
                                o.ldc, o.sc, bt->count, CUDA_R_16BF);
            } else {
                const size_t nn = o.n_per * (size_t)bt->count;
                muon_axpy_kernel<<<muon_grid(nn), MUON_THREADS>>>(muon_buf(q, o.out), muon_buf(q, o.x), muon_buf(q, o.y), o.coef, nn);
                KERNEL_CHECK();
            }
        }
}

template <typename G>
static void muon_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const MuonGpu* q = (const MuonGpu*)o->own;
    const OptHyper* h = &o->hyper;
    if (q->plan.nmat > 0) {
        cublasHandle_t hb = opt_blas(q->blas_ws, OPT_BLAS_WORKSPACE_BYTES);
        const dim3 block(MUON_TILE, MUON_TILE_ROWS);
        // the step's scalars for the matrices that decay and for the others (the shape scale is per matrix)
        const MuonScalars kd = muon_scalars(h, 1, 1, h->weight_decay, a->lr, a->lr_scale, a->step);
        const MuonScalars kn = muon_scalars(h, 1, 1, 0.0, a->lr, a->lr_scale, a->step);
        for (int b = 0; b < q->plan.nbatch; b++) {
            const MuonBatch* bt = &q->plan.batch[b];
            const MuonMatrix* tab = q->d_mat + bt->first;
            const size_t sl = (size_t)bt->s * (size_t)bt->l;
            CHECK(bt->tiles <= (size_t)INT_MAX && bt->count <= 65535);
            const dim3 tiles((unsigned)bt->tiles, (unsigned)bt->count);
            muon_prep_kernel<G><<<tiles, block>>>(grad, tab, q->X, q->part, sl, bt->tiles, kd, a->clip_scale);
            KERNEL_CHECK();
            muon_norm_kernel<<<bt->count, MUON_THREADS>>>(q->part, bt->tiles, q->denom);
            KERNEL_CHECK();
            const unsigned per = muon_grid(sl) / (unsigned)bt->count;
            muon_normalize_kernel<<<dim3(per < 1 ? 1 : per, (unsigned)bt->count), MUON_THREADS>>>(q->X, sl, q->denom);
            KERNEL_CHECK();
            muon_newton_schulz_gpu(q, hb, bt);
            muon_apply_kernel<<<tiles, block>>>(master, pbf16, tab, q->X, sl, kd, kn, a->sr, a->seed, a->step);
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
