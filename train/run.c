// train/run.c: see run.h.
#include <string.h>
#include <math.h>
#include <errno.h>
#include <sys/stat.h>
#include "train/run.h"
#include "train/advise.h"
#include "common/util.h"
#include "common/ledger.h"
#include "common/rng.h"
#include "common/schedule.h"

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

void run_check_resume(const CkptHeader* h, const CkptHeader* mine, const char* path, int steps) {
    if (h->num_layers != mine->num_layers || h->channels != mine->channels || h->num_heads != mine->num_heads ||
        h->vocab_size != mine->vocab_size || h->max_seq_len != mine->max_seq_len)
        user_error("cannot resume: %s holds a model L=%d C=%d heads=%d, this run is L=%d C=%d heads=%d; use the same -model",
                   path, h->num_layers, h->channels, h->num_heads, mine->num_layers, mine->channels, mine->num_heads);
    if (h->precision != mine->precision)
        user_error("cannot resume: %s was written with -precision %s; use the same precision", path, h->precision ? "bf16" : "fp32");
    if (strncmp(h->optimizer, mine->optimizer, sizeof(h->optimizer)) != 0)
        user_error("cannot resume: %s was written by -opt %.32s, this run uses -opt %.32s", path, h->optimizer, mine->optimizer);
    if (h->step >= steps) user_error("cannot resume: %s is at step %d already, -x is %d; raise -x", path, h->step, steps);
}

