// trainer/dist.c: see dist.h.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <time.h>
#include "trainer/dist.h"
#include "common/util.h"
#ifdef USE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_world = 1, g_mpi = 0;
static double g_timeout = DIST_DEFAULT_TIMEOUT; // seconds a collective may wait for the other ranks

void dist_set_timeout(double seconds) { if (seconds > 0) g_timeout = seconds; }

#ifdef USE_MPI
// ---- collectives with a deadline ------------------------------------------------------------------
// Every collective is started nonblocking and polled (dist_wait). One that has not completed after
// g_timeout seconds means a rank stopped taking part (stopped, hung, dead): the rank that notices sends
// a "still here" message to every other rank and collects theirs for a short while; a rank still waiting
// in a collective notices such a message while it polls and answers the same way. The ranks not heard
// from are named, and MPI_Abort ends the job instead of every live rank spinning forever.
#define ALIVE_TAG 0x7A11
#define ALIVE_WINDOW 10.0

static void nap(long ns) { struct timespec ts = { 0, ns }; nanosleep(&ts, NULL); }

static void name_silent_ranks_and_abort(const char* what, double waited) {
    int* heard = (int*)calloc((size_t)g_world, sizeof(int));
    MPI_Request* rq = (MPI_Request*)malloc(2 * (size_t)g_world * sizeof(MPI_Request));
    int me = g_rank, token = me, nreq = 0;
    int* got = (int*)calloc((size_t)g_world, sizeof(int));
    for (int r = 0; r < g_world; r++) {
        if (r == me) continue;
        MPI_Isend(&token, 1, MPI_INT, r, ALIVE_TAG, MPI_COMM_WORLD, &rq[nreq++]);
    }
    int first_recv = nreq;
    for (int r = 0; r < g_world; r++) {
        if (r == me) continue;
        MPI_Irecv(&got[r], 1, MPI_INT, r, ALIVE_TAG, MPI_COMM_WORLD, &rq[nreq++]);
    }
    heard[me] = 1;
    double t0 = MPI_Wtime(), window = g_timeout < ALIVE_WINDOW ? g_timeout : ALIVE_WINDOW;
    for (int left = g_world - 1; left > 0 && MPI_Wtime() - t0 < window;) {
        left = 0;
        for (int i = first_recv, r = 0; i < nreq; i++, r++) {
            if (r == me) r++;
            if (heard[r]) continue;
            int done = 0;
            MPI_Test(&rq[i], &done, MPI_STATUS_IGNORE);
            if (done) heard[r] = 1; else left++;
        }
        if (left) nap(1000000);
    }
    char list[512];
    size_t len = 0;
    int silent = 0;
    list[0] = 0;
    for (int r = 0; r < g_world; r++)
        if (!heard[r] && len < sizeof(list) - 16) { len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%d", silent ? ", " : "", r); silent++; }
    if (silent)
        fprintf(stderr, "error: rank %d: %s has waited %.0f s for the other ranks; rank%s %s did not answer (stopped, hung or dead?): "
                "ending the job (-dist-timeout S sets the wait)\n", me, what, waited, silent > 1 ? "s" : "", list);
    else
        fprintf(stderr, "error: rank %d: %s has waited %.0f s for the other ranks, which all answer but did not join it "
                "(ranks at different collectives?): ending the job (-dist-timeout S sets the wait)\n", me, what, waited);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

// Waits for a started collective: polls, answers another rank's timeout probe, gives up after g_timeout s.
static void dist_wait(MPI_Request* req, const char* what) {
    double t0 = MPI_Wtime();
    for (long spin = 0;; spin++) {
        int done = 0;
        MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (done) return;
        if ((spin & 255) == 255) {
            int probe = 0;
            MPI_Iprobe(MPI_ANY_SOURCE, ALIVE_TAG, MPI_COMM_WORLD, &probe, MPI_STATUS_IGNORE);
            double waited = MPI_Wtime() - t0;
            if (probe || waited > g_timeout) name_silent_ranks_and_abort(what, waited);
        }
        if (spin > 20000) nap(spin > 200000 ? 1000000 : 50000); // a long wait (rank 0 saving, say) costs no CPU
    }
}
#endif

int dist_rank(void) { return g_rank; }
int dist_world(void) { return g_world; }
const char* dist_backend(void) { return g_mpi ? "mpi" : "none"; }

#ifdef USE_MPI
// Launched by mpirun (or another PMI launcher)? A process started by hand is one rank without MPI.
static int launched_by_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}
#endif

// common/util.h calls this (a weak symbol there) before exiting on CHECK or user_error: under MPI the
// failing rank takes every other rank down with it, instead of leaving them waiting in a collective.
void util_fatal_exit_hook(int code) {
#ifdef USE_MPI
    if (g_mpi && g_world > 1) { fflush(stdout); fflush(stderr); MPI_Abort(MPI_COMM_WORLD, code); }
#endif
    (void)code;
}

void dist_init(int* argc, char*** argv) {
#ifdef USE_MPI
    if (!launched_by_mpirun()) return;
    MPI_Init(argc, argv);
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
#else
    (void)argc; (void)argv;
    const char* n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n) n = getenv("PMI_SIZE");
    if (n && atoi(n) > 1)
        user_error("launched as %s ranks, but this trainer was built without MPI (no mpicc at build time): "
                   "install Open MPI (apt-get install libopenmpi-dev openmpi-bin) and rebuild", n);
#endif
}

