/* method = bcm: Bidirectional Consistency Training, from scratch or fine-tuned from a consistency
 * model (reference/bcm.md §3-4, issue 14); the loss itself is bcm_step_loss (bcm.h).
 *
 * The Karras grid sigma[0..N-1] (rho 7) has N = bcm.N points, or N(k) of [ct]'s curriculum when
 * bcm.N = 0; its intervals carry iCT's lognormal masses (ct.p_mean, ct.p_std). Each sample draws
 * two uniforms from the noise-level stream at its own sample index: element 0 picks the interval i
 * (exactly the number method = ct draws there), element 1 the time u (bcm_draw_times). The target
 * is the online network without gradient (BCM's target EMA is 0), so the method keeps no weight
 * set of its own: a checkpoint holds the loop's state plus N of the last step, and resuming is
 * exact because N and every random number are functions of the step and the sample index.
 *
 * Fine-tuning (bcm.init): the source consistency checkpoint's weights enter the two-time U-Net by
 * bcm_weights_from_cm, at setup; the loop's EMAs start from them. The source is read again when a
 * run resumes (its weights are then replaced by the checkpoint's). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/bcm.h"
#include "train/ct_schedule.h"
#include "train/method.h"
#include "train/model.h"

typedef struct Bcm {
    MethodCm cm;                 /* the two-time U-Net and N of the last step; no target network */
    float *init;                 /* bcm.init's weights in this U-Net's layout, or NULL */
    double huber_c;              /* bcm.huber_c, or iCT's rule for this image size */
} Bcm;

/* Loads bcm.init, checks that it is a consistency model of this architecture, and maps its
 * weights into the two-time layout. */
static int bcm_load_init(Bcm *m, const Config *cfg)
{
    const char *path = cfg->bcm.init;
    Model src;
    Config scfg;
    if (model_load(&src, &scfg, path, cfg->bcm.init_weights[0] ? cfg->bcm.init_weights : NULL) != 0) {
        model_free(&src);
        return cm_fail("bcm.init: %s", cm_errmsg());
    }
    UNetConfig one = m->cm.u.net.cfg;
    one.two_times = false;
    const char *diff = model_unet_difference(&one, &src.net.cfg);
    int rc = 0;
    if (src.pre.kind != PRECOND_CM)
        rc = cm_fail("bcm.init = %s: a method = %s checkpoint; BCM fine-tunes a consistency model (method = ct "
                     "or cd)", path, config_method_name(scfg.experiment.method));
    else if (diff)
        rc = cm_fail("bcm.init = %s: its network differs from this experiment's in %s; the u branch starts as a "
                     "copy of the source's, so copy its [model] section (cmlab info shows its config)", path, diff);
    else if (scfg.model.sigma_data != cfg->model.sigma_data || scfg.model.sigma_min != cfg->model.sigma_min)
        rc = cm_fail("bcm.init = %s: its model.sigma_data %g and model.sigma_min %g differ from this "
                     "experiment's %g and %g; the fine-tuned model starts as the source only with the same "
                     "preconditioning", path, scfg.model.sigma_data, scfg.model.sigma_min, cfg->model.sigma_data,
                     cfg->model.sigma_min);
    if (rc == 0) {
        m->init = params_buffer(&m->cm.u.net.ps);
        bcm_weights_from_cm(&m->cm.u.net, m->init, &src.net, src.w);
        printf("bcm: fine-tuning from %s (%s weights)\n", path, src.weights_name);
    }
    model_free(&src);
    return rc;
}

static int bcm_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    Bcm *m = st;
    const Config *cfg = env->cfg;
    if (method_unet_setup(&m->cm.u, env, ps) != 0) return -1;
    if (cfg->bcm.N == 1 || cfg->bcm.N == 2)
        return cm_fail("bcm.N = %d: BCM needs at least 3 grid points (the top interval is never drawn for t, "
                       "and u needs a grid point other than t)", cfg->bcm.N);
    if (!cfg->bcm.N) {
        int s0 = config_ct_s0(cfg), s1 = config_ct_s1(cfg);
        if (s0 > s1) return cm_fail("ct.s0 = %d is above ct.s1 = %d", s0, s1);
        int N0 = ct_N(cfg->ct.curriculum, 0, cfg->train.iterations, s0, s1);
        if (N0 < 3)
            return cm_fail("ct.s0 = %d: the %s curriculum starts at N = %d grid points, BCM needs at least 3 "
                           "(raise ct.s0, or fix N with bcm.N)", s0,
                           config_enum_name("ct.curriculum", cfg->ct.curriculum), N0);
    }
    m->huber_c = cfg->bcm.huber_c > 0 ? cfg->bcm.huber_c : pseudo_huber_c(env->C * env->H * env->W);
    return cfg->bcm.init[0] ? bcm_load_init(m, cfg) : 0;
}

static void bcm_start(void *st, float *w)
{
    Bcm *m = st;
    if (m->init) memcpy(w, m->init, m->cm.u.net.ps.total * sizeof(float));
}

static double bcm_loss(void *st, Ctx *c, const WeightSet *online, const Batch *bt)
{
    Bcm *m = st;
    const Config *cfg = m->cm.u.cfg;
    int B = bt->B;
    size_t dim = (size_t)bt->C * bt->H * bt->W;
    int N = cfg->bcm.N ? cfg->bcm.N
                       : ct_N(cfg->ct.curriculum, bt->step, cfg->train.iterations, config_ct_s0(cfg), config_ct_s1(cfg));
    double *sigma = arena_alloc(&c->arena, 3 * (size_t)N * sizeof(double)), *p = sigma + N, *scratch = p + N;
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    ict_index_probs(N, sigma, cfg->ct.p_mean, cfg->ct.p_std, p);
    float *v = arena_alloc(&c->arena, 5 * (size_t)B * sizeof(float)), *t = v + 2 * B, *t_prev = t + B, *u = t_prev + B;
    float *z = arena_alloc(&c->arena, (size_t)B * dim * sizeof(float));
    rng_uniform(&bt->noise_level, v, B, bt->sample0, 2);
    rng_normal(&bt->noise, z, B, bt->sample0, dim);
    bcm_draw_times(N, sigma, p, v, B, t, t_prev, u, NULL, scratch);
    BcmBatch bb = {bt->x0, z, t, t_prev, u, B, bt->C, bt->H, bt->W, bt->sample0};
    double loss = bcm_step_loss(c, &m->cm.u.net, &m->cm.u.pre, online, online->w, &bb, m->huber_c,
                                cfg->model.dropout > 0 ? &bt->dropout : NULL);
    m->cm.N = N;
    return loss;
}

static void bcm_free(void *st)
{
    Bcm *m = st;
    free(m->init);
    method_cm_free(&m->cm);
}

const Method method_bcm = {
    .id = CFG_METHOD_BCM,
    .name = "bcm",
    .section = "bcm",
    .precond = PRECOND_BCM,
    .model = MODEL_CONSISTENCY,
    .state_size = sizeof(Bcm),
    .setup = bcm_setup,
    .start = bcm_start,
    .loss = bcm_loss,
    .ckpt_save = method_cm_ckpt_save,
    .ckpt_loaded = method_cm_ckpt_loaded,
    .unet = method_unet,
    .param_count = method_unet_param_count,
    .print_table = method_unet_print_table,
    .free = bcm_free,
};
