/* cmd_eval.c: `cmlab eval CKPT.h5 [options]`: the Frechet distance of a checkpoint's samples in a
 * cmlab classifier's feature space (src/eval/eval.h), or a classifier checkpoint's test accuracy;
 * `cmlab eval --baselines --features CLF.h5`: the metric's reference points. Every option is a key
 * of the experiment files' [eval] or [sample] (checked by the same parser); the defaults are the
 * checkpoint's own keys. */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/rundir.h"
#include "cli/commands.h"
#include "common.h"
#include "train/model.h"
#include "eval/eval.h"
#include "io/experiment.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab eval CKPT.h5 [--features CLF.h5] [--n N] [--nfe N1,N2,...] [--solver NAME]\n"
            "                  [--schedule NAME] [--afs] [--mid-t T] [--seed S] [--weights SET]\n"
            "                  [--out RUN_DIR] [--no-stamp] [--set section.key=value] [--threads N]\n"
            "                  [--predictor P.h5] [--precision fp32|bf16]\n"
            "       cmlab eval --baselines --features CLF.h5 [--n N] [--seed S]\n"
            "Generates n samples at fixed seeds for each NFE, computes their Frechet distance to the\n"
            "training split in the feature space of a method = classifier checkpoint, and appends one\n"
            "record per NFE to RUN_DIR/eval.json and to the checkpoint's /eval group (a new copy of\n"
            "the file, written atomically). A classifier checkpoint gets its test accuracy instead.\n"
            "Defaults: the checkpoint's [eval] and [sample] keys; RUN_DIR is the checkpoint's run\n"
            "directory. --baselines prints the FD of the test split, of uniform noise and of the test\n"
            "images with shuffled pixels against the training split.\n"
            "  --features  the feature network (eval.features)      --n        samples (eval.n)\n"
            "  --nfe       NFEs (eval.nfe): solver evaluations for EDM, 1 and 2 steps for CT/CD\n"
            "  --solver    euler, heun, dpm2, dpmpp2m, dpmpp3m, ipndm (sample.solver)\n"
            "  --schedule  polynomial, logsnr, time_uniform (sample.schedule)\n"
            "  --weights   online, target or ema:RATE (eval.weights; default: the first EMA)\n"
            "  --threads   OpenMP threads (default: OMP_NUM_THREADS, else the cores not busy at start)\n"
            "  --predictor an AMED predictor trained on CKPT.h5 (eval.predictor): sample with it, at its NFE;\n"
            "              {nfe} in the path stands for each --nfe (one predictor per NFE)\n"
            "  --precision of the network's products (model.precision): fp32 (default, whatever the\n"
            "              checkpoint was trained in) or bf16 inputs with fp32 sums (needs AVX512_BF16)\n");
}

/* Options that set a key; the value goes through config_set like a file line. */
static const struct { const char *option, *key; bool flag; } KEYS[] = {
    {"features", "eval.features", false}, {"n", "eval.n", false},           {"nfe", "eval.nfe", false},
    {"seed", "eval.seed", false},         {"weights", "eval.weights", false}, {"solver", "sample.solver", false},
    {"schedule", "sample.schedule", false}, {"mid-t", "sample.mid_t", false}, {"afs", "sample.afs", true},
    {"predictor", "eval.predictor", false},
};

