/* test_bf16.c: the bf16 precision (issue 19).
 *
 * bf16 rounding: bf16_bits on values whose rounding is known by hand (ties to even, carries into
 * the exponent, overflow to inf, NaN kept NaN).
 *
 * gemm_bf16 for every ta/tb, odd and awkward M, N, K, lead dimensions wider than the matrices,
 * alpha and beta != 1 (and beta = 0 over a C of NaNs, which BLAS does not read), against two
 * double-precision oracles summed here:
 *   - the product of the bf16-rounded inputs. Products of two bf16 are exact in fp32, so the only
 *     error left is fp32 summation: K additions, then alpha sum (one rounding) and + beta C (one
 *     more), each at most 2^-24 relative to the partial sums, which are bounded by
 *     S = |alpha| sum_k |a_ik||b_kj| + |beta||c_ij|: bound (K + 4) 2^-24 S (+ 2 slack ulps).
 *   - the plain fp32 product. Rounding each input to bf16 (u = 2^-8) moves a product by at most
 *     (2u + u^2) |a||b|, so: bound (2u + u^2 + (K + 4) 2^-24) S.
 * The first bound is far below bf16's own error, so the test also fails if gemm_bf16 did not
 * round its inputs (the second comparison would pass alone), and the error to the plain product
 * must be above fp32's level on the larger cases for the same reason.
 * The results must be the same bits with 1 and 3 threads, when called inside an OpenMP parallel
 * region (one thread per call) and from op(A) packed first (gemm_bf16_pack_a, gemm_bf16_a: how
 * op_conv.c's im2col path packs its weights once per call).
 *
 * conv2d (3x3 stride 1 and 2, 1x1; the 3x3 stride-1 cases with 16 and 17 channels take Winograd)
 * and linear, forward and every gradient, in a bf16 context, against
 * PyTorch's torch.autocast("cpu", dtype=torch.bfloat16) (tests/torch/bf16.py). Both round the inputs (and
 * the upstream gradient) to bf16 the same way and sum exact products in fp32, but autocast also
 * rounds each result to bf16 and adds a bf16-rounded bias, while cmlab keeps fp32 results and an
 * fp32 bias (and sums db from the fp32 gradient). Per element, with t PyTorch's value, M the sum of
 * the magnitudes of its terms (the fixture's M*) and K the summation length:
 *   |cmlab - t| <= u/(1-u) |t| + 2 (K + 2) 2^-24 M  (+ u |b| for y, + u M for db),  u = 2^-8.
 * (The fixture keeps its linear products at m n k >= 16^3, where PyTorch 1.13 uses oneDNN: its
 * smaller-GEMM fallback rounds partial sums to bf16, beyond this model; see bf16.py.)
 * And against cmlab's own fp32 op: |bf16 - fp32| <= (2u + u^2) M + 4 (K + 2) 2^-24 M (fp32 sums
 * on both sides, Winograd's transforms on the fp32 side counted twice). Winograd's bf16 products
 * round transformed values instead: its y, dx and dw bounds add Mw (winograd_magnitudes), and,
 * since F(4x4, 3x3)'s Mw (the forward pass) is a loose worst case, their rms error to cmlab's fp32
 * is held to RMS_WINO of the rms value.
 *
 * A tiny U-Net (16-32 channels, 2 levels, middle attention: convs, linear, bmm) in bf16 against
 * fp32: output and weight gradients within REL_UNET of the largest value. A short EDM training run
 * (TINY below, 40 steps) in bf16 stays finite and its mean loss is within LOSS_TOL of the fp32
 * run's from the same seed.
 *
 * The CLI: --precision bad (sample, eval, edit, invert, trajectories) exits 2 naming the option,
 * model.precision = x in an experiment file exits 2 naming the file and the key, CMLAB_BF16=of
 * (not off) exits 2 naming the variable; sample --precision bf16 runs. CMLAB_BF16=off (the forced
 * fallback): sample --precision bf16 prints the note once and writes the bytes --precision fp32
 * writes, where without it the bf16 grid differs. invert and trajectories --precision bf16 say
 * bf16 in their JSON and give other results than fp32.
 *
 * gemm_bf16_packed (Winograd's products) directly against the double sum, and which kernels ran
 * (AMX where /proc/cpuinfo names it; vdpbf16ps alone under CMLAB_BF16=avx512, meson's bf16-avx512
 * test, which runs the kernel and op checks again that way).
 *
 * Skipped (exit 77) on a CPU without AVX512_BF16, after the rounding checks. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/conv_wino.h"
#include "autograd/gemm_bf16.h"
#include "autograd/ops.h"
#include "autograd/threads.h"
#include "fixture.h"
#include "nn/params.h"
#include "nn/unet.h"

#define SKIP 77

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void test_rounding(void)
{
    static const struct { uint32_t in; uint16_t want; const char *what; } R[] = {
        {0x3f800000u, 0x3f80, "1"},
        {0x3f808000u, 0x3f80, "1 + 2^-8: tie, down to even"},
        {0x3f818000u, 0x3f82, "1 + 3 2^-8: tie, up to even"},
        {0x3f808001u, 0x3f81, "just above the tie"},
        {0x3f807fffu, 0x3f80, "just below the tie"},
        {0xbf818000u, 0xbf82, "negative tie, up to even"},
        {0x3fffffffu, 0x4000, "carry into the exponent"},
        {0x7f7fffffu, 0x7f80, "FLT_MAX rounds to inf"},
        {0x7f800000u, 0x7f80, "inf"},
        {0x00000001u, 0x0000, "smallest subnormal"},
    };
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
        uint16_t got = bf16_bits(from_bits(R[i].in));
        CHECK(got == R[i].want, "bf16_bits(0x%08x) = 0x%04x, want 0x%04x (%s)", R[i].in, got, R[i].want, R[i].what);
    }
    float nan_lo = from_bits(0x7f800001u);   /* a NaN whose payload sits below bf16's bits */
    CHECK(isnan(bf16_round(nan_lo)) && isnan(bf16_round(-NAN)), "bf16_round of a NaN is not a NaN");
}

/* Uniform in [-1, 1) from a 64-bit LCG (independent of the code under test). */
static void fill(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(seed >> 40) / (double)(1ull << 23)) - 1.0f;
    }
}

