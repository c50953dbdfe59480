/* test_mpi.c: data-parallel training over MPI, through `mpirun` (argv[2]) and the `cmlab` binary
 * (argv[1]) on 2 processes of 1 thread each (--oversubscribe: the test machine may have fewer
 * cores). Skipped (exit 77) in a build without MPI or without mpirun. The oracle is the same run
 * in 1 process at the same global batch, which DESIGN.md "Randomness" makes the same computation
 * up to the order of the sums:
 *   - K steps of EDM (batch 5: slices of 2 and 3 samples, so a wrong weighting of the ranks shows),
 *     CT with the iCT switches (dropout on), CD, BCM and AMED (an AMED-Solver predictor with three
 *     heads at N = 3, an AFS step then one that reads the bottleneck: 2 Adam updates per step; the
 *     EDM run is the teacher of CD and AMED): every logged loss and gradient norm, and the online
 *     weights element by element, against 1 process;
 *   - a run checkpointed by 2 processes (world_size = 2 in the file) and resumed by 1 continues
 *     the 1-process loss curve and ends at its weights;
 *   - rank 1 killed mid-run (CMLAB_TEST_RAISE, trainer.c): mpirun exits non-zero within seconds,
 *     naming rank 1, and the newest checkpoint verifies;
 *   - SIGTERM reaching rank 1 only: every rank stops after the same step, rank 0 saves it, exit 0;
 *   - rank 1 cannot read the data (started in a directory without it): exit 2 naming rank 1 and
 *     the file, and no run directory is made.
 *
 * Tolerances. Loss and gradient norm: metrics.jsonl prints 6 significant digits (5e-6 relative),
 * the sums' order adds ~1e-6; 1e-4 relative. Weights: a float32 sum of n terms in another order
 * differs by at most ~n u |terms| (u = 6e-8; n = B H W = 4e3 for a convolution's weight gradient:
 * delta = 1e-3 of the sum of |terms|); an Adam update lr m/(sqrt(v) + eps) changes by at most twice
 * the gradient's relative change, and its size is at most lr (1 - b1) / sqrt(1 - b2) = 3.2 lr
 * (b1 = 0.9, b2 = 0.999); over K steps |dw| <= K lr 3.2 * 2 delta = 6.4e-3 K lr, twice that for
 * AMED's 2 updates per step. The steps move the weights by ~K lr, so the bound still tells a
 * correct split from a wrong one (a wrongly weighted rank changes the gradient's direction by tens
 * of percent).
 */
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"
#include "io/checkpoint.h"

enum { K = 6 };
/* TOL_W for TINY's lr = 0.002 (the header derives both). */
static const double TOL_CURVE = 1e-4, TOL_W = 6.4e-3 * K * 0.002;

static const char *cmlab, *mpirun;

static const char *TINY =
    "[experiment]\nmethod = edm\nseed = 5\nout_dir = mpi_runs\n"
    "[data]\ndataset = fashion-mnist\n"
    "[model]\nchannels = 8\nchannel_mult = 1,2\nnum_blocks = 1\nmid_attn = false\ndropout = 0.1\n"
    "[train]\nbatch_size = 5\nlr = 0.002\nema = 0.9\nlog_every = 1\ncheckpoint_every = 3\n"
    "sample_every = 0\nthreads = 1\nkeep_checkpoints = 0\n"
    "[sample]\nsolver = euler\nnfe = 2\nn = 1\n"
    "[ct]\nloss = pseudo_huber\nsampling = lognormal\nweighting = ict\ncurriculum = doubling\ntarget_mu = 0\n"
    "s0 = 10\ns1 = 40\n"
    "[cd]\nteacher = mpi_runs/edm_p1/ckpt/step_00000006.h5\nteacher_weights = online\nN = 18\n"
    "[amed]\nteacher = mpi_runs/edm_p1/ckpt/step_00000006.h5\nteacher_weights = online\nstudent = amed\n"
    "teacher_solver = heun\nN = 3\nM = 1\nafs = true\nschedule = time_uniform\nrho = 1\nscale_dir = 0.01\n"
    "scale_time = 0.2\n";

/* Runs args (NULL-terminated) with stdout and stderr into out (at most len - 1 bytes); the exit
 * status, or 128 + the signal. *secs: the wall time. */
