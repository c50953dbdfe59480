/* test_faults: injected faults on real `cmlab train` processes (argv[1] = the cmlab binary).
 *
 *   SIGKILL   one run killed at 24+ random moments (whatever it was doing: starting, training,
 *             saving a checkpoint, writing metrics), resumed with --resume after each: it
 *             finishes; metrics.jsonl holds every step once, in order; the final weights, target,
 *             EMAs and Adam state equal an uninterrupted run's bit for bit
 *   vanished  the run directory removed while the run trains: the next save stops the run with
 *             exit 1, naming the path (it once made the directory again and trained on, its
 *             metrics going to the deleted file)
 *
 *   read-only the checkpoint directory made immutable mid-run: exit 1 at the next save, naming the
 *             file, the earlier checkpoint intact
 *   no data   the data files removed mid-epoch: the run (which read them whole at the start) finishes
 *   guard     the divergence guard's actions on a spike injected at one step (test hook
 *             CMLAB_TEST_OUTLIER), and the jump check after a resume
 *
 * The run is a tiny CT with an EMA target and the original curriculum (N(k) and mu(k) change with
 * the step), so a resume that restored the schedule wrongly would show in the bits. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hdf5.h>

#include "common.h"
#include "fixture.h"
#include "io/checkpoint.h"

static const char *cmlab;

enum { STEPS = 150, KILLS = 24, MAX_TRIES = 60 };

static const char *EXP =
    "[experiment]\nmethod = ct\nseed = 11\nout_dir = fault_runs\n"
    "[data]\ndataset = fashion-mnist\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\ndropout = 0.1\n"
    "[train]\niterations = 150\nbatch_size = 8\nlr = 0.001\nema = 0.99\nlog_every = 1\ncheckpoint_every = 5\n"
    "keep_checkpoints = 2\nsample_every = 0\nthreads = 2\n"
    "[ct]\ncurriculum = original\ns0 = 2\ns1 = 10\ntarget_mu = 0.9\n";

static pid_t spawn(char *const *args, const char *log)
{
    fflush(stdout);
    pid_t pid = fork();
    CM_ASSERT(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        if (!freopen(log, "a", stdout) || !freopen(log, "a", stderr)) _exit(126);
        execv(cmlab, args);
        _exit(127);
    }
    return pid;
}

static int wait_status(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return st;
}

static int run(char *const *args, const char *log) { return wait_status(spawn(args, log)); }

/* The status of pid once it exits, or -1 (after killing it) when it runs on for a minute. */
static int wait_or_kill(pid_t pid)
{
    int st;
    for (int i = 0; i < 1200; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid) return st;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    wait_status(pid);
    return -1;
}

/* The steps of metrics.jsonl in order; their count, or -1 if the file is missing. */
static int metric_steps(const char *path, long *steps, int max)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < max) {
        const char *s = strstr(line, "\"step\":");
        steps[n++] = s ? atol(s + 7) : -1;
    }
    fclose(f);
    return n;
}

typedef struct Paths { char names[64][160]; int n; } Paths;

static herr_t collect(hid_t o, const char *name, const H5O_info_t *info, void *data)
{
    (void)o;
    Paths *p = data;
    if (info->type == H5O_TYPE_DATASET && p->n < 64) snprintf(p->names[p->n++], sizeof p->names[0], "/%s", name);
    return 0;
}

/* Every dataset of two checkpoints (weights of every set, Adam moments) bit for bit, and the
 * step and schedule attributes. Returns the number of datasets compared, -1 on a difference. */
static int same_state(const char *a, const char *b)
{
    Fixture fa, fb;
    fixture_open(&fa, a);
    fixture_open(&fb, b);
    static Paths pa, pb;
    pa.n = pb.n = 0;
    H5Ovisit(fa.file, H5_INDEX_NAME, H5_ITER_INC, collect, &pa);
    H5Ovisit(fb.file, H5_INDEX_NAME, H5_ITER_INC, collect, &pb);
    int rc = pa.n == pb.n && pa.n > 0 ? pa.n : -1;
    if (rc < 0) printf("  %s has %d datasets, %s %d\n", a, pa.n, b, pb.n);
    for (int i = 0; i < pa.n && rc > 0; i++) {
        int nda, ndb, sa[4] = {1, 1, 1, 1}, sb[4] = {1, 1, 1, 1};
        float *x = fixture_read(&fa, pa.names[i], &nda, sa), *y = fixture_read(&fb, pa.names[i], &ndb, sb);
        size_t n = (size_t)sa[0] * sa[1] * sa[2] * sa[3];
        if (nda != ndb || memcmp(sa, sb, sizeof sa) || memcmp(x, y, n * sizeof(float))) {
            printf("  %s differs\n", pa.names[i]);
            rc = -1;
        }
        free(x);
        free(y);
    }
    const char *attrs[] = {"step", "sched_N", "data_epoch", "data_index"};
    for (size_t i = 0; i < CM_ARRAY_LEN(attrs) && rc > 0; i++)
        if (fixture_attr_int(&fa, "/", attrs[i], -1) != fixture_attr_int(&fb, "/", attrs[i], -2)) {
            printf("  attribute %s differs\n", attrs[i]);
            rc = -1;
        }
    if (rc > 0 && fixture_attr_double(&fa, "/", "sched_mu", -1) != fixture_attr_double(&fb, "/", "sched_mu", -2))
        rc = -1;
    fixture_close(&fa);
    fixture_close(&fb);
    return rc;
}

