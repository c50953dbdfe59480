/* The reference statistics of a data split and their cache (features.h). */
#include "features.h"

#include <dirent.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "io/atomic.h"
#include "io/rundir.h"
#include "io/sha256.h"

static int write_stats(const char *path, const FdStats *s, const FeatureNet *f, const char *dataset,
                       const char *split, const char *source, const char *data_hash)
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
    const char *names[] = {"feature_hash", "dataset", "split", "source", "data_hash"};
    const char *values[] = {f->hash, dataset, split, source, data_hash};
    for (int i = 0; i < 5; i++) {
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

/* 0 and the statistics when path holds those of this feature network, data set, split and data
 * (data_hash); -1 (silently) otherwise: the caller recomputes and rewrites. */
static int read_stats(const char *path, const FeatureNet *f, const char *dataset, const char *split,
                      const char *data_hash, FdStats *s)
{
    if (access(path, R_OK) != 0) return -1;
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return -1;
    int ok = 1;
    const char *names[] = {"feature_hash", "dataset", "split", "data_hash"};
    const char *want[] = {f->hash, dataset, split, data_hash};
    for (int i = 0; i < 4 && ok; i++) {
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

/* The identity of the data: SHA-256 over the kind, the source (the path read and the split), the
 * shape, every pixel and every label. Two directories of one kind, or one directory whose files
 * changed, never share statistics. */
static void dataset_hash(const Dataset *d, const char *dataset, char hex[65])
{
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, dataset, strlen(dataset) + 1);
    sha256_update(&h, d->source, strlen(d->source) + 1);
    int shape[4] = {d->n, d->c, d->h, d->w};
    sha256_update(&h, shape, sizeof shape);
    sha256_update(&h, d->pix, (size_t)d->n * d->c * d->h * d->w);
    sha256_update(&h, d->labels, (size_t)d->n * sizeof *d->labels);
    sha256_final(&h, hex);
}

/* ---- the data's signature and its memo (features.h) ----
 * Bump READERS when a reader in data/ gives other pixels or labels for the same files: a memo
 * written before then names the old data hash. */
#define READERS "1"
enum { RACY_NS = 2000000000 };   /* files changed this recently get no signature */

static int64_t ns_of(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static void sign_file(Sha256 *h, const char *name, const struct stat *st, int64_t *newest)
{
    int64_t v[6] = {(int64_t)st->st_size, (int64_t)st->st_ino, (int64_t)st->st_dev, ns_of(st->st_mtim),
                    ns_of(st->st_ctim), (int64_t)st->st_mode};
    sha256_update(h, name, strlen(name) + 1);
    sha256_update(h, v, sizeof v);
    *newest = CM_MAX(*newest, CM_MAX(v[3], v[4]));
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

/* 0 and the signature of what dataset_load(dataset, data_path, split) reads; -1 when there is
 * none: the path cannot be read, or a file changed less than RACY_NS ago (a write within the
 * file system's clock tick could leave its times as they were: git's "racy" case). */
static int data_signature(const char *dataset, const char *data_path, const char *split, char hex[65])
{
    const char *path = dataset_path(dataset, data_path);
    char real[PATH_MAX];
    struct stat st;
    if (!path || !realpath(path, real) || stat(real, &st) != 0) return -1;
    Sha256 h;
    sha256_init(&h);
    const char *head[] = {"cmlab data signature", READERS, dataset, split, real};
    for (size_t i = 0; i < CM_ARRAY_LEN(head); i++) sha256_update(&h, head[i], strlen(head[i]) + 1);
    int64_t newest = 0;
    sign_file(&h, ".", &st, &newest);
    if (S_ISDIR(st.st_mode)) {   /* every regular file in it: the readers take theirs from there */
        struct dirent **e;
        int n = scandir(real, &e, NULL, by_name);
        if (n < 0) return -1;
        for (int i = 0; i < n; i++) {
            struct stat fs;
            char p[PATH_MAX + 256];
            snprintf(p, sizeof p, "%s/%s", real, e[i]->d_name);
            if (stat(p, &fs) == 0 && S_ISREG(fs.st_mode)) sign_file(&h, e[i]->d_name, &fs, &newest);
            free(e[i]);
        }
        free(e);
    }
    sha256_final(&h, hex);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return ns_of(now) - newest >= RACY_NS ? 0 : -1;
}

/* The memo <dir>/<dataset>-<split>-data-<sig[0:16]>.txt: "<signature>\n<data hash>\n". */
static void memo_path(char *out, size_t len, const char *dir, const char *dataset, const char *split, const char *sig)
{
    snprintf(out, len, "%s/%s-%s-data-%.16s.txt", dir, dataset, split, sig);
}

static int memo_read(const char *path, const char *sig, char hash[65])
{
    char buf[160] = "";
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (n != 130 || memcmp(buf, sig, 64) != 0 || buf[64] != '\n' || buf[129] != '\n') return -1;
    for (int i = 65; i < 129; i++)
        if (!strchr("0123456789abcdef", buf[i])) return -1;
    memcpy(hash, buf + 65, 64);
    hash[64] = '\0';
    return 0;
}

static void cache_path_of(char *out, size_t len, const char *dir, const char *dataset, const char *split,
                          const FeatureNet *f, const char *data_hash)
{
    snprintf(out, len, "%s/%s-%s-%.16s-%.16s.h5", dir, dataset, split, f->hash, data_hash);
}

/* read_stats with HDF5's error printing off (a missing or stale cache is not an error). */
static int read_stats_quiet(const char *path, const FeatureNet *f, const char *dataset, const char *split,
                            const char *data_hash, FdStats *s)
{
    H5E_auto2_t func;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = read_stats(path, f, dataset, split, data_hash, s);
    H5Eset_auto2(H5E_DEFAULT, func, data);
    return rc;
}

int fd_reference_stats(const FeatureNet *f, const char *dataset, const char *data_path, const char *split,
                       Ctx *ctx, FdStats *out, char *cache_path, size_t len, bool *read_data)
{
    if (data_path && !data_path[0]) data_path = NULL;
    char data_hash[65], dir[1024], path[1100], sig[65], memo[1100];
    rundir_of_checkpoint(f->path, dir, sizeof dir);
    snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/fd_stats");
    if (read_data) *read_data = false;
    /* Files unchanged since their hash was memoised: the cache by that hash, the data unread. */
    char memo_hash[65] = "";
    const bool signed_ = data_signature(dataset, data_path, split, sig) == 0;
    if (signed_) memo_path(memo, sizeof memo, dir, dataset, split, sig);
    if (signed_ && memo_read(memo, sig, memo_hash) == 0) {
        snprintf(data_hash, sizeof data_hash, "%s", memo_hash);
        cache_path_of(path, sizeof path, dir, dataset, split, f, data_hash);
        if (read_stats_quiet(path, f, dataset, split, data_hash, out) == 0) {
            if (cache_path) snprintf(cache_path, len, "%s", path);
            return 0;
        }
    }

    /* Else the data are read and hashed (seconds at most for CIFAR-10): the cache saves the features. */
    Dataset d;
    if (read_data) *read_data = true;
    if (dataset_load(&d, dataset, data_path, split) != 0) return -1;
    if (d.c != f->C) {
        dataset_free(&d);
        return cm_fail("%s: %d-channel images for a %d-channel feature network (%s)", d.source, d.c, f->C, f->path);
    }
    dataset_hash(&d, dataset, data_hash);
    cache_path_of(path, sizeof path, dir, dataset, split, f, data_hash);
    if (cache_path) snprintf(cache_path, len, "%s", path);
    int rc = read_stats_quiet(path, f, dataset, split, data_hash, out);
    if (rc != 0) {
        double t0 = cm_now();
        float *feat = dataset_features(f, &d, ctx);
        fd_stats_compute(feat, d.n, f->net.cfg.features, out);
        free(feat);
        printf("reference statistics: %d images of %s in %.1f s -> %s\n", d.n, d.source, cm_now() - t0, path);
        if (cm_mkdir_p(dir) != 0 || write_stats(path, out, f, dataset, split, d.source, data_hash) != 0)
            fprintf(stderr, "warning: not cached: %s\n", cm_errmsg());
    }
    if (signed_ && strcmp(memo_hash, data_hash) != 0 && access(path, R_OK) == 0) {   /* beside a cache it leads to */
        char line[160];
        snprintf(line, sizeof line, "%s\n%s\n", sig, data_hash);
        if (atomic_write(memo, line, strlen(line)) != 0) fprintf(stderr, "warning: not memoised: %s\n", cm_errmsg());
    }
    dataset_free(&d);
    return 0;
}
