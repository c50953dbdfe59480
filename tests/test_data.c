/* test_data: the IDX reader (files written here in the official layout, plain and gzip, and the
 * real Fashion-MNIST from the Debian package), PNG reading and writing, and sample grids.
 * Every error case must return -1 with a message naming the path; the messages are printed. */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <png.h>
#include <zlib.h>

#include "data/idx.h"
#include "data/image.h"
#include "fixture.h"

#ifndef FASHION_DIR
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#endif

static char tmpdir[64];

/* <tmpdir>/<name> in one of a few rotating buffers, so several can be alive in one call. */
static const char *tpath(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, name);
    return b;
}

static void write_file(const char *path, int gz, const uint8_t *buf, size_t len)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        CM_ASSERT(f, "cannot create %s", path);
        CM_ASSERT(len == 0 || gzwrite(f, buf, (unsigned)len) == (int)len, "gzwrite %s", path);
        CM_ASSERT(gzclose(f) == Z_OK, "gzclose %s", path);
    } else {
        FILE *f = fopen(path, "wb");
        CM_ASSERT(f, "cannot create %s", path);
        CM_ASSERT(fwrite(buf, 1, len, f) == len, "fwrite %s", path);
        CM_ASSERT(fclose(f) == 0, "fclose %s", path);
    }
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    CM_ASSERT(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = cm_malloc(*len);
    CM_ASSERT(fread(buf, 1, *len, f) == *len, "fread %s", path);
    fclose(f);
    return buf;
}

/* An IDX file in memory: 00 00 <type> <ndim>, big-endian int32 dims, then the data. */
static uint8_t *make_idx(size_t *len, int type, int ndim, const uint32_t *dims,
                         const uint8_t *data, size_t ndata)
{
    *len = 4 + 4 * (size_t)ndim + ndata;
    uint8_t *b = cm_malloc(*len);
    b[0] = 0;
    b[1] = 0;
    b[2] = (uint8_t)type;
    b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++) {
        b[4 + 4 * i] = (uint8_t)(dims[i] >> 24);
        b[5 + 4 * i] = (uint8_t)(dims[i] >> 16);
        b[6 + 4 * i] = (uint8_t)(dims[i] >> 8);
        b[7 + 4 * i] = (uint8_t)dims[i];
    }
    if (ndata) memcpy(b + 4 + 4 * (size_t)ndim, data, ndata);
    return b;
}

static void write_idx(const char *path, int gz, int type, int ndim, const uint32_t *dims,
                      const uint8_t *data, size_t ndata)
{
    size_t len;
    uint8_t *b = make_idx(&len, type, ndim, dims, data, ndata);
    write_file(path, gz, b, len);
    free(b);
}

/* Deterministic bytes that deflate does not shrink to nothing, so a .gz has a real body. */
static void fill_bytes(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
}

/* rc must be -1, the message must name `path` and contain `keyword`, and `a` must be empty. */
static void expect_fail(int rc, const IdxArray *a, const char *path, const char *keyword,
                        const char *what)
{
    const char *msg = cm_errmsg();
    printf("  %-28s -> %s\n", what, msg);
    CHECK(rc == -1, "%s: expected -1, got %d", what, rc);
    CHECK(strstr(msg, path) != NULL, "%s: message does not name %s: %s", what, path, msg);
    CHECK(strstr(msg, keyword) != NULL, "%s: message lacks \"%s\": %s", what, keyword, msg);
    if (a) CHECK(a->data == NULL && a->n == 0 && a->ndim == 0, "%s: output not zeroed", what);
}

