/* test_ablate.c CMLAB: evaluation and ablations end to end through the `cmlab` binary, on a
 * small synthetic labelled data set (IDX files written here, so the test takes seconds):
 *   - method = classifier learns it (test accuracy well above chance), and `cmlab eval` of the
 *     classifier checkpoint records that accuracy;
 *   - `cmlab eval --baselines`: the test split is close to the training split, uniform noise and
 *     the test images with shuffled pixels are far from it;
 *   - `cmlab eval` of an EDM checkpoint: one record per NFE in eval.json, the same records
 *     stamped under /eval of the checkpoint, which still verifies and holds the same weights;
 *   - bad input exits 2 with the file named and changes nothing;
 *   - the reference statistics of two folder data sets of one kind and size differ, and so do
 *     those of one folder before and after its files change (the cache is keyed by the data);
 *     unchanged files are not read again (their hash is memoised under their signature), and a
 *     file rewritten in place at its size with its modification time set back is read again;
 *   - `cmlab ablate` of a two-variant CT sweep writes results.csv, results.md and report.html (each
 *     variant's /eval records hold eval.json's values), and
 *     a second run trains and evaluates nothing again; --only runs one variant and reports both;
 *     a changed file over finished variants is refused; one_at_a_time lists base, one variant per
 *     changed value, and all changes together;
 *   - report.html renders in headless Chromium: the table has a row per variant and every sample
 *     grid image loads (naturalWidth > 0, reported by a script in a copy of the page);
 *   - the sweep SIGTERM'd while a variant trains and rerun equals the uninterrupted one (final
 *     checkpoints bit for bit, eval.json's FDs, results.csv but for the seconds);
 *   - one checkpoint evaluated at two sample.mid_t values keeps both records (eval.json and /eval),
 *     and `cmlab info` prints each record once;
 *   - eval.sweep = zip over one EDM checkpoint: each variant is evaluated with its own solver,
 *     schedule, afs and NFEs together (the records in its eval.json say so), a 6-line zip whose
 *     grid would exceed the variant limit is accepted, and lines of different lengths exit 2;
 *     `cmlab trajectories --pca --out <ablation>/trajectories` puts its chart into report.html;
 *   - a zip column sampling with AMED predictors (two tiny ones trained here on the EDM checkpoint,
 *     N = 2 and 3): eval.predictor with {nfe} takes each NFE's own predictor (the records say
 *     sampler amed at NFE 1 and 3 over 2 and 3 time points), the plain column's empty
 *     eval.predictor keeps its solver and its directory name, a rerun evaluates nothing again,
 *     and a {nfe} path without eval.nfe exits 2;
 *   - a zip of model.precision = fp32, bf16 over one EDM checkpoint: the bf16 variant's records say
 *     precision=bf16 (on a CPU with AVX512_BF16), both variants have their FD in results.csv, and a
 *     rerun finds both variants' records and evaluates nothing again.
 */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "fixture.h"
#include "io/checkpoint.h"
#include "data/image.h"
#include "autograd/gemm_bf16.h"
#include "eval/eval.h"

static const char *cmlab;
static char out_buf[1 << 16];

static int count_lines(const char *path);

/* Runs argv (argv[0] is the program) with stdout+stderr into out_buf; the exit status. With watch,
 * sends SIGTERM once that file has `lines` lines. */
static int run_argv_stop(char *const *argv, const char *watch, int lines)
{
    fflush(stdout);
    FILE *tmp = tmpfile();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fileno(tmp), 1);
        dup2(fileno(tmp), 2);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    double t0 = cm_now();
    for (int i = 0; watch && i < 30000 && count_lines(watch) < lines; i++) usleep(2000);
    if (watch) kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    printf("  [%.1f s] %s %s %s\n", cm_now() - t0, argv[0], argv[1] ? argv[1] : "", argv[1] && argv[2] ? argv[2] : "");
    rewind(tmp);
    size_t n = fread(out_buf, 1, sizeof out_buf - 1, tmp);
    out_buf[n] = '\0';
    fclose(tmp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int run_argv(char *const *argv)
{
    return run_argv_stop(argv, NULL, 0);
}

#define CMLAB(...) run_argv((char *[]){(char *)cmlab, __VA_ARGS__, NULL})

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CM_ASSERT(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void be32(FILE *f, uint32_t v)
{
    unsigned char b[4] = {v >> 24, v >> 16, v >> 8, v};
    fwrite(b, 1, 4, f);
}

/* An MNIST-style split: class k (0..9) is a bright horizontal bar on rows 2k+4..2k+6 over dim
 * noise, the bar's length varying with the image. */
static void write_split(const char *dir, const char *split, int n, unsigned seed)
{
    char p[320];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte", dir, split);
    FILE *im = fopen(p, "wb");
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, split);
    FILE *lb = fopen(p, "wb");
    CM_ASSERT(im && lb, "cannot write the synthetic data set in %s", dir);
    be32(im, 0x803), be32(im, (uint32_t)n), be32(im, 28), be32(im, 28);
    be32(lb, 0x801), be32(lb, (uint32_t)n);
    srand(seed);
    for (int i = 0; i < n; i++) {
        int k = i % 10, len = 12 + rand() % 12, x0 = rand() % (28 - len);
        unsigned char img[28 * 28];
        for (int j = 0; j < 28 * 28; j++) img[j] = (unsigned char)(rand() % 40);
        for (int y = 2 * k + 4; y <= 2 * k + 6; y++)
            for (int x = x0; x < x0 + len; x++) img[y * 28 + x] = (unsigned char)(200 + rand() % 56);
        fwrite(img, 1, sizeof img, im);
        fputc(k, lb);
    }
    fclose(im);
    fclose(lb);
}

/* The last value of "key": in a text file (metrics.jsonl, eval.json) on lines containing `with`. */
static double last_number(const char *path, const char *key, const char *with)
{
    FILE *f = fopen(path, "r");
    if (!f) return NAN;
    char line[8192], pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    double v = NAN;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, pat);
        if (p && (!with || strstr(line, with))) v = atof(p + strlen(pat));
    }
    fclose(f);
    return v;
}

static int count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0;
    for (int ch; (ch = fgetc(f)) != EOF;) n += ch == '\n';
    fclose(f);
    return n;
}

static char data_dir[256];

/* An experiment file: `body` with the synthetic data set. */
static void write_exp(const char *path, const char *body)
{
    char text[4096];
    snprintf(text, sizeof text, "%s[data]\ndataset = mnist\npath = %s\n", body, data_dir);
    write_text(path, text);
}

