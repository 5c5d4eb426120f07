// test/test_optim_fac_plan.c: the host emulation of the GPU work plan of Adafactor, CAME
// (optim/factored.cuh) and Adam-mini (optim/adam_mini.cuh), checked against the CPU steps
// (adafactor.c, came.c, adam_mini.c) with the GPU tests' tolerances, so the plan's index math and
// reduction orders are known right before a GPU runs them (test/test_gpt2cu.cu checks the kernels).
//
// What is shared with the kernels: optim/reduce_plan.h (the tile/unit tables, rp_fac_plan_build, the
// thread -> element maps rp_tile_row/rp_tile_col/rp_group_len/rp_flat_group/rp_mini_row*) and
// adam_mini.h's adam_mini_plan; the per-element math is the optimizers' HD headers. What is emulated
// here, pass by pass as the kernels do it: every block's warps and lanes, each lane's double running
// sums in its order, the warp tree (__shfl_down_sync 16, 8, 4, 2, 1, lanes past 31 reading themselves),
// the block sum (warps in order), the column partials (warps in order via shared memory), the finish
// units, sum(r) over the row units (a warp), the per-tensor sums (a block per tensor), and -zero 1 row
// shards (the OptReduce points, ranks added in rank order). Gradients are fp32 here (bf16 values would
// be the same floats); the clip factor is applied per element as opt_grad() does.
// Shapes: vectors 1, 3, 127, 4097, 8193 (two vector tiles); matrices 33x65, 3x5000, 300x7 (rows past the
// last full tile), 129x257 (a 1-column last tile), 768x2304 (9 column tiles); row shards of 33x65 and
// 768x2304 over 3 ranks and of 300x7 over 2. Adam-mini: every partition branch, plus a d12-sized
// fused qkv (2304x768, 12 heads) and wte-like per-row 4097x70 (unaligned rows).
// Tolerances (test_gpt2cu.cu's): factored statistics rtol 1e-6, momentum/residual rtol 1e-5 + 1e-6 of
// the largest, master rtol 1e-5 of |theta| + |update|; row shards within 4 ulps of each array's largest
// value vs the whole plan; adam_mini m and the biases' v bit-exact, vmean rtol 1e-6, master 1e-6 of
// |theta| + 1e-6 of the update. Then planted bugs (a wrong index, a dropped tile column, a column unit
// walking the row tiles with the wrong stride, a tile boundary shifted, adam_mini's vmean index off by one, a segment overlap) must
// each fail.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "common/util.h"
#include "common/rng.h"
#include "test/test.h"
#include "optim/optim.h"
#include "optim/adafactor.h"
#include "optim/came.h"
#include "optim/adam_mini.h"
#include "optim/reduce_plan.h"

extern const Optimizer OPT_ADAFACTOR, OPT_CAME, OPT_ADAM_MINI;

static int bug = 0; // a planted bug (0: none)
enum { BUG_NONE, BUG_COLPART_INDEX, BUG_DROP_TILE_COL, BUG_COLSUM_STRIDE, BUG_VTILE_SHIFT, BUG_MINI_VMEAN_INDEX, BUG_MINI_SEG_OVERLAP, NBUGS };
static const char* bug_name[NBUGS] = { "none", "column partial stored at row tile (ct mod nrt), not rt", "last column of every tile dropped",
                                       "finish column unit walks the row tiles with stride 7 (a tile added twice)", "second vector tile starts one element early",
                                       "adam_mini row item's vmean index off by one", "adam_mini segments overlap by one group" };

// ---- warp and block reductions as the kernels do them -------------------------------------------------
static double warp_tree(const double* in) {
    double v[32], nv[32];
    memcpy(v, in, sizeof(v));
    for (int o = 16; o > 0; o >>= 1) {
        for (int l = 0; l < 32; l++) nv[l] = v[l] + (l + o < 32 ? v[l + o] : v[l]);
        memcpy(v, nv, sizeof(v));
    }
    return v[0];
}
static double block_sum(const double* per_thread) {
    double s = 0.0;
    for (int w = 0; w < RP_WARPS; w++) s += warp_tree(per_thread + 32 * w);
    return s;
}
static int group_len(size_t start, size_t end) {
    if (bug == BUG_DROP_TILE_COL && end > start + 1 && end - start <= RP_VEC) end--;
    return rp_group_len(start, end);
}

// ---- the factored plan, one rank ------------------------------------------------------------------------
#define NT_MAX 16
typedef struct {
    int n, came;
    RpFacTensor pt[NT_MAX];
    RpFacPlan plan;
    size_t off[NT_MAX], goff[NT_MAX], mrows[NT_MAX], ncs[NT_MAX]; // off: theta's; goff: the gradient's (factored.cuh's grad_off)
    int shared[NT_MAX], decay[NT_MAX];
    float *v_row[NT_MAX], *v_col[NT_MAX], *m[NT_MAX], *res_row[NT_MAX], *res_col[NT_MAX], *rf[NT_MAX], *cf[NT_MAX];
    double* sums[NT_MAX];
    double *rowpart, *colpart, *rpart, *part_theta, *part_u;
    float clip_div[NT_MAX], lr_t[NT_MAX];
} Emu;

typedef struct {
    int came;
    AdafactorScalars af;
    CameScalars cm;
    float eps1, b2, omb2, clip_scale;
} Args;

// rows/cols/off/mrows/shared of n tensors (rows 1: a vector of cols); states zero.
static void emu_init(Emu* e, int came, int use_m, int n, const size_t* rows, const size_t* cols, const size_t* off, const size_t* mrows,
                     const int* shared) {
    memset(e, 0, sizeof(*e));
    e->n = n;
    e->came = came;
    for (int i = 0; i < n; i++) {
        e->pt[i].factored = rows[i] > 1 || (mrows && mrows[i] > 1);
        e->pt[i].rows = e->pt[i].factored ? rows[i] : 1;
        e->pt[i].cols = e->pt[i].factored ? cols[i] : rows[i] * cols[i];
        e->off[i] = off[i];
        e->goff[i] = off[i]; // as fac_setup with grad_offsets NULL
        e->mrows[i] = mrows ? mrows[i] : e->pt[i].rows;
        e->shared[i] = shared ? shared[i] : 0;
        e->decay[i] = e->pt[i].factored || i == 1;
        const size_t R = e->pt[i].rows, C = e->pt[i].cols;
        e->ncs[i] = e->pt[i].factored ? C : 0;
        e->v_row[i] = (float*)xcalloc(e->pt[i].factored ? R : C, sizeof(float));
        if (e->pt[i].factored) {
            e->v_col[i] = (float*)xcalloc(C, sizeof(float));
            e->rf[i] = (float*)xcalloc(R, sizeof(float));
            e->cf[i] = (float*)xcalloc(C, sizeof(float));
            if (came) { e->res_row[i] = (float*)xcalloc(R, sizeof(float)); e->res_col[i] = (float*)xcalloc(C, sizeof(float)); }
        }
        if (came || use_m) e->m[i] = (float*)xcalloc(R * C, sizeof(float));
        e->sums[i] = (double*)xcalloc(e->ncs[i] + 3, sizeof(double));
    }
    e->plan = rp_fac_plan_build(e->pt, n);
    e->rowpart = (double*)xcalloc(e->plan.nrowpart + 1, sizeof(double));
    e->colpart = (double*)xcalloc(e->plan.ncolpart + 1, sizeof(double));
    e->rpart = (double*)xcalloc((size_t)e->plan.nunits + 1, sizeof(double));
    e->part_theta = (double*)xcalloc((size_t)e->plan.ntiles + 1, sizeof(double));
    e->part_u = (double*)xcalloc((size_t)e->plan.ntiles + 1, sizeof(double));
}

