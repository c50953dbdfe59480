/* trajectories.h: the geometry of a diffusion model's sampling trajectories, `cmlab trajectories`.
 *
 * A trajectory is the states x_0 = sigma_max z, x_1, ..., x_K of one sample along an ODE solver's
 * grid (K steps, m = K + 1 points in R^D, D = C H W), recorded by the solver's on_step observer
 * (solvers.h) while sample_ode_from draws the samples (sample.h: sample i from the noise of
 * (seed, i), whatever the batch split). The AMED paper (reference/amed.md §7, "2D-subspace / PCA
 * observation") observes that each trajectory almost lies in a two-dimensional subspace; this
 * measures it.
 *
 * PCA of one trajectory: the m points centred on their mean, the eigenvalues l_1 >= ... >= l_m of
 * their m x m Gram matrix G_ij = <x_i - mean, x_j - mean> (the squared singular values of the
 * centred m x D matrix: the variances along the principal directions, times m), and the fraction
 * of the variance the top k components explain, (l_1 + ... + l_k) / sum l. G is tiny (41 x 41 for
 * 40 steps), so its eigenvalues come from cyclic Jacobi rotations in float64, with no LAPACK. The
 * states are kept in float64 as the solver holds them.
 */
#ifndef CM_TRAJECTORIES_H
#define CM_TRAJECTORIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sample/sample.h"

enum { TRAJ_MAX_POINTS = 201 };   /* m: at most 200 steps */

/* The variance fractions of one trajectory: pts [m, dim] -> frac[m], descending, summing to 1
 * (all 0 for points that coincide). 2 <= m <= TRAJ_MAX_POINTS. */
void trajectory_pca(const double *pts, int m, size_t dim, double *frac /* [m] */);

/* The PCA of n trajectories, summarised over them. */
typedef struct TrajSummary {
    int n;                              /* trajectories */
    int points;                         /* m = steps + 1 per trajectory */
    size_t dim;                         /* D */
    double mean_frac[TRAJ_MAX_POINTS];  /* component k's fraction (k = 0 the largest), averaged */
    double mean_top[TRAJ_MAX_POINTS];   /* the top k+1 components' fraction, averaged */
    double min_top[TRAJ_MAX_POINTS];    /* ... and its lowest value over the trajectories */
} TrajSummary;

/* Starts an empty summary of trajectories of m points in R^dim. */
void traj_summary_init(TrajSummary *t, int m, size_t dim);
/* Adds one trajectory's fractions (trajectory_pca's frac). */
void traj_summary_add(TrajSummary *t, const double *frac);

/* n trajectories of the sampler's model by solver `kind` over o's grid (o->steps time points,
 * at most TRAJ_MAX_POINTS; afs and denoise_to_zero as o says: the caller turns them off),
 * samples 0 .. n-1 of `seed`, in pieces of the sampler's batch; their PCA into *out. progress:
 * print a line per piece. Returns 0, or -1 after cm_fail() (an impossible grid). */
int trajectories_pca(const Sampler *s, SolverKind kind, const SolverOpts *o, int n, uint64_t seed,
                     bool progress, TrajSummary *out);

/* What the files say about the run. */
typedef struct TrajMeta {
    const char *checkpoint, *weights, *solver, *schedule, *precision;   /* precision: of the products */
    double rho, sigma_min, sigma_max;
    uint64_t seed;
} TrajMeta;

/* Writes into dir (created if missing), each file atomically:
 *   pca.json  the run (meta, n, steps, points, dim), top1/top2/top3 (mean fractions of the top 1,
 *             2, 3 components) and their minima, and the per-component lists;
 *   pca.csv   one row per component k = 1..m: mean fraction, mean and lowest top-k fraction;
 *   pca.svg   the fraction the top k components leave out, 1 - top-k, mean and largest, against
 *             k = 1..10, on a log scale (components that leave out nothing are not drawn).
 * -1 after cm_fail(). */
int trajectories_write(const char *dir, const TrajSummary *t, const TrajMeta *meta);

#endif
