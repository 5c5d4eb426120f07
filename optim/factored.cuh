// optim/factored.cuh: the CUDA side of optim/adafactor.c (`-opt adafactor`) and optim/came.c
// (`-opt came`): the factored second moment of optim/factored.h in a few fused launches over all
// tensors (never one launch per tensor per reduction), deterministic (fixed-order double reductions,
// no float atomics). The scalars and the per-element math are adafactor.h's, came.h's and factored.h's,
// the functions the CPU loops call. Included by optim/optim.cuh.
//
// Work table: every tensor is cut into items; a matrix (rows, cols) into runs of FAC_ITEM_ROWS whole
// rows, a vector into runs of FAC_ITEM_ELEMS elements. One thread block per item (grid-stride).
// Per step (adafactor; came adds the passes marked [came]):
//   1. fac_stats_kernel, items: sum of theta^2 per item (adafactor's RMS(theta)); matrices: the row sums
//      of u = g^2 + eps1 (a warp per row, lanes over the columns, then the warp's tree; fixed) and the
//      item's column partials (a thread per column, rows in order); vectors: v = b*v + (1-b)*u and the
//      item's part of sum (rsqrt(v)*g)^2, all in double.
//   2. fac_rowsum_kernel, a block per matrix: the r EMA from the row sums, sum(r) by a block reduction in
//      double, the column sums (the column partials added in item order) into the tensor's `sums`.
//      [reduce: column sums and sum(r)]
//   3. fac_factors_kernel, a block per matrix: the c EMA from the column sums, mean(r), then the factors
//      rf = 1/sqrt(r/mean(r)), cf = 1/sqrt(c) into scratch (O(rows + cols)).
//   4. fac_usq_kernel, matrix items: the item's part of sum (rf[i]*cf[j]*g)^2 in double.
//   5. fac_tsums_kernel, a thread per tensor: the item parts of sum U^2 and sum theta^2 added in item
//      order. [reduce: both] fac_scalars_kernel, a thread per tensor: the clip divisor
//      max(1, RMS(U)/clip_threshold) and adafactor's lr_t = rho * max(eps2, RMS(theta)).
//   6. adafactor: fac_update_kernel, items: U = pre*g/clip*lr_t, optional momentum, weight decay, step.
//      came: fac_came_kernel, items: vectors take their whole step; matrices update m and reduce the
//      residual (U - m)^2 + eps2 like pass 1 [came]; passes 2 and 3 again on (res_row, res_col) with
//      beta3 [came, reduce]; fac_came_apply_kernel: theta -= pre_res*m*lr [came].
// The CPU sums the same values in double in another fixed order (its row chunks differ): the sums
// differ by ~1e-16 relative, so the fp32 statistics almost always round to the same float.
//
// -zero 1 row shards (trainer/zero.h, OPT_SHARD_ROWS): a tensor here may be rows [r0, r1) of a matrix
// whose other rows other ranks hold (its param_off points at row r0, its row state is its rows', its
// column state the whole matrix's). Every statistic over all rows is then this rank's partial sum,
// completed at the points marked [reduce] above: the tensor's `sums` (column sums and sum(r); then
// sum U^2 and sum theta^2) are copied to the host and summed over the sharing ranks by the matrix's
// OptReduce (optim/optim.h; the trainer's is trainer/zero.c's, MPI in rank order, the CPU trainer's own
// code), then copied back; means divide by the whole matrix's rows (mrows). A tensor whole here has no
// OptReduce and no copy: one rank runs exactly the kernels it always ran, with the sums in the same
// order. Shared or not, the same kernels run; only the partials' split differs (~1e-16 in each double
// sum, as on the CPU).
// Scratch (device, MEM_OTHER): row sums and column partials in double (8*(rows + cols*ceil(rows/64))
// bytes per matrix: ~1/8 byte per parameter), rf/cf floats, the sums (cols + 3 doubles per matrix, 3 per
// vector), two doubles per item, two floats per tensor.
#ifndef OPTIM_FACTORED_CUH
#define OPTIM_FACTORED_CUH

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "optim/adafactor.h"
#include "optim/came.h"

#define FAC_ITEM_ROWS 64      // matrix rows per work item
#define FAC_ITEM_ELEMS 8192   // vector elements per work item
#define FAC_THREADS 256