static void emu_free(Emu* e) {
    for (int i = 0; i < e->n; i++) {
        free(e->v_row[i]); free(e->v_col[i]); free(e->rf[i]); free(e->cf[i]); free(e->res_row[i]); free(e->res_col[i]); free(e->m[i]);
        free(e->sums[i]);
    }
    free(e->rowpart); free(e->colpart); free(e->rpart); free(e->part_theta); free(e->part_u);
    rp_fac_plan_free(&e->plan);
}

static float emu_grad(const float* grad, size_t gi, float cs) { return cs != 1.0f ? grad[gi] * cs : grad[gi]; }

// A tile as the vector tiles the kernels get (the planted shift moves the second tile's start).
static RpTile emu_tile(const Emu* e, int k) {
    RpTile x = e->plan.tiles[k];
    if (bug == BUG_VTILE_SHIFT && !e->pt[x.tensor].factored && x.rt == 1) x.r0 -= 1;
    return x;
}

// fac_tile_rowcol: val(i, j) gives u at (row i, column j) (and may update state there).
typedef float (*ValFn)(const Emu* e, const RpTile* x, size_t i, size_t j, const float* theta, const float* grad, const Args* a);
static void tile_rowcol(Emu* e, const RpTile* x, ValFn val, const float* theta, const float* grad, const Args* a) {
    const RpFacTensor* t = &e->pt[x->tensor];
    double sm[RP_WARPS][RP_TILE_COLS];
    memset(sm, 0, sizeof(sm));
    double* rowpart = e->rowpart + t->rowpart_off;
    double* colpart = e->colpart + t->colpart_off;
    for (int w = 0; w < RP_WARPS; w++) {
        double cacc[32][RP_VEC];
        memset(cacc, 0, sizeof(cacc));
        for (int k = 0;; k++) {
            const size_t i = rp_tile_row(x, w, k);
            if (i >= x->r1) break;
            double lane_rs[32];
            for (int l = 0; l < 32; l++) {
                const size_t c = rp_tile_col(x, l);
                const int n = group_len(c, x->c1);
                double rs = 0.0;
                for (int q = 0; q < n; q++) {
                    const float u = val(e, x, i, c + q, theta, grad, a);
                    rs += (double)u;
                    cacc[l][q] += (double)u;
                }
                lane_rs[l] = rs;
            }
            rowpart[i * (size_t)t->nct + x->ct] = warp_tree(lane_rs);
        }
        for (int l = 0; l < 32; l++)
            for (int q = 0; q < RP_VEC; q++) sm[w][l * RP_VEC + q] = cacc[l][q];
    }
    for (int tid = 0; tid < RP_THREADS; tid++) {
        const size_t j = x->c0 + (size_t)tid;
        if (j >= x->c1) continue;
        double s = 0.0;
        for (int w = 0; w < RP_WARPS; w++) s += sm[w][tid];
        colpart[(size_t)(bug == BUG_COLPART_INDEX ? x->ct % t->nrt : x->rt) * t->cols + j] = s;
    }
}

// Each thread's running sum of f(element) over a tile, block-summed (fac_tile_sumsq and the vector loops).
typedef double (*ElemFn)(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a);
static double tile_thread_sums(Emu* e, const RpTile* x, ElemFn f, float* theta, const float* grad, const Args* a) {
    const RpFacTensor* t = &e->pt[x->tensor];
    double per[RP_THREADS];
    for (int tid = 0; tid < RP_THREADS; tid++) {
        double s = 0.0;
        if (t->factored) {
            const int w = tid / 32, l = tid % 32;
            const size_t c = rp_tile_col(x, l);
            const int n = group_len(c, x->c1);
            for (int k = 0;; k++) {
                const size_t i = rp_tile_row(x, w, k);
                if (i >= x->r1) break;
                for (int q = 0; q < n; q++) s += f(e, x, i, c + q, i * t->cols + c + q, theta, grad, a);
            }
        } else {
            for (int k = 0;; k++) {
                const size_t e0 = rp_flat_group(x->r0, tid, k);
                if (e0 >= x->r1) break;
                const int n = rp_group_len(e0, x->r1);
                for (int q = 0; q < n; q++) s += f(e, x, 0, e0 + q, e0 + q, theta, grad, a);
            }
        }
        per[tid] = s;
    }
    return block_sum(per);
}

static float val_sq_eps(const Emu* e, const RpTile* x, size_t i, size_t j, const float* theta, const float* grad, const Args* a) {
    const RpFacTensor* t = &e->pt[x->tensor];
    return fac_sq_eps(emu_grad(grad, e->goff[x->tensor] + i * t->cols + j, a->clip_scale), a->eps1);
}
static double el_theta_sq(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    const double v = theta[e->off[x->tensor] + el];
    return v * v;
}
static double el_vector_v(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    float* v = e->v_row[x->tensor];
    const float g = emu_grad(grad, e->goff[x->tensor] + el, a->clip_scale);
    v[el] = fac_ema(v[el], a->b2, a->omb2, fac_sq_eps(g, a->eps1));
    const float pu = fac_rsqrt(v[el]) * g;
    return (double)pu * (double)pu;
}
static double el_usq(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    const int ti = x->tensor;
    const float u = (e->rf[ti][i] * e->cf[ti][j]) * emu_grad(grad, e->goff[ti] + el, a->clip_scale);
    return (double)u * (double)u;
}

