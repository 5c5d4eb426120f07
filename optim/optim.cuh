// optim/optim.cuh: optimizer state on the GPU and the generic parts of a step; each optimizer's kernels
// live in its own optim/NAME.cuh and call the math of optim/NAME.h, the same functions its CPU loop calls.
//
// Which optimizer runs which kernels: optim/registry.h's list. Each line marked CPU_CUDA names a
// `const GpuOptimizer OPT_X_CUDA` (its setup and step launches) defined in optim/NAME.cuh; this file
// includes those headers and expands the list into the CUDA table (gpu_optimizer()).
//
// State layout: optim/state.c's state_layout_build(), the code the CPU trainer runs: for each tensor in
// order, the optimizer's own layout() names its state tensors; tensors' states of the same name share one
// buffer ("opt: exp_avg"), packed back to back in tensor order. So the buffers are byte for byte what
// the CPU keeps, and checkpoints move between the trainers unchanged.
//
// Elementwise optimizers (sgd, sgdm, adam, adamw, lion; the small fp32 tensors of the 8-bit and 4-bit
// ones; adam_mini's biases): the tensors are cut into chunks of at most OPT_CHUNK elements that never
// cross a tensor boundary; a device table gives each chunk's tensor, and each tensor's parameter offset,
// state pointers and weight-decay flag. One
// launch of multi_tensor_kernel walks all chunks (no per-tensor launch, no host sync) and calls the
// optimizer's per-element op. In bf16 mode the kernel reads the bf16 gradient, updates the fp32 master and
// writes the bf16 working copy (round to nearest, or stochastic rounding with common/numerics.h's stream).
#ifndef OPTIM_OPTIM_CUH
#define OPTIM_OPTIM_CUH

#include "common/cuda_util.cuh"
#include "optim/optim.h"
#include "optim/registry.h"
#include "optim/state.h"

#define OPT_CHUNK 4096
#define OPT_MAX_GRID (132 * 16)   // grid-stride loops: enough blocks to fill an H100/H200

typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    size_t numel;
    int decay;          // weight decay applies
    char* sp[OPT_MAX_STATES]; // device pointers to this tensor's states in layout order (any buffer, any dtype)
    size_t block0;      // 8-bit quantized tensors: index of the tensor's first quantization block over all of them
} GpuOptTensor;

typedef struct {
    int tensor;
    int count;          // elements in this chunk
    size_t start;       // first element, relative to the tensor
} GpuOptChunk;

// What every step launch receives.
typedef struct {
    int step;           // the optimizer's step count, 1-based
    double lr;          // this step's lr: peak lr times the schedule, in double as the CPU's OptStep.lr
    float lr_scale;     // the schedule's multiplier alone, as OptStep.lr_scale (muon's AdamW part: aux_lr times it)
    float clip_scale;   // the gradient clipping factor (1: none)
    int sr;             // stochastic rounding of the bf16 copy
    uint64_t seed;
} GpuStepArgs;

struct GpuOpt;
// One optimizer's CUDA entry (optim/NAME.cuh), named in optim/registry.h.
typedef struct {
    // allocator of the state buffers: NULL = dev_alloc (paged_adamw8bit: managed memory)
    void* (*alloc)(Ledger* led, MemCategory cat, const char* label, size_t bytes);
    // builds the optimizer's device tables once the state buffers exist (a dry ledger only records)
    void (*setup)(struct GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led);
    // one step over every tensor, fp32 or bf16 gradients; pbf16: the bf16 working copy, NULL in fp32 mode
    void (*step_f32)(struct GpuOpt* o, float* master, const float* grad, bf16d* pbf16, const GpuStepArgs* a);
    void (*step_bf16)(struct GpuOpt* o, float* master, const bf16d* grad, bf16d* pbf16, const GpuStepArgs* a);
    // OPT_HESSIAN only (sophia): folds the trainer's Gauss-Newton-Bartlett gradient, times scale, into the
    // Hessian estimate (the CPU entry's hessian()); NULL for the others
    void (*hessian_f32)(struct GpuOpt* o, const float* grad, float scale);
    void (*hessian_bf16)(struct GpuOpt* o, const bf16d* grad, float scale);
    // OPT_FUSED_BACKWARD only (lomo, adalomo; step_f32/step_bf16 are NULL): the update of one unit's
    // tensors inside backward, from that unit's gradient scratch (tensor i's gradient at grad +
    // grad_offsets[i], the offsets gpu_opt_setup_fused gave); NULL for the others
    void (*unit_step_f32)(struct GpuOpt* o, int unit, float* master, const float* grad, bf16d* pbf16, const GpuStepArgs* a);
    void (*unit_step_bf16)(struct GpuOpt* o, int unit, float* master, const bf16d* grad, bf16d* pbf16, const GpuStepArgs* a);
} GpuOptimizer;

