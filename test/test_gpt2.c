// test/test_gpt2.c: the CPU model against PyTorch (test/reference.py -> test/vectors/gpt2_tiny.bin).
//  - fp32 mode: logits, loss and all 16 gradient tensors vs a float64 PyTorch GPT-2.
//    Tolerance: our fp32 arithmetic differs from the float64 reference by rounding only; over the
//    short sums of this tiny model (C=32, T=8) that is ~1e-6 relative, so rtol 1e-4 with an absolute
//    floor of 1e-5 x the tensor's largest value (for entries that nearly cancel) has wide margin, yet a
//    wrong formula (a missing term, a transposed weight) is off by O(1) and fails.
//  - bf16 mode: the same with the reference run on the bf16-rounded weights; the gradients are stored
//    in bf16, so each is off by at most half a bf16 ulp = 2^-9 relative, hence rtol 4e-3.
//  - f32_to_bf16 equals torch's rounding bit for bit.
//  - bf16 training: the fp32 master moves exactly as the fp32 optimizer says, and the bf16 copy is the
//    master rounded to nearest.
#define TESTING
// the trainer's CLI and loop functions are unused here
#pragma GCC diagnostic ignored "-Wunused-function"
#include "../train_gpt2.c"
#include "test.h"
#include "vectors.h"

static float max_abs(const float* x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

static const char* REF_NAMES[NUM_PARAM_TENSORS] = {
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb" };

typedef struct { GPT2 m; Ledger led; int B, T; } Tiny;

static void tiny_build(Tiny* t, const VecFile* vf, int precision, int fused) {
    float* c = vec_get(vf, "config", NULL);
    GPT2Config cfg = { (int)c[5], (int)c[3], (int)c[4], (int)c[0], (int)c[2], (int)c[1] };
    t->B = (int)c[6];
    t->T = (int)c[7];
    ledger_init(&t->led, 0);
    gpt2_build(&t->m, &cfg, precision, t->B, t->T, fused, &t->led);
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) {
        char name[64];
        snprintf(name, sizeof(name), "param_%s", REF_NAMES[k]);
        size_t n;
        float* src = vec_get(vf, name, &n);
        CHECK(n == t->m.layout.param_sizes[k]);
        memcpy(t->m.params_f32 + t->m.layout.param_offsets[k], src, n * sizeof(float));
    }
    if (t->m.params_bf16)
        for (size_t i = 0; i < t->m.layout.num_params; i++) t->m.params_bf16[i] = f32_to_bf16(t->m.params_f32[i]);
    float* in = vec_get(vf, "inputs", NULL);
    float* tg = vec_get(vf, "targets", NULL);
    for (int i = 0; i < t->B * t->T; i++) { t->m.inputs[i] = (int)in[i]; t->m.targets[i] = (int)tg[i]; }
}

static void tiny_free(Tiny* t) { ledger_free_all(&t->led); model_layout_free(&t->m.layout); }

// Gathers the gradient of tensor k (fp32 view) from the bf16 or fp32 gradient buffer.
static float* grad_of(GPT2* m, int k) {
    size_t n = m->layout.param_sizes[k], off = m->layout.param_offsets[k];
    float* g = (float*)xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) g[i] = m->grads_f32 ? m->grads_f32[off + i] : bf16_to_f32(m->grads_bf16[off + i]);
    return g;
}

static void check_model(const VecFile* vf, int precision) {
    const char* pre = precision == PRECISION_BF16 ? "bf16_" : "fp32_";
    const char* mode = precision == PRECISION_BF16 ? "bf16" : "fp32";
    Tiny t;
    tiny_build(&t, vf, precision, 0);
    GPT2* m = &t.m;
    int V = m->config.vocab_size;
    char name[128];
    // logits (forward without targets leaves the raw logits)
    gpt2_forward(m, m->inputs, NULL, t.B, t.T, 0);
    size_t n;
    snprintf(name, sizeof(name), "%slogits", pre);
    float* ref = vec_get(vf, name, &n);
    CHECK(n == (size_t)t.B * t.T * V);
    snprintf(name, sizeof(name), "gpt2 %s forward logits vs torch", mode);
    test_allclose(name, m->acts.logits, ref, n, 1e-4f, 1e-5f * max_abs(ref, n));
    // loss
    gpt2_forward(m, m->inputs, m->targets, t.B, t.T, 0);
    snprintf(name, sizeof(name), "%sloss", pre);
    float* ref_loss = vec_get(vf, name, NULL);
    snprintf(name, sizeof(name), "gpt2 %s loss vs torch", mode);
    test_allclose(name, &m->mean_loss, ref_loss, 1, 1e-5f, 0.0f);
    // gradients
    zero_grads(m);
    gpt2_backward(m, t.B, t.T, 1.0f, accumulate_unit_bf16, NULL);
    float rtol = precision == PRECISION_BF16 ? 4e-3f : 1e-4f;
    for (int k = 0; k < NUM_PARAM_TENSORS; k++) {
        snprintf(name, sizeof(name), "%sgrad_%s", pre, REF_NAMES[k]);
        float* rg = vec_get(vf, name, &n);
        CHECK(n == m->layout.param_sizes[k]);
        float* g = grad_of(m, k);
        snprintf(name, sizeof(name), "gpt2 %s grad %s vs torch", mode, PARAM_NAMES[k]);
        test_allclose(name, g, rg, n, rtol, 1e-5f * max_abs(rg, n));
        free(g);
    }
    tiny_free(&t);
}

