// optim/factored.c: the factored second moment shared by Adafactor, CAME and AdaLomo (see factored.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "common/util.h"
#include "optim_common.h"
#include "factored.h"

FacWork fac_work_alloc(const ParamShape* s, const OptReduce* red) {
    FacWork w;
    memset(&w, 0, sizeof(w));
    w.factored = fac_is_factored(s);
    w.rows = w.factored ? s->rows : 1;
    w.cols = w.factored ? s->cols : s->numel;
    CHECK(!red || (w.factored && red->rows >= w.rows)); // row shards are of matrices; vectors stay whole
    w.mrows = red ? red->rows : w.rows;
    w.red = red;
    if (w.factored) {
        w.nchunks = w.rows < FAC_CHUNKS ? (int)w.rows : FAC_CHUNKS;
        w.row_sum = (double*)xcalloc(w.rows, sizeof(double));
        w.col_part = (double*)xcalloc((size_t)w.nchunks * w.cols, sizeof(double));
        w.col_sum = (double*)xcalloc(w.cols, sizeof(double));
        w.rf = (float*)xmalloc(w.rows * sizeof(float));
    }
    w.cf = (float*)xmalloc(w.cols * sizeof(float));
    return w;
}

void fac_work_free(FacWork* w) {
    free(w->row_sum);
    free(w->col_part);
    free(w->col_sum);
    free(w->rf);
    free(w->cf);
    memset(w, 0, sizeof(*w));
}

// Fixed blocks of FAC_BLOCK elements, each summed in order, then the blocks in order.
#define FAC_BLOCK 8192
double fac_sumsq(const float* x, size_t n) {
    const size_t nb = (n + FAC_BLOCK - 1) / FAC_BLOCK;
    if (nb <= 1) {
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
        return s;
    }
    double* part = (double*)xmalloc(nb * sizeof(double));
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < nb; b++) {
        const size_t i1 = (b + 1) * FAC_BLOCK < n ? (b + 1) * FAC_BLOCK : n;
        double s = 0.0;
        for (size_t i = b * FAC_BLOCK; i < i1; i++) s += (double)x[i] * (double)x[i];
        part[b] = s;
    }
    double s = 0.0;
    for (size_t b = 0; b < nb; b++) s += part[b];
    free(part);
    return s;
}

double fac_rms(const float* x, size_t n) {
    return n ? sqrt(fac_sumsq(x, n) / (double)n) : 0.0;
}

// The partial sum of a row shard completed over the ranks sharing the matrix (nothing when whole here).
static void fac_reduce(const FacWork* w, double* buf, size_t n) {
    if (w->red) w->red->sum(w->red, buf, n);
}

double fac_rms_w(const FacWork* w, const float* x) {
    if (!w->red) return fac_rms(x, w->rows * w->cols);
    double s = fac_sumsq(x, w->rows * w->cols);
    fac_reduce(w, &s, 1);
    return sqrt(s / (double)(w->mrows * w->cols));
}

void fac_sums_zero(FacWork* w) {
    memset(w->row_sum, 0, w->rows * sizeof(double));
    memset(w->col_part, 0, (size_t)w->nchunks * w->cols * sizeof(double));
}

void fac_sums_reduce(FacWork* w) {
    for (size_t j = 0; j < w->cols; j++) {
        double s = 0.0;
        for (int c = 0; c < w->nchunks; c++) s += fac_col_part(w, c)[j];
        w->col_sum[j] = s;
    }
    fac_reduce(w, w->col_sum, w->cols); // a row shard: the other ranks' rows too
}

// EMA in the reference's form, state*beta + (1-beta)*mean, with beta and 1-beta each rounded to fp32
// once from double (as torch does with the Python floats of `mul_(beta).add_(x, alpha=1-beta)`).
void fac_ema_from_sums(const FacWork* w, float* r, float* c, double beta) {
    const float b = (float)beta, omb = (float)(1.0 - beta);
    for (size_t i = 0; i < w->rows; i++) {
        float mean = (float)(w->row_sum[i] / (double)w->cols);   // mean over the columns of row i
        r[i] = fac_ema(r[i], b, omb, mean);
    }
    for (size_t j = 0; j < w->cols; j++) {
        float mean = (float)(w->col_sum[j] / (double)w->mrows);  // mean over the rows of column j
        c[j] = fac_ema(c[j], b, omb, mean);
    }
}

