/* test_bcm_sample.c: BCM generation, inversion and editing (src/sample/bcm.h, edit.h's BCM part,
 * data/jpeg.h, cmlab sample --bcm-schedule, cmlab invert, cmlab edit on a BCM checkpoint).
 *
 * argv[1]: the cmlab binary.
 *   - a random two-time U-Net (PRECOND_BCM) through bcm_f_sampler: f(x, t, t) == x bit for bit;
 *     the schedule "T>eps" is one jump from T z (z drawn here from STREAM_SAMPLE);
 *   - an analytic stub: for data ~ N(0, sd^2) per element the PF-ODE is exactly
 *     x_u = x_t sqrt((sd^2 + u^2) / (sd^2 + t^2)), so the BCM network is known in closed form;
 *     ancestral 80>2.4>eps equals one step, zigzag's noise and clipping, and inversion followed by
 *     reconstruction are compared with the closed form; the interpolation ends are the
 *     reconstructions of the two images;
 *   - schedule texts: the syntax, the generation rules (only the first jump after ',' may go up,
 *     end at eps), NFE counts, inversion lists that do not increase;
 *   - JPEG: a smooth image survives quality 95 closely, quality 10 changes it more and takes
 *     fewer bytes, quality 0 is refused;
 *   - the CLI on a BCM checkpoint trained here (2 steps on a generated 16x16 folder): bad
 *     --bcm-schedule / --times exit 2 naming the option; invert's MSE equals the one recomputed
 *     from its grid; interpolate and jpeg grids have their layout and honour --quality.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"
#include "data/jpeg.h"
#include "fixture.h"
#include "nn/params.h"
#include "sample/bcm.h"
#include "sample/edit.h"

static const char *cmlab;

enum { TC = 1, TH = 8, TW = 8, TDIM = TC * TH * TW, TN = 3 };
static const double EPS = 0.002, SD = 0.5;

/* ---- a random two-time U-Net ---- */

