/* test_twin_load.c PYTHON TWIN_SAMPLE_PY CMLAB: checkpoints written by `cmlab train` and by
 * `cmlab demo` with their default configurations load into the PyTorch twin the way
 * tools/README.md shows (cmlab_torch.load_checkpoint: the network config from the checkpoint's
 * resolved configuration, typed by cmlab's key table; model.skip_scale = sqrt_half among it), and
 * the twin's one-step sample equals `cmlab sample --steps 1`'s grid for the same seed
 * (tests/torch/twin_sample.py draws the same noise with philox.py). Before that, twin_sample.py
 * parses every key of the stored configuration (the whole key table) and every enum choice with
 * cmlab_torch.parse_value.
 *
 * The runs: an experiment file with nothing but `method = ct` (every [model], [ct] and [sample]
 * key at its default), the demo's embedded iCT recipe, and tools/ict_torch.py (the PyTorch twin
 * of the iCT recipe) on experiments/ict_cifar10_cpu.ini with a tiny network on a generated
 * CIFAR-10 tarball: its checkpoint must verify, `cmlab sample` must read the weights the twin
 * wrote (the same comparison), and its train_seconds must be positive. Both train 8 steps of 4 images at lr
 * 0.03 (only train.* keys change): the U-Net's output conv starts near zero, so after a couple
 * of default steps F is ~0 and the sample ~c_skip(80) x ~0, which any twin reproduces; 8 Adam
 * steps of 0.03 make F count, and the test checks that it does (below).
 *
 * Tolerance: the grid stores round((x + 1) * 127.5) of cmlab's float32 sample x, so each pixel
 * is within 0.5 of (x + 1) * 127.5, and the twin's float64 sample from the same float32 weights
 * and noise differs from x by the network's float32 rounding, which test_unet bounds at 1e-4
 * relative (a sample is in [-1, 1]): every pixel must be within 0.5 + 127.5e-4 levels of the
 * twin's (x_twin + 1) * 127.5. Sensitivity: the same sample with the other skip scale
 * (twin_sample.py's x_other_skip) must miss that bound on at least 5% of the pixels, or the
 * checkpoint could not tell a misread skip scale (the bug this guards: sqrt_half failed to parse)
 * from the right one. */
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "data/image.h"
#include "fixture.h"

#define DIR "twin_load_runs"
#define N_SAMPLES 16
#define N_TEXT "16"            /* N_SAMPLES for the command lines */
#define SEED "3"
#define TWIN_TOL 1e-4          /* test_unet's bound on the twin's relative difference */
#define MIN_SENSITIVE 0.05     /* share of pixels the other skip scale must move past the bound */

static const char *python, *script, *cmlab;

/* Runs argv with stdout and stderr into DIR/log; prints the log and returns false on failure. */
static bool run(char *const *argv)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(DIR "/log", "w", stdout) || dup2(fileno(stdout), 2) < 0) _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    printf("$");
    for (char *const *a = argv; *a; a++) printf(" %s", *a);
    printf("\n");
    FILE *f = fopen(DIR "/log", "r");
    char line[512];
    int lines = 0;
    while (f && fgets(line, sizeof line, f))
        if (!ok || ++lines <= 3 || strstr(line, "done") || strstr(line, "samples")) printf("    %s", line);
    if (f) fclose(f);
    CHECK(ok, "%s %s exited with status %d", argv[0], argv[1], WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return ok;
}

/* cmlab's grid of CKPT's one-step samples against the twin's, for weight set `weights` (cmlab's
 * spelling ema:0.99; the twin's ema/0.99). */
