/* eval.h: evaluation. The Frechet distance (FD) of generated samples in the feature space of a
 * classifier that cmlab trains itself (method = classifier; FID's Inception network cannot be
 * downloaded here), the records that make a number reproducible, and the classifier's accuracy.
 *
 * The metric (Heusel et al. 2017, as EDM's fid.py computes FID; reference/amed.md §8):
 *   features: the classifier's penultimate activations (src/nn/classifier.h), widened to float64;
 *   statistics: the mean and the unbiased (n - 1) covariance, accumulated in float64;
 *   FD = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2.
 * tr (S1 S2)^1/2, which fid.py takes from scipy's sqrtm of the non-symmetric S1 S2, equals the
 * trace term above (S1 S2 is similar to the symmetric PSD S1^1/2 S2 S1^1/2), so both square
 * roots come from LAPACK's symmetric eigensolver dsyevd (OpenBLAS ships LAPACK): the square
 * root of S1 by its eigenvectors, the trace term from the eigenvalues alone. Eigenvalues below
 * zero (rounding, or a rank-deficient covariance) are clamped to zero.
 *
 * Images enter the classifier as the loader makes them (bytes v -> v / 127.5 - 1), so generated
 * samples are clamped to [-1, 1] and rounded to 8 bits first, as an FID over saved PNGs would;
 * images of another size than the classifier's are centre-cropped or padded with -1 (undoing
 * data.pad_to).
 *
 * Feature-network identity: SHA-256 over the evaluated weight set, parameters in byte order of
 * their names, each contributing its name, a NUL byte and its float32 values little-endian
 * (README.md shows it recomputed with h5py and hashlib). Reference statistics
 * of a data split are cached per (feature hash, data set, split) in
 * <feature run>/fd_stats/<dataset>-<split>-<hash[0:16]>.h5 (the feature run is the directory
 * above the checkpoint's ckpt/), written atomically and checked against the hash when read.
 *
 * Records: one per (checkpoint, sampler, NFE), a flat JSON object (EvalRecord below), appended to
 * <run>/eval.json (a JSON array, one record per line, rewritten through .tmp + rename) and stamped
 * into a new copy of the checkpoint as attributes of /eval/<record name> (ckpt_stamp: the
 * checkpoint's own tmp + fsync + rename protocol; the file is never modified in place).
 */
#ifndef CM_EVAL_H
#define CM_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "data/dataset.h"
#include "nn/classifier.h"
#include "io/experiment.h"
#include "sample/sample.h"

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct Sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    int used;
} Sha256;
void sha256_init(Sha256 *s);
void sha256_update(Sha256 *s, const void *data, size_t n);
void sha256_final(Sha256 *s, char hex[65]);

/* ---- the feature network ---- */
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

/* ---- statistics and the distance ---- */
typedef struct FdStats {
    int d;                       /* feature width */
    long n;                      /* feature vectors */
    double *mu;                  /* [d] */
    double *sigma;               /* [d, d], unbiased */
} FdStats;

/* Mean and unbiased covariance of feat [n, d] (n >= 2). */
void fd_stats_compute(const float *feat, long n, int d, FdStats *out);
void fd_stats_free(FdStats *s);
/* Statistics of every image of a data split through f, from the cache when it holds them (see
 * above); cache_path (may be NULL) receives the cache file's path. -1 after cm_fail(). */
int fd_reference_stats(const FeatureNet *f, const char *dataset, const char *data_path, const char *split,
                       Ctx *ctx, FdStats *out, char *cache_path, size_t len);
/* The Frechet distance; -1 after cm_fail() when LAPACK fails or the widths differ. */
int fd_distance(const FdStats *a, const FdStats *b, double *fd);
/* out [d, d] = the square root of the symmetric PSD matrix a [d, d] (row-major; a is not
 * changed). Eigenvalues below zero count as zero. -1 after cm_fail() when dsyevd fails. */
int eval_sqrtm_psd(int d, const double *a, double *out);

/* ---- evaluating a checkpoint ---- */

#define EVAL_TEXT 512

/* One evaluation: everything needed to reproduce the number. */
typedef struct EvalRecord {
    char metric[32];             /* "fd" or "test_accuracy" */
    double value;
    char checkpoint[EVAL_TEXT];
    long step;
    char method[16];
    char weights[64];            /* the weight set evaluated */
    char feature_net[EVAL_TEXT];
    char feature_hash[72];       /* "sha256:<hex>" */
    char feature_weights[64];
    char dataset[32];
    char reference[16];          /* the split of the reference statistics, "train" */
    long reference_n;
    int n;                       /* generated samples */
    int seed;                    /* sample i starts from the noise of (seed, STREAM_SAMPLE, sample i) */
    char sampler[32];            /* "heun", ..., or "consistency" */
    char schedule[32];
    int nfe;
    char times[EVAL_TEXT];       /* the sampler's time points, e.g. "80,24.4,...,0.002,0" */
    double sample_seconds, feature_seconds;
    char grid[EVAL_TEXT];        /* the PNG of the first 64 samples, relative to the run directory */
    char date[32];               /* UTC, ISO 8601 */
} EvalRecord;

/* Evaluates the checkpoint at `path` with the [sample] and [eval] settings of ev (the network and
 * its noise range come from the checkpoint's own configuration): for each NFE of ev->eval.nfe
 * (empty: sample.nfe for EDM, 1,2 for consistency models) n samples at fixed seeds, their FD to
 * the training split's statistics, a sample grid under run_dir/samples/, a record appended to
 * run_dir/eval.json and, with stamp, stamped into the checkpoint. A method = classifier
 * checkpoint gets its test accuracy instead. records (may be NULL) receives up to max records;
 * *count their number. -1 after cm_fail(): bad input (no feature network, another data set, an
 * impossible NFE, a damaged file), nothing written for the failed record. */
int eval_checkpoint(const char *path, const Config *ev, const char *run_dir, bool stamp, EvalRecord *records,
                    int max, int *count);

/* The sampler part of a record for one NFE: sampler, schedule, nfe and the time points, for a
 * checkpoint of configuration mcfg whose model samples as `kind`, sampled with ev's [sample].
 * -1 after cm_fail() for an NFE the sampler cannot take. */
int eval_sampler(const Config *mcfg, const Config *ev, int nfe, ModelKind kind, EvalRecord *r);

/* The step in a checkpoint's name (step_XXXXXXXX.h5), or -1. */
long eval_checkpoint_step(const char *path);
/* The run directory of a checkpoint: the directory above <run>/ckpt/, else the file's directory. */
void eval_run_dir(const char *ckpt_path, char *out, size_t len);

/* Baselines of the metric against the training split: the test split, uniform noise and the test
 * images with their pixels shuffled (one permutation per image, from STREAM_EVAL), n images each
 * (at most the test split's size), printed and appended to the feature run's eval.json. */
int eval_baselines(const FeatureNet *f, int n, int seed, Ctx *ctx);

/* ---- eval.json ---- */

/* The record as one line of JSON (no newline), malloc'd. */
char *eval_record_json(const EvalRecord *r);
/* Appends records to the JSON array in path (created if missing) through path.tmp + rename. */
int eval_json_append(const char *path, const EvalRecord *r, int count);
/* The records of an eval.json (flat objects, one per line, as eval_json_append writes them);
 * malloc'd array in *out (free()), count returned, 0 if the file does not exist, -1 after
 * cm_fail() for a malformed file. Only the fields of EvalRecord are read; others are ignored. */
int eval_json_read(const char *path, EvalRecord **out);

#endif
