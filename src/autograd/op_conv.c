/* op_conv.c: 2-D convolution (cross-correlation, as PyTorch's conv2d) forward and backward, and
 * the naive direct kernels the tests compare it with.
 *
 * Fast path: im2col + one cblas_sgemm per chunk of samples. A chunk of nb samples is unfolded
 * into col [K = Cin*kh*kw, nb*Ho*Wo] so one GEMM covers the whole chunk (large GEMMs keep
 * OpenBLAS's two threads busy; one GEMM per sample would be small and thread-bound):
 *   forward   yc [Cout, nb*P]  = w [Cout, K] . col [K, nb*P]            (P = Ho*Wo)
 *   dw       += dyc [Cout, nb*P] . col^T
 *   dx        col2im(w^T [K, Cout] . dyc [Cout, nb*P])
 * yc/dyc are the chunk's outputs with channels outermost; moving them from/to NCHW is a copy of
 * contiguous planes, cheap next to the GEMM. A 1x1, stride-1, unpadded conv needs no unfolding:
 * x[n] [Cin, H*W] already is col for one sample, so it runs one GEMM per sample on the tensors
 * themselves.
 *
 * Threads (STYLE.md 9): OpenMP loops do the unfolding, folding, copies and bias sums; BLAS calls
 * are made outside any parallel region, so OpenBLAS owns the GEMM threads. col2im writes each
 * (sample, input channel) plane from one thread, so the dx scatter-add is race-free.
 */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <omp.h>

/* Bytes of im2col workspace per chunk: bounds the arena cost of a wide conv while keeping each
 * GEMM large. Not static so that tests can shrink it to force several chunks. */
size_t conv2d_chunk_bytes = (size_t)8 << 20;

typedef struct ConvGeom {
    int N, Cin, H, W, Cout, kh, kw, stride, pad, Ho, Wo;
    int K;                     /* Cin*kh*kw: rows of col */
    int P;                     /* Ho*Wo: output pixels per sample */
} ConvGeom;

static ConvGeom conv_geom(const Tensor *x, const Tensor *w, int stride, int pad)
{
    ConvGeom g = {.N = x->shape[0], .Cin = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                  .Cout = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
                  .stride = stride, .pad = pad};
    g.Ho = (g.H + 2 * pad - g.kh) / stride + 1;
    g.Wo = (g.W + 2 * pad - g.kw) / stride + 1;
    g.K = g.Cin * g.kh * g.kw;
    g.P = g.Ho * g.Wo;
    return g;
}

static bool conv_is_pointwise(const ConvGeom *g)
{
    return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0;
}

/* Samples per chunk: as many as fit conv2d_chunk_bytes, at least one. */
static int conv_chunk(const ConvGeom *g)
{
    size_t per_sample = (size_t)g->K * (size_t)g->P * sizeof(float);
    size_t nb = conv2d_chunk_bytes / per_sample;
    return (int)CM_MAX(1, CM_MIN((size_t)g->N, nb));
}

/* Output columns [ow_lo, ow_hi) whose input column ow*stride - pad + kj lies inside [0, W). */
static void valid_cols(const ConvGeom *g, int kj, int *lo, int *hi)
{
    int off = kj - g->pad, s = g->stride;
    *lo = off >= 0 ? 0 : (-off + s - 1) / s;
    *hi = g->W - off <= 0 ? 0 : CM_MIN(g->Wo, (g->W - off + s - 1) / s);
    if (*hi < *lo) *hi = *lo;
}

/* Output rows [oh_lo, oh_hi) whose input row oh*stride - pad + ki lies inside [0, H). */
static void valid_rows(const ConvGeom *g, int ki, int *lo, int *hi)
{
    int off = ki - g->pad, s = g->stride;
    *lo = off >= 0 ? 0 : (-off + s - 1) / s;
    *hi = g->H - off <= 0 ? 0 : CM_MIN(g->Ho, (g->H - off + s - 1) / s);
    if (*hi < *lo) *hi = *lo;
}

