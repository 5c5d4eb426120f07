// optim/adam_mini.cuh: the CUDA side of optim/adam_mini.c (`-opt adam_mini`): Adam's m per element, one
// vmean per block of adam_mini.h's partition (q/k per head, v and the matrices per row, wte per token,
// wpe and the gains whole), per-element v for the biases. The math is adam_mini.h's, the functions the
// CPU loop calls; the work split and the sum orders are optim/reduce_plan.h's (shared with the host
// emulation test/test_optim_fac_plan.c). Included by optim/optim.cuh.
//
// Diagnosis of the previous plan (d12: 118,489 segments, 115,130 blocks): every block, including the
// 114,816 one-row blocks (768 or 3072 elements), was a segment of its own: a thread block per segment
// summed 3 elements per thread with 2-byte scalar loads, then a block-wide double reduction (two
// barriers) for 768 elements; a separate kernel added the segments; a third pass re-read the gradient
// from HBM (+2 B/param over the 20 B/param floor: g 2, master 4+4, m 4+4, bf16 2) and again moved
// 2- and 4-byte scalars, one segment per thread block. Four launches per step.
//
// The plan (reduce_plan.h): one-row blocks (d12: 109.5M of the 124.5M parameters) are ROW work items of
// 32 rows, a warp per row: the lanes add g*g of their 8-element groups (16-byte loads), the warp tree
// gives the row's sum, lane 0 the vmean EMA, every lane the row's step multiplier; then the same warp
// updates the row it has just read (the re-read hits L1/L2, not HBM). Multi-row blocks (q/k heads of
// 64 x 768, wpe's 786,432 elements, the gains) are SEGMENTS of at most 4096 elements of one block:
//   1. mini_sum_kernel, segments only: the double sum of the fp32 squares (thread t: groups t, t+256,
//      ...; block sum) -> part[seg].                                  (reads 15M params' g: ~10 us)
//   2. mini_vmean_kernel, a thread per multi-row block: its segments' sums in order, vmean, the step.
//   3. mini_update_kernel, every item: row items as above; segments elementwise with their block's step.
//   4. the biases: optim.cuh's chunk kernel with adam_mini_adam (per-element v).
// Four launches, no host sync; bytes ~20.2 B/param (the floor plus the segments' second g read).
// The CPU adds the same double squares in element order; the GPU's tree order differs by ~1e-16
// relative, so the fp32 mean is the same float but for a near-tie (then 1 ulp). Everything else is the
// same operations (explicit fmaf where PyTorch fuses, _rn intrinsics elsewhere): m and the biases' v
// are the CPU's bits.
// Tables and scratch (device, MEM_OTHER): 48 B per item (d12: ~3,600 row items + ~3,700 segments) and
// 32 B per multi-row block, 8 B per segment and 4 B per multi-row block of scratch: ~0.4 MB.
#ifndef OPTIM_ADAM_MINI_CUH
#define OPTIM_ADAM_MINI_CUH

#include "optim/adam_mini.h"
#include "optim/factored.cuh"   // block_sum_double, the 8-element loads and stores
#include "optim/reduce_plan.h"

#define MINI_THREADS RP_THREADS

typedef struct {
    float* vmean;          // this block's vmean state element
    size_t len;            // the block's elements (the mean's divisor)
    size_t seg0, nseg;     // its segments in the item table
} MiniBlock;

typedef struct {
    size_t nseg, nitems, nblocks; // items: the nseg segments first, then the row items
    RpMiniItem* d_items;   // (nitems)
    MiniBlock* d_blocks;   // (nblocks) the multi-row blocks
    double* d_part;        // (nseg) scratch: the segments' sums of g^2
    float* d_step;         // (nblocks) scratch: the multi-row blocks' step multipliers
} MiniGpu;

template <typename G>
__global__ void __launch_bounds__(MINI_THREADS) mini_sum_kernel(const G* grad, const GpuOptTensor* tensors, const RpMiniItem* items,
                                                                size_t nseg, float clip_scale, double* part) {
    __shared__ double red[32];
    for (size_t si = blockIdx.x; si < nseg; si += gridDim.x) {
        const RpMiniItem it = items[si];
        const G* gp = grad + tensors[it.tensor].param_off + it.lo;
        const bool vec = fac_al16(gp);
        double sum = 0.0;
        for (int q = 0;; q++) {
            const size_t e = rp_flat_group(0, threadIdx.x, q);
            if (e >= it.len) break;
            const int n = rp_group_len(e, it.len);
            float g[RP_VEC];
            ld_grad8(gp + e, n, vec, clip_scale, g);
            for (int j = 0; j < n; j++) sum += (double)adam_mini_sq(g[j]);
        }
        sum = block_sum_double(sum, red);   // starts with a barrier: red is free across iterations
        if (threadIdx.x == 0) part[si] = sum;
    }
}