typedef struct {
    size_t param_off;   // element offset into the flat parameter / master / bf16 copy buffers
    size_t grad_off;    // element offset into the gradient buffer: param_off, or (adalomo, optim/adalomo.cuh)
                        // the tensor's place in its unit's gradient scratch
    size_t rows, cols;  // a vector is (1, numel); a row shard: its own rows
    size_t numel;
    size_t mrows;       // rows of the whole matrix (-zero 1 row shards: all ranks' rows; else rows)
    int factored, decay;
    int item0, nitems;  // its items in the work table
    float* v_row;       // (rows), or v (numel) for a vector
    float* v_col;       // (cols), NULL for a vector
    float* m;           // (numel) exp_avg, NULL for adafactor without -beta1
    float* res_row;     // (rows) came, matrices only
    float* res_col;     // (cols)
    double* row_sum;    // (rows) scratch
    double* col_part;   // (nitems, cols) scratch
    float* rf;          // (rows) scratch: row factors of the current reconstruction
    float* cf;          // (cols) scratch: column factors
    double* sums;       // (ncs + 3) scratch, ncs = cols for a matrix, 0 for a vector: the column sums
                        // [0, ncs), sum of the row statistic [ncs], sum theta^2 [ncs+1], sum U^2 [ncs+2]
    size_t ncs;         // cols, or 0 for a vector
} FacTensor;

typedef struct {
    int tensor;
    size_t lo, hi;      // rows [lo, hi) of a matrix, elements [lo, hi) of a vector
} FacItem;

typedef struct {
    int came;           // 0: adafactor, 1: came
    AdafactorScalars af;// adafactor's scalars (adafactor.h)
    CameScalars cm;     // came's scalars (came.h)
    float eps1;         // added to g^2 (either's)
    float b2, omb2;     // the second moment's EMA (adafactor: beta2_t; came: beta2)
    float clip_scale;   // the trainer's gradient clipping factor
    int sr;             // stochastic rounding of the bf16 copy
    uint64_t seed;
    int step;
} FacArgs;

typedef struct {
    int on;
    int ntensors, nitems, nfac;     // nfac: factored tensors
    FacTensor* d_tensors;           // (ntensors)
    FacItem* d_items;               // (nitems)
    int* d_fac;                     // (nfac) the factored tensors' indices
    double* part_theta;             // (nitems) sums of theta^2
    double* part_u;                 // (nitems) sums of U^2
    float* clip_div;                // (ntensors)
    float* lr_t;                    // (ntensors)
    FacTensor* h_tensors;           // (ntensors) host copy of the tensor table (device pointers)
    const OptReduce** reduce;       // (ntensors) host: the OptReduce of a row shard, NULL where whole here
    int nshared;                    // tensors with an OptReduce
    double* h_sums;                 // host staging of one tensor's sums for its OptReduce
} FacGpu;

// Where fac_setup's device buffers come from: a NULL pool, one dev_alloc per buffer (adafactor, came); a
// pool, carved from one allocation (adalomo: one FacGpu per unit, so neither the ledger's lines nor the
// allocations grow with the layers). base NULL: only adds up the bytes (with a dry ledger: a sizing pass).
typedef struct { char* base; size_t used; } FacPool;
static void* fac_alloc(FacPool* pool, Ledger* led, const char* label, size_t bytes) {
    if (!pool) return dev_alloc(led, MEM_OTHER, label, bytes);
    const size_t at = pool->used;
    pool->used += (bytes + 255) & ~(size_t)255;
    return pool->base && bytes ? pool->base + at : NULL;
}

