/* test_amed.c TORCH_PYTHON AMED_STEP_PY CMLAB: the AMED step, its plugins and predictor training
 * (src/sample/amed.h, src/train/methods/amed.c).
 *
 * The teacher is a tiny EDM U-Net (channels 8, levels 1,2,2 on 1x32x32 images: an 8x8 bottleneck,
 * the predictor's 64 inputs) with random weights, written as a checkpoint by the test itself; its
 * output layer is perturbed away from its zero init so that the network, not only c_skip x, shapes
 * every direction. Checks:
 *   (a) predictor parameter counts 8,929 / 8,950 / 8,971 (one, two, three heads) against the
 *       count of reference/amed.md §1 (72 + 8,320 + 516 + 21 per head);
 *   (b) with r = 1/2 and c = a = 1 forced, N - 1 AMED-Solver steps equal solvers.c's DPM-Solver-2
 *       (float64 state) to float precision, with and without AFS; so does the dpm2 plugin; and N - 1
 *       dpmpp steps (max order 3) on a logsnr schedule equal solvers.c's dpmpp3m on the logsnr
 *       schedule of 2N - 1 points (whose odd points are the geometric midpoints s = r^1/2);
 *   (c) the gradient of the AMED loss sum((x_{n+1} - y)^2)/B with respect to per-sample r, c, a,
 *       for every plugin (ipndm with a history; dpmpp with two earlier entries and per-sample times,
 *       third order on both sub-steps), and with respect to predictor weights through a whole
 *       step, against central finite differences;
 *   (d) two training substeps of method = amed (its record's setup, start and loss, as the loop
 *       calls them: the latents of the batch's stream, the Heun teacher trajectory, the AFS step,
 *       then a step from the teacher's point with bottleneck features) against the PyTorch twin
 *       tests/torch/amed_step.py in float64 from the same teacher checkpoint, predictor weights and
 *       latents: loss and every predictor gradient within 1e-4;
 *   (e) `cmlab train` of a predictor, `cmlab sample TEACHER --predictor P` (exit 0, its NFE) and a
 *       second teacher refused with exit 2 naming both files;
 *   (f) a non-finite gradient (CMLAB_TEST_OUTLIER=1:nan) is skipped and counted in metrics.jsonl,
 *       and with amed.nonfinite_limit = 0 the run stops with exit 1; the count survives a resume:
 *       a run with one skipped update stopped by SIGTERM (CMLAB_TEST_RAISE) and resumed with a
 *       second one stops at amed.nonfinite_limit = 1 (2 so far), which a count restarted at 0
 *       would not;
 *   (g) the grid the trainer draws at its end (N = 3: an AFS step, then a step whose predictor reads
 *       the bottleneck) equals `cmlab sample TEACHER --predictor P --seed <the run's seed>` pixel
 *       for pixel, tile by tile (the two grids are laid out differently), while another seed
 *       differs: the CLI reproduces the student of training.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/rng.h"
#include "data/image.h"
#include "fixture.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "sample/amed.h"
#include "sample/sample.h"
#include "train/amed_predictor.h"
#include "train/method.h"
#include "train/model.h"

#define DIR "amed_runs"
#define S 32
#define NDATA 8

static const char *torch_python, *twin_script, *cmlab;

/* Runs argv with stdout and stderr appended to DIR/log.txt, env "K=V" set when not NULL. */
static int run(char *const *argv, const char *env) { return fixture_run(argv, DIR "/log.txt", NULL, env); }

/* NDATA 28x28 MNIST-format images (the trainer loads a data set even when AMED ignores it). */
static void write_data(void)
{
    FILE *im = fopen(DIR "/data/train-images-idx3-ubyte", "wb"), *lb = fopen(DIR "/data/train-labels-idx1-ubyte", "wb");
    CM_ASSERT(im && lb, "cannot write the data set in " DIR "/data");
    fixture_be32(im, 0x803), fixture_be32(im, NDATA), fixture_be32(im, 28), fixture_be32(im, 28);
    fixture_be32(lb, 0x801), fixture_be32(lb, NDATA);
    for (int i = 0; i < NDATA; i++) {
        for (int k = 0; k < 28 * 28; k++) fputc((k * (i + 3)) % 251, im);
        fputc(i % 10, lb);
    }
    fclose(im);
    fclose(lb);
}

