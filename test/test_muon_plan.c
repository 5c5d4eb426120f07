// test/test_muon_plan.c: the batched CUDA Muon step (optim/muon.cuh) checked on the CPU through its plan
// (optim/muon_plan.h), which the GPU code and this test share.
//   1. The plan's structure, on d12's 48 Muon matrices and on test_gpt2cu's matrices (plus more of the
//      same (s, l), both orientations): every Muon matrix in exactly one batch, a batch's matrices of
//      one (s, l) with s = min, l = max and tr = rows > cols, groups in order of first appearance and
//      members in the trainer's order, batches within MUON_BATCH_BYTES (or of one matrix), the workspace
//      buffers aligned, disjoint and large enough for every batch; each GEMM of muon_ns_op within its
//      operands' batch buffers (every element a product touches, at every batch index), leading
//      dimensions legal, the output not an input; muon_x_index a bijection of each matrix onto its X.
//      d12's batches, launches per step and workspace bytes are printed (the numbers in muon.cuh).
//   2. The plan run on host buffers laid out as the device workspace (poisoned with NaN before each
//      batch): prep, norm, normalize, the 5 x 6 operations of muon_ns_op (the GEMMs by a host model of
//      cublasGemmStridedBatchedEx: per batch index, muon.c's own matmul on the slices at the op's strides,
//      the output rounded to bf16; the elementwise passes flat over the whole batch), and apply, with the
//      index functions the kernels call. Against OPT_MUON's CPU step on the same tensors: the parameters
//      and momentum buffers equal bit for bit after 3 steps, with batches of 1, 2 and all matrices.
//   3. The checks can fail: a transposed matrix's tr flipped, a GEMM's operand stride wrong, a matrix
//      planned twice and one left out, an X index off by one: each is caught (the mutation lines).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "optim/muon_plan.h"
#include "optim/optim.h"
#include "cpu/matmul.h"
#include "common/rng.h"
#include "trainer/model.h"
#include "test/test.h"

