// cuda/attention_cudnn.cuh: causal self-attention through cuDNN's fused scaled-dot-product attention
// (flash attention inside cuDNN), forward and deterministic backward, built directly on cuDNN's
// backend API (cudnn_graph.h: descriptors, operation graph, engine heuristic, execution plan, variant
// pack). Compiled only with -DUSE_CUDNN (link -lcudnn); the caller falls back to another route when
// attn_cudnn_supported / attn_cudnn_prepare say no.
//
// What it computes (the same as cuda/attention.cuh, bf16 in and out, fp32 inside):
//   qkv (B, T, 3C) bf16 row-major holds q | k | v, each NH heads of HS = C / NH. Q, K, V are read in
//   place: dims [B, NH, T, HS], strides [3CT, HS, 3C, 1], based at qkv, qkv + C, qkv + 2C; K and V
//   enter the matmuls transposed, as dims [B, NH, HS, T] with strides [3CT, HS, 1, 3C].
//   out (B, T, C): dims [B, NH, T, HS], strides [CT, HS, C, 1].
//   lse (B, NH, T) fp32: cuDNN's softmax "stats" = max + log(sum exp) of the scaled, masked scores,
//   the same quantity our own kernels save. scale = 1/sqrt(HS), passed by value. Causal (row >= col).
//   Backward: dqkv (B, T, 3C) fully overwritten: dQ, dK, dV with the strides of Q, K, V.
//
// The graphs (uids as llm.c's cudnn-frontend assigns them, so our backend calls compare line by line
// with the record in ../shared/reference/cudnn_sdpa/; "v" = virtual: never in memory, fused away):
// Forward (14 operations)
//   tensors  1 Q  2 K^T  3 V  4 scale (by value)  5 O  6 stats (= lse)
//            7 S  8 S*scale  9 mask value -inf (by value)  10 masked S  11 row index  12 col index
//            13 row >= col (bool)  14 P (bf16)  15 row max  16 S - max  17 exp  18 row sum  19 log sum
//   ops      matmul(1, 2) -> 7;  mul(7, 4) -> 8;  gen_index(8, axis 2) -> 11;  gen_index(8, axis 3) -> 12;
//            cmp_ge(11, 12) -> 13;  binary_select(13 ? 8 : 9) -> 10;  reduce_max(10) -> 15;
//            sub(10, 15) -> 16;  exp(16) -> 17;  reduce_add(17) -> 18;  log(18) -> 19;
//            add(15, 19) -> 6 (stats);  div(17, 18) -> 14;  matmul(14, 3) -> 5 (O)
// Backward (21 operations)
//   tensors  1 Q  2 K^T  3 V^T  4 scale  5 O  6 stats  7 dO  8 dQ  9 dK  10 dV
//            11 dO*O  12 its row sum  13 one (by value: the dropout-scale slot, 1.0 without dropout)
//            14 softmax_sum = D_i (NOT virtual: fp32 (B, NH, T) in our workspace)  15 S  16 S*scale
//            17 S*scale - stats  18 mask value -inf  19 masked  20 row index  21 col index  22 row >= col
//            23 P = exp  24 P^T (bf16 view)  25 dP  26 dP - D  27 (dP - D) * P  28 dS = that * scale
//            29 dS^T (bf16 view)  30 K (K^T reshaped back to [B, NH, T, HS])
//   ops      mul(7, 5) -> 11;  reduce_add(11) -> 12;  mul(12, 13) -> 14;  matmul(1, 2) -> 15;
//            mul(15, 4) -> 16;  sub(16, 6) -> 17;  gen_index(17, axis 2) -> 20;  gen_index(17, axis 3) -> 21;
//            cmp_ge(20, 21) -> 22;  binary_select(22 ? 17 : 18) -> 19;  exp(19) -> 23;  reshape(23) -> 24;
//            matmul(24, 7) -> 10 (dV);  matmul(7, 3) -> 25;  sub(25, 14) -> 26;  mul(26, 23) -> 27;
//            mul(27, 4) -> 28;  reshape(28) -> 29;  matmul(29, 1) -> 9 (dK);  reshape(2) -> 30;
//            matmul(28, 30) -> 8 (dQ)
//
// Determinism. The forward is deterministic (each output row is reduced by one CTA in a fixed order).
// The backward is requested deterministic the way cudnn-frontend does it on Hopper: dQ comes straight
// out of the last matmul (28 x 30 -> 8) instead of through an fp32 "dQ_accum" tensor plus an identity
// op. That graph shape selects cuDNN's "dP workspace" algorithm: dS is written to a workspace
// (B*NH*T*T bf16) and dQ is computed from it by its own pass, so no atomic adds race on dQ. The
// reductions carry IS_DETERMINISTIC=false exactly as the frontend sets them (they are row reductions
// inside one CTA either way). Engine choice: heuristic mode A (the frontend's default), the first
// engine config whose plan finalizes; the same shape always gets the same plan (cached), so the same
// kernels run every step. (Blackwell needs extra engine knobs for determinism, which the frontend
// adds on sm_100+; not done here: prepare refuses compute capability >= 10 with a reason.)
//
// Workspace (one buffer, given by the caller to both directions; attn_cudnn_workspace_bytes):
//   forward  [plan workspace]
//   backward [softmax_sum: B*NH*T fp32, rounded up to 256 bytes][plan workspace]
//   The backward plan's workspace holds the dP/dS buffer, about B*NH*T*T*2 bytes on Hopper (805 MB at
//   d12's B=32, NH=12, T=1024): attn_cudnn_workspace_bound gives an upper bound usable before any plan
//   exists (the dry-run memory ledger).
#ifndef CUDA_ATTENTION_CUDNN_CUH
#define CUDA_ATTENTION_CUDNN_CUH
#ifdef USE_CUDNN