static void test_idx_roundtrip(void)
{
    enum { N = 5, H = 3, W = 4 };
    uint8_t img[N * H * W], lab[N] = {9, 0, 3, 7, 1};
    fill_bytes(img, sizeof img, 1);
    const uint32_t idims[3] = {N, H, W}, ldims[1] = {N};

    for (int gz = 0; gz < 2; gz++) {
        const char *ip = tpath(gz ? "rt-images-idx3-ubyte.gz" : "rt-images-idx3-ubyte");
        const char *lp = tpath(gz ? "rt-labels-idx1-ubyte.gz" : "rt-labels-idx1-ubyte");
        write_idx(ip, gz, 0x08, 3, idims, img, sizeof img);
        write_idx(lp, gz, 0x08, 1, ldims, lab, sizeof lab);

        IdxArray a, b;
        CHECK(idx_load_images(ip, &a) == 0, "load %s: %s", ip, cm_errmsg());
        CHECK(a.ndim == 3 && a.dims[0] == N && a.dims[1] == H && a.dims[2] == W &&
              a.dims[3] == 0 && a.n == sizeof img,
              "%s: shape ndim %d dims %d %d %d %d n %zu", ip, a.ndim, a.dims[0], a.dims[1],
              a.dims[2], a.dims[3], a.n);
        CHECK(a.data && memcmp(a.data, img, sizeof img) == 0, "%s: pixels differ", ip);
        idx_free(&a);
        CHECK(a.data == NULL && a.n == 0, "idx_free leaves the array zeroed");
        idx_free(&a);

        CHECK(idx_load_labels(lp, &b) == 0, "load %s: %s", lp, cm_errmsg());
        CHECK(b.ndim == 1 && b.dims[0] == N && b.n == N, "%s: ndim %d dims %d n %zu", lp,
              b.ndim, b.dims[0], b.n);
        CHECK(b.data && memcmp(b.data, lab, sizeof lab) == 0, "%s: labels differ", lp);
        idx_free(&b);

        expect_fail(idx_load_labels(ip, &a), &a, ip, "labels", "images read as labels");
        expect_fail(idx_load_images(lp, &b), &b, lp, "images", "labels read as images");
    }

    /* idx_load takes any unsigned-byte array of 1..4 dims. */
    uint8_t four[2 * 3 * 1 * 2];
    fill_bytes(four, sizeof four, 2);
    const uint32_t d4[4] = {2, 3, 1, 2};
    const char *p4 = tpath("four-idx4-ubyte.gz");
    write_idx(p4, 1, 0x08, 4, d4, four, sizeof four);
    IdxArray a;
    CHECK(idx_load(p4, &a) == 0, "load %s: %s", p4, cm_errmsg());
    CHECK(a.ndim == 4 && a.dims[0] == 2 && a.dims[1] == 3 && a.dims[2] == 1 && a.dims[3] == 2 &&
          a.n == sizeof four && memcmp(a.data, four, sizeof four) == 0, "%s: 4-d array differs",
          p4);
    idx_free(&a);
}

