/* sample.h: drawing images from a trained network at fixed seeds.
 *
 * Diffusion denoisers (EDM) are integrated with an ODE solver (solvers.h); the initial noise of
 * sample i is a pure function of (seed, STREAM_SAMPLE, i), so the same seed gives the same
 * samples whatever the batch size, and two checkpoints of a run are compared on the same noise.
 * The network runs in a no-grad scope in batches of at most `batch` samples.
 */
#ifndef CM_SAMPLE_H
#define CM_SAMPLE_H

#include "train/precond.h"
#include "train/solvers.h"

typedef struct Sampler {
    const UNet *net;
    PrecondParams pre;
    float *weights;              /* the weight set to sample with (online, an EMA, ...) */
    int batch;                   /* network batch size */
    int C, H, W;                 /* image shape */
    Ctx *ctx;                    /* scratch; reset between network calls */
} Sampler;

/* The solvers' denoiser (a DenoiserFn, user = the Sampler): out = D(x; sigma[b]) for the N samples
 * x [N, C, H, W] (dim = C H W), sample b at its own sigma[b], in batches of at most s->batch,
 * no gradients, dropout off. feat: NULL, or [N, sampler_feature_dim(s)] for the bottleneck
 * features of the same network calls: the channel mean of the U-Net's middle-block output at
 * H/2^(L-1) x W/2^(L-1), flattened (AMED's predictor input, mlp_bottleneck_input). */
void sample_denoise(void *user, const float *x, const double *sigma, float *out, int N, size_t dim, float *feat);
/* Bottleneck features per sample: (H >> (L-1)) (W >> (L-1)) for a U-Net of L levels. */
int sampler_feature_dim(const Sampler *s);

/* n samples into out [n, C, H, W] by solver `kind` with options o; stats may be NULL.
 * Returns 0, or -1 after cm_fail() (an impossible NFE, say). */
int sample_ode(const Sampler *s, SolverKind kind, const SolverOpts *o, int n, uint64_t seed,
               float *out, SolverStats *stats);

/* Consistency models (reference/cm.md §7.1-7.2): x = f(T z, T); then for each further time tau:
 * x = clip(x, -1, 1) + sqrt(tau^2 - eps^2) z_k, x = f(x, tau); the result is clipped to [-1, 1].
 * times[0] = T, descending; eps is s->pre.eps. z_k is drawn with step k of STREAM_SAMPLE, so the
 * first step's noise is the same as sample_ode's. */
int sample_cm(const Sampler *s, const double *times, int ntimes, int n, uint64_t seed, float *out);

/* f(x; t) with the sampler's weights for all n samples x [n, C, H, W], written over x: batches of
 * at most s->batch in a no-grad scope (dropout off). */
void sample_consistency(const Sampler *s, float *x, double t, int n);
/* Clamps x[n] to [-1, 1]. */
void sample_clip(float *x, size_t n);

#endif
