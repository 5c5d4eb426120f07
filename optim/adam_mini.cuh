// optim/adam_mini.cuh: the CUDA side of optim/adam_mini.c (`-opt adam_mini`): Adam's m per element, one
// vmean per block of adam_mini.h's partition (q/k per head, v and the matrices per row, wte per token,
// wpe and the gains whole), per-element v for the biases. The math is adam_mini.h's, the functions the
// CPU loop calls. Included by optim/optim.cuh.
//
// Work table: every block of every block-partitioned tensor is cut into segments of at most
// MINI_SEG elements (a row of 768 is one segment, a q head of 64 x 768 twelve, wpe's single block of
// 1024 x 768 192), so a thread block never waits on a huge block alone. Per step, four launches over all
// tensors, no host sync:
//   1. mini_sum_kernel, a thread block per segment: the double sum of the fp32 squares g*g of its
//      elements (a thread per element strided by blockDim, then factored.cuh's fixed-order block sum).
//   2. mini_vmean_kernel, a thread per block: its segments' sums added in segment order, mean(g^2)
//      rounded to fp32, the vmean EMA (written back to the state), the block's step multiplier into
//      scratch (adam_mini_block_step).
//   3. mini_update_kernel, a thread block per segment: each element's decay, m lerp and step with its
//      block's multiplier (adam_mini_element); master and bf16 copy stored.
//   4. the biases: optim.cuh's chunk kernel with adam_mini_adam (per-element v).
// The CPU adds the same double squares in element order; the GPU's tree order differs by ~1e-16
// relative, so the fp32 mean is the same float but for a near-tie (then 1 ulp). Everything else is the
// same operations (explicit fmaf where PyTorch fuses, _RN intrinsics elsewhere): m and the biases' v
// are the CPU's bits.
// Tables and scratch (device, MEM_OTHER): 24 B per segment and 32 B per block of tables, 8 B per segment and
// 4 B per block of scratch; on d12 (118,489 segments, 115,130 blocks: `./train_gpu -memory-only 1 -model
// d12 -opt adam_mini`) 6.5 MB of tables and 1.4 MB of scratch, 0.064 B/param together.
#ifndef OPTIM_ADAM_MINI_CUH
#define OPTIM_ADAM_MINI_CUH

#include "optim/adam_mini.h"
#include "optim/factored.cuh"   // block_sum_double

#define MINI_SEG 4096      // elements per segment (at most)
#define MINI_THREADS 256

typedef struct {
    int tensor;            // index into GpuOpt.d_tensors
    int len;               // elements [lo, lo + len) of the tensor
    size_t lo;
    size_t block;          // its block, over all tensors' blocks
} MiniSeg;

typedef struct {
    float* vmean;          // this block's vmean state element
    size_t len;            // the block's elements (the mean's divisor)
    size_t seg0, nseg;     // its segments in the work table
} MiniBlock;

typedef struct {
    size_t nseg, nblocks;
    MiniSeg* d_segs;       // (nseg)
    MiniBlock* d_blocks;   // (nblocks)
    double* d_part;        // (nseg) scratch: the segments' sums of g^2
    float* d_step;         // (nblocks) scratch: the blocks' step multipliers
} MiniGpu;

