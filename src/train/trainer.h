/* trainer.h: the training loop shared by every method (method.h), writing a run directory
 * (io/rundir.h: config.ini, metrics.jsonl, ckpt/, samples/).
 *
 * One step: next batch -> the method's loss and gradients (online weights) -> clip -> warm-up lr
 * -> optimiser -> EMAs -> the method's post-update (target networks). Every random number is a
 * pure function of (seed, stream, step, sample), and the loader's cursor and every buffer are in
 * the checkpoint, so N steps equal N/2 steps + resume + N/2 steps bit for bit (same threads).
 *
 * SIGINT / SIGTERM: the step in flight finishes, a checkpoint is saved, and the run exits 0;
 * `--resume` continues from the newest valid checkpoint. A non-finite loss stops the run
 * (train.on_nan = stop, exit 1) or reloads the newest checkpoint and skips the offending step's
 * batch (rollback).
 *
 * Data parallelism (train/dist.h; README "Training on several machines"): under mpirun or srun
 * each of the P ranks takes its slice of the global batch train.batch_size (the loader's: rank r
 * gets samples [r B / P, (r + 1) B / P), so P need not divide B) and the sample indices that go
 * with it (Batch.sample0), weights its loss and gradients by B_r / B and sums them over the ranks
 * in one reduction of the flat gradient buffer: P processes compute what one process at batch B
 * computes, up to the order of the sums. Every rank applies the same update to the same weights,
 * so they stay equal bit for bit (checked at every checkpoint). Rank 0 alone writes the run
 * directory (checkpoints with world_size, metrics, grids) and reads checkpoints on resume, which
 * it sends to the others; so a run may resume with another number of processes. A failure that
 * may hit one rank only (reading the data, a checkpoint write) is agreed on by all, and the job
 * exits with the failing rank's message; a rank that dies ends the job through mpirun. A SIGTERM
 * reaching any rank stops all of them after the same step.
 *
 * Test hook: with the environment variable CMLAB_TEST_NAN_STEP=k, the first online weight is set
 * to NaN before step k (counted from 0, the step being taken), as a diverged update would leave
 * it, so the loss is NaN and a roll-back must reload the weights; tests/test_train.c drives both
 * on_nan paths with it. Nothing else reads it; unset, it changes nothing. CMLAB_TEST_RAISE
 * (trainer.c) makes one rank raise a signal, for tests/test_mpi.c.
 */
#ifndef CM_TRAINER_H
#define CM_TRAINER_H

#include <stdbool.h>

#include "io/experiment.h"

/* Trains as cfg says. resume: continue from the newest valid checkpoint in the run directory
 * (a fresh start if there is none). Returns an exit code (CM_EXIT_*). */
int trainer_run(const Config *cfg, bool resume);

/* Set by SIGINT/SIGTERM (trainer_run installs the handlers); the loop stops after the step. */
extern volatile int trainer_stop_requested;

#endif
