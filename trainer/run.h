// trainer/run.h: the host side of a training run that both trainers share, so the CPU and CUDA trainers
// accept the same flags, find the same data, refuse the same checkpoints and print the same lines.
// A trainer's main() is then only: run_setup (flags, optimizer, model shape), build its model and
// optimizer state through the ledger, run_memory_only, run_start (data, init or resume, log, the
// setup lines), the loop (its own train_step, then run_after_step), run_finish.
//
// The trainer hands its model to this module as a ModelOps: a few callbacks over host memory
// (checkpoint blobs, a loss, the next-token probabilities), so evaluation, sampling, checkpoints and
// resume are written once here for both backends.
#ifndef TRAINER_RUN_H
#define TRAINER_RUN_H

#include <stdio.h>
#include "trainer/cli.h"
#include "trainer/model.h"
#include "common/logger.h"
#include "common/ledger.h"
#include "common/checkpoint.h"
#include "common/rng.h"
#include "data/tokenizer.h"
#include "data/dataloader.h"

#ifdef __cplusplus
extern "C" {
#endif

// What a trainer lends the run module: its model behind callbacks that work in host memory.
typedef struct {
    void* model;
    // The checkpoint's blobs (names, order and sizes: trainer/model.c) as host memory the module reads
    // (save) or fills (load). The CPU trainer points into its model; the CUDA trainer hands staging
    // buffers and copies them from the device in `to_host` (before a save) and back in `from_host`
    // (after a load). Returns the number of blobs.
    int (*ckpt_blobs)(void* model, CkptBlob* blobs);
    void (*ckpt_to_host)(void* model, CkptBlob* blobs, int n);    // may be NULL (CPU)
    void (*ckpt_from_host)(void* model, CkptBlob* blobs, int n);  // may be NULL (CPU)
    void (*ckpt_release)(void* model, CkptBlob* blobs, int n);    // frees staging; may be NULL
    // GPT-2 initialisation from the seed (trainer/model.c's draws), and a fresh optimizer state.
    void (*init)(void* model, uint64_t seed);
    // Replaces the weights with w (num_params fp32, host): the master, and its bf16 copy rounded to
    // nearest (-init: another run's weights, fresh optimizer state).
    void (*set_weights)(void* model, const float* w);
    // Mean loss of the batch (B, T) against its targets, forward only.
    float (*loss)(void* model, const int* inputs, const int* targets, int B, int T);
    // Probabilities (V) of the token after tokens[0..n-1] (batch 1).
    void (*next_token_probs)(void* model, const int* tokens, int n, float* probs);
} ModelOps;

typedef struct {
    Tokenizer* tok;          // NULL when the GPT-2 vocabulary files are missing (samples print ids)
    DataLoader train, val;
    char train_path[1024];
    char val_path[1024];
} RunData;

typedef struct {
    int skipped_total;       // non-finite steps skipped so far (restored on resume)
    int consecutive_skips;
    double recent_loss[10];  // the last 10 applied steps' losses: train_loss in the summary
    int nrecent;
    double train_seconds;    // step time, the first step of a (re)started run left out (warm-up)
    long train_tokens;
    long tokens_seen;        // all tokens trained on, restored on resume
    float last_val;
    int last_step;           // the last step this process ran (the summary's steps)
    double wall_seconds;     // all step time of this process (the step line's elapsed and eta)
} RunStats;

// run_after_step's answers, and main's exit codes (README "Exit codes").
enum {
    RUN_GO = 0,               // go on (exit 0 at the end)
    RUN_STOP = 1,             // -stop reached: the loop ends, exit 0
    RUN_EXIT_NONFINITE = 3,   // -max-skips non-finite steps in a row, or non-finite weights: nothing saved
    RUN_EXIT_INTERRUPTED = 4, // SIGINT/SIGTERM/SIGHUP: checkpoint written (with -o), resume with -y 1
    RUN_EXIT_WRITE = 5,       // a checkpoint or log write failed (disk full, permissions)
};

// Sampling from a checkpoint (-sample 1): an optional prompt, temperature and top-k.
typedef struct {
    const char* prompt;      // NULL: start from <|endoftext|> alone
    float temperature;       // 1: the model's own distribution
    int top_k;               // 0: every token
} SampleOpts;

// One run: its flags, optimizer, data, log and bookkeeping.
typedef struct {
    Args a;
    GPT2Config cfg;
    const Optimizer* opt;
    OptHyper hyper;
    int accum;               // gradient-accumulation micro-steps per step
    Ledger led;              // every allocation of the run (dry with -memory-only)
    const ModelLayout* layout; // the trainer's model layout (set before run_memory_only)
    size_t state_bytes;      // the optimizer's exact state bytes (its layout's formula)
    ModelOps ops;
    RunData data;
    RunStats stats;
    Logger lg;
    char ckpt_path[1100];    // DIR/checkpoint.bin, empty without -o
    int start_step;          // 0, or the checkpoint's step on resume
    const char* trainer;     // "cpu" or "gpu"
    const char* device;      // the GPU's name (NULL on the CPU): the config record
    const char* attn;        // the attention route that runs (cuda/attention_routes.cuh; NULL on the CPU)
    int rank, world;         // data parallelism (trainer/dist.h): this process's rank and the number of
                             // ranks; only rank 0 prints, logs, evaluates, samples and checkpoints
    int* batch_buf;          // (2, world*B, T) the global micro-batch; each rank trains on its B rows
} Run;

// Sets up stdout (line-buffered), parses the flags and picks the optimizer and the model shape; fills r->hyper and r->accum and starts
// r->led (dry with -memory-only). Returns -1 to go on, or an exit code for main to return: after
// -advise, after `-opt list` (has_kernel, may be NULL, adds a column saying which optimizers this
// trainer runs), or for an unknown optimizer.
int run_setup(Run* r, int argc, char** argv, const char* trainer, int (*has_kernel)(const Optimizer*));

// The trainer's model is built: its layout, the optimizer's exact state bytes, and the model and
// optimizer lines printed.
void run_set_model(Run* r, const ModelLayout* layout, const char* precision_note, const char* extra);

// Prints the model and optimizer lines (`extra` appended to the optimizer line, e.g. ", recompute GELU").
// r->layout and r->state_bytes must be set.
void run_print_model(const Run* r, const char* precision_note, const char* extra);

// With -memory-only: prints the ledger (nothing was allocated) and the memory-only summary; returns 1
// (main then frees its layouts and exits 0). Without: returns 0.
int run_memory_only(Run* r, const char* where);

// Creates and locks -o DIR (a fresh run refuses a directory holding another run unless -overwrite 1),
// opens the data (the token shards go in the ledger), initialises the model through ops.init, then
// resumes from DIR/checkpoint.bin (-y 1) or takes -init PATH's weights, opens the log (a fresh run's
// starts with a config record; a resumed run's is cut back to the checkpoint's step), prints the batch
// line and the ledger, and catches SIGINT/SIGTERM/SIGHUP. Returns 0 to train; 1 when the run was only
// -sample or -eval, already done (main then finishes with run_finish(r, RUN_STOP, ...)).
int run_start(Run* r, const ModelOps* ops);

// The per-step bookkeeping after the trainer's step: the step line (with `extra` appended, e.g.
// " | MFU 41.0%", then elapsed time and ETA), log records, non-finite skips (skipped: 1 a non-finite
// loss or gradient, 2 a non-finite update rolled back), then whatever is due (val loss, a sample, a
// checkpoint, never of non-finite weights). Returns RUN_GO, RUN_STOP (-stop), or an exit code
// (RUN_EXIT_*) that main passes to run_finish.
int run_after_step(Run* r, int step, float loss, float norm, float lr, double seconds, int skipped, const char* extra);

// The end of a run: unless it failed (non-finite, a failed write), prints the trainer's memory_lines
// and the `summary:` line (extra_json adds fields to its record); then closes the log and the data and
// frees the ledger's own allocations. Returns main's exit code (0, or the RUN_EXIT_* code).
int run_finish(Run* r, int rc, const char* memory_lines, double peak_mib, const char* extra_json);

// The next micro-batch of this rank: rows rank*B .. rank*B+B-1 of the global micro-batch (world*B, T)
// that every rank reads from the same token stream, so N ranks of -b B train on exactly the tokens of
// one rank with -b N*B.
void run_next_batch(Run* r, int* inputs, int* targets);

// Sophia's Gauss-Newton-Bartlett pass (both trainers' maybe_update_hessian): the stream of label draws
// for the Hessian estimate after `step`, seeded from (seed, step) so it never disturbs training or
// sampling, and one micro-step's draws of this rank: u (B*T) gets its rows' uniforms of the global
// micro-batch, one per position in order, so N ranks of -b B draw what one rank of -b N*B draws.
void run_hessian_stream(const Run* r, int step, Rng* rng);
void run_hessian_draws(const Run* r, Rng* rng, float* u);

// The learning-rate schedule's multiplier at `step` (warmup, cosine to -q).
float run_lr_scale(const Run* r, int step);

// The optimizer's step count for global step `step`: applied updates only, as torch counts them
// (a skipped non-finite step does not advance it).
int run_opt_step(const Run* r, int step);

// Mean loss over `batches` batches of the loader from its start (every eval sees the same text).
float run_evaluate(const ModelOps* ops, DataLoader* dl, int batches, int B, int T);
// Generates `len` tokens after <|endoftext|>, printed as they come (whole UTF-8 characters only).
// Seeded from (seed, step) so sampling never disturbs the training stream.
void run_sample(const ModelOps* ops, const Tokenizer* tok, int V, int len, uint64_t seed, int step, int T, FILE* out);
// The same with a prompt, temperature and top-k (so may be NULL); step < 0 prints no "sample (step N)".
void run_generate(const ModelOps* ops, const Tokenizer* tok, int V, int len, uint64_t seed, int step, int T,
                  const SampleOpts* so, FILE* out);

// Lower-level pieces (tests use them)

// Prints the whole UTF-8 characters of buf[0..n) (invalid bytes as U+FFFD) and moves an unfinished
// last character to the start of buf; returns its length (0 when final: it is printed as U+FFFD).
size_t utf8_write_whole(FILE* out, unsigned char* buf, size_t n, int final);

// Checks the batch and optimizer flags against the model and fills the derived values (-d default,
// -u default, Sophia's interval); returns the number of gradient-accumulation micro-steps.
int run_check_args(Args* a, const GPT2Config* cfg, const Optimizer* opt, OptHyper* hyper);
// Loads the tokenizer, turns a .txt -i into cached shards, opens both loaders (exit 2 on bad files).
void run_open_data(RunData* d, const Args* a, int vocab_size);
void run_close_data(RunData* d);
// Refuses (exit 2) a checkpoint of another model, precision or optimizer, or one already at -x.
void run_check_resume(const CkptHeader* h, const CkptHeader* mine, const char* path, int steps);
// Fills the run's part of a checkpoint header (the model's part comes from model_checkpoint_header).
void run_ckpt_header(CkptHeader* h, const RunStats* s, const Args* a, int step, uint64_t data_position);
// Prints every optimizer: state bytes/param on d12, description, paper (and the kernel column).
void run_list_optimizers(int (*has_kernel)(const Optimizer*));

#ifdef __cplusplus
}
#endif

#endif
