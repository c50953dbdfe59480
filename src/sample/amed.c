/* amed.c: the AMED step and its plugins on the tape, and sampling with a predictor (amed.h). */
#include "sample/amed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/streams.h"

const char *const amed_plugin_names[AMED_PLUGIN_COUNT + 1] = {
    [AMED_PLUGIN_SOLVER] = "amed",
    [AMED_PLUGIN_EULER] = "euler",
    [AMED_PLUGIN_DPM2] = "dpm2",
    [AMED_PLUGIN_IPNDM] = "ipndm",
    [AMED_PLUGIN_DPMPP] = "dpmpp",
};
_Static_assert(AMED_PLUGIN_DPMPP == AMED_PLUGIN_COUNT - 1, "an AmedPlugin without a name");

bool amed_plugin_multistep(AmedPlugin p) { return p == AMED_PLUGIN_IPNDM || p == AMED_PLUGIN_DPMPP; }

int amed_nfe(const AmedSettings *s) { return 2 * (s->N - 1) - (int)s->afs; }

void amed_traj_init(AmedTraj *tr, int B, int C, int H, int W)
{
    memset(tr, 0, sizeof *tr);
    tr->B = B;
    tr->C = C, tr->H = H, tr->W = W;
    tr->dim = (size_t)C * H * W;
    for (int j = 0; j < 3; j++) {
        tr->hist[j] = cm_malloc((size_t)B * tr->dim * sizeof(float));
        tr->htime[j] = cm_malloc((size_t)B * sizeof(float));
    }
}

void amed_traj_reset(AmedTraj *tr) { tr->nhist = tr->steps = 0; }

void amed_traj_free(AmedTraj *tr)
{
    for (int j = 0; j < 3; j++) {
        free(tr->hist[j]);
        free(tr->htime[j]);
    }
    memset(tr, 0, sizeof *tr);
}

/* d (and its per-sample times, dpmpp, else NULL) joins the history as its newest entry; at most
 * `keep` entries are kept (the oldest drops). */
static void traj_push(AmedTraj *tr, const float *d, const float *times, int keep)
{
    if (keep < 1) return;
    float *oldest = tr->hist[2], *oldest_t = tr->htime[2];
    memmove(&tr->hist[1], &tr->hist[0], 2 * sizeof tr->hist[0]);
    memmove(&tr->htime[1], &tr->htime[0], 2 * sizeof tr->htime[0]);
    tr->hist[0] = oldest;
    tr->htime[0] = oldest_t;
    memcpy(tr->hist[0], d, (size_t)tr->B * tr->dim * sizeof(float));
    if (times) memcpy(tr->htime[0], times, (size_t)tr->B * sizeof(float));
    tr->nhist = CM_MIN(tr->nhist + 1, keep);
}

int amed_feature_dim(const AmedTeacher *T, int H, int W)
{
    int L = T->net->cfg.channel_mult_count;
    return (H >> (L - 1)) * (W >> (L - 1));
}

AmedBegin amed_step_begin(Ctx *c, const AmedTeacher *T, Tensor *x, double t_cur, bool afs)
{
    int B = x->shape[0];
    AmedBegin b;
    ctx_no_grad_begin(c);
    b.d = tensor_like(c, x);
    if (afs) {
        double inv = 1.0 / sqrt(1.0 + t_cur * t_cur);
        for (size_t e = 0; e < x->n; e++) b.d->data[e] = (float)(x->data[e] * inv);
        b.f = tensor_zeros(c, 2, SHAPE(B, amed_feature_dim(T, x->shape[2], x->shape[3])));
    } else {
        WeightSet tws = {(float *)T->w, NULL};
        Tensor *t = tensor_new(c, 1, SHAPE(B)), *mid = NULL;
        for (int i = 0; i < B; i++) t->data[i] = (float)t_cur;
        Tensor *D = precond_forward(c, &T->pre, T->net, &tws, x, t, NULL, NULL, 0, &mid);
        for (size_t e = 0; e < x->n; e++) b.d->data[e] = (float)((x->data[e] - D->data[e]) / t_cur);
        b.f = mlp_bottleneck_input(c, mid);
    }
    ctx_no_grad_end(c);
    return b;
}

/* sum_j coef[j] hist[j-1] over j = 1..p-1 (the history part of an Adams-Bashforth step), a
 * constant [B,C,H,W]. */
static Tensor *ab_history(Ctx *c, const AmedTraj *tr, int p, const Tensor *like)
{
    Tensor *y = tensor_zeros(c, like->ndim, like->shape);
    const double *k = solver_ab_coef[p - 1];
    for (int j = 1; j < p; j++)
        for (size_t e = 0; e < y->n; e++) y->data[e] += (float)(k[j] * tr->hist[j - 1][e]);
    return y;
}

