/* test_solvers.c: time schedules and PF-ODE solvers (src/sample/schedule.h, solvers.h).
 *
 * (a) every schedule test vector of reference/cm.md §1.4 and reference/amed.md §5, to the printed
 *     precision;
 * (b) each solver's order of convergence on the PF-ODE of Gaussian data, data ~ N(mu, s^2) per
 *     dimension, where the denoiser is exact, D(x; sigma) = mu + s^2/(s^2 + sigma^2) (x - mu), and
 *     the solution from sigma_max to sigma_min is known in closed form:
 *         x(sigma_min) = mu + (x_T - mu) sqrt(s^2 + sigma_min^2) / sqrt(s^2 + sigma_max^2).
 *     Runs end at sigma_min (no step to 0). The error is max |x - exact| over the batch, at
 *     K, 2K, 4K, 8K steps. Two estimates of the order: the least-squares slope of log error
 *     against log K over the last three counts, and that slope extrapolated: the error of an
 *     order-p method is C h^p (1 + c h + ...), so the pairwise slopes s1, s2, s3 approach p as
 *     p - c' h, and 2 s3 - s2 removes the h term. AB3 and AB4 need the second estimate: their
 *     slopes are still rising (3.70, 3.84 for AB4) where the float32 denoiser boundary sets an
 *     error floor near 1e-8;
 * (c) NFE: the callback's own call count against each solver's formula, AFS saving exactly one,
 *     the NFE -> time points mapping, and EDM's Algorithm 1 (N = 18, 35 NFE) reproduced;
 * (d) unknown names, impossible NFEs and bad options give -1 and a message;
 * (e) inversion (solver_invert): euler and heun integrating upward from sigma_0 = 0.07 to 80 on
 *     the reversed EDM grid against the same closed form, x(80) = mu + (x(sigma_0) - mu)
 *     sqrt(s^2 + 80^2) / sqrt(s^2 + sigma_0^2), at their orders 1 and 2; sampling back down from
 *     the latent on the same grid returns the start with an error of order 1 for euler and 3 for
 *     heun: a step up then the same step down is the identity plus the two local errors, whose
 *     h^(p+1) terms cancel when p + 1 is odd (Heun's amplification factor on y' = a y is
 *     1 + z + z^2/2, and (1 + z + z^2/2)(1 - z + z^2/2) = 1 + z^4/4);
 *     one Euler step written out; the NFE (n-1, 2(n-1)); explicit times equal the reversed grid;
 *     other solvers, afs, and times that do not increase are refused;
 * (f) the on_step observer: every solver reports each time point of its grid in order (and 0
 *     after denoise_to_zero), the last state it reports is the result, and an inversion reports
 *     the ascending grid.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "common.h"
#include "fixture.h"
#include "sample/schedule.h"
#include "sample/solvers.h"

/* ---- (a) schedule test vectors ---- */

typedef struct ScheduleVector {
    ScheduleKind kind;
    double rho;
    int n;
    const char *values;        /* as printed in the reference */
    const char *source;
} ScheduleVector;

static const ScheduleVector schedule_vectors[] = {
    /* cm.md prints t[4] as 19.353; its own formula gives 19.352453 (in float64 and float32
     * alike), so that digit is a rounding slip of the reference and is corrected here. */
    {SCHEDULE_POLYNOMIAL, 7, 18,
     "80.0, 57.586, 40.786, 28.375, 19.352, 12.910, 8.401, 5.315, 3.257, 1.923, 1.088, 0.5853, "
     "0.2964, 0.1395, 0.0599, 0.0229, 0.0075, 0.002", "cm.md 1.4"},
    {SCHEDULE_POLYNOMIAL, 7, 3, "80, 2.5152, 0.002", "amed.md 5"},
    {SCHEDULE_LOGSNR, 1, 3, "80, 0.4000, 0.002", "amed.md 5"},
    {SCHEDULE_TIME_UNIFORM, 1, 3, "80, 2.8237, 0.002", "amed.md 5"},
    {SCHEDULE_POLYNOMIAL, 7, 4, "80, 9.7232, 0.4700, 0.002", "amed.md 5"},
    {SCHEDULE_LOGSNR, 1, 4, "80, 2.3392, 0.0684, 0.002", "amed.md 5"},
    {SCHEDULE_TIME_UNIFORM, 1, 4, "80, 6.9502, 1.2867, 0.002", "amed.md 5"},
    {SCHEDULE_POLYNOMIAL, 7, 6, "80, 24.4083, 5.8389, 0.9654, 0.0851, 0.002", "amed.md 5"},
    {SCHEDULE_TIME_UNIFORM, 1, 6, "80, 16.5062, 4.7463, 1.7541, 0.6502, 0.002", "amed.md 5"},
};

