#include "idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

/* A header whose dims describe more than this is taken as corrupt rather than as a dataset:
 * MNIST-style sets (MNIST, Fashion-MNIST, EMNIST) are under 1 GiB, and the bound keeps the size
 * arithmetic far from overflow. */
#define IDX_MAX_BYTES ((size_t)1 << 32)
_Static_assert(sizeof(size_t) >= 8, "idx.c's size checks assume a 64-bit size_t");

/* The data buffer grows as bytes arrive instead of being sized from the header up front, so a
 * corrupt header that claims gigabytes in a tiny file fails as "truncated", not as an abort in
 * the allocator. */
#define IDX_FIRST_ALLOC ((size_t)1 << 20)

/* gzread takes an unsigned count and returns an int: read in pieces well below INT_MAX. */
#define IDX_READ_CHUNK ((size_t)1 << 30)

static const char *idx_type_name(int type)
{
    switch (type) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "not an IDX type";
    }
}

/* Reads up to len bytes; returns how many arrived. Stops early at end of file or on an error,
 * which idx_stream_error then tells apart. */
static size_t idx_read(gzFile gz, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        size_t want = CM_MIN(len - got, IDX_READ_CHUNK);
        int r = gzread(gz, (char *)buf + got, (unsigned)want);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* After a short read: if the stream itself failed (I/O error, corrupt or cut gzip data) record
 * that and return -1; return 0 for a plain end of file, which the caller reports in its terms.
 * `where` names the part being read; it is left out for corrupt streams, since zlib inflates
 * ahead of the reader and may find the damage (or the trailer's CRC) long before that part. */
static int idx_stream_error(gzFile gz, const char *path, const char *where)
{
    int err = Z_OK;
    const char *zmsg = gzerror(gz, &err);
    /* gzerror prefixes its message with the path, which ours already starts with. */
    size_t plen = strlen(path);
    if (strncmp(zmsg, path, plen) == 0 && strncmp(zmsg + plen, ": ", 2) == 0) zmsg += plen + 2;
    switch (err) {
    case Z_OK:
    case Z_STREAM_END:
        return 0;
    case Z_ERRNO:
        return cm_fail("%s: read error %s: %s", path, where, strerror(errno));
    case Z_DATA_ERROR:
        return cm_fail("%s: corrupt gzip stream (zlib: %s); re-download or reinstall the "
                       "dataset", path, zmsg);
    case Z_BUF_ERROR:
        return cm_fail("%s: gzip stream cut short %s (zlib: %s): the .gz file is truncated; "
                       "re-download or reinstall the dataset", path, where, zmsg);
    default:
        return cm_fail("%s: cannot decompress %s (zlib error %d: %s)", path, where, err, zmsg);
    }
}

static void idx_format_dims(char *buf, size_t len, int ndim, const long long *dims)
{
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, i ? "x%lld" : "%lld", dims[i]);
}

/* Header: 4 magic bytes, then ndim big-endian int32 dims. Fills ndim/dims/n of out. */
static int idx_read_header(gzFile gz, const char *path, IdxArray *out)
{
    uint8_t magic[4];
    size_t got = idx_read(gz, magic, sizeof magic);
    if (got < sizeof magic) {
        if (idx_stream_error(gz, path, "in the IDX header")) return -1;
        return cm_fail("%s: truncated in the IDX header: the file holds %zu bytes, the magic "
                       "number alone needs 4; re-download or reinstall the dataset", path, got);
    }
    if (magic[0] != 0 || magic[1] != 0)
        return cm_fail("%s: not an IDX file: magic bytes %02x %02x %02x %02x, expected "
                       "00 00 08 <ndims> (MNIST-format .idx*-ubyte or .gz)",
                       path, magic[0], magic[1], magic[2], magic[3]);
    if (magic[2] != 0x08)
        return cm_fail("%s: IDX element type 0x%02x (%s) is not supported: cmlab reads "
                       "unsigned-byte (0x08) files such as MNIST and Fashion-MNIST",
                       path, magic[2], idx_type_name(magic[2]));
    int ndim = magic[3];
    if (ndim < 1 || ndim > IDX_MAX_DIMS)
        return cm_fail("%s: IDX header has %d dimensions; cmlab reads 1 to %d (labels 1, "
                       "images 3)", path, ndim, IDX_MAX_DIMS);

    uint8_t raw[4 * IDX_MAX_DIMS];
    size_t need = 4 * (size_t)ndim;
    got = idx_read(gz, raw, need);
    if (got < need) {
        if (idx_stream_error(gz, path, "in the IDX header")) return -1;
        return cm_fail("%s: truncated in the IDX header: it ends %zu bytes into the %zu bytes "
                       "of dimensions; re-download or reinstall the dataset", path, got, need);
    }

    long long dims[IDX_MAX_DIMS];
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *b = raw + 4 * i;
        int32_t d = (int32_t)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
                              (uint32_t)b[2] << 8 | (uint32_t)b[3]);
        dims[i] = d;
        if (d < 1)
            return cm_fail("%s: IDX dimension %d is %d; every dimension must be at least 1 "
                           "(corrupt header)", path, i, (int)d);
        /* Checked before multiplying: n <= IDX_MAX_BYTES < 2^32 and d < 2^31 cannot overflow. */
        n *= (size_t)d;
        if (n > IDX_MAX_BYTES) {
            char txt[96];
            idx_format_dims(txt, sizeof txt, i + 1, dims);
            return cm_fail("%s: IDX dimensions %s%s describe more than %zu bytes; the header "
                           "is corrupt", path, txt, i + 1 < ndim ? "x..." : "", IDX_MAX_BYTES);
        }
    }

    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) out->dims[i] = (int)dims[i];
    out->n = n;
    return 0;
}

