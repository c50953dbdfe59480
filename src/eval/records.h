/* records.h: evaluation records: everything needed to reproduce a number, as one flat JSON object
 * per line of <run>/eval.json and as attributes stamped into the checkpoint.
 *
 * Records: one per (checkpoint, sampler, NFE), a flat JSON object (EvalRecord below), appended to
 * <run>/eval.json (a JSON array, one record per line, rewritten through .tmp + rename) and stamped
 * into a new copy of the checkpoint as attributes of /eval/<record name> (ckpt_stamp: the
 * checkpoint's own tmp + fsync + rename protocol; the file is never modified in place).
 */
#ifndef CM_RECORDS_H
#define CM_RECORDS_H

#include <stddef.h>
#include <stdio.h>

#define EVAL_TEXT 512

/* One evaluation: everything needed to reproduce the number. */
typedef struct EvalRecord {
    char metric[32];             /* "fd" or "test_accuracy" */
    double value;
    char checkpoint[EVAL_TEXT];
    long step;
    char method[16];
    char weights[64];            /* the weight set evaluated */
    char feature_net[EVAL_TEXT];
    char feature_hash[72];       /* "sha256:<hex>" */
    char feature_weights[64];
    char dataset[32];
    char reference[16];          /* the split of the reference statistics, "train" */
    long reference_n;
    int n;                       /* generated samples */
    int seed;                    /* sample i starts from the noise of (seed, STREAM_SAMPLE, sample i) */
    char sampler[32];            /* "heun", ..., or "consistency" */
    char schedule[32];
    int nfe;
    char times[EVAL_TEXT];       /* the sampler's time points, e.g. "80,24.4,...,0.002,0" */
    char options[160];           /* the solver's options that change samples beyond the times */
    double sample_seconds, feature_seconds;
    char grid[EVAL_TEXT];        /* the PNG of the first 64 samples, relative to the run directory */
    char date[32];               /* UTC, ISO 8601 */
} EvalRecord;

/* s as a JSON string, quoted and escaped. */
void eval_json_string(FILE *f, const char *s);
/* The record as one line of JSON (no newline), malloc'd. */
char *eval_record_json(const EvalRecord *r);
/* Appends records to the JSON array in path (created if missing) through path.tmp + rename. */
int eval_json_append(const char *path, const EvalRecord *r, int count);
/* The records of an eval.json (flat objects, one per line, as eval_json_append writes them);
 * malloc'd array in *out (free()), count returned, 0 if the file does not exist, -1 after
 * cm_fail() for a malformed file. Only the fields of EvalRecord are read; others are ignored. */
int eval_json_read(const char *path, EvalRecord **out);

/* The name of r's group under /eval: <metric>.<sampler>.nfe<N>.n<n>.seed<S>.<weights>.<feature
 * hash, 8 digits>.<8 digits of the SHA-256 of schedule, times and options>, so that two
 * evaluations that can differ in value (another mid_t, schedule or solver option) never share a
 * name; <metric>.<weights> for a record without a sampler (test accuracy). */
void eval_record_name(const EvalRecord *r, char *out, size_t len);
/* Stamps r into its checkpoint (r->checkpoint) as /eval/<eval_record_name> (ckpt_stamp). */
int eval_record_stamp(const EvalRecord *r);

#endif
