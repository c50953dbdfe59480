/* trajectories.c: trajectories of an ODE solver and their PCA (trajectories.h). */
#include "eval/trajectories.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "eval/chart.h"
#include "eval/records.h"
#include "io/atomic.h"

/* ---- the PCA of one trajectory ---- */

static int cmp_desc(const void *a, const void *b)
{
    double u = *(const double *)a, v = *(const double *)b;
    return (u < v) - (u > v);
}

/* The eigenvalues of the symmetric a [m, m] (destroyed) into w[m]: cyclic Jacobi rotations, each
 * zeroing one off-diagonal pair (Numerical Recipes' rotation, t = sgn(theta)/(|theta| +
 * sqrt(theta^2 + 1)), the smaller root, so the rotation angle stays below pi/4), until the
 * off-diagonal mass is below 1e-30 of the whole. Quadratic convergence: a 41 x 41 Gram matrix
 * takes about 8 sweeps. */
static void jacobi_eigenvalues(double *a, int m, double *w)
{
    double total = 0;
    for (int k = 0; k < m * m; k++) total += a[k] * a[k];
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < m; p++)
            for (int q = p + 1; q < m; q++) off += 2 * a[p * m + q] * a[p * m + q];
        if (off <= 1e-30 * total) break;
        for (int p = 0; p < m; p++)
            for (int q = p + 1; q < m; q++) {
                double apq = a[p * m + q];
                if (apq == 0) continue;
                double theta = (a[q * m + q] - a[p * m + p]) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < m; k++) {      /* columns p and q */
                    double akp = a[k * m + p], akq = a[k * m + q];
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for (int k = 0; k < m; k++) {      /* rows p and q */
                    double apk = a[p * m + k], aqk = a[q * m + k];
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
            }
    }
    for (int k = 0; k < m; k++) w[k] = a[k * m + k];
}

void trajectory_pca(const double *pts, int m, size_t dim, double *frac)
{
    CM_ASSERT(m >= 2 && m <= TRAJ_MAX_POINTS, "trajectory_pca: %d points (2..%d)", m, TRAJ_MAX_POINTS);
    double *mean = cm_calloc(dim, sizeof *mean), *c = cm_malloc((size_t)m * dim * sizeof *c);
    double *gram = cm_malloc((size_t)m * m * sizeof *gram);
    for (int i = 0; i < m; i++)
        for (size_t e = 0; e < dim; e++) mean[e] += pts[(size_t)i * dim + e] / m;
    for (int i = 0; i < m; i++)
        for (size_t e = 0; e < dim; e++) c[(size_t)i * dim + e] = pts[(size_t)i * dim + e] - mean[e];
    for (int i = 0; i < m; i++)
        for (int j = i; j < m; j++) {
            double dot = 0;
            for (size_t e = 0; e < dim; e++) dot += c[(size_t)i * dim + e] * c[(size_t)j * dim + e];
            gram[i * m + j] = gram[j * m + i] = dot;
        }
    jacobi_eigenvalues(gram, m, frac);
    qsort(frac, (size_t)m, sizeof *frac, cmp_desc);
    double sum = 0;
    for (int k = 0; k < m; k++) {
        frac[k] = fmax(frac[k], 0.0);    /* rounding leaves the null directions at +-1e-16 sum */
        sum += frac[k];
    }
    for (int k = 0; k < m; k++) frac[k] = sum > 0 ? frac[k] / sum : 0;
    free(gram);
    free(mean);
    free(c);
}

/* ---- summaries ---- */

void traj_summary_init(TrajSummary *t, int m, size_t dim)
{
    memset(t, 0, sizeof *t);
    t->points = m;
    t->dim = dim;
    for (int k = 0; k < m; k++) t->min_top[k] = 1.0;
}

void traj_summary_add(TrajSummary *t, const double *frac)
{
    double top = 0;
    t->n++;
    for (int k = 0; k < t->points; k++) {
        top += frac[k];
        /* running means: exact for equal fractions, no sum to overflow precision over 1e6 runs */
        t->mean_frac[k] += (frac[k] - t->mean_frac[k]) / t->n;
        t->mean_top[k] += (top - t->mean_top[k]) / t->n;
        t->min_top[k] = fmin(t->min_top[k], top);
    }
}

/* ---- recording ---- */

typedef struct Recorder {
    double *pts;            /* [N, m, dim]: the piece's trajectories */
    int m;
} Recorder;

static void record_step(void *user, int i, double sigma, const double *x, int N, size_t dim)
{
    (void)sigma;
    Recorder *r = user;
    CM_ASSERT(i < r->m, "record_step: time point %d of %d", i, r->m);
    for (int b = 0; b < N; b++)
        memcpy(r->pts + ((size_t)b * r->m + i) * dim, x + (size_t)b * dim, dim * sizeof *x);
}