__global__ void mini_vmean_kernel(const MiniBlock* blocks, size_t nblocks, const double* part, AdamMiniScalars k, float* step) {
    for (size_t b = blockIdx.x * (size_t)blockDim.x + threadIdx.x; b < nblocks; b += (size_t)gridDim.x * blockDim.x) {
        const MiniBlock mb = blocks[b];
        double sum = 0.0;
        for (size_t s = 0; s < mb.nseg; s++) sum += part[mb.seg0 + s];
        const float v = adam_mini_vmean(&k, *mb.vmean, adam_mini_mean(sum, mb.len));
        *mb.vmean = v;
        step[b] = adam_mini_block_step(&k, v);
    }
}

// The elements [e0, e0 + n) of a tensor (n <= 8, one group) with the block step bs.
template <typename G>
__device__ __forceinline__ void mini_group(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor& t, size_t e0, int n, bool vec,
                                           float bs, const GpuStepArgs& a, const AdamMiniScalars& k, uint64_t base) {
    float* m = (float*)t.sp[0];
    const size_t gi = t.param_off + e0;
    float g[RP_VEC], th[RP_VEC], mm[RP_VEC];
    ld_grad8(grad + gi, n, vec, a.clip_scale, g);
    ld_f8(master + gi, n, vec, th);
    ld_f8(m + e0, n, vec, mm);
#pragma unroll
    for (int j = 0; j < RP_VEC; j++)
        if (j < n) adam_mini_element(&k, t.decay, &th[j], &mm[j], g[j], bs);
    st_f8(m + e0, n, vec, mm);
    st_master8(master, pbf16, gi, n, vec, th, a.sr, base, e0);
}

template <typename G>
__global__ void __launch_bounds__(MINI_THREADS) mini_update_kernel(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor* tensors,
                                                                   const RpMiniItem* items, size_t nitems, const float* step, GpuStepArgs a,
                                                                   AdamMiniScalars k) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (size_t si = blockIdx.x; si < nitems; si += gridDim.x) {
        const RpMiniItem it = items[si];
        const GpuOptTensor t = tensors[it.tensor];
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        const float* m = (const float*)t.sp[0];
        const bool al = fac_al16(grad + t.param_off) && fac_al16(master + t.param_off) && fac_al16(m) &&
                        (!pbf16 || fac_al16(pbf16 + t.param_off));
        if (it.kind == RP_MINI_SEGITEM) {
            const float bs = step[it.block];
            const bool vec = al && it.lo % RP_VEC == 0;
            for (int q = 0;; q++) {
                const size_t e = rp_flat_group(0, threadIdx.x, q);
                if (e >= it.len) break;
                mini_group(master, grad, pbf16, t, it.lo + e, rp_group_len(e, it.len), vec, bs, a, k, base);
            }
            continue;
        }
        // row items: a warp per row, the row's sum, its vmean and step, then its update
        float* vmean = (float*)t.sp[1];
        const bool vec = al && it.lo % RP_VEC == 0 && it.len % RP_VEC == 0;
        for (size_t r = rp_mini_row(warp, 0); r < it.nrows; r += RP_WARPS) {
            const size_t row = it.lo + r * it.len; // the row's first element in the tensor
            const G* gp = grad + t.param_off + row;
            double s = 0.0;
            for (int q = 0;; q++) {
                const size_t e = rp_mini_row_group(lane, q);
                if (e >= it.len) break;
                const int n = rp_group_len(e, it.len);
                float g[RP_VEC];
                ld_grad8(gp + e, n, vec, a.clip_scale, g);
                for (int j = 0; j < n; j++) s += (double)adam_mini_sq(g[j]);
            }
            s = warp_sum_double(s);
            s = __shfl_sync(0xffffffffu, s, 0);
            const float v = adam_mini_vmean(&k, vmean[it.block + r], adam_mini_mean(s, it.len));
            __syncwarp(); // every lane has read the old vmean
            if (lane == 0) vmean[it.block + r] = v;
            const float bs = adam_mini_block_step(&k, v);
            for (int q = 0;; q++) {
                const size_t e = rp_mini_row_group(lane, q);
                if (e >= it.len) break;
                mini_group(master, grad, pbf16, t, row + e, rp_group_len(e, it.len), vec, bs, a, k, base);
            }
        }
    }
}

// The biases (per-element v) through optim.cuh's chunk kernel.
struct AdamMiniAdamOp {
    AdamMiniScalars k;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        adam_mini_adam(&k, t.decay, &th, (float*)t.sp[0] + li, (float*)t.sp[1] + li, g); // m, v
        return th;
    }
};

