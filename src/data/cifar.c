#include "cifar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#define CIFAR_IMAGE_BYTES (CIFAR_RECORD_BYTES - 1)
#define CIFAR_FILE_BYTES ((long long)CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES)
#define CIFAR_CHUNK_RECORDS 100      /* records per read: 300 KB, one gzread call */
#define TAR_BLOCK 512

static const char *const cifar_train_files[] = {
    "data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
    "data_batch_5.bin",
};
static const char *const cifar_test_files[] = {"test_batch.bin"};

static const char cifar_hint[] =
    "set data.path to the cifar-10-batches-bin directory or to cifar-10-binary.tar.gz (the "
    "binary version from https://www.cs.toronto.edu/~kriz/cifar.html)";

/* Both sources are read through zlib: gzread inflates the tarball and reads a plain batch file
 * unchanged (zlib's transparent mode), so one record loop and one error report serve both.
 * pos counts the bytes delivered, for messages. */
typedef struct CifarStream {
    gzFile gz;
    const char *path;
    long long pos;
} CifarStream;

static int cifar_open(CifarStream *s, const char *path)
{
    s->path = path;
    s->pos = 0;
    errno = 0;
    s->gz = gzopen(path, "rb");
    if (!s->gz)
        return cm_fail("%s: cannot open: %s; %s", path, errno ? strerror(errno) : "out of memory",
                       cifar_hint);
    gzbuffer(s->gz, 1 << 17);
    return 0;
}

/* Up to len bytes; fewer only at the end of the data or on an error (cifar_short_read tells). */
static size_t cifar_read_some(CifarStream *s, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        int r = gzread(s->gz, (char *)buf + got, (unsigned)(len - got));
        if (r <= 0) break;
        got += (size_t)r;
    }
    s->pos += (long long)got;
    return got;
}

/* After a short read: the stream's own failure if it has one (a cut or corrupt gzip stream
 * shows up here, possibly before the data that is missing, because zlib inflates ahead),
 * else "truncated" inside `what`. Always returns -1. */
static int cifar_short_read(CifarStream *s, const char *what)
{
    int err = Z_OK;
    const char *zmsg = gzerror(s->gz, &err);
    /* gzerror prefixes its message with the path, which ours already starts with. */
    size_t plen = strlen(s->path);
    if (strncmp(zmsg, s->path, plen) == 0 && strncmp(zmsg + plen, ": ", 2) == 0) zmsg += plen + 2;
    switch (err) {
    case Z_OK:
    case Z_STREAM_END:
        return cm_fail("%s: truncated: the data ends in %s, after %lld bytes; re-download "
                       "cifar-10-binary.tar.gz", s->path, what, s->pos);
    case Z_BUF_ERROR:
        return cm_fail("%s: gzip stream cut short (zlib: %s) after %lld bytes, in %s: the file "
                       "is truncated; re-download cifar-10-binary.tar.gz", s->path, zmsg, s->pos,
                       what);
    case Z_DATA_ERROR:
        return cm_fail("%s: corrupt gzip stream (zlib: %s); re-download cifar-10-binary.tar.gz",
                       s->path, zmsg);
    case Z_ERRNO:
        return cm_fail("%s: read error in %s: %s", s->path, what, strerror(errno));
    default:
        return cm_fail("%s: cannot decompress (zlib error %d: %s)", s->path, err, zmsg);
    }
}

static int cifar_read_exact(CifarStream *s, void *buf, size_t len, const char *what)
{
    return cifar_read_some(s, buf, len) == len ? 0 : cifar_short_read(s, what);
}

