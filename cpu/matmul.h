// cpu/matmul.h: the fp32 matrix multiplies of the CPU trainer (llm.c's matmul_forward /
// matmul_backward, same semantics), written as one cache-blocked, packed, register-blocked GEMM
// with an AVX-512 microkernel (AVX2/FMA and plain C fallbacks), parallel with OpenMP.
//
// All matrices are row-major fp32. Any sizes work (1 included).
// Determinism: every output element is one fixed chain of fused multiply-adds in k order, started
// from its initial value (0, the bias, or the old value when accumulating). Threads only decide
// WHO computes a tile, never how, so results are bitwise the same run to run and for any number of
// OpenMP threads (for one build: the AVX-512, AVX2 and plain-C kernels round differently).
//
// The packing workspace belongs to the calling thread (_Thread_local), so two threads may call
// these at the same time. Called from inside an OpenMP parallel region they run on one thread.
#ifndef CPU_MATMUL_H
#define CPU_MATMUL_H

#include <stddef.h>

// out (BT, OC) = inp (BT, C) @ weight (OC, C)^T + bias (OC). bias may be NULL. Overwrites out.
void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int BT, int C, int OC);

// Accumulates (+=) the three gradients of matmul_forward:
//   dinp (BT, C)     += dout (BT, OC) @ weight (OC, C)
//   dweight (OC, C)  += dout^T (OC, BT) @ inp (BT, C)
//   dbias (OC)       += sum over the BT rows of dout
// dinp, dweight or dbias may be NULL: that product is skipped.
void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int BT, int C, int OC);

// The general product behind both: C (M, N) = init + A (M, K) @ B (K, N), where element (i, k) of A
// is A[i*rs_a + k*cs_a] and element (k, j) of B is B[k*rs_b + j*cs_b] (so transposes are free).
// init is the old C when accumulate != 0, else bias[j] (bias may be NULL: zero). ldc: row stride of C.
void matmul_gemm(int M, int N, int K, const float* A, long rs_a, long cs_a,
                 const float* B, long rs_b, long cs_b, float* C, long ldc,
                 int accumulate, const float* bias);

// Bytes of packing workspace the matmuls hold for the calling thread (allocated once on first use,
// grown only if the OpenMP thread count grows). Valid before the first call too: it is the size the
// first call will allocate for the current omp_get_max_threads().
size_t matmul_workspace_bytes(void);

// Which microkernel this build uses: "avx512 MRxNR", "avx2 MRxNR" or "generic MRxNR".
const char* matmul_kernel_name(void);

#endif
