// optim/galore.c: GaLore AdamW (`-opt galore_adamw`) of Zhao et al. 2024, "GaLore: Memory-Efficient LLM
// Training by Gradient Low-Rank Projection" (ICML 2024, arXiv 2403.03507), as the official
// jiaweizzhao/GaLore computes it (galore_torch/adamw.py with GaLoreProjector, proj_type "std").
//
// Math, for a projected 2-D weight G (rows, cols) at step t = 1, 2, ... (r = min(-rank, rows, cols)):
//   projector, refreshed when (t - 1) % T == 0 (the official `iter % update_proj_gap == 0` with its
//   0-based iter), from the SVD of the current gradient G = U S Vh:
//     rows >= cols ("right"): P = Vh[:r, :] (r, cols),  R = G P^T (rows, r),   back: N P   (rows, cols)
//     rows <  cols ("left"):  P = U[:, :r]  (rows, r),  R = P^T G (r, cols),   back: P N   (rows, cols)
//   Adam in the projected space (transformers-style AdamW, which GaLore ships):
//     m = beta1*m + (1-beta1)*R,  v = beta2*v + (1-beta2)*R*R,  N = m / (sqrt(v) + eps)
//     p = p - lr*sqrt(1-beta2^t)/(1-beta1^t) * (alpha * back(N))
//     p = p - lr*wd*p                      decoupled decay AFTER the update, only when wd > 0
//   m and v are NOT reset when the projector changes (the official code keeps them), so the projected
//   coordinates' signs matter across a refresh: ours are fixed (each singular vector's largest-magnitude
//   component positive), which torch's LAPACK SVD does not promise; test/ref_optim_beyond2.py applies
//   the same convention to torch.linalg.svd.
// Which tensors are projected: the block matrices (attention qkv and proj, MLP fc and proj), as the
// official GPT/LLaMA scripts target the "attn" and "mlp" modules. Embeddings (wte, also the tied LM
// head, and wpe) and 1-D tensors get the same AdamW without projection (alpha 1). Our fused qkv (3C, C)
// is one matrix projected once (LLaMA's q, k, v are three).
//
// The SVD: only the top-r singular vectors of the smaller side are needed, so we form the Gram matrix of
// that side in double (G^T G (cols, cols) for "right", G G^T (rows, rows) for "left"; products of fp32
// values are exact in double, sums err by ~1e-16 relative) and diagonalize it in double: Householder
// reduction to tridiagonal form, then implicit QL iterations with shifts (the classic tred2 + tql2 pair),
// an off-diagonal element counting as zero once it is below DBL_EPSILON times its two neighbours on the
// diagonal. Singular values are sqrt of the eigenvalues, singular vectors the eigenvectors. Squaring the
// singular values loses accuracy only for vectors with sigma below ~1e-8 sigma_1, far below what rank r
// keeps. We first wrote cyclic Jacobi (simpler, same accuracy) and measured it 17x slower: ~10 sweeps of
// s^2/2 rotations, 55 s per d4 layer on this machine against 3.3 s now (under the same load).
// Cost: rows*cols*s for the Gram plus ~9 s^3 for the eigensolver, s = min(rows, cols), for every
// projected matrix once every T steps. Measured (one core busy, 2-core machine under load; CPU time):
// one refresh of d4 (16 matrices, s = 256) 1.6 s; of d12 (48 matrices, s = 768) ~115 s.
// State, per projected matrix: galore_proj (the projector, f32, r*cols or rows*r), exp_avg and
// exp_avg_sq in the projected shape (f32, rows*r or r*cols each), galore_step (f32, 1: the step at
// which the projector was computed, 0 = never; exact below 2^24). All start as zero bytes. So a
// projected matrix holds exactly 4*(r*cols + 2*rows*r + 1) bytes for rows >= cols and
// 4*(rows*r + 2*r*cols + 1) otherwise. Other tensors: exp_avg, exp_avg_sq (8 B/param).
// Scratch inside step(): the projected gradient (the size of m) and 64 rows of the projected-back
// update; at a refresh the two s x s double matrices of the SVD.
//
// Defaults: lr 3e-3, from the sweep on the default run (results/sweep/: 60 steps 1e-3 4.83, 3e-3 4.59,
// 1e-2 4.82; 200 steps 1e-3 3.97, 3e-3 3.80, AdamW at its 1e-3 3.94): the official class inherits torch
// AdamW's 1e-3, but the projected-back update is scaled by alpha = 0.25, and the paper pre-trains with
// lr 1e-2. The official betas (0.9, 0.999), eps 1e-6, weight_decay 0; GaLore's rank 128, update_proj_gap
// 200, scale 0.25 (the paper's alpha for pre-training).
#include <stdlib.h>
#include <string.h>
#include <float.h>
#include "optim_common.h"
#include "galore.h"
#include "common/util.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define GALORE_BACK_ROWS 64     // rows of the projected-back update computed at a time

