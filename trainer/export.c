// trainer/export.c: see export.h.
//
// The safetensors format (HuggingFace): an 8-byte little-endian unsigned header length N, then N bytes
// of JSON mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} (byte offsets
// from the first byte after the header), then the tensors' bytes, little-endian, row-major. The header
// may end in spaces; we pad it to a multiple of 8 so every tensor starts 8-byte aligned. An optional
// "__metadata__" of strings: transformers refuses a file without {"format": "pt"}.
//
// Names and shapes: HuggingFace's GPT-2. Ours -> theirs (C channels, L layers):
//   wte (Vp, C)            -> transformer.wte.weight (V, C): the first V = 50257 rows only; rows V..Vp-1
//                             are our padding, never used
//   wpe (maxT, C)          -> transformer.wpe.weight (maxT, C)
//   per layer l (h.l = transformer.h.{l}):
//   ln1.w, ln1.b (C)       -> h.l.ln_1.weight, h.l.ln_1.bias
//   attn.qkv.w (3C, C)     -> h.l.attn.c_attn.weight (C, 3C)   transposed
//   attn.qkv.b (3C)        -> h.l.attn.c_attn.bias
//   attn.proj.w (C, C)     -> h.l.attn.c_proj.weight (C, C)    transposed
//   attn.proj.b (C)        -> h.l.attn.c_proj.bias
//   ln2.w, ln2.b (C)       -> h.l.ln_2.weight, h.l.ln_2.bias
//   mlp.fc.w (4C, C)       -> h.l.mlp.c_fc.weight (C, 4C)      transposed
//   mlp.fc.b (4C)          -> h.l.mlp.c_fc.bias
//   mlp.proj.w (C, 4C)     -> h.l.mlp.c_proj.weight (4C, C)    transposed
//   mlp.proj.b (C)         -> h.l.mlp.c_proj.bias
//   lnf.w, lnf.b (C)       -> transformer.ln_f.weight, transformer.ln_f.bias
// Why the transposes: HF's GPT-2 uses Conv1D, which computes x @ W + b with W stored (in, out); our
// matmuls (like llm.c's and nn.Linear's) store W as (out, in). The q, k, v order inside c_attn (q, then
// k, then v, heads contiguous within each) is the same on both sides. The LM head is tied to wte, so
// there is no lm_head.weight (transformers ties it on load).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include "trainer/export.h"
#include "common/fileio.h"
#include "common/util.h"

typedef struct {
    char name[64];
    int kind;            // which of our 16 tensors
    int layer;           // -1 for the non-block tensors
    size_t rows, cols;   // the shape written (after the transpose); rows 0: a vector of cols
    int transpose;       // 1: ours is (cols, rows), written transposed
} ExportTensor;

// The exported tensors in file order; returns how many (2 + 12L + 2).
static int export_list(const GPT2Config* c, ExportTensor* t) {
    static const struct { int kind; const char* hf; int transpose; } BLOCK[12] = {
        {P_LN1W, "ln_1.weight", 0}, {P_LN1B, "ln_1.bias", 0}, {P_QKVW, "attn.c_attn.weight", 1},
        {P_QKVB, "attn.c_attn.bias", 0}, {P_ATTPROJW, "attn.c_proj.weight", 1}, {P_ATTPROJB, "attn.c_proj.bias", 0},
        {P_LN2W, "ln_2.weight", 0}, {P_LN2B, "ln_2.bias", 0}, {P_FCW, "mlp.c_fc.weight", 1},
        {P_FCB, "mlp.c_fc.bias", 0}, {P_FCPROJW, "mlp.c_proj.weight", 1}, {P_FCPROJB, "mlp.c_proj.bias", 0} };
    int n = 0;
    size_t C = (size_t)c->channels;
    t[n] = (ExportTensor){ "transformer.wte.weight", P_WTE, -1, (size_t)c->vocab_size, C, 0 }; n++;
    t[n] = (ExportTensor){ "transformer.wpe.weight", P_WPE, -1, (size_t)c->max_seq_len, C, 0 }; n++;
    for (int l = 0; l < c->num_layers; l++)
        for (int i = 0; i < 12; i++) {
            ExportTensor* e = &t[n++];
            snprintf(e->name, sizeof(e->name), "transformer.h.%d.%s", l, BLOCK[i].hf);
            e->kind = BLOCK[i].kind;
            e->layer = l;
            e->transpose = BLOCK[i].transpose;
            size_t r, k;
            model_param_shape(c, e->kind, &r, &k); // ours: (r, k), vectors r = 1
            if (r == 1) { e->rows = 0; e->cols = k; }
            else if (e->transpose) { e->rows = k; e->cols = r; }
            else { e->rows = r; e->cols = k; }
        }
    t[n] = (ExportTensor){ "transformer.ln_f.weight", P_LNFW, -1, 0, C, 0 }; n++;
    t[n] = (ExportTensor){ "transformer.ln_f.bias", P_LNFB, -1, 0, C, 0 }; n++;
    return n;
}

