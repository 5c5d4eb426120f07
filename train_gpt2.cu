// train_gpt2.cu: the CUDA trainer. The same GPT-2 as train_gpt2.c (the CPU trainer, its reference),
// the same flags, output lines, log.jsonl and checkpoint format, so a checkpoint written by one resumes
// in the other.
//
// Map of this file:
//   1. configuration and parameter layout (the CPU's: 16 tensors in one flat buffer, same order)
//   2. the model on the device: buffers, forward, backward (kernels in cuda/*.cuh)
//   3. gradient norm, initialisation, host <-> device copies
//   4. the model as the shared run loop (trainer/run.c) sees it: checkpoint blobs, init, loss, sampling
//   5. the device, the step (train_step, timed per phase with cudaEvents), main: train_gpt2.c's shape
//
// Data parallel (mpirun -np N ./train_gpu, one GPU per rank): the run loop, each rank's rows of the
// global batch, the ZeRO-1 plan and the checkpoints are the CPU trainer's code (trainer/run.c,
// trainer/zero.c); the GPU side adds the NCCL collectives (trainer/dist_nccl.cuh: the gradients averaged
// after backward, the weights all-gathered after a -zero 1 step) and the GpuOpt over this rank's slices
// (trainer/zero_gpu.cuh). -dist-force 1 runs that path at one rank.
//
// Mixed precision (-precision bf16, the default): parameters, gradients and activations are bf16 on the
// device; LayerNorm statistics, softmax statistics and losses are fp32; the optimizer (one fused launch,
// optim/optim.cuh) updates the fp32 master and writes the bf16 copy (round to nearest, or stochastic
// rounding with -sr 1, with the CPU's hash so both trainers round the same bits). -precision fp32 keeps
// everything fp32 (matmuls on TF32 tensor cores) with no master copy.
// -r 1 recomputes the GELU output in backward from its input instead of keeping it for every layer.
// Determinism: no float atomics anywhere; every reduction runs in a fixed order (see the kernel headers),
// and the matmul algorithm per shape is fixed, so the same seed and flags give the same losses.
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <errno.h>
#include <sys/stat.h>
#include "common/util.h"
#include "common/numerics.h"
#include "common/rng.h"
#include "common/ledger.h"
#include "common/schedule.h"
#include "common/logger.h"
#include "common/checkpoint.h"
#include "trainer/cli.h"
#include "trainer/run.h"
#include "trainer/model.h"
#include "optim/optim.h"
#include "data/tokenizer.h"
#include "data/dataloader.h"
#include "common/cuda_util.cuh"
#include "cuda/encoder.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/gelu.cuh"
#include "cuda/matmul.cuh"
#include "cuda/attention_routes.cuh"
#include "cuda/prof.cuh"
#include "cuda/classifier.cuh"
#include "optim/optim.cuh"
#include "trainer/dist_nccl.cuh"
#include "trainer/zero_gpu.cuh"

// ------------------------------------------------------------------------------------------------
// 1. configuration and parameter layout (trainer/model.c, shared with train_gpt2.c)

// The 16 parameter tensors, the optimizer's tensor list (unit 0 = wte, wpe, lnf.w, lnf.b; then 12 per
// block), the initialisation, the optimizer state layout and the checkpoint blob names are
// trainer/model.c: the very code the CPU trainer runs, so checkpoints move between the two.

// ------------------------------------------------------------------------------------------------
// 2. the model on the device

// Activation pointers for a batch (B, T) of storage type T_. Per-layer tensors are (L, B, T, ...).
// The backward's scratch lives in buffers the forward no longer needs by then (llm.c does the same):
// dln is the forward's tmp (the matmul outputs the residual adds read, dead after the forward), and dres,
// datty, dqkv, dfch lie inside the logits buffer, whose last reader is the LM head's backward (it turns
// dlogits into dln and the wte gradient) before the first of them is written. At d12, B=32, T=1024 that
// is 10 (B, T, C) tensors, 480 MiB in bf16, off the peak.
template <typename T_>
struct Acts {
    T_ *encoded, *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3, *lnf, *logits, *tmp;
    T_ *dres, *dln, *datty, *dqkv, *dfch;      // backward scratch, one layer at a time (dln = tmp; the others in logits)
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean, *lnf_rstd, *lse, *losses, *dpre;
};

typedef struct GPT2 {
    GPT2Config config;
    int precision;            // PRECISION_BF16 or PRECISION_FP32
    int recompute;            // -r: 1 = recompute GELU in backward
    ModelLayout layout;       // sizes, offsets and the optimizer's tensors (trainer/model.c)
    size_t elt;               // bytes per stored element (2 bf16, 4 fp32)
    // device buffers
    void* params;             // (num_params) bf16 working copy, or the fp32 parameters
    float* master;            // fp32 master (bf16 mode) indexed by flat element, of which only
                              // [master_lo, master_lo + master_n) exists (-zero 1: this rank's range);
                              // == params in fp32 mode (all of it)
    size_t master_lo, master_n;
    void* grads;              // (num_params) same type as params; NULL with a fused-backward optimizer (gscratch)
    void* gscratch;           // lomo/adalomo (OPT_FUSED_BACKWARD): the gradients of unit 0 (unit_size[0]
                              // elements: wte, wpe, lnf) then of one block (unit_size[1]), same type as params;
                              // NULL otherwise. No model-wide gradient exists (train_step_fused).
    void (*unit_done)(struct GPT2* m, int unit, void* ctx); // called by backward when a unit's gradient is
    void* unit_ctx;           // complete (block l: unit 1 + l; then unit 0), NULL: none (train_step_fused)
    void* act_memory;         // activations + backward scratch, storage type
    float* stat_memory;       // fp32 statistics
    float* partial;           // column-reduction scratch
    double* norm_partial;     // gradient-norm partial sums
    int* d_tokens;            // (2, B, T) inputs then targets
    float* d_uniform;         // (B, T) Sophia's label draws (maybe_update_hessian); NULL for other optimizers
    int* d_group;             // encoder backward grouping: tokens (BT), starts (BT+1), positions (BT)
    // host
    int B, T;                 // allocated batch and sequence length
    int* inputs;              // (B,T)
    int* targets;             // (B,T)
    int* h_group;             // (3 BT + 1)
    int* h_counts;            // (V)
    float* h_losses;          // (B,T)
    float mean_loss;
} GPT2;

#define NORM_BLOCKS 1024

static size_t round128(size_t n) { return (n + 127) & ~(size_t)127; }

// The logits buffer: (B, T, Vp) logits, and in backward the scratch dres, datty, dqkv, dfch (Acts above),
// whichever is larger (the scratch only for a tiny vocabulary).
static size_t logits_elems(const GPT2Config* cfg, int B, int T) {
    size_t C = cfg->channels, Vp = cfg->padded_vocab_size, BT = (size_t)B * T;
    size_t scratch = round128(BT * C) * 2 + round128(BT * 3 * C) + round128(BT * 4 * C);
    return round128(BT * Vp) > scratch ? round128(BT * Vp) : scratch;
}

// Elements of storage type for the activations and backward scratch at (B, T).
static size_t activation_elems(const GPT2Config* cfg, int B, int T, int recompute) {
    size_t L = cfg->num_layers, C = cfg->channels, BT = (size_t)B * T;
    size_t per_layer = round128(BT * C) * 5 + round128(BT * 3 * C) + round128(BT * 4 * C) * (recompute ? 1 : 2);
    size_t gelu_shared = recompute ? round128(BT * 4 * C) : 0;
    size_t once = round128(BT * C) * 3;                                                    // encoded, lnf, tmp (= dln)
    return L * per_layer + gelu_shared + once + logits_elems(cfg, B, T);
}

static size_t stat_floats(const GPT2Config* cfg, int B, int T) {
    size_t L = cfg->num_layers, NH = cfg->num_heads, BT = (size_t)B * T;
    return round128(L * BT) * 4 + round128(BT) * 3 + round128(L * B * NH * T) + round128(B * NH * T);
}

