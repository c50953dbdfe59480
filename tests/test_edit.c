/* test_edit.c: zero-shot editing (src/sample/edit.h, reference/cm.md §7.3).
 *
 * argv[1]: edit_bases.h5 from tests/torch/edit_bases.py (numpy's QR); argv[2]: the cmlab binary.
 *   - the colour and patch bases (p = 2, 4) are orthogonal, have the stated first column, equal
 *     numpy's QR of [v, e_2, ..., e_n] up to column signs, and coefficient 0 is the scaled
 *     luminance / p times the patch mean;
 *   - Algorithm 4 with an analytic f, an oracle f (a fixed image) and a random-weights U-Net keeps
 *     the reference's coefficients outside Omega; the oracle's coefficients fill Omega; the first
 *     call sees the known part noised to t_1 (not the notebook's quirk), later ones re-noise by
 *     sqrt(t^2 - eps^2); a seed reproduces an edit;
 *   - slerp: the ends are z1 and z2 exactly, orthogonal equal-norm latents keep their norm and
 *     meet (z1 + z2)/sqrt(2) at u = 1/2;
 *   - the CLI on checkpoints this test trains with `cmlab train` (a gray Fashion-MNIST one and an
 *     RGB folder one): every task writes its grid with the known part intact, interpolation ends
 *     on `cmlab sample`'s images; bad input exits 2 naming the file.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"
#include "fixture.h"
#include "nn/params.h"
#include "sample/edit.h"

static const char *cmlab;

/* ---- the bases ---- */

static void check_basis(const char *name, int n, const double *Q, const double *col0, Fixture *fx)
{
    double orth = 0, first = 0, sum0 = 0, vs_numpy = 0;
    for (int j = 0; j < n; j++)
        for (int k = 0; k < n; k++) {
            double d = 0;
            for (int i = 0; i < n; i++) d += Q[i * n + j] * Q[i * n + k];
            orth = fmax(orth, fabs(d - (j == k)));
        }
    for (int i = 0; i < n; i++) first = fmax(first, fabs(Q[i * n] - col0[i])), sum0 += Q[i * n];
    int nd, shape[4];
    float *np = fixture_read(fx, name, &nd, shape);
    CHECK(nd == 2 && shape[0] == n && shape[1] == n, "%s: numpy basis is not %dx%d", name, n, n);
    for (int j = 0; j < n; j++) {
        double dot = 0;
        for (int i = 0; i < n; i++) dot += Q[i * n + j] * np[i * n + j];
        double s = dot < 0 ? -1 : 1;
        for (int i = 0; i < n; i++) vs_numpy = fmax(vs_numpy, fabs(Q[i * n + j] - s * np[i * n + j]));
    }
    free(np);
    CHECK(orth < 1e-12, "%s: |Q^T Q - I| = %.2e", name, orth);
    CHECK(first < 1e-12 && sum0 > 0, "%s: column 0 differs from v/|v| by %.2e (sum %.3f)", name, first, sum0);
    CHECK(vs_numpy < 1e-6, "%s: differs from numpy's QR (up to column signs) by %.2e", name, vs_numpy);
    printf("basis %-6s %2dx%-2d |Q^T Q - I| %.1e, vs numpy QR %.1e\n", name, n, n, orth, vs_numpy);
}

