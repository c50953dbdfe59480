/* cmd_sample.c: `cmlab sample CKPT.h5 [options]`: a sample grid from a checkpoint. The network and
 * the defaults come from the configuration stored in the checkpoint; options override [sample]. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "data/image.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "sample/sample.h"
#include "train/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab sample CKPT.h5 [--solver NAME] [--nfe N] [--schedule NAME] [--afs]\n"
            "                    [--denoise-to-zero] [--n N] [--seed S] [--weights SET]\n"
            "                    [--out grid.png] [--threads N] [--steps K | --times T1,T2,...]\n"
            "Draws n samples at a fixed seed and writes them as a PNG grid. Defaults: the\n"
            "checkpoint's [sample] keys, --weights = its first EMA (else online), --out grid.png.\n"
            "  --solver     euler, heun, dpm2, dpmpp2m, dpmpp3m, ipndm\n"
            "  --schedule   polynomial, logsnr, time_uniform\n"
            "  --weights    online, target, or ema:RATE (e.g. ema:0.999), as `cmlab info` lists them\n"
            "Consistency-model checkpoints (method ct, cd) sample with f instead of a solver:\n"
            "  --steps K    1 (from T) or 2 (T, then sample.mid_t)\n"
            "  --times L    explicit descending times, e.g. 80,0.821\n");
}

/* --times T,t2,...: a consistency plan of at most SAMPLE_MAX_TIMES numbers. */
static int parse_times(const char *arg, SamplePlan *p)
{
    double times[SAMPLE_MAX_TIMES];
    int nt = 0;
    for (const char *q = arg; *q;) {
        char *end;
        if (nt == SAMPLE_MAX_TIMES) return cm_fail("--times %s: at most %d times", arg, SAMPLE_MAX_TIMES);
        times[nt++] = strtod(q, &end);
        if (end == q || (*end && *end != ',')) return cm_fail("--times %s: expected numbers separated by commas", arg);
        q = *end == ',' ? end + 1 : end;
    }
    return sample_plan_times(p, times, nt);
}

int sample_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"solver", required_argument, 0, 's'}, {"nfe", required_argument, 0, 'f'},
        {"schedule", required_argument, 0, 'S'}, {"afs", no_argument, 0, 'a'},
        {"denoise-to-zero", no_argument, 0, 'z'}, {"n", required_argument, 0, 'n'},
        {"seed", required_argument, 0, 'r'}, {"weights", required_argument, 0, 'w'},
        {"out", required_argument, 0, 'o'}, {"threads", required_argument, 0, 't'},
        {"steps", required_argument, 0, 'k'}, {"times", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *solver = NULL, *schedule = NULL, *weights = NULL, *out = "grid.png";
    int nfe = 0, n = 0, threads = 2, afs = -1, to_zero = -1, steps = 1;
    const char *times_arg = NULL;
    long long seed = -1;
    optind = 1;
    for (int ch, li = 0; (ch = getopt_long(argc, argv, "h", opts, &li)) != -1;) {
        char *end = NULL;
        switch (ch) {
        case 's': solver = optarg; break;
        case 'S': schedule = optarg; break;
        case 'w': weights = optarg; break;
        case 'o': out = optarg; break;
        case 'a': afs = 1; break;
        case 'z': to_zero = 1; break;
        case 'f': nfe = (int)strtol(optarg, &end, 10); break;
        case 'n': n = (int)strtol(optarg, &end, 10); break;
        case 't': threads = (int)strtol(optarg, &end, 10); break;
        case 'r': seed = strtoll(optarg, &end, 10); break;
        case 'k': steps = (int)strtol(optarg, &end, 10); break;
        case 'T': times_arg = optarg; break;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
        if (end && (*end || end == optarg)) {
            fprintf(stderr, "cmlab sample: --%s expects a whole number, got '%s'\n", opts[li].name, optarg);
            return CM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    const char *path = argv[optind];
    cm_set_threads(threads);

    Config cfg;
    Model tn;
    if (model_load(&tn, &cfg, path, weights) != 0) {
        fprintf(stderr, "cmlab sample: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    SolverKind kind = cfg.sample.solver;
    SolverOpts o = sample_solver_opts(&cfg);
    int bad = 0;
    if (solver && (int)(kind = solver_kind_from_name(solver)) < 0) bad = 1;
    if (schedule && (int)(o.schedule = schedule_kind_from_name(schedule)) < 0) bad = 1;
    if (bad) {
        fprintf(stderr, "cmlab sample: %s\n", cm_errmsg());
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    if (nfe) o.nfe = nfe;
    if (afs >= 0) o.afs = afs;
    if (to_zero >= 0) o.denoise_to_zero = to_zero;
    if (n <= 0) n = cfg.sample.n;
    if (seed < 0) seed = cfg.experiment.seed;

    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    Sampler s = model_sampler(&tn, &ctx);
    float *x = cm_malloc((size_t)n * tn.C * tn.H * tn.W * sizeof(float));
    SolverStats st = {0};
    double t0 = cm_now();
    char how[64] = "";
    SamplePlan p;
    int rc = 0;
    if (tn.kind == MODEL_DIFFUSION) p = sample_plan_ode(kind, &o);
    /* Consistency models: --times T,t2,... or --steps 1 (T) / 2 (T, sample.mid_t). */
    else if (times_arg) rc = parse_times(times_arg, &p);
    else if (steps == 1 || steps == 2) rc = sample_plan(&p, tn.kind, &cfg, &cfg, steps);
    else rc = cm_fail("--steps %d: 1 or 2 (or give --times)", steps);
    if (rc == 0) rc = sample_draw(&s, &p, n, (uint64_t)seed, x, &st);
    if (rc == 0) sample_describe(&p, &st, how, sizeof how);
    if (rc == 0) rc = image_write_grid(out, x, n, tn.C, tn.H, tn.W, (int)ceil(sqrt(n)), 2);
    if (rc == 0)
        printf("%s: %d samples, %s, %s weights, seed %lld, %.1f s\n", out, n, how, tn.weights_name, seed,
               cm_now() - t0);
    else
        fprintf(stderr, "cmlab sample: %s\n", cm_errmsg());
    free(x);
    ctx_free(&ctx);
    model_free(&tn);
    return rc == 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
}
