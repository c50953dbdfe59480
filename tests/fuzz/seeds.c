/* seeds.c: writes the harnesses' seed corpora, valid files only, into OUTDIR/<harness>/:
 *
 *   fuzz_seeds OUTDIR EXPERIMENTS_DIR [STAMP]
 *
 * experiment: every EXPERIMENTS_DIR/ *.ini and ablations/ *.ini, one also with --set assignments,
 * and OUTDIR/experiment.dict, a libFuzzer dictionary of the key table's names;
 * idx: small image and label files, plain and .gz; cifar: a test-split tarball (.tar.gz and plain
 * tar) and the start of a batch file (fuzz_cifar.c's mode byte first); folder: gray and RGB PNGs;
 * edit: a mask and reference PNGs for the model shapes fuzz_edit.c's first byte selects;
 * checkpoint: the tiny checkpoint of fuzz.h written by ckpt_save. STAMP, when given, is written
 * last (meson's output for the step). Nothing here is committed:
 * meson builds this program and `./run.sh fuzz` / `./run.sh sanitize` run it. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "data/cifar.h"
#include "data/image.h"
#include "fuzz.h"
#include "io/experiment.h"

static const char *out_root;

static void seed_write(const char *harness, const char *name, const void *a, size_t na,
                       const void *b, size_t nb)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_root, harness);
    CM_ASSERT(cm_mkdir_p(path) == 0, "%s", cm_errmsg());
    snprintf(path, sizeof path, "%s/%s/%s", out_root, harness, name);
    FILE *f = fopen(path, "wb");
    CM_ASSERT(f && fwrite(a, 1, na, f) == na && (nb == 0 || fwrite(b, 1, nb, f) == nb) &&
              fclose(f) == 0, "cannot write %s", path);
}

/* The whole file at path, malloc'd; *size its length. */
static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    CM_ASSERT(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    uint8_t *buf = cm_malloc((size_t)n + 1);
    CM_ASSERT(fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
    fclose(f);
    buf[n] = 0;
    *size = (size_t)n;
    return buf;
}

/* gzip of data, malloc'd. */
static uint8_t *gzip(const uint8_t *data, size_t size, size_t *out_size)
{
    const char *path = fuzz_path("seed.gz");
    gzFile gz = gzopen(path, "wb9");
    CM_ASSERT(gz && gzwrite(gz, data, (unsigned)size) == (int)size && gzclose(gz) == Z_OK, "gzip");
    uint8_t *out = slurp(path, out_size);
    fuzz_remove("seed.gz");
    return out;
}

static void seeds_experiment(const char *dir)
{
    const char *dirs[2] = {dir, "ablations"};
    for (int d = 0; d < 2; d++) {
        char path[4096];
        snprintf(path, sizeof path, d ? "%s/%s" : "%s", dir, dirs[d]);
        DIR *dp = opendir(path);
        CM_ASSERT(dp || d, "cannot open %s", path);
        if (!dp) continue;
        struct dirent *e;
        while ((e = readdir(dp))) {
            size_t len = strlen(e->d_name);
            if (len < 5 || strcmp(e->d_name + len - 4, ".ini") != 0) continue;
            char file[4096 + 256];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            size_t size;
            uint8_t *text = slurp(file, &size);
            char name[300];
            snprintf(name, sizeof name, "%s%s", d ? "ablation-" : "", e->d_name);
            seed_write("experiment", name, text, size, NULL, 0);
            free(text);
        }
        closedir(dp);
    }
    static const char sets[] = "[train]\nlr = 0.0001\n\0model.channels=16\0sweep.ct.loss=l1,l2"
                               "\0train.ema=0.999,0.9999";
    seed_write("experiment", "with-sets", sets, sizeof sets - 1, NULL, 0);

    /* libFuzzer's dictionary (-dict): every section header and key name, as text and as a --set. */
    char path[4096];
    snprintf(path, sizeof path, "%s/experiment.dict", out_root);
    FILE *f = fopen(path, "w");
    CM_ASSERT(f, "cannot write %s", path);
    int nsections, nkeys;
    const CfgSection *sections = config_sections(&nsections);
    const CfgKey *keys = config_keys(&nkeys);
    for (int i = 0; i < nsections; i++) fprintf(f, "\"[%s]\\x0A\"\n", sections[i].name);
    for (int i = 0; i < nkeys; i++)
        fprintf(f, "\"%s = \"\n\"\\x00%s.%s=\"\n\"\\x00sweep.%s.%s=\"\n", keys[i].key,
                keys[i].section, keys[i].key, keys[i].section, keys[i].key);
    fputs("\" ;\"\n\"\\x0A\"\n\",\"\n\"|\"\n", f);
    CM_ASSERT(fclose(f) == 0, "cannot write %s", path);
}

/* An unsigned-byte IDX file: magic, big-endian dims, then bytes. */
static uint8_t *idx_file(int ndim, const int *dims, size_t *size)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dims[i];
    *size = 4 + 4 * (size_t)ndim + n;
    uint8_t *b = cm_calloc(*size, 1);
    b[2] = 0x08;
    b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (uint8_t)((uint32_t)dims[i] >> (24 - 8 * k));
    for (size_t k = 0; k < n; k++) b[4 + 4 * ndim + k] = (uint8_t)(k * 37 % 251);
    return b;
}

