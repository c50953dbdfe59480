/* cmd_edit.c: `cmlab edit CKPT.h5 --task T [options]`: zero-shot editing with a trained
 * consistency model (train/edit.h, reference/cm.md §7.3). It reads the reference images (a PNG or
 * rows of the checkpoint's own data set), builds the task's operator, runs the edit and writes
 * one PNG grid: a row per image, reference | degraded input | result. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "cli/commands.h"
#include "common.h"
#include "data/dataset.h"
#include "data/image.h"
#include "sample/edit.h"
#include "train/model.h"
#include "sample/schedule.h"

#define MAX_IMAGES 256
#define MAX_TIMES 64

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cmlab edit CKPT.h5 --task TASK [--image PNG | --data-index I,J,...] [options]\n"
        "Zero-shot editing with a consistency model (CM paper Algorithm 4; reference/cm.md 7.3).\n"
        "Writes one PNG grid, a row per image: reference | degraded input | result. When the\n"
        "--image is itself the degraded input (a low-resolution or gray PNG, or --noisy) the\n"
        "rows are input | result. Pixels map to [-1, 1] as in training.\n"
        "\n"
        "tasks:\n"
        "  inpaint      fill the missing pixels: --box X0,Y0,X1,Y1 (columns X0..X1-1, rows\n"
        "               Y0..Y1-1; default the central half, e.g. 7,7,21,21 on 28x28) or --mask PNG\n"
        "               of the image's size, WHITE (>= 128) = missing, to generate; black = keep\n"
        "  colorize     keep each pixel's luminance 0.2989 R + 0.5870 G + 0.1140 B, generate its\n"
        "               colour (RGB models only); --image may be an RGB or a gray PNG\n"
        "  superres     keep the mean of each FxF patch, generate the detail: --factor F (2 or 4,\n"
        "               default 2); --image may be full-size (averaged down) or (H/F)x(W/F)\n"
        "  denoise      one step f(y, sigma) at the known level --sigma S (default 0.5); the\n"
        "               reference is noised at S from --seed, or --noisy: --image is already noisy\n"
        "  interpolate  one row of --n N images (default 8) f(T slerp(z1, z2; u), T) for u from 0\n"
        "               to 1, where z1, z2 are the latents of samples I and J (--pair I,J, default\n"
        "               0,1) of `cmlab sample --seed S --steps 1`: its ends are those two samples\n"
        "\n"
        "options:\n"
        "  --image PNG        one reference image of the model's size (channels as the model)\n"
        "  --data-index L     rows of the checkpoint's data set (data.dataset, data.path), e.g.\n"
        "                     0,5,9 (default 0,...,7); --split test (default) or train\n"
        "  --weights SET      online, target or ema:RATE (default the first EMA, else online)\n"
        "  --steps K          K Karras times (rho 7) from sigma_max to sigma_min (default 18, the\n"
        "                     CM paper's CIFAR-10 editing); 1 is sigma_max only\n"
        "  --times L          explicit descending times, e.g. 80,10,2,0.5 (inpaint, colorize,\n"
        "                     superres; denoise and interpolate take one step)\n"
        "  --seed S           seed of the editing noise, and of the latents of interpolate\n"
        "                     (default experiment.seed, as cmlab sample)\n"
        "  --threads N        OpenMP threads (default 2)\n"
        "  --out PNG          the grid (default edit.png)\n"
        "\n"
        "An EDM checkpoint also works: its denoiser D(x; t) takes the place of f (a blurrier\n"
        "one-step estimate). Exit status: 0 done, 2 bad usage or bad input (a missing or damaged\n"
        "checkpoint, an image of the wrong size, colorize on a gray model, a bad --box).\n");
}

/* Comma-separated whole numbers into v[max]; the count, or -1 after cm_fail(). */
static int parse_ints(const char *opt, const char *s, int *v, int max)
{
    int n = 0;
    for (const char *p = s;;) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || (*end && *end != ',') || x < 0 || x > 1000000000 || n == max)
            return cm_fail("--%s %s: expected at most %d whole numbers >= 0 separated by commas", opt, s, max);
        v[n++] = (int)x;
        if (!*end) return n;
        p = end + 1;
    }
}

static int parse_doubles(const char *opt, const char *s, double *v, int max)
{
    int n = 0;
    for (const char *p = s;;) {
        char *end;
        double x = strtod(p, &end);
        if (end == p || (*end && *end != ',') || n == max)
            return cm_fail("--%s %s: expected at most %d numbers separated by commas", opt, s, max);
        v[n++] = x;
        if (!*end) return n;
        p = end + 1;
    }
}