typedef struct Gemm {
    bool ta, tb;
    int M, N, K, lda, ldb, ldc;
    float alpha, beta;
    float *A, *B, *C0;         /* C0: C before the call */
} Gemm;

static Gemm gemm_case(bool ta, bool tb, int M, int N, int K, float alpha, float beta, uint64_t seed)
{
    Gemm g = {ta, tb, M, N, K, (ta ? M : K) + 3, (tb ? K : N) + 5, N + 2, alpha, beta, 0, 0, 0};
    size_t na = (size_t)(ta ? K : M) * g.lda, nb = (size_t)(tb ? N : K) * g.ldb, nc = (size_t)M * g.ldc;
    g.A = malloc(sizeof(float) * (na + 1));
    g.B = malloc(sizeof(float) * (nb + 1));
    g.C0 = malloc(sizeof(float) * (nc + 1));
    fill(g.A, na, seed);
    fill(g.B, nb, seed + 1);
    if (beta != 0.0f) fill(g.C0, nc, seed + 2);
    else for (size_t i = 0; i < nc; i++) g.C0[i] = NAN;   /* beta = 0: never read */
    return g;
}

static void gemm_case_free(Gemm *g)
{
    free(g->A);
    free(g->B);
    free(g->C0);
}

/* C from gemm_bf16, or with packed: from op(A) packed first (gemm_bf16_pack_a, gemm_bf16_a). */
static float *gemm_result(const Gemm *g, bool packed)
{
    size_t nc = (size_t)g->M * g->ldc;
    float *C = malloc(sizeof(float) * (nc + 1));
    memcpy(C, g->C0, sizeof(float) * nc);
    if (packed) {
        uint32_t *ap = malloc(sizeof(uint32_t) * gemm_bf16_a_words(g->M, g->K));
        gemm_bf16_pack_a(g->ta, g->M, g->K, g->A, g->lda, ap);
        gemm_bf16_a(g->ta, g->tb, g->M, g->N, g->K, g->alpha, ap, g->B, g->ldb, g->beta, C, g->ldc);
        free(ap);
    } else {
        gemm_bf16(g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta, C, g->ldc);
    }
    return C;
}

static float op_a(const Gemm *g, int i, int k)
{
    return g->ta ? g->A[(size_t)k * g->lda + i] : g->A[(size_t)i * g->lda + k];
}

static float op_b(const Gemm *g, int k, int j)
{
    return g->tb ? g->B[(size_t)j * g->ldb + k] : g->B[(size_t)k * g->ldb + j];
}

/* The worst error of C over the bound, for both oracles; also the worst error to the plain
 * product relative to S, to show that the inputs were rounded. */
static void gemm_check(const Gemm *g, const float *C, const char *name)
{
    const double u = ldexp(1, -8), u32 = ldexp(1, -24);
    double worst_r = 0, worst_p = 0, worst_rel_p = 0;
    bool padding_kept = true;
    for (int i = 0; i < g->M; i++) {
        for (int j = g->N; j < g->ldc; j++) {
            size_t at = (size_t)i * g->ldc + j;
            padding_kept &= memcmp(&C[at], &g->C0[at], sizeof(float)) == 0;
        }
        for (int j = 0; j < g->N; j++) {
            double sr = 0, sp = 0, s = 0;
            for (int k = 0; k < g->K; k++) {
                double a = op_a(g, i, k), b = op_b(g, k, j);
                sr += (double)bf16_round((float)a) * bf16_round((float)b);
                sp += a * b;
                s += fabs(a * b);
            }
            double c0 = g->beta != 0.0f ? g->C0[(size_t)i * g->ldc + j] : 0.0;
            double S = fabs(g->alpha) * s + fabs(g->beta) * fabs(c0);
            double got = C[(size_t)i * g->ldc + j];
            double want_r = g->alpha * sr + g->beta * c0, want_p = g->alpha * sp + g->beta * c0;
            double bound_r = (g->K + 4) * u32 * S + 2 * u32 * fabs(want_r);
            double bound_p = (2 * u + u * u + (g->K + 4) * u32) * S + 2 * u32 * fabs(want_p);
            double er = fabs(got - want_r), ep = fabs(got - want_p);
            worst_r = fmax(worst_r, isnan(got) ? INFINITY : er / fmax(bound_r, 1e-300));
            worst_p = fmax(worst_p, isnan(got) ? INFINITY : ep / fmax(bound_p, 1e-300));
            if (S > 0) worst_rel_p = fmax(worst_rel_p, ep / S);
        }
    }
    printf("  %-34s err/bound: %.3f (bf16 inputs), %.3f (fp32 inputs); max |err|/S vs fp32 %.2e\n", name,
           worst_r, worst_p, worst_rel_p);
    CHECK(worst_r <= 1, "%s: error to the product of the bf16 inputs is %.3f x its bound", name, worst_r);
    CHECK(worst_p <= 1, "%s: error to the fp32 product is %.3f x its bound", name, worst_p);
    CHECK(padding_kept, "%s: wrote C outside its N columns", name);
    /* With K >= 16 random terms, some element's inputs lose more than 2^-13 of S to rounding (fp32
     * sums alone: <= 2^-16 here). */
    if (g->K >= 16)
        CHECK(worst_rel_p > ldexp(1, -13), "%s: only %.2e from the fp32 product: inputs not rounded to bf16?",
              name, worst_rel_p);
}

