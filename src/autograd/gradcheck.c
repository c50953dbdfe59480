#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

static Tensor *run(Ctx *c, GradFn fn, void *user, int nin, const GradInput *in)
{
    Tensor *t[TAPE_MAX_INPUTS];
    for (int i = 0; i < nin; i++)
        t[i] = tensor_wrap(c, in[i].data, NULL, in[i].ndim, in[i].shape, in[i].requires_grad);
    return fn(c, t, user);
}

static double objective(Ctx *c, GradFn fn, void *user, int nin, const GradInput *in, const float *gout)
{
    ctx_reset(c);
    ctx_no_grad_begin(c);
    Tensor *out = run(c, fn, user, nin, in);
    double s = 0;
    for (size_t i = 0; i < out->n; i++) s += (double)out->data[i] * gout[i];
    ctx_no_grad_end(c);
    return s;
}

double gradcheck(GradFn fn, void *user, int nin, const GradInput *in, const float *gout_arg,
                 float eps, int max_elems)
{
    CM_ASSERT(nin <= TAPE_MAX_INPUTS, "gradcheck: %d inputs", nin);
    Ctx c;
    ctx_init(&c, 1 << 20);

    /* Analytic gradients. */
    Tensor *t[TAPE_MAX_INPUTS];
    for (int i = 0; i < nin; i++)
        t[i] = tensor_wrap(&c, in[i].data, NULL, in[i].ndim, in[i].shape, in[i].requires_grad);
    Tensor *out = fn(&c, t, user);
    float *gout = cm_malloc(out->n * sizeof(float));
    if (gout_arg) {
        memcpy(gout, gout_arg, out->n * sizeof(float));
    } else {
        Rng r = {.seed = 12345, .stream = 99, .step = 0};
        rng_normal(&r, gout, 1, 0, out->n);
    }
    tape_backward(&c, out, gout);
    float *analytic[TAPE_MAX_INPUTS] = {0};
    for (int i = 0; i < nin; i++) {
        if (!in[i].requires_grad) continue;
        analytic[i] = cm_calloc(t[i]->n, sizeof(float));
        if (t[i]->grad) memcpy(analytic[i], t[i]->grad, t[i]->n * sizeof(float));
    }

    double worst = 0;
    for (int i = 0; i < nin; i++) {
        if (!in[i].requires_grad) continue;
        size_t n = 1;
        for (int d = 0; d < in[i].ndim; d++) n *= (size_t)in[i].shape[d];
        size_t stride = n > (size_t)max_elems ? (n + (size_t)max_elems - 1) / (size_t)max_elems : 1;
        double max_err = 0, max_ref = 0;
        for (size_t k = 0; k < n; k += stride) {
            float x0 = in[i].data[k];
            /* The step actually taken, after float rounding of x0 +- eps. */
            float xp = x0 + eps, xm = x0 - eps;
            in[i].data[k] = xp;
            double fp = objective(&c, fn, user, nin, in, gout);
            in[i].data[k] = xm;
            double fm = objective(&c, fn, user, nin, in, gout);
            in[i].data[k] = x0;
            double num = (fp - fm) / ((double)xp - (double)xm);
            max_err = fmax(max_err, fabs(num - analytic[i][k]));
            max_ref = fmax(max_ref, fabs(num));
        }
        double rel = max_err / fmax(max_ref, 1e-6);
        if (rel > worst) worst = rel;
        free(analytic[i]);
    }
    free(gout);
    ctx_free(&c);
    return worst;
}
