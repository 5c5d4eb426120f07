// optim/reduce_plan.h: the work split and reduction order of the statistics kernels of Adafactor/CAME
// (optim/factored.cuh) and Adam-mini (optim/adam_mini.cuh), written once for the kernels (nvcc) and for
// their host emulation (test/test_optim_fac_plan.c, gcc): the tables (host, built at setup) and the
// index functions (HD) that say which thread touches which element and in which order sums are added.
//
// Shared vocabulary. A thread block has RP_WARPS warps of 32 lanes (RP_THREADS threads). Every thread
// works on GROUPS of RP_VEC = 8 consecutive elements: one 16-byte load of bf16 (two of fp32) when the
// group is whole and its address 16-byte aligned, else eight masked scalar loads; the group and the
// order in which its elements are added are the same either way, so the sums never depend on alignment.
// Fixed-order reductions (never float atomics):
//   warp tree   rp_warp_tree: lane l adds lane l+o for o = 16, 8, 4, 2, 1 (__shfl_down_sync); lane 0 holds it
//   block sum   each thread's double, the warp trees, then the RP_WARPS warp results added in warp order
//
// ---- Adafactor / CAME (factored.cuh) --------------------------------------------------------------
// A matrix (rows, cols) is cut into TILES of RP_TILE_ROWS rows x RP_TILE_COLS = 32*8 columns (the last
// ones shorter): row tile rt, column tile ct. In a tile, warp w takes rows r0+w, r0+w+8, ... (in order),
// lane l the columns c0+8l .. c0+8l+7 of each. Per tile:
//   row partial  rowpart[i*nct + ct] = warp tree of the lanes' sums (each lane: its 8 u's in order)
//   col partial  colpart[rt*cols + j] = sum over warps w = 0..7, in order, of warp w's running sum of u
//                over its rows (rows in order)
//   per-tile sums (sum theta^2, sum U^2): block sum of each thread's running sum (rows in order, then
//                the 8 elements in order)
// A vector (1-D tensor, not factored) is cut into tiles of RP_VTILE elements; thread t takes groups
// t, t+256, ... of the tile. Then the FINISH units (a block each): ROW units of RP_UNIT_ROWS rows (a
// thread per row: row sum = its nct partials in ct order, the row EMA; the unit's sum of the new row
// state by a block sum -> rpart[unit]) and COLUMN units of RP_UNIT_COLS columns (lane = column, warp w
// adds the row tiles rt = w, w+8, ... in order, then the warps in order). sum(r) over a matrix: a warp
// over its row units (lane l: units l, l+32, ... in order; warp tree). Per-tensor sums of the per-tile
// sums: a block per tensor (thread t: tiles t, t+256, ... in order; block sum).
//
// ---- Adam-mini (adam_mini.cuh) --------------------------------------------------------------------
// Blocks that are one row (v rows of qkv, the per-row matrices, wte's tokens) are done by ROW work items
// of up to RP_MINI_ROWS rows: warp w takes rows w, w+8, ...; lane l the groups l, l+32, ... of the row;
// the row's sum of g*g = warp tree of the lanes' sums (each lane: groups in order, 8 elements in order),
// then vmean and the update in the same pass (the row is re-read from L1/L2, not HBM). The other blocks
// (q/k heads, wpe and the gains whole) are cut into SEGMENTS of at most RP_MINI_SEG elements inside one
// block: thread t adds groups t, t+256, ... (block sum) -> part[seg]; a block's sum = its segments' parts
// in segment order; the update walks the same segments.
#ifndef OPTIM_REDUCE_PLAN_H
#define OPTIM_REDUCE_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include "common/numerics.h"

