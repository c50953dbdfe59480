/* cmd_invert.c: `cmlab invert CKPT.h5 [options]`: images -> latents -> reconstructions, and the
 * per-pixel reconstruction MSE (reference/bcm.md §5). A BCM checkpoint inverts with its two-time
 * network (sample/bcm.h: a small noise, then 1 or more jumps up to T) and reconstructs by a BCM
 * schedule from the latent; an EDM checkpoint inverts by integrating the PF-ODE upward over the
 * same times (solver_invert_times, euler or heun) and reconstructs with the same solver at the
 * same NFE, the baseline of issue 14. --latent random replaces the latents by random ones (the
 * reconstruction is then an unrelated sample), the floor any inversion must beat. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/rng.h"
#include "autograd/gemm_bf16.h"
#include "autograd/streams.h"
#include "cli/commands.h"
#include "common.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/image.h"
#include "io/atomic.h"
#include "sample/bcm.h"
#include "sample/edit.h"
#include "train/model.h"

#define MAX_TIMES 16

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cmlab invert CKPT.h5 [--images SRC] [--count N] [--steps 1|2 | --times L]\n"
        "                    [--noise S] [--bcm-schedule S] [--latent inverted|random]\n"
        "                    [--solver euler|heun] [--precision fp32|bf16] [--json FILE]\n"
        "                    [--out grid.png] [options]\n"
        "Inverts images to latents at T, reconstructs them from the latents, and prints the\n"
        "per-pixel MSE between the images and their reconstructions on [0, 1] (both quantised to\n"
        "8 bits, as PNGs and the official BCM evaluation are).\n"
        "  --images SRC     test (default) or train: that split of the checkpoint's data set\n"
        "                   (data.dataset, data.path); or a folder of PNGs; or an IDX image file\n"
        "  --count N        the first N images (default 500, or all if there are fewer)\n"
        "  --noise S        the small noise put on each image before inverting (default 0.07)\n"
        "  --steps K        1: S -> T (1 NFE); 2: S -> 15 -> T (2 NFE, the official times)\n"
        "  --times L        explicit increasing inversion times from the noise level, e.g.\n"
        "                   0.07,2,15,80 (3 NFE); the first is the noise S\n"
        "  --bcm-schedule S the reconstruction schedule from the latent (BCM checkpoints;\n"
        "                   syntax of cmlab sample --bcm-schedule; default T>eps, 1 NFE)\n"
        "  --latent random  reconstruct from random latents (T z, seed --seed) instead: the MSE\n"
        "                   of unrelated samples, the baseline of an inversion\n"
        "  --solver NAME    EDM checkpoints: euler (default) or heun, for the ODE inversion over\n"
        "                   the same times and the reconstruction at the same NFE (the model's\n"
        "                   sample.schedule from sigma_max to sigma_min)\n"
        "  --weights SET    online, target or ema:RATE (default the first EMA, else online)\n"
        "  --seed S         the noise seed (default experiment.seed)\n"
        "  --threads N      OpenMP threads (default: OMP_NUM_THREADS, else the cores not busy at start)\n"
        "  --precision P    of the network's products: fp32 (default) or bf16 inputs with fp32\n"
        "                   sums (needs AVX512_BF16; else a note and fp32)\n"
        "  --json FILE      also write the result as one JSON object\n"
        "  --out PNG        a grid of the first --show K images (default 8): image | reconstruction\n"
        "Exit status: 0 done, 2 bad usage or bad input (times that do not increase, a consistency\n"
        "checkpoint that is not BCM, images of another size).\n");
}

typedef struct InvertArgs {
    const char *ckpt, *images, *weights, *bcm, *json, *out, *times;
    int count, steps, show, threads;     /* count 0: min(500, the images there are) */
    double noise;
    bool random_latent;
    SolverKind solver;
    CmPrecision precision;
    long long seed;
} InvertArgs;

