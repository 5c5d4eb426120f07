// train_gpt2.c: the CPU trainer. GPT-2 forward and backward written out layer by layer in plain C
// (+ OpenMP), mixed precision with fp32 master weights, every optimizer behind `-opt NAME`.
//
// Map of this file:
//   1. configuration and parameter layout (trainer/model.c, shared with the CUDA trainer)
//   2. layers: encoder, layernorm, matmul (cpu/matmul.c), attention, gelu, residual, softmax+CE
//   3. the model: forward, backward, with per-layer fp32 views of bf16 weights
//   4. optimizer plumbing: state layout through the ledger, the step over every tensor, LOMO's unit hook
//   5. the model as the shared run loop sees it (checkpoint blobs, init, loss, next-token probabilities)
//   6. the step (train_step, train_step_fused for LOMO/AdaLomo, maybe_update_hessian for Sophia), main
//
// Mixed precision on the CPU (-precision bf16, the default): the working parameters and the
// gradients are stored in bf16, the optimizer updates an fp32 master copy and writes the bf16 copy
// back (round to nearest, or stochastic rounding with -sr 1). Arithmetic is fp32: each layer's bf16
// weights are widened into a one-layer fp32 scratch right before that layer runs, and that layer's
// fp32 gradients are added into the bf16 gradient buffer right after its backward. So memory is the
// article's 2 (params) + 4 (master) + 2 (grads) + state bytes per parameter, plus one layer of scratch.
// -precision fp32 keeps parameters and gradients in fp32 with no master copy and no scratch.
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <errno.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "common/util.h"
#include "common/numerics.h"
#include "common/rng.h"
#include "common/ledger.h"
#include "cpu/matmul.h"
#include "common/schedule.h"
#include "common/logger.h"
#include "common/checkpoint.h"
#include "trainer/cli.h"
#include "trainer/run.h"
#include "trainer/model.h"
#include "trainer/dist.h"
#include "trainer/zero.h"
#include "optim/optim.h"
#include "data/tokenizer.h"
#include "data/dataloader.h"

// ------------------------------------------------------------------------------------------------
// 1. configuration and parameter layout

// The 16 parameter tensors (P_WTE ... P_LNFB), their sizes and shapes, the optimizer's 2 + 12L + 2
// tensor view, the GPT-2 initialisation and the optimizer state layout are trainer/model.c, shared with
// the CUDA trainer so that checkpoints move between the two.

// ------------------------------------------------------------------------------------------------
// 2. layers (fp32). Shapes: B batch, T time, C channels, NH heads, V vocabulary.

// out (B,T,C) = wte[tok] + wpe[t]
static void encoder_forward(float* out, const int* inp, const float* wte, const float* wpe, int B, int T, int C) {
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            float* o = out + ((size_t)b * T + t) * C;
            const float* we = wte + (size_t)inp[b * T + t] * C;
            const float* pe = wpe + (size_t)t * C;
            for (int c = 0; c < C; c++) o[c] = we[c] + pe[c];
        }
    }
}

// dwte[tok] += dout, dwpe[t] += dout. Parallel over channels so each thread owns its columns and the
// sums run in a fixed order (deterministic).
static void encoder_backward(float* dwte, float* dwpe, const float* dout, const int* inp, int B, int T, int C) {
    #pragma omp parallel for
    for (int c = 0; c < C; c++) {
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                float d = dout[((size_t)b * T + t) * C + c];
                dwte[(size_t)inp[b * T + t] * C + c] += d;
                dwpe[(size_t)t * C + c] += d;
            }
        }
    }
}

// out (N,C) = (x - mean) * rstd * w + b, per row; keeps mean and rstd (N) for backward.
static void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* w, const float* b,
                              int N, int C) {
    const float eps = 1e-5f;
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* x = inp + (size_t)i * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        float v = 0.0f;
        for (int c = 0; c < C; c++) { float d = x[c] - m; v += d * d; }
        v /= C;
        float s = 1.0f / sqrtf(v + eps);
        float* o = out + (size_t)i * C;
        for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
        mean[i] = m;
        rstd[i] = s;
    }
}

// dinp (N,C) += ..., dw, db (C) += ... . dinp rows are independent (parallel over rows); dw and db
// sum over rows, so they are parallel over channels with the rows in order (deterministic).
static void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const float* inp,
                               const float* w, const float* mean, const float* rstd, int N, int C) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        const float* x = inp + (size_t)i * C;
        const float* d = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        float dnorm_mean = 0.0f, dnorm_norm_mean = 0.0f;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            float dnorm = w[c] * d[c];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= C;
        dnorm_norm_mean /= C;
        float* dx = dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            float dnorm = w[c] * d[c];
            dx[c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
    }
    #pragma omp parallel for
    for (int c = 0; c < C; c++) {
        float sw = 0.0f, sb = 0.0f;
        for (int i = 0; i < N; i++) {
            float d = dout[(size_t)i * C + c];
            sw += (inp[(size_t)i * C + c] - mean[i]) * rstd[i] * d;
            sb += d;
        }
        dw[c] += sw;
        db[c] += sb;
    }
}

// Causal self-attention. qkv (B,T,3C) holds q | k | v, each split into NH heads of hs = C/NH.
// att (B,NH,T,T): softmax probabilities (row t uses columns 0..t only); out (B,T,C).
static void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)C * 3;
    #pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float* q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float maxv = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) s += q[i] * k[i];
                    s *= scale;
                    a[t2] = s;
                    if (s > maxv) maxv = s;
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) { a[t2] = expf(a[t2] - maxv); sum += a[t2]; }
                float inv = 1.0f / sum;
                for (int t2 = 0; t2 <= t; t2++) a[t2] *= inv;
                for (int t2 = t + 1; t2 < T; t2++) a[t2] = 0.0f;
                float* o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) o[i] = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float w = a[t2];
                    for (int i = 0; i < hs; i++) o[i] += w * v[i];
                }
            }
        }
    }
}

// dqkv (B,T,3C) += gradients; datt is a (B,NH,T,T) scratch. Each (b, h) pair only touches its own
// head's slices of dq, dk, dv, so the parallel loop over (b, h) has no races.
static void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
                               int B, int T, int C, int NH) {
    int hs = C / NH;
    float scale = 1.0f / sqrtf((float)hs);
    size_t C3 = (size_t)C * 3;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float* a = att + (((size_t)b * NH + h) * T + t) * T;
                float* da = datt + (((size_t)b * NH + h) * T + t) * T;
                const float* dy = dout + ((size_t)b * T + t) * C + h * hs;
                // through out = att @ v
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float* dv = dqkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                    float s = 0.0f;
                    for (int i = 0; i < hs; i++) { s += v[i] * dy[i]; dv[i] += a[t2] * dy[i]; }
                    da[t2] = s;
                }
                // through the softmax: dpre = a * (da - sum(a * da))
                float dot = 0.0f;
                for (int t2 = 0; t2 <= t; t2++) dot += a[t2] * da[t2];
                const float* q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                float* dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                for (int t2 = 0; t2 <= t; t2++) {
                    float dpre = a[t2] * (da[t2] - dot) * scale;
                    const float* k = qkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    float* dk = dqkv + ((size_t)b * T + t2) * C3 + C + h * hs;
                    for (int i = 0; i < hs; i++) { dq[i] += dpre * k[i]; dk[i] += dpre * q[i]; }
                }
            }
        }
    }
}

#define GELU_SCALING_FACTOR 0.7978845608028654f // sqrt(2 / pi)
// tanh approximation of GELU, as GPT-2
static void gelu_forward(float* out, const float* inp, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x)));
    }
}

// dinp = gelu'(inp) * dout (overwrites dinp; dinp may alias dout)
static void gelu_backward(float* dinp, const float* inp, const float* dout, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) {
        float x = inp[i];
        float u = GELU_SCALING_FACTOR * (x + 0.044715f * x * x * x);
        float th = tanhf(u);
        float sech2 = 1.0f - th * th;
        float grad = 0.5f * (1.0f + th) + 0.5f * x * sech2 * GELU_SCALING_FACTOR * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = grad * dout[i];
    }
}

static void residual_forward(float* out, const float* a, const float* b, size_t N) {
    #pragma omp parallel for
    for (size_t i = 0; i < N; i++) out[i] = a[i] + b[i];
}

