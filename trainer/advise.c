// trainer/advise.c: the optimizer decision guide; see advise.h.
//
// The framework (the article's, with our exact bytes in place of its per-parameter rules of thumb):
//  1. Memory is the first filter: params + master + grads + optimizer state must fit in the budget
//     left after reserving a share for activations and workspace (-reserve; the exact activation bytes
//     depend on batch and sequence length: ./train -memory-only 1 prints them).
//  2. Among the optimizers that fit, prefer by task:
//     finetune: adamw (the standard) > adamw8bit (8-bit states are close to lossless in fine-tuning)
//               > came > adafactor (factored states) > adalomo > lomo (fused into backward, no full
//               gradient held: the last resort, plain SGD for lomo);
//     pretrain: adamw > adamw8bit > came (Adam-like convergence at near-Adafactor memory) > adafactor.
//  3. If nothing fits, say how many such GPUs the first choice and the lightest choice need.
// Over -gpus N the memory per GPU is ZeRO-1's, as the trainer's -zero 1 keeps it: the bf16 params and
// grads whole on every GPU, the fp32 master and the optimizer state sharded, and the GPU that keeps the
// most is the one that must fit: trainer/zero.h's plan, the same the trainer's ledger allocates (so
// whole-tensor shards, e.g. Muon's embedding, count as they fall). The GPU counts are the fewest GPUs
// with which that largest share fits; LOMO and AdaLomo do not shard (each GPU keeps everything).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "trainer/advise.h"
#include "trainer/cli.h"
#include "trainer/model.h"
#include "trainer/zero.h"
#include "common/util.h"

#define ADV_VOCAB_PADDED 50304
#define ADV_MAX_T 1024
#define ADV_GB 1e9

int advise_requested(int argc, char** argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-advise") == 0) return !(i + 1 < argc && strcmp(argv[i + 1], "0") == 0);
    return 0;
}

// ---------------------------------------------------------------- the model's tensors
// The trainer's own layout (trainer/model.c): the same tensors, shapes and roles the ledger sees.
AdviseMemory advise_memory(const Optimizer* o, const GPT2Config* cfg, int bf16) {
    ModelLayout ml;
    model_layout_build(&ml, cfg);
    AdviseMemory m;
    m.num_params = ml.num_params;
    m.params = m.num_params * (bf16 ? 2 : 4);
    m.master = bf16 ? m.num_params * 4 : 0;
    if (o->flags & OPT_FUSED_BACKWARD)
        m.grads = 4 * (ml.unit_size[0] + ml.unit_size[1]); // fp32 gradients of the embedding unit and one block (padded as the trainer's scratch)
    else
        m.grads = m.num_params * (bf16 ? 2 : 4);
    m.state = optimizer_layout_bytes(&ml, o, &o->defaults);
    m.total = m.params + m.master + m.grads + m.state;
    model_layout_free(&ml);
    return m;
}

AdviseMemory advise_memory_gpus(const Optimizer* o, const GPT2Config* cfg, int bf16, int gpus) {
    AdviseMemory m = advise_memory(o, cfg, bf16);
    if (gpus <= 1 || zero_unsupported(o)) return m;
    ModelLayout ml;
    model_layout_build(&ml, cfg);
    ZeroPlan z;
    zero_plan_build(&z, &ml, o, &o->defaults, gpus, 0);
    int k = zero_largest_rank(&z, bf16);
    m.master = bf16 ? zero_count(&z, k) * sizeof(float) : 0;
    m.state = z.layouts[k].total_bytes;
    m.total = m.params + m.master + m.grads + m.state;
    zero_plan_free(&z);
    model_layout_free(&ml);
    return m;
}

