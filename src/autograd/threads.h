/* threads.h: the process's thread and BLAS settings. OpenMP's loops and OpenBLAS's GEMMs share
 * one thread count (one owner: STYLE.md 9). */
#ifndef CM_THREADS_H
#define CM_THREADS_H

#include <stdbool.h>

/* Thread count of both OpenMP loops and OpenBLAS's GEMMs (one owner: see STYLE.md 9); n < 1 means
 * OMP_NUM_THREADS, else every core, as train.threads = 0 and a command without --threads say
 * (cm_select_env's rule busy sets OMP_NUM_THREADS to the cores not busy at start when it is unset). */
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

/* How OpenMP's threads wait at barriers and for work. libgomp spins by default, which on a shared
 * machine steals the core the other thread needs (issue 18: the S training step fell from 227 to
 * 77 img/s beside one busy process, 117 with OMP_WAIT_POLICY=passive, which cost 3% when idle).
 * libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, as it loads, so a policy cmlab picks
 * needs the environment set before that: cm_select_env sets it and re-executes the program (one
 * exec, shared with cm_blas_select_core's). A rule (the environment's CMLAB_WAIT_RULE, else
 * CM_WAIT_RULE_DEFAULT) picks it:
 *   busy         passive when the tasks running beside cmlab at start (/proc/stat's procs_running,
 *                the median of 11 readings over 50 ms) and the threads cmlab will run
 *                (OMP_NUM_THREADS, else every core) are more than the cores, else libgomp's
 *                default: spinning threads beside a busy process kept 18-21% of their idle
 *                speed, passive ones 46-54%, on two cores (README, the contended tables). And
 *                when the thread count is left to cmlab (OMP_NUM_THREADS unset: train.threads
 *                = 0, a command without --threads), it runs on the cores the others leave
 *                (cores - others, at least 1; OMP_NUM_THREADS is set to that for the process):
 *                beside a competitor holding one of two cores, one passive thread kept 51-52%
 *                of the idle speed where two kept 48-49% (AMD Zen 5, session 22), since the
 *                thread on the shared core holds back every barrier;
 *   passive      always OMP_WAIT_POLICY=passive;
 *   spin         libgomp's default;
 *   spincount=N  always GOMP_SPINCOUNT=N (spin N times, then sleep).
 * A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT stands, whatever the rule. */
#define CM_WAIT_RULE_DEFAULT "busy"

typedef struct CmWaitChoice {
    const char *var;             /* the variable to set, "OMP_WAIT_POLICY" or "GOMP_SPINCOUNT"; NULL: none */
    char value[32];
    int threads;                 /* the thread count when it is left to cmlab (OMP_NUM_THREADS); 0: every core */
    char why[384];               /* the policy and the reason, for the note on stderr */
} CmWaitChoice;

/* What `rule` picks with `others` tasks running beside cmlab, `cores` cores and `wanted` threads;
 * `auto_count`: wanted is every core because nobody set a count (then c->threads may drop it).
 * -1 after cm_fail() naming CMLAB_WAIT_RULE for a rule that is none of the above. */
int cm_wait_rule(const char *rule, double others, int cores, int wanted, bool auto_count, CmWaitChoice *c);
/* cm_blas_select_core and the waiting policy, with at most one re-exec; call it first thing in
 * main. A bad CMLAB_WAIT_RULE exits with CM_EXIT_INPUT and a message. `computes`: whether the
 * command may run OpenMP loops; when not (`cmlab --help`, `--version`, `info`), rule busy does not
 * take its readings (25-50 ms) and counts no tasks beside cmlab. */
void cm_select_env(char **argv, bool computes);
/* The policy in effect and why, one line (after cm_select_env): what train, sample and eval say. */
const char *cm_wait_note(void);
/* Whether the thread count is cmlab's to pick: rule busy, and no OMP_NUM_THREADS of the user's
 * (so a count of 0, train.threads' default, is the rule's). */
bool cm_thread_count_ours(void);
/* The cores the tasks running beside cmlab leave now (at least 1): rule busy's reading (25-50 ms),
 * not counting this process's own threads. A long run with cm_thread_count_ours() follows the load
 * with it (the trainer, every minute): the start's choice would otherwise hold for hours. */
int cm_cores_free(void);

#endif
