// cuda/optimizer.cuh: optimizer state on the GPU and the one-launch-per-step multi-tensor update.
//
// State layout: common/model.c's state_layout_build(), the code the CPU trainer runs: for each tensor in
// order, the optimizer's own layout() names its state tensors; tensors' states of the same name share one
// buffer ("opt: exp_avg"), packed back to back in tensor order. So the buffers are byte for byte what
// the CPU keeps, and checkpoints move between the trainers unchanged.
//
// The step: the tensors are cut into chunks of at most OPT_CHUNK elements that never cross a tensor
// boundary; a device table gives each chunk's tensor, and each tensor's parameter offset, state
// offsets and weight-decay flag. One kernel launch walks all chunks: no per-tensor launch, no host sync.
// In bf16 mode the kernel reads the bf16 gradient, updates the fp32 master and writes the bf16 working
// copy (round to nearest, or stochastic rounding with the CPU's hash of (seed, step, element)).
#ifndef CUDA_OPTIMIZER_CUH
#define CUDA_OPTIMIZER_CUH

#include "cuda/common.cuh"
#include "optim/optim.h"
#include "common/model.h"
#include "optim/sgd.cuh"
#include "optim/adam.cuh"

#define OPT_CHUNK 4096

enum { GPU_OPT_SGD = 0, GPU_OPT_SGDM, GPU_OPT_ADAM, GPU_OPT_ADAMW };

// Which optimizers have CUDA kernels; -1 for the CPU-only ones.
static int gpu_opt_kind(const char* name) {
    if (!strcmp(name, "sgd")) return GPU_OPT_SGD;
    if (!strcmp(name, "sgdm")) return GPU_OPT_SGDM;
    if (!strcmp(name, "adam")) return GPU_OPT_ADAM;
    if (!strcmp(name, "adamw")) return GPU_OPT_ADAMW;
    return -1;
}

typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    size_t numel;
    size_t state_off[2];// byte offsets of this tensor's state 0 and 1 inside their buffers
    int decay;          // weight decay applies
    int pad;
} GpuOptTensor;

typedef struct {
    int tensor;
    int count;          // elements in this chunk
    size_t start;       // first element, relative to the tensor
} GpuOptChunk;

typedef struct {
    const Optimizer* opt;
    OptHyper hyper;
    int kind;
    StateLayout layout;             // buffer names ("opt: exp_avg", the checkpoint blob names), bytes, offsets
    void* buf[MAX_STATE_BUFFERS];   // device, one per layout buffer
    int ntensors, nchunks;
    GpuOptTensor* d_tensors;
    GpuOptChunk* d_chunks;
    int stochastic_rounding;
    uint64_t seed;
} GpuOpt;

// shapes[i], param_offsets[i]: the optimizer's tensors in the trainer's order. Allocates the state (and
// the small tables) through the ledger; a dry ledger only records.
static void gpu_opt_setup(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes,
                          const size_t* param_offsets, int n, Ledger* led) {
    memset(o, 0, sizeof(*o));
    o->opt = opt;
    o->hyper = *h;
    o->kind = gpu_opt_kind(opt->name);
    CHECK(o->kind >= 0);
    state_layout_build(&o->layout, opt, h, shapes, n);
    GpuOptTensor* ht = (GpuOptTensor*)xcalloc((size_t)n, sizeof(GpuOptTensor));
    int nchunks = 0;
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        CHECK(ts->nstate <= 2); // sgd/sgdm/adam/adamw keep at most two fp32 states
        ht[i].param_off = param_offsets[i];
        ht[i].numel = shapes[i].numel;
        ht[i].decay = shapes[i].decay;
        for (int s = 0; s < ts->nstate; s++) {
            CHECK(ts->dtype[s] == DT_F32);
            CHECK(ts->buf[s] == s); // states come in the same order for every tensor: state s lives in buffer s
            ht[i].state_off[s] = ts->offset[s];
        }
        nchunks += (int)((shapes[i].numel + OPT_CHUNK - 1) / OPT_CHUNK);
    }
    for (int b = 0; b < o->layout.nbuf; b++)
        o->buf[b] = dev_alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b]);
    GpuOptChunk* hc = (GpuOptChunk*)xcalloc((size_t)nchunks, sizeof(GpuOptChunk));
    int c = 0;
    for (int i = 0; i < n; i++)
        for (size_t s = 0; s < shapes[i].numel; s += OPT_CHUNK) {
            hc[c].tensor = i;
            hc[c].start = s;
            hc[c].count = (int)(shapes[i].numel - s < OPT_CHUNK ? shapes[i].numel - s : OPT_CHUNK);
            c++;
        }
    o->ntensors = n;
    o->nchunks = nchunks;
    o->d_tensors = (GpuOptTensor*)dev_alloc(led, MEM_OTHER, "optimizer tensor table", (size_t)n * sizeof(GpuOptTensor));
    o->d_chunks = (GpuOptChunk*)dev_alloc(led, MEM_OTHER, "optimizer chunk table", (size_t)nchunks * sizeof(GpuOptChunk));
    if (!led->dry) {
        CUDA_CHECK(cudaMemcpy(o->d_tensors, ht, (size_t)n * sizeof(GpuOptTensor), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(o->d_chunks, hc, (size_t)nchunks * sizeof(GpuOptChunk), cudaMemcpyHostToDevice));
    }
    free(ht);
    free(hc);
}