/* The images [n, C, H, W] in [-1, 1] from --images; *source names them. -1 after cm_fail(). */
static int load_images(const InvertArgs *a, const Config *cfg, const Model *m, float **x, int *n, char *source,
                       size_t len)
{
    const char *src = a->images;
    Dataset d;
    int rc;
    memset(&d, 0, sizeof d);
    struct stat st;
    if (!strcmp(src, "test") || !strcmp(src, "train")) {
        const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
        rc = dataset_load(&d, kind, cfg->data.path[0] ? cfg->data.path : NULL, src);
    } else if (stat(src, &st) == 0 && S_ISDIR(st.st_mode)) {
        rc = dataset_load(&d, "folder", src, "test");
    } else {
        IdxArray img;
        rc = idx_load_images(src, &img);
        if (rc == 0) {
            d = (Dataset){.pix = img.data, .n = img.dims[0], .c = 1, .h = img.dims[1], .w = img.dims[2]};
            snprintf(d.source, sizeof d.source, "%s", src);
        }
    }
    if (rc) return -1;
    if (d.c != m->C || d.h > m->H || d.w > m->W) {
        rc = cm_fail("--images %s: %dx%d images with %d channel(s), but the model takes %dx%d with %d", src, d.w,
                     d.h, d.c, m->W, m->H, m->C);
    } else if (a->count > d.n) {
        rc = cm_fail("--count %d: %s has %d images", a->count, d.source, d.n);
    } else {
        size_t dim = (size_t)m->C * m->H * m->W;
        *n = a->count ? a->count : CM_MIN(500, d.n);
        *x = cm_malloc((size_t)*n * dim * sizeof **x);
        for (int i = 0; i < *n; i++) dataset_image(&d, i, m->H, m->W, false, *x + i * dim);
        snprintf(source, len, "%s", d.source);
    }
    dataset_free(&d);
    return rc;
}

typedef struct InvertResult {
    int nfe_invert, nfe_reconstruct;
    char invert[160], reconstruct[320];
} InvertResult;

/* BCM: x [n] images -> latents (or random ones) -> reconstructions, in place. */
static int run_bcm(const InvertArgs *a, const Config *cfg, Sampler *s, const double *t, int nt, int n, float *x,
                   InvertResult *r)
{
    const size_t dim = (size_t)s->C * s->H * s->W;
    const double eps = cfg->model.sigma_min, T = cfg->model.sigma_max;
    BcmSchedule sc;
    const char *text = a->bcm ? a->bcm : "T>eps";
    if (bcm_schedule_parse(text, eps, T, "--bcm-schedule", &sc) ||
        bcm_schedule_check_generation(&sc, eps, T, "--bcm-schedule"))
        return -1;
    if (a->random_latent) {
        bcm_generate(bcm_f_sampler, s, &sc, eps, n, dim, (uint64_t)a->seed, x);
        snprintf(r->invert, sizeof r->invert, "T z");
    } else {
        if (fabs(t[nt - 1] - sc.t[0]) > 1e-9 * sc.t[0])
            return cm_fail("the inversion ends at %g but the reconstruction (--bcm-schedule %s) starts at %g",
                           t[nt - 1], text, sc.t[0]);
        if (bcm_invert(bcm_f_sampler, s, t, nt, n, dim, (uint64_t)a->seed, x)) return -1;
        bcm_run(bcm_f_sampler, s, &sc, eps, n, dim, (uint64_t)a->seed, x);
        r->nfe_invert = nt - 1;
    }
    r->nfe_reconstruct = bcm_schedule_nfe(&sc);
    bcm_schedule_format(&sc, eps, r->reconstruct, sizeof r->reconstruct);
    return 0;
}

/* EDM: ODE inversion over the same times with a->solver, then sampling with the same solver at the
 * same NFE (from sigma_max, over the model's sample schedule). */
static int run_edm(const InvertArgs *a, const Config *cfg, Sampler *s, const double *t, int nt, int n, float *x,
                   InvertResult *r)
{
    const size_t dim = (size_t)s->C * s->H * s->W, total = (size_t)n * dim;
    double *xd = cm_malloc(total * sizeof *xd);
    SolverStats st = {0};
    int rc = 0;
    if (a->random_latent) {
        Rng g = {.seed = (uint64_t)a->seed, .stream = STREAM_SAMPLE, .step = 0};
        rng_normal(&g, x, n, 0, dim);
        for (size_t k = 0; k < total; k++) xd[k] = cfg->model.sigma_max * (double)x[k];
        snprintf(r->invert, sizeof r->invert, "T z");
        st.nfe = solver_nfe(a->solver, &(SolverOpts){0}, nt);
    } else {
        bcm_invert_noise(x, n, dim, t[0], (uint64_t)a->seed);
        for (size_t k = 0; k < total; k++) xd[k] = x[k];
        rc = solver_invert_times(a->solver, t, nt, sample_denoise, s, xd, n, dim, &st);
        r->nfe_invert = st.nfe;
    }
    SolverOpts o = sample_solver_opts(cfg);
    o.afs = o.denoise_to_zero = false;
    o.nfe = st.nfe;
    o.steps = 0;
    if (rc == 0) rc = solver_sample(a->solver, &o, sample_denoise, s, xd, n, dim, &st);
    if (rc == 0) {
        for (size_t k = 0; k < total; k++) x[k] = (float)xd[k];
        r->nfe_reconstruct = st.nfe;
        snprintf(r->reconstruct, sizeof r->reconstruct, "%s ODE", solver_kind_name(a->solver));
    }
    free(xd);
    return rc;
}

