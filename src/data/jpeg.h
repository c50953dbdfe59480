/* jpeg.h: JPEG compression of images in memory (libjpeg), for blind restoration (cmlab edit
 * --task jpeg, reference/bcm.md §5): the degradation a BCM model is asked to undo.
 *
 * Images are planar [C, H, W] floats in [-1, 1] (C = 1: grayscale JPEG, C = 3: RGB, libjpeg's
 * default 4:2:0 chroma subsampling), mapped to bytes as image_write_grid maps them
 * (image_to_u8), encoded at a quality of 1..100 with libjpeg's standard tables, decoded, and mapped
 * back by v / 127.5 - 1. On failure the functions return -1 after cm_fail() with libjpeg's message;
 * libjpeg's default error handler (which exits) is never used. */
#ifndef CM_JPEG_H
#define CM_JPEG_H

#include <stddef.h>

/* out [C, H, W] = decode(encode(x, quality)); *bytes (may be NULL) gets the compressed size. */
int jpeg_roundtrip(const float *x, int C, int H, int W, int quality, float *out, size_t *bytes);

#endif
