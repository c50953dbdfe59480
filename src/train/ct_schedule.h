/* ct_schedule.h: the schedules of consistency training and distillation, as pure functions of
 * plain numbers: the grid size N(k), the target EMA rate mu(k), the Karras grid, the noise-index
 * distribution, the loss weighting and the pseudo-Huber constant (reference/cm.md §3.1, §4.2, §5).
 *
 * Conventions.
 *   - k is the global training step (0-based), K the total number of steps. Both schedules depend
 *     on k, so a resumed run must restore it (cm.md P10).
 *   - The grid is ASCENDING here, as in the CM papers: sigma[0] = sigma_min < ... <
 *     sigma[N-1] = sigma_max. Interval i (i = 0..N-2) is the pair (sigma[i], sigma[i+1]): the
 *     online network runs at sigma[i+1] (the larger), the target at sigma[i].
 *     The official code ([JCM] losses.get_consistency_loss_fn, cm.md §3.1) keeps the grid
 *     descending and draws j in 0..N-2 with the student at grid[j], the target at grid[j+1]; that is
 *     interval i = N-2-j here. Uniform sampling is symmetric, so the two conventions give the same
 *     distribution (a twin fed explicit indices must map them with i = N-2-j).
 *   - Index sampling is inverse-CDF on one uniform u in [0, 1) per sample, so the trainer draws u
 *     from the counter RNG (autograd/rng.h) and the index is a pure function of (seed, step, sample).
 */
#ifndef CM_CT_SCHEDULE_H
#define CM_CT_SCHEDULE_H

#include "io/experiment.h"

/* Number of grid points N(k) (so N(k) - 1 intervals). Requires 1 <= s0 <= s1, K >= 1, k >= 0.
 *
 * CFG_CURRICULUM_ORIGINAL (CT, CM paper §5 / Alg. 3, in the CODE convention of [JCM]
 * losses.get_ema_scales_fn and [PCM] create_ema_and_scales_fn):
 *     m(k) = max( ceil( sqrt( k/K ((s1+1)^2 - s0^2) + s0^2 ) - 1 ), 1 ),   N(k) = m(k) + 1.
 *   The paper writes N(k) = ceil(sqrt(...) - 1) + 1, the same except for the max(., 1), which only
 *   matters for s0 = 1 at k = 0. CIFAR-10 (s0 2, s1 150, K 800k): N = 2 at k = 0, 151 at k = K.
 *   Steps past K are treated as k = K (the reference code never goes there).
 *
 * CFG_CURRICULUM_DOUBLING (iCT, Song & Dhariwal 2023 eq. 8; [KIN] improved_timesteps_schedule,
 * [HF] get_discretization_steps):
 *     K' = floor( K / (log2 floor(s1/s0) + 1) ),   N(k) = min( s0 2^floor(k/K'), s1 ) + 1.
 *   s0 10, s1 1280, K 400k: K' = 50k, N = 11, 21, ..., 641, then 1281 from k = 350k on.
 *   K' is taken as at least 1 (K smaller than the number of doublings). */
int ct_N(CfgCurriculum kind, long k, long K, int s0, int s1);

/* CT's target EMA rate in the CODE convention (cm.md §4.2):
 *     mu(k) = exp( s0 ln(mu0) / m(k) ),   m(k) = N_original(k) - 1,
 * where the paper divides by N(k) instead. So at k = 0 with s0 2, mu0 0.9: mu = 0.81 (code), not
 * 0.9 (paper). mu0 = 0 gives 0 (the target is the online network with stop-gradient, as in iCT and
 * in the CIFAR-10 CD recipe); mu0 must lie in [0, 1). The rate belongs to the original curriculum
 * only: with the doubling curriculum iCT uses mu = 0. */
double ct_mu(long k, long K, int s0, int s1, double mu0);

/* The Karras grid (EDM eq. 5, cm.md §1.4) ascending:
 *     sigma[i] = ( sigma_min^(1/rho) + i/(N-1) (sigma_max^(1/rho) - sigma_min^(1/rho)) )^rho,
 * with both end points exact. It is schedule_steps(SCHEDULE_POLYNOMIAL) reversed. Aborts on
 * N < 2, sigma_min >= sigma_max or rho <= 0 (the experiment parser rejects these earlier). */
void ct_sigmas(int N, double sigma_min, double sigma_max, double rho, double *sigma /* [N] */);

/* iCT's discretised lognormal over the N-1 intervals (iCT paper eq. 10, cm.md §5):
 *     p(i) ∝ erf( (ln sigma[i+1] - p_mean) / (sqrt2 p_std) ) - erf( (ln sigma[i] - p_mean) / (sqrt2 p_std) ),
 * normalised to sum 1: the lognormal N(p_mean, p_std^2) of sigma truncated to [sigma[0],
 * sigma[N-1]], with interval i owning the mass between its two ends. iCT: p_mean -1.1, p_std 2. */
void ict_index_probs(int N, const double *sigma /* [N] */, double p_mean, double p_std,
                     double *p /* [N-1] */);

/* Running sums of p[n] into cdf[n], with cdf[n-1] set to exactly 1 so that every u < 1 maps to an
 * interval. */
void ct_index_cdf(const double *p, int n, double *cdf /* [n] */);

/* The interval index for one uniform u in [0, 1), over n = N-1 intervals:
 *   cdf == NULL: uniform, i = floor(u n) (CM's i ~ Uniform{0..N-2});
 *   otherwise:   the inverse CDF, the smallest i with u < cdf[i] (binary search), so interval i
 *                is drawn with probability cdf[i] - cdf[i-1] and a zero-probability one never.
 * The result is clamped to 0..n-1. With u from rng_uniform (24-bit) the uniform case deviates from
 * 1/n by at most n 2^-24 per interval. */
int ct_sample_index(const double *cdf, int n, double u);

/* The loss weight of interval i: CFG_WEIGHTING_UNIFORM 1 (CM); CFG_WEIGHTING_ICT
 * lambda = 1/(sigma[i+1] - sigma[i]) (iCT paper §3.3, cm.md §5). */
double ct_weight(CfgWeighting w, const double *sigma /* ascending */, int i);

/* The pseudo-Huber constant c = 0.00054 sqrt(dim), dim = C H W (iCT §3.3; cm.md P7: sqrt, not
 * dim). 3x32x32: 0.0299. The loss is sqrt(||a - b||^2 + c^2) - c over each sample's whole image. */
double pseudo_huber_c(int dim);

#endif
