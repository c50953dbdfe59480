/* classifier.h: the small CNN whose penultimate features define cmlab's Frechet distance
 * (method = classifier; src/eval/eval.h). FID's Inception network cannot be downloaded here, so
 * cmlab trains its own feature network on the data set's labels and names it by a hash of its
 * weights in every evaluation record.
 *
 * Layout, for L levels of widths channels[0..L-1] on C x H x W images:
 *   level l: conv<l>a 3x3 (-> channels[l]), norm<l>a GN, SiLU,
 *            conv<l>b 3x3, norm<l>b GN, SiLU, then a 2x2 average pool (H >> 1, rounded down);
 *   flatten to [N, channels[L-1] * (H >> L) * (W >> L)];
 *   features = SiLU(fc(flatten))        [N, features]   the metric's feature space
 *   logits   = head(features)           [N, classes]
 * Parameter names are PyTorch's ("conv0a.weight", "norm1b.bias", "fc.weight", "head.bias"), conv
 * OIHW, linear [out, in]; GN groups layers_gn_groups(C), eps 1e-5 (PyTorch's default).
 *
 * Invariants: classifier_init builds the layout only (numbers: params_randomize); a Classifier
 * holds no pointers into its ParamSet; forward allocates only in the Ctx arena.
 */
#ifndef CM_CLASSIFIER_H
#define CM_CLASSIFIER_H

#include <stdio.h>

#include "nn/layers.h"

#define CLASSIFIER_MAX_LEVELS 4

typedef struct ClassifierConfig {
    int img_channels, img_h, img_w;
    int channels[CLASSIFIER_MAX_LEVELS];
    int levels;                  /* L */
    int features;                /* width of the penultimate layer */
    int classes;
} ClassifierConfig;

typedef struct Classifier {
    ClassifierConfig cfg;
    ParamSet ps;
    Conv2d conv[CLASSIFIER_MAX_LEVELS][2];
    GroupNorm norm[CLASSIFIER_MAX_LEVELS][2];
    Linear fc, head;
    int flat;                    /* the flattened width fc reads */
} Classifier;

/* Validates cfg (1 to 4 levels, images at least 2^L pixels wide and high, positive widths) and
 * builds the layout. Returns 0, or -1 after cm_fail() naming the bad field. */
int classifier_init(Classifier *net, const ClassifierConfig *cfg);
void classifier_free(Classifier *net);
/* One line per layer (name, output shape, parameters) and the total, like unet_print_table. */
void classifier_print_table(const Classifier *net, FILE *f);
/* Sum of the parameter slices' element counts. */
size_t classifier_param_count(const Classifier *net);

/* x [N, C, H, W] (values in [-1, 1]) -> logits [N, classes]; features, when not NULL, receives the
 * penultimate activations [N, features]. */
Tensor *classifier_forward(Ctx *c, const Classifier *net, const WeightSet *ws, Tensor *x, Tensor **features);

#endif