// adam_mini.c's layout: m (numel) and v (numel) for a bias, m and vmean (one per block) otherwise.
static void adam_mini_gpu_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    MiniGpu* g = (MiniGpu*)xcalloc(1, sizeof(MiniGpu));
    o->own = g;
    int* blocked = (int*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        CHECK(ts->nstate == 2 && ts->dtype[0] == DT_F32 && ts->dtype[1] == DT_F32);
        blocked[i] = !adam_mini_partition(&shapes[i]).adam;
    }
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, blocked, led); // chunks: the biases
    adam_mini_plan(shapes, n, NULL, &g->nseg, &g->nitems, &g->nblocks, NULL, NULL, NULL, NULL, NULL);
    const size_t nb1 = g->nblocks > 0 ? g->nblocks : 1;
    RpMiniItem* hi = (RpMiniItem*)xcalloc(g->nitems > 0 ? g->nitems : 1, sizeof(RpMiniItem));
    size_t* bseg0 = (size_t*)xcalloc(nb1, sizeof(size_t));
    size_t* bnseg = (size_t*)xcalloc(nb1, sizeof(size_t));
    size_t* blen = (size_t*)xcalloc(nb1, sizeof(size_t));
    size_t* bten = (size_t*)xcalloc(nb1, sizeof(size_t));
    size_t* bloc = (size_t*)xcalloc(nb1, sizeof(size_t));
    size_t ns, ni, nb;
    adam_mini_plan(shapes, n, hi, &ns, &ni, &nb, bseg0, bnseg, blen, bten, bloc);
    CHECK(ns == g->nseg && ni == g->nitems && nb == g->nblocks);
    MiniBlock* hb = (MiniBlock*)xcalloc(nb1, sizeof(MiniBlock));
    for (size_t b = 0; b < nb; b++) {
        hb[b].vmean = ht[bten[b]].sp[1] ? (float*)ht[bten[b]].sp[1] + bloc[b] : NULL;
        hb[b].len = blen[b];
        hb[b].seg0 = bseg0[b];
        hb[b].nseg = bnseg[b];
    }
    g->d_items = (RpMiniItem*)dev_alloc(led, MEM_OTHER, "adam_mini work table", g->nitems * sizeof(RpMiniItem));
    g->d_blocks = (MiniBlock*)dev_alloc(led, MEM_OTHER, "adam_mini block table", g->nblocks * sizeof(MiniBlock));
    g->d_part = (double*)dev_alloc(led, MEM_OTHER, "adam_mini segment sums", g->nseg * sizeof(double));
    g->d_step = (float*)dev_alloc(led, MEM_OTHER, "adam_mini block steps", g->nblocks * sizeof(float));
    if (!led->dry) {
        if (g->nitems > 0) CUDA_CHECK(cudaMemcpy(g->d_items, hi, g->nitems * sizeof(RpMiniItem), cudaMemcpyHostToDevice));
        if (g->nblocks > 0) CUDA_CHECK(cudaMemcpy(g->d_blocks, hb, g->nblocks * sizeof(MiniBlock), cudaMemcpyHostToDevice));
    }
    free(blocked);
    free(ht);
    free(hi);
    free(hb);
    free(bseg0); free(bnseg); free(blen); free(bten); free(bloc);
}

template <typename G>
static void adam_mini_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const MiniGpu* g = (const MiniGpu*)o->own;
    const AdamMiniScalars k = adam_mini_scalars(&o->hyper, a->lr, a->step);
    if (g->nseg > 0) {
        const int grid = g->nseg < (size_t)OPT_MAX_GRID ? (int)g->nseg : OPT_MAX_GRID;
        mini_sum_kernel<G><<<grid, MINI_THREADS>>>(grad, o->d_tensors, g->d_items, g->nseg, a->clip_scale, g->d_part);
        KERNEL_CHECK();
        const size_t bgrid = (g->nblocks + MINI_THREADS - 1) / MINI_THREADS;
        mini_vmean_kernel<<<bgrid < (size_t)OPT_MAX_GRID ? (int)bgrid : OPT_MAX_GRID, MINI_THREADS>>>(g->d_blocks, g->nblocks, g->d_part, k,
                                                                                                      g->d_step);
        KERNEL_CHECK();
    }
    if (g->nitems > 0) {
        const int grid = g->nitems < (size_t)OPT_MAX_GRID ? (int)g->nitems : OPT_MAX_GRID;
        mini_update_kernel<G><<<grid, MINI_THREADS>>>(master, grad, pbf16, o->d_tensors, g->d_items, g->nitems, g->d_step, *a, k);
        KERNEL_CHECK();
    }
    const AdamMiniAdamOp op = { k };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_ADAM_MINI_CUDA = GPU_OPTIMIZER(NULL, adam_mini_gpu_setup, adam_mini_step_launch);

#endif
