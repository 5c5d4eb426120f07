// optim/factored.cuh: the CUDA side of optim/adafactor.c (`-opt adafactor`) and optim/came.c
// (`-opt came`): the factored second moment of optim/factored.h in a few full-card multi-tensor passes
// (one launch per pass over ALL tensors, never one per tensor), deterministic (fixed-order double
// reductions, no float atomics), no host sync unless a -zero 1 row shard must exchange sums. The scalars
// and the per-element math are adafactor.h's, came.h's and factored.h's, the functions the CPU loops
// call; the work split and every reduction order are optim/reduce_plan.h's (shared with the host
// emulation test/test_optim_fac_plan.c). Included by optim/optim.cuh.
//
// Why it was rewritten (diagnosis of the previous plan, GPT-2 d12, bf16, H200 at 4230 GB/s copy:
// adafactor 3.33 ms = 11% of copy bandwidth, came 4.75 ms = 12%). It cut each matrix into items of
// 64 whole rows, one thread block per item, and per step ran 6 launches (adafactor) / 10 (came):
//  - the statistics pass read every item TWICE (a warp per row for the row sums, then a thread per column
//    over the same 64 rows for the column partials) and theta a third time, all with 2-byte scalar loads
//    strided by 32 lanes (64 B per warp request) instead of 16-byte vectors;
//  - the column partials (ceil(rows/64) x cols doubles: 2.4 MB for wte) were added by ONE block per
//    matrix (fac_rowsum_kernel, 50 blocks for 132 SMs): wte's block alone serially read 786 x 768
//    doubles and walked 50304 rows, the whole card waiting on it; fac_factors_kernel the same (50 blocks);
//  - the U^2 pass, the update and came's apply computed i = e / cols with a 64-bit division per element
//    (tens of instructions) and moved 4- and 2-byte scalars: instruction-bound, not memory-bound;
//  - fac_tsums_kernel: one thread per tensor adding its items' parts serially.
//  Bytes: the floor for adafactor is 20 B/param (theta 4 + g 2 for the statistics, g 2 for RMS(U), then
//  g 2 + master 4+4 + bf16 2 for the update) = 2.49 GB, 0.59 ms at 4230 GB/s; the old plan moved
//  ~26 B/param (the re-reads mostly from L2) but at a fraction of the bandwidth for the reasons above.
//  Came's floor: g 2 (stats) + g 2 (U^2) + g 2 + m 4+4 (momentum, residual) + master 4+4 + m 4 + bf16 2
//  (apply) = 28 B/param = 3.49 GB, 0.82 ms. Host syncs: none at one rank (fac_reduce_sums returns at
//  once), as before.
//
// The plan (reduce_plan.h has the exact thread -> element map and orders). Tiles of 64 rows x 256
// columns (a warp per row, a lane per 8 consecutive columns: one 16-byte bf16 load; d12: ~7,700 tiles,
// ~58 per SM), vectors in tiles of 8192 elements. Per step (adafactor; came adds those marked [came]):
//   1. fac_stats_kernel, tiles: u = g^2 + eps1 -> the row partials (warp tree per row and column tile)
//      and the column partials (registers per lane over the warp's rows, warps added in order through
//      shared memory), sum theta^2 per tile (adafactor's RMS(theta)); vectors: the v EMA and sum U^2.
//      Reads g once (and theta once).
//   2. fac_finish_kernel, units over ALL matrices (~2,600 blocks at d12): row units (a thread per row:
//      row sum of its column-tile partials, the r EMA, a block sum of the new r per unit) and column
//      units (32 columns, warps over the row tiles) -> the column sums into the tensor's `sums`.
//      [reduce: column sums and sum(r), after fac_msums_kernel has put sum(r) into `sums`]
//   3. fac_factors_kernel, the same units: sum(r) over the row units (a warp, fixed order), the c EMA,
//      rf = 1/sqrt(r/mean(r)), cf = 1/sqrt(c).
//   4. fac_usq_kernel, matrix tiles: sum (rf[i]*cf[j]*g)^2 per tile (reads g once).
//   5. fac_tsums_kernel, a block per tensor: the tiles' parts of sum U^2 and sum theta^2 in a fixed
//      order; at one rank also the clip divisor and lr_t. [reduce: both, then fac_scalars_kernel]
//   6. adafactor: fac_update_kernel, tiles: U = pre*g/clip*lr_t, optional momentum, decay, step, bf16.
//      came: fac_came_kernel, tiles: vectors' whole step; matrices update m and take the residual
//      (U - m)^2 + eps2 through the same row/column partials as pass 1 [came]; passes 2 and 3 again on
//      (res_row, res_col) with beta3 [came, reduce]; fac_came_apply_kernel: theta -= pre_res*m*lr [came].
// Launches per step at one rank: adafactor 6, came 9 (plus, with row shards: fac_msums_kernel and
// fac_scalars_kernel, 2 for adafactor, 3 for came). Bytes: ~20.3 (adafactor) and ~28.3 (came) B/param,
// the floor plus the partials (8 B per 64 elements written and read: 0.25 B/param).
// The CPU sums the same values in double in another fixed order (its row chunks differ): the sums
// differ by ~1e-16 relative, so the fp32 statistics almost always round to the same float
// (test/test_optim_fac_plan.c runs this plan's order on the host against adafactor.c and came.c).
//
// Gradients are read at grad_off (FacTensor), everything else at param_off: the same offset for adafactor
// and came; adalomo (optim/adalomo.cuh) runs passes 1-5 (fac_stat_passes) over one FacGpu per backward
// unit, its tensors' gradients at their places in the unit's gradient scratch, then its own update.
//
// -zero 1 row shards (trainer/zero.h, OPT_SHARD_ROWS): a tensor here may be rows [r0, r1) of a matrix
// whose other rows other ranks hold (its param_off points at row r0, its row state is its rows', its
// column state the whole matrix's). Every statistic over all rows is then this rank's partial sum,
// completed at the points marked [reduce] above: the tensor's `sums` (column sums and sum(r); then
// sum U^2 and sum theta^2) are copied to the host and summed over the sharing ranks by the matrix's
// OptReduce (optim/optim.h; the trainer's is trainer/zero.c's, MPI in rank order, the CPU trainer's own
// code), then copied back; means divide by the whole matrix's rows (mrows). A tensor whole here has no
// OptReduce and no copy. With any shared tensor, sum(r) and the scalars go through `sums` for every
// tensor (fac_msums_kernel, fac_scalars_kernel): the same values in the same order as the fused path.
// Scratch (device, MEM_OTHER): row partials rows*ceil(cols/256) and column partials ceil(rows/64)*cols
// doubles per matrix (~0.16 B/param at d12), a double per finish unit, rf/cf floats, the sums (cols + 3
// doubles per matrix, 3 per vector), two doubles per tile, two floats per tensor.
#ifndef OPTIM_FACTORED_CUH
#define OPTIM_FACTORED_CUH

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "optim/adafactor.h"
#include "optim/came.h"
#include "optim/reduce_plan.h"