#include <cudnn_graph.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "common/cuda_util.cuh"

// ---- errors ----------------------------------------------------------------------------------------
// cuDNN's own explanation of the last failure (cudnnGetLastErrorString), on one line.
static void acu_last_error_(char* buf, size_t len) {
    buf[0] = '\0';
    cudnnGetLastErrorString(buf, len);
    for (char* p = buf; *p; p++) if (*p == '\n' || *p == '\r') *p = ' ';
}

// Inside forward/backward/free a failure is an internal error: the call, file and line, exit 1.
static void cudnn_fail_(cudnnStatus_t s, const char* expr, const char* file, int line) {
    char detail[512];
    acu_last_error_(detail, sizeof(detail));
    fprintf(stderr, "internal error at %s:%d: cuDNN error %s in %s%s%s\n", file, line, cudnnGetErrorString(s), expr,
            detail[0] ? ": " : "", detail);
    exit(1);
}
#define CUDNN_CHECK(call) do { cudnnStatus_t s_ = (call); if (s_ != CUDNN_STATUS_SUCCESS) cudnn_fail_(s_, #call, __FILE__, __LINE__); } while (0)

// While building and preparing, a failure is an answer, not a crash: the reason goes to why (one line)
// and the function returns 0, so the caller can fall back to another attention route.
static void acu_reason(char* why, size_t why_len, const char* fmt, ...) {
    if (!why || why_len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}
static void acu_fail_reason_(char* why, size_t why_len, cudnnStatus_t s, const char* expr, const char* file, int line) {
    char detail[384];
    acu_last_error_(detail, sizeof(detail));
    acu_reason(why, why_len, "%s in %s at %s:%d%s%s", cudnnGetErrorString(s), expr, file, line, detail[0] ? ": " : "", detail);
}
#define ACU_TRY(why, why_len, call) do { cudnnStatus_t s_ = (call); \
    if (s_ != CUDNN_STATUS_SUCCESS) { acu_fail_reason_((why), (why_len), s_, #call, __FILE__, __LINE__); return 0; } } while (0)
#define ACU_DO(x) do { if (!(x)) return 0; } while (0)

// The execution plan's handle attribute. cuDNN 9.x headers mark it deprecated (a device-property
// descriptor is the newer way, from 9.8), but every cuDNN 9 takes it and it is what the frontend
// sets; written by value so including this header stays free of deprecation warnings.
#define ACU_ATTR_EXECUTION_PLAN_HANDLE ((cudnnBackendAttributeName_t)400)   // CUDNN_ATTR_EXECUTION_PLAN_HANDLE
#define ACU_ATTR_OPERATIONGRAPH_HANDLE ((cudnnBackendAttributeName_t)800)   // CUDNN_ATTR_OPERATIONGRAPH_HANDLE

// ---- graph building (no GPU needed: attn_cudnn_build_graph runs with handle NULL) ------------------
#define ACU_MAX_DESCS 96   // backward: 30 tensors + 21 operations + 18 op attributes + the graph = 70

typedef struct {
    cudnnBackendDescriptor_t d[ACU_MAX_DESCS];  // every descriptor this graph created, destroyed together
    int n;
    cudnnBackendDescriptor_t graph;             // the finalized operation graph (also in d[])
    char* why;
    size_t why_len;
} AcuGraph;

static void acu_graph_destroy(AcuGraph* g) {
    // reverse order: operations before the tensors they name (cuDNN copies what it needs, but the
    // natural order costs nothing)
    for (int i = g->n - 1; i >= 0; i--) cudnnBackendDestroyDescriptor(g->d[i]);
    g->n = 0;
    g->graph = NULL;
}

static int acu_create(AcuGraph* g, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* out) {
    if (g->n >= ACU_MAX_DESCS) { acu_reason(g->why, g->why_len, "internal: more than %d cuDNN descriptors in one graph", ACU_MAX_DESCS); return 0; }
    ACU_TRY(g->why, g->why_len, cudnnBackendCreateDescriptor(type, out));
    g->d[g->n++] = *out;
    return 1;
}

// A tensor descriptor. The set order (type, dims, strides, uid, alignment, then by-value or virtual)
// is the frontend's, so the logs compare line by line.
static int acu_tensor(AcuGraph* g, cudnnBackendDescriptor_t* t, int64_t uid, cudnnDataType_t dt, int64_t d0, int64_t d1,
                      int64_t d2, int64_t d3, int64_t s0, int64_t s1, int64_t s2, int64_t s3, int is_virtual, int by_value) {
    int64_t dims[4] = { d0, d1, d2, d3 }, strides[4] = { s0, s1, s2, s3 }, align = 16;
    bool yes = true;
    ACU_DO(acu_create(g, CUDNN_BACKEND_TENSOR_DESCRIPTOR, t));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align));
    if (by_value) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes));
    if (is_virtual) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(*t));
    return 1;
}

