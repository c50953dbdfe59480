/* ct.h: the loss of one Consistency Training step (reference/cm.md §4-5), separated from the
 * training loop so that a test can feed it exactly the numbers a PyTorch twin sees.
 *
 *   a = f_online(x0 + t1 z, t1)       with gradients into the online weights (dropout rng)
 *   b = f_target(x0 + t0 z, t0)       no gradient; the same dropout masks (same rng, same samples)
 *   loss = mean_b lam_b d(a_b, b_b)   d: per-sample mse / l1 / pseudo-Huber (op_* in ops.h)
 *
 * CD uses the same loss with b evaluated at the teacher's ODE step instead of x0 + t0 z. */
#ifndef CM_CT_H
#define CM_CT_H

#include "train/experiment.h"
#include "train/precond.h"

typedef struct CtBatch {
    const float *x0, *z;         /* [B, C, H, W] clean images and noise */
    const float *t1, *t0, *lam;  /* [B] online time, target time, loss weight */
    int B, C, H, W;
} CtBatch;

/* Records the step on c's tape, runs the backward (gradients into online->g) and returns the loss.
 * target may equal online's weights (iCT: stop-gradient target); its g is ignored. */
double ct_step_loss(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *online,
                    const float *target_w, const CtBatch *batch, CfgLoss loss, const Rng *dropout);

#endif