/* Each printed value must match to half a unit of its last printed digit. */
static void test_schedule_vectors(void)
{
    for (size_t v = 0; v < CM_ARRAY_LEN(schedule_vectors); v++) {
        const ScheduleVector *sv = &schedule_vectors[v];
        double t[32];
        CHECK(schedule_steps(sv->kind, sv->n, 0.002, 80, sv->rho, t) == 0, "%s", cm_errmsg());
        const char *p = sv->values;
        int i = 0, bad = 0;
        for (; *p && i < sv->n; i++) {
            char *end;
            double ref = strtod(p, &end);
            const char *dot = memchr(p, '.', (size_t)(end - p));
            int decimals = dot ? (int)(end - dot - 1) : 0;
            double tol = 0.5 * pow(10, -decimals) * (1 + 1e-9);
            if (fabs(t[i] - ref) > tol) {
                bad++;
                printf("  %s %s n=%d: t[%d] = %.6f, printed %.*f\n", sv->source,
                       schedule_kind_name(sv->kind), sv->n, i, t[i], decimals, ref);
            }
            p = end;
            while (*p == ',' || *p == ' ') p++;
        }
        CHECK(i == sv->n && !*p, "%s: %d values printed for n = %d", sv->source, i, sv->n);
        CHECK(bad == 0, "%s %s n=%d: %d values differ", sv->source, schedule_kind_name(sv->kind),
              sv->n, bad);
    }
    printf("schedules: %zu test vectors checked\n", CM_ARRAY_LEN(schedule_vectors));
}

/* ---- the Gaussian PF-ODE ---- */

enum { GAUSS_N = 2, GAUSS_DIM = 8 };

typedef struct Gauss {
    double mu[GAUSS_DIM], s[GAUSS_DIM];
    int calls;                 /* counted here, independently of the solver's bookkeeping */
} Gauss;

static void gauss_init(Gauss *g)
{
    for (int k = 0; k < GAUSS_DIM; k++) {
        g->mu[k] = 0.3 * sin(k + 1.0);
        g->s[k] = 0.2 + 0.1 * k;
    }
    g->calls = 0;
}

static void gauss_denoise(void *user, const float *x, const double *sigma, float *out, int N, size_t dim,
                          float *feat)
{
    Gauss *g = user;
    for (int b = 0; b < N; b++)
        for (size_t k = 0; k < dim; k++) {
            double s2 = g->s[k] * g->s[k];
            size_t e = (size_t)b * dim + k;
            out[e] = (float)(g->mu[k] + s2 / (s2 + sigma[b] * sigma[b]) * (x[e] - g->mu[k]));
        }
    g->calls++;
}

/* gauss_denoise with one sigma for the whole batch of GAUSS_N. */
static void gauss_denoise_all(Gauss *g, const float *x, double sigma, float *out)
{
    double s[GAUSS_N];
    for (int b = 0; b < GAUSS_N; b++) s[b] = sigma;
    gauss_denoise(g, x, s, out, GAUSS_N, GAUSS_DIM, NULL);
}

/* x_T = sigma_max z, z from the counter RNG. */
static void gauss_start(double sigma_max, double *x)
{
    float z[GAUSS_N * GAUSS_DIM];
    rng_normal(&(Rng){.seed = 20240611, .stream = 0, .step = 0}, z, GAUSS_N, 0, GAUSS_DIM);
    for (int e = 0; e < GAUSS_N * GAUSS_DIM; e++) x[e] = sigma_max * z[e];
}

/* Runs the solver from gauss_start and returns max |x - exact solution at sigma_min|. */
static double gauss_error(SolverKind kind, const SolverOpts *o, SolverStats *st)
{
    Gauss g;
    gauss_init(&g);
    double x[GAUSS_N * GAUSS_DIM], x0[GAUSS_N * GAUSS_DIM];
    gauss_start(o->sigma_max, x0);
    memcpy(x, x0, sizeof x);
    if (solver_sample(kind, o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, st) < 0) {
        printf("  %s\n", cm_errmsg());
        return NAN;
    }
    double err = 0;
    for (int b = 0; b < GAUSS_N; b++)
        for (int k = 0; k < GAUSS_DIM; k++) {
            double s2 = g.s[k] * g.s[k];
            int e = b * GAUSS_DIM + k;
            double exact = g.mu[k] + (x0[e] - g.mu[k]) * sqrt(s2 + o->sigma_min * o->sigma_min) /
                                         sqrt(s2 + o->sigma_max * o->sigma_max);
            err = fmax(err, fabs(x[e] - exact));
        }
    return err;
}

/* ---- (b) orders of convergence ---- */

enum { GRID_EDM, GRID_UNIFORM };

typedef struct ConvergenceCase {
    const char *label;
    SolverKind kind;
    int ipndm_order;
    bool corrected;            /* dpmpp3m_corrected */
    int grid;
    int k0;                    /* steps K0, 2K0, 4K0, 8K0 (n = K + 1 time points) */
    double expect;
} ConvergenceCase;

/* The least-squares order must be within FIT_TOL of the expected one, the extrapolated order
 * within EXTRAP_TOL. */
#define FIT_TOL 0.3
#define EXTRAP_TOL 0.15

