/* test_bcm.c BCM_STEP.h5 CMLAB: method = bcm's training (src/train/bcm.c, methods/bcm.c;
 * reference/bcm.md §2-4, issue 14).
 *
 *   1. One training step against its PyTorch twin (tests/torch/bcm_step.py, whose docstring has
 *      the fixture layout): bcm_step_loss with the twin's weights, x0, z, t, t', u and dropout Rng;
 *      the loss and every parameter gradient within 1e-4 relative. The twin's target is a detached
 *      copy of the online module, so a step whose target passes let gradient into the weights
 *      would differ: the fixture also holds that leaking step's gradients (grad_leak), and the test
 *      checks that they differ from ours far beyond the tolerance (so this comparison can fail).
 *   2. f(x, t, t) == x bit for bit at several t, for a random two-time network.
 *   3. Fine-tuning start: a CT checkpoint with random weights (its output layer at full scale, so
 *      F matters) is written; method = bcm's setup and start (the trainer's path) with bcm.init
 *      = that file give the start weights; then at t in {0.002, 0.01, 0.3, 1.2, 5, 80}, for
 *      x = x0 + t z (x0 ~ N(0, 0.25), z ~ N(0, 1)),
 *      |f_bcm(x, t) - f_cm(x, t)| <= |c_skip_bcm(t, eps) - c_skip_cm(t)| |x| + slack elementwise,
 *      c_skip from the formulas here (bcm.md §2.1): the U-Net outputs F agree exactly (align =
 *      [I | 0] adds exact zeros), c_out is the same expression, and each side is a float32
 *      c_skip x + c_out F with its coefficients rounded to float32: a few roundings of 2^-24
 *      relative on |x| and |c_out F| <= |f_cm| + |x|, so slack = 1e-6 (|x| + |f_cm|) (~17 ulps).
 *      The source's c_out F must exceed 0.05 somewhere at t >= 0.3 (else the bound says nothing).
 *   4. The time sampler (bcm_draw_times): 200k draws at N = 11 and N = 321: i never the top
 *      interval, j never i + 1 (u != t), u never sigma_max; the frequencies of i and of j follow
 *      the masses (computed here from erf) within 5 standard errors.
 *   5. Through the cmlab binary, on 64 generated 16x16 PNGs: a 2-step CT source run; BCM
 *      fine-tuned from it (dropout, RAdam, N = 11) for 6 steps straight and 3 + resume + 3 give
 *      byte-identical online and EMA weights; BCM from scratch (doubling curriculum) runs.
 *   6. Bad inputs exit 2 naming the problem: bcm.init of another architecture (model.channels),
 *      a bcm.init that is not a consistency model (a BCM checkpoint), a missing bcm.init,
 *      bcm.N = 2, a negative bcm.huber_c, an unknown [bcm] key, a curriculum that starts at
 *      N = 2 (ct.s0 = 1).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "io/checkpoint.h"
#include "train/bcm.h"
#include "train/ct_schedule.h"
#include "train/method.h"
#include "train/model.h"

#define TOL 1e-4             /* relative error allowed against the float64 reference */
#define REL_FLOOR 1e-6       /* rel_error's floor */
#define DIR "bcm_runs"
#define S 16                 /* image side */
#define NDATA 64

static const char *cmlab;

/* ---- 1. the step against its twin ---- */

/* The worst relative error of got's parameters against /<group>/<set>/<name>. */
static double worst_param_error(Fixture *f, const char *group, const char *set, const ParamSet *ps, const float *got,
                                const char **worst_name)
{
    char dir[256];
    snprintf(dir, sizeof dir, "/%s/%s", group, set);
    return fixture_worst_param_error(f, dir, ps, got, REL_FLOOR, worst_name);
}

