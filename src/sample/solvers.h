/* solvers.h: deterministic samplers that integrate the probability-flow ODE of a denoiser.
 *
 * Conventions (reference/amed.md §0, §6; reference/cm.md §1.5): VE/EDM form, t = sigma. The
 * denoiser D(x; sigma) estimates the clean data; the direction d(x, sigma) = (x - D(x; sigma))/sigma
 * is the PF-ODE's right-hand side, dx/dsigma = d (EDM eq. 1 with s(t) = 1, sigma(t) = t). A sampling
 * run integrates from sigma_max down to sigma_min along the n time points of schedule.h, that is over
 * n - 1 steps with h_i = t_{i+1} - t_i < 0, and optionally takes one final step to sigma = 0.
 * The caller passes x = sigma_max * z; the state is kept in float64, as EDM's sampler keeps it,
 * and is rounded to float32 only at the denoiser call (x in), the output widened back (D out).
 *
 * The solvers (diff-sampler diff-solvers-main/solvers.py; formulas of amed.md §6):
 *   euler    x_{i+1} = x_i + h_i d(x_i, t_i). EDM eq. 1, Euler's method (DDIM in VE form).
 *            NFE = (n-1) - afs + z: any NFE >= 1 - afs + z.
 *   heun     EDM Algorithm 1 (lines 5-8): x' = x_i + h_i d_i, then
 *            x_{i+1} = x_i + h_i (d_i + d(x', t_{i+1}))/2, with the correction on every step
 *            (the grid ends at sigma_min > 0). NFE = 2(n-1) - afs + z: even, odd with exactly one
 *            of afs and z. EDM's sampler with N points and its final Euler step to 0 is heun with
 *            n = N and denoise_to_zero: N = 18 gives the 35 NFE of cm.md §1.5.
 *   dpm2     DPM-Solver-2 (Lu et al. 2022, arXiv 2206.00927, Algorithm 1 with r1 = 1/2), written in
 *            VE form, where its first-order update is exactly an Euler step in sigma: the
 *            midpoint in lambda = -ln sigma is s_i = sqrt(t_i t_{i+1}),
 *            u = x_i + (s_i - t_i) d_i,   x_{i+1} = x_i + h_i d(u, s_i).
 *            NFE = 2(n-1) - afs + z (the same NFE as heun).
 *   dpmpp2m  Multistep DPM-Solver++ with data prediction (Lu et al. 2022b, arXiv 2211.01095,
 *   dpmpp3m  Algorithm 2 for 2M; 3M is the third-order multistep update of the DPM-Solver code),
 *            in VE form: lambda = -ln sigma, h = lambda_{i+1} - lambda_i > 0, m_j the data
 *            predictions D at the latest time points (m_0 at t_i), r0 = h_0/h, r1 = h_1/h with
 *            h_0 = lambda_i - lambda_{i-1}, h_1 = lambda_{i-1} - lambda_{i-2},
 *            phi1 = e^-h - 1, phi2 = phi1/h + 1, phi3 = phi2/h - 1/2:
 *              order 1  x_{i+1} = (t_{i+1}/t_i) x_i - phi1 m_0              (DDIM)
 *              order 2  x_{i+1} = (t_{i+1}/t_i) x_i - phi1 (m_0 + D1_0/2),  D1_0 = (m_0 - m_1)/r0
 *              order 3  x_{i+1} = (t_{i+1}/t_i) x_i - phi1 m_0 + phi2 D1 - phi3 D2,
 *                       D1_1 = (m_1 - m_2)/r1, D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1),
 *                       D2 = c (D1_0 - D1_1)/(r0+r1).
 *            The exact step is (t_{i+1}/t_i) x_i - phi1 m + h phi2 m' - h^2 phi3 m'' + O(h^4)
 *            (derivatives in lambda), and (D1_0 - D1_1)/(r0+r1) = h^2 m''/2 + O(h^3). The DPM-Solver
 *            code, diff-sampler and diffusers all use c = 1, which leaves an O(h^3) local error:
 *            as published, 3M is a second-order method (tests/test_solvers.c measures 2.0).
 *            c = 1 is the default, to match the published baselines; dpmpp3m_corrected sets
 *            c = 2, which is third order (measured 3.0).
 *            Step k = 1..n-1 has order p_k = min(max_order, k) (the lower-order warm start), and
 *            with lower_order_final (diff-sampler's default, on every run, not only below 10
 *            (or 15) steps as in the DPM-Solver code) p_k = k if k < max_order, else
 *            min(max_order, n - k): the last step is first order, the one before second order.
 *            With thresholding each D is replaced by clip(D, -s, s)/s per sample, s = max(1, the
 *            0.995 quantile of |D| over the sample) (Imagen's dynamic thresholding, as
 *            diff-sampler; meant for data in [-1, 1]). NFE = (n-1) - afs + z.
 *   ipndm    iPNDM (Zhang & Chen 2022, DEIS, arXiv 2204.13902): Adams-Bashforth with the fixed
 *            coefficients of a uniform grid whatever the step sizes, order p = min(ipndm_order, i+1)
 *            on step i (a warm start through the lower orders), d_j = the directions at t_{i-j}:
 *              p = 1  x_{i+1} = x_i + h_i d_0
 *              p = 2  x_{i+1} = x_i + h_i (3 d_0 - d_1)/2
 *              p = 3  x_{i+1} = x_i + h_i (23 d_0 - 16 d_1 + 5 d_2)/12
 *              p = 4  x_{i+1} = x_i + h_i (55 d_0 - 59 d_1 + 37 d_2 - 9 d_3)/24
 *            NFE = (n-1) - afs + z. Because the coefficients ignore the step sizes, orders 3 and
 *            4 hold only on grids uniform in sigma (POLYNOMIAL with rho = 1); on other smooth grids
 *            the global order is 2.
 * Warm starts and lower_order_final: a first-order step has an O(h^2) local error, so strictly
 * every multistep method here is second order at best. The constant is the trajectory's curvature
 * where that step is taken: at sigma_max >> the data scale the PF-ODE is nearly straight
 * (x'' ~ s^2/sigma^3), and at sigma_min the data prediction hardly moves, so in practice the
 * nominal orders show (see the convergence table of tests/test_solvers.c).
 * Common options:
 *   afs              the analytical first step (AMED, amed.md §2): the first direction is
 *                    d_0 = x_0 / sqrt(1 + sigma_max^2), with no network call (diff-sampler's
 *                    formula, ~ x/sigma at sigma_max = 80; for dpmpp the data prediction becomes
 *                    x_0 - sigma_max d_0). Saves exactly one NFE.
 *   denoise_to_zero  (z above) a final step from sigma_min to 0: x = D(x; sigma_min). One NFE.
 *                    The Euler step to 0 of EDM's Algorithm 1 is exactly this.
 * NFE counts denoiser calls, whatever the batch size N; a classifier-free-guidance wrapper that
 * evaluates two batches per call is the caller's business (amed.md counts those twice).
 *
 * Inversion (solver_invert): the same ODE integrated upward, image -> latent, from a start sigma
 * (sigma_min, or the small noise an image is first given, e.g. 0.07) to sigma_max, along an
 * ascending grid: schedule.h's grid reversed, or an explicit list of times. Only euler and heun
 * (the formulas above with h_i > 0; heun corrects on every step, its last one evaluated at
 * sigma_max): NFE = n-1 and 2(n-1). The deterministic ODE makes the map invertible up to the
 * discretisation error: sampling from the result with the same solver and grid (descending) returns
 * the start, with an error of order 1 for euler and 3 for heun (the h^3 terms of a step up and the
 * same step down cancel; tests/test_solvers.c measures both). This is EDM ODE inversion, the
 * baseline BCM's one- and two-step inversion is compared with at equal NFE (issue 14).
 */
