#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/gemm_bf16.h"
#include "data/image.h"
#include "data/loader.h"
#include "io/checkpoint.h"
#include "io/rundir.h"
#include "sample/sample.h"
#include "train/batch.h"
#include "train/dist.h"
#include "train/method.h"
#include "train/model.h"

volatile int trainer_stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    trainer_stop_requested = 1;
}

/* The state every method shares; the method's own is behind `state` (method.h). */
typedef struct Trainer {
    Config cfg;
    char *config_text;
    RunDir dir;
    Dataset data;
    Loader loader;
    const Method *method;
    void *state;                 /* the method's state, method->state_size bytes */
    const ParamSet *ps;          /* the trained network's layout */
    float *w, *g;                /* online weights and their gradients */
    EmaSet emas;
    Adam opt;
    Ctx ctx;
    long step;
    int B, C, H, W;              /* B: the global batch, over every rank */
    int rank, world;             /* this process of the job (dist.h) */
    int B_local, sample0;        /* this rank's slice of the global batch: samples [sample0, sample0 + B_local) */
    float *batch;                /* [B_local, C, H, W] */
    int *labels;                 /* [B_local], the batch's classes */
    /* Updates skipped as non-finite over the whole run (a method with nonfinite_limit): saved as
     * the checkpoint's root attribute nonfinite_skipped, so that a resumed run counts on. */
    long nonfinite_total;
    char nonfinite_text[24];
    /* A checkpoint's train_seconds: seconds_base (the loaded checkpoint's, 0 for a fresh run, -1 if
     * unknown) plus the wall time since t_start, when the loop started or the state was loaded. */
    double seconds_base, t_start;
} Trainer;

/* ---- setup ---- */

static void ckpt_state_fill(Trainer *t, CkptState *s)
{
    memset(s, 0, sizeof *s);
    s->ps = t->ps;
    ckpt_add_weights(s, "online", t->w);
    if (t->method->ckpt_save) t->method->ckpt_save(t->state, s);
    if (t->method->nonfinite_limit) {
        snprintf(t->nonfinite_text, sizeof t->nonfinite_text, "%ld", t->nonfinite_total);
        s->attr_names[s->nattrs] = "nonfinite_skipped";
        s->attr_values[s->nattrs++] = t->nonfinite_text;
    }
    ckpt_add_emas(s, &t->emas);
    s->opt = &t->opt;
    s->step = t->step;
    s->method = t->method->name;
    s->config = t->config_text;
    s->seed = (uint64_t)t->cfg.experiment.seed;
    LoaderCursor cur = loader_get_cursor(&t->loader);
    s->data_epoch = cur.epoch;
    s->data_index = cur.index;
    s->world_size = t->world;
    s->train_seconds = t->seconds_base < 0 ? -1 : t->seconds_base + (cm_now() - t->t_start);
}

/* Rank 0 writes the checkpoint. */
static int trainer_checkpoint_write(Trainer *t)
{
    /* ckpt_save makes its directory when missing, which would quietly rebuild a run directory
     * that was removed (or unmounted) under the run, while metrics.jsonl went with it. */
    struct stat st;
    if (stat(t->dir.metrics, &st) != 0)
        return cm_fail("%s: the run directory is gone (%s: %s); stopping without a checkpoint", t->dir.root,
                       t->dir.metrics, strerror(errno));
    CkptState s;
    ckpt_state_fill(t, &s);
    char path[700];
    if (ckpt_save(t->dir.ckpt, &s, path, sizeof path) != 0) return -1;
    /* train.keep_checkpoints = 0 keeps every checkpoint (ckpt_prune would keep one). */
    if (t->cfg.train.keep_checkpoints > 0 && ckpt_prune(t->dir.ckpt, t->cfg.train.keep_checkpoints) < 0)
        fprintf(stderr, "warning: pruning %s: %s\n", t->dir.ckpt, cm_errmsg());
    return 0;
}

/* A checkpoint of the job (collective): the ranks' weights are checked to be equal bit for bit
 * (dist.h: equal updates of equal sums keep them so, and a checkpoint of rank 0 stands for every
 * rank), then rank 0 writes, and every rank learns whether it could. */
static int trainer_checkpoint(Trainer *t)
{
    int r = 1;
    if (!dist_same(t->w, t->ps->total * sizeof(float), &r))
        return cm_fail("step %ld: the weights of rank %d differ from rank 0's, which they never should "
                       "(ranks running different cmlab builds?); stopping without a checkpoint", t->step, r);
    return dist_agree(t->rank == 0 ? trainer_checkpoint_write(t) : 0) ? -1 : 0;
}

/* Rank 0's state s (loaded from a checkpoint) to every rank: its scalars and every buffer it
 * points to, the Adam moments included. The other ranks never open the file, so they need no
 * view of the run directory. */
