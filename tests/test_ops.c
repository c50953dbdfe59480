/* test_ops.c OPS.h5: every op of src/autograd/ops.h against PyTorch and finite differences.
 *
 * OPS.h5 is written by tests/torch/ops.py on every build. Each case /cases/<op>.<label> holds the
 * inputs at fixed slots in0..in3 (an absent optional input, a missing bias, is not there), the
 * upstream gradient gout, PyTorch's output `out` and its gradients grad_inK of sum(out * gout)
 * for the inputs that require one. For every case this test
 *   1. runs the op on the wrapped inputs and compares the output with PyTorch's;
 *   2. sweeps the tape once with seed gout and compares every gradient with PyTorch's; an input
 *      that requires no gradient must still have grad == NULL
 *      (the element-wise ops of one input, exp, log, sin, cos, sqrt, pow, silu, sigmoid, are
 *      compared element by element, |a - b| <= atol + rtol |b|: their outputs span decades, and
 *      an error in a small element hides behind the largest in a max-relative measure; the
 *      others by rel_error, max |a - b| / max |b|, as sums and products of many terms; the
 *      line of an element-wise case prints its worst element as a multiple of atol + rtol |b|);
 *   3. sweeps a second time: leaf gradients accumulate (+=), so they must double;
 *   4. reruns the op in a no-grad scope: nothing may be recorded, the output must be the same;
 *   5. runs gradcheck() (central differences, float32) on the same inputs and gout.
 * It fails when an op of OPS[] has no backward, no runner here, no case in the fixture or no
 * gradient check, and when the fixture names an op OPS[] does not know.
 *
 * Slots and arguments (the same table heads tests/torch/ops.py):
 *     op            slots                    iargs                               fargs
 *     conv2d        x, w, [b], [bn], [r], [nw], [nb]  [stride, pad(, groups)]  [scale(, eps)]
 *     linear        x, w, [b]                -                                   -
 *     matmul        a, b                     -                                   -
 *     bmm           a, b                     [ta, tb]                            -
 *     group_norm    x, [weight], [bias]      [groups]                            [eps]
 *     group_norm_silu  (as group_norm)
 *     softmax       x                        -                                   -
 *     add/sub/mul/div  a, b                  -                                   -
 *     scale         x                        -                                   [alpha, beta]
 *     exp/log/sin/cos/sqrt/silu/sigmoid  x   -                                   -
 *     pow           x                        -                                   [p]
 *     dropout       x                        [seed_lo, seed_hi, stream, step, sample0]  [p]
 *     reshape       x                        new shape                           -
 *     concat        x0..xk (dim 1, k <= 3)   -                                   -
 *     upsample, avgpool, sum, mean  x        -                                   -
 *     mse, l1       a, b                     -                                   -
 *     pseudo_huber  a, b                     -                                   [c]
 *     cross_entropy logits, labels (no grad)   -                                   -
 * Presence attrs `bias` (slot 2) and `weight` (slot 1) must agree with the datasets present.
 * A case's attr `gc_eps` replaces the op's finite-difference step (inputs on a small scale).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "fixture.h"

#define MAX_SLOTS TAPE_MAX_INPUTS
#define MAX_IARGS 8
#define MAX_FARGS 4
#define GC_MAX_ELEMS 64      /* finite differences on at most this many elements per input */
#define REL_FLOOR 1e-6       /* rel_error's floor: a zero reference compares absolute error */
#define ACCUM_TOL 1e-6       /* second sweep == 2 x first (bitwise unless a reduction reorders) */

typedef struct Case {
    char path[256];          /* /cases/<op>.<label> */
    char label[128];
    int op;                  /* OpKind, or -1 when OPS[] does not know the fixture's name */
    int iarg[MAX_IARGS], niarg;
    float farg[MAX_FARGS];
    int nfarg;
    int nslot;               /* slots 0..nslot-1 are in use; absent optional ones are NULL */
    float gc_eps;            /* the case's own finite-difference step; 0: the op's */
} Case;

/* Builds the op's output from the inputs at their slots. */
typedef Tensor *(*RunFn)(Ctx *c, Tensor *const *in, const Case *k);

