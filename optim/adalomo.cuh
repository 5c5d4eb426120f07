// optim/adalomo.cuh: the CUDA side of optim/adalomo.c (`-opt adalomo`): Adafactor's factored update fused
// into the backward pass. The trainer (train_gpt2.cu, train_step_fused) calls gpu_opt_unit_step for a unit's
// tensors as soon as backward has finished that unit's gradient in its one-unit scratch.
// The second moment is Adafactor's, so the kernels are optim/factored.cuh's passes 1-5 (fac_stat_passes:
// over 64x256 tiles, row and column partials of g^2 + eps1 in reduce_plan.h's fixed orders, the
// row/column EMAs, the factors, the update's sum of squares and sum theta^2, all in fixed-order double
// sums, no float atomics), run over one FacGpu per unit whose tensors read their gradient at grad_off (their
// place in the unit's scratch). Then adalomo's own update (adalomo_update_kernel): adalomo.h's
// adalomo_update, the function adalomo.c's loop calls, with lr_t = lr * max(eps2, RMS(theta)) from pass 5
// (adafactor_step_size with rho = lr and scale_parameter on is adalomo_lr_t's expression) and the decay
// 1 - lr_t*wd (adalomo_tensor_scalars). beta2_t = 1 - t^decay_rate, eps1, the update clipping: the same
// scalars as Adafactor's (adafactor_scalars) with relative_step off and scale_parameter on, which adalomo
// hard-wires. State: the shared layout (v_row, v_col per matrix, v per vector), so checkpoints cross.
// Included by optim/optim.cuh (after factored.cuh and lomo.cuh).
#ifndef OPTIM_ADALOMO_CUH
#define OPTIM_ADALOMO_CUH

#include "optim/adalomo.h"

typedef struct {
    int nunits;
    FacGpu* fac;   // (nunits) one per unit, over that unit's tensors (an empty unit: ntensors 0)
} AdalomoGpu;

static void adalomo_setup(GpuOpt* o, const ParamShape* shapes, const size_t* param_offsets, int n, Ledger* led) {
    CHECK(o->units && o->grad_offsets);
    AdalomoGpu* ag = (AdalomoGpu*)xcalloc(1, sizeof(AdalomoGpu));
    int* first = NULL;
    ag->nunits = fused_unit_ranges(o->units, n, &first);
    ag->fac = (FacGpu*)xcalloc((size_t)(ag->nunits > 0 ? ag->nunits : 1), sizeof(FacGpu));
    // every unit's scratch and tables in one allocation: a sizing pass (a dry ledger, nothing copied), then
    // the real one carving that allocation in the same order
    Ledger sizing;
    ledger_init(&sizing, 1);
    FacPool pool = { NULL, 0 };
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            pool.base = (char*)dev_alloc(led, MEM_OTHER, "adalomo factored scratch (all units)", pool.used);
            pool.used = 0;
        }
        for (int u = 0; u < ag->nunits; u++) {
            const int i0 = first[u], nu = first[u + 1] - i0;
            StateLayout view = o->layout; // the unit's tensors: a window of the whole layout (same buffers)
            view.tensors = o->layout.tensors + i0;
            view.num_tensors = nu;
            fac_setup(&ag->fac[u], 0, &view, o->buf, shapes + i0, param_offsets + i0, o->grad_offsets + i0, nu, NULL,
                      pass == 0 ? &sizing : led, &pool);
            if (pass == 0) fac_free_host(&ag->fac[u]);
        }
    }
    free(first);
    o->own = ag;
}