static void test_bases(const char *fixture_path)
{
    Fixture fx;
    fixture_open(&fx, fixture_path);
    double Q[256], col0[16];
    double norm = sqrt(0.2989 * 0.2989 + 0.5870 * 0.5870 + 0.1140 * 0.1140);
    edit_color_basis(Q);
    col0[0] = 0.2989 / norm, col0[1] = 0.5870 / norm, col0[2] = 0.1140 / norm;
    check_basis("color", 3, Q, col0, &fx);
    for (int p = 2; p <= 4; p += 2) {
        edit_patch_basis(p, Q);
        for (int i = 0; i < p * p; i++) col0[i] = 1.0 / p;
        check_basis(p == 2 ? "patch2" : "patch4", p * p, Q, col0, &fx);
    }
    fixture_close(&fx);

    /* Coefficient 0 in the image layout: the scaled luminance of a pixel, p times a patch mean. */
    enum { H = 8, W = 8 };
    float x[3 * H * W], a[3 * H * W], back[3 * H * W];
    Rng r = {.seed = 5, .stream = 1};
    rng_uniform(&r, x, 1, 0, 3 * H * W);
    EditOp op;
    edit_op_colorize(&op, 3, H, W);
    edit_forward(&op, x, a);
    edit_inverse(&op, a, back);
    double luma = 0, inv = 0, nx = 0, na = 0;
    for (int k = 0; k < H * W; k++)
        luma = fmax(luma, fabs(a[k] - (0.2989 * x[k] + 0.5870 * x[H * W + k] + 0.1140 * x[2 * H * W + k]) / norm));
    for (int k = 0; k < 3 * H * W; k++) inv = fmax(inv, fabs(back[k] - x[k])), nx += x[k] * x[k], na += a[k] * a[k];
    CHECK(luma < 1e-6 && inv < 1e-6 && fabs(nx - na) < 1e-4 * nx,
          "colour op: coefficient 0 vs luminance %.2e, A^T A x vs x %.2e, |Ax|^2 %.6f vs |x|^2 %.6f", luma, inv, na, nx);
    edit_op_free(&op);
    for (int p = 2; p <= 4; p += 2) {
        edit_op_superres(&op, 3, H, W, p);
        edit_forward(&op, x, a);
        edit_inverse(&op, a, back);
        double mean_err = 0, inv_err = 0;
        for (int c = 0; c < 3; c++)
            for (int py = 0; py < H; py += p)
                for (int px = 0; px < W; px += p) {
                    double m = 0;
                    for (int i = 0; i < p; i++)
                        for (int j = 0; j < p; j++) m += x[(c * H + py + i) * W + px + j];
                    mean_err = fmax(mean_err, fabs(a[(c * H + py) * W + px] - p * (m / (p * p))));
                }
        for (int k = 0; k < 3 * H * W; k++) inv_err = fmax(inv_err, fabs(back[k] - x[k]));
        CHECK(mean_err < 1e-6 && inv_err < 1e-6, "patch op p = %d: coefficient 0 vs p * mean %.2e, inverse %.2e",
              p, mean_err, inv_err);
        edit_op_free(&op);
    }
    CHECK(edit_op_colorize(&op, 1, H, W) != 0, "colourisation of 1-channel images was accepted");
    CHECK(edit_op_superres(&op, 1, 28, 28, 3) != 0, "a factor that does not divide 28 was accepted");
}

/* ---- Algorithm 4 with analytic and oracle f ---- */

enum { TC = 3, TH = 8, TW = 8, TDIM = TC * TH * TW, TN = 3 };

/* f(x, t) = c_skip x + c_out sin(3 x) with the consistency scalings: f(x, eps) = x. */
static void f_analytic(void *user, float *x, double t, int n)
{
    const double eps = 0.002, sd = 0.5;
    double cs = sd * sd / ((t - eps) * (t - eps) + sd * sd), co = sd * (t - eps) / sqrt(t * t + sd * sd);
    for (size_t k = 0; k < (size_t)n * TDIM; k++) x[k] = (float)(cs * x[k] + co * sin(3.0 * x[k]));
}

/* f = a fixed image (every sample), the oracle of a data set with one point. */
static void f_oracle(void *user, float *x, double t, int n)
{
    for (int i = 0; i < n; i++) memcpy(x + (size_t)i * TDIM, user, TDIM * sizeof(float));
}

/* Records each call's input and time, then returns 0.5 x. */
typedef struct Recorder { float in[8][TN * TDIM]; double t[8]; int calls; } Recorder;
static void f_record(void *user, float *x, double t, int n)
{
    Recorder *r = user;
    if (r->calls < 8) {
        memcpy(r->in[r->calls], x, (size_t)n * TDIM * sizeof(float));
        r->t[r->calls] = t;
    }
    r->calls++;
    for (size_t k = 0; k < (size_t)n * TDIM; k++) x[k] *= 0.5f;
}

/* max over images and coefficients with omega == want of |A out - A ref|. */
static double coeff_error(const EditOp *op, const float *out, const float *ref, int n, float want)
{
    float a[TDIM], b[TDIM];
    double e = 0;
    for (int i = 0; i < n; i++) {
        edit_forward(op, out + i * TDIM, a);
        edit_forward(op, ref + i * TDIM, b);
        for (int k = 0; k < TDIM; k++)
            if (op->omega[k] == want) e = fmax(e, fabs(a[k] - b[k]));
    }
    return e;
}

static void make_ops(EditOp ops[4], const char *names[4])
{
    uint8_t missing[TH * TW] = {0};
    for (int y = 2; y < 6; y++)
        for (int x = 1; x < 5; x++) missing[y * TW + x] = 1;
    edit_op_inpaint(&ops[0], TC, TH, TW, missing);
    edit_op_colorize(&ops[1], TC, TH, TW);
    edit_op_superres(&ops[2], TC, TH, TW, 2);
    edit_op_superres(&ops[3], TC, TH, TW, 4);
    names[0] = "inpaint", names[1] = "colorize", names[2] = "superres 2x", names[3] = "superres 4x";
}

