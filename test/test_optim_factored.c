// test/test_optim_factored.c: adafactor, came and adalomo against PyTorch transcriptions of their
// reference implementations (test/ref_optim_factored.py -> test/vectors/optim_factored.bin), plus
// their exact state layouts and bytes.
//
// Reference runs: 12 steps on a (9, 6) matrix (decays) and a 13-vector (does not; its RMS is under
// eps2), values over three to four decades, a fixed gradient sequence whose scale jumps so update
// clipping binds on some steps only, with a zero row and a zero column (eps1/eps2 decide those states).
// Variants: adafactor defaults (relative step: the test passes a nonsense OptStep.lr to show it is
// ignored), the same from step 40000 (where the relative step is 1/sqrt(t) rather than its 1e-2 cap),
// adafactor with lr + beta1 + weight decay, came defaults + weight decay, adalomo + weight
// decay; the last three get a warmup/cosine lr per step. Hyperparameters start from each optimizer's
// own .defaults table, so the C defaults are checked against the reference's.
//
// Tolerance: |c - ref| <= RTOL*|ref| + ATOL_REL*max|ref| per array and step, RTOL = 1e-5,
// ATOL_REL = 1e-6 for parameters and momentum, 0 for the (positive) second-moment/residual states.
// Both sides are fp32; they differ only in reduction order and precision (we accumulate row/column
// means and RMS in double, torch in fp32 cascade sums, ~1e-7 relative) and in fused multiply-adds,
// about 1 ulp per operation. These differences do not grow across steps: the EMAs
// average them and the clipping and rsqrt are smooth. Measured: at most 0.11 of the tolerance (run
// with -v for the worst err/tol of every array). The absolute term is for elements that pass through
// zero (momentum, parameters changing sign), where a relative bound is meaningless. A wrong constant
// (a beta, eps1, eps2, the clip threshold, the decay rate, the relative step, lr, wd) or a dropped
// mean(r) moved some array by 10x to 1e6x the tolerance when tried (each broken on purpose, then restored).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common/util.h"
#include "test/test.h"
#include "test/vectors.h"
#include "optim/optim.h"
#include "optim/factored.h"

extern const Optimizer OPT_ADAFACTOR, OPT_CAME, OPT_ADALOMO;

#define VEC_PATH "test/vectors/optim_factored.bin"
#define STEPS 12
#define RTOL 1e-5
#define ATOL_REL 1e-6

static int verbose = 0;

// vec_get that returns NULL for a missing name (a missing reference state is a FAIL, not an abort).
static const float* vec_find(const VecFile* vf, const char* name, size_t* n) {
    for (int i = 0; i < vf->count; i++)
        if (strcmp(vf->arrays[i].name, name) == 0) {
            if (n) *n = vf->arrays[i].n;
            return vf->arrays[i].data;
        }
    return NULL;
}

// Worst excess over the tolerance of one array at one step, tracked across steps.
typedef struct {
    double worst_ratio;  // max over elements of |c - ref| / tol (<= 1 passes)
    double worst_err;    // |c - ref| at that element
    int worst_step;
    size_t worst_index;
    float got, want;
    int bad;             // size mismatch, missing array or non-finite value
    char why[160];
} Cmp;

static void cmp_add(Cmp* c, const float* got, const float* want, size_t n, int step, double atol_rel) {
    double maxref = 0.0;
    for (size_t i = 0; i < n; i++) maxref = fmax(maxref, fabs((double)want[i]));
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(want[i])) {
            c->bad = 1;
            snprintf(c->why, sizeof(c->why), "step %d element %zu not finite (got %g, want %g)", step, i,
                     (double)got[i], (double)want[i]);
            return;
        }
        double err = fabs((double)got[i] - (double)want[i]);
        double tol = RTOL * fabs((double)want[i]) + atol_rel * maxref;
        double ratio = tol > 0 ? err / tol : (err > 0 ? INFINITY : 0.0);
        if (ratio > c->worst_ratio) {
            c->worst_ratio = ratio;
            c->worst_err = err;
            c->worst_step = step;
            c->worst_index = i;
            c->got = got[i];
            c->want = want[i];
        }
    }
}

