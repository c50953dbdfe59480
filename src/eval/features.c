#include "features.h"

#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/sha256.h"
#include "train/model.h"

enum { FEATURE_BATCH = 256 };

static const ParamSet *sort_ps;
static int by_name(const void *a, const void *b)
{
    return strcmp(sort_ps->items[*(const int *)a].name, sort_ps->items[*(const int *)b].name);
}

void eval_weights_hash(const ParamSet *ps, const float *w, char hex[65])
{
    int *order = cm_malloc((size_t)ps->count * sizeof(int));
    for (int i = 0; i < ps->count; i++) order[i] = i;
    sort_ps = ps;
    qsort(order, (size_t)ps->count, sizeof(int), by_name);
    Sha256 s;
    sha256_init(&s);
    for (int k = 0; k < ps->count; k++) {
        const Param *p = &ps->items[order[k]];
        sha256_update(&s, p->name, strlen(p->name) + 1);
        /* float32 little-endian: the machine's own layout on every target cmlab builds for. */
        _Static_assert(sizeof(float) == 4, "float32");
        sha256_update(&s, w + p->offset, p->n * sizeof(float));
    }
    sha256_final(&s, hex);
    free(order);
}

/* feature_net_load on the open checkpoint r. */
static int load_reader(FeatureNet *f, CkptReader *r, const char *path, const char *weights)
{
    if (model_reader_config(r, &f->cfg)) return -1;
    const Method *fm = method_find(f->cfg.experiment.method);
    if (!fm || fm->model != MODEL_FEATURE_NET)
        return cm_fail("%s: a method = %s checkpoint; the feature network is a method = classifier run "
                       "(train one with an experiment file like experiments/classifier_fashion_mnist.ini)",
                       path, config_method_name(f->cfg.experiment.method));
    if (model_image_shape(&f->cfg, &f->C, &f->H, &f->W)) return -1;
    if (model_classifier_init(&f->cfg, NULL, f->C, f->H, f->W, &f->net)) return cm_fail("%s: %s", path, cm_errmsg());
    if (model_reader_weights_group(r, weights, f->weights)) return -1;
    f->w = params_buffer(&f->net.ps);
    CkptState s = {.ps = &f->net.ps};
    ckpt_add_weights(&s, f->weights, f->w);
    int rc = ckpt_reader_load(r, &s);
    free(s.loaded_config);
    if (rc) return -1;
    eval_weights_hash(&f->net.ps, f->w, f->hash);
    return 0;
}

int feature_net_load(FeatureNet *f, const char *path, const char *weights)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    CkptReader *r = ckpt_open(path);
    int rc = r ? load_reader(f, r, path, weights) : -1;
    ckpt_close(r);
    return rc;
}

void feature_net_free(FeatureNet *f)
{
    free(f->w);
    classifier_free(&f->net);
    memset(f, 0, sizeof *f);
}

/* One image [C, h, w] into [C, H, W], centred: cropped where larger, padded with -1 where
 * smaller (the loader's padding sits at ((H - h) / 2, (W - w) / 2)). */
static void fit_image(const float *src, int C, int h, int w, float *dst, int H, int W)
{
    int dy = (H - h) / 2, dx = (W - w) / 2;   /* dst (y, x) = src (y - dy, x - dx) */
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int sy = y - dy, sx = x - dx;
                bool in = sy >= 0 && sy < h && sx >= 0 && sx < w;
                dst[((size_t)c * H + y) * W + x] = in ? src[((size_t)c * h + sy) * w + sx] : -1.0f;
            }
}

/* Runs the classifier on n images already of its input shape: logits and features per batch. */
typedef void (*BatchFn)(void *user, int i0, int nb, const Tensor *logits, const Tensor *features);