static void test_known_part(void)
{
    EditOp ops[4];
    const char *names[4];
    make_ops(ops, names);
    float y[TN * TDIM], g[TDIM], out[TN * TDIM], out2[TN * TDIM];
    Rng r = {.seed = 11, .stream = 2};
    rng_uniform(&r, y, TN, 0, TDIM);
    rng_uniform(&r, g, 1, 7, TDIM);
    for (int k = 0; k < TN * TDIM; k++) y[k] = 2 * y[k] - 1;
    for (int k = 0; k < TDIM; k++) g[k] = 1.8f * g[k] - 0.9f;
    const double times[] = {80, 10, 1.5, 0.3, 0.002};
    for (int o = 0; o < 4; o++) {
        CHECK(edit_run(&ops[o], f_analytic, NULL, 0.002, times, 5, TN, y, 3, out) == 0, "%s: edit_run failed", names[o]);
        double keep = coeff_error(&ops[o], out, y, TN, 0);
        CHECK(keep < 2e-6, "%s, analytic f: known coefficients moved by %.2e", names[o], keep);
        CHECK(edit_run(&ops[o], f_oracle, g, 0.002, times, 5, TN, y, 3, out2) == 0, "%s: edit_run failed", names[o]);
        double keep2 = coeff_error(&ops[o], out2, y, TN, 0);
        double fill = 0;
        float a[TDIM], b[TDIM];
        edit_forward(&ops[o], g, b);
        for (int i = 0; i < TN; i++) {
            edit_forward(&ops[o], out2 + i * TDIM, a);
            for (int k = 0; k < TDIM; k++)
                if (ops[o].omega[k] == 1) fill = fmax(fill, fabs(a[k] - b[k]));
        }
        CHECK(keep2 < 2e-6 && fill < 2e-6, "%s, oracle f: known coefficients moved by %.2e, Omega differs from the "
              "oracle's by %.2e", names[o], keep2, fill);
        /* The edit changed something in Omega (else the checks above could pass on a copy of y). */
        double moved = 0;
        for (int k = 0; k < TN * TDIM; k++) moved = fmax(moved, fabs(out[k] - y[k]));
        CHECK(moved > 0.05, "%s: the analytic edit left the image unchanged (max change %.2e)", names[o], moved);
        printf("%-12s known part kept to %.1e (analytic f), %.1e (oracle f); oracle fills Omega to %.1e\n",
               names[o], keep, keep2, fill);
    }
    for (int o = 0; o < 4; o++) edit_op_free(&ops[o]);
}

/* The largest difference between what f saw at each of the 3 calls of edit_run and the algorithm
 * box: call 1 sees the known part + t_1 z_0; call m sees the previous call's clipped output,
 * projected, + sqrt(t_m^2 - eps^2) z_{m-1}, z from STREAM_EDIT at the run's seed. */
static Recorder rec;
static double schedule_error(const EditOp *op, const float *y, const double *times, double eps, uint64_t seed)
{
    float out[TN * TDIM], z[TN * TDIM], e[TDIM], a[TDIM], ay[TDIM];
    memset(&rec, 0, sizeof rec);
    if (edit_run(op, f_record, &rec, eps, times, 3, TN, y, seed, out) != 0 || rec.calls != 3) return INFINITY;
    double worst = 0;
    for (int m = 0; m < 3; m++) {
        Rng zr = {.seed = seed, .stream = STREAM_EDIT, .step = (uint32_t)m};
        rng_normal(&zr, z, TN, 0, TDIM);
        for (int i = 0; i < TN; i++) {
            if (m == 0) {
                edit_known(op, y + i * TDIM, e);
            } else {
                edit_forward(op, y + i * TDIM, ay);
                for (int k = 0; k < TDIM; k++) e[k] = fminf(1, fmaxf(-1, 0.5f * rec.in[m - 1][i * TDIM + k]));
                edit_forward(op, e, a);
                for (int k = 0; k < TDIM; k++) if (op->omega[k] == 0) a[k] = ay[k];
                edit_inverse(op, a, e);
            }
            float s = (float)(m == 0 ? times[0] : sqrt(times[m] * times[m] - eps * eps));
            for (int k = 0; k < TDIM; k++) worst = fmax(worst, fabs(rec.in[m][i * TDIM + k] - (e[k] + s * z[i * TDIM + k])));
        }
        if (rec.t[m] != times[m]) return INFINITY;
    }
    return worst;
}

