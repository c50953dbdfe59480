#include "image.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <png.h>

#include "io/atomic.h"

/* Larger images are refused as corrupt or hostile input: a 16384^2 RGB image is 768 MiB. */
#define IMAGE_MAX_BYTES ((size_t)1 << 30)

/* libpng reports errors by calling an error function that must not return. Ours keeps the message
 * for cm_fail and longjmps back to the setjmp in the *_body function below. All state that those
 * functions change after setjmp lives in a struct owned by the caller, not in locals of the
 * function that called setjmp, so it is still valid after the longjmp (C11 7.13.2.1). */
typedef struct PngErr {
    char msg[256];
} PngErr;

static void image_png_error(png_structp png, png_const_charp msg)
{
    PngErr *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (an odd ICC profile, an unknown chunk) do not change the pixels; printing them from a
 * library would only clutter the training log. */
static void image_png_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* ---- writing ---- */

typedef struct PngWrite {
    FILE *fp;
    png_structp png;
    png_infop info;
    png_bytep *rows;           /* [height], pointing into the caller's pixels */
    PngErr err;
} PngWrite;

static int image_write_body(PngWrite *s, int width, int height, int channels)
{
    if (setjmp(png_jmpbuf(s->png))) return -1;
    png_init_io(s->png, s->fp);
    png_set_IHDR(s->png, s->info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(s->png, s->info);
    png_write_image(s->png, s->rows);
    png_write_end(s->png, NULL);
    return 0;
}

int image_write_png(const char *path, const uint8_t *pix, int width, int height, int channels)
{
    CM_ASSERT(channels == 1 || channels == 3, "image_write_png %s: channels %d, expected 1 or 3",
              path, channels);
    CM_ASSERT(width > 0 && height > 0, "image_write_png %s: size %dx%d", path, width, height);

    size_t plen = strlen(path);
    char *tmp = cm_malloc(plen + 5);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);

    PngWrite s = {0};
    s.fp = fopen(tmp, "wb");
    if (!s.fp) {
        int rc = cm_fail("%s: cannot create %s: %s; check that the directory exists and is "
                         "writable", path, tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    /* libpng reads the rows but the API is not const; with no write transforms set it never
     * modifies them. */
    s.rows = cm_malloc((size_t)height * sizeof *s.rows);
    for (int y = 0; y < height; y++)
        s.rows[y] = (png_bytep)(pix + (size_t)y * (size_t)width * (size_t)channels);

    int rc = 0;
    s.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &s.err, image_png_error,
                                    image_png_warning);
    s.info = s.png ? png_create_info_struct(s.png) : NULL;
    if (!s.png || !s.info)
        rc = cm_fail("%s: libpng could not start a write (out of memory)", path);
    else if (image_write_body(&s, width, height, channels))
        rc = cm_fail("%s: writing the PNG failed (libpng: %s)", path, s.err.msg);
    png_destroy_write_struct(&s.png, &s.info);
    free(s.rows);

    if (rc == 0 && fflush(s.fp) != 0) rc = cm_fail("%s: writing %s failed: %s", path, tmp, strerror(errno));
    if (fclose(s.fp) != 0 && rc == 0)
        rc = cm_fail("%s: closing %s failed: %s", path, tmp, strerror(errno));
    if (rc == 0) rc = atomic_publish(tmp, path, NULL);   /* fsync, rename, directory fsync */
    else remove(tmp);
    free(tmp);
    return rc;
}

/* ---- reading ---- */

typedef struct PngRead {
    FILE *fp;
    png_structp png;
    png_infop info;
    uint8_t *pix;              /* [height, width, channels] */
    png_bytep *rows;           /* [height] */
    int width, height, channels;
    PngErr err;
} PngRead;

static int image_read_body(PngRead *s)
{
    png_structp png = s->png;
    png_infop info = s->info;
    if (setjmp(png_jmpbuf(png))) return -1;
    png_init_io(png, s->fp);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);

    png_uint_32 w, h;
    int depth, color;
    png_get_IHDR(png, info, &w, &h, &depth, &color, NULL, NULL, NULL);
    /* Normalise to 8-bit gray or RGB. scale_16 rounds (v * 255 / 65535); strip_16 would just
     * take the high byte. palette_to_rgb also turns a tRNS chunk into alpha, which strip_alpha
     * then drops together with real alpha channels. */
    if (depth == 16) png_set_scale_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);

    int channels = png_get_channels(png, info);
    if ((channels != 1 && channels != 3) || png_get_bit_depth(png, info) != 8)
        png_error(png, "unsupported pixel layout after conversion to 8-bit gray or RGB");
    size_t row = (size_t)w * (size_t)channels;
    if ((size_t)h * row > IMAGE_MAX_BYTES)
        png_error(png, "image larger than the 1 GiB cmlab reads");
    if (png_get_rowbytes(png, info) != row)
        png_error(png, "unexpected row size after conversion");

    s->pix = cm_malloc((size_t)h * row);
    s->rows = cm_malloc((size_t)h * sizeof *s->rows);
    for (png_uint_32 y = 0; y < h; y++) s->rows[y] = s->pix + (size_t)y * row;
    png_read_image(png, s->rows);
    png_read_end(png, NULL);
    s->width = (int)w;
    s->height = (int)h;
    s->channels = channels;
    return 0;
}

