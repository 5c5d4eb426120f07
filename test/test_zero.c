// test/test_zero.c: ZeRO-1's pieces that need no MPI (test/sh/dist.sh runs the real ranks).
//
// 1. Row shards of the factored optimizers (OPT_SHARD_ROWS): adafactor and came stepped on a matrix cut
//    into row pieces, each piece in its own thread with a reduce hook (OptReduce) that sums the pieces'
//    partials in piece order, exactly as trainer/dist.c's dist_group_sum_f64 sums the ranks' (an
//    all-gather, then the sum in rank order), against the same steps on the whole matrix. Pieces whose
//    rows do not divide evenly (9 rows as 4+5 and 1+7+1, 50 rows as 17+17+16), 10 steps, gradient scale
//    jumping over three decades so the update clipping binds on some steps only, with and without
//    weight decay, momentum and relative step.
//    Reference: the whole-matrix step, which test_optim_factored.c checks against PyTorch.
//    Tolerance: the pieces change nothing but where the double sums over rows are split (column sums,
//    sum of the row factor, sum of U^2, sum of theta^2): each sum then differs by a few ulps of double
//    (~1e-16 relative) before it is rounded to fp32, which moves an fp32 value by 1 ulp only when the
//    sum lies that close to a rounding boundary. Tolerance 4 fp32 ulps relative to each array's largest
//    value (4 * 2^-24 * max|ref|), far below what a missing reduce (of the column sums, sum(r), sum(U^2)
//    or sum(theta^2)) or a mean over the piece's rows instead of the matrix's moves: 9e4 to 2e7 such
//    ulps, measured by breaking each in optim/factored.c on purpose. Measured: every element bit-identical. The column states must be bit-identical ACROSS the pieces (each
//    piece computes them from the same reduced sums), which the checkpoint gather relies on.
// 2. The shard plan (trainer/zero.c) over real model layouts, odd channel count (1:33:3), 2, 3 and 5 ranks:
//    cuts at row boundaries of matrices and never inside a vector (rows), on whole 4096-element pieces of
//    quantized tensors where the even cut would split a 256-element block (8-bit), anywhere (element);
//    each rank's state bytes equal the layout formula written out here for its rows (adafactor:
//    4 k + 4 cols per k-row slice, 4 n per vector; came: 4 k cols + 8 k + 8 cols, 8 n); every state
//    element a rank takes from an unsharded checkpoint (zero_scatter_state) is the one at its rows
//    (index-coded buffers); the per-unit scratch cuts (zero_unit_cuts) give every rank exactly the
//    scratch positions of its flat elements.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "common/util.h"
#include "common/rng.h"
#include "test/test.h"
#include "optim/optim.h"
#include "optim/state.h"
#include "trainer/model.h"
#include "trainer/cli.h"
#include "trainer/zero.h"
#include "test/thread_reduce.h"

extern const Optimizer OPT_ADAFACTOR, OPT_CAME, OPT_ADAMW, OPT_ADAMW8BIT, OPT_MUON;

#define STEPS 10
#define MAXP THREAD_GROUP_MAX

// ------------------------------------------------------------------------------------------------
// 1. row shards of the factored optimizers

typedef struct {
    ThreadMember tm;        // its place in the group of pieces (test/thread_reduce.h)
    OptReduce red;
    const Optimizer* opt;
    OptHyper h;
    ParamShape shape;       // the piece: rows r0 .. r0 + shape.rows of the matrix
    float* param;           // (rows, cols)
    const float* grads;     // (STEPS, whole rows, cols): every step's gradient of the whole matrix
    size_t r0, whole_rows;
    void* state[OPT_MAX_STATES];
} Piece;

static double sched_lr(int t) { return 1e-2 * (0.5 + 0.5 * cos(3.14159 * t / STEPS)); }

static void* piece_run(void* arg) {
    Piece* p = (Piece*)arg;
    size_t cols = p->shape.cols;
    for (int t = 1; t <= STEPS; t++) {
        OptTensor ot = { &p->shape, p->param, p->grads + ((size_t)(t - 1) * p->whole_rows + p->r0) * cols, {0} };
        memcpy(ot.state, p->state, sizeof(p->state));
        OptStep st = { t, sched_lr(t), 1.0f, 0, p->tm.g->n > 1 ? &p->red : NULL };
        p->opt->step(&p->h, &ot, &st);
    }
    return NULL;
}

