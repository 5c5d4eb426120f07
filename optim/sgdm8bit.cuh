// optim/sgdm8bit.cuh: the CUDA side of optim/sgdm8bit.c (`-opt sgdm8bit`): quant8.cuh's 1-state kernel
// (one launch over every quantized block, signed codebook in shared memory) with sgdm8bit.h's
// sgdm8bit_update, which is also the small tensors' fp32 path (bitsandbytes' 32-bit kernel has the same
// algebra) through optim.cuh's chunk kernel: the function the CPU loop calls, so states, codes and
// parameters are the CPU's bits (quant8.cuh says when they are not). Included by optim/optim.cuh.
#ifndef OPTIM_SGDM8BIT_CUH
#define OPTIM_SGDM8BIT_CUH

#include "optim/sgdm8bit.h"
#include "optim/quant8.cuh"

struct Sgdm8bitOp {
    Sgdm8bitScalars k;
    __device__ float operator()(int decays, float* p, float s, float g) const { return sgdm8bit_update(&k, decays, p, s, g); }
};

template <typename G>
static void sgdm8bit_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const Sgdm8bitOp op = { sgdm8bit_scalars(&o->hyper, a->lr, a->step) };
    q8_1state_launch(o, master, grad, pbf16, a, op, op);
}

static const GpuOptimizer OPT_SGDM8BIT_CUDA = GPU_OPTIMIZER(NULL, q8_1state_setup, sgdm8bit_step_launch);

#endif
