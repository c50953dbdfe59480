/* fuzz_cifar.c: the CIFAR-10 reader (data/cifar.h): the .tar.gz stream and the batch files.
 *
 * Input: one mode byte, then the data. Mode bit 0 clear: the data is the tarball (gzip or plain
 * tar), read for split "test" or, with bit 1 set, "train". Bit 0 set: the data is the start of
 * cifar-10-batches-bin/test_batch.bin, which is always the official 30730000 bytes long (the
 * rest a hole of zeros, i.e. records of label 0), since any other size is refused before a byte
 * is read. Checked besides "no crash": a loaded dataset is [n, 3, 32, 32] with labels 0..9, and
 * a failed load leaves it zeroed. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/cifar.h"
#include "fuzz.h"

static void load_and_check(const char *path, const char *split)
{
    Dataset d;
    if (cifar_load(&d, path, split) == 0) {
        CM_ASSERT(d.n == (strcmp(split, "test") == 0 ? 1 : 5) * CIFAR_RECORDS_PER_FILE &&
                  d.c == 3 && d.h == 32 && d.w == 32, "cifar: bad shape");
        for (int i = 0; i < d.n; i++) CM_ASSERT(d.labels[i] >= 0 && d.labels[i] <= 9, "cifar: label");
    } else {
        CM_ASSERT(d.pix == NULL && d.labels == NULL && d.n == 0, "cifar: failed load left data");
    }
    dataset_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0];
    data++, size--;
    if (!(mode & 1)) {
        load_and_check(fuzz_write("in.tar.gz", data, size), mode & 2 ? "train" : "test");
        fuzz_remove("in.tar.gz");
        return 0;
    }
    const off_t full = (off_t)CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES;
    CM_ASSERT(mkdir(fuzz_path(CIFAR_DIR_NAME), 0700) == 0, "fuzz: cannot make the batch directory");
    const char *path = fuzz_write(CIFAR_DIR_NAME "/test_batch.bin", data, CM_MIN(size, (size_t)full));
    CM_ASSERT(truncate(path, full) == 0, "fuzz: cannot size %s", path);
    load_and_check(fuzz_path(CIFAR_DIR_NAME), "test");
    fuzz_remove(CIFAR_DIR_NAME);
    return 0;
}
