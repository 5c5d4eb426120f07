// optim/adamw4bit.c: 4-bit AdamW (`-opt adamw4bit`) of Li, Chen & Zhu 2023, "Memory Efficient Optimizers
// with 4-bit States" (NeurIPS 2023, arXiv 2309.01507), as the official thu-ml/low-bit-optimizers
// (lpmm.optim.AdamW, non-fused path `_single_tensor_adamw4bit`) computes it with its default
// configuration (lpmm/configs/default.yml: both moments 4 bits, nearest rounding).
//
// State of a tensor with more than 4096 elements (optim/quant4.h has the maps and the packing):
//   m: blockwise, one fp32 scale = max |m| per block of 128 consecutive elements (the flattened tensor;
//      lpmm's "group" scaling, GROUP_SIZE 128), 4-bit codes of m / scale in the signed dynamic map.
//   v: rank-1 normalization for a matrix (lpmm's "rank1": row maxima r[i] = max_j v[i][j] and column
//      maxima c[j] = max_i v[i][j], the scale of v[i][j] being min(r[i], c[j])), blockwise by 128 for a
//      vector (what "rank1" does in lpmm for 1-D tensors); 4-bit codes of v / scale in the linear map
//      without zero (k/16, k = 1..16).
//   names: m_q4, v_q4 (u8, two codes per byte), m_scale (f32, ceil(n/128)), and v_row (rows), v_col
//   (cols) for a matrix or v_scale (ceil(n/128)) for a vector.
//   bytes/param = 0.5 + 0.5 + 4/128 + 4 (rows + cols) / (rows * cols): 1.042 for a 768 x 768 matrix,
//   1.0445 over GPT-2 d12 (ledger). Tensors with numel <= 4096 keep fp32 exp_avg and exp_avg_sq
//   (8 B/param): lpmm's THRESHOLD (a tensor is quantized when numel > 4096; `_get_qenable_fn`).
//   lpmm quantizes 1-D tensors above the threshold too (its dim >= 2 test is commented out), and so
//   do we.
// All state starts as zero bytes: a code with scale 0 decodes to 0, as lpmm's first step starts from
// torch.zeros.
//
// The step, in lpmm's order (fp32 elementwise; scalars from Python floats, see adamw4bit.h):
//   p = p * (1 - lr*wd)                                  decoupled decay, BEFORE the update (lpmm
//                                                         decays every tensor in the group; here the
//                                                         trainer's decay mask applies, lr is scheduled)
//   m, v = decode(codes, old scales)                     dequantize
//   m = lerp(m, g, 1 - beta1)                            torch.lerp_, not mul_/add_
//   v = v*beta2 + (1 - beta2)*g*g
//   p = p - lr/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps)     from the fp32 m, v of this step
//   scales from the UPDATED m, v (block max, or row/column max); codes = nearest(x / scale)  requantize
// Only what is kept for the next step is 4-bit; the update itself uses full-precision moments.
//
// Choices we made: lpmm's fused CUDA path (fused=True) supports only blockwise scaling for both moments
// (it warns and falls back for rank-1); we follow the non-fused path, which is the paper's algorithm.
// lpmm's quantization kernel rounds to nearest with a tie going DOWN (towards the lower code); we do
// the same. Its library defaults (lpmm/config.py) scale v blockwise; its shipped configs/default.yml
// (the paper's 4-bit AdamW) uses rank-1, which we follow. A NaN gradient propagates into m, v and p
// as in lpmm; it is counted in OptStep.nonfinite.
//
// Defaults (lpmm.optim.AdamW): lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2.
#include <stdlib.h>
#include <string.h>
#include "common/util.h"

// No fused multiply-adds: the step matches the test's PyTorch transcription operation by operation, and
// the CUDA kernels (optim/adamw4bit.cuh), which call adamw4bit.h's functions, do the same operations.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim_common.h"
#include "adamw4bit.h"   // after the pragma: the header's functions inline into the loops below

#define A4_CHUNKS 16  // fixed row chunks of the column maxima (max is exact: results never depend on threads)

static int a4_quantized(const ParamShape* s) { return s->numel > A4_THRESHOLD; }
static size_t a4_blocks(size_t n) { return (n + A4_BLOCK - 1) / A4_BLOCK; }

static int adamw4bit_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    (void)h;
    if (!a4_quantized(s)) {
        out[0] = optim_spec("exp_avg", DT_F32, s->numel);
        out[1] = optim_spec("exp_avg_sq", DT_F32, s->numel);
        return 2;
    }
    out[0] = optim_spec("m_q4", DT_U8, q4_bytes(s->numel));
    out[1] = optim_spec("v_q4", DT_U8, q4_bytes(s->numel));
    out[2] = optim_spec("m_scale", DT_F32, a4_blocks(s->numel));
    if (s->ndim == 2) {
        out[3] = optim_spec("v_row", DT_F32, s->rows);
        out[4] = optim_spec("v_col", DT_F32, s->cols);
        return 5;
    }
    out[3] = optim_spec("v_scale", DT_F32, a4_blocks(s->numel));
    return 4;
}

