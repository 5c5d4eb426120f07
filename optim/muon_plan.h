// optim/muon_plan.h: how the CUDA Muon step (optim/muon.cuh) batches its Newton-Schulz iterations, in plain
// C shared by nvcc and gcc, so that test/test_muon_plan.c runs on the CPU exactly the batches, the buffer
// offsets, the index functions and the GEMM fields the GPU runs (through a host model of
// cublasGemmStridedBatchedEx built on muon.c's own matmul) and compares the result with muon.c bit for bit.
//
// Batches. A Muon matrix (rows, cols) is orthogonalized as X (s, l), s = min(rows, cols), l = max(rows,
// cols), X = u^T when rows > cols (muon.c's transpose rule). The matrices are grouped by (s, l), in the
// order each (s, l) first appears among the Muon matrices in the trainer's order, the members of a group
// in the trainer's order; a group is cut into consecutive batches of at most cap matrices, cap =
// MUON_BATCH_BYTES / (the Newton-Schulz bytes of one matrix, 2 (2 s l + 3 s^2)), at least 1. A batch's
// matrices may differ in orientation (tr), weight decay and shape scale: d12's mlp.fc (3072, 768) and
// mlp.proj (768, 3072) are both (768, 3072) after the rule, one group. The table `mat` lists the matrices
// in batch order: batch b is mat[first, first + count).
// d12 (12 layers, C = 768): groups (768, 2304) qkv x12, (768, 768) attn.proj x12, (768, 3072) mlp.fc and
// mlp.proj x24; per-matrix bytes 10.62 MB, 5.90 MB, 12.98 MB; cap 15, 28, 12 at 160 MiB: 4 batches of 12.
//
// A batch's buffers (the workspace holds one batch at a time; matrix j of the batch at j times the stride):
//   X, BX (count, s, l) bf16, stride s l;  A, cA, T (count, s, s) bf16, stride s^2;
//   part (count, tiles) double, tiles = ceil(s/32) ceil(l/32) per matrix (the same in either orientation);
//   denom (count) float. Each carved for the largest batch, 256-byte aligned, then the cuBLAS workspace.
// d12: X, BX 56.6 MB each, A, cA, T 14.2 MB each, part 0.22 MB: 155.9 MB + 32 MiB of cuBLAS workspace
// (muon_plan_build reports the exact total; test_muon_plan prints it).
//
// One quintic iteration is 6 operations on a whole batch (muon_ns_op): 3 strided-batched GEMMs (bf16 in
// and out, fp32 accumulation, the output rounded to bf16 once) and 3 elementwise passes over the batch's
// contiguous buffers, in muon.c's order:
//   A = X X^T; cA = bf16(c A); T = cA A; cA = bf16(bf16(b A) + T); BX = cA X; X = bf16(bf16(a X) + BX).
#ifndef OPTIM_MUON_PLAN_H
#define OPTIM_MUON_PLAN_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "common/numerics.h"
#include "common/util.h"
#include "optim/muon.h"

#define MUON_TILE 32
#define MUON_BATCH_BYTES ((size_t)160 << 20) // cap on one batch's bf16 Newton-Schulz buffers
#define MUON_ALIGN 256                       // every workspace buffer starts 256-byte aligned

// One Muon matrix, as the kernels see it (the table is copied to the device once, at setup).
typedef struct {
    size_t param_off;   // element offset into the flat parameter / gradient / master buffers
    int rows, cols;     // the parameter (rows, cols)
    int s, l, tr;       // X is (s, l), s = min(rows, cols); tr: X = u^T (rows > cols)
    int decay;          // weight decay applies
    float scale;        // max(1, rows/cols)^0.5, as muon_scalars rounds it
    int index;          // its position among the Muon matrices in the trainer's order
    float* m;           // (rows, cols) momentum_buffer (device; the caller fills it)
} MuonMatrix;

typedef struct {
    int first, count;   // mat[first, first + count)
    int s, l;
    size_t tiles;       // 32x32 tiles per matrix
} MuonBatch;

typedef struct {
    int nmat, nbatch;
    MuonMatrix* mat;    // (nmat) in batch order
    MuonBatch* batch;   // (nbatch)
    size_t max_sl, max_ss, max_tiles; // elements of the largest batch: count s l, count s^2, count tiles
    int max_count;
    size_t off_X, off_BX, off_A, off_cA, off_T, off_part, off_denom, off_blas, total; // workspace bytes
} MuonPlan;

