/* method = amed: the AMED predictor distilled from an EDM teacher's ODE trajectories
 * (reference/amed.md §4; diff-sampler amed-solver-main/training/{loss.py,training_loop.py}).
 *
 * Per batch of B latents z (STREAM_NOISE at the batch's samples), x_0 = sigma_max z:
 *   the teacher: amed.teacher_solver over the schedule of K = (M+1)(N-1)+1 points (same type and
 *     sigma range as the student's N points, so teacher point (M+1)k is student time k), no AFS,
 *     no gradient; targets y_k = teacher point (M+1)k, k = 1..N-1.
 *   the student, step k = 0..N-2 (sample/amed.h, amed.student): x_hat = step(x_k), with the AFS
 *     first step when amed.afs; loss = sum over pixels of (x_hat - y_{k+1})^2, divided by B; its
 *     gradient through the one U-Net evaluation at (x_s, a s) into r, c, a and the predictor's
 *     weights (the teacher's weights frozen); one Adam step.
 *   the next step starts from the teacher's point y_{k+1} for the single-step students (amed,
 *     euler, dpm2) and from the student's own detached x_hat for ipndm and dpmpp (their history
 *     too).
 * So one batch is N-1 optimiser steps: the method's substeps (method.h). A training step is a
 * batch, and train.iterations counts batches of latents: the reference's 10k latents at batch 128
 * are 79 iterations (237 Adam steps for N = 4). The trajectory lives in the method's state between
 * substeps and is rebuilt from the batch at substep 0, so no checkpoint ever needs it.
 *
 * The reference turns NaN gradients into 0 and infinities into 1e5; here an update with a
 * non-finite loss or gradient is skipped and counted, and the run stops past amed.nonfinite_limit
 * (method.h nonfinite_limit).
 *
 * The predictor's input is the channel mean of the U-Net's middle-block output (ADM's
 * middle_block hook, which the reference uses for its CM and ADM models); EDM's SongUNet code
 * hooks enc['8x8_block3'], the last encoder block before it. cmlab's U-Net has no block by that
 * name at every size, while the middle block is always the bottleneck (8x8 for 32x32 images and 3
 * levels). The checkpoint is the predictor: its online weights are the MLP's, its configuration
 * holds every sampler setting ([amed]), and its root attributes amed_teacher_sha256 and
 * amed_teacher_weights name the teacher weight set it was trained on (amed_predictor_load). The
 * hash covers the teacher's weights, not the file's bytes: `cmlab eval` stamps records into a
 * checkpoint, which changes the file but not the network. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gemm_bf16.h"
#include "data/image.h"
#include "io/sha256.h"
#include "train/amed_predictor.h"
#include "train/method.h"
#include "train/model.h"

typedef struct Amed {
    const Config *cfg;
    Model teacher;
    AmedTeacher T;
    AmedSettings s;
    AmedMLP mlp;
    char hash[65];
    int K;                       /* teacher time points */
    double *t;                   /* the student's N time points */
    /* The current batch's trajectory (sized for B samples). */
    int B;
    size_t dim;
    float *traj;                 /* [K-1][B*dim]: the teacher after each of its steps */
    float *x;                    /* [B*dim]: where the next student step starts */
    AmedTraj tr;
    Ctx scratch;                 /* the teacher's no-grad passes */
} Amed;

void amed_teacher_hash(const Model *m, char hex[65])
{
    Sha256 h;
    sha256_init(&h);
    sha256_update(&h, m->w, m->net.ps.total * sizeof(float));
    sha256_final(&h, hex);
}

int amed_settings_from_config(const Config *cfg, const Config *tcfg, AmedSettings *s)
{
    const CfgAmed *a = &cfg->amed;
    *s = (AmedSettings){.plugin = (AmedPlugin)a->student, .schedule = a->schedule, .rho = a->rho,
                        .sigma_min = tcfg->model.sigma_min, .sigma_max = tcfg->model.sigma_max, .N = a->N,
                        .afs = a->afs, .max_order = a->max_order};
    double t[2];
    return schedule_steps(s->schedule, 2, s->sigma_min, s->sigma_max, s->rho, t);
}

MlpConfig amed_mlp_config(const Config *cfg, int in_dim)
{
    MlpConfig mc = mlp_config_default();
    mc.in_dim = in_dim;
    mc.scale_dir = (float)cfg->amed.scale_dir;
    mc.scale_time = (float)cfg->amed.scale_time;
    return mc;
}

