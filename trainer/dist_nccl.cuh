// trainer/dist_nccl.cuh: the CUDA trainer's collectives over NCCL, one GPU per rank. MPI (trainer/dist.c)
// starts the ranks and carries the host side (the NCCL id, the loss, flags, checkpoint state); NCCL
// carries what lives on the GPU: the gradient all-reduce after backward (with -zero 1 a reduce-scatter)
// and the weights' all-gather after a -zero 1 step. The plan of a step is the CPU trainer's (trainer/run.c: each rank's rows of the global
// batch; trainer/zero.c: the shards), only the transport differs.
//
// Built with NCCL when the Makefile finds nccl.h and libnccl (USE_NCCL). Without it the trainer refuses
// more than one rank (and -dist-force 1) with a line naming what to install (trainer/dist_gpu.c), and
// everything below is a no-op at one rank.
//
// Collectives are "on" with more than one rank, or at one rank with -dist-force 1: then the NCCL
// communicator exists and every collective really runs through NCCL (over one rank it is the identity),
// so a one-GPU machine runs the same code as N GPUs.
//
// Streams: every trainer kernel runs on the legacy default stream. NCCL gets a stream of its own created
// blocking (cudaStreamCreate), which the legacy default stream orders against implicitly: an NCCL call
// starts after every kernel launched before it and every kernel launched after it waits for it, with
// no events to manage (and none of the default-stream quirks older NCCLs had).
//
// Gradients in bf16 mode are widened to fp32, summed over the ranks in fp32, scaled by 1/world and
// rounded to bf16 once, in chunks of GPU_DIST_CHUNK elements through one fp32 buffer (in the ledger as
// workspace). Why not an all-reduce in bf16: NCCL would round every partial sum to bf16 on its way around
// the ring (world - 1 roundings of 2^-9 relative each), while the CPU trainer averages fp32 partial sums
// before it rounds anything; the fp32 sum rounds once, as the CPU does, and the chunk bounds the memory
// (64 MiB) instead of a whole-model fp32 copy (4 bytes/param). The scale follows the sum (as the CPU's
// dist_allreduce_f32: sum, then times 1/world), not NCCL's ncclAvg, so the formula is the CPU's.
#ifndef TRAINER_DIST_NCCL_CUH
#define TRAINER_DIST_NCCL_CUH

#include "common/cuda_util.cuh"
#include "trainer/dist.h"
#include "trainer/dist_gpu.h"
#ifdef USE_NCCL
#include <nccl.h>
#endif

#ifdef USE_NCCL
#define GPU_DIST_HAVE_NCCL 1
// An NCCL failure is internal: the call, file and line, and every rank ends (MPI_Abort under mpirun).
static void nccl_fail_(ncclResult_t r, const char* expr, const char* file, int line) {
    fprintf(stderr, "internal error at %s:%d: NCCL error %d (%s) in %s on rank %d (NCCL_DEBUG=WARN tells more)\n", file, line,
            (int)r, ncclGetErrorString(r), expr, dist_rank());
    dist_abort(1);
}
#define NCCL_CHECK(call) do { ncclResult_t r_ = (call); if (r_ != ncclSuccess) nccl_fail_(r_, #call, __FILE__, __LINE__); } while (0)
#else
#define GPU_DIST_HAVE_NCCL 0
#endif

#define GPU_DIST_CHUNK ((size_t)1 << 24) // fp32 elements of the bf16-gradient all-reduce buffer (64 MiB)

typedef struct {
    int on;                  // collectives run: world > 1, or -dist-force 1
    int rank, world;
    int local_rank, local_world; // on this node: the GPU is number local_rank
    int connected;           // the communicator exists (after gpu_dist_connect)
    float* wide;             // (chunk) fp32 all-reduce buffer for bf16 gradients, NULL in fp32 mode
    size_t chunk;
    cudaStream_t stream;     // NCCL's stream (blocking)
#ifdef USE_NCCL
    ncclComm_t comm;
#endif
} GpuDist;

// The ranks of this run (trainer/dist.h) and whether this build can run them; refuses (exit 2) a
// build without NCCL started as several ranks or with -dist-force 1. Call before touching a GPU.
static void gpu_dist_init(GpuDist* d, int force) {
    memset(d, 0, sizeof(*d));
    d->rank = dist_rank();
    d->world = dist_world();
    const char* why = gpu_dist_refusal(GPU_DIST_HAVE_NCCL, d->world, force);
    if (why) user_error("%s", why);
    d->on = d->world > 1 || force;
    d->local_rank = d->on ? dist_local_rank(d->rank) : 0;
    d->local_world = d->on ? dist_local_world(d->world) : 1;
}