static void cmp_report(const Cmp* c, const char* name) {
    char why[256];
    if (c->bad) snprintf(why, sizeof(why), "%s", c->why);
    else snprintf(why, sizeof(why), "step %d element %zu: got %.9g want %.9g (err/tol %.3g)", c->worst_step,
                  c->worst_index, (double)c->got, (double)c->want, c->worst_ratio);
    if (verbose) printf("  %s: worst err/tol %.3g (abs err %.3g, step %d)\n", name, c->worst_ratio,
                        c->worst_err, c->worst_step);
    test_check(!c->bad && c->worst_ratio <= 1.0, why, "%s", name);
}

typedef struct {
    const char* name;
    const Optimizer* opt;
    int relative_step;   // -1: keep the default
    int use_beta1;
    float beta1;
    float weight_decay;
} Variant;

typedef struct {
    ParamShape shape;
    float* param;
    StateSpec specs[OPT_MAX_STATES];
    int nspecs;
    void* state[OPT_MAX_STATES];
    Cmp cmp_param;
    Cmp cmp_state[OPT_MAX_STATES];
} Tensor;

static void run_variant(const VecFile* vf, const Variant* v) {
    OptHyper h = v->opt->defaults;
    if (v->relative_step >= 0) h.relative_step = v->relative_step;
    if (v->use_beta1) { h.use_beta1 = 1; h.beta1 = v->beta1; }
    h.weight_decay = v->weight_decay;

    size_t nW, nb;
    Tensor T[2];
    memset(T, 0, sizeof(T));
    T[0].shape = (ParamShape){ "W", 2, 9, 6, 54, 1, PARAM_MATRIX, 0 };   // (9, 6) matrix, decays
    T[1].shape = (ParamShape){ "b", 1, 1, 13, 13, 0, PARAM_VECTOR, 0 };  // (13) vector, does not decay
    const float* W0 = vec_get(vf, "W0", &nW);
    const float* b0 = vec_get(vf, "b0", &nb);
    CHECK(nW == 54 && nb == 13);
    const float* init[2] = { W0, b0 };
    const char* tname[2] = { "W", "b" };

    char key[160];
    for (int k = 0; k < 2; k++) {
        Tensor* x = &T[k];
        x->param = (float*)malloc(x->shape.numel * sizeof(float));
        memcpy(x->param, init[k], x->shape.numel * sizeof(float));
        x->nspecs = v->opt->layout(&h, &x->shape, x->specs);
        for (int s = 0; s < x->nspecs; s++)
            x->state[s] = calloc(x->specs[s].count, dtype_size(x->specs[s].dtype));
        snprintf(key, sizeof(key), "%s.%s.nstates", v->name, tname[k]);
        int want = (int)vec_get(vf, key, NULL)[0];
        char why[128];
        snprintf(why, sizeof(why), "layout has %d state tensors, the reference keeps %d", x->nspecs, want);
        test_check(x->nspecs == want, why, "%s %s: same state tensors as the reference", v->name, tname[k]);
    }

    snprintf(key, sizeof(key), "%s.t0", v->name);
    const int t0 = (int)vec_get(vf, key, NULL)[0]; // the optimizer's first step number (1, or late)
    for (int t = 1; t <= STEPS; t++) {
        snprintf(key, sizeof(key), "%s.t%d.lr", v->name, t);
        float lr = vec_get(vf, key, NULL)[0];
        OptStep st = { .t = t0 + t - 1, .lr = lr, .lr_scale = 0.5f, .nonfinite = 0 };
        if (h.relative_step) st.lr = 7.0f; // must be ignored: the relative step sets the step size
        for (int k = 0; k < 2; k++) {
            Tensor* x = &T[k];
            snprintf(key, sizeof(key), "g.t%d.%s", t, tname[k]);
            OptTensor p;
            memset(&p, 0, sizeof(p));
            p.shape = &x->shape;
            p.param = x->param;
            p.grad = vec_get(vf, key, NULL);
            for (int s = 0; s < x->nspecs; s++) p.state[s] = x->state[s];
            v->opt->step(&h, &p, &st);

            snprintf(key, sizeof(key), "%s.t%d.%s", v->name, t, tname[k]);
            cmp_add(&x->cmp_param, x->param, vec_get(vf, key, NULL), x->shape.numel, t, ATOL_REL);
            for (int s = 0; s < x->nspecs; s++) {
                size_t n = 0;
                snprintf(key, sizeof(key), "%s.t%d.%s.%s", v->name, t, tname[k], x->specs[s].name);
                const float* want = vec_find(vf, key, &n);
                Cmp* c = &x->cmp_state[s];
                if (!want || n != x->specs[s].count) {
                    c->bad = 1;
                    snprintf(c->why, sizeof(c->why), "reference has no state '%s' of %zu elements at step %d",
                             x->specs[s].name, x->specs[s].count, t);
                } else if (!c->bad) {
                    // second-moment and residual EMAs are sums of squares plus eps: strictly
                    // positive, compared relatively with no absolute slack (so eps1/eps2 show)
                    int signed_state = strcmp(x->specs[s].name, "exp_avg") == 0;
                    cmp_add(c, (const float*)x->state[s], want, n, t, signed_state ? ATOL_REL : 0.0);
                }
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        Tensor* x = &T[k];
        snprintf(key, sizeof(key), "%s %s: param over %d steps", v->name, tname[k], STEPS);
        cmp_report(&x->cmp_param, key);
        for (int s = 0; s < x->nspecs; s++) {
            snprintf(key, sizeof(key), "%s %s: state %s over %d steps", v->name, tname[k], x->specs[s].name,
                     STEPS);
            cmp_report(&x->cmp_state[s], key);
            free(x->state[s]);
        }
        free(x->param);
    }
}

// ---- layouts and bytes ---------------------------------------------------------------------------

static ParamShape mat(size_t rows, size_t cols) {
    return (ParamShape){ "m", 2, rows, cols, rows * cols, 1, PARAM_MATRIX, 0 };
}
static ParamShape vec(size_t n) {
    return (ParamShape){ "v", 1, 1, n, n, 0, PARAM_VECTOR, 0 };
}

static void check_bytes(const char* what, size_t got, size_t want) {
    char why[128];
    snprintf(why, sizeof(why), "got %zu bytes, want %zu", got, want);
    test_check(got == want, why, "%s", what);
}

// GPT-2 d12 as the trainer lays it out: padded vocab 50304, C 768, 12 layers, 1024 positions.
static size_t d12_state_bytes(const Optimizer* o, const OptHyper* h, size_t* num_params) {
    const size_t V = 50304, C = 768, L = 12, T = 1024;
    ParamShape shapes[16];
    int counts[16], n = 0;
    shapes[n] = mat(V, C); counts[n++] = 1;         // wte
    shapes[n] = mat(T, C); counts[n++] = 1;         // wpe
    shapes[n] = mat(3 * C, C); counts[n++] = L;     // qkv weight
    shapes[n] = mat(C, C); counts[n++] = L;         // attention projection
    shapes[n] = mat(4 * C, C); counts[n++] = L;     // fc
    shapes[n] = mat(C, 4 * C); counts[n++] = L;     // fc projection
    shapes[n] = vec(C); counts[n++] = 6 * L + 2;    // ln1 w/b, ln2 w/b, attn proj bias, fcproj bias; lnf w/b
    shapes[n] = vec(3 * C); counts[n++] = L;        // qkv bias
    shapes[n] = vec(4 * C); counts[n++] = L;        // fc bias
    size_t bytes = 0, params = 0;
    for (int i = 0; i < n; i++) {
        bytes += (size_t)counts[i] * optim_state_bytes(o, h, &shapes[i]);
        params += (size_t)counts[i] * shapes[i].numel;
    }
    *num_params = params;
    return bytes;
}

static void test_layouts(void) {
    const size_t R = 768, Cc = 2304, N = R * Cc;
    ParamShape m = mat(R, Cc), v = vec(768);
    OptHyper af = OPT_ADAFACTOR.defaults, af1 = af, cm = OPT_CAME.defaults, al = OPT_ADALOMO.defaults;
    af1.use_beta1 = 1;
    af1.beta1 = 0.9f;

    check_bytes("adafactor (768, 2304): (rows+cols)*4 bytes", optim_state_bytes(&OPT_ADAFACTOR, &af, &m),
                (R + Cc) * 4);
    check_bytes("adafactor vector 768: full v, 4 B/param", optim_state_bytes(&OPT_ADAFACTOR, &af, &v), 768 * 4);
    check_bytes("adafactor -beta1 (768, 2304): + exp_avg", optim_state_bytes(&OPT_ADAFACTOR, &af1, &m),
                (R + Cc) * 4 + N * 4);
    check_bytes("adafactor -beta1 vector 768: v + exp_avg", optim_state_bytes(&OPT_ADAFACTOR, &af1, &v),
                768 * 8);
    check_bytes("came (768, 2304): 4*numel + 2*(rows+cols)*4", optim_state_bytes(&OPT_CAME, &cm, &m),
                4 * N + 2 * (R + Cc) * 4);
    check_bytes("came vector 768: exp_avg + v, 8 B/param", optim_state_bytes(&OPT_CAME, &cm, &v), 768 * 8);
    check_bytes("adalomo (768, 2304): (rows+cols)*4", optim_state_bytes(&OPT_ADALOMO, &al, &m), (R + Cc) * 4);
    check_bytes("adalomo vector 768: full v", optim_state_bytes(&OPT_ADALOMO, &al, &v), 768 * 4);

    // The row state follows the rows: a (768, 2304) matrix keeps 768 row and 2304 column floats.
    StateSpec sp[OPT_MAX_STATES];
    int n = OPT_CAME.layout(&cm, &m, sp);
    int ok = n == 5 && strcmp(sp[0].name, "exp_avg") == 0 && sp[0].count == N && strcmp(sp[1].name, "v_row") == 0 &&
             sp[1].count == R && strcmp(sp[2].name, "v_col") == 0 && sp[2].count == Cc &&
             strcmp(sp[3].name, "res_row") == 0 && sp[3].count == R && strcmp(sp[4].name, "res_col") == 0 &&
             sp[4].count == Cc;
    test_check(ok, "came layout is not exp_avg, v_row, v_col, res_row, res_col", "came matrix layout names and counts");
    n = OPT_ADAFACTOR.layout(&af, &v, sp);
    test_check(n == 1 && strcmp(sp[0].name, "v") == 0 && sp[0].count == 768,
               "vector layout is not a single full 'v'", "adafactor vector state is named v (not v_row)");
    for (int i = 0; i < 2; i++) {
        const ParamShape* s = i ? &v : &m;
        const Optimizer* os[3] = { &OPT_ADAFACTOR, &OPT_CAME, &OPT_ADALOMO };
        const OptHyper* hs[3] = { &af1, &cm, &al };
        for (int o = 0; o < 3; o++) {
            int k = os[o]->layout(hs[o], s, sp), dup = 0;
            for (int a = 0; a < k; a++)
                for (int b = a + 1; b < k; b++) dup |= strcmp(sp[a].name, sp[b].name) == 0;
            test_check(!dup && k <= OPT_MAX_STATES, "two state tensors share a name", "%s %s: state names distinct",
                       os[o]->name, i ? "vector" : "matrix");
        }
    }

    // GPT-2 d12 totals, the numbers quoted in the file headers and docs/optimizers.md.
    size_t params = 0;
    check_bytes("d12 adafactor state bytes = 1,286,656", d12_state_bytes(&OPT_ADAFACTOR, &af, &params), 1286656);
    check_bytes("d12 parameter count = 124,475,904", params, 124475904);
    check_bytes("d12 adafactor -beta1 state bytes = 499,190,272", d12_state_bytes(&OPT_ADAFACTOR, &af1, &params),
                499190272);
    check_bytes("d12 came state bytes = 499,991,552", d12_state_bytes(&OPT_CAME, &cm, &params), 499991552);
    check_bytes("d12 adalomo state bytes = 1,286,656", d12_state_bytes(&OPT_ADALOMO, &al, &params), 1286656);
}

static void test_registry_and_defaults(void) {
    test_check(optim_find("adafactor") == &OPT_ADAFACTOR, NULL, "registry: -opt adafactor");
    test_check(optim_find("came") == &OPT_CAME, NULL, "registry: -opt came");
    test_check(optim_find("adalomo") == &OPT_ADALOMO, NULL, "registry: -opt adalomo");
    test_check((OPT_ADALOMO.flags & OPT_FUSED_BACKWARD) != 0, NULL, "adalomo is fused into backward");
    test_check((OPT_ADAFACTOR.flags & OPT_FUSED_BACKWARD) == 0 && (OPT_CAME.flags & OPT_FUSED_BACKWARD) == 0, NULL,
               "adafactor and came are not fused");
    const OptHyper* a = &OPT_ADAFACTOR.defaults;
    test_check(a->relative_step == 1 && a->scale_parameter == 1 && a->use_beta1 == 0, NULL,
               "adafactor defaults: relative step and parameter scaling on, no beta1 (HF)");
    const OptHyper* c = &OPT_CAME.defaults;
    test_check(c->lr == 5e-5, NULL, "came default lr 5e-5 (results/sweep/; the reference has none)");
    test_check(OPT_ADALOMO.defaults.lr == 3e-2, NULL, "adalomo default lr 3e-2 (results/sweep/)");
    // The hyperparameters as typed (OptHyper keeps doubles): 1 - beta3 must be Python's 1 - 0.9999, not
    // 1 - (double)0.9999f (1.7e-4 away, which shows in CAME's early steps).
    test_check(c->beta3 == 0.9999 && 1.0 - c->beta3 == 1.0 - 0.9999 && c->beta2 == 0.999 &&
                   a->decay_rate == -0.8 && c->eps == 1e-30 && c->clip_threshold == 1.0,
               "a default is not the typed decimal", "came/adafactor defaults are the typed decimals (doubles)");
}

// The parallel loops must not change a single bit: run a big enough tensor (over the OpenMP cut-off)
// with 1 and 2 threads.
static void test_thread_independence(void) {
    const size_t R = 300, Cc = 200, N = R * Cc;
    ParamShape s = mat(R, Cc);
    const Optimizer* os[3] = { &OPT_ADAFACTOR, &OPT_CAME, &OPT_ADALOMO };
    float* g = (float*)malloc(N * sizeof(float));
    for (size_t i = 0; i < N; i++) g[i] = (float)sin(0.37 * (double)i) * (float)(1 + i % 7);
    for (int o = 0; o < 3; o++) {
        OptHyper h = os[o]->defaults;
        h.weight_decay = 0.1f;
        float* out[2];
        for (int run = 0; run < 2; run++) {
#ifdef _OPENMP
            omp_set_num_threads(run ? 2 : 1);
#endif
            StateSpec sp[OPT_MAX_STATES];
            int n = os[o]->layout(&h, &s, sp);
            OptTensor p;
            memset(&p, 0, sizeof(p));
            p.shape = &s;
            p.param = (float*)malloc(N * sizeof(float));
            for (size_t i = 0; i < N; i++) p.param[i] = (float)cos(0.11 * (double)i);
            p.grad = g;
            for (int k = 0; k < n; k++) p.state[k] = calloc(sp[k].count, dtype_size(sp[k].dtype));
            for (int t = 1; t <= 3; t++) {
                OptStep st = { .t = t, .lr = 1e-2f, .lr_scale = 1.0f, .nonfinite = 0 };
                os[o]->step(&h, &p, &st);
            }
            for (int k = 0; k < n; k++) free(p.state[k]);
            out[run] = p.param;
        }
        char name[96];
        snprintf(name, sizeof(name), "%s: bit-identical on 1 and 2 threads", os[o]->name);
        test_allclose(name, out[1], out[0], N, 0.0f, 0.0f); // tolerance 0: every bit
        free(out[0]);
        free(out[1]);
    }
    free(g);
}

int main(int argc, char** argv) {
    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    VecFile vf = vec_load(VEC_PATH);
    const Variant variants[] = {
        { "adafactor_default", &OPT_ADAFACTOR, -1, 0, 0.0f, 0.0f },
        { "adafactor_late", &OPT_ADAFACTOR, -1, 0, 0.0f, 0.0f },
        { "adafactor_lr", &OPT_ADAFACTOR, 0, 1, 0.9f, 0.1f },
        { "came", &OPT_CAME, -1, 0, 0.0f, 0.1f },
        { "adalomo", &OPT_ADALOMO, -1, 0, 0.0f, 0.1f },
    };
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) run_variant(&vf, &variants[i]);
    vec_free(&vf);
    test_layouts();
    test_registry_and_defaults();
    test_thread_independence();
    return test_finish("test_optim_factored");
}
