/* solvers.c: PF-ODE samplers over a denoiser callback (updates and NFE formulas in solvers.h).
 *
 * Every vector loop runs over the whole batch, n_el = N * dim values, in float64. The denoiser
 * sees float32 copies; its output is widened again before any arithmetic. */
#include "sample/solvers.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const solver_kind_names[SOLVER_KIND_COUNT + 1] = {
    [SOLVER_EULER] = "euler",
    [SOLVER_HEUN] = "heun",
    [SOLVER_DPM2] = "dpm2",
    [SOLVER_DPMPP2M] = "dpmpp2m",
    [SOLVER_DPMPP3M] = "dpmpp3m",
    [SOLVER_IPNDM] = "ipndm",
};
_Static_assert(SOLVER_IPNDM == SOLVER_KIND_COUNT - 1, "a SolverKind without a name");

/* Denoiser calls per step (heun and dpm2 make two). */
static const int solver_calls_per_step[SOLVER_KIND_COUNT] = {
    [SOLVER_EULER] = 1, [SOLVER_HEUN] = 2, [SOLVER_DPM2] = 2,
    [SOLVER_DPMPP2M] = 1, [SOLVER_DPMPP3M] = 1, [SOLVER_IPNDM] = 1,
};

SolverOpts solver_opts_default(void)
{
    return (SolverOpts){
        .schedule = SCHEDULE_POLYNOMIAL, .rho = 7.0, .sigma_min = 0.002, .sigma_max = 80.0,
        .steps = 0, .nfe = 0, .ipndm_order = 4, .afs = false, .denoise_to_zero = false,
        .lower_order_final = true, .thresholding = true,
    };
}

const char *solver_kind_name(SolverKind kind)
{
    CM_ASSERT(kind >= 0 && kind < SOLVER_KIND_COUNT, "solver_kind_name: bad kind %d", (int)kind);
    return solver_kind_names[kind];
}

int solver_kind_from_name(const char *name)
{
    for (int k = 0; k < SOLVER_KIND_COUNT; k++)
        if (strcmp(name, solver_kind_names[k]) == 0) return k;
    return cm_fail("unknown solver '%s' (expected euler, heun, dpm2, dpmpp2m, dpmpp3m or ipndm)",
                   name);
}

int solver_nfe(SolverKind kind, const SolverOpts *o, int n)
{
    CM_ASSERT(kind >= 0 && kind < SOLVER_KIND_COUNT, "solver_nfe: bad kind %d", (int)kind);
    return solver_calls_per_step[kind] * (n - 1) - (int)o->afs + (int)o->denoise_to_zero;
}

int solver_resolve_steps(SolverKind kind, const SolverOpts *o)
{
    if (kind < 0 || kind >= SOLVER_KIND_COUNT) return cm_fail("solver: bad kind %d", (int)kind);
    const char *name = solver_kind_names[kind];
    if (o->steps != 0) {
        if (o->steps < 2) return cm_fail("%s: need at least 2 time points, got %d", name, o->steps);
        if (o->nfe > 0 && solver_nfe(kind, o, o->steps) != o->nfe)
            return cm_fail("%s: %d time points take %d NFE, not the %d asked for", name, o->steps,
                           solver_nfe(kind, o, o->steps), o->nfe);
        return o->steps;
    }
    if (o->nfe <= 0) return cm_fail("%s: set the number of time points or the NFE", name);

    /* NFE = c (n-1) + off, with c calls per step and off = z - afs; n >= 2. */
    int c = solver_calls_per_step[kind], off = (int)o->denoise_to_zero - (int)o->afs;
    int lowest = c + off;
    if (o->nfe >= lowest && (o->nfe - off) % c == 0) return (o->nfe - off) / c + 1;

    if (o->nfe < lowest)
        return cm_fail("%s: NFE %d is too small: the fewest is %d (2 time points; afs %s, "
                       "denoise_to_zero %s)", name, o->nfe, lowest, o->afs ? "on" : "off",
                       o->denoise_to_zero ? "on" : "off");
    return cm_fail("%s: NFE %d is not possible: %s makes 2 calls per step, so NFE = 2(n-1)%s%s is "
                   "%s here (nearest: %d or %d); afs (1 less) or denoise_to_zero (1 more) changes "
                   "the parity%s", name, o->nfe, name, o->afs ? " - 1" : "",
                   o->denoise_to_zero ? " + 1" : "", off == 0 ? "even" : "odd", o->nfe - 1,
                   o->nfe + 1, kind == SOLVER_HEUN ? " (EDM's sampler, n = 18 with the final step "
                   "to 0, is heun with denoise_to_zero: 35 NFE)" : "");
}

