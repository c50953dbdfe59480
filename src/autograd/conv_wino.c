/* conv_wino.c: 3x3 stride-1 conv2d by Winograd F(4x4, 3x3) in fp32 and in bf16's forward pass,
 * F(2x2, 3x3) in bf16's backward pass; see conv_wino.h. Below, the notation and layouts of F(2x2,
 * 3x3); F(4x4, 3x3) has m = 4 in place of 2 (4x4 output tiles from 6x6 windows, 36 planes:
 * WinoGeom's m and P) and its own transforms (tile_in4, tile_in4_bf16, tile_out4, tile_out4_adjoint,
 * ggt4; G4 in weight_adjoint16); its dx is backward_dx4's conv.
 *
 * Notation: a sample's output is covered by th x tw tiles of 2x2 pixels (th = ceil(Ho/2),
 * tw = ceil(Wo/2)); tile (ty, tx) reads the 4x4 input window whose top-left pixel is
 * (2 ty - pad, 2 tx - pad). The 16 positions of a transformed tile, xi = 4 i + j, are 16 planes.
 * 1-D transforms (F(2,3), Lavin and Gray eq. 7-8):
 *   B^T d = (d0 - d2, d1 + d2, d2 - d1, d1 - d3)        adjoint: (v0, v1 - v2 + v3, v1 + v2 - v0, -v3)
 *   G g   = (g0, (g0 + g1 + g2)/2, (g0 - g1 + g2)/2, g2) adjoint: (u0 + (u1 + u2)/2, (u1 - u2)/2, (u1 + u2)/2 + u3)
 *   A^T m = (m0 + m1 + m2, m1 - m2 - m3)                 adjoint: (y0, y0 + y1, y0 - y1, -y1)
 * each applied along both dims of a tile.
 *
 * Layouts (one sample, channels in blocks of 16, "blocked" = [C/16][rows][cols][16]):
 *   xt   the input, blocked and zero-padded to Hp x Wp = (2 th + 2) x (2 tw + 2), pixel (r, c) =
 *        x[r - pad][c - pad];
 *   yt   the output tiles, blocked, 2 th x 2 tw (the rows and columns past Ho, Wo are dropped
 *        when it is transposed back); dyt the same for dy (zero past Ho, Wo);
 *   V    per plane xi: [tiles][ci16], a block's transformed input tiles; M: [tiles][co16].
 * Forward, per plane: M = V . U with U [Cin][co16] = G g G^T; dx (bf16): V' = M' . U^T with U^T
 * [Cout][ci16]; dw: dU [Cin][co16] += V^T . M'. All three are the one micro-kernel below.
 *
 * Blocks: a thread takes samples in blocks of about `tiles` tiles (conv_wino_block_bytes of V
 * and M, so that they stay in L2): tile ranges of one sample when a sample has at least half
 * that many, else groups of whole samples (the 7x7 level: 16 tiles a sample).
 *
 * Pairs (conv_wino_pair_forward): a residual block's two convs without gradients share a unit's
 * blocks; conv1's output tiles go to conv2's xt (block_out_to), where pair_middle adds the
 * bias, takes the group norm's statistics and applies silu(GN) in place.
 *
 * Split between threads: the forward pass hands out samples (or groups) dynamically. With fixed
 * halves the thread on the momentarily slower core (this host's cores slow down by 10-30% as
 * its neighbours load them) left the other waiting: 10% of S sampling's wall time at 2 threads;
 * dynamic units took S sampling from 1.56-1.70x to 1.81-1.84x one thread. A sample's output
 * does not depend on which thread computes it, so the bits do not change. The backward pass
 * keeps fixed shares: its dU partials are per thread and summed in thread order. */
#include "conv_wino.h"
#include "gemm_bf16.h"
#include "ops.h"
#include "simd16.h"

#include <stdint.h>
#include <string.h>

#include <omp.h>

size_t conv_wino_block_bytes = (size_t)1 << 20;

#ifndef __AVX512F__

bool conv_wino_usable(int Cin, int Cout, int kh, int kw, int stride, int pad) { return false; }

void conv_wino_forward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                       const ConvEpilogue *ep, float *y, int N, int Cin, int H, int W, int Cout, int pad)
{
    CM_ASSERT(false, "conv_wino_forward: this build has no AVX-512 (conv_wino_usable is false)");
}

void conv_wino_backward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                        const float *dy, float *dx, bool dx_fresh, float *dw, int N, int Cin, int H,
                        int W, int Cout, int pad)
{
    CM_ASSERT(false, "conv_wino_backward: this build has no AVX-512 (conv_wino_usable is false)");
}

bool conv_wino_pair_usable(int Cin, int Cmid, int Cout) { return false; }

void conv_wino_pair_forward(Ctx *c, const float *x, const ConvPrologue *pro1, const float *w1,
                            const ConvEpilogue *ep1, const ConvMiddle *mid, const float *w2,
                            const ConvEpilogue *ep2, float *y, int N, int Cin, int H, int W, int Cmid, int Cout)
{
    CM_ASSERT(false, "conv_wino_pair_forward: this build has no AVX-512 (conv_wino_pair_usable is false)");
}

#else

#include <immintrin.h>

#define VL 16                  /* floats per vector */

bool conv_wino_usable(int Cin, int Cout, int kh, int kw, int stride, int pad)
{
    return kh == 3 && kw == 3 && stride == 1 && pad <= 2 && Cin >= VL && Cout >= VL;
}

typedef struct WinoGeom {
    int N, Cin, H, W, Cout, pad, Ho, Wo;
    int m, P;                  /* output tiles m x m (2: F(2x2, 3x3); 4: F(4x4, 3x3)), P = (m + 2)^2 planes */
    int th, tw, T;             /* tiles per sample: th x tw = T */
    int ci16, co16;            /* channels rounded up to whole vectors */
    int Hp, Wp;                /* xt's padded size */
    int tiles;                 /* most tiles in a block */
    int split, group;          /* blocks per sample (split > 1) or samples per block */
    ptrdiff_t vxs, mxs;        /* plane strides of V and M */
    ptrdiff_t vbxs, mbxs;      /* plane strides of V and M' in bf16 by channel pairs, in words */
} WinoGeom;

static int round16(int n) { return (n + VL - 1) / VL * VL; }

/* The geometry of a conv whose blocks are sized as if a tile had `chans` channels in and out
 * (wino_geom: its own ci16 + co16; a pair's two convs: the larger sum, so that both take the same
 * blocks). */
static WinoGeom wino_geom_chans(int N, int Cin, int H, int W, int Cout, int pad, int m, int chans)
{
    WinoGeom g = {.N = N, .Cin = Cin, .H = H, .W = W, .Cout = Cout, .pad = pad, .m = m, .P = (m + 2) * (m + 2)};
    g.Ho = H + 2 * pad - 2;
    g.Wo = W + 2 * pad - 2;
    g.th = (g.Ho + m - 1) / m;
    g.tw = (g.Wo + m - 1) / m;
    g.T = g.th * g.tw;
    g.ci16 = round16(Cin);
    g.co16 = round16(Cout);
    g.Hp = m * g.th + 2;
    g.Wp = m * g.tw + 2;
    size_t per_tile = (size_t)g.P * sizeof(float) * (size_t)chans;
    g.tiles = (int)CM_MAX((size_t)VL, conv_wino_block_bytes / per_tile);
    if (g.T * 2 >= g.tiles) {
        g.split = (g.T + g.tiles - 1) / g.tiles;
        g.group = 1;
        g.tiles = (g.T + g.split - 1) / g.split;
    } else {   /* groups of at most a quarter of a thread's share: small convs get small workspaces and the
                 * dynamic split has units to balance */
        int threads = cm_threads(), share = (N + 4 * threads - 1) / (4 * threads);
        g.split = 1;
        g.group = CM_MAX(1, CM_MIN(g.tiles / g.T, share));
        g.tiles = g.group * g.T;
    }
    /* One cache line more than the plane, so that the 16 planes a tile writes do not all map to
     * the same L1 set. */
    g.vxs = (ptrdiff_t)g.tiles * g.ci16 + VL;
    g.mxs = (ptrdiff_t)g.tiles * g.co16 + VL;
    g.vbxs = (ptrdiff_t)g.tiles * g.ci16 / 2 + VL;
    g.mbxs = (ptrdiff_t)g.tiles * g.co16 / 2 + VL;
    return g;
}

static WinoGeom wino_geom(int N, int Cin, int H, int W, int Cout, int pad, int m)
{
    return wino_geom_chans(N, Cin, H, W, Cout, pad, m, round16(Cin) + round16(Cout));
}

/* Samples [n0, n0 + nb), tiles [t0, t1) of each. Row (n - n0) (t1 - t0) + t - t0 of V and M. */
typedef struct WinoBlock {
    int n0, nb, t0, t1;
} WinoBlock;

static int block_tiles(const WinoBlock *b) { return b->nb * (b->t1 - b->t0); }

