// train/run.c: see run.h.
#include <string.h>
#include <math.h>
#include <limits.h>
#include <sys/stat.h>
#include "train/run.h"
#include "common/util.h"
#include "common/ledger.h"

#define DEFAULT_TRAIN "data/gcide/gcide_train.bin"
#define DEFAULT_VAL "data/gcide/gcide_val.bin"

int run_check_args(Args* a, const GPT2Config* cfg, const Optimizer* opt, OptHyper* hyper) {
    if (a->T > cfg->max_seq_len) user_error("-t %d exceeds the model's context of %d positions", a->T, cfg->max_seq_len);
    int tokens_per_micro = a->B * a->T;
    if (a->total_batch < 0) a->total_batch = tokens_per_micro;
    if (a->total_batch % tokens_per_micro != 0)
        user_error("-d %d must be a multiple of -b * -t = %d", a->total_batch, tokens_per_micro);
    int accum = a->total_batch / tokens_per_micro;
    if ((opt->flags & OPT_FUSED_BACKWARD) && accum > 1)
        user_error("%s updates inside backward, so it cannot accumulate gradients: use -d equal to -b * -t (%d)", opt->name, tokens_per_micro);
    if (a->warmup < 0) a->warmup = a->steps / 10;
    *hyper = make_hyper(a, opt, a->total_batch);
    if ((opt->flags & OPT_HESSIAN) && hyper->hess_interval < 1) hyper->hess_interval = 10;
    if (hyper->nesterov && hyper->momentum <= 0.0f) user_error("-nesterov 1 needs a momentum > 0 (-momentum F)");
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
    open_loader(&d->train, d->train_path, a->B, a->T, vocab_size, "train");
    open_loader(&d->val, d->val_path, a->B, a->T, vocab_size, "val");
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
        { "-b", h->run_B, mine->run_B, 0 }, { "-t", h->run_T, mine->run_T, 0 },
        { "-d", h->run_total_batch, mine->run_total_batch, 0 }, { "-seed", (double)h->seed, (double)mine->seed, 0 },
        { "-sr", h->run_sr, mine->run_sr, 0 }, { "-l", h->run_lr, mine->run_lr, 1 },
    };
    char msg[1024];
    size_t len = 0;
    msg[0] = 0;
    for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        int same = f[i].old == f[i].now || (isnan(f[i].old) && isnan(f[i].now));
        if (i == 3) same = h->seed == mine->seed;  // exact in 64 bits
        if (same || len >= sizeof(msg) - 1) continue;
        char o[40], n[40];
        if (i == 3) { snprintf(o, sizeof(o), "%llu", (unsigned long long)h->seed); snprintf(n, sizeof(n), "%llu", (unsigned long long)mine->seed); }
        else { flag_text(o, sizeof(o), f[i].old, f[i].is_lr); flag_text(n, sizeof(n), f[i].now, f[i].is_lr); }
        len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%s%s %s (now %s)", len ? ", " : "", f[i].flag, o, n);
    }
    if (len) user_error("cannot resume: %s was written with %s; pass the same flags to resume it", path, msg);
}

void run_begin(RunStats* s, const Args* a, char* ckpt_path, size_t pathlen) {
    memset(s, 0, sizeof(*s));
    s->last_val = NAN;
    ckpt_path[0] = 0;
    if (a->out_dir) {
        // mkdir -p: existing directories are fine; an unwritable path fails when the log is opened
        char dir[1024];
        snprintf(dir, sizeof(dir), "%s", a->out_dir);
        for (char* p = dir + 1; *p; p++)
            if (*p == '/') { *p = 0; mkdir(dir, 0755); *p = '/'; }
        mkdir(dir, 0755);
        snprintf(ckpt_path, pathlen, "%s/checkpoint.bin", a->out_dir);
    }
}

