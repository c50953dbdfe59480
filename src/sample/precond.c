#include "precond.h"

#include <math.h>

/* The derivatives, with r = sqrt(t^2 + sd^2) (so dr/dt = t/r):
 *   c_in = 1/r:                     d/dt = -t/r^3
 *   c_noise = ln(t)/4:              d/dt = 1/(4t)
 *   EDM c_skip = sd^2/r^2:          d/dt = -2 t sd^2/r^4
 *   EDM c_out = t sd/r:             d/dt = sd/r - t^2 sd/r^3 = sd^3/r^3
 *   CM  c_skip = sd^2/(s^2 + sd^2), s = t - eps:   d/dt = -2 s sd^2/(s^2 + sd^2)^2
 *   CM  c_out = sd s/r:             d/dt = sd/r - sd s t/r^3 = sd (r^2 - s t)/r^3
 *   BCM c_skip = (t u + sd^2)/r^2:  d/dt = u/r^2 - 2 t (t u + sd^2)/r^4,  d/du = t/r^2
 *   BCM c_out = sd (t - u)/r:       d/dt = sd (r^2 - (t - u) t)/r^3,     d/du = -sd/r
 *   BCM c_noise_u = ln(u)/4:        d/du = 1/(4u) */
Precond precond_at_tu(const PrecondParams *p, double t, double u, Precond *d_dt, Precond *d_du)
{
    double sd = p->sigma_data, r = sqrt(t * t + sd * sd), r3 = r * r * r;
    Precond q = {.c_in = 1.0 / r, .c_noise = log(t) / 4.0};
    Precond dt = {.c_in = -t / r3, .c_noise = 1.0 / (4.0 * t)}, du = {0};
    switch (p->kind) {
    case PRECOND_EDM:
        q.c_skip = sd * sd / (r * r);
        q.c_out = t * sd / r;
        dt.c_skip = -2.0 * t * sd * sd / (r * r * r * r);
        dt.c_out = sd * sd * sd / r3;
        break;
    case PRECOND_CM: {
        double s = t - p->eps, den = s * s + sd * sd;
        q.c_skip = sd * sd / den;
        q.c_out = sd * s / r;
        dt.c_skip = -2.0 * s * sd * sd / (den * den);
        dt.c_out = sd * (r * r - s * t) / r3;
        break;
    }
    case PRECOND_BCM:
        /* over t^2 + sd^2, not r^2: at u = t the quotient is exactly 1, so f(x, t, t) = x */
        q.c_skip = (t * u + sd * sd) / (t * t + sd * sd);
        q.c_out = sd * (t - u) / r;
        q.c_noise_u = log(u) / 4.0;
        dt.c_skip = u / (r * r) - 2.0 * t * (t * u + sd * sd) / (r * r * r * r);
        dt.c_out = sd * (r * r - (t - u) * t) / r3;
        du.c_skip = t / (r * r);
        du.c_out = -sd / r;
        du.c_noise_u = 1.0 / (4.0 * u);
        break;
    default:
        CM_ASSERT(0, "precond: bad kind %d", (int)p->kind);
    }
    if (d_dt) *d_dt = dt;
    if (d_du) *d_du = du;
    return q;
}

Precond precond_at(const PrecondParams *p, double t) { return precond_at_tu(p, t, p->eps, NULL, NULL); }

/* The five coefficients of a batch, one row of N floats each, in Precond's field order. */
enum { K_SKIP, K_OUT, K_IN, K_NOISE, K_NOISE_U, K_COUNT };

static void coef_rows(const Precond *q, int i, int N, float *rows)
{
    const double v[K_COUNT] = {q->c_skip, q->c_out, q->c_in, q->c_noise, q->c_noise_u};
    for (int k = 0; k < K_COUNT; k++) rows[(size_t)k * N + i] = (float)v[k];
}

/* Coefficient k as a tensor [N]: its values, plus d_t (t - t0) and d_u (u - u0) on the tape when
 * the times need a gradient (dt, du: the tensors t - t0 and u - u0, exactly 0, or NULL). */
