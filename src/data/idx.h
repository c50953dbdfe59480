/* idx.h: reading IDX files, the format of MNIST and Fashion-MNIST, plain or gzip-compressed.
 *
 * Layout (big-endian): two zero bytes, a type byte (only 0x08 = unsigned byte is supported), a
 * byte ndims, ndims int32 dimensions, then the elements in row-major order. Labels files have
 * magic 0x00000801 (ndims 1: [N]), image files 0x00000803 (ndims 3: [N, H, W]).
 *
 * Invariants:
 *   - a loaded IdxArray owns `data` (n bytes, n = product of dims[0..ndim-1], every dim >= 1);
 *     dims past ndim are 0;
 *   - a load reads the whole file: fewer bytes than the dims say, bytes left over after them, a
 *     gzip stream that is cut or fails its checksum are all errors, never a partial array;
 *   - on failure every function returns -1 with a cm_errmsg() that names the path, leaves its
 *     outputs zeroed and owns nothing, so idx_free on them is always safe.
 */
#ifndef CM_IDX_H
#define CM_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "../common.h"

#define IDX_MAX_DIMS 4

typedef struct IdxArray {
    uint8_t *data;             /* [dims[0]] x ... x [dims[ndim-1]], row-major */
    int ndim;
    int dims[IDX_MAX_DIMS];
    size_t n;                  /* number of elements (= bytes) */
} IdxArray;

/* Any unsigned-byte IDX file with 1..4 dims. 0 ok, -1 with cm_fail message. */
int idx_load(const char *path, IdxArray *out);
/* idx_load, and the file must hold images [N, H, W] (ndim 3). */
int idx_load_images(const char *path, IdxArray *out);
/* idx_load, and the file must hold labels [N] (ndim 1). */
int idx_load_labels(const char *path, IdxArray *out);
void idx_free(IdxArray *a);

/* One split of an MNIST-style directory (e.g. /usr/share/datasets/fashion-mnist, split "train" or
 * "t10k"): loads <dir>/<split>-images-idx3-ubyte.gz and <dir>/<split>-labels-idx1-ubyte.gz, each
 * falling back to the name without .gz, and checks that both hold the same number of samples.
 * images: [N, H, W], labels: [N]. Label values are not checked (datasets differ in classes). */
int idx_load_split(const char *dir, const char *split, IdxArray *images, IdxArray *labels);

#endif
