// test/test_memk_plan.c: the memory-bound kernels' work split (cuda/memk_plan.h) checked on the CPU.
//
// Each 16-byte-vector kernel of cuda/layernorm.cuh, gelu.cuh, encoder.cuh, classifier.cuh and matmul.cuh's
// bias gradient is emulated on the host through the plan's own HD functions: every block, warp, lane and
// row lane, which 8-element (bf16, W = 8) or 4-element (fp32, W = 4) vector it takes, the scalar tail,
// the shared-memory slots, and the kernels' reduction orders (lane partial sums in the lane's vector order,
// the xor-butterfly of warp_sum, the warps' / row lanes' sums in order, the chunks' partials in order).
// Storage is modelled by rounding to bf16 (round to nearest even, common/numerics.h) wherever the
// kernel stores T = bf16. Every emulated access is recorded: each output element must be written exactly
// once, nothing outside the tensor touched, every vector access 16-byte aligned (its element offset a
// multiple of W). Results are compared with a straightforward double reference of the same op.
// Shapes: rows 1, 3, 127 (and 4097, 32768 for the chunk plans), C = 64, 768, 1600, 72 (C % 8 == 0, not
// % 16), the classifier at V = 50257 in Vp = 50304 and a small V = 97 in Vp = 128.
// Then mutants: the same checks run with one index function planted wrong (a vector stride, a dropped
// iteration, an overrunning tail, a wrong shared-memory slot, padding counted as real, a dropped row, a
// shifted column); each must be caught by at least one check.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include "common/numerics.h"
#include "cuda/memk_plan.h"
#include "test/test.h"

// ---- checks that can run quietly (for the mutants) ------------------------------------------------------
static int g_quiet = 0, g_caught = 0;
static void chk(int ok, const char* why, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
static void chk(int ok, const char* why, const char* fmt, ...) {
    if (g_quiet) { if (!ok) g_caught++; return; }
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    test_check(ok, why, "%s", name);
}

// ---- mutants: the emulation calls the plan through these wrappers ------------------------------------
enum { MUT_NONE, MUT_ROW_STRIDE, MUT_ROW_ITERS, MUT_EW_TAIL, MUT_SH_SLOT, MUT_REAL_IN_VEC, MUT_LNB_ROWS, MUT_BG_COL, MUT_NUM };
static const char* const MUT_NAMES[MUT_NUM] = { "none", "row vectors strided by G - 1", "last round of a row dropped",
                                                 "tail taken as a full vector", "shared slot of column c + 1",
                                                 "padding counted as real columns", "last row of each LN chunk dropped",
                                                 "lane 31's columns shifted by W" };
static int g_mut = MUT_NONE;

static int row_vec(int lane, int k, int G) { return g_mut == MUT_ROW_STRIDE ? lane + (G - 1) * k : memk_row_vec(lane, k, G); }
static int row_iters(int nv, int lane, int G) {
    int r = memk_row_iters(nv, lane, G);
    if (g_mut == MUT_ROW_ITERS && r > 1 && lane == 0) r--;
    return r;
}
static int ew_count(size_t g, size_t N, int W) {
    int c = memk_ew_count(g, N, W);
    return g_mut == MUT_EW_TAIL && c > 0 ? W : c;
}
static int sh_slot_of_col(int c, int W, int C) { return lnb_sh_slot_of_col(g_mut == MUT_SH_SLOT ? (c + 1) % C : c, W); }
static int real_in_vec(int v, int W, int V) {
    int r = memk_real_in_vec(v, W, V);
    return g_mut == MUT_REAL_IN_VEC && r > 0 ? W : r;
}
static int lnb_hi(int p, int N) {
    int h = lnb_row_hi(p, N);
    return g_mut == MUT_LNB_ROWS && h > lnb_row_lo(p, N) + 1 ? h - 1 : h;
}
static int bgcol(int cb, int lane, int W) { return bg_col(cb, lane, W) + (g_mut == MUT_BG_COL && lane == 31 ? W : 0); }

// ---- storage, data, access records --------------------------------------------------------------------
static int g_bf = 1; // the storage type emulated: 1 bf16 (W = 8), 0 fp32 (W = 4)
static int vecw(void) { return memk_vec_elems(g_bf ? 2 : 4); }
static float st(float x) { return g_bf ? bf16_to_f32(f32_to_bf16(x)) : x; }

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float frand(void) { // uniform in [-1, 1)
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}
static float* rnd_tensor(size_t n, float scale, float shift) {
    float* x = (float*)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = st(shift + scale * frand());
    return x;
}

// a write / access counter per element; an access outside [0, n) or a vector access at an offset that is
// not a multiple of W is recorded as an error
typedef struct { int* n_w; size_t n; long bad; } Rec;
static Rec rec_new(size_t n) { Rec r = { (int*)calloc(n ? n : 1, sizeof(int)), n, 0 }; return r; }
static void rec_vec(Rec* r, size_t off, int W, int cnt, int write) {
    if (cnt == W && off % (size_t)W != 0) r->bad++;
    for (int j = 0; j < cnt; j++) {
        if (off + j >= r->n) { r->bad++; continue; }
        if (write) r->n_w[off + j]++;
    }
}
static int rec_once(const Rec* r) { // every element written exactly once, no bad access
    if (r->bad) return 0;
    for (size_t i = 0; i < r->n; i++) if (r->n_w[i] != 1) return 0;
    return 1;
}
static int rec_inside(const Rec* r) { return r->bad == 0; }
static void rec_free(Rec* r) { free(r->n_w); }

// the device's warp_sum: xor butterfly, lane i adds lane i ^ o's value, o = 16, 8, 4, 2, 1
static float warp_sum32(float* v) {
    for (int o = 16; o > 0; o >>= 1) {
        float nv[32];
        for (int i = 0; i < 32; i++) nv[i] = v[i] + v[i ^ o];
        memcpy(v, nv, sizeof(nv));
    }
    for (int i = 1; i < 32; i++) if (v[i] != v[0]) return NAN; // every lane ends with the same bits
    return v[0];
}

static double max_abs_err(const float* a, const double* b, size_t n, double* scale) {
    double e = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = isnan(d) ? INFINITY : d;
        s = fmax(s, fabs(b[i]));
    }
    *scale = s > 0 ? s : 1.0;
    return e;
}
// |a - ref| <= tol * max|ref| elementwise (tol: a few units of the storage type's rounding)
static int close_to(const float* a, const double* b, size_t n, double tol, char* why, size_t whylen) {
    double s, e = max_abs_err(a, b, n, &s);
    snprintf(why, whylen, "max |err| %.3g = %.3g of max|ref| (tolerance %.1g)", e, e / s, tol);
    return e <= tol * s;
}
static double tol_store(void) { return g_bf ? 1.5 / 256.0 : 1e-5; }

