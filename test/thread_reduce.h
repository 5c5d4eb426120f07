// test/thread_reduce.h: an OptReduce (optim/optim.h) over threads standing in for ranks, for the tests of
// ZeRO-1 row shards without MPI: test_zero.c (the CPU step on row pieces) and test_gpt2cu.cu (the CUDA
// kernels on row pieces). Every member publishes its buffer, then each adds them in member order, as
// trainer/dist.c's dist_group_sum_f64 adds the ranks' (an all-gather, then the sum in rank order), so
// every member gets the same bits. Every member must make the same calls in the same order.
#ifndef TEST_THREAD_REDUCE_H
#define TEST_THREAD_REDUCE_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "common/util.h"
#include "optim/optim.h"

#define THREAD_GROUP_MAX 4

typedef struct {
    pthread_barrier_t bar;
    int n;                              // members
    double* slot[THREAD_GROUP_MAX];     // each member's buffer during a call
    size_t len[THREAD_GROUP_MAX];       // and its length (every member must pass the same)
} ThreadGroup;

typedef struct {
    ThreadGroup* g;
    int member;                         // 0 .. g->n - 1: the rank it stands for
    int calls;                          // reduce calls made (every member must make the same)
} ThreadMember;

static void thread_group_init(ThreadGroup* g, int n) {
    CHECK(n >= 1 && n <= THREAD_GROUP_MAX);
    memset(g, 0, sizeof(*g));
    g->n = n;
    pthread_barrier_init(&g->bar, NULL, (unsigned)n);
}

static void thread_group_destroy(ThreadGroup* g) { pthread_barrier_destroy(&g->bar); }

// OptReduce.sum; r->ctx: the calling thread's ThreadMember.
static void thread_group_sum(const OptReduce* r, double* buf, size_t n) {
    ThreadMember* m = (ThreadMember*)r->ctx;
    ThreadGroup* g = m->g;
    m->calls++;
    g->slot[m->member] = buf;
    g->len[m->member] = n;
    pthread_barrier_wait(&g->bar);
    for (int q = 0; q < g->n; q++) CHECK(g->len[q] == n); // the members' calls do not match: a bug in the caller
    double* s = (double*)xmalloc((n ? n : 1) * sizeof(double));
    for (size_t j = 0; j < n; j++) {
        double v = g->slot[0][j];
        for (int q = 1; q < g->n; q++) v += g->slot[q][j];
        s[j] = v;
    }
    pthread_barrier_wait(&g->bar); // every member has read every buffer
    memcpy(buf, s, n * sizeof(double));
    free(s);
}

#endif
