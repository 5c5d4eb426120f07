// trainer/dist_gpu.h: the host side of the CUDA trainer's data parallelism, in plain C so that the CPU
// tests check it without a GPU (test/test_dist_gpu.c). trainer/dist_nccl.cuh runs the collectives.
//  - which GPU a rank takes: its local rank on the node (one GPU per rank), and the one-line refusal
//    when the node has fewer GPUs than ranks;
//  - whether this build can run the ranks it was started with (NCCL compiled in or not; -dist-force 1);
//  - which ZeRO-1 plans (trainer/zero.h) the GPU optimizer kernels update exactly as the unsharded step,
//    and each rank's range of the flat weights for the all-gather after the step.
#ifndef TRAINER_DIST_GPU_H
#define TRAINER_DIST_GPU_H

#include <stddef.h>
#include "trainer/zero.h"
#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// This rank's index among the ranks on its node, and their number: Open MPI's
// OMPI_COMM_WORLD_LOCAL_RANK / _LOCAL_SIZE, MPICH's MPI_LOCALRANKID / MPI_LOCALNRANKS, else `rank` and
// `world` (one node).
int dist_local_rank(int rank);
int dist_local_world(int world);

// NULL when a CUDA trainer built with NCCL (have_nccl) or without it can run `world` ranks (force:
// -dist-force 1, the NCCL path at one rank), else the one-line reason for user_error.
const char* gpu_dist_refusal(int have_nccl, int world, int force);

// NULL when a node with `ndev` visible GPUs gives local rank `local_rank` of `local_world` a GPU of its
// own (GPU number local_rank), else the one-line reason, written into buf (n bytes).
const char* gpu_per_rank_refusal(int local_rank, int local_world, int ndev, char* buf, size_t n);

// How the CUDA kernels of an optimizer can update a piece (not the whole) of a tensor.
typedef enum {
    ZERO_GPU_WHOLE,     // only whole tensors (orthogonalization, projections, per-tensor blocks, ...)
    ZERO_GPU_ELEMENTS,  // the element-wise multi-tensor kernel: any range of elements (fp32 states)
    ZERO_GPU_QBLOCKS,   // the 8-bit kernels: element ranges of fp32-state tensors, whole quantization
                        // blocks (counted from the tensor's start) of quantized ones
    ZERO_GPU_ROWS,      // the factored kernels (adafactor, came): row ranges of matrices, their statistics
                        // over all rows reduced across the ranks that share the matrix; vectors whole
} ZeroGpuUnit;

// NULL when every slice of every rank in plan z (built over model layout ml) is one the kernels run as
// the unsharded step would (a whole tensor, a 1-D element range or a matrix's row range that `unit`
// allows), else the
// one-line reason (into buf) naming the optimizer, the tensor and the slice. Every rank holds the whole
// plan, so every rank gives the same answer (they refuse together, none waits in a collective).
const char* zero_gpu_unsupported(const ZeroPlan* z, const ModelLayout* ml, ZeroGpuUnit unit, char* buf, size_t n);

// counts[r] and displs[r] (world entries each): rank r's contiguous range [displs[r], displs[r] +
// counts[r]) of the flat parameters under plan z, the pieces of the weights' all-gather.
void zero_rank_ranges(const ZeroPlan* z, size_t* counts, size_t* displs);

#ifdef __cplusplus
}
#endif

#endif
