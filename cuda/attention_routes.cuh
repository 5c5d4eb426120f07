// cuda/attention_routes.cuh: -attn, the routes causal self-attention can take on the GPU, behind one call.
//
//   ref     cuda/attention.cuh: FlashAttention-2's loop order in fp32 arithmetic on CUDA cores; fp32 and
//           bf16 storage, head sizes 8..128. The reference every other route is tested against.
//   cublas  cuda/attention_cublas.cuh: Q K^T and P V as cuBLAS strided-batched bf16 GEMMs (tensor cores)
//           with causal softmax kernels; one layer's (B, NH, T, T) scratch, recomputed in backward.
//   flash   cuda/attention_flash.cuh: our own fused FlashAttention-2 kernels on tensor cores (mma.sync
//           bf16, fp32 accumulation), no (T, T) matrix anywhere, deterministic backward.
//   cudnn   cuda/attention_cudnn.cuh: cuDNN's fused SDPA through its backend API (builds with -DUSE_CUDNN).
//
// Every route reads qkv (B, T, 3C), writes out (B, T, C) and lse (B, NH, T) (the log-sum-exp of each
// query's scaled scores, natural log) in forward, and dqkv (B, T, 3C) in backward from the saved out and
// lse. The four agree on what lse means, so a backward can follow any route's forward.
//
// Choosing (attn_route_setup, once at start): the requested route if it can run here (bf16 storage, a
// head size it has kernels for, built in, a plan cuDNN accepts), else one line saying why and the ref
// route. AUTO takes the first of ATTN_AUTO_ORDER that a GPU run has verified (ATTN_VERIFIED): until then,
// the reference. Generation (B = 1, a growing T) and -eval may run other shapes than the training step:
// the cudnn route runs only at the shape it prepared plans for (never a new graph per token), and any
// other shape's forward takes the reference. The cublas and flash routes take any shape up to (B, T).
#ifndef CUDA_ATTENTION_ROUTES_CUH
#define CUDA_ATTENTION_ROUTES_CUH

#include "common/cuda_util.cuh"
#include "cuda/attention_route.h"
#include "cuda/attention.cuh"
#include "cuda/attention_cublas.cuh"
#include "cuda/attention_flash.cuh"
#ifdef USE_CUDNN
#include "cuda/attention_cudnn.cuh"
#endif

// Routes a GPU run has verified (test_gpt2cu's attention checks and 20 steps against the CPU trainer,
// scripts/gpu_check.sh): AUTO takes the first verified route of ATTN_AUTO_ORDER. None yet: every route
// but ref was written without a GPU (see README, "Attention routes").
static const int ATTN_VERIFIED[ATTN_NUM_ROUTES] = { 0, 1, 0, 0, 0 };
static const int ATTN_AUTO_ORDER[3] = { ATTN_CUDNN, ATTN_FLASH, ATTN_CUBLAS };

typedef struct {
    int route;              // the route that runs (never ATTN_AUTO)
    int B, T;               // the training shape: the largest the scratch is sized for, cudnn's prepared plans
    void* scratch;          // cublas: (B, NH, T, T) scratch of one layer; cudnn: its plans' workspace; else NULL
    size_t scratch_bytes;
} AttnRoute;

static AttnRoute g_attn = { ATTN_REF, 0, 0, NULL, 0 };

// Can `route` run at storage precision `bf16` and head size hs in this build? 0 with a reason if not.
static int attn_route_can_run(int route, int bf16, int hs, char* why, size_t n) {
    if (route == ATTN_REF) {
        if (attention_head_size_ok(hs)) return 1;
        snprintf(why, n, "head size %d has no kernel (8, 16, 32, 64 or 128)", hs);
        return 0;
    }
    if (!bf16) { snprintf(why, n, "it runs bf16 storage only (this run is -precision fp32)"); return 0; }
    if (route == ATTN_CUBLAS && !attn_cublas_supported(hs)) { snprintf(why, n, "no cuBLAS route for head size %d", hs); return 0; }
    if (route == ATTN_FLASH && !attn_flash_supported(hs)) { snprintf(why, n, "no flash kernels for head size %d", hs); return 0; }
    if (route == ATTN_CUDNN) {
#ifdef USE_CUDNN
        return attn_cudnn_supported(hs, why, n);
#else
        snprintf(why, n, "this build has no cuDNN: the Makefile found no cudnn_graph.h and libcudnn");
        return 0;
#endif
    }
    return 1;
}

