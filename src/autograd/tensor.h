/* tensor.h: tensors, the per-step arena, the tape and the reverse sweep.
 *
 * A Tensor is float32, contiguous, up to 4 dims, NCHW. Its data and gradient either live in the
 * Ctx's arena (activations, workspaces: gone at ctx_reset) or point into a flat buffer owned by
 * someone else (parameters: src/nn). Parameters never live in the arena.
 *
 * Every op records one TapeEntry when grad mode is on and at least one input requires a gradient;
 * otherwise it records nothing and its output does not require a gradient. tape_backward sweeps
 * the entries in reverse, calling each op's backward, which accumulates (+=) into the gradients of
 * exactly those inputs that require one.
 *
 * Invariants:
 *   - tensors are never modified in place after an op has read them (ops are pure), so the
 *     backward pass may read any input or output it needs;
 *   - leaf gradients (parameters, inputs) accumulate across sweeps and are zeroed by their owner
 *     once per step; intermediate gradients are reset at the start of every sweep, so two sweeps
 *     over the same tape give exactly twice the leaf gradients;
 *   - an intermediate's gradient lives only while the sweep needs it: once the backward of the
 *     entry that produced the tensor has run, the sweep sets its grad to NULL and later gradients
 *     of the same size reuse the buffer (the sweep then holds about the live gradients, not one
 *     per activation). After tape_backward only leaves have gradients.
 */
#ifndef CM_TENSOR_H
#define CM_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#include "../common.h"
#include "autograd/threads.h"

#define TENSOR_MAX_DIMS 4
#define TAPE_MAX_INPUTS 7   /* op_conv2d_fused: x, w, b, bias, residual, norm weight and bias */

typedef struct Tensor {
    float *data;               /* [n] */
    float *grad;               /* [n] or NULL until a backward writes it */
    size_t n;                  /* number of elements */
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    bool requires_grad;
    bool is_leaf;              /* not produced by a recorded op */
} Tensor;

/* Bump allocator for one step. When a step needs more than the current block, extra blocks are
 * chained; arena_reset then grows the main block to the step's peak, so a steady-state step
 * allocates nothing from the system. Blocks given back by arena_release wait as spares for the
 * step's next overflow, and at the reset the largest block that holds the new size becomes the
 * main block, so the pages the first step touched are not touched afresh. */
typedef struct ArenaBlock ArenaBlock;
typedef struct Arena {
    char *base;
    size_t cap, used;
    bool base_mapped;          /* base is a former overflow block (munmap, not free) */
    ArenaBlock *extra;         /* overflow blocks of this step */
    ArenaBlock *spare;         /* blocks given back by arena_release, empty */
    size_t extra_used;         /* bytes handed out from overflow blocks */
    size_t step_peak;          /* the most bytes in use at once during this step */
    size_t high_water;         /* the most bytes in use at once during any step */
} Arena;

/* A position in the arena. Workspaces that live only inside one op (im2col buffers, say) are
 * taken after a mark and given back with arena_release, so they do not add up over a step. */
typedef struct ArenaMark {
    size_t used, extra_used, extra_block_used;
    ArenaBlock *extra;
} ArenaMark;

void arena_init(Arena *a, size_t bytes);
void *arena_alloc(Arena *a, size_t bytes);        /* 64-byte aligned, uninitialised */
void *arena_calloc(Arena *a, size_t bytes);       /* zeroed */
void arena_reset(Arena *a);
ArenaMark arena_mark(const Arena *a);
/* Frees everything allocated since m; nothing allocated after the mark may still be in use. */
void arena_release(Arena *a, ArenaMark m);
void arena_free(Arena *a);
size_t arena_used(const Arena *a);
size_t arena_resident(const Arena *a);            /* bytes of the overflow blocks in memory (mincore) */

typedef struct TapeEntry {
    int op;                            /* enum OpKind, ops.h */
    Tensor *out;
    Tensor *in[TAPE_MAX_INPUTS];
    int nin;
    int iarg[6];                       /* op parameters (stride, padding, groups, ...) */
    float farg[4];                     /* op parameters (eps, p, alpha, ...) */
    void *saved;                       /* op-specific saved values, arena-allocated */
} TapeEntry;