static void trainer_bcast_state(Trainer *t, CkptState *s)
{
    long sc[5] = {s->step, s->data_epoch, s->data_index, s->sched_N, t->opt.step};
    dist_bcast(sc, sizeof sc);
    dist_bcast(&s->sched_mu, sizeof s->sched_mu);
    s->step = sc[0];
    s->data_epoch = sc[1];
    s->data_index = sc[2];
    s->sched_N = sc[3];
    t->opt.step = sc[4];
    const size_t bytes = t->ps->total * sizeof(float);
    for (int i = 0; i < s->nsets; i++) dist_bcast(s->sets[i].data, bytes);
    dist_bcast(t->opt.m, bytes);
    dist_bcast(t->opt.v, bytes);
}

/* Loads the newest valid checkpoint into t (collective: rank 0 reads it, every rank gets it):
 * 0, or 1 when there is none (cm_errmsg says why on rank 0), or -1 on an error. The checkpoint
 * may come from a job of another size: the data cursor and the random numbers are global. */
static int trainer_resume(Trainer *t)
{
    CkptState s;
    ckpt_state_fill(t, &s);
    char used[700] = "";
    int none = t->rank == 0 ? ckpt_load_latest(t->dir.ckpt, &s, used, sizeof used) != 0 : 0;
    dist_bcast(&none, sizeof none);
    if (none) return 1;
    free(s.loaded_config);
    trainer_bcast_state(t, &s);
    t->step = s.step;
    /* Checkpoints from before the attribute existed count from 0. */
    t->nonfinite_total = 0;
    char *skipped = t->method->nonfinite_limit && t->rank == 0 ? ckpt_read_attr(used, "nonfinite_skipped") : NULL;
    if (skipped) t->nonfinite_total = atol(skipped);
    free(skipped);
    dist_bcast(&t->nonfinite_total, sizeof t->nonfinite_total);
    t->seconds_base = s.train_seconds;
    t->t_start = cm_now();
    if (t->method->ckpt_loaded) t->method->ckpt_loaded(t->state, &s);
    if (loader_set_cursor(&t->loader, (LoaderCursor){s.data_epoch, s.data_index}) != 0)
        return cm_fail("%s: %s", used, cm_errmsg());
    if (t->rank != 0) return dist_agree(0);
    if (s.world_size != t->world)
        printf("resume: %s was written by %d process%s, continuing with %d\n", used, s.world_size,
               s.world_size == 1 ? "" : "es", t->world);
    printf("resume: %s (step %ld)\n", used, t->step);
    return dist_agree(rundir_metrics_truncate(&t->dir, t->step));
}

/* The first EMA if there is one (what users sample with), else the online weights. */
static float *sampling_weights(Trainer *t, const char **name)
{
    if (t->emas.count > 0) {
        *name = t->emas.items[0].name;
        return t->emas.items[0].w;
    }
    *name = "online";
    return t->w;
}

static int trainer_sample_grid(Trainer *t, FILE *metrics)
{
    const Config *cfg = &t->cfg;
    const char *wname;
    float *w = sampling_weights(t, &wname);
    if (t->method->report) return t->method->report(t->state, w, wname, &t->ctx, metrics, t->step, t->dir.samples);
    Sampler s = {t->method->unet(t->state), model_precond(cfg), w, 64, t->C, t->H, t->W, &t->ctx};
    int n = CM_MIN(cfg->sample.n, 64);
    float *x = cm_malloc((size_t)n * t->C * t->H * t->W * sizeof(float));
    /* A grid per default NFE, on the same noise: a diffusion model's sample.nfe; a consistency
     * model's 1 and 2 steps (T, then sample.mid_t). */
    int nfes[2], nn = sample_default_nfes(t->method->model, cfg, nfes), rc = 0;
    for (int i = 0; i < nn && rc == 0; i++) {
        SamplePlan p;
        SolverStats st;
        char path[700];
        rc = sample_plan(&p, t->method->model, cfg, cfg, nfes[i]);
        if (rc == 0) rc = sample_draw(&s, &p, n, (uint64_t)cfg->experiment.seed, x, &st);
        if (p.kind == MODEL_DIFFUSION) snprintf(path, sizeof path, "%s/step_%08ld.png", t->dir.samples, t->step);
        else snprintf(path, sizeof path, "%s/step_%08ld_%dstep.png", t->dir.samples, t->step, nfes[i]);
        if (rc == 0) rc = image_write_grid(path, x, n, t->C, t->H, t->W, 8, 2);
        if (rc == 0 && p.kind == MODEL_DIFFUSION)
            printf("samples: %s (%s, %s weights, %d NFE)\n", path, solver_kind_name(p.solver), wname, st.nfe);
        else if (rc == 0)
            printf("samples: %s (%d-step, %s weights)\n", path, nfes[i], wname);
    }
    free(x);
    return rc;
}

