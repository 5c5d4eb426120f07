// test/test_optim_q4_plan.c: adamw4bit's CUDA kernels (optim/adamw4bit.cuh) replayed on the host, warp by
// warp and lane by lane, with the plan's own functions (optim/adamw4bit_plan.h, the header the kernels
// include), against the CPU step (optim/adamw4bit.c): no GPU needed.
//
// Per step, as adamw4bit_step_launch: the scratch maxima zeroed; a4_stats_kernel (tiles of 64 rows x 256
// columns of the rank-1 matrices: the forward tile cursor, each warp's rows in batches of A4_SBATCH, each
// lane's group of 8 columns by vector or scalar loads, the row max by an xor butterfly, the column maxima
// through the shared-memory fold in warp order, the atomicMax on the float's bits, read as an unsigned
// compare into the scratch); a4_block_kernel (a warp per 128-element block, the persistent grid's groups
// of A4_WARPS blocks, the forward block cursor, 4 elements per lane by vector or scalar accesses, the
// old scales read by every lane before lane 0 writes the new ones, the codes by q4_nearest_bs); the new
// maxima copied into v_row and v_col; the small tensors (fp32 m, v) elementwise. The element math is
// adamw4bit.h's (the kernels' HD functions). Every access is checked: inside its tensor, a vector access
// at its alignment (16-byte bf16 groups, 4-byte code words, 16-byte master, 8-byte bf16 quads); every
// master element written exactly once, nothing outside the tensors.
//
// Tensors: 1, 3, 127 (fp32 state), 33x65 (2145: fp32 state), 4097 (a vector: blockwise v, a lone last
// code), 3x5000 (fewer rows than warps), 129x67 (odd columns: scalar groups; 128-blocks straddle rows;
// a zero row and a zero column: 0/0 codes), 72x264 and 200x520 (2-4 row tiles, 2-3 column tiles, 8-aligned
// columns: vector groups), 4099 (a vector); at odd flat offsets with gaps, or every offset a multiple of 8;
// the state packed as the layout packs it (so v codes start at odd bytes after 4097). Grids of 1, 3, 7
// thread blocks and one per unit; 3 steps with a schedule and clipping; step 2 puts a NaN and an Inf
// into rank-1 matrices and a NaN into a vector; round to nearest and stochastic bf16 copies.
// Expected: master, bf16 copy, every state byte bit-identical to the CPU's; non-finite counts equal.
// Then mutants (wrong pieces of the plan, each of which the GPU test would also see) must be caught.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include "test/test.h"
#include "optim/optim.h"
#include "optim/state.h"
#include "optim/quant4.h"
#include "common/rng.h"
#include "common/util.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim/adamw4bit.h"
#include "optim/adamw4bit_plan.h"

// ---- mutants: deliberately wrong copies of plan pieces ----------------------------------------------
enum {
    MUT_NONE,
    MUT_TILE_CURSOR, MUT_TILE_ROWS, MUT_STATS_VEC, MUT_GROUP_LEN, MUT_NAN_FOLD, MUT_INF_FOLD, MUT_ATOMIC_STORE, MUT_COL_WARPS, MUT_NO_MEMSET,
    MUT_BLOCK_CURSOR, MUT_LANE_LEN, MUT_BLOCK_VEC, MUT_ROW_STEP, MUT_EARLY_COPY, MUT_BUTTERFLY,
    MUT_COUNT
};
static const char* MUT_NAMES[MUT_COUNT] = {
    "none",
    "tile cursor stops at the first tensor whose tile0 < x", "a full tile stops one row short",
    "stats vector path ignores svec (alignment)", "stats group length ignores the matrix's last column",
    "stats fold lets a NaN through", "stats fold skips an Inf", "maxima stored, not atomicMax'd (the last tile wins)", "column maxima skip the last warp", "scratch maxima not zeroed",
    "block cursor stops at the first tensor whose block0 < qb", "lane length ignores the tensor's end",
    "block vector path ignores the parameter offset", "column stepping does not wrap to the next row",
    "new maxima copied before the update kernel", "block butterfly skips its last level",
};
static int g_mut = MUT_NONE;

