// trainer/zero.c: see zero.h.
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include "trainer/zero.h"
#include "trainer/dist.h"
#include "common/util.h"

const char* zero_unsupported(const Optimizer* opt) {
    if (opt->flags & OPT_FUSED_BACKWARD)
        return "-zero 1 shards optimizer state, but this optimizer updates inside backward and keeps no state worth "
               "sharding (LOMO none, AdaLomo rows + cols per matrix): run it data-parallel without -zero";
    return NULL;
}

// The 8-bit family quantizes a tensor of at least max(min_8bit_size, 4096) elements (optim/adam8bit.c);
// a piece of it must be at least that long and start on a block boundary.
static size_t q8_min_size(const OptHyper* h) { return h->min_8bit_size > 4096 ? (size_t)h->min_8bit_size : 4096; }

static size_t absdiff(size_t a, size_t b) { return a > b ? a - b : b - a; }

// The allowed cut inside tensor p (offset off, n elements; off <= x <= off + n) nearest to x.
static size_t round_cut(size_t x, const ModelTensor* p, OptShardUnit u, const OptHyper* h) {
    size_t off = p->offset, n = p->shape.numel;
    size_t best = x - off < off + n - x ? off : off + n; // the tensor's ends are always allowed
    size_t unit = 0, kmin = 1, kmax = 0;
    switch (u) {
    case OPT_SHARD_ELEMENT: return x;
    case OPT_SHARD_QBLOCK: {
        size_t ms = q8_min_size(h), qb = (size_t)h->qblock;
        if (n < ms) return x;                            // fp32 state: element-wise
        unit = (ms + qb - 1) / qb * qb;                  // whole blocks, at least the quantizing size
        if (n >= 2 * unit) kmax = (n - ms) / unit;       // the last piece is at least ms long too
        break;
    }
    case OPT_SHARD_ROWS:
        if (p->shape.ndim < 2) return best;              // vectors stay whole (their v is full)
        unit = p->shape.cols;                            // whole rows
        kmax = p->shape.rows - 1;
        break;
    default: return best;                                // whole tensors
    }
    if (kmax < kmin) return best;
    size_t k = (x - off + unit / 2) / unit;
    if (k < kmin) k = kmin;
    if (k > kmax) k = kmax;
    size_t c = off + k * unit;
    return absdiff(c, x) < absdiff(best, x) ? c : best;
}

void zero_plan_build(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world, int rank) {
    zero_plan_build_unit(z, ml, opt, h, world, rank, opt->shard);
}

void zero_plan_build_unit(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world,
                          int rank, OptShardUnit u) {
    memset(z, 0, sizeof(*z));
    int n = ml->num_tensors;
    CHECK(world >= 1 && rank >= 0 && rank < world);
    z->world = world; z->rank = rank; z->num_tensors = n; z->opt = opt; z->hyper = *h;
    size_t P = ml->num_params;
    // the tensors in flat order (the optimizer's tensor order is by unit, not by offset)
    int* order = (int*)xmalloc(n * sizeof(int));
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ml->tensors[order[j]].offset < ml->tensors[order[j - 1]].offset; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    z->bound = (size_t*)xmalloc((world + 1) * sizeof(size_t));
    z->bound[0] = 0;
    z->bound[world] = P;
    for (int r = 1; r < world; r++) {
        size_t x = P / world * r + (P % world) * r / world;
        int t = 0;
        while (t + 1 < n && ml->tensors[order[t]].offset + ml->tensors[order[t]].shape.numel <= x) t++;
        z->bound[r] = round_cut(x, &ml->tensors[order[t]], u, h);
        if (z->bound[r] < z->bound[r - 1]) z->bound[r] = z->bound[r - 1];
    }
    free(order);
    z->slices = (ZeroSlice*)xcalloc((size_t)world * n, sizeof(ZeroSlice));
    z->index = (int*)xmalloc((size_t)world * n * sizeof(int));
    z->first = (int*)xmalloc(n * sizeof(int));
    z->last = (int*)xmalloc(n * sizeof(int));
    for (int i = 0; i < n; i++) { z->first[i] = world; z->last[i] = -1; }
    z->layouts = (StateLayout*)xcalloc(world, sizeof(StateLayout));
    ParamShape* shapes = (ParamShape*)xcalloc(n, sizeof(ParamShape));
    for (int r = 0; r < world; r++) {
        int k = 0;
        for (int i = 0; i < n; i++) {
            const ModelTensor* p = &ml->tensors[i];
            size_t a = p->offset > z->bound[r] ? p->offset : z->bound[r];
            size_t b = p->offset + p->shape.numel < z->bound[r + 1] ? p->offset + p->shape.numel : z->bound[r + 1];
            ZeroSlice* s = &z->slices[(size_t)r * n + i];
            s->shape = p->shape;
            z->index[(size_t)r * n + i] = -1;
            if (b <= a) { s->shape.numel = s->shape.rows = s->shape.cols = 0; continue; }
            s->start = a - p->offset;
            if (b - a < p->shape.numel) {
                if (u == OPT_SHARD_ROWS) { // a matrix of its rows (the cuts are on row boundaries)
                    CHECK(p->shape.ndim == 2 && s->start % p->shape.cols == 0 && (b - a) % p->shape.cols == 0);
                    s->shape.rows = (b - a) / p->shape.cols;
                    s->shape.numel = b - a;
                } else {                   // a vector of its elements
                    s->shape.ndim = 1; s->shape.rows = 1; s->shape.cols = s->shape.numel = b - a;
                }
            }
            if (r < z->first[i]) z->first[i] = r;
            z->last[i] = r;
            z->index[(size_t)r * n + i] = k;
            shapes[k++] = s->shape;
        }
        state_layout_build(&z->layouts[r], opt, h, shapes, k);
    }
    // a matrix split in rows is shared: its steps reduce over the ranks that hold it
    for (int r = 0; r < world; r++)
        for (int i = 0; i < n; i++)
            z->slices[(size_t)r * n + i].shared = u == OPT_SHARD_ROWS && z->index[(size_t)r * n + i] >= 0 && z->first[i] < z->last[i];
    for (int i = 0; i < n; i++) shapes[i] = ml->tensors[i].shape;
    state_layout_build(&z->full, opt, h, shapes, n);
    z->shapes = shapes;
}

