// trainer/cli.c: see cli.h.
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include "trainer/cli.h"
#include "common/util.h"

void print_usage(FILE* f) {
    fprintf(f,
"usage: ./train [flags]      GPT-2 trainer with every optimizer behind -opt\n"
"model and data:\n"
"  -model S        dN (L=N, C=64N, heads=N; d12 = GPT-2 124M) or L:C:H            [d4]\n"
"  -i PATH         train tokens: shard file(s) (glob) or a .txt file                [data/gcide/gcide_train.bin]\n"
"  -j PATH         val tokens (for a .txt -i, default: its last 5%%)                [data/gcide/gcide_val.bin]\n"
"  -precision P    bf16 (bf16 params/grads, fp32 master) or fp32                     [bf16]\n"
"  -sr 0|1         stochastic rounding of the bf16 weights                          [0]\n"
"batch and schedule:\n"
"  -b N            micro-batch size                                                 [8]\n"
"  -t N            sequence length (<= 1024)                                        [64]\n"
"  -d N            total batch in tokens per step (multiple of b*t; >b*t = grad accumulation) [b*t]\n"
"  -x N            training steps                                                   [200]\n"
"  -u N            warmup steps (-1: 10%% of -x)                                      [-1]\n"
"  -q F            final lr as a fraction of the peak (cosine decay)                [0.1]\n"
"  -g F            clip the global gradient norm to F (0 = off)                     [1.0]\n"
"optimizer (defaults: the optimizer's own, see -opt list):\n"
"  -opt NAME       optimizer; -opt list prints them all                             [adamw]\n"
"  -l F            peak learning rate (adafactor: giving -l turns relative step off)\n"
"  -beta1 F -beta2 F -beta3 F -eps F -eps2 F\n"
"  -c F            weight decay (2-D tensors only)\n"
"  -momentum F     sgdm momentum           -nesterov 0|1   sgdm Nesterov\n"
"  -qblock N       8-bit block size        -rho F          sophia rho\n"
"  -k N            sophia: Hessian estimate every N steps\n"
"  -rank N         galore: projection rank (capped by each matrix's smaller side)   [128]\n"
"  -update-proj-gap N  galore: recompute the projectors (SVD) every N steps         [200]\n"
"  -galore-scale F galore: scale alpha of the projected-back update                 [0.25]\n"
"  -aux-lr F       muon: peak lr of its AdamW part (embeddings, vectors)            [3e-4]\n"
"  -zero 1         under mpirun: ZeRO-1, each rank keeps and updates only its shard of the optimizer state\n"
"                  and (bf16) of the fp32 master weights; gradients reduce-scattered (trainer/zero.h)\n"
"  -dist-force 1   CUDA trainer: the data-parallel path (NCCL all-reduce, -zero all-gather) even at one rank\n"
"  -dist-timeout S under mpirun: a collective that waits longer names the silent ranks and ends the job [300]\n"
"evaluation, output, checkpoints:\n"
"  -v N            val loss every N steps (and at the end)                          [50]\n"
"  -m N            val batches                                                      [8]\n"
"  -s N            print a generated sample every N steps (0 = only at the end)     [0]\n"
"  -gen N          sample length in tokens                                          [48]\n"
"  -o DIR          write DIR/log.jsonl and checkpoints                              [none]\n"
"  -n N            checkpoint to DIR/checkpoint.bin every N steps (and at the end)  [0]\n"
"  -y 1            resume from DIR/checkpoint.bin: its model and run flags are the defaults [0]\n"
"  -new-data 1     with -y 1: allow an -i other than the checkpoint's (starts at its first token) [0]\n"
"  -seed N         random seed (init, sampling, stochastic rounding)                [1337]\n"
"  -max-skips N    stop after N consecutive non-finite steps                        [5]\n"
"  -stop N         end after step N as if interrupted (checkpoint kept; resume with -y 1) [off]\n"
"  -overwrite 1    a fresh run may replace another run's log and checkpoint in -o DIR [0]\n"
"using a checkpoint:\n"
"  -init PATH      start from PATH's weights (a checkpoint.bin of any optimizer/precision), fresh optimizer state\n"
"  -sample 1       print a sample from -init PATH (or -o DIR's checkpoint) and exit; -prompt TEXT, -gen N,\n"
"                  -temp F (temperature) [1], -topk N (0 = all tokens) [0]\n"
"  -eval PATH      print the loss and perplexity on PATH's tokens (shards or .txt; -m batches) and exit\n"
"  -export F.safetensors  write -init PATH's (or -o DIR's checkpoint's) weights for HuggingFace GPT-2, exit\n"
"  -r 0|1          recompute GELU activations in backward (CUDA trainer)            [0]\n"
"  -attn ROUTE     CUDA trainer's attention: auto|cudnn|flash|cublas|ref; a route that cannot run\n"
"                  here says so and the run uses ref (auto: the fastest route verified on a GPU) [auto]\n"
"  -prof 1         CUDA trainer: GPU time per kernel family (CUDA events), printed at the end [0]\n"
"  -advise 1       optimizer decision guide instead of training: -params N | -model S, -mem GB,\n"
"                  -gpus N, -task finetune|pretrain, -reserve F (see README)\n"
"  -memory-only 1  print the memory ledger for the model/optimizer without allocating, then exit\n"
"  -plan-world N   with -memory-only 1: the ledger of one rank of N data-parallel ranks (with -zero 1:\n"
"                  its shard), planned without MPI; every rank's sharded bytes listed    [off]\n"
"  -plan-rank R    with -plan-world: the rank whose ledger is printed [the largest]\n"
"  -h              this help\n");
}

