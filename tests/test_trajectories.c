/* test_trajectories.c CMLAB: the PCA of sampling trajectories (src/eval/trajectories.h) and
 * `cmlab trajectories`.
 *   (a) trajectory_pca against closed forms: points on a line hold all their variance in one
 *       component; points c + a_i u + b_i v + g_i w with orthonormal u, v, w (random directions in
 *       R^D) and mutually orthogonal, zero-mean a, b, g (cos t, sin t, cos 2t on a uniform circle
 *       of t, scaled 4, 2, 1) have the fractions 16/21, 4/21, 1/21 exactly, far from the origin
 *       (centring) and with m = 41 points (the Jacobi solver on a 41 x 41 Gram matrix);
 *   (b) whole trajectories of the Gaussian PF-ODE through the solvers' on_step observer: for
 *       data N(mu, s^2 I) the exact denoiser is linear, D = mu + s^2/(s^2 + sigma^2) (x - mu), so
 *       every Heun state is mu + c_i (x_T - mu): one component holds all the variance; with two
 *       groups of dimensions of different s the states lie in a plane (two components, the first
 *       well below 1);
 *   (c) the CLI on a tiny randomly initialised EDM checkpoint: exit 0, pca.json, pca.csv and
 *       pca.svg written, the printed fractions those of the same trajectories recomputed here
 *       (the noise of (seed, sample i) drawn here, the solver run on the whole batch at once, the
 *       states recorded by this file's own observer); bad arguments exit 2.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "common.h"
#include "eval/trajectories.h"
#include "fixture.h"
#include "io/checkpoint.h"
#include "train/model.h"

/* ---- (a) closed forms ---- */

/* k orthonormal random directions in R^dim (Gram-Schmidt of normal draws), into u[k, dim]. */
static void orthonormal(double *u, int k, size_t dim, uint64_t seed)
{
    float *z = cm_malloc((size_t)k * dim * sizeof(float));
    rng_normal(&(Rng){.seed = seed, .stream = 0, .step = 0}, z, k, 0, dim);
    for (int a = 0; a < k; a++) {
        double *v = u + (size_t)a * dim;
        for (size_t e = 0; e < dim; e++) v[e] = z[(size_t)a * dim + e];
        for (int b = 0; b < a; b++) {
            double dot = 0;
            for (size_t e = 0; e < dim; e++) dot += v[e] * u[(size_t)b * dim + e];
            for (size_t e = 0; e < dim; e++) v[e] -= dot * u[(size_t)b * dim + e];
        }
        double norm = 0;
        for (size_t e = 0; e < dim; e++) norm += v[e] * v[e];
        for (size_t e = 0; e < dim; e++) v[e] /= sqrt(norm);
    }
    free(z);
}

