/* checkpoint.c: the HDF5 checkpoint format, its crash-safe writer and verifying reader.
 * Layout, write protocol and the reasons for both are in checkpoint.h. */
#include "io/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hdf5.h>
#include <zlib.h>

#include "common.h"
#include "io/atomic.h"

#define CKPT_FORMAT "cmlab-checkpoint"
/* Float weights barely compress (random mantissas): measured on N(0, 0.05^2) float32, byte
 * shuffle + zlib gives 0.86 of the raw size at level 1 and 0.85 at level 4, which takes ~20%
 * longer, and deflate dominates the save time. So level 1: the filter is there for h5py
 * compatibility and the ~15% it saves, not for the ratio. */
enum { DEFLATE_LEVEL = 1, CHUNK_BYTES = 1 << 20 };

void (*ckpt_test_hook_before_rename)(const char *tmp_path);

void ckpt_add_weights(CkptState *s, const char *group, float *data)
{
    CM_ASSERT(s->nsets < CKPT_MAX_SETS, "ckpt_add_weights: more than %d weight sets", CKPT_MAX_SETS);
    CM_ASSERT(strlen(group) < sizeof s->sets[0].group, "ckpt_add_weights: group name too long: %s",
              group);
    CkptWeights *w = &s->sets[s->nsets++];
    snprintf(w->group, sizeof w->group, "%s", group);
    w->data = data;
}

void ckpt_add_emas(CkptState *s, const EmaSet *e)
{
    char group[64];
    for (int i = 0; i < e->count; i++) {
        snprintf(group, sizeof group, "ema/%s", e->items[i].name);
        ckpt_add_weights(s, group, e->items[i].w);
    }
}

/* ---- HDF5 errors --------------------------------------------------------------------------
 * HDF5 prints its whole error stack to stderr by default. A damaged checkpoint is an expected
 * input here, reported by one line of ours, so every public function silences the printing for
 * its duration and turns the stack into that line. */

typedef struct H5Why {
    char inner[256];             /* the most specific message on the stack */
    bool checksum, truncated;
} H5Why;

/* The stack saved by h5_keep(), for failures whose cleanup calls come before the report. */
static _Thread_local H5Why kept;

static herr_t why_visit(unsigned n, const H5E_error2_t *e, void *data)
{
    H5Why *w = data;
    if (!e->desc || !e->desc[0]) return 0;
    if (!w->inner[0]) snprintf(w->inner, sizeof w->inner, "%s", e->desc);
    /* Fletcher32 on data chunks, "incorrect metadata checksum" on headers and indexes. */
    if (strstr(e->desc, "Fletcher32") || strstr(e->desc, "checksum")) w->checksum = true;
    if (strstr(e->desc, "truncated")) w->truncated = true;
    return 0;
}

/* Must run right after the failing HDF5 call: the next API call clears the stack. */
static H5Why h5_why(void)
{
    H5Why w = {0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, why_visit, &w);
    H5Eclear2(H5E_DEFAULT);
    if (!w.inner[0]) w = kept;
    memset(&kept, 0, sizeof kept);
    if (!w.inner[0]) snprintf(w.inner, sizeof w.inner, "unknown HDF5 error");
    return w;
}

static void h5_keep(void) { kept = h5_why(); }

typedef struct H5Quiet {
    H5E_auto2_t func;
    void *data;
} H5Quiet;

static H5Quiet h5_quiet(void)
{
    H5Quiet q;
    memset(&kept, 0, sizeof kept);
    H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}

static void h5_restore(H5Quiet q) { H5Eset_auto2(H5E_DEFAULT, q.func, q.data); }

/* Records why reading `what` of checkpoint `path` failed. */
static int fail_read(const char *path, const char *what)
{
    H5Why w = h5_why();
    if (w.checksum) return cm_fail("%s: checksum mismatch in %s", path, what);
    unsigned long long eof, stored_eof;
    if (w.truncated &&
        sscanf(w.inner, "truncated file: eof = %llu, sblock->base_addr = %*u, stored_eof = %llu", &eof,
               &stored_eof) == 2)
        return cm_fail("%s: truncated file (%llu of its %llu bytes are there)", path, eof, stored_eof);
    if (w.truncated) return cm_fail("%s: truncated file (HDF5: %s)", path, w.inner);
    if (strstr(w.inner, "EOA"))
        return cm_fail("%s: damaged file: %s points past the end of the file (HDF5: %s)", path, what,
                       w.inner);
    return cm_fail("%s: cannot read %s (HDF5: %s)", path, what, w.inner);
}

/* A valid checkpoint that does not fit the state being loaded (another network, method or
 * optimiser): resume must stop there, not fall back to an older file. */
enum { LOAD_MISMATCH = -2 };

static int fail_mismatch(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail_mismatch(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cm_fail("%s", msg);
    return LOAD_MISMATCH;
}

/* The caller removes the .tmp file, so the message can promise that nothing was lost. */
static int fail_write(const char *path, const char *what)
{
    H5Why w = h5_why();
    /* A failed write(2) reads "file write failed: time = ..., errno = 28, error message = 'No
     * space left on device', ...": the system's message is the useful part. */
    const char *sys = strstr(w.inner, "error message = '");
    char reason[sizeof w.inner + 8];
    if (sys) {
        sys += strlen("error message = '");
        snprintf(reason, sizeof reason, "%.*s", (int)strcspn(sys, "'"), sys);
    } else {
        snprintf(reason, sizeof reason, "HDF5: %s", w.inner);
    }
    return cm_fail("%s: cannot write %s (%s); the save is abandoned, earlier checkpoints are untouched",
                   path, what, reason);
}

/* ---- attributes ------------------------------------------------------------------------ */

/* n == 0: a scalar attribute; otherwise a 1-d array of n values. */
static int attr_write(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n, const void *v)
{
    hid_t sp = n == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (rc < 0) h5_keep();
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int attr_write_i64(hid_t loc, const char *name, long long v)
{
    return attr_write(loc, name, H5T_STD_I64LE, H5T_NATIVE_LLONG, 0, &v);
}

static int attr_write_f64(hid_t loc, const char *name, double v)
{
    return attr_write(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, 0, &v);
}

static int attr_write_f32(hid_t loc, const char *name, const float *v, hsize_t n)
{
    return attr_write(loc, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, n, v);
}

/* Fixed-length UTF-8, so the text sits inside the checksummed attribute storage. A
 * variable-length string would live in HDF5's global heap, which has no checksum: a flipped byte
 * there made the 1.10 reader loop forever (found by flipping every byte of a checkpoint). */
static int attr_write_str(hid_t loc, const char *name, const char *v)
{
    const char *p = v ? v : "";
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, CM_MAX(strlen(p), 1));     /* HDF5 has no zero-length string type */
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int rc = attr_write(loc, name, t, t, 0, p);
    H5Tclose(t);
    return rc;
}

/* One value converted to mtype: 1 if read, 0 if absent, -1 if unreadable (the HDF5 error kept
 * for fail_read) or not one value. */
static int attr_read(hid_t loc, const char *name, hid_t mtype, void *v)
{
    htri_t exists = H5Aexists(loc, name);
    if (exists <= 0) {
        if (exists < 0) h5_keep();
        return exists < 0 ? -1 : 0;
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) {
        h5_keep();
        return -1;
    }
    hid_t sp = H5Aget_space(a);
    hssize_t npoints = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    herr_t rc = npoints == 1 ? H5Aread(a, mtype, v) : -1;
    if (rc < 0) h5_keep();
    H5Aclose(a);
    return rc < 0 ? -1 : 1;
}

/* A string attribute (variable or fixed length) as a malloc'd string; NULL if absent, not a
 * string or unreadable (the HDF5 error kept for fail_read). */
static char *attr_read_str(hid_t loc, const char *name)
{
    htri_t exists = H5Aexists(loc, name);
    hid_t a = exists > 0 ? H5Aopen(loc, name, H5P_DEFAULT) : -1;
    if (a < 0) {
        if (exists != 0) h5_keep();
        return NULL;
    }
    hid_t t = H5Aget_type(a);
    char *out = NULL;
    if (H5Tget_class(t) == H5T_STRING) {
        hid_t mt = H5Tcopy(t);
        if (H5Tis_variable_str(t) > 0) {
            char *s = NULL;
            if (H5Aread(a, mt, &s) < 0) h5_keep();
            else if (s) out = strdup(s);
            H5free_memory(s);
        } else {
            size_t size = H5Tget_size(t);
            out = cm_calloc(size + 1, 1);
            if (H5Aread(a, mt, out) < 0) {
                h5_keep();
                free(out);
                out = NULL;
            }
        }
        H5Tclose(mt);
    }
    H5Tclose(t);
    H5Aclose(a);
    return out;
}

/* ---- small helpers ------------------------------------------------------------------------ */

static void format_shape(char *buf, size_t len, int ndim, const hsize_t *dims)
{
    size_t k = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%s%llu", d ? ", " : "", (unsigned long long)dims[d]);
    if (k < len) snprintf(buf + k, len - k, "]");
}

/* Readers never need HDF5's file locks: a checkpoint is immutable once it has its final name,
 * and the locks fail outright on some network filesystems. */
static hid_t read_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    /* Closing the file also closes whatever an error path left open in it. */
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    H5Pset_file_locking(fapl, false, true);
    return fapl;
}