void zero_plan_free(ZeroPlan* z) {
    for (int r = 0; r < z->world; r++) state_layout_free(&z->layouts[r]);
    state_layout_free(&z->full);
    free(z->layouts); free(z->index); free(z->slices); free(z->bound); free(z->first); free(z->last); free(z->shapes);
    memset(z, 0, sizeof(*z));
}

size_t zero_rank_bytes(const ZeroPlan* z, int r, int bf16) {
    return (bf16 ? zero_count(z, r) * sizeof(float) : 0) + z->layouts[r].total_bytes;
}

int zero_largest_rank(const ZeroPlan* z, int bf16) {
    int best = 0;
    for (int r = 1; r < z->world; r++) if (zero_rank_bytes(z, r, bf16) > zero_rank_bytes(z, best, bf16)) best = r;
    return best;
}

void zero_print_shard(FILE* f, const ZeroPlan* z, size_t num_params, int q, int bf16) {
    int big = zero_largest_rank(z, bf16);
    fprintf(f, "rank %d/%d: -zero 1 shard of params [%zu, %zu) = %zu of %zu, fp32 master %zu bytes, optimizer state %zu bytes of %zu "
            "(largest rank %d: %zu sharded bytes)\n", q, z->world, z->bound[q], z->bound[q + 1], zero_count(z, q), num_params,
            bf16 ? zero_count(z, q) * sizeof(float) : 0, z->layouts[q].total_bytes, z->full.total_bytes, big, zero_rank_bytes(z, big, bf16));
}

void zero_unit_cuts(const ZeroPlan* z, const ModelLayout* ml, int unit, size_t* cuts) {
    size_t size = ml->unit_size[unit == 0 ? 0 : 1];
    for (int r = 0; r <= z->world; r++) {
        size_t b = z->bound[r], cut = size, prev = 0;
        for (int i = 0; i < ml->num_tensors; i++) {
            const ModelTensor* p = &ml->tensors[i];
            if (p->unit != unit) continue;
            CHECK(p->offset >= prev); // the unit's tensors lie in flat order in the scratch too
            prev = p->offset;
            if (b <= p->offset) { cut = p->scratch_offset; break; }
            if (b < p->offset + p->shape.numel) { cut = p->scratch_offset + (b - p->offset); break; }
        }
        cuts[r] = cut;
    }
}

// OptReduce.sum for a matrix shared by a group of ranks (trainer/dist.h: in rank order, equal bits on each).
static void zero_group_sum(const OptReduce* r, double* buf, size_t n) { dist_group_sum_f64((const DistGroup*)r->ctx, buf, n); }

void zero_reduce_connect(ZeroReduce* zr, const ZeroPlan* z) {
    int n = z->num_tensors;
    zr->num_tensors = n;
    zr->groups = (DistGroup**)xcalloc((size_t)n, sizeof(DistGroup*));
    zr->reduce = (OptReduce*)xcalloc((size_t)n, sizeof(OptReduce));
    for (int i = 0; i < n; i++) {
        // a matrix split in rows (the plan marks its slices shared on every rank that holds one; every rank
        // holds every rank's slices, so all agree on which groups to create)
        if (z->world < 2 || z->first[i] >= z->last[i] || !z->slices[(size_t)z->first[i] * n + i].shared) continue;
        zr->groups[i] = dist_group_new(z->first[i], z->last[i]);
        zr->reduce[i] = (OptReduce){ z->shapes[i].rows, zero_group_sum, zr->groups[i] };
    }
}

const OptReduce* zero_reduce_of(const ZeroReduce* zr, const ZeroPlan* z, int i) {
    return zr && zr->groups && zr->groups[i] && zero_slice(z, i)->shared ? &zr->reduce[i] : NULL;
}