template <typename T_>
static Acts<T_> point_acts(GPT2* m, int B, int T) {
    const GPT2Config* cfg = &m->config;
    size_t L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, BT = (size_t)B * T;
    Acts<T_> a;
    T_* p = (T_*)m->act_memory;
#define TAKE(ptr, n) do { a.ptr = p; p += round128(n); } while (0)
    TAKE(encoded, BT * C);
    TAKE(ln1, L * BT * C);
    TAKE(qkv, L * BT * 3 * C);
    TAKE(atty, L * BT * C);
    TAKE(res2, L * BT * C);
    TAKE(ln2, L * BT * C);
    TAKE(fch, L * BT * 4 * C);
    TAKE(fch_gelu, (m->recompute ? 1 : L) * BT * 4 * C);
    TAKE(res3, L * BT * C);
    TAKE(lnf, BT * C);
    TAKE(tmp, BT * C);
    a.dln = a.tmp;
    T_* end = p + logits_elems(cfg, B, T);
    TAKE(logits, 0);
    p = a.logits; // the backward scratch, inside the logits buffer
    TAKE(dres, BT * C);
    TAKE(datty, BT * C);
    TAKE(dqkv, BT * 3 * C);
    TAKE(dfch, BT * 4 * C);
    CHECK(p <= end);
#undef TAKE
    float* f = m->stat_memory;
#define TAKEF(ptr, n) do { a.ptr = f; f += round128(n); } while (0)
    TAKEF(ln1_mean, L * BT);
    TAKEF(ln1_rstd, L * BT);
    TAKEF(ln2_mean, L * BT);
    TAKEF(ln2_rstd, L * BT);
    TAKEF(lnf_mean, BT);
    TAKEF(lnf_rstd, BT);
    TAKEF(losses, BT);
    TAKEF(lse, L * B * NH * T);
    TAKEF(dpre, B * NH * T);
#undef TAKEF
    return a;
}

// LOMO and AdaLomo (OPT_FUSED_BACKWARD) update each unit inside backward as soon as its gradient is
// complete, so the gradients live in a scratch of unit 0 plus one block instead of the model-wide buffer.
// Unit 0 (wte, wpe, lnf.w, lnf.b) has its own part, alive through the whole backward: the tied wte's
// gradient is produced twice, by the LM head first and by the token embedding last (the CPU trainer's
// gscratch_embed); the blocks take turns in the other part. In the storage type (bf16 or fp32), each
// tensor at its ModelTensor.scratch_offset (64-byte aligned, trainer/model.c).
static void gpt2_alloc_gscratch(GPT2* m, Ledger* led) {
    const size_t n = m->layout.unit_size[0] + m->layout.unit_size[1];
    m->gscratch = dev_alloc(led, MEM_GRADS, m->elt == 2 ? "fused-backward gradient scratch (bf16)"
                                                         : "fused-backward gradient scratch (fp32)", n * m->elt);
}
// Unit u's part of the scratch and its elements.
static void* unit_gscratch(const GPT2* m, int unit) { return (char*)m->gscratch + (unit == 0 ? 0 : m->layout.unit_size[0] * m->elt); }
static size_t unit_gscratch_elems(const GPT2* m, int unit) { return m->layout.unit_size[unit == 0 ? 0 : 1]; }

// Allocates everything through the ledger (device memory with dev_alloc; a dry ledger only records).
// fused: the optimizer updates inside backward (OPT_FUSED_BACKWARD): a one-unit gradient scratch instead
// of the model-wide gradients.
static void gpt2_build(GPT2* m, const GPT2Config* cfg, int precision, int recompute, int B, int T, Ledger* led, int fused = 0) {
    memset(m, 0, sizeof(*m));
    model_layout_build(&m->layout, cfg);
    m->config = *cfg;
    m->precision = precision;
    m->recompute = recompute;
    m->B = B; m->T = T; // the largest batch forward and backward will run
    size_t P = m->layout.num_params, BT = (size_t)B * T, C = cfg->channels;
    int bf = precision == PRECISION_BF16;
    m->elt = bf ? 2 : 4;
    if (bf) {
        m->params = dev_alloc(led, MEM_PARAMS, "params (bf16)", P * 2);
        if (!fused) m->grads = dev_alloc(led, MEM_GRADS, "grads (bf16)", P * 2);
        // the fp32 master comes with the optimizer: gpt2_alloc_master, once the -zero 1 plan is known
    } else {
        m->params = dev_alloc(led, MEM_PARAMS, "params (fp32)", P * 4);
        m->master = (float*)m->params;
        m->master_lo = 0;
        m->master_n = P;
        if (!fused) m->grads = dev_alloc(led, MEM_GRADS, "grads (fp32)", P * 4);
    }
    if (fused) gpt2_alloc_gscratch(m, led);
    m->act_memory = dev_alloc(led, MEM_ACTIVATIONS, bf ? "activations (bf16)" : "activations (fp32)",
                              activation_elems(cfg, B, T, recompute) * m->elt);
    m->stat_memory = (float*)dev_alloc(led, MEM_ACTIVATIONS, "statistics (fp32)", stat_floats(cfg, B, T) * 4);
    m->partial = (float*)dev_alloc(led, MEM_WORKSPACE, "reduction partials", memk_partial_floats(C) * sizeof(float));
    m->norm_partial = (double*)dev_alloc(led, MEM_WORKSPACE, "norm partials", NORM_BLOCKS * sizeof(double));
    m->d_tokens = (int*)dev_alloc(led, MEM_DATA, "batch inputs+targets", 2 * BT * sizeof(int));
    m->d_group = (int*)dev_alloc(led, MEM_WORKSPACE, "encoder grouping", (3 * BT + 1) * sizeof(int));
    if (!led->dry) {
        m->inputs = (int*)xcalloc(2 * BT, sizeof(int));
        m->targets = m->inputs + BT;
        m->h_group = (int*)xcalloc(3 * BT + 1, sizeof(int));
        m->h_counts = (int*)xcalloc((size_t)cfg->vocab_size, sizeof(int));
        m->h_losses = (float*)xcalloc(BT, sizeof(float));
    }
}

// bf16 mode: the fp32 master of flat elements [lo, lo + n): all of them, or with -zero 1 this rank's range
// (the CPU trainer's sharded master: each rank updates only its range, and the forward reads the bf16
// copy, all-gathered after every step). m->master is offset by -lo so that the optimizer kernels index it
// with the same flat offsets as the gradients and the bf16 copy; only [lo, lo + n) is ever touched.
static void gpt2_alloc_master(GPT2* m, size_t lo, size_t n, Ledger* led) {
    if (m->precision != PRECISION_BF16) return; // fp32 mode: the parameters are the master
    const size_t P = m->layout.num_params;
    CHECK(lo + n <= P);
    m->master_lo = lo;
    m->master_n = n;
    float* shard = (float*)dev_alloc(led, MEM_MASTER, n < P ? "master shard (fp32)" : "master weights (fp32)", n * sizeof(float));
    m->master = shard ? shard - lo : NULL;
}
static int master_sharded(const GPT2* m) { return m->precision == PRECISION_BF16 && m->master_n < m->layout.num_params; }

static void gpt2_free_host(GPT2* m) {
    model_layout_free(&m->layout);
    free(m->inputs);
    free(m->h_group);
    free(m->h_counts);
    free(m->h_losses);
}

// Typed pointer to tensor k's layer l slice (l = 0 for whole tensors).
template <typename T_>
static T_* tensor_ptr(const GPT2* m, void* base, int k, int l) {
    return (T_*)base + m->layout.param_offsets[k] + (size_t)l * (m->layout.param_sizes[k] / (k == P_WTE || k == P_WPE || k >= P_LNFW ? 1 : m->config.num_layers));
}

// Where backward writes the gradients: the model-wide buffer, or with a fused-backward optimizer the unit
// scratch (gpt2_alloc_gscratch). tensor_ptr<T_>(m, G, k, l) on a GradView G is tensor k's layer-l gradient.
struct GradView { void* flat; void* scratch; };
static GradView grad_view(const GPT2* m) { GradView g = { m->grads, m->gscratch }; return g; }
template <typename T_>
static T_* tensor_ptr(const GPT2* m, GradView g, int k, int l) {
    if (!g.scratch) return tensor_ptr<T_>(m, g.flat, k, l);
    // the optimizer's tensor list (trainer/model.c): wte, wpe, lnf.w, lnf.b, then 12 per block in P_ order
    const int i = k == P_WTE ? 0 : k == P_WPE ? 1 : k == P_LNFW ? 2 : k == P_LNFB ? 3 : 4 + 12 * l + (k - P_LN1W);
    const ModelTensor* p = &m->layout.tensors[i];
    return (T_*)unit_gscratch(m, p->unit) + p->scratch_offset;
}

// What the forward's classifier scores: nothing (logits only), m->targets, or labels drawn on the device
// from the model's own softmax with the uniforms in m->d_uniform (Sophia's Gauss-Newton-Bartlett pass).
enum { FWD_LOGITS = 0, FWD_TARGETS = 1, FWD_SAMPLED = 2 };

