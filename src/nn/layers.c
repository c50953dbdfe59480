/* layers.c: the layers of layers.h: parameter registration and forward passes built from ops. */
#include "layers.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* ---- parameters ---- */

LayerParam layer_param_add(ParamSet *ps, const char *prefix, const char *suffix, int ndim,
                           const int *shape, ParamInit init, float init_scale)
{
    char name[sizeof ps->items[0].name];
    int len = snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    CM_ASSERT(len > 0 && (size_t)len < sizeof name, "layer parameter name too long: %s.%s", prefix, suffix);
    LayerParam p = {.index = params_add(ps, name, ndim, shape, init, init_scale), .ndim = ndim};
    p.offset = ps->items[p.index].offset;
    memcpy(p.shape, shape, (size_t)ndim * sizeof(int));
    return p;
}

static LayerParam layer_param_absent(void) { return (LayerParam){.index = -1}; }

Tensor *layer_param_tensor(Ctx *c, const LayerParam *p, const WeightSet *ws)
{
    if (p->index < 0) return NULL;
    float *g = ws->g ? ws->g + p->offset : NULL;
    return tensor_wrap(c, ws->w + p->offset, g, p->ndim, p->shape, g != NULL);
}

int layers_gn_groups(int channels)
{
    int g = CM_MAX(1, CM_MIN(32, channels / 4));
    while (channels % g) g--;
    return g;
}

/* ---- Linear ---- */

Linear linear_init(ParamSet *ps, const char *prefix, int in, int out, bool bias, float init_scale)
{
    Linear l = {.in = in, .out = out};
    l.weight = layer_param_add(ps, prefix, "weight", 2, SHAPE(out, in), PARAM_INIT_UNIFORM_FAN_IN, init_scale);
    l.bias = bias ? layer_param_add(ps, prefix, "bias", 1, SHAPE(out), PARAM_INIT_ZERO, 0)
                  : layer_param_absent();
    return l;
}

Tensor *linear_forward(Ctx *c, const Linear *l, const WeightSet *ws, Tensor *x)
{
    return op_linear(c, x, layer_param_tensor(c, &l->weight, ws), layer_param_tensor(c, &l->bias, ws));
}

/* ---- Conv2d ---- */

Conv2d conv2d_init(ParamSet *ps, const char *prefix, int in, int out, int k, int stride, bool bias,
                   float init_scale)
{
    Conv2d l = {.in = in, .out = out, .k = k, .stride = stride};
    l.weight = layer_param_add(ps, prefix, "weight", 4, SHAPE(out, in, k, k), PARAM_INIT_UNIFORM_FAN_IN, init_scale);
    l.bias = bias ? layer_param_add(ps, prefix, "bias", 1, SHAPE(out), PARAM_INIT_ZERO, 0)
                  : layer_param_absent();
    return l;
}

Tensor *conv2d_forward(Ctx *c, const Conv2d *l, const WeightSet *ws, Tensor *x)
{
    return op_conv2d(c, x, layer_param_tensor(c, &l->weight, ws), layer_param_tensor(c, &l->bias, ws),
                     l->stride, l->k / 2);
}

/* conv(x) with the fusion f (op_conv2d_fused) */
static Tensor *conv2d_forward_fused(Ctx *c, const Conv2d *l, const WeightSet *ws, Tensor *x,
                                    const ConvFusion *f)
{
    return op_conv2d_fused(c, x, layer_param_tensor(c, &l->weight, ws), layer_param_tensor(c, &l->bias, ws),
                           l->stride, l->k / 2, f);
}

/* ---- GroupNorm ---- */

GroupNorm group_norm_init(ParamSet *ps, const char *prefix, int channels, float eps)
{
    GroupNorm l = {.channels = channels, .groups = layers_gn_groups(channels), .eps = eps};
    l.weight = layer_param_add(ps, prefix, "weight", 1, SHAPE(channels), PARAM_INIT_ONE, 1.0f);
    l.bias = layer_param_add(ps, prefix, "bias", 1, SHAPE(channels), PARAM_INIT_ZERO, 0);
    return l;
}

Tensor *group_norm_forward(Ctx *c, const GroupNorm *l, const WeightSet *ws, Tensor *x)
{
    return op_group_norm(c, x, layer_param_tensor(c, &l->weight, ws), layer_param_tensor(c, &l->bias, ws),
                         l->groups, l->eps);
}

Tensor *group_norm_silu_forward(Ctx *c, const GroupNorm *l, const WeightSet *ws, Tensor *x)
{
    return op_group_norm_silu(c, x, layer_param_tensor(c, &l->weight, ws),
                              layer_param_tensor(c, &l->bias, ws), l->groups, l->eps);
}

/* ---- Attention ---- */

/* GroupNorm eps of every normalisation in the U-Net blocks (DDPM++, reference/cm.md §8.2). */
#define BLOCK_GN_EPS 1e-6f