/* The grids: EDM's (polynomial rho 7 over 0.002..80, where the asymptotic regime starts at a few
 * dozen steps), and a grid uniform in sigma over 2..40 for iPNDM, whose fixed Adams-Bashforth
 * coefficients assume equal steps. There the Euler warm start is harmless only where the
 * trajectory is nearly straight (large sigma_max): its O(h^2) error is multiplied by the
 * curvature x'' ~ s^2/sigma_max^3. The step counts keep every error at least ten times above the
 * float32 floor (~1e-8). */
static const ConvergenceCase convergence_cases[] = {
    {"euler", SOLVER_EULER, 0, false, GRID_EDM, 32, 1},
    {"heun", SOLVER_HEUN, 0, false, GRID_EDM, 32, 2},
    {"dpm2", SOLVER_DPM2, 0, false, GRID_EDM, 32, 2},
    {"dpmpp2m", SOLVER_DPMPP2M, 0, false, GRID_EDM, 32, 2},
    {"dpmpp3m corrected", SOLVER_DPMPP3M, 0, true, GRID_EDM, 32, 3},
    /* As published, D2 carries half the Taylor coefficient: an O(h^3) local error, order 2. */
    {"dpmpp3m published", SOLVER_DPMPP3M, 0, false, GRID_EDM, 128, 2},
    /* Fixed coefficients on a non-uniform grid: order 2 whatever the nominal order. */
    {"ipndm order 4", SOLVER_IPNDM, 4, false, GRID_EDM, 32, 2},
    {"ipndm order 1", SOLVER_IPNDM, 1, false, GRID_UNIFORM, 256, 1},
    {"ipndm order 2", SOLVER_IPNDM, 2, false, GRID_UNIFORM, 256, 2},
    {"ipndm order 3", SOLVER_IPNDM, 3, false, GRID_UNIFORM, 256, 3},
    {"ipndm order 4", SOLVER_IPNDM, 4, false, GRID_UNIFORM, 128, 4},
};

/* Least-squares slope of log(err) over log(K) for the last `m` of the points, negated. */
static double fitted_order(const int *K, const double *err, int first, int m)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int j = first; j < first + m; j++) {
        double lx = log((double)K[j]), ly = log(err[j]);
        sx += lx; sy += ly; sxx += lx * lx; sxy += lx * ly;
    }
    return -(m * sxy - sx * sy) / (m * sxx - sx * sx);
}

static void test_convergence(void)
{
    enum { NK = 4 };
    printf("\nconvergence on the Gaussian PF-ODE (%d samples x %d dims), max |x - exact| at "
           "sigma_min\n", GAUSS_N, GAUSS_DIM);
    printf("grid A: polynomial rho=7, sigma 80 -> 0.002 (EDM); grid B: polynomial rho=1 (uniform), "
           "sigma 40 -> 2\n");
    printf("%-18s %-4s %5s %9s %9s %9s %9s  %-17s %5s %6s %6s\n", "solver", "grid", "K0",
           "err(K0)", "err(2K0)", "err(4K0)", "err(8K0)", "pairwise slopes", "fit", "extrap",
           "expect");
    for (size_t c = 0; c < CM_ARRAY_LEN(convergence_cases); c++) {
        const ConvergenceCase *cc = &convergence_cases[c];
        SolverOpts o = solver_opts_default();
        o.thresholding = false;              /* the Gaussian data is not confined to [-1, 1] */
        o.dpmpp3m_corrected = cc->corrected;
        if (cc->ipndm_order) o.ipndm_order = cc->ipndm_order;
        if (cc->grid == GRID_UNIFORM) {
            o.rho = 1;
            o.sigma_min = 2;
            o.sigma_max = 40;
        }
        int K[NK];
        double err[NK];
        for (int j = 0; j < NK; j++) {
            K[j] = cc->k0 << j;
            o.steps = K[j] + 1;
            SolverStats st;
            err[j] = gauss_error(cc->kind, &o, &st);
        }
        double slope[NK - 1];
        for (int j = 0; j + 1 < NK; j++) slope[j] = log2(err[j] / err[j + 1]);
        double fit = fitted_order(K, err, NK - 3, 3);
        double extrap = 2 * slope[NK - 2] - slope[NK - 3];
        const char *grid = cc->grid == GRID_EDM ? "A" : "B";
        printf("%-18s %-4s %5d %9.2e %9.2e %9.2e %9.2e  %5.2f %5.2f %5.2f %5.2f %6.2f %6.0f\n",
               cc->label, grid, cc->k0, err[0], err[1], err[2], err[3], slope[0], slope[1],
               slope[2], fit, extrap, cc->expect);
        CHECK(isfinite(fit) && fabs(fit - cc->expect) <= FIT_TOL,
              "%s on grid %s: fitted order %.2f, expected %.0f +- %.2f", cc->label, grid, fit,
              cc->expect, FIT_TOL);
        CHECK(isfinite(extrap) && fabs(extrap - cc->expect) <= EXTRAP_TOL,
              "%s on grid %s: extrapolated order %.2f, expected %.0f +- %.2f", cc->label, grid,
              extrap, cc->expect, EXTRAP_TOL);
    }
    printf("\n");
}