// pass 1
static void emu_stats(Emu* e, float* theta, const float* grad, const Args* a) {
    const int th = !a->came && a->af.scale_parameter;
    for (int k = 0; k < e->plan.ntiles; k++) {
        const RpTile x = emu_tile(e, k);
        if (e->pt[x.tensor].factored) tile_rowcol(e, &x, val_sq_eps, theta, grad, a);
        else e->part_u[k] = tile_thread_sums(e, &x, el_vector_v, theta, grad, a);
        if (th) e->part_theta[k] = tile_thread_sums(e, &x, el_theta_sq, theta, grad, a);
    }
}

static double sum_rpart(const Emu* e, int ti) {
    double lanes[32];
    for (int l = 0; l < 32; l++) {
        double s = 0.0;
        for (int q = l; q < e->pt[ti].nru; q += 32) s += e->rpart[e->pt[ti].unit0 + q];
        lanes[l] = s;
    }
    return warp_tree(lanes);
}

// pass 2 (fac_finish_kernel) and, with row shards, fac_msums_kernel
static void emu_finish(Emu* e, int res, const Args* a) {
    const float b = res ? a->cm.b3 : a->b2, omb = res ? a->cm.omb3 : a->omb2;
    for (int u = 0; u < e->plan.nunits; u++) {
        const RpUnit* un = &e->plan.units[u];
        const RpFacTensor* t = &e->pt[un->tensor];
        if (un->kind == RP_UNIT_ROW) {
            float* r = res ? e->res_row[un->tensor] : e->v_row[un->tensor];
            double per[RP_THREADS];
            for (int tid = 0; tid < RP_THREADS; tid++) {
                const size_t i = un->lo + (size_t)tid;
                per[tid] = 0.0;
                if (i >= un->hi) continue;
                double rs = 0.0;
                for (int ct = 0; ct < t->nct; ct++) rs += e->rowpart[t->rowpart_off + i * (size_t)t->nct + ct];
                r[i] = fac_ema(r[i], b, omb, (float)(rs / (double)t->cols));
                per[tid] = (double)r[i];
            }
            e->rpart[u] = block_sum(per);
        } else {
            double sm[RP_WARPS][32];
            for (int w = 0; w < RP_WARPS; w++)
                for (int l = 0; l < 32; l++) {
                    const size_t j = un->lo + (size_t)l;
                    double s = 0.0;
                    if (j < un->hi)
                        for (int rt = w; rt < t->nrt; rt += RP_WARPS - (bug == BUG_COLSUM_STRIDE)) s += e->colpart[t->colpart_off + (size_t)rt * t->cols + j];
                    sm[w][l] = s;
                }
            for (int l = 0; l < 32; l++) {
                const size_t j = un->lo + (size_t)l;
                if (j >= un->hi) continue;
                double c = 0.0;
                for (int w = 0; w < RP_WARPS; w++) c += sm[w][l];
                e->sums[un->tensor][j] = c;
            }
        }
    }
}
static void emu_msums(Emu* e) {
    for (int i = 0; i < e->n; i++)
        if (e->pt[i].factored) e->sums[i][e->ncs[i]] = sum_rpart(e, i);
}

// pass 3
static void emu_factors(Emu* e, int res, int sumr_in_sums, const Args* a) {
    const float b = res ? a->cm.b3 : a->b2, omb = res ? a->cm.omb3 : a->omb2;
    for (int u = 0; u < e->plan.nunits; u++) {
        const RpUnit* un = &e->plan.units[u];
        const int ti = un->tensor;
        if (un->kind == RP_UNIT_ROW) {
            const float* r = res ? e->res_row[ti] : e->v_row[ti];
            const double s = sumr_in_sums ? e->sums[ti][e->ncs[ti]] : sum_rpart(e, ti);
            const float mean_r = (float)(s / (double)e->mrows[ti]);
            for (size_t i = un->lo; i < un->hi; i++) e->rf[ti][i] = fac_rsqrt(r[i] / mean_r);
        } else {
            float* c = res ? e->res_col[ti] : e->v_col[ti];
            for (size_t j = un->lo; j < un->hi; j++) {
                c[j] = fac_ema(c[j], b, omb, (float)(e->sums[ti][j] / (double)e->mrows[ti]));
                e->cf[ti][j] = fac_rsqrt(c[j]);
            }
        }
    }
}

// pass 4, then 5 (fuse: the scalars too, else only the sums)
static void emu_usq(Emu* e, float* theta, const float* grad, const Args* a) {
    for (int k = 0; k < e->plan.ntiles; k++) {
        const RpTile x = emu_tile(e, k);
        if (e->pt[x.tensor].factored) e->part_u[k] = tile_thread_sums(e, &x, el_usq, theta, grad, a);
    }
}
static void emu_scalars(Emu* e, int ti, double st, double su, const Args* a) {
    const size_t whole = e->mrows[ti] * e->pt[ti].cols;
    e->clip_div[ti] = fac_clip_div(su, whole, a->came ? a->cm.clip_threshold : a->af.clip_threshold);
    if (!a->came) e->lr_t[ti] = adafactor_step_size(a->af, a->af.scale_parameter && whole ? sqrt(st / (double)whole) : 0.0);
}
static void emu_tsums(Emu* e, int fuse, const Args* a) {
    const int th = !a->came && a->af.scale_parameter;
    for (int ti = 0; ti < e->n; ti++) {
        double pu[RP_THREADS], pt[RP_THREADS];
        for (int tid = 0; tid < RP_THREADS; tid++) {
            pu[tid] = pt[tid] = 0.0;
            for (int q = tid; q < e->pt[ti].ntiles; q += RP_THREADS) {
                pu[tid] += e->part_u[e->pt[ti].tile0 + q];
                pt[tid] += e->part_theta[e->pt[ti].tile0 + q];
            }
        }
        const double su = block_sum(pu), st = th ? block_sum(pt) : 0.0;
        e->sums[ti][e->ncs[ti] + 1] = st;
        e->sums[ti][e->ncs[ti] + 2] = su;
        if (fuse) emu_scalars(e, ti, st, su, a);
    }
}