static void test_step(Ctx *c, Fixture *f, const char *group)
{
    char obj[128], path[256];
    snprintf(obj, sizeof obj, "/%s", group);
    UNetConfig cfg;
    fixture_unet_config(f, obj, &cfg);
    UNet net;
    int rc = unet_init(&net, &cfg);
    CHECK(rc == 0 && cfg.two_times, "%s: unet_init: %s", group, cm_errmsg());
    if (rc != 0) return;
    CHECK(unet_param_count(&net) == (size_t)fixture_attr_int(f, obj, "param_count", -1), "%s: parameter count", group);
    size_t n = net.ps.total;
    float *w = params_buffer(&net.ps), *g = params_buffer(&net.ps), *w_before = params_buffer(&net.ps);
    snprintf(path, sizeof path, "/%s/weights/online", group);
    fixture_load_weights(f, path, &net.ps, w);
    memcpy(w_before, w, n * sizeof(float));
    memset(g, 0, n * sizeof(float));

    int ndim, shape[4];
    snprintf(path, sizeof path, "/%s/x0", group);
    float *x0 = fixture_read(f, path, &ndim, shape);
    float *arr[5];
    const char *names[5] = {"z", "t", "t_prev", "u", "loss"};
    for (int k = 0; k < 5; k++) {
        snprintf(path, sizeof path, "/%s/%s", group, names[k]);
        arr[k] = fixture_read(f, path, NULL, NULL);
    }
    BcmBatch bt = {x0, arr[0], arr[1], arr[2], arr[3], shape[0], shape[1], shape[2], shape[3], 0};
    CHECK(ndim == 4 && bt.B == fixture_attr_int(f, obj, "B", -1) && bt.H == cfg.img_h, "%s: x0's shape", group);
    PrecondParams pre = {PRECOND_BCM, fixture_attr_double(f, obj, "sigma_data", -1), fixture_attr_double(f, obj, "eps", -1)};
    Rng drop = {.seed = (uint64_t)fixture_attr_int(f, obj, "dropout_seed", 0),
                .stream = (uint32_t)fixture_attr_int(f, obj, "dropout_stream", 0),
                .step = (uint32_t)fixture_attr_int(f, obj, "dropout_step", 0)};
    ctx_reset(c);
    WeightSet online = {w, g};
    double l = bcm_step_loss(c, &net, &pre, &online, w, &bt, fixture_attr_double(f, obj, "huber_c", -1),
                             cfg.dropout > 0 ? &drop : NULL);
    float lf = (float)l;
    double e = rel_error(&lf, arr[4], 1, REL_FLOOR);
    printf("%-12s loss %.6e (PyTorch %.6e) rel error %.2e\n", group, l, arr[4][0], e);
    CHECK(e <= TOL, "%s: loss %.8e, PyTorch %.8e, rel error %.3e", group, l, arr[4][0], e);
    const char *wn = "", *ln = "";
    double eg = worst_param_error(f, group, "grad", &net.ps, g, &wn);
    printf("%-12s worst gradient rel error %.2e (%s)\n", group, eg, wn);
    CHECK(eg <= TOL, "%s: gradient of %s rel error %.3e > %.0e", group, wn, eg, TOL);
    double el = worst_param_error(f, group, "grad_leak", &net.ps, g, &ln);
    printf("%-12s against a step that lets gradient into the target's weights: worst rel error %.2e (%s)\n", group,
           el, ln);
    CHECK(el > 100 * TOL, "%s: the gradients match a step whose target passes leak into the weights (%.3e)", group,
          el);
    CHECK(memcmp(w, w_before, n * sizeof(float)) == 0, "%s: the step changed the weights", group);

    /* 2. f(x, t, t) == x: c_skip(t, t) = 1 and c_out(t, t) = 0 exactly */
    const float ts[] = {0.002f, 0.0173f, 0.5f, 1.2f, 17.0f, 80.0f};
    int B = bt.B;
    size_t dim = (size_t)bt.C * bt.H * bt.W;
    float tt[8];
    bool same = true;
    for (size_t k = 0; k < CM_ARRAY_LEN(ts); k++) {
        for (int b = 0; b < B; b++) tt[b] = ts[k] * (1 + 0.1f * b);
        ctx_reset(c);
        ctx_no_grad_begin(c);
        Tensor *T = tensor_wrap(c, tt, NULL, 1, SHAPE(B), false);
        Tensor *y = precond_forward(c, &pre, &net, &(WeightSet){w, NULL}, tensor_wrap(c, x0, NULL, 4, shape, false), T,
                                    T, cfg.dropout > 0 ? &drop : NULL, 0, NULL);
        ctx_no_grad_end(c);
        same &= memcmp(y->data, x0, (size_t)B * dim * sizeof(float)) == 0;
    }
    CHECK(same, "%s: f(x, t, t) != x", group);
    printf("%-12s f(x, t, t) == x bit for bit at t = 0.002 .. 88\n", group);

    free(x0);
    for (int k = 0; k < 5; k++) free(arr[k]);
    free(w), free(g), free(w_before);
    unet_free(&net);
}