// Forward over (B, T) tokens of m->inputs (host). With targets (FWD_TARGETS, FWD_SAMPLED): per-position
// losses and mean_loss. With grad_scale != 0 the classifier also turns the logits into
// d(mean loss * grad_scale)/d(logits) in place, ready for gpt2_backward.
template <typename T_>
static void gpt2_forward(GPT2* m, int B, int T, int with_targets, float grad_scale) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t BT = (size_t)B * T;
    CHECK(B <= m->B && T <= m->T);
    for (size_t i = 0; i < BT; i++)
        if (m->inputs[i] < 0 || m->inputs[i] >= V) user_error("token id %d at position %zu is outside the vocabulary (0..%d)", m->inputs[i], i, V - 1);
    CUDA_CHECK(cudaMemcpy(m->d_tokens, m->inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (with_targets == FWD_TARGETS) CUDA_CHECK(cudaMemcpy(m->d_tokens + BT, m->targets, BT * sizeof(int), cudaMemcpyHostToDevice));
    Acts<T_> a = point_acts<T_>(m, B, T);
    void* W = m->params;
    // -prof: the work each launch must do (flops for matmuls and attention, else the bytes it moves at least)
    const double E = sizeof(T_), NHd = NH, HSd = C / NH, Td = T;
    const double mmf = 2.0 * BT * C * C, act = E * BT * C; // one (C, C) matmul's flops; one (B, T, C) tensor's bytes
    PROF(PROF_ENCODER_FWD, 0, 3 * act, encoder_forward<T_>(a.encoded, m->d_tokens, tensor_ptr<T_>(m, W, P_WTE, 0), tensor_ptr<T_>(m, W, P_WPE, 0), B, T, C));
    // layer 0's ln1 alone; every later LayerNorm is fused with the residual add before it (llm.c's fusion:
    // residual_layernorm_forward writes the residual and its LayerNorm in one pass, the same values)
    PROF(PROF_LN_FWD, 0, 2 * act, layernorm_forward<T_>(a.ln1, a.ln1_mean, a.ln1_rstd, a.encoded, tensor_ptr<T_>(m, W, P_LN1W, 0),
                                                       tensor_ptr<T_>(m, W, P_LN1B, 0), (int)BT, C));
    for (int l = 0; l < L; l++) {
        const T_* x = l == 0 ? a.encoded : a.res3 + (size_t)(l - 1) * BT * C;
        T_* ln1 = a.ln1 + l * BT * C;
        T_* qkv = a.qkv + l * BT * 3 * C;
        T_* atty = a.atty + l * BT * C;
        T_* res2 = a.res2 + l * BT * C;
        T_* ln2 = a.ln2 + l * BT * C;
        T_* fch = a.fch + l * BT * 4 * C;
        T_* fch_gelu = a.fch_gelu + (m->recompute ? 0 : l * BT * 4 * C);
        T_* res3 = a.res3 + l * BT * C;
        PROF(PROF_MM_QKV, 3 * mmf, 0, matmul_forward<T_>(qkv, ln1, tensor_ptr<T_>(m, W, P_QKVW, l), tensor_ptr<T_>(m, W, P_QKVB, l), (int)BT, C, 3 * C));
        // causal: Q K^T and P V over the T (T + 1) / 2 (query, key) pairs of each head
        PROF(PROF_ATTN_FWD, 4.0 * B * NHd * HSd * Td * (Td + 1) / 2, 0,
             attention_forward_route(atty, a.lse + (size_t)l * B * NH * T, qkv, B, T, C, NH));
        PROF(PROF_MM_ATTPROJ, mmf, 0, matmul_forward<T_>(a.tmp, atty, tensor_ptr<T_>(m, W, P_ATTPROJW, l), tensor_ptr<T_>(m, W, P_ATTPROJB, l), (int)BT, C, C));
        // res2 = x + attproj, ln2 = LayerNorm(res2): reads 2 tensors, writes 2
        PROF(PROF_RESLN_FWD, 0, 4 * act, residual_layernorm_forward<T_>(res2, ln2, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, x, a.tmp,
                                                                        tensor_ptr<T_>(m, W, P_LN2W, l), tensor_ptr<T_>(m, W, P_LN2B, l), (int)BT, C));
        PROF(PROF_MM_FC, 4 * mmf, 0, matmul_forward<T_>(fch, ln2, tensor_ptr<T_>(m, W, P_FCW, l), tensor_ptr<T_>(m, W, P_FCB, l), (int)BT, C, 4 * C));
        PROF(PROF_GELU_FWD, 0, 8 * act, gelu_forward<T_>(fch_gelu, fch, BT * 4 * C));
        PROF(PROF_MM_FCPROJ, 4 * mmf, 0, matmul_forward<T_>(a.tmp, fch_gelu, tensor_ptr<T_>(m, W, P_FCPROJW, l), tensor_ptr<T_>(m, W, P_FCPROJB, l), (int)BT, 4 * C, C));
        // res3 = res2 + fcproj, and the next LayerNorm of it: layer l + 1's ln1, or lnf after the last layer
        const int last = l == L - 1;
        T_* nln = last ? a.lnf : a.ln1 + (size_t)(l + 1) * BT * C;
        float* nmean = last ? a.lnf_mean : a.ln1_mean + (l + 1) * BT;
        float* nrstd = last ? a.lnf_rstd : a.ln1_rstd + (l + 1) * BT;
        const T_* nw = last ? tensor_ptr<T_>(m, W, P_LNFW, 0) : tensor_ptr<T_>(m, W, P_LN1W, l + 1);
        const T_* nb = last ? tensor_ptr<T_>(m, W, P_LNFB, 0) : tensor_ptr<T_>(m, W, P_LN1B, l + 1);
        PROF(PROF_RESLN_FWD, 0, 4 * act, residual_layernorm_forward<T_>(res3, nln, nmean, nrstd, res2, a.tmp, nw, nb, (int)BT, C));
    }
    // LM head tied to wte, over the padded vocabulary (rows V..Vp-1 of wte are zero; the classifier
    // ignores those columns and zeroes their gradient)
    PROF(PROF_MM_LMHEAD, 2.0 * BT * C * Vp, 0, matmul_forward<T_>(a.logits, a.lnf, tensor_ptr<T_>(m, W, P_WTE, 0), (const T_*)NULL, (int)BT, C, Vp));
    if (with_targets == FWD_LOGITS) return;
    if (with_targets == FWD_SAMPLED) {
        CHECK(m->d_uniform != NULL);
        PROF(PROF_CLASSIFIER, 0, E * BT * Vp, sample_targets<T_>(a.logits, m->d_uniform, m->d_tokens + BT, (int)BT, V, Vp));
    }
    PROF(PROF_CLASSIFIER, 0, 2 * E * BT * Vp, classifier<T_>(a.logits, a.losses, m->d_tokens + BT, grad_scale / (float)BT, (int)BT, V, Vp, grad_scale != 0.0f));
    CUDA_CHECK(cudaMemcpy(m->h_losses, a.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    for (size_t i = 0; i < BT; i++) sum += m->h_losses[i];
    m->mean_loss = (float)(sum / BT);
}

// Backward for the last forward (which must have run with grad_scale != 0). Gradients ADD into
// m->grads (zero them first; accumulation over micro-steps is the caller's choice).
template <typename T_>
static void gpt2_backward(GPT2* m, int B, int T) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t BT = (size_t)B * T;
    Acts<T_> a = point_acts<T_>(m, B, T);
    void* W = m->params;
    const GradView G = grad_view(m);
    float* part = m->partial;
    const double E = sizeof(T_), NHd = NH, HSd = C / NH, Td = T;
    const double mmf = 4.0 * BT * C * C, act = E * BT * C; // a (C, C) matmul's backward (dX and dW) flops; a (B, T, C) tensor's bytes
    // logits (now dlogits) -> lnf -> residual stream
    PROF(PROF_MMB_LMHEAD, 4.0 * BT * C * Vp, 0,
         matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_WTE, 0), (T_*)NULL, part, a.logits, a.lnf, tensor_ptr<T_>(m, W, P_WTE, 0), (int)BT, C, Vp));
    // the first gradient of the residual stream: written, not added (no memset of dres before it)
    const T_* xL = a.res3 + (size_t)(L - 1) * BT * C;
    PROF(PROF_LN_BWD, 0, 3 * act, layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LNFW, 0), tensor_ptr<T_>(m, G, P_LNFB, 0), part, a.dln, xL,
                                                        tensor_ptr<T_>(m, W, P_LNFW, 0), a.lnf_mean, a.lnf_rstd, (int)BT, C, 0));
    for (int l = L - 1; l >= 0; l--) {
        const T_* x = l == 0 ? a.encoded : a.res3 + (size_t)(l - 1) * BT * C;
        const T_* ln1 = a.ln1 + l * BT * C;
        const T_* qkv = a.qkv + l * BT * 3 * C;
        const T_* atty = a.atty + l * BT * C;
        const T_* res2 = a.res2 + l * BT * C;
        const T_* ln2 = a.ln2 + l * BT * C;
        const T_* fch = a.fch + l * BT * 4 * C;
        T_* fch_gelu = a.fch_gelu + (m->recompute ? 0 : l * BT * 4 * C);
        if (m->recompute) PROF(PROF_GELU_FWD, 0, 8 * act, gelu_forward<T_>(fch_gelu, fch, BT * 4 * C));
        // a.dres holds d(residual3): it flows unchanged to residual2 and x, each branch adds its part
        PROF(PROF_MMB_FCPROJ, 4 * mmf, 0, matmul_backward<T_>(a.dfch, tensor_ptr<T_>(m, G, P_FCPROJW, l), tensor_ptr<T_>(m, G, P_FCPROJB, l), part,
                                                             a.dres, fch_gelu, tensor_ptr<T_>(m, W, P_FCPROJW, l), (int)BT, 4 * C, C));
        PROF(PROF_GELU_BWD, 0, 12 * act, gelu_backward<T_>(a.dfch, fch, a.dfch, BT * 4 * C));
        PROF(PROF_MMB_FC, 4 * mmf, 0, matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_FCW, l), tensor_ptr<T_>(m, G, P_FCB, l), part, a.dfch, ln2,
                                                         tensor_ptr<T_>(m, W, P_FCW, l), (int)BT, C, 4 * C));
        PROF(PROF_LN_BWD, 0, 4 * act, layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LN2W, l), tensor_ptr<T_>(m, G, P_LN2B, l), part, a.dln,
                                                            res2, tensor_ptr<T_>(m, W, P_LN2W, l), a.ln2_mean + l * BT, a.ln2_rstd + l * BT, (int)BT, C));
        // now a.dres = d(residual2)
        PROF(PROF_MMB_ATTPROJ, mmf, 0, matmul_backward<T_>(a.datty, tensor_ptr<T_>(m, G, P_ATTPROJW, l), tensor_ptr<T_>(m, G, P_ATTPROJB, l), part,
                                                          a.dres, atty, tensor_ptr<T_>(m, W, P_ATTPROJW, l), (int)BT, C, C));
        // five products over the causal pairs (S again, dP, dQ, dK, dV): 2.5 times the forward's
        PROF(PROF_ATTN_BWD, 10.0 * B * NHd * HSd * Td * (Td + 1) / 2, 0,
             attention_backward_route(a.dqkv, a.dpre, a.datty, qkv, atty, a.lse + (size_t)l * B * NH * T, B, T, C, NH));
        PROF(PROF_MMB_QKV, 3 * mmf, 0, matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_QKVW, l), tensor_ptr<T_>(m, G, P_QKVB, l), part, a.dqkv, ln1,
                                                          tensor_ptr<T_>(m, W, P_QKVW, l), (int)BT, C, 3 * C));
        PROF(PROF_LN_BWD, 0, 4 * act, layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LN1W, l), tensor_ptr<T_>(m, G, P_LN1B, l), part, a.dln,
                                                            x, tensor_ptr<T_>(m, W, P_LN1W, l), a.ln1_mean + l * BT, a.ln1_rstd + l * BT, (int)BT, C));
        // now a.dres = d(x), the input of block l
        if (m->unit_done) m->unit_done(m, 1 + l, m->unit_ctx);
    }
    // token embedding: positions grouped by token on the host (deterministic sums, no atomics)
    int* tokens = m->h_group;
    int* starts = tokens + BT;
    int* positions = starts + BT + 1;
    int U = encoder_group_positions(m->inputs, (int)BT, V, m->h_counts, tokens, starts, positions);
    CUDA_CHECK(cudaMemcpy(m->d_group, m->h_group, (3 * BT + 1) * sizeof(int), cudaMemcpyHostToDevice));
    PROF(PROF_ENCODER_BWD, 0, 2 * act, encoder_backward<T_>(tensor_ptr<T_>(m, G, P_WTE, 0), tensor_ptr<T_>(m, G, P_WPE, 0), a.dres, m->d_group,
                                                           m->d_group + BT, m->d_group + 2 * BT + 1, U, B, T, C));
    if (m->unit_done) m->unit_done(m, 0, m->unit_ctx);
}