// In place: logits (N,V) -> probabilities; losses (N) = -log p[target]. Targets < 0 are ignored
// (loss 0) so generation can run the same code without labels.
static void softmax_crossentropy_forward(float* losses, float* logits, const int* targets, int N, int V) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float* x = logits + (size_t)i * V;
        softmax_inplace(x, V);
        if (targets) losses[i] = targets[i] >= 0 ? -logf(fmaxf(x[targets[i]], 1e-30f)) : 0.0f;
    }
}

// In place: probs (N,V) -> dlogits = (probs - onehot(target)) * dloss.
static void softmax_crossentropy_backward(float* probs, const int* targets, float dloss, int N, int V) {
    #pragma omp parallel for
    for (int i = 0; i < N; i++) {
        float* p = probs + (size_t)i * V;
        for (int v = 0; v < V; v++) p[v] *= dloss;
        p[targets[i]] -= dloss;
    }
}

// ------------------------------------------------------------------------------------------------
// 3. the model

// One layer's 12 tensors, fp32 (a view into fp32 params/grads or into a unit scratch).
typedef struct {
    float *ln1w, *ln1b, *qkvw, *qkvb, *attprojw, *attprojb, *ln2w, *ln2b, *fcw, *fcb, *fcprojw, *fcprojb;
} BlockTensors;
// Unit 0's tensors, fp32.
typedef struct { float *wte, *wpe, *lnfw, *lnfb; } EmbedTensors;

// Activations kept for backward, for the allocated (B, T); one allocation.
typedef struct {
    float* encoded;   // (B,T,C)
    float* ln1;       // (L,B,T,C)
    float* ln1_mean;  // (L,B,T)
    float* ln1_rstd;  // (L,B,T)
    float* qkv;       // (L,B,T,3C)
    float* atty;      // (L,B,T,C)
    float* att;       // (L,B,NH,T,T)
    float* residual2; // (L,B,T,C)
    float* ln2;       // (L,B,T,C)
    float* ln2_mean;  // (L,B,T)
    float* ln2_rstd;  // (L,B,T)
    float* fch;       // (L,B,T,4C)
    float* fch_gelu;  // (L,B,T,4C)
    float* residual3; // (L,B,T,C)
    float* lnf;       // (B,T,C)
    float* lnf_mean;  // (B,T)
    float* lnf_rstd;  // (B,T)
    float* logits;    // (B,T,V): logits, then probabilities, then dlogits (in place)
    float* losses;    // (B,T)
    float* tmp;       // (B,T,C): attention/MLP projection outputs before the residual add
} Activations;

// Backward scratch for one layer at a time (the gradient flows through them layer by layer).
typedef struct {
    float* dres;      // (B,T,C) gradient of the residual stream
    float* dln;       // (B,T,C) gradient of a layernorm output
    float* datty;     // (B,T,C)
    float* dqkv;      // (B,T,3C)
    float* dfch;      // (B,T,4C)
    float* datt;      // (B,NH,T,T)
} BackwardScratch;

typedef struct {
    GPT2Config config;
    int precision;            // PRECISION_BF16 or PRECISION_FP32
    ModelLayout layout;       // sizes, offsets, the optimizer's tensors and the unit scratch sizes
    // the flat parameter buffers
    bf16* params_bf16;        // (num_params) bf16 working copy (bf16 mode)
    float* params_f32;        // (num_params) fp32 parameters (fp32 mode) or the master (bf16 mode); a
                              // sharded master (-zero 1, bf16) holds flat elements [master_lo, +master_n)
    size_t master_lo, master_n; // the fp32 elements held: [0, num_params) unless the master is sharded
    bf16* grads_bf16;         // (num_params) bf16 gradients (bf16 mode, not with fused-backward optimizers)
    float* grads_f32;         // (num_params) fp32 gradients (fp32 mode, not with fused-backward optimizers)
    // fp32 scratch for one unit of weights and grads (only where needed, see header comment)
    float* wscratch_embed;    // (unit 0) fp32 copy of wte, wpe, lnf (bf16 mode)
    float* wscratch_block;    // (one block) fp32 copy of the current block's weights (bf16 mode)
    float* gscratch_embed;    // (unit 0) fp32 grads of unit 0 (bf16 or fused)
    float* gscratch_block;    // (one block) fp32 grads of the current block (bf16 or fused)
    // activations
    int B, T;                 // allocated batch and sequence length
    Activations acts;
    BackwardScratch bw;
    float* act_memory;
    float* bw_memory;
    int* inputs;              // (B,T)
    int* targets;             // (B,T)
    float mean_loss;
} GPT2;

// fp32 pointer to tensor p's values inside a unit: either the fp32 parameters themselves or the scratch.
static float* unit_ptr(float* flat, float* scratch, const ModelTensor* p) {
    return scratch ? scratch + p->scratch_offset : flat + p->offset;
}

// Views of block l's weights. In bf16 mode the block's bf16 weights are first widened into the scratch.
static BlockTensors block_weights(GPT2* m, int l) {
    float* scratch = m->precision == PRECISION_BF16 ? m->wscratch_block : NULL;
    ModelTensor* ps = &m->layout.tensors[4 + 12 * l];
    if (scratch) {
        for (int i = 0; i < 12; i++) {
            const bf16* src = m->params_bf16 + ps[i].offset;
            float* dst = scratch + ps[i].scratch_offset;
            size_t n = ps[i].shape.numel;
            #pragma omp parallel for if (n > 65536)
            for (size_t j = 0; j < n; j++) dst[j] = bf16_to_f32(src[j]);
        }
    }
    float* v[12];
    for (int i = 0; i < 12; i++) v[i] = unit_ptr(m->params_f32, scratch, &ps[i]);
    BlockTensors w = { v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11] };
    return w;
}

static EmbedTensors embed_weights(GPT2* m) {
    float* scratch = m->precision == PRECISION_BF16 ? m->wscratch_embed : NULL;
    ModelTensor* ps = &m->layout.tensors[0];
    if (scratch) {
        for (int i = 0; i < 4; i++) {
            const bf16* src = m->params_bf16 + ps[i].offset;
            float* dst = scratch + ps[i].scratch_offset;
            size_t n = ps[i].shape.numel;
            #pragma omp parallel for if (n > 65536)
            for (size_t j = 0; j < n; j++) dst[j] = bf16_to_f32(src[j]);
        }
    }
    EmbedTensors e = { unit_ptr(m->params_f32, scratch, &ps[0]), unit_ptr(m->params_f32, scratch, &ps[1]),
                       unit_ptr(m->params_f32, scratch, &ps[2]), unit_ptr(m->params_f32, scratch, &ps[3]) };
    return e;
}

// Gradient views: into the fp32 gradient buffer directly (fp32 mode), else into the unit scratch,
// which is zeroed here and flushed by flush_unit_grads() once the unit's backward is done.
static BlockTensors block_grads(GPT2* m, int l) {
    ModelTensor* ps = &m->layout.tensors[4 + 12 * l];
    float* scratch = m->grads_f32 ? NULL : m->gscratch_block;
    if (scratch) memset(scratch, 0, m->layout.unit_size[1] * sizeof(float));
    float* v[12];
    for (int i = 0; i < 12; i++) v[i] = unit_ptr(m->grads_f32, scratch, &ps[i]);
    BlockTensors g = { v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11] };
    return g;
}

static EmbedTensors embed_grads(GPT2* m) {
    ModelTensor* ps = &m->layout.tensors[0];
    float* scratch = m->grads_f32 ? NULL : m->gscratch_embed;
    if (scratch) memset(scratch, 0, m->layout.unit_size[0] * sizeof(float));
    EmbedTensors e = { unit_ptr(m->grads_f32, scratch, &ps[0]), unit_ptr(m->grads_f32, scratch, &ps[1]),
                       unit_ptr(m->grads_f32, scratch, &ps[2]), unit_ptr(m->grads_f32, scratch, &ps[3]) };
    return e;
}

