/* unet.c: building the U-Net's layout from a config, its layer table, and its forward pass.
 * The build_* functions and unet_forward walk the layers in the same order; read them side by
 * side. */
#include "unet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SKIPS (1 + UNET_MAX_LEVELS * (UNET_MAX_BLOCKS + 1))

UNetConfig unet_config_default(void)
{
    return (UNetConfig){
        .img_channels = 1, .img_h = 28, .img_w = 28,
        .base_channels = 32, .channel_mult = {1, 2, 2}, .channel_mult_count = 3,
        .num_blocks = 2, .attn_resolutions_count = 0, .mid_attn = true, .attn_heads = 1,
        .dropout = 0.0f, .emb_type = UNET_EMB_POSITIONAL, .fourier_scale = 16.0f,
        .skip_scale = (float)M_SQRT1_2, .two_times = false, .seed = 0,
    };
}

/* ---- config validation ---- */

static int config_check(const UNetConfig *g)
{
    int L = g->channel_mult_count;
    if (g->img_channels != 1 && g->img_channels != 3)
        return cm_fail("unet: img_channels = %d (1 or 3)", g->img_channels);
    if (g->base_channels < 4 || g->base_channels % 4)
        return cm_fail("unet: base_channels = %d (a multiple of 4)", g->base_channels);
    if (L < 1 || L > UNET_MAX_LEVELS)
        return cm_fail("unet: %d channel multipliers (1 to %d)", L, UNET_MAX_LEVELS);
    for (int l = 0; l < L; l++)
        if (g->channel_mult[l] < 1) return cm_fail("unet: channel_mult[%d] = %d (>= 1)", l, g->channel_mult[l]);
    if (g->num_blocks < 1 || g->num_blocks > UNET_MAX_BLOCKS)
        return cm_fail("unet: num_blocks = %d (1 to %d)", g->num_blocks, UNET_MAX_BLOCKS);
    int div = 1 << (L - 1);
    if (g->img_h < div || g->img_w < div || g->img_h % div || g->img_w % div)
        return cm_fail("unet: input %dx%d is not divisible by 2^%d (%d levels)", g->img_h, g->img_w, L - 1, L);
    if (g->attn_resolutions_count < 0 || g->attn_resolutions_count > UNET_MAX_ATTN)
        return cm_fail("unet: %d attention resolutions (at most %d)", g->attn_resolutions_count, UNET_MAX_ATTN);
    if (g->attn_heads < 1) return cm_fail("unet: attn_heads = %d (>= 1)", g->attn_heads);
    if (!(g->dropout >= 0 && g->dropout < 1)) return cm_fail("unet: dropout = %g (in [0, 1))", (double)g->dropout);
    if (g->emb_type != UNET_EMB_POSITIONAL && g->emb_type != UNET_EMB_FOURIER)
        return cm_fail("unet: unknown embedding type %d", (int)g->emb_type);
    if (g->emb_type == UNET_EMB_FOURIER && !(g->fourier_scale > 0))
        return cm_fail("unet: fourier_scale = %g (> 0)", (double)g->fourier_scale);
    if (!(g->skip_scale > 0)) return cm_fail("unet: skip_scale = %g (> 0)", (double)g->skip_scale);
    return 0;
}

/* Attention channels must split evenly into heads (checked where the channel count is known). */
static int heads_check(const UNetConfig *g, int channels)
{
    if (channels % g->attn_heads)
        return cm_fail("unet: %d attention heads do not divide %d channels", g->attn_heads, channels);
    return 0;
}

static bool attn_at(const UNetConfig *g, int res)
{
    for (int i = 0; i < g->attn_resolutions_count; i++)
        if (g->attn_resolutions[i] == res) return true;
    return false;
}

/* ---- layer table ---- */

/* The builder's position: current feature shape, the channels of the pushed skips, and the first
 * parameter slice not yet counted in the table. */
typedef struct Builder {
    UNet *net;
    int ch, h, w;
    int skips[MAX_SKIPS], nskips;
    int counted;
} Builder;

