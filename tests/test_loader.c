/* test_loader: the CIFAR-10 reader on full-size files written here in the official binary layout
 * (the cifar-10-batches-bin directory and cifar-10-binary.tar.gz, built with a minimal ustar
 * writer), the PNG folder reader, dataset_load (including the real Fashion-MNIST from the Debian
 * package), and the loader: value mapping, padding, shuffle, flips, the split across ranks, the
 * resumable cursor and prefetch. Every error case must return -1 with a message naming the path;
 * the messages are printed. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/cifar.h"
#include "data/dataset.h"
#include "data/folder.h"
#include "data/image.h"
#include "data/loader.h"
#include "fixture.h"

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

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CM_ASSERT(f, "cannot create %s", path);
    CM_ASSERT(fwrite(buf, 1, len, f) == len, "fwrite %s", path);
    CM_ASSERT(fclose(f) == 0, "fclose %s", path);
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

/* rc must be -1, the message must name `path` and contain `keyword`, and d must be empty. */
static void expect_fail(int rc, const Dataset *d, const char *path, const char *keyword,
                        const char *what)
{
    const char *msg = cm_errmsg();
    printf("  %-30s -> %s\n", what, msg);
    CHECK(rc == -1, "%s: expected -1, got %d", what, rc);
    CHECK(strstr(msg, path) != NULL, "%s: message does not name %s: %s", what, path, msg);
    CHECK(strstr(msg, keyword) != NULL, "%s: message lacks \"%s\": %s", what, keyword, msg);
    if (d) CHECK(d->pix == NULL && d->labels == NULL && d->n == 0, "%s: dataset not zeroed", what);
}

/* ---- CIFAR-10 ---- */

enum { CIFAR_N = CIFAR_RECORDS_PER_FILE, CIFAR_PLANE = CIFAR_SIDE * CIFAR_SIDE };

/* Every label and pixel of a loaded split against the formula, plus literal values worked out
 * by hand (python) so the formula is not checked only against itself. */
static void cifar_check(const Dataset *d, int test_split, const char *what)
{
    int n = test_split ? CIFAR_N : 5 * CIFAR_N;
    CHECK(d->n == n && d->c == 3 && d->h == 32 && d->w == 32, "%s: %d x %d x %d x %d", what,
          d->n, d->c, d->h, d->w);
    if (d->n != n) return;
    long bad_pix = 0, bad_lab = 0;
    for (int i = 0; i < n; i++) {
        int f = test_split ? 5 : i / CIFAR_N, r = i % CIFAR_N;
        bad_lab += d->labels[i] != fixture_cifar_label(f, r);
        const uint8_t *img = d->pix + (size_t)i * 3 * CIFAR_PLANE;
        for (int p = 0; p < 3; p++)
            for (int y = 0; y < 32; y++)
                for (int x = 0; x < 32; x++)
                    bad_pix += img[(p * 32 + y) * 32 + x] != fixture_cifar_pixel(f, r, p, y, x);
    }
    CHECK(bad_lab == 0, "%s: %ld labels differ", what, bad_lab);
    CHECK(bad_pix == 0, "%s: %ld pixels differ", what, bad_pix);
#define PIX(i, p, y, x) d->pix[(((size_t)(i) * 3 + (p)) * 32 + (y)) * 32 + (x)]
    if (test_split) {
        CHECK(PIX(9999, 1, 31, 31) == 34 && d->labels[9999] == 8, "%s: test record 9999: G(31,31)"
              " %d label %d, expected 34, 8", what, PIX(9999, 1, 31, 31), d->labels[9999]);
    } else {
        CHECK(PIX(0, 0, 0, 0) == 0 && PIX(0, 1, 0, 0) == 71 && PIX(0, 2, 0, 0) == 142 &&
              d->labels[0] == 0, "%s: record 0: R G B (0,0) = %d %d %d label %d, expected 0 71 "
              "142, 0", what, PIX(0, 0, 0, 0), PIX(0, 1, 0, 0), PIX(0, 2, 0, 0), d->labels[0]);
        CHECK(PIX(10000, 0, 0, 1) == 104 && d->labels[10000] == 3, "%s: image 10000 (batch 2 "
              "record 0): R(0,1) %d label %d, expected 104, 3", what, PIX(10000, 0, 0, 1),
              d->labels[10000]);
        CHECK(PIX(49999, 2, 31, 0) == 167 && d->labels[49999] == 5, "%s: image 49999: B(31,0) "
              "%d label %d, expected 167, 5", what, PIX(49999, 2, 31, 0), d->labels[49999]);
    }
#undef PIX
}

static const char *cifar_member(int f)
{
    static char name[128];
    snprintf(name, sizeof name, "%s/%s", CIFAR_DIR_NAME, fixture_cifar_names[f]);
    return name;
}

