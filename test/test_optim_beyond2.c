// test/test_optim_beyond2.c: adamw4bit (optim/adamw4bit.c, optim/quant4.h) and galore_adamw
// (optim/galore.c) against test/vectors/optim_beyond2.bin, written by test/ref_optim_beyond2.py
// (PyTorch transcriptions of the official implementations; run with /usr/bin/python3, torch 1.13).
//
//  1. 4-bit maps: the signed map equals lpmm's create_dynamic_map(True, 3, 4) built by torch; the
//     linear map is k/16. Nearest rounding on hand-picked values (ties go down, NaN -> 15).
//  2. adamw4bit: 12 steps on (67, 129) and (97, 61) matrices, a 4099-vector (all quantized), a
//     (21, 37) matrix and a 301-vector (fp32 state below the 4096 threshold); after every step the
//     parameters, the 4-bit codes and the scales against the transcription of lpmm's step.
//  3. The SVD (Householder + QL on the Gram matrix) against torch.linalg.svd (float64) on (20, 12), (12, 20), (67, 129), (129, 67).
//  4. galore_adamw: 12 steps with update_proj_gap 5 (projector refreshes at steps 1, 6, 11) on
//     "left" (37, 83) and "right" (83, 37) matrices at rank 12, a (40, 24) matrix at rank 128 (capped
//     to 24), an unprojected embedding (21, 37) and a 301-vector; parameters, m, v and the projector
//     after every step.
//  5. Layouts: each tensor's state bytes equal the formula, and so does the state layout the ledger
//     allocates (state_layout_build) over a mix of shapes.
// Gradients and initial values come from hash_uniform(), the same integer hash as the Python side.
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "test/test.h"
#include "test/vectors.h"
#include "optim/optim.h"
#include "optim/state.h"
#include "optim/quant4.h"
#include "optim/galore.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define VEC_PATH "test/vectors/optim_beyond2.bin"
#define STEPS 12
#define ZERO_HEAD 300
#define LR 1e-3f

extern const Optimizer OPT_ADAMW4BIT, OPT_GALORE_ADAMW;

// ---- deterministic inputs, as in test/ref_optim_beyond2.py ---------------------------------------
static uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

static void hash_uniform(uint32_t seed, uint32_t t, size_t n, float* out) {
    const uint32_t key = fmix32(seed * 65536u + t);
    for (size_t i = 0; i < n; i++) {
        uint32_t h = fmix32((uint32_t)i * 0x9E3779B1u + key);
        out[i] = (float)((int32_t)(h >> 8) - 8388608) * (1.0f / 8388608.0f);
    }
}

static float lr_at(int t) { return t < 5 ? LR * (float)t / 5.0f : LR; }

static const float ROW_SCALES[3] = { 0.1f, 1.0f, 10.0f };

static void grad_of(uint32_t seed, int t, size_t rows, size_t cols, size_t zero_head, float* g) {
    float* col_bias = (float*)malloc(cols * sizeof(float));
    hash_uniform(seed + 1, 0, cols, col_bias);
    hash_uniform(seed, (uint32_t)t, rows * cols, g);
    for (size_t i = 0; i < rows * cols; i++) {
        g[i] = (g[i] + 0.5f * col_bias[i % cols]) * ROW_SCALES[(i / cols) % 3];
        if (i < zero_head) g[i] = 0.0f;
    }
    free(col_bias);
}

// ---- a tensor with its state, allocated from the layout ----------------------------------------
typedef struct {
    const Optimizer* opt;
    OptHyper h;
    ParamShape shape;
    int nstate;
    StateSpec specs[OPT_MAX_STATES];
    void* state[OPT_MAX_STATES];
} Slot;

static Slot slot_new(const Optimizer* o, const OptHyper* h, int ndim, size_t rows, size_t cols, int role, int decay) {
    Slot s;
    memset(&s, 0, sizeof(s));
    s.opt = o;
    s.h = *h;
    s.shape.name = "test";
    s.shape.ndim = ndim;
    s.shape.rows = rows;
    s.shape.cols = cols;
    s.shape.numel = rows * cols;
    s.shape.decay = decay;
    s.shape.role = role;
    s.nstate = o->layout(&s.h, &s.shape, s.specs);
    for (int k = 0; k < s.nstate; k++) s.state[k] = calloc(s.specs[k].count + 1, dtype_size(s.specs[k].dtype));
    return s;
}