static void run_begin(RunStats* s, const Args* a, char* ckpt_path, size_t pathlen) {
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

static int run_record_step(RunStats* s, const Args* a, Logger* lg, int step, int first_step, float loss, float norm,
                    float lr, double seconds, int skipped, const char* extra, const char* ckpt_path) {
    s->tokens_seen += a->total_batch;
    if (step > first_step || a->steps == first_step) { s->train_seconds += seconds; s->train_tokens += a->total_batch; }
    if (skipped) {
        s->skipped_total++;
        s->consecutive_skips++;
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

static void run_record_val(RunStats* s, Logger* lg, int step, float val_loss, int batches) {
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
}

static void run_print_summary(const RunStats* s, const Args* a, Logger* lg, const char* opt_name, double peak_mib,
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

// ------------------------------------------------------------------------------------------------
// The run as the trainers' main() sees it

void run_list_optimizers(int (*has_kernel)(const Optimizer*)) {
    // state bytes/param on the d12 shapes (GPT-2 124M) with each optimizer's defaults
    GPT2Config cfg = parse_model("d12");
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    if (has_kernel) printf("%-17s %-12s %-5s %s\n", "name", "B/param(d12)", "cuda", "description [paper]");
    else printf("%-17s %-12s %s\n", "name", "B/param(d12)", "description [paper]");
    for (int i = 0; i < NUM_OPTIMIZERS; i++) {
        const Optimizer* o = OPTIMIZERS[i];
        double bpp = (double)optimizer_layout_bytes(&ml, o, &o->defaults) / ml.num_params;
        if (has_kernel) printf("%-17s %-12.4f %-5s %s [%s]\n", o->name, bpp, has_kernel(o) ? "yes" : "no", o->description, o->paper);
        else printf("%-17s %-12.4f %s [%s]\n", o->name, bpp, o->description, o->paper);
    }
    model_layout_free(&ml);
}

int run_setup(Run* r, int argc, char** argv, const char* trainer, int (*has_kernel)(const Optimizer*)) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(r, 0, sizeof(*r));
    r->trainer = trainer;
    if (advise_requested(argc, argv)) return advise_main(argc, argv); // the decision guide: no training
    parse_args(&r->a, argc, argv);
    if (!strcmp(r->a.opt_name, "list")) { run_list_optimizers(has_kernel); return 0; }
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

int run_memory_only(Run* r, const char* where) {
    if (!r->a.memory_only) return 0;
    size_t P = r->layout->num_params;
    printf("memory ledger for B=%d T=%d%s (nothing allocated):\n", r->a.B, r->a.T, where);
    ledger_print(&r->led, stdout, P);
    printf("summary: opt=%s params=%zu state_bytes=%zu state_bytes_per_param=%.4f ledger_mib=%.2f\n", r->opt->name,
           P, r->state_bytes, (double)r->state_bytes / P, r->led.current / 1048576.0);
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

static void resume(Run* r) {
    char err[1024];
    CkptHeader h, mine;
    CkptBlob blobs[CKPT_MAX_BLOBS];
    if (ckpt_read_header(r->ckpt_path, &h, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
    model_checkpoint_header(&mine, r->layout, r->a.precision, r->opt->name);
    run_check_resume(&h, &mine, r->ckpt_path, r->a.steps);
    int nb = gather_blobs(r, blobs);
    if (ckpt_load(r->ckpt_path, &h, blobs, nb, err, sizeof(err)) != 0) user_error("cannot resume: %s", err);
    if (r->ops.ckpt_from_host) r->ops.ckpt_from_host(r->ops.model, blobs, nb);
    release_blobs(r, blobs, nb);
    r->start_step = h.step;
    r->stats.skipped_total = h.skipped_steps;
    r->stats.tokens_seen = (long)h.tokens_seen;
    if (dataloader_seek(&r->data.train, h.data_position) != 0)
        user_error("cannot resume: data position in %s is past the end of %s", r->ckpt_path, r->data.train_path);
    printf("resumed from %s at step %d\n", r->ckpt_path, r->start_step);
}

static void save_checkpoint(Run* r, int step) {
    char err[1024];
    CkptHeader h;
    CkptBlob blobs[CKPT_MAX_BLOBS];
    model_checkpoint_header(&h, r->layout, r->a.precision, r->opt->name);
    run_ckpt_header(&h, &r->stats, &r->a, step, dataloader_position(&r->data.train));
    int nb = gather_blobs(r, blobs);
    if (r->ops.ckpt_to_host) r->ops.ckpt_to_host(r->ops.model, blobs, nb);
    if (ckpt_save(r->ckpt_path, &h, blobs, nb, err, sizeof(err)) != 0) fprintf(stderr, "warning: %s\n", err);
    else printf("checkpoint: %s (step %d)\n", r->ckpt_path, step);
    release_blobs(r, blobs, nb);
}

void run_start(Run* r, const ModelOps* ops) {
    const Args* a = &r->a;
    r->ops = *ops;
    run_open_data(&r->data, a, r->cfg.vocab_size);
    ledger_record(&r->led, MEM_DATA, strcmp(r->trainer, "gpu") ? "token shards (train+val)" : "token shards (host)",
                  dataloader_bytes(&r->data.train) + dataloader_bytes(&r->data.val), NULL);
    run_begin(&r->stats, a, r->ckpt_path, sizeof(r->ckpt_path));
    r->ops.init(r->ops.model, a->seed);
    if (a->resume) resume(r);
    if (logger_open(&r->lg, a->out_dir, a->resume) != 0) user_error("cannot write %s/log.jsonl: %s", a->out_dir, strerror(errno));
    printf("batch: B=%d T=%d, %d tokens/step (%d micro-step%s), %d steps, warmup %d, final lr x%g, clip %g\n", a->B, a->T,
           a->total_batch, r->accum, r->accum > 1 ? "s" : "", a->steps, a->warmup, a->final_lr_frac, a->grad_clip);
    printf("memory ledger:\n");
    ledger_print(&r->led, stdout, r->layout->num_params);
    fflush(stdout);
}

float run_lr_scale(const Run* r, int step) { return lr_multiplier(step, r->a.steps, r->a.warmup, r->a.final_lr_frac); }

int run_opt_step(const Run* r, int step) { return step - r->stats.skipped_total; }

int run_after_step(Run* r, int step, float loss, float norm, float lr, double seconds, int skipped, const char* extra) {
    const Args* a = &r->a;
    int rc = run_record_step(&r->stats, a, &r->lg, step, r->start_step + 1, loss, norm, lr, seconds, skipped, extra, r->ckpt_path);
    if (rc) return rc;
    RunDue due = run_due(a, step, r->ckpt_path);
    if (due.val) {
        float v = run_evaluate(&r->ops, &r->data.val, a->val_batches, a->B, a->T);
        run_record_val(&r->stats, &r->lg, step, v, a->val_batches);
    }
    if (due.sample) run_sample(&r->ops, r->data.tok, r->cfg.vocab_size, a->sample_len, a->seed, step, a->T, stdout);
    if (due.checkpoint) save_checkpoint(r, step);
    if (step == a->stop_at) { printf("stopping after step %d as asked (-stop)\n", step); return 1; }
    return 0;
}

int run_finish(Run* r, int rc, const char* memory_lines, double peak_mib, const char* extra_json) {
    if (rc != 3) {
        fputs(memory_lines, stdout);
        run_print_summary(&r->stats, &r->a, &r->lg, r->opt->name, peak_mib, r->state_bytes, r->layout->num_params, extra_json);
    }
    logger_close(&r->lg);
    run_close_data(&r->data);
    ledger_free_all(&r->led);
    return rc == 3 ? 3 : 0;
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

// Bytes of the UTF-8 character that starts with lead byte c and whose second byte is c2 (0 when not
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

// A GPT-2 token is a run of bytes that may end inside a multi-byte character: print only whole
// characters (invalid bytes as U+FFFD) and keep an unfinished one for the next token. Returns the
// number of bytes kept at the start of buf. final: the text ends here (an unfinished character is
// printed as U+FFFD).
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

void run_sample(const ModelOps* ops, const Tokenizer* tok, int V, int len, uint64_t seed, int step, int T, FILE* out) {
    Rng rng;
    rng_seed(&rng, seed * 1000003ull + (uint64_t)step);
    int eot = tok ? tokenizer_eot(tok) : V - 1;
    if (eot < 0 || eot >= V) eot = V - 1;
    int* gen = (int*)xmalloc(sizeof(int) * (size_t)(len + 1));
    float* probs = (float*)xmalloc(sizeof(float) * (size_t)V);
    gen[0] = eot;
    unsigned char pending[64]; // bytes of an unfinished UTF-8 character (a token is at most a few bytes)
    size_t npend = 0;
    fprintf(out, "sample (step %d): ", step);
    for (int i = 1; i <= len; i++) {
        int start = i > T ? i - T : 0; // slide the context window
        ops->next_token_probs(ops->model, gen + start, i - start, probs);
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
}
