/* op_conv.c: 2-D convolution (cross-correlation, as PyTorch's conv2d) forward and backward, and
 * the naive direct kernels the tests compare it with.
 *
 * 3x3 stride-1 convolutions with at least 16 channels in and out and pad <= 2 (nearly all of a
 * U-Net's FLOPs) go to Winograd (conv_wino.c) where the build has AVX-512; the rest, and
 * every conv of a portable build, take the path below. In a bf16 context (tensor.h's precision)
 * both paths' products are bf16 (conv_wino.h, gemm_bf16.h). The forward pass of a stride-1 conv
 * with at most 4 output channels (a U-Net's last) takes a direct path instead, in fp32 (see
 * conv2d_direct_usable); its backward is the im2col path's.
 *
 * im2col path: im2col + sgemm (gemm_run: gemm_bf16 in a bf16 context), each thread on its own
 * share of the samples (see thread_share for why and what it measured). A thread unfolds a chunk
 * of nb of its samples into col [K = Cin*kh*kw, nb*P] (P = Ho*Wo), nb capped by
 * conv2d_chunk_bytes so that col stays in the core's L2, and runs one single-threaded GEMM over
 * it:
 *   forward   y[n] (or yc [Cout, nb*P]) = w [Cout, K] . col
 *   dw_t     += dyc [Cout, nb*P] . col^T     (col recomputed from x; per-thread partial dw_t)
 *   dx       += col2im(w^T [K, Cout] . dyc)
 * With nb = 1 (most U-Net shapes) the GEMMs read and write NCHW directly; with nb > 1 (small
 * images) yc/dyc hold the chunk channels-outermost and are copied from/to NCHW in the thread. A
 * 1x1, stride-1, unpadded conv skips im2col: x[n] [Cin, H*W] already is col for one sample.
 * In bf16 the weights (w for y, w^T for dx) are rounded and packed into pairs once per call,
 * before the threads start, and read by every thread's GEMMs (gemm_bf16_a): not once per chunk.
 *
 * Unfolding goes through "phases" (see split_phases) so that stride 2 copies contiguous runs
 * rather than gathering every other pixel.
 *
 * Threads: one parallel region per call; the GEMM is called inside it and runs single-threaded
 * there (OpenBLAS's OpenMP build and gemm_bf16 check omp_in_parallel), the exception to
 * STYLE.md 9 argued at thread_share. Reductions are race-free and fixed-order: a thread owns its
 * samples' dx planes, db is one channel per thread, the dw partials are added in thread order.
 */
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "conv_wino.h"
#include "gemm_bf16.h"

/* Bytes of col per chunk of one thread, about half a core's L2 here: the unfolded chunk is then
 * still in L2 when OpenBLAS packs it. Not static so that tests can shrink it to force several
 * chunks. */
size_t conv2d_chunk_bytes = (size_t)1 << 20;

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

/* 2 x multiply-adds of one of the three products (forward, dx, dw). */
static double conv_flops(const ConvGeom *g)
{
    return 2.0 * g->N * g->Cout * (double)g->P * g->K;
}

static bool conv_is_pointwise(const ConvGeom *g)
{
    return g->kh == 1 && g->kw == 1 && g->stride == 1 && g->pad == 0;
}

/* Samples per chunk: as many as fit conv2d_chunk_bytes, at least one; the 1x1 path
 * takes one sample at a time (x[n] is its col, in place). */