static void test_idx_errors(void)
{
    enum { N = 20, H = 28, W = 28, NB = N * H * W };
    uint8_t *img = cm_malloc(NB);
    fill_bytes(img, NB, 3);
    const uint32_t dims[3] = {N, H, W};
    size_t len;
    uint8_t *good = make_idx(&len, 0x08, 3, dims, img, NB);
    IdxArray a;
    const char *p;

    p = tpath("missing-idx3-ubyte.gz");
    expect_fail(idx_load(p, &a), &a, p, "No such file", "missing file");
    expect_fail(idx_load(tmpdir, &a), &a, tmpdir, "read error", "a directory");

    for (int gz = 0; gz < 2; gz++) {
        p = tpath(gz ? "cut3.gz" : "cut3");
        write_file(p, gz, good, 3);
        expect_fail(idx_load(p, &a), &a, p, "truncated in the IDX header",
                    gz ? "cut in the magic (gz)" : "cut in the magic");
        p = tpath(gz ? "cut10.gz" : "cut10");
        write_file(p, gz, good, 10);
        expect_fail(idx_load(p, &a), &a, p, "truncated in the IDX header",
                    gz ? "cut in the dims (gz)" : "cut in the dims");
        p = tpath(gz ? "cutdata.gz" : "cutdata");
        write_file(p, gz, good, 16 + NB / 2);
        expect_fail(idx_load(p, &a), &a, p, "truncated", gz ? "cut in the data (gz)"
                                                            : "cut in the data");
        p = tpath(gz ? "empty.gz" : "empty");
        write_file(p, gz, good, 0);
        expect_fail(idx_load(p, &a), &a, p, "truncated", gz ? "empty file (gz)" : "empty file");
    }

    uint8_t *bad = cm_malloc(len + 3);
    memcpy(bad, good, len);

    p = tpath("trailing");
    bad[len] = bad[len + 1] = bad[len + 2] = 7;
    write_file(p, 0, bad, len + 3);
    expect_fail(idx_load(p, &a), &a, p, "follow", "bytes after the data");

    p = tpath("magic.gz");
    bad[0] = 0x12;
    bad[1] = 0x34;
    write_file(p, 1, bad, len);
    expect_fail(idx_load(p, &a), &a, p, "not an IDX file", "wrong magic");
    bad[0] = bad[1] = 0;

    p = tpath("type");
    bad[2] = 0x0D;
    write_file(p, 0, bad, len);
    expect_fail(idx_load(p, &a), &a, p, "0x0d (float32) is not supported", "wrong type byte");
    bad[2] = 0x08;

    p = tpath("ndim0");
    bad[3] = 0;
    write_file(p, 0, bad, len);
    expect_fail(idx_load(p, &a), &a, p, "0 dimensions", "ndims 0");
    p = tpath("ndim5");
    bad[3] = 5;
    write_file(p, 0, bad, len);
    expect_fail(idx_load(p, &a), &a, p, "5 dimensions", "ndims 5");
    bad[3] = 3;

    const uint32_t zero[3] = {N, 0, W}, neg[3] = {0xFFFFFFFFu, H, W},
                   huge[3] = {65536, 65536, 65536}, lie[3] = {N * 100, H, W};
    p = tpath("dim0");
    write_idx(p, 0, 0x08, 3, zero, img, NB);
    expect_fail(idx_load(p, &a), &a, p, "at least 1", "a zero dim");
    p = tpath("dimneg");
    write_idx(p, 0, 0x08, 3, neg, img, NB);
    expect_fail(idx_load(p, &a), &a, p, "at least 1", "a negative dim");
    p = tpath("dimhuge.gz");
    write_idx(p, 1, 0x08, 3, huge, img, NB);
    expect_fail(idx_load(p, &a), &a, p, "corrupt", "absurd dims");
    p = tpath("dimlie");
    write_idx(p, 0, 0x08, 3, lie, img, NB);
    expect_fail(idx_load(p, &a), &a, p, "truncated", "dims larger than the data");

    /* Corrupt gzip streams, made from a good .gz of compressible content so that the damage
     * lands in Huffman-coded deflate blocks, not in stored (uncompressed) ones. */
    for (int i = 0; i < NB; i++) img[i] = (uint8_t)((i % W) * (i / W % H) + (i & 3));
    free(good);
    good = make_idx(&len, 0x08, 3, dims, img, NB);
    const char *gp = tpath("good.gz");
    write_file(gp, 1, good, len);
    size_t glen;
    uint8_t *gzb = read_file(gp, &glen);
    CHECK(idx_load(gp, &a) == 0 && a.n == NB && memcmp(a.data, img, NB) == 0,
          "%s: good gzip file does not load: %s", gp, cm_errmsg());
    idx_free(&a);

    uint8_t *mod = cm_malloc(glen);
    memcpy(mod, gzb, glen);
    mod[glen - 6] ^= 0x5A;             /* inside the CRC-32 of the gzip trailer */
    p = tpath("badcrc.gz");
    write_file(p, 0, mod, glen);
    expect_fail(idx_load(p, &a), &a, p, "corrupt gzip", "gzip CRC mismatch");

    memcpy(mod, gzb, glen);
    for (size_t i = glen / 2; i < glen / 2 + 16; i++) mod[i] ^= 0xFF;
    p = tpath("baddeflate.gz");
    write_file(p, 0, mod, glen);
    expect_fail(idx_load(p, &a), &a, p, "corrupt gzip", "corrupt deflate data");

    p = tpath("cutgz.gz");
    write_file(p, 0, gzb, glen / 2);
    expect_fail(idx_load(p, &a), &a, p, "cut short", "gzip file cut in half");

    free(mod);
    free(gzb);
    free(bad);
    free(good);
    free(img);
}

