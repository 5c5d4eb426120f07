// cuda/gelu.cuh: GELU (tanh approximation, as GPT-2), the residual add and a bias add, elementwise.
#ifndef CUDA_GELU_CUH
#define CUDA_GELU_CUH

#include "common/cuda_util.cuh"

#define GELU_SCALING_FACTOR_D 0.7978845608028654f // sqrt(2 / pi)

template <typename T>
__global__ void gelu_forward_kernel(T* out, const T* inp, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = ldf(inp[i]);
    out[i] = stf<T>(0.5f * x * (1.0f + tanhf(GELU_SCALING_FACTOR_D * (x + 0.044715f * x * x * x))));
}

// dinp = gelu'(inp) * dout; dinp may alias dout
template <typename T>
__global__ void gelu_backward_kernel(T* dinp, const T* inp, const T* dout, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N) return;
    float x = ldf(inp[i]);
    float u = GELU_SCALING_FACTOR_D * (x + 0.044715f * x * x * x);
    float th = tanhf(u);
    float sech2 = 1.0f - th * th;
    float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALING_FACTOR_D * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = stf<T>(grad * ldf(dout[i]));
}

template <typename T>
__global__ void residual_forward_kernel(T* out, const T* a, const T* b, size_t N) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N) out[i] = stf<T>(ldf(a[i]) + ldf(b[i]));
}

// out (N, OC) += bias (OC), for matmuls whose bias pointer cuBLASLt's epilogue cannot take
template <typename T>
__global__ void add_bias_kernel(T* out, const T* bias, size_t N, int OC) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < N * OC) out[i] = stf<T>(ldf(out[i]) + ldf(bias[i % OC]));
}

template <typename T> static void gelu_forward(T* out, const T* inp, size_t N) {
    gelu_forward_kernel<T><<<ceil_div_u(N, 256), 256>>>(out, inp, N);
    KERNEL_CHECK();
}
template <typename T> static void gelu_backward(T* dinp, const T* inp, const T* dout, size_t N) {
    gelu_backward_kernel<T><<<ceil_div_u(N, 256), 256>>>(dinp, inp, dout, N);
    KERNEL_CHECK();
}
template <typename T> static void residual_forward(T* out, const T* a, const T* b, size_t N) {
    residual_forward_kernel<T><<<ceil_div_u(N, 256), 256>>>(out, a, b, N);
    KERNEL_CHECK();
}
template <typename T> static void add_bias(T* out, const T* bias, size_t N, int OC) {
    add_bias_kernel<T><<<ceil_div_u(N * OC, 256), 256>>>(out, bias, N, OC);
    KERNEL_CHECK();
}

#endif