static const char *TEACHER_CFG =
    "[experiment]\nmethod = edm\nseed = %d\nout_dir = " DIR "\n"
    "[data]\ndataset = mnist\npath = " DIR "/data\npad_to = 32\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2,2\nnum_blocks = 1\nmid_attn = false\n";

/* A random teacher checkpoint DIR/<name>/step_00000000.h5 (weights from `seed`, every one moved
 * by 0.05 N(0,1) so that no layer is at its zero init). */
static void write_teacher(const char *name, int seed)
{
    char text[1024], dir[256];
    snprintf(text, sizeof text, TEACHER_CFG, seed);
    Config cfg;
    CM_ASSERT(config_from_string(&cfg, text, "teacher") == 0, "teacher config: %s", cm_errmsg());
    UNetConfig u;
    model_unet_config(&cfg, 1, S, S, &u);
    UNet net;
    CM_ASSERT(unet_init(&net, &u) == 0, "teacher: %s", cm_errmsg());
    float *w = params_buffer(&net.ps), *z = params_buffer(&net.ps);
    params_randomize(&net.ps, w, (uint64_t)seed);
    rng_normal(&(Rng){.seed = (uint64_t)seed, .stream = 77}, z, 1, 0, net.ps.total);
    for (size_t i = 0; i < net.ps.total; i++) w[i] += 0.05f * z[i];
    char *config = config_to_string(&cfg);
    CkptState s = {.ps = &net.ps, .method = "edm", .config = config, .seed = (uint64_t)seed, .world_size = 1};
    ckpt_add_weights(&s, "online", w);
    snprintf(dir, sizeof dir, DIR "/%s", name);
    CM_ASSERT(ckpt_save(dir, &s, NULL, 0) == 0, "teacher save: %s", cm_errmsg());
    free(config);
    free(w);
    free(z);
    unet_free(&net);
}

/* ---- (a) ---- */

static void test_param_counts(void)
{
    const float scales[3][2] = {{0, 0}, {0.01f, 0}, {0.01f, 0.2f}};
    for (int heads = 1; heads <= 3; heads++) {
        MlpConfig mc = mlp_config_default();
        mc.scale_dir = scales[heads - 1][0];
        mc.scale_time = scales[heads - 1][1];
        AmedMLP m;
        CHECK(mlp_init(&m, &mc) == 0, "mlp_init: %s", cm_errmsg());
        size_t want = (8 * 8 + 8) + (128 * 64 + 128) + (4 * 128 + 4) + (size_t)heads * (20 + 1);
        CHECK(mlp_param_count(&m) == want, "%d heads: %zu parameters, want %zu", heads, mlp_param_count(&m), want);
        printf("predictor with %d head%s: %zu parameters\n", heads, heads > 1 ? "s" : "", mlp_param_count(&m));
        mlp_free(&m);
    }
}

/* ---- (b) ---- */

enum { B = 2 };

/* sigma_max z for B samples of the run's shape. */
static void latents(float *x, double sigma_max, uint64_t seed)
{
    rng_normal(&(Rng){.seed = seed, .stream = 5}, x, B, 0, S * S);
    for (int e = 0; e < B * S * S; e++) x[e] = (float)(sigma_max * x[e]);
}

/* A tensor [B] of one value per sample, a leaf that requires a gradient when grad. */
static Tensor *per_sample(Ctx *c, const float *v, bool grad)
{
    float *d = arena_alloc(&c->arena, 2 * B * sizeof(float));
    memcpy(d, v, B * sizeof(float));
    memset(d + B, 0, B * sizeof(float));
    return tensor_wrap(c, d, grad ? d + B : NULL, 1, SHAPE(B), grad);
}

/* N - 1 steps of plugin `plugin` with r = 1/2, c = a = 1 forced over N points of o's schedule,
 * against `kind` run by solvers.c with o (its own points; float64 state) from the same latents:
 * the relative error. */
