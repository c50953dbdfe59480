/* schedule.h: the time (noise-level) grids that the ODE solvers step along.
 *
 * Conventions (reference/amed.md §0, reference/cm.md §1): VE/EDM form, time equals noise level,
 * t = sigma. A schedule is n >= 2 time points t[0] = sigma_max > t[1] > ... > t[n-1] = sigma_min,
 * descending, with u = i/(n-1) for i = 0..n-1 (amed.md §5, diff-sampler solver_utils.get_schedule).
 * The two end points are stored exactly as given (the formulas reproduce them only up to
 * rounding); no t = 0 is appended here (the solvers' denoise_to_zero option adds the step to 0).
 *
 *   SCHEDULE_POLYNOMIAL   EDM/Karras (EDM eq. 5; cm.md §1.4):
 *                         t_i = (sigma_max^(1/rho) + u (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
 *                         rho = 7 is EDM's choice; rho = 1 is uniform in sigma.
 *   SCHEDULE_LOGSNR       uniform in log sigma (the log-SNR of VE is -2 ln sigma), rho unused:
 *                         t_i = exp(ln sigma_max + u (ln sigma_min - ln sigma_max)).
 *   SCHEDULE_TIME_UNIFORM uniform in the time tau of a VP-SDE whose linear beta schedule is fitted
 *                         to the sigma range (DPM-Solver's "time_uniform", as diff-sampler maps it
 *                         to VE). Not uniform in sigma: use POLYNOMIAL with rho = 1 for that.
 *                         eps_s = 1e-3, L(sigma) = ln(1 + sigma^2),
 *                         beta_d = 2 (L(sigma_min)/eps_s - L(sigma_max)) / (eps_s - 1),
 *                         beta_min = L(sigma_max) - beta_d/2   (so sigma(1) = sigma_max and
 *                         sigma(eps_s) = sigma_min), tau_i = (1 + u (eps_s^(1/rho) - 1))^rho,
 *                         t_i = sqrt(exp(beta_d tau_i^2 / 2 + beta_min tau_i) - 1).
 *                         For 0.002..80: beta_d = 17.53796, beta_min = -0.004769.
 * amed.md §5 also lists "discrete" (LDM/Stable Diffusion's alpha-bar table): not provided, cmlab
 * has no discrete-time models.
 */
#ifndef CM_SCHEDULE_H
#define CM_SCHEDULE_H

typedef enum ScheduleKind {
    SCHEDULE_POLYNOMIAL,
    SCHEDULE_LOGSNR,
    SCHEDULE_TIME_UNIFORM,
    SCHEDULE_KIND_COUNT
} ScheduleKind;

/* "polynomial", "logsnr", "time_uniform" (the names of experiment files and diff-sampler), and
 * back: schedule_kind_from_name returns -1 after cm_fail() for an unknown name. */
const char *schedule_kind_name(ScheduleKind kind);
/* The names by kind, NULL-terminated: the one name table (the experiment keys' choices too). */
extern const char *const schedule_kind_names[SCHEDULE_KIND_COUNT + 1];
int schedule_kind_from_name(const char *name);

/* Fills t[n] (descending, sigma_max..sigma_min). Returns 0, or -1 after cm_fail() when n < 2,
 * 0 < sigma_min < sigma_max does not hold, or rho <= 0 where rho is used. */
int schedule_steps(ScheduleKind kind, int n, double sigma_min, double sigma_max, double rho,
                   double *t /* [n] */);

#endif