// The states of one tensor, zeroed, from the optimizer's layout; returns how many (sizes in counts).
static int alloc_states(const Optimizer* o, const OptHyper* h, const ParamShape* s, void* state[OPT_MAX_STATES], StateSpec* specs) {
    int n = o->layout(h, s, specs);
    for (int i = 0; i < n; i++) state[i] = xcalloc(specs[i].count ? specs[i].count : 1, dtype_size(specs[i].dtype));
    return n;
}

static void row_shard_case(const char* label, const Optimizer* o, OptHyper h, size_t rows, size_t cols,
                           const size_t* piece_rows, int npieces) {
    size_t n = rows * cols;
    Rng rng;
    rng_seed(&rng, 1234 + rows);
    float* theta0 = (float*)xmalloc(n * sizeof(float));
    float* grads = (float*)xmalloc((size_t)STEPS * n * sizeof(float));
    for (size_t i = 0; i < n; i++) theta0[i] = 0.05f * rng_normal(&rng);
    for (int t = 0; t < STEPS; t++) {
        float scale = powf(10.0f, (float)(t % 3) - 1.0f);
        for (size_t i = 0; i < n; i++) grads[(size_t)t * n + i] = scale * rng_normal(&rng);
    }
    // the whole matrix
    ParamShape whole = { "m", 2, rows, cols, n, 1, PARAM_MATRIX, 1 };
    StateSpec wspec[OPT_MAX_STATES];
    Piece w;
    memset(&w, 0, sizeof(w));
    ThreadGroup one;
    thread_group_init(&one, 1);
    w.tm.g = &one; w.opt = o; w.h = h; w.shape = whole; w.grads = grads; w.whole_rows = rows;
    w.param = (float*)xmalloc(n * sizeof(float));
    memcpy(w.param, theta0, n * sizeof(float));
    int ns = alloc_states(o, &h, &whole, w.state, wspec);
    piece_run(&w);

    // the pieces, one thread each
    ThreadGroup sh;
    thread_group_init(&sh, npieces);
    Piece ps[MAXP];
    StateSpec pspec[MAXP][OPT_MAX_STATES];
    pthread_t th[MAXP];
    size_t r0 = 0;
    for (int q = 0; q < npieces; q++) {
        Piece* p = &ps[q];
        memset(p, 0, sizeof(*p));
        p->tm.g = &sh; p->tm.member = q; p->opt = o; p->h = h; p->grads = grads; p->whole_rows = rows; p->r0 = r0;
        p->shape = whole;
        p->shape.rows = piece_rows[q];
        p->shape.numel = piece_rows[q] * cols;
        p->red = (OptReduce){ rows, thread_group_sum, &p->tm };
        p->param = (float*)xmalloc(p->shape.numel * sizeof(float));
        memcpy(p->param, theta0 + r0 * cols, p->shape.numel * sizeof(float));
        CHECK(alloc_states(o, &h, &p->shape, p->state, pspec[q]) == ns);
        r0 += piece_rows[q];
    }
    CHECK(r0 == rows);
    for (int q = 0; q < npieces; q++) pthread_create(&th[q], NULL, piece_run, &ps[q]);
    for (int q = 0; q < npieces; q++) pthread_join(th[q], NULL);
    thread_group_destroy(&sh);
    thread_group_destroy(&one);

    // reassemble: per-row states (their count grows with the rows) from the pieces' rows, per-column
    // states from piece 0, which must equal every other piece's bit for bit
    double worst = 0.0;
    int all_exact = 1, cols_agree = 1, calls_agree = 1;
    float* got = (float*)xmalloc(n * sizeof(float));
    for (int q = 0; q < npieces; q++) calls_agree &= ps[q].tm.calls == ps[0].tm.calls;
    for (int s = -1; s < ns; s++) { // -1: the parameters
        size_t cnt = s < 0 ? n : wspec[s].count;
        const float* ref = s < 0 ? w.param : (const float*)w.state[s];
        int per_row = s < 0 || pspec[0][s].count != wspec[s].count; // v_col, res_col: the same count on a piece
        size_t off = 0;
        for (int q = 0; q < npieces; q++) {
            const float* src = s < 0 ? ps[q].param : (const float*)ps[q].state[s];
            size_t c = s < 0 ? ps[q].shape.numel : pspec[q][s].count;
            if (per_row) { memcpy(got + off, src, c * sizeof(float)); off += c; }
            else {
                if (q == 0) { memcpy(got, src, c * sizeof(float)); off = c; }
                else if (memcmp(src, got, c * sizeof(float))) cols_agree = 0;
            }
        }
        CHECK(off == cnt);
        int exact = 1;
        double u = test_ulps_of_max(got, ref, cnt, &exact);
        if (u > worst) worst = u;
        all_exact &= exact;
    }
    char why[160];
    snprintf(why, sizeof(why), "worst %.3g ulps of the array's largest value (tolerance 4)", worst);
    test_check(worst <= 4.0, why, "rows: %s, %zux%zu in %d pieces: params and states equal the whole matrix's (%s)", label, rows, cols,
               npieces, all_exact ? "bit-identical" : "within 4 ulps");
    test_check(cols_agree && calls_agree, cols_agree ? "the pieces made different numbers of reduce calls" : "column states differ between pieces",
               "rows: %s, %zux%zu in %d pieces: column states identical on every piece, same reduce calls (%d)", label, rows, cols,
               npieces, ps[0].tm.calls);
    free(got);
    for (int q = 0; q < npieces; q++) { free(ps[q].param); for (int s = 0; s < ns; s++) free(ps[q].state[s]); }
    free(w.param);
    for (int s = 0; s < ns; s++) free(w.state[s]);
    free(theta0); free(grads);
}

