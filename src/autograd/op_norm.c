/* op_norm.c: group normalisation and softmax, forward and backward.
 *
 * Group norm follows PyTorch's F.group_norm (Wu & He 2018): the channels of each sample are split
 * into `groups` contiguous groups; each (sample, group) is normalised with its own mean and biased
 * variance, then scaled and shifted per channel. Softmax runs over the last dim.
 *
 * Threads: OpenMP over independent (sample, channel), (sample, group) or row loops; parameter
 * gradients are reduced from per-(sample, channel) partials in a fixed order, so they are
 * race-free and do not depend on the thread count. Sums over a group or row are accumulated in
 * double.
 */
#include "ops.h"

#include <math.h>
#include <omp.h>

#include "fastmath.h"
#include "simd16.h"
#include "threads.h"

/* Work below this many elements is not worth waking the OpenMP threads for. */
#define PAR_MIN 32768

/* ---- group norm ----
 * x [N,C,...]: S = product of the dims after C, G groups of Cg = C/G channels, m = Cg*S elements
 * per group. For group (n,g):
 *     mean = sum(x)/m,  var = sum((x-mean)^2)/m,  rstd = 1/sqrt(var + eps)
 *     xhat = (x - mean) * rstd,   y = xhat * w[c] + b[c]   (w = 1, b = 0 when absent)
 * Saved (arena): mean[N*G] followed by rstd[N*G]. */

typedef struct GnDims {
    int N, C, G, Cg;
    size_t S;
} GnDims;

static GnDims gn_dims(const Tensor *x, int groups)
{
    GnDims d = {.N = x->shape[0], .C = x->shape[1], .G = groups, .Cg = x->shape[1] / groups};
    d.S = x->n / ((size_t)d.N * d.C);
    return d;
}

static void gn_check(const char *op, const Tensor *x, const Tensor *weight, const Tensor *bias,
                     int groups)
{
    char sx[64], sp[64];
    CM_ASSERT(x->ndim >= 2, "%s: input must be [N,C,...], got %s", op,
              tensor_shape_str(x, sx, sizeof sx));
    CM_ASSERT(groups >= 1 && x->shape[1] % groups == 0,
              "%s: %d groups do not divide the channels of %s", op, groups,
              tensor_shape_str(x, sx, sizeof sx));
    const Tensor *params[2] = {weight, bias};
    for (int i = 0; i < 2; i++)
        CM_ASSERT(!params[i] || (params[i]->ndim == 1 && params[i]->shape[0] == x->shape[1]),
                  "%s: %s %s does not match input %s (want [C])", op, i ? "bias" : "weight",
                  params[i] ? tensor_shape_str(params[i], sp, sizeof sp) : "",
                  tensor_shape_str(x, sx, sizeof sx));
}

/* mean and rstd of one group xg [m]. One pass, in double: var = E[x^2] - E[x]^2 loses about
 * log10((mean/std)^2) of double's 16 digits, so it keeps float's 7 until |mean| / std nears
 * 10^4.5, and beyond that the float data themselves have no digits left to lose (a float32
 * two-pass is what it replaces; ops.py's mean_200_std_2 case checks it). omp simd reductions:
 * lanes summed in a fixed order, so the bits do not depend on the thread count or the run. */
static void group_stats(const float *xg, size_t m, float eps, float *mean, float *rstd)
{
    double s = 0, q = 0;
#pragma omp simd reduction(+ : s, q)
    for (size_t k = 0; k < m; k++) {
        double v = xg[k];
        s += v;
        q += v * v;
    }
    gn_moments(s, q, (double)m, eps, mean, rstd);
}

void gn_moments(double s, double q, double m, float eps, float *mean, float *rstd)
{
    double mu = s / m, var = CM_MAX(0.0, q / m - mu * mu);
    *mean = (float)mu;
    *rstd = (float)(1.0 / sqrt(var + (double)eps));
}