/* Block k of the share [lo, hi), or false past the last. */
static bool block_at(const WinoGeom *g, int lo, int hi, int k, WinoBlock *b)
{
    int n0 = lo + k / g->split * g->group, part = k % g->split;
    if (n0 >= hi) return false;
    *b = (WinoBlock){n0, CM_MIN(g->group, hi - n0), (int)((long)g->T * part / g->split),
                     (int)((long)g->T * (part + 1) / g->split)};
    return true;
}

/* ---- tile transforms (16 channels at a time) ---- */

/* V (16 planes, stride xs) = B^T d B for the 4x4 window at src (row stride rs floats): plane
 * xi = 4 i + j. */
static inline void tile_in(const float *src, ptrdiff_t rs, float *dst, ptrdiff_t xs)
{
    __m512 d[4][4], t[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) d[i][j] = _mm512_load_ps(src + i * rs + j * VL);
    for (int j = 0; j < 4; j++) {
        t[0][j] = d[0][j] - d[2][j];
        t[1][j] = d[1][j] + d[2][j];
        t[2][j] = d[2][j] - d[1][j];
        t[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; i++) {
        _mm512_store_ps(dst + (4 * i + 0) * xs, t[i][0] - t[i][2]);
        _mm512_store_ps(dst + (4 * i + 1) * xs, t[i][1] + t[i][2]);
        _mm512_store_ps(dst + (4 * i + 2) * xs, t[i][2] - t[i][1]);
        _mm512_store_ps(dst + (4 * i + 3) * xs, t[i][1] - t[i][3]);
    }
}

/* The window at dst (row stride rs) += B V' B^T, V' the 16 planes at src (stride xs). */
static inline void tile_in_adjoint(const float *src, ptrdiff_t xs, float *dst, ptrdiff_t rs)
{
    __m512 v[4][4], t[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) v[i][j] = _mm512_load_ps(src + (4 * i + j) * xs);
    for (int i = 0; i < 4; i++) {
        t[i][0] = v[i][0];
        t[i][1] = v[i][1] - v[i][2] + v[i][3];
        t[i][2] = v[i][1] + v[i][2] - v[i][0];
        t[i][3] = -v[i][3];
    }
    for (int j = 0; j < 4; j++) {
        __m512 d[4] = {t[0][j], t[1][j] - t[2][j] + t[3][j], t[1][j] + t[2][j] - t[0][j], -t[3][j]};
        for (int i = 0; i < 4; i++) {
            float *p = dst + i * rs + j * VL;
            _mm512_store_ps(p, _mm512_load_ps(p) + d[i]);
        }
    }
}

/* The 2x2 outputs at dst (row stride rs) = A^T m A, m the 16 planes at src (stride xs). */
static inline void tile_out(const float *src, ptrdiff_t xs, float *dst, ptrdiff_t rs)
{
    __m512 m[4][4], s[2][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) m[i][j] = _mm512_load_ps(src + (4 * i + j) * xs);
    for (int j = 0; j < 4; j++) {
        s[0][j] = m[0][j] + m[1][j] + m[2][j];
        s[1][j] = m[1][j] - m[2][j] - m[3][j];
    }
    for (int a = 0; a < 2; a++) {
        _mm512_store_ps(dst + a * rs, s[a][0] + s[a][1] + s[a][2]);
        _mm512_store_ps(dst + a * rs + VL, s[a][1] - s[a][2] - s[a][3]);
    }
}

/* A dY A^T for the 2x2 gradients at src (row stride rs): plane xi = 4 i + j in v[xi]. */
static inline __attribute__((always_inline)) void tile_out_adjoint_planes(const float *src, ptrdiff_t rs, __m512 v[16])
{
    __m512 e[2][4];
    for (int a = 0; a < 2; a++) {
        __m512 y0 = _mm512_load_ps(src + a * rs), y1 = _mm512_load_ps(src + a * rs + VL);
        e[a][0] = y0;
        e[a][1] = y0 + y1;
        e[a][2] = y0 - y1;
        e[a][3] = -y1;
    }
    for (int j = 0; j < 4; j++) {
        v[0 + j] = e[0][j];
        v[4 + j] = e[0][j] + e[1][j];
        v[8 + j] = e[0][j] - e[1][j];
        v[12 + j] = -e[1][j];
    }
}

/* The 16 planes of G g G^T for the 3x3 kernel g: plane xi's value at u[xi us]. */
static inline __attribute__((always_inline)) void ggt2(const float *g, float *u, ptrdiff_t us)
{
    float t[4][3];
    for (int j = 0; j < 3; j++) {
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; i++) {
        u[(4 * i + 0) * us] = t[i][0];
        u[(4 * i + 1) * us] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u[(4 * i + 2) * us] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u[(4 * i + 3) * us] = t[i][2];
    }
}

/* The 36 planes of G g G^T for the 3x3 kernel g (F(4x4, 3x3), G below at tile_in4): plane xi's
 * value at u[xi us]. */
static inline __attribute__((always_inline)) void ggt4(const float *g, float *u, ptrdiff_t us)
{
    float t[6][3];
    for (int j = 0; j < 3; j++) {   /* t = G g, column j */
        float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
        t[0][j] = g0 / 4;
        t[1][j] = -(g0 + g1 + g2) / 6;
        t[2][j] = -(g0 - g1 + g2) / 6;
        t[3][j] = g0 / 24 + g1 / 12 + g2 / 6;
        t[4][j] = g0 / 24 - g1 / 12 + g2 / 6;
        t[5][j] = g2;
    }
    for (int i = 0; i < 6; i++) {   /* (G g) G^T, row i */
        float g0 = t[i][0], g1 = t[i][1], g2 = t[i][2];
        u[(6 * i + 0) * us] = g0 / 4;
        u[(6 * i + 1) * us] = -(g0 + g1 + g2) / 6;
        u[(6 * i + 2) * us] = -(g0 - g1 + g2) / 6;
        u[(6 * i + 3) * us] = g0 / 24 + g1 / 12 + g2 / 6;
        u[(6 * i + 4) * us] = g0 / 24 - g1 / 12 + g2 / 6;
        u[(6 * i + 5) * us] = g2;
    }
}

/* The P planes (stride us) of G g G^T (ggt2, or ggt4 when m = 4) for the kernels g of w
 * [Cout][Cin][3][3], as a matrix per plane: element (r, c) = the kernel at w + r rs + c cs, stored
 * at u[r ld + c]; columns past `cols` up to ld stay as they are (zero: callers calloc u). rs, cs:
 * 9 and 9 Cin for U [ci][co], 9 Cin and 9 for U^T [co][ci]. Parallel over rows; the column loop
 * vectorizes. */
static void weight_planes(int m, const float *w, int rows, int cols, ptrdiff_t rs, ptrdiff_t cs, float *u, int ld,
                          ptrdiff_t us)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *ur = u + (ptrdiff_t)r * ld;
#pragma omp simd
        for (int c = 0; c < cols; c++) {
            if (m == 4)
                ggt4(w + r * rs + c * cs, ur + c, us);
            else
                ggt2(w + r * rs + c * cs, ur + c, us);
        }
    }
}

/* ---- F(4x4, 3x3) (conv_wino.h) ----
 * 1-D transforms on 6 points (Lavin and Gray's, interpolation points 0, +-1, +-2 and infinity):
 *   B^T d = (4 d0 - 5 d2 + d4, (d4 - 4 d2) + (d3 - 4 d1), (d4 - 4 d2) - (d3 - 4 d1),
 *            (d4 - d2) + 2 (d3 - d1), (d4 - d2) - 2 (d3 - d1), 4 d1 - 5 d3 + d5)
 *   G g   = (g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, g0 / 24 + g1 / 12 + g2 / 6,
 *            g0 / 24 - g1 / 12 + g2 / 6, g2)
 *   A^T m = (m0 + (m1 + m2) + (m3 + m4), (m1 - m2) + 2 (m3 - m4), (m1 + m2) + 4 (m3 + m4),
 *            (m1 - m2) + 8 (m3 - m4) + m5)
 * Plane xi = 6 i + j. */