// The storage type is picked once here: gpt2_forward<bf16d> or gpt2_forward<float> (same name, typed).
static void gpt2_forward(GPT2* m, int B, int T, int with_targets, float grad_scale) {
    if (m->precision == PRECISION_BF16) gpt2_forward<bf16d>(m, B, T, with_targets, grad_scale);
    else gpt2_forward<float>(m, B, T, with_targets, grad_scale);
}
static void gpt2_backward(GPT2* m, int B, int T) {
    if (m->precision == PRECISION_BF16) gpt2_backward<bf16d>(m, B, T);
    else gpt2_backward<float>(m, B, T);
}
static void zero_grads(GPT2* m) { if (m->grads) PROF(PROF_OTHER, 0, m->layout.num_params * m->elt, CUDA_CHECK(cudaMemset(m->grads, 0, m->layout.num_params * m->elt))); }

// ------------------------------------------------------------------------------------------------
// 3. gradient norm, initialisation, host <-> device

// Sum of squares in double, fixed grid and fixed reduction order (deterministic).
template <typename G>
__global__ void sumsq_kernel(double* partial, const G* g, size_t n) {
    __shared__ double sh[256];
    double acc = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        double v = ldf(g[i]);
        acc += v * v;
    }
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

// Sum of squares of n gradient elements of the storage type at g (double, fixed grid and order: sumsq_kernel):
// the model's gradients (grad_sumsq) or one unit's in the fused backward's scratch (lomo, adalomo).
static double device_sumsq(GPT2* m, const void* g, size_t n) {
    if (m->precision == PRECISION_BF16) PROF(PROF_NORM, 0, n * m->elt, sumsq_kernel<bf16d><<<NORM_BLOCKS, 256>>>(m->norm_partial, (const bf16d*)g, n));
    else PROF(PROF_NORM, 0, n * m->elt, sumsq_kernel<float><<<NORM_BLOCKS, 256>>>(m->norm_partial, (const float*)g, n));
    KERNEL_CHECK();
    double h[NORM_BLOCKS];
    CUDA_CHECK(cudaMemcpy(h, m->norm_partial, sizeof(h), cudaMemcpyDeviceToHost));
    double s = 0.0;
    for (int i = 0; i < NORM_BLOCKS; i++) s += h[i];
    return s;
}

// Sum of squares of the flat gradient elements [lo, hi): the whole model, or with the gradients
// reduce-scattered (-zero 1) this rank's range, whose sums the caller adds over the ranks.
static double grad_sumsq(GPT2* m, size_t lo, size_t hi) {
    if (hi <= lo) return 0.0;
    return device_sumsq(m, (const char*)m->grads + lo * m->elt, hi - lo);
}

// fp32 values (num_params, host) -> the device parameters: the master (bf16 mode; a sharded master takes
// its range) or the parameters, and the bf16 copy rounded to nearest exactly as the CPU does.
static void gpt2_upload_params(GPT2* m, const float* w) {
    size_t P = m->layout.num_params;
    if (m->master_n)
        CUDA_CHECK(cudaMemcpy(m->master + m->master_lo, w + m->master_lo, m->master_n * sizeof(float), cudaMemcpyHostToDevice));
    if (m->precision == PRECISION_BF16) {
        bf16* hb = (bf16*)xmalloc(P * sizeof(bf16));
        for (size_t i = 0; i < P; i++) hb[i] = f32_to_bf16(w[i]);
        CUDA_CHECK(cudaMemcpy(m->params, hb, P * sizeof(bf16), cudaMemcpyHostToDevice));
        free(hb);
    }
}

