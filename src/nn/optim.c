#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* Below this many floats a loop is not worth waking the threads for. */
#define PAR_MIN 16384

const char *const optim_kind_names[OPTIM_KIND_COUNT + 1] = {
    [OPTIM_ADAM] = "adam", [OPTIM_ADAMW] = "adamw", [OPTIM_RADAM] = "radam",
};
_Static_assert(OPTIM_RADAM == OPTIM_KIND_COUNT - 1, "an OptimKind without a name");

const char *optim_kind_name(OptimKind kind)
{
    CM_ASSERT(kind >= 0 && kind < OPTIM_KIND_COUNT, "optim_kind_name: bad kind %d", (int)kind);
    return optim_kind_names[kind];
}

int optim_kind_parse(const char *name)
{
    for (int k = 0; k < OPTIM_KIND_COUNT; k++)
        if (strcmp(name, optim_kind_names[k]) == 0) return k;
    return -1;
}

static float *zeroed_buffer(size_t n)
{
    float *b = cm_aligned_alloc((n ? n : 1) * sizeof(float));
    memset(b, 0, n * sizeof(float));
    return b;
}

void optim_init(Adam *a, OptimKind kind, size_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay)
{
    CM_ASSERT(kind >= 0 && kind < OPTIM_KIND_COUNT, "optim_init: bad kind %d", (int)kind);
    CM_ASSERT(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1,
              "optim_init: betas (%g, %g) must lie in [0, 1)", beta1, beta2);
    memset(a, 0, sizeof *a);
    a->kind = kind;
    a->lr = lr;
    a->beta1 = beta1;
    a->beta2 = beta2;
    a->eps = eps;
    a->weight_decay = weight_decay;
    a->n = n;
    a->m = zeroed_buffer(n);
    a->v = zeroed_buffer(n);
}

void adam_init(Adam *a, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               bool decoupled)
{
    optim_init(a, decoupled ? OPTIM_ADAMW : OPTIM_ADAM, n, lr, beta1, beta2, eps, weight_decay);
}

void adam_free(Adam *a)
{
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* The moment updates all three kinds share, as PyTorch writes them:
 *   exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)              m = fma(g, 1-b1, m*b1)
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2) v = fma((1-b2)*g, g, v*b2)
 * with 1 - beta taken in double and rounded once. */
typedef struct Moments {
    float b1, c1, b2, c2;
} Moments;

static Moments moments_of(const Adam *a)
{
    return (Moments){ a->beta1, (float)(1.0 - (double)a->beta1),
                      a->beta2, (float)(1.0 - (double)a->beta2) };
}

/* Adam and AdamW. PyTorch: grad.add(param, alpha=wd) (Adam, wd != 0); param.mul_(1 - lr*wd)
 * (AdamW); moments; denom = (exp_avg_sq.sqrt() / sqrt(bc2)).add_(eps);
 * param.addcdiv_(exp_avg, denom, value=-lr/bc1), which computes w + ((-step) * m) / denom. */
static void adam_kernel(Adam *a, float *w, const float *g, double bc1, double bc2)
{
    double lr = a->lr, wd = a->weight_decay;
    bool l2 = a->kind == OPTIM_ADAM && a->weight_decay != 0;
    float decay = a->kind == OPTIM_ADAMW ? (float)(1.0 - lr * wd) : 1.0f;
    float wdf = a->weight_decay, step = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    float eps = a->eps;
    Moments c = moments_of(a);
    float *m = a->m, *v = a->v;
    size_t n = a->n;
    #pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = l2 ? fmaf(w[i], wdf, g[i]) : g[i];
        w[i] *= decay;
        m[i] = fmaf(gi, c.c1, m[i] * c.b1);
        v[i] = fmaf(c.c2 * gi, gi, v[i] * c.b2);
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        w[i] -= step * m[i] / denom;
    }
}