typedef struct OpTest {
    RunFn run;
    float gc_eps;            /* central-difference step */
    double gc_tol;           /* largest gradcheck error (gradcheck.h's relative measure) */
    double torch_tol;        /* largest rel_error against PyTorch, forward and every gradient */
    double rtol, atol;       /* rtol > 0: element-wise instead, every |a - b| <= atol + rtol |b| */
} OpTest;

/* Aborts (a malformed fixture must fail, never pass) unless slots 0..need-1 are present, no slot
 * past max is used, and the argument counts match (niarg < 0: any count). */
static void expect(const Case *k, Tensor *const *in, int need, int max, int niarg, int nfarg)
{
    for (int s = 0; s < need; s++)
        CM_ASSERT(in[s], "%s: input in%d is missing", k->path, s);
    CM_ASSERT(k->nslot <= max, "%s: %d input slots, %s takes at most %d", k->path, k->nslot,
              OPS[k->op].name, max);
    CM_ASSERT(niarg < 0 || k->niarg == niarg, "%s: %d iargs, %s takes %d", k->path, k->niarg,
              OPS[k->op].name, niarg);
    CM_ASSERT(k->nfarg == nfarg, "%s: %d fargs, %s takes %d", k->path, k->nfarg, OPS[k->op].name,
              nfarg);
}

/* ---- runners: one per op, in OpKind order ---- */

static Tensor *run_conv2d(Ctx *c, Tensor *const *in, const Case *k)
{
    bool norm = k->niarg == 3;                 /* iargs [stride, pad, groups], fargs [scale, eps] */
    expect(k, in, 2, 7, norm ? 3 : 2, norm ? 2 : 1);
    if (k->nslot <= 3 && k->farg[0] == 1.0f)   /* the plain op, as layers call it */
        return op_conv2d(c, in[0], in[1], in[2], k->iarg[0], k->iarg[1]);
    Tensor *slot[7] = {0};
    for (int i = 0; i < k->nslot; i++) slot[i] = in[i];
    ConvFusion f = {.bias = slot[3], .residual = slot[4], .scale = k->farg[0],
                    .norm_weight = slot[5], .norm_bias = slot[6], .norm_groups = norm ? k->iarg[2] : 0,
                    .norm_eps = norm ? k->farg[1] : 0.0f};
    return op_conv2d_fused(c, in[0], in[1], in[2], k->iarg[0], k->iarg[1], &f);
}

static Tensor *run_linear(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 2, 3, 0, 0);
    return op_linear(c, in[0], in[1], in[2]);
}

static Tensor *run_matmul(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 2, 2, 0, 0);
    return op_matmul(c, in[0], in[1]);
}

static Tensor *run_bmm(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 2, 2, 2, 0);
    return op_bmm(c, in[0], in[1], k->iarg[0] != 0, k->iarg[1] != 0);
}

static Tensor *run_group_norm(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 3, 1, 1);
    return op_group_norm(c, in[0], in[1], in[2], k->iarg[0], k->farg[0]);
}

static Tensor *run_group_norm_silu(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 3, 1, 1);
    return op_group_norm_silu(c, in[0], in[1], in[2], k->iarg[0], k->farg[0]);
}

static Tensor *run_softmax(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 1, 0, 0);
    return op_softmax(c, in[0]);
}

#define BINARY_RUNNER(name)                                            \
    static Tensor *run_##name(Ctx *c, Tensor *const *in, const Case *k) \
    {                                                                  \
        expect(k, in, 2, 2, 0, 0);                                     \
        return op_##name(c, in[0], in[1]);                             \
    }
BINARY_RUNNER(add)
BINARY_RUNNER(sub)
BINARY_RUNNER(mul)
BINARY_RUNNER(div)

static Tensor *run_scale(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 1, 0, 2);
    return op_scale(c, in[0], k->farg[0], k->farg[1]);
}

#define UNARY_RUNNER(name)                                             \
    static Tensor *run_##name(Ctx *c, Tensor *const *in, const Case *k) \
    {                                                                  \
        expect(k, in, 1, 1, 0, 0);                                     \
        return op_##name(c, in[0]);                                    \
    }
UNARY_RUNNER(exp)
UNARY_RUNNER(log)
UNARY_RUNNER(sin)
UNARY_RUNNER(cos)
UNARY_RUNNER(sqrt)
UNARY_RUNNER(silu)
UNARY_RUNNER(sigmoid)