// The device gradients widened to fp32 on the host (num_params floats).
__attribute__((unused)) static void gpt2_download_grads(GPT2* m, float* out) {
    size_t P = m->layout.num_params;
    if (m->precision == PRECISION_BF16) {
        bf16* hb = (bf16*)xmalloc(P * sizeof(bf16));
        CUDA_CHECK(cudaMemcpy(hb, m->grads, P * sizeof(bf16), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < P; i++) out[i] = bf16_to_f32(hb[i]);
        free(hb);
    } else {
        CUDA_CHECK(cudaMemcpy(out, m->grads, P * sizeof(float), cudaMemcpyDeviceToHost));
    }
}

// GPT-2 initialisation on the host by trainer/model.c, the CPU trainer's code (same seed -> same
// weights), then uploaded.
static void gpt2_init(GPT2* m, uint64_t seed) {
    float* w = (float*)xmalloc(m->layout.num_params * sizeof(float));
    model_init_weights(&m->layout, w, seed);
    gpt2_upload_params(m, w);
    free(w);
}

// The state layout is trainer/model.c's (the CPU's); optim/optim.cuh turns it into device buffers.
// With -zero 1 (zero != NULL) the GpuOpt runs over rank `rank`'s slices of a world of `world` ranks
// (trainer/zero_gpu.cuh), and the fp32 master is that rank's range.
static void optimizer_setup(GpuOpt* o, GPT2* m, const Optimizer* opt, const OptHyper* h, GpuZero* zero, int world, int rank, Ledger* led) {
    if (zero) {
        // a real run over several ranks connects the row shards' reduce groups; -memory-only plans do not
        gpu_zero_setup(zero, o, &m->layout, opt, h, world, rank, !led->dry && world > 1, led);
        gpt2_alloc_master(m, zero->displs[rank], zero->counts[rank], led);
        return;
    }
    gpt2_alloc_master(m, 0, m->layout.num_params, led);
    int n = m->layout.num_tensors;
    ParamShape* shapes = (ParamShape*)xcalloc((size_t)n, sizeof(ParamShape));
    size_t* offs = (size_t*)xcalloc((size_t)n, sizeof(size_t));
    for (int i = 0; i < n; i++) { shapes[i] = m->layout.tensors[i].shape; offs[i] = m->layout.tensors[i].offset; }
    if (opt->flags & OPT_FUSED_BACKWARD) {
        // lomo, adalomo: each tensor's unit and its place in that unit's gradient scratch (gpt2_alloc_gscratch)
        int* units = (int*)xcalloc((size_t)n, sizeof(int));
        size_t* goffs = (size_t*)xcalloc((size_t)n, sizeof(size_t));
        for (int i = 0; i < n; i++) { units[i] = m->layout.tensors[i].unit; goffs[i] = m->layout.tensors[i].scratch_offset; }
        gpu_opt_setup_fused(o, opt, h, shapes, offs, units, goffs, n, led);
        free(units);
        free(goffs);
    } else {
        gpu_opt_setup(o, opt, h, shapes, offs, n, led);
    }
    free(shapes);
    free(offs);
}

// One optimizer step; with -zero 1 over this rank's slices (a rank may hold none), then every rank's
// range of the weights the forward reads (the bf16 copy, or the fp32 parameters) all-gathered.
static void optimizer_step(GPT2* m, GpuOpt* o, GpuZero* zero, GpuDist* d, int step, float lr_scale, float clip_scale) {
    if (o->ntensors == 0) {
        // nothing of this rank's to update
    } else if (m->precision == PRECISION_BF16) {
        PROF(PROF_OPTIMIZER, 0, 0, gpu_opt_step<bf16d>(o, m->master, (const bf16d*)m->grads, (bf16d*)m->params, step, lr_scale, clip_scale));
    } else {
        PROF(PROF_OPTIMIZER, 0, 0, gpu_opt_step<float>(o, m->master, (const float*)m->grads, (bf16d*)NULL, step, lr_scale, clip_scale));
    }
    if (zero) gpu_zero_allgather(zero, d, m->params, m->elt);
}

// ------------------------------------------------------------------------------------------------
// 4. the model as the shared run loop sees it (trainer/run.h): checkpoint blobs, init, loss, sampling

typedef struct {
    GPT2* m;
    GpuOpt* o;
    GpuZero* zero;              // -zero 1: this rank's plan and the checkpoint staging, else NULL
    GpuDist* dist;
    void* dev[CKPT_MAX_BLOBS];  // the device buffers behind the checkpoint's host staging blobs (NULL: a
                                // host-only blob, the unsharded state that -zero 1 assembles)
    float* full_master;         // -zero 1, bf16: the checkpoint's whole fp32 master, staged on the host from
                                // every rank's range (blob 0), else NULL
} Trainer;

// The checkpoint's blobs, named and ordered by trainer/model.c as on the CPU: "weights fp32", "weights
// bf16" (bf16 mode), then every "opt: NAME" state buffer, as host staging buffers of the device ones.
// With -zero 1 the state blobs are the unsharded layout's host buffers (trainer/zero_gpu.cuh), so the
// file is the one any world size writes.
static int ops_ckpt_blobs(void* vt, CkptBlob* blobs) {
    Trainer* t = (Trainer*)vt;
    int n, nweights = t->m->precision == PRECISION_BF16 ? 2 : 1; // model_checkpoint_blobs puts the weights first
    if (t->zero) {
        gpu_zero_stage_alloc(t->zero);
        n = model_checkpoint_blobs(blobs, &t->m->layout, &t->zero->plan.full, t->m->precision, t->m->master, t->m->params, t->zero->full);
    } else {
        n = model_checkpoint_blobs(blobs, &t->m->layout, &t->o->layout, t->m->precision, t->m->master, t->m->params, t->o->buf);
    }
    for (int i = 0; i < n; i++) {
        t->dev[i] = NULL;
        if (t->zero && i >= nweights) continue;
        t->dev[i] = blobs[i].data;
        blobs[i].data = xmalloc(blobs[i].bytes);
    }
    // a sharded fp32 master: blob 0 ("weights fp32", num_params floats) has no whole device buffer
    // behind it; it is assembled on the host from every rank's range (ops_ckpt_to_host)
    t->full_master = NULL;
    if (master_sharded(t->m)) {
        CHECK(blobs[0].bytes == t->m->layout.num_params * sizeof(float));
        t->dev[0] = NULL;
        t->full_master = (float*)blobs[0].data;
    }
    return n;
}
// Collective with -zero 1 or more than one rank: every rank calls it for the same checkpoint.
static void ops_ckpt_to_host(void* vt, CkptBlob* blobs, int n) {
    Trainer* t = (Trainer*)vt;
    GPT2* m = t->m;
    // -zero 1, bf16 mode: each rank holds only its range of the fp32 master; every rank's range from that
    // rank (MPI, host side), as the CPU trainer assembles its sharded master
    if (t->full_master) {
        if (m->master_n)
            CUDA_CHECK(cudaMemcpy(t->full_master + m->master_lo, m->master + m->master_lo, m->master_n * sizeof(float), cudaMemcpyDeviceToHost));
        dist_allgather_bytes(t->full_master, t->zero->counts, t->zero->displs, sizeof(float));
    }
    for (int i = 0; i < n; i++)
        if (t->dev[i]) CUDA_CHECK(cudaMemcpy(blobs[i].data, t->dev[i], blobs[i].bytes, cudaMemcpyDeviceToHost));
    if (t->zero) gpu_zero_stage_out(t->zero, t->o);
}
static void ops_ckpt_from_host(void* vt, CkptBlob* blobs, int n) {
    Trainer* t = (Trainer*)vt;
    GPT2* m = t->m;
    for (int i = 0; i < n; i++)
        if (t->dev[i]) CUDA_CHECK(cudaMemcpy(t->dev[i], blobs[i].data, blobs[i].bytes, cudaMemcpyHostToDevice));
    if (t->full_master && m->master_n) // this rank's range of the whole master
        CUDA_CHECK(cudaMemcpy(m->master + m->master_lo, t->full_master + m->master_lo, m->master_n * sizeof(float), cudaMemcpyHostToDevice));
    if (t->zero) gpu_zero_stage_in(t->zero, t->o);
}
static void ops_ckpt_release(void* vt, CkptBlob* blobs, int n) {
    Trainer* t = (Trainer*)vt;
    for (int i = 0; i < n; i++) if (t->dev[i]) free(blobs[i].data);
    free(t->full_master);
    t->full_master = NULL;
    if (t->zero) gpu_zero_stage_free(t->zero);
}

static void ops_init(void* vt, uint64_t seed) { gpt2_init(((Trainer*)vt)->m, seed); }
static void ops_set_weights(void* vt, const float* w) { gpt2_upload_params(((Trainer*)vt)->m, w); }

static float ops_loss(void* vt, const int* inputs, const int* targets, int B, int T) {
    GPT2* m = ((Trainer*)vt)->m;
    size_t BT = (size_t)B * T;
    memcpy(m->inputs, inputs, BT * sizeof(int));
    memcpy(m->targets, targets, BT * sizeof(int));
    gpt2_forward(m, B, T, FWD_TARGETS, 0.0f);
    return m->mean_loss;
}

// Probabilities (V, host) of the token after the last of the n tokens in m->inputs (batch 1).
static void next_token_probs(GPT2* m, int n, float* probs) {
    gpt2_forward(m, 1, n, FWD_LOGITS, 0.0f);
    int V = m->config.vocab_size, Vp = m->config.padded_vocab_size;
    if (m->precision == PRECISION_BF16) {
        const bf16d* row = point_acts<bf16d>(m, 1, n).logits + (size_t)(n - 1) * Vp;
        bf16* hb = (bf16*)xmalloc((size_t)V * sizeof(bf16));
        CUDA_CHECK(cudaMemcpy(hb, row, (size_t)V * sizeof(bf16), cudaMemcpyDeviceToHost));
        for (int i = 0; i < V; i++) probs[i] = bf16_to_f32(hb[i]);
        free(hb);
    } else {
        const float* row = point_acts<float>(m, 1, n).logits + (size_t)(n - 1) * Vp;
        CUDA_CHECK(cudaMemcpy(probs, row, (size_t)V * sizeof(float), cudaMemcpyDeviceToHost));
    }
    softmax_inplace(probs, V);
}

static void ops_next_token_probs(void* vt, const int* tokens, int n, float* probs) {
    GPT2* m = ((Trainer*)vt)->m;
    memcpy(m->inputs, tokens, (size_t)n * sizeof(int));
    next_token_probs(m, n, probs);
}

// ------------------------------------------------------------------------------------------------
// 5. the device, the step (train_step with per-phase event timing), main

// Out of GPU memory, at start or in a step: the ledger so far, a hint, exit 2 (never a crash).
static void oom_exit(const char* what) {
    fflush(stdout);
    fprintf(stderr, "error: out of GPU memory (%s)\n", what);
    if (g_oom_ledger) {
        fprintf(stderr, "memory ledger so far:\n");
        ledger_print(g_oom_ledger, stderr, g_oom_num_params);
    }
    fprintf(stderr, "hint: use a smaller micro-batch (-b, with -d to keep the tokens per step), -r 1 to recompute "
                    "activations in backward, a smaller -t or -model, or an 8-bit or factored optimizer (-opt list)\n");
    exit(EXIT_USER);
}

// Which optimizers this trainer runs (the -opt list column; others are refused at start).
static int has_kernel(const Optimizer* o) { return optim_has_cuda(o); }

// The CUDA device, with a clean message when there is none: GPU 0, or with collectives on this rank's
// own GPU (its local rank; a node with fewer GPUs than ranks is refused).
static cudaDeviceProp device_setup(const GpuDist* d, int* dev) {
    cudaDeviceProp prop;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) user_error("no CUDA GPU found; use ./train_cpu (or `make train GPU=0`)");
    *dev = gpu_dist_device(d, ndev);
    CUDA_CHECK(cudaSetDevice(*dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, *dev));
    return prop;
}