#define FAC_THREADS RP_THREADS
#define FAC_BATCH 4           // rows a warp loads before it reduces them (loads in flight per lane)

typedef struct {
    size_t param_off;   // element offset into the flat parameter / master / bf16 copy buffers
    size_t grad_off;    // element offset into the gradient buffer: param_off, or (adalomo, optim/adalomo.cuh)
                        // the tensor's place in its unit's gradient scratch
    size_t rows, cols;  // a vector is (1, numel); a row shard: its own rows
    size_t numel;
    size_t mrows;       // rows of the whole matrix (-zero 1 row shards: all ranks' rows; else rows)
    int factored, decay;
    int tile0, ntiles;  // its tiles in the tile table (reduce_plan.h)
    int nrt, nct;       // row tiles, column tiles
    int unit0, nru;     // its finish units: nru row units from unit0, then the column units
    float* v_row;       // (rows), or v (numel) for a vector
    float* v_col;       // (cols), NULL for a vector
    float* m;           // (numel) exp_avg, NULL for adafactor without -beta1
    float* res_row;     // (rows) came, matrices only
    float* res_col;     // (cols)
    double* rowpart;    // (rows, nct) scratch: row partials per column tile
    double* colpart;    // (nrt, cols) scratch: column partials per row tile
    float* rf;          // (rows) scratch: row factors of the current reconstruction
    float* cf;          // (cols) scratch: column factors
    double* sums;       // (ncs + 3) scratch, ncs = cols for a matrix, 0 for a vector: the column sums
                        // [0, ncs), sum of the row statistic [ncs], sum theta^2 [ncs+1], sum U^2 [ncs+2]
    size_t ncs;         // cols, or 0 for a vector
} FacTensor;

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
    int ntensors, ntiles, nunits, nfac; // nfac: factored tensors
    FacTensor* d_tensors;           // (ntensors)
    RpTile* d_tiles;                // (ntiles)
    RpUnit* d_units;                // (nunits)
    int* d_fac;                     // (nfac) the factored tensors' indices
    double* rpart;                  // (nunits) the row units' sums of the new row state
    double* part_theta;             // (ntiles) sums of theta^2
    double* part_u;                 // (ntiles) sums of U^2
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
// Every carve is 256-byte aligned, so the tables and partials keep cudaMalloc's alignment.
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
    RpFacTensor* pt = (RpFacTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(RpFacTensor));
    size_t nrow = 0, ncol = 0, nsums = 0, max_sums = 0;
    int nfac = 0;
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
        pt[i].rows = t->rows;
        pt[i].cols = t->cols;
        pt[i].factored = t->factored;
        if (t->factored) {
            nfac++;
            t->rf = (float*)(uintptr_t)nrow; // offsets for now (pointers once allocated)
            t->cf = (float*)(uintptr_t)ncol;
            nrow += t->rows;
            ncol += t->cols;
        }
    }
    RpFacPlan plan = rp_fac_plan_build(pt, n);
    int* hf = (int*)xcalloc((size_t)(nfac > 0 ? nfac : 1), sizeof(int));
    int q = 0;
    for (int i = 0; i < n; i++) {
        FacTensor* t = &ht[i];
        t->tile0 = pt[i].tile0; t->ntiles = pt[i].ntiles;
        t->nrt = pt[i].nrt; t->nct = pt[i].nct;
        t->unit0 = pt[i].unit0; t->nru = pt[i].nru;
        if (t->factored) hf[q++] = i;
    }
    CHECK(q == nfac);
    double* rowpart = (double*)fac_alloc(pool, led, "factored row partial sums", plan.nrowpart * sizeof(double));
    double* colpart = (double*)fac_alloc(pool, led, "factored column partial sums", plan.ncolpart * sizeof(double));
    float* rf = (float*)fac_alloc(pool, led, "factored row factors", nrow * sizeof(float));
    float* cf = (float*)fac_alloc(pool, led, "factored column factors", ncol * sizeof(float));
    double* sums = (double*)fac_alloc(pool, led, "factored tensor sums", nsums * sizeof(double));
    f->h_sums = (double*)xcalloc(max_sums > 0 ? max_sums : 1, sizeof(double));
    for (int i = 0; i < n; i++) {
        FacTensor* t = &ht[i];
        t->sums = sums ? sums + (size_t)(uintptr_t)t->sums : NULL;
        if (!t->factored) continue;
        t->rf = rf ? rf + (size_t)(uintptr_t)t->rf : NULL;
        t->cf = cf ? cf + (size_t)(uintptr_t)t->cf : NULL;
        t->rowpart = rowpart ? rowpart + pt[i].rowpart_off : NULL;
        t->colpart = colpart ? colpart + pt[i].colpart_off : NULL;
    }
    f->ntensors = n;
    f->ntiles = plan.ntiles;
    f->nunits = plan.nunits;
    f->nfac = nfac;
    f->d_tensors = (FacTensor*)fac_alloc(pool, led, "factored tensor table", (size_t)n * sizeof(FacTensor));
    f->d_tiles = (RpTile*)fac_alloc(pool, led, "factored tile table", (size_t)plan.ntiles * sizeof(RpTile));
    f->d_units = (RpUnit*)fac_alloc(pool, led, "factored unit table", (size_t)plan.nunits * sizeof(RpUnit));
    f->d_fac = (int*)fac_alloc(pool, led, "factored matrix list", (size_t)nfac * sizeof(int));
    f->rpart = (double*)fac_alloc(pool, led, "factored unit sums", (size_t)plan.nunits * sizeof(double));
    f->part_theta = (double*)fac_alloc(pool, led, "factored tile sums", 2 * (size_t)plan.ntiles * sizeof(double));
    f->part_u = f->part_theta ? f->part_theta + plan.ntiles : NULL;
    f->clip_div = (float*)fac_alloc(pool, led, "factored per-tensor scalars", 2 * (size_t)n * sizeof(float));
    f->lr_t = f->clip_div ? f->clip_div + n : NULL;
    if (!led->dry) {
        if (n > 0) CUDA_CHECK(cudaMemcpy(f->d_tensors, ht, (size_t)n * sizeof(FacTensor), cudaMemcpyHostToDevice));
        if (plan.ntiles > 0) CUDA_CHECK(cudaMemcpy(f->d_tiles, plan.tiles, (size_t)plan.ntiles * sizeof(RpTile), cudaMemcpyHostToDevice));
        if (plan.nunits > 0) CUDA_CHECK(cudaMemcpy(f->d_units, plan.units, (size_t)plan.nunits * sizeof(RpUnit), cudaMemcpyHostToDevice));
        if (nfac > 0) CUDA_CHECK(cudaMemcpy(f->d_fac, hf, (size_t)nfac * sizeof(int), cudaMemcpyHostToDevice));
    }
    f->h_tensors = ht; // kept: the reduce staging reads each tensor's sums pointer
    rp_fac_plan_free(&plan);
    free(pt);
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
    return v; // lane 0 holds the sum (reduce_plan.h's warp tree)
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

