// test/test_optim_q8_plan.c: the 8-bit optimizer kernels' work plan (optim/quant8_plan.h, the header the
// kernels of optim/quant8.cuh and optim/adam8bit.cuh include) replayed on the host, thread by thread,
// against the CPU step functions (adam8bit.c, lion8bit.c, sgdm8bit.c): no GPU needed.
//
// The emulation below follows the kernels line by line with the plan's own functions: the persistent
// loop of each thread block over groups of quantization blocks (grids of 1, 3 and 7 blocks, and one block
// per group, so blocks loop and their last group is ragged), the team of each thread (8/16/32 lanes of a
// warp, or the whole 64/256-thread block), the 8 elements of each lane per round, the rounds kept in
// registers and the ones recomputed in pass 2, the forward tensor cursor, the vector-or-scalar choice
// (a vector access is checked for its 16- or 8-byte alignment and must lie inside its tensor), the
// xor-butterfly of the absmax with the block team's shared-memory step, the absmax written by team lane
// 0, the compact lookup table (q8_quantize_tab) instead of bitsandbytes' search, and the non-finite
// skip and count. The element math is the kernels' (adam8bit.h, lion8bit.h, sgdm8bit.h: HD functions).
// Every element's master, bf16 copy and codes must be written exactly once per step, and nothing outside
// a tensor may be touched.
//
// Cases: tensors of 4097, 3x5000, 129x67, 4096+1, 4096+3, 4096+127, 64x65+1 elements at odd flat
// offsets (and a case with every offset a multiple of 8: the vector path), whole or cut into -zero 1
// slices (whole blocks from the tensor's start; pieces of one block, and last pieces of 1, 3 and 127
// elements), code buffers packed as the state layout packs them (misaligned code pointers fall back to
// scalar), qblock 64, 256, 512 (a block team of 2 warps), 4096 and 8192 (rounds recomputed), 3 steps
// with a schedule, clipping, a NaN and an Inf gradient, round-to-nearest and stochastic bf16 copies.
// Expected: master, bf16 copy, codes and absmax bit-identical to the CPU's; non-finite counts equal.
// Then mutants (a wrong cursor bound, a wrong tail rule for the vector path, a butterfly that skips a
// level, a block length off by the tail, recompute with the new absmax, a table shifted by one bucket)
// must each be caught.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include "test/test.h"
#include "optim/optim.h"
#include "optim/quant8.h"
#include "optim/quant8_plan.h"
#include "optim/quant4.h"
#include "common/rng.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "optim/adam8bit.h"
#include "optim/lion8bit.h"
#include "optim/sgdm8bit.h"

// ---- mutants: deliberately wrong copies of plan pieces ----------------------------------------------
enum { MUT_NONE, MUT_CURSOR, MUT_VEC_TAIL, MUT_BUTTERFLY, MUT_BLOCK_LEN, MUT_RECOMPUTE_ABSMAX, MUT_TABLE, MUT_COUNT };
static const char* MUT_NAMES[MUT_COUNT] = { "none", "cursor stops at first block < qb", "vector path ignores the tensor tail",
                                            "butterfly skips its last level", "block length ignores a short last block",
                                            "recompute dequantizes with the new absmax", "table shifted by one bucket" };
static int g_mut = MUT_NONE;

static int emu_cursor(const Q8Tensor* t, int nq, int ti, size_t qb) {
    if (g_mut == MUT_CURSOR) {
        while (ti + 1 < nq && t[ti + 1].block0 < qb) ti++;
        return ti;
    }
    return q8_cursor(t, nq, ti, qb);
}
static int emu_vec_ok(const Q8Tensor* t, int base_ok, int qblock, size_t b, int e0) {
    if (g_mut == MUT_VEC_TAIL) return base_ok && t->vec;
    return q8_vec_ok(t, base_ok, qblock, b, e0);
}
static int emu_block_len(size_t n, int qblock, size_t b) {
    if (g_mut == MUT_BLOCK_LEN) return qblock;
    return q8_block_len(n, qblock, b);
}

// ---- emulated device memory ---------------------------------------------------------------------------
typedef struct {
    float* master;        // (P)
    uint16_t* grad;       // (P) bf16 gradients, as the trainer's bf16 mode
    uint16_t* pbf16;      // (P)
    int* touched;         // (P) writes of master in this step
    size_t P;
    long violations;      // accesses outside a tensor or misaligned vectors
    long vec_rounds, scalar_rounds;
} EmuMem;

typedef struct {
    const uint8_t* tab[2];
    const float* mid[2];
    const float* code[2];
} EmuMaps;