// A pointwise operation y = mode(x [, b]) (binary_select: y = t ? x : b); axis >= 0 for GEN_INDEX.
static int acu_pointwise(AcuGraph* g, cudnnBackendDescriptor_t* op, cudnnPointwiseMode_t mode, cudnnDataType_t prec,
                         int64_t axis, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t,
                         cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t pw;
    float one = 1.0f;
    ACU_DO(acu_create(g, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec));
    if (axis >= 0) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(pw));
    ACU_DO(acu_create(g, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, op));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    if (b) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    if (t) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(*op));
    return 1;
}

// A row reduction y (.., 1) = reduce(x (.., n)) in fp32.
static int acu_reduction(AcuGraph* g, cudnnBackendDescriptor_t* op, cudnnReduceTensorOp_t mode, cudnnBackendDescriptor_t x,
                         cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t rd;
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    ACU_DO(acu_create(g, CUDNN_BACKEND_REDUCTION_DESCRIPTOR, &rd));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &mode));
#if CUDNN_VERSION >= 91100
    // the attribute exists from cuDNN 9.11; set (false) as the frontend does, only where it exists
    if (cudnnGetVersion() >= 91100) {
        bool no = false;
        ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(rd, CUDNN_ATTR_REDUCTION_IS_DETERMINISTIC, CUDNN_TYPE_BOOLEAN, 1, &no));
    }
#endif
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(rd));
    ACU_DO(acu_create(g, CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, op));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(*op));
    return 1;
}

// A batched matmul c = a @ b over the last two dims, fp32 accumulation.
static int acu_matmul(AcuGraph* g, cudnnBackendDescriptor_t* op, cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b,
                      cudnnBackendDescriptor_t c) {
    cudnnBackendDescriptor_t mm;
    cudnnDataType_t f32 = CUDNN_DATA_FLOAT;
    ACU_DO(acu_create(g, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &f32));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(mm));
    ACU_DO(acu_create(g, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, op));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(*op));
    return 1;
}

// A reshape (here: a transposed or retyped view of the same elements, fused away).
static int acu_reshape(AcuGraph* g, cudnnBackendDescriptor_t* op, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    ACU_DO(acu_create(g, CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, op));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(*op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(*op));
    return 1;
}