__device__ __forceinline__ bool fac_al16(const void* p) { return ((uintptr_t)p & 15) == 0; }

// A group of n <= 8 consecutive elements (reduce_plan.h): one 16-byte load when vec (the caller checked
// the alignment) and the group is whole, else n scalar loads; the rest of the 8 are 0.
__device__ __forceinline__ void ld_grad8(const bf16d* p, int n, bool vec, float cs, float* g) {
    if (vec && n == RP_VEC) {
        const uint4 q = *(const uint4*)p;
        const uint32_t w[4] = { q.x, q.y, q.z, q.w };
#pragma unroll
        for (int k = 0; k < 4; k++) {
            g[2 * k] = __uint_as_float(w[k] << 16);
            g[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    } else {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) g[k] = k < n ? ldf(p[k]) : 0.0f;
    }
    if (cs != 1.0f) {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) g[k] = __fmul_rn(g[k], cs); // opt_grad(): the CPU rounds this product
    }
}
__device__ __forceinline__ void ld_f8(const float* p, int n, bool vec, float* x) {
    if (vec && n == RP_VEC) {
        const float4 a = ((const float4*)p)[0], b = ((const float4*)p)[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) x[k] = k < n ? p[k] : 0.0f;
    }
}
__device__ __forceinline__ void ld_grad8(const float* p, int n, bool vec, float cs, float* g) {
    ld_f8(p, n, vec, g);
    if (cs != 1.0f) {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) g[k] = __fmul_rn(g[k], cs);
    }
}
__device__ __forceinline__ void st_f8(float* p, int n, bool vec, const float* x) {
    if (vec && n == RP_VEC) {
        ((float4*)p)[0] = make_float4(x[0], x[1], x[2], x[3]);
        ((float4*)p)[1] = make_float4(x[4], x[5], x[6], x[7]);
    } else {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) if (k < n) p[k] = x[k];
    }
}
// The master values th (8, n valid) and their bf16 copy (pbf16 NULL: fp32 mode); li: the group's first
// element in its tensor (the stochastic-rounding stream's index, as opt_store()).
__device__ __forceinline__ void st_master8(float* master, bf16d* pbf16, size_t gi, int n, bool vec, const float* th, int sr,
                                           uint64_t base, size_t li) {
    st_f8(master + gi, n, vec, th);
    if (!pbf16) return;
    uint32_t b[RP_VEC];
#pragma unroll
    for (int k = 0; k < RP_VEC; k++) b[k] = k < n ? master_to_bf16(th[k], sr, base, li + k) : 0u;
    if (vec && n == RP_VEC) {
        *(uint4*)(pbf16 + gi) = make_uint4(b[0] | (b[1] << 16), b[2] | (b[3] << 16), b[4] | (b[5] << 16), b[6] | (b[7] << 16));
    } else {
#pragma unroll
        for (int k = 0; k < RP_VEC; k++) if (k < n) pbf16[gi + k] = bf16_from_bits((uint16_t)b[k]);
    }
}