static inline __attribute__((always_inline)) void bt6(const __m512 d[6], __m512 r[6])
{
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
    __m512 t1 = _mm512_fnmadd_ps(four, d[2], d[4]), t2 = _mm512_fnmadd_ps(four, d[1], d[3]);
    __m512 t3 = d[4] - d[2], t4 = two * (d[3] - d[1]);
    r[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
    r[1] = t1 + t2;
    r[2] = t1 - t2;
    r[3] = t3 + t4;
    r[4] = t3 - t4;
    r[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

/* t = B^T d for the 6x6 window at src (row stride rs floats): tile_in4's pass down the columns. */
static inline __attribute__((always_inline)) void tile_in4_columns(const float *src, ptrdiff_t rs, __m512 t[6][6])
{
    for (int j = 0; j < 6; j++) {
        __m512 d[6], r[6];
        for (int i = 0; i < 6; i++) d[i] = _mm512_load_ps(src + i * rs + j * VL);
        bt6(d, r);
        for (int i = 0; i < 6; i++) t[i][j] = r[i];
    }
}

/* V (36 planes, stride xs) = B^T d B for the 6x6 window at src (row stride rs floats). */
static inline void tile_in4(const float *src, ptrdiff_t rs, float *dst, ptrdiff_t xs)
{
    __m512 t[6][6];
    tile_in4_columns(src, rs, t);
    for (int i = 0; i < 6; i++) {   /* rows */
        __m512 v[6];
        bt6(t[i], v);
        for (int j = 0; j < 6; j++) _mm512_store_ps(dst + (6 * i + j) * xs, v[j]);
    }
}

/* tile_in4 rounded to bf16 as gemm_bf16's packing rounds (vcvtneps2bf16): 16 channels' values in 8
 * words a plane (plane stride xs words), channel 2j in word j's low half. */
static inline __attribute__((always_inline, target("avx512f,avx512bf16"))) void
tile_in4_bf16(const float *src, ptrdiff_t rs, uint32_t *dst, ptrdiff_t xs)
{
    __m512 t[6][6];
    tile_in4_columns(src, rs, t);
    for (int i = 0; i < 6; i++) {
        __m512 v[6];
        bt6(t[i], v);
        for (int j = 0; j < 6; j++)
            _mm256_storeu_si256((__m256i *)(dst + (6 * i + j) * xs), (__m256i)_mm512_cvtneps_pbh(v[j]));
    }
}

static inline __attribute__((always_inline)) void at6(const __m512 m[6], __m512 o[4])
{
    __m512 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
    o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
    o[3] = _mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12) + m[5];
}

/* The 4x4 outputs at dst (row stride rs) = A^T m A, m the 36 planes at src (stride xs). */
static inline void tile_out4(const float *src, ptrdiff_t xs, float *dst, ptrdiff_t rs)
{
    __m512 s[4][6];
    for (int j = 0; j < 6; j++) {   /* columns */
        __m512 m[6], o[4];
        for (int i = 0; i < 6; i++) m[i] = _mm512_load_ps(src + (6 * i + j) * xs);
        at6(m, o);
        for (int a = 0; a < 4; a++) s[a][j] = o[a];
    }
    for (int a = 0; a < 4; a++) {   /* rows */
        __m512 o[4];
        at6(s[a], o);
        for (int b = 0; b < 4; b++) _mm512_store_ps(dst + a * rs + b * VL, o[b]);
    }
}

/* The adjoint of at6: m = A o for the gradients o of the 4 outputs. */
static inline __attribute__((always_inline)) void at6_adjoint(const __m512 o[4], __m512 m[6])
{
    const __m512 two = _mm512_set1_ps(2.0f), four = _mm512_set1_ps(4.0f), eight = _mm512_set1_ps(8.0f);
    __m512 e = o[0] + o[2], f = o[1] + o[3];            /* m1, m2 = e +- f */
    __m512 g = _mm512_fmadd_ps(four, o[2], o[0]), h = _mm512_fmadd_ps(eight, o[3], two * o[1]);
    m[0] = o[0];
    m[1] = e + f;
    m[2] = e - f;
    m[3] = g + h;
    m[4] = g - h;
    m[5] = o[3];
}

/* M' (36 planes at dst, stride xs) = A dY A^T for the 4x4 gradients at src (row stride rs). */
static inline void tile_out4_adjoint(const float *src, ptrdiff_t rs, float *dst, ptrdiff_t xs)
{
    __m512 t[6][4];
    for (int b = 0; b < 4; b++) {   /* columns */
        __m512 o[4], m[6];
        for (int a = 0; a < 4; a++) o[a] = _mm512_load_ps(src + a * rs + b * VL);
        at6_adjoint(o, m);
        for (int i = 0; i < 6; i++) t[i][b] = m[i];
    }
    for (int i = 0; i < 6; i++) {   /* rows */
        __m512 m[6];
        at6_adjoint(t[i], m);
        for (int j = 0; j < 6; j++) _mm512_store_ps(dst + (6 * i + j) * xs, m[j]);
    }
}

/* G of F(2x2, 3x3) and of F(4x4, 3x3) (the 1-D G g at the top and at tile_in4). */
static const float G2[4][3] = {{1, 0, 0}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0, 0, 1}};
static const float G4[6][3] = {{1.0f / 4, 0, 0},
                               {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                               {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                               {1.0f / 24, 1.0f / 12, 1.0f / 6},
                               {1.0f / 24, -1.0f / 12, 1.0f / 6},
                               {0, 0, 1}};

/* dg [3x3] = G^T du G for 16 kernels at once (lanes): du the P = (m + 2)^2 planes of dU. */
static inline __attribute__((always_inline)) void weight_adjoint16(int m, const __m512 *du, __m512 dg[9])
{
    const int n = m + 2;
    const float(*G)[3] = m == 4 ? G4 : G2;
    __m512 r[6][3];
    for (int i = 0; i < n; i++)   /* r = du G */
        for (int b = 0; b < 3; b++) {
            __m512 acc = _mm512_setzero_ps();
            for (int j = 0; j < n; j++)
                if (G[j][b] != 0) acc = _mm512_fmadd_ps(du[n * i + j], _mm512_set1_ps(G[j][b]), acc);
            r[i][b] = acc;
        }
    for (int a = 0; a < 3; a++)   /* G^T r */
        for (int b = 0; b < 3; b++) {
            __m512 acc = _mm512_setzero_ps();
            for (int i = 0; i < n; i++)
                if (G[i][a] != 0) acc = _mm512_fmadd_ps(_mm512_set1_ps(G[i][a]), r[i][b], acc);
            dg[3 * a + b] = acc;
        }
}

/* ---- NCHW <-> blocked ---- */

/* The prologue of sample n per channel: mean, rstd w and b in pv [3][ld] (GN+SiLU: a channel's
 * input value v becomes silu((v - mean) rstd w + b), as op_group_norm_silu computes it). */
static const float *sample_prologue(const ConvPrologue *p, int n, int C, int ld, float *pv)
{
    if (!p) return NULL;
    const int Cg = C / p->groups;
    for (int ch = 0; ch < C; ch++) {
        int ng = n * p->groups + ch / Cg;
        pv[ch] = p->mean[ng];
        pv[ld + ch] = p->rstd[ng] * (p->w ? p->w[ch] : 1.0f);
        pv[2 * ld + ch] = p->b ? p->b[ch] : 0.0f;
    }
    return pv;
}

/* Prefetches, for the 16 rows of channel block cb of rd and wr [C][P] (NCHW, one sample; either
 * may be NULL), the line PREFETCH vectors past pixel p0, or near a plane's end the next channel
 * block's first vectors (a 7x7 plane is 4 vectors: before, nothing of it was prefetched): rd's to
 * read, wr's to write (prefetchw: the line comes exclusive, so a store does not wait to own it), a
 * row of each in turn. The NCHW side of to_blocked and from_blocked: 16 streams a plane apart,
 * whose loads' latency was half of to_blocked's time in a profile. Measured on AMD Zen 5,
 * interleaved rounds: to_blocked's rows 4 vectors ahead +1-2% on S training and +1% on sampling (8
 * no better); from_blocked's residual and output +4.2-4.8% on S one-step sampling (the residual's
 * alone +1%); the next block's vectors BCM training +2.3-3.8%, S sampling +0.8-1.8% (to_blocked),
 * +1.2% (from_blocked). */
enum { PREFETCH = 4 };
static inline __attribute__((always_inline)) void prefetch_rows(const float *rd, const float *wr, int C, int P,
                                                                int cb, int p0)
{
    int ch = cb * VL, q = p0 + PREFETCH * VL;
    if (q >= P) ch += VL, q -= P;
    if (q >= P) return;
    const int nc = CM_MIN(VL, C - ch);
#pragma GCC unroll 16
    for (int k = 0; k < VL; k++) {
        if (k >= nc) continue;
        const size_t at = (size_t)(ch + k) * P + q;
        if (rd) _mm_prefetch((const char *)(rd + at), _MM_HINT_T0);
        if (wr) _mm_prefetch((const char *)(wr + at), _MM_HINT_ET0);
    }
}

/* dst (blocked, row stride Wd pixels, channel-block stride plane floats) at pixel
 * (h + r0, w + c0) = src [C][H][W] at (h, w), through the prologue pv [3][ld] of sample_prologue
 * when not NULL; channels C..ci16 are written as 0, pixels outside the copied region are left
 * alone (the zero padding stays zero: the conv pads its input, the prologue's output). */
static void to_blocked(const float *src, int C, int H, int W, float *dst, int Wd, ptrdiff_t plane,
                       int r0, int c0, const float *pv, int ld)
{
    const int P = H * W;
    for (int cb = 0; cb * VL < C; cb++) {
        const int nc = CM_MIN(VL, C - cb * VL);
        const float *s = src + (size_t)cb * VL * P;
        float *d = dst + cb * plane;
        /* The prologue by lanes, which are channels once transposed: three vectors a channel
         * block, where applying it before the transpose took three broadcasts a row and kept all
         * 16 rows live through silu16 (spilled): S sampling +1.6-3.4% (4 interleaved rounds, AMD
         * Zen 5), the same bits. The padding channels' lanes get 0 in all three, and
         * silu((0 - 0) 0 + 0) = 0 keeps them zero. */
        __m512 pm = _mm512_setzero_ps(), ps = pm, pb = pm;
        if (pv) {
            const __mmask16 mc = lanes16(nc);
            pm = _mm512_maskz_loadu_ps(mc, pv + cb * VL);
            ps = _mm512_maskz_loadu_ps(mc, pv + ld + cb * VL);
            pb = _mm512_maskz_loadu_ps(mc, pv + 2 * ld + cb * VL);
        }
        for (int p0 = 0; p0 < P; p0 += VL) {
            const int np = CM_MIN(VL, P - p0);
            const __mmask16 m = lanes16(np);
            __m512 r[16];
            /* Unrolled, so that the 16 rows' loads are all in flight (the data come from L3) and
             * each has its own instruction for the stride prefetcher to follow. */
#pragma GCC unroll 16
            for (int k = 0; k < VL; k++)
                r[k] = k < nc ? _mm512_maskz_loadu_ps(m, s + (size_t)k * P + p0) : _mm512_setzero_ps();
            prefetch_rows(src, NULL, C, P, cb, p0);
            transpose16(r);
            int h = p0 / W, w = p0 % W;
            for (int j = 0; j < np; j++) {
                __m512 v = r[j];
                if (pv) v = silu16(_mm512_fmadd_ps(_mm512_sub_ps(v, pm), ps, pb));
                _mm512_store_ps(d + ((ptrdiff_t)(h + r0) * Wd + w + c0) * VL, v);
                if (++w == W) w = 0, h++;
            }
        }
    }
}

/* dst [C][H][W] = scale ((v + bias[ch]) + res[ch][h][w]), or dst += v when acc, for v the
 * blocked src (row stride Ws pixels, channel-block stride plane) at pixel (h + r0, w + c0).
 * bias and res may be NULL. */
static void from_blocked(const float *src, int Ws, ptrdiff_t plane, int r0, int c0, int C, int H,
                         int W, float *dst, const float *bias, const float *res, float scale, bool acc)
{
    const int P = H * W;
    for (int cb = 0; cb * VL < C; cb++) {
        const int nc = CM_MIN(VL, C - cb * VL);
        const float *s = src + cb * plane;
        float *d = dst + (size_t)cb * VL * P;
        for (int p0 = 0; p0 < P; p0 += VL) {
            const int np = CM_MIN(VL, P - p0);
            const __mmask16 m = lanes16(np);
            __m512 r[16];
            int h = p0 / W, w = p0 % W;
            for (int j = 0; j < VL; j++) {
                r[j] = j < np ? _mm512_load_ps(s + ((ptrdiff_t)(h + r0) * Ws + w + c0) * VL) : _mm512_setzero_ps();
                if (++w == W) w = 0, h++;
            }
            transpose16(r);
            prefetch_rows(res, dst, C, P, cb, p0);
#pragma GCC unroll 16
            for (int k = 0; k < VL; k++) {
                if (k >= nc) continue;
                float *o = d + (size_t)k * P + p0;
                __m512 v = r[k];
                if (bias) v += _mm512_set1_ps(bias[cb * VL + k]);
                if (res) v += _mm512_maskz_loadu_ps(m, res + (size_t)(cb * VL + k) * P + p0);
                if (scale != 1.0f) v *= _mm512_set1_ps(scale);
                if (acc) v = _mm512_maskz_loadu_ps(m, o) + v;
                _mm512_mask_storeu_ps(o, m, v);
            }
        }
    }
}

/* ---- the micro-kernel ---- */

/* C [R][16 S] (+= when acc) sum over k < K of a(r, k) B[k][16 S], a(r, k) = A[r ars + k aks]:
 * R x S vectors of C in registers, one row of B loaded and one a(r, k) broadcast per step. */
static inline __attribute__((always_inline)) void kernel(const int R, const int S, int K,
                                                         const float *A, ptrdiff_t ars,
                                                         ptrdiff_t aks, const float *B,
                                                         ptrdiff_t ldb, float *C, ptrdiff_t ldc,
                                                         bool acc)
{
    __m512 c[12][4];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) c[r][s] = _mm512_setzero_ps();
    for (int k = 0; k < K; k++, A += aks, B += ldb) {
        __m512 b[4];
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) b[s] = _mm512_load_ps(B + s * VL);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(A[r * ars]);
#pragma GCC unroll 4
            for (int s = 0; s < S; s++) c[r][s] = _mm512_fmadd_ps(a, b[s], c[r][s]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) {
            float *o = C + r * ldc + s * VL;
            if (acc) c[r][s] = _mm512_add_ps(_mm512_load_ps(o), c[r][s]);
            _mm512_store_ps(o, c[r][s]);
        }
}

typedef void KernelFn(int K, const float *A, ptrdiff_t ars, ptrdiff_t aks, const float *B,
                      ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc);

#define KERNEL_DEF(R, S)                                                                       \
    static void kernel_##R##_##S(int K, const float *A, ptrdiff_t ars, ptrdiff_t aks,          \
                                 const float *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc,       \
                                 bool acc)                                                     \
    {                                                                                          \
        kernel(R, S, K, A, ars, aks, B, ldb, C, ldc, acc);                                     \
    }
#define KERNEL_ROWS_8(S) KERNEL_DEF(1, S) KERNEL_DEF(2, S) KERNEL_DEF(3, S) KERNEL_DEF(4, S) \
    KERNEL_DEF(5, S) KERNEL_DEF(6, S) KERNEL_DEF(7, S) KERNEL_DEF(8, S)
KERNEL_ROWS_8(1) KERNEL_DEF(9, 1) KERNEL_DEF(10, 1) KERNEL_DEF(11, 1) KERNEL_DEF(12, 1)
KERNEL_ROWS_8(2) KERNEL_DEF(9, 2) KERNEL_DEF(10, 2) KERNEL_DEF(11, 2) KERNEL_DEF(12, 2)
KERNEL_ROWS_8(3)
KERNEL_DEF(1, 4) KERNEL_DEF(2, 4) KERNEL_DEF(3, 4) KERNEL_DEF(4, 4) KERNEL_DEF(5, 4) KERNEL_DEF(6, 4)

/* Rows of the register block for S vectors of columns: R x S accumulators plus S row vectors
 * of B fit the 32 registers, and each step's R + S loads stay below its R x S FMAs. */
static const int KERNEL_ROWS[5] = {0, 12, 12, 8, 6};

#define K8(S) {kernel_1_##S, kernel_2_##S, kernel_3_##S, kernel_4_##S, kernel_5_##S, kernel_6_##S, \
               kernel_7_##S, kernel_8_##S
static KernelFn *const KERNELS[5][12] = {
    {0},
    K8(1), kernel_9_1, kernel_10_1, kernel_11_1, kernel_12_1},
    K8(2), kernel_9_2, kernel_10_2, kernel_11_2, kernel_12_2},
    K8(3)},
    {kernel_1_4, kernel_2_4, kernel_3_4, kernel_4_4, kernel_5_4, kernel_6_4},
};

