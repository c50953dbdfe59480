/* method = edm: the diffusion denoiser of EDM (reference/cm.md §1.3), the teacher CD distils.
 *
 * sigma = exp(P_mean + P_std n), y = x0 + sigma z, loss = mean_b lambda(sigma_b) mean_pixels
 * (D(y; sigma_b) - x0)^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2. EDM sums over pixels;
 * the per-pixel mean differs by the constant factor C*H*W, which Adam does not see except
 * through eps, and keeps the logged loss readable (about 1 at the start). */
#include <math.h>

#include "train/method.h"

typedef struct Edm {
    MethodUNet u;
} Edm;

static int edm_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    return method_unet_setup(&((Edm *)st)->u, env, ps);
}

static double edm_loss(void *st, Ctx *c, const WeightSet *online, const Batch *bt)
{
    Edm *e = st;
    const Config *cfg = e->u.cfg;
    int B = bt->B, C = bt->C, H = bt->H, W = bt->W;
    size_t dim = (size_t)C * H * W;
    float *sigma = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *lam = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *y = arena_alloc(&c->arena, (size_t)B * dim * sizeof(float));
    rng_normal(&bt->noise_level, sigma, B, bt->sample0, 1);
    rng_normal(&bt->noise, y, B, bt->sample0, dim);
    double sd = cfg->model.sigma_data;
    const float *x0 = bt->x0;
    for (int b = 0; b < B; b++) {
        double sg = exp(cfg->edm.p_mean + cfg->edm.p_std * sigma[b]);
        sigma[b] = (float)sg;
        lam[b] = (float)((sg * sg + sd * sd) / (sg * sg * sd * sd));
        for (size_t k = 0; k < dim; k++) y[b * dim + k] = x0[b * dim + k] + sigma[b] * y[b * dim + k];
    }
    Tensor *ty = tensor_wrap(c, y, NULL, 4, SHAPE(B, C, H, W), false);
    Tensor *tx = tensor_wrap(c, (float *)x0, NULL, 4, SHAPE(B, C, H, W), false);
    Tensor *tl = tensor_wrap(c, lam, NULL, 1, SHAPE(B), false);
    Tensor *D = precond_apply(c, &e->u.pre, &e->u.net, online, ty, sigma, cfg->model.dropout > 0 ? &bt->dropout : NULL,
                              bt->sample0);
    Tensor *loss = op_mean(c, op_mul(c, op_mse(c, D, tx), tl));
    tape_backward(c, loss, NULL);
    return loss->data[0];
}

static void edm_free(void *st) { method_unet_free(&((Edm *)st)->u); }

const Method method_edm = {
    .id = CFG_METHOD_EDM,
    .name = "edm",
    .section = "edm",
    .precond = PRECOND_EDM,
    .model = MODEL_DIFFUSION,
    .state_size = sizeof(Edm),
    .setup = edm_setup,
    .loss = edm_loss,
    .unet = method_unet,
    .param_count = method_unet_param_count,
    .print_table = method_unet_print_table,
    .free = edm_free,
};
