// cuda/encoder.cuh: token + position embedding, forward and backward.
// Backward is deterministic without atomics: the host groups the batch's positions by token (the
// inputs live on the host anyway), and one block per distinct token sums that token's rows in
// increasing position order, the order the CPU's loop adds them in.
// With C % W == 0 and 16-byte aligned tensors (always in the trainer) every kernel moves 16-byte vectors
// (W = 8 bf16 or 4 fp32; cuda/memk_plan.h): the forward one vector per thread (a vector never straddles two
// rows), the wte backward one vector of the token's row per thread, the wpe backward one vector of a
// position's row per thread; the same sums in the same order as the scalar kernels, which stay as the
// fallback.
#ifndef CUDA_ENCODER_CUH
#define CUDA_ENCODER_CUH

#include "common/cuda_util.cuh"
#include "cuda/memk_plan.h"

// out (B,T,C) = wte[tok] + wpe[t]
template <typename T>
__global__ void encoder_forward_kernel(T* out, const int* inp, const T* wte, const T* wpe, int BT, int Tn, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)BT * C) return;
    int bt = (int)(idx / C), c = (int)(idx % C);
    int t = bt % Tn;
    out[idx] = stf<T>(ldf(wte[(size_t)inp[bt] * C + c]) + ldf(wpe[(size_t)t * C + c]));
}

// dwte[tok] += sum of dout over the positions holding tok (positions in increasing order).
// tokens (U): the distinct tokens; starts (U+1): CSR row starts into positions.
template <typename T>
__global__ void encoder_backward_wte_kernel(T* dwte, const T* dout, const int* tokens, const int* starts,
                                            const int* positions, int C) {
    int u = blockIdx.x;
    const int tok = tokens[u];
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float acc = ldf(dwte[(size_t)tok * C + c]);
        for (int k = starts[u]; k < starts[u + 1]; k++) acc += ldf(dout[(size_t)positions[k] * C + c]);
        dwte[(size_t)tok * C + c] = stf<T>(acc);
    }
}

// dwpe[t] += sum over b of dout[b, t]
template <typename T>
__global__ void encoder_backward_wpe_kernel(T* dwpe, const T* dout, int B, int Tn, int C) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)Tn * C) return;
    int t = (int)(idx / C), c = (int)(idx % C);
    float acc = ldf(dwpe[idx]);
    for (int b = 0; b < B; b++) acc += ldf(dout[((size_t)b * Tn + t) * C + c]);
    dwpe[idx] = stf<T>(acc);
}

// ---- 16-byte vectors (C % W == 0, aligned) ----------------------------------------------------------
// thread g: elements [g W, g W + W) of out (B T C), inside row bt = g W / C
template <typename T>
__global__ void encoder_forward_vec_kernel(T* out, const int* inp, const T* wte, const T* wpe, int BT, int Tn, int C) {
    const int W = Pack<T>::N;
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (memk_ew_count(g, (size_t)BT * C, W) != W) return; // C % W == 0: no tail
    const size_t idx = g * W;
    const int bt = (int)(idx / C), c = (int)(idx % C);
    const int t = bt % Tn;
    const Pack<T> a = ld_pack(wte + (size_t)inp[bt] * C + c), b = ld_pack(wpe + (size_t)t * C + c);
    Pack<T> o;
#pragma unroll
    for (int j = 0; j < W; j++) o.v[j] = stf<T>(ldf(a.v[j]) + ldf(b.v[j]));
    st_pack(out + idx, o);
}

// block u: token tokens[u]; thread i takes the vectors i, i + blockDim.x, ... of its row
template <typename T>
__global__ void encoder_backward_wte_vec_kernel(T* dwte, const T* dout, const int* tokens, const int* starts,
                                                const int* positions, int C) {
    const int W = Pack<T>::N;
    const int u = blockIdx.x;
    const int tok = tokens[u];
    const int iters = memk_row_iters(C / W, threadIdx.x, blockDim.x);
    for (int k = 0; k < iters; k++) {
        const int c = memk_row_vec(threadIdx.x, k, blockDim.x) * W;
        T* dst = dwte + (size_t)tok * C + c;
        Pack<T> a = ld_pack(dst);
        float acc[Pack<T>::N];
#pragma unroll
        for (int j = 0; j < W; j++) acc[j] = ldf(a.v[j]);
        for (int q = starts[u]; q < starts[u + 1]; q++) {
            const Pack<T> d = ld_pack(dout + (size_t)positions[q] * C + c);
#pragma unroll
            for (int j = 0; j < W; j++) acc[j] += ldf(d.v[j]);
        }
#pragma unroll
        for (int j = 0; j < W; j++) a.v[j] = stf<T>(acc[j]);
        st_pack(dst, a);
    }
}

