/* precond.h: the preconditioning that turns the U-Net F into a denoiser or a consistency function.
 *
 *   out(x; t[, u]) = c_skip x + c_out F(c_in x; c_noise(t)[, c_noise(u)])
 *
 * EDM (reference/cm.md §1.2), sd = sigma_data:
 *   c_skip = sd^2 / (t^2 + sd^2), c_out = t sd / sqrt(t^2 + sd^2), c_in = 1 / sqrt(t^2 + sd^2),
 *   c_noise = ln(t) / 4.
 * Consistency models (§2), with the boundary shifted to eps so that f(x, eps) = x exactly:
 *   c_skip = sd^2 / ((t - eps)^2 + sd^2), c_out = sd (t - eps) / sqrt(t^2 + sd^2) (plain t under
 *   the root), c_in and c_noise as EDM.
 * BCM's two-time network f(x, t, u) (reference/bcm.md §2.1), for a U-Net with two_times:
 *   c_skip = (t u + sd^2) / (t^2 + sd^2), c_out = sd (t - u) / sqrt(t^2 + sd^2), c_in as EDM,
 *   c_noise = ln(t) / 4 and c_noise_u = ln(u) / 4; so f(x, t, t) = x for every t, and u = eps
 *   gives the consistency function up to the c_skip change (bcm.md §2.1).
 *
 * The times are per sample. precond_forward takes them as tensors [N] on the tape: when t (or u)
 * requires a gradient, each coefficient enters as c(t0) + c'(t0) (t - t0), with c and c' computed
 * in double at t's value t0 (precond_at). Its value is exactly c(t0) (t - t0 is exactly 0), so the
 * output is bit for bit the one of a pass whose times need no gradient, and its derivative is the
 * analytic c'(t0); the U-Net carries the gradient on through c_noise (unet.h).
 */
#ifndef CM_PRECOND_H
#define CM_PRECOND_H

#include "nn/unet.h"

typedef enum PrecondKind { PRECOND_EDM, PRECOND_CM, PRECOND_BCM } PrecondKind;

/* The coefficients at one (t, u); c_noise_u is BCM's (0 for the one-time kinds). */
typedef struct Precond {
    double c_skip, c_out, c_in, c_noise, c_noise_u;
} Precond;

typedef struct PrecondParams {
    PrecondKind kind;
    double sigma_data;
    double eps;                  /* PRECOND_CM's boundary time (sigma_min); PRECOND_BCM's default u */
} PrecondParams;

/* The coefficients at t (PRECOND_BCM: at u = eps). */
Precond precond_at(const PrecondParams *p, double t);
/* The coefficients at (t, u) (u is read by PRECOND_BCM only) and, when not NULL, their
 * derivatives with respect to t and u. */
Precond precond_at_tu(const PrecondParams *p, double t, double u, Precond *d_dt, Precond *d_du);

/* out = c_skip x + c_out F(c_in x; c_noise) on the tape, differentiable in x, the weights and the
 * times (precond.h's header).
 *   x:   [N,C,H,W]
 *   t:   [N] (or [N,1,1,1])
 *   u:   [N] for PRECOND_BCM (NULL: u = eps for every sample); must be NULL for EDM and CM
 *   dropout/sample0: as unet_forward (NULL: eval)
 *   bottleneck: when not NULL, receives the U-Net's middle-block output of this pass
 *               [N,C_mid,H>>(L-1),W>>(L-1)] (unet_forward; unet_bottleneck_mean reduces it). */
Tensor *precond_forward(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                        Tensor *t, Tensor *u, const Rng *dropout, int sample0, Tensor **bottleneck);

/* precond_forward for per-sample times t[N] given as host values (no gradient reaches them; for
 * PRECOND_BCM, u = eps). */
Tensor *precond_apply(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                      const float *t, const Rng *dropout, int sample0);

#endif