// Fixes the activation pointers for a batch of (B, T) inside the allocated memory. Layer slices are
// laid out for the (B, T) being run, which always fits inside the allocation made for the maximum.
static void point_activations(GPT2* m, int B, int T) {
    const GPT2Config* cfg = &m->config;
    size_t L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    float* p = m->act_memory;
    Activations* a = &m->acts;
    a->encoded = p; p += BT * C;
    a->ln1 = p; p += L * BT * C;
    a->ln1_mean = p; p += L * BT;
    a->ln1_rstd = p; p += L * BT;
    a->qkv = p; p += L * BT * 3 * C;
    a->atty = p; p += L * BT * C;
    a->att = p; p += L * B * NH * T * T;
    a->residual2 = p; p += L * BT * C;
    a->ln2 = p; p += L * BT * C;
    a->ln2_mean = p; p += L * BT;
    a->ln2_rstd = p; p += L * BT;
    a->fch = p; p += L * BT * 4 * C;
    a->fch_gelu = p; p += L * BT * 4 * C;
    a->residual3 = p; p += L * BT * C;
    a->lnf = p; p += BT * C;
    a->lnf_mean = p; p += BT;
    a->lnf_rstd = p; p += BT;
    a->logits = p; p += BT * V;
    a->losses = p; p += BT;
    a->tmp = p; p += BT * C;
    float* q = m->bw_memory;
    if (q) {
        BackwardScratch* s = &m->bw;
        s->dres = q; q += BT * C;
        s->dln = q; q += BT * C;
        s->datty = q; q += BT * C;
        s->dqkv = q; q += BT * 3 * C;
        s->dfch = q; q += BT * 4 * C;
        s->datt = q; q += (size_t)B * NH * T * T;
    }
}

static size_t activation_floats(const GPT2Config* cfg, int B, int T) {
    size_t L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    // encoded, lnf, tmp: 3 BT C; per layer ln1, atty, res2, ln2, res3 (C each), qkv (3C), fch, fch_gelu (4C
    // each) = 16 C, plus 4 statistics; attention probabilities; logits; losses and the lnf statistics
    return BT * C * 3 + L * BT * (16 * C + 4) + L * B * NH * T * T + BT * V + BT * 3;
}

static size_t backward_floats(const GPT2Config* cfg, int B, int T) {
    size_t C = cfg->channels, NH = cfg->num_heads, BT = (size_t)B * T;
    return BT * C * 10 + (size_t)B * NH * T * T;
}

// Forward pass over (B, T) tokens. With targets, fills losses and the mean loss. With last_only, the
// LM head runs on the last position only (for sampling) and acts.logits holds that row's probabilities.
static void gpt2_forward(GPT2* m, const int* inputs, const int* targets, int B, int T, int last_only) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    CHECK(B <= m->B && T <= m->T);
    for (size_t i = 0; i < BT; i++)
        if (inputs[i] < 0 || inputs[i] >= V) user_error("token id %d at position %zu is outside the vocabulary (0..%d)", inputs[i], i, V - 1);
    // backward reads the batch from the model
    if (inputs != m->inputs) memcpy(m->inputs, inputs, BT * sizeof(int));
    if (targets && targets != m->targets) memcpy(m->targets, targets, BT * sizeof(int));
    point_activations(m, B, T);
    Activations* a = &m->acts;
    EmbedTensors e = embed_weights(m);
    encoder_forward(a->encoded, inputs, e.wte, e.wpe, B, T, C);
    for (int l = 0; l < L; l++) {
        BlockTensors w = block_weights(m, l);
        const float* x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        float* ln1 = a->ln1 + l * BT * C;
        float* qkv = a->qkv + l * BT * 3 * C;
        float* atty = a->atty + l * BT * C;
        float* att = a->att + (size_t)l * B * NH * T * T;
        float* res2 = a->residual2 + l * BT * C;
        float* ln2 = a->ln2 + l * BT * C;
        float* fch = a->fch + l * BT * 4 * C;
        float* fch_gelu = a->fch_gelu + l * BT * 4 * C;
        float* res3 = a->residual3 + l * BT * C;
        layernorm_forward(ln1, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, x, w.ln1w, w.ln1b, (int)BT, C);
        matmul_forward(qkv, ln1, w.qkvw, w.qkvb, (int)BT, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, NH);
        matmul_forward(a->tmp, atty, w.attprojw, w.attprojb, (int)BT, C, C);
        residual_forward(res2, x, a->tmp, BT * C);
        layernorm_forward(ln2, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, res2, w.ln2w, w.ln2b, (int)BT, C);
        matmul_forward(fch, ln2, w.fcw, w.fcb, (int)BT, C, 4 * C);
        gelu_forward(fch_gelu, fch, BT * 4 * C);
        matmul_forward(a->tmp, fch_gelu, w.fcprojw, w.fcprojb, (int)BT, 4 * C, C);
        residual_forward(res3, res2, a->tmp, BT * C);
    }
    const float* xL = a->residual3 + (size_t)(L - 1) * BT * C;
    layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, xL, e.lnfw, e.lnfb, (int)BT, C);
    // LM head tied to wte; only the V real rows of the (Vp, C) table are used.
    if (last_only) {
        matmul_forward(a->logits, a->lnf + (BT - 1) * C, e.wte, NULL, 1, C, V);
        softmax_crossentropy_forward(a->losses, a->logits, NULL, 1, V);
        return;
    }
    matmul_forward(a->logits, a->lnf, e.wte, NULL, (int)BT, C, V);
    if (!targets) return;
    softmax_crossentropy_forward(a->losses, a->logits, targets, (int)BT, V);
    double sum = 0.0;
    for (size_t i = 0; i < BT; i++) sum += a->losses[i];
    m->mean_loss = (float)(sum / BT);
}

// The hook that runs when a unit's gradients are complete (fp32, in the unit scratch or the fp32
// gradient buffer). The trainer sets it: accumulate into bf16 grads, or LOMO's in-backward update.
typedef void (*UnitDoneFn)(GPT2* m, int unit, void* ctx);

// Backward pass for the last forward (B, T): gradients of mean loss * grad_scale.
static void gpt2_backward(GPT2* m, int B, int T, float grad_scale, UnitDoneFn done, void* ctx) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size;
    size_t BT = (size_t)B * T;
    Activations* a = &m->acts;
    BackwardScratch* s = &m->bw;
    EmbedTensors ew = embed_weights(m);
    EmbedTensors eg = embed_grads(m);
    // loss -> logits -> lnf (dlogits overwrite the probabilities in place)
    softmax_crossentropy_backward(a->logits, m->targets, grad_scale / (float)BT, (int)BT, V);
    memset(s->dln, 0, BT * C * sizeof(float));
    matmul_backward(s->dln, eg.wte, NULL, a->logits, a->lnf, ew.wte, (int)BT, C, V);
    memset(s->dres, 0, BT * C * sizeof(float));
    const float* xL = a->residual3 + (size_t)(L - 1) * BT * C;
    layernorm_backward(s->dres, eg.lnfw, eg.lnfb, s->dln, xL, ew.lnfw, a->lnf_mean, a->lnf_rstd, (int)BT, C);
    for (int l = L - 1; l >= 0; l--) {
        BlockTensors w = block_weights(m, l);
        BlockTensors g = block_grads(m, l);
        const float* x = l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * BT * C;
        const float* ln1 = a->ln1 + l * BT * C;
        const float* qkv = a->qkv + l * BT * 3 * C;
        const float* atty = a->atty + l * BT * C;
        const float* att = a->att + (size_t)l * B * NH * T * T;
        const float* res2 = a->residual2 + l * BT * C;
        const float* ln2 = a->ln2 + l * BT * C;
        const float* fch = a->fch + l * BT * 4 * C;
        const float* fch_gelu = a->fch_gelu + l * BT * 4 * C;
        // s->dres holds d(residual3); the residual add passes it on unchanged to residual2 and x,
        // and each branch adds its own contribution into it.
        memset(s->dfch, 0, BT * 4 * C * sizeof(float));
        matmul_backward(s->dfch, g.fcprojw, g.fcprojb, s->dres, fch_gelu, w.fcprojw, (int)BT, 4 * C, C);
        gelu_backward(s->dfch, fch, s->dfch, BT * 4 * C);
        memset(s->dln, 0, BT * C * sizeof(float));
        matmul_backward(s->dln, g.fcw, g.fcb, s->dfch, ln2, w.fcw, (int)BT, C, 4 * C);
        layernorm_backward(s->dres, g.ln2w, g.ln2b, s->dln, res2, w.ln2w, a->ln2_mean + l * BT, a->ln2_rstd + l * BT, (int)BT, C);
        // now s->dres = d(residual2)
        memset(s->datty, 0, BT * C * sizeof(float));
        matmul_backward(s->datty, g.attprojw, g.attprojb, s->dres, atty, w.attprojw, (int)BT, C, C);
        memset(s->dqkv, 0, BT * 3 * C * sizeof(float));
        attention_backward(s->dqkv, s->datt, s->datty, qkv, att, B, T, C, NH);
        memset(s->dln, 0, BT * C * sizeof(float));
        matmul_backward(s->dln, g.qkvw, g.qkvb, s->dqkv, ln1, w.qkvw, (int)BT, C, 3 * C);
        layernorm_backward(s->dres, g.ln1w, g.ln1b, s->dln, x, w.ln1w, a->ln1_mean + l * BT, a->ln1_rstd + l * BT, (int)BT, C);
        // now s->dres = d(x), the input of block l
        if (done) done(m, 1 + l, ctx);
    }
    encoder_backward(eg.wte, eg.wpe, s->dres, m->inputs, B, T, C);
    if (done) done(m, 0, ctx);
}

