/* cmd_trajectories.c: `cmlab trajectories CKPT.h5 --pca [options]`: the PCA of a diffusion model's
 * ODE sampling trajectories (src/eval/trajectories.h), printed and written as pca.json, pca.csv
 * and pca.svg. The grid's schedule, rho and noise range are the checkpoint's [sample] and [model]
 * keys; no analytical first step and no step to 0, so every point is a solver state. */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "autograd/gemm_bf16.h"
#include "cli/commands.h"
#include "common.h"
#include "eval/trajectories.h"
#include "sample/sample.h"
#include "train/model.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab trajectories CKPT.h5 --pca [--n N] [--steps K] [--solver NAME] [--seed S]\n"
            "                          [--weights SET] [--out DIR] [--threads N] [--precision P]\n"
            "Integrates N sampling trajectories of a diffusion model (x_0 = sigma_max z, then the\n"
            "solver's state at each of the K+1 points of the checkpoint's schedule) and, with --pca,\n"
            "the principal components of each trajectory's points: prints the fraction of the\n"
            "variance the top 1, 2 and 3 components explain (averaged over the trajectories, and\n"
            "the lowest) and writes DIR/pca.json, pca.csv and pca.svg. The AMED paper observes that\n"
            "two components hold almost all of it.\n"
            "  --n        trajectories (default 1000)      --steps  solver steps K (default 40, at most %d)\n"
            "  --solver   euler, heun, dpm2, dpmpp2m, dpmpp3m, ipndm (default heun)\n"
            "  --seed     trajectory i starts from the noise of (seed, i) (default the checkpoint's)\n"
            "  --weights  online, target or ema:RATE (default: the first EMA, else online)\n"
            "  --out      output directory (default trajectories)\n"
            "  --threads  OpenMP threads (default: OMP_NUM_THREADS, else the cores not busy at start)\n"
            "  --precision  of the network's products: fp32 (default) or bf16 inputs with fp32 sums\n"
            "             (needs AVX512_BF16; else a note and fp32)\n",
            TRAJ_MAX_POINTS - 1);
}

int trajectories_main(int argc, char **argv)
{
    enum { OPT_PCA = 256, OPT_N, OPT_STEPS, OPT_SOLVER, OPT_SEED, OPT_WEIGHTS, OPT_OUT, OPT_THREADS, OPT_PRECISION };
    static const struct option opts[] = {
        {"pca", no_argument, 0, OPT_PCA},          {"n", required_argument, 0, OPT_N},
        {"steps", required_argument, 0, OPT_STEPS}, {"solver", required_argument, 0, OPT_SOLVER},
        {"seed", required_argument, 0, OPT_SEED},   {"weights", required_argument, 0, OPT_WEIGHTS},
        {"out", required_argument, 0, OPT_OUT},     {"threads", required_argument, 0, OPT_THREADS},
        {"precision", required_argument, 0, OPT_PRECISION}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *cmd = "cmlab trajectories", *weights = NULL, *out = "trajectories";
    long long n = 1000, steps = 40, seed = -1, threads = 0;   /* threads 0: cm_set_threads' default */
    bool pca = false;
    int kind = SOLVER_HEUN;
    CmPrecision precision = CM_PRECISION_FP32;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        int rc = 0;
        switch (ch) {
        case OPT_PCA: pca = true; break;
        case OPT_N: rc = cli_parse_count(cmd, "n", optarg, 1, 10000000, &n); break;
        case OPT_STEPS: rc = cli_parse_count(cmd, "steps", optarg, 1, TRAJ_MAX_POINTS - 1, &steps); break;
        case OPT_SEED: rc = cli_parse_count(cmd, "seed", optarg, 0, INT64_MAX, &seed); break;
        case OPT_THREADS: rc = cli_parse_count(cmd, "threads", optarg, 1, 4096, &threads); break;
        case OPT_WEIGHTS: weights = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_PRECISION: rc = cli_parse_precision(cmd, optarg, &precision); break;
        case OPT_SOLVER:
            if ((kind = solver_kind_from_name(optarg)) < 0) {
                fprintf(stderr, "%s: --solver: %s\n", cmd, cm_errmsg());
                rc = -1;
            }
            break;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
        if (rc != 0) return CM_EXIT_INPUT;
    }
    if (optind != argc - 1) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    if (!pca) {
        fprintf(stderr, "%s: say what to compute: --pca (the one analysis so far)\n", cmd);
        return CM_EXIT_INPUT;
    }
    const char *path = argv[optind];
    cm_set_threads((int)threads);

    Config cfg;
    Model tn;
    if (model_load(&tn, &cfg, path, weights) != 0) {
        fprintf(stderr, "%s: %s\n", cmd, cm_errmsg());
        return CM_EXIT_INPUT;
    }
    if (tn.kind != MODEL_DIFFUSION) {
        fprintf(stderr, "%s: %s is not a diffusion model (method %s): trajectories need an ODE solver's "
                        "denoiser, an EDM checkpoint\n", cmd, path, config_method_name(cfg.experiment.method));
        model_free(&tn);
        return CM_EXIT_INPUT;
    }
    SolverOpts o = sample_solver_opts(&cfg);
    o.steps = (int)steps + 1;
    o.nfe = 0;
    o.afs = false;
    o.denoise_to_zero = false;
    if (seed < 0) seed = cfg.experiment.seed;

    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    ctx.precision = precision;
    Sampler s = model_sampler(&tn, &ctx);
    TrajSummary sum;
    double t0 = cm_now();
    int rc = trajectories_pca(&s, kind, &o, (int)n, (uint64_t)seed, true, &sum);
    TrajMeta meta = {.checkpoint = path, .weights = tn.weights_name, .solver = solver_kind_name(kind),
                     .schedule = schedule_kind_name(o.schedule), .rho = o.rho, .sigma_min = o.sigma_min,
                     .sigma_max = o.sigma_max, .seed = (uint64_t)seed,
                     .precision = cm_precision_names[precision]};
    if (rc == 0) rc = trajectories_write(out, &sum, &meta);
    if (rc == 0) {
        printf("PCA of %d trajectories (%s, %lld steps, %d points in R^%zu each, %s weights, %.0f s):\n", sum.n,
               meta.solver, steps, sum.points, sum.dim, tn.weights_name, cm_now() - t0);
        for (int k = 0; k < 3 && k < sum.points; k++)
            printf("  top %d component%s: %.8f of the variance on average (1 - that = %.2g; lowest %.8f)\n", k + 1,
                   k ? "s" : " ", sum.mean_top[k], 1 - sum.mean_top[k], sum.min_top[k]);
        printf("%s/pca.json, pca.csv, pca.svg\n", out);
    } else {
        fprintf(stderr, "%s: %s\n", cmd, cm_errmsg());
    }
    ctx_free(&ctx);
    model_free(&tn);
    return rc == 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
}
