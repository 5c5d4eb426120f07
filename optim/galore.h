// optim/galore.h: the per-element math of GaLore AdamW (optim/galore.c explains the algorithm), written
// once for the CPU loop and the CUDA kernels of optim/galore.cuh (HD: host and device), and the CPU's
// projector SVD.
#ifndef OPTIM_GALORE_H
#define OPTIM_GALORE_H

#include <math.h>
#include <stddef.h>
#include "common/numerics.h"
#include "optim/optim.h"

// The tensors GaLore projects: the block matrices (see galore.c); the rest take plain AdamW.
static inline int galore_projected(const ParamShape* s) {
    return s->ndim == 2 && (s->role == PARAM_MATRIX || s->role == PARAM_ATTN_QKV);
}

// The projection rank of a projected matrix: -rank, capped by its smaller side.
static inline size_t galore_rank(const OptHyper* h, const ParamShape* s) {
    size_t small = s->rows < s->cols ? s->rows : s->cols;
    return (size_t)h->rank < small ? (size_t)h->rank : small;
}

// Per-step scalars, from Python floats (double) rounded to fp32 once, as the official code's
// `p.add_(norm_grad, alpha=-step_size)` and `p.add_(p, alpha=-lr * weight_decay)` see them.
typedef struct {
    float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
    float neg_step_size;  // -lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    float neg_lr_wd;      // -lr * wd, applied after the update when wd > 0
    int decays;           // wd > 0
    float scale;          // alpha (galore_scale); 1 for tensors that are not projected
} GaloreScalars;

static inline GaloreScalars galore_scalars(double lr, double wd, double beta1, double beta2, double eps,
                                           double scale, int t) {
    GaloreScalars k;
    k.beta1 = (float)beta1;
    k.one_minus_beta1 = (float)(1.0 - beta1);
    k.beta2 = (float)beta2;
    k.one_minus_beta2 = (float)(1.0 - beta2);
    k.eps = (float)eps;
    k.neg_step_size = (float)-(lr * sqrt(1.0 - pow(beta2, (double)t)) / (1.0 - pow(beta1, (double)t)));
    k.neg_lr_wd = (float)(-lr * wd);
    k.decays = wd > 0.0;
    k.scale = (float)scale;
    return k;
}

// Adam on one element (of the projected gradient, or of the full one for unprojected tensors): updates
// m, v and returns the normalized gradient m / (sqrt(v) + eps) (no bias correction inside: it is folded
// into the step size, as in the transformers-style AdamW GaLore ships).
HD static inline float galore_adam(const GaloreScalars* k, float g, float* m, float* v) {
    *m = *m * k->beta1 + k->one_minus_beta1 * g;
    *v = *v * k->beta2 + k->one_minus_beta2 * g * g;
    return *m / (sqrtf(*v) + k->eps);
}

// The parameter after the step, from u = the normalized gradient back in the full space (before alpha).
HD static inline float galore_param(const GaloreScalars* k, float p, float u) {
    p = p + k->neg_step_size * (u * k->scale);
    if (k->decays) p = p + k->neg_lr_wd * p;
    return p;
}

// The order of a batched projector refresh (optim/galore.cuh): of the n projected matrices, those with
// need[i] (all when need is NULL), grouped by s[i] = min(rows, cols) (the Gram matrix's size) in the order
// each s first appears, the members of a group in the trainer's order, each group cut into consecutive
// chunks of at most cap. order (n) receives the matrices, chunk k is order[cstart[k], cstart[k + 1]);
// cstart needs room for n + 1 entries. Returns the number of chunks.
static inline int galore_eig_chunks(const int* s, const int* need, int n, int cap, int* order, int* cstart) {
    int k = 0, nch = 0;
    cstart[0] = 0;
    for (int g = 0; g < n; g++) {
        if (need && !need[g]) continue;
        int first_of_s = 1;  // g is the first matrix (with need) of its s
        for (int i = 0; i < g; i++) if ((!need || need[i]) && s[i] == s[g]) { first_of_s = 0; break; }
        if (!first_of_s) continue;
        int in_chunk = 0;
        for (int i = g; i < n; i++) {
            if ((need && !need[i]) || s[i] != s[g]) continue;
            if (in_chunk == cap) { cstart[++nch] = k; in_chunk = 0; }
            order[k++] = i;
            in_chunk++;
        }
        cstart[++nch] = k;
    }
    return nch;
}

// The projector of a (rows, cols) gradient G: its top-r singular vectors, from the eigendecomposition
// (in double: Householder tridiagonalization + implicit QL) of the Gram matrix of its smaller side
// (galore.c). side 'R' (rows >=
// cols): out = Vh[:r, :], (r, cols); side 'L' (rows < cols): out = U[:, :r], (rows, r). Each vector's
// sign is fixed: its largest-magnitude component is positive (the first one on a tie). sv (r) receives
// the singular values in descending order (may be NULL). Returns the QL iterations used.
#ifdef __cplusplus
extern "C"
#endif
int galore_svd_projector(const float* G, size_t rows, size_t cols, int r, float* out, double* sv);

#endif