Attention attention_init(ParamSet *ps, const char *prefix, int channels, int heads, float skip_scale)
{
    CM_ASSERT(heads >= 1 && channels % heads == 0, "attention %s: %d heads do not divide %d channels",
              prefix, heads, channels);
    /* q, k, v start with EDM's init_attn (weight sqrt(0.2)); the projection near zero. */
    const float qkv_scale = LAYER_INIT_DEFAULT * sqrtf(0.2f);
    char name[96];
    Attention l = {.channels = channels, .heads = heads, .skip_scale = skip_scale};
    snprintf(name, sizeof name, "%s.norm", prefix);
    l.norm = group_norm_init(ps, name, channels, BLOCK_GN_EPS);
    snprintf(name, sizeof name, "%s.q", prefix);
    l.q = conv2d_init(ps, name, channels, channels, 1, 1, true, qkv_scale);
    snprintf(name, sizeof name, "%s.k", prefix);
    l.k = conv2d_init(ps, name, channels, channels, 1, 1, false, qkv_scale);
    snprintf(name, sizeof name, "%s.v", prefix);
    l.v = conv2d_init(ps, name, channels, channels, 1, 1, true, qkv_scale);
    snprintf(name, sizeof name, "%s.proj", prefix);
    l.proj = conv2d_init(ps, name, channels, channels, 1, 1, true, LAYER_INIT_NEAR_ZERO);
    return l;
}

/* [N,C,H,W] -> [N*heads, C/heads, H*W]: a view, heads take contiguous channel blocks. */
static Tensor *split_heads(Ctx *c, Tensor *x, int heads)
{
    int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    return op_reshape(c, x, 3, SHAPE(N * heads, C / heads, HW));
}

Tensor *attention_forward(Ctx *c, const Attention *l, const WeightSet *ws, Tensor *x, float *out)
{
    int d = l->channels / l->heads;
    Tensor *h = group_norm_forward(c, &l->norm, ws, x);
    /* Scaling q by 1/sqrt(d) before the product costs d*HW multiplications instead of HW^2. */
    Tensor *q = op_scale(c, split_heads(c, conv2d_forward(c, &l->q, ws, h), l->heads), 1.0f / sqrtf((float)d), 0.0f);
    Tensor *k = split_heads(c, conv2d_forward(c, &l->k, ws, h), l->heads);
    Tensor *v = split_heads(c, conv2d_forward(c, &l->v, ws, h), l->heads);
    Tensor *a = op_softmax(c, op_bmm(c, q, k, true, false));        /* [B,HWq,HWk] = q^T k */
    Tensor *o = op_bmm(c, v, a, false, true);                        /* [B,d,HWq] = v a^T */
    o = op_reshape(c, o, 4, x->shape);
    return conv2d_forward_fused(c, &l->proj, ws, o, &(ConvFusion){.residual = x, .scale = l->skip_scale, .out = out});
}

/* ---- Residual block ---- */

ResBlock resblock_init(ParamSet *ps, const char *prefix, int in, int out, int emb_dim,
                       float dropout, float skip_scale)
{
    char name[96];
    ResBlock l = {.in = in, .out = out, .dropout = dropout, .skip_scale = skip_scale, .has_skip = in != out};
    snprintf(name, sizeof name, "%s.norm1", prefix);
    l.norm1 = group_norm_init(ps, name, in, BLOCK_GN_EPS);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    l.conv1 = conv2d_init(ps, name, in, out, 3, 1, true, LAYER_INIT_DEFAULT);
    snprintf(name, sizeof name, "%s.temb", prefix);
    l.temb = linear_init(ps, name, emb_dim, out, true, LAYER_INIT_DEFAULT);
    snprintf(name, sizeof name, "%s.norm2", prefix);
    l.norm2 = group_norm_init(ps, name, out, BLOCK_GN_EPS);
    snprintf(name, sizeof name, "%s.conv2", prefix);
    l.conv2 = conv2d_init(ps, name, out, out, 3, 1, true, LAYER_INIT_NEAR_ZERO);
    if (l.has_skip) {
        snprintf(name, sizeof name, "%s.skip", prefix);
        l.skip = conv2d_init(ps, name, in, out, 1, 1, true, LAYER_INIT_DEFAULT);
    }
    return l;
}