static int ab_order(const AmedSettings *s, const AmedTraj *tr) { return CM_MIN(s->max_order, tr->nhist + 1); }

/* ---- dpmpp ---- */

/* A [B] tensor of the constant v. */
static Tensor *filled(Ctx *c, int B, double v)
{
    Tensor *t = tensor_new(c, 1, SHAPE(B));
    for (int i = 0; i < B; i++) t->data[i] = (float)v;
    return t;
}

/* m thresholded per sample on the tape, value and gradient: y = clip(m, -s, s) / s with
 * s = max(1, q), q the 0.995 quantile of |m| (solver_threshold_scale), which interpolates two
 * order statistics: q = (1 - f) |m_lo| + f |m_hi|, a dot product of m with a constant per sample
 * (op_bmm), so the gradient reaches m through s too (torch.quantile's, the reference's). Inside
 * the clip y = m / s, outside y = sign(m), a constant. */
static Tensor *dpmpp_threshold(Ctx *c, Tensor *m)
{
    int B = m->shape[0];
    size_t dim = m->n / (size_t)B;
    Tensor *in = tensor_like(c, m), *out = tensor_like(c, m), *pick = tensor_zeros(c, 3, SHAPE(B, (int)dim, 1));
    Tensor *above = tensor_new(c, 1, SHAPE(B)), *below = tensor_new(c, 1, SHAPE(B));
    double *abs_m = cm_malloc(dim * sizeof(double));
    for (int b = 0; b < B; b++) {
        const float *v = m->data + (size_t)b * dim;
        for (size_t e = 0; e < dim; e++) abs_m[e] = fabs(v[e]);
        double s = solver_threshold_scale(abs_m, dim);         /* abs_m is sorted now */
        for (size_t e = 0; e < dim; e++) {
            bool inside = fabs(v[e]) <= s;
            in->data[(size_t)b * dim + e] = inside;
            out->data[(size_t)b * dim + e] = inside ? 0 : v[e] > 0 ? 1 : -1;
        }
        above->data[b] = s > 1;
        below->data[b] = s > 1 ? 0 : 1;
        if (s <= 1) continue;
        /* The order statistics lo and hi: elements whose |m| equals them (any one of a tie). */
        const double pos = 0.995 * (double)(dim - 1), f = pos - floor(pos);
        const size_t lo = (size_t)pos, hi = CM_MIN(lo + 1, dim - 1);
        size_t at_lo = dim, at_hi = dim;
        for (size_t e = 0; e < dim; e++) {
            if (at_lo == dim && fabs(v[e]) == abs_m[lo]) at_lo = e;
            else if (at_hi == dim && fabs(v[e]) == abs_m[hi]) at_hi = e;
        }
        if (at_hi == dim) at_hi = at_lo;                        /* equal values */
        float *w = pick->data + (size_t)b * dim;
        w[at_lo] += (float)((1 - f) * (v[at_lo] < 0 ? -1 : 1));
        w[at_hi] += (float)(f * (v[at_hi] < 0 ? -1 : 1));
    }
    free(abs_m);
    /* s = q where q > 1, else 1 */
    Tensor *q = op_reshape(c, op_bmm(c, op_reshape(c, m, 3, SHAPE(B, 1, (int)dim)), pick, false, false), 1, SHAPE(B));
    Tensor *s = op_add(c, op_mul(c, q, above), below);
    return op_add(c, op_div(c, op_mul(c, m, in), op_reshape(c, s, 4, SHAPE(B, 1, 1, 1))), out);
}

/* One multistep DPM-Solver++ update of order p (solvers.h dpmpp3m) of x [B,C,H,W] from time tm[0]
 * to t over the data predictions m[0..p-1] (newest first) at the times tm[0..p-1] (every time
 * [B], per sample), every model term scaled by cs ([B]; NULL: 1). */