static int emu_cursor_tile(const A4PlanTensor* t, int nq, int ti, size_t x) {
    if (g_mut == MUT_TILE_CURSOR) { while (ti + 1 < nq && t[ti + 1].tile0 < x) ti++; return ti; }
    return a4_cursor_tile(t, nq, ti, x);
}
static int emu_cursor_block(const A4PlanTensor* t, int nq, int ti, size_t qb) {
    if (g_mut == MUT_BLOCK_CURSOR) { while (ti + 1 < nq && t[ti + 1].block0 < qb) ti++; return ti; }
    return a4_cursor_block(t, nq, ti, qb);
}
static A4Tile emu_tile(const A4PlanTensor* t, size_t x) {
    A4Tile s = a4_tile(t, x);
    if (g_mut == MUT_TILE_ROWS) s.r1 = s.r0 + A4_TILE_ROWS - 1 < t->rows ? s.r0 + A4_TILE_ROWS - 1 : t->rows;
    return s;
}
static int emu_stats_vec(const A4PlanTensor* t, int base_ok, int n) {
    if (g_mut == MUT_STATS_VEC) return base_ok && n == A4_SVEC;
    return a4_stats_vec(t, base_ok, n);
}
static int emu_group_len(size_t c, size_t cols) {
    if (g_mut == MUT_GROUP_LEN) return c >= cols ? 0 : A4_SVEC;
    return a4_group_len(c, cols);
}
static float emu_stats_fold(float acc, float x) {
    if (g_mut == MUT_NAN_FOLD) return acc > fabsf(x) ? acc : fabsf(x);
    if (g_mut == MUT_INF_FOLD) return isfinite(x) ? a4_fold(acc, x) : acc;
    return a4_fold(acc, x);
}
static int emu_lane_len(size_t i0, size_t n) {
    if (g_mut == MUT_LANE_LEN) return i0 >= n ? 0 : A4_LANE;
    return a4_lane_len(i0, n);
}
static int emu_block_vec(const A4PlanTensor* t, int base_ok, int nv) {
    if (g_mut == MUT_BLOCK_VEC) return base_ok && nv == A4_LANE;
    return a4_block_vec(t, base_ok, nv);
}

// ---- emulated device memory ---------------------------------------------------------------------------
typedef struct {
    float* master;        // (P)
    uint16_t* grad;       // (P) bf16 gradients, as the trainer's bf16 mode
    uint16_t* pbf16;      // (P)
    int* touched;         // (P) writes of master in this step
    size_t P;
    long violations;      // accesses outside a tensor or misaligned vectors
    char first[160];      // the first violation
    long svec, sscalar, bvec, bscalar;   // groups / lane quads by vector and scalar accesses
} EmuMem;

static void violation(EmuMem* m, const char* what, size_t where) {
    if (m->violations++ == 0) snprintf(m->first, sizeof(m->first), "%s at %zu", what, where);
}
// tensor elements [e, e + n) (tensor-local): inside the tensor and the flat buffers
static void check_elems(EmuMem* m, const A4PlanTensor* t, size_t e, int n) {
    if (e + (size_t)n > t->numel || t->param_off + e + (size_t)n > m->P) violation(m, "element outside its tensor", e);
}
// code bytes [b, b + n) of a tensor's packed codes
static void check_code_bytes(EmuMem* m, const A4PlanTensor* t, size_t b, int n) {
    if (b + (size_t)n > q4_bytes(t->numel)) violation(m, "code byte outside its tensor", b);
}

// The integer atomicMax of a4_atomic_max on the float's bits (x >= +0, not NaN), skipped for x == 0.
static void emu_atomic_max(float* addr, float x) {
    if (!(x > 0.0f)) return;
    if (g_mut == MUT_ATOMIC_STORE) { memcpy(addr, &x, 4); return; }
    uint32_t old, nw = f32_bits(x);
    memcpy(&old, addr, 4);
    if (nw > old) memcpy(addr, &nw, 4);
}

// warp_max: xor butterfly 16 .. 1 (the mutant stops at 2), every lane ends with the result
static void emu_warp_max(float* x, int last) {
    float t[32];
    for (int o = 16; o >= last; o >>= 1) {
        for (int l = 0; l < 32; l++) t[l] = fmaxf(x[l], x[l ^ o]);
        memcpy(x, t, sizeof(t));
    }
}