static void check_bf16_rounding(const VecFile* vf) {
    size_t n;
    float* in = vec_get(vf, "round_in", &n);
    float* out = vec_get(vf, "round_out", NULL);
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        float r = bf16_to_f32(f32_to_bf16(in[i]));
        if (memcmp(&r, &out[i], 4) != 0) { if (!bad) first = i; bad++; }
    }
    char why[160];
    snprintf(why, sizeof(why), "%zu of %zu differ, first %.9g -> %.9g (torch %.9g)", bad, n, in[first],
             bf16_to_f32(f32_to_bf16(in[first])), out[first]);
    test_check(bad == 0, why, "f32_to_bf16 equals torch's bfloat16 rounding (%zu values)", n);
}

// One SGD step in bf16 mode: master' = master - lr * g where g is the bf16 gradient widened to fp32;
// the bf16 copy must equal f32_to_bf16(master'). Also the ledger's bytes per parameter for this layout.
static void check_bf16_master(const VecFile* vf) {
    Tiny t;
    tiny_build(&t, vf, PRECISION_BF16, 0);
    GPT2* m = &t.m;
    const Optimizer* sgd = optim_find("sgd");
    CHECK(sgd);
    OptHyper h = sgd->defaults;
    h.lr = 0.5f;
    h.weight_decay = 0.0f;
    OptRun o;
    optimizer_setup(&o, m, sgd, &h, &t.led);
    gpt2_forward(m, m->inputs, m->targets, t.B, t.T, 0);
    zero_grads(m);
    gpt2_backward(m, t.B, t.T, 1.0f, accumulate_unit_bf16, NULL);
    size_t P = m->layout.num_params;
    float* before = (float*)xmalloc(P * sizeof(float));
    memcpy(before, m->params_f32, P * sizeof(float));
    optimizer_step(m, &o, 1, 1.0f, 1.0f);
    size_t bad_master = 0, bad_copy = 0, moved = 0;
    for (size_t i = 0; i < P; i++) {
        float g = bf16_to_f32(m->grads_bf16[i]);
        float want = before[i] - 0.5f * g;
        if (m->params_f32[i] != want) bad_master++;
        if (m->params_bf16[i] != f32_to_bf16(m->params_f32[i])) bad_copy++;
        if (m->params_f32[i] != before[i]) moved++;
    }
    test_check(bad_master == 0 && moved > P / 2, "master differs from master - lr * grad", "bf16 mode: fp32 master moves as SGD says (%zu of %zu moved)", moved, P);
    test_check(bad_copy == 0, "bf16 copy is not the rounded master", "bf16 mode: bf16 copy is the master rounded to nearest");
    // the ledger: 2 (params) + 4 (master) + 2 (grads) bytes per parameter
    size_t pb = ledger_category_bytes(&t.led, MEM_PARAMS), mb = ledger_category_bytes(&t.led, MEM_MASTER),
           gb = ledger_category_bytes(&t.led, MEM_GRADS);
    test_check(pb == 2 * P && mb == 4 * P && gb == 2 * P, "wrong bytes", "bf16 ledger: params 2, master 4, grads 2 bytes/param");
    free(before);
    state_layout_free(&o.layout);
    tiny_free(&t);
}

// Stochastic rounding: unbiased on average, and always one of the two neighbouring bf16 values.
static void check_stochastic_rounding(void) {
    Rng r;
    rng_seed(&r, 7);
    float x = 1.0f + 1.0f / 1024.0f; // 1/8 of the way between bf16 values 1.0 and 1.0078125
    double sum = 0.0;
    int outside = 0;
    const int N = 200000;
    for (int i = 0; i < N; i++) {
        float y = bf16_to_f32(f32_to_bf16_sr(x, rng_u32(&r)));
        if (y != 1.0f && y != 1.0078125f) outside++;
        sum += y;
    }
    double mean = sum / N;
    // the mean of N Bernoulli(1/8) draws scaled by 2^-7 has std 2^-7*sqrt(p(1-p)/N) = 5.8e-6; allow 5 sigma
    char why[128];
    snprintf(why, sizeof(why), "mean %.9f vs %.9f, %d outside", mean, (double)x, outside);
    test_check(outside == 0 && fabs(mean - x) < 3e-5, why, "stochastic rounding is unbiased and stays on neighbours");
}

