// optim/sgd.cuh: the CUDA side of optim/sgd.c (`-opt sgd`, `-opt sgdm`): one multi-tensor launch per
// step (optim/optim.cuh's multi_tensor_kernel) whose per-element op is sgd.h's update, the function the
// CPU loop calls. Included by optim/optim.cuh.
#ifndef OPTIM_SGD_CUH
#define OPTIM_SGD_CUH

#include "optim/sgd.h"

struct SgdOp {
    SgdScalars s;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const { return sgd_update(th, g, s, t.decay); }
};
struct SgdmOp {
    SgdScalars s;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        return sgdm_update(th, g, (float*)t.sp[0] + li, s, t.decay); // momentum_buffer
    }
};

template <typename G>
static void sgd_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const SgdOp op = { sgd_scalars(&o->hyper, a->lr) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

template <typename G>
static void sgdm_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const SgdScalars s = sgd_scalars(&o->hyper, a->lr);
    if (o->hyper.momentum == 0.0) { // torch keeps no buffer: plain sgd (sgd.c does the same)
        const SgdOp op = { s };
        multi_tensor_launch(o, master, grad, pbf16, a, op);
    } else {
        const SgdmOp op = { s };
        multi_tensor_launch(o, master, grad, pbf16, a, op);
    }
}

static const GpuOptimizer OPT_SGD_CUDA = GPU_OPTIMIZER(NULL, gpu_opt_elementwise_setup, sgd_step_launch);
static const GpuOptimizer OPT_SGDM_CUDA = GPU_OPTIMIZER(NULL, gpu_opt_elementwise_setup, sgdm_step_launch);

#endif