static int galore_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (!galore_projected(s)) {
        out[0] = optim_spec("exp_avg", DT_F32, s->numel);
        out[1] = optim_spec("exp_avg_sq", DT_F32, s->numel);
        return 2;
    }
    CHECK(h->rank > 0);  // the trainer validates -rank
    const size_t r = galore_rank(h, s);
    const int right = s->rows >= s->cols;
    const size_t low = right ? s->rows * r : r * s->cols;   // the projected shape
    out[0] = optim_spec("exp_avg", DT_F32, low);
    out[1] = optim_spec("exp_avg_sq", DT_F32, low);
    out[2] = optim_spec("galore_proj", DT_F32, right ? r * s->cols : s->rows * r);
    out[3] = optim_spec("galore_step", DT_F32, 1);
    return 4;
}

// ---- the SVD ------------------------------------------------------------------------------------

// Gram matrix (s, s) in double of the smaller side of G (rows, cols).
static void gram(const float* G, size_t rows, size_t cols, double* A) {
    if (rows >= cols) {  // G^T G: A[a][b] = sum_i G[i][a] G[i][b]
        const size_t s = cols;
        OPTIM_PARALLEL_FOR(rows * s * 8)
        for (size_t a = 0; a < s; a++) {
            double* Aa = A + a * s;
            for (size_t b = 0; b < s; b++) Aa[b] = 0.0;
            for (size_t i = 0; i < rows; i++) {
                const float* gi = G + i * cols;
                const double ga = gi[a];
                if (ga == 0.0) continue;
                for (size_t b = 0; b < s; b++) Aa[b] += ga * (double)gi[b];
            }
        }
    } else {             // G G^T: A[a][b] = sum_j G[a][j] G[b][j]
        const size_t s = rows;
        OPTIM_PARALLEL_FOR(cols * s * 8)
        for (size_t a = 0; a < s; a++) {
            const float* ga = G + a * cols;
            for (size_t b = 0; b < s; b++) {
                const float* gb = G + b * cols;
                double acc = 0.0;
                for (size_t j = 0; j < cols; j++) acc += (double)ga[j] * (double)gb[j];
                A[a * s + b] = acc;
            }
        }
    }
}

