/* checkpoint.h: HDF5 checkpoints that survive a crash, verify on load, and open in h5py.
 *
 * Layout of <dir>/step_XXXXXXXX.h5 (DESIGN.md "Checkpoints (HDF5)"):
 *   /                          attrs: format="cmlab-checkpoint", format_version=1, step, method,
 *                              config (resolved text), seed, data_epoch, data_index, world_size,
 *                              sched_N, sched_mu, train_seconds (since issue #20; a file without
 *                              it loads with -1), a method's own string attributes (AMED:
 *                              amed_teacher_sha256, amed_teacher_weights, nonfinite_skipped),
 *                              and complete=1, written last
 *   /weights/<set>/<name>      float32 in PyTorch shape (<set>: "online", "target", "ema/0.9999",
 *                              "teacher", ...; <name>: the ParamSet's dotted name)
 *   /optimizer/<kind>/m/<name>, /optimizer/<kind>/v/<name>   Adam moments, same names and shapes;
 *                              attrs on /optimizer/<kind>: step, betas, eps, lr, weight_decay
 *   /eval/<record>             attrs only: one evaluation record (src/eval/eval.h), stamped by
 *                              ckpt_stamp into a new copy of the file
 * Every dataset is chunked (at most 1 MiB per chunk) with shuffle + deflate (zlib level 1) +
 * Fletcher32, so any damaged byte of tensor data fails its chunk's checksum on read. The file is
 * written in the HDF5 1.10 format, whose object headers, superblock and chunk indexes carry
 * metadata checksums too (readers need HDF5 >= 1.10: h5py on any current system). Strings are
 * fixed-length UTF-8, so that they are covered by those checksums (h5py returns numpy bytes:
 * f.attrs["config"].decode()); integers are int64 (seed uint64); sched_mu and train_seconds float64; optimizer
 * attrs float32 like the Adam struct.
 *
 * The seal: the file starts with a 512-byte HDF5 user block (skipped by every HDF5 reader)
 * holding one line, "cmlab-seal 1 bytes <n> crc32 <hex>", over the n bytes that follow. libhdf5
 * is not safe on damaged metadata (a flipped bit in a B-tree or heap signature crashed it), so
 * no file reaches libhdf5 before its size and CRC-32 match. Checkpoints from before the seal
 * (HDF5 signature at offset 0) are walked by a child process first, so a crash there refuses
 * the file instead of killing the caller.
 *
 * Write protocol, and why: a killed or preempted writer must never leave a file that looks like
 * a checkpoint (reference/users.md 4.1). So the HDF5 file is built in memory (libhdf5's core
 * driver: a full disk is then a write(2) error of ours, never a half-closed HDF5 file that crashes
 * the library at exit), complete=1 set last, sealed, written as `<final>.tmp`, fsync()ed, renamed
 * to its final name (atomic on POSIX), and the directory is fsync()ed so the rename itself
 * survives a power loss. A crash at any moment leaves either the old set of checkpoints plus a
 * stale .tmp, or the new complete file. The image costs memory of the file's size while it is
 * written.
 *
 * Loading verifies: the seal, the file opens, format and version match, complete == 1, every dataset the
 * state needs exists with the right shape and dtype and passes its checksums. Loading is
 * all-or-nothing: everything is read into scratch memory first, and the caller's buffers change
 * only when all of it succeeded. Errors follow common.h: -1 after cm_fail() with a message that
 * starts with the file's path and says what is wrong. Call from one thread: Debian's HDF5 is the
 * non-thread-safe build.
 */
#ifndef CM_CHECKPOINT_H
#define CM_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nn/optim.h"
#include "nn/params.h"

enum { CKPT_FORMAT_VERSION = 1, CKPT_MAX_SETS = 8, CKPT_MAX_ATTRS = 4 };

/* One weight set: a flat buffer of ps->total floats in the ParamSet layout. */
typedef struct CkptWeights {
    char group[64];              /* "online", "target", "ema/0.9999", "teacher" ... */
    float *data;
} CkptWeights;

/* The complete training state. Trainers fill it once with pointers to their buffers; ckpt_save
 * reads it, ckpt_load writes into the same buffers. */
typedef struct CkptState {
    const ParamSet *ps;
    CkptWeights sets[CKPT_MAX_SETS];
    int nsets;
    Adam *opt;                   /* NULL: no optimiser state; else its kind names the group
                                    /optimizer/adam, adamw or radam (optim_kind_name) */
    long step;
    const char *method;          /* experiment.method: the method record's name (train/method.h) */
    const char *config;          /* the resolved configuration text */
    uint64_t seed;
    long data_epoch, data_index; /* data cursor: the next batch starts here */
    int world_size;
    long sched_N;                /* schedule state: the discretisation N(k) ... */
    double sched_mu;             /* ... and the EMA rate mu(k) at `step` */
    double train_seconds;        /* wall seconds of the training loop behind this state, summed over
                                    resumes (sample grids and checkpoints included, start-up not;
                                    the time to FD curves of issue #20 plot against it); -1: unknown */
    /* A method's own root string attributes (AMED: its teacher's identity), written by ckpt_save
     * and read back with ckpt_read_attr; ckpt_load ignores them. */
    const char *attr_names[CKPT_MAX_ATTRS], *attr_values[CKPT_MAX_ATTRS];
    int nattrs;
    /* Output of ckpt_load only: a malloc'd copy of the file's config text. A successful load
     * frees the previous value first, so a state reused across loads does not leak; the owner
     * frees it at the end (free(s.loaded_config)). Ignored by ckpt_save. */
    char *loaded_config;
} CkptState;