int parse_int(const char* flag, const char* v, long lo, long hi) {
    // 64-bit parse, range-checked before narrowing: no value wraps into the range
    char* end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (end == v || *end) user_error("flag %s expects an integer, got '%s'", flag, v);
    if (errno == ERANGE || x < lo || x > hi) user_error("flag %s must be between %ld and %ld, got %s", flag, lo, hi, v);
    return (int)x;
}

double parse_float(const char* flag, const char* v, double lo, double hi) {
    char* end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) user_error("flag %s expects a number, got '%s'", flag, v);
    if (x < lo || x > hi) user_error("flag %s must be between %g and %g, got %g", flag, lo, hi, x);
    return x;
}

void parse_args(Args* a, int argc, char** argv) {
    memset(a, 0, sizeof(*a));
    a->train_path = "data/gcide/gcide_train.bin";
    a->val_path = NULL;
    a->opt_name = "adamw";
    a->model = "d4";
    a->encoder = "data/gpt2/encoder.json";
    a->bpe = "data/gpt2/vocab.bpe";
    a->B = 8; a->T = 64; a->total_batch = -1; a->steps = 200; a->warmup = -1; a->final_lr_frac = 0.1f;
    a->grad_clip = 1.0f; a->val_every = 50; a->val_batches = 8; a->sample_every = 0; a->sample_len = 48;
    a->seed = 1337; a->precision = PRECISION_BF16; a->max_skips = 5; a->temperature = 1.0f;
    a->lr = a->beta1 = a->beta2 = a->beta3 = a->eps = a->eps2 = a->wd = a->momentum = a->rho = NAN;
    a->nesterov = a->qblock = a->hess_interval = -1;
    a->rank = a->update_proj_gap = -1;
    a->galore_scale = a->aux_lr = NAN;
    a->argc = argc; a->argv = argv;
    a->plan_rank = -1;
    a->dist_timeout = 300;
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        if (strcmp(f, "-h") == 0 || strcmp(f, "--help") == 0) { print_usage(stdout); exit(0); }
        if (f[0] != '-') user_error("unexpected argument '%s'; flags look like -x 100 (see ./train -h)", f);
        if (i + 1 >= argc) user_error("flag %s needs a value (see ./train -h)", f);
        const char* v = argv[++i];
        if (!strcmp(f, "-i")) a->train_path = v;
        else if (!strcmp(f, "-j")) a->val_path = v;
        else if (!strcmp(f, "-o")) a->out_dir = v;
        else if (!strcmp(f, "-opt")) a->opt_name = v;
        else if (!strcmp(f, "-model")) a->model = v;
        else if (!strcmp(f, "-vocab-encoder")) a->encoder = v;
        else if (!strcmp(f, "-vocab-bpe")) a->bpe = v;
        else if (!strcmp(f, "-b")) a->B = parse_int(f, v, 1, 1 << 16);
        else if (!strcmp(f, "-t")) a->T = parse_int(f, v, 1, 1024);
        else if (!strcmp(f, "-d")) a->total_batch = parse_int(f, v, 1, 1 << 30);
        else if (!strcmp(f, "-x")) a->steps = parse_int(f, v, 1, 1 << 30);
        else if (!strcmp(f, "-u")) a->warmup = parse_int(f, v, -1, 1 << 30);
        else if (!strcmp(f, "-q")) a->final_lr_frac = parse_float(f, v, 0.0, 1.0);
        else if (!strcmp(f, "-g")) a->grad_clip = parse_float(f, v, 0.0, 1e9);
        else if (!strcmp(f, "-v")) a->val_every = parse_int(f, v, 0, 1 << 30);
        else if (!strcmp(f, "-m")) { a->val_batches = parse_int(f, v, 1, 1 << 20); a->val_batches_given = 1; }
        else if (!strcmp(f, "-s")) a->sample_every = parse_int(f, v, 0, 1 << 30);
        else if (!strcmp(f, "-gen")) a->sample_len = parse_int(f, v, 0, 4096);
        else if (!strcmp(f, "-n")) a->ckpt_every = parse_int(f, v, 0, 1 << 30);
        else if (!strcmp(f, "-y")) a->resume = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-seed")) a->seed = (uint64_t)parse_int(f, v, 0, 2147483647);
        else if (!strcmp(f, "-sr")) a->sr = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-max-skips")) a->max_skips = parse_int(f, v, 1, 1 << 20);
        else if (!strcmp(f, "-memory-only")) a->memory_only = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-r")) a->recompute = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-stop")) a->stop_at = parse_int(f, v, 1, 1 << 30);
        else if (!strcmp(f, "-init")) a->init_path = v;
        else if (!strcmp(f, "-sample")) a->sample_only = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-prompt")) a->prompt = v;
        else if (!strcmp(f, "-temp")) a->temperature = parse_float(f, v, 1e-3, 100.0);
        else if (!strcmp(f, "-topk")) a->top_k = parse_int(f, v, 0, 1 << 20);
        else if (!strcmp(f, "-eval")) a->eval_path = v;
        else if (!strcmp(f, "-export")) a->export_path = v;
        else if (!strcmp(f, "-overwrite")) a->overwrite = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-precision")) {
            if (!strcmp(v, "bf16")) a->precision = PRECISION_BF16;
            else if (!strcmp(v, "fp32")) a->precision = PRECISION_FP32;
            else user_error("-precision must be bf16 or fp32, got '%s'", v);
        }
        else if (!strcmp(f, "-l")) a->lr = parse_float(f, v, 0.0, 1e3);
        else if (!strcmp(f, "-beta1")) a->beta1 = parse_float(f, v, 0.0, 0.999999);
        else if (!strcmp(f, "-beta2")) a->beta2 = parse_float(f, v, 0.0, 0.999999999);
        else if (!strcmp(f, "-beta3")) a->beta3 = parse_float(f, v, 0.0, 0.999999999);
        else if (!strcmp(f, "-eps")) a->eps = parse_float(f, v, 0.0, 1.0);
        else if (!strcmp(f, "-eps2")) a->eps2 = parse_float(f, v, 0.0, 1.0);
        else if (!strcmp(f, "-c")) a->wd = parse_float(f, v, 0.0, 10.0);
        else if (!strcmp(f, "-momentum")) a->momentum = parse_float(f, v, 0.0, 0.999999);
        else if (!strcmp(f, "-nesterov")) a->nesterov = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-qblock")) a->qblock = parse_int(f, v, 64, 1 << 16);
        else if (!strcmp(f, "-rho")) a->rho = parse_float(f, v, 0.0, 1e6);
        else if (!strcmp(f, "-k")) a->hess_interval = parse_int(f, v, 1, 1 << 20);
        else if (!strcmp(f, "-rank")) a->rank = parse_int(f, v, 1, 1 << 16);
        else if (!strcmp(f, "-update-proj-gap")) a->update_proj_gap = parse_int(f, v, 1, 1 << 30);
        else if (!strcmp(f, "-galore-scale")) a->galore_scale = parse_float(f, v, 0.0, 1e3);
        else if (!strcmp(f, "-aux-lr")) a->aux_lr = parse_float(f, v, 0.0, 1e3);
        else if (!strcmp(f, "-new-data")) a->new_data = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-zero")) a->zero = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-plan-world")) a->plan_world = parse_int(f, v, 1, 1 << 20);
        else if (!strcmp(f, "-plan-rank")) a->plan_rank = parse_int(f, v, 0, (1 << 20) - 1);
        else if (!strcmp(f, "-dist-force")) a->dist_force = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-dist-timeout")) a->dist_timeout = parse_int(f, v, 1, 7 * 86400);
        else if (!strcmp(f, "-prof")) a->prof = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-attn")) {
            int k = 0;
            while (k < ATTN_NUM_ROUTES && strcmp(v, ATTN_NAMES[k])) k++;
            if (k == ATTN_NUM_ROUTES) user_error("-attn must be auto, cudnn, flash, cublas or ref, got '%s'", v);
            a->attn = k;
        }
        else user_error("unknown flag %s (run ./train -h for the list)", f);
    }
    // one step of -d tokens is -d / (b*t) micro-steps: bounded so that a step finishes (64-bit product)
    long long bt = (long long)a->B * a->T;
    if (a->total_batch > 0 && a->total_batch / bt > MAX_MICRO_STEPS)
        user_error("-d %d is %lld micro-steps of -b %d x -t %d tokens, more than %d per step; use a smaller -d or a larger -b/-t",
                   a->total_batch, a->total_batch / bt, a->B, a->T, MAX_MICRO_STEPS);
    if (a->qblock > 0 && (a->qblock & (a->qblock - 1))) user_error("-qblock must be a power of two (e.g. 256 or 2048), got %d", a->qblock);
    if (a->resume && !a->out_dir) user_error("-y 1 resumes from DIR/checkpoint.bin: give the directory with -o DIR");
    if (a->ckpt_every && !a->out_dir) user_error("-n writes checkpoints into -o DIR: give -o DIR");
    if (a->out_dir && !a->out_dir[0]) user_error("-o needs a directory name (got an empty one)");
    if (a->out_dir && strlen(a->out_dir) > 900)
        user_error("-o: the directory name is %zu characters long; use one under 900 (paths inside it must fit)", strlen(a->out_dir));
    if (a->new_data && !a->resume) user_error("-new-data 1 goes with -y 1 (a resume on another -i)");
    if (a->resume && a->init_path) user_error("-y 1 resumes a run with its own weights; -init starts a new one: give one of them");
    if (a->prompt && !a->sample_only) user_error("-prompt goes with -sample 1");
    if (a->export_path && !a->init_path && !a->out_dir)
        user_error("-export writes a checkpoint's weights: give the checkpoint with -init PATH or the run with -o DIR");
    if (a->export_path && strlen(a->export_path) > 1000) user_error("-export: the path is too long; use one under 1000 characters");
    if (a->plan_world && !a->memory_only) user_error("-plan-world plans the memory of one rank: it goes with -memory-only 1");
    if (a->plan_rank >= 0 && !a->plan_world) user_error("-plan-rank goes with -plan-world N");
    if (a->plan_rank >= a->plan_world && a->plan_world)
        user_error("-plan-rank %d: a world of %d ranks has ranks 0 to %d", a->plan_rank, a->plan_world, a->plan_world - 1);
}

