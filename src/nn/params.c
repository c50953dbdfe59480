#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void params_init(ParamSet *ps) { memset(ps, 0, sizeof *ps); }

void params_free(ParamSet *ps)
{
    free(ps->items);
    memset(ps, 0, sizeof *ps);
}

int params_find(const ParamSet *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->items[i].name, name) == 0) return i;
    return -1;
}

int params_add(ParamSet *ps, const char *name, int ndim, const int *shape, ParamInit init, float init_scale)
{
    CM_ASSERT(params_find(ps, name) < 0, "params_add: duplicate parameter name %s", name);
    CM_ASSERT(strlen(name) < sizeof ps->items[0].name, "params_add: name too long: %s", name);
    CM_ASSERT(ndim >= 1 && ndim <= TENSOR_MAX_DIMS, "params_add: %s has %d dims", name, ndim);
    if (ps->count == ps->cap) {
        ps->cap = ps->cap ? 2 * ps->cap : 32;
        ps->items = realloc(ps->items, sizeof(Param) * (size_t)ps->cap);
        CM_ASSERT(ps->items, "out of memory");
    }
    Param *p = &ps->items[ps->count];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->n = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->n *= (size_t)shape[d];
    }
    p->offset = ps->total;
    p->init = init;
    p->init_scale = init_scale;
    /* Each slice starts on a 64-byte boundary, so SIMD loops over one slice stay aligned. */
    ps->total += (p->n + 15) / 16 * 16;
    return ps->count++;
}

size_t params_count(const ParamSet *ps)
{
    size_t n = 0;
    for (int i = 0; i < ps->count; i++) n += ps->items[i].n;
    return n;
}

float *params_buffer(const ParamSet *ps)
{
    float *b = cm_aligned_alloc(ps->total * sizeof(float));
    memset(b, 0, ps->total * sizeof(float));
    return b;
}

void params_randomize(const ParamSet *ps, float *weights, uint64_t seed)
{
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->items[i];
        float *w = weights + p->offset;
        switch (p->init) {
        case PARAM_INIT_ZERO:
            memset(w, 0, p->n * sizeof(float));
            break;
        case PARAM_INIT_ONE:
            for (size_t k = 0; k < p->n; k++) w[k] = p->init_scale;
            break;
        case PARAM_INIT_UNIFORM_FAN_IN: {
            size_t fan_in = p->ndim > 1 ? p->n / (size_t)p->shape[0] : p->n;
            float bound = p->init_scale / sqrtf((float)fan_in);
            /* Stream = slice index: adding a layer at the end leaves earlier layers' init alone. */
            Rng r = {.seed = seed, .stream = (uint32_t)i, .step = 0};
            rng_uniform(&r, w, 1, 0, p->n);
            for (size_t k = 0; k < p->n; k++) w[k] = bound * (2.0f * w[k] - 1.0f);
            break;
        }
        }
    }
}

Tensor *param_tensor(Ctx *c, const ParamSet *ps, int i, float *weights, float *grad)
{
    const Param *p = &ps->items[i];
    return tensor_wrap(c, weights + p->offset, grad ? grad + p->offset : NULL, p->ndim, p->shape, grad != NULL);
}
