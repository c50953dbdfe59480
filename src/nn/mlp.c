/* mlp.c: the AMED predictor of mlp.h. */
#include "mlp.h"

#include <math.h>
#include <string.h>

MlpConfig mlp_config_default(void)
{
    return (MlpConfig){.in_dim = 64, .hidden = 128, .out_dim = 4, .noise_channels = 8,
                       .scale_dir = 0.01f, .scale_time = 0.0f};
}

int mlp_init(AmedMLP *m, const MlpConfig *cfg)
{
    memset(m, 0, sizeof *m);
    if (cfg->in_dim < 1 || cfg->hidden < 1 || cfg->out_dim < 1)
        return cm_fail("amed mlp: dims %d, %d, %d (>= 1)", cfg->in_dim, cfg->hidden, cfg->out_dim);
    if (cfg->noise_channels < 4 || cfg->noise_channels % 2)
        return cm_fail("amed mlp: noise_channels = %d (even, >= 4)", cfg->noise_channels);
    if (!(cfg->scale_dir >= 0 && cfg->scale_dir < 1) || !(cfg->scale_time >= 0 && cfg->scale_time < 1))
        return cm_fail("amed mlp: scale_dir = %g, scale_time = %g (in [0, 1))", (double)cfg->scale_dir,
                       (double)cfg->scale_time);
    m->cfg = *cfg;
    params_init(&m->ps);
    int nc = cfg->noise_channels, z = cfg->out_dim + 2 * nc;
    m->map_layer0 = linear_init(&m->ps, "map_layer0", nc, nc, true, LAYER_INIT_DEFAULT);
    m->enc_layer0 = linear_init(&m->ps, "enc_layer0", cfg->in_dim, cfg->hidden, true, LAYER_INIT_DEFAULT);
    m->enc_layer1 = linear_init(&m->ps, "enc_layer1", cfg->hidden, cfg->out_dim, true, LAYER_INIT_DEFAULT);
    m->fc_r = linear_init(&m->ps, "fc_r", z, 1, true, LAYER_INIT_DEFAULT);
    if (cfg->scale_dir > 0) m->fc_scale_dir = linear_init(&m->ps, "fc_scale_dir", z, 1, true, LAYER_INIT_DEFAULT);
    if (cfg->scale_time > 0) m->fc_scale_time = linear_init(&m->ps, "fc_scale_time", z, 1, true, LAYER_INIT_DEFAULT);
    return 0;
}

void mlp_free(AmedMLP *m)
{
    params_free(&m->ps);
    memset(m, 0, sizeof *m);
}

size_t mlp_param_count(const AmedMLP *m) { return params_count(&m->ps); }

/* ---- initialisation (reference/amed.md §1; stream = slice index, as params_randomize) ---- */

static size_t numel(const LayerParam *p)
{
    size_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= (size_t)p->shape[d];
    return n;
}

/* weight ~ U(+-sqrt(6/(fan_in+fan_out))) when xavier, else N(0, 1/fan_in); bias 0. */
static void linear_randomize(const Linear *l, float *w, uint64_t seed, bool xavier)
{
    if (l->weight.ndim == 0) return;   /* an absent optional head */
    float *wt = w + l->weight.offset;
    size_t n = numel(&l->weight);
    Rng r = {.seed = seed, .stream = (uint32_t)l->weight.index, .step = 0};
    if (xavier) {
        float bound = sqrtf(6.0f / (float)(l->in + l->out));
        rng_uniform(&r, wt, 1, 0, n);
        for (size_t k = 0; k < n; k++) wt[k] = bound * (2.0f * wt[k] - 1.0f);
    } else {
        float std = 1.0f / sqrtf((float)l->in);
        rng_normal(&r, wt, 1, 0, n);
        for (size_t k = 0; k < n; k++) wt[k] *= std;
    }
    memset(w + l->bias.offset, 0, numel(&l->bias) * sizeof(float));
}