static int run(char *const *args, char *out, size_t len, double *secs)
{
    fflush(stdout);
    FILE *tmp = tmpfile();
    double t0 = cm_now();
    pid_t pid = fork();
    if (pid == 0) {
        /* Under ./run.sh sanitize: Open MPI's components leak at MPI_Finalize, from plugins it has
         * unloaded by then, so LeakSanitizer can neither name nor suppress those stacks. The ranks
         * run with leak checking off (every other ASan and UBSan check stays on); the trainer's
         * own allocations are leak-checked by the single-process runs, here and in test_train. */
        const char *asan = getenv("ASAN_OPTIONS");
        char opts[1024];
        if (asan && args[0] == mpirun && snprintf(opts, sizeof opts, "%s:detect_leaks=0", asan) < (int)sizeof opts)
            setenv("ASAN_OPTIONS", opts, 1);
        dup2(fileno(tmp), 1);
        dup2(fileno(tmp), 2);
        execv(args[0], args);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    if (secs) *secs = cm_now() - t0;
    rewind(tmp);
    size_t n = fread(out, 1, len - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char output[1 << 16];

/* `cmlab train mpi_runs/tiny.ini` for method, as run `name` to `iters` steps, in np processes
 * (np = 0: without mpirun); extra: one more --set, or NULL. The exit status. */
static int train(int np, const char *method, const char *name, int iters, const char *extra, bool resume)
{
    char m[64], n[96], it[64], p[16];
    snprintf(m, sizeof m, "experiment.method=%s", method);
    snprintf(n, sizeof n, "experiment.name=%s", name);
    snprintf(it, sizeof it, "train.iterations=%d", iters);
    snprintf(p, sizeof p, "%d", np);
    char *args[32];
    int a = 0;
    if (np > 0) {
        const char *pre[] = {mpirun, "--oversubscribe", "-np", p, "-x", "OMP_NUM_THREADS", "-x", "CMLAB_TEST_RAISE"};
        for (size_t i = 0; i < CM_ARRAY_LEN(pre); i++) args[a++] = (char *)pre[i];
    }
    const char *rest[] = {cmlab, "train", "mpi_runs/tiny.ini", "--set", m, "--set", n, "--set", it};
    for (size_t i = 0; i < CM_ARRAY_LEN(rest); i++) args[a++] = (char *)rest[i];
    if (extra) {
        args[a++] = "--set";
        args[a++] = (char *)extra;
    }
    if (resume) args[a++] = "--resume";
    args[a] = NULL;
    int rc = run(args, output, sizeof output, NULL);
    if (rc != 0) printf("%s (%d processes) exited %d:\n%s\n", name, np, rc, output);
    return rc;
}

/* The (loss, grad_norm) of each step of a run's metrics.jsonl, step 1 first; the count. */
static int curve(const char *name, double loss[][2], int max)
{
    char path[256], line[4096];
    snprintf(path, sizeof path, "mpi_runs/%s/metrics.jsonl", name);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"step\": "), *l = strstr(line, "\"loss\": "), *g = strstr(line, "\"grad_norm\": ");
        int step = s ? atoi(s + 8) : 0;
        if (!l || !g || step < 1 || step > max) continue;
        loss[step - 1][0] = atof(l + 8);
        loss[step - 1][1] = atof(g + 13);
        n = CM_MAX(n, step);
    }
    if (f) fclose(f);
    return n;
}

/* The lines of a run's metrics.jsonl with a reduce_share; -1 when a share is outside [0, 1]. */
static int reduce_shares(const char *name)
{
    char path[256], line[4096];
    snprintf(path, sizeof path, "mpi_runs/%s/metrics.jsonl", name);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f)) {
        const char *r = strstr(line, "\"reduce_share\": ");
        if (!r) continue;
        double share = atof(r + 16);
        n = n < 0 || !(share >= 0 && share <= 1) ? -1 : n + 1;
    }
    if (f) fclose(f);
    return n;
}

/* The online weights of a checkpoint, flattened in the file's name order; the count. */
static float *weights(const char *path, size_t *count)
{
    Fixture f;
    fixture_open(&f, path);
    char **names;
    int n = fixture_list(&f, "/weights/online", &names);
    float *all = NULL;
    *count = 0;
    for (int i = 0; i < n; i++) {
        char ds[256];
        int nd, shape[4];
        snprintf(ds, sizeof ds, "/weights/online/%s", names[i]);
        float *x = fixture_read(&f, ds, &nd, shape);
        size_t k = 1;
        for (int d = 0; d < nd; d++) k *= (size_t)shape[d];
        all = realloc(all, (*count + k) * sizeof(float));
        memcpy(all + *count, x, k * sizeof(float));
        *count += k;
        free(x);
        free(names[i]);
    }
    free(names);
    fixture_close(&f);
    return all;
}

static double max_abs_diff(const char *a, const char *b)
{
    size_t na, nb;
    float *x = weights(a, &na), *y = weights(b, &nb);
    double d = na == nb ? 0 : INFINITY;
    for (size_t i = 0; i < na && na == nb; i++) d = fmax(d, fabs((double)x[i] - y[i]));
    free(x);
    free(y);
    return d;
}

