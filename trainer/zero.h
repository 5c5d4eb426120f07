// trainer/zero.h: ZeRO stage 1 (-zero 1): each rank keeps the optimizer state of its shard of the
// parameters only and updates only that shard; the updated weights are then all-gathered.
//
// The shard: the flat parameter vector (num_params, the 16 tensors back to back) is cut into `world`
// contiguous ranges, rank r owning [bound[r], bound[r+1]), so that one all-gather moves the weights.
// The cuts start evenly spaced and are moved to a boundary the optimizer can update on its own:
//  - element-wise optimizers (sgd, sgdm, adam, adamw, lion, sophia and its Hessian EMA): any element;
//    the update of an element depends on that element's gradient and state only, so the shard's
//    update is bit-identical to the same elements of the unsharded update.
//  - the 8-bit family (adam8bit, adamw8bit, paged_adamw8bit): whole quantization blocks, counted from
//    the tensor's start, in pieces of at least max(min_8bit_size, 4096) elements, so that each piece of
//    a quantized tensor is itself quantized with the same blocks (bit-identical again), and a tensor
//    too small to quantize is small everywhere.
//  - the factored optimizers (adafactor, came) and any other: whole tensors. Their row and column
//    statistics and the update's RMS clipping span the whole matrix; whole tensors keep the update
//    exact with no collective inside the optimizer. The cost is balance: a tensor is never split, so
//    the embedding (V x C, most of a small model) sits on one rank.
//  - LOMO and AdaLomo are refused: they update inside backward, unit by unit, from a gradient that only
//    exists for that unit; LOMO keeps no state at all and AdaLomo's factored state is rows + cols per
//    matrix, so there is nothing worth sharding.
// Each rank's state layout is the optimizer's own layout over its slices (a slice of an element-wise
// tensor is a vector of its elements), so the ledger holds exactly the shard's state bytes.
// Checkpoints hold the unsharded layout: zero_gather_state assembles it, zero_scatter_state takes a
// rank's part back out, so any world size, with or without -zero, resumes any checkpoint.
#ifndef TRAINER_ZERO_H
#define TRAINER_ZERO_H

#include <stddef.h>
#include "optim/optim.h"
#include "optim/state.h"
#include "trainer/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    ParamShape shape;   // the slice as the optimizer sees it (numel 0: this rank has none of the tensor)
    size_t start;       // first element of the slice inside the tensor
} ZeroSlice;

typedef struct {
    int world, rank;
    int num_tensors;
    const Optimizer* opt;
    OptHyper hyper;
    size_t* bound;          // (world + 1) rank r owns flat elements [bound[r], bound[r+1])
    ZeroSlice* slices;      // (world, num_tensors) every rank's slice of every tensor
    int* index;             // (world, num_tensors) the slice's position in that rank's layout, -1 if none
    StateLayout* layouts;   // (world) each rank's state layout over its non-empty slices, in tensor order
    StateLayout full;       // the unsharded layout (checkpoints)
} ZeroPlan;

// NULL if `opt` can shard its state, else why not (one line for user_error).
const char* zero_unsupported(const Optimizer* opt);
void zero_plan_build(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world, int rank);
void zero_plan_free(ZeroPlan* z);
// This rank's slice of tensor i.
static inline const ZeroSlice* zero_slice(const ZeroPlan* z, int i) { return &z->slices[(size_t)z->rank * z->num_tensors + i]; }
// Collective: every rank's state (`mine`, this rank's layout buffers) into `full` (the unsharded layout's
// buffers, on every rank).
void zero_gather_state(const ZeroPlan* z, void* const* mine, void* const* full);
// This rank's part of the unsharded state `full` into `mine`.
void zero_scatter_state(const ZeroPlan* z, void* const* full, void* const* mine);

#ifdef __cplusplus
}
#endif

#endif