// GPU time per phase from cudaEvents: forward and backward of each micro-step, then norm + optimizer.
typedef struct {
    cudaEvent_t* ev;     // (2 * accum + 2)
    int nev, accum;
    double fwd_ms, bwd_ms, opt_ms;
    int timed_steps;
    size_t dev_peak;     // device memory in use (total - free), the highest seen
} StepTimer;

static void timer_init(StepTimer* t, int accum) {
    memset(t, 0, sizeof(*t));
    t->accum = accum;
    t->nev = 2 * accum + 2;
    t->ev = (cudaEvent_t*)xcalloc((size_t)t->nev, sizeof(cudaEvent_t));
    for (int i = 0; i < t->nev; i++) CUDA_CHECK(cudaEventCreate(&t->ev[i]));
    t->dev_peak = device_used_bytes();
}
static void timer_peak(StepTimer* t) { size_t u = device_used_bytes(); if (u > t->dev_peak) t->dev_peak = u; }
// Adds this step's phases (step 1 of a run warms up and is left out, as in tok/s).
static void timer_add(StepTimer* t) {
    float f = 0.0f, b = 0.0f, x;
    for (int micro = 0; micro < t->accum; micro++) {
        CUDA_CHECK(cudaEventElapsedTime(&x, micro == 0 ? t->ev[0] : t->ev[2 * micro], t->ev[1 + 2 * micro])); f += x;
        CUDA_CHECK(cudaEventElapsedTime(&x, t->ev[1 + 2 * micro], t->ev[2 + 2 * micro])); b += x;
    }
    CUDA_CHECK(cudaEventElapsedTime(&x, t->ev[2 * t->accum], t->ev[t->nev - 1]));
    t->fwd_ms += f; t->bwd_ms += b; t->opt_ms += x;
    t->timed_steps++;
}
static void timer_free(StepTimer* t) {
    for (int i = 0; i < t->nev; i++) CUDA_CHECK(cudaEventDestroy(t->ev[i]));
    free(t->ev);
}

typedef struct { float loss, norm; int skipped; } StepResult;

// After the last backward of a step: the gradients averaged over the ranks (NCCL, fp32 sums; with -zero 1
// reduce-scattered: each rank gets the mean of its own range, where its optimizer slices lie) and the
// squared global norm (with -zero 1 the sum over the ranks of their ranges' sums, MPI).
static double average_grads(GPT2* m, GpuZero* zero, GpuDist* d) {
    size_t lo = 0, hi = m->layout.num_params;
    if (zero && d->on) {
        gpu_dist_reduce_scatter_grads(d, m->grads, m->layout.num_params, m->precision == PRECISION_BF16, zero->counts, zero->displs);
        lo = zero->displs[d->rank];
        hi = lo + zero->counts[d->rank];
    } else {
        gpu_dist_average_grads(d, m->grads, m->layout.num_params, m->precision == PRECISION_BF16);
    }
    double sumsq = grad_sumsq(m, lo, hi);
    if (zero && d->on) dist_allreduce_f64(&sumsq, 1);
    return sumsq;
}

// Forward and backward over -d tokens (accum micro-steps), the global gradient norm, clipping, one
// optimizer step, with events between the phases. Synchronizes at the end: an asynchronous kernel
// fault surfaces at this step.
// Data parallel: each rank trains on its rows of the global micro-batch (run_next_batch); after the last
// backward the gradients are averaged over the ranks (NCCL, fp32 sums) and the loss over MPI, so every
// rank computes the same norm, clip factor and skip decision from the same averaged gradient. With
// -zero 1 the gradients are reduce-scattered instead (each rank gets the mean of its own range, where its
// optimizer slices lie) and the squared norm is the sum over the ranks of their ranges' sums (MPI).
static StepResult train_step(GPT2* m, GpuOpt* o, GpuZero* zero, GpuDist* d, Run* r, int opt_t, float lr_scale, StepTimer* tm) {
    const Args* a = &r->a;
    StepResult res = { 0.0f, 0.0f, 0 };
    zero_grads(m);
    CUDA_CHECK(cudaEventRecord(tm->ev[0]));
    for (int micro = 0; micro < r->accum; micro++) {
        run_next_batch(r, m->inputs, m->targets);
        gpt2_forward(m, a->B, a->T, FWD_TARGETS, 1.0f / r->accum);
        CUDA_CHECK(cudaEventRecord(tm->ev[1 + 2 * micro]));
        if (micro == r->accum - 1) timer_peak(tm);
        res.loss += m->mean_loss / r->accum;
        gpt2_backward(m, a->B, a->T);
        CUDA_CHECK(cudaEventRecord(tm->ev[2 + 2 * micro]));
    }
    const double sumsq = average_grads(m, zero, d);
    if (d->on) dist_allreduce_f32(&res.loss, 1, 1.0f / d->world); // the mean of the ranks' means: the global batch's
    timer_peak(tm);
    res.norm = (float)sqrt(sumsq);
    if (!isfinite(res.loss) || !isfinite(res.norm)) res.skipped = 1;
    else {
        float clip_scale = (a->grad_clip > 0.0f && res.norm > a->grad_clip) ? a->grad_clip / res.norm : 1.0f;
        optimizer_step(m, o, zero, d, opt_t, lr_scale, clip_scale);
    }
    CUDA_CHECK(cudaEventRecord(tm->ev[tm->nev - 1]));
    CUDA_CHECK(cudaEventSynchronize(tm->ev[tm->nev - 1]));
    CUDA_CHECK(cudaGetLastError());
    timer_peak(tm);
    return res;
}