/* A whole number in [lo, hi] for option --name; -1 after cm_fail(). */
static int opt_long(const char *name, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (end == s || *end || errno || x < lo || x > hi)
        return cm_fail("--%s expects a whole number in [%lld, %lld], got '%s'", name, lo, hi, s);
    *out = x;
    return 0;
}

/* What `cmlab edit` was asked to do, after parsing. */
typedef struct EditArgs {
    const char *ckpt, *image, *mask, *box, *data_index, *split, *weights, *times, *pair, *out;
    EditTask task;
    int steps, factor, n, threads;
    double sigma;
    bool noisy, steps_given, factor_given, sigma_given, n_given;
    long long seed;
} EditArgs;

/* Options that belong to one task only: refused with the others, so a typo'd task does not run
 * with a silently ignored option. */
static int check_task_options(const EditArgs *a)
{
    const struct { bool given; const char *name; EditTask task; } only[] = {
        {a->mask != NULL, "mask", EDIT_INPAINT}, {a->box != NULL, "box", EDIT_INPAINT},
        {a->factor_given, "factor", EDIT_SUPERRES}, {a->sigma_given, "sigma", EDIT_DENOISE},
        {a->noisy, "noisy", EDIT_DENOISE}, {a->pair != NULL, "pair", EDIT_INTERPOLATE},
        {a->n_given, "n", EDIT_INTERPOLATE},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(only); i++)
        if (only[i].given && a->task != only[i].task)
            return cm_fail("--%s applies to --task %s only", only[i].name, edit_task_name(only[i].task));
    bool one_step = a->task == EDIT_DENOISE || a->task == EDIT_INTERPOLATE;
    if (one_step && (a->times || a->steps_given))
        return cm_fail("--task %s is one step at %s: --times and --steps do not apply", edit_task_name(a->task),
                       a->task == EDIT_DENOISE ? "the known --sigma" : "T = model.sigma_max");
    if (a->task == EDIT_INTERPOLATE && (a->image || a->data_index))
        return cm_fail("--task interpolate starts from two latents (--pair, --seed), not from images");
    if (a->image && a->data_index) return cm_fail("give --image or --data-index, not both");
    if (a->mask && a->box) return cm_fail("give --mask or --box, not both");
    if (a->noisy && !a->image) return cm_fail("--noisy describes an --image that is already noisy");
    return 0;
}

/* The references: n images [n, C, H, W]. *have_ref is false when the input is already degraded
 * (low-res, gray or noisy PNG): then y holds that input, brought to full size. */
static int load_references(const EditArgs *a, const Config *cfg, const Model *m, float **y, int *n,
                           bool *have_ref)
{
    const int C = m->C, H = m->H, W = m->W;
    const size_t dim = (size_t)C * H * W;
    *have_ref = true;
    if (a->image) {
        bool degraded;
        *y = cm_malloc(dim * sizeof **y);
        if (edit_image_read(a->image, a->task, a->factor, C, H, W, *y, &degraded)) {
            free(*y);
            *y = NULL;
            return -1;
        }
        *n = 1;
        *have_ref = !degraded && !a->noisy;
        return 0;
    }
    int idx[MAX_IMAGES], count = 0;
    if (a->data_index && (count = parse_ints("data-index", a->data_index, idx, MAX_IMAGES)) < 0) return -1;
    return edit_references(cfg, a->split, a->data_index ? idx : NULL, count, C, H, W, y, n);
}

/* The inpainting mask [H, W] (1 = missing) from --mask or --box (default: the central half). */
static int inpaint_mask(const EditArgs *a, int H, int W, uint8_t *missing, char *desc, size_t len)
{
    memset(missing, 0, (size_t)H * W);
    if (a->mask) {
        int count = edit_mask_read(a->mask, H, W, missing);
        if (count < 0) return -1;
        snprintf(desc, len, "mask %s, %d pixels", a->mask, count);
        return 0;
    }
    int b[4] = {W / 4, H / 4, W - W / 4, H - H / 4};
    if (a->box && (parse_ints("box", a->box, b, 4) != 4 || !(b[0] < b[2] && b[2] <= W && b[1] < b[3] && b[3] <= H)))
        return cm_fail("--box %s: expected X0,Y0,X1,Y1 with 0 <= X0 < X1 <= %d and 0 <= Y0 < Y1 <= %d "
                       "(columns X0..X1-1, rows Y0..Y1-1)", a->box, W, H);
    for (int yy = b[1]; yy < b[3]; yy++)
        for (int xx = b[0]; xx < b[2]; xx++) missing[yy * W + xx] = 1;
    snprintf(desc, len, "box %d,%d,%d,%d", b[0], b[1], b[2], b[3]);
    return 0;
}