static void test_unet(void)
{
    UNetConfig u = unet_config_default();
    u.img_channels = TC, u.img_h = TH, u.img_w = TW, u.base_channels = 8, u.two_times = true;
    u.channel_mult_count = 1, u.channel_mult[0] = 1, u.num_blocks = 1, u.mid_attn = false;
    UNet net;
    CHECK(unet_init(&net, &u) == 0, "two-time U-Net: %s", cm_errmsg());
    float *w = params_buffer(&net.ps);
    params_randomize(&net.ps, w, 5);
    Ctx ctx;
    ctx_init(&ctx, 16u << 20);
    Sampler s = {&net, {PRECOND_BCM, SD, EPS}, w, 2, TC, TH, TW, &ctx};
    float x[TN * TDIM], y[TN * TDIM];
    Rng r = {.seed = 3, .stream = 1};
    rng_normal(&r, x, TN, 0, TDIM);
    const double ts[] = {EPS, 0.07, 1.0, 80.0};
    int same = 0;
    for (int k = 0; k < 4; k++) {
        memcpy(y, x, sizeof x);
        bcm_f_sampler(&s, y, ts[k], ts[k], TN);
        same += !memcmp(x, y, sizeof x);
    }
    CHECK(same == 4, "f(x, t, t) == x bit for bit at %d of 4 times", same);
    /* f(x, t, u) != x for u != t: the network is really called with u */
    memcpy(y, x, sizeof x);
    bcm_f_sampler(&s, y, 1.0, 0.3, TN);
    CHECK(memcmp(x, y, sizeof x) != 0, "f(x, 1, 0.3) == x: the jump did nothing");

    /* "T>eps" is one jump from T z, z = step 0 of STREAM_SAMPLE */
    BcmSchedule sc;
    CHECK(bcm_schedule_parse("T>eps", EPS, 80, "test", &sc) == 0, "T>eps: %s", cm_errmsg());
    float g[TN * TDIM], o[TN * TDIM];
    bcm_generate(bcm_f_sampler, &s, &sc, EPS, TN, TDIM, 11, g);
    Rng z = {.seed = 11, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&z, o, TN, 0, TDIM);
    for (int k = 0; k < TN * TDIM; k++) o[k] *= 80.0f;
    bcm_f_sampler(&s, o, 80, EPS, TN);
    sample_clip(o, TN * TDIM);
    CHECK(!memcmp(g, o, sizeof g), "T>eps is not one jump from 80 z (%.2e)", rel_error(g, o, TN * TDIM, 1));
    printf("two-time U-Net: f(x, t, t) = x exactly at 4 times; T>eps = one jump from 80 z\n");

    /* The sampling entry: NFE k takes the first k of sample.times; with sample.bcm_jumps the plan
     * jumps T > t1 > t2 > eps with f(x, t, u) (checked against the jumps by hand), otherwise it
     * re-noises as a consistency model; a network that is not BCM refuses the jumps. */
    Config cfg;
    config_defaults(&cfg);
    CHECK(config_set(&cfg, "sample.times=80,2.4,0.5") == 0 && config_set(&cfg, "sample.bcm_jumps=true") == 0,
          "sample.times: %s", cm_errmsg());
    SamplePlan p;
    CHECK(sample_plan(&p, MODEL_CONSISTENCY, &cfg, &cfg, 3) == 0 && p.ntimes == 3 && p.jumps && p.times[0] == 80 &&
              p.times[1] == 2.4 && p.times[2] == 0.5, "sample_plan at NFE 3 of sample.times 80,2.4,0.5");
    CHECK(sample_plan(&p, MODEL_CONSISTENCY, &cfg, &cfg, 4) != 0, "NFE 4 of 3 sample.times was planned");
    sample_plan(&p, MODEL_CONSISTENCY, &cfg, &cfg, 3);
    SolverStats st;
    CHECK(sample_draw(&s, &p, TN, 11, g, &st) == 0 && st.nfe == 3, "3-jump plan: %s", cm_errmsg());
    rng_normal(&z, o, TN, 0, TDIM);
    for (int k = 0; k < TN * TDIM; k++) o[k] *= 80.0f;
    bcm_f_sampler(&s, o, 80, 2.4, TN);
    bcm_f_sampler(&s, o, 2.4, 0.5, TN);
    bcm_f_sampler(&s, o, 0.5, EPS, TN);
    sample_clip(o, TN * TDIM);
    CHECK(!memcmp(g, o, sizeof g), "the 3-jump plan is not 80 > 2.4 > 0.5 > eps (%.2e)", rel_error(g, o, TN * TDIM, 1));
    CHECK(config_set(&cfg, "sample.bcm_jumps=false") == 0, "%s", cm_errmsg());
    sample_plan(&p, MODEL_CONSISTENCY, &cfg, &cfg, 3);
    CHECK(sample_draw(&s, &p, TN, 11, o, &st) == 0 && memcmp(g, o, sizeof g) != 0,
          "the re-noising 3-step plan equals the jumps (or failed: %s)", cm_errmsg());
    Sampler one = s;
    one.pre.kind = PRECOND_CM;
    p.jumps = true;
    CHECK(sample_draw(&one, &p, TN, 11, o, &st) != 0 && strstr(cm_errmsg(), "bcm_jumps"),
          "a one-time network took a jump plan");
    printf("sampling entry: sample.times' first k at NFE k; bcm_jumps = the jumps by hand\n");
    ctx_free(&ctx);
    free(w);
    unet_free(&net);
}

/* ---- the analytic stub ---- */

static double scale(double t, double u) { return sqrt((SD * SD + u * u) / (SD * SD + t * t)); }

static int calls;
static void f_gauss(void *user, float *x, double t, double u, int n)
{
    (void)user;
    calls++;
    double k = scale(t, u);
    for (int i = 0; i < n * TDIM; i++) x[i] = (float)(x[i] * k);
}

static float clip1(double v) { return (float)(v < -1 ? -1 : v > 1 ? 1 : v); }