void dist_finalize(void) {
#ifdef USE_MPI
    if (g_mpi) { MPI_Finalize(); g_mpi = 0; }
#endif
}

void dist_abort(int code) {
    util_fatal_exit_hook(code);
    exit(code);
}

void dist_split(size_t n, size_t unit, int world, int rank, size_t* start, size_t* end) {
    size_t units = (n + unit - 1) / unit;
    size_t base = units / world, extra = units % world;
    size_t u0 = rank * base + ((size_t)rank < extra ? (size_t)rank : extra);
    size_t u1 = u0 + base + ((size_t)rank < extra ? 1 : 0);
    *start = u0 * unit < n ? u0 * unit : n;
    *end = u1 * unit < n ? u1 * unit : n;
}

#ifdef USE_MPI
// MPI counts are int: large buffers go in chunks.
#define CHUNK ((size_t)1 << 30)
#endif

void dist_allreduce_f32(float* buf, size_t n, float scale) {
#ifdef USE_MPI
    if (g_world > 1)
        for (size_t i = 0; i < n; i += CHUNK) {
            size_t k = n - i < CHUNK ? n - i : CHUNK;
            MPI_Request rq;
            MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &rq);
            dist_wait(&rq, "an all-reduce (fp32)");
        }
#endif
    if (scale != 1.0f) for (size_t i = 0; i < n; i++) buf[i] *= scale;
}

void dist_allreduce_f64(double* buf, size_t n) {
#ifdef USE_MPI
    if (g_world > 1)
        for (size_t i = 0; i < n; i += CHUNK) {
            size_t k = n - i < CHUNK ? n - i : CHUNK;
            MPI_Request rq;
            MPI_Iallreduce(MPI_IN_PLACE, buf + i, (int)k, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD, &rq);
            dist_wait(&rq, "an all-reduce (fp64)");
        }
#else
    (void)buf; (void)n;
#endif
}

int dist_max_int(int x) {
#ifdef USE_MPI
    if (g_world > 1) {
        MPI_Request rq;
        MPI_Iallreduce(MPI_IN_PLACE, &x, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD, &rq);
        dist_wait(&rq, "an all-reduce (max)");
    }
#endif
    return x;
}

