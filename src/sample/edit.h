/* edit.h: zero-shot editing with a consistency function (reference/cm.md §7.3, CM paper
 * Algorithm 4): inpainting, colourisation, super-resolution, denoising and interpolation.
 *
 * An edit is an orthogonal map A (here applied group by group: a pixel's 3 colours, a p x p patch
 * of one channel), a mask Omega over A's coefficients (1 = generate, 0 = keep the reference's),
 * a reference y and descending times t_1 > ... > t_M >= eps. With P(x) = A^T[(A y)(1 - Omega) +
 * (A x) Omega] (A^-1 = A^T, A orthogonal):
 *     x = A^T[(A y)(1 - Omega)]                                    the known part only
 *     x = P(clip(f(x + t_1 z_1, t_1)))
 *     for m = 2..M:  x = P(clip(f(x + sqrt(t_m^2 - eps^2) z_m, t_m)))
 * The first call sees the known part noised to t_1, as the algorithm box says; the [JCM] notebook
 * scales that noise by the grid index ts[0] = 0 instead, so its first call sees the un-noised
 * masked image at t = 80 (cm.md §7.3): not copied. The result is not clipped after the last
 * projection, so its known coefficients equal the reference's exactly (image writing clamps).
 *
 * The consistency function is a callback, so tests can plug in an analytic f; edit_f_sampler
 * adapts a Sampler (sample.h: the U-Net through precond_apply, no gradients).
 *
 * Randomness: z_m of image i is rng_normal(seed, STREAM_EDIT, step m - 1, sample i), so an edit is
 * a pure function of (f, y, times, seed) whatever the batch. The noise that edit_add_noise puts on
 * a clean image for the denoising demo is step 0 of the same stream.
 *
 * Coefficient layout: A x has the shape of x, [C, H, W]. Colour: coefficient k of pixel (y, x) is
 * at (k, y, x). Patch p: coefficient j of the patch with corner (p py, p px) of channel c is at
 * (c, p py + j / p, p px + j % p), so coefficient 0 (p times the patch mean) sits in the corner.
 */
#ifndef CM_EDIT_H
#define CM_EDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "data/dataset.h"
#include "io/experiment.h"
#include "sample/bcm.h"
#include "sample/sample.h"

/* f(x, t) of n images x [n, C, H, W], written over x. */
typedef void (*ConsistencyFn)(void *user, float *x, double t, int n);

/* ConsistencyFn for user = a Sampler: sample_consistency (its weights, no gradients). */
void edit_f_sampler(void *user, float *x, double t, int n);

typedef enum EditTask {
    EDIT_INPAINT,
    EDIT_COLORIZE,
    EDIT_SUPERRES,
    EDIT_DENOISE,
    EDIT_INTERPOLATE,
    EDIT_JPEG,
    EDIT_TASK_COUNT
} EditTask;

/* "inpaint", "colorize", "superres", "denoise", "interpolate", "jpeg", and back (-1 after cm_fail()). */
const char *edit_task_name(EditTask task);
int edit_task_from_name(const char *name);

/* The luminance weights of colourisation (ITU-R BT.601, as cm.md §7.3 and PIL's convert("L")). */
extern const double EDIT_LUMA[3];

/* The n x n orthogonal matrix Q (row-major, Q[i * n + j]) whose column 0 is v / |v| with the sign
 * that makes its sum positive, completed by Gram-Schmidt on [v, e_2, ..., e_n] (each column
 * orthogonalised twice against the previous ones). This is the Q of a QR factorisation of
 * [v, e_2, ..., e_n] up to the signs of columns 1..n-1. Needs v[0] != 0 (full rank). */
void edit_basis(int n, const double *v, double *Q);
/* Colourisation's 3 x 3 Q: column 0 = EDIT_LUMA / |EDIT_LUMA|. */
void edit_color_basis(double Q[9]);
/* Super-resolution's p^2 x p^2 Q: column 0 = the constant 1 / p. Q must hold p^4 doubles. */
void edit_patch_basis(int p, double *Q);

typedef struct EditOp {
    int C, H, W;
    int n;                       /* group size: 1 (pixels), 3 (colours) or p^2 (patches) */
    double *Q;                   /* [n, n]: A x = Q^T x within each group */
    int *index;                  /* [C H W]: element i of group g is index[g * n + i] */
    float *omega;                /* [C H W] in coefficient layout: 1 = generate, 0 = keep */
} EditOp;

/* Inpainting: A = identity, Omega = 1 on every channel of the pixels where missing[y W + x] != 0
 * ([H, W]). */
void edit_op_inpaint(EditOp *op, int C, int H, int W, const uint8_t *missing);
/* Colourisation: per-pixel colour Q, Omega = 1 on the two chroma coefficients. -1 after cm_fail()
 * unless C == 3. */
int edit_op_colorize(EditOp *op, int C, int H, int W);
/* Super-resolution by a factor p: per-patch Q, Omega = 1 on every coefficient but the mean.
 * -1 after cm_fail() unless 2 <= p <= 8 divides H and W. */
int edit_op_superres(EditOp *op, int C, int H, int W, int p);
void edit_op_free(EditOp *op);