/* Writes <tmp>/cifar/cifar-10-batches-bin/ and <tmp>/cifar-10-binary.tar.gz with the same six
 * files. */
static void cifar_write_all(void)
{
    CM_ASSERT(mkdir(tpath("cifar"), 0700) == 0, "mkdir %s", tpath("cifar"));
    fixture_write_cifar10(tpath(CIFAR_TAR_NAME), tpath("cifar"));
}

static void test_cifar(void)
{
    double t0 = cm_now();
    cifar_write_all();
    printf("  wrote 6 batch files and the .tar.gz in %.2f s\n", cm_now() - t0);

    /* The batches directory, its parent, the tarball, and a directory holding only the tarball
     * all give the same data. */
    mkdir(tpath("tgzdir"), 0700);
    CM_ASSERT(link(tpath(CIFAR_TAR_NAME), tpath("tgzdir/" CIFAR_TAR_NAME)) == 0, "link");
    const struct { const char *path; const char *split; } cases[] = {
        {"cifar/" CIFAR_DIR_NAME, "train"}, {"cifar/" CIFAR_DIR_NAME, "test"},
        {"cifar", "test"}, {CIFAR_TAR_NAME, "train"}, {CIFAR_TAR_NAME, "test"},
        {"tgzdir", "test"},
    };
    for (size_t k = 0; k < CM_ARRAY_LEN(cases); k++) {
        const char *p = tpath(cases[k].path);
        Dataset d;
        t0 = cm_now();
        int rc = dataset_load(&d, "cifar10", p, cases[k].split);
        double dt = cm_now() - t0;
        CHECK(rc == 0, "load %s %s: %s", p, cases[k].split, cm_errmsg());
        if (rc) continue;
        char what[600];
        snprintf(what, sizeof what, "%s (%s)", p, cases[k].split);
        cifar_check(&d, strcmp(cases[k].split, "test") == 0, what);
        printf("  %-48s %5d images in %.2f s: %s\n", what, d.n, dt, d.source);
        dataset_free(&d);
        CHECK(d.pix == NULL && d.n == 0, "dataset_free leaves the dataset zeroed");
    }
}

/* A directory holding one test_batch.bin with the given bytes. */
static const char *cifar_dir_with(const char *dir, const uint8_t *bytes, size_t len)
{
    CM_ASSERT(mkdir(tpath(dir), 0700) == 0, "mkdir %s", tpath(dir));
    char name[256];
    snprintf(name, sizeof name, "%s/test_batch.bin", dir);
    write_file(tpath(name), bytes, len);
    return tpath(name);
}