void dist_reduce_scatter_f32(float* send, float* recv, const size_t* counts, const size_t* displs, float scale) {
    size_t mine = counts[g_rank];
    int in_place = recv == send + displs[g_rank];
#ifdef USE_MPI
    if (g_world > 1) {
        // MPI_Reduce_scatter wants the blocks back to back in rank order, which zero.c's ranges are.
        int* c = (int*)xmalloc(g_world * sizeof(int));
        for (int r = 0; r < g_world; r++) {
            CHECK(counts[r] <= INT_MAX);
            CHECK(r == 0 || displs[r] == displs[r - 1] + counts[r - 1]);
            c[r] = (int)counts[r];
        }
        if (in_place) { // MPI's in-place form leaves this rank's block at the start of the buffer
            MPI_Request rq;
            MPI_Ireduce_scatter(MPI_IN_PLACE, send + displs[0], c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &rq);
            dist_wait(&rq, "a reduce-scatter");
            memmove(recv, send + displs[0], mine * sizeof(float));
        } else {
            MPI_Request rq;
            MPI_Ireduce_scatter(send + displs[0], recv, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &rq);
            dist_wait(&rq, "a reduce-scatter");
        }
        free(c);
    } else
#endif
    if (!in_place) memmove(recv, send + displs[g_rank], mine * sizeof(float));
    if (scale != 1.0f) for (size_t i = 0; i < mine; i++) recv[i] *= scale;
}

struct DistGroup {
    int size;
#ifdef USE_MPI
    MPI_Comm comm;
#endif
};

DistGroup* dist_group_new(int first, int last) {
    CHECK(0 <= first && first <= last && last < g_world);
    if (first == last) return NULL;
#ifdef USE_MPI
    int in = g_rank >= first && g_rank <= last;
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, in ? first : MPI_UNDEFINED, g_rank, &comm);
    if (!in) return NULL;
    DistGroup* g = (DistGroup*)xmalloc(sizeof(DistGroup));
    g->comm = comm;
    MPI_Comm_size(comm, &g->size);
    CHECK(g->size == last - first + 1);
    return g;
#else
    CHECK(0); // one rank: no two ranks to group
    return NULL;
#endif
}

void dist_group_sum_f64(const DistGroup* g, double* buf, size_t n) {
    if (!g) return;
#ifdef USE_MPI
    CHECK(n * g->size <= INT_MAX);
    double* all = (double*)xmalloc(n * g->size * sizeof(double));
    MPI_Request rq;
    MPI_Iallgather(buf, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, g->comm, &rq);
    dist_wait(&rq, "a group all-gather");
    for (size_t j = 0; j < n; j++) {
        double s = all[j];
        for (int r = 1; r < g->size; r++) s += all[(size_t)r * n + j];
        buf[j] = s;
    }
    free(all);
#else
    (void)buf; (void)n;
#endif
}

void dist_group_free(DistGroup* g) {
    if (!g) return;
#ifdef USE_MPI
    int done = 0;
    MPI_Finalized(&done); // a trainer may free its plan after run_finish ended MPI (which freed the group)
    if (!done) MPI_Comm_free(&g->comm);
#endif
    free(g);
}

void dist_allgather_bytes(void* buf, const size_t* counts, const size_t* displs, size_t elt) {
#ifdef USE_MPI
    if (g_world > 1) {
        int* c = (int*)xmalloc(2 * g_world * sizeof(int));
        for (int r = 0; r < g_world; r++) {
            CHECK(counts[r] * elt <= INT_MAX && displs[r] * elt <= INT_MAX);
            c[r] = (int)(counts[r] * elt);
            c[g_world + r] = (int)(displs[r] * elt);
        }
        MPI_Request rq;
        MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, c, c + g_world, MPI_BYTE, MPI_COMM_WORLD, &rq);
        dist_wait(&rq, "an all-gather");
        free(c);
    }
#else
    (void)buf; (void)counts; (void)displs; (void)elt;
#endif
}

void dist_bcast(void* buf, size_t bytes, int root) {
#ifdef USE_MPI
    if (g_world > 1)
        for (size_t i = 0; i < bytes; i += CHUNK) {
            size_t k = bytes - i < CHUNK ? bytes - i : CHUNK;
            MPI_Request rq;
            MPI_Ibcast((char*)buf + i, (int)k, MPI_BYTE, root, MPI_COMM_WORLD, &rq);
            dist_wait(&rq, "a broadcast");
        }
#else
    (void)buf; (void)bytes; (void)root;
#endif
}

void dist_barrier(void) {
#ifdef USE_MPI
    if (g_world > 1) {
        MPI_Request rq;
        MPI_Ibarrier(MPI_COMM_WORLD, &rq);
        dist_wait(&rq, "a barrier");
    }
#endif
}
