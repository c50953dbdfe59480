#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/streams.h"
#include "nn/mlp.h"
#include "sample/amed.h"
#include "sample/bcm.h"

int sampler_feature_dim(const Sampler *s)
{
    int L = s->net->cfg.channel_mult_count;
    return (s->H >> (L - 1)) * (s->W >> (L - 1));
}

void sample_denoise(void *user, const float *x, const double *sigma, float *out, int N, size_t dim, float *feat)
{
    const Sampler *s = user;
    WeightSet ws = {s->weights, NULL};
    size_t fdim = feat ? (size_t)sampler_feature_dim(s) : 0;
    for (int b0 = 0; b0 < N; b0 += s->batch) {
        int nb = CM_MIN(s->batch, N - b0);
        ctx_reset(s->ctx);
        ctx_no_grad_begin(s->ctx);
        float *t = arena_alloc(&s->ctx->arena, (size_t)nb * sizeof(float));
        for (int i = 0; i < nb; i++) t[i] = (float)sigma[b0 + i];
        Tensor *xt = tensor_wrap(s->ctx, (float *)x + (size_t)b0 * dim, NULL, 4,
                                 SHAPE(nb, s->C, s->H, s->W), false);
        Tensor *tt = tensor_wrap(s->ctx, t, NULL, 1, SHAPE(nb), false), *mid = NULL;
        Tensor *D = precond_forward(s->ctx, &s->pre, s->net, &ws, xt, tt, NULL, NULL, 0, feat ? &mid : NULL);
        memcpy(out + (size_t)b0 * dim, D->data, (size_t)nb * dim * sizeof(float));
        if (feat) {
            Tensor *f = mlp_bottleneck_input(s->ctx, mid);
            CM_ASSERT(f->n == (size_t)nb * fdim, "sample_denoise: %zu bottleneck features, want %d x %zu", f->n, nb,
                      fdim);
            memcpy(feat + (size_t)b0 * fdim, f->data, f->n * sizeof(float));
        }
        ctx_no_grad_end(s->ctx);
    }
}

int sample_ode(const Sampler *s, SolverKind kind, const SolverOpts *o, int n, uint64_t seed,
               float *out, SolverStats *stats)
{
    return sample_ode_from(s, kind, o, 0, n, seed, out, stats);
}

int sample_ode_from(const Sampler *s, SolverKind kind, const SolverOpts *o, int first, int n,
                    uint64_t seed, float *out, SolverStats *stats)
{
    size_t dim = (size_t)s->C * s->H * s->W;
    float *z = cm_malloc((size_t)n * dim * sizeof(float));
    double *x = cm_malloc((size_t)n * dim * sizeof(double));
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, z, n, first, dim);
    for (size_t k = 0; k < (size_t)n * dim; k++) x[k] = o->sigma_max * (double)z[k];
    SolverStats st;
    int rc = solver_sample(kind, o, sample_denoise, (void *)s, x, n, dim, &st);
    if (rc == 0) {
        for (size_t k = 0; k < (size_t)n * dim; k++) out[k] = (float)x[k];
        if (stats) *stats = st;
    }
    free(z);
    free(x);
    return rc;
}

/* f(x; t[, u]) over x in batches (two: pass u to a two-time network, else its default). */
static void consistency_batches(const Sampler *s, float *x, double t, double u, bool two, int n)
{
    size_t dim = (size_t)s->C * s->H * s->W;
    WeightSet ws = {s->weights, NULL};
    for (int b0 = 0; b0 < n; b0 += s->batch) {
        int nb = CM_MIN(s->batch, n - b0);
        ctx_reset(s->ctx);
        ctx_no_grad_begin(s->ctx);
        float *tu = arena_alloc(&s->ctx->arena, 2 * (size_t)nb * sizeof(float));
        for (int i = 0; i < nb; i++) tu[i] = (float)t, tu[nb + i] = (float)u;
        Tensor *xt = tensor_wrap(s->ctx, x + (size_t)b0 * dim, NULL, 4, SHAPE(nb, s->C, s->H, s->W), false);
        Tensor *tt = tensor_wrap(s->ctx, tu, NULL, 1, SHAPE(nb), false);
        Tensor *ut = two ? tensor_wrap(s->ctx, tu + nb, NULL, 1, SHAPE(nb), false) : NULL;
        Tensor *f = precond_forward(s->ctx, &s->pre, s->net, &ws, xt, tt, ut, NULL, 0, NULL);
        memcpy(x + (size_t)b0 * dim, f->data, (size_t)nb * dim * sizeof(float));
        ctx_no_grad_end(s->ctx);
    }
}

