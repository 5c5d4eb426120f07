// optim/optim.h: the one switch. Every optimizer is a value of the Optimizer interface below,
// registered by one line in optim/registry.c and chosen by name with `-opt NAME`.
//
// The contract between trainer and optimizer:
//  - The trainer describes each parameter tensor by a ParamShape (a matrix rows x cols, or a vector).
//  - The optimizer's layout() says which state tensors it keeps for that shape (name, dtype, count).
//    The trainer allocates all state through the memory ledger from these layouts, one allocation
//    per state name (all "exp_avg" tensors in one buffer, ...), before the first step. So the state
//    bytes are known exactly up front, and the same layout serves -memory-only tables.
//  - step() updates one tensor: fp32 parameter values (the fp32 master in bf16 mode) from an fp32
//    gradient that the trainer has already unscaled and clipped. Writing the bf16 working copy is the
//    trainer's job, so every optimizer is pure fp32 math.
//  - State starts as all zero bytes; an optimizer whose state must start elsewhere says so in init.
//  - Checkpoints save the state buffers as raw bytes, in layout order, so resume is bit-exact.
#ifndef OPTIM_OPTIM_H
#define OPTIM_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define OPT_MAX_STATES 8

typedef enum { DT_F32 = 0, DT_U8 = 1, DT_BF16 = 2 } DType;
static inline size_t dtype_size(DType d) { return d == DT_F32 ? 4 : d == DT_BF16 ? 2 : 1; }

// A parameter tensor as optimizers see it. Vectors have ndim 1, rows 1, cols numel.
typedef struct {
    const char* name;   // e.g. "h3.attn.qkv.w"
    int ndim;           // 1 or 2
    size_t rows, cols;  // (rows, cols); numel = rows * cols
    size_t numel;
    int decay;          // 1 if weight decay applies (2-D weight matrices, as in GPT-2 practice)
    int role;           // what the tensor is in the model (PARAM_*, below); optimizers that treat
                        // tensors differently (Muon, Adam-mini) read it, the others ignore it
    int heads;          // attention heads; for PARAM_ATTN_QKV the rows are q | k | v, each split into
                        // `heads` blocks of rows / (3 * heads) rows (one block per head)
} ParamShape;

// ParamShape.role. Tests and other callers that leave it 0 get PARAM_MATRIX for 2-D and should set
// PARAM_VECTOR for 1-D where it matters.
enum {
    PARAM_MATRIX = 0,    // a 2-D weight inside a block (attn.proj, mlp.fc, mlp.proj)
    PARAM_ATTN_QKV,      // the fused q|k|v projection, (3C, C)
    PARAM_EMBEDDING,     // token embedding (wte, also the tied LM head) and position embedding (wpe)
    PARAM_VECTOR,        // biases and LayerNorm gains
};

// One state tensor of one parameter tensor.
typedef struct {
    const char* name;   // e.g. "exp_avg"; tensors of the same name share one ledger allocation
    DType dtype;
    size_t count;       // elements
} StateSpec;

// Every hyperparameter any optimizer reads. Defaults come from each optimizer's table entry;
// flags override them. Fields an optimizer does not read are ignored by it.
// The real-valued ones are doubles holding the decimal the user typed (or the table's literal, written
// without an `f`), because the references are Python code whose hyperparameters are Python floats:
// `1 - beta2` there is 1 - 0.999 in double (1.0000000000000009e-3), while 1 - (double)0.999f is
// 9.9998713e-4, 1.3e-5 away. Each optimizer's scalars function (optim/NAME.h) derives its per-step
// scalars from these doubles and rounds each to fp32 once, where it meets an fp32 tensor, as torch does.
typedef struct {
    double lr;              // peak learning rate (-l); the schedule scales it per step
    double beta1;           // -beta1 (momentum for sgdm is `momentum`)
    double beta2;           // -beta2
    double beta3;           // -beta3 (CAME's instability EMA)
    double eps;             // -eps   (Adafactor/CAME: eps1, added to g^2)
    double eps2;            // -eps2  (Adafactor: RMS floor for parameter scaling; CAME: added to the residual)
    double weight_decay;    // -c
    double momentum;        // -momentum (sgdm)
    int nesterov;          // -nesterov (sgdm)
    double clip_threshold;  // Adafactor/CAME update clipping threshold d
    double decay_rate;      // Adafactor's beta2_t = 1 - t^decay_rate
    int relative_step;     // Adafactor: lr = min(1e-2, 1/sqrt(t)); switched off when -l is given
    int scale_parameter;   // Adafactor: lr scaled by max(eps2, RMS(theta))
    int use_beta1;         // Adafactor: keep a first moment (set when -beta1 is given)
    double rho;             // Sophia's clipping constant
    int hess_interval;     // Sophia: Hessian estimate every k steps
    double bs;              // Sophia: batch size in tokens (the GNB estimator's B factor)
    int qblock;            // 8-bit optimizers: quantization block size (-qblock)
    int min_8bit_size;     // 8-bit optimizers: tensors with fewer elements keep fp32 state
    int rank;              // GaLore: projection rank r (-rank); capped by each matrix's smaller side
    int update_proj_gap;   // GaLore: the projector is recomputed (SVD of the gradient) every T steps
    double galore_scale;   // GaLore: alpha, the scale of the update projected back (-galore-scale)
    double aux_lr;         // muon: peak lr of its AdamW part (embeddings, vectors); -l is the Muon part's
} OptHyper;