static void test_row_shards(void) {
    const size_t p45[] = { 4, 5 }, p171[] = { 1, 7, 1 }, p50[] = { 17, 17, 16 }, p333[] = { 3, 3, 3 };
    OptHyper af = OPT_ADAFACTOR.defaults;           // relative step, RMS(theta) scaling
    OptHyper afm = af;                              // a fixed lr, momentum, weight decay
    afm.relative_step = 0; afm.use_beta1 = 1; afm.beta1 = 0.9; afm.weight_decay = 0.1;
    OptHyper cm = OPT_CAME.defaults;
    cm.weight_decay = 0.01;
    struct { const char* label; const Optimizer* o; OptHyper h; } cases[] = {
        { "adafactor defaults", &OPT_ADAFACTOR, af }, { "adafactor lr+beta1+wd", &OPT_ADAFACTOR, afm }, { "came+wd", &OPT_CAME, cm } };
    for (int c = 0; c < 3; c++) {
        row_shard_case(cases[c].label, cases[c].o, cases[c].h, 9, 6, p45, 2);
        row_shard_case(cases[c].label, cases[c].o, cases[c].h, 9, 6, p171, 3);
        row_shard_case(cases[c].label, cases[c].o, cases[c].h, 9, 6, p333, 3);
        row_shard_case(cases[c].label, cases[c].o, cases[c].h, 50, 7, p50, 3);
    }
}

// ------------------------------------------------------------------------------------------------
// 2. the shard plan over a model layout

// Bytes of one rank's state, written out from each optimizer's documented layout (optim/NAME.c).
static size_t formula_bytes(const Optimizer* o, const ModelLayout* ml, const ZeroPlan* z, int r) {
    size_t b = 0;
    for (int i = 0; i < ml->num_tensors; i++) {
        const ModelTensor* p = &ml->tensors[i];
        size_t lo = p->offset > z->bound[r] ? p->offset : z->bound[r];
        size_t hi = p->offset + p->shape.numel < z->bound[r + 1] ? p->offset + p->shape.numel : z->bound[r + 1];
        if (hi <= lo) continue;
        size_t k = (hi - lo) / p->shape.cols, c = p->shape.cols, n = hi - lo;
        if (o == &OPT_ADAFACTOR) b += p->shape.ndim == 2 ? 4 * k + 4 * c : 4 * n;
        else if (o == &OPT_CAME) b += p->shape.ndim == 2 ? 4 * k * c + 8 * k + 8 * c : 8 * n;
        else if (o == &OPT_ADAMW) b += 8 * n;
    }
    return b;
}