static int conv_chunk(const ConvGeom *g)
{
    if (conv_is_pointwise(g)) return 1;
    size_t per_sample = (size_t)g->K * (size_t)g->P * sizeof(float);
    size_t nb = conv2d_chunk_bytes / per_sample, T = (size_t)cm_threads();
    /* at most a quarter of a thread's share, so that the dynamic forward split has chunks to balance */
    return (int)CM_MAX(1, CM_MIN(((size_t)g->N + 4 * T - 1) / (4 * T), nb));
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

/* Phases. With stride s, output (oh, ow) of kernel tap (ki, kj) reads input pixel
 * (s*oh + ki - pad, s*ow + kj - pad) = (s*(oh + qr) + u, s*(ow + qc) + v), where
 * ki - pad = s*qr + u and kj - pad = s*qc + v with u, v in [0, s). An input plane split into its
 * s*s phases ph[u][v][a][b] = plane[s*a + u][s*b + v] (Hs x Ws each, Hs = ceil(H/s),
 * Ws = ceil(W/s)) thus unfolds by contiguous runs ph[u][v][oh + qr][ow + qc] instead of strided
 * gathers. When Wo == Ws ("same" padding: 3x3 pad 1 at stride 1 or 2) a whole unfolded plane is
 * one contiguous run of its phase shifted by qr*Ws + qc, then zeroing of the entries that
 * wrapped around a row edge. With stride 1 the plane is its own single phase. */
static int phase_h(const ConvGeom *g) { return (g->H + g->stride - 1) / g->stride; }
static int phase_w(const ConvGeom *g) { return (g->W + g->stride - 1) / g->stride; }
static size_t phase_floats(const ConvGeom *g)
{
    return (size_t)g->stride * g->stride * phase_h(g) * phase_w(g);
}

/* Where tap (ki, kj) reads: returns the offset of its phase plane; *shift = qr*Ws + qc. */
static size_t tap_phase(const ConvGeom *g, int ki, int kj, ptrdiff_t *shift)
{
    int s = g->stride, offr = ki - g->pad, offc = kj - g->pad;
    int qr = offr >= 0 ? offr / s : -((-offr + s - 1) / s);   /* floor division */
    int qc = offc >= 0 ? offc / s : -((-offc + s - 1) / s);
    int u = offr - qr * s, v = offc - qc * s;
    *shift = (ptrdiff_t)qr * phase_w(g) + qc;
    return ((size_t)u * s + v) * phase_h(g) * phase_w(g);
}

/* ph = the phases of plane [H, W] (stride > 1); entries past the plane's edge are zero. Walks
 * each input row once, writing all s column phases, so the reads are contiguous. */
static void split_phases(const ConvGeom *g, const float *restrict plane, float *restrict ph)
{
    int s = g->stride, Hs = phase_h(g), Ws = phase_w(g);
    size_t pl = (size_t)Hs * Ws;
    memset(ph, 0, sizeof(float) * phase_floats(g));
    for (int ih = 0; ih < g->H; ih++) {
        const float *row = plane + (size_t)ih * g->W;
        float *dst = ph + (size_t)(ih % s) * s * pl + (size_t)(ih / s) * Ws;
        if (s == 2) {   /* the common case, spelled out so that it vectorizes */
            for (int b = 0; b < g->W / 2; b++) {
                dst[b] = row[2 * b];
                dst[pl + b] = row[2 * b + 1];
            }
            if (g->W % 2) dst[g->W / 2] = row[g->W - 1];
        } else {
            for (int iw = 0; iw < g->W; iw++) dst[(size_t)(iw % s) * pl + iw / s] = row[iw];
        }
    }
}

/* plane (+)= the plane whose phases are ph (store: =): the adjoint of split_phases. */
static void merge_phases(const ConvGeom *g, const float *restrict ph, float *restrict plane,
                         bool store)
{
    int s = g->stride, W = g->W, Ws = phase_w(g);
    size_t pl = (size_t)phase_h(g) * Ws;
    for (int ih = 0; ih < g->H; ih++) {
        float *row = plane + (size_t)ih * W;
        const float *src = ph + (size_t)(ih % s) * s * pl + (size_t)(ih / s) * Ws;
        if (s == 1) {
            for (int iw = 0; iw < W; iw++) row[iw] = (store ? 0 : row[iw]) + src[iw];
        } else if (s == 2) {
            for (int b = 0; b < W / 2; b++) {
                row[2 * b] = (store ? 0 : row[2 * b]) + src[b];
                row[2 * b + 1] = (store ? 0 : row[2 * b + 1]) + src[pl + b];
            }
            if (W % 2) row[W - 1] = (store ? 0 : row[W - 1]) + src[W / 2];
        } else {
            for (int iw = 0; iw < W; iw++)
                row[iw] = (store ? 0 : row[iw]) + src[(size_t)(iw % s) * pl + iw / s];
        }
    }
}

/* cp [Ho, Wo] = the unfolded plane of tap (ki, kj), from the phases of one input plane:
 * cp[oh, ow] = x[oh*stride - pad + ki, ow*stride - pad + kj], zero outside the image. */
static void unfold_plane(const ConvGeom *g, const float *phases, int ki, int kj,
                         float *restrict cp)
{
    int lo, hi, rlo, rhi, Ws = phase_w(g);
    ptrdiff_t shift;
    const float *restrict ph = phases + tap_phase(g, ki, kj, &shift);
    valid_cols(g, kj, &lo, &hi);
    valid_rows(g, ki, &rlo, &rhi);
    if (g->Wo == Ws) {
        /* Clip the run to the phase plane; what it skips is zeroed below. */
        ptrdiff_t j0 = CM_MAX((ptrdiff_t)rlo * g->Wo, -shift);
        ptrdiff_t j1 = CM_MIN((ptrdiff_t)rhi * g->Wo, (ptrdiff_t)phase_h(g) * Ws - shift);
        for (ptrdiff_t j = j0; j < j1; j++) cp[j] = ph[j + shift];
    } else {
        for (int oh = rlo; oh < rhi; oh++) {
            ptrdiff_t src = (ptrdiff_t)oh * Ws + shift;
            float *dst = cp + (size_t)oh * g->Wo;
            for (int ow = lo; ow < hi; ow++) dst[ow] = ph[src + ow];
        }
    }
    zero_outside(g, ki, kj, cp);
}

/* acc (the phases of one input plane) += what unfold_plane took from it, read from cp. cp's
 * entries outside the image are zeroed first (cp is scratch), so whole runs can be added. */
static void fold_plane(const ConvGeom *g, float *restrict cp, int ki, int kj, float *acc)
{
    int lo, hi, rlo, rhi, Ws = phase_w(g);
    ptrdiff_t shift;
    float *restrict ph = acc + tap_phase(g, ki, kj, &shift);
    valid_cols(g, kj, &lo, &hi);
    valid_rows(g, ki, &rlo, &rhi);
    zero_outside(g, ki, kj, cp);
    if (g->Wo == Ws) {
        ptrdiff_t j0 = CM_MAX((ptrdiff_t)rlo * g->Wo, -shift);
        ptrdiff_t j1 = CM_MIN((ptrdiff_t)rhi * g->Wo, (ptrdiff_t)phase_h(g) * Ws - shift);
        for (ptrdiff_t j = j0; j < j1; j++) ph[j + shift] += cp[j];
        return;
    }
    for (int oh = rlo; oh < rhi; oh++) {
        ptrdiff_t dst = (ptrdiff_t)oh * Ws + shift;
        const float *src = cp + (size_t)oh * g->Wo;
        for (int ow = lo; ow < hi; ow++) ph[dst + ow] += src[ow];
    }
}

/* col [K, nb*P] from x[n0 .. n0+nb): row (ci,ki,kj), column (n-n0)*P + oh*Wo + ow holds
 * x[n, ci, oh*stride - pad + ki, ow*stride - pad + kj], zero outside the image.
 * ph: one plane's phases (phase_floats) when stride > 1. Serial: runs in the calling thread. */
static void im2col(const ConvGeom *g, const float *x, int n0, int nb, float *ph, float *col)
{
    const int kk = g->kh * g->kw, ld = nb * g->P;
    for (int n = 0; n < nb; n++) {
        for (int ci = 0; ci < g->Cin; ci++) {
            const float *plane = x + ((size_t)(n0 + n) * g->Cin + ci) * g->H * g->W;
            if (g->stride > 1) {
                split_phases(g, plane, ph);
                plane = ph;
            }
            for (int k = 0; k < kk; k++)
                unfold_plane(g, plane, k / g->kw, k % g->kw,
                             col + (size_t)(ci * kk + k) * ld + (size_t)n * g->P);
        }
    }
}

/* The adjoint of im2col: dx[n0 + n] (+)= the entries of dcol [K, nb*P] im2col took from it
 * (store: dx = ..., else dx += ...); dcol is clobbered. Each (n, ci) plane's kh*kw contributions
 * are summed in acc (phase_floats) and added to dx once, so dx gains exactly the same floats on
 * every backward sweep (two sweeps give exactly 2x, see tensor.h). Serial. */
static void col2im(const ConvGeom *g, float *dcol, int n0, int nb, float *acc, float *dx, bool store)
{
    const int kk = g->kh * g->kw, ld = nb * g->P;
    const size_t nph = phase_floats(g);
    for (int n = 0; n < nb; n++) {
        for (int ci = 0; ci < g->Cin; ci++) {
            memset(acc, 0, sizeof(float) * nph);
            for (int k = 0; k < kk; k++)
                fold_plane(g, dcol + (size_t)(ci * kk + k) * ld + (size_t)n * g->P, k / g->kw,
                           k % g->kw, acc);
            merge_phases(g, acc, dx + ((size_t)(n0 + n) * g->Cin + ci) * g->H * g->W, store);
        }
    }
}

/* Threads. Every conv runs as one parallel region in which each thread takes a contiguous,
 * fixed share of the samples (the backward pass; the forward pass takes chunks dynamically) and
 * does everything for them itself: unfold, a single-threaded
 * sgemm (OpenBLAS runs single-threaded inside a parallel region), fold, copies. This replaces
 * STYLE.md 9's "OpenBLAS owns the GEMM threads" for conv2d. Measured on the S U-Net (2 cores):
 * with OpenBLAS threading each chunk's GEMM, every conv went through 3-4 fork/join phases
 * (im2col, GEMM, copy-out; and col2im in backward), the threads spun or yielded at each barrier
 * (libgomp + sched_yield ~10% of the step), and the layout copies between NCHW and the chunk
 * layout cost another 7%. Per-thread work keeps a sample's unfolded columns in that core's L2
 * and lets the GEMM write NCHW directly.
 * Determinism: the share of thread t is samples [N t / T, N (t+1) / T), so for a given thread
 * count every thread sums the same samples in the same order; dw is summed per thread and the
 * partials are added in thread order (same bits on every run with T threads; a different T
 * rounds differently). */
static void thread_share(int N, int *lo, int *hi)
{
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    *lo = (int)((long)N * t / T);
    *hi = (int)((long)N * (t + 1) / T);
}

/* Per-thread workspace of one conv call: floats per thread for col [K, nb*P], the chunk's
 * outputs yc [Cout, nb*P], one plane's phases and the dw partial [Cout, K]. */
typedef struct ConvWork {
    int nb;                    /* samples per chunk */
    size_t col, yc, ph, dw, per_thread;
    float *mem;
    const uint32_t *wp;        /* bf16: the weights' pairs (pack_weights), else NULL */
} ConvWork;

static ConvWork conv_work(Ctx *c, const ConvGeom *g, bool with_dw)
{
    ConvWork w = {.nb = conv_chunk(g)};
    bool pointwise = conv_is_pointwise(g);
    w.col = pointwise ? (size_t)g->Cin * g->P : (size_t)g->K * w.nb * g->P;
    w.yc = w.nb > 1 ? (size_t)g->Cout * w.nb * g->P : 0;
    w.ph = pointwise ? 0 : phase_floats(g);
    w.dw = with_dw ? (size_t)g->Cout * g->K : 0;
    /* Round each thread's block up to whole cache lines so threads never share one. */
    w.per_thread = (w.col + w.yc + w.ph + w.dw + 15) & ~(size_t)15;
    w.mem = arena_alloc(&c->arena, sizeof(float) * w.per_thread * (size_t)cm_threads());
    return w;
}

/* bf16: op(w) (w [Cout, K] forward, w^T [K, Cout] for dx: ta) packed once per call, before the
 * threads share it read-only, instead of once per chunk of samples inside gemm_bf16. */
static const uint32_t *pack_weights(Ctx *c, const ConvGeom *g, const float *wt, bool ta)
{
    if (c->precision != CM_PRECISION_BF16) return NULL;
    const int M = ta ? g->K : g->Cout, K = ta ? g->Cout : g->K;
    uint32_t *wp = arena_alloc(&c->arena, sizeof(uint32_t) * gemm_bf16_a_words(M, K));
    gemm_bf16_pack_a(ta, M, K, wt, g->K, wp);
    return wp;
}

/* C [M, N] = alpha op(w) B + beta C, op(w) [M, K]: gemm_run, or from the packed weights (bf16). */
static void weights_gemm(CmPrecision prec, const ConvWork *w, bool ta, int M, int N, int K, float alpha,
                         const float *wt, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (w->wp) gemm_bf16_a(ta, false, M, N, K, alpha, w->wp, B, ldb, beta, C, ldc);
    else gemm_run(prec, ta, false, M, N, K, alpha, wt, ta ? M : K, B, ldb, beta, C, ldc);
}

static float *work_col(const ConvWork *w) { return w->mem + w->per_thread * (size_t)omp_get_thread_num(); }
static float *work_yc(const ConvWork *w) { return work_col(w) + w->col; }
static float *work_ph(const ConvWork *w) { return work_yc(w) + w->yc; }
static float *work_dw(const ConvWork *w, int t) { return w->mem + w->per_thread * (size_t)t + w->col + w->yc + w->ph; }

/* The epilogue's bias of sample n and channel co: b[co] + bn[n, co]. */
static float epilogue_bias(const ConvGeom *g, const ConvEpilogue *ep, int n, int co)
{
    return (ep->b ? ep->b[co] : 0.0f) + (ep->bn ? ep->bn[(size_t)n * g->Cout + co] : 0.0f);
}

/* dst[0 .. len) = s ((src + bias) + r), r NULL for none: the epilogue on one run of outputs. */
static void epilogue_run(float *dst, const float *src, const float *r, int len, float bias, float s)
{
    for (int p = 0; p < len; p++) dst[p] = s * ((src[p] + bias) + (r ? r[p] : 0.0f));
}

/* y[n0 + n, co, :] = scale ((yc[co, n*P : (n+1)*P] + bias) + r[n0 + n, co, :]). Serial. */
static void chunk_to_nchw(const ConvGeom *g, const float *yc, const ConvEpilogue *ep, int n0, int nb, float *y)
{
    for (int n = 0; n < nb; n++)
        for (int co = 0; co < g->Cout; co++) {
            size_t off = ((size_t)(n0 + n) * g->Cout + co) * g->P;
            epilogue_run(y + off, yc + (size_t)co * nb * g->P + (size_t)n * g->P, ep->r ? ep->r + off : NULL, g->P,
                         epilogue_bias(g, ep, n0 + n, co), ep->scale);
        }
}

/* dyc [Cout, nb*P] from dy[n0 .. n0+nb) [nb, Cout, P]. Serial. */
static void nchw_to_chunk(const ConvGeom *g, const float *dy, int n0, int nb, float *dyc)
{
    for (int co = 0; co < g->Cout; co++)
        for (int n = 0; n < nb; n++)
            memcpy(dyc + (size_t)co * nb * g->P + (size_t)n * g->P,
                   dy + ((size_t)(n0 + n) * g->Cout + co) * g->P, sizeof(float) * (size_t)g->P);
}

/* yn [Cout, P] of sample n = scale (bias + r[n]), for the GEMM to accumulate scale conv onto
 * (alpha = scale, beta = 1): that spares OpenBLAS's zeroing pass for beta = 0 and a separate
 * epilogue pass. Returns false (and writes nothing) when the epilogue adds nothing. */
static bool epilogue_init(const ConvGeom *g, const ConvEpilogue *ep, int n, float *yn)
{
    if (!ep->b && !ep->bn && !ep->r) return false;
    for (int co = 0; co < g->Cout; co++) {
        float *yp = yn + (size_t)co * g->P, bias = epilogue_bias(g, ep, n, co), s = ep->scale;
        const float *r = ep->r ? ep->r + ((size_t)n * g->Cout + co) * g->P : NULL;
        for (int p = 0; p < g->P; p++) yp[p] = s * (bias + (r ? r[p] : 0.0f));
    }
    return true;
}

/* y = conv(x) with the epilogue, for the chunks of samples this thread takes (dynamically:
 * an output does not depend on the thread that computes it; see conv_wino.c's "Split between
 * threads"). */
static void conv_forward_share(CmPrecision prec, const ConvGeom *g, const ConvWork *w, const float *x,
                               const float *wt, const ConvEpilogue *ep, float *y)
{
    bool pointwise = conv_is_pointwise(g);
    float *col = work_col(w), *yc = work_yc(w), *ph = work_ph(w);
    const int nchunks = (g->N + w->nb - 1) / w->nb;
#pragma omp for schedule(dynamic, 1) nowait
    for (int q = 0; q < nchunks; q++) {
        int n0 = q * w->nb, m = CM_MIN(w->nb, g->N - n0), ld = m * g->P;
        const float *B = col;
        if (pointwise) B = x + (size_t)n0 * g->Cin * g->P;   /* x[n] [Cin, P] is its own col */
        else im2col(g, x, n0, m, ph, col);
        if (m == 1) {   /* straight into NCHW */
            float *yn = y + (size_t)n0 * g->Cout * g->P;
            bool init = epilogue_init(g, ep, n0, yn);
            weights_gemm(prec, w, false, g->Cout, ld, g->K, ep->scale, wt, B, ld, init ? 1.0f : 0.0f, yn, ld);
        } else {
            weights_gemm(prec, w, false, g->Cout, ld, g->K, 1.0f, wt, B, ld, 0.0f, yc, ld);
            chunk_to_nchw(g, yc, ep, n0, m, y);
        }
    }
}

/* The direct path: stride 1 and at most CONV_DIRECT_COUT outputs (a U-Net's last conv: 1 or 3
 * channels). im2col unfolds K = Cin kh kw rows per output pixel whatever Cout is, so for S's
 * conv_out (32 -> 1 channel at 28x28) the im2col path wrote 0.9 MB per sample, and the GEMM (or
 * the bf16 packing) read it again, for 0.45 MFLOP of products. Here each input plane is copied
 * into a zero-padded plane (row stride Wp, small enough for L1), and every tap adds one run of it,
 * shifted by the tap, to each output plane, which has the same row stride: Ho rows as a single run
 * of (Ho - 1) Wp + Wo floats, whose Wp - Wo wrapped columns per row are discarded. fp32 in either
 * precision (the products are a few per cent of a U-Net's and bf16 would need the packing this
 * path avoids). An output's sum runs over ci, then ki, then kj, the same on every thread: the
 * output bits do not depend on the thread count or the schedule. */
enum { CONV_DIRECT_COUT = 4 };

bool conv2d_direct_usable(int Cout, int kh, int kw, int stride, int pad)
{
    return stride == 1 && Cout <= CONV_DIRECT_COUT && !(kh == 1 && kw == 1 && pad == 0);
}

/* Floats of one thread's workspace: the padded input plane, then Cout output planes of row stride
 * Wp, in whole cache lines. */
static size_t direct_floats(const ConvGeom *g)
{
    const size_t Hp = (size_t)g->H + 2 * g->pad, Wp = (size_t)g->W + 2 * g->pad;
    return (Hp * Wp + (size_t)g->Cout * g->Ho * Wp + 15) & ~(size_t)15;
}

/* y = conv(x) with the epilogue by the direct path, samples taken dynamically; mem holds
 * direct_floats per thread. */
static void conv_forward_direct(const ConvGeom *g, const float *x, const float *wt, const ConvEpilogue *ep,
                                float *y, float *mem)
{
    const int Wp = g->W + 2 * g->pad, kk = g->kh * g->kw;
    const ptrdiff_t run = (ptrdiff_t)(g->Ho - 1) * Wp + g->Wo, plane = (ptrdiff_t)g->Ho * Wp;
    float *xp = mem + direct_floats(g) * (size_t)omp_get_thread_num();
    float *acc = xp + (size_t)(g->H + 2 * g->pad) * Wp;
    memset(xp, 0, sizeof(float) * (size_t)(g->H + 2 * g->pad) * Wp);   /* the border stays 0 */
#pragma omp for schedule(dynamic, 1)
    for (int n = 0; n < g->N; n++) {
        memset(acc, 0, sizeof(float) * (size_t)(g->Cout * plane));
        for (int ci = 0; ci < g->Cin; ci++) {
            const float *src = x + ((size_t)n * g->Cin + ci) * g->H * g->W;
            for (int h = 0; h < g->H; h++)
                memcpy(xp + (size_t)(h + g->pad) * Wp + g->pad, src + (size_t)h * g->W, sizeof(float) * g->W);
            for (int co = 0; co < g->Cout; co++) {
                const float *wk = wt + ((size_t)co * g->Cin + ci) * kk;
                float *restrict o = acc + co * plane;
                for (int t = 0; t < kk; t++) {
                    const float *restrict s = xp + (t / g->kw) * Wp + t % g->kw;
                    const float wv = wk[t];
#pragma omp simd
                    for (ptrdiff_t j = 0; j < run; j++) o[j] += wv * s[j];
                }
            }
        }
        for (int co = 0; co < g->Cout; co++)
            for (int oh = 0; oh < g->Ho; oh++) {
                const size_t off = ((size_t)n * g->Cout + co) * g->P + (size_t)oh * g->Wo;
                epilogue_run(y + off, acc + co * plane + (ptrdiff_t)oh * Wp, ep->r ? ep->r + off : NULL, g->Wo,
                             epilogue_bias(g, ep, n, co), ep->scale);
            }
    }
}

static void shape_check(const char *what, const Tensor *t, int ndim, const int *want, const Tensor *x,
                        const Tensor *w)
{
    bool ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == want[d];
    char st[64], sx[64], sw[64];
    CM_ASSERT(ok, "conv2d: %s %s does not match x %s and w %s", what, tensor_shape_str(t, st, sizeof st),
              tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(w, sw, sizeof sw));
}

/* The saved group-norm statistics of a fused input, as conv_wino's prologue. */
static ConvPrologue prologue_of(const Tensor *x, const Tensor *nw, const Tensor *nb, int groups,
                                const float *stats)
{
    return (ConvPrologue){stats, stats + (size_t)x->shape[0] * groups, nw ? nw->data : NULL,
                          nb ? nb->data : NULL, groups};
}

/* silu(GN(x)) of a fused input in the arena (the im2col path reads its input in full). */
static float *prologue_apply(Ctx *c, const Tensor *x, const ConvPrologue *p)
{
    float *xe = arena_alloc(&c->arena, x->n * sizeof(float));
    gn_silu_apply(x->data, x->shape[0], x->shape[1], (size_t)x->shape[2] * x->shape[3], p->groups,
                  p->mean, p->rstd, p->w, p->b, xe);
    return xe;
}

/* op_conv2d_fused's arguments checked; their geometry. */
static ConvGeom fused_geom(const Tensor *x, const Tensor *w, const Tensor *b, int stride, int pad, const ConvFusion *f)
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
    if (f->bias) shape_check("per-sample bias", f->bias, 2, SHAPE(g.N, g.Cout), x, w);
    if (f->residual) shape_check("residual", f->residual, 4, SHAPE(g.N, g.Cout, g.Ho, g.Wo), x, w);
    const int groups = f->norm_groups;
    CM_ASSERT(groups >= 0 && (groups == 0 || g.Cin % groups == 0), "conv2d: %d norm groups for %d channels",
              groups, g.Cin);
    if (f->norm_weight) shape_check("norm weight", f->norm_weight, 1, SHAPE(g.Cin), x, w);
    if (f->norm_bias) shape_check("norm bias", f->norm_bias, 1, SHAPE(g.Cin), x, w);
    CM_ASSERT(!f->norm_stats || groups, "conv2d: norm_stats given without norm_groups");
    CM_ASSERT(!f->out_stats || (f->out_groups > 0 && g.Cout % f->out_groups == 0),
              "conv2d: out_stats for %d groups of %d output channels", f->out_groups, g.Cout);
    return g;
}