static void emu_check_access(EmuMem* m, const Q8Tensor* t, size_t gi, int vec, int nv, const uint8_t* const* codes, int ncodes, size_t li) {
    const int n = vec ? Q8_VEC : nv;
    if (gi < t->param_off || gi + (size_t)n > t->param_off + t->numel || gi + (size_t)n > m->P) m->violations++;
    if (vec) {
        m->vec_rounds++;
        if (gi % 8) m->violations++;   // 16-byte bf16 loads and stores, float4 master (gi % 4)
        for (int s = 0; s < ncodes; s++) if ((uintptr_t)(codes[s] + li) % 8) m->violations++;
    } else {
        m->scalar_rounds++;
    }
}

static void emu_load(EmuMem* m, size_t gi, int vec, int nv, float clip, float g[Q8_VEC], float p[Q8_VEC]) {
    for (int j = 0; j < Q8_VEC; j++) {
        const int ok = vec || j < nv;
        g[j] = ok ? bf16_to_f32(m->grad[gi + j]) : 0.0f;
        p[j] = ok ? m->master[gi + j] : 0.0f;
        if (clip != 1.0f) g[j] = g[j] * clip;
    }
}
static void emu_load_codes(const uint8_t* c, int vec, int nv, uint8_t v[Q8_VEC]) {
    for (int j = 0; j < Q8_VEC; j++) v[j] = (vec || j < nv) ? c[j] : 0;
}
static void emu_store_param(EmuMem* m, size_t gi, size_t li, int vec, int nv, const float th[Q8_VEC], int sr, uint64_t base, unsigned skip) {
    for (int j = 0; j < Q8_VEC; j++) {
        if (vec && !skip ? 0 : !(j < nv && !((skip >> j) & 1u))) continue;
        m->master[gi + j] = th[j];
        m->pbf16[gi + j] = master_to_bf16(th[j], sr, base, li + j);
        m->touched[gi + j]++;
    }
}
static void emu_store_codes(uint8_t* c, int vec, int nv, const uint8_t v[Q8_VEC]) {
    for (int j = 0; j < Q8_VEC; j++) if (vec || j < nv) c[j] = v[j];
}

// The team max of the kernels (q8_team_max): per warp an xor butterfly over all 32 lanes from q8_first_xor
// down to 1 (every lane takes part), then for a block team each warp's lane 0 result through shared
// memory, folded warp 0 first. x: (threads) values of one state, replaced by each thread's result.
static void emu_team_max(const Q8Plan* p, float* x) {
    const int first = q8_first_xor(p), last = g_mut == MUT_BUTTERFLY ? 2 : 1;
    float tmp[Q8_THREADS];
    for (int o = first; o >= last; o >>= 1) {
        for (int t = 0; t < p->threads; t++) tmp[t] = fmaxf(x[t], x[(t & ~31) | ((t & 31) ^ o)]);
        memcpy(x, tmp, (size_t)p->threads * sizeof(float));
    }
    if (p->block_team) {
        float red[Q8_THREADS / 32];
        for (int w = 0; w < p->threads / 32; w++) red[w] = x[32 * w];
        for (int t = 0; t < p->threads; t++) {
            float y = red[0];
            for (int w = 1; w < p->threads / 32; w++) y = fmaxf(y, red[w]);
            x[t] = y;
        }
    }
}

static uint8_t emu_quantize(const EmuMaps* mp, int k, int sign_guard, float s, float absmax) {
    return q8_quantize_tab(mp->tab[k], mp->mid[k], mp->code[k], sign_guard, s, absmax);
}

// The element update of the 1-state kernels (lion8bit_update / sgdm8bit_update behind one pointer).
typedef struct {
    int kind;  // 0 lion, 1 sgdm
    Lion8bitScalars lion;
    Sgdm8bitScalars sgdm;
} Emu1Op;
static float emu_op(const Emu1Op* op, int decays, float* p, float s, float g) {
    return op->kind == 0 ? lion8bit_update(&op->lion, decays, p, s, g) : sgdm8bit_update(&op->sgdm, decays, p, s, g);
}

// Per-thread registers of one group (Q8_KEEP_MAX rounds of 8 elements, up to 3 values each).
typedef struct {
    float a[Q8_KEEP_MAX][Q8_VEC], b[Q8_KEEP_MAX][Q8_VEC], p[Q8_KEEP_MAX][Q8_VEC];
    unsigned bad[Q8_KEEP_MAX];
    Q8Tensor t;
    size_t b_idx;
    int len, active, ti;
    float am_old[2];
} EmuThread;

