// cuda/layernorm.cuh: LayerNorm forward (alone, or fused with the residual add before it) and backward.
// fp32 statistics (mean, rstd per row) whatever the storage type. The weight/bias gradients are sums over
// all rows, done in two fixed-order stages (row chunks, then the chunks in order), so they are
// deterministic, with no atomics.
//
// The vector kernels (16-byte accesses, cuda/memk_plan.h's row split; taken when C % W == 0 and the
// pointers are 16-byte aligned, which the trainer always meets):
//   forward:  one warp per row; pass 1 reads the row (fused: a + b, rounded to the storage type exactly as
//             residual_forward does, stored to res) and sums it, pass 2 the centred squares, pass 3
//             writes out; passes 2 and 3 re-read the row from L1 (fused: the res this thread just
//             stored). DRAM: the row once (fused: a, b once, res written), out written.
//   backward: one pass over dout and inp: blocks of LNB_WARPS warps over contiguous row chunks; each warp
//             computes a row's dinp (two sweeps of the L1-resident row) and adds norm * dout and dout
//             into its own shared-memory dweight/dbias sums, lane by lane (each lane owns its columns: no
//             races, no atomics); the block's warps are added in order into one partial per chunk, and
//             layernorm_backward_finish_kernel adds the chunks in order. dinp is added to (+=), or
//             written (accumulate = 0: the first LayerNorm of the backward, whose dinp would otherwise be
//             zeroed by a memset first).
// The scalar kernels below them are the fallback (any C, any alignment) and the earlier three-kernel
// backward (dinp, then the partials reading dout and inp a second time).
#ifndef CUDA_LAYERNORM_CUH
#define CUDA_LAYERNORM_CUH

#include "common/cuda_util.cuh"
#include "cuda/memk_plan.h"
#include "cuda/gelu.cuh"

#define NUM_PARTIALS 32   // row chunks of the column reductions (LayerNorm and bias gradients)

// One warp per row. out (N,C), mean/rstd (N).
template <typename T>
__global__ void layernorm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T* x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int c = lane; c < C; c += 32) s += ldf(x[c]);
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int c = lane; c < C; c += 32) { float d = ldf(x[c]) - m; v += d * d; }
    v = warp_sum(v) / C;
    float r = 1.0f / sqrtf(v + 1e-5f);
    T* o = out + (size_t)row * C;
    for (int c = lane; c < C; c += 32) o[c] = stf<T>((ldf(x[c]) - m) * r * ldf(w[c]) + ldf(b[c]));
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}

// dinp (N,C) += d(loss)/d(inp), one warp per row.
template <typename T>
__global__ void layernorm_backward_dinp_kernel(T* dinp, const T* dout, const T* inp, const T* w, const float* mean,
                                               const float* rstd, int N, int C) {
    int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= N) return;
    const T* x = inp + (size_t)row * C;
    const T* d = dout + (size_t)row * C;
    float m = mean[row], s = rstd[row];
    float dm = 0.0f, dnm = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float norm = (ldf(x[c]) - m) * s;
        float dn = ldf(w[c]) * ldf(d[c]);
        dm += dn;
        dnm += dn * norm;
    }
    dm = warp_sum(dm) / C;
    dnm = warp_sum(dnm) / C;
    T* dx = dinp + (size_t)row * C;
    for (int c = lane; c < C; c += 32) {
        float norm = (ldf(x[c]) - m) * s;
        float dn = ldf(w[c]) * ldf(d[c]);
        dx[c] = stf<T>(ldf(dx[c]) + (dn - dm - norm * dnm) * s);
    }
}