static void slot_free(Slot* s) {
    for (int k = 0; k < s->nstate; k++) free(s->state[k]);
}

static void slot_step(Slot* s, float* p, const float* g, int t) {
    OptTensor ot = { &s->shape, p, g, { 0 } };
    for (int k = 0; k < s->nstate; k++) ot.state[k] = s->state[k];
    OptHyper h = s->h;
    if (!s->shape.decay) h.weight_decay = 0.0f;  // as the trainer does
    OptStep st = { t, lr_at(t), lr_at(t) / s->h.lr, 0, NULL };
    s->opt->step(&h, &ot, &st);
}

// Largest |got - want| over n elements (infinite if either is non-finite).
static double max_diff(const float* got, const float* want, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = isfinite(got[i]) && isfinite(want[i]) ? fabs((double)got[i] - (double)want[i]) : INFINITY;
        if (e > worst) worst = e;
    }
    return worst;
}

// Largest |got - want| / (atol + |want|): a relative error floored at atol.
static double max_rel(const float* got, const float* want, size_t n, double atol) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = isfinite(got[i]) && isfinite(want[i]) ? fabs((double)got[i] - (double)want[i]) / (atol + fabs((double)want[i])) : INFINITY;
        if (e > worst) worst = e;
    }
    return worst;
}

// max |got - want| relative to max |want| (elements near zero carry the absolute error of the large ones).
static double rel_to_max(const float* got, const float* want, size_t n) {
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) mx = fmax(mx, fabs((double)want[i]));
    return max_diff(got, want, n) / (mx > 0.0 ? mx : 1.0);
}

// ---- 1. 4-bit maps ------------------------------------------------------------------------------
static void test_maps(const VecFile* vf) {
    size_t n;
    const float* ws = vec_get(vf, "map4_signed", &n);
    const float* wl = vec_get(vf, "map4_linear", NULL);
    const Q4Map* qs = q4_map_signed();
    const Q4Map* ql = q4_map_linear();
    const float* ms = qs->code;
    const float* ml = ql->code;
    int ds = 0, dl = 0;
    for (int i = 0; i < Q4_CODES; i++) { ds += ms[i] != ws[i]; dl += ml[i] != wl[i]; }
    test_check(n == Q4_CODES && ds == 0, "entries differ", "q4 signed map: all 16 entries equal lpmm's construction in torch (%d differ)", ds);
    test_check(dl == 0 && ml[0] == 0.0625f && ml[15] == 1.0f, "entries differ", "q4 linear map: k/16, k = 1..16, no zero (%d differ)", dl);
    // hand-derived anchors: midpoints of linspace(0.1, 1, 5) are 0.2125 .. 0.8875; 10^-2 * 0.55 = 0.0055
    test_check(ms[7] == 0.0f && ms[15] == 1.0f && fabsf(ms[0] + 0.8875f) < 1e-7f && fabsf(ms[8] - 0.0055f) < 1e-9f,
               NULL, "q4 signed map anchors: [0] = -0.8875, [7] = 0, [8] = 0.0055, [15] = 1");
    // rounding: ties go down, the ends clamp, NaN -> 15
    const float mid = (ml[3] + ml[4]) * 0.5f;  // 4.5/16, exact
    int ok = q4_search(ml, mid) == 3 && q4_search(ml, nextafterf(mid, 1.0f)) == 4 && q4_search(ml, 0.0f) == 0
          && q4_search(ml, 2.0f) == 15 && q4_search(ml, NAN) == 15 && q4_search(ms, 0.0f) == 7
          && q4_search(ms, -1.0f) == 0 && q4_search(ms, 0.00275f) == 7 && q4_search(ms, 0.0028f) == 8;
    test_check(ok, NULL, "q4_search: ties go to the lower code, ends clamp, NaN -> 15 (lpmm's quantize_bsearch)");
    // q4_nearest (branch-free) == q4_search on every midpoint +-4 ulps, every code +-4 ulps, the ends,
    // NaN, infinities, and a sweep
    int diff = 0, checked = 0;
    for (int map = 0; map < 2; map++) {
        const Q4Map* qm = map ? ql : qs;
        float pts[2 * Q4_CODES + 4];
        int np = 0;
        for (int k = 0; k < Q4_CODES; k++) pts[np++] = qm->code[k];
        for (int k = 0; k < Q4_CODES - 1; k++) pts[np++] = qm->mid[k];
        pts[np++] = INFINITY;
        pts[np++] = -INFINITY;
        pts[np++] = NAN;
        for (int a = 0; a < np; a++) {
            float x = pts[a];
            for (int u = 0; u < 4; u++) x = nextafterf(x, -INFINITY);
            for (int u = 0; u <= 8; u++, x = nextafterf(x, INFINITY)) {
                diff += q4_nearest(qm, x) != q4_search(qm->code, x);
                checked++;
            }
        }
        for (int i = -300000; i <= 300000; i++) {
            const float x = (float)i * 4e-6f;
            diff += q4_nearest(qm, x) != q4_search(qm->code, x);
            checked++;
        }
    }
    test_check(diff == 0, "differs", "q4_nearest (branch-free) == q4_search (the kernel's binary search) on %d values", checked);
    // against brute force nearest on a sweep (ties excluded: brute force has no rule for them)
    int bad = 0;
    for (int i = -1200; i <= 1200; i++) {
        const float x = (float)i / 1000.0f + 1e-4f;
        for (int map = 0; map < 2; map++) {
            const float* mp = map ? ml : ms;
            int best = 0;
            for (int k = 1; k < Q4_CODES; k++) if (fabsf(mp[k] - x) < fabsf(mp[best] - x)) best = k;
            bad += q4_nearest(map ? ql : qs, x) != best;
        }
    }
    test_check(bad == 0, "differs from brute force", "q4_nearest equals brute-force nearest on 4802 values (%d differ)", bad);
}

