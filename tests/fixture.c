#include "fixture.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <zlib.h>

#include "autograd/rng.h"
#include "common.h"
#include "data/cifar.h"
#include "data/image.h"
#include "nn/unet.h"

int test_passed, test_failed;

int test_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : (test_passed ? 0 : 1);
}

void fixture_open(Fixture *f, const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CM_ASSERT(f->file >= 0, "fixture %s: cannot open (did tests/torch/ run?)", path);
}

void fixture_close(Fixture *f) { H5Fclose(f->file); }

bool fixture_exists(Fixture *f, const char *name)
{
    return H5Lexists(f->file, name, H5P_DEFAULT) > 0;
}

float *fixture_read(Fixture *f, const char *name, int *ndim, int *shape)
{
    hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
    CM_ASSERT(d >= 0, "fixture %s: no dataset %s", f->path, name);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8];
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    CM_ASSERT(nd >= 0 && nd <= 4, "fixture %s: %s has %d dims", f->path, name, nd);
    size_t n = 1;
    for (int i = 0; i < nd; i++) { n *= dims[i]; if (shape) shape[i] = (int)dims[i]; }
    if (ndim) *ndim = nd;
    float *buf = cm_malloc(n * sizeof(float));
    CM_ASSERT(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0,
              "fixture %s: cannot read %s", f->path, name);
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

static hid_t open_attr(Fixture *f, const char *obj, const char *attr)
{
    if (H5Aexists_by_name(f->file, obj, attr, H5P_DEFAULT) <= 0) return -1;
    return H5Aopen_by_name(f->file, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
}

static int attr_count(hid_t a)
{
    hid_t sp = H5Aget_space(a);
    int n = (int)H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    return n;
}

long fixture_attr_int(Fixture *f, const char *obj, const char *attr, long dflt)
{
    hid_t a = open_attr(f, obj, attr);
    if (a < 0) return dflt;
    long long v = 0;
    H5Aread(a, H5T_NATIVE_LLONG, &v);
    H5Aclose(a);
    return (long)v;
}

long fixture_file_attr_int(const char *path, const char *obj, const char *attr, long dflt)
{
    Fixture f;
    fixture_open(&f, path);
    long v = fixture_attr_int(&f, obj, attr, dflt);
    fixture_close(&f);
    return v;
}

double fixture_attr_double(Fixture *f, const char *obj, const char *attr, double dflt)
{
    hid_t a = open_attr(f, obj, attr);
    if (a < 0) return dflt;
    double v = 0;
    H5Aread(a, H5T_NATIVE_DOUBLE, &v);
    H5Aclose(a);
    return v;
}

int fixture_attr_ints(Fixture *f, const char *obj, const char *attr, int *out, int max)
{
    hid_t a = open_attr(f, obj, attr);
    if (a < 0) return 0;
    int n = attr_count(a);
    CM_ASSERT(n <= max, "fixture %s: %s@%s has %d values (max %d)", f->path, obj, attr, n, max);
    H5Aread(a, H5T_NATIVE_INT, out);
    H5Aclose(a);
    return n;
}

int fixture_attr_floats(Fixture *f, const char *obj, const char *attr, float *out, int max)
{
    hid_t a = open_attr(f, obj, attr);
    if (a < 0) return 0;
    int n = attr_count(a);
    CM_ASSERT(n <= max, "fixture %s: %s@%s has %d values (max %d)", f->path, obj, attr, n, max);
    H5Aread(a, H5T_NATIVE_FLOAT, out);
    H5Aclose(a);
    return n;
}

bool fixture_attr_str(Fixture *f, const char *obj, const char *attr, char *buf, size_t len)
{
    hid_t a = open_attr(f, obj, attr);
    if (a < 0) return false;
    hid_t t = H5Aget_type(a);
    bool ok = false;
    if (H5Tis_variable_str(t) > 0) {
        char *s = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));   /* h5py writes UTF-8; a cset mismatch fails the read */
        if (H5Aread(a, mt, &s) >= 0 && s) {
            snprintf(buf, len, "%s", s);
            H5free_memory(s);
            ok = true;
        }
        H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(t);
        char *s = cm_calloc(sz + 1, 1);
        if (H5Aread(a, t, s) >= 0) { snprintf(buf, len, "%s", s); ok = true; }
        free(s);
    }
    H5Tclose(t);
    H5Aclose(a);
    return ok;
}

