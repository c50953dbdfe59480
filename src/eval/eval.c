/* eval.c: the Frechet distance in a cmlab classifier's feature space, evaluation records and the
 * classifier's accuracy (eval.h). */
#include "eval.h"

#include <cblas.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"
#include "io/atomic.h"
#include "io/checkpoint.h"
#include "train/model.h"
#include "sample/sample.h"
#include "sample/schedule.h"

/* LAPACK (OpenBLAS ships it): the symmetric eigensolver, divide and conquer. The trailing
 * arguments are the hidden lengths of the character arguments of gfortran's calling convention. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

enum { FEATURE_BATCH = 256, GRID_MAX = 64 };

/* ---- SHA-256 (FIPS 180-4) ---- */

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(Sha256 *s, const uint8_t *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t S1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
        uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t t1 = v[7] + S1 + ch + SHA_K[i] + w[i];
        uint32_t S0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
        uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + S0 + maj;
    }
    for (int i = 0; i < 8; i++) s->h[i] += v[i];
}

void sha256_init(Sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memset(s, 0, sizeof *s);
    memcpy(s->h, h0, sizeof h0);
}

void sha256_update(Sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    s->bytes += n;
    while (n > 0) {
        size_t take = CM_MIN(n, (size_t)(64 - s->used));
        memcpy(s->block + s->used, p, take);
        s->used += (int)take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha256_block(s, s->block);
            s->used = 0;
        }
    }
}

void sha256_final(Sha256 *s, char hex[65])
{
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t padlen = (s->used < 56 ? 56 : 120) - (size_t)s->used;
    for (int i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, padlen + 8);
    for (int i = 0; i < 8; i++) snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

/* ---- the feature network ---- */

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

int feature_net_load(FeatureNet *f, const char *path, const char *weights)
{
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", path);
    if (model_read_config(path, &f->cfg)) return -1;
    const Method *fm = method_find(f->cfg.experiment.method);
    if (!fm || fm->model != MODEL_FEATURE_NET)
        return cm_fail("%s: a method = %s checkpoint; the feature network is a method = classifier run "
                       "(train one with an experiment file like experiments/classifier_fashion_mnist.ini)",
                       path, config_method_name(f->cfg.experiment.method));
    if (model_image_shape(&f->cfg, &f->C, &f->H, &f->W)) return -1;
    if (model_classifier_init(&f->cfg, NULL, f->C, f->H, f->W, &f->net)) return cm_fail("%s: %s", path, cm_errmsg());
    if (model_weights_group(path, weights, f->weights)) return -1;
    f->w = params_buffer(&f->net.ps);
    CkptState s = {.ps = &f->net.ps};
    ckpt_add_weights(&s, f->weights, f->w);
    int rc = ckpt_load(path, &s);
    free(s.loaded_config);
    if (rc) return -1;
    eval_weights_hash(&f->net.ps, f->w, f->hash);
    return 0;
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

/* ---- statistics and the distance ---- */

void fd_stats_compute(const float *feat, long n, int d, FdStats *out)
{
    CM_ASSERT(n >= 2 && d >= 1, "fd_stats_compute: %ld vectors of %d", n, d);
    out->d = d;
    out->n = n;
    out->mu = cm_calloc((size_t)d, sizeof(double));
    out->sigma = cm_calloc((size_t)d * d, sizeof(double));
    for (long i = 0; i < n; i++)
        for (int k = 0; k < d; k++) out->mu[k] += feat[(size_t)i * d + k];
    for (int k = 0; k < d; k++) out->mu[k] /= (double)n;
    /* Centred first, then summed in chunks: X^T X - n mu mu^T would cancel digits. */
    enum { ROWS = 2048 };
    double *xc = cm_malloc((size_t)ROWS * d * sizeof(double));
    for (long i0 = 0; i0 < n; i0 += ROWS) {
        int rows = (int)CM_MIN((long)ROWS, n - i0);
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < d; k++) xc[(size_t)i * d + k] = feat[(size_t)(i0 + i) * d + k] - out->mu[k];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, rows, 1.0, xc, d, 1.0, out->sigma, d);
    }
    free(xc);
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) {
            double v = out->sigma[(size_t)a * d + b] / (double)(n - 1);
            out->sigma[(size_t)a * d + b] = out->sigma[(size_t)b * d + a] = v;
        }
}

void fd_stats_free(FdStats *s)
{
    free(s->mu);
    free(s->sigma);
    memset(s, 0, sizeof *s);
}

/* Eigenvalues (ascending) and, with vectors, eigenvectors of the symmetric a [d, d], in place:
 * on return row i of a (row-major) is eigenvector i (LAPACK's column i of a column-major array). */
