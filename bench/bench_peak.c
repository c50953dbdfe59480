/* bench_peak.c: the arithmetic peak of one core for the three kinds of product cmlab's kernels
 * use: fp32 FMA (vfmadd231ps zmm), AVX512_BF16's vdpbf16ps (zmm) and AMX-BF16's tdpbf16ps (a
 * 16 x 16 x 32 tile product), each as independent chains (enough to cover their latency) on data
 * in registers or tiles, so that it is the issue rate, not memory, that is measured. Explains what
 * bf16 can gain on a CPU: on the Xeon measured (issue 19) vdpbf16ps gave half the FMA rate
 * (bf16 without AMX slower than fp32) and the tiles fifteen times it.
 *
 * Usage: bench_peak [--reps R]. Prints "fma_gflops=... dpbf16_gflops=... amx_gflops=..." per rep
 * (0 for what the CPU or OS lacks). Pin it to one core (taskset -c 0). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/gemm_bf16.h"
#include "autograd/ops.h"

#define CHAINS 24
#define STEPS 5000000L

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static double fma_gflops(void)
{
    __m512 acc[CHAINS], x = _mm512_set1_ps(1.0001f), y = _mm512_set1_ps(0.9999f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    double t0 = cm_now();
    for (long s = 0; s < STEPS; s++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(x, y, acc[i]);
        __asm__ volatile("" : "+v"(x), "+v"(y));   /* keep the loop from being folded */
    }
    double dt = cm_now() - t0;
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    __asm__ volatile("" ::"x"(sum));
    return STEPS * CHAINS * 32.0 / dt * 1e-9;   /* 16 lanes x (multiply + add) */
}

__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_gflops(void)
{
    __m512 acc[CHAINS];
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = x;
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    double t0 = cm_now();
    for (long s = 0; s < STEPS; s++) {
#pragma GCC unroll 24
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
        __asm__ volatile("" : "+v"(x), "+v"(y));
    }
    double dt = cm_now() - t0;
    float sum = 0;
    for (int i = 0; i < CHAINS; i++) sum += _mm512_reduce_add_ps(acc[i]);
    __asm__ volatile("" ::"x"(sum));
    return STEPS * CHAINS * 64.0 / dt * 1e-9;   /* 16 lanes x 2 products, each multiply + add */
}

/* Four independent tile sums, as packed_amx's 2 x 2 block: tiles 0-3 sums, 4-5 A, 6-7 B. Needs
 * the tiles granted (gemm_bf16_kernel() == "amx" has asked Linux). */
__attribute__((target("amx-tile,amx-bf16"))) static double amx_gflops(void)
{
    /* a constant in memory (gemm_bf16.c's TILES says why) */
    static const struct {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg = {.palette = 1, .colsb = {64, 64, 64, 64, 64, 64, 64, 64}, .rows = {16, 16, 16, 16, 16, 16, 16, 16}};
    static uint16_t ones[16 * 32] __attribute__((aligned(64)));
    static float out[16 * 16] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) ones[i] = 0x3f80;   /* 1.0 */
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    const long steps = STEPS / 4;
    double t0 = cm_now();
    for (long s = 0; s < steps; s++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    double dt = cm_now() - t0;
    _tile_stored(0, out, 64);
    _tile_release();
    __asm__ volatile("" ::"r"(out) : "memory");
    return steps * 4 * (16.0 * 16 * 32 * 2) / dt * 1e-9;
}
#endif

int main(int argc, char **argv)
{
    int reps = 3;
    for (int i = 1; i < argc; i += 2) {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc && atoi(argv[i + 1]) >= 1) {
            reps = atoi(argv[i + 1]);
        } else {
            fprintf(stderr, "usage: bench_peak [--reps R]\n");
            return CM_EXIT_INPUT;
        }
    }
#if defined(__x86_64__)
    const char *kernel = gemm_bf16_kernel();
    bool avx512 = __builtin_cpu_supports("avx512f"), bf16 = strcmp(kernel, "none") != 0,
         amx = strcmp(kernel, "amx") == 0;
    for (int r = 0; r < reps; r++)
        printf("fma_gflops=%.1f dpbf16_gflops=%.1f amx_gflops=%.1f bf16_kernel=%s\n", avx512 ? fma_gflops() : 0.0,
               bf16 ? dpbf16_gflops() : 0.0, amx ? amx_gflops() : 0.0, kernel);
#else
    printf("bench_peak: x86-64 only\n");
#endif
    return 0;
}