// LOMO: the update fused into backward. (1) Its parameters equal plain SGD's for the same gradients:
// fp32 mode, no weight decay, three steps, bit for bit (the fused path computes each unit's gradient
// with the same operations in the same order, then applies the same SGD update). (2) The ledger holds
// gradients for unit 0 (the tied embedding, whose gradient collects from the LM head first and the
// encoder last) and one block, not for the whole model.
static void check_lomo(const VecFile* vf) {
    const Optimizer* sgd = optim_find("sgd");
    const Optimizer* lomo = optim_find("lomo");
    CHECK(sgd && lomo && (lomo->flags & OPT_FUSED_BACKWARD));
    Tiny a, b;
    tiny_build(&a, vf, PRECISION_FP32, 0);
    tiny_build(&b, vf, PRECISION_FP32, 1);
    OptHyper ha = sgd->defaults, hb = lomo->defaults;
    ha.lr = hb.lr = 0.1f;
    ha.weight_decay = hb.weight_decay = 0.0f;
    OptRun oa, ob;
    optimizer_setup(&oa, &a.m, sgd, &ha, &a.led);
    optimizer_setup(&ob, &b.m, lomo, &hb, &b.led);
    for (int step = 1; step <= 3; step++) {
        gpt2_forward(&a.m, a.m.inputs, a.m.targets, a.B, a.T, 0);
        zero_grads(&a.m);
        gpt2_backward(&a.m, a.B, a.T, 1.0f, accumulate_unit_bf16, NULL);
        optimizer_step(&a.m, &oa, step, 1.0f, 1.0f);
        FusedCtx c = { &ob, step, 1.0f, 1.0f, 0, 0.0, 0 };
        gpt2_forward(&b.m, b.m.inputs, b.m.targets, b.B, b.T, 0);
        gpt2_backward(&b.m, b.B, b.T, 1.0f, fused_unit_done, &c);
    }
    size_t diff = 0;
    for (size_t i = 0; i < a.m.layout.num_params; i++) diff += a.m.params_f32[i] != b.m.params_f32[i];
    char why[96];
    snprintf(why, sizeof(why), "%zu of %zu parameters differ", diff, a.m.layout.num_params);
    test_check(diff == 0, why, "lomo: 3 fused-backward steps equal plain SGD's bit for bit");
    size_t gb = ledger_category_bytes(&b.led, MEM_GRADS);
    size_t want = (b.m.layout.unit_size[0] + b.m.layout.unit_size[1]) * sizeof(float);
    snprintf(why, sizeof(why), "ledger grads %zu bytes, want %zu (unit 0 + one block)", gb, want);
    test_check(gb == want && b.m.grads_f32 == NULL && b.m.grads_bf16 == NULL, why,
               "lomo: ledger gradient bytes are unit 0 + one block (%zu), not the model (%zu)", gb,
               a.m.layout.num_params * sizeof(float));
    state_layout_free(&oa.layout);
    state_layout_free(&ob.layout);
    tiny_free(&a);
    tiny_free(&b);
}

// For every optimizer: the ledger's optimizer-state bytes equal the layouts' formula exactly, on the
// tiny model (real allocation) and on GPT-2 124M (dry ledger), bf16 and fp32.
static void check_state_bytes(const VecFile* vf) {
    for (int i = 0; i < NUM_OPTIMIZERS; i++) {
        const Optimizer* o = OPTIMIZERS[i];
        int fused = (o->flags & OPT_FUSED_BACKWARD) != 0;
        Tiny t;
        tiny_build(&t, vf, PRECISION_BF16, fused);
        OptRun r;
        optimizer_setup(&r, &t.m, o, &o->defaults, &t.led);
        size_t want = 0;
        for (int k = 0; k < t.m.layout.num_tensors; k++) want += optim_state_bytes(o, &o->defaults, &t.m.layout.tensors[k].shape);
        size_t got = ledger_category_bytes(&t.led, MEM_OPT_STATE);
        char why[128];
        snprintf(why, sizeof(why), "ledger %zu, layouts %zu", got, want);
        test_check(got == want && want == optimizer_layout_bytes(&t.m.layout, o, &o->defaults), why,
                   "%s: ledger state bytes equal the layout formula (tiny model, %zu bytes)", o->name, got);
        state_layout_free(&r.layout);
        tiny_free(&t);
        GPT2Config cfg = parse_model("d12");
        GPT2 m;
        Ledger dry;
        ledger_init(&dry, 1);
        gpt2_build(&m, &cfg, PRECISION_FP32, 4, 64, fused, &dry);
        optimizer_setup(&r, &m, o, &o->defaults, &dry);
        got = ledger_category_bytes(&dry, MEM_OPT_STATE);
        want = optimizer_layout_bytes(&m.layout, o, &o->defaults);
        snprintf(why, sizeof(why), "ledger %zu, layouts %zu", got, want);
        test_check(got == want, why, "%s: ledger state bytes equal the layout formula (d12, %.4f B/param)", o->name,
                   (double)got / m.layout.num_params);
        state_layout_free(&r.layout);
        model_layout_free(&m.layout);
    }
}

int main(void) {
    VecFile vf = vec_load("test/vectors/gpt2_tiny.bin");
    check_model(&vf, PRECISION_FP32);
    check_model(&vf, PRECISION_BF16);
    check_bf16_rounding(&vf);
    check_bf16_master(&vf);
    check_stochastic_rounding();
    check_lomo(&vf);
    check_state_bytes(&vf);
    vec_free(&vf);
    return test_finish("test_gpt2");
}
