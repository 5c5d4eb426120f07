// train_gpt2.cu: the CUDA trainer. The same GPT-2 as train_gpt2.c (the CPU trainer, its reference),
// the same flags, output lines, log.jsonl and checkpoint format, so a checkpoint written by one resumes
// in the other.
//
// Map of this file:
//   1. configuration and parameter layout (the CPU's: 16 tensors in one flat buffer, same order)
//   2. the model on the device: buffers, forward, backward (kernels in cuda/*.cuh)
//   3. gradient norm, initialisation, host <-> device copies
//   4. checkpoints, evaluation, sampling
//   5. the command line and the training loop (main), mirroring train_gpt2.c's
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
#include "train/cli.h"
#include "train/advise.h"
#include "train/run.h"
#include "train/model.h"
#include "optim/optim.h"
#include "data/tokenizer.h"
#include "data/dataloader.h"
#include "common/cuda_util.cuh"
#include "cuda/encoder.cuh"
#include "cuda/layernorm.cuh"
#include "cuda/gelu.cuh"
#include "cuda/matmul.cuh"
#include "cuda/attention.cuh"
#include "cuda/classifier.cuh"
#include "optim/optim.cuh"

// ------------------------------------------------------------------------------------------------
// 1. configuration and parameter layout (train/model.c, shared with train_gpt2.c)

// The 16 parameter tensors, the optimizer's tensor list (unit 0 = wte, wpe, lnf.w, lnf.b; then 12 per
// block), the initialisation, the optimizer state layout and the checkpoint blob names are
// train/model.c: the very code the CPU trainer runs, so checkpoints move between the two.

// ------------------------------------------------------------------------------------------------
// 2. the model on the device

// Activation pointers for a batch (B, T) of storage type T_. Per-layer tensors are (L, B, T, ...).
template <typename T_>
struct Acts {
    T_ *encoded, *ln1, *qkv, *atty, *res2, *ln2, *fch, *fch_gelu, *res3, *lnf, *logits, *tmp;
    T_ *dres, *dln, *datty, *dqkv, *dfch;      // backward scratch, one layer at a time
    float *ln1_mean, *ln1_rstd, *ln2_mean, *ln2_rstd, *lnf_mean, *lnf_rstd, *lse, *losses, *dpre;
};