// ---- step 1: a4_stats_kernel ------------------------------------------------------------------------------
static void emu_stats(const A4PlanTensor* qt, int nq, size_t ntiles, int grid, const Adam4Scalars* k, const Q4Map* vmap, float clip,
                      int base_ok, EmuMem* M) {
    static float scol[A4_WARPS][A4_TILE_COLS];
    for (int blk = 0; blk < grid; blk++) {
        int ti[A4_THREADS];
        for (int t = 0; t < A4_THREADS; t++) ti[t] = 0;
        for (size_t tile = (size_t)blk; tile < ntiles; tile += (size_t)grid) {
            const A4PlanTensor* T0 = NULL;
            A4Tile x0 = { 0, 0, 0 };
            for (int w = 0; w < A4_WARPS; w++) {
                const A4PlanTensor* T[32];
                A4Tile x[32];
                size_t c[32];
                int n[32], vec[32];
                float vc[32][A4_SVEC], cmax[32][A4_SVEC];
                for (int l = 0; l < 32; l++) {
                    const int tid = w * 32 + l;
                    ti[tid] = emu_cursor_tile(qt, nq, ti[tid], tile);
                    T[l] = &qt[ti[tid]];
                    if (!T[l]->rank1) { violation(M, "a stats tile in a vector", tile); return; }
                    x[l] = emu_tile(T[l], tile);
                    c[l] = a4_tile_col(&x[l], l);
                    n[l] = emu_group_len(c[l], T[l]->cols);
                    vec[l] = emu_stats_vec(T[l], base_ok, n[l]);
                    for (int j = 0; j < A4_SVEC; j++) {
                        if (j < n[l] && c[l] + (size_t)j >= T[l]->cols) { violation(M, "old column max outside the matrix", c[l] + j); return; }
                        vc[l][j] = j < n[l] ? T[l]->v_b[c[l] + j] : 0.0f;
                        cmax[l][j] = 0.0f;
                    }
                }
                if (w == 0) { T0 = T[0]; x0 = x[0]; }
                for (int k0 = 0; a4_tile_row(&x[0], w, k0) < x[0].r1; k0 += A4_SBATCH) {
                    float g[32][A4_SBATCH][A4_SVEC], vr[32][A4_SBATCH];
                    uint32_t cw[32][A4_SBATCH];
                    for (int l = 0; l < 32; l++) {   // the loads of the batch
                        const A4PlanTensor* t = T[l];
                        for (int b = 0; b < A4_SBATCH; b++) {
                            const size_t i = a4_tile_row(&x[l], w, k0 + b), e = i * t->cols + c[l];
                            cw[l][b] = 0u;
                            vr[l][b] = 0.0f;
                            for (int j = 0; j < A4_SVEC; j++) g[l][b][j] = 0.0f;
                            if (i >= x[l].r1 || n[l] == 0) continue;
                            if (i >= t->rows) { violation(M, "row outside the matrix", i); return; }
                            vr[l][b] = t->v_a[i];
                            if (vec[l]) {
                                M->svec++;
                                check_elems(M, t, e, A4_SVEC);
                                check_code_bytes(M, t, e >> 1, 4);
                                if ((t->param_off + e) % 8) violation(M, "misaligned 16-byte gradient load", t->param_off + e);
                                if ((uintptr_t)(t->vq + (e >> 1)) % 4) violation(M, "misaligned 4-byte code load", e);
                                if (M->violations) return;
                                memcpy(&cw[l][b], t->vq + (e >> 1), 4);   // little-endian: element j in bits 4j..4j+3
                                for (int j = 0; j < A4_SVEC; j++) g[l][b][j] = bf16_to_f32(M->grad[t->param_off + e + j]);
                            } else {
                                M->sscalar++;
                                check_elems(M, t, e, n[l]);
                                if (M->violations) return;
                                for (int j = 0; j < A4_SVEC; j++)
                                    if (j < n[l]) { g[l][b][j] = bf16_to_f32(M->grad[t->param_off + e + j]); cw[l][b] |= (uint32_t)q4_get(t->vq, e + j) << (4 * j); }
                            }
                        }
                    }
                    for (int b = 0; b < A4_SBATCH; b++) {
                        const size_t i = a4_tile_row(&x[0], w, k0 + b);
                        if (i >= x[0].r1) break;
                        float rmax[32];
                        for (int l = 0; l < 32; l++) {
                            rmax[l] = 0.0f;
                            for (int j = 0; j < A4_SVEC; j++) {
                                if (j >= n[l]) continue;
                                float gj = g[l][b][j];
                                if (clip != 1.0f) gj = gj * clip;
                                float mm = 0.0f, v = a4_decode(vmap, (uint8_t)((cw[l][b] >> (4 * j)) & 0xFu), a4_rank1_scale(vr[l][b], vc[l][j]));
                                adamw4bit_moments(k, gj, &mm, &v);
                                rmax[l] = emu_stats_fold(rmax[l], v);
                                cmax[l][j] = emu_stats_fold(cmax[l][j], v);
                            }
                        }
                        emu_warp_max(rmax, 1);
                        emu_atomic_max(T[0]->row_new + i, rmax[0]);
                    }
                }
                for (int l = 0; l < 32; l++)
                    for (int j = 0; j < A4_SVEC; j++) scol[w][l * A4_SVEC + j] = cmax[l][j];
            }
            // __syncthreads(); then a thread per column of the tile
            const int nw = g_mut == MUT_COL_WARPS ? A4_WARPS - 1 : A4_WARPS;
            for (int t = 0; t < A4_THREADS; t++) {
                const size_t cj = x0.c0 + (size_t)t;
                if (cj >= T0->cols) continue;
                float y = scol[0][t];
                for (int w = 1; w < nw; w++) y = fmaxf(y, scol[w][t]);
                emu_atomic_max(T0->col_new + cj, y);
            }
        }
    }
}

