#include "batch.h"

#include "autograd/streams.h"

Batch batch_make(const float *x0, const int *labels, int B, int global_B, int sample0, int C, int H, int W,
                 uint64_t seed, long step)
{
    return (Batch){
        .x0 = x0, .labels = labels, .B = B, .global_B = global_B, .sample0 = sample0, .C = C, .H = H, .W = W,
        .step = step,
        .noise_level = {seed, STREAM_NOISE_LEVEL, (uint32_t)step},
        .noise = {seed, STREAM_NOISE, (uint32_t)step},
        .dropout = {seed, STREAM_DROPOUT_BASE, (uint32_t)step},
    };
}
