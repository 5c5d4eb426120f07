// trainer/zero.c: see zero.h.
#include <string.h>
#include <stdlib.h>
#include "trainer/zero.h"
#include "trainer/dist.h"
#include "common/util.h"

typedef enum { UNIT_ELEMENT, UNIT_QBLOCK, UNIT_TENSOR } ShardUnit;

// Each optimizer's shard unit (zero.h says why).
static ShardUnit shard_unit(const Optimizer* o) {
    static const char* const element[] = { "sgd", "sgdm", "adam", "adamw", "lion", "sophia" };
    static const char* const qblock[] = { "adam8bit", "adamw8bit", "paged_adamw8bit" };
    for (size_t i = 0; i < sizeof(element) / sizeof(element[0]); i++) if (!strcmp(o->name, element[i])) return UNIT_ELEMENT;
    for (size_t i = 0; i < sizeof(qblock) / sizeof(qblock[0]); i++) if (!strcmp(o->name, qblock[i])) return UNIT_QBLOCK;
    return UNIT_TENSOR;
}

const char* zero_unsupported(const Optimizer* opt) {
    if (opt->flags & OPT_FUSED_BACKWARD)
        return "-zero 1 shards optimizer state, but this optimizer updates inside backward and keeps no state worth "
               "sharding (LOMO none, AdaLomo rows + cols per matrix): run it data-parallel without -zero";
    return NULL;
}

// The 8-bit family quantizes a tensor of at least max(min_8bit_size, 4096) elements (optim/adam8bit.c);
// a piece of it must be at least that long and start on a block boundary.
static size_t q8_min_size(const OptHyper* h) { return h->min_8bit_size > 4096 ? (size_t)h->min_8bit_size : 4096; }

// The allowed cut inside tensor (off, n) nearest to x (off <= x <= off + n).
static size_t round_cut(size_t x, size_t off, size_t n, ShardUnit u, const OptHyper* h) {
    size_t best = x - off < off + n - x ? off : off + n; // the tensor's ends are always allowed
    size_t unit = 0, kmax = 0;
    if (u == UNIT_ELEMENT) return x;
    if (u == UNIT_QBLOCK) {
        size_t ms = q8_min_size(h), qb = (size_t)h->qblock;
        if (n < ms) return x;                            // fp32 state: element-wise Adam
        unit = (ms + qb - 1) / qb * qb;                  // whole blocks, at least the quantizing size
        if (n >= 2 * unit) kmax = (n - ms) / unit;       // the last piece is at least ms long too
        if (kmax == 0) return best;
        size_t k = (x - off + unit / 2) / unit;
        if (k < 1) k = 1;
        if (k > kmax) k = kmax;
        size_t c = off + k * unit;
        size_t dc = c > x ? c - x : x - c, db = best > x ? best - x : x - best;
        return dc < db ? c : best;
    }
    return best;
}

void zero_plan_build(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world, int rank) {
    memset(z, 0, sizeof(*z));
    int n = ml->num_tensors;
    z->world = world; z->rank = rank; z->num_tensors = n; z->opt = opt; z->hyper = *h;
    ShardUnit u = shard_unit(opt);
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
        const ModelTensor* p = &ml->tensors[order[t]];
        z->bound[r] = round_cut(x, p->offset, p->shape.numel, u, h);
        if (z->bound[r] < z->bound[r - 1]) z->bound[r] = z->bound[r - 1];
    }
    free(order);
    z->slices = (ZeroSlice*)xcalloc((size_t)world * n, sizeof(ZeroSlice));
    z->index = (int*)xmalloc((size_t)world * n * sizeof(int));
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
            if (b - a < p->shape.numel) { // a piece: a vector of its elements
                s->shape.ndim = 1; s->shape.rows = 1; s->shape.cols = s->shape.numel = b - a;
            }
            z->index[(size_t)r * n + i] = k;
            shapes[k++] = s->shape;
        }
        state_layout_build(&z->layouts[r], opt, h, shapes, k);
    }
    for (int i = 0; i < n; i++) shapes[i] = ml->tensors[i].shape;
    state_layout_build(&z->full, opt, h, shapes, n);
    free(shapes);
}

void zero_plan_free(ZeroPlan* z) {
    for (int r = 0; r < z->world; r++) state_layout_free(&z->layouts[r]);
    state_layout_free(&z->full);
    free(z->layouts); free(z->index); free(z->slices); free(z->bound);
    memset(z, 0, sizeof(*z));
}

// Where rank r's state s of tensor i sits inside the unsharded layout: bytes and byte offset in the
// full buffer, and its own (buffer, offset). A slice starting at element `start` begins where the state
// of the first `start` elements ends: the optimizer's layout of a `start`-element vector says how long
// that is (element-wise: start elements; 8-bit: start/qblock blocks, start being whole blocks).
typedef struct { int nstate; int fbuf[OPT_MAX_STATES], mbuf[OPT_MAX_STATES]; size_t foff[OPT_MAX_STATES], moff[OPT_MAX_STATES], bytes[OPT_MAX_STATES]; } Piece;

static int piece(const ZeroPlan* z, int r, int i, Piece* pc) {
    int k = z->index[(size_t)r * z->num_tensors + i];
    if (k < 0) return 0;
    const ZeroSlice* s = &z->slices[(size_t)r * z->num_tensors + i];
    StateSpec mine[OPT_MAX_STATES], prefix[OPT_MAX_STATES];
    int ns = z->opt->layout(&z->hyper, &s->shape, mine);
    int np = 0;
    if (s->start > 0) {
        ParamShape ps = s->shape;
        ps.ndim = 1; ps.rows = 1; ps.cols = ps.numel = s->start;
        np = z->opt->layout(&z->hyper, &ps, prefix);
        CHECK(np == ns);
    }
    const StateLayout* ml = &z->layouts[r];
    const TensorStates* mt = &ml->tensors[k];
    const TensorStates* ft = &z->full.tensors[i];
    CHECK(mt->nstate == ns && ft->nstate == ns);
    pc->nstate = ns;
    for (int st = 0; st < ns; st++) {
        CHECK(!strcmp(ml->buf_name[mt->buf[st]], z->full.buf_name[ft->buf[st]]) && mt->dtype[st] == ft->dtype[st]);
        if (np) CHECK(!strcmp(prefix[st].name, mine[st].name));
        size_t elt = dtype_size(mine[st].dtype);
        pc->bytes[st] = mine[st].count * elt;
        pc->mbuf[st] = mt->buf[st]; pc->moff[st] = mt->offset[st];
        pc->fbuf[st] = ft->buf[st]; pc->foff[st] = ft->offset[st] + (np ? prefix[st].count * elt : 0);
    }
    return 1;
}

void zero_gather_state(const ZeroPlan* z, void* const* mine, void* const* full) {
    for (int r = 0; r < z->world; r++)
        for (int i = 0; i < z->num_tensors; i++) {
            Piece pc;
            if (!piece(z, r, i, &pc)) continue;
            for (int st = 0; st < pc.nstate; st++) {
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
