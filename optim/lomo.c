// optim/lomo.c: LOMO, LOw-Memory Optimization (`-opt lomo`), as OpenLMLab/LOMO lomo_optim/lomo.py.
//
// LOMO is plain SGD whose update is fused into the backward pass: the trainer calls step() for a
// layer's parameters as soon as that layer's gradients exist and then drops them, so gradients for
// the whole model are never held at once (flag OPT_FUSED_BACKWARD). That part is the trainer's;
// this file is the update itself, per element:
//   theta = theta * (1 - lr*wd)      decoupled weight decay (the reference applies it only when
//                                    wd > 0; multiplying by exactly 1 is the same, we skip it too)
//   theta = theta - lr*g
// with g already unscaled and clipped by the trainer. The reference clips by global norm with two
// backward passes (the first only measures per-tensor norms; clip_coef = min(max_norm /
// (total_norm + 1e-6), 1) scales g in the second) and optionally clamps g to +-clip_grad_value;
// both happen before step() sees g. The reference decays every parameter; here, like every optimizer
// of this trainer, only the tensors the trainer marks (ParamShape.decay).
//
// State: none, 0 B/param (and the trainer's gradient buffer is one layer's, not the model's).
//
// Defaults: lr 0.3 (ours, sgd's, below; the reference's 1e-3), weight_decay 0.
// For GPT-2 training: the same as for sgd: lr 1e-3 is small for plain SGD on a GPT-2 run of a
// few hundred steps (the LOMO paper fine-tunes pretrained models, where small SGD steps suffice); a
// from-scratch run likely wants a much larger lr with clipping. Our lr default is sgd's (below).
//
// Where a simplified sketch differs (see docs/optimizers.md): clipping by global norm costs a second
// forward and backward; the tied embedding keeps its gradient alive across the whole backward, so the
// trainer holds one block plus the embedding unit; gradient accumulation is impossible.
#include "optim/lomo.h"

static int lomo_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    return 0;
}

static void lomo_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const LomoScalars s = lomo_scalars(h, st->lr);
    const int decays = p->shape->decay;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    const size_t n = p->shape->numel;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) theta[i] = lomo_update(theta[i], g[i], s, decays);
}

const Optimizer OPT_LOMO = {
    .name = "lomo",
    .description = "plain SGD fused into the backward pass: one layer's gradients alive at a time, no state",
    .paper = "Lv et al. 2023, Full Parameter Fine-tuning for LLMs with Limited Resources, arXiv 2306.09782",
    .flags = OPT_FUSED_BACKWARD,
    // lr 0.3, not the reference's 1e-3 (a fine-tuning value): results/sweep/ (d4 default run, 60 steps:
    // 1e-3 val 10.13, 0.1 6.06, 0.3 5.24; the same curve as sgd, whose 1 and 3 gave 5.78, 5.89)
    .defaults = { .lr = 0.3, .weight_decay = 0.0 },
    .layout = lomo_layout,
    .init = NULL,
    .step = lomo_step,
    .hessian = NULL,
};
