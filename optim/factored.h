// optim/factored.h: the factored second moment that Adafactor, CAME and AdaLomo share.
//
// For a (rows, cols) matrix with elementwise values u >= 0 (u = g^2 + eps1 for the second moment,
// CAME's residual for its instability), the optimizers keep two small EMAs instead of a full one:
//   r = beta*r + (1-beta)*mean_j u[i][j]        // (rows)  row state
//   c = beta*c + (1-beta)*mean_i u[i][j]        // (cols)  column state
// and reconstruct the full estimate as the rank-1 product V[i][j] = r[i]*c[j]/mean(r). The update
// multiplies by V^-1/2 elementwise, computed as in HF/fairseq:
//   pre[i][j] = rf[i]*cf[j],  rf[i] = rsqrt(r[i]/mean(r)),  cf[j] = rsqrt(c[j])
// Vectors (and anything kept unfactored) keep the full EMA v instead, and pre[j] = rsqrt(v[j]).
//
// Numerics: every mean and every RMS is accumulated in double (error <= n*2^-53 relative, under 1e-8
// even for GPT-2's 50304x768 embedding), and in a fixed order that does not depend on the thread
// count, so a resumed run is bit-exact and two machines agree. PyTorch accumulates the same means in
// fp32 (cascade sums), which is why the tests compare at rtol 1e-5 and not bit for bit.
// Parallel reductions: the rows are cut into FAC_CHUNKS fixed chunks (not one per thread); each
// chunk sums its rows in order into its own column partials, and the partials are added in chunk
// order. Row sums belong to one row, so they are computed whole by whichever thread owns the row.
//
// ZeRO-1 row shards (OPT_SHARD_ROWS, trainer/zero.h): a rank may hold rows [r0, r1) of a matrix. Its
// row states (r, and CAME's R) are its rows'; the column states (c, C) are whole on every sharing rank
// and stay equal there, because every sum over rows is completed by one explicit reduce call
// (OptStep.reduce) before it is used: the column sums, sum(r) for mean(r), the sum of U^2 for the
// clipping RMS, and Adafactor's sum of theta^2. Means divide by the whole matrix's rows (mrows). Each
// rank adds its own rows in the order above, and the ranks' partials are added in rank order, so a
// row-sharded step differs from the whole-matrix step only in where those double sums are split;
// with red NULL the code is the same arithmetic as before row shards existed.
//
// Scratch: FacWork holds O(rows + cols) floats/doubles for one step of one tensor (for a vector,
// O(n)); it is allocated and freed inside step(), never the size of the matrix, so the factored
// optimizers keep their memory promise. (50304x768 embedding: 50304*12 + 768*(12 + 8*FAC_CHUNKS)
// bytes = 0.7 MB, against 155 MB for one full fp32 copy.)
#ifndef OPTIM_FACTORED_H
#define OPTIM_FACTORED_H

#include <stddef.h>
#include <math.h>
#include "common/numerics.h"
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FAC_CHUNKS 16   // row chunks of the parallel column sums (fixed: results never depend on threads)

typedef struct {
    size_t rows, cols;  // the tensor as (rows, cols); a vector is (1, n) and is not factored
    size_t mrows;       // rows of the whole matrix: rows, or more when these rows are a ZeRO-1 row shard
    const OptReduce* red; // NULL when the matrix is whole here; else completes every sum that spans
                        // the matrix's rows over the ranks sharing it (optim.h's OptReduce)
    int factored;       // 1: pre = rf[i]*cf[j]; 0: pre = cf[j] (cf holds rsqrt(v))
    int nchunks;        // row chunks, min(FAC_CHUNKS, rows)     (factored only)
    double* row_sum;    // (rows) sums of u over each row       (factored only)
    double* col_part;   // (nchunks, cols) per-chunk column sums (factored only)
    double* col_sum;    // (cols) sums of u over each column    (factored only)
    float* rf;          // (rows) row factor rsqrt(r/mean(r))   (factored only)
    float* cf;          // (cols) column factor rsqrt(c), or rsqrt(v) when not factored
} FacWork;

// 2-D tensors are factored (HF: ndim >= 2), 1-D tensors keep a full v.
static inline int fac_is_factored(const ParamShape* s) { return s->ndim >= 2; }

// red: OptStep.reduce (NULL: the tensor is whole here; vectors always are).
FacWork fac_work_alloc(const ParamShape* s, const OptReduce* red);
void fac_work_free(FacWork* w);

