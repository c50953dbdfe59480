/* test_cli.c: the `cmlab` command's own contract (DESIGN.md "Command line"): --help, --version,
 * usage errors and their exit codes. argv[1] is the path of the cmlab binary; each case runs it
 * with fork/exec and captures its exit code, stdout and stderr. */
#include "common.h"
#include "fixture.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct Run {
    int exit_code;      /* -1 if the program did not exit normally (killed by a signal) */
    char out[8192];     /* stdout, NUL-terminated (truncated if longer) */
    char err[8192];     /* stderr */
} Run;

static void read_back(FILE *f, char *buf, size_t len)
{
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* Runs `bin args...` (args NULL-terminated, args[0] is argv[1]) with stdin from /dev/null.
 * Output goes to temporary files rather than pipes, so a chatty child can never block. */
static void run_cmlab(const char *bin, const char *const *args, Run *r)
{
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)bin;
    for (const char *const *a = args; *a && argc < 15; a++) argv[argc++] = (char *)*a;
    argv[argc] = NULL;

    FILE *out = tmpfile(), *err = tmpfile();
    CM_ASSERT(out && err, "tmpfile: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    CM_ASSERT(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        FILE *null = freopen("/dev/null", "r", stdin);
        (void)null;
        dup2(fileno(out), STDOUT_FILENO);
        dup2(fileno(err), STDERR_FILENO);
        execv(bin, argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        CM_ASSERT(errno == EINTR, "waitpid: %s", strerror(errno));
    r->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    read_back(out, r->out, sizeof r->out);
    read_back(err, r->err, sizeof r->err);
}

static void test_help(const char *bin, const char *flag)
{
    Run r;
    run_cmlab(bin, (const char *[]){flag, NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_OK, "cmlab %s: exit code %d, want 0; stderr: %s", flag,
          r.exit_code, r.err);
    CHECK(strstr(r.out, "demo") && strstr(r.out, "train") && strstr(r.out, "sample") && strstr(r.out, "info"),
          "cmlab %s: stdout does not list demo, train, sample and info:\n%s", flag, r.out);
    CHECK(strstr(r.out, "usage") != NULL, "cmlab %s: stdout has no usage line:\n%s", flag, r.out);
}

static void test_version(const char *bin)
{
    Run r;
    run_cmlab(bin, (const char *[]){"--version", NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_OK, "cmlab --version: exit code %d, want 0; stderr: %s",
          r.exit_code, r.err);
    /* exactly one line: "cmlab MAJOR.MINOR..." */
    size_t len = strlen(r.out);
    bool ok = len > 7 && strncmp(r.out, "cmlab ", 6) == 0 && isdigit((unsigned char)r.out[6]) &&
              strchr(r.out + 6, '.') != NULL && strchr(r.out, '\n') == r.out + len - 1;
    CHECK(ok, "cmlab --version printed '%s', want 'cmlab X.Y.Z' and a newline", r.out);
    /* cm_blas_select_core: on a CPU with AVX-512 or AVX2, OpenBLAS must not run its generic
     * SSE3 kernels (Debian 12's OpenBLAS picks "Prescott" on CPUs newer than it). */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        CHECK(!strstr(r.out, "Prescott") && !strstr(r.out, "Core2") && !strstr(r.out, "Nehalem"),
              "cmlab --version: OpenBLAS runs a generic core on an AVX2 CPU: %s", r.out);
}

/* A user's OPENBLAS_CORETYPE naming a slower kernel family than the CPU has stands, with a note on
 * stderr; one that matches the CPU gets none. */
static void test_coretype_note(const char *bin)
{
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    if (!avx512) {
        printf("cli: coretype note skipped (no AVX-512 here)\n");
        return;
    }
    const char *saved = getenv("OPENBLAS_CORETYPE");
    char keep[64];
    snprintf(keep, sizeof keep, "%s", saved ? saved : "");
    Run r;
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    run_cmlab(bin, (const char *[]){"--version", NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_OK && strstr(r.out, "Haswell"),
          "OPENBLAS_CORETYPE=Haswell: exit %d, want 0 with the Haswell core kept; stdout: %s", r.exit_code, r.out);
    CHECK(strstr(r.err, "OPENBLAS_CORETYPE=Haswell") && strstr(r.err, "AVX-512"),
          "OPENBLAS_CORETYPE=Haswell on an AVX-512 CPU: no note on stderr:\n%s", r.err);
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    run_cmlab(bin, (const char *[]){"--version", NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_OK && r.err[0] == '\0',
          "OPENBLAS_CORETYPE=SkylakeX: exit %d, stderr (want none): %s", r.exit_code, r.err);
    if (saved) setenv("OPENBLAS_CORETYPE", keep, 1);
    else unsetenv("OPENBLAS_CORETYPE");
}

static void test_no_arguments(const char *bin)
{
    Run r;
    run_cmlab(bin, (const char *[]){NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_INPUT, "cmlab without arguments: exit code %d, want 2",
          r.exit_code);
    CHECK(strstr(r.err, "usage") != NULL, "cmlab without arguments: no usage on stderr:\n%s",
          r.err);
    CHECK(r.out[0] == '\0', "cmlab without arguments wrote to stdout:\n%s", r.out);
}

/* An unknown first argument: exit 2, naming it and the nearest valid one. */
static void test_unknown(const char *bin, const char *name, const char *nearest)
{
    Run r;
    run_cmlab(bin, (const char *[]){name, NULL}, &r);
    CHECK(r.exit_code == CM_EXIT_INPUT, "cmlab %s: exit code %d, want 2", name, r.exit_code);
    CHECK(strstr(r.err, name) != NULL, "cmlab %s: stderr does not name it:\n%s", name, r.err);
    char quoted[64];
    snprintf(quoted, sizeof quoted, "'%s'", nearest);
    CHECK(strstr(r.err, quoted) != NULL, "cmlab %s: stderr does not name the nearest, %s:\n%s",
          name, quoted, r.err);
}

int main(int argc, char **argv)
{
    if (argc != 2 || access(argv[1], X_OK) != 0) {
        printf("usage: test_cli PATH-OF-CMLAB (got %s, which is not an executable)\n",
               argc > 1 ? argv[1] : "nothing");
        return 1;
    }
    const char *bin = argv[1];
    test_help(bin, "--help");
    test_help(bin, "-h");
    test_version(bin);
    test_coretype_note(bin);
    test_no_arguments(bin);
    test_unknown(bin, "dmeo", "demo");
    test_unknown(bin, "smaple", "sample");
    test_unknown(bin, "trian", "train");
    test_unknown(bin, "--verison", "--version");
    test_unknown(bin, "--hlep", "--help");
    return test_summary("cli");
}
