// docs/figures/src/factored_demo.c: the numbers behind docs/figures/factored.png.
//
// Feeds T steps of a gradient of a small (rows, cols) matrix through the project's own factored
// second moment (optim/factored.c, the code Adafactor, CAME and AdaLomo run) with Adafactor's
// beta2_t = 1 - t^-0.8, and keeps next to it the full EMA v of g^2 + eps1 that Adam-style methods
// would store. The gradient has row and column structure, as a weight matrix's does (some output rows
// and some input columns get larger gradients): g[i][j] = a[i] * b[j] * z with z ~ N(0, 1), a and b
// log-spaced, plus one "hot" element whose gradient is 6x larger than its row and column suggest.
//
// Writes into DIR (argv[1]), for gnuplot: g2.dat (g^2 of the last step), v.dat (the full EMA),
// vhat.dat (the rank-1 reconstruction r c^T / mean(r) from the row and column states), ratio.dat
// (vhat / v), r.dat and c.dat (the row and column states), and prints a one-line summary.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "common/rng.h"
#include "common/util.h"
#include "optim/factored.h"

#define ROWS 8
#define COLS 12
#define STEPS 30
#define HOT_I 2
#define HOT_J 8

static void write_matrix(const char* dir, const char* name, const float* x) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE* f = fopen(path, "w");
    CHECK(f != NULL);
    for (int i = 0; i < ROWS; i++) {
        for (int j = 0; j < COLS; j++) fprintf(f, "%s%.6e", j ? " " : "", x[i * COLS + j]);
        fprintf(f, "\n");
    }
    fclose(f);
}

static void write_vector(const char* dir, const char* name, const float* x, int n) {
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE* f = fopen(path, "w");
    CHECK(f != NULL);
    for (int i = 0; i < n; i++) fprintf(f, "%d %.6e\n", i, x[i]);
    fclose(f);
}

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s OUTDIR\n", argv[0]); return 2; }
    const char* dir = argv[1];
    ParamShape s = { .name = "demo", .ndim = 2, .rows = ROWS, .cols = COLS, .numel = ROWS * COLS };
    float a[ROWS], b[COLS];
    for (int i = 0; i < ROWS; i++) a[i] = powf(10.0f, -1.0f + 1.0f * i / (ROWS - 1));   // 0.1 .. 1
    for (int j = 0; j < COLS; j++) b[j] = powf(10.0f, 0.5f - 1.0f * j / (COLS - 1));   // 3.2 .. 0.32
    const float eps1 = 1e-30f;                                    // Adafactor's default

    float g[ROWS * COLS], g2[ROWS * COLS], v[ROWS * COLS], vhat[ROWS * COLS], ratio[ROWS * COLS];
    float r[ROWS] = {0}, c[COLS] = {0};                           // the factored state (v_row, v_col)
    for (int k = 0; k < ROWS * COLS; k++) v[k] = 0.0f;
    Rng rng;
    rng_seed(&rng, 1337);
    for (int t = 1; t <= STEPS; t++) {
        for (int i = 0; i < ROWS; i++)
            for (int j = 0; j < COLS; j++) {
                float hot = (i == HOT_I && j == HOT_J) ? 6.0f : 1.0f;
                g[i * COLS + j] = hot * a[i] * b[j] * rng_normal(&rng);
            }
        const double beta2t = 1.0 - pow((double)t, -0.8);         // 0 at t = 1
        FacWork w = fac_work_alloc(&s, NULL);
        fac_second_moment(&w, r, c, g, eps1, beta2t, 1.0);        // updates r and c in place
        fac_work_free(&w);
        const float bb = (float)beta2t, omb = (float)(1.0 - beta2t);
        for (int k = 0; k < ROWS * COLS; k++) v[k] = v[k] * bb + omb * (g[k] * g[k] + eps1);
    }
    double mean_r = 0.0;
    for (int i = 0; i < ROWS; i++) mean_r += r[i];
    mean_r /= ROWS;
    double log_err = 0.0, worst = 0.0;
    for (int i = 0; i < ROWS; i++)
        for (int j = 0; j < COLS; j++) {
            const int k = i * COLS + j;
            g2[k] = g[k] * g[k];
            vhat[k] = (float)(r[i] * (double)c[j] / mean_r);
            ratio[k] = vhat[k] / v[k];
            double e = fabs(log10(ratio[k]));
            log_err += e;
            if (e > worst) worst = e;
        }
    write_matrix(dir, "g2.dat", g2);
    write_matrix(dir, "v.dat", v);
    write_matrix(dir, "vhat.dat", vhat);
    write_matrix(dir, "ratio.dat", ratio);
    write_vector(dir, "r.dat", r, ROWS);
    write_vector(dir, "c.dat", c, COLS);
    printf("factored_demo: %dx%d, %d steps: state %d floats (full v: %d); mean |log10(vhat/v)| = %.3f, "
           "worst %.3f; hot element (%d,%d): v = %.3g, vhat = %.3g\n", ROWS, COLS, STEPS, ROWS + COLS,
           ROWS * COLS, log_err / (ROWS * COLS), worst, HOT_I, HOT_J, v[HOT_I * COLS + HOT_J],
           vhat[HOT_I * COLS + HOT_J]);
    return 0;
}
