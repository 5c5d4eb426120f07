// optim/adam_mini.h: Adam-mini's math, once, for the CPU loop (optim/adam_mini.c) and the CUDA kernels
// (optim/adam_mini.cuh): the partition of a tensor into blocks, the per-step scalars (host, in double,
// rounded to fp32 once: Python floats meeting fp32 tensors), and the per-block and per-element pieces
// (HD: host and device). See adam_mini.c for the algorithm and the partition.
//
// The fused multiply-adds PyTorch's kernels do (lerp, add with alpha) are explicit fmaf calls; every
// other operation is one of optim_common.h's *_RN macros, so nvcc fuses nothing else and the GPU does the
// CPU's operations (adam_mini.c, and this header for gcc, turn implicit contraction off).
#ifndef OPTIM_ADAM_MINI_H
#define OPTIM_ADAM_MINI_H

#include <math.h>
#include <string.h>
#include "common/numerics.h"
#include "common/util.h"
#include "optim/optim_common.h"
#include "optim/reduce_plan.h"

#if !defined(__CUDACC__) && defined(__GNUC__) && !defined(__clang__)
#define ADAM_MINI_NO_CONTRACT 1
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

// ---- the partition --------------------------------------------------------------------------------
// How a tensor is cut into blocks (one vmean each): `head_blocks` blocks of head_numel elements first,
// then blocks of row_numel elements. Every block is a contiguous range of the row-major tensor.
typedef struct {
    int adam;              // per-element v (biases): no blocks
    size_t nblocks;
    size_t head_blocks, head_numel;
    size_t row_numel;
} MiniPartition;