// thread g: elements [g W, g W + W) of dwpe (T C)
template <typename T>
__global__ void encoder_backward_wpe_vec_kernel(T* dwpe, const T* dout, int B, int Tn, int C) {
    const int W = Pack<T>::N;
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (memk_ew_count(g, (size_t)Tn * C, W) != W) return;
    const size_t idx = g * W;
    Pack<T> a = ld_pack(dwpe + idx);
    float acc[Pack<T>::N];
#pragma unroll
    for (int j = 0; j < W; j++) acc[j] = ldf(a.v[j]);
    for (int b = 0; b < B; b++) {
        const Pack<T> d = ld_pack(dout + (size_t)b * Tn * C + idx);
#pragma unroll
        for (int j = 0; j < W; j++) acc[j] += ldf(d.v[j]);
    }
#pragma unroll
    for (int j = 0; j < W; j++) a.v[j] = stf<T>(acc[j]);
    st_pack(dwpe + idx, a);
}

template <typename T>
static void encoder_forward(T* out, const int* d_inp, const T* wte, const T* wpe, int B, int Tn, int C) {
    size_t n = (size_t)B * Tn * C;
    const int W = Pack<T>::N;
    if (C % W == 0 && memk_aligned16(out) && memk_aligned16(wte) && memk_aligned16(wpe))
        encoder_forward_vec_kernel<T><<<ceil_div_u(memk_ew_threads(n, W), 256), 256>>>(out, d_inp, wte, wpe, B * Tn, Tn, C);
    else
        encoder_forward_kernel<T><<<ceil_div_u(n, 256), 256>>>(out, d_inp, wte, wpe, B * Tn, Tn, C);
    KERNEL_CHECK();
}

// Host side of the grouping: fills (tokens, starts, positions) for the batch in host memory.
// tokens/starts need room for BT (+1) entries; counts is a (V) scratch. Returns the distinct count U.
static int encoder_group_positions(const int* inp, int BT, int V, int* counts, int* tokens, int* starts, int* positions) {
    memset(counts, 0, sizeof(int) * (size_t)V);
    int U = 0;
    for (int i = 0; i < BT; i++) if (counts[inp[i]]++ == 0) tokens[U++] = inp[i];
    // starts in the order tokens first appear; reuse counts as the write cursor of each token
    int s = 0;
    for (int u = 0; u < U; u++) { int tok = tokens[u]; starts[u] = s; s += counts[tok]; counts[tok] = starts[u]; }
    starts[U] = s;
    for (int i = 0; i < BT; i++) positions[counts[inp[i]]++] = i;
    return U;
}

// d_group: device copy of (tokens[U], starts[U+1], positions[BT]) packed as uploaded by the caller.
template <typename T>
static void encoder_backward(T* dwte, T* dwpe, const T* dout, const int* d_tokens, const int* d_starts,
                             const int* d_positions, int U, int B, int Tn, int C) {
    const int W = Pack<T>::N;
    const int vec = C % W == 0 && memk_aligned16(dwte) && memk_aligned16(dwpe) && memk_aligned16(dout);
    if (U > 0) {
        if (vec) encoder_backward_wte_vec_kernel<T><<<U, ENC_WTE_THREADS>>>(dwte, dout, d_tokens, d_starts, d_positions, C);
        else encoder_backward_wte_kernel<T><<<U, 256>>>(dwte, dout, d_tokens, d_starts, d_positions, C);
        KERNEL_CHECK();
    }
    size_t n = (size_t)Tn * C;
    if (vec) encoder_backward_wpe_vec_kernel<T><<<ceil_div_u(memk_ew_threads(n, W), 256), 256>>>(dwpe, dout, B, Tn, C);
    else encoder_backward_wpe_kernel<T><<<ceil_div_u(n, 256), 256>>>(dwpe, dout, B, Tn, C);
    KERNEL_CHECK();
}

#endif
