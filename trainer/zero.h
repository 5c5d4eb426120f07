// trainer/zero.h: ZeRO stage 1 (-zero 1): each rank keeps the optimizer state and, in bf16 mode, the
// fp32 master weights of its shard of the parameters only, and updates only that shard; the updated
// weights (the bf16 working copy, or the fp32 weights in fp32 mode) are then all-gathered.
//
// The shard: the flat parameter vector (num_params, the 16 tensors back to back) is cut into `world`
// contiguous ranges, rank r owning [bound[r], bound[r+1]), so that one all-gather moves the weights and
// one reduce-scatter hands each rank the averaged gradient of its range. The cuts start evenly spaced
// and are moved to the nearest boundary of the optimizer's shard unit (optim.h, OptShardUnit):
//  - OPT_SHARD_ELEMENT (sgd, sgdm, adam, adamw, lion, sophia and its Hessian EMA): any element; the
//    update of an element depends on that element's gradient and state only, so the shard's update is
//    bit-identical to the same elements of the unsharded update.
//  - OPT_SHARD_QBLOCK (adam8bit, adamw8bit, paged_adamw8bit, lion8bit, sgdm8bit): whole quantization
//    blocks, counted from the tensor's start, in pieces of at least max(min_8bit_size, 4096) elements,
//    so that each piece of a quantized tensor is itself quantized with the same blocks (bit-identical
//    again), and a tensor too small to quantize is small everywhere.
//  - OPT_SHARD_ROWS (adafactor, came): whole rows of a matrix; vectors whole. A rank holding rows
//    [r0, r1) of a matrix keeps its rows' state (v_row, exp_avg, CAME's res_row) and the whole column
//    state (v_col, res_col), equal on every rank that shares the matrix. The statistics over all rows
//    (column sums, mean of the row state, the update's RMS, Adafactor's RMS(theta)) are the ranks'
//    partial sums completed by explicit reduce calls (OptStep.reduce; the trainer passes one for each
//    matrix this plan marks `shared`). Only the matrices a cut falls inside are shared (at most world-1),
//    so every other tensor's update is bit-identical; a shared matrix's differs only in how its double
//    sums are split before they are added (the ranks' partials, in rank order).
//  - OPT_SHARD_TENSOR (every other optimizer: muon, adam_mini, adamw4bit, galore_adamw): whole tensors,
//    exact with no collective inside the optimizer; the cost is balance (a tensor is never split, so the
//    embedding, most of a small model, sits on one rank).
//  - LOMO and AdaLomo are refused: they update inside backward, unit by unit, from a gradient that only
//    exists for that unit; LOMO keeps no state at all and AdaLomo's factored state is rows + cols per
//    matrix, so there is nothing worth sharding.
// Each rank's state layout is the optimizer's own layout over its slices (a slice of an element-wise or
// 8-bit tensor is a vector of its elements, a row slice a matrix of its rows), so the ledger holds
// exactly the shard's state bytes.
// Checkpoints hold the unsharded layout: zero_gather_state assembles it, zero_scatter_state takes a
// rank's part back out, so any world size, with or without -zero, resumes any checkpoint.
//
// The plan is plain arithmetic (no collective): -memory-only plans any rank of any world size with it
// (-plan-world N), and advise.c reads the largest rank's bytes from it.
#ifndef TRAINER_ZERO_H
#define TRAINER_ZERO_H

#include <stddef.h>
#include <stdio.h>
#include "optim/optim.h"
#include "optim/state.h"
#include "trainer/model.h"
#include "trainer/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    ParamShape shape;   // the slice as the optimizer sees it (numel 0: this rank has none of the tensor)
    size_t start;       // first element of the slice inside the tensor
    int shared;         // 1: rows of a matrix that other ranks hold other rows of (OPT_SHARD_ROWS): its
                        // step needs an OptReduce over the ranks first[i]..last[i]
} ZeroSlice;