// The operation graph over ops[0..n). The handle is set only when there is one (the GPU path, as the
// frontend's build_operation_graph(handle) does); the CPU check builds with NULL.
static int acu_opgraph(AcuGraph* g, cudnnHandle_t handle, cudnnBackendDescriptor_t* ops, int n) {
    ACU_DO(acu_create(g, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &g->graph));
    if (handle) ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(g->graph, ACU_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    ACU_TRY(g->why, g->why_len, cudnnBackendSetAttribute(g->graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, ops));
    ACU_TRY(g->why, g->why_len, cudnnBackendFinalize(g->graph));
    return 1;
}

// The uids (see the head of the file). Forward and backward share 1..6 and 9 is the forward's mask
// value; the backward's own numbering follows from the frontend's node order.
enum { ACU_Q = 1, ACU_K = 2, ACU_V = 3, ACU_SCALE = 4, ACU_O = 5, ACU_STATS = 6,
       ACU_FWD_MASKVAL = 9,
       ACU_DO_ = 7, ACU_DQ = 8, ACU_DK = 9, ACU_DV = 10, ACU_BWD_ONE = 13, ACU_BWD_SOFTMAX_SUM = 14, ACU_BWD_MASKVAL = 18 };

// Builds and finalizes the forward (backward = 0) or backward (1) operation graph for (B, T, NH, HS)
// into g. Returns 1, or 0 with the reason in why (g then holds what was created: acu_graph_destroy).
// handle may be NULL: everything here works without a GPU.
static int attn_cudnn_build_graph(AcuGraph* g, int backward, int B, int T, int NH, int HS, cudnnHandle_t handle,
                                  char* why, size_t why_len) {
    memset(g, 0, sizeof(*g));
    g->why = why;
    g->why_len = why_len;
    const int64_t b = B, h = NH, t = T, d = HS, C = (int64_t)NH * HS;
    const int64_t q3 = 3 * C * t;                       // batch stride of Q, K, V inside qkv
    const cudnnDataType_t BF = CUDNN_DATA_BFLOAT16, F32 = CUDNN_DATA_FLOAT, I32 = CUDNN_DATA_INT32, BOOL = CUDNN_DATA_BOOLEAN;
    cudnnBackendDescriptor_t T_[31] = { 0 };            // tensors by uid
    cudnnBackendDescriptor_t ops[21];
    int n = 0;
// shorthands for the recurring shapes: a (T, HS) head in qkv / in out, a (T, T) score matrix, a row vector
#define QKV_ROWS b, h, t, d, q3, d, 3 * C, 1
#define QKV_COLS b, h, d, t, q3, d, 1, 3 * C
#define OUT_ROWS b, h, t, d, C * t, d, C, 1
#define SCORES b, h, t, t, h * t * t, t * t, t, 1
#define SCORES_T b, h, t, t, h * t * t, t * t, 1, t
#define ROWVEC b, h, t, 1, h * t, t, 1, 1
#define SCALAR 1, 1, 1, 1, 1, 1, 1, 1
    if (!backward) {
        // tensors in the order the frontend creates them (any order works for cuDNN; this one makes
        // the logs compare line by line)
        ACU_DO(acu_tensor(g, &T_[3], 3, BF, QKV_ROWS, 0, 0));
        ACU_DO(acu_tensor(g, &T_[2], 2, BF, QKV_COLS, 0, 0));
        ACU_DO(acu_tensor(g, &T_[1], 1, BF, QKV_ROWS, 0, 0));
        ACU_DO(acu_tensor(g, &T_[4], 4, F32, SCALAR, 0, 1));
        ACU_DO(acu_tensor(g, &T_[6], 6, F32, ROWVEC, 0, 0));
        ACU_DO(acu_tensor(g, &T_[5], 5, BF, OUT_ROWS, 0, 0));
        ACU_DO(acu_tensor(g, &T_[7], 7, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[8], 8, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[9], 9, F32, SCALAR, 0, 1));
        ACU_DO(acu_tensor(g, &T_[10], 10, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[11], 11, I32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[12], 12, I32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[13], 13, BOOL, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[14], 14, BF, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[15], 15, F32, ROWVEC, 1, 0));
        ACU_DO(acu_tensor(g, &T_[16], 16, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[17], 17, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[18], 18, F32, ROWVEC, 1, 0));
        ACU_DO(acu_tensor(g, &T_[19], 19, F32, ROWVEC, 1, 0));
        // S = Q K^T, scaled; causal mask: keep row >= col, else -inf
        ACU_DO(acu_matmul(g, &ops[n++], T_[1], T_[2], T_[7]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[7], T_[4], NULL, T_[8]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_GEN_INDEX, F32, 2, T_[8], NULL, NULL, T_[11]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_GEN_INDEX, F32, 3, T_[8], NULL, NULL, T_[12]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_CMP_GE, BOOL, -1, T_[11], T_[12], NULL, T_[13]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_BINARY_SELECT, F32, -1, T_[8], T_[9], T_[13], T_[10]));
        // softmax with stats: max, exp(S - max), sum; stats = max + log(sum); P = exp / sum
        ACU_DO(acu_reduction(g, &ops[n++], CUDNN_REDUCE_TENSOR_MAX, T_[10], T_[15]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_SUB, F32, -1, T_[10], T_[15], NULL, T_[16]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_EXP, F32, -1, T_[16], NULL, NULL, T_[17]));
        ACU_DO(acu_reduction(g, &ops[n++], CUDNN_REDUCE_TENSOR_ADD, T_[17], T_[18]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_LOG, F32, -1, T_[18], NULL, NULL, T_[19]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_ADD, F32, -1, T_[15], T_[19], NULL, T_[6]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_DIV, F32, -1, T_[17], T_[18], NULL, T_[14]));
        // O = P V
        ACU_DO(acu_matmul(g, &ops[n++], T_[14], T_[3], T_[5]));
    } else {
        ACU_DO(acu_tensor(g, &T_[6], 6, F32, ROWVEC, 0, 0));          // stats
        ACU_DO(acu_tensor(g, &T_[7], 7, BF, OUT_ROWS, 0, 0));         // dO
        ACU_DO(acu_tensor(g, &T_[5], 5, BF, OUT_ROWS, 0, 0));         // O
        ACU_DO(acu_tensor(g, &T_[3], 3, BF, QKV_COLS, 0, 0));      // V^T
        ACU_DO(acu_tensor(g, &T_[2], 2, BF, QKV_COLS, 0, 0));      // K^T
        ACU_DO(acu_tensor(g, &T_[1], 1, BF, QKV_ROWS, 0, 0));      // Q
        ACU_DO(acu_tensor(g, &T_[4], 4, F32, SCALAR, 0, 1));          // scale
        ACU_DO(acu_tensor(g, &T_[10], 10, BF, QKV_ROWS, 0, 0));   // dV
        ACU_DO(acu_tensor(g, &T_[9], 9, BF, QKV_ROWS, 0, 0));      // dK
        ACU_DO(acu_tensor(g, &T_[8], 8, BF, QKV_ROWS, 0, 0));      // dQ
        // dO * O: the frontend's strides for this virtual (B, NH, T, HS) tensor, kept as they are
        ACU_DO(acu_tensor(g, &T_[11], 11, F32, b, h, t, d, h * t * d, t * d, h * d, 1, 1, 0));
        ACU_DO(acu_tensor(g, &T_[12], 12, F32, ROWVEC, 1, 0));
        ACU_DO(acu_tensor(g, &T_[13], 13, F32, SCALAR, 0, 1));
        ACU_DO(acu_tensor(g, &T_[14], 14, F32, ROWVEC, 0, 0));        // softmax_sum: in memory (workspace)
        ACU_DO(acu_tensor(g, &T_[15], 15, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[16], 16, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[17], 17, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[18], 18, F32, SCALAR, 0, 1));
        ACU_DO(acu_tensor(g, &T_[19], 19, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[20], 20, I32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[21], 21, I32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[22], 22, BOOL, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[23], 23, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[24], 24, BF, SCORES_T, 1, 0));       // P^T
        ACU_DO(acu_tensor(g, &T_[25], 25, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[26], 26, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[27], 27, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[28], 28, F32, SCORES, 1, 0));
        ACU_DO(acu_tensor(g, &T_[29], 29, BF, SCORES_T, 1, 0));       // dS^T
        ACU_DO(acu_tensor(g, &T_[30], 30, F32, QKV_ROWS, 1, 0));  // K as [B, NH, T, HS]
        // D_i = rowsum(dO * O) (times 1: the frontend's dropout-scale slot), kept in the workspace
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[7], T_[5], NULL, T_[11]));
        ACU_DO(acu_reduction(g, &ops[n++], CUDNN_REDUCE_TENSOR_ADD, T_[11], T_[12]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[12], T_[13], NULL, T_[14]));
        // P = exp(scale * Q K^T - stats), causally masked (-inf, so exp gives 0)
        ACU_DO(acu_matmul(g, &ops[n++], T_[1], T_[2], T_[15]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[15], T_[4], NULL, T_[16]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_SUB, F32, -1, T_[16], T_[6], NULL, T_[17]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_GEN_INDEX, F32, 2, T_[17], NULL, NULL, T_[20]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_GEN_INDEX, F32, 3, T_[17], NULL, NULL, T_[21]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_CMP_GE, BOOL, -1, T_[20], T_[21], NULL, T_[22]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_BINARY_SELECT, F32, -1, T_[17], T_[18], T_[22], T_[19]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_EXP, F32, -1, T_[19], NULL, NULL, T_[23]));
        // dV = P^T dO
        ACU_DO(acu_reshape(g, &ops[n++], T_[23], T_[24]));
        ACU_DO(acu_matmul(g, &ops[n++], T_[24], T_[7], T_[10]));
        // dS = P * (dO V^T - D) * scale
        ACU_DO(acu_matmul(g, &ops[n++], T_[7], T_[3], T_[25]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_SUB, F32, -1, T_[25], T_[14], NULL, T_[26]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[26], T_[23], NULL, T_[27]));
        ACU_DO(acu_pointwise(g, &ops[n++], CUDNN_POINTWISE_MUL, F32, -1, T_[27], T_[4], NULL, T_[28]));
        // dK = dS^T Q
        ACU_DO(acu_reshape(g, &ops[n++], T_[28], T_[29]));
        ACU_DO(acu_matmul(g, &ops[n++], T_[29], T_[1], T_[9]));
        // dQ = dS K, straight into dQ (no fp32 accumulator): the deterministic dP-workspace algorithm
        ACU_DO(acu_reshape(g, &ops[n++], T_[2], T_[30]));
        ACU_DO(acu_matmul(g, &ops[n++], T_[28], T_[30], T_[8]));
    }
