// trainer/zero_gpu.cuh: -zero 1 in the CUDA trainer. The plan is the CPU trainer's (trainer/zero.c:
// zero_plan_build gives every rank's slices and state layout); here it becomes a GpuOpt over this rank's
// slices, the weights' all-gather after each step (trainer/dist_nccl.cuh) and the checkpoint staging.
//
//  - The GpuOpt's tensors are this rank's non-empty slices in tensor order, each with its shape (a
//    slice of an element-wise tensor is a vector of its elements) and its parameter offset (the
//    tensor's offset + the slice's start): the kernels then index the flat master, gradient and bf16
//    buffers at exactly the slice's elements, and its state layout is the plan's layout of this rank
//    (state_layout_build on the same shapes), so the ledger holds exactly the shard's state bytes.
//  - Which slices the kernels run as the unsharded step would is decided per kernel family
//    (zero_gpu_unit below, checked by zero_gpu_unsupported on every rank's slices): the element-wise
//    multi-tensor kernel takes element ranges, the 8-bit kernels (2-state and 1-state: the same block
//    table, each block at its tensor's param_off + its offset) whole quantization blocks, the factored
//    kernels (adafactor, came) row ranges of matrices as the CPU trainer cuts them: each rank's partial
//    column sums, sum of the row statistic, sum U^2 and sum theta^2 are reduced over the ranks sharing
//    the matrix through the plan's OptReduce hooks (trainer/zero.c: MPI in rank order, the CPU trainer's
//    own reduce; optim/factored.cuh stages the sums through the host), so both trainers cut and reduce
//    the same way. The other kernels (adam_mini, adamw4bit, muon, galore) take whole
//    tensors only, and for those the plan is built with whole tensors as the unit. A plan that cuts
//    elsewhere is refused with one line, as a safety net.
//  - Stochastic rounding (-sr 1) draws each tensor's bits from sr_stream(seed, step, param_off) at index
//    li, both of the slice: a sliced tensor rounds with other (equally random) bits than unsharded,
//    so -sr 1 -zero 1 with more than one rank is not bit-identical to one rank; round to nearest is.
//  - As on the CPU, the gradients are reduce-scattered (trainer/dist_nccl.cuh: each rank gets the mean
//    of its range [displs[rank], + counts[rank]) only) and, in bf16 mode, each rank keeps only its range
//    of the fp32 master (train_gpt2.cu: gpt2_alloc_master), which is all it updates. The bf16 copy (fp32
//    mode: the parameters, whole on every rank) is all-gathered after every step; a checkpoint assembles
//    the whole master from every rank's range over MPI.
//  - Checkpoints hold the unsharded layout (zero_gather_state assembles it from every rank's shard over
//    MPI, zero_scatter_state takes this rank's part back out): the same file as the CPU trainer's at
//    any world size, with or without -zero.
#ifndef TRAINER_ZERO_GPU_CUH
#define TRAINER_ZERO_GPU_CUH

#include "optim/optim.cuh"
#include "trainer/zero.h"
#include "trainer/dist_gpu.h"
#include "trainer/dist_nccl.cuh"

typedef struct {
    ZeroPlan plan;
    size_t* counts;                    // (world) each rank's range of the flat weights (the all-gather)
    size_t* displs;                    // (world)
    void* mine[MAX_STATE_BUFFERS];     // host copies of this rank's state buffers while a checkpoint is staged
    void* full[MAX_STATE_BUFFERS];     // host: the unsharded state buffers, while staged
    ZeroReduce reduce;                 // row shards over several real ranks: each shared matrix's group and hook
} GpuZero;

// What a piece of a tensor means to this optimizer's CUDA kernels (see the top of this file).
static ZeroGpuUnit zero_gpu_unit(const Optimizer* opt) {
    const GpuOptimizer* g = gpu_optimizer(opt);
    if (g && g->setup == gpu_opt_elementwise_setup) return ZERO_GPU_ELEMENTS;
    if (g && (g->setup == adam8bit_setup || g->setup == paged_adamw8bit_setup || g->setup == q8_1state_setup)) return ZERO_GPU_QBLOCKS;
    if (g && (g->setup == adafactor_setup || g->setup == came_setup)) return ZERO_GPU_ROWS;
    return ZERO_GPU_WHOLE;
}

// The shard unit of the GPU's plan: the optimizer's own where its kernels take pieces of tensors, else
// whole tensors (see gpu_zero_setup).
static OptShardUnit gpu_zero_plan_unit(const Optimizer* opt) {
    return zero_gpu_unit(opt) == ZERO_GPU_WHOLE ? OPT_SHARD_TENSOR : opt->shard;
}

// -memory-only 1 -plan-world N without -plan-rank: the rank of the GPU's plan that keeps the most bytes.
static int gpu_zero_largest_rank(const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world, int bf16) {
    ZeroPlan z;
    zero_plan_build_unit(&z, ml, opt, h, world, 0, gpu_zero_plan_unit(opt));
    int k = zero_largest_rank(&z, bf16);
    zero_plan_free(&z);
    return k;
}