// Picks the route for a run of (B, T) tokens with C channels, NH heads, storage bf16 or fp32; allocates
// its scratch through the ledger (a dry ledger, -memory-only, records the documented bound instead of
// asking cuDNN, which needs the GPU). Prints one line: the route, and why when it is not the one asked.
static void attn_route_setup(int requested, int bf16, int B, int T, int C, int NH, Ledger* led, FILE* out) {
    const int hs = C / NH;
    char why[256] = "";
    int route = requested;
    if (requested == ATTN_AUTO) {
        route = ATTN_REF;
        for (int i = 0; i < 3; i++) {
            char w[256];
            if (ATTN_VERIFIED[ATTN_AUTO_ORDER[i]] && attn_route_can_run(ATTN_AUTO_ORDER[i], bf16, hs, w, sizeof(w))) { route = ATTN_AUTO_ORDER[i]; break; }
        }
    } else if (!attn_route_can_run(requested, bf16, hs, why, sizeof(why))) {
        route = ATTN_REF;
    }
#ifdef USE_CUDNN
    if (route == ATTN_CUDNN && !led->dry && !attn_cudnn_prepare(B, T, C, NH, why, sizeof(why))) route = ATTN_REF;
#endif
    g_attn.route = route;
    g_attn.B = B;
    g_attn.T = T;
    g_attn.scratch = NULL;
    g_attn.scratch_bytes = 0;
    if (route == ATTN_CUBLAS) {
        g_attn.scratch_bytes = attn_cublas_scratch_bytes(B, T, C, NH);
        g_attn.scratch = dev_alloc(led, MEM_WORKSPACE, "attention scratch (cublas route, one layer)", g_attn.scratch_bytes);
    }
#ifdef USE_CUDNN
    if (route == ATTN_CUDNN) {
        g_attn.scratch_bytes = led->dry ? attn_cudnn_workspace_bound(B, T, C, NH) : attn_cudnn_workspace_bytes(B, T, C, NH);
        if (g_attn.scratch_bytes)
            g_attn.scratch = dev_alloc(led, MEM_WORKSPACE, led->dry ? "cuDNN attention workspace (bound)" : "cuDNN attention workspace",
                                       g_attn.scratch_bytes);
    }
#endif
    if (route == requested || (requested == ATTN_AUTO && !why[0]))
        fprintf(out, "attention: %s route%s\n", ATTN_NAMES[route], requested == ATTN_AUTO ? " (-attn auto: the fastest route verified on a GPU)" : "");
    else
        fprintf(out, "attention: -attn %s cannot run here (%s); using the %s route\n", ATTN_NAMES[requested], why, ATTN_NAMES[route]);
}

// Forward: out (B, T, C), lse (B, NH, T) from qkv (B, T, 3C). fp32 storage always takes the reference.
static void attention_forward_route(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    attention_forward<float>(out, lse, qkv, B, T, C, NH);
}
static void attention_forward_route(bf16d* out, float* lse, const bf16d* qkv, int B, int T, int C, int NH) {
    switch (g_attn.route) {
    case ATTN_CUBLAS: attn_cublas_forward(out, lse, qkv, B, T, C, NH, g_attn.scratch); return;
    case ATTN_FLASH: attn_flash_forward(out, lse, qkv, B, T, C, NH); return;
#ifdef USE_CUDNN
    case ATTN_CUDNN:
        if (B == g_attn.B && T == g_attn.T) { attn_cudnn_forward(out, lse, qkv, B, T, C, NH, g_attn.scratch); return; }
        break; // generation, -eval at another shape: no new plan per shape, the reference below
#endif
    default: break;
    }
    attention_forward<bf16d>(out, lse, qkv, B, T, C, NH);
}

// Backward: dqkv (B, T, 3C) overwritten from dout (B, T, C) and the forward's qkv, out, lse; dpre (B, NH, T)
// fp32 scratch. Runs at the training shape (the one the route was set up for) or smaller.
static void attention_backward_route(float* dqkv, float* dpre, const float* dout, const float* qkv, const float* out, const float* lse,
                                     int B, int T, int C, int NH) {
    attention_backward<float>(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH);
}
static void attention_backward_route(bf16d* dqkv, float* dpre, const bf16d* dout, const bf16d* qkv, const bf16d* out, const float* lse,
                                     int B, int T, int C, int NH) {
    switch (g_attn.route) {
    case ATTN_CUBLAS: attn_cublas_backward(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH, g_attn.scratch); return;
    case ATTN_FLASH: attn_flash_backward(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH); return;
#ifdef USE_CUDNN
    case ATTN_CUDNN:
        if (B == g_attn.B && T == g_attn.T) { attn_cudnn_backward(dqkv, dout, qkv, out, lse, B, T, C, NH, g_attn.scratch); return; }
        break;
#endif
    default: break;
    }
    attention_backward<bf16d>(dqkv, dpre, dout, qkv, out, lse, B, T, C, NH);
}

#endif
