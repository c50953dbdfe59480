/* method = ct: Consistency Training with the iCT switches (reference/cm.md §4-5); the loss
 * itself is ct_step_loss (ct.h).
 *
 * Interval i of the ascending Karras grid sigma[0..N-1] (N = N(k)); the same z in both terms:
 *   a = f_theta(x + sigma[i+1] z, sigma[i+1])          online, with dropout
 *   b = f_target(x + sigma[i] z, sigma[i])             no gradient, the same dropout masks
 *   loss = mean_b lambda_i d(a, b)
 * The target is the EMA network with rate mu(k) (ct.target_mu > 0, CT) or the online weights
 * themselves (ct.target_mu = 0, iCT). The switches (ct.loss, ct.sampling, ct.curriculum,
 * ct.weighting) choose between CT's and iCT's recipe piece by piece. */
#include <math.h>

#include "train/ct.h"
#include "train/ct_schedule.h"
#include "train/method.h"

typedef struct Ct {
    MethodCm cm;                 /* the U-Net, the target network (ct.target_mu > 0), N(k) and mu(k) */
} Ct;

static int ct_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    return method_unet_setup(&((Ct *)st)->cm.u, env, ps);
}

static void ct_start(void *st, float *w)
{
    Ct *m = st;
    method_cm_start_target(&m->cm, w, m->cm.u.cfg->ct.target_mu);
}

static double ct_mu_at(const Config *cfg, long k, int N)
{
    double mu0 = cfg->ct.target_mu;
    if (mu0 <= 0) return 0;
    if (cfg->ct.curriculum == CFG_CURRICULUM_ORIGINAL)
        return ct_mu(k, cfg->train.iterations, config_ct_s0(cfg), config_ct_s1(cfg), mu0);
    return exp(config_ct_s0(cfg) * log(mu0) / (N - 1));
}

static double ct_loss(void *st, Ctx *c, const WeightSet *online, const Batch *bt)
{
    Ct *m = st;
    const Config *cfg = m->cm.u.cfg;
    int B = bt->B;
    size_t dim = (size_t)bt->C * bt->H * bt->W;
    int N = ct_N(cfg->ct.curriculum, bt->step, cfg->train.iterations, config_ct_s0(cfg), config_ct_s1(cfg));
    double *sigma = arena_alloc(&c->arena, 3 * (size_t)N * sizeof(double)), *p = sigma + N, *cdf = p + N;
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    if (cfg->ct.sampling == CFG_SAMPLING_LOGNORMAL) {
        ict_index_probs(N, sigma, cfg->ct.p_mean, cfg->ct.p_std, p);
        ct_index_cdf(p, N - 1, cdf);
    }
    float *u = arena_alloc(&c->arena, 3 * (size_t)B * sizeof(float)), *t1 = u + B, *t0 = t1 + B;
    float *lam = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *z = arena_alloc(&c->arena, (size_t)B * dim * sizeof(float));
    rng_uniform(&bt->noise_level, u, B, bt->sample0, 1);
    rng_normal(&bt->noise, z, B, bt->sample0, dim);
    for (int b = 0; b < B; b++) {
        int i = ct_sample_index(cfg->ct.sampling == CFG_SAMPLING_LOGNORMAL ? cdf : NULL, N - 1, u[b]);
        t1[b] = (float)sigma[i + 1];
        t0[b] = (float)sigma[i];
        lam[b] = (float)ct_weight(cfg->ct.weighting, sigma, i);
    }
    CtBatch cb = {bt->x0, z, t1, t0, lam, NULL, B, bt->C, bt->H, bt->W, bt->sample0};
    double loss = ct_step_loss(c, &m->cm.u.net, &m->cm.u.pre, online, method_cm_target(&m->cm, online->w), &cb,
                               cfg->ct.loss, cfg->model.dropout > 0 ? &bt->dropout : NULL);
    m->cm.N = N;
    m->cm.mu = ct_mu_at(cfg, bt->step, N);
    return loss;
}

static void ct_free(void *st) { method_cm_free(&((Ct *)st)->cm); }

const Method method_ct = {
    .id = CFG_METHOD_CT,
    .name = "ct",
    .section = "ct",
    .precond = PRECOND_CM,
    .model = MODEL_CONSISTENCY,
    .state_size = sizeof(Ct),
    .setup = ct_setup,
    .start = ct_start,
    .loss = ct_loss,
    .after_update = method_cm_after_update,
    .ckpt_save = method_cm_ckpt_save,
    .ckpt_loaded = method_cm_ckpt_loaded,
    .unet = method_unet,
    .param_count = method_unet_param_count,
    .print_table = method_unet_print_table,
    .free = ct_free,
};
