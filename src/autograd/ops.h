/* ops.h: every differentiable op, the op table, and the reference kernels tests compare with.
 *
 * Each op family lives in one file with its forward and backward side by side:
 *   op_conv.c        conv2d (im2col + sgemm, or Winograd in conv_wino.c for 3x3 stride 1; a
 *                    naive reference kernel for tests)
 *   op_matmul.c      linear, matmul, batched matmul
 *   op_norm.c        group norm (alone and fused with a following SiLU), softmax
 *   op_elementwise.c add/sub/mul/div (broadcasting), scale, exp/log/sin/cos/sqrt/pow,
 *                    silu, sigmoid, dropout
 *   op_shape.c       reshape, concat (channels), nearest upsample, average-pool downsample
 *   op_reduce.c      sum, mean, and the per-sample losses mse, l1, pseudo-Huber
 *   op_cross_entropy.c  the per-sample softmax cross-entropy of a classifier
 * op_table.c holds OPS[], indexed by OpKind, with a static assert on its size; a test fails when
 * an entry lacks a backward, a gradient check or a PyTorch comparison.
 *
 * Shapes in comments: N batch, C channels, H, W spatial; broadcasting follows numpy (shapes are
 * right-aligned, a dim of 1 stretches).
 */
#ifndef CM_OPS_H
#define CM_OPS_H

#include "tensor.h"
#include "rng.h"

typedef enum OpKind {
    OP_CONV2D,
    OP_LINEAR,
    OP_MATMUL,
    OP_BMM,
    OP_GROUP_NORM,
    OP_GROUP_NORM_SILU,
    OP_SOFTMAX,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_SCALE,
    OP_EXP,
    OP_LOG,
    OP_SIN,
    OP_COS,
    OP_SQRT,
    OP_POW,
    OP_SILU,
    OP_SIGMOID,
    OP_DROPOUT,
    OP_RESHAPE,
    OP_CONCAT,
    OP_UPSAMPLE,
    OP_AVGPOOL,
    OP_SUM,
    OP_MEAN,
    OP_MSE,
    OP_L1,
    OP_PSEUDO_HUBER,
    OP_CROSS_ENTROPY,
    OP_COUNT
} OpKind;

typedef void (*BackwardFn)(Ctx *c, TapeEntry *e);

typedef struct OpInfo {
    const char *name;
    BackwardFn backward;
} OpInfo;

extern const OpInfo OPS[OP_COUNT];

/* ---- op_conv.c ---- */
/* x [N,Cin,H,W], w [Cout,Cin,kh,kw], b [Cout] or NULL -> [N,Cout,Ho,Wo],
 * Ho = (H + 2*pad - kh)/stride + 1. */
Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad);
/* What conv2d can fuse around its products (op_conv2d_fused). Zero-initialise, then set:
 *   input   norm_groups > 0: the conv reads silu(group_norm(x)) with norm_groups groups,
 *           norm_weight and norm_bias [Cin] (either may be NULL) and norm_eps, as
 *           op_group_norm_silu computes it; it is never stored (the backward recomputes it);
 *   output  y = scale * (conv + b + bias[:, :, None, None] + residual), bias [N,Cout] (a
 *           per-sample bias: the time embedding's projection) and residual [N,Cout,Ho,Wo] may be
 *           NULL; a scale of 0 means 1;
 *   stats   out_stats not NULL: also the group-norm statistics of y for out_groups groups and
 *           out_eps, mean [N*out_groups] then rstd [N*out_groups] into out_stats (the caller's,
 *           2 N out_groups floats), on the Winograd path taken as each sample is stored,
 *           while it is in cache (the im2col path makes a pass over y after the conv);
 *           norm_stats not NULL: the statistics of x for the input's norm (norm_groups,
 *           norm_eps), as an earlier conv's out_stats wrote them, instead of a pass over x.
 *           Both are gn_stats' values to the bit. The caller keeps norm_stats alive as long as
 *           the tape (the backward reads them).
 * A residual block's GN+SiLU -> conv1 -> + temb and GN+SiLU -> conv2 -> (+ skip) * skip_scale are
 * then two ops, and its normalised activations are never stored. */
