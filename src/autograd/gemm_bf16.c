/* gemm_bf16.c: the bf16 GEMM (AVX512_BF16's vdpbf16ps or AMX tiles, fp32 sums), the run-time CPU
 * check and the precision switch of the GEMM-shaped ops (gemm_bf16.h).
 *
 * Layout. op(A) is packed to ap [M][Kp], Kp = ceil(K/2), one 32-bit word per row and pair of k:
 * bf16(a[i][2p]) in its low half, bf16(a[i][2p+1]) in its high half (an odd K's last pair has 0
 * there). op(B) is packed to column panels of NR = 64 columns, bp [panel][Kp][width], with the
 * same pairs of k per column (width = the panel's columns rounded up to 16, the extra columns 0).
 * vdpbf16ps then multiplies 16 columns' pairs (one vector of B) by one row's pair (broadcast) and
 * adds both products to 16 fp32 sums. The micro-kernel keeps R rows x S vectors of sums in
 * registers, like conv_wino.c's fp32 one, over the whole of K: each element of C is one sum in
 * increasing k, then alpha sum + beta C. The same layouts are what AMX's tiles read: a tile of A
 * is 16 rows of 16 pairs, a tile of B 16 pairs of 16 columns (packed_amx below).
 *
 * Threads. The work is split into tasks of one panel x MC rows; a task writes its own block of C
 * and sums every element over all of K, so the split (and the thread count) changes no bit. */
#include "gemm_bf16.h"

#include <omp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "simd16.h"
#include "threads.h"

#if defined(__x86_64__) || defined(__i386__)
#define HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#define HAVE_AMX 1
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* Work below this many flops runs on the calling thread (waking the team costs more). */
#define PAR_MIN_FLOPS (1 << 21)

const char *const cm_precision_names[CM_PRECISION_COUNT + 1] = {"fp32", "bf16", NULL};

uint16_t bf16_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);   /* NaN: a quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1);   /* round to nearest, ties to the even bf16; overflow gives inf */
    return (uint16_t)(u >> 16);
}

float bf16_round(float x)
{
    uint32_t u = (uint32_t)bf16_bits(x) << 16;
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/* cpuid leaf 7 subleaf 1 EAX bit 5 (AVX512_BF16) and leaf 7 EBX bit 16 (AVX512F), and the OS
 * saving the AVX-512 state: XCR0 bits 1-2 (SSE, AVX) and 5-7 (opmask, upper ZMM0-15, ZMM16-31),
 * readable once CPUID.1 ECX bit 27 (OSXSAVE) says xgetbv is. */
static bool cpu_has_bf16(void)
{
#ifdef HAVE_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0xe6u) != 0xe6u || __get_cpuid_max(0, NULL) < 7) return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16))) return false;
    __cpuid_count(7, 1, a, b, c, d);
    return (a & (1u << 5)) != 0;
#else
    return false;
#endif
}

/* AMX-BF16 and AMX-TILE (cpuid leaf 7 EDX bits 22 and 24), the OS saving the tile state (XCR0
 * bits 17-18) and Linux granting this process the tile data (arch_prctl ARCH_REQ_XCOMP_PERM for
 * XFEATURE_XTILEDATA = 18; Linux 5.16 on), asked once. */
static bool cpu_has_amx(void)
{
#ifdef HAVE_AMX
    unsigned a, b, c, d;
    if (!cpu_has_bf16()) return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17)) return false;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return false;
#endif
}

/* CMLAB_BF16 (read once): unset or empty: the CPU decides (AMX, else AVX512_BF16); avx512: no
 * AMX (vdpbf16ps only, to compare the two or to test the second where the CPU has both); off: the
 * answer a CPU without AVX512_BF16 gives, so the fp32 fallback can be run and tested here. Another
 * value exits 2 (a typo must not go unnoticed). */
typedef enum { ENV_CPU, ENV_AVX512, ENV_OFF } EnvBf16;

static EnvBf16 env_bf16(void)
{
    const char *v = getenv("CMLAB_BF16");
    if (!v || !v[0]) return ENV_CPU;
    if (strcmp(v, "off") == 0) return ENV_OFF;
    if (strcmp(v, "avx512") == 0) return ENV_AVX512;
    fprintf(stderr, "cmlab: CMLAB_BF16 expects off or avx512 (or unset: the CPU decides), got '%s'\n", v);
    exit(CM_EXIT_INPUT);
}

