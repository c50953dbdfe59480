/* rng.h: the counter-based random number generator (Philox4x32-10, Salmon et al. 2011).
 *
 * Every random number is a pure function of (seed, stream, step, sample index, element index)
 * (DESIGN.md "Randomness"): one Philox block is
 *     key     = { seed & 0xffffffff, seed >> 32 }
 *     counter = { element / 4, sample, step, stream }
 * and element e takes lane e % 4 of its block. So the noise of sample i at step k does not depend
 * on the batch split, the thread count or the number of processes, and a resumed run draws the
 * same numbers. tests/torch/philox.py is an independent numpy implementation of the same mapping.
 *
 * Conversions (each lane u is a uint32):
 *   uniform   (u >> 8) * 2^-24                       in [0, 1)
 *   normal    Box-Muller on lane pairs (0,1) and (2,3) of the block, in double:
 *             u1 = ((a >> 8) + 1) * 2^-24 in (0, 1], u2 = (b >> 8) * 2^-24,
 *             r = sqrt(-2 ln u1), lane 0/2 = r cos(2 pi u2), lane 1/3 = r sin(2 pi u2)
 *   bernoulli 1 if uniform < p else 0
 */
#ifndef CM_RNG_H
#define CM_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct Rng {
    uint64_t seed;
    uint32_t stream;   /* what the numbers are for: noise, time index, dropout, shuffling, ... */
    uint32_t step;     /* training step (or any other outer counter) */
} Rng;

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Fill out[nsamples * per_sample]; row i belongs to sample index sample0 + i. */
void rng_uniform(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample);
void rng_normal(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample);
void rng_bernoulli(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample, float p);
/* Raw 32-bit lanes (shuffles, integer draws). */
void rng_u32(const Rng *r, uint32_t *out, int nsamples, int sample0, size_t per_sample);

#endif
