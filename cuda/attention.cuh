// cuda/attention.cuh: causal self-attention, flash-attention style (Dao et al. 2022, FlashAttention-2's
// loop order), forward and backward. No (T, T) matrix ever exists in device memory: the forward keeps
// a running max and sum per query row (online softmax) and saves only the log-sum-exp of each row;
// the backward recomputes the probabilities tile by tile from that.
//
// Shapes: qkv (B, T, 3C) holds q | k | v, each split into NH heads of HS = C / NH; out (B, T, C);
// lse (B, NH, T) fp32; dpre (B, NH, T) fp32 scratch for D_i = sum_d dout[i,d] * out[i,d].
//
// Work split: a block is 32 rows x 4 lanes = 128 threads. The 4 lanes of a row each hold HS/4 of the
// row's dimensions (dimension g + 4*d for lane g: conflict-free shared-memory reads) and finish dot
// products with two shuffles. Tiles of 32 keys (or queries) are staged through shared memory in fp32.
// This is plain FP32 FMA arithmetic, correct and simple first; tensor-core (mma) versions are the next step.
// Determinism: every output element is written by exactly one thread, no atomics.
#ifndef CUDA_ATTENTION_CUH
#define CUDA_ATTENTION_CUH

#include "common/cuda_util.cuh"

#define ATT_ROWS 32   // rows (queries or keys) per block and per shared-memory tile
#define ATT_LANES 4   // threads per row

__device__ __forceinline__ float group4_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    v += __shfl_xor_sync(0xffffffffu, v, 2);
    return v;
}

// Loads rows [r0, r0 + ATT_ROWS) of one head's slice `part` (0 q, 1 k, 2 v) into tile (ATT_ROWS, HS),
// scaled by `scale`; rows at or past Tn read as 0.
template <typename T, int HS>
__device__ __forceinline__ void att_load_tile(float (*tile)[HS], const T* base, int r0, int Tn, int C, int part, int h, float scale) {
    for (int idx = threadIdx.x; idx < ATT_ROWS * HS; idx += blockDim.x) {
        int rr = idx / HS, d = idx % HS;
        int r = r0 + rr;
        tile[rr][d] = r < Tn ? ldf(base[(size_t)r * 3 * C + part * C + h * HS + d]) * scale : 0.0f;
    }
}

template <typename T, int HS>
__global__ void __launch_bounds__(128) attention_forward_kernel(T* out, float* lse, const T* qkv, int Tn, int C, int NH, float scale) {
    constexpr int D = HS / ATT_LANES;
    __shared__ float ks[ATT_ROWS][HS];
    __shared__ float vs[ATT_ROWS][HS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int r = threadIdx.x / ATT_LANES, g = threadIdx.x % ATT_LANES;
    const int i = q0 + r;
    const bool active = i < Tn;
    const T* base = qkv + (size_t)b * Tn * 3 * C;
    float q[D], o[D];
#pragma unroll
    for (int d = 0; d < D; d++) {
        q[d] = active ? ldf(base[(size_t)i * 3 * C + h * HS + g + ATT_LANES * d]) * scale : 0.0f;
        o[d] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int last = min(q0 + ATT_ROWS, Tn) - 1; // the last key any row of this block needs
    for (int j0 = 0; j0 <= last; j0 += ATT_ROWS) {
        __syncthreads();
        att_load_tile<T, HS>(ks, base, j0, Tn, C, 1, h, 1.0f);
        att_load_tile<T, HS>(vs, base, j0, Tn, C, 2, h, 1.0f);
        __syncthreads();
        float s[ATT_ROWS];
        float mt = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < ATT_ROWS; jj++) {
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < D; d++) dot += q[d] * ks[jj][g + ATT_LANES * d];
            dot = group4_sum(dot);
            s[jj] = (j0 + jj <= i) ? dot : -INFINITY; // causal (rows past Tn compute harmless values)
            mt = fmaxf(mt, s[jj]);
        }
        float mnew = fmaxf(m, mt);
        if (mnew == -INFINITY) continue; // whole tile masked for this row (only rows past Tn)
        float corr = expf(m - mnew);     // m = -inf on the first tile: corr = 0
        l *= corr;
#pragma unroll
        for (int d = 0; d < D; d++) o[d] *= corr;
#pragma unroll
        for (int jj = 0; jj < ATT_ROWS; jj++) {
            float p = expf(s[jj] - mnew);
            l += p;
#pragma unroll
            for (int d = 0; d < D; d++) o[d] += p * vs[jj][g + ATT_LANES * d];
        }
        m = mnew;
    }
    if (!active) return;
    float inv = 1.0f / l;
    T* orow = out + ((size_t)b * Tn + i) * C + h * HS;
#pragma unroll
    for (int d = 0; d < D; d++) orow[g + ATT_LANES * d] = stf<T>(o[d] * inv);
    if (g == 0) lse[(size_t)bh * Tn + i] = m + logf(l);
}

