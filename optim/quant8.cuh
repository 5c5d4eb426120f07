// optim/quant8.cuh: the GPU side of quant8.h's shared 8-bit pieces: the device tables of the blockwise
// 8-bit optimizers (adam8bit.cuh's 2-state Adam family and the 1-state lion8bit/sgdm8bit), the device
// helpers both kernels use, and the one kernel template of the 1-state family (lion8bit.cuh and
// sgdm8bit.cuh instantiate it with their per-element update, the function their CPU loop calls through
// quant8.h's q8_block_1state). Included by optim/optim.cuh.
//
// Why the first kernels were slow (d12, 124.5M params in 148 tensors, bf16 mode, H200 at 4230 GB/s copy:
// adam8bit 4.07 ms = 12% of copy bandwidth, lion8bit 2.65, sgdm8bit 2.73 = 10-16%). The bytes a step
// must move per element: 2-state 16 B (master 4+4, bf16 gradient 2, bf16 copy 2, m and v codes 1+1 each
// way; absmax 8 B per block: 0.03 B/element), 1-state 14 B. The first kernels moved about those bytes
// (each byte once at qblock <= 2048) but could not keep the memory system busy:
//  - one thread per element (blockDim 256 = qblock), so a quantization block was a whole thread block that
//    lived for one short, latency-bound sequence per block: the tensor search (opt_find_unit: 7-8
//    dependent loads of a 96-byte GpuOptTensor table), the old absmax, then the element loads (1-byte and
//    2-byte loads, one element per thread: 10 B in flight per thread), two __syncthreads around the block
//    reduction (whose cost, 10 shuffles and 10 max per state per thread, fell on ONE element each), the
//    master loaded only after the barrier (a second exposed DRAM round trip), then the requantization;
//  - bitsandbytes' search per code: 8 dependent shared-memory loads (7 steps + a midpoint pair),
//    divergent addresses after the first steps (bank conflicts), about 40 instructions with the
//    division, twice per element for the 2-state kernel;
//  - 64-bit index math per element (size_t offsets, strided j * blockDim + tid), int64 multiplies;
//  - grid = min(blocks, 2112) with 256-thread blocks: at ~70 registers about 3 blocks per SM were
//    resident, each alternating "wait for DRAM" and "compute/barrier" with little overlap.
//   Estimated per element: 2-state ~200 instructions (~110 search + divisions, ~25 reduction, ~20 index
//   and table, the rest the update), 1-state ~110; and ~2-3 DRAM round trips per 256 elements per thread
//   block with only ~2.5 KB in flight per block. At 200 instructions x 124.5M elements the 2-state step
//   needs ~25G thread-instructions (~0.75 ms of the H200's whole issue rate even if perfectly overlapped),
//   and the latency chain per block (~3000-4000 cycles for 256 elements) gave the measured 4 ms.
//
// The new plan (optim/quant8_plan.h has the index rules, shared with test/test_optim_q8_plan.c):
//  - persistent grid: occupancy x SMs thread blocks of 256 threads (64..256 for qblock > 256), each
//    walking consecutive quantization blocks; codebooks, midpoints and the lookup tables loaded into
//    shared memory once per thread block;
//  - a team of 8/16/32 lanes per block for qblock 64/128/256 (a warp does 4/2/1 blocks at once), every
//    lane 8 consecutive elements: one 16-byte load of bf16 gradients, two of master, one 8-byte load per
//    code state, one 16-byte bf16 store: ~128 B in flight per lane and all loads issued before any
//    arithmetic (master included); the absmax a butterfly of xor-shuffles inside the team (3-5 per 8
//    elements, no barrier); qblock > 256: the thread block is the team, one __syncthreads per block
//    (double-buffered reduction slots); rounds past `keep` (qblock > 4096) recomputed from memory in
//    pass 2 as the CPU does;
//  - the tensor of a block by a forward cursor over a compact 64-byte Q8Tensor table (one L1 load per
//    block in the common case), 32-bit element offsets inside a block;
//  - the code by q8_quantize_tab: the CPU's bucket table restricted to |x| in [2^-24, 1] (6 KB per map in
//    shared memory): 2 shared loads instead of 8, the same answer as bitsandbytes' search (the table is
//    the CPU's q8_nearest, checked against the search in test_optim_8bit and test_optim_q8_plan);
//  - scalar fallback (element by element, the same arithmetic) for tensors at odd offsets, code pointers
//    not 8-byte aligned, short last blocks and tensor tails.
//   Estimated per element: 2-state ~100 instructions (2 x (division ~9 + table ~12 + guard 4), update
//   with its sqrt and division ~30, dequantize 6, the rest loads/stores/packing), 1-state ~50; memory
//   16 B and 14 B per element, each byte once at qblock <= 4096. Expected at d12 on an H200 (bytes at
//   ~3.4 TB/s achievable): 2-state 1.99 GB -> ~0.59 ms, 1-state 1.74 GB -> ~0.51 ms; the 2-state
//   kernel is close to instruction-bound as well (~12.5G thread-instructions ~ 0.4 ms of issue).
//
// Bit-exactness: the element updates use only _RN intrinsics on the device (no fused multiply-add) and
// the CPU loop runs without contraction, so states, codes and parameters are the same bits, with one
// exception: a NaN the arithmetic creates (0 * Inf after an Inf gradient reached a block's absmax) has
// the sign bit set on x86 and clear on the GPU, and the sign guard then picks code 0 on one side and
// 255 on the other. Only blocks already destroyed by an Inf gradient are affected. Max is exact in any
// order (fmaxf skips NaN as the CPU's compare does), so the butterfly gives the CPU's absmax.
// Non-finite gradients are counted (the CPU's OptStep.nonfinite); the 1-state kernels have no guard.
// Small tensors (fp32 state) go through optim.cuh's chunk kernel.
#ifndef OPTIM_QUANT8_CUH
#define OPTIM_QUANT8_CUH

