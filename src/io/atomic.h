/* atomic.h: the one way cmlab publishes a file (checkpoints, config.ini, metrics.jsonl after a
 * resume, eval.json, the statistics cache, PNG grids, ablation tables and reports), so that a
 * crash at any moment leaves either the old file or the complete new one under its name:
 *   1. write <path>.tmp (the caller's writer, or atomic_write / atomic_open + atomic_commit);
 *   2. flush and fsync it: otherwise a crash can publish the name over blocks that never reached
 *      the disk;
 *   3. rename it over <path> (atomic on POSIX);
 *   4. fsync the directory, so that the rename itself survives a power loss.
 * On failure the .tmp file is removed and the published file is as it was. Errors: -1 after
 * cm_fail() naming the path and what failed.
 */
#ifndef CM_ATOMIC_H
#define CM_ATOMIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* "<path>.tmp" into tmp; -1 after cm_fail() when it does not fit. */
int atomic_tmp_path(const char *path, char *tmp, size_t len);
/* fsync of a file or a directory. A directory that cannot be fsynced (EINVAL on some
 * filesystems) counts as done: the rename is then as durable as the filesystem allows. */
int atomic_fsync(const char *path, bool is_dir);
/* Steps 2-4 for a complete, closed tmp: fsync, before_rename(tmp) when not NULL (a test hook),
 * rename over path, fsync of path's directory. */
int atomic_publish(const char *tmp, const char *path, void (*before_rename)(const char *tmp));
/* All four steps for n bytes of data. */
int atomic_write(const char *path, const void *data, size_t n);
/* Step 1 through stdio: opens <path>.tmp (its name into tmp) for writing; NULL after cm_fail(). */
FILE *atomic_open(const char *path, char *tmp, size_t len);
/* Flushes and closes f (opened by atomic_open), then atomic_publish. ok = false (the caller's
 * writing failed) removes tmp and fails. */
int atomic_commit(FILE *f, const char *tmp, const char *path, bool ok);

/* Test hook (NULL in normal runs): called at each stage of a write with its name, "half" (half of
 * atomic_write's data written), "written" (tmp complete and closed), "synced" (fsynced, not yet
 * renamed) and "renamed" (published, the directory not yet fsynced). tests/test_atomic.c kills the
 * writer there. */
extern void (*atomic_test_hook)(const char *stage, const char *tmp);

#endif