// Householder reduction of the symmetric A (n, n) to tridiagonal form (the classic tred2 algorithm):
// on return A holds the orthogonal Q with Q^T A_in Q = T, d (n) the diagonal of T and e (n) its
// subdiagonal (e[i] couples i-1 and i; e[0] = 0). Row i is reduced from the bottom up, each step one
// reflector I - u u^T / h that zeroes A[i][0 .. i-2], applied to the leading block from both sides.
static void householder_tridiag(double* A, size_t n, double* d, double* e) {
#define A_(i, j) A[(size_t)(i) * n + (j)]
    for (size_t i = n - 1; i > 0; i--) {
        const size_t l = i - 1;
        double h = 0.0;
        if (l > 0) {
            double scale = 0.0;
            for (size_t k = 0; k <= l; k++) scale += fabs(A_(i, k));
            if (scale == 0.0) {
                e[i] = A_(i, l);
            } else {
                for (size_t k = 0; k <= l; k++) { A_(i, k) /= scale; h += A_(i, k) * A_(i, k); }
                double f = A_(i, l);
                double g = f >= 0.0 ? -sqrt(h) : sqrt(h);
                e[i] = scale * g;
                h -= f * g;
                A_(i, l) = f - g;  // row i now holds u
                f = 0.0;
                for (size_t j = 0; j <= l; j++) {  // p = A u / h into e[0..l]
                    A_(j, i) = A_(i, j) / h;        // column i keeps u / h for the accumulation of Q
                    g = 0.0;
                    for (size_t k = 0; k <= j; k++) g += A_(j, k) * A_(i, k);
                    for (size_t k = j + 1; k <= l; k++) g += A_(k, j) * A_(i, k);
                    e[j] = g / h;
                    f += e[j] * A_(i, j);
                }
                const double hh = f / (h + h);
                for (size_t j = 0; j <= l; j++) {  // A <- A - q u^T - u q^T, q = p - hh u (lower triangle)
                    f = A_(i, j);
                    e[j] = g = e[j] - hh * f;
                    for (size_t k = 0; k <= j; k++) A_(j, k) -= (f * e[k] + g * A_(i, k));
                }
            }
        } else {
            e[i] = A_(i, l);
        }
        d[i] = h;
    }
    d[0] = 0.0;
    e[0] = 0.0;
    for (size_t i = 0; i < n; i++) {  // accumulate Q = product of the reflectors
        if (d[i] != 0.0) {
            for (size_t j = 0; j < i; j++) {
                double g = 0.0;
                for (size_t k = 0; k < i; k++) g += A_(i, k) * A_(k, j);
                for (size_t k = 0; k < i; k++) A_(k, j) -= g * A_(k, i);
            }
        }
        d[i] = A_(i, i);
        A_(i, i) = 1.0;
        for (size_t j = 0; j < i; j++) A_(j, i) = A_(i, j) = 0.0;
    }
#undef A_
}

// Implicit QL with Wilkinson-type shifts on the tridiagonal (d, e) from householder_tridiag (the classic
// tql2/tqli algorithm): d receives the eigenvalues, and the rotations are applied to the rows of ZT (n, n),
// which holds Q^T on entry and the eigenvectors as rows on return. An off-diagonal e[m] counts as zero
// once |e[m]| <= DBL_EPSILON * (|d[m]| + |d[m+1]|). Returns the total QL iterations (CHECKs 60 per
// eigenvalue: never reached in practice, ~1.5 on average).
static int tridiag_ql(double* d, double* e, double* ZT, size_t n) {
    int total = 0;
    for (size_t i = 1; i < n; i++) e[i - 1] = e[i];
    e[n - 1] = 0.0;
    for (size_t l = 0; l < n; l++) {
        int iter = 0;
        size_t m;
        do {
            for (m = l; m + 1 < n; m++) {
                const double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= DBL_EPSILON * dd) break;
            }
            if (m != l) {
                CHECK(iter++ < 60);
                total++;
                double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
                double r = hypot(g, 1.0);
                g = d[m] - d[l] + e[l] / (g + (g >= 0.0 ? fabs(r) : -fabs(r)));
                double s = 1.0, c = 1.0, p = 0.0;
                size_t i = m;
                int deflated = 0;
                while (i-- > l) {
                    double f = s * e[i];
                    const double b = c * e[i];
                    e[i + 1] = (r = hypot(f, g));
                    if (r == 0.0) {  // underflow: split here and start over
                        d[i + 1] -= p;
                        e[m] = 0.0;
                        deflated = 1;
                        break;
                    }
                    s = f / r;
                    c = g / r;
                    g = d[i + 1] - p;
                    r = (d[i] - g) * s + 2.0 * c * b;
                    d[i + 1] = g + (p = s * r);
                    g = c * r - b;
                    double* zi = ZT + i * n;
                    double* zi1 = ZT + (i + 1) * n;
                    for (size_t k = 0; k < n; k++) {  // rows i, i+1 of ZT (columns of Z)
                        f = zi1[k];
                        zi1[k] = s * zi[k] + c * f;
                        zi[k] = c * zi[k] - s * f;
                    }
                }
                if (deflated) continue;
                d[l] -= p;
                e[l] = g;
                e[m] = 0.0;
            }
        } while (m != l);
    }
    return total;
}