static int sym_eigen(int d, double *a, double *eig, bool vectors)
{
    char jobz = vectors ? 'V' : 'N', uplo = 'U';
    int lwork = -1, liwork = -1, info = 0, iw;
    double wq;
    dsyevd_(&jobz, &uplo, &d, a, &d, eig, &wq, &lwork, &iw, &liwork, &info, 1, 1);
    if (info != 0) return cm_fail("LAPACK dsyevd (workspace query) failed: info %d", info);
    lwork = (int)wq;
    liwork = iw;
    double *work = cm_malloc((size_t)lwork * sizeof(double));
    int *iwork = cm_malloc((size_t)liwork * sizeof(int));
    dsyevd_(&jobz, &uplo, &d, a, &d, eig, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0) return cm_fail("LAPACK dsyevd failed on a %dx%d matrix: info %d", d, d, info);
    return 0;
}

int eval_sqrtm_psd(int d, const double *a, double *out)
{
    /* a = V diag(l) V^T, sqrt(a) = V diag(sqrt(l)) V^T. a is symmetric, so its row-major array
     * is also its column-major one. */
    size_t dd = (size_t)d * d;
    double *v = cm_malloc(dd * sizeof(double)), *eig = cm_malloc((size_t)d * sizeof(double));
    double *vs = cm_malloc(dd * sizeof(double));
    memcpy(v, a, dd * sizeof(double));
    int rc = sym_eigen(d, v, eig, true);
    if (rc == 0) {
        /* Row i of v is eigenvector i: sqrt(a) = v^T diag(sqrt l) v. */
        for (int i = 0; i < d; i++) {
            double s = sqrt(fmax(eig[i], 0.0));
            for (int k = 0; k < d; k++) vs[(size_t)i * d + k] = s * v[(size_t)i * d + k];
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, v, d, vs, d, 0.0, out, d);
    }
    free(v);
    free(eig);
    free(vs);
    return rc;
}

int fd_distance(const FdStats *a, const FdStats *b, double *fd)
{
    if (a->d != b->d) return cm_fail("Frechet distance of %d- and %d-dimensional features", a->d, b->d);
    int d = a->d;
    size_t dd = (size_t)d * d;
    double *r = cm_malloc(dd * sizeof(double)), *t = cm_malloc(dd * sizeof(double));
    double *m = cm_malloc(dd * sizeof(double)), *eig = cm_malloc((size_t)d * sizeof(double));
    int rc = eval_sqrtm_psd(d, a->sigma, r);
    if (rc == 0) {
        /* m = r S2 r, symmetric PSD; tr sqrt(m) = sum sqrt(eigenvalues). */
        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, d, 1.0, b->sigma, d, r, d, 0.0, t, d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, r, d, t, d, 0.0, m, d);
        for (int i = 0; i < d; i++)
            for (int k = i + 1; k < d; k++)
                m[(size_t)i * d + k] = m[(size_t)k * d + i] = 0.5 * (m[(size_t)i * d + k] + m[(size_t)k * d + i]);
        rc = sym_eigen(d, m, eig, false);
    }
    if (rc == 0) {
        double dmu = 0, tr = 0, trsq = 0;
        for (int k = 0; k < d; k++) {
            double e = a->mu[k] - b->mu[k];
            dmu += e * e;
            tr += a->sigma[(size_t)k * d + k] + b->sigma[(size_t)k * d + k];
            trsq += sqrt(fmax(eig[k], 0.0));
        }
        *fd = dmu + tr - 2 * trsq;
    }
    free(r);
    free(t);
    free(m);
    free(eig);
    return rc;
}

/* ---- the reference statistics and their cache ---- */

void eval_run_dir(const char *ckpt_path, char *out, size_t len)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", ckpt_path);
    char *slash = strrchr(buf, '/');
    if (!slash) {
        snprintf(out, len, ".");
        return;
    }
    *slash = '\0';
    const char *base = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    if (strcmp(base, "ckpt") == 0) {
        if (base == buf) snprintf(buf, sizeof buf, ".");
        else buf[base - buf - 1] = '\0';
    }
    snprintf(out, len, "%s", buf[0] ? buf : "/");
}