// ---- 1. elementwise: GELU / residual split --------------------------------------------------------------
static void check_elementwise(size_t N) {
    const int W = vecw();
    float* a = rnd_tensor(N, 2.0f, 0.0f);
    float* b = rnd_tensor(N, 2.0f, 0.0f);
    float* out = (float*)calloc(N, sizeof(float));
    Rec r = rec_new(N);
    const size_t threads = memk_ew_threads(N, W), launched = memk_ceil_div(threads, EW_THREADS) * EW_THREADS;
    int tails = 0;
    for (size_t g = 0; g < launched; g++) {
        const int cnt = ew_count(g, N, W);
        if (cnt > 0 && cnt < W) tails++;
        rec_vec(&r, g * W, W, cnt, 1);
        for (int j = 0; j < cnt; j++) if (g * W + j < N) out[g * W + j] = st(a[g * W + j] + b[g * W + j]);
    }
    int ok_val = 1;
    for (size_t i = 0; i < N; i++) ok_val = ok_val && out[i] == st(a[i] + b[i]);
    char why[128];
    snprintf(why, sizeof(why), "bad accesses %ld, tails %d (want %d)", r.bad, tails, N % W ? 1 : 0);
    chk(rec_once(&r) && tails == (N % W ? 1 : 0), why, "elementwise N=%zu W=%d: every element once, one scalar tail at most, aligned vectors", N, W);
    chk(ok_val, "a value differs from a + b rounded", "elementwise N=%zu W=%d: residual = a + b", N, W);
    rec_free(&r); free(a); free(b); free(out);
}

