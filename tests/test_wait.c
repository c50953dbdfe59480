/* test_wait.c: OpenMP's waiting policy (threads.h, cm_select_env): the rule's choice from the
 * tasks running beside it, and that the cmlab command runs with it. The independent witness is libgomp
 * itself: OMP_DISPLAY_ENV=verbose makes it print, as it loads, the wait policy and spin count it
 * read from the environment; the last such block on stderr is the process that runs the command.
 * (Whether a policy is faster is the bench's question, not this test's.)
 *
 * Usage: test_wait BUILD/cmlab */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/threads.h"
#include "common.h"
#include "fixture.h"

/* The rule alone: which variable and value, for other running tasks around cores - threads. */
static void test_rule(void)
{
    CmWaitChoice c;
    CHECK(cm_wait_rule("busy", 1, 2, 2, false, &c) == 0 && c.var && strcmp(c.var, "OMP_WAIT_POLICY") == 0 &&
              strcmp(c.value, "passive") == 0 && strstr(c.why, "beside cmlab at start 1,"),
          "one other task, 2 threads on 2 cores: want OMP_WAIT_POLICY=passive, got %s=%s (%s)", c.var ? c.var : "-",
          c.value, c.why);
    CHECK(cm_wait_rule("busy", 0, 2, 2, false, &c) == 0 && !c.var && strstr(c.why, "spin"),
          "nothing else running, 2 threads on 2 cores: want libgomp's default, got %s=%s", c.var ? c.var : "-", c.value);
    CHECK(cm_wait_rule("busy", 1, 2, 1, false, &c) == 0 && !c.var, "one other task, 1 thread on 2 cores: want the default, got %s",
          c.var ? c.var : "-");
    CHECK(cm_wait_rule("busy", 2, 4, 2, false, &c) == 0 && !c.var, "two others, 2 threads on 4 cores: want the default");
    CHECK(cm_wait_rule("busy", 3, 4, 2, false, &c) == 0 && c.var, "three others, 2 threads on 4 cores: want passive");
    CHECK(cm_wait_rule("passive", 0, 2, 2, false, &c) == 0 && c.var && strcmp(c.value, "passive") == 0, "rule passive, idle");
    CHECK(cm_wait_rule("spin", 9, 2, 2, false, &c) == 0 && !c.var, "rule spin beside 9 tasks: want no variable");
    CHECK(cm_wait_rule("spincount=20000", 0, 2, 2, false, &c) == 0 && c.var && strcmp(c.var, "GOMP_SPINCOUNT") == 0 &&
              strcmp(c.value, "20000") == 0,
          "rule spincount=20000: got %s=%s", c.var ? c.var : "-", c.value);
    /* A count left to cmlab (auto_count) drops to the cores the others leave, only when passive. */
    const struct { double others; int cores, wanted; bool auto_count; int threads; } counts[] = {
        {1, 2, 2, true, 1}, {1, 2, 2, false, 0}, {0, 2, 2, true, 0}, {3, 2, 2, true, 1},
        {1, 4, 4, true, 3}, {3, 4, 4, true, 1}, {6, 4, 4, true, 1},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(counts); i++) {
        CHECK(cm_wait_rule("busy", counts[i].others, counts[i].cores, counts[i].wanted, counts[i].auto_count, &c) == 0 &&
                  c.threads == counts[i].threads,
              "%g others, %d cores, %d threads%s: want %d threads (0: as asked), got %d (%s)", counts[i].others,
              counts[i].cores, counts[i].wanted, counts[i].auto_count ? " (no count given)" : "", counts[i].threads,
              c.threads, c.why);
        if (c.threads > 0) {
            char want[48];
            snprintf(want, sizeof want, "OMP_NUM_THREADS=%d", c.threads);
            CHECK(strstr(c.why, want), "the note must name %s: %s", want, c.why);
        }
    }
    CHECK(cm_wait_rule("passive", 1, 2, 2, true, &c) == 0 && c.threads == 0, "rule passive never drops threads");
    const char *bad[] = {"Busy", "load", "spincount=", "spincount=-1", "spincount=10k", ""};
    for (size_t i = 0; i < CM_ARRAY_LEN(bad); i++)
        CHECK(cm_wait_rule(bad[i], 0, 2, 2, false, &c) == -1 && strstr(cm_errmsg(), "CMLAB_WAIT_RULE"),
              "rule '%s': want a refusal naming CMLAB_WAIT_RULE, got %s", bad[i], cm_errmsg());
}