static void compare(const char *what, const char *ckpt, const char *weights)
{
    char png[256], h5[256], twin_weights[64];
    snprintf(png, sizeof png, DIR "/%s.png", what);
    snprintf(h5, sizeof h5, DIR "/%s_twin.h5", what);
    snprintf(twin_weights, sizeof twin_weights, "%s", weights);
    char *colon = strchr(twin_weights, ':');
    if (colon) *colon = '/';
    if (!run((char *[]){(char *)cmlab, "sample", (char *)ckpt, "--steps", "1", "--n", N_TEXT, "--seed", SEED,
                        "--weights", (char *)weights, "--out", png, "--threads", "2", NULL}))
        return;
    if (!run((char *[]){(char *)python, (char *)script, (char *)ckpt, twin_weights, N_TEXT, SEED, h5, NULL}))
        return;

    uint8_t *pix = NULL;
    int W = 0, H = 0, C = 0;
    CHECK(image_read_png(png, &pix, &W, &H, &C) == 0, "%s: %s", png, cm_errmsg());
    Fixture f;
    fixture_open(&f, h5);
    int nd, sh[4], nd2, sh2[4];
    float *x = fixture_read(&f, "/x", &nd, sh), *other = fixture_read(&f, "/x_other_skip", &nd2, sh2);
    char skip[32] = "?";
    fixture_attr_str(&f, "/", "skip_scale", skip, sizeof skip);
    fixture_close(&f);
    CM_ASSERT(nd == 4 && sh[0] == N_SAMPLES, "%s: x is not [%d, C, H, W]", h5, N_SAMPLES);
    const int c = sh[1], h = sh[2], w = sh[3], cols = (int)ceil(sqrt(N_SAMPLES)), pad = 2;
    const int rows = (N_SAMPLES + cols - 1) / cols;
    CHECK(C == c && W == cols * (w + pad) + pad && H == rows * (h + pad) + pad,
          "%s: %dx%dx%d, want the grid of %d tiles of %dx%dx%d", png, W, H, C, N_SAMPLES, c, h, w);
    if (C != c || W != cols * (w + pad) + pad || H != rows * (h + pad) + pad) {
        free(pix), free(x), free(other);
        return;
    }

    const double bound = 0.5 + 127.5 * TWIN_TOL;
    double worst = 0;
    size_t bad = 0, moved = 0, total = (size_t)N_SAMPLES * c * h * w, at = 0;
    for (int i = 0; i < N_SAMPLES; i++)
        for (int ch = 0; ch < c; ch++)
            for (int y = 0; y < h; y++)
                for (int xx = 0; xx < w; xx++) {
                    int py = pad + i / cols * (h + pad) + y, px = pad + i % cols * (w + pad) + xx;
                    double got = pix[((size_t)py * W + px) * C + ch];
                    size_t k = (((size_t)i * c + ch) * h + y) * w + xx;
                    double d = fabs(got - (x[k] + 1.0) * 127.5);
                    if (d > worst) worst = d, at = k;
                    bad += d > bound;
                    moved += fabs(got - (other[k] + 1.0) * 127.5) > bound;
                }
    printf("%s: %zu pixels (skip_scale %s, weights %s): cmlab's grid within %.4f levels of the twin's "
           "sample (bound %.4f); the other skip scale misses the bound on %.1f%% of them\n",
           what, total, skip, weights, worst, bound, 100.0 * moved / total);
    CHECK(bad == 0, "%s: %zu of %zu pixels of cmlab's one-step grid differ from the twin's sample by more "
          "than %.4f levels (worst %.3f at element %zu: twin %.6f)", what, bad, total, bound, worst, at,
          (double)x[at]);
    CHECK(moved >= MIN_SENSITIVE * total, "%s: the other skip scale moves only %zu of %zu pixels past the "
          "bound: this checkpoint cannot tell a misread config from the right one", what, moved, total);
    free(pix), free(x), free(other);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_twin_load PYTHON TWIN_SAMPLE_PY CMLAB\n");
        return CM_EXIT_INPUT;
    }
    python = argv[1], script = argv[2], cmlab = argv[3];
    CM_ASSERT(atoi(N_TEXT) == N_SAMPLES, "N_TEXT and N_SAMPLES disagree");
    if (system("rm -rf " DIR " && mkdir " DIR) != 0) return 1;
    FILE *f = fopen(DIR "/default_ct.ini", "w");
    CM_ASSERT(f && fputs("[experiment]\nmethod = ct\n", f) >= 0 && fclose(f) == 0, "cannot write the experiment");

    /* Only training keys change; sample.n shrinks the run's own end-of-run grid. */
    if (run((char *[]){(char *)cmlab, "train", DIR "/default_ct.ini", "--set", "experiment.out_dir=" DIR,
                       "--set", "train.iterations=8", "--set", "train.batch_size=4", "--set", "train.lr=0.03",
                       "--set", "train.threads=2", "--set", "sample.n=4", NULL}))
        compare("train", DIR "/default_ct/ckpt/step_00000008.h5", "online");

    if (run((char *[]){(char *)cmlab, "demo", "--seconds", "600", "--out", DIR, "--threads", "2",
                       "--set", "train.iterations=8", "--set", "train.batch_size=4", "--set", "train.lr=0.03",
                       "--set", "train.warmup=0", "--set", "sample.n=4", NULL}))
        compare("demo", DIR "/demo/ckpt/step_00000008.h5", "ema:0.99");

    /* tools/ict_torch.py beside tests/torch/: Adam at 0.03 for 8 steps, so F counts (above), and an
     * EMA of 0.9, so that its weights move too (0.999 would keep ~99% of the initial ones). */
    char ict[600], recipe[600], *copy = strdup(script);   /* dirname may change its argument */
    CM_ASSERT(copy, "out of memory");
    const char *torch_dir = dirname(copy);
    snprintf(ict, sizeof ict, "%s/../../tools/ict_torch.py", torch_dir);
    snprintf(recipe, sizeof recipe, "%s/../../experiments/ict_cifar10_cpu.ini", torch_dir);
    free(copy);
    fixture_write_cifar10(DIR "/cifar-10-binary.tar.gz", NULL);
    if (run((char *[]){(char *)python, ict, recipe, "--data", DIR "/cifar-10-binary.tar.gz", "--out", DIR "/ict_torch",
                       "--every", "1000", "--threads", "2", "--set", "model.channels=8", "--set",
                       "model.channel_mult=1,2", "--set", "model.num_blocks=1", "--set", "model.attn_resolutions=",
                       "--set", "train.iterations=8", "--set", "train.batch_size=4", "--set", "train.optimizer=adam",
                       "--set", "train.lr=0.03", "--set", "train.ema=0.9", "--set", "train.log_every=4", NULL})) {
        const char *ckpt = DIR "/ict_torch/ckpt/step_00000008.h5";
        CHECK(run((char *[]){(char *)cmlab, "info", (char *)ckpt, NULL}), "cmlab info does not verify %s", ckpt);
        Fixture fx;
        fixture_open(&fx, ckpt);
        double secs = fixture_attr_double(&fx, "/", "train_seconds", -1);
        fixture_close(&fx);
        CHECK(secs > 0, "%s: train_seconds %g", ckpt, secs);
        compare("ict_torch", ckpt, "ema:0.9");
    }
    remove(DIR "/cifar-10-binary.tar.gz");
    return test_summary("twin_load");
}