static void test_closed_forms(void)
{
    enum { D = 50, M = 41 };
    double u[3 * D], pts[M * D], frac[M];
    orthonormal(u, 3, D, 11);

    /* A line: c + (i^2 - 3 i) u, unevenly spaced. */
    for (int i = 0; i < M; i++)
        for (int e = 0; e < D; e++) pts[i * D + e] = 100.0 + (double)(i * i - 3 * i) * u[e];
    trajectory_pca(pts, M, D, frac);
    double rest = 0;
    for (int k = 1; k < M; k++) rest += frac[k];
    CHECK(fabs(frac[0] - 1) < 1e-12 && rest < 1e-12, "a line: top fraction %.15f, the rest %.3g", frac[0], rest);

    /* Three orthogonal directions with variances in the ratio 16 : 4 : 1. */
    const double want[3] = {16.0 / 21, 4.0 / 21, 1.0 / 21};
    for (int i = 0; i < M; i++) {
        double t = 2 * M_PI * i / M, a = 4 * cos(t), b = 2 * sin(t), g = cos(2 * t);
        for (int e = 0; e < D; e++)
            pts[i * D + e] = 100.0 * (e % 3) + a * u[e] + b * u[D + e] + g * u[2 * D + e];
    }
    trajectory_pca(pts, M, D, frac);
    double err = 0, sum = 0;
    for (int k = 0; k < M; k++) {
        err = fmax(err, fabs(frac[k] - (k < 3 ? want[k] : 0)));
        sum += frac[k];
    }
    CHECK(err < 1e-12 && fabs(sum - 1) < 1e-12, "16:4:1 in R^%d, %d points: fractions %.15f %.15f %.15f, max error %.3g",
          D, M, frac[0], frac[1], frac[2], err);
    printf("closed forms: 16:4:1 -> %.12f %.12f %.12f (exact 0.761904761905 0.190476190476 0.047619047619)\n",
           frac[0], frac[1], frac[2]);

    /* Summaries: the mean of the fractions, the mean and lowest top-k. */
    TrajSummary s;
    traj_summary_init(&s, 3, D);
    const double f1[3] = {0.5, 0.3, 0.2}, f2[3] = {0.9, 0.1, 0};
    traj_summary_add(&s, f1);
    traj_summary_add(&s, f2);
    CHECK(s.n == 2 && fabs(s.mean_frac[0] - 0.7) < 1e-15 && fabs(s.mean_top[1] - 0.9) < 1e-15 &&
          fabs(s.min_top[1] - 0.8) < 1e-15 && fabs(s.min_top[0] - 0.5) < 1e-15 && fabs(s.mean_top[2] - 1) < 1e-15,
          "summary: mean %g, top-2 mean %g, top-2 lowest %g", s.mean_frac[0], s.mean_top[1], s.min_top[1]);
}

/* ---- (b) Gaussian PF-ODE trajectories ---- */

enum { G_N = 3, G_DIM = 16, G_STEPS = 40 };

typedef struct Gauss { double mu[G_DIM], s[G_DIM]; } Gauss;

static void gauss_denoise(void *user, const float *x, const double *sigma, float *out, int N, size_t dim,
                          float *feat)
{
    const Gauss *g = user;
    for (int b = 0; b < N; b++)
        for (size_t k = 0; k < dim; k++) {
            double s2 = g->s[k] * g->s[k];
            size_t e = (size_t)b * dim + k;
            out[e] = (float)(g->mu[k] + s2 / (s2 + sigma[b] * sigma[b]) * (x[e] - g->mu[k]));
        }
}

/* This file's own recorder: pts [N, m, dim]. */
typedef struct Rec { double *pts; int m, calls; } Rec;

static void rec_step(void *user, int i, double sigma, const double *x, int N, size_t dim)
{
    Rec *r = user;
    for (int b = 0; b < N; b++)
        for (size_t e = 0; e < dim; e++) r->pts[((size_t)b * r->m + i) * dim + e] = x[(size_t)b * dim + e];
    r->calls++;
}

/* The mean top-1 and top-2 fractions of G_N Heun trajectories of the Gaussian with these s. */
static void gauss_fractions(const Gauss *g, double *top1, double *top2)
{
    enum { M = G_STEPS + 1 };
    SolverOpts o = solver_opts_default();
    o.steps = M;
    Rec r = {.pts = cm_malloc((size_t)G_N * M * G_DIM * sizeof(double)), .m = M};
    o.on_step = rec_step;
    o.on_step_user = &r;
    double x[G_N * G_DIM], frac[M];
    float z[G_N * G_DIM];
    rng_normal(&(Rng){.seed = 5, .stream = 0, .step = 0}, z, G_N, 0, G_DIM);
    for (int e = 0; e < G_N * G_DIM; e++) x[e] = 80.0 * z[e];
    CHECK(solver_sample(SOLVER_HEUN, &o, gauss_denoise, (void *)g, x, G_N, G_DIM, NULL) == 0 && r.calls == M,
          "Gaussian trajectories: %s, %d states recorded", cm_errmsg(), r.calls);
    *top1 = *top2 = 0;
    for (int b = 0; b < G_N; b++) {
        trajectory_pca(r.pts + (size_t)b * M * G_DIM, M, G_DIM, frac);
        *top1 += frac[0] / G_N;
        *top2 += (frac[0] + frac[1]) / G_N;
    }
    free(r.pts);
}

