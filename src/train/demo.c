/* demo.c: `cmlab demo`, the README's main job.
 *
 * Until the consistency trainers land (issue 5), the demo runs the best end-to-end job the
 * project has: it trains a small EDM denoiser (reference/cm.md §1: preconditioning, lognormal
 * noise levels, EDM loss weight) on Fashion-MNIST for a bounded time, keeps an EMA of the weights,
 * then draws samples with EDM's Heun sampler (18 steps, 35 NFE) and writes them as a PNG grid,
 * together with a denoising grid (clean / noisy / denoised rows) that shows what was learned.
 *
 * The network is a two-level conv net with a skip connection; the noise level enters through
 * Fourier features of c_noise = ln(sigma)/4 and a per-block channel bias (the U-Net of issue 3
 * replaces it).
 */
#include "demo.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "autograd/ops.h"
#include "data/idx.h"
#include "data/image.h"
#include "nn/optim.h"
#include "nn/params.h"

#define SIGMA_DATA 0.5f
#define P_MEAN -1.2f
#define P_STD 1.2f
#define NFREQ 8                      /* Fourier frequencies of the noise embedding */
#define EMB 64                       /* embedding width */

enum { STREAM_BATCH = 1, STREAM_SIGMA, STREAM_NOISE, STREAM_SAMPLE };

typedef struct DemoNet {
    ParamSet ps;
    int C;                           /* base channels */
    /* slice indices, in forward order */
    int emb_w1, emb_b1, emb_w2, emb_b2;
    int conv_w[7], conv_b[7];        /* in0, enc, down, mid, up, dec, out */
    int tb_w[3], tb_b[3];            /* per-block noise-level bias */
    int gn_w[6], gn_b[6];
} DemoNet;

static void demo_net_build(DemoNet *n, int C)
{
    params_init(&n->ps);
    n->C = C;
    ParamSet *ps = &n->ps;
    n->emb_w1 = params_add(ps, "emb.0.weight", 2, SHAPE(EMB, 2 * NFREQ), PARAM_INIT_UNIFORM_FAN_IN, 1);
    n->emb_b1 = params_add(ps, "emb.0.bias", 1, SHAPE(EMB), PARAM_INIT_ZERO, 0);
    n->emb_w2 = params_add(ps, "emb.2.weight", 2, SHAPE(EMB, EMB), PARAM_INIT_UNIFORM_FAN_IN, 1);
    n->emb_b2 = params_add(ps, "emb.2.bias", 1, SHAPE(EMB), PARAM_INIT_ZERO, 0);
    /* conv i: (cin, cout) */
    const int io[7][2] = {{1, C}, {C, C}, {C, 2 * C}, {2 * C, 2 * C}, {3 * C, C}, {C, C}, {C, 1}};
    static const char *names[7] = {"in", "enc", "down", "mid", "up", "dec", "out"};
    char name[96];
    for (int i = 0; i < 7; i++) {
        /* The output conv starts near zero, so the untrained D is close to c_skip x (EDM). */
        float scale = i == 6 ? 1e-2f : 1.0f;
        snprintf(name, sizeof name, "%s.weight", names[i]);
        n->conv_w[i] = params_add(ps, name, 4, SHAPE(io[i][1], io[i][0], 3, 3), PARAM_INIT_UNIFORM_FAN_IN, scale);
        snprintf(name, sizeof name, "%s.bias", names[i]);
        n->conv_b[i] = params_add(ps, name, 1, SHAPE(io[i][1]), PARAM_INIT_ZERO, 0);
    }
    const int tb_ch[3] = {C, 2 * C, C};
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "temb.%d.weight", i);
        n->tb_w[i] = params_add(ps, name, 2, SHAPE(tb_ch[i], EMB), PARAM_INIT_UNIFORM_FAN_IN, 1);
        snprintf(name, sizeof name, "temb.%d.bias", i);
        n->tb_b[i] = params_add(ps, name, 1, SHAPE(tb_ch[i]), PARAM_INIT_ZERO, 0);
    }
    const int gn_ch[6] = {C, C, 2 * C, 2 * C, C, C};
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "norm.%d.weight", i);
        n->gn_w[i] = params_add(ps, name, 1, SHAPE(gn_ch[i]), PARAM_INIT_ONE, 1);
        snprintf(name, sizeof name, "norm.%d.bias", i);
        n->gn_b[i] = params_add(ps, name, 1, SHAPE(gn_ch[i]), PARAM_INIT_ZERO, 0);
    }
}

