/* image.h: PNG reading and writing (libpng) and sample grids.
 *
 * Pixels are uint8, rows top to bottom, channels interleaved: [H, W, C] with C = 1 (gray) or
 * 3 (RGB).
 *
 * Invariants:
 *   - writes go to <path>.tmp, which is flushed, fsynced and then renamed over <path>: a failed
 *     or interrupted write never replaces a good file, and no .tmp is left behind on failure;
 *   - reads normalise every PNG to 8-bit gray (C = 1) or 8-bit RGB (C = 3): gray and gray+alpha
 *     give gray; RGB, RGBA and palette give RGB; 16-bit samples are scaled to 8 bits; alpha and
 *     tRNS transparency are dropped, as torchvision's loader (PIL convert) does;
 *   - on failure functions return -1 with a cm_errmsg() naming the path and libpng's reason, and
 *     own nothing.
 */
#ifndef CM_IMAGE_H
#define CM_IMAGE_H

#include <stdint.h>

#include "../common.h"

/* pix: [height, width, channels], channels 1 or 3. 0 ok, -1 with cm_fail message. */
int image_write_png(const char *path, const uint8_t *pix, int width, int height, int channels);

/* *pix: malloc'd [*height, *width, *channels] (free with free()), *channels 1 or 3. */
int image_read_png(const char *path, uint8_t **pix, int *width, int *height, int *channels);

/* One value in [-1, 1] as a byte: clamped (NaN gives -1), then round((v + 1) * 127.5). */
uint8_t image_to_u8(float v);

/* x: [n, c, h, w] float images in [-1, 1], c 1 or 3. Values are clamped to [-1, 1] (NaN gives
 * -1) and mapped to round((x + 1) * 127.5). Tiles them row by row, min(ncols, n) per row, with
 * `pad` black pixels around and between the tiles, like torchvision's make_grid/save_image:
 * width = cols * (w + pad) + pad, height = rows * (h + pad) + pad; unused cells are black. */
int image_write_grid(const char *path, const float *x, int n, int c, int h, int w, int ncols,
                     int pad);

#endif
