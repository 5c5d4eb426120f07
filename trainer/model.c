// trainer/model.c: the GPT-2 parameter layout, initialisation, optimizer state layout and checkpoint
// naming shared by both trainers (see model.h for why they must be one piece of code).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include "trainer/model.h"
#include "common/util.h"
#include "common/rng.h"

const char* const PARAM_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1.w", "ln1.b", "attn.qkv.w", "attn.qkv.b", "attn.proj.w", "attn.proj.b",
    "ln2.w", "ln2.b", "mlp.fc.w", "mlp.fc.b", "mlp.proj.w", "mlp.proj.b", "lnf.w", "lnf.b" };

void model_param_sizes(const GPT2Config* cfg, size_t sizes[NUM_PARAM_TENSORS]) {
    size_t Vp = cfg->padded_vocab_size, C = cfg->channels, L = cfg->num_layers, maxT = cfg->max_seq_len;
    sizes[P_WTE] = Vp * C;            // (Vp, C)
    sizes[P_WPE] = maxT * C;          // (maxT, C)
    sizes[P_LN1W] = L * C;            // (L, C)
    sizes[P_LN1B] = L * C;            // (L, C)
    sizes[P_QKVW] = L * 3 * C * C;    // (L, 3*C, C)
    sizes[P_QKVB] = L * 3 * C;        // (L, 3*C)
    sizes[P_ATTPROJW] = L * C * C;    // (L, C, C)
    sizes[P_ATTPROJB] = L * C;        // (L, C)
    sizes[P_LN2W] = L * C;            // (L, C)
    sizes[P_LN2B] = L * C;            // (L, C)
    sizes[P_FCW] = L * 4 * C * C;     // (L, 4*C, C)
    sizes[P_FCB] = L * 4 * C;         // (L, 4*C)
    sizes[P_FCPROJW] = L * C * 4 * C; // (L, C, 4*C)
    sizes[P_FCPROJB] = L * C;         // (L, C)
    sizes[P_LNFW] = C;                // (C)
    sizes[P_LNFB] = C;                // (C)
}

void model_param_shape(const GPT2Config* cfg, int k, size_t* rows, size_t* cols) {
    size_t C = cfg->channels;
    switch (k) {
        case P_WTE: *rows = cfg->padded_vocab_size; *cols = C; break;
        case P_WPE: *rows = cfg->max_seq_len; *cols = C; break;
        case P_QKVW: *rows = 3 * C; *cols = C; break;
        case P_ATTPROJW: *rows = C; *cols = C; break;
        case P_FCW: *rows = 4 * C; *cols = C; break;
        case P_FCPROJW: *rows = C; *cols = 4 * C; break;
        case P_QKVB: *rows = 1; *cols = 3 * C; break;
        case P_FCB: *rows = 1; *cols = 4 * C; break;
        default: *rows = 1; *cols = C; break; // layernorm weights/biases and the other biases
    }
}

static size_t align64(size_t n) { return (n + 15) & ~(size_t)15; } // in floats: 64 bytes

void model_layout_build(ModelLayout* ml, const GPT2Config* cfg) {
    memset(ml, 0, sizeof(*ml));
    ml->config = *cfg;
    model_param_sizes(cfg, ml->param_sizes);
    size_t off = 0;
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) { ml->param_offsets[k] = off; off += ml->param_sizes[k]; }
    ml->num_params = off;

    int L = cfg->num_layers;
    ml->num_tensors = 4 + 12 * L;
    ml->tensors = (ModelTensor*)xcalloc((size_t)ml->num_tensors, sizeof(ModelTensor));
    int n = 0;
    size_t so0 = 0, so_block = 0;
    // unit 0 first (embedding and final layernorm), then the blocks in order: backward finishes
    // units in the order blocks L-1..0, then unit 0.
    const int unit0[4] = { P_WTE, P_WPE, P_LNFW, P_LNFB };
    for (int i = 0; i < 4; i++) {
        ModelTensor* p = &ml->tensors[n++];
        int k = unit0[i];
        p->kind = k; p->layer = -1; p->unit = 0;
        p->offset = ml->param_offsets[k];
        p->scratch_offset = so0;
        model_param_shape(cfg, k, &p->shape.rows, &p->shape.cols);
        so0 += align64(p->shape.rows * p->shape.cols);
        snprintf(p->name, sizeof(p->name), "%s", PARAM_NAMES[k]);
    }
    for (int l = 0; l < L; l++) {
        size_t so = 0;
        for (int k = P_LN1W; k <= P_FCPROJB; k++) {
            ModelTensor* p = &ml->tensors[n++];
            p->kind = k; p->layer = l; p->unit = 1 + l;
            model_param_shape(cfg, k, &p->shape.rows, &p->shape.cols);
            size_t per_layer = ml->param_sizes[k] / L;
            p->offset = ml->param_offsets[k] + (size_t)l * per_layer;
            p->scratch_offset = so;
            so += align64(per_layer);
            snprintf(p->name, sizeof(p->name), "h%d.%s", l, PARAM_NAMES[k]);
        }
        so_block = so;
    }
    for (int i = 0; i < ml->num_tensors; i++) {
        ModelTensor* p = &ml->tensors[i];
        p->shape.name = p->name;
        p->shape.numel = p->shape.rows * p->shape.cols;
        p->shape.ndim = p->shape.rows > 1 ? 2 : 1;
        p->shape.decay = p->shape.ndim == 2; // weight decay on 2-D tensors only (GPT-2 practice)
        p->shape.role = p->shape.ndim == 1 ? PARAM_VECTOR : (p->kind == P_WTE || p->kind == P_WPE) ? PARAM_EMBEDDING
                      : p->kind == P_QKVW ? PARAM_ATTN_QKV : PARAM_MATRIX;
        p->shape.heads = cfg->num_heads;
    }
    ml->unit_size[0] = so0;
    ml->unit_size[1] = so_block;
}

