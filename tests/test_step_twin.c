/* test_step_twin.c TORCH_PYTHON STEP_TWIN_PY CMLAB: the first two `cmlab train` steps of every
 * method against whole-step PyTorch twins (tests/torch/step_twin.py, whose docstring says what the
 * twin recomputes and from what).
 *
 * The test writes a tiny MNIST-format data set (10 images of 28x28, padded to 32, flipped at
 * random: batch 6 so the second batch wraps into the next epoch's order), then for each case below
 * writes an experiment file, runs `cmlab train` for 2 steps with a checkpoint after each, and
 * writes the weights before the first update to RUN/init/step_00000000.h5. The trainer draws them
 * with params_randomize(experiment.seed), which the test calls the same way; a twin that started
 * from other weights would disagree at step 1, so the file is checked by the twin itself. CD needs
 * no such file: its student starts from the teacher checkpoint, the edm case's step 2; nor does
 * bcm_ft, which starts from its bcm.init.
 *
 * Then the twin redoes both steps from the resolved config.ini on its own chain of states and
 * compares, after each step, Adam's m and v (every tensor: the gradients of the step, so the noise
 * levels, intervals, weights, distance, dropout masks and data order), the logged loss, gradient
 * norm and learning rate, the step, N(k), mu(k) and the data cursor; and it checks the online
 * weights, every EMA and the target network by their update rules applied to cmlab's own previous
 * checkpoint (Adam's update from the new moments, the EMA rates, mu(k)): step_twin.py explains why
 * the weights are not compared along the twin's chain, and its bounds.
 * Cases (together every value of every [ct] switch, and each optimiser):
 *   edm       dropout, p_mean/p_std set, gradient clipping, a half-life EMA with ramp-up
 *   ct        original CT: l2, uniform indices and weights, sqrt curriculum (s0 2, s1 10 over
 *             K = 2 steps, so N(k) and mu(k) change every step), EMA target mu0 0.9, AdamW
 *   ict       iCT: pseudo-Huber, lognormal indices, iCT weighting, doubling curriculum, target =
 *             online, dropout 0.3 (masks shared by both passes), Fourier embedding 0.02, RAdam
 *   ct_mix1   l1, lognormal (p_mean, p_std set), uniform weights, original curriculum, target =
 *             online, warm-up 2 (step 1 has lr 0)
 *   ct_mix2   pseudo-Huber, uniform indices, iCT weighting, doubling curriculum with an EMA
 *             target (mu0 0.95), Adam with L2 weight decay
 *   cd        Heun teacher step, N 18, l2, target = online (CIFAR-10 recipe)
 *   cd_euler  Euler teacher step, N 10, pseudo-Huber, EMA target 0.95, student dropout
 *   bcm       BCM from scratch: doubling curriculum (N 5, then 9), dropout 0.2 in all four passes,
 *             the pseudo-Huber c of iCT's rule, RAdam
 *   bcm_ft    BCM fine-tuned from the ict case's step 2 (bcm.init; the twin maps the weights itself:
 *             u branch = t branch, align = [I, 0]), bcm.N 11, bcm.huber_c 0.05, Fourier, dropout 0.3,
 *             Adam
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/rng.h"
#include "fixture.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "train/model.h"

#define DIR "step_twin_runs"
#define NDATA 10
#define S 28

static const char *torch_python, *twin_script, *cmlab;

/* Runs argv with stdout and stderr appended to DIR/log.txt; returns the exit status. */
static int run(char *const *argv) { return fixture_run(argv, DIR "/log.txt", NULL, NULL); }

/* NDATA images: a bright rectangle (sides and corner from the counter RNG) over a left-to-right
 * ramp, so that a flip changes the image. */
