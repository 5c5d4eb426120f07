// test/test_matmul.c: cpu/matmul.c against a straightforward double-precision reference.
//
// For awkward sizes (1, primes, not multiples of any tile, crossing every block boundary of the
// GEMM: K > KC, N > NC, M > MC) it checks
//   - matmul_forward with and without bias, overwriting whatever `out` held (prefilled with NaN),
//   - each of the three backward products, accumulated (+=) onto random old values,
//   - NULL skipping: each product computed alone is bitwise the product computed with the others,
//     and the skipped arrays are not touched,
//   - determinism: bitwise the same on a second run and with 1, 2 and 3 OpenMP threads,
//   - matmul_gemm with a row stride of C wider than N (the columns past N stay untouched).
//
// Tolerance. Each output is a sum of n terms (n = the inner dimension, plus the initial value)
// accumulated in fp32 by fused multiply-adds; the reference is exact to double precision (fp32
// inputs, products exact in double). With u = 2^-24 the worst-case error bound is n*u*sum|terms|,
// but the roundings of a long sum are independent and largely cancel: the error grows like
// sqrt(n)*u*sum|terms|, below 2e-6*sum|terms| for the n <= 1100 used here. We allow
//   |got - want| <= 1e-5 * sum|terms|   (sum|terms| computed in the reference: |init| + sum_k |a b|)
// A real bug (a dropped, doubled or misplaced term) moves an output by about one term, roughly
// sum|terms|/n >= 1e-3*sum|terms|, a hundred times the tolerance.
// Inputs mix scales (each value is a normal times 2^e, e uniform in -6..6) so that one large term
// cannot hide the others.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu/matmul.h"
#include "common/rng.h"
#include "common/util.h"
#include "test/test.h"

#define RTOL 1e-5

static float* rand_mixed(Rng* r, size_t n) {
    float* x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = ldexpf(rng_normal(r), (int)(rng_u32(r) % 13) - 6);
    return x;
}

static float* copy_of(const float* x, size_t n) {
    float* y = xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// Check got against want (double) with |got - want| <= RTOL * mag elementwise.
static void check_close(const char* what, const float* got, const double* want, const double* mag,
                        size_t n, int BT, int C, int OC) {
    double worst = 0.0;
    size_t wi = 0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)got[i] - want[i]);
        double ratio = err / (mag[i] > 0 ? mag[i] : 1e-300);
        if (!isfinite(got[i])) { ok = 0; wi = i; worst = INFINITY; break; }
        if (err > RTOL * mag[i]) ok = 0;
        if (ratio > worst) { worst = ratio; wi = i; }
    }
    char why[256];
    snprintf(why, sizeof(why), "element %zu: got %.9g, want %.9g, |err|/sum|terms| = %.3g > %g",
             wi, n ? (double)got[wi] : 0.0, n ? want[wi] : 0.0, worst, RTOL);
    test_check(ok, why, "matmul %s BT=%d C=%d OC=%d (worst |err|/sum|terms| %.2g)", what, BT, C, OC, worst);
}

