// optim/optim.cuh: optimizer state on the GPU and the one-launch-per-step multi-tensor update.
//
// State layout: train/model.c's state_layout_build(), the code the CPU trainer runs: for each tensor in
// order, the optimizer's own layout() names its state tensors; tensors' states of the same name share one
// buffer ("opt: exp_avg"), packed back to back in tensor order. So the buffers are byte for byte what
// the CPU keeps, and checkpoints move between the trainers unchanged.
//
// The step: the tensors are cut into chunks of at most OPT_CHUNK elements that never cross a tensor
// boundary; a device table gives each chunk's tensor, and each tensor's parameter offset, state
// offsets and weight-decay flag. One kernel launch walks all chunks: no per-tensor launch, no host sync.
// In bf16 mode the kernel reads the bf16 gradient, updates the fp32 master and writes the bf16 working
// copy (round to nearest, or stochastic rounding with the CPU's hash of (seed, step, element)).
#ifndef OPTIM_OPTIM_CUH
#define OPTIM_OPTIM_CUH

#include "common/cuda_util.cuh"
#include "optim/optim.h"
#include "optim/state.h"
#include "optim/sgd.cuh"
#include "optim/adam.cuh"
#include "optim/lion.cuh"
#include "optim/adam8bit.cuh"
#include "optim/factored.cuh"
#include "optim/quant8.h"

#define OPT_CHUNK 4096

// GPU_OPT_ADAM8BIT covers adam8bit, adamw8bit (the same kernel; only the default wd differs) and
// paged_adamw8bit (the same kernel, state in managed memory: GpuOpt.paged). GPU_OPT_ADAFACTOR and
// GPU_OPT_CAME run optim/factored.cuh's kernels. adalomo stays CPU-only: it needs the fused backward.
enum { GPU_OPT_SGD = 0, GPU_OPT_SGDM, GPU_OPT_ADAM, GPU_OPT_ADAMW, GPU_OPT_LION, GPU_OPT_ADAM8BIT, GPU_OPT_ADAFACTOR, GPU_OPT_CAME };

// Which optimizers have CUDA kernels; -1 for the CPU-only ones.
static int gpu_opt_kind(const char* name) {
    if (!strcmp(name, "sgd")) return GPU_OPT_SGD;
    if (!strcmp(name, "sgdm")) return GPU_OPT_SGDM;
    if (!strcmp(name, "adam")) return GPU_OPT_ADAM;
    if (!strcmp(name, "adamw")) return GPU_OPT_ADAMW;
    if (!strcmp(name, "lion")) return GPU_OPT_LION;
    if (!strcmp(name, "adam8bit") || !strcmp(name, "adamw8bit") || !strcmp(name, "paged_adamw8bit")) return GPU_OPT_ADAM8BIT;
    if (!strcmp(name, "adafactor")) return GPU_OPT_ADAFACTOR;
    if (!strcmp(name, "came")) return GPU_OPT_CAME;
    return -1;
}

typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    size_t numel;
    size_t state_off[2];// byte offsets of this tensor's state 0 and 1 inside their buffers
    int decay;          // weight decay applies
    int quant;          // 8-bit optimizers: block-quantized state (m_q8, v_q8, m_absmax, v_absmax)
    char* sp[4];        // device pointers to this tensor's states in layout order (any buffer, any dtype)
    size_t block0;      // quantized tensors: index of the tensor's first quantization block over all of them
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
    // 8-bit optimizers
    int nq;                         // quantized tensors
    size_t nqblocks;                // their quantization blocks, all together
    GpuOptTensor* d_qtensors;       // (nq) the quantized tensors' entries, block0 ascending
    float* d_maps;                  // (512) the signed map (for m), then the unsigned map (for v)
    unsigned long long* d_nonfinite;// non-finite gradient elements seen, summed over steps
    int paged;                      // paged_adamw8bit: state in managed memory, prefetched before each step
    int device;
    FacGpu fac;                     // adafactor, came: their own work tables (optim/factored.cuh)
} GpuOpt;

