// optim/registry.c: the one switch on the CPU side: optim/registry.h's list as a table.
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include "optim.h"
#include "registry.h"

#define DECLARE_OPTIMIZER(o, backends) extern const Optimizer o;
OPTIMIZER_LIST(DECLARE_OPTIMIZER)
#define OPTIMIZER_ADDRESS(o, backends) &o,
const Optimizer* const OPTIMIZERS[] = { OPTIMIZER_LIST(OPTIMIZER_ADDRESS) };
const int NUM_OPTIMIZERS = (int)(sizeof(OPTIMIZERS) / sizeof(OPTIMIZERS[0]));

// Parallel to OPTIMIZERS[]: 1 where the registry line says CPU_CUDA.
#define OPTIMIZER_HAS_CUDA(o, backends) OPTIM_HAS_CUDA_##backends,
static const int HAS_CUDA[] = { OPTIMIZER_LIST(OPTIMIZER_HAS_CUDA) };

int optim_has_cuda(const Optimizer* o) {
    for (int i = 0; i < NUM_OPTIMIZERS; i++)
        if (OPTIMIZERS[i] == o) return HAS_CUDA[i];
    return 0;
}

// HuggingFace's optimizer names (transformers' TrainingArguments.optim) for ours. A target that is not
// in the registry (an optimizer not added yet) makes its aliases unknown names, nothing worse.
static const struct { const char* alias; const char* target; } ALIASES[] = {
    {"adamw_torch", "adamw"}, {"adamw_torch_fused", "adamw"}, {"adamw_hf", "adamw"},
    {"adamw_bnb_8bit", "adamw8bit"}, {"adamw_8bit", "adamw8bit"},
    {"paged_adamw_8bit", "paged_adamw8bit"},
    {"lion_32bit", "lion"}, {"lion_8bit", "lion8bit"},
    {"galore_adamw", "galore_adamw"},
};
#define NUM_ALIASES ((int)(sizeof(ALIASES) / sizeof(ALIASES[0])))

static const Optimizer* find_exact(const char* name) {
    for (int i = 0; i < NUM_OPTIMIZERS; i++)
        if (strcasecmp(OPTIMIZERS[i]->name, name) == 0) return OPTIMIZERS[i];
    return NULL;
}

const Optimizer* optim_find(const char* name) {
    const Optimizer* o = find_exact(name);
    for (int i = 0; !o && i < NUM_ALIASES; i++)
        if (strcasecmp(ALIASES[i].alias, name) == 0) o = find_exact(ALIASES[i].target);
    return o;
}

int optim_aliases(const Optimizer* o, char* out, size_t n) {
    int k = 0;
    size_t len = 0;
    if (n) out[0] = 0;
    for (int i = 0; i < NUM_ALIASES; i++) {
        if (strcmp(ALIASES[i].target, o->name) != 0 || strcmp(ALIASES[i].alias, o->name) == 0) continue;
        int w = snprintf(out + len, len < n ? n - len : 0, "%s%s", k ? ", " : "", ALIASES[i].alias);
        if (w > 0 && len + (size_t)w < n) len += (size_t)w;
        k++;
    }
    return k;
}

void optim_print_names(FILE* f) {
    for (int i = 0; i < NUM_OPTIMIZERS; i++) fprintf(f, "%s%s", i ? ", " : "", OPTIMIZERS[i]->name);
}

size_t optim_state_bytes(const Optimizer* o, const OptHyper* h, const ParamShape* s) {
    StateSpec specs[OPT_MAX_STATES];
    int n = o->layout(h, s, specs);
    size_t b = 0;
    for (int i = 0; i < n; i++) b += specs[i].count * dtype_size(specs[i].dtype);
    return b;
}