// One decimal field of a -model spec, parsed in 64 bits so that no value can wrap (strtoll saturates
// and sets ERANGE far beyond any valid size). Returns the end of the digits, or NULL if none.
static const char* model_field(const char* p, long long* out) {
    if (*p < '0' || *p > '9') return NULL;  // no sign, no spaces
    char* end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (errno == ERANGE) v = LLONG_MAX;
    *out = v;
    return end;
}

GPT2Config parse_model(const char* s) {
    GPT2Config c;
    c.max_seq_len = 1024;
    c.vocab_size = 50257;
    c.padded_vocab_size = 50304; // 50257 rounded up to a multiple of 128
    long long L = 0, C = 0, H = 0;
    const char* p;
    if (s[0] == 'd' && (p = model_field(s + 1, &L)) && !*p) {
        // C = 64 L and H = L, computed only once L is known to be in range
        C = L >= 1 && L <= 200 ? 64 * L : 0;
        H = L;
    } else if (!((p = model_field(s, &L)) && *p == ':' && (p = model_field(p + 1, &C)) && *p == ':' &&
                 (p = model_field(p + 1, &H)) && !*p))
        user_error("-model must be dN (e.g. d12) or L:C:H (e.g. 4:256:4), got '%s'", s);
    if (L < 1 || L > 200 || C < 1 || C > 16384 || H < 1 || H > C || C % H != 0)
        user_error("-model %s: need 1 <= L <= 200, 1 <= C <= 16384 and C divisible by the head count", s);
    c.num_layers = (int)L; c.channels = (int)C; c.num_heads = (int)H;
    return c;
}

