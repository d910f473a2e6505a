/*
 * simd_avx2.h - small always-inline AVX2/F16C helpers shared by the files compiled with
 * -mavx2 -mfma -mf16c (kernels_avx2.c, kernels_avx512.c, llamacpp_avx2.c). Include only
 * from such files: the intrinsics need those flags at compile time and the CPU at run time.
 */
#ifndef BT_SIMD_AVX2_H
#define BT_SIMD_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#include "tensor_type.h"

#define INLINE static inline __attribute__((always_inline))

/* Sum of 8 lanes as ggml's hsum_float_8: ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)).
 * llamacpp_avx2.c relies on this exact order. */
INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

INLINE float half_f32(bt_half h) {
    return _cvtsh_ss(h);
}

/* 16 bytes of nibbles -> 32 bytes 0..15: element j in byte j (low nibbles are elements
 * 0..15, high nibbles 16..31). */
INLINE __m256i unpack_nibbles(const uint8_t *qs) {
    /* broadcast load + per-lane shift: no port-5 shuffle */
    __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs));
    v = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* Sum of u8 x s8 products in 8 int32 lanes, lane i = bytes 4i..4i+3 (exact for |u| <= 128,
 * |s| <= 127: maddubs does not saturate). */
INLINE __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* v, through an empty asm that GCC must assume changes it: no instruction, but a chain of
 * integer adds into v stays the chain written. GCC's reassociation otherwise turns the sums
 * of many terms into a tree that keeps every term live at once, and the registers spill to
 * the stack (the packed Q8_0 prompt tile stored and reloaded 64 terms per block). */
INLINE __m256i keep_chain(__m256i v) {
    __asm__("" : "+x"(v));
    return v;
}

/* A volatile empty asm: no instruction, but GCC's scheduler moves nothing across it. In an
 * unrolled loop it keeps each iteration's prefetches in their iteration; without it GCC
 * gathers all of them into one burst at the top, which stalls on the core's outstanding
 * misses (packed Q4_K at one token, streamed from DRAM: 3/4 of the speed). */
INLINE void sched_fence(void) {
    __asm__ volatile("");
}

/* p, through an empty asm that GCC must assume changes it: no instruction, but loads through
 * the result are not merged with loads through p before it. In an unrolled loop whose
 * iterations read the same vectors (the sub-blocks of a K-quant super-block share their
 * bytes and bit planes), GCC otherwise loads each once, keeps it across the iterations and
 * spills it: a store and a load from the stack where one load from L1 would do. */
INLINE const char *fresh_ptr(const char *p) {
    __asm__("" : "+r"(p));
    return p;
}

#endif
