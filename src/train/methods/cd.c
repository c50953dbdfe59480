/* method = cd: Consistency Distillation (reference/cm.md §3.1).
 *
 * Interval i ~ Uniform{0..N-2} of the ascending Karras grid sigma[0..N-1] (N = cd.N), x1 = x + sigma[i+1] z:
 *   a = f_theta(x1, sigma[i+1])                                  online, with dropout
 *   b = f_target(teacher ODE step from x1 down to sigma[i], sigma[i])   no gradient, same masks
 *   loss = mean_b d(a, b)         (weight 1, as every released CD config)
 * The teacher is the EDM checkpoint's weight set (cd.teacher_weights) in eval mode; the student,
 * the target and every EMA start from it. Target: the EMA network with the fixed rate
 * cd.target_mu, or the online weights themselves (0, the CIFAR-10 recipe). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/ct.h"
#include "train/ct_schedule.h"
#include "train/method.h"
#include "train/model.h"

typedef struct Cd {
    MethodCm cm;                 /* the U-Net, the target network (cd.target_mu > 0), cd.N and cd.target_mu */
    float *teacher;              /* the EDM teacher's weights (the student's layout) */
    PrecondParams teacher_pre;   /* its (EDM) preconditioning */
} Cd;

/* Loads the EDM teacher (cd.teacher, cd.teacher_weights) and checks that it has the student's
 * architecture (the student starts from its weights in cd_start). */
static int cd_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    Cd *m = st;
    if (method_unet_setup(&m->cm.u, env, ps) != 0) return -1;
    const CfgCd *cd = &env->cfg->cd;
    if (!cd->teacher[0])
        return cm_fail("method = cd needs cd.teacher: the EDM teacher checkpoint to distil (train one with "
                       "method = edm, e.g. experiments/edm_fashion_mnist.ini)");
    Model tm;
    Config tcfg;
    if (model_load(&tm, &tcfg, cd->teacher, cd->teacher_weights[0] ? cd->teacher_weights : NULL) != 0) {
        model_free(&tm);
        return cm_fail("cd.teacher: %s", cm_errmsg());
    }
    int rc = 0;
    const char *diff = model_unet_difference(&m->cm.u.net.cfg, &tm.net.cfg);
    if (tcfg.experiment.method != CFG_METHOD_EDM)
        rc = cm_fail("cd.teacher = %s: a method = %s checkpoint; CD distils an EDM teacher (method = edm)",
                     cd->teacher, config_method_name(tcfg.experiment.method));
    else if (diff)
        rc = cm_fail("cd.teacher = %s: its network differs from this experiment's in %s; the student starts "
                     "from the teacher's weights, so copy the teacher's [model] section (cmlab info shows its config)",
                     cd->teacher, diff);
    if (rc == 0) {
        m->teacher = params_buffer(&m->cm.u.net.ps);
        memcpy(m->teacher, tm.w, m->cm.u.net.ps.total * sizeof(float));
        m->teacher_pre = tm.pre;
        printf("cd: teacher %s (%s weights)\n", cd->teacher, tm.weights_name);
    }
    model_free(&tm);
    return rc;
}

/* The student starts from the teacher's weights; the target network from the student's. */
static void cd_start(void *st, float *w)
{
    Cd *m = st;
    size_t n = m->cm.u.net.ps.total;
    memcpy(w, m->teacher, n * sizeof(float));
    method_cm_start_target(&m->cm, w, m->cm.u.cfg->cd.target_mu);
}

static double cd_loss(void *st, Ctx *c, const WeightSet *online, const Batch *bt)
{
    Cd *m = st;
    const Config *cfg = m->cm.u.cfg;
    int B = bt->B, N = cfg->cd.N, C = bt->C, H = bt->H, W = bt->W;
    size_t dim = (size_t)C * H * W;
    double *sigma = arena_alloc(&c->arena, (size_t)N * sizeof(double));
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    float *u = arena_alloc(&c->arena, 4 * (size_t)B * sizeof(float)), *t1 = u + B, *t0 = t1 + B, *lam = t0 + B;
    float *z = arena_alloc(&c->arena, 3 * (size_t)B * dim * sizeof(float)), *x1 = z + B * dim, *xt = x1 + B * dim;
    rng_uniform(&bt->noise_level, u, B, bt->sample0, 1);
    rng_normal(&bt->noise, z, B, bt->sample0, dim);
    const float *x0 = bt->x0;
    for (int b = 0; b < B; b++) {
        int i = ct_sample_index(NULL, N - 1, u[b]);
        t1[b] = (float)sigma[i + 1];
        t0[b] = (float)sigma[i];
        lam[b] = 1;
        for (size_t k = b * dim; k < (b + 1) * dim; k++) x1[k] = x0[k] + t1[b] * z[k];
    }
    cd_teacher_step(c, &m->cm.u.net, &m->teacher_pre, m->teacher, cfg->cd.solver, x1, t1, t0, B, C, H, W, xt);
    CtBatch cb = {x0, z, t1, t0, lam, xt, B, C, H, W, bt->sample0};
    double loss = ct_step_loss(c, &m->cm.u.net, &m->cm.u.pre, online, method_cm_target(&m->cm, online->w), &cb,
                               cfg->cd.loss, cfg->model.dropout > 0 ? &bt->dropout : NULL);
    m->cm.N = N;
    m->cm.mu = cfg->cd.target_mu;
    return loss;
}

/* The target network and schedule state (method_cm_ckpt_save), then the teacher. */
static void cd_ckpt_save(void *st, CkptState *s)
{
    Cd *m = st;
    method_cm_ckpt_save(&m->cm, s);
    ckpt_add_weights(s, "teacher", m->teacher);
}

static void cd_free(void *st)
{
    Cd *m = st;
    free(m->teacher);
    method_cm_free(&m->cm);
}

const Method method_cd = {
    .id = CFG_METHOD_CD,
    .name = "cd",
    .section = "cd",
    .precond = PRECOND_CM,
    .model = MODEL_CONSISTENCY,
    .state_size = sizeof(Cd),
    .setup = cd_setup,
    .start = cd_start,
    .loss = cd_loss,
    .after_update = method_cm_after_update,
    .ckpt_save = cd_ckpt_save,
    .ckpt_loaded = method_cm_ckpt_loaded,
    .unet = method_unet,
    .param_count = method_unet_param_count,
    .print_table = method_unet_print_table,
    .free = cd_free,
};
