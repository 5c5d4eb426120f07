// optim/adalomo.c: AdaLomo (`-opt adalomo`): Adafactor's factored update fused into the backward
// pass, as OpenLMLab/LOMO's lomo_optim/adalomo.py computes it (Lv et al. 2023, arXiv:2310.10195).
//
// Fusion is the trainer's part (flag OPT_FUSED_BACKWARD): it calls step() for each tensor as soon as
// that tensor's gradient exists inside backward, so only about one layer's gradients are ever held.
// This file is the per-tensor math only.
//
// Math, per tensor, step t = 1, 2, ... (t counts backward passes; lr = OptStep.lr, the scheduled lr,
// which the reference receives per step through fused_backward(loss, lr))
//   b2t  = 1 - t^decay_rate                      decay_rate -0.8, as Adafactor
//   u    = g^2 + eps1
//   2-D (rows, cols): r = b2t*r + (1-b2t)*mean_cols(u),  c = b2t*c + (1-b2t)*mean_rows(u)
//                     U = g * rsqrt(r/mean(r)) (x) rsqrt(c)
//   1-D:              v = b2t*v + (1-b2t)*u,  U = g * rsqrt(v)
//   U    = U / max(1, RMS(U)/clip_threshold)     "grouped update normalisation", per tensor
//   lr_t = lr * max(eps2, RMS(theta))            parameter scaling always on, no relative step
//   theta = theta*(1 - lr_t*wd) - lr_t*U         decoupled decay, scaled like the step (only wd > 0)
// That is Adafactor with relative_step off, scale_parameter on and no beta1, hard-wired (the
// OptHyper flags relative_step/scale_parameter/use_beta1 are not read).
// Defaults: lr 3e-2 (ours, below; the reference's 1e-3), eps (1e-30, 1e-3) -> eps, eps2, clip_threshold 1, decay_rate -0.8,
// weight_decay 0. Ours keep them except lr (below): the reference's 1e-3 is a fine-tuning value. The reference multiplies the loss by a static loss_scale (2^10) and divides each
// gradient by it again; our gradients arrive fp32 and already unscaled, so that pair is a no-op here.
// Its clip_grad_value/clip_grad_norm (two-pass) clipping are the trainer's -g clipping. Weight decay
// applies to tensors the trainer marks (ParamShape.decay); the reference decays every tensor.
//
// State (fp32, zero at start, names as Adafactor's): 2-D: v_row (rows), v_col (cols); 1-D: v (numel).
// GPT-2 d12: 1,286,656 bytes = 0.0103 B/param (and no full gradient buffer: that is the point).
#include <math.h>
#include "optim_common.h"
#include "factored.h"
#include "adalomo.h"

static int adalomo_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    if (fac_is_factored(s)) {
        out[0] = optim_spec("v_row", DT_F32, s->rows);
        out[1] = optim_spec("v_col", DT_F32, s->cols);
        return 2;
    }
    out[0] = optim_spec("v", DT_F32, s->numel);
    return 1;
}

static void adalomo_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const ParamShape* s = p->shape;
    const int factored = fac_is_factored(s);
    float* theta = p->param;                              // (rows, cols) or (numel)
    const float* g = p->grad;                             // same shape
    float* v_row = (float*)p->state[0];                   // (rows), or v (numel) for a vector
    float* v_col = factored ? (float*)p->state[1] : NULL; // (cols)

    const double t = (double)st->t;
    const double beta2t = 1.0 - pow(t, h->decay_rate);
    FacWork w = fac_work_alloc(s, NULL); // never sharded (updates inside backward)
    const float clip_div = fac_second_moment(&w, v_row, v_col, g, (float)h->eps, beta2t,
                                             h->clip_threshold);

    // Parameter scaling: RMS of theta before this step's update (adalomo.h, shared with the CUDA kernel).
    const float lr_t = adalomo_lr_t(st->lr, h->eps2, fac_rms(theta, s->numel));
    const AdalomoTensorScalars ts = adalomo_tensor_scalars(lr_t, optim_wd(h, p));
    const size_t rows = w.rows, cols = w.cols;
    OPTIM_PARALLEL_FOR(s->numel)
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            const size_t k = i * cols + j;
            theta[k] = adalomo_update(theta[k], g[k], fac_pre(&w, i, j), clip_div, ts);
        }
    }
    fac_work_free(&w);
}

const Optimizer OPT_ADALOMO = {
    .name = "adalomo",
    .description = "Adafactor's factored update fused into backward (LOMO), per-tensor update normalisation",
    .paper = "Lv et al. 2023, arXiv:2310.10195",
    .flags = OPT_FUSED_BACKWARD,
    .defaults = {
        .lr = 3e-2,            // results/sweep/: d4 default run, 60 steps: 1e-2 val 6.02, 3e-2 4.36,
                                // 1e-1 4.36 (flat above 3e-2); 200 steps at 1e-2: 4.00 (3e-2 not run)
        .eps = 1e-30,
        .eps2 = 1e-3,
        .weight_decay = 0.0,
        .clip_threshold = 1.0,
        .decay_rate = -0.8,
        .relative_step = 0,     // documentation only: step() hard-wires these three
        .scale_parameter = 1,
        .use_beta1 = 0,
    },
    .layout = adalomo_layout,
    .init = NULL,
    .step = adalomo_step,
    .hessian = NULL,
};
