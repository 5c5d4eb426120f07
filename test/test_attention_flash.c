// test/test_attention_flash.c: the tensor-core flash-attention kernels (cuda/attention_flash.cuh) run on
// the host, warp by warp and lane by lane, against a double-precision causal attention.
//
// No GPU is needed: the emulation below replays each kernel's plan with the index rules of
// cuda/attention_flash_plan.h (the same header the kernels include): tile sizes, which 16-byte chunk each
// thread loads (rows past T as zeros), the double-buffered tile loop and its bounds, the causal skip and
// mask rules, the ldmatrix row addresses and the ldmatrix-register -> fragment-register assignment, the
// accumulator -> A-operand reuse of P and dS, the online softmax (exp2 of log2-scaled scores, running max,
// per-lane partial sums reduced by xor-shuffles 1 and 2), the bf16 roundings (P and dS before their mma,
// out, dq, dk, dv on store) and the accumulation order of every tile.
// What the plan header is checked against is written here independently, from the PTX ISA's tables:
// isa_ldmatrix_x4 (ldmatrix .m8n8.x4 .b16, plain and .trans) and isa_mma (mma.m16n8k16 .row.col
// f32.bf16.bf16.f32: the A, B, C/D fragment layouts by groupID and threadID_in_group). A wrong helper
// moves values to wrong rows/columns and the result is O(1) off; the mutant checks at the end prove it by
// running the emulation with deliberately wrong copies of each helper.
// Emulated shared memory starts as NaN, so a read of anything a load never wrote poisons the result.
//
// Tolerances (reference: double precision from the same bf16 inputs; errors measured relative to the
// largest reference value of the tensor, M = max|ref|):
//  - lse: fp32 arithmetic only (inputs exact, exp2/log2 in fp32): |err| <= 1e-5 + 1e-5 |ref|.
//  - out: rounded to bf16 on store (relative 2^-9 = 0.002 of the value) and P rounded to bf16 before P V
//    (relative 2^-9 per term, independent roundings, partly averaging out): |err| <= 2^-8 |ref| + 2^-9 M.
//  - dq, dk, dv: bf16 on store (2^-9 relative), P and dS rounded to bf16 before their mma (2^-9 per
//    term), and D_i = dO_i . out_i computed from the bf16-rounded out (so dP - D carries an error of
//    about 2^-9 |dO| |out|, the same as the fp32 reference kernels with bf16 storage). A gradient is a sum
//    of many terms of both signs, so its error is relative to the size of the terms, not of the sum:
//    |err| <= 2^-7 |ref| + 2^-7 M. Measured worst errors are printed and sit well below these.
// A layout or loop bug moves an element by about a whole term or a whole value (O(M)); the mutants
// below are detected with err/tol ratios in the tens to thousands.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include <time.h>
#include "common/numerics.h"
#include "cuda/attention_flash_plan.h"
#include "test/test.h"

#define BF16_NAN 0x7fc0u
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// ---- the PTX ISA (written from the ISA's fragment tables, not from the plan header) ------------------
// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: threads 0-7 give the row addresses of matrix 0,
// threads 8-15 of matrix 1, 16-23 of matrix 2, 24-31 of matrix 3; a row is 8 consecutive b16. Each
// thread receives one 32-bit register per matrix: thread l holds row l/4, elements 2*(l%4) and 2*(l%4)+1
// of the matrix (the first in the low half). With .trans the matrix is transposed on the way: thread l
// gets the elements at (row 2*(l%4), column l/4) and (row 2*(l%4)+1, column l/4).
static void isa_ldmatrix_x4(uint32_t d[32][4], const bf16* smem, const int addr[32], int trans) {
    for (int l = 0; l < 32; l++)
        for (int m = 0; m < 4; m++) {
            bf16 e0, e1;
            if (!trans) {
                const bf16* row = smem + addr[8 * m + l / 4];
                e0 = row[2 * (l % 4)];
                e1 = row[2 * (l % 4) + 1];
            } else {
                e0 = smem[addr[8 * m + 2 * (l % 4)] + l / 4];
                e1 = smem[addr[8 * m + 2 * (l % 4) + 1] + l / 4];
            }
            d[l][m] = (uint32_t)e0 | ((uint32_t)e1 << 16);
        }
}

static float half_of(uint32_t r, int hi) { return bf16_to_f32((bf16)(hi ? r >> 16 : r & 0xffffu)); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: D = A B + C. groupID = lane >> 2,
// threadID_in_group = lane % 4. A (16x16): a0..a7 in 4 registers (two per register, lower index in the
// low half); row = groupID for a0, a1, a4, a5 and groupID + 8 for a2, a3, a6, a7; col =
// threadID_in_group * 2 + (i & 1) for a0..a3, plus 8 for a4..a7. B (16x8): b0..b3 in 2 registers;
// row = threadID_in_group * 2 + (i & 1) for b0, b1, plus 8 for b2, b3; col = groupID. C, D (16x8 fp32):
// c0..c3; row = groupID for c0, c1, groupID + 8 for c2, c3; col = threadID_in_group * 2 + (i & 1).
static void isa_mma(float c[32][4], const uint32_t a[32][4], const uint32_t b[32][2]) {
    float A[16][16], B[16][8], Cm[16][8];
    for (int lane = 0; lane < 32; lane++) {
        const int groupID = lane >> 2, tig = lane % 4;
        for (int i = 0; i < 8; i++) {
            const int row = (i == 0 || i == 1 || i == 4 || i == 5) ? groupID : groupID + 8;
            const int col = i < 4 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
            A[row][col] = half_of(a[lane][i / 2], i % 2);
        }
        for (int i = 0; i < 4; i++) {
            const int row = i < 2 ? tig * 2 + (i & 1) : tig * 2 + (i & 1) + 8;
            B[row][groupID] = half_of(b[lane][i / 2], i % 2);
        }
        for (int i = 0; i < 4; i++) Cm[i < 2 ? groupID : groupID + 8][tig * 2 + (i & 1)] = c[lane][i];
    }
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) {
            double acc = 0.0; // products of bf16 are exact in double; the hardware sums in fp32, order unspecified
            for (int k = 0; k < 16; k++) acc += (double)A[r][k] * B[k][n];
            Cm[r][n] = (float)(acc + Cm[r][n]);
        }
    for (int lane = 0; lane < 32; lane++) {
        const int groupID = lane >> 2, tig = lane % 4;
        for (int i = 0; i < 4; i++) c[lane][i] = Cm[i < 2 ? groupID : groupID + 8][tig * 2 + (i & 1)];
    }
}