/* The shared size rule for a batch file and a tar member: whole records, exactly 10000. */
static int cifar_check_size(const char *where, long long bytes)
{
    if (bytes % CIFAR_RECORD_BYTES != 0)
        return cm_fail("%s: %lld bytes is not a whole number of %d-byte records (1 label byte + "
                       "%d pixel bytes): not a CIFAR-10 binary batch file (CIFAR-100 records "
                       "are 3074 bytes) or a damaged one; re-download cifar-10-binary.tar.gz",
                       where, bytes, CIFAR_RECORD_BYTES, CIFAR_IMAGE_BYTES);
    if (bytes != CIFAR_FILE_BYTES)
        return cm_fail("%s: holds %lld records; every official CIFAR-10 batch file holds "
                       "exactly %d (%lld bytes), so it is truncated or not from "
                       "cifar-10-binary.tar.gz; re-download it", where,
                       bytes / CIFAR_RECORD_BYTES, CIFAR_RECORDS_PER_FILE, CIFAR_FILE_BYTES);
    return 0;
}

/* Reads the 10000 records of one batch file from s into images [slot * 10000, +10000) of d.
 * A record is label, R plane, G plane, B plane: the label goes to labels[], the 3072 pixel
 * bytes are already the planar CHW image. `where` starts messages about the content (the file,
 * or the tarball and member); `what` says where in s a truncation happened. */
static int cifar_read_batch(CifarStream *s, Dataset *d, int slot, const char *where,
                            const char *what)
{
    uint8_t *buf = cm_malloc((size_t)CIFAR_CHUNK_RECORDS * CIFAR_RECORD_BYTES);
    int rc = 0;
    for (int r0 = 0; r0 < CIFAR_RECORDS_PER_FILE && rc == 0; r0 += CIFAR_CHUNK_RECORDS) {
        if (cifar_read_exact(s, buf, (size_t)CIFAR_CHUNK_RECORDS * CIFAR_RECORD_BYTES, what)) {
            rc = -1;
            break;
        }
        for (int k = 0; k < CIFAR_CHUNK_RECORDS; k++) {
            const uint8_t *rec = buf + (size_t)k * CIFAR_RECORD_BYTES;
            if (rec[0] > 9) {
                rc = cm_fail("%s: record %d has label %d; CIFAR-10 labels are 0..9 (a CIFAR-100 "
                             "file?); re-download cifar-10-binary.tar.gz", where, r0 + k, rec[0]);
                break;
            }
            size_t i = (size_t)slot * CIFAR_RECORDS_PER_FILE + (size_t)(r0 + k);
            d->labels[i] = rec[0];
            memcpy(d->pix + i * CIFAR_IMAGE_BYTES, rec + 1, CIFAR_IMAGE_BYTES);
        }
    }
    free(buf);
    return rc;
}

/* ---- the cifar-10-batches-bin directory ---- */

static int cifar_load_dir(Dataset *d, const char *dir, const char *const *files, int nfiles)
{
    for (int f = 0; f < nfiles; f++) {
        char path[4096];
        int w = snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        if (w < 0 || (size_t)w >= sizeof path) return cm_fail("%s: path too long", dir);
        struct stat st;
        if (stat(path, &st) != 0)
            return cm_fail("%s: cannot open: %s; the cifar-10-batches-bin directory holds "
                           "data_batch_1.bin .. data_batch_5.bin and test_batch.bin", path,
                           strerror(errno));
        if (!S_ISREG(st.st_mode)) return cm_fail("%s: not a regular file", path);
        if (cifar_check_size(path, (long long)st.st_size)) return -1;
        CifarStream s;
        if (cifar_open(&s, path)) return -1;
        int rc = cifar_read_batch(&s, d, f, path, "the records");
        gzclose(s.gz);
        if (rc) return -1;
    }
    return 0;
}

/* ---- cifar-10-binary.tar.gz ---- */

/* A numeric ustar field: octal digits, optionally led by spaces, ended by NUL or space (or the
 * field's end). Writers differ in the padding, never in the digits. */
static int tar_octal(const uint8_t *field, int len, long long *out)
{
    int i = 0;
    while (i < len && field[i] == ' ') i++;
    if (i == len || field[i] < '0' || field[i] > '7') return -1;
    long long v = 0;
    for (; i < len && field[i] >= '0' && field[i] <= '7'; i++) v = v * 8 + (field[i] - '0');
    if (i < len && field[i] != '\0' && field[i] != ' ') return -1;
    *out = v;
    return 0;
}

/* POSIX ustar checksum: the sum of the header's bytes with the checksum field taken as eight
 * spaces. Historic writers summed signed chars; both are accepted, as GNU tar does. */