/* yg = GN(xg) (silu: silu(GN(xg))) for group g of one sample, Cg channels of S. */
static void group_apply(const float *xg, int g, int Cg, size_t S, float mu, float r, const float *w,
                        const float *b, bool silu, float *yg)
{
    for (int j = 0; j < Cg; j++) {
        int ch = g * Cg + j;
        /* y = (x - mean) * (rstd w) + b. Not x * scale + (b - mean scale): when |mean| >> std
         * that form rounds x * scale at the magnitude of the mean and cancels afterwards. */
        float scale = r * (w ? w[ch] : 1.0f), shift = b ? b[ch] : 0.0f;
        const float *xc = xg + (size_t)j * S;
        float *yc = yg + (size_t)j * S;
        if (silu) {
#pragma omp simd
            for (size_t k = 0; k < S; k++) {
                float u = (xc[k] - mu) * scale + shift;
                yc[k] = u * cm_sigmoidf(u);
            }
        } else {
#pragma omp simd
            for (size_t k = 0; k < S; k++) yc[k] = (xc[k] - mu) * scale + shift;
        }
    }
}

void gn_stats(const float *x, int N, int C, size_t S, int groups, float eps, float *mean, float *rstd)
{
    size_t m = (size_t)(C / groups) * S;
#pragma omp parallel for schedule(static) if ((size_t)N * C * S >= PAR_MIN)
    for (int ng = 0; ng < N * groups; ng++) group_stats(x + (size_t)ng * m, m, eps, &mean[ng], &rstd[ng]);
}

void gn_stats_serial(const float *x, int N, int C, size_t S, int groups, float eps, float *mean, float *rstd)
{
    size_t m = (size_t)(C / groups) * S;
    for (int ng = 0; ng < N * groups; ng++) group_stats(x + (size_t)ng * m, m, eps, &mean[ng], &rstd[ng]);
}

void gn_silu_apply(const float *x, int N, int C, size_t S, int groups, const float *mean,
                   const float *rstd, const float *w, const float *b, float *y)
{
    int Cg = C / groups;
    size_t m = (size_t)Cg * S;
#pragma omp parallel for schedule(static) if ((size_t)N * C * S >= PAR_MIN)
    for (int ng = 0; ng < N * groups; ng++)
        group_apply(x + (size_t)ng * m, ng % groups, Cg, S, mean[ng], rstd[ng], w, b, true, y + (size_t)ng * m);
}

/* y = GN(x) (silu: y = silu(GN(x))); fills the saved stats. Each group's statistics and output
 * in one go, while the group is in L1. */
static Tensor *gn_forward(Ctx *c, OpKind op, Tensor *x, Tensor *weight, Tensor *bias, int groups,
                          float eps, bool silu)
{
    gn_check(OPS[op].name, x, weight, bias, groups);
    GnDims d = gn_dims(x, groups);
    size_t m = (size_t)d.Cg * d.S;

    Tensor *y = tensor_like(c, x);
    float *stats = arena_alloc(&c->arena, 2 * (size_t)d.N * d.G * sizeof(float));
    float *mean = stats, *rstd = stats + (size_t)d.N * d.G;
    const float *w = weight ? weight->data : NULL, *b = bias ? bias->data : NULL;

#pragma omp parallel for schedule(static) if (x->n >= PAR_MIN)
    for (int ng = 0; ng < d.N * d.G; ng++) {
        const float *xg = x->data + (size_t)ng * m;   /* a group is contiguous: Cg channels of S */
        group_stats(xg, m, eps, &mean[ng], &rstd[ng]);
        group_apply(xg, ng % d.G, d.Cg, d.S, mean[ng], rstd[ng], w, b, silu, y->data + (size_t)ng * m);
    }

    TapeEntry *e = tape_record(c, op, y, 3, (Tensor *[]){x, weight, bias});
    if (e) {
        e->iarg[0] = groups;
        e->farg[0] = eps;
        e->saved = stats;
    }
    return y;
}

Tensor *op_group_norm(Ctx *c, Tensor *x, Tensor *weight, Tensor *bias, int groups, float eps)
{
    return gn_forward(c, OP_GROUP_NORM, x, weight, bias, groups, eps, false);
}

Tensor *op_group_norm_silu(Ctx *c, Tensor *x, Tensor *weight, Tensor *bias, int groups, float eps)
{
    return gn_forward(c, OP_GROUP_NORM_SILU, x, weight, bias, groups, eps, true);
}