typedef struct {
    GPT2Config config;
    int precision;            // PRECISION_BF16 or PRECISION_FP32
    int recompute;            // -r: 1 = recompute GELU in backward
    ModelLayout layout;       // sizes, offsets and the optimizer's tensors (train/model.c)
    size_t elt;               // bytes per stored element (2 bf16, 4 fp32)
    // device buffers
    void* params;             // (num_params) bf16 working copy, or the fp32 parameters
    float* master;            // (num_params) fp32 master (bf16 mode); == params in fp32 mode
    void* grads;              // (num_params) same type as params
    void* act_memory;         // activations + backward scratch, storage type
    float* stat_memory;       // fp32 statistics
    float* partial;           // column-reduction scratch
    double* norm_partial;     // gradient-norm partial sums
    int* d_tokens;            // (2, B, T) inputs then targets
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

// Elements of storage type for the activations and backward scratch at (B, T).
static size_t activation_elems(const GPT2Config* cfg, int B, int T, int recompute) {
    size_t L = cfg->num_layers, C = cfg->channels, Vp = cfg->padded_vocab_size, BT = (size_t)B * T;
    size_t per_layer = round128(BT * C) * 5 + round128(BT * 3 * C) + round128(BT * 4 * C) * (recompute ? 1 : 2);
    size_t gelu_shared = recompute ? round128(BT * 4 * C) : 0;
    size_t once = round128(BT * C) * 3 + round128(BT * Vp);                               // encoded, lnf, tmp; logits
    size_t bw = round128(BT * C) * 3 + round128(BT * 3 * C) + round128(BT * 4 * C);       // dres, dln, datty, dqkv, dfch
    return L * per_layer + gelu_shared + once + bw;
}

static size_t stat_floats(const GPT2Config* cfg, int B, int T) {
    size_t L = cfg->num_layers, NH = cfg->num_heads, BT = (size_t)B * T;
    return round128(L * BT) * 4 + round128(BT) * 3 + round128(L * B * NH * T) + round128(B * NH * T);
}

template <typename T_>
static Acts<T_> point_acts(GPT2* m, int B, int T) {
    const GPT2Config* cfg = &m->config;
    size_t L = cfg->num_layers, C = cfg->channels, Vp = cfg->padded_vocab_size, NH = cfg->num_heads, BT = (size_t)B * T;
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
    TAKE(logits, BT * Vp);
    TAKE(tmp, BT * C);
    TAKE(dres, BT * C);
    TAKE(dln, BT * C);
    TAKE(datty, BT * C);
    TAKE(dqkv, BT * 3 * C);
    TAKE(dfch, BT * 4 * C);
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

// Allocates everything through the ledger (device memory with dev_alloc; a dry ledger only records).
static void gpt2_build(GPT2* m, const GPT2Config* cfg, int precision, int recompute, int B, int T, Ledger* led) {
    memset(m, 0, sizeof(*m));
    m->config = *cfg;
    m->precision = precision;
    m->recompute = recompute;
    m->B = B;
    m->T = T;
    model_layout_build(&m->layout, cfg);
    size_t P = m->layout.num_params, BT = (size_t)B * T, C = cfg->channels;
    int bf = precision == PRECISION_BF16;
    m->elt = bf ? 2 : 4;
    if (bf) {
        m->params = dev_alloc(led, MEM_PARAMS, "params (bf16)", P * 2);
        m->master = (float*)dev_alloc(led, MEM_MASTER, "master weights (fp32)", P * 4);
        m->grads = dev_alloc(led, MEM_GRADS, "grads (bf16)", P * 2);
    } else {
        m->params = dev_alloc(led, MEM_PARAMS, "params (fp32)", P * 4);
        m->master = (float*)m->params;
        m->grads = dev_alloc(led, MEM_GRADS, "grads (fp32)", P * 4);
    }
    m->act_memory = dev_alloc(led, MEM_ACTIVATIONS, bf ? "activations (bf16)" : "activations (fp32)",
                              activation_elems(cfg, B, T, recompute) * m->elt);
    m->stat_memory = (float*)dev_alloc(led, MEM_ACTIVATIONS, "statistics (fp32)", stat_floats(cfg, B, T) * 4);
    m->partial = (float*)dev_alloc(led, MEM_WORKSPACE, "reduction partials", (size_t)NUM_PARTIALS * 4 * C * 4);
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

// Forward over (B, T) tokens of m->inputs (host). With targets: per-position losses and mean_loss.
// With grad_scale != 0 the classifier also turns the logits into d(mean loss * grad_scale)/d(logits)
// in place, ready for gpt2_backward.
template <typename T_>
static void gpt2_forward_t(GPT2* m, int B, int T, int with_targets, float grad_scale) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t BT = (size_t)B * T;
    CHECK(B <= m->B && T <= m->T);
    for (size_t i = 0; i < BT; i++)
        if (m->inputs[i] < 0 || m->inputs[i] >= V) user_error("token id %d at position %zu is outside the vocabulary (0..%d)", m->inputs[i], i, V - 1);
    CUDA_CHECK(cudaMemcpy(m->d_tokens, m->inputs, BT * sizeof(int), cudaMemcpyHostToDevice));
    if (with_targets) CUDA_CHECK(cudaMemcpy(m->d_tokens + BT, m->targets, BT * sizeof(int), cudaMemcpyHostToDevice));
    Acts<T_> a = point_acts<T_>(m, B, T);
    void* W = m->params;
    encoder_forward<T_>(a.encoded, m->d_tokens, tensor_ptr<T_>(m, W, P_WTE, 0), tensor_ptr<T_>(m, W, P_WPE, 0), B, T, C);
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
        layernorm_forward<T_>(ln1, a.ln1_mean + l * BT, a.ln1_rstd + l * BT, x, tensor_ptr<T_>(m, W, P_LN1W, l),
                              tensor_ptr<T_>(m, W, P_LN1B, l), (int)BT, C);
        matmul_forward<T_>(qkv, ln1, tensor_ptr<T_>(m, W, P_QKVW, l), tensor_ptr<T_>(m, W, P_QKVB, l), (int)BT, C, 3 * C);
        attention_forward<T_>(atty, a.lse + (size_t)l * B * NH * T, qkv, B, T, C, NH);
        matmul_forward<T_>(a.tmp, atty, tensor_ptr<T_>(m, W, P_ATTPROJW, l), tensor_ptr<T_>(m, W, P_ATTPROJB, l), (int)BT, C, C);
        residual_forward<T_>(res2, x, a.tmp, BT * C);
        layernorm_forward<T_>(ln2, a.ln2_mean + l * BT, a.ln2_rstd + l * BT, res2, tensor_ptr<T_>(m, W, P_LN2W, l),
                              tensor_ptr<T_>(m, W, P_LN2B, l), (int)BT, C);
        matmul_forward<T_>(fch, ln2, tensor_ptr<T_>(m, W, P_FCW, l), tensor_ptr<T_>(m, W, P_FCB, l), (int)BT, C, 4 * C);
        gelu_forward<T_>(fch_gelu, fch, BT * 4 * C);
        matmul_forward<T_>(a.tmp, fch_gelu, tensor_ptr<T_>(m, W, P_FCPROJW, l), tensor_ptr<T_>(m, W, P_FCPROJB, l), (int)BT, 4 * C, C);
        residual_forward<T_>(res3, res2, a.tmp, BT * C);
    }
    const T_* xL = a.res3 + (size_t)(L - 1) * BT * C;
    layernorm_forward<T_>(a.lnf, a.lnf_mean, a.lnf_rstd, xL, tensor_ptr<T_>(m, W, P_LNFW, 0), tensor_ptr<T_>(m, W, P_LNFB, 0), (int)BT, C);
    // LM head tied to wte, over the padded vocabulary (rows V..Vp-1 of wte are zero; the classifier
    // ignores those columns and zeroes their gradient)
    matmul_forward<T_>(a.logits, a.lnf, tensor_ptr<T_>(m, W, P_WTE, 0), (const T_*)NULL, (int)BT, C, Vp);
    if (!with_targets) return;
    classifier<T_>(a.logits, a.losses, m->d_tokens + BT, grad_scale / (float)BT, (int)BT, V, Vp, grad_scale != 0.0f);
    CUDA_CHECK(cudaMemcpy(m->h_losses, a.losses, BT * sizeof(float), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    for (size_t i = 0; i < BT; i++) sum += m->h_losses[i];
    m->mean_loss = (float)(sum / BT);
}

// Backward for the last forward (which must have run with grad_scale != 0). Gradients ADD into
// m->grads (zero them first; accumulation over micro-steps is the caller's choice).
template <typename T_>
static void gpt2_backward_t(GPT2* m, int B, int T) {
    const GPT2Config* cfg = &m->config;
    int L = cfg->num_layers, C = cfg->channels, NH = cfg->num_heads, V = cfg->vocab_size, Vp = cfg->padded_vocab_size;
    size_t BT = (size_t)B * T;
    Acts<T_> a = point_acts<T_>(m, B, T);
    void* W = m->params;
    void* G = m->grads;
    float* part = m->partial;
    // logits (now dlogits) -> lnf -> residual stream
    matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_WTE, 0), (T_*)NULL, part, a.logits, a.lnf, tensor_ptr<T_>(m, W, P_WTE, 0), (int)BT, C, Vp);
    CUDA_CHECK(cudaMemset(a.dres, 0, BT * C * sizeof(T_)));
    const T_* xL = a.res3 + (size_t)(L - 1) * BT * C;
    layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LNFW, 0), tensor_ptr<T_>(m, G, P_LNFB, 0), part, a.dln, xL,
                           tensor_ptr<T_>(m, W, P_LNFW, 0), a.lnf_mean, a.lnf_rstd, (int)BT, C);
    for (int l = L - 1; l >= 0; l--) {
        const T_* x = l == 0 ? a.encoded : a.res3 + (size_t)(l - 1) * BT * C;
        const T_* ln1 = a.ln1 + l * BT * C;
        const T_* qkv = a.qkv + l * BT * 3 * C;
        const T_* atty = a.atty + l * BT * C;
        const T_* res2 = a.res2 + l * BT * C;
        const T_* ln2 = a.ln2 + l * BT * C;
        const T_* fch = a.fch + l * BT * 4 * C;
        T_* fch_gelu = a.fch_gelu + (m->recompute ? 0 : l * BT * 4 * C);
        if (m->recompute) gelu_forward<T_>(fch_gelu, fch, BT * 4 * C);
        // a.dres holds d(residual3): it flows unchanged to residual2 and x, each branch adds its part
        matmul_backward<T_>(a.dfch, tensor_ptr<T_>(m, G, P_FCPROJW, l), tensor_ptr<T_>(m, G, P_FCPROJB, l), part, a.dres,
                            fch_gelu, tensor_ptr<T_>(m, W, P_FCPROJW, l), (int)BT, 4 * C, C);
        gelu_backward<T_>(a.dfch, fch, a.dfch, BT * 4 * C);
        matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_FCW, l), tensor_ptr<T_>(m, G, P_FCB, l), part, a.dfch, ln2,
                            tensor_ptr<T_>(m, W, P_FCW, l), (int)BT, C, 4 * C);
        layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LN2W, l), tensor_ptr<T_>(m, G, P_LN2B, l), part, a.dln, res2,
                               tensor_ptr<T_>(m, W, P_LN2W, l), a.ln2_mean + l * BT, a.ln2_rstd + l * BT, (int)BT, C);
        // now a.dres = d(residual2)
        matmul_backward<T_>(a.datty, tensor_ptr<T_>(m, G, P_ATTPROJW, l), tensor_ptr<T_>(m, G, P_ATTPROJB, l), part, a.dres,
                            atty, tensor_ptr<T_>(m, W, P_ATTPROJW, l), (int)BT, C, C);
        attention_backward<T_>(a.dqkv, a.dpre, a.datty, qkv, atty, a.lse + (size_t)l * B * NH * T, B, T, C, NH);
        matmul_backward<T_>(a.dln, tensor_ptr<T_>(m, G, P_QKVW, l), tensor_ptr<T_>(m, G, P_QKVB, l), part, a.dqkv, ln1,
                            tensor_ptr<T_>(m, W, P_QKVW, l), (int)BT, C, 3 * C);
        layernorm_backward<T_>(a.dres, tensor_ptr<T_>(m, G, P_LN1W, l), tensor_ptr<T_>(m, G, P_LN1B, l), part, a.dln, x,
                               tensor_ptr<T_>(m, W, P_LN1W, l), a.ln1_mean + l * BT, a.ln1_rstd + l * BT, (int)BT, C);
        // now a.dres = d(x), the input of block l
    }
    // token embedding: positions grouped by token on the host (deterministic sums, no atomics)
    int* tokens = m->h_group;
    int* starts = tokens + BT;
    int* positions = starts + BT + 1;
    int U = encoder_group_positions(m->inputs, (int)BT, V, m->h_counts, tokens, starts, positions);
    CUDA_CHECK(cudaMemcpy(m->d_group, m->h_group, (3 * BT + 1) * sizeof(int), cudaMemcpyHostToDevice));
    encoder_backward<T_>(tensor_ptr<T_>(m, G, P_WTE, 0), tensor_ptr<T_>(m, G, P_WPE, 0), a.dres, m->d_group,
                         m->d_group + BT, m->d_group + 2 * BT + 1, U, B, T, C);
}