// Builds the tables from the shared state layout; buf: the device buffers of the layout; reduce: NULL, or
// per tensor the OptReduce of a row shard (NULL where the tensor is whole here); grad_offsets: NULL (the
// gradient is indexed as the parameters), or per tensor its offset in the gradient buffer (adalomo);
// pool: NULL, or where the device buffers come from (FacPool).
static void fac_setup(FacGpu* f, int came, const StateLayout* sl, void* const* buf, const ParamShape* shapes,
                      const size_t* param_offsets, const size_t* grad_offsets, int n, const OptReduce* const* reduce, Ledger* led,
                      FacPool* pool = NULL) {
    memset(f, 0, sizeof(*f));
    f->on = came ? 2 : 1; // 2: came
    FacTensor* ht = (FacTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(FacTensor));
    size_t nrow = 0, ncol = 0, npart = 0, nsums = 0, max_sums = 0;
    int nitems = 0, nfac = 0;
    f->reduce = (const OptReduce**)xcalloc((size_t)(n > 0 ? n : 1), sizeof(OptReduce*));
    for (int i = 0; i < n; i++) {
        FacTensor* t = &ht[i];
        const TensorStates* ts = &sl->tensors[i];
        char* sp[OPT_MAX_STATES] = { NULL };
        for (int s = 0; s < ts->nstate; s++) {
            CHECK(ts->dtype[s] == DT_F32);
            sp[s] = buf[ts->buf[s]] ? (char*)buf[ts->buf[s]] + ts->offset[s] : NULL;
        }
        t->param_off = param_offsets[i];
        t->grad_off = grad_offsets ? grad_offsets[i] : param_offsets[i];
        t->numel = shapes[i].numel;
        t->factored = shapes[i].ndim >= 2;   // fac_is_factored()
        t->decay = shapes[i].decay;
        t->rows = t->factored ? shapes[i].rows : 1;
        t->cols = t->factored ? shapes[i].cols : shapes[i].numel;
        // a row shard's statistics span the whole matrix (its OptReduce knows its rows); vectors are whole
        const OptReduce* red = reduce ? reduce[i] : NULL;
        CHECK(!red || (t->factored && red->rows >= t->rows));
        f->reduce[i] = red;
        f->nshared += red != NULL;
        t->mrows = red ? red->rows : t->rows;
        t->ncs = t->factored ? t->cols : 0;
        t->sums = (double*)(uintptr_t)nsums; // an offset for now
        nsums += t->ncs + 3;
        if (t->ncs + 3 > max_sums) max_sums = t->ncs + 3;
        // the layouts of adafactor.c and came.c
        if (!came) {
            CHECK(ts->nstate == (t->factored ? 2 : 1) + (ts->nstate > (t->factored ? 2 : 1)));
            t->v_row = (float*)sp[0];
            t->v_col = t->factored ? (float*)sp[1] : NULL;
            t->m = ts->nstate > (t->factored ? 2 : 1) ? (float*)sp[t->factored ? 2 : 1] : NULL;
        } else {
            CHECK(ts->nstate == (t->factored ? 5 : 2));
            t->m = (float*)sp[0];
            t->v_row = (float*)sp[1];
            t->v_col = t->factored ? (float*)sp[2] : NULL;
            t->res_row = t->factored ? (float*)sp[3] : NULL;
            t->res_col = t->factored ? (float*)sp[4] : NULL;
        }
        t->item0 = nitems;
        t->nitems = t->factored ? (int)((t->rows + FAC_ITEM_ROWS - 1) / FAC_ITEM_ROWS)
                                : (int)((t->numel + FAC_ITEM_ELEMS - 1) / FAC_ITEM_ELEMS);
        nitems += t->nitems;
        if (t->factored) {
            nfac++;
            // scratch offsets for now (pointers once allocated)
            t->row_sum = (double*)(uintptr_t)nrow;
            t->rf = (float*)(uintptr_t)nrow;
            t->cf = (float*)(uintptr_t)ncol;
            t->col_part = (double*)(uintptr_t)npart;
            nrow += t->rows;
            ncol += t->cols;
            npart += (size_t)t->nitems * t->cols;
        }
    }
    FacItem* hi = (FacItem*)xcalloc((size_t)(nitems > 0 ? nitems : 1), sizeof(FacItem));
    int* hf = (int*)xcalloc((size_t)(nfac > 0 ? nfac : 1), sizeof(int));
    int k = 0, q = 0;
    for (int i = 0; i < n; i++) {
        const FacTensor* t = &ht[i];
        const size_t len = t->factored ? t->rows : t->numel, step = t->factored ? FAC_ITEM_ROWS : FAC_ITEM_ELEMS;
        for (size_t lo = 0; lo < len; lo += step) {
            hi[k].tensor = i;
            hi[k].lo = lo;
            hi[k].hi = lo + step < len ? lo + step : len;
            k++;
        }
        if (t->factored) hf[q++] = i;
    }
    CHECK(k == nitems && q == nfac);
    double* row_sum = (double*)fac_alloc(pool, led, "factored row sums", nrow * sizeof(double));
    double* col_part = (double*)fac_alloc(pool, led, "factored column partial sums", npart * sizeof(double));
    float* rf = (float*)fac_alloc(pool, led, "factored row factors", nrow * sizeof(float));
    float* cf = (float*)fac_alloc(pool, led, "factored column factors", ncol * sizeof(float));
    double* sums = (double*)fac_alloc(pool, led, "factored tensor sums", nsums * sizeof(double));
    f->h_sums = (double*)xcalloc(max_sums > 0 ? max_sums : 1, sizeof(double));
    for (int i = 0; i < n; i++) {
        FacTensor* t = &ht[i];
        t->sums = sums ? sums + (size_t)(uintptr_t)t->sums : NULL;
        if (!t->factored) continue;
        t->row_sum = row_sum ? row_sum + (size_t)(uintptr_t)t->row_sum : NULL;
        t->rf = rf ? rf + (size_t)(uintptr_t)t->rf : NULL;
        t->cf = cf ? cf + (size_t)(uintptr_t)t->cf : NULL;
        t->col_part = col_part ? col_part + (size_t)(uintptr_t)t->col_part : NULL;
    }
    f->ntensors = n;
    f->nitems = nitems;
    f->nfac = nfac;
    f->d_tensors = (FacTensor*)fac_alloc(pool, led, "factored tensor table", (size_t)n * sizeof(FacTensor));
    f->d_items = (FacItem*)fac_alloc(pool, led, "factored work table", (size_t)nitems * sizeof(FacItem));
    f->d_fac = (int*)fac_alloc(pool, led, "factored matrix list", (size_t)nfac * sizeof(int));
    f->part_theta = (double*)fac_alloc(pool, led, "factored item sums", 2 * (size_t)nitems * sizeof(double));
    f->part_u = f->part_theta ? f->part_theta + nitems : NULL;
    f->clip_div = (float*)fac_alloc(pool, led, "factored per-tensor scalars", 2 * (size_t)n * sizeof(float));
    f->lr_t = f->clip_div ? f->clip_div + n : NULL;
    if (!led->dry) {
        if (n > 0) CUDA_CHECK(cudaMemcpy(f->d_tensors, ht, (size_t)n * sizeof(FacTensor), cudaMemcpyHostToDevice));
        if (nitems > 0) CUDA_CHECK(cudaMemcpy(f->d_items, hi, (size_t)nitems * sizeof(FacItem), cudaMemcpyHostToDevice));
        if (nfac > 0) CUDA_CHECK(cudaMemcpy(f->d_fac, hf, (size_t)nfac * sizeof(int), cudaMemcpyHostToDevice));
    }
    f->h_tensors = ht; // kept: the reduce staging reads each tensor's sums pointer
    free(hi);
    free(hf);
}

