/* layers.h: the layer library every network of cmlab is built from.
 *
 * A layer is a small struct of parameter references (where its slices sit in the flat weight
 * layout, and their shapes) plus its hyperparameters. `*_init(ps, prefix, ...)` registers the
 * layer's parameters in a ParamSet under PyTorch names ("<prefix>.weight", conv OIHW, linear
 * [out, in]) and returns the layer; `*_forward(ctx, layer, ws, x, ...)` runs it on a WeightSet.
 * Layers hold no pointers, so the structs can be copied freely; the same layer runs with any
 * weight set of its ParamSet (online, target, EMA, teacher) by passing another WeightSet.
 *
 * Invariants:
 *   - init registers parameters and nothing else; the numbers come from params_randomize (each
 *     slice's init rule and init_scale: near-zero output layers use a scale of 1e-5);
 *   - a WeightSet with g == NULL is frozen: every parameter tensor then has requires_grad false,
 *     so backward does no weight-gradient work, yet inputs that require a gradient still get one;
 *   - forward functions only call ops (ops.h): everything is recorded on the tape.
 *
 * Dimension letters: N batch, C channels, H, W spatial; E the embedding width.
 */
#ifndef CM_LAYERS_H
#define CM_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/ops.h"
#include "nn/params.h"

/* One weight set in a ParamSet's layout: weights and their gradients (NULL: frozen). */
typedef struct WeightSet {
    float *w;
    float *g;
} WeightSet;

/* A parameter as a layer sees it: its slice index, where the slice starts in every weight set,
 * and its shape. Copied out of the ParamSet at init, so a layer never points into it. */
typedef struct LayerParam {
    int index;                   /* -1: absent (a layer without bias) */
    size_t offset;
    int ndim;
    int shape[TENSOR_MAX_DIMS];
} LayerParam;

/* Registers "<prefix>.<suffix>" and returns the reference to it. */
LayerParam layer_param_add(ParamSet *ps, const char *prefix, const char *suffix, int ndim,
                           const int *shape, ParamInit init, float init_scale);
/* The parameter's tensor in ws (NULL for an absent parameter). */
Tensor *layer_param_tensor(Ctx *c, const LayerParam *p, const WeightSet *ws);

/* GroupNorm's group count, min(32, C/4) (DDPM++), lowered to the nearest divisor of C. */
int layers_gn_groups(int channels);

/* init_scale values. U(+-sqrt(3)/sqrt(fan_in)) has variance 1/fan_in: EDM's xavier_uniform for a
 * layer whose fan_in equals its fan_out, the common case in a U-Net. Output layers of residual
 * branches start near zero (EDM's init_weight = 1e-5), so an untrained block is the identity. */
#define LAYER_INIT_DEFAULT 1.7320508f
#define LAYER_INIT_NEAR_ZERO 1e-5f

/* ---- Linear: y [N,out] = x [N,in] w^T + b ---- */
typedef struct Linear {
    LayerParam weight, bias;     /* [out,in], [out] (bias.index -1 when absent) */
    int in, out;
} Linear;

/* weight ~ U(+-init_scale/sqrt(in)); bias 0. */
Linear linear_init(ParamSet *ps, const char *prefix, int in, int out, bool bias, float init_scale);
Tensor *linear_forward(Ctx *c, const Linear *l, const WeightSet *ws, Tensor *x /*[N,in]*/);

/* ---- Conv2d: square kernel k, padding k/2 ("same" for stride 1, halves for stride 2) ---- */
typedef struct Conv2d {
    LayerParam weight, bias;     /* [out,in,k,k], [out] (bias.index -1 when absent) */
    int in, out, k, stride;
} Conv2d;

/* weight ~ U(+-init_scale/sqrt(in*k*k)); bias 0. */
Conv2d conv2d_init(ParamSet *ps, const char *prefix, int in, int out, int k, int stride, bool bias,
                   float init_scale);
Tensor *conv2d_forward(Ctx *c, const Conv2d *l, const WeightSet *ws, Tensor *x /*[N,in,H,W]*/);

/* ---- GroupNorm with affine weight (init 1) and bias (init 0) ---- */
typedef struct GroupNorm {
    LayerParam weight, bias;     /* [C], [C] */
    int channels, groups;
    float eps;
} GroupNorm;

GroupNorm group_norm_init(ParamSet *ps, const char *prefix, int channels, float eps);
Tensor *group_norm_forward(Ctx *c, const GroupNorm *l, const WeightSet *ws, Tensor *x /*[N,C,...]*/);
/* silu(GN(x)) as one fused op (op_group_norm_silu). */
Tensor *group_norm_silu_forward(Ctx *c, const GroupNorm *l, const WeightSet *ws, Tensor *x /*[N,C,...]*/);