// Whether a matrix's rows can take 16-byte groups: every row start (and so every group) 16-byte
// aligned in each buffer a pass touches (cudaMalloc'd buffers are; a tensor at an odd offset is not).
template <typename G>
__device__ __forceinline__ bool fac_vec_ok(const FacTensor& t, const G* grad, const float* master, const bf16d* pbf16, const float* m) {
    return t.cols % RP_VEC == 0 && fac_al16(grad + t.grad_off) && (!master || fac_al16(master + t.param_off)) &&
           (!pbf16 || fac_al16(pbf16 + t.param_off)) && (!m || fac_al16(m));
}

// The row and column partials of one matrix tile (reduce_plan.h): val8(i, c, n, u) fills u[0..n) for
// row i, columns c..c+n-1 (it may also update state there: came's momentum). sm: RP_WARPS *
// RP_TILE_COLS doubles of shared memory.
template <typename F>
__device__ __forceinline__ void fac_tile_rowcol(const FacTensor& t, const RpTile& x, double* sm, F val8) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const size_t c = rp_tile_col(&x, lane);
    const int n = rp_group_len(c, x.c1);
    double cacc[RP_VEC];
#pragma unroll
    for (int k = 0; k < RP_VEC; k++) cacc[k] = 0.0;
    for (size_t i0 = rp_tile_row(&x, warp, 0); i0 < x.r1; i0 += (size_t)RP_WARPS * FAC_BATCH) {
        float u[FAC_BATCH][RP_VEC];
#pragma unroll
        for (int b = 0; b < FAC_BATCH; b++) {
            const size_t i = i0 + (size_t)b * RP_WARPS;
            if (i < x.r1) val8(i, c, n, u[b]);
        }
#pragma unroll
        for (int b = 0; b < FAC_BATCH; b++) {
            const size_t i = i0 + (size_t)b * RP_WARPS;
            if (i >= x.r1) break; // uniform over the warp
            double rs = 0.0;
#pragma unroll
            for (int k = 0; k < RP_VEC; k++)
                if (k < n) { rs += (double)u[b][k]; cacc[k] += (double)u[b][k]; }
            rs = warp_sum_double(rs);
            if (lane == 0) t.rowpart[i * (size_t)t.nct + x.ct] = rs;
        }
    }
#pragma unroll
    for (int k = 0; k < RP_VEC; k++) sm[warp * RP_TILE_COLS + lane * RP_VEC + k] = cacc[k];
    __syncthreads();
    const size_t j = x.c0 + threadIdx.x;
    if (j < x.c1) {
        double s = 0.0;
        for (int w = 0; w < RP_WARPS; w++) s += sm[w * RP_TILE_COLS + threadIdx.x];
        t.colpart[(size_t)x.rt * t.cols + j] = s;
    }
    __syncthreads(); // sm is reused by the next tile
}

// Sum of x^2 in double over a matrix tile's elements (thread order: its rows, then its 8 columns) or a
// vector tile's (its groups in order); the caller block-sums it.
__device__ __forceinline__ double fac_tile_sumsq(const FacTensor& t, const RpTile& x, const float* base, bool vec) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double s = 0.0;
    if (t.factored) {
        const size_t c = rp_tile_col(&x, lane);
        const int n = rp_group_len(c, x.c1);
        if (n == 0) return 0.0;
        for (size_t i0 = rp_tile_row(&x, warp, 0); i0 < x.r1; i0 += (size_t)RP_WARPS * FAC_BATCH) {
            float v[FAC_BATCH][RP_VEC];
#pragma unroll
            for (int b = 0; b < FAC_BATCH; b++) {
                const size_t i = i0 + (size_t)b * RP_WARPS;
                if (i < x.r1) ld_f8(base + i * t.cols + c, n, vec, v[b]);
            }
#pragma unroll
            for (int b = 0; b < FAC_BATCH; b++) {
                if (i0 + (size_t)b * RP_WARPS >= x.r1) break;
#pragma unroll
                for (int k = 0; k < RP_VEC; k++) if (k < n) s += (double)v[b][k] * (double)v[b][k];
            }
        }
    } else {
        for (int q = 0;; q++) {
            const size_t e = rp_flat_group(x.r0, threadIdx.x, q);
            if (e >= x.r1) break;
            const int n = rp_group_len(e, x.r1);
            for (int k = 0; k < n; k++) s += (double)base[e + k] * (double)base[e + k];
        }
    }
    return s;
}

