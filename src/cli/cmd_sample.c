/* cmd_sample.c: `cmlab sample CKPT.h5 [options]`: a sample grid from a checkpoint. The network and
 * the defaults come from the configuration stored in the checkpoint; options override [sample]. */
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "data/image.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "sample/bcm.h"
#include "sample/sample.h"
#include "train/amed_predictor.h"
#include "train/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab sample CKPT.h5 [--solver NAME] [--nfe N] [--schedule NAME] [--afs]\n"
            "                    [--denoise-to-zero] [--n N] [--seed S] [--weights SET]\n"
            "                    [--out grid.png] [--threads N] [--steps K | --times T1,T2,...]\n"
            "                    [--bcm-schedule S] [--predictor P.h5] [--precision fp32|bf16]\n"
            "Draws n samples at a fixed seed and writes them as a PNG grid. Defaults: the\n"
            "checkpoint's [sample] keys, --weights = its first EMA (else online), --out grid.png.\n"
            "  --solver     euler, heun, dpm2, dpmpp2m, dpmpp3m, ipndm\n"
            "  --schedule   polynomial, logsnr, time_uniform\n"
            "  --weights    online, target, or ema:RATE (e.g. ema:0.999), as `cmlab info` lists them\n"
            "  --threads    OpenMP threads (default: OMP_NUM_THREADS, else the cores not busy at start)\n"
            "  --precision  of the network's products: fp32 (default) or bf16 inputs with fp32 sums\n"
            "               (needs AVX512_BF16; else a note and fp32)\n"
            "Consistency-model checkpoints (method ct, cd) sample with f instead of a solver:\n"
            "  --steps K    1 (from T) or 2 (T, then sample.mid_t)\n"
            "  --times L    explicit descending times, e.g. 80,0.821\n"
            "BCM checkpoints (method bcm) take those too (f(x, t, eps) is their consistency function),\n"
            "or a schedule of the two-time network f(x, t, u):\n"
            "  --bcm-schedule S   times joined by '>' (one network jump each) and ',' (fresh noise up\n"
            "               to the next time); T = sigma_max, eps = sigma_min. 80>eps one step,\n"
            "               80>2.4>eps ancestral, 80>eps,0.1>1.2>eps zigzag, 80>3>eps,0.12>0.4>eps\n"
            "               mixed. It starts at its highest time, ends at eps, and its jumps go\n"
            "               down except the first one after ',' (zigzag's 0.1>1.2)\n"
            "An AMED predictor (a method = amed checkpoint) samples with the teacher CKPT.h5 it was\n"
            "trained on, with the settings stored in it (plugin, schedule, N, AFS: its own NFE):\n"
            "  --predictor P.h5   refused (exit 2) when CKPT.h5 is not its teacher\n");
}

/* Options that set a [sample] key of the checkpoint's configuration: the value is checked by
 * config_set like a file line (type and range from the key table). `solver`: only a diffusion model
 * samples with a solver; these are refused for a consistency model. */
static const struct { const char *option, *key; bool flag, solver; } KEYS[] = {
    {"solver", "sample.solver", false, true}, {"nfe", "sample.nfe", false, true},
    {"schedule", "sample.schedule", false, true}, {"afs", "sample.afs", true, true},
    {"denoise-to-zero", "sample.denoise_to_zero", true, true}, {"n", "sample.n", false, false},
};

/* --times T,t2,...: a consistency plan of positive, strictly decreasing times. */
static int parse_times(const char *arg, SamplePlan *p)
{
    double times[SAMPLE_MAX_TIMES];
    int nt = 0;
    for (const char *q = arg; *q;) {
        char *end;
        double t = strtod(q, &end);
        if (end == q || (*end && *end != ',') || !(t > 0) || (nt && t >= times[nt - 1]))
            return cm_fail("--times %s: expected positive, strictly decreasing numbers separated by commas", arg);
        if (nt == SAMPLE_MAX_TIMES) return cm_fail("--times %s: at most %d times", arg, SAMPLE_MAX_TIMES);
        times[nt++] = t;
        q = *end == ',' ? end + 1 : end;
    }
    return sample_plan_times(p, times, nt);
}

/* --bcm-schedule: n samples by a BCM schedule (bcm.h) into x; how describes it. */
static int draw_bcm(const Sampler *s, const char *arg, const Config *cfg, int n, uint64_t seed, float *x,
                    char *how, size_t len)
{
    BcmSchedule sc;
    double eps = cfg->model.sigma_min, T = cfg->model.sigma_max;
    if (bcm_schedule_parse(arg, eps, T, "--bcm-schedule", &sc) ||
        bcm_schedule_check_generation(&sc, eps, T, "--bcm-schedule"))
        return -1;
    bcm_generate(bcm_f_sampler, (void *)s, &sc, eps, n, (size_t)s->C * s->H * s->W, seed, x);
    char text[256];
    bcm_schedule_format(&sc, eps, text, sizeof text);
    snprintf(how, len, "BCM schedule %s (%d NFE)", text, bcm_schedule_nfe(&sc));
    return 0;
}

