// trainer/run.c: see run.h.
#include <string.h>
#include <math.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include "trainer/run.h"
#include "trainer/advise.h"
#include "trainer/export.h"
#include "common/util.h"
#include "common/ledger.h"
#include "common/rng.h"
#include "common/schedule.h"
#include "common/fileio.h"
#include "trainer/dist.h"
#include "trainer/zero.h"

#define DEFAULT_TRAIN "data/gcide/gcide_train.bin"
#define DEFAULT_VAL "data/gcide/gcide_val.bin"

int run_check_args(Args* a, const GPT2Config* cfg, const Optimizer* opt, OptHyper* hyper) {
    if (a->T > cfg->max_seq_len) user_error("-t %d exceeds the model's context of %d positions", a->T, cfg->max_seq_len);
    // -b is per rank, -d the global batch: a micro-step trains on -b * -t tokens on each of the ranks
    int world = dist_world();
    int tokens_per_micro = a->B * a->T * world;
    if (a->total_batch < 0) a->total_batch = tokens_per_micro;
    if (a->total_batch % tokens_per_micro != 0) {
        if (world > 1)
            user_error("-d %d must be a multiple of -b * -t * ranks = %d * %d * %d = %d (-b is per rank, -d the global batch)",
                       a->total_batch, a->B, a->T, world, tokens_per_micro);
        user_error("-d %d must be a multiple of -b * -t = %d", a->total_batch, tokens_per_micro);
    }
    int accum = a->total_batch / tokens_per_micro;
    if ((opt->flags & OPT_FUSED_BACKWARD) && accum > 1)
        user_error("%s updates inside backward, so it cannot accumulate gradients: use -d equal to -b * -t (%d)", opt->name, tokens_per_micro);
    if (a->warmup < 0) a->warmup = a->steps / 10;
    *hyper = make_hyper(a, opt, a->total_batch);
    if ((opt->flags & OPT_HESSIAN) && hyper->hess_interval < 1) hyper->hess_interval = 10;
    if (a->zero && zero_unsupported(opt)) user_error("%s: %s", opt->name, zero_unsupported(opt));
    if (hyper->nesterov && hyper->momentum <= 0.0f) user_error("-nesterov 1 needs a momentum > 0 (-momentum F)");
    // constants that make the update undefined: an EMA coefficient that rounds to 1 in fp32 never moves
    // and its bias correction 1 - beta^t is 0; an eps of 0 where the algorithm divides by it (its
    // default is > 0) gives 0/0 on every weight whose gradient is 0 (e.g. the padded vocabulary rows)
    const char* bname[3] = { "-beta1", "-beta2", "-beta3" };
    const double bval[3] = { a->beta1, a->beta2, a->beta3 };
    for (int i = 0; i < 3; i++)
        if (!isnan(bval[i]) && (float)bval[i] >= 1.0f)
            user_error("%s %.10g rounds to 1 in fp32, where the optimizer keeps its state: the average would never forget "
                       "(and a bias correction 1 - beta^t would divide by 0); use at most 0.9999999", bname[i], bval[i]);
    // compared after rounding to fp32, the optimizer's precision: -eps 1e-46 is 0 there
    if (!isnan(a->eps) && (float)a->eps <= 0.0f && opt->defaults.eps > 0.0f)
        user_error("-eps %g is 0 in fp32: %s divides by (a root of) its second moment plus eps, which is 0 wherever the gradient is 0; use a small eps such as %g", a->eps, opt->name, opt->defaults.eps);
    if (!isnan(a->eps2) && (float)a->eps2 <= 0.0f && opt->defaults.eps2 > 0.0f && !strcmp(opt->name, "came"))
        user_error("-eps2 %g is 0 in fp32: came divides by its instability statistic plus eps2, which can be 0; use a small eps2 such as %g", a->eps2, opt->defaults.eps2);
    if (hyper->lr <= 0.0f && !hyper->relative_step) user_error("%s needs a learning rate > 0: pass -l", opt->name);
    return accum;
}

static void open_loader(DataLoader* dl, const char* path, int B, int T, int V, const char* what) {
    char err[1024];
    if (dataloader_open(dl, path, B, T, V, err, sizeof(err)) != 0) user_error("%s data: %s", what, err);
}

void run_open_data(RunData* d, const Args* a, int vocab_size) {
    memset(d, 0, sizeof(*d));
    char err[1024];
    if (file_exists(a->encoder) && file_exists(a->bpe) && tokenizer_load(&d->tok, a->encoder, a->bpe, err, sizeof(err)) != 0) {
        fprintf(stderr, "warning: %s; samples will print token ids\n", err);
        d->tok = NULL;
    }
    snprintf(d->train_path, sizeof(d->train_path), "%s", a->train_path);
    d->val_path[0] = 0;
    if (a->val_path) snprintf(d->val_path, sizeof(d->val_path), "%s", a->val_path);
    size_t tl = strlen(a->train_path);
    if (tl > 4 && strcmp(a->train_path + tl - 4, ".txt") == 0) {
        // a plain text file: tokenized once, cached under data/cache, its last 5% the val split
        if (!d->tok) user_error("-i %s is a text file, which needs the GPT-2 vocabulary (%s); run `make data` first", a->train_path, a->encoder);
        char txt_val[1024];
        if (data_text_to_shards(d->tok, a->train_path, "data/cache", 0.05, d->train_path, txt_val, sizeof(d->train_path), err, sizeof(err)) != 0)
            user_error("%s", err);
        if (!a->val_path) snprintf(d->val_path, sizeof(d->val_path), "%s", txt_val);
    }
    if (!d->val_path[0]) // the default dataset's val split, or the training data itself
        snprintf(d->val_path, sizeof(d->val_path), "%s", strcmp(d->train_path, DEFAULT_TRAIN) == 0 ? DEFAULT_VAL : d->train_path);
    if (!strcmp(d->train_path, DEFAULT_TRAIN) && !file_exists(d->train_path))
        user_error("the default dataset %s is missing: run `make data` (or pass your own -i FILE)", d->train_path);
    // the global micro-batch: every rank reads the same stream and keeps its own rows (run_next_batch)
    open_loader(&d->train, d->train_path, a->B * dist_world(), a->T, vocab_size, "train");
    open_loader(&d->val, d->val_path, a->B, a->T, vocab_size, "val");
    printf("data: train %s, %llu tokens; val %s, %llu tokens\n", d->train_path, (unsigned long long)dataloader_num_tokens(&d->train),
           d->val_path, (unsigned long long)dataloader_num_tokens(&d->val));
}

void run_close_data(RunData* d) {
    dataloader_free(&d->train);
    dataloader_free(&d->val);
    if (d->tok) tokenizer_free(d->tok);
    d->tok = NULL;
}

// One flag of the run as text ("default" for an -l left to the optimizer).
static void flag_text(char* buf, size_t n, double v, int is_lr) {
    if (is_lr && isnan(v)) snprintf(buf, n, "default");
    else snprintf(buf, n, "%.9g", v);
}

void run_check_resume(const CkptHeader* h, const CkptHeader* mine, const char* path, int steps) {
    if (h->num_layers != mine->num_layers || h->channels != mine->channels || h->num_heads != mine->num_heads ||
        h->vocab_size != mine->vocab_size || h->padded_vocab_size != mine->padded_vocab_size ||
        h->max_seq_len != mine->max_seq_len || (mine->num_params && h->num_params != mine->num_params))
        user_error("cannot resume: %s holds a model L=%d C=%d heads=%d vocab=%d (padded %d) params=%llu, this run is L=%d C=%d heads=%d "
                   "vocab=%d (padded %d) params=%llu; use the same -model", path, h->num_layers, h->channels, h->num_heads,
                   h->vocab_size, h->padded_vocab_size, (unsigned long long)h->num_params, mine->num_layers, mine->channels,
                   mine->num_heads, mine->vocab_size, mine->padded_vocab_size, (unsigned long long)mine->num_params);
    if (h->precision != mine->precision)
        user_error("cannot resume: %s was written with -precision %s; use the same precision", path, h->precision ? "bf16" : "fp32");
    if (strncmp(h->optimizer, mine->optimizer, sizeof(h->optimizer)) != 0)
        user_error("cannot resume: %s was written by -opt %.32s, this run uses -opt %.32s", path, h->optimizer, mine->optimizer);
    if (h->step < 0 || h->skipped_steps < 0)
        user_error("cannot resume: %s is corrupt (step %d, %d skipped steps)", path, h->step, h->skipped_steps);
    if (h->step >= steps) user_error("cannot resume: %s is at step %d already, -x is %d; raise -x", path, h->step, steps);
    // The flags a bit-exact resume depends on: compared when this run's header carries them (the caller
    // filled `mine` with run_ckpt_header) and the checkpoint recorded them (version 2).
    if (mine->run_B <= 0) return;
    if (h->run_B <= 0) {
        if (h->seed != mine->seed)
            user_error("cannot resume: %s was written with -seed %llu, this run has -seed %llu; pass the same flags to resume",
                       path, (unsigned long long)h->seed, (unsigned long long)mine->seed);
        fprintf(stderr, "note: %s does not record -b -t -d -sr -l (format version 1): make sure they are the ones it was written with\n", path);
        return;
    }
    struct { const char* flag; double old, now; int is_lr; } f[] = {
        { "-b x ranks", h->run_B, mine->run_B, 0 }, { "-t", h->run_T, mine->run_T, 0 },
        { "-d", h->run_total_batch, mine->run_total_batch, 0 }, { "-seed", (double)h->seed, (double)mine->seed, 0 },
        { "-sr", h->run_sr, mine->run_sr, 0 }, { "-l", h->run_lr, mine->run_lr, 1 },
    };
    char msg[1024];
    size_t len = 0;
    msg[0] = 0;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        int same = f[i].old == f[i].now || (isnan(f[i].old) && isnan(f[i].now));
        if (i == 3) same = h->seed == mine->seed;  // exact in 64 bits
        if (!same && f[i].is_lr) {
            // a new lr is the usual way out of a diverging run: resume, but say it is no longer bit-exact
            char o[40], n[40];
            flag_text(o, sizeof(o), f[i].old, 1);
            flag_text(n, sizeof(n), f[i].now, 1);
            fprintf(stderr, "warning: %s was written with -l %s, this run uses -l %s: the resumed run is not the "
                    "uninterrupted one any more\n", path, o, n);
            continue;
        }
        if (same || len >= sizeof(msg) - 1) continue;
        char o[40], n[40];
        if (i == 3) { snprintf(o, sizeof(o), "%llu", (unsigned long long)h->seed); snprintf(n, sizeof(n), "%llu", (unsigned long long)mine->seed); }
        else { flag_text(o, sizeof(o), f[i].old, f[i].is_lr); flag_text(n, sizeof(n), f[i].now, f[i].is_lr); }
        len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%s%s %s (now %s)", len ? ", " : "", f[i].flag, o, n);
    }
    if (len) user_error("cannot resume: %s was written with %s; pass the same flags to resume it", path, msg);
}