typedef struct { char **names; int n, cap; } NameList;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    NameList *l = data;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->names = realloc(l->names, sizeof(char *) * (size_t)l->cap);
    }
    l->names[l->n++] = strdup(name);
    return 0;
}

int fixture_list(Fixture *f, const char *group, char ***names)
{
    NameList l = {0};
    hid_t g = H5Gopen2(f->file, group, H5P_DEFAULT);
    CM_ASSERT(g >= 0, "fixture %s: no group %s", f->path, group);
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect, &l);
    H5Gclose(g);
    *names = l.names;
    return l.n;
}

double rel_error(const float *a, const float *b, size_t n, double floor)
{
    double err = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > err || isnan(d)) err = isnan(d) ? INFINITY : d;
        ref = fmax(ref, fabs((double)b[i]));
    }
    return err / fmax(ref, floor);
}

/* The U-Net config a tests/torch/ script stored as attributes of obj (tools/cmlab_torch.py names). */
void fixture_unet_config(Fixture *f, const char *obj, UNetConfig *g)
{
    char emb[32] = "";
    *g = unet_config_default();
    g->img_channels = (int)fixture_attr_int(f, obj, "img_channels", -1);
    g->img_h = (int)fixture_attr_int(f, obj, "img_h", -1);
    g->img_w = (int)fixture_attr_int(f, obj, "img_w", -1);
    g->base_channels = (int)fixture_attr_int(f, obj, "base_channels", -1);
    g->channel_mult_count = fixture_attr_ints(f, obj, "channel_mult", g->channel_mult, UNET_MAX_LEVELS);
    g->num_blocks = (int)fixture_attr_int(f, obj, "num_blocks", -1);
    g->attn_resolutions_count = fixture_attr_ints(f, obj, "attn_resolutions", g->attn_resolutions, UNET_MAX_ATTN);
    g->mid_attn = fixture_attr_int(f, obj, "mid_attn", -1) == 1;
    g->attn_heads = (int)fixture_attr_int(f, obj, "attn_heads", -1);
    g->dropout = (float)fixture_attr_double(f, obj, "dropout", -1);
    fixture_attr_str(f, obj, "emb_type", emb, sizeof emb);
    g->emb_type = strcmp(emb, "fourier") == 0 ? UNET_EMB_FOURIER : UNET_EMB_POSITIONAL;
    g->fourier_scale = (float)fixture_attr_double(f, obj, "fourier_scale", 16.0);
    g->skip_scale = (float)fixture_attr_double(f, obj, "skip_scale", -1);
    g->two_times = fixture_attr_int(f, obj, "two_times", -1) == 1;
    g->seed = (uint64_t)fixture_attr_int(f, obj, "seed", 0);
}

char *fixture_read_file(const char *path, size_t *len)
{
    char *text = NULL;
    return cm_read_file(path, SIZE_MAX, &text, len) == 0 ? text : NULL;
}

/* Fills w from the datasets <dir>/<name>, one per parameter, checking names and shapes in both
 * directions (a missing, extra or reshaped weight is a failed CHECK naming it). */
void fixture_load_weights(Fixture *f, const char *dir, const ParamSet *ps, float *w)
{
    char path[512];
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        snprintf(path, sizeof path, "%s/%s", dir, p->name);
        bool present = fixture_exists(f, path);
        CHECK(present, "%s: cmlab parameter %s is not in the fixture", dir, p->name);
        if (!present) continue;
        int ndim, shape[4];
        float *v = fixture_read(f, path, &ndim, shape);
        bool same = p->ndim == ndim;
        for (int d = 0; same && d < ndim; d++) same = p->shape[d] == shape[d];
        CHECK(same, "%s: %s has another shape in the fixture", dir, p->name);
        if (same) memcpy(w + p->offset, v, p->n * sizeof(float));
        free(v);
    }
    char **names;
    int n = fixture_list(f, dir, &names);
    for (int i = 0; i < n; i++) {
        CHECK(params_find(ps, names[i]) >= 0, "%s: fixture weight %s is not a cmlab parameter", dir, names[i]);
        free(names[i]);
    }
    free(names);
    CHECK(n == ps->count, "%s: %d fixture weights, %d cmlab parameters", dir, n, ps->count);
}