// pass 6a
static double el_update(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    const int ti = x->tensor;
    const size_t gi = e->off[ti] + el;
    const float g = emu_grad(grad, e->goff[ti] + el, a->clip_scale);
    const float pre = e->pt[ti].factored ? e->rf[ti][i] * e->cf[ti][j] : fac_rsqrt(e->v_row[ti][el]);
    const double wd = e->decay[ti] ? a->af.wd : 0.0;
    theta[gi] = adafactor_update(theta[gi], g, pre, e->clip_div[ti], e->lr_t[ti], e->m[ti] ? e->m[ti] + el : NULL, a->af, wd,
                                 fac_wd_alpha(wd, (double)e->lr_t[ti]));
    return 0.0;
}
// pass 6b: came's vectors (whole step) and matrices (momentum, the residual's partials)
static double el_came_vector(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    const int ti = x->tensor;
    const size_t gi = e->off[ti] + el;
    const double wd = e->decay[ti] ? a->cm.wd : 0.0;
    const float g = emu_grad(grad, e->goff[ti] + el, a->clip_scale);
    const float mk = came_momentum(e->m[ti] + el, came_u(fac_rsqrt(e->v_row[ti][el]), g, e->clip_div[ti]), a->cm);
    theta[gi] = came_apply(theta[gi], 1.0f, mk, a->cm, wd, fac_wd_alpha(wd, a->cm.lr_d));
    return 0.0;
}
static float val_came(const Emu* e, const RpTile* x, size_t i, size_t j, const float* theta, const float* grad, const Args* a) {
    const int ti = x->tensor;
    const size_t el = i * e->pt[ti].cols + j;
    const float u = came_u(e->rf[ti][i] * e->cf[ti][j], emu_grad(grad, e->goff[ti] + el, a->clip_scale), e->clip_div[ti]);
    return came_residual(u, came_momentum(e->m[ti] + el, u, a->cm), a->cm);
}
static double el_came_apply(Emu* e, const RpTile* x, size_t i, size_t j, size_t el, float* theta, const float* grad, const Args* a) {
    const int ti = x->tensor;
    const size_t gi = e->off[ti] + el;
    const double wd = e->decay[ti] ? a->cm.wd : 0.0;
    theta[gi] = came_apply(theta[gi], e->rf[ti][i] * e->cf[ti][j], e->m[ti][el], a->cm, wd, fac_wd_alpha(wd, a->cm.lr_d));
    return 0.0;
}

// One step of W ranks in lockstep (W = 1: the whole tensors); shared tensors' sums are added over the
// ranks sharing them: group_of[q][i] names the whole tensor that rank q's tensor i is rows of (-1: whole
// here), and the members of each are added in rank order, as trainer/zero.c's group sum does.
typedef struct { Emu* e; int W; int* group_of[8]; } Ranks;
static void reduce_groups(Ranks* R, int lo_rowcol) {
    // every group: add its members' sums in rank order, give every member the total
    for (int gid = 0; gid < NT_MAX; gid++) {
        size_t cnt = 0, base = 0;
        double* tot = NULL;
        for (int q = 0; q < R->W; q++)
            for (int i = 0; i < R->e[q].n; i++) {
                if (R->group_of[q][i] != gid) continue;
                const Emu* e = &R->e[q];
                base = lo_rowcol ? 0 : e->ncs[i] + 1;
                cnt = lo_rowcol ? e->ncs[i] + 1 : 2;
                if (!tot) tot = (double*)xcalloc(cnt, sizeof(double));
                for (size_t k = 0; k < cnt; k++) tot[k] += e->sums[i][base + k];
            }
        if (!tot) continue;
        for (int q = 0; q < R->W; q++)
            for (int i = 0; i < R->e[q].n; i++)
                if (R->group_of[q][i] == gid) memcpy(R->e[q].sums[i] + base, tot, cnt * sizeof(double));
        free(tot);
    }
}
static void ranks_step(Ranks* R, float* theta, const float* grad, const Args* a) {
    int nshared = 0;
    for (int q = 0; q < R->W; q++)
        for (int i = 0; i < R->e[q].n; i++) nshared += R->group_of[q][i] >= 0;
    const int sh = nshared > 0;
    for (int q = 0; q < R->W; q++) emu_stats(&R->e[q], theta, grad, a);
    for (int res = 0; res <= a->came; res++) {
        if (res) {
            for (int q = 0; q < R->W; q++) {
                Emu* e = &R->e[q];
                for (int k = 0; k < e->plan.ntiles; k++) {
                    const RpTile x = emu_tile(e, k);
                    if (e->pt[x.tensor].factored) tile_rowcol(e, &x, val_came, theta, grad, a);
                    else tile_thread_sums(e, &x, el_came_vector, theta, grad, a);
                }
            }
        }
        for (int q = 0; q < R->W; q++) {
            emu_finish(&R->e[q], res, a);
            if (sh) emu_msums(&R->e[q]);
        }
        if (sh) reduce_groups(R, 1);
        for (int q = 0; q < R->W; q++) emu_factors(&R->e[q], res, sh, a);
        if (res) break;
        for (int q = 0; q < R->W; q++) {
            emu_usq(&R->e[q], theta, grad, a);
            emu_tsums(&R->e[q], !sh, a);
        }
        if (sh) {
            reduce_groups(R, 0);
            for (int q = 0; q < R->W; q++)
                for (int i = 0; i < R->e[q].n; i++)
                    emu_scalars(&R->e[q], i, R->e[q].sums[i][R->e[q].ncs[i] + 1], R->e[q].sums[i][R->e[q].ncs[i] + 2], a);
        }
    }
    for (int q = 0; q < R->W; q++) {
        Emu* e = &R->e[q];
        for (int k = 0; k < e->plan.ntiles; k++) {
            const RpTile x = emu_tile(e, k);
            if (!a->came) tile_thread_sums(e, &x, el_update, theta, grad, a);
            else if (e->pt[x.tensor].factored) tile_thread_sums(e, &x, el_came_apply, theta, grad, a);
        }
    }
}

static Args make_args(int came, const OptHyper* h, double lr, int step, float clip) {
    Args a;
    memset(&a, 0, sizeof(a));
    a.came = came;
    if (!came) { a.af = adafactor_scalars(h, lr, step); a.eps1 = a.af.eps1; a.b2 = a.af.b2; a.omb2 = a.af.omb2; }
    else { a.cm = came_scalars(h, lr); a.eps1 = a.cm.eps1; a.b2 = a.cm.b2; a.omb2 = a.cm.omb2; }
    a.clip_scale = clip;
    return a;
}

// ---- factored: plan vs CPU, and row shards vs whole ----------------------------------------------------
#define NTF 10
static const size_t F_ROWS[NTF] = { 1, 1, 1, 1, 1, 33, 3, 300, 129, 768 }, F_COLS[NTF] = { 1, 3, 127, 4097, 8193, 65, 5000, 7, 257, 2304 };

