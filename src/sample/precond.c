#include "precond.h"

#include <math.h>

Precond precond_at(const PrecondParams *p, double t)
{
    double sd = p->sigma_data, r = sqrt(t * t + sd * sd);
    Precond q = {.c_in = 1.0 / r, .c_noise = log(t) / 4.0};
    if (p->kind == PRECOND_EDM) {
        q.c_skip = sd * sd / (r * r);
        q.c_out = t * sd / r;
    } else {
        double s = t - p->eps;
        q.c_skip = sd * sd / (s * s + sd * sd);
        q.c_out = sd * s / r;
    }
    return q;
}

Tensor *precond_apply(Ctx *c, const PrecondParams *p, const UNet *net, const WeightSet *ws, Tensor *x,
                      const float *t, const Rng *dropout, int sample0)
{
    int N = x->shape[0];
    float *k = arena_alloc(&c->arena, 4 * (size_t)N * sizeof(float));
    float *skip = k, *out = k + N, *in = k + 2 * N, *noise = k + 3 * N;
    for (int i = 0; i < N; i++) {
        Precond q = precond_at(p, t[i]);
        skip[i] = (float)q.c_skip;
        out[i] = (float)q.c_out;
        in[i] = (float)q.c_in;
        noise[i] = (float)q.c_noise;
    }
    Tensor *t_skip = tensor_wrap(c, skip, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_out = tensor_wrap(c, out, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_in = tensor_wrap(c, in, NULL, 4, SHAPE(N, 1, 1, 1), false);
    Tensor *t_noise = tensor_wrap(c, noise, NULL, 1, SHAPE(N), false);
    Tensor *F = unet_forward(c, net, ws, op_mul(c, x, t_in), t_noise, NULL, dropout, sample0, NULL);
    return op_add(c, op_mul(c, x, t_skip), op_mul(c, F, t_out));
}