/* ---- 3. the fine-tuning start ---- */

/* A resolved configuration: BASE_KEYS plus `extra` (one key=value per element, NULL-ended). */
static void make_config(Config *cfg, const char *const *extra)
{
    static const char *const base[] = {
        "experiment.seed=5", "experiment.out_dir=" DIR, "data.dataset=folder", "data.path=" DIR "/data",
        "model.channels=8", "model.channel_mult=1,2", "model.num_blocks=1", "model.mid_attn=true",
        "model.dropout=0.1",
    };
    config_defaults(cfg);
    CM_ASSERT(config_set_list(cfg, base, (int)CM_ARRAY_LEN(base)) == 0, "%s", cm_errmsg());
    for (; *extra; extra++) CM_ASSERT(config_set(cfg, *extra) == 0, "%s", cm_errmsg());
}

/* DIR/src/step_00000000.h5: a method = ct checkpoint whose online weights are all random at full
 * scale (matrices N(0, 1/fan_in), norms 1 + N(0, 0.3^2), biases N(0, 0.3^2)). */
static void write_source(const char *path_out, size_t len)
{
    Config cfg;
    make_config(&cfg, (const char *[]){"experiment.method=ct", NULL});
    UNetConfig u;
    model_unet_config(&cfg, 1, S, S, &u);
    UNet net;
    CM_ASSERT(unet_init(&net, &u) == 0, "%s", cm_errmsg());
    float *w = params_buffer(&net.ps), *r = cm_malloc(net.ps.total * sizeof(float));
    rng_normal(&(Rng){.seed = 11, .stream = 3}, r, 1, 0, net.ps.total);
    for (int i = 0; i < net.ps.count; i++) {
        const Param *p = &net.ps.items[i];
        bool norm = strstr(p->name, "norm") && strstr(p->name, ".weight");
        for (size_t k = 0; k < p->n; k++) {
            float v = r[p->offset + k];
            w[p->offset + k] = p->ndim > 1 ? v / sqrtf((float)(p->n / (size_t)p->shape[0])) : norm ? 1 + 0.3f * v : 0.3f * v;
        }
    }
    char *text = config_to_string(&cfg);
    CkptState s = {.ps = &net.ps, .method = "ct", .config = text, .seed = 5, .world_size = 1};
    ckpt_add_weights(&s, "online", w);
    CM_ASSERT(ckpt_save(DIR "/src", &s, (char *)path_out, len) == 0, "%s", cm_errmsg());
    free(text), free(w), free(r);
    unet_free(&net);
}

