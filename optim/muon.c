// optim/muon.c: Muon, MomentUm Orthogonalized by Newton-Schulz (`-opt muon`), as the official
// KellerJordan/Muon muon.py (SingleDeviceMuonWithAuxAdam, the version whose muon_update scales by
// max(1, rows/cols)^0.5, as of commit 00ba60d) computes it: Muon for the hidden 2-D matrices, its
// built-in AdamW for the rest. (Other Muon variants scale differently, e.g. Moonshot's
// 0.2 * sqrt(max(rows, cols)) to match AdamW's update RMS; we follow the official package.)
//
// Muon part, for each hidden matrix (ParamShape.role PARAM_MATRIX or PARAM_ATTN_QKV), step t:
//   m = lerp(m, g, 1 - beta)                   momentum.lerp_(grad, 1 - beta), fp32
//   u = lerp(g, m, beta)                       Nesterov (default; -nesterov 0: u = m)
//   X = bf16(u), transposed if rows > cols     so X is (s, l) with s <= l: X X^T is the small Gram
//   X = bf16(X / bf16(bf16(||X||_F) + 1e-7))   spectral norm <= 1
//   5 times:                                   the quintic X <- aX + (bX X^T + c(X X^T)^2) X, in bf16:
//     A = bf16(X X^T)                            every matmul accumulates in fp32 and rounds its
//     B = bf16(bf16(b*A) + bf16(bf16(c*A) A))    output to bf16, every elementwise op rounds to bf16,
//     X = bf16(bf16(a*X) + bf16(B X))            as PyTorch does on bf16 tensors; note c*A @ A is
//                                                (c*A) @ A in Python
//   (a, b, c) = (3.4445, -4.7750, 2.0315), chosen to maximise the slope at zero: the singular values
//   land in about [0.7, 1.2] rather than exactly 1 (U S' V^T, not U V^T), which the author found harmless.
//   X transposed back; update = bf16(X * max(1, rows/cols)^0.5)
//   p = p * (1 - lr*wd) - lr * update
// The scalars a, b, c, 1e-7 and the shape scale are fp32 as CUDA applies Python floats to bf16 tensors
// (PyTorch 1.13 on the CPU rounds them to bf16 first: 3.4375, -4.78125, 2.03125; newer PyTorch and CUDA
// do not). The norm is a double sum of the bf16 values' squares, rounded to fp32 then bf16 (PyTorch
// accumulates bf16 norms in fp32 and rounds once).
//
// AdamW part, for the embeddings (PARAM_EMBEDDING: wte, which is also the tied LM head, and wpe) and
// the vectors (biases, LayerNorm gains), the official adam_update, in its order:
//   m = lerp(m, g, 1 - beta1),  v = lerp(v, g*g, 1 - beta2)
//   u = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)      eps after the square root
//   p = p * (1 - lr_adam*wd) - lr_adam * u
// The official README puts the embeddings, the LM head and the gains/biases in Adam groups; our wte is
// both the embedding and the tied head, so it is simply an AdamW tensor (the official example gives the
// head and the embedding different Adam lrs; with tying there is one tensor and one lr, the aux lr).
//
// Choices of the official code we follow, and ours:
//  - A fused qkv matrix (3C, C) is one 2-D parameter to the official Muon, which orthogonalizes it as a
//    whole and scales by sqrt(3C/C) = sqrt(3). We do the same (the modded-nanogpt speedrun later split
//    q, k, v into separate matrices; the Muon package does not).
//  - Two learning rates, as the official param groups: -l is the Muon lr (default 0.02); the AdamW part
//    uses OptHyper.aux_lr (default 3e-4, the official Adam group default). The schedule scales both.
//  - -momentum (0.95), -nesterov (1), -beta1/-beta2 (0.9, 0.95), -eps (1e-10) and -c (0) are the
//    official defaults; -c applies to both parts, on the tensors the trainer marks for decay.
//  - Newton-Schulz matmuls run in fp32 (cpu/matmul.h) on bf16-rounded inputs, and their outputs are
//    rounded to bf16: what a bf16 GEMM with fp32 accumulation computes, up to the accumulation order.
//
// State: momentum_buffer (fp32, 4 B/param) for the Muon tensors; exp_avg and exp_avg_sq (fp32,
// 8 B/param) for the AdamW tensors. d12: 656,068,608 bytes = 5.2706 B/param (the embeddings, on AdamW,
// are a third of GPT-2 small).
// The Newton-Schulz scratch, 4 * (2*s*l + 3*s*s) bytes for the largest matrix (26 MB on d12's
// (3072, 768) mlp.fc), is allocated per call and freed: it is not in the memory ledger.
#include <stdlib.h>
#include <string.h>
#include "optim_common.h"
#include "muon.h"
#include "cpu/matmul.h"
#include "common/util.h"

// Every operation rounded as written: no implicit fused multiply-adds; the ones PyTorch's kernels do
// (lerp, add with alpha) are explicit fmaf calls in muon.h. So our steps equal the test's transcription
// of the official code bit for bit where the op order is the same.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static int muon_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (muon_uses_muon(s)) {
        out[0] = optim_spec("momentum_buffer", DT_F32, s->numel);
        return 1;
    }
    out[0] = optim_spec("exp_avg", DT_F32, s->numel);
    out[1] = optim_spec("exp_avg_sq", DT_F32, s->numel);
    return 2;
}

