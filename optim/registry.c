// optim/registry.c: the one switch on the CPU side: optim/registry.h's list as a table.
#include <string.h>
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

const Optimizer* optim_find(const char* name) {
    for (int i = 0; i < NUM_OPTIMIZERS; i++)
        if (strcmp(OPTIMIZERS[i]->name, name) == 0) return OPTIMIZERS[i];
    return NULL;
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
