// cpu/matmul.c: fp32 GEMM for the CPU trainer. See matmul.h for the contract.
//
// The shape of the computation (the classic Goto/BLIS scheme, written for row-major C):
//
//   C (M, N) = init + A (M, K) @ B (K, N)
//
//   for each block of MC rows of C                      (i0)
//     for each block of KC steps of k, in order          (p0)   <- k order is fixed: determinism
//       pack A[i0:i0+MC, p0:p0+KC] into MR-row panels    (shared by all threads, lives in L3)
//       for each block of NC columns of C, in parallel   (j0)   <- one thread per block
//         pack B[p0:p0+KC, j0:j0+NC] into NR-col panels  (private to the thread, lives in its L2)
//         for each MR-row panel of A                      (ir)   <- A panel stays in L1
//           for each NR-col panel of B                    (jr)   <- B panels stream from L2
//             microkernel: an MR x NR tile of C held in registers, KC rank-1 updates
//
// Packing copies each operand once into the exact order the microkernel reads it (contiguous,
// aligned, zero-padded to whole panels), which also makes every transpose free: the three products
// of the backward pass are the same GEMM with different strides.
//
// Each element of C is computed as acc = init; for k in order: acc = fma(a_ik, b_kj, acc), in
// registers within a KC block and through C between blocks (a store/reload is exact). Edge tiles
// run the same microkernel on a zero-padded copy. So the result does not depend on the blocking,
// the tile an element falls in, or the thread that computed it.
//
// Two shortcuts around the GEMM: a forward pass with fewer than SMALL_M rows (sampling computes
// the logits of one position) is a set of dot products read straight from the weight rows, and a
// GEMM too small to pay for waking the other threads runs on one.
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu/matmul.h"
#include "common/util.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

// ---- blocking parameters ----------------------------------------------------------------------
// MR x NR: the register tile. AVX-512: 32 zmm registers hold MR x NR/16 accumulators plus the
// NR/16 vectors of B of the current k (the A values come as broadcast memory operands).
// KC: depth of one block; an A panel (MR x KC) fits in L1 and a B block (KC x NC) in L2 (1 MiB).
// MC: rows of A packed at once (MC x KC floats, read by all threads, in L3; two such buffers).
#if defined(__AVX512F__)
#define KERNEL_ISA "avx512"
#ifndef MM_MR
#define MM_MR 8
#endif
#define MM_NR 32
#elif defined(__AVX2__) && defined(__FMA__)
#define KERNEL_ISA "avx2"
#ifndef MM_MR
#define MM_MR 6
#endif
#define MM_NR 16
#else
#define KERNEL_ISA "generic"
#ifndef MM_MR
#define MM_MR 4
#endif
#define MM_NR 16
#endif
#ifndef MM_KC
#define MM_KC 256
#endif
#ifndef MM_NC
#define MM_NC 512
#endif
#ifndef MM_MC
#define MM_MC 2048
#endif

#define MR MM_MR
#define NR MM_NR
#define KC MM_KC
#define NC MM_NC
#define MC ((MM_MC + MM_MR - 1) / MM_MR * MM_MR)
#define SMALL_M 4       // forward with fewer rows than this: dot products, no GEMM
#define SMALL_FLOPS (1 << 20)  // GEMMs with M*N*K below this run on one thread
#define PACK_GROUP 16  // A panels packed together (transposed A: reads 16*MR contiguous floats per k)

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// What a microkernel starts its accumulators from.
enum { INIT_ZERO = 0, INIT_BIAS = 1, INIT_C = 2 };

// ---- microkernels -----------------------------------------------------------------------------
// C[0:MR, 0:NR] (row stride ldc) = init + Ap (KC x MR, k-major) @ Bp (KC x NR, k-major).
// init: INIT_ZERO, INIT_BIAS (bias[0:NR] on every row) or INIT_C (the tile's current values).