// ---- 1. structure ---------------------------------------------------------------------------------
// Returns 1 if the plan of the n matrices (rows, cols in trainer order) is sound; why gets the first fault.
static int plan_sound(const MuonPlan* p, const size_t* rows, const size_t* cols, int n, size_t cap, char* why, size_t wn) {
    int* seen = (int*)xcalloc((size_t)n + 1, sizeof(int));
    int ok = 1;
#define FAULT(...) do { if (ok) snprintf(why, wn, __VA_ARGS__); ok = 0; } while (0)
    if (p->nmat != n) FAULT("nmat %d, want %d", p->nmat, n);
    int next = 0;
    for (int b = 0; b < p->nbatch; b++) {
        const MuonBatch* bt = &p->batch[b];
        if (bt->first != next || bt->count < 1) FAULT("batch %d: first %d count %d, want first %d", b, bt->first, bt->count, next);
        next = bt->first + bt->count;
        if (bt->count > 1 && (size_t)bt->count * muon_matrix_bytes(bt->s, bt->l) > cap) FAULT("batch %d over the cap", b);
        if (bt->tiles != muon_ceil_div(bt->s, MUON_TILE) * muon_ceil_div(bt->l, MUON_TILE)) FAULT("batch %d tiles %zu", b, bt->tiles);
        for (int j = bt->first; j < bt->first + bt->count && j < p->nmat; j++) {
            const MuonMatrix* mt = &p->mat[j];
            const int i = mt->index;
            if (i < 0 || i >= n) { FAULT("entry %d: index %d", j, i); continue; }
            seen[i]++;
            const size_t s = rows[i] < cols[i] ? rows[i] : cols[i], l = rows[i] < cols[i] ? cols[i] : rows[i];
            if ((size_t)mt->rows != rows[i] || (size_t)mt->cols != cols[i]) FAULT("entry %d: shape (%d, %d) of matrix %d", j, mt->rows, mt->cols, i);
            if ((size_t)mt->s != s || (size_t)mt->l != l || mt->s != bt->s || mt->l != bt->l) FAULT("entry %d: (s, l) (%d, %d) in batch (%d, %d)", j, mt->s, mt->l, bt->s, bt->l);
            if (mt->tr != (rows[i] > cols[i])) FAULT("entry %d (%zu, %zu): tr %d", j, rows[i], cols[i], mt->tr);
            if (j > bt->first && p->mat[j - 1].index >= i) FAULT("entry %d: not in the trainer's order within its batch", j);
            const double ratio = (double)rows[i] / (double)cols[i];
            if (mt->scale != (float)sqrt(ratio > 1.0 ? ratio : 1.0)) FAULT("entry %d: scale %g", j, (double)mt->scale);
        }
        // groups: a new (s, l) starts with the first matrix of that shape not yet planned
        if (b > 0 && (p->batch[b - 1].s != bt->s || p->batch[b - 1].l != bt->l) && bt->first < p->nmat) {
            for (int b2 = 0; b2 < b; b2++)
                if (p->batch[b2].s == bt->s && p->batch[b2].l == bt->l) FAULT("batch %d: group (%d, %d) split apart", b, bt->s, bt->l);
        } else if (b > 0 && p->batch[b - 1].count != (int)(cap / muon_matrix_bytes(bt->s, bt->l) > 0 ? cap / muon_matrix_bytes(bt->s, bt->l) : 1))
            FAULT("batch %d: its group's previous batch is not full", b);
    }
    if (next != n) FAULT("batches cover %d entries of %d", next, n);
    for (int i = 0; i < n; i++) if (seen[i] != 1) FAULT("matrix %d planned %d times", i, seen[i]);
    // groups in order of first appearance
    int prev_group_first = -1;
    for (int b = 0; b < p->nbatch && ok; b++) {
        if (b > 0 && p->batch[b - 1].s == p->batch[b].s && p->batch[b - 1].l == p->batch[b].l) continue; // same group
        const int i1 = p->mat[p->batch[b].first].index;
        if (!(prev_group_first < i1)) FAULT("batch %d: groups out of order", b);
        prev_group_first = i1;
    }
    // workspace: aligned, disjoint, in order, big enough for every batch
    const size_t off[8] = { p->off_X, p->off_BX, p->off_A, p->off_cA, p->off_T, p->off_part, p->off_denom, p->off_blas };
    for (int k = 0; k < 8; k++) if (off[k] % MUON_ALIGN) FAULT("buffer %d misaligned", k);
    for (int b = 0; b < p->nbatch; b++) {
        const MuonBatch* bt = &p->batch[b];
        const size_t c = (size_t)bt->count, need[7] = { 2 * c * bt->s * bt->l, 2 * c * bt->s * bt->l, 2 * c * bt->s * bt->s,
                                                           2 * c * bt->s * bt->s, 2 * c * bt->s * bt->s, 8 * c * bt->tiles, 4 * c };
        for (int k = 0; k < 7; k++) if (off[k] + need[k] > off[k + 1]) FAULT("batch %d: buffer %d too small", b, k);
    }
    if (p->off_blas > p->total) FAULT("cuBLAS workspace outside the total");
    // GEMMs: every element each product touches inside its batch buffer
    for (int b = 0; b < p->nbatch; b++) {
        const MuonBatch* bt = &p->batch[b];
        const long long c = bt->count, len[5] = { c * bt->s * bt->l, c * bt->s * bt->l, c * bt->s * bt->s, c * bt->s * bt->s, c * bt->s * bt->s };
        for (int k = 0; k < MUON_NS_OPS; k++) {
            const MuonOp o = muon_ns_op(k, bt->s, bt->l);
            if (!o.gemm) {
                if (o.n_per * (size_t)c > (size_t)len[o.out] || o.n_per * (size_t)c > (size_t)len[o.x] ||
                    (o.y != MUON_BUF_NONE && o.n_per * (size_t)c > (size_t)len[o.y]))
                    FAULT("batch %d op %d: elementwise pass past a buffer", b, k);
                continue;
            }
            if (o.c == o.a || o.c == o.b) FAULT("batch %d op %d: output aliases an input", b, k);
            // row-major: A (M, K) or stored (K, M); B (K, N) or stored (N, K); C (M, N)
            const long long ar = o.ta ? o.K : o.M, ac = o.ta ? o.M : o.K, br = o.tb ? o.N : o.K, bc = o.tb ? o.K : o.N;
            if (o.lda < ac || o.ldb < bc || o.ldc < o.N) FAULT("batch %d op %d: leading dimension below the row length", b, k);
            const long long lastA = (c - 1) * o.sa + (ar - 1) * o.lda + ac, lastB = (c - 1) * o.sb + (br - 1) * o.ldb + bc,
                            lastC = (c - 1) * o.sc + (long long)(o.M - 1) * o.ldc + o.N;
            if (lastA > len[o.a] || lastB > len[o.b] || lastC > len[o.c]) FAULT("batch %d op %d: an operand runs past its buffer", b, k);
            if (o.sc < (long long)o.M * o.ldc && c > 1) FAULT("batch %d op %d: outputs of two products overlap", b, k);
        }
    }
    // X index: a bijection of (rows, cols) onto [0, s l)
    for (int j = 0; j < p->nmat && ok; j++) {
        const MuonMatrix* mt = &p->mat[j];
        const size_t sl = (size_t)mt->s * mt->l;
        if (sl > ((size_t)1 << 24)) continue;
        unsigned char* hit = (unsigned char*)xcalloc(sl, 1);
        for (int r = 0; r < mt->rows; r++)
            for (int cc = 0; cc < mt->cols; cc++) {
                const size_t x = muon_x_index(mt, r, cc);
                if (x >= sl || hit[x]++) { FAULT("entry %d: X index of (%d, %d) is %zu", j, r, cc, x); r = mt->rows; break; }
            }
        free(hit);
    }
#undef FAULT
    free(seen);
    return ok;
}

