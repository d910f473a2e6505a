/*
 * kernels_avx512.c - AVX-512 VNNI kernels for the hot decode types (Q4_1, Q8_0, Q4_0, F32/F16
 * weights). The other types keep their AVX2 kernels (dispatch.c fills the AVX2 table first).
 * Compiled with AVX-512F/BW/VL/DQ/VNNI and only called after dispatch.c has checked CPUID.
 *
 * Quant dots use vpdpbusd (u8 x s8 -> int32, one instruction instead of maddubs + madd).
 */
#include <immintrin.h>
#include <string.h>

#include "kernels_internal.h"
#include "simd_avx2.h"

#define NT_MAX BT_KERNEL_MAX_TOK
#define TOKENS _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++)
#define NC 2

INLINE __m256i dpbusd256(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

/*
 * One block per step, 256-bit VNNI (measured faster than two blocks per 512-bit vector for
 * every type and token count: the lane inserts and scale-pair vectors cost more than the
 * halved dpbusd count saves).
 *
 * Batch invariance: as in kernels_avx2.c, each token has NC = 2 accumulator sets filled in the
 * same block order (block i into set i % NC, a tail block into set 0) and reduced the same way
 * whatever the number of tokens sharing the call, so a token's result is bit-identical alone
 * or in a batch. 4 tokens x 2 sets x (acc + macc) = 16 of the 32 registers.
 */
INLINE __m256i load_q(const bt_q8 *x) {
    return _mm256_loadu_si256((const __m256i *)x->qs);
}

/* d and m of the weight block (adjacent halves) times dx and s of the token block (adjacent
 * floats) in one multiply: lane 0 = d*dx scales the integer dot, lane 1 = m*s is summed. */
INLINE __m128 half_pair(const bt_half *dm) {
    int bits;
    memcpy(&bits, dm, 4);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
}

INLINE __m128 ds_of(const bt_q8 *xb) {
    return _mm_castpd_ps(_mm_load_sd((const double *)(const void *)&xb->d));
}

INLINE void q4_1_step(const bt_block_q4_1 *b, const bt_q8 *x, int64_t xs, int NT, __m256 *acc,
                      __m128 *macc) {
    __m128 dm = half_pair(&b->d);
    __m256i q = unpack_nibbles(b->qs);
    TOKENS {
        const bt_q8 *xb = x + t * xs;
        __m128 sc = _mm_mul_ps(dm, ds_of(xb));
        __m256 p = _mm256_cvtepi32_ps(dpbusd256(q, load_q(xb)));
        acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(sc), p, acc[t]);
        macc[t] = _mm_add_ps(macc[t], sc);
    }
}

INLINE void signed_step(__m256i q, float d, const bt_q8 *x, int64_t xs, int NT, __m256 *acc) {
    __m256i aq = _mm256_abs_epi8(q);
    TOKENS {
        const bt_q8 *xb = x + t * xs;
        __m256i s = dpbusd256(aq, _mm256_sign_epi8(load_q(xb), q));
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(s), acc[t]);
    }
}

INLINE void q8_0_step(const bt_block_q8_0 *b, const bt_q8 *x, int64_t xs, int NT, __m256 *acc,
                      __m128 *macc) {
    (void)macc;
    signed_step(_mm256_loadu_si256((const __m256i *)b->qs), _cvtsh_ss(b->d), x, xs, NT, acc);
}

INLINE void q4_0_step(const bt_block_q4_0 *b, const bt_q8 *x, int64_t xs, int NT, __m256 *acc,
                      __m128 *macc) {
    (void)macc;
    signed_step(_mm256_sub_epi8(unpack_nibbles(b->qs), _mm256_set1_epi8(8)), _cvtsh_ss(b->d), x, xs,
                NT, acc);
}

#define DEFINE_NT(name, block_t)                                                                   \
    INLINE void name##_nt1(const void *w, const bt_q8 *x, int64_t xs, int NT, int64_t nb,          \
                           float *out, int64_t ldo) {                                              \
        const block_t *b = w;                                                                      \
        __m256 acc[NC][NT_MAX];                                                                    \
        __m128 macc[NC][NT_MAX];                                                                   \
        _Pragma("GCC unroll 4") for (int k = 0; k < NC; k++) TOKENS {                              \
            acc[k][t] = _mm256_setzero_ps();                                                       \
            macc[k][t] = _mm_setzero_ps();                                                         \
        }                                                                                          \
        int64_t i = 0;                                                                             \
        for (; i + NC <= nb; i += NC) {                                                            \
            _Pragma("GCC unroll 4") for (int k = 0; k < NC; k++)                                   \
                name##_step(b + i + k, x + i + k, xs, NT, acc[k], macc[k]);                        \
        }                                                                                          \
        for (; i < nb; i++)                                                                        \
            name##_step(b + i, x + i, xs, NT, acc[0], macc[0]);                                    \
        TOKENS {                                                                                   \
            __m256 a = acc[0][t];                                                                  \
            __m128 m = macc[0][t];                                                                 \
            _Pragma("GCC unroll 4") for (int k = 1; k < NC; k++) {                                 \
                a = _mm256_add_ps(a, acc[k][t]);                                                   \
                m = _mm_add_ps(m, macc[k][t]);                                                     \
            }                                                                                      \
            out[t * ldo] = hsum8(a) + _mm_cvtss_f32(_mm_movehdup_ps(m));                           \
        }                                                                                          \
    }

