/* demo.c: `cmlab demo`, the README's main job: the embedded experiment below, trained for a
 * bounded time with the ordinary training loop, then a sample grid whose path is printed.
 *
 * Until the consistency trainers land (issue 5) the demo trains the EDM teacher
 * (reference/cm.md §1) and samples it with Heun's method; `cmlab demo --print-config` shows the
 * experiment, which `cmlab train` runs just the same.
 */
#include "demo.h"

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/experiment.h"
#include "train/trainer.h"

static const char *DEMO_EXPERIMENT =
    "[experiment]\n"
    "name = demo\n"
    "method = edm\n"
    "seed = 0\n"
    "[data]\n"
    "dataset = fashion-mnist\n"
    "[model]\n"
    "channels = 32\n"
    "channel_mult = 1,2,2\n"
    "num_blocks = 1\n"
    "mid_attn = false\n"
    "[train]\n"
    "iterations = 100000\n"
    "time_limit = 300\n"
    "batch_size = 32\n"
    "lr = 0.002\n"
    "warmup = 100\n"
    "ema = 0.99\n"
    "checkpoint_every = 500\n"
    "sample_every = 0\n"
    "log_every = 20\n"
    "threads = 2\n"
    "[sample]\n"
    "solver = heun\n"
    "nfe = 35\n"
    "n = 64\n";

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab demo [--seconds S] [--out DIR] [--data DIR] [--threads N] [--set K=V ...]\n"
            "                  [--resume] [--print-config]\n"
            "Trains the embedded experiment (an EDM denoiser on Fashion-MNIST) for S seconds\n"
            "(default 300), then writes a sample grid (Heun, 35 NFE) and prints its path.\n"
            "  --out DIR       directory of run directories (default runs): DIR/demo\n"
            "  --data DIR      Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
            "  --set K=V       override any experiment key (cmlab train --help lists them)\n"
            "  --resume        continue the previous demo run\n"
            "  --print-config  print the embedded experiment file and exit\n");
}

/* The newest samples/step_*.png of the run (names sort by step). */
static void print_newest_grid(const Config *cfg)
{
    char dir[512], best[256] = "";
    snprintf(dir, sizeof dir, "%s/%s/samples", cfg->experiment.out_dir, cfg->experiment.name);
    DIR *d = opendir(dir);
    if (!d) return;
    for (struct dirent *e; (e = readdir(d));)
        if (!strncmp(e->d_name, "step_", 5) && strcmp(e->d_name, best) > 0) snprintf(best, sizeof best, "%s", e->d_name);
    closedir(d);
    if (best[0]) printf("\nsample grid: %s/%s\n", dir, best);
}

/* A second `cmlab demo` starts over: the previous demo run's checkpoints, grids and metrics go
 * (only those files; anything else in the directory is left alone). */
static void clear_previous_run(const Config *cfg)
{
    static const char *const sub[] = {"ckpt", "samples"};
    char dir[600], path[900];
    for (size_t i = 0; i < 2; i++) {
        snprintf(dir, sizeof dir, "%s/%s/%s", cfg->experiment.out_dir, cfg->experiment.name, sub[i]);
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (strncmp(e->d_name, "step_", 5)) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            remove(path);
        }
        if (d) closedir(d);
    }
    snprintf(path, sizeof path, "%s/%s/metrics.jsonl", cfg->experiment.out_dir, cfg->experiment.name);
    remove(path);
}

int demo_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"seconds", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
        {"data", required_argument, 0, 'd'},    {"threads", required_argument, 0, 't'},
        {"set", required_argument, 0, 'S'},     {"resume", no_argument, 0, 'r'},
        {"print-config", no_argument, 0, 'p'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    Config cfg;
    if (config_from_string(&cfg, DEMO_EXPERIMENT, "demo") != 0) {
        fprintf(stderr, "cmlab demo: the embedded experiment is invalid: %s\n", cm_errmsg());
        return CM_EXIT_RUNTIME;
    }
    bool resume = false;
    char set[512];
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        const char *key = NULL;
        switch (ch) {
        case 's': key = "train.time_limit"; break;
        case 'o': key = "experiment.out_dir"; break;
        case 'd': key = "data.path"; break;
        case 't': key = "train.threads"; break;
        case 'S': key = ""; break;
        case 'r': resume = true; break;
        case 'p': fputs(DEMO_EXPERIMENT, stdout); return CM_EXIT_OK;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
        if (!key) continue;
        /* Every option is a key of the experiment, so it is checked like one. */
        if (key[0]) snprintf(set, sizeof set, "%s=%s", key, optarg);
        else snprintf(set, sizeof set, "%s", optarg);
        if (config_set(&cfg, set) != 0) {
            fprintf(stderr, "cmlab demo: %s\n", cm_errmsg());
            return CM_EXIT_INPUT;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cmlab demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    if (!resume) clear_previous_run(&cfg);
    printf("demo: an EDM denoiser on Fashion-MNIST for %.0f s (cmlab demo --print-config shows the experiment)\n",
           cfg.train.time_limit);
    int rc = trainer_run(&cfg, resume);
    if (rc == CM_EXIT_OK) print_newest_grid(&cfg);
    return rc;
}
