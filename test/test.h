// test/test.h: the tiny test harness every C test uses. Each check prints one line,
// "PASS <name>" or "FAIL <name>: <why>", which test/run.sh counts; a test binary exits non-zero if
// any of its checks failed. Keep names unique and descriptive: they are the test report.
#ifndef TEST_TEST_H
#define TEST_TEST_H

#include <stdio.h>
#include <stdarg.h>
#include <math.h>

static int test_passed_ __attribute__((unused)) = 0, test_failed_ __attribute__((unused)) = 0;

// Record one check. `name` is printf-style.
static inline void test_check(int ok, const char* why, const char* name_fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, name_fmt);
    vsnprintf(name, sizeof(name), name_fmt, ap);
    va_end(ap);
    if (ok) { printf("PASS %s\n", name); test_passed_++; }
    else { printf("FAIL %s: %s\n", name, why ? why : "check failed"); test_failed_++; }
    fflush(stdout);
}

// Compare arrays: |a - b| <= atol + rtol * |b| elementwise (b is the reference). Reports the worst
// element. Non-finite values in either array fail.
static inline int test_allclose(const char* name, const float* a, const float* b, size_t n, float rtol, float atol) {
    size_t worst = 0;
    double worst_excess = -1.0;
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) { ok = 0; worst = i; worst_excess = INFINITY; break; }
        double err = fabs((double)a[i] - (double)b[i]);
        double tol = atol + rtol * fabs((double)b[i]);
        if (err - tol > worst_excess) { worst_excess = err - tol; worst = i; }
        if (err > tol) ok = 0;
    }
    char why[256];
    if (n == 0) snprintf(why, sizeof(why), "empty");
    else snprintf(why, sizeof(why), "element %zu: got %.9g, want %.9g (rtol %g, atol %g)", worst,
                  (double)a[worst], (double)b[worst], (double)rtol, (double)atol);
    test_check(ok, why, "%s", name);
    return ok;
}

// The worst |a - b| in fp32 ulps of the reference's largest value, 2^-24 * max|b| (NaN: infinite); *exact
// is cleared where any element differs at all. For results that may differ only where a double sum is
// split differently before its rounding to fp32 (ZeRO-1 row shards against the whole tensor).
static inline double test_ulps_of_max(const float* a, const float* b, size_t n, int* exact) {
    double mx = 0.0, worst = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)b[i]));
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i]) continue;
        *exact = 0;
        const double d = fabs((double)a[i] - b[i]) / ((mx > 0.0 ? mx : 1e-30) * 5.9604644775390625e-8);
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
    }
    return worst;
}

// Print this binary's tally and return the exit code for main().
static inline int test_finish(const char* binary) {
    printf("# %s: %d passed, %d failed\n", binary, test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

#endif