static void test_noise_schedule(void)
{
    EditOp ops[4];
    const char *names[4];
    make_ops(ops, names);
    float y[TN * TDIM], out[TN * TDIM], out2[TN * TDIM];
    Rng r = {.seed = 12, .stream = 2};
    rng_uniform(&r, y, TN, 0, TDIM);
    for (int k = 0; k < TN * TDIM; k++) y[k] = 2 * y[k] - 1;
    const double eps = 0.002, times[] = {40, 0.5, 0.01};   /* at 0.01, sqrt(t^2 - eps^2) is 2% below t */
    double worst = 0;
    for (int o = 0; o < 4; o++) {
        double e = schedule_error(&ops[o], y, times, eps, 99);
        CHECK(e < 1e-5, "%s: the inputs of f differ from known + t_1 z, projection + sqrt(t^2 - eps^2) z by %.2e",
              names[o], e);
        worst = fmax(worst, e);
    }
    /* The notebook's quirk would hand f the un-noised known part first: rms ~0.6, not 40. */
    double var = 0;
    for (int k = 0; k < TN * TDIM; k++) var += (double)rec.in[0][k] * rec.in[0][k];
    CHECK(sqrt(var / (TN * TDIM)) > 20, "the first call's input has rms %.2f: not noised to t_1 = 40",
          sqrt(var / (TN * TDIM)));
    const EditOp *op = &ops[1];
    CHECK(edit_run(op, f_analytic, NULL, eps, times, 3, TN, y, 5, out) == 0 &&
          edit_run(op, f_analytic, NULL, eps, times, 3, TN, y, 5, out2) == 0 && !memcmp(out, out2, sizeof out),
          "the same seed gave different edits");
    edit_run(op, f_analytic, NULL, eps, times, 3, TN, y, 6, out2);
    CHECK(memcmp(out, out2, sizeof out) != 0, "seeds 5 and 6 gave the same edit");
    const double rising[] = {1, 2}, low[] = {1, 0.001};
    CHECK(edit_run(op, f_analytic, NULL, eps, rising, 2, TN, y, 5, out) != 0, "rising times were accepted");
    CHECK(edit_run(op, f_analytic, NULL, eps, low, 2, TN, y, 5, out) != 0, "a time below eps was accepted");
    printf("noise: f's inputs match known + t_1 z and projection + sqrt(t^2 - eps^2) z to %.1e\n", worst);
    for (int o = 0; o < 4; o++) edit_op_free(&ops[o]);
}

/* The real network through edit_f_sampler: random weights, the known part is kept. */
static void test_unet_f(void)
{
    UNetConfig u = unet_config_default();
    u.img_channels = TC, u.img_h = TH, u.img_w = TW, u.base_channels = 8;
    u.channel_mult_count = 1, u.channel_mult[0] = 1, u.num_blocks = 1, u.mid_attn = false;
    UNet net;
    CHECK(unet_init(&net, &u) == 0, "tiny U-Net: %s", cm_errmsg());
    float *w = params_buffer(&net.ps);
    params_randomize(&net.ps, w, 4);
    Ctx ctx;
    ctx_init(&ctx, 16u << 20);
    Sampler s = {&net, {PRECOND_CM, 0.5, 0.002}, w, 2, TC, TH, TW, &ctx};
    EditOp ops[4];
    const char *names[4];
    make_ops(ops, names);
    float y[TN * TDIM], out[TN * TDIM];
    Rng r = {.seed = 13, .stream = 2};
    rng_uniform(&r, y, TN, 0, TDIM);
    for (int k = 0; k < TN * TDIM; k++) y[k] = 2 * y[k] - 1;
    const double times[] = {80, 0.8};
    double worst = 0;
    for (int o = 0; o < 4; o++) {
        edit_run(&ops[o], edit_f_sampler, &s, 0.002, times, 2, TN, y, 1, out);
        worst = fmax(worst, coeff_error(&ops[o], out, y, TN, 0));
    }
    CHECK(worst < 2e-6, "random-weights U-Net: known coefficients moved by %.2e", worst);
    printf("random-weights U-Net: known part kept to %.1e in all four operators\n", worst);
    for (int o = 0; o < 4; o++) edit_op_free(&ops[o]);
    ctx_free(&ctx);
    free(w);
    unet_free(&net);
}

static double norm2(const float *x, size_t n)
{
    double s = 0;
    for (size_t k = 0; k < n; k++) s += (double)x[k] * x[k];
    return sqrt(s);
}