// The host parts of a FacGpu (after a sizing pass, fac_setup's device buffers are none).
static void fac_free_host(FacGpu* f) {
    free(f->h_tensors);
    free((void*)f->reduce);
    free(f->h_sums);
    memset(f, 0, sizeof(*f));
}

// ---- device helpers ----------------------------------------------------------------------------

__device__ __forceinline__ double warp_sum_double(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v; // lane 0 holds the sum
}

// Sum over the block in a fixed order (each thread's value, the warps' trees, the warps in order);
// the result is returned to every thread. red: 32 doubles of shared memory.
__device__ double block_sum_double(double v, double* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum_double(v);
    __syncthreads(); // red is free (a previous call's readers are done)
    if (lane == 0) red[warp] = v;
    __syncthreads();
    double s = 0.0;
    for (int w = 0; w < nwarps; w++) s += red[w];
    return s;
}

// The unclipped update's preconditioner for element (i, j) of a matrix: rf[i]*cf[j] (fac_pre()).
__device__ __forceinline__ float fac_pre_dev(const FacTensor& t, size_t i, size_t j) { return t.rf[i] * t.cf[j]; }

// Row sums and this item's column partials of a matrix item (rows lo..hi), u from val(i, j, pass):
// pass 0 (a warp per row) may write state (came's momentum), pass 1 (a thread per column) only reads.
template <typename F>
__device__ void fac_rowcol(const FacTensor& t, const FacItem& it, int item_local, F val) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (size_t i = it.lo + warp; i < it.hi; i += nwarps) {
        double rs = 0.0;
        for (size_t j = lane; j < t.cols; j += 32) rs += (double)val(i, j, 0);
        rs = warp_sum_double(rs);
        if (lane == 0) t.row_sum[i] = rs;
    }
    __syncthreads(); // pass 0's state writes are visible to the block
    double* cp = t.col_part + (size_t)item_local * t.cols;
    for (size_t j = threadIdx.x; j < t.cols; j += blockDim.x) {
        double cs = 0.0;
        for (size_t i = it.lo; i < it.hi; i++) cs += (double)val(i, j, 1);
        cp[j] = cs;
    }
}