// The model's shape and parameter layout (no allocation yet: the ZeRO-1 plan needs the layout first).
static void gpt2_layout(GPT2* m, const GPT2Config* cfg, int precision) {
    memset(m, 0, sizeof(*m));
    model_layout_build(&m->layout, cfg);
    m->config = *cfg;
    m->precision = precision;
}

// Allocates everything the model needs through the ledger (dry ledgers only record). `fused` is set
// for optimizers that update inside backward (LOMO): they never hold the whole model's gradients. In
// bf16 mode the fp32 master holds flat elements [master_lo, master_lo + master_n) (ZeRO-1: this rank's
// shard; everything otherwise); fp32 mode always holds all of its weights.
static void gpt2_alloc(GPT2* m, int B, int T, int fused, size_t master_lo, size_t master_n, Ledger* led) {
    const GPT2Config* cfg = &m->config;
    m->B = B; m->T = T; // the largest batch forward and backward will run
    size_t P = m->layout.num_params;
    int bf = m->precision == PRECISION_BF16;
    m->master_lo = 0; m->master_n = P;
    if (bf) {
        CHECK(master_lo + master_n <= P);
        m->params_bf16 = (bf16*)ledger_alloc(led, MEM_PARAMS, "params (bf16)", P * sizeof(bf16));
        m->master_lo = master_lo; m->master_n = master_n;
        m->params_f32 = (float*)ledger_alloc(led, MEM_MASTER, master_n < P ? "master shard (fp32)" : "master weights (fp32)",
                                             master_n * sizeof(float));
    } else {
        m->params_f32 = (float*)ledger_alloc(led, MEM_PARAMS, "params (fp32)", P * sizeof(float));
    }
    if (fused) {
        // LOMO family: gradients exist for one unit at a time. The tied embedding's gradient collects
        // from the LM head (first in backward) and the encoder (last), so unit 0 lives throughout.
        m->gscratch_embed = (float*)ledger_alloc(led, MEM_GRADS, "grads: embedding unit (fp32)", m->layout.unit_size[0] * sizeof(float));
        m->gscratch_block = (float*)ledger_alloc(led, MEM_GRADS, "grads: one block (fp32)", m->layout.unit_size[1] * sizeof(float));
    } else if (bf) {
        m->grads_bf16 = (bf16*)ledger_alloc(led, MEM_GRADS, "grads (bf16)", P * sizeof(bf16));
        // fp32 gradients of the unit in backward, added into the bf16 grads when the unit is done;
        // the optimizer step reuses the embedding scratch to widen one tensor's bf16 gradient.
        m->gscratch_embed = (float*)ledger_alloc(led, MEM_WORKSPACE, "fp32 grads of unit 0", m->layout.unit_size[0] * sizeof(float));
        m->gscratch_block = (float*)ledger_alloc(led, MEM_WORKSPACE, "fp32 grads of one block", m->layout.unit_size[1] * sizeof(float));
    } else {
        m->grads_f32 = (float*)ledger_alloc(led, MEM_GRADS, "grads (fp32)", P * sizeof(float));
    }
    if (bf) {
        m->wscratch_embed = (float*)ledger_alloc(led, MEM_WORKSPACE, "fp32 weights of unit 0", m->layout.unit_size[0] * sizeof(float));
        m->wscratch_block = (float*)ledger_alloc(led, MEM_WORKSPACE, "fp32 weights of one block", m->layout.unit_size[1] * sizeof(float));
    }
    m->act_memory = (float*)ledger_alloc(led, MEM_ACTIVATIONS, "activations (fp32)", activation_floats(cfg, B, T) * sizeof(float));
    m->bw_memory = (float*)ledger_alloc(led, MEM_ACTIVATIONS, "backward scratch (fp32)", backward_floats(cfg, B, T) * sizeof(float));
    m->inputs = (int*)ledger_alloc(led, MEM_DATA, "batch inputs+targets", 2 * (size_t)B * T * sizeof(int));
    m->targets = m->inputs ? m->inputs + (size_t)B * T : NULL;
}

// The whole model on one rank (the tests build it so).
__attribute__((unused)) static void gpt2_build(GPT2* m, const GPT2Config* cfg, int precision, int B, int T, int fused, Ledger* led) {
    gpt2_layout(m, cfg, precision);
    gpt2_alloc(m, B, T, fused, 0, m->layout.num_params, led);
}

// fp32 master (bf16 mode) or parameter (fp32 mode) of flat element i, which this rank holds.
static float* master_at(const GPT2* m, size_t i) { return m->params_f32 + (i - m->master_lo); }

// A piece of the initial weights (model_init_weights_each): the bf16 copy of all of it, the sharded
// master's part of it.
static void init_piece(void* ctx, size_t first, const float* v, size_t n) {
    GPT2* m = (GPT2*)ctx;
    for (size_t j = 0; j < n; j++) m->params_bf16[first + j] = f32_to_bf16(v[j]);
    size_t lo = first > m->master_lo ? first : m->master_lo, hi = first + n < m->master_lo + m->master_n ? first + n : m->master_lo + m->master_n;
    if (lo < hi) memcpy(master_at(m, lo), v + (lo - first), (hi - lo) * sizeof(float));
}

// GPT-2 initialisation (trainer/model.c, the same draws as the CUDA trainer) into the fp32 parameters,
// then the bf16 working copy rounded to nearest. A sharded master takes its part as the draws stream by.
static void gpt2_init(GPT2* m, uint64_t seed) {
    float* w = m->params_f32;
    if (m->master_n < m->layout.num_params) { model_init_weights_each(&m->layout, seed, init_piece, m); return; }
    model_init_weights(&m->layout, w, seed);
    if (m->params_bf16) for (size_t i = 0; i < m->layout.num_params; i++) m->params_bf16[i] = f32_to_bf16(w[i]);
}

// ------------------------------------------------------------------------------------------------
// 4. optimizer plumbing

typedef struct {
    const Optimizer* opt;
    OptHyper hyper;
    StateLayout layout;       // buffer names and bytes, each tensor's (buffer, offset) pairs: trainer/model.c
    void* buf[MAX_STATE_BUFFERS]; // the state buffers (NULL under a dry ledger)
    int stochastic_rounding;  // -sr 1: stochastic rounding of the bf16 copy
    uint64_t seed;
    long nonfinite;           // non-finite gradient elements reported by the optimizer
    long nonfinite_update;    // non-finite updated weights (rolled back) in the current step
    ZeroPlan* zero;           // -zero 1: this rank's shard (layout above is its slices' layout), else NULL
    void* full_buf[MAX_STATE_BUFFERS]; // -zero 1: the unsharded state, only while a checkpoint is staged
    float* full_master;       // -zero 1, bf16: the whole fp32 master, only while a checkpoint is staged
    int dist;                 // -zero 1 over more than one rank: gradients reduce-scattered, norms reduced
    size_t* unit_cuts;        // (L+1, world+1) -zero 1: each rank's part of each unit's gradient scratch
    ZeroReduce reduce;        // -zero 1, row shards: the ranks sharing each matrix and its steps' reduce hook
} OptRun;

