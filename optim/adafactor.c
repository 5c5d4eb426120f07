// optim/adafactor.c: Adafactor (`-opt adafactor`), exactly HuggingFace transformers' Adafactor
// (src/transformers/optimization.py, a port of fairseq's), which follows Shazeer & Stern 2018.
//
// Math, per tensor, step t = 1, 2, ...
//   rho   = min(1e-2, 1/sqrt(t))         relative step (default), or the scheduled lr when off
//   lr_t  = rho * max(eps2, RMS(theta))  parameter scaling (default on; else lr_t = rho)
//   b2t   = 1 - t^decay_rate             decay_rate -0.8: b2t = 0 at t = 1, so no bias correction
//   u     = g^2 + eps1
//   2-D (rows, cols): r = b2t*r + (1-b2t)*mean_cols(u)    (rows)
//                     c = b2t*c + (1-b2t)*mean_rows(u)    (cols)
//                     U = g * rsqrt(r/mean(r)) (x) rsqrt(c)    = g / sqrt(r c^T / mean(r))
//   1-D:              v = b2t*v + (1-b2t)*u,  U = g * rsqrt(v)
//   U = U / max(1, RMS(U)/clip_threshold) * lr_t           update clipping, then the step size
//   with -beta1:  m = beta1*m + (1-beta1)*U;  U = m       momentum on the lr-scaled update
//   theta = theta - wd*lr_t*theta - U                     HF's weight decay uses lr_t (with RMS)
// Defaults (HF): eps (1e-30, 1e-3) -> eps, eps2; clip_threshold 1; decay_rate -0.8; no beta1; wd 0;
// relative_step and scale_parameter on. HF's warmup_init (rho = min(1e-6*t, 1/sqrt(t))) is not offered.
//
// Learning rate and the trainer's schedule. With relative_step on (the default) the step size is the
// relative step above and OptStep.lr, including the schedule's multiplier OptStep.lr_scale, is NOT
// applied: HF ignores the group lr (which a scheduler would change) in that mode, and so do we, so
// warmup/cosine flags have no effect on adafactor unless -l is given. The trainer switches
// relative_step off when -l is given (HF forbids lr with relative_step); then rho = OptStep.lr, the
// scheduled lr, and parameter scaling stays on as in HF's defaults (lr_t = lr * max(eps2, RMS(theta));
// HF recommends scale_parameter off with an external lr, which OptHyper can express but no flag sets).
// Weight decay applies to tensors the trainer marks (ParamShape.decay).
//
// Where the article's sketch differs: it is a simplification of this algorithm; the parts of the real
// one that a sketch tends to drop and that this file keeps are the relative step and parameter
// scaling (so the lr is not an absolute step), the t^-0.8 schedule of beta2 (no bias correction
// needed), eps1 added to g^2 before the row/column means, the reconstruction divided by mean(r), the
// update clipping at RMS 1, and the full v for vectors. See docs/optimizers.md.
//
// State (fp32, zero at start; names are the ledger lines):
//   2-D: v_row (rows), v_col (cols)   1-D: v (numel)   with -beta1 also exp_avg (numel)
// GPT-2 d12 (124,475,904 params: 50 matrices with rows+cols = 200,320, 148 vectors with 121,344
// elements): 1,286,656 bytes = 0.0103 B/param; with -beta1 499,190,272 bytes = 4.0103 B/param.
// ZeRO-1 (OPT_SHARD_ROWS): a rank holding rows [r0, r1) of a matrix keeps v_row of those rows, the whole
// v_col, and exp_avg of its rows; the column sums, mean(v_row), RMS(U) and RMS(theta) are completed
// across the sharing ranks by OptStep.reduce (optim/factored.h). Vectors are never split.
// The CUDA kernels shard the same rows, their partial sums completed by the same hook (optim/factored.cuh).
#include <math.h>
#include "optim/adafactor.h"

static int adafactor_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    int n = 0;
    if (fac_is_factored(s)) {
        out[n++] = optim_spec("v_row", DT_F32, s->rows);
        out[n++] = optim_spec("v_col", DT_F32, s->cols);
    } else {
        out[n++] = optim_spec("v", DT_F32, s->numel);
    }
    if (h->use_beta1) out[n++] = optim_spec("exp_avg", DT_F32, s->numel);
    return n;
}

static void adafactor_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const ParamShape* s = p->shape;
    const int factored = fac_is_factored(s);
    float* theta = p->param;      // (rows, cols) or (numel)
    const float* g = p->grad;     // same shape
    float* v_row = (float*)p->state[0];                 // (rows), or v (numel) for a vector
    float* v_col = factored ? (float*)p->state[1] : NULL; // (cols)
    float* m = h->use_beta1 ? (float*)p->state[factored ? 2 : 1] : NULL; // (numel) exp_avg

    // The step size of this step for this tensor (host scalars in double, as in Python).
    const AdafactorScalars k = adafactor_scalars(h, st->lr, st->t);
    FacWork w = fac_work_alloc(s, st->reduce); // st->reduce: rows of a matrix other ranks share (ZeRO-1)
    const float lr_t = adafactor_step_size(k, k.scale_parameter ? fac_rms_w(&w, theta) : 0.0);

    const float clip_div = fac_second_moment(&w, v_row, v_col, g, k.eps1, k.beta2t, k.clip_threshold);

    const double wd = s->decay ? k.wd : 0.0;
    const float wd_alpha = fac_wd_alpha(wd, (double)lr_t); // HF: p.add_(p, alpha=-wd*lr_t)
    const size_t rows = w.rows, cols = w.cols;
    OPTIM_PARALLEL_FOR(s->numel)
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            const size_t e = i * cols + j;
            theta[e] = adafactor_update(theta[e], g[e], fac_pre(&w, i, j), clip_div, lr_t, m ? m + e : NULL, k, wd, wd_alpha);
        }
    }
    fac_work_free(&w);
}

const Optimizer OPT_ADAFACTOR = {
    .name = "adafactor",
    .description = "factored second moment (row/col EMAs), update clipping, relative step (HF Adafactor)",
    .paper = "Shazeer & Stern 2018, arXiv:1804.04235",
    .flags = 0,
    .shard = OPT_SHARD_ROWS,
    .defaults = {
        .lr = 1e-2,             // used only with relative_step off (-l given): the relative step's cap
        .beta1 = 0.0,           // no first moment unless -beta1 (use_beta1)
        .eps = 1e-30,
        .eps2 = 1e-3,
        .weight_decay = 0.0,
        .clip_threshold = 1.0,
        .decay_rate = -0.8,
        .relative_step = 1,
        .scale_parameter = 1,
        .use_beta1 = 0,
    },
    .layout = adafactor_layout,
    .init = NULL,
    .step = adafactor_step,
    .hessian = NULL,
};
