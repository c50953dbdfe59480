/* op_elementwise.c: binary ops with numpy broadcasting (add, sub, mul, div), the scalar affine
 * map (scale), unary math (exp, log, sin, cos, sqrt, pow), activations (silu, sigmoid) and
 * dropout. Forward and backward side by side.
 *
 * Broadcasting: shapes are right-aligned to 4 dims (A0..A3); a dim of 1 stretches. The backward
 * of a stretched operand sums the upstream gradient over the stretched dims (reduce_broadcast),
 * parallel over the operand's own elements so that no two threads write the same element.
 */
#include <math.h>
#include <string.h>

#include "fastmath.h"
#include "ops.h"

#define PAR_MIN 4096   /* below this many elements a parallel region costs more than it saves */

/* ---- broadcasting helpers ---- */

static void shape4(const Tensor *t, int s[4])
{
    for (int d = 0; d < 4; d++) s[d] = tensor_dim_r(t, 3 - d);
}

/* Output shape of a (op) b; aborts naming the op and both shapes when they do not broadcast. */
static Tensor *broadcast_out(Ctx *c, const char *op, const Tensor *a, const Tensor *b)
{
    int sa[4], sb[4], so[4];
    shape4(a, sa);
    shape4(b, sb);
    for (int d = 0; d < 4; d++) {
        if (sa[d] != sb[d] && sa[d] != 1 && sb[d] != 1) {
            char xa[64], xb[64];
            cm_abort(__FILE__, __LINE__, "%s: shapes %s and %s do not broadcast", op,
                     tensor_shape_str(a, xa, sizeof xa), tensor_shape_str(b, xb, sizeof xb));
        }
        so[d] = sa[d] > sb[d] ? sa[d] : sb[d];
    }
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    return tensor_new(c, nd, so + 4 - nd);
}

/* Element strides of a (possibly stretched) operand over the 4-d output index space. */
static void bstrides(const int s[4], size_t st[4])
{
    size_t acc = 1;
    for (int d = 3; d >= 0; d--) {
        st[d] = s[d] == 1 ? 0 : acc;
        acc *= (size_t)s[d];
    }
}

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV } BinKind;

static inline float bin_apply(BinKind k, float x, float y)
{
    switch (k) {
    case BIN_ADD: return x + y;
    case BIN_SUB: return x - y;
    case BIN_MUL: return x * y;
    default:      return x / y;
    }
}

static Tensor *binary(Ctx *c, OpKind op, BinKind k, Tensor *a, Tensor *b)
{
    Tensor *y = broadcast_out(c, OPS[op].name, a, b);
    const float *pa = a->data, *pb = b->data;
    float *py = y->data;
    if (a->n == y->n && b->n == y->n) {
        #pragma omp parallel for if (y->n >= PAR_MIN)
        for (size_t i = 0; i < y->n; i++) py[i] = bin_apply(k, pa[i], pb[i]);
    } else {
        int sa[4], sb[4], so[4];
        size_t ta[4], tb[4];
        shape4(a, sa);
        shape4(b, sb);
        shape4(y, so);
        bstrides(sa, ta);
        bstrides(sb, tb);
        int rows = so[0] * so[1] * so[2], W = so[3];
        #pragma omp parallel for if (y->n >= PAR_MIN)
        for (int r = 0; r < rows; r++) {
            int i0 = r / (so[1] * so[2]), i1 = r / so[2] % so[1], i2 = r % so[2];
            const float *ra = pa + i0 * ta[0] + i1 * ta[1] + i2 * ta[2];
            const float *rb = pb + i0 * tb[0] + i1 * tb[1] + i2 * tb[2];
            float *ry = py + (size_t)r * W;
            for (int i3 = 0; i3 < W; i3++) ry[i3] = bin_apply(k, ra[i3 * ta[3]], rb[i3 * tb[3]]);
        }
    }
    tape_record(c, op, y, 2, (Tensor *[]){a, b});
    return y;
}

