/* test_eval.c FRECHET.h5: the pieces of src/eval/eval.c against scipy, numpy and hashlib
 * (fixtures written by tests/torch/frechet.py) and against analytic results:
 *   - the eigen-based square root of symmetric PSD matrices equals scipy.linalg.sqrtm (full rank,
 *     ill-conditioned, rank-deficient, zero);
 *   - the Frechet distance equals EDM fid.py's formula with scipy's sqrtm(S1 S2); FD of a set
 *     with itself is 0; with diagonal covariances it is |dmu|^2 + sum (sqrt a - sqrt b)^2;
 *   - mean and unbiased covariance equal numpy's (np.cov), also for features far from zero;
 *   - SHA-256 equals hashlib on messages around the padding boundaries; the weight hash follows
 *     the rule eval.h states (recomputed with hashlib from the same tensors);
 *   - eval.json: records round-trip through eval_json_append / eval_json_read, and a malformed
 *     file is refused with its line;
 *   - ckpt_stamp: the stamped copy verifies, loads the same weights, holds the attributes; a
 *     damaged checkpoint is refused and left byte for byte as it was.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "fixture.h"
#include "io/checkpoint.h"
#include "eval/eval.h"

/* A float64 dataset of the fixture, malloc'd; *n its element count. */
static double *read_f64(Fixture *f, const char *name, size_t *n)
{
    hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
    CM_ASSERT(d >= 0, "fixture %s: no dataset %s", f->path, name);
    hid_t sp = H5Dget_space(d);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    double *buf = cm_malloc(*n * sizeof(double));
    CM_ASSERT(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0, "cannot read %s", name);
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

static double max_abs(const double *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static double rel_diff(const double *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m / fmax(max_abs(b, n), 1e-300);
}

static void test_sqrtm(Fixture *f)
{
    char **names;
    int count = fixture_list(f, "/sqrtm", &names);
    CHECK(count >= 4, "only %d sqrtm cases", count);
    for (int i = 0; i < count; i++) {
        char p[128];
        size_t n, m;
        snprintf(p, sizeof p, "/sqrtm/%s/a", names[i]);
        double *a = read_f64(f, p, &n);
        snprintf(p, sizeof p, "/sqrtm/%s/sqrt", names[i]);
        double *want = read_f64(f, p, &m);
        int d = (int)lround(sqrt((double)n));
        double *got = cm_malloc(n * sizeof(double)), *sq = cm_malloc(n * sizeof(double));
        CHECK(eval_sqrtm_psd(d, a, got) == 0, "%s: %s", names[i], cm_errmsg());
        /* Rank-deficient: sqrtm of a singular matrix is only accurate to about sqrt(eps) there,
         * in scipy as much as here; then the square of ours must still give a back. */
        bool singular = strstr(names[i], "rank") || strstr(names[i], "zero");
        double e = max_abs(want, m) == 0 ? max_abs(got, n) : rel_diff(got, want, n);
        double tol = singular ? 1e-6 : 1e-9;
        for (int r = 0; r < d; r++)
            for (int c = 0; c < d; c++) {
                double s = 0;
                for (int k = 0; k < d; k++) s += got[r * d + k] * got[k * d + c];
                sq[r * d + c] = s;
            }
        double back = max_abs(a, n) == 0 ? max_abs(sq, n) : rel_diff(sq, a, n);
        printf("sqrtm %-16s d %3d  vs scipy %.1e  (sqrt)^2 vs a %.1e\n", names[i], d, e, back);
        CHECK(e <= tol, "%s: sqrt differs from scipy's sqrtm by %.2e (tol %.0e)", names[i], e, tol);
        CHECK(back <= 1e-10, "%s: the square of the root differs from a by %.2e", names[i], back);
        free(a);
        free(want);
        free(got);
        free(sq);
        free(names[i]);
    }
    free(names);
}

static void test_fd(Fixture *f)
{
    char **names;
    int count = fixture_list(f, "/fd", &names);
    CHECK(count >= 3, "only %d fd cases", count);
    for (int i = 0; i < count; i++) {
        char p[128];
        size_t n;
        FdStats a = {0}, b = {0};
        snprintf(p, sizeof p, "/fd/%s/mu1", names[i]);
        a.mu = read_f64(f, p, &n);
        a.d = b.d = (int)n;
        snprintf(p, sizeof p, "/fd/%s/s1", names[i]);
        a.sigma = read_f64(f, p, &n);
        snprintf(p, sizeof p, "/fd/%s/mu2", names[i]);
        b.mu = read_f64(f, p, &n);
        snprintf(p, sizeof p, "/fd/%s/s2", names[i]);
        b.sigma = read_f64(f, p, &n);
        snprintf(p, sizeof p, "/fd/%s", names[i]);
        double want = fixture_attr_double(f, p, "fd", NAN), got = NAN, self = NAN;
        CHECK(fd_distance(&a, &b, &got) == 0, "%s: %s", names[i], cm_errmsg());
        CHECK(fd_distance(&a, &a, &self) == 0, "%s: %s", names[i], cm_errmsg());
        double e = fabs(got - want) / fabs(want);
        printf("fd    %-16s d %3d  %.10g vs fid.py %.10g (rel %.1e); FD(a, a) %.1e\n", names[i], a.d, got, want, e,
               self);
        CHECK(e < 1e-7, "%s: FD %.10g, fid.py's formula %.10g", names[i], got, want);
        double tr = 0;
        for (int k = 0; k < a.d; k++) tr += a.sigma[k * a.d + k];
        /* A rank-deficient covariance leaves eigenvalues of rounding size whose square roots,
         * ~1e-8 each, do not cancel: FD(a, a) is then ~1e-8 of the trace, as with scipy. */
        CHECK(fabs(self) < 1e-7 * tr, "%s: FD of a set with itself is %.3e (trace %.3g)", names[i], self, tr);
        fd_stats_free(&a);
        fd_stats_free(&b);
        free(names[i]);
    }
    free(names);

    /* Diagonal covariances: FD = |dmu|^2 + sum (sqrt(a_k) - sqrt(b_k))^2 (analytic). */
    enum { D = 6 };
    FdStats a = {D, 10, cm_calloc(D, sizeof(double)), cm_calloc(D * D, sizeof(double))};
    FdStats b = {D, 10, cm_calloc(D, sizeof(double)), cm_calloc(D * D, sizeof(double))};
    double want = 0;
    for (int k = 0; k < D; k++) {
        a.mu[k] = 0.5 * k;
        b.mu[k] = -0.25 * k;
        a.sigma[k * D + k] = 1.0 + k;
        b.sigma[k * D + k] = 4.0 / (1.0 + k);
        want += pow(a.mu[k] - b.mu[k], 2) + pow(sqrt(a.sigma[k * D + k]) - sqrt(b.sigma[k * D + k]), 2);
    }
    double got = NAN;
    CHECK(fd_distance(&a, &b, &got) == 0 && fabs(got - want) < 1e-12 * want, "diagonal FD %.15g, analytic %.15g",
          got, want);
    fd_stats_free(&a);
    fd_stats_free(&b);
}

static void test_stats(Fixture *f)
{
    char **names;
    int count = fixture_list(f, "/stats", &names);
    for (int i = 0; i < count; i++) {
        char p[128];
        int nd, shape[4];
        size_t n;
        snprintf(p, sizeof p, "/stats/%s/feat", names[i]);
        float *feat = fixture_read(f, p, &nd, shape);
        snprintf(p, sizeof p, "/stats/%s/mu", names[i]);
        double *mu = read_f64(f, p, &n);
        snprintf(p, sizeof p, "/stats/%s/sigma", names[i]);
        double *sigma = read_f64(f, p, &n);
        FdStats s;
        fd_stats_compute(feat, shape[0], shape[1], &s);
        double em = rel_diff(s.mu, mu, (size_t)shape[1]), es = rel_diff(s.sigma, sigma, n);
        printf("stats %-16s n %d d %d  mean %.1e  covariance %.1e (vs numpy)\n", names[i], shape[0], shape[1], em, es);
        CHECK(em < 1e-12 && es < 1e-10, "%s: mean differs by %.2e, covariance by %.2e", names[i], em, es);
        fd_stats_free(&s);
        free(feat);
        free(mu);
        free(sigma);
        free(names[i]);
    }
    free(names);
}

/* Whether /proc/cpuinfo's flags name `flag` (a whole word). */
static bool cpuinfo_has(const char *flag)
{
    FILE *fp = fopen("/proc/cpuinfo", "r");
    char line[8192];
    bool has = false;
    size_t n = strlen(flag);
    while (fp && !has && fgets(line, sizeof line, fp))
        if (strncmp(line, "flags", 5) == 0)
            for (char *q = strstr(line, flag); q && !has; q = strstr(q + 1, flag))
                has = q[-1] == ' ' && (q[n] == ' ' || q[n] == '\n');
    if (fp) fclose(fp);
    return has;
}

/* hashlib's digests, with the plain C compression function and then with the one the CPU picks
 * (its SHA extensions where /proc/cpuinfo names sha_ni: that one must then be picked). */
static void test_sha256(Fixture *f)
{
    for (int kernel = 0; kernel < 2; kernel++) {
        sha256_kernel = kernel == 0 ? 0 : -1;
        for (int i = 0;; i++) {
            char name[32], hex[128] = "", got[65];
            snprintf(name, sizeof name, "hex%d", i);
            if (!fixture_attr_str(f, "/sha256", name, hex, sizeof hex)) {
                CHECK(i >= 7, "only %d SHA-256 cases", i);
                break;
            }
            snprintf(name, sizeof name, "len%d", i);
            long len = fixture_attr_int(f, "/sha256", name, -1);
            snprintf(name, sizeof name, "/sha256/data%d", i);
            hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
            unsigned char *buf = cm_malloc((size_t)len + 1);
            CM_ASSERT(d >= 0 && H5Dread(d, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0, "%s", name);
            H5Dclose(d);
            Sha256 s;
            sha256_init(&s);
            /* In two pieces, so the buffering across updates is exercised too. */
            sha256_update(&s, buf, (size_t)len / 3);
            sha256_update(&s, buf + len / 3, (size_t)(len - len / 3));
            sha256_final(&s, got);
            CHECK(strcmp(got, hex) == 0, "SHA-256 of %ld bytes (kernel %d): %s, hashlib %s", len, sha256_kernel, got, hex);
            free(buf);
        }
    }
    bool shani = cpuinfo_has("sha_ni");
    printf("sha256: kernel %s (/proc/cpuinfo %s sha_ni)\n", sha256_kernel ? "SHA extensions" : "plain C",
           shani ? "names" : "does not name");
    CHECK(sha256_kernel == (int)shani, "sha256 picked kernel %d where /proc/cpuinfo %s sha_ni", sha256_kernel,
          shani ? "names" : "does not name");
    /* The weight hash: a ParamSet of the fixture's tensors, registered in the fixture's order. */
    long count = fixture_attr_int(f, "/weights", "count", 0);
    ParamSet ps;
    params_init(&ps);
    float *vals[8];
    for (long i = 0; i < count; i++) {
        char p[32], nm[96];
        int nd, shape[4];
        snprintf(p, sizeof p, "/weights/p%ld", i);
        vals[i] = fixture_read(f, p, &nd, shape);
        fixture_attr_str(f, p, "name", nm, sizeof nm);
        params_add(&ps, nm, nd, shape, PARAM_INIT_ZERO, 0);
    }
    float *w = params_buffer(&ps);
    for (long i = 0; i < count; i++) memcpy(w + ps.items[i].offset, vals[i], ps.items[i].n * sizeof(float));
    char want[128] = "", got[65];
    fixture_attr_str(f, "/weights", "hex", want, sizeof want);
    eval_weights_hash(&ps, w, got);
    CHECK(count == 5 && strcmp(got, want) == 0, "weight hash %s, hashlib %s", got, want);
    w[ps.items[0].offset] += 1e-7f;   /* one weight changes the hash */
    char moved[65];
    eval_weights_hash(&ps, w, moved);
    CHECK(strcmp(moved, got) != 0, "the weight hash does not see a changed weight");
    printf("sha256: hashlib cases and the weight hash agree (%.16s...)\n", got);
    for (long i = 0; i < count; i++) free(vals[i]);
    free(w);
    params_free(&ps);
}

static void test_json(void)
{
    const char *path = "eval_test/eval.json";
    cm_mkdir_p("eval_test");
    remove(path);
    EvalRecord r[2];
    memset(r, 0, sizeof r);
    snprintf(r[0].metric, sizeof r[0].metric, "fd");
    r[0].value = 12.3456789012;
    snprintf(r[0].checkpoint, sizeof r[0].checkpoint, "runs/a \"quoted\"\\path/ckpt/step_00000010.h5");
    r[0].step = 10;
    r[0].nfe = 35;
    r[0].n = 10000;
    snprintf(r[0].times, sizeof r[0].times, "80,24.4,0.002,0");
    r[1] = r[0];
    r[1].value = NAN;
    r[1].nfe = 2;
    snprintf(r[1].sampler, sizeof r[1].sampler, "consistency");
    CHECK(eval_json_append(path, &r[0], 1) == 0 && eval_json_append(path, &r[1], 1) == 0, "%s", cm_errmsg());
    EvalRecord *back = NULL;
    int n = eval_json_read(path, &back);
    CHECK(n == 2, "eval.json holds %d records, want 2 (%s)", n, n < 0 ? cm_errmsg() : "");
    if (n == 2) {
        CHECK(strcmp(back[0].checkpoint, r[0].checkpoint) == 0, "checkpoint '%s' came back as '%s'",
              r[0].checkpoint, back[0].checkpoint);
        CHECK(fabs(back[0].value - r[0].value) < 1e-10 * r[0].value && back[0].step == 10 && back[0].nfe == 35 &&
              back[0].n == 10000 && !strcmp(back[0].times, r[0].times), "record 0 did not round-trip");
        CHECK(isnan(back[1].value) && back[1].nfe == 2 && !strcmp(back[1].sampler, "consistency"),
              "record 1 (a null value) did not round-trip");
    }
    free(back);
    FILE *f = fopen(path, "a");
    fprintf(f, "{\"metric\": \"fd\", \"value\": }\n");
    fclose(f);
    n = eval_json_read(path, &back);
    CHECK(n == -1 && strstr(cm_errmsg(), "eval.json:5"), "a malformed line gives %d (%s)", n, cm_errmsg());
    free(back);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = cm_malloc(*n + 1);
    *n = fread(b, 1, *n, f);
    fclose(f);
    return b;
}

static void test_stamp(void)
{
    ParamSet ps;
    params_init(&ps);
    params_add(&ps, "a.weight", 2, SHAPE(3, 4), PARAM_INIT_UNIFORM_FAN_IN, 1);
    params_add(&ps, "a.bias", 1, SHAPE(3), PARAM_INIT_UNIFORM_FAN_IN, 1);
    float *w = params_buffer(&ps), *back = params_buffer(&ps);
    params_randomize(&ps, w, 7);
    CkptState s = {.ps = &ps, .step = 10, .method = "edm", .config = "[experiment]\n", .world_size = 1};
    ckpt_add_weights(&s, "online", w);
    char path[700];
    CHECK(ckpt_save("eval_test/ckpt", &s, path, sizeof path) == 0, "%s", cm_errmsg());
    CkptAttr attrs[] = {{"metric", "fd", 0, false}, {"value", NULL, 3.25, false}, {"nfe", NULL, 35, true}};
    CHECK(ckpt_stamp(path, "/eval/fd.heun.nfe35", attrs, 3) == 0, "stamp: %s", cm_errmsg());
    attrs[1].number = 4.5;   /* the same record again replaces the group */
    CHECK(ckpt_stamp(path, "/eval/fd.heun.nfe35", attrs, 3) == 0, "second stamp: %s", cm_errmsg());
    CHECK(ckpt_verify(path) == 0, "the stamped checkpoint does not verify: %s", cm_errmsg());
    CkptState l = {.ps = &ps};
    ckpt_add_weights(&l, "online", back);
    CHECK(ckpt_load(path, &l) == 0 && memcmp(w, back, ps.total * sizeof(float)) == 0 && l.step == 10,
          "the stamped checkpoint does not load the same weights: %s", cm_errmsg());
    free(l.loaded_config);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    double v = 0;
    long long nfe = 0;
    hid_t a = H5Aopen_by_name(f, "/eval/fd.heun.nfe35", "value", H5P_DEFAULT, H5P_DEFAULT);
    hid_t b = H5Aopen_by_name(f, "/eval/fd.heun.nfe35", "nfe", H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && b >= 0 && H5Aread(a, H5T_NATIVE_DOUBLE, &v) >= 0 && H5Aread(b, H5T_NATIVE_LLONG, &nfe) >= 0 &&
          v == 4.5 && nfe == 35, "/eval/fd.heun.nfe35: value %g, nfe %lld", v, nfe);
    H5Aclose(a);
    H5Aclose(b);
    H5Fclose(f);
    struct stat st;
    CHECK(stat("eval_test/ckpt/step_00000010.h5.tmp", &st) != 0, "a stamp left its .tmp behind");

    /* A damaged (truncated) checkpoint: refused, and not a byte changes. */
    size_t n, m;
    unsigned char *orig = slurp(path, &n);
    n = n * 3 / 4;
    FILE *o = fopen(path, "wb");
    fwrite(orig, 1, n, o);
    fclose(o);
    int rc = ckpt_stamp(path, "/eval/x", attrs, 3);
    unsigned char *after = slurp(path, &m);
    CHECK(rc == -1 && strstr(cm_errmsg(), path), "stamping a damaged file gives %d (%s)", rc, cm_errmsg());
    CHECK(m == n && memcmp(orig, after, n) == 0, "a refused stamp changed the file");
    free(orig);
    free(after);
    free(w);
    free(back);
    params_free(&ps);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FRECHET.h5 (written by tests/torch/frechet.py)\n", argv[0]);
        return CM_EXIT_INPUT;
    }
    cm_set_threads(2);
    Fixture f;
    fixture_open(&f, argv[1]);
    test_sqrtm(&f);
    test_fd(&f);
    test_stats(&f);
    test_sha256(&f);
    fixture_close(&f);
    test_json();
    test_stamp();
    return test_summary("eval");
}