static size_t params_between(const ParamSet *ps, int from, int to)
{
    size_t n = 0;
    for (int i = from; i < to; i++) n += ps->items[i].n;
    return n;
}

/* Appends a row for the layers registered since the last row; h = w = 0 marks a vector [c]. */
static void table_add(Builder *b, const char *name, int ch, int h, int w)
{
    UNet *net = b->net;
    if (net->table_len == net->table_cap) {
        net->table_cap = net->table_cap ? 2 * net->table_cap : 64;
        net->table = realloc(net->table, sizeof(UNetTableRow) * (size_t)net->table_cap);
        CM_ASSERT(net->table, "out of memory");
    }
    UNetTableRow *r = &net->table[net->table_len++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->c = ch;
    r->h = h;
    r->w = w;
    r->params = params_between(&net->ps, b->counted, net->ps.count);
    b->counted = net->ps.count;
}

static void table_add_feature(Builder *b, const char *name) { table_add(b, name, b->ch, b->h, b->w); }

void unet_print_table(const UNet *net, FILE *f)
{
    fprintf(f, "%-28s %-16s %12s\n", "layer", "output", "params");
    size_t total = 0;
    for (int i = 0; i < net->table_len; i++) {
        const UNetTableRow *r = &net->table[i];
        char shape[48];
        if (r->h) snprintf(shape, sizeof shape, "[%d,%d,%d]", r->c, r->h, r->w);
        else snprintf(shape, sizeof shape, "[%d]", r->c);
        fprintf(f, "%-28s %-16s %12zu\n", r->name, shape, r->params);
        total += r->params;
    }
    fprintf(f, "%-28s %-16s %12zu\n", "total", "", total);
}

size_t unet_param_count(const UNet *net) { return params_between(&net->ps, 0, net->ps.count); }

/* ---- building ---- */

static void build_embedding(Builder *b)
{
    UNet *net = b->net;
    ParamSet *ps = &net->ps;
    int F = net->cfg.base_channels, E = net->emb_dim;
    if (net->cfg.emb_type == UNET_EMB_FOURIER) {
        net->fourier_freqs = cm_malloc((size_t)(F / 2) * sizeof(float));
        noise_fourier_freqs(net->fourier_freqs, F / 2, net->cfg.fourier_scale, net->cfg.seed, UNET_STREAM_FOURIER);
    }
    table_add(b, net->cfg.emb_type == UNET_EMB_FOURIER ? "map_noise (fourier)" : "map_noise (positional)", F, 0, 0);
    net->map_layer0 = linear_init(ps, "map_layer0", F, E, true, LAYER_INIT_DEFAULT);
    table_add(b, "map_layer0", E, 0, 0);
    net->map_layer1 = linear_init(ps, "map_layer1", E, E, true, LAYER_INIT_DEFAULT);
    table_add(b, "map_layer1", E, 0, 0);
    if (!net->cfg.two_times) return;
    net->map_u_layer0 = linear_init(ps, "map_u_layer0", F, E, true, LAYER_INIT_DEFAULT);
    table_add(b, "map_u_layer0", E, 0, 0);
    net->map_u_layer1 = linear_init(ps, "map_u_layer1", E, E, true, LAYER_INIT_DEFAULT);
    table_add(b, "map_u_layer1", E, 0, 0);
    net->map_align = linear_init(ps, "map_align", 2 * E, E, false, LAYER_INIT_DEFAULT);
    table_add(b, "map_align", E, 0, 0);
}

/* A ResBlock from the current channels to `out`, followed by attention when attn_name is set. */
static int build_block(Builder *b, const char *block_name, const char *attn_name, int out, ResBlock *res,
                       Attention *at)
{
    UNet *net = b->net;
    const UNetConfig *g = &net->cfg;
    *res = resblock_init(&net->ps, block_name, b->ch, out, net->emb_dim, g->dropout, g->skip_scale);
    b->ch = out;
    net->num_dropout++;
    table_add_feature(b, block_name);
    if (!attn_name) return 0;
    if (heads_check(g, out) != 0) return -1;
    *at = attention_init(&net->ps, attn_name, out, g->attn_heads, g->skip_scale);
    table_add_feature(b, attn_name);
    return 0;
}

/* The block and attention names of block i of a level: "<prefix>.block<i>", "<prefix>.attn<i>". */
static int build_level_block(Builder *b, const char *prefix, int i, bool attn, int out, ResBlock *res,
                             Attention *at)
{
    char block_name[64], attn_name[64];
    snprintf(block_name, sizeof block_name, "%s.block%d", prefix, i);
    snprintf(attn_name, sizeof attn_name, "%s.attn%d", prefix, i);
    return build_block(b, block_name, attn ? attn_name : NULL, out, res, at);
}

static void push_skip(Builder *b) { b->skips[b->nskips++] = b->ch; }

static int build_encoder(Builder *b)
{
    UNet *net = b->net;
    const UNetConfig *g = &net->cfg;
    char name[32];
    net->conv_in = conv2d_init(&net->ps, "conv_in", g->img_channels, g->base_channels, 3, 1, true, LAYER_INIT_DEFAULT);
    b->ch = g->base_channels;
    table_add_feature(b, "conv_in");
    push_skip(b);
    for (int l = 0; l < g->channel_mult_count; l++) {
        UNetLevel *lv = &net->levels[l];
        lv->attn = attn_at(g, g->img_h >> l);
        snprintf(name, sizeof name, "enc.%d", l);
        for (int i = 0; i < g->num_blocks; i++) {
            if (build_level_block(b, name, i, lv->attn, g->base_channels * g->channel_mult[l], &lv->enc[i],
                                  &lv->enc_attn[i]))
                return -1;
            push_skip(b);
        }
        if (l == g->channel_mult_count - 1) continue;
        snprintf(name, sizeof name, "enc.%d.down", l);
        lv->down = downsample_init(&net->ps, name, b->ch);
        b->h /= 2;
        b->w /= 2;
        table_add_feature(b, name);
        push_skip(b);
    }
    return 0;
}

static int build_middle(Builder *b)
{
    UNet *net = b->net;
    if (build_block(b, "mid.block0", net->cfg.mid_attn ? "mid.attn" : NULL, b->ch, &net->mid_block0, &net->mid_attn))
        return -1;
    return build_block(b, "mid.block1", NULL, b->ch, &net->mid_block1, NULL);
}

static int build_decoder(Builder *b)
{
    UNet *net = b->net;
    const UNetConfig *g = &net->cfg;
    char name[32];
    for (int l = g->channel_mult_count - 1; l >= 0; l--) {
        UNetLevel *lv = &net->levels[l];
        snprintf(name, sizeof name, "dec.%d", l);
        for (int i = 0; i <= g->num_blocks; i++) {
            b->ch += b->skips[--b->nskips];
            if (build_level_block(b, name, i, lv->attn, g->base_channels * g->channel_mult[l], &lv->dec[i],
                                  &lv->dec_attn[i]))
                return -1;
        }
        if (l == 0) continue;
        snprintf(name, sizeof name, "dec.%d.up", l);
        lv->up = upsample_init(&net->ps, name, b->ch);
        b->h *= 2;
        b->w *= 2;
        table_add_feature(b, name);
    }
    return 0;
}

static void build_output(Builder *b)
{
    UNet *net = b->net;
    net->norm_out = group_norm_init(&net->ps, "norm_out", b->ch, 1e-6f);
    table_add_feature(b, "norm_out");
    net->conv_out = conv2d_init(&net->ps, "conv_out", b->ch, net->cfg.img_channels, 3, 1, true, LAYER_INIT_NEAR_ZERO);
    b->ch = net->cfg.img_channels;
    table_add_feature(b, "conv_out");
}

int unet_init(UNet *net, const UNetConfig *cfg)
{
    memset(net, 0, sizeof *net);
    if (config_check(cfg) != 0) return -1;
    net->cfg = *cfg;
    net->emb_dim = 4 * cfg->base_channels;
    params_init(&net->ps);
    Builder b = {.net = net, .h = cfg->img_h, .w = cfg->img_w};
    build_embedding(&b);
    if (build_encoder(&b) != 0 || build_middle(&b) != 0 || build_decoder(&b) != 0) {
        unet_free(net);
        return -1;
    }
    build_output(&b);
    CM_ASSERT(b.nskips == 0, "unet: %d skips left after the decoder", b.nskips);
    return 0;
}

void unet_free(UNet *net)
{
    params_free(&net->ps);
    free(net->fourier_freqs);
    free(net->table);
    memset(net, 0, sizeof *net);
}

/* ---- forward ---- */

static Tensor *noise_features(Ctx *c, const UNet *net, Tensor *cnoise)
{
    if (net->cfg.emb_type == UNET_EMB_FOURIER)
        return noise_embed_fourier(c, cnoise, net->fourier_freqs, net->cfg.base_channels);
    return noise_embed_positional(c, cnoise, net->cfg.base_channels);
}

/* One time branch before its final SiLU: layer1(silu(layer0(features))). */
static Tensor *embed_branch(Ctx *c, const UNet *net, const WeightSet *ws, const Linear *l0,
                            const Linear *l1, Tensor *cnoise)
{
    Tensor *h = op_silu(c, linear_forward(c, l0, ws, noise_features(c, net, cnoise)));
    return linear_forward(c, l1, ws, h);
}

static Tensor *embed(Ctx *c, const UNet *net, const WeightSet *ws, Tensor *cnoise_t, Tensor *cnoise_u)
{
    Tensor *e = embed_branch(c, net, ws, &net->map_layer0, &net->map_layer1, cnoise_t);
    if (net->cfg.two_times) {
        Tensor *eu = embed_branch(c, net, ws, &net->map_u_layer0, &net->map_u_layer1, cnoise_u);
        e = linear_forward(c, &net->map_align, ws, op_concat(c, 2, (Tensor *[]){e, eu}));
    }
    return op_silu(c, e);
}

/* Everything a block needs besides its input. */
typedef struct Pass {
    Ctx *c;
    const WeightSet *ws;
    Tensor *emb;
    const Rng *dropout;
    int sample0;
    int block;                   /* ResBlocks run so far: block i uses dropout stream + i */
} Pass;

/* out: where the block's output goes (resblock_forward), or NULL. */
static Tensor *run_block(Pass *p, const ResBlock *res, const Attention *attn, Tensor *h, float *out)
{
    Rng r;
    const Rng *rp = NULL;
    if (p->dropout) {
        r = *p->dropout;
        r.stream += (uint32_t)p->block;
        rp = &r;
    }
    p->block++;
    h = resblock_forward(p->c, res, p->ws, h, p->emb, rp, p->sample0, attn ? NULL : out);
    return attn ? attention_forward(p->c, attn, p->ws, h, out) : h;
}

/* A no-grad pass (the target pass, sampling) keeps each block's output and frees the block's
 * intermediates: the output's buffer is allocated first, below them, and the block writes its
 * values there (the layers' `out`), so that releasing the intermediates moves nothing. It holds
 * about the skips then, not every activation. kept_begin reserves the output's buffer and marks
 * the arena above it; kept_end releases everything since and wraps the buffer. */
static float *kept_begin(Ctx *c, int N, int C, int H, int W, ArenaMark *m)
{
    float *out = arena_alloc(&c->arena, sizeof(float) * (size_t)N * C * H * W);
    *m = arena_mark(&c->arena);
    return out;
}

static Tensor *kept_end(Ctx *c, ArenaMark m, float *out, int N, int C, int H, int W)
{
    arena_release(&c->arena, m);
    return tensor_wrap(c, out, NULL, 4, SHAPE(N, C, H, W), false);
}

/* run_block, kept as above in a no-grad pass. `in` may be NULL; when not, the block's input is
 * concat(h, in) (the decoder). */
static Tensor *run_block_kept(Pass *p, const ResBlock *res, const Attention *attn, Tensor *h, Tensor *in)
{
    Ctx *c = p->c;
    if (ctx_grad_enabled(c)) {   /* the tape holds the intermediates anyway */
        if (in) h = op_concat(c, 2, (Tensor *[]){h, in});
        return run_block(p, res, attn, h, NULL);
    }
    const int N = h->shape[0], H = h->shape[2], W = h->shape[3];
    ArenaMark m;
    float *out = kept_begin(c, N, res->out, H, W, &m);
    if (in) h = op_concat(c, 2, (Tensor *[]){h, in});
    run_block(p, res, attn, h, out);
    return kept_end(c, m, out, N, res->out, H, W);
}

static void check_inputs(const UNet *net, const Tensor *x, const Tensor *cnoise_t, const Tensor *cnoise_u)
{
    const UNetConfig *g = &net->cfg;
    char s[64];
    int div = 1 << (g->channel_mult_count - 1);
    CM_ASSERT(x->ndim == 4 && x->shape[1] == g->img_channels && x->shape[2] % div == 0 && x->shape[3] % div == 0,
              "unet_forward: x %s, want [N,%d,H,W] with H, W divisible by %d", tensor_shape_str(x, s, sizeof s),
              g->img_channels, div);
    int N = x->shape[0];
    CM_ASSERT((int)cnoise_t->n == N && cnoise_t->shape[0] == N, "unet_forward: cnoise_t %s, want [%d]",
              tensor_shape_str(cnoise_t, s, sizeof s), N);
    CM_ASSERT(g->two_times == (cnoise_u != NULL), "unet_forward: cnoise_u %s for a net with %s time input",
              cnoise_u ? "given" : "missing", g->two_times ? "a second" : "no second");
    CM_ASSERT(!cnoise_u || ((int)cnoise_u->n == N && cnoise_u->shape[0] == N), "unet_forward: cnoise_u %s, want [%d]",
              tensor_shape_str(cnoise_u, s, sizeof s), N);
}

Tensor *unet_forward(Ctx *c, const UNet *net, const WeightSet *ws, Tensor *x, Tensor *cnoise_t,
                     Tensor *cnoise_u, const Rng *dropout, int sample0, Tensor **bottleneck)
{
    const UNetConfig *g = &net->cfg;
    int L = g->channel_mult_count;
    check_inputs(net, x, cnoise_t, cnoise_u);
    Pass p = {.c = c, .ws = ws, .emb = embed(c, net, ws, cnoise_t, cnoise_u), .dropout = dropout, .sample0 = sample0};
    Tensor *skips[MAX_SKIPS];
    int nskips = 0;

    Tensor *h = conv2d_forward(c, &net->conv_in, ws, x);
    skips[nskips++] = h;
    for (int l = 0; l < L; l++) {
        const UNetLevel *lv = &net->levels[l];
        for (int i = 0; i < g->num_blocks; i++) {
            h = run_block_kept(&p, &lv->enc[i], lv->attn ? &lv->enc_attn[i] : NULL, h, NULL);
            skips[nskips++] = h;
        }
        if (l == L - 1) continue;
        h = downsample_forward(c, &lv->down, ws, h);
        skips[nskips++] = h;
    }

    h = run_block_kept(&p, &net->mid_block0, g->mid_attn ? &net->mid_attn : NULL, h, NULL);
    h = run_block_kept(&p, &net->mid_block1, NULL, h, NULL);
    if (bottleneck) *bottleneck = h;

    for (int l = L - 1; l >= 0; l--) {
        const UNetLevel *lv = &net->levels[l];
        for (int i = 0; i <= g->num_blocks; i++) {
            h = run_block_kept(&p, &lv->dec[i], lv->attn ? &lv->dec_attn[i] : NULL, h, skips[--nskips]);
        }
        if (l > 0) {
            const int N = h->shape[0], C = h->shape[1], H = 2 * h->shape[2], W = 2 * h->shape[3];
            if (ctx_grad_enabled(c)) {
                h = upsample_forward(c, &lv->up, ws, h, NULL);
            } else {
                ArenaMark m;
                float *out = kept_begin(c, N, C, H, W, &m);
                upsample_forward(c, &lv->up, ws, h, out);
                h = kept_end(c, m, out, N, C, H, W);
            }
        }
    }
    h = group_norm_silu_forward(c, &net->norm_out, ws, h);
    return conv2d_forward(c, &net->conv_out, ws, h);
}