static int write_stats(const char *path, const FdStats *s, const FeatureNet *f, const char *dataset,
                       const char *split, const char *source)
{
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file < 0) return cm_fail("%s: cannot create", tmp);
    hsize_t d1 = (hsize_t)s->d, d2[2] = {(hsize_t)s->d, (hsize_t)s->d};
    herr_t rc = 0;
    hid_t sp = H5Screate_simple(1, &d1, NULL);
    hid_t ds = H5Dcreate2(file, "mu", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    rc |= ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->mu);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    sp = H5Screate_simple(2, d2, NULL);
    ds = H5Dcreate2(file, "sigma", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    rc |= ds < 0 ? -1 : H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->sigma);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    const char *names[] = {"feature_hash", "dataset", "split", "source"};
    const char *values[] = {f->hash, dataset, split, source};
    for (int i = 0; i < 4; i++) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, CM_MAX(strlen(values[i]), 1));
        hid_t as = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(file, names[i], t, as, H5P_DEFAULT, H5P_DEFAULT);
        rc |= a < 0 ? -1 : H5Awrite(a, t, values[i]);
        if (a >= 0) H5Aclose(a);
        H5Sclose(as);
        H5Tclose(t);
    }
    long long n = s->n;
    hid_t as = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(file, "n", H5T_STD_I64LE, as, H5P_DEFAULT, H5P_DEFAULT);
    rc |= a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_LLONG, &n);
    if (a >= 0) H5Aclose(a);
    H5Sclose(as);
    if (H5Fclose(file) < 0) rc = -1;
    if (rc < 0) {
        unlink(tmp);
        return cm_fail("%s: cannot write the statistics cache", path);
    }
    return atomic_publish(tmp, path, NULL);
}

/* 0 and the statistics when path holds those of this feature network, data set and split; -1
 * (silently) otherwise: the caller recomputes and rewrites. */
static int read_stats(const char *path, const FeatureNet *f, const char *dataset, const char *split, FdStats *s)
{
    if (access(path, R_OK) != 0) return -1;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return -1;
    int ok = 1;
    const char *names[] = {"feature_hash", "dataset", "split"};
    const char *want[] = {f->hash, dataset, split};
    for (int i = 0; i < 3 && ok; i++) {
        char buf[128] = "";
        hid_t a = H5Aexists(file, names[i]) > 0 ? H5Aopen(file, names[i], H5P_DEFAULT) : -1;
        hid_t t = a >= 0 ? H5Aget_type(a) : -1;
        ok = t >= 0 && H5Tget_size(t) < sizeof buf && H5Aread(a, t, buf) >= 0 && strcmp(buf, want[i]) == 0;
        if (t >= 0) H5Tclose(t);
        if (a >= 0) H5Aclose(a);
    }
    long long n = 0;
    hid_t a = ok && H5Aexists(file, "n") > 0 ? H5Aopen(file, "n", H5P_DEFAULT) : -1;
    ok = ok && a >= 0 && H5Aread(a, H5T_NATIVE_LLONG, &n) >= 0 && n >= 2;
    if (a >= 0) H5Aclose(a);
    int d = f->net.cfg.features;
    hid_t mu = ok ? H5Dopen2(file, "mu", H5P_DEFAULT) : -1, sg = ok ? H5Dopen2(file, "sigma", H5P_DEFAULT) : -1;
    if (ok && mu >= 0 && sg >= 0) {
        hid_t sp1 = H5Dget_space(mu), sp2 = H5Dget_space(sg);
        ok = H5Sget_simple_extent_npoints(sp1) == d && H5Sget_simple_extent_npoints(sp2) == (hssize_t)d * d;
        H5Sclose(sp1);
        H5Sclose(sp2);
        if (ok) {
            s->d = d;
            s->n = (long)n;
            s->mu = cm_malloc((size_t)d * sizeof(double));
            s->sigma = cm_malloc((size_t)d * d * sizeof(double));
            ok = H5Dread(mu, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->mu) >= 0 &&
                 H5Dread(sg, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->sigma) >= 0;
            if (!ok) fd_stats_free(s);
        }
    } else {
        ok = 0;
    }
    if (mu >= 0) H5Dclose(mu);
    if (sg >= 0) H5Dclose(sg);
    H5Fclose(file);
    return ok ? 0 : -1;
}

/* Features of every image of d, fitted to the network's input, in chunks. */
static float *dataset_features(const FeatureNet *f, const Dataset *d, Ctx *ctx)
{
    int D = f->net.cfg.features;
    float *feat = cm_malloc((size_t)d->n * D * sizeof(float));
    enum { CHUNK = 4096 };
    float *x = cm_malloc((size_t)CHUNK * d->c * f->H * f->W * sizeof(float));
    for (int i0 = 0; i0 < d->n; i0 += CHUNK) {
        int nb = CM_MIN(CHUNK, d->n - i0);
        eval_dataset_images(d, i0, nb, f->H, f->W, x);
        eval_features(f, x, nb, d->c, f->H, f->W, ctx, feat + (size_t)i0 * D);
    }
    free(x);
    return feat;
}

