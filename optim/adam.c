// optim/adam.c: Adam (`-opt adam`, coupled L2) and AdamW (`-opt adamw`, decoupled weight decay),
// exactly torch.optim.Adam / torch.optim.AdamW (amsgrad off, maximize off), in torch's order.
//
// Math, per element, step t = 1, 2, ...
//   adam:  g = g + wd*theta                  coupled L2: decay enters m and v like any gradient
//   adamw: theta = theta * (1 - lr*wd)       decoupled: before the moments; lr not bias-corrected
//   m = beta1*m + (1-beta1)*g
//   v = beta2*v + (1-beta2)*g*g
//   bc1 = 1 - beta1^t, bc2 = 1 - beta2^t     (in double, as Python computes them)
//   denom = sqrt(v)/sqrt(bc2) + eps          eps is added AFTER the bias correction, as torch does
//                                            (the paper adds it to sqrt(v_hat): the same thing)
//   theta = theta - (lr/bc1) * m / denom
// Adam with wd != 0 is L2 regularisation, which Loshchilov & Hutter showed is not weight decay for
// adaptive methods: the decay term is divided by sqrt(v) like the gradient. AdamW decays every weight
// at the same relative rate lr*wd.
//
// State: exp_avg (m) and exp_avg_sq (v), fp32 each: 8 B/param. torch's per-tensor step counter is
// the trainer's global step t (OptStep.t), saved in the checkpoint by the trainer.
//
// Defaults (torch): lr 1e-3, betas (0.9, 0.999), eps 1e-8; weight_decay 0 for Adam, 1e-2 for AdamW.
// For GPT-2 training: GPT-2 practice (nanoGPT, llm.c) for AdamW is lr 6e-4, betas
// (0.9, 0.95), wd 0.1 with warmup and cosine decay; beta2 0.95 reacts faster than 0.999, which
// matters in a run of a few hundred steps where v would otherwise average over most of the run. The
// table keeps torch's defaults.
//
// Where a simplified sketch differs (see docs/optimizers.md): the bias corrections 1 - beta^t, eps added
// after the bias correction of sqrt(v) (not inside the square root), and AdamW's decay decoupled and applied
// first with the scheduled lr, while Adam's is a coupled L2 term in the gradient.
#include "optim/adam.h"

static int adam_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    out[0] = optim_spec("exp_avg", DT_F32, s->numel);
    out[1] = optim_spec("exp_avg_sq", DT_F32, s->numel);
    return 2;
}

// One Adam step over the tensor; `decoupled` picks AdamW's weight decay over Adam's L2 term.
static void adam_tensor_step(const OptHyper* h, OptTensor* p, const OptStep* st, int decoupled) {
    const AdamScalars s = adam_scalars(h, st->lr, st->t, decoupled);
    const int decays = p->shape->decay;
    float* theta = p->param;        // (numel)
    const float* grad = p->grad;    // (numel)
    float* m = (float*)p->state[0]; // (numel) exp_avg
    float* v = (float*)p->state[1]; // (numel) exp_avg_sq
    const size_t n = p->shape->numel;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) theta[i] = adam_update(theta[i], grad[i], m + i, v + i, s, decays);
}

static void adam_step(const OptHyper* h, OptTensor* p, OptStep* st) { adam_tensor_step(h, p, st, 0); }
static void adamw_step(const OptHyper* h, OptTensor* p, OptStep* st) { adam_tensor_step(h, p, st, 1); }

const Optimizer OPT_ADAM = {
    .name = "adam",
    .description = "Adam with coupled L2 weight decay (torch.optim.Adam)",
    .paper = "Kingma & Ba 2015, arXiv 1412.6980",
    .flags = 0,
    .shard = OPT_SHARD_ELEMENT,
    .defaults = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0 },
    .layout = adam_layout,
    .init = NULL,
    .step = adam_step,
    .hessian = NULL,
};

const Optimizer OPT_ADAMW = {
    .name = "adamw",
    .description = "Adam with decoupled weight decay (torch.optim.AdamW)",
    .paper = "Loshchilov & Hutter 2019, arXiv 1711.05101",
    .flags = 0,
    .shard = OPT_SHARD_ELEMENT,
    .defaults = { .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-2 },
    .layout = adam_layout,
    .init = NULL,
    .step = adamw_step,
    .hessian = NULL,
};
