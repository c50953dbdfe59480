/* eval.h: evaluating a checkpoint (`cmlab eval`): samples at fixed seeds by the model's sampling
 * entry, their Frechet distance in the feature network's space to the training split
 * (frechet.h, features.h), and a record of each number (records.h); a classifier checkpoint gets
 * its test accuracy. Also the metric's baselines.
 */
#ifndef CM_EVAL_H
#define CM_EVAL_H

#include <stdbool.h>
#include <stdint.h>

#include "eval/features.h"
#include "eval/frechet.h"
#include "eval/records.h"
#include "io/experiment.h"
#include "io/sha256.h"
#include "sample/sample.h"

/* Evaluates the checkpoint at `path` with the [sample] and [eval] settings of ev (the network and
 * its noise range come from the checkpoint's own configuration): for each NFE of ev->eval.nfe
 * (empty: sample.nfe for EDM, 1,2 for consistency models) n samples at fixed seeds, their FD to
 * the training split's statistics, a sample grid under run_dir/samples/, a record appended to
 * run_dir/eval.json and, with stamp, stamped into the checkpoint. A method = classifier
 * checkpoint gets its test accuracy instead. The sampler's network runs at ev's model.precision
 * (cmlab eval: --precision, default fp32; ablate: the variant's own; a bf16 record's options end
 * in precision=bf16), the feature network in fp32. records (may be NULL) receives up to max
 * records; *count their number. -1 after cm_fail(): bad input (no feature network, another data set, an
 * impossible NFE, a damaged file), nothing written for the failed record. */
int eval_checkpoint(const char *path, const Config *ev, const char *run_dir, bool stamp, EvalRecord *records,
                    int max, int *count);

/* The sampler part of a record for one NFE: sampler, schedule, nfe and the time points, for a
 * checkpoint of configuration mcfg whose model samples as `kind`, sampled with ev's [sample]; the
 * options end in precision=bf16 when ev's model.precision is bf16 and this CPU runs it (so ablate
 * matches a bf16 variant's records as eval_checkpoint writes them). -1 after cm_fail() for an NFE
 * the sampler cannot take. */
int eval_sampler(const Config *mcfg, const Config *ev, int nfe, ModelKind kind, EvalRecord *r);

/* The NFEs ev evaluates a checkpoint of configuration mcfg (its model sampling as `kind`) at, into
 * nfe (CFG_LIST_MAX): eval.nfe; when empty, an eval.predictor's own NFE, else sample_default_nfes.
 * Their count, or -1 after cm_fail() (an unreadable predictor; a {nfe} path without eval.nfe). */
int eval_nfes(const Config *mcfg, const Config *ev, ModelKind kind, int *nfe);

/* ev's eval.predictor for this NFE: the path with "{nfe}" (if any) replaced by the number, so one
 * line names a predictor per NFE (amed_solver_nfe{nfe}/...). -1 after cm_fail() when too long. */
int eval_predictor_path(const Config *ev, int nfe, char *out, size_t len);

/* The step in a checkpoint's name (step_XXXXXXXX.h5), or -1. */
long eval_checkpoint_step(const char *path);

/* Baselines of the metric against the training split: the test split, uniform noise and the test
 * images with their pixels shuffled (one permutation per image, from STREAM_EVAL), n images each
 * (at most the test split's size), printed and appended to the feature run's eval.json. */
int eval_baselines(const FeatureNet *f, int n, int seed, Ctx *ctx);

#endif
