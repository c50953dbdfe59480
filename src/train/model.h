/* model.h: the network, preconditioning and sampler options that a Config describes, and loading
 * a trained one from a checkpoint (its stored configuration rebuilds the architecture). */
#ifndef CM_MODEL_H
#define CM_MODEL_H

#include "data/dataset.h"
#include "nn/classifier.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "train/method.h"
#include "sample/precond.h"
#include "sample/sample.h"
#include "sample/solvers.h"

/* The U-Net of cfg's [model] for images of C x H x W. */
void model_unet_config(const Config *cfg, int C, int H, int W, UNetConfig *out);
/* The first [model] key in which two U-Net configurations differ (dropout aside: it has no
 * weights; "the number of time inputs" for two_times), or NULL. The Fourier frequencies are drawn
 * from experiment.seed. */
const char *model_unet_difference(const UNetConfig *a, const UNetConfig *b);
/* Whether cfg's U-Net fits C x H x W images from `data` (named in messages): -1 after cm_fail()
 * naming the [model] or [data] key to change (model.channels a multiple of 4, an image side
 * divisible by 2^(levels - 1)). */
int model_check(const Config *cfg, int C, int H, int W, const char *data);
/* Builds the classifier of cfg's [classifier] for C x H x W images (method = classifier). data,
 * when not NULL, is checked: it must have labels, all in [0, classifier.classes). -1 after
 * cm_fail() naming the key or the data set. */
int model_classifier_init(const Config *cfg, const Dataset *data, int C, int H, int W, Classifier *out);
/* The image shape the data keys imply: 1x28x28 (MNIST, Fashion-MNIST), 3x32x32 (CIFAR-10), a
 * folder's first PNG; data.pad_to replaces H and W. -1 after cm_fail() if it cannot be known. */
int model_image_shape(const Config *cfg, int *C, int *H, int *W);
/* The preconditioning of cfg's method (its record's precond; method.h). */
PrecondParams model_precond(const Config *cfg);

typedef struct Model {
    UNet net;
    PrecondParams pre;
    ModelKind kind;              /* how it samples (its method's record) */
    float *w;                    /* the loaded weight set */
    int C, H, W;
    char weights_name[64];       /* its group: "online", "ema/0.999", ... */
} Model;

/* Reads the configuration stored in checkpoint path into cfg (messages name "path:config").
 * -1 after cm_fail() for a damaged file or a configuration this build does not read. */
int model_read_config(const char *path, Config *cfg);
/* The group of the weight set `weights` names in checkpoint path: "online", "target", "ema:RATE"
 * (or "ema/RATE") as given; NULL or "" for the file's first EMA, else online. -1 after cm_fail(). */
int model_weights_group(const char *path, const char *weights, char group[64]);
/* The two above on a checkpoint held open (its seal checked once: io/checkpoint.h). */
int model_reader_config(CkptReader *r, Config *cfg);
int model_reader_weights_group(CkptReader *r, const char *weights, char group[64]);
/* Reads path's configuration into cfg, builds the network and loads one weight set: `weights` is
 * "online", "ema:RATE" (or "ema/RATE"), or NULL for the first EMA the file has (else online).
 * -1 after cm_fail() naming the file and the problem. */
int model_load(Model *m, Config *cfg, const char *path, const char *weights);
/* The sampler of a loaded model (its network, preconditioning and weight set; network batches of
 * 64), with scratch ctx. */
Sampler model_sampler(const Model *m, Ctx *ctx);
void model_free(Model *m);

#endif