// State layout for every tensor (shared with the CUDA trainer); with zero, the ZeRO-1 plan of `rank` in
// a world of `world` (trainer/zero.h) and o->layout its slices' layout. Nothing allocated yet.
static void optimizer_plan(OptRun* o, GPT2* m, const Optimizer* opt, const OptHyper* h, int zero, int world, int rank) {
    memset(o, 0, sizeof(*o));
    o->opt = opt;
    o->hyper = *h;
    if (zero) {
        o->zero = (ZeroPlan*)xmalloc(sizeof(ZeroPlan));
        zero_plan_build(o->zero, &m->layout, opt, h, world, rank);
        o->layout = o->zero->layouts[rank];
    } else {
        state_layout_for_model(&o->layout, &m->layout, opt, h);
    }
}

// One ledger allocation per state name.
static void optimizer_alloc(OptRun* o, Ledger* led) {
    for (int b = 0; b < o->layout.nbuf; b++)
        o->buf[b] = ledger_alloc(led, MEM_OPT_STATE, o->layout.buf_label[b], o->layout.buf_bytes[b]);
}

__attribute__((unused)) static void optimizer_setup(OptRun* o, GPT2* m, const Optimizer* opt, const OptHyper* h, Ledger* led) {
    optimizer_plan(o, m, opt, h, 0, 1, 0);
    optimizer_alloc(o, led);
}

// -zero 1 across ranks (a real run, not a plan): where each rank's part of every unit's gradient scratch
// lies, and a group of ranks with its reduce hook for every matrix split in rows. Every rank creates the
// groups in tensor order (a collective).
static void optimizer_connect(OptRun* o, GPT2* m) {
    const ZeroPlan* z = o->zero;
    if (!z || z->world == 1) return;
    o->dist = 1;
    int L = m->config.num_layers, W = z->world;
    o->unit_cuts = (size_t*)xmalloc((size_t)(L + 1) * (W + 1) * sizeof(size_t));
    for (int u = 0; u <= L; u++) zero_unit_cuts(z, &m->layout, u, o->unit_cuts + (size_t)u * (W + 1));
    zero_reduce_connect(&o->reduce, z);
}

static void optimizer_disconnect(OptRun* o) {
    zero_reduce_free(&o->reduce);
    free(o->unit_cuts);
    o->unit_cuts = NULL;
}

// Host pointers to tensor i's state tensors, in the optimizer's layout order.
static void tensor_states(const OptRun* o, int i, void* state[OPT_MAX_STATES]) {
    if (o->zero) i = o->zero->index[(size_t)o->zero->rank * o->zero->num_tensors + i]; // its slice's
    if (i < 0) return;
    const TensorStates* ts = &o->layout.tensors[i];
    for (int s = 0; s < ts->nstate; s++) {
        char* buf = (char*)o->buf[ts->buf[s]];
        state[s] = buf ? buf + ts->offset[s] : NULL;
    }
}

// What the optimizer updates of tensor i: the whole tensor, or with -zero 1 this rank's slice of it
// (numel 0: none). `grad` is the whole tensor's gradient (may be NULL).
static OptTensor opt_tensor(const OptRun* o, GPT2* m, int i, const float* grad, size_t* start) {
    const ModelTensor* p = &m->layout.tensors[i];
    const ParamShape* shape = &p->shape;
    *start = 0;
    if (o->zero) { const ZeroSlice* z = zero_slice(o->zero, i); shape = &z->shape; *start = z->start; }
    OptTensor ot = { shape, master_at(m, p->offset + *start), grad ? grad + *start : NULL, {0} };
    tensor_states(o, i, ot.state);
    return ot;
}

static void optimizer_init_state(OptRun* o, GPT2* m) {
    if (!o->opt->init) return;
    for (int i = 0; i < m->layout.num_tensors; i++) {
        size_t start;
        OptTensor ot = opt_tensor(o, m, i, NULL, &start);
        if (ot.shape->numel == 0) continue;
        o->opt->init(&o->hyper, &ot);
    }
}

// Hyperparameters for one tensor: weight decay only where the tensor takes it.
static OptHyper tensor_hyper(const OptRun* o, const ModelTensor* p) {
    OptHyper h = o->hyper;
    if (!p->shape.decay) h.weight_decay = 0.0f;
    return h;
}

// After the optimizer wrote the fp32 master of tensor p: refresh its bf16 working copy (bf16 mode) and
// check the update. Stochastic rounding draws its bits from the stream of (seed, step, tensor offset)
// (common/numerics.h), so a resumed run rounds exactly as the uninterrupted one did. A non-finite
// master value is never kept: in bf16 mode the working copy still holds the weight from before this
// step, so the element goes back to it (its optimizer state may be spoilt: the next steps will tell).
// Returns the number of non-finite values found.
static size_t write_bf16_copy(GPT2* m, const OptRun* o, const ModelTensor* p, int step, size_t start, size_t n) {
    float* src = master_at(m, p->offset + start);
    size_t bad = 0;
    if (!m->params_bf16) {
        #pragma omp parallel for reduction(+:bad) if (n > 65536)
        for (size_t i = 0; i < n; i++) bad += !isfinite(src[i]);
        return bad;
    }
    bf16* dst = m->params_bf16 + p->offset + start;
    const uint64_t stream = sr_stream(o->seed, step, p->offset);
    const int sr = o->stochastic_rounding;
    #pragma omp parallel for reduction(+:bad) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        if (isfinite(src[i])) dst[i] = master_to_bf16(src[i], sr, stream, start + i);
        else { src[i] = bf16_to_f32(dst[i]); bad++; }
    }
    return bad;
}

// Runs the optimizer on tensor i with an fp32 gradient (already scaled by the clip factor).
static void optimizer_apply(GPT2* m, OptRun* o, int i, const float* grad, int step, float lr_scale) {
    const ModelTensor* p = &m->layout.tensors[i];
    OptHyper h = tensor_hyper(o, p);
    size_t start;
    OptTensor ot = opt_tensor(o, m, i, grad, &start);
    if (ot.shape->numel == 0) return; // -zero 1: another rank's
    // rows of a matrix other ranks share (-zero 1, row shards): its statistics reduce over them
    const OptReduce* red = o->zero ? zero_reduce_of(&o->reduce, o->zero, i) : NULL;
    OptStep st = { step, o->hyper.lr * lr_scale, lr_scale, 0, red };
    o->opt->step(&h, &ot, &st);
    o->nonfinite += st.nonfinite;
    o->nonfinite_update += (long)write_bf16_copy(m, o, p, step, start, ot.shape->numel);
}

// fp32 gradient of tensor p times `scale`: a pointer to its element 0 in the fp32 grads (scaled in
// place), or in the scratch the bf16 grads are widened into. Only elements [start, start + n) are
// filled (-zero 1: this rank's slice; the averaged gradient exists only there).
static const float* tensor_grad_f32(GPT2* m, const ModelTensor* p, float scale, size_t start, size_t n) {
    if (m->grads_f32) {
        float* g = m->grads_f32 + p->offset;
        if (scale != 1.0f) for (size_t i = start; i < start + n; i++) g[i] *= scale;
        return g;
    }
    const bf16* src = m->grads_bf16 + p->offset;
    float* dst = m->gscratch_embed; // unit 0 scratch holds the largest tensor (wte)
    #pragma omp parallel for if (n > 65536)
    for (size_t i = start; i < start + n; i++) dst[i] = bf16_to_f32(src[i]) * scale;
    return dst;
}

// Tensor i's elements this rank updates: all of them, or with -zero 1 its slice (n 0: none).
static void tensor_range(const OptRun* o, const GPT2* m, int i, size_t* start, size_t* n) {
    if (o->zero) { const ZeroSlice* z = zero_slice(o->zero, i); *start = z->start; *n = z->shape.numel; }
    else { *start = 0; *n = m->layout.tensors[i].shape.numel; }
}

// -zero 1: every rank updated its own contiguous range of the flat weights; one all-gather gives every
// rank all of them (the bf16 working copy, or the fp32 weights in fp32 mode). The fp32 master outside
// a rank's range goes stale there (nothing reads it) until a checkpoint gathers it.
static void zero_allgather_weights(GPT2* m, const OptRun* o) {
    const ZeroPlan* z = o->zero;
    size_t* cd = (size_t*)xmalloc(2 * z->world * sizeof(size_t));
    for (int r = 0; r < z->world; r++) { cd[r] = z->bound[r + 1] - z->bound[r]; cd[z->world + r] = z->bound[r]; }
    if (m->params_bf16) dist_allgather_bytes(m->params_bf16, cd, cd + z->world, sizeof(bf16));
    else dist_allgather_bytes(m->params_f32, cd, cd + z->world, sizeof(float));
    free(cd);
}