static double forced_vs_solver(const Model *tm, AmedPlugin plugin, int N, int max_order, SolverKind kind,
                               const SolverOpts *o)
{
    AmedTeacher T = {&tm->net, tm->pre, tm->w};
    float x0[B * S * S], xa[B * S * S], xf[B * S * S];
    double xd[B * S * S];
    latents(x0, o->sigma_max, 1);
    for (int e = 0; e < B * S * S; e++) xd[e] = x0[e];
    Ctx ctx;
    ctx_init(&ctx, 16u << 20);
    Sampler sm = model_sampler(tm, &ctx);
    CHECK(solver_sample(kind, o, sample_denoise, &sm, xd, B, S * S, NULL) == 0, "%s: %s", solver_kind_name(kind),
          cm_errmsg());
    AmedSettings st = {.plugin = plugin, .schedule = o->schedule, .rho = o->rho, .sigma_min = o->sigma_min,
                       .sigma_max = o->sigma_max, .N = N, .afs = o->afs, .max_order = max_order};
    double t[8];
    schedule_steps(st.schedule, N, st.sigma_min, st.sigma_max, st.rho, t);
    AmedTraj tr;
    amed_traj_init(&tr, B, 1, S, S);
    memcpy(xa, x0, sizeof xa);
    for (int n = 0; n < N - 1; n++) {
        ctx_reset(&ctx);
        const float half[B] = {0.5f, 0.5f}, one[B] = {1, 1};
        Tensor *x = tensor_wrap(&ctx, xa, NULL, 4, SHAPE(B, 1, S, S), false);
        AmedBegin b = amed_step_begin(&ctx, &T, x, t[n], o->afs && n == 0);
        Tensor *x1 = amed_step_end(&ctx, &T, &st, &tr, x, b.d, per_sample(&ctx, half, false),
                                   per_sample(&ctx, one, false), per_sample(&ctx, one, false), t[n], t[n + 1]);
        memcpy(xa, x1->data, sizeof xa);
    }
    for (int e = 0; e < B * S * S; e++) xf[e] = (float)xd[e];
    amed_traj_free(&tr);
    ctx_free(&ctx);
    return rel_error(xa, xf, B * S * S, 1e-3);
}

static void test_dpm2_equivalence(const Model *tm)
{
    enum { N = 4 };
    for (int afs = 0; afs <= 1; afs++)
        for (int plugin = AMED_PLUGIN_SOLVER; plugin <= AMED_PLUGIN_DPM2; plugin += AMED_PLUGIN_DPM2) {
            SolverOpts o = solver_opts_default();
            o.steps = N;
            o.afs = afs;
            o.denoise_to_zero = false;
            double err = forced_vs_solver(tm, (AmedPlugin)plugin, N, 4, SOLVER_DPM2, &o);
            CHECK(err < 2e-5, "%s plugin, afs %d: r = 1/2, c = a = 1 differs from DPM-Solver-2 by %.2e",
                  amed_plugin_names[plugin], afs, err);
            printf("%s plugin with r = 1/2, c = a = 1, afs %d: DPM-Solver-2 to %.1e\n", amed_plugin_names[plugin], afs,
                   err);
        }
}

/* dpmpp with r = 1/2, c = a = 1 on a logsnr schedule of N points against solvers.c's dpmpp3m on
 * the logsnr schedule of 2N - 1 points. */
static void test_dpmpp_equivalence(const Model *tm)
{
    enum { N = 4 };
    for (int afs = 0; afs <= 1; afs++) {
        SolverOpts o = solver_opts_default();
        o.schedule = SCHEDULE_LOGSNR;
        o.steps = 2 * N - 1;
        o.afs = afs;
        o.denoise_to_zero = false;
        double err = forced_vs_solver(tm, AMED_PLUGIN_DPMPP, N, 3, SOLVER_DPMPP3M, &o);
        CHECK(err < 2e-5, "dpmpp plugin, afs %d: r = 1/2, c = a = 1 differs from dpmpp3m on %d logsnr points by %.2e",
              afs, 2 * N - 1, err);
        printf("dpmpp plugin with r = 1/2, c = a = 1, afs %d: dpmpp3m on %d logsnr points to %.1e\n", afs, 2 * N - 1,
               err);
    }
}

/* ---- (c) ---- */

typedef struct StepCase {
    const AmedTeacher *T;
    AmedSettings st;
    float x[B * S * S], y[B * S * S], hist[B * S * S], hist2[B * S * S];
    double t_cur, t_next;
} StepCase;