/* ---- the denoiser at the float32 boundary ---- */

typedef struct Denoiser {
    DenoiserFn fn;
    void *user;
    int N;
    size_t dim, n_el;
    float *xf, *outf;          /* [n_el] float32 copies */
    double *sigma;             /* [N]: the step's sigma for every sample */
    int nfe;
} Denoiser;

/* D[n_el] = D(x; sigma), one NFE. */
static void denoise(Denoiser *dn, const double *x, double sigma, double *D)
{
    for (size_t e = 0; e < dn->n_el; e++) dn->xf[e] = (float)x[e];
    for (int b = 0; b < dn->N; b++) dn->sigma[b] = sigma;
    dn->fn(dn->user, dn->xf, dn->sigma, dn->outf, dn->N, dn->dim, NULL);
    dn->nfe++;
    for (size_t e = 0; e < dn->n_el; e++) D[e] = dn->outf[e];
}

/* d = (x - D(x; sigma))/sigma, one NFE; D is scratch. */
static void direction(Denoiser *dn, const double *x, double sigma, double *D, double *d)
{
    denoise(dn, x, sigma, D);
    for (size_t e = 0; e < dn->n_el; e++) d[e] = (x[e] - D[e]) / sigma;
}

/* AMED's analytical first step: d = x / sqrt(1 + sigma^2), no NFE (solvers.h). */
static void direction_afs(size_t n_el, const double *x, double sigma, double *d)
{
    double inv = 1.0 / sqrt(1.0 + sigma * sigma);
    for (size_t e = 0; e < n_el; e++) d[e] = x[e] * inv;
}

/* The first direction of step i: analytical on step 0 with afs, else a denoiser call. */
static void step_direction(Denoiser *dn, const SolverOpts *o, int i, const double *x,
                           double sigma, double *D, double *d)
{
    if (o->afs && i == 0) direction_afs(dn->n_el, x, sigma, d);
    else direction(dn, x, sigma, D, d);
}

/* The state has reached time point i (sigma = t_i): tell the observer, if any. */
static void reached(const Denoiser *dn, const SolverOpts *o, int i, double sigma, const double *x)
{
    if (o->on_step) o->on_step(o->on_step_user, i, sigma, x, dn->N, dn->dim);
}

/* ---- single-step solvers ---- */

static void solve_euler(Denoiser *dn, const SolverOpts *o, const double *t, int n, double *x,
                        double *D, double *d)
{
    for (int i = 0; i < n - 1; i++) {
        double h = t[i + 1] - t[i];
        step_direction(dn, o, i, x, t[i], D, d);
        for (size_t e = 0; e < dn->n_el; e++) x[e] += h * d[e];
        reached(dn, o, i + 1, t[i + 1], x);
    }
}

/* EDM Algorithm 1 (deterministic, no churn) over the grid, correction on every step. */
static void solve_heun(Denoiser *dn, const SolverOpts *o, const double *t, int n, double *x,
                       double *D, double *d, double *xp, double *d2)
{
    for (int i = 0; i < n - 1; i++) {
        double h = t[i + 1] - t[i];
        step_direction(dn, o, i, x, t[i], D, d);
        for (size_t e = 0; e < dn->n_el; e++) xp[e] = x[e] + h * d[e];
        direction(dn, xp, t[i + 1], D, d2);
        for (size_t e = 0; e < dn->n_el; e++) x[e] += h * 0.5 * (d[e] + d2[e]);
        reached(dn, o, i + 1, t[i + 1], x);
    }
}

/* DPM-Solver-2, r1 = 1/2, in VE form: Euler to the geometric midpoint, then the full step with
 * the midpoint's direction. */
