/* test_cifar10.c CMLAB PYTHON FD_VS_TIME_PY: the CIFAR-10 tooling end to end through the `cmlab` binary (argv[1]) on a
 * generated cifar-10-binary.tar.gz (tests/fixture.h: CI has no CIFAR-10), with tiny networks:
 *   - method = classifier trains a 3x32x32 feature network on it;
 *   - `cmlab eval` of a 3x32x32 CT checkpoint with that feature network writes one record per NFE
 *     (1 and 2) naming the data set cifar10;
 *   - `cmlab eval --baselines` on it: the test split is closer to the training split than uniform
 *     noise and the shuffled test images (the generated images are smooth ramps, which neither is);
 *   - a Fashion-MNIST feature network is refused for the CIFAR-10 checkpoint (exit 2, naming both
 *     data sets);
 *   - every checkpoint records train_seconds, the wall time of training behind it, summed over
 *     resumes: positive and at most the run's wall time measured here around the process, and
 *     after a --resume at least the resumed checkpoint's value and at most it plus the second
 *     process's wall time; `cmlab info` prints it;
 *   - tools/fd_vs_time.py over that run: its CSV has a row per checkpoint (steps 2 and 4) and NFE
 *     (1, 2) whose train_seconds is the checkpoint's attribute (read here with HDF5) and whose FD
 *     is a positive number, and it writes the table and the chart page; with --points 1 it scores
 *     the last checkpoint only.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"

#define DIR "cifar10_runs"
#define TGZ DIR "/cifar-10-binary.tar.gz"

static const char *cmlab, *python, *fd_vs_time;

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CM_ASSERT(f && fputs(text, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

/* Runs cmlab with args (NULL-terminated) and prints the first line of stderr on failure. */
static FixtureRun cm(char *const *args)
{
    fflush(stdout);
    FixtureRun r = fixture_run_capture(args);
    if (r.code) printf("  exit %d: %.300s\n", r.code, r.err);
    return r;
}

/* The number after `label` in text, NAN if absent. */
static double number_after(const char *text, const char *label)
{
    const char *p = strstr(text, label);
    return p ? strtod(p + strlen(label), NULL) : NAN;
}

