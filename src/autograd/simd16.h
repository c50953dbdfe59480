/* simd16.h: AVX-512 helpers shared by conv_wino.c, gemm_bf16.c and op_norm.c (16 lanes of 32
 * bits). Each is compiled for AVX-512F where it is inlined, so that gemm_bf16.c's kernels, built
 * function by function with target attributes, can use them in builds without -march=native. */
#ifndef CM_SIMD16_H
#define CM_SIMD16_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define SIMD16_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* The mask of the first n of 16 lanes (n <= 0: none, n >= 16: all). */
SIMD16_INLINE __mmask16 lanes16(int n)
{
    return (__mmask16)(n <= 0 ? 0 : n >= 16 ? 0xffffu : (1u << n) - 1);
}

/* r[j][k] <-> r[k][j] for a 16x16 block of 32-bit values in 16 vectors. */
SIMD16_INLINE void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    for (int i = 0; i < 16; i += 8)
        for (int k = 0; k < 4; k++) {
            t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
            t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xdd);
        }
    for (int k = 0; k < 8; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
    }
}

/* e^x, 16 at a time: fastmath.h's cm_expf (Cephes) with FMAs, 2^n applied by scalef. */
SIMD16_INLINE __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3f)), _mm512_set1_ps(-87.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 er = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(er, n);
}

/* sigmoid(u) = 1 / (1 + e^-u), the division as a reciprocal estimate (2^-14) and one Newton step
 * (error about 2^-28 before rounding): vdivps would be the slowest instruction of its loops. */
SIMD16_INLINE __m512 sigmoid16(__m512 u)
{
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp16(-u));
    __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.0f)));
}

/* silu(u) = u sigmoid(u). */
SIMD16_INLINE __m512 silu16(__m512 u) { return _mm512_mul_ps(u, sigmoid16(u)); }

/* Word j = bf16(lo[j]) | bf16(hi[j]) << 16: lanes j of two vectors rounded to bf16 (vcvtneps2bf16:
 * to nearest even, NaN kept NaN, subnormals to zero) and paired, as gemm_bf16's packed operands
 * hold pairs of k. */
static inline __attribute__((always_inline, target("avx512f,avx512bf16"))) __m512i pair16(__m512 lo, __m512 hi)
{
    __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
    __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
    return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

#endif
#endif
