/* demo.c: `cmlab demo`, the README's main job: a consistency model on Fashion-MNIST (or, given
 * the data, on CIFAR-10) in a bounded time, with the ordinary training loop, ending with a 1-step
 * and a 2-step sample grid whose paths are printed.
 *
 * A recipe is a table of stages, each an embedded experiment that `cmlab train` would run just
 * the same (`cmlab demo --print-config` prints them). The default recipe, ict, is one stage: iCT
 * from scratch with a curriculum sized to the budget. The recipe cd is the measured alternative:
 * an EDM teacher, then CD of its newest checkpoint (a stage may take its teacher from the one
 * before). The time budget (--seconds) is split between the stages by their shares; each stage
 * stops at train.time_limit (or its iterations) with a checkpoint and its sample grids, so a
 * slower machine gets a shorter run, not a broken one. Why ict is the default: README "The demo".
 */
#include "demo.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/dataset.h"
#include "io/atomic.h"
#include "io/experiment.h"
#include "train/trainer.h"

typedef struct DemoStage {
    const char *name;            /* experiment.name: the run directory under --out */
    const char *what;            /* for the progress lines */
    double share;                /* of the time budget */
    const char *experiment;      /* the embedded experiment file */
    bool takes_teacher;          /* cd.teacher = the newest checkpoint of the stage before */
} DemoStage;

/* The data sets' [data] sections: Fashion-MNIST from its standard place, CIFAR-10 (3x32x32, with
 * flips, as every CIFAR-10 recipe in experiments/) from data.path, which --cifar10 sets. */
#define DEMO_FASHION_MNIST "[data]\ndataset = fashion-mnist\n"
#define DEMO_CIFAR10       "[data]\ndataset = cifar10\nhflip = true\n"

/* The U-Net of every stage: bench's S configuration, 1.05M parameters. */
#define DEMO_MODEL              \
    "[model]\n"                 \
    "channels = 32\n"           \
    "channel_mult = 1,2,2\n"    \
    "num_blocks = 1\n"          \
    "mid_attn = false\n"

/* ... and the [train] keys they share, after their own (batch, learning rate, EMA). */
#define DEMO_TRAIN_LOGGING      \
    "batch_size = 64\n"         \
    "checkpoint_every = 250\n"  \
    "keep_checkpoints = 2\n"    \
    "sample_every = 0\n"        \
    "log_every = 25\n"          \
    "threads = 0\n"

/* The one stage of recipe ict: run NAME on DATA, N doubling 10 -> 80 over ITERS steps. */
#define ICT_STAGE(NAME, DATA, ITERS)                                          \
    {NAME, "iCT from scratch (N doubling 10 -> 80 over " ITERS " steps)", 1.0, \
     "[experiment]\n"                                                          \
     "name = " NAME "\n"                                                       \
     "method = ct\n"                                                           \
     "seed = 0\n"                                                              \
     DATA DEMO_MODEL                                                           \
     "[train]\n"                                                               \
     "iterations = " ITERS "\n"                                                \
     "lr = 0.001\n"                                                            \
     "warmup = 100\n"                                                          \
     "ema = 0.99\n"                                                            \
     DEMO_TRAIN_LOGGING                                                        \
     "[ct]\n"                                                                  \
     "loss = pseudo_huber\n"                                                   \
     "sampling = lognormal\n"                                                  \
     "curriculum = doubling\n"                                                 \
     "weighting = ict\n"                                                       \
     "s0 = 10\n"                                                               \
     "s1 = 80\n"                                                               \
     "target_mu = 0\n"                                                         \
     "[sample]\n"                                                              \
     "n = 64\n"                                                                \
     "mid_t = 0.821\n",                                                        \
     false}

