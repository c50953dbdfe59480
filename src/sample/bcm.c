#include "bcm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"

void bcm_f_sampler(void *user, float *x, double t, double u, int n) { sample_consistency_tu(user, x, t, u, n); }

/* ---- schedules ---- */

/* One time token at *p: "T", "eps" or a number; advances *p. -1 (no message) if there is none. */
static int parse_time(const char **p, double eps, double T, double *out)
{
    if (!strncmp(*p, "eps", 3)) {
        *out = eps;
        *p += 3;
        return 0;
    }
    if (**p == 'T') {
        *out = T;
        *p += 1;
        return 0;
    }
    char *end;
    *out = strtod(*p, &end);
    if (end == *p) return -1;
    *p = end;
    return 0;
}

int bcm_schedule_parse(const char *text, double eps, double T, const char *what, BcmSchedule *s)
{
    memset(s, 0, sizeof *s);
    static const char *const syntax = "times (numbers, T or eps) joined by '>' (a network jump) and ',' "
                                      "(fresh noise up to the next time), e.g. 80>eps,0.1>1.2>eps";
    for (const char *p = text;;) {
        if (s->n == BCM_MAX_TIMES) return cm_fail("%s %s: at most %d times", what, text, BCM_MAX_TIMES);
        double t;
        if (parse_time(&p, eps, T, &t)) return cm_fail("%s %s: expected %s", what, text, syntax);
        if (!(t > 0) || !isfinite(t)) return cm_fail("%s %s: time %g is not a positive number", what, text, t);
        int k = s->n++;
        s->t[k] = t;
        if (k > 0 && t == s->t[k - 1])
            return cm_fail("%s %s: time %g follows itself (a jump or noise must change the level)", what, text, t);
        if (k > 0 && s->noise[k] && !(t > s->t[k - 1]))
            return cm_fail("%s %s: ',' adds noise, so the time after it (%g) must be above the one before (%g)",
                           what, text, t, s->t[k - 1]);
        if (!*p) break;
        if (*p != '>' && *p != ',') return cm_fail("%s %s: expected %s", what, text, syntax);
        s->noise[s->n] = *p == ',';
        p++;
    }
    if (s->n < 2) return cm_fail("%s %s: a schedule needs at least two times (e.g. 80>eps)", what, text);
    return 0;
}

int bcm_schedule_chain(const double *t, int n, BcmSchedule *s)
{
    memset(s, 0, sizeof *s);
    if (n < 2 || n > BCM_MAX_TIMES) return cm_fail("a chain of jumps needs 2 to %d times, got %d", BCM_MAX_TIMES, n);
    memcpy(s->t, t, (size_t)n * sizeof *t);
    s->n = n;
    return 0;
}

int bcm_schedule_check_generation(const BcmSchedule *s, double eps, double T, const char *what)
{
    char text[512];
    bcm_schedule_format(s, eps, text, sizeof text);
    for (int k = 0; k < s->n; k++) {
        if (s->t[k] < eps || s->t[k] > T)
            return cm_fail("%s %s: time %g is outside the model's range [eps = %g, T = %g]", what, text, s->t[k], eps, T);
        if (s->t[k] > s->t[0])
            return cm_fail("%s %s: generation starts from noise at the highest time; %g is above the first, %g", what,
                           text, s->t[k], s->t[0]);
        /* A jump must go down, except the first jump after fresh noise (BCM carries the small
         * noise up along the ODE, the zigzag of bcm.md §5). */
        bool after_noise = k >= 2 && s->noise[k - 1];
        if (k > 0 && !s->noise[k] && !after_noise && !(s->t[k] < s->t[k - 1]))
            return cm_fail("%s %s: generation times must decrease (%g -> %g goes up; only the first jump after "
                           "',' may go up)", what, text, s->t[k - 1], s->t[k]);
    }
    if (s->t[s->n - 1] != eps)
        return cm_fail("%s %s: generation must end at eps = %g (a clean image), not at %g", what, text, eps,
                       s->t[s->n - 1]);
    return 0;
}

