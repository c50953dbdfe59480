/* optim.h: optimisers and weight averages over flat buffers (one loop each).
 *
 * Adam / AdamW follow PyTorch's torch.optim definitions exactly (bias corrections applied as
 * step_size = lr / (1 - b1^t), denom = sqrt(v) / sqrt(1 - b2^t) + eps), so that a test can match
 * them step for step. */
#ifndef CM_OPTIM_H
#define CM_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

typedef struct Adam {
    float lr, beta1, beta2, eps, weight_decay;
    bool decoupled;              /* AdamW: decay the weights, not the gradient */
    long step;
    size_t n;
    float *m, *v;                /* flat, in the parameter layout */
} Adam;

void adam_init(Adam *a, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled);
void adam_free(Adam *a);
void adam_step(Adam *a, float *w, const float *g);

/* ema = rate * ema + (1 - rate) * w */
void ema_update(float *ema, const float *w, size_t n, float rate);
/* Global L2 norm of g; scales g down to max_norm when larger (max_norm <= 0: no clipping). */
double grad_clip(float *g, size_t n, double max_norm);

#endif
