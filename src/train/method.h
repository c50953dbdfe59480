/* method.h: a training method as a record. Each method is one file in src/train/methods/ that
 * defines one `const Method`, and one row of the table in method.c lists it; the training loop,
 * evaluation, ablations and the command line reach a method only through this record.
 *
 * A method owns its state (its own struct, state_size bytes, zeroed by the loop): the networks
 * and weight sets it needs (the U-Net and its preconditioning, a teacher, a target network, a
 * test split) and its schedule state. The loop owns everything shared by all methods: the data,
 * the online weights w and their gradients g (in the layout of the parameter set the method
 * trains), the optimiser, the EMAs, the step arena and the run directory.
 *
 * One step, as the loop calls it: loss (gradients into the online set's g) -> optimiser -> EMAs ->
 * after_update (target networks). A method with substeps (AMED: one Adam step per student step of
 * a trajectory) gets K such updates per batch: loss is called with b->substep = 0..K-1 on the same
 * batch, each call followed by its own optimiser step; a training step (train.iterations,
 * checkpoints, the batch's random streams) is the whole batch. The method may keep state from one
 * substep to the next (the trajectory); no checkpoint falls between them, so that state is never
 * saved, and substep 0 must rebuild it from the batch alone. Checkpoints: ckpt_save adds the method's weight sets and
 * schedule state to the loop's; ckpt_loaded takes the schedule state back on resume.
 */
#ifndef CM_METHOD_H
#define CM_METHOD_H

#include <stdio.h>

#include "data/dataset.h"
#include "train/batch.h"
#include "io/checkpoint.h"
#include "io/experiment.h"
#include "sample/precond.h"
#include "sample/sample.h"

/* What the loop hands a method's setup. */
typedef struct MethodEnv {
    const Config *cfg;           /* lives as long as the method's state */
    const Dataset *data;         /* the training split */
    int C, H, W;                 /* the image shape after padding */
} MethodEnv;

typedef struct Method {
    CfgMethod id;                /* experiment.method */
    const char *name;            /* its value in experiment files and checkpoints */
    const char *section;         /* its experiment-file section */
    PrecondKind precond;         /* the preconditioning of its network */
    ModelKind model;             /* how its model samples */
    size_t state_size;
    /* Builds the network it trains (*ps: the trained parameter set) and loads what else it needs
     * (teacher, test split). -1 after cm_fail(); free is called either way. */
    int (*setup)(void *st, const MethodEnv *env, const ParamSet **ps);
    /* After the loop initialised the online weights w at random: the method's start weights (a
     * teacher's) and its target network. May be NULL. */
    void (*start)(void *st, float *w);
    /* The loss of one step's batch b on c's tape, with its backward: gradients accumulate into
     * online->g (zeroed by the loop). Every random number comes from b's streams at b's samples.
     * The loss is the mean over b's B samples of a per-sample term (normalised by b->B, not
     * b->global_B): with several processes the loop weights each rank's loss and gradients by
     * B / global_B and sums them (trainer.h). State it changes may depend on b->step only, never
     * on the samples, so that every rank's state stays the same. */
    double (*loss)(void *st, Ctx *c, const WeightSet *online, const Batch *b);
    /* After the optimiser and the EMAs (target networks); may be NULL. */
    void (*after_update)(void *st, const float *w);
    /* Adds the method's weight sets and schedule state to a checkpoint; may be NULL. */
    void (*ckpt_save)(void *st, CkptState *s);
    /* Takes the schedule state back from a loaded checkpoint; may be NULL. */
    void (*ckpt_loaded)(void *st, const CkptState *s);
    /* The network the loop samples with (MODEL_DIFFUSION, MODEL_CONSISTENCY), else NULL. */
    const UNet *(*unet)(const void *st);
    /* MODEL_FEATURE_NET: what the loop does in place of a sample grid (the classifier's test
     * accuracy; AMED's distance to the teacher and its samples' grid), printed and logged to
     * metrics; images, if any, go to samples_dir (the run's samples/). NULL otherwise. */
    int (*report)(void *st, const float *w, const char *wname, Ctx *c, FILE *metrics, long step,
                  const char *samples_dir);
    /* Optimiser steps per batch (the header); NULL: 1. */
    int (*substeps)(const void *st);
    /* NULL: a non-finite loss or gradient norm goes to train.on_nan. Else that update is skipped
     * and counted (metrics.jsonl "nonfinite_skipped"), and the run stops (exit 1) once more than
     * this many were skipped (AMED's amed.nonfinite_limit); the count is the whole run's, kept
     * across resumes by the checkpoint's root attribute nonfinite_skipped. */
    long (*nonfinite_limit)(const void *st);
    size_t (*param_count)(const void *st);
    void (*print_table)(const void *st, FILE *f);
    void (*free)(void *st);
} Method;

/* The method of experiment.method = id, or NULL when this build does not train it. */
const Method *method_find(CfgMethod id);
/* method_find for cfg's method; -1 after cm_fail() naming the methods this build trains. */
int method_get(const Config *cfg, const Method **out);

/* ---- shared by the methods that train the U-Net (their state starts with MethodUNet) ---- */
typedef struct MethodUNet {
    UNet net;
    PrecondParams pre;
    const Config *cfg;
} MethodUNet;

int method_unet_setup(MethodUNet *u, const MethodEnv *env, const ParamSet **ps);
const UNet *method_unet(const void *st);
size_t method_unet_param_count(const void *st);
void method_unet_print_table(const void *st, FILE *f);
void method_unet_free(MethodUNet *u);

/* ---- shared by the consistency methods (ct, cd: their state starts with MethodCm) ---- */
typedef struct MethodCm {
    MethodUNet u;
    float *target;               /* the EMA target network (target_mu > 0), else NULL: the target is
                                  * the online network without gradient */
    long N;                      /* the schedule state of the last step: N(k) and mu(k) */
    double mu;
} MethodCm;

/* The target network starts as a copy of the online weights w when mu0 > 0. */
void method_cm_start_target(MethodCm *m, const float *w, double mu0);
/* The weights of the target pass: the target network, or the online weights. */
const float *method_cm_target(const MethodCm *m, const float *online);
/* Method hooks: the target follows the online weights w with rate mu; the checkpoint holds the
 * target as "target" and the schedule state as sched_N, sched_mu. */
void method_cm_after_update(void *st, const float *w);
void method_cm_ckpt_save(void *st, CkptState *s);
void method_cm_ckpt_loaded(void *st, const CkptState *s);
void method_cm_free(MethodCm *m);

#endif
