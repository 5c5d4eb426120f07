// optim/adamw4bit.cuh: the CUDA side of optim/adamw4bit.c (`-opt adamw4bit`): m in 4 bits blockwise by
// 128 (signed dynamic map), v in 4 bits (linear map without zero) scaled rank-1 (min of its row's and its
// column's max) for a matrix, blockwise for a vector; two codes per byte. The math is adamw4bit.h's, the
// functions the CPU loop calls. Included by optim/optim.cuh.
//
// Why more than one pass: a matrix element's new v code needs the NEW row max and the NEW column max of
// v, which depend on every element of its row and of its column, while decoding the old v needs the OLD
// maxima. So, per step, over all tensors (no host sync):
//   0. cudaMemsetAsync: the scratch copies of the new row and column maxima to 0 (all matrices).
//   1. a4_stats_kernel (optim/adamw4bit_plan.h has the plan, test_optim_q4_plan replays it on the host),
//      a persistent grid over TILES of 64 rows x 256 columns of the rank-1 matrices: warp w takes rows
//      r0+w, r0+w+8, ... (4 loaded before any is used), lane l the columns c0+8l..c0+8l+7 of each (one
//      16-byte bf16 gradient load and one 4-byte load of 8 v codes where the group is whole and aligned,
//      else element by element), decoding the old v with the old row/column maxima and forming the new
//      v (adamw4bit_moments; the new m is dead code here). Row max: the lane's 8, then 5 xor-shuffles per
//      warp row (~1.3 instructions per element), one atomicMax per row per column tile by lane 0. Column
//      maxima: 8 running maxima per lane, the 8 warps' folded in shared memory in warp order, one
//      atomicMax per column per row tile. A max of non-NaN values is exact in any order; a4_fold skips a
//      NaN as the CPU's `a > max` compare does and keeps +Inf, so every max is >= +0 and never NaN, and
//      an unsigned-integer atomicMax on the float's bits gives the CPU's value exactly (deterministic).
//   2. a4_block_kernel, one WARP per 128-element block (m's scale block) of every quantized tensor, a
//      persistent grid of 256-thread blocks, lane l owning elements 4l..4l+3 (whole bytes of the packed
//      codes): decode m and v with the old scales, the new m and v, the block max |m| (and |v| for a
//      vector: its v scale) by xor-shuffles, the parameter update from the fp32 moments, then the new
//      codes: m with the block's new scale, v with min(new row max, new column max) from step 1 (or the
//      vector's new block scale), by q4_nearest_bs. The old m scale (and a vector's old v scale) is read by
//      every lane before the shuffles and replaced by lane 0 after them.
//   3. cudaMemcpyAsync: the new row and column maxima from scratch into the v_row and v_col states
//      (every step-2 block reads the old ones, so they are replaced only when all blocks are done).
//   4. the small tensors (numel <= 4096, fp32 m and v): optim.cuh's chunk kernel.
// Every operation is an _RN intrinsic in the CPU's order (adamw4bit.h), so the moments, the scales, the
// codes and the parameters are the CPU's bits. Non-finite gradients are counted (the CPU's
// OptStep.nonfinite); as on the CPU, they propagate.
// Why step 2 was slow (d12 on an H200: 3.17 ms for the whole step, goal <= 0.6): bytes per element 14
// (master 8, bf16 gradient 2, bf16 copy 2, m and v codes 0.5 + 0.5 each way) plus the statistics pass
// (gradient 2 + v codes 0.5 for the rank-1 matrices): 16.5 B, 2.05 GB at d12, ~0.60 ms at 3.4 TB/s. The
// first a4_block_kernel spent ~250 instructions per element: a thread per element, 128-thread blocks with
// three __syncthreads each, a 64-bit division and modulo per element for its row and column, the tensor
// found by a binary search per block with every field of the table re-read through a reference, and
// q4_nearest's 15 comparisons against shared-memory midpoints twice per element, plus three IEEE
// divisions and a square root. Now: ~70 per element (4 comparisons per code, a 32-bit division per 4
// elements, shuffles instead of barriers, vector loads of master and gradient). The statistics pass was
// a thread per column walking 32 rows of 256 columns (one byte-wide code load and one 2-byte gradient
// load per element, a 5-shuffle warp max per row of 256 elements: ~15 instructions per element): now 8 columns
// per lane with 16-byte loads (above). At d12 (bf16, 124.5M parameters, all but 0.1M in rank-1
// matrices): 7,590 tiles (~19 per thread block at 3 blocks of 256 threads per SM on 132 SMs), 0.49M row
// and 1.94M column atomics; bytes 311 MB (step 1) + 1.74 GB (step 2) = 2.05 GB: 0.49 ms at 4.23 TB/s,
// ~0.55 ms at 90% of it, plus ~6 back-to-back launches. Registers (nvcc 13.0, sm_90): the bf16 stats
// kernel 80 (no spill, 3 blocks/SM), fp32 112 (2 blocks/SM); the block kernel 64.
// Scratch (device, MEM_OTHER): the new maxima, 4 * (rows + cols) bytes per matrix, the same bytes as its
// v_row and v_col states, laid out as those two state buffers so step 3 is one copy each.
#ifndef OPTIM_ADAMW4BIT_CUH
#define OPTIM_ADAMW4BIT_CUH