/* ---- the seal: a whole-file checksum, checked before libhdf5 reads a byte ---------------------
 * libhdf5 is not safe on damaged metadata: one bit flipped in the signature of a fractal heap or a
 * B-tree node of a checkpoint made `cmlab info` die inside the library (SIGSEGV or SIGABRT, 29 of
 * 670 single-bit flips of object signatures), and its own metadata checksums cannot protect its
 * parser. So every checkpoint starts with an HDF5 user block of SEAL_BYTES (every HDF5 reader,
 * h5py and h5dump included, skips it) holding a line of text over the rest of the file:
 *     cmlab-seal 1 bytes <n> crc32 <8 hex digits>\n
 * A file is handed to libhdf5 only once its size and CRC-32 match. The seal is written after the
 * HDF5 file is closed and before the fsync and rename, so it is covered by the same protocol.
 * Checkpoints written before the seal existed (HDF5's signature at offset 0) are walked once by
 * a child process first: if libhdf5 crashes there, the file is refused and the caller lives. */

enum { SEAL_BYTES = 512, SEAL_VERSION = 1 };

static const char HDF5_SIGNATURE[8] = "\211HDF\r\n\032\n";

/* CRC-32 of bytes [from, end) of the open file fd. */
static int crc_range(int fd, const char *path, off_t from, off_t end, uLong *crc)
{
    enum { BUF = 1 << 20 };
    unsigned char *buf = cm_malloc(BUF);
    *crc = crc32(0, Z_NULL, 0);
    int rc = 0;
    for (off_t at = from; at < end && rc == 0;) {
        ssize_t got = pread(fd, buf, (size_t)CM_MIN((off_t)BUF, end - at), at);
        if (got <= 0) rc = cm_fail("%s: read failed at byte %lld: %s", path, (long long)at,
                                   got < 0 ? strerror(errno) : "unexpected end of file");
        else *crc = crc32_z(*crc, buf, (size_t)got), at += got;
    }
    free(buf);
    return rc;
}

/* The seal of an HDF5 image written with a user block of SEAL_BYTES: libhdf5's in-memory file
 * image leaves the user block out (its superblock, at offset 0, records the base address
 * SEAL_BYTES), and the seal is that user block on disk, before the image. */
static void seal_make(char seal[SEAL_BYTES], const unsigned char *image, size_t size)
{
    uLong crc = crc32_z(crc32(0, Z_NULL, 0), image, size);
    memset(seal, 0, SEAL_BYTES);
    snprintf(seal, SEAL_BYTES, "cmlab-seal %d bytes %zu crc32 %08lx\n", SEAL_VERSION, size, (unsigned long)crc);
}

/* 1: sealed and intact; 0: no seal (a checkpoint from before seals); -1 after cm_fail. */
static int seal_check(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return cm_fail("%s: cannot open: %s", path, strerror(errno));
    char head[SEAL_BYTES + 1] = {0};
    struct stat st;
    ssize_t got = fstat(fd, &st) == 0 ? pread(fd, head, SEAL_BYTES, 0) : -1;
    int version = 0, rc = 1;
    long long bytes = -1;
    unsigned long want = 0;
    uLong crc = 0;
    if (got >= (ssize_t)sizeof HDF5_SIGNATURE && memcmp(head, HDF5_SIGNATURE, sizeof HDF5_SIGNATURE) == 0)
        rc = 0;
    else if (got < 0)
        rc = cm_fail("%s: cannot read: %s", path, strerror(errno));
    else if (strncmp(head, "cmlab-seal ", 11) != 0)
        rc = cm_fail("%s: not a cmlab checkpoint (it starts with neither a cmlab seal nor an HDF5 "
                     "signature)", path);
    else if (sscanf(head, "cmlab-seal %d bytes %lld crc32 %8lx", &version, &bytes, &want) != 3 ||
             version != SEAL_VERSION || bytes < 0)
        rc = cm_fail("%s: damaged file: its seal (the first line) does not parse", path);
    else if (st.st_size - SEAL_BYTES != bytes)
        rc = cm_fail("%s: %s file: %lld bytes after the seal, which says %lld", path,
                     st.st_size - SEAL_BYTES < bytes ? "truncated" : "damaged",
                     (long long)(st.st_size - SEAL_BYTES), bytes);
    else if (crc_range(fd, path, SEAL_BYTES, st.st_size, &crc) < 0)
        rc = -1;
    else if (crc != want)
        rc = cm_fail("%s: checksum mismatch: the file is damaged (CRC-32 %08lx, its seal says %08lx)",
                     path, (unsigned long)crc, want);
    close(fd);
    return rc;
}

static int walk_file(const char *path);

/* Test hook: CMLAB_TEST_CHILD_FAULT=SIGNAL makes the child below raise signal number SIGNAL,
 * and =exit makes it exit 1 without a message, as libhdf5 dying inside the walk would (a
 * SIGSEGV under AddressSanitizer ends as a report and exit status 1). Whether a damaged file
 * crashes libhdf5 depends on the heap it lands in, so tests/test_checkpoint.c drives the two
 * outcomes with this. Unset: no effect. */
static void test_child_fault(void)
{
    const char *spec = getenv("CMLAB_TEST_CHILD_FAULT");
    if (!spec) return;
    if (strcmp(spec, "exit") == 0) _exit(1);
    raise(atoi(spec));
}

/* A checkpoint without a seal, walked in a child process: 0 if it verified there, -1 with the
 * child's message, or with the signal that killed it. */