/* One channel of gn_grad's SiLU branch: guc = gy silu'(u) for u = (x - mu) scale + shift, and the
 * sums of guc xhat (xhat = (x - mu) r) and of guc in *sa, *sb. */
static void gn_silu_channel(const float *xc, const float *gc, float *guc, size_t S, float mu, float r, float scale,
                            float shift, double *sa, double *sb)
{
#ifdef __AVX512F__
    /* 16 lanes of float sums, added into the double sums every 256 values: as precise as the
     * scalar loop's double sums within ~1e-7 of their size, and without its conversions and
     * division; the next 1 KB prefetched, as the loop waited on its loads (the scalar loop was
     * 10.0% of the one-thread BCM training step, this one 5.6%). */
    const __m512 vmu = _mm512_set1_ps(mu), vr = _mm512_set1_ps(r), vs = _mm512_set1_ps(scale),
                 vsh = _mm512_set1_ps(shift), one = _mm512_set1_ps(1.0f);
    double da = 0, db = 0;
    for (size_t k0 = 0; k0 < S; k0 += 256) {
        const size_t end = k0 + 256 < S ? k0 + 256 : S;
        __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
        for (size_t k = k0; k < end; k += 16) {
            const __mmask16 m = lanes16((int)(end - k));
            _mm_prefetch((const char *)(xc + k + 256), _MM_HINT_T0);
            _mm_prefetch((const char *)(gc + k + 256), _MM_HINT_T0);
            __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xc + k), vmu);
            __m512 u = _mm512_fmadd_ps(d, vs, vsh), sg = sigmoid16(u);
            /* silu'(u) = s (1 + u (1 - s)); masked lanes: gy 0, so g 0 */
            __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, gc + k),
                                     _mm512_mul_ps(sg, _mm512_fmadd_ps(u, _mm512_sub_ps(one, sg), one)));
            _mm512_mask_storeu_ps(guc + k, m, g);
            a = _mm512_fmadd_ps(g, _mm512_mul_ps(d, vr), a);
            b = _mm512_add_ps(b, g);
        }
        da += _mm512_reduce_add_pd(_mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)),
                                                 _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1))));
        db += _mm512_reduce_add_pd(_mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(b)),
                                                 _mm512_cvtps_pd(_mm512_extractf32x8_ps(b, 1))));
    }
    *sa = da;
    *sb = db;
#else
    double da = 0, db = 0;
#pragma omp simd reduction(+ : da, db)
    for (size_t k = 0; k < S; k++) {
        float xhat = (xc[k] - mu) * r, u = (xc[k] - mu) * scale + shift, s = cm_sigmoidf(u);
        float g = gc[k] * (s * (1.0f + u * (1.0f - s)));
        guc[k] = g;
        da += g * xhat;
        db += g;
    }
    *sa = da;
    *sb = db;
#endif
}

/* With gy = dL/dy and the per-channel sums over one sample's spatial positions
 *     A[n,c] = sum_s gy * xhat,     B[n,c] = sum_s gy,
 * the parameter gradients are dw[c] = sum_n A[n,c] and db[c] = sum_n B[n,c].
 *
 * For dx, write gxhat = gy * w[c]. Within a group, xhat_k = (x_k - mean) rstd with
 *     d mean / d x_j = 1/m,    d rstd / d x_j = -rstd^3 (x_j - mean)/m = -rstd^2 xhat_j / m,
 * so d xhat_k / d x_j = rstd (delta_kj - 1/m - xhat_k xhat_j / m) and
 *     dx_j = rstd * (gxhat_j - mean_k(gxhat_k) - xhat_j * mean_k(gxhat_k xhat_k)),
 * where the two group means are again per-channel sums: m * mean(gxhat) = sum_c w[c] B[n,c] and
 * m * mean(gxhat xhat) = sum_c w[c] A[n,c]. One pass computes A and B, a second writes dx.
 *
 * group_norm_silu: y = silu(u), u = xhat w + b, so the GN backward runs on
 * gu = gy silu'(u) = gy s (1 + u (1 - s)), s = sigmoid(u), with u recomputed from x and the
 * saved statistics (the GN output is never stored). The first pass writes gu to a workspace
 * and forms A and B from it; the second reads it.
 *
 * Both passes run group by group, the second right after the first, so that the group's x, gy
 * and gu are still in cache when dx is written (a group is Cg S floats, at most a few tens of
 * KiB): x and gy are read from memory once, and gu lives in a per-thread workspace of one group.
 * The sums over a channel are those of one pass over it, in the same order, whatever the thread
 * count. */