int eval_main(int argc, char **argv)
{
    enum { OPT_OUT = 256, OPT_NO_STAMP, OPT_SET, OPT_THREADS, OPT_BASELINES, OPT_PRECISION, OPT_KEY };
    struct option opts[CM_ARRAY_LEN(KEYS) + 8];
    size_t no = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(KEYS); i++)
        opts[no++] = (struct option){KEYS[i].option, KEYS[i].flag ? no_argument : required_argument, 0,
                                     OPT_KEY + (int)i};
    opts[no++] = (struct option){"out", required_argument, 0, OPT_OUT};
    opts[no++] = (struct option){"no-stamp", no_argument, 0, OPT_NO_STAMP};
    opts[no++] = (struct option){"set", required_argument, 0, OPT_SET};
    opts[no++] = (struct option){"threads", required_argument, 0, OPT_THREADS};
    opts[no++] = (struct option){"baselines", no_argument, 0, OPT_BASELINES};
    opts[no++] = (struct option){"precision", required_argument, 0, OPT_PRECISION};
    opts[no++] = (struct option){"help", no_argument, 0, 'h'};
    opts[no] = (struct option){0, 0, 0, 0};

    /* Assignments in command-line order, applied after the checkpoint's configuration is read. */
    char (*sets)[256] = cm_calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0, threads = 0;   /* 0: cm_set_threads' default */
    const char *out = NULL;
    bool stamp = true, baselines = false, precision_given = false;
    CmPrecision precision = CM_PRECISION_FP32;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        if (ch >= OPT_KEY) {
            int k = ch - OPT_KEY;
            snprintf(sets[nsets++], sizeof sets[0], "%s=%s", KEYS[k].key, KEYS[k].flag ? "true" : optarg);
            continue;
        }
        switch (ch) {
        case OPT_OUT: out = optarg; break;
        case OPT_NO_STAMP: stamp = false; break;
        case OPT_SET: snprintf(sets[nsets++], sizeof sets[0], "%s", optarg); break;
        case OPT_BASELINES: baselines = true; break;
        case OPT_PRECISION:
            precision_given = true;
            if (cli_parse_precision("cmlab eval", optarg, &precision) == 0) break;
            free(sets);
            return CM_EXIT_INPUT;
        case OPT_THREADS: {
            char *end;
            threads = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg || threads < 1) {
                fprintf(stderr, "cmlab eval: --threads expects a positive whole number, got '%s'\n", optarg);
                free(sets);
                return CM_EXIT_INPUT;
            }
            break;
        }
        case 'h': usage(stdout); free(sets); return CM_EXIT_OK;
        default: usage(stderr); free(sets); return CM_EXIT_INPUT;
        }
    }
    if ((baselines && optind != argc) || (!baselines && optind != argc - 1)) {
        usage(stderr);
        free(sets);
        return CM_EXIT_INPUT;
    }
    cm_set_threads(threads);

    /* The checkpoint's own configuration gives the defaults (its [eval] and [sample] keys). */
    Config ev;
    config_defaults(&ev);
    const char *path = baselines ? NULL : argv[optind];
    if (path && model_read_config(path, &ev) != 0) {
        fprintf(stderr, "cmlab eval: %s\n", cm_errmsg());
        free(sets);
        return CM_EXIT_INPUT;
    }
    ev.model.precision = CM_PRECISION_FP32;   /* not the training's: --precision or --set changes it */
    for (int i = 0; i < nsets; i++)
        if (config_set(&ev, sets[i]) != 0) {
            fprintf(stderr, "cmlab eval: %s\n", cm_errmsg());
            free(sets);
            return CM_EXIT_INPUT;
        }
    free(sets);
    if (precision_given) ev.model.precision = precision;

    int rc;
    if (baselines) {
        FeatureNet f;
        Ctx ctx;
        if (!ev.eval.features[0]) {
            fprintf(stderr, "cmlab eval --baselines: give the feature network with --features CLF.h5\n");
            return CM_EXIT_INPUT;
        }
        if (feature_net_load(&f, ev.eval.features, NULL) != 0) {
            fprintf(stderr, "cmlab eval: %s\n", cm_errmsg());
            return CM_EXIT_INPUT;
        }
        ctx_init(&ctx, 64u << 20);
        rc = eval_baselines(&f, ev.eval.n, ev.eval.seed, &ctx);
        ctx_free(&ctx);
        feature_net_free(&f);
    } else {
        char run_dir[1024];
        if (out) snprintf(run_dir, sizeof run_dir, "%s", out);
        else rundir_of_checkpoint(path, run_dir, sizeof run_dir);
        int count = 0;
        rc = eval_checkpoint(path, &ev, run_dir, stamp, NULL, 0, &count);
        if (rc == 0) printf("%d record%s appended to %s/eval.json%s\n", count, count == 1 ? "" : "s", run_dir,
                            stamp ? " and stamped into the checkpoint" : "");
    }
    if (rc != 0) {
        fprintf(stderr, "cmlab eval: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    return CM_EXIT_OK;
}