Tensor *resblock_forward(Ctx *c, const ResBlock *l, const WeightSet *ws, Tensor *x, Tensor *emb,
                         const Rng *dropout_rng, int sample0, float *out)
{
    /* Two fused convs (op_conv2d_fused): each reads silu(norm(.)) of its input without storing
     * it, conv1 adds temb [N,out] per sample and channel as it stores its output, conv2 the skip
     * and the skip scale. conv1 also takes norm2's statistics of its output as it stores it.
     * Dropout sits between norm2 and conv2, so with dropout norm2 is an op of its own. Without
     * gradients (sampling, the target and teacher passes) and dropout, the two run as a pair
     * where conv_wino takes both (op_conv2d_pair): h stays in conv2's blocked input. */
    const bool dropout = dropout_rng && l->dropout > 0;
    Tensor *temb = linear_forward(c, &l->temb, ws, emb);               /* [N,out] */
    ConvFusion f1 = {.norm_weight = layer_param_tensor(c, &l->norm1.weight, ws),
                     .norm_bias = layer_param_tensor(c, &l->norm1.bias, ws),
                     .norm_groups = l->norm1.groups, .norm_eps = l->norm1.eps, .bias = temb};
    ConvFusion f2 = {.scale = l->skip_scale, .out = out};
    if (!dropout) {
        f2.norm_weight = layer_param_tensor(c, &l->norm2.weight, ws);
        f2.norm_bias = layer_param_tensor(c, &l->norm2.bias, ws);
        f2.norm_groups = l->norm2.groups;
        f2.norm_eps = l->norm2.eps;
    }
    Tensor *w1 = layer_param_tensor(c, &l->conv1.weight, ws), *w2 = layer_param_tensor(c, &l->conv2.weight, ws);
    Tensor *b1 = layer_param_tensor(c, &l->conv1.bias, ws), *b2 = layer_param_tensor(c, &l->conv2.bias, ws);
    if (!ctx_grad_enabled(c) && !dropout && conv2d_pair_usable(x, w1, w2)) {
        f2.residual = l->has_skip ? conv2d_forward(c, &l->skip, ws, x) : x;
        return op_conv2d_pair(c, x, w1, b1, &f1, w2, b2, &f2);
    }
    if (!dropout) {
        f2.norm_stats = f1.out_stats = arena_alloc(&c->arena, 2 * sizeof(float) * (size_t)x->shape[0] * l->norm2.groups);
        f1.out_groups = l->norm2.groups;
        f1.out_eps = l->norm2.eps;
    }
    Tensor *h = op_conv2d_fused(c, x, w1, b1, l->conv1.stride, l->conv1.k / 2, &f1);
    f2.residual = l->has_skip ? conv2d_forward(c, &l->skip, ws, x) : x;
    if (dropout) h = op_dropout(c, group_norm_silu_forward(c, &l->norm2, ws, h), l->dropout, dropout_rng, sample0);
    return op_conv2d_fused(c, h, w2, b2, l->conv2.stride, l->conv2.k / 2, &f2);
}

/* ---- Resampling ---- */

Downsample downsample_init(ParamSet *ps, const char *prefix, int channels)
{
    return (Downsample){conv2d_init(ps, prefix, channels, channels, 3, 2, true, LAYER_INIT_DEFAULT)};
}

Tensor *downsample_forward(Ctx *c, const Downsample *l, const WeightSet *ws, Tensor *x)
{
    return conv2d_forward(c, &l->conv, ws, x);
}

Upsample upsample_init(ParamSet *ps, const char *prefix, int channels)
{
    return (Upsample){conv2d_init(ps, prefix, channels, channels, 3, 1, true, LAYER_INIT_DEFAULT)};
}

Tensor *upsample_forward(Ctx *c, const Upsample *l, const WeightSet *ws, Tensor *x, float *out)
{
    return conv2d_forward_fused(c, &l->conv, ws, op_upsample(c, x), &(ConvFusion){.out = out});
}

/* ---- Noise-level embeddings ---- */

/* [sin(c f), cos(c f)] for c [N] and a constant row f [half]. */
static Tensor *sincos_embed(Ctx *c, Tensor *cnoise, const float *f, int half)
{
    int N = cnoise->shape[0];
    CM_ASSERT((int)cnoise->n == N, "noise embedding: c_noise must be [N] or [N,1], got %d values for N = %d",
              (int)cnoise->n, N);
    Tensor *freq = tensor_new(c, 2, SHAPE(1, half));
    memcpy(freq->data, f, (size_t)half * sizeof(float));
    Tensor *phase = op_matmul(c, op_reshape(c, cnoise, 2, SHAPE(N, 1)), freq);   /* [N,half] */
    return op_concat(c, 2, (Tensor *[]){op_sin(c, phase), op_cos(c, phase)});
}

Tensor *noise_embed_positional(Ctx *c, Tensor *cnoise, int channels)
{
    int half = channels / 2;
    CM_ASSERT(half >= 2 && channels % 2 == 0, "positional embedding: %d channels (even, >= 4)", channels);
    float *f = arena_alloc(&c->arena, (size_t)half * sizeof(float));
    for (int k = 0; k < half; k++) f[k] = (float)pow(1e-4, (double)k / (half - 1));
    return sincos_embed(c, cnoise, f, half);
}

Tensor *noise_embed_fourier(Ctx *c, Tensor *cnoise, const float *W, int channels)
{
    int half = channels / 2;
    CM_ASSERT(half >= 1 && channels % 2 == 0, "fourier embedding: %d channels (even)", channels);
    float *f = arena_alloc(&c->arena, (size_t)half * sizeof(float));
    for (int k = 0; k < half; k++) f[k] = (float)(2.0 * M_PI * (double)W[k]);
    return sincos_embed(c, cnoise, f, half);
}

void noise_fourier_freqs(float *W, int half, float scale, uint64_t seed, uint32_t stream)
{
    Rng r = {.seed = seed, .stream = stream, .step = 0};
    rng_normal(&r, W, 1, 0, (size_t)half);
    for (int k = 0; k < half; k++) W[k] *= scale;
}
