/* fuzz_edit.c: cmlab edit's PNG inputs (sample/edit.h): the inpainting mask (--mask) and the
 * reference image (--image) of each task.
 *
 * Input: one byte choosing the model's image (bit 0: 1 or 3 channels; bits 1-2: 8, 16, 28 or 32
 * pixels square; bit 3: superres factor 2 or 4), then a PNG. The PNG goes through edit_mask_read
 * and through edit_image_read for inpainting, colourisation and super-resolution. Checked besides
 * "no crash": a read mask marks 1..H W pixels, and a read image lies in [-1, 1]. */
#include <math.h>
#include <stdlib.h>

#include "fuzz.h"
#include "sample/edit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const int sides[4] = {8, 16, 28, 32};
    const int C = data[0] & 1 ? 3 : 1, H = sides[(data[0] >> 1) & 3], W = H;
    const int factor = data[0] & 8 ? 4 : 2;
    const char *path = fuzz_write("in.png", data + 1, size - 1);

    uint8_t *missing = malloc((size_t)H * W);
    int count = edit_mask_read(path, H, W, missing);
    CM_ASSERT(count < 0 || (count >= 1 && count <= H * W), "mask: %d pixels", count);
    free(missing);

    static const EditTask tasks[3] = {EDIT_INPAINT, EDIT_COLORIZE, EDIT_SUPERRES};
    float *y = malloc((size_t)C * H * W * sizeof *y);
    for (int t = 0; t < 3; t++) {
        bool degraded;
        if (edit_image_read(path, tasks[t], factor, C, H, W, y, &degraded) == 0)
            for (int k = 0; k < C * H * W; k++) CM_ASSERT(fabsf(y[k]) <= 1.0f, "image: value %g", y[k]);
    }
    free(y);
    fuzz_remove("in.png");
    return 0;
}
