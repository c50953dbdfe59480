/* dataset.h: one in-memory image dataset for every source cmlab reads (data.dataset in an
 * experiment file): MNIST and Fashion-MNIST (IDX files, idx.h), CIFAR-10 (cifar.h) and a folder
 * of PNG images (folder.h).
 *
 * Invariants of a loaded Dataset:
 *   - pix holds n images of c x h x w bytes, planar: pixel (i, ch, y, x) is
 *     pix[((i * c + ch) * h + y) * w + x]; c is 1 (gray) or 3 (RGB); n, h, w >= 1;
 *   - labels[i] is the class of image i (0..9 for the three labelled sets), -1 when the source
 *     has no labels (folders);
 *   - source names the kind, the path read and the split, for logs and error messages;
 *   - the Dataset owns pix and labels; on failure every reader returns -1 with a cm_errmsg()
 *     naming the path, and leaves the Dataset zeroed, so dataset_free is always safe.
 */
#ifndef CM_DATASET_H
#define CM_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "../common.h"

/* Where Debian's dataset-fashion-mnist package installs the four .gz files. */
#define DATASET_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct Dataset {
    uint8_t *pix;              /* [n, c, h, w] planar, CHW per image */
    int16_t *labels;           /* [n] */
    int n, c, h, w;
    char source[512];
} Dataset;

/* kind: "fashion-mnist", "mnist", "cifar10" or "folder" (the values of data.dataset).
 * path: a directory or file (data.path); NULL takes the default, which only fashion-mnist has
 *       (DATASET_FASHION_MNIST_DIR).
 * split: "train" or "test". MNIST-style directories read <split>-images-idx3-ubyte(.gz), with
 *       "test" meaning the t10k files; CIFAR-10 reads data_batch_1..5.bin or test_batch.bin;
 *       a folder has no splits and gives all its images for either.
 * 0 ok, -1 with a cm_fail message. */
int dataset_load(Dataset *d, const char *kind, const char *path, const char *split);
/* The path dataset_load(kind, path, ...) reads: path, or the kind's default when path is NULL;
 * NULL when there is neither (or kind is unknown). */
const char *dataset_path(const char *kind, const char *path);
void dataset_free(Dataset *d);

/* Image `row` of d as the loader hands it to a network (loader.h): each byte v becomes
 * v / 127.5 - 1, the image (mirrored first when flip) sits at ((H - h) / 2, (W - w) / 2) of an
 * H x W canvas of -1 (H >= h, W >= w). out: [c, H, W]. */
void dataset_image(const Dataset *d, int row, int H, int W, bool flip, float *out);

#endif