// An entry from a setup function and a step template (instantiated for both gradient types).
#define GPU_OPTIMIZER(alloc_fn, setup_fn, step_tmpl) { alloc_fn, setup_fn, step_tmpl<float>, step_tmpl<bf16d>, NULL, NULL, NULL, NULL }
// The same with a Hessian estimate (OPT_HESSIAN: sophia). The fused-backward ones (optim/lomo.cuh,
// optim/adalomo.cuh) write theirs out: no whole-model step, a unit step.
#define GPU_OPTIMIZER_HESSIAN(alloc_fn, setup_fn, step_tmpl, hessian_tmpl) \
    { alloc_fn, setup_fn, step_tmpl<float>, step_tmpl<bf16d>, hessian_tmpl<float>, hessian_tmpl<bf16d>, NULL, NULL }

typedef struct GpuOpt {
    const Optimizer* opt;
    const GpuOptimizer* gpu;
    OptHyper hyper;
    StateLayout layout;             // buffer names ("opt: exp_avg", the checkpoint blob names), bytes, offsets
    void* buf[MAX_STATE_BUFFERS];   // device, one per layout buffer
    int ntensors;
    int stochastic_rounding;
    uint64_t seed;
    int device;
    int paged;                      // state in managed memory (paged_adamw8bit)
    // the chunk table of the elementwise kernels (gpu_opt_chunks)
    int nchunks;
    GpuOptTensor* d_tensors;        // (ntensors)
    GpuOptChunk* d_chunks;          // (nchunks)
    unsigned long long* d_nonfinite;// non-finite gradient elements the kernels counted (8-bit), NULL if none
    void* own;                      // the optimizer's own tables (host struct holding device pointers)
    const OptReduce* const* reduce; // during setup only: NULL, or (ntensors) per tensor the OptReduce of a
                                    // -zero 1 row shard (NULL: whole here); only the factored kernels
                                    // (adafactor, came: optim/factored.cuh) take row shards
    const int* units;               // during setup only, OPT_FUSED_BACKWARD: (ntensors) each tensor's unit
                                    // (non-decreasing in tensor order: a unit's tensors are consecutive)
    const size_t* grad_offsets;     // during setup only, OPT_FUSED_BACKWARD: (ntensors) each tensor's element
                                    // offset inside its unit's gradient scratch
} GpuOpt;

// ---- the chunk table --------------------------------------------------------------------------------
// The tensor table (every tensor, its state pointers) and the chunks of the tensors not skipped
// (skip[i] != 0: the optimizer walks that tensor its own way; skip NULL: none). Returns the host copy of
// the tensor table (the caller frees it).
static GpuOptTensor* gpu_opt_chunks(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n,
                                    const int* skip, Ledger* led) {
    GpuOptTensor* ht = (GpuOptTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(GpuOptTensor));
    int nchunks = 0;
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        ht[i].param_off = param_offsets[i];
        ht[i].numel = shapes[i].numel;
        ht[i].decay = shapes[i].decay;
        for (int s = 0; s < ts->nstate; s++)
            ht[i].sp[s] = o->buf[ts->buf[s]] ? (char*)o->buf[ts->buf[s]] + ts->offset[s] : NULL;
        if (!skip || !skip[i]) nchunks += (int)((shapes[i].numel + OPT_CHUNK - 1) / OPT_CHUNK);
    }
    GpuOptChunk* hc = (GpuOptChunk*)xcalloc((size_t)(nchunks > 0 ? nchunks : 1), sizeof(GpuOptChunk));
    int c = 0;
    for (int i = 0; i < n; i++) {
        if (skip && skip[i]) continue;
        for (size_t s = 0; s < shapes[i].numel; s += OPT_CHUNK) {
            hc[c].tensor = i;
            hc[c].start = s;
            hc[c].count = (int)(shapes[i].numel - s < OPT_CHUNK ? shapes[i].numel - s : OPT_CHUNK);
            c++;
        }
    }
    o->ntensors = n;
    o->nchunks = nchunks;
    o->d_tensors = (GpuOptTensor*)dev_alloc(led, MEM_OTHER, "optimizer tensor table", (size_t)n * sizeof(GpuOptTensor));
    o->d_chunks = (GpuOptChunk*)dev_alloc(led, MEM_OTHER, "optimizer chunk table", (size_t)nchunks * sizeof(GpuOptChunk));
    if (!led->dry) {
        if (n > 0) CUDA_CHECK(cudaMemcpy(o->d_tensors, ht, (size_t)n * sizeof(GpuOptTensor), cudaMemcpyHostToDevice));
        if (nchunks > 0) CUDA_CHECK(cudaMemcpy(o->d_chunks, hc, (size_t)nchunks * sizeof(GpuOptChunk), cudaMemcpyHostToDevice));
    }
    free(hc);
    return ht;
}