// ---- LOMO and AdaLomo (OPT_FUSED_BACKWARD): the update inside backward, unit by unit ----------------
// As the CPU trainer's train_step_fused / fused_unit_done (train_gpt2.c), with the same semantics, flags
// and logged loss and norm. Backward writes each unit's gradient into the unit scratch
// (gpt2_alloc_gscratch) and calls fused_unit_done when the unit is complete (block L-1 first, ..., block
// 0, then unit 0 after the token embedding's backward): the unit's gradient is averaged over the ranks
// (data parallel), its sum of squares taken (double, fixed order; one host sync per unit), and unless
// this pass only measures the norm, the optimizer's unit step is enqueued (gpu_opt_unit_step: the same
// stream, so it runs after the kernels that wrote the scratch and before the next block's backward
// reuses it). A unit whose gradient is not finite is not updated, and the step counts as skipped.
typedef struct {
    GpuOpt* o;
    GpuDist* d;
    int step;
    float lr_scale;
    float clip_scale;
    int norm_only;       // first pass of two-pass clipping: only measure the gradient norm
    double sumsq;        // accumulated squared norm
    int nonfinite_units; // units whose gradient was not finite (their update is skipped)
} FusedCtx;


static void fused_unit_done(GPT2* m, int unit, void* vctx) {
    FusedCtx* c = (FusedCtx*)vctx;
    void* g = unit_gscratch(m, unit);
    const size_t n = unit_gscratch_elems(m, unit);
    const int bf = m->precision == PRECISION_BF16;
    gpu_dist_average_grads(c->d, g, n, bf); // nothing at one rank without -dist-force
    const double s = device_sumsq(m, g, n); // the padding between tensors is zero: the unit's tensors' sum
    c->sumsq += s;
    if (!c->norm_only) {
        if (!isfinite(s)) c->nonfinite_units++;
        else if (bf) PROF(PROF_OPTIMIZER, 0, 0, gpu_opt_unit_step<bf16d>(c->o, unit, m->master, (const bf16d*)g, (bf16d*)m->params, c->step, c->lr_scale, c->clip_scale));
        else PROF(PROF_OPTIMIZER, 0, 0, gpu_opt_unit_step<float>(c->o, unit, m->master, (const float*)g, (bf16d*)NULL, c->step, c->lr_scale, c->clip_scale));
    }
    // backward adds into the gradients: the block part starts the next block at zero (unit 0's part is
    // zeroed before each backward, fused_backward)
    if (unit != 0) PROF(PROF_OTHER, 0, n * m->elt, CUDA_CHECK(cudaMemset(g, 0, n * m->elt)));
}

// One backward with the unit hook: the scratch starts at zero.
static void fused_backward(GPT2* m, int B, int T, FusedCtx* c) {
    const size_t n = m->layout.unit_size[0] + m->layout.unit_size[1];
    PROF(PROF_OTHER, 0, n * m->elt, CUDA_CHECK(cudaMemset(m->gscratch, 0, n * m->elt)));
    m->unit_done = fused_unit_done;
    m->unit_ctx = c;
    gpt2_backward(m, B, T);
    m->unit_done = NULL;
    m->unit_ctx = NULL;
}

// LOMO and AdaLomo update each unit inside backward, as soon as its gradient exists, so no model-wide
// gradient is ever held. Gradient clipping by the global norm (-g) needs that norm before the first
// update, but the norm is known only once the last unit's gradient exists, by which time the units
// would all have been updated: so with -g it takes two passes, as LOMO's reference does (and the CPU
// trainer): the first backward only measures the norm (no update), then the forward is repeated (the
// classifier turned the logits into their gradient in place, and backward's scratch lives in that
// buffer) and the second backward applies the updates with the clip factor. Without -g one pass, and the
// logged norm is that pass's. (No gradient accumulation: run_check_args refuses it.)
// Events: ev[0] start, ev[1] after the first forward, ev[2] after the last backward (with -g this span
// holds the norm pass and the second forward too; the updates are inside it), ev[3] end.
static StepResult train_step_fused(GPT2* m, GpuOpt* o, GpuDist* d, Run* r, int opt_t, float lr_scale, StepTimer* tm) {
    const Args* a = &r->a;
    StepResult res = { 0.0f, 0.0f, 0 };
    FusedCtx c = { o, d, opt_t, lr_scale, 1.0f, 0, 0.0, 0 };
    CHECK(r->accum == 1 && tm->accum == 1 && m->gscratch);
    CUDA_CHECK(cudaEventRecord(tm->ev[0]));
    run_next_batch(r, m->inputs, m->targets);
    gpt2_forward(m, a->B, a->T, FWD_TARGETS, 1.0f);
    CUDA_CHECK(cudaEventRecord(tm->ev[1]));
    timer_peak(tm);
    res.loss = m->mean_loss;
    if (d->on) dist_allreduce_f32(&res.loss, 1, 1.0f / d->world); // the mean of the ranks' means
    if (!isfinite(res.loss)) res.skipped = 1;
    if (!res.skipped && a->grad_clip > 0.0f) {
        c.norm_only = 1;
        fused_backward(m, a->B, a->T, &c);
        res.norm = (float)sqrt(c.sumsq);
        if (!isfinite(res.norm)) res.skipped = 1;
        else {
            c.norm_only = 0;
            c.sumsq = 0.0;
            c.clip_scale = res.norm > a->grad_clip ? a->grad_clip / res.norm : 1.0f;
            gpt2_forward(m, a->B, a->T, FWD_TARGETS, 1.0f);
        }
    }
    if (!res.skipped) {
        fused_backward(m, a->B, a->T, &c);
        if (a->grad_clip <= 0.0f) res.norm = (float)sqrt(c.sumsq);
        if (c.nonfinite_units) res.skipped = 1;
    }
    CUDA_CHECK(cudaEventRecord(tm->ev[2]));
    CUDA_CHECK(cudaEventRecord(tm->ev[3]));
    CUDA_CHECK(cudaEventSynchronize(tm->ev[3]));
    CUDA_CHECK(cudaGetLastError());
    timer_peak(tm);
    return res;
}

// Sophia (OPT_HESSIAN): every hess_interval optimizer steps, after that step's update, the
// Gauss-Newton-Bartlett estimate as the CPU trainer's maybe_update_hessian: a fresh batch, labels drawn
// from the model's own softmax on the device with the CPU trainer's uniforms (the same seed, step and
// order of draws, one per position of the global micro-batch: each rank takes its rows'), a backward of
// their mean cross-entropy, the gradients averaged over the ranks and clipped to norm 1, then folded into
// the Hessian EMA by the optimizer's kernel (optim/sophia.cuh). A non-finite estimate is dropped.
static void maybe_update_hessian(GPT2* m, GpuOpt* o, GpuZero* zero, GpuDist* d, Run* r, int step, int opt_t) {
    if (!(o->opt->flags & OPT_HESSIAN) || opt_t % r->hyper.hess_interval != 0) return;
    const Args* a = &r->a;
    Rng rng;
    run_hessian_stream(r, step, &rng);
    const size_t BT = (size_t)a->B * a->T;
    float* u = (float*)xmalloc(BT * sizeof(float));
    zero_grads(m);
    for (int micro = 0; micro < r->accum; micro++) {
        run_next_batch(r, m->inputs, m->targets);
        run_hessian_draws(r, &rng, u);
        CUDA_CHECK(cudaMemcpy(m->d_uniform, u, BT * sizeof(float), cudaMemcpyHostToDevice));
        gpt2_forward(m, a->B, a->T, FWD_SAMPLED, 1.0f / r->accum);
        gpt2_backward(m, a->B, a->T);
    }
    free(u);
    const double norm = sqrt(average_grads(m, zero, d));
    logger_write(&r->lg, "{\"type\":\"hessian\",\"step\":%d}", step);
    if (!isfinite(norm)) return;
    const float scale = norm > 1.0 ? (float)(1.0 / norm) : 1.0f;
    if (o->ntensors > 0) {
        if (m->precision == PRECISION_BF16) gpu_opt_hessian<bf16d>(o, (const bf16d*)m->grads, scale);
        else gpu_opt_hessian<float>(o, (const float*)m->grads, scale);
    }
    CUDA_CHECK(cudaDeviceSynchronize());
}

// Dense bf16 / TF32 peak of the card from its name (datasheet, SXM parts), 0 when unknown: for MFU.
static double device_peak_flops(const char* name, int precision) {
    double bf = 0.0;
    if (strstr(name, "H100") || strstr(name, "H200") || strstr(name, "GH200")) bf = 989e12;
    else if (strstr(name, "A100")) bf = 312e12;
    return precision == PRECISION_BF16 ? bf : bf / 2.0;
}

