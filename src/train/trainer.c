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

#include "autograd/streams.h"
#include "data/image.h"
#include "data/loader.h"
#include "nn/classifier.h"
#include "train/checkpoint.h"
#include "train/ct.h"
#include "train/ct_schedule.h"
#include "train/eval.h"
#include "train/precond.h"
#include "train/model.h"
#include "train/sample.h"

volatile int trainer_stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    trainer_stop_requested = 1;
}

typedef struct Trainer Trainer;

/* A method: one step's loss, with the gradients accumulated into t->g. */
typedef struct Method {
    CfgMethod id;
    double (*loss)(Trainer *t, const float *x0);
    void (*after_update)(Trainer *t);   /* after the optimiser and EMAs (target networks); may be NULL */
} Method;

struct Trainer {
    Config cfg;
    char *config_text;
    char run_dir[512], ckpt_dir[600], samples_dir[600], metrics_path[600];
    Dataset data;
    Loader loader;
    UNet net;                    /* the generative methods' network */
    Classifier clf;              /* method = classifier's network */
    const ParamSet *ps;          /* the trained network's layout: &net.ps or &clf.ps */
    Dataset test;                /* method = classifier: the test split, for its accuracy */
    PrecondParams pre;
    float *w, *g;                /* online weights and their gradients */
    float *target;               /* the EMA target network (ct.target_mu, cd.target_mu > 0), else NULL */
    float *teacher;              /* CD: the EDM teacher's weights (same layout), else NULL */
    PrecondParams teacher_pre;   /* CD: the teacher's (EDM) preconditioning */
    long sched_N;                /* CT, CD: the grid size N(k) and target rate mu(k) of the last step */
    double sched_mu;
    EmaSet emas;
    Adam opt;
    Ctx ctx;
    long step;
    int B, C, H, W;
    float *batch;                /* [B, C, H, W] */
    int *labels;                 /* [B], the batch's classes */
    const Method *method;
};

/* ---- method = edm (reference/cm.md §1.3) ----
 * sigma = exp(P_mean + P_std n), y = x0 + sigma z, loss = mean_b lambda(sigma_b) mean_pixels
 * (D(y; sigma_b) - x0)^2 with lambda = (sigma^2 + sd^2) / (sigma sd)^2. EDM sums over pixels;
 * the per-pixel mean differs by the constant factor C*H*W, which Adam does not see except
 * through eps, and keeps the logged loss readable (about 1 at the start). */
static double edm_loss(Trainer *t, const float *x0)
{
    const Config *cfg = &t->cfg;
    Ctx *c = &t->ctx;
    int B = t->B;
    size_t dim = (size_t)t->C * t->H * t->W;
    uint64_t seed = (uint64_t)cfg->experiment.seed;
    Rng rs = {seed, STREAM_NOISE_LEVEL, (uint32_t)t->step};
    Rng rn = {seed, STREAM_NOISE, (uint32_t)t->step};
    Rng rd = {seed, STREAM_DROPOUT_BASE, (uint32_t)t->step};
    float *sigma = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *lam = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *y = arena_alloc(&c->arena, (size_t)B * dim * sizeof(float));
    rng_normal(&rs, sigma, B, 0, 1);
    rng_normal(&rn, y, B, 0, dim);
    double sd = cfg->model.sigma_data;
    for (int b = 0; b < B; b++) {
        double s = exp(cfg->edm.p_mean + cfg->edm.p_std * sigma[b]);
        sigma[b] = (float)s;
        lam[b] = (float)((s * s + sd * sd) / (s * s * sd * sd));
        for (size_t k = 0; k < dim; k++) y[b * dim + k] = x0[b * dim + k] + sigma[b] * y[b * dim + k];
    }
    WeightSet ws = {t->w, t->g};
    Tensor *ty = tensor_wrap(c, y, NULL, 4, SHAPE(B, t->C, t->H, t->W), false);
    Tensor *tx = tensor_wrap(c, (float *)x0, NULL, 4, SHAPE(B, t->C, t->H, t->W), false);
    Tensor *tl = tensor_wrap(c, lam, NULL, 1, SHAPE(B), false);
    Tensor *D = precond_apply(c, &t->pre, &t->net, &ws, ty, sigma, cfg->model.dropout > 0 ? &rd : NULL, 0);
    Tensor *loss = op_mean(c, op_mul(c, op_mse(c, D, tx), tl));
    tape_backward(c, loss, NULL);
    return loss->data[0];
}