static int verify_in_child(const char *path)
{
    int pipefd[2];
    if (pipe(pipefd) != 0) return cm_fail("%s: pipe: %s", path, strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return cm_fail("%s: fork: %s", path, strerror(errno));
    }
    if (pid == 0) {
        close(pipefd[0]);
        test_child_fault();
        int rc = walk_file(path);
        if (rc != 0) {
            const char *msg = cm_errmsg();
            ssize_t unused = write(pipefd[1], msg, strlen(msg));
            (void)unused;
        }
        _exit(rc == 0 ? 0 : 1);
    }
    close(pipefd[1]);
    char msg[1024];
    size_t n = 0;
    for (ssize_t got; n < sizeof msg - 1 && (got = read(pipefd[0], msg + n, sizeof msg - 1 - n)) != 0;)
        if (got > 0) n += (size_t)got;
        else if (errno != EINTR) break;
    msg[n] = '\0';
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status))
        return cm_fail("%s: damaged file: libhdf5 crashed reading it (signal %d, in a child process)",
                       path, WTERMSIG(status));
    /* A child that failed without its message died inside libhdf5 too (under AddressSanitizer a
     * SIGSEGV becomes a report and exit status 1). */
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return n ? cm_fail("%s", msg)
                 : cm_fail("%s: damaged file: libhdf5 crashed reading it (exit status %d without a report, in "
                           "a child process)", path, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}

/* ---- save -------------------------------------------------------------------------------- */

/* Chunks of at most CHUNK_BYTES: halve the leading dimensions until a chunk fits. Large enough
 * for deflate to work well, small enough that a reader never inflates more than 1 MiB at once. */
static void chunk_shape(int ndim, const hsize_t *dims, hsize_t *chunk)
{
    size_t bytes = sizeof(float);
    for (int d = 0; d < ndim; d++) {
        chunk[d] = dims[d];
        bytes *= dims[d];
    }
    for (int d = 0; d < ndim && bytes > CHUNK_BYTES; d++) {
        while (chunk[d] > 1 && bytes > CHUNK_BYTES) {
            hsize_t half = (chunk[d] + 1) / 2;
            bytes = bytes / chunk[d] * half;
            chunk[d] = half;
        }
    }
}

static int write_tensor(hid_t file, hid_t lcpl, const char *tmp, const char *name, const Param *p,
                        const float *src)
{
    hsize_t dims[TENSOR_MAX_DIMS], chunk[TENSOR_MAX_DIMS];
    for (int d = 0; d < p->ndim; d++) dims[d] = (hsize_t)p->shape[d];
    chunk_shape(p->ndim, dims, chunk);
    hid_t sp = H5Screate_simple(p->ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, p->ndim, chunk);
    H5Pset_shuffle(dcpl);
    H5Pset_deflate(dcpl, DEFLATE_LEVEL);
    /* Last in the pipeline, so the checksum covers the compressed bytes on disk: it is verified
     * before inflate ever sees a damaged chunk. */
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(file, name, H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, src);
    int ret = rc < 0 ? fail_write(tmp, name) : 0;
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return ret;
}

/* All tensors of one flat buffer under `group`. */
static int write_group(hid_t file, hid_t lcpl, const char *tmp, const char *group, const ParamSet *ps,
                       const float *buf)
{
    char name[512];
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        snprintf(name, sizeof name, "%s/%s", group, p->name);
        if (write_tensor(file, lcpl, tmp, name, p, buf + p->offset) < 0) return -1;
    }
    return 0;
}

static int write_root_attrs(hid_t f, const CkptState *s)
{
    int rc = 0;
    rc |= attr_write_str(f, "format", CKPT_FORMAT);
    rc |= attr_write_i64(f, "format_version", CKPT_FORMAT_VERSION);
    rc |= attr_write_i64(f, "step", s->step);
    rc |= attr_write_str(f, "method", s->method);
    rc |= attr_write_str(f, "config", s->config);
    rc |= attr_write(f, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 0, &s->seed);
    rc |= attr_write_i64(f, "data_epoch", s->data_epoch);
    rc |= attr_write_i64(f, "data_index", s->data_index);
    rc |= attr_write_i64(f, "world_size", s->world_size);
    rc |= attr_write_i64(f, "sched_N", s->sched_N);
    rc |= attr_write_f64(f, "sched_mu", s->sched_mu);
    rc |= attr_write_f64(f, "train_seconds", s->train_seconds);
    for (int i = 0; i < s->nattrs; i++) rc |= attr_write_str(f, s->attr_names[i], s->attr_values[i]);
    return rc ? -1 : 0;
}

static int write_optimizer(hid_t f, hid_t lcpl, const char *tmp, const CkptState *s)
{
    char group[256];
    snprintf(group, sizeof group, "/optimizer/%s", optim_kind_name(s->opt->kind));
    hid_t g = H5Gcreate2(f, group, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return fail_write(tmp, group);
    const Adam *a = s->opt;
    float betas[2] = {a->beta1, a->beta2};
    int rc = 0;
    rc |= attr_write_i64(g, "step", a->step);
    rc |= attr_write_f32(g, "betas", betas, 2);
    rc |= attr_write_f32(g, "eps", &a->eps, 0);
    rc |= attr_write_f32(g, "lr", &a->lr, 0);
    rc |= attr_write_f32(g, "weight_decay", &a->weight_decay, 0);
    H5Gclose(g);
    if (rc) return fail_write(tmp, group);
    char sub[300];
    snprintf(sub, sizeof sub, "%s/m", group);
    if (write_group(f, lcpl, tmp, sub, s->ps, a->m) < 0) return -1;
    snprintf(sub, sizeof sub, "%s/v", group);
    return write_group(f, lcpl, tmp, sub, s->ps, a->v);
}

/* A file access list for an HDF5 file held in memory (the core driver, never written back):
 * libhdf5 never touches the disk, so a full disk or a vanished directory is a plain write(2)
 * error of ours, not a failed H5Fclose that leaves the library with a half-closed file (it then
 * crashed at exit in H5F__close_cb, or looped: "HDF5: infinite loop closing library"). */
static hid_t image_fapl(size_t increment)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_core(fapl, increment, false);
    /* The 1.10 format: checksummed superblock, object headers and chunk indexes (checkpoint.h). */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    return fapl;
}

/* Bob Jenkins' lookup3 hash (hashlittle, byte by byte), HDF5's metadata checksum. */
static uint32_t lookup3(const unsigned char *k, size_t length)
{
#define ROT(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
    uint32_t a, b, c;
    a = b = c = 0xdeadbeef + (uint32_t)length;
    for (; length > 12; length -= 12, k += 12) {
        a += k[0] | (uint32_t)k[1] << 8 | (uint32_t)k[2] << 16 | (uint32_t)k[3] << 24;
        b += k[4] | (uint32_t)k[5] << 8 | (uint32_t)k[6] << 16 | (uint32_t)k[7] << 24;
        c += k[8] | (uint32_t)k[9] << 8 | (uint32_t)k[10] << 16 | (uint32_t)k[11] << 24;
        a -= c; a ^= ROT(c, 4);  c += b;
        b -= a; b ^= ROT(a, 6);  a += c;
        c -= b; c ^= ROT(b, 8);  b += a;
        a -= c; a ^= ROT(c, 16); c += b;
        b -= a; b ^= ROT(a, 19); a += c;
        c -= b; c ^= ROT(b, 4);  b += a;
    }
    if (length == 0) return c;
    unsigned char t[12] = {0};
    memcpy(t, k, length);
    a += t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 | (uint32_t)t[3] << 24;
    b += t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 | (uint32_t)t[7] << 24;
    c += t[8] | (uint32_t)t[9] << 8 | (uint32_t)t[10] << 16 | (uint32_t)t[11] << 24;
    c ^= b; c -= ROT(b, 14);
    a ^= c; a -= ROT(c, 11);
    b ^= a; b -= ROT(a, 25);
    c ^= b; c -= ROT(b, 16);
    a ^= c; a -= ROT(c, 4);
    b ^= a; b -= ROT(a, 14);
    c ^= b; c -= ROT(b, 24);
    return c;
#undef ROT
}