// A rolled-back non-finite update on any rank counts as one on every rank (they must skip alike).
static void agree_nonfinite(OptRun* o) {
    if (dist_world() > 1) o->nonfinite_update = dist_max_int(o->nonfinite_update > 0);
}

// One optimizer step over every tensor (the non-fused optimizers); with -zero 1, over this rank's
// slices, then the all-gather of the weights.
static void optimizer_step(GPT2* m, OptRun* o, int step, float lr_scale, float clip_scale) {
    for (int i = 0; i < m->layout.num_tensors; i++) {
        ModelTensor* p = &m->layout.tensors[i];
        size_t start, n;
        tensor_range(o, m, i, &start, &n);
        if (n == 0) continue;
        optimizer_apply(m, o, i, tensor_grad_f32(m, p, clip_scale, start, n), step, lr_scale);
    }
    if (o->zero) zero_allgather_weights(m, o);
    agree_nonfinite(o);
}

static void zero_grads(GPT2* m) {
    if (m->grads_bf16) memset(m->grads_bf16, 0, m->layout.num_params * sizeof(bf16));
    if (m->grads_f32) memset(m->grads_f32, 0, m->layout.num_params * sizeof(float));
}

// Sum of squares of the whole model's gradient (double accumulation, fixed order). With the gradients
// reduce-scattered (-zero 1 across ranks) each rank has the averaged gradient of its range only: the
// ranks' sums of their ranges, added by an all-reduce.
static double grad_sumsq(const GPT2* m, const OptRun* o) {
    double s = 0.0;
    size_t lo = 0, hi = m->layout.num_params;
    if (o && o->dist) { lo = o->zero->bound[o->zero->rank]; hi = o->zero->bound[o->zero->rank + 1]; }
    if (m->grads_f32) {
        #pragma omp parallel for reduction(+:s) schedule(static)
        for (size_t i = lo; i < hi; i++) s += (double)m->grads_f32[i] * m->grads_f32[i];
    } else if (m->grads_bf16) {
        #pragma omp parallel for reduction(+:s) schedule(static)
        for (size_t i = lo; i < hi; i++) { double g = bf16_to_f32(m->grads_bf16[i]); s += g * g; }
    }
    if (o && o->dist) dist_allreduce_f64(&s, 1);
    return s;
}

static double unit_grad_sumsq(GPT2* m, int unit) {
    double s = 0.0;
    for (int i = 0; i < m->layout.num_tensors; i++) {
        ModelTensor* p = &m->layout.tensors[i];
        if (p->unit != unit) continue;
        const float* g = unit_ptr(m->grads_f32, unit == 0 ? m->gscratch_embed : m->gscratch_block, p);
        for (size_t j = 0; j < p->shape.numel; j++) s += (double)g[j] * g[j];
    }
    return s;
}

// Data parallel (trainer/dist.h): the unit's fp32 gradient in the scratch, averaged over the ranks as soon
// as backward has finished the unit (one all-reduce per unit, while the next unit's backward has not
// started: no model-wide fp32 gradient is needed). Averaging the fp32 partial sums before anything is
// rounded to bf16 or updated means N ranks of B rows differ from one rank of N*B rows only in the
// order of the fp32 additions. Each rank's loss is the mean over its own B*T tokens, so the average of
// the ranks' gradients is the gradient of the global mean loss.
static void average_unit_grads(GPT2* m, int unit) {
    int world = dist_world();
    if (world == 1) return;
    float* scratch = unit == 0 ? m->gscratch_embed : m->gscratch_block;
    dist_allreduce_f32(scratch, m->layout.unit_size[unit == 0 ? 0 : 1], 1.0f / world);
}

// -zero 1 across ranks: each rank needs the average of its own range only, so the unit's scratch is
// reduce-scattered instead (zero_unit_cuts: the ranks' parts of the scratch lie back to back in rank
// order); afterwards only this rank's part of the scratch holds the average.
static void reduce_scatter_unit(GPT2* m, const OptRun* o, int unit) {
    const ZeroPlan* z = o->zero;
    int W = z->world;
    const size_t* cuts = o->unit_cuts + (size_t)unit * (W + 1);
    size_t* cd = (size_t*)xmalloc(2 * W * sizeof(size_t));
    for (int r = 0; r < W; r++) { cd[r] = cuts[r + 1] - cuts[r]; cd[W + r] = cuts[r]; }
    float* scratch = unit == 0 ? m->gscratch_embed : m->gscratch_block;
    dist_reduce_scatter_f32(scratch, scratch + cuts[z->rank], cd, cd + W, 1.0f / W);
    free(cd);
}

// fp32 mode keeps the whole gradient in fp32 (backward adds into it directly, across micro-steps), so
// it is averaged once, after the last micro-step: all-reduced, or with -zero 1 reduce-scattered (each
// rank's range of the flat gradient, in place).
static void average_fp32_grads(GPT2* m, const OptRun* o) {
    int world = dist_world();
    if (world == 1 || !m->grads_f32) return;
    if (!o->dist) { dist_allreduce_f32(m->grads_f32, m->layout.num_params, 1.0f / world); return; }
    const ZeroPlan* z = o->zero;
    size_t* cd = (size_t*)xmalloc(2 * world * sizeof(size_t));
    for (int r = 0; r < world; r++) { cd[r] = zero_count(z, r); cd[world + r] = z->bound[r]; }
    dist_reduce_scatter_f32(m->grads_f32, m->grads_f32 + z->bound[z->rank], cd, cd + world, 1.0f / world);
    free(cd);
}

// The mean of the ranks' losses (each the mean over its own tokens): the global batch's mean loss.
static float average_loss(float loss) {
    int world = dist_world();
    if (world > 1) dist_allreduce_f32(&loss, 1, 1.0f / world);
    return loss;
}

// Unit-done hook of the ordinary backward in bf16 mode: add the unit's fp32 gradient into the bf16 grads.
// ctx: the OptRun (may be NULL: one rank); with -zero 1 across ranks only this rank's range is averaged
// (reduce-scattered) and added, so the bf16 grads hold the averaged gradient of that range only.
static void accumulate_unit_bf16(GPT2* m, int unit, void* ctx) {
    if (!m->grads_bf16) return; // fp32 mode: backward wrote into the fp32 grads directly
    const OptRun* o = (const OptRun*)ctx;
    size_t lo = 0, hi = m->layout.num_params;
    if (o && o->dist) {
        reduce_scatter_unit(m, o, unit);
        lo = o->zero->bound[o->zero->rank]; hi = o->zero->bound[o->zero->rank + 1];
    } else {
        average_unit_grads(m, unit);
    }
    float* scratch = unit == 0 ? m->gscratch_embed : m->gscratch_block;
    for (int i = 0; i < m->layout.num_tensors; i++) {
        ModelTensor* p = &m->layout.tensors[i];
        if (p->unit != unit) continue;
        size_t a = p->offset > lo ? p->offset : lo, b = p->offset + p->shape.numel < hi ? p->offset + p->shape.numel : hi;
        if (b <= a) continue;
        const float* g = scratch + p->scratch_offset;
        bf16* dst = m->grads_bf16 + p->offset;
        size_t j0 = a - p->offset, n = b - a;
        #pragma omp parallel for if (n > 65536)
        for (size_t j = j0; j < j0 + n; j++) dst[j] = f32_to_bf16(bf16_to_f32(dst[j]) + g[j]);
    }
}

// LOMO family: the update runs inside backward, unit by unit, as soon as the unit's gradient exists.
typedef struct {
    OptRun* o;
    int step;
    float lr_scale;
    float clip_scale;
    int norm_only;       // first pass of two-pass clipping: only measure the gradient norm
    double sumsq;        // accumulated squared norm
    int nonfinite_units; // units whose gradient was not finite (their update is skipped)
} FusedCtx;

// Data parallel: the unit's gradient is averaged over the ranks before its norm and its update, so
// LOMO and AdaLomo run data-parallel too (every rank applies the same update to its full copy).
static void fused_unit_done(GPT2* m, int unit, void* vctx) {
    FusedCtx* c = (FusedCtx*)vctx;
    average_unit_grads(m, unit);
    double s = unit_grad_sumsq(m, unit);
    c->sumsq += s;
    if (c->norm_only) return;
    if (!isfinite(s)) { c->nonfinite_units++; return; }
    float* scratch = unit == 0 ? m->gscratch_embed : m->gscratch_block;
    for (int i = 0; i < m->layout.num_tensors; i++) {
        ModelTensor* p = &m->layout.tensors[i];
        if (p->unit != unit) continue;
        float* g = scratch + p->scratch_offset;
        if (c->clip_scale != 1.0f) for (size_t j = 0; j < p->shape.numel; j++) g[j] *= c->clip_scale;
        optimizer_apply(m, c->o, i, g, c->step, c->lr_scale);
    }
}

