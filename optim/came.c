// optim/came.c: CAME (`-opt came`), Confidence-guided Adaptive Memory Efficient optimization, exactly
// as its official implementation defines it (yangluo7/CAME, came_pytorch/CAME.py; Luo et al., ACL 2023).
//
// Math, per tensor, step t = 1, 2, ... (lr = OptStep.lr, the scheduled lr; no bias correction anywhere)
//   u = g^2 + eps1
//   2-D (rows, cols): r = b2*r + (1-b2)*mean_cols(u),  c = b2*c + (1-b2)*mean_rows(u)   constant b2
//                     U = g * rsqrt(r/mean(r)) (x) rsqrt(c)
//   1-D:              v = b2*v + (1-b2)*u,  U = g * rsqrt(v)
//   U = U / max(1, RMS(U)/clip_threshold)             update clipping (before the momentum)
//   m = b1*m + (1-b1)*U                               first moment of the clipped update
//   2-D: res = (U - m)^2 + eps2                       instability, with the clipped U and the new m
//        R = b3*R + (1-b3)*mean_cols(res),  C = b3*C + (1-b3)*mean_rows(res)
//        update = m * rsqrt(R/mean(R)) (x) rsqrt(C)   = m / sqrt(S), S the factored instability
//   1-D: update = m                                   (no confidence term, no residual state)
//   theta = theta - lr*wd*theta - lr*update           decoupled weight decay with the raw lr
// Defaults (reference): betas (0.9, 0.999, 0.9999) -> beta1, beta2, beta3; eps (1e-30, 1e-16) ->
// eps, eps2; clip_threshold 1; weight_decay 0. The reference has no lr default (it asserts lr > 0);
// ours is 5e-5, from a sweep on the default run (below); the README's example uses 2e-4 (its
// pre-training advice: 1/3 to 1x AdamW's lr), too large for this short, small run (the large early
// updates below).
// The reference's docstring calls the weight decay "L2 penalty", but the code decays decoupled, as
// here. It also keeps an RMS(theta) that it never uses; we do not compute it.
// Early steps: with constant b2 the first U is about g/sqrt(0.001 g^2) ~ 32, so the clip binds, and
// R starts near (1-b3)*res, so the first updates are several times lr per element; use warmup.
//
// Where the article's sketch differs: it keeps a full-size confidence (instability) tensor, which
// costs 4 B/param and defeats the memory saving; the real CAME factors it into row/column EMAs
// (R, C) exactly like the second moment. The sketch also skips the update clipping, which the real
// CAME applies to U before the momentum and before the residual is formed. See docs/optimizers.md.
//
// State (fp32, zero at start; names are the ledger lines):
//   2-D: exp_avg (numel), v_row (rows), v_col (cols), res_row (rows), res_col (cols)
//   1-D: exp_avg (numel), v (numel)
// Bytes: 4*numel + 8*(rows+cols) per matrix, 8*numel per vector. GPT-2 d12: 499,991,552 bytes
// = 4.0168 B/param (AdamW: 8).
// ZeRO-1 (OPT_SHARD_ROWS): a rank holding rows [r0, r1) of a matrix keeps exp_avg, v_row and res_row of
// those rows and the whole v_col and res_col (4*(r1-r0)*cols + 8*(r1-r0) + 8*cols bytes); the column
// sums of both factored statistics, mean(v_row), mean(res_row) and RMS(U) are completed across the
// sharing ranks by OptStep.reduce (optim/factored.h). Vectors are never split.
// The CUDA kernels shard the same rows, their partial sums completed by the same hook (optim/factored.cuh).
#include <math.h>
#include "optim/came.h"

static int came_layout(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]) {
    int n = 0;
    out[n++] = optim_spec("exp_avg", DT_F32, s->numel);
    if (fac_is_factored(s)) {
        out[n++] = optim_spec("v_row", DT_F32, s->rows);
        out[n++] = optim_spec("v_col", DT_F32, s->cols);
        out[n++] = optim_spec("res_row", DT_F32, s->rows);
        out[n++] = optim_spec("res_col", DT_F32, s->cols);
    } else {
        out[n++] = optim_spec("v", DT_F32, s->numel);
    }
    return n;
}