static void test_plan(const char* spec, const Optimizer* o, int world) {
    GPT2Config cfg = parse_model(spec);
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    OptHyper h = o->defaults;
    ZeroPlan z0;
    zero_plan_build(&z0, &ml, o, &h, world, 0);
    size_t P = ml.num_params, total = 0;
    int ok_order = z0.bound[0] == 0 && z0.bound[world] == P, ok_cut = 1, ok_bytes = 1, would_cut = 0;
    char why[256] = "";
    for (int r = 0; r < world; r++) {
        ok_order &= z0.bound[r] <= z0.bound[r + 1];
        total += zero_count(&z0, r);
        size_t f = formula_bytes(o, &ml, &z0, r);
        if (o != &OPT_ADAMW8BIT && o != &OPT_MUON && f != z0.layouts[r].total_bytes) {
            ok_bytes = 0;
            snprintf(why, sizeof(why), "rank %d: layout %zu bytes, formula %zu", r, z0.layouts[r].total_bytes, f);
        }
    }
    for (int r = 1; r < world; r++) {
        size_t b = z0.bound[r], even = P / world * r + (P % world) * r / world;
        for (int i = 0; i < ml.num_tensors; i++) {
            const ModelTensor* p = &ml.tensors[i];
            if (b <= p->offset || b >= p->offset + p->shape.numel) continue; // not strictly inside
            size_t rel = b - p->offset;
            if (o->shard == OPT_SHARD_ROWS) ok_cut &= p->shape.ndim == 2 && rel % p->shape.cols == 0;
            if (o->shard == OPT_SHARD_QBLOCK) ok_cut &= p->shape.numel >= 4096 && rel % 4096 == 0 && p->shape.numel - rel >= 4096;
            if (o->shard == OPT_SHARD_TENSOR) ok_cut = 0;
        }
        if (o->shard == OPT_SHARD_QBLOCK && even % 256 != 0) would_cut++;
    }
    test_check(ok_order && total == P, "bounds out of order or not covering the parameters", "plan %s %s %d ranks: ranges cover [0, %zu) in order",
               o->name, spec, world, P);
    const char* unit = o->shard == OPT_SHARD_ROWS ? "at row boundaries of matrices, never inside a vector"
                     : o->shard == OPT_SHARD_QBLOCK ? "at whole 4096-element pieces of quantized tensors"
                     : o->shard == OPT_SHARD_TENSOR ? "between whole tensors" : "anywhere";
    test_check(ok_cut, "a cut inside a tensor where the shard unit forbids it", "plan %s %s %d ranks: cuts %s", o->name, spec, world, unit);
    if (o->shard == OPT_SHARD_QBLOCK)
        test_check(would_cut == world - 1, "the even cut fell on a block boundary: this case tests nothing",
                   "plan %s %s %d ranks: every even cut would split a 256-element block (%d of %d), so the cuts moved", o->name, spec, world,
                   would_cut, world - 1);
    if (o == &OPT_ADAFACTOR || o == &OPT_CAME || o == &OPT_ADAMW)
        test_check(ok_bytes, why, "plan %s %s %d ranks: each rank's state bytes = the layout formula for its rows", o->name, spec, world);
    zero_plan_free(&z0);
    model_layout_free(&ml);
}