// ------------------------------------------------------------------------------------------------
// Signals: SIGINT, SIGTERM (what a scheduler sends before preemption) and SIGHUP finish the current step,
// write a checkpoint and exit with RUN_EXIT_INTERRUPTED; a second signal exits at once.

static volatile sig_atomic_t g_signal = 0;

static void on_signal(int sig) {
    if (g_signal) _exit(128 + sig); // the second one: stop now
    g_signal = sig;
}

static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; // a read or write in progress completes; the loop looks at the flag
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static const char* signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : sig == SIGHUP ? "SIGHUP" : "a signal";
}

// ------------------------------------------------------------------------------------------------
// The run directory: created, locked against a second run, never silently taken from another run.

static void make_dirs(const char* path) {
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s", path);
    for (char* p = dir + 1; *p; p++)
        if (*p == '/') { *p = 0; mkdir(dir, 0755); *p = '/'; }
    mkdir(dir, 0755);
}

// Takes DIR/.lock for the life of the process (flock: released by the kernel however the process ends).
static void lock_dir(const char* dir) {
    char path[1100];
    snprintf(path, sizeof(path), "%s/.lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) user_error("cannot use -o %s: %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        user_error("another run is using -o %s right now (it holds %s); wait for it to end or choose another -o", dir, path);
    // fd stays open on purpose: the lock lasts until exit
}

// The run directory as this run found it (rank 0): held open for the life of the run, so that its
// inode cannot be reused, and compared with what -o DIR names before every write (run_dir_replaced).
static int g_dir_fd = -1;
// This run's id: the config record's "run_id" and every checkpoint header's, so a checkpoint and a log
// of different runs are never resumed together.
static uint32_t g_run_id;
// The step of the last checkpoint this run wrote or resumed from (-1: none), for the messages.
static int g_last_ckpt = -1;

static uint32_t new_run_id(void) {
    uint32_t id = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) { if (read(fd, &id, sizeof(id)) != (ssize_t)sizeof(id)) id = 0; close(fd); }
    if (!id) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        id = (uint32_t)(((uint64_t)ts.tv_nsec * 2654435761u) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 16));
    }
    return id ? id : 1;
}

// 1 when -o DIR no longer names the directory this run locked (deleted, or deleted and made again).
static int run_dir_replaced(const Run* r) {
    struct stat now, mine;
    if (g_dir_fd < 0 || fstat(g_dir_fd, &mine) != 0) return 0;
    return stat(r->a.out_dir, &now) != 0 || now.st_dev != mine.st_dev || now.st_ino != mine.st_ino;
}

// run_dir_replaced, said: 1 when the run must stop (checked after every step and right before a save).
static int run_dir_gone(const Run* r, int step) {
    if (!r->ckpt_path[0] || !run_dir_replaced(r)) return 0;
    fprintf(stderr, "error: -o %s was deleted or replaced while this run used it (noticed after step %d); stopping "
            "without writing into it, as it may be another run's now (this run's checkpoints and log went with the old one)\n",
            r->a.out_dir, step);
    return 1;
}

// What is saved, in words, for an error that stops the run after `step`.
static void saved_note(int step, char* out, size_t n) {
    if (g_last_ckpt == step) snprintf(out, n, "its checkpoint (step %d) is written", step);
    else if (g_last_ckpt >= 0) snprintf(out, n, "the last checkpoint is of step %d", g_last_ckpt);
    else snprintf(out, n, "no checkpoint was written");
}