static void test_gemm(void)
{
    static const int SIZES[][3] = {
        {1, 1, 1}, {3, 17, 33}, {17, 3, 100}, {33, 100, 17}, {100, 33, 3}, {1, 130, 65}, {130, 1, 64},
        {49, 65, 2}, {65, 130, 257}, {7, 5, 0},
        /* AMX's tiles (16 rows, 32 k) with and without row and k tails */
        {16, 16, 32}, {48, 64, 64}, {37, 80, 96}, {70, 33, 75},
    };
    int n = 0;
    for (size_t s = 0; s < sizeof SIZES / sizeof SIZES[0]; s++)
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            int M = SIZES[s][0], N = SIZES[s][1], K = SIZES[s][2];
            float beta = n % 3 == 0 ? 0.0f : -0.5f;
            Gemm g = gemm_case(ta, tb, M, N, K, 0.75f, beta, 100 + (uint64_t)n++);
            char name[96];
            snprintf(name, sizeof name, "%s%s M %d N %d K %d beta %g", ta ? "A^T " : "", tb ? "B^T " : "", M, N, K,
                     beta);
            cm_set_threads(1);
            float *c1 = gemm_result(&g, false);
            cm_set_threads(3);
            float *c3 = gemm_result(&g, false), *ca = gemm_result(&g, true);
            gemm_check(&g, c1, name);
            size_t nc = (size_t)M * g.ldc;
            CHECK(memcmp(c1, c3, sizeof(float) * nc) == 0, "%s: 1 and 3 threads differ", name);
            CHECK(memcmp(c1, ca, sizeof(float) * nc) == 0, "%s: op(A) packed first (gemm_bf16_a) differs", name);
            /* inside a parallel region, as op_conv.c calls it: each thread its own product (thread 1
             * from op(A) packed first, as op_conv.c's weights) */
            float *cp[2] = {0};
#pragma omp parallel num_threads(2)
            cp[omp_get_thread_num()] = gemm_result(&g, omp_get_thread_num() == 1);
            for (int i = 0; i < 2; i++) {
                CHECK(cp[i] && memcmp(c1, cp[i], sizeof(float) * nc) == 0,
                      "%s: thread %d of a parallel region differs from the serial call", name, i);
                free(cp[i]);
            }
            free(c1);
            free(c3);
            free(ca);
            gemm_case_free(&g);
        }
}

/* gemm_bf16_packed (conv_wino.c's products) on its own: C [rows][16 nv] (+ C0 when acc) =
 * A [rows][Kp pairs] . B [Kp][16 nv], A packed by rows (bf16_pack_pairs) or from the transpose of
 * a [K][rows] matrix (bf16_pack_transposed: how the weight gradient packs V^T; an odd K's last
 * pair has 0 above), against the double sum of the bf16 values: every product is exact, fp32 sums
 * of 2 Kp terms (and C0) are off by at most (2 Kp + 2) 2^-24 S. The sizes cover AMX's whole tiles,
 * its tails in rows and pairs, and sizes below a tile; the packing must leave the words of A's
 * rows past Kp alone. */
static void test_packed(void)
{
    static const int CASES[][4] = {   /* rows, nv, Kp, A: 0 by rows, 1 transposed (K = 2 Kp), 2 (K = 2 Kp - 1) */
        {48, 2, 16, 0}, {37, 3, 40, 0}, {16, 1, 16, 1}, {5, 2, 33, 0}, {70, 4, 48, 2}, {33, 5, 20, 0}, {32, 2, 7, 2},
        {21, 1, 17, 1},
    };
    const double u32 = ldexp(1, -24);
    const uint32_t SENTINEL = 0xdeadbeefu;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const int rows = CASES[c][0], nv = CASES[c][1], Kp = CASES[c][2], n = 16 * nv, tr = CASES[c][3];
        const int K = 2 * Kp - (tr == 2);
        /* a(r, k) = af[r 2 ars + k] (by rows) or af[k lda + r] (transposed) */
        const ptrdiff_t ars = Kp + 3, lda = rows + 2, ldb = n + 16, ldc = n + 5;
        const size_t naf = tr ? (size_t)2 * Kp * lda : (size_t)2 * rows * ars;
        float *af = malloc(sizeof(float) * naf), *bf = malloc(sizeof(float) * 2 * (size_t)Kp * ldb);
        float *c0 = malloc(sizeof(float) * (size_t)rows * ldc), *got = malloc(sizeof(float) * (size_t)rows * ldc);
        uint32_t *A = malloc(sizeof(uint32_t) * ((size_t)rows * ars + 16)), *B = malloc(sizeof(uint32_t) * ((size_t)Kp * ldb + 16));
        fill(af, naf, 500 + c);
        fill(bf, 2 * (size_t)Kp * ldb, 600 + c);
        fill(c0, (size_t)rows * ldc, 700 + c);
        for (size_t i = 0; i < (size_t)rows * ars; i++) A[i] = SENTINEL;
        if (tr)
            bf16_pack_transposed(af, K, rows, lda, A, ars);
        else
            bf16_pack_pairs(af, naf, A);                    /* word w = (af[2w], af[2w + 1]) */
        bf16_pack_row_pairs(bf, 2 * Kp, n, ldb, B, ldb);   /* word (p, j) = (bf[2p][j], bf[2p + 1][j]) */
        bool apart = true;
        for (int r = 0; r < rows && tr; r++)
            for (int p = Kp; p < ars; p++) apart &= A[r * ars + p] == SENTINEL;
        for (int acc = 0; acc < 2; acc++) {
            memcpy(got, c0, sizeof(float) * (size_t)rows * ldc);
            gemm_bf16_packed(rows, nv, Kp, A, ars, B, ldb, got, ldc, acc);
            double worst = 0;
            bool kept = true;
            for (int r = 0; r < rows; r++) {
                for (int j = n; j < ldc; j++) kept &= got[r * ldc + j] == c0[r * ldc + j];
                for (int j = 0; j < n; j++) {
                    double sum = acc ? c0[r * ldc + j] : 0, S = fabs(sum);
                    for (int k = 0; k < 2 * Kp; k++) {
                        double a = k == K ? 0 : bf16_round(tr ? af[(size_t)k * lda + r] : af[r * 2 * ars + k]);
                        double t = a * bf16_round(bf[(size_t)k * ldb + j]);
                        sum += t;
                        S += fabs(t);
                    }
                    double bound = (2.0 * Kp + 2) * u32 * S + 1e-30;
                    worst = fmax(worst, fabs(got[r * ldc + j] - sum) / bound);
                }
            }
            char name[96];
            snprintf(name, sizeof name, "rows %d nv %d Kp %d A %s%s", rows, nv, Kp,
                     tr == 0 ? "by rows" : tr == 1 ? "transposed" : "transposed, K odd", acc ? " acc" : "");
            printf("  packed %-42s err/bound %.3f\n", name, worst);
            CHECK(worst <= 1, "gemm_bf16_packed %s: error %.3f x its bound", name, worst);
            CHECK(kept, "gemm_bf16_packed %s: wrote C beyond its 16 nv columns", name);
        }
        CHECK(apart, "bf16_pack_transposed rows %d Kp %d: wrote past a row's Kp pairs", rows, Kp);
        free(af);
        free(bf);
        free(c0);
        free(got);
        free(A);
        free(B);
    }
}

