#include "edit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"

void edit_f_sampler(void *user, float *x, double t, int n)
{
    sample_consistency(user, x, t, n);
}

static const char *const task_names[EDIT_TASK_COUNT] = {
    [EDIT_INPAINT] = "inpaint", [EDIT_COLORIZE] = "colorize", [EDIT_SUPERRES] = "superres",
    [EDIT_DENOISE] = "denoise", [EDIT_INTERPOLATE] = "interpolate", [EDIT_JPEG] = "jpeg",
};

const char *edit_task_name(EditTask task)
{
    return task >= 0 && task < EDIT_TASK_COUNT ? task_names[task] : "?";
}

int edit_task_from_name(const char *name)
{
    for (int i = 0; i < EDIT_TASK_COUNT; i++)
        if (!strcmp(name, task_names[i])) return i;
    return cm_fail("unknown task '%s': one of inpaint, colorize, superres, denoise, interpolate, jpeg", name);
}

const double EDIT_LUMA[3] = {0.2989, 0.5870, 0.1140};

/* ---- the orthogonal bases ---- */

void edit_basis(int n, const double *v, double *Q)
{
    CM_ASSERT(n >= 1 && v[0] != 0, "edit_basis: n %d, v[0] %g ([v, e_2..e_n] must be full rank)", n, v[0]);
    double norm = 0, sum = 0;
    for (int i = 0; i < n; i++) norm += v[i] * v[i], sum += v[i];
    double s = (sum < 0 ? -1 : 1) / sqrt(norm);
    for (int i = 0; i < n; i++) Q[i * n] = s * v[i];
    /* Column j starts as e_{j+1} (0-based e_j) and loses its components along columns 0..j-1;
     * a second pass removes what rounding left of them (classical "twice is enough"). */
    for (int j = 1; j < n; j++) {
        for (int i = 0; i < n; i++) Q[i * n + j] = i == j;
        for (int pass = 0; pass < 2; pass++)
            for (int k = 0; k < j; k++) {
                double d = 0;
                for (int i = 0; i < n; i++) d += Q[i * n + k] * Q[i * n + j];
                for (int i = 0; i < n; i++) Q[i * n + j] -= d * Q[i * n + k];
            }
        double nn = 0;
        for (int i = 0; i < n; i++) nn += Q[i * n + j] * Q[i * n + j];
        for (int i = 0; i < n; i++) Q[i * n + j] /= sqrt(nn);
    }
}

void edit_color_basis(double Q[9])
{
    edit_basis(3, EDIT_LUMA, Q);
}

void edit_patch_basis(int p, double *Q)
{
    int n = p * p;
    double *ones = cm_malloc((size_t)n * sizeof *ones);
    for (int i = 0; i < n; i++) ones[i] = 1;
    edit_basis(n, ones, Q);
    free(ones);
}

/* ---- operators ---- */

/* An op over [C, H, W] with groups of n elements and every coefficient known. */
static void op_alloc(EditOp *op, int C, int H, int W, int n)
{
    size_t dim = (size_t)C * H * W;
    *op = (EditOp){.C = C, .H = H, .W = W, .n = n};
    op->Q = cm_calloc((size_t)n * n, sizeof *op->Q);
    op->index = cm_malloc(dim * sizeof *op->index);
    op->omega = cm_calloc(dim, sizeof *op->omega);
}

void edit_op_inpaint(EditOp *op, int C, int H, int W, const uint8_t *missing)
{
    op_alloc(op, C, H, W, 1);
    op->Q[0] = 1;
    size_t plane = (size_t)H * W;
    for (size_t i = 0; i < (size_t)C * plane; i++) {
        op->index[i] = (int)i;
        op->omega[i] = missing[i % plane] != 0;
    }
}

int edit_op_colorize(EditOp *op, int C, int H, int W)
{
    if (C != 3) return cm_fail("colourisation needs RGB images (3 channels); these have %d", C);
    op_alloc(op, C, H, W, 3);
    edit_color_basis(op->Q);
    size_t plane = (size_t)H * W;
    for (size_t px = 0; px < plane; px++)
        for (int c = 0; c < 3; c++) {
            op->index[px * 3 + c] = (int)(c * plane + px);
            op->omega[c * plane + px] = c != 0;    /* keep the luma, generate the two chroma */
        }
    return 0;
}