static void gpt2_forward(GPT2* m, int B, int T, int with_targets, float grad_scale) {
    if (m->precision == PRECISION_BF16) gpt2_forward_t<bf16d>(m, B, T, with_targets, grad_scale);
    else gpt2_forward_t<float>(m, B, T, with_targets, grad_scale);
}
static void gpt2_backward(GPT2* m, int B, int T) {
    if (m->precision == PRECISION_BF16) gpt2_backward_t<bf16d>(m, B, T);
    else gpt2_backward_t<float>(m, B, T);
}
static void zero_grads(GPT2* m) { CUDA_CHECK(cudaMemset(m->grads, 0, m->layout.num_params * m->elt)); }

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

static double grad_sumsq(GPT2* m) {
    if (m->precision == PRECISION_BF16) sumsq_kernel<bf16d><<<NORM_BLOCKS, 256>>>(m->norm_partial, (const bf16d*)m->grads, m->layout.num_params);
    else sumsq_kernel<float><<<NORM_BLOCKS, 256>>>(m->norm_partial, (const float*)m->grads, m->layout.num_params);
    KERNEL_CHECK();
    double h[NORM_BLOCKS];
    CUDA_CHECK(cudaMemcpy(h, m->norm_partial, sizeof(h), cudaMemcpyDeviceToHost));
    double s = 0.0;
    for (int i = 0; i < NORM_BLOCKS; i++) s += h[i];
    return s;
}