static void came_step(const OptHyper* h, OptTensor* p, OptStep* st) {
    const ParamShape* s = p->shape;
    const int factored = fac_is_factored(s);
    float* theta = p->param;                              // (rows, cols) or (numel)
    const float* g = p->grad;                             // same shape
    float* m = (float*)p->state[0];                       // (numel) exp_avg
    float* v_row = (float*)p->state[1];                   // (rows), or v (numel) for a vector
    float* v_col = factored ? (float*)p->state[2] : NULL; // (cols)
    float* res_row = factored ? (float*)p->state[3] : NULL; // (rows)
    float* res_col = factored ? (float*)p->state[4] : NULL; // (cols)

    const CameScalars k = came_scalars(h, st->lr);
    const double wd = s->decay ? k.wd : 0.0;
    const float wd_alpha = fac_wd_alpha(wd, k.lr_d); // reference: p.add_(p, alpha=-wd*lr)

    FacWork w = fac_work_alloc(s, st->reduce); // st->reduce: rows of a matrix other ranks share (ZeRO-1)
    const float clip_div = fac_second_moment(&w, v_row, v_col, g, k.eps1, k.beta2, k.clip_threshold);
    const size_t rows = w.rows, cols = w.cols;

    if (!factored) {
        // 1-D: the update is the momentum of the clipped update itself.
        OPTIM_PARALLEL_FOR(cols)
        for (size_t j = 0; j < cols; j++) {
            const float mk = came_momentum(m + j, came_u(w.cf[j], g[j], clip_div), k);
            theta[j] = came_apply(theta[j], 1.0f, mk, k, wd, wd_alpha);
        }
        fac_work_free(&w);
        return;
    }

    // Momentum and the instability's row/column sums in one pass over fixed row chunks (see
    // factored.h). The clipped U is recomputed from the factors, never stored.
    fac_sums_zero(&w);
    OPTIM_PARALLEL_FOR(s->numel)
    for (int c = 0; c < w.nchunks; c++) {
        double* cs = fac_col_part(&w, c);
        for (size_t i = fac_chunk_row(&w, c); i < fac_chunk_row(&w, c + 1); i++) {
            double rs = 0.0;
            for (size_t j = 0; j < cols; j++) {
                const size_t e = i * cols + j;
                const float u = came_u(fac_pre(&w, i, j), g[e], clip_div);
                const float res = came_residual(u, came_momentum(m + e, u, k), k);
                rs += res;
                cs[j] += res;
            }
            w.row_sum[i] = rs;
        }
    }
    fac_sums_reduce(&w);
    fac_ema_from_sums(&w, res_row, res_col, k.beta3);
    fac_factors(&w, res_row, res_col); // now pre = S^-1/2, the confidence

    OPTIM_PARALLEL_FOR(s->numel)
    for (size_t i = 0; i < rows; i++) {
        for (size_t j = 0; j < cols; j++) {
            const size_t e = i * cols + j;
            theta[e] = came_apply(theta[e], fac_pre(&w, i, j), m[e], k, wd, wd_alpha);
        }
    }
    fac_work_free(&w);
}

const Optimizer OPT_CAME = {
    .name = "came",
    .description = "Adafactor + confidence: factored v and factored instability, momentum on the clipped update",
    .paper = "Luo et al., ACL 2023, arXiv:2307.02047",
    .flags = 0,
    .shard = OPT_SHARD_ROWS,
    .defaults = {
        .lr = 5e-5,            // results/sweep/: d4 default run, 60 steps: 2e-5 val 4.94, 5e-5 4.68,
                                // 1e-4 4.96, 2e-4 5.05, 5e-4 5.20; 200 steps: 5e-5 4.04, 1e-4 4.22
        .beta1 = 0.9,
        .beta2 = 0.999,
        .beta3 = 0.9999,
        .eps = 1e-30,
        .eps2 = 1e-16,
        .weight_decay = 0.0,
        .clip_threshold = 1.0,
    },
    .layout = came_layout,
    .init = NULL,
    .step = came_step,
    .hessian = NULL,
};