static void test_slerp(void)
{
    enum { D = 500 };
    static float z1[D], z2[D], o[D];
    Rng r = {.seed = 21, .stream = 3};
    rng_normal(&r, z1, 1, 0, D);
    rng_normal(&r, z2, 1, 1, D);
    edit_slerp(z1, z2, D, 0, o);
    int ends = !memcmp(o, z1, sizeof o);
    edit_slerp(z1, z2, D, 1, o);
    ends &= !memcmp(o, z2, sizeof o);
    CHECK(ends, "slerp(0) != z1 or slerp(1) != z2 exactly");
    /* z2 orthogonal to z1 with the same norm. */
    double d = 0, n1 = norm2(z1, D);
    for (int k = 0; k < D; k++) d += (double)z1[k] * z2[k];
    for (int k = 0; k < D; k++) z2[k] -= (float)(d / (n1 * n1)) * z1[k];
    double n2 = norm2(z2, D);
    for (int k = 0; k < D; k++) z2[k] *= (float)(n1 / n2);
    double worst = 0, mid = 0;
    for (int i = 0; i <= 10; i++) {
        edit_slerp(z1, z2, D, i / 10.0, o);
        worst = fmax(worst, fabs(norm2(o, D) / n1 - 1));
    }
    edit_slerp(z1, z2, D, 0.5, o);
    for (int k = 0; k < D; k++) mid = fmax(mid, fabs(o[k] - (z1[k] + z2[k]) / sqrt(2.0)));
    CHECK(worst < 1e-5, "slerp of orthogonal equal-norm latents changes the norm by %.2e", worst);
    CHECK(mid < 1e-5, "slerp(1/2) of orthogonal latents differs from (z1 + z2)/sqrt 2 by %.2e", mid);
    edit_slerp(z1, z1, D, 0.3, o);
    double par = 0;
    for (int k = 0; k < D; k++) par = fmax(par, fabs(o[k] - z1[k]));
    CHECK(par < 1e-6, "slerp of a latent with itself is not that latent (%.2e)", par);
    printf("slerp: exact ends, norm kept to %.1e, midpoint %.1e\n", worst, mid);
}

/* ---- the CLI ---- */

typedef FixtureRun Run;

/* Runs cmlab with NULL-terminated args (after the binary), capturing stdout and stderr. */
static Run run(const char *const *args)
{
    char *argv[48];
    int argc = 0;
    argv[argc++] = (char *)cmlab;
    for (; *args && argc < 45; args++) argv[argc++] = (char *)*args;
    /* One thread: these nets are tiny, and two threads that spin-wait on a loaded machine run
     * many times slower than one. */
    if ((!strcmp(argv[1], "edit") || !strcmp(argv[1], "sample")) && strcmp(argv[argc - 1], "--help")) {
        argv[argc++] = (char *)"--threads";
        argv[argc++] = (char *)"1";
    }
    argv[argc] = NULL;
    return fixture_run_capture(argv);
}
#define RUN(...) run((const char *const[]){__VA_ARGS__, NULL})