// ---- 2. LayerNorm forward (plain and fused with the residual) -------------------------------------------
static void check_ln_forward(int N, int C, int fused) {
    const int W = vecw(), nv = C / W;
    float* a = rnd_tensor((size_t)N * C, 1.5f, 0.3f);
    float* b = fused ? rnd_tensor((size_t)N * C, 1.5f, -0.2f) : NULL;
    float* w = rnd_tensor(C, 0.5f, 1.0f);
    float* bias = rnd_tensor(C, 0.2f, 0.0f);
    float* res = (float*)calloc((size_t)N * C, sizeof(float));
    float* out = (float*)calloc((size_t)N * C, sizeof(float));
    float* mean = (float*)calloc(N, sizeof(float));
    float* rstd = (float*)calloc(N, sizeof(float));
    Rec rres = rec_new((size_t)N * C), rout = rec_new((size_t)N * C), rrd = rec_new((size_t)N * C);
    const int blocks = (int)memk_ceil_div(N, LNF_WARPS);
    for (int blk = 0; blk < blocks; blk++)
        for (int wp = 0; wp < LNF_WARPS; wp++) {
            const int row = blk * LNF_WARPS + wp;
            if (row >= N) continue;
            const size_t base = (size_t)row * C;
            const float* x = fused ? res + base : a + base;
            float s[32], v[32];
            for (int lane = 0; lane < 32; lane++) {
                s[lane] = 0.0f;
                for (int k = 0; k < row_iters(nv, lane, 32); k++) {
                    const int c = row_vec(lane, k, 32) * W;
                    rec_vec(&rrd, base + c, W, W, 1);
                    if (c + W > C) continue;
                    float xv[8];
                    for (int j = 0; j < W; j++) xv[j] = a[base + c + j];
                    if (fused) {
                        for (int j = 0; j < W; j++) xv[j] = st(xv[j] + b[base + c + j]);
                        rec_vec(&rres, base + c, W, W, 1);
                        for (int j = 0; j < W; j++) res[base + c + j] = xv[j];
                    }
                    for (int j = 0; j < W; j++) s[lane] += xv[j];
                }
            }
            const float m = warp_sum32(s) / C;
            for (int lane = 0; lane < 32; lane++) {
                v[lane] = 0.0f;
                for (int k = 0; k < row_iters(nv, lane, 32); k++) {
                    const int c = row_vec(lane, k, 32) * W;
                    if (c + W > C) continue;
                    for (int j = 0; j < W; j++) { const float d = x[c + j] - m; v[lane] += d * d; }
                }
            }
            const float var = warp_sum32(v) / C;
            const float rs = 1.0f / sqrtf(var + 1e-5f);
            for (int lane = 0; lane < 32; lane++)
                for (int k = 0; k < row_iters(nv, lane, 32); k++) {
                    const int c = row_vec(lane, k, 32) * W;
                    rec_vec(&rout, base + c, W, W, 1);
                    if (c + W > C) continue;
                    for (int j = 0; j < W; j++) out[base + c + j] = st((x[c + j] - m) * rs * w[c + j] + bias[c + j]);
                }
            mean[row] = m;
            rstd[row] = rs;
        }
    // reference: res exactly the rounded sum; statistics and out in double from the rounded res
    double* rout_d = (double*)malloc((size_t)N * C * sizeof(double));
    double* rm = (double*)malloc(N * sizeof(double));
    double* rr = (double*)malloc(N * sizeof(double));
    int res_ok = 1;
    for (int row = 0; row < N; row++) {
        const size_t base = (size_t)row * C;
        double sm = 0.0, sv = 0.0;
        for (int c = 0; c < C; c++) {
            const float x = fused ? st(a[base + c] + b[base + c]) : a[base + c];
            if (fused) res_ok = res_ok && res[base + c] == x;
            sm += x;
        }
        sm /= C;
        for (int c = 0; c < C; c++) { const double x = fused ? st(a[base + c] + b[base + c]) : a[base + c]; sv += (x - sm) * (x - sm); }
        sv /= C;
        rm[row] = sm;
        rr[row] = 1.0 / sqrt(sv + 1e-5);
        for (int c = 0; c < C; c++) {
            const double x = fused ? st(a[base + c] + b[base + c]) : a[base + c];
            rout_d[base + c] = (x - sm) * rr[row] * w[c] + bias[c];
        }
    }
    char why[160], why2[160], why3[160];
    const char* tag = fused ? "residual+layernorm fwd" : "layernorm fwd";
    snprintf(why, sizeof(why), "bad accesses out %ld res %ld", rout.bad, rres.bad);
    chk(rec_once(&rout) && rec_once(&rrd) && (!fused || rec_once(&rres)), why, "%s N=%d C=%d W=%d: every element read once per pass and written once, aligned", tag, N, C, W);
    int ok = close_to(out, rout_d, (size_t)N * C, tol_store() * 2, why, sizeof(why));
    int okm = close_to(mean, rm, N, 1e-5, why2, sizeof(why2)) || 0;
    // mean: compare to the row's spread, not to |mean| (which may be near 0)
    double em = 0.0, er = 0.0;
    for (int i = 0; i < N; i++) { em = fmax(em, fabs(mean[i] - rm[i]) * rr[i]); er = fmax(er, fabs(rstd[i] - rr[i]) / rr[i]); }
    okm = em <= 1e-5 && er <= 1e-5;
    snprintf(why2, sizeof(why2), "mean err %.3g of the row's sigma, rstd rel err %.3g", em, er);
    chk(ok, why, "%s N=%d C=%d W=%d: out vs double", tag, N, C, W);
    chk(okm, why2, "%s N=%d C=%d W=%d: mean, rstd vs double", tag, N, C, W);
    if (fused) { snprintf(why3, sizeof(why3), "res differs from a + b rounded"); chk(res_ok, why3, "%s N=%d C=%d W=%d: res = a + b as residual_forward", tag, N, C, W); }
    rec_free(&rres); rec_free(&rout); rec_free(&rrd);
    free(a); free(b); free(w); free(bias); free(res); free(out); free(mean); free(rstd); free(rout_d); free(rm); free(rr);
}