static void open_run_dir(Run* r) {
    const Args* a = &r->a;
    r->ckpt_path[0] = 0;
    if (!a->out_dir) return;
    make_dirs(a->out_dir);
    struct stat st;
    if (stat(a->out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) user_error("-o %s is not a directory I can create or use", a->out_dir);
    snprintf(r->ckpt_path, sizeof(r->ckpt_path), "%s/checkpoint.bin", a->out_dir);
    if (a->sample_only || a->eval_path || a->export_path) return; // reading only: no lock, nothing replaced
    if (r->rank != 0) return;                    // rank 0 owns the directory: lock, log, checkpoints
    lock_dir(a->out_dir);
    g_dir_fd = open(a->out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char log_path[1100];
    snprintf(log_path, sizeof(log_path), "%s/log.jsonl", a->out_dir);
    fileio_remove_stale_temps(r->ckpt_path); // what a writer killed before its rename left (we hold the lock)
    fileio_remove_stale_temps(log_path);
    if (!a->resume && !a->overwrite && (file_exists(log_path) || file_exists(r->ckpt_path)))
        user_error("-o %s holds another run (log.jsonl or checkpoint.bin): resume it with -y 1, choose another -o, "
                   "or pass -overwrite 1 to replace it", a->out_dir);
    if (!a->resume && a->overwrite) {
        // the old run's checkpoints go with its log: a later -y 1 must never resume them under this run's log
        char prev[1100];
        ckpt_prev_path(r->ckpt_path, prev, sizeof(prev));
        int n = (unlink(r->ckpt_path) == 0) + (unlink(prev) == 0);
        if (n) printf("-overwrite 1: removed the previous run's checkpoint%s in %s\n", n > 1 ? "s" : "", a->out_dir);
    }
}

// ------------------------------------------------------------------------------------------------
// Per-step bookkeeping

// Seconds as "1h02m", "3m05s" or "42s".
static void format_duration(double sec, char* out, size_t n) {
    long s = sec > 0 ? (long)(sec + 0.5) : 0;
    if (s >= 3600) snprintf(out, n, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
    else if (s >= 60) snprintf(out, n, "%ldm%02lds", s / 60, s % 60);
    else snprintf(out, n, "%lds", s);
}

static int record_step(Run* r, int step, float loss, float norm, float lr, double seconds, int skipped, const char* extra) {
    RunStats* s = &r->stats;
    const Args* a = &r->a;
    int first_step = r->start_step + 1;
    s->last_step = step;
    s->tokens_seen += a->total_batch;
    s->wall_seconds += seconds;
    if (step > first_step || a->steps == first_step) { s->train_seconds += seconds; s->train_tokens += a->total_batch; }
    if (skipped) {
        // saturating: a restored count near INT_MAX must not overflow
        if (s->skipped_total < INT_MAX) s->skipped_total++;
        if (s->consecutive_skips < INT_MAX) s->consecutive_skips++;
        const char* what = skipped == 2 ? "update" : isfinite(loss) ? "gradient" : "loss";
        printf("step %5d/%d | loss %s | norm %s | SKIPPED (non-finite %s; %d skipped so far)\n", step, a->steps,
               isfinite(loss) ? "ok" : "nan/inf", isfinite(norm) ? "ok" : "nan/inf", what, s->skipped_total);
        logger_write(&r->lg, "{\"type\":\"skip\",\"step\":%d,\"loss\":%s,\"what\":\"%s\",\"skipped_total\":%d}", step,
                     isfinite(loss) ? "0" : "null", what, s->skipped_total);
        if (s->consecutive_skips >= a->max_skips) {
            fprintf(stderr, "error: %d consecutive steps had a non-finite loss, gradient or update; stopping. "
                    "%s Try a lower learning rate (-l) or gradient clipping (-g 1).\n", s->consecutive_skips,
                    r->ckpt_path[0] && file_exists(r->ckpt_path) ? "The last checkpoint is intact." : "No checkpoint was written.");
            logger_write(&r->lg, "{\"type\":\"failed\",\"step\":%d,\"why\":\"%d consecutive non-finite steps\"}", step, s->consecutive_skips);
            return RUN_EXIT_NONFINITE;
        }
    } else {
        s->consecutive_skips = 0;
        s->recent_loss[s->nrecent++ % 10] = loss;
    }
    // elapsed: this process's step time; eta: the remaining steps at the mean step time so far
    int done = step - r->start_step, left = (a->stop_at && a->stop_at < a->steps ? a->stop_at : a->steps) - step;
    char el[32], eta[32];
    format_duration(s->wall_seconds, el, sizeof(el));
    format_duration(left * s->wall_seconds / done, eta, sizeof(eta));
    if (!skipped) // a skipped step has its SKIPPED line above
        printf("step %5d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s%s | %s, eta %s\n", step, a->steps, loss, lr, norm,
               seconds * 1000.0, a->total_batch / seconds, extra ? extra : "", el, eta);
    logger_write(&r->lg, "{\"type\":\"step\",\"step\":%d,\"loss\":%.9g,\"lr\":%.9g,\"norm\":%.9g,\"ms\":%.3f,\"tok_per_s\":%.1f,\"skipped\":%d}",
                 step, isfinite(loss) ? loss : -1.0f, lr, isfinite(norm) ? norm : -1.0f, seconds * 1000.0, a->total_batch / seconds, skipped);
    return RUN_GO;
}

// What is due after a step: the last step (of -x or -stop) always evaluates, samples and checkpoints.
typedef struct { int last, val, sample, checkpoint; } RunDue;
static RunDue run_due(const Args* a, int step, const char* ckpt_path) {
    RunDue d;
    d.last = step == a->steps || step == a->stop_at;
    d.val = (a->val_every && step % a->val_every == 0) || d.last;
    d.sample = a->sample_len > 0 && ((a->sample_every && step % a->sample_every == 0) || d.last);
    d.checkpoint = ckpt_path && ckpt_path[0] && ((a->ckpt_every && step % a->ckpt_every == 0) || d.last);
    return d;
}

static void record_val(Run* r, int step, float val_loss) {
    r->stats.last_val = val_loss;
    printf("val loss %.6f (step %d, %d batches)\n", val_loss, step, r->a.val_batches);
    logger_write(&r->lg, "{\"type\":\"val\",\"step\":%d,\"val_loss\":%.9g}", step, val_loss);
}

void run_ckpt_header(CkptHeader* h, const RunStats* s, const Args* a, int step, uint64_t data_position) {
    h->step = step;
    h->total_steps = a->steps;
    h->skipped_steps = s->skipped_total;
    h->seed = a->seed;
    h->data_position = data_position;
    h->tokens_seen = (uint64_t)s->tokens_seen;
    // what a bit-exact resume needs (run_check_resume compares them): -b -t -d -sr -l (-seed above)
    h->run_B = a->B;
    h->run_T = a->T;
    h->run_total_batch = a->total_batch;
    h->run_sr = a->sr;
    h->run_lr = a->lr;
}

// A JSON number, or null for NaN/inf (JSON has no NaN).
static void json_num(char* out, size_t n, double x) {
    if (isfinite(x)) snprintf(out, n, "%.9g", x); else snprintf(out, n, "null");
}

static void print_summary(Run* r, double peak_mib, const char* extra_json) {
    const RunStats* s = &r->stats;
    size_t P = r->layout->num_params;
    double train_loss = 0.0;
    int nl = s->nrecent < 10 ? s->nrecent : 10;
    for (int i = 0; i < nl; i++) train_loss += s->recent_loss[i];
    train_loss = nl ? train_loss / nl : NAN;
    double tps = s->train_seconds > 0 ? s->train_tokens / s->train_seconds : 0.0;
    double rss_mib = process_peak_rss() / 1048576.0;
    int steps = s->last_step; // the steps this run reached (-stop ends early; a resumed run counts from 1)
    printf("summary: opt=%s steps=%d train_loss=%.6f val_loss=%.6f tok_per_s=%.1f peak_mib=%.2f state_bytes=%zu "
           "state_bytes_per_param=%.4f params=%zu skipped=%d rss_mib=%.2f world=%d\n", r->opt->name, steps, train_loss, s->last_val, tps,
           peak_mib, r->state_bytes, (double)r->state_bytes / P, P, s->skipped_total, rss_mib, r->world);
    char tl[32], vl[32];
    json_num(tl, sizeof(tl), train_loss);
    json_num(vl, sizeof(vl), s->last_val);
    logger_write(&r->lg, "{\"type\":\"summary\",\"opt\":\"%s\",\"steps\":%d,\"train_loss\":%s,\"val_loss\":%s,\"tok_per_s\":%.1f,"
                 "\"peak_mib\":%.3f,\"state_bytes\":%zu,\"state_bytes_per_param\":%.6f,\"params\":%zu,\"skipped\":%d,\"rss_mib\":%.3f,\"world\":%d%s}",
                 r->opt->name, steps, tl, vl, tps, peak_mib, r->state_bytes, (double)r->state_bytes / P, P, s->skipped_total,
                 rss_mib, r->world, extra_json ? extra_json : "");
}

// The first record of a fresh run's log: everything needed to know what ran (and to rerun it).
static void write_config_record(Run* r) {
    const Args* a = &r->a;
    if (!g_run_id) g_run_id = new_run_id(); // a fresh run: its id, in this record and in its checkpoints
    const OptHyper* h = &r->hyper;
    char git[80] = "unknown", host[128] = "unknown", date[64], esc[4][1100];
    FILE* p = popen("git rev-parse --short=12 HEAD 2>/dev/null && (git diff --quiet HEAD 2>/dev/null || echo dirty)", "r");
    if (p) {
        char line[64], rev[64] = "";
        int dirty = 0;
        if (fgets(line, sizeof(line), p)) { line[strcspn(line, "\n")] = 0; snprintf(rev, sizeof(rev), "%s", line); }
        if (fgets(line, sizeof(line), p) && !strncmp(line, "dirty", 5)) dirty = 1;
        pclose(p);
        if (rev[0]) snprintf(git, sizeof(git), "%s%s", rev, dirty ? "-dirty" : "");
    }
    struct utsname u;
    if (uname(&u) == 0) snprintf(host, sizeof(host), "%s", u.nodename);
    time_t now = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_escape(r->data.train_path, esc[0], sizeof(esc[0]));
    json_escape(r->data.val_path, esc[1], sizeof(esc[1]));
    json_escape(a->init_path ? a->init_path : "", esc[2], sizeof(esc[2]));
    json_escape(r->device ? r->device : "", esc[3], sizeof(esc[3]));
    const GPT2Config* c = &r->cfg;
    logger_write(&r->lg, "{\"type\":\"config\",\"trainer\":\"%s\",\"device\":\"%s\",\"git\":\"%s\",\"host\":\"%s\",\"date\":\"%s\","
                 "\"model\":\"%s\",\"layers\":%d,\"channels\":%d,\"heads\":%d,\"vocab\":%d,\"params\":%zu,"
                 "\"train\":\"%s\",\"val\":\"%s\",\"init\":\"%s\",\"precision\":\"%s\",\"sr\":%d,\"B\":%d,\"T\":%d,\"tokens_per_step\":%d,"
                 "\"steps\":%d,\"warmup\":%d,\"final_lr_frac\":%g,\"grad_clip\":%g,\"seed\":%llu,\"opt\":\"%s\",\"lr\":%.9g,"
                 "\"beta1\":%.9g,\"beta2\":%.9g,\"beta3\":%.9g,\"eps\":%.9g,\"eps2\":%.9g,\"weight_decay\":%.9g,\"momentum\":%.9g,"
                 "\"nesterov\":%d,\"relative_step\":%d,\"qblock\":%d,\"rho\":%.9g,\"hess_interval\":%d,\"state_bytes\":%zu,"
                 "\"val_every\":%d,\"val_batches\":%d,\"ckpt_every\":%d,\"recompute\":%d,\"attn\":\"%s\",\"world\":%d,\"run_id\":\"%08x\"}",
                 r->trainer, esc[3], git, host, date, a->model, c->num_layers, c->channels, c->num_heads, c->vocab_size,
                 r->layout->num_params, esc[0], esc[1], esc[2], a->precision == PRECISION_BF16 ? "bf16" : "fp32", a->sr, a->B, a->T,
                 a->total_batch, a->steps, a->warmup, a->final_lr_frac, a->grad_clip, (unsigned long long)a->seed, r->opt->name,
                 h->lr, h->beta1, h->beta2, h->beta3, h->eps, h->eps2, h->weight_decay, h->momentum, h->nesterov, h->relative_step,
                 h->qblock, h->rho, h->hess_interval, r->state_bytes, a->val_every, a->val_batches, a->ckpt_every, a->recompute,
                 r->attn ? r->attn : "cpu", r->world, g_run_id);
}

// ------------------------------------------------------------------------------------------------
// The run as the trainers' main() sees it

// "lr=0.001 betas=(0.9,0.999) eps=1e-08 wd=0.01": the constants an optimizer reads, from its defaults.
static void format_defaults(const Optimizer* o, char* out, size_t n) {
    const OptHyper* d = &o->defaults;
    int k = 0;
    if (d->relative_step) k += snprintf(out + k, n - k, "lr=relative");
    else k += snprintf(out + k, n - k, "lr=%g", d->lr);
    if (d->beta3 > 0) k += snprintf(out + k, n - k, " betas=(%g,%g,%g)", d->beta1, d->beta2, d->beta3);
    else if (d->beta1 > 0 || d->beta2 > 0) k += snprintf(out + k, n - k, " betas=(%g,%g)", d->beta1, d->beta2);
    if (d->momentum > 0) k += snprintf(out + k, n - k, " momentum=%g", d->momentum);
    if (d->nesterov) k += snprintf(out + k, n - k, " nesterov=1");
    if (d->eps > 0) k += snprintf(out + k, n - k, " eps=%g", d->eps);
    if (d->eps2 > 0) k += snprintf(out + k, n - k, " eps2=%g", d->eps2);
    if (d->weight_decay > 0) k += snprintf(out + k, n - k, " wd=%g", d->weight_decay);
    if (d->rho > 0) k += snprintf(out + k, n - k, " rho=%g", d->rho);
    if (d->qblock > 0) k += snprintf(out + k, n - k, " block=%d", d->qblock);
    if (d->hess_interval > 0) k += snprintf(out + k, n - k, " k=%d", d->hess_interval);
    if (d->rank > 0) k += snprintf(out + k, n - k, " rank=%d gap=%d scale=%g", d->rank, d->update_proj_gap, d->galore_scale);
    if (d->aux_lr > 0) k += snprintf(out + k, n - k, " aux_lr=%g", d->aux_lr);
}

void run_list_optimizers(int (*has_kernel)(const Optimizer*)) {
    // state bytes/param on the d12 shapes (GPT-2 124M) with each optimizer's defaults
    GPT2Config cfg = parse_model("d12");
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    if (has_kernel) printf("%-17s %-12s %-5s %-44s %s\n", "name", "B/param(d12)", "cuda", "defaults", "description [paper]");
    else printf("%-17s %-12s %-44s %s\n", "name", "B/param(d12)", "defaults", "description [paper]");
    for (int i = 0; i < NUM_OPTIMIZERS; i++) {
        const Optimizer* o = OPTIMIZERS[i];
        double bpp = (double)optimizer_layout_bytes(&ml, o, &o->defaults) / ml.num_params;
        char def[200];
        char al[160], also[180] = ""; // HuggingFace names that -opt also takes, at the end of the line
        format_defaults(o, def, sizeof(def));
        if (optim_aliases(o, al, sizeof(al))) snprintf(also, sizeof(also), " (also -opt %s)", al);
        if (has_kernel) printf("%-17s %-12.4f %-5s %-44s %s [%s]%s\n", o->name, bpp, has_kernel(o) ? "yes" : "no", def, o->description, o->paper, also);
        else printf("%-17s %-12.4f %-44s %s [%s]%s\n", o->name, bpp, def, o->description, o->paper, also);
    }
    model_layout_free(&ml);
}

// ------------------------------------------------------------------------------------------------
// A checkpoint carries its run: the model shape, precision and optimizer in its header, every other
// flag a bit-exact resume needs in its "run flags" blob (the second blob, after the weights: text,
// a first line naming its version, then one "-flag value" a line, NUL-padded to RUN_FLAGS_BYTES). -y 1 takes them as its defaults; -sample/-eval/-export/-init take the shape.

#define RUN_FLAGS_BLOB "run flags"
#define RUN_FLAGS_BYTES 4096
#define RUN_FLAGS_MAGIC "gpt2-run-flags v1\n"
static char g_run_flags[RUN_FLAGS_BYTES];        // the blob saved with every checkpoint of this run
static char g_ckpt_flags[RUN_FLAGS_BYTES];       // the blob read from the checkpoint resumed
static char g_model_spec[64];                    // -model taken from a checkpoint ("L:C:H")
static char* g_argv[2 * 64 + 200];               // the command line with the checkpoint's flags first
static char g_adopted[2 * 64][1100];

// The run's flags as the blob records them: resolved values (the optimizer's defaults included, so a
// resume under a later build that changed a default still trains the same run).
static void run_flags_text(const Run* r) {
    const Args* a = &r->a;
    const OptHyper* h = &r->hyper;
    const GPT2Config* c = &r->cfg;
    char* s = g_run_flags;
    size_t n = sizeof(g_run_flags), k = 0;
    memset(g_run_flags, 0, sizeof(g_run_flags));
#define ADD(...) do { if (k < n) k += (size_t)snprintf(s + k, n - k, __VA_ARGS__); } while (0)
    ADD("%s", RUN_FLAGS_MAGIC);
    ADD("-model %d:%d:%d\n-precision %s\n-opt %s\n", c->num_layers, c->channels, c->num_heads,
        a->precision == PRECISION_BF16 ? "bf16" : "fp32", r->opt->name);
    ADD("-i %s\n", a->train_path);
    if (a->val_path) ADD("-j %s\n", a->val_path);
    ADD("-b %d\n-t %d\n-seed %llu\n-sr %d\n", a->B * r->world, a->T, (unsigned long long)a->seed, a->sr);
    if (a->total_batch != a->B * a->T * r->world) ADD("-d %d\n", a->total_batch); // else the default, -b x -t
    ADD("-x %d\n-u %d\n-q %.9g\n-g %.9g\n", a->steps, a->warmup, a->final_lr_frac, a->grad_clip);
    if (!isnan(a->lr)) ADD("-l %.17g\n", a->lr);  // as given: the optimizer's default otherwise (the header's run_lr too)
    if (!isnan(a->beta1) || r->opt->defaults.beta1 != 0.0) ADD("-beta1 %.17g\n", h->beta1); // -beta1 turns Adafactor's on
    ADD("-beta2 %.17g\n-beta3 %.17g\n-eps %.17g\n-eps2 %.17g\n-c %.17g\n-momentum %.17g\n-rho %.17g\n-nesterov %d\n",
        h->beta2, h->beta3, h->eps, h->eps2, h->weight_decay, h->momentum, h->rho, h->nesterov ? 1 : 0);
    if (h->qblock > 0) ADD("-qblock %d\n", h->qblock);
    if (h->hess_interval > 0) ADD("-k %d\n", h->hess_interval);
    if (h->rank > 0) ADD("-rank %d\n", h->rank);
    if (h->update_proj_gap > 0) ADD("-update-proj-gap %d\n", h->update_proj_gap);
    ADD("-galore-scale %.17g\n-aux-lr %.17g\n", h->galore_scale, h->aux_lr);
#undef ADD
    CHECK(k < n); // paths are at most ~1000 characters each (cli.c)
}

// The run flags blob, second in the file, after the weights (only in the file: the trainer's ops never
// see it). Returns the new count; without_run_flags undoes it for the trainer's release.
static int with_run_flags(CkptBlob* blobs, int nb, char* text) {
    CHECK(nb >= 1 && nb < CKPT_MAX_BLOBS);
    memmove(blobs + 2, blobs + 1, (size_t)(nb - 1) * sizeof(CkptBlob));
    blobs[1] = (CkptBlob){ RUN_FLAGS_BLOB, text, RUN_FLAGS_BYTES };
    return nb + 1;
}

static void without_run_flags(CkptBlob* blobs, int nb) { memmove(blobs + 1, blobs + 2, (size_t)(nb - 1) * sizeof(CkptBlob)); }

// Two values of one flag: the same number, the same file, or the same text.
static int same_value(const char* flag, const char* x, const char* y) {
    char* e1; char* e2;
    double u = strtod(x, &e1), v = strtod(y, &e2);
    if (*x && *y && !*e1 && !*e2) return u == v;
    if (!strcmp(flag, "-model")) {
        GPT2Config p = parse_model(x), q = parse_model(y);
        return p.num_layers == q.num_layers && p.channels == q.channels && p.num_heads == q.num_heads;
    }
    if (!strcmp(flag, "-i") || !strcmp(flag, "-j")) {
        char rx[PATH_MAX], ry[PATH_MAX];
        if (realpath(x, rx) && realpath(y, ry)) return !strcmp(rx, ry);
    }
    return !strcmp(x, y);
}

static int adopt_argc = 0;
static void adopt(const char* flag, const char* value) {
    CHECK(adopt_argc + 2 <= (int)(sizeof(g_adopted) / sizeof(g_adopted[0])));
    snprintf(g_adopted[adopt_argc++], sizeof(g_adopted[0]), "%.60s", flag);
    snprintf(g_adopted[adopt_argc++], sizeof(g_adopted[0]), "%.1099s", value);
}

// What a flag given on resume that differs from the checkpoint's does: 'n' applied with a note, 'r'
// refused, 0 left to run_check_resume (-b -t -d -seed -sr -l -model -precision -opt: its messages).
static char resume_policy(const char* flag) {
    static const char* refused[] = { "-qblock", "-rank", "-i" };
    static const char* checked[] = { "-b", "-t", "-d", "-seed", "-sr", "-l", "-model", "-precision", "-opt" };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) if (!strcmp(flag, refused[i])) return 'r';
    for (size_t i = 0; i < sizeof(checked) / sizeof(checked[0]); i++) if (!strcmp(flag, checked[i])) return 0;
    return 'n';
}

// The checkpoint a run reads before its model exists: -y 1's, or the weights of -init / -sample /
// -eval / -export. Its shape (and for -y 1 its flags) become the defaults of the command line, and
// parse_args reads the two together (the command line last, so what it gives wins); what differs is
// noted or refused here and in run_check_resume.
static void adopt_checkpoint(Run* r, int argc, char** argv) {
    Args* a = &r->a;
    int use = a->sample_only || a->eval_path || a->export_path;
    char path[1100] = "", dir_ckpt[1100] = "", warn[2048], err[1024];
    if (a->out_dir) snprintf(dir_ckpt, sizeof(dir_ckpt), "%s/checkpoint.bin", a->out_dir);
    if (a->resume) {
        if (ckpt_choose(dir_ckpt, path, sizeof(path), warn, sizeof(warn), err, sizeof(err)) != 0) return; // resume() says why
    } else if (a->init_path) snprintf(path, sizeof(path), "%s", a->init_path);
    else if (use && dir_ckpt[0] && file_exists(dir_ckpt)) snprintf(path, sizeof(path), "%s", dir_ckpt);
    if (!path[0]) return;
    adopt_argc = 0;
    char x_note[1400] = "";
    CkptHeader h;
    int32_t llmc[256];
    FILE* f = fopen(path, "rb");
    int is_llmc = f && fread(llmc, sizeof(llmc), 1, f) == 1 && llmc[0] == 20240326;
    if (f) fclose(f);
    if (is_llmc) snprintf(g_model_spec, sizeof(g_model_spec), "%d:%d:%d", llmc[4], llmc[6], llmc[5]);
    else if (ckpt_read_header(path, &h, err, sizeof(err)) == 0)
        snprintf(g_model_spec, sizeof(g_model_spec), "%d:%d:%d", h.num_layers, h.channels, h.num_heads);
    else return; // load_weights / resume name the problem
    if (!arg_given(a, "-model")) adopt("-model", g_model_spec);
    if (!is_llmc && (a->resume || use) && !arg_given(a, "-precision")) adopt("-precision", h.precision ? "bf16" : "fp32");
    if (a->resume) {
        if (ckpt_load_blob(path, RUN_FLAGS_BLOB, g_ckpt_flags, sizeof(g_ckpt_flags), err, sizeof(err)) != 0 ||
            strncmp(g_ckpt_flags, RUN_FLAGS_MAGIC, strlen(RUN_FLAGS_MAGIC)) != 0) {
            // an older checkpoint: its header has the optimizer, -x and (version 2) -b -t -d -sr -seed -l
            char v[64];
            if (!arg_given(a, "-opt")) adopt("-opt", h.optimizer);
            snprintf(v, sizeof(v), "%d", h.total_steps);
            if (!arg_given(a, "-x") && h.total_steps > h.step) adopt("-x", v);
            if (!arg_given(a, "-seed")) { snprintf(v, sizeof(v), "%llu", (unsigned long long)h.seed); adopt("-seed", v); }
            if (h.run_B > 0) {
                if (!arg_given(a, "-b") && h.run_B % dist_world() == 0) { snprintf(v, sizeof(v), "%d", h.run_B / dist_world()); adopt("-b", v); }
                if (!arg_given(a, "-t")) { snprintf(v, sizeof(v), "%d", h.run_T); adopt("-t", v); }
                if (!arg_given(a, "-d")) { snprintf(v, sizeof(v), "%d", h.run_total_batch); adopt("-d", v); }
                if (!arg_given(a, "-sr")) { snprintf(v, sizeof(v), "%d", h.run_sr); adopt("-sr", v); }
                if (!arg_given(a, "-l") && !isnan(h.run_lr)) { snprintf(v, sizeof(v), "%.17g", h.run_lr); adopt("-l", v); }
            }
            fprintf(stderr, "note: %s records no run flags (written before checkpoints carried them): the model, precision, "
                    "optimizer, -x and -seed%s come from it; -u -q -g, the optimizer constants and -i from this command line\n",
                    path, h.run_B > 0 ? ", -b -t -d -sr -l" : "");
        } else {
            g_ckpt_flags[sizeof(g_ckpt_flags) - 1] = 0;
            for (char* line = g_ckpt_flags + strlen(RUN_FLAGS_MAGIC); *line;) {
                char* end = strchr(line, '\n');
                if (!end) break;
                *end = 0;
                char* sp = strchr(line, ' ');
                if (sp) {
                    *sp = 0;
                    const char *flag = line, *old = sp + 1, *now = arg_given(a, flag);
                    char v[32];
                    if (!strcmp(flag, "-b")) { // recorded as the global micro-batch: -b x ranks
                        int gb = atoi(old);
                        if (gb % dist_world() == 0) snprintf(v, sizeof(v), "%d", gb / dist_world()), old = v;
                    }
                    if (!now) adopt(flag, old);
                    else if (!same_value(flag, old, now)) {
                        char p = resume_policy(flag);
                        if (p == 'r' && !strcmp(flag, "-i") && a->new_data)
                            fprintf(stderr, "note: -i %s replaces the checkpoint's -i %s (-new-data 1): training goes on from "
                                    "step %d on the new data, from its first token\n", now, old, h.step + 1);
                        else if (p == 'r' && !strcmp(flag, "-i"))
                            user_error("cannot resume: %s trained on -i %s, this run gives -i %s; drop -i to resume, or pass "
                                       "-new-data 1 to go on with the new data", path, old, now);
                        else if (p == 'r')
                            user_error("cannot resume: %s was written with %s %s, this run gives %s %s, which changes the layout "
                                       "of the optimizer state; drop %s to resume", path, flag, old, flag, now, flag);
                        else if (p && !strcmp(flag, "-x"))
                            snprintf(x_note, sizeof(x_note), "note: -x %s changes the schedule of %s's run (-x %s): from step %d "
                                     "the lr follows the cosine to step %s", now, path, old, h.step + 1, now);
                        else if (p)
                            fprintf(stderr, "note: %s %s replaces the checkpoint's %s %s from step %d on; the resumed run is not the "
                                    "uninterrupted one\n", flag, now, flag, old, h.step + 1);
                    }
                }
                line = end + 1;
            }
        }
    }
    if (!adopt_argc) return;
    // the checkpoint's flags first, then the command line: parse_args keeps the last value of a flag
    int n = 0;
    g_argv[n++] = argv[0];
    for (int i = 0; i < adopt_argc; i++) g_argv[n++] = g_adopted[i];
    CHECK(n + argc - 1 < (int)(sizeof(g_argv) / sizeof(g_argv[0])));
    for (int i = 1; i < argc; i++) g_argv[n++] = argv[i];
    parse_args(a, n, g_argv);
    a->argc = argc; a->argv = argv; // "given" still means on the command line
    if (x_note[0]) fprintf(stderr, "%s (warmup %d steps%s); the run is not the uninterrupted one\n", x_note, a->warmup,
                           arg_given(a, "-u") ? ", as -u gives" : ", as recorded");
}

// Every rank must train the same run: the flags (argv after the program name) hashed and compared.
static void check_same_flags(int argc, char** argv) {
    uint64_t h = 1469598103934665603ull; // FNV-1a over the arguments and their boundaries
    for (int i = 1; i < argc; i++) {
        for (const char* c = argv[i]; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        h = (h ^ 0xffu) * 1099511628211ull;
    }
    uint64_t h0 = h;
    dist_bcast(&h0, sizeof(h0), 0);
    // the rank that differs says so and ends every rank (user_error aborts the whole job under MPI)
    if (h0 != h) user_error("rank %d was started with other flags than rank 0: every rank must get the same flags", dist_rank());
}

int run_setup(Run* r, int argc, char** argv, const char* trainer, int (*has_kernel)(const Optimizer*)) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(r, 0, sizeof(*r));
    r->trainer = trainer;
    dist_init(&argc, &argv);
    r->rank = dist_rank();
    r->world = dist_world();
    if (r->world > 1) {
        // one copy of every line: ranks other than 0 keep stderr (their errors) but not stdout
        if (r->rank != 0 && !freopen("/dev/null", "w", stdout)) user_error("cannot silence stdout on rank %d", r->rank);
        check_same_flags(argc, argv);
    }
    if (advise_requested(argc, argv)) return advise_main(argc, argv); // the decision guide: no training
    parse_args(&r->a, argc, argv);
    dist_set_timeout(r->a.dist_timeout);
    if (r->a.plan_world && r->world > 1)
        user_error("-plan-world plans a world of ranks without MPI: run it as one process, not under mpirun");
    if (!strcmp(r->a.opt_name, "list")) { run_list_optimizers(has_kernel); dist_finalize(); return 0; }
    adopt_checkpoint(r, argc, argv);
    if (r->a.dist_force && !strcmp(trainer, "cpu"))
        user_error("-dist-force 1 runs the CUDA trainer's NCCL path at one rank; the CPU trainer's MPI path runs under "
                   "mpirun -np N ./train_cpu (N >= 2)");
    if (!strcmp(trainer, "cpu") && (r->a.attn > ATTN_REF || r->a.prof))
        fprintf(stderr, "note: %s is the CUDA trainer's; the CPU trainer has one attention (fp32) and times phases only\n",
                r->a.prof ? "-prof" : "-attn");
    r->opt = optim_find(r->a.opt_name);
    if (!r->opt) {
        fprintf(stderr, "error: unknown optimizer '%s'; valid names: ", r->a.opt_name);
        optim_print_names(stderr);
        fprintf(stderr, " (or -opt list)\n");
        return EXIT_USER;
    }
    if (has_kernel && !has_kernel(r->opt)) {
        fprintf(stderr, "error: %s has no CUDA kernels yet; use ./train_cpu (`make train GPU=0`), or one of:", r->opt->name);
        for (int i = 0; i < NUM_OPTIMIZERS; i++) if (has_kernel(OPTIMIZERS[i])) fprintf(stderr, " %s", OPTIMIZERS[i]->name);
        fprintf(stderr, "\n");
        return EXIT_USER;
    }
    r->cfg = parse_model(r->a.model);
    r->accum = run_check_args(&r->a, &r->cfg, r->opt, &r->hyper);
    // too little data is named as such before the model's memory is planned
    char e[1024];
    size_t tl = strlen(r->a.train_path);
    if (!r->a.memory_only && !(tl > 4 && !strcmp(r->a.train_path + tl - 4, ".txt")) && file_exists(r->a.train_path) &&
        dataloader_check(r->a.train_path, r->a.B, r->a.T, NULL, e, sizeof(e)) != 0) user_error("train data: %s", e);
    ledger_init(&r->led, r->a.memory_only);
    return -1;
}

void run_set_model(Run* r, const ModelLayout* layout, const char* precision_note, const char* extra) {
    r->layout = layout;
    r->state_bytes = optimizer_layout_bytes(layout, r->opt, &r->hyper);
    run_print_model(r, precision_note, extra);
}

void run_print_model(const Run* r, const char* precision_note, const char* extra) {
    const GPT2Config* c = &r->cfg;
    size_t P = r->layout->num_params;
    printf("model %s: L=%d C=%d heads=%d vocab=%d (padded %d), %zu parameters (%.2fM)\n", r->a.model, c->num_layers,
           c->channels, c->num_heads, c->vocab_size, c->padded_vocab_size, P, P / 1e6);
    printf("optimizer %s: lr %g, state %zu bytes (%.4f B/param); precision %s%s%s\n", r->opt->name, r->hyper.lr,
           r->state_bytes, (double)r->state_bytes / P, precision_note, r->a.sr ? ", stochastic rounding" : "", extra);
}

static const char* shards_label(const Run* r) { return strcmp(r->trainer, "gpu") ? "token shards (train+val)" : "token shards (host)"; }

int run_memory_only(Run* r, const char* where) {
    if (!r->a.memory_only) return 0;
    size_t P = r->layout->num_params;
    // the token shards a real run would hold, when the data is there to measure (the ledger is exact)
    RunData d;
    memset(&d, 0, sizeof(d));
    const char* shard_note = "";
    if (!strcmp(r->a.train_path, "data/gcide/gcide_train.bin") && !file_exists(r->a.train_path))
        shard_note = "(the token shards are not counted: the default dataset is missing; `make data` adds them)\n";
    else {
        run_open_data(&d, &r->a, r->cfg.vocab_size);
        ledger_record(&r->led, MEM_DATA, shards_label(r), dataloader_bytes(&d.train) + dataloader_bytes(&d.val), NULL);
        run_close_data(&d);
    }
    printf("memory ledger for B=%d T=%d%s (nothing allocated):\n", r->a.B, r->a.T, where);
    ledger_print(&r->led, stdout, P);
    fputs(shard_note, stdout);
    printf("summary: opt=%s params=%zu state_bytes=%zu state_bytes_per_param=%.4f ledger_mib=%.2f\n", r->opt->name,
           P, r->state_bytes, (double)r->state_bytes / P, r->led.current / 1048576.0);
    dist_finalize();
    return 1;
}

// Every checkpoint blob of this run as host memory: the trainer's blobs, staged to the host if needed.
static int gather_blobs(Run* r, CkptBlob* blobs) {
    int n = r->ops.ckpt_blobs(r->ops.model, blobs);
    CHECK(n > 0 && n <= CKPT_MAX_BLOBS);
    return n;
}

static void release_blobs(Run* r, CkptBlob* blobs, int n) {
    if (r->ops.ckpt_release) r->ops.ckpt_release(r->ops.model, blobs, n);
}

// Before a resume (rank 0): the checkpoint and DIR/log.jsonl must be of one run (their run ids), and a
// run on another number of ranks than the one that wrote the checkpoint is said not to be bit-exact.
// The log's config record gives its run id and world; its resume records up to the checkpoint's step
// give the world of each restart. Older logs and checkpoints without ids are not compared.
static void check_log_matches(Run* r, const CkptHeader* h, const char* chosen) {
    char path[1100], line[16384];
    snprintf(path, sizeof(path), "%s/log.jsonl", r->a.out_dir);
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); // a FIFO there must not block
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); user_error("cannot resume: %s is not a regular file", path); }
    fcntl(fd, F_SETFL, 0);
    FILE* f = fdopen(fd, "r");
    if (!f) { close(fd); return; }
    int have_id = 0, world = 0;
    uint32_t id = 0;
    while (fgets(line, sizeof(line), f)) {
        const char* p;
        int config = strstr(line, "\"type\":\"config\"") != NULL;
        if (config && (p = strstr(line, "\"run_id\":\"")) && !have_id) { id = (uint32_t)strtoul(p + 10, NULL, 16); have_id = 1; }
        if (!config && !strstr(line, "\"type\":\"resume\"")) continue;
        p = strstr(line, "\"step\":");
        if (p && strtol(p + 7, NULL, 10) > h->step) continue;
        if ((p = strstr(line, "\"world\":"))) world = (int)strtol(p + 8, NULL, 10);
    }
    fclose(f);
    if (have_id && h->run_id && id != h->run_id)
        user_error("cannot resume: %s belongs to run %08x, but %s belongs to run %08x (a fresh run that ended before its first "
                   "checkpoint?): they are not one run; start afresh with -overwrite 1, or move one of them away",
                   chosen, h->run_id, path, id);
    if (world > 0 && world != r->world)
        fprintf(stderr, "warning: %s was written by a run on %d rank%s, this run has %d: the resumed run is not bit-exact "
                "(the ranks' gradient sums are added in another order)\n", chosen, world, world > 1 ? "s" : "", r->world);
}

