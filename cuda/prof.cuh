// cuda/prof.cuh: -prof 1, GPU time per kernel family with CUDA events, no external profiler needed.
//
// Every kernel launch (or library call) of the step is bracketed by PROF(kind, flops, bytes, call): an
// event before and one after, on the default stream the launches go to. After a step has synchronized,
// prof_collect() reads each pair's elapsed time and adds it to its family (the interval a pair measures
// is the GPU's time from the first kernel's start to the last one's end: the kernels themselves, since
// the stream runs them back to back). At the end, prof_print() prints per family: ms per step, share of
// the profiled time, and the rate its work implies (TFLOP/s for matmuls and attention from their flop
// counts, GB/s for the memory-bound kernels from the bytes they must move at least).
// Off (the default), PROF is the bare call: one predictable branch and nothing recorded.
// Events between every launch cost a few microseconds each on the host; the per-step totals with
// -prof 1 are therefore a little slower than without, the shares are what it is for.
#ifndef CUDA_PROF_CUH
#define CUDA_PROF_CUH

#include <stdio.h>
#include <string.h>
#include "common/cuda_util.cuh"

enum {
    PROF_MM_QKV, PROF_MM_ATTPROJ, PROF_MM_FC, PROF_MM_FCPROJ, PROF_MM_LMHEAD,           // matmul forward, by role
    PROF_MMB_QKV, PROF_MMB_ATTPROJ, PROF_MMB_FC, PROF_MMB_FCPROJ, PROF_MMB_LMHEAD,      // matmul backward (dX, dW, dbias)
    PROF_ATTN_FWD, PROF_ATTN_BWD,
    PROF_LN_FWD, PROF_LN_BWD, PROF_GELU_FWD, PROF_GELU_BWD, PROF_RESIDUAL, PROF_RESLN_FWD,
    PROF_CLASSIFIER, PROF_ENCODER_FWD, PROF_ENCODER_BWD, PROF_NORM, PROF_OPTIMIZER, PROF_OTHER,
    PROF_NUM_KINDS
};
static const char* const PROF_NAMES[PROF_NUM_KINDS] = {
    "matmul fwd qkv", "matmul fwd attproj", "matmul fwd fc", "matmul fwd fcproj", "matmul fwd lm head",
    "matmul bwd qkv", "matmul bwd attproj", "matmul bwd fc", "matmul bwd fcproj", "matmul bwd lm head",
    "attention fwd", "attention bwd",
    "layernorm fwd", "layernorm bwd", "gelu fwd", "gelu bwd", "residual", "residual+layernorm fwd",
    "classifier (softmax+loss+dlogits)", "encoder fwd", "encoder bwd", "grad norm", "optimizer", "other (memset, copies)",
};
// 1: the family's rate is compute (TFLOP/s), 0: memory traffic (GB/s)
static const unsigned char PROF_IS_FLOPS[PROF_NUM_KINDS] = { 1,1,1,1,1, 1,1,1,1,1, 1,1, 0,0,0,0,0,0, 0,0,0,0,0,0 };

#define PROF_MAX_PAIRS 8192   // timed launches per step (d12: ~300 per micro-step)

typedef struct {
    int on;
    int n;                            // pairs recorded this step
    int overflow;                     // a step had more than PROF_MAX_PAIRS: the rest were not timed
    cudaEvent_t ev[2 * PROF_MAX_PAIRS];
    int kind[PROF_MAX_PAIRS];
    double flops[PROF_MAX_PAIRS], bytes[PROF_MAX_PAIRS];
    double ms[PROF_NUM_KINDS], tot_flops[PROF_NUM_KINDS], tot_bytes[PROF_NUM_KINDS];
    long calls[PROF_NUM_KINDS];
    int steps;                        // steps added by prof_collect(keep = 1)
} Prof;

static Prof g_prof;

static void prof_init(int on) {
    memset(&g_prof, 0, sizeof(g_prof));
    g_prof.on = on;
    if (!on) return;
    for (int i = 0; i < 2 * PROF_MAX_PAIRS; i++) CUDA_CHECK(cudaEventCreate(&g_prof.ev[i]));
}