// ---- the plan: the helpers of cuda/attention_flash_plan.h, through pointers so a mutant can swap one ----
typedef struct {
    int (*chunk_row)(int, int);
    int (*chunk_col)(int, int);
    int (*c_row)(int, int);
    int (*c_col)(int, int);
    int (*ldsm_row)(int);
    int (*ldsm_col)(int);
    int (*bn_reg)(int, int);
    int (*bt_reg)(int, int);
    int (*p_ntile)(int);
    int (*p_creg)(int);
    int (*masked)(int, int);
    int (*last_key)(int, int, int);
    int (*tile_needs_mask)(int, int, int);
    int (*all_masked)(int, int);
} Plan;

static const Plan PLAN = {fa_chunk_row, fa_chunk_col, fa_c_row, fa_c_col, fa_ldsm_row, fa_ldsm_col, fa_bn_reg, fa_bt_reg,
                          fa_p_ntile, fa_p_creg, fa_masked, fa_last_key, fa_tile_needs_mask, fa_all_masked};

// ---- emulated warp primitives, mirroring the kernels' device helpers one for one --------------------
typedef float Acc[32][4];    // one n8 tile of fp32 accumulators, per lane
typedef uint32_t Frag[32][4]; // an A fragment (or ldmatrix result), per lane

// fa_load_tile: rows [r0, r0 + rows) of a (T, hs) matrix with row stride rs -> dst (rows, LD); rows >= T zeros
static void emu_load_tile(const Plan* P, int hs, int rows, bf16* dst, const bf16* src, size_t rs, int r0, int T) {
    const int LD = FA_LD(hs);
    for (int tid = 0; tid < FA_THREADS; tid++)
        for (int n = 0; n < rows * hs / 8 / FA_THREADS; n++) {
            const int c = tid + FA_THREADS * n;
            const int row = P->chunk_row(c, hs), col = P->chunk_col(c, hs);
            bf16* d = dst + row * LD + col;
            if (r0 + row < T) memcpy(d, src + (size_t)(r0 + row) * rs + col, 16);
            else memset(d, 0, 16);
        }
}

static void emu_ldsm(const Plan* P, Frag d, const bf16* tile, int LD, int r0, int c0, int trans) {
    int addr[32];
    for (int l = 0; l < 32; l++) addr[l] = (r0 + P->ldsm_row(l)) * LD + c0 + P->ldsm_col(l);
    isa_ldmatrix_x4(d, tile, addr, trans);
}

// fa_mma_bn / fa_mma_bt: acc[NT] += a times a 16 x 8NT block of a tile stored [n][k] (plain) or [k][n] (.trans)
static void emu_mma_b(const Plan* P, Acc* acc, int NT, Frag a, const bf16* tile, int LD, int n0, int k0, int trans) {
    for (int np = 0; np < NT / 2; np++) {
        Frag d;
        if (!trans) emu_ldsm(P, d, tile, LD, n0 + 16 * np, k0, 0);
        else emu_ldsm(P, d, tile, LD, k0, 16 * np, 1);
        for (int nt = 0; nt < 2; nt++) {
            uint32_t b[32][2];
            for (int l = 0; l < 32; l++)
                for (int j = 0; j < 2; j++) b[l][j] = d[l][trans ? P->bt_reg(nt, j) : P->bn_reg(nt, j)];
            isa_mma(acc[2 * np + nt], a, b);
        }
    }
}

// fa_acc_to_a
static void emu_acc_to_a(const Plan* P, Frag a, Acc* acc, int kk) {
    for (int l = 0; l < 32; l++)
        for (int r = 0; r < 4; r++) {
            const float* c = acc[2 * kk + P->p_ntile(r)][l];
            a[l][r] = (uint32_t)f32_to_bf16(c[P->p_creg(r)]) | ((uint32_t)f32_to_bf16(c[P->p_creg(r) + 1]) << 16);
        }
}

// v[l] = op(v[l], v[l ^ 1]), then op(v[l], v[l ^ 2]) for every lane: the kernels' two xor shuffles
static void emu_shfl_max(float v[32]) {
    for (int o = 1; o <= 2; o <<= 1) {
        float t[32];
        for (int l = 0; l < 32; l++) t[l] = fmaxf(v[l], v[l ^ o]);
        memcpy(v, t, sizeof(t));
    }
}
static void emu_shfl_sum(float v[32]) {
    for (int o = 1; o <= 2; o <<= 1) {
        float t[32];
        for (int l = 0; l < 32; l++) t[l] = v[l] + v[l ^ o];
        memcpy(v, t, sizeof(t));
    }
}

