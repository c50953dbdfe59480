#include "atomic.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

void (*atomic_test_hook)(const char *stage, const char *tmp);

static void at_stage(const char *stage, const char *tmp)
{
    if (atomic_test_hook) atomic_test_hook(stage, tmp);
}

int atomic_tmp_path(const char *path, char *tmp, size_t len)
{
    if (snprintf(tmp, len, "%s.tmp", path) >= (int)len) return cm_fail("%s: path too long", path);
    return 0;
}

int atomic_fsync(const char *path, bool is_dir)
{
    int fd = open(path, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return cm_fail("%s: cannot open for fsync: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0 && !(is_dir && err == EINVAL)) return cm_fail("%s: fsync failed: %s", path, strerror(err));
    return 0;
}

int atomic_publish(const char *tmp, const char *path, void (*before_rename)(const char *tmp))
{
    at_stage("written", tmp);
    int rc = atomic_fsync(tmp, false);
    if (rc == 0) at_stage("synced", tmp);
    if (rc == 0 && before_rename) before_rename(tmp);
    if (rc == 0 && rename(tmp, path) != 0) rc = cm_fail("%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    at_stage("renamed", tmp);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash == dir) dir[1] = '\0';
    else if (slash) *slash = '\0';
    else snprintf(dir, sizeof dir, ".");
    return atomic_fsync(dir, true);
}

FILE *atomic_open(const char *path, char *tmp, size_t len)
{
    if (atomic_tmp_path(path, tmp, len)) return NULL;
    FILE *f = fopen(tmp, "wb");
    if (!f) cm_fail("cannot write %s: %s", tmp, strerror(errno));
    return f;
}

int atomic_commit(FILE *f, const char *tmp, const char *path, bool ok)
{
    ok &= fflush(f) == 0;
    ok &= fclose(f) == 0;
    if (!ok) {
        int rc = cm_fail("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    return atomic_publish(tmp, path, NULL);
}

int atomic_write(const char *path, const void *data, size_t n)
{
    char tmp[4096];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    /* In two halves, so that a test can stop a writer with half the file written. */
    bool ok = fwrite(data, 1, n / 2, f) == n / 2;
    if (ok && atomic_test_hook) {
        ok = fflush(f) == 0;
        at_stage("half", tmp);
    }
    ok = ok && fwrite((const char *)data + n / 2, 1, n - n / 2, f) == n - n / 2;
    return atomic_commit(f, tmp, path, ok);
}