/* A checkpoint after a few CT steps of a 16-channel one-block U-Net. */
static const char *EXP =
    "[experiment]\nmethod = ct\nseed = 2\nout_dir = edit_runs\n"
    "[model]\nchannels = 16\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\n"
    "[train]\niterations = 3\nbatch_size = 4\nlr = 0.001\nema = 0.9\ncheckpoint_every = 0\n"
    "sample_every = 0\nlog_every = 1\nthreads = 1\n"
    "[ct]\nloss = pseudo_huber\ncurriculum = doubling\ns0 = 4\ns1 = 4\ntarget_mu = 0\n"
    "[sample]\nn = 4\n";

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CM_ASSERT(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

/* A PNG as [h, w, c] bytes; NULL (and a failed check) if unreadable. */
static uint8_t *png(const char *path, int *w, int *h, int *c)
{
    uint8_t *pix = NULL;
    if (image_read_png(path, &pix, w, h, c)) {
        CHECK(0, "cannot read %s: %s", path, cm_errmsg());
        return NULL;
    }
    return pix;
}

/* Pixel (x, y, channel ch) of tile (row, col) of a grid of size x size tiles with 2-pixel padding. */
static int tile(const uint8_t *g, int gw, int c, int size, int row, int col, int x, int y, int ch)
{
    int gx = 2 + col * (size + 2) + x, gy = 2 + row * (size + 2) + y;
    return g[((size_t)gy * gw + gx) * c + ch];
}

static bool contains(const char *s, const char *what)
{
    return strstr(s, what) != NULL;
}

static void test_cli_errors(const char *gray)
{
    Run r = RUN("edit", "edit_runs/none.h5", "--task", "inpaint");
    CHECK(r.code == 2 && contains(r.err, "edit_runs/none.h5"), "missing checkpoint: exit %d, stderr %s", r.code, r.err);
    write_text("edit_runs/junk.h5", "not a checkpoint");
    r = RUN("edit", "edit_runs/junk.h5", "--task", "inpaint");
    CHECK(r.code == 2 && contains(r.err, "edit_runs/junk.h5"), "corrupt checkpoint: exit %d, stderr %s", r.code, r.err);
    uint8_t big[32 * 32];
    memset(big, 200, sizeof big);
    image_write_png("edit_runs/big.png", big, 32, 32, 1);
    r = RUN("edit", gray, "--task", "inpaint", "--image", "edit_runs/big.png");
    CHECK(r.code == 2 && contains(r.err, "edit_runs/big.png") && contains(r.err, "32x32") && contains(r.err, "28x28"),
          "a 32x32 PNG for a 28x28 model: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", gray, "--task", "inpaint", "--mask", "edit_runs/big.png");
    CHECK(r.code == 2 && contains(r.err, "edit_runs/big.png"), "a 32x32 mask: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", gray, "--task", "colorize");
    CHECK(r.code == 2 && contains(r.err, gray) && contains(r.err, "RGB"), "colorize on gray: exit %d, stderr %s",
          r.code, r.err);
    const char *boxes[] = {"5,5,40,20", "10,10,5,20", "1,2,3", "a,b,c,d", "0,0,28,28,1"};
    for (size_t i = 0; i < CM_ARRAY_LEN(boxes); i++) {
        r = RUN("edit", gray, "--task", "inpaint", "--box", boxes[i]);
        CHECK(r.code == 2 && contains(r.err, "--box"), "--box %s: exit %d, stderr %s", boxes[i], r.code, r.err);
    }
    r = RUN("edit", gray, "--task", "superres", "--factor", "3");
    CHECK(r.code == 2, "--factor 3 on 28x28: exit %d", r.code);
    r = RUN("edit", gray, "--task", "inpaint", "--data-index", "10000");
    CHECK(r.code == 2 && contains(r.err, "10000"), "--data-index past the test split: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", gray, "--task", "inpaint", "--factor", "2");
    CHECK(r.code == 2 && contains(r.err, "superres"), "--factor with inpaint: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", gray, "--task", "denoise", "--steps", "3");
    CHECK(r.code == 2, "--steps with denoise: exit %d", r.code);
    r = RUN("edit", gray, "--task", "paint");
    CHECK(r.code == 2 && contains(r.err, "inpaint"), "an unknown task: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", gray, "--task", "inpaint", "--times", "1,2");
    CHECK(r.code == 2 && contains(r.err, "descend"), "rising --times: exit %d, stderr %s", r.code, r.err);
    r = RUN("edit", "--help");
    CHECK(r.code == 0 && contains(r.out, "--task") && contains(r.out, "WHITE"), "edit --help: exit %d", r.code);
}

static void test_cli_gray(const char *ck)
{
    /* Inpainting from the data set: outside the box the result is the reference, pixel for pixel. */
    Run r = RUN("edit", ck, "--task", "inpaint", "--data-index", "0,3", "--box", "6,8,20,22", "--steps", "3",
                "--out", "edit_runs/inpaint.png");
    CHECK(r.code == 0, "inpaint: exit %d, %s", r.code, r.err);
    int w, h, c;
    uint8_t *g = png("edit_runs/inpaint.png", &w, &h, &c);
    if (g) {
        CHECK(w == 3 * 30 + 2 && h == 2 * 30 + 2 && c == 1, "inpaint grid is %dx%dx%d, not 92x62x1", w, h, c);
        int outside = 0, inside = 0;
        for (int row = 0; row < 2; row++)
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++) {
                    int ref = tile(g, w, 1, 28, row, 0, x, y, 0), res = tile(g, w, 1, 28, row, 2, x, y, 0);
                    bool in = x >= 6 && x < 20 && y >= 8 && y < 22;
                    if (!in) outside = CM_MAX(outside, abs(ref - res));
                    else inside += tile(g, w, 1, 28, row, 1, x, y, 0) != 128 ? 1 : 0;
                }
        CHECK(outside == 0, "inpaint: the result differs from the reference outside the box by %d levels", outside);
        CHECK(inside == 0, "inpaint: %d pixels of the masked input are not mid-gray inside the box", inside);
        free(g);
    }
    /* An own image and a mask PNG (white = generate). */
    uint8_t img[28 * 28], mask[28 * 28];
    for (int k = 0; k < 28 * 28; k++) img[k] = (uint8_t)(k * 7 % 256), mask[k] = (k % 28 > 14) ? 255 : 0;
    image_write_png("edit_runs/own.png", img, 28, 28, 1);
    image_write_png("edit_runs/mask.png", mask, 28, 28, 1);
    r = RUN("edit", ck, "--task", "inpaint", "--image", "edit_runs/own.png", "--mask", "edit_runs/mask.png",
            "--steps", "2", "--out", "edit_runs/inpaint_mask.png");
    CHECK(r.code == 0, "inpaint --mask: exit %d, %s", r.code, r.err);
    if ((g = png("edit_runs/inpaint_mask.png", &w, &h, &c))) {
        int outside = 0;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x <= 14; x++) outside = CM_MAX(outside, abs(tile(g, w, 1, 28, 0, 2, x, y, 0) - img[y * 28 + x]));
        CHECK(w == 92 && outside == 0, "inpaint --mask: width %d, kept pixels differ by %d levels", w, outside);
        free(g);
    }
    /* Super-resolution 4x from the data set, 2x from a 14x14 PNG: the result's patch means are the input's. */
    r = RUN("edit", ck, "--task", "superres", "--factor", "4", "--data-index", "1", "--steps", "3",
            "--out", "edit_runs/sr4.png");
    CHECK(r.code == 0, "superres 4x: exit %d, %s", r.code, r.err);
    if ((g = png("edit_runs/sr4.png", &w, &h, &c))) {
        /* Clamping to [0, 255] moves the mean of a patch whose result touches 0 or 255 (the black
         * background is -1 exactly); the other patches keep their mean. */
        double worst = 0;
        int checked = 0;
        for (int py = 0; py < 28; py += 4)
            for (int px = 0; px < 28; px += 4) {
                double a = 0, b = 0;
                bool clipped = false;
                for (int i = 0; i < 16; i++) {
                    int v = tile(g, w, 1, 28, 0, 2, px + i % 4, py + i / 4, 0);
                    clipped |= v == 0 || v == 255;
                    a += tile(g, w, 1, 28, 0, 0, px + i % 4, py + i / 4, 0);
                    b += v;
                }
                if (!clipped) worst = fmax(worst, fabs(a - b) / 16), checked++;
            }
        CHECK(checked >= 5 && worst <= 1.0, "superres 4x: the mean of %d unclipped patches of the result differs from "
              "the reference's by %.2f levels", checked, worst);
        printf("cli: superres 4x keeps the means of %d/49 unclipped patches to %.2f levels\n", checked, worst);
        free(g);
    }
    uint8_t low[14 * 14];
    for (int k = 0; k < 14 * 14; k++) low[k] = (uint8_t)(40 + k % 150);
    image_write_png("edit_runs/low.png", low, 14, 14, 1);
    r = RUN("edit", ck, "--task", "superres", "--image", "edit_runs/low.png", "--steps", "2", "--out", "edit_runs/sr2.png");
    CHECK(r.code == 0, "superres 2x from 14x14: exit %d, %s", r.code, r.err);
    if ((g = png("edit_runs/sr2.png", &w, &h, &c))) {
        double worst = 0;
        for (int py = 0; py < 14; py++)
            for (int px = 0; px < 14; px++) {
                double m = 0;
                for (int i = 0; i < 4; i++) m += tile(g, w, 1, 28, 0, 1, 2 * px + i % 2, 2 * py + i / 2, 0);
                worst = fmax(worst, fabs(m / 4 - low[py * 14 + px]));
            }
        CHECK(w == 2 * 30 + 2 && worst <= 1.0, "superres 2x from a low-res PNG: width %d (input | result), patch means "
              "off by %.2f levels", w, worst);
        free(g);
    }
    r = RUN("edit", ck, "--task", "denoise", "--data-index", "2,4", "--sigma", "0.3", "--out", "edit_runs/denoise.png");
    CHECK(r.code == 0 && contains(r.out, "sigma = 0.3"), "denoise: exit %d, %s", r.code, r.err);
    /* Interpolation ends on `cmlab sample --steps 1` images 2 and 3 of the same seed. */
    r = RUN("edit", ck, "--task", "interpolate", "--pair", "2,3", "--n", "5", "--seed", "7", "--out", "edit_runs/lerp.png");
    CHECK(r.code == 0, "interpolate: exit %d, %s", r.code, r.err);
    Run s = RUN("sample", ck, "--steps", "1", "--n", "4", "--seed", "7", "--out", "edit_runs/sample.png");
    CHECK(s.code == 0, "cmlab sample: exit %d, %s", s.code, s.err);
    int sw, sh, sc;
    uint8_t *sg = png("edit_runs/sample.png", &sw, &sh, &sc);
    if ((g = png("edit_runs/lerp.png", &w, &h, &c)) && sg) {
        int worst = 0;
        for (int y = 0; y < 28; y++)
            for (int x = 0; x < 28; x++) {
                /* sample grid: 2 columns, image 2 at (row 1, col 0), image 3 at (row 1, col 1). */
                worst = CM_MAX(worst, abs(tile(g, w, 1, 28, 0, 0, x, y, 0) - tile(sg, sw, 1, 28, 1, 0, x, y, 0)));
                worst = CM_MAX(worst, abs(tile(g, w, 1, 28, 0, 4, x, y, 0) - tile(sg, sw, 1, 28, 1, 1, x, y, 0)));
            }
        CHECK(w == 5 * 30 + 2 && h == 32 && worst <= 1, "interpolation: grid %dx%d, ends differ from cmlab sample's "
              "images by %d levels", w, h, worst);
        printf("cli: interpolation ends equal cmlab sample's images to %d levels\n", worst);
    }
    free(g);
    free(sg);
}

