/* dist.h: the processes of a data-parallel run (MPI), the one file that calls MPI.
 *
 * Built with MPI (meson option mpi, macro CMLAB_MPI) and started by a launcher (mpirun, srun),
 * every process is one rank of the job; otherwise, and in a build without MPI, the run is one
 * process: rank 0 of 1, every collective is a no-op and nothing of MPI is touched. The launcher
 * is recognised by the environment it sets (OMPI_COMM_WORLD_SIZE from Open MPI's mpirun,
 * PMIX_RANK from a PMIx launcher such as srun --mpi=pmix, PMI_SIZE from PMI-2 launchers such as
 * srun --mpi=pmi2), so a plain `cmlab train` never initialises MPI. A build without MPI started
 * by a launcher with several processes refuses to run (dist_init fails): each copy would train
 * the whole run into the same directory.
 *
 * Every function below except dist_rank and dist_world is collective: all ranks call it, in the
 * same order. Sums are exact in their bits on every rank (each element is reduced on one rank
 * and copied to the others, or summed in rank order on every rank), so ranks that start equal
 * and apply the same updates stay equal bit for bit: no rank's weights can drift.
 */
#ifndef CM_DIST_H
#define CM_DIST_H

#include <stdbool.h>
#include <stddef.h>

/* Joins the job when started by a launcher; a no-op otherwise. -1 after cm_fail() when MPI
 * cannot start, or in a build without MPI started as one of several processes. Call once,
 * before any other function of this file. */
int dist_init(int *argc, char ***argv);
/* Leaves the job (MPI_Finalize when dist_init joined one). */
void dist_finalize(void);

int dist_rank(void);              /* this process, 0 .. dist_world() - 1 */
int dist_world(void);             /* the number of processes, 1 without a launcher */

/* x[0..n) = the sum over ranks of every rank's x, elementwise (a reduce-scatter and an
 * all-gather: what a ring all-reduce does, with every element's sum computed once). */
void dist_sum_floats(float *x, size_t n);
/* v[0..n) = the sum over ranks of v, added in rank order on every rank (n small). */
void dist_sum_doubles(double *v, int n);
/* Rank 0's bytes x[0..bytes) to every rank. */
void dist_bcast(void *x, size_t bytes);

/* Agreement on a step that may fail on some ranks only (reading data, writing a checkpoint):
 * returns 0 when every rank's rc is 0, else the rc of the lowest failing rank, whose message
 * becomes cm_errmsg() on every rank, prefixed "rank R: " when the job has several ranks. So after it every rank takes the same branch, and never waits in a
 * collective that another rank has left. */
int dist_agree(int rc);

/* Whether every rank holds the same bytes x[0..bytes) (a 64-bit hash compared across ranks);
 * *rank_out gets the lowest rank that differs from rank 0. */
bool dist_same(const void *x, size_t bytes, int *rank_out);

#endif