// One launch of adam8bit_quantized_kernel (ncodes 2) or q8_1state_kernel (ncodes 1).
static long emu_kernel(int ncodes, const Q8Plan* plan, int grid, const Q8Tensor* qt, int nq, size_t nqblocks, EmuMem* m, const EmuMaps* mp,
                       int base_ok, float clip, int sr, uint64_t seed, int step, const Adam8bitScalars* ak, const Emu1Op* op) {
    const int Q = plan->qblock, KEEP = plan->keep;
    static EmuThread th[Q8_THREADS];
    float mx[2][Q8_THREADS];
    long nonfinite = 0;
    for (int blk = 0; blk < grid; blk++) {
        for (int tid = 0; tid < plan->threads; tid++) th[tid].ti = 0;
        for (size_t base = (size_t)blk * plan->tpb; base < nqblocks; base += (size_t)grid * plan->tpb) {
            // pass 1, every thread
            for (int tid = 0; tid < plan->threads; tid++) {
                EmuThread* T = &th[tid];
                const int tl = tid % plan->team, tix = tid / plan->team;
                const size_t qb = base + (size_t)tix;
                T->active = qb < nqblocks;
                memset(&T->t, 0, sizeof(T->t));
                T->b_idx = 0;
                T->len = 0;
                T->am_old[0] = T->am_old[1] = 0.0f;
                if (T->active) {
                    T->ti = emu_cursor(qt, nq, T->ti, qb);
                    T->t = qt[T->ti];
                    T->b_idx = qb - T->t.block0;
                    T->len = emu_block_len(T->t.numel, Q, T->b_idx);
                    for (int s = 0; s < ncodes; s++) T->am_old[s] = T->t.absmax[s][T->b_idx];
                }
                const Q8Tensor* t = &T->t;
                const size_t b = T->b_idx, lo = b * (size_t)Q;
                mx[0][tid] = mx[1][tid] = 0.0f;
                for (int r = 0; r < plan->rounds; r++) {
                    const int e0 = q8_elem0(plan, r, tl), nv = T->len - e0;
                    if (r < KEEP) {
                        T->bad[r] = 0u;
                        for (int j = 0; j < Q8_VEC; j++) T->a[r][j] = T->b[r][j] = T->p[r][j] = 0.0f;
                    }
                    if (nv <= 0) { if (r >= KEEP) break; continue; }
                    const int vec = emu_vec_ok(t, base_ok, Q, b, e0);
                    const size_t gi = t->param_off + lo + (size_t)e0;
                    const uint8_t* codes[2] = { t->code[0], t->code[1] };
                    emu_check_access(m, t, gi, vec, nv, codes, ncodes, lo + (size_t)e0);
                    if (m->violations) return -1;   // never read outside a tensor
                    float g[Q8_VEC], p[Q8_VEC];
                    uint8_t c0[Q8_VEC], c1[Q8_VEC];
                    emu_load(m, gi, vec, nv, clip, g, p);
                    emu_load_codes(t->code[0] + lo + e0, vec, nv, c0);
                    if (ncodes == 2) emu_load_codes(t->code[1] + lo + e0, vec, nv, c1);
                    for (int j = 0; j < Q8_VEC && j < nv; j++) {
                        if (ncodes == 2) {
                            float mm, vv;
                            adam8bit_moments(*ak, mp->code[0], mp->code[1], g[j], c0[j], c1[j], T->am_old[0], T->am_old[1], &mm, &vv);
                            mx[0][tid] = fmaxf(mx[0][tid], fabsf(mm));
                            mx[1][tid] = fmaxf(mx[1][tid], fabsf(vv));
                            if (r < KEEP) {
                                T->bad[r] |= (unsigned)!isfinite(g[j]) << j;
                                T->a[r][j] = mm;
                                T->b[r][j] = vv;
                                T->p[r][j] = p[j];
                            }
                        } else {
                            nonfinite += !isfinite(g[j]);
                            float pj = p[j];
                            const float s = emu_op(op, t->decay, &pj, mp->code[0][c0[j]] * T->am_old[0], g[j]);
                            mx[0][tid] = fmaxf(mx[0][tid], fabsf(s));
                            if (r < KEEP) { T->a[r][j] = s; T->p[r][j] = pj; }
                        }
                    }
                }
            }
            for (int s = 0; s < ncodes; s++) emu_team_max(plan, mx[s]);
            // the absmax by team lane 0 (every thread has read the old one), then pass 2
            for (int tid = 0; tid < plan->threads; tid++)
                if (th[tid].active && tid % plan->team == 0)
                    for (int s = 0; s < ncodes; s++) th[tid].t.absmax[s][th[tid].b_idx] = mx[s][tid];
            for (int tid = 0; tid < plan->threads; tid++) {
                EmuThread* T = &th[tid];
                if (!T->active) continue;
                const int tl = tid % plan->team;
                const Q8Tensor* t = &T->t;
                const size_t b = T->b_idx, lo = b * (size_t)Q;
                const float an[2] = { mx[0][tid], mx[1][tid] };
                const uint64_t srb = sr ? sr_stream(seed, step, t->param_off) : 0;
                for (int r = 0; r < plan->rounds; r++) {
                    const int e0 = q8_elem0(plan, r, tl), nv = T->len - e0;
                    if (nv <= 0) { if (r >= KEEP) break; continue; }
                    const int vec = emu_vec_ok(t, base_ok, Q, b, e0);
                    const size_t gi = t->param_off + lo + (size_t)e0;
                    uint8_t c0[Q8_VEC], c1[Q8_VEC];
                    float pp[Q8_VEC];
                    unsigned skip = 0u;
                    if (r < KEEP) {   // from the registers
                        for (int j = 0; j < Q8_VEC; j++) {
                            pp[j] = T->p[r][j];
                            if (ncodes == 2) {
                                if (!((T->bad[r] >> j) & 1u)) pp[j] = adam8bit_param(*ak, t->decay, pp[j], T->a[r][j], T->b[r][j]);
                                c0[j] = emu_quantize(mp, 0, 1, T->a[r][j], an[0]);
                                c1[j] = emu_quantize(mp, 1, 0, T->b[r][j], an[1]);
                            } else {
                                c0[j] = emu_quantize(mp, 0, 1, T->a[r][j], an[0]);
                            }
                        }
                        skip = ncodes == 2 ? T->bad[r] : 0u;
                    } else {          // recomputed from memory, as the CPU does
                        float g[Q8_VEC];
                        uint8_t o0[Q8_VEC], o1[Q8_VEC];
                        const uint8_t* codes[2] = { t->code[0], t->code[1] };
                        emu_check_access(m, t, gi, vec, nv, codes, ncodes, lo + (size_t)e0);
                        if (m->violations) return -1;
                        emu_load(m, gi, vec, nv, clip, g, pp);
                        emu_load_codes(t->code[0] + lo + e0, vec, nv, o0);
                        if (ncodes == 2) emu_load_codes(t->code[1] + lo + e0, vec, nv, o1);
                        const float am0 = g_mut == MUT_RECOMPUTE_ABSMAX ? an[0] : T->am_old[0];
                        for (int j = 0; j < Q8_VEC; j++) {
                            if (ncodes == 2) {
                                float mm, vv;
                                adam8bit_moments(*ak, mp->code[0], mp->code[1], g[j], o0[j], o1[j], am0, T->am_old[1], &mm, &vv);
                                if (isfinite(g[j])) pp[j] = adam8bit_param(*ak, t->decay, pp[j], mm, vv);
                                else if (j < nv) skip |= 1u << j;
                                c0[j] = emu_quantize(mp, 0, 1, mm, an[0]);
                                c1[j] = emu_quantize(mp, 1, 0, vv, an[1]);
                            } else {
                                const float s = emu_op(op, t->decay, &pp[j], mp->code[0][o0[j]] * am0, g[j]);
                                c0[j] = emu_quantize(mp, 0, 1, s, an[0]);
                            }
                        }
                    }
                    if (ncodes == 2) for (int j = 0; j < Q8_VEC; j++) nonfinite += (skip >> j) & 1u;
                    emu_store_param(m, gi, lo + (size_t)e0, vec, nv, pp, sr, srb, skip);
                    emu_store_codes(t->code[0] + lo + e0, vec, nv, c0);
                    if (ncodes == 2) emu_store_codes(t->code[1] + lo + e0, vec, nv, c1);
                }
            }
        }
    }
    return nonfinite;
}