// paged_adamw8bit's state: managed memory (host-backed, migrated on demand), zeroed, counted in the
// ledger as host-backed state. Never more than the card has free: the point of paging is to absorb
// transient pressure, not to run an optimizer step out of host memory every step.
static void* managed_alloc(Ledger* led, MemCategory cat, const char* label, size_t bytes) {
    if (led->dry || bytes == 0) {
        ledger_record(led, cat, label, bytes, NULL);
        led->lines[led->n - 1].host_backed = 1;
        return NULL;
    }
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    if (bytes > free_b) {
        ledger_record(led, cat, label, bytes, NULL);
        char what[160];
        snprintf(what, sizeof(what), "managed %.1f MiB for %s/%s, %.1f MiB free on the card", bytes / 1048576.0,
                 ledger_category_name(cat), label, free_b / 1048576.0);
        if (g_cuda_oom_hook) g_cuda_oom_hook(what);
        fprintf(stderr, "error: paged optimizer state does not fit in free GPU memory (%s)\n", what);
        exit(EXIT_USER);
    }
    void* p = NULL;
    cudaError_t e = cudaMallocManaged(&p, bytes, cudaMemAttachGlobal);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        fprintf(stderr, "error: cudaMallocManaged of %.1f MiB for %s failed (%s)\n", bytes / 1048576.0, label, cudaGetErrorString(e));
        exit(EXIT_USER);
    }
    CUDA_CHECK(cudaMemset(p, 0, bytes));
    ledger_record(led, cat, label, bytes, p);
    led->lines[led->n - 1].host_backed = 1;
    CHECK(g_num_dev_allocs < MAX_DEV_ALLOCS);
    g_dev_allocs[g_num_dev_allocs++] = p; // cudaFree frees managed memory too
    return p;
}