static double rel_worst(const float* got, const float* ref, size_t n, double rtol, double atol_rel, const float* before) {
    double mx = 0.0, worst = 0.0;
    for (size_t k = 0; k < n; k++) mx = fmax(mx, fabs(ref[k]));
    for (size_t k = 0; k < n; k++) {
        const double tol = before ? rtol * (fabs(ref[k]) + fabs((double)ref[k] - before[k])) + 1e-30
                                  : rtol * fabs(ref[k]) + atol_rel * mx + 1e-30;
        const double r = fabs((double)got[k] - ref[k]) / tol;
        if (!(r <= worst)) worst = isnan(r) ? INFINITY : fmax(worst, r);
    }
    return worst; // <= 1 passes
}

// Runs 3 steps of the plan (whole tensors) and of the CPU step; returns the worst err/tol over every
// checked array (<= 1 passes); *stat_exact: how many statistics elements were bit-identical of *stat_n.
// sep_grad: the gradient in its own buffer at other offsets than theta (adalomo's per-unit scratch:
// grad_off != param_off): the tensors in reverse order, each after a gap of NaNs (a read at param_off, or
// past a tensor, poisons the result).
static double factored_vs_cpu(int came, int use_beta1, int sep_grad, size_t* stat_exact, size_t* stat_n, char* where, size_t wsz) {
    const Optimizer* opt = came ? &OPT_CAME : &OPT_ADAFACTOR;
    OptHyper h = opt->defaults;
    h.weight_decay = 0.1;
    h.use_beta1 = use_beta1;
    if (use_beta1) h.beta1 = 0.9;
    ParamShape shp[NTF];
    size_t off[NTF], P = 0;
    memset(shp, 0, sizeof(shp));
    for (int i = 0; i < NTF; i++) {
        shp[i].rows = F_ROWS[i]; shp[i].cols = F_COLS[i]; shp[i].numel = F_ROWS[i] * F_COLS[i];
        shp[i].ndim = F_ROWS[i] > 1 ? 2 : 1;
        shp[i].decay = shp[i].ndim == 2 || i == 1;
        off[i] = P;
        P += shp[i].numel;
    }
    Emu e;
    emu_init(&e, came, use_beta1, NTF, F_ROWS, F_COLS, off, NULL, NULL);
    size_t GP = P;
    if (sep_grad) {
        GP = 0;
        for (int i = NTF - 1; i >= 0; i--) { GP += 5 + (size_t)i; e.goff[i] = GP; GP += shp[i].numel; }
        GP += 3;
    }
    float* gbuf = (float*)xmalloc(GP * sizeof(float));
    int gof[NTF];
    for (int i = 0; i < NTF; i++) gof[i] = -1;
    Ranks R = { &e, 1, { gof } };
    float* cpu_state[NTF][OPT_MAX_STATES] = { { NULL } };
    StateSpec specs[NTF][OPT_MAX_STATES];
    int nstate[NTF];
    for (int i = 0; i < NTF; i++) {
        nstate[i] = opt->layout(&h, &shp[i], specs[i]);
        for (int s = 0; s < nstate[i]; s++) cpu_state[i][s] = (float*)xcalloc(specs[i][s].count, sizeof(float));
    }
    Rng r;
    rng_seed(&r, 77);
    float* th_cpu = (float*)xmalloc(P * sizeof(float));
    float* th_emu = (float*)xmalloc(P * sizeof(float));
    float* before = (float*)xmalloc(P * sizeof(float));
    float* grad = (float*)xmalloc(P * sizeof(float));
    float* gs = (float*)xmalloc(P * sizeof(float));
    for (size_t k = 0; k < P; k++) th_cpu[k] = th_emu[k] = 0.05f * rng_normal(&r);
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    double worst = 0.0;
    *stat_exact = *stat_n = 0;
    for (int step = 1; step <= 3; step++) {
        for (size_t k = 0; k < P; k++) grad[k] = 0.1f * rng_normal(&r);
        for (size_t k = 0; k < P; k++) gs[k] = grad[k] * clips[step - 1];
        memcpy(before, th_cpu, P * sizeof(float));
        const double lr = h.lr * lr_scales[step - 1];
        for (int i = 0; i < NTF; i++) {
            OptTensor ot = { &shp[i], th_cpu + off[i], gs + off[i], { 0 } };
            for (int s = 0; s < nstate[i]; s++) ot.state[s] = cpu_state[i][s];
            OptStep st = { step, lr, lr_scales[step - 1], 0, NULL };
            opt->step(&h, &ot, &st);
        }
        const Args a = make_args(came, &h, lr, step, clips[step - 1]);
        if (sep_grad) {
            for (size_t k = 0; k < GP; k++) gbuf[k] = NAN;
            for (int i = 0; i < NTF; i++) memcpy(gbuf + e.goff[i], grad + off[i], shp[i].numel * sizeof(float));
        } else {
            memcpy(gbuf, grad, P * sizeof(float));
        }
        ranks_step(&R, th_emu, gbuf, &a);
        double w = rel_worst(th_emu, th_cpu, P, 1e-5, 0.0, before);
        if (w > worst) { worst = w; snprintf(where, wsz, "step %d master", step); }
        for (int i = 0; i < NTF; i++)
            for (int s = 0; s < nstate[i]; s++) {
                const char* nm = specs[i][s].name;
                const float* mine = !strcmp(nm, "v_row") || !strcmp(nm, "v") ? e.v_row[i] : !strcmp(nm, "v_col") ? e.v_col[i]
                                    : !strcmp(nm, "exp_avg") ? e.m[i] : !strcmp(nm, "res_row") ? e.res_row[i] : e.res_col[i];
                const int stat = !strcmp(nm, "v_row") || !strcmp(nm, "v_col") || !strcmp(nm, "v");
                w = rel_worst(mine, cpu_state[i][s], specs[i][s].count, stat ? 1e-6 : 1e-5, stat ? 0.0 : 1e-6, NULL);
                if (w > worst) { worst = w; snprintf(where, wsz, "step %d tensor %d (%zux%zu) %s", step, i, F_ROWS[i], F_COLS[i], nm); }
                if (stat)
                    for (size_t k = 0; k < specs[i][s].count; k++) { (*stat_n)++; *stat_exact += mine[k] == cpu_state[i][s][k]; }
            }
    }
    for (int i = 0; i < NTF; i++) for (int s = 0; s < nstate[i]; s++) free(cpu_state[i][s]);
    free(th_cpu); free(th_emu); free(before); free(grad); free(gs); free(gbuf);
    emu_free(&e);
    return worst;
}

