/* bcm.h: sampling, inversion and reconstruction with a Bidirectional Consistency Model
 * (reference/bcm.md §5). The network f(x, t, u) moves a point x at noise level t to the point of
 * the same probability-flow ODE trajectory at level u, downward (u < t: generate) or upward
 * (u > t: invert); f(x, t, t) = x.
 *
 * A schedule is a list of time points t_0, ..., t_{n-1}; t_0 is where x starts, and each further
 * point is reached either by a jump x = f(x, t_{k-1}, t_k) (1 NFE) or by fresh noise that raises
 * the level from t_{k-1} to t_k > t_{k-1}: x += sqrt(t_k^2 - t_{k-1}^2) z (no NFE; the variance of
 * the VE process adds up). Its text form (cmlab sample --bcm-schedule, README):
 *     80>eps                      one step (NFE 1)
 *     80>2.4>eps                  ancestral: the network jumps to 2.4 directly, no noise (NFE 2)
 *     80>eps,0.1>1.2>eps          zigzag: ',' adds noise from eps to 0.1, then BCM carries it along
 *                                 the ODE to 1.2 and back to eps (NFE 3)
 *     80>3>eps,0.12>0.4>eps       mixed (NFE 4)
 * '>' is a jump, ',' fresh noise; "T" stands for the model's sigma_max, "eps" for its sigma_min.
 * These are the official ImageNet-64 times (BCM/scripts/image_sample.py).
 * For generation a schedule must start at its highest point, end at eps, and decrease along
 * every jump except the first jump after fresh noise, which may go up (zigzag's 0.1 > 1.2).
 *
 * A sample that a jump lands at eps is an image and is clipped to [-1, 1] (as sample_cm clips
 * before re-noising and at the end); points above eps are never clipped (the official code does
 * not clip between steps at all; clipping at eps only matters for the re-noised schedules).
 *
 * Randomness: the k-th fresh noise of a run (k = 1, 2, ...) of image i is rng_normal(seed,
 * STREAM_SAMPLE, step k, sample i), and generation's initial noise is step 0 of the same stream,
 * exactly as sample_cm draws it: with the same seed, "T>eps" gives the one-step samples of
 * `cmlab sample --steps 1` of a consistency model, and "T>eps,tau>eps" its two-step ones.
 * Inversion's small noise is step 0 of STREAM_INVERT, sample i for image i.
 */
#ifndef CM_BCM_H
#define CM_BCM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sample/sample.h"

/* f(x, t, u) for n images x [n, C, H, W] (all at the same t and u), written over x. */
typedef void (*BcmFn)(void *user, float *x, double t, double u, int n);

/* BcmFn for user = a Sampler of a two-time network (PRECOND_BCM): batches of at most s->batch in a
 * no-grad scope, dropout off. */
void bcm_f_sampler(void *user, float *x, double t, double u, int n);

enum { BCM_MAX_TIMES = 32 };

typedef struct BcmSchedule {
    int n;                       /* time points */
    double t[BCM_MAX_TIMES];
    bool noise[BCM_MAX_TIMES];   /* noise[k]: t[k] is reached by fresh noise, else by a jump; noise[0] unused */
} BcmSchedule;

/* Parses the text form above ("T" = T, "eps" = eps). what names the option in messages. -1 after
 * cm_fail() for a malformed text, a time <= 0, two equal neighbours, noise that does not raise the
 * level, or more than BCM_MAX_TIMES points. */
int bcm_schedule_parse(const char *text, double eps, double T, const char *what, BcmSchedule *s);
/* The schedule of plain jumps t[0] > ... or < ... (no noise). -1 after cm_fail() for n < 2 or n >
 * BCM_MAX_TIMES. */
int bcm_schedule_chain(const double *t, int n, BcmSchedule *s);
/* The generation rules above, with every time in [eps, T]; -1 after cm_fail() naming `what` and
 * the offending point. */
int bcm_schedule_check_generation(const BcmSchedule *s, double eps, double T, const char *what);
/* Network evaluations of a run: the number of jumps. */
int bcm_schedule_nfe(const BcmSchedule *s);
/* The text form back ("80>2.4>eps"; eps written as "eps"). */
void bcm_schedule_format(const BcmSchedule *s, double eps, char *out, size_t len);

/* Runs schedule s on n images x [n, dim] that are at level s->t[0], written over x (noise: the
 * header's STREAM_SAMPLE steps 1, 2, ... with `seed`). */
void bcm_run(BcmFn f, void *user, const BcmSchedule *s, double eps, int n, size_t dim, uint64_t seed, float *x);
/* Generation: out [n, dim] = t_0 z (step 0 of STREAM_SAMPLE), then bcm_run. */
void bcm_generate(BcmFn f, void *user, const BcmSchedule *s, double eps, int n, size_t dim, uint64_t seed,
                  float *out);

/* Inversion times: t[0] > 0 the small noise put on the image, then strictly increasing (the last
 * is the latent's level). -1 after cm_fail() naming `what` otherwise, or for fewer than 2 times. */
int bcm_check_inversion(const double *t, int n, const char *what);
/* The inversion times of the command line into t[max], *nt of them: the text "t0,t1,...,T" when
 * not NULL (named --times in messages), else steps = 1: noise, T; steps = 2: noise, 15, T (the
 * official two-step times). -1 after cm_fail() for a malformed list or one bcm_check_inversion
 * refuses. */
int bcm_inversion_times(const char *text, double noise, int steps, double T, double *t, int *nt, int max);
/* x [n, dim] += t0 z, z from step 0 of STREAM_INVERT (sample i for image i). */
void bcm_invert_noise(float *x, int n, size_t dim, double t0, uint64_t seed);
/* Inversion: x [n, dim] images in [-1, 1] -> latents at t[nt - 1]: bcm_invert_noise(t[0]), then
 * the jumps t[0] -> t[1] -> ... (nt - 1 NFE). -1 after cm_fail() for times bcm_check_inversion
 * refuses. */
int bcm_invert(BcmFn f, void *user, const double *t, int nt, int n, size_t dim, uint64_t seed, float *x);

/* Per-pixel MSE on [0, 1] of two image sets of `count` values in [-1, 1], each quantised to 8 bits
 * first as image_write_grid and the official evaluation (uint8) quantise them. */
double bcm_mse01(const float *a, const float *b, size_t count);

#endif
