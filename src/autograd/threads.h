/* threads.h: the process's thread and BLAS settings. OpenMP's loops and OpenBLAS's GEMMs share
 * one thread count (one owner: STYLE.md 9). */
#ifndef CM_THREADS_H
#define CM_THREADS_H

/* Thread count of both OpenMP loops and OpenBLAS's GEMMs (one owner: see STYLE.md 9); n < 1 means
 * OpenMP's default (OMP_NUM_THREADS, else every core), as train.threads = 0 says. */
void cm_set_threads(int n);
int cm_threads(void);

/* Debian 12's OpenBLAS (0.3.21) does not recognise newer CPUs (Sapphire and Emerald Rapids among
 * them) and falls back to its SSE3 "Prescott" kernels, which run sgemm 2-3x slower than the
 * AVX-512 ones. It picks its kernels in a constructor, before main, from OPENBLAS_CORETYPE; so
 * when it has picked a generic core on a CPU with AVX-512 (AVX2 + FMA), this sets
 * OPENBLAS_CORETYPE=SkylakeX (Haswell) and execs the program again with the same argv. Call it
 * first thing in main. A user's own OPENBLAS_CORETYPE is left alone, with a note on stderr when it
 * names a slower kernel family than the CPU has (an environment forcing Haswell on an AVX-512 CPU
 * halves sgemm); if exec fails, the program goes on with the slow kernels. Returns only when no
 * re-exec happened. */
void cm_blas_select_core(char **argv);
/* OpenBLAS's kernel family ("SkylakeX", "Prescott", ...). */
const char *cm_blas_core(void);

#endif