// ---- 2. the plan run on the host ------------------------------------------------------------------
typedef struct {
    int flip_tr_entry;      // >= 0: that table entry's tr flipped in the host run
    int bad_stride_op;      // >= 0: that op's B stride set to 0 (every product reads matrix 0's operand)
    int x_index_off;        // added to the X index of the last element of every matrix (wraps)
} Mutation;

static size_t x_index_mut(const MuonMatrix* mt, int r, int c, const Mutation* mu) {
    size_t x = muon_x_index(mt, r, c);
    if (mu->x_index_off && r == mt->rows - 1 && c == mt->cols - 1) x = (x + (size_t)mu->x_index_off) % ((size_t)mt->s * mt->l);
    return x;
}

static float* host_buf(float* bufs[5], int b) { return b == MUON_BUF_NONE ? NULL : bufs[b]; }

// One step of every Muon matrix through the plan. theta, grad: flat; m[i]: matrix i's momentum (trainer order).
static void host_step(const MuonPlan* p, const OptHyper* h, float* theta, const float* grad, float** m, int t, double lr, float lr_scale,
                      const Mutation* mu) {
    const MuonScalars kd = muon_scalars(h, 1, 1, h->weight_decay, lr, lr_scale, t);
    const MuonScalars kn = muon_scalars(h, 1, 1, 0.0, lr, lr_scale, t);
    for (int b = 0; b < p->nbatch; b++) {
        const MuonBatch* bt = &p->batch[b];
        const size_t c = (size_t)bt->count, sl = (size_t)bt->s * bt->l, ss = (size_t)bt->s * bt->s;
        float* bufs[5];
        const size_t len[5] = { c * sl, c * sl, c * ss, c * ss, c * ss };
        for (int k = 0; k < 5; k++) {
            bufs[k] = (float*)xmalloc(len[k] * sizeof(float));
            for (size_t i = 0; i < len[k]; i++) bufs[k][i] = NAN;
        }
        double* part = (double*)xmalloc(c * bt->tiles * sizeof(double));
        float* denom = (float*)xmalloc(c * sizeof(float));
        for (size_t j = 0; j < c; j++) {  // prep: block (tile, j)
            MuonMatrix mt = p->mat[bt->first + j];
            if ((int)(bt->first + j) == mu->flip_tr_entry) mt.tr = !mt.tr;
            float* X = bufs[MUON_BUF_X] + j * sl;
            float* mm = m[mt.index];
            for (size_t ti = 0; ti < bt->tiles; ti++) {
                int r0, c0;
                muon_tile_origin(&mt, ti, &r0, &c0);
                double sum = 0.0;
                for (int r = r0; r < r0 + MUON_TILE && r < mt.rows; r++)
                    for (int cc = c0; cc < c0 + MUON_TILE && cc < mt.cols; cc++) {
                        const size_t i = (size_t)r * mt.cols + cc;
                        const float g = grad[mt.param_off + i];
                        const float mi = muon_momentum(&kd, mm[i], g);
                        mm[i] = mi;
                        const float u = muon_bf16(muon_nesterov(&kd, g, mi));
                        sum += (double)u * (double)u;
                        X[x_index_mut(&mt, r, cc, mu)] = u;
                    }
                part[j * bt->tiles + ti] = sum;
            }
        }
        for (size_t j = 0; j < c; j++) {  // norm, normalize
            double s = 0.0;
            for (size_t ti = 0; ti < bt->tiles; ti++) s += part[j * bt->tiles + ti];
            denom[j] = muon_bf16(muon_bf16((float)sqrt(s)) + MUON_NS_EPS);
            float* X = bufs[MUON_BUF_X] + j * sl;
            for (size_t i = 0; i < sl; i++) X[i] = muon_bf16(X[i] / denom[j]);
        }
        for (int it = 0; it < MUON_NS_STEPS; it++)
            for (int k = 0; k < MUON_NS_OPS; k++) {
                MuonOp o = muon_ns_op(k, bt->s, bt->l);
                if (k == mu->bad_stride_op) o.sb = 0;
                if (o.gemm) {  // cublasGemmStridedBatchedEx, row-major terms: product j at the strides
                    for (size_t j = 0; j < c; j++) {
                        const float* A = host_buf(bufs, o.a) + j * (size_t)o.sa;
                        const float* B = host_buf(bufs, o.b) + j * (size_t)o.sb;
                        float* C = host_buf(bufs, o.c) + j * (size_t)o.sc;
                        matmul_gemm(o.M, o.N, o.K, A, o.ta ? 1 : o.lda, o.ta ? o.lda : 1, B, o.tb ? 1 : o.ldb, o.tb ? o.ldb : 1, C, o.ldc, 0, NULL);
                        for (int r = 0; r < o.M; r++)
                            for (int cc = 0; cc < o.N; cc++) C[(size_t)r * o.ldc + cc] = muon_bf16(C[(size_t)r * o.ldc + cc]);
                    }
                } else {  // muon_axpy_kernel over the whole batch
                    float* out = host_buf(bufs, o.out);
                    const float* x = host_buf(bufs, o.x);
                    const float* y = host_buf(bufs, o.y);
                    const size_t nn = o.n_per * c;
                    for (size_t i = 0; i < nn; i++) out[i] = y ? muon_ns_axpy(o.coef, x[i], y[i]) : muon_bf16(o.coef * x[i]);
                }
            }
        for (size_t j = 0; j < c; j++) {  // apply
            MuonMatrix mt = p->mat[bt->first + j];
            if ((int)(bt->first + j) == mu->flip_tr_entry) mt.tr = !mt.tr;
            const float* X = bufs[MUON_BUF_X] + j * sl;
            MuonScalars k = mt.decay ? kd : kn;
            k.scale = mt.scale;
            for (int r = 0; r < mt.rows; r++)
                for (int cc = 0; cc < mt.cols; cc++) {
                    const size_t gi = mt.param_off + (size_t)r * mt.cols + cc;
                    const float update = muon_bf16(X[x_index_mut(&mt, r, cc, mu)] * k.scale);
                    theta[gi] = muon_param(&k, theta[gi], update);
                }
        }
        for (int k = 0; k < 5; k++) free(bufs[k]);
        free(part);
        free(denom);
    }
}

