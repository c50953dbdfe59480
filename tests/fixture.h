/* fixture.h: reading the HDF5 fixtures that tests/torch/ scripts write, and comparing arrays.
 * Every function aborts with the file and the dataset named when something is missing: a test
 * that cannot read its oracle must fail, never pass. */
#ifndef CM_TEST_FIXTURE_H
#define CM_TEST_FIXTURE_H

#include <hdf5.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct Fixture {
    hid_t file;
    char path[512];
} Fixture;

void fixture_open(Fixture *f, const char *path);
void fixture_close(Fixture *f);
bool fixture_exists(Fixture *f, const char *name);
/* float32 dataset -> malloc'd array; ndim/shape out (shape has room for 4). */
float *fixture_read(Fixture *f, const char *name, int *ndim, int *shape);
/* Attributes on an object (a group or dataset path). Missing int/float attrs give `dflt`. */
long fixture_attr_int(Fixture *f, const char *obj, const char *attr, long dflt);
double fixture_attr_double(Fixture *f, const char *obj, const char *attr, double dflt);
/* fixture_attr_int of the file at path, opened and closed around it. */
long fixture_file_attr_int(const char *path, const char *obj, const char *attr, long dflt);
/* Array attribute of ints or floats; returns the count (0 if missing), at most max. */
int fixture_attr_ints(Fixture *f, const char *obj, const char *attr, int *out, int max);
int fixture_attr_floats(Fixture *f, const char *obj, const char *attr, float *out, int max);
/* String attribute into buf; false if missing. */
bool fixture_attr_str(Fixture *f, const char *obj, const char *attr, char *buf, size_t len);
/* Names of the members of a group (malloc'd array of malloc'd strings). */
int fixture_list(Fixture *f, const char *group, char ***names);

/* The UNetConfig stored as attributes of obj (e.g. "/mnist28") by tests/torch/unet.py and ct_step.py. */
struct UNetConfig;
void fixture_unet_config(Fixture *f, const char *obj, struct UNetConfig *g);

/* Fills w from the datasets <dir>/<name> (e.g. "/edm/weights/online"), one per parameter of ps,
 * checking names and shapes in both directions. */
struct ParamSet;
void fixture_load_weights(Fixture *f, const char *dir, const struct ParamSet *ps, float *w);

/* max|a-b| / max(max|b|, floor): the relative error every comparison prints. */
double rel_error(const float *a, const float *b, size_t n, double floor);
/* The worst rel_error of the parameter slices of got (a weight buffer of ps) against the
 * datasets <dir>/<name>, INFINITY for a NaN; the worst parameter's name to *worst_name. */
double fixture_worst_param_error(Fixture *f, const char *dir, const struct ParamSet *ps, const float *got,
                                 double floor, const char **worst_name);
/* The whole file, NUL-terminated and malloc'd, its size to *len (may be NULL); NULL if it cannot
 * be read. */
char *fixture_read_file(const char *path, size_t *len);

/* Runs argv (argv[0]: the program) with stdout appended to out_path and stderr written to
 * err_path (the last run's only; NULL: appended to out_path too), the environment assignment
 * "NAME=VALUE" env added when not NULL; returns the exit status (128 + signal when killed). */
int fixture_run(char *const *argv, const char *out_path, const char *err_path, const char *env);
/* A command's exit code (128 + the signal if it died) and the start of its stdout and stderr. */
typedef struct FixtureRun { int code; char out[4096], err[4096]; } FixtureRun;
/* fixture_run with the output captured (through files in /tmp named by the process id). */
FixtureRun fixture_run_capture(char *const *argv);
/* n PNGs dir/0000.png ... of side x side pixels: each a white axis-aligned rectangle (4..10
 * pixels a side, anywhere; from the counter RNG with seed 7) on black. */
void fixture_write_rectangles(const char *dir, int n, int side);
/* A big-endian 32-bit integer (IDX headers of the MNIST-format data sets tests write). */
void fixture_be32(FILE *f, uint32_t v);

/* Test bookkeeping: CHECK prints and counts failures; test_summary prints "N passed, M failed"
 * and returns the exit code. */
extern int test_passed, test_failed;
#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (cond) test_passed++;                                                     \
        else { test_failed++; printf("FAIL %s:%d: ", __FILE__, __LINE__);            \
               printf(__VA_ARGS__); printf("\n"); }                                  \
    } while (0)
int test_summary(const char *name);

#endif
