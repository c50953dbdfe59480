#include "trainer.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/image.h"
#include "data/loader.h"
#include "io/atomic.h"
#include "train/batch.h"
#include "io/checkpoint.h"
#include "train/method.h"
#include "train/model.h"
#include "sample/sample.h"

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
    char run_dir[512], ckpt_dir[600], samples_dir[600], metrics_path[600];
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
    int B, C, H, W;
    float *batch;                /* [B, C, H, W] */
    int *labels;                 /* [B], the batch's classes */
} Trainer;

/* ---- run directory ---- */

/* After a resume from step k, metrics lines of later steps (written before a crash, after the
 * checkpoint) are dropped so the file reads as one run with no repeated steps. */
static int metrics_truncate(const char *path, long step)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t cap = 1 << 16, len = 0;
    char *out = cm_malloc(cap), line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"step\":");
        if (s && atol(s + 7) > step) continue;
        size_t n = strlen(line);
        if (len + n + 1 > cap) {
            cap = 2 * (len + n + 1);
            out = realloc(out, cap);
            CM_ASSERT(out, "out of memory");
        }
        memcpy(out + len, line, n);
        len += n;
    }
    fclose(f);
    out[len] = 0;
    int rc = atomic_write(path, out, len);
    free(out);
    return rc;
}

/* ---- setup ---- */

static void ckpt_state_fill(Trainer *t, CkptState *s)
{
    memset(s, 0, sizeof *s);
    s->ps = t->ps;
    ckpt_add_weights(s, "online", t->w);
    if (t->method->ckpt_save) t->method->ckpt_save(t->state, s);
    ckpt_add_emas(s, &t->emas);
    s->opt = &t->opt;
    s->step = t->step;
    s->method = t->method->name;
    s->config = t->config_text;
    s->seed = (uint64_t)t->cfg.experiment.seed;
    LoaderCursor cur = loader_get_cursor(&t->loader);
    s->data_epoch = cur.epoch;
    s->data_index = cur.index;
    s->world_size = 1;
}

static int trainer_checkpoint(Trainer *t)
{
    CkptState s;
    ckpt_state_fill(t, &s);
    char path[700];
    if (ckpt_save(t->ckpt_dir, &s, path, sizeof path) != 0) return -1;
    /* train.keep_checkpoints = 0 keeps every checkpoint (ckpt_prune would keep one). */
    if (t->cfg.train.keep_checkpoints > 0 && ckpt_prune(t->ckpt_dir, t->cfg.train.keep_checkpoints) < 0)
        fprintf(stderr, "warning: pruning %s: %s\n", t->ckpt_dir, cm_errmsg());
    return 0;
}

/* Loads the newest valid checkpoint into t: 0, or 1 when there is none (cm_errmsg says why),
 * or -1 on an error. */
static int trainer_resume(Trainer *t)
{
    CkptState s;
    ckpt_state_fill(t, &s);
    char used[700];
    if (ckpt_load_latest(t->ckpt_dir, &s, used, sizeof used) != 0) return 1;
    free(s.loaded_config);
    t->step = s.step;
    if (t->method->ckpt_loaded) t->method->ckpt_loaded(t->state, &s);
    if (loader_set_cursor(&t->loader, (LoaderCursor){s.data_epoch, s.data_index}) != 0)
        return cm_fail("%s: %s", used, cm_errmsg());
    printf("resume: %s (step %ld)\n", used, t->step);
    return metrics_truncate(t->metrics_path, t->step);
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
    if (t->method->report) return t->method->report(t->state, w, wname, &t->ctx, metrics, t->step);
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
        if (p.kind == MODEL_DIFFUSION) snprintf(path, sizeof path, "%s/step_%08ld.png", t->samples_dir, t->step);
        else snprintf(path, sizeof path, "%s/step_%08ld_%dstep.png", t->samples_dir, t->step, nfes[i]);
        if (rc == 0) rc = image_write_grid(path, x, n, t->C, t->H, t->W, 8, 2);
        if (rc == 0 && p.kind == MODEL_DIFFUSION)
            printf("samples: %s (%s, %s weights, %d NFE)\n", path, solver_kind_name(p.solver), wname, st.nfe);
        else if (rc == 0)
            printf("samples: %s (%d-step, %s weights)\n", path, nfes[i], wname);
    }
    free(x);
    return rc;
}

/* True if dir holds a step_*.h5 file. */
static bool has_checkpoints(const char *dir)
{
    DIR *d = opendir(dir);
    bool found = false;
    for (struct dirent *e; d && !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = !strncmp(e->d_name, "step_", 5) && n > 3 && !strcmp(e->d_name + n - 3, ".h5");
    }
    if (d) closedir(d);
    return found;
}

