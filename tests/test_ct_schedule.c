/* test_ct_schedule.c: the CT/iCT/CD schedules (src/train/ct_schedule.h) against the test vectors
 * of reference/cm.md, each to half a unit of its last printed digit:
 * (a) CT's N(k) and mu(k) in the code convention, the CIFAR-10 table of cm.md §4.2, and mu0 = 0;
 * (b) iCT's doubling curriculum for K = 400k (cm.md §5): every change point and the plateau;
 * (c) the N = 11 ascending sigmas, lognormal index probabilities p(i) and weights lambda (§5);
 * (d) the pseudo-Huber c for 3x32x32 (0.0299, §5) and 1x28x28;
 * (e) the index sampler: uniform u from the counter RNG mapped through the CDF hits every interval
 *     with frequencies matching p (a chi-square bound, and the same counts rejecting a wrong p),
 *     boundaries of the inverse CDF, and the uniform sampler's range and flatness.
 * All reference numbers were recomputed independently in float64 with numpy; they agree with the
 * printed ones.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "common.h"
#include "fixture.h"
#include "train/ct_schedule.h"

/* Compares the comma-separated printed values with x[0..n-1]: each must match to half a unit of
 * its last printed digit. Returns the number that differ; the count must equal n. */
static int check_printed(const char *what, const char *printed, const double *x, int n)
{
    const char *p = printed;
    int i = 0, bad = 0;
    for (; *p && i < n; i++) {
        char *end;
        double ref = strtod(p, &end);
        const char *dot = memchr(p, '.', (size_t)(end - p));
        int decimals = dot ? (int)(end - dot - 1) : 0;
        double tol = 0.5 * pow(10, -decimals) * (1 + 1e-9);
        if (!(fabs(x[i] - ref) <= tol)) {
            bad++;
            printf("  %s[%d] = %.6f, printed %.*f\n", what, i, x[i], decimals, ref);
        }
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    CHECK(i == n && !*p, "%s: %d values printed, expected %d", what, i, n);
    CHECK(bad == 0, "%s: %d of %d values differ from the reference", what, bad, n);
    return bad;
}

/* ---- (a) CT, code convention ---- */

static void test_ct_original(void)
{
    const long K = 800000, ks[] = {0, 1000, 10000, 100000, 400000, 800000};
    const int n_ref[] = {2, 6, 17, 54, 107, 151};
    double mu[6];
    int bad_n = 0;
    for (int j = 0; j < 6; j++) {
        int N = ct_N(CFG_CURRICULUM_ORIGINAL, ks[j], K, 2, 150);
        mu[j] = ct_mu(ks[j], K, 2, 150, 0.9);
        if (N != n_ref[j]) bad_n++;
        printf("ct k = %6ld: N = %3d (ref %3d), mu = %.6f\n", ks[j], N, n_ref[j], mu[j]);
    }
    CHECK(bad_n == 0, "CT N(k): %d of 6 differ from cm.md 4.2", bad_n);
    check_printed("ct mu", "0.81, 0.9587, 0.9869, 0.9960, 0.9980, 0.9986", mu, 6);

    /* The off-by-one of the code: mu(0) = 0.9^(2/1), exactly 0.81, where the paper has 0.9. */
    CHECK(fabs(ct_mu(0, K, 2, 150, 0.9) - 0.81) < 1e-12, "mu(0) = %.15f, code convention 0.81",
          ct_mu(0, K, 2, 150, 0.9));
    /* mu is tied to N by mu = mu0^(s0/(N-1)) at every k, and N never decreases. */
    int bad_tie = 0, bad_mono = 0, prev = 0;
    for (long k = 0; k <= K; k += 997) {
        int N = ct_N(CFG_CURRICULUM_ORIGINAL, k, K, 2, 150);
        if (fabs(ct_mu(k, K, 2, 150, 0.9) - pow(0.9, 2.0 / (N - 1))) > 1e-12) bad_tie++;
        if (N < prev) bad_mono++;
        prev = N;
    }
    CHECK(bad_tie == 0 && bad_mono == 0, "CT: mu != mu0^(s0/(N-1)) at %d steps, N decreases at %d",
          bad_tie, bad_mono);
    /* Past K the schedule holds its end value. */
    CHECK(ct_N(CFG_CURRICULUM_ORIGINAL, 2 * K, K, 2, 150) == 151, "N(2K) = %d, expected 151",
          ct_N(CFG_CURRICULUM_ORIGINAL, 2 * K, K, 2, 150));
    /* s0 = 1 at k = 0: the radicand is 1, ceil(0) = 0, and the code's max(., 1) gives 2 points. */
    CHECK(ct_N(CFG_CURRICULUM_ORIGINAL, 0, 1000, 1, 150) == 2, "N(0) with s0 = 1 is %d, expected 2",
          ct_N(CFG_CURRICULUM_ORIGINAL, 0, 1000, 1, 150));

    /* mu0 = 0: the target is the online network, at every step. */
    int nonzero = 0;
    for (long k = 0; k <= K; k += 40000)
        if (ct_mu(k, K, 2, 150, 0.0) != 0.0) nonzero++;
    CHECK(nonzero == 0, "mu0 = 0 gives a nonzero mu at %d steps", nonzero);
}

/* ---- (b) iCT doubling ---- */

static void test_ict_curriculum(void)
{
    const long K = 400000;
    /* cm.md §5: K' = 50,000; N = 11 -> 21 -> ... -> 1281, reaching 1281 at k = 350k. */
    int bad = 0, changes = 0, prev = ct_N(CFG_CURRICULUM_DOUBLING, 0, K, 10, 1280);
    CHECK(prev == 11, "iCT N(0) = %d, expected 11", prev);
    for (long k = 1; k <= K + 10000; k++) {
        int N = ct_N(CFG_CURRICULUM_DOUBLING, k, K, 10, 1280);
        if (N != prev) {
            changes++;
            long want_k = 50000L * changes;
            int want_N = 10 * (1 << changes) + 1;
            printf("ict: N %4d -> %4d at k = %ld\n", prev, N, k);
            if (k != want_k || N != want_N) bad++;
        }
        prev = N;
    }
    CHECK(changes == 7 && bad == 0,
          "iCT curriculum: %d changes (expected 7), %d at the wrong step or value", changes, bad);
    CHECK(prev == 1281, "iCT N at K + 10k = %d, expected 1281", prev);
    CHECK(ct_N(CFG_CURRICULUM_DOUBLING, 100L * K, K, 10, 1280) == 1281,
          "iCT N far past K = %d, expected 1281 (no overflow)",
          ct_N(CFG_CURRICULUM_DOUBLING, 100L * K, K, 10, 1280));
    /* s1/s0 not a power of two: s0 2, s1 150, K 100: floor(75) -> log2 75 + 1 = 7.2288, K' = 13;
     * 2 doubles 6 times to 128, then caps at 150. */
    CHECK(ct_N(CFG_CURRICULUM_DOUBLING, 12, 100, 2, 150) == 3 &&
          ct_N(CFG_CURRICULUM_DOUBLING, 13, 100, 2, 150) == 5 &&
          ct_N(CFG_CURRICULUM_DOUBLING, 77, 100, 2, 150) == 65 &&
          ct_N(CFG_CURRICULUM_DOUBLING, 78, 100, 2, 150) == 129 &&
          ct_N(CFG_CURRICULUM_DOUBLING, 91, 100, 2, 150) == 151,
          "iCT with s0 2, s1 150, K 100: N at 12, 13, 77, 78, 91 = %d %d %d %d %d, "
          "expected 3 5 65 129 151",
          ct_N(CFG_CURRICULUM_DOUBLING, 12, 100, 2, 150),
          ct_N(CFG_CURRICULUM_DOUBLING, 13, 100, 2, 150),
          ct_N(CFG_CURRICULUM_DOUBLING, 77, 100, 2, 150),
          ct_N(CFG_CURRICULUM_DOUBLING, 78, 100, 2, 150),
          ct_N(CFG_CURRICULUM_DOUBLING, 91, 100, 2, 150));
}

/* ---- (c) the N = 11 vectors ---- */

static void test_ict_vectors(void)
{
    enum { N = 11 };
    double sigma[N], p[N - 1], lambda[N - 1], one[N - 1];
    ct_sigmas(N, 0.002, 80, 7, sigma);
    check_printed("sigma", "0.002, 0.0167, 0.0851, 0.3183, 0.9654, 2.5152, 5.8389, 12.3816, "
                  "24.4083, 45.3137, 80", sigma, N);
    CHECK(sigma[0] == 0.002 && sigma[N - 1] == 80.0, "grid ends %.17g, %.17g not exact",
          sigma[0], sigma[N - 1]);

    ict_index_probs(N, sigma, -1.1, 2.0, p);
    check_printed("p", ".0626, .1817, .2455, .2135, .1424, .0806, .0411, .0196, .0089, .0040",
                  p, N - 1);
    double sum = 0;
    for (int i = 0; i < N - 1; i++) sum += p[i];
    CHECK(fabs(sum - 1) < 1e-14, "p sums to %.17g", sum);
    /* The mode sits on (0.0851, 0.3183), around e^-1.1 = 0.33; with the sign slip of cm.md P6
     * (`lognormal_mean = 1.1`) it moves up to e^1.1 = 3.0. */
    double q[N - 1];
    ict_index_probs(N, sigma, +1.1, 2.0, q);
    int argmax_p = 0, argmax_q = 0;
    for (int i = 1; i < N - 1; i++) {
        if (p[i] > p[argmax_p]) argmax_p = i;
        if (q[i] > q[argmax_q]) argmax_q = i;
    }
    CHECK(argmax_p == 2 && argmax_q > 2, "mode of p at interval %d (expected 2), with p_mean "
          "+1.1 at %d (expected above 2)", argmax_p, argmax_q);

    for (int i = 0; i < N - 1; i++) {
        lambda[i] = ct_weight(CFG_WEIGHTING_ICT, sigma, i);
        one[i] = ct_weight(CFG_WEIGHTING_UNIFORM, sigma, i);
    }
    check_printed("lambda", "67.93, 14.63, 4.288, 1.545, 0.645, 0.301, 0.153, 0.083, 0.048, 0.029",
                  lambda, N - 1);
    check_printed("uniform weight", "1, 1, 1, 1, 1, 1, 1, 1, 1, 1", one, N - 1);

    printf("N = 11: sigma");
    for (int i = 0; i < N; i++) printf(" %.4f", sigma[i]);
    printf("\n        p    ");
    for (int i = 0; i < N - 1; i++) printf(" %.4f", p[i]);
    printf("\n        lambda");
    for (int i = 0; i < N - 1; i++) printf(" %.4g", lambda[i]);
    printf("\n");

    /* A large grid (iCT's last stage): all 1280 intervals carry mass, ascending sigmas. */
    enum { NB = 1281 };
    double *sb = cm_malloc(NB * sizeof *sb), *pb = cm_malloc((NB - 1) * sizeof *pb);
    ct_sigmas(NB, 0.002, 80, 7, sb);
    ict_index_probs(NB, sb, -1.1, 2.0, pb);
    int nonpos = 0, desc = 0;
    double sb_sum = 0;
    for (int i = 0; i < NB - 1; i++) {
        if (!(pb[i] > 0)) nonpos++;
        if (!(sb[i + 1] > sb[i])) desc++;
        sb_sum += pb[i];
    }
    CHECK(nonpos == 0 && desc == 0 && fabs(sb_sum - 1) < 1e-12,
          "N = 1281: %d non-positive p, %d non-ascending sigmas, sum %.17g", nonpos, desc, sb_sum);
    free(sb);
    free(pb);
}

/* ---- (d) pseudo-Huber c ---- */

static void test_huber_c(void)
{
    double c[2] = {pseudo_huber_c(3 * 32 * 32), pseudo_huber_c(1 * 28 * 28)};
    printf("pseudo-Huber c: 3x32x32 %.6f, 1x28x28 %.6f, 3x64x64 %.6f\n", c[0], c[1],
           pseudo_huber_c(3 * 64 * 64));
    /* 1x28x28: 0.00054 * 28 = 0.01512 exactly. ImageNet-64 (cm.md §5): 0.0599. */
    check_printed("c", "0.0299, 0.01512", c, 2);
    double c64 = pseudo_huber_c(3 * 64 * 64);
    check_printed("c imagenet64", "0.0599", &c64, 1);
}

/* ---- (e) the index sampler ---- */

enum { DRAWS = 1 << 20 };

/* Pearson's chi-square of counts[n] (from `total` draws) against probabilities p[n]. */
static double chi_square(const long *counts, const double *p, int n, long total)
{
    double x2 = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * (double)total;
        x2 += (counts[i] - e) * (counts[i] - e) / e;
    }
    return x2;
}