static inline size_t muon_ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
static inline size_t muon_carve(size_t* total, size_t bytes) {
    const size_t off = (*total + MUON_ALIGN - 1) / MUON_ALIGN * MUON_ALIGN;
    *total = off + bytes;
    return off;
}
// The Newton-Schulz buffers of one (s, l) matrix (X, BX, A, cA, T; bf16).
static inline size_t muon_matrix_bytes(size_t s, size_t l) { return 2 * (2 * s * l + 3 * s * s); }

// The plan of n Muon matrices given in the trainer's order (rows, cols, decay, param_off each); cap_bytes:
// MUON_BATCH_BYTES; blas_bytes: the cuBLAS workspace carved at the end. Free with muon_plan_free.
static inline void muon_plan_build(MuonPlan* p, const size_t* rows, const size_t* cols, const int* decay, const size_t* param_off,
                                   int n, size_t cap_bytes, size_t blas_bytes) {
    p->nmat = n;
    p->nbatch = 0;
    p->mat = (MuonMatrix*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(MuonMatrix));
    p->batch = (MuonBatch*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(MuonBatch));
    int* done = (int*)xcalloc((size_t)(n > 0 ? n : 1), sizeof(int));
    p->max_sl = p->max_ss = p->max_tiles = 0;
    p->max_count = 0;
    int k = 0;
    for (int g = 0; g < n; g++) {
        if (done[g]) continue;
        const size_t s = rows[g] < cols[g] ? rows[g] : cols[g], l = rows[g] < cols[g] ? cols[g] : rows[g];
        const size_t per = muon_matrix_bytes(s, l);
        int cap = (int)(cap_bytes / per);
        if (cap < 1) cap = 1;
        MuonBatch* b = NULL; // the group's open batch
        for (int i = g; i < n; i++) {
            const size_t si = rows[i] < cols[i] ? rows[i] : cols[i], li = rows[i] < cols[i] ? cols[i] : rows[i];
            if (done[i] || si != s || li != l) continue;
            if (!b || b->count == cap) {
                b = &p->batch[p->nbatch++];
                b->first = k;
                b->count = 0;
                b->s = (int)s;
                b->l = (int)l;
                b->tiles = muon_ceil_div(s, MUON_TILE) * muon_ceil_div(l, MUON_TILE);
            }
            MuonMatrix* mt = &p->mat[k++];
            mt->param_off = param_off[i];
            mt->rows = (int)rows[i];
            mt->cols = (int)cols[i];
            mt->tr = rows[i] > cols[i];
            mt->s = (int)s;
            mt->l = (int)l;
            mt->decay = decay[i];
            const double ratio = (double)rows[i] / (double)cols[i]; // muon_scalars' shape scale
            mt->scale = (float)sqrt(ratio > 1.0 ? ratio : 1.0);
            mt->index = i;
            mt->m = NULL;
            b->count++;
            done[i] = 1;
        }
    }
    for (int b = 0; b < p->nbatch; b++) {
        const MuonBatch* bt = &p->batch[b];
        const size_t c = (size_t)bt->count, sl = c * bt->s * bt->l, ss = c * bt->s * bt->s, tl = c * bt->tiles;
        if (sl > p->max_sl) p->max_sl = sl;
        if (ss > p->max_ss) p->max_ss = ss;
        if (tl > p->max_tiles) p->max_tiles = tl;
        if (bt->count > p->max_count) p->max_count = bt->count;
    }
    size_t t = 0;
    p->off_X = muon_carve(&t, p->max_sl * 2);
    p->off_BX = muon_carve(&t, p->max_sl * 2);
    p->off_A = muon_carve(&t, p->max_ss * 2);
    p->off_cA = muon_carve(&t, p->max_ss * 2);
    p->off_T = muon_carve(&t, p->max_ss * 2);
    p->off_part = muon_carve(&t, p->max_tiles * sizeof(double));
    p->off_denom = muon_carve(&t, (size_t)p->max_count * sizeof(float));
    p->off_blas = muon_carve(&t, blas_bytes);
    p->total = t;
    free(done);
}