// ---- 1. statistics of g and theta ------------------------------------------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_stats_kernel(const float* master, const G* grad, const FacTensor* tensors,
                                                                 const RpTile* tiles, int ntiles, double* part_theta,
                                                                 double* part_u, FacArgs a) {
    __shared__ double sm[RP_WARPS * RP_TILE_COLS];
    __shared__ double red[32];
    const bool theta = !a.came && a.af.scale_parameter;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        const bool vec = fac_vec_ok<G>(t, grad, master, NULL, NULL);
        if (t.factored) {
            const G* g = grad + t.grad_off;
            const float eps1 = a.eps1, cs = a.clip_scale;
            const size_t cols = t.cols;
            fac_tile_rowcol(t, x, sm, [&](size_t i, size_t c, int n, float* u) {
                ld_grad8(g + i * cols + c, n, vec, cs, u);
#pragma unroll
                for (int e = 0; e < RP_VEC; e++) u[e] = fac_sq_eps(u[e], eps1);
            });
        } else {
            // the full v: EMA now (each element once), and this tile's part of sum (rsqrt(v)*g)^2
            double s = 0.0;
            for (int q = 0;; q++) {
                const size_t e0 = rp_flat_group(x.r0, threadIdx.x, q);
                if (e0 >= x.r1) break;
                const int n = rp_group_len(e0, x.r1);
                for (int j = 0; j < n; j++) {
                    const size_t e = e0 + j;
                    const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                    const float v = fac_ema(t.v_row[e], a.b2, a.omb2, fac_sq_eps(g, a.eps1));
                    t.v_row[e] = v;
                    const float pu = fac_rsqrt(v) * g;
                    s += (double)pu * (double)pu;
                }
            }
            s = block_sum_double(s, red);
            if (threadIdx.x == 0) part_u[k] = s;
        }
        if (theta) {
            const double s = block_sum_double(fac_tile_sumsq(t, x, master + t.param_off, vec), red);
            if (threadIdx.x == 0) part_theta[k] = s;
        }
        __syncthreads(); // red is reused by the next tile
    }
}

// ---- 2. the row statistic's EMA and its sums per row unit; the column sums ---------------------------
// res: 0 for v_row with b2, 1 for came's res_row with b3. Row units: rpart[unit]; column units: sums[j].
__global__ void __launch_bounds__(FAC_THREADS) fac_finish_kernel(const FacTensor* tensors, const RpUnit* units, int nunits, double* rpart,
                                                                  int res, FacArgs a) {
    __shared__ double sm[RP_WARPS * 32];
    __shared__ double red[32];
    const float b = res ? a.cm.b3 : a.b2, omb = res ? a.cm.omb3 : a.omb2;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int u = blockIdx.x; u < nunits; u += gridDim.x) {
        const RpUnit un = units[u];
        const FacTensor t = tensors[un.tensor];
        if (un.kind == RP_UNIT_ROW) {
            float* r = res ? t.res_row : t.v_row;
            const size_t i = un.lo + threadIdx.x;
            double sr = 0.0;
            if (i < un.hi) {
                double rs = 0.0;
                for (int ct = 0; ct < t.nct; ct++) rs += t.rowpart[i * (size_t)t.nct + ct];
                const float mean = (float)(rs / (double)t.cols);
                const float ri = fac_ema(r[i], b, omb, mean);
                r[i] = ri;
                sr = (double)ri;
            }
            sr = block_sum_double(sr, red);
            if (threadIdx.x == 0) rpart[u] = sr;
        } else {
            const size_t j = un.lo + lane;
            double s = 0.0;
            if (j < un.hi)
                for (int rt = warp; rt < t.nrt; rt += RP_WARPS) s += t.colpart[(size_t)rt * t.cols + j];
            sm[warp * 32 + lane] = s;
            __syncthreads();
            if (warp == 0 && j < un.hi) {
                double c = 0.0;
                for (int w = 0; w < RP_WARPS; w++) c += sm[w * 32 + lane];
                t.sums[j] = c;
            }
        }
        __syncthreads(); // sm, red reused by the next unit
    }
}

// sum(r) of a matrix (this rank's rows): its row units' sums, lane l adding units l, l+32, ... in order,
// then the warp tree (lane 0 holds it). Called by a whole warp.
__device__ __forceinline__ double fac_sum_rpart(const FacTensor& t, const double* rpart) {
    double s = 0.0;
    for (int q = threadIdx.x & 31; q < t.nru; q += 32) s += rpart[t.unit0 + q];
    return warp_sum_double(s);
}

