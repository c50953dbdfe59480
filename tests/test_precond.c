/* test_precond.c PRECOND.h5: the preconditioned network with its times on the tape
 * (precond_forward, src/train/precond.c) and the solvers' denoiser (sample_denoise,
 * src/train/sample.c).
 *
 * PRECOND.h5 is written by tests/torch/precond.py on every build (its docstring has the layout):
 * groups edm, cm and bcm, a small U-Net with random weights (bcm: two_times, Fourier features),
 * times from 0.002 to 80. For each group this test
 *   1. runs precond_forward with x, t (and u) requiring gradients, seeds gout, and compares the
 *      output, dx, every parameter gradient (the worst is named) and dt, du with the float64
 *      twin: each <= 1e-4, the time gradients per sample (each relative to its own size, so
 *      t = 80's small gradient counts as much as t = 0.002's large one);
 *   2. finite differences (gradcheck) of sum(out * gout) in s = ln t (and ln u), t = exp(s) on
 *      the tape: a step of the same fraction of the time at every scale from 0.002 to 80 (1%,
 *      0.05% for Fourier features);
 *   3. the output is bit for bit the same with the times on the tape, as host values
 *      (precond_apply, what the trainers and samplers call) and as a tensor without gradient;
 *      bcm: f(x, t, t) == x exactly.
 * Then, on the edm group's network, sample_denoise (the solvers' DenoiserFn) in chunks of 3:
 *   4. per-sample sigmas: a call with four different sigmas equals, sample by sample, calls
 *      with all four sigmas equal (bitwise);
 *   5. the bottleneck features it hands back equal the channel mean of the middle block of a
 *      direct unet_forward on c_in x with c_noise, and its D equals c_skip x + c_out F of that
 *      forward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "fixture.h"
#include "nn/mlp.h"
#include "sample/precond.h"
#include "sample/sample.h"

#define TOL 1e-4             /* relative error allowed against the float64 twin */
#define REL_FLOOR 1e-6       /* rel_error's floor */
#define FD_TOL 2e-3          /* finite differences in float32 */
#define FD_STEP 1e-2f        /* in ln t; positional features (frequencies <= 1) */
#define FD_STEP_FOURIER 5e-4f /* in ln t; Fourier features at scale 16 turn c_noise = ln(t)/4 by up
                               * to ~300 rad per unit, so 1% of t would be a step of ~0.75 rad */
#define DIRECT_TOL 1e-5      /* sample_denoise against a direct forward at another batch size */

typedef struct Case {
    char group[16];
    UNet net;
    PrecondParams pre;
    float *w, *g;
    float *x, *t, *u, *gout;   /* fixture arrays; u NULL but for bcm */
    int N, C, H, W;
} Case;

static float *read_array(Fixture *f, const char *group, const char *name, int *ndim, int *shape)
{
    char path[256];
    snprintf(path, sizeof path, "/%s/%s", group, name);
    return fixture_read(f, path, ndim, shape);
}

static bool case_load(Fixture *f, const char *group, Case *k)
{
    char obj[64], kind[16] = "";
    snprintf(obj, sizeof obj, "/%s", group);
    memset(k, 0, sizeof *k);
    snprintf(k->group, sizeof k->group, "%s", group);
    UNetConfig cfg;
    fixture_unet_config(f, obj, &cfg);
    int rc = unet_init(&k->net, &cfg);
    CHECK(rc == 0, "%s: unet_init: %s", group, cm_errmsg());
    if (rc != 0) return false;
    fixture_attr_str(f, obj, "kind", kind, sizeof kind);
    k->pre = (PrecondParams){strcmp(kind, "edm") == 0 ? PRECOND_EDM : strcmp(kind, "cm") == 0 ? PRECOND_CM : PRECOND_BCM,
                             fixture_attr_double(f, obj, "sigma_data", -1), fixture_attr_double(f, obj, "eps", -1)};
    k->w = params_buffer(&k->net.ps);
    k->g = params_buffer(&k->net.ps);
    snprintf(obj, sizeof obj, "/%s/weights/online", group);
    fixture_load_weights(f, obj, &k->net.ps, k->w);
    int ndim, shape[4];
    k->x = read_array(f, group, "x", &ndim, shape);
    k->N = shape[0], k->C = shape[1], k->H = shape[2], k->W = shape[3];
    k->t = read_array(f, group, "t", NULL, NULL);
    k->u = k->pre.kind == PRECOND_BCM ? read_array(f, group, "u", NULL, NULL) : NULL;
    k->gout = read_array(f, group, "gout", NULL, NULL);
    return true;
}