#include <math.h>
#include <stdint.h>
#include "optim/quant8.h"
#include "optim/quant8_plan.h"

// The 8-bit optimizers' own device tables (GpuOpt.own).
typedef struct {
    int nq;                         // quantized tensors
    size_t nqblocks;                // their quantization blocks, all together
    Q8Tensor* d_qt;                 // (nq) the quantized tensors, block0 ascending
    float* d_maps;                  // (1024) signed codes (m, state1), unsigned codes (v), signed mids, unsigned mids
    uint8_t* d_tabs;                // (2 * Q8_TAB_BYTES) the lookup tables (quant8_plan.h): signed, unsigned
} Q8Gpu;

// Tables of an 8-bit optimizer whose quantized tensors keep `ncodes` code states (u8) followed by as
// many absmax states (f32), and whose small tensors keep `ncodes` fp32 states (adam8bit: 2, the 1-state
// family: 1): the chunk table of the small tensors (optim.cuh's elementwise kernel), the quantized
// tensors with their first block, the codebooks, the lookup tables, the non-finite counter.
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
    Q8Tensor* hq = (Q8Tensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(Q8Tensor));
    for (int i = 0; i < n; i++) {
        if (!quant[i]) continue;
        Q8Tensor* t = &hq[q->nq++];
        t->param_off = ht[i].param_off;
        t->numel = ht[i].numel;
        t->block0 = q->nqblocks;
        t->decay = ht[i].decay;
        t->vec = t->param_off % Q8_VEC == 0;
        for (int s = 0; s < ncodes; s++) {
            t->code[s] = (uint8_t*)ht[i].sp[s];
            t->absmax[s] = (float*)ht[i].sp[ncodes + s];
            t->vec = t->vec && (uintptr_t)t->code[s] % 8 == 0;
        }
        q->nqblocks += q8_num_blocks(shapes[i].numel, qblock);
    }
    q->d_qt = (Q8Tensor*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit tensor table", (size_t)q->nq * sizeof(Q8Tensor));
    q->d_maps = (float*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit codebooks", 4 * Q8_CODES * sizeof(float));
    q->d_tabs = (uint8_t*)dev_alloc(led, MEM_OTHER, "optimizer 8-bit lookup tables", 2 * Q8_TAB_BYTES);
    o->d_nonfinite = (unsigned long long*)dev_alloc(led, MEM_OTHER, "optimizer non-finite count", sizeof(unsigned long long));
    if (!led->dry) {
        if (q->nq > 0) CUDA_CHECK(cudaMemcpy(q->d_qt, hq, (size_t)q->nq * sizeof(Q8Tensor), cudaMemcpyHostToDevice));
        // the very codebooks, midpoints and bucket answers the CPU builds (quant8.c), so both sides
        // quantize against the same floats
        const Q8Map* maps[2] = { q8_map_signed(), q8_map_unsigned() };
        float* hm = (float*)xmalloc(4 * Q8_CODES * sizeof(float));
        uint8_t* ht8 = (uint8_t*)xmalloc(2 * Q8_TAB_BYTES);
        for (int k = 0; k < 2; k++) {
            memcpy(hm + k * Q8_CODES, maps[k]->code, Q8_CODES * sizeof(float));
            memcpy(hm + (2 + k) * Q8_CODES, maps[k]->mid, Q8_CODES * sizeof(float));
            q8_tab_build(maps[k], ht8 + k * Q8_TAB_BYTES);
        }
        CUDA_CHECK(cudaMemcpy(q->d_maps, hm, 4 * Q8_CODES * sizeof(float), cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(q->d_tabs, ht8, 2 * Q8_TAB_BYTES, cudaMemcpyHostToDevice));
        free(hm);
        free(ht8);
    }
    free(quant);
    free(ht);
    free(hq);
}

static void q8_1state_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    q8_gpu_setup(o, shapes, param_offsets, n, led, 1);
}

// ---- device helpers of both kernels (the plan: quant8_plan.h) ----------------------------------------
// One map in shared memory: codes, midpoints, lookup table.
struct Q8SMap {
    float code[Q8_CODES];
    float mid[Q8_CODES];
    __align__(16) uint8_t tab[Q8_TAB_BYTES];
};

// Map k (0 signed, 1 unsigned) from the device tables into shared memory (the caller syncs).
__device__ __forceinline__ void q8_load_smap(Q8SMap* sm, const float* maps, const uint8_t* tabs, int k) {
    for (int i = threadIdx.x; i < Q8_CODES; i += blockDim.x) {
        sm->code[i] = maps[k * Q8_CODES + i];
        sm->mid[i] = maps[(2 + k) * Q8_CODES + i];
    }
    const uint32_t* src = (const uint32_t*)(tabs + k * Q8_TAB_BYTES);
    for (int i = threadIdx.x; i < Q8_TAB_BYTES / 4; i += blockDim.x) ((uint32_t*)sm->tab)[i] = src[i];
}

__device__ __forceinline__ uint8_t q8_quantize_smap(const Q8SMap* sm, int sign_guard, float s, float absmax) {
    return q8_quantize_tab(sm->tab, sm->mid, sm->code, sign_guard, s, absmax);
}

// 8 gradients from flat index gi (clipped as opt_grad), nv of them valid (the rest 0): one 16-byte load of
// bf16 (two of fp32) when vec.
__device__ __forceinline__ void q8_load_grad8(const bf16d* grad, size_t gi, int vec, int nv, float clip, float g[Q8_VEC]) {
    if (vec) {
        const uint4 u = *(const uint4*)(grad + gi);
        const uint32_t w[4] = { u.x, u.y, u.z, u.w };
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) g[j] = __uint_as_float((j & 1) ? (w[j >> 1] & 0xFFFF0000u) : (w[j >> 1] << 16));
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) g[j] = j < nv ? ldf(grad[gi + j]) : 0.0f;
    }
    if (clip != 1.0f) {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) g[j] = __fmul_rn(g[j], clip); // never fused: the CPU rounds this product
    }
}
__device__ __forceinline__ void q8_load_grad8(const float* grad, size_t gi, int vec, int nv, float clip, float g[Q8_VEC]) {
    if (vec) {
        const float4 a = *(const float4*)(grad + gi), b = *(const float4*)(grad + gi + 4);
        g[0] = a.x; g[1] = a.y; g[2] = a.z; g[3] = a.w; g[4] = b.x; g[5] = b.y; g[6] = b.z; g[7] = b.w;
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) g[j] = j < nv ? grad[gi + j] : 0.0f;
    }
    if (clip != 1.0f) {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) g[j] = __fmul_rn(g[j], clip);
    }
}