int trajectories_pca(const Sampler *s, SolverKind kind, const SolverOpts *o, int n, uint64_t seed,
                     bool progress, TrajSummary *out)
{
    int m = solver_resolve_steps(kind, o);
    if (m < 0) return -1;
    if (m > TRAJ_MAX_POINTS)
        return cm_fail("%d time points: trajectories take at most %d (%d steps)", m, TRAJ_MAX_POINTS,
                       TRAJ_MAX_POINTS - 1);
    if (o->denoise_to_zero) return cm_fail("trajectories end at sigma_min: turn denoise_to_zero off");
    size_t dim = (size_t)s->C * s->H * s->W;
    int piece = CM_MAX(1, CM_MIN(s->batch, n));
    Recorder rec = {.pts = cm_malloc((size_t)piece * m * dim * sizeof(double)), .m = m};
    float *img = cm_malloc((size_t)piece * dim * sizeof(float));
    double *frac = cm_malloc((size_t)m * sizeof *frac);
    SolverOpts oo = *o;
    oo.on_step = record_step;
    oo.on_step_user = &rec;
    traj_summary_init(out, m, dim);
    double t0 = cm_now();
    int rc = 0;
    for (int first = 0; first < n && rc == 0; first += piece) {
        int nb = CM_MIN(piece, n - first);
        rc = sample_ode_from(s, kind, &oo, first, nb, seed, img, NULL);
        for (int b = 0; b < nb && rc == 0; b++) {
            trajectory_pca(rec.pts + (size_t)b * m * dim, m, dim, frac);
            traj_summary_add(out, frac);
        }
        if (rc == 0 && progress) {
            printf("trajectories: %d/%d, top-2 fraction so far %.6f, %.0f s\n", out->n, n,
                   out->mean_top[1], cm_now() - t0);
            fflush(stdout);
        }
    }
    free(rec.pts);
    free(img);
    free(frac);
    return rc;
}

/* ---- files ---- */

static void json_list(FILE *f, const char *name, const double *v, int n)
{
    fprintf(f, "  \"%s\": [", name);
    for (int k = 0; k < n; k++) fprintf(f, "%s%.9g", k ? ", " : "", v[k]);
    fprintf(f, "]");
}

static int write_json(const char *path, const TrajSummary *t, const TrajMeta *meta)
{
    char tmp[1100];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    fprintf(f, "{\n  \"checkpoint\": ");
    eval_json_string(f, meta->checkpoint);
    fprintf(f, ",\n  \"weights\": ");
    eval_json_string(f, meta->weights);
    fprintf(f, ",\n  \"solver\": ");
    eval_json_string(f, meta->solver);
    fprintf(f, ",\n  \"schedule\": ");
    eval_json_string(f, meta->schedule);
    fprintf(f, ",\n  \"precision\": ");
    eval_json_string(f, meta->precision);
    fprintf(f, ",\n  \"rho\": %.9g,\n  \"sigma_min\": %.9g,\n  \"sigma_max\": %.9g,\n  \"seed\": %llu,\n",
            meta->rho, meta->sigma_min, meta->sigma_max, (unsigned long long)meta->seed);
    fprintf(f, "  \"n\": %d,\n  \"steps\": %d,\n  \"points\": %d,\n  \"dim\": %zu,\n", t->n, t->points - 1,
            t->points, t->dim);
    for (int k = 0; k < 3 && k < t->points; k++)
        fprintf(f, "  \"top%d\": %.9g,\n  \"top%d_min\": %.9g,\n", k + 1, t->mean_top[k], k + 1, t->min_top[k]);
    json_list(f, "mean_fraction", t->mean_frac, t->points);
    fprintf(f, ",\n");
    json_list(f, "mean_top", t->mean_top, t->points);
    fprintf(f, ",\n");
    json_list(f, "min_top", t->min_top, t->points);
    fprintf(f, "\n}\n");
    return atomic_commit(f, tmp, path, !ferror(f));
}

static int write_csv(const char *path, const TrajSummary *t)
{
    char tmp[1100];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    fprintf(f, "component,mean_fraction,mean_top_k,min_top_k\n");
    for (int k = 0; k < t->points; k++)
        fprintf(f, "%d,%.9g,%.9g,%.9g\n", k + 1, t->mean_frac[k], t->mean_top[k], t->min_top[k]);
    return atomic_commit(f, tmp, path, !ferror(f));
}

/* The fraction the top k components leave out, 1 - top_k, on a log axis: the top fractions
 * themselves all read 1.0000 at four digits. */
static int write_svg(const char *path, const TrajSummary *t)
{
    char tmp[1100], title[160];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    enum { SHOWN = 10 };
    int k_max = CM_MIN(SHOWN, t->points);
    double k[SHOWN], mean_left[SHOWN], most_left[SHOWN];
    for (int i = 0; i < k_max; i++) {
        k[i] = i + 1;
        mean_left[i] = 1 - t->mean_top[i];
        most_left[i] = 1 - t->min_top[i];
    }
    ChartSeries ser[2] = {{"mean", k, mean_left, k_max}, {"largest", k, most_left, k_max}};
    snprintf(title, sizeof title, "Variance the top k components leave out (%d trajectories, %d points)", t->n,
             t->points);
    chart_svg(f, title, "k principal components", "1 - top-k fraction", ser, 2, true);
    return atomic_commit(f, tmp, path, !ferror(f));
}

int trajectories_write(const char *dir, const TrajSummary *t, const TrajMeta *meta)
{
    if (cm_mkdir_p(dir)) return -1;
    char p[1024];
    snprintf(p, sizeof p, "%s/pca.json", dir);
    if (write_json(p, t, meta)) return -1;
    snprintf(p, sizeof p, "%s/pca.csv", dir);
    if (write_csv(p, t)) return -1;
    snprintf(p, sizeof p, "%s/pca.svg", dir);
    return write_svg(p, t);
}