// ---- 3. LayerNorm backward: one pass, shared-memory slots, chunk partials ------------------------------
static void check_ln_backward(int N, int C, int accumulate) {
    const int W = vecw(), nv = C / W, SC = lnb_sh_cols(C, W);
    const size_t NC = (size_t)N * C;
    float* x = rnd_tensor(NC, 1.0f, 0.1f);
    float* dout = rnd_tensor(NC, 1.0f, 0.0f);
    float* w = rnd_tensor(C, 0.5f, 1.0f);
    float* dinp0 = rnd_tensor(NC, 0.5f, 0.0f);
    float* dinp = (float*)malloc(NC * sizeof(float));
    memcpy(dinp, dinp0, NC * sizeof(float));
    float* mean = (float*)malloc(N * sizeof(float));
    float* rstd = (float*)malloc(N * sizeof(float));
    for (int r = 0; r < N; r++) { // the forward's statistics (fp32, from the stored x)
        double s = 0, v = 0;
        for (int c = 0; c < C; c++) s += x[(size_t)r * C + c];
        s /= C;
        for (int c = 0; c < C; c++) v += (x[(size_t)r * C + c] - s) * (x[(size_t)r * C + c] - s);
        mean[r] = (float)s;
        rstd[r] = (float)(1.0 / sqrt(v / C + 1e-5));
    }
    const int P = lnb_blocks(N);
    float* partial = (float*)malloc((size_t)2 * P * C * sizeof(float));
    for (size_t i = 0; i < (size_t)2 * P * C; i++) partial[i] = NAN;
    Rec rdin = rec_new(NC), rpart = rec_new((size_t)2 * P * C);
    float* sh = (float*)malloc((size_t)LNB_WARPS * 2 * SC * sizeof(float));
    int* slot_col = (int*)malloc((size_t)SC * sizeof(int));
    int slots_ok = 1, conflict_free = 1;
    for (int p = 0; p < P; p++) {
        for (size_t i = 0; i < (size_t)LNB_WARPS * 2 * SC; i++) sh[i] = NAN; // shared memory is not zeroed
        for (int i = 0; i < SC; i++) slot_col[i] = -1;
        const int lo = lnb_row_lo(p, N), hi = lnb_hi(p, N);
        for (int wp = 0; wp < LNB_WARPS; wp++) {
            float* aw = sh + (size_t)wp * 2 * SC;
            float* ab = aw + SC;
            for (int lane = 0; lane < 32; lane++)
                for (int k = 0; k < row_iters(nv, lane, 32); k++)
                    for (int j = 0; j < W; j++) {
                        const int sl = lnb_sh_slot(k, j, lane, W);
                        if (sl < 0 || sl >= SC) { slots_ok = 0; continue; }
                        aw[sl] = 0.0f; ab[sl] = 0.0f;
                        const int col = row_vec(lane, k, 32) * W + j;
                        if (slot_col[sl] != -1 && slot_col[sl] != col) slots_ok = 0;
                        slot_col[sl] = col;
                    }
            // the 32 lanes' slots for one (k, j) are 32 consecutive floats: one per bank
            for (int k = 0; k < (nv + 31) / 32; k++)
                for (int j = 0; j < W; j++)
                    for (int lane = 0; lane < 32; lane++)
                        if (lnb_sh_slot(k, j, lane, W) % 32 != lane) conflict_free = 0;
            for (int r = lo + wp; r < hi; r += LNB_WARPS) {
                const size_t base = (size_t)r * C;
                const float m = mean[r], s = rstd[r];
                float dm[32], dnm[32];
                for (int lane = 0; lane < 32; lane++) {
                    dm[lane] = 0.0f; dnm[lane] = 0.0f;
                    for (int k = 0; k < row_iters(nv, lane, 32); k++) {
                        const int c = row_vec(lane, k, 32) * W;
                        if (c + W > C) continue;
                        for (int j = 0; j < W; j++) {
                            const float d = dout[base + c + j];
                            const float norm = (x[base + c + j] - m) * s;
                            const float dn = w[c + j] * d;
                            dm[lane] += dn;
                            dnm[lane] += dn * norm;
                            const int sl = lnb_sh_slot(k, j, lane, W);
                            if (sl >= 0 && sl < SC) { aw[sl] += norm * d; ab[sl] += d; }
                        }
                    }
                }
                const float dmv = warp_sum32(dm) / C, dnmv = warp_sum32(dnm) / C;
                for (int lane = 0; lane < 32; lane++)
                    for (int k = 0; k < row_iters(nv, lane, 32); k++) {
                        const int c = row_vec(lane, k, 32) * W;
                        rec_vec(&rdin, base + c, W, W, 1);
                        if (c + W > C) continue;
                        for (int j = 0; j < W; j++) {
                            const float norm = (x[base + c + j] - m) * s;
                            const float dn = w[c + j] * dout[base + c + j];
                            const float g = (dn - dmv - norm * dnmv) * s;
                            dinp[base + c + j] = st(accumulate ? dinp[base + c + j] + g : g);
                        }
                    }
            }
        }
        // __syncthreads; then thread t's columns t, t + 256, ...: the warps in order
        for (int c = 0; c < C; c++) {
            const int sl = sh_slot_of_col(c, W, C);
            float tw = 0.0f, tb = 0.0f;
            for (int q = 0; q < LNB_WARPS; q++) { tw += sh[(size_t)q * 2 * SC + sl]; tb += sh[(size_t)q * 2 * SC + SC + sl]; }
            partial[(size_t)p * C + c] = tw;
            partial[(size_t)(P + p) * C + c] = tb;
            rec_vec(&rpart, (size_t)p * C + c, W, 1, 1);
            rec_vec(&rpart, (size_t)(P + p) * C + c, W, 1, 1);
        }
    }
    // the finish kernel: dw[c] = 0 + the P partials in order (the gradients start at 0 here)
    float* dw = (float*)calloc(C, sizeof(float));
    float* db = (float*)calloc(C, sizeof(float));
    for (int c = 0; c < C; c++) {
        float tw = 0.0f, tb = 0.0f;
        for (int p = 0; p < P; p++) { tw += partial[(size_t)p * C + c]; tb += partial[(size_t)(P + p) * C + c]; }
        dw[c] = st(tw); db[c] = st(tb);
    }
    // reference in double
    double* rdinp = (double*)malloc(NC * sizeof(double));
    double* rdw = (double*)calloc(C, sizeof(double));
    double* rdb = (double*)calloc(C, sizeof(double));
    for (int r = 0; r < N; r++) {
        const size_t base = (size_t)r * C;
        double dm = 0, dnm = 0;
        for (int c = 0; c < C; c++) {
            const double norm = ((double)x[base + c] - mean[r]) * rstd[r];
            const double dn = (double)w[c] * dout[base + c];
            dm += dn; dnm += dn * norm;
            rdw[c] += norm * dout[base + c]; rdb[c] += dout[base + c];
        }
        dm /= C; dnm /= C;
        for (int c = 0; c < C; c++) {
            const double norm = ((double)x[base + c] - mean[r]) * rstd[r];
            const double dn = (double)w[c] * dout[base + c];
            rdinp[base + c] = (accumulate ? dinp0[base + c] : 0.0) + (dn - dm - norm * dnm) * rstd[r];
        }
    }
    char why[160], why2[160], why3[160];
    snprintf(why, sizeof(why), "dinp bad %ld, partial bad %ld, slots %s, %s", rdin.bad, rpart.bad, slots_ok ? "ok" : "overlap or out of range",
             conflict_free ? "conflict-free" : "bank conflicts");
    chk(rec_once(&rdin) && rec_once(&rpart) && slots_ok && conflict_free, why,
        "layernorm bwd N=%d C=%d W=%d: %d chunks; dinp and each chunk partial written once, shared slots distinct and conflict-free", N, C, W, P);
    int ok1 = close_to(dinp, rdinp, NC, tol_store() * 2, why, sizeof(why));
    int ok2 = close_to(dw, rdw, C, tol_store() * 2, why2, sizeof(why2));
    int ok3 = close_to(db, rdb, C, tol_store() * 2, why3, sizeof(why3));
    chk(ok1, why, "layernorm bwd N=%d C=%d W=%d %s: dinp vs double", N, C, W, accumulate ? "(+=)" : "(=)");
    chk(ok2 && ok3, ok2 ? why3 : why2, "layernorm bwd N=%d C=%d W=%d: dweight, dbias vs double", N, C, W);
    rec_free(&rdin); rec_free(&rpart);
    free(x); free(dout); free(w); free(dinp0); free(dinp); free(mean); free(rstd); free(partial); free(sh); free(slot_col);
    free(dw); free(db); free(rdinp); free(rdw); free(rdb);
}