static Tensor *run_pow(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 1, 0, 1);
    return op_pow(c, in[0], k->farg[0]);
}

static Tensor *run_dropout(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 1, 5, 1);
    Rng r = {.seed = (uint64_t)(uint32_t)k->iarg[0] | (uint64_t)(uint32_t)k->iarg[1] << 32,
             .stream = (uint32_t)k->iarg[2], .step = (uint32_t)k->iarg[3]};
    return op_dropout(c, in[0], k->farg[0], &r, k->iarg[4]);
}

static Tensor *run_reshape(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 1, 1, -1, 0);
    CM_ASSERT(k->niarg >= 1 && k->niarg <= TENSOR_MAX_DIMS, "%s: reshape to %d dims", k->path,
              k->niarg);
    return op_reshape(c, in[0], k->niarg, k->iarg);
}

static Tensor *run_concat(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, k->nslot, MAX_SLOTS, 0, 0);
    return op_concat(c, k->nslot, in);
}

UNARY_RUNNER(upsample)
UNARY_RUNNER(avgpool)
UNARY_RUNNER(sum)
UNARY_RUNNER(mean)
BINARY_RUNNER(mse)
BINARY_RUNNER(l1)

static Tensor *run_pseudo_huber(Ctx *c, Tensor *const *in, const Case *k)
{
    expect(k, in, 2, 2, 0, 1);
    return op_pseudo_huber(c, in[0], in[1], k->farg[0]);
}

BINARY_RUNNER(cross_entropy)

/* Per-op steps and tolerances. gc_eps: 1e-2 where the objective is linear or quadratic in each
 * single element, or piecewise linear with every kink farther than the step (l1: ops.py keeps
 * |a - b| >= 0.1): finite differences are then exact up to rounding, and a larger step divides
 * the float32 rounding of the output by more. 1e-3 for the curved ops, where the O(eps^2)
 * truncation error must stay well below the tolerance. PyTorch: 1e-4 throughout (the reference
 * is float64; every op's float32 error is a few ulps times the length of its longest sum).
 *
 * Element-wise (rtol, atol) for the unary ops: each output is one float32 libm call (glibc's
 * expf, logf, sinf, cosf, powf: < 1 ulp; sqrtf: exact) or cm_expf (fastmath.h: 1-2 ulp) and a
 * division or product, and each gradient element one more product with gout: a few ulps of
 * 2^-23 = 1.2e-7 each, against a float64 reference rounded to float32 (half an ulp). rtol 1e-6
 * (8.4 ulps) holds that with a margin and fails a wrong value in any element, small or large.
 * atol is 0 where every step is relative (exp, log, sin, cos, sqrt, pow: no cancellation);
 * 1e-6 for silu and sigmoid, whose gradients subtract from 1 (1 - s, and 1 + x (1 - s) near
 * silu's minimum): the float32 s carries an absolute error up to ulp(1)/2 = 6e-8, times
 * |gout| <= 4 and |x| <= 30 in the cases. */
