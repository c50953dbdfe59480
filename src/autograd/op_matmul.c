/* op_matmul.c: linear, matmul and batched matmul, forward and backward, all through one gemm
 * (cblas_sgemm, or gemm_bf16 when the context's precision is bf16: gemm_bf16.h).
 *
 * The three ops are one product C = op(A) op(B), op(X) = X or X^T, so they share one gemm wrapper
 * and one backward rule (gemm_backward). Row-major throughout: a matrix stored [rows, cols] has
 * leading dimension cols.
 *
 * Threads (STYLE.md 9): OpenBLAS owns the GEMM threads, so every sgemm call here is made from
 * serial code; bmm loops over the batch serially and each call is threaded inside OpenBLAS (or
 * inside gemm_bf16, which splits its work likewise when called from serial code). The only OpenMP
 * loop (the bias gradient) calls no GEMM.
 */
#include "ops.h"

#include "gemm_bf16.h"

#include <string.h>

/* Work below this many elements is not worth waking the OpenMP threads for. */
#define PAR_MIN 32768

/* C [M,N] = op(A) [M,K] @ op(B) [K,N] + beta C, with op(A) = A^T when ta (A stored [K,M],
 * otherwise [M,K]) and op(B) = B^T when tb (B stored [N,K], otherwise [K,N]). */
static void gemm(Ctx *c, bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                 float beta, float *C)
{
    c->flops += 2.0 * M * N * (double)K;
    gemm_run(c->precision, ta, tb, M, N, K, 1.0f, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

/* Gradients of C = op(A) op(B) given G = dL/dC [M,N]; dA/dB may be NULL (not needed), and are
 * accumulated (+=, beta = 1) in A's and B's stored layout.
 *
 * With A' = op(A), B' = op(B):  dA' = G B'^T  and  dB' = A'^T G.
 *   no ta: dA [M,K] = G B'^T                 ta: dA [K,M] = (G B'^T)^T = B' G^T
 *   no tb: dB [K,N] = A'^T G                 tb: dB [N,K] = (A'^T G)^T = G^T A'
 * B'^T is B itself when tb (else B transposed); A'^T is A itself when ta (else A transposed), so
 * each case is a single gemm on the stored matrices. */
static void gemm_backward(Ctx *c, bool ta, bool tb, int M, int N, int K, const float *A, const float *B,
                          const float *G, float *dA, float *dB)
{
    if (dA) {
        if (ta) gemm(c, tb, true, K, M, N, B, G, 1.0f, dA);
        else gemm(c, false, !tb, M, K, N, G, B, 1.0f, dA);
    }
    if (dB) {
        if (tb) gemm(c, true, ta, N, K, M, G, A, 1.0f, dB);
        else gemm(c, !ta, false, K, N, M, A, G, 1.0f, dB);
    }
}

/* ---- linear: y [N,out] = x [N,in] @ w^T + b, i.e. gemm with ta = false, tb = true ---- */

Tensor *op_linear(Ctx *c, Tensor *x, Tensor *w, Tensor *b)
{
    char sx[64], sw[64], sb[64];
    bool x_ok = x->ndim == 2 || (x->ndim == 4 && x->shape[2] == 1 && x->shape[3] == 1);
    CM_ASSERT(x_ok, "linear: input must be [N,in] or [N,in,1,1], got %s",
              tensor_shape_str(x, sx, sizeof sx));
    CM_ASSERT(w->ndim == 2 && w->shape[1] == x->shape[1],
              "linear: input %s does not match weight %s (want [out,in])",
              tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(w, sw, sizeof sw));
    CM_ASSERT(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]),
              "linear: bias %s does not match weight %s (want [out])",
              b ? tensor_shape_str(b, sb, sizeof sb) : "", tensor_shape_str(w, sw, sizeof sw));
    int N = x->shape[0], in = x->shape[1], out = w->shape[0];

    Tensor *y = TENSOR_NEW(c, N, out);
    if (b)
        for (int i = 0; i < N; i++) memcpy(y->data + (size_t)i * out, b->data, (size_t)out * sizeof(float));
    gemm(c, false, true, N, out, in, x->data, w->data, b ? 1.0f : 0.0f, y->data);

    tape_record(c, OP_LINEAR, y, 3, (Tensor *[]){x, w, b});
    return y;
}

/* db [cols] += column sums of g [rows,cols]. Parallel over blocks of columns, so each thread owns
 * its slice of db (race-free) and the summation order does not depend on the thread count. A
 * block's sums are formed in a local buffer and added to db once, so accumulating into a non-zero
 * db adds exactly the same sums as into a zero one. */
static void add_column_sums(const float *g, int rows, int cols, float *db)
{
    enum { BLOCK = 64 };
    int nblocks = (cols + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN && nblocks > 1)
    for (int blk = 0; blk < nblocks; blk++) {
        int j0 = blk * BLOCK, width = CM_MIN(BLOCK, cols - j0);
        float sum[BLOCK] = {0};
        for (int i = 0; i < rows; i++) {
            const float *gi = g + (size_t)i * cols + j0;
            for (int j = 0; j < width; j++) sum[j] += gi[j];
        }
        for (int j = 0; j < width; j++) db[j0 + j] += sum[j];
    }
}