/* 0: no bf16 kernels, 1: AVX512_BF16, 2: AMX too; asked once. */
static int bf16_level(void)
{
    static atomic_int known = -1;
    int k = atomic_load(&known);
    if (k < 0) {
        EnvBf16 e = env_bf16();
        k = e == ENV_OFF || !cpu_has_bf16() ? 0 : e == ENV_CPU && cpu_has_amx() ? 2 : 1;
        atomic_store(&known, k);
    }
    return k;
}

bool gemm_bf16_available(void) { return bf16_level() > 0; }

const char *gemm_bf16_kernel(void)
{
    static const char *const NAMES[3] = {"none", "avx512_bf16", "amx"};
    return NAMES[bf16_level()];
}

CmPrecision gemm_precision_usable(CmPrecision want)
{
    if (want != CM_PRECISION_BF16 || gemm_bf16_available()) return want;
    static atomic_flag noted = ATOMIC_FLAG_INIT;
    if (!atomic_flag_test_and_set(&noted))
        fprintf(stderr, "cmlab: note: %s; running in fp32\n",
                env_bf16() != ENV_OFF ? "this CPU has no AVX512_BF16" : "no AVX512_BF16 (CMLAB_BF16=off)");
    return CM_PRECISION_FP32;
}

void gemm_run(CmPrecision prec, bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc)
{
    if (prec == CM_PRECISION_BF16)
        gemm_bf16(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha,
                    A, lda, B, ldb, beta, C, ldc);
}

/* M Kp pairs and 16 words of slack (gemm_bf16's own allocation). */
size_t gemm_bf16_a_words(int M, int K) { return (size_t)M * ((K + 1) / 2) + 16; }

#ifdef HAVE_X86

enum { NR = 64, MC = 48 };   /* panel columns; rows per task (a multiple of every KERNEL_ROWS) */

#define BF16_TARGET __attribute__((target("avx512f,avx512bf16")))

/* ---- packing: vcvtneps2bf16 rounds 16 floats at a time, to nearest even with NaN kept NaN as
 * bf16_bits does; it also flushes subnormals to zero, which vdpbf16ps would read as zero anyway ---- */

BF16_TARGET void bf16_pack_row_pairs(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    for (int k = 0; k < K; k += 2) {
        const float *s0 = src + k * ld, *s1 = s0 + ld;
        const bool odd = k + 1 == K;
        uint32_t *row = dst + (k / 2) * ldd;
        for (int j = 0; j < n; j += 16) {
            __mmask16 m = lanes16(n - j);
            __m512 lo = _mm512_maskz_loadu_ps(m, s0 + j);
            __m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, s1 + j);
            _mm512_mask_storeu_epi32(row + j, m, pair16(lo, hi));
        }
    }
}

BF16_TARGET void bf16_pack_pairs(const float *src, size_t n, uint32_t *dst)
{
    for (size_t i = 0; i < n; i += 32) {   /* 32 floats, 16 words: vcvtne2ps2bf16 keeps their order */
        int rem = (int)CM_MIN(n - i, 32);
        __m512 lo = _mm512_maskz_loadu_ps(lanes16(rem), src + i);
        __m512 hi = _mm512_maskz_loadu_ps(lanes16(rem - 16), src + i + 16);
        _mm512_mask_storeu_epi32(dst + i / 2, lanes16((rem + 1) / 2), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
    }
}

/* 16 pairs of rows of src at a time, one vector of 16 columns each, transposed as 16 x 16 words. */
BF16_TARGET void bf16_pack_transposed(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    const int Kp = (K + 1) / 2;
    for (int i0 = 0; i0 < n; i0 += 16) {
        const __mmask16 m = lanes16(n - i0);
        for (int p0 = 0; p0 < Kp; p0 += 16) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                const int k = 2 * (p0 + j);
                const float *s = src + (size_t)k * ld + i0;
                __m512 lo = k < K ? _mm512_maskz_loadu_ps(m, s) : _mm512_setzero_ps();
                __m512 hi = k + 1 < K ? _mm512_maskz_loadu_ps(m, s + ld) : _mm512_setzero_ps();
                r[j] = _mm512_castsi512_ps(pair16(lo, hi));
            }
            transpose16(r);
            const __mmask16 mp = lanes16(Kp - p0);
            for (int l = 0; l < 16 && i0 + l < n; l++)
                _mm512_mask_storeu_ps(dst + (size_t)(i0 + l) * ldd + p0, mp, r[l]);
        }
    }
}