/* Which kernels ran: with CMLAB_BF16=avx512 vdpbf16ps alone; unset on a CPU whose flags (the
 * kernel's /proc/cpuinfo) name amx_bf16 and amx_tile, AMX. */
static void test_kernel(void)
{
    const char *env = getenv("CMLAB_BF16"), *k = gemm_bf16_kernel();
    printf("bf16 kernels: %s (CMLAB_BF16=%s)\n", k, env ? env : "");
    if (env && strcmp(env, "avx512") == 0) {
        CHECK(strcmp(k, "avx512_bf16") == 0, "CMLAB_BF16=avx512: kernels %s, want avx512_bf16", k);
        return;
    }
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[4096];
    bool amx = false;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "flags", 5) == 0) {
            amx = strstr(line, " amx_bf16") && strstr(line, " amx_tile");
            break;
        }
    fclose(f);
    if (amx) CHECK(strcmp(k, "amx") == 0, "the CPU has AMX-BF16 but gemm_bf16 runs %s", k);
}

/* ---- conv2d and linear against PyTorch's autocast and against cmlab's fp32 ---- */

typedef struct OpRun {
    float *y, *dx, *dw, *db;
} OpRun;

static OpRun op_run(CmPrecision prec, bool conv, const float *x, const int *xs, int xd, const float *w,
                    const int *ws, int wd, const float *b, int stride, int pad, const float *gout)
{
    Ctx c;
    ctx_init(&c, 16u << 20);
    c.precision = prec;
    Tensor *tx = tensor_wrap(&c, (float *)x, NULL, xd, xs, true);
    Tensor *tw = tensor_wrap(&c, (float *)w, NULL, wd, ws, true);
    Tensor *tb = tensor_wrap(&c, (float *)b, NULL, 1, SHAPE(ws[0]), true);
    Tensor *y = conv ? op_conv2d(&c, tx, tw, tb, stride, pad) : op_linear(&c, tx, tw, tb);
    tape_backward(&c, y, gout);
    OpRun r;
    const Tensor *t[4] = {y, tx, tw, tb};
    float **out[4] = {&r.y, &r.dx, &r.dw, &r.db};
    for (int i = 0; i < 4; i++) {
        const float *src = i ? t[i]->grad : t[i]->data;
        *out[i] = malloc(sizeof(float) * t[i]->n);
        memcpy(*out[i], src, sizeof(float) * t[i]->n);
    }
    ctx_free(&c);
    return r;
}

static void op_run_free(OpRun *r)
{
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
}

static size_t numel(int nd, const int *shape)
{
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= (size_t)shape[d];
    return n;
}

/* Winograd's bf16 products (conv_wino.h) round the transformed U = G w G^T, V = B^T d B and
 * (backward) M' = A dY A^T to bf16, not w, d and dY: a product's error (2u + u^2) |U_ij| |V_ij|
 * reaches an output through A^T . A, so an output's error is at most (2u + u^2) Mw with Mw = the
 * sum, over channels, tiles, the tile's m x m outputs o = (a, b), its (m+2)x(m+2) window's pixels p
 * and the 3x3 taps t, of W1(a, p_r, t_r) W1(b, p_c, t_c) |d_p| |w_t| (and through the adjoint
 * transforms the same with |dY_o| |w_t| for dx, |dY_o| |d_p| for dw), W1(a, p, t) = sum_i |A^T_ai|
 * |B^T_ip| |G_it| (Lavin and Gray's matrices, conv_wino.c's). The forward pass takes F(4x4, 3x3)
 * (coefficients up to 5 in B^T and 8 in A^T: its Mw is about 90 times M, F(2x2)'s 8 times), the
 * backward pass F(2x2, 3x3). mw[0..2]: Mw of y, dx and dw. */
