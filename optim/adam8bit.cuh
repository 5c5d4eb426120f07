// optim/adam8bit.cuh: the CUDA side of optim/adam8bit.c (`-opt adam8bit`, `-opt adamw8bit`,
// `-opt paged_adamw8bit`): block-wise 8-bit m and v (optim/quant8.h), the math of optim/adam8bit.h (the
// functions the CPU step calls), and paged_adamw8bit's managed-memory state. Included by optim/optim.cuh.
//
// Quantized tensors: quant8.cuh's plan (optim/quant8_plan.h; the diagnosis of the first kernel and the
// numbers are in quant8.cuh): a persistent grid, a team of lanes per quantization block (8/16/32 lanes of
// a warp for qblock 64/128/256, the whole thread block above), 8 consecutive elements per lane per round
// with 16-byte loads where aligned, the codebooks and lookup tables in shared memory once per thread
// block. Per block, as adam8bit_block(): dequantize with the old absmax, update v then m (a non-finite g
// zeroes both and is counted), team max |m|, |v| of the updated moments (xor-shuffles; a block team adds
// one barrier), the parameter update from the fp32 moments, requantize with the new absmax by
// q8_quantize_tab (the CPU's q8_nearest table: the answer of bitsandbytes' search) plus the sign guard.
// The first `keep` rounds (all at qblock <= 4096) stay in registers between the two passes; later rounds
// are recomputed, as the CPU does (the same fp32 operations give the same values).
// Bytes per element: 16 (master 8, bf16 gradient 2, bf16 copy 2, m and v codes 2 + 2), each once at
// qblock <= 4096; the first kernel's cost was latency and instructions (quant8.cuh), not extra bytes.
// Small tensors (fp32 state) go through optim.cuh's multi-tensor chunk kernel (adam8bit_fp32_update).
//
// adam8bit.h writes every operation as an explicit round-to-nearest intrinsic on the device, in
// adam8bit.c's order: nvcc never contracts them into fused multiply-adds, and adam8bit.c turns
// contraction off, so the moments are bit-identical to the CPU's and the codes equal.
#ifndef OPTIM_ADAM8BIT_CUH
#define OPTIM_ADAM8BIT_CUH

#include <math.h>
#include "optim/adam8bit.h"
#include "optim/quant8.h"
#include "optim/quant8.cuh"   // Q8Gpu, q8_gpu_setup, the plan helpers

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