// the chunk plan alone over many N: chunks cover [0, N) once, none empty, at most LNB_MAX_BLOCKS, and the
// scratch fits memk_partial_floats
static void check_lnb_plan(void) {
    int ok = 1, worst = 0;
    for (int N = 1; N <= 40000; N += (N < 300 ? 1 : 97)) {
        const int P = lnb_blocks(N);
        int next = 0;
        for (int p = 0; p < P; p++) {
            const int lo = lnb_row_lo(p, N), hi = lnb_hi(p, N);
            if (lo != next || hi <= lo) { ok = 0; worst = N; }
            next = hi;
        }
        if (next != N || P > LNB_MAX_BLOCKS || P < 1) { ok = 0; worst = N; }
        if ((size_t)2 * P * 64 > memk_partial_floats(64)) { ok = 0; worst = N; }
    }
    char why[96];
    snprintf(why, sizeof(why), "first bad N = %d", worst);
    chk(ok, why, "layernorm bwd chunk plan, N = 1..40000: contiguous, non-empty, <= %d chunks, scratch fits", LNB_MAX_BLOCKS);
    chk(lnb_blocks(32768) == 512 && lnb_rows_per_block(32768) == 64, "d12 plan differs", "layernorm bwd chunk plan at d12 B=32 T=1024: 512 chunks of 64 rows");
}

