#include "threads.h"

#include <omp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cblas.h>

#include "common.h"

void cm_set_threads(int n)
{
    if (n < 1) {
        /* OpenMP's own default: OMP_NUM_THREADS (its first number), else every core. */
        const char *env = getenv("OMP_NUM_THREADS");
        n = env && atoi(env) > 0 ? atoi(env) : omp_get_num_procs();
    }
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int cm_threads(void) { return omp_get_max_threads(); }

const char *cm_blas_core(void) { return openblas_get_corename(); }

/* True if OpenBLAS's core is one of the given names. */
static bool blas_core_is(const char *const *names, size_t n)
{
    const char *core = openblas_get_corename();
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(core, names[i]) == 0) return true;
    return false;
}

void cm_blas_select_core(char **argv)
{
    static const char *const avx512[] = {"SkylakeX", "Cooperlake", "SapphireRapids"};
    static const char *const avx2[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
        if (!blas_core_is(avx512, CM_ARRAY_LEN(avx512))) want = "SkylakeX";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        if (!blas_core_is(avx2, CM_ARRAY_LEN(avx2))) want = "Haswell";
    }
    if (!want) return;
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user) {
        /* The user's choice stands, but a slower kernel family than the CPU has is said once. */
        fprintf(stderr, "cmlab: note: OPENBLAS_CORETYPE=%s is set, so OpenBLAS runs its %s kernels; this CPU "
                "has %s, whose kernels (OPENBLAS_CORETYPE=%s, or unset it) are faster (sgemm 358 against 190 "
                "GFLOP/s with Haswell's on an AVX-512 Zen 4)\n", user, openblas_get_corename(),
                strcmp(want, "SkylakeX") == 0 ? "AVX-512" : "AVX2 and FMA", want);
        return;
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");   /* exec failed: carry on with what OpenBLAS chose */
}

