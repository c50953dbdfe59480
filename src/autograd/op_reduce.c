/* op_reduce.c: full reductions (sum, mean -> [1]) and the per-sample distances the trainers use
 * as losses (mse, l1, pseudo-Huber: [N,...] x [N,...] -> [N]). Sums run in double so a loss over
 * a whole batch of images does not lose digits. Forward and backward side by side. */
#include <math.h>

#include "ops.h"

#define PAR_MIN 4096

static double sum_all(const float *x, size_t n)
{
    double s = 0;
    #pragma omp parallel for reduction(+ : s) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

Tensor *op_sum(Ctx *c, Tensor *x)
{
    Tensor *y = TENSOR_NEW(c, 1);
    y->data[0] = (float)sum_all(x->data, x->n);
    tape_record(c, OP_SUM, y, 1, (Tensor *[]){x});
    return y;
}

void sum_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    float *gx = tensor_grad(c, e->in[0]), g = e->out->grad[0];
    size_t n = e->in[0]->n;
    #pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += g;
}

Tensor *op_mean(Ctx *c, Tensor *x)
{
    Tensor *y = TENSOR_NEW(c, 1);
    y->data[0] = (float)(sum_all(x->data, x->n) / (double)x->n);
    tape_record(c, OP_MEAN, y, 1, (Tensor *[]){x});
    return y;
}

void mean_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    size_t n = e->in[0]->n;
    float *gx = tensor_grad(c, e->in[0]), g = e->out->grad[0] / (float)n;
    #pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += g;
}

/* ---- per-sample distances ---- */

typedef enum { DIST_MSE, DIST_L1, DIST_HUBER } DistKind;

/* Per-sample sum of (a-b)^2 or |a-b| over the K = n/N elements of each sample. */
static Tensor *distance(Ctx *c, OpKind op, DistKind kind, Tensor *a, Tensor *b, float huber_c)
{
    check_same_shape(OPS[op].name, a, b);
    int N = a->shape[0];
    size_t K = a->n / (size_t)N;
    Tensor *y = TENSOR_NEW(c, N);
    float *norm = NULL;   /* pseudo-Huber: sqrt(||a-b||^2 + c^2) per sample, for the backward */
    if (kind == DIST_HUBER) norm = arena_alloc(&c->arena, (size_t)N * sizeof(float));
    #pragma omp parallel for if (a->n >= PAR_MIN)
    for (int s = 0; s < N; s++) {
        const float *pa = a->data + s * K, *pb = b->data + s * K;
        double acc = 0;
        for (size_t k = 0; k < K; k++) {
            double d = (double)pa[k] - pb[k];
            acc += kind == DIST_L1 ? fabs(d) : d * d;
        }
        if (kind == DIST_HUBER) {
            double r = sqrt(acc + (double)huber_c * huber_c);
            norm[s] = (float)r;
            y->data[s] = (float)(r - huber_c);
        } else {
            y->data[s] = (float)(acc / (double)K);
        }
    }
    TapeEntry *e = tape_record(c, op, y, 2, (Tensor *[]){a, b});
    if (e) e->saved = norm;
    return y;
}

/* d/da of each distance, per element, times the sample's upstream gradient g:
 *   mse:   2 (a-b) / K          l1: sign(a-b) / K          pseudo-Huber: (a-b) / r,
 * with r = sqrt(||a-b||^2 + c^2); r = 0 (c = 0 and a = b) takes the subgradient 0, as l1 does at
 * a = b. The gradient for b is the negative. */
static void distance_backward(Ctx *c, TapeEntry *e, DistKind kind)
{
    const Tensor *a = e->in[0], *b = e->in[1];
    int N = a->shape[0];
    size_t K = a->n / (size_t)N;
    const float *norm = e->saved;
    float *ga = entry_needs_grad(e, 0) ? tensor_grad(c, e->in[0]) : NULL;
    float *gb = entry_needs_grad(e, 1) ? tensor_grad(c, e->in[1]) : NULL;
    #pragma omp parallel for if (a->n >= PAR_MIN)
    for (int s = 0; s < N; s++) {
        float g = e->out->grad[s];
        float scale = kind == DIST_MSE ? 2.0f * g / (float)K
                    : kind == DIST_L1  ? g / (float)K
                                       : norm[s] > 0 ? g / norm[s] : 0.0f;
        for (size_t k = s * K; k < (s + 1) * K; k++) {
            float d = a->data[k] - b->data[k];
            float v = kind == DIST_L1 ? (d > 0 ? scale : d < 0 ? -scale : 0.0f) : scale * d;
            if (ga) ga[k] += v;
            if (gb) gb[k] -= v;
        }
    }
}

Tensor *op_mse(Ctx *c, Tensor *a, Tensor *b) { return distance(c, OP_MSE, DIST_MSE, a, b, 0); }
void mse_backward(Ctx *c, TapeEntry *e) { distance_backward(c, e, DIST_MSE); }

Tensor *op_l1(Ctx *c, Tensor *a, Tensor *b) { return distance(c, OP_L1, DIST_L1, a, b, 0); }
void l1_backward(Ctx *c, TapeEntry *e) { distance_backward(c, e, DIST_L1); }

Tensor *op_pseudo_huber(Ctx *c, Tensor *a, Tensor *b, float huber_c)
{
    CM_ASSERT(huber_c >= 0, "pseudo_huber: c = %g must not be negative", (double)huber_c);
    return distance(c, OP_PSEUDO_HUBER, DIST_HUBER, a, b, huber_c);
}
void pseudo_huber_backward(Ctx *c, TapeEntry *e) { distance_backward(c, e, DIST_HUBER); }