// adam8bit on the quantized tensors (the plan above). KEEP: rounds kept in registers (plan.keep).
template <typename G, int KEEP>
__global__ void __launch_bounds__(Q8_THREADS) adam8bit_quantized_kernel(float* master, const G* grad, bf16d* pbf16, const Q8Tensor* qt,
                                                                        int nq, size_t nqblocks, const float* maps, const uint8_t* tabs,
                                                                        Q8Plan plan, int base_ok, GpuStepArgs a, Adam8bitScalars k,
                                                                        unsigned long long* nonfinite_count) {
    __shared__ Q8SMap sm[2];   // m: the signed map, v: the unsigned one
    __shared__ float red[2][2][Q8_THREADS / 32];
    q8_load_smap(&sm[0], maps, tabs, 0);
    q8_load_smap(&sm[1], maps, tabs, 1);
    __syncthreads();
    const int Q = plan.qblock, tl = threadIdx.x % plan.team, tix = threadIdx.x / plan.team;
    unsigned long long nonfinite = 0;
    int ti = 0, parity = 0;
    for (size_t base = (size_t)blockIdx.x * plan.tpb; base < nqblocks; base += (size_t)gridDim.x * plan.tpb, parity ^= 1) {
        const size_t qb = base + tix;
        const int active = qb < nqblocks;
        Q8Tensor t = {};
        size_t b = 0;
        int len = 0;
        float am_old = 0.0f, av_old = 0.0f;
        if (active) {
            ti = q8_cursor(qt, nq, ti, qb);
            t = qt[ti];
            b = qb - t.block0;
            len = q8_block_len(t.numel, Q, b);
            am_old = t.absmax[0][b];
            av_old = t.absmax[1][b];
        }
        const size_t lo = b * (size_t)Q;
        float mr[KEEP][Q8_VEC], vr[KEEP][Q8_VEC], pr[KEEP][Q8_VEC];
        unsigned bad[KEEP];   // bit j: element j's gradient is not finite
        float mx[2] = { 0.0f, 0.0f };
        // pass 1: new moments (and the master) of the kept rounds, max |m|, |v| over all rounds
#pragma unroll
        for (int r = 0; r < KEEP; r++) {
            bad[r] = 0u;
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++) mr[r][j] = vr[r][j] = pr[r][j] = 0.0f;
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (r < plan.rounds && nv > 0) {
                const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
                const size_t gi = t.param_off + lo + e0;
                float g[Q8_VEC];
                uint8_t cm[Q8_VEC], cv[Q8_VEC];
                q8_load_grad8(grad, gi, vec, nv, a.clip_scale, g);
                q8_load_f32x8(master, gi, vec, nv, pr[r]);
                q8_load_u8x8(t.code[0] + lo + e0, vec, nv, cm);
                q8_load_u8x8(t.code[1] + lo + e0, vec, nv, cv);
#pragma unroll
                for (int j = 0; j < Q8_VEC; j++)
                    if (j < nv) {
                        bad[r] |= (unsigned)!isfinite(g[j]) << j;
                        adam8bit_moments(k, sm[0].code, sm[1].code, g[j], cm[j], cv[j], am_old, av_old, &mr[r][j], &vr[r][j]);
                        mx[0] = fmaxf(mx[0], fabsf(mr[r][j]));
                        mx[1] = fmaxf(mx[1], fabsf(vr[r][j]));
                    }
            }
        }
        for (int r = KEEP; r < plan.rounds; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (nv <= 0) break;
            const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
            float g[Q8_VEC];
            uint8_t cm[Q8_VEC], cv[Q8_VEC];
            q8_load_grad8(grad, t.param_off + lo + e0, vec, nv, a.clip_scale, g);
            q8_load_u8x8(t.code[0] + lo + e0, vec, nv, cm);
            q8_load_u8x8(t.code[1] + lo + e0, vec, nv, cv);
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++)
                if (j < nv) {
                    float m, v;
                    adam8bit_moments(k, sm[0].code, sm[1].code, g[j], cm[j], cv[j], am_old, av_old, &m, &v);
                    mx[0] = fmaxf(mx[0], fabsf(m));
                    mx[1] = fmaxf(mx[1], fabsf(v));
                }
        }
        q8_team_max<2>(mx, plan, red[parity]);
        const float am_new = mx[0], av_new = mx[1];
        if (active && tl == 0) { t.absmax[0][b] = am_new; t.absmax[1][b] = av_new; }
        if (!active) continue;
        const uint64_t srb = a.sr ? sr_stream(a.seed, a.step, t.param_off) : 0;
        // pass 2: parameter update from the fp32 moments, requantize with the new absmax
#pragma unroll
        for (int r = 0; r < KEEP; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (r < plan.rounds && nv > 0) {
                const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
                uint8_t cm[Q8_VEC], cv[Q8_VEC];
#pragma unroll
                for (int j = 0; j < Q8_VEC; j++) {
                    if (!((bad[r] >> j) & 1u)) pr[r][j] = adam8bit_param(k, t.decay, pr[r][j], mr[r][j], vr[r][j]);
                    cm[j] = q8_quantize_smap(&sm[0], 1, mr[r][j], am_new);
                    cv[j] = q8_quantize_smap(&sm[1], 0, vr[r][j], av_new);
                }
                nonfinite += __popc(bad[r]);
                q8_store_param8(master, pbf16, t.param_off + lo + e0, lo + e0, vec, nv, pr[r], a.sr, srb, bad[r]);
                q8_store_u8x8(t.code[0] + lo + e0, vec, nv, cm);
                q8_store_u8x8(t.code[1] + lo + e0, vec, nv, cv);
            }
        }
        for (int r = KEEP; r < plan.rounds; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (nv <= 0) break;
            const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
            const size_t gi = t.param_off + lo + e0;
            float g[Q8_VEC], p[Q8_VEC];
            uint8_t cm[Q8_VEC], cv[Q8_VEC];
            unsigned skip = 0u;
            q8_load_grad8(grad, gi, vec, nv, a.clip_scale, g);
            q8_load_f32x8(master, gi, vec, nv, p);
            q8_load_u8x8(t.code[0] + lo + e0, vec, nv, cm);
            q8_load_u8x8(t.code[1] + lo + e0, vec, nv, cv);
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++) {
                float m, v;
                adam8bit_moments(k, sm[0].code, sm[1].code, g[j], cm[j], cv[j], am_old, av_old, &m, &v);
                if (isfinite(g[j])) p[j] = adam8bit_param(k, t.decay, p[j], m, v);
                else if (j < nv) skip |= 1u << j;
                cm[j] = q8_quantize_smap(&sm[0], 1, m, am_new);
                cv[j] = q8_quantize_smap(&sm[1], 0, v, av_new);
            }
            nonfinite += __popc(skip);
            q8_store_param8(master, pbf16, gi, lo + e0, vec, nv, p, a.sr, srb, skip);
            q8_store_u8x8(t.code[0] + lo + e0, vec, nv, cm);
            q8_store_u8x8(t.code[1] + lo + e0, vec, nv, cv);
        }
    }
    if (nonfinite) atomicAdd(nonfinite_count, nonfinite);
}