// fa_store_rows: acc (16 x hs) * mul[row half] -> bf16 staged in st (the warp's 16 rows), rows < T -> dst
static void emu_store_rows(const Plan* P, int hs, bf16* dst, size_t rs, int row0, int T, bf16* st, Acc* acc, float mul[32][2]) {
    const int LD = FA_LD(hs);
    for (int l = 0; l < 32; l++)
        for (int n = 0; n < hs / 8; n++)
            for (int r = 0; r < 2; r++) {
                bf16* p = st + P->c_row(l, 2 * r) * LD + 8 * n + P->c_col(l, 2 * r);
                p[0] = f32_to_bf16(acc[n][l][2 * r] * mul[l][r]);
                p[1] = f32_to_bf16(acc[n][l][2 * r + 1] * mul[l][r]);
            }
    for (int l = 0; l < 32; l++)
        for (int n = 0; n < FA_WROWS * hs / 8 / 32; n++) {
            const int c = l + 32 * n;
            const int row = P->chunk_row(c, hs), col = P->chunk_col(c, hs);
            if (row0 + row < T) memcpy(dst + (size_t)(row0 + row) * rs + col, st + row * LD + col, 16);
        }
}

static bf16* smem_alloc(size_t n) {
    bf16* p = (bf16*)malloc(n * sizeof(bf16));
    for (size_t i = 0; i < n; i++) p[i] = BF16_NAN;
    return p;
}

// ---- emulated kernels --------------------------------------------------------------------------------
typedef struct { int B, T, NH, HS; } Shape;

// attn_flash_fwd_kernel, every block
static void emu_forward(const Plan* P, Shape sh, bf16* out, float* lse, const bf16* qkv) {
    const int T = sh.T, NH = sh.NH, HS = sh.HS, C = NH * HS, LD = FA_LD(HS);
    const int KS = HS / 16, NO = HS / 8, NS = FA_BK / 8;
    const float sl2 = 1.0f / sqrtf((float)HS) * LOG2E;
    const size_t rs = 3 * (size_t)C;
    const int nblocks = (T + FA_BQ - 1) / FA_BQ;
    bf16* qs = smem_alloc((size_t)FA_BQ * LD);
    bf16* kvs = smem_alloc((size_t)4 * FA_BK * LD);
    Frag* qf = malloc(sizeof(Frag) * FA_WARPS * KS);   // [w][kk]
    Acc* o = malloc(sizeof(Acc) * FA_WARPS * NO);      // [w][n]
    float(*m)[32][2] = malloc(sizeof(float) * FA_WARPS * 64), (*l)[32][2] = malloc(sizeof(float) * FA_WARPS * 64);
    Acc s[FA_BK / 8];
    for (int bh = 0; bh < sh.B * NH; bh++)
        for (int bx = 0; bx < nblocks; bx++) {
            const int b = bh / NH, h = bh % NH;
            const int q0 = fa_qtile(bx, nblocks) * FA_BQ;
            const bf16* qg = qkv + (size_t)b * T * rs + h * HS;
            const int last = P->last_key(q0, FA_BQ, T);
            emu_load_tile(P, HS, FA_BQ, qs, qg, rs, q0, T);
            emu_load_tile(P, HS, FA_BK, kvs, qg + C, rs, 0, T);
            emu_load_tile(P, HS, FA_BK, kvs + FA_BK * LD, qg + 2 * C, rs, 0, T);
            for (int w = 0; w < FA_WARPS; w++) {
                memset(o + w * NO, 0, sizeof(Acc) * NO);
                for (int ln = 0; ln < 32; ln++) m[w][ln][0] = m[w][ln][1] = -INFINITY, l[w][ln][0] = l[w][ln][1] = 0.0f;
            }
            for (int k0 = 0, u = 0; k0 <= last; k0 += FA_BK, u ^= 1) {
                if (k0 == 0)
                    for (int w = 0; w < FA_WARPS; w++)
                        for (int kk = 0; kk < KS; kk++) emu_ldsm(P, qf[w * KS + kk], qs, LD, FA_WROWS * w, 16 * kk, 0);
                if (k0 + FA_BK <= last) {
                    bf16* nb = kvs + (u ^ 1) * 2 * FA_BK * LD;
                    emu_load_tile(P, HS, FA_BK, nb, qg + C, rs, k0 + FA_BK, T);
                    emu_load_tile(P, HS, FA_BK, nb + FA_BK * LD, qg + 2 * C, rs, k0 + FA_BK, T);
                }
                const bf16* kb = kvs + u * 2 * FA_BK * LD;
                const bf16* vb = kb + FA_BK * LD;
                for (int w = 0; w < FA_WARPS; w++) {
                    Acc* ow = o + w * NO;
                    memset(s, 0, sizeof(s));
                    for (int kk = 0; kk < KS; kk++) emu_mma_b(P, s, NS, qf[w * KS + kk], kb, LD, 0, 16 * kk, 0);
                    const int mask = P->tile_needs_mask(q0, k0, FA_BK);
                    float mt[2][32];
                    for (int ln = 0; ln < 32; ln++) {
                        mt[0][ln] = mt[1][ln] = -INFINITY;
                        for (int n = 0; n < NS; n++)
                            for (int i = 0; i < 4; i++) {
                                float x = s[n][ln][i] * sl2;
                                if (mask && P->masked(q0 + FA_WROWS * w + P->c_row(ln, i), k0 + 8 * n + P->c_col(ln, i))) x = -INFINITY;
                                s[n][ln][i] = x;
                                mt[i >> 1][ln] = fmaxf(mt[i >> 1][ln], x);
                            }
                    }
                    for (int r = 0; r < 2; r++) {
                        emu_shfl_max(mt[r]);
                        for (int ln = 0; ln < 32; ln++) {
                            const float mn = fmaxf(m[w][ln][r], mt[r][ln]);
                            const float corr = exp2f(m[w][ln][r] - mn);
                            m[w][ln][r] = mn;
                            l[w][ln][r] *= corr;
                            for (int n = 0; n < NO; n++) { ow[n][ln][2 * r] *= corr; ow[n][ln][2 * r + 1] *= corr; }
                        }
                    }
                    for (int ln = 0; ln < 32; ln++)
                        for (int n = 0; n < NS; n++)
                            for (int i = 0; i < 4; i++) {
                                const float p = exp2f(s[n][ln][i] - m[w][ln][i >> 1]);
                                s[n][ln][i] = p;
                                l[w][ln][i >> 1] += p;
                            }
                    for (int kk = 0; kk < FA_BK / 16; kk++) {
                        Frag pa;
                        emu_acc_to_a(P, pa, s, kk);
                        emu_mma_b(P, ow, NO, pa, vb, LD, 0, 16 * kk, 1);
                    }
                }
            }
            for (int w = 0; w < FA_WARPS; w++) {
                float inv[32][2], lr[2][32];
                for (int r = 0; r < 2; r++) {
                    for (int ln = 0; ln < 32; ln++) lr[r][ln] = l[w][ln][r];
                    emu_shfl_sum(lr[r]);
                    for (int ln = 0; ln < 32; ln++) inv[ln][r] = 1.0f / lr[r][ln];
                }
                const int i0 = q0 + FA_WROWS * w;
                emu_store_rows(P, HS, out + (size_t)b * T * C + h * HS, C, i0, T, qs + FA_WROWS * w * LD, o + w * NO, inv);
                for (int ln = 0; ln < 32; ln += 4)
                    for (int r = 0; r < 2; r++) {
                        const int i = i0 + P->c_row(ln, 2 * r);
                        if (i < T) lse[(size_t)bh * T + i] = (m[w][ln][r] + log2f(lr[r][ln])) * LN2;
                    }
            }
        }
    free(qs); free(kvs); free(qf); free(o); free(m); free(l);
}