static Tensor *dpmpp_update(Ctx *c, Tensor *x, Tensor *t, Tensor *const *m, Tensor *const *tm, int p, Tensor *cs)
{
    const int *per_sample = SHAPE(x->shape[0], 1, 1, 1);
#define R(v) op_reshape(c, (v), 4, per_sample)
    Tensor *h = op_log(c, op_div(c, tm[0], t));                     /* lambda_t - lambda_{tm[0]} */
    Tensor *phi1 = op_scale(c, op_exp(c, op_scale(c, h, -1, 0)), 1, -1);
    Tensor *model;                                                  /* phi1 m_0 - phi2 D1 + phi3 D2 */
    if (p == 1) {
        model = op_mul(c, R(phi1), m[0]);
    } else {
        Tensor *r0 = op_div(c, op_log(c, op_div(c, tm[1], tm[0])), h);
        Tensor *d1_0 = op_div(c, op_sub(c, m[0], m[1]), R(r0));
        if (p == 2) {
            model = op_mul(c, R(phi1), op_add(c, m[0], op_scale(c, d1_0, 0.5f, 0)));
        } else {
            Tensor *r1 = op_div(c, op_log(c, op_div(c, tm[2], tm[1])), h), *r01 = op_add(c, r0, r1);
            Tensor *d1_1 = op_div(c, op_sub(c, m[1], m[2]), R(r1)), *dd = op_sub(c, d1_0, d1_1);
            Tensor *d1 = op_add(c, d1_0, op_mul(c, R(op_div(c, r0, r01)), dd)), *d2 = op_div(c, dd, R(r01));
            Tensor *phi2 = op_scale(c, op_div(c, phi1, h), 1, 1), *phi3 = op_scale(c, op_div(c, phi2, h), 1, -0.5f);
            model = op_add(c, op_sub(c, op_mul(c, R(phi1), m[0]), op_mul(c, R(phi2), d1)), op_mul(c, R(phi3), d2));
        }
    }
    if (cs) model = op_mul(c, R(cs), model);
    Tensor *y = op_sub(c, op_mul(c, R(op_div(c, t, tm[0])), x), model);
#undef R
    return y;
}

/* amed_step_end of the dpmpp plugin (amed.h), sv = s [B]. */
static Tensor *dpmpp_step_end(Ctx *c, const AmedTeacher *T, const AmedSettings *s, AmedTraj *tr, Tensor *x,
                              Tensor *d, Tensor *sv, Tensor *cs, Tensor *a, double t_cur, double t_next)
{
    int B = x->shape[0];
    const int fine = 2 * s->N - 1, max_order = CM_MIN(s->max_order, 3), k = 2 * tr->steps + 1;
    Tensor *tn = filled(c, B, t_cur), *mn = tensor_like(c, x);
    for (size_t e = 0; e < x->n; e++) mn->data[e] = (float)(x->data[e] - t_cur * d->data[e]);   /* D(x_n, t_n) */
    mn = dpmpp_threshold(c, mn);
    Tensor *m[3] = {mn, NULL, NULL}, *tm[3] = {tn, NULL, NULL};
    for (int j = 0; j < CM_MIN(tr->nhist, 2); j++) {
        m[j + 1] = tensor_wrap(c, tr->hist[j], NULL, 4, x->shape, false);
        tm[j + 1] = tensor_wrap(c, tr->htime[j], NULL, 1, SHAPE(B), false);
    }
    Tensor *xs = dpmpp_update(c, x, sv, m, tm, solver_dpmpp_order(k, fine, max_order, true), NULL);
    WeightSet tws = {(float *)T->w, NULL};
    Tensor *D = precond_forward(c, &T->pre, T->net, &tws, xs, a ? op_mul(c, a, sv) : sv, NULL, NULL, 0, NULL);
    Tensor *ms = dpmpp_threshold(c, D);
    Tensor *m2[3] = {ms, mn, m[1]}, *tm2[3] = {sv, tn, tm[1]};
    Tensor *x1 = dpmpp_update(c, xs, filled(c, B, t_next), m2, tm2, solver_dpmpp_order(k + 1, fine, max_order, true), cs);
    traj_push(tr, mn->data, tn->data, 3);
    traj_push(tr, ms->data, sv->data, 3);
    tr->steps++;
    return x1;
}