static void classify(const Classifier *net, const float *w, const float *x, int n, Ctx *ctx, BatchFn fn, void *user)
{
    const ClassifierConfig *cc = &net->cfg;
    size_t dim = (size_t)cc->img_channels * cc->img_h * cc->img_w;
    WeightSet ws = {(float *)w, NULL};
    for (int i0 = 0; i0 < n; i0 += FEATURE_BATCH) {
        int nb = CM_MIN(FEATURE_BATCH, n - i0);
        ctx_reset(ctx);
        ctx_no_grad_begin(ctx);
        Tensor *tx = tensor_wrap(ctx, (float *)x + (size_t)i0 * dim, NULL, 4,
                                 SHAPE(nb, cc->img_channels, cc->img_h, cc->img_w), false);
        Tensor *feat;
        Tensor *logits = classifier_forward(ctx, net, &ws, tx, &feat);
        fn(user, i0, nb, logits, feat);
        ctx_no_grad_end(ctx);
    }
}

typedef struct FeatureOut {
    float *out;
    int d;
} FeatureOut;

static void keep_features(void *user, int i0, int nb, const Tensor *logits, const Tensor *features)
{
    (void)logits;
    FeatureOut *o = user;
    memcpy(o->out + (size_t)i0 * o->d, features->data, (size_t)nb * o->d * sizeof(float));
}

void eval_features(const FeatureNet *f, const float *x, int n, int C, int H, int W, Ctx *ctx, float *out)
{
    CM_ASSERT(C == f->C, "eval_features: %d-channel images for a %d-channel feature network", C, f->C);
    const float *in = x;
    float *fitted = NULL;
    if (H != f->H || W != f->W) {
        size_t src = (size_t)C * H * W, dst = (size_t)C * f->H * f->W;
        fitted = cm_malloc((size_t)n * dst * sizeof(float));
        for (int i = 0; i < n; i++) fit_image(x + i * src, C, H, W, fitted + i * dst, f->H, f->W);
        in = fitted;
    }
    FeatureOut o = {out, f->net.cfg.features};
    classify(&f->net, f->w, in, n, ctx, keep_features, &o);
    free(fitted);
}

void eval_dataset_images(const Dataset *d, int i0, int n, int H, int W, float *out)
{
    size_t src = (size_t)d->c * d->h * d->w, dst = (size_t)d->c * H * W;
    float *img = cm_malloc(src * sizeof(float));
    for (int i = 0; i < n; i++) {
        const uint8_t *p = d->pix + (size_t)(i0 + i) * src;
        for (size_t k = 0; k < src; k++) img[k] = (float)(p[k] / 127.5 - 1.0);   /* the loader's map */
        fit_image(img, d->c, d->h, d->w, out + i * dst, H, W);
    }
    free(img);
}

typedef struct Hits {
    const int16_t *labels;
    long correct;
} Hits;

static void count_hits(void *user, int i0, int nb, const Tensor *logits, const Tensor *features)
{
    (void)features;
    Hits *h = user;
    int K = logits->shape[1];
    for (int i = 0; i < nb; i++) {
        const float *row = logits->data + (size_t)i * K;
        int best = 0;
        for (int k = 1; k < K; k++)
            if (row[k] > row[best]) best = k;
        h->correct += best == h->labels[i0 + i];
    }
}

int eval_accuracy(const Classifier *net, const float *w, const Dataset *d, Ctx *ctx, double *acc)
{
    if (d->n < 1 || d->labels[0] < 0) return cm_fail("%s: no labels to measure an accuracy with", d->source);
    const ClassifierConfig *cc = &net->cfg;
    if (d->c != cc->img_channels)
        return cm_fail("%s: %d-channel images for a %d-channel classifier", d->source, d->c, cc->img_channels);
    size_t dim = (size_t)d->c * cc->img_h * cc->img_w;
    Hits h = {d->labels, 0};
    enum { CHUNK = 4096 };
    float *x = cm_malloc(CHUNK * dim * sizeof(float));
    for (int i0 = 0; i0 < d->n; i0 += CHUNK) {
        int nb = CM_MIN(CHUNK, d->n - i0);
        eval_dataset_images(d, i0, nb, cc->img_h, cc->img_w, x);
        h.labels = d->labels + i0;
        classify(net, w, x, nb, ctx, count_hits, &h);
    }
    free(x);
    *acc = (double)h.correct / d->n;
    return 0;
}