static const char *CLF_CKPT = "abl_runs/clf/ckpt/step_00000080.h5";
static const char *EDM_CKPT = "abl_runs/edm/ckpt/step_00000004.h5";

/* A folder data set of n 28x28 gray PNGs; `bright` sets where the images' bright square sits, so
 * two values give two data sets of one size and kind but other contents. */
static void write_folder(const char *dir, int n, int bright)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    CM_ASSERT(system(cmd) == 0, "cannot make %s", dir);
    srand(5);
    for (int i = 0; i < n; i++) {
        uint8_t img[28 * 28];
        for (int j = 0; j < 28 * 28; j++) img[j] = (uint8_t)(rand() % 40);
        for (int y = bright; y < bright + 8; y++)
            for (int x = 4 + i % 12; x < 12 + i % 12; x++) img[y * 28 + x] = 230;
        char path[320];
        snprintf(path, sizeof path, "%s/%03d.png", dir, i);
        CM_ASSERT(image_write_png(path, img, 28, 28, 1) == 0, "cannot write %s", path);
    }
}

/* The reference statistics of a data set of kind in dir through the classifier; mu[0..3] into mu,
 * the cache file into cache (may be NULL), whether the data were read into read (may be NULL). */
static int ref_stats(const FeatureNet *f, const char *kind, const char *dir, double *mu, char *cache, size_t len,
                     bool *read)
{
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    FdStats s = {0};
    int rc = fd_reference_stats(f, kind, dir, "train", &ctx, &s, cache, len, read);
    if (rc == 0) memcpy(mu, s.mu, 4 * sizeof(double));
    fd_stats_free(&s);
    ctx_free(&ctx);
    return rc;
}

static int folder_stats(const FeatureNet *f, const char *dir, double *mu, char *cache, size_t len)
{
    return ref_stats(f, "folder", dir, mu, cache, len, NULL);
}

static int split_stats(const FeatureNet *f, double *mu, bool *read)
{
    return ref_stats(f, "mnist", data_dir, mu, NULL, 0, read);
}

/* Two folder data sets of one size and kind, scored with one feature network, must not share
 * statistics; nor may one folder before and after its files change. */
static void test_stats_cache(void)
{
    FeatureNet f;
    CHECK(feature_net_load(&f, CLF_CKPT, NULL) == 0, "cannot load %s: %s", CLF_CKPT, cm_errmsg());
    double a[4], b[4], a2[4], c[4];
    char ca[1100], cb[1100], ca2[1100];
    write_folder("abl_runs/folder_a", 40, 2);
    write_folder("abl_runs/folder_b", 40, 16);
    int rc = folder_stats(&f, "abl_runs/folder_a", a, ca, sizeof ca) | folder_stats(&f, "abl_runs/folder_b", b, cb, sizeof cb) |
             folder_stats(&f, "abl_runs/folder_a", a2, ca2, sizeof ca2);
    CHECK(rc == 0, "reference statistics of the folders: %s", cm_errmsg());
    CHECK(memcmp(a, b, sizeof a) != 0, "two folders of other contents got the same statistics (mu[0] %g, %g; cache %s)",
          a[0], b[0], cb);
    CHECK(!memcmp(a, a2, sizeof a) && !strcmp(ca, ca2) && strcmp(ca, cb),
          "folder a's statistics are not reused from %s (second read from %s; folder b's %s)", ca, ca2, cb);
    /* folder a's files rewritten in place with folder b's contents: b's statistics, not the cache
     * of a's old files (the path alone would say "same data"). */
    write_folder("abl_runs/folder_a", 40, 16);
    rc = folder_stats(&f, "abl_runs/folder_a", c, ca2, sizeof ca2);
    CHECK(rc == 0 && memcmp(c, a, sizeof c) != 0 && fabs(c[0] - b[0]) < 1e-9 * fmax(1, fabs(b[0])),
          "folder a after its files changed: mu[0] %g (old files %g, folder b %g)", c[0], a[0], b[0]);
    printf("statistics cache: two folders of one kind and size give mu[0] %.6f and %.6f; a changed folder %.6f\n",
           a[0], b[0], c[0]);
    feature_net_free(&f);
}

/* The data's signature (features.h): unchanged files are not read again; a file rewritten in place
 * at its size, its modification time set back (touch -d), is read and gives its own statistics,
 * both right after the write (too recent to sign) and once it is old enough to sign (its
 * status-change time tells). Runs last: it changes data_dir's training images. */
static void test_data_signature(void)
{
    FeatureNet f;
    CHECK(feature_net_load(&f, CLF_CKPT, NULL) == 0, "cannot load %s: %s", CLF_CKPT, cm_errmsg());
    double a[4], b[4], c[4], d[4], e[4];
    bool read_a, read_b, read_c, read_d, read_e;
    /* data_dir's files were written when the test began, longer ago than the 2 s "racy" window */
    int rc = split_stats(&f, a, &read_a) | split_stats(&f, b, &read_b);
    CHECK(rc == 0 && !read_b && !memcmp(a, b, sizeof a),
          "unchanged files: the second statistics %s the data (mu[0] %g, first %g): %s", read_b ? "read" : "did not read",
          b[0], a[0], rc ? cm_errmsg() : "");

    char img[320];
    snprintf(img, sizeof img, "%s/train-images-idx3-ubyte", data_dir);
    struct stat st;
    unsigned char px[28 * 28];
    FILE *fp = fopen(img, "r+b");
    CM_ASSERT(fp && stat(img, &st) == 0 && fseek(fp, 16, SEEK_SET) == 0 && fread(px, 1, sizeof px, fp) == sizeof px,
              "cannot read %s", img);
    for (size_t i = 0; i < sizeof px; i++) px[i] = (unsigned char)(255 - px[i]);   /* image 0 inverted */
    CM_ASSERT(fseek(fp, 16, SEEK_SET) == 0 && fwrite(px, 1, sizeof px, fp) == sizeof px && fclose(fp) == 0,
              "cannot write %s", img);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    CM_ASSERT(utimensat(AT_FDCWD, img, times, 0) == 0, "cannot set the times of %s back", img);
    rc = split_stats(&f, c, &read_c);
    CHECK(rc == 0 && read_c && memcmp(c, a, sizeof c) != 0,
          "a file just rewritten: the statistics %s the data (mu[0] %g, before %g)", read_c ? "read" : "did not read",
          c[0], a[0]);
    nanosleep(&(struct timespec){2, 200000000}, NULL);
    rc = split_stats(&f, d, &read_d) | split_stats(&f, e, &read_e);
    CHECK(rc == 0 && read_d && !memcmp(d, c, sizeof d) && !read_e && !memcmp(e, c, sizeof e),
          "a rewritten file with its old size and modification time, 2 s later: the statistics %s the data (mu[0] "
          "%g, want %g; before the change %g), the next %s it", read_d ? "read" : "did not read", d[0], c[0], a[0],
          read_e ? "read" : "did not read");
    printf("data signature: unchanged files not read; a rewritten file (size and mtime kept) read: mu[0] %.6f -> "
           "%.6f\n", a[0], d[0]);
    feature_net_free(&f);
}