// came's five states taken from an index-coded unsharded checkpoint by every rank: exp_avg, v_row and
// res_row at its rows, v_col and res_col whole; vectors (exp_avg, v) whole.
static void test_scatter(const char* spec, int world) {
    GPT2Config cfg = parse_model(spec);
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    const Optimizer* o = &OPT_CAME;
    OptHyper h = o->defaults;
    int ok = 1, shared = 0;
    char why[256] = "";
    for (int r = 0; r < world && ok; r++) {
        ZeroPlan z;
        zero_plan_build(&z, &ml, o, &h, world, r);
        void* full[MAX_STATE_BUFFERS] = {0};
        void* mine[MAX_STATE_BUFFERS] = {0};
        for (int b = 0; b < z.full.nbuf; b++) {
            size_t nf = z.full.buf_bytes[b] / 4;
            CHECK(nf < (1u << 24)); // index-coded floats stay exact
            float* f = (float*)xmalloc(nf * 4 + 4);
            for (size_t j = 0; j < nf; j++) f[j] = (float)j;
            full[b] = f;
        }
        const StateLayout* ly = &z.layouts[r];
        for (int b = 0; b < ly->nbuf; b++) mine[b] = xcalloc(ly->buf_bytes[b] + 4, 1);
        zero_scatter_state(&z, full, mine);
        for (int i = 0; i < ml.num_tensors && ok; i++) {
            const ZeroSlice* s = zero_slice(&z, i);
            int k = z.index[(size_t)r * z.num_tensors + i];
            if (k < 0) continue;
            const ModelTensor* p = &ml.tensors[i];
            const TensorStates* ft = &z.full.tensors[i];
            const TensorStates* mt = &ly->tensors[k];
            size_t c = p->shape.cols, row0 = s->start / c, rows = s->shape.rows;
            shared += s->shared;
            // per-row elements of each state (0: per column, whole on every rank) and its count here
            size_t per_row[5] = { c, 1, 0, 1, 0 }, count[5] = { rows * c, rows, c, rows, c };
            int nst = p->shape.ndim == 2 ? 5 : 2;
            if (nst == 2) { per_row[0] = per_row[1] = 0; count[0] = count[1] = p->shape.numel; } // vectors: whole
            for (int st = 0; st < nst && ok; st++) {
                const float* got = (const float*)((char*)mine[mt->buf[st]] + mt->offset[st]);
                size_t first = ft->offset[st] / 4 + row0 * per_row[st];
                for (size_t j = 0; j < count[st]; j++)
                    if (got[j] != (float)(first + j)) {
                        ok = 0;
                        snprintf(why, sizeof(why), "rank %d tensor %s state %d element %zu: %g, want %zu", r, p->name, st, j, got[j], first + j);
                        break;
                    }
            }
        }
        for (int b = 0; b < MAX_STATE_BUFFERS; b++) { free(full[b]); free(mine[b]); }
        zero_plan_free(&z);
    }
    test_check(ok && shared > 0, shared ? why : "no matrix was shared: this case tests nothing",
               "scatter came %s %d ranks: every rank takes its rows' states and the whole column states (%d shared slices)",
               spec, world, shared);
    model_layout_free(&ml);
}

static void test_unit_cuts(const char* spec, int world) {
    GPT2Config cfg = parse_model(spec);
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    ZeroPlan z;
    zero_plan_build(&z, &ml, &OPT_ADAMW, &OPT_ADAMW.defaults, world, 0);
    int ok = 1;
    size_t* cuts = (size_t*)xmalloc((world + 1) * sizeof(size_t));
    for (int u = 0; u <= cfg.num_layers && ok; u++) {
        zero_unit_cuts(&z, &ml, u, cuts);
        ok &= cuts[0] == 0 && cuts[world] == ml.unit_size[u == 0 ? 0 : 1];
        for (int r = 0; r < world; r++) ok &= cuts[r] <= cuts[r + 1];
        for (int i = 0; i < ml.num_tensors && ok; i++) {
            const ModelTensor* p = &ml.tensors[i];
            if (p->unit != u) continue;
            for (int r = 0; r < world; r++)
                for (size_t e = p->offset; e < p->offset + p->shape.numel; e++) {
                    if (e < z.bound[r] || e >= z.bound[r + 1]) continue;
                    size_t pos = p->scratch_offset + (e - p->offset);
                    if (pos < cuts[r] || pos >= cuts[r + 1]) { ok = 0; break; }
                }
        }
    }
    test_check(ok, "a flat element's scratch position falls outside its rank's cut", "unit cuts %s %d ranks: each rank's scratch part holds exactly its elements",
               spec, world);
    free(cuts);
    zero_plan_free(&z);
    model_layout_free(&ml);
}

int main(void) {
    test_row_shards();
    const int worlds[] = { 2, 3, 5 };
    for (int w = 0; w < 3; w++) {
        test_plan("1:33:3", &OPT_ADAFACTOR, worlds[w]);
        test_plan("1:33:3", &OPT_CAME, worlds[w]);
        test_plan("1:33:3", &OPT_ADAMW, worlds[w]);
        test_plan("1:33:3", &OPT_ADAMW8BIT, worlds[w]);
        test_plan("1:33:3", &OPT_MUON, worlds[w]);
        test_scatter("1:33:3", worlds[w]);
    }
    test_plan("2:48:2", &OPT_CAME, 3);
    test_unit_cuts("2:48:2", 3);
    test_unit_cuts("1:33:3", 5);
    return test_finish("test_zero");
}
