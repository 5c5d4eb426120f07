// test/test_galore_plan.c: the order of GaLore's batched projector refresh on the GPU (optim/galore.cuh),
// galore.h's galore_eig_chunks, checked on the CPU: every refreshing matrix in exactly one chunk (and no
// other matrix), a chunk's matrices of one s (the Gram matrices one cusolverDnXsyevBatched call takes
// must share n), at most GALORE_EIG_BATCH of them, the groups of equal s in order of first appearance and
// members in the trainer's order; each matrix's Gram slot (j s^2 doubles into the chunk buffer) inside
// the buffer galore_setup carves (largest chunk x largest s^2). On d12 (48 matrices, s = 768: 3 chunks of
// 16), test_gpt2cu's shapes, and random sets with random refresh masks. The eigensolver itself is exact
// (double, as before), so the projector's agreement with the CPU is what it was (test_gpt2cu: 2e-6);
// what only a GPU shows is cuSOLVER's results and time. The checker is shown to catch a chunk one over
// the cap, a matrix in two chunks, a chunk mixing two s, and a matrix that should not refresh.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "optim/galore.h"
#include "common/rng.h"
#include "common/util.h"
#include "trainer/model.h"
#include "test/test.h"

#define CAP 16 // galore.cuh's GALORE_EIG_BATCH

// 1 if (order, cstart, nch) is a sound refresh order for s, need, cap; why gets the first fault.
static int chunks_sound(const int* s, const int* need, int n, int cap, const int* order, const int* cstart, int nch, char* why, size_t wn) {
    int ok = 1;
#define FAULT(...) do { if (ok) snprintf(why, wn, __VA_ARGS__); ok = 0; } while (0)
    int* seen = (int*)xcalloc((size_t)n + 1, sizeof(int));
    if (nch < 0 || cstart[0] != 0) FAULT("cstart[0] %d", cstart[0]);
    int max_chunk = 0, max_s = 0;
    for (int k = 0; k < nch; k++) {
        const int c = cstart[k + 1] - cstart[k];
        if (c < 1 || c > cap) FAULT("chunk %d: %d matrices (cap %d)", k, c, cap);
        if (c > max_chunk) max_chunk = c;
        for (int p = cstart[k]; p < cstart[k + 1]; p++) {
            const int i = order[p];
            if (i < 0 || i >= n) { FAULT("position %d: matrix %d", p, i); continue; }
            seen[i]++;
            if (s[i] != s[order[cstart[k]]]) FAULT("chunk %d mixes s %d and %d", k, s[order[cstart[k]]], s[i]);
            if (p > cstart[k] && order[p - 1] >= i) FAULT("chunk %d: not in the trainer's order", k);
            if (s[i] > max_s) max_s = s[i];
        }
        // a chunk of the same s as the one before continues its group: the one before is full
        if (k > 0 && s[order[cstart[k]]] == s[order[cstart[k - 1]]] && cstart[k] - cstart[k - 1] != cap) FAULT("chunk %d: group split early", k);
        // a new group starts with the first matrix of its s (among those refreshing) and after the previous group's first
        if (k == 0 || s[order[cstart[k]]] != s[order[cstart[k - 1]]]) {
            for (int i = 0; i < order[cstart[k]]; i++)
                if ((!need || need[i]) && s[i] == s[order[cstart[k]]]) FAULT("chunk %d: its group does not start at its first matrix", k);
            for (int k2 = 0; k2 < k; k2++)
                if (s[order[cstart[k2]]] == s[order[cstart[k]]])
                    FAULT("chunk %d: group of s %d appears twice", k, s[order[cstart[k]]]);
        }
    }
    for (int i = 0; i < n; i++) {
        const int want = !need || need[i];
        if (seen[i] != want) FAULT("matrix %d in %d chunks, want %d", i, seen[i], want);
    }
    // Gram slots: chunk position j at j s^2 doubles, inside max_chunk x max_s^2
    for (int k = 0; k < nch; k++) {
        const int c = cstart[k + 1] - cstart[k], sk = s[order[cstart[k]]];
        if ((size_t)c * sk * sk > (size_t)max_chunk * max_s * max_s) FAULT("chunk %d: Gram slots past the buffer", k);
    }
#undef FAULT
    free(seen);
    return ok;
}