int fd_reference_stats(const FeatureNet *f, const char *dataset, const char *data_path, const char *split,
                       Ctx *ctx, FdStats *out, char *cache_path, size_t len)
{
    char dir[1024], path[1100];
    eval_run_dir(f->path, dir, sizeof dir);
    snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/fd_stats");
    snprintf(path, sizeof path, "%s/%s-%s-%.16s.h5", dir, dataset, split, f->hash);
    if (cache_path) snprintf(cache_path, len, "%s", path);
    H5E_auto2_t func;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = read_stats(path, f, dataset, split, out);
    H5Eset_auto2(H5E_DEFAULT, func, data);
    if (rc == 0) return 0;

    Dataset d;
    if (dataset_load(&d, dataset, data_path && data_path[0] ? data_path : NULL, split) != 0) return -1;
    if (d.c != f->C) {
        dataset_free(&d);
        return cm_fail("%s: %d-channel images for a %d-channel feature network (%s)", d.source, d.c, f->C, f->path);
    }
    double t0 = cm_now();
    float *feat = dataset_features(f, &d, ctx);
    fd_stats_compute(feat, d.n, f->net.cfg.features, out);
    free(feat);
    printf("reference statistics: %d images of %s in %.1f s -> %s\n", d.n, d.source, cm_now() - t0, path);
    rc = cm_mkdir_p(dir) == 0 ? write_stats(path, out, f, dataset, split, d.source) : -1;
    if (rc) fprintf(stderr, "warning: not cached: %s\n", cm_errmsg());
    dataset_free(&d);
    return 0;
}

/* ---- records ---- */

typedef enum { FIELD_TEXT, FIELD_INT, FIELD_LONG, FIELD_DOUBLE } FieldType;

typedef struct RecordField {
    const char *name;
    FieldType type;
    size_t offset, size;
} RecordField;

#define RF(field, type) {#field, type, offsetof(EvalRecord, field), sizeof(((EvalRecord *)0)->field)}
static const RecordField FIELDS[] = {
    RF(metric, FIELD_TEXT), RF(value, FIELD_DOUBLE), RF(checkpoint, FIELD_TEXT), RF(step, FIELD_LONG),
    RF(method, FIELD_TEXT), RF(weights, FIELD_TEXT), RF(feature_net, FIELD_TEXT),
    RF(feature_hash, FIELD_TEXT), RF(feature_weights, FIELD_TEXT), RF(dataset, FIELD_TEXT),
    RF(reference, FIELD_TEXT), RF(reference_n, FIELD_LONG), RF(n, FIELD_INT), RF(seed, FIELD_INT),
    RF(sampler, FIELD_TEXT), RF(schedule, FIELD_TEXT), RF(nfe, FIELD_INT), RF(times, FIELD_TEXT),
    RF(sample_seconds, FIELD_DOUBLE), RF(feature_seconds, FIELD_DOUBLE), RF(grid, FIELD_TEXT),
    RF(date, FIELD_TEXT),
};

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

char *eval_record_json(const EvalRecord *r)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CM_ASSERT(f, "out of memory");
    fputc('{', f);
    for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
        const RecordField *k = &FIELDS[i];
        const char *p = (const char *)r + k->offset;
        fprintf(f, "%s\"%s\": ", i ? ", " : "", k->name);
        switch (k->type) {
        case FIELD_TEXT: json_string(f, p); break;
        case FIELD_INT: fprintf(f, "%d", *(const int *)p); break;
        case FIELD_LONG: fprintf(f, "%ld", *(const long *)p); break;
        case FIELD_DOUBLE: {
            double v = *(const double *)p;
            if (isfinite(v)) fprintf(f, "%.12g", v);
            else fprintf(f, "null");
            break;
        }
        }
    }
    fputc('}', f);
    fclose(f);
    return buf;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = cm_malloc((size_t)(n > 0 ? n : 0) + 1);
    size_t got = fread(s, 1, (size_t)(n > 0 ? n : 0), f);
    s[got] = '\0';
    fclose(f);
    return s;
}

int eval_json_append(const char *path, const EvalRecord *r, int count)
{
    char *old = read_text(path);
    char tmp[1100];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) {
        free(old);
        return -1;
    }
    /* The records already there, as lines between "[" and "]". */
    bool any = false;
    fprintf(f, "[\n");
    for (char *line = old ? strtok(old, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        size_t n = strlen(line);
        while (n && (isspace((unsigned char)line[n - 1]) || line[n - 1] == ',')) line[--n] = '\0';
        if (line[0] != '{') continue;
        fprintf(f, "%s%s", any ? ",\n" : "", line);
        any = true;
    }
    for (int i = 0; i < count; i++) {
        char *js = eval_record_json(&r[i]);
        fprintf(f, "%s%s", any ? ",\n" : "", js);
        any = true;
        free(js);
    }
    fprintf(f, "\n]\n");
    free(old);
    return atomic_commit(f, tmp, path, !ferror(f));
}