#ifdef _OPENMP
#define A4_PARALLEL_FOR(n) \
    OPTIM_PRAGMA_(omp parallel for schedule(static) reduction(+ : nonfinite) if ((n) >= OPTIM_OMP_MIN_NUMEL))
#else
#define A4_PARALLEL_FOR(n)
#endif

// The quantized tensor and its old and new scales.
typedef struct {
    size_t n, rows, cols;
    int rank1;                 // v scaled by row/column maxima (a matrix) rather than by blocks
    const uint8_t* mq;         // (n/2) m codes (read; rewritten in place block by block)
    const uint8_t* vq;         // (n/2) v codes
    const float* m_scale;      // (nblocks) old
    const float* v_a;          // old: v_row (rows) for rank1, v_scale (nblocks) otherwise
    const float* v_b;          // old: v_col (cols) for rank1
    float* m_scale_new;        // (nblocks)
    float* v_a_new;            // (rows) or (nblocks)
    float* v_b_new;            // (cols)
    const Q4Map* mmap;
    const Q4Map* vmap;
} A4Tensor;

// Old v of element i at (row, col) (a vector: row 0, col = i).
static inline float a4_v_old(const A4Tensor* q, size_t i, size_t row, size_t col) {
    const float scale = q->rank1 ? a4_rank1_scale(q->v_a[row], q->v_b[col]) : q->v_a[i / A4_BLOCK];
    return a4_decode(q->vmap, q4_get(q->vq, i), scale);
}

// Rank-1 statistics of the new v: row maxima and column maxima, over fixed row chunks.
static void a4_rank1_stats(const Adam4Scalars* k, const A4Tensor* q, const float* grad) {
    const size_t rows = q->rows, cols = q->cols;
    const int nchunks = rows < A4_CHUNKS ? (int)rows : A4_CHUNKS;
    float* part = (float*)xcalloc((size_t)nchunks * cols, sizeof(float));  // (nchunks, cols)
    OPTIM_PARALLEL_FOR(q->n)
    for (int c = 0; c < nchunks; c++) {
        float* cm = part + (size_t)c * cols;
        for (size_t i = rows * c / nchunks; i < rows * (c + 1) / nchunks; i++) {
            float rm = 0.0f;
            for (size_t j = 0; j < cols; j++) {
                const size_t e = i * cols + j;
                float m = 0.0f, v = a4_v_old(q, e, i, j);  // m is not needed here
                adamw4bit_moments(k, grad[e], &m, &v);
                const float a = fabsf(v);
                if (a > rm) rm = a;
                if (a > cm[j]) cm[j] = a;
            }
            q->v_a_new[i] = rm;
        }
    }
    for (size_t j = 0; j < cols; j++) {
        float mx = 0.0f;
        for (int c = 0; c < nchunks; c++) if (part[(size_t)c * cols + j] > mx) mx = part[(size_t)c * cols + j];
        q->v_b_new[j] = mx;
    }
    free(part);
}

// One block of A4_BLOCK elements [lo, hi): new m, v (kept on the stack), the new m scale (and v scale for
// a vector), the parameter update, and the new codes. Returns the non-finite gradient count.
static long a4_block(const Adam4Scalars* k, int decays, const A4Tensor* q, uint8_t* mq, uint8_t* vq, float* theta,
                     const float* grad, size_t b) {
    const size_t lo = b * A4_BLOCK, hi = lo + A4_BLOCK < q->n ? lo + A4_BLOCK : q->n;
    const size_t cols = q->rank1 ? q->cols : q->n;
    float m[A4_BLOCK], v[A4_BLOCK];
    uint8_t cm[A4_BLOCK], cv[A4_BLOCK];
    float am = 0.0f, av = 0.0f;
    const float ms_old = q->m_scale[b];
    size_t row = lo / cols, col = lo % cols;
    for (size_t i = lo; i < hi; i++) {
        const size_t e = i - lo;
        m[e] = a4_decode(q->mmap, q4_get(q->mq, i), ms_old);
        v[e] = a4_v_old(q, i, row, col);
        adamw4bit_moments(k, grad[i], &m[e], &v[e]);
        if (fabsf(m[e]) > am) am = fabsf(m[e]);
        if (fabsf(v[e]) > av) av = fabsf(v[e]);
        if (++col == cols) { col = 0; row++; }
    }
    q->m_scale_new[b] = am;
    if (!q->rank1) q->v_a_new[b] = av;
    long nonfinite = 0;
    float vs[A4_BLOCK];  // new v scale per element
    row = lo / cols;
    col = lo % cols;
    for (size_t i = lo; i < hi; i++) {
        nonfinite += !isfinite(grad[i]);
        theta[i] = adamw4bit_param(k, decays, theta[i], m[i - lo], v[i - lo]);
        vs[i - lo] = q->rank1 ? a4_rank1_scale(q->v_a_new[row], q->v_b_new[col]) : av;
        if (++col == cols) { col = 0; row++; }
    }
    const size_t len = hi - lo;
    for (size_t e = 0; e < len; e++) {  // separate loops without branches: they vectorize
        cm[e] = a4_encode(q->mmap, m[e], am);
        cv[e] = a4_encode(q->vmap, v[e], vs[e]);
    }
    // blocks start at even elements, so a block owns whole bytes; a lone last element gets a 0 high nibble
    for (size_t i = lo; i < hi; i += 2) {
        const int pair = i + 1 < hi;
        mq[i >> 1] = q4_pair(cm[i - lo], pair ? cm[i + 1 - lo] : 0);
        vq[i >> 1] = q4_pair(cv[i - lo], pair ? cv[i + 1 - lo] : 0);
    }
    return nonfinite;
}