static int amed_setup(void *st, const MethodEnv *env, const ParamSet **ps)
{
    Amed *m = st;
    const Config *cfg = env->cfg;
    const CfgAmed *a = &cfg->amed;
    m->cfg = cfg;
    ctx_init(&m->scratch, 16u << 20);
    m->scratch.precision = gemm_precision_usable(cfg->model.precision);   /* the teacher's trajectories */
    if (!a->teacher[0])
        return cm_fail("method = amed needs amed.teacher: the EDM teacher checkpoint whose trajectories the "
                       "predictor learns (e.g. a run of experiments/edm_fashion_mnist_32.ini)");
    Config tcfg;
    if (model_load(&m->teacher, &tcfg, a->teacher, a->teacher_weights[0] ? a->teacher_weights : NULL) != 0)
        return cm_fail("amed.teacher: %s", cm_errmsg());
    if (tcfg.experiment.method != CFG_METHOD_EDM)
        return cm_fail("amed.teacher = %s: a method = %s checkpoint; AMED distils an EDM denoiser (method = edm)",
                       a->teacher, config_method_name(tcfg.experiment.method));
    const Model *tm = &m->teacher;
    if (tm->C != env->C || tm->H != env->H || tm->W != env->W)
        return cm_fail("amed.teacher = %s: its images are %dx%dx%d, this experiment's %dx%dx%d; copy the teacher's "
                       "[data] keys (data.dataset, data.pad_to)", a->teacher, tm->C, tm->H, tm->W, env->C, env->H,
                       env->W);
    m->T = (AmedTeacher){&tm->net, tm->pre, tm->w};
    if (amed_settings_from_config(cfg, &tcfg, &m->s) != 0) return cm_fail("[amed]: %s", cm_errmsg());
    if (m->s.plugin == AMED_PLUGIN_IPNDM && a->afs && a->N < 2)
        return cm_fail("amed.N = %d: too few points", a->N);
    m->K = (a->M + 1) * (a->N - 1) + 1;
    SolverOpts o = solver_opts_default();
    o.steps = m->K;
    if (solver_resolve_steps(a->teacher_solver, &o) < 0) return cm_fail("amed.teacher_solver: %s", cm_errmsg());
    m->t = cm_malloc((size_t)a->N * sizeof(double));
    schedule_steps(m->s.schedule, a->N, m->s.sigma_min, m->s.sigma_max, m->s.rho, m->t);
    MlpConfig mc = amed_mlp_config(cfg, amed_feature_dim(&m->T, env->H, env->W));
    if (mlp_init(&m->mlp, &mc) != 0) return cm_fail("[amed]: %s", cm_errmsg());
    amed_teacher_hash(tm, m->hash);
    m->dim = (size_t)env->C * env->H * env->W;
    *ps = &m->mlp.ps;
    printf("amed: teacher %s (%s weights, sha256 %.16s...), student %s, N %d (%d NFE), teacher %s with %d points\n",
           a->teacher, tm->weights_name, m->hash, amed_plugin_names[m->s.plugin], a->N, amed_nfe(&m->s),
           solver_kind_name(a->teacher_solver), m->K);
    return 0;
}

/* The reference's initialisation (mlp.h), in place of the loop's generic one. */
static void amed_start(void *st, float *w)
{
    Amed *m = st;
    mlp_randomize(&m->mlp, w, (uint64_t)m->cfg->experiment.seed);
}

/* The teacher's solver options: the student's schedule type and range on K points, no AFS, no
 * step to 0. */
static SolverOpts teacher_opts(const Amed *m)
{
    SolverOpts o = solver_opts_default();
    o.schedule = m->s.schedule;
    o.rho = m->s.rho;
    o.sigma_min = m->s.sigma_min;
    o.sigma_max = m->s.sigma_max;
    o.steps = m->K;
    o.ipndm_order = m->cfg->amed.max_order;
    return o;
}

/* The teacher's state at its time point i >= 1, after step i - 1, into the batch's trajectory
 * (a SolverStepFn; the teacher takes no step to 0). */
static void keep_teacher_point(void *user, int i, double sigma, const double *x, int N, size_t dim)
{
    Amed *m = user;
    if (i < 1 || sigma == 0) return;
    float *dst = m->traj + (size_t)(i - 1) * N * dim;
    for (size_t e = 0; e < (size_t)N * dim; e++) dst[e] = (float)x[e];
}