/* For each of the P planes (strides axs, bxs, cxs): C [rows][16 nv] (+)= A . B [K][16 nv] with
 * a(r, k) = A[r ars + k aks]. Columns go in chunks of at most 4 vectors, split evenly. */
static void planes_gemm(int P, int rows, int nv, int K, const float *A, ptrdiff_t ars, ptrdiff_t aks,
                        ptrdiff_t axs, const float *B, ptrdiff_t ldb, ptrdiff_t bxs, float *C,
                        ptrdiff_t ldc, ptrdiff_t cxs, bool acc)
{
    const int nchunks = (nv + 3) / 4;
    for (int xi = 0; xi < P; xi++) {
        const float *Ax = A + xi * axs, *Bx = B + xi * bxs;
        float *Cx = C + xi * cxs;
        for (int q = 0; q < nchunks; q++) {
            int s0 = nv * q / nchunks, S = nv * (q + 1) / nchunks - s0, R = KERNEL_ROWS[S];
            for (int r0 = 0; r0 < rows; r0 += R) {
                int r = CM_MIN(R, rows - r0);
                KERNELS[S][r - 1](K, Ax + r0 * ars, ars, aks, Bx + s0 * VL, ldb,
                                  Cx + r0 * ldc + s0 * VL, ldc, acc);
            }
        }
    }
}

/* ---- per-thread work ---- */

/* Floats per thread of each buffer (0: not used by this call); pa and pb hold bf16 pairs (words,
 * in a bf16 context's backward pass with dw: planes_du_bf16). */
typedef struct WinoWork {
    size_t xt, dyt, yt, dxt, v, pa, pb, m, du, bias, pro, stat, per_thread;
    ptrdiff_t mrxs;            /* pb's plane stride in words */
    ptrdiff_t xplane, yplane;  /* channel-block strides of xt/dxt and of yt/dyt */
    float *mem;
} WinoWork;

