/* rundir.h: the run directory (DESIGN.md "Run directory"), the one place that knows its layout:
 *
 *   <out_dir>/<name>/config.ini                 the resolved configuration (every key)
 *   <out_dir>/<name>/metrics.jsonl              one JSON object per logged step
 *   <out_dir>/<name>/ckpt/step_XXXXXXXX.h5      checkpoints (checkpoint.h)
 *   <out_dir>/<name>/samples/step_XXXXXXXX.png  sample grids at a fixed seed
 *   <out_dir>/<name>/eval.json                  evaluation records (eval/records.h)
 *
 * Every file in it is published through io/atomic.h, except metrics.jsonl, which is appended to
 * (and rewritten atomically when a resume drops the lines past the checkpoint).
 */
#ifndef CM_RUNDIR_H
#define CM_RUNDIR_H

#include <stdbool.h>
#include <stddef.h>

#include "io/experiment.h"

typedef struct RunDir {
    char root[512], ckpt[600], samples[600], metrics[600];
} RunDir;

/* The paths of cfg's run directory <experiment.out_dir>/<experiment.name>. */
void rundir_paths(RunDir *d, const Config *cfg);
/* Makes the directory for a run and writes config.ini. A fresh run (resume false) over one
 * that has checkpoints is refused: their checkpoints would mix, and pruning would then delete
 * the new run's files as the older steps. -1 after cm_fail(). */
int rundir_create(const RunDir *d, const char *config_text, bool resume);
/* True if the run's ckpt/ holds a step_*.h5 file (valid or not). */
bool rundir_has_checkpoints(const RunDir *d);
/* After a resume from step `step`, drops the metrics lines of later steps (written before a crash,
 * after the checkpoint), so the file reads as one run with no repeated steps. */
int rundir_metrics_truncate(const RunDir *d, long step);
/* The run directory of a checkpoint: the directory above <run>/ckpt/, else the file's directory. */
void rundir_of_checkpoint(const char *ckpt_path, char *out, size_t len);

#endif