/* A JSON string at *p (after its opening quote) into out; advances *p past the closing quote. */
static bool scan_string(const char **p, char *out, size_t n)
{
    size_t k = 0;
    for (const char *s = *p; *s; s++) {
        char ch = *s;
        if (ch == '"') {
            out[CM_MIN(k, n - 1)] = '\0';
            *p = s + 1;
            return true;
        }
        if (ch == '\\') {
            s++;
            if (*s == 'u') {
                char hex[5] = {0};
                for (int d = 0; d < 4; d++)
                    if (!isxdigit((unsigned char)(hex[d] = s[1 + d]))) return false;
                ch = (char)strtol(hex, NULL, 16);
                s += 4;
            } else {
                ch = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
            }
            if (!ch) return false;
        }
        if (k + 1 < n) out[k] = ch;
        k++;
    }
    return false;
}

/* One flat object {"key": value, ...} into r (unknown keys ignored). */
static bool scan_record(const char *s, EvalRecord *r)
{
    memset(r, 0, sizeof *r);
    const char *p = s;
    while (isspace((unsigned char)*p)) p++;
    if (*p++ != '{') return false;
    char key[64], text[EVAL_TEXT];
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        if (*p == '}') return true;
        if (*p++ != '"' || !scan_string(&p, key, sizeof key)) return false;
        while (isspace((unsigned char)*p)) p++;
        if (*p++ != ':') return false;
        while (isspace((unsigned char)*p)) p++;
        bool is_text = *p == '"';
        double num = NAN;
        if (is_text) {
            p++;
            if (!scan_string(&p, text, sizeof text)) return false;
        } else if (!strncmp(p, "null", 4)) {
            p += 4;
        } else {
            char *end;
            num = strtod(p, &end);
            if (end == p) return false;
            p = end;
        }
        for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
            const RecordField *k = &FIELDS[i];
            if (strcmp(k->name, key) != 0 || is_text != (k->type == FIELD_TEXT)) continue;
            char *f = (char *)r + k->offset;
            switch (k->type) {
            case FIELD_TEXT: snprintf(f, k->size, "%s", text); break;
            case FIELD_INT: *(int *)f = (int)num; break;
            case FIELD_LONG: *(long *)f = (long)num; break;
            case FIELD_DOUBLE: *(double *)f = num; break;
            }
        }
        while (isspace((unsigned char)*p)) p++;
        if (*p == ',') p++;
        else if (*p != '}') return false;
    }
}

int eval_json_read(const char *path, EvalRecord **out)
{
    *out = NULL;
    char *text = read_text(path);
    if (!text) return 0;
    int n = 0, cap = 0, lineno = 0;
    EvalRecord *rs = NULL;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        const char *p = line;
        while (isspace((unsigned char)*p)) p++;
        if (*p != '{') {
            if (*p && *p != '[' && *p != ']') {
                free(text);
                free(rs);
                return cm_fail("%s:%d: not a record of eval.json (one JSON object per line)", path, lineno);
            }
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            rs = realloc(rs, (size_t)cap * sizeof *rs);
            CM_ASSERT(rs, "out of memory");
        }
        if (!scan_record(p, &rs[n])) {
            free(text);
            free(rs);
            return cm_fail("%s:%d: malformed record", path, lineno);
        }
        n++;
    }
    free(text);
    *out = rs;
    return n;
}

/* The record as attributes of /eval/<name> in its checkpoint. */
static int record_stamp(const EvalRecord *r)
{
    CkptAttr attrs[CM_ARRAY_LEN(FIELDS) + 1];
    int n = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(FIELDS); i++) {
        const RecordField *k = &FIELDS[i];
        const char *p = (const char *)r + k->offset;
        CkptAttr a = {.name = k->name};
        switch (k->type) {
        case FIELD_TEXT: a.text = p; break;
        case FIELD_INT: a.number = *(const int *)p; a.integer = true; break;
        case FIELD_LONG: a.number = (double)*(const long *)p; a.integer = true; break;
        case FIELD_DOUBLE: a.number = *(const double *)p; break;
        }
        attrs[n++] = a;
    }
    char *js = eval_record_json(r);
    attrs[n++] = (CkptAttr){.name = "json", .text = js};
    char group[256], weights[64];
    snprintf(weights, sizeof weights, "%s", r->weights);
    for (char *c = weights; *c; c++)
        if (*c == '/') *c = '-';
    if (r->nfe > 0)
        snprintf(group, sizeof group, "/eval/%s.%s.nfe%d.n%d.seed%d.%s.%.8s", r->metric, r->sampler, r->nfe, r->n,
                 r->seed, weights, r->feature_hash + 7);
    else
        snprintf(group, sizeof group, "/eval/%s.%s", r->metric, weights);
    int rc = ckpt_stamp(r->checkpoint, group, attrs, n);
    free(js);
    return rc;
}