// shapes[i], param_offsets[i]: the optimizer's tensors in the trainer's order. Allocates the state (and
// the small tables) through the ledger; a dry ledger only records.
static void gpu_opt_setup(GpuOpt* o, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes,
                          const size_t* param_offsets, int n, Ledger* led) {
    memset(o, 0, sizeof(*o));
    o->opt = opt;
    o->hyper = *h;
    o->kind = gpu_opt_kind(opt->name);
    CHECK(o->kind >= 0);
    o->paged = !strcmp(opt->name, "paged_adamw8bit");
    if (!led->dry) CUDA_CHECK(cudaGetDevice(&o->device));
    state_layout_build(&o->layout, opt, h, shapes, n);
    for (int b = 0; b < o->layout.nbuf; b++)
        o->buf[b] = o->paged ? managed_alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b])
                             : dev_alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b]);
    if (o->paged && !led->dry) {
        // keep the pages on this GPU between steps; the CPU touches them only for checkpoints
        int managed_ok = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&managed_ok, cudaDevAttrConcurrentManagedAccess, o->device));
        cudaMemLocation loc = { cudaMemLocationTypeDevice, o->device };
        for (int b = 0; managed_ok && b < o->layout.nbuf; b++)
            CUDA_CHECK(cudaMemAdvise(o->buf[b], o->layout.buf_bytes[b], cudaMemAdviseSetPreferredLocation, loc));
    }
    if (o->kind == GPU_OPT_ADAFACTOR || o->kind == GPU_OPT_CAME) {
        // up to 5 states per tensor, reductions over rows and columns: their own tables, no chunks
        fac_setup(&o->fac, o->kind == GPU_OPT_CAME, &o->layout, o->buf, shapes, param_offsets, n, led);
        o->ntensors = n;
        return;
    }
    GpuOptTensor* ht = (GpuOptTensor*)xcalloc((size_t)n, sizeof(GpuOptTensor));
    int nchunks = 0;
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        ht[i].param_off = param_offsets[i];
        ht[i].numel = shapes[i].numel;
        ht[i].decay = shapes[i].decay;
        CHECK(ts->nstate <= 4);
        for (int s = 0; s < ts->nstate; s++)
            ht[i].sp[s] = o->buf[ts->buf[s]] ? (char*)o->buf[ts->buf[s]] + ts->offset[s] : NULL;
        if (o->kind == GPU_OPT_ADAM8BIT) {
            // adam8bit.c's layout: 4 states (codes, codes, absmax, absmax) when quantized, else 2 fp32
            ht[i].quant = ts->nstate == 4;
            CHECK(ts->nstate == 4 || (ts->nstate == 2 && ts->dtype[0] == DT_F32 && ts->dtype[1] == DT_F32));
            if (ht[i].quant) {
                CHECK(ts->dtype[0] == DT_U8 && ts->dtype[1] == DT_U8 && ts->dtype[2] == DT_F32 && ts->dtype[3] == DT_F32);
                ht[i].block0 = o->nqblocks;
                o->nqblocks += q8_num_blocks(shapes[i].numel, (size_t)h->qblock);
                o->nq++;
                continue; // no chunks: the quantized kernel walks its blocks
            }
        } else {
            CHECK(ts->nstate <= 2); // sgd/sgdm/adam/adamw/lion keep at most two fp32 states
            for (int s = 0; s < ts->nstate; s++) {
                CHECK(ts->dtype[s] == DT_F32);
                CHECK(ts->buf[s] == s); // states come in the same order for every tensor: state s lives in buffer s
                ht[i].state_off[s] = ts->offset[s];
            }
        }
        nchunks += (int)((shapes[i].numel + OPT_CHUNK - 1) / OPT_CHUNK);
    }
    GpuOptChunk* hc = (GpuOptChunk*)xcalloc((size_t)(nchunks > 0 ? nchunks : 1), sizeof(GpuOptChunk));
    int c = 0;
    for (int i = 0; i < n; i++) {
        if (ht[i].quant) continue;
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
    GpuOptTensor* hq = NULL;
    if (o->kind == GPU_OPT_ADAM8BIT) {
        hq = (GpuOptTensor*)xcalloc((size_t)(o->nq > 0 ? o->nq : 1), sizeof(GpuOptTensor));
        int q = 0;
        for (int i = 0; i < n; i++) if (ht[i].quant) hq[q++] = ht[i];
        o->d_qtensors = (GpuOptTensor*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit tensor table", (size_t)o->nq * sizeof(GpuOptTensor));
        o->d_maps = (float*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit codebooks", 2 * Q8_CODES * sizeof(float));
        o->d_nonfinite = (unsigned long long*)dev_alloc(led, MEM_OTHER, "optimizer non-finite count", sizeof(unsigned long long));
    }
    if (!led->dry) {
        CUDA_CHECK(cudaMemcpy(o->d_tensors, ht, (size_t)n * sizeof(GpuOptTensor), cudaMemcpyHostToDevice));
        if (nchunks > 0) CUDA_CHECK(cudaMemcpy(o->d_chunks, hc, (size_t)nchunks * sizeof(GpuOptChunk), cudaMemcpyHostToDevice));
        if (hq && o->nq > 0) CUDA_CHECK(cudaMemcpy(o->d_qtensors, hq, (size_t)o->nq * sizeof(GpuOptTensor), cudaMemcpyHostToDevice));
        if (o->d_maps) {
            // the very codebooks the CPU builds (quant8.c), so both sides quantize against the same floats
            CUDA_CHECK(cudaMemcpy(o->d_maps, q8_map_signed()->code, Q8_CODES * sizeof(float), cudaMemcpyHostToDevice));
            CUDA_CHECK(cudaMemcpy(o->d_maps + Q8_CODES, q8_map_unsigned()->code, Q8_CODES * sizeof(float), cudaMemcpyHostToDevice));
        }
    }
    free(ht);
    free(hc);
    free(hq);
}

// Non-finite gradient elements the 8-bit kernels have seen since setup (0 for the others). Synchronizes.
static long gpu_opt_nonfinite(const GpuOpt* o) {
    if (!o->d_nonfinite) return 0;
    unsigned long long n = 0;
    CUDA_CHECK(cudaMemcpy(&n, o->d_nonfinite, sizeof(n), cudaMemcpyDeviceToHost));
    return (long)n;
}

typedef struct {
    int kind;
    float lr, wd, clip_scale;
    float momentum;
    int nesterov;
    AdamScalars adam;
    LionScalars lion;
    Adam8Scalars a8;
    unsigned long long* nonfinite; // 8-bit optimizers: the running count
    int sr;           // stochastic rounding of the bf16 copy
    uint64_t seed;
    int step;
} GpuOptArgs;

// The bf16 working copy of one updated master value: round to nearest, or stochastic rounding with the
// CPU's write_bf16_copy() hash (base: per tensor, li: the element's index in its tensor).
__device__ __forceinline__ void write_bf16_copy_d(bf16d* pbf16, size_t gi, float th, int sr, uint64_t base, size_t li) {
    pbf16[gi] = bf16_from_bits(master_to_bf16(th, sr, base, li));
}

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
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
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
                case GPU_OPT_LION: th = lion_update(th, g, (float*)t.sp[0] + li, a.lion, t.decay); break;
                case GPU_OPT_ADAM8BIT: {
                    // the small tensors' fp32 path; the quantized ones go through adam8bit_q8_kernel
                    if (!isfinite(g)) atomicAdd(a.nonfinite, 1ull);
                    th = adam8bit_f32_update(th, g, (float*)t.sp[0] + li, (float*)t.sp[1] + li, a.a8, t.decay && a.a8.decays);
                    break;
                }
                default: th = adam_update(th, g, s0 + li, s1 + li, a.adam, t.decay); break;
            }
            master[gi] = th;
            if (pbf16) pbf16[gi] = bf16_from_bits(master_to_bf16(th, a.sr, base, li));
        }
    }
}