#include <string.h>
#include "optim/adamw4bit.h"
#include "optim/adamw4bit_plan.h"
#include "optim/quant4.h"
#include "optim/quant8.cuh"   // q8_persistent_grid, q8_base_ok

typedef struct {
    Q4Map m, v;            // the signed map (m), the linear map (v)
} A4Maps;

typedef struct {
    int nq;                // quantized tensors
    size_t nblocks, ntiles;
    A4PlanTensor* d_qt;    // (nq)
    void* scratch;         // the new row maxima (as the v_row buffer), then the new column maxima (as v_col)
    size_t row_bytes, col_bytes;
    int row_buf, col_buf;  // the v_row and v_col state buffers (-1: no matrix)
} A4Gpu;

__device__ __forceinline__ void a4_atomic_max(float* addr, float x) {
    // x >= +0 and not NaN (a4_fold): the order of the bits as unsigned integers is the order of the floats
    if (x > 0.0f) atomicMax((unsigned int*)addr, __float_as_uint(x));
}

// Step 1 (adamw4bit_plan.h): one tile of a rank-1 matrix per iteration of a persistent grid. Lane l's
// group: columns c..c+7 of rows r0+w, r0+w+8, ..., A4_SBATCH rows loaded before any is used.
template <typename G>
__global__ void __launch_bounds__(A4_THREADS, sizeof(G) == 2 ? 3 : 2) a4_stats_kernel(const G* grad, const A4PlanTensor* qt, int nq, size_t ntiles, Adam4Scalars k,
                                                              A4Maps maps, float clip_scale, int base_ok) {
    __shared__ float scol[A4_WARPS][A4_TILE_COLS];   // each warp's column maxima of the tile
    __shared__ Q4Map svmap;
    if (threadIdx.x == 0) svmap = maps.v;
    __syncthreads();
    constexpr int A4_RAW_WORDS = A4_SVEC * (int)sizeof(G) / 4;   // 32-bit words of a group's gradients
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int ti = 0;
    for (size_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        ti = a4_cursor_tile(qt, nq, ti, tile);
        const A4PlanTensor* T = &qt[ti];
        const A4Tile x = a4_tile(T, tile);
        const size_t cols = T->cols, c = a4_tile_col(&x, lane);
        const int n = a4_group_len(c, cols), vec = a4_stats_vec(T, base_ok, n);
        const G* gt = grad + T->param_off;
        const uint8_t* vq = T->vq;
        float vc[A4_SVEC], cmax[A4_SVEC];   // old column maxima of the group, the lane's new ones
#pragma unroll
        for (int j = 0; j < A4_SVEC; j++) { vc[j] = j < n ? T->v_b[c + j] : 0.0f; cmax[j] = 0.0f; }
        for (int k0 = 0; a4_tile_row(&x, warp, k0) < x.r1; k0 += A4_SBATCH) {
            // the batch's gradients as loaded (bf16: two per word, converted where used), codes, old row maxima
            uint32_t raw[A4_SBATCH][A4_RAW_WORDS];
            uint32_t cw[A4_SBATCH];   // the group's 8 codes, element j in bits 4j..4j+3
            float vr[A4_SBATCH];
#pragma unroll
            for (int b = 0; b < A4_SBATCH; b++) {
                const size_t i = a4_tile_row(&x, warp, k0 + b), e = i * cols + c;
                cw[b] = 0u;
                vr[b] = 0.0f;
#pragma unroll
                for (int q = 0; q < A4_RAW_WORDS; q++) raw[b][q] = 0u;
                if (i >= x.r1 || n == 0) continue;
                vr[b] = T->v_a[i];
                if (vec) {
                    cw[b] = *(const uint32_t*)(vq + (e >> 1));
                    if constexpr (sizeof(G) == 2) {
                        const uint4 u = *(const uint4*)(gt + e);
                        raw[b][0] = u.x; raw[b][1] = u.y; raw[b][2] = u.z; raw[b][3] = u.w;
                    } else {
                        const uint4 u0 = *(const uint4*)(gt + e), u1 = *(const uint4*)(gt + e + 4);
                        raw[b][0] = u0.x; raw[b][1] = u0.y; raw[b][2] = u0.z; raw[b][3] = u0.w;
                        raw[b][4] = u1.x; raw[b][5] = u1.y; raw[b][6] = u1.z; raw[b][7] = u1.w;
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < A4_SVEC; j++)
                        if (j < n) {
                            if constexpr (sizeof(G) == 2) raw[b][j >> 1] |= (uint32_t)__bfloat16_as_ushort(gt[e + j]) << (16 * (j & 1));
                            else raw[b][j] = __float_as_uint(gt[e + j]);
                            cw[b] |= (uint32_t)q4_get(vq, e + j) << (4 * j);
                        }
                }
            }
#pragma unroll
            for (int b = 0; b < A4_SBATCH; b++) {
                const size_t i = a4_tile_row(&x, warp, k0 + b);
                if (i >= x.r1) break;   // the same for the whole warp
                float rmax = 0.0f;
#pragma unroll
                for (int j = 0; j < A4_SVEC; j++) {
                    if (j < n) {
                        float gj;
                        if constexpr (sizeof(G) == 2) gj = __uint_as_float(j & 1 ? raw[b][j >> 1] & 0xFFFF0000u : raw[b][j >> 1] << 16);
                        else gj = __uint_as_float(raw[b][j]);
                        if (clip_scale != 1.0f) gj = __fmul_rn(gj, clip_scale);   // as opt_grad
                        float m = 0.0f, v = a4_decode(&svmap, (uint8_t)((cw[b] >> (4 * j)) & 0xFu), a4_rank1_scale(vr[b], vc[j]));
                        adamw4bit_moments(&k, gj, &m, &v);   // m is not needed here (dead code)
                        rmax = a4_fold(rmax, v);
                        cmax[j] = a4_fold(cmax[j], v);
                    }
                }
                rmax = warp_max(rmax);
                if (lane == 0) a4_atomic_max(T->row_new + i, rmax);
            }
        }
#pragma unroll
        for (int j = 0; j < A4_SVEC; j++) scol[warp][lane * A4_SVEC + j] = cmax[j];
        __syncthreads();
        const size_t cj = x.c0 + threadIdx.x;
        if (cj < cols) {
            float y = scol[0][threadIdx.x];
            for (int w = 1; w < A4_WARPS; w++) y = fmaxf(y, scol[w][threadIdx.x]);
            a4_atomic_max(T->col_new + cj, y);
        }
        __syncthreads();   // scol is reused by the next tile
    }
}

