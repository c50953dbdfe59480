/* params.h: the parameter layout of a network, and weight sets over it.
 *
 * A network is an architecture plus flat float buffers (DESIGN.md "Parameters and weight sets").
 * A ParamSet is only the layout: named slices with PyTorch names and shapes (conv OIHW, linear
 * [out, in]). Weights, gradients, Adam moments, the target network and every EMA are separate
 * buffers of `total` floats in that layout, so running the same architecture with another weight
 * set is a pointer swap, and optimiser, EMA and gradient all-reduce are single flat loops.
 */
#ifndef CM_PARAMS_H
#define CM_PARAMS_H

#include "autograd/rng.h"
#include "autograd/tensor.h"

typedef enum ParamInit {
    PARAM_INIT_ZERO,
    PARAM_INIT_ONE,
    PARAM_INIT_UNIFORM_FAN_IN,   /* U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's conv/linear default */
} ParamInit;

typedef struct Param {
    char name[96];
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    size_t offset, n;
    ParamInit init;
    float init_scale;            /* multiplies the init (near-zero init of output layers) */
} Param;

typedef struct ParamSet {
    Param *items;
    int count, cap;
    size_t total;                /* floats in every weight set, a multiple of 16 per slice */
} ParamSet;

void params_init(ParamSet *ps);
void params_free(ParamSet *ps);
/* Adds a named slice; returns its index. Names must be unique. */
int params_add(ParamSet *ps, const char *name, int ndim, const int *shape, ParamInit init, float init_scale);
int params_find(const ParamSet *ps, const char *name);   /* -1 if absent */
/* Sum of the slices' element counts (ps->total also counts alignment padding). */
size_t params_count(const ParamSet *ps);
/* A zeroed, 64-byte aligned buffer of ps->total floats. */
float *params_buffer(const ParamSet *ps);
/* Fills weights by each slice's init rule; deterministic in seed. */
void params_randomize(const ParamSet *ps, float *weights, uint64_t seed);
/* The tensor of slice i in a weight set; grad NULL means frozen (requires_grad false). */
Tensor *param_tensor(Ctx *c, const ParamSet *ps, int i, float *weights, float *grad);

#endif