int galore_svd_projector(const float* G, size_t rows, size_t cols, int r, float* out, double* sv) {
    const size_t s = rows < cols ? rows : cols;
    const int right = rows >= cols;
    CHECK(r >= 1 && (size_t)r <= s);
    double* A = (double*)xmalloc(s * s * sizeof(double));  // (s, s) Gram, then Q of the tridiagonalization
    double* ZT = (double*)xmalloc(s * s * sizeof(double)); // (s, s) eigenvectors as rows
    double* d = (double*)xmalloc(s * sizeof(double));      // (s) eigenvalues
    double* e = (double*)xmalloc(s * sizeof(double));      // (s) subdiagonal
    size_t* order = (size_t*)xmalloc(s * sizeof(size_t));
    gram(G, rows, cols, A);
    householder_tridiag(A, s, d, e);
    for (size_t i = 0; i < s; i++)
        for (size_t j = 0; j < s; j++) ZT[i * s + j] = A[j * s + i];
    const int iters = tridiag_ql(d, e, ZT, s);
    // eigenvalues descending (selection of the r largest; a tie keeps the lower index first)
    for (size_t i = 0; i < s; i++) order[i] = i;
    for (int k = 0; k < r; k++) {
        size_t best = k;
        for (size_t i = k + 1; i < s; i++) if (d[order[i]] > d[order[best]]) best = i;
        size_t tmp = order[k]; order[k] = order[best]; order[best] = tmp;
    }
    for (int k = 0; k < r; k++) {
        const double* z = ZT + order[k] * s;
        const double lam = d[order[k]];
        if (sv) sv[k] = lam > 0.0 ? sqrt(lam) : 0.0;
        size_t big = 0;  // sign: largest-magnitude component positive
        for (size_t i = 1; i < s; i++) if (fabs(z[i]) > fabs(z[big])) big = i;
        const double sign = z[big] < 0.0 ? -1.0 : 1.0;
        for (size_t i = 0; i < s; i++) {
            const float x = (float)(sign * z[i]);
            if (right) out[(size_t)k * cols + i] = x;  // row k of Vh (r, cols)
            else out[i * (size_t)r + k] = x;           // column k of U (rows, r)
        }
    }
    free(order);
    free(e);
    free(d);
    free(ZT);
    free(A);
    return iters;
}

// ---- the projections (plain loops: optim/ stays free of the trainer's matmul, so tools that link only
// optim/*.c, like the decision guide, still link) ---------------------------------------------------

// C (M, N) = A (M, K) @ B^T, B (N, K): row-by-row dot products, both operands contiguous.
static void mm_abt(size_t M, size_t N, size_t K, const float* A, const float* B, float* C) {
    OPTIM_PARALLEL_FOR(M * N * K)
    for (size_t i = 0; i < M; i++)
        for (size_t n = 0; n < N; n++) {
            const float* a = A + i * K;
            const float* b = B + n * K;
            float acc = 0.0f;
            for (size_t k = 0; k < K; k++) acc += a[k] * b[k];
            C[i * N + n] = acc;
        }
}

// C (M, N) = A (M, K) @ B (K, N), A element (i, k) at A[i*rs_a + k*cs_a]: each row of C accumulates
// rows of B (contiguous axpys).
static void mm_ab(size_t M, size_t N, size_t K, const float* A, size_t rs_a, size_t cs_a, const float* B, float* C) {
    OPTIM_PARALLEL_FOR(M * N * K)
    for (size_t i = 0; i < M; i++) {
        float* c = C + i * N;
        for (size_t n = 0; n < N; n++) c[n] = 0.0f;
        for (size_t k = 0; k < K; k++) {
            const float a = A[i * rs_a + k * cs_a];
            const float* b = B + k * N;
            for (size_t n = 0; n < N; n++) c[n] += a * b[n];
        }
    }
}