/* An RGB folder (16x16 colour gradients), a CT checkpoint on it, and a colourisation. */
static void test_cli_rgb(void)
{
    if (system("mkdir -p edit_runs/rgb") != 0) return;
    for (int i = 0; i < 8; i++) {
        uint8_t pix[16 * 16 * 3];
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++) {
                uint8_t *p = pix + (y * 16 + x) * 3;
                p[0] = (uint8_t)(40 + 10 * x + 5 * i), p[1] = (uint8_t)(30 + 9 * y), p[2] = (uint8_t)(200 - 8 * i - 4 * x);
            }
        char path[64];
        snprintf(path, sizeof path, "edit_runs/rgb/%02d.png", i);
        image_write_png(path, pix, 16, 16, 3);
    }
    Run r = RUN("train", "edit_runs/ct.ini", "--set", "experiment.name=rgb", "--set", "data.dataset=folder",
                "--set", "data.path=edit_runs/rgb");
    CHECK(r.code == 0, "cmlab train on the RGB folder: exit %d, %s", r.code, r.err);
    const char *ck = "edit_runs/rgb/ckpt/step_00000003.h5";
    r = RUN("edit", ck, "--task", "colorize", "--data-index", "0,5", "--steps", "3", "--out", "edit_runs/color.png");
    CHECK(r.code == 0, "colorize: exit %d, %s", r.code, r.err);
    int w, h, c;
    uint8_t *g = png("edit_runs/color.png", &w, &h, &c);
    if (!g) return;
    CHECK(w == 3 * 18 + 2 && h == 2 * 18 + 2 && c == 3, "colour grid is %dx%dx%d", w, h, c);
    /* Luminance kept wherever clamping to [0, 255] did not cut a channel of the result. */
    double worst = 0;
    int checked = 0;
    for (int row = 0; row < 2; row++)
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++) {
                double lr = 0, lo = 0;
                bool clipped = false;
                for (int ch = 0; ch < 3; ch++) {
                    int v = tile(g, w, 3, 16, row, 2, x, y, ch);
                    clipped |= v == 0 || v == 255;
                    lr += EDIT_LUMA[ch] * tile(g, w, 3, 16, row, 0, x, y, ch);
                    lo += EDIT_LUMA[ch] * v;
                }
                if (!clipped) worst = fmax(worst, fabs(lr - lo)), checked++;
            }
    CHECK(checked >= 128 && worst <= 1.0, "colorize: luminance of %d unclipped pixels off by %.2f levels", checked, worst);
    printf("cli: colourisation keeps the luminance of %d/512 unclipped pixels to %.2f levels\n", checked, worst);
    free(g);
    /* A gray PNG is the degraded input itself: rows are input | result. */
    uint8_t gray[16 * 16];
    for (int k = 0; k < 256; k++) gray[k] = (uint8_t)k;
    image_write_png("edit_runs/gray16.png", gray, 16, 16, 1);
    r = RUN("edit", ck, "--task", "colorize", "--image", "edit_runs/gray16.png", "--steps", "2", "--out", "edit_runs/color1.png");
    CHECK(r.code == 0 && (g = png("edit_runs/color1.png", &w, &h, &c)) && w == 2 * 18 + 2,
          "colorize a gray PNG: exit %d, %s", r.code, r.err);
    free(g);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_edit EDIT_BASES.h5 CMLAB_BINARY\n");
        return 2;
    }
    cmlab = argv[2];
    cm_set_threads(1);
    test_bases(argv[1]);
    test_known_part();
    test_noise_schedule();
    test_unet_f();
    test_slerp();

    if (system("rm -rf edit_runs && mkdir -p edit_runs") != 0) return 1;
    write_text("edit_runs/ct.ini", EXP);
    Run r = RUN("train", "edit_runs/ct.ini", "--set", "experiment.name=gray");
    CHECK(r.code == 0, "cmlab train (tiny CT): exit %d, %s", r.code, r.err);
    const char *gray = "edit_runs/gray/ckpt/step_00000003.h5";
    test_cli_errors(gray);
    test_cli_gray(gray);
    test_cli_rgb();
    return test_summary("edit");
}
