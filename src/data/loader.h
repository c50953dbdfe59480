/* loader.h: training batches from an in-memory Dataset: pixels mapped to [-1, 1], optional
 * zero padding (data.pad_to) and horizontal flips (data.hflip), a per-epoch shuffle, a split of
 * every batch across processes, a resumable cursor, and the next batch prepared on a background
 * thread while the caller trains.
 *
 * The data order is a pure function of (seed, epoch, position), per DESIGN.md "Randomness":
 *   - epoch e visits the rows in the order of the keys rng_u32(seed, STREAM_SHUFFLE, step e,
 *     sample row, element 0), ascending, ties broken by the row index;
 *   - the sample at position p of epoch e is flipped left-right iff the top bit of
 *     rng_u32(seed, STREAM_HFLIP, step e, sample p, element 0) is set (with hflip on);
 *   - the batches are consecutive windows of B positions in the endless sequence epoch 0,
 *     epoch 1, ...: the last batch of an epoch that does not fill up takes the first positions of
 *     the next epoch's order (it wraps), so every batch has B samples and every row is seen
 *     exactly once per epoch. B may exceed the dataset size.
 * So a sample's content depends neither on B nor on how a batch is split: for world processes,
 * rank r takes positions [r * B / world, (r + 1) * B / world) of each global batch of B, and the
 * ranks' slices, in rank order, are exactly the batch one process would get.
 *
 * Values: a pixel byte v becomes v / 127.5 - 1 (0 -> -1, 255 -> 1); padding is -1 (black). The
 * image sits at offset ((pad_to - h) / 2, (pad_to - w) / 2), any odd pixel going below and to
 * the right; a flip mirrors the image before it is padded.
 *
 * Cursor: (epoch, index) is the position of the first sample of the next global batch; it is
 * the same on every rank. Saving it after a step and restoring it in a new loader with the same
 * dataset and configuration reproduces the following batches exactly.
 *
 * Prefetch: with cfg.prefetch, after each loader_next a background pthread fills a second buffer
 * with the batch at the new cursor, which the next call copies out. Exactly one thread owns the
 * loader's working state at any time (the worker between hand-off and completion, the caller
 * otherwise), the worker runs no OpenMP, and the batches are bit-identical with and without
 * prefetch.
 */
#ifndef CM_LOADER_H
#define CM_LOADER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"

typedef struct LoaderConfig {
    int batch;                 /* global batch size B over all ranks, >= world */
    int pad_to;                /* 0: images as they are; else padded to pad_to x pad_to */
    bool hflip;                /* random horizontal flips */
    uint64_t seed;             /* experiment.seed */
    int rank, world;           /* this process of `world`; 0 and 1 for a single process */
    bool prefetch;             /* prepare the next batch on a background thread */
} LoaderConfig;

typedef struct LoaderCursor {
    int64_t epoch;             /* >= 0 */
    int64_t index;             /* position in the epoch's order, in [0, n) */
} LoaderCursor;

typedef struct Loader {
    /* Read-only for callers: the shape of what loader_next writes. */
    int batch_local;           /* rows per call: this rank's slice of the global batch */
    int c, h, w;               /* one output image (h, w after padding) */

    /* Private. */
    const Dataset *data;       /* not owned; must outlive the loader, unchanged */
    LoaderConfig cfg;
    int row0;                  /* this rank's first position within a global batch */
    LoaderCursor cursor;       /* the next batch loader_next returns */
    int *perm[2];              /* epoch orders, cached in slot epoch % 2 */
    int64_t perm_epoch[2];     /* the epoch each slot holds, -1 for none */

    /* Prefetch: the worker fills pf_x / pf_labels for job_cursor. */
    bool thread_started;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    bool job_pending;          /* handed to the worker, not finished */
    bool job_ready;            /* pf_* hold the batch at job_cursor */
    bool quit;
    LoaderCursor job_cursor;
    float *pf_x;               /* [batch_local, c, h, w] */
    int *pf_labels;            /* [batch_local] */
} Loader;

/* 0 ok; -1 with a cm_fail message for settings the dataset cannot take (batch < world,
 * pad_to smaller than the images) or a thread that cannot start. The cursor starts at (0, 0). */
int loader_init(Loader *l, const Dataset *d, const LoaderConfig *cfg);
/* Stops the worker thread and frees the buffers; the dataset is left alone. */
void loader_free(Loader *l);

/* x: [batch_local, c, h, w] the next batch's slice of this rank; labels: [batch_local], or NULL.
 * Advances the cursor by the global batch size. */
void loader_next(Loader *l, float *x, int *labels);

LoaderCursor loader_get_cursor(const Loader *l);
/* -1 with a cm_fail message if the cursor is outside this dataset (index not in [0, n) or a
 * negative epoch): a checkpoint made with another dataset. */
int loader_set_cursor(Loader *l, LoaderCursor cur);

#endif
