/*
 * vnni_layouts.c - the inner step of two AVX-512 VNNI weight layouts with their operands in L1,
 * for 16 tokens (a prompt tile), nothing else around them: the ceiling each layout's tiles
 * work under, to weigh a repacked layout against the one the tiles use (docs/benchmarks.md,
 * "Where the prompt kernels' time goes").
 *
 *   quad:   the tiles of worker/kernels/kernels_avx512.c. Four rows in the four 128-bit lanes
 *           of a vector (16 bytes each), the token's 32-element block broadcast to every lane
 *           as two halves; per token and block: two broadcasts, two vpdpbusd, a convert, the
 *           scale's multiply and an FMA, for 4 rows x 32 = 128 multiply-adds.
 *   rows16: 16 rows interleaved 4 bytes per 32-bit lane (a layout the weights would have to be
 *           repacked into at load); per token and block: eight 4-byte broadcasts and eight
 *           vpdpbusd into one sum per row, then the same three float operations, for
 *           16 rows x 32 = 512 multiply-adds.
 *
 * Prints GMAC/s of one core for each. x86-64 with AVX-512 VNNI only (else exit 77).
 *
 *   vnni_layouts [seconds]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>

enum { TOK = 16, BLOCKS = 16 };

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Activations: TOK tokens x BLOCKS blocks of 32 bytes and a scale each, in L1. */
static uint8_t xq[TOK][BLOCKS][32] __attribute__((aligned(64)));
static float xd[TOK][BLOCKS];
/* Weights: per block, 2 vectors (quad) or 8 vectors (rows16), in L1. */
static int8_t wq[BLOCKS][2][64] __attribute__((aligned(64)));
static int8_t wr[BLOCKS][8][64] __attribute__((aligned(64)));
static float wd[BLOCKS][16];

#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

/* The tokens' accumulators summed: what the runs return, so that their work is kept. */
VNNI static float acc_sum(const __m512 *acc) {
    float s = 0.0f;
    for (int t = 0; t < TOK; t++)
        s += _mm512_reduce_add_ps(acc[t]);
    return s;
}

VNNI static float run_quad(long reps) {
    __m512 acc[TOK] = {0};
    for (long r = 0; r < reps; r++)
        for (int b = 0; b < BLOCKS; b++) {
            __m512i lo = _mm512_load_si512(wq[b][0]), hi = _mm512_load_si512(wq[b][1]);
            __m512 dd = _mm512_loadu_ps(wd[b]);
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++) {
                __m512i xl = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)xq[t][b]));
                __m512i xh =
                    _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)(xq[t][b] + 16)));
                __m512i v = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), xl, lo),
                                                xh, hi);
                __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xd[t][b]));
                acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(v), acc[t]);
            }
        }
    return acc_sum(acc);
}

VNNI static float run_rows16(long reps) {
    __m512 acc[TOK] = {0};
    for (long r = 0; r < reps; r++)
        for (int b = 0; b < BLOCKS; b++) {
            __m512i w[8];
            for (int k = 0; k < 8; k++)
                w[k] = _mm512_load_si512(wr[b][k]);
            __m512 dd = _mm512_loadu_ps(wd[b]);
#pragma GCC unroll 16
            for (int t = 0; t < TOK; t++) {
                const int32_t *x4 = (const int32_t *)(const void *)xq[t][b];
                __m512i v = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int k = 0; k < 8; k++)
                    v = _mm512_dpbusd_epi32(v, _mm512_set1_epi32(x4[k]), w[k]);
                __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xd[t][b]));
                acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(v), acc[t]);
            }
        }
    return acc_sum(acc);
}

/* GMAC/s of fn over `seconds`, macs_per_rep multiply-adds per repetition. */
static double rate(float (*fn)(long), double macs_per_rep, double seconds, float *sink) {
    long reps = 1000;
    double best = 0.0;
    double end = now_s() + seconds;
    while (now_s() < end) {
        double t0 = now_s();
        *sink += fn(reps);
        double dt = now_s() - t0;
        double r = macs_per_rep * (double)reps / dt / 1e9;
        if (r > best)
            best = r;
    }
    return best;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni") || !__builtin_cpu_supports("avx512bw")) {
        fprintf(stderr, "vnni_layouts: this CPU has no AVX-512 VNNI\n");
        return 77;
    }
    for (int t = 0; t < TOK; t++)
        for (int b = 0; b < BLOCKS; b++) {
            for (int i = 0; i < 32; i++)
                xq[t][b][i] = (uint8_t)(t * 7 + b * 3 + i);
            xd[t][b] = 1e-3f * (float)(1 + t + b);
        }
    for (int b = 0; b < BLOCKS; b++) {
        for (int i = 0; i < 64; i++) {
            wq[b][0][i] = (int8_t)(i - 32);
            wq[b][1][i] = (int8_t)(b - i);
            for (int k = 0; k < 8; k++)
                wr[b][k][i] = (int8_t)(k * 5 + i - 40);
        }
        for (int i = 0; i < 16; i++)
            wd[b][i] = 1e-2f * (float)(i + 1);
    }
    float sink = 0.0f;
    double q = rate(run_quad, (double)BLOCKS * TOK * 4 * 32, seconds, &sink);
    double r = rate(run_rows16, (double)BLOCKS * TOK * 16 * 32, seconds, &sink);
    printf(
        "quad   (4 rows per vector, 2 vpdpbusd + 3 float ops per token and block): %.1f GMAC/s\n",
        q);
    printf(
        "rows16 (16 rows x 4 bytes, 8 vpdpbusd + 3 float ops per token and block): %.1f GMAC/s\n",
        r);
    printf("rows16 / quad: %.2fx (sum %g)\n", r / q, (double)sink);
    return 0;
}
#else
int main(void) {
    fprintf(stderr, "vnni_layouts: x86-64 only\n");
    return 77;
}
#endif
