/* classifier.c: the feature CNN of classifier.h. */
#include "classifier.h"

#include <string.h>

#define CLASSIFIER_GN_EPS 1e-5f

int classifier_init(Classifier *net, const ClassifierConfig *cfg)
{
    memset(net, 0, sizeof *net);
    if (cfg->levels < 1 || cfg->levels > CLASSIFIER_MAX_LEVELS)
        return cm_fail("classifier.channels: %d levels (1 to %d)", cfg->levels, CLASSIFIER_MAX_LEVELS);
    if ((cfg->img_h >> cfg->levels) < 1 || (cfg->img_w >> cfg->levels) < 1)
        return cm_fail("classifier.channels: %d levels halve %dx%d images to nothing", cfg->levels,
                       cfg->img_h, cfg->img_w);
    for (int l = 0; l < cfg->levels; l++)
        if (cfg->channels[l] < 1) return cm_fail("classifier.channels: width %d of level %d", cfg->channels[l], l);
    if (cfg->features < 1 || cfg->classes < 2 || cfg->img_channels < 1)
        return cm_fail("classifier: %d features, %d classes, %d image channels", cfg->features, cfg->classes,
                       cfg->img_channels);
    net->cfg = *cfg;
    params_init(&net->ps);
    char name[32];
    int in = cfg->img_channels;
    for (int l = 0; l < cfg->levels; l++) {
        int ch = cfg->channels[l];
        for (int j = 0; j < 2; j++) {
            snprintf(name, sizeof name, "conv%d%c", l, 'a' + j);
            net->conv[l][j] = conv2d_init(&net->ps, name, j ? ch : in, ch, 3, 1, true, LAYER_INIT_DEFAULT);
            snprintf(name, sizeof name, "norm%d%c", l, 'a' + j);
            net->norm[l][j] = group_norm_init(&net->ps, name, ch, CLASSIFIER_GN_EPS);
        }
        in = ch;
    }
    net->flat = in * (cfg->img_h >> cfg->levels) * (cfg->img_w >> cfg->levels);
    net->fc = linear_init(&net->ps, "fc", net->flat, cfg->features, true, LAYER_INIT_DEFAULT);
    net->head = linear_init(&net->ps, "head", cfg->features, cfg->classes, true, LAYER_INIT_DEFAULT);
    return 0;
}

void classifier_free(Classifier *net)
{
    params_free(&net->ps);
    memset(net, 0, sizeof *net);
}

size_t classifier_param_count(const Classifier *net) { return params_count(&net->ps); }

static size_t params_with_prefix(const Classifier *net, const char *prefix)
{
    size_t n = 0, len = strlen(prefix);
    for (int i = 0; i < net->ps.count; i++)
        if (!strncmp(net->ps.items[i].name, prefix, len) && net->ps.items[i].name[len] == '.') n += net->ps.items[i].n;
    return n;
}

void classifier_print_table(const Classifier *net, FILE *f)
{
    const ClassifierConfig *c = &net->cfg;
    fprintf(f, "%-16s %-14s %10s\n", "layer", "output", "params");
    char conv[16], norm[16], row[40], shape[32];
    for (int l = 0; l < c->levels; l++) {
        for (int j = 0; j < 2; j++) {
            snprintf(conv, sizeof conv, "conv%d%c", l, 'a' + j);
            snprintf(norm, sizeof norm, "norm%d%c", l, 'a' + j);
            snprintf(row, sizeof row, "%s+%s", conv, norm);
            snprintf(shape, sizeof shape, "[%d,%d,%d]", c->channels[l], c->img_h >> l, c->img_w >> l);
            fprintf(f, "%-16s %-14s %10zu\n", row, shape, params_with_prefix(net, conv) + params_with_prefix(net, norm));
        }
        snprintf(shape, sizeof shape, "[%d,%d,%d]", c->channels[l], c->img_h >> (l + 1), c->img_w >> (l + 1));
        fprintf(f, "%-16s %-14s %10d\n", "avgpool", shape, 0);
    }
    snprintf(shape, sizeof shape, "[%d]", c->features);
    fprintf(f, "%-16s %-14s %10zu\n", "fc (features)", shape, params_with_prefix(net, "fc"));
    snprintf(shape, sizeof shape, "[%d]", c->classes);
    fprintf(f, "%-16s %-14s %10zu\n", "head", shape, params_with_prefix(net, "head"));
    fprintf(f, "%-16s %-14s %10zu\n", "total", "", classifier_param_count(net));
}

Tensor *classifier_forward(Ctx *c, const Classifier *net, const WeightSet *ws, Tensor *x, Tensor **features)
{
    const ClassifierConfig *cfg = &net->cfg;
    char sx[64];
    CM_ASSERT(x->ndim == 4 && x->shape[1] == cfg->img_channels && x->shape[2] == cfg->img_h &&
              x->shape[3] == cfg->img_w, "classifier: input %s, want [N,%d,%d,%d]",
              tensor_shape_str(x, sx, sizeof sx), cfg->img_channels, cfg->img_h, cfg->img_w);
    Tensor *h = x;
    for (int l = 0; l < cfg->levels; l++) {
        for (int j = 0; j < 2; j++)
            h = op_silu(c, group_norm_forward(c, &net->norm[l][j], ws, conv2d_forward(c, &net->conv[l][j], ws, h)));
        h = op_avgpool(c, h);
    }
    h = op_reshape(c, h, 2, SHAPE(x->shape[0], net->flat));
    Tensor *feat = op_silu(c, linear_forward(c, &net->fc, ws, h));
    if (features) *features = feat;
    return linear_forward(c, &net->head, ws, feat);
}