#if defined(__AVX512F__)
#define NV (NR / 16)  // zmm vectors per row of the tile
static void microkernel(int kc, const float* restrict Ap, const float* restrict Bp,
                        float* restrict Cp, long ldc, int init, const float* restrict bias) {
    __m512 acc[MR][NV];
    if (init == INIT_C) {
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_loadu_ps(Cp + r * ldc + 16 * v);
    } else {
        __m512 b[NV];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = init == INIT_BIAS ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = b[v];
    }
    for (int k = 0; k < kc; k++) {
        __m512 b[NV];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = _mm512_load_ps(Bp + 16 * v);
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m512 a = _mm512_set1_ps(Ap[r]);
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
        Ap += MR;
        Bp += NR;
    }
    #pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(Cp + r * ldc + 16 * v, acc[r][v]);
}
#elif defined(__AVX2__) && defined(__FMA__)
#define NV (NR / 8)  // ymm vectors per row of the tile
static void microkernel(int kc, const float* restrict Ap, const float* restrict Bp,
                        float* restrict Cp, long ldc, int init, const float* restrict bias) {
    __m256 acc[MR][NV];
    if (init == INIT_C) {
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_loadu_ps(Cp + r * ldc + 8 * v);
    } else {
        __m256 b[NV];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = init == INIT_BIAS ? _mm256_loadu_ps(bias + 8 * v) : _mm256_setzero_ps();
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = b[v];
    }
    for (int k = 0; k < kc; k++) {
        __m256 b[NV];
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) b[v] = _mm256_load_ps(Bp + 8 * v);
        #pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m256 a = _mm256_broadcast_ss(Ap + r);
            #pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(a, b[v], acc[r][v]);
        }
        Ap += MR;
        Bp += NR;
    }
    #pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
        #pragma GCC unroll 4
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(Cp + r * ldc + 8 * v, acc[r][v]);
}
#else
// Plain C: the same tile in a local array; the compiler vectorises the j loop where it can.
// Where the hardware has a fused multiply-add, use it (the arithmetic of the vector kernels);
// elsewhere fmaf would be a slow library call, so multiply and add.
static void microkernel(int kc, const float* restrict Ap, const float* restrict Bp,
                        float* restrict Cp, long ldc, int init, const float* restrict bias) {
    float acc[MR][NR];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++)
            acc[r][j] = init == INIT_C ? Cp[r * ldc + j] : init == INIT_BIAS ? bias[j] : 0.0f;
    for (int k = 0; k < kc; k++) {
        for (int r = 0; r < MR; r++) {
            float a = Ap[r];
#ifdef FP_FAST_FMAF
            for (int j = 0; j < NR; j++) acc[r][j] = fmaf(a, Bp[j], acc[r][j]);
#else
            for (int j = 0; j < NR; j++) acc[r][j] += a * Bp[j];
#endif
        }
        Ap += MR;
        Bp += NR;
    }
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) Cp[r * ldc + j] = acc[r][j];
}
#endif

// An edge tile (rows < MR or cols < NR): run the same microkernel on a zero-padded copy, so the
// valid elements see exactly the arithmetic of a full tile.
static void microkernel_edge(int kc, const float* Ap, const float* Bp, float* Cp, long ldc,
                             int init, const float* bias, int rows, int cols) {
    _Alignas(64) float tile[MR * NR];
    _Alignas(64) float btile[NR];
    memset(tile, 0, sizeof(tile));
    memset(btile, 0, sizeof(btile));
    if (init == INIT_C)
        for (int r = 0; r < rows; r++) memcpy(tile + r * NR, Cp + r * ldc, cols * sizeof(float));
    if (init == INIT_BIAS) memcpy(btile, bias, cols * sizeof(float));
    microkernel(kc, Ap, Bp, tile, NR, init, btile);
    for (int r = 0; r < rows; r++) memcpy(Cp + r * ldc, tile + r * NR, cols * sizeof(float));
}