// ------------------------------------------------------------------------------------------------
// 5. the model as the shared run loop sees it (trainer/run.h): checkpoint blobs, init, loss, sampling

typedef struct { GPT2* m; OptRun* o; } Trainer;

// The checkpoint's blobs (names and order: trainer/model.c) point straight into the model: fp32 weights,
// the bf16 copy (bf16 mode), every optimizer state buffer.
// With -zero 1 the state blobs are the unsharded layout, staged in full_buf, and so is a sharded fp32
// master (full_master): assembled from every rank's shard before a save (ops_ckpt_to_host, a
// collective), this rank's part taken back out after a load (ops_ckpt_from_host). So a checkpoint is
// the same file whatever the world size or -zero. (The staging is host memory outside the ledger, held
// only while a checkpoint is written or read, as on the CUDA trainer.)
static int ops_ckpt_blobs(void* vt, CkptBlob* blobs) {
    Trainer* t = (Trainer*)vt;
    OptRun* o = t->o;
    GPT2* m = t->m;
    if (!o->zero)
        return model_checkpoint_blobs(blobs, &m->layout, &o->layout, m->precision, m->params_f32, m->params_bf16, o->buf);
    for (int b = 0; b < o->zero->full.nbuf; b++) o->full_buf[b] = xcalloc(o->zero->full.buf_bytes[b] ? o->zero->full.buf_bytes[b] : 1, 1);
    float* w = m->params_f32;
    if (m->master_n < m->layout.num_params) w = o->full_master = (float*)xmalloc(m->layout.num_params * sizeof(float));
    return model_checkpoint_blobs(blobs, &m->layout, &o->zero->full, m->precision, w, m->params_bf16, o->full_buf);
}

static void ops_ckpt_to_host(void* vt, CkptBlob* blobs, int n) {
    Trainer* t = (Trainer*)vt;
    OptRun* o = t->o;
    GPT2* m = t->m;
    if (!o->zero) return;
    zero_gather_state(o->zero, o->buf, o->full_buf);
    if (o->full_master) { // the sharded fp32 master: every rank's range from that rank
        const ZeroPlan* z = o->zero;
        size_t* cd = (size_t*)xmalloc(2 * z->world * sizeof(size_t));
        for (int r = 0; r < z->world; r++) { cd[r] = zero_count(z, r); cd[z->world + r] = z->bound[r]; }
        if (m->master_n) memcpy(o->full_master + m->master_lo, m->params_f32, m->master_n * sizeof(float));
        dist_allgather_bytes(o->full_master, cd, cd + z->world, sizeof(float));
        free(cd);
    }
}

static void ops_ckpt_from_host(void* vt, CkptBlob* blobs, int n) {
    Trainer* t = (Trainer*)vt;
    OptRun* o = t->o;
    if (!o->zero) return;
    zero_scatter_state(o->zero, o->full_buf, o->buf);
    if (o->full_master && t->m->master_n) memcpy(t->m->params_f32, o->full_master + t->m->master_lo, t->m->master_n * sizeof(float));
}

static void ops_ckpt_release(void* vt, CkptBlob* blobs, int n) {
    OptRun* o = ((Trainer*)vt)->o;
    for (int b = 0; b < MAX_STATE_BUFFERS; b++) { free(o->full_buf[b]); o->full_buf[b] = NULL; }
    free(o->full_master);
    o->full_master = NULL;
}

static void ops_init(void* vt, uint64_t seed) {
    Trainer* t = (Trainer*)vt;
    gpt2_init(t->m, seed);
    optimizer_init_state(t->o, t->m);
}

static void ops_set_weights(void* vt, const float* w) {
    GPT2* m = ((Trainer*)vt)->m;
    if (m->master_n) memcpy(m->params_f32, w + m->master_lo, m->master_n * sizeof(float)); // a sharded master: its range
    if (m->params_bf16) for (size_t i = 0; i < m->layout.num_params; i++) m->params_bf16[i] = f32_to_bf16(w[i]);
}

static float ops_loss(void* vt, const int* inputs, const int* targets, int B, int T) {
    GPT2* m = ((Trainer*)vt)->m;
    gpt2_forward(m, inputs, targets, B, T, 0);
    return m->mean_loss;
}

static void ops_next_token_probs(void* vt, const int* tokens, int n, float* probs) {
    GPT2* m = ((Trainer*)vt)->m;
    gpt2_forward(m, tokens, NULL, 1, n, 1);
    memcpy(probs, m->acts.logits, (size_t)m->config.vocab_size * sizeof(float));
}

// ------------------------------------------------------------------------------------------------
// 6. the step: train_step (every optimizer but the fused ones), train_step_fused (LOMO, AdaLomo),
//    maybe_update_hessian (Sophia), then main

typedef struct { float loss, norm; int skipped; } StepResult;

// Forward and backward over -d tokens (accum micro-steps), the global gradient norm, clipping, one
// optimizer step. A non-finite loss or gradient skips the update (the caller counts and logs it).
static StepResult train_step(GPT2* m, OptRun* o, Run* r, int opt_t, float lr_scale) {
    const Args* a = &r->a;
    StepResult res = { 0.0f, 0.0f, 0 };
    zero_grads(m);
    for (int micro = 0; micro < r->accum; micro++) {
        run_next_batch(r, m->inputs, m->targets);
        gpt2_forward(m, m->inputs, m->targets, a->B, a->T, 0);
        res.loss += m->mean_loss / r->accum;
        gpt2_backward(m, a->B, a->T, 1.0f / r->accum, accumulate_unit_bf16, o);
    }
    average_fp32_grads(m, o);
    res.loss = average_loss(res.loss);
    res.norm = (float)sqrt(grad_sumsq(m, o));
    if (!isfinite(res.loss) || !isfinite(res.norm)) { res.skipped = 1; return res; }
    float clip_scale = (a->grad_clip > 0.0f && res.norm > a->grad_clip) ? a->grad_clip / res.norm : 1.0f;
    o->nonfinite_update = 0;
    optimizer_step(m, o, opt_t, lr_scale, clip_scale);
    if (o->nonfinite_update) res.skipped = 2; // a non-finite update: rolled back, counted like a skip
    return res;
}

// LOMO and AdaLomo update each unit inside backward, as soon as its gradient exists, so no model-wide
// gradient is ever held. Clipping needs the global norm before the first update, so with -g it takes
// two passes: the first backward only measures the norm, and the forward is repeated because backward
// consumes the probabilities in place. (No gradient accumulation: run_check_args refuses it.)
static StepResult train_step_fused(GPT2* m, OptRun* o, Run* r, int opt_t, float lr_scale) {
    const Args* a = &r->a;
    StepResult res = { 0.0f, 0.0f, 0 };
    FusedCtx c = { o, opt_t, lr_scale, 1.0f, 0, 0.0, 0 };
    o->nonfinite_update = 0;
    run_next_batch(r, m->inputs, m->targets);
    gpt2_forward(m, m->inputs, m->targets, a->B, a->T, 0);
    res.loss = average_loss(m->mean_loss);
    if (!isfinite(res.loss)) { res.skipped = 1; return res; }
    if (a->grad_clip > 0.0f) {
        c.norm_only = 1;
        gpt2_backward(m, a->B, a->T, 1.0f, fused_unit_done, &c);
        res.norm = (float)sqrt(c.sumsq);
        if (!isfinite(res.norm)) { res.skipped = 1; return res; }
        c.norm_only = 0;
        c.sumsq = 0.0;
        c.clip_scale = res.norm > a->grad_clip ? a->grad_clip / res.norm : 1.0f;
        gpt2_forward(m, m->inputs, m->targets, a->B, a->T, 0);
    }
    gpt2_backward(m, a->B, a->T, 1.0f, fused_unit_done, &c);
    if (a->grad_clip <= 0.0f) res.norm = (float)sqrt(c.sumsq);
    agree_nonfinite(o);
    if (c.nonfinite_units) res.skipped = 1;
    else if (o->nonfinite_update) res.skipped = 2;
    return res;
}

