/* demo.c: `cmlab demo`, the README's main job: a consistency model on Fashion-MNIST in a bounded
 * time, with the ordinary training loop, ending with a 1-step and a 2-step sample grid whose
 * paths are printed.
 *
 * The demo is a table of stages, each an embedded experiment that `cmlab train` would run just
 * the same (`cmlab demo --print-config` prints them). A stage may take its input from the one
 * before: CD distils the newest checkpoint of the EDM teacher trained in the stage before it.
 * The time budget (--seconds) is split between the stages by their shares; each stage stops at
 * train.time_limit with a checkpoint and its sample grids, so a slower machine gets a shorter
 * run, not a broken one. Why this recipe (and not iCT from scratch): README "The demo".
 */
#include "demo.h"

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "train/experiment.h"
#include "train/trainer.h"

typedef struct DemoStage {
    const char *name;            /* experiment.name: the run directory under --out */
    const char *what;            /* for the progress lines */
    double share;                /* of the time budget */
    const char *experiment;      /* the embedded experiment file */
    bool takes_teacher;          /* cd.teacher = the newest checkpoint of the stage before */
} DemoStage;

static const DemoStage STAGES[] = {
    {"demo_teacher", "the EDM teacher (Heun, 17 NFE grids)", 0.6,
     "[experiment]\n"
     "name = demo_teacher\n"
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
     "batch_size = 64\n"
     "lr = 0.002\n"
     "warmup = 100\n"
     "ema = 0.99\n"
     "checkpoint_every = 250\n"
     "keep_checkpoints = 2\n"
     "sample_every = 0\n"
     "log_every = 25\n"
     "threads = 2\n"
     "[sample]\n"
     "solver = heun\n"
     "nfe = 17\n"
     "n = 64\n",
     false},
    {"demo", "consistency distillation of that teacher", 0.4,
     "[experiment]\n"
     "name = demo\n"
     "method = cd\n"
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
     "batch_size = 64\n"
     "lr = 0.0005\n"
     "ema = 0.99\n"
     "checkpoint_every = 250\n"
     "keep_checkpoints = 2\n"
     "sample_every = 0\n"
     "log_every = 25\n"
     "threads = 2\n"
     "[cd]\n"
     "solver = heun\n"
     "N = 18\n"
     "target_mu = 0\n"
     "loss = l2\n"
     "[sample]\n"
     "n = 64\n"
     "mid_t = 0.821\n",
     true},
};
enum { NSTAGES = CM_ARRAY_LEN(STAGES) };

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab demo [--seconds S] [--out DIR] [--data DIR] [--threads N] [--set K=V ...]\n"
            "                  [--resume] [--print-config]\n"
            "Trains a consistency model on Fashion-MNIST in about S seconds (default 900): an EDM\n"
            "teacher for 60%% of the time, then consistency distillation of it for 40%%; writes\n"
            "1-step and 2-step sample grids and prints their paths.\n"
            "  --out DIR       directory of run directories (default runs): DIR/demo_teacher, DIR/demo\n"
            "  --data DIR      Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
            "  --set K=V       override an experiment key in every stage (cmlab train --help lists them)\n"
            "  --resume        continue the previous demo run (the stage it stopped in)\n"
            "  --print-config  print the embedded experiment files and exit\n");
}

/* The newest <dir>/<prefix>*<suffix> (names sort by step) into out; false if there is none. */
static bool newest_file(const char *dir, const char *prefix, const char *suffix, char *out, size_t len)
{
    char best[256] = "";
    size_t np = strlen(prefix), ns = strlen(suffix);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n >= np + ns && !strncmp(e->d_name, prefix, np) && !strcmp(e->d_name + n - ns, suffix) &&
            strcmp(e->d_name, best) > 0)
            snprintf(best, sizeof best, "%s", e->d_name);
    }
    if (d) closedir(d);
    if (best[0]) snprintf(out, len, "%s/%s", dir, best);
    return best[0] != 0;
}

/* <out_dir>/<name>: the stage's run directory (the precisions are the fields' sizes). */
static void run_dir(const Config *cfg, char *out, size_t len)
{
    snprintf(out, len, "%.*s/%.*s", CFG_PATH_MAX - 1, cfg->experiment.out_dir, CFG_NAME_MAX - 1,
             cfg->experiment.name);
}

/* A fresh `cmlab demo` starts over: the previous demo runs' checkpoints, grids and metrics go
 * (only those files; anything else in the directories is left alone). */
static void clear_run(const Config *cfg)
{
    static const char *const sub[] = {"ckpt", "samples"};
    char run[256], dir[300], path[600];
    run_dir(cfg, run, sizeof run);
    for (size_t i = 0; i < CM_ARRAY_LEN(sub); i++) {
        snprintf(dir, sizeof dir, "%s/%s", run, sub[i]);
        DIR *d = opendir(dir);
        for (struct dirent *e; d && (e = readdir(d));) {
            if (strncmp(e->d_name, "step_", 5)) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            remove(path);
        }
        if (d) closedir(d);
    }
    snprintf(path, sizeof path, "%s/metrics.jsonl", run);
    remove(path);
    snprintf(path, sizeof path, "%s/finished", run);
    remove(path);
}

/* <run dir>/finished marks a stage that ran to its end, so --resume goes on with the next one. */
static void finished_path(const Config *cfg, char *out, size_t len)
{
    char run[256];
    run_dir(cfg, run, sizeof run);
    snprintf(out, len, "%s/finished", run);
}

static bool stage_finished(const Config *cfg)
{
    char path[700];
    finished_path(cfg, path, sizeof path);
    struct stat st;
    return stat(path, &st) == 0;
}

