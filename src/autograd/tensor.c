#include "tensor.h"

#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ops.h"

/* ---- arena ---- */

struct ArenaBlock {
    ArenaBlock *next;
    char *mem;
    size_t cap, used;
};

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)1 << 20)
#define ARENA_BLOCK_SPACE ((size_t)1 << 30)

/* Anonymous, private, not reserved against swap: address space whose pages are zero until
 * touched. NULL when the mapping fails. */
static char *block_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

void arena_init(Arena *a, size_t bytes)
{
    memset(a, 0, sizeof *a);
    a->cap = align_up(bytes ? bytes : ARENA_ALIGN);
    a->base = cm_aligned_alloc(a->cap);
}

static void note_peak(Arena *a)
{
    size_t u = a->used + a->extra_used;
    if (u > a->step_peak) a->step_peak = u;
    if (u > a->high_water) a->high_water = u;
}

/* A block for an overflow of `bytes`: a spare that holds them, else a new mapping. */
static ArenaBlock *block_for(Arena *a, size_t bytes)
{
    for (ArenaBlock **p = &a->spare; *p; p = &(*p)->next)
        if ((*p)->cap >= bytes) {
            ArenaBlock *b = *p;
            *p = b->next;
            b->used = 0;
            return b;
        }
    /* At least a quarter of the main block and 1 GB of address space, so that allocations do not
     * each get a block. The block is mapped, not malloc'd: its pages cost memory only once
     * touched, and no allocator fills it (glibc under the MALLOC_PERTURB_ that `meson test` sets
     * wrote every byte of each malloc'd 1 GB block: test_autograd took 38 s on an EPYC). Where the
     * address space is limited (ulimit -v), blocks fall back to what is needed with geometric
     * growth. */
    ArenaBlock *last = a->extra;
    size_t want = CM_MAX(bytes, CM_MAX(align_up(a->cap / 4), ARENA_BLOCK_SPACE));
    size_t need = CM_MAX(bytes, CM_MAX(ARENA_MIN_BLOCK, last ? 2 * last->cap : align_up(a->cap / 4)));
    void *mem = block_map(want);
    if (!mem) mem = block_map(want = CM_MIN(want, need));
    if (!mem) cm_out_of_memory((double)want);
    ArenaBlock *b = cm_malloc(sizeof *b);
    *b = (ArenaBlock){.mem = mem, .cap = want};
    return b;
}

static void block_unmap(ArenaBlock *b)
{
    munmap(b->mem, b->cap);
    free(b);
}

void *arena_alloc(Arena *a, size_t bytes)
{
    bytes = align_up(bytes ? bytes : 1);
    if (a->used + bytes <= a->cap) {
        void *p = a->base + a->used;
        a->used += bytes;
        note_peak(a);
        return p;
    }
    ArenaBlock *b = a->extra;
    if (!b || b->used + bytes > b->cap) {
        b = block_for(a, bytes);
        b->next = a->extra;
        a->extra = b;
    }
    void *p = b->mem + b->used;
    b->used += bytes;
    a->extra_used += bytes;
    note_peak(a);
    return p;
}

/* memset(p, 0, bytes) on all threads when large (a serial zeroing of each gradient was 1% of an S
 * training step with the other thread waiting). */
static void zero_bytes(void *p, size_t bytes)
{
    const size_t chunk = (size_t)1 << 16, nchunks = (bytes + chunk - 1) / chunk;
    char *q = p;
#pragma omp parallel for schedule(static) if (bytes >= 4 * chunk)
    for (size_t i = 0; i < nchunks; i++) memset(q + i * chunk, 0, CM_MIN(chunk, bytes - i * chunk));
}

void *arena_calloc(Arena *a, size_t bytes)
{
    void *p = arena_alloc(a, bytes);
    zero_bytes(p, bytes);
    return p;
}

size_t arena_used(const Arena *a) { return a->used + a->extra_used; }

size_t arena_resident(const Arena *a)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t n = 0;
    for (const ArenaBlock *b = a->extra; b; b = b->next) {
        size_t pages = (b->cap + page - 1) / page;
        unsigned char *vec = cm_malloc(pages);
        if (mincore(b->mem, b->cap, vec) == 0)
            for (size_t i = 0; i < pages; i++) n += (vec[i] & 1) * page;
        free(vec);
    }
    return n;
}

ArenaMark arena_mark(const Arena *a)
{
    return (ArenaMark){a->used, a->extra_used, a->extra ? a->extra->used : 0, a->extra};
}