/* Every record of eval.json about ckpt is stamped in it under eval_record_name with the same
 * value, and /eval holds nothing else: the number of stamped records (-1 on a mismatch). */
static int stamps_match(const char *ckpt, const char *json)
{
    EvalRecord *rs = NULL;
    int n = eval_json_read(json, &rs), found = 0, bad = 0;
    hid_t f = H5Fopen(ckpt, H5F_ACC_RDONLY, H5P_DEFAULT);
    for (int i = 0; i < n && f >= 0; i++) {
        if (strcmp(rs[i].checkpoint, ckpt) != 0) continue;
        char name[256];
        double v = NAN;
        eval_record_name(&rs[i], name, sizeof name);
        hid_t a = H5Aexists_by_name(f, name, "value", H5P_DEFAULT) > 0
                      ? H5Aopen_by_name(f, name, "value", H5P_DEFAULT, H5P_DEFAULT) : -1;
        if (a >= 0) H5Aread(a, H5T_NATIVE_DOUBLE, &v);
        if (a >= 0) H5Aclose(a);
        /* eval.json prints 12 significant digits. */
        if (!(fabs(v - rs[i].value) <= 1e-11 * fabs(rs[i].value))) {
            printf("  %s: %s holds %.17g, eval.json %.17g (times %s)\n", ckpt, name, v, rs[i].value, rs[i].times);
            bad++;
        }
        found++;
    }
    hid_t g = f >= 0 ? H5Gopen2(f, "/eval", H5P_DEFAULT) : -1;
    H5G_info_t info = {0};
    if (g >= 0) H5Gget_info(g, &info);
    if ((long)info.nlinks != found) {
        printf("  %s: /eval holds %llu records, eval.json %d of this checkpoint\n", ckpt,
               (unsigned long long)info.nlinks, found);
        bad++;
    }
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(rs);
    return bad || f < 0 ? -1 : found;
}

static void test_classifier(void)
{
    write_exp("abl_runs/clf.ini",
              "[experiment]\nmethod = classifier\nout_dir = abl_runs\nname = clf\n"
              "[classifier]\nchannels = 4,8\nfeatures = 16\n"
              "[train]\niterations = 80\nbatch_size = 32\nlr = 0.01\nema = 0.9\nlog_every = 20\n"
              "checkpoint_every = 0\nsample_every = 0\nthreads = 2\n");
    int rc = CMLAB("train", "abl_runs/clf.ini");
    CHECK(rc == 0, "classifier training exits %d:\n%s", rc, out_buf);
    double acc = last_number("abl_runs/clf/metrics.jsonl", "test_accuracy", NULL);
    printf("classifier: test accuracy %.3f on the synthetic set (chance 0.1)\n", acc);
    CHECK(acc > 0.8, "the classifier's test accuracy is %.3f (want > 0.8)", acc);

    rc = CMLAB("eval", (char *)CLF_CKPT);
    double rec = last_number("abl_runs/clf/eval.json", "value", "test_accuracy");
    CHECK(rc == 0 && fabs(rec - acc) < 1e-6, "cmlab eval of the classifier: exit %d, accuracy %.6f (trainer %.6f)\n%s",
          rc, rec, acc, out_buf);

    rc = CMLAB("eval", "--baselines", "--features", (char *)CLF_CKPT, "--n", "300");
    double test = last_number("abl_runs/clf/eval.json", "value", "fd_test_split");
    double noise = last_number("abl_runs/clf/eval.json", "value", "fd_uniform_noise");
    double shuf = last_number("abl_runs/clf/eval.json", "value", "fd_shuffled_pixels");
    printf("baselines (n 300): FD test split %.4f, uniform noise %.4f, shuffled pixels %.4f\n", test, noise, shuf);
    CHECK(rc == 0, "cmlab eval --baselines exits %d:\n%s", rc, out_buf);
    CHECK(test >= 0 && test < 0.1 * noise && test < 0.1 * shuf,
          "FD of the test split %.4f is not far below noise %.4f and shuffled pixels %.4f", test, noise, shuf);
    struct stat st;
    CHECK(stat("abl_runs/clf/fd_stats", &st) == 0, "no statistics cache under abl_runs/clf/fd_stats");
}