// test_gpt2cu's Muon matrices, and more of the same (s, l) in the other orientation, in a trainer order.
enum { NM = 9 };
static const size_t T_ROWS[NM] = { 37, 83, 40, 200, 64, 83, 96, 24, 37 }, T_COLS[NM] = { 83, 37, 24, 96, 300, 37, 200, 40, 83 };
static const int T_DECAY[NM] = { 1, 1, 1, 0, 1, 0, 1, 1, 0 };

// Runs 3 steps of the plan (cap bytes per batch, with a mutation) and of OPT_MUON's CPU step from the same
// start; returns the number of parameter or momentum values that differ.
static size_t run_against_cpu(size_t cap, const Mutation* mu, int* nbatch) {
    const Optimizer* opt = optim_find("muon");
    CHECK(opt);
    OptHyper h = opt->defaults;
    h.weight_decay = 0.1;
    h.lr = 0.02;
    size_t off[NM], P = 0;
    for (int i = 0; i < NM; i++) { off[i] = P; P += T_ROWS[i] * T_COLS[i]; }
    MuonPlan p;
    muon_plan_build(&p, T_ROWS, T_COLS, T_DECAY, off, NM, cap, 0);
    *nbatch = p.nbatch;
    Rng r;
    rng_seed(&r, 1234);
    float* th_cpu = (float*)xmalloc(P * sizeof(float));
    float* th_gpu = (float*)xmalloc(P * sizeof(float));
    float* grad = (float*)xmalloc(P * sizeof(float));
    float* m_cpu = (float*)xcalloc(P, sizeof(float));
    float* m_gpu = (float*)xcalloc(P, sizeof(float));
    float* mp[NM];
    for (int i = 0; i < NM; i++) mp[i] = m_gpu + off[i];
    for (size_t i = 0; i < P; i++) th_cpu[i] = th_gpu[i] = 0.05f * rng_normal(&r);
    ParamShape shapes[NM];
    memset(shapes, 0, sizeof(shapes));
    for (int i = 0; i < NM; i++) {
        shapes[i].name = "m";
        shapes[i].ndim = 2;
        shapes[i].rows = T_ROWS[i];
        shapes[i].cols = T_COLS[i];
        shapes[i].numel = T_ROWS[i] * T_COLS[i];
        shapes[i].decay = T_DECAY[i];
        shapes[i].role = i == 1 ? PARAM_ATTN_QKV : PARAM_MATRIX;
        shapes[i].heads = 1;
    }
    const float scales[3] = { 0.3f, 1.0f, 0.7f };
    for (int t = 1; t <= 3; t++) {
        for (size_t i = 0; i < P; i++) grad[i] = 0.1f * rng_normal(&r);
        const double lr = h.lr * (double)scales[t - 1];
        for (int i = 0; i < NM; i++) {
            OptTensor ot;
            memset(&ot, 0, sizeof(ot));
            ot.shape = &shapes[i];
            ot.param = th_cpu + off[i];
            ot.grad = grad + off[i];
            ot.state[0] = m_cpu + off[i];
            OptStep st;
            memset(&st, 0, sizeof(st));
            st.t = t;
            st.lr = lr;
            st.lr_scale = scales[t - 1];
            opt->step(&h, &ot, &st);
        }
        host_step(&p, &h, th_gpu, grad, mp, t, lr, scales[t - 1], mu);
    }
    size_t diff = 0;
    for (size_t i = 0; i < P; i++) {
        if (memcmp(&th_cpu[i], &th_gpu[i], 4)) diff++;
        if (memcmp(&m_cpu[i], &m_gpu[i], 4)) diff++;
    }
    muon_plan_free(&p);
    free(th_cpu); free(th_gpu); free(grad); free(m_cpu); free(m_gpu);
    return diff;
}