// ---- the cases ----------------------------------------------------------------------------------------
#define NT 7
static const size_t NUMEL[NT] = { 4097, 15000, 8643, 4097, 4099, 4223, 4161 };   // 4097, 3x5000, 129x67, 4096+1, +3, +127, 64x65+1

typedef struct {
    const char* opt;      // adamw8bit, lion8bit, sgdm8bit
    int qblock;
    int aligned;          // flat offsets multiples of 8 (else odd, with gaps)
    int slices;           // cut into -zero 1 pieces
    int sr;
    int grid;             // thread blocks (0: one per group)
} Case;

// Returns 1 when the emulated kernel matched the CPU bit for bit (why: the first difference).
static int run_case(const Case* cs, char* why, size_t why_n, long* vec_rounds, long* scalar_rounds) {
    const Optimizer* opt = optim_find(cs->opt);
    CHECK(opt);
    const int ncodes = !strcmp(cs->opt, "adamw8bit") ? 2 : 1;
    OptHyper h = opt->defaults;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    h.qblock = cs->qblock;
    const Q8Plan plan = q8_plan(cs->qblock);
    ParamShape shapes[NT];
    size_t offs[NT], P = cs->aligned ? 0 : 3;
    memset(shapes, 0, sizeof(shapes));
    for (int i = 0; i < NT; i++) {
        shapes[i].name = "t";
        shapes[i].numel = NUMEL[i];
        shapes[i].rows = 1;
        shapes[i].cols = NUMEL[i];
        shapes[i].ndim = 1;
        shapes[i].decay = i % 2 == 0;
        offs[i] = P;
        P += NUMEL[i] + (cs->aligned ? (8 - NUMEL[i] % 8) % 8 : (size_t)(i % 3));
    }
    // state buffers as the layout packs them: codes back to back per state, absmax back to back
    size_t ncode = 0, nabs = 0, coff[NT], aoff[NT];
    for (int i = 0; i < NT; i++) {
        coff[i] = ncode;
        aoff[i] = nabs;
        ncode += NUMEL[i];
        nabs += q8_num_blocks(NUMEL[i], (size_t)cs->qblock);
    }
    uint8_t* cpu_codes[2];
    float* cpu_abs[2];
    uint8_t* emu_codes[2];
    float* emu_abs[2];
    for (int s = 0; s < 2; s++) {
        cpu_codes[s] = (uint8_t*)xcalloc(ncode, 1);
        cpu_abs[s] = (float*)xcalloc(nabs, sizeof(float));
        emu_codes[s] = (uint8_t*)aligned_alloc(64, (ncode + 64 + 63) / 64 * 64);
        memset(emu_codes[s], 0, (ncode + 64 + 63) / 64 * 64);
        emu_abs[s] = (float*)xcalloc(nabs, sizeof(float));
    }
    // the emulated kernel's tensor table: whole tensors, or pieces of whole blocks (as trainer/zero.c cuts)
    Q8Tensor qt[8 * NT];
    int nq = 0;
    size_t nqblocks = 0;
    Rng rg;
    rng_seed(&rg, 1234 + (uint64_t)cs->qblock);
    for (int i = 0; i < NT; i++) {
        const size_t nb = q8_num_blocks(NUMEL[i], (size_t)cs->qblock);
        size_t b = 0;
        while (b < nb) {
            size_t take = nb - b;
            if (cs->slices && nb > 1) {
                const size_t cut = 1 + (size_t)rng_u32(&rg) % (nb > 3 ? nb / 2 : nb);
                take = cut < nb - b ? cut : nb - b;
            }
            Q8Tensor* t = &qt[nq++];
            const size_t start = b * (size_t)cs->qblock, end = (b + take) * (size_t)cs->qblock < NUMEL[i] ? (b + take) * (size_t)cs->qblock : NUMEL[i];
            t->param_off = offs[i] + start;
            t->numel = end - start;
            t->block0 = nqblocks;
            t->decay = shapes[i].decay;
            t->vec = t->param_off % Q8_VEC == 0;
            for (int s = 0; s < ncodes; s++) {
                t->code[s] = emu_codes[s] + coff[i] + start;
                t->absmax[s] = emu_abs[s] + aoff[i] + b;
                t->vec = t->vec && (uintptr_t)t->code[s] % 8 == 0;
            }
            nqblocks += take;
            b += take;
            CHECK(nq < 8 * NT);
        }
    }
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
    static uint8_t tabs[2][Q8_TAB_BYTES];
    q8_tab_build(q8_map_signed(), tabs[0]);
    q8_tab_build(q8_map_unsigned(), tabs[1]);
    if (g_mut == MUT_TABLE) for (int k = 0; k < 2; k++) memmove(tabs[k] + 1, tabs[k], Q8_TAB_N - 1);
    const EmuMaps mp = { { tabs[0], tabs[1] }, { q8_map_signed()->mid, q8_map_unsigned()->mid },
                         { q8_map_signed()->code, q8_map_unsigned()->code } };
    const float lr_scales[3] = { 0.3f, 1.0f, 0.7f }, clips[3] = { 1.0f, 0.5f, 1.0f };
    const uint64_t seed = 4244;
    const int grid = cs->grid > 0 ? cs->grid : (int)((nqblocks + plan.tpb - 1) / plan.tpb);
    long cpu_nonfinite = 0, emu_nonfinite = 0;
    int ok = 1;
    why[0] = 0;
    for (int step = 1; step <= 3 && ok; step++) {
        for (size_t i = 0; i < P; i++) {
            const float g = 0.1f * (1.0f + (float)(i % 10)) * rng_normal(&r);
            m.grad[i] = f32_to_bf16(g);
        }
        if (step == 2) {
            m.grad[offs[3] + 5] = 0x7fc0;                     // NaN
            m.grad[offs[ncodes == 2 ? 4 : 6] + 4098] = 0x7f80; // +Inf (the 1-state kernels: its block is lost on both sides)
        }
        memset(m.touched, 0, P * sizeof(int));
        // the CPU: each whole tensor through the optimizer's step
        for (int i = 0; i < NT; i++) {
            for (size_t j = 0; j < NUMEL[i]; j++) gs[j] = bf16_to_f32(m.grad[offs[i] + j]) * clips[step - 1];
            OptTensor ot = { &shapes[i], cpu_theta + offs[i], gs, { 0 } };
            if (ncodes == 2) {
                ot.state[0] = cpu_codes[0] + coff[i];
                ot.state[1] = cpu_codes[1] + coff[i];
                ot.state[2] = cpu_abs[0] + aoff[i];
                ot.state[3] = cpu_abs[1] + aoff[i];
            } else {
                ot.state[0] = cpu_codes[0] + coff[i];
                ot.state[1] = cpu_abs[0] + aoff[i];
            }
            OptStep st = { step, h.lr * lr_scales[step - 1], lr_scales[step - 1], 0, NULL };
            opt->step(&h, &ot, &st);
            cpu_nonfinite += st.nonfinite;
        }
        // the emulated kernel
        const double lr = h.lr * (double)lr_scales[step - 1];
        const Adam8bitScalars ak = adam8bit_scalars(&h, lr, step);
        Emu1Op op;
        memset(&op, 0, sizeof(op));
        op.kind = !strcmp(cs->opt, "lion8bit") ? 0 : 1;
        op.lion = lion8bit_scalars(&h, lr);
        op.sgdm = sgdm8bit_scalars(&h, lr, step);
        const long nf = emu_kernel(ncodes, &plan, grid, qt, nq, nqblocks, &m, &mp, 1, clips[step - 1], cs->sr, seed, step, &ak, &op);
        if (nf < 0) { snprintf(why, why_n, "step %d: %ld accesses outside a tensor or misaligned", step, m.violations); ok = 0; break; }
        emu_nonfinite += nf;
        // compare
        // per piece: stochastic rounding draws from the piece's stream at its own indices (trainer/zero_gpu.cuh)
        for (int i = 0; i < nq && ok; i++) {
            const uint64_t sb = sr_stream(seed, step, qt[i].param_off);
            for (size_t j = 0; j < qt[i].numel && ok; j++) {
                const size_t gi = qt[i].param_off + j;
                const int skipped = ncodes == 2 && !isfinite(bf16_to_f32(m.grad[gi]));
                if (m.touched[gi] != !skipped) { snprintf(why, why_n, "step %d element %zu written %d times", step, gi, m.touched[gi]); ok = 0; }
                else if (memcmp(&m.master[gi], &cpu_theta[gi], 4)) {
                    snprintf(why, why_n, "step %d piece %d element %zu: master %.9g, cpu %.9g", step, i, j, m.master[gi], cpu_theta[gi]);
                    ok = 0;
                } else if (!skipped && m.pbf16[gi] != master_to_bf16(cpu_theta[gi], cs->sr, sb, j)) {
                    snprintf(why, why_n, "step %d piece %d element %zu: bf16 copy differs", step, i, j);
                    ok = 0;
                }
            }
        }
        long writes = 0, expected = 0;   // nothing outside the pieces (the gaps between tensors) is written
        for (size_t i = 0; i < P; i++) writes += m.touched[i];
        for (int i = 0; i < nq; i++)
            for (size_t j = 0; j < qt[i].numel; j++) expected += !(ncodes == 2 && !isfinite(bf16_to_f32(m.grad[qt[i].param_off + j])));
        if (ok && writes != expected) { snprintf(why, why_n, "step %d: %ld master writes, %ld expected", step, writes, expected); ok = 0; }
        for (int s = 0; s < ncodes && ok; s++) {
            for (size_t j = 0; j < ncode && ok; j++)
                if (emu_codes[s][j] != cpu_codes[s][j]) { snprintf(why, why_n, "step %d state %d code %zu: %d, cpu %d", step, s, j, emu_codes[s][j], cpu_codes[s][j]); ok = 0; }
            for (size_t j = 0; j < nabs && ok; j++)
                if (memcmp(&emu_abs[s][j], &cpu_abs[s][j], 4)) { snprintf(why, why_n, "step %d state %d absmax %zu: %.9g, cpu %.9g", step, s, j, emu_abs[s][j], cpu_abs[s][j]); ok = 0; }
        }
    }
    if (ok && emu_nonfinite != cpu_nonfinite) {
        snprintf(why, why_n, "non-finite counted %ld, cpu %ld", emu_nonfinite, cpu_nonfinite);
        ok = 0;
    }
    *vec_rounds = m.vec_rounds;
    *scalar_rounds = m.scalar_rounds;
    for (int s = 0; s < 2; s++) { free(cpu_codes[s]); free(cpu_abs[s]); free(emu_codes[s]); free(emu_abs[s]); }
    free(m.master); free(m.grad); free(m.pbf16); free(m.touched); free(cpu_theta); free(gs);
    return ok;
}