/* The gray image a colourisation keeps: every channel = 0.2989 R + 0.5870 G + 0.1140 B. */
static void luminance(const float *x, int H, int W, float *out)
{
    size_t plane = (size_t)H * W;
    for (size_t k = 0; k < plane; k++) {
        float l = (float)(EDIT_LUMA[0] * x[k] + EDIT_LUMA[1] * x[plane + k] + EDIT_LUMA[2] * x[2 * plane + k]);
        out[k] = out[plane + k] = out[2 * plane + k] = l;
    }
}

static int edit_times(const EditArgs *a, const Config *cfg, double *t, int *nt)
{
    if (a->times) {
        *nt = parse_doubles("times", a->times, t, MAX_TIMES);
        return *nt < 0 ? -1 : 0;
    }
    if (a->steps < 1 || a->steps > MAX_TIMES) return cm_fail("--steps %d: 1 to %d", a->steps, MAX_TIMES);
    *nt = a->steps;
    if (a->steps == 1) {
        t[0] = cfg->model.sigma_max;
        return 0;
    }
    return schedule_steps(SCHEDULE_POLYNOMIAL, a->steps, cfg->model.sigma_min, cfg->model.sigma_max, 7.0, t);
}

/* What a task produced: n rows of [reference |] degraded | result, or one row of n images
 * (interpolation, in result). */
typedef struct EditOutput {
    float *y, *degraded, *result;    /* [n, C, H, W] each; y and degraded NULL for interpolation */
    int n;
    bool have_ref;                   /* y is a clean reference (else it is the degraded input) */
    char what[600], layout[96];      /* for the summary line */
} EditOutput;

static int run_interpolate(const EditArgs *a, const Config *cfg, Sampler *s, EditOutput *o)
{
    const size_t dim = (size_t)s->C * s->H * s->W;
    int pair[2];
    if (parse_ints("pair", a->pair, pair, 2) != 2) return cm_fail("--pair %s: expected I,J", a->pair);
    /* Samples I and J of `cmlab sample --seed S`: its initial noise (sample.h). */
    float *z = cm_malloc(2 * dim * sizeof *z);
    Rng r = {.seed = (uint64_t)a->seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, z, 1, pair[0], dim);
    rng_normal(&r, z + dim, 1, pair[1], dim);
    o->n = a->n;
    o->result = cm_malloc((size_t)o->n * dim * sizeof *o->result);
    edit_interpolate(edit_f_sampler, s, cfg->model.sigma_max, z, z + dim, dim, o->n, o->result);
    free(z);
    snprintf(o->what, sizeof o->what, "slerp between samples %d and %d of seed %lld, one step at T = %g",
             pair[0], pair[1], a->seed, cfg->model.sigma_max);
    snprintf(o->layout, sizeof o->layout, "one row, u = 0 .. 1");
    return 0;
}

static int run_denoise(const EditArgs *a, const Model *m, Sampler *s, EditOutput *o)
{
    const size_t dim = (size_t)m->C * m->H * m->W, bytes = (size_t)o->n * dim * sizeof(float);
    o->degraded = cm_malloc(bytes);
    o->result = cm_malloc(bytes);
    memcpy(o->degraded, o->y, bytes);
    if (!a->noisy) edit_add_noise(o->degraded, o->n, dim, a->sigma, (uint64_t)a->seed);
    memcpy(o->result, o->degraded, bytes);
    snprintf(o->what, sizeof o->what, "one step at sigma = %g%s", a->sigma, a->noisy ? " (noisy input)" : "");
    snprintf(o->layout, sizeof o->layout, "noisy | denoised");
    return edit_denoise(edit_f_sampler, s, m->pre.eps, a->sigma, o->n, dim, o->result);
}