// ---- 4. bias gradient: column sums ---------------------------------------------------------------------
static void check_bias_grad(int N, int OC) {
    const int W = vecw();
    float* dout = rnd_tensor((size_t)N * OC, 1.0f, 0.05f);
    const int P = bg_chunks(N, OC, W), rpc = bg_rows_per_chunk(N, OC, W), ncb = bg_col_blocks(OC, W);
    float* partial = (float*)malloc((size_t)P * OC * sizeof(float));
    Rec rpart = rec_new((size_t)P * OC), rread = rec_new((size_t)N * OC);
    float s[BG_ROWS][8][32];
    for (int ch = 0; ch < P; ch++)
        for (int cb = 0; cb < ncb; cb++) {
            const int r0 = ch * rpc, r1 = r0 + rpc < N ? r0 + rpc : N;
            for (int y = 0; y < BG_ROWS; y++)
                for (int lane = 0; lane < 32; lane++) {
                    const int c = bgcol(cb, lane, W);
                    float acc[8] = { 0 };
                    if (c < OC)
                        for (int r = r0 + y; r < r1; r += BG_ROWS) {
                            rec_vec(&rread, (size_t)r * OC + c, W, W, 1);
                            for (int j = 0; j < W; j++) if (c + j < OC) acc[j] += dout[(size_t)r * OC + c + j];
                        }
                    for (int j = 0; j < W; j++) s[y][j][lane] = acc[j];
                }
            for (int t = 0; t < 32 * BG_ROWS; t++) {
                if (t >= 32 * W) continue;
                const int col = cb * 32 * W + t;
                if (col >= OC) continue;
                float tot = 0.0f;
                for (int q = 0; q < BG_ROWS; q++) tot += s[q][t % W][t / W];
                partial[(size_t)ch * OC + col] = tot;
                rec_vec(&rpart, (size_t)ch * OC + col, W, 1, 1);
            }
        }
    float* db = (float*)malloc(OC * sizeof(float));
    double* rdb = (double*)calloc(OC, sizeof(double));
    for (int c = 0; c < OC; c++) {
        float t = 0.0f;
        for (int p = 0; p < P; p++) t += partial[(size_t)p * OC + c];
        db[c] = st(t);
    }
    for (int r = 0; r < N; r++) for (int c = 0; c < OC; c++) rdb[c] += dout[(size_t)r * OC + c];
    char why[160];
    snprintf(why, sizeof(why), "partial bad %ld, dout reads bad %ld", rpart.bad, rread.bad);
    const int C = OC / 4 > 0 ? OC / 4 : 1; // the smallest model whose FC bias this could be
    chk(rec_once(&rpart) && rec_once(&rread) && (size_t)P * OC <= memk_partial_floats((size_t)(OC + 3) / 4) && C > 0, why,
        "bias grad N=%d OC=%d W=%d: %d x %d blocks; every dout element read once, every partial written once, scratch fits", N, OC, W, ncb, P);
    int ok = close_to(db, rdb, OC, tol_store() * 2, why, sizeof(why));
    chk(ok, why, "bias grad N=%d OC=%d W=%d: column sums vs double", N, OC, W);
    rec_free(&rpart); rec_free(&rread);
    free(dout); free(partial); free(db); free(rdb);
}

// ---- 5. the classifier --------------------------------------------------------------------------------
static void merge(float* m, float* s, float m2, float s2) { // softmax_merge
    const float mn = fmaxf(*m, m2);
    if (mn == -INFINITY) return;
    *s = *s * expf(*m - mn) + s2 * expf(m2 - mn);
    *m = mn;
}
static void check_classifier(int rows, int V, int Vp) {
    const int W = vecw(), G = CLS_THREADS;
    const float dloss = 1.0f / rows;
    float* logits = rnd_tensor((size_t)rows * Vp, 6.0f, 0.0f);
    for (int r = 0; r < rows; r++) for (int c = V; c < Vp; c++) logits[(size_t)r * Vp + c] = st(40.0f); // padding: must never count
    float* x0 = (float*)malloc((size_t)rows * Vp * sizeof(float));
    memcpy(x0, logits, (size_t)rows * Vp * sizeof(float));
    float* losses = (float*)malloc(rows * sizeof(float));
    int* tgt = (int*)malloc(rows * sizeof(int));
    Rec rw = rec_new((size_t)rows * Vp);
    for (int r = 0; r < rows; r++) tgt[r] = (int)((r * 7919u + 13u) % (unsigned)V);
    if (rows > 1) tgt[rows - 1] = V - 1; // the last real column, inside the partial vector
    for (int r = 0; r < rows; r++) {
        float* x = logits + (size_t)r * Vp;
        float m[CLS_THREADS], s[CLS_THREADS];
        const int nreal = (V + W - 1) / W;
        for (int t = 0; t < G; t++) {
            m[t] = -INFINITY; s[t] = 0.0f;
            for (int k = 0; k < row_iters(nreal, t, G); k++) {
                const int v = row_vec(t, k, G);
                const int cnt = real_in_vec(v, W, V);
                float vm = -INFINITY;
                for (int j = 0; j < W; j++) if (j < cnt && v * W + j < Vp) vm = fmaxf(vm, x[v * W + j]);
                if (vm > m[t]) { s[t] *= expf(m[t] - vm); m[t] = vm; }
                for (int j = 0; j < W; j++) if (j < cnt && v * W + j < Vp) s[t] += expf(x[v * W + j] - m[t]);
            }
        }
        float wm[CLS_THREADS / 32], ws[CLS_THREADS / 32];
        for (int wp = 0; wp < G / 32; wp++) { // the butterfly with softmax_merge, lane 0's result
            float mm[32], ss[32];
            for (int l = 0; l < 32; l++) { mm[l] = m[wp * 32 + l]; ss[l] = s[wp * 32 + l]; }
            for (int o = 16; o > 0; o >>= 1) {
                float nm[32], ns[32];
                for (int l = 0; l < 32; l++) { nm[l] = mm[l]; ns[l] = ss[l]; merge(&nm[l], &ns[l], mm[l ^ o], ss[l ^ o]); }
                memcpy(mm, nm, sizeof(mm)); memcpy(ss, ns, sizeof(ss));
            }
            wm[wp] = mm[0]; ws[wp] = ss[0];
        }
        float M = wm[0], S = ws[0];
        for (int wp = 1; wp < G / 32; wp++) merge(&M, &S, wm[wp], ws[wp]);
        const float lse = M + logf(S);
        losses[r] = lse - x[tgt[r]];
        for (int t = 0; t < G; t++)
            for (int k = 0; k < row_iters(Vp / W, t, G); k++) {
                const int v = row_vec(t, k, G);
                const int cnt = real_in_vec(v, W, V);
                rec_vec(&rw, (size_t)r * Vp + (size_t)v * W, W, W, 1);
                for (int j = 0; j < W; j++) {
                    const int c = v * W + j;
                    if (c >= Vp) continue;
                    const float g = j < cnt ? (expf(x[c] - lse) - (c == tgt[r] ? 1.0f : 0.0f)) * dloss : 0.0f;
                    x[c] = st(g);
                }
            }
    }
    double* rl = (double*)malloc(rows * sizeof(double));
    double* rg = (double*)malloc((size_t)rows * Vp * sizeof(double));
    for (int r = 0; r < rows; r++) {
        const float* x = x0 + (size_t)r * Vp;
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < V; c++) mx = fmax(mx, x[c]);
        for (int c = 0; c < V; c++) sum += exp(x[c] - mx);
        const double lse = mx + log(sum);
        rl[r] = lse - x[tgt[r]];
        for (int c = 0; c < Vp; c++) rg[(size_t)r * Vp + c] = c < V ? (exp(x[c] - lse) - (c == tgt[r])) * dloss : 0.0;
    }
    char why[160], why2[160];
    snprintf(why, sizeof(why), "bad accesses %ld", rw.bad);
    chk(rec_once(&rw), why, "classifier V=%d Vp=%d W=%d: every column written once (padding 0), aligned vectors", V, Vp, W);
    int okl = close_to(losses, rl, rows, 1e-5, why, sizeof(why));
    int okg = close_to(logits, rg, (size_t)rows * Vp, tol_store() * 2, why2, sizeof(why2));
    int pad0 = 1;
    for (int r = 0; r < rows; r++) for (int c = V; c < Vp; c++) pad0 = pad0 && logits[(size_t)r * Vp + c] == 0.0f;
    chk(okl, why, "classifier V=%d Vp=%d W=%d: losses vs double", V, Vp, W);
    chk(okg && pad0, okg ? "a padded column's gradient is not 0" : why2, "classifier V=%d Vp=%d W=%d: dlogits vs double, padding 0", V, Vp, W);
    rec_free(&rw);
    free(logits); free(x0); free(losses); free(tgt); free(rl); free(rg);
}

