#include "model.h"

#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "data/image.h"
#include "io/checkpoint.h"
#include "train/method.h"

void model_unet_config(const Config *cfg, int C, int H, int W, UNetConfig *u)
{
    *u = unet_config_default();
    u->img_channels = C;
    u->img_h = H;
    u->img_w = W;
    u->base_channels = cfg->model.channels;
    u->channel_mult_count = cfg->model.channel_mult.n;
    for (int i = 0; i < u->channel_mult_count; i++) u->channel_mult[i] = cfg->model.channel_mult.v[i];
    u->num_blocks = cfg->model.num_blocks;
    u->attn_resolutions_count = cfg->model.attn_resolutions.n;
    for (int i = 0; i < u->attn_resolutions_count; i++) u->attn_resolutions[i] = cfg->model.attn_resolutions.v[i];
    u->mid_attn = cfg->model.mid_attn;
    u->attn_heads = cfg->model.attn_heads;
    u->dropout = (float)cfg->model.dropout;
    u->emb_type = cfg->model.emb_type;
    u->fourier_scale = (float)cfg->model.fourier_scale;
    u->skip_scale = (float)config_skip_scale(cfg);
    u->seed = (uint64_t)cfg->experiment.seed;
    const Method *m = method_find(cfg->experiment.method);
    u->two_times = m && m->precond == PRECOND_BCM;
}

const char *model_unet_difference(const UNetConfig *a, const UNetConfig *b)
{
    if (a->img_channels != b->img_channels || a->img_h != b->img_h || a->img_w != b->img_w)
        return "the image shape (data.dataset, data.pad_to)";
    if (a->base_channels != b->base_channels) return "model.channels";
    if (a->channel_mult_count != b->channel_mult_count ||
        memcmp(a->channel_mult, b->channel_mult, sizeof(int) * (size_t)a->channel_mult_count))
        return "model.channel_mult";
    if (a->num_blocks != b->num_blocks) return "model.num_blocks";
    if (a->attn_resolutions_count != b->attn_resolutions_count ||
        memcmp(a->attn_resolutions, b->attn_resolutions, sizeof(int) * (size_t)a->attn_resolutions_count))
        return "model.attn_resolutions";
    if (a->mid_attn != b->mid_attn) return "model.mid_attn";
    if (a->attn_heads != b->attn_heads) return "model.attn_heads";
    if (a->emb_type != b->emb_type) return "model.emb_type";
    if (a->skip_scale != b->skip_scale) return "model.skip_scale";
    if (a->two_times != b->two_times) return "the number of time inputs";
    if (a->emb_type == UNET_EMB_FOURIER && a->fourier_scale != b->fourier_scale) return "model.fourier_scale";
    if (a->emb_type == UNET_EMB_FOURIER && a->seed != b->seed)
        return "experiment.seed (it draws the Fourier frequencies)";
    return NULL;
}

int model_check(const Config *cfg, int C, int H, int W, const char *data)
{
    const CfgModel *m = &cfg->model;
    if (m->channels % 4)
        return cm_fail("model.channels = %d: must be a multiple of 4 (group normalisation takes groups of "
                       "4 channels)", m->channels);
    const int levels = m->channel_mult.n, div = 1 << (levels - 1);
    if (H % div || W % div || H < div || W < div) {
        char mult[96] = "";
        for (int i = 0, k = 0; i < levels && k < (int)sizeof mult; i++)
            k += snprintf(mult + k, sizeof mult - (size_t)k, "%s%d", i ? "," : "", m->channel_mult.v[i]);
        return cm_fail("model.channel_mult = %s: %d levels halve the image %d times, so its sides must be "
                       "multiples of %d, but the images of %s are %dx%d%s; set data.pad_to to a multiple "
                       "of %d, or use fewer levels", mult, levels, levels - 1, div, data, H, W,
                       cfg->data.pad_to ? " (data.pad_to)" : "", div);
    }
    return 0;
}

int model_classifier_init(const Config *cfg, const Dataset *data, int C, int H, int W, Classifier *out)
{
    ClassifierConfig cc = {.img_channels = C, .img_h = H, .img_w = W, .levels = cfg->classifier.channels.n,
                           .features = cfg->classifier.features, .classes = cfg->classifier.classes};
    for (int l = 0; l < cc.levels; l++) cc.channels[l] = cfg->classifier.channels.v[l];
    for (int i = 0; data && i < data->n; i++)
        if (data->labels[i] < 0 || data->labels[i] >= cc.classes)
            return cm_fail("%s: image %d has %s; method = classifier needs labels in [0, classifier.classes = %d)",
                           data->source, i, data->labels[i] < 0 ? "no label" : "a label past the classes",
                           cc.classes);
    if (classifier_init(out, &cc) != 0) return cm_fail("[classifier]: %s", cm_errmsg());
    return 0;
}

/* The first *.png of a directory, by name (the folder reader's order). */
static int first_png(const char *dir, char *out, size_t len)
{
    DIR *d = opendir(dir);
    if (!d) return cm_fail("data.path = %s: cannot open the directory", dir);
    char best[256] = "";
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n > 4 && !strcmp(e->d_name + n - 4, ".png") && (!best[0] || strcmp(e->d_name, best) < 0))
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    closedir(d);
    if (!best[0]) return cm_fail("data.path = %s: no .png files", dir);
    snprintf(out, len, "%s/%s", dir, best);
    return 0;
}