void check_val_batches(const Args* a, uint64_t available, const char* val_path) {
    if ((uint64_t)a->val_batches > available)
        user_error("-m %d: the val data %s holds only %llu batches of -b %d x -t %d tokens; use -m %llu or less", a->val_batches,
                   val_path, (unsigned long long)available, a->B, a->T, (unsigned long long)(available ? available : 1));
}

const char* arg_given(const Args* a, const char* flag) {
    const char* v = NULL;
    for (int i = 1; i + 1 < a->argc; i += 2)
        if (!strcmp(a->argv[i], flag)) v = a->argv[i + 1];
    return v;
}

int file_exists(const char* p) { struct stat st; return stat(p, &st) == 0; }

// Applies the flags over the optimizer's defaults.
OptHyper make_hyper(const Args* a, const Optimizer* opt, int tokens_per_step) {
    OptHyper h = opt->defaults;
    if (!isnan(a->lr)) { h.lr = a->lr; h.relative_step = 0; } // an explicit lr turns Adafactor's relative step off
    if (!isnan(a->beta1)) { h.beta1 = a->beta1; h.use_beta1 = 1; }
    if (!isnan(a->beta2)) h.beta2 = a->beta2;
    if (!isnan(a->beta3)) h.beta3 = a->beta3;
    if (!isnan(a->eps)) h.eps = a->eps;
    if (!isnan(a->eps2)) h.eps2 = a->eps2;
    if (!isnan(a->wd)) h.weight_decay = a->wd;
    if (!isnan(a->momentum)) h.momentum = a->momentum;
    if (!isnan(a->rho)) h.rho = a->rho;
    if (a->nesterov >= 0) h.nesterov = a->nesterov;
    if (a->qblock > 0) h.qblock = a->qblock;
    if (a->hess_interval > 0) h.hess_interval = a->hess_interval;
    if (a->rank > 0) h.rank = a->rank;
    if (a->update_proj_gap > 0) h.update_proj_gap = a->update_proj_gap;
    if (!isnan(a->galore_scale)) h.galore_scale = a->galore_scale;
    if (!isnan(a->aux_lr)) h.aux_lr = a->aux_lr;
    if (opt->flags & OPT_HESSIAN) h.bs = (double)tokens_per_step;
    return h;
}

