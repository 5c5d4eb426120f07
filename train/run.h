// train/run.h: the host side of a training run that both trainers share, so the CPU and CUDA
// trainers accept the same flags, find the same data, refuse the same checkpoints and print the same
// lines: argument checks, data opening, resume checks, the per-step bookkeeping (step line, log
// records, non-finite skips) and the summary.
#ifndef TRAIN_RUN_H
#define TRAIN_RUN_H

#include <stdio.h>
#include "train/cli.h"
#include "common/logger.h"
#include "common/checkpoint.h"
#include "data/tokenizer.h"
#include "data/dataloader.h"

#ifdef __cplusplus
extern "C" {
#endif

// Checks the batch and optimizer flags against the model and fills the derived values (-d default,
// -u default, Sophia's interval); returns the number of gradient-accumulation micro-steps.
// User mistakes end with a message and exit 2.
int run_check_args(Args* a, const GPT2Config* cfg, const Optimizer* opt, OptHyper* hyper);

typedef struct {
    Tokenizer* tok;          // NULL when the GPT-2 vocabulary files are missing (samples print ids)
    DataLoader train, val;
    char train_path[1024];
    char val_path[1024];
} RunData;

// Loads the tokenizer, turns a .txt -i into cached shards, opens both loaders (exit 2 on bad files).
void run_open_data(RunData* d, const Args* a, int vocab_size);
void run_close_data(RunData* d);

// Refuses (exit 2) a checkpoint of another model, precision or optimizer, or one already at -x.
// `mine` is the header this run would write.
void run_check_resume(const CkptHeader* h, const CkptHeader* mine, const char* path, int steps);

typedef struct {
    int skipped_total;       // non-finite steps skipped so far (restored on resume)
    int consecutive_skips;
    double recent_loss[10];  // the last 10 applied steps' losses: train_loss in the summary
    int nrecent;
    double train_seconds;    // step time, the first step of a (re)started run left out (warm-up)
    long train_tokens;
    long tokens_seen;        // all tokens trained on, restored on resume
    float last_val;
} RunStats;

// Starts a run's bookkeeping: zeroed stats, and with -o DIR the directory created and ckpt_path set to
// DIR/checkpoint.bin (empty without -o).
void run_begin(RunStats* s, const Args* a, char* ckpt_path, size_t pathlen);

// Records one finished step: prints the step line (with `extra` appended, e.g. " | MFU 41.0%"),
// writes the log records, counts skips. Returns 0 to go on, or 3 when -max-skips consecutive steps
// were non-finite (the message is printed; the caller closes the log and exits with it).
int run_record_step(RunStats* s, const Args* a, Logger* lg, int step, int first_step, float loss, float norm,
                    float lr, double seconds, int skipped, const char* extra, const char* ckpt_path);

// What is due after a step: the last step (of -x or -stop) always evaluates, samples and checkpoints.
typedef struct { int last, val, sample, checkpoint; } RunDue;
RunDue run_due(const Args* a, int step, const char* ckpt_path);

// Records a val loss: the `val loss` line and its log record.
void run_record_val(RunStats* s, Logger* lg, int step, float val_loss, int batches);

// Fills the run's part of a checkpoint header (the model's part comes from model_checkpoint_header).
void run_ckpt_header(CkptHeader* h, const RunStats* s, const Args* a, int step, uint64_t data_position);

// The final `summary:` line and its log record; `extra_json` (may be "") adds fields to the record.
void run_print_summary(const RunStats* s, const Args* a, Logger* lg, const char* opt_name, double peak_mib,
                       size_t state_bytes, size_t num_params, const char* extra_json);

#ifdef __cplusplus
}
#endif

#endif