void fac_factors(FacWork* w, const float* r, const float* c) {
    // V[i][j] = r[i]*c[j]/mean(r), so V^-1/2 = rsqrt(r[i]/mean(r)) * rsqrt(c[j]).
    double sum_r = 0.0;
    for (size_t i = 0; i < w->rows; i++) sum_r += (double)r[i];
    fac_reduce(w, &sum_r, 1);
    const float mean_r = (float)(sum_r / (double)w->mrows);
    for (size_t i = 0; i < w->rows; i++) w->rf[i] = fac_rsqrt(r[i] / mean_r);
    for (size_t j = 0; j < w->cols; j++) w->cf[j] = fac_rsqrt(c[j]);
}

// Sum over all elements of (pre[i][j]*g[i][j])^2: per-row partials in double (rows are independent,
// so the parallel loop gives the same bits on any thread count), then added in row order.
static double precond_sumsq(const FacWork* w, const float* g) {
    const size_t rows = w->rows, cols = w->cols;
    if (!w->factored) {
        double s = 0.0;
        for (size_t j = 0; j < cols; j++) {
            float u = w->cf[j] * g[j];
            s += (double)u * (double)u;
        }
        return s;
    }
    double* part = w->row_sum; // the row sums are consumed by now; reuse them as per-row partials
    OPTIM_PARALLEL_FOR(rows * cols)
    for (size_t i = 0; i < rows; i++) {
        const float* gi = g + i * cols;
        const float rfi = w->rf[i];
        double s = 0.0;
        for (size_t j = 0; j < cols; j++) {
            float u = (rfi * w->cf[j]) * gi[j];
            s += (double)u * (double)u;
        }
        part[i] = s;
    }
    double s = 0.0;
    for (size_t i = 0; i < rows; i++) s += part[i];
    return s;
}

float fac_second_moment(FacWork* w, float* v_row, float* v_col, const float* g, float eps1, double beta,
                        double clip_threshold) {
    const size_t rows = w->rows, cols = w->cols, n = rows * cols;
    if (w->factored) {
        // u = g^2 + eps1, reduced to row and column sums in one pass over fixed row chunks.
        fac_sums_zero(w);
        OPTIM_PARALLEL_FOR(n)
        for (int c = 0; c < w->nchunks; c++) {
            double* cs = fac_col_part(w, c);
            for (size_t i = fac_chunk_row(w, c); i < fac_chunk_row(w, c + 1); i++) {
                const float* gi = g + i * cols;
                double rs = 0.0;
                for (size_t j = 0; j < cols; j++) {
                    float u = fac_sq_eps(gi[j], eps1);
                    rs += u;
                    cs[j] += u;
                }
                w->row_sum[i] = rs;
            }
        }
        fac_sums_reduce(w);
        fac_ema_from_sums(w, v_row, v_col, beta);
        fac_factors(w, v_row, v_col);
    } else {
        float* v = v_row; // (n) full second moment
        const float b = (float)beta, omb = (float)(1.0 - beta);
        OPTIM_PARALLEL_FOR(n)
        for (size_t j = 0; j < n; j++) {
            v[j] = fac_ema(v[j], b, omb, fac_sq_eps(g[j], eps1));
            w->cf[j] = fac_rsqrt(v[j]);
        }
    }
    // Update clipping: U is divided by max(1, RMS(U)/d), d = clip_threshold, over the whole matrix.
    double usq = precond_sumsq(w, g);
    fac_reduce(w, &usq, 1);
    return fac_clip_div(usq, w->mrows * cols, clip_threshold);
}