// ---- the step -------------------------------------------------------------------------------------

static void galore_step_plain(const GaloreScalars* k, OptTensor* p) {
    const size_t n = p->shape->numel;
    float* theta = p->param;         // (n)
    const float* grad = p->grad;     // (n)
    float* m = (float*)p->state[0];  // (n)
    float* v = (float*)p->state[1];  // (n)
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) theta[i] = galore_param(k, theta[i], galore_adam(k, grad[i], &m[i], &v[i]));
}

static void galore_step_projected(const OptHyper* h, const GaloreScalars* k, OptTensor* p, int t) {
    const ParamShape* s = p->shape;
    const size_t rows = s->rows, cols = s->cols, r = galore_rank(h, s);
    const int right = rows >= cols;
    const size_t low = right ? rows * r : r * cols;
    float* m = (float*)p->state[0];     // (low)
    float* v = (float*)p->state[1];     // (low)
    float* P = (float*)p->state[2];     // (r, cols) right, (rows, r) left
    float* pstep = (float*)p->state[3]; // (1)
    const float* G = p->grad;           // (rows, cols)
    if (*pstep == 0.0f || (t - 1) % h->update_proj_gap == 0) {
        galore_svd_projector(G, rows, cols, (int)r, P, NULL);
        *pstep = (float)t;
    }
    float* R = (float*)xmalloc(low * sizeof(float));  // projected gradient, then N = m / (sqrt(v) + eps)
    if (right)  // R (rows, r) = G (rows, cols) @ P^T (cols, r)
        mm_abt(rows, r, cols, G, P, R);
    else        // R (r, cols) = P^T (r, rows) @ G (rows, cols)
        mm_ab(r, cols, rows, P, 1, r, G, R);
    OPTIM_PARALLEL_FOR(low)
    for (size_t i = 0; i < low; i++) R[i] = galore_adam(k, R[i], &m[i], &v[i]);
    float* U = (float*)xmalloc(GALORE_BACK_ROWS * cols * sizeof(float));  // (64, cols) of back(N)
    for (size_t i0 = 0; i0 < rows; i0 += GALORE_BACK_ROWS) {
        const size_t nr = rows - i0 < GALORE_BACK_ROWS ? rows - i0 : GALORE_BACK_ROWS;
        if (right)  // U = N[i0:i0+nr] (nr, r) @ P (r, cols)
            mm_ab(nr, cols, r, R + i0 * r, r, 1, P, U);
        else        // U = P[i0:i0+nr] (nr, r) @ N (r, cols)
            mm_ab(nr, cols, r, P + i0 * r, r, 1, R, U);
        float* theta = p->param + i0 * cols;
        const size_t n = nr * cols;
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) theta[i] = galore_param(k, theta[i], U[i]);
    }
    free(U);
    free(R);
}

static void galore_adamw_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const int proj = galore_projected(p->shape);
    const GaloreScalars k = galore_scalars(st->lr, optim_wd(h, p), h->beta1, h->beta2, h->eps,
                                           proj ? h->galore_scale : 1.0, st->t);
    if (proj) galore_step_projected(h, &k, p, st->t);
    else galore_step_plain(&k, p);
}

const Optimizer OPT_GALORE_ADAMW = {
    .name = "galore_adamw",
    .description = "GaLore AdamW: block matrices' gradients projected to rank -rank by an SVD every -update-proj-gap steps",
    .paper = "Zhao et al. 2024, GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection, arXiv 2403.03507",
    .flags = 0,
    .defaults = { .lr = 3e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-6, .weight_decay = 0.0,
                  .rank = 128, .update_proj_gap = 200, .galore_scale = 0.25 }, // lr: results/sweep/ (above)
    .layout = galore_layout,
    .init = NULL,
    .step = galore_adamw_step,
    .hessian = NULL,
};
