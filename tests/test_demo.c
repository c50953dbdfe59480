/* test_demo.c CMLAB: `cmlab demo`, the README's main job, end to end at a tiny time budget (argv[1]
 * is the cmlab binary; the data is the real Fashion-MNIST package):
 *   - the default recipe (iCT from scratch, one stage) exits 0 and prints the paths of a 1-step
 *     and a 2-step grid, which are PNGs of 8 x 8 tiles of 28 x 28; its run is method = ct;
 *   - --recipe cd runs both stages (the EDM teacher, then CD of its newest checkpoint), prints
 *     its grids, and the CD stage's config names the teacher checkpoint it distilled;
 *   - --resume after a finished demo skips both stages;
 *   - --print-config prints stage files that parse as experiments;
 *   - a bad option, recipe or key exits 2;
 *   - --cifar10 PATH on a generated cifar-10-binary.tar.gz (scaled down through --set): the run
 *     reads it (its config has the data set and the path), ends with grids of 8 x 8 tiles of
 *     3 x 32 x 32, and --print-config --cifar10 prints the CIFAR-10 experiment; a missing path or a
 *     file that is not CIFAR-10 exits 2 naming it, and so does --cifar10 together with --data.
 * Quality at the real budget is not a test (see README "The demo" for what it measured).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "data/image.h"
#include "fixture.h"
#include "io/experiment.h"

#define DIR "demo_runs"

static const char *cmlab;
static char out[1 << 16];

/* Runs cmlab with args; its stdout goes to `out`. Returns the exit status. */
static int run(char *const *args)
{
    fflush(stdout);
    FILE *f = tmpfile();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fileno(f), 1);
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execv(cmlab, args);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    rewind(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = 0;
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The path after `label` in out, into path; false if absent. */
static bool printed_path(const char *label, char *path, size_t len)
{
    const char *p = strstr(out, label);
    if (!p) return false;
    p += strlen(label);
    size_t n = strcspn(p, "\n");
    snprintf(path, len, "%.*s", (int)n, p);
    return true;
}

/* The grid whose path follows label: 8 x 8 tiles of side x side, c channels. */
static void check_grid_of(const char *label, int side, int channels)
{
    char path[512];
    bool found = printed_path(label, path, sizeof path);
    CHECK(found, "cmlab demo did not print '%s'", label);
    if (!found) return;
    uint8_t *pix = NULL;
    int w = 0, h = 0, c = 0;
    int rc = image_read_png(path, &pix, &w, &h, &c);
    /* 2 pixels around and between the tiles (image_write_grid). */
    int want = 8 * (side + 2) + 2;
    CHECK(rc == 0 && w == want && h == want && c == channels, "%s %s: %dx%dx%d (rc %d), want %dx%dx%d", label,
          path, w, h, c, rc, want, want, channels);
    printf("demo: %s%s (%dx%dx%d)\n", label, path, w, h, c);
    free(pix);
}

static void check_grid(const char *label) { check_grid_of(label, 28, 1); }

/* The exit code is 2 and stderr names `what`. */
static void check_refused(char *const *args, const char *what, const char *case_name)
{
    fflush(stdout);
    FixtureRun r = fixture_run_capture(args);
    CHECK(r.code == 2 && strstr(r.err, what), "%s: exit %d (want 2), stderr does not name %s:\n%s", case_name,
          r.code, what, r.err);
    printf("demo: %s -> exit %d: %.*s\n", case_name, r.code, (int)strcspn(r.err, "\n"), r.err);
}

/* The demo on CIFAR-10 (--cifar10) on a generated tarball, scaled down to a few small steps. */
static void test_cifar10(void)
{
    const char *tgz = DIR "/generated-cifar-10-binary.tar.gz";
    fixture_write_cifar10(tgz, NULL);
    int rc = run((char *[]){(char *)cmlab, "demo", "--cifar10", (char *)tgz, "--seconds", "30", "--out", DIR,
                            "--threads", "1", "--set", "train.iterations=4", "--set", "train.batch_size=8", NULL});
    CHECK(rc == 0, "cmlab demo --cifar10 %s exited %d:\n%s", tgz, rc, out);
    CHECK(strstr(out, "on CIFAR-10") && strstr(out, "demo stage 1 of 1: iCT"), "the CIFAR-10 demo's header:\n%s", out);
    check_grid_of("1-step samples: ", 32, 3);
    check_grid_of("2-step samples: ", 32, 3);
    Config cfg;
    rc = config_load(&cfg, DIR "/demo_cifar10/config.ini");
    CHECK(rc == 0 && cfg.experiment.method == CFG_METHOD_CT && cfg.data.hflip &&
              !strcmp(config_enum_name("data.dataset", cfg.data.dataset), "cifar10") && !strcmp(cfg.data.path, tgz),
          "the CIFAR-10 demo's run is not iCT on %s (%s)", tgz, rc == 0 ? cfg.data.path : cm_errmsg());

    rc = run((char *[]){(char *)cmlab, "demo", "--cifar10", (char *)tgz, "--recipe", "cd", "--print-config", NULL});
    CHECK(rc == 0 && strstr(out, "dataset = cifar10") && strstr(out, "name = demo_cifar10_teacher") &&
              strstr(out, "name = demo_cifar10_cd"),
          "--cifar10 --recipe cd --print-config: exit %d:\n%s", rc, out);

    /* A refused run leaves the previous demo's checkpoints alone. */
    const char *ckpt = DIR "/demo_cifar10/ckpt/step_00000004.h5";
    CHECK(access(ckpt, F_OK) == 0, "the CIFAR-10 demo wrote no %s", ckpt);
    const char *missing = DIR "/no-such-cifar.tar.gz";
    check_refused((char *[]){(char *)cmlab, "demo", "--cifar10", (char *)missing, "--out", DIR, "--threads", "1",
                             NULL},
                  missing, "--cifar10 with a missing path");
    const char *bad = DIR "/demo_cifar10/config.ini";
    check_refused((char *[]){(char *)cmlab, "demo", "--cifar10", (char *)bad, "--out", DIR, "--threads", "1", NULL},
                  bad, "--cifar10 with a file that is not CIFAR-10");
    CHECK(access(ckpt, F_OK) == 0, "a refused demo removed the previous demo's checkpoint %s", ckpt);
    check_refused((char *[]){(char *)cmlab, "demo", "--cifar10", (char *)tgz, "--data", DIR, NULL}, "--data",
                  "--cifar10 with --data");
    remove(tgz);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_demo CMLAB_BINARY\n");
        return 2;
    }
    cmlab = argv[1];
    if (system("rm -rf " DIR) != 0) return 1;

    int rc = run((char *[]){(char *)cmlab, "demo", "--seconds", "10", "--out", DIR, "--threads", "1", NULL});
    CHECK(rc == 0, "cmlab demo --seconds 10 exited %d:\n%s", rc, out);
    CHECK(strstr(out, "demo stage 1 of 1: iCT"), "the default recipe is not the one iCT stage:\n%s", out);
    check_grid("1-step samples: ");
    check_grid("2-step samples: ");
    Config cfg;
    rc = config_load(&cfg, DIR "/demo/config.ini");
    CHECK(rc == 0 && cfg.experiment.method == CFG_METHOD_CT && cfg.ct.target_mu == 0,
          "the default demo's run is not iCT (method %d, %s)", rc == 0 ? (int)cfg.experiment.method : -1,
          rc == 0 ? "" : cm_errmsg());

    rc = run((char *[]){(char *)cmlab, "demo", "--recipe", "cd", "--seconds", "10", "--out", DIR, "--threads", "1",
                        NULL});
    CHECK(rc == 0, "cmlab demo --recipe cd --seconds 10 exited %d:\n%s", rc, out);
    CHECK(strstr(out, "demo stage 1 of 2") && strstr(out, "demo stage 2 of 2"), "the cd recipe did not run both stages");
    check_grid("1-step samples: ");
    check_grid("2-step samples: ");
    rc = config_load(&cfg, DIR "/demo_cd/config.ini");
    CHECK(rc == 0 && cfg.experiment.method == CFG_METHOD_CD && !strncmp(cfg.cd.teacher, DIR "/demo_teacher/ckpt/step_", 28),
          "the CD stage's config does not distil the teacher stage's checkpoint (cd.teacher = '%s')",
          rc == 0 ? cfg.cd.teacher : cm_errmsg());

    rc = run((char *[]){(char *)cmlab, "demo", "--recipe", "cd", "--seconds", "10", "--out", DIR, "--threads", "1",
                        "--resume", NULL});
    CHECK(rc == 0 && strstr(out, "demo stage 1 of 2 (the EDM") && strstr(out, "finished before, skipped") &&
              !strstr(out, "\nrun "),
          "--resume after a finished demo should skip both stages (exit %d):\n%s", rc, out);

    rc = run((char *[]){(char *)cmlab, "demo", "--print-config", NULL});
    CHECK(rc == 0 && strstr(out, "method = ct") && !strstr(out, "# stage 2"), "--print-config: exit %d", rc);
    Config one;
    CHECK(config_from_string(&one, out, "the ict stage") == 0, "the printed ict stage does not parse: %s", cm_errmsg());
    rc = run((char *[]){(char *)cmlab, "demo", "--recipe", "cd", "--print-config", NULL});
    CHECK(rc == 0 && strstr(out, "method = edm") && strstr(out, "method = cd"), "--recipe cd --print-config: exit %d", rc);
    char *second = strstr(out, "# stage 2");
    CHECK(second != NULL, "--print-config printed no second stage");
    if (second) {
        char *first = strndup(out, (size_t)(second - out));
        Config a, b;
        CHECK(config_from_string(&a, first, "stage 1") == 0 && config_from_string(&b, second, "stage 2") == 0,
              "the printed stages do not parse: %s", cm_errmsg());
        free(first);
    }

    CHECK(run((char *[]){(char *)cmlab, "demo", "--recipe", "lcm", NULL}) == 2, "--recipe lcm should exit 2");
    CHECK(run((char *[]){(char *)cmlab, "demo", "--seconds", "-3", NULL}) == 2, "--seconds -3 should exit 2");
    CHECK(run((char *[]){(char *)cmlab, "demo", "--set", "train.batchsize=8", NULL}) == 2, "a typo'd key should exit 2");
    CHECK(run((char *[]){(char *)cmlab, "demo", "extra", NULL}) == 2, "an extra argument should exit 2");
    test_cifar10();
    return test_summary("demo");
}