/* Substep 0: the batch's latents, x_0 = sigma_max z, and the teacher's trajectory from it. */
static void amed_batch_begin(Amed *m, const Batch *b)
{
    const CfgAmed *a = &m->cfg->amed;
    if (b->B != m->B) {
        free(m->traj);
        free(m->x);
        amed_traj_free(&m->tr);
        m->B = b->B;
        m->traj = cm_malloc((size_t)(m->K - 1) * b->B * m->dim * sizeof(float));
        m->x = cm_malloc((size_t)b->B * m->dim * sizeof(float));
        amed_traj_init(&m->tr, b->B, b->C, b->H, b->W);
    }
    size_t n_el = (size_t)b->B * m->dim;
    rng_normal(&b->noise, m->x, b->B, b->sample0, m->dim);
    double *x = cm_malloc(n_el * sizeof(double));
    for (size_t e = 0; e < n_el; e++) {
        m->x[e] = (float)(m->s.sigma_max * m->x[e]);
        x[e] = m->x[e];
    }
    SolverOpts o = teacher_opts(m);
    o.on_step = keep_teacher_point;
    o.on_step_user = m;
    Sampler ts = {&m->teacher.net, m->teacher.pre, m->teacher.w, 64, b->C, b->H, b->W, &m->scratch};
    CM_ASSERT(solver_sample(a->teacher_solver, &o, sample_denoise, &ts, x, b->B, m->dim, NULL) == 0,
              "amed: teacher: %s", cm_errmsg());
    free(x);
    amed_traj_reset(&m->tr);
}

static double amed_loss(void *st, Ctx *c, const WeightSet *online, const Batch *b)
{
    Amed *m = st;
    int k = b->substep, B = b->B;
    if (k == 0) amed_batch_begin(m, b);
    const int *shape = SHAPE(B, b->C, b->H, b->W);
    const float *y = m->traj + (size_t)((m->cfg->amed.M + 1) * (k + 1) - 1) * B * m->dim;
    Tensor *x = tensor_wrap(c, m->x, NULL, 4, shape, false);
    Tensor *xh = amed_step(c, &m->T, &m->s, &m->mlp, online, &m->tr, x, m->t, k);
    /* sum over pixels / B: op_mse is the per-sample mean over C H W values */
    Tensor *loss = op_scale(c, op_mean(c, op_mse(c, xh, tensor_wrap(c, (float *)y, NULL, 4, shape, false))), (float)m->dim, 0);
    tape_backward(c, loss, NULL);
    memcpy(m->x, amed_plugin_multistep(m->s.plugin) ? xh->data : y, (size_t)B * m->dim * sizeof(float));
    return loss->data[0];
}

static int amed_substeps(const void *st) { return ((const Amed *)st)->cfg->amed.N - 1; }
static long amed_nonfinite_limit(const void *st) { return ((const Amed *)st)->cfg->amed.nonfinite_limit; }

/* The teacher's identity (the module header). */
static void amed_ckpt_save(void *st, CkptState *s)
{
    Amed *m = st;
    s->attr_names[s->nattrs] = "amed_teacher_sha256";
    s->attr_values[s->nattrs++] = m->hash;
    s->attr_names[s->nattrs] = "amed_teacher_weights";
    s->attr_values[s->nattrs++] = m->teacher.weights_name;
}

/* The predictor's samples from min(sample.n, 64) latents of the run's seed, as a grid
 * samples_dir/step_XXXXXXXX.png (8 per row; `cmlab sample TEACHER --predictor P --seed SEED`
 * draws the same images), and against the teacher's (amed.teacher_solver on its K points) from the
 * same latents, as the mean over samples of the squared L2 distance of the final points; logged as
 * "teacher_l2". */
