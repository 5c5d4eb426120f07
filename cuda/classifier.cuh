// cuda/classifier.cuh: the fused classifier. One block per row of logits (N, Vp): softmax over the V
// real columns, the cross-entropy loss of the row's target, and (when training) the logits' gradient
// (softmax - onehot) * dloss written IN PLACE over the logits, padded columns set to 0. No second
// (N, Vp) buffer of probabilities ever exists. Statistics in fp32 whatever the storage type.
#ifndef CUDA_CLASSIFIER_CUH
#define CUDA_CLASSIFIER_CUH

#include "common/cuda_util.cuh"

#define CLS_THREADS 512

// (max, sum of exp(x - max)) pairs merged: the online-softmax combine. Deterministic tree.
__device__ __forceinline__ void softmax_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}

// The row's softmax statistics over its V real columns, on every thread of the block: m = max x,
// s = sum exp(x - m). Per-thread online max/sum over a strided slice, the warps' trees, then the warps'
// results merged in order (deterministic). Contains a __syncthreads: every thread of the block calls it.
template <typename T>
__device__ __forceinline__ void row_softmax_stats(const T* x, int V, float* m_out, float* s_out) {
    __shared__ float sm[CLS_THREADS / 32], ss[CLS_THREADS / 32];
    float m = -INFINITY, s = 0.0f;
    for (int c = threadIdx.x; c < V; c += blockDim.x) {
        float v = ldf(x[c]);
        if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }
        else s += expf(v - m);
    }
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
    classifier_kernel<T><<<N, CLS_THREADS>>>(logits, losses, d_targets, dloss, V, Vp, write_grad);
    KERNEL_CHECK();
}

#endif