#define RP_WARPS 8
#define RP_THREADS (32 * RP_WARPS)
#define RP_VEC 8                        // elements per group (one 16-byte bf16 load)
#define RP_TILE_ROWS 64                 // matrix tile rows
#define RP_TILE_COLS (32 * RP_VEC)      // matrix tile columns: a group per lane
#define RP_VTILE 8192                   // vector tile elements
#define RP_UNIT_ROWS RP_THREADS         // finish row unit: a thread per row
#define RP_UNIT_COLS 32                 // finish column unit: a lane per column
#define RP_MINI_ROWS 32                 // adam_mini row work item: 4 rows per warp
#define RP_MINI_SEG 4096                // adam_mini segment elements (at most)

// ---- factored plan ----
typedef struct {
    size_t rows, cols;      // in: a vector is (1, numel)
    int factored;           // in
    int tile0, ntiles;      // out: its tiles in the tile table
    int nrt, nct;           // out: row and column tiles (a vector: ntiles, 1)
    int unit0, nru, ncu;    // out: its finish units (row units first, then column units); 0 for a vector
    size_t rowpart_off;     // out: offset of its rows*nct row partials (doubles)
    size_t colpart_off;     // out: offset of its nrt*cols column partials (doubles)
} RpFacTensor;

typedef struct {
    int tensor, rt, ct;     // ct: 0 for a vector tile
    int pad;
    size_t r0, r1;          // rows [r0, r1) of a matrix, or elements [r0, r1) of a vector
    size_t c0, c1;          // columns [c0, c1) (a vector: 0, 0)
} RpTile;

typedef struct {
    int tensor, kind;       // kind: RP_UNIT_ROW or RP_UNIT_COL
    size_t lo, hi;          // rows or columns [lo, hi)
} RpUnit;
enum { RP_UNIT_ROW = 0, RP_UNIT_COL = 1 };

typedef struct {
    int ntiles, nunits;
    RpTile* tiles;
    RpUnit* units;
    size_t nrowpart, ncolpart;  // scratch doubles
} RpFacPlan;

static inline size_t rp_cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

// Fills the out fields of t[0..n) and the tables (malloc'd; rp_fac_plan_free).
static inline RpFacPlan rp_fac_plan_build(RpFacTensor* t, int n) {
    RpFacPlan p;
    memset(&p, 0, sizeof(p));
    for (int i = 0; i < n; i++) {
        if (t[i].factored) {
            t[i].nrt = (int)rp_cdiv(t[i].rows, RP_TILE_ROWS);
            t[i].nct = (int)rp_cdiv(t[i].cols, RP_TILE_COLS);
            t[i].ntiles = t[i].nrt * t[i].nct;
            t[i].nru = (int)rp_cdiv(t[i].rows, RP_UNIT_ROWS);
            t[i].ncu = (int)rp_cdiv(t[i].cols, RP_UNIT_COLS);
            t[i].rowpart_off = p.nrowpart;
            t[i].colpart_off = p.ncolpart;
            p.nrowpart += t[i].rows * (size_t)t[i].nct;
            p.ncolpart += (size_t)t[i].nrt * t[i].cols;
        } else {
            t[i].ntiles = (int)rp_cdiv(t[i].cols, RP_VTILE);
            t[i].nrt = t[i].ntiles;
            t[i].nct = 1;
            t[i].nru = t[i].ncu = 0;
        }
        t[i].tile0 = p.ntiles;
        t[i].unit0 = p.nunits;
        p.ntiles += t[i].ntiles;
        p.nunits += t[i].nru + t[i].ncu;
    }
    p.tiles = (RpTile*)calloc((size_t)(p.ntiles > 0 ? p.ntiles : 1), sizeof(RpTile));
    p.units = (RpUnit*)calloc((size_t)(p.nunits > 0 ? p.nunits : 1), sizeof(RpUnit));
    for (int i = 0; i < n; i++) {
        int k = t[i].tile0;
        if (t[i].factored) {
            // row tiles outer, column tiles inner: a block's consecutive tiles share rows
            for (int rt = 0; rt < t[i].nrt; rt++)
                for (int ct = 0; ct < t[i].nct; ct++, k++) {
                    RpTile* x = &p.tiles[k];
                    x->tensor = i; x->rt = rt; x->ct = ct;
                    x->r0 = (size_t)rt * RP_TILE_ROWS;
                    x->r1 = x->r0 + RP_TILE_ROWS < t[i].rows ? x->r0 + RP_TILE_ROWS : t[i].rows;
                    x->c0 = (size_t)ct * RP_TILE_COLS;
                    x->c1 = x->c0 + RP_TILE_COLS < t[i].cols ? x->c0 + RP_TILE_COLS : t[i].cols;
                }
            int u = t[i].unit0;
            for (int r = 0; r < t[i].nru; r++, u++) {
                p.units[u].tensor = i; p.units[u].kind = RP_UNIT_ROW;
                p.units[u].lo = (size_t)r * RP_UNIT_ROWS;
                p.units[u].hi = p.units[u].lo + RP_UNIT_ROWS < t[i].rows ? p.units[u].lo + RP_UNIT_ROWS : t[i].rows;
            }
            for (int c = 0; c < t[i].ncu; c++, u++) {
                p.units[u].tensor = i; p.units[u].kind = RP_UNIT_COL;
                p.units[u].lo = (size_t)c * RP_UNIT_COLS;
                p.units[u].hi = p.units[u].lo + RP_UNIT_COLS < t[i].cols ? p.units[u].lo + RP_UNIT_COLS : t[i].cols;
            }
        } else {
            for (int v = 0; v < t[i].ntiles; v++, k++) {
                RpTile* x = &p.tiles[k];
                x->tensor = i; x->rt = v; x->ct = 0;
                x->r0 = (size_t)v * RP_VTILE;
                x->r1 = x->r0 + RP_VTILE < t[i].cols ? x->r0 + RP_VTILE : t[i].cols;
            }
        }
    }
    return p;
}