// fp32 values (num_params, host) -> the device parameters: the master (bf16 mode) or the parameters,
// and the bf16 copy rounded to nearest exactly as the CPU does.
static void gpt2_upload_params(GPT2* m, const float* w) {
    size_t P = m->layout.num_params;
    CUDA_CHECK(cudaMemcpy(m->master, w, P * sizeof(float), cudaMemcpyHostToDevice));
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

// GPT-2 initialisation on the host by train/model.c, the CPU trainer's code (same seed -> same
// weights), then uploaded.
static void gpt2_init(GPT2* m, uint64_t seed) {
    float* w = (float*)xmalloc(m->layout.num_params * sizeof(float));
    model_init_weights(&m->layout, w, seed);
    gpt2_upload_params(m, w);
    free(w);
}

// The state layout is train/model.c's (the CPU's); optim/optim.cuh turns it into device buffers.
static void optimizer_setup_gpu(GpuOpt* o, GPT2* m, const Optimizer* opt, const OptHyper* h, Ledger* led) {
    int n = m->layout.num_tensors;
    ParamShape* shapes = (ParamShape*)xcalloc((size_t)n, sizeof(ParamShape));
    size_t* offs = (size_t*)xcalloc((size_t)n, sizeof(size_t));
    for (int i = 0; i < n; i++) { shapes[i] = m->layout.tensors[i].shape; offs[i] = m->layout.tensors[i].offset; }
    gpu_opt_setup(o, opt, h, shapes, offs, n, led);
    free(shapes);
    free(offs);
}

static void optimizer_step(GPT2* m, GpuOpt* o, int step, float lr_scale, float clip_scale) {
    if (m->precision == PRECISION_BF16)
        gpu_opt_step<bf16d>(o, m->master, (const bf16d*)m->grads, (bf16d*)m->params, step, lr_scale, clip_scale);
    else
        gpu_opt_step<float>(o, m->master, (const float*)m->grads, (bf16d*)NULL, step, lr_scale, clip_scale);
}

// ------------------------------------------------------------------------------------------------
// 4. checkpoints, evaluation, sampling

// The checkpoint's blobs, named and ordered by train/model.c as on the CPU: "weights fp32", "weights
// bf16" (bf16 mode), then every "opt: NAME" state buffer. dev[] gets the device buffers; data[] become
// host staging buffers (allocated here, freed by the caller with free_blobs).
static int checkpoint_blobs(GPT2* m, GpuOpt* o, CkptBlob* blobs, void** dev) {
    int n = model_checkpoint_blobs(blobs, &m->layout, &o->layout, m->precision, m->master, m->params, o->buf);
    for (int i = 0; i < n; i++) {
        dev[i] = blobs[i].data;
        blobs[i].data = xmalloc(blobs[i].bytes);
    }
    return n;
}
static void free_blobs(CkptBlob* blobs, int n) { for (int i = 0; i < n; i++) free(blobs[i].data); }

static void checkpoint_header(const GPT2* m, const GpuOpt* o, CkptHeader* h) {
    model_checkpoint_header(h, &m->layout, m->precision, o->opt->name);
}

static float evaluate(GPT2* m, DataLoader* val, int batches, int B, int T) {
    dataloader_reset(val);
    double sum = 0.0;
    for (int i = 0; i < batches; i++) {
        dataloader_next(val, m->inputs, m->targets);
        gpt2_forward(m, B, T, 1, 0.0f);
        sum += m->mean_loss;
    }
    return (float)(sum / batches);
}

// Probabilities (V, host) of the token after the last of the n tokens in m->inputs (batch 1).
static void next_token_probs(GPT2* m, int n, float* probs) {
    gpt2_forward(m, 1, n, 0, 0.0f);
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
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) if (probs[i] > mx) mx = probs[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++) { probs[i] = expf(probs[i] - mx); sum += probs[i]; }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < V; i++) probs[i] *= inv;
}

