/*
 * cephes_exp.h - one definition of the Cephes-style expf that the AVX2 log-sum-exp and both
 * attention variants use (about 2 ulp; inputs clamped to [-87, 88]): x = n ln2 + r with
 * n = round(x log2 e), ln2 in two parts, a degree-5 polynomial in r, times 2^n.
 *
 * BT_CEPHES_EXP(name, W, ROUND, ATTR) defines `ATTR __mW name(__mW x)` on W-bit vectors
 * (256 or 512), ROUND(v) rounding v to the nearest integer. Every step is one lane-wise IEEE
 * operation, so the 8-lane and 16-lane functions give the same float per lane (with the
 * project's -ffp-contract=off): the AVX-512 attention reproduces the AVX2 one's bits through
 * it. The includer provides the target (compile flags or ATTR's target attribute).
 */
#ifndef BT_CEPHES_EXP_H
#define BT_CEPHES_EXP_H

#include <immintrin.h>

#define BT_CEPHES_EXP(name, W, ROUND, ATTR)                                                        \
    ATTR __m##W name(__m##W x) {                                                                   \
        x = _mm##W##_min_ps(_mm##W##_max_ps(x, _mm##W##_set1_ps(-87.0f)),                          \
                            _mm##W##_set1_ps(88.0f));                                              \
        __m##W fx = ROUND(_mm##W##_mul_ps(x, _mm##W##_set1_ps(1.44269504088896341f)));             \
        x = _mm##W##_fnmadd_ps(fx, _mm##W##_set1_ps(0.693359375f), x);                             \
        x = _mm##W##_fnmadd_ps(fx, _mm##W##_set1_ps(-2.12194440e-4f), x);                          \
        __m##W y = _mm##W##_set1_ps(1.9875691500e-4f);                                             \
        y = _mm##W##_fmadd_ps(y, x, _mm##W##_set1_ps(1.3981999507e-3f));                           \
        y = _mm##W##_fmadd_ps(y, x, _mm##W##_set1_ps(8.3334519073e-3f));                           \
        y = _mm##W##_fmadd_ps(y, x, _mm##W##_set1_ps(4.1665795894e-2f));                           \
        y = _mm##W##_fmadd_ps(y, x, _mm##W##_set1_ps(1.6666665459e-1f));                           \
        y = _mm##W##_fmadd_ps(y, x, _mm##W##_set1_ps(5.0000001201e-1f));                           \
        y = _mm##W##_fmadd_ps(y, _mm##W##_mul_ps(x, x),                                            \
                              _mm##W##_add_ps(x, _mm##W##_set1_ps(1.0f)));                         \
        __m##W##i e = _mm##W##_slli_epi32(                                                         \
            _mm##W##_add_epi32(_mm##W##_cvtps_epi32(fx), _mm##W##_set1_epi32(127)), 23);           \
        return _mm##W##_mul_ps(y, _mm##W##_castsi##W##_ps(e));                                     \
    }

/* ROUND arguments: to the nearest integer, no precision exception. */
#define BT_ROUND256(v) _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define BT_ROUND512(v) _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

#endif