/* The loss of one step with per-sample r, c, a (their gradients into g when not NULL). */
static double step_loss(Ctx *c, const StepCase *k, const float *rca, float *g)
{
    ctx_reset(c);
    AmedTraj tr;
    amed_traj_init(&tr, B, 1, S, S);
    if (k->st.plugin == AMED_PLUGIN_IPNDM) {
        memcpy(tr.hist[0], k->hist, sizeof k->hist);
        tr.nhist = 1;
    }
    if (k->st.plugin == AMED_PLUGIN_DPMPP) {
        /* After one step of N = 4 (7 points): sub-steps 3 and 4, both third order, over the data
         * predictions at s_0 (per sample) and t_0 = 4. */
        const float s0[B] = {2.9f, 3.3f}, t0[B] = {4, 4};
        memcpy(tr.hist[0], k->hist, sizeof k->hist);
        memcpy(tr.hist[1], k->hist2, sizeof k->hist2);
        memcpy(tr.htime[0], s0, sizeof s0);
        memcpy(tr.htime[1], t0, sizeof t0);
        tr.nhist = 2;
        tr.steps = 1;
    }
    Tensor *x = tensor_wrap(c, (float *)k->x, NULL, 4, SHAPE(B, 1, S, S), false);
    Tensor *p[3];
    for (int j = 0; j < 3; j++) p[j] = per_sample(c, rca + j * B, g != NULL);
    AmedBegin b = amed_step_begin(c, k->T, x, k->t_cur, false);
    Tensor *x1 = amed_step_end(c, k->T, &k->st, &tr, x, b.d, p[0], p[1], p[2], k->t_cur, k->t_next);
    Tensor *y = tensor_wrap(c, (float *)k->y, NULL, 4, SHAPE(B, 1, S, S), false);
    Tensor *loss = op_scale(c, op_mean(c, op_mse(c, x1, y)), (float)(S * S), 0);
    if (g) {
        tape_backward(c, loss, NULL);
        for (int j = 0; j < 3; j++) memcpy(g + j * B, p[j]->grad, B * sizeof(float));
    }
    amed_traj_free(&tr);
    return loss->data[0];
}

static void test_gradients_rca(const Model *tm)
{
    AmedTeacher T = {&tm->net, tm->pre, tm->w};
    StepCase *k = calloc(1, sizeof *k);
    k->T = &T;
    k->t_cur = 2.0, k->t_next = 0.5;
    latents(k->x, k->t_cur, 2);
    rng_normal(&(Rng){.seed = 3, .stream = 6}, k->y, B, 0, S * S);
    rng_normal(&(Rng){.seed = 4, .stream = 6}, k->hist, B, 0, S * S);
    rng_normal(&(Rng){.seed = 5, .stream = 6}, k->hist2, B, 0, S * S);
    for (int e = 0; e < B * S * S; e++) k->hist[e] *= 0.3f, k->hist2[e] *= 0.3f;   /* data predictions within [-1, 1] */
    Ctx c;
    ctx_init(&c, 16u << 20);
    for (int plugin = 0; plugin < AMED_PLUGIN_COUNT; plugin++) {
        k->st = (AmedSettings){.plugin = (AmedPlugin)plugin, .N = 4, .max_order = 3};
        const float rca[3 * B] = {0.3f, 0.7f, 1.004f, 0.993f, 1.1f, 0.85f};
        float g[3 * B];
        step_loss(&c, k, rca, g);
        double worst = 0;
        const char *names = "rca";
        for (int i = 0; i < 3 * B; i++) {
            const double h = 2e-3;
            float p[3 * B];
            memcpy(p, rca, sizeof p);
            p[i] = rca[i] + (float)h;
            double lp = step_loss(&c, k, p, NULL);
            p[i] = rca[i] - (float)h;
            double lm = step_loss(&c, k, p, NULL);
            double fd = (lp - lm) / (2 * h), err = fabs(fd - g[i]) / fmax(fabs(fd), 1e-3);
            worst = fmax(worst, err);
            CHECK(err < 1e-2, "%s plugin: dL/d%c of sample %d: tape %.6g, finite differences %.6g",
                  amed_plugin_names[plugin], names[i / B], i % B, (double)g[i], fd);
        }
        printf("%s plugin: dL/dr, dL/dc, dL/da match finite differences to %.1e\n", amed_plugin_names[plugin], worst);
    }
    ctx_free(&c);
    free(k);
}