// ---- the lookup table against bitsandbytes' search -------------------------------------------------------
static int check_table(const Q8Map* map, const char* name) {
    uint8_t tab[Q8_TAB_BYTES];
    q8_tab_build(map, tab);
    long n = 0, bad = 0;
    float worst = 0.0f;
#define TRY(xv) do { const float x_ = (xv); n++; if (q8_tab_nearest(tab, map->mid, map->code, x_) != q8_search(map->code, x_)) { bad++; worst = x_; } } while (0)
    // every bucket edge of the table's range (and one bucket beyond each end), +-2 ulps, both signs
    for (uint32_t e = Q8_TAB_E0 - 1; e <= Q8_TAB_E1 + 1; e++)
        for (uint32_t s = 0; s < 2; s++) {
            const uint32_t b0 = (s << 31) | (e << 16);
            for (int d = -2; d <= 2; d++) { TRY(f32_from_bits(b0 + (uint32_t)d)); TRY(f32_from_bits(b0 + 0xFFFFu + (uint32_t)d)); }
        }
    // every midpoint +-2 ulps, and the codes
    for (int c = 0; c < Q8_CODES; c++) {
        const float xs[2] = { map->mid[c], map->code[c] };
        for (int k = 0; k < 2; k++) {
            if (isnan(xs[k])) continue;
            float x = xs[k];
            for (int d = 0; d < 2; d++) x = nextafterf(x, -INFINITY);
            for (int d = 0; d < 5; d++, x = nextafterf(x, INFINITY)) TRY(x);
        }
    }
    // random values in [-1, 1] over all exponents, and the specials
    Rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 2000000; i++) {
        const uint32_t bits = rng_u32(&r);
        float x = f32_from_bits(bits);
        if (!(fabsf(x) <= 1.0f)) x = rng_f32(&r) * 2.0f - 1.0f;
        TRY(x);
    }
    const float sp[] = { 0.0f, -0.0f, 1.0f, -1.0f, NAN, -NAN, INFINITY, -INFINITY, 1e-45f, -1e-45f, 1.5f, -2.0f, 5.9604645e-8f, -5.9604645e-8f };
    for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]); i++) TRY(sp[i]);