static void test_cifar_errors(void)
{
    Dataset d;
    const char *p;
    uint8_t *good = fixture_cifar_batch(5);
    const size_t len = (size_t)CIFAR_N * CIFAR_RECORD_BYTES;

    p = tpath("no-such-cifar");
    expect_fail(dataset_load(&d, "cifar10", p, "train"), &d, p, "No such file", "missing path");
    mkdir(tpath("empty"), 0700);
    p = tpath("empty");
    expect_fail(dataset_load(&d, "cifar10", p, "train"), &d, p, "holds neither",
                "directory without CIFAR files");
    expect_fail(dataset_load(&d, "cifar10", NULL, "train"), &d, "data.path", "not set",
                "no path given");

    p = cifar_dir_with("cut", good, len - CIFAR_RECORD_BYTES);
    expect_fail(dataset_load(&d, "cifar10", tpath("cut"), "test"), &d, p, "holds 9999 records",
                "batch file one record short");
    p = cifar_dir_with("odd", good, len - 5);
    expect_fail(dataset_load(&d, "cifar10", tpath("odd"), "test"), &d, p, "not a whole number",
                "batch file of the wrong size");
    good[77 * CIFAR_RECORD_BYTES] = 10;
    p = cifar_dir_with("label", good, len);
    expect_fail(dataset_load(&d, "cifar10", tpath("label"), "test"), &d, p,
                "record 77 has label 10", "label 10");
    good[77 * CIFAR_RECORD_BYTES] = fixture_cifar_label(5, 77);
    p = tpath("label/data_batch_1.bin");
    expect_fail(dataset_load(&d, "cifar10", tpath("label"), "train"), &d, p, "No such file",
                "batch file missing");

    /* The tarball cut at 60%; a flipped bit in its gzip trailer's CRC, which only a reader that
     * goes on to the end of the stream notices; a flipped byte in its deflate data. */
    size_t tlen;
    uint8_t *tgz = read_file(tpath(CIFAR_TAR_NAME), &tlen);
    p = tpath("cut.tar.gz");
    write_file(p, tgz, tlen * 6 / 10);
    expect_fail(dataset_load(&d, "cifar10", p, "train"), &d, p, "truncated", "tar.gz cut short");
    tgz[tlen - 8] ^= 1;
    p = tpath("crc.tar.gz");
    write_file(p, tgz, tlen);
    expect_fail(dataset_load(&d, "cifar10", p, "test"), &d, p, "corrupt gzip", "tar.gz CRC wrong");
    tgz[tlen - 8] ^= 1;
    tgz[tlen / 2] ^= 0x5A;
    p = tpath("corrupt.tar.gz");
    write_file(p, tgz, tlen);
    Dataset ok;
    int rc = dataset_load(&ok, "cifar10", p, "test");
    expect_fail(rc, &ok, p, "re-download", "tar.gz data damaged");
    dataset_free(&ok);
    free(tgz);

    /* A tarball with only the test batch: the test split loads, the train split names the
     * first missing member. */
    FixtureTar t;
    p = tpath("testonly.tar.gz");
    fixture_tar_open(&t, p, "wb1");
    fixture_tar_add(&t, CIFAR_DIR_NAME "/", NULL, 0, '5');
    fixture_tar_add(&t, cifar_member(5), good, len, '0');
    fixture_tar_close(&t);
    CHECK(dataset_load(&d, "cifar10", p, "test") == 0, "load %s: %s", p, cm_errmsg());
    cifar_check(&d, 1, p);
    dataset_free(&d);
    expect_fail(dataset_load(&d, "cifar10", p, "train"), &d, p,
                "no member cifar-10-batches-bin/data_batch_1.bin", "tar without train members");

    /* A plain (uncompressed) tar reads too; cut inside the member it is truncated. */
    p = tpath("plain.tar");
    fixture_tar_open(&t, p, "wbT");
    fixture_tar_add(&t, cifar_member(5), good, len, '0');
    fixture_tar_close(&t);
    CHECK(dataset_load(&d, "cifar10", p, "test") == 0, "load %s: %s", p, cm_errmsg());
    cifar_check(&d, 1, p);
    dataset_free(&d);
    CHECK(truncate(p, 512 + (off_t)len / 2) == 0, "truncate %s", p);
    expect_fail(dataset_load(&d, "cifar10", p, "test"), &d, p, "truncated", "plain tar cut short");

    p = tpath("short-member.tar.gz");
    fixture_tar_open(&t, p, "wb1");
    fixture_tar_add(&t, cifar_member(5), good, 100 * CIFAR_RECORD_BYTES, '0');
    fixture_tar_close(&t);
    expect_fail(dataset_load(&d, "cifar10", p, "test"), &d, p, "holds 100 records",
                "tar member of the wrong size");

    /* The right member under another directory (the python version's name) does not count. */
    p = tpath("py.tar.gz");
    fixture_tar_open(&t, p, "wb1");
    fixture_tar_add(&t, "cifar-10-batches-py/test_batch.bin", good, len, '0');
    fixture_tar_close(&t);
    expect_fail(dataset_load(&d, "cifar10", p, "test"), &d, p, "no member",
                "member in another dir");

    p = tpath("random.gz");
    gzFile gz = gzopen(p, "wb");
    CM_ASSERT(gz && gzwrite(gz, good + 5, 4000) == 4000 && gzclose(gz) == Z_OK, "write %s", p);
    expect_fail(dataset_load(&d, "cifar10", p, "test"), &d, p, "checksum", "not a tar");
    free(good);
}

/* ---- PNG folders ---- */

/* A w x h image with `c` channels whose bytes say which image (k) and where they are. */
static uint8_t png_byte(int k, int c, int y, int x, int ch)
{
    return (uint8_t)(k * 40 + y * 11 + x * 3 + ch * 70 + c);
}

static void write_png(const char *path, int k, int w, int h, int c)
{
    uint8_t *pix = cm_malloc((size_t)w * h * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int ch = 0; ch < c; ch++) pix[(y * w + x) * c + ch] = png_byte(k, c, y, x, ch);
    CHECK(image_write_png(path, pix, w, h, c) == 0, "write %s: %s", path, cm_errmsg());
    free(pix);
}