int main(void) {
    char why[256] = "";
    // ---- 1. d12 ----
    GPT2Config cfg = { 1024, 50257, 50304, 12, 12, 768 };
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    size_t rows[64], cols[64], offs[64];
    int decay[64], n = 0;
    for (int i = 0; i < ml.num_tensors; i++) {
        const ParamShape* s = &ml.tensors[i].shape;
        if (!muon_uses_muon(s)) continue;
        CHECK(n < 64);
        rows[n] = s->rows; cols[n] = s->cols; offs[n] = ml.tensors[i].offset; decay[n] = s->decay;
        n++;
    }
    MuonPlan p;
    muon_plan_build(&p, rows, cols, decay, offs, n, MUON_BATCH_BYTES, (size_t)32 << 20);
    test_check(plan_sound(&p, rows, cols, n, MUON_BATCH_BYTES, why, sizeof(why)), why, "muon plan d12: %d matrices, %d batches, sound", n, p.nbatch);
    printf("# d12 batches:");
    for (int b = 0; b < p.nbatch; b++) printf(" (%d, %d) x%d", p.batch[b].s, p.batch[b].l, p.batch[b].count);
    printf("\n# d12 launches per step: %d (34 per batch; matrix at a time: %d); workspace %zu bytes (%.1f MB + 32 MiB cuBLAS)\n",
           34 * p.nbatch, 34 * n, p.total, (double)p.off_blas / 1e6);
    test_check(n == 48 && p.nbatch == 4 && p.batch[0].count == 12 && p.batch[3].count == 12 && p.batch[2].s == 768 && p.batch[2].l == 3072 &&
                   p.batch[1].l == 768 && p.batch[0].l == 2304,
               "unexpected grouping", "muon plan d12: 4 batches of 12: (768, 2304), (768, 768), (768, 3072) twice (mlp.fc and mlp.proj together)");
    int mixed = 0;
    for (int j = p.batch[2].first; j < p.batch[2].first + p.batch[2].count; j++) mixed |= 1 << p.mat[j].tr;
    test_check(mixed == 3, "one orientation only", "muon plan d12: a (768, 3072) batch mixes mlp.fc (transposed) and mlp.proj");
    muon_plan_free(&p);
    model_layout_free(&ml);

    // ---- 1. test_gpt2cu's shapes, at several caps ----
    size_t toff[NM], P = 0;
    for (int i = 0; i < NM; i++) { toff[i] = P; P += T_ROWS[i] * T_COLS[i]; }
    const size_t caps[3] = { 1, 2 * muon_matrix_bytes(37, 83), (size_t)1 << 30 };
    for (int ci = 0; ci < 3; ci++) {
        muon_plan_build(&p, T_ROWS, T_COLS, T_DECAY, toff, NM, caps[ci], 0);
        why[0] = 0;
        test_check(plan_sound(&p, T_ROWS, T_COLS, NM, caps[ci], why, sizeof(why)), why, "muon plan of test_gpt2cu's shapes, cap %zu bytes: %d batches, sound",
                   caps[ci], p.nbatch);
        muon_plan_free(&p);
    }
    // mutations of the structure: a matrix planned twice (and another left out), a tr flipped
    muon_plan_build(&p, T_ROWS, T_COLS, T_DECAY, toff, NM, (size_t)1 << 30, 0);
    MuonMatrix keep = p.mat[1];
    p.mat[1] = p.mat[0];
    test_check(!plan_sound(&p, T_ROWS, T_COLS, NM, (size_t)1 << 30, why, sizeof(why)), "not caught", "mutation caught: a matrix planned twice, one left out (%s)", why);
    p.mat[1] = keep;
    p.mat[1].tr = !p.mat[1].tr;
    test_check(!plan_sound(&p, T_ROWS, T_COLS, NM, (size_t)1 << 30, why, sizeof(why)), "not caught", "mutation caught: a tr flipped (%s)", why);
    muon_plan_free(&p);

    // ---- 2. the plan run on the host against muon.c ----
    Mutation none = { -1, -1, 0 };
    for (int ci = 0; ci < 3; ci++) {
        int nb = 0;
        const size_t d = run_against_cpu(caps[ci], &none, &nb);
        test_check(d == 0, "values differ", "muon plan run on the host (%d batches): parameters and momentum equal muon.c's bit for bit after 3 steps (%zu differ)",
                   nb, d);
    }
    // ---- 3. mutations of the run ----
    {
        int nb = 0;
        Mutation mu = none;
        mu.flip_tr_entry = 1; // (83, 37): its X written untransposed
        size_t d = run_against_cpu((size_t)1 << 30, &mu, &nb);
        test_check(d > 0, "not caught", "mutation caught: a transposed matrix run untransposed (%zu values differ)", d);
        mu = none;
        mu.bad_stride_op = 4; // B X reads matrix 0's X for every product
        d = run_against_cpu((size_t)1 << 30, &mu, &nb);
        test_check(d > 0, "not caught", "mutation caught: a GEMM's operand stride 0 (%zu values differ)", d);
        mu = none;
        mu.x_index_off = 1;
        d = run_against_cpu((size_t)1 << 30, &mu, &nb);
        test_check(d > 0, "not caught", "mutation caught: an X index off by one (%zu values differ)", d);
    }
    return test_finish("test_muon_plan");
}
