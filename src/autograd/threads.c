#include "threads.h"

#include <dirent.h>
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

/* The kernel family OpenBLAS should run on this CPU when it runs a slower one unasked (then
 * OPENBLAS_CORETYPE is set and true is returned: the process must re-exec); a user's own
 * OPENBLAS_CORETYPE stands, with a note when it is slower. */
static bool blas_core_env(void)
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
    if (!want) return false;
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user) {
        /* The user's choice stands, but a slower kernel family than the CPU has is said once. */
        fprintf(stderr, "cmlab: note: OPENBLAS_CORETYPE=%s is set, so OpenBLAS runs its %s kernels; this CPU "
                "has %s, whose kernels (OPENBLAS_CORETYPE=%s, or unset it) are faster (sgemm 358 against 190 "
                "GFLOP/s with Haswell's on an AVX-512 Zen 4)\n", user, openblas_get_corename(),
                strcmp(want, "SkylakeX") == 0 ? "AVX-512" : "AVX2 and FMA", want);
        return false;
    }
    setenv("OPENBLAS_CORETYPE", want, 1);
    return true;
}

void cm_blas_select_core(char **argv)
{
    if (!blas_core_env()) return;
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE");   /* exec failed: carry on with what OpenBLAS chose */
}

/* ---- OpenMP's waiting policy ---- */

/* Set by cm_select_env for the process it re-executes: the note of the policy in effect, and
 * whether the thread count is cmlab's to pick (rule busy, no OMP_NUM_THREADS of the user's). */
#define WAIT_NOTE_VAR "CMLAB_WAIT_NOTE"
#define COUNT_OURS_VAR "CMLAB_COUNT_OURS"

static char wait_note[448];
static bool count_ours;

/* The cores `others` running tasks leave of `cores`, at least one. */
static int cores_left(double others, int cores) { return others < cores - 1 ? cores - (int)others : 1; }

int cm_wait_rule(const char *rule, double others, int cores, int wanted, bool auto_count, CmWaitChoice *c)
{
    memset(c, 0, sizeof *c);
    const char *how = "; rule %s of CMLAB_WAIT_RULE (busy, passive, spin or spincount=N)";
    if (strcmp(rule, "busy") == 0) {
        if (others + wanted > cores) {
            c->var = "OMP_WAIT_POLICY";
            snprintf(c->value, sizeof c->value, "passive");
            snprintf(c->why, sizeof c->why, "OpenMP threads wait passively (OMP_WAIT_POLICY=passive): tasks running "
                     "beside cmlab at start %g, and its %d threads want more than the %d cores", others, wanted, cores);
            if (auto_count) {
                c->threads = cores_left(others, cores);
                size_t len = strlen(c->why);
                snprintf(c->why + len, sizeof c->why - len, ", so %d thread%s where no count is given (OMP_NUM_THREADS=%d)",
                         c->threads, c->threads == 1 ? "" : "s", c->threads);
            }
        } else {
            snprintf(c->why, sizeof c->why, "OpenMP threads spin while they wait (libgomp's default): tasks running "
                     "beside cmlab at start %g, which leave the %d cores to its %d threads", others, cores, wanted);
        }
    } else if (strcmp(rule, "passive") == 0) {
        c->var = "OMP_WAIT_POLICY";
        snprintf(c->value, sizeof c->value, "passive");
        snprintf(c->why, sizeof c->why, "OpenMP threads wait passively (OMP_WAIT_POLICY=passive)");
    } else if (strcmp(rule, "spin") == 0) {
        snprintf(c->why, sizeof c->why, "OpenMP threads spin while they wait (libgomp's default)");
    } else if (strncmp(rule, "spincount=", 10) == 0) {
        char *end;
        long long n = strtoll(rule + 10, &end, 10);
        if (end == rule + 10 || *end || n < 0)
            return cm_fail("CMLAB_WAIT_RULE=%s: spincount=N takes a count N >= 0 of spins before a thread sleeps",
                           rule);
        c->var = "GOMP_SPINCOUNT";
        snprintf(c->value, sizeof c->value, "%lld", n);
        snprintf(c->why, sizeof c->why, "OpenMP threads spin at most %lld times, then sleep (GOMP_SPINCOUNT=%lld)",
                 n, n);
    } else {
        return cm_fail("CMLAB_WAIT_RULE=%s: not a rule (busy, passive, spin or spincount=N)", rule);
    }
    size_t len = strlen(c->why);
    snprintf(c->why + len, sizeof c->why - len, how, rule);
    return 0;
}

/* This process's threads running or runnable now (state R in /proc/self/task/N/stat), at least
 * the one reading. */
