// optim/lion8bit.cuh: the CUDA side of optim/lion8bit.c (`-opt lion8bit`): quant8.cuh's 1-state kernel
// (one launch over every quantized block, signed codebook in shared memory) with lion8bit.h's
// lion8bit_update, and the small tensors' fp32 state1 through optim.cuh's chunk kernel with
// lion8bit_update_fp32 (bitsandbytes' 32-bit kernel, coupled weight decay): the functions the CPU loop
// calls, so states, codes and parameters are the CPU's bits (quant8.cuh says when they are not).
// Included by optim/optim.cuh.
#ifndef OPTIM_LION8BIT_CUH
#define OPTIM_LION8BIT_CUH

#include "optim/lion8bit.h"
#include "optim/quant8.cuh"

struct Lion8bitOp {
    Lion8bitScalars k;
    __device__ float operator()(int decays, float* p, float s, float g) const { return lion8bit_update(&k, decays, p, s, g); }
};
struct Lion8bitFp32Op {
    Lion8bitScalars k;
    __device__ float operator()(int decays, float* p, float s, float g) const { return lion8bit_update_fp32(&k, decays, p, s, g); }
};

template <typename G>
static void lion8bit_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const Lion8bitScalars k = lion8bit_scalars(&o->hyper, a->lr);
    q8_1state_launch(o, master, grad, pbf16, a, Lion8bitOp{ k }, Lion8bitFp32Op{ k });
}

static const GpuOptimizer OPT_LION8BIT_CUDA = GPU_OPTIMIZER(NULL, q8_1state_setup, lion8bit_step_launch);

#endif
