// common/cuda_util.cuh: what every CUDA file shares: error checks that name file:line, the storage types
// (bf16 or fp32, picked by a template parameter), bf16 rounding that matches the CPU bit for bit
// (round to nearest even, and stochastic rounding with the CPU's hash), warp reductions, and device
// allocation through the memory ledger with a clean out-of-memory exit.
#ifndef COMMON_CUDA_UTIL_CUH
#define COMMON_CUDA_UTIL_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublasLt.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <math.h>
#include "common/util.h"
#include "common/numerics.h"
#include "common/ledger.h"

typedef __nv_bfloat16 bf16d; // bf16 on the device; same bits as the CPU's uint16_t bf16

// ---- errors ----------------------------------------------------------------------------------------
// An out-of-memory error (from cudaMalloc, or cuBLAS failing to allocate) ends the run through this
// hook, which the trainer sets to print the memory ledger and a hint, exit 2. Anything else is an
// internal error: the failing call, file and line, exit 1.
static void (*g_cuda_oom_hook)(const char* what) = NULL;

static void cuda_fail_(cudaError_t e, const char* expr, const char* file, int line) {
    if (e == cudaErrorMemoryAllocation && g_cuda_oom_hook) g_cuda_oom_hook(expr);
    fprintf(stderr, "internal error at %s:%d: CUDA error %s (%s) in %s\n", file, line, cudaGetErrorName(e),
            cudaGetErrorString(e), expr);
    exit(1);
}
static void cublas_fail_(cublasStatus_t s, const char* expr, const char* file, int line) {
    if (s == CUBLAS_STATUS_ALLOC_FAILED && g_cuda_oom_hook) g_cuda_oom_hook(expr);
    fprintf(stderr, "internal error at %s:%d: cuBLAS error %d in %s\n", file, line, (int)s, expr);
    exit(1);
}
#define CUDA_CHECK(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) cuda_fail_(e_, #call, __FILE__, __LINE__); } while (0)
#define CUBLAS_CHECK(call) do { cublasStatus_t s_ = (call); if (s_ != CUBLAS_STATUS_SUCCESS) cublas_fail_(s_, #call, __FILE__, __LINE__); } while (0)
// After every kernel launch: a bad launch configuration shows up here, at the launch's line.
#define KERNEL_CHECK() CUDA_CHECK(cudaGetLastError())

static inline unsigned ceil_div_u(size_t a, size_t b) { return (unsigned)((a + b - 1) / b); }

// ---- storage types ---------------------------------------------------------------------------------
// Kernels are templates over the storage type T (float or bf16d); arithmetic is always fp32.
__device__ __forceinline__ float ldf(float x) { return x; }
__device__ __forceinline__ float ldf(bf16d x) { return __bfloat162float(x); }

__device__ __forceinline__ bf16d bf16_from_bits(uint16_t b) {
    __nv_bfloat16_raw r;
    r.x = b;
    return bf16d(r);
}

template <typename T> __device__ __forceinline__ T stf(float x);
template <> __device__ __forceinline__ float stf<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16d stf<bf16d>(float x) { return bf16_from_bits(f32_to_bf16(x)); }

// ---- 16-byte vectors -------------------------------------------------------------------------------
// Pack<T>: 16 bytes of storage type T (8 bf16 or 4 fp32), moved with one 128-bit load or store. The
// address must be 16-byte aligned (the launchers check it and take scalar kernels otherwise). Plain
// (coherent) loads: some kernels re-read what the same thread just stored.
template <typename T> struct alignas(16) Pack {
    static constexpr int N = 16 / (int)sizeof(T);
    T v[16 / sizeof(T)];
};
template <typename T> __device__ __forceinline__ Pack<T> ld_pack(const T* p) {
    Pack<T> r;
    *reinterpret_cast<int4*>(&r) = *reinterpret_cast<const int4*>(p);
    return r;
}
template <typename T> __device__ __forceinline__ void st_pack(T* p, const Pack<T>& r) {
    *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(&r);
}

// ---- reductions (fixed shuffle pattern: deterministic) ---------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ---- device memory through the ledger --------------------------------------------------------------
#define MAX_DEV_ALLOCS 64
static void* g_dev_allocs[MAX_DEV_ALLOCS];
static int g_num_dev_allocs = 0;
static Ledger* g_oom_ledger = NULL;   // printed by the out-of-memory exit
static size_t g_oom_num_params = 0;

// cudaMalloc `bytes` (zeroed) under (cat, label) in the ledger. A dry ledger records only (NULL).
// Out of memory: the ledger so far, a hint, exit 2.
static void* dev_alloc(Ledger* led, MemCategory cat, const char* label, size_t bytes) {
    if (led->dry || bytes == 0) { ledger_record(led, cat, label, bytes, NULL); return NULL; }
    void* p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); // clear the sticky-free error so later calls still work
        ledger_record(led, cat, label, bytes, NULL);
        char what[160];
        snprintf(what, sizeof(what), "allocating %.1f MiB for %s/%s", bytes / 1048576.0, ledger_category_name(cat), label);
        if (g_cuda_oom_hook) g_cuda_oom_hook(what);
        fprintf(stderr, "error: out of GPU memory %s (%s)\n", what, cudaGetErrorString(e));
        exit(EXIT_USER);
    }
    CUDA_CHECK(cudaMemset(p, 0, bytes));
    ledger_record(led, cat, label, bytes, p);
    CHECK(g_num_dev_allocs < MAX_DEV_ALLOCS);
    g_dev_allocs[g_num_dev_allocs++] = p;
    return p;
}

static void dev_free_all(void) {
    for (int i = 0; i < g_num_dev_allocs; i++) CUDA_CHECK(cudaFree(g_dev_allocs[i]));
    g_num_dev_allocs = 0;
}

// Device memory in use (total - free), the number the summary's peak is made of.
static size_t device_used_bytes(void) {
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return total_b - free_b;
}

#endif
