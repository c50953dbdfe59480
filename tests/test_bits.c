/* test_bits.c: pins the bits of training and of the trainer's sample grids, so that a refactor
 * of the training code (issue 13) can show that nothing changed.
 *
 * For each method (EDM; CT with an EMA target and the original curriculum; CT with the iCT
 * switches; CD from the EDM run's checkpoint; the classifier) a tiny run of a few steps from a
 * fixed seed, through trainer_run at 2 threads, leaves a checkpoint and sample grids. The test
 * hashes (SHA-256) every weight set of the checkpoint (online, target, teacher, EMAs), Adam's m
 * and v, the step and the schedule state, and separately the bytes of every sample grid PNG, and
 * compares both with the values recorded at commit 877f715, the commit before the refactor (see
 * CASES for the values recorded since, on purpose). A mismatch prints the new hash: a change that
 * moves a bit on purpose must say so and record the new value with its commit.
 */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "io/checkpoint.h"
#include "eval/eval.h"
#include "train/model.h"
#include "train/trainer.h"

#define OUT "bits_runs"

static const char *COMMON =
    "[experiment]\nseed = 5\nout_dir = " OUT "\n"
    "[data]\ndataset = fashion-mnist\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\ndropout = 0.1\n"
    "[classifier]\nchannels = 4,8\nfeatures = 16\nclasses = 10\n"
    "[sample]\nsolver = heun\nnfe = 5\nn = 8\n";

typedef struct Case {
    const char *name, *method;
    const char *sets[12];        /* --set overrides, NULL-terminated */
    const char *weights_hash, *grids_hash;
} Case;

/* Recorded at commit 877f715 (the commit before the refactor of issue 13); the trained states of
 * the four U-Net cases again when conv_out's forward moved to op_conv.c's direct path (session
 * 19: its sums run in another order than the im2col GEMM's; the grids and the classifier, whose
 * 1 -> 4 channel conv sums its 9 terms in the same order either way, kept their bits); ct's and
 * ict's states again when no-grad 3x3 convs took F(4x4, 3x3) (session 20: the target pass sums
 * otherwise; cd's L1 loss passes on only the sign of its target's difference, and the 8-bit
 * grids did not move); the four U-Net states again when fp32's passes with gradients took
 * F(4x4, 3x3) too, and its input and weight gradients F(4x4, 3x3)'s products, again when
 * group norm + SiLU's backward summed in float lanes, and again when dw's G^T dU G ran on 16
 * kernels a vector in float (session 21; the grids kept their bits). */
static const Case CASES[] = {
    {"edm", "edm", {"train.ema=0.9,0.99", NULL},
     "5db7c01eaf85129cb51665bf076d9e290b39bf62061e50cc97d87c9fa7c780bc",
     "d0521a2ab3b83b56ed337b8869eaf9c10484fbbdac9444f2ebc7e02d7be7d6bc"},
    {"ct", "ct", {"ct.target_mu=0.9", "ct.loss=l2", "ct.curriculum=original", "ct.sampling=uniform",
                  "ct.weighting=uniform", NULL},
     "e1386ca0b9f3cc585af44ea1fe8aa7f5dc42da1dca2d53442ed560cf9e3dda68",
     "0e6c3258fdeb0150f7bd0b16e6322a149b0945e958991aa5a78094562f149778"},
    {"ict", "ct", {"ct.target_mu=0", "ct.loss=pseudo_huber", "ct.curriculum=doubling", "ct.sampling=lognormal",
                   "ct.weighting=ict", NULL},
     "138936512cb83818fd4dcb0b185c090e16ea2d733f09bdf1a425a59091c73910",
     "61b7dbce847842c0848340fce9b107d9ed34413c25e251b438c7d5260417414c"},
    {"cd", "cd", {"cd.teacher=" OUT "/edm/ckpt/step_00000003.h5", "cd.solver=heun", "cd.N=18",
                  "cd.target_mu=0.9", "cd.loss=l1", NULL},
     "643f40b2162cc1c000aba95a33f1e2a1fbf0e30d0e60ef8e088480df3b406ef3",
     "59568964e7f0a7074164fceec22bafe6c22d1b4ff368d67ee8c3e5e87a4fc89c"},
    {"classifier", "classifier", {NULL},
     "4bf7d2d4553bfea70f91130876d06b4eaa5b3b7364878d670649d84a3d443b29",
     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
};

/* Trains case k for 3 steps; its run directory is OUT/<name>. */
static int train_case(const Case *k)
{
    char text[2048];
    snprintf(text, sizeof text,
             "%s[train]\niterations = 3\nbatch_size = 4\nlr = 0.002\nwarmup = 2\nema = 0.9\n"
             "checkpoint_every = 0\nsample_every = 0\nlog_every = 1\nthreads = 2\n",
             COMMON);
    Config cfg;
    if (config_from_string(&cfg, text, k->name) != 0) {
        printf("%s: %s\n", k->name, cm_errmsg());
        return -1;
    }
    char a[256];
    snprintf(a, sizeof a, "experiment.name=%s", k->name);
    if (config_set(&cfg, a) != 0) return -1;
    snprintf(a, sizeof a, "experiment.method=%s", k->method);
    if (config_set(&cfg, a) != 0) return -1;
    for (int i = 0; k->sets[i]; i++)
        if (config_set(&cfg, k->sets[i]) != 0) {
            printf("%s: %s\n", k->name, cm_errmsg());
            return -1;
        }
    return trainer_run(&cfg, false);
}

/* SHA-256 over every weight set (in name order), Adam's m and v, the step and the schedule
 * state of the checkpoint path. */
static int hash_checkpoint(const char *path, char hex[65])
{
    Config cfg;
    if (model_read_config(path, &cfg) != 0) return -1;
    UNet net;
    Classifier clf;
    memset(&net, 0, sizeof net);
    memset(&clf, 0, sizeof clf);
    const ParamSet *ps;
    if (cfg.experiment.method == CFG_METHOD_CLASSIFIER) {
        if (model_classifier_init(&cfg, NULL, 1, 28, 28, &clf) != 0) return -1;
        ps = &clf.ps;
    } else {
        UNetConfig u;
        model_unet_config(&cfg, 1, 28, 28, &u);
        if (unet_init(&net, &u) != 0) return -1;
        ps = &net.ps;
    }
    char names[CKPT_MAX_SETS][64];
    int n = ckpt_list_weights(path, names, CKPT_MAX_SETS);
    if (n < 0) return -1;
    Adam opt;
    optim_init(&opt, cfg.train.optimizer, ps->total, 0, 0.9f, 0.999f, 1e-8f, 0);
    CkptState s = {.ps = ps, .opt = &opt};
    float *buf[CKPT_MAX_SETS];
    for (int i = 0; i < n; i++) {
        buf[i] = params_buffer(ps);
        ckpt_add_weights(&s, names[i], buf[i]);
    }
    int rc = ckpt_load(path, &s);
    Sha256 h;
    sha256_init(&h);
    for (int i = 0; rc == 0 && i < n; i++) {
        sha256_update(&h, names[i], strlen(names[i]) + 1);
        sha256_update(&h, buf[i], ps->total * sizeof(float));
    }
    if (rc == 0) {
        sha256_update(&h, opt.m, ps->total * sizeof(float));
        sha256_update(&h, opt.v, ps->total * sizeof(float));
        sha256_update(&h, &s.step, sizeof s.step);
        sha256_update(&h, &s.sched_N, sizeof s.sched_N);
        sha256_update(&h, &s.sched_mu, sizeof s.sched_mu);
    }
    sha256_final(&h, hex);
    for (int i = 0; i < n; i++) free(buf[i]);
    free(s.loaded_config);
    adam_free(&opt);
    unet_free(&net);
    classifier_free(&clf);
    return rc;
}

static int name_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* SHA-256 over the names and bytes of every file in dir, in name order ("" for no files). */
static void hash_dir(const char *dir, char hex[65])
{
    char *names[64];
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && n < 64 && (e = readdir(d));)
        if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, (size_t)n, sizeof *names, name_cmp);
    Sha256 h;
    sha256_init(&h);
    for (int i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        sha256_update(&h, names[i], strlen(names[i]) + 1);
        FILE *f = fopen(path, "rb");
        char b[4096];
        for (size_t r; f && (r = fread(b, 1, sizeof b, f)) > 0;) sha256_update(&h, b, r);
        if (f) fclose(f);
        free(names[i]);
    }
    sha256_final(&h, hex);
}

