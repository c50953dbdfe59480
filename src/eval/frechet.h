/* frechet.h: the Frechet distance (FD) between two sets of feature vectors.
 *
 * The metric (Heusel et al. 2017, as EDM's fid.py computes FID; reference/amed.md §8):
 *   features: the classifier's penultimate activations (src/nn/classifier.h), widened to float64;
 *   statistics: the mean and the unbiased (n - 1) covariance, accumulated in float64;
 *   FD = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2.
 * tr (S1 S2)^1/2, which fid.py takes from scipy's sqrtm of the non-symmetric S1 S2, equals the
 * trace term above (S1 S2 is similar to the symmetric PSD S1^1/2 S2 S1^1/2), so both square
 * roots come from LAPACK's symmetric eigensolver dsyevd (OpenBLAS ships LAPACK): the square
 * root of S1 by its eigenvectors, the trace term from the eigenvalues alone. Eigenvalues below
 * zero (rounding, or a rank-deficient covariance) are clamped to zero.
 */
#ifndef CM_FRECHET_H
#define CM_FRECHET_H

typedef struct FdStats {
    int d;                       /* feature width */
    long n;                      /* feature vectors */
    double *mu;                  /* [d] */
    double *sigma;               /* [d, d], unbiased */
} FdStats;

/* Mean and unbiased covariance of feat [n, d] (n >= 2). */
void fd_stats_compute(const float *feat, long n, int d, FdStats *out);
void fd_stats_free(FdStats *s);
/* The Frechet distance; -1 after cm_fail() when LAPACK fails or the widths differ. */
int fd_distance(const FdStats *a, const FdStats *b, double *fd);
/* out [d, d] = the square root of the symmetric PSD matrix a [d, d] (row-major; a is not
 * changed). Eigenvalues below zero count as zero. -1 after cm_fail() when dsyevd fails. */
int eval_sqrtm_psd(int d, const double *a, double *out);

#endif