void gn_grad(Ctx *c, const float *x, int N, int C, size_t S, int groups, const float *mean,
             const float *rstd, const float *w, const float *b, bool silu, const float *gy, float *gx,
             bool fresh_x, float *gw, float *gb)
{
    GnDims d = {.N = N, .C = C, .G = groups, .Cg = C / groups, .S = S};
    size_t m = (size_t)d.Cg * d.S, total = (size_t)N * C * S;
    ArenaMark mark = arena_mark(&c->arena);
    const int T = total >= PAR_MIN ? cm_threads() : 1;
    float *gu_all = silu ? arena_alloc(&c->arena, (size_t)T * m * sizeof(float)) : NULL;

    /* Per-(n,c) sums A (gy*xhat) and B (gy), gy := gu for silu. */
    double *A = arena_alloc(&c->arena, 2 * (size_t)d.N * d.C * sizeof(double));
    double *B = A + (size_t)d.N * d.C;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
    for (int ng = 0; ng < d.N * d.G; ng++) {
        const int n = ng / d.G, g0 = ng % d.G * d.Cg;
        const float mu = mean[ng], r = rstd[ng];
        const float *xg = x + (size_t)ng * m, *gyg = gy + (size_t)ng * m;
        float *gu = silu ? gu_all + (size_t)omp_get_thread_num() * m : NULL;
        double sum_g = 0, sum_gx = 0;   /* sum over the group of gxhat and of gxhat * xhat */
        for (int j = 0; j < d.Cg; j++) {
            const int ch = g0 + j;
            const float *xc = xg + (size_t)j * d.S, *gc = gyg + (size_t)j * d.S;
            double sa = 0, sb = 0;
            if (silu) {
                gn_silu_channel(xc, gc, gu + (size_t)j * d.S, d.S, mu, r, r * (w ? w[ch] : 1.0f), b ? b[ch] : 0.0f,
                                &sa, &sb);
            } else {
#pragma omp simd reduction(+ : sa, sb)
                for (size_t k = 0; k < d.S; k++) {
                    sa += gc[k] * ((xc[k] - mu) * r);
                    sb += gc[k];
                }
            }
            A[(size_t)n * d.C + ch] = sa;
            B[(size_t)n * d.C + ch] = sb;
            double wc = w ? w[ch] : 1.0;
            sum_g += wc * sb;
            sum_gx += wc * sa;
        }
        if (!gx) continue;
        const float *gq = silu ? gu : gyg;
        float mean_g = (float)(sum_g / (double)m), mean_gx = (float)(sum_gx / (double)m);
        for (int j = 0; j < d.Cg; j++) {
            float wc = w ? w[g0 + j] : 1.0f;
            const float *xc = xg + (size_t)j * d.S, *gc = gq + (size_t)j * d.S;
            float *dxc = gx + (size_t)ng * m + (size_t)j * d.S;
            if (fresh_x) {
#pragma omp simd
                for (size_t k = 0; k < d.S; k++) {
                    float xhat = (xc[k] - mu) * r;
                    dxc[k] = r * (gc[k] * wc - mean_g - xhat * mean_gx);
                }
            } else {
#pragma omp simd
                for (size_t k = 0; k < d.S; k++) {
                    float xhat = (xc[k] - mu) * r;
                    dxc[k] += r * (gc[k] * wc - mean_g - xhat * mean_gx);
                }
            }
        }
    }

    if (gw || gb) {
        for (int ch = 0; ch < d.C; ch++) {
            double sw = 0, sb = 0;
            for (int n = 0; n < d.N; n++) {
                sw += A[(size_t)n * d.C + ch];
                sb += B[(size_t)n * d.C + ch];
            }
            if (gw) gw[ch] += (float)sw;
            if (gb) gb[ch] += (float)sb;
        }
    }
    arena_release(&c->arena, mark);
}