static void test_folder(void)
{
    enum { W = 5, H = 3 };
    /* Written out of order, with a file and a directory that must be ignored; .PNG counts. */
    CM_ASSERT(mkdir(tpath("rgb"), 0700) == 0 && mkdir(tpath("rgb/sub.png"), 0700) == 0, "mkdir");
    write_png(tpath("rgb/c.png"), 2, W, H, 3);
    write_png(tpath("rgb/a.png"), 0, W, H, 3);
    write_png(tpath("rgb/d.PNG"), 3, W, H, 3);
    write_png(tpath("rgb/b.png"), 1, W, H, 3);
    write_file(tpath("rgb/notes.txt"), (const uint8_t *)"hi", 2);
    Dataset d;
    const char *p = tpath("rgb");
    CHECK(dataset_load(&d, "folder", p, "train") == 0, "load %s: %s", p, cm_errmsg());
    CHECK(d.n == 4 && d.c == 3 && d.h == H && d.w == W, "%s: %d x %d x %d x %d", p, d.n, d.c,
          d.h, d.w);
    if (d.n == 4) {
        int bad = 0, badlab = 0;
        for (int k = 0; k < 4; k++) {           /* a, b, c, d.PNG: image k is file k */
            badlab += d.labels[k] != -1;
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        bad += d.pix[((k * 3 + ch) * H + y) * W + x] != png_byte(k, 3, y, x, ch);
        }
        CHECK(bad == 0, "%s: %d pixels differ (order by name, CHW planes)", p, bad);
        CHECK(badlab == 0, "%s: labels not -1", p);
        printf("  %s\n", d.source);
    }
    dataset_free(&d);

    CM_ASSERT(mkdir(tpath("gray"), 0700) == 0, "mkdir");
    write_png(tpath("gray/x1.png"), 5, W, H, 1);
    write_png(tpath("gray/x0.png"), 4, W, H, 1);
    p = tpath("gray");
    CHECK(folder_load(&d, p) == 0, "load %s: %s", p, cm_errmsg());
    CHECK(d.n == 2 && d.c == 1 && d.pix && d.pix[0] == png_byte(4, 1, 0, 0, 0) &&
          d.pix[W * H + W + 2] == png_byte(5, 1, 1, 2, 0), "%s: gray folder wrong", p);
    dataset_free(&d);

    write_png(tpath("gray/x2.png"), 6, W - 1, H, 1);
    p = tpath("gray/x2.png");
    expect_fail(folder_load(&d, tpath("gray")), &d, p, "same size", "image of another size");
    CHECK(remove(p) == 0, "remove %s", p);
    write_png(tpath("gray/x3.png"), 6, W, H, 3);
    p = tpath("gray/x3.png");
    expect_fail(folder_load(&d, tpath("gray")), &d, p, "RGB", "image of other channels");
    write_file(tpath("gray/x4.png"), (const uint8_t *)"not a png", 9);
    CHECK(remove(p) == 0, "remove %s", p);
    p = tpath("gray/x4.png");
    expect_fail(folder_load(&d, tpath("gray")), &d, p, "not a PNG", "broken PNG");

    p = tpath("empty");
    expect_fail(dataset_load(&d, "folder", p, "train"), &d, p, "no .png", "folder without PNGs");
    p = tpath("no-such-folder");
    expect_fail(dataset_load(&d, "folder", p, "train"), &d, p, "cannot open", "missing folder");
}

/* ---- the loader ---- */

/* A small dataset whose label is the row index, so every output sample can be traced to its
 * row; x * 31 makes every image asymmetric, so a flip shows. Holds the bytes 0 and 255. */
enum { TN = 37, TC = 3, TH = 5, TW = 6 };
static uint8_t toy_byte(int i, int ch, int y, int x)
{
    return (uint8_t)(i * 17 + ch * 50 + y * 9 + x * 31);
}

static void toy_dataset(Dataset *d)
{
    d->n = TN, d->c = TC, d->h = TH, d->w = TW;
    d->pix = cm_malloc((size_t)TN * TC * TH * TW);
    d->labels = cm_malloc(TN * sizeof *d->labels);
    for (int i = 0; i < TN; i++) {
        d->labels[i] = (int16_t)i;
        for (int ch = 0; ch < TC; ch++)
            for (int y = 0; y < TH; y++)
                for (int x = 0; x < TW; x++)
                    d->pix[((i * TC + ch) * TH + y) * TW + x] = toy_byte(i, ch, y, x);
    }
    snprintf(d->source, sizeof d->source, "toy");
}

/* Mismatches of an output image (H x W, the toy image at (top, left)) against row `row`, flipped
 * or not; everything outside the image must be -1. */
static int toy_mismatches(const float *img, int H, int W, int top, int left, int row, int flip)
{
    int bad = 0;
    for (int ch = 0; ch < TC; ch++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int iy = y - top, ix = x - left;
                float want = -1.0f;
                if (iy >= 0 && iy < TH && ix >= 0 && ix < TW)
                    want = toy_byte(row, ch, iy, flip ? TW - 1 - ix : ix) / 127.5f - 1.0f;
                bad += img[(ch * H + y) * W + x] != want;
            }
    return bad;
}

/* 0 unflipped, 1 flipped, -1 neither (wrong content). */
static int toy_flip_state(const float *img, int H, int W, int top, int left, int row)
{
    if (toy_mismatches(img, H, W, top, left, row, 0) == 0) return 0;
    if (toy_mismatches(img, H, W, top, left, row, 1) == 0) return 1;
    return -1;
}

static LoaderConfig toy_config(int batch, int pad_to, bool hflip, uint64_t seed)
{
    return (LoaderConfig){.batch = batch, .pad_to = pad_to, .hflip = hflip, .seed = seed,
                          .rank = 0, .world = 1, .prefetch = false};
}