/* ---- Self-attention block (DDPM++ / NCSN++):
 *   h = GN(x); q, k, v = 1x1 convs of h; per head (channels split head-major, d = C/heads):
 *   a = softmax_keys(q^T k / sqrt(d)) [HW,HW]; o = v a^T; out = (x + proj(o)) * skip_scale,
 * proj initialised near zero. Parameters: <prefix>.norm, .q, .k (no bias), .v, .proj.
 * k has no bias: q.(k_j + b) = q.k_j + q.b shifts all logits of a query by the same constant,
 * which softmax ignores, so a key bias has no effect and an exactly zero gradient. */
typedef struct Attention {
    GroupNorm norm;
    Conv2d q, k, v, proj;
    int channels, heads;
    float skip_scale;
} Attention;

Attention attention_init(ParamSet *ps, const char *prefix, int channels, int heads, float skip_scale);
/* out, here and in resblock_forward and upsample_forward: NULL, or in a no-grad pass where the
 * output's values go (the caller's buffer of N C H W floats, C the output's channels), so that a
 * caller that allocated it before the call can release every intermediate above it without moving
 * the output (unet.c's kept blocks). */
Tensor *attention_forward(Ctx *c, const Attention *l, const WeightSet *ws, Tensor *x /*[N,C,H,W]*/, float *out);

/* ---- Residual block (DDPM++ with the embedding added as a per-channel bias):
 *   h = conv1(silu(norm1(x))); h += temb_proj(emb)[:, :, None, None];
 *   h = conv2(dropout(silu(norm2(h))));     conv2 initialised near zero
 *   out = (skip(x) + h) * skip_scale,        skip = 1x1 conv when in != out, else identity.
 * emb is the network's embedding, which already ends in a SiLU (unet.h), so no second SiLU is
 * applied before temb_proj. Parameters: <prefix>.norm1, .conv1, .temb, .norm2, .conv2, .skip. */
typedef struct ResBlock {
    GroupNorm norm1, norm2;
    Conv2d conv1, conv2, skip;
    Linear temb;
    bool has_skip;
    int in, out;
    float dropout, skip_scale;
} ResBlock;

ResBlock resblock_init(ParamSet *ps, const char *prefix, int in, int out, int emb_dim,
                       float dropout, float skip_scale);
/* dropout_rng NULL (or a block with dropout 0): no dropout. The mask is the Bernoulli draw of
 * dropout_rng for samples sample0.. (op_dropout), so a second call with the same Rng repeats it. */
Tensor *resblock_forward(Ctx *c, const ResBlock *l, const WeightSet *ws, Tensor *x /*[N,in,H,W]*/,
                         Tensor *emb /*[N,E]*/, const Rng *dropout_rng, int sample0, float *out);

/* ---- Resampling: 3x3 conv with stride 2 (down); nearest 2x then 3x3 conv (up) ---- */
typedef struct Downsample {
    Conv2d conv;
} Downsample;

typedef struct Upsample {
    Conv2d conv;
} Upsample;

Downsample downsample_init(ParamSet *ps, const char *prefix, int channels);
Tensor *downsample_forward(Ctx *c, const Downsample *l, const WeightSet *ws, Tensor *x /*[N,C,H,W]*/);
Upsample upsample_init(ParamSet *ps, const char *prefix, int channels);
Tensor *upsample_forward(Ctx *c, const Upsample *l, const WeightSet *ws, Tensor *x /*[N,C,H,W]*/, float *out);

/* ---- Noise-level embeddings of c [N] (differentiable in c) -> [N, channels] ----
 * Both return [sin(c f), cos(c f)] (sine half first: EDM's SongUNet swaps its positional
 * embedding's halves to this order, and NCSN++'s Gaussian Fourier projection uses it).
 *   positional: f_k = (1/10000)^(k/(half-1)), k = 0..half-1 (EDM, endpoint=True);
 *   fourier:    f_k = 2 pi W_k with W_k ~ N(0, scale^2) frozen (noise_fourier_freqs). */
Tensor *noise_embed_positional(Ctx *c, Tensor *cnoise /*[N]*/, int channels);
Tensor *noise_embed_fourier(Ctx *c, Tensor *cnoise /*[N]*/, const float *W /*[channels/2]*/, int channels);
/* W [half] = scale * normal(seed, stream, step 0, sample 0) (rng.h). */
void noise_fourier_freqs(float *W, int half, float scale, uint64_t seed, uint32_t stream);

#endif