typedef struct Weights { DemoNet *net; float *w, *g; } Weights;

static Tensor *P(Ctx *c, const Weights *ws, int i) { return param_tensor(c, &ws->net->ps, i, ws->w, ws->g); }

static Tensor *conv(Ctx *c, const Weights *ws, int i, Tensor *x, int stride)
{
    return op_conv2d(c, x, P(c, ws, ws->net->conv_w[i]), P(c, ws, ws->net->conv_b[i]), stride, 1);
}

static Tensor *norm_act(Ctx *c, const Weights *ws, int i, Tensor *x)
{
    int groups = CM_MIN(32, x->shape[1] / 4);
    Tensor *h = op_group_norm(c, x, P(c, ws, ws->net->gn_w[i]), P(c, ws, ws->net->gn_b[i]), groups, 1e-5f);
    return op_silu(c, h);
}

/* Per-channel bias from the noise embedding: [N,EMB] -> [N,C,1,1]. */
static Tensor *time_bias(Ctx *c, const Weights *ws, int i, Tensor *emb)
{
    Tensor *b = op_linear(c, emb, P(c, ws, ws->net->tb_w[i]), P(c, ws, ws->net->tb_b[i]));
    return op_reshape(c, b, 4, SHAPE(b->shape[0], b->shape[1], 1, 1));
}

/* F(x_in; c_noise): x_in [N,1,H,W], cnoise [N,1] -> [N,1,H,W]. */
static Tensor *demo_net_forward(Ctx *c, const Weights *ws, Tensor *x_in, Tensor *cnoise)
{
    float *fr = arena_alloc(&c->arena, NFREQ * sizeof(float));
    for (int k = 0; k < NFREQ; k++) fr[k] = (float)(M_PI * pow(2.0, k - 2));
    Tensor *freq = tensor_wrap(c, fr, NULL, 2, SHAPE(1, NFREQ), false);
    Tensor *ph = op_matmul(c, cnoise, freq);
    Tensor *emb = op_concat(c, 2, (Tensor *[]){op_sin(c, ph), op_cos(c, ph)});
    emb = op_silu(c, op_linear(c, emb, P(c, ws, ws->net->emb_w1), P(c, ws, ws->net->emb_b1)));
    emb = op_silu(c, op_linear(c, emb, P(c, ws, ws->net->emb_w2), P(c, ws, ws->net->emb_b2)));

    Tensor *h = conv(c, ws, 0, x_in, 1);
    h = norm_act(c, ws, 0, op_add(c, h, time_bias(c, ws, 0, emb)));
    Tensor *h1 = norm_act(c, ws, 1, conv(c, ws, 1, h, 1));                  /* [N,C,28,28] */
    h = conv(c, ws, 2, h1, 2);                                              /* [N,2C,14,14] */
    h = norm_act(c, ws, 2, op_add(c, h, time_bias(c, ws, 1, emb)));
    h = norm_act(c, ws, 3, conv(c, ws, 3, h, 1));
    h = op_concat(c, 2, (Tensor *[]){op_upsample(c, h), h1});               /* [N,3C,28,28] */
    h = conv(c, ws, 4, h, 1);
    h = norm_act(c, ws, 4, op_add(c, h, time_bias(c, ws, 2, emb)));
    h = norm_act(c, ws, 5, conv(c, ws, 5, h, 1));
    return conv(c, ws, 6, h, 1);
}