/* Steps from..to of two runs' curves: the worst relative difference of loss and gradient norm. */
static double curve_diff(const char *a, const char *b, int from, int to)
{
    double ca[K][2], cb[K][2];
    if (curve(a, ca, K) < to || curve(b, cb, K) < to) return INFINITY;
    double d = 0;
    for (int s = from - 1; s < to; s++)
        for (int j = 0; j < 2; j++) d = fmax(d, fabs(ca[s][j] - cb[s][j]) / fmax(fabs(ca[s][j]), 1e-12));
    return d;
}

/* K steps in 1 and in 2 processes; `updates` optimiser steps per training step (the weights'
 * tolerance grows with them). */
static void test_same(const char *method, const char *extra, int updates)
{
    const double tol_w = TOL_W * updates;
    char p1[64], p2[64], c1[128], c2[128], c0[128];
    snprintf(p1, sizeof p1, "%s_p1", method);
    snprintf(p2, sizeof p2, "%s_p2", method);
    int r1 = train(0, method, p1, K, extra, false), r2 = train(2, method, p2, K, extra, false);
    CHECK(r1 == 0 && r2 == 0, "%s: a run failed (1 process: %d, 2 processes: %d)", method, r1, r2);
    if (r1 || r2) return;
    /* The 2-process run reports the reduction's share of its time (output holds its output). */
    CHECK(strstr(output, "2 processes: ") && strstr(output, "in the gradient reduction"),
          "%s: 2 processes: no reduction time in the final line:\n%s", method, output);
    int s1 = reduce_shares(p1), s2 = reduce_shares(p2);
    CHECK(s1 == 0 && s2 >= K, "%s: reduce_share in metrics.jsonl: %d lines with 1 process (want 0), %d with 2 "
          "(want %d, each in [0, 1])", method, s1, s2, K);
    snprintf(c0, sizeof c0, "mpi_runs/%s/ckpt/step_00000003.h5", p1);
    snprintf(c1, sizeof c1, "mpi_runs/%s/ckpt/step_%08d.h5", p1, K);
    snprintf(c2, sizeof c2, "mpi_runs/%s/ckpt/step_%08d.h5", p2, K);
    double dw = max_abs_diff(c1, c2), dc = curve_diff(p1, p2, 1, K), moved = max_abs_diff(c0, c1);
    CHECK(dc <= TOL_CURVE, "%s: loss or gradient norm of 2 processes differs from 1 process by %.3g (relative) > %g",
          method, dc, TOL_CURVE);
    CHECK(dw <= tol_w, "%s: after %d steps the weights of 2 processes differ from 1 process's by %.3g > %.3g",
          method, K, dw, tol_w);
    CHECK(moved > 10 * tol_w, "%s: steps 4..%d moved the weights by only %.3g: the tolerance %.3g cannot tell",
          method, K, moved, tol_w);
    printf("%s: %d steps, 2 processes vs 1: weights max |diff| %.3g (tolerance %.3g; steps 4-%d moved them %.3g), "
           "loss and gradient norm max relative diff %.3g\n", method, K, dw, tol_w, K, moved, dc);
}

/* 3 steps in 2 processes, resumed to K in 1, against edm_p1 (K steps in 1 process). */
static void test_resume(void)
{
    int r1 = train(2, "edm", "resume", 3, NULL, false);
    long w = r1 == 0 ? fixture_file_attr_int("mpi_runs/resume/ckpt/step_00000003.h5", "/", "world_size", -1) : -1;
    int r2 = r1 ? -1 : train(0, "edm", "resume", K, NULL, true);
    CHECK(r1 == 0 && r2 == 0, "resume 2 -> 1: a run failed (%d, %d)", r1, r2);
    if (r1 || r2) return;
    CHECK(w == 2, "the checkpoint of 2 processes records world_size %ld", w);
    CHECK(strstr(output, "written by 2 processes, continuing with 1") != NULL,
          "the resumed run does not say that the checkpoint came from 2 processes:\n%s", output);
    char c[128];
    snprintf(c, sizeof c, "mpi_runs/resume/ckpt/step_%08d.h5", K);
    double dw = max_abs_diff("mpi_runs/edm_p1/ckpt/step_00000006.h5", c), dc = curve_diff("edm_p1", "resume", 1, K);
    CHECK(dc <= TOL_CURVE && dw <= TOL_W, "2 processes to step 3, then 1 to %d: curve differs by %.3g, weights by "
          "%.3g from 1 process all along", K, dc, dw);
    printf("resume: 3 steps in 2 processes (world_size %ld) + %d in 1 process: curve max relative diff %.3g, "
           "weights max |diff| %.3g\n", w, K - 3, dc, dw);
}