// theta = adalomo_update(theta, g, pre, clip_div, (lr_t, wd)) over one unit's tiles (optim/reduce_plan.h;
// the same walk as factored.cuh's fac_update_kernel: matrices a warp per row, a lane per 8 consecutive
// columns with 16-byte loads where aligned; vectors the flat groups). The gradient at grad_off.
template <typename G>
__global__ void __launch_bounds__(FAC_THREADS) adalomo_update_kernel(float* master, const G* grad, bf16d* pbf16, const FacTensor* tensors,
                                                                      const RpTile* tiles, int ntiles, const float* clip_div,
                                                                      const float* lr_t, FacArgs a) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int k = blockIdx.x; k < ntiles; k += gridDim.x) {
        const RpTile x = tiles[k];
        const FacTensor t = tensors[x.tensor];
        const float cd = clip_div[x.tensor];
        const AdalomoTensorScalars s = adalomo_tensor_scalars(lr_t[x.tensor], t.decay ? a.af.wd : 0.0);
        const uint64_t base = sr_stream(a.seed, a.step, t.param_off);
        if (!t.factored) {
            for (int q = 0;; q++) {
                const size_t e0 = rp_flat_group(x.r0, threadIdx.x, q);
                if (e0 >= x.r1) break;
                const int n = rp_group_len(e0, x.r1);
                for (int j = 0; j < n; j++) {
                    const size_t e = e0 + j, gi = t.param_off + e;
                    const float g = opt_grad(grad, t.grad_off + e, a.clip_scale);
                    opt_store(master, pbf16, gi, adalomo_update(master[gi], g, fac_rsqrt(t.v_row[e]), cd, s), a.sr, base, e);
                }
            }
            continue;
        }
        const bool vec = fac_vec_ok<G>(t, grad, master, pbf16, NULL);
        const size_t c = rp_tile_col(&x, lane);
        const int n = rp_group_len(c, x.c1);
        if (n == 0) continue; // (per lane: no barrier below)
        float cfv[RP_VEC];
        fac_cf8(t, c, n, cfv);
        for (size_t i = rp_tile_row(&x, warp, 0); i < x.r1; i += RP_WARPS) {
            const size_t e = i * t.cols + c, gi = t.param_off + e;
            float g[RP_VEC], th[RP_VEC];
            ld_grad8(grad + t.grad_off + e, n, vec, a.clip_scale, g);
            ld_f8(master + gi, n, vec, th);
            const float rfi = t.rf[i];
#pragma unroll
            for (int j = 0; j < RP_VEC; j++)
                if (j < n) th[j] = adalomo_update(th[j], g[j], rfi * cfv[j], cd, s);
            st_master8(master, pbf16, gi, n, vec, th, a.sr, base, e);
        }
    }
}

template <typename G>
static void adalomo_unit_step(GpuOpt* o, int unit, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* ga) {
    const AdalomoGpu* ag = (const AdalomoGpu*)o->own;
    CHECK(unit >= 0 && unit < ag->nunits);
    const FacGpu* f = &ag->fac[unit];
    if (f->ntensors == 0 || f->ntiles == 0) return;
    OptHyper h = o->hyper;
    h.relative_step = 0;    // adalomo.c hard-wires these (its OptHyper flags are documentation)
    h.scale_parameter = 1;
    FacArgs a;
    memset(&a, 0, sizeof(a));
    a.came = 0;
    a.af = adafactor_scalars(&h, ga->lr, ga->step); // rho = lr; b2 = 1 - t^decay_rate; eps1 = eps
    a.eps1 = a.af.eps1;
    a.b2 = a.af.b2;
    a.omb2 = a.af.omb2;
    a.clip_scale = ga->clip_scale;
    a.sr = ga->sr;
    a.seed = ga->seed;
    a.step = ga->step;
    fac_stat_passes<G>(f, a, master, grad);
    adalomo_update_kernel<G><<<fac_grid(f->ntiles), FAC_THREADS>>>(master, grad, pbf16, f->d_tensors, f->d_tiles, f->ntiles, f->clip_div,
                                                                  f->lr_t, a);
    KERNEL_CHECK();
}

// step_f32/step_bf16 NULL: there is no whole-model step, only the unit steps inside backward.
static const GpuOptimizer OPT_ADALOMO_CUDA = { NULL, adalomo_setup, NULL, NULL, NULL, NULL, adalomo_unit_step<float>, adalomo_unit_step<bf16d> };

#endif