// ---- 2. adamw4bit -------------------------------------------------------------------------------
// Codes: the transcription stores 5 codes per float (code k times 16^k).
static uint8_t ref_code(const float* packed, size_t i) {
    uint32_t v = (uint32_t)packed[i / 5];
    return (uint8_t)((v >> (4 * (i % 5))) & 0xF);
}

// Tolerances. The C step and the transcription run the same fp32 operations in the same order, except
// that torch's vectorized CPU kernels fuse some multiply-adds (add_ with alpha, addcmul) where the C
// step rounds twice: values differ by an ulp or two (observed: parameters 6e-8 = 1 ulp of O(1) values,
// scales 2.3e-7 relative). A value within an ulp of a midpoint between two codes may then round to the
// neighbouring code, which changes that element's next update by at most one code gap times lr. So:
// codes may differ by at most one step in at most 0.1% of elements (observed: none); parameters within
// 1e-6 absolute (params are O(1); an update is ~lr = 1e-3); scales within 1e-5 relative; fp32 m, v of
// small tensors within 1e-6 of their largest element.
static void test_a4_case(const VecFile* vf, const char* name, int ndim, size_t rows, size_t cols, uint32_t seed,
                         size_t zero_head, float wd) {
    const size_t n = rows * cols;
    OptHyper h = OPT_ADAMW4BIT.defaults;
    h.weight_decay = wd;
    // the betas the committed vectors were made with: fp32-rounded (ref_optim_beyond2.py's f32), from
    // before the table's constants became the doubles a user types (optim.h)
    h.beta1 = (double)0.9f;
    h.beta2 = (double)0.999f;
    Slot s = slot_new(&OPT_ADAMW4BIT, &h, ndim, rows, cols, ndim == 2 ? PARAM_MATRIX : PARAM_VECTOR, wd > 0.0f);
    float* p = (float*)malloc(n * sizeof(float));
    float* g = (float*)malloc(n * sizeof(float));
    hash_uniform(seed + 7, 0, n, p);
    const int quant = n > 4096;
    double worst_p = 0.0, worst_s = 0.0;
    size_t code_diff = 0, code_far = 0;
    char key[64];
    for (int t = 1; t <= STEPS; t++) {
        grad_of(seed, t, rows, cols, zero_head, g);
        slot_step(&s, p, g, t);
        snprintf(key, sizeof(key), "%s_p_%d", name, t);
        const double dp = max_diff(p, vec_get(vf, key, NULL), n);
        if (dp > worst_p) worst_p = dp;
        if (quant) {
            const uint8_t* mq = (const uint8_t*)s.state[0];
            const uint8_t* vq = (const uint8_t*)s.state[1];
            snprintf(key, sizeof(key), "%s_mc_%d", name, t);
            const float* wm = vec_get(vf, key, NULL);
            snprintf(key, sizeof(key), "%s_vc_%d", name, t);
            const float* wv = vec_get(vf, key, NULL);
            for (size_t i = 0; i < n; i++) {
                const int dm = abs((int)q4_get(mq, i) - (int)ref_code(wm, i));
                const int dv = abs((int)q4_get(vq, i) - (int)ref_code(wv, i));
                code_diff += (dm != 0) + (dv != 0);
                code_far += (dm > 1) + (dv > 1);
            }
            snprintf(key, sizeof(key), "%s_ms_%d", name, t);
            size_t nb;
            const float* wms = vec_get(vf, key, &nb);
            double ds = max_rel((const float*)s.state[2], wms, nb, 1e-30);
            if (ndim == 2) {
                snprintf(key, sizeof(key), "%s_vrow_%d", name, t);
                double d2 = max_rel((const float*)s.state[3], vec_get(vf, key, NULL), rows, 1e-30);
                snprintf(key, sizeof(key), "%s_vcol_%d", name, t);
                double d3 = max_rel((const float*)s.state[4], vec_get(vf, key, NULL), cols, 1e-30);
                ds = fmax(ds, fmax(d2, d3));
            } else {
                snprintf(key, sizeof(key), "%s_vs_%d", name, t);
                ds = fmax(ds, max_rel((const float*)s.state[3], vec_get(vf, key, NULL), nb, 1e-30));
            }
            if (ds > worst_s) worst_s = ds;
        } else {
            snprintf(key, sizeof(key), "%s_m_%d", name, t);
            double dm = rel_to_max((const float*)s.state[0], vec_get(vf, key, NULL), n);
            snprintf(key, sizeof(key), "%s_v_%d", name, t);
            double dv = rel_to_max((const float*)s.state[1], vec_get(vf, key, NULL), n);
            worst_s = fmax(worst_s, fmax(dm, dv));
        }
    }
    printf("# adamw4bit %s: max |dp| %.3g, max scale/state rel diff %.3g, codes differing %zu of %zu (%zu by more than one)\n",
           name, worst_p, worst_s, code_diff, 2 * n * STEPS, code_far);
    test_check(worst_p <= 1e-6, "parameters differ", "adamw4bit %s (%zux%zu): parameters after each of %d steps within 1e-6 of lpmm's step (max %.3g)",
               name, rows, cols, STEPS, worst_p);
    if (quant) {
        test_check(code_far == 0 && code_diff * 1000 <= 2 * n * STEPS, "codes differ",
                   "adamw4bit %s: m and v codes after every step equal lpmm's (%zu differ, none by more than one allowed, <= 0.1%%)", name, code_diff);
        test_check(worst_s <= 1e-5, "scales differ", "adamw4bit %s: m block scales and v %s within 1e-5 relative (max %.3g)",
                   name, ndim == 2 ? "row/column maxima" : "block scales", worst_s);
    } else {
        test_check(worst_s <= 1e-6, "state differs", "adamw4bit %s: fp32 m, v (below the 4096 threshold) within 1e-6 of their max (max %.3g)", name, worst_s);
    }
    free(g);
    free(p);
    slot_free(&s);
}