void arena_release(Arena *a, ArenaMark m)
{
    while (a->extra != m.extra) {   /* kept as spares: the step's next overflow reuses their pages */
        CM_ASSERT(a->extra, "arena_release: the mark is not from this step");
        ArenaBlock *b = a->extra;
        a->extra = b->next;
        b->next = a->spare;
        a->spare = b;
    }
    if (a->extra) a->extra->used = m.extra_block_used;
    a->used = m.used;
    a->extra_used = m.extra_used;
}

static void base_free(Arena *a)
{
    if (a->base_mapped)
        munmap(a->base, a->cap);
    else
        free(a->base);
    a->base = NULL;
}

void arena_reset(Arena *a)
{
    size_t total = a->step_peak, want = align_up(total + total / 8);
    a->step_peak = 0;
    while (a->extra) {
        ArenaBlock *b = a->extra;
        a->extra = b->next;
        b->next = a->spare;
        a->spare = b;
    }
    /* Grow once to what this step needed, so the next step fits in one block. On the peak, not on
     * whether an overflow block is still there: one that an op's arena_release gave back before
     * the step ended (a workspace past the main block) once left the main block as it was, and
     * every step mapped, touched and unmapped its overflow again: 50k of the 154k page faults of
     * `cmlab eval --n 512` on the bench's S network. The main block becomes the largest block that
     * holds the step: its first pages are those the overflow touched. */
    ArenaBlock *keep = NULL;
    if (total > a->cap)
        for (ArenaBlock *b = a->spare; b; b = b->next)
            if (b->cap >= want && (!keep || b->cap > keep->cap)) keep = b;
    while (a->spare) {
        ArenaBlock *b = a->spare;
        a->spare = b->next;
        if (b == keep) continue;
        block_unmap(b);
    }
    if (total > a->cap) {
        base_free(a);
        if (keep) {
            a->base = keep->mem;
            a->cap = keep->cap;
            free(keep);
        } else {
            a->cap = want;
            a->base = cm_aligned_alloc(a->cap);
        }
        a->base_mapped = keep != NULL;
    }
    a->used = 0;
    a->extra_used = 0;
}

void arena_free(Arena *a)
{
    a->step_peak = 0;   /* no growth: the reset only unmaps the blocks */
    arena_reset(a);
    base_free(a);
    memset(a, 0, sizeof *a);
}

/* ---- context ---- */

void ctx_init(Ctx *c, size_t arena_bytes)
{
    memset(c, 0, sizeof *c);
    arena_init(&c->arena, arena_bytes);
    c->tape_cap = 256;
    c->tape = cm_malloc(sizeof(TapeEntry) * (size_t)c->tape_cap);
}

void ctx_reset(Ctx *c)
{
    CM_ASSERT(c->no_grad_depth == 0, "ctx_reset inside a no-grad scope (depth %d)", c->no_grad_depth);
    c->tape_len = 0;
    c->nfree_grads = 0;
    arena_reset(&c->arena);
}

void ctx_free(Ctx *c)
{
    arena_free(&c->arena);
    free(c->tape);
    memset(c, 0, sizeof *c);
}

void ctx_no_grad_begin(Ctx *c) { c->no_grad_depth++; }

void ctx_no_grad_end(Ctx *c)
{
    CM_ASSERT(c->no_grad_depth > 0, "ctx_no_grad_end without a matching ctx_no_grad_begin");
    c->no_grad_depth--;
}

bool ctx_grad_enabled(const Ctx *c) { return c->no_grad_depth == 0; }

/* ---- tensors ---- */

static Tensor *tensor_header(Ctx *c, int ndim, const int *shape)
{
    CM_ASSERT(ndim >= 1 && ndim <= TENSOR_MAX_DIMS, "tensor: %d dims (1 to %d allowed)", ndim,
              TENSOR_MAX_DIMS);
    Tensor *t = arena_alloc(&c->arena, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) {
        CM_ASSERT(shape[i] >= 1, "tensor: dim %d has size %d", i, shape[i]);
        t->shape[i] = shape[i];
        t->n *= (size_t)shape[i];
    }
    t->is_leaf = true;
    return t;
}

Tensor *tensor_new(Ctx *c, int ndim, const int *shape)
{
    Tensor *t = tensor_header(c, ndim, shape);
    t->data = arena_alloc(&c->arena, t->n * sizeof(float));
    return t;
}

Tensor *tensor_zeros(Ctx *c, int ndim, const int *shape)
{
    Tensor *t = tensor_new(c, ndim, shape);
    zero_bytes(t->data, t->n * sizeof(float));
    return t;
}

Tensor *tensor_like(Ctx *c, const Tensor *t) { return tensor_new(c, t->ndim, t->shape); }