static void gn_backward(Ctx *c, TapeEntry *e, bool silu)
{
    Tensor *x = e->in[0], *weight = e->in[1], *bias = e->in[2];
    GnDims d = gn_dims(x, e->iarg[0]);
    const float *mean = e->saved, *rstd = mean + (size_t)d.N * d.G;
    /* A fresh dx is written, not accumulated: no zeroing pass. */
    bool fresh_x = entry_needs_grad(e, 0) && !x->grad;
    float *gx = !entry_needs_grad(e, 0) ? NULL : fresh_x ? tensor_grad_fresh(c, x) : x->grad;
    float *gw = entry_needs_grad(e, 1) ? tensor_grad(c, weight) : NULL;
    float *gb = entry_needs_grad(e, 2) ? tensor_grad(c, bias) : NULL;
    gn_grad(c, x->data, d.N, d.C, d.S, d.G, mean, rstd, weight ? weight->data : NULL,
            bias ? bias->data : NULL, silu, e->out->grad, gx, fresh_x, gw, gb);
}

void group_norm_backward(Ctx *c, TapeEntry *e) { gn_backward(c, e, false); }
void group_norm_silu_backward(Ctx *c, TapeEntry *e) { gn_backward(c, e, true); }

/* ---- softmax over the last dim: y_i = exp(x_i - max x) / sum_j exp(x_j - max x) ----
 * Subtracting the row max keeps every exponent <= 0 (no overflow) and leaves y unchanged. */

Tensor *op_softmax(Ctx *c, Tensor *x)
{
    int L = x->shape[x->ndim - 1];
    size_t rows = x->n / (size_t)L;
    Tensor *y = tensor_like(c, x);

#pragma omp parallel for schedule(static) if (x->n >= PAR_MIN)
    for (size_t i = 0; i < rows; i++) {
        const float *xr = x->data + i * L;
        float *yr = y->data + i * L;
        /* Vector loops: with fmaxf (a libm call per element) and a double sum both loops ran as
         * scalar code, even under omp simd (17% of M's bf16 sampling in a profile). The sum is a
         * float one in 16 lanes, each adding L/16 terms in (0, 1]. A NaN in xr[0] now makes the
         * whole row NaN where fmaxf skipped it; the element was NaN either way. */
        float mx = xr[0];
#pragma omp simd reduction(max : mx)
        for (int j = 1; j < L; j++) mx = xr[j] > mx ? xr[j] : mx;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (int j = 0; j < L; j++) {
            yr[j] = cm_expf(xr[j] - mx);
            s += yr[j];
        }
        float inv = 1.0f / s;
#pragma omp simd
        for (int j = 0; j < L; j++) yr[j] *= inv;
    }

    tape_record(c, OP_SOFTMAX, y, 1, (Tensor *[]){x});
    return y;
}

/* dy_i/dx_j = y_i (delta_ij - y_j), so dx_j = sum_i gy_i y_i (delta_ij - y_j)
 *                                          = y_j (gy_j - sum_i gy_i y_i).
 * Only the output is needed, not x. */
void softmax_backward(Ctx *c, TapeEntry *e)
{
    if (!entry_needs_grad(e, 0)) return;
    Tensor *x = e->in[0];
    int L = x->shape[x->ndim - 1];
    size_t rows = x->n / (size_t)L;
    const float *y = e->out->data, *gy = e->out->grad;
    float *gx = tensor_grad(c, x);

#pragma omp parallel for schedule(static) if (x->n >= PAR_MIN)
    for (size_t i = 0; i < rows; i++) {
        const float *yr = y + i * L, *gr = gy + i * L;
        float *dr = gx + i * L;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < L; j++) dot += (double)gr[j] * yr[j];
#pragma omp simd
        for (int j = 0; j < L; j++) dr[j] += yr[j] * (gr[j] - (float)dot);
    }
}