/* H5Fget_file_image clears the superblock's status flags (open for writing) in the image but, in
 * HDF5 before 1.14.7 (HDFGroup/hdf5#1915), leaves the superblock checksum as it was, so no reader
 * can open the image. Superblocks of version 2 and 3 (8 signature bytes, version, sizes of
 * offsets and lengths, flags, four addresses, then the checksum) get their checksum recomputed. */
static void fix_superblock_checksum(unsigned char *image, size_t size)
{
    if (size < 12 || memcmp(image, HDF5_SIGNATURE, sizeof HDF5_SIGNATURE) != 0 || image[8] < 2) return;
    size_t n = 12 + 4 * (size_t)image[9];
    if (n + 4 > size) return;
    uint32_t sum = lookup3(image, n);
    for (int i = 0; i < 4; i++) image[n + i] = (unsigned char)(sum >> 8 * i);
}

/* Copies the finished in-memory file f into a malloc'd image and closes f (even on failure). */
static int take_image(hid_t f, const char *tmp, unsigned char **image, size_t *size)
{
    *image = NULL;
    ssize_t n = H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 ? -1 : H5Fget_file_image(f, NULL, 0);
    int rc = n <= SEAL_BYTES ? fail_write(tmp, "the file image") : 0;
    if (rc == 0) {
        *image = cm_malloc((size_t)n);
        *size = (size_t)n;
        if (H5Fget_file_image(f, *image, (size_t)n) != n) rc = fail_write(tmp, "the file image");
    }
    if (H5Fclose(f) < 0 && rc == 0) rc = fail_write(tmp, "the file (close)");
    if (rc != 0) {
        free(*image);
        *image = NULL;
    } else {
        fix_superblock_checksum(*image, *size);
    }
    return rc;
}

/* Builds the whole checkpoint in memory, for write_image. */
static int build_image(const char *tmp, const CkptState *s, unsigned char **image, size_t *size)
{
    size_t sets = (size_t)s->nsets + (s->opt ? 2 : 0);
    hid_t fapl = image_fapl(CM_MAX((size_t)1 << 20, sets * s->ps->total * sizeof(float) / 4));
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) h5_keep();
    H5Pclose(fapl);
    if (f < 0) return fail_write(tmp, "the file");
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);

    int rc = write_root_attrs(f, s) < 0 ? fail_write(tmp, "the root attributes") : 0;
    char group[256];
    for (int i = 0; i < s->nsets && rc == 0; i++) {
        snprintf(group, sizeof group, "/weights/%s", s->sets[i].group);
        rc = write_group(f, lcpl, tmp, group, s->ps, s->sets[i].data);
    }
    if (rc == 0 && s->opt) rc = write_optimizer(f, lcpl, tmp, s);
    /* The marker goes in only after everything else has been written and flushed: a writer that
     * fails or dies before this point leaves a file without it, wherever that file ends up. */
    if (rc == 0 && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) rc = fail_write(tmp, "the file (flush)");
    if (rc == 0 && attr_write_i64(f, "complete", 1) < 0) rc = fail_write(tmp, "the complete attribute");
    H5Pclose(lcpl);
    if (rc != 0) {
        H5Fclose(f);
        return rc;
    }
    return take_image(f, tmp, image, size);
}

/* Writes a new file at tmp, the seal of image (when `sealed`) and then image (atomic_publish then
 * fsyncs and renames it); on failure removes it. */
static int write_image(const char *tmp, const unsigned char *image, size_t size, bool sealed)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return cm_fail("%s: cannot create: %s; the save is abandoned, earlier checkpoints are "
                               "untouched", tmp, strerror(errno));
    char seal[SEAL_BYTES];
    if (sealed) seal_make(seal, image, size);
    int rc = 0;
    for (size_t off = sealed ? 0 : SEAL_BYTES, end = size + SEAL_BYTES; off < end && rc == 0;) {
        const unsigned char *from = off < SEAL_BYTES ? (unsigned char *)seal + off : image + (off - SEAL_BYTES);
        size_t n = off < SEAL_BYTES ? SEAL_BYTES - off : end - off;
        ssize_t put = write(fd, from, n);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0)
            rc = cm_fail("%s: cannot write the file (%s); the save is abandoned, earlier checkpoints are "
                         "untouched", tmp, put < 0 ? strerror(errno) : "no progress");
        else off += (size_t)put;
    }
    if (close(fd) != 0 && rc == 0) rc = cm_fail("%s: cannot write the file (%s)", tmp, strerror(errno));
    if (rc != 0) unlink(tmp);
    return rc;
}

static void check_state(const CkptState *s)
{
    CM_ASSERT(s->ps && s->nsets >= 0 && s->nsets <= CKPT_MAX_SETS, "checkpoint: bad state (nsets %d)",
              s->nsets);
    for (int i = 0; i < s->nsets; i++) {
        const char *g = s->sets[i].group;
        CM_ASSERT(g[0] && g[0] != '/' && s->sets[i].data,
                  "checkpoint: weight set %d needs a group name and data", i);
    }
    /* A '/' would make HDF5 create a subgroup, and the PyTorch name would not round-trip. */
    for (int i = 0; i < s->ps->count; i++)
        CM_ASSERT(!strchr(s->ps->items[i].name, '/'), "checkpoint: parameter name %s contains '/'",
                  s->ps->items[i].name);
    if (s->opt)
        CM_ASSERT(s->opt->n == s->ps->total, "checkpoint: optimiser has %zu floats, the ParamSet %zu",
                  s->opt->n, s->ps->total);
}

