/* fuzz_folder.c: the PNG folder reader (data/folder.h), through image_read_png (data/image.h).
 *
 * Input: one PNG. It is written as the only image of a fresh directory, and folder_load reads the
 * directory. Checked besides "no crash": a loaded dataset has the shape dataset.h promises, and a
 * failed load leaves it zeroed. */
#include <string.h>
#include <sys/stat.h>

#include "data/folder.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    CM_ASSERT(mkdir(fuzz_path("images"), 0700) == 0, "fuzz: cannot make %s", fuzz_path("images"));
    fuzz_write("images/a.png", data, size);
    Dataset d;
    if (folder_load(&d, fuzz_path("images")) == 0) {
        CM_ASSERT(d.n == 1 && (d.c == 1 || d.c == 3) && d.h >= 1 && d.w >= 1 && d.pix &&
                  d.labels && d.labels[0] == -1, "folder: bad dataset");
    } else {
        CM_ASSERT(d.pix == NULL && d.labels == NULL && d.n == 0, "folder: failed load left data");
    }
    dataset_free(&d);
    fuzz_remove("images");
    return 0;
}