static void case_free(Case *k)
{
    free(k->w), free(k->g), free(k->x), free(k->t), free(k->u), free(k->gout);
    unet_free(&k->net);
}

static size_t case_dim(const Case *k) { return (size_t)k->C * k->H * k->W; }

/* max_i |a_i - b_i| / max(|b_i|, floor): every sample's gradient against its own size. */
static double rel_error_each(const float *a, const float *b, int n, double floor)
{
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / fmax(fabs((double)b[i]), floor);
        worst = isnan(e) ? INFINITY : fmax(worst, e);
    }
    return worst;
}

static void compare(const char *group, const char *what, double e, double tol)
{
    printf("  %-4s %-36s rel error %.2e\n", group, what, e);
    CHECK(e <= tol, "%s: %s rel error %.3e > %.0e", group, what, e, tol);
}

/* ---- 1. against the PyTorch twin ---- */

static void test_twin(Ctx *c, Fixture *f, Case *k)
{
    ctx_reset(c);
    memset(k->g, 0, k->net.ps.total * sizeof(float));
    Tensor *x = tensor_wrap(c, k->x, NULL, 4, SHAPE(k->N, k->C, k->H, k->W), true);
    Tensor *t = tensor_wrap(c, k->t, NULL, 1, SHAPE(k->N), true);
    Tensor *u = k->u ? tensor_wrap(c, k->u, NULL, 1, SHAPE(k->N), true) : NULL;
    WeightSet ws = {k->w, k->g};
    Tensor *out = precond_forward(c, &k->pre, &k->net, &ws, x, t, u, NULL, 0, NULL);
    tape_backward(c, out, k->gout);
    CHECK(t->grad && (!u || u->grad), "%s: no gradient reached %s", k->group, t->grad ? "u" : "t");
    if (!t->grad || (u && !u->grad)) return;

    float *want = read_array(f, k->group, "out", NULL, NULL);
    compare(k->group, "output", rel_error(out->data, want, out->n, REL_FLOOR), TOL);
    free(want);
    want = read_array(f, k->group, "grad_x", NULL, NULL);
    compare(k->group, "grad x", rel_error(x->grad, want, x->n, REL_FLOOR), TOL);
    free(want);
    want = read_array(f, k->group, "grad_t", NULL, NULL);
    compare(k->group, "grad t (per sample)", rel_error_each(t->grad, want, k->N, REL_FLOOR), TOL);
    free(want);
    if (u) {
        want = read_array(f, k->group, "grad_u", NULL, NULL);
        compare(k->group, "grad u (per sample)", rel_error_each(u->grad, want, k->N, REL_FLOOR), TOL);
        free(want);
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < k->net.ps.count; i++) {
        const Param *p = &k->net.ps.items[i];
        char path[256];
        snprintf(path, sizeof path, "/%s/grad/%s", k->group, p->name);
        want = fixture_read(f, path, NULL, NULL);
        double e = rel_error(k->g + p->offset, want, p->n, REL_FLOOR);
        free(want);
        if (!(e <= worst)) worst = isnan(e) ? INFINITY : e, worst_name = p->name;
    }
    char what[128];
    snprintf(what, sizeof what, "worst param grad (%s)", worst_name);
    compare(k->group, what, worst, TOL);
}

/* ---- 2. finite differences ---- */

