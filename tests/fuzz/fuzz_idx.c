/* fuzz_idx.c: the IDX reader (data/idx.h), plain and gzip-compressed.
 *
 * Input: an IDX file, or a .gz of one (gzread reads both). It is read as written, then gzip-
 * compressed here and read again, so a mutated header or body also reaches the reader through a
 * valid gzip stream. Checked besides "no crash": a loaded array's n is the product of its dims,
 * and a failed load leaves the output zeroed (idx.h's invariants). */
#include <string.h>

#include <zlib.h>

#include "data/idx.h"
#include "fuzz.h"

static void load_and_check(const char *path, int ndim)
{
    IdxArray a;
    int rc = ndim == 3 ? idx_load_images(path, &a) : ndim == 1 ? idx_load_labels(path, &a)
                                                               : idx_load(path, &a);
    if (rc == 0) {
        size_t n = 1;
        for (int i = 0; i < a.ndim; i++) n *= (size_t)a.dims[i];
        CM_ASSERT(a.ndim >= 1 && a.ndim <= IDX_MAX_DIMS && n == a.n && a.data, "%s: bad array", path);
    } else {
        CM_ASSERT(a.data == NULL && a.n == 0 && a.ndim == 0, "%s: failed load left data", path);
    }
    idx_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    load_and_check(fuzz_write("in-idx3-ubyte", data, size), 0);
    fuzz_remove("in-idx3-ubyte");

    gzFile gz = gzopen(fuzz_path("in-idx3-ubyte.gz"), "wb1");
    CM_ASSERT(gz && (size == 0 || gzwrite(gz, data, (unsigned)size) == (int)size) &&
              gzclose(gz) == Z_OK, "fuzz: cannot write the .gz");
    load_and_check(fuzz_path("in-idx3-ubyte.gz"), size > 3 && data[3] == 1 ? 1 : 3);
    fuzz_remove("in-idx3-ubyte.gz");
    return 0;
}