// Sophia's Gauss-Newton-Bartlett estimate, every k applied steps: on fresh batches, labels are sampled
// from the model's own softmax, the loss on those labels is backpropagated, the gradient is clipped to
// norm 1 (as the reference training script does), and the optimizer folds grad*grad into its Hessian
// EMA. Seeded from (seed, step), so a resumed run draws the same labels.
static void maybe_update_hessian(GPT2* m, OptRun* o, Run* r, int step, int opt_t) {
    if (!(o->opt->flags & OPT_HESSIAN) || opt_t % r->hyper.hess_interval != 0) return;
    const Args* a = &r->a;
    Rng rng;
    run_hessian_stream(r, step, &rng);
    size_t BT = (size_t)a->B * a->T;
    int V = m->config.vocab_size;
    float* u = (float*)xmalloc(BT * sizeof(float));
    zero_grads(m);
    for (int micro = 0; micro < r->accum; micro++) {
        run_next_batch(r, m->inputs, m->targets);
        gpt2_forward(m, m->inputs, NULL, a->B, a->T, 0);
        softmax_crossentropy_forward(m->acts.losses, m->acts.logits, NULL, (int)BT, V);
        run_hessian_draws(r, &rng, u); // this rank's rows' draws of the global micro-batch
        for (size_t i = 0; i < BT; i++) m->targets[i] = sample_index(m->acts.logits + i * V, V, u[i]);
        gpt2_backward(m, a->B, a->T, 1.0f / r->accum, accumulate_unit_bf16, o);
    }
    free(u);
    average_fp32_grads(m, o);
    logger_write(&r->lg, "{\"type\":\"hessian\",\"step\":%d}", step);
    double norm = sqrt(grad_sumsq(m, o));
    if (!isfinite(norm)) return; // a non-finite estimate is dropped, never folded into h
    float scale = norm > 1.0 ? (float)(1.0 / norm) : 1.0f;
    for (int i = 0; i < m->layout.num_tensors; i++) {
        ModelTensor* p = &m->layout.tensors[i];
        size_t start, n;
        tensor_range(o, m, i, &start, &n);
        if (n == 0) continue; // another rank's
        OptTensor ot = opt_tensor(o, m, i, tensor_grad_f32(m, p, scale, start, n), &start);
        OptHyper h = tensor_hyper(o, p);
        o->opt->hessian(&h, &ot);
    }
}

static void gpt2_free(GPT2* m, OptRun* o) {
    optimizer_disconnect(o);
    if (o->zero) { zero_plan_free(o->zero); free(o->zero); } // o->layout is the plan's
    else state_layout_free(&o->layout);
    model_layout_free(&m->layout);
}

// The model and the optimizer state of `rank` in a world of `world`, everything through the ledger (a
// dry ledger only plans). With -zero 1 in bf16 mode the fp32 master is the rank's shard.
static void build(GPT2* m, OptRun* o, const Run* r, int world, int rank, Ledger* led) {
    const Args* a = &r->a;
    gpt2_layout(m, &r->cfg, a->precision);
    optimizer_plan(o, m, r->opt, &r->hyper, a->zero, world, rank);
    size_t lo = 0, n = m->layout.num_params;
    if (o->zero) { lo = o->zero->bound[rank]; n = zero_count(o->zero, rank); }
    gpt2_alloc(m, a->B, a->T, (r->opt->flags & OPT_FUSED_BACKWARD) != 0, lo, n, led);
    optimizer_alloc(o, led);
    o->stochastic_rounding = a->sr;
    o->seed = a->seed;
    ledger_record(led, MEM_WORKSPACE, "matmul packing", matmul_workspace_bytes(), NULL);
}

// Pre-flight: the whole plan, dry, against the memory this machine has available (exit 2 with the
// ledger's numbers when it cannot fit, instead of failing halfway through the allocations).
static void preflight(const Run* r) {
    Ledger dry;
    ledger_init(&dry, 1);
    GPT2 m;
    OptRun o;
    build(&m, &o, r, dist_world(), dist_rank(), &dry);
    char msg[1024];
    if (ledger_check_fits(&dry, ledger_mem_available(NULL), msg, sizeof(msg)) != 0) user_error("%s", msg);
    gpt2_free(&m, &o);
}

// -plan-world N without -plan-rank: the rank whose shard keeps the most bytes (rank 0 without -zero).
static int plan_largest_rank(const Run* r) {
    if (!r->a.zero) return 0;
    ModelLayout ml;
    model_layout_build(&ml, &r->cfg);
    ZeroPlan z;
    zero_plan_build(&z, &ml, r->opt, &r->hyper, r->a.plan_world, 0);
    int k = zero_largest_rank(&z, r->a.precision == PRECISION_BF16);
    zero_plan_free(&z);
    model_layout_free(&ml);
    return k;
}

#ifndef TESTING
int main(int argc, char** argv) {
    Run run;
    int rc = run_setup(&run, argc, argv, "cpu", NULL);
    if (rc >= 0) return rc;
    const Args* a = &run.a;
    int fused = (run.opt->flags & OPT_FUSED_BACKWARD) != 0;

    // ---- model and optimizer state, everything through the ledger (planned dry first)
    if (!a->memory_only) preflight(&run);
    GPT2 model;
    OptRun orun;
    // -plan-world N (with -memory-only): one rank of N planned without MPI, by default the largest
    int world = run.world, rank = run.rank;
    if (a->plan_world) { world = a->plan_world; rank = a->plan_rank >= 0 ? a->plan_rank : plan_largest_rank(&run); }
    build(&model, &orun, &run, world, rank, &run.led);
    run_set_model(&run, &model.layout, a->precision == PRECISION_BF16 ? "bf16 (fp32 master)" : "fp32", "");
    char where[160] = "";
    if (a->plan_world) {
        snprintf(where, sizeof(where), ", rank %d of a planned world of %d%s", rank, world,
                 orun.zero ? " (-zero 1)" : " (plain data parallel: every rank holds the same)");
        if (orun.zero) for (int q = 0; q < world; q++) zero_print_shard(stdout, orun.zero, model.layout.num_params, q, a->precision == PRECISION_BF16);
    } else if (orun.zero) {
        zero_print_shard(stderr, orun.zero, model.layout.num_params, rank, a->precision == PRECISION_BF16); // stdout is rank 0's
    }
    if (run_memory_only(&run, where)) { gpt2_free(&model, &orun); return 0; }
    optimizer_connect(&orun, &model);

    // ---- data, init or resume, log
    Trainer tr = { &model, &orun };
    ModelOps ops = { &tr, ops_ckpt_blobs, ops_ckpt_to_host, ops_ckpt_from_host, ops_ckpt_release, ops_init, ops_set_weights,
                     ops_loss, ops_next_token_probs };
    if (run_start(&run, &ops)) { rc = run_finish(&run, RUN_STOP, "", 0.0, ""); gpt2_free(&model, &orun); return rc; }
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("training on %d CPU thread%s\n", threads, threads > 1 ? "s" : "");

    // ---- train
    for (int step = run.start_step + 1; step <= a->steps; step++) {
        double t0 = now_seconds();
        float lr_scale = run_lr_scale(&run, step);
        int opt_t = run_opt_step(&run, step);
        StepResult s = fused ? train_step_fused(&model, &orun, &run, opt_t, lr_scale)
                             : train_step(&model, &orun, &run, opt_t, lr_scale);
        if (!s.skipped) maybe_update_hessian(&model, &orun, &run, step, opt_t);
        rc = run_after_step(&run, step, s.loss, s.norm, run.hyper.lr * lr_scale, now_seconds() - t0, s.skipped, "");
        if (rc) break;
    }

    // ---- summary
    char mem[256];
    int n = snprintf(mem, sizeof(mem), "memory: ledger peak %.2f MiB, process peak RSS %.2f MiB\n", run.led.peak / 1048576.0,
                     process_peak_rss() / 1048576.0);
    if (orun.nonfinite) snprintf(mem + n, sizeof(mem) - n, "note: the optimizer saw %ld non-finite gradient elements\n", orun.nonfinite);
    rc = run_finish(&run, rc, mem, run.led.peak / 1048576.0, "");
    gpt2_free(&model, &orun);
    return rc;
}
#endif