/* in: x [N,C,H,W] (no gradient), ln t [N], and for bcm ln u [N]. */
static Tensor *fd_fn(Ctx *c, Tensor **in, void *user)
{
    const Case *k = user;
    WeightSet ws = {k->w, NULL};
    Tensor *u = k->u ? op_exp(c, in[2]) : NULL;
    return precond_forward(c, &k->pre, &k->net, &ws, in[0], op_exp(c, in[1]), u, NULL, 0, NULL);
}

static void test_fd(Case *k)
{
    int N = k->N;
    float *s = cm_malloc(2 * (size_t)N * sizeof(float)), *su = s + N;
    for (int i = 0; i < N; i++) {
        s[i] = logf(k->t[i]);
        su[i] = k->u ? logf(k->u[i]) : 0;
    }
    GradInput in[3] = {
        {k->x, 4, {N, k->C, k->H, k->W}, false},
        {s, 1, {N}, true},
        {su, 1, {N}, true},
    };
    float step = k->net.cfg.emb_type == UNET_EMB_FOURIER ? FD_STEP_FOURIER : FD_STEP;
    double e = gradcheck(fd_fn, k, k->u ? 3 : 2, in, k->gout, step, N);
    compare(k->group, k->u ? "finite differences in ln t, ln u" : "finite differences in ln t", e, FD_TOL);
    free(s);
}

/* ---- 3. the same bits on every path ---- */

static void test_bits(Ctx *c, Case *k)
{
    ctx_reset(c);
    WeightSet ws = {k->w, k->g};
    int N = k->N;
    Tensor *x = tensor_wrap(c, k->x, NULL, 4, SHAPE(N, k->C, k->H, k->W), false);
    Tensor *tg = tensor_wrap(c, k->t, NULL, 1, SHAPE(N), true), *tn = tensor_wrap(c, k->t, NULL, 1, SHAPE(N), false);
    Tensor *ug = k->u ? tensor_wrap(c, k->u, NULL, 1, SHAPE(N), true) : NULL;
    Tensor *un = k->u ? tensor_wrap(c, k->u, NULL, 1, SHAPE(N), false) : NULL;
    Tensor *a = precond_forward(c, &k->pre, &k->net, &ws, x, tg, ug, NULL, 0, NULL);
    Tensor *b = precond_forward(c, &k->pre, &k->net, &ws, x, tn, un, NULL, 0, NULL);
    size_t bytes = a->n * sizeof(float);
    bool same = memcmp(a->data, b->data, bytes) == 0;
    printf("  %-4s times on the tape vs as constants: %s\n", k->group, same ? "the same bits" : "DIFFERENT");
    CHECK(same, "%s: the output with the times on the tape differs from the one without", k->group);
    if (!k->u) {
        Tensor *h = precond_apply(c, &k->pre, &k->net, &ws, x, k->t, NULL, 0);
        same = memcmp(a->data, h->data, bytes) == 0;
        printf("  %-4s precond_apply (host times): %s\n", k->group, same ? "the same bits" : "DIFFERENT");
        CHECK(same, "%s: precond_apply differs from precond_forward", k->group);
        return;
    }
    Tensor *diag = precond_forward(c, &k->pre, &k->net, &ws, x, tg, tn, NULL, 0, NULL);
    same = memcmp(diag->data, k->x, bytes) == 0;
    printf("  %-4s f(x, t, t) == x: %s\n", k->group, same ? "exactly" : "NO");
    CHECK(same, "%s: f(x, t, t) differs from x", k->group);
}

/* ---- 4, 5. the solvers' denoiser ---- */