/* EDM preconditioning: D(x; s) = c_skip x + c_out F(c_in x; ln(s)/4). sigma: [N] on the host. */
static Tensor *denoise(Ctx *c, const Weights *ws, Tensor *x, const float *sigma)
{
    int N = x->shape[0];
    float *cs = arena_alloc(&c->arena, 4 * (size_t)N * sizeof(float));
    float *co = cs + N, *ci = co + N, *cn = ci + N;
    for (int i = 0; i < N; i++) {
        float s = sigma[i], d = s * s + SIGMA_DATA * SIGMA_DATA;
        cs[i] = SIGMA_DATA * SIGMA_DATA / d;
        co[i] = s * SIGMA_DATA / sqrtf(d);
        ci[i] = 1.0f / sqrtf(d);
        cn[i] = logf(s) / 4.0f;
    }
    Tensor *t_cs = tensor_wrap(c, cs, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_co = tensor_wrap(c, co, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_ci = tensor_wrap(c, ci, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_cn = tensor_wrap(c, cn, NULL, 2, SHAPE(N, 1), false);
    Tensor *F = demo_net_forward(c, ws, op_mul(c, x, t_ci), t_cn);
    return op_add(c, op_mul(c, x, t_cs), op_mul(c, F, t_co));
}

/* Karras et al. 2022 time steps (reference/cm.md §1.4), t[n] = 0 appended. */
static void karras_steps(float *t, int n, float smin, float smax, float rho)
{
    for (int i = 0; i < n; i++) {
        double a = pow(smax, 1.0 / rho), b = pow(smin, 1.0 / rho);
        t[i] = (float)pow(a + (double)i / (n - 1) * (b - a), rho);
    }
    t[n] = 0;
}

/* EDM Algorithm 1 (deterministic Heun), reference/cm.md §1.5: NFE = 2 steps - 1. */
static void heun_sample(Ctx *c, const Weights *ws, float *x, int N, int HW, int steps, uint64_t seed)
{
    float t[64];
    karras_steps(t, steps, 0.002f, 80.0f, 7.0f);
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, x, N, 0, (size_t)HW);
    size_t n = (size_t)N * HW;
    for (size_t k = 0; k < n; k++) x[k] *= t[0];
    float *sig = malloc((size_t)N * sizeof(float));
    float *d1 = malloc(n * sizeof(float)), *xn = malloc(n * sizeof(float));
    for (int i = 0; i < steps; i++) {
        ctx_reset(c);
        ctx_no_grad_begin(c);
        for (int b = 0; b < N; b++) sig[b] = t[i];
        Tensor *xt = tensor_wrap(c, x, NULL, 4, SHAPE(N, 1, 28, 28), false);
        const float *D = denoise(c, ws, xt, sig)->data;
        for (size_t k = 0; k < n; k++) {
            d1[k] = (x[k] - D[k]) / t[i];
            xn[k] = x[k] + (t[i + 1] - t[i]) * d1[k];
        }
        if (i < steps - 1) {
            for (int b = 0; b < N; b++) sig[b] = t[i + 1];
            Tensor *xt2 = tensor_wrap(c, xn, NULL, 4, SHAPE(N, 1, 28, 28), false);
            const float *D2 = denoise(c, ws, xt2, sig)->data;
            for (size_t k = 0; k < n; k++)
                xn[k] = x[k] + (t[i + 1] - t[i]) * 0.5f * (d1[k] + (xn[k] - D2[k]) / t[i + 1]);
        }
        memcpy(x, xn, n * sizeof(float));
        ctx_no_grad_end(c);
    }
    free(sig);
    free(d1);
    free(xn);
}

static int mkdir_p(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return cm_fail("cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return cm_fail("cannot create %s: %s", buf, strerror(errno));
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cmlab demo [--seconds S] [--data DIR] [--out DIR] [--seed N] [--threads N]\n"
            "Trains a small EDM denoiser on Fashion-MNIST for S seconds (default 180), then\n"
            "writes DIR/samples.png (Heun, 35 NFE) and DIR/denoise.png (clean/noisy/denoised).\n"
            "  --data DIR   Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
            "  --out DIR    output directory (default runs/demo)\n");
}

int demo_main(int argc, char **argv)
{
    double seconds = 180;
    const char *data_dir = "/usr/share/datasets/fashion-mnist", *out_dir = "runs/demo";
    uint64_t seed = 0;
    int threads = 2, batch = 64;
    static const struct option opts[] = {
        {"seconds", required_argument, 0, 's'}, {"data", required_argument, 0, 'd'},
        {"out", required_argument, 0, 'o'},     {"seed", required_argument, 0, 'r'},
        {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    int li = 0;
    for (int ch; (ch = getopt_long(argc, argv, "h", opts, &li)) != -1;) {
        char *end = NULL;
        switch (ch) {
        case 's': seconds = strtod(optarg, &end); break;
        case 'd': data_dir = optarg; break;
        case 'o': out_dir = optarg; break;
        case 'r': seed = strtoull(optarg, &end, 10); break;
        case 't': threads = (int)strtol(optarg, &end, 10); break;
        case 'h': usage(stdout); return CM_EXIT_OK;
        default: usage(stderr); return CM_EXIT_INPUT;
        }
        if (end && *end) {
            fprintf(stderr, "cmlab demo: --%s expects a number, got '%s'\n", opts[li].name, optarg);
            return CM_EXIT_INPUT;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cmlab demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    cm_set_threads(threads);

    char path[1024];
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", data_dir);
    IdxArray imgs;
    if (idx_load_images(path, &imgs) != 0) {
        fprintf(stderr, "cmlab demo: %s\n(install Debian's dataset-fashion-mnist, or pass --data DIR)\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    if (imgs.dims[1] != 28 || imgs.dims[2] != 28) {
        fprintf(stderr, "cmlab demo: %s: expected 28x28 images, got %dx%d\n", path, imgs.dims[1], imgs.dims[2]);
        idx_free(&imgs);
        return CM_EXIT_INPUT;
    }
    if (mkdir_p(out_dir) != 0) {
        fprintf(stderr, "cmlab demo: %s\n", cm_errmsg());
        idx_free(&imgs);
        return CM_EXIT_INPUT;
    }
    int count = imgs.dims[0], HW = 28 * 28;

    DemoNet net;
    demo_net_build(&net, 32);
    float *w = params_buffer(&net.ps), *g = params_buffer(&net.ps), *ema = params_buffer(&net.ps);
    params_randomize(&net.ps, w, seed);
    memcpy(ema, w, net.ps.total * sizeof(float));
    Adam adam;
    adam_init(&adam, net.ps.total, 2e-3f, 0.9f, 0.999f, 1e-8f, 0, false);
    printf("demo: EDM denoiser, %zu parameters, batch %d, %d threads, %.0f s of training\n",
           net.ps.total, batch, threads, seconds);

    Ctx c;
    ctx_init(&c, 64 << 20);
    Weights online = {&net, w, g};
    float *x0 = malloc((size_t)batch * HW * sizeof(float)), *noise = malloc((size_t)batch * HW * sizeof(float));
    float sigma[256], lam[256], u[256];
    uint32_t pick[256];
    bool tty = isatty(1);
    double t0 = cm_now(), loss_avg = 0;
    long step = 0;
    while (cm_now() - t0 < seconds) {
        /* Batch, noise levels and noise: pure functions of (seed, step, sample). */
        Rng rb = {seed, STREAM_BATCH, (uint32_t)step}, rs = {seed, STREAM_SIGMA, (uint32_t)step};
        Rng rn = {seed, STREAM_NOISE, (uint32_t)step};
        rng_u32(&rb, pick, batch, 0, 1);
        rng_normal(&rs, u, batch, 0, 1);
        rng_normal(&rn, noise, batch, 0, (size_t)HW);
        for (int b = 0; b < batch; b++) {
            const uint8_t *img = imgs.data + (size_t)(pick[b] % (uint32_t)count) * HW;
            for (int k = 0; k < HW; k++) x0[b * HW + k] = img[k] / 127.5f - 1.0f;
            sigma[b] = expf(P_MEAN + P_STD * u[b]);
            lam[b] = (sigma[b] * sigma[b] + SIGMA_DATA * SIGMA_DATA) / (sigma[b] * sigma[b] * SIGMA_DATA * SIGMA_DATA);
            /* noise becomes the noisy input y + sigma n in place */
            for (int k = 0; k < HW; k++) noise[b * HW + k] = x0[b * HW + k] + sigma[b] * noise[b * HW + k];
        }
        ctx_reset(&c);
        memset(g, 0, net.ps.total * sizeof(float));
        Tensor *y = tensor_wrap(&c, x0, NULL, 4, SHAPE(batch, 1, 28, 28), false);
        Tensor *xn = tensor_wrap(&c, noise, NULL, 4, SHAPE(batch, 1, 28, 28), false);
        Tensor *weight = tensor_wrap(&c, lam, NULL, 1, SHAPE(batch), false);
        Tensor *D = denoise(&c, &online, xn, sigma);
        Tensor *loss = op_mean(&c, op_mul(&c, op_mse(&c, D, y), weight));
        tape_backward(&c, loss, NULL);
        adam_step(&adam, w, g);
        ema_update(ema, w, net.ps.total, 0.995f);
        if (!isfinite(loss->data[0])) {
            fprintf(stderr, "demo: loss is %g at step %ld; stopping\n", (double)loss->data[0], step);
            return CM_EXIT_RUNTIME;
        }
        loss_avg = step ? 0.95 * loss_avg + 0.05 * loss->data[0] : loss->data[0];
        step++;
        if (step % 20 == 0) {
            double el = cm_now() - t0;
            printf("%sstep %6ld  loss %.4f  %.0f img/s  ETA %.0f s%s", tty ? "\r" : "", step, loss_avg,
                   step * batch / el, fmax(0, seconds - el), tty ? "   " : "\n");
            fflush(stdout);
        }
    }
    double train_s = cm_now() - t0;
    printf("%strained %ld steps (%.0f images) in %.0f s: %.0f img/s, arena high-water %.1f MB\n",
           tty ? "\n" : "", step, (double)step * batch, train_s, step * batch / train_s,
           c.arena.high_water / 1e6);

    /* Samples from the EMA weights. */
    Weights avg = {&net, ema, NULL};
    int ns = 64;
    float *xs = malloc((size_t)ns * HW * sizeof(float));
    double ts = cm_now();
    heun_sample(&c, &avg, xs, ns, HW, 18, seed + 1);
    snprintf(path, sizeof path, "%s/samples.png", out_dir);
    int rc = image_write_grid(path, xs, ns, 1, 28, 28, 8, 2);
    printf("samples: %s (Heun, 18 steps = 35 NFE, %.1f s)\n", rc == 0 ? path : cm_errmsg(), cm_now() - ts);

    /* Denoising: 8 clean images, the same at sigma = 0.5, and D's estimate. */
    float *grid = malloc((size_t)24 * HW * sizeof(float)), sg[8];
    Rng rn = {seed, STREAM_NOISE, 0xffffffffu};
    rng_normal(&rn, grid + 8 * HW, 8, 0, (size_t)HW);
    for (int b = 0; b < 8; b++) {
        sg[b] = 0.5f;
        const uint8_t *img = imgs.data + (size_t)(b * 997 % count) * HW;
        for (int k = 0; k < HW; k++) {
            grid[b * HW + k] = img[k] / 127.5f - 1.0f;
            grid[(8 + b) * HW + k] = grid[b * HW + k] + sg[b] * grid[(8 + b) * HW + k];
        }
    }
    ctx_reset(&c);
    ctx_no_grad_begin(&c);
    Tensor *noisy = tensor_wrap(&c, grid + 8 * HW, NULL, 4, SHAPE(8, 1, 28, 28), false);
    memcpy(grid + 16 * HW, denoise(&c, &avg, noisy, sg)->data, (size_t)8 * HW * sizeof(float));
    ctx_no_grad_end(&c);
    snprintf(path, sizeof path, "%s/denoise.png", out_dir);
    int rc2 = image_write_grid(path, grid, 24, 1, 28, 28, 8, 2);
    printf("denoising (rows: clean, noisy at sigma 0.5, denoised): %s\n", rc2 == 0 ? path : cm_errmsg());

    free(grid);
    free(xs);
    free(x0);
    free(noise);
    ctx_free(&c);
    adam_free(&adam);
    free(w);
    free(g);
    free(ema);
    params_free(&net.ps);
    idx_free(&imgs);
    return rc == 0 && rc2 == 0 ? CM_EXIT_OK : CM_EXIT_RUNTIME;
}