// ---- packing ----------------------------------------------------------------------------------
// A panel of width W (MR for A, NR for B) and depth kc: dst[k*W + w] = src[w*lw + k*lk] for the
// n <= W lanes that exist, zero for the others. Two storage orders matter:
//  - lk == 1: each lane is contiguous in k (rows of inp or dout in A; rows of the weight in the
//    forward B). This is a transpose; it goes in 16-step blocks so the W source lines and the
//    16*W destination floats of a block stay in L1.
//  - lw == 1: each step k is contiguous across lanes (dout^T in A, weight / inp in B): a copy.
static inline __attribute__((always_inline)) void
pack_panel(const float* src, long lw, long lk, int n, int kc, int W, float* restrict dst) {
    if (lk == 1) {
        for (int k0 = 0; k0 < kc; k0 += 16) {
            int kb = imin(16, kc - k0);
            float* d = dst + (size_t)k0 * W;
            for (int w = 0; w < n; w++) {
                const float* s = src + w * lw + k0;
                for (int kk = 0; kk < kb; kk++) d[kk * W + w] = s[kk];
            }
            for (int kk = 0; kk < kb; kk++)
                for (int w = n; w < W; w++) d[kk * W + w] = 0.0f;
        }
    } else {
        for (int k = 0; k < kc; k++) {
            const float* s = src + k * lk;
            float* d = dst + (size_t)k * W;
            for (int w = 0; w < n; w++) d[w] = s[w * lw];
            for (int w = n; w < W; w++) d[w] = 0.0f;
        }
    }
}

#if defined(__AVX512F__)
// In-register transpose of a 16 x 16 block: on entry r[w] is lane w (16 consecutive k), on return
// r[k] holds step k of all 16 lanes. Three rounds: 4x4 transposes inside each 128-bit quarter
// (unpack + shuffle), then a 4x4 transpose of the quarters (two rounds of shuffle_f32x4).
static inline __attribute__((always_inline)) void transpose16x16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c]: quarter l holds lanes 4g..4g+3 at step 4l + c
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
        r[c] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[8 + c] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

// Loads 16 lanes (lane w at src + w*lw, 16 consecutive steps) and transposes them.
static inline __attribute__((always_inline)) void load_transpose16(const float* src, long lw, __m512 r[16]) {
    for (int w = 0; w < 16; w++) r[w] = _mm512_loadu_ps(src + w * lw);
    transpose16x16(r);
}
#endif

// `rows` rows of A (element (i, k) at A[i*rs + k*cs]), kc steps, into MR-row panels: row
// i = q*MR + r, step k goes to dst[q*MR*kc + k*MR + r]; lanes of the last panel past `rows` are 0.
static void pack_A(const float* A, long rs, long cs, int rows, int kc, float* restrict dst) {
    int full = rows / MR;
    int q = 0;
    if (rs == 1 && cs != 1) {
        // A stored transposed (dout^T in the weight gradient): walk k outermost, so each step
        // reads one contiguous stretch of the stored row instead of touching a new page per panel
        for (int k = 0; k < kc; k++) {
            const float* s = A + k * cs;
            for (int p = 0; p < full; p++)
                for (int r = 0; r < MR; r++) dst[(size_t)p * MR * kc + k * MR + r] = s[p * MR + r];
        }
        q = full;
    }
#if defined(__AVX512F__) && MM_MR == 8
    else if (cs == 1) {
        // rows contiguous in k (inp, dout): two panels at a time through 16 x 16 transposes
        int k16 = kc / 16 * 16;
        for (; q + 2 <= full; q += 2) {
            float* d0 = dst + (size_t)q * MR * kc;
            float* d1 = d0 + (size_t)MR * kc;
            const float* src = A + q * MR * rs;
            for (int k0 = 0; k0 < k16; k0 += 16) {
                __m512 r[16];
                load_transpose16(src + k0, rs, r);
                for (int kk = 0; kk < 16; kk++) {
                    _mm256_store_ps(d0 + (k0 + kk) * MR, _mm512_castps512_ps256(r[kk]));
                    _mm256_store_ps(d1 + (k0 + kk) * MR,
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(r[kk]), 1)));
                }
            }
            if (k16 < kc) {
                pack_panel(src + k16, rs, 1, MR, kc - k16, MR, d0 + k16 * MR);
                pack_panel(src + MR * rs + k16, rs, 1, MR, kc - k16, MR, d1 + k16 * MR);
            }
        }
    }
