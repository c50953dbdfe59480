/* common.h: error reporting and small helpers shared by every part of libcmlab.
 *
 * Three kinds of failure (DESIGN.md "Errors"):
 *   - programmer errors (shape mismatch, tape misuse): CM_ASSERT aborts with file:line and a
 *     message that names the op and the shapes;
 *   - input and environment errors (missing file, truncated data, bad config): library functions
 *     return -1 after cm_fail() has recorded a message naming the path and the problem; the CLI
 *     prints cm_errmsg() and exits with CM_EXIT_INPUT (2);
 *   - runtime conditions (NaN loss): reported by the trainers with the step.
 */
#ifndef CM_COMMON_H
#define CM_COMMON_H

#include <stddef.h>
#include <stdint.h>

enum { CM_EXIT_OK = 0, CM_EXIT_RUNTIME = 1, CM_EXIT_INPUT = 2 };

_Noreturn void cm_abort(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CM_ASSERT(cond, ...) \
    do { if (!(cond)) cm_abort(__FILE__, __LINE__, __VA_ARGS__); } while (0)

/* Records a formatted message (thread-local) and returns -1, so `return cm_fail(...)` reads well. */
int cm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *cm_errmsg(void);

void *cm_malloc(size_t bytes);               /* out of memory: a message and exit(1) */
_Noreturn void cm_out_of_memory(double bytes); /* that message and exit(1) */
void *cm_calloc(size_t n, size_t size);
void *cm_aligned_alloc(size_t bytes);        /* 64-byte aligned, free with free() */
double cm_now(void);                         /* monotonic seconds */
/* Bytes this process can still allocate: the machine's MemAvailable, or less when an address-space
 * limit (ulimit -v) leaves less; -1 when neither is known. */
double cm_mem_available(void);
/* mkdir -p; -1 after cm_fail() naming the directory that could not be made. */
int cm_mkdir_p(const char *dir);

/* Reads the file at path whole into *out (malloc'd, NUL-terminated; *len its length, len may be
 * NULL). Returns 0, or (with *out NULL and no message recorded, so the caller words it):
 * CM_READ_OPEN (errno says why), CM_READ_ERROR (a read failed), CM_READ_TOO_LARGE (more than
 * limit bytes). */
enum { CM_READ_OPEN = 1, CM_READ_ERROR, CM_READ_TOO_LARGE };
int cm_read_file(const char *path, size_t limit, char **out, size_t *len);

/* Levenshtein distance between a and b, case-insensitive, over their first 63 characters: for
 * naming the nearest valid name after a typo. */
int cm_edit_distance(const char *a, const char *b);

#define CM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CM_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CM_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
