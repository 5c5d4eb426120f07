// cuda/layernorm.cuh: LayerNorm forward and backward. fp32 statistics (mean, rstd per row) whatever
// the storage type. The weight/bias gradients are sums over all rows: done in two fixed-order stages
// (NUM_PARTIALS row chunks, then the chunks in order), so they are deterministic, with no atomics.
#ifndef CUDA_LAYERNORM_CUH
#define CUDA_LAYERNORM_CUH

#include "common/cuda_util.cuh"

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

template <typename T>
static void layernorm_forward(T* out, float* mean, float* rstd, const T* inp, const T* w, const T* b, int N, int C) {
    layernorm_forward_kernel<T><<<ceil_div_u(N, 8), 256>>>(out, mean, rstd, inp, w, b, N, C);
    KERNEL_CHECK();
}

// partial: (2 * NUM_PARTIALS * C) floats of scratch.
template <typename T>
static void layernorm_backward(T* dinp, T* dw, T* db, float* partial, const T* dout, const T* inp, const T* w,
                               const float* mean, const float* rstd, int N, int C) {
    layernorm_backward_dinp_kernel<T><<<ceil_div_u(N, 8), 256>>>(dinp, dout, inp, w, mean, rstd, N, C);
    KERNEL_CHECK();
    dim3 grid(ceil_div_u(C, 32), NUM_PARTIALS), block(32, 8);
    layernorm_backward_partial_kernel<T><<<grid, block>>>(partial, dout, inp, mean, rstd, N, C);
    KERNEL_CHECK();
    layernorm_backward_finish_kernel<T><<<ceil_div_u(C, 256), 256>>>(dw, db, partial, NUM_PARTIALS, C);
    KERNEL_CHECK();
}

#endif