/* Gradient buffers of intermediates whose backward has run (tape_backward), for reuse by later
 * gradients of the same size in the same sweep. */
#define CTX_FREE_GRADS 256
typedef struct FreeGrad {
    float *p;
    size_t n;
} FreeGrad;

/* The precision of the GEMM-shaped ops' products (conv2d's im2col path, linear, matmul, bmm):
 * fp32, or inputs rounded to bf16 with fp32 sums (gemm_bf16.h). Everything else stays fp32. */
typedef enum CmPrecision { CM_PRECISION_FP32, CM_PRECISION_BF16, CM_PRECISION_COUNT } CmPrecision;

typedef struct Ctx {
    Arena arena;
    FreeGrad free_grads[CTX_FREE_GRADS];
    int nfree_grads;
    TapeEntry *tape;
    int tape_len, tape_cap;
    int no_grad_depth;                 /* > 0: record nothing */
    double flops;                      /* 2 x the multiply-adds of the GEMM-shaped ops (conv2d,
                                        * linear, matmul, bmm), forward and backward, run on this
                                        * context since ctx_init: model FLOPs for the benchmarks */
    CmPrecision precision;             /* of the products; set it with gemm_precision_usable() */
} Ctx;

void ctx_init(Ctx *c, size_t arena_bytes);
void ctx_reset(Ctx *c);                /* once per step: empties the tape and the arena */
void ctx_free(Ctx *c);

/* No-grad scope: target, teacher and sampling passes. Scopes nest. */
void ctx_no_grad_begin(Ctx *c);
void ctx_no_grad_end(Ctx *c);
bool ctx_grad_enabled(const Ctx *c);


/* ---- tensors ---- */
Tensor *tensor_new(Ctx *c, int ndim, const int *shape);           /* arena, uninitialised */
Tensor *tensor_zeros(Ctx *c, int ndim, const int *shape);
Tensor *tensor_like(Ctx *c, const Tensor *t);                     /* same shape, uninitialised */
/* A leaf over external memory (parameters, data batches). grad may be NULL; then a backward that
 * needs it allocates a zeroed one in the arena. */
Tensor *tensor_wrap(Ctx *c, float *data, float *grad, int ndim, const int *shape, bool requires_grad);
/* Shape literals: TENSOR_NEW(c, N, C, H, W) or tensor_new(c, 2, SHAPE(M, K)). */
#define SHAPE(...) ((const int[]){__VA_ARGS__})
#define NDIMS(...) ((int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)))
#define TENSOR_NEW(c, ...) tensor_new((c), NDIMS(__VA_ARGS__), SHAPE(__VA_ARGS__))

bool tensor_same_shape(const Tensor *a, const Tensor *b);
/* "[2,3,4,5]" into buf; returns buf. */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t len);
/* The gradient buffer of t, allocated zeroed in the arena on first use. */
float *tensor_grad(Ctx *c, Tensor *t);
/* t's gradient buffer when it has none yet, uninitialised: for a backward that writes it in full
 * (=) rather than accumulating. */
float *tensor_grad_fresh(Ctx *c, Tensor *t);
/* Size of dim d counted from the right (d = 0 is the last); 1 if the tensor has fewer dims. */
int tensor_dim_r(const Tensor *t, int d);

/* ---- tape ---- */
/* Called by every op after computing its output. Returns the new entry, or NULL when nothing is
 * recorded (no-grad scope, or no input requires a gradient). Sets out->requires_grad/is_leaf. */
TapeEntry *tape_record(Ctx *c, int op, Tensor *out, int nin, Tensor *const *in);

/* Reverse sweep from `root`. seed: d(objective)/d(root), NULL means all ones (a scalar loss). */
void tape_backward(Ctx *c, Tensor *root, const float *seed);

/* Backward helper: the input needs a gradient from this entry. */
static inline bool entry_needs_grad(const TapeEntry *e, int i)
{
    return e->in[i] && e->in[i]->requires_grad;
}

/* Shape-check helper for ops: aborts naming the op and both shapes. */
void check_same_shape(const char *op, const Tensor *a, const Tensor *b);

#endif