// ---- step 2: a4_block_kernel --------------------------------------------------------------------------
static long emu_blocks(const A4PlanTensor* qt, int nq, size_t nblocks, int grid, const Adam4Scalars* k, const Q4Map* mmap,
                       const Q4Map* vmap, float clip, int sr, uint64_t seed, int step, int base_ok, EmuMem* M) {
    long nonfinite = 0;
    for (int blk = 0; blk < grid; blk++) {
        for (int w = 0; w < A4_WARPS; w++) {
            int ti = 0;   // the same for every lane of the warp
            for (size_t qb = (size_t)blk * A4_WARPS + (size_t)w; qb < nblocks; qb += (size_t)grid * A4_WARPS) {
                ti = emu_cursor_block(qt, nq, ti, qb);
                const A4PlanTensor* T = &qt[ti];
                const size_t b = qb - T->block0;
                if (b * A4_BLOCK >= T->numel) { violation(M, "block past its tensor", qb); return -1; }
                const int rank1 = T->rank1;
                float* m_scale = T->m_scale + b;
                float* v_scale = rank1 ? NULL : T->v_a + b;
                float ms_old[32], vs_old[32];
                float g[32][A4_LANE], p[32][A4_LANE], mm[32][A4_LANE], vv[32][A4_LANE], mx_m[32], mx_v[32];
                uint32_t rows_of[32][A4_LANE], cols_of[32][A4_LANE];
                int nv[32], vec[32];
                for (int l = 0; l < 32; l++) {   // every lane reads the old scales before the shuffles
                    ms_old[l] = *m_scale;
                    vs_old[l] = v_scale ? *v_scale : 0.0f;
                }
                for (int l = 0; l < 32; l++) {
                    const size_t i0 = a4_lane_i0(b, l), gi = T->param_off + i0;
                    nv[l] = emu_lane_len(i0, T->numel);
                    vec[l] = emu_block_vec(T, base_ok, nv[l]);
                    const uint32_t cols = rank1 ? (uint32_t)T->cols : 1u;
                    uint32_t row = rank1 ? (uint32_t)i0 / cols : 0u, col = rank1 ? (uint32_t)i0 % cols : 0u;
                    mx_m[l] = mx_v[l] = 0.0f;
                    for (int j = 0; j < A4_LANE; j++) { g[l][j] = p[l][j] = mm[l][j] = vv[l][j] = 0.0f; rows_of[l][j] = cols_of[l][j] = 0u; }
                    if (nv[l] > 0) {
                        check_elems(M, T, i0, vec[l] ? A4_LANE : nv[l]);
                        check_code_bytes(M, T, i0 >> 1, nv[l] > 2 ? 2 : 1);
                        if (vec[l] && gi % 4) violation(M, "misaligned 16-byte master / 8-byte bf16 access", gi);
                        if (M->violations) return -1;
                        if (vec[l]) M->bvec++; else M->bscalar++;
                    }
                    uint8_t bm[2] = { 0, 0 }, bv[2] = { 0, 0 };
                    for (int j = 0; j < A4_LANE; j++)
                        if (vec[l] || j < nv[l]) { g[l][j] = bf16_to_f32(M->grad[gi + j]); p[l][j] = M->master[gi + j]; }
                    if (nv[l] > 0) { bm[0] = T->mq[i0 >> 1]; bv[0] = T->vq[i0 >> 1]; }
                    if (nv[l] > 2) { bm[1] = T->mq[(i0 >> 1) + 1]; bv[1] = T->vq[(i0 >> 1) + 1]; }
                    for (int j = 0; j < A4_LANE; j++) {
                        if (j >= nv[l]) continue;
                        if (clip != 1.0f) g[l][j] = g[l][j] * clip;
                        nonfinite += !isfinite(g[l][j]);
                        rows_of[l][j] = row;
                        cols_of[l][j] = col;
                        if (rank1 && (row >= T->rows || col >= T->cols)) { violation(M, "row or column outside the matrix", i0); return -1; }
                        mm[l][j] = a4_decode(mmap, (uint8_t)((bm[j >> 1] >> ((j & 1) * 4)) & 0xF), ms_old[l]);
                        vv[l][j] = a4_decode(vmap, (uint8_t)((bv[j >> 1] >> ((j & 1) * 4)) & 0xF),
                                             rank1 ? a4_rank1_scale(T->v_a[row], T->v_b[col]) : vs_old[l]);
                        adamw4bit_moments(k, g[l][j], &mm[l][j], &vv[l][j]);
                        mx_m[l] = a4_fold(mx_m[l], mm[l][j]);
                        mx_v[l] = a4_fold(mx_v[l], vv[l][j]);
                        if (rank1 && ++col == cols && g_mut != MUT_ROW_STEP) { col = 0; row++; }
                    }
                }
                const int last = g_mut == MUT_BUTTERFLY ? 2 : 1;
                emu_warp_max(mx_m, last);
                emu_warp_max(mx_v, last);
                *m_scale = mx_m[0];   // lane 0
                if (v_scale) *v_scale = mx_v[0];
                for (int l = 0; l < 32; l++) {
                    if (nv[l] == 0) continue;
                    const size_t i0 = a4_lane_i0(b, l), gi = T->param_off + i0;
                    const float am = mx_m[l], av = mx_v[l];
                    const uint64_t srb = sr ? sr_stream(seed, step, T->param_off) : 0;
                    uint8_t cm[A4_LANE] = { 0, 0, 0, 0 }, cv[A4_LANE] = { 0, 0, 0, 0 };
                    for (int j = 0; j < A4_LANE; j++) {
                        p[l][j] = adamw4bit_param(k, T->decay, p[l][j], mm[l][j], vv[l][j]);
                        if (j < nv[l]) {
                            cm[j] = q4_nearest_bs(mmap, mm[l][j] / am);
                            const float vs = rank1 ? a4_rank1_scale(T->row_new[rows_of[l][j]], T->col_new[cols_of[l][j]]) : av;
                            cv[j] = q4_nearest_bs(vmap, vv[l][j] / vs);
                        }
                    }
                    for (int j = 0; j < A4_LANE; j++) {
                        if (!vec[l] && j >= nv[l]) continue;
                        M->master[gi + j] = p[l][j];
                        M->pbf16[gi + j] = master_to_bf16(p[l][j], sr, srb, i0 + j);
                        M->touched[gi + j]++;
                    }
                    T->mq[i0 >> 1] = q4_pair(cm[0], cm[1]);
                    T->vq[i0 >> 1] = q4_pair(cv[0], cv[1]);
                    if (nv[l] > 2) {
                        T->mq[(i0 >> 1) + 1] = q4_pair(cm[2], cm[3]);
                        T->vq[(i0 >> 1) + 1] = q4_pair(cv[2], cv[3]);
                    }
                }
            }
        }
    }
    return nonfinite;
}