/* Zero the entries of one unfolded plane cp [Ho, Wo] (kernel row ki, column kj) that fall
 * outside the image: the rows above and below it (two contiguous runs) and the few columns
 * outside [lo, hi) (walked down the columns: short row loops would become memset calls). */
static void zero_outside(const ConvGeom *g, int ki, int kj, float *cp)
{
    int lo, hi, rlo, rhi;
    valid_cols(g, kj, &lo, &hi);
    valid_rows(g, ki, &rlo, &rhi);
    memset(cp, 0, sizeof(float) * (size_t)rlo * g->Wo);
    memset(cp + (size_t)rhi * g->Wo, 0, sizeof(float) * (size_t)(g->Ho - rhi) * g->Wo);
    for (int ow = 0; ow < g->Wo; ow++)
        if (ow < lo || ow >= hi)
            for (int oh = rlo; oh < rhi; oh++) cp[(size_t)oh * g->Wo + ow] = 0;
}

/* A stride-1 conv whose output is as wide as its input ("same" padding, e.g. 3x3 pad 1): an
 * unfolded plane is then the input plane shifted by (ki - pad)*W + (kj - pad) elements, so it is
 * one contiguous copy plus zeroing of the entries that wrapped around a row edge. */
static bool conv_is_shift(const ConvGeom *g) { return g->stride == 1 && g->Wo == g->W; }

/* Column phases. With stride s, kernel column kj reads input column s*ow + kj - pad =
 * s*(ow + q) + v, where v = (kj - pad) mod s and q = floor((kj - pad) / s). Split into its s
 * column phases ph[v][ih][b] = plane[ih][s*b + v] (Ws = ceil(W/s) columns each), an input plane
 * unfolds by contiguous runs ph[v][ih][ow + q], ow in [lo, hi), instead of strided gathers.
 * With stride 1 the plane is its own single phase. */
static int phase_width(const ConvGeom *g) { return (g->W + g->stride - 1) / g->stride; }
static size_t phase_floats(const ConvGeom *g) { return (size_t)g->stride * g->H * phase_width(g); }

static void col_phase(const ConvGeom *g, int kj, int *v, int *q)
{
    int off = kj - g->pad, s = g->stride;
    *q = off >= 0 ? off / s : -((-off + s - 1) / s);
    *v = off - *q * s;
}

static void split_phases(const ConvGeom *g, const float *restrict plane, float *restrict ph)
{
    int s = g->stride, Ws = phase_width(g);
    for (int v = 0; v < s; v++)
        for (int ih = 0; ih < g->H; ih++) {
            const float *row = plane + (size_t)ih * g->W + v;
            float *dst = ph + ((size_t)v * g->H + ih) * Ws;
            for (int b = 0; b < (g->W - v + s - 1) / s; b++) dst[b] = row[b * s];
        }
}

/* plane (+)= the plane whose column phases are ph: the adjoint of split_phases. */
static void merge_phases(const ConvGeom *g, const float *restrict ph, float *restrict plane,
                         bool store)
{
    int s = g->stride, Ws = phase_width(g);
    for (int v = 0; v < s; v++)
        for (int ih = 0; ih < g->H; ih++) {
            float *row = plane + (size_t)ih * g->W + v;
            const float *src = ph + ((size_t)v * g->H + ih) * Ws;
            int nv = (g->W - v + s - 1) / s;
            if (store)
                for (int b = 0; b < nv; b++) row[b * s] = src[b];
            else
                for (int b = 0; b < nv; b++) row[b * s] += src[b];
        }
}

/* cp [Ho, Wo] = the unfolded plane of kernel position (ki, kj), from the phases ph of one input
 * plane: cp[oh, ow] = x[oh*stride - pad + ki, ow*stride - pad + kj], zero outside the image. */