static void mark_finished(const Config *cfg)
{
    char path[700];
    finished_path(cfg, path, sizeof path);
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}

/* The stage configurations with the command line applied: 0, 1 after --help, or -1 (message
 * printed) on a bad option. */
static int parse_args(int argc, char **argv, Config cfg[NSTAGES], bool *resume, bool *print)
{
    static const struct option opts[] = {
        {"seconds", required_argument, 0, 's'}, {"out", required_argument, 0, 'o'},
        {"data", required_argument, 0, 'd'},    {"threads", required_argument, 0, 't'},
        {"set", required_argument, 0, 'S'},     {"resume", no_argument, 0, 'r'},
        {"print-config", no_argument, 0, 'p'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    double seconds = 900;
    optind = 1;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, NULL)) != -1;) {
        const char *key = NULL;
        char *end;
        switch (ch) {
        case 's':
            seconds = strtod(optarg, &end);
            if (end == optarg || *end || !(seconds > 0)) {
                fprintf(stderr, "cmlab demo: --seconds %s: a positive number of seconds\n", optarg);
                return -1;
            }
            break;
        case 'o': key = "experiment.out_dir"; break;
        case 'd': key = "data.path"; break;
        case 't': key = "train.threads"; break;
        case 'S': key = ""; break;
        case 'r': *resume = true; break;
        case 'p': *print = true; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
        if (!key) continue;
        /* Every option is a key of the experiments, so it is checked like one, in every stage. */
        char set[512];
        if (key[0]) snprintf(set, sizeof set, "%s=%s", key, optarg);
        else snprintf(set, sizeof set, "%s", optarg);
        for (int i = 0; i < NSTAGES; i++)
            if (config_set(&cfg[i], set) != 0) {
                fprintf(stderr, "cmlab demo: %s\n", cm_errmsg());
                return -1;
            }
    }
    if (optind < argc) {
        fprintf(stderr, "cmlab demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    for (int i = 0; i < NSTAGES; i++) cfg[i].train.time_limit = seconds * STAGES[i].share;
    return 0;
}

int demo_main(int argc, char **argv)
{
    Config cfg[NSTAGES];
    for (int i = 0; i < NSTAGES; i++)
        if (config_from_string(&cfg[i], STAGES[i].experiment, STAGES[i].name) != 0) {
            fprintf(stderr, "cmlab demo: the embedded experiment %s is invalid: %s\n", STAGES[i].name, cm_errmsg());
            return CM_EXIT_RUNTIME;
        }
    bool resume = false, print = false;
    int rc = parse_args(argc, argv, cfg, &resume, &print);
    if (rc != 0) return rc > 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
    if (print) {
        for (int i = 0; i < NSTAGES; i++)
            printf("%s# stage %d of %d: %s (%.0f%% of the time)\n%s", i ? "\n" : "", i + 1, NSTAGES,
                   STAGES[i].what, 100 * STAGES[i].share, STAGES[i].experiment);
        return CM_EXIT_OK;
    }
    if (!resume)
        for (int i = 0; i < NSTAGES; i++) clear_run(&cfg[i]);

    double total = 0;
    for (int i = 0; i < NSTAGES; i++) total += cfg[i].train.time_limit;
    printf("demo: a consistency model on Fashion-MNIST in about %.0f s, in %d stages "
           "(cmlab demo --print-config shows them)\n", total, NSTAGES);
    char prev_ckpt_dir[300] = "", run[256];
    for (int i = 0; i < NSTAGES; i++) {
        Config *c = &cfg[i];
        if (STAGES[i].takes_teacher) {
            char teacher[700];
            if (!newest_file(prev_ckpt_dir, "step_", ".h5", teacher, sizeof teacher)) {
                fprintf(stderr, "cmlab demo: %s has no checkpoint to distil\n", prev_ckpt_dir);
                return CM_EXIT_RUNTIME;
            }
            if (strlen(teacher) >= sizeof c->cd.teacher) {
                fprintf(stderr, "cmlab demo: the teacher's path %s is too long; use a shorter --out\n", teacher);
                return CM_EXIT_INPUT;
            }
            snprintf(c->cd.teacher, sizeof c->cd.teacher, "%s", teacher);
        }
        run_dir(c, run, sizeof run);
        snprintf(prev_ckpt_dir, sizeof prev_ckpt_dir, "%s/ckpt", run);
        if (resume && stage_finished(c)) {
            printf("\ndemo stage %d of %d (%s): finished before, skipped\n", i + 1, NSTAGES, STAGES[i].what);
            continue;
        }
        printf("\ndemo stage %d of %d: %s, %.0f s\n", i + 1, NSTAGES, STAGES[i].what, c->train.time_limit);
        rc = trainer_run(c, resume);
        if (rc != CM_EXIT_OK) return rc;
        if (trainer_stop_requested) {
            printf("demo: stopped on request; `cmlab demo --resume` goes on\n");
            return CM_EXIT_OK;
        }
        mark_finished(c);
    }
    const Config *last = &cfg[NSTAGES - 1];
    char dir[300], grid[700];
    run_dir(last, run, sizeof run);
    snprintf(dir, sizeof dir, "%s/samples", run);
    printf("\n");
    if (newest_file(dir, "step_", "_1step.png", grid, sizeof grid)) printf("1-step samples: %s\n", grid);
    if (newest_file(dir, "step_", "_2step.png", grid, sizeof grid)) printf("2-step samples: %s\n", grid);
    return CM_EXIT_OK;
}
