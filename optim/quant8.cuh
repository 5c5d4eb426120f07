// optim/quant8.cuh: the GPU side of quant8.h's shared 8-bit pieces: the device tables of the blockwise
// 8-bit optimizers (adam8bit.cuh's 2-state Adam family and the 1-state lion8bit/sgdm8bit), and the one
// kernel template of the 1-state family (lion8bit.cuh and sgdm8bit.cuh instantiate it with their
// per-element update, the function their CPU loop calls through quant8.h's q8_block_1state). Included
// by optim/optim.cuh.
//
// 1-state kernel (q8_1state_kernel), as the CPU's q8_block_1state: one thread block per quantization
// block (grid-stride over the blocks of all quantized tensors: one launch per step), the signed codebook
// in shared memory. blockDim = min(qblock, 256), so each thread owns qblock / blockDim elements strided
// by blockDim (coalesced). Pass 1: dequantize with the old absmax, the element's update (new state and
// new parameter, both kept in registers for the first Q8_REGS elements), max |state| over the block (warp
// shuffles, then the first warp over the warps' maxima: fmaxf skips NaN, as the CPU's compare). Pass 2:
// store the parameter (and its bf16 copy), requantize with the new absmax by bitsandbytes' search
// (q8_quantize_search: the CPU's q8_nearest table gives the same code for every float). Elements past
// Q8_REGS per thread are recomputed in pass 2 from the unchanged inputs, as the CPU does: the same fp32
// operations, the same values. Small tensors (fp32 state1) go through optim.cuh's chunk kernel.
// Non-finite gradients are counted (the CPU's OptStep.nonfinite); the 1-state kernels have no guard.
//
// Bit-exactness: the element updates use only _RN intrinsics on the device (no fused multiply-add) and
// the CPU loop runs without contraction, so states, codes and parameters are the same bits, with one
// exception: a NaN the arithmetic creates (0 * Inf after an Inf gradient reached a block's absmax) has
// the sign bit set on x86 and clear on the GPU, and the sign guard then picks code 0 on one side and
// 255 on the other. Only blocks already destroyed by an Inf gradient are affected.
#ifndef OPTIM_QUANT8_CUH
#define OPTIM_QUANT8_CUH

#include <math.h>
#include "optim/quant8.h"

#define Q8_REGS 8   // elements per thread kept in registers between the two passes

// The 8-bit optimizers' own device tables (GpuOpt.own).
typedef struct {
    int nq;                         // quantized tensors
    size_t nqblocks;                // their quantization blocks, all together
    GpuOptTensor* d_qtensors;       // (nq) the quantized tensors' entries, block0 ascending
    float* d_maps;                  // (512) the signed map (for m and state1), then the unsigned map (for v)
} Q8Gpu;