typedef struct ConvFusion {
    Tensor *norm_weight, *norm_bias;
    int norm_groups;
    float norm_eps;
    Tensor *bias, *residual;
    float scale;
    float *out_stats;
    int out_groups;
    float out_eps;
    const float *norm_stats;
    float *out;                  /* no-grad passes: y's values go here (N*Cout*Ho*Wo floats, the
                                  * caller's), not to a new buffer; NULL: a new one */
} ConvFusion;
/* op_conv2d is this with f NULL (the same op, OP_CONV2D). */
Tensor *op_conv2d_fused(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad, const ConvFusion *f);
/* Two 3x3 stride-1 pad-1 convs in a row without gradients (a residual block's, layers.c):
 *   h = conv(x, w1) + b1 with f1 (its input norm and per-sample bias only),
 *   y = conv(h, w2) + b2 with f2 (its input norm, whose statistics are h's, residual, scale, out),
 * h never stored (conv_wino_pair_forward). conv2d_pair_usable: whether the shapes take it. */
bool conv2d_pair_usable(const Tensor *x, const Tensor *w1, const Tensor *w2);
Tensor *op_conv2d_pair(Ctx *c, Tensor *x, Tensor *w1, Tensor *b1, const ConvFusion *f1, Tensor *w2, Tensor *b2,
                       const ConvFusion *f2);
/* Whether op_conv2d's forward takes its direct path (stride 1, at most 4 output channels, not 1x1
 * without padding; op_conv.c), whose output bits do not depend on the thread count. */
bool conv2d_direct_usable(int Cout, int kh, int kw, int stride, int pad);
/* Bytes of the im2col workspace per chunk of samples (tests lower it to force several chunks). */
extern size_t conv2d_chunk_bytes;
/* Naive direct kernels (the reference the fast path is tested against). dx/dw/db may be NULL. */
void conv2d_ref_forward(const float *x, const float *w, const float *b, float *y, int N, int Cin,
                        int H, int W, int Cout, int kh, int kw, int stride, int pad);
void conv2d_ref_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int N, int Cin, int H, int W, int Cout, int kh, int kw,
                         int stride, int pad);

/* ---- op_matmul.c ---- */
/* x [N,in] (or [N,in,1,1]), w [out,in], b [out] or NULL -> [N,out] */
Tensor *op_linear(Ctx *c, Tensor *x, Tensor *w, Tensor *b);
/* a [M,K], b [K,N] -> [M,N] */
Tensor *op_matmul(Ctx *c, Tensor *a, Tensor *b);
/* a [B,M,K] (or [B,K,M] if ta), b [B,K,N] (or [B,N,K] if tb) -> [B,M,N] */
Tensor *op_bmm(Ctx *c, Tensor *a, Tensor *b, bool ta, bool tb);

/* ---- op_norm.c ---- */
/* x [N,C,H,W] (or [N,C]), weight/bias [C] or NULL; groups divides C. */
Tensor *op_group_norm(Ctx *c, Tensor *x, Tensor *weight, Tensor *bias, int groups, float eps);
/* silu(group_norm(x)) as one op: one pass forward, and the normalised values are recomputed in
 * the backward instead of being stored (one activation less per norm). */
Tensor *op_group_norm_silu(Ctx *c, Tensor *x, Tensor *weight, Tensor *bias, int groups, float eps);
/* softmax over the last dim */
Tensor *op_softmax(Ctx *c, Tensor *x);
/* Group norm's kernels, for ops that fuse silu(group_norm(x)) into their input
 * (op_conv2d_fused), on x [N,C,S] with `groups` groups:
 *   gn_stats       mean, rstd [N*groups] (gn_stats_serial: on the calling thread only);
 *   gn_moments     one group's mean and rstd from the double sums s and q of its m values and of
 *                  their squares (gn_stats's formula, for sums taken elsewhere: conv_wino's pairs);
 *   gn_silu_apply  y = silu(GN(x)) with weight w and bias b (either may be NULL);
 *   gn_grad        the backward from gy = dL/dy (silu: y = silu(GN(x)), else GN(x)): dx written
 *                  (fresh_x) or accumulated, dw and db accumulated; each may be NULL. */
