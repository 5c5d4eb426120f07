// cuda/classifier.cuh: the fused classifier. One block per row of logits (N, Vp): softmax over the V
// real columns, the cross-entropy loss of the row's target, and (when training) the logits' gradient
// (softmax - onehot) * dloss written IN PLACE over the logits, padded columns set to 0. No second
// (N, Vp) buffer of probabilities ever exists. Statistics in fp32 whatever the storage type.
// classifier_vec_kernel moves 16-byte vectors (Vp % 8 == 0 always: Vp is a multiple of 128); the scalar
// classifier_kernel is the fallback. sample_targets keeps the scalar statistics (Sophia's labels only).
#ifndef CUDA_CLASSIFIER_CUH
#define CUDA_CLASSIFIER_CUH

#include "common/cuda_util.cuh"
#include "cuda/memk_plan.h"

// CLS_THREADS: cuda/memk_plan.h

// (max, sum of exp(x - max)) pairs merged: the online-softmax combine. Deterministic tree.
__device__ __forceinline__ void softmax_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// Each thread's (max, sum) merged over the block: the warps' xor trees, then the warps' results in warp
// order on every thread (deterministic). Contains a __syncthreads: every thread of the block calls it.
__device__ __forceinline__ void block_softmax_merge(float m, float s, float* m_out, float* s_out) {
    __shared__ float sm[CLS_THREADS / 32], ss[CLS_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        softmax_merge(m, s, m2, s2);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    m = sm[0]; s = ss[0];
    for (int w = 1; w < (int)(blockDim.x / 32); w++) softmax_merge(m, s, sm[w], ss[w]); // every thread, same order
    *m_out = m;
    *s_out = s;
}

// The row's softmax statistics over its V real columns, on every thread of the block: m = max x,
// s = sum exp(x - m). Per-thread online max/sum over a strided slice, the warps' trees, then the warps'
// results merged in order (deterministic). Contains a __syncthreads: every thread of the block calls it.
template <typename T>
__device__ __forceinline__ void row_softmax_stats(const T* x, int V, float* m_out, float* s_out) {
    float m = -INFINITY, s = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
        float v = ldf(x[c]);
        if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }
        else s += expf(v - m);
    }
    block_softmax_merge(m, s, m_out, s_out);
}

template <typename T>
__global__ void __launch_bounds__(CLS_THREADS) classifier_kernel(T* logits, float* losses, const int* targets, float dloss,
                                                                 int V, int Vp, int write_grad) {
    const int row = blockIdx.x;
    T* x = logits + (size_t)row * Vp;
    float m, s;
    row_softmax_stats(x, V, &m, &s);
    const float lse = m + logf(s);
    const int tgt = targets ? targets[row] : -1;
    if (threadIdx.x == 0 && losses) losses[row] = tgt >= 0 ? lse - ldf(x[tgt]) : 0.0f;
    if (!write_grad) return;
    __syncthreads(); // x[tgt] is read above before anyone overwrites it
    for (int c = threadIdx.x; c < Vp; c += blockDim.x) {
        float g = 0.0f;
        if (c < V) g = (expf(ldf(x[c]) - lse) - (c == tgt ? 1.0f : 0.0f)) * dloss;
        x[c] = stf<T>(g);
    }
}

// ---- 16-byte vectors (Vp % W == 0 and a 16-byte aligned logits buffer: Vp is a multiple of 128) -----
// Thread t of the block takes the row's vectors memk_row_vec(t, k, CLS_THREADS) (cuda/memk_plan.h); of
// vector v, memk_real_in_vec(v, W, V) elements are real columns (the rest padding, never in the
// statistics, their gradient 0). The per-thread online statistics go a vector at a time: the vector's
// max first, one rescale of the running sum, then the vector's exponentials; the warps' and the block's
// merges are row_softmax_stats's. The row is read twice (statistics, then the gradient) and written once;
// the second read mostly hits L2 (a block's row is 100 KB at Vp = 50304 in bf16).
template <typename T>
__device__ __forceinline__ void row_softmax_stats_vec(const T* x, int V, int Vp, float* m_out, float* s_out) {
    const int W = Pack<T>::N;
    float m = -INFINITY, s = 0.0f;
    const int nreal = (V + W - 1) / W; // vectors holding any real column
    const int iters = memk_row_iters(nreal, threadIdx.x, blockDim.x);
    for (int k = 0; k < iters; k++) {
        const int v = memk_row_vec(threadIdx.x, k, blockDim.x);
        const int cnt = memk_real_in_vec(v, W, V);
        const Pack<T> p = ld_pack(x + (size_t)v * W);
        float vm = -INFINITY;
#pragma unroll
        for (int j = 0; j < W; j++) if (j < cnt) vm = fmaxf(vm, ldf(p.v[j]));
        if (vm > m) { s *= expf(m - vm); m = vm; }
#pragma unroll
        for (int j = 0; j < W; j++) if (j < cnt) s += expf(ldf(p.v[j]) - m);
    }
    block_softmax_merge(m, s, m_out, s_out);
}

