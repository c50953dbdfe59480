/* op_cross_entropy.c: the per-sample softmax cross-entropy of a classifier, forward and backward.
 *
 *   logits x [N,K], labels y [N] (class indices stored as floats, 0 <= y < K, exact integers)
 *   loss_n = logsumexp_k x_nk - x_n,y_n            (PyTorch F.cross_entropy, reduction='none')
 *   d loss_n / d x_nk = softmax(x_n)_k - [k == y_n]
 * The log-sum-exp subtracts the row maximum first (no overflow) and sums in double. The labels
 * are data, never differentiated: they must not require a gradient. The softmax of each row is
 * saved for the backward (N*K floats in the arena). */
#include <math.h>

#include "ops.h"

#define PAR_MIN 4096

/* The class of sample n, checked: a label outside [0, K) or not an integer is a programmer error
 * (the loader hands out labels 0..9), and would silently read another row's logit. */
static int label_at(const Tensor *y, int n, int K)
{
    float v = y->data[n];
    int k = (int)v;
    CM_ASSERT((float)k == v && k >= 0 && k < K, "cross_entropy: label %g of sample %d is not a class "
              "index in [0, %d)", (double)v, n, K);
    return k;
}

Tensor *op_cross_entropy(Ctx *c, Tensor *x, Tensor *y)
{
    char sx[64], sy[64];
    CM_ASSERT(x->ndim == 2 && y->ndim == 1 && y->shape[0] == x->shape[0],
              "cross_entropy: logits %s and labels %s (want [N,K] and [N])",
              tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(y, sy, sizeof sy));
    CM_ASSERT(!y->requires_grad, "cross_entropy: the labels must not require a gradient");
    int N = x->shape[0], K = x->shape[1];
    for (int n = 0; n < N; n++) label_at(y, n, K);
    Tensor *out = TENSOR_NEW(c, N);
    float *p = arena_alloc(&c->arena, x->n * sizeof(float));   /* softmax rows */
    #pragma omp parallel for if (x->n >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x->data + (size_t)n * K;
        float *pr = p + (size_t)n * K;
        float mx = xr[0];
        for (int k = 1; k < K; k++) mx = fmaxf(mx, xr[k]);
        double s = 0;
        for (int k = 0; k < K; k++) s += exp((double)xr[k] - mx);
        for (int k = 0; k < K; k++) pr[k] = (float)(exp((double)xr[k] - mx) / s);
        out->data[n] = (float)(mx + log(s) - xr[(int)y->data[n]]);
    }
    TapeEntry *e = tape_record(c, OP_CROSS_ENTROPY, out, 2, (Tensor *[]){x, y});
    if (e) e->saved = p;
    return out;
}

void cross_entropy_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    const Tensor *x = e->in[0], *y = e->in[1];
    int N = x->shape[0], K = x->shape[1];
    const float *p = e->saved;
    float *gx = tensor_grad(c, e->in[0]);
    #pragma omp parallel for if (x->n >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float g = e->out->grad[n];
        int yn = (int)y->data[n];
        for (int k = 0; k < K; k++)
            gx[(size_t)n * K + k] += g * (p[(size_t)n * K + k] - (k == yn ? 1.0f : 0.0f));
    }
}
