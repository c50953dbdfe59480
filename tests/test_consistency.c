/* test_consistency.c CMLAB: tiny end-to-end runs of the consistency trainers through the cmlab
 * binary (argv[1]), on a synthetic data set the test writes: 512 PNGs of 16x16 pixels, each a white
 * axis-aligned rectangle (4..10 pixels a side, anywhere) on black.
 *
 * Runs (1 thread: the suite runs two tests at a time; a 16-channel 2-level U-Net, batch 32):
 *   edm  300 steps, the teacher of cd;
 *   cd   300 steps from it (Heun teacher step, N = 18, l2, target = online);
 *   ct   400 steps, original CT (l2, uniform indices, sqrt curriculum with s1 = 10, EMA target mu0 0.9);
 *   ict  400 steps, the iCT switches (pseudo-Huber, lognormal indices, doubling curriculum
 *        10 -> 40, iCT weighting, target = online).
 * Measured for each consistency run:
 *   - the training loss as metrics.jsonl logs it (means over 100 steps): the last window must be
 *     at most 0.85 of the first. For CT and iCT this fall includes the curriculum's (N(k) grows,
 *     so adjacent times come closer); CD's grid is fixed, and its student starts at the teacher,
 *     whose consistency loss is already small.
 *   - for information (not asserted), the method's own loss on one fixed batch (256 data
 *     images, fixed noise, every interval of the final grid in turn, no dropout) with the initial
 *     weights (CT: the seed's random init; CD: the teacher) and with the first EMA. A consistency
 *     loss measures self-consistency, which the untrained f = c_skip x nearly has: measured here,
 *     CT's barely moves while its samples go from noise to rectangles;
 *   - how close samples come to the data: the kernel MMD^2 between 64 one-step (and two-step)
 *     samples of the first EMA and the 512 data images, with a Gaussian kernel
 *     exp(-|a - b|^2 / s), s the median squared distance between data images. For scale it prints
 *     the MMD^2 of uniform noise, of 64 copies of the data's mean image, and of 64 data images.
 *     One-step samples must be closer than half the mean image's MMD^2 (itself half of noise's):
 *     a model that has learnt only the mean, or noise, fails.
 * Also: CD refuses a missing teacher, a teacher that is not an EDM checkpoint and a teacher of
 * another architecture with exit 2; CD resumes bit-exactly (20 steps == 10 + resume + 10).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/streams.h"
#include "data/dataset.h"
#include "fixture.h"
#include "io/checkpoint.h"
#include "train/ct.h"
#include "train/ct_schedule.h"
#include "train/model.h"
#include "sample/sample.h"

#define DIR "consistency_runs"
#define NDATA 512
#define S 16                     /* image side */
#define DIM (S * S)
#define NSAMPLES 64
#define NLOSS 256                /* images in the fixed loss batch */

static const char *cmlab;

/* Runs cmlab; stdout goes to DIR/log.txt, stderr to DIR/err.txt (the last run's only). */
static int run(char *const *args) { return fixture_run(args, DIR "/log.txt", DIR "/err.txt", NULL); }

static const char *BASE =
    "[experiment]\nseed = 5\nout_dir = " DIR "\n"
    "[data]\ndataset = folder\npath = " DIR "/data\n"
    "[model]\nchannels = 16\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
    "[train]\nbatch_size = 32\nema = 0.95\nwarmup = 20\ncheckpoint_every = 0\nsample_every = 0\n"
    "log_every = 100\nthreads = 1\n"
    "[sample]\nsolver = heun\nnfe = 9\nn = 64\n";

/* Writes DIR/<name>.ini = BASE + name + extra and trains it (with one --set when set is not
 * NULL); returns cmlab's exit code. */
static int train_set(const char *name, const char *extra, const char *set)
{
    char path[128];
    snprintf(path, sizeof path, DIR "/%s.ini", name);
    FILE *f = fopen(path, "w");
    fprintf(f, "%s[experiment]\nname = %s\n%s", BASE, name, extra);
    fclose(f);
    if (set) return run((char *[]){(char *)cmlab, "train", path, "--set", (char *)set, NULL});
    return run((char *[]){(char *)cmlab, "train", path, NULL});
}