/* Rank 1 raises SIGKILL before step 8 of 100: the job ends promptly, naming it. */
static void test_kill(void)
{
    setenv("CMLAB_TEST_RAISE", "1:8:9", 1);
    double t0 = cm_now();
    int rc = train(2, "edm", "kill", 100, NULL, false);
    double secs = cm_now() - t0;
    unsetenv("CMLAB_TEST_RAISE");
    CHECK(rc != 0 && strstr(output, "rank 1") != NULL, "killing rank 1: exit %d, output:\n%s", rc, output);
    CHECK(secs < 30, "the job took %.0f s to end after rank 1 died", secs);
    CHECK(ckpt_verify("mpi_runs/kill/ckpt/step_00000006.h5") == 0 &&
          access("mpi_runs/kill/ckpt/step_00000009.h5", F_OK) != 0,
          "after the kill, step 6's checkpoint should verify and none after step 8 exist: %s", cm_errmsg());
    printf("rank 1 killed before step 8: mpirun exited %d in %.1f s naming rank 1; step 6's checkpoint verifies\n",
           rc, secs);
}

/* Rank 1 alone gets SIGTERM before step 7 (a 0-based step: the 8th): both ranks finish that step
 * and stop, and rank 0 saves step 8. */
static void test_term(void)
{
    setenv("CMLAB_TEST_RAISE", "1:7:15", 1);
    int rc = train(2, "edm", "term", 100, NULL, false);
    unsetenv("CMLAB_TEST_RAISE");
    CHECK(rc == 0 && strstr(output, "stopping at step 8 on request") != NULL &&
          ckpt_verify("mpi_runs/term/ckpt/step_00000008.h5") == 0,
          "SIGTERM to rank 1 before step 8: exit %d (want 0), a checkpoint of step 8 (%s); output:\n%s", rc,
          cm_errmsg(), output);
    printf("SIGTERM to rank 1 only: both ranks stopped after step 8, its checkpoint verifies, exit 0\n");
}

/* Rank 1 starts in a directory without the data (data.path is relative): exit 2, rank and file
 * named, no run directory. mpirun's MPMD form gives each rank its own working directory. */
static void test_data_on_one_rank(void)
{
    CM_ASSERT(system("mkdir -p mpi_runs/with/data mpi_runs/without && cp /usr/share/datasets/fashion-mnist/train-* "
                     "mpi_runs/with/data/") == 0, "cannot copy the data");
    char ini[512], with[512], without[512], cwd[400];
    CM_ASSERT(getcwd(cwd, sizeof cwd), "getcwd");
    snprintf(ini, sizeof ini, "%s/mpi_runs/tiny.ini", cwd);
    snprintf(with, sizeof with, "%s/mpi_runs/with", cwd);
    snprintf(without, sizeof without, "%s/mpi_runs/without", cwd);
#define RANK(dir) "-np", "1", "-wdir", dir, (char *)cmlab, "train", ini, "--set", "data.path=data", "--set", \
                  "experiment.name=nodata", "--set", "experiment.out_dir=runs"
    char *args[] = {(char *)mpirun, "--oversubscribe", RANK(with), ":", RANK(without), NULL};
#undef RANK
    int rc = run(args, output, sizeof output, NULL);
    CHECK(rc == 2 && strstr(output, "rank 1: data/train-images") != NULL,
          "rank 1 without the data: exit %d (want 2), output:\n%s", rc, output);
    CHECK(access("mpi_runs/with/runs/nodata", F_OK) != 0, "rank 0 made the run directory of a job that cannot run");
    printf("rank 1 without the data: exit 2, \"rank 1: data/train-images...\", no run directory\n");
}

int main(int argc, char **argv)
{
#ifndef CMLAB_MPI
    (void)argc;
    (void)argv;
    printf("SKIP: this build has no MPI (meson option mpi; Debian: libopenmpi-dev openmpi-bin)\n");
    return 77;
#else
    if (argc < 3 || !argv[2][0] || access(argv[2], X_OK) != 0) {
        printf("SKIP: mpirun not found (Debian: openmpi-bin)\n");
        return 77;
    }
    /* Absolute: test_data_on_one_rank starts ranks in other directories. */
    static char path[4096];
    CM_ASSERT(realpath(argv[1], path), "%s: %s", argv[1], strerror(errno));
    cmlab = path;
    mpirun = argv[2];
    /* Open MPI refuses root without these, and one thread per rank keeps 2 ranks on 2 cores. */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMP_NUM_THREADS", "1", 1);
    CM_ASSERT(system("rm -rf mpi_runs && mkdir -p mpi_runs") == 0, "cannot make mpi_runs");
    FILE *f = fopen("mpi_runs/tiny.ini", "w");
    fputs(TINY, f);
    fclose(f);
    test_same("edm", NULL, 1);
    test_same("ct", "train.batch_size=6", 1);
    test_same("cd", NULL, 1);
    test_same("bcm", NULL, 1);
    test_same("amed", NULL, 2);
    test_resume();
    test_kill();
    test_term();
    test_data_on_one_rank();
    return test_summary("mpi");
#endif
}