static void draw_counts(const double *cdf, int n, long *counts)
{
    float *u = cm_malloc(DRAWS * sizeof *u);
    rng_uniform(&(Rng){.seed = 777, .stream = 3, .step = 12}, u, DRAWS, 0, 1);
    memset(counts, 0, (size_t)n * sizeof *counts);
    int out_of_range = 0;
    for (int s = 0; s < DRAWS; s++) {
        int i = ct_sample_index(cdf, n, u[s]);
        if (i < 0 || i >= n) out_of_range++;
        else counts[i]++;
    }
    CHECK(out_of_range == 0, "%d draws out of 0..%d", out_of_range, n - 1);
    free(u);
}

static void test_sampler(void)
{
    enum { N = 11 };
    double sigma[N], p[N - 1], cdf[N - 1], flat[N - 1];
    long counts[N - 1];
    ct_sigmas(N, 0.002, 80, 7, sigma);
    ict_index_probs(N, sigma, -1.1, 2.0, p);
    ct_index_cdf(p, N - 1, cdf);
    for (int i = 0; i < N - 1; i++) flat[i] = 1.0 / (N - 1);

    int mono = 1;
    for (int i = 1; i < N - 1; i++) mono &= cdf[i] >= cdf[i - 1];
    CHECK(mono && cdf[N - 2] == 1.0 && fabs(cdf[0] - p[0]) < 1e-15,
          "cdf not monotone or not ending at exactly 1 (%.17g)", cdf[N - 2]);

    /* Inverse CDF at the boundaries: u below cdf[i] is interval i, u at cdf[i] is the next. */
    int bad_edge = 0;
    for (int i = 0; i < N - 2; i++) {
        if (ct_sample_index(cdf, N - 1, nextafter(cdf[i], 0)) != i) bad_edge++;
        if (ct_sample_index(cdf, N - 1, cdf[i]) != i + 1) bad_edge++;
    }
    CHECK(bad_edge == 0 && ct_sample_index(cdf, N - 1, 0.0) == 0 &&
          ct_sample_index(cdf, N - 1, nextafter(1.0, 0)) == N - 2,
          "inverse CDF: %d wrong boundary indices, u = 0 -> %d, u -> 1 gives %d", bad_edge,
          ct_sample_index(cdf, N - 1, 0.0), ct_sample_index(cdf, N - 1, nextafter(1.0, 0)));
    /* A zero-probability interval is never drawn. */
    double pz[4] = {0.5, 0.0, 0.25, 0.25}, cz[4];
    ct_index_cdf(pz, 4, cz);
    int hit1 = 0;
    for (int s = 0; s <= 1000; s++) hit1 += ct_sample_index(cz, 4, s / 1001.0) == 1;
    CHECK(hit1 == 0 && ct_sample_index(cz, 4, 0.5) == 2, "zero-probability interval drawn %d "
          "times; u = 0.5 -> %d (expected 2)", hit1, ct_sample_index(cz, 4, 0.5));

    /* Lognormal draws: 9 degrees of freedom, so chi-square above 30 has probability 4e-4; the
     * RNG is keyed, so the value is fixed. The same counts must reject the uniform law. */
    draw_counts(cdf, N - 1, counts);
    int missed = 0;
    for (int i = 0; i < N - 1; i++) missed += counts[i] == 0;
    double x2 = chi_square(counts, p, N - 1, DRAWS), x2_flat = chi_square(counts, flat, N - 1, DRAWS);
    printf("lognormal sampler, %d draws: chi-square %.2f against p (9 dof), %.0f against uniform\n",
           DRAWS, x2, x2_flat);
    printf("  frequencies");
    for (int i = 0; i < N - 1; i++) printf(" %.4f", (double)counts[i] / DRAWS);
    printf("\n");
    CHECK(missed == 0, "%d intervals never drawn", missed);
    CHECK(x2 < 30, "lognormal frequencies differ from p: chi-square %.2f (9 dof)", x2);
    CHECK(x2_flat > 1000, "chi-square against the wrong (uniform) law only %.2f", x2_flat);

    /* Uniform draws (cdf NULL): the range is 0..N-2 and the frequencies are flat. */
    CHECK(ct_sample_index(NULL, N - 1, 0.0) == 0 &&
          ct_sample_index(NULL, N - 1, nextafter(1.0, 0)) == N - 2 &&
          ct_sample_index(NULL, N - 1, 1.0 - 0x1p-24) == N - 2 &&
          ct_sample_index(NULL, N - 1, 0.1) == 1 && ct_sample_index(NULL, N - 1, 0.0999) == 0,
          "uniform sampler: u = 0 -> %d, u -> 1 -> %d, 0.1 -> %d, 0.0999 -> %d",
          ct_sample_index(NULL, N - 1, 0.0), ct_sample_index(NULL, N - 1, nextafter(1.0, 0)),
          ct_sample_index(NULL, N - 1, 0.1), ct_sample_index(NULL, N - 1, 0.0999));
    draw_counts(NULL, N - 1, counts);
    double x2u = chi_square(counts, flat, N - 1, DRAWS), x2u_p = chi_square(counts, p, N - 1, DRAWS);
    printf("uniform sampler, %d draws: chi-square %.2f against uniform (9 dof), %.0f against p\n",
           DRAWS, x2u, x2u_p);
    CHECK(x2u < 30, "uniform frequencies not flat: chi-square %.2f (9 dof)", x2u);
    CHECK(x2u_p > 1000, "uniform counts fit the lognormal p: chi-square only %.2f", x2u_p);

    /* The CD grid of CIFAR-10 (N = 18): 17 intervals, uniform over all of them. */
    long c17[17];
    double flat17[17];
    for (int i = 0; i < 17; i++) flat17[i] = 1.0 / 17;
    draw_counts(NULL, 17, c17);
    double x2_17 = chi_square(c17, flat17, 17, DRAWS);
    CHECK(x2_17 < 45, "uniform over 17 intervals: chi-square %.2f (16 dof)", x2_17);
}

int main(void)
{
    test_ct_original();
    test_ict_curriculum();
    test_ict_vectors();
    test_huber_c();
    test_sampler();
    return test_summary("ct_schedule");
}