// The plan for this rank and its GpuOpt over the slices (state through the ledger). Refuses (exit 2)
// a plan whose slices the kernels cannot run exactly. connect: a real run over `world` MPI ranks (not a
// -memory-only plan): every rank creates the groups of the matrices the plan splits in rows (a
// collective), whose hooks the factored kernels reduce through.
static void gpu_zero_setup(GpuZero* gz, GpuOpt* o, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h,
                           int world, int rank, int connect, Ledger* led) {
    memset(gz, 0, sizeof(*gz));
    ZeroPlan* z = &gz->plan;
    // the kernels that take whole tensors only (adam_mini, adamw4bit, muon, galore)
    // get a plan of whole tensors, whatever the optimizer declares for the CPU. The checkpoint is the
    // unsharded file either way, so CPU and GPU runs resume each other.
    const ZeroGpuUnit unit = zero_gpu_unit(opt);
    zero_plan_build_unit(z, ml, opt, h, world, rank, gpu_zero_plan_unit(opt));
    char msg[512];
    const char* why = zero_gpu_unsupported(z, ml, unit, msg, sizeof(msg));
    if (why) user_error("%s", why);
    if (connect) zero_reduce_connect(&gz->reduce, z);
    int n = ml->num_tensors, k = 0;
    ParamShape* shapes = (ParamShape*)xcalloc((size_t)n, sizeof(ParamShape));
    size_t* offs = (size_t*)xcalloc((size_t)n, sizeof(size_t));
    const OptReduce** red = (const OptReduce**)xcalloc((size_t)n, sizeof(OptReduce*));
    for (int i = 0; i < n; i++) {
        const ZeroSlice* s = zero_slice(z, i);
        if (s->shape.numel == 0) continue;
        CHECK(z->index[(size_t)rank * n + i] == k);
        shapes[k] = s->shape;
        offs[k] = ml->tensors[i].offset + s->start;
        red[k] = zero_reduce_of(&gz->reduce, z, i);
        // a shared slice without its hook would update its rows from partial statistics
        CHECK(!connect || !s->shared || red[k] != NULL);
        k++;
    }
    gpu_opt_setup_shards(o, opt, h, shapes, offs, k, red, led);
    free(red);
    // the GpuOpt's layout is the plan's for this rank, buffer for buffer (the checkpoint staging relies on it)
    const StateLayout* pl = &z->layouts[rank];
    CHECK(o->layout.nbuf == pl->nbuf && o->layout.total_bytes == pl->total_bytes);
    for (int b = 0; b < pl->nbuf; b++) CHECK(o->layout.buf_bytes[b] == pl->buf_bytes[b] && !strcmp(o->layout.buf_label[b], pl->buf_label[b]));
    gz->counts = (size_t*)xcalloc((size_t)world, sizeof(size_t));
    gz->displs = (size_t*)xcalloc((size_t)world, sizeof(size_t));
    zero_rank_ranges(z, gz->counts, gz->displs);
    free(shapes);
    free(offs);
}

// After this rank's optimizer step: every rank's range of the weights (buf: elt-byte elements) to every
// rank. Collective.
static void gpu_zero_allgather(GpuZero* gz, GpuDist* d, void* buf, size_t elt) {
    gpu_dist_allgather(d, buf, elt, gz->counts, gz->displs);
}

// The unsharded state buffers (host, zeroed) the checkpoint's state blobs point at, and the host staging
// of this rank's shard.
static void gpu_zero_stage_alloc(GpuZero* gz) {
    const ZeroPlan* z = &gz->plan;
    for (int b = 0; b < z->full.nbuf; b++) gz->full[b] = xcalloc(z->full.buf_bytes[b] ? z->full.buf_bytes[b] : 1, 1);
    const StateLayout* pl = &z->layouts[z->rank];
    for (int b = 0; b < pl->nbuf; b++) gz->mine[b] = xcalloc(pl->buf_bytes[b] ? pl->buf_bytes[b] : 1, 1);
}

// Before a save: this rank's device shard to the host, then every rank's shard into the unsharded
// buffers (collective over MPI, trainer/zero.c).
static void gpu_zero_stage_out(GpuZero* gz, const GpuOpt* o) {
    for (int b = 0; b < o->layout.nbuf; b++)
        if (o->layout.buf_bytes[b]) CUDA_CHECK(cudaMemcpy(gz->mine[b], o->buf[b], o->layout.buf_bytes[b], cudaMemcpyDeviceToHost));
    zero_gather_state(&gz->plan, gz->mine, gz->full);
}

// After a load: this rank's part of the unsharded buffers to its device shard.
static void gpu_zero_stage_in(GpuZero* gz, GpuOpt* o) {
    zero_scatter_state(&gz->plan, gz->full, gz->mine);
    for (int b = 0; b < o->layout.nbuf; b++)
        if (o->layout.buf_bytes[b]) CUDA_CHECK(cudaMemcpy(o->buf[b], gz->mine[b], o->layout.buf_bytes[b], cudaMemcpyHostToDevice));
}

static void gpu_zero_stage_free(GpuZero* gz) {
    for (int b = 0; b < MAX_STATE_BUFFERS; b++) { free(gz->full[b]); free(gz->mine[b]); gz->full[b] = gz->mine[b] = NULL; }
}

static void gpu_zero_free(GpuZero* gz) {
    gpu_zero_stage_free(gz);
    zero_reduce_free(&gz->reduce);
    zero_plan_free(&gz->plan);
    free(gz->counts);
    free(gz->displs);
}

#endif