static void winograd_terms(int m, const float *x, const int *xs, const float *w, const float *dy, int Cout, int pad,
                           int Ho, int Wo, double *my, double *mdx, double *mdw)
{
    static const double AT2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
    static const double BT2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
    static const double G2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
    static const double AT4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
    static const double BT4[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
    static const double G4[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                    {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
    const int n = m + 2;
    double W1[4][6][3] = {{{0}}};
    for (int a = 0; a < m; a++)
        for (int p = 0; p < n; p++)
            for (int t = 0; t < 3; t++)
                for (int i = 0; i < n; i++)
                    W1[a][p][t] += m == 4 ? fabs(AT4[a][i]) * fabs(BT4[i][p]) * fabs(G4[i][t])
                                          : fabs(AT2[a][i]) * fabs(BT2[i][p]) * fabs(G2[i][t]);
    const int N = xs[0], Cin = xs[1], H = xs[2], W = xs[3];
    for (int nn = 0; nn < N; nn++)
        for (int co = 0; co < Cout; co++)
            for (int oh = 0; oh < Ho; oh++)
                for (int ow = 0; ow < Wo; ow++) {
                    size_t yo = (((size_t)nn * Cout + co) * Ho + oh) * Wo + ow;
                    double g = fabs(dy[yo]);
                    for (int ci = 0; ci < Cin; ci++)
                        for (int pr = 0; pr < n; pr++)
                            for (int pc = 0; pc < n; pc++) {
                                int ih = oh / m * m - pad + pr, iw = ow / m * m - pad + pc;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                size_t xo = (((size_t)nn * Cin + ci) * H + ih) * W + iw;
                                double d = fabs(x[xo]);
                                for (int t = 0; t < 9; t++) {
                                    size_t wo = ((size_t)co * Cin + ci) * 9 + t;
                                    double c = W1[oh % m][pr][t / 3] * W1[ow % m][pc][t % 3], a = fabs(w[wo]);
                                    if (my) my[yo] += c * d * a;
                                    if (mdx) mdx[xo] += c * g * a;
                                    if (mdw) mdw[wo] += c * g * d;
                                }
                            }
                }
}

static void winograd_magnitudes(const float *x, const int *xs, const float *w, const float *dy, int Cout, int pad,
                                int Ho, int Wo, double *mw[3])
{
    winograd_terms(4, x, xs, w, dy, Cout, pad, Ho, Wo, mw[0], NULL, NULL);
    winograd_terms(2, x, xs, w, dy, Cout, pad, Ho, Wo, NULL, mw[1], mw[2]);
}

#define RMS_WINO 0.1

static void test_torch_case(Fixture *f, const char *name)
{
    const double u = ldexp(1, -8), u32 = ldexp(1, -24);
    char path[160], op[32];
    snprintf(path, sizeof path, "/%s", name);
    CM_ASSERT(fixture_attr_str(f, path, "op", op, sizeof op), "%s: no op attribute", path);
    bool conv = strcmp(op, "conv2d") == 0;
    int stride = (int)fixture_attr_int(f, path, "stride", -1), pad = (int)fixture_attr_int(f, path, "pad", -1);
    static const char *const OUT[4] = {"y", "dx", "dw", "db"}, *const MAG[4] = {"My", "Mdx", "Mdw", "Mdb"},
                             *const KS[4] = {"k_y", "k_dx", "k_dw", "k_db"};
    int nd[4], shape[4][4], xd, xs[4], wd, wsh[4], bd, bs[4], gd, gs[4];
    char key[200];
#define READ(n, d, s) (snprintf(key, sizeof key, "%s/%s", path, n), fixture_read(f, key, d, s))
    float *x = READ("x", &xd, xs), *w = READ("w", &wd, wsh), *b = READ("b", &bd, bs), *gout = READ("gout", &gd, gs);
    float *want[4], *mag[4];
    for (int i = 0; i < 4; i++) {
        int md, ms[4];
        want[i] = READ(OUT[i], &nd[i], shape[i]);
        mag[i] = READ(MAG[i], &md, ms);
    }
#undef READ
    OpRun got = op_run(CM_PRECISION_BF16, conv, x, xs, xd, w, wsh, wd, b, stride, pad, gout);
    OpRun fp = op_run(CM_PRECISION_FP32, conv, x, xs, xd, w, wsh, wd, b, stride, pad, gout);
    const float *g[4] = {got.y, got.dx, got.dw, got.db}, *h[4] = {fp.y, fp.dx, fp.dw, fp.db};
    const int Cout = wsh[0], inner = conv ? shape[0][2] * shape[0][3] : 1;   /* y's channel: (i / inner) % Cout */
    /* A Winograd shape (conv_wino_usable, the library's own predicate): both sides' y, dx and dw
     * through Winograd, their bounds from Mw (winograd_magnitudes). */
    const bool wino = conv && conv_wino_usable(xs[1], Cout, wsh[2], wsh[3], stride, pad);
    double *mw[3] = {0};
    if (wino) {
        for (int o = 0; o < 3; o++) mw[o] = calloc(numel(nd[o], shape[o]), sizeof(double));
        winograd_magnitudes(x, xs, w, gout, Cout, pad, shape[0][2], shape[0][3], mw);
    }
    double rel_fp_y = 0;
    for (int o = 0; o < 4; o++) {
        double K = (double)fixture_attr_int(f, path, KS[o], -1), worst_t = 0, worst_f = 0, kappa = 0, e2 = 0, h2 = 0;
        size_t n = numel(nd[o], shape[o]);
        for (size_t i = 0; i < n; i++) {
            double M = mag[o][i], t = want[o][i];
            double bound_t = u / (1 - u) * fabs(t) + 2 * (K + 2) * u32 * M;   /* |t| = |exact| (1 +- u) */
            if (o == 0) bound_t += u * fabs(b[(i / inner) % Cout]);
            if (o == 3) bound_t += u * M;
            double bound_f = (2 * u + u * u) * M + 4 * (K + 2) * u32 * M;
            if (o < 3 && wino) {   /* PyTorch's error (direct, bf16 inputs) plus Winograd's */
                bound_t += (2 * u + u * u) * (M + mw[o][i]) + 4 * (K + 2) * u32 * mw[o][i];
                bound_f = (2 * u + u * u) * mw[o][i] + 4 * (K + 2) * u32 * mw[o][i];
            }
            double et = fabs(g[o][i] - t), ef = fabs(g[o][i] - (double)h[o][i]);
            worst_t = fmax(worst_t, isfinite(g[o][i]) ? et / fmax(bound_t, 1e-30) : INFINITY);
            worst_f = fmax(worst_f, isfinite(g[o][i]) ? ef / fmax(bound_f, 1e-30) : INFINITY);
            if (o == 0 && M > 0) rel_fp_y = fmax(rel_fp_y, ef / M);
            if (o < 3 && wino && M > 0) kappa += mw[o][i] / M / (double)n;
            e2 += ef * ef;
            h2 += (double)h[o][i] * h[o][i];
        }
        char mean_mw[80] = "";
        if (o < 3 && wino)
            snprintf(mean_mw, sizeof mean_mw, " (Winograd: mean Mw/M %.1f, rms err / rms fp32 %.1e)", kappa,
                     sqrt(e2 / h2));
        printf("  %-16s %-2s err/bound: %.3f vs autocast, %.3f vs cmlab fp32%s\n", name, OUT[o], worst_t, worst_f,
               mean_mw);
        /* Mw is a worst case (every rounding the same sign, through |A^T| |B^T| |G|): F(4x4, 3x3)'s is
         * ~90 times M, so that its bound passes errors of most of M. In the mean the roundings cancel:
         * a simulation of F(4x4, 3x3) with U and V rounded to bf16 (numpy, float64 otherwise; 64 and
         * 128 channels, normal and SiLU inputs) put the rms error at 2.5e-2 of the rms output
         * (F(2x2, 3x3): 3.9e-3, direct: 2.3e-3), where a wrong tile, plane or transform gives O(1). */
        if (o < 3 && wino)
            CHECK(sqrt(e2 / h2) <= RMS_WINO, "%s %s: rms error %.2e of the rms fp32 value (limit %g)", name, OUT[o],
                  sqrt(e2 / h2), RMS_WINO);
        CHECK(worst_t <= 1, "%s %s: %.3f x the bound from PyTorch's bf16 autocast", name, OUT[o], worst_t);
        CHECK(worst_f <= 1, "%s %s: %.3f x the bound from cmlab's fp32", name, OUT[o], worst_f);
    }
    /* as in test_gemm: bf16 rounding moves some output by far more than fp32 sums could */
    CHECK(rel_fp_y > ldexp(1, -13), "%s: y within %.2e of fp32: not run in bf16?", name, rel_fp_y);
    for (int o = 0; o < 3; o++) free(mw[o]);
    op_run_free(&got);
    op_run_free(&fp);
    free(x);
    free(w);
    free(b);
    free(gout);
    for (int i = 0; i < 4; i++) {
        free(want[i]);
        free(mag[i]);
    }
}

static void test_torch(const char *path)
{
    printf("conv2d and linear against torch.autocast(\"cpu\", dtype=torch.bfloat16)\n");
    Fixture f;
    fixture_open(&f, path);
    char **names;
    int n = fixture_list(&f, "/", &names);
    CHECK(n >= 5, "%s: %d cases, want 5", path, n);
    for (int i = 0; i < n; i++) {
        test_torch_case(&f, names[i]);
        free(names[i]);
    }
    free(names);
    fixture_close(&f);
}

/* ---- a tiny U-Net in bf16 against fp32 ---- */

/* bf16 against fp32 through the whole network: ~10 product layers deep, each moving its output
 * by up to 2u relative to its terms' magnitudes (u = 2^-8), partly cancelled by the norms: about
 * 1% of the largest value with direct products or F(2x2, 3x3) (4.3e-3 measured with F(2x2, 3x3)'s
 * forward pass). The 3x3 convs' forward pass takes F(4x4, 3x3), whose rms error per conv is ~6
 * times F(2x2)'s (RMS_WINO above): 3% (1.4e-2 measured), and far above fp32's ~1e-6 (checked too).
 * The weight gradients pass through twice as many products, group norm's backward (which
 * subtracts channel means: cancellation) and attention's; per parameter in the 2-norm, 10% with
 * F(2x2, 3x3)'s forward pass (2.3e-2 measured), 3 times that with F(4x4, 3x3)'s: 30% (9.8e-2
 * measured, in the bias of the attention's queries, whose gradient sums terms that nearly cancel;
 * a wrong product or transposition gives O(1)). */
#define REL_UNET 3e-2
#define REL_UNET_GRAD 3e-1

/* Every weight U(-1/sqrt(fan_in), 1/sqrt(fan_in)) and every other parameter (norm scales and
 * biases, biases) 1 + U(-0.5, 0.5) or U(-0.5, 0.5): not the near-zero output init, so that F is
 * not ~0. */
static void unet_weights(const ParamSet *ps, float *w)
{
    uint64_t seed = 77;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        float *v = w + p->offset;
        fill(v, p->n, seed++);
        double s = p->init == PARAM_INIT_UNIFORM_FAN_IN ? 1 / sqrt((double)(p->n / (size_t)p->shape[0])) : 0.5;
        for (size_t j = 0; j < p->n; j++) v[j] = (float)(v[j] * s + (p->init == PARAM_INIT_ONE ? 1.0 : 0.0));
    }
}

/* F and the weight gradient of sum(F * gout) at the given precision; F into y, gradient into g. */
static void unet_run(CmPrecision prec, const UNet *net, const float *w, float *g, float *y, size_t ny)
{
    Ctx c;
    ctx_init(&c, 64u << 20);
    c.precision = prec;
    Tensor *x = TENSOR_NEW(&c, 2, 1, 16, 16), *ct = TENSOR_NEW(&c, 2);
    fill(x->data, x->n, 5);
    ct->data[0] = -1.2f;
    ct->data[1] = 0.8f;
    memset(g, 0, sizeof(float) * net->ps.total);
    WeightSet ws = {(float *)w, g};
    Tensor *F = unet_forward(&c, net, &ws, x, ct, NULL, NULL, 0, NULL);
    CM_ASSERT(F->n == ny, "U-Net output of %zu values, want %zu", F->n, ny);
    float *gout = malloc(sizeof(float) * ny);
    fill(gout, ny, 6);
    memcpy(y, F->data, sizeof(float) * ny);
    tape_backward(&c, F, gout);
    free(gout);
    ctx_free(&c);
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, isfinite(a[i]) ? fabs(a[i]) : INFINITY);
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, isfinite(a[i]) ? fabs((double)a[i] - b[i]) : INFINITY);
    return m;
}