static int trainer_setup(Trainer *t, const Config *cfg, bool resume)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    if (method_get(cfg, &t->method) != 0) return -1;
    cm_set_threads(cfg->train.threads);
    t->config_text = config_to_string(cfg);
    snprintf(t->run_dir, sizeof t->run_dir, "%s/%s", cfg->experiment.out_dir, cfg->experiment.name);
    snprintf(t->ckpt_dir, sizeof t->ckpt_dir, "%s/ckpt", t->run_dir);
    snprintf(t->samples_dir, sizeof t->samples_dir, "%s/samples", t->run_dir);
    snprintf(t->metrics_path, sizeof t->metrics_path, "%s/metrics.jsonl", t->run_dir);
    /* A fresh run over an old one would mix their checkpoints, and pruning would then delete
     * the new run's files as the older steps. */
    if (!resume && has_checkpoints(t->ckpt_dir))
        return cm_fail("%s already has checkpoints: add --resume to continue that run, or choose "
                       "another experiment.name (or remove the directory)", t->run_dir);
    if (cm_mkdir_p(t->ckpt_dir) || cm_mkdir_p(t->samples_dir)) return -1;
    char path[700];
    snprintf(path, sizeof path, "%s/config.ini", t->run_dir);
    if (atomic_write(path, t->config_text, strlen(t->config_text))) return -1;

    const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
    if (dataset_load(&t->data, kind, cfg->data.path[0] ? cfg->data.path : NULL, "train") != 0) return -1;
    t->B = cfg->train.batch_size;
    t->C = t->data.c;
    t->H = cfg->data.pad_to ? cfg->data.pad_to : t->data.h;
    t->W = cfg->data.pad_to ? cfg->data.pad_to : t->data.w;
    if (loader_init(&t->loader, &t->data, &(LoaderConfig){.batch = t->B, .pad_to = cfg->data.pad_to,
                    .hflip = cfg->data.hflip, .seed = (uint64_t)cfg->experiment.seed, .rank = 0, .world = 1,
                    .prefetch = true}) != 0)
        return -1;
    t->batch = cm_malloc((size_t)t->B * t->C * t->H * t->W * sizeof(float));
    t->labels = cm_malloc((size_t)t->B * sizeof(int));

    t->state = calloc(1, t->method->state_size);
    CM_ASSERT(t->state, "out of memory");
    MethodEnv env = {&t->cfg, &t->data, t->C, t->H, t->W};
    if (t->method->setup(t->state, &env, &t->ps) != 0) return -1;
    t->w = params_buffer(t->ps);
    t->g = params_buffer(t->ps);
    params_randomize(t->ps, t->w, (uint64_t)cfg->experiment.seed);
    if (t->method->start) t->method->start(t->state, t->w);
    optim_init(&t->opt, cfg->train.optimizer, t->ps->total, (float)cfg->train.lr, (float)cfg->train.beta1,
               (float)cfg->train.beta2, (float)cfg->train.eps, (float)cfg->train.weight_decay);
    ema_set_init(&t->emas, t->ps->total);
    for (int i = 0; i < cfg->train.ema.n; i++) ema_set_add_rate(&t->emas, (float)cfg->train.ema.v[i], t->w);
    if (cfg->train.ema_halflife_kimg > 0)
        ema_set_add_halflife(&t->emas, cfg->train.ema_halflife_kimg * 1000.0, cfg->train.ema_rampup, t->w);
    ctx_init(&t->ctx, 64u << 20);
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

/* ---- the loop ---- */