static void test_sigkill(void)
{
    char *full[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", "experiment.name=whole", NULL};
    double t0 = cm_now();
    CHECK(run(full, "fault_runs/whole.log") == 0, "the uninterrupted run failed (fault_runs/whole.log)");
    /* Kill moments scale with how long the whole run takes here (a loaded or sanitized machine is
     * several times slower), so that the kills spread over the run rather than its start-up. */
    const double whole = cm_now() - t0;

    char *again[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", "experiment.name=killed", "--resume",
                     NULL};
    uint32_t seed = (uint32_t)time(NULL);
    printf("kill moments from seed %u, up to %.1f s (the whole run took %.1f s)\n", seed, whole / 16, whole);
    /* Kill until KILLS kills have landed on a running process (a kill can also come after a
     * resume found nothing left to do), at most MAX_TRIES times. */
    int landed = 0, tries = 0;
    long reached[MAX_TRIES];
    for (; tries < MAX_TRIES && landed < KILLS; tries++) {
        pid_t pid = spawn(again, "fault_runs/killed.log");
        seed = seed * 1664525u + 1013904223u;
        /* 0.05 s to a sixteenth of the whole run: from before the first step to many steps in.
         * KILLS tries then add up to about 3/4 of the run, so the kills land before it finishes
         * (with an eighth they added up to 1.5 runs, and one sanitized CI run finished after 18). */
        useconds_t delay = 50000 + (useconds_t)((seed >> 8) / 16777216.0 * whole / 16 * 1e6);
        usleep(delay);
        kill(pid, SIGKILL);
        int st = wait_status(pid);
        landed += WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        long steps[4 * STEPS];
        int n = metric_steps("fault_runs/killed/metrics.jsonl", steps, 4 * STEPS);
        reached[tries] = n > 0 ? steps[n - 1] : 0;
        if (reached[tries] == STEPS) break;
    }
    int st = run(again, "fault_runs/killed.log");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the last resume did not finish (status %#x; fault_runs/killed.log)",
          st);
    printf("SIGKILL: %d kills landed on the running process; the last logged step after each try:", landed);
    for (int k = 0; k < tries && k < MAX_TRIES; k++) printf(" %ld", reached[k]);
    printf("\n");
    CHECK(landed >= 20, "only %d kills landed mid-run (the run finished first)", landed);

    long steps[4 * STEPS];
    int n = metric_steps("fault_runs/killed/metrics.jsonl", steps, 4 * STEPS);
    bool contiguous = n == STEPS;
    for (int i = 0; i < n && contiguous; i++) contiguous = steps[i] == i + 1;
    CHECK(contiguous, "metrics.jsonl after %d kills has %d lines, not steps 1..%d once each", landed, n, STEPS);
    char a[128], b[128];
    snprintf(a, sizeof a, "fault_runs/whole/ckpt/step_%08d.h5", STEPS);
    snprintf(b, sizeof b, "fault_runs/killed/ckpt/step_%08d.h5", STEPS);
    int compared = access(b, F_OK) == 0 ? same_state(a, b) : -1;
    CHECK(compared > 0, "after %d kills and resumes, the step-%d state differs from an uninterrupted run's", landed,
          STEPS);
    if (compared > 0)
        printf("after %d kills: %d datasets (online, target, EMA, Adam m and v) bit-identical to the uninterrupted "
               "run, metrics steps 1..%d once each\n", landed, compared, STEPS);
}

/* The run directory removed under a running process: the next checkpoint cannot be written; the
 * process says so and exits 1. */
static void test_vanished_dir(void)
{
    char *args[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", "experiment.name=gone", "--set",
                    "train.iterations=100000", "--set", "train.checkpoint_every=20", NULL};
    pid_t pid = spawn(args, "fault_runs/gone.log");
    for (int i = 0; i < 400 && access("fault_runs/gone/ckpt/step_00000020.h5", F_OK) != 0; i++) usleep(50000);
    CHECK(system("rm -rf fault_runs/gone") == 0, "cannot remove the run directory");
    /* It stops at the next save; a run that does not stop within a minute is killed and fails. */
    int st = wait_or_kill(pid);
    char *log = fixture_read_file("fault_runs/gone.log", NULL);
    const char *msg = log ? strstr(log, "cmlab train: fault_runs/gone") : NULL;
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1 && msg && strstr(msg, "run directory is gone") &&
              access("fault_runs/gone", F_OK) != 0,
          "a vanished run directory: status %#x (the directory %s), log: %s", st,
          access("fault_runs/gone", F_OK) ? "stayed gone" : "was made again", log ? log : "(none)");
    if (msg) printf("vanished run directory: exit 1: %.*s\n", (int)strcspn(msg, "\n"), msg);
    free(log);
}