typedef struct Seen {
    int code;
    char policy[32], spin[32], threads[32];   /* libgomp's last display: OMP_WAIT_POLICY, GOMP_SPINCOUNT, OMP_NUM_THREADS */
    char *err;                   /* all of stderr */
} Seen;

/* The value of the last "  NAME = 'VALUE'" line in text. */
static void last_value(const char *text, const char *name, char *out, size_t len)
{
    char key[64];
    snprintf(key, sizeof key, "  %s = '", name);
    out[0] = '\0';
    for (const char *p = text; (p = strstr(p, key)); p++) {
        const char *v = p + strlen(key), *end = strchr(v, '\'');
        if (end) snprintf(out, len, "%.*s", (int)(end - v), v);
    }
}

/* `cmlab COMMAND --help` without the caller's policy variables and OPENBLAS_CORETYPE (a slow one
 * adds its own line on stderr), with OMP_DISPLAY_ENV=verbose and the assignments env[0..]
 * (NULL-terminated). */
static Seen run(const char *cmlab, const char *command, const char *const *env)
{
    char out[64], err[64];
    snprintf(out, sizeof out, "/tmp/test_wait_%d.out", (int)getpid());
    snprintf(err, sizeof err, "/tmp/test_wait_%d.err", (int)getpid());
    const char *argv[26] = {"/usr/bin/env", "-u", "OMP_WAIT_POLICY", "-u", "GOMP_SPINCOUNT", "-u", "CMLAB_WAIT_RULE",
                            "-u", "OPENBLAS_CORETYPE", "-u", "OMP_NUM_THREADS", "OMP_DISPLAY_ENV=verbose"};
    int n = 12;
    for (; *env; env++) argv[n++] = *env;
    argv[n++] = cmlab;
    argv[n++] = command;
    argv[n++] = "--help";
    argv[n] = NULL;
    Seen s = {0};
    s.code = fixture_run((char *const *)argv, out, err, NULL);
    s.err = fixture_read_file(err, NULL);
    if (!s.err) s.err = strdup("");
    last_value(s.err, "OMP_WAIT_POLICY", s.policy, sizeof s.policy);
    last_value(s.err, "GOMP_SPINCOUNT", s.spin, sizeof s.spin);
    last_value(s.err, "OMP_NUM_THREADS", s.threads, sizeof s.threads);
    remove(out);
    remove(err);
    return s;
}