// ---- the cases ----------------------------------------------------------------------------------------
#define NT 11
typedef struct {
    size_t rows, cols;
    int ndim;
} Shape;
// odd offsets: the 4097-vector before the matrices (their v codes start at odd bytes: scalar groups);
// 8-aligned: the odd vectors last (every matrix's codes 4-byte aligned, as at d12: vector groups)
static const Shape SHAPES_ODD[NT] = { { 1, 1, 1 }, { 1, 3, 1 }, { 1, 127, 1 }, { 33, 65, 2 }, { 1, 4097, 1 }, { 3, 5000, 2 },
                                      { 129, 67, 2 }, { 72, 264, 2 }, { 1, 4099, 1 }, { 200, 520, 2 }, { 1, 5, 1 } };
static const Shape SHAPES_AL[NT] = { { 1, 1, 1 }, { 1, 3, 1 }, { 1, 127, 1 }, { 33, 65, 2 }, { 3, 5000, 2 }, { 72, 264, 2 },
                                     { 200, 520, 2 }, { 129, 67, 2 }, { 1, 4097, 1 }, { 1, 4099, 1 }, { 1, 5, 1 } };
static int find_shape(const Shape* sh, size_t rows, size_t cols) {
    for (int i = 0; i < NT; i++) if (sh[i].rows == rows && sh[i].cols == cols) return i;
    CHECK(0);
    return -1;
}

typedef struct {
    int aligned;          // flat offsets multiples of 8 (else odd, with gaps)
    int sr;
    int grid_s, grid_b;   // thread blocks of the two kernels (0: one per unit)
} Case;