// setup of the elementwise optimizers: every state is fp32, one element per parameter.
static void gpu_opt_elementwise_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        for (int s = 0; s < ts->nstate; s++) CHECK(ts->dtype[s] == DT_F32);
    }
    free(gpu_opt_chunks(o, shapes, param_offsets, n, NULL, led));
}

// ---- the elementwise kernel -------------------------------------------------------------------------
// The gradient of element gi, clipped.
template <typename G>
__device__ __forceinline__ float opt_grad(const G* grad, size_t gi, float clip_scale) {
    float g = ldf(grad[gi]);
    if (clip_scale != 1.0f) g = __fmul_rn(g, clip_scale); // never fused into the caller's adds: the CPU rounds this product
    return g;
}

// Stores an updated master value and its bf16 working copy (pbf16 NULL in fp32 mode): round to nearest,
// or stochastic rounding with element li's bits of the tensor's stream (base = sr_stream(seed, step,
// param_off), as the CPU trainer).
__device__ __forceinline__ void opt_store(float* master, bf16d* pbf16, size_t gi, float th, int sr, uint64_t base, size_t li) {
    master[gi] = th;
    if (pbf16) pbf16[gi] = bf16_from_bits(master_to_bf16(th, sr, base, li));
}

// G: gradient storage (float in fp32 mode, bf16 in bf16 mode). master: fp32 (the parameters themselves
// in fp32 mode). Op: the optimizer's per-element update, th = op(th, g, tensor, index in the tensor).
template <typename G, typename Op>
__global__ void __launch_bounds__(256) multi_tensor_kernel(float* master, const G* grad, bf16d* pbf16,
                                                           const GpuOptTensor* tensors, const GpuOptChunk* chunks, int nchunks,
                                                           GpuStepArgs a, Op op) {
    for (int ci = blockIdx.x; ci < nchunks; ci += gridDim.x) {
        const GpuOptChunk ch = chunks[ci];
        const GpuOptTensor t = tensors[ch.tensor];
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        for (int e = threadIdx.x; e < ch.count; e += blockDim.x) {
            const size_t li = ch.start + (size_t)e;   // index within the tensor
            const size_t gi = t.param_off + li;       // index in the flat buffers
            const float g = opt_grad(grad, gi, a.clip_scale);
            opt_store(master, pbf16, gi, op(master[gi], g, t, li), a.sr, base, li);
        }
    }
}

// Tables of tensors cut into work units (8-bit blocks, tiles): entry i's first unit is tab[i].*first,
// ascending, tab[0]'s is 0. The entry that unit x belongs to: the last whose first unit is <= x (an
// entry with no units shares its first with the next one and is never returned).
template <typename T>
__device__ __forceinline__ int opt_find_unit(const T* tab, int n, size_t T::*first, size_t x) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (tab[mid].*first <= x) lo = mid; else hi = mid - 1;
    }
    return lo;
}