static const OpTest TESTS[OP_COUNT] = {
    [OP_CONV2D]       = {run_conv2d,       1e-2f, 1e-2, 1e-4},
    [OP_LINEAR]       = {run_linear,       1e-2f, 1e-2, 1e-4},
    [OP_MATMUL]       = {run_matmul,       1e-2f, 1e-2, 1e-4},
    [OP_BMM]          = {run_bmm,          1e-2f, 1e-2, 1e-4},
    [OP_GROUP_NORM]   = {run_group_norm,   1e-3f, 1e-2, 1e-4},
    [OP_GROUP_NORM_SILU] = {run_group_norm_silu, 1e-3f, 1e-2, 1e-4},
    [OP_SOFTMAX]      = {run_softmax,      1e-3f, 1e-2, 1e-4},
    [OP_ADD]          = {run_add,          1e-2f, 1e-2, 1e-4},
    [OP_SUB]          = {run_sub,          1e-2f, 1e-2, 1e-4},
    [OP_MUL]          = {run_mul,          1e-2f, 1e-2, 1e-4},
    [OP_DIV]          = {run_div,          1e-3f, 1e-2, 1e-4},
    [OP_SCALE]        = {run_scale,        1e-2f, 1e-2, 1e-4},
    [OP_EXP]          = {run_exp,          1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_LOG]          = {run_log,          1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_SIN]          = {run_sin,          1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_COS]          = {run_cos,          1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_SQRT]         = {run_sqrt,         1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_POW]          = {run_pow,          1e-3f, 1e-2, 0, 1e-6, 0},
    [OP_SILU]         = {run_silu,         1e-3f, 1e-2, 0, 1e-6, 1e-6},
    [OP_SIGMOID]      = {run_sigmoid,      1e-3f, 1e-2, 0, 1e-6, 1e-6},
    [OP_DROPOUT]      = {run_dropout,      1e-2f, 1e-2, 1e-4},
    [OP_RESHAPE]      = {run_reshape,      1e-2f, 1e-2, 1e-4},
    [OP_CONCAT]       = {run_concat,       1e-2f, 1e-2, 1e-4},
    [OP_UPSAMPLE]     = {run_upsample,     1e-2f, 1e-2, 1e-4},
    [OP_AVGPOOL]      = {run_avgpool,      1e-2f, 1e-2, 1e-4},
    [OP_SUM]          = {run_sum,          1e-2f, 1e-2, 1e-4},
    [OP_MEAN]         = {run_mean,         1e-2f, 1e-2, 1e-4},
    [OP_MSE]          = {run_mse,          1e-2f, 1e-2, 1e-4},
    [OP_L1]           = {run_l1,           1e-2f, 1e-2, 1e-4},
    [OP_PSEUDO_HUBER] = {run_pseudo_huber, 1e-3f, 1e-2, 1e-4},
    [OP_CROSS_ENTROPY] = {run_cross_entropy, 1e-3f, 1e-2, 1e-4},
};

/* ---- one case ---- */

/* A comparison with PyTorch: err against limit (pass: err <= limit), and for the element-wise
 * measure the worst element, so that a failure names it. */
typedef struct Cmp {
    double err, limit;
    size_t at;
    float got, want;
} Cmp;

static Cmp torch_compare(const OpTest *t, const float *a, const float *b, size_t n)
{
    if (t->rtol <= 0)
        return (Cmp){.err = rel_error(a, b, n, REL_FLOOR), .limit = t->torch_tol};
    Cmp c = {.limit = 1.0, .err = -1};
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]), allow = t->atol + t->rtol * fabs((double)b[i]);
        double r = d == 0 ? 0 : allow > 0 ? d / allow : INFINITY;
        if (isnan(r)) r = INFINITY;
        if (r > c.err) c = (Cmp){.err = r, .limit = 1.0, .at = i, .got = a[i], .want = b[i]};
    }
    return c;
}

/* "by 3.1e-05 (tol 1e-04)" or "at element 7: 0.12 vs 0.13, 2.3 x (atol 0e+00 + rtol 1e-06 |b|)". */
static const char *cmp_text(const OpTest *t, const Cmp *c, char *buf, size_t len)
{
    if (t->rtol <= 0) snprintf(buf, len, "by %.2e (tol %.0e)", c->err, c->limit);
    else snprintf(buf, len, "at element %zu: %.9g vs %.9g, %.3g x (atol %.0e + rtol %.0e |b|)", c->at,
                  (double)c->got, (double)c->want, c->err, t->atol, t->rtol);
    return buf;
}

typedef struct CaseData {
    float *data[MAX_SLOTS];  /* inputs; NULL: absent slot */
    int ndim[MAX_SLOTS], shape[MAX_SLOTS][TENSOR_MAX_DIMS];
    bool rg[MAX_SLOTS];
    char name[MAX_SLOTS][16];
    float *gout, *want;      /* upstream gradient and PyTorch's output, both of out's shape */
    int ondim, oshape[TENSOR_MAX_DIMS];
} CaseData;

/* gradcheck() passes the present inputs packed; this puts them back at their slots. */
typedef struct GcUser {
    const OpTest *t;
    const Case *k;
    int slot[MAX_SLOTS], n;
} GcUser;

static Tensor *gc_run(Ctx *c, Tensor **in, void *user)
{
    const GcUser *u = user;
    Tensor *slots[MAX_SLOTS] = {0};
    for (int i = 0; i < u->n; i++) slots[u->slot[i]] = in[i];
    return u->t->run(c, slots, u->k);
}