/* The command runs with what the rule chose (libgomp's last display) and says so once. */
static void test_applied(const char *cmlab)
{
    static const struct {
        const char *env[3];
        const char *policy, *spin;   /* libgomp's display: passive is spin count 0 */
        const char *note;            /* in cmlab's line on stderr */
    } cases[] = {
        {{"CMLAB_WAIT_RULE=passive", NULL}, "PASSIVE", "0", "OMP_WAIT_POLICY=passive"},
        {{"CMLAB_WAIT_RULE=spincount=1000", NULL}, "PASSIVE", "1000", "GOMP_SPINCOUNT=1000"},
        {{"CMLAB_WAIT_RULE=spin", NULL}, "PASSIVE", "300000", "libgomp's default"},
        /* the caller's own policy stands, whatever the rule */
        {{"CMLAB_WAIT_RULE=passive", "OMP_WAIT_POLICY=active", NULL}, "ACTIVE", NULL, "OMP_WAIT_POLICY=active"},
        {{"CMLAB_WAIT_RULE=passive", "GOMP_SPINCOUNT=5000", NULL}, "PASSIVE", "5000", "GOMP_SPINCOUNT=5000"},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        const char *commands[] = {"train", "sample", "eval"};
        for (size_t k = 0; k < CM_ARRAY_LEN(commands); k++) {
            Seen s = run(cmlab, commands[k], cases[i].env);
            const char *line = strstr(s.err, "cmlab: ");
            CHECK(s.code == CM_EXIT_OK && strcmp(s.policy, cases[i].policy) == 0 &&
                      (!cases[i].spin || strcmp(s.spin, cases[i].spin) == 0),
                  "%s %s: exit %d, libgomp ran with OMP_WAIT_POLICY %s, GOMP_SPINCOUNT %s; want %s, %s", cases[i].env[0],
                  cases[i].env[1] ? cases[i].env[1] : "", s.code, s.policy, s.spin, cases[i].policy,
                  cases[i].spin ? cases[i].spin : "any");
            CHECK(line && strstr(line, cases[i].note) && !strstr(line + 1, "cmlab: "),
                  "cmlab %s with %s: want one line naming %s on stderr, got:\n%s", commands[k], cases[i].env[0],
                  cases[i].note, line ? line : s.err);
            free(s.err);
        }
    }
    /* Commands other than train, sample and eval do not print it. */
    Seen s = run(cmlab, "info", (const char *[]){"CMLAB_WAIT_RULE=passive", NULL});
    CHECK(s.code == CM_EXIT_OK && !strstr(s.err, "cmlab: ") && strcmp(s.spin, "0") == 0,
          "cmlab info: exit %d, spin count %s (want 0: the rule applies to every command), stderr:\n%s", s.code, s.spin,
          s.err);
    free(s.err);
    /* A bad rule is an input error naming the variable. */
    s = run(cmlab, "sample", (const char *[]){"CMLAB_WAIT_RULE=sometimes", NULL});
    CHECK(s.code == CM_EXIT_INPUT && strstr(s.err, "CMLAB_WAIT_RULE=sometimes"),
          "CMLAB_WAIT_RULE=sometimes: exit %d (want %d), stderr:\n%s", s.code, CM_EXIT_INPUT, s.err);
    free(s.err);
}

/* The default rule's measurement: with a process spinning beside it (in every reading of
 * procs_running) and OMP_NUM_THREADS = every core, a command must run passive on every core,
 * whatever else the machine runs; without OMP_NUM_THREADS, passive on fewer; and `cmlab info`
 * must not measure. (The idle case, spinning, depends on what else
 * runs beside the suite: the rule alone covers it above.) */
static void test_busy(const char *cmlab)
{
    pid_t spinner = fork();
    CM_ASSERT(spinner >= 0, "fork failed");
    if (spinner == 0)
        for (volatile unsigned long i = 0;; i++) {}
    char threads[48];
    snprintf(threads, sizeof threads, "OMP_NUM_THREADS=%ld", sysconf(_SC_NPROCESSORS_ONLN));
    Seen s = run(cmlab, "sample", (const char *[]){threads, NULL});
    /* No count given: the rule also leaves the spinner its core (OMP_NUM_THREADS < cores, as libgomp
     * read it). One core has nothing to leave. */
    Seen left = run(cmlab, "sample", (const char *[]){NULL});
    /* `cmlab info` computes nothing: the rule takes no readings (25-50 ms) and counts no task
     * beside it, so it keeps libgomp's default even here. */
    Seen info = run(cmlab, "info", (const char *[]){threads, NULL});
    kill(spinner, SIGKILL);
    waitpid(spinner, NULL, 0);
    const char *line = strstr(s.err, "cmlab: ");
    CHECK(s.code == CM_EXIT_OK && strcmp(s.spin, "0") == 0 && line && strstr(line, "rule busy"),
          "cmlab sample beside a spinning process, %s: exit %d, spin count %s (want 0: passive), stderr:\n%s", threads,
          s.code, s.spin, s.err);
    long cores = sysconf(_SC_NPROCESSORS_ONLN), got = atol(left.threads);
    CHECK(s.code == CM_EXIT_OK && atol(s.threads) == cores, "cmlab sample with %s beside a spinning process ran %s threads",
          threads, s.threads);
    CHECK(left.code == CM_EXIT_OK && strcmp(left.spin, "0") == 0 && got >= 1 && (cores == 1 || got < cores) &&
              strstr(left.err, "where no count is given"),
          "cmlab sample beside a spinning process, no OMP_NUM_THREADS: exit %d, spin count %s, OMP_NUM_THREADS '%s' "
          "(want passive and 1 to %ld threads), stderr:\n%s", left.code, left.spin, left.threads, cores - 1, left.err);
    free(left.err);
    CHECK(info.code == CM_EXIT_OK && strcmp(info.spin, "0") != 0,
          "cmlab info beside a spinning process: exit %d, spin count %s (want libgomp's default: no readings)",
          info.code, info.spin);
    free(s.err);
    free(info.err);
}