// Row shards: 33x65 and 768x2304 over 3 ranks (group 0), 300x7 over the last 2 (group 1), 129x257
// whole on rank 2, vectors whole on rank i % 3. Returns the worst ulps of each array's largest value.
static double ulps_of_max(const float* got, const float* ref, size_t n) {
    double mx = 0.0, w = 0.0;
    for (size_t k = 0; k < n; k++) mx = fmax(mx, fabs(ref[k]));
    const double ulp = mx > 0 ? ldexp(1.0, ilogb(mx) - 23) : 1e-45;
    for (size_t k = 0; k < n; k++) w = fmax(w, fabs((double)got[k] - ref[k]) / ulp);
    return w;
}
static double row_shards_vs_whole(int came, char* where, size_t wsz) {
    enum { W = 3 };
    OptHyper h = (came ? &OPT_CAME : &OPT_ADAFACTOR)->defaults;
    h.weight_decay = 0.1;
    h.clip_threshold = came ? 1.0 : 0.5;
    const size_t rows[6] = { 1, 33, 768, 300, 129, 1 }, cols[6] = { 4097, 65, 2304, 7, 257, 3 };
    const int NT = 6;
    size_t off[6], P = 0;
    for (int i = 0; i < NT; i++) { off[i] = P; P += rows[i] * cols[i]; }
    Emu whole, rk[W];
    int gw[6] = { -1, -1, -1, -1, -1, -1 };
    emu_init(&whole, came, 0, NT, rows, cols, off, NULL, NULL);
    Ranks RW = { &whole, 1, { gw } };
    // each rank's pieces
    size_t pr[W][6], pc[W][6], po[W][6], pm[W][6], r0s[W][6];
    int pg[W][6], pidx[W][6], np[W];
    for (int q = 0; q < W; q++) {
        np[q] = 0;
        for (int i = 0; i < NT; i++) {
            size_t a0 = 0, a1 = 0;
            int g = -1;
            if (i == 1 || i == 2) { a0 = rows[i] * q / W; a1 = rows[i] * (q + 1) / W; g = i; }
            else if (i == 3) { if (q >= 1) { a0 = rows[i] * (q - 1) / 2; a1 = rows[i] * q / 2; g = i; } }
            else if (i == 4) { if (q == W - 1) a1 = rows[i]; }
            else if (i % W == q) a1 = rows[i];
            if (a1 == a0) continue;
            const int k = np[q]++;
            pr[q][k] = a1 - a0; pc[q][k] = cols[i]; po[q][k] = off[i] + a0 * cols[i]; pm[q][k] = rows[i];
            r0s[q][k] = a0; pg[q][k] = g; pidx[q][k] = i;
        }
        emu_init(&rk[q], came, 0, np[q], pr[q], pc[q], po[q], pm[q], pg[q]);
        for (int k = 0; k < np[q]; k++) rk[q].decay[k] = rk[q].pt[k].factored || pidx[q][k] == 1; // as the whole run's tensor
    }
    Ranks RS = { rk, W, { pg[0], pg[1], pg[2] } };
    Rng r;
    rng_seed(&r, 82);
    float* tw = (float*)xmalloc(P * sizeof(float));
    float* ts = (float*)xmalloc(P * sizeof(float));
    float* grad = (float*)xmalloc(P * sizeof(float));
    for (size_t k = 0; k < P; k++) tw[k] = ts[k] = 0.05f * rng_normal(&r);
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    double worst = 0.0;
    for (int step = 1; step <= 3; step++) {
        for (size_t k = 0; k < P; k++) grad[k] = 0.1f * rng_normal(&r);
        const Args a = make_args(came, &h, h.lr * lr_scales[step - 1], step, clips[step - 1]);
        ranks_step(&RW, tw, grad, &a);
        ranks_step(&RS, ts, grad, &a);
        double u = ulps_of_max(ts, tw, P);
        if (u > worst) { worst = u; snprintf(where, wsz, "step %d master", step); }
        for (int q = 0; q < W; q++)
            for (int k = 0; k < np[q]; k++) {
                const int i = pidx[q][k];
                if (!rk[q].pt[k].factored) {
                    u = ulps_of_max(rk[q].v_row[k], whole.v_row[i], cols[i] * rows[i]);
                } else {
                    u = fmax(ulps_of_max(rk[q].v_row[k], whole.v_row[i] + r0s[q][k], pr[q][k]), ulps_of_max(rk[q].v_col[k], whole.v_col[i], cols[i]));
                    if (came) u = fmax(u, fmax(ulps_of_max(rk[q].res_row[k], whole.res_row[i] + r0s[q][k], pr[q][k]),
                                             ulps_of_max(rk[q].res_col[k], whole.res_col[i], cols[i])));
                }
                if (rk[q].m[k]) u = fmax(u, ulps_of_max(rk[q].m[k], whole.m[i] + r0s[q][k] * cols[i], pr[q][k] * cols[i]));
                if (u > worst) { worst = u; snprintf(where, wsz, "step %d rank %d tensor %d states", step, q, i); }
            }
    }
    for (int q = 0; q < W; q++) emu_free(&rk[q]);
    emu_free(&whole);
    free(tw); free(ts); free(grad);
    return worst;
}