static void unfold_plane(const ConvGeom *g, const float *restrict ph, int ki, int kj,
                         float *restrict cp)
{
    int lo, hi, rlo, rhi, v, q, Ws = phase_width(g);
    valid_cols(g, kj, &lo, &hi);
    valid_rows(g, ki, &rlo, &rhi);
    if (conv_is_shift(g)) {
        ptrdiff_t shift = (ptrdiff_t)(ki - g->pad) * g->W + (kj - g->pad);
        /* Clip the copy to the input plane; what it skips is zeroed below. */
        ptrdiff_t j0 = CM_MAX((ptrdiff_t)rlo * g->Wo, -shift);
        ptrdiff_t j1 = CM_MIN((ptrdiff_t)rhi * g->Wo, (ptrdiff_t)g->H * g->W - shift);
        for (ptrdiff_t j = j0; j < j1; j++) cp[j] = ph[j + shift];
    } else {
        col_phase(g, kj, &v, &q);
        for (int oh = rlo; oh < rhi; oh++) {
            const float *src = ph + ((size_t)v * g->H + oh * g->stride - g->pad + ki) * Ws + q;
            float *dst = cp + (size_t)oh * g->Wo;
            for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow];
        }
    }
    zero_outside(g, ki, kj, cp);
}

/* acc (phases of one input plane) += what unfold_plane took from it, read from cp. cp's entries
 * outside the image are zeroed first (cp is scratch), so the shift path adds contiguous runs. */
static void fold_plane(const ConvGeom *g, float *restrict cp, int ki, int kj,
                       float *restrict acc)
{
    int lo, hi, rlo, rhi, v, q, Ws = phase_width(g);
    valid_cols(g, kj, &lo, &hi);
    valid_rows(g, ki, &rlo, &rhi);
    zero_outside(g, ki, kj, cp);
    if (conv_is_shift(g)) {
        ptrdiff_t shift = (ptrdiff_t)(ki - g->pad) * g->W + (kj - g->pad);
        ptrdiff_t j0 = CM_MAX((ptrdiff_t)rlo * g->Wo, -shift);
        ptrdiff_t j1 = CM_MIN((ptrdiff_t)rhi * g->Wo, (ptrdiff_t)g->H * g->W - shift);
        for (ptrdiff_t j = j0; j < j1; j++) acc[j + shift] += cp[j];
        return;
    }
    col_phase(g, kj, &v, &q);
    for (int oh = rlo; oh < rhi; oh++) {
        float *dst = acc + ((size_t)v * g->H + oh * g->stride - g->pad + ki) * Ws + q;
        const float *src = cp + (size_t)oh * g->Wo;
        for (int ow = lo; ow < hi; ow++) dst[ow] += src[ow];
    }
}

/* col [K, nb*P] from x[n0 .. n0+nb): row (ci,ki,kj), column (n-n0)*P + oh*Wo + ow holds
 * x[n, ci, oh*stride - pad + ki, ow*stride - pad + kj], zero outside the image.
 * scratch: [threads, phase_floats] when stride > 1. One thread per (n, ci) input plane. */
static void im2col(const ConvGeom *g, const float *x, int n0, int nb, float *scratch, float *col)
{
    const int kk = g->kh * g->kw, ld = nb * g->P;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < nb; n++) {
        for (int ci = 0; ci < g->Cin; ci++) {
            const float *ph = x + ((size_t)(n0 + n) * g->Cin + ci) * g->H * g->W;
            if (g->stride > 1) {
                float *t = scratch + (size_t)omp_get_thread_num() * phase_floats(g);
                split_phases(g, ph, t);
                ph = t;
            }
            for (int k = 0; k < kk; k++)
                unfold_plane(g, ph, k / g->kw, k % g->kw,
                             col + (size_t)(ci * kk + k) * ld + (size_t)n * g->P);
        }
    }
}

/* The adjoint of im2col: dx[n0 + n] (+)= the entries of dcol [K, nb*P] im2col took from it
 * (store: dx = ..., else dx += ...); dcol is clobbered. One thread owns each (n, ci) plane: it
 * sums the plane's kh*kw contributions in its own scratch (scratch [threads, phase_floats]) and
 * adds the total to dx once, so dx gains exactly the same floats on every backward sweep (two
 * sweeps give exactly 2x, see tensor.h). */