/* The checkpoint directory made read-only while the run trains (chattr +i, which stops root too;
 * skipped where the filesystem has no immutable attribute): the next save fails naming the path,
 * the run exits 1, and the checkpoint before it still verifies. */
static void test_readonly_dir(void)
{
    char *args[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", "experiment.name=ro", "--set",
                    "train.iterations=100000", "--set", "train.checkpoint_every=20", NULL};
    pid_t pid = spawn(args, "fault_runs/ro.log");
    for (int i = 0; i < 600 && access("fault_runs/ro/ckpt/step_00000020.h5", F_OK) != 0; i++) usleep(50000);
    if (system("chattr +i fault_runs/ro/ckpt 2>/dev/null") != 0) {
        kill(pid, SIGKILL);
        wait_status(pid);
        printf("read-only run directory: skipped (no chattr +i on this filesystem)\n");
        return;
    }
    int st = wait_or_kill(pid);
    CHECK(system("chattr -i fault_runs/ro/ckpt") == 0, "cannot clear the immutable attribute");
    char *log = fixture_read_file("fault_runs/ro.log", NULL);
    const char *msg = log ? strstr(log, "cmlab train: fault_runs/ro/ckpt/") : NULL;
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1 && msg && strstr(msg, "earlier checkpoints are untouched"),
          "a read-only checkpoint directory: status %#x, log: %s", st, log ? log : "(none)");
    CHECK(ckpt_verify("fault_runs/ro/ckpt/step_00000020.h5") == 0, "the checkpoint before the read-only save: %s",
          cm_errmsg());
    if (msg) printf("read-only checkpoint directory: exit 1: %.*s\n", (int)strcspn(msg, "\n"), msg);
    free(log);
}

/* The data files removed while the run trains: the training split is read whole before the first
 * step, so the run does not notice; it finishes with its final checkpoint. */