static WinoWork wino_work(Ctx *c, const WinoGeom *g, bool fwd, bool need_x, bool need_w, bool bf16)
{
    WinoWork k = {.xplane = (ptrdiff_t)g->Hp * g->Wp * VL, .yplane = (ptrdiff_t)g->m * g->m * g->T * VL};
    size_t xslot = (size_t)g->ci16 / VL * k.xplane, yslot = (size_t)g->co16 / VL * k.yplane;
    k.xt = fwd || need_w ? g->group * xslot : 0;
    k.yt = fwd ? g->group * yslot : 0;
    k.dyt = fwd ? 0 : g->group * yslot;
    k.dxt = need_x ? g->group * xslot : 0;
    k.v = (size_t)g->P * g->vxs;
    /* dU's operands in bf16 (pairs of tiles, at most tiles/2 + 1 of them): one plane of V^T, and
     * M''s 16 planes, the bf16 M' by channel pairs going to m */
    const size_t half = (size_t)g->tiles / 2 + 1;
    k.pa = bf16 && need_w ? (half * (size_t)g->ci16 + 15) & ~(size_t)15 : 0;
    k.mrxs = (ptrdiff_t)(half * (size_t)g->co16 + VL);
    k.pb = bf16 && need_w ? 16 * (size_t)k.mrxs : 0;
    k.m = (size_t)g->P * g->mxs;
    k.du = need_w ? (size_t)g->P * g->Cin * g->co16 : 0;
    k.bias = fwd ? (size_t)g->co16 : 0;
    k.pro = 3 * (size_t)g->ci16;
    k.stat = fwd ? 6 * (size_t)g->ci16 : 0;   /* pair_middle's sums (2 ci16 doubles), mean and rstd */
    k.per_thread = k.xt + k.yt + k.dyt + k.dxt + k.v + k.pa + k.pb + k.m + k.du + k.bias + k.pro + k.stat;
    k.mem = arena_alloc(&c->arena, sizeof(float) * k.per_thread * (size_t)cm_threads());
    return k;
}

typedef struct WinoBufs {
    float *xt, *yt, *dyt, *dxt, *v, *m, *du, *bias, *pro;
    uint32_t *pa, *pb;
    double *stat;
} WinoBufs;

static WinoBufs wino_bufs(const WinoWork *k, int t)
{
    float *p = k->mem + k->per_thread * (size_t)t;
    WinoBufs b;
    b.xt = p;
    b.yt = b.xt + k->xt;
    b.dyt = b.yt + k->yt;
    b.dxt = b.dyt + k->dyt;
    b.v = b.dxt + k->dxt;
    b.pa = (uint32_t *)(b.v + k->v);
    b.pb = b.pa + k->pa;
    b.m = b.v + k->v + k->pa + k->pb;
    b.du = b.m + k->m;
    b.bias = b.du + k->du;
    b.pro = b.bias + k->bias;
    b.stat = (double *)(b.pro + k->pro);   /* every part above is a whole number of 64-byte lines */
    return b;
}

/* This thread's share of the samples (fixed for a thread count: op_conv.c's thread_share). */
static void share(int N, int *lo, int *hi)
{
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    *lo = (int)((long)N * t / T);
    *hi = (int)((long)N * (t + 1) / T);
}

/* Where tile t of the block's sample s, channel block cb, starts in a blocked buffer of `blocks`
 * channel blocks a sample, `plane` floats a block and `row` pixels a row: its (m+2)x(m+2) input
 * window in xt and dxt (x_tile), its m x m output in yt and dyt (y_tile). */
static ptrdiff_t tile_at(const WinoGeom *g, int blocks, ptrdiff_t plane, int row, int s, int t, int cb)
{
    int ty = t / g->tw, tx = t % g->tw;
    return ((ptrdiff_t)s * blocks + cb) * plane + ((ptrdiff_t)g->m * ty * row + g->m * tx) * VL;
}

static ptrdiff_t x_tile(const WinoGeom *g, const WinoWork *k, int s, int t, int cb)
{
    return tile_at(g, g->ci16 / VL, k->xplane, g->Wp, s, t, cb);
}

static ptrdiff_t y_tile(const WinoGeom *g, const WinoWork *k, int s, int t, int cb)
{
    return tile_at(g, g->co16 / VL, k->yplane, g->m * g->tw, s, t, cb);
}

/* V (planes of stride vxs) of the block's tiles from xt. */
static void block_in(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *xt, float *v)
{
    for (int cb = 0; cb < g->ci16 / VL; cb++)
        for (int s = 0, row = 0; s < b->nb; s++)
            for (int t = b->t0; t < b->t1; t++, row++) {
                const float *src = xt + x_tile(g, k, s, t, cb);
                float *dst = v + (ptrdiff_t)row * g->ci16 + cb * VL;
                if (g->m == 4)
                    tile_in4(src, (ptrdiff_t)g->Wp * VL, dst, g->vxs);
                else
                    tile_in(src, (ptrdiff_t)g->Wp * VL, dst, g->vxs);
            }
}

/* block_in in bf16, F(4x4, 3x3)'s tiles: planes of stride vbxs words, a tile's channels in pairs
 * (ci16 / 2 words): the forward product's A as gemm_bf16_packed reads it, with no packing pass. */
__attribute__((target("avx512f,avx512bf16"))) static void block_in_bf16(const WinoGeom *g, const WinoWork *k,
                                                                        const WinoBlock *b, const float *xt,
                                                                        uint32_t *v)
{
    for (int cb = 0; cb < g->ci16 / VL; cb++)
        for (int s = 0, row = 0; s < b->nb; s++)
            for (int t = b->t0; t < b->t1; t++, row++)
                tile_in4_bf16(xt + x_tile(g, k, s, t, cb), (ptrdiff_t)g->Wp * VL,
                              v + (ptrdiff_t)row * (g->ci16 / 2) + cb * (VL / 2), g->vbxs);
}

/* dxt += the adjoint of block_in for V' in v. */
static void block_in_adjoint(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *v, float *dxt)
{
    for (int cb = 0; cb < g->ci16 / VL; cb++)
        for (int s = 0, row = 0; s < b->nb; s++)
            for (int t = b->t0; t < b->t1; t++, row++)
                tile_in_adjoint(v + (ptrdiff_t)row * g->ci16 + cb * VL, g->vxs, dxt + x_tile(g, k, s, t, cb),
                                (ptrdiff_t)g->Wp * VL);
}

/* The block's output tiles from M in m into a blocked buffer at dst: channel-block stride plane,
 * row stride `row` pixels (tile_at). */
static void block_out_to(const WinoGeom *g, const WinoBlock *b, const float *m, float *dst, ptrdiff_t plane, int row)
{
    for (int cb = 0; cb < g->co16 / VL; cb++)
        for (int s = 0, r = 0; s < b->nb; s++)
            for (int t = b->t0; t < b->t1; t++, r++) {
                const float *src = m + (ptrdiff_t)r * g->co16 + cb * VL;
                float *d = dst + tile_at(g, g->co16 / VL, plane, row, s, t, cb);
                if (g->m == 4)
                    tile_out4(src, g->mxs, d, (ptrdiff_t)row * VL);
                else
                    tile_out(src, g->mxs, d, (ptrdiff_t)row * VL);
            }
}

/* yt's tiles of the block from M in m. */
static void block_out(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *m, float *yt)
{
    block_out_to(g, b, m, yt, k->yplane, g->m * g->tw);
}

/* M' in m from the block's tiles of dyt, in fp32: F(4x4, 3x3) (bf16: block_out_adjoint_bf16). */
static void block_out_adjoint(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *dyt, float *m)
{
    for (int cb = 0; cb < g->co16 / VL; cb++)
        for (int s = 0, row = 0; s < b->nb; s++)
            for (int t = b->t0; t < b->t1; t++, row++)
                tile_out4_adjoint(dyt + y_tile(g, k, s, t, cb), (ptrdiff_t)4 * g->tw * VL,
                                  m + (ptrdiff_t)row * g->co16 + cb * VL, g->mxs);
}

/* block_out_adjoint in bf16, straight into the layouts the two products read (either may be
 * NULL): mc, planes of stride mcxs words, a tile's channels in pairs (co16 / 2 words a row: dx's A);
 * mr, planes of stride mrxs words, pairs of tiles [(rows + 1) / 2][co16] (dU's B; rows odd: the
 * last pair's high half 0). Two tiles at a time. */