/* ---- (c) NFE ---- */

/* Denoiser calls per step, written out here independently of solvers.c. */
static int expected_nfe(SolverKind kind, int n, bool afs, bool to_zero)
{
    int per_step = (kind == SOLVER_HEUN || kind == SOLVER_DPM2) ? 2 : 1;
    return per_step * (n - 1) - (afs ? 1 : 0) + (to_zero ? 1 : 0);
}

static void test_nfe_counts(void)
{
    int bad = 0, checked = 0;
    for (int kind = 0; kind < SOLVER_KIND_COUNT; kind++)
        for (int n = 2; n <= 9; n++)
            for (int flags = 0; flags < 4; flags++) {
                SolverOpts o = solver_opts_default();
                o.thresholding = false;
                o.steps = n;
                o.afs = flags & 1;
                o.denoise_to_zero = flags & 2;
                Gauss g;
                gauss_init(&g);
                double x[GAUSS_N * GAUSS_DIM];
                gauss_start(o.sigma_max, x);
                SolverStats st = {0};
                int rc = solver_sample(kind, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, &st);
                int want = expected_nfe(kind, n, o.afs, o.denoise_to_zero);
                checked++;
                if (rc != 0 || g.calls != want || st.nfe != want || st.steps != n ||
                    solver_nfe(kind, &o, n) != want) {
                    bad++;
                    printf("  %s n=%d afs=%d z=%d: rc %d, calls %d, stats %d, formula %d, "
                           "expected %d\n", solver_kind_name(kind), n, o.afs, o.denoise_to_zero,
                           rc, g.calls, st.nfe, solver_nfe(kind, &o, n), want);
                }
            }
    CHECK(bad == 0, "NFE counts: %d of %d runs differ from the formula", bad, checked);

    /* AFS saves exactly one call, with everything else equal. */
    for (int kind = 0; kind < SOLVER_KIND_COUNT; kind++) {
        SolverOpts o = solver_opts_default();
        o.thresholding = false;
        o.steps = 6;
        SolverStats with, without;
        gauss_error(kind, &o, &without);
        o.afs = true;
        gauss_error(kind, &o, &with);
        CHECK(with.nfe == without.nfe - 1, "%s: AFS gives %d NFE, without %d",
              solver_kind_name(kind), with.nfe, without.nfe);
    }
    printf("NFE: %d runs counted\n", checked);
}

/* Every target NFE either resolves to n time points whose run makes exactly that many calls, or
 * fails with a message, and then no n gives it. */
static void test_nfe_mapping(void)
{
    int bad = 0;
    for (int kind = 0; kind < SOLVER_KIND_COUNT; kind++)
        for (int flags = 0; flags < 4; flags++)
            for (int nfe = 1; nfe <= 40; nfe++) {
                SolverOpts o = solver_opts_default();
                o.afs = flags & 1;
                o.denoise_to_zero = flags & 2;
                o.nfe = nfe;
                int n = solver_resolve_steps(kind, &o);
                int exists = 0;
                for (int m = 2; m <= 45; m++)
                    if (expected_nfe(kind, m, o.afs, o.denoise_to_zero) == nfe) exists = m;
                if (n != (exists ? exists : -1)) {
                    bad++;
                    printf("  %s afs=%d z=%d nfe=%d: resolved n = %d, expected %d\n",
                           solver_kind_name(kind), o.afs, o.denoise_to_zero, nfe, n,
                           exists ? exists : -1);
                }
                if (n < 0 && strstr(cm_errmsg(), "NFE") == NULL) bad++;
            }
    CHECK(bad == 0, "NFE -> time points: %d mismatches", bad);

    /* Users type --nfe 35 (EDM's CIFAR-10 Heun). Without the final step to 0 Heun's NFE is even: */
    SolverOpts o = solver_opts_default();
    o.nfe = 35;
    CHECK(solver_resolve_steps(SOLVER_HEUN, &o) == -1, "heun NFE 35 without afs/z resolved");
    printf("heun --nfe 35: %s\n", cm_errmsg());
    CHECK(strstr(cm_errmsg(), "34 or 36") && strstr(cm_errmsg(), "denoise_to_zero"),
          "the message should name the nearest NFEs and the way to odd ones: %s", cm_errmsg());
    o.denoise_to_zero = true;
    CHECK(solver_resolve_steps(SOLVER_HEUN, &o) == 18, "heun NFE 35 with the step to 0: n = %d",
          solver_resolve_steps(SOLVER_HEUN, &o));
    o.denoise_to_zero = false;
    o.afs = true;
    CHECK(solver_resolve_steps(SOLVER_HEUN, &o) == 19, "heun NFE 35 with AFS: n = %d",
          solver_resolve_steps(SOLVER_HEUN, &o));
    o = solver_opts_default();
    o.nfe = 35;
    CHECK(solver_resolve_steps(SOLVER_DPMPP2M, &o) == 36, "dpmpp2m NFE 35: n = %d",
          solver_resolve_steps(SOLVER_DPMPP2M, &o));
    o.steps = 10;
    CHECK(solver_resolve_steps(SOLVER_DPMPP2M, &o) == -1, "steps and NFE that disagree accepted");
}