__device__ __forceinline__ void q8_load_f32x8(const float* x, size_t gi, int vec, int nv, float v[Q8_VEC]) {
    if (vec) {
        const float4 a = *(const float4*)(x + gi), b = *(const float4*)(x + gi + 4);
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) v[j] = j < nv ? x[gi + j] : 0.0f;
    }
}

__device__ __forceinline__ void q8_load_u8x8(const uint8_t* c, int vec, int nv, uint8_t v[Q8_VEC]) {
    if (vec) {
        const uint2 u = *(const uint2*)c;
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) v[j] = (uint8_t)(((j < 4 ? u.x : u.y) >> (8 * (j & 3))) & 0xFFu);
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) v[j] = j < nv ? c[j] : 0;
    }
}

__device__ __forceinline__ void q8_store_u8x8(uint8_t* c, int vec, int nv, const uint8_t v[Q8_VEC]) {
    if (vec) {
        uint2 u;
        u.x = (uint32_t)v[0] | ((uint32_t)v[1] << 8) | ((uint32_t)v[2] << 16) | ((uint32_t)v[3] << 24);
        u.y = (uint32_t)v[4] | ((uint32_t)v[5] << 8) | ((uint32_t)v[6] << 16) | ((uint32_t)v[7] << 24);
        *(uint2*)c = u;
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++) if (j < nv) c[j] = v[j];
    }
}