static void test_unet(void)
{
    printf("U-Net (16-32 channels, 2 levels, middle attention) in bf16 against fp32\n");
    UNetConfig cfg = unet_config_default();
    cfg.img_h = cfg.img_w = 16;
    cfg.base_channels = 16;
    cfg.channel_mult[0] = 1;
    cfg.channel_mult[1] = 2;
    cfg.channel_mult_count = 2;
    cfg.num_blocks = 1;
    UNet net;
    CHECK(unet_init(&net, &cfg) == 0, "unet_init: %s", cm_errmsg());
    float *w = params_buffer(&net.ps), *g32 = params_buffer(&net.ps), *g16 = params_buffer(&net.ps);
    unet_weights(&net.ps, w);
    size_t ny = 2 * 16 * 16;
    float *y32 = malloc(sizeof(float) * ny), *y16 = malloc(sizeof(float) * ny);
    unet_run(CM_PRECISION_FP32, &net, w, g32, y32, ny);
    unet_run(CM_PRECISION_BF16, &net, w, g16, y16, ny);
    double ry = max_diff(y16, y32, ny) / max_abs(y32, ny);
    printf("  F: max |bf16 - fp32| / max |F| = %.2e (max |F| %.2f)\n", ry, max_abs(y32, ny));
    CHECK(ry <= REL_UNET && ry > 1e-4, "U-Net F: bf16 differs from fp32 by %.2e of max |F| (want 1e-4 .. %g)", ry,
          REL_UNET);
    /* Per parameter, in the 2-norm: a norm's bias gradient sums a whole channel's upstream
     * gradient, and the cancellation in that sum makes its largest element's error swing. */
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < net.ps.count; i++) {
        const Param *p = &net.ps.items[i];
        double d2 = 0, g2 = 0;
        for (size_t j = 0; j < p->n; j++) {
            double a = g16[p->offset + j], b = g32[p->offset + j];
            d2 += (a - b) * (a - b);
            g2 += b * b;
        }
        double r = isfinite(d2) ? sqrt(d2 / fmax(g2, 1e-300)) : INFINITY;
        if (g2 > 0 && r > worst) worst = r, worst_name = p->name;
    }
    printf("  weight gradients: worst |bf16 - fp32| / |g| (2-norms, per parameter) = %.2e (%s)\n", worst,
           worst_name);
    CHECK(worst <= REL_UNET_GRAD, "U-Net gradient of %s: bf16 differs from fp32 by %.2e of its norm", worst_name,
          worst);
    free(w);
    free(g32);
    free(g16);
    free(y32);
    free(y16);
    unet_free(&net);
}