Tensor *tensor_wrap(Ctx *c, float *data, float *grad, int ndim, const int *shape, bool requires_grad)
{
    Tensor *t = tensor_header(c, ndim, shape);
    t->data = data;
    t->grad = grad;
    t->requires_grad = requires_grad;
    return t;
}

bool tensor_same_shape(const Tensor *a, const Tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t len)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < t->ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%d" : "%d", t->shape[i]);
    if (o < len) snprintf(buf + o, len - o, "]");
    return buf;
}

void check_same_shape(const char *op, const Tensor *a, const Tensor *b)
{
    if (tensor_same_shape(a, b)) return;
    char sa[64], sb[64];
    cm_abort(__FILE__, __LINE__, "%s: shape mismatch: %s and %s", op,
             tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
}

int tensor_dim_r(const Tensor *t, int d)
{
    return d < t->ndim ? t->shape[t->ndim - 1 - d] : 1;
}

/* A buffer of n floats from the free gradients (exact size: a U-Net's tensors come in a few
 * sizes), else from the arena. */
static float *grad_buffer(Ctx *c, size_t n)
{
    for (int i = c->nfree_grads - 1; i >= 0; i--)
        if (c->free_grads[i].n == n) {
            float *p = c->free_grads[i].p;
            c->free_grads[i] = c->free_grads[--c->nfree_grads];
            return p;
        }
    return arena_alloc(&c->arena, n * sizeof(float));
}

float *tensor_grad(Ctx *c, Tensor *t)
{
    if (!t->grad) {
        t->grad = grad_buffer(c, t->n);
        zero_bytes(t->grad, t->n * sizeof(float));
    }
    return t->grad;
}

float *tensor_grad_fresh(Ctx *c, Tensor *t)
{
    CM_ASSERT(!t->grad, "tensor_grad_fresh: the tensor already has a gradient");
    t->grad = grad_buffer(c, t->n);
    return t->grad;
}

/* The sweep is done with t's gradient: keep the buffer for reuse (when the list is full it is
 * simply left in the arena until ctx_reset). */
static void grad_release(Ctx *c, Tensor *t)
{
    if (t->grad && c->nfree_grads < CTX_FREE_GRADS)
        c->free_grads[c->nfree_grads++] = (FreeGrad){t->grad, t->n};
    t->grad = NULL;
}

/* ---- tape ---- */

TapeEntry *tape_record(Ctx *c, int op, Tensor *out, int nin, Tensor *const *in)
{
    CM_ASSERT(op >= 0 && op < OP_COUNT, "tape_record: op %d out of range", op);
    CM_ASSERT(nin <= TAPE_MAX_INPUTS, "%s: %d inputs (at most %d)", OPS[op].name, nin, TAPE_MAX_INPUTS);
    bool any = false;
    for (int i = 0; i < nin; i++) any |= in[i] && in[i]->requires_grad;
    out->requires_grad = any && ctx_grad_enabled(c);
    out->is_leaf = !out->requires_grad;
    if (!out->requires_grad) return NULL;
    if (c->tape_len == c->tape_cap) {
        c->tape_cap *= 2;
        TapeEntry *t = realloc(c->tape, sizeof(TapeEntry) * (size_t)c->tape_cap);
        CM_ASSERT(t, "out of memory growing the tape to %d entries", c->tape_cap);
        c->tape = t;
    }
    TapeEntry *e = &c->tape[c->tape_len++];
    memset(e, 0, sizeof *e);
    e->op = op;
    e->out = out;
    e->nin = nin;
    for (int i = 0; i < nin; i++) e->in[i] = in[i];
    return e;
}

void tape_backward(Ctx *c, Tensor *root, const float *seed)
{
    CM_ASSERT(root->requires_grad, "tape_backward: the root %s does not require a gradient "
              "(was it computed in a no-grad scope, or from inputs that need none?)",
              root->is_leaf ? "is a leaf and" : "");
    /* Intermediate gradients start from zero on every sweep; leaves keep accumulating. Each
     * sweep starts its own free list (a previous sweep's buffers stay in the arena unused). */
    for (int i = 0; i < c->tape_len; i++) c->tape[i].out->grad = NULL;
    c->nfree_grads = 0;
    float *g = tensor_grad(c, root);
    for (size_t i = 0; i < root->n; i++) g[i] += seed ? seed[i] : 1.0f;
    for (int i = c->tape_len - 1; i >= 0; i--) {
        TapeEntry *e = &c->tape[i];
        if (!e->out->grad) continue;   /* nothing downstream of this entry reached the root */
        OPS[e->op].backward(c, e);
        grad_release(c, e->out);       /* every consumer of e->out comes later on the tape */
    }
}