/* A training run whose thread count is left to the rule follows the load: a process starts
 * spinning a second after the run has, and the run's count must end below the cores (its last
 * "N threads -> M" line on stderr, else the count it started with), whatever else the machine
 * runs. (The other direction, back up once a competitor stops, needs an idle machine: checked by
 * hand, README.) The trainer reads the load every CMLAB_TEST_FOLLOW_SECONDS here (a minute
 * otherwise). */
#define FOLLOW_DIR "wait_follow_runs"   /* in the build directory, as the other tests' runs */
static void test_follow(const char *cmlab)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 2) return;   /* one core: nothing to leave */
    CM_ASSERT(system("rm -rf " FOLLOW_DIR " && mkdir -p " FOLLOW_DIR "/data") == 0, "cannot make " FOLLOW_DIR);
    fixture_write_rectangles(FOLLOW_DIR "/data", 64, 8);
    FILE *f = fopen(FOLLOW_DIR "/follow.ini", "w");
    fprintf(f, "[experiment]\nname = follow\nmethod = ct\nseed = 1\nout_dir = " FOLLOW_DIR "/runs\n"
               "[data]\ndataset = folder\npath = " FOLLOW_DIR "/data\n"
               "[model]\nchannels = 8\nchannel_mult = 1\nnum_blocks = 1\nmid_attn = false\n"
               "[train]\niterations = 1000000\ntime_limit = 4\nbatch_size = 8\ncheckpoint_every = 0\n"
               "sample_every = 0\nlog_every = 1000\nthreads = 0\n");
    fclose(f);
    pid_t spinner = fork();
    CM_ASSERT(spinner >= 0, "fork failed");
    if (spinner == 0) {   /* idle for a second, then spin until killed */
        usleep(1000000);
        for (volatile unsigned long i = 0;; i++) {}
    }
    char *argv[] = {"/usr/bin/env", "-u", "OMP_NUM_THREADS", "-u", "OMP_WAIT_POLICY", "-u", "GOMP_SPINCOUNT",
                    "-u", "CMLAB_WAIT_RULE", "CMLAB_TEST_FOLLOW_SECONDS=0.3", (char *)cmlab, "train",
                    FOLLOW_DIR "/follow.ini", NULL};
    int code = fixture_run(argv, FOLLOW_DIR "/out.txt", FOLLOW_DIR "/err.txt", NULL);
    kill(spinner, SIGKILL);
    waitpid(spinner, NULL, 0);
    char *out = fixture_read_file(FOLLOW_DIR "/out.txt", NULL), *err = fixture_read_file(FOLLOW_DIR "/err.txt", NULL);
    int start = 0, last = 0;
    const char *p = out ? strstr(out, " threads") : NULL;
    while (p && p > out && p[-1] >= '0' && p[-1] <= '9') p--;
    if (p) start = atoi(p);
    last = start;
    for (const char *q = err; q && (q = strstr(q, " -> ")); q += 4) last = atoi(q + 4);
    CHECK(code == CM_EXIT_OK && start >= 1 && last >= 1 && last < cores,
          "a training run with threads = 0 beside a process that starts spinning 1 s in: exit %d, started on %d "
          "threads, ended on %d (want fewer than the %ld cores); stderr:\n%s", code, start, last, cores,
          err ? err : "");
    printf("  follow: started on %d threads, ended on %d of %ld cores\n", start, last, cores);
    free(out);
    free(err);
    if (system("rm -rf " FOLLOW_DIR) != 0) fprintf(stderr, "could not remove " FOLLOW_DIR "\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_wait BUILD/cmlab\n");
        return CM_EXIT_INPUT;
    }
    test_rule();
    test_applied(argv[1]);
    test_busy(argv[1]);
    test_follow(argv[1]);
    return test_summary("wait");
}
