/* precond.h: the preconditioning that turns the U-Net F into a denoiser or a consistency function.
 *
 *   out(x; t) = c_skip(t) x + c_out(t) F(c_in(t) x; c_noise(t))
 *
 * EDM (reference/cm.md §1.2), sd = sigma_data:
 *   c_skip = sd^2 / (t^2 + sd^2), c_out = t sd / sqrt(t^2 + sd^2), c_in = 1 / sqrt(t^2 + sd^2),
 *   c_noise = ln(t) / 4.
 * Consistency models (§2), with the boundary shifted to eps so that f(x, eps) = x exactly:
 *   c_skip = sd^2 / ((t - eps)^2 + sd^2), c_out = sd (t - eps) / sqrt(t^2 + sd^2) (plain t under
 *   the root), c_in and c_noise as EDM.
 */
#ifndef CM_PRECOND_H
#define CM_PRECOND_H

#include "nn/unet.h"

typedef enum PrecondKind { PRECOND_EDM, PRECOND_CM } PrecondKind;

typedef struct Precond {
    double c_skip, c_out, c_in, c_noise;
} Precond;

typedef struct PrecondParams {
    PrecondKind kind;
    double sigma_data;
    double eps;                  /* PRECOND_CM's boundary time (sigma_min) */
} PrecondParams;

Precond precond_at(const PrecondParams *p, double t);

/* out = c_skip x + c_out F(c_in x; c_noise) for per-sample times t[N] (host values).
 * x: [N,C,H,W]. dropout/sample0 as unet_forward (NULL: eval). */
Tensor *precond_apply(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                      const float *t, const Rng *dropout, int sample0);

#endif