static void col2im(const ConvGeom *g, float *dcol, int n0, int nb, float *scratch, float *dx,
                   bool store)
{
    const int kk = g->kh * g->kw, ld = nb * g->P;
    const size_t nph = phase_floats(g);
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < nb; n++) {
        for (int ci = 0; ci < g->Cin; ci++) {
            float *acc = scratch + (size_t)omp_get_thread_num() * nph;
            for (size_t i = 0; i < nph; i++) acc[i] = 0;
            for (int k = 0; k < kk; k++)
                fold_plane(g, dcol + (size_t)(ci * kk + k) * ld + (size_t)n * g->P, k / g->kw,
                           k % g->kw, acc);
            merge_phases(g, acc, dx + ((size_t)(n0 + n) * g->Cin + ci) * g->H * g->W, store);
        }
    }
}

/* Per-thread phase planes for im2col/col2im. */
static float *conv_scratch(Ctx *c, const ConvGeom *g)
{
    return arena_alloc(&c->arena, sizeof(float) * (size_t)cm_threads() * phase_floats(g));
}

/* dst[i] += src[i] */
static void add_into(float *dst, const float *src, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* y[n0 + n, co, :] = yc[co, n*P : (n+1)*P] + b[co] (b may be NULL). */
static void chunk_to_nchw(const ConvGeom *g, const float *yc, const float *b, int n0, int nb, float *y)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < nb; n++) {
        for (int co = 0; co < g->Cout; co++) {
            const float *src = yc + (size_t)co * nb * g->P + (size_t)n * g->P;
            float *dst = y + ((size_t)(n0 + n) * g->Cout + co) * g->P;
            float bias = b ? b[co] : 0.0f;
            for (int p = 0; p < g->P; p++) dst[p] = src[p] + bias;
        }
    }
}

/* dyc [Cout, nb*P] from dy[n0 .. n0+nb) [nb, Cout, P]. */
static void nchw_to_chunk(const ConvGeom *g, const float *dy, int n0, int nb, float *dyc)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int co = 0; co < g->Cout; co++)
        for (int n = 0; n < nb; n++)
            memcpy(dyc + (size_t)co * nb * g->P + (size_t)n * g->P,
                   dy + ((size_t)(n0 + n) * g->Cout + co) * g->P, sizeof(float) * (size_t)g->P);
}

/* y[n, co, :] = b[co]: the 1x1 path's GEMMs then accumulate onto it (beta = 1), which spares
 * both OpenBLAS's zeroing pass for beta = 0 and a separate bias pass. */