/* ---- training and the CLI (through the cmlab binary) ---- */

/* The tiny EDM recipe of test_train.c (8-16 channels, Fashion-MNIST 28x28, batch 8). */
static const char *TINY =
    "[experiment]\nmethod = edm\nseed = 3\nout_dir = bf16_runs\n"
    "[data]\ndataset = fashion-mnist\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = true\ndropout = 0\n"
    "[train]\niterations = 40\nbatch_size = 8\nlr = 0.002\nema = 0.9\nlog_every = 1\ncheckpoint_every = 40\n"
    "sample_every = 0\nthreads = 2\n"
    "[sample]\nsolver = euler\nnfe = 4\nn = 4\n";

/* The mean of the losses of metrics.jsonl, their count and whether all are finite. */
static double mean_loss(const char *metrics, int *count, bool *finite)
{
    FILE *f = fopen(metrics, "r");
    *count = 0;
    *finite = true;
    if (!f) return NAN;
    char line[2048];
    double sum = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"loss\":");
        if (!p) continue;
        double v = atof(p + 7);
        *finite &= isfinite(v);
        sum += v;
        (*count)++;
    }
    fclose(f);
    return *count ? sum / *count : NAN;
}

/* The mean loss of the two 40-step runs from the same seed (the same data and noise draws): the
 * bf16 products change each step's loss by ~1% at most (REL_UNET above), and the weights drift
 * apart slowly over 40 steps (2e-5 of the mean measured here); 1% of the fp32 mean leaves room
 * for that drift while a broken gradient (or a NaN) leaves it far behind. */
#define LOSS_TOL 0.01

static void test_training(const char *cmlab)
{
    printf("tiny EDM, 40 steps, fp32 and bf16 from the same seed\n");
    FILE *f = fopen("bf16_runs/tiny.ini", "w");
    CM_ASSERT(f, "cannot write bf16_runs/tiny.ini");
    fputs(TINY, f);
    fclose(f);
    double mean[2];
    static const char *const PREC[2] = {"fp32", "bf16"};
    for (int i = 0; i < 2; i++) {
        char set_prec[64], set_name[64], metrics[128];
        snprintf(set_prec, sizeof set_prec, "model.precision=%s", PREC[i]);
        snprintf(set_name, sizeof set_name, "experiment.name=tiny_%s", PREC[i]);
        snprintf(metrics, sizeof metrics, "bf16_runs/tiny_%s/metrics.jsonl", PREC[i]);
        FixtureRun r = fixture_run_capture((char *[]){(char *)cmlab, "train", "bf16_runs/tiny.ini", "--set", set_prec,
                                                      "--set", set_name, NULL});
        CHECK(r.code == 0, "cmlab train (%s) exited %d: %s", PREC[i], r.code, r.err);
        int count;
        bool finite;
        mean[i] = mean_loss(metrics, &count, &finite);
        CHECK(count == 40 && finite, "%s: %d losses in %s (want 40), all finite: %d", PREC[i], count, metrics, finite);
    }
    double rel = fabs(mean[1] - mean[0]) / mean[0];
    printf("  mean loss over 40 steps: fp32 %.5f, bf16 %.5f (relative difference %.2e)\n", mean[0], mean[1], rel);
    CHECK(rel <= LOSS_TOL, "bf16 mean loss %.5f is %.2e from fp32's %.5f (tolerance %g)", mean[1], rel, mean[0],
          LOSS_TOL);
    FixtureRun r = fixture_run_capture((char *[]){(char *)cmlab, "sample", "bf16_runs/tiny_fp32/ckpt/step_00000040.h5",
                                                  "--precision", "bf16", "--out", "bf16_runs/grid.png", NULL});
    CHECK(r.code == 0, "cmlab sample --precision bf16 exited %d: %s", r.code, r.err);
}

/* Whether files a and b hold the same bytes (false when either is unreadable). */
static bool same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    char *da = fixture_read_file(a, &na), *db = fixture_read_file(b, &nb);
    bool same = da && db && na == nb && memcmp(da, db, na) == 0;
    free(da);
    free(db);
    return same;
}

/* invert and trajectories --precision P on test_training's fp32 checkpoint: both run, their JSON
 * says P, and the fp32 and bf16 results differ (the option reaches the network's products). */
static void test_precision_options(const char *cmlab)
{
    printf("invert and trajectories --precision\n");
    char *ckpt = "bf16_runs/tiny_fp32/ckpt/step_00000040.h5";
    char *out[2][2] = {{"bf16_runs/inv_fp32.json", "bf16_runs/traj_fp32"},
                       {"bf16_runs/inv_bf16.json", "bf16_runs/traj_bf16"}};
    char *text[2][2] = {{NULL}};
    for (int p = 0; p < 2; p++) {
        char *prec = p ? "bf16" : "fp32", want[40];
        snprintf(want, sizeof want, "\"precision\": \"%s\"", prec);
        char *cmds[2][14] = {
            {(char *)cmlab, "invert", ckpt, "--count", "2", "--precision", prec, "--json", out[p][0], NULL},
            {(char *)cmlab, "trajectories", ckpt, "--pca", "--n", "2", "--steps", "2", "--precision", prec, "--out",
             out[p][1], NULL},
        };
        for (int c = 0; c < 2; c++) {
            FixtureRun r = fixture_run_capture(cmds[c]);
            char path[80];
            snprintf(path, sizeof path, c ? "%s/pca.json" : "%s", out[p][c]);
            text[p][c] = fixture_read_file(path, &(size_t){0});
            CHECK(r.code == 0 && text[p][c] && strstr(text[p][c], want), "cmlab %s --precision %s: exit %d, %s %s: %s",
                  cmds[c][1], prec, r.code, path, text[p][c] ? "lacks" : "not written", r.err);
        }
    }
    /* the invert JSON's MSE, the trajectories' fractions (the JSON's precision fields aside) */
    for (int c = 0; c < 2; c++) {
        const char *tail[2];
        for (int p = 0; p < 2; p++) {
            const char *at = text[p][c] ? strstr(text[p][c], "\"precision\"") : NULL;
            tail[p] = at ? at + strlen("\"precision\": \"fp32\"") : "";
        }
        CHECK(strcmp(tail[0], tail[1]) != 0, "%s: the fp32 and bf16 results are the same",
              c ? "trajectories" : "invert");
        for (int p = 0; p < 2; p++) free(text[p][c]);
    }
}