__attribute__((target("avx512f,avx512bf16"))) static void block_out_adjoint_bf16(const WinoGeom *g, const WinoWork *k,
                                                                                 const WinoBlock *b, const float *dyt,
                                                                                 uint32_t *mc, ptrdiff_t mcxs,
                                                                                 uint32_t *mr, ptrdiff_t mrxs)
{
    const ptrdiff_t rs = (ptrdiff_t)2 * g->tw * VL;
    const int rows = block_tiles(b), per = b->t1 - b->t0;
    for (int cb = 0; cb < g->co16 / VL; cb++)
        for (int r = 0; r < rows; r += 2) {
            __m512 v[2][16];
            for (int h = 0; h < 2; h++) {
                if (r + h == rows) {
                    for (int xi = 0; xi < 16; xi++) v[h][xi] = _mm512_setzero_ps();
                    continue;
                }
                tile_out_adjoint_planes(dyt + y_tile(g, k, (r + h) / per, b->t0 + (r + h) % per, cb), rs, v[h]);
            }
            for (int xi = 0; xi < 16; xi++) {
                if (mc)
                    for (int h = 0; h < 2 && r + h < rows; h++)
                        _mm256_storeu_si256((__m256i *)(mc + xi * mcxs + (ptrdiff_t)(r + h) * (g->co16 / 2) + cb * (VL / 2)),
                                            (__m256i)_mm512_cvtneps_pbh(v[h][xi]));
                if (mr)
                    _mm512_storeu_si512(mr + xi * mrxs + (ptrdiff_t)(r / 2) * g->co16 + cb * VL, pair16(v[0][xi], v[1][xi]));
            }
        }
}

/* The bias of sample n, b + bn[n], in buf; NULL when the epilogue has neither. */
static const float *sample_bias(const ConvEpilogue *ep, int n, int Cout, float *buf)
{
    if (!ep->b && !ep->bn) return NULL;
    for (int co = 0; co < Cout; co++)
        buf[co] = (ep->b ? ep->b[co] : 0.0f) + (ep->bn ? ep->bn[(size_t)n * Cout + co] : 0.0f);
    return buf;
}

/* ---- bf16 products (a bf16 context: gemm_bf16.h) ---- */

/* The P planes of U or U^T, [P][K][n] floats, as pairs of rows for gemm_bf16_packed:
 * [P][Kp = (K+1)/2][n] words, in the arena. */
static uint32_t *pack_weight_planes(Ctx *c, int P, const float *u, int K, int n)
{
    const int Kp = (K + 1) / 2;
    uint32_t *ub = arena_alloc(&c->arena, sizeof(uint32_t) * P * (size_t)Kp * n);
    for (int xi = 0; xi < P; xi++)
        bf16_pack_row_pairs(u + (ptrdiff_t)xi * K * n, K, n, n, ub + (ptrdiff_t)xi * Kp * n, n);
    return ub;
}

/* Per plane, C [rows][16 nv] = A [rows][Kp pairs] . B, A packed (row stride ars, plane stride
 * axs words: block_in_bf16's V for the forward M = V U, block_out_adjoint_bf16's M' for dx's
 * V' = M' U^T) and B the weight planes of pack_weight_planes. K odd: the high half of A's last
 * pair is the padding channel K, 0 in V and M' (to_blocked writes the padding channels as 0). */
static void planes_bf16(int P, int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars, ptrdiff_t axs,
                        const uint32_t *bp, float *C, ptrdiff_t cxs)
{
    const ptrdiff_t ldb = (ptrdiff_t)VL * nv;
    for (int xi = 0; xi < P; xi++)
        gemm_bf16_packed(rows, nv, Kp, A + xi * axs, ars, bp + xi * Kp * ldb, ldb, C + xi * cxs, ldb, false);
}

/* dU [Cin][co16] += V^T M' per plane in bf16, summed over the block's tiles: V's planes packed
 * into pairs of tiles by rows of V^T (as the tiles read them) in pa, one plane at a time; M''s
 * from block_out_adjoint_bf16 (rows odd: the last pair's high half 0 in both). */
static void planes_du_bf16(const WinoGeom *g, int rows, const float *v, const uint32_t *mr, ptrdiff_t mrxs,
                           uint32_t *pa, float *du)
{
    const int Kp = (rows + 1) / 2;
    for (int xi = 0; xi < 16; xi++) {
        bf16_pack_transposed(v + xi * g->vxs, rows, g->Cin, g->ci16, pa, Kp);    /* a(ci, p) = pa[ci][p] */
        gemm_bf16_packed(g->Cin, g->co16 / VL, Kp, pa, Kp, mr + xi * mrxs, g->co16,
                         du + (ptrdiff_t)xi * g->Cin * g->co16, g->co16, true);
    }
}

/* xt's samples of block b (its first tiles) from x, through the prologue pro (NULL: none). */
static void block_inputs(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *x,
                         const ConvPrologue *pro, const WinoBufs *bf)
{
    const size_t xslot = (size_t)g->ci16 / VL * k->xplane, xin = (size_t)g->Cin * g->H * g->W;
    for (int s = 0; s < b->nb; s++) {
        int n = b->n0 + s;
        to_blocked(x + (size_t)n * xin, g->Cin, g->H, g->W, bf->xt + s * xslot, g->Wp, k->xplane, g->pad, g->pad,
                   sample_prologue(pro, n, g->Cin, g->ci16, bf->pro), g->ci16);
    }
}

/* M (bf->m) of block b from the input tiles in xt: fp32 products with u (ub NULL), else bf16 ones
 * with ub (planes_bf16). */
static void block_products(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const float *xt,
                           const float *u, const uint32_t *ub, const WinoBufs *bf)
{
    if (ub) {
        block_in_bf16(g, k, b, xt, (uint32_t *)bf->v);
        planes_bf16(g->P, block_tiles(b), g->co16 / VL, (g->Cin + 1) / 2, (const uint32_t *)bf->v, g->ci16 / 2,
                    g->vbxs, ub, bf->m, g->mxs);
    } else {
        block_in(g, k, b, xt, bf->v);
        planes_gemm(g->P, block_tiles(b), g->co16 / VL, g->Cin, bf->v, g->ci16, 1, g->vxs, u, g->co16,
                    (ptrdiff_t)g->Cin * g->co16, bf->m, g->co16, g->mxs, false);
    }
}

/* y's samples of block b (its last tiles) from yt, through the epilogue ep. */
static void block_outputs(const WinoGeom *g, const WinoWork *k, const WinoBlock *b, const ConvEpilogue *ep,
                          float *y, const WinoBufs *bf)
{
    const size_t yslot = (size_t)g->co16 / VL * k->yplane, yout = (size_t)g->Cout * g->Ho * g->Wo;
    for (int s = 0; s < b->nb; s++) {
        int n = b->n0 + s;
        from_blocked(bf->yt + s * yslot, g->m * g->tw, k->yplane, 0, 0, g->Cout, g->Ho, g->Wo, y + (size_t)n * yout,
                     sample_bias(ep, n, g->Cout, bf->bias), ep->r ? ep->r + (size_t)n * yout : NULL, ep->scale, false);
        if (ep->mean)   /* the sample is still in this core's cache */
            gn_stats_serial(y + (size_t)n * yout, 1, g->Cout, (size_t)g->Ho * g->Wo, ep->groups, ep->eps,
                            ep->mean + (size_t)n * ep->groups, ep->rstd + (size_t)n * ep->groups);
    }
}

/* ub NULL: fp32 products with u; else bf16 ones with ub (planes_bf16). */
static void forward_share(const WinoGeom *g, const WinoWork *k, const float *x, const ConvPrologue *pro,
                          const float *u, const uint32_t *ub, const ConvEpilogue *ep, float *y)
{
    WinoBufs bf = wino_bufs(k, omp_get_thread_num());
    memset(bf.xt, 0, sizeof(float) * k->xt);   /* the padding stays zero across samples */
    /* Units taken dynamically (see "Split between threads" at the top): a sample's blocks, or
     * one block of a group of samples. */
    const int units = (g->N + g->group - 1) / g->group;
#pragma omp for schedule(dynamic, 1) nowait
    for (int q = 0; q < units; q++) {
        WinoBlock b;
        for (int i = q * g->split; i < (q + 1) * g->split && block_at(g, 0, g->N, i, &b); i++) {
            if (b.t0 == 0) block_inputs(g, k, &b, x, pro, &bf);
            block_products(g, k, &b, bf.xt, u, ub, &bf);
            block_out(g, k, &b, bf.m, bf.yt);
            if (b.t1 == g->T) block_outputs(g, k, &b, ep, y, &bf);
        }
    }
}

/* y = the epilogue of the conv of pro(x) on geometry g, whose weight planes are u (fp32) or ub
 * (bf16 pairs, not NULL: bf16 products). */
static void forward_planes(Ctx *c, const WinoGeom *g, const float *x, const ConvPrologue *pro, const float *u,
                           const uint32_t *ub, const ConvEpilogue *ep, float *y)
{
    WinoWork k = wino_work(c, g, true, false, false, ub != NULL);
#pragma omp parallel num_threads(cm_threads())
    forward_share(g, &k, x, pro, u, ub, ep, y);
}

/* The forward pass's weight planes in the arena: U [P][Cin][co16] = G w G^T, zero in the padding
 * columns, and in a bf16 context their pairs in *ub (else NULL). */
static float *forward_weights(Ctx *c, const WinoGeom *g, const float *w, const uint32_t **ub)
{
    float *u = arena_calloc(&c->arena, sizeof(float) * g->P * (size_t)g->Cin * g->co16);
    weight_planes(g->m, w, g->Cin, g->Cout, 9, (ptrdiff_t)9 * g->Cin, u, g->co16, (ptrdiff_t)g->Cin * g->co16);
    *ub = c->precision == CM_PRECISION_BF16 ? pack_weight_planes(c, g->P, u, g->Cin, g->co16) : NULL;
    return u;
}