/* EDM Algorithm 1 written out as cm.md §1.5 prints it (t_N = 0 appended, the last step Euler)
 * equals heun with denoise_to_zero over the same 18 points, at 35 NFE. */
static void test_edm_heun(void)
{
    enum { NPT = 18 };
    double t[NPT + 1];
    schedule_steps(SCHEDULE_POLYNOMIAL, NPT, 0.002, 80, 7, t);
    t[NPT] = 0;
    Gauss g;
    gauss_init(&g);
    double x[GAUSS_N * GAUSS_DIM], ref[GAUSS_N * GAUSS_DIM];
    gauss_start(80, x);
    memcpy(ref, x, sizeof x);

    enum { E = GAUSS_N * GAUSS_DIM };
    float xf[E], df[E];
    for (int i = 0; i < NPT; i++) {
        double d[E], xn[E];
        for (int e = 0; e < E; e++) xf[e] = (float)ref[e];
        gauss_denoise_all(&g, xf, t[i], df);
        for (int e = 0; e < E; e++) {
            d[e] = (ref[e] - df[e]) / t[i];
            xn[e] = ref[e] + (t[i + 1] - t[i]) * d[e];
        }
        if (i < NPT - 1) {
            for (int e = 0; e < E; e++) xf[e] = (float)xn[e];
            gauss_denoise_all(&g, xf, t[i + 1], df);
            for (int e = 0; e < E; e++)
                xn[e] = ref[e] + (t[i + 1] - t[i]) * 0.5 * (d[e] + (xn[e] - df[e]) / t[i + 1]);
        }
        memcpy(ref, xn, sizeof xn);
    }
    CHECK(g.calls == 35, "EDM Algorithm 1 over 18 points: %d NFE", g.calls);

    SolverOpts o = solver_opts_default();
    o.denoise_to_zero = true;
    o.nfe = 35;
    SolverStats st;
    gauss_init(&g);
    CHECK(solver_sample(SOLVER_HEUN, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, &st) == 0, "%s",
          cm_errmsg());
    double diff = 0;
    for (int e = 0; e < E; e++) diff = fmax(diff, fabs(x[e] - ref[e]));
    CHECK(st.nfe == 35 && st.steps == 18 && diff < 1e-12,
          "heun + denoise_to_zero vs EDM Algorithm 1: NFE %d, n %d, max diff %.3g", st.nfe,
          st.steps, diff);
    printf("EDM Algorithm 1 (18 points, 35 NFE) = heun + denoise_to_zero: max diff %.3g\n", diff);
}

/* AFS takes d = x / sqrt(1 + sigma_max^2) without a call: one Euler step over two points. */
static void test_afs_step(void)
{
    SolverOpts o = solver_opts_default();
    o.steps = 2;
    o.afs = true;
    Gauss g;
    gauss_init(&g);
    double x[GAUSS_N * GAUSS_DIM], x0[GAUSS_N * GAUSS_DIM];
    gauss_start(o.sigma_max, x0);
    memcpy(x, x0, sizeof x);
    SolverStats st;
    solver_sample(SOLVER_EULER, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, &st);
    double diff = 0, h = o.sigma_min - o.sigma_max;
    for (int e = 0; e < GAUSS_N * GAUSS_DIM; e++)
        diff = fmax(diff, fabs(x[e] - (x0[e] + h * x0[e] / sqrt(1 + 80.0 * 80.0))));
    CHECK(g.calls == 0 && st.nfe == 0 && diff < 1e-12, "AFS Euler step: %d calls, diff %.3g",
          g.calls, diff);
}

/* Dynamic thresholding: a denoiser that answers 3 everywhere is read as 1 (the 0.995 quantile of
 * |D| is 3: clip to [-3, 3], divide by 3); one first-order DPM-Solver++ step then moves x to
 * (t1/t0) x + (1 - t1/t0) * 1. Values inside [-1, 1] pass unchanged. */
static void const_denoise(void *user, const float *x, const double *sigma, float *out, int N, size_t dim,
                          float *feat)
{
    for (size_t e = 0; e < (size_t)N * dim; e++) out[e] = *(const float *)user;
}

static void test_thresholding(void)
{
    const float values[2] = {3.0f, -0.5f};
    const double seen[2] = {1.0, -0.5};
    for (int v = 0; v < 2; v++) {
        SolverOpts o = solver_opts_default();
        o.steps = 2;
        double x[GAUSS_N * GAUSS_DIM], x0[GAUSS_N * GAUSS_DIM];
        gauss_start(o.sigma_max, x0);
        memcpy(x, x0, sizeof x);
        solver_sample(SOLVER_DPMPP2M, &o, const_denoise, (void *)&values[v], x, GAUSS_N,
                      GAUSS_DIM, NULL);
        double r = o.sigma_min / o.sigma_max, diff = 0;
        for (int e = 0; e < GAUSS_N * GAUSS_DIM; e++)
            diff = fmax(diff, fabs(x[e] - (r * x0[e] + (1 - r) * seen[v])));
        CHECK(diff < 1e-12, "thresholding of D = %g: diff %.3g", values[v], diff);
    }
}