static void test_idx_split(void)
{
    uint8_t img[6 * 2 * 2], lab[6] = {1, 2, 3, 4, 5, 6};
    fill_bytes(img, sizeof img, 4);
    const uint32_t idims[3] = {6, 2, 2}, ldims[1] = {6}, ldims5[1] = {5};
    CHECK(mkdir(tpath("ds"), 0700) == 0, "mkdir %s", tpath("ds"));
    /* Images compressed, labels plain: the loader must fall back to the name without .gz. */
    write_idx(tpath("ds/train-images-idx3-ubyte.gz"), 1, 0x08, 3, idims, img, sizeof img);
    write_idx(tpath("ds/train-labels-idx1-ubyte"), 0, 0x08, 1, ldims, lab, sizeof lab);
    write_idx(tpath("ds/t10k-images-idx3-ubyte.gz"), 1, 0x08, 3, idims, img, sizeof img);
    write_idx(tpath("ds/t10k-labels-idx1-ubyte.gz"), 1, 0x08, 1, ldims5, lab, 5);

    IdxArray im, lb;
    const char *dir = tpath("ds");
    CHECK(idx_load_split(dir, "train", &im, &lb) == 0, "split train: %s", cm_errmsg());
    CHECK(im.ndim == 3 && im.dims[0] == 6 && lb.ndim == 1 && lb.dims[0] == 6 &&
          memcmp(im.data, img, sizeof img) == 0 && memcmp(lb.data, lab, sizeof lab) == 0,
          "split train: wrong content");
    idx_free(&im);
    idx_free(&lb);

    expect_fail(idx_load_split(dir, "t10k", &im, &lb), &im,
                tpath("ds/t10k-labels-idx1-ubyte.gz"), "6 images", "split count mismatch");
    CHECK(lb.data == NULL, "split count mismatch: labels not freed");
    expect_fail(idx_load_split(dir, "nosuch", &im, &lb), &im,
                tpath("ds/nosuch-images-idx3-ubyte"), "dataset-fashion-mnist", "split missing");
}

static void test_fashion_mnist(void)
{
    static const struct { const char *split; int n; } splits[] = {{"train", 60000},
                                                                   {"t10k", 10000}};
    for (size_t s = 0; s < CM_ARRAY_LEN(splits); s++) {
        IdxArray im, lb;
        double t0 = cm_now();
        if (idx_load_split(FASHION_DIR, splits[s].split, &im, &lb) != 0) {
            CHECK(0, "Fashion-MNIST %s not loadable: %s\n  install the Debian package "
                  "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
                  splits[s].split, cm_errmsg());
            continue;
        }
        double dt = cm_now() - t0;
        int n = splits[s].n;
        CHECK(im.ndim == 3 && im.dims[0] == n && im.dims[1] == 28 && im.dims[2] == 28,
              "fashion %s images: ndim %d dims %d %d %d", splits[s].split, im.ndim, im.dims[0],
              im.dims[1], im.dims[2]);
        CHECK(lb.ndim == 1 && lb.dims[0] == n, "fashion %s labels: ndim %d dims %d",
              splits[s].split, lb.ndim, lb.dims[0]);

        /* Fashion-MNIST is balanced: exactly n/10 of each class in both splits. */
        long count[256] = {0};
        for (size_t i = 0; i < lb.n; i++) count[lb.data[i]]++;
        int out_of_range = 0, unbalanced = 0;
        for (int c = 10; c < 256; c++) out_of_range += count[c] != 0;
        for (int c = 0; c < 10; c++) unbalanced += count[c] != n / 10;
        CHECK(out_of_range == 0, "fashion %s: labels outside 0..9", splits[s].split);
        CHECK(unbalanced == 0, "fashion %s: class counts not %d each (class 0: %ld)",
              splits[s].split, n / 10, count[0]);

        double sum = 0;
        for (size_t i = 0; i < im.n; i++) sum += im.data[i];
        double mean = sum / (double)im.n;
        printf("  fashion-mnist %-5s: %d x %d x %d, labels 0..9 x %d each, mean pixel %.4f "
               "(%.4f of 1), loaded in %.2f s\n", splits[s].split, im.dims[0], im.dims[1],
               im.dims[2], n / 10, mean, mean / 255.0, dt);
        /* The published mean of the training set is 0.2860 of 255 = 72.94. */
        if (s == 0) CHECK(mean > 72.0 && mean < 74.0, "fashion train mean %.4f not ~72.94", mean);
        idx_free(&im);
        idx_free(&lb);
    }
}