static inline void muon_plan_free(MuonPlan* p) {
    free(p->mat);
    free(p->batch);
    p->mat = NULL;
    p->batch = NULL;
}

// ---- index functions (the kernels and the host model call these) ----------------------------------
// Where element (r, c) of a (rows, cols) parameter lives in its X (s, l): X[c][r] when transposed.
HD static inline size_t muon_x_index(const MuonMatrix* mt, int r, int c) {
    return mt->tr ? (size_t)c * (size_t)mt->rows + (size_t)r : (size_t)r * (size_t)mt->cols + (size_t)c;
}
// Tile t of a matrix (row-major over its 32x32 tiles of the (rows, cols) parameter): its first row, column.
HD static inline void muon_tile_origin(const MuonMatrix* mt, size_t t, int* r0, int* c0) {
    const size_t tx = ((size_t)mt->cols + MUON_TILE - 1) / MUON_TILE;
    *r0 = (int)(t / tx) * MUON_TILE;
    *c0 = (int)(t % tx) * MUON_TILE;
}

// ---- one quintic iteration: 6 operations on a batch -------------------------------------------------
enum { MUON_BUF_X, MUON_BUF_BX, MUON_BUF_A, MUON_BUF_CA, MUON_BUF_T, MUON_BUF_NONE };

typedef struct {
    int gemm;           // 1: C = bf16(op(A) op(B)) per matrix (gemm_rm's row-major terms); 0: elementwise
    // GEMM: C (M, N) = op(A) (M, K) @ op(B) (K, N); ta = 1: A stored (K, M) used transposed; tb likewise
    int M, N, K, a, lda, ta, b, ldb, tb, c, ldc;
    long long sa, sb, sc; // per-matrix strides in elements
    // elementwise: out = bf16(bf16(coef x) + y), or bf16(coef x) when y is MUON_BUF_NONE; n_per elements per matrix
    int out, x, y;
    float coef;
    size_t n_per;
} MuonOp;

#define MUON_NS_OPS 6

static inline MuonOp muon_ns_op(int k, int s, int l) {
    MuonOp o;
    memset(&o, 0, sizeof(o));
    const long long ss = (long long)s * s, sl = (long long)s * l;
    o.y = MUON_BUF_NONE;
    switch (k) {
    case 0: // A (s, s) = X (s, l) @ X^T: the second operand X stored (s, l) = (N, K), used transposed
        o.gemm = 1; o.M = s; o.N = s; o.K = l;
        o.a = MUON_BUF_X; o.lda = l; o.ta = 0; o.b = MUON_BUF_X; o.ldb = l; o.tb = 1; o.c = MUON_BUF_A; o.ldc = s;
        o.sa = sl; o.sb = sl; o.sc = ss;
        break;
    case 1: // cA = bf16(c * A)
        o.out = MUON_BUF_CA; o.x = MUON_BUF_A; o.coef = MUON_NS_C; o.n_per = (size_t)ss;
        break;
    case 2: // T (s, s) = cA (s, s) @ A (s, s)
        o.gemm = 1; o.M = s; o.N = s; o.K = s;
        o.a = MUON_BUF_CA; o.lda = s; o.ta = 0; o.b = MUON_BUF_A; o.ldb = s; o.tb = 0; o.c = MUON_BUF_T; o.ldc = s;
        o.sa = ss; o.sb = ss; o.sc = ss;
        break;
    case 3: // B = bf16(bf16(b * A) + T), into cA
        o.out = MUON_BUF_CA; o.x = MUON_BUF_A; o.y = MUON_BUF_T; o.coef = MUON_NS_B; o.n_per = (size_t)ss;
        break;
    case 4: // BX (s, l) = B (s, s) @ X (s, l)
        o.gemm = 1; o.M = s; o.N = l; o.K = s;
        o.a = MUON_BUF_CA; o.lda = s; o.ta = 0; o.b = MUON_BUF_X; o.ldb = l; o.tb = 0; o.c = MUON_BUF_BX; o.ldc = l;
        o.sa = ss; o.sb = sl; o.sc = sl;
        break;
    default: // X = bf16(bf16(a * X) + BX)
        o.out = MUON_BUF_X; o.x = MUON_BUF_X; o.y = MUON_BUF_BX; o.coef = MUON_NS_A; o.n_per = (size_t)sl;
        break;
    }
    return o;
}

#endif