#undef QKV_ROWS
#undef QKV_COLS
#undef OUT_ROWS
#undef SCORES
#undef SCORES_T
#undef ROWVEC
#undef SCALAR
    ACU_DO(acu_opgraph(g, handle, ops, n));
    return 1;
}

// ---- plans (GPU) -------------------------------------------------------------------------------------
#define ACU_MAX_SHAPES 8   // a run prepares one or two shapes (training, maybe eval); never one per token

typedef struct {
    int B, T, NH, HS;
    AcuGraph g[2];                        // 0 forward, 1 backward
    cudnnBackendDescriptor_t cfg[2];      // the engine config each plan was made from, kept while the plan lives
    cudnnBackendDescriptor_t plan[2];
    int64_t plan_ws[2];                   // each plan's own workspace bytes
} AcuShape;

static cudnnHandle_t g_acu_handle = NULL;
static AcuShape g_acu_shapes[ACU_MAX_SHAPES];
static int g_acu_nshapes = 0;

static size_t acu_align256(size_t x) { return (x + 255) & ~(size_t)255; }
static size_t acu_softmax_sum_bytes(int B, int T, int NH) { return acu_align256((size_t)B * NH * T * sizeof(float)); }

static AcuShape* acu_find(int B, int T, int NH, int HS) {
    for (int i = 0; i < g_acu_nshapes; i++) {
        AcuShape* s = &g_acu_shapes[i];
        if (s->B == B && s->T == T && s->NH == NH && s->HS == HS) return s;
    }
    return NULL;
}