/* A PNG of any libpng format, written with libpng directly, to test the read conversions. */
static void write_raw_png(const char *path, int w, int h, int depth, int color,
                          const uint8_t *data, size_t rowbytes, const png_color *pal, int npal,
                          const uint8_t *trns, int ntrns)
{
    FILE *f = fopen(path, "wb");
    CM_ASSERT(f, "cannot create %s", path);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    CM_ASSERT(png && info && !setjmp(png_jmpbuf(png)), "libpng failed writing %s", path);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, depth, color, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(png, info, pal, npal);
    if (trns) png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, data + (size_t)y * rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
}

static void check_png(const char *what, const char *path, int w, int h, int c,
                      const uint8_t *expect)
{
    uint8_t *pix;
    int rw, rh, rc_;
    int rc = image_read_png(path, &pix, &rw, &rh, &rc_);
    CHECK(rc == 0, "%s: read %s: %s", what, path, cm_errmsg());
    if (rc) return;
    CHECK(rw == w && rh == h && rc_ == c, "%s: read %dx%dx%d, expected %dx%dx%d", what, rw, rh,
          rc_, w, h, c);
    if (rw == w && rh == h && rc_ == c) {
        size_t n = (size_t)w * h * c, bad = 0, first = 0;
        for (size_t i = n; i-- > 0;)
            if (pix[i] != expect[i]) bad++, first = i;
        CHECK(bad == 0, "%s: %zu of %zu bytes differ, first at %zu: %d vs %d", what, bad, n,
              first, pix[first], expect[first]);
    }
    free(pix);
}

static void test_png_roundtrip(void)
{
    static const struct { int w, h, c; } cases[] = {{37, 23, 1}, {19, 11, 3}, {1, 1, 1}};
    for (size_t k = 0; k < CM_ARRAY_LEN(cases); k++) {
        int w = cases[k].w, h = cases[k].h, c = cases[k].c;
        size_t n = (size_t)w * h * c;
        uint8_t *pix = cm_malloc(n);
        fill_bytes(pix, n, 10 + (uint32_t)k);
        char name[64];
        snprintf(name, sizeof name, "rt%zu.png", k);
        const char *p = tpath(name);
        CHECK(image_write_png(p, pix, w, h, c) == 0, "write %s: %s", p, cm_errmsg());
        check_png(c == 1 ? "gray round trip" : "RGB round trip", p, w, h, c, pix);
        snprintf(name, sizeof name, "rt%zu.png.tmp", k);
        CHECK(access(tpath(name), F_OK) != 0, "%s left behind", tpath(name));
        free(pix);
    }

    /* A failed write leaves the previous file untouched: make <path>.tmp uncreatable. */
    uint8_t old[4] = {1, 2, 3, 4}, new_[4] = {9, 9, 9, 9};
    const char *keep = tpath("keep.png");
    CHECK(image_write_png(keep, old, 2, 2, 1) == 0, "write %s: %s", keep, cm_errmsg());
    CHECK(image_write_png(keep, new_, 2, 2, 1) == 0, "overwrite %s: %s", keep, cm_errmsg());
    check_png("overwrite", keep, 2, 2, 1, new_);
    CHECK(mkdir(tpath("keep.png.tmp"), 0700) == 0, "mkdir %s", tpath("keep.png.tmp"));
    int rc = image_write_png(keep, old, 2, 2, 1);
    expect_fail(rc, NULL, keep, "cannot create", "PNG .tmp not creatable");
    check_png("failed write keeps the old file", keep, 2, 2, 1, new_);

    const char *p = tpath("no/such/dir/x.png");
    expect_fail(image_write_png(p, old, 2, 2, 1), NULL, p, "cannot create", "PNG dir missing");

    uint8_t *pix = (uint8_t *)1;
    int w = 1, h = 1, c = 1;
    p = tpath("missing.png");
    expect_fail(image_read_png(p, &pix, &w, &h, &c), NULL, p, "No such file", "PNG missing");
    CHECK(pix == NULL && w == 0 && h == 0 && c == 0, "failed read leaves outputs set");
    p = tpath("rt-labels-idx1-ubyte");
    expect_fail(image_read_png(p, &pix, &w, &h, &c), NULL, p, "not a PNG", "PNG wrong format");

    size_t len;
    uint8_t *full = read_file(tpath("rt0.png"), &len);
    p = tpath("cut.png");
    write_file(p, 0, full, len / 2);
    expect_fail(image_read_png(p, &pix, &w, &h, &c), NULL, p, "libpng", "PNG cut in half");
    for (size_t i = len / 2; i < len / 2 + 8; i++) full[i] ^= 0xFF;   /* inside IDAT's data */
    p = tpath("crc.png");
    write_file(p, 0, full, len);
    expect_fail(image_read_png(p, &pix, &w, &h, &c), NULL, p, "IDAT", "PNG corrupt IDAT");
    free(full);
}

