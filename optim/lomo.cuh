// optim/lomo.cuh: the CUDA side of optim/lomo.c (`-opt lomo`): plain SGD fused into the backward pass.
// The trainer (train_gpt2.cu, train_step_fused) calls gpu_opt_unit_step for a unit's tensors as soon as
// backward has finished that unit's gradient in its one-unit scratch; this file is that update: one
// launch per unit over the unit's tensors cut into chunks of at most OPT_CHUNK elements (the chunk table
// of optim/optim.cuh, per unit), each element lomo.h's lomo_update, the function the CPU loop calls. The
// gradient of tensor i is read at grad + grad_off[i] (its place in the unit's scratch), the fp32 master and
// the bf16 working copy at its flat offset, written as every other kernel writes them (opt_store: round to
// nearest, or stochastic rounding with the CPU's stream). Included by optim/optim.cuh, which also
// includes optim/adalomo.cuh (the family's other member).
#ifndef OPTIM_LOMO_CUH
#define OPTIM_LOMO_CUH

#include "optim/lomo.h"

// A tensor of a fused-backward optimizer: where its weights are (flat) and where its gradient is (in
// its unit's scratch).
typedef struct {
    size_t param_off;   // element offset into the flat master / bf16 copy
    size_t grad_off;    // element offset into its unit's gradient scratch
    int decay;
} FusedTensor;

// The units of a fused-backward setup (GpuOpt.units, non-decreasing): unit u's tensors are
// [first[u], first[u + 1]) (empty for a unit no tensor names). Returns the number of units (max + 1);
// first has room for that + 1 (xmalloc'd, the caller frees).
static int fused_unit_ranges(const int* units, int n, int** first_out) {
    const int nunits = n > 0 ? units[n - 1] + 1 : 0;
    int* first = (int*)xcalloc((size_t)nunits + 1, sizeof(int));
    for (int u = 0, i = 0; u <= nunits; u++) {
        while (i < n && units[i] < u) i++;
        first[u] = i;
    }
    *first_out = first;
    return nunits;
}

typedef struct {
    int nunits;
    int* chunk0;             // (nunits + 1) host: unit u's chunks are [chunk0[u], chunk0[u + 1])
    FusedTensor* d_tensors;  // (ntensors)
    GpuOptChunk* d_chunks;   // (nchunks) in tensor order
} LomoGpu;

static void lomo_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    CHECK(o->units && o->grad_offsets);
    LomoGpu* lg = (LomoGpu*)xcalloc(1, sizeof(LomoGpu));
    int* first = NULL;
    lg->nunits = fused_unit_ranges(o->units, n, &first);
    lg->chunk0 = (int*)xcalloc((size_t)lg->nunits + 1, sizeof(int));
    FusedTensor* ht = (FusedTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(FusedTensor));
    int nchunks = 0;
    for (int i = 0; i < n; i++) nchunks += (int)((shapes[i].numel + OPT_CHUNK - 1) / OPT_CHUNK);
    GpuOptChunk* hc = (GpuOptChunk*)xcalloc((size_t)(nchunks > 0 ? nchunks : 1), sizeof(GpuOptChunk));
    int c = 0;
    for (int u = 0; u < lg->nunits; u++) {
        lg->chunk0[u] = c;
        for (int i = first[u]; i < first[u + 1]; i++) {
            ht[i].param_off = param_offsets[i];
            ht[i].grad_off = o->grad_offsets[i];
            ht[i].decay = shapes[i].decay;
            for (size_t s = 0; s < shapes[i].numel; s += OPT_CHUNK) {
                hc[c].tensor = i;
                hc[c].start = s;
                hc[c].count = (int)(shapes[i].numel - s < OPT_CHUNK ? shapes[i].numel - s : OPT_CHUNK);
                c++;
            }
        }
    }
    lg->chunk0[lg->nunits] = c;
    CHECK(c == nchunks);
    lg->d_tensors = (FusedTensor*)dev_alloc(led, MEM_OTHER, "optimizer tensor table", (size_t)n * sizeof(FusedTensor));
    lg->d_chunks = (GpuOptChunk*)dev_alloc(led, MEM_OTHER, "optimizer chunk table", (size_t)nchunks * sizeof(GpuOptChunk));
    if (!led->dry) {
        if (n > 0) CUDA_CHECK(cudaMemcpy(lg->d_tensors, ht, (size_t)n * sizeof(FusedTensor), cudaMemcpyHostToDevice));
        if (nchunks > 0) CUDA_CHECK(cudaMemcpy(lg->d_chunks, hc, (size_t)nchunks * sizeof(GpuOptChunk), cudaMemcpyHostToDevice));
    }
    free(first);
    free(ht);
    free(hc);
    o->own = lg;
}

// The chunks [c0, c0 + nchunks) of one unit: theta = lomo_update(theta, g * clip_scale).
template <typename G>
__global__ void __launch_bounds__(256) lomo_kernel(float* master, const G* grad, bf16d* pbf16, const FusedTensor* tensors,
                                                   const GpuOptChunk* chunks, int c0, int nchunks, GpuStepArgs a, LomoScalars s) {
    for (int ci = c0 + blockIdx.x; ci < c0 + nchunks; ci += gridDim.x) {
        const GpuOptChunk ch = chunks[ci];
        const FusedTensor t = tensors[ch.tensor];
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        for (int e = threadIdx.x; e < ch.count; e += blockDim.x) {
            const size_t li = ch.start + (size_t)e; // index within the tensor
            const size_t gi = t.param_off + li;     // index in the flat master and bf16 copy
            const float g = opt_grad(grad, t.grad_off + li, a.clip_scale);
            opt_store(master, pbf16, gi, lomo_update(master[gi], g, s, t.decay), a.sr, base, li);
        }
    }
}

template <typename G>
static void lomo_unit_step(GpuOpt* o, int unit, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const LomoGpu* lg = (const LomoGpu*)o->own;
    CHECK(unit >= 0 && unit < lg->nunits);
    const int c0 = lg->chunk0[unit], nc = lg->chunk0[unit + 1] - c0;
    if (nc < 1) return;
    const int grid = nc < OPT_MAX_GRID ? nc : OPT_MAX_GRID;
    lomo_kernel<G><<<grid, 256>>>(master, grad, pbf16, lg->d_tensors, lg->d_chunks, c0, nc, *a, lomo_scalars(&o->hyper, a->lr));
    KERNEL_CHECK();
}

// step_f32/step_bf16 NULL: there is no whole-model step, only the unit steps inside backward.
static const GpuOptimizer OPT_LOMO_CUDA = { NULL, lomo_setup, NULL, NULL, NULL, NULL, lomo_unit_step<float>, lomo_unit_step<bf16d> };

#endif