static void test_gaussian_trajectories(void)
{
    Gauss g;
    for (int k = 0; k < G_DIM; k++) g.mu[k] = 0.3 * sin(k + 1.0), g.s[k] = 0.5;
    double top1, top2;
    gauss_fractions(&g, &top1, &top2);
    /* float32 at the denoiser's input bends the line by ~1e-7 relative: 1e-9 of the variance. */
    CHECK(1 - top1 < 1e-9, "Gaussian data with one s: top-1 fraction %.15f, want 1", top1);
    printf("Heun on N(mu, 0.25 I): top-1 fraction 1 - %.2g\n", 1 - top1);
    for (int k = 0; k < G_DIM; k++) g.s[k] = k < G_DIM / 2 ? 0.1 : 1.0;
    gauss_fractions(&g, &top1, &top2);
    CHECK(1 - top2 < 1e-9 && top1 < 1 - 1e-6, "two groups of s: top-1 %.12f (want < 1), top-2 %.15f (want 1)", top1,
          top2);
    printf("Heun on two groups (s = 0.1, 1): top-1 %.9f, top-2 1 - %.2g\n", top1, 1 - top2);
}

/* ---- (c) the CLI ---- */

static const char *cmlab;

static int run(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s trajectories %s > traj_test/out.txt 2>&1", cmlab, args);
    int st = system(cmd);
    size_t n;
    char *out = fixture_read_file("traj_test/out.txt", &n);
    printf("$ cmlab trajectories %s\n%s", args, out ? out : "");
    free(out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A number after "key": in text, NaN if absent. */
static double json_number(const char *text, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = text ? strstr(text, pat) : NULL;
    return p ? atof(p + strlen(pat)) : NAN;
}

static const char *CONFIG = "[experiment]\nmethod = edm\nseed = 3\n[data]\ndataset = mnist\n"
                            "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n";

/* A randomly initialised EDM checkpoint of CONFIG; its path into path. */
static void tiny_checkpoint(char *path, size_t len)
{
    Config cfg;
    CM_ASSERT(config_from_string(&cfg, CONFIG, "tiny") == 0, "%s", cm_errmsg());
    int C, H, W;
    CM_ASSERT(model_image_shape(&cfg, &C, &H, &W) == 0, "%s", cm_errmsg());
    UNetConfig u;
    model_unet_config(&cfg, C, H, W, &u);
    UNet net;
    CM_ASSERT(unet_init(&net, &u) == 0, "%s", cm_errmsg());
    float *w = params_buffer(&net.ps);
    params_randomize(&net.ps, w, 7);
    char *text = config_to_string(&cfg);
    CkptState s = {.ps = &net.ps, .step = 1, .method = "edm", .config = text, .world_size = 1};
    ckpt_add_weights(&s, "online", w);
    CM_ASSERT(ckpt_save("traj_test/ckpt", &s, path, len) == 0, "%s", cm_errmsg());
    free(text);
    free(w);
    unet_free(&net);
}

/* The mean top-1..3 fractions of n trajectories of the checkpoint, recomputed without
 * trajectories.c's loop: the noise of (seed, STREAM_SAMPLE, sample i), heun on the whole batch. */
static void recompute(const char *path, int n, int steps, uint64_t seed, double top[3])
{
    Config cfg;
    Model m;
    CM_ASSERT(model_load(&m, &cfg, path, NULL) == 0, "%s", cm_errmsg());
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    Sampler s = model_sampler(&m, &ctx);
    size_t dim = (size_t)m.C * m.H * m.W;
    int M = steps + 1;
    float *z = cm_malloc((size_t)n * dim * sizeof(float));
    double *x = cm_malloc((size_t)n * dim * sizeof(double)), frac[TRAJ_MAX_POINTS];
    rng_normal(&(Rng){.seed = seed, .stream = STREAM_SAMPLE, .step = 0}, z, n, 0, dim);
    for (size_t e = 0; e < (size_t)n * dim; e++) x[e] = cfg.model.sigma_max * z[e];
    SolverOpts o = sample_solver_opts(&cfg);
    o.nfe = 0;
    o.steps = M;
    o.afs = o.denoise_to_zero = false;
    Rec r = {.pts = cm_malloc((size_t)n * M * dim * sizeof(double)), .m = M};
    o.on_step = rec_step;
    o.on_step_user = &r;
    CHECK(solver_sample(SOLVER_HEUN, &o, sample_denoise, &s, x, n, dim, NULL) == 0, "%s", cm_errmsg());
    top[0] = top[1] = top[2] = 0;
    for (int b = 0; b < n; b++) {
        trajectory_pca(r.pts + (size_t)b * M * dim, M, dim, frac);
        for (int k = 0; k < 3; k++) top[k] += (frac[0] + (k > 0 ? frac[1] : 0) + (k > 1 ? frac[2] : 0)) / n;
    }
    free(z);
    free(x);
    free(r.pts);
    ctx_free(&ctx);
    model_free(&m);
}

static void test_cli(void)
{
    char path[600], args[900];
    tiny_checkpoint(path, sizeof path);
    snprintf(args, sizeof args, "%s --pca --n 3 --steps 4 --out traj_test/pca", path);
    int rc = run(args);
    CHECK(rc == 0, "cmlab trajectories exits %d", rc);
    struct stat st;
    const char *files[] = {"traj_test/pca/pca.json", "traj_test/pca/pca.csv", "traj_test/pca/pca.svg"};
    for (int i = 0; i < 3; i++) CHECK(stat(files[i], &st) == 0 && st.st_size > 50, "%s is missing", files[i]);
    size_t n;
    char *json = fixture_read_file("traj_test/pca/pca.json", &n), *svg = fixture_read_file("traj_test/pca/pca.svg", &n);
    double top[3];
    recompute(path, 3, 4, 3, top);
    const char *keys[3] = {"top1", "top2", "top3"};
    for (int k = 0; k < 3; k++)
        CHECK(fabs(json_number(json, keys[k]) - top[k]) < 1e-8, "pca.json %s = %.9g, recomputed %.9g", keys[k],
              json_number(json, keys[k]), top[k]);
    CHECK(json_number(json, "n") == 3 && json_number(json, "points") == 5 && json_number(json, "steps") == 4 &&
          json_number(json, "dim") == 784 && json_number(json, "seed") == 3, "pca.json's run fields");
    CHECK(svg && strstr(svg, "<svg") && strstr(svg, "</svg>") && strstr(svg, "<polyline"), "pca.svg is no chart");
    char *csv = fixture_read_file("traj_test/pca/pca.csv", &n);
    int lines = 0;
    for (size_t i = 0; csv && i < n; i++) lines += csv[i] == '\n';
    CHECK(lines == 6 && strncmp(csv, "component,", 10) == 0, "pca.csv has %d lines, want a header and 5 rows", lines);
    free(csv);
    free(json);
    free(svg);

    /* Bad arguments: exit 2 with a message, nothing else to do. */
    const char *bad[][2] = {
        {"%s --n 3", "--pca"},                       {"%s --pca --steps 0", "--steps"},
        {"%s --pca --steps 500", "--steps"},          {"%s --pca --solver rk4", "rk4"},
        {"%s --pca --n 0", "--n"},                    {"%s --pca --bogus", "usage"},
        {"traj_test/none.h5 --pca", "traj_test/none.h5"}, {"%s %s --pca", "usage"},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++) {
        snprintf(args, sizeof args, bad[i][0], path, path);
        rc = run(args);
        char *out = fixture_read_file("traj_test/out.txt", &n);
        CHECK(rc == 2 && out && strstr(out, bad[i][1]), "'%s': exit %d, want 2 and a message naming '%s'", args, rc,
              bad[i][1]);
        free(out);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CMLAB\n", argv[0]);
        return CM_EXIT_INPUT;
    }
    cmlab = argv[1];
    CM_ASSERT(system("rm -rf traj_test && mkdir -p traj_test") == 0, "cannot make traj_test");
    test_closed_forms();
    test_gaussian_trajectories();
    test_cli();
    return test_summary("trajectories");
}
