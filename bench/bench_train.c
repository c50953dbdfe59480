/* bench_train.c: cmlab's side of the benchmark (bench/bench.py runs it interleaved with its
 * PyTorch twin bench/bench_train.py and prints the table).
 *
 *   train         one Consistency Training step as the trainer runs it (src/train/trainer.c,
 *                 method ct): zero the gradients, ct_step_loss (online forward + backward, target
 *                 forward under no-grad, l2 loss), the gradient norm, Adam, the evaluation EMA
 *                 (0.999) and the target EMA (mu = 0.9);
 *   sample        one-step consistency sampling, sample_cm at T = sigma_max with the batch as one
 *                 network call;
 *   heun          EDM's teacher sampler: EDM preconditioning, Heun on the 18-point Karras grid
 *                 (rho 7) with the final step to 0, 35 NFE (sample_ode, the batch in one call);
 *   bcm-train     one BCM training step (method bcm, src/train/bcm.c): a two-time U-Net,
 *                 bcm_step_loss's four network calls (target A without gradient, f(x_t, t),
 *                 x_u = f(x_t, t, u), f_target(x_u, u) with the online weights frozen), pseudo-Huber
 *                 c of iCT's rule, the gradient norm, Adam, the evaluation EMA (0.99, the recipe's);
 *   bcm-sample    BCM 2-step sampling: jumps T -> t1 -> eps with f(x, t, u) (sample_draw with
 *                 sample.bcm_jumps, times 80 and 0.821 as experiments/bcm_fashion_mnist.ini);
 *   amed-teacher  AMED's teacher trajectories (train/methods/amed.c, the recipe
 *                 experiments/amed_solver_fashion_mnist.ini): EDM preconditioning, Heun over the
 *                 time-uniform schedule (rho 1) of K = 7 points, 12 NFE, every point kept in float,
 *                 network batches of 64 as amed.c runs it;
 *   amed-train    AMED's predictor training for one batch of latents: N - 1 = 3 substeps (the AFS
 *                 step, then two from the teacher's points), each amed_step (teacher bottleneck
 *                 pass, the MLP, the U-Net pass at (x_s, a s) with gradient through the frozen
 *                 teacher), loss, backward and an Adam step of the MLP; the teacher trajectory is
 *                 computed once before timing.
 * img/s counts the images (trajectories, latents) of the batch per second of one iteration.
 * Configurations (bench_train.py's CONFIGS holds the same table for the twin; the BCM modes turn
 * on two_times):
 *   S  1x28x28, base 32, multipliers 1,2,2, 1 block per level, no attention
 *   M  3x32x32, base 64, multipliers 1,2,2, 2 blocks per level, attention at 16x16 (none in the
 *      middle block)
 *
 * Usage: bench_train S|M MODE [--batch B] [--threads T[,T2...]] [--iters N] [--warmup W]
 *                    [--precision fp32|bf16]
 * --precision bf16 runs the network's products in bf16 (the context's precision, gemm_bf16.h), as
 * model.precision = bf16 trains and --precision bf16 samples; a CPU without AVX512_BF16 exits 2
 * rather than time fp32 under a bf16 label.
 * With several thread counts the timed iterations alternate between them (T, T2, T, T2, ...), so
 * a drift of the machine's speed affects each count alike; bench.py compares 2 and 1 threads so.
 * Prints one line per thread count of key=value fields: side, config, mode, precision, threads,
 * batch, ms (median of the timed iterations), ms_min, img_s (from the median), gflop (model FLOPs
 * of one iteration: the GEMM-shaped ops, counted by the ops themselves, Ctx.flops), rss_mb (peak
 * resident set of this process), arena_mb (the step arena's high-water mark), core (OpenBLAS's
 * kernels), cpu_ms (median process CPU time of the timed iterations, user + system of all
 * threads: the measure to compare 1-thread runs by on a loaded machine, where wall time counts
 * the time other jobs hold the core).
 * With several thread counts rss_mb and arena_mb are the process's, shared by all of them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "autograd/gemm_bf16.h"
#include "nn/mlp.h"
#include "nn/optim.h"
#include "nn/unet.h"
#include "sample/amed.h"
#include "sample/sample.h"
#include "train/bcm.h"
#include "train/ct.h"
#include "train/ct_schedule.h"

#define SIGMA_MIN 0.002
#define SIGMA_MAX 80.0
#define SIGMA_DATA 0.5
#define BCM_MID_T 0.821          /* experiments/bcm_fashion_mnist.ini, sample.mid_t */
#define BCM_EMA 0.99f            /* the same recipe's train.ema */
#define AMED_N 4                 /* experiments/amed_solver_fashion_mnist.ini: N, M, batch, lr */
#define AMED_M 1
#define AMED_BATCH 128
#define AMED_LR 5e-3f
#define AMED_TEACHER_BATCH 64    /* the network batch of amed.c's teacher Sampler */