static long adamw4bit_step_quantized(const Adam4Scalars* k, OptTensor* p) {
    const ParamShape* s = p->shape;
    const size_t n = s->numel, nblocks = a4_blocks(n);
    A4Tensor q;
    memset(&q, 0, sizeof(q));
    q.n = n;
    q.rows = s->rows;
    q.cols = s->cols;
    q.rank1 = s->ndim == 2;
    uint8_t* mq = (uint8_t*)p->state[0];  // (n/2)
    uint8_t* vq = (uint8_t*)p->state[1];  // (n/2)
    q.mq = mq;
    q.vq = vq;
    q.m_scale = (const float*)p->state[2];
    q.v_a = (const float*)p->state[3];
    q.v_b = q.rank1 ? (const float*)p->state[4] : NULL;
    const size_t na = q.rank1 ? q.rows : nblocks, nb = q.rank1 ? q.cols : 0;
    float* scratch = (float*)xmalloc((nblocks + na + nb + 1) * sizeof(float));  // the new scales
    q.m_scale_new = scratch;
    q.v_a_new = scratch + nblocks;
    q.v_b_new = q.v_a_new + na;
    q.mmap = q4_map_signed();
    q.vmap = q4_map_linear();
    if (q.rank1) a4_rank1_stats(k, &q, p->grad);
    long nonfinite = 0;
    // Each block reads and rewrites only its own bytes and its own old m scale; old v scales of a matrix
    // are read by all blocks, so the new ones are kept aside until every block is done.
    A4_PARALLEL_FOR(n)
    for (size_t b = 0; b < nblocks; b++) nonfinite += a4_block(k, s->decay, &q, mq, vq, p->param, p->grad, b);
    memcpy(p->state[2], q.m_scale_new, nblocks * sizeof(float));
    memcpy(p->state[3], q.v_a_new, na * sizeof(float));
    if (q.rank1) memcpy(p->state[4], q.v_b_new, nb * sizeof(float));
    free(scratch);
    return nonfinite;
}

static long adamw4bit_step_fp32(const Adam4Scalars* k, OptTensor* p) {
    const size_t n = p->shape->numel;
    const int decays = p->shape->decay;
    float* theta = p->param;         // (n)
    const float* grad = p->grad;     // (n)
    float* m = (float*)p->state[0];  // (n) exp_avg
    float* v = (float*)p->state[1];  // (n) exp_avg_sq
    long nonfinite = 0;
    A4_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) {
        nonfinite += !isfinite(grad[i]);
        adamw4bit_moments(k, grad[i], &m[i], &v[i]);
        theta[i] = adamw4bit_param(k, decays, theta[i], m[i], v[i]);
    }
    return nonfinite;
}

static void adamw4bit_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const Adam4Scalars k = adamw4bit_scalars(h, st->lr, st->t);
    st->nonfinite += a4_quantized(p->shape) ? adamw4bit_step_quantized(&k, p) : adamw4bit_step_fp32(&k, p);
}

const Optimizer OPT_ADAMW4BIT = {
    .name = "adamw4bit",
    .description = "4-bit AdamW (lpmm): m blockwise-128 signed dynamic map, v rank-1 linear map, 2 codes/byte",
    .paper = "Li, Chen & Zhu 2023, Memory Efficient Optimizers with 4-bit States, arXiv 2309.01507",
    .flags = 0,
    .defaults = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2 },
    .layout = adamw4bit_layout,
    .init = NULL,
    .step = adamw4bit_step,
    .hessian = NULL,
};
