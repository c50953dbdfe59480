/* bench_sgemm.c: OpenBLAS's sgemm peak on this machine, the yardstick of bench/train.sh's
 * "fraction of peak" column: C [n,n] = A [n,n] B [n,n] for square n (large enough that packing
 * is negligible), best of `reps` calls after one warm-up call.
 *
 * Usage: bench_sgemm [--threads T] [--n N] [--reps R]. Prints "sgemm_gflops=... threads=T n=N core=...". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "autograd/ops.h"

int main(int argc, char **argv)
{
    cm_blas_select_core(argv);
    int threads = 2, n = 2048, reps = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--threads") == 0) threads = v;
        else if (strcmp(argv[i], "--n") == 0) n = v;
        else if (strcmp(argv[i], "--reps") == 0) reps = v;
        else {
            fprintf(stderr, "bench_sgemm: unknown option '%s'\n", argv[i]);
            return CM_EXIT_INPUT;
        }
        if (v < 1) {
            fprintf(stderr, "bench_sgemm: %s %s out of range\n", argv[i], argv[i + 1]);
            return CM_EXIT_INPUT;
        }
    }
    cm_set_threads(threads);
    size_t nn = (size_t)n * n;
    float *a = cm_aligned_alloc(nn * sizeof(float)), *b = cm_aligned_alloc(nn * sizeof(float));
    float *c = cm_aligned_alloc(nn * sizeof(float));
    rng_uniform(&(Rng){.seed = 3, .stream = 1}, a, 1, 0, nn);
    rng_uniform(&(Rng){.seed = 3, .stream = 2}, b, 1, 0, nn);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = cm_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = cm_now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    printf("sgemm_gflops=%.1f threads=%d n=%d core=%s\n", 2.0 * n * (double)nn / best * 1e-9, threads,
           n, cm_blas_core());
    free(a);
    free(b);
    free(c);
    return 0;
}