/* nbatch batches from a fresh loader (or from `cur` when given) into x / labels, back to back. */
static void run_loader(const Dataset *d, const LoaderConfig *cfg, const LoaderCursor *cur,
                       int nbatch, float *x, int *labels)
{
    Loader l;
    CM_ASSERT(loader_init(&l, d, cfg) == 0, "loader_init: %s", cm_errmsg());
    if (cur) CM_ASSERT(loader_set_cursor(&l, *cur) == 0, "set cursor: %s", cm_errmsg());
    size_t img = (size_t)l.c * l.h * l.w;
    for (int b = 0; b < nbatch; b++)
        loader_next(&l, x + (size_t)b * l.batch_local * img,
                    labels ? labels + (size_t)b * l.batch_local : NULL);
    loader_free(&l);
}

/* Epoch e's order as loader.h defines it, computed here with rng_u32 itself. */
static void expected_order(uint64_t seed, int epoch, int *order)
{
    uint32_t key[TN];
    Rng r = {.seed = seed, .stream = STREAM_SHUFFLE, .step = (uint32_t)epoch};
    rng_u32(&r, key, TN, 0, 1);
    for (int i = 0; i < TN; i++) order[i] = i;
    for (int i = 1; i < TN; i++)                /* insertion sort by (key, row) */
        for (int j = i; j > 0; j--) {
            int a = order[j - 1], b = order[j];
            if (key[a] < key[b] || (key[a] == key[b] && a < b)) break;
            order[j - 1] = b;
            order[j] = a;
        }
}

static int expected_flip(uint64_t seed, int epoch, int pos)
{
    uint32_t u;
    Rng r = {.seed = seed, .stream = STREAM_HFLIP, .step = (uint32_t)epoch};
    rng_u32(&r, &u, 1, pos, 1);
    return (int)(u >> 31);
}

static void test_loader_epochs(const Dataset *d)
{
    enum { EPOCHS = 4, IMG = TC * TH * TW };
    float *x = cm_malloc((size_t)EPOCHS * TN * IMG * sizeof *x);
    int labels[EPOCHS * TN], again[EPOCHS * TN], other[EPOCHS * TN];

    /* B = n: batch e is epoch e. Values: exact v / 127.5 - 1, all within [-1, 1]. */
    LoaderConfig cfg = toy_config(TN, 0, false, 7);
    run_loader(d, &cfg, NULL, EPOCHS, x, labels);
    float lo = 2, hi = -2;
    for (size_t i = 0; i < (size_t)EPOCHS * TN * IMG; i++) {
        lo = CM_MIN(lo, x[i]);
        hi = CM_MAX(hi, x[i]);
    }
    CHECK(lo == -1.0f && hi == 1.0f, "values span [%g, %g], expected exactly [-1, 1]", lo, hi);
    int bad_img = 0, not_perm = 0, bad_order = 0;
    for (int e = 0; e < EPOCHS; e++) {
        int seen[TN] = {0}, order[TN];
        expected_order(7, e, order);
        for (int i = 0; i < TN; i++) {
            int row = labels[e * TN + i];
            if (row < 0 || row >= TN || seen[row]++) not_perm++;
            else bad_img += toy_mismatches(x + (size_t)(e * TN + i) * IMG, TH, TW, 0, 0, row, 0)
                            != 0;
            bad_order += row != order[i];
        }
    }
    CHECK(not_perm == 0, "an epoch is not a permutation of the rows (%d repeats)", not_perm);
    CHECK(bad_img == 0, "%d samples do not hold their row's pixels", bad_img);
    CHECK(bad_order == 0, "%d positions differ from the order of loader.h (rng_u32 keys)",
          bad_order);
    int same01 = memcmp(labels, labels + TN, sizeof(int) * TN) == 0;
    CHECK(!same01, "epochs 0 and 1 have the same order");
    printf("  epoch 0 order: %d %d %d %d ..., epoch 1: %d %d %d %d ...\n", labels[0], labels[1],
           labels[2], labels[3], labels[TN], labels[TN + 1], labels[TN + 2], labels[TN + 3]);

    run_loader(d, &cfg, NULL, EPOCHS, x, again);
    CHECK(memcmp(labels, again, sizeof labels) == 0, "the same seed gave another order");
    cfg.seed = 8;
    run_loader(d, &cfg, NULL, EPOCHS, x, other);
    CHECK(memcmp(labels, other, sizeof labels) != 0, "another seed gave the same order");

    /* Flips: exactly the positions whose STREAM_HFLIP bit is set, about half. */
    cfg = toy_config(TN, 0, true, 7);
    run_loader(d, &cfg, NULL, EPOCHS, x, again);
    CHECK(memcmp(labels, again, sizeof labels) == 0, "hflip changed the order");
    int wrong = 0, flipped = 0;
    for (int e = 0; e < EPOCHS; e++)
        for (int i = 0; i < TN; i++) {
            int s = toy_flip_state(x + (size_t)(e * TN + i) * IMG, TH, TW, 0, 0, again[e * TN + i]);
            wrong += s != expected_flip(7, e, i);
            flipped += s == 1;
        }
    CHECK(wrong == 0, "%d samples flipped (or not) against the STREAM_HFLIP draw", wrong);
    CHECK(flipped > EPOCHS * TN / 4 && flipped < EPOCHS * TN * 3 / 4, "%d of %d flipped",
          flipped, EPOCHS * TN);
    printf("  hflip: %d of %d samples flipped, each as its STREAM_HFLIP draw says\n", flipped,
           EPOCHS * TN);
    free(x);
}