#endif
    for (; q < ceil_div(rows, MR); q++)
        pack_panel(A + q * MR * rs, rs, cs, imin(MR, rows - q * MR), kc, MR, dst + (size_t)q * MR * kc);
}

// `cols` columns of B (element (k, j) at B[k*rs + j*cs]), kc steps, into NR-column panels:
// column j = p*NR + c, step k goes to dst[p*NR*kc + k*NR + c]; columns past `cols` are zero.
static void pack_B(const float* B, long rs, long cs, int cols, int kc, float* restrict dst) {
    int full = cols / NR;
    int p = 0;
    if (cs == 1) {
        // rows of B contiguous (weight in dinp, inp in dweight): walk k outermost, reading each
        // stored row stretch once, sequentially
        for (int k = 0; k < kc; k++) {
            const float* s = B + k * rs;
            for (int q = 0; q < full; q++) memcpy(dst + (size_t)q * NR * kc + k * NR, s + q * NR, NR * sizeof(float));
        }
        p = full;
    }
#if defined(__AVX512F__)
    else if (rs == 1) {
        // B = weight^T in the forward pass: 16 x 16 transposes of weight rows
        int k16 = kc / 16 * 16;
        for (; p < full; p++) {
            float* d = dst + (size_t)p * NR * kc;
            const float* src = B + p * NR * cs;
            for (int k0 = 0; k0 < k16; k0 += 16)
                for (int h = 0; h < NR / 16; h++) {
                    __m512 r[16];
                    load_transpose16(src + 16 * h * cs + k0, cs, r);
                    for (int kk = 0; kk < 16; kk++) _mm512_store_ps(d + (k0 + kk) * NR + 16 * h, r[kk]);
                }
            if (k16 < kc) pack_panel(src + k16, cs, 1, NR, kc - k16, NR, d + k16 * NR);
        }
    }
#endif
    for (; p < ceil_div(cols, NR); p++)
        pack_panel(B + p * NR * cs, cs, rs, imin(NR, cols - p * NR), kc, NR, dst + (size_t)p * NR * kc);
}

// ---- workspace --------------------------------------------------------------------------------
// Per calling thread: one shared A block (MC x KC) and one B block (KC x NC) per OpenMP thread.
typedef struct {
    float* a[2];    // two A blocks (MC/MR panels, KC, MR): one is packed while the other is read
    float** b;      // nthreads x (NC/NR panels, KC, NR)
    int nthreads;   // how many B blocks are allocated
} Workspace;

static _Thread_local Workspace ws_ = {0};

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static size_t ws_bytes_for(int nthreads) {
    return 2 * (size_t)MC * KC * sizeof(float) + (size_t)nthreads * KC * NC * sizeof(float);
}

static void* alloc64(size_t bytes) {
    void* p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    CHECK(p != NULL);
    return p;
}

static Workspace* workspace_get(int nthreads) {
    Workspace* w = &ws_;
    for (int i = 0; i < 2; i++)
        if (!w->a[i]) w->a[i] = alloc64((size_t)MC * KC * sizeof(float));
    if (w->nthreads < nthreads) {
        float** b = xmalloc((size_t)nthreads * sizeof(float*));
        for (int t = 0; t < nthreads; t++)
            b[t] = t < w->nthreads ? w->b[t] : alloc64((size_t)KC * NC * sizeof(float));
        free(w->b);
        w->b = b;
        w->nthreads = nthreads;
    }
    return w;
}