// dpre[b,h,i] = sum_d dout[b,i,h,d] * out[b,i,h,d]   (FlashAttention's D_i)
template <typename T, int HS>
__global__ void attention_backward_pre_kernel(float* dpre, const T* out, const T* dout, int Tn, int C, int NH) {
    constexpr int D = HS / ATT_LANES;
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int r = threadIdx.x / ATT_LANES, g = threadIdx.x % ATT_LANES;
    const int i = blockIdx.x * ATT_ROWS + r;
    float acc = 0.0f;
    if (i < Tn) {
        size_t off = ((size_t)b * Tn + i) * C + h * HS;
#pragma unroll
        for (int d = 0; d < D; d++) acc += ldf(out[off + g + ATT_LANES * d]) * ldf(dout[off + g + ATT_LANES * d]);
    }
    acc = group4_sum(acc);
    if (i < Tn && g == 0) dpre[(size_t)bh * Tn + i] = acc;
}

// dq: one row group per query i, tiles over keys j <= i.
template <typename T, int HS>
__global__ void __launch_bounds__(128) attention_backward_dq_kernel(T* dqkv, const T* qkv, const T* dout, const float* lse,
                                                                    const float* dpre, int Tn, int C, int NH, float scale) {
    constexpr int D = HS / ATT_LANES;
    __shared__ float ks[ATT_ROWS][HS];
    __shared__ float vs[ATT_ROWS][HS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int q0 = blockIdx.x * ATT_ROWS;
    const int r = threadIdx.x / ATT_LANES, g = threadIdx.x % ATT_LANES;
    const int i = q0 + r;
    const bool active = i < Tn;
    const T* base = qkv + (size_t)b * Tn * 3 * C;
    const size_t orow = ((size_t)b * Tn + i) * C + h * HS;
    float q[D], dy[D], dq[D];
#pragma unroll
    for (int d = 0; d < D; d++) {
        q[d] = active ? ldf(base[(size_t)i * 3 * C + h * HS + g + ATT_LANES * d]) * scale : 0.0f;
        dy[d] = active ? ldf(dout[orow + g + ATT_LANES * d]) : 0.0f;
        dq[d] = 0.0f;
    }
    const float li = active ? lse[(size_t)bh * Tn + i] : 0.0f;
    const float Di = active ? dpre[(size_t)bh * Tn + i] : 0.0f;
    const int last = min(q0 + ATT_ROWS, Tn) - 1;
    for (int j0 = 0; j0 <= last; j0 += ATT_ROWS) {
        __syncthreads();
        att_load_tile<T, HS>(ks, base, j0, Tn, C, 1, h, 1.0f);
        att_load_tile<T, HS>(vs, base, j0, Tn, C, 2, h, 1.0f);
        __syncthreads();
#pragma unroll 4
        for (int jj = 0; jj < ATT_ROWS; jj++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < D; d++) { s += q[d] * ks[jj][g + ATT_LANES * d]; dp += dy[d] * vs[jj][g + ATT_LANES * d]; }
            s = group4_sum(s);
            dp = group4_sum(dp);
            float p = (active && j0 + jj <= i) ? expf(s - li) : 0.0f;
            float ds = p * (dp - Di);
#pragma unroll
            for (int d = 0; d < D; d++) dq[d] += ds * ks[jj][g + ATT_LANES * d];
        }
    }
    if (!active) return;
    T* dqrow = dqkv + ((size_t)b * Tn + i) * 3 * C + h * HS;
#pragma unroll
    for (int d = 0; d < D; d++) dqrow[g + ATT_LANES * d] = stf<T>(dq[d] * scale);
}