static int attn_cudnn_supported(int HS, char* why, size_t why_len) {
    if (HS == 64 || HS == 128) return 1;
    acu_reason(why, why_len, "cuDNN's fused attention takes head sizes 64 and 128 here, not %d", HS);
    return 0;
}

// Engine heuristic (mode A) over g's graph, then the first engine config whose execution plan
// finalizes. Returns 1 with *plan and *ws, or 0 with the reason.
// *cfg receives the engine config the plan was built from: the caller destroys it after the plan (the
// frontend keeps its engine configs alive as long as their plans; cuDNN does not document that a plan
// keeps its own copy, so neither do we rely on it).
static int acu_make_plan(AcuGraph* g, cudnnHandle_t handle, cudnnBackendDescriptor_t* cfg, cudnnBackendDescriptor_t* plan, int64_t* ws,
                         char* why, size_t why_len) {
    cudnnBackendDescriptor_t heur = NULL;
    cudnnBackendDescriptor_t cfgs[64];
    int64_t ncfg = 0;
    int ok = 0;
    char last[384] = "";
    cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    *plan = NULL;
    *cfg = NULL;
    *ws = 0;
    ACU_TRY(why, why_len, cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur));
    cudnnStatus_t s = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &g->graph);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendFinalize(heur);
    // how many configs, then fetch them into descriptors we create (the backend fills given descriptors)
    if (s == CUDNN_STATUS_SUCCESS) s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &ncfg, NULL);
    if (s != CUDNN_STATUS_SUCCESS) {
        acu_fail_reason_(why, why_len, s, "the engine heuristic (mode A)", __FILE__, __LINE__);
        cudnnBackendDestroyDescriptor(heur);
        return 0;
    }
    if (ncfg > 64) ncfg = 64;
    int64_t made = 0;
    for (; made < ncfg; made++) {
        s = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &cfgs[made]);
        if (s != CUDNN_STATUS_SUCCESS) break;
    }
    int64_t got = 0;
    if (s == CUDNN_STATUS_SUCCESS && made > 0)
        s = cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, made, &got, cfgs);
    if (s != CUDNN_STATUS_SUCCESS) {
        acu_fail_reason_(why, why_len, s, "fetching the heuristic's engine configs", __FILE__, __LINE__);
    } else if (got == 0) {
        acu_reason(why, why_len, "cuDNN's heuristic (mode A) offers no engine for this graph");
    }
    for (int64_t i = 0; s == CUDNN_STATUS_SUCCESS && i < got && !ok; i++) {
        cudnnBackendDescriptor_t p = NULL;
        cudnnStatus_t ps = cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &p);
        if (ps == CUDNN_STATUS_SUCCESS) ps = cudnnBackendSetAttribute(p, ACU_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
        if (ps == CUDNN_STATUS_SUCCESS) ps = cudnnBackendSetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
        if (ps == CUDNN_STATUS_SUCCESS) ps = cudnnBackendFinalize(p);
        int64_t w = 0, cnt = 0;
        if (ps == CUDNN_STATUS_SUCCESS) ps = cudnnBackendGetAttribute(p, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt, &w);
        if (ps == CUDNN_STATUS_SUCCESS && w < 0) ps = CUDNN_STATUS_INTERNAL_ERROR; // never expected; a size_t later
        if (ps == CUDNN_STATUS_SUCCESS) {
            *plan = p;
            *cfg = cfgs[i];
            cfgs[i] = NULL; // kept (destroyed with the plan), not destroyed below
            *ws = w;
            ok = 1;
        } else {
            // this config does not build here (unsupported shape, arch...): remember why, try the next
            acu_last_error_(last, sizeof(last));
            acu_reason(why, why_len, "none of the heuristic's %lld engine configs gives a plan; the last said %s%s%s",
                       (long long)got, cudnnGetErrorString(ps), last[0] ? ": " : "", last);
            if (p) cudnnBackendDestroyDescriptor(p);
        }
    }
    for (int64_t i = 0; i < made; i++) if (cfgs[i]) cudnnBackendDestroyDescriptor(cfgs[i]);
    cudnnBackendDestroyDescriptor(heur);
    return ok;
}

static void acu_shape_destroy(AcuShape* s) {
    for (int dir = 0; dir < 2; dir++) {
        if (s->plan[dir]) cudnnBackendDestroyDescriptor(s->plan[dir]);
        s->plan[dir] = NULL;
        if (s->cfg[dir]) cudnnBackendDestroyDescriptor(s->cfg[dir]);
        s->cfg[dir] = NULL;
        acu_graph_destroy(&s->g[dir]);
    }
}