void mlp_randomize(const AmedMLP *m, float *w, uint64_t seed)
{
    linear_randomize(&m->map_layer0, w, seed, true);
    const Linear *rest[] = {&m->enc_layer0, &m->enc_layer1, &m->fc_r, &m->fc_scale_dir, &m->fc_scale_time};
    for (size_t i = 0; i < CM_ARRAY_LEN(rest); i++) linear_randomize(rest[i], w, seed, false);
}

/* ---- forward ---- */

/* [N, 2*nc]: per sample [silu(map_layer0(e(sigma_cur))), silu(map_layer0(e(sigma_next)))]. Rows
 * (sample, cur) and (sample, next) of a [2N, nc] batch are adjacent, so a reshape joins them. */
static Tensor *time_embedding(Ctx *c, const AmedMLP *m, const WeightSet *ws, int N, float sigma_cur,
                              float sigma_next)
{
    int nc = m->cfg.noise_channels;
    Tensor *s = tensor_new(c, 1, SHAPE(2 * N));
    for (int i = 0; i < N; i++) {
        s->data[2 * i] = sigma_cur;
        s->data[2 * i + 1] = sigma_next;
    }
    Tensor *h = op_silu(c, linear_forward(c, &m->map_layer0, ws, noise_embed_positional(c, s, nc)));
    return op_reshape(c, h, 2, SHAPE(N, 2 * nc));
}

/* 2 S sigmoid(head(z)) + 1 - S, as [N]. */
static Tensor *scale_head(Ctx *c, const Linear *head, const WeightSet *ws, Tensor *z, float S)
{
    Tensor *y = op_sigmoid(c, linear_forward(c, head, ws, z));
    return op_reshape(c, op_scale(c, y, 2.0f * S, 1.0f - S), 1, SHAPE(z->shape[0]));
}

MlpOutput mlp_forward(Ctx *c, const AmedMLP *m, const WeightSet *ws, Tensor *bottleneck, float sigma_cur,
                      float sigma_next)
{
    char s[64];
    CM_ASSERT(bottleneck->ndim == 2 && bottleneck->shape[1] == m->cfg.in_dim,
              "mlp_forward: bottleneck %s, want [N,%d]", tensor_shape_str(bottleneck, s, sizeof s), m->cfg.in_dim);
    int N = bottleneck->shape[0];
    Tensor *u = op_silu(c, linear_forward(c, &m->enc_layer0, ws, bottleneck));
    u = linear_forward(c, &m->enc_layer1, ws, u);
    Tensor *z = op_concat(c, 2, (Tensor *[]){u, time_embedding(c, m, ws, N, sigma_cur, sigma_next)});
    MlpOutput out = {0};
    out.r = op_reshape(c, op_sigmoid(c, linear_forward(c, &m->fc_r, ws, z)), 1, SHAPE(N));
    if (m->cfg.scale_dir > 0) out.c = scale_head(c, &m->fc_scale_dir, ws, z, m->cfg.scale_dir);
    if (m->cfg.scale_time > 0) out.a = scale_head(c, &m->fc_scale_time, ws, z, m->cfg.scale_time);
    return out;
}

Tensor *mlp_bottleneck_input(Ctx *c, const Tensor *mid)
{
    char s[64];
    CM_ASSERT(mid->ndim == 4, "mlp_bottleneck_input: want [N,C,h,w], got %s", tensor_shape_str(mid, s, sizeof s));
    int N = mid->shape[0], C = mid->shape[1], S = mid->shape[2] * mid->shape[3];
    Tensor *y = tensor_zeros(c, 2, SHAPE(N, S));
    for (int n = 0; n < N; n++)
        for (int ch = 0; ch < C; ch++) {
            const float *src = mid->data + ((size_t)n * C + ch) * S;
            for (int k = 0; k < S; k++) y->data[(size_t)n * S + k] += src[k] / (float)C;
        }
    return y;
}
