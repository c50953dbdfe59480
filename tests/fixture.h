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
/* CIFAR-10 in the official binary layout (src/data/cifar.h) with known content. Batch file f is
 * fixture_cifar_names[f]: data_batch_<f+1>.bin for f < 5, test_batch.bin for f = 5; record r's
 * label and pixels (plane p = R, G, B; row y, column x) follow the formulas below, which differ
 * between planes (p * 71), so a swapped plane or a transposed image shows. */
extern const char *const fixture_cifar_names[6];
uint8_t fixture_cifar_label(int f, int r);
uint8_t fixture_cifar_pixel(int f, int r, int p, int y, int x);
/* Batch file f: 10000 records of the label byte, then the R, G, B planes of 32x32 row-major bytes
 * (malloc'd). */
uint8_t *fixture_cifar_batch(int f);
/* A minimal ustar writer: 512-byte headers with GNU tar's field formats, data padded to 512, two
 * zero blocks and padding to the 10240-byte record at the end. mode "wb1" for a .tar.gz (level 1
 * keeps 180 MB quick), "wbT" for a plain tar (zlib's transparent write). type '0' a file, '5' a
 * directory. */
typedef struct FixtureTar { struct gzFile_s *gz; long long written; } FixtureTar;
void fixture_tar_open(FixtureTar *t, const char *path, const char *mode);
void fixture_tar_add(FixtureTar *t, const char *name, const uint8_t *data, size_t size, char type);
void fixture_tar_close(FixtureTar *t);
/* cifar-10-binary.tar.gz at tgz_path with the six batch files, the meta text and the readme, the
 * members in a scrambled order as in the official tarball; when dir is not NULL, also the batch
 * files in <dir>/cifar-10-batches-bin/ (created). */
void fixture_write_cifar10(const char *tgz_path, const char *dir);

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