static size_t numel(const ExportTensor* e) { return (e->rows ? e->rows : 1) * e->cols; }

// Where tensor e's values start in w: its tensor's offset plus the layer's slice.
static const float* source(const ModelLayout* ml, const float* w, const ExportTensor* e) {
    size_t per_layer = e->layer < 0 ? 0 : ml->param_sizes[e->kind] / (size_t)ml->config.num_layers;
    return w + ml->param_offsets[e->kind] + (e->layer < 0 ? 0 : (size_t)e->layer * per_layer);
}

int export_check_target(const char* path, int* replaces, char* err, size_t errlen) {
    struct stat st;
    *replaces = 0;
    if (lstat(path, &st) != 0) return 0;
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "-export %s is %s; it writes a regular file and replaces nothing else: choose another path",
                 path, fileio_kind(st.st_mode));
        return -1;
    }
    *replaces = 1;
    return 0;
}

int export_safetensors(const char* path, const ModelLayout* ml, const float* w, char* err, size_t errlen) {
    int replaces;
    if (export_check_target(path, &replaces, err, errlen) != 0) return -1;
    const GPT2Config* c = &ml->config;
    int max = 4 + 12 * c->num_layers;
    ExportTensor* t = (ExportTensor*)xcalloc((size_t)max, sizeof(ExportTensor));
    int n = export_list(c, t);
    // the header: each tensor's entry, offsets in file order
    size_t cap = 256 + (size_t)n * 160, len = 0, off = 0;
    char* hdr = (char*)xmalloc(cap);
    len += (size_t)snprintf(hdr + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        size_t bytes = numel(&t[i]) * sizeof(float);
        if (t[i].rows) len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%zu,%zu],\"data_offsets\":[%zu,%zu]}",
                                               t[i].name, t[i].rows, t[i].cols, off, off + bytes);
        else len += (size_t)snprintf(hdr + len, cap - len, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%zu],\"data_offsets\":[%zu,%zu]}",
                                     t[i].name, t[i].cols, off, off + bytes);
        off += bytes;
        CHECK(len + 200 < cap);
    }
    len += (size_t)snprintf(hdr + len, cap - len, "}");
    while ((8 + len) % 8) hdr[len++] = ' '; // the tensors start 8-byte aligned
    // a new temporary file of our own (never a planted PATH.tmp), renamed over PATH when whole: two
    // exports to one PATH each write their own file, and PATH ends up one of them, never a mix
    char tmp[1200];
    int fd = fileio_create_temp(path, tmp, sizeof(tmp));
    FILE* f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    if (fd >= 0 && !f) { close(fd); unlink(tmp); }
    int ok = f != NULL;
    if (ok) {
        unsigned char n8[8];
        for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)len >> (8 * i)); // little-endian u64
        ok = fwrite(n8, 8, 1, f) == 1 && fwrite(hdr, 1, len, f) == len;
        float* buf = (float*)xmalloc(4 * (size_t)c->channels * (size_t)c->channels * sizeof(float)); // the largest matrix, 4C*C
        for (int i = 0; ok && i < n; i++) {
            const float* src = source(ml, w, &t[i]);
            size_t m = numel(&t[i]);
            if (t[i].transpose) { // ours (cols, rows) -> (rows, cols)
                size_t R = t[i].rows, K = t[i].cols;
                for (size_t a = 0; a < K; a++)
                    for (size_t b = 0; b < R; b++) buf[b * K + a] = src[a * R + b];
                src = buf;
            }
            ok = fwrite(src, sizeof(float), m, f) == m; // x86 and ARM hosts are little-endian, as the format is
        }
        free(buf);
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        ok = (fclose(f) == 0) && ok;
    }
    int e = errno;
    if (ok && rename(tmp, path) != 0) { ok = 0; e = errno; }
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(e));
        if (fd >= 0) unlink(tmp);
    }
    free(hdr);
    free(t);
    return ok ? 0 : -1;
}