static void test_adamw4bit(const VecFile* vf) {
    test_a4_case(vf, "a4_mat", 2, 67, 129, 1, ZERO_HEAD, 0.01f);
    test_a4_case(vf, "a4_tall", 2, 97, 61, 3, ZERO_HEAD, 0.01f);
    test_a4_case(vf, "a4_vec", 1, 1, 4099, 5, 0, 0.0f);
    test_a4_case(vf, "a4_small", 2, 21, 37, 7, 0, 0.01f);
    test_a4_case(vf, "a4_svec", 1, 1, 301, 9, 0, 0.0f);
}

// ---- 3. the SVD ---------------------------------------------------------------------------------
// Tolerances: singular values within 1e-6 * sigma_1 (the Gram matrix is exact to ~1e-16 relative in
// double, and a backward-stable symmetric eigensolver's eigenvalues to ~1e-15 * |A|, so sigma_i is off
// by ~1e-15 sigma_1^2 / sigma_i; the reference's are stored in fp32, 6e-8 relative); vectors
// elementwise within 2e-6 of the float64 reference rounded to fp32 (fp32 rounding is 6e-8; an
// eigenvector's error is ~1e-15 |A| / gap, and the smallest relative gap here, 1.4e-5 in sigma, is
// 2.8e-5 in sigma^2: 4e-11); and the subspace spanned by the first r vectors: the sine of the largest
// principal angle (bounded by ||Q_ref - Q Q^T Q_ref||_F) below 1e-5.
static void test_svd(const VecFile* vf) {
    static const size_t shapes[4][2] = { { 20, 12 }, { 12, 20 }, { 67, 129 }, { 129, 67 } };
    for (int k = 0; k < 4; k++) {
        const size_t rows = shapes[k][0], cols = shapes[k][1], s = rows < cols ? rows : cols;
        const int right = rows >= cols;
        float* G = (float*)malloc(rows * cols * sizeof(float));
        grad_of(11 + 2 * (uint32_t)k, 1, rows, cols, 0, G);
        float* P = (float*)malloc(s * (right ? cols : rows) * sizeof(float));
        double* sv = (double*)malloc(s * sizeof(double));
        const int iters = galore_svd_projector(G, rows, cols, (int)s, P, sv);
        char key[32];
        snprintf(key, sizeof(key), "svd%d_S", k);
        const float* wS = vec_get(vf, key, NULL);
        snprintf(key, sizeof(key), "svd%d_P", k);
        const float* wP = vec_get(vf, key, NULL);
        double ds = 0.0;
        for (size_t i = 0; i < s; i++) ds = fmax(ds, fabs(sv[i] - (double)wS[i]) / (double)wS[0]);
        const double dv = max_diff(P, wP, s * (right ? cols : rows));
        // subspace of the first r = s/3 vectors: vectors as rows q_i (s-long each is too short for
        // "left": there the vectors are columns of P (rows, s))
        const size_t r = s / 3, len = right ? cols : rows;
        double resid = 0.0;
        for (size_t a = 0; a < r; a++) {  // q_ref_a minus its projection on span{q_0..q_{r-1}}
            double* proj = (double*)calloc(len, sizeof(double));
            for (size_t b = 0; b < r; b++) {
                double dot = 0.0;
                for (size_t i = 0; i < len; i++) {
                    const double qb = right ? P[b * cols + i] : P[i * s + b];
                    const double qa = right ? wP[a * cols + i] : wP[i * s + a];
                    dot += qb * qa;
                }
                for (size_t i = 0; i < len; i++) proj[i] += dot * (right ? P[b * cols + i] : P[i * s + b]);
            }
            for (size_t i = 0; i < len; i++) {
                const double e = (right ? wP[a * cols + i] : wP[i * s + a]) - proj[i];
                resid += e * e;
            }
            free(proj);
        }
        resid = sqrt(resid);
        printf("# svd %zux%zu: %d QL iterations, max |dsigma|/sigma_1 %.3g, max |dvector| %.3g, subspace residual (r=%zu) %.3g\n",
               rows, cols, iters, ds, dv, r, resid);
        test_check(ds <= 1e-6, "singular values differ", "svd %zux%zu: singular values within 1e-6 sigma_1 of torch.linalg.svd (max %.3g)", rows, cols, ds);
        test_check(dv <= 2e-6, "vectors differ", "svd %zux%zu: sign-fixed singular vectors within 2e-6 of torch.linalg.svd's (max %.3g)", rows, cols, dv);
        test_check(resid <= 1e-5, "subspace differs", "svd %zux%zu: top-%zu subspace, sin(largest principal angle) <= %.3g <= 1e-5", rows, cols, r, resid);
        free(sv);
        free(P);
        free(G);
    }
}