int main(void) {
    char why[256] = "";
    int order[512], cstart[513];
    // d12
    GPT2Config cfg = { 1024, 50257, 50304, 12, 12, 768 };
    ModelLayout ml;
    model_layout_build(&ml, &cfg);
    int s[512] = { 0 }, n = 0;
    for (int i = 0; i < ml.num_tensors; i++) {
        const ParamShape* sh = &ml.tensors[i].shape;
        if (!galore_projected(sh)) continue;
        s[n++] = (int)(sh->rows < sh->cols ? sh->rows : sh->cols);
    }
    int nch = galore_eig_chunks(s, NULL, n, CAP, order, cstart);
    test_check(chunks_sound(s, NULL, n, CAP, order, cstart, nch, why, sizeof(why)), why, "galore refresh order d12: %d matrices, %d chunks, sound", n, nch);
    test_check(n == 48 && nch == 3 && cstart[1] == 16 && cstart[2] == 32 && cstart[3] == 48, "unexpected chunks",
               "galore refresh order d12: 3 XsyevBatched calls of 16 (s = 768)");
    model_layout_free(&ml);
    // test_gpt2cu's projected matrices (37, 83), (83, 37), (40, 24), (200, 96), (64, 300): s 37, 37, 24, 96, 64
    const int ts[5] = { 37, 37, 24, 96, 64 };
    nch = galore_eig_chunks(ts, NULL, 5, CAP, order, cstart);
    test_check(chunks_sound(ts, NULL, 5, CAP, order, cstart, nch, why, sizeof(why)) && nch == 4 && cstart[1] == 2, why[0] ? why : "not 4 chunks",
               "galore refresh order of test_gpt2cu's matrices: 4 chunks ((37, 83) and (83, 37) together)");
    // random sets, masks, caps
    Rng r;
    rng_seed(&r, 99);
    int bad = 0;
    char first_why[256] = "";
    for (int trial = 0; trial < 2000; trial++) {
        const int nn = 1 + (int)(rng_u32(&r) % 200), cap = 1 + (int)(rng_u32(&r) % 20);
        int rs[256], need[256];
        for (int i = 0; i < nn; i++) { rs[i] = 8 * (1 + (int)(rng_u32(&r) % 5)); need[i] = (rng_u32(&r) % 4) != 0; }
        const int* nd = trial % 3 == 0 ? NULL : need;
        nch = galore_eig_chunks(rs, nd, nn, cap, order, cstart);
        if (!chunks_sound(rs, nd, nn, cap, order, cstart, nch, why, sizeof(why))) { if (!bad) snprintf(first_why, sizeof(first_why), "%s", why); bad++; }
    }
    test_check(bad == 0, first_why, "galore refresh order: 2000 random sets (1-200 matrices, 5 sizes, random refresh masks, caps 1-20) sound");
    // the checker catches broken orders
    {
        const int ms[6] = { 64, 64, 64, 32, 64, 32 };
        nch = galore_eig_chunks(ms, NULL, 6, 2, order, cstart);
        test_check(!chunks_sound(ms, NULL, 6, 1, order, cstart, nch, why, sizeof(why)), "not caught", "mutation caught: chunks one over the cap (%s)", why);
        int o2[8], c2[8];
        memcpy(o2, order, sizeof(o2));
        memcpy(c2, cstart, sizeof(c2));
        o2[1] = o2[2]; // order 0 2 | 2 4 | 3 5
        test_check(!chunks_sound(ms, NULL, 6, 2, o2, c2, nch, why, sizeof(why)), "not caught", "mutation caught: a matrix in two chunks, one in none (%s)", why);
        memcpy(o2, order, sizeof(o2));
        const int tmp = o2[1]; o2[1] = o2[4]; o2[4] = tmp;  // order 0 3 | 2 4 | 1 5: chunk 0 mixes 64 and 32
        test_check(!chunks_sound(ms, NULL, 6, 2, o2, c2, nch, why, sizeof(why)), "not caught", "mutation caught: a chunk mixing two s (%s)", why);
        const int need[6] = { 1, 0, 1, 1, 1, 1 };
        test_check(!chunks_sound(ms, need, 6, 2, order, cstart, nch, why, sizeof(why)), "not caught", "mutation caught: a matrix refreshed that should not be (%s)",
                   why);
    }
    return test_finish("test_galore_plan");
}