// The GPU this rank trains on, given ndev visible GPUs: its local rank (0 when collectives are off);
// refuses (exit 2) a node with fewer GPUs than ranks.
static int gpu_dist_device(const GpuDist* d, int ndev) {
    char msg[512];
    if (!d->on) return 0;
    const char* why = gpu_per_rank_refusal(d->local_rank, d->local_world, ndev, msg, sizeof(msg));
    if (why) user_error("%s", why);
    return d->local_rank;
}

// The all-reduce buffer through the ledger (a dry ledger records it only): bf16 gradients of
// num_params elements need min(num_params, GPU_DIST_CHUNK) fp32 elements.
// TRAIN_ALLREDUCE_CHUNK=N (elements) replaces the chunk size: test_gpt2cu sets a small one so that a
// small model goes through several chunks and a short last one. collectives: d->on, or a plan of
// several ranks (-memory-only 1 -plan-world N, whose dry ledger records it as a real rank would).
static void gpu_dist_alloc(GpuDist* d, size_t num_params, int bf16_grads, int collectives, Ledger* led) {
    if (!collectives || !bf16_grads) return;
    size_t chunk = GPU_DIST_CHUNK;
    const char* env = getenv("TRAIN_ALLREDUCE_CHUNK");
    if (env && atol(env) > 0) chunk = (size_t)atol(env);
    d->chunk = num_params < chunk ? num_params : chunk;
    d->wide = (float*)dev_alloc(led, MEM_WORKSPACE, "grad all-reduce (fp32)", d->chunk * sizeof(float));
}

// The NCCL communicator: rank 0 makes the id, MPI carries it to every rank (at one rank there is none
// to carry), every rank joins. Collective over the ranks.
static void gpu_dist_connect(GpuDist* d) {
    if (!d->on) return;
#ifdef USE_NCCL
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    if (d->rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    dist_bcast(&id, sizeof(id), 0);
    CUDA_CHECK(cudaStreamCreate(&d->stream));
    NCCL_CHECK(ncclCommInitRank(&d->comm, d->world, id, d->rank));
    d->connected = 1;
#endif
}

static void gpu_dist_free(GpuDist* d) {
#ifdef USE_NCCL
    if (d->connected) {
        NCCL_CHECK(ncclCommDestroy(d->comm));
        CUDA_CHECK(cudaStreamDestroy(d->stream));
    }
#endif
    d->connected = 0;
}

// (n) bf16 -> fp32, and back with the scale applied before the one rounding (to nearest, as the CPU).
__global__ void dist_widen_kernel(float* out, const bf16d* in, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) out[i] = ldf(in[i]);
}
template <typename T>
__global__ void dist_scale_store_kernel(T* out, const float* in, size_t n, float scale) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float x = in[i];
        if (scale != 1.0f) x = x * scale;
        out[i] = stf<T>(x);
    }
}

static unsigned dist_grid(size_t n) { unsigned g = ceil_div_u(n, 256); return g < 4096 ? (g ? g : 1) : 4096; }

// The gradients (n elements, bf16 or fp32, on this rank's GPU) replaced by their mean over the ranks:
// sum in fp32, times 1/world (the CPU's dist_allreduce_f32). Collective.
static void gpu_dist_average_grads(GpuDist* d, void* grads, size_t n, int bf16_grads) {
    if (!d->on) return;
#ifdef USE_NCCL
    const float scale = 1.0f / (float)d->world;
    if (!bf16_grads) {
        float* g = (float*)grads;
        NCCL_CHECK(ncclAllReduce(g, g, n, ncclFloat, ncclSum, d->comm, d->stream));
        if (scale != 1.0f) { dist_scale_store_kernel<float><<<dist_grid(n), 256>>>(g, g, n, scale); KERNEL_CHECK(); }
        return;
    }
    bf16d* g = (bf16d*)grads;
    for (size_t off = 0; off < n; off += d->chunk) {
        size_t k = n - off < d->chunk ? n - off : d->chunk;
        dist_widen_kernel<<<dist_grid(k), 256>>>(d->wide, g + off, k);
        KERNEL_CHECK();
        NCCL_CHECK(ncclAllReduce(d->wide, d->wide, k, ncclFloat, ncclSum, d->comm, d->stream));
        dist_scale_store_kernel<bf16d><<<dist_grid(k), 256>>>(g + off, d->wide, k, scale);
        KERNEL_CHECK();
    }
#else
    (void)grads; (void)n; (void)bf16_grads;
#endif
}