/* The loss of a whole AMED step with predictor weights w (gradients into g when not NULL). */
static double mlp_step_loss(Ctx *c, const StepCase *k, const AmedMLP *m, float *w, float *g)
{
    ctx_reset(c);
    AmedTraj tr;
    amed_traj_init(&tr, B, 1, S, S);
    WeightSet ws = {w, g};
    double t[2] = {k->t_cur, k->t_next};
    Tensor *x = tensor_wrap(c, (float *)k->x, NULL, 4, SHAPE(B, 1, S, S), false);
    Tensor *x1 = amed_step(c, k->T, &k->st, m, &ws, &tr, x, t, 0);
    Tensor *y = tensor_wrap(c, (float *)k->y, NULL, 4, SHAPE(B, 1, S, S), false);
    Tensor *loss = op_scale(c, op_mean(c, op_mse(c, x1, y)), (float)(S * S), 0);
    if (g) tape_backward(c, loss, NULL);
    amed_traj_free(&tr);
    return loss->data[0];
}

static void test_gradients_weights(const Model *tm)
{
    AmedTeacher T = {&tm->net, tm->pre, tm->w};
    StepCase *k = calloc(1, sizeof *k);
    k->T = &T;
    k->t_cur = 2.0, k->t_next = 0.5;
    k->st = (AmedSettings){.plugin = AMED_PLUGIN_SOLVER, .max_order = 4};
    latents(k->x, k->t_cur, 2);
    rng_normal(&(Rng){.seed = 3, .stream = 6}, k->y, B, 0, S * S);
    MlpConfig mc = mlp_config_default();
    mc.scale_dir = 0.1f, mc.scale_time = 0.2f;
    AmedMLP m;
    CHECK(mlp_init(&m, &mc) == 0, "mlp_init: %s", cm_errmsg());
    float *w = params_buffer(&m.ps), *g = params_buffer(&m.ps);
    mlp_randomize(&m, w, 5);
    Ctx c;
    ctx_init(&c, 16u << 20);
    mlp_step_loss(&c, k, &m, w, g);
    const char *names[] = {"fc_r.weight", "fc_r.bias", "fc_scale_dir.bias", "fc_scale_time.weight", "enc_layer1.weight",
                           "enc_layer0.weight", "map_layer0.weight"};
    double worst = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(names); i++) {
        int p = params_find(&m.ps, names[i]);
        CHECK(p >= 0, "no parameter %s", names[i]);
        /* The entry of the tensor with the largest gradient: its finite difference stands well above
         * the float32 rounding of the loss. */
        size_t at = m.ps.items[p].offset;
        for (size_t j = at; j < m.ps.items[p].offset + m.ps.items[p].n; j++)
            if (fabsf(g[j]) > fabsf(g[at])) at = j;
        const double h = 1e-2;
        float keep = w[at];
        w[at] = keep + (float)h;
        double lp = mlp_step_loss(&c, k, &m, w, NULL);
        w[at] = keep - (float)h;
        double lm = mlp_step_loss(&c, k, &m, w, NULL);
        w[at] = keep;
        double fd = (lp - lm) / (2 * h), err = fabs(fd - g[at]) / fmax(fabs(fd), 1e-3);
        worst = fmax(worst, err);
        CHECK(err < 2e-2, "dL/d%s[%zu]: tape %.6g, finite differences %.6g", names[i], at - m.ps.items[p].offset,
              (double)g[at], fd);
    }
    printf("predictor weights (%zu tensors): the loss gradient matches finite differences to %.1e\n",
           CM_ARRAY_LEN(names), worst);
    ctx_free(&c);
    free(w);
    free(g);
    mlp_free(&m);
    free(k);
}

/* ---- (d) ---- */

static const char *AMED_CFG =
    "[experiment]\nmethod = amed\nseed = 4\nout_dir = " DIR "\n"
    "[data]\ndataset = mnist\npath = " DIR "/data\npad_to = 32\n"
    "[train]\nbatch_size = 3\nlr = 0.005\nema =\nthreads = 2\nlog_every = 1\ncheckpoint_every = 0\nsample_every = 0\n"
    "[sample]\nn = 2\n"
    "[amed]\nteacher = " DIR "/teacher/step_00000000.h5\nstudent = amed\nteacher_solver = heun\nN = 3\nM = 1\n"
    "afs = true\nschedule = time_uniform\nrho = 1\nscale_dir = 0.01\nscale_time = 0.2\n";