// ---- 1. statistics of g and theta ------------------------------------------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_stats_kernel(const float* master, const G* grad, const FacTensor* tensors,
                                                                 const FacItem* items, int nitems, double* part_theta,
                                                                 double* part_u, FacArgs a) {
    __shared__ double red[32];
    for (int k = blockIdx.x; k < nitems; k += gridDim.x) {
        const FacItem it = items[k];
        const FacTensor t = tensors[it.tensor];
        const size_t e0 = t.factored ? it.lo * t.cols : it.lo, e1 = t.factored ? it.hi * t.cols : it.hi;
        if (!a.came && a.af.scale_parameter) {
            double s = 0.0;
            for (size_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
                const double x = master[t.param_off + e];
                s += x * x;
            }
            s = block_sum_double(s, red);
            if (threadIdx.x == 0) part_theta[k] = s;
        }
        if (t.factored) {
            const G* g = grad + t.grad_off;
            const float eps1 = a.eps1, cs = a.clip_scale;
            fac_rowcol(t, it, k - t.item0, [&](size_t i, size_t j, int) {
                const float gv = opt_grad(g, i * t.cols + j, cs);
                return gv * gv + eps1;
            });
        } else {
            // the full v: EMA now (each element once), and this item's part of sum (rsqrt(v)*g)^2
            double s = 0.0;
            for (size_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
                const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                const float v = fac_ema(t.v_row[e], a.b2, a.omb2, fac_sq_eps(g, a.eps1));
                t.v_row[e] = v;
                const float pu = fac_rsqrt(v) * g;
                s += (double)pu * (double)pu;
            }
            s = block_sum_double(s, red);
            if (threadIdx.x == 0) part_u[k] = s;
        }
        __syncthreads(); // red and the shared state are reused by the next item
    }
}

// ---- 2. the row statistic's EMA, its sum and the column sums ------------------------------------------
// res: 0 for v_row with b2, 1 for came's res_row with b3. Writes sums[0, cols) and sums[cols].
__global__ void __launch_bounds__(FAC_THREADS) fac_rowsum_kernel(const FacTensor* tensors, const int* fac, int nfac, int res, FacArgs a) {
    __shared__ double red[32];
    const float b = res ? a.cm.b3 : a.b2, omb = res ? a.cm.omb3 : a.omb2;
    for (int q = blockIdx.x; q < nfac; q += gridDim.x) {
        const FacTensor t = tensors[fac[q]];
        float* r = res ? t.res_row : t.v_row;
        double sr = 0.0;
        for (size_t i = threadIdx.x; i < t.rows; i += blockDim.x) {
            const float mean = (float)(t.row_sum[i] / (double)t.cols);
            const float ri = fac_ema(r[i], b, omb, mean);
            r[i] = ri;
            sr += (double)ri;
        }
        for (size_t j = threadIdx.x; j < t.cols; j += blockDim.x) {
            double cs = 0.0;
            for (int p = 0; p < t.nitems; p++) cs += t.col_part[(size_t)p * t.cols + j];
            t.sums[j] = cs;
        }
        sr = block_sum_double(sr, red);
        if (threadIdx.x == 0) t.sums[t.ncs] = sr;
        __syncthreads();
    }
}

// ---- 3. the column statistic's EMA and the reconstruction's factors --------------------------------------
// From the (reduced) sums: means over the whole matrix's rows (mrows).
__global__ void __launch_bounds__(FAC_THREADS) fac_factors_kernel(const FacTensor* tensors, const int* fac, int nfac, int res, FacArgs a) {
    const float b = res ? a.cm.b3 : a.b2, omb = res ? a.cm.omb3 : a.omb2;
    for (int q = blockIdx.x; q < nfac; q += gridDim.x) {
        const FacTensor t = tensors[fac[q]];
        const float* r = res ? t.res_row : t.v_row;
        float* c = res ? t.res_col : t.v_col;
        for (size_t j = threadIdx.x; j < t.cols; j += blockDim.x) {
            const float mean = (float)(t.sums[j] / (double)t.mrows);
            const float cj = fac_ema(c[j], b, omb, mean);
            c[j] = cj;
            t.cf[j] = fac_rsqrt(cj);
        }
        const float mean_r = (float)(t.sums[t.ncs] / (double)t.mrows);
        for (size_t i = threadIdx.x; i < t.rows; i += blockDim.x) t.rf[i] = fac_rsqrt(r[i] / mean_r);
    }
}