void sample_consistency(const Sampler *s, float *x, double t, int n) { consistency_batches(s, x, t, 0, false, n); }

void sample_consistency_tu(const Sampler *s, float *x, double t, double u, int n)
{
    consistency_batches(s, x, t, u, true, n);
}

void sample_add_noise(float *x, int n, size_t dim, double sigma, uint64_t seed, uint32_t stream, uint32_t step)
{
    size_t total = (size_t)n * dim;
    float *z = cm_malloc(total * sizeof *z);
    Rng r = {.seed = seed, .stream = stream, .step = step};
    rng_normal(&r, z, n, 0, dim);
    for (size_t k = 0; k < total; k++) x[k] += (float)sigma * z[k];
    free(z);
}

void sample_clip(float *x, size_t n)
{
    for (size_t k = 0; k < n; k++) x[k] = x[k] < -1.0f ? -1.0f : x[k] > 1.0f ? 1.0f : x[k];
}

int sample_cm(const Sampler *s, const double *times, int ntimes, int n, uint64_t seed, float *out)
{
    if (ntimes < 1) return cm_fail("consistency sampling needs at least one time");
    for (int k = 1; k < ntimes; k++)
        if (!(times[k] < times[k - 1]) || times[k] < s->pre.eps)
            return cm_fail("consistency sampling times must descend from T and stay >= eps = %g (got %g after %g)",
                           s->pre.eps, times[k], times[k - 1]);
    size_t dim = (size_t)s->C * s->H * s->W, total = (size_t)n * dim;
    float *z = cm_malloc(total * sizeof(float));
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, z, n, 0, dim);
    for (size_t k = 0; k < total; k++) out[k] = (float)times[0] * z[k];
    sample_consistency(s, out, times[0], n);
    for (int k = 1; k < ntimes; k++) {
        sample_clip(out, total);
        sample_add_noise(out, n, dim, sqrt(times[k] * times[k] - s->pre.eps * s->pre.eps), seed, STREAM_SAMPLE,
                         (uint32_t)k);
        sample_consistency(s, out, times[k], n);
    }
    sample_clip(out, total);
    free(z);
    return 0;
}

int sample_default_nfes(ModelKind kind, const Config *cfg, int *nfe)
{
    int n = 0;
    if (kind == MODEL_DIFFUSION) nfe[n++] = cfg->sample.nfe;
    if (kind == MODEL_CONSISTENCY) nfe[n++] = 1, nfe[n++] = 2;
    return n;
}

int sample_plan(SamplePlan *p, ModelKind kind, const Config *mcfg, const Config *scfg, int nfe)
{
    memset(p, 0, sizeof *p);
    p->kind = kind;
    if (kind == MODEL_DIFFUSION) {
        Config c = *mcfg;        /* the model's noise range, the sampler of scfg */
        c.sample = scfg->sample;
        p->solver = scfg->sample.solver;
        p->o = sample_solver_opts(&c);
        p->o.nfe = nfe;
        return 0;
    }
    if (kind != MODEL_CONSISTENCY) return cm_fail("this model does not sample (a feature network)");
    const CfgFloats *ts = &scfg->sample.times;
    p->jumps = scfg->sample.bcm_jumps;
    if (nfe >= 1 && nfe <= ts->n) {
        for (int k = 0; k < nfe; k++) p->times[p->ntimes++] = ts->v[k];
        return 0;
    }
    if (nfe != 1 && nfe != 2)
        return cm_fail("NFE %d: a consistency model samples with 1 step (from T), 2 (T, then sample.mid_t), or as "
                       "many as sample.times lists (%d)", nfe, ts->n);
    p->times[p->ntimes++] = mcfg->model.sigma_max;
    if (nfe == 2) p->times[p->ntimes++] = scfg->sample.mid_t;
    return 0;
}

SamplePlan sample_plan_ode(SolverKind solver, const SolverOpts *o)
{
    SamplePlan p;
    memset(&p, 0, sizeof p);
    p.kind = MODEL_DIFFUSION;
    p.solver = solver;
    p.o = *o;
    return p;
}