/* dst [Kp][n] (row stride ldd): the pairs of consecutive values along each of src's n rows (row
 * stride ld, K values; an odd K's last pair has 0 above), row i's pairs down column i of dst: B^T
 * packed as gemm_bf16's B panels. 16 rows at a time: 32 values of each converted in one
 * instruction, then 16 x 16 words transposed (bf16_pack_transposed's mirror). */
static BF16_TARGET void pack_rows_transposed(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    const int Kp = (K + 1) / 2;
    for (int i0 = 0; i0 < n; i0 += 16) {
        const __mmask16 m = lanes16(n - i0);
        for (int p0 = 0; p0 < Kp; p0 += 16) {
            const int k0 = 2 * p0;
            const __mmask16 mlo = lanes16(K - k0), mhi = lanes16(K - k0 - 16);
            __m512 r[16];
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                const float *s = src + (size_t)(i0 + j) * ld + k0;
                r[j] = i0 + j < n ? _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(mhi, s + 16),
                                                                                      _mm512_maskz_loadu_ps(mlo, s)))
                                  : _mm512_setzero_ps();
            }
            transpose16(r);
            for (int p = 0; p < 16 && p0 + p < Kp; p++) _mm512_mask_storeu_ps(dst + (size_t)(p0 + p) * ldd + i0, m, r[p]);
        }
    }
}

/* The pairs of op(A), [M][Kp] (a row's pairs contiguous, as the AMX tiles read them): from A's
 * rows, or with ta from pairs of A's rows, 16 columns of A at a time. Shared among the team (omp
 * for). */
static void pack_a(bool ta, int M, int K, const float *A, int lda, uint32_t *ap)
{
    const int Kp = (K + 1) / 2;
    if (ta) {
#pragma omp for schedule(static)
        for (int i0 = 0; i0 < M; i0 += 16)
            bf16_pack_transposed(A + i0, K, CM_MIN(16, M - i0), lda, ap + (size_t)i0 * Kp, Kp);
    } else {
#pragma omp for schedule(static)
        for (int i = 0; i < M; i++) bf16_pack_pairs(A + (size_t)i * lda, (size_t)K, ap + (size_t)i * Kp);
    }
}

/* bp [Kp][width]: with tb, the pairs of op(B)'s columns [j0, j0 + w) (rows of B), then zeros up to
 * width (no tb: pack_b_rows, below). */
static void pack_b_panel_t(int K, const float *B, int ldb, int j0, int w, int width, uint32_t *bp)
{
    const int Kp = (K + 1) / 2;
    pack_rows_transposed(B + (size_t)j0 * ldb, K, w, ldb, bp, width);
    for (int p = 0; p < Kp; p++) memset(bp + (size_t)p * width + w, 0, sizeof(uint32_t) * (size_t)(width - w));
}

/* All of op(B)'s panels (bp, panel q at q Kp NR, its rows its columns rounded up to 16 words apart,
 * zeros past its columns) from B's rows (no tb), pair of rows by pair of rows (omp for), with the
 * pair two ahead prefetched. Panel by panel (pack_b_panel_t's order), each pair of rows was read NR
 * columns at a time from the caches' far levels (the activations of a whole batch): 10.7% of M's
 * one-step bf16 sampling at one thread in a profile (AMD Zen 5), 4.4% now. */
static void pack_b_rows(int K, int N, const float *B, int ldb, uint32_t *bp)
{
    const int Kp = (K + 1) / 2, npanels = (N + NR - 1) / NR;
#pragma omp for schedule(static)
    for (int p = 0; p < Kp; p++) {
        const float *s = B + (size_t)2 * p * ldb;
        for (int k = 2 * p + 4; k < CM_MIN(2 * p + 6, K); k++)   /* strided rows the hardware does not fetch early */
            for (int j = 0; j < N; j += 16) _mm_prefetch((const char *)(B + (size_t)k * ldb + j), _MM_HINT_T0);
        for (int q = 0; q < npanels; q++) {
            const int j0 = q * NR, w = CM_MIN(NR, N - j0), width = (w + 15) / 16 * 16;
            uint32_t *row = bp + (size_t)q * Kp * NR + (size_t)p * width;
            bf16_pack_row_pairs(s + j0, CM_MIN(2, K - 2 * p), w, ldb, row, width);
            memset(row + w, 0, sizeof(uint32_t) * (size_t)(width - w));
        }
    }
}

