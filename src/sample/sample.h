/* sample.h: drawing images from a trained network at fixed seeds.
 *
 * Diffusion denoisers (EDM) are integrated with an ODE solver (solvers.h); the initial noise of
 * sample i is a pure function of (seed, STREAM_SAMPLE, i), so the same seed gives the same
 * samples whatever the batch size, and two checkpoints of a run are compared on the same noise.
 * The network runs in a no-grad scope in batches of at most `batch` samples.
 */
#ifndef CM_SAMPLE_H
#define CM_SAMPLE_H

#include "io/experiment.h"
#include "sample/precond.h"
#include "sample/solvers.h"

/* How a model samples (its method's record says which, method.h): a diffusion denoiser
 * integrated by an ODE solver, a consistency function evaluated at a list of times, or a feature
 * network that does not sample. */
typedef enum ModelKind { MODEL_DIFFUSION, MODEL_CONSISTENCY, MODEL_FEATURE_NET, MODEL_KIND_COUNT } ModelKind;

/* The NFEs a model of `kind` is sampled and evaluated at by default (the trainer's grids, eval
 * when eval.nfe is empty): cfg's sample.nfe for a diffusion model, 1 and 2 for a consistency model
 * (T, then sample.mid_t). Returns their count (at most 2). */
int sample_default_nfes(ModelKind kind, const Config *cfg, int *nfe);

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
/* The same for samples first .. first + n - 1 of the seed (sample_ode is first = 0): a long run
 * in pieces, each sample from its own noise whatever the split. o->on_step sees the piece's n
 * samples as its batch. */
int sample_ode_from(const Sampler *s, SolverKind kind, const SolverOpts *o, int first, int n,
                    uint64_t seed, float *out, SolverStats *stats);

/* Consistency models (reference/cm.md §7.1-7.2): x = f(T z, T); then for each further time tau:
 * x = clip(x, -1, 1) + sqrt(tau^2 - eps^2) z_k, x = f(x, tau); the result is clipped to [-1, 1].
 * times[0] = T, descending; eps is s->pre.eps. z_k is drawn with step k of STREAM_SAMPLE, so the
 * first step's noise is the same as sample_ode's. */
int sample_cm(const Sampler *s, const double *times, int ntimes, int n, uint64_t seed, float *out);

/* SolverOpts from cfg's [sample] and [model] sigma range. */
SolverOpts sample_solver_opts(const Config *cfg);

/* ---- the one sampling entry of every model kind: a plan, then sample_draw ---- */

enum { SAMPLE_MAX_TIMES = 16 };

typedef struct SamplePlan {
    ModelKind kind;
    SolverKind solver;           /* MODEL_DIFFUSION: the ODE solver and its options (o.nfe) */
    SolverOpts o;
    double times[SAMPLE_MAX_TIMES];  /* MODEL_CONSISTENCY: T, then the re-noising times, descending */
    int ntimes;
    bool jumps;                  /* MODEL_CONSISTENCY of a BCM network (PRECOND_BCM): jump from each time
                                  * straight to the next, then to eps, with f(x, t, u): no fresh noise */
    const struct AmedPredictor *amed;  /* MODEL_DIFFUSION with an AMED predictor (sample/amed.h):
                                        * its own steps instead of the solver (sample_plan_amed) */
} SamplePlan;

/* The plan of a model of `kind` trained with configuration mcfg (its noise range), sampled with
 * scfg's [sample] at nfe network evaluations:
 *   MODEL_DIFFUSION    scfg's solver, schedule and options with o.nfe = nfe (the solver checks it);
 *   MODEL_CONSISTENCY  the first nfe of scfg's sample.times; when it has fewer (empty, say): nfe = 1:
 *                      T = mcfg's sigma_max, nfe = 2: T, then scfg's sample.mid_t. sample.bcm_jumps
 *                      sets the plan's jumps (sample_draw refuses it for a network that is not BCM).
 * -1 after cm_fail() for an NFE the kind cannot take (and for a model that does not sample). */
int sample_plan(SamplePlan *p, ModelKind kind, const Config *mcfg, const Config *scfg, int nfe);
/* A diffusion plan from a solver and its options (a command line's choice). */
SamplePlan sample_plan_ode(SolverKind solver, const SolverOpts *o);
/* A diffusion plan that samples with AMED predictor p (its settings; p outlives the plan). */
SamplePlan sample_plan_amed(const struct AmedPredictor *p);
/* A consistency plan from a list of times (T first, descending, at least one: checked by
 * sample_draw). -1 after cm_fail() for more than SAMPLE_MAX_TIMES times. */
int sample_plan_times(SamplePlan *p, const double *times, int n);
/* n samples by plan p into out [n, C, H, W] (sample_ode or sample_cm); stats (may be NULL) gets
 * the solver's statistics, or for a consistency model nfe = the number of times. */
int sample_draw(const Sampler *s, const SamplePlan *p, int n, uint64_t seed, float *out, SolverStats *stats);
/* What a draw did, for messages: "heun, 35 NFE" (the calls the solver made) or "2-step consistency
 * sampling". */
void sample_describe(const SamplePlan *p, const SolverStats *st, char *out, size_t len);

/* f(x; t) with the sampler's weights for all n samples x [n, C, H, W], written over x: batches of
 * at most s->batch in a no-grad scope (dropout off). */
void sample_consistency(const Sampler *s, float *x, double t, int n);
/* f(x; t, u) of a two-time (BCM) network, as sample_consistency. */
void sample_consistency_tu(const Sampler *s, float *x, double t, double u, int n);
/* x [n, dim] += sigma z, z of image i from rng_normal(seed, stream, step, sample i). */
void sample_add_noise(float *x, int n, size_t dim, double sigma, uint64_t seed, uint32_t stream, uint32_t step);
/* Clamps x[n] to [-1, 1]. */
void sample_clip(float *x, size_t n);

#endif