static int bitwise_equal(const float* a, const float* b, size_t n) {
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static void test_size(int BT, int C, int OC, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    size_t nin = (size_t)BT * C, nw = (size_t)OC * C, nout = (size_t)BT * OC;
    float* inp = rand_mixed(&r, nin);
    float* w = rand_mixed(&r, nw);
    float* bias = rand_mixed(&r, OC);
    float* dout = rand_mixed(&r, nout);
    float* dinp0 = rand_mixed(&r, nin);   // old values the backward pass accumulates onto
    float* dw0 = rand_mixed(&r, nw);
    float* db0 = rand_mixed(&r, OC);

    // ---- references in double
    double* out_ref = xmalloc(nout * sizeof(double));
    double* out_mag = xmalloc(nout * sizeof(double));
    double* outnb_ref = xmalloc(nout * sizeof(double));
    double* outnb_mag = xmalloc(nout * sizeof(double));
    for (int b = 0; b < BT; b++)
        for (int o = 0; o < OC; o++) {
            double s = 0.0, m = 0.0;
            for (int c = 0; c < C; c++) {
                double t = (double)inp[(size_t)b * C + c] * w[(size_t)o * C + c];
                s += t;
                m += fabs(t);
            }
            outnb_ref[(size_t)b * OC + o] = s;
            outnb_mag[(size_t)b * OC + o] = m;
            out_ref[(size_t)b * OC + o] = s + bias[o];
            out_mag[(size_t)b * OC + o] = m + fabs(bias[o]);
        }
    double* dinp_ref = xmalloc(nin * sizeof(double));
    double* dinp_mag = xmalloc(nin * sizeof(double));
    for (int b = 0; b < BT; b++)
        for (int c = 0; c < C; c++) {
            double s = dinp0[(size_t)b * C + c], m = fabs(s);
            for (int o = 0; o < OC; o++) {
                double t = (double)dout[(size_t)b * OC + o] * w[(size_t)o * C + c];
                s += t;
                m += fabs(t);
            }
            dinp_ref[(size_t)b * C + c] = s;
            dinp_mag[(size_t)b * C + c] = m;
        }
    double* dw_ref = xmalloc(nw * sizeof(double));
    double* dw_mag = xmalloc(nw * sizeof(double));
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++) {
            double s = dw0[(size_t)o * C + c], m = fabs(s);
            for (int b = 0; b < BT; b++) {
                double t = (double)dout[(size_t)b * OC + o] * inp[(size_t)b * C + c];
                s += t;
                m += fabs(t);
            }
            dw_ref[(size_t)o * C + c] = s;
            dw_mag[(size_t)o * C + c] = m;
        }
    double* db_ref = xmalloc(OC * sizeof(double));
    double* db_mag = xmalloc(OC * sizeof(double));
    for (int o = 0; o < OC; o++) {
        double s = db0[o], m = fabs(s);
        for (int b = 0; b < BT; b++) {
            s += dout[(size_t)b * OC + o];
            m += fabs(dout[(size_t)b * OC + o]);
        }
        db_ref[o] = s;
        db_mag[o] = m;
    }

    // ---- forward: out is overwritten (NaN before: reading it would poison the result)
    float* out = xmalloc(nout * sizeof(float));
    for (size_t i = 0; i < nout; i++) out[i] = NAN;
    matmul_forward(out, inp, w, bias, BT, C, OC);
    check_close("forward+bias", out, out_ref, out_mag, nout, BT, C, OC);
    float* outnb = xmalloc(nout * sizeof(float));
    for (size_t i = 0; i < nout; i++) outnb[i] = NAN;
    matmul_forward(outnb, inp, w, NULL, BT, C, OC);
    check_close("forward no-bias", outnb, outnb_ref, outnb_mag, nout, BT, C, OC);

    // ---- backward: all three products accumulate onto old values
    float* dinp = copy_of(dinp0, nin);
    float* dw = copy_of(dw0, nw);
    float* db = copy_of(db0, OC);
    matmul_backward(dinp, dw, db, dout, inp, w, BT, C, OC);
    check_close("backward dinp +=", dinp, dinp_ref, dinp_mag, nin, BT, C, OC);
    check_close("backward dweight +=", dw, dw_ref, dw_mag, nw, BT, C, OC);
    check_close("backward dbias +=", db, db_ref, db_mag, OC, BT, C, OC);

    // ---- NULL skipping: each product alone is bitwise the same; the others are not touched
    float* dinp1 = copy_of(dinp0, nin);
    float* dw1 = copy_of(dw0, nw);
    float* db1 = copy_of(db0, OC);
    matmul_backward(dinp1, NULL, NULL, dout, inp, w, BT, C, OC);
    int ok = bitwise_equal(dinp1, dinp, nin) && bitwise_equal(dw1, dw0, nw) && bitwise_equal(db1, db0, OC);
    matmul_backward(NULL, dw1, NULL, dout, inp, w, BT, C, OC);
    ok = ok && bitwise_equal(dinp1, dinp, nin) && bitwise_equal(dw1, dw, nw) && bitwise_equal(db1, db0, OC);
    matmul_backward(NULL, NULL, db1, dout, inp, w, BT, C, OC);
    ok = ok && bitwise_equal(dinp1, dinp, nin) && bitwise_equal(dw1, dw, nw) && bitwise_equal(db1, db, OC);
    test_check(ok, "a product computed alone differs, or a NULL-skipped array changed",
               "matmul backward NULL skipping BT=%d C=%d OC=%d", BT, C, OC);

    // ---- determinism: same bits on a rerun and with 1, 2 and 3 threads
    int nthreads0 = 1;
#ifdef _OPENMP
    nthreads0 = omp_get_max_threads();
#endif
    ok = 1;
    for (int nt = 1; nt <= 3; nt++) {
        set_threads(nt);
        float* o2 = xmalloc(nout * sizeof(float));
        matmul_forward(o2, inp, w, bias, BT, C, OC);
        float* di2 = copy_of(dinp0, nin);
        float* dw2 = copy_of(dw0, nw);
        float* db2 = copy_of(db0, OC);
        matmul_backward(di2, dw2, db2, dout, inp, w, BT, C, OC);
        ok = ok && bitwise_equal(o2, out, nout) && bitwise_equal(di2, dinp, nin) &&
             bitwise_equal(dw2, dw, nw) && bitwise_equal(db2, db, OC);
        free(o2); free(di2); free(dw2); free(db2);
    }
    set_threads(nthreads0);
    test_check(ok, "results differ between runs or thread counts",
               "matmul bitwise identical for 1/2/3 threads BT=%d C=%d OC=%d", BT, C, OC);

    free(inp); free(w); free(bias); free(dout); free(dinp0); free(dw0); free(db0);
    free(out_ref); free(out_mag); free(outnb_ref); free(outnb_mag);
    free(dinp_ref); free(dinp_mag); free(dw_ref); free(dw_mag); free(db_ref); free(db_mag);
    free(out); free(outnb); free(dinp); free(dw); free(db); free(dinp1); free(dw1); free(db1);
}