static void solve_dpm2(Denoiser *dn, const SolverOpts *o, const double *t, int n, double *x,
                       double *D, double *d, double *xp, double *d2)
{
    for (int i = 0; i < n - 1; i++) {
        double h = t[i + 1] - t[i], s = sqrt(t[i] * t[i + 1]);
        step_direction(dn, o, i, x, t[i], D, d);
        for (size_t e = 0; e < dn->n_el; e++) xp[e] = x[e] + (s - t[i]) * d[e];
        direction(dn, xp, s, D, d2);
        for (size_t e = 0; e < dn->n_el; e++) x[e] += h * d2[e];
        reached(dn, o, i + 1, t[i + 1], x);
    }
}

/* ---- iPNDM ---- */

/* Adams-Bashforth coefficients of a uniform grid; row p-1 weighs d_0 (newest) .. d_{p-1}. */
const double solver_ab_coef[4][4] = {
    {1.0, 0, 0, 0},
    {3.0 / 2, -1.0 / 2, 0, 0},
    {23.0 / 12, -16.0 / 12, 5.0 / 12, 0},
    {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24},
};

/* hist[0..3]: the directions d_0 (current) .. d_3, rotated by pointer so no vector is copied. */
static void solve_ipndm(Denoiser *dn, const SolverOpts *o, const double *t, int n, double *x,
                        double *D, double *hist[4])
{
    for (int i = 0; i < n - 1; i++) {
        double h = t[i + 1] - t[i];
        double *oldest = hist[3];
        memmove(&hist[1], &hist[0], 3 * sizeof hist[0]);
        hist[0] = oldest;
        step_direction(dn, o, i, x, t[i], D, hist[0]);

        int p = CM_MIN(o->ipndm_order, i + 1);
        const double *c = solver_ab_coef[p - 1];
        for (size_t e = 0; e < dn->n_el; e++) {
            double sum = 0;
            for (int j = 0; j < p; j++) sum += c[j] * hist[j][e];
            x[e] += h * sum;
        }
        reached(dn, o, i + 1, t[i + 1], x);
    }
}

/* ---- multistep DPM-Solver++ (data prediction) ---- */

static int cmp_double(const void *a, const void *b)
{
    double u = *(const double *)a, v = *(const double *)b;
    return (u > v) - (u < v);
}

double solver_threshold_scale(double *abs_m, size_t dim)
{
    const double p = 0.995;
    qsort(abs_m, dim, sizeof *abs_m, cmp_double);
    double pos = p * (double)(dim - 1);
    size_t lo = (size_t)pos;
    double q = abs_m[lo];
    if (lo + 1 < dim) q += (pos - (double)lo) * (abs_m[lo + 1] - abs_m[lo]);
    return CM_MAX(q, 1.0);
}

/* Imagen's dynamic thresholding per sample, as diff-sampler's dynamic_thresholding_fn:
 * m = clip(m, -s, s) / s with solver_threshold_scale's s. */
static void threshold(double *m, int N, size_t dim, double *sorted)
{
    for (int b = 0; b < N; b++) {
        double *row = m + (size_t)b * dim;
        for (size_t k = 0; k < dim; k++) sorted[k] = fabs(row[k]);
        double s = solver_threshold_scale(sorted, dim);
        for (size_t k = 0; k < dim; k++) row[k] = CM_MAX(-s, CM_MIN(row[k], s)) / s;
    }
}

int solver_dpmpp_order(int k, int n, int max_order, bool lower_order_final)
{
    if (!lower_order_final) return CM_MIN(max_order, k);
    return k < max_order ? k : CM_MIN(max_order, n - k);
}