/* The prologue of f's input norm (f->norm_groups > 0), with x's statistics: f->norm_stats, or
 * taken here into the arena; *stats says which. */
static ConvPrologue fused_prologue(Ctx *c, const Tensor *x, const ConvGeom *g, const ConvFusion *f, const float **stats)
{
    const int groups = f->norm_groups;
    *stats = f->norm_stats;                     /* mean [N*groups], rstd [N*groups] */
    if (!*stats) {
        float *s = arena_alloc(&c->arena, 2 * sizeof(float) * (size_t)g->N * groups);
        gn_stats(x->data, g->N, g->Cin, (size_t)g->H * g->W, groups, f->norm_eps, s, s + (size_t)g->N * groups);
        *stats = s;
    }
    return prologue_of(x, f->norm_weight, f->norm_bias, groups, *stats);
}

/* y: f->out wrapped (a pass without gradients), or a new tensor. */
static Tensor *fused_output(Ctx *c, const ConvGeom *g, const ConvFusion *f)
{
    CM_ASSERT(!f->out || !ctx_grad_enabled(c), "conv2d: an output buffer (ConvFusion.out) in a pass with gradients");
    return f->out ? tensor_wrap(c, f->out, NULL, 4, SHAPE(g->N, g->Cout, g->Ho, g->Wo), false)
                  : TENSOR_NEW(c, g->N, g->Cout, g->Ho, g->Wo);
}