static void test_denoiser(Ctx *c, Case *k)
{
    int N = k->N, fdim;
    size_t dim = case_dim(k);
    Ctx sc;
    ctx_init(&sc, 4u << 20);
    Sampler s = {&k->net, k->pre, k->w, 3, k->C, k->H, k->W, &sc};   /* chunks of 3 and 1 */
    fdim = sampler_feature_dim(&s);
    const double sigma[4] = {0.02, 0.7, 3.0, 60.0};
    CM_ASSERT(N == 4, "test_denoiser: the fixture has %d samples, want 4", N);
    float *D = cm_malloc(2 * (size_t)N * dim * sizeof(float)), *D1 = D + (size_t)N * dim;
    float *feat = cm_malloc((size_t)N * fdim * sizeof(float));
    sample_denoise(&s, k->x, sigma, D, N, dim, feat);

    int differ = 0;
    for (int b = 0; b < N; b++) {
        double all[4] = {sigma[b], sigma[b], sigma[b], sigma[b]};
        sample_denoise(&s, k->x, all, D1, N, dim, NULL);
        differ += memcmp(D + b * dim, D1 + b * dim, dim * sizeof(float)) != 0;
    }
    printf("  %-4s per-sample sigmas vs one sigma per call: %d of %d samples differ\n", k->group, differ, N);
    CHECK(differ == 0, "%s: %d samples of a per-sample-sigma call differ from calls with one sigma", k->group, differ);

    ctx_reset(c);
    ctx_no_grad_begin(c);
    Tensor *xin = TENSOR_NEW(c, N, k->C, k->H, k->W), *cn = TENSOR_NEW(c, N);
    for (int b = 0; b < N; b++) {
        Precond q = precond_at(&k->pre, (float)sigma[b]);
        cn->data[b] = (float)q.c_noise;
        for (size_t e = 0; e < dim; e++) xin->data[b * dim + e] = k->x[b * dim + e] * (float)q.c_in;
    }
    WeightSet ws = {k->w, NULL};
    Tensor *mid = NULL, *F = unet_forward(c, &k->net, &ws, xin, cn, NULL, NULL, 0, &mid);
    Tensor *want = mlp_bottleneck_input(c, mid);
    CHECK(fdim == mid->shape[2] * mid->shape[3] && want->n == (size_t)N * fdim,
          "%s: sampler_feature_dim %d, bottleneck [%d,%d,%d,%d]", k->group, fdim, mid->shape[0], mid->shape[1],
          mid->shape[2], mid->shape[3]);
    compare(k->group, "bottleneck features vs direct forward", rel_error(feat, want->data, want->n, REL_FLOOR),
            DIRECT_TOL);
    for (int b = 0; b < N; b++) {
        Precond q = precond_at(&k->pre, (float)sigma[b]);
        for (size_t e = 0; e < dim; e++) {
            size_t j = b * dim + e;
            D1[j] = k->x[j] * (float)q.c_skip + F->data[j] * (float)q.c_out;
        }
    }
    compare(k->group, "D vs direct forward", rel_error(D, D1, (size_t)N * dim, REL_FLOOR), DIRECT_TOL);
    ctx_no_grad_end(c);
    free(D);
    free(feat);
    ctx_free(&sc);
}

int main(int argc, char **argv)
{
    CM_ASSERT(argc == 2, "usage: test_precond PRECOND.h5");
    setvbuf(stdout, NULL, _IOLBF, 0);   /* what passed and failed stays on screen if a check aborts */
    cm_set_threads(2);
    Fixture f;
    fixture_open(&f, argv[1]);
    Ctx c;
    ctx_init(&c, 16 << 20);
    const char *groups[] = {"edm", "cm", "bcm"};
    double t0 = cm_now();
    for (int i = 0; i < 3; i++) {
        Case k;
        printf("%s (%.1f s)\n", groups[i], cm_now() - t0);
        if (!case_load(&f, groups[i], &k)) continue;
        test_twin(&c, &f, &k);
        test_fd(&k);
        test_bits(&c, &k);
        if (k.pre.kind == PRECOND_EDM) test_denoiser(&c, &k);
        case_free(&k);
    }
    printf("%.1f s\n", cm_now() - t0);
    ctx_free(&c);
    fixture_close(&f);
    return test_summary("precond");
}