/* m[0..2]: the data predictions at t_i, t_{i-1}, t_{i-2}, rotated by pointer like iPNDM's. */
static void solve_dpmpp(Denoiser *dn, const SolverOpts *o, int max_order, const double *t, int n,
                        double *x, double *d, double *m[3], double *sorted)
{
    for (int i = 0; i < n - 1; i++) {
        double *oldest = m[2];
        m[2] = m[1];
        m[1] = m[0];
        m[0] = oldest;
        if (o->afs && i == 0) {
            direction_afs(dn->n_el, x, t[0], d);
            for (size_t e = 0; e < dn->n_el; e++) m[0][e] = x[e] - t[0] * d[e];
        } else {
            denoise(dn, x, t[i], m[0]);
        }
        if (o->thresholding) threshold(m[0], dn->N, dn->dim, sorted);

        int p = solver_dpmpp_order(i + 1, n, max_order, o->lower_order_final);
        double h = log(t[i] / t[i + 1]);                /* lambda_{i+1} - lambda_i */
        double ratio = t[i + 1] / t[i];
        double phi1 = expm1(-h);           /* solvers.h: phi1, phi2, phi3 and c */
        if (p == 1) {
            for (size_t e = 0; e < dn->n_el; e++) x[e] = ratio * x[e] - phi1 * m[0][e];
        } else if (p == 2) {
            double r0 = log(t[i - 1] / t[i]) / h;
            for (size_t e = 0; e < dn->n_el; e++) {
                double d1 = (m[0][e] - m[1][e]) / r0;
                x[e] = ratio * x[e] - phi1 * (m[0][e] + 0.5 * d1);
            }
        } else {
            double r0 = log(t[i - 1] / t[i]) / h, r1 = log(t[i - 2] / t[i - 1]) / h;
            double phi2 = phi1 / h + 1.0, phi3 = phi2 / h - 0.5;
            double d2_scale = o->dpmpp3m_corrected ? 2.0 : 1.0;
            for (size_t e = 0; e < dn->n_el; e++) {
                double d1_0 = (m[0][e] - m[1][e]) / r0, d1_1 = (m[1][e] - m[2][e]) / r1;
                double d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1);
                double d2 = d2_scale * (d1_0 - d1_1) / (r0 + r1);
                x[e] = ratio * x[e] - phi1 * m[0][e] + phi2 * d1 - phi3 * d2;
            }
        }
        reached(dn, o, i + 1, t[i + 1], x);
    }
}

/* ---- driver ---- */

/* Runs `kind` over the time points t[n] (descending for sampling, ascending for inversion: the
 * single-step updates do not care which way h points), then o's step to 0. */
static void integrate(SolverKind kind, const SolverOpts *o, const double *t, int n, DenoiserFn fn,
                      void *user, double *x, int N, size_t dim, SolverStats *stats)
{
    size_t n_el = (size_t)N * dim;
    Denoiser dn = {.fn = fn, .user = user, .N = N, .dim = dim, .n_el = n_el,
                   .xf = cm_malloc(n_el * sizeof(float)), .outf = cm_malloc(n_el * sizeof(float)),
                   .sigma = cm_malloc((size_t)N * sizeof(double))};
    enum { NBUF = 5 };                    /* D plus up to four work vectors (iPNDM's history) */
    double *buf[NBUF];
    for (int k = 0; k < NBUF; k++) buf[k] = cm_calloc(n_el, sizeof(double));
    double *sorted = NULL;

    reached(&dn, o, 0, t[0], x);
    switch (kind) {
    case SOLVER_EULER:
        solve_euler(&dn, o, t, n, x, buf[0], buf[1]);
        break;
    case SOLVER_HEUN:
        solve_heun(&dn, o, t, n, x, buf[0], buf[1], buf[2], buf[3]);
        break;
    case SOLVER_DPM2:
        solve_dpm2(&dn, o, t, n, x, buf[0], buf[1], buf[2], buf[3]);
        break;
    case SOLVER_DPMPP2M:
    case SOLVER_DPMPP3M: {
        double *m[3] = {buf[1], buf[2], buf[3]};
        sorted = cm_malloc(dim * sizeof *sorted);
        solve_dpmpp(&dn, o, kind == SOLVER_DPMPP2M ? 2 : 3, t, n, x, buf[0], m, sorted);
        break;
    }
    case SOLVER_IPNDM: {
        double *hist[4] = {buf[1], buf[2], buf[3], buf[4]};
        solve_ipndm(&dn, o, t, n, x, buf[0], hist);
        break;
    }
    default:
        CM_ASSERT(0, "solver: bad kind %d", (int)kind);
    }
    if (o->denoise_to_zero) {
        denoise(&dn, x, t[n - 1], buf[0]);
        memcpy(x, buf[0], n_el * sizeof *x);
        reached(&dn, o, n, 0.0, x);
    }
    CM_ASSERT(dn.nfe == solver_nfe(kind, o, n), "%s: made %d denoiser calls, its formula says %d",
              solver_kind_names[kind], dn.nfe, solver_nfe(kind, o, n));

    if (stats) *stats = (SolverStats){.nfe = dn.nfe, .steps = n};
    free(sorted);
    for (int k = 0; k < NBUF; k++) free(buf[k]);
    free(dn.xf);
    free(dn.outf);
    free(dn.sigma);
}