/* dx = gy w, dw = gy^T x (gemm_backward with ta = false, tb = true), db = sum over rows of gy. */
void linear_backward(Ctx *c, TapeEntry *e)
{
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2];
    int N = x->shape[0], in = x->shape[1], out = w->shape[0];
    const float *gy = e->out->grad;
    float *gx = entry_needs_grad(e, 0) ? tensor_grad(c, x) : NULL;
    float *gw = entry_needs_grad(e, 1) ? tensor_grad(c, w) : NULL;
    gemm_backward(c, false, true, N, out, in, x->data, w->data, gy, gx, gw);
    if (entry_needs_grad(e, 2)) add_column_sums(gy, N, out, tensor_grad(c, b));
}

/* ---- matmul: y [M,N] = a [M,K] @ b [K,N] ---- */

Tensor *op_matmul(Ctx *c, Tensor *a, Tensor *b)
{
    char sa[64], sb[64];
    CM_ASSERT(a->ndim == 2 && b->ndim == 2, "matmul: want two matrices, got %s and %s",
              tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    CM_ASSERT(a->shape[1] == b->shape[0], "matmul: inner dims differ: %s and %s",
              tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    int M = a->shape[0], K = a->shape[1], N = b->shape[1];

    Tensor *y = TENSOR_NEW(c, M, N);
    gemm(c, false, false, M, N, K, a->data, b->data, 0.0f, y->data);

    tape_record(c, OP_MATMUL, y, 2, (Tensor *[]){a, b});
    return y;
}

void matmul_backward(Ctx *c, TapeEntry *e)
{
    Tensor *a = e->in[0], *b = e->in[1];
    int M = a->shape[0], K = a->shape[1], N = b->shape[1];
    float *ga = entry_needs_grad(e, 0) ? tensor_grad(c, a) : NULL;
    float *gb = entry_needs_grad(e, 1) ? tensor_grad(c, b) : NULL;
    gemm_backward(c, false, false, M, N, K, a->data, b->data, e->out->grad, ga, gb);
}

/* ---- bmm: y[i] [M,N] = op(a[i]) @ op(b[i]) for every batch index i ---- */

/* The problem sizes of a bmm, read from its (stored) operands. */
typedef struct BmmDims {
    int B, M, N, K;
} BmmDims;

static BmmDims bmm_dims(const Tensor *a, const Tensor *b, bool ta, bool tb)
{
    BmmDims d = {
        .B = a->shape[0],
        .M = ta ? a->shape[2] : a->shape[1],
        .K = ta ? a->shape[1] : a->shape[2],
        .N = tb ? b->shape[1] : b->shape[2],
    };
    return d;
}

Tensor *op_bmm(Ctx *c, Tensor *a, Tensor *b, bool ta, bool tb)
{
    char sa[64], sb[64];
    CM_ASSERT(a->ndim == 3 && b->ndim == 3, "bmm: want two [B,rows,cols] tensors, got %s and %s",
              tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    CM_ASSERT(a->shape[0] == b->shape[0], "bmm: batch sizes differ: %s and %s",
              tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    BmmDims d = bmm_dims(a, b, ta, tb);
    int Kb = tb ? b->shape[2] : b->shape[1];
    CM_ASSERT(d.K == Kb, "bmm: inner dims differ: %s%s and %s%s",
              tensor_shape_str(a, sa, sizeof sa), ta ? "^T" : "",
              tensor_shape_str(b, sb, sizeof sb), tb ? "^T" : "");

    Tensor *y = TENSOR_NEW(c, d.B, d.M, d.N);
    size_t sa_n = (size_t)d.M * d.K, sb_n = (size_t)d.K * d.N, sy_n = (size_t)d.M * d.N;
    for (int i = 0; i < d.B; i++)
        gemm(c, ta, tb, d.M, d.N, d.K, a->data + i * sa_n, b->data + i * sb_n, 0.0f, y->data + i * sy_n);

    TapeEntry *e = tape_record(c, OP_BMM, y, 2, (Tensor *[]){a, b});
    if (e) {
        e->iarg[0] = ta;
        e->iarg[1] = tb;
    }
    return y;
}

void bmm_backward(Ctx *c, TapeEntry *e)
{
    Tensor *a = e->in[0], *b = e->in[1];
    bool ta = e->iarg[0], tb = e->iarg[1];
    BmmDims d = bmm_dims(a, b, ta, tb);
    float *ga = entry_needs_grad(e, 0) ? tensor_grad(c, a) : NULL;
    float *gb = entry_needs_grad(e, 1) ? tensor_grad(c, b) : NULL;
    const float *gy = e->out->grad;
    size_t sa_n = (size_t)d.M * d.K, sb_n = (size_t)d.K * d.N, sy_n = (size_t)d.M * d.N;
    for (int i = 0; i < d.B; i++)
        gemm_backward(c, ta, tb, d.M, d.N, d.K, a->data + i * sa_n, b->data + i * sb_n, gy + i * sy_n,
                      ga ? ga + i * sa_n : NULL, gb ? gb + i * sb_n : NULL);
}