static void write_data(void)
{
    float u[4 * NDATA];
    rng_uniform(&(Rng){.seed = 9, .stream = 1}, u, NDATA, 0, 4);
    FILE *im = fopen(DIR "/data/train-images-idx3-ubyte", "wb");
    FILE *lb = fopen(DIR "/data/train-labels-idx1-ubyte", "wb");
    CM_ASSERT(im && lb, "cannot write the data set in " DIR "/data");
    fixture_be32(im, 0x803), fixture_be32(im, NDATA), fixture_be32(im, S), fixture_be32(im, S);
    fixture_be32(lb, 0x801), fixture_be32(lb, NDATA);
    for (int i = 0; i < NDATA; i++) {
        const float *r = u + 4 * i;
        int w = 6 + (int)(r[0] * 12), h = 6 + (int)(r[1] * 12);
        int x0 = (int)(r[2] * (S - w + 1)), y0 = (int)(r[3] * (S - h + 1));
        uint8_t img[S * S];
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                img[y * S + x] = (x >= x0 && x < x0 + w && y >= y0 && y < y0 + h) ? 250 : (uint8_t)(4 * x);
        fwrite(img, 1, sizeof img, im);
        fputc(i % 10, lb);
    }
    fclose(im);
    fclose(lb);
}

static const char *BASE =
    "[experiment]\nseed = 11\nout_dir = " DIR "\n"
    "[data]\ndataset = mnist\npath = " DIR "/data\npad_to = 32\nhflip = true\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nattn_resolutions = 16\nattn_heads = 2\n"
    "[train]\niterations = 2\nbatch_size = 6\nlr = 0.002\nema = 0.9,0.99\ncheckpoint_every = 1\n"
    "keep_checkpoints = 0\nsample_every = 0\nlog_every = 1\nthreads = 1\n"
    "[sample]\nsolver = euler\nnfe = 2\nn = 1\n";

typedef struct Case {
    const char *name, *extra;
} Case;

static const Case CASES[] = {
    {"edm", "[experiment]\nmethod = edm\n[model]\ndropout = 0.1\n[edm]\np_mean = -1.0\np_std = 1.4\n"
            "[train]\ngrad_clip = 0.5\nema_halflife_kimg = 0.01\nema_rampup = 0.5\n"},
    {"ct", "[experiment]\nmethod = ct\n[ct]\nloss = l2\nsampling = uniform\nweighting = uniform\n"
           "curriculum = original\ns0 = 2\ns1 = 10\ntarget_mu = 0.9\n"
           "[train]\noptimizer = adamw\nweight_decay = 0.01\n"},
    {"ict", "[experiment]\nmethod = ct\n[ct]\nloss = pseudo_huber\nsampling = lognormal\nweighting = ict\n"
            "curriculum = doubling\ntarget_mu = 0\n[model]\ndropout = 0.3\nemb_type = fourier\n"
            "fourier_scale = 0.02\n[train]\noptimizer = radam\n"},
    {"ct_mix1", "[experiment]\nmethod = ct\n[ct]\nloss = l1\nsampling = lognormal\np_mean = -0.5\np_std = 1.5\n"
                "weighting = uniform\ncurriculum = original\ns0 = 3\ns1 = 20\ntarget_mu = 0\n"
                "[train]\nwarmup = 2\n"},
    {"ct_mix2", "[experiment]\nmethod = ct\n[ct]\nloss = pseudo_huber\nsampling = uniform\nweighting = ict\n"
                "curriculum = doubling\ns0 = 4\ns1 = 16\ntarget_mu = 0.95\n[train]\nweight_decay = 0.01\n"},
    {"cd", "[experiment]\nmethod = cd\n[cd]\nteacher = " DIR "/edm/ckpt/step_00000002.h5\nteacher_weights = online\n"
           "solver = heun\nloss = l2\n"},
    {"cd_euler", "[experiment]\nmethod = cd\n[cd]\nteacher = " DIR "/edm/ckpt/step_00000002.h5\n"
                 "teacher_weights = online\nsolver = euler\nN = 10\nloss = pseudo_huber\ntarget_mu = 0.95\n"
                 "[model]\ndropout = 0.2\n"},
    {"bcm", "[experiment]\nmethod = bcm\n[ct]\ncurriculum = doubling\ns0 = 4\ns1 = 16\n[model]\ndropout = 0.2\n"
            "[train]\noptimizer = radam\n"},
    {"bcm_ft", "[experiment]\nmethod = bcm\n[bcm]\ninit = " DIR "/ict/ckpt/step_00000002.h5\ninit_weights = online\n"
               "N = 11\nhuber_c = 0.05\n[model]\ndropout = 0.3\nemb_type = fourier\nfourier_scale = 0.02\n"},
};

