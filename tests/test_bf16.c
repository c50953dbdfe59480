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
 * The results must be the same bits with 1 and 3 threads and when called inside an OpenMP parallel
 * region (one thread per call).
 *
 * Skipped (exit 77) on a CPU without AVX512_BF16, after the rounding checks. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gemm_bf16.h"
#include "autograd/threads.h"
#include "fixture.h"

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

static float *gemm_result(const Gemm *g)
{
    size_t nc = (size_t)g->M * g->ldc;
    float *C = malloc(sizeof(float) * (nc + 1));
    memcpy(C, g->C0, sizeof(float) * nc);
    gemm_bf16(g->ta, g->tb, g->M, g->N, g->K, g->alpha, g->A, g->lda, g->B, g->ldb, g->beta, C, g->ldc);
    return C;
}

static float op_a(const Gemm *g, int i, int k) { return g->ta ? g->A[(size_t)k * g->lda + i] : g->A[(size_t)i * g->lda + k]; }
static float op_b(const Gemm *g, int k, int j) { return g->tb ? g->B[(size_t)j * g->ldb + k] : g->B[(size_t)k * g->ldb + j]; }

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
    /* With K >= 16 random terms, some element's inputs lose more than 2^-13 of S to rounding (fp32 sums alone: <= 2^-16 here). */
    if (g->K >= 16)
        CHECK(worst_rel_p > ldexp(1, -13), "%s: only %.2e from the fp32 product: inputs not rounded to bf16?",
              name, worst_rel_p);
}

static void test_gemm(void)
{
    static const int SIZES[][3] = {
        {1, 1, 1}, {3, 17, 33}, {17, 3, 100}, {33, 100, 17}, {100, 33, 3}, {1, 130, 65}, {130, 1, 64},
        {49, 65, 2}, {65, 130, 257}, {7, 5, 0},
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
            float *c1 = gemm_result(&g);
            cm_set_threads(3);
            float *c3 = gemm_result(&g);
            gemm_check(&g, c1, name);
            size_t nc = (size_t)M * g.ldc;
            CHECK(memcmp(c1, c3, sizeof(float) * nc) == 0, "%s: 1 and 3 threads differ", name);
            /* inside a parallel region, as op_conv.c calls it: each thread its own product */
            float *cp[2] = {0};
#pragma omp parallel num_threads(2)
            cp[omp_get_thread_num()] = gemm_result(&g);
            for (int i = 0; i < 2; i++) {
                CHECK(cp[i] && memcmp(c1, cp[i], sizeof(float) * nc) == 0,
                      "%s: thread %d of a parallel region differs from the serial call", name, i);
                free(cp[i]);
            }
            free(c1);
            free(c3);
            gemm_case_free(&g);
        }
}

int main(void)
{
    test_rounding();
    if (!gemm_bf16_available()) {
        printf("this CPU has no AVX512_BF16: gemm_bf16 not tested\n");
        return test_failed ? test_summary("bf16") : SKIP;
    }
    test_gemm();
    return test_summary("bf16");
}