// ---- 6. encoder -----------------------------------------------------------------------------------------
static void check_encoder(int B, int T, int C, int Vv) {
    const int W = vecw(), BT = B * T, nv = C / W;
    int* inp = (int*)malloc(BT * sizeof(int));
    for (int i = 0; i < BT; i++) inp[i] = (int)((i * 31u + 7u) % (unsigned)(Vv < 5 ? Vv : 5)); // repeats: tokens share rows
    float* wte = rnd_tensor((size_t)Vv * C, 1.0f, 0.0f);
    float* wpe = rnd_tensor((size_t)T * C, 1.0f, 0.0f);
    float* out = (float*)calloc((size_t)BT * C, sizeof(float));
    Rec rout = rec_new((size_t)BT * C);
    const size_t n = (size_t)BT * C, launched = memk_ceil_div(memk_ew_threads(n, W), 256) * 256;
    for (size_t g = 0; g < launched; g++) {
        if (ew_count(g, n, W) != W) continue;
        const size_t idx = g * W;
        const int bt = (int)(idx / C), c = (int)(idx % C), t = bt % T;
        rec_vec(&rout, idx, W, W, 1);
        for (int j = 0; j < W && idx + j < n; j++) out[idx + j] = st(wte[(size_t)inp[bt] * C + c + j] + wpe[(size_t)t * C + c + j]);
    }
    int okf = 1;
    for (int bt = 0; bt < BT; bt++) for (int c = 0; c < C; c++)
        okf = okf && out[(size_t)bt * C + c] == st(wte[(size_t)inp[bt] * C + c] + wpe[(size_t)(bt % T) * C + c]);
    // backward, wte: one block per distinct token, thread i the vectors i, i + 128, ...; positions in order
    float* dout = rnd_tensor(n, 1.0f, 0.0f);
    float* dwte = (float*)calloc((size_t)Vv * C, sizeof(float));
    float* dwpe = (float*)calloc((size_t)T * C, sizeof(float));
    Rec qwte = rec_new((size_t)Vv * C), qwpe = rec_new((size_t)T * C);
    for (int tok = 0; tok < Vv; tok++) {
        int any = 0;
        for (int i = 0; i < BT; i++) any |= inp[i] == tok;
        if (!any) continue;
        for (int th = 0; th < ENC_WTE_THREADS; th++)
            for (int k = 0; k < row_iters(nv, th, ENC_WTE_THREADS); k++) {
                const int c = row_vec(th, k, ENC_WTE_THREADS) * W;
                rec_vec(&qwte, (size_t)tok * C + c, W, W, 1);
                if (c + W > C) continue;
                float acc[8];
                for (int j = 0; j < W; j++) acc[j] = dwte[(size_t)tok * C + c + j];
                for (int i = 0; i < BT; i++) if (inp[i] == tok) for (int j = 0; j < W; j++) acc[j] += dout[(size_t)i * C + c + j];
                for (int j = 0; j < W; j++) dwte[(size_t)tok * C + c + j] = st(acc[j]);
            }
    }
    const size_t nw = (size_t)T * C, lw = memk_ceil_div(memk_ew_threads(nw, W), 256) * 256;
    for (size_t g = 0; g < lw; g++) {
        if (ew_count(g, nw, W) != W) continue;
        const size_t idx = g * W;
        rec_vec(&qwpe, idx, W, W, 1);
        float acc[8];
        for (int j = 0; j < W && idx + j < nw; j++) acc[j] = dwpe[idx + j];
        for (int b = 0; b < B; b++) for (int j = 0; j < W && idx + j < nw; j++) acc[j] += dout[(size_t)b * T * C + idx + j];
        for (int j = 0; j < W && idx + j < nw; j++) dwpe[idx + j] = st(acc[j]);
    }
    double* rwte = (double*)calloc((size_t)Vv * C, sizeof(double));
    double* rwpe = (double*)calloc((size_t)T * C, sizeof(double));
    for (int i = 0; i < BT; i++) for (int c = 0; c < C; c++) {
        rwte[(size_t)inp[i] * C + c] += dout[(size_t)i * C + c];
        rwpe[(size_t)(i % T) * C + c] += dout[(size_t)i * C + c];
    }
    // the rows of wte: written once where a token of the batch uses them, never otherwise
    int wte_once = rec_inside(&qwte);
    for (int tok = 0; tok < Vv; tok++) {
        int any = 0;
        for (int i = 0; i < BT; i++) any |= inp[i] == tok;
        for (int c = 0; c < C; c++) wte_once = wte_once && qwte.n_w[(size_t)tok * C + c] == any;
    }
    char why[160], why2[160];
    snprintf(why, sizeof(why), "bad accesses out %ld wte %ld wpe %ld", rout.bad, qwte.bad, qwpe.bad);
    chk(rec_once(&rout) && rec_once(&qwpe) && wte_once, why, "encoder B=%d T=%d C=%d W=%d: every element once, aligned vectors", B, T, C, W);
    chk(okf, "out differs from wte[tok] + wpe[t]", "encoder fwd B=%d T=%d C=%d W=%d: out = wte[tok] + wpe[t]", B, T, C, W);
    int ok1 = close_to(dwte, rwte, (size_t)Vv * C, tol_store() * 2, why, sizeof(why));
    int ok2 = close_to(dwpe, rwpe, (size_t)T * C, tol_store() * 2, why2, sizeof(why2));
    chk(ok1 && ok2, ok1 ? why2 : why, "encoder bwd B=%d T=%d C=%d W=%d: dwte, dwpe vs double", B, T, C, W);
    rec_free(&rout); rec_free(&qwte); rec_free(&qwpe);
    free(inp); free(wte); free(wpe); free(out); free(dout); free(dwte); free(dwpe); free(rwte); free(rwpe);
}