// ---- 4. galore_adamw ----------------------------------------------------------------------------
// Tolerances: the projections are fp32 matrix products whose summation order differs from torch's
// BLAS (each entry off by ~1e-7 relative times sqrt(K)), the projector agrees to 2e-6 (test 3; observed
// bit-equal, both being the float64 vectors rounded once), torch fuses the multiply-adds of add_(alpha)
// and addcmul (1 ulp), and Adam's m / (sqrt(v) + eps) passes relative errors through unamplified; the
// update is lr * alpha * that, so parameters agree to ~lr * 1e-5 = 1e-8 plus fp32 rounding of O(1)
// params (6e-8): atol 1e-6. m and v: 1e-4 relative to the tensor's largest element (elements of the
// projected m near zero carry the absolute error of the large ones; observed 2.5e-7). Because m
// persists across the refreshes at steps 6 and 11, a projector with a flipped or rotated vector would
// show here as an O(1) difference.
static void check_rel_to_max(const float* got, const float* want, size_t n, double* worst) {
    const double d = rel_to_max(got, want, n);
    if (d > *worst) *worst = d;
}

static void test_galore_case(const VecFile* vf, const char* name, int ndim, size_t rows, size_t cols, uint32_t seed,
                             int rank, int role, float wd) {
    const size_t n = rows * cols;
    OptHyper h = OPT_GALORE_ADAMW.defaults;
    h.weight_decay = wd;
    h.rank = rank;
    h.update_proj_gap = 5;
    h.galore_scale = 0.25f;
    Slot s = slot_new(&OPT_GALORE_ADAMW, &h, ndim, rows, cols, role, wd > 0.0f);
    const int projected = s.nstate == 4;
    float* p = (float*)malloc(n * sizeof(float));
    float* g = (float*)malloc(n * sizeof(float));
    hash_uniform(seed + 7, 0, n, p);
    double worst_p = 0.0, worst_mv = 0.0, worst_P = 0.0;
    int steps_ok = 1;
    char key[64];
    for (int t = 1; t <= STEPS; t++) {
        grad_of(seed, t, rows, cols, 0, g);
        slot_step(&s, p, g, t);
        snprintf(key, sizeof(key), "%s_p_%d", name, t);
        worst_p = fmax(worst_p, max_diff(p, vec_get(vf, key, NULL), n));
        size_t nm;
        snprintf(key, sizeof(key), "%s_m_%d", name, t);
        const float* wm = vec_get(vf, key, &nm);
        check_rel_to_max((const float*)s.state[0], wm, nm, &worst_mv);
        snprintf(key, sizeof(key), "%s_v_%d", name, t);
        check_rel_to_max((const float*)s.state[1], vec_get(vf, key, NULL), nm, &worst_mv);
        if (nm != s.specs[0].count) steps_ok = 0;
        if (projected) {
            size_t np;
            snprintf(key, sizeof(key), "%s_P_%d", name, t);
            const float* wP = vec_get(vf, key, &np);
            if (np != s.specs[2].count) steps_ok = 0;
            worst_P = fmax(worst_P, max_diff((const float*)s.state[2], wP, np));
            const float refreshed = (float)(t - (t - 1) % 5);  // 1, 6, 11
            if (*(const float*)s.state[3] != refreshed) steps_ok = 0;
        }
    }
    printf("# galore %s: max |dp| %.3g, m/v max diff / max %.3g, projector max diff %.3g\n", name, worst_p, worst_mv, worst_P);
    test_check(steps_ok, "shapes or refresh steps differ", "galore %s (%zux%zu, rank %d): state shapes%s as the reference",
               name, rows, cols, rank, projected ? " and refresh steps 1, 6, 11" : "");
    test_check(worst_p <= 1e-6, "parameters differ", "galore %s: parameters after each of %d steps within 1e-6 of GaLore's AdamW (max %.3g)", name, STEPS, worst_p);
    test_check(worst_mv <= 1e-4, "m or v differ", "galore %s: m and v after every step within 1e-4 of their max (max %.3g)", name, worst_mv);
    if (projected)
        test_check(worst_P <= 2e-6, "projector differs", "galore %s: projector after every step within 2e-6 (max %.3g)", name, worst_P);
    free(g);
    free(p);
    slot_free(&s);
}