void gn_stats(const float *x, int N, int C, size_t S, int groups, float eps, float *mean, float *rstd);
void gn_stats_serial(const float *x, int N, int C, size_t S, int groups, float eps, float *mean, float *rstd);
void gn_moments(double s, double q, double m, float eps, float *mean, float *rstd);
void gn_silu_apply(const float *x, int N, int C, size_t S, int groups, const float *mean,
                   const float *rstd, const float *w, const float *b, float *y);
void gn_grad(Ctx *c, const float *x, int N, int C, size_t S, int groups, const float *mean,
             const float *rstd, const float *w, const float *b, bool silu, const float *gy, float *gx,
             bool fresh_x, float *gw, float *gb);

/* ---- op_elementwise.c ---- */
Tensor *op_add(Ctx *c, Tensor *a, Tensor *b);   /* broadcasting */
Tensor *op_sub(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_mul(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_div(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_scale(Ctx *c, Tensor *x, float alpha, float beta);   /* alpha * x + beta */
Tensor *op_exp(Ctx *c, Tensor *x);
Tensor *op_log(Ctx *c, Tensor *x);
Tensor *op_sin(Ctx *c, Tensor *x);
Tensor *op_cos(Ctx *c, Tensor *x);
Tensor *op_sqrt(Ctx *c, Tensor *x);
Tensor *op_pow(Ctx *c, Tensor *x, float p);
Tensor *op_silu(Ctx *c, Tensor *x);
Tensor *op_sigmoid(Ctx *c, Tensor *x);
/* Inverted dropout: keeps an element with probability 1-p and scales it by 1/(1-p). The mask is
 * the Bernoulli draw of rng for samples sample0.. (x's dim 0), so a second call with the same
 * rng and sample0 (the target pass) gets the same mask. p = 0 returns x unchanged. */
Tensor *op_dropout(Ctx *c, Tensor *x, float p, const Rng *rng, int sample0);

/* ---- op_shape.c ---- */
Tensor *op_reshape(Ctx *c, Tensor *x, int ndim, const int *shape);   /* same element count */
Tensor *op_concat(Ctx *c, int n, Tensor *const *xs);                 /* along dim 1 (channels) */
Tensor *op_upsample(Ctx *c, Tensor *x);                              /* nearest, 2x: [N,C,2H,2W] */
Tensor *op_avgpool(Ctx *c, Tensor *x);                               /* 2x2 mean: [N,C,H/2,W/2] */

/* ---- op_reduce.c ---- */
Tensor *op_sum(Ctx *c, Tensor *x);      /* -> [1] */
Tensor *op_mean(Ctx *c, Tensor *x);     /* -> [1] */
/* Per-sample distances between a and b [N,...] -> [N]:
 * mse: mean((a-b)^2); l1: mean(|a-b|); pseudo-Huber: sqrt(||a-b||^2 + c^2) - c with the norm
 * over the whole sample (iCT, reference/cm.md §5), not per pixel; c >= 0, and c = 0 is ECT's
 * un-squared l2 distance ||a - b||. */
Tensor *op_mse(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_l1(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_pseudo_huber(Ctx *c, Tensor *a, Tensor *b, float huber_c);

/* ---- op_cross_entropy.c ---- */
/* logits [N,K], labels [N] (class indices as floats, no gradient) -> [N]: logsumexp(x_n) - x_n,y_n,
 * PyTorch's F.cross_entropy with reduction='none'. */
Tensor *op_cross_entropy(Ctx *c, Tensor *logits, Tensor *labels);

#endif