/* RUN/init/step_00000000.h5: the online weights the trainer starts from (trainer.c's setup:
 * the U-Net of the resolved [model] and params_randomize with experiment.seed). */
static int write_init(const char *run_dir)
{
    char path[256];
    snprintf(path, sizeof path, "%s/config.ini", run_dir);
    Config cfg;
    if (config_load(&cfg, path) != 0) return -1;
    int C, H, W;
    if (model_image_shape(&cfg, &C, &H, &W) != 0) return -1;
    UNetConfig u;
    model_unet_config(&cfg, C, H, W, &u);
    UNet net;
    if (unet_init(&net, &u) != 0) return -1;
    float *w = params_buffer(&net.ps);
    params_randomize(&net.ps, w, (uint64_t)cfg.experiment.seed);
    char *text = config_to_string(&cfg);
    CkptState s = {.ps = &net.ps, .method = config_method_name(cfg.experiment.method), .config = text,
                   .seed = (uint64_t)cfg.experiment.seed, .world_size = 1};
    ckpt_add_weights(&s, "online", w);
    snprintf(path, sizeof path, "%s/init", run_dir);
    int rc = ckpt_save(path, &s, NULL, 0);
    free(text);
    free(w);
    unet_free(&net);
    return rc;
}

int main(int argc, char **argv)
{
    CM_ASSERT(argc == 4, "usage: test_step_twin TORCH_PYTHON step_twin.py CMLAB");
    torch_python = argv[1];
    twin_script = argv[2];
    cmlab = argv[3];
    if (system("rm -rf " DIR " && mkdir -p " DIR "/data") != 0) return 1;
    write_data();

    char *twin_argv[2 + CM_ARRAY_LEN(CASES) + 1] = {(char *)torch_python, (char *)twin_script};
    int ntwin = 2;
    static char run_dirs[CM_ARRAY_LEN(CASES)][128];
    for (size_t i = 0; i < CM_ARRAY_LEN(CASES); i++) {
        const Case *c = &CASES[i];
        char exp[128];
        snprintf(exp, sizeof exp, DIR "/%s.ini", c->name);
        FILE *f = fopen(exp, "w");
        CM_ASSERT(f, "cannot write %s", exp);
        fprintf(f, "%s%s[experiment]\nname = %s\n", BASE, c->extra, c->name);
        fclose(f);
        int rc = run((char *[]){(char *)cmlab, "train", exp, NULL});
        CHECK(rc == 0, "cmlab train %s: exit %d (log in " DIR "/log.txt)", exp, rc);
        if (rc != 0) continue;
        snprintf(run_dirs[i], sizeof run_dirs[i], DIR "/%s", c->name);
        if (strcmp(c->name, "cd") != 0 && strcmp(c->name, "cd_euler") != 0 && strcmp(c->name, "bcm_ft") != 0)
            CHECK(write_init(run_dirs[i]) == 0, "%s: cannot write the initial weights: %s", c->name, cm_errmsg());
        twin_argv[ntwin++] = run_dirs[i];
    }
    twin_argv[ntwin] = NULL;

    /* The twin's report goes to our stdout (the test log). */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execv(twin_argv[0], twin_argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    CHECK(rc == 0, "step_twin.py found differences (exit %d): see the FAIL lines above", rc);
    return test_summary("step_twin");
}