Tensor *op_conv2d_fused(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad, const ConvFusion *f)
{
    static const ConvFusion none = {0};
    if (!f) f = &none;
    ConvGeom g = fused_geom(x, w, b, stride, pad, f);
    const int groups = f->norm_groups;
    const float scale = f->scale != 0.0f ? f->scale : 1.0f;
    Tensor *y = fused_output(c, &g, f);
    c->flops += conv_flops(&g);
    const float *stats = NULL;                  /* saved for the backward */
    ConvPrologue pro;
    if (groups) pro = fused_prologue(c, x, &g, f, &stats);
    const size_t ngo = (size_t)g.N * f->out_groups;
    ConvEpilogue ep = {b ? b->data : NULL, f->bias ? f->bias->data : NULL,
                       f->residual ? f->residual->data : NULL, scale,
                       f->out_stats, f->out_stats ? f->out_stats + ngo : NULL, f->out_groups, f->out_eps};
    ArenaMark mark = arena_mark(&c->arena);     /* workspaces below live only inside this call */
    Tensor *const in[7] = {x, w, b, f->bias, f->residual, f->norm_weight, f->norm_bias};
    if (conv_wino_usable(g.Cin, g.Cout, g.kh, g.kw, g.stride, g.pad)) {
        conv_wino_forward(c, x->data, groups ? &pro : NULL, w->data, &ep, y->data, g.N, g.Cin, g.H, g.W,
                          g.Cout, g.pad);
    } else {
        const float *xin = groups ? prologue_apply(c, x, &pro) : x->data;
        if (conv2d_direct_usable(g.Cout, g.kh, g.kw, g.stride, g.pad)) {
            float *mem = arena_alloc(&c->arena, sizeof(float) * direct_floats(&g) * (size_t)cm_threads());
#pragma omp parallel num_threads(cm_threads())
            conv_forward_direct(&g, xin, w->data, &ep, y->data, mem);
        } else {
            ConvWork work = conv_work(c, &g, false);
            work.wp = pack_weights(c, &g, w->data, false);
#pragma omp parallel num_threads(cm_threads())
            conv_forward_share(c->precision, &g, &work, xin, w->data, &ep, y->data);
        }
        if (ep.mean)   /* a pass of its own here (these paths carry few of a U-Net's FLOPs) */
            gn_stats(y->data, g.N, g.Cout, (size_t)g.P, ep.groups, ep.eps, ep.mean, ep.rstd);
    }
    arena_release(&c->arena, mark);

    TapeEntry *e = tape_record(c, OP_CONV2D, y, 7, in);
    if (e) {
        e->iarg[0] = stride;
        e->iarg[1] = pad;
        e->iarg[2] = groups;
        e->farg[0] = scale;
        e->farg[1] = f->norm_eps;
        e->saved = (void *)stats;   /* read only, by the backward */
    }
    return y;
}

Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad)
{
    return op_conv2d_fused(c, x, w, b, stride, pad, NULL);
}