int trainer_run(const Config *cfg, bool resume)
{
    Trainer t;
    if (trainer_setup(&t, cfg, resume) != 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    printf("run %s: method %s, %zu parameters, batch %d, %dx%dx%d, %d threads\n", t.run_dir, t.method->name,
           t.method->param_count(t.state), t.B, t.C, t.H, t.W, cm_threads());
    t.method->print_table(t.state, stdout);
    int r = resume ? trainer_resume(&t) : 1;
    if (r < 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    if (resume && r == 1) printf("resume: %s; starting from step 0\n", cm_errmsg());
    FILE *metrics = fopen(t.metrics_path, "a");
    if (!metrics) {
        fprintf(stderr, "cmlab train: cannot append to %s: %s\n", t.metrics_path, strerror(errno));
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    trainer_stop_requested = 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    const CfgTrain *tr = &cfg->train;
    bool tty = isatty(1);
    double t0 = cm_now(), tlog = t0, loss_sum = 0, gnorm_sum = 0;
    long start = t.step, logged = 0, skip_step = -1;
    /* The test hook of train.on_nan (trainer.h). */
    const char *hook = getenv("CMLAB_TEST_NAN_STEP");
    long nan_step = hook && hook[0] ? atol(hook) : -1;
    int rc = CM_EXIT_OK;
    size_t n = t.ps->total;
    while (t.step < tr->iterations && !trainer_stop_requested) {
        loader_next(&t.loader, t.batch, t.labels);
        if (t.step == skip_step) {          /* rollback: the batch that gave a NaN is skipped */
            t.step++;
            /* Skipping the last step ends the loop without an update, so the final checkpoint is
             * saved here. */
            if (t.step == tr->iterations && trainer_checkpoint(&t) != 0) {
                fprintf(stderr, "\ncmlab train: %s\n", cm_errmsg());
                rc = CM_EXIT_RUNTIME;
                break;
            }
            continue;
        }
        ctx_reset(&t.ctx);
        memset(t.g, 0, n * sizeof(float));
        WeightSet online = {t.w, t.g};
        /* One process: the local batch is the global batch and starts at sample 0. */
        Batch b = batch_make(t.batch, t.labels, t.B, t.B, 0, t.C, t.H, t.W, (uint64_t)cfg->experiment.seed, t.step);
        if (t.step == nan_step) t.w[0] = NAN;
        double loss = t.method->loss(t.state, &t.ctx, &online, &b);
        double gnorm = grad_clip(t.g, n, tr->grad_clip);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            fprintf(stderr, "\nstep %ld: loss %g, gradient norm %g\n", t.step, loss, gnorm);
            if (tr->on_nan == CFG_ON_NAN_STOP) {
                fprintf(stderr, "stopping (train.on_nan = stop); the last checkpoint is in %s\n", t.ckpt_dir);
                rc = CM_EXIT_RUNTIME;
                break;
            }
            skip_step = t.step;
            if (trainer_resume(&t) != 0) {
                fprintf(stderr, "cannot roll back: %s\n", cm_errmsg());
                rc = CM_EXIT_RUNTIME;
                break;
            }
            fprintf(stderr, "rolled back to step %ld; step %ld's batch will be skipped\n", t.step, skip_step);
            /* trainer_resume replaced metrics.jsonl (the lines after the checkpoint dropped): the
             * open handle still writes to the old file. */
            fclose(metrics);
            metrics = fopen(t.metrics_path, "a");
            if (!metrics) {
                fprintf(stderr, "cmlab train: cannot append to %s: %s\n", t.metrics_path, strerror(errno));
                rc = CM_EXIT_RUNTIME;
                break;
            }
            continue;
        }
        t.opt.lr = optim_warmup_lr((float)tr->lr, t.opt.step, tr->warmup);
        adam_step(&t.opt, t.w, t.g);
        ema_set_update(&t.emas, t.w, (double)t.step * t.B, t.B);
        if (t.method->after_update) t.method->after_update(t.state, t.w);
        t.step++;
        loss_sum += loss;
        gnorm_sum += gnorm;
        logged++;
        bool last = t.step == tr->iterations || (tr->time_limit > 0 && cm_now() - t0 >= tr->time_limit);

        if (t.step % tr->log_every == 0 || last) {
            double now = cm_now(), ips = logged * t.B / (now - tlog);
            double eta = (tr->iterations - t.step) * (now - t0) / (double)(t.step - start);
            if (tr->time_limit > 0) eta = fmin(eta, fmax(0, tr->time_limit - (now - t0)));
            fprintf(metrics, "{\"step\": %ld, \"loss\": %.6g, \"grad_norm\": %.6g, \"lr\": %.6g, "
                    "\"img_per_s\": %.1f, \"time\": %.2f}\n", t.step, loss_sum / logged,
                    gnorm_sum / logged, (double)t.opt.lr, ips, now - t0);
            fflush(metrics);
            printf("%sstep %ld/%d  loss %.4f  grad %.3f  %.0f img/s  ETA %.0f s%s", tty ? "\r" : "", t.step,
                   tr->iterations, loss_sum / logged, gnorm_sum / logged, ips, eta, tty ? "   " : "\n");
            fflush(stdout);
            loss_sum = gnorm_sum = 0;
            logged = 0;
            tlog = now;
        }
        if ((tr->checkpoint_every > 0 && t.step % tr->checkpoint_every == 0) || last) {
            if (trainer_checkpoint(&t) != 0) {
                fprintf(stderr, "\ncmlab train: %s\n", cm_errmsg());
                rc = CM_EXIT_RUNTIME;
                break;
            }
        }
        if ((tr->sample_every > 0 && t.step % tr->sample_every == 0) || last) {
            if (tty) printf("\n");
            if (trainer_sample_grid(&t, metrics) != 0) fprintf(stderr, "warning: sample grid: %s\n", cm_errmsg());
        }
        if (last) break;
    }
    if (trainer_stop_requested && rc == CM_EXIT_OK) {
        printf("\nstopping at step %ld on request; saving a checkpoint\n", t.step);
        if (trainer_checkpoint(&t) != 0) {
            fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
            rc = CM_EXIT_RUNTIME;
        }
    }
    double el = cm_now() - t0;
    printf("%sdone: step %ld, %.0f s, %.1f img/s, arena high-water %.1f MB; run directory %s\n",
           tty ? "\n" : "", t.step, el, (t.step - start) * t.B / fmax(el, 1e-9),
           t.ctx.arena.high_water / 1e6, t.run_dir);
    if (metrics) fclose(metrics);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    trainer_free(&t);
    return rc;
}
