// trainer/model.h: the GPT-2 layout both trainers share (train_gpt2.c on the CPU, train_gpt2.cu on the
// GPU). A checkpoint written by one trainer resumes in the other only if both agree, to the byte, on
//   - where each parameter lives in the flat parameter buffer (16 tensors, storage order below),
//   - the optimizer's view of them (2 + 12L + 2 tensors, their names, shapes and decay flags),
//   - the GPT-2 initialisation (the RNG draw order),
//   - which tensors the optimizer sees, in which order (their state layout: optim/state.h),
//   - the checkpoint's header fields and blob names.
// So all of that is this one piece of code; the trainers only turn offsets into host or device pointers.
#ifndef TRAINER_MODEL_H
#define TRAINER_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "optim/optim.h"
#include "optim/state.h"
#include "common/checkpoint.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int max_seq_len;        // maxT: positions in wpe
    int vocab_size;         // V: real vocabulary (50257 for GPT-2)
    int padded_vocab_size;  // Vp: V rounded up to a multiple of 128; rows V..Vp-1 of wte are never used
    int num_layers;         // L
    int num_heads;          // NH
    int channels;           // C
} GPT2Config;

enum { PRECISION_FP32 = 0, PRECISION_BF16 = 1 };

#define NUM_PARAM_TENSORS 16
// Index of each tensor in the flat parameter buffer, in storage order.
enum { P_WTE, P_WPE, P_LN1W, P_LN1B, P_QKVW, P_QKVB, P_ATTPROJW, P_ATTPROJB, P_LN2W, P_LN2B,
       P_FCW, P_FCB, P_FCPROJW, P_FCPROJB, P_LNFW, P_LNFB };
extern const char* const PARAM_NAMES[NUM_PARAM_TENSORS]; // "wte", ..., "lnf.b"

// Element counts of the 16 tensors (per-layer tensors hold all L layers: (L, rows, cols)).
void model_param_sizes(const GPT2Config* cfg, size_t sizes[NUM_PARAM_TENSORS]);
// Shape (rows, cols) of one layer's slice of tensor k (vectors: rows 1).
void model_param_shape(const GPT2Config* cfg, int k, size_t* rows, size_t* cols);

// One optimizer-visible tensor: a layer's slice of one of the 16 tensors. Units group the tensors
// that become ready together in backward: unit 0 = wte, wpe, lnf (embedding and head), unit 1+l = block l.
typedef struct {
    ParamShape shape;      // shape.name points at name below
    char name[32];         // "wte", "h3.attn.qkv.w"
    int kind;              // which of the 16 tensors
    int layer;             // block index, -1 for unit 0 tensors
    int unit;              // 0 or 1 + layer
    size_t offset;         // element offset into the flat parameter buffers
    size_t scratch_offset; // element offset inside its unit's fp32 scratch (the CPU's one-unit scratch)
} ModelTensor;

typedef struct {
    GPT2Config config;
    size_t param_sizes[NUM_PARAM_TENSORS];
    size_t param_offsets[NUM_PARAM_TENSORS];
    size_t num_params;
    // the optimizer's view: unit 0 (wte, wpe, lnf.w, lnf.b), then 12 tensors per block, block 0 first
    ModelTensor* tensors;  // (num_tensors) = 4 + 12L
    int num_tensors;
    size_t unit_size[2];   // elements of unit 0 and of one block, each tensor padded to 64 bytes
} ModelLayout;

void model_layout_build(ModelLayout* ml, const GPT2Config* cfg);
void model_layout_free(ModelLayout* ml);

// GPT-2 initialisation into w (num_params fp32): weights ~ N(0, 0.02), the two residual projections
// scaled by 1/sqrt(2L), biases 0, layernorm gains 1, padded vocabulary rows 0. Deterministic in the seed.
void model_init_weights(const ModelLayout* ml, float* w, uint64_t seed);
// The same weights handed out in pieces, for a trainer that keeps only a shard of them in fp32 (ZeRO-1's
// sharded master): emit(ctx, first, v, n) gets v = elements [first, first + n), the pieces in order
// and covering [0, num_params), each at most 65536 long (v is reused after the call).
void model_init_weights_each(const ModelLayout* ml, uint64_t seed, void (*emit)(void* ctx, size_t first, const float* v, size_t n),
                             void* ctx);

// ------------------------------------------------------------------------------------------------
// Optimizer state over the model (the layout itself: optim/state.h)

// The state layout over the model's optimizer-visible tensors, in order.
void state_layout_for_model(StateLayout* sl, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h);
// Exact optimizer-state bytes as the layouts give them (no alignment padding): what the README tables.
size_t optimizer_layout_bytes(const ModelLayout* ml, const Optimizer* opt, const OptHyper* h);

// ------------------------------------------------------------------------------------------------
// Checkpoints

// The header's model, precision, optimizer and size fields (step, data position etc. are the caller's).
void model_checkpoint_header(CkptHeader* h, const ModelLayout* ml, int precision, const char* opt_name);
// The checkpoint's blobs, in order: "weights fp32", "weights bf16" (bf16 mode only), then every state
// buffer "opt: NAME". The data pointers are what the caller passes (host memory on the CPU; the CUDA
// trainer passes device pointers and swaps in host staging). Returns the number of blobs.
int model_checkpoint_blobs(CkptBlob* blobs, const ModelLayout* ml, const StateLayout* sl, int precision,
                           void* weights_f32, void* weights_bf16, void* const* state_bufs);

// ------------------------------------------------------------------------------------------------
// Small helpers both training loops use

// In place: logits x (V) -> probabilities, max-subtracted, the sum in double. The CPU's classifier and
// the CUDA trainer's sampling both use it, so they turn the same logits into the same probabilities.
void softmax_inplace(float* x, int V);
// Index drawn from probabilities p (n), with u uniform in [0, 1).
int sample_index(const float* p, int n, float u);
// Monotonic wall clock in seconds.
double now_seconds(void);

#ifdef __cplusplus
}
#endif

#endif