int advise_min_gpus(const Optimizer* o, const GPT2Config* cfg, int bf16, double usable) {
    AdviseMemory m = advise_memory(o, cfg, bf16);
    if ((double)m.total <= usable) return 1;
    double whole = (double)(m.params + m.grads), shard = (double)(m.master + m.state);
    if (zero_unsupported(o) || whole >= usable) return 0;
    // no GPU's share is below the average: fewer than this many never fit
    int n = (int)fmin(ceil(shard / (usable - whole) - 1e-12), 1 << 20);
    if (n < 2) n = 2;
    for (int last = n * 2 + 64; n <= last && n <= (1 << 20); n++)
        if ((double)advise_memory_gpus(o, cfg, bf16, n).total <= usable) return n;
    return 0;
}

// A GPT shape of about n parameters: the nearest member of the GPT-2/GPT-3 family itself when its count
// is within 10% of n, so a nominal size gets the one shape every table uses for it (7e9 -> GPT-3 6.7B,
// 32:4096:32, 6.65B parameters with GPT-2's vocabulary, as scripts/memory_table.sh's "7B"; 70e9 -> 80:8192,
// 64.85B); otherwise that member's width and the depth that brings the count closest to n.
static void shape_for(double n, int* L, int* C, int* H) {
    static const int FAMILY[][2] = { // (L, C): GPT-2 small..XL, GPT-3 2.7B..175B, a 70B shape
        {12, 768}, {24, 1024}, {36, 1280}, {48, 1600}, {24, 2048}, {32, 2560},
        {32, 4096}, {40, 5120}, {80, 8192}, {96, 12288} };
    int nf = (int)(sizeof(FAMILY) / sizeof(FAMILY[0]));
    int best = 0;
    double best_d = 1e300;
    for (int i = 0; i < nf; i++) {
        double c = FAMILY[i][1];
        double p = (ADV_VOCAB_PADDED + ADV_MAX_T + 2) * c + FAMILY[i][0] * (12 * c * c + 13 * c);
        double d = fabs(log(p / n));
        if (d < best_d) { best_d = d; best = i; }
    }
    double c = FAMILY[best][1];
    double l = best_d < log(1.1) ? FAMILY[best][0] : (n - (ADV_VOCAB_PADDED + ADV_MAX_T + 2) * c) / (12 * c * c + 13 * c);
    *C = (int)c;
    *L = l < 1 ? 1 : l > 200 ? 200 : (int)lround(l);
    *H = *C >= 2048 ? *C / 128 : *C / 64;
}

// ---------------------------------------------------------------- the guide
typedef struct { const char* name; const char* why; } Choice;

static const Choice FINETUNE[] = {
    {"adamw", "the standard: full fp32 moments, nothing to tune away from the published recipes"},
    {"adamw8bit", "AdamW with 8-bit blockwise states: about a quarter of AdamW's state, close to lossless in fine-tuning"},
    {"came", "factored second moment and confidence with a full first moment: Adam-like updates at ~4 B/param"},
    {"adafactor", "factored second moment, no momentum: almost no state (row and column vectors per matrix)"},
    {"adalomo", "Adafactor's update fused into backward: almost no state and no full-model gradient buffer"},
    {"lomo", "plain SGD fused into backward: no state, no full-model gradient; needs a careful learning rate"},
};
static const Choice PRETRAIN[] = {
    {"adamw", "the standard for pre-training: full fp32 moments"},
    {"adamw8bit", "AdamW with 8-bit blockwise states: matched 32-bit Adam in its paper's pre-training runs, ~2 B/param"},
    {"came", "Adam-like convergence in pre-training with factored second moment and confidence, ~4 B/param"},
    {"adafactor", "the memory floor among adaptive methods: factored second moment, no momentum"},
};

// One optimizer's row: the bytes on the GPU that keeps the most over `gpus` GPUs, and the fewest GPUs
// it fits on ("-": none, see advise_min_gpus).
static void print_row(const char* name, const AdviseMemory* whole, const AdviseMemory* m, double usable, int need, int bytes) {
    char n[16];
    if (need) snprintf(n, sizeof(n), "%d", need); else snprintf(n, sizeof(n), "-");
    if (bytes) {
        printf("%-16s %9.4f %14zu %14zu %14zu %14zu %15zu  %-4s %5s\n", name, (double)whole->state / whole->num_params, m->params,
               m->master, m->grads, m->state, m->total, (double)m->total <= usable ? "yes" : "no", n);
        return;
    }
    printf("%-16s %9.4f %9.2f %9.2f %9.2f %9.2f %10.2f  %-4s %5s\n", name, (double)whole->state / whole->num_params,
           m->params / ADV_GB, m->master / ADV_GB, m->grads / ADV_GB, m->state / ADV_GB, m->total / ADV_GB,
           (double)m->total <= usable ? "yes" : "no", n);
}