/* ---- method = ct: Consistency Training with the iCT switches (reference/cm.md §4-5); the loss
 * itself is ct_step_loss (ct.h) ----
 * Interval i of the ascending Karras grid sigma[0..N-1] (N = N(k)); the same z in both terms:
 *   a = f_theta(x + sigma[i+1] z, sigma[i+1])          online, with dropout
 *   b = f_target(x + sigma[i] z, sigma[i])             no gradient, the same dropout masks
 *   loss = mean_b lambda_i d(a, b)
 * The target is the EMA network with rate mu(k) (ct.target_mu > 0, CT) or the online weights
 * themselves (ct.target_mu = 0, iCT). */
static double ct_mu_at(const Config *cfg, long k, int N)
{
    double mu0 = cfg->ct.target_mu;
    if (mu0 <= 0) return 0;
    if (cfg->ct.curriculum == CFG_CURRICULUM_ORIGINAL)
        return ct_mu(k, cfg->train.iterations, config_ct_s0(cfg), config_ct_s1(cfg), mu0);
    return exp(config_ct_s0(cfg) * log(mu0) / (N - 1));
}

static double ct_loss(Trainer *t, const float *x0)
{
    const Config *cfg = &t->cfg;
    Ctx *c = &t->ctx;
    int B = t->B;
    size_t dim = (size_t)t->C * t->H * t->W;
    uint64_t seed = (uint64_t)cfg->experiment.seed;
    int N = ct_N(cfg->ct.curriculum, t->step, cfg->train.iterations, config_ct_s0(cfg), config_ct_s1(cfg));
    double *sigma = arena_alloc(&c->arena, 3 * (size_t)N * sizeof(double)), *p = sigma + N, *cdf = p + N;
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    if (cfg->ct.sampling == CFG_SAMPLING_LOGNORMAL) {
        ict_index_probs(N, sigma, cfg->ct.p_mean, cfg->ct.p_std, p);
        ct_index_cdf(p, N - 1, cdf);
    }
    Rng rs = {seed, STREAM_NOISE_LEVEL, (uint32_t)t->step};
    Rng rn = {seed, STREAM_NOISE, (uint32_t)t->step};
    Rng rd = {seed, STREAM_DROPOUT_BASE, (uint32_t)t->step};
    float *u = arena_alloc(&c->arena, 3 * (size_t)B * sizeof(float)), *t1 = u + B, *t0 = t1 + B;
    float *lam = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    float *z = arena_alloc(&c->arena, (size_t)B * dim * sizeof(float));
    rng_uniform(&rs, u, B, 0, 1);
    rng_normal(&rn, z, B, 0, dim);
    for (int b = 0; b < B; b++) {
        int i = ct_sample_index(cfg->ct.sampling == CFG_SAMPLING_LOGNORMAL ? cdf : NULL, N - 1, u[b]);
        t1[b] = (float)sigma[i + 1];
        t0[b] = (float)sigma[i];
        lam[b] = (float)ct_weight(cfg->ct.weighting, sigma, i);
    }
    WeightSet online = {t->w, t->g};
    CtBatch bt = {x0, z, t1, t0, lam, NULL, B, t->C, t->H, t->W};
    double loss = ct_step_loss(c, &t->net, &t->pre, &online, t->target ? t->target : t->w, &bt, cfg->ct.loss,
                               cfg->model.dropout > 0 ? &rd : NULL);
    t->sched_N = N;
    t->sched_mu = ct_mu_at(cfg, t->step, N);
    return loss;
}

/* ---- method = cd: Consistency Distillation (reference/cm.md §3.1) ----
 * Interval i ~ Uniform{0..N-2} of the ascending Karras grid sigma[0..N-1] (N = cd.N), x1 = x + sigma[i+1] z:
 *   a = f_theta(x1, sigma[i+1])                                  online, with dropout
 *   b = f_target(teacher ODE step from x1 down to sigma[i], sigma[i])   no gradient, same masks
 *   loss = mean_b d(a, b)         (weight 1, as every released CD config)
 * The teacher is the EDM checkpoint's weight set (cd.teacher_weights) in eval mode; the student,
 * the target and every EMA start from it. Target: the EMA network with the fixed rate
 * cd.target_mu, or the online weights themselves (0, the CIFAR-10 recipe). */