static void now_utc(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Samples clamped to [-1, 1] and rounded to 8 bits, as saved PNGs would be (and as real images
 * reach the classifier). */
static void quantize(float *x, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float v = x[k] < -1.0f || x[k] != x[k] ? -1.0f : x[k] > 1.0f ? 1.0f : x[k];
        x[k] = (float)(lrintf((v + 1.0f) * 127.5f) / 127.5 - 1.0);
    }
}

static void times_text(const double *t, int n, bool to_zero, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < n && k < len; i++) k += (size_t)snprintf(out + k, len - k, "%s%.6g", i ? "," : "", t[i]);
    if (to_zero && k < len) snprintf(out + k, len - k, ",0");
}

int eval_sampler(const Config *mcfg, const Config *ev, int nfe, ModelKind kind, EvalRecord *r)
{
    r->nfe = nfe;
    SamplePlan p;
    if (sample_plan(&p, kind, mcfg, ev, nfe)) return -1;
    if (p.kind == MODEL_CONSISTENCY) {
        times_text(p.times, p.ntimes, false, r->times, sizeof r->times);
        snprintf(r->sampler, sizeof r->sampler, "consistency");
        snprintf(r->schedule, sizeof r->schedule, "%s", p.ntimes == 1 ? "T" : "T,mid_t");
        return 0;
    }
    SolverOpts o = p.o;
    int steps = solver_resolve_steps(p.solver, &o);
    if (steps < 0) return -1;
    double *grid = cm_malloc((size_t)steps * sizeof(double));
    int rc = schedule_steps(o.schedule, steps, o.sigma_min, o.sigma_max, o.rho, grid);
    if (rc == 0) times_text(grid, steps, o.denoise_to_zero, r->times, sizeof r->times);
    free(grid);
    snprintf(r->sampler, sizeof r->sampler, "%s", solver_kind_name(p.solver));
    snprintf(r->schedule, sizeof r->schedule, "%s", schedule_kind_name(o.schedule));
    return rc;
}

/* Fills the parts of r common to every record of a checkpoint and feature network. */
static void record_begin(EvalRecord *r, const char *metric, const char *path, long step, const Config *mcfg,
                         const char *weights, const FeatureNet *f)
{
    memset(r, 0, sizeof *r);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->checkpoint, sizeof r->checkpoint, "%s", path);
    r->step = step;
    snprintf(r->method, sizeof r->method, "%s", config_method_name(mcfg->experiment.method));
    snprintf(r->weights, sizeof r->weights, "%s", weights);
    snprintf(r->feature_net, sizeof r->feature_net, "%s", f->path);
    snprintf(r->feature_hash, sizeof r->feature_hash, "sha256:%s", f->hash);
    snprintf(r->feature_weights, sizeof r->feature_weights, "%s", f->weights);
    snprintf(r->dataset, sizeof r->dataset, "%s", config_enum_name("data.dataset", mcfg->data.dataset));
    r->value = NAN;
    r->sample_seconds = r->feature_seconds = 0;
    now_utc(r->date, sizeof r->date);
}

long eval_checkpoint_step(const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    long step = -1;
    if (sscanf(base, "step_%ld.h5", &step) != 1) step = -1;
    return step;
}

/* Stores the record: eval.json, then the checkpoint. */
static int record_commit(const EvalRecord *r, const char *run_dir, bool stamp)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/eval.json", run_dir);
    if (eval_json_append(path, r, 1)) return -1;
    if (stamp && record_stamp(r)) return -1;
    return 0;
}

static int eval_classifier(const char *path, const Config *mcfg, const Config *ev, const char *run_dir, bool stamp,
                           EvalRecord *r, Ctx *ctx)
{
    FeatureNet f;
    Dataset test = {0};
    int rc = feature_net_load(&f, path, ev->eval.weights);
    const char *kind = config_enum_name("data.dataset", mcfg->data.dataset);
    if (rc == 0) rc = dataset_load(&test, kind, mcfg->data.path[0] ? mcfg->data.path : NULL, "test");
    double acc = 0, t0 = cm_now();
    if (rc == 0) rc = eval_accuracy(&f.net, f.w, &test, ctx, &acc);
    if (rc == 0) {
        record_begin(r, "test_accuracy", path, eval_checkpoint_step(path), mcfg, f.weights, &f);
        r->value = acc;
        snprintf(r->reference, sizeof r->reference, "test");
        r->reference_n = test.n;
        r->feature_seconds = cm_now() - t0;
        printf("%s: test accuracy %.4f (%d images of %s, %s weights, sha256 %.16s...)\n", path, acc, test.n,
               test.source, f.weights, f.hash);
        rc = record_commit(r, run_dir, stamp);
    }
    dataset_free(&test);
    feature_net_free(&f);
    return rc;
}

