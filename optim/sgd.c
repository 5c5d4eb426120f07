// optim/sgd.c: plain SGD (`-opt sgd`) and SGD with momentum (`-opt sgdm`), exactly torch.optim.SGD.
//
// Math (torch.optim.SGD, torch/optim/sgd.py, dampening 0, maximize off), per element, step t = 1, 2, ...
//   d = g + wd*theta                  coupled L2: the decay is part of the gradient, so with momentum
//                                     it flows into the buffer (only when wd != 0; -c)
//   sgd:   theta = theta - lr*d
//   sgdm:  b = mu*b + d               torch clones b = d on the first step; our buffer starts at zero,
//                                     and mu*0 + d == d exactly, so the first step is the same
//          d = d + mu*b   (-nesterov) or d = b
//          theta = theta - lr*d
// This is the "v = mu*v + g, theta -= lr*v" form with lr outside the buffer (unlike Sutskever et al.,
// whose buffer holds lr*g), so changing lr mid-run does not rescale the stored momentum.
//
// State: sgd keeps nothing (0 B/param). sgdm keeps momentum_buffer, fp32, 4 B/param; like torch, no
// buffer at all when momentum is 0 (then sgdm is sgd).
//
// Defaults: lr 0.3 (sgd) and 0.1 (sgdm), ours (below); otherwise torch's (lr 1e-3), momentum 0, weight_decay 0, nesterov off. sgdm is "SGD with momentum",
// which torch's momentum default of 0 would make plain sgd, so sgdm uses momentum 0.9, the value of
// torch's documentation example and of most papers.
// For GPT-2 training: for a GPT-2 run of a few hundred steps, lr 1e-3 is small for plain SGD
// on a transformer (no per-coordinate scaling as in Adam); expect to need an lr one to two orders of
// magnitude larger with clipping on (-g 1), or about 10x larger with momentum 0.9; check with a short
// run. Our defaults keep torch's except lr, set by a sweep on the default run (below).
//
// Where a simplified sketch differs (see docs/optimizers.md): torch's weight decay is a coupled L2 term
// added to the gradient (so it enters the momentum), the lr sits outside the buffer (b = mu*b + g, not
// Sutskever's form or a (1-mu)-damped EMA), and the first step sets b = g.
#include "optim/sgd.h"

// ---- sgd -----------------------------------------------------------------------------------------

static int sgd_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    return 0;
}

static void sgd_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const SgdScalars s = sgd_scalars(h, st->lr);
    const int decays = p->shape->decay;
    float* theta = p->param;      // (numel)
    const float* g = p->grad;     // (numel)
    const size_t n = p->shape->numel;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) theta[i] = sgd_update(theta[i], g[i], s, decays);
}

const Optimizer OPT_SGD = {
    .name = "sgd",
    .description = "plain SGD, coupled L2 weight decay (torch.optim.SGD, momentum 0)",
    .paper = "Robbins & Monro 1951, Ann. Math. Stat. 22(3)",
    .flags = 0,
    .shard = OPT_SHARD_ELEMENT,
    // lr 0.3, not torch's 1e-3: results/sweep/ (d4 default run, 60 steps: 1e-3 val 10.13, 0.1 6.06,
    // 0.3 5.24, 1 5.78, 3 5.89; the full 200-step run at 0.3: val 4.49)
    .defaults = { .lr = 0.3, .weight_decay = 0.0, .momentum = 0.0, .nesterov = 0 },
    .layout = sgd_layout,
    .init = NULL,
    .step = sgd_step,
    .hessian = NULL,
};

// ---- sgdm ----------------------------------------------------------------------------------------

static int sgdm_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (h->momentum == 0.0) return 0;   // torch keeps no buffer without momentum
    out[0] = optim_spec("momentum_buffer", DT_F32, s->numel);
    return 1;
}

static void sgdm_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    if (h->momentum == 0.0) { sgd_step(h, p, st); return; }
    const SgdScalars s = sgd_scalars(h, st->lr);
    const int decays = p->shape->decay;
    float* theta = p->param;          // (numel)
    const float* g = p->grad;         // (numel)
    float* buf = (float*)p->state[0]; // (numel) momentum_buffer, zero before the first step
    const size_t n = p->shape->numel;
    OPTIM_PARALLEL_FOR(n)
    for (size_t i = 0; i < n; i++) theta[i] = sgdm_update(theta[i], g[i], buf + i, s, decays);
}

const Optimizer OPT_SGDM = {
    .name = "sgdm",
    .description = "SGD with momentum b = mu*b + g (torch.optim.SGD), -nesterov for Nesterov momentum",
    .paper = "Polyak 1964 (heavy ball); Sutskever et al. 2013, ICML (Nesterov form)",
    .flags = 0,
    .shard = OPT_SHARD_ELEMENT,
    // lr 0.1, not torch's 1e-3: results/sweep/ (d4 default run, 60 steps: 0.01 val 6.49, 0.03 5.68,
    // 0.1 5.32, 0.3 5.46; the full 200-step run at 0.03: val 4.59, 0.1 not run)
    .defaults = { .lr = 0.1, .weight_decay = 0.0, .momentum = 0.9, .nesterov = 0 },
    .layout = sgdm_layout,
    .init = NULL,
    .step = sgdm_step,
    .hessian = NULL,
};