int edit_op_superres(EditOp *op, int C, int H, int W, int p)
{
    if (p < 2 || p > 8 || H % p || W % p)
        return cm_fail("super-resolution by %d: the factor must be 2..8 and divide the %dx%d images", p, W, H);
    int n = p * p;
    op_alloc(op, C, H, W, n);
    edit_patch_basis(p, op->Q);
    size_t g = 0;
    for (int c = 0; c < C; c++)
        for (int py = 0; py < H / p; py++)
            for (int px = 0; px < W / p; px++, g++)
                for (int j = 0; j < n; j++) {
                    int at = (c * H + py * p + j / p) * W + px * p + j % p;
                    op->index[g * n + j] = at;
                    op->omega[at] = j != 0;    /* keep coefficient 0, p times the patch mean */
                }
    return 0;
}

void edit_op_free(EditOp *op)
{
    free(op->Q);
    free(op->index);
    free(op->omega);
    memset(op, 0, sizeof *op);
}

/* out = M^T in (transpose = 1: A x = Q^T x) or M in (transpose = 0: A^T a = Q a), group by group,
 * in double. The groups partition the image, so out is fully written. */
static void op_apply(const EditOp *op, const float *in, float *out, int transpose)
{
    const int n = op->n;
    const size_t groups = (size_t)op->C * op->H * op->W / n;
    double v[64];
    for (size_t g = 0; g < groups; g++) {
        const int *ix = op->index + g * n;
        for (int i = 0; i < n; i++) v[i] = in[ix[i]];
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < n; i++) s += (transpose ? op->Q[i * n + j] : op->Q[j * n + i]) * v[i];
            out[ix[j]] = (float)s;
        }
    }
}

void edit_forward(const EditOp *op, const float *x, float *a)
{
    op_apply(op, x, a, 1);
}

void edit_inverse(const EditOp *op, const float *a, float *x)
{
    op_apply(op, a, x, 0);
}

void edit_known(const EditOp *op, const float *y, float *out)
{
    size_t dim = (size_t)op->C * op->H * op->W;
    float *a = cm_malloc(dim * sizeof *a);
    edit_forward(op, y, a);
    for (size_t i = 0; i < dim; i++) a[i] *= 1 - op->omega[i];
    edit_inverse(op, a, out);
    free(a);
}

/* x = A^T[(A y)(1 - Omega) + (A x) Omega] for one image; ay = A y, a is scratch [dim]. */
static void op_project(const EditOp *op, const float *ay, float *x, float *a)
{
    size_t dim = (size_t)op->C * op->H * op->W;
    edit_forward(op, x, a);
    for (size_t i = 0; i < dim; i++) a[i] = op->omega[i] != 0 ? a[i] : ay[i];
    edit_inverse(op, a, x);
}

static int check_times(double eps, const double *times, int ntimes)
{
    if (ntimes < 1) return cm_fail("editing needs at least one time");
    for (int k = 0; k < ntimes; k++)
        if (!(times[k] >= eps) || (k > 0 && !(times[k] < times[k - 1])))
            return cm_fail("editing times must descend and stay >= eps = %g (got %g%s)", eps, times[k],
                           k > 0 ? " after a larger or equal one" : "");
    return 0;
}

int edit_run(const EditOp *op, ConsistencyFn f, void *user, double eps, const double *times,
             int ntimes, int n, const float *y, uint64_t seed, float *out)
{
    if (check_times(eps, times, ntimes)) return -1;
    size_t dim = (size_t)op->C * op->H * op->W, total = (size_t)n * dim;
    float *ay = cm_malloc(total * sizeof *ay), *a = cm_malloc(dim * sizeof *a);
    for (int i = 0; i < n; i++) {
        edit_forward(op, y + i * dim, ay + i * dim);
        edit_known(op, y + i * dim, out + i * dim);
    }
    for (int m = 0; m < ntimes; m++) {
        /* The first step noises the known part to t_1 (not the notebook's quirk); later steps
         * re-noise the projected estimate from eps to t_m. */
        double t = times[m];
        sample_add_noise(out, n, dim, m == 0 ? t : sqrt(t * t - eps * eps), seed, STREAM_EDIT, (uint32_t)m);
        f(user, out, t, n);
        sample_clip(out, total);
        for (int i = 0; i < n; i++) op_project(op, ay + i * dim, out + i * dim, a);
    }
    free(ay);
    free(a);
    return 0;
}

