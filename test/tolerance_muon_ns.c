// test/tolerance_muon_ns.c: where test_gpt2cu's tolerance on the CUDA Muon update comes from (check 3d).
// Not a test (make test does not build it): a measurement, on the CPU, of how far muon.c's bf16
// Newton-Schulz output moves when nothing changes but the fp32 summation order inside its matmuls, which
// is the only difference between the CPU's matmul and a cuBLAS bf16 GEMM with fp32 accumulation. For
// scale, it also measures what real mistakes do.
//   gcc -O2 -I. test/tolerance_muon_ns.c -lm -o build/tolerance_muon_ns && build/tolerance_muon_ns
//
// X: random bf16 (s, l) matrices (normal entries, column scales 1..7, so the singular values spread), the
// shapes of test_gpt2cu's check (after Muon's transpose of tall matrices). The reference is muon.c's
// iteration (normalize, 5 quintic steps, every op rounded to bf16, matmuls summed sequentially in fp32).
// Against it, per shape and in relative Frobenius norm (and max |difference| in bf16 ulps, 2^-8, of the
// largest entry):
//   reversed: the matmul sums k from K-1 down to 0
//   blocked:  16 products at a time added pairwise, each add truncated to 21 mantissa bits (rougher than
//             any GPU accumulator), the blocks added in order
//   and the mistakes: 4 or 6 iterations, PyTorch 1.13's bf16-rounded coefficients, fp32 throughout.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "optim/muon.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

enum { V_REVERSED, V_BLOCKED, V_ITER4, V_ITER6, V_COEF_BF16, V_FP32, NV };
static const char* VNAME[NV] = { "reversed sums", "blocked + truncated sums", "4 iterations", "6 iterations",
                                 "bf16-rounded coefficients", "fp32 iteration" };

typedef struct { int order, iters, fp32; float a, b, c; } Variant;

static uint64_t g_rng = 88172645463325252ull;
static double urand(void) {
    g_rng ^= g_rng << 13; g_rng ^= g_rng >> 7; g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}
static float nrand(void) { return (float)(sqrt(-2.0 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }
static float trunc21(float x) { uint32_t u; memcpy(&u, &x, 4); u &= ~0x3u; memcpy(&x, &u, 4); return x; }
static float rnd(const Variant* v, float x) { return v->fp32 ? x : muon_bf16(x); }

// C (M, N) = round(A (M, K) @ B), B(k, j) at B[k*rsb + j*csb], summed in the variant's order.
static void mm(const Variant* v, int M, int N, int K, const float* A, const float* B, long rsb, long csb, float* C) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            const float* a = A + (long)i * K;
            float acc = 0.0f;
            if (v->order == 0) for (int k = 0; k < K; k++) acc += a[k] * B[k * rsb + j * csb];
            else if (v->order == 1) for (int k = K - 1; k >= 0; k--) acc += a[k] * B[k * rsb + j * csb];
            else
                for (int k0 = 0; k0 < K; k0 += 16) {
                    float p[16] = { 0 };
                    for (int k = 0; k < 16 && k0 + k < K; k++) p[k] = a[k0 + k] * B[(k0 + k) * rsb + j * csb];
                    for (int w = 8; w >= 1; w >>= 1) for (int k = 0; k < w; k++) p[k] = trunc21(p[k] + p[k + w]);
                    acc = trunc21(acc + p[0]);
                }
            C[(long)i * N + j] = rnd(v, acc);
        }
}

// muon.c's muon_newton_schulz, with the variant's order, iterations, coefficients and rounding.
static void newton_schulz(const Variant* v, float* X, int s, int l) {
    const long ss = (long)s * s, sl = (long)s * l;
    float* A = malloc(4 * ss), *cA = malloc(4 * ss), *T = malloc(4 * ss), *BX = malloc(4 * sl);
    double sumsq = 0.0;
    for (long i = 0; i < sl; i++) sumsq += (double)X[i] * X[i];
    const float denom = rnd(v, rnd(v, (float)sqrt(sumsq)) + MUON_NS_EPS);
    for (long i = 0; i < sl; i++) X[i] = rnd(v, X[i] / denom);
    for (int it = 0; it < v->iters; it++) {
        mm(v, s, s, l, X, X, 1, l, A);
        for (long i = 0; i < ss; i++) cA[i] = rnd(v, v->c * A[i]);
        mm(v, s, s, s, cA, A, s, 1, T);
        for (long i = 0; i < ss; i++) cA[i] = rnd(v, rnd(v, v->b * A[i]) + T[i]);
        mm(v, s, l, s, cA, X, l, 1, BX);
        for (long i = 0; i < sl; i++) X[i] = rnd(v, rnd(v, v->a * X[i]) + BX[i]);
    }
    free(A); free(cA); free(T); free(BX);
}