static inline int adam_mini_name_ends_with(const char* name, const char* suffix) {
    if (!name) return 0;
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

// The official partition in our model (adam_mini.c's header says which tensor gets which).
static inline MiniPartition adam_mini_partition(const ParamShape* s) {
    MiniPartition q = { 0, 1, 0, 0, s->numel };
    if (s->ndim == 1 || s->role == PARAM_VECTOR) {
        q.adam = adam_mini_name_ends_with(s->name, ".b");          // biases: Adam; gains: one block
        return q;
    }
    if (s->role == PARAM_ATTN_QKV) {
        CHECK(s->heads > 0 && s->rows % 3 == 0 && (s->rows / 3) % (size_t)s->heads == 0);
        q.head_blocks = 2 * (size_t)s->heads;                      // q heads, then k heads
        q.head_numel = s->rows / 3 / (size_t)s->heads * s->cols;
        q.row_numel = s->cols;                                     // then v, per row
        q.nblocks = q.head_blocks + s->rows / 3;
        return q;
    }
    if (s->role == PARAM_EMBEDDING && !(s->name && strstr(s->name, "wte"))) return q;  // wpe: one block
    q.row_numel = s->cols;                                         // per row (output neuron, token)
    q.nblocks = s->rows;
    return q;
}

// Block b's element range [lo, lo + len) inside its tensor.
HD static inline void adam_mini_block_range(const MiniPartition* q, size_t b, size_t* lo, size_t* len) {
    if (b < q->head_blocks) { *lo = b * q->head_numel; *len = q->head_numel; return; }
    *lo = q->head_blocks * q->head_numel + (b - q->head_blocks) * q->row_numel;
    *len = q->row_numel;
}

// ---- the scalars ----------------------------------------------------------------------------------
typedef struct {
    float lr;
    float decay;            // 1 - lr*wd
    int decays;             // wd > 0: the official code multiplies only then (and the tensor is marked decay)
    float beta2;
    float one_minus_beta1;  // lerp weight of m
    float one_minus_beta2;
    float bc2_sqrt;         // sqrt(1 - beta2^t)
    float inv_bc1;          // 1 / (1 - beta1^t), the block branches' (1 / bias_correction_1)
    float step_size;        // lr / (1 - beta1^t), the Adam branch's
    float eps;
} AdamMiniScalars;

// This step's scalars: lr the scheduled learning rate, t the step (1-based). wd is the fp32 the
// official group's weight_decay becomes before 1 - lr*wd is formed in double.
static inline AdamMiniScalars adam_mini_scalars(const OptHyper* h, double lr, int t) {
    AdamMiniScalars k;
    const float wd = (float)h->weight_decay;
    const double bc1 = 1.0 - pow((double)h->beta1, (double)t);
    const double bc2 = 1.0 - pow((double)h->beta2, (double)t);
    k.lr = (float)lr;
    k.decay = optim_decay_factor(lr, wd);
    k.decays = wd > 0.0f;
    k.beta2 = (float)h->beta2;
    k.one_minus_beta1 = optim_one_minus(h->beta1);
    k.one_minus_beta2 = optim_one_minus(h->beta2);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.inv_bc1 = (float)(1.0 / bc1);
    k.step_size = (float)(lr / bc1);
    k.eps = (float)h->eps;
    return k;
}

// ---- per block and per element --------------------------------------------------------------------
// torch.lerp(self, end, w) with a scalar weight as PyTorch's kernels evaluate it: one fused multiply-add
// from the nearer end (see muon_lerp in optim/muon.h).
HD static inline float adam_mini_lerp(float self, float end, float w) {
    const float diff = FSUB_RN(end, self);
    return fabsf(w) < 0.5f ? fmaf(w, diff, self) : fmaf(FSUB_RN(w, 1.0f), diff, end);
}

// A block's mean(g^2) from the double sum of its fp32 squares g*g (the order of the sum is the caller's:
// a double sum of up to 2^20 fp32 squares rounds to the same fp32 in any order but for near-ties).
HD static inline float adam_mini_sq(float g) { return FMUL_RN(g, g); }
HD static inline float adam_mini_mean(double sum, size_t len) { return FDIV_RN((float)sum, (float)len); }

// vmean.mul_(beta2).add_(mean_g2, alpha=1 - beta2) for one block (add with alpha: one fused multiply-add).
HD static inline float adam_mini_vmean(const AdamMiniScalars* k, float vmean, float mean_g2) {
    return fmaf(k->one_minus_beta2, mean_g2, FMUL_RN(vmean, k->beta2));
}

// The block's step multiplier (1 / bc1) / (sqrt(vmean) / sqrt(bc2) + eps).
HD static inline float adam_mini_block_step(const AdamMiniScalars* k, float vmean) {
    return FDIV_RN(k->inv_bc1, FADD_RN(FDIV_RN(FSQRT_RN(vmean), k->bc2_sqrt), k->eps));
}

// One element of a block: decay (decays: the tensor's mark), m.lerp_(g, 1 - beta1),
// p -= (m * stepsize) * lr.
HD static inline void adam_mini_element(const AdamMiniScalars* k, int decays, float* p, float* m, float g, float block_step) {
    float th = *p;
    if (decays && k->decays) th = FMUL_RN(th, k->decay);
    const float mi = adam_mini_lerp(*m, g, k->one_minus_beta1);
    *m = mi;
    *p = FSUB_RN(th, FMUL_RN(FMUL_RN(mi, block_step), k->lr));
}

// One element of an Adam block (biases): v.mul_(beta2).addcmul_(g, g, value=1 - beta2), decay,
// m.lerp_(g, 1 - beta1), p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1).
HD static inline void adam_mini_adam(const AdamMiniScalars* k, int decays, float* p, float* m, float* v, float g) {
    const float vi = FADD_RN(FMUL_RN(*v, k->beta2), FMUL_RN(FMUL_RN(k->one_minus_beta2, g), g));
    *v = vi;
    float th = *p;
    if (decays && k->decays) th = FMUL_RN(th, k->decay);
    const float mi = adam_mini_lerp(*m, g, k->one_minus_beta1);
    *m = mi;
    const float denom = FADD_RN(FDIV_RN(FSQRT_RN(vi), k->bc2_sqrt), k->eps);
    *p = FADD_RN(th, FDIV_RN(FMUL_RN(-k->step_size, mi), denom));
}

// ---- the GPU work plan (optim/adam_mini.cuh; emulated by test/test_optim_fac_plan.c) ------------------
// Whether block b of a tensor is one row of it (a ROW item's block): the per-row part of a matrix.
static inline int adam_mini_row_block(const MiniPartition* q, const ParamShape* s, size_t b) {
    return b >= q->head_blocks && s->ndim == 2 && s->rows > 1 && q->row_numel == s->cols;
}

static inline RpMiniItem adam_mini_item(int tensor, int kind, size_t lo, size_t len, size_t nrows, size_t block) {
    RpMiniItem it;
    it.tensor = tensor; it.kind = kind; it.lo = lo; it.len = len; it.nrows = nrows; it.block = block;
    return it;
}

// The work table (reduce_plan.h): the segments of the multi-row blocks first (blocks numbered in that
// order: block_* per block, may be NULL), then the row items. items NULL: counts only.
static inline void adam_mini_plan(const ParamShape* shapes, int n, RpMiniItem* items, size_t* nseg, size_t* nitems, size_t* nblocks,
                                  size_t* block_seg0, size_t* block_nseg, size_t* block_len, size_t* block_tensor, size_t* block_local) {
    size_t s = 0, k = 0;
    for (int i = 0; i < n; i++) {
        const MiniPartition q = adam_mini_partition(&shapes[i]);
        if (q.adam) continue;
        for (size_t b = 0; b < q.nblocks; b++) {
            if (adam_mini_row_block(&q, &shapes[i], b)) continue;
            size_t lo, len;
            adam_mini_block_range(&q, b, &lo, &len);
            if (block_seg0) { block_seg0[k] = s; block_len[k] = len; block_tensor[k] = (size_t)i; block_local[k] = b; }
            for (size_t e = 0; e < len; e += RP_MINI_SEG, s++)
                if (items) items[s] = adam_mini_item(i, RP_MINI_SEGITEM, lo + e, len - e < RP_MINI_SEG ? len - e : RP_MINI_SEG, 1, k);
            if (block_nseg) block_nseg[k] = s - block_seg0[k];
            k++;
        }
    }
    *nseg = s;
    *nblocks = k;
    for (int i = 0; i < n; i++) {
        const MiniPartition q = adam_mini_partition(&shapes[i]);
        if (q.adam || q.nblocks <= q.head_blocks || !adam_mini_row_block(&q, &shapes[i], q.head_blocks)) continue;
        const size_t first = q.head_blocks * q.head_numel / shapes[i].cols; // the first per-row row
        for (size_t r = first; r < shapes[i].rows; r += RP_MINI_ROWS, s++)
            if (items)
                items[s] = adam_mini_item(i, RP_MINI_ROWITEM, r * shapes[i].cols, shapes[i].cols,
                                          shapes[i].rows - r < RP_MINI_ROWS ? shapes[i].rows - r : RP_MINI_ROWS, q.head_blocks + (r - first));
    }
    *nitems = s;
}

#ifdef ADAM_MINI_NO_CONTRACT
#pragma GCC pop_options
#undef ADAM_MINI_NO_CONTRACT
#endif

#endif