template <typename G>
__global__ void __launch_bounds__(MINI_THREADS) mini_sum_kernel(const G* grad, const GpuOptTensor* tensors, const MiniSeg* segs,
                                                                size_t nseg, float clip_scale, double* part) {
    __shared__ double red[32];
    for (size_t si = blockIdx.x; si < nseg; si += gridDim.x) {
        const MiniSeg sg = segs[si];
        const size_t off = tensors[sg.tensor].param_off + sg.lo;
        double sum = 0.0;
        for (int e = threadIdx.x; e < sg.len; e += blockDim.x) sum += (double)adam_mini_sq(opt_grad(grad, off + e, clip_scale));
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

template <typename G>
__global__ void __launch_bounds__(MINI_THREADS) mini_update_kernel(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor* tensors,
                                                                   const MiniSeg* segs, size_t nseg, const float* step, GpuStepArgs a,
                                                                   AdamMiniScalars k) {
    for (size_t si = blockIdx.x; si < nseg; si += gridDim.x) {
        const MiniSeg sg = segs[si];
        const GpuOptTensor t = tensors[sg.tensor];
        const float bs = step[sg.block];
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        float* m = (float*)t.sp[0];   // (numel) m
        for (int e = threadIdx.x; e < sg.len; e += blockDim.x) {
            const size_t li = sg.lo + e, gi = t.param_off + li;
            float th = master[gi];
            adam_mini_element(&k, t.decay, &th, m + li, opt_grad(grad, gi, a.clip_scale), bs);
            opt_store(master, pbf16, gi, th, a.sr, base, li);
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
        const MiniPartition q = adam_mini_partition(&shapes[i]);
        blocked[i] = !q.adam;
        if (!blocked[i]) continue;
        for (size_t b = 0; b < q.nblocks; b++) {
            size_t lo, len;
            adam_mini_block_range(&q, b, &lo, &len);
            g->nseg += (len + MINI_SEG - 1) / MINI_SEG;
        }
        g->nblocks += q.nblocks;
    }
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, blocked, led); // chunks: the biases
    MiniSeg* hs = (MiniSeg*)xcalloc(g->nseg > 0 ? g->nseg : 1, sizeof(MiniSeg));
    MiniBlock* hb = (MiniBlock*)xcalloc(g->nblocks > 0 ? g->nblocks : 1, sizeof(MiniBlock));
    size_t s = 0, k = 0;
    for (int i = 0; i < n; i++) {
        if (!blocked[i]) continue;
        const MiniPartition q = adam_mini_partition(&shapes[i]);
        for (size_t b = 0; b < q.nblocks; b++, k++) {
            size_t lo, len;
            adam_mini_block_range(&q, b, &lo, &len);
            hb[k].vmean = ht[i].sp[1] ? (float*)ht[i].sp[1] + b : NULL;
            hb[k].len = len;
            hb[k].seg0 = s;
            for (size_t e = 0; e < len; e += MINI_SEG, s++) {
                hs[s].tensor = i;
                hs[s].lo = lo + e;
                hs[s].len = (int)(len - e < MINI_SEG ? len - e : MINI_SEG);
                hs[s].block = k;
            }
            hb[k].nseg = s - hb[k].seg0;
        }
    }
    CHECK(s == g->nseg && k == g->nblocks);
    g->d_segs = (MiniSeg*)dev_alloc(led, MEM_OTHER, "adam_mini segment table", g->nseg * sizeof(MiniSeg));
    g->d_blocks = (MiniBlock*)dev_alloc(led, MEM_OTHER, "adam_mini block table", g->nblocks * sizeof(MiniBlock));
    g->d_part = (double*)dev_alloc(led, MEM_OTHER, "adam_mini segment sums", g->nseg * sizeof(double));
    g->d_step = (float*)dev_alloc(led, MEM_OTHER, "adam_mini block steps", g->nblocks * sizeof(float));
    if (!led->dry) {
        if (g->nseg > 0) CUDA_CHECK(cudaMemcpy(g->d_segs, hs, g->nseg * sizeof(MiniSeg), cudaMemcpyHostToDevice));
        if (g->nblocks > 0) CUDA_CHECK(cudaMemcpy(g->d_blocks, hb, g->nblocks * sizeof(MiniBlock), cudaMemcpyHostToDevice));
    }
    free(blocked);
    free(ht);
    free(hs);
    free(hb);
}

template <typename G>
static void adam_mini_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const MiniGpu* g = (const MiniGpu*)o->own;
    const AdamMiniScalars k = adam_mini_scalars(&o->hyper, a->lr, a->step);
    if (g->nseg > 0) {
        const int grid = g->nseg < (size_t)OPT_MAX_GRID ? (int)g->nseg : OPT_MAX_GRID;
        mini_sum_kernel<G><<<grid, MINI_THREADS>>>(grad, o->d_tensors, g->d_segs, g->nseg, a->clip_scale, g->d_part);
        KERNEL_CHECK();
        const size_t bgrid = (g->nblocks + MINI_THREADS - 1) / MINI_THREADS;
        mini_vmean_kernel<<<bgrid < (size_t)OPT_MAX_GRID ? (int)bgrid : OPT_MAX_GRID, MINI_THREADS>>>(g->d_blocks, g->nblocks, g->d_part, k,
                                                                                                      g->d_step);
        KERNEL_CHECK();
        mini_update_kernel<G><<<grid, MINI_THREADS>>>(master, grad, pbf16, o->d_tensors, g->d_segs, g->nseg, g->d_step, *a, k);
        KERNEL_CHECK();
    }
    const AdamMiniAdamOp op = { k };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_ADAM_MINI_CUDA = GPU_OPTIMIZER(NULL, adam_mini_gpu_setup, adam_mini_step_launch);

#endif