static void test_finetune_start(Ctx *c, const char *src)
{
    char init[300];
    snprintf(init, sizeof init, "bcm.init=%s", src);
    Config cfg;
    make_config(&cfg, (const char *[]){"experiment.method=bcm", init, "bcm.init_weights=online", "bcm.N=11", NULL});
    const Method *method = method_find(CFG_METHOD_BCM);
    CHECK(method && method->precond == PRECOND_BCM && method->model == MODEL_CONSISTENCY, "method = bcm's record");
    if (!method) return;
    Dataset data = {.c = 1, .h = S, .w = S, .source = "generated"};
    MethodEnv env = {&cfg, &data, 1, S, S};
    void *st = calloc(1, method->state_size);
    const ParamSet *ps;
    int rc = method->setup(st, &env, &ps);
    CHECK(rc == 0, "bcm setup with bcm.init: %s", cm_errmsg());
    Model cm;
    Config scfg;
    rc |= model_load(&cm, &scfg, src, "online");
    CHECK(rc == 0 && cm.pre.kind == PRECOND_CM, "cannot load the source: %s", cm_errmsg());
    if (rc == 0) {
        float *w = params_buffer(ps);
        params_randomize(ps, w, 5);
        method->start(st, w);
        const UNet *net = method->unet(st);
        PrecondParams pre = model_precond(&cfg);
        const int B = 4;
        size_t dim = S * S;
        float *r = cm_malloc(3 * B * dim * sizeof(float)), *x = r + 2 * B * dim, t[4];
        rng_normal(&(Rng){.seed = 12}, r, B, 0, 2 * dim);
        const double times[] = {0.002, 0.01, 0.3, 1.2, 5, 80}, sd = 0.5, eps = 0.002;
        double worst_ratio = 0, worst_diff80 = 0;
        bool ok = true;
        for (size_t k = 0; k < CM_ARRAY_LEN(times); k++) {
            double tk = times[k];
            for (int b = 0; b < B; b++) t[b] = (float)tk;
            for (size_t i = 0; i < B * dim; i++) x[i] = (float)(0.5 * r[2 * i] + tk * r[2 * i + 1]);   /* x0 + t z */
            double dskip = fabs((tk * eps + sd * sd) / (tk * tk + sd * sd) - sd * sd / ((tk - eps) * (tk - eps) + sd * sd));
            ctx_reset(c);
            ctx_no_grad_begin(c);
            Tensor *X = tensor_wrap(c, x, NULL, 4, SHAPE(B, 1, S, S), false);
            Tensor *fb = precond_apply(c, &pre, net, &(WeightSet){w, NULL}, X, t, NULL, 0);
            Tensor *fc = precond_apply(c, &cm.pre, &cm.net, &(WeightSet){cm.w, NULL}, X, t, NULL, 0);
            ctx_no_grad_end(c);
            double cout_max = 0;
            for (size_t i = 0; i < B * dim; i++) {
                double diff = fabs((double)fb->data[i] - fc->data[i]), ax = fabs(x[i]);
                double bound = dskip * ax + 1e-6 * (ax + fabs(fc->data[i]));
                ok &= diff <= bound;
                worst_ratio = fmax(worst_ratio, diff / bound);
                cout_max = fmax(cout_max, fabs(fc->data[i] - x[i] * sd * sd / ((tk - eps) * (tk - eps) + sd * sd)));
                if (tk == 80) worst_diff80 = fmax(worst_diff80, diff);
            }
            printf("finetune     t = %-6g |c_skip_bcm - c_skip_cm| = %.3e, max |c_out F| of the source %.3f\n", tk,
                   dskip, cout_max);
            CHECK(tk < 0.3 || cout_max > 0.05, "t = %g: the source's c_out F is negligible (%.3e): the test would be vacuous", tk,
                  cout_max);
        }
        printf("finetune     |f_bcm - f_cm| within the c_skip bound everywhere: worst ratio to the bound %.3f, "
               "max difference at t = 80 %.3e\n", worst_ratio, worst_diff80);
        CHECK(ok, "the fine-tuned start differs from its source beyond the c_skip bound (worst ratio %.3f)",
              worst_ratio);
        free(r), free(w);
    }
    model_free(&cm);
    method->free(st);
    free(st);
}

/* ---- 4. the time sampler ---- */

