/* fuzz.h: what the libFuzzer harnesses (tests/fuzz/fuzz_*.c) share.
 *
 * Each harness defines LLVMFuzzerTestOneInput and feeds one input through a reader's public entry
 * points. The same harness source links either with libFuzzer (meson -Dfuzz=true, clang) or with
 * replay.c, whose main() runs the kept inputs of tests/fuzz/regress/<harness>/ under meson test
 * in every build.
 *
 * Files: readers take paths, so inputs are written into one directory per process (under
 * $TMPDIR, removed at exit); a harness removes what it wrote before it returns, so nothing
 * accumulates over millions of runs.
 */
#ifndef CM_FUZZ_H
#define CM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "io/checkpoint.h"
#include "nn/optim.h"
#include "nn/params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The per-process directory (made on first use, removed recursively at exit). */
const char *fuzz_dir(void);
/* fuzz_dir()/name in a static buffer, valid until the next fuzz_path or fuzz_write. */
const char *fuzz_path(const char *name);
/* Writes size bytes to fuzz_dir()/name (its directory must exist); returns fuzz_path(name). */
const char *fuzz_write(const char *name, const void *data, size_t size);
/* Removes fuzz_dir()/name, recursively if it is a directory. */
void fuzz_remove(const char *name);

/* The tiny checkpoint the seeds hold and the checkpoint harness loads into: one conv of 4x2x3x3
 * plus its bias, weight sets "online" and "ema/0.999", Adam state, method "cd". */
typedef struct FuzzCkpt {
    ParamSet ps;
    float *w[2];
    Adam adam;
    CkptState st;
} FuzzCkpt;

void fuzz_ckpt_init(FuzzCkpt *f);
void fuzz_ckpt_free(FuzzCkpt *f);

#endif