void zero_reduce_free(ZeroReduce* zr) {
    if (zr->groups) for (int i = 0; i < zr->num_tensors; i++) dist_group_free(zr->groups[i]);
    free(zr->groups);
    free(zr->reduce);
    memset(zr, 0, sizeof(*zr));
}

// Where rank r's state s of tensor i sits inside the unsharded layout: bytes and byte offset in the
// full buffer, and its own (buffer, offset). A vector slice starting at element `start` begins where the
// state of the first `start` elements ends: the optimizer's layout of a `start`-element vector says how
// long that is (element-wise: start elements; 8-bit: start/qblock blocks, start being whole blocks). A
// row slice's states are either per row (their count grows with the rows: v_row, exp_avg) and begin
// after the first row0 rows' share, or per column (v_col, res_col: the same count at any rows), which
// every sharing rank holds whole: `replicated`, gathered from the lowest sharing rank.
typedef struct {
    int nstate;
    int fbuf[OPT_MAX_STATES], mbuf[OPT_MAX_STATES], replicated[OPT_MAX_STATES];
    size_t foff[OPT_MAX_STATES], moff[OPT_MAX_STATES], bytes[OPT_MAX_STATES];
} Piece;

static int piece(const ZeroPlan* z, int r, int i, Piece* pc) {
    int k = z->index[(size_t)r * z->num_tensors + i];
    if (k < 0) return 0;
    const ZeroSlice* s = &z->slices[(size_t)r * z->num_tensors + i];
    const ParamShape* whole = &z->shapes[i];
    const int rows = s->shape.ndim == 2 && s->shape.numel < whole->numel; // a row slice
    StateSpec mine[OPT_MAX_STATES], a[OPT_MAX_STATES], b[OPT_MAX_STATES];
    int ns = z->opt->layout(&z->hyper, &s->shape, mine);
    int np = 0;
    if (rows) { // the layouts of one and of two rows tell per-row states from per-column ones
        ParamShape one = s->shape, two = s->shape;
        one.rows = 1; one.numel = one.cols;
        two.rows = 2; two.numel = 2 * two.cols;
        CHECK(z->opt->layout(&z->hyper, &one, a) == ns && z->opt->layout(&z->hyper, &two, b) == ns);
    } else if (s->start > 0) {
        ParamShape ps = s->shape;
        ps.ndim = 1; ps.rows = 1; ps.cols = ps.numel = s->start;
        np = z->opt->layout(&z->hyper, &ps, a);
        CHECK(np == ns);
    }
    const StateLayout* ml = &z->layouts[r];
    const TensorStates* mt = &ml->tensors[k];
    const TensorStates* ft = &z->full.tensors[i];
    CHECK(mt->nstate == ns && ft->nstate == ns);
    pc->nstate = ns;
    for (int st = 0; st < ns; st++) {
        CHECK(!strcmp(ml->buf_name[mt->buf[st]], z->full.buf_name[ft->buf[st]]) && mt->dtype[st] == ft->dtype[st]);
        size_t elt = dtype_size(mine[st].dtype), before = 0;
        pc->replicated[st] = 0;
        if (rows) {
            CHECK(!strcmp(a[st].name, mine[st].name) && !strcmp(b[st].name, mine[st].name));
            if (b[st].count == a[st].count) pc->replicated[st] = 1;             // per column: whole here
            else {
                CHECK(b[st].count == 2 * a[st].count && mine[st].count == s->shape.rows * a[st].count);
                before = s->start / s->shape.cols * a[st].count;                 // the rows above this slice
            }
        } else if (np) {
            CHECK(!strcmp(a[st].name, mine[st].name));
            before = a[st].count;
        }
        pc->bytes[st] = mine[st].count * elt;
        pc->mbuf[st] = mt->buf[st]; pc->moff[st] = mt->offset[st];
        pc->fbuf[st] = ft->buf[st]; pc->foff[st] = ft->offset[st] + before * elt;
    }
    return 1;
}

void zero_gather_state(const ZeroPlan* z, void* const* mine, void* const* full) {
    for (int r = 0; r < z->world; r++)
        for (int i = 0; i < z->num_tensors; i++) {
            Piece pc;
            if (!piece(z, r, i, &pc)) continue;
            for (int st = 0; st < pc.nstate; st++) {
                if (pc.replicated[st] && r != z->first[i]) continue; // equal on every sharing rank: one copy
                char* dst = (char*)full[pc.fbuf[st]] + pc.foff[st];
                if (r == z->rank) memcpy(dst, (char*)mine[pc.mbuf[st]] + pc.moff[st], pc.bytes[st]);
                dist_bcast(dst, pc.bytes[st], r);
            }
        }
}

void zero_scatter_state(const ZeroPlan* z, void* const* full, void* const* mine) {
    for (int i = 0; i < z->num_tensors; i++) {
        Piece pc;
        if (!piece(z, z->rank, i, &pc)) continue;
        for (int st = 0; st < pc.nstate; st++)
            memcpy((char*)mine[pc.mbuf[st]] + pc.moff[st], (char*)full[pc.fbuf[st]] + pc.foff[st], pc.bytes[st]);
    }
}