// C (M, N) = bf16(A (M, K) @ B (K, N)), B given by strides (see matmul_gemm).
static void ns_matmul_bf16(int M, int N, int K, const float* A, const float* B, long rs_b, long cs_b, float* C) {
    matmul_gemm(M, N, K, A, K, 1, B, rs_b, cs_b, C, N, 0, NULL);
    const size_t n = (size_t)M * (size_t)N;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) C[i] = muon_bf16(C[i]);
}

// Newton-Schulz on X (s, l), s <= l, in place; X holds bf16 values. work: 3*s*s + s*l floats.
static void muon_newton_schulz(float* X, int s, int l, float* work) {
    float* A = work;                         // (s, s) X X^T
    float* cA = A + (size_t)s * s;           // (s, s) c*A, then B
    float* T = cA + (size_t)s * s;           // (s, s) (c*A) A
    float* BX = T + (size_t)s * s;           // (s, l) B X
    const size_t ss = (size_t)s * s, sl = (size_t)s * l;
    double sumsq = 0.0;
    for (size_t i = 0; i < sl; i++) sumsq += (double)X[i] * (double)X[i];
    const float norm = muon_bf16((float)sqrt(sumsq));
    const float denom = muon_bf16(norm + MUON_NS_EPS);
    OPTIM_PARALLEL_FOR(sl)
    for (size_t i = 0; i < sl; i++) X[i] = muon_bf16(X[i] / denom);
    for (int it = 0; it < MUON_NS_STEPS; it++) {
        ns_matmul_bf16(s, s, l, X, X, 1, l, A);               // A = X X^T: B(k, j) = X[j*l + k]
        for (size_t i = 0; i < ss; i++) cA[i] = muon_bf16(MUON_NS_C * A[i]);
        ns_matmul_bf16(s, s, s, cA, A, s, 1, T);              // T = (c*A) A
        for (size_t i = 0; i < ss; i++) cA[i] = muon_ns_axpy(MUON_NS_B, A[i], T[i]);  // B
        ns_matmul_bf16(s, l, s, cA, X, l, 1, BX);             // B X
        OPTIM_PARALLEL_FOR(sl)
        for (size_t i = 0; i < sl; i++) X[i] = muon_ns_axpy(MUON_NS_A, X[i], BX[i]);
    }
}

static void muon_matrix_step(const MuonScalars* k, OptTensor* p) {
    const ParamShape* sh = p->shape;
    const size_t rows = sh->rows, cols = sh->cols, n = sh->numel;
    const int tr = rows > cols;                   // orthogonalize the wide orientation
    const int s = (int)(tr ? cols : rows), l = (int)(tr ? rows : cols);
    float* theta = p->param;                      // (rows, cols)
    const float* g = p->grad;                     // (rows, cols)
    float* m = (float*)p->state[0];               // (rows, cols) momentum_buffer
    float* X = (float*)xmalloc(((size_t)2 * s * l + (size_t)3 * s * s) * sizeof(float)); // X, then work
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) {
        const float mi = muon_momentum(k, m[i], g[i]);
        m[i] = mi;
        const float u = muon_bf16(muon_nesterov(k, g[i], mi));
        const size_t r = i / cols, c = i % cols;
        X[tr ? c * rows + r : i] = u;             // X (s, l): u^T when rows > cols
    }
    muon_newton_schulz(X, s, l, X + (size_t)s * l);
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) {
        const size_t r = i / cols, c = i % cols;
        const float update = muon_bf16(X[tr ? c * rows + r : i] * k->scale);
        theta[i] = muon_param(k, theta[i], update);
    }
    free(X);
}

static void muon_adamw_step(const MuonScalars* k, OptTensor* p) {
    float* theta = p->param;          // (numel)
    const float* g = p->grad;         // (numel)
    float* m = (float*)p->state[0];   // (numel) exp_avg
    float* v = (float*)p->state[1];   // (numel) exp_avg_sq
    const size_t n = p->shape->numel;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) muon_adamw(k, &theta[i], &m[i], &v[i], g[i]);
}

static void muon_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const MuonScalars k = muon_scalars(h, p->shape->rows, p->shape->cols, optim_wd(h, p), st->lr, st->lr_scale, st->t);
    if (muon_uses_muon(p->shape)) muon_matrix_step(&k, p);
    else muon_adamw_step(&k, p);
}

const Optimizer OPT_MUON = {
    .name = "muon",
    .description = "Muon: Nesterov momentum orthogonalized by 5 bf16 Newton-Schulz steps on hidden matrices, AdamW (lr aux 3e-4) on the rest",
    .paper = "Jordan et al. 2024, Muon: An optimizer for hidden layers in neural networks (kellerjordan.github.io/posts/muon)",
    .flags = 0,
    .defaults = { .lr = 0.02, .momentum = 0.95, .nesterov = 1, .weight_decay = 0.0, .beta1 = 0.9,
                  .beta2 = 0.95, .eps = 1e-10, .aux_lr = 3e-4 },
    .layout = muon_layout,
    .init = NULL,
    .step = muon_step,
    .hessian = NULL,
};
