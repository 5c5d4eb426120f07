// optim/state.h: where an optimizer's state lives. Each optimizer's layout() names the state tensors it
// keeps for one parameter tensor (optim.h); this turns those names into buffers: one buffer per state
// name ("opt: exp_avg"), each tensor's states packed back to back in tensor order, no padding. Both
// trainers allocate exactly these buffers through the ledger (so state bytes are the layouts' formula
// to the byte), and checkpoints save them as raw blobs under their labels, so a checkpoint written by
// one trainer resumes in the other.
#ifndef OPTIM_STATE_H
#define OPTIM_STATE_H

#include <stddef.h>
#include "optim/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MAX_STATE_BUFFERS 16

// Where tensor i's states live: state s is buf[s] at byte offset[s].
typedef struct {
    int nstate;
    int buf[OPT_MAX_STATES];
    size_t offset[OPT_MAX_STATES];
    DType dtype[OPT_MAX_STATES];
} TensorStates;

typedef struct {
    int nbuf;
    const char* buf_name[MAX_STATE_BUFFERS];   // the layout's state name, "exp_avg"
    char buf_label[MAX_STATE_BUFFERS][48];     // "opt: exp_avg": ledger label and checkpoint blob name
    size_t buf_bytes[MAX_STATE_BUFFERS];
    size_t total_bytes;                        // sum of buf_bytes
    TensorStates* tensors;                     // (num_tensors)
    int num_tensors;
} StateLayout;

// The state layout of optimizer opt over n tensors, in order: buffers appear in first-use order and
// each tensor's states are packed back to back (no padding) inside their buffer.
void state_layout_build(StateLayout* sl, const Optimizer* opt, const OptHyper* h, const ParamShape* shapes, int n);
void state_layout_free(StateLayout* sl);

#ifdef __cplusplus
}
#endif

#endif