// With row shards: sum(r) of every matrix into sums[ncs] (a warp per matrix), for the reduce.
__global__ void fac_msums_kernel(const FacTensor* tensors, const int* fac, int nfac, const double* rpart) {
    const int q = (int)((blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (q >= nfac) return;
    const FacTensor t = tensors[fac[q]];
    const double s = fac_sum_rpart(t, rpart);
    if ((threadIdx.x & 31) == 0) t.sums[t.ncs] = s;
}

// ---- 3. the column statistic's EMA and the reconstruction's factors --------------------------------------
// From the (reduced) sums: means over the whole matrix's rows (mrows). sumr_in_sums: sum(r) is in
// sums[ncs] (row shards: fac_msums_kernel, then the reduce), else it is added here from the row units.
__global__ void __launch_bounds__(FAC_THREADS) fac_factors_kernel(const FacTensor* tensors, const RpUnit* units, int nunits,
                                                                   const double* rpart, int res, int sumr_in_sums, FacArgs a) {
    __shared__ float mean_sh;
    const float b = res ? a.cm.b3 : a.b2, omb = res ? a.cm.omb3 : a.omb2;
    for (int u = blockIdx.x; u < nunits; u += gridDim.x) {
        const RpUnit un = units[u];
        const FacTensor t = tensors[un.tensor];
        if (un.kind == RP_UNIT_ROW) {
            const float* r = res ? t.res_row : t.v_row;
            if (threadIdx.x < 32) {
                const double s = sumr_in_sums ? t.sums[t.ncs] : fac_sum_rpart(t, rpart);
                if (threadIdx.x == 0) mean_sh = (float)(s / (double)t.mrows);
            }
            __syncthreads();
            const float mean_r = mean_sh;
            const size_t i = un.lo + threadIdx.x;
            if (i < un.hi) t.rf[i] = fac_rsqrt(r[i] / mean_r);
        } else {
            float* c = res ? t.res_col : t.v_col;
            const size_t j = un.lo + threadIdx.x;
            if (threadIdx.x < RP_UNIT_COLS && j < un.hi) {
                const float mean = (float)(t.sums[j] / (double)t.mrows);
                const float cj = fac_ema(c[j], b, omb, mean);
                c[j] = cj;
                t.cf[j] = fac_rsqrt(cj);
            }
        }
        __syncthreads(); // mean_sh reused by the next unit
    }
}

// The column factors of a lane's 8 columns (0 past the matrix).
__device__ __forceinline__ void fac_cf8(const FacTensor& t, size_t c, int n, float* cfv) {
#pragma unroll
    for (int k = 0; k < RP_VEC; k++) cfv[k] = k < n ? t.cf[c + k] : 0.0f;
}

// ---- 4. sum of the unclipped update's squares over each matrix tile ---------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_usq_kernel(const G* grad, const FacTensor* tensors, const RpTile* tiles,
                                                               int ntiles, double* part_u, FacArgs a) {
    __shared__ double red[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        if (!t.factored) continue; // (uniform over the block) vectors did theirs in pass 1
        const bool vec = fac_vec_ok<G>(t, grad, NULL, NULL, NULL);
        const size_t c = rp_tile_col(&x, lane);
        const int n = rp_group_len(c, x.c1);
        float cfv[RP_VEC];
        fac_cf8(t, c, n, cfv);
        double s = 0.0;
        if (n > 0) {
            for (size_t i0 = rp_tile_row(&x, warp, 0); i0 < x.r1; i0 += (size_t)RP_WARPS * FAC_BATCH) {
                float g[FAC_BATCH][RP_VEC];
#pragma unroll
                for (int b = 0; b < FAC_BATCH; b++) {
                    const size_t i = i0 + (size_t)b * RP_WARPS;
                    if (i < x.r1) ld_grad8(grad + t.grad_off + i * t.cols + c, n, vec, a.clip_scale, g[b]);
                }
#pragma unroll
                for (int b = 0; b < FAC_BATCH; b++) {
                    const size_t i = i0 + (size_t)b * RP_WARPS;
                    if (i >= x.r1) break;
                    const float rfi = t.rf[i];
#pragma unroll
                    for (int e = 0; e < RP_VEC; e++) {
                        if (e >= n) break;
                        const float u = (rfi * cfv[e]) * g[b][e]; // fac_pre() * g
                        s += (double)u * (double)u;
                    }
                }
            }
        }
        s = block_sum_double(s, red);
        if (threadIdx.x == 0) part_u[k] = s;
    }
}

// ---- 5. per-tensor sums (the tiles' parts in a fixed order), the scalars from the (reduced) sums ------------
__device__ __forceinline__ void fac_tensor_scalars(const FacTensor& t, int ti, double st, double su, float* clip_div, float* lr_t,
                                                   const FacArgs& a) {
    const size_t whole = t.mrows * t.cols; // the whole matrix's elements (a vector: mrows 1, cols numel)
    clip_div[ti] = fac_clip_div(su, whole, a.came ? a.cm.clip_threshold : a.af.clip_threshold);
    if (!a.came) {
        double rms = 0.0;
        if (a.af.scale_parameter) rms = whole ? sqrt(st / (double)whole) : 0.0;
        lr_t[ti] = adafactor_step_size(a.af, rms);
    }
}

// A block per tensor: thread t adds tiles t, t+256, ... in order, then the block sum. fuse: also the
// scalars (no tensor is shared); else the sums go to `sums` for the reduce and fac_scalars_kernel.
__global__ void __launch_bounds__(FAC_THREADS) fac_tsums_kernel(const FacTensor* tensors, int ntensors, const double* part_theta,
                                                                 const double* part_u, float* clip_div, float* lr_t, int fuse, FacArgs a) {
    __shared__ double red[32];
    const bool theta = !a.came && a.af.scale_parameter;
    for (int ti = blockIdx.x; ti < ntensors; ti += gridDim.x) {
        const FacTensor t = tensors[ti];
        double su = 0.0, st = 0.0;
        for (int q = threadIdx.x; q < t.ntiles; q += blockDim.x) su += part_u[t.tile0 + q];
        su = block_sum_double(su, red);
        if (theta) {
            for (int q = threadIdx.x; q < t.ntiles; q += blockDim.x) st += part_theta[t.tile0 + q];
            st = block_sum_double(st, red);
        }
        if (threadIdx.x == 0) {
            t.sums[t.ncs + 1] = st;
            t.sums[t.ncs + 2] = su;
            if (fuse) fac_tensor_scalars(t, ti, st, su, clip_div, lr_t, a);
        }
    }
}

__global__ void fac_scalars_kernel(const FacTensor* tensors, int ntensors, float* clip_div, float* lr_t, FacArgs a) {
    const int ti = blockIdx.x * blockDim.x + threadIdx.x;
    if (ti >= ntensors) return;
    const FacTensor t = tensors[ti];
    fac_tensor_scalars(t, ti, t.sums[t.ncs + 1], t.sums[t.ncs + 2], clip_div, lr_t, a);
}

// ---- 6a. adafactor's update ---------------------------------------------------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_update_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                  const RpTile* tiles, int ntiles, const float* clip_div,
                                                                  const float* lr_t, FacArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        const float cd = clip_div[x.tensor], lt = lr_t[x.tensor];
        const double wd = t.decay ? a.af.wd : 0.0;
        const float wd_alpha = fac_wd_alpha(wd, (double)lt);
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        if (!t.factored) {
            for (int q = 0;; q++) {
                const size_t e0 = rp_flat_group(x.r0, threadIdx.x, q);
                if (e0 >= x.r1) break;
                const int n = rp_group_len(e0, x.r1);
                for (int j = 0; j < n; j++) {
                    const size_t e = e0 + j, gi = t.param_off + e;
                    const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                    const float th = adafactor_update(master[gi], g, fac_rsqrt(t.v_row[e]), cd, lt, t.m ? t.m + e : NULL, a.af, wd, wd_alpha);
                    opt_store(master, pbf16, gi, th, a.sr, base, e);
                }
            }
            continue;
        }
        const bool vec = fac_vec_ok<G>(t, grad, master, pbf16, t.m);
        const size_t c = rp_tile_col(&x, lane);
        const int n = rp_group_len(c, x.c1);
        if (n == 0) continue; // (per lane: no barrier below)
        float cfv[RP_VEC];
        fac_cf8(t, c, n, cfv);
        for (size_t i = rp_tile_row(&x, warp, 0); i < x.r1; i += RP_WARPS) {
            const size_t e = i * t.cols + c, gi = t.param_off + e;
            float g[RP_VEC], th[RP_VEC], m[RP_VEC];
            ld_grad8(grad + t.grad_off + e, n, vec, a.clip_scale, g);
            ld_f8(master + gi, n, vec, th);
            if (t.m) ld_f8(t.m + e, n, vec, m);
            const float rfi = t.rf[i];
#pragma unroll
            for (int j = 0; j < RP_VEC; j++)
                if (j < n) th[j] = adafactor_update(th[j], g[j], rfi * cfv[j], cd, lt, t.m ? &m[j] : NULL, a.af, wd, wd_alpha);
            if (t.m) st_f8(t.m + e, n, vec, m);
            st_master8(master, pbf16, gi, n, vec, th, a.sr, base, e);
        }
    }
}