static inline void rp_fac_plan_free(RpFacPlan* p) {
    free(p->tiles);
    free(p->units);
    memset(p, 0, sizeof(*p));
}

// The k-th row of warp w in a matrix tile (k = 0, 1, ...; past the tile: >= r1).
HD static inline size_t rp_tile_row(const RpTile* x, int warp, int k) { return x->r0 + (size_t)warp + (size_t)k * RP_WARPS; }
// Lane l's first column in a matrix tile, and how many of its 8 columns are in the matrix (0..8).
HD static inline size_t rp_tile_col(const RpTile* x, int lane) { return x->c0 + (size_t)lane * RP_VEC; }
HD static inline int rp_group_len(size_t start, size_t end) {
    return start >= end ? 0 : (end - start < RP_VEC ? (int)(end - start) : RP_VEC);
}
// The k-th group of thread tid in a vector tile or a segment [lo, hi): its first element.
HD static inline size_t rp_flat_group(size_t lo, int tid, int k) { return lo + ((size_t)tid + (size_t)k * RP_THREADS) * RP_VEC; }

// ---- Adam-mini plan ----
enum { RP_MINI_ROWITEM = 0, RP_MINI_SEGITEM = 1 };
typedef struct {
    int tensor, kind;       // RP_MINI_ROWITEM: rows, each its own block; RP_MINI_SEGITEM: a segment of one block
    size_t lo;              // first element (in the tensor)
    size_t len;             // ROWITEM: the row length; SEGITEM: the segment's elements
    size_t nrows;           // ROWITEM: rows in this item (1 for a segment)
    size_t block;           // ROWITEM: the tensor-local vmean index of its first row; SEGITEM: global multi-row block
} RpMiniItem;

// The k-th row of warp w in a row item (past the item: >= nrows), and lane l's k-th group in a row.
HD static inline size_t rp_mini_row(int warp, int k) { return (size_t)warp + (size_t)k * RP_WARPS; }
HD static inline size_t rp_mini_row_group(int lane, int k) { return ((size_t)lane + (size_t)k * 32) * RP_VEC; }

#endif