static double cd_loss(Trainer *t, const float *x0)
{
    const Config *cfg = &t->cfg;
    Ctx *c = &t->ctx;
    int B = t->B, N = cfg->cd.N;
    size_t dim = (size_t)t->C * t->H * t->W;
    uint64_t seed = (uint64_t)cfg->experiment.seed;
    double *sigma = arena_alloc(&c->arena, (size_t)N * sizeof(double));
    ct_sigmas(N, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, sigma);
    Rng rs = {seed, STREAM_NOISE_LEVEL, (uint32_t)t->step};
    Rng rn = {seed, STREAM_NOISE, (uint32_t)t->step};
    Rng rd = {seed, STREAM_DROPOUT_BASE, (uint32_t)t->step};
    float *u = arena_alloc(&c->arena, 4 * (size_t)B * sizeof(float)), *t1 = u + B, *t0 = t1 + B, *lam = t0 + B;
    float *z = arena_alloc(&c->arena, 3 * (size_t)B * dim * sizeof(float)), *x1 = z + B * dim, *xt = x1 + B * dim;
    rng_uniform(&rs, u, B, 0, 1);
    rng_normal(&rn, z, B, 0, dim);
    for (int b = 0; b < B; b++) {
        int i = ct_sample_index(NULL, N - 1, u[b]);
        t1[b] = (float)sigma[i + 1];
        t0[b] = (float)sigma[i];
        lam[b] = 1;
        for (size_t k = b * dim; k < (b + 1) * dim; k++) x1[k] = x0[k] + t1[b] * z[k];
    }
    cd_teacher_step(c, &t->net, &t->teacher_pre, t->teacher, cfg->cd.solver, x1, t1, t0, B, t->C, t->H, t->W, xt);
    WeightSet online = {t->w, t->g};
    CtBatch bt = {x0, z, t1, t0, lam, xt, B, t->C, t->H, t->W};
    double loss = ct_step_loss(c, &t->net, &t->pre, &online, t->target ? t->target : t->w, &bt, cfg->cd.loss,
                               cfg->model.dropout > 0 ? &rd : NULL);
    t->sched_N = N;
    t->sched_mu = cfg->cd.target_mu;
    return loss;
}

/* ---- method = classifier: the feature network of the Frechet distance (src/nn/classifier.h) ----
 * loss = mean_b cross_entropy(logits(x_b), label_b). */
static double classifier_loss(Trainer *t, const float *x0)
{
    Ctx *c = &t->ctx;
    int B = t->B;
    float *y = arena_alloc(&c->arena, (size_t)B * sizeof(float));
    for (int b = 0; b < B; b++) y[b] = (float)t->labels[b];
    WeightSet ws = {t->w, t->g};
    Tensor *tx = tensor_wrap(c, (float *)x0, NULL, 4, SHAPE(B, t->C, t->H, t->W), false);
    Tensor *ty = tensor_wrap(c, y, NULL, 1, SHAPE(B), false);
    Tensor *loss = op_mean(c, op_cross_entropy(c, classifier_forward(c, &t->clf, &ws, tx, NULL), ty));
    tape_backward(c, loss, NULL);
    return loss->data[0];
}

/* The target network (CT, CD) follows the online weights with rate mu(k) after each update. */
static void target_update(Trainer *t)
{
    if (t->target) ema_update(t->target, t->w, t->net.ps.total, (float)t->sched_mu);
}

static const Method METHODS[] = {
    {CFG_METHOD_EDM, edm_loss, NULL},
    {CFG_METHOD_CT, ct_loss, target_update},
    {CFG_METHOD_CD, cd_loss, target_update},
    {CFG_METHOD_CLASSIFIER, classifier_loss, NULL},
};

static const Method *method_find(CfgMethod id)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(METHODS); i++)
        if (METHODS[i].id == id) return &METHODS[i];
    return NULL;
}

/* ---- run directory ---- */

/* Writes text to path through path.tmp + rename, so a crash never leaves half a file. */
static int write_file_atomic(const char *path, const char *text)
{
    char tmp[700];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return cm_fail("cannot write %s: %s", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok &= fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return cm_fail("cannot write %s: %s", path, strerror(errno));
    }
    return 0;
}

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
    int rc = write_file_atomic(path, out);
    free(out);
    return rc;
}

/* ---- setup ---- */