static int tar_checksum_ok(const uint8_t *h)
{
    long long want;
    if (tar_octal(h + 148, 8, &want)) return 0;
    long long sum_u = 0, sum_s = 0;
    for (int i = 0; i < TAR_BLOCK; i++) {
        int b = (i >= 148 && i < 156) ? ' ' : h[i];
        sum_u += b;
        sum_s += (i >= 148 && i < 156) ? ' ' : (signed char)h[i];
    }
    return want == sum_u || want == sum_s;
}

/* The member name: the ustar prefix field (345, 155 bytes), '/', the name field (0, 100 bytes);
 * neither has to be NUL-terminated when full. A leading "./" (tar -C dir .) is dropped. */
static void tar_name(const uint8_t *h, char *out, size_t len)
{
    int nlen = (int)strnlen((const char *)h, 100);
    int plen = memcmp(h + 257, "ustar", 5) == 0 ? (int)strnlen((const char *)h + 345, 155) : 0;
    if (plen)
        snprintf(out, len, "%.*s/%.*s", plen, (const char *)h + 345, nlen, (const char *)h);
    else
        snprintf(out, len, "%.*s", nlen, (const char *)h);
    if (strncmp(out, "./", 2) == 0) memmove(out, out + 2, strlen(out + 2) + 1);
}

/* Reads and throws away n bytes (members we do not want, padding to the next block). */
static int tar_skip(CifarStream *s, long long n, const char *what)
{
    uint8_t buf[1 << 14];
    while (n > 0) {
        size_t want = (size_t)CM_MIN(n, (long long)sizeof buf);
        if (cifar_read_exact(s, buf, want, what)) return -1;
        n -= (long long)want;
    }
    return 0;
}

/* Walks the archive's headers and reads the wanted members wherever they are. A member that
 * appears twice (tar -r) is read twice, so the later copy wins, as extraction would do. After
 * the end-of-archive block the rest of the stream is read too, so zlib reaches the gzip trailer
 * and checks the CRC of everything, not only of the members read. */