static void test_galore(const VecFile* vf) {
    test_galore_case(vf, "g_left", 2, 37, 83, 21, 12, PARAM_MATRIX, 0.1f);
    test_galore_case(vf, "g_right", 2, 83, 37, 23, 12, PARAM_ATTN_QKV, 0.1f);
    test_galore_case(vf, "g_cap", 2, 40, 24, 25, 128, PARAM_MATRIX, 0.1f);
    test_galore_case(vf, "g_emb", 2, 21, 37, 27, 12, PARAM_EMBEDDING, 0.1f);
    test_galore_case(vf, "g_vec", 1, 1, 301, 29, 12, PARAM_VECTOR, 0.0f);
}

// ---- 5. layouts ---------------------------------------------------------------------------------
static size_t a4_formula(int ndim, size_t rows, size_t cols) {
    const size_t n = rows * cols, blocks = (n + 127) / 128;
    if (n <= 4096) return 8 * n;
    return 2 * ((n + 1) / 2) + 4 * blocks + (ndim == 2 ? 4 * (rows + cols) : 4 * blocks);
}

static size_t galore_formula(int projected, size_t rows, size_t cols, size_t rank) {
    if (!projected) return 8 * rows * cols;
    const size_t s = rows < cols ? rows : cols, r = rank < s ? rank : s;
    return rows >= cols ? 4 * (r * cols + 2 * rows * r + 1) : 4 * (rows * r + 2 * r * cols + 1);
}