typedef enum Mode { MODE_TRAIN, MODE_SAMPLE, MODE_HEUN, MODE_BCM_TRAIN, MODE_BCM_SAMPLE, MODE_AMED_TEACHER,
                    MODE_AMED_TRAIN, MODE_COUNT } Mode;

static const char *const mode_names[MODE_COUNT] = {"train", "sample", "heun", "bcm-train", "bcm-sample",
                                                   "amed-teacher", "amed-train"};
/* The batch of each mode unless --batch says otherwise: the sampling modes take the network batch
 * `cmlab sample` and `cmlab eval` run (model_sampler: 64). */
static const int mode_batch[MODE_COUNT] = {64, 64, 256, 64, 64, AMED_BATCH, AMED_BATCH};

static UNetConfig bench_config(const char *name)
{
    UNetConfig g = unet_config_default();
    g.mid_attn = false;
    if (strcmp(name, "S") == 0) {
        g.num_blocks = 1;
    } else if (strcmp(name, "M") == 0) {
        g.img_channels = 3;
        g.img_h = g.img_w = 32;
        g.base_channels = 64;
        g.num_blocks = 2;
        g.attn_resolutions[0] = 16;
        g.attn_resolutions_count = 1;
    } else {
        fprintf(stderr, "bench_train: unknown configuration '%s' (S or M)\n", name);
        exit(CM_EXIT_INPUT);
    }
    return g;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct Bench {
    Mode mode;
    UNet net;
    PrecondParams pre;
    Ctx ctx;
    int B, C, H, W;
    size_t dim, n;
    float *w, *g, *target;
    Adam opt;
    EmaSet emas;
    float *x0, *z, *t1, *t0, *lam, *u, *out;
    /* AMED: the predictor, its weights, gradients and optimiser; the schedules and the teacher's
     * points after each of its K - 1 steps, [K-1][B*dim] */
    AmedMLP mlp;
    AmedSettings amed;
    float *mw, *mg;
    Adam mopt;
    double t_student[AMED_N];
    float *traj;
    AmedTraj tr;
} Bench;

/* One CT step, as trainer.c's loop body (loss through ct_step_loss, then the updates). */
static void train_step(Bench *b)
{
    ctx_reset(&b->ctx);
    memset(b->g, 0, b->n * sizeof(float));
    WeightSet online = {b->w, b->g};
    CtBatch bt = {.x0 = b->x0, .z = b->z, .t1 = b->t1, .t0 = b->t0, .lam = b->lam,
                  .B = b->B, .C = b->C, .H = b->H, .W = b->W};
    ct_step_loss(&b->ctx, &b->net, &b->pre, &online, b->target, &bt, CFG_LOSS_L2, NULL);
    grad_clip(b->g, b->n, 0);
    adam_step(&b->opt, b->w, b->g);
    ema_set_update(&b->emas, b->w, 0, b->B);
    ema_update(b->target, b->w, b->n, 0.9f);
}

/* One BCM step, as trainer.c's loop body around method bcm's loss (no target EMA: the target is
 * the online weights). */
static void bcm_train_step(Bench *b)
{
    ctx_reset(&b->ctx);
    memset(b->g, 0, b->n * sizeof(float));
    WeightSet online = {b->w, b->g};
    BcmBatch bt = {b->x0, b->z, b->t1, b->t0, b->u, b->B, b->C, b->H, b->W, 0};
    bcm_step_loss(&b->ctx, &b->net, &b->pre, &online, b->w, &bt, pseudo_huber_c((int)b->dim), NULL);
    grad_clip(b->g, b->n, 0);
    adam_step(&b->opt, b->w, b->g);
    ema_set_update(&b->emas, b->w, 0, b->B);
}

static Sampler bench_sampler(Bench *b, int batch)
{
    return (Sampler){.net = &b->net, .pre = b->pre, .weights = b->w, .batch = batch,
                     .C = b->C, .H = b->H, .W = b->W, .ctx = &b->ctx};
}

static void sample_step(Bench *b)
{
    Sampler s = bench_sampler(b, b->B);
    double T = SIGMA_MAX;
    CM_ASSERT(sample_cm(&s, &T, 1, b->B, 1, b->out) == 0, "sample_cm: %s", cm_errmsg());
}

/* EDM's sampler (cm.md §1.5): Heun, N = 18 Karras points, rho 7, the Euler step to 0. */
static void heun_step(Bench *b)
{
    Sampler s = bench_sampler(b, b->B);
    SolverOpts o = solver_opts_default();
    o.steps = 18;
    o.denoise_to_zero = true;
    SolverStats st;
    CM_ASSERT(sample_ode(&s, SOLVER_HEUN, &o, b->B, 1, b->out, &st) == 0 && st.nfe == 35, "heun: %s", cm_errmsg());
}

static void bcm_sample_step(Bench *b)
{
    Sampler s = bench_sampler(b, b->B);
    SamplePlan p;
    CM_ASSERT(sample_plan_times(&p, (const double[]){SIGMA_MAX, BCM_MID_T}, 2) == 0, "%s", cm_errmsg());
    p.jumps = true;
    CM_ASSERT(sample_draw(&s, &p, b->B, 1, b->out, NULL) == 0, "bcm sampling: %s", cm_errmsg());
}

/* The teacher's point i >= 1 into b->traj (a SolverStepFn, as amed.c's keep_teacher_point). */
static void keep_point(void *user, int i, double sigma, const double *x, int N, size_t dim)
{
    Bench *b = user;
    if (i < 1 || sigma == 0) return;
    float *dst = b->traj + (size_t)(i - 1) * N * dim;
    for (size_t e = 0; e < (size_t)N * dim; e++) dst[e] = (float)x[e];
}

/* AMED's teacher for the batch, as amed.c's amed_batch_begin: x_0 = sigma_max z in float, Heun
 * over K = (M+1)(N-1)+1 time-uniform points. */
static void amed_teacher_step(Bench *b)
{
    size_t n_el = (size_t)b->B * b->dim;
    double *x = cm_malloc(n_el * sizeof(double));
    for (size_t e = 0; e < n_el; e++) x[e] = (float)(SIGMA_MAX * b->z[e]);
    SolverOpts o = solver_opts_default();
    o.schedule = b->amed.schedule;
    o.rho = b->amed.rho;
    o.steps = (AMED_M + 1) * (AMED_N - 1) + 1;
    o.on_step = keep_point;
    o.on_step_user = b;
    Sampler ts = bench_sampler(b, AMED_TEACHER_BATCH);
    CM_ASSERT(solver_sample(SOLVER_HEUN, &o, sample_denoise, &ts, x, b->B, b->dim, NULL) == 0, "amed teacher: %s",
              cm_errmsg());
    free(x);
}

/* The N - 1 substeps of one batch, as amed.c's amed_loss and the trainer's Adam step on each. */
static void amed_train_step(Bench *b)
{
    AmedTeacher T = {&b->net, b->pre, b->w};
    WeightSet ws = {b->mw, b->mg};
    const int *shape = SHAPE(b->B, b->C, b->H, b->W);
    amed_traj_reset(&b->tr);
    for (int k = 0; k < AMED_N - 1; k++) {
        ctx_reset(&b->ctx);
        memset(b->mg, 0, b->mlp.ps.total * sizeof(float));
        float *start = k == 0 ? b->x0 : b->traj + (size_t)((AMED_M + 1) * k - 1) * b->B * b->dim;
        const float *y = b->traj + (size_t)((AMED_M + 1) * (k + 1) - 1) * b->B * b->dim;
        Tensor *x = tensor_wrap(&b->ctx, start, NULL, 4, shape, false);
        Tensor *xh = amed_step(&b->ctx, &T, &b->amed, &b->mlp, &ws, &b->tr, x, b->t_student, k);
        Tensor *loss = op_scale(&b->ctx, op_mean(&b->ctx, op_mse(&b->ctx, xh, tensor_wrap(&b->ctx, (float *)y, NULL, 4,
                                                                                       shape, false))),
                                (float)b->dim, 0);
        tape_backward(&b->ctx, loss, NULL);
        adam_step(&b->mopt, b->mw, b->mg);
    }
}

static void bench_step(Bench *b)
{
    switch (b->mode) {
    case MODE_TRAIN: train_step(b); break;
    case MODE_SAMPLE: sample_step(b); break;
    case MODE_HEUN: heun_step(b); break;
    case MODE_BCM_TRAIN: bcm_train_step(b); break;
    case MODE_BCM_SAMPLE: bcm_sample_step(b); break;
    case MODE_AMED_TEACHER: amed_teacher_step(b); break;
    case MODE_AMED_TRAIN: amed_train_step(b); break;
    case MODE_COUNT: CM_ASSERT(0, "bench_step: mode %d", (int)b->mode);
    }
}

/* AMED's predictor, schedules and (amed-train) the teacher trajectory of the batch, computed once. */
static void amed_init(Bench *b)
{
    b->amed = (AmedSettings){AMED_PLUGIN_SOLVER, SCHEDULE_TIME_UNIFORM, 1.0, SIGMA_MIN, SIGMA_MAX, AMED_N, true, 4};
    CM_ASSERT(schedule_steps(b->amed.schedule, AMED_N, SIGMA_MIN, SIGMA_MAX, 1.0, b->t_student) == 0, "%s",
              cm_errmsg());
    AmedTeacher T = {&b->net, b->pre, b->w};
    MlpConfig mc = mlp_config_default();
    mc.in_dim = amed_feature_dim(&T, b->H, b->W);
    CM_ASSERT(mlp_init(&b->mlp, &mc) == 0, "mlp_init: %s", cm_errmsg());
    b->mw = params_buffer(&b->mlp.ps);
    b->mg = params_buffer(&b->mlp.ps);
    mlp_randomize(&b->mlp, b->mw, 1);
    optim_init(&b->mopt, OPTIM_ADAM, b->mlp.ps.total, AMED_LR, 0.9f, 0.999f, 1e-8f, 0);
    amed_traj_init(&b->tr, b->B, b->C, b->H, b->W);
    b->traj = cm_malloc((size_t)(AMED_M + 1) * (AMED_N - 1) * b->B * b->dim * sizeof(float));
    for (size_t e = 0; e < (size_t)b->B * b->dim; e++) b->x0[e] = (float)(SIGMA_MAX * b->z[e]);
    if (b->mode == MODE_AMED_TRAIN) amed_teacher_step(b);
}

static void bench_init(Bench *b, Mode mode, UNetConfig *cfg, int B)
{
    memset(b, 0, sizeof *b);
    b->mode = mode;
    bool bcm = mode == MODE_BCM_TRAIN || mode == MODE_BCM_SAMPLE;
    bool edm = mode == MODE_HEUN || mode == MODE_AMED_TEACHER || mode == MODE_AMED_TRAIN;
    cfg->two_times = bcm;
    CM_ASSERT(unet_init(&b->net, cfg) == 0, "unet_init: %s", cm_errmsg());
    b->pre = (PrecondParams){bcm ? PRECOND_BCM : edm ? PRECOND_EDM : PRECOND_CM, SIGMA_DATA, SIGMA_MIN};
    b->B = B;
    b->C = cfg->img_channels;
    b->H = cfg->img_h;
    b->W = cfg->img_w;
    b->dim = (size_t)b->C * b->H * b->W;
    b->n = b->net.ps.total;
    b->w = params_buffer(&b->net.ps);
    b->g = params_buffer(&b->net.ps);
    b->target = params_buffer(&b->net.ps);
    params_randomize(&b->net.ps, b->w, 1);
    memcpy(b->target, b->w, b->n * sizeof(float));
    optim_init(&b->opt, OPTIM_ADAM, b->n, 1e-4f, 0.9f, 0.999f, 1e-8f, 0);
    ema_set_init(&b->emas, b->n);
    ema_set_add_rate(&b->emas, bcm ? BCM_EMA : 0.999f, b->w);
    ctx_init(&b->ctx, 1 << 20);

    /* Data in [-1, 1], noise, and adjacent times of the N = 18 Karras grid (CT's grid); BCM's u
     * another point of it, never t. */
    size_t total = (size_t)B * b->dim;
    b->x0 = cm_malloc(total * sizeof(float));
    b->z = cm_malloc(total * sizeof(float));
    b->out = cm_malloc(total * sizeof(float));
    b->t1 = cm_malloc(4 * (size_t)B * sizeof(float));
    b->t0 = b->t1 + B;
    b->lam = b->t0 + B;
    b->u = b->lam + B;
    rng_uniform(&(Rng){.seed = 7, .stream = 1}, b->x0, B, 0, b->dim);
    for (size_t k = 0; k < total; k++) b->x0[k] = 2 * b->x0[k] - 1;
    rng_normal(&(Rng){.seed = 7, .stream = 2}, b->z, B, 0, b->dim);
    double sigma[18];
    ct_sigmas(18, SIGMA_MIN, SIGMA_MAX, 7.0, sigma);
    for (int i = 0; i < B; i++) {
        int k = i % 17;
        b->t1[i] = (float)sigma[k + 1];
        b->t0[i] = (float)sigma[k];
        b->lam[i] = 1.0f;
        b->u[i] = (float)sigma[(k + 5) % 17];
    }
    if (mode == MODE_AMED_TEACHER || mode == MODE_AMED_TRAIN) amed_init(b);
}

int main(int argc, char **argv)
{
    cm_select_env(argv, true);   /* the OpenBLAS core and OpenMP's waiting policy, as cmlab picks them */
    if (cm_wait_note()[0]) fprintf(stderr, "bench_train: %s\n", cm_wait_note());
    if (argc < 3) {
        fprintf(stderr, "usage: bench_train S|M MODE [--batch B] [--threads T[,T2...]] [--iters N] [--warmup W]\n"
                        "                   [--precision fp32|bf16]\n"
                        "MODE: train, sample, heun, bcm-train, bcm-sample, amed-teacher, amed-train\n");
        return CM_EXIT_INPUT;
    }
    const char *config = argv[1], *mode_name = argv[2];
    Mode mode = MODE_COUNT;
    for (int m = 0; m < MODE_COUNT; m++)
        if (strcmp(mode_name, mode_names[m]) == 0) mode = (Mode)m;
    if (mode == MODE_COUNT) {
        fprintf(stderr, "bench_train: unknown mode '%s' (train, sample, heun, bcm-train, bcm-sample, amed-teacher, "
                        "amed-train)\n", mode_name);
        return CM_EXIT_INPUT;
    }
    enum { MAX_COUNTS = 4 };
    /* counts: as asked (0: cm_set_threads' default, what a command without --threads runs); ran: what ran */
    int batch = mode_batch[mode], counts[MAX_COUNTS] = {2}, ran[MAX_COUNTS] = {0}, ncounts = 1, iters = 5, warmup = 2;
    CmPrecision precision = CM_PRECISION_FP32;
    for (int i = 3; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--precision") == 0) {
            bool bf16 = strcmp(argv[i + 1], "bf16") == 0;
            if (!bf16 && strcmp(argv[i + 1], "fp32") != 0) {
                fprintf(stderr, "bench_train: --precision %s: fp32 or bf16\n", argv[i + 1]);
                return CM_EXIT_INPUT;
            }
            if (bf16 && !gemm_bf16_available()) {
                fprintf(stderr, "bench_train: --precision bf16: this CPU has no AVX512_BF16\n");
                return CM_EXIT_INPUT;
            }
            precision = bf16 ? CM_PRECISION_BF16 : CM_PRECISION_FP32;
            continue;
        }
        if (strcmp(argv[i], "--threads") == 0) {
            ncounts = 0;
            for (char *p = argv[i + 1], *end; ncounts < MAX_COUNTS; p = end + 1) {
                counts[ncounts] = (int)strtol(p, &end, 10);
                if (end == p || counts[ncounts] < 0 || (*end && *end != ',')) {
                    fprintf(stderr, "bench_train: --threads %s: thread counts >= 1 (0: a command's default), "
                                    "comma-separated\n", argv[i + 1]);
                    return CM_EXIT_INPUT;
                }
                ncounts++;
                if (!*end) break;
            }
            continue;
        }
        if (strcmp(argv[i], "--batch") == 0) batch = v;
        else if (strcmp(argv[i], "--iters") == 0) iters = v;
        else if (strcmp(argv[i], "--warmup") == 0) warmup = v;
        else {
            fprintf(stderr, "bench_train: unknown option '%s'\n", argv[i]);
            return CM_EXIT_INPUT;
        }
        if (v < (strcmp(argv[i], "--warmup") == 0 ? 0 : 1)) {
            fprintf(stderr, "bench_train: %s %s out of range\n", argv[i], argv[i + 1]);
            return CM_EXIT_INPUT;
        }
    }
    cm_set_threads(counts[0]);
    UNetConfig cfg = bench_config(config);
    Bench b;
    bench_init(&b, mode, &cfg, batch);
    b.ctx.precision = precision;

    /* t[j * iters + i], cpu[...]: iteration i at counts[j] */
    double *t = cm_malloc(sizeof(double) * (size_t)(iters * ncounts)), flops = 0;
    double *cpu = cm_malloc(sizeof(double) * (size_t)(iters * ncounts));
    for (int i = 0; i < warmup + iters; i++)
        for (int j = 0; j < ncounts; j++) {
            cm_set_threads(counts[j]);
            ran[j] = cm_threads();
            double f0 = b.ctx.flops, t0 = cm_now(), c0 = cpu_now();
            bench_step(&b);
            if (i >= warmup) {
                t[j * iters + i - warmup] = cm_now() - t0;
                cpu[j * iters + i - warmup] = cpu_now() - c0;
            }
            flops = b.ctx.flops - f0;
        }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    for (int j = 0; j < ncounts; j++) {
        double *tj = t + (size_t)j * iters, *cj = cpu + (size_t)j * iters;
        qsort(tj, (size_t)iters, sizeof(double), cmp_double);
        qsort(cj, (size_t)iters, sizeof(double), cmp_double);
        double med = iters % 2 ? tj[iters / 2] : 0.5 * (tj[iters / 2 - 1] + tj[iters / 2]);
        double cpu_med = iters % 2 ? cj[iters / 2] : 0.5 * (cj[iters / 2 - 1] + cj[iters / 2]);
        printf("side=cmlab config=%s mode=%s precision=%s threads=%d batch=%d ms=%.2f ms_min=%.2f img_s=%.2f "
               "gflop=%.3f rss_mb=%.1f arena_mb=%.1f core=%s cpu_ms=%.2f bf16_kernel=%s\n",
               config, mode_name, cm_precision_names[precision], ran[j], batch, 1e3 * med, 1e3 * tj[0],
               batch / med, flops * 1e-9, ru.ru_maxrss / 1024.0, b.ctx.arena.high_water / 1048576.0, cm_blas_core(),
               1e3 * cpu_med, precision == CM_PRECISION_BF16 ? gemm_bf16_kernel() : "none");
    }
    free(t);
    free(cpu);
    return 0;
}