// Step 2 (adamw4bit_plan.h), one WARP per 128-element block, a persistent grid walking groups of
// A4_WARPS blocks, each warp its own blocks: no barrier inside the loop. Lane l owns elements 4l..4l+3
// of the block (bytes 2l and 2l+1 of each code array: whole bytes, so no shuffle for the packing).
// Block maxima by xor-shuffles. The codes by q4_nearest_bs (4 comparisons, the same answer as
// q4_nearest's 15). Row and column of the lane's first element: one 32-bit division per lane per block
// (setup CHECKs numel < 2^32), then stepped.
template <typename G>
__global__ void __launch_bounds__(A4_THREADS) a4_block_kernel(float* master, const G* grad, bf16d* pbf16, const A4PlanTensor* qt, int nq,
                                                              size_t nblocks, Adam4Scalars k, A4Maps maps, GpuStepArgs a, int base_ok,
                                                              unsigned long long* nonfinite_count) {
    __shared__ A4Maps sm;
    if (threadIdx.x == 0) sm = maps;
    __syncthreads();
    const int lane = threadIdx.x & 31;
    unsigned long long nonfinite = 0;
    int ti = 0;
    for (size_t qb = (size_t)blockIdx.x * A4_WARPS + (threadIdx.x >> 5); qb < nblocks; qb += (size_t)gridDim.x * A4_WARPS) {
        ti = a4_cursor_block(qt, nq, ti, qb);
        const A4PlanTensor* T = &qt[ti];
        const size_t b = qb - T->block0, i0 = a4_lane_i0(b, lane), gi = T->param_off + i0;
        const int rank1 = T->rank1, nv = a4_lane_len(i0, T->numel);
        uint8_t* mq = T->mq;
        uint8_t* vq = T->vq;
        float* m_scale = T->m_scale + b;                      // this block's m scale
        float* v_scale = rank1 ? NULL : T->v_a + b;           // a vector's v scale of this block
        const float* v_row = T->v_a;
        const float* v_col = T->v_b;
        const float ms_old = *m_scale, vs_old = v_scale ? *v_scale : 0.0f;
        const uint32_t cols = rank1 ? (uint32_t)T->cols : 1u;
        uint32_t row = rank1 ? (uint32_t)i0 / cols : 0u, col = rank1 ? (uint32_t)i0 % cols : 0u;
        const int vec = a4_block_vec(T, base_ok, nv);
        float g[A4_LANE], p[A4_LANE], m[A4_LANE] = { 0.0f, 0.0f, 0.0f, 0.0f }, v[A4_LANE] = { 0.0f, 0.0f, 0.0f, 0.0f };
        uint32_t rows_of[A4_LANE] = { 0u, 0u, 0u, 0u }, cols_of[A4_LANE] = { 0u, 0u, 0u, 0u };
        uint8_t bm[2] = { 0, 0 }, bv[2] = { 0, 0 };
        if (vec) {
            const float4 pm = *(const float4*)(master + gi);
            p[0] = pm.x; p[1] = pm.y; p[2] = pm.z; p[3] = pm.w;
            if constexpr (sizeof(G) == 2) {
                const uint2 u = *(const uint2*)(grad + gi);
                g[0] = __uint_as_float(u.x << 16); g[1] = __uint_as_float(u.x & 0xFFFF0000u);
                g[2] = __uint_as_float(u.y << 16); g[3] = __uint_as_float(u.y & 0xFFFF0000u);
            } else {
                const float4 u = *(const float4*)(grad + gi);
                g[0] = ldf(u.x); g[1] = ldf(u.y); g[2] = ldf(u.z); g[3] = ldf(u.w);
            }
        } else {
#pragma unroll
            for (int j = 0; j < A4_LANE; j++) { g[j] = j < nv ? ldf(grad[gi + j]) : 0.0f; p[j] = j < nv ? master[gi + j] : 0.0f; }
        }
        if (nv > 0) { bm[0] = mq[i0 >> 1]; bv[0] = vq[i0 >> 1]; }
        if (nv > 2) { bm[1] = mq[(i0 >> 1) + 1]; bv[1] = vq[(i0 >> 1) + 1]; }
        float mx_m = 0.0f, mx_v = 0.0f;
#pragma unroll
        for (int j = 0; j < A4_LANE; j++) {
            if (j < nv) {
                if (a.clip_scale != 1.0f) g[j] = __fmul_rn(g[j], a.clip_scale); // as opt_grad: the CPU rounds this product
                nonfinite += !isfinite(g[j]);
                rows_of[j] = row;
                cols_of[j] = col;
                m[j] = a4_decode(&sm.m, (uint8_t)((bm[j >> 1] >> ((j & 1) * 4)) & 0xF), ms_old);
                v[j] = a4_decode(&sm.v, (uint8_t)((bv[j >> 1] >> ((j & 1) * 4)) & 0xF),
                                 rank1 ? a4_rank1_scale(v_row[row], v_col[col]) : vs_old);
                adamw4bit_moments(&k, g[j], &m[j], &v[j]);
                mx_m = a4_fold(mx_m, m[j]);   // NaN skipped, as the CPU's compare
                mx_v = a4_fold(mx_v, v[j]);
                if (rank1 && ++col == cols) { col = 0; row++; }
            }
        }
        // the new scales; the shuffles also order every lane's reads of the old scale before lane 0's write
        const float am = warp_max(mx_m), av = warp_max(mx_v);
        if (lane == 0) {
            *m_scale = am;
            if (v_scale) *v_scale = av;
        }
        if (nv == 0) continue;
        const uint64_t srb = a.sr ? sr_stream(a.seed, a.step, T->param_off) : 0;
        uint8_t cm[A4_LANE] = { 0, 0, 0, 0 }, cv[A4_LANE] = { 0, 0, 0, 0 };
#pragma unroll
        for (int j = 0; j < A4_LANE; j++) {
            p[j] = adamw4bit_param(&k, T->decay, p[j], m[j], v[j]);
            if (j < nv) {
                cm[j] = q4_nearest_bs(&sm.m, FDIV_RN(m[j], am));
                const float vs = rank1 ? a4_rank1_scale(T->row_new[rows_of[j]], T->col_new[cols_of[j]]) : av;
                cv[j] = q4_nearest_bs(&sm.v, FDIV_RN(v[j], vs));
            }
        }
        if (vec) {
            *(float4*)(master + gi) = make_float4(p[0], p[1], p[2], p[3]);
            if (pbf16) {
                const uint32_t w0 = (uint32_t)master_to_bf16(p[0], a.sr, srb, i0) | ((uint32_t)master_to_bf16(p[1], a.sr, srb, i0 + 1) << 16);
                const uint32_t w1 = (uint32_t)master_to_bf16(p[2], a.sr, srb, i0 + 2) | ((uint32_t)master_to_bf16(p[3], a.sr, srb, i0 + 3) << 16);
                *(uint2*)(pbf16 + gi) = make_uint2(w0, w1);
            }
        } else {
#pragma unroll
            for (int j = 0; j < A4_LANE; j++) if (j < nv) opt_store(master, pbf16, gi + j, p[j], a.sr, srb, i0 + j);
        }
        // a lone last element gets a 0 high nibble, as the CPU (cm/cv past nv are 0)
        mq[i0 >> 1] = q4_pair(cm[0], cm[1]);
        vq[i0 >> 1] = q4_pair(cv[0], cv[1]);
        if (nv > 2) {
            mq[(i0 >> 1) + 1] = q4_pair(cm[2], cm[3]);
            vq[(i0 >> 1) + 1] = q4_pair(cv[2], cv[3]);
        }
    }
    if (nonfinite) atomicAdd(nonfinite_count, nonfinite);
}