int export_hf_config(const char* path, const GPT2Config* c, char* err, size_t errlen) {
    char cfg[1100], tmp[1130];
    const char* slash = strrchr(path, '/');
    if (slash) snprintf(cfg, sizeof(cfg), "%.*s/config.json", (int)(slash - path), path);
    else snprintf(cfg, sizeof(cfg), "config.json");
    // a new temporary name, created exclusively (common/fileio.h): never through a planted symlink or FIFO
    int fd = fileio_create_temp(cfg, tmp, sizeof(tmp));
    FILE* f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        snprintf(err, errlen, "cannot write %s: %s", cfg, strerror(errno));
        if (fd >= 0) { close(fd); unlink(tmp); }
        return -1;
    }
    // GPT-2's own values where the shape does not decide: the tanh GELU (gelu_new, ours), LayerNorm eps
    // 1e-5, the tied LM head, <|endoftext|> = 50256; dropout 0 as this trainer trains (none)
    fprintf(f, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
            "  \"vocab_size\": %d,\n  \"n_positions\": %d,\n  \"n_ctx\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n"
            "  \"n_head\": %d,\n  \"n_inner\": null,\n  \"activation_function\": \"gelu_new\",\n"
            "  \"layer_norm_epsilon\": 1e-05,\n  \"initializer_range\": 0.02,\n  \"resid_pdrop\": 0.0,\n"
            "  \"embd_pdrop\": 0.0,\n  \"attn_pdrop\": 0.0,\n  \"bos_token_id\": 50256,\n  \"eos_token_id\": 50256,\n"
            "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"float32\"\n}\n",
            c->vocab_size, c->max_seq_len, c->max_seq_len, c->channels, c->num_layers, c->num_heads);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, cfg) != 0) { snprintf(err, errlen, "cannot write %s: %s", cfg, strerror(errno)); unlink(tmp); return -1; }
    return 0;
}

void export_blobs(const char* path, const ModelLayout* ml, const CkptBlob* blobs, int nblobs) {
    const float* w = NULL;
    for (int i = 0; i < nblobs; i++)
        if (!strcmp(blobs[i].name, "weights fp32")) w = (const float*)blobs[i].data;
    CHECK(w != NULL);
    char err[1300];
    int replaces;
    if (export_check_target(path, &replaces, err, sizeof(err)) != 0) user_error("%s", err);
    if (export_safetensors(path, ml, w, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: -export: %s\n", err);
        exit(5); // RUN_EXIT_WRITE (trainer/run.h)
    }
    printf("exported %s: %d tensors, HuggingFace GPT-2 names, F32, vocabulary %d rows (the padding left out)%s\n",
           path, 4 + 12 * ml->config.num_layers, ml->config.vocab_size,
           replaces ? "; the file that was there is replaced (atomically: a new file renamed over it)" : "");
    if (export_hf_config(path, &ml->config, err, sizeof(err)) != 0) {
        fprintf(stderr, "error: -export: %s\n", err);
        exit(5);
    }
    printf("exported its config.json beside it (HuggingFace GPT2Config: n_layer %d, n_embd %d, n_head %d)\n",
           ml->config.num_layers, ml->config.channels, ml->config.num_heads);
}