template <typename T>
__global__ void __launch_bounds__(CLS_THREADS) classifier_vec_kernel(T* logits, float* losses, const int* targets, float dloss,
                                                                     int V, int Vp, int write_grad) {
    const int W = Pack<T>::N;
    const int row = blockIdx.x;
    T* x = logits + (size_t)row * Vp;
    float m, s;
    row_softmax_stats_vec(x, V, Vp, &m, &s);
    const float lse = m + logf(s);
    const int tgt = targets ? targets[row] : -1;
    if (threadIdx.x == 0 && losses) losses[row] = tgt >= 0 ? lse - ldf(x[tgt]) : 0.0f;
    if (!write_grad) return;
    __syncthreads(); // x[tgt] is read above before anyone overwrites it
    const int iters = memk_row_iters(Vp / W, threadIdx.x, blockDim.x);
    for (int k = 0; k < iters; k++) {
        const int v = memk_row_vec(threadIdx.x, k, blockDim.x);
        const int cnt = memk_real_in_vec(v, W, V);
        Pack<T> p;
        if (cnt > 0) p = ld_pack(x + (size_t)v * W);
#pragma unroll
        for (int j = 0; j < W; j++) {
            const int c = v * W + j;
            const float g = j < cnt ? (expf(ldf(p.v[j]) - lse) - (c == tgt ? 1.0f : 0.0f)) * dloss : 0.0f;
            p.v[j] = stf<T>(g);
        }
        st_pack(x + (size_t)v * W, p);
    }
}

// Sophia's Gauss-Newton-Bartlett labels (train_gpt2.cu: maybe_update_hessian): for each row, a label drawn
// from softmax(logits) over the V real columns with the row's uniform u[row] (the CPU trainer's draws):
// the first column c with u < p_0 + ... + p_c, else V-1, as trainer/model.c's sample_index. fp32
// probabilities exp(x - max) / sum from the classifier's statistics (row_softmax_stats); the cumulative
// sum goes by contiguous chunks, one per thread: the chunks' sums added in order give each chunk's start,
// and each thread walks its own chunk from there (the first crossing over all chunks wins: the smallest
// column).
template <typename T>
__global__ void __launch_bounds__(CLS_THREADS) sample_targets_kernel(const T* logits, const float* u, int* targets, int V, int Vp) {
    __shared__ float start[CLS_THREADS];
    __shared__ int found;
    const int row = blockIdx.x;
    const T* x = logits + (size_t)row * Vp;
    float m, s;
    row_softmax_stats(x, V, &m, &s);
    const float inv = 1.0f / s;
    const int chunk = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    const int c0 = (int)threadIdx.x * chunk, c1 = c0 + chunk < V ? c0 + chunk : V;
    float part = 0.0f;
    for (int c = c0; c < c1; c++) part += expf(ldf(x[c]) - m) * inv;
    start[threadIdx.x] = part;
    if (threadIdx.x == 0) found = V - 1;
    __syncthreads();
    if (threadIdx.x == 0) { // exclusive prefix over the chunks, in order
        float acc = 0.0f;
        for (int t = 0; t < (int)blockDim.x; t++) { const float p = start[t]; start[t] = acc; acc += p; }
    }
    __syncthreads();
    const float ur = u[row];
    float cum = start[threadIdx.x];
    for (int c = c0; c < c1; c++) {
        cum += expf(ldf(x[c]) - m) * inv;
        if (ur < cum) { atomicMin(&found, c); break; }
    }
    __syncthreads();
    if (threadIdx.x == 0) targets[row] = found;
}

template <typename T>
static void sample_targets(const T* logits, const float* d_u, int* d_targets, int N, int V, int Vp) {
    sample_targets_kernel<T><<<N, CLS_THREADS>>>(logits, d_u, d_targets, V, Vp);
    KERNEL_CHECK();
}

// losses (N) = -log softmax(logits)[target]; with write_grad the logits become dlogits (scaled by dloss).
template <typename T>
static void classifier(T* logits, float* losses, const int* d_targets, float dloss, int N, int V, int Vp, int write_grad) {
    if (Vp % Pack<T>::N == 0 && memk_aligned16(logits))
        classifier_vec_kernel<T><<<N, CLS_THREADS>>>(logits, losses, d_targets, dloss, V, Vp, write_grad);
    else
        classifier_kernel<T><<<N, CLS_THREADS>>>(logits, losses, d_targets, dloss, V, Vp, write_grad);
    KERNEL_CHECK();
}

#endif