// attention_backward_pre_kernel (cuda/attention.cuh): 4 lanes per row, lane g sums d = g + 4 dd, then two shuffles
static void emu_pre(Shape sh, float* dpre, const bf16* out, const bf16* dout) {
    const int T = sh.T, NH = sh.NH, HS = sh.HS, C = NH * HS;
    for (int bh = 0; bh < sh.B * NH; bh++)
        for (int i = 0; i < T; i++) {
            const int b = bh / NH, h = bh % NH;
            const size_t off = ((size_t)b * T + i) * C + h * HS;
            float a[4];
            for (int g = 0; g < 4; g++) {
                a[g] = 0.0f;
                for (int d = 0; d < HS / 4; d++) a[g] += bf16_to_f32(out[off + g + 4 * d]) * bf16_to_f32(dout[off + g + 4 * d]);
            }
            dpre[(size_t)bh * T + i] = (a[0] + a[1]) + (a[2] + a[3]);
        }
}

// attn_flash_dkv_kernel, every block
static void emu_dkv(const Plan* P, Shape sh, bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dpre) {
    const int T = sh.T, NH = sh.NH, HS = sh.HS, C = NH * HS, LD = FA_LD(HS), BN = FA_BWD_BN(HS);
    const int KS = HS / 16, NN = BN / 8, NO = HS / 8;
    const float scale = 1.0f / sqrtf((float)HS), sl2 = scale * LOG2E;
    const size_t rs = 3 * (size_t)C;
    bf16* ks = smem_alloc((size_t)FA_BKV * LD);
    bf16* vs = smem_alloc((size_t)FA_BKV * LD);
    bf16* qds = smem_alloc((size_t)4 * BN * LD);
    float* fs = malloc(sizeof(float) * 4 * BN);
    for (int i = 0; i < 4 * BN; i++) fs[i] = NAN;
    Acc* dk = malloc(sizeof(Acc) * FA_WARPS * NO);
    Acc* dv = malloc(sizeof(Acc) * FA_WARPS * NO);
    Acc st[8], dpt[8];
    for (int bh = 0; bh < sh.B * NH; bh++)
        for (int bx = 0; bx < (T + FA_BKV - 1) / FA_BKV; bx++) {
            const int b = bh / NH, h = bh % NH;
            const int k0 = bx * FA_BKV;
            const bf16* qg = qkv + (size_t)b * T * rs + h * HS;
            const bf16* og = dout + (size_t)b * T * C + h * HS;
            const float* lg = lse + (size_t)bh * T;
            const float* dg = dpre + (size_t)bh * T;
            // load_q
#define EMU_LOAD_Q(i0_, u_)                                                           \
    do {                                                                              \
        bf16* qb_ = qds + (u_) * 2 * BN * LD;                                         \
        emu_load_tile(P, HS, BN, qb_, qg, rs, (i0_), T);                              \
        emu_load_tile(P, HS, BN, qb_ + BN * LD, og, C, (i0_), T);                     \
        float* fb_ = fs + (u_) * 2 * BN;                                              \
        for (int r_ = 0; r_ < BN; r_++) {                                             \
            const int i_ = (i0_) + r_;                                                \
            fb_[r_] = i_ < T ? lg[i_] * LOG2E : INFINITY;                             \
            fb_[BN + r_] = i_ < T ? dg[i_] : 0.0f;                                    \
        }                                                                             \
    } while (0)
            emu_load_tile(P, HS, FA_BKV, ks, qg + C, rs, k0, T);
            emu_load_tile(P, HS, FA_BKV, vs, qg + 2 * C, rs, k0, T);
            EMU_LOAD_Q(k0, 0);
            memset(dk, 0, sizeof(Acc) * FA_WARPS * NO);
            memset(dv, 0, sizeof(Acc) * FA_WARPS * NO);
            for (int i0 = k0, u = 0; i0 < T; i0 += BN, u ^= 1) {
                if (i0 + BN < T) EMU_LOAD_Q(i0 + BN, u ^ 1);
                for (int w = 0; w < FA_WARPS; w++) {
                    const int kw = k0 + FA_WROWS * w;
                    if (P->all_masked(i0 + BN - 1, kw)) continue;
                    const bf16* qb = qds + u * 2 * BN * LD;
                    const bf16* ob = qb + BN * LD;
                    const float* lb = fs + u * 2 * BN;
                    const float* db = lb + BN;
                    memset(st, 0, sizeof(st));
                    memset(dpt, 0, sizeof(dpt));
                    for (int kk = 0; kk < KS; kk++) {
                        Frag a;
                        emu_ldsm(P, a, ks, LD, FA_WROWS * w, 16 * kk, 0);
                        emu_mma_b(P, st, NN, a, qb, LD, 0, 16 * kk, 0);
                        emu_ldsm(P, a, vs, LD, FA_WROWS * w, 16 * kk, 0);
                        emu_mma_b(P, dpt, NN, a, ob, LD, 0, 16 * kk, 0);
                    }
                    const int mask = P->tile_needs_mask(i0, k0, FA_BKV);
                    for (int ln = 0; ln < 32; ln++)
                        for (int n = 0; n < NN; n++)
                            for (int i = 0; i < 4; i++) {
                                const int qi = 8 * n + P->c_col(ln, i);
                                float p = exp2f(st[n][ln][i] * sl2 - lb[qi]);
                                if (mask && P->masked(i0 + qi, kw + P->c_row(ln, i))) p = 0.0f;
                                st[n][ln][i] = p;
                                dpt[n][ln][i] = p * (dpt[n][ln][i] - db[qi]);
                            }
                    for (int kk = 0; kk < BN / 16; kk++) {
                        Frag a;
                        emu_acc_to_a(P, a, st, kk);
                        emu_mma_b(P, dv + w * NO, NO, a, ob, LD, 0, 16 * kk, 1);
                        emu_acc_to_a(P, a, dpt, kk);
                        emu_mma_b(P, dk + w * NO, NO, a, qb, LD, 0, 16 * kk, 1);
                    }
                }
            }
#undef EMU_LOAD_Q
            for (int w = 0; w < FA_WARPS; w++) {
                const int kw = k0 + FA_WROWS * w;
                float sc[32][2], one[32][2];
                for (int ln = 0; ln < 32; ln++) sc[ln][0] = sc[ln][1] = scale, one[ln][0] = one[ln][1] = 1.0f;
                bf16* rowk = dqkv + (size_t)b * T * rs + C + h * HS;
                emu_store_rows(P, HS, rowk, rs, kw, T, ks + FA_WROWS * w * LD, dk + w * NO, sc);
                emu_store_rows(P, HS, rowk + C, rs, kw, T, vs + FA_WROWS * w * LD, dv + w * NO, one);
            }
        }
    free(ks); free(vs); free(qds); free(fs); free(dk); free(dv);
}