// As the CPU's sample_text: `len` tokens after <|endoftext|>, seeded from (seed, step).
static void sample_text(GPT2* m, const Tokenizer* tok, int len, uint64_t seed, int step, int T, FILE* out) {
    Rng rng;
    rng_seed(&rng, seed * 1000003ull + (uint64_t)step);
    int V = m->config.vocab_size;
    int eot = tok ? tokenizer_eot(tok) : V - 1;
    if (eot < 0 || eot >= V) eot = V - 1;
    int* gen = (int*)xmalloc(sizeof(int) * (size_t)(len + 1));
    float* probs = (float*)xmalloc(sizeof(float) * (size_t)V);
    gen[0] = eot;
    fprintf(out, "sample (step %d): ", step);
    for (int i = 1; i <= len; i++) {
        int start = i > T ? i - T : 0;
        int n = i - start;
        memcpy(m->inputs, gen + start, (size_t)n * sizeof(int));
        next_token_probs(m, n, probs);
        int next = sample_index(probs, V, rng_f32(&rng));
        gen[i] = next;
        if (tok) {
            size_t bl = 0;
            const unsigned char* bytes = tokenizer_decode(tok, next, &bl);
            if (bytes) fwrite(bytes, 1, bl, out);
        } else {
            fprintf(out, "%d ", next);
        }
    }
    fprintf(out, "\n");
    free(gen);
    free(probs);
}

// ------------------------------------------------------------------------------------------------
// 5. command line and training loop

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