bool conv2d_pair_usable(const Tensor *x, const Tensor *w1, const Tensor *w2)
{
    return x->ndim == 4 && w1->ndim == 4 && w2->ndim == 4 && w1->shape[2] == 3 && w1->shape[3] == 3 &&
           w2->shape[2] == 3 && w2->shape[3] == 3 && conv_wino_pair_usable(x->shape[1], w1->shape[0], w2->shape[0]);
}

Tensor *op_conv2d_pair(Ctx *c, Tensor *x, Tensor *w1, Tensor *b1, const ConvFusion *f1, Tensor *w2, Tensor *b2,
                       const ConvFusion *f2)
{
    CM_ASSERT(!ctx_grad_enabled(c), "conv2d pair: a pass with gradients (its backward would need the middle)");
    CM_ASSERT(conv2d_pair_usable(x, w1, w2), "conv2d pair: not two 3x3 convs conv_wino takes");
    ConvGeom g1 = fused_geom(x, w1, b1, 1, 1, f1);
    Tensor *h = tensor_wrap(c, NULL, NULL, 4, SHAPE(g1.N, g1.Cout, g1.Ho, g1.Wo), false);   /* a shape, no data */
    ConvGeom g2 = fused_geom(h, w2, b2, 1, 1, f2);
    CM_ASSERT(!f1->residual && !f1->out_stats && !f1->out && (f1->scale == 0.0f || f1->scale == 1.0f),
              "conv2d pair: the first conv takes a norm and biases only");
    CM_ASSERT(f2->norm_groups > 0 && !f2->norm_stats && !f2->bias && !f2->out_stats,
              "conv2d pair: the second conv takes a norm of its own statistics, a residual and a scale");
    Tensor *y = fused_output(c, &g2, f2);
    c->flops += conv_flops(&g1) + conv_flops(&g2);
    const float *stats;
    ConvPrologue pro1;
    if (f1->norm_groups) pro1 = fused_prologue(c, x, &g1, f1, &stats);
    ConvEpilogue ep1 = {.b = b1 ? b1->data : NULL, .bn = f1->bias ? f1->bias->data : NULL, .scale = 1.0f};
    ConvEpilogue ep2 = {.b = b2 ? b2->data : NULL, .r = f2->residual ? f2->residual->data : NULL,
                        .scale = f2->scale != 0.0f ? f2->scale : 1.0f};
    ConvMiddle mid = {f2->norm_weight ? f2->norm_weight->data : NULL, f2->norm_bias ? f2->norm_bias->data : NULL,
                      f2->norm_groups, f2->norm_eps};
    ArenaMark mark = arena_mark(&c->arena);
    conv_wino_pair_forward(c, x->data, f1->norm_groups ? &pro1 : NULL, w1->data, &ep1, &mid, w2->data, &ep2, y->data,
                           g1.N, g1.Cin, g1.H, g1.W, g1.Cout, g2.Cout);
    arena_release(&c->arena, mark);
    return y;
}

