/* dataset.c: dataset_load and dataset_free (dataset.h): the table of sources, each a reader of
 * its own file (idx.h, cifar.h, folder.h). */
#include "dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cifar.h"
#include "folder.h"
#include "idx.h"

typedef int (*DatasetReader)(Dataset *d, const char *path, const char *split);

/* MNIST and Fashion-MNIST: the IDX image array [N, H, W] is already [N, 1, H, W] planar, so its
 * buffer is taken over as it is. Both sets have the ten classes 0..9. */
static int dataset_read_idx(Dataset *d, const char *path, const char *split)
{
    IdxArray img, lab;
    if (idx_load_split(path, strcmp(split, "test") == 0 ? "t10k" : "train", &img, &lab))
        return -1;
    d->n = img.dims[0];
    d->c = 1;
    d->h = img.dims[1];
    d->w = img.dims[2];
    d->pix = img.data;
    d->labels = cm_malloc((size_t)d->n * sizeof *d->labels);
    int rc = 0;
    for (int i = 0; i < d->n && rc == 0; i++) {
        if (lab.data[i] > 9)
            rc = cm_fail("%s: %s label %d of sample %d is not a class 0..9; not an MNIST or "
                         "Fashion-MNIST directory", path, split, lab.data[i], i);
        d->labels[i] = lab.data[i];
    }
    idx_free(&lab);
    return rc;
}

static int dataset_read_folder(Dataset *d, const char *path, const char *split)
{
    (void)split;
    return folder_load(d, path);
}

static const struct DatasetKind {
    const char *kind;          /* the value of data.dataset */
    const char *default_path;  /* NULL: data.path must be given */
    const char *expects;       /* what data.path points at, for the message when it is unset */
    DatasetReader read;
} dataset_kinds[] = {
    {"fashion-mnist", DATASET_FASHION_MNIST_DIR, "a directory of Fashion-MNIST IDX files",
     dataset_read_idx},
    {"mnist", NULL, "a directory holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
     "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz", dataset_read_idx},
    {"cifar10", NULL, "the cifar-10-batches-bin directory or cifar-10-binary.tar.gz", cifar_load},
    {"folder", NULL, "a directory of same-sized .png images", dataset_read_folder},
};

static const struct DatasetKind *dataset_kind(const char *kind)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(dataset_kinds); i++)
        if (strcmp(kind, dataset_kinds[i].kind) == 0) return &dataset_kinds[i];
    return NULL;
}

const char *dataset_path(const char *kind, const char *path)
{
    const struct DatasetKind *k = dataset_kind(kind);
    return path ? path : k ? k->default_path : NULL;
}

int dataset_load(Dataset *d, const char *kind, const char *path, const char *split)
{
    memset(d, 0, sizeof *d);
    const struct DatasetKind *k = dataset_kind(kind);
    if (!k)
        return cm_fail("unknown dataset '%s'; data.dataset is one of fashion-mnist, mnist, "
                       "cifar10, folder", kind);
    if (strcmp(split, "train") != 0 && strcmp(split, "test") != 0)
        return cm_fail("unknown split '%s' of dataset %s; use train or test", split, kind);
    path = dataset_path(kind, path);
    if (!path)
        return cm_fail("data.path is not set and the %s dataset has no default location; set "
                       "data.path to %s", kind, k->expects);

    if (k->read(d, path, split)) {
        dataset_free(d);
        return -1;
    }
    CM_ASSERT(d->n >= 1 && (d->c == 1 || d->c == 3) && d->h >= 1 && d->w >= 1,
              "dataset %s %s: reader gave n %d c %d h %d w %d", kind, path, d->n, d->c, d->h,
              d->w);
    if (!d->source[0]) snprintf(d->source, sizeof d->source, "%s %s (%s)", kind, path, split);
    return 0;
}

void dataset_free(Dataset *d)
{
    free(d->pix);
    free(d->labels);
    memset(d, 0, sizeof *d);
}


void dataset_image(const Dataset *d, int row, int H, int W, bool flip, float *out)
{
    const int C = d->c, h = d->h, w = d->w, top = (H - h) / 2, left = (W - w) / 2;
    CM_ASSERT(H >= h && W >= w, "dataset_image: %dx%d images on a %dx%d canvas", w, h, W, H);
    if (H != h || W != w)
        for (size_t i = 0; i < (size_t)C * H * W; i++) out[i] = -1.0f;
    const uint8_t *in = d->pix + (size_t)row * C * h * w;
    for (int ch = 0; ch < C; ch++)
        for (int y = 0; y < h; y++) {
            const uint8_t *src = in + ((size_t)ch * h + y) * w;
            float *dst = out + ((size_t)ch * H + y + top) * W + left;
            if (flip)
                for (int x = 0; x < w; x++) dst[x] = (float)src[w - 1 - x] / 127.5f - 1.0f;
            else
                for (int x = 0; x < w; x++) dst[x] = (float)src[x] / 127.5f - 1.0f;
        }
}