int edit_denoise(ConsistencyFn f, void *user, double eps, double sigma, int n, size_t dim, float *x)
{
    if (!(sigma >= eps)) return cm_fail("denoising at sigma = %g: it must be >= eps = %g", sigma, eps);
    f(user, x, sigma, n);
    sample_clip(x, (size_t)n * dim);
    return 0;
}

void edit_add_noise(float *x, int n, size_t dim, double sigma, uint64_t seed)
{
    sample_add_noise(x, n, dim, sigma, seed, STREAM_EDIT, 0);
}

void edit_slerp(const float *z1, const float *z2, size_t dim, double u, float *out)
{
    double d = 0, n1 = 0, n2 = 0;
    for (size_t k = 0; k < dim; k++) {
        d += (double)z1[k] * z2[k];
        n1 += (double)z1[k] * z1[k];
        n2 += (double)z2[k] * z2[k];
    }
    double c = n1 > 0 && n2 > 0 ? d / sqrt(n1 * n2) : 1;
    double theta = acos(c < -1 ? -1 : c > 1 ? 1 : c), st = sin(theta);
    double a = 1 - u, b = u;
    if (st >= 1e-6) {
        a = sin((1 - u) * theta) / st;
        b = sin(u * theta) / st;
    }
    for (size_t k = 0; k < dim; k++) out[k] = (float)(a * z1[k] + b * z2[k]);
}

void edit_interpolate(ConsistencyFn f, void *user, double T, const float *z1, const float *z2,
                      size_t dim, int n, float *out)
{
    for (int k = 0; k < n; k++) {
        float *o = out + (size_t)k * dim;
        edit_slerp(z1, z2, dim, n > 1 ? (double)k / (n - 1) : 0, o);
        for (size_t e = 0; e < dim; e++) o[e] = (float)T * o[e];
    }
    f(user, out, T, n);
    sample_clip(out, (size_t)n * dim);
}

/* ---- BCM ---- */

int edit_bcm_run(const EditOp *op, BcmFn f, void *user, double eps, double s, const double *times, int ntimes,
                 int n, const float *y, uint64_t seed, float *out)
{
    if (!(s > 0)) return cm_fail("the small noise before inverting must be > 0, got %g", s);
    if (ntimes < 1) return cm_fail("invert-and-regenerate needs at least one round");
    for (int m = 0; m < ntimes; m++)
        if (!(times[m] > s) || (m > 0 && !(times[m] < times[m - 1])))
            return cm_fail("invert-and-regenerate times must descend and stay above the small noise %g (got %g%s)",
                           s, times[m], m > 0 ? " after a smaller or equal one" : "");
    size_t dim = (size_t)op->C * op->H * op->W, total = (size_t)n * dim;
    float *ay = cm_malloc(total * sizeof *ay), *a = cm_malloc(dim * sizeof *a), *z = cm_malloc(total * sizeof *z);
    Rng r = {.seed = seed, .stream = STREAM_EDIT, .step = 0};
    rng_normal(&r, z, n, 0, dim);
    for (int i = 0; i < n; i++) {    /* the known coefficients, and noise in the unknown ones */
        edit_forward(op, y + i * dim, ay + i * dim);
        for (size_t k = 0; k < dim; k++) a[k] = op->omega[k] != 0 ? z[i * dim + k] : ay[i * dim + k];
        edit_inverse(op, a, out + i * dim);
    }
    for (int m = 0; m < ntimes; m++) {
        sample_add_noise(out, n, dim, s, seed, STREAM_EDIT, (uint32_t)m + 1);
        f(user, out, s, times[m], n);
        f(user, out, times[m], eps, n);
        sample_clip(out, total);
        for (int i = 0; i < n; i++) op_project(op, ay + i * dim, out + i * dim, a);
    }
    free(ay);
    free(a);
    free(z);
    return 0;
}

int edit_bcm_interpolate(BcmFn f, void *user, double eps, const double *inv, int ninv, const BcmSchedule *gen,
                         const float *y1, const float *y2, size_t dim, int n, uint64_t seed, float *out)
{
    if (ninv > 0 && gen->t[0] != inv[ninv - 1])
        return cm_fail("the regeneration starts at %g, but the inversion ends at %g", gen->t[0], inv[ninv - 1]);
    float *z = cm_malloc(2 * dim * sizeof *z);
    memcpy(z, y1, dim * sizeof *z);
    memcpy(z + dim, y2, dim * sizeof *z);
    int rc = bcm_invert(f, user, inv, ninv, 2, dim, seed, z);
    if (rc == 0) {
        for (int k = 0; k < n; k++) edit_slerp(z, z + dim, dim, n > 1 ? (double)k / (n - 1) : 0, out + (size_t)k * dim);
        bcm_run(f, user, gen, eps, n, dim, seed, out);
    }
    free(z);
    return rc;
}