int ckpt_save(const char *dir, const CkptState *s, char *path_out, size_t len)
{
    check_state(s);
    char final[PATH_MAX], tmp[PATH_MAX + 8];
    if (snprintf(final, sizeof final, "%s/step_%08ld.h5", dir, s->step) >= (int)sizeof final)
        return cm_fail("%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    if (cm_mkdir_p(dir) < 0) return -1;

    unsigned char *image = NULL;
    size_t size = 0;
    H5Quiet q = h5_quiet();
    int rc = build_image(tmp, s, &image, &size);
    h5_restore(q);
    if (rc == 0) rc = write_image(tmp, image, size, true);
    free(image);
    if (rc != 0) {
        unlink(tmp);   /* a failed save must not leave a partial file behind (disk full) */
        return -1;
    }
    if (atomic_publish(tmp, final, ckpt_test_hook_before_rename) != 0) return -1;
    if (path_out) snprintf(path_out, len, "%s", final);
    return 0;
}

/* ---- stamp: a new copy with one more group ----------------------------------------------- */

static htri_t link_exists(hid_t f, const char *path);

/* The checkpoint at path (verified), read into memory, with `group` and its attributes added:
 * a new sealed image (or an unsealed one, for a checkpoint from before seals). */
static int stamp_image(const char *path, const char *tmp, const char *group, const CkptAttr *attrs, int n,
                       unsigned char **image, size_t *size)
{
    hid_t fapl = image_fapl((size_t)1 << 20);
    H5Pset_file_locking(fapl, false, true);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, fapl);   /* the core driver: edits stay in memory */
    if (f < 0) h5_keep();
    H5Pclose(fapl);
    if (f < 0) return fail_write(tmp, "the copy");
    int rc = 0;
    htri_t exists = link_exists(f, group);
    if (exists > 0 && H5Ldelete(f, group, H5P_DEFAULT) < 0) rc = fail_write(tmp, group);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = rc == 0 ? H5Gcreate2(f, group, lcpl, H5P_DEFAULT, H5P_DEFAULT) : -1;
    if (rc == 0 && g < 0) rc = fail_write(tmp, group);
    H5Pclose(lcpl);
    for (int i = 0; i < n && rc == 0; i++) {
        const CkptAttr *a = &attrs[i];
        int w = a->text ? attr_write_str(g, a->name, a->text)
              : a->integer ? attr_write_i64(g, a->name, (long long)a->number)
                           : attr_write_f64(g, a->name, a->number);
        if (w < 0) rc = fail_write(tmp, a->name);
    }
    if (g >= 0) H5Gclose(g);
    if (rc != 0) {
        H5Fclose(f);
        return rc;
    }
    return take_image(f, tmp, image, size);
}

int ckpt_stamp(const char *path, const char *group, const CkptAttr *attrs, int n)
{
    CM_ASSERT(group[0] == '/', "ckpt_stamp: group %s must be absolute", group);
    if (ckpt_verify(path) != 0) return -1;
    /* A checkpoint from before seals stays without one: it has no user block to hold it. */
    int sealed = seal_check(path);
    if (sealed < 0) return -1;
    char tmp[PATH_MAX + 8];
    if (atomic_tmp_path(path, tmp, sizeof tmp)) return -1;
    unsigned char *image = NULL;
    size_t size = 0;
    H5Quiet q = h5_quiet();
    int rc = stamp_image(path, tmp, group, attrs, n, &image, &size);
    h5_restore(q);
    if (rc == 0) rc = write_image(tmp, image, size, sealed);
    free(image);
    if (rc == 0 && ckpt_verify(tmp) != 0) rc = cm_fail("%s: the stamped copy does not verify: %s", path, cm_errmsg());
    if (rc != 0) {
        unlink(tmp);
        return -1;
    }
    return atomic_publish(tmp, path, NULL);
}

/* ---- open and load ---------------------------------------------------------------------- */

static hid_t open_hdf5(const char *path);

/* Opens `path` and checks that it is a finished checkpoint of a format version we read. Every
 * reader of checkpoints comes through here: libhdf5 sees only files whose seal matches, or, for a
 * checkpoint from before seals, that a child process has walked without harm. */
static hid_t open_checkpoint(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return cm_fail("%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return cm_fail("%s: not a regular file", path);
    if (st.st_size == 0) return cm_fail("%s: empty file", path);
    int sealed = seal_check(path);
    if (sealed < 0 || (sealed == 0 && verify_in_child(path) < 0)) return -1;
    return open_hdf5(path);
}

/* open_checkpoint past the seal: format, version, complete. */
static hid_t open_hdf5(const char *path)
{
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return cm_fail("%s: not an HDF5 file", path);
    }
    hid_t fapl = read_fapl();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f < 0) h5_keep();
    H5Pclose(fapl);
    if (f < 0) return fail_read(path, "the file structure");

    /* The first reads of the root object header: a damaged header fails here. */
    htri_t has_format = H5Aexists(f, "format");
    if (has_format < 0) h5_keep();
    char *format = has_format > 0 ? attr_read_str(f, "format") : NULL;
    bool unreadable = has_format < 0 || (has_format > 0 && !format);
    bool ours = format && strcmp(format, CKPT_FORMAT) == 0;
    free(format);
    long long version = 0, complete = 0;
    int got_version = 0, got_complete = 0, rc = 0;
    if (unreadable)
        rc = fail_read(path, "the root attributes");
    else if (!ours)
        rc = cm_fail("%s: not a cmlab checkpoint (no format=\"%s\" attribute)", path, CKPT_FORMAT);
    else if ((got_version = attr_read(f, "format_version", H5T_NATIVE_LLONG, &version)) != 1)
        rc = got_version < 0 ? fail_read(path, "the format_version attribute")
                             : cm_fail("%s: no format_version attribute", path);
    else if (version < 1 || version > CKPT_FORMAT_VERSION)
        rc = cm_fail("%s: format_version %lld; this cmlab reads versions 1 to %d (a newer cmlab wrote it?)",
                     path, version, CKPT_FORMAT_VERSION);
    else if ((got_complete = attr_read(f, "complete", H5T_NATIVE_LLONG, &complete)) < 0)
        rc = fail_read(path, "the complete attribute");
    else if (complete != 1)
        rc = cm_fail("%s: incomplete checkpoint (no complete=1 attribute: its writer did not finish)", path);
    if (rc < 0) {
        H5Fclose(f);
        return -1;
    }
    return f;
}

/* H5Lexists on every prefix of an absolute path: HDF5 1.10 fails, rather than answering 0, when
 * an intermediate group is missing. */
static htri_t link_exists(hid_t f, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        htri_t e = H5Lexists(f, buf, H5P_DEFAULT);
        *p = c;
        if (e <= 0 || c == '\0') return e;
    }
}

/* Reads the tensors of `group` into `dst` (ParamSet layout), checking names, dtype and shapes. */
static int read_group(hid_t f, const char *path, const char *group, const ParamSet *ps, float *dst)
{
    htri_t exists = link_exists(f, group);
    if (exists == 0)
        return fail_mismatch("%s: has no %s, which this run needs (`cmlab info %s` lists what it holds)",
                             path, group, path);
    hid_t g = exists > 0 ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
    if (g < 0) return fail_read(path, group);

    char name[512], got[96], want[96];
    int rc = 0;
    for (int i = 0; i < ps->count && rc == 0; i++) {
        const Param *p = &ps->items[i];
        snprintf(name, sizeof name, "%s/%s", group, p->name);
        exists = H5Lexists(g, p->name, H5P_DEFAULT);
        if (exists <= 0) {
            rc = exists < 0 ? fail_read(path, name)
                            : fail_mismatch("%s: missing dataset %s (a checkpoint of another architecture?)",
                                            path, name);
            break;
        }
        hid_t d = H5Dopen2(g, p->name, H5P_DEFAULT);
        if (d < 0) {
            rc = fail_read(path, name);
            break;
        }
        hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
        hsize_t dims[8], want_dims[TENSOR_MAX_DIMS];
        int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
        bool same = nd == p->ndim;
        for (int k = 0; k < p->ndim; k++) {
            want_dims[k] = (hsize_t)p->shape[k];
            same = same && dims[k] == want_dims[k];
        }
        if (H5Tget_class(t) != H5T_FLOAT || H5Tget_size(t) != sizeof(float)) {
            rc = fail_mismatch("%s: %s is not float32", path, name);
        } else if (!same) {
            format_shape(got, sizeof got, nd < 0 ? 0 : CM_MIN(nd, 8), dims);
            format_shape(want, sizeof want, p->ndim, want_dims);
            rc = fail_mismatch("%s: %s has shape %s, the network expects %s", path, name, got, want);
        } else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst + p->offset) < 0) {
            rc = fail_read(path, name);
        }
        H5Tclose(t);
        H5Sclose(sp);
        H5Dclose(d);
    }

    /* Strict: a tensor the network does not have means the file belongs to another network. */
    H5G_info_t info = {0};
    if (rc == 0 && H5Gget_info(g, &info) < 0) rc = fail_read(path, group);
    for (hsize_t i = 0; rc == 0 && i < info.nlinks && info.nlinks != (hsize_t)ps->count; i++) {
        ssize_t n = H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, got, sizeof got, H5P_DEFAULT);
        if (n < 0) rc = fail_read(path, group);
        else if (params_find(ps, got) < 0)
            rc = fail_mismatch("%s: %s/%s is not a parameter of this network "
                               "(a checkpoint of another architecture?)", path, group, got);
    }
    H5Gclose(g);
    return rc;
}