#ifndef TESTING
int main(int argc, char** argv) {
    Run run;
    int rc = run_setup(&run, argc, argv, "gpu", has_kernel);
    if (rc >= 0) return rc;
    if (!attention_head_size_ok(run.cfg.channels / run.cfg.num_heads))
        user_error("-model %s has head size %d; the CUDA attention kernels take 8, 16, 32, 64 or 128 (C / heads)", run.a.model,
                   run.cfg.channels / run.cfg.num_heads);
    const Args* a = &run.a;
    GpuDist dist;
    gpu_dist_init(&dist, a->dist_force); // refuses several ranks in a build without NCCL

    // ---- device, model and optimizer state, everything through the ledger
    g_oom_ledger = &run.led;
    g_cuda_oom_hook = oom_exit;
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof(prop));
    int dev = 0;
    if (!a->memory_only) prop = device_setup(&dist, &dev);
    GPT2 model;
    const int fused = (run.opt->flags & OPT_FUSED_BACKWARD) != 0; // lomo, adalomo: train_step_fused
    gpt2_build(&model, &run.cfg, a->precision, a->recompute, a->B, a->T, &run.led, fused);
    g_oom_num_params = model.layout.num_params;
    matmul_setup(&run.led);
    // the attention route (-attn) and its scratch; cuDNN's plans are built here, once, for (B, T)
    attn_route_setup(a->attn, a->precision == PRECISION_BF16, a->B, a->T, run.cfg.channels, run.cfg.num_heads, &run.led, stdout);
    run.attn = ATTN_NAMES[g_attn.route];
    gpu_dist_alloc(&dist, model.layout.num_params, a->precision == PRECISION_BF16, dist.on || a->plan_world > 1, &run.led);
    GpuOpt orun;
    GpuZero zero;
    GpuZero* zp = a->zero ? &zero : NULL;
    // -plan-world N (with -memory-only): one rank of N planned without MPI, by default the largest
    int world = run.world, rank = run.rank;
    if (a->plan_world) {
        world = a->plan_world;
        rank = a->plan_rank >= 0 ? a->plan_rank
                                 : zp ? gpu_zero_largest_rank(&model.layout, run.opt, &run.hyper, world, a->precision == PRECISION_BF16) : 0;
    }
    optimizer_setup(&orun, &model, run.opt, &run.hyper, zp, world, rank, &run.led);
    if (run.opt->flags & OPT_HESSIAN) // Sophia's label draws for the Gauss-Newton-Bartlett pass
        model.d_uniform = (float*)dev_alloc(&run.led, MEM_DATA, "Sophia label draws", (size_t)a->B * a->T * sizeof(float));
    orun.stochastic_rounding = a->sr;
    orun.seed = a->seed;
    run_set_model(&run, &model.layout, a->precision == PRECISION_BF16 ? "bf16 (fp32 master)" : "fp32 (TF32 matmuls)",
                  a->recompute ? ", recompute GELU (-r 1)" : "");
    char where[160] = " on the GPU";
    const int bf16 = a->precision == PRECISION_BF16;
    if (a->plan_world) {
        snprintf(where, sizeof(where), " on the GPU, rank %d of a planned world of %d%s", rank, world,
                 zp ? " (-zero 1)" : " (plain data parallel: every rank holds the same)");
        if (zp) for (int q = 0; q < world; q++) zero_print_shard(stdout, &zp->plan, model.layout.num_params, q, bf16);
    } else if (zp) {
        zero_print_shard(stderr, &zp->plan, model.layout.num_params, rank, bf16); // stdout is rank 0's
    }
    if (run_memory_only(&run, where)) {
        state_layout_free(&orun.layout);
        if (zp) gpu_zero_free(zp);
        gpt2_free_host(&model);
        return 0;
    }
    gpu_dist_connect(&dist);
    if (dist.on)
        printf("collectives: NCCL over %d rank%s%s, one GPU each (rank 0 on GPU %d); gradients averaged as fp32 sums%s\n",
               dist.world, dist.world > 1 ? "s" : "", dist.world == 1 ? " (forced by -dist-force 1)" : "", dev,
               zp ? "; the weights all-gathered after each -zero 1 step" : "");

    // ---- data, init or resume, log
    Trainer tr = { &model, &orun, zp, &dist, {0}, NULL };
    ModelOps ops = { &tr, ops_ckpt_blobs, ops_ckpt_to_host, ops_ckpt_from_host, ops_ckpt_release, ops_init, ops_set_weights,
                     ops_loss, ops_next_token_probs };
    run.device = prop.name;
    if (run_start(&run, &ops)) {
        rc = run_finish(&run, RUN_STOP, "", 0.0, "");
        gpu_dist_free(&dist);
        dev_free_all();
        gpt2_free_host(&model);
        return rc;
    }
    StepTimer tm;
    timer_init(&tm, run.accum);
    prof_init(a->prof);
    printf("device: %s, %d SMs, %.2f GiB; in use after setup %.2f MiB (total - free, includes the CUDA context)\n", prop.name,
           prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, tm.dev_peak / 1048576.0);
    fflush(stdout);

    // ---- train
    const double peak_flops = device_peak_flops(prop.name, a->precision);
    const double flops_per_token = 6.0 * model.layout.num_params + 12.0 * run.cfg.num_layers * run.cfg.channels * (double)a->T;
    for (int step = run.start_step + 1; step <= a->steps; step++) {
        double t0 = now_seconds();
        float lr_scale = run_lr_scale(&run, step);
        const int opt_t = run_opt_step(&run, step);
        prof_collect(0); // launches since the last step (evaluation, sampling) are not the step's
        StepResult s = fused ? train_step_fused(&model, &orun, &dist, &run, opt_t, lr_scale, &tm)
                             : train_step(&model, &orun, zp, &dist, &run, opt_t, lr_scale, &tm);
        if (!s.skipped) maybe_update_hessian(&model, &orun, zp, &dist, &run, step, opt_t);
        double dt = now_seconds() - t0;
        const int timed = step > run.start_step + 1 || a->steps == run.start_step + 1;
        if (timed) timer_add(&tm);
        if (g_prof.on) { CUDA_CHECK(cudaDeviceSynchronize()); prof_collect(timed); }
        char mfu[32] = "";
        if (peak_flops > 0) snprintf(mfu, sizeof(mfu), " | MFU %.1f%%", 100.0 * a->total_batch / dt * flops_per_token / peak_flops);
        rc = run_after_step(&run, step, s.loss, s.norm, run.hyper.lr * lr_scale, dt, s.skipped, mfu);
        if (rc) break;
    }

    // ---- summary
    char mem[1024];
    int n = 0, ts = tm.timed_steps;
    long nonfinite = gpu_opt_nonfinite(&orun); // the 8-bit and 4-bit kernels count them, as their CPU steps
    if (nonfinite) n += snprintf(mem + n, sizeof(mem) - n, "note: the optimizer saw %ld non-finite gradient elements\n", nonfinite);
    if (ts > 0)
        n += snprintf(mem + n, sizeof(mem) - n, "gpu time per step (cudaEvents, %d steps): forward %.2f ms, backward %.2f ms, "
                      "optimizer %.2f ms (incl. norm%s)\n", ts, tm.fwd_ms / ts, tm.bwd_ms / ts, tm.opt_ms / ts,
                      fused ? (a->grad_clip > 0.0f ? "; lomo/adalomo: the updates, the norm pass and the second forward are in backward"
                                                   : "; lomo/adalomo: the updates and the norm are in backward")
                      : !dist.on ? "" : zp ? ", gradient all-reduce, weight all-gather" : ", gradient all-reduce");
    snprintf(mem + n, sizeof(mem) - n, "memory: ledger peak %.2f MiB (cuBLASLt workspace %.2f MiB), device peak %.2f MiB (total - free, "
             "incl. CUDA context), process peak RSS %.2f MiB\n", run.led.peak / 1048576.0, MATMUL_WORKSPACE_BYTES / 1048576.0,
             tm.dev_peak / 1048576.0, process_peak_rss() / 1048576.0);
    char extra[256];
    snprintf(extra, sizeof(extra), ",\"ledger_peak_mib\":%.3f,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"opt_ms\":%.3f", run.led.peak / 1048576.0,
             ts ? tm.fwd_ms / ts : 0.0, ts ? tm.bwd_ms / ts : 0.0, ts ? tm.opt_ms / ts : 0.0);
    if (ts > 0) prof_print(stdout, (tm.fwd_ms + tm.bwd_ms + tm.opt_ms) / ts);
    rc = run_finish(&run, rc, mem, tm.dev_peak / 1048576.0, extra);
    timer_free(&tm);
    prof_free();
#ifdef USE_CUDNN
    attn_cudnn_free();
#endif
    gpu_dist_free(&dist);
    dev_free_all();
    state_layout_free(&orun.layout);
    if (zp) gpu_zero_free(zp);
    gpt2_free_host(&model);
    return rc;
}
#endif
