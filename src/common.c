#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, sizeof errmsg, fmt, ap);
    va_end(ap);
    return -1;
}

const char *cm_errmsg(void) { return errmsg; }

void *cm_malloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    CM_ASSERT(p, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *cm_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    CM_ASSERT(p, "out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

void *cm_aligned_alloc(size_t bytes)
{
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    CM_ASSERT(p, "out of memory allocating %zu bytes", bytes);
    return p;
}

double cm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