double radam_rho(float beta2, long t)
{
    double b2 = beta2, rho_inf = 2.0 / (1.0 - b2) - 1.0;
    return rho_inf - 2.0 * (double)t * pow(b2, (double)t) / (1.0 - pow(b2, (double)t));
}

/* RAdam. PyTorch: bias_corrected_exp_avg = exp_avg / bc1; when rectified,
 * adaptive_lr = sqrt(bc2) / exp_avg_sq.sqrt().add_(eps), which Tensor.__rtruediv__ evaluates as
 * reciprocal() * sqrt(bc2), and param.add_(bcm * lr * adaptive_lr * rect, alpha=-1.0);
 * otherwise param.add_(bcm * lr, alpha=-1.0). */
static void radam_kernel(Adam *a, float *w, const float *g, double bc1, double bc2)
{
    double b2 = a->beta2, rho_inf = 2.0 / (1.0 - b2) - 1.0;
    double rho_t = radam_rho(a->beta2, a->step);
    bool rectified = rho_t > 5.0;
    double rect = rectified
        ? sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) : 0;
    bool l2 = a->weight_decay != 0;
    float wdf = a->weight_decay, lr = a->lr, bc1f = (float)bc1, bc2_sqrt = (float)sqrt(bc2);
    float rectf = (float)rect, eps = a->eps;
    Moments c = moments_of(a);
    float *m = a->m, *v = a->v;
    size_t n = a->n;
    #pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = l2 ? fmaf(w[i], wdf, g[i]) : g[i];
        m[i] = fmaf(gi, c.c1, m[i] * c.b1);
        v[i] = fmaf(c.c2 * gi, gi, v[i] * c.b2);
        float mhat = m[i] / bc1f;
        if (rectified) {
            float adaptive = 1.0f / (sqrtf(v[i]) + eps) * bc2_sqrt;
            w[i] -= mhat * lr * adaptive * rectf;
        } else {
            w[i] -= mhat * lr;
        }
    }
}

void adam_step(Adam *a, float *w, const float *g)
{
    a->step++;
    /* PyTorch: bias_correction = 1 - beta ** step in Python floats (C's pow). */
    double t = (double)a->step;
    double bc1 = 1.0 - pow((double)a->beta1, t), bc2 = 1.0 - pow((double)a->beta2, t);
    if (a->kind == OPTIM_RADAM) radam_kernel(a, w, g, bc1, bc2);
    else adam_kernel(a, w, g, bc1, bc2);
}

float optim_warmup_lr(float lr, long step, long warmup)
{
    if (warmup <= 0 || step >= warmup) return lr;
    return (float)((double)lr * ((double)step / (double)warmup));
}

/* The sum of squares goes over at most NORM_CHUNKS fixed chunks, each summed in order into its
 * own slot, then the slots in order: the same bits for any thread count. */
#define NORM_CHUNKS 1024
#define NORM_MIN_CHUNK 4096

double grad_norm(const float *g, size_t n)
{
    double partial[NORM_CHUNKS];
    size_t chunk = CM_MAX((size_t)NORM_MIN_CHUNK, (n + NORM_CHUNKS - 1) / NORM_CHUNKS);
    size_t nchunks = (n + chunk - 1) / chunk;
    #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t c = 0; c < nchunks; c++) {
        size_t end = CM_MIN(n, (c + 1) * chunk);
        double s = 0;
        for (size_t i = c * chunk; i < end; i++) s += (double)g[i] * g[i];
        partial[c] = s;
    }
    double s = 0;
    for (size_t c = 0; c < nchunks; c++) s += partial[c];
    return sqrt(s);
}

double grad_clip(float *g, size_t n, double max_norm)
{
    double norm = grad_norm(g, n);
    double coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1) {
        float k = (float)coef;
        #pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) g[i] *= k;
    }
    return norm;
}

void ema_update(float *ema, const float *w, size_t n, float rate)
{
    float take = (float)(1.0 - (double)rate);
    #pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) ema[i] = fmaf(w[i], take, ema[i] * rate);
}