int solver_sample(SolverKind kind, const SolverOpts *o, DenoiserFn fn, void *user, double *x,
                  int N, size_t dim, SolverStats *stats)
{
    int n = solver_resolve_steps(kind, o);
    if (n < 0) return -1;
    if (kind == SOLVER_IPNDM && (o->ipndm_order < 1 || o->ipndm_order > 4))
        return cm_fail("ipndm: ipndm_order must be 1..4, got %d", o->ipndm_order);
    CM_ASSERT(N >= 1 && dim >= 1, "solver_sample: empty batch (N = %d, dim = %zu)", N, dim);

    double *t = cm_malloc((size_t)n * sizeof *t);
    int rc = schedule_steps(o->schedule, n, o->sigma_min, o->sigma_max, o->rho, t);
    if (rc == 0) integrate(kind, o, t, n, fn, user, x, N, dim, stats);
    free(t);
    return rc;
}

/* ---- inversion: the same ODE upward ---- */

static int invert_check_kind(SolverKind kind)
{
    if (kind == SOLVER_EULER || kind == SOLVER_HEUN) return 0;
    if (kind < 0 || kind >= SOLVER_KIND_COUNT) return cm_fail("solver: bad kind %d", (int)kind);
    return cm_fail("%s cannot integrate upward: inversion takes euler or heun",
                   solver_kind_names[kind]);
}

/* Inversion along t[n] with the observer of o (NULL: none). */
static int invert_along(SolverKind kind, const double *t, int n, const SolverOpts *observer,
                        DenoiserFn fn, void *user, double *x, int N, size_t dim, SolverStats *stats)
{
    if (invert_check_kind(kind) < 0) return -1;
    if (n < 2) return cm_fail("%s inversion: need at least 2 time points, got %d",
                              solver_kind_names[kind], n);
    for (int i = 0; i < n; i++)
        if (!(t[i] > 0 && isfinite(t[i]) && (i == 0 || t[i] > t[i - 1])))
            return cm_fail("%s inversion: the times must be positive and increase, got t[%d] = %g%s",
                           solver_kind_names[kind], i, t[i], i ? " after a larger or equal one" : "");
    CM_ASSERT(N >= 1 && dim >= 1, "solver_invert: empty batch (N = %d, dim = %zu)", N, dim);
    SolverOpts plain = solver_opts_default();     /* no afs, no step to 0 */
    plain.steps = n;
    if (observer) {
        plain.on_step = observer->on_step;
        plain.on_step_user = observer->on_step_user;
    }
    integrate(kind, &plain, t, n, fn, user, x, N, dim, stats);
    return 0;
}

int solver_invert_times(SolverKind kind, const double *t, int n, DenoiserFn fn, void *user,
                        double *x, int N, size_t dim, SolverStats *stats)
{
    return invert_along(kind, t, n, NULL, fn, user, x, N, dim, stats);
}

int solver_invert(SolverKind kind, const SolverOpts *o, DenoiserFn fn, void *user, double *x,
                  int N, size_t dim, SolverStats *stats)
{
    if (invert_check_kind(kind) < 0) return -1;
    if (o->afs || o->denoise_to_zero)
        return cm_fail("%s inversion: afs and denoise_to_zero belong to sampling (they act at "
                       "sigma_max and at 0); turn them off", solver_kind_names[kind]);
    int n = solver_resolve_steps(kind, o);
    if (n < 0) return -1;
    double *t = cm_malloc((size_t)n * sizeof *t), *up = cm_malloc((size_t)n * sizeof *up);
    int rc = schedule_steps(o->schedule, n, o->sigma_min, o->sigma_max, o->rho, t);
    if (rc == 0) {
        for (int i = 0; i < n; i++) up[i] = t[n - 1 - i];
        rc = invert_along(kind, up, n, o, fn, user, x, N, dim, stats);
    }
    free(t);
    free(up);
    return rc;
}