static inline void prof_begin(void) {
    if (g_prof.n < PROF_MAX_PAIRS) CUDA_CHECK(cudaEventRecord(g_prof.ev[2 * g_prof.n]));
}
static inline void prof_end(int kind, double flops, double bytes) {
    Prof* p = &g_prof;
    if (p->n >= PROF_MAX_PAIRS) { p->overflow = 1; return; }
    CUDA_CHECK(cudaEventRecord(p->ev[2 * p->n + 1]));
    p->kind[p->n] = kind;
    p->flops[p->n] = flops;
    p->bytes[p->n] = bytes;
    p->n++;
}

// Brackets one launch (or a few of one family). flops and bytes: the work it must do, for the rate column.
// Variadic: a launch's <<<grid, block>>> has a comma outside parentheses.
#define PROF(kind, flops, bytes, ...) do { \
        if (g_prof.on) { prof_begin(); __VA_ARGS__; prof_end((kind), (double)(flops), (double)(bytes)); } else { __VA_ARGS__; } \
    } while (0)

// After the step's last event has completed (the caller synchronized): add the pairs' times to their
// families when keep (step 1 warms up and is left out, as in tok/s), then start the next step.
static void prof_collect(int keep) {
    Prof* p = &g_prof;
    if (!p->on) return;
    if (keep) {
        for (int i = 0; i < p->n; i++) {
            float ms = 0.0f;
            CUDA_CHECK(cudaEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]));
            int k = p->kind[i];
            p->ms[k] += ms;
            p->tot_flops[k] += p->flops[i];
            p->tot_bytes[k] += p->bytes[i];
            p->calls[k]++;
        }
        p->steps++;
    }
    p->n = 0;
}

// The table: family, calls per step, ms per step, share, rate. step_ms: the measured step time (events
// around the whole step), so the line "not in any family" shows launch gaps and untimed work.
static void prof_print(FILE* f, double step_ms) {
    Prof* p = &g_prof;
    if (!p->on) return;
    if (p->steps == 0) { fprintf(f, "prof: no step was timed (step 1 warms up; run -x 2 or more)\n"); return; }
    double total = 0.0;
    for (int k = 0; k < PROF_NUM_KINDS; k++) total += p->ms[k];
    int order[PROF_NUM_KINDS];
    for (int k = 0; k < PROF_NUM_KINDS; k++) order[k] = k;
    for (int i = 1; i < PROF_NUM_KINDS; i++) // by time, largest first
        for (int j = i; j > 0 && p->ms[order[j]] > p->ms[order[j - 1]]; j--) { int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t; }
    fprintf(f, "prof: GPU time per step by kernel family (CUDA events, mean of %d steps%s)\n", p->steps,
            p->overflow ? "; some launches past the first 8192 of a step were not timed" : "");
    fprintf(f, "| kernel family | calls/step | ms/step | share | rate |\n|---|---:|---:|---:|---:|\n");
    for (int i = 0; i < PROF_NUM_KINDS; i++) {
        int k = order[i];
        if (p->calls[k] == 0) continue;
        double ms = p->ms[k] / p->steps;
        char rate[48] = "";
        double secs = p->ms[k] * 1e-3;
        if (PROF_IS_FLOPS[k] && p->tot_flops[k] > 0) snprintf(rate, sizeof(rate), "%.1f TFLOP/s", p->tot_flops[k] / secs * 1e-12);
        else if (p->tot_bytes[k] > 0) snprintf(rate, sizeof(rate), "%.0f GB/s", p->tot_bytes[k] / secs * 1e-9);
        fprintf(f, "| %s | %.1f | %.3f | %.1f%% | %s |\n", PROF_NAMES[k], (double)p->calls[k] / p->steps, ms,
                total > 0 ? 100.0 * p->ms[k] / total : 0.0, rate);
    }
    fprintf(f, "| all profiled kernels | | %.3f | 100%% | |\n", total / p->steps);
    if (step_ms > 0) fprintf(f, "| step (events around it) | | %.3f | | not in any family: %.3f ms |\n", step_ms, step_ms - total / p->steps);
}

static void prof_free(void) {
    if (!g_prof.on) return;
    for (int i = 0; i < 2 * PROF_MAX_PAIRS; i++) CUDA_CHECK(cudaEventDestroy(g_prof.ev[i]));
    g_prof.on = 0;
}

#endif