// The small tensors (fp32 exp_avg, exp_avg_sq), counting non-finite gradients.
struct Adam4Fp32Op {
    Adam4Scalars k;
    unsigned long long* nonfinite;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        if (!isfinite(g)) atomicAdd(nonfinite, 1ull);
        float* m = (float*)t.sp[0] + li;   // exp_avg
        float* v = (float*)t.sp[1] + li;   // exp_avg_sq
        adamw4bit_moments(&k, g, m, v);
        return adamw4bit_param(&k, t.decay, th, *m, *v);
    }
};

// The state buffer named `name`, -1 if the layout has none.
static int a4_find_buf(const StateLayout* sl, const char* name) {
    for (int b = 0; b < sl->nbuf; b++) if (!strcmp(sl->buf_name[b], name)) return b;
    return -1;
}

// adamw4bit.c's layout: m_q4, v_q4 (u8), m_scale, then v_row, v_col (matrix) or v_scale (vector), f32;
// exp_avg, exp_avg_sq (f32) for the small tensors.
static void adamw4bit_gpu_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    A4Gpu* q = (A4Gpu*)xcalloc(1, sizeof(A4Gpu));
    o->own = q;
    const StateLayout* sl = &o->layout;
    q->row_buf = a4_find_buf(sl, "v_row");
    q->col_buf = a4_find_buf(sl, "v_col");
    q->row_bytes = q->row_buf >= 0 ? sl->buf_bytes[q->row_buf] : 0;
    q->col_bytes = q->col_buf >= 0 ? sl->buf_bytes[q->col_buf] : 0;
    q->scratch = dev_alloc(led, MEM_OTHER, "adamw4bit new row/column maxima", q->row_bytes + q->col_bytes);
    int* quant = (int*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    for (int i = 0; i < n; i++) {
        const TensorStates* ts = &sl->tensors[i];
        quant[i] = ts->nstate > 2;
        if (!quant[i]) CHECK(ts->nstate == 2 && ts->dtype[0] == DT_F32 && ts->dtype[1] == DT_F32);
        else CHECK((ts->nstate == 5) == (shapes[i].ndim == 2) && (ts->nstate == 4 || ts->nstate == 5) && ts->dtype[0] == DT_U8 &&
                   ts->dtype[1] == DT_U8 && ts->dtype[2] == DT_F32 && ts->dtype[3] == DT_F32);
    }
    GpuOptTensor* ht = gpu_opt_chunks(o, shapes, param_offsets, n, quant, led); // chunks: the small tensors
    A4PlanTensor* hq = (A4PlanTensor*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(A4PlanTensor));
    char* scratch = (char*)q->scratch;
    for (int i = 0; i < n; i++) {
        if (!quant[i]) continue;
        const TensorStates* ts = &sl->tensors[i];
        CHECK(shapes[i].numel < ((size_t)1 << 32));   // a4_block_kernel's 32-bit row/column arithmetic
        A4PlanTensor* t = &hq[q->nq++];
        t->param_off = ht[i].param_off;
        t->numel = ht[i].numel;
        t->decay = ht[i].decay;
        t->mq = (uint8_t*)ht[i].sp[0];
        t->vq = (uint8_t*)ht[i].sp[1];
        t->m_scale = (float*)ht[i].sp[2];
        t->v_a = (float*)ht[i].sp[3];
        t->rank1 = ts->nstate == 5;
        t->rows = t->rank1 ? shapes[i].rows : 1;
        t->cols = t->rank1 ? shapes[i].cols : shapes[i].numel;
        if (t->rank1) {
            CHECK(ts->buf[3] == q->row_buf && ts->buf[4] == q->col_buf && t->cols == shapes[i].cols);
            t->v_b = (float*)ht[i].sp[4];
            // the tensor's new maxima sit where its v_row and v_col sit in their state buffers
            t->row_new = scratch ? (float*)(scratch + ts->offset[3]) : NULL;
            t->col_new = scratch ? (float*)(scratch + q->row_bytes + ts->offset[4]) : NULL;
        }
    }
    a4_plan_build(hq, q->nq, &q->nblocks, &q->ntiles);   // block0, tile0, nct, svec
    q->d_qt = (A4PlanTensor*)dev_alloc(led, MEM_OTHER, "adamw4bit tensor table", (size_t)q->nq * sizeof(A4PlanTensor));
    o->d_nonfinite = (unsigned long long*)dev_alloc(led, MEM_OTHER, "optimizer non-finite count", sizeof(unsigned long long));
    if (!led->dry && q->nq > 0) CUDA_CHECK(cudaMemcpy(q->d_qt, hq, (size_t)q->nq * sizeof(A4PlanTensor), cudaMemcpyHostToDevice));
    free(quant);
    free(ht);
    free(hq);
}

