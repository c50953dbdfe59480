#include "frechet.h"

#include <cblas.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* LAPACK (OpenBLAS ships it): the symmetric eigensolver, divide and conquer. The trailing
 * arguments are the hidden lengths of the character arguments of gfortran's calling convention. */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t uplo_len);

void fd_stats_compute(const float *feat, long n, int d, FdStats *out)
{
    CM_ASSERT(n >= 2 && d >= 1, "fd_stats_compute: %ld vectors of %d", n, d);
    out->d = d;
    out->n = n;
    out->mu = cm_calloc((size_t)d, sizeof(double));
    out->sigma = cm_calloc((size_t)d * d, sizeof(double));
    for (long i = 0; i < n; i++)
        for (int k = 0; k < d; k++) out->mu[k] += feat[(size_t)i * d + k];
    for (int k = 0; k < d; k++) out->mu[k] /= (double)n;
    /* Centred first, then summed in chunks: X^T X - n mu mu^T would cancel digits. */
    enum { ROWS = 2048 };
    double *xc = cm_malloc((size_t)ROWS * d * sizeof(double));
    for (long i0 = 0; i0 < n; i0 += ROWS) {
        int rows = (int)CM_MIN((long)ROWS, n - i0);
        for (int i = 0; i < rows; i++)
            for (int k = 0; k < d; k++) xc[(size_t)i * d + k] = feat[(size_t)(i0 + i) * d + k] - out->mu[k];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, d, rows, 1.0, xc, d, 1.0, out->sigma, d);
    }
    free(xc);
    for (int a = 0; a < d; a++)
        for (int b = a; b < d; b++) {
            double v = out->sigma[(size_t)a * d + b] / (double)(n - 1);
            out->sigma[(size_t)a * d + b] = out->sigma[(size_t)b * d + a] = v;
        }
}

void fd_stats_free(FdStats *s)
{
    free(s->mu);
    free(s->sigma);
    memset(s, 0, sizeof *s);
}

/* Eigenvalues (ascending) and, with vectors, eigenvectors of the symmetric a [d, d], in place:
 * on return row i of a (row-major) is eigenvector i (LAPACK's column i of a column-major array). */
static int sym_eigen(int d, double *a, double *eig, bool vectors)
{
    char jobz = vectors ? 'V' : 'N', uplo = 'U';
    int lwork = -1, liwork = -1, info = 0, iw;
    double wq;
    dsyevd_(&jobz, &uplo, &d, a, &d, eig, &wq, &lwork, &iw, &liwork, &info, 1, 1);
    if (info != 0) return cm_fail("LAPACK dsyevd (workspace query) failed: info %d", info);
    lwork = (int)wq;
    liwork = iw;
    double *work = cm_malloc((size_t)lwork * sizeof(double));
    int *iwork = cm_malloc((size_t)liwork * sizeof(int));
    dsyevd_(&jobz, &uplo, &d, a, &d, eig, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info != 0) return cm_fail("LAPACK dsyevd failed on a %dx%d matrix: info %d", d, d, info);
    return 0;
}

int eval_sqrtm_psd(int d, const double *a, double *out)
{
    /* a = V diag(l) V^T, sqrt(a) = V diag(sqrt(l)) V^T. a is symmetric, so its row-major array
     * is also its column-major one. */
    size_t dd = (size_t)d * d;
    double *v = cm_malloc(dd * sizeof(double)), *eig = cm_malloc((size_t)d * sizeof(double));
    double *vs = cm_malloc(dd * sizeof(double));
    memcpy(v, a, dd * sizeof(double));
    int rc = sym_eigen(d, v, eig, true);
    if (rc == 0) {
        /* Row i of v is eigenvector i: sqrt(a) = v^T diag(sqrt l) v. */
        for (int i = 0; i < d; i++) {
            double s = sqrt(fmax(eig[i], 0.0));
            for (int k = 0; k < d; k++) vs[(size_t)i * d + k] = s * v[(size_t)i * d + k];
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, v, d, vs, d, 0.0, out, d);
    }
    free(v);
    free(eig);
    free(vs);
    return rc;
}

int fd_distance(const FdStats *a, const FdStats *b, double *fd)
{
    if (a->d != b->d) return cm_fail("Frechet distance of %d- and %d-dimensional features", a->d, b->d);
    int d = a->d;
    size_t dd = (size_t)d * d;
    double *r = cm_malloc(dd * sizeof(double)), *t = cm_malloc(dd * sizeof(double));
    double *m = cm_malloc(dd * sizeof(double)), *eig = cm_malloc((size_t)d * sizeof(double));
    int rc = eval_sqrtm_psd(d, a->sigma, r);
    if (rc == 0) {
        /* m = r S2 r, symmetric PSD; tr sqrt(m) = sum sqrt(eigenvalues). */
        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, d, d, 1.0, b->sigma, d, r, d, 0.0, t, d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, r, d, t, d, 0.0, m, d);
        for (int i = 0; i < d; i++)
            for (int k = i + 1; k < d; k++)
                m[(size_t)i * d + k] = m[(size_t)k * d + i] = 0.5 * (m[(size_t)i * d + k] + m[(size_t)k * d + i]);
        rc = sym_eigen(d, m, eig, false);
    }
    if (rc == 0) {
        double dmu = 0, tr = 0, trsq = 0;
        for (int k = 0; k < d; k++) {
            double e = a->mu[k] - b->mu[k];
            dmu += e * e;
            tr += a->sigma[(size_t)k * d + k] + b->sigma[(size_t)k * d + k];
            trsq += sqrt(fmax(eig[k], 0.0));
        }
        *fd = dmu + tr - 2 * trsq;
    }
    free(r);
    free(t);
    free(m);
    free(eig);
    return rc;
}