/* One image [C, H, W]: a = A x, x = A^T a, and the known part A^T[(A y)(1 - Omega)]. */
void edit_forward(const EditOp *op, const float *x, float *a);
void edit_inverse(const EditOp *op, const float *a, float *x);
void edit_known(const EditOp *op, const float *y, float *out);

/* Algorithm 4 above on n references y [n, C, H, W] into out [n, C, H, W]. times[ntimes]
 * descending, each >= eps (the consistency function's boundary time). -1 after cm_fail() for bad
 * times. */
int edit_run(const EditOp *op, ConsistencyFn f, void *user, double eps, const double *times,
             int ntimes, int n, const float *y, uint64_t seed, float *out);

/* Denoising: x [n, dim] holds images noised at the known level sigma (>= eps); replaced by
 * clip(f(x, sigma)). -1 after cm_fail() for sigma < eps. */
int edit_denoise(ConsistencyFn f, void *user, double eps, double sigma, int n, size_t dim, float *x);
/* x [n, dim] += sigma z, z from step 0 of STREAM_EDIT (sample i for image i). */
void edit_add_noise(float *x, int n, size_t dim, double sigma, uint64_t seed);

/* Spherical interpolation of two latents (cm.md §7.3):
 *     slerp(u) = sin((1 - u) theta) / sin(theta) z1 + sin(u theta) / sin(theta) z2,
 *     theta = arccos(<z1, z2> / (|z1| |z2|)),
 * in double; linear interpolation when sin(theta) < 1e-6 (parallel latents). u = 0 gives z1 and
 * u = 1 gives z2 exactly. */
void edit_slerp(const float *z1, const float *z2, size_t dim, double u, float *out);
/* n images out [n, dim] = clip(f(T slerp(u_k), T)), u_k = k / (n - 1) (u_0 = 0 when n = 1). The
 * product T slerp is formed in float, as sample_cm forms T z, so u = 0 and 1 reproduce the
 * one-step samples of z1 and z2. */
void edit_interpolate(ConsistencyFn f, void *user, double T, const float *z1, const float *z2,
                      size_t dim, int n, float *out);

/* ---- BCM (sample/bcm.h): its network inverts, so real images can be edited ----
 *
 * Invert-and-regenerate (reference/bcm.md §5, the inpainting template): the unknown coefficients
 * start as Gaussian noise, x = A^T[(A y)(1 - Omega) + z_0 Omega]; then for each round m = 1..M
 *     x = P(clip(f(f(x + s z_m, s, t_m), t_m, eps)))
 * (2 NFE a round): the small noise s moves x off the poorly trained t ~ 0, BCM carries it up the
 * ODE to t_m and back down, and the known coefficients are restored. Descending t_m (> s) go from
 * coarse changes to fine ones. z_m is step m of STREAM_EDIT (sample i for image i). -1 after
 * cm_fail() for s <= 0 or times that do not descend or are not above s. */
int edit_bcm_run(const EditOp *op, BcmFn f, void *user, double eps, double s, const double *times, int ntimes,
                 int n, const float *y, uint64_t seed, float *out);
/* Interpolation between two real images y1, y2 [dim] (bcm.md §5): both are inverted along inv
 * (bcm_invert: images 0 and 1 of `seed`), their latents slerped at u_k = k / (n - 1) (edit_slerp)
 * and each regenerated by schedule gen (bcm_run; gen starts at inv's last time). out [n, dim];
 * u = 0 and 1 give the reconstructions of y1 and y2. -1 after cm_fail() for bad times. */
int edit_bcm_interpolate(BcmFn f, void *user, double eps, const double *inv, int ninv, const BcmSchedule *gen,
                         const float *y1, const float *y2, size_t dim, int n, uint64_t seed, float *out);

/* The reference images of an edit from the model's data set (cfg's data.dataset and data.path,
 * split "train" or "test"): images idx[0..n) (idx NULL: the first min(8, size) images) as the
 * loader makes them for a C x H x W model (dataset_image: padded as data.pad_to pads). *out
 * (malloc'd) gets [*count, C, H, W]. -1 after cm_fail(): an index past the data set, images of
 * another channel count or larger than the model's. */
int edit_references(const Config *cfg, const char *split, const int *idx, int n, int C, int H, int W, float **out,
                    int *count);

/* ---- cmlab edit's PNG inputs ---- */

/* An inpainting mask (--mask): a W x H PNG, any channels; missing[y W + x] = 1 where the pixel's
 * channel sum is >= 128 per channel (white = generate, black = keep). Returns the number of
 * missing pixels, or -1 after cm_fail() naming the path when the PNG cannot be read, has another
 * size or marks no pixel. */
int edit_mask_read(const char *path, int H, int W, uint8_t *missing);
/* A reference image (--image) as y [C, H, W] in [-1, 1]. Accepted: W x H with C channels; for
 * EDIT_SUPERRES also (W / factor) x (H / factor) with C channels, each pixel filling its
 * factor x factor patch; for EDIT_COLORIZE also W x H gray, copied to every channel. *degraded
 * says it was one of the last two (the input is the degraded image, not a reference). -1 after
 * cm_fail() naming the path and the sizes. */
int edit_image_read(const char *path, EditTask task, int factor, int C, int H, int W, float *y,
                    bool *degraded);

#endif
