#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

void adam_init(Adam *a, size_t n, float lr, float beta1, float beta2, float eps, float weight_decay, bool decoupled)
{
    memset(a, 0, sizeof *a);
    a->lr = lr;
    a->beta1 = beta1;
    a->beta2 = beta2;
    a->eps = eps;
    a->weight_decay = weight_decay;
    a->decoupled = decoupled;
    a->n = n;
    a->m = cm_calloc(n, sizeof(float));
    a->v = cm_calloc(n, sizeof(float));
}

void adam_free(Adam *a)
{
    free(a->m);
    free(a->v);
    memset(a, 0, sizeof *a);
}

void adam_step(Adam *a, float *w, const float *g)
{
    a->step++;
    float b1 = a->beta1, b2 = a->beta2, lr = a->lr, wd = a->weight_decay;
    float bc1 = 1.0f - powf(b1, (float)a->step), bc2 = 1.0f - powf(b2, (float)a->step);
    float step_size = lr / bc1, inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
    float *m = a->m, *v = a->v;
    bool decoupled = a->decoupled;
    #pragma omp parallel for simd if (a->n >= 16384)
    for (size_t i = 0; i < a->n; i++) {
        float gi = g[i];
        if (decoupled) w[i] *= 1.0f - lr * wd;
        else gi += wd * w[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        w[i] -= step_size * m[i] / (sqrtf(v[i]) * inv_sqrt_bc2 + a->eps);
    }
}

void ema_update(float *ema, const float *w, size_t n, float rate)
{
    #pragma omp parallel for simd if (n >= 16384)
    for (size_t i = 0; i < n; i++) ema[i] = rate * ema[i] + (1.0f - rate) * w[i];
}

double grad_clip(float *g, size_t n, double max_norm)
{
    double s = 0;
    #pragma omp parallel for reduction(+ : s) if (n >= 16384)
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        float k = (float)(max_norm / (norm + 1e-6));
        #pragma omp parallel for simd if (n >= 16384)
        for (size_t i = 0; i < n; i++) g[i] *= k;
    }
    return norm;
}