static void test_loader_padding(const Dataset *d)
{
    enum { P = 9, IMG = TC * P * P, B = 6 };
    float x[B * IMG];
    int labels[B];
    /* 9 - 5 = 4 rows: 2 above, 2 below; 9 - 6 = 3 columns: 1 left, 2 right. */
    for (int hflip = 0; hflip < 2; hflip++) {
        LoaderConfig cfg = toy_config(B, P, hflip, 3);
        Loader l;
        CHECK(loader_init(&l, d, &cfg) == 0, "loader_init: %s", cm_errmsg());
        CHECK(l.c == TC && l.h == P && l.w == P && l.batch_local == B, "shape %d %d %d %d",
              l.batch_local, l.c, l.h, l.w);
        loader_next(&l, x, labels);
        loader_free(&l);
        int bad = 0;
        for (int j = 0; j < B; j++)
            bad += toy_flip_state(x + (size_t)j * IMG, P, P, 2, 1, labels[j]) < 0;
        CHECK(bad == 0, "%d padded samples wrong (image at row 2, column 1 of 9x9, -1 around)",
              bad);
    }

    Loader l;
    LoaderConfig cfg = toy_config(4, 5, false, 1);
    expect_fail(loader_init(&l, d, &cfg), NULL, "pad_to", "smaller than", "pad_to below the width");
    cfg = toy_config(1, 0, false, 1);
    cfg.world = 2;
    expect_fail(loader_init(&l, d, &cfg), NULL, "batch_size", "processes", "batch below world");
}

/* Batch size, ranks, wrap-around: the samples in order are the same stream whatever the split. */
static void test_loader_split(const Dataset *d)
{
    enum { P = 8, IMG = TC * P * P, TOTAL = 5 * TN + 3 };
    float *ref = cm_malloc((size_t)(TOTAL + 200) * IMG * sizeof *ref);
    float *x = cm_malloc((size_t)(TOTAL + 200) * IMG * sizeof *x);
    int ref_lab[TOTAL + 200], lab[TOTAL + 200];
    LoaderConfig cfg = toy_config(1, P, true, 11);
    run_loader(d, &cfg, NULL, TOTAL, ref, ref_lab);

    static const int sizes[] = {8, 5, 37, 100};
    for (size_t k = 0; k < CM_ARRAY_LEN(sizes); k++) {
        int B = sizes[k], nb = (TOTAL + B - 1) / B;
        cfg = toy_config(B, P, true, 11);
        Loader l;
        CM_ASSERT(loader_init(&l, d, &cfg) == 0, "loader_init: %s", cm_errmsg());
        for (int b = 0; b < nb; b++) loader_next(&l, x + (size_t)b * B * IMG, lab + b * B);
        LoaderCursor cur = loader_get_cursor(&l);
        loader_free(&l);
        long long pos = (long long)nb * B;
        CHECK(cur.epoch == pos / TN && cur.index == pos % TN, "B=%d after %d batches: cursor "
              "(%lld, %lld), expected (%lld, %lld)", B, nb, (long long)cur.epoch,
              (long long)cur.index, pos / TN, pos % TN);
        CHECK(memcmp(x, ref, (size_t)TOTAL * IMG * sizeof *x) == 0 &&
              memcmp(lab, ref_lab, TOTAL * sizeof *lab) == 0,
              "B=%d: the sample stream differs from B=1's (wrap-around or flips depend on B)", B);
    }
    printf("  B = 1, 8, 5, 37, 100: the same %d samples in the same order, flips included\n",
           TOTAL);

    /* B = 8 over 2 ranks (4 + 4) and 3 ranks (2 + 3 + 3): the slices in rank order are the
     * one-process batch. */
    enum { B = 8, NB = 12 };
    for (int world = 2; world <= 3; world++) {
        int bad = 0;
        for (int rank = 0; rank < world; rank++) {
            cfg = toy_config(B, P, true, 11);
            cfg.rank = rank;
            cfg.world = world;
            cfg.prefetch = rank == 1;
            Loader l;
            CM_ASSERT(loader_init(&l, d, &cfg) == 0, "loader_init: %s", cm_errmsg());
            int r0 = rank * B / world, nl = (rank + 1) * B / world - r0;
            CHECK(l.batch_local == nl, "world %d rank %d: batch_local %d, expected %d", world,
                  rank, l.batch_local, nl);
            for (int b = 0; b < NB; b++) {
                loader_next(&l, x, lab);
                const float *want = ref + (size_t)(b * B + r0) * IMG;
                bad += memcmp(x, want, (size_t)nl * IMG * sizeof *x) != 0;
                bad += memcmp(lab, ref_lab + b * B + r0, (size_t)nl * sizeof *lab) != 0;
            }
            LoaderCursor cur = loader_get_cursor(&l);
            CHECK(cur.epoch == NB * B / TN && cur.index == NB * B % TN, "rank cursor differs");
            loader_free(&l);
        }
        CHECK(bad == 0, "world %d: %d rank slices differ from the 1-process batches", world, bad);
    }
    free(ref);
    free(x);
}