// Stage 1 of dw, db: block (32 columns x 8 row lanes), blockIdx.y = row chunk. partial (2, P, C).
template <typename T>
__global__ void layernorm_backward_partial_kernel(float* partial, const T* dout, const T* inp, const float* mean,
                                                  const float* rstd, int N, int C) {
    __shared__ float sw[8][33], sb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int chunk = blockIdx.y, P = gridDim.y;
    int rows_per = (N + P - 1) / P;
    int r0 = chunk * rows_per, r1 = min(N, r0 + rows_per);
    float aw = 0.0f, ab = 0.0f;
    if (c < C) {
        for (int r = r0 + threadIdx.y; r < r1; r += 8) {
            float d = ldf(dout[(size_t)r * C + c]);
            aw += (ldf(inp[(size_t)r * C + c]) - mean[r]) * rstd[r] * d;
            ab += d;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float tw = 0.0f, tb = 0.0f;
        for (int y = 0; y < 8; y++) { tw += sw[y][threadIdx.x]; tb += sb[y][threadIdx.x]; }
        partial[(size_t)chunk * C + c] = tw;
        partial[(size_t)(P + chunk) * C + c] = tb;
    }
}

// Stage 2: dw[c] += sum of the P partials in order, db likewise.
template <typename T>
__global__ void layernorm_backward_finish_kernel(T* dw, T* db, const float* partial, int P, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float tw = 0.0f, tb = 0.0f;
    for (int p = 0; p < P; p++) { tw += partial[(size_t)p * C + c]; tb += partial[(size_t)(P + p) * C + c]; }
    dw[c] = stf<T>(ldf(dw[c]) + tw);
    db[c] = stf<T>(ldf(db[c]) + tb);
}


// ---- vector kernels --------------------------------------------------------------------------------
// LayerNorm of rows of x, one warp per row, W = 16 / sizeof(T) elements per access. Fused (b != NULL):
// x = res = a + b (stored to res, each element rounded to T as residual_forward does); else x = a and res
// is not touched. out (N, C), mean/rstd (N).
template <typename T>
__global__ void layernorm_forward_vec_kernel(T* res, T* out, float* mean, float* rstd, const T* a, const T* b,
                                             const T* w, const T* bias, int N, int C) {
    const int W = Pack<T>::N;
    const int row = blockIdx.x * (blockDim.x / MEMK_WARP) + threadIdx.x / MEMK_WARP;
    const int lane = threadIdx.x % MEMK_WARP;
    if (row >= N) return;
    const int iters = memk_row_iters(C / W, lane, MEMK_WARP);
    const size_t base = (size_t)row * C;
    const T* x = b ? res + base : a + base; // the row normalized (fused: read back from what pass 1 stored)
    float s = 0.0f;
    for (int k = 0; k < iters; k++) {
        const int c = memk_row_vec(lane, k, MEMK_WARP) * W;
        Pack<T> xv = ld_pack(a + base + c);
        if (b) {
            const Pack<T> yv = ld_pack(b + base + c);
#pragma unroll
            for (int j = 0; j < W; j++) xv.v[j] = stf<T>(ldf(xv.v[j]) + ldf(yv.v[j]));
            st_pack(res + base + c, xv);
        }
#pragma unroll
        for (int j = 0; j < W; j++) s += ldf(xv.v[j]);
    }
    const float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int k = 0; k < iters; k++) {
        const int c = memk_row_vec(lane, k, MEMK_WARP) * W;
        const Pack<T> xv = ld_pack(x + c);
#pragma unroll
        for (int j = 0; j < W; j++) { const float d = ldf(xv.v[j]) - m; v += d * d; }
    }
    v = warp_sum(v) / C;
    const float r = 1.0f / sqrtf(v + 1e-5f);
    for (int k = 0; k < iters; k++) {
        const int c = memk_row_vec(lane, k, MEMK_WARP) * W;
        const Pack<T> xv = ld_pack(x + c), wv = ld_pack(w + c), bv = ld_pack(bias + c);
        Pack<T> o;
#pragma unroll
        for (int j = 0; j < W; j++) o.v[j] = stf<T>((ldf(xv.v[j]) - m) * r * ldf(wv.v[j]) + ldf(bv.v[j]));
        st_pack(out + base + c, o);
    }
    if (lane == 0) { mean[row] = m; rstd[row] = r; }
}