static void test_vanished_data(void)
{
    CM_ASSERT(system("mkdir -p fault_runs/data && cp /usr/share/datasets/fashion-mnist/train-*.gz "
                     "fault_runs/data/") == 0, "cannot copy the data");
    char *args[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", "experiment.name=nodata", "--set",
                    "data.path=fault_runs/data", "--set", "train.iterations=40", NULL};
    pid_t pid = spawn(args, "fault_runs/nodata.log");
    for (int i = 0; i < 600 && access("fault_runs/nodata/ckpt/step_00000005.h5", F_OK) != 0; i++) usleep(50000);
    CHECK(system("rm -rf fault_runs/data") == 0, "cannot remove the data");
    int st = wait_status(pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && access("fault_runs/nodata/ckpt/step_00000040.h5", F_OK) == 0,
          "a run whose data files were removed mid-epoch: status %#x (fault_runs/nodata.log)", st);
    printf("data files removed after step 5: the run finished (status %d) with its step-40 checkpoint\n",
           WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}

/* The divergence guard, with a spike injected through the test hook CMLAB_TEST_OUTLIER (the loss
 * and gradients of one step times 1e4): each train.guard action on a 40-step run with the spike at
 * step 30 (checkpoints every 10, a window of 20), and the check after a resume. */
static int guarded_run(const char *name, const char *guard, const char *iterations, const char *spike, bool resume)
{
    char n[64], g[64], it[64], log[128];
    snprintf(n, sizeof n, "experiment.name=%s", name);
    snprintf(g, sizeof g, "train.guard=%s", guard);
    snprintf(it, sizeof it, "train.iterations=%s", iterations);
    snprintf(log, sizeof log, "fault_runs/%s.log", name);
    char *args[] = {(char *)cmlab, "train", "fault_runs/exp.ini", "--set", n, "--set", g, "--set", it,
                    "--set", "train.checkpoint_every=10", "--set", "train.guard_window=20", "--set",
                    "ct.curriculum=doubling", resume ? "--resume" : NULL, NULL};
    if (spike) setenv("CMLAB_TEST_OUTLIER", spike, 1);
    int st = run(args, log);
    unsetenv("CMLAB_TEST_OUTLIER");
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_guard(void)
{
    static const struct { const char *guard; int exit; long opt_steps; const char *says; } cases[] = {
        {"warn", 0, 40, "train.guard = warn"},
        {"skip", 0, 39, "train.guard = skip"},
        {"rollback", 0, 39, "rolled back to step 20; step 30's batch will be skipped"},
        {"stop", 1, -1, "stopping; the last checkpoint is in fault_runs/guard_stop/ckpt"},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        char name[64], log[128], ckpt[160];
        snprintf(name, sizeof name, "guard_%s", cases[i].guard);
        int rc = guarded_run(name, cases[i].guard, "40", "30:1e4", false);
        snprintf(log, sizeof log, "fault_runs/%s.log", name);
        char *text = fixture_read_file(log, NULL);
        const char *hit = text ? strstr(text, "step 30: outlier: loss") : NULL;
        CHECK(rc == cases[i].exit && hit && strstr(hit, cases[i].says), "train.guard = %s: exit %d, log: %s",
              cases[i].guard, rc, text ? text : "(none)");
        if (hit) printf("train.guard = %s: exit %d: %.*s\n", cases[i].guard, rc, (int)strcspn(hit, "\n"), hit);
        free(text);
        snprintf(ckpt, sizeof ckpt, "fault_runs/%s/ckpt/step_%08d.h5", name, cases[i].opt_steps > 0 ? 40 : 20);
        long steps = access(ckpt, F_OK) == 0 ? fixture_file_attr_int(ckpt, "/optimizer/adam", "step", -1) : -2;
        CHECK(cases[i].opt_steps > 0 ? steps == cases[i].opt_steps : steps == 20,
              "train.guard = %s: %s holds %ld optimiser steps", cases[i].guard, ckpt, steps);
    }
    /* The same run without a spike reports nothing. */
    int rc = guarded_run("guard_quiet", "stop", "40", NULL, false);
    char *text = fixture_read_file("fault_runs/guard_quiet.log", NULL);
    CHECK(rc == 0 && text && !strstr(text, "outlier"), "a run without a spike: exit %d, log: %s", rc,
          text ? text : "(none)");
    free(text);

    /* A resume whose first logged values jump against those logged before the checkpoint is
     * reported; a plain resume is not. */
    rc = guarded_run("guard_resume", "warn", "20", NULL, false);
    rc |= guarded_run("guard_resume", "warn", "30", NULL, true);
    text = fixture_read_file("fault_runs/guard_resume.log", NULL);
    CHECK(rc == 0 && text && !strstr(text, "jump"), "a plain resume: exit %d, log: %s", rc, text ? text : "(none)");
    free(text);
    rc = guarded_run("guard_jump", "warn", "20", NULL, false);
    rc |= guarded_run("guard_jump", "warn", "30", "21:1e4", true);
    text = fixture_read_file("fault_runs/guard_jump.log", NULL);
    const char *hit = text ? strstr(text, "resume: the first logged values after the checkpoint jump") : NULL;
    CHECK(rc == 0 && hit, "a resume whose first values jump: exit %d, log: %s", rc, text ? text : "(none)");
    if (hit) printf("%.*s\n", (int)strcspn(hit, "\n"), hit);
    free(text);
}

int main(int argc, char **argv)
{
    CM_ASSERT(argc == 2, "usage: test_faults CMLAB");
    cmlab = argv[1];
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* A run of this test that died with the immutable attribute set would keep rm from working. */
    if (system("chattr -R -i fault_runs 2>/dev/null") != 0) {}
    CM_ASSERT(system("rm -rf fault_runs && mkdir -p fault_runs") == 0, "cannot make fault_runs");
    FILE *f = fopen("fault_runs/exp.ini", "w");
    CM_ASSERT(f, "cannot write fault_runs/exp.ini");
    fputs(EXP, f);
    fclose(f);
    test_sigkill();
    test_vanished_dir();
    test_readonly_dir();
    test_vanished_data();
    test_guard();
    return test_summary("faults");
}
