// common/schedule.h: the learning-rate schedule. Linear warmup over `warmup` steps, then cosine
// decay from the peak to final_frac * peak at the last step. Steps count from 1.
#ifndef COMMON_SCHEDULE_H
#define COMMON_SCHEDULE_H

#include <math.h>

// Multiplier of the peak learning rate at step t (1-based) of `total` steps.
static inline float lr_multiplier(int t, int total, int warmup, float final_frac) {
    if (warmup > 0 && t <= warmup) return (float)t / (float)warmup;
    if (total <= warmup) return 1.0f;
    float progress = (float)(t - warmup) / (float)(total - warmup);   // (0, 1]
    if (progress > 1.0f) progress = 1.0f;
    float cosine = 0.5f * (1.0f + cosf(3.14159265358979f * progress)); // 1 -> 0
    return final_frac + (1.0f - final_frac) * cosine;
}

#endif