// adam8bit on the quantized tensors: one thread block per quantization block (grid-stride over the
// blocks of all quantized tensors, found by binary search on block0), codebooks in shared memory.
// blockDim = min(qblock, 256), so each thread owns qblock / blockDim elements, strided by blockDim
// (coalesced); the first Q8_REGS of them stay in registers between the passes, the rest are recomputed.
template <typename G>
__global__ void __launch_bounds__(256) adam8bit_q8_kernel(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor* qt,
                                                          int nq, size_t nqblocks, const float* maps, GpuOptArgs a) {
    __shared__ float smap[Q8_CODES], svmap[Q8_CODES];
    __shared__ float red_m[32], red_v[32];
    __shared__ float new_abs[2];
    for (int i = threadIdx.x; i < Q8_CODES; i += blockDim.x) { smap[i] = maps[i]; svmap[i] = maps[Q8_CODES + i]; }
    __syncthreads();
    const Adam8Scalars& k = a.a8;
    const int Q = k.qblock, nthr = blockDim.x, K = Q / nthr;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = nthr >> 5;
    unsigned long long nonfinite = 0;
    for (size_t qb = blockIdx.x; qb < nqblocks; qb += gridDim.x) {
        int lo_t = 0, hi_t = nq - 1; // the last tensor whose block0 <= qb
        while (lo_t < hi_t) {
            int mid = (lo_t + hi_t + 1) >> 1;
            if (qt[mid].block0 <= qb) lo_t = mid; else hi_t = mid - 1;
        }
        const GpuOptTensor t = qt[lo_t];
        const size_t b = qb - t.block0, lo = b * (size_t)Q;
        const int len = (int)(t.numel - lo < (size_t)Q ? t.numel - lo : (size_t)Q);
        uint8_t* cm = (uint8_t*)t.sp[0] + lo;  // (len) m codes
        uint8_t* cv = (uint8_t*)t.sp[1] + lo;  // (len) v codes
        float* am = (float*)t.sp[2] + b;       // this block's m absmax
        float* av = (float*)t.sp[3] + b;       // this block's v absmax
        const float am_old = *am, av_old = *av;
        const int decays = t.decay && k.decays;
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        // pass 1: new moments, block max of their magnitudes
        float mr[Q8_REGS], vr[Q8_REGS], gr[Q8_REGS];
        float mx_m = 0.0f, mx_v = 0.0f;
#pragma unroll
        for (int j = 0; j < Q8_REGS; j++) {
            const int e = j * nthr + threadIdx.x;
            mr[j] = vr[j] = gr[j] = 0.0f;
            if (j < K && e < len) {
                float g = ldf(grad[t.param_off + lo + e]);
                if (a.clip_scale != 1.0f) g = g * a.clip_scale;
                gr[j] = g;
                adam8bit_moments_d(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &mr[j], &vr[j]);
                mx_m = fmaxf(mx_m, fabsf(mr[j]));
                mx_v = fmaxf(mx_v, fabsf(vr[j]));
            }
        }
        for (int j = Q8_REGS; j < K; j++) {
            const int e = j * nthr + threadIdx.x;
            if (e >= len) break;
            float g = ldf(grad[t.param_off + lo + e]);
            if (a.clip_scale != 1.0f) g = g * a.clip_scale;
            float m, v;
            adam8bit_moments_d(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &m, &v);
            mx_m = fmaxf(mx_m, fabsf(m));
            mx_v = fmaxf(mx_v, fabsf(v));
        }
        // block max: warps, then the first warp over the warps' results
        mx_m = warp_max(mx_m);
        mx_v = warp_max(mx_v);
        if (lane == 0) { red_m[warp] = mx_m; red_v[warp] = mx_v; }
        __syncthreads(); // also: every thread has read the old absmax and its codes before they change
        if (warp == 0) {
            float x = lane < nwarps ? red_m[lane] : 0.0f, y = lane < nwarps ? red_v[lane] : 0.0f;
            x = warp_max(x);
            y = warp_max(y);
            if (lane == 0) { new_abs[0] = x; new_abs[1] = y; *am = x; *av = y; }
        }
        __syncthreads();
        const float am_new = new_abs[0], av_new = new_abs[1];
        // pass 2: parameter update from the fp32 moments, requantize with the new absmax
#pragma unroll
        for (int j = 0; j < Q8_REGS; j++) {
            const int e = j * nthr + threadIdx.x;
            if (j < K && e < len) {
                const size_t li = lo + e, gi = t.param_off + li;
                if (isfinite(gr[j])) {
                    const float th = adam8bit_param_d(k, decays, master[gi], mr[j], vr[j]);
                    master[gi] = th;
                    if (pbf16) write_bf16_copy_d(pbf16, gi, th, a.sr, base, li);
                } else {
                    nonfinite++;
                }
                cm[e] = q8_quantize_d(smap, 1, mr[j], am_new);
                cv[e] = q8_quantize_d(svmap, 0, vr[j], av_new);
            }
        }
        for (int j = Q8_REGS; j < K; j++) {
            const int e = j * nthr + threadIdx.x;
            if (e >= len) break;
            const size_t li = lo + e, gi = t.param_off + li;
            float g = ldf(grad[gi]);
            if (a.clip_scale != 1.0f) g = g * a.clip_scale;
            float m, v;
            adam8bit_moments_d(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &m, &v);
            if (isfinite(g)) {
                const float th = adam8bit_param_d(k, decays, master[gi], m, v);
                master[gi] = th;
                if (pbf16) write_bf16_copy_d(pbf16, gi, th, a.sr, base, li);
            } else {
                nonfinite++;
            }
            cm[e] = q8_quantize_d(smap, 1, m, am_new);
            cv[e] = q8_quantize_d(svmap, 0, v, av_new);
        }
        __syncthreads(); // red_m / new_abs are reused by the next block
    }
    if (nonfinite) atomicAdd(a.nonfinite, nonfinite);
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
    if (o->kind == GPU_OPT_LION) a.lion = lion_scalars(a.lr, h->beta1, h->beta2, h->weight_decay);
    if (o->kind == GPU_OPT_ADAM8BIT) {
        a.a8 = adam8bit_scalars_host(a.lr, h->beta1, h->beta2, h->eps, h->weight_decay, step, h->qblock);
        a.nonfinite = o->d_nonfinite;
    }
    if (o->kind == GPU_OPT_ADAFACTOR || o->kind == GPU_OPT_CAME) {
        fac_step<G>(&o->fac, h, master, grad, pbf16, step, a.lr, clip_scale, a.sr, a.seed);
        return;
    }
    if (o->kind == GPU_OPT_SGDM && h->momentum == 0.0f) a.kind = GPU_OPT_SGD; // torch keeps no buffer: plain sgd
    if (o->paged) {
        // bring the managed state to this GPU ahead of the kernels, on the same (default) stream
        int managed_ok = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&managed_ok, cudaDevAttrConcurrentManagedAccess, o->device));
        cudaMemLocation loc = { cudaMemLocationTypeDevice, o->device };
        for (int b = 0; managed_ok && b < o->layout.nbuf; b++)
            if (o->layout.buf_bytes[b] > 0) CUDA_CHECK(cudaMemPrefetchAsync(o->buf[b], o->layout.buf_bytes[b], loc, 0, 0));
    }
    char* b0 = o->layout.nbuf > 0 ? (char*)o->buf[0] : NULL;
    char* b1 = o->layout.nbuf > 1 ? (char*)o->buf[1] : NULL;
    const int max_grid = 132 * 16;
    if (o->kind == GPU_OPT_ADAM8BIT && o->nqblocks > 0) {
        const int threads = h->qblock < 256 ? h->qblock : 256;
        const int grid = o->nqblocks < (size_t)max_grid ? (int)o->nqblocks : max_grid;
        adam8bit_q8_kernel<G><<<grid, threads>>>(master, grad, pbf16, o->d_qtensors, o->nq, o->nqblocks, o->d_maps, a);
        KERNEL_CHECK();
    }
    int grid = o->nchunks < max_grid ? o->nchunks : max_grid;
    if (grid < 1) return;
    multi_tensor_step_kernel<G><<<grid, 256>>>(master, grad, pbf16, o->d_tensors, o->d_chunks, o->nchunks, b0, b1, a);
    KERNEL_CHECK();
}

#endif