// ---- the suite, and its mutants --------------------------------------------------------------------------
static void suite(int full) {
    const int Cs[4] = { 64, 768, 1600, 72 };
    const int Ns[3] = { 1, 3, 127 };
    for (int bf = 1; bf >= 0; bf--) {
        g_bf = bf;
        const size_t ew[6] = { 1, 3, 8, 127, 1000, 4097 };
        for (int i = 0; i < 6; i++) check_elementwise(ew[i]);
        for (int ci = 0; ci < 4; ci++)
            for (int ni = 0; ni < 3; ni++) {
                if (!full && ci == 2 && ni == 2) continue;
                check_ln_forward(Ns[ni], Cs[ci], 0);
                check_ln_forward(Ns[ni], Cs[ci], 1);
                check_ln_backward(Ns[ni], Cs[ci], ni != 0);
            }
        check_ln_backward(4097, 64, 1);
        if (full) check_ln_backward(1200, 72, 0);
        const int OCs[6] = { 64, 72, 768, 2304, 3072, 1600 };
        for (int i = 0; i < 6; i++) check_bias_grad(i < 2 ? 127 : 3, OCs[i]);
        check_bias_grad(4097, 72);
        check_bias_grad(1, 768);
        if (full) check_bias_grad(2048, 3072);
        check_classifier(3, 50257, 50304);
        check_classifier(5, 97, 128);
        check_classifier(2, 5, 128);
        check_encoder(2, 5, 64, 9);
        check_encoder(3, 7, 72, 4);
        if (full) check_encoder(2, 64, 768, 50);
    }
    g_bf = 1;
}

int main(void) {
    check_lnb_plan();
    chk(bg_chunks(32768, 3072, 8) * 3072 <= (int)memk_partial_floats(768) && bg_chunks(32768, 768, 8) * 768 <= (int)memk_partial_floats(768),
        "a d12 bias gradient's partials overflow the scratch", "bias grad chunk plan at d12: %d x 12 blocks (FC), %d x 3 (attproj), scratch fits",
        bg_chunks(32768, 3072, 8), bg_chunks(32768, 768, 8));
    suite(1);
    // mutants: each planted wrong index function must make some check fail
    for (int mu = 1; mu < MUT_NUM; mu++) {
        g_mut = mu; g_quiet = 1; g_caught = 0;
        suite(0);
        const int caught = g_caught;
        g_mut = MUT_NONE; g_quiet = 0;
        char why[96];
        snprintf(why, sizeof(why), "no check failed");
        chk(caught > 0, why, "mutant caught: %s (%d checks fail)", MUT_NAMES[mu], caught);
    }
    return test_finish("test_memk_plan");
}