// "adamw needs 3 such GPUs" or why no number of them does.
static void print_need(const Optimizer* o, const GPT2Config* cfg, int bf16, double usable, double mem) {
    int n = advise_min_gpus(o, cfg, bf16, usable);
    AdviseMemory m = advise_memory(o, cfg, bf16);
    if (n) { printf("%s needs %d GPU%s of %.0f GB with ZeRO-1", o->name, n, n > 1 ? "s" : "", mem); return; }
    double whole = (double)(m.params + m.grads);
    if (zero_unsupported(o))
        printf("%s does not shard (each GPU keeps all of its %.2f GB) and no GPU of %.0f GB holds it", o->name, m.total / ADV_GB, mem);
    else
        printf("%s fits on no number of %.0f GB GPUs with ZeRO-1 (its bf16 params + grads alone are %.2f GB on each; "
               "ZeRO-3/FSDP, which shards those too and is not in this trainer, would need %d on paper)",
               o->name, mem, whole / ADV_GB, (int)ceil(m.total / usable - 1e-12));
}

int advise_main(int argc, char** argv) {
    double n = 0.0, mem = 80.0, reserve = 0.2;
    int gpus = 1, bf16 = 1, bytes = 0;
    const char* model = NULL;
    const char* task = "finetune";
    for (int i = 1; i < argc; i++) {
        const char* f = argv[i];
        if (i + 1 >= argc) user_error("flag %s needs a value (./train -advise 1 -params 7e9 -mem 80)", f);
        const char* v = argv[++i];
        if (!strcmp(f, "-advise")) continue;
        else if (!strcmp(f, "-params")) n = parse_float(f, v, 1e5, 1e13);
        else if (!strcmp(f, "-model")) model = v;
        else if (!strcmp(f, "-mem")) mem = parse_float(f, v, 0.001, 1e6);
        else if (!strcmp(f, "-gpus")) gpus = parse_int(f, v, 1, 1 << 16);
        else if (!strcmp(f, "-reserve")) reserve = parse_float(f, v, 0.0, 0.95);
        else if (!strcmp(f, "-bytes")) bytes = parse_int(f, v, 0, 1);
        else if (!strcmp(f, "-task")) {
            if (strcmp(v, "finetune") && strcmp(v, "pretrain")) user_error("-task must be finetune or pretrain, got '%s'", v);
            task = v;
        } else if (!strcmp(f, "-precision")) {
            if (strcmp(v, "bf16") && strcmp(v, "fp32")) user_error("precision must be bf16 or fp32, got '%s'", v);
            bf16 = !strcmp(v, "bf16");
        } else user_error("unknown flag %s for -advise (flags: -params N | -model S, -mem GB, -gpus N, "
                          "-task finetune|pretrain, -reserve F, -precision bf16|fp32, -bytes 1)", f);
    }
    GPT2Config cfg = parse_model("d1");
    if (model) {
        cfg = parse_model(model);
    } else {
        if (n <= 0) user_error("-advise needs the model size: -params N (e.g. 7e9) or -model L:C:H");
        shape_for(n, &cfg.num_layers, &cfg.channels, &cfg.num_heads);
    }
    int L = cfg.num_layers, C = cfg.channels, H = cfg.num_heads;
    int pretrain = !strcmp(task, "pretrain");
    double usable = mem * ADV_GB * (1.0 - reserve); // what each GPU has for params + master + grads + state

    AdviseMemory ref = advise_memory(OPTIMIZERS[0], &cfg, bf16);
    printf("decision guide: GPT shape %d:%d:%d (%zu parameters%s), %s, %d x %.0f GB, %.0f%% kept for "
           "activations and workspace => %.2f GB per GPU for params + master + grads + optimizer state\n",
           L, C, H, ref.num_params, model ? "" : ", the nearest GPT-family shape", task, gpus, mem,
           100.0 * reserve, usable / ADV_GB);
    printf("precision %s; %s; state from each optimizer's exact layout (default hyperparameters);\n",
           bf16 ? "bf16 (bf16 params and grads, fp32 master)" : "fp32 (no master copy)", bytes ? "bytes" : "GB = 10^9 bytes");
    if (gpus > 1)
        printf("per GPU: ZeRO-1 over the %d GPUs as the trainer's -zero 1 keeps it (params and grads whole on every GPU, the fp32\n"
               "master and the optimizer state sharded; the GPU that keeps the most, from the trainer's own shard plan;\n"
               "the optimizers that update inside backward, lomo and adalomo, do not shard);\n", gpus);
    printf("GPUs: the fewest of these GPUs it fits on with ZeRO-1 (-: on none; the advice says why)\n");
    if (bytes) printf("%-16s %9s %14s %14s %14s %14s %15s  %-4s %5s\n", "optimizer", "state B/p", "params", "master", "grads",
                      "state", "per GPU bytes", "fits", "GPUs");
    else printf("%-16s %9s %9s %9s %9s %9s %10s  %-4s %5s\n", "optimizer", "state B/p", "params", "master", "grads",
                "state", "per GPU GB", "fits", "GPUs");
    for (int i = 0; i < NUM_OPTIMIZERS; i++) {
        AdviseMemory w = advise_memory(OPTIMIZERS[i], &cfg, bf16), m = advise_memory_gpus(OPTIMIZERS[i], &cfg, bf16, gpus);
        print_row(OPTIMIZERS[i]->name, &w, &m, usable, advise_min_gpus(OPTIMIZERS[i], &cfg, bf16, usable), bytes);
    }

    const Choice* list = pretrain ? PRETRAIN : FINETUNE;
    int nlist = pretrain ? (int)(sizeof(PRETRAIN) / sizeof(PRETRAIN[0])) : (int)(sizeof(FINETUNE) / sizeof(FINETUNE[0]));
    const Choice* pick = NULL;
    AdviseMemory pm = {0};
    for (int i = 0; i < nlist && !pick; i++) {
        const Optimizer* o = optim_find(list[i].name);
        if (!o) continue;
        AdviseMemory m = advise_memory_gpus(o, &cfg, bf16, gpus);
        if ((double)m.total <= usable) { pick = &list[i]; pm = m; }
    }
    const Optimizer* first = optim_find(list[0].name);
    if (pick) {
        printf("advice: %s: %s.\n", pick->name, pick->why);
        printf("  it needs %.2f GB per GPU for params + master + grads + state (%.1f%% of the %.2f GB per GPU)",
               pm.total / ADV_GB, 100.0 * pm.total / usable, usable / ADV_GB);
        if (first && strcmp(first->name, pick->name)) { printf("; "); print_need(first, &cfg, bf16, usable, mem); }
        printf(".\nsummary: advise=%s total_gb=%.4f budget_gb=%.4f fits=1\n", pick->name, pm.total / ADV_GB, usable / ADV_GB);
    } else {
        const Optimizer* last = optim_find(list[nlist - 1].name);
        AdviseMemory lm = advise_memory_gpus(last, &cfg, bf16, gpus);
        printf("advice: nothing fits in %d x %.0f GB. ", gpus, mem);
        print_need(first, &cfg, bf16, usable, mem);
        printf("; the lightest %s choice, ", task);
        print_need(last, &cfg, bf16, usable, mem);
        printf(".");
        if (!pretrain) printf(" On a GPU, paged_adamw8bit can also keep its state in host memory.");
        printf("\nsummary: advise=none total_gb=%.4f budget_gb=%.4f fits=0\n", lm.total / ADV_GB, usable / ADV_GB);
    }
    return 0;
}