int eval_checkpoint(const char *path, const Config *ev, const char *run_dir, bool stamp, EvalRecord *records,
                    int max, int *count)
{
    *count = 0;
    Config mcfg;
    if (model_read_config(path, &mcfg) || cm_mkdir_p(run_dir)) return -1;
    int rc;
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    const Method *method;
    if (method_get(&mcfg, &method) != 0) {
        ctx_free(&ctx);
        return cm_fail("%s: %s", path, cm_errmsg());
    }
    if (method->model == MODEL_FEATURE_NET) {
        EvalRecord r;
        rc = eval_classifier(path, &mcfg, ev, run_dir, stamp, &r, &ctx);
        if (rc == 0 && records && max > 0) records[0] = r;
        if (rc == 0) *count = 1;
        ctx_free(&ctx);
        return rc;
    }
    if (!ev->eval.features[0]) {
        ctx_free(&ctx);
        return cm_fail("no feature network: give --features CLASSIFIER.h5 (a method = classifier checkpoint "
                       "trained on %s) or set eval.features", config_enum_name("data.dataset", mcfg.data.dataset));
    }
    /* The NFEs, checked before anything expensive happens. */
    ModelKind mk = method->model;
    int nfes[CFG_LIST_MAX], nn = ev->eval.nfe.n;
    for (int i = 0; i < nn; i++) nfes[i] = ev->eval.nfe.v[i];
    if (nn == 0) nn = sample_default_nfes(mk, ev, nfes);
    for (int i = 0; i < nn; i++) {
        EvalRecord probe;
        if (eval_sampler(&mcfg, ev, nfes[i], mk, &probe)) {
            ctx_free(&ctx);
            return cm_fail("%s: %s", path, cm_errmsg());
        }
    }
    FeatureNet f;
    FdStats ref = {0};
    Model m = {0};
    Config lcfg;
    char cache[1100];
    rc = feature_net_load(&f, ev->eval.features, NULL);
    if (rc == 0 && f.cfg.data.dataset != mcfg.data.dataset)
        rc = cm_fail("%s was trained on %s, the checkpoint %s on %s: the feature network must know the data set",
                     f.path, config_enum_name("data.dataset", f.cfg.data.dataset), path,
                     config_enum_name("data.dataset", mcfg.data.dataset));
    const char *kind = config_enum_name("data.dataset", mcfg.data.dataset);
    if (rc == 0) rc = fd_reference_stats(&f, kind, mcfg.data.path, "train", &ctx, &ref, cache, sizeof cache);
    if (rc == 0) rc = model_load(&m, &lcfg, path, ev->eval.weights);
    if (rc != 0) {
        model_free(&m);
        fd_stats_free(&ref);
        feature_net_free(&f);
        ctx_free(&ctx);
        return -1;
    }
    int n = ev->eval.n, D = f.net.cfg.features;
    size_t dim = (size_t)m.C * m.H * m.W;
    float *x = cm_malloc((size_t)n * dim * sizeof(float)), *feat = cm_malloc((size_t)n * D * sizeof(float));
    Sampler s = model_sampler(&m, &ctx);
    char samples_dir[1100];
    snprintf(samples_dir, sizeof samples_dir, "%s/samples", run_dir);
    rc = cm_mkdir_p(samples_dir);
    for (int i = 0; i < nn && rc == 0; i++) {
        EvalRecord r;
        record_begin(&r, "fd", path, eval_checkpoint_step(path), &mcfg, m.weights_name, &f);
        snprintf(r.reference, sizeof r.reference, "train");
        r.reference_n = ref.n;
        r.n = n;
        r.seed = ev->eval.seed;
        double t0 = cm_now();
        rc = eval_sampler(&mcfg, ev, nfes[i], mk, &r);
        if (rc != 0) break;
        printf("%s: %d samples, %s, NFE %d ...\n", path, n, r.sampler, nfes[i]);
        fflush(stdout);
        /* The checkpoint's noise range, the evaluation's sampler. */
        SamplePlan p;
        SolverStats st = {0};
        rc = sample_plan(&p, mk, &mcfg, ev, nfes[i]);
        if (rc == 0) rc = sample_draw(&s, &p, n, (uint64_t)ev->eval.seed, x, &st);
        if (rc != 0) break;
        CM_ASSERT(st.nfe == r.nfe, "eval: the sampler made %d calls, not %d", st.nfe, r.nfe);
        r.sample_seconds = cm_now() - t0;
        quantize(x, (size_t)n * dim);
        snprintf(r.grid, sizeof r.grid, "samples/eval_%s_nfe%d_seed%d.png", r.sampler, r.nfe, r.seed);
        char grid_path[1700];
        snprintf(grid_path, sizeof grid_path, "%s/%s", run_dir, r.grid);
        rc = image_write_grid(grid_path, x, CM_MIN(n, GRID_MAX), m.C, m.H, m.W, 8, 2);
        if (rc != 0) break;
        t0 = cm_now();
        eval_features(&f, x, n, m.C, m.H, m.W, &ctx, feat);
        FdStats gen;
        fd_stats_compute(feat, n, D, &gen);
        rc = fd_distance(&gen, &ref, &r.value);
        fd_stats_free(&gen);
        r.feature_seconds = cm_now() - t0;
        if (rc != 0) break;
        printf("  FD %.4f (n %d vs %ld training images; sampling %.1f s, features %.1f s)\n", r.value, n, ref.n,
               r.sample_seconds, r.feature_seconds);
        rc = record_commit(&r, run_dir, stamp);
        if (rc == 0 && records && *count < max) records[*count] = r;
        if (rc == 0) (*count)++;
    }
    free(x);
    free(feat);
    model_free(&m);
    fd_stats_free(&ref);
    feature_net_free(&f);
    ctx_free(&ctx);
    return rc;
}