/* A cursor saved mid-epoch and restored (in a fresh loader, or in one that has run on and has a
 * batch prefetched for elsewhere) gives the same next batches; prefetch changes nothing. */
static void test_loader_cursor(const Dataset *d)
{
    enum { P = 8, B = 8, IMG = TC * P * P, FIRST = 7, NEXT = 9 };
    float *want = cm_malloc((size_t)NEXT * B * IMG * sizeof *want);
    float *got = cm_malloc((size_t)(FIRST + NEXT) * B * IMG * sizeof *got);
    int want_lab[NEXT * B], got_lab[(FIRST + NEXT) * B];

    for (int pf = 0; pf < 2; pf++) {
        LoaderConfig cfg = toy_config(B, P, true, 5);
        cfg.prefetch = pf;
        Loader l;
        CM_ASSERT(loader_init(&l, d, &cfg) == 0, "loader_init: %s", cm_errmsg());
        for (int b = 0; b < FIRST; b++) loader_next(&l, got, got_lab);
        LoaderCursor cur = loader_get_cursor(&l);
        CHECK(cur.epoch == 1 && cur.index == FIRST * B - TN, "cursor after %d batches: (%lld, "
              "%lld)", FIRST, (long long)cur.epoch, (long long)cur.index);
        for (int b = 0; b < NEXT; b++)
            loader_next(&l, want + (size_t)b * B * IMG, want_lab + b * B);
        loader_free(&l);

        for (int pf2 = 0; pf2 < 2; pf2++) {
            cfg.prefetch = pf2;
            run_loader(d, &cfg, &cur, NEXT, got, got_lab);
            CHECK(memcmp(got, want, sizeof(float) * NEXT * B * IMG) == 0 &&
                  memcmp(got_lab, want_lab, sizeof want_lab) == 0,
                  "cursor restored in a fresh loader (prefetch %d -> %d) gives other batches",
                  pf, pf2);

            CM_ASSERT(loader_init(&l, d, &cfg) == 0, "loader_init: %s", cm_errmsg());
            for (int b = 0; b < 3; b++) loader_next(&l, got, got_lab);
            CHECK(loader_set_cursor(&l, cur) == 0, "set cursor: %s", cm_errmsg());
            for (int b = 0; b < NEXT; b++)
                loader_next(&l, got + (size_t)b * B * IMG, got_lab + b * B);
            CHECK(memcmp(got, want, sizeof(float) * NEXT * B * IMG) == 0 &&
                  memcmp(got_lab, want_lab, sizeof want_lab) == 0,
                  "cursor restored in a running loader (prefetch %d -> %d) gives other batches",
                  pf, pf2);
            LoaderCursor bad = {0, TN};
            int rc = loader_set_cursor(&l, bad);
            if (pf == 0 && pf2 == 0)
                expect_fail(rc, NULL, "toy", "another dataset", "cursor past the dataset");
            else
                CHECK(rc == -1, "cursor past the dataset accepted");
            loader_free(&l);
        }
    }

    /* Prefetch on and off, 3 epochs' worth, labels or not. */
    enum { NB = 3 * TN / B + 1 };
    const size_t bytes = (size_t)NB * B * IMG * sizeof(float);
    float *a = cm_malloc(bytes), *b = cm_malloc(bytes);
    LoaderConfig cfg = toy_config(B, P, true, 9);
    run_loader(d, &cfg, NULL, NB, a, NULL);
    cfg.prefetch = true;
    run_loader(d, &cfg, NULL, NB, b, NULL);
    CHECK(memcmp(a, b, bytes) == 0, "prefetch changes the batches");
    printf("  cursor save/restore and prefetch on/off: identical batches\n");
    free(a);
    free(b);
    free(want);
    free(got);
}

/* ---- dataset_load ---- */