// attn_flash_dq_kernel, every block
static void emu_dq(const Plan* P, Shape sh, bf16* dqkv, const bf16* qkv, const bf16* dout, const float* lse, const float* dpre) {
    const int T = sh.T, NH = sh.NH, HS = sh.HS, C = NH * HS, LD = FA_LD(HS), BN = FA_BWD_BN(HS);
    const int KS = HS / 16, NN = BN / 8, NO = HS / 8;
    const float scale = 1.0f / sqrtf((float)HS), sl2 = scale * LOG2E;
    const size_t rs = 3 * (size_t)C;
    const int nblocks = (T + FA_BQ - 1) / FA_BQ;
    bf16* qs = smem_alloc((size_t)FA_BQ * LD);
    bf16* os = smem_alloc((size_t)FA_BQ * LD);
    bf16* kvs = smem_alloc((size_t)4 * BN * LD);
    Acc* dq = malloc(sizeof(Acc) * FA_WARPS * NO);
    float(*l2)[32][2] = malloc(sizeof(float) * FA_WARPS * 64), (*dd)[32][2] = malloc(sizeof(float) * FA_WARPS * 64);
    Acc s[8], dp[8];
    for (int bh = 0; bh < sh.B * NH; bh++)
        for (int bx = 0; bx < nblocks; bx++) {
            const int b = bh / NH, h = bh % NH;
            const int q0 = fa_qtile(bx, nblocks) * FA_BQ;
            const bf16* qg = qkv + (size_t)b * T * rs + h * HS;
            const int last = P->last_key(q0, FA_BQ, T);
            emu_load_tile(P, HS, FA_BQ, qs, qg, rs, q0, T);
            emu_load_tile(P, HS, FA_BQ, os, dout + (size_t)b * T * C + h * HS, C, q0, T);
            emu_load_tile(P, HS, BN, kvs, qg + C, rs, 0, T);
            emu_load_tile(P, HS, BN, kvs + BN * LD, qg + 2 * C, rs, 0, T);
            for (int w = 0; w < FA_WARPS; w++)
                for (int ln = 0; ln < 32; ln++)
                    for (int r = 0; r < 2; r++) {
                        const int i = q0 + FA_WROWS * w + P->c_row(ln, 2 * r);
                        l2[w][ln][r] = i < T ? lse[(size_t)bh * T + i] * LOG2E : INFINITY;
                        dd[w][ln][r] = i < T ? dpre[(size_t)bh * T + i] : 0.0f;
                    }
            memset(dq, 0, sizeof(Acc) * FA_WARPS * NO);
            for (int k0 = 0, u = 0; k0 <= last; k0 += BN, u ^= 1) {
                if (k0 + BN <= last) {
                    bf16* nb = kvs + (u ^ 1) * 2 * BN * LD;
                    emu_load_tile(P, HS, BN, nb, qg + C, rs, k0 + BN, T);
                    emu_load_tile(P, HS, BN, nb + BN * LD, qg + 2 * C, rs, k0 + BN, T);
                }
                for (int w = 0; w < FA_WARPS; w++) {
                    const int iw = q0 + FA_WROWS * w;
                    if (P->all_masked(iw + FA_WROWS - 1, k0)) continue;
                    const bf16* kb = kvs + u * 2 * BN * LD;
                    const bf16* vb = kb + BN * LD;
                    memset(s, 0, sizeof(s));
                    memset(dp, 0, sizeof(dp));
                    for (int kk = 0; kk < KS; kk++) {
                        Frag a;
                        emu_ldsm(P, a, qs, LD, FA_WROWS * w, 16 * kk, 0);
                        emu_mma_b(P, s, NN, a, kb, LD, 0, 16 * kk, 0);
                        emu_ldsm(P, a, os, LD, FA_WROWS * w, 16 * kk, 0);
                        emu_mma_b(P, dp, NN, a, vb, LD, 0, 16 * kk, 0);
                    }
                    const int mask = P->tile_needs_mask(q0, k0, BN);
                    for (int ln = 0; ln < 32; ln++)
                        for (int n = 0; n < NN; n++)
                            for (int i = 0; i < 4; i++) {
                                float p = exp2f(s[n][ln][i] * sl2 - l2[w][ln][i >> 1]);
                                if (mask && P->masked(iw + P->c_row(ln, i), k0 + 8 * n + P->c_col(ln, i))) p = 0.0f;
                                dp[n][ln][i] = p * (dp[n][ln][i] - dd[w][ln][i >> 1]);
                            }
                    for (int kk = 0; kk < BN / 16; kk++) {
                        Frag a;
                        emu_acc_to_a(P, a, dp, kk);
                        emu_mma_b(P, dq + w * NO, NO, a, kb, LD, 0, 16 * kk, 1);
                    }
                }
            }
            for (int w = 0; w < FA_WARPS; w++) {
                float sc[32][2];
                for (int ln = 0; ln < 32; ln++) sc[ln][0] = sc[ln][1] = scale;
                emu_store_rows(P, HS, dqkv + (size_t)b * T * rs + h * HS, rs, q0 + FA_WROWS * w, T, qs + FA_WROWS * w * LD,
                               dq + w * NO, sc);
            }
        }
    free(qs); free(os); free(kvs); free(dq); free(l2); free(dd);
}