static void write_floats(const char *path, const float *v, size_t n)
{
    FILE *f = fopen(path, "wb");
    CM_ASSERT(f && fwrite(v, sizeof(float), n, f) == n, "cannot write %s", path);
    fclose(f);
}

static void test_twin(void)
{
    Config cfg;
    CHECK(config_from_string(&cfg, AMED_CFG, "amed") == 0, "amed config: %s", cm_errmsg());
    const Method *me = method_find(CFG_METHOD_AMED);
    void *st = calloc(1, me->state_size);
    MethodEnv env = {&cfg, NULL, 1, S, S};
    const ParamSet *ps;
    if (me->setup(st, &env, &ps) != 0) {
        CHECK(0, "amed setup: %s", cm_errmsg());
        return;
    }
    CHECK(me->param_count(st) == 8971, "%zu predictor parameters with three heads", me->param_count(st));
    float *w = params_buffer(ps), *g = params_buffer(ps), *dummy = calloc(3 * S * S, sizeof(float));
    me->start(st, w);
    int labels[3] = {0};
    const int nb = cfg.train.batch_size;
    Batch b = batch_make(dummy, labels, nb, nb, 0, 1, S, S, (uint64_t)cfg.experiment.seed, 0);
    float z[3 * S * S];
    rng_normal(&b.noise, z, nb, 0, S * S);
    write_floats(DIR "/twin_w.bin", w, ps->total);
    write_floats(DIR "/twin_z.bin", z, (size_t)nb * S * S);
    FILE *man = fopen(DIR "/twin_params.txt", "w");
    for (int i = 0; i < ps->count; i++) fprintf(man, "%s %zu %zu\n", ps->items[i].name, ps->items[i].offset, ps->items[i].n);
    fclose(man);
    Ctx c;
    ctx_init(&c, 16u << 20);
    float *grads = calloc(2 * ps->total, sizeof(float));
    float losses[2];
    for (int k = 0; k < 2; k++) {
        ctx_reset(&c);
        memset(g, 0, ps->total * sizeof(float));
        WeightSet ws = {w, g};
        b.substep = k;
        losses[k] = (float)me->loss(st, &c, &ws, &b);
        memcpy(grads + k * ps->total, g, ps->total * sizeof(float));
    }
    ctx_free(&c);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s %s %s", torch_python, twin_script, DIR "/teacher/step_00000000.h5", DIR);
    CHECK(system(cmd) == 0, "the twin failed: %s", cmd);
    size_t len = 0;
    char *raw = fixture_read_file(DIR "/twin_out.bin", &len);
    CHECK(raw && len == (2 + 2 * ps->total) * sizeof(float), "twin output: %zu bytes", len);
    if (raw && len == (2 + 2 * ps->total) * sizeof(float)) {
        const float *tw = (const float *)raw;
        for (int k = 0; k < 2; k++) {
            double el = fabs(losses[k] - tw[k]) / fabs(tw[k]);
            double eg = rel_error(grads + k * ps->total, tw + 2 + k * ps->total, ps->total, 1e-6);
            CHECK(el < 1e-4 && eg < 1e-4, "training substep %d: loss %.7g vs twin %.7g (%.1e), gradients %.1e", k,
                  losses[k], tw[k], el, eg);
            printf("training substep %d%s: loss %.6g, twin %.6g (rel %.1e); predictor gradients rel %.1e\n", k,
                   k == 0 ? " (AFS)" : "", losses[k], tw[k], el, eg);
        }
    }
    free(raw);
    free(grads);
    free(dummy);
    free(w);
    free(g);
    me->free(st);
    free(st);
}