// ---- 6b. came: vectors' whole step; matrices' momentum and the residual's row/column partials ----------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_came_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                const RpTile* tiles, int ntiles, const float* clip_div, FacArgs a) {
    __shared__ double sm[RP_WARPS * RP_TILE_COLS];
    const int lane = threadIdx.x & 31;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        const float cd = clip_div[x.tensor];
        if (!t.factored) {
            const double wd = t.decay ? a.cm.wd : 0.0;
            const float wd_alpha = fac_wd_alpha(wd, a.cm.lr_d);
            const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
            for (int q = 0;; q++) {
                const size_t e0 = rp_flat_group(x.r0, threadIdx.x, q);
                if (e0 >= x.r1) break;
                const int n = rp_group_len(e0, x.r1);
                for (int j = 0; j < n; j++) {
                    const size_t e = e0 + j, gi = t.param_off + e;
                    const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                    const float mk = came_momentum(t.m + e, came_u(fac_rsqrt(t.v_row[e]), g, cd), a.cm);
                    opt_store(master, pbf16, gi, came_apply(master[gi], 1.0f, mk, a.cm, wd, wd_alpha), a.sr, base, e);
                }
            }
            continue;
        }
        const bool vec = fac_vec_ok<G>(t, grad, NULL, NULL, t.m);
        const size_t c = rp_tile_col(&x, lane);
        float cfv[RP_VEC];
        fac_cf8(t, c, rp_group_len(c, x.c1), cfv);
        const G* gp = grad + t.grad_off;
        const float cs = a.clip_scale;
        const CameScalars cm = a.cm;
        const size_t cols = t.cols;
        float* mp = t.m;
        const float* rf = t.rf;
        fac_tile_rowcol(t, x, sm, [&](size_t i, size_t c0, int n, float* u) {
            const size_t e = i * cols + c0;
            float g[RP_VEC], m[RP_VEC];
            ld_grad8(gp + e, n, vec, cs, g);
            ld_f8(mp + e, n, vec, m);
            const float rfi = rf[i];
#pragma unroll
            for (int j = 0; j < RP_VEC; j++) {
                const float uj = came_u(rfi * cfv[j], g[j], cd);
                const float mk = came_momentum(&m[j], uj, cm);
                u[j] = came_residual(uj, mk, cm);
            }
            st_f8(mp + e, n, vec, m);
        });
    }
}