static double max_diff(const float *a, const double *b, int n)
{
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

static void test_stub(void)
{
    enum { N = TN * TDIM };
    float z0[N], z1[N], zi[N], out[N];
    double want[N];
    Rng r = {.seed = 21, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, z0, TN, 0, TDIM);
    r.step = 1;
    rng_normal(&r, z1, TN, 0, TDIM);
    Rng ri = {.seed = 21, .stream = STREAM_INVERT, .step = 0};
    rng_normal(&ri, zi, TN, 0, TDIM);

    /* one step and ancestral: the flow from 80 to eps, whatever the stops */
    BcmSchedule one, anc, zig;
    CHECK(!bcm_schedule_parse("80>eps", EPS, 80, "t", &one) && !bcm_schedule_parse("80>2.4>eps", EPS, 80, "t", &anc) &&
          !bcm_schedule_parse("80>eps,0.1>1.2>eps", EPS, 80, "t", &zig), "parse: %s", cm_errmsg());
    for (int i = 0; i < N; i++) want[i] = clip1(80.0 * z0[i] * scale(80, EPS));
    calls = 0;
    bcm_generate(f_gauss, NULL, &one, EPS, TN, TDIM, 21, out);
    double e1 = max_diff(out, want, N);
    CHECK(calls == 1 && e1 < 1e-6, "one step: %d calls, off the closed form by %.2e", calls, e1);
    float out2[N];
    calls = 0;
    bcm_generate(f_gauss, NULL, &anc, EPS, TN, TDIM, 21, out2);
    double e2 = max_diff(out2, want, N);
    CHECK(calls == 2 && e2 < 1e-6, "ancestral 80>2.4>eps: %d calls, off the one-step closed form by %.2e", calls, e2);

    /* zigzag: clip at eps, noise sqrt(0.1^2 - eps^2) z1, then the flow 0.1 -> 1.2 -> eps */
    for (int i = 0; i < N; i++)
        want[i] = clip1((want[i] + sqrt(0.01 - EPS * EPS) * z1[i]) * scale(0.1, 1.2) * scale(1.2, EPS));
    calls = 0;
    bcm_generate(f_gauss, NULL, &zig, EPS, TN, TDIM, 21, out);
    double e3 = max_diff(out, want, N);
    CHECK(calls == 3 && e3 < 1e-6, "zigzag: %d calls, off the closed form by %.2e", calls, e3);

    /* inversion 0.07 -> 15 -> 80, then 80 -> eps: (y + 0.07 z) scaled from 0.07 to eps */
    float y[N], x[N];
    for (int i = 0; i < N; i++) y[i] = (float)(0.8 * sin(0.37 * i));
    memcpy(x, y, sizeof x);
    const double inv[] = {0.07, 15, 80};
    CHECK(bcm_invert(f_gauss, NULL, inv, 3, TN, TDIM, 21, x) == 0, "invert: %s", cm_errmsg());
    for (int i = 0; i < N; i++) want[i] = (y[i] + 0.07f * zi[i]) * scale(0.07, 80);
    double e4 = max_diff(x, want, N);
    CHECK(e4 < 1e-4 * 80, "latent off the closed form by %.2e", e4);
    bcm_run(f_gauss, NULL, &one, EPS, TN, TDIM, 21, x);
    for (int i = 0; i < N; i++) want[i] = clip1((y[i] + 0.07f * zi[i]) * scale(0.07, EPS));
    double e5 = max_diff(x, want, N);
    CHECK(e5 < 1e-5, "reconstruction off the closed form by %.2e", e5);

    /* interpolation: u = 0 and 1 are the reconstructions of the two images */
    enum { NI = 5 };
    float lerp[NI * TDIM], rec[2 * TDIM];
    CHECK(edit_bcm_interpolate(f_gauss, NULL, EPS, inv, 3, &one, y, y + TDIM, TDIM, NI, 21, lerp) == 0,
          "interpolate: %s", cm_errmsg());
    memcpy(rec, y, sizeof rec);
    bcm_invert(f_gauss, NULL, inv, 3, 2, TDIM, 21, rec);
    bcm_run(f_gauss, NULL, &one, EPS, 2, TDIM, 21, rec);
    CHECK(!memcmp(lerp, rec, TDIM * sizeof *rec) && !memcmp(lerp + (NI - 1) * TDIM, rec + TDIM, TDIM * sizeof *rec),
          "interpolation ends differ from the reconstructions");
    for (int i = 0; i < TDIM; i++) want[i] = clip1((y[i] + 0.07f * zi[i]) * scale(0.07, EPS));
    double e6 = max_diff(lerp, want, TDIM);
    CHECK(e6 < 1e-5, "interpolation end u = 0 off the closed form by %.2e", e6);
    CHECK(edit_bcm_interpolate(f_gauss, NULL, EPS, (const double[]){0.07, 15}, 2, &one, y, y + TDIM, TDIM, NI, 21,
                               lerp) != 0, "interpolation accepted a latent at 15 for a schedule from 80");
    printf("stub: one step %.1e, ancestral %.1e, zigzag %.1e, latent %.1e, reconstruction %.1e, lerp end %.1e\n",
           e1, e2, e3, e4, e5, e6);
}

/* ---- schedule texts ---- */

static void test_schedules(void)
{
    static const struct { const char *text; int ok, nfe; } cases[] = {
        {"80>eps", 1, 1}, {"T>2.4>eps", 1, 2}, {"80>eps,0.1>1.2>eps", 1, 3}, {"80>3>eps,0.12>0.4>eps", 1, 4},
        {"80>eps,0.821>eps", 1, 2}, {"80>2.4>5>eps", 0, 0}, {"2.4>80>eps", 0, 0}, {"80>2.4", 0, 0},
        {"80>eps,0.1>1.2>3>eps", 0, 0}, {"90>eps", 0, 0}, {"80", 0, 0}, {"80>>eps", 0, 0},
        {"80>eps,eps>eps", 0, 0}, {"80>x", 0, 0}, {"80>-1>eps", 0, 0}, {"80>eps;", 0, 0},
    };
    int bad = 0;
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        BcmSchedule s;
        int ok = !bcm_schedule_parse(cases[i].text, EPS, 80, "--bcm-schedule", &s) &&
                 !bcm_schedule_check_generation(&s, EPS, 80, "--bcm-schedule");
        if (ok != cases[i].ok || (ok && bcm_schedule_nfe(&s) != cases[i].nfe)) {
            bad++;
            printf("  %s: %s, NFE %d\n", cases[i].text, ok ? "accepted" : cm_errmsg(), ok ? bcm_schedule_nfe(&s) : 0);
        }
        if (!ok) CHECK(strstr(cm_errmsg(), "--bcm-schedule") != NULL, "message names no option: %s", cm_errmsg());
    }
    CHECK(bad == 0, "%d schedule texts judged wrongly", bad);
    char text[128];
    BcmSchedule s;
    bcm_schedule_parse("80>3>eps,0.12>0.4>eps", EPS, 80, "t", &s);
    bcm_schedule_format(&s, EPS, text, sizeof text);
    CHECK(!strcmp(text, "80>3>eps,0.12>0.4>eps"), "format gives %s", text);
    const double up[] = {0.07, 15, 80}, down[] = {0.07, 80, 15}, zero[] = {0, 80};
    CHECK(!bcm_check_inversion(up, 3, "x") && bcm_check_inversion(down, 3, "--times") &&
          strstr(cm_errmsg(), "--times") && bcm_check_inversion(zero, 2, "x") && bcm_check_inversion(up, 1, "x"),
          "inversion lists judged wrongly");
    printf("schedules: %zu texts judged, inversion lists checked\n", CM_ARRAY_LEN(cases));
}