// ---- 4. sum of the unclipped update's squares over each matrix item ---------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_usq_kernel(const G* grad, const FacTensor* tensors, const FacItem* items,
                                                               int nitems, double* part_u, FacArgs a) {
    __shared__ double red[32];
    for (int k = blockIdx.x; k < nitems; k += gridDim.x) {
        const FacItem it = items[k];
        const FacTensor t = tensors[it.tensor];
        if (!t.factored) continue; // (uniform over the block) vectors did theirs in pass 1
        double s = 0.0;
        for (size_t e = it.lo * t.cols + threadIdx.x; e < it.hi * t.cols; e += blockDim.x) {
            const size_t i = e / t.cols, j = e - i * t.cols;
            const float u = fac_pre_dev(t, i, j) * opt_grad(grad, t.grad_off + e, a.clip_scale);
            s += (double)u * (double)u;
        }
        s = block_sum_double(s, red);
        if (threadIdx.x == 0) part_u[k] = s;
        __syncthreads();
    }
}

// ---- 5. per-tensor sums (the item parts in item order), then the scalars from the (reduced) sums ---------
__global__ void fac_tsums_kernel(const FacTensor* tensors, int ntensors, const double* part_theta, const double* part_u, FacArgs a) {
    const int ti = blockIdx.x * blockDim.x + threadIdx.x;
    if (ti >= ntensors) return;
    const FacTensor t = tensors[ti];
    double su = 0.0, st = 0.0;
    for (int p = 0; p < t.nitems; p++) su += part_u[t.item0 + p];
    if (!a.came && a.af.scale_parameter)
        for (int p = 0; p < t.nitems; p++) st += part_theta[t.item0 + p];
    t.sums[t.ncs + 1] = st;
    t.sums[t.ncs + 2] = su;
}

__global__ void fac_scalars_kernel(const FacTensor* tensors, int ntensors, float* clip_div, float* lr_t, FacArgs a) {
    const int ti = blockIdx.x * blockDim.x + threadIdx.x;
    if (ti >= ntensors) return;
    const FacTensor t = tensors[ti];
    const size_t whole = t.mrows * t.cols; // the whole matrix's elements (a vector: mrows 1, cols numel)
    clip_div[ti] = fac_clip_div(t.sums[t.ncs + 2], whole, a.came ? a.cm.clip_threshold : a.af.clip_threshold);
    if (!a.came) {
        double rms = 0.0;
        if (a.af.scale_parameter) rms = whole ? sqrt(t.sums[t.ncs + 1] / (double)whole) : 0.0;
        lr_t[ti] = adafactor_step_size(a.af, rms);
    }
}

// ---- 6a. adafactor's update ---------------------------------------------------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_update_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                  const FacItem* items, int nitems, const float* clip_div,
                                                                  const float* lr_t, FacArgs a) {
    for (int k = blockIdx.x; k < nitems; k += gridDim.x) {
        const FacItem it = items[k];
        const FacTensor t = tensors[it.tensor];
        const float cd = clip_div[it.tensor], lt = lr_t[it.tensor];
        const double wd = t.decay ? a.af.wd : 0.0;
        const float wd_alpha = fac_wd_alpha(wd, (double)lt);
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        const size_t e0 = t.factored ? it.lo * t.cols : it.lo, e1 = t.factored ? it.hi * t.cols : it.hi;
        for (size_t e = e0 + threadIdx.x; e < e1; e += blockDim.x) {
            const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
            float pre;
            if (t.factored) {
                const size_t i = e / t.cols;
                pre = fac_pre_dev(t, i, e - i * t.cols);
            } else {
                pre = fac_rsqrt(t.v_row[e]);
            }
            const size_t gi = t.param_off + e;
            const float th = adafactor_update(master[gi], g, pre, cd, lt, t.m ? t.m + e : NULL, a.af, wd, wd_alpha);
            opt_store(master, pbf16, gi, th, a.sr, base, e);
        }
    }
}