int image_read_png(const char *path, uint8_t **pix, int *width, int *height, int *channels)
{
    *pix = NULL;
    *width = *height = *channels = 0;
    PngRead s = {0};
    s.fp = fopen(path, "rb");
    if (!s.fp) return cm_fail("%s: cannot open: %s; check the path", path, strerror(errno));

    uint8_t sig[8];
    size_t got = fread(sig, 1, sizeof sig, s.fp);
    if (got < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        fclose(s.fp);
        return cm_fail("%s: not a PNG file (%s)", path,
                       got < sizeof sig ? "shorter than the 8-byte signature"
                                        : "the PNG signature is missing");
    }

    int rc = 0;
    s.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s.err, image_png_error,
                                   image_png_warning);
    s.info = s.png ? png_create_info_struct(s.png) : NULL;
    if (!s.png || !s.info)
        rc = cm_fail("%s: libpng could not start a read (out of memory)", path);
    else if (image_read_body(&s))
        rc = cm_fail("%s: cannot read the PNG (libpng: %s); the file is damaged or truncated",
                     path, s.err.msg);
    png_destroy_read_struct(&s.png, &s.info, NULL);
    fclose(s.fp);
    free(s.rows);
    if (rc) {
        free(s.pix);
        return rc;
    }
    *pix = s.pix;
    *width = s.width;
    *height = s.height;
    *channels = s.channels;
    return 0;
}

/* ---- grids ---- */

uint8_t image_to_u8(float v)
{
    /* fmaxf returns the non-NaN operand, so NaN lands on -1 (black). */
    v = fminf(fmaxf(v, -1.0f), 1.0f);
    return (uint8_t)roundf((v + 1.0f) * 127.5f);
}

int image_write_grid(const char *path, const float *x, int n, int c, int h, int w, int ncols,
                     int pad)
{
    CM_ASSERT(n >= 1 && (c == 1 || c == 3) && h >= 1 && w >= 1 && ncols >= 1 && pad >= 0,
              "image_write_grid %s: n %d c %d h %d w %d ncols %d pad %d", path, n, c, h, w,
              ncols, pad);
    int cols = CM_MIN(ncols, n);
    int rows = (n + cols - 1) / cols;
    long long gw = (long long)cols * (w + pad) + pad;
    long long gh = (long long)rows * (h + pad) + pad;
    CM_ASSERT(gw * gh * c <= (long long)IMAGE_MAX_BYTES, "image_write_grid %s: grid %lldx%lld "
              "too large", path, gw, gh);

    size_t W = (size_t)gw, C = (size_t)c;
    uint8_t *canvas = cm_calloc((size_t)gh * W * C, 1);   /* zeros: black border and empty cells */
    for (int i = 0; i < n; i++) {
        size_t y0 = (size_t)pad + (size_t)(i / cols) * (size_t)(h + pad);
        size_t x0 = (size_t)pad + (size_t)(i % cols) * (size_t)(w + pad);
        for (int ch = 0; ch < c; ch++) {
            const float *src = x + ((size_t)i * C + (size_t)ch) * (size_t)h * (size_t)w;
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++)
                    canvas[((y0 + (size_t)y) * W + x0 + (size_t)xx) * C + (size_t)ch] =
                        image_to_u8(src[(size_t)y * (size_t)w + (size_t)xx]);
        }
    }
    int rc = image_write_png(path, canvas, (int)gw, (int)gh, c);
    free(canvas);
    return rc;
}