static void test_fashion(void)
{
    static const struct { const char *split; int n; } splits[] = {{"train", 60000},
                                                                   {"test", 10000}};
    for (size_t s = 0; s < CM_ARRAY_LEN(splits); s++) {
        Dataset d;
        double t0 = cm_now();
        if (dataset_load(&d, "fashion-mnist", NULL, splits[s].split) != 0) {
            CHECK(0, "Fashion-MNIST %s not loadable: %s\n  install the Debian package "
                  "dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
                  splits[s].split, cm_errmsg());
            continue;
        }
        double dt = cm_now() - t0;
        int n = splits[s].n, count[10] = {0}, bad = 0;
        CHECK(d.n == n && d.c == 1 && d.h == 28 && d.w == 28, "fashion %s: %d x %d x %d x %d",
              splits[s].split, d.n, d.c, d.h, d.w);
        for (int i = 0; i < d.n; i++) {
            if (d.labels[i] < 0 || d.labels[i] > 9) bad++;
            else count[d.labels[i]]++;
        }
        CHECK(bad == 0 && count[0] == n / 10 && count[9] == n / 10, "fashion %s labels",
              splits[s].split);
        CHECK(strstr(d.source, DATASET_FASHION_MNIST_DIR) != NULL, "source %s", d.source);
        printf("  %s: %d images, %.2f s\n", d.source, d.n, dt);

        /* 28 -> 32 with prefetch: two rows and columns of -1 on every side, [-1, 1] inside. */
        enum { B = 64, P = 32 };
        float *x = cm_malloc((size_t)B * P * P * sizeof(float));
        float *y = cm_malloc((size_t)B * P * P * sizeof(float));
        int lab[B], lab2[B];
        LoaderConfig cfg = {.batch = B, .pad_to = P, .hflip = true, .seed = 1, .rank = 0,
                            .world = 1, .prefetch = true};
        Loader l;
        CHECK(loader_init(&l, &d, &cfg) == 0, "loader_init: %s", cm_errmsg());
        LoaderConfig off = cfg;
        off.prefetch = false;
        Loader l2;
        CHECK(loader_init(&l2, &d, &off) == 0, "loader_init: %s", cm_errmsg());
        int border = 0, range = 0, differ = 0;
        for (int b = 0; b < 3; b++) {
            loader_next(&l, x, lab);
            loader_next(&l2, y, lab2);
            differ += memcmp(x, y, sizeof(float) * B * P * P) != 0 || memcmp(lab, lab2, sizeof lab);
            for (int i = 0; i < B * P * P; i++) {
                int py = i / P % P, px = i % P;
                int edge = py < 2 || py >= 30 || px < 2 || px >= 30;
                border += edge && x[i] != -1.0f;
                range += !(x[i] >= -1.0f && x[i] <= 1.0f);
            }
        }
        CHECK(border == 0 && range == 0 && differ == 0, "fashion batches: %d border pixels not "
              "-1, %d values outside [-1, 1], %d batches differ with prefetch", border, range,
              differ);
        loader_free(&l);
        loader_free(&l2);
        free(x);
        free(y);
        dataset_free(&d);
    }

    Dataset d;
    expect_fail(dataset_load(&d, "mnist", NULL, "train"), &d, "data.path", "no default",
                "mnist without a path");
    expect_fail(dataset_load(&d, "cifar100", "x", "train"), &d, "cifar100", "fashion-mnist, mnist",
                "unknown kind");
    expect_fail(dataset_load(&d, "fashion-mnist", NULL, "val"), &d, "val", "train or test",
                "unknown split");
    const char *p = tpath("rgb");
    expect_fail(dataset_load(&d, "mnist", p, "train"), &d, p, "no such file",
                "mnist from a PNG folder");
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
    snprintf(tmpdir, sizeof tmpdir, "test_loader_XXXXXX");
    CM_ASSERT(mkdtemp(tmpdir), "mkdtemp %s failed", tmpdir);
    double t0 = cm_now();

    printf("CIFAR-10 (directory and tar.gz, official layout)\n");
    test_cifar();
    printf("CIFAR-10 errors\n");
    test_cifar_errors();
    printf("PNG folders\n");
    test_folder();

    Dataset toy;
    toy_dataset(&toy);
    printf("loader: values, shuffle, flips\n");
    test_loader_epochs(&toy);
    printf("loader: padding and settings\n");
    test_loader_padding(&toy);
    printf("loader: batch sizes, wrap-around, ranks\n");
    test_loader_split(&toy);
    printf("loader: cursor and prefetch\n");
    test_loader_cursor(&toy);
    dataset_free(&toy);

    printf("Fashion-MNIST (%s) and dataset_load\n", DATASET_FASHION_MNIST_DIR);
    test_fashion();

    nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    printf("%.2f s\n", cm_now() - t0);
    return test_summary("loader");
}