static void read_case(Fixture *f, Case *k, const char *name)
{
    snprintf(k->path, sizeof k->path, "/cases/%s", name);
    char op[64] = "";
    CM_ASSERT(fixture_attr_str(f, k->path, "op", op, sizeof op), "%s: no attr op", k->path);
    if (!fixture_attr_str(f, k->path, "label", k->label, sizeof k->label))
        snprintf(k->label, sizeof k->label, "%s", name);
    k->op = -1;
    for (int i = 0; i < OP_COUNT; i++)
        if (OPS[i].name && strcmp(OPS[i].name, op) == 0) k->op = i;
    CHECK(k->op >= 0, "%s: op \"%s\" is not in OPS[] (op_table.c)", k->path, op);
    k->niarg = fixture_attr_ints(f, k->path, "iargs", k->iarg, MAX_IARGS);
    k->nfarg = fixture_attr_floats(f, k->path, "fargs", k->farg, MAX_FARGS);
    k->gc_eps = (float)fixture_attr_double(f, k->path, "gc_eps", 0);
}

static void read_data(Fixture *f, Case *k, CaseData *x)
{
    memset(x, 0, sizeof *x);
    char p[300];
    k->nslot = 0;
    for (int s = 0; s < MAX_SLOTS; s++) {
        snprintf(p, sizeof p, "%s/in%d", k->path, s);
        if (!fixture_exists(f, p)) continue;
        x->data[s] = fixture_read(f, p, &x->ndim[s], x->shape[s]);
        long rg = fixture_attr_int(f, p, "requires_grad", -1);
        CM_ASSERT(rg == 0 || rg == 1, "%s: requires_grad is %ld (want 0 or 1)", p, rg);
        x->rg[s] = rg;
        if (!fixture_attr_str(f, p, "name", x->name[s], sizeof x->name[s]))
            snprintf(x->name[s], sizeof x->name[s], "in%d", s);
        k->nslot = s + 1;
    }
    CM_ASSERT(k->nslot > 0, "%s: no inputs", k->path);
    /* Presence flags of optional inputs must agree with the datasets (a fixture bug otherwise). */
    static const struct { const char *attr; int slot; } flags[] = {{"weight", 1}, {"bias", 2}};
    for (size_t i = 0; i < CM_ARRAY_LEN(flags); i++) {
        long v = fixture_attr_int(f, k->path, flags[i].attr, -1);
        bool present = x->data[flags[i].slot] != NULL;
        CHECK(v < 0 || v == present, "%s: attr %s=%ld but in%d is %s", k->path, flags[i].attr, v,
              flags[i].slot, present ? "present" : "absent");
    }
    snprintf(p, sizeof p, "%s/out", k->path);
    x->want = fixture_read(f, p, &x->ondim, x->oshape);
    int gndim, gshape[TENSOR_MAX_DIMS];
    snprintf(p, sizeof p, "%s/gout", k->path);
    x->gout = fixture_read(f, p, &gndim, gshape);
    CM_ASSERT(gndim == x->ondim && memcmp(gshape, x->oshape, sizeof(int) * (size_t)gndim) == 0,
              "%s: gout and out differ in shape", k->path);
}

static void free_data(CaseData *x)
{
    for (int s = 0; s < MAX_SLOTS; s++) free(x->data[s]);
    free(x->gout);
    free(x->want);
}