void model_layout_free(ModelLayout* ml) {
    free(ml->tensors);
    ml->tensors = NULL;
    ml->num_tensors = 0;
}

// Tensors are drawn in storage order, each element in order, one normal per element: changing this
// order changes every run's weights (and breaks resuming from older checkpoints' seeds).
#define INIT_PIECE 65536
void model_init_weights_each(const ModelLayout* ml, uint64_t seed, void (*emit)(void* ctx, size_t first, const float* v, size_t n),
                             void* ctx) {
    const GPT2Config* cfg = &ml->config;
    Rng rng;
    rng_seed(&rng, seed);
    float* piece = (float*)xmalloc(INIT_PIECE * sizeof(float));
    float resid_std = 0.02f / sqrtf(2.0f * cfg->num_layers);
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) {
        size_t n = ml->param_sizes[k];
        size_t drawn = n; // the elements that get a value; the rest (biases, padded vocabulary rows) stay 0
        if (k == P_WTE) drawn = (size_t)cfg->vocab_size * cfg->channels; // only the V real rows
        for (size_t i0 = 0; i0 < n; i0 += INIT_PIECE) {
            size_t len = n - i0 < INIT_PIECE ? n - i0 : INIT_PIECE;
            for (size_t j = 0; j < len; j++) {
                size_t i = i0 + j;
                float v = 0.0f;
                if (i < drawn) {
                    if (k == P_LN1W || k == P_LN2W || k == P_LNFW) v = 1.0f;
                    else if (k == P_WTE || k == P_WPE || k == P_QKVW || k == P_FCW) v = 0.02f * rng_normal(&rng);
                    else if (k == P_ATTPROJW || k == P_FCPROJW) v = resid_std * rng_normal(&rng);
                }
                piece[j] = v;
            }
            emit(ctx, ml->param_offsets[k] + i0, piece, len);
        }
    }
    free(piece);
}

static void init_into(void* ctx, size_t first, const float* v, size_t n) { memcpy((float*)ctx + first, v, n * sizeof(float)); }

void model_init_weights(const ModelLayout* ml, float* w, uint64_t seed) {
    model_init_weights_each(ml, seed, init_into, w);
}

// ------------------------------------------------------------------------------------------------
// Optimizer state layout

void state_layout_for_model(StateLayout* sl, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h) {
    ParamShape* shapes = (ParamShape*)xcalloc((size_t)ml->num_tensors, sizeof(ParamShape));
    for (int i = 0; i < ml->num_tensors; i++) shapes[i] = ml->tensors[i].shape;
    state_layout_build(sl, opt, h, shapes, ml->num_tensors);
    free(shapes);
}

size_t optimizer_layout_bytes(const ModelLayout* ml, const Optimizer* opt, const OptHyper* h) {
    size_t s = 0;
    for (int i = 0; i < ml->num_tensors; i++) s += optim_state_bytes(opt, h, &ml->tensors[i].shape);
    return s;
}

// ------------------------------------------------------------------------------------------------
// Checkpoints

void model_checkpoint_header(CkptHeader* h, const ModelLayout* ml, int precision, const char* opt_name) {
    memset(h, 0, sizeof(*h));
    const GPT2Config* c = &ml->config;
    h->num_layers = c->num_layers; h->channels = c->channels; h->num_heads = c->num_heads;
    h->vocab_size = c->vocab_size; h->padded_vocab_size = c->padded_vocab_size; h->max_seq_len = c->max_seq_len;
    h->precision = precision;
    snprintf(h->optimizer, sizeof(h->optimizer), "%s", opt_name);
    h->num_params = ml->num_params;
}

int model_checkpoint_blobs(CkptBlob* blobs, const ModelLayout* ml, const StateLayout* sl, int precision,
                           void* weights_f32, void* weights_bf16, void* const* state_bufs) {
    int n = 0;
    blobs[n++] = (CkptBlob){ "weights fp32", weights_f32, ml->num_params * sizeof(float) };
    // the bf16 copy is more than a rounding of the master once stochastic rounding is on, so it is saved
    if (precision == PRECISION_BF16) blobs[n++] = (CkptBlob){ "weights bf16", weights_bf16, ml->num_params * sizeof(uint16_t) };
    for (int b = 0; b < sl->nbuf; b++) blobs[n++] = (CkptBlob){ sl->buf_label[b], state_bufs[b], sl->buf_bytes[b] };
    CHECK(n <= CKPT_MAX_BLOBS);
    return n;
}

// ------------------------------------------------------------------------------------------------
// Small helpers

void softmax_inplace(float* x, int V) {
    float maxv = -INFINITY;
    for (int v = 0; v < V; v++) if (x[v] > maxv) maxv = x[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++) { x[v] = expf(x[v] - maxv); sum += x[v]; }
    float inv = (float)(1.0 / sum);
    for (int v = 0; v < V; v++) x[v] *= inv;
}

int sample_index(const float* p, int n, float u) {
    float c = 0.0f;
    for (int i = 0; i < n; i++) { c += p[i]; if (u < c) return i; }
    return n - 1;
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

