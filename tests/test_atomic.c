/* test_atomic: the one atomic-write path (src/io/atomic.h) every published file goes through
 * (config.ini, eval.json, grids, ablation tables and reports, checkpoints, caches).
 *
 * A writer replacing a file is killed (SIGKILL, in a child process) at each stage of the write:
 * with half of the new data written, with the temporary file complete, after its fsync, and after
 * the rename but before the directory's fsync. Whatever the stage, the file under its name holds
 * either the old contents or the new ones, whole; a later write over a stale .tmp succeeds. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "fixture.h"
#include "io/atomic.h"

static const char *kill_at;

static void hook(const char *stage, const char *tmp)
{
    (void)tmp;
    if (!strcmp(stage, kill_at)) raise(SIGKILL);
}

int main(void)
{
    CM_ASSERT(system("rm -rf atomic_runs && mkdir -p atomic_runs") == 0, "cannot make atomic_runs");
    const char *path = "atomic_runs/report.txt";
    /* Larger than stdio's buffer, so the half is on disk when the writer dies. */
    size_t n = 1 << 20;
    char *old_text = cm_malloc(n), *new_text = cm_malloc(n);
    memset(old_text, 'a', n);
    memset(new_text, 'b', n);
    static const struct { const char *stage; bool published; } stages[] = {
        {"half", false}, {"written", false}, {"synced", false}, {"renamed", true}};
    for (size_t i = 0; i < CM_ARRAY_LEN(stages); i++) {
        CHECK(atomic_write(path, old_text, n) == 0, "writing the old contents: %s", cm_errmsg());
        fflush(stdout);
        pid_t pid = fork();
        CM_ASSERT(pid >= 0, "fork");
        if (pid == 0) {
            kill_at = stages[i].stage;
            atomic_test_hook = hook;
            atomic_write(path, new_text, n);
            _exit(0);   /* not reached when the stage is one atomic_write passes */
        }
        int st;
        waitpid(pid, &st, 0);
        size_t len = 0;
        char *got = fixture_read_file(path, &len);
        bool is_old = got && len == n && !memcmp(got, old_text, n);
        bool is_new = got && len == n && !memcmp(got, new_text, n);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was not killed at stage %s", stages[i].stage);
        CHECK(stages[i].published ? is_new : is_old,
              "killed at stage %s: %s holds %zu bytes, %s", stages[i].stage, path, len,
              is_old ? "the old contents" : is_new ? "the new contents" : "neither the old nor the new contents whole");
        printf("writer killed at stage %-8s: %s holds the %s contents whole\n", stages[i].stage, path,
               is_new ? "new" : is_old ? "old" : "(broken)");
        free(got);
    }
    /* A stale .tmp of a killed writer is simply replaced by the next write. */
    CHECK(atomic_write(path, new_text, n) == 0, "a write over a stale .tmp: %s", cm_errmsg());
    struct stat sb;
    CHECK(stat("atomic_runs/report.txt.tmp", &sb) != 0, "a finished write left its .tmp behind");
    free(old_text);
    free(new_text);
    return test_summary("atomic");
}
