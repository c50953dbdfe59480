/* test_ct_step.c CT_STEP.h5: one consistency training step (CT, iCT: ct_step_loss; CD:
 * cd_teacher_step + ct_step_loss; src/train/ct.c) against its PyTorch twin
 * (tests/torch/ct_step.py, whose docstring has the fixture layout).
 *
 * Cases: ct (l2 loss, uniform weight, a separate target weight set); ict (pseudo-Huber,
 * lam = 1/(t1 - t0), target = the online weights, dropout with the same masks in both passes);
 * cd (Heun teacher step, l2, target = online); cd_euler (Euler teacher step, pseudo-Huber, a
 * separate target with mu = 0.95, dropout). For each, this test
 *   1. builds the U-Net from the group's attributes and loads the online (and target, teacher)
 *      weights by parameter name, checking names and shapes both ways;
 *   2. CD: runs the teacher's ODE step and compares it with the twin's (xt);
 *   3. calls ct_step_loss with the fixture's x0, z, t1, t0, lam and dropout Rng, g zeroed;
 *   4. compares the loss and every parameter gradient (the worst is named): each <= 1e-4;
 *   5. checks that neither the online weights nor the target buffer changed, and, for separate
 *      targets, that ema_update(target, w, mu) reproduces PyTorch's
 *      targ.mul_(mu).add_(w, alpha = 1 - mu).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "train/ct.h"
#include "train/ct_schedule.h"

#define TOL 1e-4             /* relative error allowed against the float64 reference */
#define REL_FLOOR 1e-6       /* rel_error's floor */
#define EMA_TOL 1e-6         /* float32 EMA against PyTorch's float32 EMA (at most an ulp or so) */

static float *read_array(Fixture *f, const char *group, const char *name, int *ndim, int *shape)
{
    char path[256];
    snprintf(path, sizeof path, "/%s/%s", group, name);
    return fixture_read(f, path, ndim, shape);
}

/* Fills w from /<group>/<set>/<name>, checking names and shapes in both directions. */
static void load_weights(Fixture *f, const char *group, const char *set, const ParamSet *ps, float *w)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/%s/%s", group, set);
    fixture_load_weights(f, dir, ps, w);
}

/* Every parameter slice of got against /<group>/<set>/<name>; prints the worst. */
static void compare_params(Fixture *f, const char *group, const char *set, const char *what, const ParamSet *ps,
                           const float *got, double tol)
{
    char dir[256], buf[160];
    const char *worst_name;
    snprintf(dir, sizeof dir, "/%s/%s", group, set);
    double worst = fixture_worst_param_error(f, dir, ps, got, REL_FLOOR, &worst_name);
    CHECK(worst <= tol, "%s: %s of %s rel error %.3e > %.0e", group, what, worst_name, worst, tol);
    snprintf(buf, sizeof buf, "worst %s (%s)", what, worst_name);
    printf("  %-8s %-49s rel error %.2e\n", group, buf, worst);
}