#ifndef CM_SOLVERS_H
#define CM_SOLVERS_H

#include <stdbool.h>
#include <stddef.h>

#include "sample/schedule.h"

/* out = D(x; sigma) for a batch of N samples of dim floats each, sample b at noise level sigma[b]
 * (the solvers here pass one value N times; AMED's steps differ per sample). feat: NULL, or room
 * for the features of this same call, [N * the callback's feature size] (sample.h's denoiser: the
 * U-Net bottleneck's channel mean, sampler_feature_dim values per sample); the solvers pass NULL. */
typedef void (*DenoiserFn)(void *user, const float *x /* [N*dim] */, const double *sigma /* [N] */,
                           float *out /* [N*dim] */, int N, size_t dim, float *feat);

/* An observer of a run (SolverOpts.on_step): x [N*dim] is the state at time point i of the grid,
 * sigma = t_i; called for i = 0 (the start) .. n-1, and once more with i = n, sigma = 0 after
 * denoise_to_zero. For recording trajectories; it must not keep x. */
typedef void (*SolverStepFn)(void *user, int i, double sigma, const double *x, int N, size_t dim);

typedef enum SolverKind {
    SOLVER_EULER,
    SOLVER_HEUN,
    SOLVER_DPM2,
    SOLVER_DPMPP2M,
    SOLVER_DPMPP3M,
    SOLVER_IPNDM,
    SOLVER_KIND_COUNT
} SolverKind;