static const char *channels_name(int c) { return c == 1 ? "gray" : "RGB"; }

int edit_references(const Config *cfg, const char *split, const int *idx, int n, int C, int H, int W, float **out,
                    int *count)
{
    Dataset d;
    const char *kind = config_enum_name("data.dataset", cfg->data.dataset);
    if (dataset_load(&d, kind, cfg->data.path[0] ? cfg->data.path : NULL, split)) return -1;
    int first[8];
    if (!idx) {    /* the default: the first 8 images (fewer if the data set is smaller) */
        for (n = 0; n < CM_MIN(8, d.n); n++) first[n] = n;
        idx = first;
    }
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        if (idx[i] >= d.n) rc = cm_fail("--data-index %d: %s has %d images (0..%d)", idx[i], d.source, d.n, d.n - 1);
    if (rc == 0 && (d.c != C || d.h > H || d.w > W))
        rc = cm_fail("%s holds %dx%d %s images, but the model takes %dx%d %s", d.source, d.w, d.h,
                     channels_name(d.c), W, H, channels_name(C));
    if (rc == 0) {
        size_t dim = (size_t)C * H * W;
        *count = n;
        *out = cm_malloc((size_t)n * dim * sizeof **out);
        for (int i = 0; i < n; i++) dataset_image(&d, idx[i], H, W, false, *out + i * dim);
    }
    dataset_free(&d);
    return rc;
}

/* ---- cmlab edit's PNG inputs ---- */

int edit_mask_read(const char *path, int H, int W, uint8_t *missing)
{
    uint8_t *pix;
    int w, h, c;
    if (image_read_png(path, &pix, &w, &h, &c)) return -1;
    if (w != W || h != H) {
        free(pix);
        return cm_fail("mask %s is %dx%d, but the images are %dx%d", path, w, h, W, H);
    }
    int count = 0;
    for (int k = 0; k < H * W; k++) {
        int sum = 0;
        for (int ch = 0; ch < c; ch++) sum += pix[(size_t)k * c + ch];
        missing[k] = sum >= 128 * c;
        count += missing[k];
    }
    free(pix);
    if (count == 0)
        return cm_fail("mask %s marks no pixel as missing: white (>= 128) = generate, black = keep", path);
    return count;
}

int edit_image_read(const char *path, EditTask task, int factor, int C, int H, int W, float *y,
                    bool *degraded)
{
    uint8_t *pix;
    int w, h, c;
    if (image_read_png(path, &pix, &w, &h, &c)) return -1;
    int p = factor;
    bool full = w == W && h == H && c == C;
    bool lowres = task == EDIT_SUPERRES && w * p == W && h * p == H && c == C;
    bool gray = task == EDIT_COLORIZE && w == W && h == H && c == 1;
    if (!full && !lowres && !gray) {
        char also[96] = "";
        if (task == EDIT_SUPERRES) snprintf(also, sizeof also, " (or %dx%d for --factor %d)", W / p, H / p, p);
        if (task == EDIT_COLORIZE) snprintf(also, sizeof also, " (or %dx%d gray)", W, H);
        free(pix);
        return cm_fail("%s is %dx%d %s, but the model takes %dx%d %s images%s", path, w, h,
                       channels_name(c), W, H, channels_name(C), also);
    }
    /* [h, w, c] bytes to planar [-1, 1]; a low-res pixel fills its p x p patch, a gray pixel
     * all three colours. */
    int s = lowres ? p : 1;
    for (int ch = 0; ch < C; ch++)
        for (int yy = 0; yy < H; yy++)
            for (int xx = 0; xx < W; xx++) {
                uint8_t v = pix[((size_t)(yy / s) * w + xx / s) * c + (gray ? 0 : ch)];
                y[((size_t)ch * H + yy) * W + xx] = v / 127.5f - 1.0f;
            }
    free(pix);
    *degraded = !full;
    return 0;
}