int sample_plan_times(SamplePlan *p, const double *times, int n)
{
    memset(p, 0, sizeof *p);
    p->kind = MODEL_CONSISTENCY;
    if (n > SAMPLE_MAX_TIMES) return cm_fail("%d times: consistency sampling takes at most %d", n, SAMPLE_MAX_TIMES);
    memcpy(p->times, times, (size_t)n * sizeof *times);
    p->ntimes = n;
    return 0;
}

SamplePlan sample_plan_amed(const AmedPredictor *pred)
{
    SamplePlan p;
    memset(&p, 0, sizeof p);
    p.kind = MODEL_DIFFUSION;
    p.amed = pred;
    return p;
}

/* An AMED plan: the sampler's network is the predictor's teacher (amed_predictor_load checked it). */
static int sample_draw_amed(const Sampler *s, const SamplePlan *p, int n, uint64_t seed, float *out, SolverStats *stats)
{
    AmedTeacher T = {s->net, s->pre, s->weights};
    int nfe;
    amed_sample(&T, p->amed, s->C, s->H, s->W, s->batch, s->ctx, n, seed, out, &nfe);
    if (stats) *stats = (SolverStats){.nfe = nfe, .steps = p->amed->s.N};
    return 0;
}

/* BCM's ancestral sampling of plan times t[0] = T > ... > t[n-1]: T z, then jumps to each further
 * time and to eps with f(x, t, u), no fresh noise (bcm.h). */
static int sample_bcm_jumps(const Sampler *s, const double *times, int ntimes, int n, uint64_t seed, float *out)
{
    if (s->pre.kind != PRECOND_BCM)
        return cm_fail("sample.bcm_jumps: the network is not a BCM (two-time) network; its multistep sampling "
                       "re-noises (sample.bcm_jumps = false)");
    double t[SAMPLE_MAX_TIMES + 1];
    memcpy(t, times, (size_t)ntimes * sizeof *t);
    t[ntimes] = s->pre.eps;
    BcmSchedule sc;
    if (bcm_schedule_chain(t, ntimes + 1, &sc) != 0 ||
        bcm_schedule_check_generation(&sc, s->pre.eps, times[0], "the sampling times") != 0)
        return -1;
    bcm_generate(bcm_f_sampler, (void *)s, &sc, s->pre.eps, n, (size_t)s->C * s->H * s->W, seed, out);
    return 0;
}

int sample_draw(const Sampler *s, const SamplePlan *p, int n, uint64_t seed, float *out, SolverStats *stats)
{
    if (p->amed) return sample_draw_amed(s, p, n, seed, out, stats);
    if (p->kind == MODEL_DIFFUSION) return sample_ode(s, p->solver, &p->o, n, seed, out, stats);
    CM_ASSERT(p->kind == MODEL_CONSISTENCY, "sample_draw: model kind %d does not sample", (int)p->kind);
    int rc = p->jumps ? sample_bcm_jumps(s, p->times, p->ntimes, n, seed, out)
                      : sample_cm(s, p->times, p->ntimes, n, seed, out);
    if (rc == 0 && stats) {
        memset(stats, 0, sizeof *stats);
        stats->nfe = p->ntimes;
    }
    return rc;
}

void sample_describe(const SamplePlan *p, const SolverStats *st, char *out, size_t len)
{
    if (p->amed) snprintf(out, len, "AMED predictor on %s, %d NFE", amed_plugin_names[p->amed->s.plugin], st->nfe);
    else if (p->kind == MODEL_DIFFUSION) snprintf(out, len, "%s, %d NFE", solver_kind_name(p->solver), st->nfe);
    else if (p->jumps) snprintf(out, len, "%d-jump BCM sampling", p->ntimes);
    else snprintf(out, len, "%d-step consistency sampling", p->ntimes);
}

SolverOpts sample_solver_opts(const Config *cfg)
{
    SolverOpts o = solver_opts_default();
    o.schedule = cfg->sample.schedule;
    o.rho = cfg->sample.rho;
    o.sigma_min = cfg->model.sigma_min;
    o.sigma_max = cfg->model.sigma_max;
    o.nfe = cfg->sample.nfe;
    o.afs = cfg->sample.afs;
    o.denoise_to_zero = cfg->sample.denoise_to_zero;
    o.ipndm_order = cfg->sample.ipndm_order;
    return o;
}
