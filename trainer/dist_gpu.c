// trainer/dist_gpu.c: see dist_gpu.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "trainer/dist_gpu.h"

// The first of the environment variables that holds a number >= 0, else `fallback`.
static int env_int(const char* const* names, int count, int fallback) {
    for (int i = 0; i < count; i++) {
        const char* v = getenv(names[i]);
        char* end;
        if (!v || !*v) continue;
        long x = strtol(v, &end, 10);
        if (!*end && x >= 0 && x < (1L << 30)) return (int)x;
    }
    return fallback;
}

int dist_local_rank(int rank) {
    static const char* const names[] = { "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID" };
    return env_int(names, 2, rank);
}

int dist_local_world(int world) {
    static const char* const names[] = { "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS" };
    return env_int(names, 2, world);
}

const char* gpu_dist_refusal(int have_nccl, int world, int force) {
    if (have_nccl || (world <= 1 && !force)) return NULL;
    if (force)
        return "-dist-force 1 runs the NCCL path, but this CUDA trainer was built without NCCL (no nccl.h and libnccl at "
               "build time): install NCCL (its nccl.h and libnccl.so, e.g. apt-get install libnccl-dev, or the copy in "
               "/usr/local/cuda) and rebuild with `make train_gpu`";
    return "this CUDA trainer was built without NCCL (no nccl.h and libnccl at build time), so it runs one rank only: "
           "install NCCL (its nccl.h and libnccl.so, e.g. apt-get install libnccl-dev, or the copy in /usr/local/cuda) "
           "and rebuild with `make train_gpu`, or run the ranks with ./train_cpu";
}

const char* gpu_per_rank_refusal(int local_rank, int local_world, int ndev, char* buf, size_t n) {
    if (ndev >= local_world && local_rank < ndev) return NULL;
    snprintf(buf, n, "NCCL without a GPU per rank: this node shows %d CUDA GPU%s to %d ranks (local rank %d has none); "
             "start at most %d rank%s per node (mpirun -np N, or --map-by ppr:%d:node), each sees all the node's GPUs",
             ndev, ndev == 1 ? "" : "s", local_world, local_rank, ndev, ndev == 1 ? "" : "s", ndev);
    return buf;
}

// Why the kernels of `unit` cannot update rank r's slice of tensor i (not the whole tensor) as the
// unsharded step would; NULL when they can.
static const char* slice_refusal(const ZeroPlan* z, const ModelLayout* ml, ZeroGpuUnit unit, int r, int i) {
    const int nt = z->num_tensors;
    const ZeroSlice* s = &z->slices[(size_t)r * nt + i];
    const ModelTensor* p = &ml->tensors[i];
    if (s->shape.ndim != 1 || s->shape.rows != 1) { // a 2-D piece
        const int row_range = s->shape.ndim == 2 && p->shape.ndim == 2 && s->shape.cols == p->shape.cols &&
                              s->start % p->shape.cols == 0 && s->shape.numel == s->shape.rows * s->shape.cols;
        if (!row_range) return "a 2-D piece that is not a range of the matrix's rows";
        if (unit != ZERO_GPU_ROWS) return "a range of a matrix's rows, whose statistics its CUDA kernels do not reduce across ranks";
        return s->shared ? NULL : "a range of a matrix's rows that the plan does not mark shared (no reduce across ranks)";
    }
    if (unit == ZERO_GPU_WHOLE) return "an element range, and its CUDA kernels update whole tensors only";
    if (unit == ZERO_GPU_ROWS) return "an element range, and its CUDA kernels take whole vectors and row ranges of matrices only";
    int k = z->index[(size_t)r * nt + i];
    const TensorStates* mine = k >= 0 ? &z->layouts[r].tensors[k] : NULL;
    const TensorStates* full = &z->full.tensors[i];
    int quantized = 0;
    for (int st = 0; st < full->nstate; st++) quantized |= full->dtype[st] != DT_F32;
    if (!mine || mine->nstate != full->nstate) return "a piece whose state is not the tensor's own kind of state";
    if (quantized && unit != ZERO_GPU_QBLOCKS) return "an element range of a tensor with quantized state";
    if (quantized && (z->hyper.qblock <= 0 || s->start % (size_t)z->hyper.qblock != 0)) return "a piece that cuts a quantization block";
    return NULL;
}

const char* zero_gpu_unsupported(const ZeroPlan* z, const ModelLayout* ml, ZeroGpuUnit unit, char* buf, size_t n) {
    int nt = z->num_tensors;
    for (int r = 0; r < z->world; r++)
        for (int i = 0; i < nt; i++) {
            const ZeroSlice* s = &z->slices[(size_t)r * nt + i];
            const ModelTensor* p = &ml->tensors[i];
            if (s->shape.numel == 0) continue;
            if (s->start == 0 && s->shape.numel == p->shape.numel && s->shape.rows == p->shape.rows) continue; // whole
            const char* why = slice_refusal(z, ml, unit, r, i);
            if (!why) continue;
            snprintf(buf, n, "-zero 1 on the GPU: %s gives rank %d elements [%zu, %zu) of %s (%zu elements), %s; use "
                     "./train_cpu for -zero 1 with %s, or run it data-parallel on the GPU without -zero",
                     z->opt->name, r, s->start, s->start + s->shape.numel, p->name, p->shape.numel, why, z->opt->name);
            return buf;
        }
    return NULL;
}

void zero_rank_ranges(const ZeroPlan* z, size_t* counts, size_t* displs) {
    for (int r = 0; r < z->world; r++) {
        displs[r] = z->bound[r];
        counts[r] = z->bound[r + 1] - z->bound[r];
    }
}