int fixture_run(char *const *argv, const char *out_path, const char *err_path, const char *env)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(out_path, "a", stdout) || !freopen(err_path ? err_path : out_path, err_path ? "w" : "a", stderr))
            _exit(127);
        if (env) putenv((char *)env);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The start of file path into buf[len] (NUL-terminated; empty if unreadable), then removes it. */
static void read_back(const char *path, char *buf, size_t len)
{
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        n = fread(buf, 1, len - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    remove(path);
}

FixtureRun fixture_run_capture(char *const *argv)
{
    FixtureRun r = {0};
    char out[64], err[64];
    snprintf(out, sizeof out, "/tmp/fixture_run_%d.out", (int)getpid());
    snprintf(err, sizeof err, "/tmp/fixture_run_%d.err", (int)getpid());
    remove(out);
    r.code = fixture_run(argv, out, err, NULL);
    read_back(out, r.out, sizeof r.out);
    read_back(err, r.err, sizeof r.err);
    return r;
}

void fixture_write_rectangles(const char *dir, int n, int side)
{
    float *u = cm_malloc(4 * (size_t)n * sizeof(float));
    uint8_t *pix = cm_malloc((size_t)side * side);
    rng_uniform(&(Rng){.seed = 7, .stream = 1}, u, n, 0, 4);
    char path[512];
    for (int i = 0; i < n; i++) {
        const float *r = u + 4 * i;
        int w = 4 + (int)(r[0] * 7), h = 4 + (int)(r[1] * 7);
        int x0 = (int)(r[2] * (side - w + 1)), y0 = (int)(r[3] * (side - h + 1));
        for (int y = 0; y < side; y++)
            for (int x = 0; x < side; x++)
                pix[y * side + x] = (x >= x0 && x < x0 + w && y >= y0 && y < y0 + h) ? 255 : 0;
        snprintf(path, sizeof path, "%s/%04d.png", dir, i);
        CM_ASSERT(image_write_png(path, pix, side, side, 1) == 0, "%s", cm_errmsg());
    }
    free(u), free(pix);
}

double fixture_worst_param_error(Fixture *f, const char *dir, const ParamSet *ps, const float *got, double floor,
                                 const char **worst_name)
{
    double worst = 0;
    char path[512];
    *worst_name = "";
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        snprintf(path, sizeof path, "%s/%s", dir, p->name);
        float *want = fixture_read(f, path, NULL, NULL);
        double e = rel_error(got + p->offset, want, p->n, floor);
        free(want);
        if (e > worst || isnan(e)) {
            worst = isnan(e) ? INFINITY : e;
            *worst_name = p->name;
        }
    }
    return worst;
}

void fixture_be32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