static bool same_shape(const Tensor *t, int ndim, const int *shape)
{
    if (t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    return true;
}

#define APPEND(line, len, ...) \
    ((len) += snprintf((line) + (len), sizeof(line) - (size_t)(len), __VA_ARGS__))

/* Runs steps 1-5 on one case and prints its line; returns whether gradcheck ran. */
static bool check_case(Fixture *f, Ctx *ctx, const Case *k, CaseData *x)
{
    const OpTest *t = &TESTS[k->op];
    char line[512], p[300], so[64];
    int len = 0;
    APPEND(line, len, "%s/%s", OPS[k->op].name, k->label);
    APPEND(line, len, "%*s", len < 36 ? 36 - len : 1, "");

    /* 1. Forward against PyTorch. */
    ctx_reset(ctx);
    Tensor *in[MAX_SLOTS] = {0};
    for (int s = 0; s < k->nslot; s++)
        if (x->data[s]) in[s] = tensor_wrap(ctx, x->data[s], NULL, x->ndim[s], x->shape[s], x->rg[s]);
    Tensor *out = t->run(ctx, in, k);
    if (!same_shape(out, x->ondim, x->oshape)) {
        printf("%soutput %s differs from PyTorch's in shape  FAIL\n", line,
               tensor_shape_str(out, so, sizeof so));
        CHECK(0, "%s: output shape %s differs from PyTorch's", k->path, so);
        return false;
    }
    Cmp fwd = torch_compare(t, out->data, x->want, out->n);
    bool ok = fwd.err <= fwd.limit;
    APPEND(line, len, t->rtol > 0 ? "fwd %.2fx  grad" : "fwd %.1e  grad", fwd.err);
    if (!out->requires_grad) {
        printf("%s  FAIL\n", line);
        CHECK(0, "%s: the output does not require a gradient though an input does", k->path);
        return false;
    }

    /* 2. Gradients against PyTorch; inputs that need none must not get one. */
    tape_backward(ctx, out, x->gout);
    Cmp gerr[MAX_SLOTS] = {0};
    float *twice[MAX_SLOTS] = {0};
    bool leaked[MAX_SLOTS] = {0};
    for (int s = 0; s < k->nslot; s++) {
        if (!in[s]) continue;
        if (!x->rg[s]) {
            leaked[s] = in[s]->grad != NULL;
            ok &= !leaked[s];
            continue;
        }
        gerr[s] = (Cmp){.err = INFINITY};
        if (in[s]->grad) {
            snprintf(p, sizeof p, "%s/grad_in%d", k->path, s);
            int gnd, gsh[TENSOR_MAX_DIMS];
            float *g = fixture_read(f, p, &gnd, gsh);
            CM_ASSERT(same_shape(in[s], gnd, gsh), "%s: not of %s's shape", p, x->name[s]);
            gerr[s] = torch_compare(t, in[s]->grad, g, in[s]->n);
            free(g);
            twice[s] = cm_malloc(in[s]->n * sizeof(float));
            for (size_t i = 0; i < in[s]->n; i++) twice[s][i] = 2.0f * in[s]->grad[i];
        }
        ok &= gerr[s].err <= gerr[s].limit;
        APPEND(line, len, t->rtol > 0 ? " %s %.2fx" : " %s %.1e", x->name[s], gerr[s].err);
    }

    /* 3. A second sweep over the same tape doubles the leaf gradients. */
    tape_backward(ctx, out, x->gout);
    double accum = 0;
    for (int s = 0; s < k->nslot; s++) {
        if (!twice[s]) continue;
        double e = rel_error(in[s]->grad, twice[s], in[s]->n, REL_FLOOR);
        if (!(e <= accum)) accum = e;
        free(twice[s]);
    }
    ok &= accum <= ACCUM_TOL;

    /* 4. No-grad scope: nothing recorded, the same output. An identity op (dropout with p = 0)
     * may return its input itself, which keeps the input's requires_grad. Then, with grad mode
     * on but no input requiring a gradient: nothing recorded either. */
    int tape_len = ctx->tape_len;
    ctx_no_grad_begin(ctx);
    Tensor *out2 = t->run(ctx, in, k);
    ctx_no_grad_end(ctx);
    bool is_input = false;
    for (int s = 0; s < k->nslot; s++) is_input |= out2 == in[s];
    bool nograd_ok = ctx->tape_len == tape_len && (is_input || !out2->requires_grad) &&
                     same_shape(out2, x->ondim, x->oshape) &&
                     rel_error(out2->data, out->data, out->n, REL_FLOOR) <= ACCUM_TOL;
    Tensor *frozen[MAX_SLOTS] = {0};
    for (int s = 0; s < k->nslot; s++)
        if (x->data[s]) frozen[s] = tensor_wrap(ctx, x->data[s], NULL, x->ndim[s], x->shape[s], false);
    Tensor *out3 = t->run(ctx, frozen, k);
    bool frozen_ok = ctx->tape_len == tape_len && !out3->requires_grad;
    ok &= nograd_ok && frozen_ok;

    /* 5. Finite differences on fresh tensors over the same data, with the same gout. */
    GradInput gi[MAX_SLOTS];
    GcUser u = {.t = t, .k = k};
    for (int s = 0; s < k->nslot; s++) {
        if (!x->data[s]) continue;
        gi[u.n] = (GradInput){.data = x->data[s], .ndim = x->ndim[s], .requires_grad = x->rg[s]};
        memcpy(gi[u.n].shape, x->shape[s], sizeof gi[u.n].shape);
        u.slot[u.n++] = s;
    }
    float gc_eps = k->gc_eps > 0 ? k->gc_eps : t->gc_eps;
    double gc = gradcheck(gc_run, &u, u.n, gi, x->gout, gc_eps, GC_MAX_ELEMS);
    ok &= gc <= t->gc_tol;
    printf("%s  gradcheck %.1e  %s\n", line, gc, ok ? "ok" : "FAIL");

    char why[200];
    CHECK(fwd.err <= fwd.limit, "%s: forward differs from PyTorch %s", k->path, cmp_text(t, &fwd, why, sizeof why));
    for (int s = 0; s < k->nslot; s++) {
        if (!in[s]) continue;
        if (x->rg[s])
            CHECK(gerr[s].err <= gerr[s].limit, "%s: gradient of %s differs from PyTorch %s%s", k->path,
                  x->name[s], in[s]->grad ? cmp_text(t, &gerr[s], why, sizeof why) : "",
                  in[s]->grad ? "" : ": the backward wrote no gradient");
        else
            CHECK(!leaked[s], "%s: %s requires no gradient but got one", k->path, x->name[s]);
    }
    CHECK(accum <= ACCUM_TOL, "%s: a second backward sweep does not double the leaf gradients "
          "(rel error %.2e): a backward that overwrites (=) instead of accumulating (+=)?", k->path,
          accum);
    CHECK(nograd_ok, "%s: in a no-grad scope the op recorded %d entries, returned requires_grad=%d "
          "or another output", k->path, ctx->tape_len - tape_len, out2->requires_grad);
    CHECK(frozen_ok, "%s: with no input requiring a gradient the op recorded %d entries or "
          "returned requires_grad=%d", k->path, ctx->tape_len - tape_len, out3->requires_grad);
    CHECK(gc <= t->gc_tol, "%s: gradcheck error %.2e (tol %.0e, eps %.0e)", k->path, gc, t->gc_tol,
          (double)gc_eps);
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OPS.h5 (written by tests/torch/ops.py)\n", argv[0]);
        return CM_EXIT_INPUT;
    }
    cm_set_threads(2);
    Fixture f;
    fixture_open(&f, argv[1]);
    char **names;
    int ncase = fixture_list(&f, "/cases", &names);
    Case *cases = cm_calloc((size_t)ncase, sizeof *cases);
    int ncases[OP_COUNT] = {0}, nchecked[OP_COUNT] = {0};
    for (int i = 0; i < ncase; i++) {
        read_case(&f, &cases[i], names[i]);
        if (cases[i].op >= 0) ncases[cases[i].op]++;
    }

    Ctx ctx;
    ctx_init(&ctx, 1 << 20);
    double t0 = cm_now();
    /* In OpKind order, each op's cases in name order. */
    for (int op = 0; op < OP_COUNT; op++) {
        if (!TESTS[op].run) continue;
        for (int i = 0; i < ncase; i++) {
            if (cases[i].op != op) continue;
            CaseData x;
            read_data(&f, &cases[i], &x);
            nchecked[op] += check_case(&f, &ctx, &cases[i], &x);
            free_data(&x);
        }
    }

    /* Coverage: every op has a backward, a runner, a case and a gradient check. */
    for (int op = 0; op < OP_COUNT; op++) {
        const char *name = OPS[op].name ? OPS[op].name : "(unnamed)";
        CHECK(OPS[op].name, "OPS[%d] has no name", op);
        CHECK(OPS[op].backward, "%s: OPS[] has no backward", name);
        CHECK(TESTS[op].run, "%s: test_ops.c has no runner", name);
        CHECK(ncases[op] > 0, "%s: no case in the fixture (tests/torch/ops.py)", name);
        CHECK(nchecked[op] > 0, "%s: never gradchecked", name);
    }
    printf("%d cases in %.1f s\n", ncase, cm_now() - t0);

    ctx_free(&ctx);
    for (int i = 0; i < ncase; i++) free(names[i]);
    free(names);
    free(cases);
    fixture_close(&f);
    return test_summary("ops");
}