template <typename G>
static void adamw4bit_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const A4Gpu* q = (const A4Gpu*)o->own;
    const Adam4Scalars k = adamw4bit_scalars(&o->hyper, a->lr, a->step);
    A4Maps maps;
    maps.m = *q4_map_signed();
    maps.v = *q4_map_linear();
    if (q->ntiles > 0) {
        CUDA_CHECK(cudaMemsetAsync(q->scratch, 0, q->row_bytes + q->col_bytes, 0));
        static int scache = 0;   // per instantiation: thread blocks that fit on the device
        const int grid = q8_persistent_grid(a4_stats_kernel<G>, A4_THREADS, q->ntiles, &scache);
        a4_stats_kernel<G><<<grid, A4_THREADS>>>(grad, q->d_qt, q->nq, q->ntiles, k, maps, a->clip_scale, q8_base_ok(master, grad, pbf16));
        KERNEL_CHECK();
    }
    if (q->nblocks > 0) {
        static int cache = 0;   // per instantiation: thread blocks that fit on the device
        const int grid = q8_persistent_grid(a4_block_kernel<G>, A4_THREADS, (q->nblocks + A4_WARPS - 1) / A4_WARPS, &cache);
        a4_block_kernel<G><<<grid, A4_THREADS>>>(master, grad, pbf16, q->d_qt, q->nq, q->nblocks, k, maps, *a,
                                                     q8_base_ok(master, grad, pbf16), o->d_nonfinite);
        KERNEL_CHECK();
    }
    if (q->ntiles > 0) {
        CUDA_CHECK(cudaMemcpyAsync(o->buf[q->row_buf], q->scratch, q->row_bytes, cudaMemcpyDeviceToDevice, 0));
        CUDA_CHECK(cudaMemcpyAsync(o->buf[q->col_buf], (char*)q->scratch + q->row_bytes, q->col_bytes, cudaMemcpyDeviceToDevice, 0));
    }
    const Adam4Fp32Op op = { k, o->d_nonfinite };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_ADAMW4BIT_CUDA = GPU_OPTIMIZER(NULL, adamw4bit_gpu_setup, adamw4bit_step_launch);

#endif