/* ---- (d) names and bad options ---- */

static void test_names_and_errors(void)
{
    for (int k = 0; k < SCHEDULE_KIND_COUNT; k++)
        CHECK(schedule_kind_from_name(schedule_kind_name(k)) == k, "schedule name %d", k);
    for (int k = 0; k < SOLVER_KIND_COUNT; k++)
        CHECK(solver_kind_from_name(solver_kind_name(k)) == k, "solver name %d", k);
    CHECK(solver_kind_from_name("heun") == SOLVER_HEUN, "heun");
    CHECK(schedule_kind_from_name("time_uniform") == SCHEDULE_TIME_UNIFORM, "time_uniform");

    CHECK(schedule_kind_from_name("karras") == -1 && strstr(cm_errmsg(), "karras"),
          "unknown schedule: %s", cm_errmsg());
    printf("bad schedule name: %s\n", cm_errmsg());
    CHECK(solver_kind_from_name("Heun") == -1 && strstr(cm_errmsg(), "Heun"),
          "unknown solver: %s", cm_errmsg());
    printf("bad solver name: %s\n", cm_errmsg());

    double t[4];
    CHECK(schedule_steps(SCHEDULE_POLYNOMIAL, 1, 0.002, 80, 7, t) == -1, "n = 1 accepted");
    CHECK(schedule_steps(SCHEDULE_LOGSNR, 4, 80, 0.002, 7, t) == -1, "sigma_min > sigma_max");
    CHECK(schedule_steps(SCHEDULE_POLYNOMIAL, 4, 0, 80, 7, t) == -1, "sigma_min = 0 accepted");
    CHECK(schedule_steps(SCHEDULE_TIME_UNIFORM, 4, 0.002, 80, 0, t) == -1, "rho = 0 accepted");

    Gauss g;
    gauss_init(&g);
    double x[GAUSS_N * GAUSS_DIM];
    gauss_start(80, x);
    SolverOpts o = solver_opts_default();
    o.nfe = 35;
    CHECK(solver_sample(SOLVER_DPM2, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1 &&
          g.calls == 0, "dpm2 with NFE 35 ran");
    printf("dpm2 --nfe 35: %s\n", cm_errmsg());
    o.nfe = 1;
    o.denoise_to_zero = true;
    CHECK(solver_sample(SOLVER_HEUN, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1,
          "heun with NFE 1 ran");
    printf("heun --nfe 1 with denoise_to_zero: %s\n", cm_errmsg());
    o = solver_opts_default();
    CHECK(solver_sample(SOLVER_EULER, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1,
          "neither steps nor NFE set, but it ran");
    o.steps = 5;
    o.ipndm_order = 5;
    CHECK(solver_sample(SOLVER_IPNDM, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1,
          "ipndm order 5 ran");
    printf("ipndm order 5: %s\n", cm_errmsg());
    CHECK(g.calls == 0, "a rejected run called the denoiser %d times", g.calls);
}

/* ---- (e) inversion ---- */

enum { GAUSS_E = GAUSS_N * GAUSS_DIM };

/* x at sigma_0: a draw from the noised data, mu + sqrt(s^2 + sigma_0^2) z. */
static void gauss_start_low(const Gauss *g, double sigma0, double *x)
{
    float z[GAUSS_E];
    rng_normal(&(Rng){.seed = 20240612, .stream = 0, .step = 0}, z, GAUSS_N, 0, GAUSS_DIM);
    for (int e = 0; e < GAUSS_E; e++) {
        int k = e % GAUSS_DIM;
        x[e] = g->mu[k] + sqrt(g->s[k] * g->s[k] + sigma0 * sigma0) * z[e];
    }
}

/* The exact PF-ODE flow of the Gaussian data from sigma a to sigma b, either way. */
static double gauss_flow(const Gauss *g, int k, double x, double a, double b)
{
    double s2 = g->s[k] * g->s[k];
    return g->mu[k] + (x - g->mu[k]) * sqrt(s2 + b * b) / sqrt(s2 + a * a);
}

typedef struct InvertErrors {
    double up;                 /* max |x(80) - exact| after the inversion */
    double round_trip;         /* max |x(sigma_0) - start| after inverting and sampling back */
    int calls;
} InvertErrors;

static InvertErrors invert_errors(SolverKind kind, const SolverOpts *o)
{
    Gauss g;
    gauss_init(&g);
    double x0[GAUSS_E], x[GAUSS_E];
    gauss_start_low(&g, o->sigma_min, x0);
    memcpy(x, x0, sizeof x);
    InvertErrors r = {0};
    SolverStats st;
    if (solver_invert(kind, o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, &st) < 0) {
        printf("  %s\n", cm_errmsg());
        return (InvertErrors){NAN, NAN, -1};
    }
    r.calls = g.calls;
    for (int e = 0; e < GAUSS_E; e++)
        r.up = fmax(r.up, fabs(x[e] - gauss_flow(&g, e % GAUSS_DIM, x0[e], o->sigma_min,
                                                 o->sigma_max)));
    solver_sample(kind, o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL);
    for (int e = 0; e < GAUSS_E; e++) r.round_trip = fmax(r.round_trip, fabs(x[e] - x0[e]));
    return r;
}

static void test_invert_convergence(void)
{
    enum { NK = 4 };
    const struct { SolverKind kind; int k0; double expect_up, expect_trip; } cases[] = {
        {SOLVER_EULER, 32, 1, 1}, {SOLVER_HEUN, 32, 2, 3},
    };
    printf("inversion 0.07 -> 80 on the reversed EDM grid (rho 7): max |x(80) - exact| and the "
           "round trip's max |x(0.07) - start|\n");
    printf("%-6s %-11s %9s %9s %9s %9s  %5s %6s\n", "solver", "error", "K=32", "K=64", "K=128",
           "K=256", "fit", "extrap");
    for (size_t c = 0; c < CM_ARRAY_LEN(cases); c++) {
        SolverOpts o = solver_opts_default();
        o.sigma_min = 0.07;
        int K[NK];
        double up[NK], trip[NK];
        for (int j = 0; j < NK; j++) {
            K[j] = cases[c].k0 << j;
            o.steps = K[j] + 1;
            InvertErrors r = invert_errors(cases[c].kind, &o);
            up[j] = r.up;
            trip[j] = r.round_trip;
            int per_step = cases[c].kind == SOLVER_HEUN ? 2 : 1;
            CHECK(r.calls == per_step * K[j], "%s inversion over %d steps: %d calls",
                  solver_kind_name(cases[c].kind), K[j], r.calls);
        }
        const double *errs[2] = {up, trip};
        const char *labels[2] = {"up", "round trip"};
        const double expect[2] = {cases[c].expect_up, cases[c].expect_trip};
        for (int w = 0; w < 2; w++) {
            const double *err = errs[w];
            double fit = fitted_order(K, err, NK - 3, 3);
            double extrap = 2 * log2(err[NK - 2] / err[NK - 1]) - log2(err[NK - 3] / err[NK - 2]);
            printf("%-6s %-11s %9.2e %9.2e %9.2e %9.2e  %5.2f %6.2f\n",
                   solver_kind_name(cases[c].kind), labels[w], err[0], err[1], err[2], err[3],
                   fit, extrap);
            CHECK(isfinite(fit) && fabs(fit - expect[w]) <= FIT_TOL,
                  "%s inversion (%s): fitted order %.2f, expected %.0f",
                  solver_kind_name(cases[c].kind), labels[w], fit, expect[w]);
            CHECK(isfinite(extrap) && fabs(extrap - expect[w]) <= EXTRAP_TOL,
                  "%s inversion (%s): extrapolated order %.2f, expected %.0f",
                  solver_kind_name(cases[c].kind), labels[w], extrap, expect[w]);
        }
    }
    printf("\n");
}

/* One upward Euler step written out, the NFE by the nfe option, explicit times against the
 * reversed grid, and what inversion refuses. */
static void test_invert_steps_and_errors(void)
{
    Gauss g;
    gauss_init(&g);
    double x0[GAUSS_E], x[GAUSS_E];
    gauss_start_low(&g, 0.07, x0);
    memcpy(x, x0, sizeof x);
    const double up2[2] = {0.07, 80};
    SolverStats st;
    CHECK(solver_invert_times(SOLVER_EULER, up2, 2, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM,
                              &st) == 0, "%s", cm_errmsg());
    double diff = 0;
    for (int e = 0; e < GAUSS_E; e++) {
        int k = e % GAUSS_DIM;
        double s2 = g.s[k] * g.s[k];
        double D = (float)(g.mu[k] + s2 / (s2 + 0.07 * 0.07) * ((float)x0[e] - g.mu[k]));
        diff = fmax(diff, fabs(x[e] - (x0[e] + (80 - 0.07) * (x0[e] - D) / 0.07)));
    }
    CHECK(g.calls == 1 && st.nfe == 1 && st.steps == 2 && diff < 1e-9,
          "one Euler step 0.07 -> 80: %d calls, stats %d NFE, diff %.3g", g.calls, st.nfe, diff);

    /* heun at NFE 4: 3 time points, 0.07 -> the reversed grid's middle -> 80. */
    SolverOpts o = solver_opts_default();
    o.sigma_min = 0.07;
    o.nfe = 4;
    double t[3], ti[3], xa[GAUSS_E], xb[GAUSS_E];
    schedule_steps(o.schedule, 3, o.sigma_min, o.sigma_max, o.rho, t);
    for (int i = 0; i < 3; i++) ti[i] = t[2 - i];
    memcpy(xa, x0, sizeof xa);
    memcpy(xb, x0, sizeof xb);
    gauss_init(&g);
    CHECK(solver_invert(SOLVER_HEUN, &o, gauss_denoise, &g, xa, GAUSS_N, GAUSS_DIM, &st) == 0 &&
          st.nfe == 4 && st.steps == 3 && g.calls == 4, "heun inversion at NFE 4: %d NFE, %d "
          "points, %d calls", st.nfe, st.steps, g.calls);
    solver_invert_times(SOLVER_HEUN, ti, 3, gauss_denoise, &g, xb, GAUSS_N, GAUSS_DIM, NULL);
    CHECK(memcmp(xa, xb, sizeof xa) == 0, "explicit ascending times differ from the reversed grid");
    o.nfe = 5;
    CHECK(solver_invert(SOLVER_HEUN, &o, gauss_denoise, &g, xa, GAUSS_N, GAUSS_DIM, NULL) == -1,
          "heun inversion at NFE 5 ran");

    gauss_init(&g);
    o.nfe = 4;
    CHECK(solver_invert(SOLVER_DPM2, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1 &&
          strstr(cm_errmsg(), "dpm2"), "dpm2 inversion ran");
    printf("dpm2 inversion: %s\n", cm_errmsg());
    o.afs = true;
    CHECK(solver_invert(SOLVER_EULER, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == -1,
          "inversion with afs ran");
    printf("inversion with afs: %s\n", cm_errmsg());
    const double down[3] = {0.07, 15, 10}, zero[2] = {0, 80};
    CHECK(solver_invert_times(SOLVER_HEUN, down, 3, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM,
                              NULL) == -1, "times 0.07, 15, 10 accepted for inversion");
    printf("inversion times 0.07, 15, 10: %s\n", cm_errmsg());
    CHECK(solver_invert_times(SOLVER_HEUN, zero, 2, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM,
                              NULL) == -1, "an inversion from sigma 0 accepted");
    CHECK(g.calls == 0, "a rejected inversion called the denoiser %d times", g.calls);
}

/* ---- (f) the per-step observer ---- */

typedef struct Trace {
    int calls, bad_index;
    double sigma[64];
    double last[GAUSS_E];
} Trace;

static void trace_step(void *user, int i, double sigma, const double *x, int N, size_t dim)
{
    Trace *tr = user;
    if (i != tr->calls || N != GAUSS_N || dim != GAUSS_DIM) tr->bad_index++;
    if (tr->calls < 64) tr->sigma[tr->calls] = sigma;
    tr->calls++;
    memcpy(tr->last, x, sizeof tr->last);
}

/* o observed by tr over n time points of o's grid, written to t. */
static void trace_setup(SolverOpts *o, Trace *tr, int n, double *t)
{
    memset(tr, 0, sizeof *tr);
    o->steps = n;
    o->on_step = trace_step;
    o->on_step_user = tr;
    schedule_steps(o->schedule, n, o->sigma_min, o->sigma_max, o->rho, t);
}

static void test_on_step(void)
{
    Gauss g;
    gauss_init(&g);
    Trace tr;
    double t[7], x[GAUSS_E];
    for (int kind = 0; kind < SOLVER_KIND_COUNT; kind++)
        for (int z = 0; z < 2; z++) {
            SolverOpts o = solver_opts_default();
            o.denoise_to_zero = z;
            trace_setup(&o, &tr, 7, t);
            gauss_start(o.sigma_max, x);
            CHECK(solver_sample(kind, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL) == 0, "%s", cm_errmsg());
            int same_t = 0;
            for (int i = 0; i < 7; i++) same_t += tr.sigma[i] == t[i];
            CHECK(tr.calls == 7 + z && tr.bad_index == 0 && same_t == 7 && (!z || tr.sigma[7] == 0) &&
                  memcmp(tr.last, x, sizeof x) == 0,
                  "%s z=%d: %d calls (want %d), %d out of order, %d sigmas of the grid, last state %s",
                  solver_kind_name(kind), z, tr.calls, 7 + z, tr.bad_index, same_t,
                  memcmp(tr.last, x, sizeof x) ? "differs" : "is the result");
        }
    SolverOpts o = solver_opts_default();
    o.sigma_min = 0.07;
    trace_setup(&o, &tr, 5, t);
    gauss_start_low(&g, 0.07, x);
    solver_invert(SOLVER_HEUN, &o, gauss_denoise, &g, x, GAUSS_N, GAUSS_DIM, NULL);
    int ascending = 0;
    for (int i = 0; i < 5; i++) ascending += tr.sigma[i] == t[4 - i];
    CHECK(tr.calls == 5 && ascending == 5 && memcmp(tr.last, x, sizeof x) == 0,
          "heun inversion: %d calls, %d sigmas of the ascending grid", tr.calls, ascending);
}

int main(void)
{
    test_schedule_vectors();
    test_convergence();
    test_nfe_counts();
    test_nfe_mapping();
    test_edm_heun();
    test_afs_step();
    test_thresholding();
    test_names_and_errors();
    test_invert_convergence();
    test_invert_steps_and_errors();
    test_on_step();
    return test_summary("solvers");
}