void conv_wino_forward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                       const ConvEpilogue *ep, float *y, int N, int Cin, int H, int W, int Cout, int pad)
{
    WinoGeom g = wino_geom(N, Cin, H, W, Cout, pad, 4);
    ArenaMark mark = arena_mark(&c->arena);
    const uint32_t *ub;
    const float *u = forward_weights(c, &g, w, &ub);
    forward_planes(c, &g, x, pro, u, ub, ep, y);
    arena_release(&c->arena, mark);
}

/* ---- two convs in a row (conv_wino_pair_forward) ---- */

bool conv_wino_pair_usable(int Cin, int Cmid, int Cout)
{
    return conv_wino_usable(Cin, Cmid, 3, 3, 1, 1) && conv_wino_usable(Cmid, Cout, 3, 3, 1, 1);
}

/* Conv2's input from conv1's output h in xt (one sample, g's blocked layout, h at pixel offset (1,
 * 1)), in place: h + bias (bias [Cin] or NULL), the group norm's statistics of that (sums in
 * double, gn_moments), then silu(GN(h)); the overhang past Ho, Wo set to 0. pv [3][ci16] and
 * st (2 ci16 doubles, then mean and rstd [groups]) are scratch. */
static void pair_middle(const WinoGeom *g, const WinoWork *k, float *xt, const float *bias, const ConvMiddle *mid,
                        float *pv, double *st)
{
    const int C = g->Cin, ld = g->ci16, Cg = C / mid->groups;
    const ptrdiff_t rs = (ptrdiff_t)g->Wp * VL;
    for (int cb = 0; cb < ld / VL; cb++) {
        const __m512 bv = bias ? _mm512_maskz_loadu_ps(lanes16(C - cb * VL), bias + cb * VL) : _mm512_setzero_ps();
        __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
        float *p = xt + cb * k->xplane + rs + VL;
        for (int r = 0; r < g->Ho; r++)
            for (int c = 0; c < g->Wo; c++) {
                float *o = p + r * rs + c * VL;
                __m512 v = _mm512_add_ps(_mm512_load_ps(o), bv);
                _mm512_store_ps(o, v);
                __m512d d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
                __m512d d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
                s0 = _mm512_add_pd(s0, d0);
                s1 = _mm512_add_pd(s1, d1);
                q0 = _mm512_fmadd_pd(d0, d0, q0);
                q1 = _mm512_fmadd_pd(d1, d1, q1);
            }
        _mm512_storeu_pd(st + cb * VL, s0);
        _mm512_storeu_pd(st + cb * VL + 8, s1);
        _mm512_storeu_pd(st + ld + cb * VL, q0);
        _mm512_storeu_pd(st + ld + cb * VL + 8, q1);
    }
    float *mean = (float *)(st + 2 * ld), *rstd = mean + mid->groups;
    for (int gi = 0; gi < mid->groups; gi++) {
        double s = 0, q = 0;
        for (int ch = gi * Cg; ch < (gi + 1) * Cg; ch++) s += st[ch], q += st[ld + ch];
        gn_moments(s, q, (double)Cg * g->Ho * g->Wo, mid->eps, &mean[gi], &rstd[gi]);
    }
    sample_prologue(&(ConvPrologue){mean, rstd, mid->w, mid->b, mid->groups}, 0, C, ld, pv);
    for (int cb = 0; cb < ld / VL; cb++) {
        /* the padding channels' lanes 0 (as to_blocked's): silu((0 - 0) 0 + 0) = 0 */
        const __mmask16 mc = lanes16(C - cb * VL);
        const __m512 pm = _mm512_maskz_loadu_ps(mc, pv + cb * VL), ps = _mm512_maskz_loadu_ps(mc, pv + ld + cb * VL),
                     pb = _mm512_maskz_loadu_ps(mc, pv + 2 * ld + cb * VL);
        float *p = xt + cb * k->xplane + rs + VL;
        for (int r = 0; r < g->m * g->th; r++)
            for (int c = 0; c < g->m * g->tw; c++) {
                float *o = p + r * rs + c * VL;
                __m512 v = _mm512_setzero_ps();
                if (r < g->Ho && c < g->Wo) v = silu16(_mm512_fmadd_ps(_mm512_sub_ps(_mm512_load_ps(o), pm), ps, pb));
                _mm512_store_ps(o, v);
            }
    }
}

/* A thread's units of conv_wino_pair_forward: per unit (a sample, or a group of samples), conv1's
 * blocks into xt2, the middle, conv2's blocks. g1 and g2 take the same blocks (wino_geom_chans). */
static void pair_share(const WinoGeom *g1, const WinoGeom *g2, const WinoWork *k1, const WinoWork *k2, const float *x,
                       const ConvPrologue *pro1, const float *u1, const uint32_t *ub1, const ConvEpilogue *ep1,
                       const ConvMiddle *mid, const float *u2, const uint32_t *ub2, const ConvEpilogue *ep2, float *y)
{
    const int t = omp_get_thread_num();
    WinoBufs b1 = wino_bufs(k1, t), b2 = wino_bufs(k2, t);
    memset(b1.xt, 0, sizeof(float) * k1->xt);
    memset(b2.xt, 0, sizeof(float) * k2->xt);   /* conv2's padding: row and column 0 and the last */
    const size_t slot2 = (size_t)g2->ci16 / VL * k2->xplane;
    const int units = (g1->N + g1->group - 1) / g1->group;
#pragma omp for schedule(dynamic, 1) nowait
    for (int q = 0; q < units; q++) {
        WinoBlock b;
        for (int i = q * g1->split; i < (q + 1) * g1->split && block_at(g1, 0, g1->N, i, &b); i++) {
            if (b.t0 == 0) block_inputs(g1, k1, &b, x, pro1, &b1);
            block_products(g1, k1, &b, b1.xt, u1, ub1, &b1);
            /* into conv2's zero-padded input at pixel (1, 1) (g1 and g2 tile alike); pair_middle
             * clears the last tiles' overhang past Ho, Wo */
            block_out_to(g1, &b, b1.m, b2.xt + ((ptrdiff_t)g2->Wp + 1) * VL, k2->xplane, g2->Wp);
        }
        const int n0 = q * g1->group, nb = CM_MIN(g1->group, g1->N - n0);   /* the unit's samples */
        for (int s = 0; s < nb; s++)
            pair_middle(g2, k2, b2.xt + s * slot2, sample_bias(ep1, n0 + s, g1->Cout, b1.bias), mid, b2.pro, b2.stat);
        for (int i = q * g2->split; i < (q + 1) * g2->split && block_at(g2, 0, g2->N, i, &b); i++) {
            block_products(g2, k2, &b, b2.xt, u2, ub2, &b2);
            block_out(g2, k2, &b, b2.m, b2.yt);
            if (b.t1 == g2->T) block_outputs(g2, k2, &b, ep2, y, &b2);
        }
    }
}

void conv_wino_pair_forward(Ctx *c, const float *x, const ConvPrologue *pro1, const float *w1,
                            const ConvEpilogue *ep1, const ConvMiddle *mid, const float *w2,
                            const ConvEpilogue *ep2, float *y, int N, int Cin, int H, int W, int Cmid, int Cout)
{
    CM_ASSERT(conv_wino_pair_usable(Cin, Cmid, Cout) && mid->groups > 0 && Cmid % mid->groups == 0,
              "conv_wino_pair_forward: %d -> %d -> %d channels, %d groups", Cin, Cmid, Cout, mid->groups);
    const int chans = CM_MAX(round16(Cin) + round16(Cmid), round16(Cmid) + round16(Cout));
    WinoGeom g1 = wino_geom_chans(N, Cin, H, W, Cmid, 1, 4, chans), g2 = wino_geom_chans(N, Cmid, H, W, Cout, 1, 4, chans);
    ArenaMark mark = arena_mark(&c->arena);
    const uint32_t *ub1, *ub2;
    const float *u1 = forward_weights(c, &g1, w1, &ub1), *u2 = forward_weights(c, &g2, w2, &ub2);
    /* k1's yt goes unused (conv1's tiles go to k2's xt) */
    WinoWork k1 = wino_work(c, &g1, true, false, false, ub1 != NULL), k2 = wino_work(c, &g2, true, false, false, ub2 != NULL);
#pragma omp parallel num_threads(cm_threads())
    pair_share(&g1, &g2, &k1, &k2, x, pro1, u1, ub1, ep1, mid, u2, ub2, ep2, y);
    arena_release(&c->arena, mark);
}

/* dx (+)= the gradient of the conv's input as a conv of its own, by F(4x4, 3x3): dy zero-padded by
 * 2 - pad, with the kernels w^T [Cin][Cout] turned by 180 degrees:
 *   dx[ci][h][w] = sum over co, a, b of dy[co][h + a - (2 - pad)][w + b - (2 - pad)] w[co][ci][2 - a][2 - b].
 * Written or accumulated (dx_fresh) in one store per value, as the epilogue adds a residual. */