/* C [R][16 S] = alpha sum_p a(r, p) . b(p) + beta C (beta = 0: C not read), a(r, p) = A[r ars + p],
 * b(p) = B[p ldb .. p ldb + 16 S): R x S vectors of sums in registers, S vectors of B's row and one
 * broadcast pair of A per step. The last vector of each row is stored through mask `last` (a panel
 * narrower than 16 S). */
static inline __attribute__((always_inline)) BF16_TARGET void
kernel(const int R, const int S, int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B,
       ptrdiff_t ldb, float alpha, float beta, float *C, ptrdiff_t ldc, __mmask16 last)
{
    __m512 c[12][4];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) c[r][s] = _mm512_setzero_ps();
    for (int p = 0; p < Kp; p++, A++, B += ldb) {
        __m512bh b[4];
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) b[s] = (__m512bh)_mm512_loadu_si512(B + 16 * s);
#pragma GCC unroll 12
        for (int r = 0; r < R; r++) {
            __m512bh a = (__m512bh)_mm512_set1_epi32((int)A[r * ars]);
#pragma GCC unroll 4
            for (int s = 0; s < S; s++) c[r][s] = _mm512_dpbf16_ps(c[r][s], a, b[s]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int s = 0; s < S; s++) {
            float *o = C + r * ldc + s * 16;
            __mmask16 m = s == S - 1 ? last : (__mmask16)0xffff;
            __m512 v = _mm512_mul_ps(va, c[r][s]);
            if (beta != 0.0f) v = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m, o), v);
            _mm512_mask_storeu_ps(o, m, v);
        }
}

typedef void KernelFn(int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb,
                      float alpha, float beta, float *C, ptrdiff_t ldc, __mmask16 last);

#define KERNEL_DEF(R, S)                                                                                 \
    BF16_TARGET static void kernel_##R##_##S(int Kp, const uint32_t *A, ptrdiff_t ars,                    \
                                             const uint32_t *B, ptrdiff_t ldb, float alpha, float beta, \
                                             float *C, ptrdiff_t ldc, __mmask16 last)                  \
    {                                                                                                    \
        kernel(R, S, Kp, A, ars, B, ldb, alpha, beta, C, ldc, last);                                     \
    }
#define KERNEL_ROWS_6(S) KERNEL_DEF(1, S) KERNEL_DEF(2, S) KERNEL_DEF(3, S) KERNEL_DEF(4, S) \
    KERNEL_DEF(5, S) KERNEL_DEF(6, S)
#define KERNEL_ROWS_12(S) KERNEL_ROWS_6(S) KERNEL_DEF(7, S) KERNEL_DEF(8, S) KERNEL_DEF(9, S) \
    KERNEL_DEF(10, S) KERNEL_DEF(11, S) KERNEL_DEF(12, S)
KERNEL_ROWS_12(1)
KERNEL_ROWS_12(2)
KERNEL_ROWS_6(3) KERNEL_DEF(7, 3) KERNEL_DEF(8, 3)
KERNEL_ROWS_6(4)

/* Rows of the register block for S vectors of columns: R x S sums, S panel vectors and the
 * broadcast fit the 32 registers (as conv_wino.c's KERNEL_ROWS). */
static const int KERNEL_ROWS[5] = {0, 12, 12, 8, 6};
_Static_assert(MC % 12 == 0 && MC % 8 == 0 && MC % 6 == 0, "a task's rows are whole register blocks");

#define K6(S) kernel_1_##S, kernel_2_##S, kernel_3_##S, kernel_4_##S, kernel_5_##S, kernel_6_##S
static KernelFn *const KERNELS[5][12] = {
    {0},
    {K6(1), kernel_7_1, kernel_8_1, kernel_9_1, kernel_10_1, kernel_11_1, kernel_12_1},
    {K6(2), kernel_7_2, kernel_8_2, kernel_9_2, kernel_10_2, kernel_11_2, kernel_12_2},
    {K6(3), kernel_7_3, kernel_8_3},
    {K6(4)},
};