size_t matmul_workspace_bytes(void) {
    int n = ws_.nthreads > max_threads() ? ws_.nthreads : max_threads();
    return ws_bytes_for(n);
}

const char* matmul_kernel_name(void) {
#define STR_(x) #x
#define STR(x) STR_(x)
    return KERNEL_ISA " " STR(MM_MR) "x" STR(MM_NR);
}

// ---- the GEMM ---------------------------------------------------------------------------------

// C[0:rows, 0:cols] for one packed A panel against a packed B block of ncols columns.
static void compute_row_panel(int kc, const float* Ap, const float* Bblock, int ncols,
                              float* C, long ldc, int init, const float* bias, int rows) {
    for (int jr = 0; jr < ncols; jr += NR) {
        int cols = imin(NR, ncols - jr);
        const float* Bp = Bblock + (size_t)jr * kc;
        const float* bj = bias ? bias + jr : NULL;
        // C is far bigger than the caches: fetch the next tile while this one computes (the
        // first tile of the next row panel after the last one), or the kernel stalls on its loads.
        // A prefetch never faults, so one that runs past the end of C is harmless.
        float* next = jr + NR < ncols ? C + jr + NR : C + (size_t)MR * ldc;
        for (int r = 0; r < MR; r++)
            for (int v = 0; v < NR; v += 16) __builtin_prefetch(next + r * ldc + v, 1, 3);
        if (rows == MR && cols == NR) microkernel(kc, Ap, Bp, C + jr, ldc, init, bj);
        else microkernel_edge(kc, Ap, Bp, C + jr, ldc, init, bj, rows, cols);
    }
}

void matmul_gemm(int M, int N, int K, const float* A, long rs_a, long cs_a,
                 const float* B, long rs_b, long cs_b, float* C, long ldc,
                 int accumulate, const float* bias) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        // empty sum: C = init
        if (!accumulate)
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = bias ? bias[j] : 0.0f;
        return;
    }
    // Tiny products are not worth waking the other threads (their barriers would cost more than
    // the arithmetic); the thread count never changes the result, only the speed.
    int nthreads = (double)M * N * K < SMALL_FLOPS ? 1 : max_threads();
    Workspace* ws = workspace_get(nthreads);

    // Column blocks: at most NC wide. When there are few of them, make their count a multiple of
    // the thread count and their widths equal, so no thread idles at the end. If N is too narrow
    // for one block per thread, the rows of each column block are split into `mparts` parts too.
    int njb = ceil_div(N, NC);
    if (njb < 4 * nthreads) njb = ceil_div(njb, nthreads) * nthreads;
    int nc = imin(NC, ceil_div(ceil_div(N, njb), NR) * NR);
    njb = ceil_div(N, nc);
    int mparts = njb >= nthreads ? 1 : ceil_div(nthreads, njb);

    #pragma omp parallel num_threads(nthreads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float* Bblock = ws->b[tid];
        int blk = 0;  // which A buffer: alternates with every (i0, p0) block
        for (int i0 = 0; i0 < M; i0 += MC) {
            int mc = imin(MC, M - i0);
            int npanels = ceil_div(mc, MR);
            for (int p0 = 0; p0 < K; p0 += KC) {
                int kc = imin(KC, K - p0);
                int init = p0 > 0 || accumulate ? INIT_C : bias ? INIT_BIAS : INIT_ZERO;
                float* Ablock = ws->a[blk++ & 1];
                // All threads pack the A block together, a group of PACK_GROUP panels each; the
                // barrier at the end is the only one per block. The compute loop below ends
                // without one (nowait): a thread done early packs the next block into the other
                // buffer, which no one reads any more (everyone passed this barrier, so finished
                // the block before), and no one computes the next block, whose C tiles may still
                // be in use, before everyone has finished this one and reached the next barrier.
                #pragma omp for schedule(static)
                for (int g = 0; g < npanels; g += PACK_GROUP) {
                    int i = i0 + g * MR;
                    pack_A(A + i * rs_a + p0 * cs_a, rs_a, cs_a, imin(PACK_GROUP * MR, M - i), kc,
                           Ablock + (size_t)g * MR * kc);
                }
                // each work item: one column block (packed privately) x one part of the rows
                #pragma omp for schedule(dynamic, 1) nowait
                for (int w = 0; w < njb * mparts; w++) {
                    int jb = w / mparts, part = w % mparts;
                    int j0 = jb * nc, ncols = imin(nc, N - j0);
                    pack_B(B + p0 * rs_b + j0 * cs_b, rs_b, cs_b, ncols, kc, Bblock);
                    int q0 = part * npanels / mparts, q1 = (part + 1) * npanels / mparts;
                    for (int q = q0; q < q1; q++) {
                        int i = i0 + q * MR;
                        compute_row_panel(kc, Ablock + (size_t)q * MR * kc, Bblock, ncols,
                                          C + (size_t)i * ldc + j0, ldc, init,
                                          bias ? bias + j0 : NULL, imin(MR, M - i));
                    }
                }
            }
        }
    }
}

