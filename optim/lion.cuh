// optim/lion.cuh: the CUDA side of optim/lion.c (`-opt lion`): one multi-tensor launch per step
// (optim/optim.cuh's multi_tensor_kernel) whose per-element op is lion.h's lion_update, with lion.h's
// scalars: the functions the CPU loop calls. Included by optim/optim.cuh.
#ifndef OPTIM_LION_CUH
#define OPTIM_LION_CUH

#include "optim/lion.h"

struct LionOp {
    LionScalars s;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        return lion_update(th, g, (float*)t.sp[0] + li, s, t.decay); // exp_avg
    }
};

template <typename G>
static void lion_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const LionOp op = { lion_scalars(&o->hyper, a->lr) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

static const GpuOptimizer OPT_LION_CUDA = GPU_OPTIMIZER(NULL, gpu_opt_elementwise_setup, lion_step_launch);

#endif