/* dst[shape ds] += sum of src[shape so] over the dims where ds is 1 and so is not. */
static void reduce_broadcast(float *dst, const int ds[4], const float *src, const int so[4])
{
    size_t nd = (size_t)ds[0] * ds[1] * ds[2] * ds[3];
    size_t ns = (size_t)so[0] * so[1] * so[2] * so[3];
    if (nd == ns) {
        #pragma omp parallel for if (nd >= PAR_MIN)
        for (size_t i = 0; i < nd; i++) dst[i] += src[i];
        return;
    }
    #pragma omp parallel for if (ns >= PAR_MIN && nd > 1)
    for (size_t j = 0; j < nd; j++) {
        int idx[4], lo[4], hi[4];
        size_t r = j;
        for (int d = 3; d >= 0; d--) { idx[d] = (int)(r % (size_t)ds[d]); r /= (size_t)ds[d]; }
        for (int d = 0; d < 4; d++) {
            lo[d] = ds[d] == 1 ? 0 : idx[d];
            hi[d] = ds[d] == 1 ? so[d] : idx[d] + 1;
        }
        double s = 0;
        for (int i0 = lo[0]; i0 < hi[0]; i0++)
            for (int i1 = lo[1]; i1 < hi[1]; i1++)
                for (int i2 = lo[2]; i2 < hi[2]; i2++) {
                    const float *row = src + (((size_t)i0 * so[1] + i1) * so[2] + i2) * so[3];
                    for (int i3 = lo[3]; i3 < hi[3]; i3++) s += row[i3];
                }
        dst[j] += (float)s;
    }
}

/* Broadcast operand values to the output's full shape (for mul/div backward). */
static float *expand(Ctx *c, const Tensor *t, const Tensor *out)
{
    if (t->n == out->n) return t->data;
    int st[4], so[4];
    size_t tt[4];
    shape4(t, st);
    shape4(out, so);
    bstrides(st, tt);
    float *buf = arena_alloc(&c->arena, out->n * sizeof(float));
    int rows = so[0] * so[1] * so[2], W = so[3];
    #pragma omp parallel for if (out->n >= PAR_MIN)
    for (int r = 0; r < rows; r++) {
        int i0 = r / (so[1] * so[2]), i1 = r / so[2] % so[1], i2 = r % so[2];
        const float *src = t->data + i0 * tt[0] + i1 * tt[1] + i2 * tt[2];
        for (int i3 = 0; i3 < W; i3++) buf[(size_t)r * W + i3] = src[i3 * tt[3]];
    }
    return buf;
}

/* Accumulate g (output-shaped) into operand i's gradient, reducing stretched dims. */
static void accumulate(Ctx *c, TapeEntry *e, int i, const float *g)
{
    int st[4], so[4];
    shape4(e->in[i], st);
    shape4(e->out, so);
    reduce_broadcast(tensor_grad(c, e->in[i]), st, g, so);
}

Tensor *op_add(Ctx *c, Tensor *a, Tensor *b) { return binary(c, OP_ADD, BIN_ADD, a, b); }
Tensor *op_sub(Ctx *c, Tensor *a, Tensor *b) { return binary(c, OP_SUB, BIN_SUB, a, b); }
Tensor *op_mul(Ctx *c, Tensor *a, Tensor *b) { return binary(c, OP_MUL, BIN_MUL, a, b); }
Tensor *op_div(Ctx *c, Tensor *a, Tensor *b) { return binary(c, OP_DIV, BIN_DIV, a, b); }

void add_backward(Ctx *c, TapeEntry *e)
{
    for (int i = 0; i < 2; i++)
        if (entry_needs_grad(e, i)) accumulate(c, e, i, e->out->grad);
}

void sub_backward(Ctx *c, TapeEntry *e)
{
    if (entry_needs_grad(e, 0)) accumulate(c, e, 0, e->out->grad);
    if (entry_needs_grad(e, 1)) {
        size_t n = e->out->n;
        const float *gy = e->out->grad;
        float *neg = arena_alloc(&c->arena, n * sizeof(float));
        #pragma omp parallel for if (n >= PAR_MIN)
        for (size_t k = 0; k < n; k++) neg[k] = -gy[k];
        accumulate(c, e, 1, neg);
    }
}

/* y = a*b:  da = gy*b,  db = gy*a (then reduced over stretched dims). */
void mul_backward(Ctx *c, TapeEntry *e)
{
    size_t n = e->out->n;
    const float *gy = e->out->grad;
    float *t = arena_alloc(&c->arena, n * sizeof(float));
    for (int i = 0; i < 2; i++) {
        if (!entry_needs_grad(e, i)) continue;
        const float *other = expand(c, e->in[1 - i], e->out);
        #pragma omp parallel for if (n >= PAR_MIN)
        for (size_t k = 0; k < n; k++) t[k] = gy[k] * other[k];
        accumulate(c, e, i, t);
    }
}

/* y = a/b:  da = gy/b,  db = -gy*a/b^2 = -gy*y/b. */
void div_backward(Ctx *c, TapeEntry *e)
{
    size_t n = e->out->n;
    const float *gy = e->out->grad, *y = e->out->data;
    const float *b = expand(c, e->in[1], e->out);
    float *t = arena_alloc(&c->arena, n * sizeof(float));
    if (entry_needs_grad(e, 0)) {
        #pragma omp parallel for if (n >= PAR_MIN)
        for (size_t k = 0; k < n; k++) t[k] = gy[k] / b[k];
        accumulate(c, e, 0, t);
    }
    if (entry_needs_grad(e, 1)) {
        #pragma omp parallel for if (n >= PAR_MIN)
        for (size_t k = 0; k < n; k++) t[k] = -gy[k] * y[k] / b[k];
        accumulate(c, e, 1, t);
    }
}

