/* schedule.c: time grids for the ODE solvers (formulas in schedule.h). */
#include "sample/schedule.h"

#include <math.h>
#include <string.h>

#include "common.h"

const char *const schedule_kind_names[SCHEDULE_KIND_COUNT + 1] = {
    [SCHEDULE_POLYNOMIAL] = "polynomial",
    [SCHEDULE_LOGSNR] = "logsnr",
    [SCHEDULE_TIME_UNIFORM] = "time_uniform",
};
_Static_assert(SCHEDULE_TIME_UNIFORM == SCHEDULE_KIND_COUNT - 1, "a ScheduleKind without a name");

const char *schedule_kind_name(ScheduleKind kind)
{
    CM_ASSERT(kind >= 0 && kind < SCHEDULE_KIND_COUNT, "schedule_kind_name: bad kind %d", (int)kind);
    return schedule_kind_names[kind];
}

int schedule_kind_from_name(const char *name)
{
    for (int k = 0; k < SCHEDULE_KIND_COUNT; k++)
        if (strcmp(name, schedule_kind_names[k]) == 0) return k;
    return cm_fail("unknown schedule '%s' (expected polynomial, logsnr or time_uniform)", name);
}

/* The VP time of DPM-Solver's time_uniform grid, mapped to VE sigma (schedule.h). */
static void schedule_time_uniform(int n, double sigma_min, double sigma_max, double rho, double *t)
{
    const double eps_s = 1e-3;
    double l_min = log1p(sigma_min * sigma_min), l_max = log1p(sigma_max * sigma_max);
    double beta_d = 2.0 * (l_min / eps_s - l_max) / (eps_s - 1.0);
    double beta_min = l_max - 0.5 * beta_d;
    for (int i = 0; i < n; i++) {
        double u = (double)i / (n - 1);
        double tau = pow(1.0 + u * (pow(eps_s, 1.0 / rho) - 1.0), rho);
        /* expm1: near tau = eps_s the exponent is ~4e-6 and exp(.) - 1 would lose 6 digits. */
        t[i] = sqrt(expm1(0.5 * beta_d * tau * tau + beta_min * tau));
    }
}

int schedule_steps(ScheduleKind kind, int n, double sigma_min, double sigma_max, double rho,
                   double *t)
{
    if (kind < 0 || kind >= SCHEDULE_KIND_COUNT) return cm_fail("schedule: bad kind %d", (int)kind);
    if (n < 2) return cm_fail("schedule %s: need at least 2 time points, got %d",
                              schedule_kind_names[kind], n);
    if (!(sigma_min > 0 && sigma_min < sigma_max && isfinite(sigma_max)))
        return cm_fail("schedule %s: need 0 < sigma_min < sigma_max, got sigma_min = %g, "
                       "sigma_max = %g", schedule_kind_names[kind], sigma_min, sigma_max);
    if (kind != SCHEDULE_LOGSNR && !(rho > 0 && isfinite(rho)))
        return cm_fail("schedule %s: rho must be positive, got %g", schedule_kind_names[kind], rho);

    switch (kind) {
    case SCHEDULE_POLYNOMIAL: {
        double a = pow(sigma_max, 1.0 / rho), b = pow(sigma_min, 1.0 / rho);
        for (int i = 0; i < n; i++) t[i] = pow(a + (double)i / (n - 1) * (b - a), rho);
        break;
    }
    case SCHEDULE_LOGSNR: {
        double a = log(sigma_max), b = log(sigma_min);
        for (int i = 0; i < n; i++) t[i] = exp(a + (double)i / (n - 1) * (b - a));
        break;
    }
    case SCHEDULE_TIME_UNIFORM:
        schedule_time_uniform(n, sigma_min, sigma_max, rho, t);
        break;
    default:
        break;
    }
    t[0] = sigma_max;
    t[n - 1] = sigma_min;
    return 0;
}