/* Trains every case and hashes its state and grids into wh[i], gh[i]. */
static void run_cases(char wh[][65], char gh[][65])
{
    CM_ASSERT(system("rm -rf " OUT) == 0, "cannot remove " OUT);
    for (size_t i = 0; i < CM_ARRAY_LEN(CASES); i++) {
        const Case *k = &CASES[i];
        wh[i][0] = gh[i][0] = '\0';
        int rc = train_case(k);
        CHECK(rc == 0, "%s: cmlab train exits %d", k->name, rc);
        if (rc != 0) continue;
        char path[600];
        snprintf(path, sizeof path, OUT "/%s/ckpt/step_00000003.h5", k->name);
        CHECK(hash_checkpoint(path, wh[i]) == 0, "%s: %s", k->name, cm_errmsg());
        snprintf(path, sizeof path, OUT "/%s/samples", k->name);
        hash_dir(path, gh[i]);
        printf("%s: state %s, grids %s\n", k->name, wh[i], gh[i]);
    }
}

/* argv[1]: "pinned" in the build the hashes were recorded with (native, release, no sanitizer;
 * tests/meson.build decides), else "repeat". Float sums are another valid order in another
 * build (-O2 with sanitizers, no -march=native) or on a CPU without AVX-512 (no Winograd path),
 * so there the test checks what still holds: two runs give the same bits. */
int main(int argc, char **argv)
{
    bool pinned = argc > 1 && !strcmp(argv[1], "pinned") && __builtin_cpu_supports("avx512f");
    static char wh[CM_ARRAY_LEN(CASES)][65], gh[CM_ARRAY_LEN(CASES)][65];
    static char wh2[CM_ARRAY_LEN(CASES)][65], gh2[CM_ARRAY_LEN(CASES)][65];
    run_cases(wh, gh);
    if (!pinned) {
        printf("not the build the bits were recorded in (%s): checking that a second run repeats them\n",
               argc > 1 && !strcmp(argv[1], "pinned") ? "no AVX-512 on this CPU" : "build options");
        run_cases(wh2, gh2);
    }
    for (size_t i = 0; i < CM_ARRAY_LEN(CASES); i++) {
        const Case *k = &CASES[i];
        const char *want_w = pinned ? k->weights_hash : wh[i], *want_g = pinned ? k->grids_hash : gh[i];
        const char *got_w = pinned ? wh[i] : wh2[i], *got_g = pinned ? gh[i] : gh2[i];
        const char *when = pinned ? "as recorded" : "in the first run";
        CHECK(!strcmp(got_w, want_w), "%s: the trained state's SHA-256 is %s; %s it was %s", k->name, got_w, when,
              want_w);
        CHECK(!strcmp(got_g, want_g), "%s: the sample grids' SHA-256 is %s; %s it was %s", k->name, got_g, when,
              want_g);
    }
    return test_summary("bits");
}