/* CMLAB_BF16=off on this AVX512_BF16 CPU: sample --precision bf16 of test_training's fp32
 * checkpoint notes the fallback once on stderr and writes the fp32 grid's bytes, while without it
 * the bf16 grid (bf16_runs/grid.png) differs from fp32's, so the variable is what made them equal. */
static void test_fallback(const char *cmlab)
{
    printf("CMLAB_BF16=off\n");
    char *ckpt = "bf16_runs/tiny_fp32/ckpt/step_00000040.h5";
    FixtureRun r = fixture_run_capture((char *[]){(char *)cmlab, "sample", ckpt, "--out", "bf16_runs/grid_fp32.png",
                                                  NULL});
    CHECK(r.code == 0, "cmlab sample (fp32) exited %d: %s", r.code, r.err);
    CHECK(!same_bytes("bf16_runs/grid.png", "bf16_runs/grid_fp32.png"),
          "the bf16 and fp32 grids are the same bytes: the fallback test below would prove nothing");
    int code = fixture_run((char *[]){(char *)cmlab, "sample", ckpt, "--precision", "bf16", "--out",
                                      "bf16_runs/grid_off.png", NULL},
                           "bf16_runs/off.out", "bf16_runs/off.err", "CMLAB_BF16=off");
    char *err = fixture_read_file("bf16_runs/off.err", &(size_t){0});
    CHECK(code == 0 && err, "CMLAB_BF16=off cmlab sample --precision bf16 exited %d: %s", code, err ? err : "");
    if (!err) return;
    int notes = 0;
    for (const char *p = err; (p = strstr(p, "AVX512_BF16")); p++) notes++;
    CHECK(notes == 1 && strstr(err, "CMLAB_BF16=off") && strstr(err, "running in fp32"),
          "CMLAB_BF16=off: stderr names AVX512_BF16 %d times (want one note naming CMLAB_BF16=off): '%s'", notes, err);
    CHECK(same_bytes("bf16_runs/grid_off.png", "bf16_runs/grid_fp32.png"),
          "CMLAB_BF16=off --precision bf16 grid differs from the --precision fp32 grid");
    free(err);
}

static void test_cli(const char *cmlab)
{
    printf("CLI errors\n");
    static const char *const CMDS[][4] = {
        {"sample", "bf16_runs/none.h5", NULL, NULL},
        {"eval", "bf16_runs/none.h5", NULL, NULL},
        {"edit", "bf16_runs/none.h5", "--task", "denoise"},
        {"invert", "bf16_runs/none.h5", NULL, NULL},
        {"trajectories", "bf16_runs/none.h5", "--pca", NULL},
    };
    for (size_t i = 0; i < sizeof CMDS / sizeof CMDS[0]; i++) {
        char *argv[8] = {(char *)cmlab};
        int a = 1;
        for (int j = 0; j < 4 && CMDS[i][j]; j++) argv[a++] = (char *)CMDS[i][j];
        argv[a++] = "--precision";
        argv[a++] = "bad";
        FixtureRun r = fixture_run_capture(argv);
        CHECK(r.code == 2 && strstr(r.err, "--precision") && strstr(r.err, "bad"),
              "cmlab %s --precision bad: exit %d, stderr '%s' (want 2, naming --precision)", CMDS[i][0], r.code, r.err);
    }
    int code = fixture_run((char *[]){(char *)cmlab, "sample", "bf16_runs/none.h5", "--precision", "bf16", NULL},
                           "bf16_runs/env.out", "bf16_runs/env.err", "CMLAB_BF16=of");
    char *err = fixture_read_file("bf16_runs/env.err", &(size_t){0});
    CHECK(code == 2 && err && strstr(err, "CMLAB_BF16") && strstr(err, "'of'"),
          "CMLAB_BF16=of: exit %d, stderr '%s' (want 2, naming the variable and the value)", code, err ? err : "");
    free(err);
    FILE *f = fopen("bf16_runs/badprec.ini", "w");
    CM_ASSERT(f, "cannot write bf16_runs/badprec.ini");
    fprintf(f, "%s", TINY);
    fputs("[model]\nprecision = x\n", f);
    fclose(f);
    FixtureRun r = fixture_run_capture((char *[]){(char *)cmlab, "train", "bf16_runs/badprec.ini", NULL});
    CHECK(r.code == 2 && strstr(r.err, "badprec.ini") && strstr(r.err, "model.precision"),
          "model.precision = x: exit %d, stderr '%s' (want 2, naming the file and the key)", r.code, r.err);
}

/* test_bf16 BF16.h5 CMLAB [kernels]: "kernels" runs the kernel and op checks alone (meson's
 * bf16-avx512 test: the same with CMLAB_BF16=avx512, beside this one). */
int main(int argc, char **argv)
{
    CM_ASSERT(argc == 3 || (argc == 4 && strcmp(argv[3], "kernels") == 0), "usage: test_bf16 BF16.h5 CMLAB [kernels]");
    const bool kernels_only = argc == 4;
    test_rounding();
    if (!kernels_only) {
        if (system("rm -rf bf16_runs && mkdir -p bf16_runs") != 0) return 1;
        test_cli(argv[2]);
    }
    if (!gemm_bf16_available()) {
        printf("this CPU has no AVX512_BF16: gemm_bf16 and the bf16 ops not tested\n");
        return test_failed ? test_summary("bf16") : SKIP;
    }
    test_kernel();
    cm_set_threads(2);
    test_torch(argv[1]);
    test_unet();
    test_packed();
    test_gemm();
    if (kernels_only) return test_summary("bf16");
    cm_set_threads(2);
    test_training(argv[2]);
    test_precision_options(argv[2]);
    test_fallback(argv[2]);
    return test_summary("bf16");
}