// ---- 6c. came: theta -= lr * m / sqrt(S), S the factored instability ------------------------------------
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) fac_came_apply_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                      const RpTile* tiles, int ntiles, FacArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        if (!t.factored) continue;
        const double wd = t.decay ? a.cm.wd : 0.0;
        const float wd_alpha = fac_wd_alpha(wd, a.cm.lr_d);
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        const bool vec = fac_vec_ok<G>(t, grad, master, pbf16, t.m);
        const size_t c = rp_tile_col(&x, lane);
        const int n = rp_group_len(c, x.c1);
        if (n == 0) continue;
        float cfv[RP_VEC];
        fac_cf8(t, c, n, cfv);
        for (size_t i = rp_tile_row(&x, warp, 0); i < x.r1; i += RP_WARPS) {
            const size_t e = i * t.cols + c, gi = t.param_off + e;
            float th[RP_VEC], m[RP_VEC];
            ld_f8(master + gi, n, vec, th);
            ld_f8(t.m + e, n, vec, m);
            const float rfi = t.rf[i];
#pragma unroll
            for (int j = 0; j < RP_VEC; j++)
                if (j < n) th[j] = came_apply(th[j], rfi * cfv[j], m[j], a.cm, wd, wd_alpha);
            st_master8(master, pbf16, gi, n, vec, th, a.sr, base, e);
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

static int fac_grid(int work) { return work < OPT_MAX_GRID ? work : OPT_MAX_GRID; }

// Passes 2-3 (res 0: v_row/v_col; 1: came's res_row/res_col): the row EMA and the sums, their reduce
// over the ranks sharing a matrix, the column EMA and the factors.
static void fac_factor_passes(const FacGpu* f, int res, const FacArgs& a) {
    const int gu = fac_grid(f->nunits);
    fac_finish_kernel<<<gu, FAC_THREADS>>>(f->d_tensors, f->d_units, f->nunits, f->rpart, res, a);
    KERNEL_CHECK();
    if (f->nshared > 0) {
        fac_msums_kernel<<<(f->nfac * 32 + 255) / 256, 256>>>(f->d_tensors, f->d_fac, f->nfac, f->rpart);
        KERNEL_CHECK();
        fac_reduce_sums(f, FAC_SUMS_ROWCOL);
    }
    fac_factors_kernel<<<gu, FAC_THREADS>>>(f->d_tensors, f->d_units, f->nunits, f->rpart, res, f->nshared > 0, a);
    KERNEL_CHECK();
}

// Passes 1-5 (see the top of the file): the second moment's statistics and state, the factors, and per
// tensor the clip divisor (f->clip_div) and, for adafactor (and adalomo, optim/adalomo.cuh), the step size
// lr_t (f->lr_t). Everything before the update itself (pass 6). f->ntiles > 0.
template <typename G>
static void fac_stat_passes(const FacGpu* f, const FacArgs& a, const float* master, const G* grad) {
    const int gt = fac_grid(f->ntiles);
    fac_stats_kernel<G><<<gt, FAC_THREADS>>>(master, grad, f->d_tensors, f->d_tiles, f->ntiles, f->part_theta, f->part_u, a);
    KERNEL_CHECK();
    if (f->nfac > 0) {
        fac_factor_passes(f, 0, a);
        fac_usq_kernel<G><<<gt, FAC_THREADS>>>(grad, f->d_tensors, f->d_tiles, f->ntiles, f->part_u, a);
        KERNEL_CHECK();
    }
    fac_tsums_kernel<<<fac_grid(f->ntensors), FAC_THREADS>>>(f->d_tensors, f->ntensors, f->part_theta, f->part_u, f->clip_div, f->lr_t,
                                                            f->nshared == 0, a);
    KERNEL_CHECK();
    if (f->nshared > 0) {
        fac_reduce_sums(f, FAC_SUMS_SCALARS);
        fac_scalars_kernel<<<(f->ntensors + 127) / 128, 128>>>(f->d_tensors, f->ntensors, f->clip_div, f->lr_t, a);
        KERNEL_CHECK();
    }
}

// One adafactor or came step over every tensor (see the top of the file); a->lr: the scheduled lr.
template <typename G>
static void fac_step(const FacGpu* f, const OptHyper* h, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* ga) {
    if (f->ntensors == 0 || f->ntiles == 0) return;
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
    const int gt = fac_grid(f->ntiles);
    fac_stat_passes<G>(f, a, master, grad);
    if (!a.came) {
        fac_update_kernel<G><<<gt, FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_tiles, f->ntiles, f->clip_div, f->lr_t, a);
        KERNEL_CHECK();
        return;
    }
    fac_came_kernel<G><<<gt, FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_tiles, f->ntiles, f->clip_div, a);
    KERNEL_CHECK();
    if (f->nfac > 0) {
        fac_factor_passes(f, 1, a);
        fac_came_apply_kernel<G><<<gt, FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_tiles, f->ntiles, a);
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