// ---- the double-precision reference ------------------------------------------------------------------
static void ref_attention(Shape sh, const bf16* qkv, const bf16* dout, double* out, double* lse, double* dqkv) {
    const int T = sh.T, NH = sh.NH, HS = sh.HS, C = NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    double* p = malloc(sizeof(double) * T);
    double* dp = malloc(sizeof(double) * T);
    for (size_t i = 0; i < (size_t)sh.B * T * 3 * C; i++) dqkv[i] = 0.0;
#define Q(t, d) bf16_to_f32(qkv[((size_t)b * T + (t)) * 3 * C + h * HS + (d)])
#define K(t, d) bf16_to_f32(qkv[((size_t)b * T + (t)) * 3 * C + C + h * HS + (d)])
#define V(t, d) bf16_to_f32(qkv[((size_t)b * T + (t)) * 3 * C + 2 * C + h * HS + (d)])
#define DO(t, d) bf16_to_f32(dout[((size_t)b * T + (t)) * C + h * HS + (d)])
    for (int b = 0; b < sh.B; b++)
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    double s = 0.0;
                    for (int d = 0; d < HS; d++) s += (double)Q(i, d) * K(j, d);
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                double sum = 0.0;
                for (int j = 0; j <= i; j++) sum += exp(p[j] - mx);
                const double l = mx + log(sum);
                lse[((size_t)b * NH + h) * T + i] = l;
                double D = 0.0;
                for (int j = 0; j <= i; j++) {
                    p[j] = exp(p[j] - l);
                    double s = 0.0;
                    for (int d = 0; d < HS; d++) s += (double)DO(i, d) * V(j, d);
                    dp[j] = s;
                    D += p[j] * dp[j];
                }
                double* orow = out + ((size_t)b * T + i) * C + h * HS;
                double* dq = dqkv + ((size_t)b * T + i) * 3 * C + h * HS;
                for (int d = 0; d < HS; d++) orow[d] = 0.0;
                for (int j = 0; j <= i; j++) {
                    const double ds = p[j] * (dp[j] - D);
                    double* dk = dqkv + ((size_t)b * T + j) * 3 * C + C + h * HS;
                    double* dv = dk + C;
                    for (int d = 0; d < HS; d++) {
                        orow[d] += p[j] * V(j, d);
                        dq[d] += ds * K(j, d) * scale;
                        dk[d] += ds * Q(i, d) * scale;
                        dv[d] += p[j] * DO(i, d);
                    }
                }
            }
#undef Q
#undef K
#undef V
#undef DO
    free(p);
    free(dp);
}