static int train(const char *name, const char *extra) { return train_set(name, extra, NULL); }

/* True if the last run's stderr contains text. */
static bool stderr_has(const char *text)
{
    FILE *f = fopen(DIR "/err.txt", "r");
    char buf[4096] = "";
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f) fclose(f);
    return strstr(buf, text) != NULL;
}

/* The first and the last loss of a run's metrics.jsonl. */
static void logged_losses(const char *name, double *first, double *last)
{
    char path[160], line[1024];
    snprintf(path, sizeof path, DIR "/%s/metrics.jsonl", name);
    FILE *f = fopen(path, "r");
    *first = *last = NAN;
    while (f && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\":");
        if (!p) continue;
        *last = atof(p + 7);
        if (isnan(*first)) *first = *last;
    }
    if (f) fclose(f);
}

/* ---- the measure ---- */

static double sqdist(const float *a, const float *b)
{
    double s = 0;
    for (int k = 0; k < DIM; k++) s += ((double)a[k] - b[k]) * ((double)a[k] - b[k]);
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The kernel bandwidth: the median squared distance between distinct data images. */
static double median_sqdist(const float *data, int n)
{
    size_t m = (size_t)n * (n - 1) / 2, k = 0;
    double *d = cm_malloc(m * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) d[k++] = sqdist(data + (size_t)i * DIM, data + (size_t)j * DIM);
    qsort(d, m, sizeof(double), cmp_double);
    double med = d[m / 2];
    free(d);
    return med;
}

/* Biased MMD^2 between x [n] and y [m] with kernel exp(-|a-b|^2 / s). */
static double mmd2(const float *x, int n, const float *y, int m, double s)
{
    double kxx = 0, kyy = 0, kxy = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) kxx += exp(-sqdist(x + (size_t)i * DIM, x + (size_t)j * DIM) / s);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) kyy += exp(-sqdist(y + (size_t)i * DIM, y + (size_t)j * DIM) / s);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) kxy += exp(-sqdist(x + (size_t)i * DIM, y + (size_t)j * DIM) / s);
    return kxx / ((double)n * n) + kyy / ((double)m * m) - 2 * kxy / ((double)n * m);
}

typedef struct Reference {
    float *data;                 /* [NDATA, DIM] in [-1, 1] */
    double bandwidth, mmd_noise, mmd_mean, mmd_data;
} Reference;

static void reference_init(Reference *r)
{
    Dataset d;
    CM_ASSERT(dataset_load(&d, "folder", DIR "/data", "train") == 0, "%s", cm_errmsg());
    CM_ASSERT(d.n == NDATA && d.c == 1 && d.h == S && d.w == S, "the rectangles data set reads back wrong");
    r->data = cm_malloc((size_t)NDATA * DIM * sizeof(float));
    for (size_t k = 0; k < (size_t)NDATA * DIM; k++) r->data[k] = d.pix[k] / 127.5f - 1.0f;
    dataset_free(&d);
    r->bandwidth = median_sqdist(r->data, NDATA);
    float *x = cm_malloc((size_t)NSAMPLES * DIM * sizeof(float));
    rng_uniform(&(Rng){.seed = 11, .stream = 2}, x, NSAMPLES, 0, DIM);
    for (size_t k = 0; k < (size_t)NSAMPLES * DIM; k++) x[k] = 2 * x[k] - 1;
    r->mmd_noise = mmd2(x, NSAMPLES, r->data, NDATA, r->bandwidth);
    for (int k = 0; k < DIM; k++) {
        double s = 0;
        for (int i = 0; i < NDATA; i++) s += r->data[(size_t)i * DIM + k];
        for (int i = 0; i < NSAMPLES; i++) x[(size_t)i * DIM + k] = (float)(s / NDATA);
    }
    r->mmd_mean = mmd2(x, NSAMPLES, r->data, NDATA, r->bandwidth);
    r->mmd_data = mmd2(r->data + (size_t)(NDATA - NSAMPLES) * DIM, NSAMPLES, r->data, NDATA, r->bandwidth);
    free(x);
    printf("MMD^2 to the data (kernel bandwidth %.1f): uniform noise %.4f, the mean image %.4f, 64 data images %.4f\n",
           r->bandwidth, r->mmd_noise, r->mmd_mean, r->mmd_data);
    CHECK(r->mmd_noise > 2 * r->mmd_mean && r->mmd_mean > 5 * r->mmd_data,
          "the measure does not separate noise, the mean image and data: %.4f %.4f %.4f", r->mmd_noise,
          r->mmd_mean, r->mmd_data);
}