/* Every input format is read as 8-bit gray or RGB. Expected values: 16-bit samples 257*k scale
 * to exactly k; alpha and palette transparency are dropped. */
static void test_png_formats(void)
{
    enum { W = 3, H = 2 };
    uint8_t g8[W * H], rgb8[W * H * 3], buf[W * H * 8];
    fill_bytes(g8, sizeof g8, 20);
    fill_bytes(rgb8, sizeof rgb8, 21);
    const char *p;

    for (int i = 0; i < W * H; i++) {           /* 16-bit gray, big-endian samples */
        buf[2 * i] = g8[i];
        buf[2 * i + 1] = g8[i];
    }
    p = tpath("gray16.png");
    write_raw_png(p, W, H, 16, PNG_COLOR_TYPE_GRAY, buf, 2 * W, NULL, 0, NULL, 0);
    check_png("16-bit gray", p, W, H, 1, g8);

    for (int i = 0; i < W * H; i++) {           /* gray + alpha */
        buf[2 * i] = g8[i];
        buf[2 * i + 1] = (uint8_t)(i * 40);
    }
    p = tpath("graya.png");
    write_raw_png(p, W, H, 8, PNG_COLOR_TYPE_GRAY_ALPHA, buf, 2 * W, NULL, 0, NULL, 0);
    check_png("gray+alpha", p, W, H, 1, g8);

    for (int i = 0; i < W * H; i++) {           /* RGBA */
        memcpy(buf + 4 * i, rgb8 + 3 * i, 3);
        buf[4 * i + 3] = (uint8_t)(i * 40);
    }
    p = tpath("rgba.png");
    write_raw_png(p, W, H, 8, PNG_COLOR_TYPE_RGB_ALPHA, buf, 4 * W, NULL, 0, NULL, 0);
    check_png("RGBA", p, W, H, 3, rgb8);

    for (int i = 0; i < W * H * 3; i++) {       /* 16-bit RGB */
        buf[2 * i] = rgb8[i];
        buf[2 * i + 1] = rgb8[i];
    }
    p = tpath("rgb16.png");
    write_raw_png(p, W, H, 16, PNG_COLOR_TYPE_RGB, buf, 6 * W, NULL, 0, NULL, 0);
    check_png("16-bit RGB", p, W, H, 3, rgb8);

    const png_color pal[4] = {{10, 20, 30}, {200, 100, 0}, {0, 255, 128}, {7, 7, 7}};
    const uint8_t trns[2] = {0, 128};
    uint8_t idx[W * H], expect[W * H * 3];
    for (int i = 0; i < W * H; i++) {
        idx[i] = (uint8_t)(i % 4);
        expect[3 * i] = pal[i % 4].red;
        expect[3 * i + 1] = pal[i % 4].green;
        expect[3 * i + 2] = pal[i % 4].blue;
    }
    p = tpath("palette.png");
    write_raw_png(p, W, H, 8, PNG_COLOR_TYPE_PALETTE, idx, W, pal, 4, trns, 2);
    check_png("palette with tRNS", p, W, H, 3, expect);

    /* 1-bit gray, rows padded to a byte: 101 / 010 -> 255 0 255 / 0 255 0. */
    const uint8_t bits[2] = {0xA0, 0x40}, expect1[W * H] = {255, 0, 255, 0, 255, 0};
    p = tpath("gray1.png");
    write_raw_png(p, W, H, 1, PNG_COLOR_TYPE_GRAY, bits, 1, NULL, 0, NULL, 0);
    check_png("1-bit gray", p, W, H, 1, expect1);
}