// ---- comparison ----------------------------------------------------------------------------------------
// worst |got - want| / (atol + atol_rel * M + rtol |want|) over n elements (M = max |want|): <= 1 passes;
// NaN -> inf. Element i is at (i / width) * stride + off + i % width (one part of dqkv's rows).
static double worst_ratio(const float* got, const double* want, size_t n, size_t stride, size_t off, size_t width,
                          double rtol, double atol_rel, double atol, double* max_abs_err, double* max_ref) {
    double M = 0.0;
    for (size_t i = 0; i < n; i++) {
        const size_t k = (i / width) * stride + off + i % width;
        if (fabs(want[k]) > M) M = fabs(want[k]);
    }
    double worst = 0.0, err_max = 0.0;
    for (size_t i = 0; i < n; i++) {
        const size_t k = (i / width) * stride + off + i % width;
        const double err = fabs((double)got[k] - want[k]);
        if (!isfinite(got[k])) { worst = INFINITY; err_max = INFINITY; break; }
        const double r = err / (atol + atol_rel * M + rtol * fabs(want[k]));
        if (r > worst) worst = r;
        if (err > err_max) err_max = err;
    }
    if (max_abs_err) *max_abs_err = err_max;
    if (max_ref) *max_ref = M;
    return worst;
}

typedef struct { double out, lse, dq, dk, dv; } Ratios;

// tolerances (see the head of the file)
#define TOL_LSE_R 1e-5
#define TOL_LSE_A 1e-5
#define TOL_OUT_R (1.0 / 256)
#define TOL_OUT_A (1.0 / 512)
#define TOL_GRAD_R (1.0 / 128)
#define TOL_GRAD_A (1.0 / 128)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { // uniform in [0, 1)
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(mix64(rng_state) >> 11) * (1.0 / 9007199254740992.0);
}
static bf16 rand_bf16(double amp) { // uniform in (-amp, amp), never zero
    for (;;) {
        bf16 x = f32_to_bf16((float)((2.0 * urand() - 1.0) * amp));
        if ((x & 0x7fffu) != 0) return x;
    }
}

// run the emulated forward and backward with plan P; ratios of the worst error to the tolerance
static Ratios run_case(const Plan* P, Shape sh, int verbose) {
    const int T = sh.T, C = sh.NH * sh.HS;
    const size_t nqkv = (size_t)sh.B * T * 3 * C, nout = (size_t)sh.B * T * C, nl = (size_t)sh.B * sh.NH * T;
    bf16* qkv = malloc(nqkv * 2);
    bf16* dout = malloc(nout * 2);
    // q, k in +-2.5: scores of std ~2 after scaling, so rows have clear maxima and the online rescaling
    // matters; v, dout in +-1
    for (size_t i = 0; i < (size_t)sh.B * T; i++)
        for (int c = 0; c < 3 * C; c++) qkv[i * 3 * C + c] = rand_bf16(c < 2 * C ? 2.5 : 1.0);
    for (size_t i = 0; i < nout; i++) dout[i] = rand_bf16(1.0);
    bf16* out = malloc(nout * 2);
    bf16* dqkv = malloc(nqkv * 2);
    float* lse = malloc(nl * 4);
    float* dpre = malloc(nl * 4);
    for (size_t i = 0; i < nout; i++) out[i] = BF16_NAN; // every element must be written
    for (size_t i = 0; i < nqkv; i++) dqkv[i] = BF16_NAN;
    for (size_t i = 0; i < nl; i++) lse[i] = NAN;
    emu_forward(P, sh, out, lse, qkv);
    emu_pre(sh, dpre, out, dout);
    emu_dkv(P, sh, dqkv, qkv, dout, lse, dpre);
    emu_dq(P, sh, dqkv, qkv, dout, lse, dpre);

    double* rout = malloc(nout * sizeof(double));
    double* rlse = malloc(nl * sizeof(double));
    double* rdqkv = malloc(nqkv * sizeof(double));
    ref_attention(sh, qkv, dout, rout, rlse, rdqkv);
    float* fout = malloc(nout * 4);
    float* fdqkv = malloc(nqkv * 4);
    for (size_t i = 0; i < nout; i++) fout[i] = bf16_to_f32(out[i]);
    for (size_t i = 0; i < nqkv; i++) fdqkv[i] = bf16_to_f32(dqkv[i]);
    Ratios R;
    double e[5], M[5];
    R.out = worst_ratio(fout, rout, nout, C, 0, C, TOL_OUT_R, TOL_OUT_A, 0.0, &e[0], &M[0]);
    R.lse = worst_ratio(lse, rlse, nl, nl, 0, nl, TOL_LSE_R, 0.0, TOL_LSE_A, &e[1], &M[1]);
    R.dq = worst_ratio(fdqkv, rdqkv, (size_t)sh.B * T * C, 3 * C, 0, C, TOL_GRAD_R, TOL_GRAD_A, 0.0, &e[2], &M[2]);
    R.dk = worst_ratio(fdqkv, rdqkv, (size_t)sh.B * T * C, 3 * C, C, C, TOL_GRAD_R, TOL_GRAD_A, 0.0, &e[3], &M[3]);
    R.dv = worst_ratio(fdqkv, rdqkv, (size_t)sh.B * T * C, 3 * C, 2 * C, C, TOL_GRAD_R, TOL_GRAD_A, 0.0, &e[4], &M[4]);
    if (verbose) {
        const char* nm[5] = {"out", "lse", "dq", "dk", "dv"};
        const double rr[5] = {R.out, R.lse, R.dq, R.dk, R.dv};
        printf("# B=%d T=%d NH=%d HS=%d:", sh.B, T, sh.NH, sh.HS);
        for (int k = 0; k < 5; k++) printf(" %s max|err| %.3g (max|ref| %.3g, err/tol %.3f)%s", nm[k], e[k], M[k], rr[k], k < 4 ? ";" : "\n");
    }
    free(qkv); free(dout); free(out); free(dqkv); free(lse); free(dpre);
    free(rout); free(rlse); free(rdqkv); free(fout); free(fdqkv);
    return R;
}

