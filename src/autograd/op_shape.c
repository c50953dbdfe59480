/* op_shape.c: ops that move elements without arithmetic (reshape, channel concat, nearest 2x
 * upsample) and the 2x2 average pool. Forward and backward side by side. */
#include <string.h>

#include "ops.h"

#define PAR_MIN 4096

/* ---- reshape: shares x's data (ops never write their inputs, so sharing is safe) ---- */

Tensor *op_reshape(Ctx *c, Tensor *x, int ndim, const int *shape)
{
    Tensor *y = tensor_wrap(c, x->data, NULL, ndim, shape, false);
    if (y->n != x->n) {
        char sx[64], sy[64];
        cm_abort(__FILE__, __LINE__, "reshape: %s and %s differ in element count",
                 tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(y, sy, sizeof sy));
    }
    tape_record(c, OP_RESHAPE, y, 1, (Tensor *[]){x});
    return y;
}

void reshape_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    float *gx = tensor_grad(c, e->in[0]);
    const float *gy = e->out->grad;
    size_t n = e->out->n;
    #pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) gx[i] += gy[i];
}

/* ---- concat along dim 1: each sample is [C0 block | C1 block | ...] ---- */

/* inner = product of the dims after dim 1 */
static size_t inner_size(const Tensor *t)
{
    size_t s = 1;
    for (int d = 2; d < t->ndim; d++) s *= (size_t)t->shape[d];
    return s;
}

Tensor *op_concat(Ctx *c, int n, Tensor *const *xs)
{
    CM_ASSERT(n >= 1 && n <= TAPE_MAX_INPUTS, "concat: %d inputs (1 to %d)", n, TAPE_MAX_INPUTS);
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    CM_ASSERT(xs[0]->ndim >= 2, "concat: inputs need at least 2 dims");
    for (int i = 1; i < n; i++) {
        bool ok = xs[i]->ndim == xs[0]->ndim;
        for (int d = 0; ok && d < xs[0]->ndim; d++)
            ok = d == 1 || xs[i]->shape[d] == xs[0]->shape[d];
        if (!ok) {
            char a[64], b[64];
            cm_abort(__FILE__, __LINE__, "concat: %s and %s differ outside dim 1",
                     tensor_shape_str(xs[0], a, sizeof a), tensor_shape_str(xs[i], b, sizeof b));
        }
        shape[1] += xs[i]->shape[1];
    }
    Tensor *y = tensor_new(c, xs[0]->ndim, shape);
    int N = shape[0];
    size_t inner = inner_size(y), ystride = (size_t)shape[1] * inner, off = 0;
    for (int i = 0; i < n; i++) {
        size_t len = (size_t)xs[i]->shape[1] * inner;
        #pragma omp parallel for if (y->n >= PAR_MIN)
        for (int s = 0; s < N; s++)
            memcpy(y->data + s * ystride + off, xs[i]->data + s * len, len * sizeof(float));
        off += len;
    }
    tape_record(c, OP_CONCAT, y, n, xs);
    return y;
}

void concat_backward(Ctx *c, TapeEntry *e)
{
    const Tensor *y = e->out;
    int N = y->shape[0];
    size_t inner = inner_size(y), ystride = (size_t)y->shape[1] * inner, off = 0;
    for (int i = 0; i < e->nin; i++) {
        size_t len = (size_t)e->in[i]->shape[1] * inner;
        if (entry_needs_grad(e, i)) {
            float *gx = tensor_grad(c, e->in[i]);
            #pragma omp parallel for if (y->n >= PAR_MIN)
            for (int s = 0; s < N; s++) {
                const float *gy = y->grad + s * ystride + off;
                for (size_t k = 0; k < len; k++) gx[s * len + k] += gy[k];
            }
        }
        off += len;
    }
}

/* ---- nearest 2x upsample: y[2i+a, 2j+b] = x[i, j] ---- */

static void check_4d(const char *op, const Tensor *x)
{
    char s[64];
    CM_ASSERT(x->ndim == 4, "%s: needs [N,C,H,W], got %s", op, tensor_shape_str(x, s, sizeof s));
}

Tensor *op_upsample(Ctx *c, Tensor *x)
{
    check_4d("upsample", x);
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    Tensor *y = TENSOR_NEW(c, x->shape[0], x->shape[1], 2 * H, 2 * W);
    #pragma omp parallel for if (y->n >= PAR_MIN)
    for (int p = 0; p < NC; p++) {
        const float *src = x->data + (size_t)p * H * W;
        float *dst = y->data + (size_t)p * 4 * H * W;
        for (int i = 0; i < H; i++) {
            float *r0 = dst + (size_t)(2 * i) * 2 * W, *r1 = r0 + 2 * W;
            for (int j = 0; j < W; j++) r0[2 * j] = r0[2 * j + 1] = src[i * W + j];
            memcpy(r1, r0, 2 * (size_t)W * sizeof(float));
        }
    }
    tape_record(c, OP_UPSAMPLE, y, 1, (Tensor *[]){x});
    return y;
}

void upsample_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    const Tensor *x = e->in[0];
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    float *gx = tensor_grad(c, e->in[0]);
    #pragma omp parallel for if (e->out->n >= PAR_MIN)
    for (int p = 0; p < NC; p++) {
        const float *gy = e->out->grad + (size_t)p * 4 * H * W;
        for (int i = 0; i < H; i++) {
            const float *r0 = gy + (size_t)(2 * i) * 2 * W, *r1 = r0 + 2 * W;
            for (int j = 0; j < W; j++)
                gx[(size_t)p * H * W + i * W + j] += r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1];
        }
    }
}

/* ---- 2x2 average pool, stride 2; an odd last row/column is dropped (PyTorch's floor) ---- */

Tensor *op_avgpool(Ctx *c, Tensor *x)
{
    check_4d("avgpool", x);
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int Ho = H / 2, Wo = W / 2;
    char s[64];
    CM_ASSERT(Ho >= 1 && Wo >= 1, "avgpool: input %s smaller than 2x2", tensor_shape_str(x, s, sizeof s));
    Tensor *y = TENSOR_NEW(c, x->shape[0], x->shape[1], Ho, Wo);
    #pragma omp parallel for if (x->n >= PAR_MIN)
    for (int p = 0; p < NC; p++) {
        const float *src = x->data + (size_t)p * H * W;
        float *dst = y->data + (size_t)p * Ho * Wo;
        for (int i = 0; i < Ho; i++) {
            const float *r0 = src + (size_t)(2 * i) * W, *r1 = r0 + W;
            for (int j = 0; j < Wo; j++)
                dst[i * Wo + j] = 0.25f * (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]);
        }
    }
    tape_record(c, OP_AVGPOOL, y, 1, (Tensor *[]){x});
    return y;
}

void avgpool_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    const Tensor *x = e->in[0];
    int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    int Ho = H / 2, Wo = W / 2;
    float *gx = tensor_grad(c, e->in[0]);
    #pragma omp parallel for if (x->n >= PAR_MIN)
    for (int p = 0; p < NC; p++) {
        const float *gy = e->out->grad + (size_t)p * Ho * Wo;
        float *g = gx + (size_t)p * H * W;
        for (int i = 0; i < Ho; i++) {
            float *r0 = g + (size_t)(2 * i) * W, *r1 = r0 + W;
            for (int j = 0; j < Wo; j++) {
                float v = 0.25f * gy[i * Wo + j];
                r0[2 * j] += v; r0[2 * j + 1] += v; r1[2 * j] += v; r1[2 * j + 1] += v;
            }
        }
    }
}