static int cifar_load_tar(Dataset *d, const char *path, const char *const *files, int nfiles)
{
    CifarStream s;
    if (cifar_open(&s, path)) return -1;
    int found[CM_ARRAY_LEN(cifar_train_files)] = {0};
    int rc = 0;
    for (;;) {
        uint8_t h[TAR_BLOCK];
        long long at = s.pos;
        size_t got = cifar_read_some(&s, h, sizeof h);
        if (got == 0) {
            /* No end-of-archive block: accepted if the stream itself ended cleanly. */
            int err;
            gzerror(s.gz, &err);
            if (err != Z_OK && err != Z_STREAM_END) rc = cifar_short_read(&s, "a tar header");
            break;
        }
        if (got < sizeof h) {
            rc = cifar_short_read(&s, "a tar header");
            break;
        }
        int zero = 1;
        for (int i = 0; i < TAR_BLOCK && zero; i++) zero = h[i] == 0;
        if (zero) {
            while (cifar_read_some(&s, h, sizeof h) == sizeof h) {}
            int err;
            gzerror(s.gz, &err);
            if (err != Z_OK && err != Z_STREAM_END) rc = cifar_short_read(&s, "the end of the tar");
            break;
        }
        if (!tar_checksum_ok(h)) {
            if (at == 0)
                rc = cm_fail("%s: not a tar archive (the first header fails its checksum); %s",
                             path, cifar_hint);
            else
                rc = cm_fail("%s: damaged tar archive: the header at byte %lld of the tar fails "
                             "its checksum; re-download cifar-10-binary.tar.gz", path, at);
            break;
        }
        char name[300];
        tar_name(h, name, sizeof name);
        long long size;
        if (tar_octal(h + 124, 12, &size)) {
            rc = cm_fail("%s: tar member %s has a size field that is not octal (a member of "
                         "8 GiB or more?); the archive is not cifar-10-binary.tar.gz", path, name);
            break;
        }
        char type = (char)h[156];
        long long padded = (size + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK;
        char what[320], where[4096 + 2 + 320];
        snprintf(what, sizeof what, "member %s", name);
        snprintf(where, sizeof where, "%s: %s", path, what);

        int slot = -1;
        const char *base = strncmp(name, CIFAR_DIR_NAME "/", sizeof CIFAR_DIR_NAME) == 0
                               ? name + sizeof CIFAR_DIR_NAME : NULL;
        for (int f = 0; base && (type == '0' || type == '\0') && f < nfiles; f++)
            if (strcmp(base, files[f]) == 0) slot = f;
        if (slot < 0) {
            if (tar_skip(&s, padded, what)) { rc = -1; break; }
            continue;
        }
        if (cifar_check_size(where, size) || cifar_read_batch(&s, d, slot, where, what) ||
            tar_skip(&s, padded - size, what)) {
            rc = -1;
            break;
        }
        found[slot] = 1;
    }
    gzclose(s.gz);
    if (rc) return -1;
    for (int f = 0; f < nfiles; f++)
        if (!found[f])
            return cm_fail("%s: no member %s/%s in the archive; cifar-10-binary.tar.gz (the "
                           "binary version, not the python or matlab one) holds %s/"
                           "data_batch_1..5.bin and test_batch.bin", path, CIFAR_DIR_NAME,
                           files[f], CIFAR_DIR_NAME);
    return 0;
}

/* ---- entry point ---- */

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cifar_load(Dataset *d, const char *path, const char *split)
{
    memset(d, 0, sizeof *d);
    const char *const *files;
    int nfiles;
    if (strcmp(split, "train") == 0) {
        files = cifar_train_files;
        nfiles = (int)CM_ARRAY_LEN(cifar_train_files);
    } else if (strcmp(split, "test") == 0) {
        files = cifar_test_files;
        nfiles = (int)CM_ARRAY_LEN(cifar_test_files);
    } else {
        return cm_fail("%s: unknown CIFAR-10 split '%s'; use train or test", path, split);
    }

    struct stat st;
    if (stat(path, &st) != 0)
        return cm_fail("%s: cannot open: %s; %s", path, strerror(errno), cifar_hint);

    /* Which layout: the tarball itself, the batches directory, or a directory holding either. */
    char sub[4096];
    const char *dir = NULL, *tar = NULL;
    if (!S_ISDIR(st.st_mode)) {
        tar = path;
    } else {
        char probe[4096];
        snprintf(probe, sizeof probe, "%s/%s", path, "data_batch_1.bin");
        int here = is_file(probe);
        snprintf(probe, sizeof probe, "%s/%s", path, "test_batch.bin");
        here = here || is_file(probe);
        if (here) {
            dir = path;
        } else {
            snprintf(sub, sizeof sub, "%s/%s", path, CIFAR_DIR_NAME);
            if (is_dir(sub)) {
                dir = sub;
            } else {
                snprintf(sub, sizeof sub, "%s/%s", path, CIFAR_TAR_NAME);
                if (!is_file(sub))
                    return cm_fail("%s: holds neither the CIFAR-10 batch files (data_batch_1.bin "
                                   ".. test_batch.bin) nor %s/ nor %s; %s", path, CIFAR_DIR_NAME,
                                   CIFAR_TAR_NAME, cifar_hint);
                tar = sub;
            }
        }
    }

    d->n = nfiles * CIFAR_RECORDS_PER_FILE;
    d->c = CIFAR_CHANNELS;
    d->h = d->w = CIFAR_SIDE;
    d->pix = cm_malloc((size_t)d->n * CIFAR_IMAGE_BYTES);
    d->labels = cm_malloc((size_t)d->n * sizeof *d->labels);
    int rc = tar ? cifar_load_tar(d, tar, files, nfiles) : cifar_load_dir(d, dir, files, nfiles);
    if (rc) {
        dataset_free(d);
        return -1;
    }
    /* source is a label for logs: a path of more than 400 characters is cut there. */
    snprintf(d->source, sizeof d->source, "cifar10 %.400s (%s)", tar ? tar : dir, split);
    return 0;
}