// Tables of an 8-bit optimizer whose quantized tensors keep `ncodes` code states (u8) followed by as
// many absmax states (f32), and whose small tensors keep `ncodes` fp32 states (adam8bit: 2, the 1-state
// family: 1): the chunk table of the small tensors (optim.cuh's elementwise kernel), the quantized
// tensors with their first block, the codebooks, the non-finite counter.
static void q8_gpu_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led, int ncodes) {
    Q8Gpu* q = (Q8Gpu*)xcalloc(1, sizeof(Q8Gpu));
    o->own = q;
    const size_t qblock = (size_t)o->hyper.qblock;
    int* quant = (int*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &o->layout.tensors[i];
        quant[i] = ts->nstate == 2 * ncodes;
        CHECK(quant[i] || ts->nstate == ncodes);
        for (int s = 0; s < ts->nstate; s++) CHECK(ts->dtype[s] == (quant[i] && s < ncodes ? DT_U8 : DT_F32));
    }
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, quant, led); // chunks: the fp32 tensors
    GpuOptTensor* hq = (GpuOptTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(GpuOptTensor));
    for (int i = 0; i < n; i++) {
        if (!quant[i]) continue;
        hq[q->nq] = ht[i];
        hq[q->nq].block0 = q->nqblocks;
        q->nqblocks += q8_num_blocks(shapes[i].numel, qblock);
        q->nq++;
    }
    q->d_qtensors = (GpuOptTensor*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit tensor table", (size_t)q->nq * sizeof(GpuOptTensor));
    q->d_maps = (float*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit codebooks", 2 * Q8_CODES * sizeof(float));
    o->d_nonfinite = (unsigned long long*)dev_alloc(led, MEM_OTHER, "optimizer non-finite count", sizeof(unsigned long long));
    if (!led->dry) {
        if (q->nq > 0) CUDA_CHECK(cudaMemcpy(q->d_qtensors, hq, (size_t)q->nq * sizeof(GpuOptTensor), cudaMemcpyHostToDevice));
        // the very codebooks the CPU builds (quant8.c), so both sides quantize against the same floats
        CUDA_CHECK(cudaMemcpy(q->d_maps, q8_map_signed()->code, Q8_CODES * sizeof(float), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(q->d_maps + Q8_CODES, q8_map_unsigned()->code, Q8_CODES * sizeof(float), cudaMemcpyHostToDevice));
    }
    free(quant);
    free(ht);
    free(hq);
}

static void q8_1state_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    q8_gpu_setup(o, shapes, param_offsets, n, led, 1);
}

// Op: the optimizer's element update, s_new = op(decays, &p, s_old, g) (lion8bit_update, sgdm8bit_update).
// qt: the quantized tensors (sp[0]: state1 codes, sp[1]: absmax1); map: the signed codebook.
template <typename G, typename Op>
__global__ void __launch_bounds__(256) q8_1state_kernel(float* master, const G* grad, bf16d* pbf16, const GpuOptTensor* qt, int nq,
                                                        size_t nqblocks, const float* map, int qblock, GpuStepArgs a, Op op,
                                                        unsigned long long* nonfinite_count) {
    __shared__ float smap[Q8_CODES];
    __shared__ float red[32];
    __shared__ float new_abs;
    for (int i = threadIdx.x; i < Q8_CODES; i += blockDim.x) smap[i] = map[i];
    __syncthreads();
    const int nthr = blockDim.x, K = qblock / nthr;   // elements per thread
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = nthr >> 5;
    unsigned long long nonfinite = 0;
    for (size_t qb = blockIdx.x; qb < nqblocks; qb += gridDim.x) {
        const GpuOptTensor t = qt[opt_find_unit(qt, nq, &GpuOptTensor::block0, qb)];
        const size_t b = qb - t.block0, lo = b * (size_t)qblock;
        const int len = (int)(t.numel - lo < (size_t)qblock ? t.numel - lo : (size_t)qblock);
        uint8_t* c = (uint8_t*)t.sp[0] + lo;   // (len) state1 codes
        float* am = (float*)t.sp[1] + b;       // this block's absmax1
        const float am_old = *am;
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        // pass 1: every element's new state and parameter, the block max of |new state|
        float s_reg[Q8_REGS], p_reg[Q8_REGS];
        float mx = 0.0f;
#pragma unroll
        for (int j = 0; j < Q8_REGS; j++) {
            const int e = j * nthr + threadIdx.x;
            s_reg[j] = p_reg[j] = 0.0f;
            if (j < K && e < len) {
                const size_t gi = t.param_off + lo + e;
                const float g = opt_grad(grad, gi, a.clip_scale);
                nonfinite += !isfinite(g);
                p_reg[j] = master[gi];
                s_reg[j] = op(t.decay, &p_reg[j], FMUL_RN(smap[c[e]], am_old), g);
                mx = fmaxf(mx, fabsf(s_reg[j]));
            }
        }
        for (int j = Q8_REGS; j < K; j++) {
            const int e = j * nthr + threadIdx.x;
            if (e >= len) break;
            const size_t gi = t.param_off + lo + e;
            const float g = opt_grad(grad, gi, a.clip_scale);
            nonfinite += !isfinite(g);
            float th = master[gi];
            mx = fmaxf(mx, fabsf(op(t.decay, &th, FMUL_RN(smap[c[e]], am_old), g)));
        }
        // block max: warps, then the first warp over the warps' results
        mx = warp_max(mx);
        if (lane == 0) red[warp] = mx;
        __syncthreads(); // also: every thread has read the old absmax before it changes
        if (warp == 0) {
            float x = lane < nwarps ? red[lane] : 0.0f;
            x = warp_max(x);
            if (lane == 0) { new_abs = x; *am = x; }
        }
        __syncthreads();
        const float am_new = new_abs;
        // pass 2: the parameters, and the states requantized with the new absmax
#pragma unroll
        for (int j = 0; j < Q8_REGS; j++) {
            const int e = j * nthr + threadIdx.x;
            if (j < K && e < len) {
                const size_t li = lo + e;
                opt_store(master, pbf16, t.param_off + li, p_reg[j], a.sr, base, li);
                c[e] = q8_quantize_search(smap, 1, s_reg[j], am_new);
            }
        }
        for (int j = Q8_REGS; j < K; j++) {
            const int e = j * nthr + threadIdx.x;
            if (e >= len) break;
            const size_t li = lo + e, gi = t.param_off + li;
            const float g = opt_grad(grad, gi, a.clip_scale);
            float th = master[gi];
            const float s = op(t.decay, &th, FMUL_RN(smap[c[e]], am_old), g);
            opt_store(master, pbf16, gi, th, a.sr, base, li);
            c[e] = q8_quantize_search(smap, 1, s, am_new);
        }
        __syncthreads(); // red / new_abs are reused by the next block
    }
    if (nonfinite) atomicAdd(nonfinite_count, nonfinite);
}

// The small tensors' fp32 state1 through optim.cuh's chunk kernel: Op as above, non-finite gradients counted.
template <typename Op>
struct Q8Fp32Op {
    Op op;
    unsigned long long* nonfinite;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        if (!isfinite(g)) atomicAdd(nonfinite, 1ull);
        float* s = (float*)t.sp[0] + li;   // state1
        *s = op(t.decay, &th, *s, g);
        return th;
    }
};

// One step of a 1-state optimizer: the quantized blocks (one launch), then the small tensors (one launch).
template <typename G, typename Op8, typename Op32>
static void q8_1state_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a, Op8 op8, Op32 op32) {
    const Q8Gpu* q = (const Q8Gpu*)o->own;
    if (q->nqblocks > 0) {
        const int qblock = o->hyper.qblock;
        const int threads = qblock < 256 ? qblock : 256;   // qblock: a power of two >= 64 (the trainer checks)
        const int grid = q->nqblocks < (size_t)OPT_MAX_GRID ? (int)q->nqblocks : OPT_MAX_GRID;
        q8_1state_kernel<G, Op8><<<grid, threads>>>(master, grad, pbf16, q->d_qtensors, q->nq, q->nqblocks, q->d_maps, qblock,
                                                    *a, op8, o->d_nonfinite);
        KERNEL_CHECK();
    }
    const Q8Fp32Op<Op32> op = { op32, o->d_nonfinite };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

#endif