static void backward_dx4(Ctx *c, const float *w, const float *dy, float *dx, bool dx_fresh, int N, int Cin, int H,
                         int W, int Cout, int pad)
{
    WinoGeom g = wino_geom(N, Cout, H + 2 * pad - 2, W + 2 * pad - 2, Cin, 2 - pad, 4);
    const size_t n = (size_t)Cout * Cin * 9;
    float *wt = arena_alloc(&c->arena, sizeof(float) * n);   /* w with each kernel reversed */
    for (size_t i = 0; i < n; i += 9)
        for (int q = 0; q < 9; q++) wt[i + q] = w[i + 8 - q];
    /* U [P][Cout][ci16]: element (co, ci) the kernel at wt + co 9 Cin + ci 9 */
    float *u = arena_calloc(&c->arena, sizeof(float) * g.P * (size_t)Cout * g.co16);
    weight_planes(4, wt, Cout, Cin, (ptrdiff_t)9 * Cin, 9, u, g.co16, (ptrdiff_t)Cout * g.co16);
    ConvEpilogue ep = {.r = dx_fresh ? NULL : dx, .scale = 1.0f};
    forward_planes(c, &g, dy, NULL, u, NULL, &ep, dx);
}

/* dx (when dxt is used: bf16 only) and this thread's dU partial (when du is) for its samples; returns
 * whether the partial was written. bf16: bf16 products, with utb (U^T's pairs) for dx. */
static bool backward_share(const WinoGeom *g, const WinoWork *k, const float *x, const ConvPrologue *pro,
                           const uint32_t *utb, bool bf16, const float *dy, float *dx, bool dx_fresh)
{
    int lo, hi;
    share(g->N, &lo, &hi);
    WinoBufs bf = wino_bufs(k, omp_get_thread_num());
    memset(bf.xt, 0, sizeof(float) * k->xt);
    memset(bf.dyt, 0, sizeof(float) * k->dyt);  /* the rows/columns past Ho, Wo stay zero */
    if (bf16) memset(bf.du, 0, sizeof(float) * k->du);   /* fp32's first block writes dU whole */
    const size_t xslot = (size_t)g->ci16 / VL * k->xplane, yslot = (size_t)g->co16 / VL * k->yplane;
    const size_t xin = (size_t)g->Cin * g->H * g->W, yout = (size_t)g->Cout * g->Ho * g->Wo;
    WinoBlock b;
    for (int i = 0; block_at(g, lo, hi, i, &b); i++) {
        if (b.t0 == 0)
            for (int s = 0; s < b.nb; s++) {
                int n = b.n0 + s;
                to_blocked(dy + n * yout, g->Cout, g->Ho, g->Wo, bf.dyt + s * yslot, g->m * g->tw, k->yplane, 0, 0,
                           NULL, 0);
                if (k->xt)
                    to_blocked(x + n * xin, g->Cin, g->H, g->W, bf.xt + s * xslot, g->Wp, k->xplane, g->pad,
                               g->pad, sample_prologue(pro, n, g->Cin, g->ci16, bf.pro), g->ci16);
                if (k->dxt) memset(bf.dxt + s * xslot, 0, sizeof(float) * xslot);
            }
        int rows = block_tiles(&b);
        /* bf16: M' by channel pairs in m (for dx) and by pairs of tiles in pb (for dU) */
        uint32_t *mc = (uint32_t *)bf.m;
        if (bf16)
            block_out_adjoint_bf16(g, k, &b, bf.dyt, k->dxt ? mc : NULL, g->mbxs, k->du ? bf.pb : NULL, k->mrxs);
        else
            block_out_adjoint(g, k, &b, bf.dyt, bf.m);
        if (k->du) {   /* dU [Cin][co16] (+)= V^T M' per plane: a(r, k) = V[k][r] */
            block_in(g, k, &b, bf.xt, bf.v);
            if (bf16)
                planes_du_bf16(g, rows, bf.v, bf.pb, k->mrxs, bf.pa, bf.du);
            else
                planes_gemm(g->P, g->Cin, g->co16 / VL, rows, bf.v, 1, g->ci16, g->vxs, bf.m, g->co16, g->mxs,
                            bf.du, g->co16, (ptrdiff_t)g->Cin * g->co16, i > 0);
        }
        if (k->dxt) {  /* bf16: V' = M' U^T per plane, folded into dxt */
            planes_bf16(16, rows, g->ci16 / VL, (g->Cout + 1) / 2, mc, g->co16 / 2, g->mbxs, utb, bf.v, g->vxs);
            block_in_adjoint(g, k, &b, bf.v, bf.dxt);
            if (b.t1 == g->T)
                for (int s = 0; s < b.nb; s++)
                    from_blocked(bf.dxt + s * xslot, g->Wp, k->xplane, g->pad, g->pad, g->Cin, g->H, g->W,
                                 dx + (b.n0 + s) * xin, NULL, NULL, 1.0f, !dx_fresh);
        }
    }
    return hi > lo;
}

/* dw += G^T dU G with dU = V^T M' summed over tiles: F(4x4, 3x3)'s in fp32, F(2x2, 3x3)'s in bf16,
 * whose pass also gives dx (fp32's dx is backward_dx4's). */
static void backward_adjoint(Ctx *c, const float *x, const ConvPrologue *pro, const float *w, const float *dy,
                             float *dx, bool dx_fresh, float *dw, int N, int Cin, int H, int W, int Cout, int pad)
{
    const bool bf16 = c->precision == CM_PRECISION_BF16;
    CM_ASSERT(bf16 || !dx, "conv_wino backward: fp32's dx is backward_dx4's");
    WinoGeom g = wino_geom(N, Cin, H, W, Cout, pad, bf16 ? 2 : 4);
    float *ut = NULL;
    if (dx) {   /* bf16's U^T [16][Cout][ci16], zero in the padding columns */
        ut = arena_calloc(&c->arena, sizeof(float) * 16 * (size_t)Cout * g.ci16);
        weight_planes(2, w, Cout, Cin, (ptrdiff_t)9 * Cin, 9, ut, g.ci16, (ptrdiff_t)Cout * g.ci16);
    }
    const uint32_t *utb = dx ? pack_weight_planes(c, 16, ut, Cout, g.ci16) : NULL;
    WinoWork k = wino_work(c, &g, false, dx != NULL, dw != NULL, bf16);
    int T = cm_threads();
    bool *written = arena_calloc(&c->arena, sizeof(bool) * (size_t)T);
#pragma omp parallel num_threads(T)
    written[omp_get_thread_num()] = backward_share(&g, &k, x, pro, utb, bf16, dy, dx, dx_fresh);
    if (dw) {   /* dw [Cout][Cin][3][3] += G^T dU G, dU the threads' partials summed in thread order */
        const ptrdiff_t us = (ptrdiff_t)Cin * g.co16;
#pragma omp parallel for schedule(static)
        for (int ci = 0; ci < Cin; ci++)
            for (int c0 = 0; c0 < Cout; c0 += VL) {   /* 16 kernels (co) a vector */
                __m512 du[36], dg[9];
                for (int xi = 0; xi < g.P; xi++) du[xi] = _mm512_setzero_ps();
                for (int t = 0; t < T; t++) {
                    if (!written[t]) continue;
                    const float *p = wino_bufs(&k, t).du + (ptrdiff_t)ci * g.co16 + c0;
                    for (int xi = 0; xi < g.P; xi++) du[xi] = _mm512_add_ps(du[xi], _mm512_loadu_ps(p + xi * us));
                }
                if (g.m == 4)   /* a literal m, so that the inlined G's zero terms fold away */
                    weight_adjoint16(4, du, dg);
                else
                    weight_adjoint16(2, du, dg);
                float o[9][VL];
                for (int q = 0; q < 9; q++) _mm512_storeu_ps(o[q], dg[q]);
                for (int co = c0; co < CM_MIN(Cout, c0 + VL); co++) {
                    float *d = dw + ((size_t)co * Cin + ci) * 9;
                    for (int q = 0; q < 9; q++) d[q] += o[q][co - c0];
                }
            }
    }
}

void conv_wino_backward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                        const float *dy, float *dx, bool dx_fresh, float *dw, int N, int Cin, int H,
                        int W, int Cout, int pad)
{
    if (!dx && !dw) return;
    ArenaMark mark = arena_mark(&c->arena);
    const bool bf16 = c->precision == CM_PRECISION_BF16;
    if (!bf16 && dx) {   /* fp32: dx as a conv of its own, dw below by F(4x4, 3x3)'s adjoint */
        backward_dx4(c, w, dy, dx, dx_fresh, N, Cin, H, W, Cout, pad);
        dx = NULL;
    }
    if (dx || dw) backward_adjoint(c, x, pro, w, dy, dx, dx_fresh, dw, N, Cin, H, W, Cout, pad);
    arena_release(&c->arena, mark);
}

#endif
