/* simd16.h: AVX-512 helpers shared by conv_wino.c and gemm_bf16.c (16 lanes of 32 bits). Each is
 * compiled for AVX-512F where it is inlined, so that gemm_bf16.c's kernels, built function by
 * function with target attributes, can use them in builds without -march=native. */
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