static void seeds_idx(void)
{
    const struct { const char *name; int ndim, dims[3]; } files[] = {
        {"images", 3, {3, 4, 5}}, {"labels", 1, {6}},
    };
    for (size_t f = 0; f < CM_ARRAY_LEN(files); f++) {
        size_t size, gsize;
        uint8_t *b = idx_file(files[f].ndim, files[f].dims, &size);
        uint8_t *g = gzip(b, size, &gsize);
        char name[64];
        snprintf(name, sizeof name, "%s-ubyte", files[f].name);
        seed_write("idx", name, b, size, NULL, 0);
        snprintf(name, sizeof name, "%s-ubyte.gz", files[f].name);
        seed_write("idx", name, g, gsize, NULL, 0);
        free(b);
        free(g);
    }
}

/* A ustar header for a regular file `name` of `size` bytes. */
static void tar_header(uint8_t h[512], const char *name, long long size)
{
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    snprintf((char *)h + 100, 8, "%07o", 0644);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011llo", size);
    snprintf((char *)h + 136, 12, "%011o", 0);
    h[156] = '0';
    memcpy(h + 257, "ustar\0" "00", 8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
}

/* The test split as a tar: a readme member, then test_batch.bin (labels i % 10, gray ramps). */
static uint8_t *cifar_tar(size_t *size)
{
    static const char readme[] = "fuzz seed\n";
    const size_t batch = (size_t)CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES;
    const size_t padded = (batch + 511) / 512 * 512;
    *size = 512 + 512 + 512 + padded + 1024;
    uint8_t *t = cm_calloc(*size, 1);
    tar_header(t, CIFAR_DIR_NAME "/readme.txt", sizeof readme - 1);
    memcpy(t + 512, readme, sizeof readme - 1);
    tar_header(t + 1024, CIFAR_DIR_NAME "/test_batch.bin", (long long)batch);
    uint8_t *rec = t + 1536;
    for (int r = 0; r < CIFAR_RECORDS_PER_FILE; r++, rec += CIFAR_RECORD_BYTES) {
        rec[0] = (uint8_t)(r % 10);
        rec[1 + r % (CIFAR_RECORD_BYTES - 1)] = (uint8_t)r;
    }
    return t;
}

static void seeds_cifar(void)
{
    size_t size, gsize;
    uint8_t *t = cifar_tar(&size);
    uint8_t *g = gzip(t, size, &gsize);
    seed_write("cifar", "test.tar.gz", "\x00", 1, g, gsize);
    /* The plain tar is 30 MB; its first headers and records are what a mutation reaches. */
    seed_write("cifar", "test-head.tar", "\x00", 1, t, 1536 + 4 * CIFAR_RECORD_BYTES);
    seed_write("cifar", "test_batch-head.bin", "\x01", 1, t + 1536, 4 * CIFAR_RECORD_BYTES);
    free(t);
    free(g);
}

/* A PNG of w x h x c written by image_write_png, malloc'd. */
static uint8_t *png_file(int w, int h, int c, int pattern, size_t *size)
{
    uint8_t *pix = cm_malloc((size_t)w * h * c);
    for (int k = 0; k < w * h * c; k++)
        pix[k] = (uint8_t)(pattern == 0 ? k * 29 : (k / c) % w >= w / 2 ? 255 : 0);
    const char *path = fuzz_path("seed.png");
    CM_ASSERT(image_write_png(path, pix, w, h, c) == 0, "%s", cm_errmsg());
    free(pix);
    uint8_t *png = slurp(path, size);
    fuzz_remove("seed.png");
    return png;
}

static void seeds_png(void)
{
    const struct { const char *name; int w, h, c, pattern; uint8_t mode; } pngs[] = {
        /* fuzz_edit's mode: bit 0 RGB, bits 1-2 side (8, 16, 28, 32), bit 3 factor 4 */
        {"gray-28-mask.png", 28, 28, 1, 1, 2 << 1},
        {"gray-28.png", 28, 28, 1, 0, 2 << 1},
        {"rgb-32.png", 32, 32, 3, 0, 1 | 3 << 1},
        {"rgb-16-lowres.png", 16, 16, 3, 0, 1 | 3 << 1},
        {"gray-32-for-rgb.png", 32, 32, 1, 0, 1 | 3 << 1},
        {"gray-2-lowres-x4.png", 2, 2, 1, 0, 8},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(pngs); i++) {
        size_t size;
        uint8_t *png = png_file(pngs[i].w, pngs[i].h, pngs[i].c, pngs[i].pattern, &size);
        seed_write("edit", pngs[i].name, &pngs[i].mode, 1, png, size);
        if (i < 3) seed_write("folder", pngs[i].name, png, size, NULL, 0);
        free(png);
    }
}

static void seeds_checkpoint(void)
{
    FuzzCkpt f;
    fuzz_ckpt_init(&f);
    params_randomize(&f.ps, f.w[0], 1);
    params_randomize(&f.ps, f.w[1], 2);
    f.st.step = 1;
    char path[4096];
    CM_ASSERT(ckpt_save(fuzz_path("ckpt"), &f.st, path, sizeof path) == 0, "%s", cm_errmsg());
    size_t size;
    uint8_t *b = slurp(path, &size);
    seed_write("checkpoint", "step_00000001.h5", b, size, NULL, 0);
    free(b);
    fuzz_remove("ckpt");
    fuzz_ckpt_free(&f);
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: fuzz_seeds OUTDIR EXPERIMENTS_DIR [STAMP]\n");
        return 2;
    }
    out_root = argv[1];
    seeds_experiment(argv[2]);
    seeds_idx();
    seeds_cifar();
    seeds_png();
    seeds_checkpoint();
    if (argc == 4) {
        FILE *f = fopen(argv[3], "w");
        CM_ASSERT(f && fprintf(f, "%s\n", out_root) > 0 && fclose(f) == 0, "cannot write %s", argv[3]);
    }
    printf("fuzz_seeds: wrote the seed corpora into %s\n", out_root);
    return 0;
}