// Builds (once per shape) the forward and backward plans. 0 and a reason when cuDNN cannot.
static int attn_cudnn_prepare(int B, int T, int C, int NH, char* why, size_t why_len) {
    int HS = C / NH;
    if (acu_find(B, T, NH, HS)) return 1;
    if (!attn_cudnn_supported(HS, why, why_len)) return 0;
    if (C % NH != 0 || C % 8 != 0) { acu_reason(why, why_len, "C=%d must be NH*HS and a multiple of 8 (16-byte aligned heads)", C); return 0; }
    size_t ver = cudnnGetVersion();
    if (ver < 90000) { acu_reason(why, why_len, "cuDNN %zu is older than 9.0", ver); return 0; }
    // cuDNN <= 9.15 needs a padding-mask workaround when T is not a multiple of 128 (the frontend adds
    // one); not written here, so such shapes go to another route
    if (ver <= 91500 && T % 128 != 0) { acu_reason(why, why_len, "cuDNN %zu needs T a multiple of 128 (T=%d)", ver, T); return 0; }
    // cudnn-frontend refuses the bf16 SDPA backward on cuDNN 9.10.0 and 9.10.1 (known wrong results there,
    // fixed in 9.10.2) and s_q = s_kv = 1; the backend itself may still hand out a plan for them, so the
    // refusal has to be ours
    if (ver == 91000 || ver == 91001) { acu_reason(why, why_len, "cuDNN %zu has known bugs in the SDPA backward (9.10.2+ fixes them)", ver); return 0; }
    if (T < 2) { acu_reason(why, why_len, "cuDNN's SDPA backward does not take T=1"); return 0; }
    // every tensor is declared 16-byte aligned (CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT 16); the trainer passes
    // layer l's lse at lse + l*B*NH*T floats, 16-byte aligned only when B*NH*T % 4 == 0 (q/k/v/out/dqkv
    // slices are, since C % 8 == 0). A misaligned pointer would fail cudnnBackendExecute mid-run.
    if (((size_t)B * NH * T) % 4 != 0) { acu_reason(why, why_len, "B*NH*T=%zu is not a multiple of 4 (per-layer lse slices would not be 16-byte aligned)", (size_t)B * NH * T); return 0; }
    if (g_acu_nshapes >= ACU_MAX_SHAPES) { acu_reason(why, why_len, "already %d attention shapes prepared", ACU_MAX_SHAPES); return 0; }
    int dev = 0, major = 0;
    cudaError_t ce = cudaGetDevice(&dev);
    if (ce == cudaSuccess) ce = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (ce != cudaSuccess) { (void)cudaGetLastError(); acu_reason(why, why_len, "no CUDA device (%s)", cudaGetErrorString(ce)); return 0; }
    if (major < 8) { acu_reason(why, why_len, "cuDNN's fused attention needs compute capability 8.0+, this GPU is %d.x", major); return 0; }
    if (major >= 10) { acu_reason(why, why_len, "the deterministic backward on compute capability %d.x needs engine knobs not set here", major); return 0; }
    if (!g_acu_handle) ACU_TRY(why, why_len, cudnnCreate(&g_acu_handle));
    AcuShape* s = &g_acu_shapes[g_acu_nshapes];
    memset(s, 0, sizeof(*s));
    s->B = B; s->T = T; s->NH = NH; s->HS = HS;
    for (int dir = 0; dir < 2; dir++) {
        char sub[400];
        if (!attn_cudnn_build_graph(&s->g[dir], dir, B, T, NH, HS, g_acu_handle, sub, sizeof(sub)) ||
            !acu_make_plan(&s->g[dir], g_acu_handle, &s->cfg[dir], &s->plan[dir], &s->plan_ws[dir], sub, sizeof(sub))) {
            acu_reason(why, why_len, "%s graph (B=%d T=%d NH=%d HS=%d): %s", dir ? "backward" : "forward", B, T, NH, HS, sub);
            acu_shape_destroy(s);
            return 0;
        }
    }
    g_acu_nshapes++;
    return 1;
}

// The prepared plans' largest need (0 for a shape never prepared): the forward's plan workspace, or
// the backward's softmax_sum plus its plan workspace, whichever is larger; one buffer serves both.
static size_t attn_cudnn_workspace_bytes(int B, int T, int C, int NH) {
    AcuShape* s = acu_find(B, T, NH, C / NH);
    if (!s) return 0;
    size_t fwd = (size_t)s->plan_ws[0];
    size_t bwd = acu_softmax_sum_bytes(B, T, NH) + (size_t)s->plan_ws[1];
    return fwd > bwd ? fwd : bwd;
}

