// optim/registry.c: the one switch. Adding an optimizer = its own files + one line below.
#include <string.h>
#include <stdio.h>
#include "optim.h"

// One line per optimizer, in the order `-opt list` prints them.
#define OPTIMIZER_LIST(X) \
    X(OPT_SGD)            \
    X(OPT_SGDM)           \
    X(OPT_ADAM)           \
    X(OPT_ADAMW)          \
    X(OPT_LION)           \
    X(OPT_SOPHIA)         \
    X(OPT_LOMO)           \
    X(OPT_ADAFACTOR)      \
    X(OPT_CAME)           \
    X(OPT_ADALOMO)        \
    X(OPT_ADAM8BIT)       \
    X(OPT_ADAMW8BIT)      \
    X(OPT_PAGED_ADAMW8BIT) \
    X(OPT_MUON)           \
    X(OPT_ADAM_MINI)      \
    X(OPT_LION8BIT)       \
    X(OPT_SGDM8BIT)       \
    /* REGISTRY-END: new optimizers go above this line */

#define DECLARE_OPTIMIZER(o) extern const Optimizer o;
OPTIMIZER_LIST(DECLARE_OPTIMIZER)
#define OPTIMIZER_ADDRESS(o) &o,
const Optimizer* const OPTIMIZERS[] = { OPTIMIZER_LIST(OPTIMIZER_ADDRESS) };
const int NUM_OPTIMIZERS = (int)(sizeof(OPTIMIZERS) / sizeof(OPTIMIZERS[0]));

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