static int amed_report(void *st, const float *w, const char *wname, Ctx *c, FILE *metrics, long step,
                       const char *samples_dir)
{
    Amed *m = st;
    const Config *cfg = m->cfg;
    int n = CM_MIN(cfg->sample.n, 64), C = m->teacher.C, H = m->teacher.H, W = m->teacher.W;
    size_t dim = m->dim;
    AmedPredictor p = {.s = m->s, .mlp = m->mlp, .w = (float *)w};
    float *xs = cm_malloc(2 * (size_t)n * dim * sizeof(float)), *xt = xs + (size_t)n * dim;
    uint64_t seed = (uint64_t)cfg->experiment.seed;
    int nfe;
    amed_sample(&m->T, &p, C, H, W, 64, c, n, seed, xs, &nfe);
    char path[700];
    snprintf(path, sizeof path, "%s/step_%08ld.png", samples_dir, step);
    int rc = image_write_grid(path, xs, n, C, H, W, 8, 2);
    if (rc == 0) printf("samples: %s (%s predictor, %s weights, %d NFE)\n", path, amed_plugin_names[m->s.plugin], wname, nfe);
    SolverOpts o = teacher_opts(m);
    Sampler ts = model_sampler(&m->teacher, c);
    if (rc == 0) rc = sample_ode(&ts, cfg->amed.teacher_solver, &o, n, seed, xt, NULL);
    if (rc == 0) {
        double sum = 0;
        for (size_t e = 0; e < (size_t)n * dim; e++) sum += (double)(xs[e] - xt[e]) * (xs[e] - xt[e]);
        printf("amed: %d samples at %d NFE (%s weights): squared L2 to the teacher's %.4g per sample\n", n, nfe,
               wname, sum / n);
        fprintf(metrics, "{\"step\": %ld, \"teacher_l2\": %.6g}\n", step, sum / n);
        fflush(metrics);
    }
    free(xs);
    return rc;
}

int amed_predictor_load(AmedPredictor *p, const char *path, const Model *tm, const Config *tcfg,
                        const char *teacher_path)
{
    memset(p, 0, sizeof *p);
    Config pc;
    if (model_read_config(path, &pc) != 0) return -1;
    if (pc.experiment.method != CFG_METHOD_AMED)
        return cm_fail("%s: a method = %s checkpoint, not an AMED predictor (train one with method = amed)", path,
                       config_method_name(pc.experiment.method));
    char *want = ckpt_read_attr(path, "amed_teacher_sha256"), *wname = ckpt_read_attr(path, "amed_teacher_weights");
    char have[65];
    amed_teacher_hash(tm, have);
    int rc = 0;
    if (!want || !wname)
        rc = -1;
    else if (strcmp(want, have) != 0)
        rc = cm_fail("the predictor %s was trained on the teacher %s (%s weights, sha256 %.16s...), but %s (%s "
                     "weights, sha256 %.16s...) is another network; give the teacher the predictor was trained on",
                     path, pc.amed.teacher, wname, want, teacher_path, tm->weights_name, have);
    free(want);
    free(wname);
    if (rc != 0) return -1;
    if (amed_settings_from_config(&pc, tcfg, &p->s) != 0) return cm_fail("%s: [amed]: %s", path, cm_errmsg());
    AmedTeacher T = {&tm->net, tm->pre, tm->w};
    MlpConfig mc = amed_mlp_config(&pc, amed_feature_dim(&T, tm->H, tm->W));
    if (mlp_init(&p->mlp, &mc) != 0) return cm_fail("%s: %s", path, cm_errmsg());
    p->w = params_buffer(&p->mlp.ps);
    CkptState s = {.ps = &p->mlp.ps};
    ckpt_add_weights(&s, "online", p->w);
    rc = ckpt_load(path, &s);
    free(s.loaded_config);
    return rc;
}

void amed_predictor_free(AmedPredictor *p)
{
    free(p->w);
    mlp_free(&p->mlp);
    memset(p, 0, sizeof *p);
}

static size_t amed_param_count(const void *st) { return mlp_param_count(&((const Amed *)st)->mlp); }

static void amed_print_table(const void *st, FILE *f)
{
    const Amed *m = st;
    const ParamSet *ps = &m->mlp.ps;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        fprintf(f, "  %-22s %8zu\n", p->name, p->n);
    }
}

static void amed_free(void *st)
{
    Amed *m = st;
    free(m->t);
    free(m->traj);
    free(m->x);
    amed_traj_free(&m->tr);
    mlp_free(&m->mlp);
    model_free(&m->teacher);
    ctx_free(&m->scratch);
}

const Method method_amed = {
    .id = CFG_METHOD_AMED,
    .name = "amed",
    .section = "amed",
    .precond = PRECOND_EDM,
    .model = MODEL_FEATURE_NET,
    .state_size = sizeof(Amed),
    .setup = amed_setup,
    .start = amed_start,
    .loss = amed_loss,
    .ckpt_save = amed_ckpt_save,
    .report = amed_report,
    .substeps = amed_substeps,
    .nonfinite_limit = amed_nonfinite_limit,
    .param_count = amed_param_count,
    .print_table = amed_print_table,
    .free = amed_free,
};