// The updated master values of 8 elements from gi (li: the first one's index in its tensor, for the
// stochastic-rounding bits) and their bf16 copy (pbf16 NULL in fp32 mode); elements whose bit in `skip`
// is set are left alone (adam8bit's non-finite gradients), which forces the scalar stores.
__device__ __forceinline__ void q8_store_param8(float* master, bf16d* pbf16, size_t gi, size_t li, int vec, int nv,
                                                const float th[Q8_VEC], int sr, uint64_t base, unsigned skip) {
    if (vec && !skip) {
        *(float4*)(master + gi) = make_float4(th[0], th[1], th[2], th[3]);
        *(float4*)(master + gi + 4) = make_float4(th[4], th[5], th[6], th[7]);
        if (pbf16) {
            uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                w[j] = (uint32_t)master_to_bf16(th[2 * j], sr, base, li + 2 * j) |
                       ((uint32_t)master_to_bf16(th[2 * j + 1], sr, base, li + 2 * j + 1) << 16);
            *(uint4*)(pbf16 + gi) = make_uint4(w[0], w[1], w[2], w[3]);
        }
    } else {
#pragma unroll
        for (int j = 0; j < Q8_VEC; j++)
            if (j < nv && !((skip >> j) & 1u)) opt_store(master, pbf16, gi + j, th[j], sr, base, li + j);
    }
}

// Max over the team (quant8_plan.h's order: a butterfly of xor-shuffles from q8_first_xor down to 1, then,
// for a block team, the warps' results from shared memory, warp 0 first). NS values at once; red:
// NS x 8 floats of shared memory for this iteration's parity. Every thread of the warp (and of the
// thread block for a block team) calls it.
template <int NS>
__device__ __forceinline__ void q8_team_max(float (&x)[NS], const Q8Plan& p, float (*red)[Q8_THREADS / 32]) {
    for (int o = q8_first_xor(&p); o > 0; o >>= 1)
#pragma unroll
        for (int s = 0; s < NS; s++) x[s] = fmaxf(x[s], __shfl_xor_sync(0xffffffffu, x[s], o));
    if (p.block_team) {
        if ((threadIdx.x & 31) == 0)
#pragma unroll
            for (int s = 0; s < NS; s++) red[s][threadIdx.x >> 5] = x[s];
        __syncthreads(); // also: every thread has read the old absmax before thread 0 replaces it
#pragma unroll
        for (int s = 0; s < NS; s++) {
            float y = red[s][0];
            for (int w = 1; w < p.threads / 32; w++) y = fmaxf(y, red[s][w]);
            x[s] = y;
        }
    }
}