/* Whether AMX takes a product of `rows` rows over Kp pairs (at least one whole tile of A). */
static bool amx_takes(int rows, int Kp) { return bf16_level() == 2 && Kp >= 16 && rows >= 16; }

/* One task: `rows` (<= MC) rows of C (ap at their first, Kp pairs each) against one panel bp of w
 * (<= NR) columns. With AMX the sums go to a block of their own first (gemm_bf16_packed), then
 * alpha sum + beta C. */
static void gemm_task(int Kp, const uint32_t *ap, const uint32_t *bp, int rows, int w, float alpha, float beta,
                      float *C, int ldc)
{
    const int S = (w + 15) / 16, R = KERNEL_ROWS[S];
    if (amx_takes(rows, Kp)) {
        float sums[MC * NR] __attribute__((aligned(64)));
        gemm_bf16_packed(rows, S, Kp, ap, Kp, bp, 16 * S, sums, NR, false);
        for (int r = 0; r < rows; r++) {
            float *c = C + (size_t)r * ldc;
            const float *sr = sums + r * NR;
            if (beta == 0.0f)
                for (int j = 0; j < w; j++) c[j] = alpha * sr[j];
            else
                for (int j = 0; j < w; j++) c[j] = alpha * sr[j] + beta * c[j];
        }
        return;
    }
    const __mmask16 last = (__mmask16)(0xffffu >> (16 * S - w));
    for (int r0 = 0; r0 < rows; r0 += R)
        KERNELS[S][CM_MIN(R, rows - r0) - 1](Kp, ap + r0 * Kp, Kp, bp, 16 * S, alpha, beta, C + (size_t)r0 * ldc,
                                            ldc, last);
}

/* gemm_bf16_packed with vdpbf16ps alone. */
static void packed_avx512(int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars,
                          const uint32_t *B, ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc)
{
    const int nchunks = (nv + 3) / 4;
    for (int q = 0; q < nchunks; q++) {   /* chunks of at most 4 vectors, split evenly (conv_wino's planes_gemm) */
        int s0 = nv * q / nchunks, S = nv * (q + 1) / nchunks - s0, R = KERNEL_ROWS[S];
        for (int r0 = 0; r0 < rows; r0 += R)
            KERNELS[S][CM_MIN(R, rows - r0) - 1](Kp, A + r0 * ars, ars, B + 16 * s0, ldb, 1.0f,
                                                acc ? 1.0f : 0.0f, C + r0 * ldc + 16 * s0, ldc, (__mmask16)0xffff);
    }
}

/* ---- AMX: one tile is 16 rows of 64 bytes. Tiles 0-3 hold a 2 x 2 block of 16 x 16 sums of C,
 * 4-5 two row blocks of A (16 rows x 16 pairs of k: a row of A's pairs as packed), 6-7 two column
 * blocks of B (16 pairs of k x 16 columns: B's packed rows are already the pairs tdpbf16ps wants).
 * One tdpbf16ps adds 16 x 16 x 32 products; the tile unit's summation order within those 32 is
 * its own, the same on every call. Every thread configures its tiles once (they never change). */

#ifdef HAVE_AMX
#define AMX_TARGET __attribute__((target("avx512f,avx512bf16,amx-tile,amx-bf16")))