/* Inpainting, colourisation, super-resolution: Algorithm 4 with the task's operator. */
static int run_projected(const EditArgs *a, const Config *cfg, const Model *m, Sampler *s, EditOutput *o)
{
    const int C = m->C, H = m->H, W = m->W;
    const size_t dim = (size_t)C * H * W;
    EditOp op = {0};
    char desc[300] = "";
    int rc = 0;
    if (a->task == EDIT_INPAINT) {
        uint8_t *missing = cm_malloc((size_t)H * W);
        if ((rc = inpaint_mask(a, H, W, missing, desc, sizeof desc)) == 0) edit_op_inpaint(&op, C, H, W, missing);
        free(missing);
        snprintf(o->layout, sizeof o->layout, "masked (gray) | inpainted");
    } else if (a->task == EDIT_COLORIZE) {
        rc = edit_op_colorize(&op, C, H, W);
        snprintf(desc, sizeof desc, "luminance kept");
        snprintf(o->layout, sizeof o->layout, "gray | colourised");
    } else {
        rc = edit_op_superres(&op, C, H, W, a->factor);
        snprintf(desc, sizeof desc, "%dx, %dx%d -> %dx%d", a->factor, W / a->factor, H / a->factor, W, H);
        snprintf(o->layout, sizeof o->layout, "low-res | super-resolved");
    }
    double times[MAX_TIMES];
    int nt = 0;
    if (rc == 0) rc = edit_times(a, cfg, times, &nt);
    if (rc == 0) {
        o->degraded = cm_malloc((size_t)o->n * dim * sizeof *o->degraded);
        o->result = cm_malloc((size_t)o->n * dim * sizeof *o->result);
        rc = edit_run(&op, edit_f_sampler, s, m->pre.eps, times, nt, o->n, o->y, (uint64_t)a->seed, o->result);
    }
    for (int i = 0; rc == 0 && i < o->n; i++) {
        if (a->task == EDIT_COLORIZE) luminance(o->y + i * dim, H, W, o->degraded + i * dim);
        else edit_known(&op, o->y + i * dim, o->degraded + i * dim);
    }
    if (rc == 0)
        snprintf(o->what, sizeof o->what, "%s, %d step%s (t = %g .. %g)", desc, nt, nt == 1 ? "" : "s", times[0],
                 times[nt - 1]);
    edit_op_free(&op);
    return rc;
}

/* The grid: a row per image, [reference |] degraded | result; interpolation is one row. */
static int write_grid(const EditArgs *a, const Model *m, const EditOutput *o)
{
    const size_t dim = (size_t)m->C * m->H * m->W;
    if (!o->degraded) return image_write_grid(a->out, o->result, o->n, m->C, m->H, m->W, o->n, 2);
    int cols = o->have_ref ? 3 : 2;
    float *grid = cm_malloc((size_t)o->n * cols * dim * sizeof *grid);
    for (int i = 0; i < o->n; i++) {
        float *row = grid + (size_t)i * cols * dim;
        if (o->have_ref) memcpy(row, o->y + i * dim, dim * sizeof *row), row += dim;
        memcpy(row, o->degraded + i * dim, dim * sizeof *row);
        memcpy(row + dim, o->result + i * dim, dim * sizeof *row);
    }
    int rc = image_write_grid(a->out, grid, o->n * cols, m->C, m->H, m->W, cols, 2);
    free(grid);
    return rc;
}

/* Runs the task on the loaded model and writes the grid. 0, or -1 after cm_fail(). */
static int run_edit(const EditArgs *a, const Config *cfg, Model *m)
{
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    Sampler s = model_sampler(m, &ctx);
    double t0 = cm_now();
    EditOutput o = {0};
    int rc;
    if (a->task == EDIT_INTERPOLATE) {
        rc = run_interpolate(a, cfg, &s, &o);
    } else {
        rc = load_references(a, cfg, m, &o.y, &o.n, &o.have_ref);
        if (rc == 0) rc = a->task == EDIT_DENOISE ? run_denoise(a, m, &s, &o) : run_projected(a, cfg, m, &s, &o);
    }
    if (rc == 0) rc = write_grid(a, m, &o);
    if (rc == 0)
        printf("%s: %s, %d image%s, %s; %s weights, seed %lld, %.1f s\n  columns: %s%s\n", a->out,
               edit_task_name(a->task), o.n, o.n == 1 ? "" : "s", o.what, m->weights_name, a->seed,
               cm_now() - t0, o.have_ref ? "reference | " : "", o.layout);
    free(o.y);
    free(o.degraded);
    free(o.result);
    ctx_free(&ctx);
    return rc;
}