static void test_layout(void) {
    // a GPT-2-like mix: embedding, qkv, proj, fc, mlp proj, vectors; odd sizes included
    static const struct { int ndim; size_t rows, cols; int role; } t[] = {
        { 2, 50304, 64, PARAM_EMBEDDING }, { 2, 192, 64, PARAM_ATTN_QKV }, { 2, 64, 64, PARAM_MATRIX },
        { 2, 256, 64, PARAM_MATRIX }, { 2, 64, 256, PARAM_MATRIX }, { 1, 1, 64, PARAM_VECTOR },
        { 1, 1, 5001, PARAM_VECTOR }, { 2, 67, 129, PARAM_MATRIX }, { 2, 20, 30, PARAM_MATRIX },
    };
    const int nt = (int)(sizeof(t) / sizeof(t[0]));
    ParamShape shapes[16];
    for (int i = 0; i < nt; i++) {
        ParamShape ps = { "t", t[i].ndim, t[i].rows, t[i].cols, t[i].rows * t[i].cols, t[i].ndim == 2, t[i].role, 1 };
        shapes[i] = ps;
    }
    const int ranks[2] = { 128, 16 };
    for (int ri = 0; ri < 2; ri++) {
        OptHyper h = OPT_GALORE_ADAMW.defaults;
        h.rank = ranks[ri];
        size_t want = 0, each_ok = 1;
        for (int i = 0; i < nt; i++) {
            const int proj = t[i].ndim == 2 && (t[i].role == PARAM_MATRIX || t[i].role == PARAM_ATTN_QKV);
            const size_t f = galore_formula(proj, t[i].rows, t[i].cols, (size_t)h.rank);
            each_ok &= optim_state_bytes(&OPT_GALORE_ADAMW, &h, &shapes[i]) == f;
            want += f;
        }
        StateLayout sl;
        state_layout_build(&sl, &OPT_GALORE_ADAMW, &h, shapes, nt);
        test_check(each_ok && sl.total_bytes == want, "bytes differ",
                   "galore layout (rank %d): every tensor's state bytes and the ledger's total (%zu) equal 4*(P + m + v + 1) in the projected shape", h.rank, sl.total_bytes);
        state_layout_free(&sl);
    }
    OptHyper h = OPT_ADAMW4BIT.defaults;
    size_t want = 0, each_ok = 1;
    for (int i = 0; i < nt; i++) {
        const size_t f = a4_formula(t[i].ndim, t[i].rows, t[i].cols);
        each_ok &= optim_state_bytes(&OPT_ADAMW4BIT, &h, &shapes[i]) == f;
        want += f;
    }
    StateLayout sl;
    state_layout_build(&sl, &OPT_ADAMW4BIT, &h, shapes, nt);
    test_check(each_ok && sl.total_bytes == want, "bytes differ",
               "adamw4bit layout: every tensor's state bytes and the ledger's total (%zu) equal n/2 + n/2 + 4*ceil(n/128) + 4*(rows+cols) (8n at n <= 4096)", sl.total_bytes);
    state_layout_free(&sl);
}

int main(void) {
    VecFile vf = vec_load(VEC_PATH);
    test_maps(&vf);
    test_adamw4bit(&vf);
    test_svd(&vf);
    test_galore(&vf);
    test_layout();
    vec_free(&vf);
    return test_finish("test_optim_beyond2");
}