// adam8bit.c's layout: 4 states (m codes, v codes, m absmax, v absmax) for a quantized tensor, else 2 fp32.
static void adam8bit_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    q8_gpu_setup(o, shapes, param_offsets, n, led, 2);
}

// paged_adamw8bit: as adam8bit, and the managed pages kept on this GPU between steps (the CPU touches
// them only for checkpoints).
static void paged_adamw8bit_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    o->paged = 1;
    adam8bit_setup(o, shapes, param_offsets, n, led);
    if (led->dry) return;
    int managed_ok = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&managed_ok, cudaDevAttrConcurrentManagedAccess, o->device));
    cudaMemLocation loc = { cudaMemLocationTypeDevice, o->device };
    for (int b = 0; managed_ok && b < o->layout.nbuf; b++)
        if (o->buf[b]) CUDA_CHECK(cudaMemAdvise(o->buf[b], o->layout.buf_bytes[b], cudaMemAdviseSetPreferredLocation, loc));
}

// The small tensors' fp32 path (bitsandbytes' 32-bit kernel), counting non-finite gradients.
struct Adam8bitFp32Op {
    Adam8bitScalars k;
    unsigned long long* nonfinite;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        if (!isfinite(g)) atomicAdd(nonfinite, 1ull);
        return adam8bit_fp32_update(th, g, (float*)t.sp[0] + li, (float*)t.sp[1] + li, k, t.decay); // exp_avg, exp_avg_sq
    }
};

template <typename G, int KEEP>
static void adam8bit_quantized_launch(const Q8Gpu* q, const Q8Plan& plan, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a,
                                      Adam8bitScalars k, unsigned long long* nonfinite) {
    static int cache[Q8_THREADS / 64] = { 0 };   // per instantiation and blockDim (64, 128, 256): blocks that fit on the device
    const int grid = q8_persistent_grid(adam8bit_quantized_kernel<G, KEEP>, plan.threads, (q->nqblocks + plan.tpb - 1) / plan.tpb, &cache[plan.threads / 64 - 1]);
    adam8bit_quantized_kernel<G, KEEP><<<grid, plan.threads>>>(master, grad, pbf16, q->d_qt, q->nq, q->nqblocks, q->d_maps, q->d_tabs, plan,
                                                               q8_base_ok(master, grad, pbf16), *a, k, nonfinite);
    KERNEL_CHECK();
}

template <typename G>
static void adam8bit_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const Q8Gpu* q = (const Q8Gpu*)o->own;
    const Adam8bitScalars k = adam8bit_scalars(&o->hyper, a->lr, a->step);
    if (o->paged) {
        // bring the managed state to this GPU ahead of the kernels, on the same (default) stream
        int managed_ok = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&managed_ok, cudaDevAttrConcurrentManagedAccess, o->device));
        cudaMemLocation loc = { cudaMemLocationTypeDevice, o->device };
        for (int b = 0; managed_ok && b < o->layout.nbuf; b++)
            if (o->layout.buf_bytes[b] > 0) CUDA_CHECK(cudaMemPrefetchAsync(o->buf[b], o->layout.buf_bytes[b], loc, 0, 0));
    }
    if (q->nqblocks > 0) {
        const Q8Plan plan = q8_plan(o->hyper.qblock);   // qblock: a power of two >= 64 (the trainer checks)
        if (plan.keep == 1) adam8bit_quantized_launch<G, 1>(q, plan, master, grad, pbf16, a, k, o->d_nonfinite);
        else adam8bit_quantized_launch<G, Q8_KEEP_MAX>(q, plan, master, grad, pbf16, a, k, o->d_nonfinite);
    }
    const Adam8bitFp32Op op = { k, o->d_nonfinite };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

// adam8bit and adamw8bit: the same kernels (only the default wd differs); paged_adamw8bit: managed state.
static const GpuOptimizer OPT_ADAM8BIT_CUDA = GPU_OPTIMIZER(NULL, adam8bit_setup, adam8bit_step_launch);
static const GpuOptimizer OPT_ADAMW8BIT_CUDA = GPU_OPTIMIZER(NULL, adam8bit_setup, adam8bit_step_launch);
static const GpuOptimizer OPT_PAGED_ADAMW8BIT_CUDA = GPU_OPTIMIZER(managed_alloc, paged_adamw8bit_setup, adam8bit_step_launch);

#endif