typedef struct TileConfig {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

static _Thread_local bool amx_configured;

/* Palette 1, tiles 0-7 of 16 rows x 64 bytes. A constant in memory: GCC 12's _tile_loadconfig
 * declares a read of only the first 8 of its 64 bytes, and the -march-less build dropped the
 * stores that filled a configuration on the stack (ldtilecfg of garbage: SIGSEGV). */
static const TileConfig TILES = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

AMX_TARGET static void amx_configure(void)
{
    if (amx_configured) return;
    _tile_loadconfig(&TILES);
    amx_configured = true;
}

/* C [16 R][16 S] (+)= A [16 R][16 Kb pairs] . B [16 Kb][16 S], R, S in {1, 2}; strides in words. */
static inline __attribute__((always_inline)) AMX_TARGET void
amx_block(const int R, const int S, int Kb, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb,
          float *C, ptrdiff_t ldc, bool acc)
{
    const ptrdiff_t cs = 4 * ldc, as = 4 * ars, bs = 4 * ldb;
    /* GCC's tileloadd tells the compiler nothing of the memory it reads: every store before it
     * must be done first */
    __asm__ volatile("" ::: "memory");
    if (acc) {
        _tile_loadd(0, C, cs);
        if (S > 1) _tile_loadd(1, C + 16, cs);
        if (R > 1) _tile_loadd(2, C + 16 * ldc, cs);
        if (R > 1 && S > 1) _tile_loadd(3, C + 16 * ldc + 16, cs);
    } else {
        _tile_zero(0);
        if (S > 1) _tile_zero(1);
        if (R > 1) _tile_zero(2);
        if (R > 1 && S > 1) _tile_zero(3);
    }
    for (int kb = 0; kb < Kb; kb++, A += 16, B += 16 * ldb) {
        _tile_loadd(4, A, as);
        _tile_loadd(6, B, bs);
        _tile_dpbf16ps(0, 4, 6);
        if (S > 1) {
            _tile_loadd(7, B + 16, bs);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (R > 1) {
            _tile_loadd(5, A + 16 * ars, as);
            _tile_dpbf16ps(2, 5, 6);
            if (S > 1) _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, C, cs);
    if (S > 1) _tile_stored(1, C + 16, cs);
    if (R > 1) _tile_stored(2, C + 16 * ldc, cs);
    if (R > 1 && S > 1) _tile_stored(3, C + 16 * ldc + 16, cs);
}

#define AMX_BLOCK_DEF(R, S)                                                                                \
    AMX_TARGET static void amx_block_##R##_##S(int Kb, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, \
                                               ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc)            \
    {                                                                                                      \
        amx_block(R, S, Kb, A, ars, B, ldb, C, ldc, acc);                                                  \
    }
AMX_BLOCK_DEF(1, 1)
AMX_BLOCK_DEF(1, 2)
AMX_BLOCK_DEF(2, 1)
AMX_BLOCK_DEF(2, 2)

typedef void AmxBlockFn(int Kb, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb, float *C,
                        ptrdiff_t ldc, bool acc);
static AmxBlockFn *const AMX_BLOCKS[2][2] = {{amx_block_1_1, amx_block_1_2}, {amx_block_2_1, amx_block_2_2}};

/* gemm_bf16_packed with AMX (amx_takes: at least 16 rows and 16 pairs): the tiles over whole
 * blocks of 16 rows and the first 16 floor(Kp / 16) pairs, then vdpbf16ps adds the remaining pairs
 * to those rows (in increasing k) and computes the remaining rows whole. */
static void packed_amx(int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B,
                       ptrdiff_t ldb, float *C, ptrdiff_t ldc, bool acc)
{
    const int Kb = Kp / 16, r16 = rows / 16 * 16;
    amx_configure();
    for (int r0 = 0; r0 < r16; r0 += 32) {
        const int R = CM_MIN(2, (r16 - r0) / 16);
        for (int s0 = 0; s0 < nv; s0 += 2)
            AMX_BLOCKS[R - 1][CM_MIN(2, nv - s0) - 1](Kb, A + r0 * ars, ars, B + 16 * s0, ldb,
                                                       C + r0 * ldc + 16 * s0, ldc, acc);
    }
    if (Kp > 16 * Kb)
        packed_avx512(r16, nv, Kp - 16 * Kb, A + 16 * Kb, ars, B + 16 * Kb * ldb, ldb, C, ldc, true);
    if (rows > r16) packed_avx512(rows - r16, nv, Kp, A + r16 * ars, ars, B, ldb, C + r16 * ldc, ldc, acc);
}
#endif

void gemm_bf16_packed(int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb,
                      float *C, ptrdiff_t ldc, bool acc)
{
#ifdef HAVE_AMX
    if (amx_takes(rows, Kp)) {
        packed_amx(rows, nv, Kp, A, ars, B, ldb, C, ldc, acc);
        return;
    }
#endif
    packed_avx512(rows, nv, Kp, A, ars, B, ldb, C, ldc, acc);
}

void gemm_bf16_pack_a(bool ta, int M, int K, const float *A, int lda, uint32_t *ap)
{
    CM_ASSERT(gemm_bf16_available(), "gemm_bf16_pack_a: this CPU has no AVX512_BF16 (see gemm_precision_usable)");
    /* a team of its own (of one inside a parallel region), so that pack_a's omp for never binds to
     * a caller's team that does not all come here */
#pragma omp parallel num_threads(cm_threads()) if (!omp_in_parallel() && (size_t)M * K >= 32768)
    pack_a(ta, M, K, A, lda, ap);
}

/* gemm_bf16 with op(A)'s pairs in ap, or packed here from A when ap is NULL. */
static void gemm_core(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const uint32_t *ap, const float *B, int ldb, float beta, float *C, int ldc)
{
    CM_ASSERT(gemm_bf16_available(), "gemm_bf16: this CPU has no AVX512_BF16 (see gemm_precision_usable)");
    if (M <= 0 || N <= 0) return;
    const int Kp = (K + 1) / 2, npanels = (N + NR - 1) / NR, nrows = (M + MC - 1) / MC;
    uint32_t *own = ap ? NULL : cm_aligned_alloc(sizeof(uint32_t) * gemm_bf16_a_words(M, K));
    uint32_t *bp = cm_aligned_alloc(sizeof(uint32_t) * ((size_t)npanels * Kp * NR + 16));
    const int T = cm_threads();
    const bool par = T > 1 && !omp_in_parallel() && 2.0 * M * N * K >= PAR_MIN_FLOPS && npanels * nrows > 1;
#pragma omp parallel num_threads(T) if (par)
    {
        if (own) pack_a(ta, M, K, A, lda, own);
        if (tb) {
#pragma omp for schedule(static)
            for (int q = 0; q < npanels; q++) {
                int j0 = q * NR, w = CM_MIN(NR, N - j0);
                pack_b_panel_t(K, B, ldb, j0, w, (w + 15) / 16 * 16, bp + (size_t)q * Kp * NR);
            }
        } else {
            pack_b_rows(K, N, B, ldb, bp);
        }
        const uint32_t *a = own ? own : ap;
#pragma omp for schedule(static)
        for (int t = 0; t < npanels * nrows; t++) {
            int q = t / nrows, i0 = t % nrows * MC, j0 = q * NR;
            gemm_task(Kp, a + (size_t)i0 * Kp, bp + (size_t)q * Kp * NR, CM_MIN(MC, M - i0), CM_MIN(NR, N - j0), alpha,
                      beta, C + (size_t)i0 * ldc + j0, ldc);
        }
    }
    free(own);
    free(bp);
}

void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc)
{
    gemm_core(ta, tb, M, N, K, alpha, A, lda, NULL, B, ldb, beta, C, ldc);
}

void gemm_bf16_a(bool ta, bool tb, int M, int N, int K, float alpha, const uint32_t *ap, const float *B, int ldb,
                 float beta, float *C, int ldc)
{
    gemm_core(ta, tb, M, N, K, alpha, NULL, 0, ap, B, ldb, beta, C, ldc);
}

#else

void gemm_bf16(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
               int ldb, float beta, float *C, int ldc)
{
    CM_ASSERT(false, "gemm_bf16: AVX512_BF16 is an x86 extension (see gemm_precision_usable)");
}

void gemm_bf16_packed(int rows, int nv, int Kp, const uint32_t *A, ptrdiff_t ars, const uint32_t *B, ptrdiff_t ldb,
                      float *C, ptrdiff_t ldc, bool acc)
{
    CM_ASSERT(false, "gemm_bf16_packed: AVX512_BF16 is an x86 extension");
}

void gemm_bf16_pack_a(bool ta, int M, int K, const float *A, int lda, uint32_t *ap)
{
    CM_ASSERT(false, "gemm_bf16_pack_a: AVX512_BF16 is an x86 extension");
}

void gemm_bf16_a(bool ta, bool tb, int M, int N, int K, float alpha, const uint32_t *ap, const float *B, int ldb,
                 float beta, float *C, int ldc)
{
    CM_ASSERT(false, "gemm_bf16_a: AVX512_BF16 is an x86 extension");
}

void bf16_pack_row_pairs(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    CM_ASSERT(false, "bf16_pack_row_pairs: AVX512_BF16 is an x86 extension");
}

void bf16_pack_pairs(const float *src, size_t n, uint32_t *dst)
{
    CM_ASSERT(false, "bf16_pack_pairs: AVX512_BF16 is an x86 extension");
}

void bf16_pack_transposed(const float *src, int K, int n, ptrdiff_t ld, uint32_t *dst, ptrdiff_t ldd)
{
    CM_ASSERT(false, "bf16_pack_transposed: AVX512_BF16 is an x86 extension");
}

#endif
