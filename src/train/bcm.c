#include "bcm.h"

#include <math.h>
#include <string.h>

#include "train/ct_schedule.h"

double bcm_step_loss(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *online,
                     const float *target_w, const BcmBatch *bt, double huber_c, const Rng *dropout)
{
    int B = bt->B;
    size_t dim = (size_t)bt->C * bt->H * bt->W;
    const int *shape = SHAPE(B, bt->C, bt->H, bt->W);
    float *xt = arena_alloc(&c->arena, 2 * (size_t)B * dim * sizeof(float)), *xp = xt + (size_t)B * dim;
    float *lam = arena_alloc(&c->arena, 2 * (size_t)B * sizeof(float)), *lam_bc = lam + B;
    double root = sqrt((double)dim);
    for (int b = 0; b < B; b++) {
        for (size_t k = b * dim; k < (b + 1) * dim; k++) {
            xt[k] = bt->x0[k] + bt->t[b] * bt->z[k];
            xp[k] = bt->x0[k] + bt->t_prev[b] * bt->z[k];
        }
        /* the 1/sqrt(D) of d folded into the weights; grid points differ, so no 1e-20 is needed */
        lam[b] = (float)(1.0 / (((double)bt->t[b] - bt->t_prev[b]) * root));
        lam_bc[b] = (float)(1.0 / (fabs((double)bt->t[b] - bt->u[b]) * root));
    }
    WeightSet target = {(float *)target_w, NULL};
    Tensor *x = tensor_wrap(c, xt, NULL, 4, shape, false);
    Tensor *y = precond_apply(c, pre, net, online, x, bt->t, dropout, bt->sample0);
    ctx_no_grad_begin(c);
    Tensor *a = precond_apply(c, pre, net, &target, tensor_wrap(c, xp, NULL, 4, shape, false), bt->t_prev, dropout,
                              bt->sample0);
    ctx_no_grad_end(c);
    Tensor *xu = precond_forward(c, pre, net, online, x, tensor_wrap(c, (float *)bt->t, NULL, 1, SHAPE(B), false),
                                 tensor_wrap(c, (float *)bt->u, NULL, 1, SHAPE(B), false), dropout, bt->sample0, NULL);
    Tensor *yu = precond_apply(c, pre, net, &target, xu, bt->u, dropout, bt->sample0);
    float hc = (float)huber_c;
    Tensor *l_ct = op_mul(c, op_pseudo_huber(c, y, a, hc), tensor_wrap(c, lam, NULL, 1, SHAPE(B), false));
    Tensor *l_bc = op_mul(c, op_pseudo_huber(c, yu, a, hc), tensor_wrap(c, lam_bc, NULL, 1, SHAPE(B), false));
    Tensor *l = op_mean(c, op_add(c, l_ct, l_bc));
    tape_backward(c, l, NULL);
    return l->data[0];
}

int bcm_sample_index_without(const double *p, int n, int skip, double v, double *scratch)
{
    CM_ASSERT(n >= 2 && skip >= 0 && skip < n, "bcm_sample_index_without: n %d, skip %d", n, skip);
    double total = 0;
    for (int k = 0, m = 0; k < n; k++)
        if (k != skip) total += scratch[m++] = p[k];
    CM_ASSERT(total > 0, "bcm_sample_index_without: no mass outside index %d", skip);
    for (int m = 0; m < n - 1; m++) scratch[m] /= total;
    ct_index_cdf(scratch, n - 1, scratch);   /* in place: entry m is read before it is written */
    int m = ct_sample_index(scratch, n - 1, v);
    return m + (m >= skip);
}

void bcm_draw_times(int N, const double *sigma, const double *p, const float *v, int B, float *t,
                    float *t_prev, float *u, int *idx, double *scratch)
{
    CM_ASSERT(N >= 3, "bcm_draw_times: N = %d, need at least 3 grid points", N);
    for (int b = 0; b < B; b++) {
        int i = bcm_sample_index_without(p, N - 1, N - 2, v[2 * b], scratch);
        int j = bcm_sample_index_without(p, N - 1, i + 1, v[2 * b + 1], scratch);
        t[b] = (float)sigma[i + 1];
        t_prev[b] = (float)sigma[i];
        u[b] = (float)sigma[j];
        if (idx) idx[2 * b] = i, idx[2 * b + 1] = j;
    }
}

/* Copies the parameter named `from` of (ps_from, w_from) to the parameter `to` of net's w. */
static void copy_param(const UNet *net, float *w, const char *to, const ParamSet *ps_from, const float *w_from,
                       const char *from)
{
    int a = params_find(&net->ps, to), b = params_find(ps_from, from);
    CM_ASSERT(a >= 0 && b >= 0, "bcm_weights_from_cm: %s or %s missing", to, from);
    const Param *pa = &net->ps.items[a], *pb = &ps_from->items[b];
    CM_ASSERT(pa->n == pb->n, "bcm_weights_from_cm: %s has %zu values, %s %zu", to, pa->n, from, pb->n);
    memcpy(w + pa->offset, w_from + pb->offset, pa->n * sizeof(float));
}

void bcm_weights_from_cm(const UNet *net, float *w, const UNet *cm, const float *w_cm)
{
    CM_ASSERT(net->cfg.two_times && !cm->cfg.two_times, "bcm_weights_from_cm: want a two-time and a one-time U-Net");
    memset(w, 0, net->ps.total * sizeof(float));
    for (int k = 0; k < cm->ps.count; k++)
        copy_param(net, w, cm->ps.items[k].name, &cm->ps, w_cm, cm->ps.items[k].name);
    static const char *const branch[][2] = {{"map_u_layer0.weight", "map_layer0.weight"},
                                            {"map_u_layer0.bias", "map_layer0.bias"},
                                            {"map_u_layer1.weight", "map_layer1.weight"},
                                            {"map_u_layer1.bias", "map_layer1.bias"}};
    for (size_t k = 0; k < CM_ARRAY_LEN(branch); k++) copy_param(net, w, branch[k][0], &cm->ps, w_cm, branch[k][1]);
    /* map_align.weight [E, 2E] (PyTorch's [out, in]): row r has its 1 in column r, the e_t half */
    int a = params_find(&net->ps, "map_align.weight");
    CM_ASSERT(a >= 0, "bcm_weights_from_cm: no map_align.weight");
    const Param *pa = &net->ps.items[a];
    int E = pa->shape[0];
    CM_ASSERT(pa->ndim == 2 && pa->shape[1] == 2 * E, "bcm_weights_from_cm: map_align.weight is not [E, 2E]");
    for (int r = 0; r < E; r++) w[pa->offset + (size_t)r * 2 * E + r] = 1.0f;
}
