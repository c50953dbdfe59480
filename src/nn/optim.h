/* optim.h: the Adam family of optimisers (Adam, AdamW, RAdam), linear learning-rate warm-up,
 * gradient clipping by global norm, and any number of weight averages (EMAs). Every buffer is
 * flat, in the ParamSet layout (DESIGN.md "Parameters and weight sets"), and every update is one
 * loop over it; padding between slices stays zero.
 *
 * The optimisers follow PyTorch 1.13's single-tensor paths (torch/optim/adam.py, adamw.py,
 * radam.py: the default, neither foreach nor fused) operation for operation in float32, with
 * t = the step number counted from 1 (Adam.step, incremented first, PyTorch's state['step']):
 *   Adam    g += wd w                          (L2: the decay goes through the moments)
 *           m = b1 m + (1-b1) g,   v = b2 v + (1-b2) g^2
 *           w -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
 *   AdamW   w *= 1 - lr wd                     (decoupled, before the moments), then Adam's
 *           moments and update without the L2 term
 *   RAdam   g += wd w (L2, as Adam: PyTorch 1.13 has no decoupled RAdam); moments as Adam;
 *           rho_inf = 2/(1-b2) - 1,   rho_t = rho_inf - 2 t b2^t / (1-b2^t)
 *           rho_t > 5:  w -= lr * m/(1-b1^t) * sqrt(1-b2^t) / (sqrt(v) + eps) * r_t,
 *                       r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
 *           otherwise:  w -= lr * m/(1-b1^t)   (bias-corrected momentum SGD, not normalised by v:
 *                       rho_t ~ t - (t^2-1)(1-b2)/6, so the first 5 steps when b2 is near 1)
 *           Note eps sits outside the bias correction here but inside it in Adam.
 * Scalars (bias corrections, step size, rho_t, r_t, 1-b, 1 - lr wd) are computed in double from
 * the float hyperparameters, as PyTorch computes them in Python floats, and rounded to float once
 * where PyTorch hands them to a float32 kernel. PyTorch's AVX2 kernels fuse the multiply-add of
 * add(x, alpha) and addcmul, so those are fmaf here (the build is ISO C11: GCC contracts nothing
 * else). With hyperparameters that are exact floats, the updates match PyTorch's AVX2 kernels
 * bit for bit (tests/test_optim.c).
 *
 * Threads: every loop is elementwise except grad_norm's sum of squares, which adds fixed chunks
 * in a fixed order; results are bit-identical for any thread count.
 */
#ifndef CM_OPTIM_H
#define CM_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

typedef enum OptimKind { OPTIM_ADAM, OPTIM_ADAMW, OPTIM_RADAM, OPTIM_KIND_COUNT } OptimKind;

/* The state of any optimiser of the Adam family (the name predates AdamW and RAdam). */
typedef struct Adam {
    OptimKind kind;
    float lr, beta1, beta2, eps, weight_decay;   /* lr may change between steps (warm-up) */
    long step;                   /* updates done; PyTorch's state['step'] */
    size_t n;
    float *m, *v;                /* flat, in the parameter layout: exp_avg, exp_avg_sq */
} Adam;

void optim_init(Adam *a, OptimKind kind, size_t n, float lr, float beta1, float beta2, float eps,
                float weight_decay);
/* optim_init with OPTIM_ADAMW when decoupled, else OPTIM_ADAM. */
void adam_init(Adam *a, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               bool decoupled);
void adam_free(Adam *a);
/* One update of w (n floats) from the gradient g by a->kind, with a->lr. */
void adam_step(Adam *a, float *w, const float *g);

/* "adam", "adamw", "radam" (the checkpoint group /optimizer/<kind>), and back; -1 if unknown. */
const char *optim_kind_name(OptimKind kind);
int optim_kind_parse(const char *name);
/* RAdam's rho_t at step t >= 1; the rectified update runs when it exceeds 5. */
double radam_rho(float beta2, long t);
/* The names by kind, NULL-terminated: the one name table (the experiment keys' choices too). */
extern const char *const optim_kind_names[OPTIM_KIND_COUNT + 1];

/* The learning rate of the update that follows `step` completed updates (pass Adam.step before
 * adam_step): lr * min(1, step / warmup). The step counts from 0, so the first update has lr 0,
 * as in EDM's training_loop.py (cur_nimg = 0 at the first update), JCM's
 * optax.linear_schedule(0, lr, warmup) and torch's LambdaLR(lambda s: min(1, s / warmup)).
 * warmup <= 0: no warm-up. */
float optim_warmup_lr(float lr, long step, long warmup);

/* Global L2 norm of g, summed in double. */
double grad_norm(const float *g, size_t n);
/* As torch.nn.utils.clip_grad_norm_: returns the norm, and when max_norm > 0 and
 * clip_coef = max_norm / (norm + 1e-6) < 1 multiplies g by clip_coef. A non-finite norm leaves g
 * alone (PyTorch would turn it all into NaN); the caller sees it in the return value. */
double grad_clip(float *g, size_t n, double max_norm);

/* ema = rate * ema + (1 - rate) * w, in the op order of CM's update_ema (PyTorch
 * targ.mul_(rate).add_(src, alpha = 1 - rate)) and JCM's tree_map. Also the CT target network. */
void ema_update(float *ema, const float *w, size_t n, float rate);
/* The same average in EDM's op order: ema = w.lerp(ema, beta) (training_loop.py). */
void ema_lerp(float *ema, const float *w, size_t n, double beta);
/* EDM's rate for one update: 0.5^(batch / max(h, 1e-8)), h = min(halflife_images,
 * rampup_ratio * images_seen), or h = halflife_images when rampup_ratio <= 0 (EDM's None).
 * images_seen counts the images of the updates before this one (EDM's cur_nimg), so the first
 * update of a ramped EMA has rate 0 and copies the weights. Example: EDM's CIFAR-10 recipe is
 * halflife 500k images, ramp-up 0.05, batch 512. */
double ema_halflife_beta(double halflife_images, double rampup_ratio, double images_seen, long batch);

typedef enum EmaKind { EMA_CONSTANT, EMA_HALFLIFE } EmaKind;

typedef struct Ema {
    EmaKind kind;
    float rate;                  /* EMA_CONSTANT: the rate of every update */
    double halflife_images;      /* EMA_HALFLIFE: EDM's schedule (ema_halflife_beta) */
    double rampup_ratio;
    char name[32];               /* "0.9999", "hl500000": the checkpoint group weights/ema/<name> */
    float *w;                    /* n floats */
} Ema;

/* Any number of EMAs of one set of weights, each with its own rate or schedule. */
typedef struct EmaSet {
    Ema *items;
    int count;
    size_t n;
} EmaSet;

void ema_set_init(EmaSet *s, size_t n);
void ema_set_free(EmaSet *s);
/* Add an EMA that starts as a copy of w; returns its index. Names must differ (abort). */
int ema_set_add_rate(EmaSet *s, float rate, const float *w);
int ema_set_add_halflife(EmaSet *s, double halflife_images, double rampup_ratio, const float *w);
/* The rate EMA i applies at this update (images_seen and batch as in ema_halflife_beta). */
double ema_set_beta(const EmaSet *s, int i, double images_seen, long batch);
/* Updates every EMA from w: constant rates by ema_update, half-life schedules by ema_lerp. */
void ema_set_update(EmaSet *s, const float *w, double images_seen, long batch);

#endif