static void test_sampler(int N)
{
    const int n = 200000;
    double *sigma = cm_malloc(3 * (size_t)N * sizeof(double)), *p = sigma + N, *scratch = p + N;
    ct_sigmas(N, 0.002, 80, 7, sigma);
    /* the masses from erf, independently of ict_index_probs */
    double tot = 0;
    for (int i = 0; i < N - 1; i++)
        tot += p[i] = erf((log(sigma[i + 1]) + 1.1) / (2 * M_SQRT2)) - erf((log(sigma[i]) + 1.1) / (2 * M_SQRT2));
    for (int i = 0; i < N - 1; i++) p[i] /= tot;
    float *v = cm_malloc(2 * (size_t)n * sizeof(float)), *t = cm_malloc(3 * (size_t)n * sizeof(float));
    float *tp = t + n, *u = tp + n;
    int *idx = cm_malloc(2 * (size_t)n * sizeof(int));
    rng_uniform(&(Rng){.seed = 99, .stream = 5}, v, n, 0, 2);
    bcm_draw_times(N, sigma, p, v, n, t, tp, u, idx, scratch);
    double *ci = calloc((size_t)N, sizeof(double)), *cj = calloc((size_t)N, sizeof(double));
    bool ok = true;
    for (int b = 0; b < n; b++) {
        int i = idx[2 * b], j = idx[2 * b + 1];
        ok &= i >= 0 && i <= N - 3 && j >= 0 && j <= N - 2 && j != i + 1 && u[b] != t[b] &&
              t[b] == (float)sigma[i + 1] && tp[b] == (float)sigma[i] && u[b] == (float)sigma[j] && t[b] < 80 && u[b] < 80;
        ci[i]++, cj[j]++;
    }
    CHECK(ok, "N = %d: a draw with i in the top interval, j = i + 1, u == t or u == sigma_max", N);
    /* expected: P(i) = p_i / (1 - p_{N-2}); P(j) = sum_i P(i) p_j / (1 - p_{i+1}) [j != i+1] */
    double worst = 0;
    for (int j = 0; j < N - 1; j++) {
        double pi = j <= N - 3 ? p[j] / (1 - p[N - 2]) : 0, pj = 0;
        for (int i = 0; i <= N - 3; i++)
            if (j != i + 1) pj += p[i] / (1 - p[N - 2]) * p[j] / (1 - p[i + 1]);
        double zi = fabs(ci[j] / n - pi) / sqrt(fmax(pi * (1 - pi), 1e-12) / n);
        double zj = fabs(cj[j] / n - pj) / sqrt(fmax(pj * (1 - pj), 1e-12) / n);
        worst = fmax(worst, fmax(pi > 0 ? zi : ci[j], pj > 0 ? zj : cj[j]));
    }
    printf("sampler      N = %d, %d draws: never the top interval, never u == t; frequencies of i and j within "
           "%.2f standard errors of the masses\n", N, n, worst);
    CHECK(worst < 5, "N = %d: the frequencies of i or j are %.2f standard errors off the masses", N, worst);
    free(sigma), free(v), free(t), free(idx), free(ci), free(cj);
}

/* ---- 5, 6. runs through the binary ---- */

/* Runs cmlab; stdout goes to DIR/log.txt, stderr to DIR/err.txt (the last run's only). */
static int run(char *const *args) { return fixture_run(args, DIR "/log.txt", DIR "/err.txt", NULL); }

static bool stderr_has(const char *text)
{
    char *s = fixture_read_file(DIR "/err.txt", NULL);
    bool has = s && strstr(s, text);
    free(s);
    return has;
}

static const char *BASE =
    "[experiment]\nseed = 5\nout_dir = " DIR "\n"
    "[data]\ndataset = folder\npath = " DIR "/data\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = true\ndropout = 0.1\n"
    "[train]\nbatch_size = 8\nlr = 0.002\nema = 0.9\ncheckpoint_every = 0\nsample_every = 0\nlog_every = 1\n"
    "threads = 1\n[sample]\nn = 4\n";

/* Writes DIR/<name>.ini = BASE + name + extra and trains it with the --set assignments in sets
 * (NULL-ended, may be empty); returns cmlab's exit code. */
static int train(const char *name, const char *extra, const char *const *sets)
{
    char path[128];
    snprintf(path, sizeof path, DIR "/%s.ini", name);
    FILE *f = fopen(path, "w");
    fprintf(f, "%s[experiment]\nname = %s\n%s", BASE, name, extra);
    fclose(f);
    char *argv[16] = {(char *)cmlab, "train", path};
    int k = 3;
    for (; sets && *sets && k < 14; sets++) argv[k++] = "--set", argv[k++] = (char *)*sets;
    argv[k] = NULL;
    return run(argv);
}

/* The weight set `group` of two checkpoints, byte-compared. */
static bool same_weights(const char *a, const char *b, const char *group)
{
    Model ma, mb;
    Config ca, cb;
    int rc = model_load(&ma, &ca, a, group) || model_load(&mb, &cb, b, group);
    bool same = rc == 0 && !memcmp(ma.w, mb.w, ma.net.ps.total * sizeof(float));
    CHECK(rc == 0, "cannot load %s of %s or %s: %s", group, a, b, cm_errmsg());
    model_free(&ma);
    model_free(&mb);
    return same;
}

#define FT "[experiment]\nmethod = bcm\n[train]\noptimizer = radam\n[bcm]\nN = 11\ninit_weights = online\ninit = " \
    DIR "/ct/ckpt/step_00000002.h5\n"

