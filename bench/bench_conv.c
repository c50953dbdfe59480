/* bench_conv.c: conv2d forward + backward (dx, dw, db) time per iteration on the conv shapes of
 * a small U-Net at batch 64, 2 threads. bench/conv.sh runs it interleaved with its PyTorch twin
 * bench/bench_conv.py (same shapes, same output format) and prints the comparison.
 *
 * Usage: bench_conv [iterations]. Prints one line per shape: "name<TAB>median ms". */
#include <stdio.h>
#include <stdlib.h>

#include "autograd/ops.h"

typedef struct Shape {
    const char *name;
    int N, Cin, H, Cout, k, stride, pad;
} Shape;

/* Keep in sync with SHAPES in bench_conv.py. */
static const Shape SHAPES[] = {
    {"32->32 28x28 3x3",       64, 32, 28, 32, 3, 1, 1},
    {"32->64 28->14 3x3 s2",   64, 32, 28, 64, 3, 2, 1},
    {"64->64 14x14 3x3",       64, 64, 14, 64, 3, 1, 1},
    {"64->32 28x28 1x1",       64, 64, 28, 32, 1, 1, 0},
};

static float *filled(size_t n, uint32_t stream)
{
    float *p = cm_aligned_alloc(n * sizeof(float));
    rng_normal(&(Rng){.seed = 1, .stream = stream}, p, 1, 0, n);
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double bench_shape(const Shape *s, int iters)
{
    int Ho = (s->H + 2 * s->pad - s->k) / s->stride + 1;
    size_t nx = (size_t)s->N * s->Cin * s->H * s->H, nw = (size_t)s->Cout * s->Cin * s->k * s->k;
    size_t ny = (size_t)s->N * s->Cout * Ho * Ho;
    float *x = filled(nx, 1), *w = filled(nw, 2), *b = filled((size_t)s->Cout, 3);
    float *gy = filled(ny, 4), *gw = calloc(nw, sizeof(float));
    float *gb = calloc((size_t)s->Cout, sizeof(float));
    Ctx c;
    ctx_init(&c, 1 << 20);
    const int warmup = 3;
    double *t = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < warmup + iters; i++) {
        double t0 = cm_now();
        ctx_reset(&c);
        /* x's gradient starts fresh each iteration (PyTorch: x.grad = None); the parameters'
         * gradients accumulate in their own buffers, as in training. */
        Tensor *tx = tensor_wrap(&c, x, NULL, 4, SHAPE(s->N, s->Cin, s->H, s->H), true);
        Tensor *tw = tensor_wrap(&c, w, gw, 4, SHAPE(s->Cout, s->Cin, s->k, s->k), true);
        Tensor *tb = tensor_wrap(&c, b, gb, 1, SHAPE(s->Cout), true);
        Tensor *y = op_conv2d(&c, tx, tw, tb, s->stride, s->pad);
        tape_backward(&c, y, gy);
        if (i >= warmup) t[i - warmup] = cm_now() - t0;
    }
    qsort(t, (size_t)iters, sizeof(double), cmp_double);
    double med = t[iters / 2];
    ctx_free(&c);
    free(t); free(x); free(w); free(b); free(gy); free(gw); free(gb);
    return med;
}

int main(int argc, char **argv)
{
    cm_blas_select_core(argv);
    int iters = argc > 1 ? atoi(argv[1]) : 20;
    if (iters < 1) {
        fprintf(stderr, "usage: bench_conv [iterations >= 1]\n");
        return CM_EXIT_INPUT;
    }
    cm_set_threads(2);
    for (size_t i = 0; i < CM_ARRAY_LEN(SHAPES); i++)
        printf("%s\t%.3f\n", SHAPES[i].name, 1e3 * bench_shape(&SHAPES[i], iters));
    return 0;
}
