/* ct.h: the loss of one consistency step, CT (reference/cm.md §4-5) or CD (§3), separated from
 * the training loop so that a test can feed it exactly the numbers a PyTorch twin sees.
 *
 *   a = f_online(x0 + t1 z, t1)       with gradients into the online weights (dropout rng)
 *   b = f_target(xt, t0)              no gradient; the same dropout masks (same rng, same samples)
 *   loss = mean_b lam_b d(a_b, b_b)   d: per-sample mse / l1 / pseudo-Huber (op_* in ops.h)
 *
 * CT: xt = x0 + t0 z (the Euler step of the PF-ODE with the clean image as the denoiser lands
 * there exactly). CD: xt = the teacher's ODE step from x0 + t1 z down to t0 (cd_teacher_step). */
#ifndef CM_CT_H
#define CM_CT_H

#include "io/experiment.h"
#include "sample/precond.h"
#include "sample/solvers.h"

typedef struct CtBatch {
    const float *x0, *z;         /* [B, C, H, W] clean images and noise */
    const float *t1, *t0, *lam;  /* [B] online time, target time, loss weight */
    const float *xt;             /* [B, C, H, W] the target's input; NULL: x0 + t0 z (CT) */
    int B, C, H, W;
    int sample0;                 /* the first sample's index in the global batch (dropout masks) */
} CtBatch;

/* Records the step on c's tape, runs the backward (gradients into online->g) and returns the loss.
 * target may equal online's weights (iCT: stop-gradient target); its g is ignored. */
double ct_step_loss(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *online,
                    const float *target_w, const CtBatch *batch, CfgLoss loss, const Rng *dropout);

/* CD's teacher step (reference/cm.md §3.1), no gradient: out [B, C, H, W] = one step of the
 * teacher's PF-ODE dx/dt = (x - D(x; t)) / t from x1 at t1[b] down to t0[b] (t0 > 0), with
 * D = the teacher network (weights teacher_w, preconditioning pre, no dropout):
 *   d1 = (x1 - D(x1; t1)) / t1,  xe = x1 + (t0 - t1) d1                 (SOLVER_EULER: out = xe)
 *   d2 = (xe - D(xe; t0)) / t0,  out = x1 + (t0 - t1) (d1 + d2) / 2      (SOLVER_HEUN)
 * The teacher's activations are released before returning; out must not live in c's arena past
 * a mark taken here (allocate it before the call). */
void cd_teacher_step(Ctx *c, const UNet *net, const PrecondParams *pre, const float *teacher_w, SolverKind solver,
                     const float *x1, const float *t1, const float *t0, int B, int C, int H, int W, float *out);

#endif