static void test_eval_edm(void)
{
    write_exp("abl_runs/edm.ini",
              "[experiment]\nmethod = edm\nout_dir = abl_runs\nname = edm\n"
              "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
              "[train]\niterations = 4\nbatch_size = 8\nema = 0.9\nlog_every = 2\ncheckpoint_every = 0\n"
              "sample_every = 0\nthreads = 2\n[sample]\nsolver = euler\nnfe = 3\n");
    int rc = CMLAB("train", "abl_runs/edm.ini");
    CHECK(rc == 0, "EDM training exits %d:\n%s", rc, out_buf);

    char names[CKPT_MAX_SETS][64];
    CHECK(ckpt_list_weights(EDM_CKPT, names, CKPT_MAX_SETS) == 2, "the EDM checkpoint should hold online and one EMA");
    rc = CMLAB("eval", (char *)EDM_CKPT, "--features", (char *)CLF_CKPT, "--n", "40", "--nfe", "3,5", "--solver",
               "heun", "--seed", "7");
    CHECK(rc == 0, "cmlab eval exits %d:\n%s", rc, out_buf);
    EvalRecord *rs = NULL;
    int n = eval_json_read("abl_runs/edm/eval.json", &rs);
    CHECK(n == 2, "eval.json has %d records, want 2", n);
    for (int i = 0; i < n && n == 2; i++) {
        int commas = 0;
        for (const char *p = rs[i].times; *p; p++) commas += *p == ',';
        /* heun at NFE 3 or 5 with the step to 0: 2 or 3 time points, then 0. */
        CHECK(rs[i].nfe == (i ? 5 : 3) && !strcmp(rs[i].sampler, "heun") && rs[i].n == 40 && rs[i].seed == 7 &&
              isfinite(rs[i].value) && rs[i].value > 0 && commas == (i ? 3 : 2) && rs[i].reference_n == 600 &&
              !strncmp(rs[i].feature_hash, "sha256:", 7) && strlen(rs[i].feature_hash) == 71 &&
              !strcmp(rs[i].weights, "ema/0.9") && rs[i].step == 4,
              "record %d: nfe %d sampler %s n %d seed %d fd %g times %s ref %ld hash %s weights %s", i, rs[i].nfe,
              rs[i].sampler, rs[i].n, rs[i].seed, rs[i].value, rs[i].times, rs[i].reference_n, rs[i].feature_hash,
              rs[i].weights);
        char grid[600];
        snprintf(grid, sizeof grid, "abl_runs/edm/%s", rs[i].grid);
        struct stat st;
        CHECK(stat(grid, &st) == 0 && st.st_size > 100, "no sample grid %s", grid);
    }
    CHECK(ckpt_verify(EDM_CKPT) == 0, "the stamped checkpoint does not verify: %s", cm_errmsg());
    hid_t f = H5Fopen(EDM_CKPT, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t g = f >= 0 ? H5Gopen2(f, "/eval", H5P_DEFAULT) : -1;
    H5G_info_t info = {0};
    if (g >= 0) H5Gget_info(g, &info);
    CHECK(g >= 0 && info.nlinks == 2, "/eval holds %llu records, want 2", (unsigned long long)info.nlinks);
    if (g >= 0) H5Gclose(g);
    if (f >= 0) H5Fclose(f);
    free(rs);

    /* Bad input: exit 2, a message naming the problem, nothing changed. */
    struct stat before, after;
    stat(EDM_CKPT, &before);
    rc = CMLAB("eval", (char *)EDM_CKPT, "--n", "8");
    CHECK(rc == 2 && strstr(out_buf, "no feature network"), "eval without a feature network: exit %d\n%s", rc, out_buf);
    rc = CMLAB("eval", (char *)EDM_CKPT, "--features", (char *)EDM_CKPT);
    CHECK(rc == 2 && strstr(out_buf, "method = classifier"), "an EDM checkpoint as feature network: exit %d\n%s", rc,
          out_buf);
    rc = CMLAB("eval", (char *)EDM_CKPT, "--features", (char *)CLF_CKPT, "--nfe", "0");
    CHECK(rc == 2 && strstr(out_buf, "eval.nfe"), "--nfe 0: exit %d\n%s", rc, out_buf);
    rc = CMLAB("eval", (char *)EDM_CKPT, "--features", (char *)CLF_CKPT, "--nfe", "4", "--solver", "heun", "--n", "8");
    CHECK(rc == 2 && strstr(out_buf, "NFE 4"), "heun at an even NFE with the step to 0: exit %d\n%s", rc, out_buf);
    rc = CMLAB("eval", "abl_runs/none.h5", "--features", (char *)CLF_CKPT);
    CHECK(rc == 2 && strstr(out_buf, "abl_runs/none.h5"), "a missing checkpoint: exit %d\n%s", rc, out_buf);
    stat(EDM_CKPT, &after);
    CHECK(before.st_ino == after.st_ino && before.st_size == after.st_size && before.st_mtime == after.st_mtime,
          "a refused evaluation changed the checkpoint");
}

static const char *SWEEP =
    "# A two-variant CT sweep for test_ablate.\n"
    "# Published ordering: none (a test).\n"
    "[experiment]\nmethod = ct\nout_dir = abl_runs\nname = sweep\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
    "[train]\niterations = 12\nbatch_size = 8\nema = 0.9\nlog_every = 1\ncheckpoint_every = 0\n"
    "sample_every = 0\nthreads = 1\n"
    "[eval]\nfeatures = abl_runs/clf/ckpt/step_00000080.h5\nn = 32\n"
    "[sweep]\nct.loss = l2, pseudo_huber\n";

static void test_ablate(void)
{
    write_exp("abl_runs/sweep.ini", SWEEP);
    int rc = CMLAB("ablate", "abl_runs/sweep.ini");
    CHECK(rc == 0, "cmlab ablate exits %d:\n%s", rc, out_buf);
    CHECK(count_lines("abl_runs/sweep/results.csv") == 3, "results.csv has %d lines, want 3",
          count_lines("abl_runs/sweep/results.csv"));
    FILE *f = fopen("abl_runs/sweep/results.csv", "r");
    char line[1024] = "";
    int rows_ok = 0;
    if (f) {
        CHECK(fgets(line, sizeof line, f) && strstr(line, "ct.loss") && strstr(line, "fd_nfe1") &&
              strstr(line, "fd_nfe2"), "results.csv header: %s", line);
        while (fgets(line, sizeof line, f)) {
            double fd1 = NAN, fd2 = NAN;
            char *last = strrchr(line, ','), *prev;
            *last = '\0';
            prev = strrchr(line, ',');
            fd2 = atof(last + 1);
            fd1 = atof(prev + 1);
            rows_ok += strstr(line, ",done,") && fd1 > 0 && fd2 > 0;
        }
        fclose(f);
    }
    CHECK(rows_ok == 2, "%d rows of results.csv are done with finite FDs, want 2", rows_ok);
    const char *finals[] = {"abl_runs/sweep/00-l2/ckpt/step_00000012.h5",
                            "abl_runs/sweep/01-pseudo_huber/ckpt/step_00000012.h5"};
    const char *jsons[] = {"abl_runs/sweep/00-l2/eval.json", "abl_runs/sweep/01-pseudo_huber/eval.json"};
    for (int i = 0; i < 2; i++) {
        int k = stamps_match(finals[i], jsons[i]);
        CHECK(k == 2, "%s: %d records stamped with eval.json's values, want 2 (NFE 1, 2)", finals[i], k);
    }
    struct stat a, b;
    const char *ck = "abl_runs/sweep/01-pseudo_huber/ckpt/step_00000012.h5";
    CHECK(stat(ck, &a) == 0, "no %s", ck);
    rc = CMLAB("ablate", "abl_runs/sweep.ini");
    CHECK(rc == 0 && !strstr(out_buf, "ablate: 00-l2: training") && !strstr(out_buf, "evaluating") &&
          strstr(out_buf, "01-pseudo_huber: trained") && strstr(out_buf, "01-pseudo_huber: evaluated"),
          "a second cmlab ablate repeated work (exit %d):\n%s", rc, out_buf);
    CHECK(stat(ck, &b) == 0 && a.st_mtime == b.st_mtime && a.st_ino == b.st_ino, "the second run rewrote %s", ck);
    CHECK(count_lines("abl_runs/sweep/results.md") >= 8, "results.md is too short");
    rc = CMLAB("ablate", "abl_runs/sweep.ini", "--only", "1");
    CHECK(rc == 0 && strstr(out_buf, "01-pseudo_huber: trained") && !strstr(out_buf, "00-l2: trained") &&
          strstr(out_buf, "00-l2: evaluated"), "--only 1: exit %d\n%s", rc, out_buf);
    rc = CMLAB("ablate", "abl_runs/sweep.ini", "--set", "train.lr=0.002");
    CHECK(rc == 2 && strstr(out_buf, "another configuration"), "a changed file over finished variants: exit %d\n%s",
          rc, out_buf);

    rc = CMLAB("ablate", "abl_runs/sweep.ini", "--list", "--set", "eval.sweep=one_at_a_time", "--set",
               "sweep.ct.weighting=uniform,ict", "--set", "sweep.ct.loss=l2,l1,pseudo_huber");
    /* base (l2, uniform), then l1, pseudo_huber, ict, then all (pseudo_huber and ict): 5 variants. */
    CHECK(rc == 0 && strstr(out_buf, "5 variants (one at a time)") && strstr(out_buf, "  01-l1-uniform  ct.loss=l1\n") &&
          strstr(out_buf, "ct.weighting=ict") && !strstr(out_buf, "ct.loss=l2\n") &&
          strstr(out_buf, "04-pseudo_huber-ict  all: ct.loss=pseudo_huber,ct.weighting=ict"),
          "one_at_a_time: exit %d\n%s", rc, out_buf);
}

/* A sampler ablation whose solvers each take their own schedule and options: variant i takes
 * value i of every [sweep] line. */
static void test_ablate_zip(void)
{
    write_exp("abl_runs/zip.ini",
              "# Linked solver settings for test_ablate.\n"
              "[experiment]\nmethod = edm\nout_dir = abl_runs\nname = zip\n"
              "[sample]\ndenoise_to_zero = false\n"
              "[eval]\ncheckpoint = abl_runs/edm/ckpt/step_00000004.h5\n"
              "features = abl_runs/clf/ckpt/step_00000080.h5\nn = 16\nsweep = zip\n"
              "[sweep]\nsample.solver = euler, heun, dpmpp3m\n"
              "sample.schedule = polynomial, polynomial, logsnr\n"
              "sample.afs = false, true, false\n"
              "eval.nfe = 2 | 3 | 2,3\n");
    int rc = CMLAB("ablate", "abl_runs/zip.ini");
    CHECK(rc == 0 && strstr(out_buf, "3 variants (zip"), "zip ablation: exit %d\n%s", rc, out_buf);
    const struct { const char *dir, *sampler, *schedule, *afs; int nfe[2], nnfe; } want[] = {
        {"abl_runs/zip/00-euler-polynomial-false-2", "euler", "polynomial", "afs=0", {2}, 1},
        {"abl_runs/zip/01-heun-polynomial-true-3", "heun", "polynomial", "afs=1", {3}, 1},
        {"abl_runs/zip/02-dpmpp3m-logsnr-false-2_3", "dpmpp3m", "logsnr", "afs=0", {2, 3}, 2},
    };
    for (size_t v = 0; v < CM_ARRAY_LEN(want); v++) {
        char json[400];
        snprintf(json, sizeof json, "%s/eval.json", want[v].dir);
        EvalRecord *rs = NULL;
        int n = eval_json_read(json, &rs), good = 0;
        for (int i = 0; i < n; i++)
            good += i < want[v].nnfe && rs[i].nfe == want[v].nfe[i] && !strcmp(rs[i].sampler, want[v].sampler) &&
                    !strcmp(rs[i].schedule, want[v].schedule) && strstr(rs[i].options, want[v].afs) &&
                    isfinite(rs[i].value);
        CHECK(n == want[v].nnfe && good == n, "%s: %d records, %d as the variant asks (%s, %s, %s)", json, n, good,
              want[v].sampler, want[v].schedule, want[v].afs);
        free(rs);
    }
    CHECK(count_lines("abl_runs/zip/results.csv") == 4, "zip results.csv has %d lines, want 4",
          count_lines("abl_runs/zip/results.csv"));
    /* The teacher's trajectory PCA in the ablation's directory joins its report. */
    char *report = fixture_read_file("abl_runs/zip/report.html", &(size_t){0});
    CHECK(report && !strstr(report, "pca.svg"), "a report without trajectories shows a PCA chart");
    free(report);
    rc = CMLAB("trajectories", (char *)EDM_CKPT, "--pca", "--n", "2", "--steps", "3", "--out", "abl_runs/zip/trajectories");
    CHECK(rc == 0, "cmlab trajectories: exit %d\n%s", rc, out_buf);
    rc = CMLAB("ablate", "abl_runs/zip.ini", "--report");
    report = fixture_read_file("abl_runs/zip/report.html", &(size_t){0});
    CHECK(rc == 0 && report && strstr(report, "<img src=\"trajectories/pca.svg\""),
          "the report does not show trajectories/pca.svg (exit %d)", rc);
    free(report);

    /* Six lines of six values: a grid of 6^6 variants, one zip of 6. */
    rc = CMLAB("ablate", "abl_runs/zip.ini", "--list", "--set", "sweep.sample.solver=euler,heun,dpm2,dpmpp2m,dpmpp3m,ipndm",
               "--set", "sweep.sample.schedule=polynomial,polynomial,polynomial,logsnr,logsnr,polynomial", "--set",
               "sweep.sample.afs=false,true,true,false,false,false", "--set", "sweep.eval.nfe=3|3|3|3|3|3", "--set",
               "sweep.sample.rho=7,7,7,7,7,7", "--set", "sweep.sample.ipndm_order=4,4,4,4,4,4");
    CHECK(rc == 0 && strstr(out_buf, "6 variants (zip"), "a 6-line zip: exit %d\n%s", rc, out_buf);
    rc = CMLAB("ablate", "abl_runs/zip.ini", "--list", "--set", "eval.sweep=grid", "--set",
               "sweep.sample.solver=euler,heun,dpm2,dpmpp2m,dpmpp3m,ipndm", "--set",
               "sweep.sample.schedule=polynomial,polynomial,polynomial,logsnr,logsnr,polynomial", "--set",
               "sweep.sample.afs=false,true,true,false,false,false", "--set", "sweep.eval.nfe=3|3|3|3|3|3", "--set",
               "sweep.sample.rho=7,7,7,7,7,7", "--set", "sweep.sample.ipndm_order=4,4,4,4,4,4");
    CHECK(rc == 2 && strstr(out_buf, "more than 10000 variants"), "the same lines as a grid: exit %d\n%s", rc, out_buf);
    rc = CMLAB("ablate", "abl_runs/zip.ini", "--list", "--set", "sweep.sample.afs=false,true");
    CHECK(rc == 2 && strstr(out_buf, "sample.solver has 3 values and sample.afs has 2") && strstr(out_buf, "zip"),
          "zip lines of different lengths: exit %d\n%s", rc, out_buf);
    printf("zip lines of different lengths: %s", out_buf);
}

/* The solvers.ini shape (experiments/ablations/): a plain solver column and an AMED column whose
 * predictor path holds {nfe}. */
static void test_ablate_amed(void)
{
    write_exp("abl_runs/amed.ini",
              "[experiment]\nmethod = amed\nout_dir = abl_runs\n"
              "[train]\niterations = 1\nbatch_size = 4\nlr = 0.005\nema =\nlog_every = 1\ncheckpoint_every = 0\n"
              "sample_every = 0\nthreads = 2\n[sample]\nn = 2\n"
              "[amed]\nteacher = abl_runs/edm/ckpt/step_00000004.h5\nstudent = amed\nteacher_solver = heun\nM = 1\n"
              "afs = true\nschedule = time_uniform\nrho = 1\n");
    int rc = CMLAB("train", "abl_runs/amed.ini", "--set", "amed.N=2", "--set", "experiment.name=amed_nfe1");
    CHECK(rc == 0, "predictor training (N = 2): exit %d\n%s", rc, out_buf);
    rc = CMLAB("train", "abl_runs/amed.ini", "--set", "amed.N=3", "--set", "experiment.name=amed_nfe3");
    CHECK(rc == 0, "predictor training (N = 3): exit %d\n%s", rc, out_buf);
    write_exp("abl_runs/zip_amed.ini",
              "# A plain solver against AMED predictors.\n"
              "[experiment]\nmethod = edm\nout_dir = abl_runs\nname = zip_amed\n"
              "[sample]\ndenoise_to_zero = false\n"
              "[eval]\ncheckpoint = abl_runs/edm/ckpt/step_00000004.h5\n"
              "features = abl_runs/clf/ckpt/step_00000080.h5\nn = 16\nsweep = zip\n"
              "[sweep]\nsample.solver = euler, dpm2\n"
              "eval.nfe = 2 | 1,3\n"
              "eval.predictor = , abl_runs/amed_nfe{nfe}/ckpt/step_00000001.h5\n");
    rc = CMLAB("ablate", "abl_runs/zip_amed.ini");
    CHECK(rc == 0 && strstr(out_buf, "2 variants (zip"), "AMED zip ablation: exit %d\n%s", rc, out_buf);
    const struct { const char *dir, *sampler; int nfe, points; } want[] = {
        {"abl_runs/zip_amed/00-euler-2", "euler", 2, 3},
        {"abl_runs/zip_amed/01-dpm2-1_3-abl_runs_amed_nfe_nfe__ckpt_step_00000001.h5", "amed", 1, 2},
        {"abl_runs/zip_amed/01-dpm2-1_3-abl_runs_amed_nfe_nfe__ckpt_step_00000001.h5", "amed", 3, 3},
    };
    for (size_t v = 0; v < CM_ARRAY_LEN(want); v++) {
        char json[400];
        snprintf(json, sizeof json, "%s/eval.json", want[v].dir);
        EvalRecord *rs = NULL;
        int n = eval_json_read(json, &rs), good = 0;
        for (int i = 0; i < n; i++) {
            int points = 1;
            for (const char *c = rs[i].times; *c; c++) points += *c == ',';
            good += rs[i].nfe == want[v].nfe && !strcmp(rs[i].sampler, want[v].sampler) && points == want[v].points &&
                    isfinite(rs[i].value);
        }
        CHECK(good == 1, "%s: no record of %s at NFE %d over %d time points (%d records)", json, want[v].sampler,
              want[v].nfe, want[v].points, n);
        free(rs);
    }
    rc = CMLAB("ablate", "abl_runs/zip_amed.ini");
    CHECK(rc == 0 && !strstr(out_buf, "evaluating"), "a rerun of the AMED zip evaluated again: exit %d\n%s", rc,
          out_buf);
    rc = CMLAB("eval", (char *)EDM_CKPT, "--features", (char *)CLF_CKPT, "--predictor",
               "abl_runs/amed_nfe{nfe}/ckpt/step_00000001.h5", "--out", "abl_runs/zip_amed/cli");
    CHECK(rc == 2 && strstr(out_buf, "eval.nfe"), "a {nfe} predictor without NFEs: exit %d\n%s", rc, out_buf);
    printf("AMED predictors per NFE in a zip column: records at NFE 1 and 3; without eval.nfe: %s", out_buf);
}

/* Every dataset under /weights and /optimizer of one checkpoint, compared bit for bit with the
 * same path in another (H5Literate over the groups). */
typedef struct Compare { hid_t other; int datasets, differ; } Compare;

static herr_t compare_link(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    Compare *c = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return -1;
    if (H5Iget_type(o) == H5I_GROUP) {
        H5Literate(o, H5_INDEX_NAME, H5_ITER_INC, NULL, compare_link, c);
    } else if (H5Iget_type(o) == H5I_DATASET) {
        char path[512];
        H5Iget_name(o, path, sizeof path);
        hid_t sp = H5Dget_space(o), d2 = H5Dopen2(c->other, path, H5P_DEFAULT);
        size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
        float *a = cm_malloc(n * sizeof(float)), *b = cm_malloc(n * sizeof(float));
        bool same = d2 >= 0 && H5Dread(o, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0 &&
                    H5Dread(d2, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0 &&
                    !memcmp(a, b, n * sizeof(float));
        if (!same && c->differ++ < 3) printf("  %s differs\n", path);
        c->datasets++;
        free(a);
        free(b);
        if (d2 >= 0) H5Dclose(d2);
        H5Sclose(sp);
    }
    H5Oclose(o);
    return 0;
}

/* The number of datasets compared, or -1 when one differs. */
static int checkpoints_equal(const char *a, const char *b)
{
    hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT), fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    Compare c = {fb, 0, 0};
    const char *groups[] = {"weights", "optimizer"};
    for (int i = 0; i < 2 && fa >= 0 && fb >= 0; i++) {
        hid_t g = H5Gopen2(fa, groups[i], H5P_DEFAULT);
        if (g >= 0) H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, compare_link, &c);
        if (g >= 0) H5Gclose(g);
    }
    if (fa >= 0) H5Fclose(fa);
    if (fb >= 0) H5Fclose(fb);
    return fa < 0 || fb < 0 || c.differ ? -1 : c.datasets;
}

/* The FD of eval.json's newest record at nfe, NaN if none. */
static double json_fd(const char *json, int nfe)
{
    EvalRecord *rs = NULL;
    int n = eval_json_read(json, &rs);
    double v = NAN;
    for (int i = 0; i < n; i++)
        if (rs[i].nfe == nfe && !strcmp(rs[i].metric, "fd")) v = rs[i].value;
    free(rs);
    return v;
}

/* The sweep again under another name, SIGTERM'd while its first variant trains, then rerun: the
 * run stops with exit 1 and a checkpoint before step 12 and no evaluation; the rerun resumes it,
 * and both variants' final checkpoints (weights, target, EMA, Adam), eval.json FDs and results.csv
 * rows equal those of the uninterrupted sweep. */
static void test_ablate_sigterm(void)
{
    char *args[] = {(char *)cmlab, "ablate", "abl_runs/sweep.ini", "--set", "experiment.name=sweep_sig", NULL};
    int rc = run_argv_stop(args, "abl_runs/sweep_sig/00-l2/metrics.jsonl", 3);
    long stopped = -1;
    const char *at = strstr(out_buf, "stopping at step ");
    if (at) stopped = atol(at + strlen("stopping at step "));
    struct stat sb;
    CHECK(rc == 1 && stopped > 0 && stopped < 12 && stat("abl_runs/sweep_sig/00-l2/eval.json", &sb) != 0,
          "SIGTERM during variant 00's training: exit %d, stopped at step %ld (want 1..11, no evaluation):\n%s", rc,
          stopped, out_buf);
    rc = CMLAB("ablate", "abl_runs/sweep.ini", "--set", "experiment.name=sweep_sig");
    CHECK(rc == 0 && strstr(out_buf, "00-l2: resuming"), "the rerun after SIGTERM: exit %d\n%s", rc, out_buf);
    const char *variants[] = {"00-l2", "01-pseudo_huber"};
    int same = 0;
    for (int i = 0; i < 2; i++) {
        char a[200], b[200], ja[200], jb[200];
        snprintf(a, sizeof a, "abl_runs/sweep/%s/ckpt/step_00000012.h5", variants[i]);
        snprintf(b, sizeof b, "abl_runs/sweep_sig/%s/ckpt/step_00000012.h5", variants[i]);
        snprintf(ja, sizeof ja, "abl_runs/sweep/%s/eval.json", variants[i]);
        snprintf(jb, sizeof jb, "abl_runs/sweep_sig/%s/eval.json", variants[i]);
        int k = checkpoints_equal(a, b);
        double fa[2] = {json_fd(ja, 1), json_fd(ja, 2)}, fb[2] = {json_fd(jb, 1), json_fd(jb, 2)};
        CHECK(k > 0 && fa[0] == fb[0] && fa[1] == fb[1] && isfinite(fa[0]) && isfinite(fa[1]),
              "%s after SIGTERM + rerun: checkpoint %s (%d datasets), FD at NFE 1 %.12g vs %.12g, NFE 2 %.12g vs "
              "%.12g", variants[i], k > 0 ? "equal" : "differs", k, fb[0], fa[0], fb[1], fa[1]);
        same += k > 0 && fa[0] == fb[0] && fa[1] == fb[1];
    }
    /* results.csv: the rows agree but for the training seconds. */
    FILE *fa = fopen("abl_runs/sweep/results.csv", "r"), *fb = fopen("abl_runs/sweep_sig/results.csv", "r");
    char la[1024], lb[1024];
    int rows = 0, rows_same = 0;
    while (fa && fb && fgets(la, sizeof la, fa) && fgets(lb, sizeof lb, fb)) {
        if (!rows++) continue;
        /* index,variant,status,ct.loss,steps,loss,seconds,fd_nfe1,fd_nfe2: all but field 7 */
        char *pa[9], *pb[9];
        int na = 0, nb = 0;
        for (char *t = strtok(la, ",\n"); t && na < 9; t = strtok(NULL, ",\n")) pa[na++] = t;
        for (char *t = strtok(lb, ",\n"); t && nb < 9; t = strtok(NULL, ",\n")) pb[nb++] = t;
        bool eq = na == 9 && nb == 9;
        for (int k = 0; k < 9 && eq; k++) eq = k == 6 || !strcmp(pa[k], pb[k]);
        rows_same += eq;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    CHECK(rows == 3 && rows_same == 2, "results.csv after SIGTERM + rerun: %d of %d rows equal the uninterrupted "
          "sweep's (but for the seconds)", rows_same, rows - 1);
    if (same == 2 && rows_same == 2)
        printf("ablate: SIGTERM at step %ld of variant 00 + rerun equals the uninterrupted sweep (checkpoints, FDs, "
               "results.csv)\n", stopped);
}

/* One checkpoint evaluated at two mid_t values: two records of NFE 2 side by side in eval.json and
 * under /eval, each with its own value; `cmlab info` prints each record once. */
static void test_mid_t_records(void)
{
    const char *ck = "abl_runs/sweep/00-l2/ckpt/step_00000012.h5", *json = "abl_runs/sweep/00-l2/eval.json";
    int rc = CMLAB("eval", (char *)ck, "--nfe", "2", "--mid-t", "20");
    CHECK(rc == 0, "cmlab eval --mid-t 20 exits %d:\n%s", rc, out_buf);
    EvalRecord *rs = NULL;
    int n = eval_json_read(json, &rs), two = 0;
    double v[2] = {NAN, NAN};
    char times[2][EVAL_TEXT] = {"", ""};
    for (int i = 0; i < n; i++)
        if (rs[i].nfe == 2 && two < 2) {
            v[two] = rs[i].value;
            snprintf(times[two++], sizeof times[0], "%s", rs[i].times);
        }
    free(rs);
    CHECK(two == 2 && strcmp(times[0], times[1]) && v[0] != v[1] && isfinite(v[0]) && isfinite(v[1]),
          "eval.json: %d NFE-2 records (times %s: FD %g; %s: FD %g), want 2 with other times and values", two,
          times[0], v[0], times[1], v[1]);
    int k = stamps_match(ck, json);
    CHECK(k == 3, "%s: %d records stamped with eval.json's values, want 3 (NFE 1, NFE 2 at mid_t 0.821 and 20)", ck,
          k);
    printf("mid_t: NFE 2 at times %s FD %.4f, at %s FD %.4f, both stamped\n", times[0], v[0], times[1], v[1]);

    rc = CMLAB("info", (char *)ck);
    int values = 0, records = 0;
    for (const char *p = out_buf; (p = strstr(p, " value=")); p++) values++;
    for (const char *p = out_buf; (p = strstr(p, "  /eval/fd.")); p++) records++;
    CHECK(rc == 0 && records == 3 && values == 3 && !strstr(out_buf, "\"value\""),
          "cmlab info: exit %d, %d /eval records, %d values printed, want 3 each (and no json copy):\n%s", rc, records,
          values, out_buf);
}

/* Renders report.html in headless Chromium, in a window narrower than the table, and counts the
 * table rows and loaded images; the page itself must not scroll sideways (the table scrolls in
 * its own box). */
static void test_report_renders(void)
{
    FILE *in = fopen("abl_runs/sweep/report.html", "r");
    CHECK(in != NULL, "no report.html");
    if (!in) return;
    static char html[1 << 20];
    size_t n = fread(html, 1, sizeof html - 1, in);
    html[n] = '\0';
    fclose(in);
    char *end = strstr(html, "</body>");
    CHECK(end != NULL, "report.html has no </body>");
    if (!end) return;
    *end = '\0';
    FILE *out = fopen("abl_runs/sweep/report_check.html", "w");
    fprintf(out, "%s<script>window.addEventListener('load', function () {"
                 "var imgs = document.images, ok = 0;"
                 "for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;"
                 "var p = document.createElement('p'); p.id = 'check';"
                 "p.textContent = 'CHECK rows=' + document.querySelectorAll('#results tr.variant').length +"
                 " ' imgs=' + imgs.length + ' loaded=' + ok + ' svgs=' + document.querySelectorAll('svg').length +"
                 " ' overflow=' + Math.max(0, document.documentElement.scrollWidth - window.innerWidth);"
                 "document.body.appendChild(p); });</script></body></html>\n", html);
    fclose(out);
    char cwd[512], url[700], profile[] = "/tmp/cmlab_chromium_XXXXXX", udd[64];
    CM_ASSERT(getcwd(cwd, sizeof cwd) && mkdtemp(profile), "cwd or mkdtemp failed");
    snprintf(url, sizeof url, "file://%s/abl_runs/sweep/report_check.html", cwd);
    snprintf(udd, sizeof udd, "--user-data-dir=%s", profile);
    int rc = run_argv((char *[]){"/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
                                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                                 "--disable-component-update", "--disable-sync", "--window-size=560,800", udd,
                                 "--virtual-time-budget=10000", "--dump-dom", url, NULL});
    /* The paragraph the script added (the script's own text holds the words too). */
    const char *mark = strstr(out_buf, "<p id=\"check\">CHECK rows=");
    int rows = -1, imgs = -1, loaded = -1, svgs = -1, overflow = -1;
    if (mark)
        sscanf(mark, "<p id=\"check\">CHECK rows=%d imgs=%d loaded=%d svgs=%d overflow=%d", &rows, &imgs, &loaded,
               &svgs, &overflow);
    printf("chromium: %d table rows, %d images (%d loaded), %d SVG charts; page %d px wider than a 560 px window\n",
           rows, imgs, loaded, svgs, overflow);
    CHECK(rc == 0 && mark, "chromium --dump-dom exits %d without the check line (is Debian's chromium installed?):\n%.2000s",
          rc, out_buf);
    CHECK(rows == 2 && imgs == 4 && loaded == 4 && svgs == 2,
          "report.html: %d rows (want 2), %d images (want 4: 2 variants x NFE 1, 2), %d loaded, %d charts (want 2)",
          rows, imgs, loaded, svgs);
    CHECK(overflow == 0, "report.html: the page is %d px wider than a 560 px window", overflow);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", profile);
    CHECK(system(cmd) == 0, "cannot remove %s", profile);
}

/* A checkpoint sampled in fp32 and in bf16 (experiments/ablations/bf16.ini's last column): ablate
 * must find the bf16 records, whose options end in precision=bf16, on a rerun. */
static void test_ablate_precision(void)
{
    write_exp("abl_runs/prec.ini",
              "# fp32 and bf16 sampling of one checkpoint for test_ablate.\n"
              "[experiment]\nmethod = edm\nout_dir = abl_runs\nname = prec\n"
              "[eval]\ncheckpoint = abl_runs/edm/ckpt/step_00000004.h5\n"
              "features = abl_runs/clf/ckpt/step_00000080.h5\nn = 16\nnfe = 3\nsweep = zip\n"
              "[sweep]\nmodel.precision = fp32, bf16\n");
    int rc = CMLAB("ablate", "abl_runs/prec.ini");
    CHECK(rc == 0, "precision ablation: exit %d\n%s", rc, out_buf);
    EvalRecord *rs = NULL;
    int n = eval_json_read("abl_runs/prec/01-bf16/eval.json", &rs);
    bool bf16 = gemm_bf16_available();
    CHECK(n == 1 && (strstr(rs[0].options, "precision=bf16") != NULL) == bf16,
          "01-bf16/eval.json: %d records, options '%s' (want precision=bf16: %d)", n, n > 0 ? rs[0].options : "",
          bf16);
    free(rs);
    char *csv = fixture_read_file("abl_runs/prec/results.csv", &(size_t){0});
    int done = 0;
    for (const char *p = csv; p && (p = strstr(p, ",done,")); p++) done++;   /* status done: every FD found */
    CHECK(done == 2, "precision results.csv has %d variants done (want 2):\n%s", done, csv ? csv : "(none)");
    free(csv);
    rc = CMLAB("ablate", "abl_runs/prec.ini");
    CHECK(rc == 0 && !strstr(out_buf, "evaluating") && strstr(out_buf, "01-bf16: evaluated"),
          "a rerun of the precision ablation evaluated again: exit %d\n%s", rc, out_buf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s CMLAB\n", argv[0]);
        return CM_EXIT_INPUT;
    }
    cmlab = argv[1];
    CM_ASSERT(system("rm -rf abl_runs && mkdir -p abl_runs/data") == 0, "cannot make abl_runs");
    char cwd[200];
    CM_ASSERT(getcwd(cwd, sizeof cwd), "getcwd");
    snprintf(data_dir, sizeof data_dir, "%s/abl_runs/data", cwd);
    write_split(data_dir, "train", 600, 1);
    write_split(data_dir, "t10k", 300, 2);
    double t0 = cm_now();
    test_classifier();
    test_eval_edm();
    test_stats_cache();
    test_ablate();
    test_ablate_zip();
    test_ablate_amed();
    test_ablate_precision();
    test_ablate_sigterm();
    test_report_renders();
    test_mid_t_records();
    test_data_signature();
    printf("%.0f s\n", cm_now() - t0);
    return test_summary("ablate");
}