static int write_json(const InvertArgs *a, const Model *m, const char *source, int n, double mse,
                      const InvertResult *r)
{
    char tmp[1100];
    FILE *f = atomic_open(a->json, tmp, sizeof tmp);
    if (!f) return -1;
    fprintf(f, "{\"checkpoint\": \"%s\", \"weights\": \"%s\", \"images\": \"%s\", \"count\": %d, ", a->ckpt,
            m->weights_name, source, n);
    fprintf(f, "\"latent\": \"%s\", \"invert\": \"%s\", \"nfe_invert\": %d, \"reconstruct\": \"%s\", ",
            a->random_latent ? "random" : "inverted", r->invert, r->nfe_invert, r->reconstruct);
    fprintf(f, "\"nfe_reconstruct\": %d, \"precision\": \"%s\", \"seed\": %lld, \"mse\": %.9g}\n", r->nfe_reconstruct,
            cm_precision_names[a->precision], a->seed, mse);
    return atomic_commit(f, tmp, a->json, !ferror(f));
}

/* The grid: a row per shown image, image | reconstruction. */
static int write_grid(const InvertArgs *a, const Model *m, const float *y, const float *x, int n)
{
    const size_t dim = (size_t)m->C * m->H * m->W;
    int k = CM_MIN(a->show, n);
    float *g = cm_malloc(2 * (size_t)k * dim * sizeof *g);
    for (int i = 0; i < k; i++) {
        memcpy(g + 2 * i * dim, y + i * dim, dim * sizeof *g);
        memcpy(g + (2 * i + 1) * dim, x + i * dim, dim * sizeof *g);
    }
    int rc = image_write_grid(a->out, g, 2 * k, m->C, m->H, m->W, 2, 2);
    free(g);
    return rc;
}

static int run(InvertArgs *a, const Config *cfg, Model *m)
{
    if (m->kind != MODEL_DIFFUSION && m->pre.kind != PRECOND_BCM)
        return cm_fail("%s: method %s is a one-time consistency model, which cannot invert; cmlab invert takes "
                       "BCM (method bcm) and EDM checkpoints", a->ckpt, config_method_name(cfg->experiment.method));
    if (m->kind == MODEL_DIFFUSION && a->bcm)
        return cm_fail("--bcm-schedule applies to BCM checkpoints; %s is an EDM denoiser (--solver)", a->ckpt);
    if (m->kind != MODEL_DIFFUSION && a->solver != SOLVER_EULER)
        return cm_fail("--solver applies to EDM checkpoints; %s is a BCM model", a->ckpt);
    double t[MAX_TIMES];
    int nt;
    if (bcm_inversion_times(a->times, a->noise, a->steps, cfg->model.sigma_max, t, &nt, MAX_TIMES)) return -1;
    if (t[nt - 1] > cfg->model.sigma_max)
        return cm_fail("inversion time %g is above the model's sigma_max = %g", t[nt - 1], cfg->model.sigma_max);
    float *y = NULL;
    int n = 0;
    char source[600];
    if (load_images(a, cfg, m, &y, &n, source, sizeof source)) return -1;
    const size_t total = (size_t)n * m->C * m->H * m->W;
    float *x = cm_malloc(total * sizeof *x);
    memcpy(x, y, total * sizeof *x);
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    ctx.precision = a->precision;
    Sampler s = model_sampler(m, &ctx);
    InvertResult r = {0};
    for (int k = 0; k < nt; k++)
        snprintf(r.invert + strlen(r.invert), sizeof r.invert - strlen(r.invert), "%s%g", k ? ">" : "", t[k]);
    double t0 = cm_now();
    int rc = m->kind == MODEL_DIFFUSION ? run_edm(a, cfg, &s, t, nt, n, x, &r) : run_bcm(a, cfg, &s, t, nt, n, x, &r);
    double mse = rc == 0 ? bcm_mse01(y, x, total) : 0;
    if (rc == 0)
        printf("%s: %d images of %s, %s latents (%s, %d NFE), reconstructed by %s (%d NFE): per-pixel MSE %.6f "
               "on [0, 1]; %s weights, seed %lld, %.1f s\n",
               a->ckpt, n, source, a->random_latent ? "random" : "inverted", r.invert, r.nfe_invert, r.reconstruct,
               r.nfe_reconstruct, mse, m->weights_name, a->seed, cm_now() - t0);
    if (rc == 0 && a->json) rc = write_json(a, m, source, n, mse, &r);
    if (rc == 0 && a->out) rc = write_grid(a, m, y, x, n);
    if (rc == 0 && a->out) printf("%s: image | reconstruction, %d rows\n", a->out, CM_MIN(a->show, n));
    ctx_free(&ctx);
    free(x);
    free(y);
    return rc;
}

