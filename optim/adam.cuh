// optim/adam.cuh: the CUDA side of optim/adam.c (`-opt adam`, `-opt adamw`): one multi-tensor launch per
// step (optim/optim.cuh's multi_tensor_kernel) whose per-element op is adam.h's adam_update, with
// adam.h's scalars: the functions the CPU loop calls, so the two sides do the same operations in the same
// order. Included by optim/optim.cuh.
#ifndef OPTIM_ADAM_CUH
#define OPTIM_ADAM_CUH

#include "optim/adam.h"

struct AdamOp {
    AdamScalars s;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        return adam_update(th, g, (float*)t.sp[0] + li, (float*)t.sp[1] + li, s, t.decay); // exp_avg, exp_avg_sq
    }
};

template <int DECOUPLED, typename G>
static void adam_variant_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const AdamOp op = { adam_scalars(&o->hyper, a->lr, a->step, DECOUPLED) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}
template <typename G>
static void adam_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    adam_variant_launch<0, G>(o, master, grad, pbf16, a);
}
template <typename G>
static void adamw_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    adam_variant_launch<1, G>(o, master, grad, pbf16, a);
}

static const GpuOptimizer OPT_ADAM_CUDA = GPU_OPTIMIZER(NULL, gpu_opt_elementwise_setup, adam_step_launch);
static const GpuOptimizer OPT_ADAMW_CUDA = GPU_OPTIMIZER(NULL, gpu_opt_elementwise_setup, adamw_step_launch);

#endif