/* Fills s from the open checkpoint f (see ckpt_load); f stays open. */
static int load_open(hid_t f, const char *path, CkptState *s)
{
    const ParamSet *ps = s->ps;
    long long step = 0, epoch = 0, index = 0, world = 0, sched_N = 0, opt_step = 0;
    unsigned long long seed = 0;
    double mu = 0;
    /* The root attributes a load restores; every one is required. */
    const struct { const char *name; hid_t type; void *value; } attrs[] = {
        {"step", H5T_NATIVE_LLONG, &step},        {"seed", H5T_NATIVE_ULLONG, &seed},
        {"data_epoch", H5T_NATIVE_LLONG, &epoch}, {"data_index", H5T_NATIVE_LLONG, &index},
        {"world_size", H5T_NATIVE_LLONG, &world}, {"sched_N", H5T_NATIVE_LLONG, &sched_N},
        {"sched_mu", H5T_NATIVE_DOUBLE, &mu},
    };
    char *method = attr_read_str(f, "method"), *config = method ? attr_read_str(f, "config") : NULL;
    int rc = 0;
    if (!method || !config) {
        const char *name = method ? "config" : "method";
        char what[64];
        snprintf(what, sizeof what, "the %s attribute", name);
        rc = H5Aexists(f, name) == 0 ? cm_fail("%s: no %s attribute", path, name) : fail_read(path, what);
    }
    if (rc == 0 && s->method && s->method[0] && strcmp(s->method, method) != 0)
        rc = fail_mismatch("%s: written by method '%s', this run is '%s'", path, method, s->method);
    for (size_t i = 0; i < CM_ARRAY_LEN(attrs) && rc == 0; i++) {
        int got = attr_read(f, attrs[i].name, attrs[i].type, attrs[i].value);
        if (got != 1) {
            char what[64];
            snprintf(what, sizeof what, "the %s attribute", attrs[i].name);
            rc = got < 0 ? fail_read(path, what) : cm_fail("%s: no %s attribute", path, attrs[i].name);
        }
    }

    /* train_seconds is optional: checkpoints from before it was recorded load with -1 (unknown). */
    double seconds = -1;
    if (rc == 0 && attr_read(f, "train_seconds", H5T_NATIVE_DOUBLE, &seconds) < 0)
        rc = fail_read(path, "the train_seconds attribute");

    /* Scratch for everything, so that a failure halfway leaves the caller's buffers untouched. */
    int nbuf = s->nsets + (s->opt ? 2 : 0);
    float *scratch = cm_aligned_alloc((size_t)CM_MAX(nbuf, 1) * ps->total * sizeof(float));
    char group[300];
    for (int i = 0; i < s->nsets && rc == 0; i++) {
        snprintf(group, sizeof group, "/weights/%s", s->sets[i].group);
        rc = read_group(f, path, group, ps, scratch + (size_t)i * ps->total);
    }
    if (rc == 0 && s->opt) {
        float *m = scratch + (size_t)s->nsets * ps->total, *v = m + ps->total;
        const char *kind = optim_kind_name(s->opt->kind);
        snprintf(group, sizeof group, "/optimizer/%s", kind);
        htri_t exists = link_exists(f, group);
        hid_t g = exists > 0 ? H5Gopen2(f, group, H5P_DEFAULT) : -1;
        if (g < 0) {
            rc = exists == 0 ? fail_mismatch("%s: has no %s state, which this run needs", path, group)
                             : fail_read(path, group);
        } else {
            if (attr_read(g, "step", H5T_NATIVE_LLONG, &opt_step) != 1)
                rc = fail_read(path, group);
            H5Gclose(g);
        }
        snprintf(group, sizeof group, "/optimizer/%s/m", kind);
        if (rc == 0) rc = read_group(f, path, group, ps, m);
        snprintf(group, sizeof group, "/optimizer/%s/v", kind);
        if (rc == 0) rc = read_group(f, path, group, ps, v);
    }

    if (rc == 0) {
        for (int b = 0; b < nbuf; b++) {
            float *dst = b < s->nsets ? s->sets[b].data : b == s->nsets ? s->opt->m : s->opt->v;
            const float *src = scratch + (size_t)b * ps->total;
            /* Slice by slice: the padding between slices stays as the caller had it. */
            for (int i = 0; i < ps->count; i++)
                memcpy(dst + ps->items[i].offset, src + ps->items[i].offset, ps->items[i].n * sizeof(float));
        }
        if (s->opt) s->opt->step = (long)opt_step;
        s->step = (long)step;
        s->seed = seed;
        s->data_epoch = (long)epoch;
        s->data_index = (long)index;
        s->world_size = (int)world;
        s->sched_N = (long)sched_N;
        s->sched_mu = mu;
        s->train_seconds = seconds;
        free(s->loaded_config);
        s->loaded_config = config;
        config = NULL;
    }
    free(scratch);
    free(method);
    free(config);
    return rc;
}

/* 0, -1 (not a valid checkpoint) or LOAD_MISMATCH. */
static int load_quiet(const char *path, CkptState *s)
{
    check_state(s);
    H5Quiet q = h5_quiet();
    hid_t f = open_checkpoint(path);
    int rc = f < 0 ? -1 : load_open(f, path, s);
    if (f >= 0) H5Fclose(f);
    h5_restore(q);
    return rc;
}

int ckpt_load(const char *path, CkptState *s) { return load_quiet(path, s) < 0 ? -1 : 0; }

/* ---- a checkpoint held open for several reads ---------------------------------------------- */

struct CkptReader {
    hid_t f;
    char path[PATH_MAX];
};

CkptReader *ckpt_open(const char *path)
{
    H5Quiet q = h5_quiet();
    hid_t f = open_checkpoint(path);
    h5_restore(q);
    if (f < 0) return NULL;
    CkptReader *r = cm_malloc(sizeof *r);
    r->f = f;
    snprintf(r->path, sizeof r->path, "%s", path);
    return r;
}

void ckpt_close(CkptReader *r)
{
    if (!r) return;
    H5Quiet q = h5_quiet();
    H5Fclose(r->f);
    h5_restore(q);
    free(r);
}

const char *ckpt_reader_path(const CkptReader *r) { return r->path; }

int ckpt_reader_load(CkptReader *r, CkptState *s)
{
    check_state(s);
    H5Quiet q = h5_quiet();
    int rc = load_open(r->f, r->path, s);
    h5_restore(q);
    return rc < 0 ? -1 : 0;
}

char *ckpt_reader_attr(CkptReader *r, const char *name)
{
    H5Quiet q = h5_quiet();
    char *text = attr_read_str(r->f, name);
    if (!text) {
        char what[96];
        snprintf(what, sizeof what, "the %s attribute", name);
        fail_read(r->path, what);
    }
    h5_restore(q);
    return text;
}