/* Refuses a run that cannot fit in memory, before it creates anything (it once grew past 6 GB
 * until the kernel killed it, or aborted in malloc naming no key). A step's arena is measured, not
 * modelled: the method's own loss on 1 and on 2 blank images in a scratch arena gives the bytes
 * per sample and the fixed part (the shapes set the arena's size, not the values, and the loss
 * changes no state of the method: every draw is a function of the step's streams). To that come
 * the batch buffers, Adam's moments, the EMAs and a checkpoint's in-memory image. */
static int trainer_check_memory(Trainer *t, const char *source)
{
    const Config *cfg = &t->cfg;
    const size_t img = (size_t)t->C * t->H * t->W, P = t->ps->total;
    float *g = params_buffer(t->ps), *x = cm_calloc(2 * img, sizeof(float));
    int labels[2] = {0, 0};
    double hw[2];
    for (int n = 1; n <= 2; n++) {
        Ctx c;
        ctx_init(&c, 1 << 20);
        c.precision = gemm_precision_usable(cfg->model.precision);   /* the path, and so the workspaces */
        WeightSet ws = {t->w, g};
        Batch b = batch_make(x, labels, n, n, 0, t->C, t->H, t->W, (uint64_t)cfg->experiment.seed, 0);
        t->method->loss(t->state, &c, &ws, &b);
        hw[n - 1] = (double)c.arena.high_water;
        ctx_free(&c);
    }
    free(g);
    free(x);
    const double per = fmax(hw[1] - hw[0], hw[1] / 2), fixed = fmax(hw[0] - per, 0);
    const int emas = cfg->train.ema.n + (cfg->train.ema_halflife_kimg > 0);
    /* Adam m, v and the EMAs; a checkpoint image of every set (with a target and a teacher at
     * most); two batch buffers (the loader prefetches one). */
    const double state = 4.0 * P * (2 + emas) + 4.0 * P * (1 + emas + 2 + 2);
    const double need = fixed + per * t->B_local + state + 2.0 * 4 * img * t->B_local;
    const double avail = cm_mem_available();
    if (avail > 0 && need > 0.95 * avail) {
        /* With several processes, each holds its slice of the batch (and every rank checks). */
        long fits = (long)((0.95 * avail - fixed - state) / (per + 8.0 * img)) * t->world;
        char slice[64] = "";
        if (t->world > 1) snprintf(slice, sizeof slice, " (%d in this process)", t->B_local);
        return cm_fail("%s: train.batch_size = %d%s needs about %.1f GB (%.2f MB of activations per sample with "
                       "model.channels = %d, %.0f MB of weights, optimiser state and checkpoint), more than "
                       "the %.1f GB available; lower train.batch_size (%s%ld fits) or model.channels",
                       source, t->B, slice, need / 1e9, per / 1e6, cfg->model.channels, (fixed + state) / 1e6,
                       avail / 1e9, fits > 0 ? "about " : "", fits > 0 ? fits : 0L);
    }
    return 0;
}