static int own_running(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) fclose(f);
        buf[len] = '\0';
        const char *state = strrchr(buf, ')');   /* "pid (comm) S ...": comm may hold spaces and ')' */
        if (state && state[1] == ' ' && state[2] == 'R') n++;
    }
    if (d) closedir(d);
    return n > 0 ? n : 1;
}

/* How many other tasks are running or runnable now: /proc/stat's procs_running less this process's,
 * the median of 11 readings 5 ms apart (a task that runs for a moment is not a competitor; one
 * that spins is in every reading), cut short once 6 readings saw none (25 ms on an idle
 * machine). 0 when /proc/stat cannot be read. The 1-minute load average was the first rule's
 * measure: one competitor that has run for minutes puts it at about 1.0, not above cores - 1 = 1
 * on two cores, and one that has just started barely moves it. */
static double other_running(void)
{
    enum { READS = 11 };
    int n[READS], idle = 0;
    for (int r = 0; r < READS; r++) {
        n[r] = 1;
        FILE *f = fopen("/proc/stat", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "procs_running %d", &n[r]) == 1) break;
        if (f) fclose(f);
        n[r] -= own_running() - 1;   /* this process's threads (the loader's, a spinning worker) are not others */
        if (n[r] <= 1 && ++idle > READS / 2) return 0;
        if (r + 1 < READS) usleep(5000);
    }
    for (int i = 1; i < READS; i++)   /* insertion sort: eleven numbers */
        for (int j = i; j > 0 && n[j - 1] > n[j]; j--) {
            int t = n[j];
            n[j] = n[j - 1];
            n[j - 1] = t;
        }
    return n[READS / 2] > 1 ? n[READS / 2] - 1 : 0;
}

void cm_select_env(char **argv, bool computes)
{
    const char *chosen = getenv(WAIT_NOTE_VAR);
    if (chosen) {
        /* The re-executed process: both choices are in its environment already. */
        snprintf(wait_note, sizeof wait_note, "%s", chosen);
        count_ours = getenv(COUNT_OURS_VAR) != NULL;
        unsetenv(WAIT_NOTE_VAR);
        unsetenv(COUNT_OURS_VAR);
        return;
    }
    const char *policy = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
    CmWaitChoice c = {0};
    if (policy || spin) {
        snprintf(wait_note, sizeof wait_note, "OpenMP waiting as the environment says (%s%s%s%s%s)",
                 policy ? "OMP_WAIT_POLICY=" : "", policy ? policy : "", policy && spin ? ", " : "",
                 spin ? "GOMP_SPINCOUNT=" : "", spin ? spin : "");
    } else {
        const char *rule = getenv("CMLAB_WAIT_RULE");
        if (!rule || !rule[0]) rule = CM_WAIT_RULE_DEFAULT;
        /* The threads a command will want: OpenMP's default (OMP_NUM_THREADS, else every core). */
        int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
        const char *env = getenv("OMP_NUM_THREADS");
        bool auto_count = !(env && atoi(env) > 0);
        int wanted = auto_count ? cores : atoi(env);
        count_ours = computes && auto_count && strcmp(rule, "busy") == 0;
        double others = computes && strcmp(rule, "busy") == 0 ? other_running() : 0;
        if (cm_wait_rule(rule, others, cores, wanted, auto_count, &c) != 0) {
            fprintf(stderr, "cmlab: %s\n", cm_errmsg());
            exit(CM_EXIT_INPUT);
        }
        snprintf(wait_note, sizeof wait_note, "%s", c.why);
    }
    bool blas = blas_core_env();
    if (!c.var && !blas) return;
    if (c.var) setenv(c.var, c.value, 1);
    if (c.threads > 0) {   /* read by libgomp as it loads and by cm_set_threads(0) */
        char n[16];
        snprintf(n, sizeof n, "%d", c.threads);
        setenv("OMP_NUM_THREADS", n, 1);
    }
    setenv(WAIT_NOTE_VAR, wait_note, 1);   /* so the new process does not decide again */
    if (count_ours) setenv(COUNT_OURS_VAR, "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with what libgomp and OpenBLAS chose */
    unsetenv(WAIT_NOTE_VAR);
    if (c.var) {
        unsetenv(c.var);
        snprintf(wait_note, sizeof wait_note, "OpenMP threads spin while they wait (libgomp's default): the "
                 "re-exec that would set %s=%s failed%s", c.var, c.value,
                 c.threads > 0 ? "; the thread count where none is given is OMP_NUM_THREADS's still" : "");
    }
    if (blas) unsetenv("OPENBLAS_CORETYPE");
    unsetenv(COUNT_OURS_VAR);
}

int cm_cores_free(void)
{
    return cores_left(other_running(), (int)sysconf(_SC_NPROCESSORS_ONLN));
}

bool cm_thread_count_ours(void) { return count_ours; }

const char *cm_wait_note(void) { return wait_note; }