static void list_optimizers(void) {
    GPT2Config cfg = parse_model("d12");
    GPT2 m;
    Ledger dry;
    ledger_init(&dry, 1);
    gpt2_build(&m, &cfg, PRECISION_BF16, 0, 1, 1, &dry);
    printf("%-17s %-12s %-5s %s\n", "name", "B/param(d12)", "cuda", "description [paper]");
    for (int i = 0; i < NUM_OPTIMIZERS; i++) {
        const Optimizer* o = OPTIMIZERS[i];
        double bpp = (double)optimizer_layout_bytes(&m.layout, o, &o->defaults) / m.layout.num_params;
        printf("%-17s %-12.4f %-5s %s [%s]\n", o->name, bpp, optim_has_cuda(o) ? "yes" : "no", o->description, o->paper);
    }
    gpt2_free_host(&m);
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
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (advise_requested(argc, argv)) return advise_main(argc, argv); // the decision guide: no training
    Args a;
    parse_args(&a, argc, argv);
    int recompute = a.recompute;
    if (!strcmp(a.opt_name, "list")) { list_optimizers(); return 0; }
    const Optimizer* opt = optim_find(a.opt_name);
    if (!opt) {
        fprintf(stderr, "error: unknown optimizer '%s'; valid names: ", a.opt_name);
        optim_print_names(stderr);
        fprintf(stderr, " (or -opt list)\n");
        return EXIT_USER;
    }
    if (!optim_has_cuda(opt))
        user_error("%s is CPU-only for now (issue 6); use ./train_cpu or one of sgd, sgdm, adam, adamw, lion, adam8bit, adamw8bit, paged_adamw8bit, adafactor, came", opt->name);
    GPT2Config cfg = parse_model(a.model);
    if (!attention_head_size_ok(cfg.channels / cfg.num_heads))
        user_error("-model %s has head size %d; the CUDA attention kernels take 8, 16, 32, 64 or 128 (C / heads)", a.model,
                   cfg.channels / cfg.num_heads);
    OptHyper hyper;
    int accum = run_check_args(&a, &cfg, opt, &hyper);

    // ---- device and memory: everything through the ledger
    Ledger led;
    ledger_init(&led, a.memory_only);
    g_oom_ledger = &led;
    g_cuda_oom_hook = oom_exit;
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof(prop));
    if (!a.memory_only) {
        int ndev = 0;
        if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0)
            user_error("no CUDA GPU found; use ./train_cpu (or `make train GPU=0`)");
        CUDA_CHECK(cudaSetDevice(0));
        CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    }
    GPT2 model;
    gpt2_build(&model, &cfg, a.precision, recompute, a.B, a.T, &led);
    g_oom_num_params = model.layout.num_params;
    matmul_setup(&led);
    GpuOpt orun;
    optimizer_setup_gpu(&orun, &model, opt, &hyper, &led);
    orun.stochastic_rounding = a.sr;
    orun.seed = a.seed;
    size_t state_bytes = optimizer_layout_bytes(&model.layout, opt, &hyper);
    printf("model %s: L=%d C=%d heads=%d vocab=%d (padded %d), %zu parameters (%.2fM)\n", a.model, cfg.num_layers,
           cfg.channels, cfg.num_heads, cfg.vocab_size, cfg.padded_vocab_size, model.layout.num_params, model.layout.num_params / 1e6);
    printf("optimizer %s: lr %g, state %zu bytes (%.4f B/param); precision %s%s%s\n", opt->name, hyper.lr, state_bytes,
           (double)state_bytes / model.layout.num_params, a.precision == PRECISION_BF16 ? "bf16 (fp32 master)" : "fp32 (TF32 matmuls)",
           a.sr ? ", stochastic rounding" : "", recompute ? ", recompute GELU (-r 1)" : "");
    if (a.memory_only) {
        printf("memory ledger for B=%d T=%d on the GPU (nothing allocated):\n", a.B, a.T);
        ledger_print(&led, stdout, model.layout.num_params);
        printf("summary: opt=%s params=%zu state_bytes=%zu state_bytes_per_param=%.4f ledger_mib=%.2f\n", opt->name,
               model.layout.num_params, state_bytes, (double)state_bytes / model.layout.num_params, led.current / 1048576.0);
        state_layout_free(&orun.layout);
        gpt2_free_host(&model);
        return 0;
    }

    // ---- data (as the CPU trainer)
    char err[1024];
    RunData data;
    run_open_data(&data, &a, cfg.vocab_size);
    Tokenizer* tok = data.tok;
    ledger_record(&led, MEM_DATA, "token shards (host)", dataloader_bytes(&data.train) + dataloader_bytes(&data.val), NULL);

    // ---- init or resume
    int start_step = 0;
    RunStats stats;
    char ckpt_path[1100];
    run_begin(&stats, &a, ckpt_path, sizeof(ckpt_path));
    gpt2_init(&model, a.seed);
    if (a.resume) {
        CkptHeader h, mine;
        CkptBlob blobs[CKPT_MAX_BLOBS];
        void* dev[CKPT_MAX_BLOBS];
        if (ckpt_read_header(ckpt_path, &h, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
        checkpoint_header(&model, &orun, &mine);
        run_check_resume(&h, &mine, ckpt_path, a.steps);
        int nb = checkpoint_blobs(&model, &orun, blobs, dev);
        if (ckpt_load(ckpt_path, &h, blobs, nb, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
        for (int i = 0; i < nb; i++) CUDA_CHECK(cudaMemcpy(dev[i], blobs[i].data, blobs[i].bytes, cudaMemcpyHostToDevice));
        free_blobs(blobs, nb);
        start_step = h.step;
        stats.skipped_total = h.skipped_steps;
        stats.tokens_seen = (long)h.tokens_seen;
        if (dataloader_seek(&data.train, h.data_position) != 0) user_error("cannot resume: data position in %s is past the end of %s", ckpt_path, data.train_path);
        printf("resumed from %s at step %d\n", ckpt_path, start_step);
    }
    Logger lg;
    if (logger_open(&lg, a.out_dir, a.resume) != 0) user_error("cannot write %s/log.jsonl: %s", a.out_dir, strerror(errno));

    printf("batch: B=%d T=%d, %d tokens/step (%d micro-step%s), %d steps, warmup %d, final lr x%g, clip %g\n", a.B, a.T,
           a.total_batch, accum, accum > 1 ? "s" : "", a.steps, a.warmup, a.final_lr_frac, a.grad_clip);
    printf("memory ledger:\n");
    ledger_print(&led, stdout, model.layout.num_params);
    size_t dev_peak = device_used_bytes();
    printf("device: %s, %d SMs, %.2f GiB; in use after setup %.2f MiB (total - free, includes the CUDA context)\n", prop.name,
           prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, dev_peak / 1048576.0);
    fflush(stdout);

    // ---- train
    const double peak_flops = device_peak_flops(prop.name, a.precision);
    const double flops_per_token = 6.0 * model.layout.num_params + 12.0 * cfg.num_layers * cfg.channels * (double)a.T;
    int nev = 2 * accum + 2;
    cudaEvent_t* ev = (cudaEvent_t*)xcalloc((size_t)nev, sizeof(cudaEvent_t));
    for (int i = 0; i < nev; i++) CUDA_CHECK(cudaEventCreate(&ev[i]));
    double fwd_ms = 0.0, bwd_ms = 0.0, opt_ms = 0.0;
    int timed_steps = 0;
    for (int step = start_step + 1; step <= a.steps; step++) {
        double t0 = now_seconds();
        float lr_scale = lr_multiplier(step, a.steps, a.warmup, a.final_lr_frac);
        int opt_t = step - stats.skipped_total; // applied updates only, as the CPU trainer (and torch) count
        float loss = 0.0f, norm = 0.0f;
        int skipped = 0;
        zero_grads(&model);
        CUDA_CHECK(cudaEventRecord(ev[0]));
        for (int micro = 0; micro < accum; micro++) {
            dataloader_next(&data.train, model.inputs, model.targets);
            gpt2_forward(&model, a.B, a.T, 1, 1.0f / accum);
            CUDA_CHECK(cudaEventRecord(ev[1 + 2 * micro]));
            if (micro == accum - 1) { size_t u = device_used_bytes(); if (u > dev_peak) dev_peak = u; }
            loss += model.mean_loss / accum;
            gpt2_backward(&model, a.B, a.T);
            CUDA_CHECK(cudaEventRecord(ev[2 + 2 * micro]));
        }
        { size_t u = device_used_bytes(); if (u > dev_peak) dev_peak = u; }
        norm = (float)sqrt(grad_sumsq(&model));
        if (!isfinite(loss) || !isfinite(norm)) skipped = 1;
        else {
            float clip_scale = (a.grad_clip > 0.0f && norm > a.grad_clip) ? a.grad_clip / norm : 1.0f;
            optimizer_step(&model, &orun, opt_t, lr_scale, clip_scale);
        }
        CUDA_CHECK(cudaEventRecord(ev[nev - 1]));
        CUDA_CHECK(cudaEventSynchronize(ev[nev - 1]));
        CUDA_CHECK(cudaGetLastError()); // an asynchronous kernel fault surfaces here, at this step
        { size_t u = device_used_bytes(); if (u > dev_peak) dev_peak = u; }
        double dt = now_seconds() - t0;
        if (step > start_step + 1 || a.steps == start_step + 1) {
            // per-phase GPU time from the events (step 1 of a run warms up and is left out, as in tok/s)
            float f = 0.0f, b = 0.0f, o = 0.0f, x;
            for (int micro = 0; micro < accum; micro++) {
                CUDA_CHECK(cudaEventElapsedTime(&x, micro == 0 ? ev[0] : ev[2 * micro], ev[1 + 2 * micro])); f += x;
                CUDA_CHECK(cudaEventElapsedTime(&x, ev[1 + 2 * micro], ev[2 + 2 * micro])); b += x;
            }
            CUDA_CHECK(cudaEventElapsedTime(&x, ev[2 * accum], ev[nev - 1])); o = x;
            fwd_ms += f; bwd_ms += b; opt_ms += o;
            timed_steps++;
        }
        float lr = hyper.lr * lr_scale;
        double tps = a.total_batch / dt;
        char mfu[32] = "";
        if (peak_flops > 0) snprintf(mfu, sizeof(mfu), " | MFU %.1f%%", 100.0 * tps * flops_per_token / peak_flops);
        int rc = run_record_step(&stats, &a, &lg, step, start_step + 1, loss, norm, lr, dt, skipped, mfu, ckpt_path);
        if (rc) { logger_close(&lg); return rc; }
        RunDue due = run_due(&a, step, ckpt_path);
        if (due.val) run_record_val(&stats, &lg, step, evaluate(&model, &data.val, a.val_batches, a.B, a.T), a.val_batches);
        if (due.sample) sample_text(&model, tok, a.sample_len, a.seed, step, a.T, stdout);
        if (due.checkpoint) {
            CkptHeader h;
            CkptBlob blobs[CKPT_MAX_BLOBS];
            void* dev[CKPT_MAX_BLOBS];
            checkpoint_header(&model, &orun, &h);
            run_ckpt_header(&h, &stats, &a, step, dataloader_position(&data.train));
            int nb = checkpoint_blobs(&model, &orun, blobs, dev);
            for (int i = 0; i < nb; i++) CUDA_CHECK(cudaMemcpy(blobs[i].data, dev[i], blobs[i].bytes, cudaMemcpyDeviceToHost));
            if (ckpt_save(ckpt_path, &h, blobs, nb, err, sizeof(err)) != 0) fprintf(stderr, "warning: %s\n", err);
            else printf("checkpoint: %s (step %d)\n", ckpt_path, step);
            free_blobs(blobs, nb);
        }
        if (step == a.stop_at) { printf("stopping after step %d as asked (-stop)\n", step); break; }
    }

    // ---- summary
    double peak_mib = dev_peak / 1048576.0;
    long nonfinite = gpu_opt_nonfinite(&orun); // the 8-bit kernels count them, as the CPU's adam8bit step
    if (nonfinite) printf("note: the optimizer saw %ld non-finite gradient elements\n", nonfinite);
    if (timed_steps > 0)
        printf("gpu time per step (cudaEvents, %d steps): forward %.2f ms, backward %.2f ms, optimizer %.2f ms (incl. norm)\n",
               timed_steps, fwd_ms / timed_steps, bwd_ms / timed_steps, opt_ms / timed_steps);
    printf("memory: ledger peak %.2f MiB (cuBLASLt workspace %.2f MiB), device peak %.2f MiB (total - free, incl. CUDA context), "
           "process peak RSS %.2f MiB\n", led.peak / 1048576.0, MATMUL_WORKSPACE_BYTES / 1048576.0, peak_mib, process_peak_rss() / 1048576.0);
    char extra[256];
    snprintf(extra, sizeof(extra), ",\"ledger_peak_mib\":%.3f,\"fwd_ms\":%.3f,\"bwd_ms\":%.3f,\"opt_ms\":%.3f", led.peak / 1048576.0,
             timed_steps ? fwd_ms / timed_steps : 0.0, timed_steps ? bwd_ms / timed_steps : 0.0, timed_steps ? opt_ms / timed_steps : 0.0);
    run_print_summary(&stats, &a, &lg, opt->name, peak_mib, state_bytes, model.layout.num_params, extra);
    logger_close(&lg);
    for (int i = 0; i < nev; i++) CUDA_CHECK(cudaEventDestroy(ev[i]));
    free(ev);
    run_close_data(&data);
    dev_free_all();
    state_layout_free(&orun.layout);
    gpt2_free_host(&model);
    return 0;
}
#endif
