/* streams.h: the registry of counter-RNG streams (Rng.stream, rng.h). Every consumer of random
 * numbers has its own stream, so adding a consumer never changes another's numbers, and a number
 * is identified by (seed, stream, step, sample, element) alone. Append only; never renumber. */
#ifndef CM_STREAMS_H
#define CM_STREAMS_H

enum RngStream {
    STREAM_INIT = 1000,        /* parameter init: params_randomize uses stream = slice index */
    STREAM_SHUFFLE = 2000,     /* loader: step = epoch, one key per dataset row */
    STREAM_HFLIP,              /* loader: step = epoch, sample = global row position */
    STREAM_NOISE_LEVEL,        /* trainers: per-sample sigma / time index; step = training step */
    STREAM_NOISE,              /* trainers: the Gaussian noise z; step = training step */
    STREAM_DROPOUT_BASE = 3000,/* dropout layer l uses STREAM_DROPOUT_BASE + l; step = training step */
    STREAM_SAMPLE = 4000,      /* sampling: initial noise, step = 0; re-noising, step = 1.. */
    STREAM_EVAL = 5000,        /* evaluation sample seeds */
    STREAM_EDIT = 6000,        /* editing (train/edit.h): step m - 1 = the noise of step m */
    STREAM_INVERT = 7000,      /* BCM inversion (sample/bcm.h): the small noise put on an image, step 0 */
};

#endif
