/* bench_train.c: cmlab's side of the training and sampling benchmark (bench/train.sh runs it
 * interleaved with its PyTorch twin bench/bench_train.py and prints the table).
 *
 *   train   one Consistency Training step as the trainer runs it (src/train/trainer.c, method
 *           ct): zero the gradients, ct_step_loss (online forward + backward, target forward
 *           under no-grad, l2 loss), the gradient norm, Adam, the evaluation EMA (0.999) and the
 *           target EMA (mu = 0.9);
 *   sample  one-step consistency sampling, sample_cm at T = sigma_max with the batch as one
 *           network call.
 * Configurations (bench/configs.py holds the same table for the twin):
 *   S  1x28x28, base 32, multipliers 1,2,2, 1 block per level, no attention
 *   M  3x32x32, base 64, multipliers 1,2,2, 2 blocks per level, attention at 16x16 (none in the
 *      middle block)
 *
 * Usage: bench_train S|M train|sample [--batch B] [--threads T[,T2...]] [--iters N] [--warmup W]
 * With several thread counts the timed iterations alternate between them (T, T2, T, T2, ...), so
 * a drift of the machine's speed affects each count alike; bench.py compares 2 and 1 threads so.
 * Prints one line per thread count of key=value fields: side, config, mode, threads, batch, ms (median of the
 * timed iterations), ms_min, img_s (from the median), gflop (model FLOPs of one iteration: the
 * GEMM-shaped ops, counted by the ops themselves, Ctx.flops), rss_mb (peak resident set of this
 * process), arena_mb (the step arena's high-water mark), core (OpenBLAS's kernels), cpu_ms (median
 * process CPU time of the timed iterations, user + system of all threads: the measure to compare
 * 1-thread runs by on a loaded machine, where wall time counts the time other jobs hold the core).
 * With several thread counts rss_mb and arena_mb are the process's, shared by all of them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nn/optim.h"
#include "nn/unet.h"
#include "train/ct.h"
#include "train/ct_schedule.h"
#include "sample/sample.h"

#define SIGMA_MIN 0.002
#define SIGMA_MAX 80.0
#define SIGMA_DATA 0.5

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
    UNet net;
    PrecondParams pre;
    Ctx ctx;
    int B, C, H, W;
    size_t dim, n;
    float *w, *g, *target;
    Adam opt;
    EmaSet emas;
    float *x0, *z, *t1, *t0, *lam, *out;
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

static void sample_step(Bench *b)
{
    Sampler s = {.net = &b->net, .pre = b->pre, .weights = b->w, .batch = b->B,
                 .C = b->C, .H = b->H, .W = b->W, .ctx = &b->ctx};
    double T = SIGMA_MAX;
    CM_ASSERT(sample_cm(&s, &T, 1, b->B, 1, b->out) == 0, "sample_cm: %s", cm_errmsg());
}

static void bench_init(Bench *b, const UNetConfig *cfg, int B)
{
    memset(b, 0, sizeof *b);
    CM_ASSERT(unet_init(&b->net, cfg) == 0, "unet_init: %s", cm_errmsg());
    b->pre = (PrecondParams){PRECOND_CM, SIGMA_DATA, SIGMA_MIN};
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
    ema_set_add_rate(&b->emas, 0.999f, b->w);
    ctx_init(&b->ctx, 1 << 20);

    /* Data in [-1, 1], noise, and adjacent times of the N = 18 Karras grid (CT's grid). */
    size_t total = (size_t)B * b->dim;
    b->x0 = cm_malloc(total * sizeof(float));
    b->z = cm_malloc(total * sizeof(float));
    b->out = cm_malloc(total * sizeof(float));
    b->t1 = cm_malloc(3 * (size_t)B * sizeof(float));
    b->t0 = b->t1 + B;
    b->lam = b->t0 + B;
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
    }
}

int main(int argc, char **argv)
{
    cm_blas_select_core(argv);
    if (argc < 3) {
        fprintf(stderr, "usage: bench_train S|M train|sample [--batch B] [--threads T[,T2...]] [--iters N] [--warmup W]\n");
        return CM_EXIT_INPUT;
    }
    const char *config = argv[1], *mode = argv[2];
    bool train = strcmp(mode, "train") == 0;
    if (!train && strcmp(mode, "sample") != 0) {
        fprintf(stderr, "bench_train: unknown mode '%s' (train or sample)\n", mode);
        return CM_EXIT_INPUT;
    }
    enum { MAX_COUNTS = 4 };
    int batch = train ? 64 : 256, counts[MAX_COUNTS] = {2}, ncounts = 1, iters = 5, warmup = 2;
    for (int i = 3; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--threads") == 0) {
            ncounts = 0;
            for (char *p = argv[i + 1], *end; ncounts < MAX_COUNTS; p = end + 1) {
                counts[ncounts] = (int)strtol(p, &end, 10);
                if (end == p || counts[ncounts] < 1 || (*end && *end != ',')) {
                    fprintf(stderr, "bench_train: --threads %s: thread counts >= 1, comma-separated\n", argv[i + 1]);
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
    bench_init(&b, &cfg, batch);

    /* t[j * iters + i], cpu[...]: iteration i at counts[j] */
    double *t = cm_malloc(sizeof(double) * (size_t)(iters * ncounts)), flops = 0;
    double *cpu = cm_malloc(sizeof(double) * (size_t)(iters * ncounts));
    for (int i = 0; i < warmup + iters; i++)
        for (int j = 0; j < ncounts; j++) {
            cm_set_threads(counts[j]);
            double f0 = b.ctx.flops, t0 = cm_now(), c0 = cpu_now();
            if (train) train_step(&b);
            else sample_step(&b);
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
        printf("side=cmlab config=%s mode=%s threads=%d batch=%d ms=%.2f ms_min=%.2f img_s=%.2f "
               "gflop=%.3f rss_mb=%.1f arena_mb=%.1f core=%s cpu_ms=%.2f\n",
               config, mode, counts[j], batch, 1e3 * med, 1e3 * tj[0], batch / med, flops * 1e-9,
               ru.ru_maxrss / 1024.0, b.ctx.arena.high_water / 1048576.0, cm_blas_core(), 1e3 * cpu_med);
    }
    free(t);
    free(cpu);
    return 0;
}