int sample_main(int argc, char **argv)
{
    enum { OPT_WEIGHTS = 256, OPT_OUT, OPT_THREADS, OPT_SEED, OPT_STEPS, OPT_TIMES, OPT_BCM, OPT_PREDICTOR, OPT_PRECISION,
           OPT_KEY };
    struct option opts[CM_ARRAY_LEN(KEYS) + 11];
    size_t no = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(KEYS); i++)
        opts[no++] = (struct option){KEYS[i].option, KEYS[i].flag ? no_argument : required_argument, 0,
                                     OPT_KEY + (int)i};
    opts[no++] = (struct option){"weights", required_argument, 0, OPT_WEIGHTS};
    opts[no++] = (struct option){"out", required_argument, 0, OPT_OUT};
    opts[no++] = (struct option){"threads", required_argument, 0, OPT_THREADS};
    opts[no++] = (struct option){"seed", required_argument, 0, OPT_SEED};
    opts[no++] = (struct option){"steps", required_argument, 0, OPT_STEPS};
    opts[no++] = (struct option){"times", required_argument, 0, OPT_TIMES};
    opts[no++] = (struct option){"bcm-schedule", required_argument, 0, OPT_BCM};
    opts[no++] = (struct option){"predictor", required_argument, 0, OPT_PREDICTOR};
    opts[no++] = (struct option){"precision", required_argument, 0, OPT_PRECISION};
    opts[no++] = (struct option){"help", no_argument, 0, 'h'};
    opts[no] = (struct option){0, 0, 0, 0};

    const char *weights = NULL, *out = "grid.png", *times_arg = NULL, *bcm_arg = NULL, *predictor = NULL;
    long long threads = 0, seed = -1, steps = 0;   /* threads 0: cm_set_threads' default */
    CmPrecision precision = CM_PRECISION_FP32;
    /* Key options in command-line order, applied once the checkpoint's configuration is read. */
    char sets[2 * CM_ARRAY_LEN(KEYS)][256];
    int set_opt[2 * CM_ARRAY_LEN(KEYS)], nsets = 0;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        int rc = 0;
        switch (ch) {
        case OPT_WEIGHTS: weights = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_THREADS: rc = cli_parse_count("cmlab sample", "threads", optarg, 1, 4096, &threads); break;
        case OPT_SEED: rc = cli_parse_count("cmlab sample", "seed", optarg, 0, INT64_MAX, &seed); break;
        case OPT_STEPS: rc = cli_parse_count("cmlab sample", "steps", optarg, 1, 2, &steps); break;
        case OPT_TIMES: times_arg = optarg; break;
        case OPT_BCM: bcm_arg = optarg; break;
        case OPT_PREDICTOR: predictor = optarg; break;
        case OPT_PRECISION: rc = cli_parse_precision("cmlab sample", optarg, &precision); break;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default:
            if (ch < OPT_KEY) {
                usage(stderr);
                return CM_EXIT_INPUT;
            }
            if (nsets == (int)CM_ARRAY_LEN(sets)) {
                fprintf(stderr, "cmlab sample: too many options\n");
                return CM_EXIT_INPUT;
            }
            set_opt[nsets] = ch - OPT_KEY;
            snprintf(sets[nsets++], sizeof sets[0], "%s=%s", KEYS[ch - OPT_KEY].key,
                     KEYS[ch - OPT_KEY].flag ? "true" : optarg);
        }
        if (rc != 0) return CM_EXIT_INPUT;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    if ((times_arg != NULL) + (steps != 0) + (bcm_arg != NULL) > 1) {
        fprintf(stderr, "cmlab sample: give one of --steps, --times and --bcm-schedule\n");
        return CM_EXIT_INPUT;
    }
    const char *path = argv[optind];
    cm_set_threads((int)threads);

    Config cfg;
    Model tn;
    if (model_load(&tn, &cfg, path, weights) != 0) {
        fprintf(stderr, "cmlab sample: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    const bool diffusion = tn.kind == MODEL_DIFFUSION;
    const char *refused = NULL;
    for (int i = 0; i < nsets && !refused; i++)
        if (KEYS[set_opt[i]].solver && !diffusion) refused = KEYS[set_opt[i]].option;
    if (refused || (diffusion && (times_arg || steps))) {
        if (refused)
            fprintf(stderr, "cmlab sample: --%s applies to diffusion-model checkpoints; %s is a consistency "
                            "model (method %s), which samples with --steps 1|2 or --times T1,T2,...\n",
                    refused, path, config_method_name(cfg.experiment.method));
        else
            fprintf(stderr, "cmlab sample: --%s applies to consistency-model checkpoints; %s is a diffusion "
                            "model (method %s), which samples with --solver and --nfe\n",
                    times_arg ? "times" : "steps", path, config_method_name(cfg.experiment.method));
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    if (bcm_arg && tn.pre.kind != PRECOND_BCM) {
        fprintf(stderr, "cmlab sample: --bcm-schedule applies to BCM checkpoints (a two-time network); %s is "
                        "method %s\n", path, config_method_name(cfg.experiment.method));
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    /* A predictor fixes the sampler: no solver option may change it. */
    for (int i = 0; i < nsets && predictor; i++)
        if (KEYS[set_opt[i]].solver) {
            fprintf(stderr, "cmlab sample: --%s with --predictor: the predictor %s samples with the settings it "
                            "was trained with (its own NFE)\n", KEYS[set_opt[i]].option, predictor);
            model_free(&tn);
            return CM_EXIT_INPUT;
        }
    AmedPredictor pred = {0};
    if (predictor && (!diffusion || amed_predictor_load(&pred, predictor, &tn, &cfg, path) != 0)) {
        if (!diffusion) cm_fail("%s is a consistency model (method %s); an AMED predictor needs its EDM teacher", path,
                                config_method_name(cfg.experiment.method));
        fprintf(stderr, "cmlab sample: --predictor: %s\n", cm_errmsg());
        amed_predictor_free(&pred);
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    for (int i = 0; i < nsets; i++) {
        if (config_set(&cfg, sets[i]) != 0) {
            fprintf(stderr, "cmlab sample: --%s: %s\n", KEYS[set_opt[i]].option, cm_errmsg());
            model_free(&tn);
            return CM_EXIT_INPUT;
        }
    }
    SolverKind kind = cfg.sample.solver;
    SolverOpts o = sample_solver_opts(&cfg);
    const int n = cfg.sample.n;
    if (seed < 0) seed = cfg.experiment.seed;
    /* The grid: n tiles with a 2-pixel border, 8-bit, in one PNG (image_write_grid's bound). */
    const long long cols = (long long)ceil(sqrt(n)), rows = (n + cols - 1) / cols;
    const long long grid_bytes = (cols * (tn.W + 2) + 2) * (rows * (tn.H + 2) + 2) * tn.C;
    if (grid_bytes > (1ll << 30)) {
        fprintf(stderr, "cmlab sample: --n %d: a grid of %lld x %lld tiles of %dx%d is %.1f GB, over the 1 GB a "
                        "PNG grid may take; draw fewer samples per call\n",
                n, cols, rows, tn.W, tn.H, (double)grid_bytes / 1e9);
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    const double need = 4.0 * n * tn.C * tn.H * tn.W + (double)grid_bytes, avail = cm_mem_available();
    if (avail > 0 && need > 0.95 * avail) {
        fprintf(stderr, "cmlab sample: --n %d: %d samples of %dx%dx%d and their grid need %.1f GB, more than the "
                        "%.1f GB available; draw fewer samples per call\n",
                n, n, tn.C, tn.H, tn.W, need / 1e9, avail / 1e9);
        model_free(&tn);
        return CM_EXIT_INPUT;
    }

    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    ctx.precision = precision;
    Sampler s = model_sampler(&tn, &ctx);
    float *x = cm_malloc((size_t)n * tn.C * tn.H * tn.W * sizeof(float));
    SolverStats st = {0};
    double t0 = cm_now();
    char how[320] = "";
    SamplePlan p;
    int rc = 0;
    if (bcm_arg) {
        rc = draw_bcm(&s, bcm_arg, &cfg, n, (uint64_t)seed, x, how, sizeof how);
    } else {
        if (predictor) p = sample_plan_amed(&pred);
        else if (diffusion) p = sample_plan_ode(kind, &o);
        /* Consistency models: --times T,t2,... or --steps 1 (T) / 2 (T, sample.mid_t). */
        else if (times_arg) rc = parse_times(times_arg, &p);
        else rc = sample_plan(&p, tn.kind, &cfg, &cfg, steps ? (int)steps : 1);
        if (rc == 0) rc = sample_draw(&s, &p, n, (uint64_t)seed, x, &st);
        if (rc == 0) sample_describe(&p, &st, how, sizeof how);
    }
    if (rc == 0) rc = image_write_grid(out, x, n, tn.C, tn.H, tn.W, (int)ceil(sqrt(n)), 2);
    if (rc == 0)
        printf("%s: %d samples, %s, %s weights, seed %lld, %.1f s\n", out, n, how, tn.weights_name, seed,
               cm_now() - t0);
    else
        fprintf(stderr, "cmlab sample: %s\n", cm_errmsg());
    free(x);
    ctx_free(&ctx);
    amed_predictor_free(&pred);
    model_free(&tn);
    return rc == 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
}