/* ---- unary ops ----
 * Each forward is one loop; each backward reads x (in[0]) or y (out), whichever gives the
 * cheaper derivative. */

#define UNARY_FORWARD(OPK, expr)                                         \
    Tensor *y = tensor_like(c, x);                                       \
    const float *px = x->data;                                           \
    float *py = y->data;                                                 \
    _Pragma("omp parallel for simd if (x->n >= PAR_MIN)")                     \
    for (size_t i = 0; i < x->n; i++) { float v = px[i]; py[i] = (expr); } \
    TapeEntry *e = tape_record(c, OPK, y, 1, (Tensor *[]){x});           \
    (void)e;

#define UNARY_BACKWARD(dexpr)                                            \
    if (!entry_needs_grad(e, 0)) return;                                 \
    const float *x = e->in[0]->data, *y = e->out->data, *gy = e->out->grad; \
    float *gx = tensor_grad(c, e->in[0]);                                \
    size_t n = e->out->n;                                                \
    (void)x; (void)y;                                                    \
    _Pragma("omp parallel for simd if (n >= PAR_MIN)")                        \
    for (size_t i = 0; i < n; i++) gx[i] += gy[i] * (dexpr);

Tensor *op_scale(Ctx *c, Tensor *x, float alpha, float beta)
{
    UNARY_FORWARD(OP_SCALE, alpha * v + beta)
    if (e) e->farg[0] = alpha;
    return y;
}
void scale_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(e->farg[0]) }

Tensor *op_exp(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_EXP, expf(v)) return y; }
void exp_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(y[i]) }

Tensor *op_log(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_LOG, logf(v)) return y; }
void log_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(1.0f / x[i]) }

Tensor *op_sin(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_SIN, sinf(v)) return y; }
void sin_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(cosf(x[i])) }

Tensor *op_cos(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_COS, cosf(v)) return y; }
void cos_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(-sinf(x[i])) }

Tensor *op_sqrt(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_SQRT, sqrtf(v)) return y; }
void sqrt_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(0.5f / y[i]) }

Tensor *op_pow(Ctx *c, Tensor *x, float p)
{
    UNARY_FORWARD(OP_POW, powf(v, p))
    if (e) e->farg[0] = p;
    return y;
}
/* d/dx x^p = p x^(p-1), computed from x (not y/x, which fails at x = 0 for p >= 1). */
void pow_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(e->farg[0] * powf(x[i], e->farg[0] - 1.0f)) }

Tensor *op_sigmoid(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_SIGMOID, cm_sigmoidf(v)) return y; }
void sigmoid_backward(Ctx *c, TapeEntry *e) { UNARY_BACKWARD(y[i] * (1.0f - y[i])) }

/* silu(x) = x s(x);  silu'(x) = s(x) (1 + x (1 - s(x))). */
Tensor *op_silu(Ctx *c, Tensor *x) { UNARY_FORWARD(OP_SILU, v * cm_sigmoidf(v)) return y; }
void silu_backward(Ctx *c, TapeEntry *e)
{
    UNARY_BACKWARD(cm_sigmoidf(x[i]) * (1.0f + x[i] * (1.0f - cm_sigmoidf(x[i]))))
}

/* ---- dropout ---- */

Tensor *op_dropout(Ctx *c, Tensor *x, float p, const Rng *rng, int sample0)
{
    CM_ASSERT(p >= 0.0f && p < 1.0f, "dropout: p = %g outside [0, 1)", (double)p);
    if (p == 0.0f) return x;
    int N = x->shape[0];
    size_t per = x->n / (size_t)N;
    float *mask = arena_alloc(&c->arena, x->n * sizeof(float));
    rng_bernoulli(rng, mask, N, sample0, per, 1.0f - p);
    float inv = 1.0f / (1.0f - p);
    Tensor *y = tensor_like(c, x);
    #pragma omp parallel for if (x->n >= PAR_MIN)
    for (size_t i = 0; i < x->n; i++) y->data[i] = x->data[i] * mask[i] * inv;
    TapeEntry *e = tape_record(c, OP_DROPOUT, y, 1, (Tensor *[]){x});
    if (e) {
        e->saved = mask;
        e->farg[0] = inv;
    }
    return y;
}

void dropout_backward(Ctx *c, TapeEntry *e)
{
    const float *mask = e->saved;
    float inv = e->farg[0];
    UNARY_BACKWARD(mask[i] * inv)
}