// -zero 1: each rank needs the mean of its own range [displs[rank], + counts[rank]) of the gradients only
// (its optimizer slices lie there), so the gradients are reduce-scattered instead of all-reduced: for
// every rank's range, an ncclReduce (sum, in place) rooted at its owner, all inside one NCCL group per
// chunk, then the owner scales its part by 1/world (and in bf16 mode rounds it once, as the all-reduce
// above does). The ranges are uneven, and ncclReduceScatter wants equal counts: one reduce per range takes
// them as they are (the same reason the all-gather below broadcasts). Only this rank's range of `grads`
// holds the mean afterwards; the rest keeps this rank's own partial sum, which nothing reads. At one
// rank (-dist-force 1) the result is the all-reduce's bit for bit; over N ranks NCCL's reduce may add the
// N fp32 values of an element in another order than its all-reduce (the only difference). Collective.
static void gpu_dist_reduce_scatter_grads(GpuDist* d, void* grads, size_t n, int bf16_grads, const size_t* counts, const size_t* displs) {
    if (!d->on) return;
#ifdef USE_NCCL
    const float scale = 1.0f / (float)d->world;
    const size_t lo = displs[d->rank], hi = lo + counts[d->rank];
    if (!bf16_grads) {
        float* g = (float*)grads;
        NCCL_CHECK(ncclGroupStart());
        for (int r = 0; r < d->world; r++) {
            if (counts[r] == 0) continue; // every rank skips the same ranges (one plan)
            float* p = g + displs[r];
            NCCL_CHECK(ncclReduce(p, p, counts[r], ncclFloat, ncclSum, r, d->comm, d->stream));
        }
        NCCL_CHECK(ncclGroupEnd());
        if (scale != 1.0f && hi > lo) { dist_scale_store_kernel<float><<<dist_grid(hi - lo), 256>>>(g + lo, g + lo, hi - lo, scale); KERNEL_CHECK(); }
        return;
    }
    bf16d* g = (bf16d*)grads;
    for (size_t off = 0; off < n; off += d->chunk) {
        const size_t k = n - off < d->chunk ? n - off : d->chunk;
        dist_widen_kernel<<<dist_grid(k), 256>>>(d->wide, g + off, k);
        KERNEL_CHECK();
        NCCL_CHECK(ncclGroupStart());
        for (int r = 0; r < d->world; r++) {
            // rank r's range within this chunk
            const size_t a = displs[r] > off ? displs[r] : off, b = displs[r] + counts[r] < off + k ? displs[r] + counts[r] : off + k;
            if (b <= a) continue;
            float* p = d->wide + (a - off);
            NCCL_CHECK(ncclReduce(p, p, b - a, ncclFloat, ncclSum, r, d->comm, d->stream));
        }
        NCCL_CHECK(ncclGroupEnd());
        const size_t a = lo > off ? lo : off, b = hi < off + k ? hi : off + k;
        if (b > a) {
            dist_scale_store_kernel<bf16d><<<dist_grid(b - a), 256>>>(g + a, d->wide + (a - off), b - a, scale);
            KERNEL_CHECK();
        }
    }
#else
    (void)grads; (void)n; (void)bf16_grads; (void)counts; (void)displs;
#endif
}

// Every rank's range [displs[r], + counts[r]) of buf (elements of `elt` bytes, on the GPU) copied to every
// rank: one broadcast per rank, rooted at the owner, in place, inside one NCCL group. The ranges are
// uneven (ZeRO-1 cuts at tensor or block boundaries) and ncclAllGather wants equal counts; broadcasts
// take each range as it is, with no padding and no second buffer. Collective.
static void gpu_dist_allgather(GpuDist* d, void* buf, size_t elt, const size_t* counts, const size_t* displs) {
    if (!d->on) return;
#ifdef USE_NCCL
    NCCL_CHECK(ncclGroupStart());
    for (int r = 0; r < d->world; r++) {
        if (counts[r] == 0) continue; // every rank skips the same ranges (one plan)
        char* p = (char*)buf + displs[r] * elt;
        NCCL_CHECK(ncclBroadcast(p, p, counts[r] * elt, ncclUint8, r, d->comm, d->stream));
    }
    NCCL_CHECK(ncclGroupEnd());
#else
    (void)buf; (void)elt; (void)counts; (void)displs;
#endif
}

#endif