// ---- Adam-mini: plan vs adam_mini.c ------------------------------------------------------------------
#define NTM 10
static double mini_vs_cpu(char* where, size_t wsz, size_t* vm_exact, size_t* vm_n) {
    const Optimizer* opt = &OPT_ADAM_MINI;
    OptHyper h = opt->defaults;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    const char* names[NTM] = { "h0.attn.qkv.b", "h0.ln1.w", "h0.attn.qkv.w", "h1.attn.qkv.w", "h0.mlp.fc.w", "wte", "wpe", "h0.mlp.fc.b",
                               "h2.attn.qkv.w", "h3.mlp.proj.w" };
    const size_t rows[NTM] = { 1, 1, 36, 48, 33, 4097, 300, 1, 2304, 5 }, cols[NTM] = { 36, 777, 64, 1000, 65, 70, 70, 4097, 768, 3072 };
    const int roles[NTM] = { PARAM_VECTOR, PARAM_VECTOR, PARAM_ATTN_QKV, PARAM_ATTN_QKV, PARAM_MATRIX, PARAM_EMBEDDING, PARAM_EMBEDDING,
                             PARAM_VECTOR, PARAM_ATTN_QKV, PARAM_MATRIX };
    const int heads[NTM] = { 0, 0, 4, 2, 0, 0, 0, 0, 12, 0 };
    ParamShape shp[NTM];
    size_t off[NTM], P = 0;
    memset(shp, 0, sizeof(shp));
    for (int i = 0; i < NTM; i++) {
        shp[i].name = names[i]; shp[i].role = roles[i]; shp[i].heads = heads[i];
        shp[i].rows = rows[i]; shp[i].cols = cols[i]; shp[i].numel = rows[i] * cols[i];
        shp[i].ndim = rows[i] > 1 ? 2 : 1;
        shp[i].decay = shp[i].ndim == 2 || i == 0;
        off[i] = P;
        P += shp[i].numel;
    }
    // the plan (adam_mini.h, as adam_mini_gpu_setup builds it)
    size_t nseg, nitems, nblocks;
    adam_mini_plan(shp, NTM, NULL, &nseg, &nitems, &nblocks, NULL, NULL, NULL, NULL, NULL);
    RpMiniItem* items = (RpMiniItem*)xcalloc(nitems + 1, sizeof(RpMiniItem));
    size_t* bseg0 = (size_t*)xcalloc(nblocks + 1, sizeof(size_t));
    size_t* bnseg = (size_t*)xcalloc(nblocks + 1, sizeof(size_t));
    size_t* blen = (size_t*)xcalloc(nblocks + 1, sizeof(size_t));
    size_t* bten = (size_t*)xcalloc(nblocks + 1, sizeof(size_t));
    size_t* bloc = (size_t*)xcalloc(nblocks + 1, sizeof(size_t));
    adam_mini_plan(shp, NTM, items, &nseg, &nitems, &nblocks, bseg0, bnseg, blen, bten, bloc);
    if (bug == BUG_MINI_SEG_OVERLAP)
        for (size_t s = 1; s < nseg; s++)
            if (items[s].block == items[s - 1].block) { items[s].lo -= RP_VEC; items[s].len += RP_VEC; }
    float* cpu_s[NTM][2];
    float* emu_s[NTM][2];
    StateSpec specs[NTM][OPT_MAX_STATES];
    for (int i = 0; i < NTM; i++) {
        CHECK(opt->layout(&h, &shp[i], specs[i]) == 2);
        for (int s = 0; s < 2; s++) {
            cpu_s[i][s] = (float*)xcalloc(specs[i][s].count, sizeof(float));
            emu_s[i][s] = (float*)xcalloc(specs[i][s].count, sizeof(float));
        }
    }
    Rng r;
    rng_seed(&r, 78);
    float* th_cpu = (float*)xmalloc(P * sizeof(float));
    float* th_emu = (float*)xmalloc(P * sizeof(float));
    float* before = (float*)xmalloc(P * sizeof(float));
    float* grad = (float*)xmalloc(P * sizeof(float));
    float* gs = (float*)xmalloc(P * sizeof(float));
    double* part = (double*)xcalloc(nseg + 1, sizeof(double));
    float* bstep = (float*)xcalloc(nblocks + 1, sizeof(float));
    for (size_t k = 0; k < P; k++) th_cpu[k] = th_emu[k] = 0.05f * rng_normal(&r);
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    double worst = 0.0;
    int exact_ok = 1;
    *vm_exact = *vm_n = 0;
    for (int step = 1; step <= 3; step++) {
        const float cs = clips[step - 1];
        for (size_t k = 0; k < P; k++) grad[k] = 0.1f * (1.0f + (float)(k % 7)) * rng_normal(&r);
        for (size_t k = 0; k < P; k++) gs[k] = grad[k] * cs;
        memcpy(before, th_cpu, P * sizeof(float));
        const double lr = h.lr * lr_scales[step - 1];
        for (int i = 0; i < NTM; i++) {
            OptTensor ot = { &shp[i], th_cpu + off[i], gs + off[i], { cpu_s[i][0], cpu_s[i][1] } };
            OptStep st = { step, lr, lr_scales[step - 1], 0, NULL };
            opt->step(&h, &ot, &st);
        }
        const AdamMiniScalars k = adam_mini_scalars(&h, lr, step);
        // 1. mini_sum_kernel over the segments
        for (size_t s = 0; s < nseg; s++) {
            const RpMiniItem* it = &items[s];
            double per[RP_THREADS];
            for (int tid = 0; tid < RP_THREADS; tid++) {
                double sum = 0.0;
                for (int q = 0;; q++) {
                    const size_t e = rp_flat_group(0, tid, q);
                    if (e >= it->len) break;
                    const int n = rp_group_len(e, it->len);
                    for (int j = 0; j < n; j++) sum += (double)adam_mini_sq(emu_grad(grad, off[it->tensor] + it->lo + e + j, cs));
                }
                per[tid] = sum;
            }
            part[s] = block_sum(per);
        }
        // 2. mini_vmean_kernel
        for (size_t b = 0; b < nblocks; b++) {
            double sum = 0.0;
            for (size_t s = 0; s < bnseg[b]; s++) sum += part[bseg0[b] + s];
            float* vm = emu_s[bten[b]][1] + bloc[b];
            *vm = adam_mini_vmean(&k, *vm, adam_mini_mean(sum, blen[b]));
            bstep[b] = adam_mini_block_step(&k, *vm);
        }
        // 3. mini_update_kernel
        for (size_t si = 0; si < nitems; si++) {
            const RpMiniItem* it = &items[si];
            const int ti = it->tensor;
            float* m = emu_s[ti][0];
            if (it->kind == RP_MINI_SEGITEM) {
                for (int tid = 0; tid < RP_THREADS; tid++)
                    for (int q = 0;; q++) {
                        const size_t e = rp_flat_group(0, tid, q);
                        if (e >= it->len) break;
                        const int n = rp_group_len(e, it->len);
                        for (int j = 0; j < n; j++) {
                            const size_t li = it->lo + e + j;
                            adam_mini_element(&k, shp[ti].decay, &th_emu[off[ti] + li], &m[li], emu_grad(grad, off[ti] + li, cs), bstep[it->block]);
                        }
                    }
                continue;
            }
            float* vmean = emu_s[ti][1];
            for (int w = 0; w < RP_WARPS; w++)
                for (int rr = 0;; rr++) {
                    const size_t row_i = rp_mini_row(w, rr);
                    if (row_i >= it->nrows) break;
                    const size_t row = it->lo + row_i * it->len;
                    double lanes[32];
                    for (int l = 0; l < 32; l++) {
                        double s = 0.0;
                        for (int q = 0;; q++) {
                            const size_t e = rp_mini_row_group(l, q);
                            if (e >= it->len) break;
                            const int n = rp_group_len(e, it->len);
                            for (int j = 0; j < n; j++) s += (double)adam_mini_sq(emu_grad(grad, off[ti] + row + e + j, cs));
                        }
                        lanes[l] = s;
                    }
                    const double s = warp_tree(lanes);
                    const size_t vi = it->block + row_i + (bug == BUG_MINI_VMEAN_INDEX && row_i == 1);
                    const float v = adam_mini_vmean(&k, vmean[vi], adam_mini_mean(s, it->len));
                    vmean[it->block + row_i] = v;
                    const float bs = adam_mini_block_step(&k, v);
                    for (int l = 0; l < 32; l++)
                        for (int q = 0;; q++) {
                            const size_t e = rp_mini_row_group(l, q);
                            if (e >= it->len) break;
                            const int n = rp_group_len(e, it->len);
                            for (int j = 0; j < n; j++) {
                                const size_t li = row + e + j;
                                adam_mini_element(&k, shp[ti].decay, &th_emu[off[ti] + li], &m[li], emu_grad(grad, off[ti] + li, cs), bs);
                            }
                        }
                }
        }
        // 4. the biases (the chunk kernel: elementwise, no reduction)
        for (int i = 0; i < NTM; i++) {
            if (!adam_mini_partition(&shp[i]).adam) continue;
            for (size_t li = 0; li < shp[i].numel; li++)
                adam_mini_adam(&k, shp[i].decay, &th_emu[off[i] + li], &emu_s[i][0][li], &emu_s[i][1][li], emu_grad(grad, off[i] + li, cs));
        }
        // compare: master (1e-6 of theta + 1e-6 of the update), m and the biases' v exact, vmean rtol 1e-6
        for (size_t q = 0; q < P; q++) {
            const double tol = 1e-6 * fabs(th_cpu[q]) + 1e-6 * fabs((double)th_cpu[q] - before[q]) + 1e-30;
            const double rr = fabs((double)th_emu[q] - th_cpu[q]) / tol;
            if (!(rr <= worst)) { worst = isnan(rr) ? INFINITY : rr; snprintf(where, wsz, "step %d master element %zu", step, q); }
        }
        for (int i = 0; i < NTM; i++)
            for (int s = 0; s < 2; s++) {
                const int is_vmean = !strcmp(specs[i][s].name, "vmean");
                for (size_t q = 0; q < specs[i][s].count; q++) {
                    const float c = cpu_s[i][s][q], g = emu_s[i][s][q];
                    if (is_vmean) {
                        (*vm_n)++;
                        *vm_exact += c == g;
                        const double rr = fabs((double)g - c) / (1e-6 * fabs(c) + 1e-30);
                        if (!(rr <= worst)) { worst = isnan(rr) ? INFINITY : rr; snprintf(where, wsz, "step %d %s vmean %zu", step, names[i], q); }
                    } else if (memcmp(&c, &g, sizeof(float)) && exact_ok) {
                        exact_ok = 0;
                        snprintf(where, wsz, "step %d %s %s %zu not bit-exact: %.9g vs %.9g", step, names[i], specs[i][s].name, q, g, c);
                    }
                }
            }
    }
    for (int i = 0; i < NTM; i++) for (int s = 0; s < 2; s++) { free(cpu_s[i][s]); free(emu_s[i][s]); }
    free(items); free(bseg0); free(bnseg); free(blen); free(bten); free(bloc);
    free(th_cpu); free(th_emu); free(before); free(grad); free(gs); free(part); free(bstep);
    return exact_ok ? worst : INFINITY;
}