// ---- the trainer's API ------------------------------------------------------------------------

// dot(a, b) over n floats with 16 independent partial sums (vectorisable without reassociating:
// lane j always sums the terms k = j mod 16 in order), then the lanes in a fixed order.
static float dot16(const float* a, const float* b, int n) {
    float acc[16] = {0};
    int k = 0;
    for (; k + 16 <= n; k += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[k + j] * b[k + j];
    for (int j = 0; k < n; k++, j++) acc[j] += a[k] * b[k];
    float s = 0.0f;
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias,
                    int BT, int C, int OC) {
    if (BT < SMALL_M) {
        // a few rows (sampling: the logits of the last position): dot products straight from the
        // weight rows; packing the whole weight for so little arithmetic would cost more than it
        #pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++)
            for (int b = 0; b < BT; b++)
                out[(size_t)b * OC + o] = (bias ? bias[o] : 0.0f) + dot16(inp + (size_t)b * C, weight + (size_t)o * C, C);
        return;
    }
    // out (BT, OC) = inp (BT, C) @ B, with B (C, OC) = weight^T: B(k, j) = weight[j*C + k]
    matmul_gemm(BT, OC, C, inp, C, 1, weight, 1, C, out, OC, 0, bias);
}

// dbias (OC) += column sums of dout (BT, OC). Each column is summed in row order by one thread,
// so the result is deterministic for any thread count; chunks of columns keep the reads streaming.
static void bias_backward(float* dbias, const float* dout, int BT, int OC) {
    enum { CHUNK = 256 };
    int nchunks = ceil_div(OC, CHUNK);
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < nchunks; c++) {
        int o0 = c * CHUNK, n = imin(CHUNK, OC - o0);
        float sum[CHUNK];
        for (int o = 0; o < n; o++) sum[o] = 0.0f;
        for (int b = 0; b < BT; b++) {
            const float* row = dout + (size_t)b * OC + o0;
            for (int o = 0; o < n; o++) sum[o] += row[o];
        }
        for (int o = 0; o < n; o++) dbias[o0 + o] += sum[o];
    }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int BT, int C, int OC) {
    // dinp (BT, C) += dout (BT, OC) @ weight (OC, C)
    if (dinp) matmul_gemm(BT, C, OC, dout, OC, 1, weight, C, 1, dinp, C, 1, NULL);
    // dweight (OC, C) += dout^T (OC, BT) @ inp (BT, C): A(i, k) = dout[k*OC + i]
    if (dweight) matmul_gemm(OC, C, BT, dout, 1, OC, inp, C, 1, dweight, C, 1, NULL);
    if (dbias) bias_backward(dbias, dout, BT, OC);
}
