// trainer/dist.h: data parallelism across processes (ranks). One small layer over MPI: the world size
// and this process's rank, collectives on float buffers, and ending every rank at once.
//
// Built with MPI when the Makefile finds mpicc (USE_MPI), else as a single-rank stub where every
// collective is a no-op. Even with MPI compiled in, MPI is only started when the process was launched
// by mpirun (Open MPI's OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_RANK); a plain ./train_cpu is one
// rank and never touches MPI, so tests and single runs behave exactly as before.
//
// Every collective must be called by every rank in the same order (MPI's rule). The trainers call
// them at fixed points of the step: a rank never skips one on its own.
#ifndef TRAINER_DIST_H
#define TRAINER_DIST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// No collective waits forever: one that has not completed after this many seconds (a rank stopped,
// hung or died) names the ranks that do not answer and ends the job (MPI_Abort, exit 1).
#define DIST_DEFAULT_TIMEOUT 300.0
void dist_set_timeout(double seconds);   // -dist-timeout S
// Starts MPI when launched by mpirun (else world 1, rank 0). Call first thing in main.
void dist_init(int* argc, char*** argv);
// Ends MPI (at a normal exit); harmless when MPI never started.
void dist_finalize(void);
int dist_rank(void);
int dist_world(void);
const char* dist_backend(void);   // "mpi" or "none"

// In place, every rank: buf (n) = sum over ranks of buf, times `scale` (1/world for an average).
void dist_allreduce_f32(float* buf, size_t n, float scale);
// Double sums (gradient norms, column statistics).
void dist_allreduce_f64(double* buf, size_t n);
// The largest int over ranks.
int dist_max_int(int x);
// recv (counts[rank]) = sum over ranks of send[displs[rank] .. + counts[rank]) times scale. The ranks'
// blocks lie back to back in rank order (displs[r+1] = displs[r] + counts[r]). In place when recv is
// send + displs[rank] (the rest of send is then left undefined).
void dist_reduce_scatter_f32(float* send, float* recv, const size_t* counts, const size_t* displs, float scale);
// Every rank's buf[displs[r] .. + counts[r]) (of element size `elt` bytes) copied to every rank.
void dist_allgather_bytes(void* buf, const size_t* counts, const size_t* displs, size_t elt);
// A group of the consecutive ranks first..last (ZeRO-1: the ranks that share a row-sharded matrix).
// Created by every rank, every group in the same order (a collective over all ranks); NULL on the ranks
// outside it, and wherever first == last.
typedef struct DistGroup DistGroup;
DistGroup* dist_group_new(int first, int last);
// In place, every member: buf (n) = the sum of the members' buf, added in rank order, so every member
// gets the same bits (an all-gather, then the sum; n is small: a matrix's columns).
void dist_group_sum_f64(const DistGroup* g, double* buf, size_t n);
void dist_group_free(DistGroup* g);
// Root's bytes to every rank.
void dist_bcast(void* buf, size_t bytes, int root);
// Waits for every rank.
void dist_barrier(void);
// Ends every rank with `code` (MPI_Abort under MPI, else exit). Never returns.
void dist_abort(int code);

// The even split of n items over `world` ranks in units of `unit` items: rank r gets [*start, *end).
// Ranks get whole units, the first (n/unit) % world ranks one unit more; the last unit may be short.
void dist_split(size_t n, size_t unit, int world, int rank, size_t* start, size_t* end);

#ifdef __cplusplus
}
#endif

#endif