// An upper bound before any plan exists (the dry-run memory ledger):
//   softmax_sum   B*NH*T*4 (ours, exact)
// + dP/dS         B*NH*Tp*Tp*2, Tp = T rounded up to 128: the deterministic backward keeps dS for the
//                 whole (T, T) score matrix in bf16; the frontend estimates it with T rounded up to 64,
//                 cuDNN's Hopper kernels tile by 128, so rounding to 128 covers both
// + dQ in fp32    B*NH*T*HS*4: should the engine still accumulate dQ in fp32 (what the
//                 non-deterministic algorithm keeps as dQ_accum), the bound holds
// + 32 MiB        the rest: per-row fp32 values (max, sum, D: 3 * B*NH*T*4 = 4.5 MiB at d12) and tile
//                 counters/semaphores, far below this.
// The forward plan keeps no (T, T) matrix and needs less. At d12: 768 + 96 + 1.5 + 32 = 897.5 MiB.
// The GPU check (test/test_attention_cudnn_gpu.cu) compares the prepared plans' real size with this.
static size_t attn_cudnn_workspace_bound(int B, int T, int C, int NH) {
    size_t tp = ((size_t)T + 127) / 128 * 128;
    return acu_softmax_sum_bytes(B, T, NH) + (size_t)B * NH * tp * tp * 2 + (size_t)B * T * C * 4 + ((size_t)32 << 20);
}

// The masked scores' value: -inf from cuDNN 9.10 on, the lowest float before (what the frontend passes;
// older engines prefer it in the softmax).
static float acu_mask_value(void) { return cudnnGetVersion() >= 91000 ? -INFINITY : -FLT_MAX; }

static AcuShape* acu_prepared(int B, int T, int C, int NH) {
    AcuShape* s = acu_find(B, T, NH, C / NH);
    if (!s) {
        fprintf(stderr, "internal error at %s:%d: cuDNN attention for B=%d T=%d C=%d NH=%d was never prepared\n", __FILE__, __LINE__, B, T, C, NH);
        exit(1);
    }
    return s;
}

// Runs plan with the variant pack (uids[i] -> ptrs[i]) and the workspace.
static void acu_execute(cudnnBackendDescriptor_t plan, const int64_t* uids, void** ptrs, int n, void* workspace) {
    cudnnBackendDescriptor_t vp;
    CUDNN_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
    CUDNN_CHECK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, n, uids));
    CUDNN_CHECK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, n, ptrs));
    CUDNN_CHECK(cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace));
    CUDNN_CHECK(cudnnBackendFinalize(vp));
    CUDNN_CHECK(cudnnBackendExecute(g_acu_handle, plan, vp));
    CUDNN_CHECK(cudnnBackendDestroyDescriptor(vp));
}

// out (B, T, C), lse (B, NH, T) from qkv (B, T, 3C). workspace: attn_cudnn_workspace_bytes bytes.
static void attn_cudnn_forward(bf16d* out, float* lse, const bf16d* qkv, int B, int T, int C, int NH, void* workspace) {
    AcuShape* s = acu_prepared(B, T, C, NH);
    float scale = 1.0f / sqrtf((float)(C / NH));
    float mask_value = acu_mask_value();
    // by-value tensors take a host pointer to their value
    int64_t uids[7] = { ACU_Q, ACU_K, ACU_V, ACU_SCALE, ACU_O, ACU_STATS, ACU_FWD_MASKVAL };
    void* ptrs[7] = { (void*)qkv, (void*)(qkv + C), (void*)(qkv + 2 * C), &scale, out, lse, &mask_value };
    acu_execute(s->plan[0], uids, ptrs, 7, workspace);
}

// dqkv (B, T, 3C) overwritten from dout (B, T, C), qkv, out and lse of the forward.
static void attn_cudnn_backward(bf16d* dqkv, const bf16d* dout, const bf16d* qkv, const bf16d* out, const float* lse,
                                int B, int T, int C, int NH, void* workspace) {
    AcuShape* s = acu_prepared(B, T, C, NH);
    float scale = 1.0f / sqrtf((float)(C / NH));
    float one = 1.0f, mask_value = acu_mask_value();
    char* ws = (char*)workspace;
    void* softmax_sum = ws;                                           // (B, NH, T) fp32
    void* plan_ws = s->plan_ws[1] ? ws + acu_softmax_sum_bytes(B, T, NH) : NULL;
    int64_t uids[13] = { ACU_Q, ACU_K, ACU_V, ACU_SCALE, ACU_O, ACU_STATS, ACU_DO_, ACU_DQ, ACU_DK, ACU_DV,
                         ACU_BWD_ONE, ACU_BWD_SOFTMAX_SUM, ACU_BWD_MASKVAL };
    void* ptrs[13] = { (void*)qkv, (void*)(qkv + C), (void*)(qkv + 2 * C), &scale, (void*)out, (void*)lse, (void*)dout,
                       dqkv, dqkv + C, dqkv + 2 * C, &one, softmax_sum, &mask_value };
    acu_execute(s->plan[1], uids, ptrs, 13, plan_ws);
}

static void attn_cudnn_free(void) {
    for (int i = 0; i < g_acu_nshapes; i++) acu_shape_destroy(&g_acu_shapes[i]);
    g_acu_nshapes = 0;
    if (g_acu_handle) CUDNN_CHECK(cudnnDestroy(g_acu_handle));
    g_acu_handle = NULL;
}

#endif // USE_CUDNN
#endif