/* ---- the fixed-batch loss ---- */

/* Loads weight set `group` of path into w (ps's layout). */
static int load_set(const char *path, const char *group, const ParamSet *ps, float *w)
{
    CkptState s = {.ps = ps};
    ckpt_add_weights(&s, group, w);
    int rc = ckpt_load(path, &s);
    free(s.loaded_config);
    return rc;
}

/* The method's loss (cfg's [ct] or [cd] keys) on the fixed batch: image b of the data, noise from
 * (seed 99, STREAM_NOISE), interval b mod (N-1) of the ascending Karras grid of N points. */
static double fixed_loss(const Config *cfg, const UNet *net, const Reference *ref, int N, const float *w,
                         const float *target, const float *teacher)
{
    bool cd = cfg->experiment.method == CFG_METHOD_CD;
    float *z = cm_malloc((size_t)NLOSS * DIM * sizeof(float)), *xt = cm_malloc((size_t)NLOSS * DIM * sizeof(float));
    float *x1 = cm_malloc((size_t)NLOSS * DIM * sizeof(float));
    float t1[NLOSS], t0[NLOSS], lam[NLOSS];
    double *sigma = cm_malloc((size_t)N * sizeof(double));
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    rng_normal(&(Rng){.seed = 99, .stream = STREAM_NOISE}, z, NLOSS, 0, DIM);
    for (int b = 0; b < NLOSS; b++) {
        int i = b % (N - 1);
        t1[b] = (float)sigma[i + 1];
        t0[b] = (float)sigma[i];
        lam[b] = cd ? 1.0f : (float)ct_weight(cfg->ct.weighting, sigma, i);
        for (int k = 0; k < DIM; k++) x1[(size_t)b * DIM + k] = ref->data[(size_t)b * DIM + k] + t1[b] * z[(size_t)b * DIM + k];
    }
    Ctx c;
    ctx_init(&c, 64u << 20);
    PrecondParams pre = model_precond(cfg);
    if (cd) {
        PrecondParams edm = {PRECOND_EDM, cfg->model.sigma_data, cfg->model.sigma_min};
        cd_teacher_step(&c, net, &edm, teacher, cfg->cd.solver, x1, t1, t0, NLOSS, 1, S, S, xt);
    }
    float *g = params_buffer(&net->ps);
    WeightSet online = {(float *)w, g};
    CtBatch bt = {ref->data, z, t1, t0, lam, cd ? xt : NULL, NLOSS, 1, S, S, 0};
    double loss = ct_step_loss(&c, net, &pre, &online, target, &bt, cd ? cfg->cd.loss : cfg->ct.loss, NULL);
    ctx_free(&c);
    free(g), free(z), free(xt), free(x1), free(sigma);
    return loss;
}