Tensor *amed_step_end(Ctx *c, const AmedTeacher *T, const AmedSettings *s, AmedTraj *tr, Tensor *x, Tensor *d,
                      Tensor *r, Tensor *cs, Tensor *a, double t_cur, double t_next)
{
    int B = x->shape[0];
    const int *per_sample = SHAPE(B, 1, 1, 1);
    const double h = t_next - t_cur;
    /* s = t_{n+1}^r t_n^(1-r) = t_n exp(r ln(t_{n+1}/t_n)) */
    Tensor *sv = op_scale(c, op_exp(c, op_scale(c, r, (float)log(t_next / t_cur), 0)), (float)t_cur, 0);
    if (s->plugin == AMED_PLUGIN_DPMPP) return dpmpp_step_end(c, T, s, tr, x, d, sv, cs, a, t_cur, t_next);
    Tensor *s4 = op_reshape(c, sv, 4, per_sample);
    Tensor *to_s = op_scale(c, s4, 1, (float)-t_cur);            /* s - t_n */

    /* First sub-step, t_n -> s. */
    Tensor *xs;
    if (s->plugin == AMED_PLUGIN_IPNDM) {
        int p = ab_order(s, tr);
        Tensor *g = tensor_like(c, d), *hist = ab_history(c, tr, p, d);
        for (size_t e = 0; e < g->n; e++) g->data[e] = (float)(solver_ab_coef[p - 1][0] * d->data[e]) + hist->data[e];
        xs = op_add(c, x, op_mul(c, to_s, g));
        traj_push(tr, d->data, NULL, s->max_order - 1);
    } else {
        xs = op_add(c, x, op_mul(c, to_s, d));
    }

    /* d_s = (x_s - D(x_s, a s)) / s, through the frozen teacher into x_s and its noise level. */
    WeightSet tws = {(float *)T->w, NULL};
    Tensor *sig = a ? op_mul(c, a, sv) : sv;
    Tensor *D = precond_forward(c, &T->pre, T->net, &tws, xs, sig, NULL, NULL, 0, NULL);
    Tensor *ds = op_div(c, op_sub(c, xs, D), s4);

    /* Second sub-step, s -> t_{n+1}: base + c * update. */
    Tensor *base = x, *upd = NULL;
    switch (s->plugin) {
    case AMED_PLUGIN_SOLVER:
        upd = op_scale(c, ds, (float)h, 0);
        break;
    case AMED_PLUGIN_EULER:
        base = xs;
        upd = op_mul(c, op_scale(c, s4, -1, (float)t_next), ds);
        break;
    case AMED_PLUGIN_DPM2: {
        /* (1/(2r)) d_s + (1 - 1/(2r)) d_n = d_n + (1/(2r)) (d_s - d_n) */
        Tensor *w = op_scale(c, op_pow(c, op_reshape(c, r, 4, per_sample), -1), 0.5f, 0);
        upd = op_scale(c, op_add(c, d, op_mul(c, w, op_sub(c, ds, d))), (float)h, 0);
        break;
    }
    case AMED_PLUGIN_IPNDM: {
        int p = ab_order(s, tr);
        Tensor *g = op_add(c, op_scale(c, ds, (float)solver_ab_coef[p - 1][0], 0), ab_history(c, tr, p, ds));
        base = xs;
        upd = op_mul(c, op_scale(c, s4, -1, (float)t_next), g);
        traj_push(tr, ds->data, NULL, s->max_order - 1);
        break;
    }
    default:
        CM_ASSERT(0, "amed: bad plugin %d", (int)s->plugin);
    }
    if (cs) upd = op_mul(c, op_reshape(c, cs, 4, per_sample), upd);
    tr->steps++;
    return op_add(c, base, upd);
}

Tensor *amed_step(Ctx *c, const AmedTeacher *T, const AmedSettings *s, const AmedMLP *g, const WeightSet *ws,
                  AmedTraj *tr, Tensor *x, const double *t, int n)
{
    AmedBegin b = amed_step_begin(c, T, x, t[n], s->afs && n == 0);
    MlpOutput o = mlp_forward(c, g, ws, b.f, (float)t[n], (float)t[n + 1]);
    return amed_step_end(c, T, s, tr, x, b.d, o.r, o.c, o.a, t[n], t[n + 1]);
}

void amed_sample(const AmedTeacher *T, const AmedPredictor *p, int C, int H, int W, int batch, Ctx *ctx, int n,
                 uint64_t seed, float *out, int *nfe)
{
    const AmedSettings *s = &p->s;
    size_t dim = (size_t)C * H * W;
    double *t = cm_malloc((size_t)s->N * sizeof(double));
    CM_ASSERT(schedule_steps(s->schedule, s->N, s->sigma_min, s->sigma_max, s->rho, t) == 0,
              "amed_sample: bad settings: %s", cm_errmsg());
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, out, n, 0, dim);
    for (size_t k = 0; k < (size_t)n * dim; k++) out[k] = (float)(s->sigma_max * out[k]);
    WeightSet ws = {p->w, NULL};
    AmedTraj tr;
    amed_traj_init(&tr, CM_MIN(batch, n), C, H, W);
    for (int b0 = 0; b0 < n; b0 += batch) {
        int nb = CM_MIN(batch, n - b0);
        float *x = out + (size_t)b0 * dim;
        tr.B = nb;
        amed_traj_reset(&tr);
        for (int i = 0; i < s->N - 1; i++) {
            ctx_reset(ctx);
            ctx_no_grad_begin(ctx);
            Tensor *xt = tensor_wrap(ctx, x, NULL, 4, SHAPE(nb, C, H, W), false);
            Tensor *x1 = amed_step(ctx, T, s, &p->mlp, &ws, &tr, xt, t, i);
            memcpy(x, x1->data, (size_t)nb * dim * sizeof(float));
            ctx_no_grad_end(ctx);
        }
    }
    amed_traj_free(&tr);
    free(t);
    if (nfe) *nfe = amed_nfe(s);
}