/* Appends a weight set (the group name is copied); aborts past CKPT_MAX_SETS. */
void ckpt_add_weights(CkptState *s, const char *group, float *data);
/* Appends every EMA of e as "ema/<name>". */
void ckpt_add_emas(CkptState *s, const EmaSet *e);

/* Writes <dir>/step_%08ld.h5 (dir created if missing) by the protocol above; the final path goes
 * to path_out (may be NULL). An existing file of the same step is replaced atomically. */
int ckpt_save(const char *dir, const CkptState *s, char *path_out, size_t len);

/* Verifies `path` and fills, in place: every weight set of s (by group name), the optimiser's m,
 * v and step when s->opt is set (from the group of its kind), and step, seed, data cursor,
 * world_size, sched_N, sched_mu, train_seconds, loaded_config: the state as it was saved, so the caller compares
 * world_size (and the config) with its own. Optimiser hyperparameters (lr, betas, eps, weight
 * decay) come from the config, not the file. Refused: a file whose method differs from a
 * non-empty s->method, a missing group or tensor, a shape that differs, and a group holding a
 * tensor the ParamSet lacks (strict, like PyTorch's load_state_dict). Groups the state does not
 * ask for (another EMA, /eval) are ignored, so a sampler can load just "ema/0.9999". On failure
 * nothing in s or its buffers has changed. */
int ckpt_load(const char *path, CkptState *s);

/* Tries <dir>/step_*.h5 newest step first; prints each damaged, truncated or incomplete file and
 * why to stderr ("<path>: checksum mismatch in /weights/online/conv_in.weight; falling back"),
 * loads the first valid one and writes its path to `used` (may be NULL). -1 with cm_fail if the
 * directory has no checkpoint or none is valid, and also, without falling back, at an intact
 * checkpoint that does not fit s (another method, network or optimiser): an older file may fit,
 * but resuming from it would silently discard the newer training. */
int ckpt_load_latest(const char *dir, CkptState *s, char *used, size_t len);

/* Root string attribute `name` of a valid-looking checkpoint (format, version and complete
 * checked), malloc'd; NULL after cm_fail() naming the file and the attribute when it is missing. */
char *ckpt_read_attr(const char *path, const char *name);

/* The configuration text of a valid-looking checkpoint (format, version and complete checked;
 * tensors are verified when loaded), malloc'd; NULL after cm_fail(). */
char *ckpt_read_config(const char *path);

/* The weight sets of a checkpoint ("ema/0.999", "online", ...) in name order, at most max;
 * returns the count, or -1 after cm_fail(). */
int ckpt_list_weights(const char *path, char names[][64], int max);

/* A checkpoint held open for several reads. Each path-taking reader above checks the file's seal
 * (a CRC-32 of the whole file) before libhdf5 opens it; a reader checks it once, in ckpt_open, so
 * loading a network (its config, its weight sets, its weights) reads the file once, not three
 * times. ckpt_open: NULL after cm_fail(). The others behave as their path-taking namesakes;
 * ckpt_close(NULL) does nothing. */
typedef struct CkptReader CkptReader;
CkptReader *ckpt_open(const char *path);
void ckpt_close(CkptReader *r);
const char *ckpt_reader_path(const CkptReader *r);
char *ckpt_reader_attr(CkptReader *r, const char *name);
int ckpt_reader_weights(CkptReader *r, char names[][64], int max);
int ckpt_reader_load(CkptReader *r, CkptState *s);

/* Full integrity check without a state: opens, checks format, version and complete, and reads
 * every numeric dataset so that every checksum is verified. 0 if valid. */
int ckpt_verify(const char *path);

/* Keeps the newest `keep` valid checkpoints of dir (keep < 1 counts as 1: the newest valid one is
 * never removed) and removes the older ones; also removes invalid checkpoints older than the
 * newest valid one (resume can never prefer them) and stale step_*.h5.tmp files left by killed
 * writers. Invalid files newer than the newest valid one are left for the user to inspect (the
 * next save of that step replaces them). Must not run while another process saves into dir.
 * Returns the number of files removed, -1 on error. */
int ckpt_prune(const char *dir, int keep);

/* `cmlab info`: verifies `path` like ckpt_verify, then prints the format, step, method, seed,
 * cursor, schedule, every group (with its attributes) and dataset (dtype and shape), and the
 * config text. -1 with cm_fail (nothing printed) if the file is missing, damaged or incomplete. */
int ckpt_describe(const char *path, FILE *out);

/* One attribute of a stamped group: a string (text != NULL), an int64 (integer) or a float64. */
typedef struct CkptAttr {
    const char *name;
    const char *text;
    double number;
    bool integer;
} CkptAttr;

/* Adds group `group` (e.g. "/eval/fd.heun.nfe35"; parents are created, an existing group of that
 * name is replaced) with attributes attrs[0..n) to checkpoint `path`, without ever modifying the
 * published file: path is verified, copied to path.tmp, the group is written there, the copy is
 * fsync()ed and verified, renamed over path, and the directory fsync()ed. A crash or a failure at
 * any point leaves path as it was (and at worst a stale .tmp, which ckpt_prune removes). Not for a
 * checkpoint another process is writing or pruning at the same moment. -1 after cm_fail(). */
int ckpt_stamp(const char *path, const char *group, const CkptAttr *attrs, int n);

/* Test hook, NULL in production: called by ckpt_save after the .tmp file is complete and
 * fsync()ed and just before the rename, so a test can SIGKILL the writer at the one moment when
 * a complete but unpublished file exists. */
extern void (*ckpt_test_hook_before_rename)(const char *tmp_path);

#endif