char *ckpt_read_attr(const char *path, const char *name)
{
    CkptReader *r = ckpt_open(path);
    char *text = r ? ckpt_reader_attr(r, name) : NULL;
    ckpt_close(r);
    return text;
}

char *ckpt_read_config(const char *path) { return ckpt_read_attr(path, "config"); }

typedef struct SetList { char (*names)[64]; int n, max; const char *prefix; } SetList;

/* /weights holds "online", "target", "teacher" and the group "ema" with one group per rate. */
static herr_t list_set(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    (void)info;
    SetList *l = data;
    if (!l->prefix[0] && !strcmp(name, "ema")) {
        SetList sub = {l->names + l->n, 0, l->max - l->n, "ema/"};
        hid_t e = H5Gopen2(g, name, H5P_DEFAULT);
        if (e < 0) return -1;
        herr_t rc = H5Literate(e, H5_INDEX_NAME, H5_ITER_INC, NULL, list_set, &sub);
        H5Gclose(e);
        l->n += sub.n;
        return rc < 0 ? -1 : 0;
    }
    if (l->n < l->max) snprintf(l->names[l->n++], 64, "%s%s", l->prefix, name);
    return 0;
}

int ckpt_reader_weights(CkptReader *r, char names[][64], int max)
{
    H5Quiet q = h5_quiet();
    int n = -1;
    hid_t g = H5Gopen2(r->f, "/weights", H5P_DEFAULT);
    SetList l = {names, 0, max, ""};
    if (g >= 0 && H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, list_set, &l) >= 0) n = l.n;
    else fail_read(r->path, "the /weights group");
    if (g >= 0) H5Gclose(g);
    h5_restore(q);
    return n;
}

int ckpt_list_weights(const char *path, char names[][64], int max)
{
    CkptReader *r = ckpt_open(path);
    int n = r ? ckpt_reader_weights(r, names, max) : -1;
    ckpt_close(r);
    return n;
}

/* ---- directories: latest, prune ------------------------------------------------------------- */

typedef struct CkptFile {
    long step;
    char name[256];
} CkptFile;

static int newest_first(const void *a, const void *b)
{
    const CkptFile *x = a, *y = b;
    if (x->step != y->step) return x->step < y->step ? 1 : -1;
    return -strcmp(x->name, y->name);
}

/* Files of dir named step_<digits><suffix>, newest step first, in a malloc'd array. */
static int list_checkpoints(const char *dir, const char *suffix, CkptFile **out)
{
    DIR *d = opendir(dir);
    if (!d) return cm_fail("%s: cannot open directory: %s", dir, strerror(errno));
    CkptFile *files = NULL;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        const char *digits = e->d_name + 5;
        if (strncmp(e->d_name, "step_", 5) != 0 || *digits < '0' || *digits > '9') continue;
        char *end;
        long step = strtol(digits, &end, 10);
        if (strcmp(end, suffix) != 0 || strlen(e->d_name) >= sizeof files->name) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            files = realloc(files, sizeof *files * (size_t)cap);
            CM_ASSERT(files, "out of memory");
        }
        files[n].step = step;
        snprintf(files[n].name, sizeof files[n].name, "%s", e->d_name);
        n++;
    }
    closedir(d);
    if (n) qsort(files, (size_t)n, sizeof *files, newest_first);
    *out = files;
    return n;
}

int ckpt_load_latest(const char *dir, CkptState *s, char *used, size_t len)
{
    CkptFile *files = NULL;
    int n = list_checkpoints(dir, ".h5", &files);
    if (n < 0) return -1;
    char path[PATH_MAX];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        int rc = load_quiet(path, s);
        if (rc == 0) {
            if (used) snprintf(used, len, "%s", path);
            free(files);
            return 0;
        }
        if (rc == LOAD_MISMATCH) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", cm_errmsg());
            free(files);
            return cm_fail("%s. Not falling back to an older checkpoint: this one is intact but does not "
                           "fit the run (resume with the configuration that wrote it)", msg);
        }
        fprintf(stderr, "%s; %s\n", cm_errmsg(), i + 1 < n ? "falling back" : "no older checkpoint");
    }
    free(files);
    if (n == 0) return cm_fail("%s: no checkpoint (no step_*.h5 file)", dir);
    return cm_fail("%s: none of the %d checkpoints is valid (the reasons are printed above)", dir, n);
}

int ckpt_prune(const char *dir, int keep)
{
    keep = CM_MAX(keep, 1);
    CkptFile *files = NULL;
    int n = list_checkpoints(dir, ".h5", &files);
    if (n < 0) return -1;
    char path[PATH_MAX], newest_valid[256] = "";
    int valid = 0, removed = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        bool remove_it = valid >= keep;   /* older than the keep-th valid one: no need to verify */
        if (!remove_it) {
            if (ckpt_verify(path) == 0) {
                if (!valid++) snprintf(newest_valid, sizeof newest_valid, "%s", files[i].name);
            } else if (valid > 0) {
                fprintf(stderr, "%s; removing it (older than the valid %s)\n", cm_errmsg(), newest_valid);
                remove_it = true;
            }
        }
        if (!remove_it) continue;
        if (unlink(path) == 0) removed++;
        else rc = cm_fail("%s: cannot remove: %s", path, strerror(errno));
    }
    free(files);

    /* .tmp files are only ever left by a writer that died: a live save is in this process. */
    n = list_checkpoints(dir, ".h5.tmp", &files);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        if (unlink(path) == 0) removed++;
        else rc = cm_fail("%s: cannot remove: %s", path, strerror(errno));
    }
    free(files);
    return rc < 0 ? -1 : removed;
}

/* ---- verify and describe ------------------------------------------------------------------- */

/* A recursive walk over groups and datasets in name order. It either verifies (reads every
 * numeric dataset, so every chunk's checksum is checked) or prints (out != NULL). */
typedef struct Walk {
    const char *path;
    char prefix[1024];           /* the HDF5 path of the group being walked */
    FILE *out;
    int rc;
} Walk;

static herr_t walk_link(hid_t g, const char *name, const H5L_info_t *info, void *data);

static int walk_group(hid_t g, Walk *w)
{
    if (H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, walk_link, w) < 0 && w->rc == 0)
        w->rc = fail_read(w->path, w->prefix[0] ? w->prefix : "/");
    return w->rc;
}

static int verify_dataset(hid_t d, const Walk *w, const char *name)
{
    hid_t ft = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(ft);
    int rc = 0;
    if (cls == H5T_FLOAT || cls == H5T_INTEGER) {
        hid_t mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
        hid_t sp = H5Dget_space(d);
        size_t bytes = (size_t)H5Sget_simple_extent_npoints(sp) * H5Tget_size(mt);
        void *buf = cm_malloc(bytes);
        if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) rc = fail_read(w->path, name);
        free(buf);
        H5Sclose(sp);
        H5Tclose(mt);
    }
    H5Tclose(ft);
    return rc;
}

static const char *dtype_name(hid_t t, char *buf, size_t len)
{
    size_t bits = 8 * H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_FLOAT: snprintf(buf, len, "float%zu", bits); break;
    case H5T_INTEGER: snprintf(buf, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits); break;
    case H5T_STRING: snprintf(buf, len, "string"); break;
    default: snprintf(buf, len, "other"); break;
    }
    return buf;
}