// ---- 6b. came: vectors' whole step; matrices' momentum and the residual's row/column sums ------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_came_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                const FacItem* items, int nitems, const float* clip_div, FacArgs a) {
    for (int k = blockIdx.x; k < nitems; k += gridDim.x) {
        const FacItem it = items[k];
        const FacTensor t = tensors[it.tensor];
        const float cd = clip_div[it.tensor];
        if (!t.factored) {
            const double wd = t.decay ? a.cm.wd : 0.0;
            const float wd_alpha = fac_wd_alpha(wd, a.cm.lr_d);
            const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
            for (size_t e = it.lo + threadIdx.x; e < it.hi; e += blockDim.x) {
                const size_t gi = t.param_off + e;
                const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                const float mk = came_momentum(t.m + e, came_u(fac_rsqrt(t.v_row[e]), g, cd), a.cm);
                opt_store(master, pbf16, gi, came_apply(master[gi], 1.0f, mk, a.cm, wd, wd_alpha), a.sr, base, e);
            }
            continue;
        }
        const G* g = grad + t.grad_off;
        const float cs = a.clip_scale;
        const CameScalars cm = a.cm;
        fac_rowcol(t, it, k - t.item0, [&](size_t i, size_t j, int pass) {
            const size_t e = i * t.cols + j;
            const float u = came_u(fac_pre_dev(t, i, j), opt_grad(g, e, cs), cd);
            // pass 0 updates m; pass 1 reads the new m written in pass 0
            const float mk = pass == 0 ? came_momentum(t.m + e, u, cm) : t.m[e];
            return came_residual(u, mk, cm);
        });
        __syncthreads();
    }
}

// ---- 6c. came: theta -= lr * m / sqrt(S), S the factored instability ------------------------------------
__global__ void __launch_bounds__(FAC_THREADS) fac_came_apply_kernel(float* master, bf16d* pbf16, const FacTensor* tensors,
                                                                      const FacItem* items, int nitems, FacArgs a) {
    for (int k = blockIdx.x; k < nitems; k += gridDim.x) {
        const FacItem it = items[k];
        const FacTensor t = tensors[it.tensor];
        if (!t.factored) continue;
        const double wd = t.decay ? a.cm.wd : 0.0;
        const float wd_alpha = fac_wd_alpha(wd, a.cm.lr_d);
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        for (size_t e = it.lo * t.cols + threadIdx.x; e < it.hi * t.cols; e += blockDim.x) {
            const size_t i = e / t.cols, j = e - i * t.cols, gi = t.param_off + e;
            opt_store(master, pbf16, gi, came_apply(master[gi], fac_pre_dev(t, i, j), t.m[e], a.cm, wd, wd_alpha), a.sr, base, e);
        }
    }
}

// -zero 1 row shards: part of the sums of every tensor with an OptReduce, through the host, where the
// matrix's OptReduce sums it over the ranks that share it: FAC_SUMS_ROWCOL the column sums and sum(r)
// (sums [0, ncs + 1)), FAC_SUMS_SCALARS sum theta^2 and sum U^2 ([ncs + 1, ncs + 3)). In tensor order:
// every sharing rank makes the same calls in the same order. Nothing when no tensor is shared (one rank,
// or whole tensors only).
enum { FAC_SUMS_ROWCOL, FAC_SUMS_SCALARS };
static void fac_reduce_sums(const FacGpu* f, int which) {
    if (f->nshared == 0) return;
    for (int i = 0; i < f->ntensors; i++) {
        const OptReduce* r = f->reduce[i];
        if (!r) continue;
        const FacTensor* t = &f->h_tensors[i];
        const size_t lo = which == FAC_SUMS_ROWCOL ? 0 : t->ncs + 1, cnt = which == FAC_SUMS_ROWCOL ? t->ncs + 1 : 2;
        CUDA_CHECK(cudaMemcpy(f->h_sums, t->sums + lo, cnt * sizeof(double), cudaMemcpyDeviceToHost));
        r->sum(r, f->h_sums, cnt);
        CUDA_CHECK(cudaMemcpy(t->sums + lo, f->h_sums, cnt * sizeof(double), cudaMemcpyHostToDevice));
    }
}

// Passes 2-3 (res 0: v_row/v_col; 1: came's res_row/res_col): the row EMA and the sums, their reduce
// over the ranks sharing a matrix, the column EMA and the factors.
static void fac_factor_passes(const FacGpu* f, int gf, int res, const FacArgs& a) {
    fac_rowsum_kernel<<<gf, FAC_THREADS>>>(f->d_tensors, f->d_fac, f->nfac, res, a);
    KERNEL_CHECK();
    fac_reduce_sums(f, FAC_SUMS_ROWCOL);
    fac_factors_kernel<<<gf, FAC_THREADS>>>(f->d_tensors, f->d_fac, f->nfac, res, a);
    KERNEL_CHECK();
}

