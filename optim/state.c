// optim/state.c: see state.h.
#include <stdio.h>
#include <string.h>
#include "optim/state.h"
#include "common/util.h"

void state_layout_build(StateLayout* sl, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes, int n) {
    memset(sl, 0, sizeof(*sl));
    sl->num_tensors = n;
    sl->tensors = (TensorStates*)xcalloc(n > 0 ? (size_t)n : 1, sizeof(TensorStates));
    for (int i = 0; i < n; i++) {
        TensorStates* ts = &sl->tensors[i];
        StateSpec specs[OPT_MAX_STATES];
        ts->nstate = opt->layout(h, &shapes[i], specs);
        CHECK(ts->nstate >= 0 && ts->nstate <= OPT_MAX_STATES);
        for (int s = 0; s < ts->nstate; s++) {
            int b = 0;
            while (b < sl->nbuf && strcmp(sl->buf_name[b], specs[s].name) != 0) b++;
            if (b == sl->nbuf) {
                CHECK(sl->nbuf < MAX_STATE_BUFFERS);
                sl->buf_name[b] = specs[s].name;
                snprintf(sl->buf_label[b], sizeof(sl->buf_label[b]), "opt: %s", specs[s].name);
                sl->nbuf++;
            }
            ts->buf[s] = b;
            ts->offset[s] = sl->buf_bytes[b];
            ts->dtype[s] = specs[s].dtype;
            // packed back to back (no padding), so the ledger's state bytes are exactly the layout's formula;
            // each buffer holds one dtype, so every element stays aligned to its size
            sl->buf_bytes[b] += specs[s].count * dtype_size(specs[s].dtype);
        }
    }
    for (int b = 0; b < sl->nbuf; b++) sl->total_bytes += sl->buf_bytes[b];
}

void state_layout_free(StateLayout* sl) {
    free(sl->tensors);
    sl->tensors = NULL;
    sl->num_tensors = 0;
}