typedef struct {
    int world, rank;
    int num_tensors;
    const Optimizer* opt;
    OptHyper hyper;
    size_t* bound;          // (world + 1) rank r owns flat elements [bound[r], bound[r+1])
    ZeroSlice* slices;      // (world, num_tensors) every rank's slice of every tensor
    int* index;             // (world, num_tensors) the slice's position in that rank's layout, -1 if none
    int* first;             // (num_tensors) the lowest rank holding a piece of tensor i
    int* last;              // (num_tensors) the highest (first == last: one rank holds it whole)
    StateLayout* layouts;   // (world) each rank's state layout over its non-empty slices, in tensor order
    StateLayout full;       // the unsharded layout (checkpoints)
    ParamShape* shapes;     // (num_tensors) the whole tensors' shapes
} ZeroPlan;

// NULL if `opt` can shard its state, else why not (one line for user_error).
const char* zero_unsupported(const Optimizer* opt);
// The plan of `rank` in a world of `world` ranks, cut at the optimizer's own shard unit (opt->shard).
void zero_plan_build(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world, int rank);
// The same at another unit: a backend whose step cannot take an OptReduce yet asks for OPT_SHARD_TENSOR
// (a coarser unit is always exact).
void zero_plan_build_unit(ZeroPlan* z, const ModelLayout* ml, const Optimizer* opt, const OptHyper* h, int world,
                          int rank, OptShardUnit unit);
void zero_plan_free(ZeroPlan* z);
// This rank's slice of tensor i.
static inline const ZeroSlice* zero_slice(const ZeroPlan* z, int i) { return &z->slices[(size_t)z->rank * z->num_tensors + i]; }
// Collective: every rank's state (`mine`, this rank's layout buffers) into `full` (the unsharded layout's
// buffers, on every rank).
void zero_gather_state(const ZeroPlan* z, void* const* mine, void* const* full);
// This rank's part of the unsharded state `full` into `mine`.
void zero_scatter_state(const ZeroPlan* z, void* const* full, void* const* mine);
// Elements of rank r's range of the flat parameters (its fp32 master in bf16 mode).
static inline size_t zero_count(const ZeroPlan* z, int r) { return z->bound[r + 1] - z->bound[r]; }
// The bytes rank r keeps for the fp32 master (bf16 mode) and the optimizer state: what -zero 1 shards.
size_t zero_rank_bytes(const ZeroPlan* z, int r, int bf16);
// The rank whose zero_rank_bytes is largest (the lowest such rank).
int zero_largest_rank(const ZeroPlan* z, int bf16);
// Rank q's shard in one line (each rank prints its own; a -plan-world plan lists them all): its range of
// the flat parameters, the fp32 master (bf16 mode) and the optimizer-state bytes it keeps, which its
// ledger holds exactly. Both trainers print it.
void zero_print_shard(FILE* f, const ZeroPlan* z, size_t num_params, int q, int bf16);
// -zero 1 across ranks, row shards (OPT_SHARD_ROWS): for every matrix the plan splits in rows, the group of
// ranks that hold it (trainer/dist.h) and the OptReduce its steps get, summing over that group in rank
// order over MPI (the same bits on each member). Both trainers use it: the CPU's step reduces its double
// sums through it, the CUDA kernels' partial sums are staged to the host and reduced through it too
// (optim/factored.cuh), so the GPU's reductions are the MPI code the CPU tests run.
typedef struct {
    int num_tensors;
    DistGroup** groups;         // (num_tensors) NULL where no group (a whole tensor, or another unit)
    OptReduce* reduce;          // (num_tensors) the hook of matrix i: rows = the whole matrix's rows
} ZeroReduce;
// Collective over every rank: every rank creates the groups in tensor order. Nothing (all NULL) unless
// the plan's unit is rows and the world has more than one rank.
void zero_reduce_connect(ZeroReduce* zr, const ZeroPlan* z);
// The hook for this rank's slice of tensor i, NULL when the slice is not shared (whole here, or none).
const OptReduce* zero_reduce_of(const ZeroReduce* zr, const ZeroPlan* z, int i);
void zero_reduce_free(ZeroReduce* zr);
// A unit's fp32 gradient scratch (trainer/model.h: the unit's tensors packed at their scratch_offset)
// cut at the ranks' bounds: rank r's elements of unit `unit` are scratch [cuts[r], cuts[r+1]) (world + 1
// entries, in rank order), so one reduce-scatter of the scratch hands each rank its part.
void zero_unit_cuts(const ZeroPlan* z, const ModelLayout* ml, int unit, size_t* cuts);

#ifdef __cplusplus
}
#endif

#endif