// The one-pass backward (see the head of this file). Block p of gridDim.x = lnb_blocks(N) takes rows
// [lnb_row_lo(p), lnb_row_hi(p)); dynamic shared memory LNB_WARPS x 2 x lnb_sh_cols(C, W) floats. partial (2, P, C):
// dweight's chunk sums, then dbias's.
template <typename T>
__global__ void __launch_bounds__(LNB_WARPS * MEMK_WARP)
layernorm_backward_vec_kernel(T* dinp, float* partial, const T* dout, const T* inp, const T* w, const float* mean,
                              const float* rstd, int N, int C, int accumulate) {
    extern __shared__ float lnb_sh[]; // [LNB_WARPS][2][SC]: each warp's dweight sums, then its dbias sums
    const int W = Pack<T>::N;
    const int warp = threadIdx.x / MEMK_WARP, lane = threadIdx.x % MEMK_WARP;
    const int p = blockIdx.x, P = gridDim.x;
    const int iters = memk_row_iters(C / W, lane, MEMK_WARP);
    const int SC = lnb_sh_cols(C, W);
    float* aw = lnb_sh + (size_t)warp * 2 * SC; // slot lnb_sh_slot(k, j, lane): column (lane + 32 k) W + j
    float* ab = aw + SC;
    for (int k = 0; k < iters; k++)
        for (int j = 0; j < W; j++) { aw[lnb_sh_slot(k, j, lane, W)] = 0.0f; ab[lnb_sh_slot(k, j, lane, W)] = 0.0f; }
    const int lo = lnb_row_lo(p, N), hi = lnb_row_hi(p, N);
    for (int r = lo + warp; r < hi; r += LNB_WARPS) {
        const size_t base = (size_t)r * C;
        const float m = mean[r], s = rstd[r];
        float dm = 0.0f, dnm = 0.0f;
        for (int k = 0; k < iters; k++) {
            const int c = memk_row_vec(lane, k, MEMK_WARP) * W;
            const Pack<T> dv = ld_pack(dout + base + c), xv = ld_pack(inp + base + c), wv = ld_pack(w + c);
#pragma unroll
            for (int j = 0; j < W; j++) {
                const float d = ldf(dv.v[j]);
                const float norm = (ldf(xv.v[j]) - m) * s;
                const float dn = ldf(wv.v[j]) * d;
                dm += dn;
                dnm += dn * norm;
                aw[lnb_sh_slot(k, j, lane, W)] += norm * d;
                ab[lnb_sh_slot(k, j, lane, W)] += d;
            }
        }
        dm = warp_sum(dm) / C;
        dnm = warp_sum(dnm) / C;
        for (int k = 0; k < iters; k++) {
            const int c = memk_row_vec(lane, k, MEMK_WARP) * W;
            const Pack<T> dv = ld_pack(dout + base + c), xv = ld_pack(inp + base + c), wv = ld_pack(w + c);
            Pack<T> o;
            if (accumulate) o = ld_pack(dinp + base + c);
#pragma unroll
            for (int j = 0; j < W; j++) {
                const float norm = (ldf(xv.v[j]) - m) * s;
                const float dn = ldf(wv.v[j]) * ldf(dv.v[j]);
                const float g = (dn - dm - norm * dnm) * s;
                o.v[j] = stf<T>(accumulate ? ldf(o.v[j]) + g : g);
            }
            st_pack(dinp + base + c, o);
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const int slot = lnb_sh_slot_of_col(c, W);
        float tw = 0.0f, tb = 0.0f;
        for (int q = 0; q < LNB_WARPS; q++) { tw += lnb_sh[(size_t)q * 2 * SC + slot]; tb += lnb_sh[(size_t)q * 2 * SC + SC + slot]; }
        partial[(size_t)p * C + c] = tw;
        partial[(size_t)(P + p) * C + c] = tb;
    }
}

// ---- launchers -------------------------------------------------------------------------------------
template <typename T>
static int ln_vec_ok(int C, const void* p0, const void* p1, const void* p2, const void* p3, const void* p4 = NULL, const void* p5 = NULL) {
    return C % Pack<T>::N == 0 && memk_aligned16(p0) && memk_aligned16(p1) && memk_aligned16(p2) && memk_aligned16(p3) &&
           memk_aligned16(p4) && memk_aligned16(p5);
}

template <typename T>
static void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int N, int C) {
    if (ln_vec_ok<T>(C, out, inp, w, b))
        layernorm_forward_vec_kernel<T><<<ceil_div_u(N, LNF_WARPS), LNF_WARPS * MEMK_WARP>>>((T*)NULL, out, mean, rstd, inp, (const T*)NULL, w, b, N, C);
    else
        layernorm_forward_kernel<T><<<ceil_div_u(N, 8), 256>>>(out, mean, rstd, inp, w, b, N, C);
    KERNEL_CHECK();
}

