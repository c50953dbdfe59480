/* batch.h: one training step's batch, built by the loop and handed to the method's loss.
 *
 * With data parallelism each process holds B of the global batch's global_B samples, starting at
 * sample index sample0; every random number a loss draws is addressed by (seed, stream, step,
 * sample0 + i), so the numbers of a sample do not depend on how the batch is split (DESIGN.md
 * "Randomness"). With one process B = global_B and sample0 = 0.
 */
#ifndef CM_BATCH_H
#define CM_BATCH_H

#include "autograd/rng.h"

typedef struct Batch {
    const float *x0;             /* [B, C, H, W] this process's images */
    const int *labels;           /* [B] their classes */
    int B;                       /* this process's samples */
    int global_B;                /* the step's samples over all processes */
    int sample0;                 /* this process's first sample index in the global batch */
    int C, H, W;
    long step;                   /* the training step (the streams' step) */
    int substep;                 /* the optimiser step within this batch (method.h substeps), from 0 */
    Rng noise_level;             /* STREAM_NOISE_LEVEL: per-sample noise levels or time indices */
    Rng noise;                   /* STREAM_NOISE: the Gaussian noise z */
    Rng dropout;                 /* STREAM_DROPOUT_BASE: the networks' dropout masks */
} Batch;

/* The batch of step `step` for run seed `seed`: the three streams at that step. */
Batch batch_make(const float *x0, const int *labels, int B, int global_B, int sample0, int C, int H, int W,
                 uint64_t seed, long step);

#endif