int main(void) {
    char where[256];
    size_t ex, n;
    // the clean plan
    for (int came = 0; came <= 1; came++)
        for (int b1 = 0; b1 <= !came; b1++) {
            const double w = factored_vs_cpu(came, b1, 0, &ex, &n, where, sizeof(where));
            char why[320];
            snprintf(why, sizeof(why), "worst %.3g of the tolerance at %s", w, where);
            test_check(w <= 1.0, why, "fac plan %s%s: GPU plan emulated vs CPU step, 3 steps, 10 shapes (worst %.2g of tolerance at %s; "
                       "statistics bit-identical %zu of %zu)", came ? "came" : "adafactor", b1 ? " beta1" : "", w, where, ex, n);
        }
    // the gradient at grad_off != param_off (adalomo's unit scratch; adalomo's statistics are adafactor's)
    for (int came = 0; came <= 1; came++) {
        const double w = factored_vs_cpu(came, 0, 1, &ex, &n, where, sizeof(where));
        char why[320];
        snprintf(why, sizeof(why), "worst %.3g of the tolerance at %s", w, where);
        test_check(w <= 1.0, why, "fac plan %s: gradient in its own buffer (grad_off != param_off, NaN gaps) vs CPU step (worst %.2g of "
                   "tolerance at %s; statistics bit-identical %zu of %zu)", came ? "came" : "adafactor", w, where, ex, n);
    }
    for (int came = 0; came <= 1; came++) {
        const double u = row_shards_vs_whole(came, where, sizeof(where));
        char why[320];
        snprintf(why, sizeof(why), "worst %.3g ulps at %s", u, where);
        test_check(u <= 4.0, why, "fac plan %s: -zero 1 row shards (3 ranks, two groups) vs whole, within 4 ulps of the largest (worst %.3g)",
                   came ? "came" : "adafactor", u);
    }
    {
        const double w = mini_vs_cpu(where, sizeof(where), &ex, &n);
        char why[320];
        snprintf(why, sizeof(why), "worst %.3g of the tolerance at %s", w, where);
        test_check(w <= 1.0, why, "mini plan: adam_mini GPU plan emulated vs adam_mini.c, m and biases' v exact, vmean rtol 1e-6 "
                   "(worst %.2g; vmean bit-identical %zu of %zu)", w, ex, n);
    }
    // planted bugs: each must fail
    for (bug = 1; bug < NBUGS; bug++) {
        double w;
        if (bug >= BUG_MINI_VMEAN_INDEX) w = mini_vs_cpu(where, sizeof(where), &ex, &n);
        else w = fmax(factored_vs_cpu(0, 0, 0, &ex, &n, where, sizeof(where)), factored_vs_cpu(1, 0, 0, &ex, &n, where, sizeof(where)));
        char why[320];
        snprintf(why, sizeof(why), "the planted bug passed (worst %.3g of the tolerance)", w);
        test_check(w > 1.0, why, "planted bug caught: %s (worst %.3g of the tolerance)", bug_name[bug], w);
    }
    bug = 0;
    return test_failed_ ? 1 : 0;
}