// Thread blocks for a persistent kernel: as many as fit on the device at once, at most `units`.
template <typename Kernel>
static int q8_persistent_grid(Kernel kernel, int threads, size_t units, int* cache) {
    if (*cache <= 0) {
        int dev = 0, nsm = 0, per_sm = 0;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&nsm, cudaDevAttrMultiProcessorCount, dev));
        CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
        *cache = (per_sm > 0 ? per_sm : 1) * (nsm > 0 ? nsm : 1);
    }
    return units < (size_t)*cache ? (int)units : *cache;
}

// The flat buffers allow 16-byte vector access (cudaMalloc'd buffers always do).
static int q8_base_ok(const void* master, const void* grad, const void* pbf16) {
    return ((uintptr_t)master % 16 | (uintptr_t)grad % 16 | (uintptr_t)pbf16 % 16) == 0;
}

// ---- the 1-state kernel -----------------------------------------------------------------------------
// Op: the optimizer's element update, s_new = op(decays, &p, s_old, g) (lion8bit_update, sgdm8bit_update).
// KEEP: rounds kept in registers (plan.keep). Per team and quantization block, as q8_block_1state:
// pass 1 dequantizes with the old absmax, updates state and parameter (kept in registers), the team max
// of |new state|; pass 2 stores the parameters and requantizes with the new absmax; rounds past KEEP are
// recomputed in pass 2 from the unchanged inputs (the same fp32 operations, the same values).
template <typename G, typename Op, int KEEP>
__global__ void __launch_bounds__(Q8_THREADS, KEEP == 1 ? 3 : 1) q8_1state_kernel(float* master, const G* grad, bf16d* pbf16, const Q8Tensor* qt, int nq,
                                                               size_t nqblocks, const float* maps, const uint8_t* tabs, Q8Plan plan,
                                                               int base_ok, GpuStepArgs a, Op op, unsigned long long* nonfinite_count) {
    __shared__ Q8SMap sm;
    __shared__ float red[2][1][Q8_THREADS / 32];
    q8_load_smap(&sm, maps, tabs, 0);
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
        float am_old = 0.0f;
        if (active) {
            ti = q8_cursor(qt, nq, ti, qb);
            t = qt[ti];
            b = qb - t.block0;
            len = q8_block_len(t.numel, Q, b);
            am_old = t.absmax[0][b];
        }
        const size_t lo = b * (size_t)Q;
        float s_reg[KEEP][Q8_VEC], p_reg[KEEP][Q8_VEC];
        float mx[1] = { 0.0f };
        // pass 1: new states and parameters of the kept rounds, max |new state| over all rounds
#pragma unroll
        for (int r = 0; r < KEEP; r++) {
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++) s_reg[r][j] = p_reg[r][j] = 0.0f;
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (r < plan.rounds && nv > 0) {
                const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
                const size_t gi = t.param_off + lo + e0;
                float g[Q8_VEC];
                uint8_t c[Q8_VEC];
                q8_load_grad8(grad, gi, vec, nv, a.clip_scale, g);
                q8_load_f32x8(master, gi, vec, nv, p_reg[r]);
                q8_load_u8x8(t.code[0] + lo + e0, vec, nv, c);
#pragma unroll
                for (int j = 0; j < Q8_VEC; j++)
                    if (j < nv) {
                        nonfinite += !isfinite(g[j]);
                        s_reg[r][j] = op(t.decay, &p_reg[r][j], FMUL_RN(sm.code[c[j]], am_old), g[j]);
                        mx[0] = fmaxf(mx[0], fabsf(s_reg[r][j]));
                    }
            }
        }
        for (int r = KEEP; r < plan.rounds; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (nv <= 0) break;
            const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
            const size_t gi = t.param_off + lo + e0;
            float g[Q8_VEC], p[Q8_VEC];
            uint8_t c[Q8_VEC];
            q8_load_grad8(grad, gi, vec, nv, a.clip_scale, g);
            q8_load_f32x8(master, gi, vec, nv, p);
            q8_load_u8x8(t.code[0] + lo + e0, vec, nv, c);
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++)
                if (j < nv) {
                    nonfinite += !isfinite(g[j]);
                    mx[0] = fmaxf(mx[0], fabsf(op(t.decay, &p[j], FMUL_RN(sm.code[c[j]], am_old), g[j])));
                }
        }
        q8_team_max<1>(mx, plan, red[parity]);
        const float am_new = mx[0];
        if (active && tl == 0) t.absmax[0][b] = am_new;
        if (!active) continue;
        const uint64_t srb = a.sr ? sr_stream(a.seed, a.step, t.param_off) : 0;
        // pass 2: the parameters, and the states requantized with the new absmax
