/* fastmath.h: a vectorizable expf for the elementwise kernels (SiLU, sigmoid, softmax).
 *
 * libm's expf is a scalar call, so a loop over it cannot vectorize; SiLU's forward and backward
 * through it were 13% of a U-Net training step (perf, 1 thread). cm_expf is branch-free and
 * inline, so `#pragma omp simd` loops over it compile to AVX-512/AVX2 code (or stay scalar and
 * portable without -march=native).
 *
 * Method (Cephes expf): x = n ln2 + r with n = round(x / ln2) and |r| <= ln2/2, ln2 split in two
 * parts (Cody-Waite) so that r is exact; e^r by Cephes' degree-5 polynomial; 2^n by building the
 * exponent bits. x is clamped to [-87.3, 88.3] so that 2^n stays a normal float: above, the
 * result is ~2e38 instead of inf; below, ~1.2e-38 instead of a denormal or 0 (SiLU, sigmoid and
 * softmax are insensitive to both). Relative error about 1-2 ulp inside the range. */
#ifndef CM_FASTMATH_H
#define CM_FASTMATH_H

#include <stdint.h>
#include <string.h>

static inline float cm_expf(float x)
{
    /* Comparisons rather than fminf/fmaxf (libm calls without -ffast-math), and rounding by
     * adding and subtracting 1.5 * 2^23 (|t| <= 128 here) rather than floorf or a conditional:
     * GCC vectorizes neither of those (it measured "control flow in loop" with AVX2/AVX-512). */
    x = x < -87.3f ? -87.3f : x;
    x = x > 88.3f ? 88.3f : x;
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;   /* round(x / ln2) */
    /* n as an integer from t's low mantissa bits (t = 1.5 * 2^23 + n, whose bits are 0x4B400000 + n):
     * defined for every x, NaN included (the result is then NaN whatever the scale), where a
     * float-to-int cast of NaN is undefined, and (ni + 127) << 23 of the cast's INT_MIN was a
     * left shift of a negative value (UBSan, on a NaN weight). */
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    int32_t ni = (int32_t)(tb - 0x4B400000u);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float er = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)(ni + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return er * scale;
}

static inline float cm_sigmoidf(float v) { return 1.0f / (1.0f + cm_expf(-v)); }

#endif