/* ---- JPEG ---- */

static void test_jpeg(void)
{
    enum { H = 32, W = 32 };
    for (int C = 1; C <= 3; C += 2) {
        float x[3 * H * W], hi[3 * H * W], lo[3 * H * W];
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H * W; i++)
                x[c * H * W + i] = (float)(0.6 * sin(0.2 * (i % W) + c) * cos(0.15 * (i / W)));
        size_t bh = 0, bl = 0;
        CHECK(jpeg_roundtrip(x, C, H, W, 95, hi, &bh) == 0 && jpeg_roundtrip(x, C, H, W, 10, lo, &bl) == 0,
              "jpeg: %s", cm_errmsg());
        double mh = bcm_mse01(x, hi, (size_t)C * H * W), ml = bcm_mse01(x, lo, (size_t)C * H * W);
        CHECK(mh < 1e-4 && ml > 2 * mh && ml < 0.01 && bl < bh,
              "C = %d: MSE %.2e at quality 95 (%zu bytes), %.2e at 10 (%zu bytes)", C, mh, bh, ml, bl);
        printf("jpeg C = %d: MSE %.1e at quality 95 (%zu bytes), %.1e at 10 (%zu bytes)\n", C, mh, bh, ml, bl);
    }
    float x[64] = {0}, y[64];
    CHECK(jpeg_roundtrip(x, 1, 8, 8, 0, y, NULL) != 0, "quality 0 accepted");
}