typedef struct {
    int kind;
    float lr, wd, clip_scale;
    float momentum;
    int nesterov;
    AdamScalars adam;
    int sr;           // stochastic rounding of the bf16 copy
    uint64_t seed;
    int step;
} GpuOptArgs;

// G: gradient storage (float in fp32 mode, bf16 in bf16 mode). master: fp32 (the parameters themselves
// in fp32 mode). pbf16: the bf16 working copy, NULL in fp32 mode.
template <typename G>
__global__ void __launch_bounds__(256) multi_tensor_step_kernel(float* master, const G* grad, bf16d* pbf16,
                                                                const GpuOptTensor* tensors, const GpuOptChunk* chunks, int nchunks,
                                                                char* buf0, char* buf1, GpuOptArgs a) {
    for (int ci = blockIdx.x; ci < nchunks; ci += gridDim.x) {
        const GpuOptChunk ch = chunks[ci];
        const GpuOptTensor t = tensors[ch.tensor];
        float* s0 = buf0 ? (float*)(buf0 + t.state_off[0]) : NULL;
        float* s1 = buf1 ? (float*)(buf1 + t.state_off[1]) : NULL;
        const float wd = t.decay ? a.wd : 0.0f;
        // stochastic rounding bits: the CPU's write_bf16_copy() hash, per tensor then per element
        const uint64_t base = mix64_hd(a.seed * 0x9E3779B97F4A7C15ull + (uint64_t)a.step * 0xD1B54A32D192ED03ull + t.param_off);
        for (int e = threadIdx.x; e < ch.count; e += blockDim.x) {
            const size_t li = ch.start + (size_t)e;   // index within the tensor
            const size_t gi = t.param_off + li;       // index in the flat buffers
            float g = ldf(grad[gi]);
            if (a.clip_scale != 1.0f) g = g * a.clip_scale;
            float th = master[gi];
            switch (a.kind) {
                case GPU_OPT_SGD: th = sgd_update(th, g, a.lr, wd); break;
                case GPU_OPT_SGDM:
                    th = s0 ? sgdm_update(th, g, s0 + li, a.lr, wd, a.momentum, a.nesterov) : sgd_update(th, g, a.lr, wd);
                    break;
                default: th = adam_update(th, g, s0 + li, s1 + li, a.adam, t.decay); break;
            }
            master[gi] = th;
            if (pbf16) pbf16[gi] = bf16_from_bits(a.sr ? bf16_bits_sr(th, (uint32_t)mix64_hd(base + li)) : bf16_bits_rn(th));
        }
    }
}

// One optimizer step over every tensor. step: the optimizer's step count (1-based, applied updates
// only); lr_scale: the schedule's multiplier; clip_scale: the gradient clipping factor.
template <typename G>
static void gpu_opt_step(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, int step, float lr_scale, float clip_scale) {
    GpuOptArgs a;
    memset(&a, 0, sizeof(a));
    const OptHyper* h = &o->hyper;
    a.kind = o->kind;
    a.lr = h->lr * lr_scale;                 // as OptStep.lr on the CPU
    a.wd = h->weight_decay;
    a.clip_scale = clip_scale;
    a.momentum = h->momentum;
    a.nesterov = h->nesterov;
    a.sr = o->stochastic_rounding;
    a.seed = o->seed;
    a.step = step;
    if (o->kind == GPU_OPT_ADAM || o->kind == GPU_OPT_ADAMW) {
        // exactly adam.c's scalars: Python-style doubles rounded to fp32 once
        AdamScalars* s = &a.adam;
        s->beta1 = h->beta1; s->beta2 = h->beta2; s->eps = h->eps;
        s->one_minus_beta1 = (float)(1.0 - (double)h->beta1);
        s->one_minus_beta2 = (float)(1.0 - (double)h->beta2);
        double bc1 = 1.0 - pow((double)h->beta1, (double)step);
        double bc2 = 1.0 - pow((double)h->beta2, (double)step);
        s->step_size = (float)((double)a.lr / bc1);
        s->bc2_sqrt = (float)sqrt(bc2);
        s->decoupled = o->kind == GPU_OPT_ADAMW;
        s->decay = s->decoupled ? (float)(1.0 - (double)a.lr * (double)h->weight_decay) : 1.0f;
        s->l2 = s->decoupled ? 0.0f : h->weight_decay;
    }
    if (o->kind == GPU_OPT_SGDM && h->momentum == 0.0f) a.kind = GPU_OPT_SGD; // torch keeps no buffer: plain sgd
    char* b0 = o->layout.nbuf > 0 ? (char*)o->buf[0] : NULL;
    char* b1 = o->layout.nbuf > 1 ? (char*)o->buf[1] : NULL;
    int grid = o->nchunks < 132 * 16 ? o->nchunks : 132 * 16;
    if (grid < 1) return;
    multi_tensor_step_kernel<G><<<grid, 256>>>(master, grad, pbf16, o->d_tensors, o->d_chunks, o->nchunks, b0, b1, a);
    KERNEL_CHECK();
}

#endif
