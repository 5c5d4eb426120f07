// optim/sophia.cuh: the CUDA side of optim/sophia.c (`-opt sophia`). The step is one multi-tensor launch
// (optim/optim.cuh's multi_tensor_kernel) whose per-element op is sophia.h's sophia_update; the Hessian
// EMA, every k steps, is one launch over the same chunk table whose per-element op is sophia.h's
// sophia_hessian_update on the trainer's Gauss-Newton-Bartlett gradient (train_gpt2.cu:
// maybe_update_hessian draws the labels and runs the extra backward). The functions the CPU loop calls.
// Included by optim/optim.cuh.
#ifndef OPTIM_SOPHIA_CUH
#define OPTIM_SOPHIA_CUH

#include "optim/sophia.h"

struct SophiaOp {
    SophiaScalars s;
    __device__ float operator()(float th, float g, const GpuOptTensor& t, size_t li) const {
        return sophia_update(th, g, (float*)t.sp[0] + li, ((const float*)t.sp[1])[li], s, t.decay); // exp_avg, hessian
    }
};

template <typename G>
static void sophia_step_launch(GpuOpt* o, float* master, const G* grad, bf16d* pbf16, const GpuStepArgs* a) {
    const SophiaOp op = { sophia_scalars(&o->hyper, a->lr) };
    multi_tensor_launch(o, master, grad, pbf16, a, op);
}

// h = beta2*h + (1-beta2)*(scale*g_hat)^2 over every chunk; the parameters are not touched.
template <typename G>
__global__ void __launch_bounds__(256) sophia_hessian_kernel(const G* grad, const GpuOptTensor* tensors, const GpuOptChunk* chunks,
                                                             int nchunks, float scale, SophiaScalars s) {
    for (int ci = blockIdx.x; ci < nchunks; ci += gridDim.x) {
        const GpuOptChunk ch = chunks[ci];
        const GpuOptTensor t = tensors[ch.tensor];
        float* h = (float*)t.sp[1]; // hessian
        for (int e = threadIdx.x; e < ch.count; e += blockDim.x) {
            const size_t li = ch.start + (size_t)e;
            h[li] = sophia_hessian_update(h[li], opt_grad(grad, t.param_off + li, scale), s);
        }
    }
}

template <typename G>
static void sophia_hessian_launch(GpuOpt* o, const G* grad, float scale) {
    const int grid = o->nchunks < OPT_MAX_GRID ? o->nchunks : OPT_MAX_GRID;
    if (grid < 1) return;
    sophia_hessian_kernel<G><<<grid, 256>>>(grad, o->d_tensors, o->d_chunks, o->nchunks, scale, sophia_scalars(&o->hyper, 0.0));
    KERNEL_CHECK();
}

static const GpuOptimizer OPT_SOPHIA_CUDA = GPU_OPTIMIZER_HESSIAN(NULL, gpu_opt_elementwise_setup, sophia_step_launch, sophia_hessian_launch);

#endif