static int idx_read_data(gzFile gz, const char *path, IdxArray *out)
{
    char txt[96];
    long long dims[IDX_MAX_DIMS];
    for (int i = 0; i < out->ndim; i++) dims[i] = out->dims[i];
    idx_format_dims(txt, sizeof txt, out->ndim, dims);

    size_t cap = CM_MIN(out->n, IDX_FIRST_ALLOC), got = 0;
    out->data = cm_malloc(cap);
    for (;;) {
        size_t r = idx_read(gz, out->data + got, cap - got);
        got += r;
        if (got < cap) break;
        if (cap == out->n) break;
        cap = CM_MIN(2 * cap, out->n);
        uint8_t *grown = realloc(out->data, cap);
        CM_ASSERT(grown, "out of memory growing an IDX buffer to %zu bytes", cap);
        out->data = grown;
    }
    if (got < out->n) {
        if (idx_stream_error(gz, path, "in the data")) return -1;
        return cm_fail("%s: truncated: the header's dims %s need %zu data bytes but the file "
                       "holds only %zu; re-download or reinstall the dataset",
                       path, txt, out->n, got);
    }

    /* One more read: it must find the end. For .gz files it also makes zlib reach the stream
     * trailer, so a CRC or length mismatch (a corrupt stream that still inflated) is caught. */
    uint8_t extra[64];
    size_t more = idx_read(gz, extra, sizeof extra);
    if (idx_stream_error(gz, path, "at the end of the data")) return -1;
    if (more > 0)
        return cm_fail("%s: %zu%s bytes follow the %zu data bytes that the header's dims %s "
                       "describe; the file is not a valid IDX file", path, more,
                       more == sizeof extra ? "+" : "", out->n, txt);
    return 0;
}

int idx_load(const char *path, IdxArray *out)
{
    memset(out, 0, sizeof *out);
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz)
        return cm_fail("%s: cannot open: %s; check the path", path,
                       errno ? strerror(errno) : "out of memory");
    int rc = idx_read_header(gz, path, out);
    if (rc == 0) rc = idx_read_data(gz, path, out);
    gzclose(gz);
    if (rc) idx_free(out);
    return rc;
}

static int idx_load_ndim(const char *path, IdxArray *out, int ndim, const char *what)
{
    if (idx_load(path, out)) return -1;
    if (out->ndim != ndim) {
        int got = out->ndim;
        idx_free(out);
        return cm_fail("%s: holds a %d-dimensional IDX array, expected %s (%d dimension%s)",
                       path, got, what, ndim, ndim == 1 ? "" : "s");
    }
    return 0;
}

int idx_load_images(const char *path, IdxArray *out)
{
    return idx_load_ndim(path, out, 3, "images [N, H, W]");
}

int idx_load_labels(const char *path, IdxArray *out)
{
    return idx_load_ndim(path, out, 1, "labels [N]");
}

void idx_free(IdxArray *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* <dir>/<split>-<kind>-idx<d>-ubyte.gz if it exists, else the uncompressed name if that exists.
 * Returns -1 (with a message naming both) when neither does. */
static int idx_split_path(char *buf, size_t len, const char *dir, const char *split,
                          const char *kind)
{
    int w = snprintf(buf, len, "%s/%s-%s-ubyte.gz", dir, split, kind);
    CM_ASSERT(w > 0 && (size_t)w < len, "dataset path too long: %s/%s-%s-ubyte.gz",
              dir, split, kind);
    if (access(buf, F_OK) == 0) return 0;
    buf[w - 3] = '\0';
    if (access(buf, F_OK) == 0) return 0;
    return cm_fail("%s/%s-%s-ubyte.gz: no such file (nor %s); for Fashion-MNIST install the "
                   "Debian package dataset-fashion-mnist (files in "
                   "/usr/share/datasets/fashion-mnist), or point the dataset path at a "
                   "directory holding MNIST-format files", dir, split, kind, buf);
}

int idx_load_split(const char *dir, const char *split, IdxArray *images, IdxArray *labels)
{
    char ipath[4096], lpath[4096];
    memset(images, 0, sizeof *images);
    memset(labels, 0, sizeof *labels);
    if (idx_split_path(ipath, sizeof ipath, dir, split, "images-idx3")) return -1;
    if (idx_split_path(lpath, sizeof lpath, dir, split, "labels-idx1")) return -1;
    if (idx_load_images(ipath, images)) return -1;
    if (idx_load_labels(lpath, labels)) {
        idx_free(images);
        return -1;
    }
    if (images->dims[0] != labels->dims[0]) {
        int ni = images->dims[0], nl = labels->dims[0];
        idx_free(images);
        idx_free(labels);
        return cm_fail("%s: holds %d images but %s holds %d labels; the two files belong to "
                       "different datasets or splits", ipath, ni, lpath, nl);
    }
    return 0;
}