/* ---- the CLI ---- */

typedef FixtureRun Run;

/* Runs cmlab with NULL-terminated args (after the binary), capturing stdout and stderr. */
static Run run(const char *const *args)
{
    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)cmlab;
    for (; *args && argc < 47; args++) argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return fixture_run_capture(argv);
}
#define RUN(...) run((const char *const[]){__VA_ARGS__, NULL})

static bool contains(const char *s, const char *what) { return strstr(s, what) != NULL; }

/* Two steps of BCM on 8 generated 16x16 gray images, one thread. */
static const char *EXP =
    "[experiment]\nmethod = bcm\nseed = 2\nout_dir = bcm_sample_runs\nname = bcm\n"
    "[data]\ndataset = folder\npath = bcm_sample_runs/data\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
    "[train]\niterations = 2\nbatch_size = 4\nlr = 0.001\nema = 0.9\ncheckpoint_every = 0\n"
    "sample_every = 0\nlog_every = 1\nthreads = 1\n"
    "[bcm]\nN = 6\n";

static void make_data(void)
{
    CM_ASSERT(system("rm -rf bcm_sample_runs && mkdir -p bcm_sample_runs/data") == 0, "mkdir failed");
    for (int i = 0; i < 8; i++) {
        uint8_t pix[16 * 16];
        for (int k = 0; k < 256; k++) pix[k] = (uint8_t)(128 + 100 * sin(0.3 * (k % 16) * (1 + i % 3) + 0.2 * (k / 16) + i));
        char path[64];
        snprintf(path, sizeof path, "bcm_sample_runs/data/%02d.png", i);
        image_write_png(path, pix, 16, 16, 1);
    }
    FILE *f = fopen("bcm_sample_runs/bcm.ini", "w");
    CM_ASSERT(f, "cannot write the experiment");
    fputs(EXP, f);
    fclose(f);
}

/* The MSE on [0, 1] between the two columns of an image | reconstruction grid of 16x16 tiles. */
static double grid_mse(const char *path, int rows)
{
    uint8_t *g;
    int w, h, c;
    if (image_read_png(path, &g, &w, &h, &c)) return -1;
    double s = 0;
    for (int r = 0; r < rows; r++)
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++) {
                int gy = 2 + r * 18 + y;
                double d = (g[gy * w + 2 + x] - g[gy * w + 20 + x]) / 255.0;
                s += d * d;
            }
    free(g);
    return s / (rows * 256.0);
}

