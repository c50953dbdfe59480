/* gemm_bf16.h: the GEMM of the bf16 precision (issue 19) and the one call every GEMM-shaped op
 * makes (gemm_run), which picks it or OpenBLAS's sgemm by the context's precision.
 *
 * gemm_bf16 has the semantics of a row-major cblas_sgemm,
 *   C [M,N] = alpha op(A) [M,K] op(B) [K,N] + beta C,   op(X) = X^T when its flag is set,
 * except that A and B are rounded to bf16 (round to nearest even; NaN stays NaN) while they are
 * packed; the products of two bf16 are exact in fp32 and are summed in fp32 (by AVX512_BF16's
 * vdpbf16ps in increasing k, or by AMX tiles: below). As with BLAS, beta = 0 does not read C.
 * vdpbf16ps and the tiles treat bf16 subnormals (|x| < 2^-126) as zero.
 *
 * Threads: called inside an OpenMP parallel region (op_conv.c's per-thread GEMMs) it runs on the
 * calling thread alone; from serial code it splits its column panels and row blocks over
 * cm_threads() threads. Every element of C is summed in the same order either way, so the result
 * does not depend on the thread count.
 *
 * The CPU is asked at run time (cpuid, the OS's AVX-512 and tile state): AVX512_BF16, which both
 * CPU families cmlab runs on (Intel Xeon, AMD Zen 4) have, and AMX-BF16 where the CPU has it too
 * (Intel Xeon from Sapphire Rapids on; Linux grants the tiles to the process on request). On the
 * Xeon measured, vdpbf16ps runs at half the fp32 FMA rate and the tiles at 15 times it
 * (bench/bench_peak.c), so AMX takes every product of at least 16 rows and 32 k it can, in
 * blocks of 16 x 16 sums over 32 k per tile instruction (the tile unit's own summation order
 * within those 32, the same on every call); vdpbf16ps takes the rest. The result does not depend
 * on the thread count either way, but AMX's and vdpbf16ps's bits differ (both within the same
 * bound). The kernels are compiled function by function, so builds without -march=native have
 * them too. */
#ifndef CM_GEMM_BF16_H
#define CM_GEMM_BF16_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

/* "fp32", "bf16": the names of CmPrecision (model.precision, --precision), NULL-terminated. */
extern const char *const cm_precision_names[CM_PRECISION_COUNT + 1];

/* Whether this CPU and OS run AVX512_BF16 code (asked once). The environment's CMLAB_BF16=off makes
 * it false (the fallback, on any CPU); another non-empty value exits 2 with a message. */
bool gemm_bf16_available(void);

/* The kernels gemm_bf16 runs here: "amx", "avx512_bf16" or "none". The environment's
 * CMLAB_BF16=avx512 keeps AMX out (vdpbf16ps alone). */
const char *gemm_bf16_kernel(void);

/* The precision a context asked for `want` gets here: want, or fp32 when want is bf16 and the CPU
 * cannot run it; that case prints "cmlab: note: this CPU has no AVX512_BF16; running in fp32" on
 * stderr ("no AVX512_BF16 (CMLAB_BF16=off)" when that forced it), once per process. */
CmPrecision gemm_precision_usable(CmPrecision want);

/* x rounded to bf16 (round to nearest even, NaN kept NaN, quieted), as the bits of a bf16 and as
 * the float it stands for: the rounding gemm_bf16 applies to its inputs (which also flushes fp32
 * subnormals to zero, as vdpbf16ps would read them). */
uint16_t bf16_bits(float x);
float bf16_round(float x);

/* C = alpha op(A) op(B) + beta C with bf16 inputs and fp32 sums (above). Lead dimensions as
 * cblas_sgemm's row-major ones. Needs gemm_bf16_available(). */
void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc);

/* The pieces conv_wino.c's bf16 planes are made of (serial; the caller owns the threads; all need
 * gemm_bf16_available()).
 * dst [(K+1)/2][n] (row stride ldd): the pairs of src's rows 2p and 2p+1 (src [K][n], row stride
 * ld; an odd K's missing row is 0), each column's pair in one word, the even row in the low half. */
void bf16_pack_row_pairs(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd);
/* dst [(n+1)/2]: the pairs of consecutive values of src [n] (an odd n's last pair has 0 above). */
void bf16_pack_pairs(const float *src, size_t n, uint32_t *dst);
/* dst [n][(K+1)/2] (row stride ldd): the same pairs of src's rows 2p and 2p+1, column i's pairs
 * along row i of dst: src^T packed as gemm_bf16_packed's A (how the weight gradient's V^T is). */
void bf16_pack_transposed(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd);
/* C [rows][16 nv] = (C +, when acc) sum_p a(r, p) . B[p][..] over Kp pairs, a(r, p) = A[r ars + p]
 * (a row's pairs contiguous, as AMX's tiles read them) and B [Kp][ldb] packed by
 * bf16_pack_row_pairs (ldb >= 16 nv). */
void gemm_bf16_packed(int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb,
                      float *C, ptrdiff_t ldc, bool acc);

/* op(A) packed once for many products with the same A (op_conv.c's weights over its chunks of
 * samples, read by every thread): gemm_bf16_pack_a fills ap [gemm_bf16_a_words(M, K)] with op(A)'s
 * pairs (over cm_threads() threads from serial code, on the calling thread inside a parallel
 * region), and gemm_bf16_a is then gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ...) with the same
 * bits (called inside a parallel region, on the calling thread alone, as gemm_bf16). */
size_t gemm_bf16_a_words(int M, int K);
void gemm_bf16_pack_a(bool ta, int M, int K, const float *A, int lda, uint32_t *ap);
void gemm_bf16_a(bool ta, bool tb, int M, int N, int K, float alpha, const uint32_t *ap, const float *B, int ldb,
                 float beta, float *C, int ldc);

/* gemm_bf16 when prec is CM_PRECISION_BF16, else cblas_sgemm (row-major), same arguments. */
void gemm_run(CmPrecision prec, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);

#endif
