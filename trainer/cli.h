// trainer/cli.h: what both trainers (train_gpt2.c on the CPU, train_gpt2.cu on the GPU) share on the
// command line: the model configuration, the flags, the help text, and how flags become an
// optimizer's hyperparameters. Same flags, same messages, on either trainer.
#ifndef TRAINER_CLI_H
#define TRAINER_CLI_H

#include <stdio.h>
#include <stdint.h>
#include "optim/optim.h"
#include "trainer/model.h"
#include "cuda/attention_route.h"

#ifdef __cplusplus
extern "C" {
#endif



typedef struct {
    const char* train_path;   // -i
    const char* val_path;     // -j
    const char* out_dir;      // -o
    const char* opt_name;     // -opt
    const char* model;        // -model
    const char* encoder;      // -vocab-encoder
    const char* bpe;          // -vocab-bpe
    int B, T;                 // -b, -t
    int total_batch;          // -d (tokens per step)
    int steps;                // -x
    int warmup;               // -u (-1: 10% of the steps)
    float final_lr_frac;      // -q
    float grad_clip;          // -g
    int val_every, val_batches; // -v, -m
    int val_batches_given;    // -m was on the command line (else a default of 8 shrinks to what the val data holds)
    int sample_every, sample_len; // -s, -gen
    int ckpt_every;           // -n
    int resume;               // -y
    uint64_t seed;            // -seed
    int precision;            // -precision
    int sr;                   // -sr
    int max_skips;            // -max-skips
    int memory_only;          // -memory-only
    int recompute;            // -r: recompute GELU activations in backward (CUDA trainer; the CPU keeps them)
    int stop_at;              // -stop: end after this step, as if interrupted (the schedule still follows -x)
    const char* init_path;    // -init: start from this checkpoint's weights (fresh optimizer state)
    int sample_only;          // -sample 1: print a sample from the weights (-init, or -o DIR's checkpoint) and exit
    const char* prompt;       // -prompt: text the sample continues (default: <|endoftext|>)
    float temperature;        // -temp: sampling temperature (1 = the model's own distribution)
    int top_k;                // -topk: sample among the k most likely tokens only (0 = all)
    const char* eval_path;    // -eval: print the loss and perplexity on these tokens and exit
    const char* export_path;  // -export: write the weights as HuggingFace GPT-2 safetensors and exit (trainer/export.h)
    int overwrite;            // -overwrite 1: a fresh run may replace another run's files in -o DIR
    // optimizer hyperparameters: NAN / -1 = the optimizer's default
    double lr, beta1, beta2, beta3, eps, eps2, wd, momentum, rho; // as typed (optim.h: OptHyper)
    int nesterov, qblock, hess_interval;
    int rank, update_proj_gap;  // -rank, -update-proj-gap (GaLore); -1 = default
    double galore_scale;        // -galore-scale (GaLore); NAN = default
    double aux_lr;              // -aux-lr: muon's AdamW part (embeddings, vectors); NAN = default
    int new_data;             // -new-data 1: a resume may train on another -i than its checkpoint's
    int argc;                 // the command line parse_args read (arg_given looks flags up in it)
    char** argv;
    int zero;                 // -zero 1: ZeRO-1 sharded optimizer state across the ranks (trainer/zero.h)
    int dist_force;           // -dist-force 1: the CUDA trainer's collective (NCCL) path even at one rank
    int dist_timeout;         // -dist-timeout S: seconds a collective waits for the other ranks (trainer/dist.h)
    int plan_world;           // -plan-world N: -memory-only plans one rank of N ranks without MPI (0: off)
    int plan_rank;            // -plan-rank R: that rank (-1: the one with the most sharded bytes)
    int attn;                 // -attn: the CUDA trainer's attention route (ATTN_*, cuda/attention_route.h)
    int prof;                 // -prof 1: the CUDA trainer times each kernel family with CUDA events
} Args;

void print_usage(FILE* f);
// Parses argv into a (user mistakes: a message and exit 2).
void parse_args(Args* a, int argc, char** argv);
int parse_int(const char* flag, const char* v, long lo, long hi);
double parse_float(const char* flag, const char* v, double lo, double hi);
// "dN" (L=N, C=64N, heads=N) or "L:C:H"; GPT-2's vocabulary (50257, padded to 50304) and 1024 positions.
GPT2Config parse_model(const char* s);
// Gradient accumulation bound: -d may ask for at most this many micro-steps (-d / (b*t)) per step.
#define MAX_MICRO_STEPS 4096
// -m at most the batches the val data holds (dataloader_batches of the val loader): more would only
// wrap and evaluate the same tokens again. Exit 2 with a message otherwise.
void check_val_batches(const Args* a, uint64_t available, const char* val_path);
// The optimizer's defaults with the flags the user gave applied over them.
OptHyper make_hyper(const Args* a, const Optimizer* opt, int tokens_per_step);
int file_exists(const char* path);
// The value of flag (e.g. "-x") as given on a's command line (the last one), or NULL.
const char* arg_given(const Args* a, const char* flag);

#ifdef __cplusplus
}
#endif

#endif