#undef TRY
    char why[128];
    snprintf(why, sizeof(why), "%ld of %ld values differ (e.g. %.9g)", bad, n, worst);
    test_check(bad == 0, why, "q8 plan: lookup table == bitsandbytes' search, %s map (%ld values: bucket edges, midpoints, random, specials)", name, n);
    return bad == 0;
}

// adamw4bit's kernel search (q4_nearest_bs, 4 comparisons) against q4_nearest and the official search.
static void check_q4_bsearch(const Q4Map* map, const char* name) {
    long n = 0, bad = 0;
    Rng r;
    rng_seed(&r, 9);
#define TRY4(xv) do { const float x_ = (xv); n++; const uint8_t c_ = q4_nearest_bs(map, x_); \
                      if (c_ != q4_nearest(map, x_) || c_ != q4_search(map->code, x_)) bad++; } while (0)
    for (int c = 0; c < Q4_CODES; c++) {
        const float xs[2] = { map->code[c], c < Q4_CODES - 1 ? map->mid[c] : 1.0f };
        for (int k = 0; k < 2; k++) {
            float x = xs[k];
            for (int d = 0; d < 3; d++) x = nextafterf(x, -INFINITY);
            for (int d = 0; d < 7; d++, x = nextafterf(x, INFINITY)) TRY4(x);
        }
    }
    for (int i = 0; i < 1000000; i++) TRY4(f32_from_bits(rng_u32(&r)));
    for (int i = 0; i < 1000000; i++) TRY4(rng_f32(&r) * 2.2f - 1.1f);
    const float sp[] = { 0.0f, -0.0f, NAN, INFINITY, -INFINITY, 1.0f, -1.0f };
    for (size_t i = 0; i < sizeof(sp) / sizeof(sp[0]); i++) TRY4(sp[i]);
