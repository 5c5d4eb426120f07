// bench/bench_matmul.c: GFLOP/s of cpu/matmul.c on the GPT-2 training shapes, forward and
// backward separately, and the fraction of the machine's fp32 FMA peak (bench/peak_flops).
//
//   ./bench/bench_matmul [-bt BT] [-c C[,C...]] [-peak GFLOPS] [-time SECONDS]
//
// Shapes per model width C: (C,3C) qkv, (C,C) attention projection, (C,4C) fc, (4C,C) fc
// projection, (C,V) the LM head with V = 50304. Forward is 2*BT*C*OC flops; backward (dinp and
// dweight; dbias is memory-bound and tiny) is 4*BT*C*OC. "all" is the flop-weighted total over the
// shapes of one transformer block plus the LM head. The last lines are machine-readable:
//   matmul: C=768 shape=lm_head fwd_gflops=X bwd_gflops=Y ...
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "cpu/matmul.h"
#include "common/rng.h"
#include "common/util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

typedef struct { const char* name; int cin_mul, cout_mul; int vocab; } Shape;  // (C*cin_mul, C*cout_mul | V)
static const Shape SHAPES[] = {
    {"qkv", 1, 3, 0}, {"attproj", 1, 1, 0}, {"fc", 1, 4, 0}, {"fcproj", 4, 1, 0}, {"lm_head", 1, 0, 50304},
};
#define NSHAPES ((int)(sizeof(SHAPES) / sizeof(SHAPES[0])))

static float* random_array(Rng* r, size_t n) {
    float* x = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_f32(r) * 2.0f - 1.0f;
    return x;
}

// Seconds per call (best over repeats lasting about `budget` seconds after one warm-up call).
static double time_forward(float* out, float* inp, float* w, float* b, int BT, int C, int OC, double budget) {
    matmul_forward(out, inp, w, b, BT, C, OC);
    double best = 1e30, start = now_s();
    int reps = 0;
    while (reps < 2 || now_s() - start < budget) {
        double t0 = now_s();
        matmul_forward(out, inp, w, b, BT, C, OC);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        reps++;
    }
    return best;
}

static double time_backward(float* dinp, float* dw, float* db, float* dout, float* inp, float* w,
                            int BT, int C, int OC, double budget) {
    matmul_backward(dinp, dw, db, dout, inp, w, BT, C, OC);
    double best = 1e30, start = now_s();
    int reps = 0;
    while (reps < 2 || now_s() - start < budget) {
        double t0 = now_s();
        matmul_backward(dinp, dw, db, dout, inp, w, BT, C, OC);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
        reps++;
    }
    return best;
}

int main(int argc, char** argv) {
    int BT = 1024;
    double peak = 0.0, budget = 0.5;
    char cs[128] = "256,384,768";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "-bt")) BT = atoi(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "-peak")) peak = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "-time")) budget = atof(argv[++i]);
        else if (i + 1 < argc && !strcmp(argv[i], "-c")) snprintf(cs, sizeof(cs), "%s", argv[++i]);
        else user_error("unknown or incomplete argument '%s'; usage: %s [-bt BT] [-c C[,C...]] [-peak GFLOPS] [-time S]", argv[i], argv[0]);
    }
    if (BT < 1) user_error("-bt must be >= 1 (got %d)", BT);
    int nthreads = 1;
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    printf("matmul benchmark: kernel %s, %d threads, BT=%d, workspace %.1f MiB%s\n",
           matmul_kernel_name(), nthreads, BT, matmul_workspace_bytes() / 1048576.0,
           peak > 0 ? "" : " (pass -peak GFLOPS for the fraction of peak)");
    if (peak > 0) printf("peak (bench/peak_flops, all threads): %.1f GFLOP/s\n", peak);
    printf("%-5s %-8s %6s %6s | %10s %7s | %10s %7s\n", "C", "shape", "in", "out",
           "fwd GF/s", "of peak", "bwd GF/s", "of peak");
    Rng rng;
    rng_seed(&rng, 1);
    char* save = NULL;
    for (char* tok = strtok_r(cs, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int C = atoi(tok);
        if (C < 1) user_error("-c: widths must be >= 1 (got '%s')", tok);
        double flops_all = 0.0, tf_all = 0.0, tb_all = 0.0;
        for (int s = 0; s < NSHAPES; s++) {
            int cin = C * SHAPES[s].cin_mul;
            int cout = SHAPES[s].vocab ? SHAPES[s].vocab : C * SHAPES[s].cout_mul;
            float* inp = random_array(&rng, (size_t)BT * cin);
            float* w = random_array(&rng, (size_t)cout * cin);
            float* b = random_array(&rng, cout);
            float* out = random_array(&rng, (size_t)BT * cout);
            float* dinp = random_array(&rng, (size_t)BT * cin);
            float* dw = random_array(&rng, (size_t)cout * cin);
            float* db = random_array(&rng, cout);
            // the LM head has no bias in GPT-2; the others do
            float* bias = SHAPES[s].vocab ? NULL : b;
            float* dbias = SHAPES[s].vocab ? NULL : db;
            double flops = 2.0 * BT * cin * cout;
            double tf = time_forward(out, inp, w, bias, BT, cin, cout, budget);
            double tb = time_backward(dinp, dw, dbias, out, inp, w, BT, cin, cout, budget);
            double gf = flops / tf * 1e-9, gb = 2.0 * flops / tb * 1e-9;
            printf("%-5d %-8s %6d %6d | %10.1f %6.1f%% | %10.1f %6.1f%%\n", C, SHAPES[s].name, cin, cout,
                   gf, peak > 0 ? 100.0 * gf / peak : 0.0, gb, peak > 0 ? 100.0 * gb / peak : 0.0);
            printf("matmul: C=%d shape=%s in=%d out=%d BT=%d fwd_gflops=%.1f bwd_gflops=%.1f fwd_ms=%.2f bwd_ms=%.2f\n",
                   C, SHAPES[s].name, cin, cout, BT, gf, gb, tf * 1e3, tb * 1e3);
            flops_all += flops;
            tf_all += tf;
            tb_all += tb;
            free(inp); free(w); free(b); free(out); free(dinp); free(dw); free(db);
        }
        double gf = flops_all / tf_all * 1e-9, gb = 2.0 * flops_all / tb_all * 1e-9;
        double gt = 3.0 * flops_all / (tf_all + tb_all) * 1e-9;
        printf("%-5d %-8s %6s %6s | %10.1f %6.1f%% | %10.1f %6.1f%%   fwd+bwd %.1f GF/s\n", C, "all", "", "",
               gf, peak > 0 ? 100.0 * gf / peak : 0.0, gb, peak > 0 ? 100.0 * gb / peak : 0.0, gt);
        printf("matmul: C=%d shape=all BT=%d fwd_gflops=%.1f bwd_gflops=%.1f total_gflops=%.1f\n",
               C, BT, gf, gb, gt);
    }
    return 0;
}