static void ckpt_state_fill(Trainer *t, CkptState *s)
{
    memset(s, 0, sizeof *s);
    s->ps = t->ps;
    ckpt_add_weights(s, "online", t->w);
    if (t->target) ckpt_add_weights(s, "target", t->target);
    if (t->teacher) ckpt_add_weights(s, "teacher", t->teacher);
    ckpt_add_emas(s, &t->emas);
    s->opt = &t->opt;
    s->step = t->step;
    s->method = config_method_name(t->cfg.experiment.method);
    s->config = t->config_text;
    s->seed = (uint64_t)t->cfg.experiment.seed;
    LoaderCursor cur = loader_get_cursor(&t->loader);
    s->data_epoch = cur.epoch;
    s->data_index = cur.index;
    s->world_size = 1;
    s->sched_N = t->sched_N;
    s->sched_mu = t->sched_mu;
}

static int trainer_checkpoint(Trainer *t)
{
    /* ckpt_save makes its directory when missing, which would quietly rebuild a run directory
     * that was removed (or unmounted) under the run, while metrics.jsonl went with it. */
    struct stat st;
    if (stat(t->metrics_path, &st) != 0)
        return cm_fail("%s: the run directory is gone (%s: %s); stopping without a checkpoint", t->run_dir,
                       t->metrics_path, strerror(errno));
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
    t->sched_N = s.sched_N;
    t->sched_mu = s.sched_mu;
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

/* The classifier's counterpart of a sample grid: its accuracy on the test split, printed and
 * logged to metrics.jsonl. */
static int trainer_test_accuracy(Trainer *t, FILE *metrics)
{
    const char *wname;
    double acc;
    if (eval_accuracy(&t->clf, sampling_weights(t, &wname), &t->test, &t->ctx, &acc)) return -1;
    printf("test accuracy %.4f (%d images of %s, %s weights)\n", acc, t->test.n, t->test.source, wname);
    fprintf(metrics, "{\"step\": %ld, \"test_accuracy\": %.6g}\n", t->step, acc);
    fflush(metrics);
    return 0;
}

static int trainer_sample_grid(Trainer *t, FILE *metrics)
{
    const Config *cfg = &t->cfg;
    if (cfg->experiment.method == CFG_METHOD_CLASSIFIER) return trainer_test_accuracy(t, metrics);
    SolverOpts o = model_solver_opts(cfg);
    const char *wname;
    Sampler s = {&t->net, t->pre, sampling_weights(t, &wname), 64, t->C, t->H, t->W, &t->ctx};
    int n = CM_MIN(cfg->sample.n, 64);
    float *x = cm_malloc((size_t)n * t->C * t->H * t->W * sizeof(float));
    char path[700];
    int rc = 0;
    if (t->pre.kind == PRECOND_EDM) {
        SolverStats st;
        rc = sample_ode(&s, cfg->sample.solver, &o, n, (uint64_t)cfg->experiment.seed, x, &st);
        snprintf(path, sizeof path, "%s/step_%08ld.png", t->samples_dir, t->step);
        if (rc == 0) rc = image_write_grid(path, x, n, t->C, t->H, t->W, 8, 2);
        if (rc == 0) printf("samples: %s (%s, %s weights, %d NFE)\n", path, solver_kind_name(cfg->sample.solver), wname, st.nfe);
    } else {
        /* Consistency models: a 1-step and a 2-step grid (T, then sample.mid_t) on the same noise. */
        double times[2] = {cfg->model.sigma_max, cfg->sample.mid_t};
        for (int steps = 1; steps <= 2 && rc == 0; steps++) {
            rc = sample_cm(&s, times, steps, n, (uint64_t)cfg->experiment.seed, x);
            snprintf(path, sizeof path, "%s/step_%08ld_%dstep.png", t->samples_dir, t->step, steps);
            if (rc == 0) rc = image_write_grid(path, x, n, t->C, t->H, t->W, 8, 2);
            if (rc == 0) printf("samples: %s (%d-step, %s weights)\n", path, steps, wname);
        }
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

/* The first [model] key in which two U-Net configurations differ (dropout aside: it has no
 * weights), or NULL. The Fourier frequencies are drawn from experiment.seed. */
static const char *unet_arch_difference(const UNetConfig *a, const UNetConfig *b)
{
    if (a->img_channels != b->img_channels || a->img_h != b->img_h || a->img_w != b->img_w)
        return "the image shape (data.dataset, data.pad_to)";
    if (a->base_channels != b->base_channels) return "model.channels";
    if (a->channel_mult_count != b->channel_mult_count ||
        memcmp(a->channel_mult, b->channel_mult, sizeof(int) * (size_t)a->channel_mult_count))
        return "model.channel_mult";
    if (a->num_blocks != b->num_blocks) return "model.num_blocks";
    if (a->attn_resolutions_count != b->attn_resolutions_count ||
        memcmp(a->attn_resolutions, b->attn_resolutions, sizeof(int) * (size_t)a->attn_resolutions_count))
        return "model.attn_resolutions";
    if (a->mid_attn != b->mid_attn) return "model.mid_attn";
    if (a->attn_heads != b->attn_heads) return "model.attn_heads";
    if (a->emb_type != b->emb_type) return "model.emb_type";
    if (a->skip_scale != b->skip_scale) return "model.skip_scale";
    if (a->two_times != b->two_times) return "the number of time inputs";
    if (a->emb_type == UNET_EMB_FOURIER && a->fourier_scale != b->fourier_scale) return "model.fourier_scale";
    if (a->emb_type == UNET_EMB_FOURIER && a->seed != b->seed)
        return "experiment.seed (it draws the Fourier frequencies)";
    return NULL;
}

/* CD: loads the EDM teacher (cd.teacher, cd.teacher_weights), checks that it has the student's
 * architecture, and starts the student from its weights (the target and EMAs follow in setup). */
static int cd_setup(Trainer *t)
{
    const CfgCd *cd = &t->cfg.cd;
    if (!cd->teacher[0])
        return cm_fail("method = cd needs cd.teacher: the EDM teacher checkpoint to distil (train one with "
                       "method = edm, e.g. experiments/edm_fashion_mnist.ini)");
    Model m;
    Config tcfg;
    if (model_load(&m, &tcfg, cd->teacher, cd->teacher_weights[0] ? cd->teacher_weights : NULL) != 0) {
        model_free(&m);
        return cm_fail("cd.teacher: %s", cm_errmsg());
    }
    int rc = 0;
    const char *diff = unet_arch_difference(&t->net.cfg, &m.net.cfg);
    if (tcfg.experiment.method != CFG_METHOD_EDM)
        rc = cm_fail("cd.teacher = %s: a method = %s checkpoint; CD distils an EDM teacher (method = edm)",
                     cd->teacher, config_method_name(tcfg.experiment.method));
    else if (diff)
        rc = cm_fail("cd.teacher = %s: its network differs from this experiment's in %s; the student starts "
                     "from the teacher's weights, so copy the teacher's [model] section (cmlab info shows its config)",
                     cd->teacher, diff);
    if (rc == 0) {
        t->teacher = params_buffer(&t->net.ps);
        memcpy(t->teacher, m.w, t->net.ps.total * sizeof(float));
        memcpy(t->w, m.w, t->net.ps.total * sizeof(float));
        t->teacher_pre = m.pre;
        printf("cd: teacher %s (%s weights)\n", cd->teacher, m.weights_name);
    }
    model_free(&m);
    return rc;
}

static int trainer_setup(Trainer *t, const Config *cfg, bool resume)
{
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->method = method_find(cfg->experiment.method);
    if (!t->method)
        return cm_fail("experiment.method = %s: not implemented yet (this build trains: edm, ct, cd, classifier)",
                       config_method_name(cfg->experiment.method));
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

    /* The data and the network are checked before anything is created: a configuration that
     * cannot run leaves no run directory behind. */
    const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
    if (dataset_load(&t->data, kind, cfg->data.path[0] ? cfg->data.path : NULL, "train") != 0) return -1;
    t->B = cfg->train.batch_size;
    t->C = t->data.c;
    t->H = cfg->data.pad_to ? cfg->data.pad_to : t->data.h;
    t->W = cfg->data.pad_to ? cfg->data.pad_to : t->data.w;
    const char *source = cfg->source[0] ? cfg->source : "the configuration";
    if (loader_init(&t->loader, &t->data, &(LoaderConfig){.batch = t->B, .pad_to = cfg->data.pad_to,
                    .hflip = cfg->data.hflip, .seed = (uint64_t)cfg->experiment.seed, .rank = 0, .world = 1,
                    .prefetch = true}) != 0)
        return cm_fail("%s: %s", source, cm_errmsg());
    if (cfg->experiment.method != CFG_METHOD_CLASSIFIER && model_check(cfg, t->C, t->H, t->W, t->data.source) != 0)
        return cm_fail("%s: %s", source, cm_errmsg());

    if (cm_mkdir_p(t->ckpt_dir) || cm_mkdir_p(t->samples_dir)) return -1;
    char path[700];
    snprintf(path, sizeof path, "%s/config.ini", t->run_dir);
    if (write_file_atomic(path, t->config_text)) return -1;
    t->batch = cm_malloc((size_t)t->B * t->C * t->H * t->W * sizeof(float));
    t->labels = cm_malloc((size_t)t->B * sizeof(int));

    if (cfg->experiment.method == CFG_METHOD_CLASSIFIER) {
        if (model_classifier_init(cfg, &t->data, t->C, t->H, t->W, &t->clf) != 0) return -1;
        if (dataset_load(&t->test, kind, cfg->data.path[0] ? cfg->data.path : NULL, "test") != 0) return -1;
        t->ps = &t->clf.ps;
    } else {
        UNetConfig ucfg;
        model_unet_config(cfg, t->C, t->H, t->W, &ucfg);
        if (unet_init(&t->net, &ucfg) != 0) return cm_fail("[model]: %s", cm_errmsg());
        t->ps = &t->net.ps;
    }
    t->pre = model_precond(cfg);
    t->w = params_buffer(t->ps);
    t->g = params_buffer(t->ps);
    params_randomize(t->ps, t->w, (uint64_t)cfg->experiment.seed);
    if (cfg->experiment.method == CFG_METHOD_CD && cd_setup(t) != 0) return -1;
    if ((cfg->experiment.method == CFG_METHOD_CT && cfg->ct.target_mu > 0) ||
        (cfg->experiment.method == CFG_METHOD_CD && cfg->cd.target_mu > 0)) {
        t->target = params_buffer(&t->net.ps);
        memcpy(t->target, t->w, t->net.ps.total * sizeof(float));
    }
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
    free(t->target);
    free(t->teacher);
    free(t->batch);
    free(t->labels);
    unet_free(&t->net);
    classifier_free(&t->clf);
    dataset_free(&t->test);
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
    bool clf = t.ps == &t.clf.ps;
    printf("run %s: method %s, %zu parameters, batch %d, %dx%dx%d, %d threads\n", t.run_dir,
           config_method_name(cfg->experiment.method), clf ? classifier_param_count(&t.clf) : unet_param_count(&t.net),
           t.B, t.C, t.H, t.W, cm_threads());
    if (clf) classifier_print_table(&t.clf, stdout);
    else unet_print_table(&t.net, stdout);
    int r = resume ? trainer_resume(&t) : 1;
    if (r < 0) {
        fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    if (resume && r == 1 && has_checkpoints(t.ckpt_dir)) {
        /* Checkpoints exist and none is valid (the reasons were printed): starting over would
         * silently throw away the run and write its metrics a second time. */
        fprintf(stderr, "cmlab train: %s. Not starting over: restore a checkpoint, or move the step_*.h5 "
                        "files out of %s to train from step 0\n", cm_errmsg(), t.ckpt_dir);
        trainer_free(&t);
        return CM_EXIT_INPUT;
    }
    if (resume && r == 1) {
        printf("resume: %s; starting from step 0\n", cm_errmsg());
        /* metrics.jsonl may hold lines of a run whose checkpoints were moved away. */
        if (metrics_truncate(t.metrics_path, 0) != 0) {
            fprintf(stderr, "cmlab train: %s\n", cm_errmsg());
            trainer_free(&t);
            return CM_EXIT_INPUT;
        }
    }
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
    int rc = CM_EXIT_OK;
    size_t n = t.ps->total;
    while (t.step < tr->iterations && !trainer_stop_requested) {
        loader_next(&t.loader, t.batch, t.labels);
        if (t.step == skip_step) {          /* rollback: the batch that gave a NaN is skipped */
            t.step++;
            continue;
        }
        ctx_reset(&t.ctx);
        memset(t.g, 0, n * sizeof(float));
        double loss = t.method->loss(&t, t.batch);
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
            continue;
        }
        t.opt.lr = optim_warmup_lr((float)tr->lr, t.opt.step, tr->warmup);
        adam_step(&t.opt, t.w, t.g);
        ema_set_update(&t.emas, t.w, (double)t.step * t.B, t.B);
        if (t.method->after_update) t.method->after_update(&t);
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
    fclose(metrics);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    trainer_free(&t);
    return rc;
}
