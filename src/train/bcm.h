/* bcm.h: one step of Bidirectional Consistency Training (reference/bcm.md §3, issue 14), its time
 * sampling, and the fine-tuning start from a consistency model (§4); separated from the method
 * record (methods/bcm.c) so that a test can feed the step exactly the numbers a PyTorch twin sees.
 *
 * The network is f(x, t, u) = c_skip(t,u) x + c_out(t,u) F(c_in x; c_noise(t), c_noise(u))
 * (precond.h, PRECOND_BCM, a two_times U-Net); f(x, t) means u = eps = sigma_min.
 *
 * One step, per sample, with the same z in x_t = x0 + t z and x_t' = x0 + t' z:
 *   A    = f_target(x_t', t')                        no gradient
 *   L_ct = d(f(x_t, t), A) / (t - t')
 *   x_u  = f(x_t, t, u)                              online, with gradient
 *   L_bc = d(f_target(x_u, u), A) / |t - u|          target weights frozen, gradient through x_u
 *   loss = mean_b (L_ct + L_bc),  d(a, b) = (sqrt(|a - b|^2 + c^2) - c) / sqrt(C H W)
 * The target weights are the online weights themselves in BCM (its target EMA is 0); all four
 * passes draw the same dropout masks (one Rng, the same sample indices).
 */
#ifndef CM_BCM_H
#define CM_BCM_H

#include "sample/precond.h"

typedef struct BcmBatch {
    const float *x0, *z;         /* [B, C, H, W] clean images and noise */
    const float *t, *t_prev, *u; /* [B] sigma[i+1], sigma[i] and sigma[j] of the grid */
    int B, C, H, W;
    int sample0;                 /* the first sample's index in the global batch (dropout masks) */
} BcmBatch;

/* Records the step on c's tape, runs the backward (gradients into online->g only: the target
 * passes use target_w without a gradient slot, which may be online->w) and returns the loss. */
double bcm_step_loss(Ctx *c, const UNet *net, const PrecondParams *pre, const WeightSet *online,
                     const float *target_w, const BcmBatch *b, double huber_c, const Rng *dropout);

/* An index in 0..n-1 drawn by inverse CDF from one uniform v in [0, 1) with masses p[0..n-1],
 * p[skip] taken as 0 and the rest renormalised: the remaining n-1 indices are compacted, so skip
 * is never returned, whatever the rounding. scratch holds n - 1 doubles; n >= 2. */
int bcm_sample_index_without(const double *p, int n, int skip, double v, double *scratch);

/* The times of B samples on the ascending Karras grid sigma[0..N-1] (N >= 3) with iCT's interval
 * masses p[0..N-2] (ict_index_probs), from two uniforms per sample, v[2b] and v[2b+1]:
 *   i ~ p with the top interval N-2 excluded:  t = sigma[i+1], t' = sigma[i];
 *   j ~ p with p[i+1] = 0 (j in 0..N-2):       u = sigma[j], so u != t, on either side of it.
 * idx, when not NULL, receives i and j as idx[2b], idx[2b+1]. scratch holds N doubles. */
void bcm_draw_times(int N, const double *sigma, const double *p, const float *v, int B, float *t,
                    float *t_prev, float *u, int *idx, double *scratch);

/* The fine-tuning start (bcm.md §4): w (the layout of the two-time U-Net net) from w_cm (the
 * one-time U-Net cm of the same architecture otherwise): every parameter by name, the u branch
 * map_u_layer0/1 as a copy of map_layer0/1, map_align = [I | 0]; so the combined embedding is
 * the t branch's exactly, and f(x, t) differs from the source's f only by the change of c_skip. */
void bcm_weights_from_cm(const UNet *net, float *w, const UNet *cm, const float *w_cm);

#endif