// What the trainer passes to step() for one tensor.
typedef struct {
    const ParamShape* shape;
    float* param;            // (numel) fp32 values, updated in place
    const float* grad;       // (numel) fp32 gradient, already clipped
    void* state[OPT_MAX_STATES]; // state tensors in layout order
} OptTensor;

// ZeRO-1 row shards (optimizers that declare OPT_SHARD_ROWS): step() then sees rows of a matrix that
// several ranks share, each rank its own rows, and every statistic that spans the whole matrix (column
// sums, the mean of a row statistic, the update's RMS, RMS(theta)) is this rank's partial sum over its
// rows, completed by one explicit call:
//     r->sum(r, buf, n)    in place: buf (n doubles) = the sum of every sharing rank's buf, the same
//                          bits on each of them (the sum is taken in rank order)
// Every sharing rank makes the same calls in the same order (a collective); ranks that do not share the
// matrix make none. The trainer supplies sum: MPI on CPU ranks, NCCL on GPU ranks (trainer/dist.h).
typedef struct OptReduce {
    size_t rows;             // rows of the whole matrix (the slice's own are shape->rows)
    void (*sum)(const struct OptReduce* r, double* buf, size_t n);
    void* ctx;               // the trainer's (the group of ranks that share the matrix)
} OptReduce;

typedef struct {
    int t;                   // step number, first step is 1
    double lr;               // learning rate for this step (peak lr times the schedule), a Python float
    float lr_scale;          // the schedule's multiplier alone (lr / peak lr)
    long nonfinite;          // out: count of non-finite gradient elements seen (8-bit optimizers)
    const OptReduce* reduce; // NULL: the tensor is whole here (one rank, or a tensor this rank owns
                             // alone); else rows of a shared matrix (OPT_SHARD_ROWS only)
} OptStep;

// ZeRO-1 (-zero 1, trainer/zero.h): the smallest piece of a tensor a rank may own and update alone.
// Each optimizer declares the finest cut at which its update of a piece equals that part of the whole
// tensor's update.
typedef enum {
    OPT_SHARD_TENSOR = 0,  // whole tensors (the default: the update reads statistics of the whole
                           // tensor, e.g. Muon's orthogonalization, GaLore's projection)
    OPT_SHARD_ELEMENT,     // any element: the update is element-wise (sgd, adam, lion, sophia)
    OPT_SHARD_QBLOCK,      // whole quantization blocks from the tensor's start, pieces of a quantized
                           // tensor at least as long as the quantizing threshold (the 8-bit family)
    OPT_SHARD_ROWS,        // whole rows of a matrix, whole vectors; the statistics across rows go
                           // through OptStep.reduce (adafactor, came)
} OptShardUnit;

enum {
    OPT_FUSED_BACKWARD = 1 << 0, // LOMO family: step() is called inside backward, layer by layer
    OPT_HESSIAN        = 1 << 1, // Sophia: hessian() is fed a Gauss-Newton-Bartlett gradient every k steps
};

typedef struct Optimizer {
    const char* name;
    const char* description;   // one line
    const char* paper;         // short citation
    unsigned flags;
    OptShardUnit shard;        // its ZeRO-1 shard unit (above)
    OptHyper defaults;
    // Fills out[] with the state tensors kept for a tensor of this shape; returns how many.
    int (*layout)(const OptHyper* h, const ParamShape* s, StateSpec out[OPT_MAX_STATES]);
    // Optional: initialise state that must not start at zero. NULL = all zero.
    void (*init)(const OptHyper* h, OptTensor* p);
    // Update one tensor.
    void (*step)(const OptHyper* h, OptTensor* p, OptStep* st);
    // Sophia only: fold the current (GNB) gradient into the Hessian estimate. NULL for others.
    void (*hessian)(const OptHyper* h, OptTensor* p);
} Optimizer;

// The registry (optim/registry.c).
extern const Optimizer* const OPTIMIZERS[];
extern const int NUM_OPTIMIZERS;
const Optimizer* optim_find(const char* name);       // NULL if unknown; case-insensitive, HF aliases too
// The aliases (HuggingFace TrainingArguments.optim names) that optim_find maps to o, ", "-separated into
// out ("" if none); returns how many.
int optim_aliases(const Optimizer* o, char* out, size_t n);
void optim_print_names(FILE* f);                     // "sgd, sgdm, adam, ..."
int optim_has_cuda(const Optimizer* o);              // 1 if its registry line names CUDA kernels

// Shared helpers for layouts and tests.
size_t optim_state_bytes(const Optimizer* o, const OptHyper* h, const ParamShape* s);

#ifdef __cplusplus
}
#endif

#endif