#undef TRY4
    char why[96];
    snprintf(why, sizeof(why), "%ld of %ld values differ", bad, n);
    test_check(bad == 0, why, "q4 kernel search: q4_nearest_bs == q4_nearest == q4_search, %s map (%ld values)", name, n);
}

int main(void) {
    check_q4_bsearch(q4_map_signed(), "signed");
    check_q4_bsearch(q4_map_linear(), "linear");
    check_table(q8_map_signed(), "signed");
    check_table(q8_map_unsigned(), "unsigned");
    // the plan's geometry
    {
        const int qs[6] = { 64, 128, 256, 512, 4096, 65536 };
        const int team[6] = { 8, 16, 32, 64, 256, 256 }, rounds[6] = { 1, 1, 1, 1, 2, 32 }, keep[6] = { 1, 1, 1, 1, 2, 2 },
                  threads[6] = { 256, 256, 256, 64, 256, 256 };
        int ok = 1;
        for (int i = 0; i < 6; i++) {
            const Q8Plan p = q8_plan(qs[i]);
            ok &= p.team == team[i] && p.rounds == rounds[i] && p.keep == keep[i] && p.threads == threads[i] && p.tpb * p.team == p.threads &&
                  p.team * p.rounds * Q8_VEC == qs[i];
        }
        test_check(ok, "a qblock's team, rounds, keep or threads", "q8 plan: geometry for qblock 64..65536 (team x rounds x 8 = qblock)");
    }
    const Case cases[] = {
        { "adamw8bit", 256, 0, 0, 0, 3 },  { "adamw8bit", 256, 1, 0, 0, 7 },  { "adamw8bit", 64, 0, 1, 0, 3 },
        { "adamw8bit", 64, 1, 1, 1, 0 },   { "adamw8bit", 512, 0, 1, 0, 5 },  { "adamw8bit", 4096, 0, 0, 0, 2 },
        { "adamw8bit", 4096, 1, 1, 0, 3 }, { "adamw8bit", 8192, 1, 0, 0, 1 }, { "adamw8bit", 256, 1, 1, 1, 1 },
        { "lion8bit", 256, 0, 1, 0, 3 },   { "lion8bit", 64, 1, 0, 1, 7 },    { "lion8bit", 4096, 1, 1, 0, 2 },
        { "lion8bit", 8192, 0, 0, 0, 3 },  { "sgdm8bit", 256, 1, 1, 0, 0 },   { "sgdm8bit", 512, 1, 0, 1, 3 },
        { "sgdm8bit", 64, 0, 0, 0, 5 },    { "sgdm8bit", 8192, 1, 1, 0, 2 },
    };
    const int ncases = (int)(sizeof(cases) / sizeof(cases[0]));
    long vec_total = 0, scalar_total = 0;
    for (int c = 0; c < ncases; c++) {
        char why[256];
        long vr = 0, sr = 0;
        const Case* cs = &cases[c];
        const int ok = run_case(cs, why, sizeof(why), &vr, &sr);
        vec_total += vr;
        scalar_total += sr;
        test_check(ok, why, "q8 plan: %s qblock %d, %s offsets, %s, %s, grid %d: master, bf16 copy, codes, absmax bit-identical to the CPU step "
                   "(%ld vector, %ld scalar rounds)", cs->opt, cs->qblock, cs->aligned ? "aligned" : "odd", cs->slices ? "zero slices" : "whole tensors",
                   cs->sr ? "sr" : "nearest", cs->grid, vr, sr);
    }
    test_check(vec_total > 0 && scalar_total > 0, "one path never ran", "q8 plan: both the vector and the scalar paths ran (%ld, %ld rounds)",
               vec_total, scalar_total);
    // the mutants: each must break at least one of a few representative cases
    const Case mc[] = { { "adamw8bit", 64, 0, 1, 0, 3 }, { "adamw8bit", 256, 1, 1, 0, 3 }, { "lion8bit", 512, 1, 1, 0, 3 },
                        { "sgdm8bit", 8192, 0, 0, 0, 2 }, { "adamw8bit", 8192, 1, 0, 0, 1 } };
    for (int mu = 1; mu < MUT_COUNT; mu++) {
        g_mut = mu;
        int caught = 0;
        char why[256] = "", first[256] = "";
        for (int c = 0; c < (int)(sizeof(mc) / sizeof(mc[0])) && !caught; c++) {
            long vr, sr;
            if (!run_case(&mc[c], why, sizeof(why), &vr, &sr)) { caught = 1; snprintf(first, sizeof(first), "%s", why); }
        }
        g_mut = MUT_NONE;
        test_check(caught, "the emulation still matched the CPU", "q8 plan: mutant \"%s\" is caught (%s)", MUT_NAMES[mu], first);
    }
    return test_finish("test_optim_q8_plan");
}