static Tensor *coef(Ctx *c, int k, int N, float *val, float *d_t, float *d_u, Tensor *dt, Tensor *du)
{
    size_t o = (size_t)k * N;
    Tensor *v = tensor_wrap(c, val + o, NULL, 1, SHAPE(N), false);
    if (dt) v = op_add(c, v, op_mul(c, dt, tensor_wrap(c, d_t + o, NULL, 1, SHAPE(N), false)));
    if (du) v = op_add(c, v, op_mul(c, du, tensor_wrap(c, d_u + o, NULL, 1, SHAPE(N), false)));
    return v;
}

/* time - its own value as a constant: exactly 0, with d/d(time) = 1 (NULL when no gradient is
 * wanted, so a pass without one records nothing). */
static Tensor *zero_delta(Ctx *c, Tensor *time)
{
    if (!time || !time->requires_grad || !ctx_grad_enabled(c)) return NULL;
    int N = (int)time->n;
    Tensor *t0 = tensor_new(c, 1, SHAPE(N));
    for (int i = 0; i < N; i++) t0->data[i] = time->data[i];
    return op_sub(c, op_reshape(c, time, 1, SHAPE(N)), t0);
}

Tensor *precond_forward(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                        Tensor *t, Tensor *u, const Rng *dropout, int sample0, Tensor **bottleneck)
{
    int N = x->shape[0];
    char s[64];
    CM_ASSERT((int)t->n == N && t->shape[0] == N, "precond: t %s, want [%d]", tensor_shape_str(t, s, sizeof s), N);
    CM_ASSERT(!u || ((int)u->n == N && u->shape[0] == N), "precond: u %s, want [%d]",
              tensor_shape_str(u, s, sizeof s), N);
    CM_ASSERT(!u || p->kind == PRECOND_BCM, "precond: a second time u for a one-time kind (%d)", (int)p->kind);
    bool two = p->kind == PRECOND_BCM;
    CM_ASSERT(net->cfg.two_times == two, "precond: %s preconditioning for a U-Net with%s two_times",
              two ? "BCM's two-time" : "a one-time", net->cfg.two_times ? "" : "out");

    float *k = arena_alloc(&c->arena, 3 * K_COUNT * (size_t)N * sizeof(float));
    float *val = k, *d_t = k + K_COUNT * (size_t)N, *d_u = k + 2 * K_COUNT * (size_t)N;
    for (int i = 0; i < N; i++) {
        Precond dt, du, q = precond_at_tu(p, t->data[i], u ? u->data[i] : p->eps, &dt, &du);
        coef_rows(&q, i, N, val);
        coef_rows(&dt, i, N, d_t);
        coef_rows(&du, i, N, d_u);
    }
    Tensor *dt = zero_delta(c, t), *du = zero_delta(c, u);
    const int *img = SHAPE(N, 1, 1, 1);
    Tensor *t_skip = op_reshape(c, coef(c, K_SKIP, N, val, d_t, d_u, dt, du), 4, img);
    Tensor *t_out = op_reshape(c, coef(c, K_OUT, N, val, d_t, d_u, dt, du), 4, img);
    Tensor *t_in = op_reshape(c, coef(c, K_IN, N, val, d_t, d_u, dt, NULL), 4, img);
    Tensor *t_noise = coef(c, K_NOISE, N, val, d_t, d_u, dt, NULL);
    Tensor *t_noise_u = two ? coef(c, K_NOISE_U, N, val, d_t, d_u, NULL, du) : NULL;
    Tensor *F = unet_forward(c, net, ws, op_mul(c, x, t_in), t_noise, t_noise_u, dropout, sample0, bottleneck);
    return op_add(c, op_mul(c, x, t_skip), op_mul(c, F, t_out));
}

Tensor *precond_apply(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                      const float *t, const Rng *dropout, int sample0)
{
    int N = x->shape[0];
    Tensor *tt = tensor_wrap(c, (float *)t, NULL, 1, SHAPE(N), false);
    return precond_forward(c, p, net, ws, x, tt, NULL, dropout, sample0, NULL);
}