/* ---- baselines ---- */

int eval_baselines(const FeatureNet *f, int n, int seed, Ctx *ctx)
{
    const char *kind = config_enum_name("data.dataset", f->cfg.data.dataset);
    const char *dpath = f->cfg.data.path;
    FdStats ref = {0};
    if (fd_reference_stats(f, kind, dpath, "train", ctx, &ref, NULL, 0)) return -1;
    Dataset test;
    if (dataset_load(&test, kind, dpath[0] ? dpath : NULL, "test") != 0) {
        fd_stats_free(&ref);
        return -1;
    }
    n = CM_MIN(n, test.n);
    int D = f->net.cfg.features;
    size_t dim = (size_t)test.c * f->H * f->W;
    float *x = cm_malloc((size_t)n * dim * sizeof(float)), *feat = cm_malloc((size_t)n * D * sizeof(float));
    const char *names[3] = {"test split", "uniform noise", "shuffled pixels"};
    const char *metrics[3] = {"fd_test_split", "fd_uniform_noise", "fd_shuffled_pixels"};
    EvalRecord rs[3];
    int rc = 0;
    printf("Frechet distance against the training split (%ld images), n = %d, feature network %s (sha256 %.16s...)\n",
           ref.n, n, f->path, f->hash);
    for (int b = 0; b < 3 && rc == 0; b++) {
        eval_dataset_images(&test, 0, n, f->H, f->W, x);
        Rng r = {(uint64_t)seed, STREAM_EVAL, (uint32_t)b};
        if (b == 1) {
            rng_uniform(&r, x, n, 0, dim);
            for (size_t k = 0; k < (size_t)n * dim; k++) x[k] = 2 * x[k] - 1;
            quantize(x, (size_t)n * dim);
        } else if (b == 2) {
            /* Fisher-Yates per image with the image's own random numbers: the same pixels, no
             * structure. */
            uint32_t *u = cm_malloc(dim * sizeof(uint32_t));
            for (int i = 0; i < n; i++) {
                rng_u32(&r, u, 1, i, dim);
                float *img = x + (size_t)i * dim;
                for (size_t k = dim - 1; k > 0; k--) {
                    size_t j = u[k] % (k + 1);
                    float t = img[k];
                    img[k] = img[j];
                    img[j] = t;
                }
            }
            free(u);
        }
        eval_features(f, x, n, test.c, f->H, f->W, ctx, feat);
        FdStats s;
        fd_stats_compute(feat, n, D, &s);
        EvalRecord *e = &rs[b];
        memset(e, 0, sizeof *e);
        snprintf(e->metric, sizeof e->metric, "%s", metrics[b]);
        rc = fd_distance(&s, &ref, &e->value);
        fd_stats_free(&s);
        snprintf(e->checkpoint, sizeof e->checkpoint, "%s", test.source);
        snprintf(e->method, sizeof e->method, "baseline");
        snprintf(e->feature_net, sizeof e->feature_net, "%s", f->path);
        snprintf(e->feature_hash, sizeof e->feature_hash, "sha256:%s", f->hash);
        snprintf(e->feature_weights, sizeof e->feature_weights, "%s", f->weights);
        snprintf(e->dataset, sizeof e->dataset, "%s", kind);
        snprintf(e->reference, sizeof e->reference, "train");
        e->reference_n = ref.n;
        e->n = n;
        e->seed = seed;
        e->step = -1;
        now_utc(e->date, sizeof e->date);
        if (rc == 0) printf("  %-16s FD %10.4f\n", names[b], e->value);
    }
    char dir[1024], path[1100];
    eval_run_dir(f->path, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/eval.json", dir);
    if (rc == 0) rc = eval_json_append(path, rs, 3);
    free(x);
    free(feat);
    dataset_free(&test);
    fd_stats_free(&ref);
    return rc;
}
