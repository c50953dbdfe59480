/* features.h: the feature network of the Frechet distance: a classifier that cmlab trains itself
 * (method = classifier; FID's Inception network cannot be downloaded here), its identity, its
 * features of generated and real images, its accuracy, and the cached reference statistics.
 *
 * Images enter the classifier as the loader makes them (bytes v -> v / 127.5 - 1), so generated
 * samples are clamped to [-1, 1] and rounded to 8 bits first, as an FID over saved PNGs would;
 * images of another size than the classifier's are centre-cropped or padded with -1 (undoing
 * data.pad_to).
 *
 * Feature-network identity: SHA-256 over the evaluated weight set, parameters in byte order of
 * their names, each contributing its name, a NUL byte and its float32 values little-endian
 * (README.md shows it recomputed with h5py and hashlib). Reference statistics
 * of a data split are cached per (feature hash, data) in
 * <feature run>/fd_stats/<dataset>-<split>-<hash[0:16]>-<data hash[0:16]>.h5 (the feature run is
 * the directory above the checkpoint's ckpt/), written atomically and checked against both hashes
 * when read. The data hash is SHA-256 over the kind, the path read and split, the shape, the pixels
 * and the labels: two directories of one kind, or one whose files changed, never share statistics.
 *
 * Reading and hashing the data took a quarter of `cmlab eval --n 512` on Fashion-MNIST (gunzip
 * of 47 MB), so the hash is memoised under the data's signature, as git trusts its index: SHA-256
 * over the kind, split and real path and, for the path and each regular file in it (when it is a
 * directory), its name, size, inode, device, mode, and modification and status-change times in
 * nanoseconds, in <feature run>/fd_stats/<dataset>-<split>-data-<signature[0:16]>.txt. Any write
 * to a file moves its status-change time, which no program can set back (touch -d restores only
 * the modification time), so changed files have another signature and are read and hashed again.
 * Files changed within the last 2 s get no signature: a write within the file system's clock
 * tick could leave the times as they were (git's "racy" case).
 */
#ifndef CM_FEATURES_H
#define CM_FEATURES_H

#include "data/dataset.h"
#include "eval/frechet.h"
#include "io/experiment.h"
#include "nn/classifier.h"

typedef struct FeatureNet {
    Classifier net;
    Config cfg;                  /* the classifier run's configuration (its data set) */
    float *w;
    int C, H, W;
    char path[512];
    char weights[64];            /* "ema/0.999", "online", ... */
    char hash[65];               /* SHA-256 of the weights, hex */
} FeatureNet;

/* Loads a method = classifier checkpoint; weights as model_load takes them (NULL: the first EMA,
 * else online). -1 after cm_fail() naming the file (another method, a damaged file). */
int feature_net_load(FeatureNet *f, const char *path, const char *weights);
void feature_net_free(FeatureNet *f);
/* SHA-256 of weight set w of ps, by the rule above. */
void eval_weights_hash(const ParamSet *ps, const float *w, char hex[65]);

/* Features [n, features] of n images x [n, C, H, W] in [-1, 1] (fitted to the net's size as
 * above; C must match). ctx is scratch. */
void eval_features(const FeatureNet *f, const float *x, int n, int C, int H, int W, Ctx *ctx, float *out);
/* Images i0..i0+n-1 of d as the loader maps them, fitted to H x W: out [n, d->c, H, W]. */
void eval_dataset_images(const Dataset *d, int i0, int n, int H, int W, float *out);

/* Accuracy of the classifier with weights w on every image of d (labels needed), fitted to the
 * classifier's input size. -1 after cm_fail() for an unlabelled data set. */
int eval_accuracy(const Classifier *net, const float *w, const Dataset *d, Ctx *ctx, double *acc);


/* Statistics of every image of a data split through f, from the cache when it holds them (see
 * above); cache_path (may be NULL) receives the cache file's path, read_data (may be NULL) whether
 * the data were read. -1 after cm_fail(). */
int fd_reference_stats(const FeatureNet *f, const char *dataset, const char *data_path, const char *split,
                       Ctx *ctx, FdStats *out, char *cache_path, size_t len, bool *read_data);

#endif