/* Loss fall and sample quality of the finished run `name` (its final checkpoint at `steps`). */
static void check_run(const Reference *ref, const char *name, int steps)
{
    char path[160];
    snprintf(path, sizeof path, DIR "/%s/ckpt/step_%08d.h5", name, steps);
    Model m;
    Config cfg;
    int rc = model_load(&m, &cfg, path, NULL);
    CHECK(rc == 0, "%s: %s", name, cm_errmsg());
    if (rc) {
        model_free(&m);
        return;
    }
    bool cd = cfg.experiment.method == CFG_METHOD_CD;
    double first, last;
    logged_losses(name, &first, &last);
    printf("%-4s training loss (100-step means): %.5f over the first 100 steps -> %.5f over the last\n", name, first,
           last);
    CHECK(last <= 0.85 * first, "%s: the training loss did not fall: %.5f -> %.5f", name, first, last);

    size_t n = m.net.ps.total;
    float *w0 = params_buffer(&m.net.ps), *teacher = cd ? params_buffer(&m.net.ps) : NULL;
    rc = cd ? load_set(path, "teacher", &m.net.ps, teacher) : 0;
    CHECK(rc == 0, "%s: %s", name, cm_errmsg());
    if (cd) memcpy(w0, teacher, n * sizeof(float));
    else params_randomize(&m.net.ps, w0, (uint64_t)cfg.experiment.seed);
    int N = cd ? cfg.cd.N
               : ct_N(cfg.ct.curriculum, steps - 1, cfg.train.iterations, config_ct_s0(&cfg), config_ct_s1(&cfg));
    double l0 = fixed_loss(&cfg, &m.net, ref, N, w0, w0, teacher);
    double l1 = fixed_loss(&cfg, &m.net, ref, N, m.w, m.w, teacher);
    printf("%-4s self-consistency loss on the fixed batch (N = %d): %.5f with the initial weights, %.5f with %s "
           "(ratio %.2f; information)\n", name, N, l0, l1, m.weights_name, l1 / l0);

    Ctx c;
    ctx_init(&c, 64u << 20);
    Sampler s = {&m.net, m.pre, m.w, 64, 1, S, S, &c};
    float *x = cm_malloc((size_t)NSAMPLES * DIM * sizeof(float));
    double times[2] = {cfg.model.sigma_max, cfg.sample.mid_t}, d[2];
    for (int k = 0; k < 2; k++) {
        CHECK(sample_cm(&s, times, k + 1, NSAMPLES, 0, x) == 0, "%s: %s", name, cm_errmsg());
        d[k] = mmd2(x, NSAMPLES, ref->data, NDATA, ref->bandwidth);
    }
    printf("%-4s MMD^2 of %s samples to the data: 1 step %.4f, 2 steps %.4f (noise %.4f, mean image %.4f)\n", name,
           m.weights_name, d[0], d[1], ref->mmd_noise, ref->mmd_mean);
    CHECK(d[0] < 0.5 * ref->mmd_mean, "%s: one-step samples are not close to the data: MMD^2 %.4f, the mean image %.4f",
          name, d[0], ref->mmd_mean);
    CHECK(d[1] < 0.5 * ref->mmd_mean, "%s: two-step samples are not close to the data: MMD^2 %.4f, the mean image %.4f",
          name, d[1], ref->mmd_mean);
    ctx_free(&c);
    free(x), free(w0), free(teacher);
    model_free(&m);
}