static int trainer_setup(Trainer *t, const Config *cfg, bool resume)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    if (method_get(cfg, &t->method) != 0) return -1;
    cm_set_threads(cfg->train.threads);
    t->config_text = config_to_string(cfg);
    t->rank = dist_rank();
    t->world = dist_world();
    rundir_paths(&t->dir, cfg);
    /* A fresh run over an old one would mix their checkpoints (rundir_create says so too, but
     * before the data is read). Only rank 0 looks at the run directory. */
    if (t->rank == 0 && !resume && rundir_has_checkpoints(&t->dir))
        return cm_fail("%s already has checkpoints: add --resume to continue that run, or choose "
                       "another experiment.name (or remove the directory)", t->dir.root);

    /* The data and the network are checked before anything is created: a configuration that
     * cannot run leaves no run directory behind. */
    const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
    if (dataset_load(&t->data, kind, cfg->data.path[0] ? cfg->data.path : NULL, "train") != 0) return -1;
    /* Rank r takes the samples [r B / P, (r + 1) B / P) of the global batch, as the loader does:
     * slices differ by at most one sample when P does not divide B (loader_init refuses B < P). */
    t->B = cfg->train.batch_size;
    t->sample0 = (int)((int64_t)t->rank * t->B / t->world);
    t->B_local = (int)((int64_t)(t->rank + 1) * t->B / t->world) - t->sample0;
    t->C = t->data.c;
    t->H = cfg->data.pad_to ? cfg->data.pad_to : t->data.h;
    t->W = cfg->data.pad_to ? cfg->data.pad_to : t->data.w;
    const char *source = cfg->source[0] ? cfg->source : "the configuration";
    t->state = calloc(1, t->method->state_size);
    CM_ASSERT(t->state, "out of memory");
    MethodEnv env = {&t->cfg, &t->data, t->C, t->H, t->W};
    if (t->method->setup(t->state, &env, &t->ps) != 0) return cm_fail("%s: %s", source, cm_errmsg());
    t->w = params_buffer(t->ps);
    t->g = params_buffer(t->ps);
    params_randomize(t->ps, t->w, (uint64_t)cfg->experiment.seed);
    if (t->method->start) t->method->start(t->state, t->w);
    if (trainer_check_memory(t, source) != 0) return -1;
    if (loader_init(&t->loader, &t->data, &(LoaderConfig){.batch = t->B, .pad_to = cfg->data.pad_to,
                    .hflip = cfg->data.hflip, .seed = (uint64_t)cfg->experiment.seed, .rank = t->rank, .world = t->world,
                    .prefetch = true}) != 0)
        return cm_fail("%s: %s", source, cm_errmsg());
    CM_ASSERT(t->loader.batch_local == t->B_local, "loader slice %d, trainer slice %d", t->loader.batch_local,
              t->B_local);
    t->batch = cm_malloc((size_t)t->B_local * t->C * t->H * t->W * sizeof(float));
    t->labels = cm_malloc((size_t)t->B_local * sizeof(int));
    optim_init(&t->opt, cfg->train.optimizer, t->ps->total, (float)cfg->train.lr, (float)cfg->train.beta1,
               (float)cfg->train.beta2, (float)cfg->train.eps, (float)cfg->train.weight_decay);
    ema_set_init(&t->emas, t->ps->total);
    for (int i = 0; i < cfg->train.ema.n; i++) ema_set_add_rate(&t->emas, (float)cfg->train.ema.v[i], t->w);
    if (cfg->train.ema_halflife_kimg > 0)
        ema_set_add_halflife(&t->emas, cfg->train.ema_halflife_kimg * 1000.0, cfg->train.ema_rampup, t->w);
    ctx_init(&t->ctx, 64u << 20);
    t->ctx.precision = gemm_precision_usable(cfg->model.precision);
    return 0;
}

static void trainer_free(Trainer *t)
{
    ctx_free(&t->ctx);
    ema_set_free(&t->emas);
    adam_free(&t->opt);
    free(t->w);
    free(t->g);
    free(t->batch);
    free(t->labels);
    if (t->state) t->method->free(t->state);
    free(t->state);
    loader_free(&t->loader);
    dataset_free(&t->data);
    free(t->config_text);
}

/* ---- the divergence guard ----
 * A step whose loss or gradient norm is far above the recent ones (a spike that often precedes a
 * divergence) is reported with its values, and train.guard decides what happens to it. "Far" is
 * a robust z-score, (x - median) / (1.4826 MAD), over the last train.guard_window accepted steps:
 * the median and the median absolute deviation ignore the spikes already in the window, unlike a
 * mean and a standard deviation. Only values above the median count (a falling loss is good news).
 * Non-finite values never get here: train.on_nan handles them, and they are never zeroed. */

enum { GUARD_MIN_SEEN = 10 };
/* Seconds between two readings of the load when the thread count follows it (train.threads = 0):
 * a reading takes 25-50 ms, so 0.1% of a run at most. */
enum { FOLLOW_SECONDS = 60 };

typedef struct Guard {
    int cap, n, next;
    double *loss, *gnorm;        /* rings of the last cap accepted values */
} Guard;

static void guard_init(Guard *g, int window)
{
    memset(g, 0, sizeof *g);
    g->cap = window;
    if (window > 0) {
        g->loss = cm_calloc((size_t)window, sizeof(double));
        g->gnorm = cm_calloc((size_t)window, sizeof(double));
    }
}

static void guard_free(Guard *g)
{
    free(g->loss);
    free(g->gnorm);
}

