/* gradcheck.h: finite-difference check of an op's (or a whole network's) backward.
 *
 * The objective is L = sum(out * gout) accumulated in double. The analytic gradient comes from
 * one tape_backward with seed gout; the numeric one from central differences
 * (L(x + eps) - L(x - eps)) / (2 eps) evaluated in a no-grad scope, on at most max_elems evenly
 * spaced elements of every input that requires a gradient.
 *
 * The reported error of an input is max_k |analytic_k - numeric_k| / max_k |numeric_k|: relative
 * to the gradient's scale, so a few near-zero entries do not dominate. The result is the largest
 * over inputs.
 */
#ifndef CM_GRADCHECK_H
#define CM_GRADCHECK_H

#include "tensor.h"

typedef struct GradInput {
    float *data;                    /* perturbed in place and restored */
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    bool requires_grad;
} GradInput;

/* Builds the output from tensors wrapping the inputs' data. */
typedef Tensor *(*GradFn)(Ctx *c, Tensor **in, void *user);

/* gout: [size of the output], or NULL for a fixed pseudo-random one. */
double gradcheck(GradFn fn, void *user, int nin, const GradInput *in, const float *gout,
                 float eps, int max_elems);

#endif