static void test_runs(void)
{
    CHECK(train("ct", "[experiment]\nmethod = ct\n[train]\niterations = 2\n[ct]\nloss = pseudo_huber\n"
                      "sampling = lognormal\ncurriculum = doubling\nweighting = ict\ntarget_mu = 0\n", NULL) == 0,
          "the CT source run failed (see " DIR "/log.txt)");
    int rc = train("ft_full", FT "[train]\niterations = 6\n", NULL);
    rc |= train("ft_split", FT "[train]\niterations = 3\n", NULL);
    rc |= run((char *[]){(char *)cmlab, "train", DIR "/ft_full.ini", "--set", "experiment.name=ft_split", "--resume",
                         NULL});
    CHECK(rc == 0, "the BCM fine-tuning runs failed (see " DIR "/log.txt, " DIR "/err.txt)");
    if (rc == 0) {
        const char *a = DIR "/ft_full/ckpt/step_00000006.h5", *b = DIR "/ft_split/ckpt/step_00000006.h5";
        bool same = same_weights(a, b, "online") && same_weights(a, b, "ema:0.9");
        CHECK(same, "BCM: 6 steps != 3 + resume + 3 (online or EMA weights differ)");
        printf("resume       fine-tuned BCM: 6 steps and 3 + resume + 3 give byte-identical online and EMA weights\n");
    }
    CHECK(train("scratch", "[experiment]\nmethod = bcm\n[train]\niterations = 3\n[ct]\ncurriculum = doubling\n", NULL) == 0,
          "BCM from scratch failed");

    /* 6. bad inputs */
    static const struct {
        const char *name, *extra, *set, *says;
    } bad[] = {
        {"bad_arch", FT "[train]\niterations = 1\n", "model.channels=16", "differs from this experiment's in model.channels"},
        {"bad_src", FT "[train]\niterations = 1\n", "bcm.init=" DIR "/ft_full/ckpt/step_00000006.h5",
         "a method = bcm checkpoint"},
        {"bad_missing", FT "[train]\niterations = 1\n", "bcm.init=" DIR "/nope.h5", DIR "/nope.h5"},
        {"bad_N", FT "[train]\niterations = 1\n", "bcm.N=2", "bcm.N = 2"},
        {"bad_c", FT "[train]\niterations = 1\n", "bcm.huber_c=-1", "bcm.huber_c"},
        {"bad_key", "[experiment]\nmethod = bcm\n[bcm]\nN_steps = 3\n", NULL, "bcm.N_steps"},
        {"bad_s0", "[experiment]\nmethod = bcm\n[train]\niterations = 1\n[ct]\ns0 = 1\n", NULL, "ct.s0 = 1"},
    };
    for (size_t k = 0; k < CM_ARRAY_LEN(bad); k++) {
        int code = train(bad[k].name, bad[k].extra, (const char *[]){bad[k].set, NULL});
        bool says = stderr_has(bad[k].says);
        printf("bad input    %-12s exit %d%s\n", bad[k].name, code, says ? ", names the problem" : "");
        CHECK(code == 2 && says, "%s: exit %d (want 2), stderr %s '%s'", bad[k].name, code,
              says ? "has" : "lacks", bad[k].says);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s BCM_STEP.h5 CMLAB\n", argv[0]);
        return 2;
    }
    cmlab = argv[2];
    cm_set_threads(2);
    if (system("rm -rf " DIR " && mkdir -p " DIR "/data") != 0) return 1;
    Fixture f;
    fixture_open(&f, argv[1]);
    Ctx c;
    ctx_init(&c, 64 << 20);
    const char *cases[] = {"bcm", "bcm_fourier"};
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        char obj[32];
        snprintf(obj, sizeof obj, "/%s", cases[i]);
        CHECK(fixture_exists(&f, obj), "fixture has no case %s", cases[i]);
        if (fixture_exists(&f, obj)) test_step(&c, &f, cases[i]);
    }
    fixture_close(&f);

    fixture_write_rectangles(DIR "/data", NDATA, S);
    char src[300];
    write_source(src, sizeof src);
    test_finetune_start(&c, src);
    ctx_free(&c);
    test_sampler(11);
    test_sampler(321);
    test_runs();
    return test_summary("bcm");
}