static void fill_bias(const ConvGeom *g, const float *b, float *y)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < g->N; n++)
        for (int co = 0; co < g->Cout; co++) {
            float *yp = y + ((size_t)n * g->Cout + co) * g->P;
            for (int p = 0; p < g->P; p++) yp[p] = b[co];
        }
}

Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad)
{
    char sx[64], sw[64], sb[64];
    CM_ASSERT(x->ndim == 4 && w->ndim == 4 && x->shape[1] == w->shape[1],
              "conv2d: x %s [N,Cin,H,W] and w %s [Cout,Cin,kh,kw] do not match",
              tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(w, sw, sizeof sw));
    CM_ASSERT(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]),
              "conv2d: bias %s does not match w %s", tensor_shape_str(b, sb, sizeof sb),
              tensor_shape_str(w, sw, sizeof sw));
    CM_ASSERT(stride >= 1 && pad >= 0, "conv2d: stride %d, pad %d", stride, pad);
    CM_ASSERT(x->shape[2] + 2 * pad >= w->shape[2] && x->shape[3] + 2 * pad >= w->shape[3],
              "conv2d: kernel %s larger than the padded input %s (pad %d)",
              tensor_shape_str(w, sw, sizeof sw), tensor_shape_str(x, sx, sizeof sx), pad);
    ConvGeom g = conv_geom(x, w, stride, pad);
    Tensor *y = TENSOR_NEW(c, g.N, g.Cout, g.Ho, g.Wo);

    if (conv_is_pointwise(&g)) {
        if (b) fill_bias(&g, b->data, y->data);
        for (int n = 0; n < g.N; n++)   /* y[n] [Cout, P] (+)= w [Cout, Cin] . x[n] [Cin, P] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, g.P, g.Cin, 1.0f,
                        w->data, g.Cin, x->data + (size_t)n * g.Cin * g.P, g.P, b ? 1.0f : 0.0f,
                        y->data + (size_t)n * g.Cout * g.P, g.P);
    } else {
        int nb = conv_chunk(&g);
        float *col = arena_alloc(&c->arena, sizeof(float) * (size_t)g.K * nb * g.P);
        float *yc = arena_alloc(&c->arena, sizeof(float) * (size_t)g.Cout * nb * g.P);
        float *scratch = g.stride > 1 ? conv_scratch(c, &g) : NULL;
        for (int n0 = 0; n0 < g.N; n0 += nb) {
            int m = CM_MIN(nb, g.N - n0);
            im2col(&g, x->data, n0, m, scratch, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g.Cout, m * g.P, g.K, 1.0f,
                        w->data, g.K, col, m * g.P, 0.0f, yc, m * g.P);
            chunk_to_nchw(&g, yc, b ? b->data : NULL, n0, m, y->data);
        }
    }

    TapeEntry *e = tape_record(c, OP_CONV2D, y, b ? 3 : 2, (Tensor *[]){x, w, b});
    if (e) {
        e->iarg[0] = stride;
        e->iarg[1] = pad;
    }
    return y;
}

/* db[co] += sum over samples and pixels of dy[n, co, :]; one thread per channel. */
static void bias_backward(const ConvGeom *g, const float *dy, float *db)
{
#pragma omp parallel for schedule(static)
    for (int co = 0; co < g->Cout; co++) {
        double s = 0;
        for (int n = 0; n < g->N; n++) {
            const float *p = dy + ((size_t)n * g->Cout + co) * g->P;
            float t = 0;
            for (int i = 0; i < g->P; i++) t += p[i];
            s += t;
        }
        db[co] += (float)s;
    }
}

/* Every gradient is first summed in full in scratch and then added to the existing one in a
 * single +=, so accumulating sweeps add exactly the same floats each time (tensor.h). A gradient
 * that does not exist yet is written directly instead (no zeroing, no extra pass). */
void conv2d_backward(Ctx *c, TapeEntry *e)
{
    Tensor *x = e->in[0], *w = e->in[1], *b = e->nin > 2 ? e->in[2] : NULL;
    ConvGeom g = conv_geom(x, w, e->iarg[0], e->iarg[1]);
    const float *dy = e->out->grad;
    bool need_x = entry_needs_grad(e, 0), need_w = entry_needs_grad(e, 1);

    if (b && entry_needs_grad(e, 2)) bias_backward(&g, dy, tensor_grad(c, b));
    if (!need_x && !need_w) return;
    /* A fresh dx (no gradient yet) is written, not accumulated: no zeroing pass. */
    bool fresh_x = need_x && !x->grad;
    if (fresh_x) x->grad = arena_alloc(&c->arena, sizeof(float) * x->n);
    float *gx = x->grad;
    float *gw = need_w ? tensor_grad(c, w) : NULL;
    size_t nw = (size_t)g.Cout * g.K;
    float *dw = need_w ? arena_alloc(&c->arena, sizeof(float) * nw) : NULL;

    if (conv_is_pointwise(&g)) {
        size_t nxs = (size_t)g.Cin * g.P;
        float *dxs = fresh_x ? NULL : arena_alloc(&c->arena, sizeof(float) * nxs);
        for (int n = 0; n < g.N; n++) {
            const float *dyn = dy + (size_t)n * g.Cout * g.P;
            if (need_w)   /* dw [Cout, Cin] += dy[n] [Cout, P] . x[n]^T [P, Cin] */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, g.Cin, g.P, 1.0f,
                            dyn, g.P, x->data + n * nxs, g.P, n ? 1.0f : 0.0f, dw, g.Cin);
            if (need_x) { /* dx[n] [Cin, P] = w^T [Cin, Cout] . dy[n] [Cout, P] */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.Cin, g.P, g.Cout, 1.0f,
                            w->data, g.Cin, dyn, g.P, 0.0f, fresh_x ? gx + n * nxs : dxs, g.P);
                if (!fresh_x) add_into(gx + n * nxs, dxs, nxs);
            }
        }
        if (need_w) add_into(gw, dw, nw);
        return;
    }

    /* One col buffer serves both: dw reads the unfolded x, then dx overwrites it with dcol. */
    int nb = conv_chunk(&g);
    float *col = arena_alloc(&c->arena, sizeof(float) * (size_t)g.K * nb * g.P);
    float *dyc = arena_alloc(&c->arena, sizeof(float) * (size_t)g.Cout * nb * g.P);
    float *scratch = conv_scratch(c, &g);
    for (int n0 = 0; n0 < g.N; n0 += nb) {
        int m = CM_MIN(nb, g.N - n0), ld = m * g.P;
        nchw_to_chunk(&g, dy, n0, m, dyc);
        if (need_w) {
            im2col(&g, x->data, n0, m, scratch, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g.Cout, g.K, ld, 1.0f, dyc, ld,
                        col, ld, n0 ? 1.0f : 0.0f, dw, g.K);
        }
        if (need_x) {
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g.K, ld, g.Cout, 1.0f, w->data,
                        g.K, dyc, ld, 0.0f, col, ld);
            col2im(&g, col, n0, m, scratch, gx, fresh_x);
        }
    }
    if (need_w) add_into(gw, dw, nw);
}