/* The checkpoint's train_seconds attribute, read with HDF5 directly (NAN if missing). */
static double train_seconds(const char *path)
{
    Fixture f;
    fixture_open(&f, path);
    double v = fixture_attr_double(&f, "/", "train_seconds", NAN);
    fixture_close(&f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: test_cifar10 CMLAB_BINARY PYTHON FD_VS_TIME_PY\n");
        return 2;
    }
    cmlab = argv[1], python = argv[2], fd_vs_time = argv[3];
    if (system("rm -rf " DIR " && mkdir -p " DIR) != 0) return 1;
    fixture_write_cifar10(TGZ, NULL);

    write_text(DIR "/clf.ini", "[experiment]\nname = clf\nmethod = classifier\nout_dir = " DIR "\n"
               "[data]\ndataset = cifar10\npath = " TGZ "\nhflip = true\n"
               "[classifier]\nchannels = 8,16\nfeatures = 32\n"
               "[train]\niterations = 20\nbatch_size = 32\nlr = 0.003\nema = 0.9\ncheckpoint_every = 0\n"
               "sample_every = 0\nlog_every = 10\nthreads = 1\n");
    FixtureRun r = cm((char *[]){(char *)cmlab, "train", DIR "/clf.ini", NULL});
    CHECK(r.code == 0 && strstr(r.out, "test accuracy"), "the CIFAR-10 classifier run: exit %d", r.code);
    const char *clf = DIR "/clf/ckpt/step_00000020.h5";

    write_text(DIR "/ct.ini", "[experiment]\nname = ct\nmethod = ct\nout_dir = " DIR "\n"
               "[data]\ndataset = cifar10\npath = " TGZ "\nhflip = true\n"
               "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
               "[train]\niterations = 2\nbatch_size = 4\nema = 0.9\ncheckpoint_every = 0\n"
               "sample_every = 0\nthreads = 1\n[sample]\nn = 4\n");
    double t0 = cm_now();
    r = cm((char *[]){(char *)cmlab, "train", DIR "/ct.ini", NULL});
    double wall = cm_now() - t0;
    CHECK(r.code == 0, "the CIFAR-10 CT run: exit %d", r.code);
    const char *ct = DIR "/ct/ckpt/step_00000002.h5";
    double secs = train_seconds(ct);
    printf("train_seconds %.3f of a process that ran %.3f s\n", secs, wall);
    CHECK(secs > 0 && secs <= wall, "%s: train_seconds %g, want in (0, %g]", ct, secs, wall);

    t0 = cm_now();
    r = cm((char *[]){(char *)cmlab, "train", DIR "/ct.ini", "--resume", "--set", "train.iterations=4", NULL});
    double wall2 = cm_now() - t0;
    CHECK(r.code == 0, "the resumed CIFAR-10 CT run: exit %d", r.code);
    const char *ct4 = DIR "/ct/ckpt/step_00000004.h5";
    double secs4 = train_seconds(ct4);
    printf("after --resume: train_seconds %.3f (resumed from %.3f, the second process ran %.3f s)\n", secs4, secs,
           wall2);
    CHECK(secs4 > secs && secs4 <= secs + wall2, "%s: train_seconds %g, want in (%g, %g]", ct4, secs4, secs,
          secs + wall2);
    r = cm((char *[]){(char *)cmlab, "info", (char *)ct4, NULL});
    CHECK(r.code == 0 && strstr(r.out, "train time   "), "cmlab info does not print the train time:\n%s", r.out);

    r = cm((char *[]){(char *)cmlab, "eval", (char *)ct, "--features", (char *)clf, "--n", "64", "--nfe", "1,2",
                      "--threads", "1", NULL});
    CHECK(r.code == 0, "cmlab eval of the 3x32x32 CT checkpoint with the 3x32x32 classifier: exit %d", r.code);
    char *json = fixture_read_file(DIR "/ct/eval.json", NULL);
    int records = 0;
    for (const char *p = json; p && (p = strstr(p, "\"dataset\": \"cifar10\"")); p++) records++;
    CHECK(json && records == 2 && strstr(json, "\"nfe\": 1") && strstr(json, "\"nfe\": 2"),
          "eval.json should hold 2 cifar10 records, at NFE 1 and 2:\n%s", json ? json : "(missing)");
    free(json);

    r = cm((char *[]){(char *)cmlab, "eval", "--baselines", "--features", (char *)clf, "--n", "200", "--threads", "1",
                      NULL});
    double split = number_after(r.out, "test split       FD"), noise = number_after(r.out, "uniform noise    FD"),
           shuffled = number_after(r.out, "shuffled pixels  FD");
    printf("baselines: test split %g, uniform noise %g, shuffled pixels %g\n", split, noise, shuffled);
    CHECK(r.code == 0 && split >= 0 && split < noise && split < shuffled,
          "cmlab eval --baselines on CIFAR-10: exit %d, test split %g, noise %g, shuffled %g:\n%s", r.code, split,
          noise, shuffled, r.out);

    r = cm((char *[]){(char *)python, (char *)fd_vs_time, DIR "/ct", "--features", (char *)clf, "--n", "32",
                      "--cmlab", (char *)cmlab, "--threads", "1", "--out", DIR "/fdt", NULL});
    CHECK(r.code == 0, "fd_vs_time.py: exit %d", r.code);
    char *csv = fixture_read_file(DIR "/fdt/fd_vs_time.csv", NULL);
    int rows = 0;
    for (int step = 2; step <= 4; step += 2)
        for (int nfe = 1; nfe <= 2; nfe++) {
            char path[128], head[64];
            snprintf(path, sizeof path, DIR "/ct/ckpt/step_%08d.h5", step);
            snprintf(head, sizeof head, "\nct,ct,%d,", step);
            double want = train_seconds(path), got = NAN, fd = NAN;
            int got_nfe = 0;
            for (const char *p = csv; p && (p = strstr(p, head)); p++)
                if (sscanf(p + strlen(head), "%lf,%d,%lf", &got, &got_nfe, &fd) == 3 && got_nfe == nfe) break;
            rows += got_nfe == nfe;
            CHECK(got_nfe == nfe && fabs(got - want) <= 0.051 && fd > 0,
                  "fd_vs_time.csv, step %d at NFE %d: train_seconds %g (the checkpoint's: %g), FD %g", step, nfe,
                  got, want, fd);
        }
    printf("fd_vs_time.csv: %d rows checked\n", rows);
    free(csv);
    char *md = fixture_read_file(DIR "/fdt/fd_vs_time.md", NULL), *page = fixture_read_file(DIR "/fdt/fd_vs_time.html",
                                                                                              NULL);
    CHECK(md && strstr(md, "| FD 1 NFE | FD 2 NFE |") && page && strstr(page, "FD at 2 NFE") && strstr(page, "<svg"),
          "fd_vs_time.md or .html lacks the NFE columns or the charts");
    free(md);
    free(page);
    r = cm((char *[]){(char *)python, (char *)fd_vs_time, DIR "/ct", "--features", (char *)clf, "--n", "32",
                      "--cmlab", (char *)cmlab, "--threads", "1", "--points", "1", "--out", DIR "/fdt1", NULL});
    csv = fixture_read_file(DIR "/fdt1/fd_vs_time.csv", NULL);
    CHECK(r.code == 0 && csv && strstr(csv, "\nct,ct,4,") && !strstr(csv, "\nct,ct,2,"),
          "fd_vs_time.py --points 1: exit %d; want only the last checkpoint (step 4):\n%s", r.code, csv ? csv : "");
    free(csv);

    write_text(DIR "/fm.ini", "[experiment]\nname = fm\nmethod = classifier\nout_dir = " DIR "\n"
               "[classifier]\nchannels = 4\nfeatures = 8\n"
               "[train]\niterations = 1\nbatch_size = 4\ncheckpoint_every = 0\nsample_every = 0\nthreads = 1\n");
    r = cm((char *[]){(char *)cmlab, "train", DIR "/fm.ini", NULL});
    CHECK(r.code == 0, "the Fashion-MNIST classifier run: exit %d", r.code);
    r = cm((char *[]){(char *)cmlab, "eval", (char *)ct, "--features", DIR "/fm/ckpt/step_00000001.h5", "--n", "8",
                      NULL});
    CHECK(r.code == 2 && strstr(r.err, "fashion-mnist") && strstr(r.err, "cifar10"),
          "a Fashion-MNIST feature network for a CIFAR-10 checkpoint: exit %d (want 2):\n%s", r.code, r.err);
    remove(TGZ);
    return test_summary("cifar10");
}
