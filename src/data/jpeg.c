#include "jpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jpeglib.h>

#include "common.h"
#include "data/image.h"

/* libjpeg reports an error through error_exit, which must not return: jump back to the caller. */
typedef struct JpegError {
    struct jpeg_error_mgr mgr;
    jmp_buf back;
} JpegError;

static void jpeg_error_exit(j_common_ptr c)
{
    JpegError *e = (JpegError *)c->err;
    char msg[JMSG_LENGTH_MAX];
    e->mgr.format_message(c, msg);
    cm_fail("libjpeg: %s", msg);
    longjmp(e->back, 1);
}

/* Encodes pix [H, W, C] bytes into *buf (malloc'd by libjpeg, *len bytes). */
static int encode(const unsigned char *pix, int C, int H, int W, int quality, unsigned char **buf,
                  unsigned long *len)
{
    struct jpeg_compress_struct c;
    JpegError e;
    c.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_error_exit;
    if (setjmp(e.back)) {
        jpeg_destroy_compress(&c);
        return -1;
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, buf, len);
    c.image_width = (JDIMENSION)W;
    c.image_height = (JDIMENSION)H;
    c.input_components = C;
    c.in_color_space = C == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pix + (size_t)c.next_scanline * W * C);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return 0;
}

/* Decodes buf into pix [H, W, C] bytes (the encoder's size and colour space). */
static int decode(const unsigned char *buf, unsigned long len, int C, int H, int W, unsigned char *pix)
{
    struct jpeg_decompress_struct d;
    JpegError e;
    d.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_error_exit;
    if (setjmp(e.back)) {
        jpeg_destroy_decompress(&d);
        return -1;
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, buf, len);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = C == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&d);
    CM_ASSERT((int)d.output_width == W && (int)d.output_height == H && d.output_components == C,
              "jpeg: decoded %ux%ux%d, encoded %dx%dx%d", d.output_width, d.output_height, d.output_components, W, H,
              C);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = pix + (size_t)d.output_scanline * W * C;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    return 0;
}

int jpeg_roundtrip(const float *x, int C, int H, int W, int quality, float *out, size_t *bytes)
{
    if (quality < 1 || quality > 100) return cm_fail("JPEG quality %d: 1 to 100", quality);
    if (C != 1 && C != 3) return cm_fail("JPEG: %d channels (1 or 3)", C);
    size_t plane = (size_t)H * W;
    unsigned char *pix = cm_malloc(plane * C);
    for (int ch = 0; ch < C; ch++)    /* planar floats to interleaved bytes */
        for (size_t k = 0; k < plane; k++) pix[k * C + ch] = image_to_u8(x[ch * plane + k]);
    unsigned char *buf = NULL;
    unsigned long len = 0;
    int rc = encode(pix, C, H, W, quality, &buf, &len);
    if (rc == 0) rc = decode(buf, len, C, H, W, pix);
    if (rc == 0)
        for (int ch = 0; ch < C; ch++)
            for (size_t k = 0; k < plane; k++) out[ch * plane + k] = pix[k * C + ch] / 127.5f - 1.0f;
    if (rc == 0 && bytes) *bytes = len;
    free(buf);
    free(pix);
    return rc;
}