static void guard_push(Guard *g, double loss, double gnorm)
{
    if (g->cap == 0) return;
    g->loss[g->next] = loss;
    g->gnorm[g->next] = gnorm;
    g->next = (g->next + 1) % g->cap;
    if (g->n < g->cap) g->n++;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The robust z-score of x against the n values v (n >= 1). */
static double robust_z(const double *v, int n, double x)
{
    double *s = cm_malloc((size_t)n * sizeof(double));
    memcpy(s, v, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double med = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    for (int i = 0; i < n; i++) s[i] = fabs(s[i] - med);
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double mad = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    /* A window of equal values (MAD 0) still judges, on a scale of 1e-6 of the median. */
    double scale = fmax(1.4826 * mad, 1e-6 * fabs(med) + 1e-30);
    return (x - med) / scale;
}

/* Whether this step's values are outliers of the window; their z-scores to zl, zg. */
static bool guard_outlier(const Guard *g, double z, double loss, double gnorm, double *zl, double *zg)
{
    *zl = *zg = 0;
    if (g->cap == 0 || g->n < CM_MIN(g->cap, GUARD_MIN_SEEN)) return false;
    *zl = robust_z(g->loss, g->n, loss);
    *zg = robust_z(g->gnorm, g->n, gnorm);
    return *zl > z || *zg > z;
}

/* The loss and grad_norm of the last `window` lines of metrics.jsonl (what was logged up to the
 * checkpoint a resume starts from) into g. */
static void guard_from_metrics(Guard *g, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *l = strstr(line, "\"loss\":"), *n = strstr(line, "\"grad_norm\":");
        if (l && n) guard_push(g, atof(l + 7), atof(n + 12));
    }
    fclose(f);
}

/* Test hook: CMLAB_TEST_OUTLIER="STEP:FACTOR" multiplies the loss and the gradients of the step
 * that ends at STEP by FACTOR (a number, or nan), as a diverging step would look; tests/
 * test_faults.c drives the divergence guard and train.on_nan with it. Unset: no effect. */
static double test_outlier_factor(long step)
{
    const char *spec = getenv("CMLAB_TEST_OUTLIER");
    char *end;
    if (!spec || strtol(spec, &end, 10) != step || *end != ':') return 1;
    return strtod(end + 1, NULL);
}

/* trainer_resume replaced metrics.jsonl (the lines after the checkpoint dropped): the open handle
 * would still write to the old file. */
static int reopen_metrics(Trainer *t, FILE **metrics)
{
    fclose(*metrics);
    *metrics = fopen(t->dir.metrics, "a");
    if (!*metrics) fprintf(stderr, "cmlab train: cannot append to %s: %s\n", t->dir.metrics, strerror(errno));
    return *metrics ? 0 : -1;
}

/* Rolls t back to its newest checkpoint on every rank (the batch of the failing step, `shown` in
 * the message, will be skipped), restarts the guard's window and reopens metrics.jsonl on rank 0.
 * false when the run cannot go on (said why on err). */
static bool trainer_rollback(Trainer *t, FILE **metrics, Guard *guard, long shown, FILE *err)
{
    if (trainer_resume(t) != 0) {
        fprintf(err, "cannot roll back: %s\n", cm_errmsg());
        return false;
    }
    fprintf(err, "rolled back to step %ld; step %ld's batch will be skipped\n", t->step, shown);
    guard->n = guard->next = 0;
    return dist_agree(t->rank == 0 ? reopen_metrics(t, metrics) : 0) == 0;
}

/* Test hook: CMLAB_TEST_RAISE="RANK:STEP:SIGNAL" makes rank RANK raise signal number SIGNAL
 * before step STEP (counted from 0): SIGKILL as the kernel's OOM killer or a lost node would,
 * SIGTERM as a scheduler's stop that reaches one rank first; tests/test_mpi.c checks that the job
 * then ends promptly naming the rank, or stops every rank at the same step. Unset: no effect. */
static void test_raise(int rank, long step)
{
    const char *spec = getenv("CMLAB_TEST_RAISE");
    char *end, *end2;
    if (!spec || strtol(spec, &end, 10) != rank || *end != ':' || strtol(end + 1, &end2, 10) != step ||
        *end2 != ':')
        return;
    raise(atoi(end2 + 1));
}

/* Setup, resume and the metrics file, agreed over the ranks (dist_agree): 0, or -1 after
 * cm_fail() with the message of the lowest failing rank. *r: trainer_resume's result, 1 for a
 * fresh run; *metrics: the open metrics file on rank 0, NULL on the others. */
static int trainer_start(Trainer *t, const Config *cfg, bool resume, FILE *out, int *r, FILE **metrics)
{
    *metrics = NULL;
    if (dist_agree(trainer_setup(t, cfg, resume)) != 0) return -1;
    int other;
    if (!dist_same(t->config_text, strlen(t->config_text) + 1, &other))
        return cm_fail("rank %d's resolved configuration differs from rank 0's: start every rank with the same "
                       "experiment file and --set options", other);
    /* The run directory is made once every rank can run. */
    if (dist_agree(t->rank == 0 ? rundir_create(&t->dir, t->config_text, resume) : 0) != 0) return -1;
    fprintf(out, "run %s: method %s, %zu parameters, batch %d, %dx%dx%d, %d threads", t->dir.root, t->method->name,
            t->method->param_count(t->state), t->B, t->C, t->H, t->W, cm_threads());
    if (t->world > 1) fprintf(out, " per process, %d processes", t->world);
    fprintf(out, "\n");
    t->method->print_table(t->state, out);
    *r = resume ? trainer_resume(t) : 1;
    if (*r < 0) return -1;
    int rc = 0;
    if (t->rank == 0 && resume && *r == 1) {
        if (rundir_has_checkpoints(&t->dir)) {
            /* Checkpoints exist and none is valid (the reasons were printed): starting over would
             * silently throw away the run and write its metrics a second time. */
            rc = cm_fail("%s. Not starting over: restore a checkpoint, or move the step_*.h5 files out of %s to "
                         "train from step 0", cm_errmsg(), t->dir.ckpt);
        } else {
            printf("resume: %s; starting from step 0\n", cm_errmsg());
            /* metrics.jsonl may hold lines of a run whose checkpoints were moved away. */
            rc = rundir_metrics_truncate(&t->dir, 0);
        }
    }
    if (rc == 0 && t->rank == 0 && !(*metrics = fopen(t->dir.metrics, "a")))
        rc = cm_fail("cannot append to %s: %s", t->dir.metrics, strerror(errno));
    return dist_agree(rc);
}

/* ---- the loop ---- */

int trainer_run(const Config *cfg, bool resume)
{
    Trainer t;
    FILE *metrics;
    int r = 1;
    /* Ranks other than 0 print nothing: every decision below is common to all ranks, and rank 0
     * reports it (a failure of one rank reaches rank 0 through dist_agree). */
    const bool lead = dist_rank() == 0;
    FILE *out = lead ? stdout : fopen("/dev/null", "w"), *err = lead ? stderr : out;
    CM_ASSERT(out, "cannot open /dev/null");
    if (trainer_start(&t, cfg, resume, out, &r, &metrics) != 0) {
        fprintf(err, "cmlab train: %s\n", cm_errmsg());
        if (metrics) fclose(metrics);
        if (!lead) fclose(out);
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    trainer_stop_requested = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    const CfgTrain *tr = &cfg->train;
    bool tty = lead && isatty(1);
    /* Wall time in the ranks' reduction, including the wait for the slowest rank: reduce_s since the
     * last log line, reduce_total over the run. */
    double t0 = cm_now(), tlog = t0, loss_sum = 0, gnorm_sum = 0, reduce_s = 0, reduce_total = 0;
    long start = t.step, logged = 0, batches = 0, skip_step = -1, skipped = 0, nonfinite = 0;
    t.t_start = t0;
    const int substeps = t.method->substeps ? t.method->substeps(t.state) : 1;
    /* -1: non-finite values go to train.on_nan (method.h nonfinite_limit). */
    const long nonfinite_limit = t.method->nonfinite_limit ? t.method->nonfinite_limit(t.state) : -1;
    /* The test hook of train.on_nan (trainer.h). */
    const char *nan_hook = getenv("CMLAB_TEST_NAN_STEP");
    long nan_step = nan_hook && nan_hook[0] ? atol(nan_hook) : -1;
    int rc = CM_EXIT_OK;
    bool stop = false;
    size_t n = t.ps->total;
    Guard guard, before;
    guard_init(&guard, tr->guard_window);
    /* After a resume, the first logged values are compared with those logged before the
     * checkpoint: a jump there means the resumed state is not the one that was saved. */
    guard_init(&before, r == 0 && lead ? tr->guard_window : 0);
    if (r == 0 && lead) guard_from_metrics(&before, t.dir.metrics);
    /* A count left to the rule follows the load (threads.h, cm_cores_free); one process only, since
     * the ranks of a node would count each other. */
    const bool follow = cfg->train.threads == 0 && cm_thread_count_ours() && t.world == 1;
    const char *follow_test = getenv("CMLAB_TEST_FOLLOW_SECONDS");   /* test hook: test_wait's shorter interval */
    const double follow_every = follow_test ? atof(follow_test) : FOLLOW_SECONDS;
    double t_follow = t0;
    while (t.step < tr->iterations && !stop) {
        loader_next(&t.loader, t.batch, t.labels);
        if (t.step == skip_step) {          /* rollback: the batch that gave a NaN is skipped */
            t.step++;
            /* Skipping the last step ends the loop without an update, so the final checkpoint is
             * saved here. */
            if (t.step == tr->iterations && trainer_checkpoint(&t) != 0) {
                fprintf(err, "\ncmlab train: %s\n", cm_errmsg());
                rc = CM_EXIT_RUNTIME;
                break;
            }
            continue;
        }
        test_raise(t.rank, t.step);
        /* The batch's updates: one, or the method's substeps (method.h). after: what the loop
         * does once they are done: go on, restart the loop (a roll-back), or stop. */
        enum { AFTER_NEXT, AFTER_RESTART, AFTER_STOP } after = AFTER_NEXT;
        bool time_up = false;
        for (int k = 0; k < substeps && after == AFTER_NEXT; k++) {
            ctx_reset(&t.ctx);
            memset(t.g, 0, n * sizeof(float));
            WeightSet online = {t.w, t.g};
            Batch b = batch_make(t.batch, t.labels, t.B_local, t.B, t.sample0, t.C, t.H, t.W,
                                 (uint64_t)cfg->experiment.seed, t.step);
            b.substep = k;
            if (t.step == nan_step && k == 0) t.w[0] = NAN;
            double loss = t.method->loss(t.state, &t.ctx, &online, &b);
            const double spike = k == 0 ? test_outlier_factor(t.step + 1) : 1;
            if (spike != 1) {
                loss *= spike;
                for (size_t i = 0; i < n; i++) t.g[i] *= (float)spike;
            }
            /* Data parallelism: a method's loss is the mean over the samples it is given (method.h),
             * so weighting rank r's loss and gradients by B_r / B makes their sum over the ranks the
             * mean over the global batch: what one process at batch B computes, up to the order of
             * the sums. The stop request and the time limit are summed too, so that every rank ends
             * at the same step even when a signal reaches the ranks at different moments. */
            double common[3] = {loss, trainer_stop_requested,
                                tr->time_limit > 0 && cm_now() - t0 >= tr->time_limit};
            if (t.world > 1) {
                const float share = (float)t.B_local / (float)t.B;
                for (size_t i = 0; i < n; i++) t.g[i] *= share;
                common[0] *= (double)t.B_local / t.B;
                double tr0 = cm_now();
                dist_sum_floats(t.g, n);
                dist_sum_doubles(common, 3);
                const double dt = cm_now() - tr0;
                reduce_s += dt;
                reduce_total += dt;
            }
            loss = common[0];
            stop = stop || common[1] > 0;
            time_up = common[2] > 0;
            double gnorm = grad_clip(t.g, n, tr->grad_clip);
            if ((!isfinite(loss) || !isfinite(gnorm)) && nonfinite_limit >= 0) {
                nonfinite++;
                t.nonfinite_total++;
                fprintf(err, "\nstep %ld, update %d: loss %g, gradient norm %g: update skipped (%ld so far in this "
                        "run)\n", t.step, k, loss, gnorm, t.nonfinite_total);
                if (t.nonfinite_total > nonfinite_limit) {
                    fprintf(err, "stopping: more than %ld non-finite updates; the last checkpoint is in %s\n",
                            nonfinite_limit, t.dir.ckpt);
                    rc = CM_EXIT_RUNTIME;
                    after = AFTER_STOP;
                }
                continue;
            }
            if (!isfinite(loss) || !isfinite(gnorm)) {
                fprintf(err, "\nstep %ld: loss %g, gradient norm %g\n", t.step, loss, gnorm);
                if (tr->on_nan == CFG_ON_NAN_STOP) {
                    fprintf(err, "stopping (train.on_nan = stop); the last checkpoint is in %s\n", t.dir.ckpt);
                    rc = CM_EXIT_RUNTIME;
                    after = AFTER_STOP;
                    break;
                }
                skip_step = t.step;
                after = trainer_rollback(&t, &metrics, &guard, skip_step, err) ? AFTER_RESTART : AFTER_STOP;
                if (after == AFTER_STOP) rc = CM_EXIT_RUNTIME;
                break;
            }
            double zl, zg;
            bool drop = false;
            if (guard_outlier(&guard, tr->guard_z, loss, gnorm, &zl, &zg)) {
                fprintf(err, "\nstep %ld: outlier: loss %g (robust z %.1f), gradient norm %g (robust z %.1f) "
                             "against the last %d steps (train.guard_z = %g); train.guard = %s\n", t.step + 1,
                        loss, zl, gnorm, zg, guard.n, tr->guard_z, config_enum_name("train.guard", tr->guard));
                if (tr->guard == CFG_GUARD_STOP) {
                    fprintf(err, "stopping; the last checkpoint is in %s\n", t.dir.ckpt);
                    rc = CM_EXIT_RUNTIME;
                    after = AFTER_STOP;
                    break;
                }
                if (tr->guard == CFG_GUARD_ROLLBACK) {
                    skip_step = t.step;
                    after = trainer_rollback(&t, &metrics, &guard, skip_step + 1, err) ? AFTER_RESTART : AFTER_STOP;
                    if (after == AFTER_STOP) rc = CM_EXIT_RUNTIME;
                    break;
                }
                drop = tr->guard == CFG_GUARD_SKIP;
            }
            if (!drop) guard_push(&guard, loss, gnorm);
            skipped += drop;
            if (!drop) {
                t.opt.lr = optim_warmup_lr((float)tr->lr, t.opt.step, tr->warmup);
                adam_step(&t.opt, t.w, t.g);
                ema_set_update(&t.emas, t.w, (double)t.step * t.B, t.B);
                if (t.method->after_update) t.method->after_update(t.state, t.w);
            }
            loss_sum += loss;
            gnorm_sum += gnorm;
            logged++;
        }
        if (after == AFTER_STOP) break;
        if (after == AFTER_RESTART) continue;
        t.step++;
        batches++;
        bool last = t.step == tr->iterations || time_up;

        if (follow && cm_now() - t_follow >= follow_every) {
            int now_free = cm_cores_free();
            if (now_free != cm_threads()) {
                fprintf(stderr, "%scmlab train: step %ld: %d thread%s -> %d, the cores the tasks running beside cmlab "
                        "leave now (train.threads = 0)\n", tty ? "\n" : "", t.step, cm_threads(),
                        cm_threads() == 1 ? "" : "s", now_free);
                cm_set_threads(now_free);
            }
            t_follow = cm_now();
        }
        if (lead && (t.step % tr->log_every == 0 || last)) {
            double now = cm_now(), ips = batches * t.B / (now - tlog);
            /* Every update of the logged steps may have been skipped (nonfinite_limit). */
            logged = CM_MAX(logged, 1);
            double eta = (tr->iterations - t.step) * (now - t0) / (double)(t.step - start);
            if (tr->time_limit > 0) eta = fmin(eta, fmax(0, tr->time_limit - (now - t0)));
            fprintf(metrics, "{\"step\": %ld, \"loss\": %.6g, \"grad_norm\": %.6g, \"lr\": %.6g, "
                    "\"img_per_s\": %.1f, \"time\": %.2f", t.step, loss_sum / logged,
                    gnorm_sum / logged, (double)t.opt.lr, ips, now - t0);
            if (skipped) fprintf(metrics, ", \"guard_skipped\": %ld", skipped);
            if (nonfinite) fprintf(metrics, ", \"nonfinite_skipped\": %ld", nonfinite);
            if (t.world > 1) fprintf(metrics, ", \"reduce_share\": %.4f", reduce_s / (now - tlog));
            fprintf(metrics, "}\n");
            fflush(metrics);
            if (before.n > 0) {
                double bl = robust_z(before.loss, before.n, loss_sum / logged);
                double bg = robust_z(before.gnorm, before.n, gnorm_sum / logged);
                if (bl > tr->guard_z || bg > tr->guard_z)
                    fprintf(stderr, "\nresume: the first logged values after the checkpoint jump: loss %g (robust "
                                    "z %.1f), gradient norm %g (robust z %.1f) against the %d lines logged before "
                                    "it\n", loss_sum / logged, bl, gnorm_sum / logged, bg, before.n);
                before.n = 0;
            }
            printf("%sstep %ld/%d  loss %.4f  grad %.3f  %.0f img/s  ETA %.0f s%s", tty ? "\r" : "", t.step,
                   tr->iterations, loss_sum / logged, gnorm_sum / logged, ips, eta, tty ? "   " : "\n");
            fflush(stdout);
            loss_sum = gnorm_sum = 0;
            logged = batches = 0;
            skipped = nonfinite = 0;
            reduce_s = 0;
            tlog = now;
        }
        if ((tr->checkpoint_every > 0 && t.step % tr->checkpoint_every == 0) || last) {
            if (trainer_checkpoint(&t) != 0) {
                fprintf(err, "\ncmlab train: %s\n", cm_errmsg());
                rc = CM_EXIT_RUNTIME;
                break;
            }
        }
        if (lead && ((tr->sample_every > 0 && t.step % tr->sample_every == 0) || last)) {
            if (tty) printf("\n");
            if (trainer_sample_grid(&t, metrics) != 0) fprintf(stderr, "warning: sample grid: %s\n", cm_errmsg());
        }
        if (last) break;
    }
    if (stop && rc == CM_EXIT_OK) {
        fprintf(out, "\nstopping at step %ld on request; saving a checkpoint\n", t.step);
        if (trainer_checkpoint(&t) != 0) {
            fprintf(err, "cmlab train: %s\n", cm_errmsg());
            rc = CM_EXIT_RUNTIME;
        }
    }
    double el = cm_now() - t0;
    fprintf(out, "%sdone: step %ld, %.0f s, %.1f img/s, arena high-water %.1f MB; run directory %s\n",
            tty ? "\n" : "", t.step, el, (t.step - start) * t.B / fmax(el, 1e-9),
            t.ctx.arena.high_water / 1e6, t.dir.root);
    if (t.world > 1)
        fprintf(out, "%d processes: %.1f s (%.1f%%) in the gradient reduction, including the wait for the slowest "
                "rank\n", t.world, reduce_total, 100 * reduce_total / fmax(el, 1e-9));
    if (metrics) fclose(metrics);
    if (!lead) fclose(out);
    guard_free(&guard);
    guard_free(&before);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    trainer_free(&t);
    return rc;
}