typedef struct SolverOpts {
    ScheduleKind schedule;
    double rho;                /* polynomial and time_uniform exponent */
    double sigma_min, sigma_max;
    int steps;                 /* n, the number of time points sigma_max..sigma_min (>= 2) */
    int nfe;                   /* or, with steps = 0, the NFE to spend (n is derived from it) */
    int ipndm_order;           /* ipndm: maximum order 1..4 */
    bool afs;                  /* analytical first step: 1 NFE less */
    bool denoise_to_zero;      /* final x = D(x; sigma_min): 1 NFE more */
    bool lower_order_final;    /* dpmpp*: first and second order on the last two steps */
    bool thresholding;         /* dpmpp*: dynamic thresholding of D (data in [-1, 1]) */
    bool dpmpp3m_corrected;    /* dpmpp3m: c = 2 in D2, third order (default: as published) */
    SolverStepFn on_step;      /* NULL, or called at every time point (SolverStepFn) */
    void *on_step_user;
} SolverOpts;

typedef struct SolverStats {
    int nfe;                   /* denoiser calls made */
    int steps;                 /* n, the time points used */
} SolverStats;

/* Defaults of diff-sampler (and EDM's grid): polynomial, rho 7, sigma 0.002..80, ipndm_order 4,
 * lower_order_final and thresholding on, afs, denoise_to_zero and dpmpp3m_corrected off,
 * steps = nfe = 0 (one of them must be set). */
SolverOpts solver_opts_default(void);

/* "euler", "heun", "dpm2", "dpmpp2m", "dpmpp3m", "ipndm", and back: solver_kind_from_name returns
 * -1 after cm_fail() for an unknown name. */
const char *solver_kind_name(SolverKind kind);
/* The names by kind, NULL-terminated: the one name table (the experiment keys' choices too). */
extern const char *const solver_kind_names[SOLVER_KIND_COUNT + 1];
int solver_kind_from_name(const char *name);

/* The NFE of `kind` over n time points with o's afs and denoise_to_zero (formulas above). */
int solver_nfe(SolverKind kind, const SolverOpts *o, int n);
/* The n that o asks for: o->steps if set (and then o->nfe, if also set, must agree), else the n
 * whose NFE is o->nfe. Returns -1 after cm_fail() naming the NFEs that are possible when there is
 * no such n (e.g. heun without afs or denoise_to_zero: even NFEs only). */
int solver_resolve_steps(SolverKind kind, const SolverOpts *o);

/* iPNDM's Adams-Bashforth coefficients of a uniform grid: row p-1 weighs d_0 (newest) .. d_{p-1}
 * (the table above; AMED's ipndm plugin uses it too). */
extern const double solver_ab_coef[4][4];

/* Dynamic thresholding's scale of one sample (the dpmpp* solvers, AMED's dpmpp plugin): s = the
 * 0.995 quantile of |m| over its dim values (linear interpolation between order statistics,
 * torch.quantile's default), at least 1; the thresholded m is clip(m, -s, s) / s. abs_m: |m|,
 * sorted in place. */
double solver_threshold_scale(double *abs_m, size_t dim);

/* The order of multistep DPM-Solver++'s step k = 1..n-1 over n time points (diff-sampler's
 * dpm_pp_sampler; the table above). */
int solver_dpmpp_order(int k, int n, int max_order, bool lower_order_final);

/* Integrates x (in: sigma_max * z; out: the sample at sigma_min, or at 0 with denoise_to_zero)
 * for N samples of dim values. Returns 0, or -1 after cm_fail() for bad options (an impossible
 * NFE, a bad schedule, ipndm_order outside 1..4). stats may be NULL. */
int solver_sample(SolverKind kind, const SolverOpts *o, DenoiserFn D, void *user,
                  double *x /* [N*dim] */, int N, size_t dim, SolverStats *stats);

/* Integrates x upward (in: the state at o->sigma_min, e.g. an image plus noise of that level;
 * out: the latent at o->sigma_max) by euler or heun over schedule_steps's grid of o (schedule,
 * rho, steps or nfe) in reverse order, sigma_min first; o->on_step sees that ascending grid. Returns 0, or -1 after cm_fail() for
 * another solver, afs or denoise_to_zero set, or an impossible NFE. stats may be NULL. */
int solver_invert(SolverKind kind, const SolverOpts *o, DenoiserFn D, void *user,
                  double *x /* [N*dim] */, int N, size_t dim, SolverStats *stats);
/* The same along explicit times t[0] < t[1] < ... < t[n-1] (positive; x is at t[0] on entry and
 * at t[n-1] on return), e.g. BCM's 0.07 -> 15 -> 80. -1 after cm_fail() for times that do not
 * increase or for another solver than euler and heun. */
int solver_invert_times(SolverKind kind, const double *t /* [n] */, int n, DenoiserFn D,
                        void *user, double *x /* [N*dim] */, int N, size_t dim,
                        SolverStats *stats);

#endif
