// optim/adam_mini.c: Adam-mini (`-opt adam_mini`), as the official zyushun/Adam-mini
// (adam_mini/adam_mini.py, version 1.1.1) partitions and updates a GPT-2.
//
// Adam-mini keeps Adam's first moment m per element but replaces the second moment v by ONE value per
// block of parameters, the EMA of the block's mean g^2 (the paper: one learning rate per dense Hessian
// sub-block). Per block B of a tensor, step t (scalars as Python floats, rounded once):
//   vmean_B = beta2 * vmean_B + (1 - beta2) * mean_{i in B}(g_i^2)
//   p = p * (1 - lr*wd)                                  only when wd > 0, decoupled, before the step
//   m = lerp(m, g, 1 - beta1)                            m.lerp_(grad, 1 - beta1)
//   stepsize_B = (1 / (1 - beta1^t)) / (sqrt(vmean_B) / sqrt(1 - beta2^t) + eps)
//   p = p - (m * stepsize_B) * lr
// Tensors whose name contains "bias" get plain AdamW instead (per-element v; v is updated before the
// decay, p.addcdiv_(m, sqrt(v)/sqrt(bc2) + eps, value=-lr/bc1)).
//
// The partition. The official code picks each tensor's blocks by substrings of its name; in our model:
//   attn.qkv.w (3C, C)  the fused q|k|v (ParamShape.role PARAM_ATTN_QKV): one block per head for q and
//                       for k (`heads` blocks of C/heads rows each: the official head_numel = dim*dim /
//                       n_heads elements, wqk_names), one block per row for v (per output neuron,
//                       wv_names). The official code only sees a fused qkv if the user adds its name to
//                       wqk_names (then v is per head too); we split it as separate q, k, v would be.
//   attn.proj.w, mlp.fc.w, mlp.proj.w   one block per row = output neuron (attn_proj_names, mlp_names)
//   wte (Vp, C)         one block per row = per token (embd_names "wte"; also the tied output layer)
//   wpe (maxT, C)       ONE block for the whole tensor: its name matches none of the official sets, so
//                       it falls into the official "other blocks" branch (sum(g^2) / numel)
//   *.b (biases)        AdamW, per-element v (adam_block_names = {"bias"})
//   ln*.w (gains)       one block for the whole tensor ("other blocks")
// Tensor names are ParamShape.name (trainer/model.c): a 1-D name ending in ".b" is a bias; wte is told
// from wpe by name. Block means are double sums of the fp32 squares, rounded to fp32 and divided by the count in fp32
// (PyTorch sums in fp32, in its own order: the tests allow for that).
//
// Defaults (the official constructor): lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0. The
// official code decays every tensor except names with "norm", "ln" or "bias": in our model exactly the
// 2-D tensors, which are the ones the trainer marks for decay.
//
// State: m (fp32, every element: 4 B/param); v (fp32) for biases; vmean (fp32) one per block. d12:
// 4.0070 B/param (v of the biases 0.003, vmean 0.004), half of AdamW's 8.
#include "common/util.h"

// No implicit fused multiply-adds: the ones PyTorch's kernels do (lerp, add with alpha) are explicit
// fmaf calls in adam_mini.h, so the elementwise math equals the official code's rounding, and the CUDA
// kernels (optim/adam_mini.cuh), which call the same functions, do the same operations.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim_common.h"
#include "adam_mini.h"   // after the pragma: the header's functions inline into the loops below

static int adam_mini_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    const MiniPartition q = adam_mini_partition(s);
    out[0] = optim_spec("m", DT_F32, s->numel);
    out[1] = q.adam ? optim_spec("v", DT_F32, s->numel) : optim_spec("vmean", DT_F32, q.nblocks);
    return 2;
}

static void adam_mini_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const AdamMiniScalars k = adam_mini_scalars(h, st->lr, st->t);
    const MiniPartition q = adam_mini_partition(p->shape);
    const int decays = p->shape->decay;
    const size_t n = p->shape->numel;
    float* theta = p->param;          // (numel)
    const float* g = p->grad;         // (numel)
    float* m = (float*)p->state[0];   // (numel) m
    if (q.adam) {
        float* v = (float*)p->state[1];   // (numel) v
        OPTIM_PARALLEL_FOR(n)
        for (size_t i = 0; i < n; i++) adam_mini_adam(&k, decays, &theta[i], &m[i], &v[i], g[i]);
        return;
    }
    float* vmean = (float*)p->state[1];   // (nblocks) vmean
    OPTIM_PARALLEL_FOR(n)
    for (size_t b = 0; b < q.nblocks; b++) {
        size_t lo, len;
        adam_mini_block_range(&q, b, &lo, &len);
        double sum = 0.0;
        for (size_t i = lo; i < lo + len; i++) sum += (double)adam_mini_sq(g[i]);  // grad * grad is fp32
        vmean[b] = adam_mini_vmean(&k, vmean[b], adam_mini_mean(sum, len));
        const float step = adam_mini_block_step(&k, vmean[b]);
        for (size_t i = lo; i < lo + len; i++) adam_mini_element(&k, decays, &theta[i], &m[i], g[i], step);
    }
}

const Optimizer OPT_ADAM_MINI = {
    .name = "adam_mini",
    .description = "Adam-mini: Adam's m, one v per block (q/k per head, v and matrices per row, wte per token)",
    .paper = "Zhang et al. 2024, Adam-mini: Use Fewer Learning Rates To Gain More, arXiv 2406.16793",
    .flags = 0,
    .defaults = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0 },
    .layout = adam_mini_layout,
    .init = NULL,
    .step = adam_mini_step,
    .hessian = NULL,
};