static double max_ratio(Ratios R) {
    double m = R.out;
    if (!(R.lse <= m)) m = R.lse;
    if (!(R.dq <= m)) m = R.dq;
    if (!(R.dk <= m)) m = R.dk;
    if (!(R.dv <= m)) m = R.dv;
    return m;
}

// ---- mutants: deliberately wrong copies of plan helpers ------------------------------------------------
static int mut_c_row(int lane, int i) { return (lane >> 2) + 8 * (i & 1); }                // c1 and c2 swapped
static int mut_c_col(int lane, int i) { return 2 * (lane & 3) + (i >> 1); }                 // same, in the column
static int mut_ldsm_row(int lane) { return (lane & 7) + 8 * (lane >> 4); }                 // matrices 1 and 2 swapped
static int mut_ldsm_col(int lane) { return 8 * ((lane >> 3) & 1); }
static int mut_bn_reg(int nt, int j) { return 2 * nt + j; }                                 // the .trans assignment
static int mut_bt_reg(int nt, int j) { return nt + 2 * j; }                                 // the plain assignment
static int mut_p_ntile(int r) { return r & 1; }                                             // P's k halves swapped
static int mut_p_creg(int r) { return 2 * (r >> 1); }
static int mut_masked(int i, int j) { return j >= i; }                                      // the diagonal masked
static int mut_last_key(int q0, int nq, int T) { (void)nq; return (q0 < T ? q0 : T - 1); } // stops at the first row
static int mut_tile_needs_mask(int q0, int k0, int nk) { (void)nk; return k0 > q0; }       // diagonal tile unmasked
static int mut_all_masked(int i_max, int j_min) { return j_min + FA_WROWS > i_max; }       // skips a live pair
static int mut_chunk_col(int c, int hs) { return ((c % (hs / 8)) * 8) & ~8; }              // some chunks never loaded

int main(void) {
    clock_t t0 = clock();
    const Shape cases[] = {{1, 256, 2, 64}, {4, 64, 2, 64}, {2, 1000, 2, 64}, {1, 130, 2, 128}, {3, 200, 4, 32}, {2, 1, 1, 64}, {1, 77, 1, 128}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const Shape sh = cases[c];
        Ratios R = run_case(&PLAN, sh, 1);
        char why[160];
        snprintf(why, sizeof(why), "worst err/tol: out %.3g, lse %.3g, dq %.3g, dk %.3g, dv %.3g", R.out, R.lse, R.dq, R.dk, R.dv);
        test_check(R.out <= 1.0 && R.lse <= 1.0, why, "flash forward emulation B=%d T=%d NH=%d HS=%d: out, lse", sh.B, sh.T, sh.NH, sh.HS);
        test_check(R.dq <= 1.0 && R.dk <= 1.0 && R.dv <= 1.0, why, "flash backward emulation B=%d T=%d NH=%d HS=%d: dq, dk, dv", sh.B, sh.T,
                   sh.NH, sh.HS);
    }

    // the test can fail: each wrong helper is caught (worst err/tol > 1) on a shape that exercises it
    struct { const char* name; Plan p; Shape sh; } mut[13];
    int nm = 0;
    const Shape s128 = {1, 130, 1, 128}, s64 = {1, 130, 1, 64};
#define MUTANT(nm_, field, fn, shape) do { mut[nm].name = nm_; mut[nm].p = PLAN; mut[nm].p.field = fn; mut[nm].sh = shape; nm++; } while (0)
    MUTANT("c_row (c1/c2 rows swapped)", c_row, mut_c_row, s64);
    MUTANT("c_col (c1/c2 cols swapped)", c_col, mut_c_col, s64);
    MUTANT("ldsm_row (matrices 1, 2 swapped)", ldsm_row, mut_ldsm_row, s64);
    MUTANT("ldsm_col (matrices 1, 2 swapped)", ldsm_col, mut_ldsm_col, s64);
    MUTANT("bn_reg (the .trans order)", bn_reg, mut_bn_reg, s64);
    MUTANT("bt_reg (the plain order)", bt_reg, mut_bt_reg, s64);
    MUTANT("p_ntile (k halves swapped)", p_ntile, mut_p_ntile, s64);
    MUTANT("p_creg (row halves swapped)", p_creg, mut_p_creg, s64);
    MUTANT("masked (diagonal masked)", masked, mut_masked, s64);
    MUTANT("last_key (stops at the tile's first query)", last_key, mut_last_key, s128);
    MUTANT("tile_needs_mask (diagonal tile unmasked)", tile_needs_mask, mut_tile_needs_mask, s64);
    MUTANT("all_masked (skips a live pair)", all_masked, mut_all_masked, s128);
    MUTANT("chunk_col (chunks never loaded)", chunk_col, mut_chunk_col, s64);
#undef MUTANT
    for (int k = 0; k < nm; k++) {
        const double r = max_ratio(run_case(&mut[k].p, mut[k].sh, 0));
        char why[96];
        snprintf(why, sizeof(why), "worst err/tol only %.3g", r);
        test_check(r > 1.0, why, "flash emulation catches a wrong %s (worst err/tol %.3g)", mut[k].name, r);
    }
    printf("# %.1f s\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    return test_finish("test_attention_flash");
}