// Returns 1 when the emulated step matched the CPU bit for bit (why: the first difference).
static int run_case(const Case* cs, char* why, size_t why_n, EmuMem* stats_out) {
    const Optimizer* opt = optim_find("adamw4bit");
    CHECK(opt);
    OptHyper h = opt->defaults;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    const Shape* SH = cs->aligned ? SHAPES_AL : SHAPES_ODD;
    const int t_small = find_shape(SH, 129, 67), t_big = find_shape(SH, 200, 520), t_vec = find_shape(SH, 1, 4097);
    ParamShape shapes[NT];
    size_t offs[NT], P = cs->aligned ? 0 : 3;
    memset(shapes, 0, sizeof(shapes));
    for (int i = 0; i < NT; i++) {
        shapes[i].name = "t";
        shapes[i].ndim = SH[i].ndim;
        shapes[i].rows = SH[i].rows;
        shapes[i].cols = SH[i].cols;
        shapes[i].numel = SH[i].rows * SH[i].cols;
        shapes[i].decay = i % 2 == 0;
        offs[i] = P;
        P += shapes[i].numel + (cs->aligned ? (8 - shapes[i].numel % 8) % 8 : (size_t)(1 + i % 3));
    }
    StateLayout sl;
    state_layout_build(&sl, opt, &h, shapes, NT);
    // the CPU's state and the emulated device's, buffer for buffer (device buffers 64-byte aligned)
    uint8_t* cpu_buf[MAX_STATE_BUFFERS];
    uint8_t* emu_buf[MAX_STATE_BUFFERS];
    for (int b = 0; b < sl.nbuf; b++) {
        const size_t nb = (sl.buf_bytes[b] + 64) / 64 * 64;
        cpu_buf[b] = (uint8_t*)xcalloc(nb, 1);
        emu_buf[b] = (uint8_t*)aligned_alloc(64, nb);
        memset(emu_buf[b], 0, nb);
    }
    int row_buf = -1, col_buf = -1;
    for (int b = 0; b < sl.nbuf; b++) {
        if (!strcmp(sl.buf_name[b], "v_row")) row_buf = b;
        if (!strcmp(sl.buf_name[b], "v_col")) col_buf = b;
    }
    CHECK(row_buf >= 0 && col_buf >= 0);
    const size_t row_bytes = sl.buf_bytes[row_buf], col_bytes = sl.buf_bytes[col_buf];
    uint8_t* scratch = (uint8_t*)aligned_alloc(64, (row_bytes + col_bytes + 64) / 64 * 64);
    memset(scratch, 0, row_bytes + col_bytes);
    // the kernels' tensor table, as adamw4bit_gpu_setup builds it
    A4PlanTensor qt[NT];
    memset(qt, 0, sizeof(qt));
    int nq = 0;
    for (int i = 0; i < NT; i++) {
        const TensorStates* ts = &sl.tensors[i];
        if (ts->nstate <= 2) continue;
        A4PlanTensor* t = &qt[nq++];
        t->param_off = offs[i];
        t->numel = shapes[i].numel;
        t->decay = shapes[i].decay;
        t->mq = emu_buf[ts->buf[0]] + ts->offset[0];
        t->vq = emu_buf[ts->buf[1]] + ts->offset[1];
        t->m_scale = (float*)(emu_buf[ts->buf[2]] + ts->offset[2]);
        t->v_a = (float*)(emu_buf[ts->buf[3]] + ts->offset[3]);
        t->rank1 = ts->nstate == 5;
        t->rows = t->rank1 ? shapes[i].rows : 1;
        t->cols = t->rank1 ? shapes[i].cols : shapes[i].numel;
        if (t->rank1) {
            t->v_b = (float*)(emu_buf[ts->buf[4]] + ts->offset[4]);
            t->row_new = (float*)(scratch + ts->offset[3]);
            t->col_new = (float*)(scratch + row_bytes + ts->offset[4]);
        }
    }
    size_t nblocks = 0, ntiles = 0;
    a4_plan_build(qt, nq, &nblocks, &ntiles);
    EmuMem m;
    memset(&m, 0, sizeof(m));
    m.P = P;
    m.master = (float*)xcalloc(P, sizeof(float));
    m.grad = (uint16_t*)xcalloc(P, sizeof(uint16_t));
    m.pbf16 = (uint16_t*)xcalloc(P, sizeof(uint16_t));
    m.touched = (int*)xcalloc(P, sizeof(int));
    float* cpu_theta = (float*)xcalloc(P, sizeof(float));
    float* gs = (float*)xcalloc(P, sizeof(float));
    Rng r;
    rng_seed(&r, 77);
    for (size_t i = 0; i < P; i++) cpu_theta[i] = m.master[i] = rng_normal(&r);
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    const uint64_t seed = 4244;
    const int grid_s = cs->grid_s > 0 ? cs->grid_s : (int)(ntiles > 0 ? ntiles : 1);
    const int grid_b = cs->grid_b > 0 ? cs->grid_b : (int)((nblocks + A4_WARPS - 1) / A4_WARPS);
    long cpu_nonfinite = 0, emu_nonfinite = 0;
    int ok = 1;
    why[0] = 0;
    for (int step = 1; step <= 3 && ok; step++) {
        for (int i = 0; i < NT; i++)
            for (size_t j = 0; j < shapes[i].numel; j++) {
                const size_t row = j / shapes[i].cols, col = j % shapes[i].cols;
                float g = 0.1f * (1.0f + (float)(row % 7) + (float)(col % 5)) * rng_normal(&r);
                if (i == t_small && (row == 5 || col == 11)) g = 0.0f;   // 129x67: a zero row and a zero column
                m.grad[offs[i] + j] = f32_to_bf16(g);
            }
        if (step == 2) {
            m.grad[offs[t_small] + 2 * 67 + 30] = 0x7fc0;   // NaN in 129x67 (row 2, column 30)
            m.grad[offs[t_big] + 70 * 520 + 300] = 0x7f80; // +Inf in 200x520 (row 70, column 300)
            m.grad[offs[t_vec] + 4000] = 0xffc0;          // -NaN in the 4097-vector
        }
        memset(m.touched, 0, P * sizeof(int));
        // the CPU: each whole tensor through the optimizer's step
        for (int i = 0; i < NT; i++) {
            const TensorStates* ts = &sl.tensors[i];
            for (size_t j = 0; j < shapes[i].numel; j++) gs[j] = bf16_to_f32(m.grad[offs[i] + j]) * clips[step - 1];
            OptTensor ot = { &shapes[i], cpu_theta + offs[i], gs, { 0 } };
            for (int s = 0; s < ts->nstate; s++) ot.state[s] = cpu_buf[ts->buf[s]] + ts->offset[s];
            OptStep st = { step, h.lr * lr_scales[step - 1], lr_scales[step - 1], 0, NULL };
            opt->step(&h, &ot, &st);
            cpu_nonfinite += st.nonfinite;
        }
        // the emulated launch sequence of adamw4bit_step_launch
        const double lr = h.lr * (double)lr_scales[step - 1];
        const Adam4Scalars k = adamw4bit_scalars(&h, lr, step);
        const float clip = clips[step - 1];
        if (g_mut != MUT_NO_MEMSET) memset(scratch, 0, row_bytes + col_bytes);
        emu_stats(qt, nq, ntiles, grid_s, &k, q4_map_linear(), clip, 1, &m);
        if (m.violations) { snprintf(why, why_n, "step %d stats: %ld violations, first %s", step, m.violations, m.first); ok = 0; break; }
        if (g_mut == MUT_EARLY_COPY) {
            memcpy(emu_buf[row_buf], scratch, row_bytes);
            memcpy(emu_buf[col_buf], scratch + row_bytes, col_bytes);
        }
        const long nf = emu_blocks(qt, nq, nblocks, grid_b, &k, q4_map_signed(), q4_map_linear(), clip, cs->sr, seed, step, 1, &m);
        if (nf < 0 || m.violations) { snprintf(why, why_n, "step %d blocks: %ld violations, first %s", step, m.violations, m.first); ok = 0; break; }
        emu_nonfinite += nf;
        memcpy(emu_buf[row_buf], scratch, row_bytes);
        memcpy(emu_buf[col_buf], scratch + row_bytes, col_bytes);
        // the small tensors: multi_tensor_kernel with Adam4Fp32Op, element by element
        for (int i = 0; i < NT; i++) {
            const TensorStates* ts = &sl.tensors[i];
            if (ts->nstate != 2) continue;
            float* em = (float*)(emu_buf[ts->buf[0]] + ts->offset[0]);
            float* ev = (float*)(emu_buf[ts->buf[1]] + ts->offset[1]);
            const uint64_t base = sr_stream(seed, step, offs[i]);
            for (size_t j = 0; j < shapes[i].numel; j++) {
                float g = bf16_to_f32(m.grad[offs[i] + j]);
                if (clip != 1.0f) g = g * clip;
                emu_nonfinite += !isfinite(g);
                adamw4bit_moments(&k, g, &em[j], &ev[j]);
                const float th = adamw4bit_param(&k, shapes[i].decay, m.master[offs[i] + j], em[j], ev[j]);
                m.master[offs[i] + j] = th;
                m.pbf16[offs[i] + j] = master_to_bf16(th, cs->sr, base, j);
                m.touched[offs[i] + j]++;
            }
        }
        // compare
        for (int i = 0; i < NT && ok; i++) {
            const uint64_t sb = sr_stream(seed, step, offs[i]);
            for (size_t j = 0; j < shapes[i].numel && ok; j++) {
                const size_t gi = offs[i] + j;
                if (m.touched[gi] != 1) { snprintf(why, why_n, "step %d tensor %d element %zu written %d times", step, i, j, m.touched[gi]); ok = 0; }
                else if (memcmp(&m.master[gi], &cpu_theta[gi], 4)) {
                    snprintf(why, why_n, "step %d tensor %d element %zu: master %.9g, cpu %.9g", step, i, j, m.master[gi], cpu_theta[gi]);
                    ok = 0;
                } else if (m.pbf16[gi] != master_to_bf16(cpu_theta[gi], cs->sr, sb, j)) {
                    snprintf(why, why_n, "step %d tensor %d element %zu: bf16 copy differs", step, i, j);
                    ok = 0;
                }
            }
        }
        long writes = 0, expected = 0;   // nothing outside the tensors (the gaps between them) is written
        for (size_t i = 0; i < P; i++) writes += m.touched[i];
        for (int i = 0; i < NT; i++) expected += (long)shapes[i].numel;
        if (ok && writes != expected) { snprintf(why, why_n, "step %d: %ld master writes, %ld expected", step, writes, expected); ok = 0; }
        for (int b = 0; b < sl.nbuf && ok; b++)
            for (size_t j = 0; j < sl.buf_bytes[b] && ok; j++)
                if (emu_buf[b][j] != cpu_buf[b][j]) {
                    snprintf(why, why_n, "step %d state %s byte %zu: 0x%02x, cpu 0x%02x", step, sl.buf_name[b], j, emu_buf[b][j], cpu_buf[b][j]);
                    ok = 0;
                }
    }
    if (ok && emu_nonfinite != cpu_nonfinite) {
        snprintf(why, why_n, "non-finite counted %ld, cpu %ld", emu_nonfinite, cpu_nonfinite);
        ok = 0;
    }
    if (ok && cpu_nonfinite != 3) { snprintf(why, why_n, "the CPU counted %ld non-finite gradients, 3 planted", cpu_nonfinite); ok = 0; }
    if (stats_out) *stats_out = m;
    for (int b = 0; b < sl.nbuf; b++) { free(cpu_buf[b]); free(emu_buf[b]); }
    free(scratch);
    state_layout_free(&sl);
    free(m.master); free(m.grad); free(m.pbf16); free(m.touched); free(cpu_theta); free(gs);
    return ok;
}