// The preconditioner for element (i, j): V^-1/2 reconstructed from the factors.
static inline float fac_pre(const FacWork* w, size_t i, size_t j) {
    return w->factored ? w->rf[i] * w->cf[j] : w->cf[j];
}

// sum of x^2 in double (fixed order); RMS(x) = sqrt(sum/n), returned in double.
double fac_sumsq(const float* x, size_t n);
double fac_rms(const float* x, size_t n);
// RMS of x (the tensor w describes: its rows here, its whole matrix with a row shard), in double.
double fac_rms_w(const FacWork* w, const float* x);

// Row/column sums of a u the caller computes (CAME's residual), in three steps:
//   fac_sums_zero(w);
//   OPTIM_PARALLEL_FOR(numel) for (int c = 0; c < w->nchunks; c++) {
//       double* cs = fac_col_part(w, c);
//       for (size_t i = fac_chunk_row(w, c); i < fac_chunk_row(w, c + 1); i++) {
//           double rs = 0; for (j...) { u = ...; rs += u; cs[j] += u; }  w->row_sum[i] = rs; } }
//   fac_sums_reduce(w);      // col_sum = the chunk partials added in chunk order (then, for a row
//                            // shard, over the ranks sharing the matrix: w->red)
void fac_sums_zero(FacWork* w);
void fac_sums_reduce(FacWork* w);
static inline size_t fac_chunk_row(const FacWork* w, int c) { return (size_t)c * w->rows / (size_t)w->nchunks; }
static inline double* fac_col_part(const FacWork* w, int c) { return w->col_part + (size_t)c * w->cols; }
// row/col EMAs from the accumulated sums: r = r*beta + (1-beta)*row_sum/cols, c likewise; beta and
// 1-beta are rounded to fp32 once from double, as torch does with `mul_(beta).add_(x, alpha=1-beta)`.
void fac_ema_from_sums(const FacWork* w, float* r, float* c, double beta);
// rf and cf from the row/col states (the reconstruction above); mean(r) over the whole matrix's rows.
void fac_factors(FacWork* w, const float* r, const float* c);

// Adafactor's second-moment step, shared by all three optimizers: u = g^2 + eps1; for a matrix
// update (v_row, v_col) with beta and set rf/cf, for a vector update v (passed as v_row; v_col NULL)
// and set cf = rsqrt(v). Returns the update-clipping divisor max(1, RMS(U)/clip_threshold) of the
// unclipped update U[i][j] = pre[i][j]*g[i][j].
float fac_second_moment(FacWork* w, float* v_row, float* v_col, const float* g, float eps1, double beta,
                        double clip_threshold);

// ---- per-element pieces shared by the CPU loops (factored.c, adafactor.c, came.c, adalomo.c) and
// the CUDA kernels (factored.cuh): the same expressions, in the same order, on both sides.

// u = g^2 + eps1, the value whose row/column means (or full EMA) the second moment tracks.
HD static inline float fac_sq_eps(float g, float eps1) { return g * g + eps1; }
// One EMA step in the references' form state*beta + (1-beta)*x (b, omb: beta and 1-beta, each rounded
// to fp32 once from double).
HD static inline float fac_ema(float state, float b, float omb, float x) { return state * b + omb * x; }
// A factor of the reconstruction: 1/sqrt(x) (rf = fac_rsqrt(r/mean(r)), cf = fac_rsqrt(c), or of v).
HD static inline float fac_rsqrt(float x) { return 1.0f / sqrtf(x); }
// The update-clipping divisor max(1, RMS(U)/d) from the sum of U^2 over n elements, in double.
HD static inline float fac_clip_div(double sumsq, size_t n, double clip_threshold) {
    const double div = sqrt(sumsq / (double)n) / clip_threshold;
    return (float)(div > 1.0 ? div : 1.0);
}
// HF/CAME's decoupled weight decay p.add_(p, alpha=-wd*lr): the alpha, rounded to fp32 once.
HD static inline float fac_wd_alpha(double wd, double lr) { return (float)(-wd * lr); }
// theta + alpha*theta when the tensor decays (wd != 0).
HD static inline float fac_decay(float th, double wd, float wd_alpha) { return wd != 0.0 ? th + wd_alpha * th : th; }

#ifdef __cplusplus
}
#endif

#endif