int main(void) {
    // (s, l) after the transpose: test_gpt2cu's (37, 83) and (83, 37), (40, 24), (200, 96), (64, 300), and
    // muon.c's test shapes (29, 41), (36, 12); small ones get more trials (their results vary more)
    const int shape[][3] = { { 37, 83, 800 }, { 24, 40, 800 }, { 96, 200, 80 }, { 64, 300, 80 }, { 29, 41, 800 },
                             { 12, 36, 800 } };
    const Variant ref = { 0, MUON_NS_STEPS, 0, MUON_NS_A, MUON_NS_B, MUON_NS_C };
    Variant var[NV];
    for (int k = 0; k < NV; k++) var[k] = ref;
    var[V_REVERSED].order = 1;
    var[V_BLOCKED].order = 2;
    var[V_ITER4].iters = 4;
    var[V_ITER6].iters = 6;
    var[V_COEF_BF16].a = 3.4375f; var[V_COEF_BF16].b = -4.78125f; var[V_COEF_BF16].c = 2.03125f;
    var[V_FP32].fp32 = 1;
    double all_fro[NV] = { 0 }, all_ulps[NV] = { 0 }, min_fro[NV];
    for (int k = 0; k < NV; k++) min_fro[k] = 1e30;
    int trials = 0;
    for (size_t si = 0; si < sizeof(shape) / sizeof(shape[0]); si++) {
        const int s = shape[si][0], l = shape[si][1], nseed = shape[si][2];
        const long n = (long)s * l;
        double wf[NV] = { 0 }, wu[NV] = { 0 };
        float* X0 = malloc(4 * n), *R0 = malloc(4 * n), *R = malloc(4 * n);
        for (int seed = 0; seed < nseed; seed++, trials++) {
            for (long i = 0; i < n; i++) X0[i] = muon_bf16(nrand() * (float)(1 + i % 7));
            memcpy(R0, X0, 4 * n);
            newton_schulz(&ref, R0, s, l);
            double mx = 0.0, den = 0.0;
            for (long i = 0; i < n; i++) { mx = fmax(mx, fabs(R0[i])); den += (double)R0[i] * R0[i]; }
            // the mistakes are the same size on every matrix: measured on the first 20 only
            for (int k = 0; k < NV; k++) {
                if (k >= V_ITER4 && seed >= 20) continue;
                memcpy(R, X0, 4 * n);
                newton_schulz(&var[k], R, s, l);
                double num = 0.0, md = 0.0;
                for (long i = 0; i < n; i++) { const double d = fabs((double)R[i] - R0[i]); num += d * d; md = fmax(md, d); }
                const double fro = sqrt(num / den), ulps = md / mx * 256.0;
                wf[k] = fmax(wf[k], fro);
                wu[k] = fmax(wu[k], ulps);
                if (k >= V_ITER4) min_fro[k] = fmin(min_fro[k], fro);
            }
        }
        for (int k = 0; k < NV; k++) {
            printf("(%3d, %3d) x %3d  %-26s worst relative Frobenius %.4f, worst max |diff| %5.1f bf16 ulps of the largest entry\n", s, l,
                   k >= V_ITER4 ? 20 : nseed, VNAME[k], wf[k], wu[k]);
            all_fro[k] = fmax(all_fro[k], wf[k]);
            all_ulps[k] = fmax(all_ulps[k], wu[k]);
        }
        free(X0); free(R0); free(R);
    }
    printf("\nover %d matrices:\n", trials);
    for (int k = 0; k < NV; k++) {
        if (k < V_ITER4) printf("  %-26s worst %.4f relative Frobenius, %.1f bf16 ulps\n", VNAME[k], all_fro[k], all_ulps[k]);
        else printf("  %-26s %.4f .. %.4f relative Frobenius, up to %.1f bf16 ulps\n", VNAME[k], min_fro[k], all_fro[k], all_ulps[k]);
    }
    return 0;
}