template <typename G, typename Op>
static void multi_tensor_launch(const GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a, Op op) {
    const int grid = o->nchunks < OPT_MAX_GRID ? o->nchunks : OPT_MAX_GRID;
    if (grid < 1) return;
    multi_tensor_kernel<G, Op><<<grid, 256>>>(master, grad, pbf16, o->d_tensors, o->d_chunks, o->nchunks, *a, op);
    KERNEL_CHECK();
}

// ---- the optimizers' kernels, and the table ---------------------------------------------------------
#include "optim/sgd.cuh"
#include "optim/adam.cuh"
#include "optim/lion.cuh"
#include "optim/sophia.cuh"
#include "optim/adam8bit.cuh"
#include "optim/factored.cuh"
// the fused-backward family (updates inside backward, unit by unit: gpu_opt_unit_step)
#include "optim/lomo.cuh"
#include "optim/adalomo.cuh"
#include "optim/lion8bit.cuh"
#include "optim/sgdm8bit.cuh"
#include "optim/adam_mini.cuh"
#include "optim/adamw4bit.cuh"
// the matrix optimizers (cuBLAS / cuSOLVER, optim/blas.cuh)
#include "optim/muon.cuh"
#include "optim/galore.cuh"

#define GPU_OPT_ENTRY_CPU_CUDA(o) &o##_CUDA
#define GPU_OPT_ENTRY_CPU_ONLY(o) NULL
#define GPU_OPT_DECLARE(o, backends) extern const Optimizer o;
OPTIMIZER_LIST(GPU_OPT_DECLARE)
#define GPU_OPT_ROW(o, backends) { &o, GPU_OPT_ENTRY_##backends(o) },
typedef struct { const Optimizer* opt; const GpuOptimizer* gpu; } GpuOptRow;
static const GpuOptRow GPU_OPTIMIZERS[] = { OPTIMIZER_LIST(GPU_OPT_ROW) };

// The CUDA entry of an optimizer, NULL for the CPU-only ones.
static const GpuOptimizer* gpu_optimizer(const Optimizer* opt) {
    for (size_t i = 0; i < sizeof(GPU_OPTIMIZERS) / sizeof(GPU_OPTIMIZERS[0]); i++)
        if (GPU_OPTIMIZERS[i].opt == opt) return GPU_OPTIMIZERS[i].gpu;
    return NULL;
}

// ---- setup and step ---------------------------------------------------------------------------------
// shapes[i], param_offsets[i]: the optimizer's tensors in the trainer's order. Allocates the state (and
// the small tables) through the ledger; a dry ledger only records. reduce: NULL, or per tensor the
// OptReduce of a -zero 1 row shard (trainer/zero_gpu.cuh; adafactor and came only).
// units, grad_offsets: NULL, or for the OPT_FUSED_BACKWARD optimizers (gpu_opt_setup_fused below).
static void gpu_opt_setup_any(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes, const size_t* param_offsets,
                              int n, const OptReduce* const* reduce, const int* units, const size_t* grad_offsets, Ledger* led) {
    memset(o, 0, sizeof(*o));
    o->opt = opt;
    o->gpu = gpu_optimizer(opt);
    CHECK(o->gpu != NULL); // the trainer refuses CPU-only optimizers before this
    o->hyper = *h;
    if (!led->dry) CUDA_CHECK(cudaGetDevice(&o->device));
    state_layout_build(&o->layout, opt, h, shapes, n);
    for (int b = 0; b < o->layout.nbuf; b++)
        o->buf[b] = o->gpu->alloc ? o->gpu->alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b])
                                  : dev_alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b]);
    o->ntensors = n;
    for (int i = 0; reduce && i < n; i++) CHECK(!reduce[i] || o->gpu->setup == adafactor_setup || o->gpu->setup == came_setup);
    o->reduce = reduce;
    o->units = units;
    o->grad_offsets = grad_offsets;
    o->gpu->setup(o, shapes, param_offsets, n, led);
    o->reduce = NULL; // the caller's arrays: the optimizer kept what it needs
    o->units = NULL;
    o->grad_offsets = NULL;
}

static void gpu_opt_setup_shards(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes,
                                 const size_t* param_offsets, int n, const OptReduce* const* reduce, Ledger* led) {
    CHECK(!(opt->flags & OPT_FUSED_BACKWARD)); // those need their units: gpu_opt_setup_fused
    gpu_opt_setup_any(o, opt, h, shapes, param_offsets, n, reduce, NULL, NULL, led);
}