#pragma unroll
        for (int r = 0; r < KEEP; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (r < plan.rounds && nv > 0) {
                const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
                uint8_t c[Q8_VEC];
#pragma unroll
                for (int j = 0; j < Q8_VEC; j++) c[j] = q8_quantize_smap(&sm, 1, s_reg[r][j], am_new);
                q8_store_param8(master, pbf16, t.param_off + lo + e0, lo + e0, vec, nv, p_reg[r], a.sr, srb, 0u);
                q8_store_u8x8(t.code[0] + lo + e0, vec, nv, c);
            }
        }
        for (int r = KEEP; r < plan.rounds; r++) {
            const int e0 = q8_elem0(&plan, r, tl), nv = len - e0;
            if (nv <= 0) break;
            const int vec = q8_vec_ok(&t, base_ok, Q, b, e0);
            const size_t gi = t.param_off + lo + e0;
            float g[Q8_VEC], p[Q8_VEC];
            uint8_t c[Q8_VEC];
            q8_load_grad8(grad, gi, vec, nv, a.clip_scale, g);
            q8_load_f32x8(master, gi, vec, nv, p);
            q8_load_u8x8(t.code[0] + lo + e0, vec, nv, c);
#pragma unroll
            for (int j = 0; j < Q8_VEC; j++) {
                const float s = op(t.decay, &p[j], FMUL_RN(sm.code[c[j]], am_old), g[j]);
                c[j] = q8_quantize_smap(&sm, 1, s, am_new);
            }
            q8_store_param8(master, pbf16, gi, lo + e0, vec, nv, p, a.sr, srb, 0u);
            q8_store_u8x8(t.code[0] + lo + e0, vec, nv, c);
        }
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

template <typename G, typename Op8, int KEEP>
static void q8_1state_launch_keep(const Q8Gpu* q, const Q8Plan& plan, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a,
                                  Op8 op8, unsigned long long* nonfinite) {
    static int cache[Q8_THREADS / 64] = { 0 };   // per instantiation and blockDim (64, 128, 256): blocks that fit on the device
    const int grid = q8_persistent_grid(q8_1state_kernel<G, Op8, KEEP>, plan.threads, (q->nqblocks + plan.tpb - 1) / plan.tpb, &cache[plan.threads / 64 - 1]);
    q8_1state_kernel<G, Op8, KEEP><<<grid, plan.threads>>>(master, grad, pbf16, q->d_qt, q->nq, q->nqblocks, q->d_maps, q->d_tabs, plan,
                                                           q8_base_ok(master, grad, pbf16), *a, op8, nonfinite);
    KERNEL_CHECK();
}

// One step of a 1-state optimizer: the quantized blocks (one launch), then the small tensors (one launch).
template <typename G, typename Op8, typename Op32>
static void q8_1state_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a, Op8 op8, Op32 op32) {
    const Q8Gpu* q = (const Q8Gpu*)o->own;
    if (q->nqblocks > 0) {
        const Q8Plan plan = q8_plan(o->hyper.qblock);   // qblock: a power of two >= 64 (the trainer checks)
        if (plan.keep == 1) q8_1state_launch_keep<G, Op8, 1>(q, plan, master, grad, pbf16, a, op8, o->d_nonfinite);
        else q8_1state_launch_keep<G, Op8, Q8_KEEP_MAX>(q, plan, master, grad, pbf16, a, op8, o->d_nonfinite);
    }
    const Q8Fp32Op<Op32> op = { op32, o->d_nonfinite };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

#endif
