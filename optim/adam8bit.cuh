// optim/adam8bit.cuh: the CUDA side of optim/adam8bit.c (`-opt adam8bit`, `-opt adamw8bit`,
// `-opt paged_adamw8bit`): block-wise 8-bit m and v (optim/quant8.h), the math of optim/adam8bit.h (the
// functions the CPU step calls), and paged_adamw8bit's managed-memory state. Included by optim/optim.cuh.
//
// Quantized tensors: one thread block per quantization block (a grid-stride loop over all blocks of
// all quantized tensors: one launch per step). The two 256-entry codebooks are loaded into shared
// memory once per thread block. Per block, as adam8bit_block(): dequantize with the old absmax, update
// v then m (a non-finite g zeroes both and is counted), block max |m|, |v| of the updated moments (a
// block reduction), the parameter update from the fp32 moments, requantize with the new absmax by
// bitsandbytes' search (q8_quantize_search, the same answer as the CPU's q8_nearest table) plus the
// sign guard. Each thread keeps up to Q8_REGS elements in registers between the two passes; blocks larger
// than Q8_REGS * blockDim recompute the rest, as the CPU does (the same fp32 operations give the same values).
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
#include "optim/quant8.cuh"   // Q8Gpu, q8_gpu_setup, Q8_REGS

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

// adam8bit on the quantized tensors: one thread block per quantization block (grid-stride over the
// blocks of all quantized tensors, found by binary search on block0), codebooks in shared memory.
// blockDim = min(qblock, 256), so each thread owns qblock / blockDim elements, strided by blockDim
// (coalesced); the first Q8_REGS of them stay in registers between the passes, the rest are recomputed.
template <typename G>
__global__ void __launch_bounds__(256) adam8bit_quantized_kernel(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor* qt,
                                                          int nq, size_t nqblocks, const float* maps, int qblock, GpuStepArgs a,
                                                          Adam8bitScalars k, unsigned long long* nonfinite_count) {
    __shared__ float smap[Q8_CODES], svmap[Q8_CODES];
    __shared__ float red_m[32], red_v[32];
    __shared__ float new_abs[2];
    for (int i = threadIdx.x; i < Q8_CODES; i += blockDim.x) { smap[i] = maps[i]; svmap[i] = maps[Q8_CODES + i]; }
    __syncthreads();
    const int Q = qblock, nthr = blockDim.x, K = Q / nthr;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = nthr >> 5;
    unsigned long long nonfinite = 0;
    for (size_t qb = blockIdx.x; qb < nqblocks; qb += gridDim.x) {
        const GpuOptTensor t = qt[opt_find_unit(qt, nq, &GpuOptTensor::block0, qb)];
        const size_t b = qb - t.block0, lo = b * (size_t)Q;
        const int len = (int)(t.numel - lo < (size_t)Q ? t.numel - lo : (size_t)Q);
        uint8_t* cm = (uint8_t*)t.sp[0] + lo;  // (len) m codes
        uint8_t* cv = (uint8_t*)t.sp[1] + lo;  // (len) v codes
        float* am = (float*)t.sp[2] + b;       // this block's m absmax
        float* av = (float*)t.sp[3] + b;       // this block's v absmax
        const float am_old = *am, av_old = *av;
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
                adam8bit_moments(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &mr[j], &vr[j]);
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
            adam8bit_moments(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &m, &v);
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
                    const float th = adam8bit_param(k, t.decay, master[gi], mr[j], vr[j]);
                    opt_store(master, pbf16, gi, th, a.sr, base, li);
                } else {
                    nonfinite++;
                }
                cm[e] = q8_quantize_search(smap, 1, mr[j], am_new);
                cv[e] = q8_quantize_search(svmap, 0, vr[j], av_new);
            }
        }
        for (int j = Q8_REGS; j < K; j++) {
            const int e = j * nthr + threadIdx.x;
            if (e >= len) break;
            const size_t li = lo + e, gi = t.param_off + li;
            float g = ldf(grad[gi]);
            if (a.clip_scale != 1.0f) g = g * a.clip_scale;
            float m, v;
            adam8bit_moments(k, smap, svmap, g, cm[e], cv[e], am_old, av_old, &m, &v);
            if (isfinite(g)) {
                const float th = adam8bit_param(k, t.decay, master[gi], m, v);
                opt_store(master, pbf16, gi, th, a.sr, base, li);
            } else {
                nonfinite++;
            }
            cm[e] = q8_quantize_search(smap, 1, m, am_new);
            cv[e] = q8_quantize_search(svmap, 0, v, av_new);
        }
        __syncthreads(); // red_m / new_abs are reused by the next block
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
        const int qblock = o->hyper.qblock;
        const int threads = qblock < 256 ? qblock : 256;
        const int grid = q->nqblocks < (size_t)OPT_MAX_GRID ? (int)q->nqblocks : OPT_MAX_GRID;
        adam8bit_quantized_kernel<G><<<grid, threads>>>(master, grad, pbf16, q->d_qtensors, q->nq, q->nqblocks, q->d_maps,
                                                        qblock, *a, k, o->d_nonfinite);
        KERNEL_CHECK();
    }
    const Adam8bitFp32Op op = { k, o->d_nonfinite };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

// adam8bit and adamw8bit: the same kernels (only the default wd differs); paged_adamw8bit: managed state.
static const GpuOptimizer OPT_ADAM8BIT_CUDA = GPU_OPTIMIZER(NULL, adam8bit_setup, adam8bit_step_launch);
static const GpuOptimizer OPT_ADAMW8BIT_CUDA = GPU_OPTIMIZER(NULL, adam8bit_setup, adam8bit_step_launch);
static const GpuOptimizer OPT_PAGED_ADAMW8BIT_CUDA = GPU_OPTIMIZER(managed_alloc, paged_adamw8bit_setup, adam8bit_step_launch);

#endif