/* The two stages of recipe cd: run PREFIX_teacher, an EDM teacher, then PREFIX_cd, CD of it. */
#define CD_STAGES(PREFIX, DATA)                                               \
    {PREFIX "_teacher", "the EDM teacher (Heun, 17 NFE grids)", 0.6,           \
     "[experiment]\n"                                                          \
     "name = " PREFIX "_teacher\n"                                             \
     "method = edm\n"                                                          \
     "seed = 0\n"                                                              \
     DATA DEMO_MODEL                                                           \
     "[train]\n"                                                               \
     "iterations = 100000\n"                                                   \
     "lr = 0.002\n"                                                            \
     "warmup = 100\n"                                                          \
     "ema = 0.99\n"                                                            \
     DEMO_TRAIN_LOGGING                                                        \
     "[sample]\n"                                                              \
     "solver = heun\n"                                                         \
     "nfe = 17\n"                                                              \
     "n = 64\n",                                                               \
     false},                                                                   \
    {PREFIX "_cd", "consistency distillation of that teacher", 0.4,            \
     "[experiment]\n"                                                          \
     "name = " PREFIX "_cd\n"                                                  \
     "method = cd\n"                                                           \
     "seed = 0\n"                                                              \
     DATA DEMO_MODEL                                                           \
     "[train]\n"                                                               \
     "iterations = 100000\n"                                                   \
     "lr = 0.0005\n"                                                           \
     "ema = 0.99\n"                                                            \
     DEMO_TRAIN_LOGGING                                                        \
     "[cd]\n"                                                                  \
     "solver = heun\n"                                                         \
     "N = 18\n"                                                                \
     "target_mu = 0\n"                                                         \
     "loss = l2\n"                                                             \
     "[sample]\n"                                                              \
     "n = 64\n"                                                                \
     "mid_t = 0.821\n",                                                        \
     true}

/* On CIFAR-10 the recipes keep their network, batch and learning rates, and run under their own
 * names (runs/demo_cifar10...), so a Fashion-MNIST demo beside them is left alone. A 3x32x32
 * step of this network costs 1.34 times a 1x28x28 one (measured side by side), so iCT's
 * curriculum is 1500 steps instead of 2000: the same ~870 s of training (README "The demo"). */
static const DemoStage ICT_STAGES[] = {ICT_STAGE("demo", DEMO_FASHION_MNIST, "2000")};
static const DemoStage ICT_CIFAR10_STAGES[] = {ICT_STAGE("demo_cifar10", DEMO_CIFAR10, "1500")};
static const DemoStage CD_STAGES_FASHION[] = {CD_STAGES("demo", DEMO_FASHION_MNIST)};
static const DemoStage CD_CIFAR10_STAGES[] = {CD_STAGES("demo_cifar10", DEMO_CIFAR10)};

typedef struct DemoRecipe {
    const char *name;            /* --recipe */
    bool cifar10;                /* the CIFAR-10 version (--cifar10) */
    const DemoStage *stages;
    int nstages;
} DemoRecipe;

static const DemoRecipe RECIPES[] = {
    {"ict", false, ICT_STAGES, CM_ARRAY_LEN(ICT_STAGES)},
    {"cd", false, CD_STAGES_FASHION, CM_ARRAY_LEN(CD_STAGES_FASHION)},
    {"ict", true, ICT_CIFAR10_STAGES, CM_ARRAY_LEN(ICT_CIFAR10_STAGES)},
    {"cd", true, CD_CIFAR10_STAGES, CM_ARRAY_LEN(CD_CIFAR10_STAGES)},
};
enum { MAX_STAGES = 2 };
_Static_assert(CM_ARRAY_LEN(ICT_STAGES) <= MAX_STAGES && CM_ARRAY_LEN(CD_STAGES_FASHION) <= MAX_STAGES &&
                   CM_ARRAY_LEN(ICT_CIFAR10_STAGES) <= MAX_STAGES && CM_ARRAY_LEN(CD_CIFAR10_STAGES) <= MAX_STAGES,
               "a recipe has more stages than demo_run's configurations");

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
    if (atomic_write(path, "", 0) != 0) fprintf(stderr, "warning: %s\n", cm_errmsg());
}

static const DemoRecipe *recipe_find(const char *name, bool cifar10)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(RECIPES); i++)
        if (!strcmp(name ? name : RECIPES[0].name, RECIPES[i].name) && RECIPES[i].cifar10 == cifar10)
            return &RECIPES[i];
    return NULL;
}

bool demo_recipe_exists(const char *name) { return recipe_find(name, false) != NULL; }

int demo_print_config(const char *recipe, bool cifar10)
{
    const DemoRecipe *r = recipe_find(recipe, cifar10);
    CM_ASSERT(r, "demo_print_config: no recipe %s", recipe);
    for (int i = 0; i < r->nstages; i++)
        printf("%s# stage %d of %d: %s (%.0f%% of the time)\n%s", i ? "\n" : "", i + 1, r->nstages,
               r->stages[i].what, 100 * r->stages[i].share, r->stages[i].experiment);
    return CM_EXIT_OK;
}