/* ---- (e), (f) ---- */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CM_ASSERT(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void test_cli(void)
{
    /* N = 2: one substep per batch; two batches. */
    write_file(DIR "/amed.ini", AMED_CFG);
    char *train[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=pred", "--set", "amed.N=2",
                     "--set", "train.iterations=2", NULL};
    CHECK(run(train, NULL) == 0, "cmlab train of a predictor failed (" DIR "/log.txt)");
    const char *pred = DIR "/pred/ckpt/step_00000002.h5";
    char *ok[] = {(char *)cmlab, "sample", DIR "/teacher/step_00000000.h5", "--predictor", (char *)pred, "--n", "2",
                  "--out", DIR "/p.png", NULL};
    CHECK(run(ok, NULL) == 0, "cmlab sample --predictor with its teacher failed (" DIR "/log.txt)");
    unlink(DIR "/err.txt");
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(DIR "/err.txt", "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(127);
        execv(cmlab, (char *[]){(char *)cmlab, "sample", DIR "/teacher2/step_00000000.h5", "--predictor", (char *)pred,
                                "--n", "2", "--out", DIR "/q.png", NULL});
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    char *err = fixture_read_file(DIR "/err.txt", NULL);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a predictor of another teacher: exit %d, want 2",
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    CHECK(err && strstr(err, pred) && strstr(err, DIR "/teacher2/step_00000000.h5"),
          "the refusal does not name both files: %s", err ? err : "(none)");
    printf("a predictor with another teacher: exit 2, %s", err ? err : "");
    free(err);

    /* (f): the first update's gradient made NaN. */
    char *nan_run[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=nan", "--set", "amed.N=2",
                       "--set", "train.iterations=2", NULL};
    CHECK(run(nan_run, "CMLAB_TEST_OUTLIER=1:nan") == 0, "a skipped non-finite update stopped the run");
    char *m = fixture_read_file(DIR "/nan/metrics.jsonl", NULL);
    CHECK(m && strstr(m, "\"step\": 1,") && strstr(m, "\"nonfinite_skipped\": 1"),
          "metrics.jsonl does not count the skipped update:\n%s", m ? m : "(none)");
    free(m);
    char *stop_run[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=nan_stop", "--set",
                        "amed.N=2", "--set", "train.iterations=2", "--set", "amed.nonfinite_limit=0", NULL};
    CHECK(run(stop_run, "CMLAB_TEST_OUTLIER=1:nan") == 1, "amed.nonfinite_limit = 0: a non-finite update must stop "
                                                          "the run with exit 1");
    printf("a non-finite update: skipped and counted; past amed.nonfinite_limit the run stops with exit 1\n");

    /* One skipped update at step 0, SIGTERM before step 1 (the run saves step 2), a resume with a
     * second skipped update at step 3: 2 > amed.nonfinite_limit = 1 across the two processes. */
    char *first[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=nan_resume", "--set",
                     "amed.N=2", "--set", "train.iterations=5", "--set", "amed.nonfinite_limit=1", NULL};
    char *again[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=nan_resume", "--set",
                     "amed.N=2", "--set", "train.iterations=5", "--set", "amed.nonfinite_limit=1", "--resume", NULL};
    setenv("CMLAB_TEST_RAISE", "0:1:15", 1);
    int rc = run(first, "CMLAB_TEST_OUTLIER=1:nan");
    unsetenv("CMLAB_TEST_RAISE");
    struct stat sb;
    CHECK(rc == 0 && stat(DIR "/nan_resume/ckpt/step_00000002.h5", &sb) == 0,
          "a run stopped by SIGTERM after a skipped update: exit %d, no checkpoint of step 2", rc);
    char *count = ckpt_read_attr(DIR "/nan_resume/ckpt/step_00000002.h5", "nonfinite_skipped");
    CHECK(count && !strcmp(count, "1"), "the checkpoint's nonfinite_skipped is %s, want 1", count ? count : "missing");
    free(count);
    unlink(DIR "/err.txt");
    rc = fixture_run(again, DIR "/log.txt", DIR "/err.txt", "CMLAB_TEST_OUTLIER=4:nan");
    char *log = fixture_read_file(DIR "/err.txt", NULL);
    CHECK(rc == 1 && log && strstr(log, "(2 so far in this run)") && strstr(log, "more than 1 non-finite updates"),
          "the resumed run with a second non-finite update: exit %d, want 1 naming 2 skipped updates:\n%s", rc,
          log ? log : "(none)");
    printf("resumed after 1 skipped update, a second one stops the run (amed.nonfinite_limit = 1): exit %d, %s", rc,
           log && strstr(log, "stopping") ? strstr(log, "stopping") : "\n");
    free(log);
}

/* ---- (g) ---- */

/* Tile i of an 8-bit gray grid of S x S images, cols per row, 2-pixel borders (image_write_grid),
 * into tile [S*S]. */
static void grid_tile(const uint8_t *pix, int gw, int cols, int i, uint8_t *tile)
{
    int y0 = 2 + (i / cols) * (S + 2), x0 = 2 + (i % cols) * (S + 2);
    for (int y = 0; y < S; y++) memcpy(tile + y * S, pix + (size_t)(y0 + y) * gw + x0, S);
}

/* How many of the n tiles' pixels differ between grids a (cols_a per row) and b (cols_b). */
static long grid_diff(const char *a, int cols_a, const char *b, int cols_b, int n)
{
    uint8_t *pa = NULL, *pb = NULL, ta[S * S], tb[S * S];
    int wa, ha, ca, wb, hb, cb;
    if (image_read_png(a, &pa, &wa, &ha, &ca) != 0 || image_read_png(b, &pb, &wb, &hb, &cb) != 0) {
        CHECK(0, "grids: %s", cm_errmsg());
        free(pa);
        return -1;
    }
    CHECK(ca == 1 && cb == 1 && wa == cols_a * (S + 2) + 2 && wb == cols_b * (S + 2) + 2, "grid sizes %dx%d, %dx%d",
          wa, ha, wb, hb);
    long diff = 0;
    for (int i = 0; i < n; i++) {
        grid_tile(pa, wa, cols_a, i, ta);
        grid_tile(pb, wb, cols_b, i, tb);
        for (int k = 0; k < S * S; k++) diff += ta[k] != tb[k];
    }
    free(pa);
    free(pb);
    return diff;
}

static void test_training_samples(void)
{
    char *train[] = {(char *)cmlab, "train", DIR "/amed.ini", "--set", "experiment.name=pred3", "--set", "amed.N=3",
                     "--set", "train.iterations=1", "--set", "sample.n=4", NULL};
    CHECK(run(train, NULL) == 0, "cmlab train of an N = 3 predictor failed (" DIR "/log.txt)");
    const char *pred = DIR "/pred3/ckpt/step_00000001.h5", *trained = DIR "/pred3/samples/step_00000001.png";
    /* AMED_CFG's experiment.seed is 4. */
    char *same[] = {(char *)cmlab, "sample", DIR "/teacher/step_00000000.h5", "--predictor", (char *)pred, "--n", "4",
                    "--seed", "4", "--out", DIR "/same.png", NULL};
    char *other[] = {(char *)cmlab, "sample", DIR "/teacher/step_00000000.h5", "--predictor", (char *)pred, "--n", "4",
                     "--seed", "5", "--out", DIR "/other.png", NULL};
    CHECK(run(same, NULL) == 0 && run(other, NULL) == 0, "cmlab sample --predictor failed (" DIR "/log.txt)");
    /* The trainer's grid has min(8, 4) tiles per row, cmlab sample's ceil(sqrt(4)). */
    long d_same = grid_diff(trained, 4, DIR "/same.png", 2, 4), d_other = grid_diff(trained, 4, DIR "/other.png", 2, 4);
    CHECK(d_same == 0, "cmlab sample --predictor --seed 4 differs from the trainer's samples in %ld pixels", d_same);
    CHECK(d_other > S * S, "another seed changes only %ld pixels: the comparison cannot tell samples apart", d_other);
    printf("the trainer's 4 samples and cmlab sample --predictor --seed 4: %ld pixels differ (seed 5: %ld of %d)\n",
           d_same, d_other, 4 * S * S);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: test_amed TORCH_PYTHON AMED_STEP_PY CMLAB\n");
        return 2;
    }
    torch_python = argv[1], twin_script = argv[2], cmlab = argv[3];
    cm_set_threads(2);
    CHECK(system("rm -rf " DIR " && mkdir -p " DIR "/data") == 0, "cannot make " DIR);
    write_data();
    write_teacher("teacher", 3);
    write_teacher("teacher2", 8);
    Model tm;
    Config tcfg;
    CHECK(model_load(&tm, &tcfg, DIR "/teacher/step_00000000.h5", NULL) == 0, "teacher: %s", cm_errmsg());
    test_param_counts();
    test_dpm2_equivalence(&tm);
    test_dpmpp_equivalence(&tm);
    test_gradients_rca(&tm);
    test_gradients_weights(&tm);
    test_twin();
    test_cli();
    test_training_samples();
    model_free(&tm);
    return test_summary("amed");
}