/* CD's input errors exit 2; resume is bit-exact. */
static void test_cd_errors_and_resume(void)
{
#define TEACHER "teacher = " DIR "/edm/ckpt/step_00000300.h5\n"
    CHECK(train("cd_none", "[experiment]\nmethod = cd\n[train]\niterations = 2\n") == 2 &&
              stderr_has("needs cd.teacher"),
          "CD without cd.teacher should exit 2 saying so");
    CHECK(train("cd_missing", "[experiment]\nmethod = cd\n[train]\niterations = 2\n[cd]\nteacher = " DIR "/nope.h5\n") == 2 &&
              stderr_has(DIR "/nope.h5"),
          "CD with a missing teacher file should exit 2 naming it");
    CHECK(train("cd_not_edm", "[experiment]\nmethod = cd\n[train]\niterations = 2\n[cd]\nteacher = " DIR
                              "/ct/ckpt/step_00000400.h5\n") == 2 &&
              stderr_has("a method = ct checkpoint"),
          "CD from a CT checkpoint should exit 2 saying it is not an EDM teacher");
    CHECK(train_set("cd_arch", "[experiment]\nmethod = cd\n[train]\niterations = 2\n[cd]\n" TEACHER,
                    "model.channels=8") == 2 && stderr_has("differs from this experiment's in model.channels"),
          "CD with another architecture than the teacher's should exit 2 naming the key");

#define CD_RESUME(iters) "[experiment]\nmethod = cd\n[model]\ndropout = 0.1\n[train]\niterations = " iters "\n" \
    "lr = 0.0005\n[cd]\ntarget_mu = 0.9\nsolver = euler\nloss = pseudo_huber\n" TEACHER
    int rc = train("cd_full", CD_RESUME("20"));
    rc |= train("cd_split", CD_RESUME("10"));
    rc |= run((char *[]){(char *)cmlab, "train", DIR "/cd_full.ini", "--set", "experiment.name=cd_split", "--resume", NULL});
    CHECK(rc == 0, "the CD resume runs failed");
    Model a, b;
    Config ca, cb;
    rc = model_load(&a, &ca, DIR "/cd_full/ckpt/step_00000020.h5", "online") ||
         model_load(&b, &cb, DIR "/cd_split/ckpt/step_00000020.h5", "online");
    CHECK(rc == 0, "cannot load the CD step-20 checkpoints: %s", cm_errmsg());
    if (rc == 0) {
        size_t bytes = a.net.ps.total * sizeof(float);
        float *ta = params_buffer(&a.net.ps), *tb = params_buffer(&b.net.ps);
        rc = load_set(DIR "/cd_full/ckpt/step_00000020.h5", "target", &a.net.ps, ta) ||
             load_set(DIR "/cd_split/ckpt/step_00000020.h5", "target", &b.net.ps, tb);
        CHECK(rc == 0 && !memcmp(a.w, b.w, bytes) && !memcmp(ta, tb, bytes),
              "CD: 20 steps != 10 + resume + 10 (online or target weights differ)");
        printf("cd   resume: 20 steps and 10 + resume + 10 give bit-identical online and target weights\n");
        free(ta), free(tb);
    }
    model_free(&a);
    model_free(&b);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_consistency CMLAB_BINARY\n");
        return 2;
    }
    cmlab = argv[1];
    cm_set_threads(2);
    if (system("rm -rf " DIR " && mkdir -p " DIR "/data") != 0) return 1;
    fixture_write_rectangles(DIR "/data", NDATA, S);
    Reference ref;
    reference_init(&ref);

    CHECK(train("edm", "[experiment]\nmethod = edm\n[train]\niterations = 300\nlr = 0.004\n") == 0,
          "the EDM teacher run failed (see " DIR "/log.txt)");
    CHECK(train("cd", "[experiment]\nmethod = cd\n[train]\niterations = 300\nlr = 0.0005\n"
                      "[cd]\nteacher = " DIR "/edm/ckpt/step_00000300.h5\nN = 18\nsolver = heun\nloss = l2\n") == 0,
          "the CD run failed");
    CHECK(train("ct", "[experiment]\nmethod = ct\n[train]\niterations = 400\nlr = 0.002\n"
                      "[ct]\nloss = l2\nsampling = uniform\ncurriculum = original\nweighting = uniform\ns1 = 10\n"
                      "target_mu = 0.9\n") == 0,
          "the CT run failed");
    CHECK(train("ict", "[experiment]\nmethod = ct\n[train]\niterations = 400\nlr = 0.002\n"
                       "[ct]\nloss = pseudo_huber\nsampling = lognormal\ncurriculum = doubling\nweighting = ict\n"
                       "s0 = 10\ns1 = 40\ntarget_mu = 0\n") == 0,
          "the iCT run failed");
    check_run(&ref, "cd", 300);
    check_run(&ref, "ct", 400);
    check_run(&ref, "ict", 400);
    test_cd_errors_and_resume();
    free(ref.data);
    return test_summary("consistency");
}