const char *const fixture_cifar_names[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                            "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

uint8_t fixture_cifar_label(int f, int r) { return (uint8_t)((r * 7 + f * 3) % 10); }

uint8_t fixture_cifar_pixel(int f, int r, int p, int y, int x)
{
    return (uint8_t)(r * 13 + f * 101 + p * 71 + y * 5 + x * 3 + (r >> 8));
}

uint8_t *fixture_cifar_batch(int f)
{
    enum { PLANE = CIFAR_SIDE * CIFAR_SIDE };
    uint8_t *b = cm_malloc((size_t)CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES);
    for (int r = 0; r < CIFAR_RECORDS_PER_FILE; r++) {
        uint8_t *rec = b + (size_t)r * CIFAR_RECORD_BYTES;
        rec[0] = fixture_cifar_label(f, r);
        for (int p = 0; p < 3; p++)
            for (int y = 0; y < CIFAR_SIDE; y++)
                for (int x = 0; x < CIFAR_SIDE; x++)
                    rec[1 + p * PLANE + y * CIFAR_SIDE + x] = fixture_cifar_pixel(f, r, p, y, x);
    }
    return b;
}

void fixture_tar_open(FixtureTar *t, const char *path, const char *mode)
{
    t->gz = gzopen(path, mode);
    CM_ASSERT(t->gz, "cannot create %s", path);
    gzbuffer(t->gz, 1 << 17);
    t->written = 0;
}

static void tar_write(FixtureTar *t, const void *buf, size_t len)
{
    CM_ASSERT(len == 0 || gzwrite(t->gz, buf, (unsigned)len) == (int)len, "gzwrite");
    t->written += (long long)len;
}

void fixture_tar_add(FixtureTar *t, const char *name, const uint8_t *data, size_t size, char type)
{
    uint8_t h[512] = {0};
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000644", 8);
    memcpy(h + 108, "0001750", 8);
    memcpy(h + 116, "0001750", 8);
    CM_ASSERT(size < (size_t)1 << 32, "tar member %s too large for this writer", name);
    snprintf((char *)h + 124, 12, "%011o", (unsigned)size);
    snprintf((char *)h + 136, 12, "%011o", 1244000000u);
    h[156] = (uint8_t)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memcpy(h + 265, "kriz", 5);
    memcpy(h + 297, "kriz", 5);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++) sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
    static const uint8_t zeros[512];
    tar_write(t, h, 512);
    tar_write(t, data, size);
    tar_write(t, zeros, (512 - size % 512) % 512);
}

void fixture_tar_close(FixtureTar *t)
{
    static const uint8_t zeros[512];
    tar_write(t, zeros, 512);
    tar_write(t, zeros, 512);
    while (t->written % 10240) tar_write(t, zeros, 512);
    CM_ASSERT(gzclose(t->gz) == Z_OK, "gzclose");
}

static void tar_add_text(FixtureTar *t, const char *name, const char *text)
{
    fixture_tar_add(t, name, (const uint8_t *)text, strlen(text), '0');
}

void fixture_write_cifar10(const char *tgz_path, const char *dir)
{
    char path[600];
    if (dir) {
        snprintf(path, sizeof path, "%s/%s", dir, CIFAR_DIR_NAME);
        CM_ASSERT(mkdir(path, 0700) == 0, "mkdir %s", path);
    }
    FixtureTar t;
    fixture_tar_open(&t, tgz_path, "wb1");
    fixture_tar_add(&t, CIFAR_DIR_NAME "/", NULL, 0, '5');
    static const int order[] = {0, -1, 2, 3, 5, -2, 4, 1};
    for (size_t k = 0; k < CM_ARRAY_LEN(order); k++) {
        int f = order[k];
        if (f == -1) {
            tar_add_text(&t, CIFAR_DIR_NAME "/batches.meta.txt", "airplane\nautomobile\nbird\n"
                         "cat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
        } else if (f == -2) {
            tar_add_text(&t, CIFAR_DIR_NAME "/readme.html", "<meta HTTP-EQUIV=\"REFRESH\" "
                         "content=\"0; url=http://www.cs.toronto.edu/~kriz/cifar.html\">\n");
        } else {
            uint8_t *b = fixture_cifar_batch(f);
            size_t len = (size_t)CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES;
            char name[256];
            snprintf(name, sizeof name, "%s/%s", CIFAR_DIR_NAME, fixture_cifar_names[f]);
            if (dir) {
                snprintf(path, sizeof path, "%s/%s", dir, name);
                FILE *fp = fopen(path, "wb");
                CM_ASSERT(fp && fwrite(b, 1, len, fp) == len && fclose(fp) == 0, "cannot write %s", path);
            }
            fixture_tar_add(&t, name, b, len, '0');
            free(b);
        }
    }
    fixture_tar_close(&t);
}