DEFINE_NT(q4_1, bt_block_q4_1)
DEFINE_NT(q8_0, bt_block_q8_0)
DEFINE_NT(q4_0, bt_block_q4_0)

#define ROWDOT1(name)                                                                              \
    static void rowdot_##name(const void *w, const bt_q8 *x, int64_t xs, int n_tok, int64_t n,     \
                              float *out, int64_t ldo) {                                           \
        int64_t nb = n / BT_QK;                                                                    \
        BT_WITH_NT(n_tok, name##_nt1(w, x, xs, NT_, nb, out, ldo))                                 \
    }

ROWDOT1(q8_0)
ROWDOT1(q4_1)
ROWDOT1(q4_0)

/* Float weights, 16 columns per vector, converted once and used for every token. */
INLINE __m512 load_w(int kind, const void *w, int64_t c) {
    if (kind == 0)
        return _mm512_loadu_ps((const float *)w + c);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + c));
    if (kind == 1)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE float load_w1(int kind, const void *w, int64_t c) {
    if (kind == 0)
        return ((const float *)w)[c];
    if (kind == 1)
        return _cvtsh_ss(((const bt_half *)w)[c]);
    return bt_bf16_to_f32(((const uint16_t *)w)[c]);
}

INLINE void float_nt(int kind, const void *w, const float *x, int64_t xs, int NT, int64_t n,
                     float *out, int64_t ldo) {
    __m512 acc[NT_MAX][2];
    TOKENS acc[t][0] = acc[t][1] = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= n; c += 32) {
        __m512 w0 = load_w(kind, w, c), w1 = load_w(kind, w, c + 16);
        TOKENS {
            acc[t][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + t * xs + c), acc[t][0]);
            acc[t][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + t * xs + c + 16), acc[t][1]);
        }
    }
    TOKENS {
        float s = _mm512_reduce_add_ps(_mm512_add_ps(acc[t][0], acc[t][1]));
        for (int64_t k = c; k < n; k++)
            s += load_w1(kind, w, k) * x[t * xs + k];
        out[t * ldo] = s;
    }
}

#define ROWDOT_F(name, kind)                                                                       \
    static void rowdot_##name(const void *w, const float *x, int64_t xs, int n_tok, int64_t n,     \
                              float *out, int64_t ldo) {                                           \
        BT_WITH_NT(n_tok, float_nt(kind, w, x, xs, NT_, n, out, ldo))                              \
    }

ROWDOT_F(f32, 0)
ROWDOT_F(f16, 1)
ROWDOT_F(bf16, 2)

void bt_kernels_fill_avx512(bt_kernel_table *t) {
    /* These row dots replace the AVX2 tiles of the same types (a tile would take precedence
     * in dispatch.c, and bt_vec_dot_q8 must stay the n_tok = 1 call of what bt_matmul runs). */
    t->rowdot_q8[BT_TYPE_Q4_1] = rowdot_q4_1;
    t->rowdot_q8[BT_TYPE_Q8_0] = rowdot_q8_0;
    t->rowdot_q8[BT_TYPE_Q4_0] = rowdot_q4_0;
    t->tile_q8[BT_TYPE_Q4_1] = NULL;
    t->ptile_q8[BT_TYPE_Q4_1] = NULL;
    t->tile_q8[BT_TYPE_Q8_0] = NULL;
    t->ptile_q8[BT_TYPE_Q8_0] = NULL;
    t->tile_q8[BT_TYPE_Q4_0] = NULL;
    t->ptile_q8[BT_TYPE_Q4_0] = NULL;
    t->rowdot_f32[BT_TYPE_F32] = rowdot_f32;
    t->rowdot_f32[BT_TYPE_F16] = rowdot_f16;
    t->rowdot_f32[BT_TYPE_BF16] = rowdot_bf16;
}
