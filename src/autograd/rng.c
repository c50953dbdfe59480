/* rng.c: Philox4x32-10 and the fills of rng.h.
 *
 * Reference: Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC11),
 * and Random123's philox.h; checked against Random123's tests/kat_vectors in tests/test_rng.c.
 */
#include "rng.h"

#include <math.h>

#include "common.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u   /* golden ratio */
#define PHILOX_W1 0xBB67AE85u   /* sqrt(3) - 1 */

/* Below this many blocks a parallel region costs more than it saves. */
#define RNG_PARALLEL_BLOCKS 4096

void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        /* Random123 bumps the key between rounds, never before the first. */
        if (round > 0) { k0 += PHILOX_W0; k1 += PHILOX_W1; }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

typedef enum { RNG_UNIFORM, RNG_NORMAL, RNG_BERNOULLI, RNG_U32 } RngKind;

/* The top 24 bits, so that every value is exactly representable in a float and < 1. */
static inline float u32_to_uniform(uint32_t u) { return (float)(u >> 8) * 0x1p-24f; }

/* Box-Muller on one lane pair. u1 is shifted into (0, 1] so that log(u1) is finite. */
static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1)
{
    double u1 = ((double)(a >> 8) + 1.0) * 0x1p-24;
    double u2 = (double)(b >> 8) * 0x1p-24;
    double r = sqrt(-2.0 * log(u1)), theta = 2.0 * M_PI * u2;
    *z0 = (float)(r * cos(theta));
    *z1 = (float)(r * sin(theta));
}

/* One loop for all four fills: block t of the flat (sample, block) range is independent of every
 * other, so the parallel loop gives the same bits for any thread count and any schedule. */
static void rng_fill(const Rng *r, RngKind kind, void *out, int nsamples, int sample0,
                     size_t per_sample, float p)
{
    const uint32_t key[2] = { (uint32_t)r->seed, (uint32_t)(r->seed >> 32) };
    const size_t nblk = (per_sample + 3) / 4;
    const size_t total = (size_t)CM_MAX(nsamples, 0) * nblk;
    #pragma omp parallel for schedule(static) if (total >= RNG_PARALLEL_BLOCKS)
    for (size_t t = 0; t < total; t++) {
        size_t i = t / nblk, b = t % nblk;
        uint32_t ctr[4] = { (uint32_t)b, (uint32_t)(sample0 + (int64_t)i), r->step, r->stream };
        uint32_t u[4];
        philox4x32_10(ctr, key, u);
        size_t e0 = i * per_sample + 4 * b;
        int lanes = (int)CM_MIN((size_t)4, per_sample - 4 * b);
        float v[4];
        switch (kind) {
        case RNG_U32:
            for (int l = 0; l < lanes; l++) ((uint32_t *)out)[e0 + l] = u[l];
            continue;
        case RNG_UNIFORM:
            for (int l = 0; l < 4; l++) v[l] = u32_to_uniform(u[l]);
            break;
        case RNG_NORMAL:
            box_muller(u[0], u[1], &v[0], &v[1]);
            box_muller(u[2], u[3], &v[2], &v[3]);
            break;
        case RNG_BERNOULLI:
            for (int l = 0; l < 4; l++) v[l] = u32_to_uniform(u[l]) < p ? 1.0f : 0.0f;
            break;
        }
        for (int l = 0; l < lanes; l++) ((float *)out)[e0 + l] = v[l];
    }
}

void rng_uniform(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample)
{
    rng_fill(r, RNG_UNIFORM, out, nsamples, sample0, per_sample, 0.0f);
}

void rng_normal(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample)
{
    rng_fill(r, RNG_NORMAL, out, nsamples, sample0, per_sample, 0.0f);
}

void rng_bernoulli(const Rng *r, float *out, int nsamples, int sample0, size_t per_sample, float p)
{
    rng_fill(r, RNG_BERNOULLI, out, nsamples, sample0, per_sample, p);
}

void rng_u32(const Rng *r, uint32_t *out, int nsamples, int sample0, size_t per_sample)
{
    rng_fill(r, RNG_U32, out, nsamples, sample0, per_sample, 0.0f);
}