int run_record_step(RunStats* s, const Args* a, Logger* lg, int step, int first_step, float loss, float norm,
                    float lr, double seconds, int skipped, const char* extra, const char* ckpt_path) {
    s->tokens_seen += a->total_batch;
    if (step > first_step || a->steps == first_step) { s->train_seconds += seconds; s->train_tokens += a->total_batch; }
    if (skipped) {
        // saturating: a restored count near INT_MAX must not overflow
        if (s->skipped_total < INT_MAX) s->skipped_total++;
        if (s->consecutive_skips < INT_MAX) s->consecutive_skips++;
        printf("step %5d/%d | loss %s | norm %s | SKIPPED (non-finite %s; %d skipped so far)\n", step, a->steps,
               isfinite(loss) ? "ok" : "nan/inf", isfinite(norm) ? "ok" : "nan/inf", isfinite(loss) ? "gradient" : "loss", s->skipped_total);
        logger_write(lg, "{\"type\":\"skip\",\"step\":%d,\"loss\":%s,\"skipped_total\":%d}", step, isfinite(loss) ? "0" : "null", s->skipped_total);
        if (s->consecutive_skips >= a->max_skips) {
            fprintf(stderr, "error: %d consecutive steps had a non-finite loss or gradient; stopping. "
                    "%s Try a lower learning rate (-l) or gradient clipping (-g 1).\n", s->consecutive_skips,
                    ckpt_path && ckpt_path[0] && file_exists(ckpt_path) ? "The last checkpoint is intact." : "No checkpoint was written.");
            return 3;
        }
    } else {
        s->consecutive_skips = 0;
        s->recent_loss[s->nrecent++ % 10] = loss;
    }
    printf("step %5d/%d | loss %.6f | lr %.3e | norm %.4f | %.1f ms | %.0f tok/s%s\n", step, a->steps, loss, lr, norm,
           seconds * 1000.0, a->total_batch / seconds, extra ? extra : "");
    logger_write(lg, "{\"type\":\"step\",\"step\":%d,\"loss\":%.9g,\"lr\":%.9g,\"norm\":%.9g,\"ms\":%.3f,\"tok_per_s\":%.1f,\"skipped\":%d}",
                 step, isfinite(loss) ? loss : -1.0f, lr, isfinite(norm) ? norm : -1.0f, seconds * 1000.0, a->total_batch / seconds, skipped);
    return 0;
}

RunDue run_due(const Args* a, int step, const char* ckpt_path) {
    RunDue d;
    d.last = step == a->steps || step == a->stop_at;
    d.val = (a->val_every && step % a->val_every == 0) || d.last;
    d.sample = a->sample_len > 0 && ((a->sample_every && step % a->sample_every == 0) || d.last);
    d.checkpoint = ckpt_path && ckpt_path[0] && ((a->ckpt_every && step % a->ckpt_every == 0) || d.last);
    return d;
}

void run_record_val(RunStats* s, Logger* lg, int step, float val_loss, int batches) {
    s->last_val = val_loss;
    printf("val loss %.6f (step %d, %d batches)\n", val_loss, step, batches);
    logger_write(lg, "{\"type\":\"val\",\"step\":%d,\"val_loss\":%.9g}", step, val_loss);
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

void run_print_summary(const RunStats* s, const Args* a, Logger* lg, const char* opt_name, double peak_mib,
                       size_t state_bytes, size_t num_params, const char* extra_json) {
    double train_loss = 0.0;
    int nl = s->nrecent < 10 ? s->nrecent : 10;
    for (int i = 0; i < nl; i++) train_loss += s->recent_loss[i];
    train_loss = nl ? train_loss / nl : NAN;
    double tps = s->train_seconds > 0 ? s->train_tokens / s->train_seconds : 0.0;
    double rss_mib = process_peak_rss() / 1048576.0;
    printf("summary: opt=%s steps=%d train_loss=%.6f val_loss=%.6f tok_per_s=%.1f peak_mib=%.2f state_bytes=%zu "
           "state_bytes_per_param=%.4f params=%zu skipped=%d rss_mib=%.2f\n", opt_name, a->steps, train_loss, s->last_val, tps,
           peak_mib, state_bytes, (double)state_bytes / num_params, num_params, s->skipped_total, rss_mib);
    logger_write(lg, "{\"type\":\"summary\",\"opt\":\"%s\",\"steps\":%d,\"train_loss\":%.9g,\"val_loss\":%.9g,\"tok_per_s\":%.1f,"
                 "\"peak_mib\":%.3f,\"state_bytes\":%zu,\"state_bytes_per_param\":%.6f,\"params\":%zu,\"skipped\":%d,\"rss_mib\":%.3f%s}",
                 opt_name, a->steps, train_loss, s->last_val, tps, peak_mib, state_bytes, (double)state_bytes / num_params,
                 num_params, s->skipped_total, rss_mib, extra_json ? extra_json : "");
}