int main(void) {
    // the plan's geometry: A4_BLOCK is a warp of A4_LANE, a tile row a warp of A4_SVEC
    test_check(A4_BLOCK == 32 * A4_LANE && A4_TILE_COLS == 32 * A4_SVEC && A4_TILE_ROWS % A4_WARPS == 0 && A4_LANE % 2 == 0 && A4_SVEC % 2 == 0,
               "a constant changed", "q4 plan: geometry (128 = 32 lanes x 4, 256 = 32 lanes x 8, 64 rows = 8 warps x 8)");
    {   // tile numbering: every element of every matrix in exactly one tile, lanes and warps cover it exactly once
        A4PlanTensor t[3];
        memset(t, 0, sizeof(t));
        const size_t R[3] = { 129, 3, 200 }, C[3] = { 67, 5000, 520 };
        for (int i = 0; i < 3; i++) { t[i].rank1 = 1; t[i].rows = R[i]; t[i].cols = C[i]; t[i].numel = R[i] * C[i]; }
        size_t nb = 0, ntl = 0;
        a4_plan_build(t, 3, &nb, &ntl);
        int ok = 1, ti = 0;
        for (int i = 0; i < 3; i++) {
            int* cover = (int*)xcalloc(t[i].numel, sizeof(int));
            for (size_t x = t[i].tile0; x < t[i].tile0 + (t[i].rows + A4_TILE_ROWS - 1) / A4_TILE_ROWS * t[i].nct; x++) {
                ti = a4_cursor_tile(t, 3, ti, x);
                ok &= ti == i;
                const A4Tile s = a4_tile(&t[i], x);
                for (int w = 0; w < A4_WARPS; w++)
                    for (int kk = 0; a4_tile_row(&s, w, kk) < s.r1; kk++)
                        for (int l = 0; l < 32; l++) {
                            const size_t c = a4_tile_col(&s, l);
                            for (int j = 0; j < a4_group_len(c, t[i].cols); j++) cover[a4_tile_row(&s, w, kk) * t[i].cols + c + j]++;
                        }
            }
            for (size_t e = 0; e < t[i].numel; e++) ok &= cover[e] == 1;
            free(cover);
        }
        test_check(ok, "an element covered 0 or 2+ times", "q4 plan: stats tiles of 129x67, 3x5000, 200x520 cover every element once (%zu tiles)", ntl);
    }
    const Case cases[] = {
        { 0, 0, 3, 3 }, { 1, 0, 7, 5 }, { 0, 1, 1, 1 }, { 1, 1, 0, 0 }, { 0, 0, 0, 2 }, { 1, 0, 2, 7 },
    };
    const int ncases = (int)(sizeof(cases) / sizeof(cases[0]));
    long sv = 0, ss = 0, bv = 0, bs = 0;
    for (int c = 0; c < ncases; c++) {
        char why[256];
        EmuMem st;
        const Case* cs = &cases[c];
        memset(&st, 0, sizeof(st));
        const int ok = run_case(cs, why, sizeof(why), &st);
        sv += st.svec; ss += st.sscalar; bv += st.bvec; bs += st.bscalar;
        test_check(ok, why, "q4 plan: %s offsets, %s, stats grid %d, block grid %d: master, bf16 copy, codes, scales, row/column maxima "
                   "bit-identical to adamw4bit.c over 3 steps with NaN/Inf gradients (groups %ld vector %ld scalar; lane quads %ld vector %ld scalar)",
                   cs->aligned ? "8-aligned" : "odd", cs->sr ? "sr" : "nearest", cs->grid_s, cs->grid_b, st.svec, st.sscalar, st.bvec, st.bscalar);
    }
    test_check(sv > 0 && ss > 0 && bv > 0 && bs > 0, "a path never ran", "q4 plan: the vector and scalar paths of both kernels ran (%ld/%ld groups, %ld/%ld quads)",
               sv, ss, bv, bs);
    // the mutants: each must break at least one of a few representative cases
    const Case mc[] = { { 0, 0, 3, 3 }, { 1, 0, 7, 5 }, { 1, 1, 0, 0 } };
    for (int mu = 1; mu < MUT_COUNT; mu++) {
        g_mut = mu;
        int caught = 0;
        char why[256] = "", first[256] = "";
        for (int c = 0; c < (int)(sizeof(mc) / sizeof(mc[0])) && !caught; c++)
            if (!run_case(&mc[c], why, sizeof(why), NULL)) { caught = 1; snprintf(first, sizeof(first), "%s", why); }
        g_mut = MUT_NONE;
        test_check(caught, "the emulation still matched the CPU", "q4 plan: mutant \"%s\" is caught (%s)", MUT_NAMES[mu], first);
    }
    return test_finish("test_optim_q4_plan");
}
