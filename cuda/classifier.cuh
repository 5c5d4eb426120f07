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

template <typename T>
__global__ void __launch_bounds__(CLS_THREADS) classifier_kernel(T* logits, float* losses, const int* targets, float dloss,
                                                                 int V, int Vp, int write_grad) {
    __shared__ float sm[CLS_THREADS / 32], ss[CLS_THREADS / 32];
    const int row = blockIdx.x;
    T* x = logits + (size_t)row * Vp;
    // pass 1: per-thread online max/sum over a strided slice of the row
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

// losses (N) = -log softmax(logits)[target]; with write_grad the logits become dlogits (scaled by dloss).
template <typename T>
static void classifier(T* logits, float* losses, const int* d_targets, float dloss, int N, int V, int Vp, int write_grad) {
    classifier_kernel<T><<<N, CLS_THREADS>>>(logits, losses, d_targets, dloss, V, Vp, write_grad);
    KERNEL_CHECK();
}

#endif
