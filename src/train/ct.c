#include "ct.h"

#include <string.h>

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
            xt[j] = bt->xt ? bt->xt[j] : bt->x0[j] + bt->t0[b] * bt->z[j];
        }
    WeightSet target = {(float *)target_w, NULL};
    Tensor *a = precond_apply(c, pre, net, online, tensor_wrap(c, x1, NULL, 4, SHAPE(B, bt->C, bt->H, bt->W), false),
                              bt->t1, dropout, bt->sample0);
    ctx_no_grad_begin(c);
    Tensor *b = precond_apply(c, pre, net, &target, tensor_wrap(c, xt, NULL, 4, SHAPE(B, bt->C, bt->H, bt->W), false),
                              bt->t0, dropout, bt->sample0);
    ctx_no_grad_end(c);
    Tensor *d = loss == CFG_LOSS_L2 ? op_mse(c, a, b)
              : loss == CFG_LOSS_L1 ? op_l1(c, a, b)
                                    : op_pseudo_huber(c, a, b, (float)pseudo_huber_c((int)dim));
    Tensor *l = op_mean(c, op_mul(c, d, tensor_wrap(c, (float *)bt->lam, NULL, 1, SHAPE(B), false)));
    tape_backward(c, l, NULL);
    return l->data[0];
}

/* out = D(x; t) of the teacher, through the arena; everything the pass allocated is released. */
static void teacher_denoise(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *ws, const float *x,
                            const float *t, int B, int C, int H, int W, float *out)
{
    ArenaMark m = arena_mark(&c->arena);
    Tensor *D = precond_apply(c, pre, net, ws, tensor_wrap(c, (float *)x, NULL, 4, SHAPE(B, C, H, W), false), t,
                              NULL, 0);
    memcpy(out, D->data, D->n * sizeof(float));
    arena_release(&c->arena, m);
}

void cd_teacher_step(Ctx *c, const UNet *net, const PrecondParams *pre, const float *teacher_w, SolverKind solver,
                     const float *x1, const float *t1, const float *t0, int B, int C, int H, int W, float *out)
{
    CM_ASSERT(solver == SOLVER_EULER || solver == SOLVER_HEUN, "cd_teacher_step: solver %d is not euler or heun",
              (int)solver);
    size_t dim = (size_t)C * H * W;
    WeightSet ws = {(float *)teacher_w, NULL};
    ArenaMark m = arena_mark(&c->arena);
    float *D = arena_alloc(&c->arena, 2 * (size_t)B * dim * sizeof(float)), *d1 = D + (size_t)B * dim;
    ctx_no_grad_begin(c);
    teacher_denoise(c, net, pre, &ws, x1, t1, B, C, H, W, D);
    for (int b = 0; b < B; b++) {
        float h = t0[b] - t1[b];
        for (size_t k = b * dim; k < (b + 1) * dim; k++) {
            d1[k] = (x1[k] - D[k]) / t1[b];
            out[k] = x1[k] + h * d1[k];
        }
    }
    if (solver == SOLVER_HEUN) {
        teacher_denoise(c, net, pre, &ws, out, t0, B, C, H, W, D);
        for (int b = 0; b < B; b++) {
            float h = t0[b] - t1[b];
            for (size_t k = b * dim; k < (b + 1) * dim; k++) {
                float d2 = (out[k] - D[k]) / t0[b];
                out[k] = x1[k] + h * 0.5f * (d1[k] + d2);
            }
        }
    }
    ctx_no_grad_end(c);
    arena_release(&c->arena, m);
}