int edit_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"task", required_argument, 0, 'k'}, {"image", required_argument, 0, 'i'},
        {"data-index", required_argument, 0, 'd'}, {"split", required_argument, 0, 'p'},
        {"mask", required_argument, 0, 'm'}, {"box", required_argument, 0, 'b'},
        {"factor", required_argument, 0, 'F'}, {"sigma", required_argument, 0, 'g'},
        {"noisy", no_argument, 0, 'N'}, {"pair", required_argument, 0, 'P'},
        {"n", required_argument, 0, 'n'}, {"weights", required_argument, 0, 'w'},
        {"steps", required_argument, 0, 's'}, {"times", required_argument, 0, 'T'},
        {"seed", required_argument, 0, 'r'}, {"threads", required_argument, 0, 't'},
        {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    EditArgs a = {.split = "test", .pair = NULL, .out = "edit.png", .task = EDIT_TASK_COUNT,
                  .steps = 18, .factor = 2, .n = 8, .threads = 2, .sigma = 0.5, .seed = -1};
    long long v = 0;
    const char *task = NULL;
    int rc = 0;
    optind = 1;
    for (int ch, li = 0; rc == 0 && (ch = getopt_long(argc, argv, "h", opts, &li)) != -1;) {
        const char *name = opts[li].name;
        switch (ch) {
        case 'k': task = optarg; break;
        case 'i': a.image = optarg; break;
        case 'd': a.data_index = optarg; break;
        case 'p': a.split = optarg; break;
        case 'm': a.mask = optarg; break;
        case 'b': a.box = optarg; break;
        case 'N': a.noisy = true; break;
        case 'P': a.pair = optarg; break;
        case 'w': a.weights = optarg; break;
        case 'T': a.times = optarg; break;
        case 'o': a.out = optarg; break;
        case 'F': rc = opt_long(name, optarg, 2, 8, &v); a.factor = (int)v; a.factor_given = true; break;
        case 'n': rc = opt_long(name, optarg, 1, MAX_IMAGES, &v); a.n = (int)v; a.n_given = true; break;
        case 's': rc = opt_long(name, optarg, 1, MAX_TIMES, &v); a.steps = (int)v; a.steps_given = true; break;
        case 't': rc = opt_long(name, optarg, 1, 4096, &v); a.threads = (int)v; break;
        case 'r': rc = opt_long(name, optarg, 0, 0x7fffffffffffffffLL, &a.seed); break;
        case 'g': {
            char *end;
            a.sigma = strtod(optarg, &end);
            a.sigma_given = true;
            if (end == optarg || *end || !(a.sigma > 0) || !isfinite(a.sigma))
                rc = cm_fail("--sigma expects a noise level > 0, got '%s'", optarg);
            break;
        }
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
    }
    if (rc) {
        fprintf(stderr, "cmlab edit: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    if (optind != argc - 1 || !task) {
        fprintf(stderr, "cmlab edit: %s\n", !task ? "--task is required" : "expected one checkpoint");
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    a.ckpt = argv[optind];
    int t = edit_task_from_name(task);
    if (t >= 0) a.task = (EditTask)t;
    if (t < 0 || check_task_options(&a)) {
        fprintf(stderr, "cmlab edit: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    if (!a.pair) a.pair = "0,1";
    if (strcmp(a.split, "test") && strcmp(a.split, "train")) {
        fprintf(stderr, "cmlab edit: --split %s: train or test\n", a.split);
        return CM_EXIT_INPUT;
    }
    cm_set_threads(a.threads);

    Config cfg;
    Model m;
    if (model_load(&m, &cfg, a.ckpt, a.weights) != 0) {
        fprintf(stderr, "cmlab edit: %s\n", cm_errmsg());
        model_free(&m);
        return CM_EXIT_INPUT;
    }
    if (a.seed < 0) a.seed = cfg.experiment.seed;
    if (a.task == EDIT_COLORIZE && m.C != 3)
        rc = cm_fail("%s: colourisation needs an RGB model, but this one was trained on gray images "
                     "(data.dataset = %s)", a.ckpt, config_enum_name("data.dataset", cfg.data.dataset));
    if (rc == 0 && m.kind == MODEL_DIFFUSION)
        fprintf(stderr, "cmlab edit: note: %s is an EDM denoiser; D(x; t) stands in for the consistency "
                        "function (expect blurrier results)\n", a.ckpt);
    if (rc == 0) rc = run_edit(&a, &cfg, &m);
    if (rc != 0) fprintf(stderr, "cmlab edit: %s\n", cm_errmsg());
    model_free(&m);
    return rc == 0 ? CM_EXIT_OK : CM_EXIT_INPUT;
}