/* With S[n, co] = sum over pixels of gs[n, co, :]: db[co] += sum_n S[n, co] and
 * dbn[n, co] += S[n, co] (either may be NULL); one thread per channel, samples in order. */
static void bias_backward(const ConvGeom *g, const float *gs, float *db, float *dbn)
{
#pragma omp parallel for schedule(static)
    for (int co = 0; co < g->Cout; co++) {
        double s = 0;
        for (int n = 0; n < g->N; n++) {
            const float *p = gs + ((size_t)n * g->Cout + co) * g->P;
            float t = 0;
#pragma omp simd reduction(+ : t)
            for (int i = 0; i < g->P; i++) t += p[i];
            if (dbn) dbn[(size_t)n * g->Cout + co] += t;
            s += t;
        }
        if (db) db[co] += (float)s;
    }
}

/* dx (gx: = when fresh, else +=) and this thread's dw partial for its share of the samples.
 * Returns whether the partial was written (a thread with no samples writes none). */
static bool conv_backward_share(CmPrecision prec, const ConvGeom *g, const ConvWork *w, const float *x,
                                const float *wt, const float *dy, float *gx, bool fresh_x, bool need_w)
{
    int lo, hi;
    thread_share(g->N, &lo, &hi);
    bool pointwise = conv_is_pointwise(g);
    float *col = work_col(w), *dyc = work_yc(w), *ph = work_ph(w);
    float *dwp = need_w ? work_dw(w, omp_get_thread_num()) : NULL;
    for (int n0 = lo; n0 < hi; n0 += w->nb) {
        int m = CM_MIN(w->nb, hi - n0), ld = m * g->P;
        const float *D = dy + (size_t)n0 * g->Cout * g->P;
        if (m > 1) {
            nchw_to_chunk(g, dy, n0, m, dyc);
            D = dyc;
        }
        if (need_w) {   /* dw [Cout, K] (+)= dyc [Cout, m*P] . col^T */
            const float *B = col;
            if (pointwise) B = x + (size_t)n0 * g->Cin * g->P;
            else im2col(g, x, n0, m, ph, col);
            gemm_run(prec, false, true, g->Cout, g->K, ld, 1.0f, D, ld, B, ld, n0 > lo ? 1.0f : 0.0f, dwp, g->K);
        }
        if (!gx) continue;
        if (pointwise) {   /* dx[n] [Cin, P] (+)= w^T [Cin, Cout] . dy[n] [Cout, P] */
            float *gxn = gx + (size_t)n0 * g->Cin * g->P;
            weights_gemm(prec, w, true, g->Cin, g->P, g->Cout, 1.0f, wt, D, g->P, 0.0f, fresh_x ? gxn : col, g->P);
            if (!fresh_x)
                for (size_t i = 0; i < (size_t)g->Cin * g->P; i++) gxn[i] += col[i];
        } else {           /* dcol [K, m*P] = w^T [K, Cout] . dyc, folded into dx */
            weights_gemm(prec, w, true, g->K, ld, g->Cout, 1.0f, wt, D, ld, 0.0f, col, ld);
            col2im(g, col, n0, m, ph, gx, fresh_x);
        }
    }
    return need_w && hi > lo;
}

