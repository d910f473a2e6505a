/*
 * int_mul_peak.c - the rate of the matrix kernels' inner step with nothing around it: per 64
 * multiply-adds of 8-bit weights and activations, two vpmaddubsw, a 16-bit add, a vpmaddwd,
 * a convert and an FMA into one of 8 independent accumulators, operands loaded from L1.
 * Prints GMAC/s of one core and cycles per 64 at a given clock (GHz, default 3.35): the
 * ceiling the AVX2 tiles of worker/kernels work under (docs/benchmarks.md).
 *
 *   int_mul_peak [ghz]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { TOK = 8 };
static int8_t xs[TOK][64] __attribute__((aligned(64)));

__attribute__((target("avx2,fma"))) static float run(long n) {
    __m256i q0 = _mm256_set1_epi8(5), q1 = _mm256_set1_epi8(9);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[TOK];
    for (int t = 0; t < TOK; t++)
        acc[t] = _mm256_setzero_ps();
    for (long i = 0; i < n; i++) {
#pragma GCC unroll 8
        for (int t = 0; t < TOK; t++) {
            __m256i xl = _mm256_load_si256((const __m256i *)xs[t]);
            __m256i xh = _mm256_load_si256((const __m256i *)(xs[t] + 32));
            __m256i v = _mm256_madd_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(q0, xl), _mm256_maddubs_epi16(q1, xh)), ones);
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(1.0001f), _mm256_cvtepi32_ps(v), acc[t]);
        }
        __asm__ volatile("" : "+x"(q0), "+x"(q1)::"memory"); /* no hoisting out of the loop */
    }
    float out[8], sum = 0.0f;
    for (int t = 0; t < TOK; t++) {
        _mm256_storeu_ps(out, acc[t]);
        sum += out[0];
    }
    return sum;
}

int main(int argc, char **argv) {
    double ghz = argc > 1 ? atof(argv[1]) : 3.35;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "int_mul_peak: this CPU has no AVX2/FMA\n");
        return 77;
    }
    for (int t = 0; t < TOK; t++)
        for (int i = 0; i < 64; i++)
            xs[t][i] = (int8_t)(t * 7 + i);
    long n = 50000000;
    double t0 = now_s();
    float sink = run(n);
    double dt = now_s() - t0, steps = (double)n * TOK;
    printf("%.1f GMAC/s on one core, %.2f cycles per 64 multiply-adds at %.2f GHz (sum %g)\n",
           steps * 64 / dt / 1e9, dt * ghz * 1e9 / steps, ghz, (double)sink);
    return 0;
}
#else
int main(void) {
    fprintf(stderr, "int_mul_peak: x86-64 only\n");
    return 77;
}
#endif