int demo_run(const DemoOpts *o)
{
    const DemoRecipe *recipe = recipe_find(o->recipe, o->cifar10 != NULL);
    CM_ASSERT(recipe, "demo_run: no recipe %s", o->recipe);
    const DemoStage *stages = recipe->stages;
    const int ns = recipe->nstages;
    int rc;
    Config cfg[MAX_STAGES];
    for (int i = 0; i < ns; i++) {
        if (config_from_string(&cfg[i], stages[i].experiment, stages[i].name) != 0) {
            fprintf(stderr, "cmlab demo: the embedded experiment %s is invalid: %s\n", stages[i].name, cm_errmsg());
            return CM_EXIT_RUNTIME;
        }
        /* --cifar10's path, then every option: keys of the experiments, checked like them in every
         * stage (a missing or malformed data set is the trainer's error, naming the path). */
        if (o->cifar10 && (strlen(o->cifar10) >= sizeof cfg[i].data.path)) {
            fprintf(stderr, "cmlab demo: --cifar10 %s: the path is longer than %zu characters\n", o->cifar10,
                    sizeof cfg[i].data.path - 1);
            return CM_EXIT_INPUT;
        }
        if (o->cifar10) snprintf(cfg[i].data.path, sizeof cfg[i].data.path, "%s", o->cifar10);
        for (int j = 0; j < o->nset; j++)
            if (config_set(&cfg[i], o->sets[j]) != 0) {
                fprintf(stderr, "cmlab demo: %s\n", cm_errmsg());
                return CM_EXIT_INPUT;
            }
        cfg[i].train.time_limit = o->seconds * stages[i].share;
    }
    if (!o->resume) {
        /* The data is read once before the previous demo runs go: a wrong path or a damaged file
         * must not cost the user their last demo. */
        Dataset data;
        const char *kind = config_enum_name("data.dataset", cfg[0].data.dataset);
        if (dataset_load(&data, kind, cfg[0].data.path[0] ? cfg[0].data.path : NULL, "train") != 0) {
            fprintf(stderr, "cmlab demo: %s\n", cm_errmsg());
            return CM_EXIT_INPUT;
        }
        dataset_free(&data);
        for (int i = 0; i < ns; i++) clear_run(&cfg[i]);
    }

    printf("demo: a consistency model on %s (recipe %s) in at most about %.0f s, in %d stage%s "
           "(cmlab demo --recipe %s%s --print-config shows %s)\n", o->cifar10 ? "CIFAR-10" : "Fashion-MNIST",
           recipe->name, o->seconds, ns, ns > 1 ? "s" : "", recipe->name, o->cifar10 ? " --cifar10 PATH" : "",
           ns > 1 ? "them" : "it");
    char prev_ckpt_dir[300] = "", run[256];
    for (int i = 0; i < ns; i++) {
        Config *c = &cfg[i];
        if (stages[i].takes_teacher) {
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
        if (o->resume && stage_finished(c)) {
            printf("\ndemo stage %d of %d (%s): finished before, skipped\n", i + 1, ns, stages[i].what);
            continue;
        }
        printf("\ndemo stage %d of %d: %s, at most %.0f s\n", i + 1, ns, stages[i].what, c->train.time_limit);
        rc = trainer_run(c, o->resume);
        if (rc != CM_EXIT_OK) return rc;
        if (trainer_stop_requested) {
            printf("demo: stopped on request; `cmlab demo --resume` goes on\n");
            return CM_EXIT_OK;
        }
        mark_finished(c);
    }
    const Config *last = &cfg[ns - 1];
    char dir[300], grid[700];
    run_dir(last, run, sizeof run);
    snprintf(dir, sizeof dir, "%s/samples", run);
    printf("\n");
    if (newest_file(dir, "step_", "_1step.png", grid, sizeof grid)) printf("1-step samples: %s\n", grid);
    if (newest_file(dir, "step_", "_2step.png", grid, sizeof grid)) printf("2-step samples: %s\n", grid);
    return CM_EXIT_OK;
}