/* torch.lerp(start=w, end=ema, weight) in 1.13 switches formula at |weight| = 0.5 for accuracy:
 *   weight < 0.5:  start + weight * (end - start)
 *   otherwise:     end - (end - start) * (1 - weight)
 * in float (the weight rounded to float first), each a fused multiply-add in the AVX2 kernel. */
void ema_lerp(float *ema, const float *w, size_t n, double beta)
{
    float x = (float)beta, keep = 1.0f - x;
    bool small = fabsf(x) < 0.5f;
    #pragma omp parallel for simd schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float diff = ema[i] - w[i];
        ema[i] = small ? fmaf(x, diff, w[i]) : fmaf(-diff, keep, ema[i]);
    }
}

double ema_halflife_beta(double halflife_images, double rampup_ratio, double images_seen, long batch)
{
    double h = halflife_images;
    if (rampup_ratio > 0) h = fmin(h, images_seen * rampup_ratio);
    return pow(0.5, (double)batch / fmax(h, 1e-8));
}

void ema_set_init(EmaSet *s, size_t n)
{
    memset(s, 0, sizeof *s);
    s->n = n;
}

void ema_set_free(EmaSet *s)
{
    for (int i = 0; i < s->count; i++) free(s->items[i].w);
    free(s->items);
    memset(s, 0, sizeof *s);
}

static int ema_set_push(EmaSet *s, Ema e, const float *w)
{
    for (int i = 0; i < s->count; i++)
        CM_ASSERT(strcmp(s->items[i].name, e.name) != 0,
                  "ema_set: two EMAs named %s would share a checkpoint group", e.name);
    s->items = realloc(s->items, sizeof(Ema) * (size_t)(s->count + 1));
    CM_ASSERT(s->items, "out of memory");
    e.w = cm_aligned_alloc((s->n ? s->n : 1) * sizeof(float));
    memcpy(e.w, w, s->n * sizeof(float));
    s->items[s->count] = e;
    return s->count++;
}

int ema_set_add_rate(EmaSet *s, float rate, const float *w)
{
    CM_ASSERT(rate >= 0 && rate <= 1, "ema_set_add_rate: rate %g outside [0, 1]", rate);
    Ema e = { .kind = EMA_CONSTANT, .rate = rate };
    /* The shortest decimal that reads back as the same float: "0.9999", not "0.999899983". */
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(e.name, sizeof e.name, "%.*g", digits, rate);
        if (strtof(e.name, NULL) == rate) break;
    }
    return ema_set_push(s, e, w);
}

int ema_set_add_halflife(EmaSet *s, double halflife_images, double rampup_ratio, const float *w)
{
    CM_ASSERT(halflife_images > 0, "ema_set_add_halflife: half-life %g images", halflife_images);
    Ema e = { .kind = EMA_HALFLIFE, .halflife_images = halflife_images,
              .rampup_ratio = rampup_ratio };
    snprintf(e.name, sizeof e.name, "hl%.0f", halflife_images);
    return ema_set_push(s, e, w);
}

double ema_set_beta(const EmaSet *s, int i, double images_seen, long batch)
{
    CM_ASSERT(i >= 0 && i < s->count, "ema_set_beta: no EMA %d of %d", i, s->count);
    const Ema *e = &s->items[i];
    if (e->kind == EMA_CONSTANT) return e->rate;
    return ema_halflife_beta(e->halflife_images, e->rampup_ratio, images_seen, batch);
}

void ema_set_update(EmaSet *s, const float *w, double images_seen, long batch)
{
    for (int i = 0; i < s->count; i++) {
        Ema *e = &s->items[i];
        if (e->kind == EMA_CONSTANT) ema_update(e->w, w, s->n, e->rate);
        else ema_lerp(e->w, w, s->n, ema_set_beta(s, i, images_seen, batch));
    }
}