// matmul_gemm into a C with row stride ldc > N: the product lands in the first N columns and the
// padding columns keep their values.
static void test_gemm_ldc(void) {
    int M = 19, N = 45, K = 70;
    long ldc = 53;
    Rng r;
    rng_seed(&r, 77);
    float* A = rand_mixed(&r, (size_t)M * K);
    float* B = rand_mixed(&r, (size_t)K * N);
    float* Cm = rand_mixed(&r, (size_t)M * ldc);
    float* C0 = copy_of(Cm, (size_t)M * ldc);
    matmul_gemm(M, N, K, A, K, 1, B, N, 1, Cm, ldc, 1, NULL);
    double* want = xmalloc((size_t)M * N * sizeof(double));
    double* mag = xmalloc((size_t)M * N * sizeof(double));
    float* got = xmalloc((size_t)M * N * sizeof(float));
    int pad_ok = 1;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = C0[i * ldc + j], m = fabs(s);
            for (int k = 0; k < K; k++) {
                double t = (double)A[i * K + k] * B[k * N + j];
                s += t;
                m += fabs(t);
            }
            want[i * N + j] = s;
            mag[i * N + j] = m;
            got[i * N + j] = Cm[i * ldc + j];
        }
        for (long j = N; j < ldc; j++) pad_ok = pad_ok && Cm[i * ldc + j] == C0[i * ldc + j];
    }
    check_close("gemm ldc>N accumulate", got, want, mag, (size_t)M * N, M, K, N);
    test_check(pad_ok, "a column past N changed", "matmul gemm ldc>N leaves padding columns alone");
    free(A); free(B); free(Cm); free(C0); free(want); free(mag); free(got);
}

int main(void) {
    printf("# matmul kernel: %s, workspace %zu bytes\n", matmul_kernel_name(), matmul_workspace_bytes());
    // (BT, C, OC): tiny, primes, one-sided 1s, sizes that cross the K (256), N (512) and
    // M (2048) block boundaries of every product (forward K=C, dinp K=OC, dweight K=BT), and
    // BT < 4 (the forward's dot-product path for sampling) next to BT = 4 (the GEMM), and a
    // forward with N = 20 < one column block per thread (the rows of the block are split).
    static const int sizes[][3] = {
        {1, 1, 1}, {7, 13, 5}, {1, 64, 100}, {100, 1, 37}, {37, 600, 1}, {65, 127, 33},
        {300, 40, 70}, {64, 256, 1000}, {20, 600, 30}, {2100, 9, 40}, {33, 17, 1100},
        {2, 300, 70}, {3, 33, 129}, {4, 50, 50}, {1500, 700, 20},
    };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        test_size(sizes[i][0], sizes[i][1], sizes[i][2], 1000 + i);
    test_gemm_ldc();
    test_check(matmul_workspace_bytes() > 0, "zero", "matmul workspace bytes reported");
    return test_finish("test_matmul");
}