static void test_cli(void)
{
    make_data();
    Run r = RUN("train", "bcm_sample_runs/bcm.ini");
    CHECK(r.code == 0, "cmlab train (tiny BCM): exit %d, %s", r.code, r.err);
    const char *ck = "bcm_sample_runs/bcm/ckpt/step_00000002.h5";

    /* bad time lists exit 2 and name the option */
    r = RUN("sample", ck, "--bcm-schedule", "80>2.4>5>eps", "--threads", "1", "--out", "bcm_sample_runs/x.png");
    CHECK(r.code == 2 && contains(r.err, "--bcm-schedule") && contains(r.err, "decrease"),
          "a rising generation schedule: exit %d, %s", r.code, r.err);
    r = RUN("invert", ck, "--images", "train", "--count", "4", "--times", "0.07,80,15", "--threads", "1");
    CHECK(r.code == 2 && contains(r.err, "--times") && contains(r.err, "increase"),
          "falling inversion times: exit %d, %s", r.code, r.err);
    r = RUN("invert", ck, "--images", "train", "--count", "4", "--bcm-schedule", "80>2.4", "--threads", "1");
    CHECK(r.code == 2 && contains(r.err, "--bcm-schedule"), "a schedule not ending at eps: exit %d, %s", r.code,
          r.err);
    r = RUN("edit", ck, "--task", "jpeg", "--quality", "0", "--threads", "1");
    CHECK(r.code == 2 && contains(r.err, "--quality"), "--quality 0: exit %d, %s", r.code, r.err);

    /* generation: a zigzag schedule runs, with its NFE in the summary */
    r = RUN("sample", ck, "--bcm-schedule", "80>eps,0.1>1.2>eps", "--n", "4", "--threads", "1", "--out",
            "bcm_sample_runs/zig.png");
    CHECK(r.code == 0 && contains(r.out, "3 NFE"), "zigzag sampling: exit %d, %s%s", r.code, r.out, r.err);

    /* invert: the printed MSE is the one of the grid it wrote */
    r = RUN("invert", ck, "--images", "train", "--count", "8", "--steps", "2", "--json", "bcm_sample_runs/inv.json",
            "--out", "bcm_sample_runs/inv.png", "--threads", "1");
    CHECK(r.code == 0, "invert: exit %d, %s", r.code, r.err);
    char *js = fixture_read_file("bcm_sample_runs/inv.json", NULL);
    const char *m = js ? strstr(js, "\"mse\": ") : NULL;
    double mse = m ? atof(m + 7) : -1, from_grid = grid_mse("bcm_sample_runs/inv.png", 8);
    CHECK(mse >= 0 && fabs(mse - from_grid) < 1e-7 && js && contains(js, "\"nfe_invert\": 2"),
          "invert: JSON MSE %.8f, from the grid %.8f (%s)", mse, from_grid, js ? js : "no JSON");
    free(js);

    /* edit: interpolation of two data images, JPEG restoration at two qualities */
    r = RUN("edit", ck, "--task", "interpolate", "--data-index", "1,4", "--split", "train", "--n", "4", "--threads",
            "1", "--out", "bcm_sample_runs/lerp.png");
    CHECK(r.code == 0, "BCM interpolate: exit %d, %s", r.code, r.err);
    uint8_t *g, ref[256];
    int w, h, c;
    if (r.code == 0 && image_read_png("bcm_sample_runs/lerp.png", &g, &w, &h, &c) == 0) {
        uint8_t *d;
        int dw, dh, dc;
        image_read_png("bcm_sample_runs/data/01.png", &d, &dw, &dh, &dc);
        memcpy(ref, d, 256);
        free(d);
        int off = 0;
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++) off += g[(2 + y) * w + 2 + x] != ref[y * 16 + x];
        CHECK(w == 6 * 18 + 2 && h == 20 && off == 0, "interpolation grid %dx%d, first tile differs from image 1 at "
              "%d pixels", w, h, off);
        free(g);
    }
    double q[2];
    const char *quality[2] = {"5", "95"};
    for (int i = 0; i < 2; i++) {
        r = RUN("edit", ck, "--task", "jpeg", "--data-index", "0,1", "--split", "train", "--quality", quality[i],
                "--threads", "1", "--out", "bcm_sample_runs/jpeg.png");
        const char *p = strstr(r.out, "JPEG ");
        p = p ? strstr(p + 5, "JPEG ") : NULL;
        q[i] = p ? atof(p + 5) : -1;
        CHECK(r.code == 0 && q[i] >= 0, "jpeg --quality %s: exit %d, %s%s", quality[i], r.code, r.out, r.err);
    }
    CHECK(q[0] > q[1], "JPEG MSE at quality 5 (%.6f) not above quality 95 (%.6f)", q[0], q[1]);
    r = RUN("edit", ck, "--task", "inpaint", "--data-index", "0", "--split", "train", "--steps", "2", "--threads", "1",
            "--out", "bcm_sample_runs/inpaint.png");
    CHECK(r.code == 0 && contains(r.out, "4 NFE"), "BCM inpaint: exit %d, %s%s", r.code, r.out, r.err);
    printf("cli: bad lists exit 2; invert MSE %.5f matches its grid; JPEG MSE %.5f at q5 > %.5f at q95\n", mse, q[0],
           q[1]);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_bcm_sample CMLAB_BINARY\n");
        return 2;
    }
    cmlab = argv[1];
    cm_set_threads(1);
    test_unet();
    test_stub();
    test_schedules();
    test_jpeg();
    test_cli();
    return test_summary("bcm_sample");
}
