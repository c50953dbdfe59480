/* The reference statistics of a data split and their cache (features.h). */
#include "features.h"

#include <stdlib.h>
#include <string.h>
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

int fd_reference_stats(const FeatureNet *f, const char *dataset, const char *data_path, const char *split,
                       Ctx *ctx, FdStats *out, char *cache_path, size_t len)
{
    /* The data are read every time (seconds at most for CIFAR-10): the cache saves the features. */
    Dataset d;
    if (dataset_load(&d, dataset, data_path && data_path[0] ? data_path : NULL, split) != 0) return -1;
    if (d.c != f->C) {
        dataset_free(&d);
        return cm_fail("%s: %d-channel images for a %d-channel feature network (%s)", d.source, d.c, f->C, f->path);
    }
    char data_hash[65], dir[1024], path[1100];
    dataset_hash(&d, dataset, data_hash);
    rundir_of_checkpoint(f->path, dir, sizeof dir);
    snprintf(dir + strlen(dir), sizeof dir - strlen(dir), "/fd_stats");
    snprintf(path, sizeof path, "%s/%s-%s-%.16s-%.16s.h5", dir, dataset, split, f->hash, data_hash);
    if (cache_path) snprintf(cache_path, len, "%s", path);
    H5E_auto2_t func;
    void *data;
    H5Eget_auto2(H5E_DEFAULT, &func, &data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    int rc = read_stats(path, f, dataset, split, data_hash, out);
    H5Eset_auto2(H5E_DEFAULT, func, data);
    if (rc == 0) {
        dataset_free(&d);
        return 0;
    }

    double t0 = cm_now();
    float *feat = dataset_features(f, &d, ctx);
    fd_stats_compute(feat, d.n, f->net.cfg.features, out);
    free(feat);
    printf("reference statistics: %d images of %s in %.1f s -> %s\n", d.n, d.source, cm_now() - t0, path);
    rc = cm_mkdir_p(dir) == 0 ? write_stats(path, out, f, dataset, split, d.source, data_hash) : -1;
    if (rc) fprintf(stderr, "warning: not cached: %s\n", cm_errmsg());
    dataset_free(&d);
    return 0;
}
