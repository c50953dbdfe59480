/* method = classifier: the feature network of the Frechet distance (src/nn/classifier.h).
 * loss = mean_b cross_entropy(logits(x_b), label_b). In place of a sample grid the loop gets its
 * accuracy on the test split. */
#include <stdio.h>

#include "nn/classifier.h"
#include "eval/eval.h"
#include "train/method.h"
#include "train/model.h"

typedef struct Clf {
    Classifier net;
    Dataset test;                /* the test split, for its accuracy */
} Clf;

static int clf_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    Clf *m = st;
    const Config *cfg = env->cfg;
    if (model_classifier_init(cfg, env->data, env->C, env->H, env->W, &m->net) != 0) return -1;
    const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
    if (dataset_load(&m->test, kind, cfg->data.path[0] ? cfg->data.path : NULL, "test") != 0) return -1;
    *ps = &m->net.ps;
    return 0;
}

static double clf_loss(void *st, Ctx *c, const WeightSet *online, const Batch *bt)
{
    Clf *m = st;
    int B = bt->B;
    float *y = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    for (int b = 0; b < B; b++) y[b] = (float)bt->labels[b];
    Tensor *tx = tensor_wrap(c, (float *)bt->x0, NULL, 4, SHAPE(B, bt->C, bt->H, bt->W), false);
    Tensor *ty = tensor_wrap(c, y, NULL, 1, SHAPE(B), false);
    Tensor *loss = op_mean(c, op_cross_entropy(c, classifier_forward(c, &m->net, online, tx, NULL), ty));
    tape_backward(c, loss, NULL);
    return loss->data[0];
}

/* Its accuracy on the test split, printed and logged to metrics.jsonl. */
static int clf_report(void *st, const float *w, const char *wname, Ctx *c, FILE *metrics, long step,
                      const char *samples_dir)
{
    (void)samples_dir;
    Clf *m = st;
    double acc;
    if (eval_accuracy(&m->net, w, &m->test, c, &acc)) return -1;
    printf("test accuracy %.4f (%d images of %s, %s weights)\n", acc, m->test.n, m->test.source, wname);
    fprintf(metrics, "{\"step\": %ld, \"test_accuracy\": %.6g}\n", step, acc);
    fflush(metrics);
    return 0;
}

static size_t clf_param_count(const void *st) { return classifier_param_count(&((const Clf *)st)->net); }
static void clf_print_table(const void *st, FILE *f) { classifier_print_table(&((const Clf *)st)->net, f); }

static void clf_free(void *st)
{
    Clf *m = st;
    classifier_free(&m->net);
    dataset_free(&m->test);
}

const Method method_classifier = {
    .id = CFG_METHOD_CLASSIFIER,
    .name = "classifier",
    .section = "classifier",
    .precond = PRECOND_CM,
    .model = MODEL_FEATURE_NET,
    .state_size = sizeof(Clf),
    .setup = clf_setup,
    .loss = clf_loss,
    .report = clf_report,
    .param_count = clf_param_count,
    .print_table = clf_print_table,
    .free = clf_free,
};
