/* ct_schedule.c: CT/iCT/CD schedules (equations and conventions in ct_schedule.h). */
#include "train/ct_schedule.h"

#include <math.h>

#include "common.h"
#include "sample/schedule.h"

/* m(k) of the original curriculum, the code's "scales" before its + 1.
 * The radicand is formed as k ((s1+1)^2 - s0^2) / K + s0^2 rather than (k/K) (...): the product
 * of two integers is exact in double, so whenever the radicand is a whole square (k = K gives
 * (s1+1)^2) sqrt returns it exactly and ceil(. - 1) cannot step one too far. */
static int ct_m(long k, long K, int s0, int s1)
{
    CM_ASSERT(K >= 1 && k >= 0 && s0 >= 1 && s1 >= s0,
              "ct schedule: need K >= 1, k >= 0, 1 <= s0 <= s1 (k %ld, K %ld, s0 %d, s1 %d)",
              k, K, s0, s1);
    if (k > K) k = K;
    double span = (double)(s1 + 1) * (s1 + 1) - (double)s0 * s0;
    double m = ceil(sqrt((double)k * span / (double)K + (double)s0 * s0) - 1.0);
    return CM_MAX((int)m, 1);
}

/* iCT's doubling: s0 doubled floor(k/K') times, capped at s1. Doubling in a loop that stops at s1
 * avoids 2^floor(k/K') overflowing for k far past K. */
static int ct_doubling_steps(long k, long K, int s0, int s1)
{
    CM_ASSERT(K >= 1 && k >= 0 && s0 >= 1 && s1 >= s0,
              "ct schedule: need K >= 1, k >= 0, 1 <= s0 <= s1 (k %ld, K %ld, s0 %d, s1 %d)",
              k, K, s0, s1);
    long stage = (long)floor((double)K / (log2((double)(s1 / s0)) + 1.0));
    if (stage < 1) stage = 1;
    long n = s0;
    for (long d = k / stage; d > 0 && n < s1; d--) n *= 2;
    return (int)CM_MIN(n, (long)s1);
}

int ct_N(CfgCurriculum kind, long k, long K, int s0, int s1)
{
    switch (kind) {
    case CFG_CURRICULUM_ORIGINAL: return ct_m(k, K, s0, s1) + 1;
    case CFG_CURRICULUM_DOUBLING: return ct_doubling_steps(k, K, s0, s1) + 1;
    case CFG_CURRICULUM_COUNT: break;
    }
    CM_ASSERT(0, "ct_N: bad curriculum %d", (int)kind);
}

double ct_mu(long k, long K, int s0, int s1, double mu0)
{
    CM_ASSERT(mu0 >= 0 && mu0 < 1, "ct_mu: mu0 must lie in [0, 1), got %g", mu0);
    /* ln(0) = -inf would give exp(-inf) = 0 too, but only by way of an infinity. */
    if (mu0 == 0) return 0;
    return exp(s0 * log(mu0) / ct_m(k, K, s0, s1));
}

void ct_sigmas(int N, double sigma_min, double sigma_max, double rho, double *sigma)
{
    CM_ASSERT(schedule_steps(SCHEDULE_POLYNOMIAL, N, sigma_min, sigma_max, rho, sigma) == 0,
              "ct_sigmas: %s", cm_errmsg());
    for (int i = 0, j = N - 1; i < j; i++, j--) {
        double t = sigma[i];
        sigma[i] = sigma[j];
        sigma[j] = t;
    }
}

/* P(X <= x) - P(X <= y) up to the factor 1/2, for the standardised a = (ln sigma - p_mean) /
 * (sqrt2 p_std): erf(b) - erf(a). Above the mean both erfs approach 1 and their difference
 * cancels; erfc(a) - erfc(b) is the same number without the cancellation. */
static double erf_diff(double a, double b)
{
    return a > 0 ? erfc(a) - erfc(b) : erf(b) - erf(a);
}

void ict_index_probs(int N, const double *sigma, double p_mean, double p_std, double *p)
{
    CM_ASSERT(N >= 2 && p_std > 0, "ict_index_probs: need N >= 2 and p_std > 0 (N %d, p_std %g)",
              N, p_std);
    double scale = 1.0 / (sqrt(2.0) * p_std), total = 0;
    double a = (log(sigma[0]) - p_mean) * scale;
    for (int i = 0; i < N - 1; i++) {
        CM_ASSERT(sigma[i + 1] > sigma[i], "ict_index_probs: sigma not ascending at %d", i);
        double b = (log(sigma[i + 1]) - p_mean) * scale;
        p[i] = erf_diff(a, b);
        total += p[i];
        a = b;
    }
    CM_ASSERT(total > 0, "ict_index_probs: the lognormal has no mass on the grid");
    for (int i = 0; i < N - 1; i++) p[i] /= total;
}

void ct_index_cdf(const double *p, int n, double *cdf)
{
    CM_ASSERT(n >= 1, "ct_index_cdf: need n >= 1, got %d", n);
    double s = 0;
    for (int i = 0; i < n; i++) cdf[i] = s += p[i];
    cdf[n - 1] = 1.0;
}

int ct_sample_index(const double *cdf, int n, double u)
{
    CM_ASSERT(n >= 1, "ct_sample_index: need n >= 1, got %d", n);
    if (!cdf) return CM_MAX(0, CM_MIN((int)floor(u * n), n - 1));
    int lo = 0, hi = n - 1;               /* the answer lies in [lo, hi] */
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (u < cdf[mid]) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

double ct_weight(CfgWeighting w, const double *sigma, int i)
{
    switch (w) {
    case CFG_WEIGHTING_UNIFORM: return 1.0;
    case CFG_WEIGHTING_ICT: return 1.0 / (sigma[i + 1] - sigma[i]);
    case CFG_WEIGHTING_COUNT: break;
    }
    CM_ASSERT(0, "ct_weight: bad weighting %d", (int)w);
}

double pseudo_huber_c(int dim)
{
    return 0.00054 * sqrt((double)dim);
}
