#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char errmsg[1024];

void cm_abort(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

int cm_fail(const char *fmt, ...)
{
    /* Formatted into a local buffer first: callers often wrap the previous message,
     * cm_fail("%s: %s", path, cm_errmsg()), and vsnprintf must not read what it writes. */
    char buf[sizeof errmsg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(errmsg, buf, sizeof errmsg);
    return -1;
}

const char *cm_errmsg(void) { return errmsg; }

/* Running out of memory is a runtime condition, not a programmer error: a message and exit code 1
 * (CM_EXIT_RUNTIME), not abort(). What was published before (checkpoints) stays intact. */
_Noreturn void cm_out_of_memory(double bytes)
{
    fprintf(stderr, "cmlab: out of memory: cannot allocate %.1f MB more (this process's limit or the "
                    "machine's memory); make the run smaller (train.batch_size, model.channels, sample --n)\n",
            bytes / 1e6);
    exit(CM_EXIT_RUNTIME);
}

void *cm_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) cm_out_of_memory((double)bytes);
    return p;
}

void *cm_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) cm_out_of_memory((double)n * (double)size);
    return p;
}

void *cm_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) cm_out_of_memory((double)bytes);
    return p;
}

double cm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cm_mkdir_p(const char *dir)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf) return cm_fail("%s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return cm_fail("%s: cannot create directory %s: %s", dir, buf, strerror(errno));
        *p = c;
        if (c == '\0') break;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) return cm_fail("%s: not a directory", dir);
    return 0;
}

double cm_mem_available(void)
{
    double avail = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long long kb;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kb) == 1) avail = (double)kb * 1024;
    if (f) fclose(f);
    struct rlimit lim;
    long long pages = 0;
    f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%lld", &pages) != 1) pages = 0;
    if (f) fclose(f);
    if (getrlimit(RLIMIT_AS, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
        double left = (double)lim.rlim_cur - (double)pages * (double)sysconf(_SC_PAGESIZE);
        avail = avail < 0 ? left : (left < avail ? left : avail);
    }
    return avail;
}

int cm_read_file(const char *path, size_t limit, char **out, size_t *len)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return CM_READ_OPEN;
    size_t cap = 4096, n = 0;
    char *buf = cm_malloc(cap + 1);
    for (size_t got; (got = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += got;
        if (n > limit) break;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
            CM_ASSERT(buf, "out of memory");
        }
    }
    int rc = ferror(f) ? CM_READ_ERROR : n > limit ? CM_READ_TOO_LARGE : 0;
    fclose(f);
    if (rc) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    if (len) *len = n;
    return 0;
}

int cm_edit_distance(const char *a, const char *b)
{
    enum { M = 64 };
    int la = (int)CM_MIN(strlen(a), (size_t)M - 1), lb = (int)CM_MIN(strlen(b), (size_t)M - 1);
    int row[M], prev[M];
    for (int j = 0; j <= lb; j++) prev[j] = j;
    for (int i = 1; i <= la; i++) {
        row[0] = i;
        for (int j = 1; j <= lb; j++) {
            int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
            row[j] = CM_MIN(CM_MIN(prev[j] + 1, row[j - 1] + 1), prev[j - 1] + !same);
        }
        memcpy(prev, row, sizeof(int) * (size_t)(lb + 1));
    }
    return prev[lb];
}