static void test_case(Ctx *c, Fixture *f, const char *group)
{
    char obj[128], loss_name[32] = "";
    snprintf(obj, sizeof obj, "/%s", group);
    printf("%s\n", group);
    UNetConfig cfg;
    fixture_unet_config(f, obj, &cfg);
    UNet net;
    int rc = unet_init(&net, &cfg);
    CHECK(rc == 0, "%s: unet_init: %s", group, cm_errmsg());
    if (rc != 0) return;
    size_t n = net.ps.total;
    CHECK(unet_param_count(&net) == (size_t)fixture_attr_int(f, obj, "param_count", -1),
          "%s: parameter count %zu, PyTorch %ld", group, unet_param_count(&net),
          fixture_attr_int(f, obj, "param_count", -1));

    bool target_is_online = fixture_attr_int(f, obj, "target_is_online", -1) == 1;
    float *w = params_buffer(&net.ps), *g = params_buffer(&net.ps);
    float *target = target_is_online ? w : params_buffer(&net.ps);
    load_weights(f, group, "weights/online", &net.ps, w);
    if (!target_is_online) load_weights(f, group, "weights/target", &net.ps, target);
    memset(g, 0, n * sizeof(float));
    float *w_before = cm_malloc(n * sizeof(float)), *target_before = cm_malloc(n * sizeof(float));
    memcpy(w_before, w, n * sizeof(float));
    memcpy(target_before, target, n * sizeof(float));

    int ndim, shape[4];
    float *x0 = read_array(f, group, "x0", &ndim, shape), *z = read_array(f, group, "z", NULL, NULL);
    float *t1 = read_array(f, group, "t1", NULL, NULL), *t0 = read_array(f, group, "t0", NULL, NULL);
    float *lam = read_array(f, group, "lam", NULL, NULL);
    float *want_loss = read_array(f, group, "loss", NULL, NULL);
    CtBatch bt = {.x0 = x0, .z = z, .t1 = t1, .t0 = t0, .lam = lam,
                  .B = shape[0], .C = shape[1], .H = shape[2], .W = shape[3]};
    CHECK(ndim == 4 && bt.B == fixture_attr_int(f, obj, "B", -1) && bt.C == cfg.img_channels && bt.H == cfg.img_h &&
              bt.W == cfg.img_w,
          "%s: x0 has the wrong shape", group);

    fixture_attr_str(f, obj, "loss", loss_name, sizeof loss_name);
    CfgLoss loss = strcmp(loss_name, "l2") == 0 ? CFG_LOSS_L2 : CFG_LOSS_PSEUDO_HUBER;
    CHECK(loss == CFG_LOSS_L2 || strcmp(loss_name, "pseudo_huber") == 0, "%s: unknown loss %s", group, loss_name);
    if (loss == CFG_LOSS_PSEUDO_HUBER) {
        double want_c = fixture_attr_double(f, obj, "huber_c", -1);
        double got_c = pseudo_huber_c(bt.C * bt.H * bt.W);
        printf("  %-8s pseudo-Huber c %.6f (PyTorch %.6f)\n", group, got_c, want_c);
        CHECK(fabs(got_c - want_c) <= 1e-12, "%s: pseudo_huber_c %.8f, PyTorch %.8f", group, got_c, want_c);
    }
    PrecondParams pre = {.kind = PRECOND_CM,
                         .sigma_data = fixture_attr_double(f, obj, "sigma_data", -1),
                         .eps = fixture_attr_double(f, obj, "eps", -1)};
    Rng drop = {.seed = (uint64_t)fixture_attr_int(f, obj, "dropout_seed", 0),
                .stream = (uint32_t)fixture_attr_int(f, obj, "dropout_stream", 0),
                .step = (uint32_t)fixture_attr_int(f, obj, "dropout_step", 0)};

    char method[16] = "ct", solver_name[16] = "";
    fixture_attr_str(f, obj, "method", method, sizeof method);
    float *xt = NULL, *teacher = NULL;
    ctx_reset(c);
    if (strcmp(method, "cd") == 0) {
        fixture_attr_str(f, obj, "solver", solver_name, sizeof solver_name);
        SolverKind solver = strcmp(solver_name, "euler") == 0 ? SOLVER_EULER : SOLVER_HEUN;
        CHECK(solver == SOLVER_EULER || strcmp(solver_name, "heun") == 0, "%s: unknown solver %s", group,
              solver_name);
        teacher = params_buffer(&net.ps);
        load_weights(f, group, "weights/teacher", &net.ps, teacher);
        size_t nx = (size_t)bt.B * bt.C * bt.H * bt.W;
        float *x1 = cm_malloc(nx * sizeof(float));
        size_t dim = nx / (size_t)bt.B;
        for (size_t k = 0; k < nx; k++) x1[k] = x0[k] + t1[k / dim] * z[k];
        xt = cm_malloc(nx * sizeof(float));
        PrecondParams edm = {.kind = PRECOND_EDM, .sigma_data = pre.sigma_data, .eps = pre.eps};
        cd_teacher_step(c, &net, &edm, teacher, solver, x1, t1, t0, bt.B, bt.C, bt.H, bt.W, xt);
        float *want_xt = read_array(f, group, "xt", NULL, NULL);
        double ex = rel_error(xt, want_xt, nx, REL_FLOOR);
        char what[64];
        snprintf(what, sizeof what, "teacher %s step (target input)", solver_name);
        printf("  %-8s %-49s rel error %.2e\n", group, what, ex);
        CHECK(ex <= TOL, "%s: the teacher's %s step differs from PyTorch's: rel error %.3e", group, solver_name, ex);
        bt.xt = xt;
        free(x1);
        free(want_xt);
    }
    WeightSet online = {w, g};
    double l = ct_step_loss(c, &net, &pre, &online, target, &bt, loss, cfg.dropout > 0 ? &drop : NULL);
    float lf = (float)l;
    double e = rel_error(&lf, want_loss, 1, REL_FLOOR);
    printf("  %-8s %-49s rel error %.2e (%.6e vs %.6e)\n", group, "loss", e, l, want_loss[0]);
    CHECK(e <= TOL, "%s: loss %.8e, PyTorch %.8e, rel error %.3e", group, l, want_loss[0], e);
    compare_params(f, group, "grad", "param grad", &net.ps, g, TOL);

    CHECK(memcmp(w, w_before, n * sizeof(float)) == 0, "%s: ct_step_loss changed the online weights", group);
    CHECK(memcmp(target, target_before, n * sizeof(float)) == 0, "%s: ct_step_loss changed the target buffer",
          group);
    printf("  %-8s online weights and target buffer unchanged by the step\n", group);

    if (!target_is_online) {
        /* The target update target' = mu target + (1 - mu) w (w: the online weights). */
        float mu = (float)fixture_attr_double(f, obj, "mu", -1);
        CHECK(mu > 0 && mu < 1, "%s: mu %g", group, mu);
        ema_update(target, w, n, mu);
        compare_params(f, group, "ema", "target update", &net.ps, target, EMA_TOL);
    }

    free(x0), free(z), free(t1), free(t0), free(lam), free(want_loss), free(xt), free(teacher);
    free(w_before), free(target_before);
    if (!target_is_online) free(target);
    free(w), free(g);
    unet_free(&net);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CT_STEP.h5\n", argv[0]);
        return 2;
    }
    Fixture f;
    fixture_open(&f, argv[1]);
    Ctx c;
    ctx_init(&c, 64 << 20);
    const char *cases[] = {"ct", "ict", "cd", "cd_euler"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char obj[32];
        snprintf(obj, sizeof obj, "/%s", cases[i]);
        CHECK(fixture_exists(&f, obj), "fixture has no case %s", cases[i]);
        if (fixture_exists(&f, obj)) test_case(&c, &f, cases[i]);
    }
    ctx_free(&c);
    fixture_close(&f);
    return test_summary("ct_step");
}