static void test_grid(void)
{
    /* Values and the bytes they must become: clamped to [-1, 1], round((x + 1) * 127.5). */
    static const float vals[] = {-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 2.0f, -3.0f};
    static const uint8_t bytes[] = {0, 64, 128, 191, 255, 255, 0};
    enum { N = 5, C = 1, H = 3, W = 4, NCOLS = 3, PAD = 2, NV = 7 };
    float x[N * C * H * W];
    for (int i = 0; i < N * C * H * W; i++) x[i] = vals[(i * 3 + i / 7) % NV];

    const char *p = tpath("grid.png");
    CHECK(image_write_grid(p, x, N, C, H, W, NCOLS, PAD) == 0, "grid %s: %s", p, cm_errmsg());
    uint8_t *pix = NULL;
    int gw, gh, gc;
    CHECK(image_read_png(p, &pix, &gw, &gh, &gc) == 0, "read %s: %s", p, cm_errmsg());
    int ew = NCOLS * (W + PAD) + PAD, eh = 2 * (H + PAD) + PAD;
    CHECK(gw == ew && gh == eh && gc == 1, "grid %dx%dx%d, expected %dx%dx1", gw, gh, gc, ew, eh);
    if (pix && gw == ew && gh == eh && gc == 1) {
        int bad_tile = 0, bad_border = 0, border = 0;
        for (int y = 0; y < gh; y++)
            for (int xx = 0; xx < gw; xx++) {
                int ty = (y - PAD) / (H + PAD), oy = (y - PAD) % (H + PAD);
                int tx = (xx - PAD) / (W + PAD), ox = (xx - PAD) % (W + PAD);
                int tile = ty * NCOLS + tx;
                uint8_t got = pix[y * gw + xx];
                if (y >= PAD && xx >= PAD && oy < H && ox < W && tile < N) {
                    int i = (tile * H + oy) * W + ox;
                    bad_tile += got != bytes[(i * 3 + i / 7) % NV];
                } else {
                    border++;
                    bad_border += got != 0;
                }
            }
        CHECK(bad_tile == 0, "grid: %d tile pixels wrong", bad_tile);
        CHECK(bad_border == 0, "grid: %d of %d border/empty pixels not black", bad_border, border);
        CHECK(border == ew * eh - N * H * W, "grid: %d border pixels, expected %d", border,
              ew * eh - N * H * W);
    }
    free(pix);

    /* RGB, more columns than images: the row shrinks to the images there are. NaN is black. */
    float rgb[2 * 3 * 1 * 2] = {-1, 1, 0, 0.5f, 1, -1, /* image 0: R, G, B planes */
                                2, NAN, -0.5f, 0, 0.25f, -0.25f};
    p = tpath("grid_rgb.png");
    CHECK(image_write_grid(p, rgb, 2, 3, 1, 2, 8, 1) == 0, "grid %s: %s", p, cm_errmsg());
    /* 7x3 pixels: a black frame row, then border, image 0 (2 px), border, image 1, border. */
    uint8_t want[3 * 7 * 3] = {0};
    const uint8_t row1[7 * 3] = {0, 0, 0,   0, 128, 255,   255, 191, 0,   0, 0, 0,
                                 255, 64, 159,   0, 128, 96,   0, 0, 0};
    memcpy(want + 7 * 3, row1, sizeof row1);
    check_png("RGB grid", p, 7, 3, 3, want);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "test_data_XXXXXX");
    CM_ASSERT(mkdtemp(tmpdir), "mkdtemp %s failed", tmpdir);
    double t0 = cm_now();

    printf("IDX round trip\n");
    test_idx_roundtrip();
    printf("IDX errors\n");
    test_idx_errors();
    printf("IDX splits\n");
    test_idx_split();
    printf("Fashion-MNIST (%s)\n", FASHION_DIR);
    test_fashion_mnist();
    printf("PNG round trip and errors\n");
    test_png_roundtrip();
    printf("PNG input formats\n");
    test_png_formats();
    printf("sample grids\n");
    test_grid();

    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%.2f s\n", cm_now() - t0);
    return test_summary("data");
}