static herr_t print_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    FILE *out = data;
    /* A stamped evaluation record's "json" holds the same fields as its other attributes. */
    if (!strcmp(name, "json")) return 0;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return 0;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5T_class_t cls = H5Tget_class(t);
    fprintf(out, " %s=", name);
    if (cls == H5T_STRING) {
        char *s = attr_read_str(loc, name);
        fprintf(out, "\"%s\"", s ? s : "?");
        free(s);
    } else if ((cls == H5T_FLOAT || cls == H5T_INTEGER) && n >= 1 && n <= 16) {
        double v[16];
        /* float32 attributes at float precision: lr=0.0002 rather than 0.000199999995 */
        const char *fmt = cls == H5T_INTEGER                 ? "%s%.0f"
                          : H5Tget_size(t) == sizeof(float) ? "%s%.7g"
                                                            : "%s%.15g";
        if (H5Aread(a, H5T_NATIVE_DOUBLE, v) >= 0) {
            if (n > 1) fputc('[', out);
            for (hssize_t i = 0; i < n; i++) fprintf(out, fmt, i ? ", " : "", v[i]);
            if (n > 1) fputc(']', out);
        }
    } else {
        fprintf(out, "(%lld values)", (long long)n);
    }
    H5Sclose(sp);
    H5Tclose(t);
    H5Aclose(a);
    return 0;
}

/* Datasets directly in a group and their total number of values, for `cmlab info`. */
static herr_t count_values(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    long long *count = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o >= 0 && H5Iget_type(o) == H5I_DATASET) {
        hid_t sp = H5Dget_space(o);
        count[0]++;
        count[1] += (long long)H5Sget_simple_extent_npoints(sp);
        H5Sclose(sp);
    }
    if (o >= 0) H5Oclose(o);
    return 0;
}

static herr_t walk_link(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
    Walk *w = data;
    size_t plen = strlen(w->prefix);
    snprintf(w->prefix + plen, sizeof w->prefix - plen, "/%s", name);
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        w->rc = fail_read(w->path, w->prefix);
        return -1;
    }
    if (H5Iget_type(o) == H5I_GROUP) {
        if (w->out) {
            long long count[2] = {0, 0};
            H5Literate(o, H5_INDEX_NAME, H5_ITER_INC, NULL, count_values, count);
            fprintf(w->out, "  %s/", w->prefix);
            if (count[0]) fprintf(w->out, "  (%lld datasets, %lld values)", count[0], count[1]);
            H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, NULL, print_attr, w->out);
            fputc('\n', w->out);
        }
        walk_group(o, w);
    } else if (H5Iget_type(o) == H5I_DATASET) {
        if (w->out) {
            hid_t t = H5Dget_type(o), sp = H5Dget_space(o);
            hsize_t dims[32];
            int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
            char dt[32], shape[256];
            format_shape(shape, sizeof shape, nd < 0 ? 0 : CM_MIN(nd, 32), dims);
            fprintf(w->out, "  %-56s %-8s %s\n", w->prefix, dtype_name(t, dt, sizeof dt), shape);
            H5Sclose(sp);
            H5Tclose(t);
        } else if (verify_dataset(o, w, w->prefix) < 0) {
            w->rc = -1;
        }
    }
    H5Oclose(o);
    w->prefix[plen] = '\0';
    return w->rc < 0 ? -1 : 0;
}

/* Opens (past the seal) and reads every numeric dataset. */
static int walk_file(const char *path)
{
    hid_t f = open_hdf5(path);
    if (f < 0) return -1;
    Walk w = {.path = path};
    walk_group(f, &w);
    H5Fclose(f);
    return w.rc;
}

static int verify_file(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) return cm_fail("%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return cm_fail("%s: not a regular file", path);
    if (st.st_size == 0) return cm_fail("%s: empty file", path);
    int sealed = seal_check(path);
    if (sealed < 0) return -1;
    /* Unsealed: the child's walk is the whole verification. */
    return sealed ? walk_file(path) : verify_in_child(path);
}

int ckpt_verify(const char *path)
{
    H5Quiet q = h5_quiet();
    int rc = verify_file(path);
    h5_restore(q);
    return rc;
}

static void describe_file(hid_t f, const char *path, FILE *out)
{
    long long version = -1, step = -1, epoch = -1, index = -1, world = -1, sched_N = -1;
    unsigned long long seed = 0;
    double mu = 0, seconds = -1;
    attr_read(f, "format_version", H5T_NATIVE_LLONG, &version);
    attr_read(f, "train_seconds", H5T_NATIVE_DOUBLE, &seconds);
    attr_read(f, "step", H5T_NATIVE_LLONG, &step);
    attr_read(f, "seed", H5T_NATIVE_ULLONG, &seed);
    attr_read(f, "data_epoch", H5T_NATIVE_LLONG, &epoch);
    attr_read(f, "data_index", H5T_NATIVE_LLONG, &index);
    attr_read(f, "world_size", H5T_NATIVE_LLONG, &world);
    attr_read(f, "sched_N", H5T_NATIVE_LLONG, &sched_N);
    attr_read(f, "sched_mu", H5T_NATIVE_DOUBLE, &mu);
    char *method = attr_read_str(f, "method"), *config = attr_read_str(f, "config");
    struct stat st;
    double mb = stat(path, &st) == 0 ? (double)st.st_size / 1e6 : 0;

    fprintf(out, "checkpoint   %s (%.1f MB)\n", path, mb);
    fprintf(out, "format       %s, version %lld, complete, all checksums verified\n", CKPT_FORMAT, version);
    char head[SEAL_BYTES] = {0};
    FILE *in = fopen(path, "rb");
    bool sealed = in && fgets(head, sizeof head, in) && strncmp(head, "cmlab-seal ", 11) == 0;
    if (in) fclose(in);
    head[strcspn(head, "\n")] = '\0';
    fprintf(out, "seal         %s\n", sealed ? head + 11 : "none (written before cmlab sealed its checkpoints)");
    fprintf(out, "step         %lld\n", step);
    fprintf(out, "method       %s\n", method && method[0] ? method : "(none)");
    fprintf(out, "seed         %llu\n", seed);
    fprintf(out, "data cursor  epoch %lld, index %lld\n", epoch, index);
    fprintf(out, "world size   %lld\n", world);
    fprintf(out, "schedule     N(k) = %lld, mu(k) = %.15g\n", sched_N, mu);
    if (seconds >= 0) fprintf(out, "train time   %.1f s\n", seconds);
    else fprintf(out, "train time   unknown (written before cmlab recorded it)\n");
    fprintf(out, "\ngroups and datasets:\n");
    Walk w = {.path = path, .out = out};
    walk_group(f, &w);
    fprintf(out, "\nconfig:\n");
    if (!config || !config[0]) fprintf(out, "  (empty)\n");
    for (const char *line = config; line && *line;) {
        const char *nl = strchr(line, '\n');
        int n = nl ? (int)(nl - line) : (int)strlen(line);
        fprintf(out, "  %.*s\n", n, line);
        line = nl ? nl + 1 : line + n;
    }
    free(method);
    free(config);
}

int ckpt_describe(const char *path, FILE *out)
{
    H5Quiet q = h5_quiet();
    int rc = verify_file(path);
    hid_t f = rc == 0 ? open_hdf5(path) : -1;
    if (f >= 0) {
        describe_file(f, path, out);
        H5Fclose(f);
    }
    h5_restore(q);
    return f >= 0 ? 0 : -1;
}
