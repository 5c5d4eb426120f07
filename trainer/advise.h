// trainer/advise.h: the optimizer decision guide (`./train -advise 1 -params 7e9 -mem 80`).
//
// It applies the article's decision framework (task type, memory budget) with our exact numbers: the
// parameter, master-weight, gradient and optimizer-state bytes of a GPT-style model, the state bytes
// computed from each optimizer's own state layout (optim_state_bytes over the model's tensor shapes,
// the same layouts the trainer allocates from), and says which optimizer fits, why, and with what
// total memory.
//
// Hook for a trainer's main(), before its own flag parsing:
//     if (advise_requested(argc, argv)) return advise_main(argc, argv);
#ifndef TRAINER_ADVISE_H
#define TRAINER_ADVISE_H

#include <stddef.h>
#include "optim/optim.h"
#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

// 1 if argv contains the flag "-advise" (with any value but "0").
int advise_requested(int argc, char** argv);

// Parses the guide's flags (user mistakes: one line and exit 2), prints the table and the advice,
// returns the exit code (0). Flags:
//   -advise 1            this mode
//   -params N            parameter count, e.g. 7e9 (a GPT shape of about that size is chosen), or
//   -model S             an exact shape, dN or L:C:H (as the trainer's -model)
//   -mem GB              memory per GPU in GB (10^9 bytes)                         [80]
//   -gpus N              data-parallel GPUs with ZeRO-1 (the trainer's -zero 1): per GPU the largest
//                        rank's share of the trainer's own shard plan                  [1]
//   -task T              finetune or pretrain                                         [finetune]
//   -reserve F           fraction of the memory kept for activations and workspace    [0.2]
//   -precision P         bf16 (bf16 params/grads + fp32 master) or fp32                [bf16]
//   -bytes 1             the table in exact bytes instead of GB                       [0]
int advise_main(int argc, char** argv);

// What the guide computes for one optimizer on one model (exposed for tests).
typedef struct {
    size_t num_params;
    size_t params, master, grads, state;  // bytes, as the trainer's ledger lists them
    size_t total;                         // the sum of the four
} AdviseMemory;

// The exact bytes for the GPT-2-style model cfg (the trainer's own layout) under optimizer o with its
// default hyperparameters.
AdviseMemory advise_memory(const Optimizer* o, const GPT2Config* cfg, int bf16);
// The same on one GPU of `gpus` with ZeRO-1 (-zero 1): params and grads whole, the master and the state
// of the rank that keeps the most (trainer/zero.h); everything where the optimizer cannot shard.
AdviseMemory advise_memory_gpus(const Optimizer* o, const GPT2Config* cfg, int bf16, int gpus);
// The fewest GPUs with `usable` bytes each for params + master + grads + state on which the largest
// ZeRO-1 share fits; 0 when none does (params + grads alone are too big, or it cannot shard and does
// not fit on one).
int advise_min_gpus(const Optimizer* o, const GPT2Config* cfg, int bf16, double usable);

#ifdef __cplusplus
}
#endif

#endif