// dk, dv: one row group per key j, tiles over queries i >= j.
template <typename T, int HS>
__global__ void __launch_bounds__(128) attention_backward_dkv_kernel(T* dqkv, const T* qkv, const T* dout, const float* lse,
                                                                     const float* dpre, int Tn, int C, int NH, float scale) {
    constexpr int D = HS / ATT_LANES;
    __shared__ float qs[ATT_ROWS][HS];   // q * scale
    __shared__ float dys[ATT_ROWS][HS];  // dout
    __shared__ float ls[ATT_ROWS], ds_[ATT_ROWS];
    const int bh = blockIdx.y, b = bh / NH, h = bh % NH;
    const int k0 = blockIdx.x * ATT_ROWS;
    const int r = threadIdx.x / ATT_LANES, g = threadIdx.x % ATT_LANES;
    const int j = k0 + r;
    const bool active = j < Tn;
    const T* base = qkv + (size_t)b * Tn * 3 * C;
    float k[D], v[D], dk[D], dv[D];
#pragma unroll
    for (int d = 0; d < D; d++) {
        k[d] = active ? ldf(base[(size_t)j * 3 * C + C + h * HS + g + ATT_LANES * d]) : 0.0f;
        v[d] = active ? ldf(base[(size_t)j * 3 * C + 2 * C + h * HS + g + ATT_LANES * d]) : 0.0f;
        dk[d] = 0.0f;
        dv[d] = 0.0f;
    }
    for (int i0 = k0; i0 < Tn; i0 += ATT_ROWS) {
        __syncthreads();
        att_load_tile<T, HS>(qs, base, i0, Tn, C, 0, h, scale);
        for (int idx = threadIdx.x; idx < ATT_ROWS * HS; idx += blockDim.x) {
            int rr = idx / HS, d = idx % HS, ii = i0 + rr;
            dys[rr][d] = ii < Tn ? ldf(dout[((size_t)b * Tn + ii) * C + h * HS + d]) : 0.0f;
        }
        for (int rr = threadIdx.x; rr < ATT_ROWS; rr += blockDim.x) {
            int ii = i0 + rr;
            ls[rr] = ii < Tn ? lse[(size_t)bh * Tn + ii] : 0.0f;
            ds_[rr] = ii < Tn ? dpre[(size_t)bh * Tn + ii] : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int ii = 0; ii < ATT_ROWS; ii++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int d = 0; d < D; d++) { s += qs[ii][g + ATT_LANES * d] * k[d]; dp += dys[ii][g + ATT_LANES * d] * v[d]; }
            s = group4_sum(s);
            dp = group4_sum(dp);
            int iq = i0 + ii;
            float p = (active && iq >= j && iq < Tn) ? expf(s - ls[ii]) : 0.0f;
            float dsv = p * (dp - ds_[ii]);
#pragma unroll
            for (int d = 0; d < D; d++) {
                dv[d] += p * dys[ii][g + ATT_LANES * d];
                dk[d] += dsv * qs[ii][g + ATT_LANES * d];
            }
        }
    }
    if (!active) return;
    T* row = dqkv + ((size_t)b * Tn + j) * 3 * C + h * HS;
#pragma unroll
    for (int d = 0; d < D; d++) {
        row[C + g + ATT_LANES * d] = stf<T>(dk[d]);
        row[2 * C + g + ATT_LANES * d] = stf<T>(dv[d]);
    }
}

// Head sizes with compiled kernels (dN models have HS = 64).
static int attention_head_size_ok(int hs) { return hs == 8 || hs == 16 || hs == 32 || hs == 64 || hs == 128; }

#define ATT_DISPATCH(hs, CALL) \
    switch (hs) { case 8: CALL(8); break; case 16: CALL(16); break; case 32: CALL(32); break; \
                  case 64: CALL(64); break; case 128: CALL(128); break; \
                  default: fprintf(stderr, "internal error: no attention kernel for head size %d\n", hs); exit(1); }

template <typename T>
static void attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    dim3 grid(ceil_div_u(Tn, ATT_ROWS), B * NH);
#define ATT_FWD(HS) attention_forward_kernel<T, HS><<<grid, ATT_ROWS * ATT_LANES>>>(out, lse, qkv, Tn, C, NH, scale)
    ATT_DISPATCH(hs, ATT_FWD);
#undef ATT_FWD
    KERNEL_CHECK();
}

// dqkv (B, T, 3C) is overwritten. dpre: (B, NH, T) fp32 scratch.
template <typename T>
static void attention_backward(T* dqkv, float* dpre, const T* dout, const T* qkv, const T* out, const float* lse,
                               int B, int Tn, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    dim3 grid(ceil_div_u(Tn, ATT_ROWS), B * NH);
#define ATT_PRE(HS) attention_backward_pre_kernel<T, HS><<<grid, ATT_ROWS * ATT_LANES>>>(dpre, out, dout, Tn, C, NH)
    ATT_DISPATCH(hs, ATT_PRE);
#undef ATT_PRE
    KERNEL_CHECK();
#define ATT_DQ(HS) attention_backward_dq_kernel<T, HS><<<grid, ATT_ROWS * ATT_LANES>>>(dqkv, qkv, dout, lse, dpre, Tn, C, NH, scale)
    ATT_DISPATCH(hs, ATT_DQ);
#undef ATT_DQ
    KERNEL_CHECK();
#define ATT_DKV(HS) attention_backward_dkv_kernel<T, HS><<<grid, ATT_ROWS * ATT_LANES>>>(dqkv, qkv, dout, lse, dpre, Tn, C, NH, scale)
    ATT_DISPATCH(hs, ATT_DKV);
#undef ATT_DKV
    KERNEL_CHECK();
}

#endif