int bcm_schedule_nfe(const BcmSchedule *s)
{
    int nfe = 0;
    for (int k = 1; k < s->n; k++) nfe += !s->noise[k];
    return nfe;
}

void bcm_schedule_format(const BcmSchedule *s, double eps, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < s->n && k < len; i++) {
        const char *sep = i == 0 ? "" : s->noise[i] ? "," : ">";
        if (s->t[i] == eps) k += (size_t)snprintf(out + k, len - k, "%seps", sep);
        else k += (size_t)snprintf(out + k, len - k, "%s%g", sep, s->t[i]);
    }
}

/* ---- running them ---- */

void bcm_run(BcmFn f, void *user, const BcmSchedule *s, double eps, int n, size_t dim, uint64_t seed, float *x)
{
    uint32_t noises = 0;
    for (int k = 1; k < s->n; k++) {
        double a = s->t[k - 1], b = s->t[k];
        if (s->noise[k]) {
            sample_add_noise(x, n, dim, sqrt(b * b - a * a), seed, STREAM_SAMPLE, ++noises);
            continue;
        }
        f(user, x, a, b, n);
        if (b == eps) sample_clip(x, (size_t)n * dim);
    }
}

void bcm_generate(BcmFn f, void *user, const BcmSchedule *s, double eps, int n, size_t dim, uint64_t seed,
                  float *out)
{
    Rng r = {.seed = seed, .stream = STREAM_SAMPLE, .step = 0};
    rng_normal(&r, out, n, 0, dim);
    /* in float, as sample_cm forms T z, so "T>eps" repeats a consistency model's one-step samples */
    float T = (float)s->t[0];
    for (size_t j = 0; j < (size_t)n * dim; j++) out[j] = T * out[j];
    bcm_run(f, user, s, eps, n, dim, seed, out);
}

int bcm_check_inversion(const double *t, int n, const char *what)
{
    if (n < 2) return cm_fail("%s: inversion needs the small noise level and at least one time above it", what);
    if (!(t[0] > 0)) return cm_fail("%s: the first inversion time (the noise put on the image) must be > 0, got %g",
                                    what, t[0]);
    for (int k = 1; k < n; k++)
        if (!(t[k] > t[k - 1]))
            return cm_fail("%s: inversion times must increase (%g -> %g does not)", what, t[k - 1], t[k]);
    return 0;
}

int bcm_inversion_times(const char *text, double noise, int steps, double T, double *t, int *nt, int max)
{
    *nt = 0;
    if (!text) {
        t[(*nt)++] = noise;
        if (steps == 2) t[(*nt)++] = 15.0;
        t[(*nt)++] = T;
        return bcm_check_inversion(t, *nt, "--noise");
    }
    for (const char *p = text;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || (*end && *end != ',') || *nt == max)
            return cm_fail("--times %s: expected at most %d numbers separated by commas", text, max);
        t[(*nt)++] = v;
        if (!*end) break;
        p = end + 1;
    }
    char what[300];
    snprintf(what, sizeof what, "--times %s", text);
    return bcm_check_inversion(t, *nt, what);
}

void bcm_invert_noise(float *x, int n, size_t dim, double t0, uint64_t seed)
{
    sample_add_noise(x, n, dim, t0, seed, STREAM_INVERT, 0);
}

int bcm_invert(BcmFn f, void *user, const double *t, int nt, int n, size_t dim, uint64_t seed, float *x)
{
    if (bcm_check_inversion(t, nt, "inversion")) return -1;
    bcm_invert_noise(x, n, dim, t[0], seed);
    for (int k = 1; k < nt; k++) f(user, x, t[k - 1], t[k], n);
    return 0;
}

double bcm_mse01(const float *a, const float *b, size_t count)
{
    double s = 0;
    for (size_t k = 0; k < count; k++) {
        double d = ((int)image_to_u8(a[k]) - (int)image_to_u8(b[k])) / 255.0;
        s += d * d;
    }
    return count ? s / (double)count : 0;
}