/* out (=, or += when acc) scale * dy, over n floats; parallel. */
static void scaled_copy(float *out, const float *dy, size_t n, float scale, bool acc)
{
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (size_t i = 0; i < n; i++) out[i] = (acc ? out[i] : 0.0f) + scale * dy[i];
}

/* The epilogue's backward: gs = scale dy is the gradient of the residual and of the conv's sum
 * (the bias, the per-sample bias and the products). With a fused GN+SiLU input the conv's input
 * gradient goes to a workspace and from there through group norm's backward (gn_grad). Every
 * gradient is first summed in full in scratch and then added to the existing one in a single
 * +=, so accumulating sweeps add exactly the same floats each time (tensor.h). A gradient that
 * does not exist yet is written directly instead (no zeroing, no extra pass); a fresh residual
 * gradient is gs itself. */
void conv2d_backward(Ctx *c, TapeEntry *e)
{
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *bn = e->in[3], *r = e->in[4];
    Tensor *nw = e->in[5], *nb = e->in[6];
    const int groups = e->iarg[2];
    const float scale = e->farg[0];
    ConvGeom g = conv_geom(x, w, e->iarg[0], e->iarg[1]);
    const float *dy = e->out->grad, *gs = dy;
    const bool need_x = entry_needs_grad(e, 0), need_w = entry_needs_grad(e, 1);
    const bool need_nw = nw && entry_needs_grad(e, 5), need_nb = nb && entry_needs_grad(e, 6);
    /* the gradient of the conv's own input: x, or the fused silu(GN(x)) */
    const bool need_in = need_x || need_nw || need_nb;
    size_t ny = (size_t)g.N * g.Cout * g.P;

    /* Gradients that outlive this call come first, the mark for the workspaces after them. */
    float *gr_acc = NULL;                       /* r's existing gradient, added to below */
    if (r && entry_needs_grad(e, 4)) {
        if (!r->grad && r != x) {               /* (r == x: dx would accumulate into gs) */
            scaled_copy(tensor_grad_fresh(c, r), dy, ny, scale, false);
            gs = r->grad;
        } else {
            gr_acc = tensor_grad(c, r);
        }
    }
    bool fresh_x = need_x && !x->grad;          /* written, not accumulated: no zeroing pass */
    if (fresh_x) tensor_grad_fresh(c, x);
    float *gx = need_x ? x->grad : NULL;
    float *gw = need_w ? tensor_grad(c, w) : NULL;
    float *gb = b && entry_needs_grad(e, 2) ? tensor_grad(c, b) : NULL;
    float *gbn = bn && entry_needs_grad(e, 3) ? tensor_grad(c, bn) : NULL;
    float *gnw = need_nw ? tensor_grad(c, nw) : NULL, *gnb = need_nb ? tensor_grad(c, nb) : NULL;
    ArenaMark mark = arena_mark(&c->arena);     /* workspaces below live only inside this call */
    if (gs == dy && scale != 1.0f && (gr_acc || gb || gbn || need_in || need_w)) {
        float *t = arena_alloc(&c->arena, sizeof(float) * ny);
        scaled_copy(t, dy, ny, scale, false);
        gs = t;
    }
    if (gr_acc) scaled_copy(gr_acc, gs, ny, 1.0f, true);
    if (gb || gbn) bias_backward(&g, gs, gb, gbn);
    if (!need_in && !need_w) {
        arena_release(&c->arena, mark);
        return;
    }
    c->flops += conv_flops(&g) * (need_in + need_w);
    ConvPrologue pro;
    float *gin = gx;                            /* where the conv's input gradient goes */
    bool fresh_in = fresh_x;
    if (groups) {
        pro = prologue_of(x, nw, nb, groups, e->saved);
        gin = need_in ? arena_alloc(&c->arena, x->n * sizeof(float)) : NULL;
        fresh_in = true;
    }
    if (conv_wino_usable(g.Cin, g.Cout, g.kh, g.kw, g.stride, g.pad)) {
        conv_wino_backward(c, x->data, groups ? &pro : NULL, w->data, gs, gin, fresh_in, gw, g.N, g.Cin,
                           g.H, g.W, g.Cout, g.pad);
    } else {
        const float *xin = groups && need_w ? prologue_apply(c, x, &pro) : x->data;
        ConvWork work = conv_work(c, &g, need_w);
        if (gin) work.wp = pack_weights(c, &g, w->data, true);
        int T = cm_threads();
        bool *written = arena_calloc(&c->arena, sizeof(bool) * (size_t)T);
#pragma omp parallel num_threads(T)
        written[omp_get_thread_num()] =
            conv_backward_share(c->precision, &g, &work, xin, w->data, gs, gin, fresh_in, need_w);
        if (need_w) {
            size_t nw_ = (size_t)g.Cout * g.K;
#pragma omp parallel for schedule(static)
            for (size_t i = 0; i < nw_; i++) {
                float s = 0;
                for (int t = 0; t < T; t++)
                    if (written[t]) s += work_dw(&work, t)[i];
                gw[i] += s;
            }
        }
    }
    if (groups && need_in)
        gn_grad(c, x->data, g.N, g.Cin, (size_t)g.H * g.W, groups, pro.mean, pro.rstd, pro.w, pro.b, true,
                gin, gx, fresh_x, gnw, gnb);
    arena_release(&c->arena, mark);
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