/* A whole number in [lo, hi] for option --name; -1 after cm_fail(). */
static int opt_int(const char *name, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi)
        return cm_fail("--%s expects a whole number from %lld to %lld, got '%s'", name, lo, hi, s);
    *out = v;
    return 0;
}

int invert_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"images", required_argument, 0, 'i'}, {"count", required_argument, 0, 'c'},
        {"noise", required_argument, 0, 'z'}, {"steps", required_argument, 0, 's'},
        {"times", required_argument, 0, 'T'}, {"bcm-schedule", required_argument, 0, 'b'},
        {"latent", required_argument, 0, 'l'}, {"solver", required_argument, 0, 'S'},
        {"weights", required_argument, 0, 'w'}, {"seed", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"json", required_argument, 0, 'j'},
        {"out", required_argument, 0, 'o'}, {"show", required_argument, 0, 'k'},
        {"precision", required_argument, 0, 'P'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    InvertArgs a = {.images = "test", .count = 0, .steps = 1, .show = 8, .threads = 0, .noise = 0.07,
                    .solver = SOLVER_EULER, .seed = -1};
    long long v = 0;
    bool steps_given = false, noise_given = false;
    int rc = 0;
    optind = 1;
    for (int ch, li = 0; rc == 0 && (ch = getopt_long(argc, argv, "h", opts, &li)) != -1;) {
        const char *name = opts[li].name;
        switch (ch) {
        case 'i': a.images = optarg; break;
        case 'T': a.times = optarg; break;
        case 'b': a.bcm = optarg; break;
        case 'w': a.weights = optarg; break;
        case 'j': a.json = optarg; break;
        case 'o': a.out = optarg; break;
        case 'c': rc = opt_int(name, optarg, 1, 1 << 20, &v); a.count = (int)v; break;
        case 's': rc = opt_int(name, optarg, 1, 2, &v); a.steps = (int)v; steps_given = true; break;
        case 'k': rc = opt_int(name, optarg, 1, 256, &v); a.show = (int)v; break;
        case 't': rc = opt_int(name, optarg, 1, 4096, &v); a.threads = (int)v; break;
        case 'r': rc = opt_int(name, optarg, 0, 0x7fffffffffffffffLL, &a.seed); break;
        case 'l':
            if (!strcmp(optarg, "random") || !strcmp(optarg, "inverted")) a.random_latent = optarg[0] == 'r';
            else rc = cm_fail("--latent %s: inverted or random", optarg);
            break;
        case 'S': {
            int k = solver_kind_from_name(optarg);
            if (k >= 0 && k != SOLVER_EULER && k != SOLVER_HEUN) k = cm_fail("--solver %s: euler or heun", optarg);
            rc = k < 0 ? -1 : 0;
            a.solver = k < 0 ? SOLVER_EULER : (SolverKind)k;
            break;
        }
        case 'z': {
            char *end;
            a.noise = strtod(optarg, &end);
            noise_given = true;
            if (end == optarg || *end || !(a.noise > 0) || !isfinite(a.noise))
                rc = cm_fail("--noise expects a noise level > 0, got '%s'", optarg);
            break;
        }
        case 'P':
            if (cli_parse_precision("cmlab invert", optarg, &a.precision)) return CM_EXIT_INPUT;
            break;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
    }
    if (rc == 0 && a.times && (steps_given || noise_given))
        rc = cm_fail("--times gives the noise level and every step: not with --steps or --noise");
    if (rc == 0 && optind != argc - 1) rc = cm_fail("expected one checkpoint (see cmlab invert --help)");
    if (rc) {
        fprintf(stderr, "cmlab invert: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    a.ckpt = argv[optind];
    cm_set_threads(a.threads);
    Config cfg;
    Model m;
    if (model_load(&m, &cfg, a.ckpt, a.weights) != 0) {
        fprintf(stderr, "cmlab invert: %s\n", cm_errmsg());
        model_free(&m);
        return CM_EXIT_INPUT;
    }
    if (a.seed < 0) a.seed = cfg.experiment.seed;
    rc = run(&a, &cfg, &m);
    if (rc) fprintf(stderr, "cmlab invert: %s\n", cm_errmsg());
    model_free(&m);
    return rc == 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
}