int model_image_shape(const Config *cfg, int *C, int *H, int *W)
{
    switch (cfg->data.dataset) {
    case CFG_DATASET_FASHION_MNIST:
    case CFG_DATASET_MNIST: *C = 1; *H = *W = 28; break;
    case CFG_DATASET_CIFAR10: *C = 3; *H = *W = 32; break;
    case CFG_DATASET_FOLDER: {
        char path[512];
        uint8_t *pix;
        if (first_png(cfg->data.path, path, sizeof path) || image_read_png(path, &pix, W, H, C)) return -1;
        free(pix);
        break;
    }
    case CFG_DATASET_COUNT: CM_ASSERT(0, "model_image_shape: bad data.dataset %d", (int)cfg->data.dataset);
    }
    if (cfg->data.pad_to) *H = *W = cfg->data.pad_to;
    return 0;
}

PrecondParams model_precond(const Config *cfg)
{
    const Method *m = method_find(cfg->experiment.method);
    CM_ASSERT(m, "model_precond: experiment.method = %s is not a method this build trains",
              config_method_name(cfg->experiment.method));
    return (PrecondParams){m->precond, cfg->model.sigma_data, cfg->model.sigma_min};
}

int model_reader_weights_group(CkptReader *r, const char *weights, char group[64])
{
    if (weights && weights[0]) {
        bool ema = !strncmp(weights, "ema:", 4);
        snprintf(group, 64, "%s%.59s", ema ? "ema/" : "", ema ? weights + 4 : weights);
        return 0;
    }
    char sets[CKPT_MAX_SETS][64];
    int n = ckpt_reader_weights(r, sets, CKPT_MAX_SETS);
    if (n < 0) return -1;
    snprintf(group, 64, "online");
    for (int i = 0; i < n; i++)
        if (!strncmp(sets[i], "ema/", 4)) {
            snprintf(group, 64, "%.63s", sets[i]);
            break;
        }
    return 0;
}

int model_weights_group(const char *path, const char *weights, char group[64])
{
    if (weights && weights[0]) return model_reader_weights_group(NULL, weights, group);
    CkptReader *r = ckpt_open(path);
    int rc = r ? model_reader_weights_group(r, weights, group) : -1;
    ckpt_close(r);
    return rc;
}

int model_reader_config(CkptReader *r, Config *cfg)
{
    char *text = ckpt_reader_attr(r, "config");
    if (!text) return -1;
    char name[PATH_MAX + 16];
    snprintf(name, sizeof name, "%s:config", ckpt_reader_path(r));
    int rc = config_from_string(cfg, text, name);
    free(text);
    return rc;
}

int model_read_config(const char *path, Config *cfg)
{
    CkptReader *r = ckpt_open(path);
    int rc = r ? model_reader_config(r, cfg) : -1;
    ckpt_close(r);
    return rc;
}

/* model_load on the open checkpoint r (path: its name). */
static int load_reader(Model *m, Config *cfg, CkptReader *r, const char *path, const char *weights)
{
    if (model_reader_config(r, cfg)) return -1;
    const Method *method;
    if (method_get(cfg, &method) != 0) return cm_fail("%s: %s", path, cm_errmsg());
    if (cfg->experiment.method == CFG_METHOD_AMED)
        return cm_fail("%s: an AMED predictor, which samples with the teacher it was trained on: cmlab sample "
                       "TEACHER.h5 --predictor %s (TEACHER.h5: its amed.teacher, %s)", path, path, cfg->amed.teacher);
    if (method->model == MODEL_FEATURE_NET)
        return cm_fail("%s: a method = %s checkpoint has no generative network (cmlab eval "
                       "measures its test accuracy)", path, method->name);
    m->kind = method->model;
    if (model_image_shape(cfg, &m->C, &m->H, &m->W)) return -1;
    UNetConfig u;
    model_unet_config(cfg, m->C, m->H, m->W, &u);
    if (unet_init(&m->net, &u)) return cm_fail("%s: its [model] does not build: %s", path, cm_errmsg());
    m->pre = model_precond(cfg);

    char group[64];
    if (model_reader_weights_group(r, weights, group) != 0) return -1;
    snprintf(m->weights_name, sizeof m->weights_name, "%s", group);
    m->w = params_buffer(&m->net.ps);
    CkptState s = {.ps = &m->net.ps};
    ckpt_add_weights(&s, group, m->w);
    int rc = ckpt_reader_load(r, &s);
    free(s.loaded_config);
    return rc;
}

int model_load(Model *m, Config *cfg, const char *path, const char *weights)
{
    memset(m, 0, sizeof *m);
    CkptReader *r = ckpt_open(path);
    int rc = r ? load_reader(m, cfg, r, path, weights) : -1;
    ckpt_close(r);
    return rc;
}

Sampler model_sampler(const Model *m, Ctx *ctx)
{
    return (Sampler){&m->net, m->pre, m->w, 64, m->C, m->H, m->W, ctx};
}

void model_free(Model *m)
{
    free(m->w);
    unet_free(&m->net);
    memset(m, 0, sizeof *m);
}
