/* cifar.h: CIFAR-10 in its official binary distribution
 * (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 binary version").
 *
 * Layout: cifar-10-binary.tar.gz holds the directory cifar-10-batches-bin with data_batch_1.bin
 * .. data_batch_5.bin (the 50000 training images, in that order) and test_batch.bin (10000 test
 * images), plus batches.meta.txt and readme.html. Each batch file is exactly 10000 records of
 * 3073 bytes: one label byte (0..9), then the 32x32 red plane, the green plane and the blue
 * plane, each row-major. That is already the planar layout of a Dataset, so a record copies
 * straight in.
 *
 * Invariants:
 *   - the reader is strict: a file that is not 10000 whole records, a label above 9, a tar member
 *     of the wrong size, a missing member, a tar header that fails its checksum, a gzip stream
 *     that is cut or fails its CRC are all errors, never a partial dataset;
 *   - the .tar.gz is streamed through zlib and its tar headers are parsed here: nothing is
 *     extracted to disk.
 */
#ifndef CM_CIFAR_H
#define CM_CIFAR_H

#include "dataset.h"

#define CIFAR_SIDE 32
#define CIFAR_CHANNELS 3
#define CIFAR_RECORD_BYTES (1 + CIFAR_CHANNELS * CIFAR_SIDE * CIFAR_SIDE)   /* 3073 */
#define CIFAR_RECORDS_PER_FILE 10000
#define CIFAR_DIR_NAME "cifar-10-batches-bin"
#define CIFAR_TAR_NAME "cifar-10-binary.tar.gz"

/* path is one of
 *   - the cifar-10-batches-bin directory,
 *   - a directory that holds cifar-10-batches-bin/ or, failing that, cifar-10-binary.tar.gz,
 *   - the tarball itself (any name; gzip-compressed or a plain tar).
 * split "train" (50000 images) or "test" (10000). d: [n, 3, 32, 32], labels 0..9.
 * 0 ok, -1 with a cm_fail message naming the file and what was wrong. */
int cifar_load(Dataset *d, const char *path, const char *split);

#endif
