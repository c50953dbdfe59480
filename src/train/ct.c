#include "ct.h"

#include "train/ct_schedule.h"

double ct_step_loss(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *online,
                    const float *target_w, const CtBatch *bt, CfgLoss loss, const Rng *dropout)
{
    int B = bt->B;
    size_t dim = (size_t)bt->C * bt->H * bt->W;
    float *x1 = arena_alloc(&c->arena, 2 * (size_t)B * dim * sizeof(float)), *xt = x1 + (size_t)B * dim;
    for (int b = 0; b < B; b++)
        for (size_t k = 0; k < dim; k++) {
            size_t j = b * dim + k;
            x1[j] = bt->x0[j] + bt->t1[b] * bt->z[j];
            xt[j] = bt->x0[j] + bt->t0[b] * bt->z[j];
        }
    WeightSet target = {(float *)target_w, NULL};
    Tensor *a = precond_apply(c, pre, net, online, tensor_wrap(c, x1, NULL, 4, SHAPE(B, bt->C, bt->H, bt->W), false),
                              bt->t1, dropout, 0);
    ctx_no_grad_begin(c);
    Tensor *b = precond_apply(c, pre, net, &target, tensor_wrap(c, xt, NULL, 4, SHAPE(B, bt->C, bt->H, bt->W), false),
                              bt->t0, dropout, 0);
    ctx_no_grad_end(c);
    Tensor *d = loss == CFG_LOSS_L2 ? op_mse(c, a, b)
              : loss == CFG_LOSS_L1 ? op_l1(c, a, b)
                                    : op_pseudo_huber(c, a, b, (float)pseudo_huber_c((int)dim));
    Tensor *l = op_mean(c, op_mul(c, d, tensor_wrap(c, (float *)bt->lam, NULL, 1, SHAPE(B), false)));
    tape_backward(c, l, NULL);
    return l->data[0];
}