static int fac_grid(int n) { return n < OPT_MAX_GRID ? n : OPT_MAX_GRID; }

// Passes 1-5 (see the top of the file): the second moment's statistics and state, the factors, and per
// tensor the clip divisor (f->clip_div) and, for adafactor (and adalomo, optim/adalomo.cuh), the step size
// lr_t (f->lr_t). Everything before the update itself.
template <typename G>
static void fac_stat_passes(const FacGpu* f, const FacArgs& a, const float* master, const G* grad) {
    const int gi = fac_grid(f->nitems), gf = fac_grid(f->nfac), gt = (f->ntensors + 127) / 128;
    fac_stats_kernel<G><<<gi, FAC_THREADS>>>(master, grad, f->d_tensors, f->d_items, f->nitems, f->part_theta, f->part_u, a);
    KERNEL_CHECK();
    if (gf > 0) {
        fac_factor_passes(f, gf, 0, a);
        fac_usq_kernel<G><<<gi, FAC_THREADS>>>(grad, f->d_tensors, f->d_items, f->nitems, f->part_u, a);
        KERNEL_CHECK();
    }
    fac_tsums_kernel<<<gt, 128>>>(f->d_tensors, f->ntensors, f->part_theta, f->part_u, a);
    KERNEL_CHECK();
    fac_reduce_sums(f, FAC_SUMS_SCALARS);
    fac_scalars_kernel<<<gt, 128>>>(f->d_tensors, f->ntensors, f->clip_div, f->lr_t, a);
    KERNEL_CHECK();
}

// One adafactor or came step over every tensor (see the top of the file); a->lr: the scheduled lr.
template <typename G>
static void fac_step(const FacGpu* f, const OptHyper* h, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* ga) {
    if (f->ntensors == 0 || f->nitems == 0) return;
    FacArgs a;
    memset(&a, 0, sizeof(a));
    a.came = f->on == 2;
    if (!a.came) {
        a.af = adafactor_scalars(h, ga->lr, ga->step);
        a.eps1 = a.af.eps1;
        a.b2 = a.af.b2;
        a.omb2 = a.af.omb2;
    } else {
        a.cm = came_scalars(h, ga->lr);
        a.eps1 = a.cm.eps1;
        a.b2 = a.cm.b2;
        a.omb2 = a.cm.omb2;
    }
    a.clip_scale = ga->clip_scale;
    a.sr = ga->sr;
    a.seed = ga->seed;
    a.step = ga->step;
    const int gi = fac_grid(f->nitems), gf = fac_grid(f->nfac);
    fac_stat_passes<G>(f, a, master, grad);
    if (!a.came) {
        fac_update_kernel<G><<<gi, FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_items, f->nitems, f->clip_div, f->lr_t, a);
        KERNEL_CHECK();
        return;
    }
    fac_came_kernel<G><<<gi, FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_items, f->nitems, f->clip_div, a);
    KERNEL_CHECK();
    if (gf > 0) {
        fac_factor_passes(f, gf, 1, a);
        fac_came_apply_kernel<<<gi, FAC_THREADS>>>(master, pbf16, f->d_tensors, f->d_items, f->nitems, a);
        KERNEL_CHECK();
    }
}

// The entries (optim/registry.h): FacGpu in GpuOpt.own.
static void fac_gpu_setup(GpuOpt* o, int came, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    FacGpu* f = (FacGpu*)xcalloc(1, sizeof(FacGpu));
    fac_setup(f, came, &o->layout, o->buf, shapes, param_offsets, NULL, n, o->reduce, led);
    o->own = f;
}
static void adafactor_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    fac_gpu_setup(o, 0, shapes, param_offsets, n, led);
}
static void came_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    fac_gpu_setup(o, 1, shapes, param_offsets, n, led);
}
template <typename G>
static void fac_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    fac_step<G>((const FacGpu*)o->own, &o->hyper, master, grad, pbf16, a);
}
static const GpuOptimizer OPT_ADAFACTOR_CUDA = GPU_OPTIMIZER(NULL, adafactor_setup, fac_step_launch);
static const GpuOptimizer OPT_CAME_CUDA = GPU_OPTIMIZER(NULL, came_setup, fac_step_launch);

#endif
