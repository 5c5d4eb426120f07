// optim/quant4.c: the two 4-bit maps (see quant4.h).
#include <stdlib.h>
#include <math.h>
#include "quant4.h"

// The map must be the same fp32 values on every machine: no fused multiply-adds (see quant8.c).
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

static Q4Map q4_signed_map_;
static Q4Map q4_linear_map_;

// torch.linspace(start, end, steps) in fp32, two-sided like PyTorch's CPU kernel (quant8.c explains).
static void linspace_f32(float start, float end, int steps, float* out) {
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++) {
        volatile float delta = step * (float)(i < halfway ? i : steps - 1 - i);
        out[i] = i < halfway ? start + delta : end - delta;
    }
}

static int cmp_float(const void* a, const void* b) {
    float x = *(const float*)a, y = *(const float*)b;
    return (x > y) - (x < y);
}

void q4_build_signed_map(float out[Q4_CODES]) {
    float bounds[5];
    int n = 0;
    for (int i = 0; i < 3; i++) {
        const int k = 1 << i;  // midpoints at this exponent
        linspace_f32(0.1f, 1.0f, k + 1, bounds);
        const float scale = (float)pow(10.0, (double)(i - 2));  // Python's 10 ** (i - 2), met by fp32
        for (int j = 0; j < k; j++) {
            const float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            out[n++] = scale * mean;
            out[n++] = -scale * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    qsort(out, Q4_CODES, sizeof(float), cmp_float);  // n == 16
}

static void q4_build_mids(Q4Map* m) {
    for (int k = 0; k < Q4_CODES - 1; k++) m->mid[k] = (m->code[k] + m->code[k + 1]) * 0.5f;
}

__attribute__((constructor)) static void q4_build_maps(void) {
    q4_build_signed_map(q4_signed_map_.code);
    for (int k = 0; k < Q4_CODES; k++) q4_linear_map_.code[k] = (float)(k + 1) / 16.0f;  // exact
    q4_build_mids(&q4_signed_map_);
    q4_build_mids(&q4_linear_map_);
}

const Q4Map* q4_map_signed(void) { return &q4_signed_map_; }
const Q4Map* q4_map_linear(void) { return &q4_linear_map_; }