static void gpu_opt_setup(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes,
                          const size_t* param_offsets, int n, Ledger* led) {
    gpu_opt_setup_shards(o, opt, h, shapes, param_offsets, n, NULL, led);
}

// OPT_FUSED_BACKWARD optimizers (lomo, adalomo): as gpu_opt_setup, plus each tensor's unit (units[i],
// non-decreasing) and the offset of its gradient inside that unit's gradient scratch (grad_offsets[i]).
// Their step is gpu_opt_unit_step, one unit at a time, inside backward.
static void gpu_opt_setup_fused(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes,
                                const size_t* param_offsets, const int* units, const size_t* grad_offsets, int n, Ledger* led) {
    CHECK((opt->flags & OPT_FUSED_BACKWARD) && units && grad_offsets);
    for (int i = 1; i < n; i++) CHECK(units[i] >= units[i - 1]);
    gpu_opt_setup_any(o, opt, h, shapes, param_offsets, n, NULL, units, grad_offsets, led);
    CHECK(o->gpu->unit_step_f32 && o->gpu->unit_step_bf16);
}

// Non-finite gradient elements the 8-bit kernels have seen since setup (0 for the others). Synchronizes.
static long gpu_opt_nonfinite(const GpuOpt* o) {
    if (!o->d_nonfinite) return 0;
    unsigned long long n = 0;
    CUDA_CHECK(cudaMemcpy(&n, o->d_nonfinite, sizeof(n), cudaMemcpyDeviceToHost));
    return (long)n;
}

// One optimizer step over every tensor. step: the optimizer's step count (1-based, applied updates
// only); lr_scale: the schedule's multiplier; clip_scale: the gradient clipping factor.
static GpuStepArgs gpu_step_args(const GpuOpt* o, int step, float lr_scale, float clip_scale) {
    GpuStepArgs a;
    memset(&a, 0, sizeof(a));
    a.step = step;
    a.lr = o->hyper.lr * (double)lr_scale;   // as OptStep.lr on the CPU
    a.lr_scale = lr_scale;
    a.clip_scale = clip_scale;
    a.sr = o->stochastic_rounding;
    a.seed = o->seed;
    return a;
}

template <typename G>
static void gpu_opt_step(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, int step, float lr_scale, float clip_scale) {
    CHECK(o->gpu->step_f32 && o->gpu->step_bf16); // the fused-backward ones step by unit: gpu_opt_unit_step
    const GpuStepArgs a = gpu_step_args(o, step, lr_scale, clip_scale);
    if constexpr (sizeof(G) == sizeof(float)) o->gpu->step_f32(o, master, (const float*)grad, pbf16, &a);
    else o->gpu->step_bf16(o, master, (const bf16d*)grad, pbf16, &a);
}

// OPT_FUSED_BACKWARD optimizers: the update of unit `unit`'s tensors from its gradient scratch grad (tensor
// i's gradient at grad + grad_offsets[i]), clipped by clip_scale; the other arguments as gpu_opt_step.
// Enqueued on the default stream after the backward kernels that wrote the scratch; no host sync.
template <typename G>
static void gpu_opt_unit_step(GpuOpt* o, int unit, float* master, const G* grad, bf16d* pbf16, int step, float lr_scale, float clip_scale) {
    const GpuStepArgs a = gpu_step_args(o, step, lr_scale, clip_scale);
    if constexpr (sizeof(G) == sizeof(float)) o->gpu->unit_step_f32(o, unit, master, (const float*)grad, pbf16, &a);
    else o->gpu->unit_step_bf16(o, unit, master, (const bf16d*)grad, pbf16, &a);
}

// OPT_HESSIAN optimizers: the trainer's GNB gradient (this rank's slices with -zero 1), times scale,
// folded into the Hessian estimate.
template <typename G>
static void gpu_opt_hessian(GpuOpt* o, const G* grad, float scale) {
    CHECK(o->gpu->hessian_f32 && o->gpu->hessian_bf16);
    if constexpr (sizeof(G) == sizeof(float)) o->gpu->hessian_f32(o, (const float*)grad, scale);
    else o->gpu->hessian_bf16(o, (const bf16d*)grad, scale);
}

#endif
