#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/streams.h"
#include "nn/mlp.h"

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
    size_t dim = (size_t)s->C * s->H * s->W;
    float *z = cm_malloc((size_t)n * dim * sizeof(float));
    double *x = cm_malloc((size_t)n * dim * sizeof(double));
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, z, n, 0, dim);
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

void sample_consistency(const Sampler *s, float *x, double t, int n)
{
    size_t dim = (size_t)s->C * s->H * s->W;
    WeightSet ws = {s->weights, NULL};
    for (int b0 = 0; b0 < n; b0 += s->batch) {
        int nb = CM_MIN(s->batch, n - b0);
        ctx_reset(s->ctx);
        ctx_no_grad_begin(s->ctx);
        float *tt = arena_alloc(&s->ctx->arena, (size_t)nb * sizeof(float));
        for (int i = 0; i < nb; i++) tt[i] = (float)t;
        Tensor *xt = tensor_wrap(s->ctx, x + (size_t)b0 * dim, NULL, 4, SHAPE(nb, s->C, s->H, s->W), false);
        Tensor *f = precond_apply(s->ctx, &s->pre, s->net, &ws, xt, tt, NULL, 0);
        memcpy(x + (size_t)b0 * dim, f->data, (size_t)nb * dim * sizeof(float));
        ctx_no_grad_end(s->ctx);
    }
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
        r.step = (uint32_t)k;
        rng_normal(&r, z, n, 0, dim);
        float a = (float)sqrt(times[k] * times[k] - s->pre.eps * s->pre.eps);
        for (size_t j = 0; j < total; j++) out[j] += a * z[j];
        sample_consistency(s, out, times[k], n);
    }
    sample_clip(out, total);
    free(z);
    return 0;
}