// res (N, C) = a + b, then out = LayerNorm(res) with its mean/rstd: residual_forward + layernorm_forward
// in one kernel (the same values: res is rounded to T before its statistics, as the pair does).
template <typename T>
static void residual_layernorm_forward(T* res, T* out, float* mean, float* rstd, const T* a, const T* b, const T* w,
                                       const T* bias, int N, int C) {
    if (ln_vec_ok<T>(C, res, out, a, b, w, bias)) {
        layernorm_forward_vec_kernel<T><<<ceil_div_u(N, LNF_WARPS), LNF_WARPS * MEMK_WARP>>>(res, out, mean, rstd, a, b, w, bias, N, C);
        KERNEL_CHECK();
    } else {
        residual_forward<T>(res, a, b, (size_t)N * C);
        layernorm_forward<T>(out, mean, rstd, res, w, bias, N, C);
    }
}

// Whether the one-pass backward's shared memory (LNB_WARPS x 2 x lnb_sh_cols floats) fits a block on this device;
// raises the kernel's dynamic shared-memory limit past the default 48 KiB when needed (C > 768).
template <typename T>
static int lnb_smem_ok(size_t bytes) {
    static size_t allowed = 48 * 1024;
    if (bytes <= allowed) return 1;
    int dev = 0, optin = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (bytes > (size_t)optin) return 0;
    CUDA_CHECK(cudaFuncSetAttribute(layernorm_backward_vec_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    allowed = bytes;
    return 1;
}

// dinp (N, C) += (or, accumulate = 0, =) d(loss)/d(inp); dw, db (C) += the weight/bias gradients.
// partial: memk_partial_floats(C) floats of scratch.
template <typename T>
static void layernorm_backward(T* dinp, T* dw, T* db, float* partial, const T* dout, const T* inp, const T* w,
                               const float* mean, const float* rstd, int N, int C, int accumulate = 1) {
    const size_t smem = (size_t)LNB_WARPS * 2 * lnb_sh_cols(C, Pack<T>::N) * sizeof(float);
    if (N > 0 && ln_vec_ok<T>(C, dinp, dout, inp, w) && lnb_smem_ok<T>(smem)) {
        const int P = lnb_blocks(N);
        layernorm_backward_vec_kernel<T><<<P, LNB_WARPS * MEMK_WARP, smem>>>(dinp, partial, dout, inp, w, mean, rstd, N, C, accumulate);
        KERNEL_CHECK();
        layernorm_backward_finish_kernel<T><<<ceil_div_u(C, 256), 256>>>(dw, db, partial, P, C);
        KERNEL_CHECK();
        return;
    }
    if (!accumulate) CUDA_CHECK(cudaMemset(dinp, 0, (size_t)N * C * sizeof(T)));
    layernorm_backward_dinp_kernel<T><<<ceil_div_u(N, 8), 256>>>(dinp, dout, inp, w, mean, rstd, N, C);
    KERNEL_CHECK();
    dim3 grid(ceil_div_u(C, 32), NUM_PARTIALS), block(32, 8);
    layernorm_backward_partial_kernel<T><<<grid, block>>>(partial, dout, inp, mean, rstd, N, C);
    KERNEL_CHECK();
    layernorm_backward_finish_kernel<T><<<ceil_div_u(C, 256), 256>>>(dw, db, partial, NUM_PARTIALS, C);
    KERNEL_CHECK();
}

#endif