static void resume(Run* r) {
    char err[1024];
    CkptHeader h, mine;
    CkptBlob blobs[CKPT_MAX_BLOBS];
    // the newest checkpoint that proves itself (checkpoint.bin, else checkpoint.prev.bin with a warning)
    char chosen[1100], warn[2048];
    if (ckpt_choose(r->ckpt_path, chosen, sizeof(chosen), warn, sizeof(warn), err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
    if (warn[0]) fprintf(stderr, "warning: %s\n", warn);
    if (ckpt_read_header(chosen, &h, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
    if (r->rank == 0) check_log_matches(r, &h, chosen);
    model_checkpoint_header(&mine, r->layout, r->a.precision, r->opt->name);
    run_ckpt_header(&mine, &r->stats, &r->a, 0, 0); // this run's flags, compared with the checkpoint's
    mine.run_B *= r->world; // the global micro-batch: 1 rank of -b 6 resumes 2 ranks of -b 3 and back
    run_check_resume(&h, &mine, chosen, r->a.steps);
    int nb = gather_blobs(r, blobs);
    static char flags[RUN_FLAGS_BYTES]; // the run flags blob, when the checkpoint has one (adopt_checkpoint read it)
    int with = h.nblobs == nb + 1 && nb < CKPT_MAX_BLOBS;
    if (ckpt_load(chosen, &h, blobs, with ? with_run_flags(blobs, nb, flags) : nb, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
    if (with) without_run_flags(blobs, nb);
    if (r->ops.ckpt_from_host) r->ops.ckpt_from_host(r->ops.model, blobs, nb);
    release_blobs(r, blobs, nb);
    r->start_step = h.step;
    g_last_ckpt = h.step;
    if (h.run_id) g_run_id = h.run_id;
    else if (!g_run_id) g_run_id = new_run_id(); // an older checkpoint: this run names itself from now on
    r->stats.skipped_total = h.skipped_steps;
    r->stats.tokens_seen = (long)h.tokens_seen;
    if (!r->a.new_data && dataloader_seek(&r->data.train, h.data_position) != 0)
        user_error("cannot resume: data position in %s is past the end of %s", chosen, r->data.train_path);
    if (r->rank == 0 && logger_cut_back(r->a.out_dir, h.step) != 0)
        user_error("cannot resume: cannot rewrite %s/log.jsonl to step %d: %s", r->a.out_dir, h.step, strerror(errno));
    printf("resumed from %s at step %d\n", chosen, r->start_step);
}

// The model's weights from PATH: a checkpoint of this trainer (any optimizer or precision: its fp32
// weights), or llm.c's GPT-2 file (gpt2_124M.bin: fp32, or gpt2_124M_bf16.bin), whose parameters are
// stored in the same 16-tensor order as ours.
static void load_weights(Run* r, const char* path) {
    char err[1024];
    // the flag the file came from: -init, or (sampling, eval, export) the -o DIR's checkpoint
    const char* fl = r->a.init_path && !strcmp(path, r->a.init_path) ? "-init" : "checkpoint";
    size_t P = r->layout->num_params;
    float* w = (float*)xmalloc(P * sizeof(float));
    int32_t hdr[256];
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) user_error("%s %s: not a readable file", fl, path);
    FILE* f = fopen(path, "rb");
    if (!f) user_error("%s %s: %s", fl, path, strerror(errno));
    int is_llmc = fread(hdr, sizeof(hdr), 1, f) == 1 && hdr[0] == 20240326;
    if (is_llmc) {
        // llm.c: 256 int32 (magic, version 3 fp32 / 5 bf16, maxT, V, L, NH, C, Vp), then the parameters
        const GPT2Config* c = &r->cfg;
        if (hdr[1] != 3 && hdr[1] != 5) user_error("%s %s: llm.c checkpoint version %d; this trainer reads 3 (fp32) and 5 (bf16)", fl, path, hdr[1]);
        if (hdr[2] != c->max_seq_len || hdr[3] != c->vocab_size || hdr[4] != c->num_layers || hdr[5] != c->num_heads ||
            hdr[6] != c->channels || hdr[7] != c->padded_vocab_size)
            user_error("%s %s holds an llm.c model L=%d C=%d heads=%d (T=%d, V=%d, Vp=%d); this run is -model %d:%d:%d: use the same shape",
                       fl, path, hdr[4], hdr[6], hdr[5], hdr[2], hdr[3], hdr[7], c->num_layers, c->channels, c->num_heads);
        size_t elt = hdr[1] == 3 ? 4 : 2;
        if ((uint64_t)st.st_size != sizeof(hdr) + P * elt)
            user_error("%s %s: %lld bytes, an llm.c file of this shape has %zu", fl, path, (long long)st.st_size, sizeof(hdr) + P * elt);
        int ok = 1;
        if (elt == 4) ok = fread(w, 4, P, f) == P;
        else {
            uint16_t* b = (uint16_t*)xmalloc(P * 2);
            ok = fread(b, 2, P, f) == P;
            for (size_t i = 0; ok && i < P; i++) w[i] = bf16_to_f32(b[i]);
            free(b);
        }
        if (!ok) user_error("%s %s is truncated", fl, path);
    }
    fclose(f);
    if (!is_llmc) {
        CkptHeader h, mine;
        if (ckpt_read_header(path, &h, err, sizeof(err)) != 0) user_error("%s: %s", fl, err);
        model_checkpoint_header(&mine, r->layout, r->a.precision, r->opt->name);
        if (h.num_layers != mine.num_layers || h.channels != mine.channels || h.num_heads != mine.num_heads ||
            h.vocab_size != mine.vocab_size || h.max_seq_len != mine.max_seq_len)
            user_error("%s %s holds a model L=%d C=%d heads=%d; this run is L=%d C=%d heads=%d: use the same -model",
                       fl, path, h.num_layers, h.channels, h.num_heads, mine.num_layers, mine.channels, mine.num_heads);
        if (ckpt_load_blob(path, "weights fp32", w, P * sizeof(float), err, sizeof(err)) != 0) user_error("%s: %s", fl, err);
    }
    for (size_t i = 0; i < P; i++)
        if (!isfinite(w[i])) user_error("%s %s: weight %zu is not finite; this file cannot start a run", fl, path, i);
    r->ops.set_weights(r->ops.model, w);
    free(w);
    printf("weights from %s (%s; fresh optimizer state)\n", path, is_llmc ? "llm.c format" : "checkpoint");
}

// Never writes non-finite weights: returns RUN_EXIT_NONFINITE instead, with the last checkpoint intact.
static int save_checkpoint(Run* r, int step) {
    char err[1024];
    CkptHeader h;
    CkptBlob blobs[CKPT_MAX_BLOBS];
    model_checkpoint_header(&h, r->layout, r->a.precision, r->opt->name);
    run_ckpt_header(&h, &r->stats, &r->a, step, dataloader_position(&r->data.train));
    h.run_B *= r->world; // recorded as the global micro-batch (-b x ranks)
    h.run_id = g_run_id;
    int nb = gather_blobs(r, blobs);
    if (r->ops.ckpt_to_host) r->ops.ckpt_to_host(r->ops.model, blobs, nb);
    const float* w = (const float*)blobs[0].data; // "weights fp32"
    size_t bad = 0;
    for (size_t i = 0; i < blobs[0].bytes / sizeof(float); i++) bad += !isfinite(w[i]);
    int rc = RUN_GO;
    if (bad) {
        fprintf(stderr, "error: %zu weights are not finite after step %d; no checkpoint written (%s). "
                "Try a lower learning rate (-l) or gradient clipping (-g 1).\n", bad, step,
                file_exists(r->ckpt_path) ? "the last checkpoint is intact" : "there is no earlier checkpoint");
        logger_write(&r->lg, "{\"type\":\"failed\",\"step\":%d,\"why\":\"non-finite weights\"}", step);
        rc = RUN_EXIT_NONFINITE;
    } else if (run_dir_gone(r, step)) { // again right before the save: val and sample took time since
        rc = RUN_EXIT_WRITE;
    } else {
        run_flags_text(r);
        int saved = ckpt_save(r->ckpt_path, &h, blobs, with_run_flags(blobs, nb, g_run_flags), err, sizeof(err));
        without_run_flags(blobs, nb);
        if (saved != 0) {
            fprintf(stderr, "error: %s; stopping so that no work goes unsaved unnoticed\n", err);
            rc = RUN_EXIT_WRITE;
        } else {
            printf("checkpoint: %s (step %d)\n", r->ckpt_path, step);
            g_last_ckpt = step;
        }
    }
    release_blobs(r, blobs, nb);
    return rc;
}

// -eval PATH: loss and perplexity of the model on PATH's tokens (shards, or a .txt tokenized whole).
static void eval_only(Run* r) {
    const Args* a = &r->a;
    char err[1024], path[1024], none[1024];
    snprintf(path, sizeof(path), "%s", a->eval_path);
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".txt")) {
        if (!r->data.tok) user_error("-eval %s is a text file, which needs the GPT-2 vocabulary; run `make data` first", path);
        if (data_text_to_shards(r->data.tok, a->eval_path, "data/cache", 0.0, path, none, sizeof(path), err, sizeof(err)) != 0)
            user_error("-eval: %s", err);
    }
    DataLoader dl;
    if (dataloader_open(&dl, path, a->B, a->T, r->cfg.vocab_size, err, sizeof(err)) != 0) user_error("-eval data: %s", err);
    uint64_t avail = (dataloader_num_tokens(&dl) - 1) / ((uint64_t)a->B * a->T);
    int batches = (uint64_t)a->val_batches < avail ? a->val_batches : (int)avail;
    float loss = run_evaluate(&r->ops, &dl, batches, a->B, a->T);
    printf("eval: loss %.6f perplexity %.4f (%d batches of %dx%d tokens from %s)\n", loss, exp(loss), batches, a->B, a->T, a->eval_path);
    dataloader_free(&dl);
}

int run_start(Run* r, const ModelOps* ops) {
    const Args* a = &r->a;
    r->ops = *ops;
    memset(&r->stats, 0, sizeof(r->stats));
    r->stats.last_val = NAN;
    open_run_dir(r);
    run_open_data(&r->data, a, r->cfg.vocab_size);
    uint64_t val_avail = dataloader_batches(&r->data.val);
    if (!a->val_batches_given && (uint64_t)a->val_batches > val_avail && val_avail > 0) {
        printf("note: the val data holds %llu batches of %dx%d tokens; val loss uses them all (-m %llu)\n",
               (unsigned long long)val_avail, a->B, a->T, (unsigned long long)val_avail);
        r->a.val_batches = (int)val_avail;
    }
    if (!a->eval_path && !a->sample_only) check_val_batches(a, val_avail, r->data.val_path);
    ledger_record(&r->led, MEM_DATA, shards_label(r), dataloader_bytes(&r->data.train) + dataloader_bytes(&r->data.val), NULL);
    r->ops.init(r->ops.model, a->seed);
    if (a->sample_only || a->eval_path || a->export_path) {
        // use a checkpoint: -init PATH, else -o DIR's checkpoint, else (said so) the untrained model
        const char* from = a->init_path ? a->init_path : (r->ckpt_path[0] && file_exists(r->ckpt_path)) ? r->ckpt_path : NULL;
        if (from) load_weights(r, from);
        else printf("no -init PATH and no checkpoint in -o DIR: using the untrained model (seed %llu)\n", (unsigned long long)a->seed);
        if (a->export_path && !from) user_error("-export: -o %s holds no checkpoint.bin; give the weights with -init PATH", a->out_dir);
        if (a->export_path) { // the weights as the checkpoint would save them (CUDA: copied to the host)
            CkptBlob b[CKPT_MAX_BLOBS]; int nb = gather_blobs(r, b);
            if (r->ops.ckpt_to_host) r->ops.ckpt_to_host(r->ops.model, b, nb);
            export_blobs(a->export_path, r->layout, b, nb); release_blobs(r, b, nb); }
        if (a->eval_path) eval_only(r);
        if (a->sample_only) {
            SampleOpts so = { a->prompt, a->temperature, a->top_k };
            run_generate(&r->ops, r->data.tok, r->cfg.vocab_size, a->sample_len > 0 ? a->sample_len : 48, a->seed, -1, a->T, &so, stdout);
        }
        return 1;
    }
    if (a->resume) resume(r);
    else if (a->init_path) load_weights(r, a->init_path);
    if (r->rank == 0 && logger_open(&r->lg, a->out_dir, a->resume) != 0) user_error("cannot write %s/log.jsonl: %s", a->out_dir, strerror(errno));
    if (!a->resume) write_config_record(r);
    else logger_write(&r->lg, "{\"type\":\"resume\",\"step\":%d,\"world\":%d}", r->start_step, r->world);
    printf("batch: B=%d T=%d, %d tokens/step (%d micro-step%s), %d steps, warmup %d, final lr x%g, clip %g\n", a->B, a->T,
           a->total_batch, r->accum, r->accum > 1 ? "s" : "", a->steps, a->warmup, a->final_lr_frac, a->grad_clip);
    if (r->world > 1) printf("data parallel: %d ranks (%s), -b %d per rank\n", r->world, dist_backend(), a->B);
    printf("memory ledger:\n");
    ledger_print(&r->led, stdout, r->layout->num_params);
    fflush(stdout);
    catch_signals();
    return 0;
}

void run_next_batch(Run* r, int* inputs, int* targets) {
    const Args* a = &r->a;
    if (r->world == 1) { dataloader_next(&r->data.train, inputs, targets); return; }
    size_t BT = (size_t)a->B * a->T, G = BT * r->world;
    if (!r->batch_buf) r->batch_buf = (int*)xmalloc(2 * G * sizeof(int));
    dataloader_next(&r->data.train, r->batch_buf, r->batch_buf + G);
    memcpy(inputs, r->batch_buf + r->rank * BT, BT * sizeof(int));
    memcpy(targets, r->batch_buf + G + r->rank * BT, BT * sizeof(int));
}

void run_hessian_stream(const Run* r, int step, Rng* rng) {
    rng_seed(rng, r->a.seed * 0x2545F4914F6CDD1Dull + (uint64_t)step + 17);
}

void run_hessian_draws(const Run* r, Rng* rng, float* u) {
    const size_t BT = (size_t)r->a.B * r->a.T;
    for (size_t i = 0; i < (size_t)r->rank * BT; i++) rng_f32(rng);
    for (size_t i = 0; i < BT; i++) u[i] = rng_f32(rng);
    for (size_t i = 0; i < (size_t)(r->world - 1 - r->rank) * BT; i++) rng_f32(rng);
}

float run_lr_scale(const Run* r, int step) { return lr_multiplier(step, r->a.steps, r->a.warmup, r->a.final_lr_frac); }

int run_opt_step(const Run* r, int step) { return step - r->stats.skipped_total; }

static int run_after_step_rank0(Run* r, int step, RunDue due, int sig);

int run_after_step(Run* r, int step, float loss, float norm, float lr, double seconds, int skipped, const char* extra) {
    const Args* a = &r->a;
    // Every rank computes the same loss, norm and skip decision (the gradients are averaged before the
    // norm), so record_step agrees on every rank; what only rank 0 decides (a failed write) and a
    // signal that reached one rank only are agreed below, so that every rank stops at the same step.
    int rc = record_step(r, step, loss, norm, lr, seconds, skipped, extra);
    if (rc) return rc;
    RunDue due = run_due(a, step, r->ckpt_path);
    int sig = dist_max_int(g_signal);
    if (r->rank != 0) {
        // a checkpoint may need every rank's part (-zero 1: the state shards): the same collective as
        // rank 0's save_checkpoint, whose writing is rank 0's alone
        if (due.checkpoint || (sig && r->ckpt_path[0])) {
            CkptBlob blobs[CKPT_MAX_BLOBS];
            int nb = gather_blobs(r, blobs);
            if (r->ops.ckpt_to_host) r->ops.ckpt_to_host(r->ops.model, blobs, nb);
            release_blobs(r, blobs, nb);
        }
        int rc0 = 0;
        dist_bcast(&rc0, sizeof(rc0), 0);
        if (rc0) return rc0;
        return step == a->stop_at ? RUN_STOP : RUN_GO;
    }
    rc = run_after_step_rank0(r, step, due, sig);
    int rcb = rc == RUN_STOP ? 0 : rc;
    dist_bcast(&rcb, sizeof(rcb), 0);
    return rc;
}

// What only rank 0 does after a step: val loss, sample, checkpoint, log checks; its answer goes to
// every rank.
static int run_after_step_rank0(Run* r, int step, RunDue due, int sig) {
    const Args* a = &r->a;
    int rc;
    if (run_dir_gone(r, step)) return RUN_EXIT_WRITE;
    if (due.val) record_val(r, step, run_evaluate(&r->ops, &r->data.val, a->val_batches, a->B, a->T));
    if (due.sample) run_sample(&r->ops, r->data.tok, r->cfg.vocab_size, a->sample_len, a->seed, step, a->T, stdout);
    if ((due.checkpoint || (sig && r->ckpt_path[0])) && (rc = save_checkpoint(r, step))) return rc;
    if (r->lg.failed) {
        char note[128];
        saved_note(step, note, sizeof(note));
        fprintf(stderr, "error: writing %s/log.jsonl failed (disk full?); stopping after step %d: %s; the log ends with the last whole record\n",
                a->out_dir, step, note);
        return RUN_EXIT_WRITE;
    }
    if (sig) {
        logger_write(&r->lg, "{\"type\":\"interrupted\",\"step\":%d,\"signal\":\"%s\"}", step, signal_name(sig));
        if (r->ckpt_path[0]) printf("interrupted by %s after step %d; checkpoint %s; resume with the same flags and -y 1\n",
                                    signal_name(sig), step, r->ckpt_path);
        else printf("interrupted by %s after step %d; nothing saved (no -o DIR)\n", signal_name(sig), step);
        return RUN_EXIT_INTERRUPTED;
    }
    if (step == a->stop_at) { printf("stopping after step %d as asked (-stop)\n", step); return RUN_STOP; }
    return RUN_GO;
}

int run_finish(Run* r, int rc, const char* memory_lines, double peak_mib, const char* extra_json) {
    // the summary's peak is the largest rank's (each rank's ledger holds its own share)
    if (r->world > 1) {
        int kib = dist_max_int((int)(peak_mib * 1024.0 + 0.5));
        peak_mib = kib / 1024.0;
    }
    if ((rc == RUN_GO || rc == RUN_STOP) && r->stats.last_step > 0 && r->stats.nrecent == 0) {
        // not one step applied: nothing trained, and no train loss to report
        fprintf(stderr, "error: every step this run took (%d to %d) had a non-finite loss, gradient or update and was skipped; "
                "nothing was trained\n", r->start_step + 1, r->stats.last_step);
        logger_write(&r->lg, "{\"type\":\"failed\",\"step\":%d,\"why\":\"every step skipped\"}", r->stats.last_step);
        rc = RUN_EXIT_NONFINITE;
    }
    if ((rc == RUN_GO || rc == RUN_STOP || rc == RUN_EXIT_INTERRUPTED) && r->stats.last_step > 0) {
        fputs(memory_lines, stdout);
        print_summary(r, peak_mib, extra_json);
    }
    logger_close(&r->lg);
    free(r->batch_buf); // the global micro-batch (more than one rank)
    r->batch_buf = NULL;
    run_close_data(&r->data);
    ledger_free_all(&r->led);
    dist_finalize();
    return rc == RUN_STOP ? 0 : rc;
}

float run_evaluate(const ModelOps* ops, DataLoader* dl, int batches, int B, int T) {
    size_t BT = (size_t)B * T;
    int* buf = (int*)xmalloc(2 * BT * sizeof(int));
    dataloader_reset(dl);
    double sum = 0.0;
    for (int i = 0; i < batches; i++) {
        dataloader_next(dl, buf, buf + BT);
        sum += ops->loss(ops->model, buf, buf + BT, B, T);
    }
    free(buf);
    return (float)(sum / batches);
}

// Bytes of the UTF-8 character that starts with lead byte c and whose second byte is c2 (-1 when not
// yet known), or 0 when no valid character starts so (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
static int utf8_len(unsigned char c, int c2) {
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0;
    int n = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c2 < 0) return n;
    if ((c2 & 0xC0) != 0x80) return 0;
    if ((c == 0xE0 && c2 < 0xA0) || (c == 0xED && c2 > 0x9F) || (c == 0xF0 && c2 < 0x90) || (c == 0xF4 && c2 > 0x8F)) return 0;
    return n;
}

size_t utf8_write_whole(FILE* out, unsigned char* buf, size_t n, int final) {
    size_t i = 0;
    while (i < n) {
        int len = utf8_len(buf[i], i + 1 < n ? buf[i + 1] : -1);
        int ok = len > 0;
        for (int k = 1; ok && k < len && i + k < n; k++) ok = (buf[i + k] & 0xC0) == 0x80;
        if (ok && i + len > n) break;          // a valid start, unfinished: wait for more bytes
        if (ok) { fwrite(buf + i, 1, (size_t)len, out); i += (size_t)len; }
        else { fputs("\xEF\xBF\xBD", out); i++; } // U+FFFD for a byte that starts no valid character
    }
    size_t keep = n - i;
    if (final && keep) { fputs("\xEF\xBF\xBD", out); keep = 0; }
    else memmove(buf, buf + i, keep);
    return keep;
}

// Temperature and top-k applied to probabilities p (V) in place: p^(1/temp), then all but the k
// largest set to 0, renormalized. temp 1 and k 0 leave p untouched (training samples stay as they were).
static void shape_probs(float* p, int V, float temp, int k, float* scratch) {
    if (temp != 1.0f) for (int i = 0; i < V; i++) p[i] = powf(p[i], 1.0f / temp);
    if (k > 0 && k < V) {
        // the k-th largest value by selection on a copy; ties at the threshold are all kept
        memcpy(scratch, p, (size_t)V * sizeof(float));
        float thr = 0.0f;
        for (int j = 0; j < k; j++) {
            int best = 0;
            for (int i = 1; i < V; i++) if (scratch[i] > scratch[best]) best = i;
            thr = scratch[best];
            scratch[best] = -1.0f;
        }
        for (int i = 0; i < V; i++) if (p[i] < thr) p[i] = 0.0f;
    }
    if (temp == 1.0f && k <= 0) return;
    double sum = 0.0;
    for (int i = 0; i < V; i++) sum += p[i];
    for (int i = 0; i < V; i++) p[i] = (float)(p[i] / sum);
}

void run_generate(const ModelOps* ops, const Tokenizer* tok, int V, int len, uint64_t seed, int step, int T,
                  const SampleOpts* so, FILE* out) {
    Rng rng;
    rng_seed(&rng, seed * 1000003ull + (uint64_t)(step < 0 ? 0 : step));
    int eot = tok ? tokenizer_eot(tok) : V - 1;
    if (eot < 0 || eot >= V) eot = V - 1;
    // the context: <|endoftext|>, then the prompt's tokens
    size_t np = 0;
    int32_t* ptoks = NULL;
    if (so && so->prompt && so->prompt[0]) {
        if (!tok) user_error("-prompt needs the GPT-2 vocabulary files (run `make data`)");
        ptoks = tokenizer_encode(tok, so->prompt, strlen(so->prompt), &np);
    }
    int n0 = 1 + (int)np;
    int* gen = (int*)xmalloc(sizeof(int) * (size_t)(n0 + len));
    float* probs = (float*)xmalloc(sizeof(float) * (size_t)V);
    float* scratch = (float*)xmalloc(sizeof(float) * (size_t)V);
    gen[0] = eot;
    for (size_t i = 0; i < np; i++) gen[1 + i] = ptoks[i];
    free(ptoks);
    unsigned char pending[64]; // bytes of an unfinished UTF-8 character (a token is at most a few bytes)
    size_t npend = 0;
    if (step >= 0) fprintf(out, "sample (step %d): ", step);
    if (np) fprintf(out, "%s", so->prompt);
    for (int i = n0; i < n0 + len; i++) {
        int start = i > T ? i - T : 0; // slide the context window
        ops->next_token_probs(ops->model, gen + start, i - start, probs);
        if (so) shape_probs(probs, V, so->temperature, so->top_k, scratch);
        int next = sample_index(probs, V, rng_f32(&rng));
        gen[i] = next;
        if (tok) {
            size_t bl = 0;
            const unsigned char* bytes = tokenizer_decode(tok, next, &bl);
            for (size_t k = 0; bytes && k < bl; k++) {
                if (npend == sizeof(pending)) npend = utf8_write_whole(out, pending, npend, 1);
                pending[npend++] = bytes[k];
            }
            npend = utf8_write_whole(out, pending, npend, 0);
        } else {
            fprintf(out, "%d ", next);
        }
    }
    utf8_write_whole(out, pending, npend, 1);
    fprintf(out, "\n");
    free(gen);
    free(probs);
    free(scratch);
}

void run_sample(const ModelOps* ops, const Tokenizer* tok, int V, int len, uint64_t seed, int step, int T, FILE* out) {
    run_generate(ops, tok, V, len, seed, step, T, NULL, out);
}