/* ---- naive direct kernels: the reference for tests ---- */

void conv2d_ref_forward(const float *x, const float *w, const float *b, float *y, int N, int Cin,
                        int H, int W, int Cout, int kh, int kw, int stride, int pad)
{
    int Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    for (int n = 0; n < N; n++)
        for (int co = 0; co < Cout; co++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    double s = b ? b[co] : 0.0;
                    for (int ci = 0; ci < Cin; ci++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                s += (double)x[((size_t)(n * Cin + ci) * H + ih) * W + iw] *
                                     w[((size_t)(co * Cin + ci) * kh + i) * kw + j];
                            }
                    y[((size_t)(n * Cout + co) * Ho + oh) * Wo + ow] = (float)s;
                }
}

/* Overwrites dx, dw, db (each may be NULL). Accumulates in double, then stores. */
void conv2d_ref_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int N, int Cin, int H, int W, int Cout, int kh, int kw,
                         int stride, int pad)
{
    int Ho = (H + 2 * pad - kh) / stride + 1, Wo = (W + 2 * pad - kw) / stride + 1;
    size_t nx = (size_t)N * Cin * H * W, nw = (size_t)Cout * Cin * kh * kw;
    double *ax = cm_calloc(nx, sizeof(double)), *aw = cm_calloc(nw, sizeof(double));
    double *ab = cm_calloc((size_t)Cout, sizeof(double));
    for (int n = 0; n < N; n++)
        for (int co = 0; co < Cout; co++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    double g = dy[((size_t)(n * Cout + co) * Ho + oh) * Wo + ow];
                    ab[co] += g;
                    for (int ci = 0; ci < Cin; ci++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                size_t xi = ((size_t)(n * Cin + ci) * H + ih) * W + iw;
                                size_t wi = ((size_t)(co * Cin + ci) * kh + i) * kw + j;
                                ax[xi] += g * w[wi];
                                aw[wi] += g * x[xi];
                            }
                }
    if (dx) for (size_t i = 0; i < nx; i++) dx[i] = (float)ax[i];
    if (dw) for (size_t i = 0; i < nw; i++) dw[i] = (float)aw[i];
    if (db) for (int i = 0; i < Cout; i++) db[i] = (float)ab[i];
    free(ax);
    free(aw);
    free(ab);
}
