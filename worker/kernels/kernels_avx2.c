/*
 * kernels_avx2.c - AVX2/FMA/F16C kernels. Compiled with -mavx2 -mfma -mf16c and only called
 * after dispatch.c has checked CPUID.
 *
 * Integer block dots follow the ggml scheme: unsigned weights (4-bit and 5-bit quants, or |w|
 * with sign(x, w) for the signed types) are multiplied with the signed int8 activations by
 * maddubs (u8 x s8 -> pairs summed into s16, no saturation for our ranges: |w| <= 128,
 * |x| <= 127) and widened by madd into int32 lanes; the block scale is applied in float with
 * one FMA. Quant weights go through the tiles below (rows in pairs x up to BT_KERNEL_MAX_TOK
 * tokens: every unpacked weight block serves every token, every activation load every row);
 * prompts run full groups of BT_PREFILL_TOK tokens through the prefill tiles (one pair x 8
 * tokens at a time, the same bits per output as the decode tiles).
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cephes_exp.h"
#include "ggml_expf.h"
#include "kernels_internal.h"
#include "simd_avx2.h"

#define NT_MAX BT_KERNEL_MAX_TOK

#define TOKENS _Pragma("GCC unroll 4") for (int t = 0; t < NT; t++)

/*
 * Tiles (kernels_internal.h, bt_tile_q8_fn) of the legacy types: rows in pairs (A, B) x NT
 * tokens, one block at a time.
 *
 * On this machine's AVX2 cores (Zen 2) maddubs and madd share one port, which bounds a block
 * dot at two cycles, and cross-lane shuffles are slow; so a pair's quants are laid out as two
 * vectors lo = [A 0..15 | B 0..15] and hi = [A 16..31 | B 16..31] (4-bit quants: the two rows'
 * 16 bytes of nibbles in one vector, masked and shifted: no shuffle), and each token's block
 * is broadcast as [x 0..15 | x 0..15] and [x 16..31 | x 16..31] (two broadcast loads). Then
 * maddubs(lo, xlo) + maddubs(hi, xhi) in int16 (|sum| <= 2 * 2 * 31 * 127 for the 4- and
 * 5-bit types: no overflow) is already both rows' partial sums, 8 per row, and one madd, one
 * cvt and one fma with [dA*dx x4 | dB*dx x4] serve the two rows. Q8_0 (|w| up to 128) would
 * overflow int16 and adds after the madds instead (WIDE). Each pair's quants are unpacked once
 * per block and serve every token; each token's loads serve every pair.
 *
 * Scales: the first 4 bytes of a pair's blocks become [dA, mA, dA, mA, dB, mB, dB, mB] (for
 * the signed types the m slots hold quant bytes, unused), times [dx, s, dx, s, ...] of the
 * token: lanes 0 and 4 give d*dx, lanes 1 and 5 the min terms m*s of Q4_1/Q5_1.
 *
 * Batch invariance by construction: output (r, t) owns lanes 4k..4k+3 of one accumulator
 * (k = its place in the pair), filled block by block in order by fma(d_r*dx, float(isum lane),
 * acc lane); integer sums are exact, so how they are packed does not change them; the min
 * terms m_r*s are summed in block order in lane 4k+1 of the pair's min accumulator; the result
 * is ((l0 + l1) + (l2 + l3)) + min lane, in that order, for every output. Each operation on an
 * output's lanes is the same IEEE operation on the same operands whatever the tile shape and
 * the row's or token's place in it (lane-wise vector ops do not mix lanes), so every shape
 * agrees bit for bit. A lone last row is paired with itself.
 */
#define TPAIRS _Pragma("GCC unroll 2") for (int p = 0; p < NP; p++)

typedef struct qpair {
    __m256i lo, hi; /* [A 0..15 | B 0..15], [A 16..31 | B 16..31] */
} qpair;

INLINE __m256i two16(const uint8_t *a, const uint8_t *b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                                   _mm_loadu_si128((const __m128i *)b), 1);
}

INLINE qpair nibbles_pair(const uint8_t *qa, const uint8_t *qb) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256i v = two16(qa, qb);
    qpair q = {_mm256_and_si256(v, lo4), _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4)};
    return q;
}

/* Bits 16h..16h+15 of A's and B's 32-bit words -> bytes [A | B] = 0xFF if set, 0 if not. */
INLINE __m256i bits_pair(const uint8_t *qha, const uint8_t *qhb, int h) {
    uint32_t xa, xb;
    memcpy(&xa, qha, 4);
    memcpy(&xb, qhb, 4);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi32((int)xa)),
                                        _mm_set1_epi32((int)xb), 1);
    const __m256i shuf = h ? _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202,
                                               0x0303030303030303, 0x0202020202020202)
                           : _mm256_set_epi64x(0x0101010101010101, 0x0000000000000000,
                                               0x0101010101010101, 0x0000000000000000);
    const __m256i mask = _mm256_set1_epi64x((long long)0x7fbfdfeff7fbfdfeULL);
    __m256i b = _mm256_or_si256(_mm256_shuffle_epi8(v, shuf), mask);
    return _mm256_cmpeq_epi8(b, _mm256_set1_epi64x(-1));
}

INLINE qpair q4_1_pair(const bt_block_q4_1 *a, const bt_block_q4_1 *b) {
    return nibbles_pair(a->qs, b->qs);
}

INLINE qpair q5_1_pair(const bt_block_q5_1 *a, const bt_block_q5_1 *b) {
    qpair q = nibbles_pair(a->qs, b->qs);
    const __m256i b4 = _mm256_set1_epi8(0x10);
    q.lo = _mm256_or_si256(q.lo, _mm256_and_si256(bits_pair(a->qh, b->qh, 0), b4));
    q.hi = _mm256_or_si256(q.hi, _mm256_and_si256(bits_pair(a->qh, b->qh, 1), b4));
    return q;
}

INLINE qpair q4_0_pair(const bt_block_q4_0 *a, const bt_block_q4_0 *b) {
    qpair q = nibbles_pair(a->qs, b->qs);
    const __m256i k8 = _mm256_set1_epi8(8);
    q.lo = _mm256_sub_epi8(q.lo, k8);
    q.hi = _mm256_sub_epi8(q.hi, k8);
    return q;
}

INLINE qpair q5_0_pair(const bt_block_q5_0 *a, const bt_block_q5_0 *b) {
    /* (q4 | hi<<4) - 16 == q4 | (hi ? 0 : 0xF0) as int8 */
    qpair q = nibbles_pair(a->qs, b->qs);
    const __m256i f0 = _mm256_set1_epi8((char)0xF0);
    q.lo = _mm256_or_si256(q.lo, _mm256_andnot_si256(bits_pair(a->qh, b->qh, 0), f0));
    q.hi = _mm256_or_si256(q.hi, _mm256_andnot_si256(bits_pair(a->qh, b->qh, 1), f0));
    return q;
}

INLINE qpair q8_0_pair(const bt_block_q8_0 *a, const bt_block_q8_0 *b) {
    const uint8_t *qa = (const uint8_t *)a->qs, *qb = (const uint8_t *)b->qs;
    qpair q = {two16(qa, qb), two16(qa + 16, qb + 16)};
    return q;
}

/* First 4 bytes of the pair's blocks as halves [A0, A1, A0, A1, B0, B1, B0, B1] -> floats. */
INLINE __m256 scales_of_pair(const char *wa, const char *wbb) {
    int va, vb;
    memcpy(&va, wa, 4);
    memcpy(&vb, wbb, 4);
    return _mm256_cvtph_ps(_mm_setr_epi32(va, va, vb, vb));
}

INLINE __m256i bcast16(const void *p) { /* 16 bytes, twice */
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)p));
}

/* MIN: weights unsigned (Q4_1, Q5_1) with a min term; otherwise signed int8 (Q8_0, Q4_0,
 * Q5_0), dotted as |w| x sign(x, w). WIDE: add after the madds (Q8_0). */
#define DEFINE_TILE(name, block_t, MIN, WIDE)                                                      \
    INLINE void name##_tile(int NP, const char *const *rows, size_t pf, const bt_q8 *x,            \
                            int64_t xs, int NT, int64_t nb, float *out, int64_t ldo,               \
                            const int *out_col) {                                                  \
        const __m256i ones = _mm256_set1_epi16(1);                                                 \
        __m256 acc[2][NT_MAX], macc[2][NT_MAX];                                                    \
        TPAIRS TOKENS acc[p][t] = macc[p][t] = _mm256_setzero_ps();                                \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            size_t off = (size_t)i * sizeof(block_t);                                              \
            __m256 dm[2];                                                                          \
            qpair q[2], aq[2];                                                                     \
            TPAIRS {                                                                               \
                const char *ra = rows[2 * p] + off, *rb = rows[2 * p + 1] + off;                   \
                _mm_prefetch(ra + pf, _MM_HINT_T0);                                                \
                _mm_prefetch(rb + pf, _MM_HINT_T0);                                                \
                dm[p] = scales_of_pair(ra, rb);                                                    \
                q[p] = name##_pair((const block_t *)(const void *)ra,                              \
                                   (const block_t *)(const void *)rb);                             \
                if (!MIN) {                                                                        \
                    aq[p].lo = _mm256_sign_epi8(q[p].lo, q[p].lo);                                 \
                    aq[p].hi = _mm256_sign_epi8(q[p].hi, q[p].hi);                                 \
                }                                                                                  \
            }                                                                                      \
            TOKENS {                                                                               \
                const bt_q8 *xb = x + t * xs + i;                                                  \
                __m256 ds = MIN ? _mm256_castpd_ps(                                                \
                                      _mm256_broadcast_sd((const double *)(const void *)&xb->d))   \
                                : _mm256_broadcast_ss(&xb->d);                                     \
                __m256i xlo = bcast16(xb->qs), xhi = bcast16(xb->qs + 16);                         \
                TPAIRS {                                                                           \
                    __m256 sc = _mm256_mul_ps(dm[p], ds);                                          \
                    if (MIN)                                                                       \
                        macc[p][t] = _mm256_add_ps(macc[p][t], sc);                                \
                    __m256i pl, ph, v;                                                             \
                    if (MIN) {                                                                     \
                        pl = _mm256_maddubs_epi16(q[p].lo, xlo);                                   \
                        ph = _mm256_maddubs_epi16(q[p].hi, xhi);                                   \
                    } else {                                                                       \
                        pl = _mm256_maddubs_epi16(aq[p].lo, _mm256_sign_epi8(xlo, q[p].lo));       \
                        ph = _mm256_maddubs_epi16(aq[p].hi, _mm256_sign_epi8(xhi, q[p].hi));       \
                    }                                                                              \
                    if (WIDE)                                                                      \
                        v = _mm256_add_epi32(_mm256_madd_epi16(pl, ones),                          \
                                             _mm256_madd_epi16(ph, ones));                         \
                    else                                                                           \
                        v = _mm256_madd_epi16(_mm256_add_epi16(pl, ph), ones);                     \
                    acc[p][t] = _mm256_fmadd_ps(_mm256_permute_ps(sc, 0x00),                       \
                                                _mm256_cvtepi32_ps(v), acc[p][t]);                 \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        TOKENS TPAIRS {                                                                            \
            float a[8], m[8];                                                                      \
            _mm256_storeu_ps(a, acc[p][t]);                                                        \
            _mm256_storeu_ps(m, macc[p][t]);                                                       \
            for (int k = 0; k < 2; k++) {                                                          \
                int c = out_col[2 * p + k];                                                        \
                float v = (a[4 * k] + a[4 * k + 1]) + (a[4 * k + 2] + a[4 * k + 3]);               \
                if (c >= 0)                                                                        \
                    out[t * ldo + c] = MIN ? v + m[4 * k + 1] : v;                                 \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_TILE(q4_1, bt_block_q4_1, 1, 0)
DEFINE_TILE(q5_1, bt_block_q5_1, 1, 0)
DEFINE_TILE(q8_0, bt_block_q8_0, 0, 1)
DEFINE_TILE(q4_0, bt_block_q4_0, 0, 0)
DEFINE_TILE(q5_0, bt_block_q5_0, 0, 0)

/*
 * Prefill tiles of the legacy types: one row pair x PAIR_TOK (8) tokens, so a pair's
 * unpacking and scales serve twice the tokens of the decode tile. Each output gets exactly
 * the decode tile's arithmetic: the same integer lane sums (bytes 4i..4i+3 and 16+4i..16+4i+3
 * of the block; integers are exact, so how they are formed does not matter), the same
 * fma(d_r * dx, float(isum), acc) per block in block order (d_r * dx one multiply of the
 * pair's [dA x4 | dB x4], permuted once per block, by the token's dx), the same final
 * reduction; so y[t][r] does not depend on which tile computed it.
 *
 * Q4_0 and Q5_0 (|w| <= 16) skip the sign trick: the activations are made unsigned, xu =
 * x + 128 (bt_matmul's xu, made once by its caller), maddubs(xu, w) is exact (|pair| <= 2 * 255
 * * 16) and 128 * (w0 + w1) per int16 is subtracted before the madd (computed once per pair
 * and block, shared by all tokens): (pl + ph) - corr = sum x*w exactly, |.| <= 8128. Q8_0
 * (|w| up to 128 would overflow int16 that way) keeps |w| x sign(x, w) with two madds.
 *
 * MIN (Q4_1, Q5_1: unsigned quants, maddubs(w, x) as in the decode tile): the min terms
 * m_r * s, which the decode tile sums in lane 1 of a second accumulator per output (a
 * multiply, an add and a permute per token and block), are summed here in one vector per row
 * whose lane t is token t: the same products, added in the same block order from 0, one
 * multiply and one add per row and block for all 8 tokens.
 */
/* A pair's prefill tile takes 8 tokens (its accumulators fill the 16 registers); the
 * BT_PREFILL_TOK tokens of a bt_ptile_q8_fn call go through it in groups of 8. */
#define PAIR_TOK 8
#define PTOKENS _Pragma("GCC unroll 8") for (int t = 0; t < PAIR_TOK; t++)

#define DEFINE_PTILE(name, block_t, XU, MIN)                                                       \
    INLINE void name##_ptile(const char *ra, const char *rb, size_t pf, const bt_q8 *x,            \
                             const uint8_t *xu, int64_t xs, int64_t nb, float *out, int64_t ldo,   \
                             int ca, int cb) {                                                     \
        const __m256i ones = _mm256_set1_epi16(1), k80 = _mm256_set1_epi8((char)0x80);             \
        __m256 acc[PAIR_TOK], mina = _mm256_setzero_ps(), minb = _mm256_setzero_ps();              \
        PTOKENS acc[t] = _mm256_setzero_ps();                                                      \
        for (int64_t i = 0; i < nb; i++) {                                                         \
            size_t off = (size_t)i * sizeof(block_t);                                              \
            const char *a = ra + off, *b = rb + off;                                               \
            _mm_prefetch(a + pf, _MM_HINT_T0);                                                     \
            _mm_prefetch(b + pf, _MM_HINT_T0);                                                     \
            __m256 dm = scales_of_pair(a, b); /* [dA mA dA mA | dB mB dB mB] */                    \
            __m256 dd = _mm256_permute_ps(dm, 0x00);                                               \
            const bt_q8 *xb = x + i;                                                               \
            if (MIN) {                                                                             \
                __m256 mm = _mm256_permute_ps(dm, 0x55);                                           \
                __m256 s8 =                                                                        \
                    _mm256_setr_ps(xb[0].s, xb[xs].s, xb[2 * xs].s, xb[3 * xs].s, xb[4 * xs].s,    \
                                   xb[5 * xs].s, xb[6 * xs].s, xb[7 * xs].s);                      \
                mina =                                                                             \
                    _mm256_add_ps(mina, _mm256_mul_ps(_mm256_permute2f128_ps(mm, mm, 0x00), s8));  \
                minb =                                                                             \
                    _mm256_add_ps(minb, _mm256_mul_ps(_mm256_permute2f128_ps(mm, mm, 0x11), s8));  \
            }                                                                                      \
            qpair q =                                                                              \
                name##_pair((const block_t *)(const void *)a, (const block_t *)(const void *)b);   \
            __m256i corr = _mm256_setzero_si256(); /* XU: 128 * (w0 + w1) per int16 */             \
            if (XU)                                                                                \
                corr = _mm256_add_epi16(_mm256_maddubs_epi16(k80, q.lo),                           \
                                        _mm256_maddubs_epi16(k80, q.hi));                          \
            PTOKENS {                                                                              \
                const bt_q8 *xt = xb + t * xs;                                                     \
                __m256 sc = _mm256_mul_ps(dd, _mm256_broadcast_ss(&xt->d));                        \
                __m256i v;                                                                         \
                if (MIN) {                                                                         \
                    v = _mm256_madd_epi16(                                                         \
                        _mm256_add_epi16(_mm256_maddubs_epi16(q.lo, bcast16(xt->qs)),              \
                                         _mm256_maddubs_epi16(q.hi, bcast16(xt->qs + 16))),        \
                        ones);                                                                     \
                } else if (XU) {                                                                   \
                    const uint8_t *ut = xu + 32 * (i + t * xs);                                    \
                    __m256i s = _mm256_add_epi16(_mm256_maddubs_epi16(bcast16(ut), q.lo),          \
                                                 _mm256_maddubs_epi16(bcast16(ut + 16), q.hi));    \
                    v = _mm256_madd_epi16(_mm256_sub_epi16(s, corr), ones);                        \
                } else {                                                                           \
                    __m256i xlo = bcast16(xt->qs), xhi = bcast16(xt->qs + 16);                     \
                    __m256i pl = _mm256_maddubs_epi16(_mm256_sign_epi8(q.lo, q.lo),                \
                                                      _mm256_sign_epi8(xlo, q.lo));                \
                    __m256i ph = _mm256_maddubs_epi16(_mm256_sign_epi8(q.hi, q.hi),                \
                                                      _mm256_sign_epi8(xhi, q.hi));                \
                    v = _mm256_add_epi32(_mm256_madd_epi16(pl, ones),                              \
                                         _mm256_madd_epi16(ph, ones));                             \
                }                                                                                  \
                acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(v), acc[t]);                       \
            }                                                                                      \
        }                                                                                          \
        float ma[8], mb[8];                                                                        \
        if (MIN) {                                                                                 \
            _mm256_storeu_ps(ma, mina);                                                            \
            _mm256_storeu_ps(mb, minb);                                                            \
        }                                                                                          \
        PTOKENS {                                                                                  \
            float a8[8];                                                                           \
            _mm256_storeu_ps(a8, acc[t]);                                                          \
            out[t * ldo + ca] = MIN ? ((a8[0] + a8[1]) + (a8[2] + a8[3])) + ma[t]                  \
                                    : (a8[0] + a8[1]) + (a8[2] + a8[3]);                           \
            if (cb >= 0)                                                                           \
                out[t * ldo + cb] = MIN ? ((a8[4] + a8[5]) + (a8[6] + a8[7])) + mb[t]              \
                                        : (a8[4] + a8[5]) + (a8[6] + a8[7]);                       \
        }                                                                                          \
    }

DEFINE_PTILE(q4_1, bt_block_q4_1, 0, 1)
DEFINE_PTILE(q5_1, bt_block_q5_1, 0, 1)
DEFINE_PTILE(q8_0, bt_block_q8_0, 0, 0)
DEFINE_PTILE(q4_0, bt_block_q4_0, 1, 0)
DEFINE_PTILE(q5_0, bt_block_q5_0, 1, 0)

/* bt_ptile_q8_fn over up to tile_rows (4) rows: pair by pair, a lone last row paired with
 * itself (its twin's output dropped). The next tile's rows (4 ahead) are prefetched. */
#define PTILE(name)                                                                                \
    static void ptile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x,                 \
                             const uint8_t *xu, int64_t xs, int64_t n, float *out, int64_t ldo) {  \
        const char *wb = w;                                                                        \
        int64_t nb = n / name##_ELEMS;                                                             \
        for (int r = 0; r < n_rows; r += 2) {                                                      \
            int twin = r + 1 < n_rows;                                                             \
            for (int t = 0; t < BT_PREFILL_TOK; t += PAIR_TOK)                                     \
                name##_ptile(wb + (size_t)r * rb, wb + (size_t)(r + twin) * rb, 4 * rb,            \
                             x + t * xs, xu ? xu + 32 * t * xs : NULL, xs, nb, out + t * ldo, ldo, \
                             r, twin ? r + 1 : -1);                                                \
        }                                                                                          \
    }

/*
 * K-quant tiles (Q4_K, Q5_K, Q6_K): the same pair layout, one 32-element sub-block (one bt_q8
 * block) at a time. Per super-block and row, the 6-bit scales and mins of Q4_K/Q5_K become
 * floats d*sc and dmin*m once (a stack array, interleaved); per sub-block a pair's
 * [dA*scA, dminA*mA, .. | dB*scB, dminB*mB, ..] is two broadcast loads, and per token one
 * multiply by [dx, s, ..] gives both rows' scale (lanes 0, 4) and min term (lanes 1, 5), as for
 * Q4_1. Q6_K keeps its int8 scales per 16 elements in the integer domain (one madd of the lo
 * half's sums by [scA x8 | scB x8], one of the hi half's; exact in int32) and its offset -32 as
 * 32 * sum(x), computed once per token and sub-block for every pair. Invariance as for the
 * legacy tiles: one accumulator's 4 lanes per output, filled in sub-block order, the same
 * final reduction (minus the min lane for Q4_K/Q5_K).
 */
enum { KQ_Q4K, KQ_Q5K, KQ_Q6K };

/* d*sc[j] and dmin*m[j] of a Q4_K/Q5_K super-block, as sm[2j], sm[2j + 1]. The 6-bit fields
 * are unpacked in 32-bit words as ggml does (u[0..1] = sc[0..7], u[2..3] = m[0..7]; the same
 * values as tensor_type.c's scale_min_k4). */
INLINE void k_scale_floats(const uint8_t *scales, const bt_half *dd, float *sm) {
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    uint32_t u[4];
    memcpy(u, scales, 12);
    u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);
    uint32_t m_lo = u[1] & k1;
    u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);
    u[2] = m_lo;
    u[0] &= k1;
    __m128i v = _mm_setr_epi32((int)u[0], (int)u[1], (int)u[2], (int)u[3]);
    __m256 s =
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_set1_ps(half_f32(dd[0])));
    __m256 m = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(v, v))),
                             _mm256_set1_ps(half_f32(dd[1])));
    __m256 lo = _mm256_unpacklo_ps(s, m), hi = _mm256_unpackhi_ps(s, m);
    _mm256_storeu_ps(sm, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(sm + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

INLINE __m256 two_pairs_f(const float *a, const float *b) {
    __m128 va = _mm_castpd_ps(_mm_loaddup_pd((const double *)(const void *)a));
    __m128 vb = _mm_castpd_ps(_mm_loaddup_pd((const double *)(const void *)b));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(va), vb, 1);
}

/* Sub-block j of a Q4_K/Q5_K pair: nibbles of qs[32 * (j / 2)..], low or high by j's parity. */
INLINE qpair k4_pair(const uint8_t *qa, const uint8_t *qb, int j) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256i v0 = two16(qa + 32 * (j / 2), qb + 32 * (j / 2));
    __m256i v1 = two16(qa + 32 * (j / 2) + 16, qb + 32 * (j / 2) + 16);
    if (j & 1) {
        v0 = _mm256_srli_epi16(v0, 4);
        v1 = _mm256_srli_epi16(v1, 4);
    }
    qpair q = {_mm256_and_si256(v0, lo4), _mm256_and_si256(v1, lo4)};
    return q;
}

/* Bit j of each qh byte -> 0x10 (Q5_K's fifth bit of sub-block j). */
INLINE __m256i k5_bit(__m256i qh, int j) {
    __m256i b = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), _mm256_set1_epi8(1));
    return _mm256_slli_epi16(b, 4);
}

/* Sub-block j = 4n + k of a Q6_K pair, unsigned 0..63 (the -32 is applied to the sums):
 * element e of the 32 is bits 4 * (k >> 1) of ql[64 n + 32 (k & 1) + e] and bits 2k of
 * qh[32 n + e]. The four sub-blocks of one n share their bytes: ql[64 n .. 64 n + 63] (l[0..3],
 * 16 of each row) and qh[32 n .. 32 n + 31] (h[0..1]), loaded once for them (k6_bytes). */
INLINE void k6_bytes(const bt_block_q6_k *a, const bt_block_q6_k *b, int n, __m256i *l,
                     __m256i *h) {
    for (int i = 0; i < 4; i++)
        l[i] = two16(a->ql + 64 * n + 16 * i, b->ql + 64 * n + 16 * i);
    for (int i = 0; i < 2; i++)
        h[i] = two16(a->qh + 32 * n + 16 * i, b->qh + 32 * n + 16 * i);
}

INLINE qpair k6_pair(const __m256i *l, const __m256i *h, int k) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F);
    __m256i q2[2];
    for (int i = 0; i < 2; i++) {
        __m256i lb = l[2 * (k & 1) + i];
        lb = _mm256_and_si256(k >> 1 ? _mm256_srli_epi16(lb, 4) : lb, lo4);
        /* bits 2k, 2k + 1 of each qh byte to bits 4, 5: masked first, so that no bit crosses
         * into the neighbouring byte of the 16-bit shift */
        __m256i hb = _mm256_and_si256(h[i], _mm256_set1_epi8((char)(3 << 2 * k)));
        hb = k < 2 ? _mm256_slli_epi16(hb, 4 - 2 * k) : k > 2 ? _mm256_srli_epi16(hb, 2) : hb;
        q2[i] = _mm256_or_si256(lb, hb);
    }
    qpair q = {q2[0], q2[1]};
    return q;
}

/* Sub-block j of a Q6_K pair with only its own bytes loaded (the prompt tiles, whose
 * registers hold 8 tokens' sums and cannot keep an n's bytes across its sub-blocks). */
INLINE qpair k6_pair_at(const bt_block_q6_k *a, const bt_block_q6_k *b, int j) {
    int n = j / 4, k = j % 4, lo = 64 * n + 32 * (k & 1);
    __m256i l[4] = {0}, h[2];
    for (int i = 0; i < 2; i++) {
        l[2 * (k & 1) + i] = two16(a->ql + lo + 16 * i, b->ql + lo + 16 * i);
        h[i] = two16(a->qh + 32 * n + 16 * i, b->qh + 32 * n + 16 * i);
    }
    return k6_pair(l, h, k);
}

INLINE __m256i two_set16(int a, int b) {
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)a)),
                                   _mm_set1_epi16((short)b), 1);
}

INLINE void kq_tile(int KIND, int NP, const char *const *rows, size_t pf, const bt_q8 *x,
                    int64_t xs, int NT, int64_t nb, float *out, int64_t ldo, const int *out_col) {
    const __m256i ones = _mm256_set1_epi16(1), k32 = _mm256_set1_epi8(32);
    const size_t bsz = KIND == KQ_Q4K   ? sizeof(bt_block_q4_k)
                       : KIND == KQ_Q5K ? 176
                                        : sizeof(bt_block_q6_k);
    __m256 acc[2][NT_MAX], macc[2][NT_MAX];
    TPAIRS TOKENS acc[p][t] = macc[p][t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        size_t off = (size_t)i * bsz;
        float sm[4][16];
        int16_t sc6[4][16];
        __m256 d6[2];
        __m256i qh0[2], qh1[2];
        TPAIRS {
            const uint8_t *ra = (const uint8_t *)rows[2 * p] + off;
            const uint8_t *rb = (const uint8_t *)rows[2 * p + 1] + off;
            for (size_t c = 0; c < bsz; c += 64) {
                _mm_prefetch((const char *)ra + pf + c, _MM_HINT_T0);
                _mm_prefetch((const char *)rb + pf + c, _MM_HINT_T0);
            }
            if (KIND == KQ_Q6K) {
                const bt_block_q6_k *a = (const void *)ra, *b = (const void *)rb;
                /* int8 scales widened once per super-block: a broadcast load per use */
                _mm256_storeu_si256((__m256i *)sc6[2 * p], _mm256_cvtepi8_epi16(_mm_loadu_si128(
                                                               (const __m128i *)a->scales)));
                _mm256_storeu_si256((__m256i *)sc6[2 * p + 1], _mm256_cvtepi8_epi16(_mm_loadu_si128(
                                                                   (const __m128i *)b->scales)));
                d6[p] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(half_f32(a->d))),
                                             _mm_set1_ps(half_f32(b->d)), 1);
            } else {
                /* Q4_K: d, dmin, scales[12], qs; Q5_K: d, dmin, scales[12], qh[32], qs */
                bt_half dda[2], ddb[2];
                memcpy(dda, ra, 4);
                memcpy(ddb, rb, 4);
                k_scale_floats(ra + 4, dda, sm[2 * p]);
                k_scale_floats(rb + 4, ddb, sm[2 * p + 1]);
                if (KIND == KQ_Q5K) {
                    qh0[p] = two16(ra + 16, rb + 16);
                    qh1[p] = two16(ra + 32, rb + 32);
                }
            }
        }
        __m256i l6[2][4], h6[2][2]; /* Q6_K: the bytes of sub-blocks 4n..4n+3 */
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            qpair q[2];
            __m256 dm[2];
            __m256i scl[2], sch[2];
            TPAIRS {
                const uint8_t *ra = (const uint8_t *)rows[2 * p] + off;
                const uint8_t *rb = (const uint8_t *)rows[2 * p + 1] + off;
                if (KIND == KQ_Q6K) {
                    const bt_block_q6_k *a = (const void *)ra, *b = (const void *)rb;
                    if (j % 4 == 0)
                        k6_bytes(a, b, j / 4, l6[p], h6[p]);
                    q[p] = k6_pair(l6[p], h6[p], j % 4);
                    scl[p] = two_set16(sc6[2 * p][2 * j], sc6[2 * p + 1][2 * j]);
                    sch[p] = two_set16(sc6[2 * p][2 * j + 1], sc6[2 * p + 1][2 * j + 1]);
                } else {
                    size_t qo = KIND == KQ_Q4K ? 16 : 48;
                    q[p] = k4_pair(ra + qo, rb + qo, j);
                    if (KIND == KQ_Q5K) {
                        q[p].lo = _mm256_or_si256(q[p].lo, k5_bit(qh0[p], j));
                        q[p].hi = _mm256_or_si256(q[p].hi, k5_bit(qh1[p], j));
                    }
                    dm[p] = two_pairs_f(sm[2 * p] + 2 * j, sm[2 * p + 1] + 2 * j);
                }
            }
            TOKENS {
                const bt_q8 *xb = x + t * xs + 8 * i + j;
                __m256i xlo = bcast16(xb->qs), xhi = bcast16(xb->qs + 16);
                if (KIND == KQ_Q6K) {
                    __m256i cl = _mm256_maddubs_epi16(k32, xlo),
                            ch = _mm256_maddubs_epi16(k32, xhi);
                    __m256 dx = _mm256_broadcast_ss(&xb->d);
                    TPAIRS {
                        __m256i pl = _mm256_sub_epi16(_mm256_maddubs_epi16(q[p].lo, xlo), cl);
                        __m256i ph = _mm256_sub_epi16(_mm256_maddubs_epi16(q[p].hi, xhi), ch);
                        __m256i v = _mm256_add_epi32(_mm256_madd_epi16(pl, scl[p]),
                                                     _mm256_madd_epi16(ph, sch[p]));
                        acc[p][t] = _mm256_fmadd_ps(_mm256_mul_ps(d6[p], dx), _mm256_cvtepi32_ps(v),
                                                    acc[p][t]);
                    }
                } else {
                    __m256 ds =
                        _mm256_castpd_ps(_mm256_broadcast_sd((const double *)(const void *)&xb->d));
                    TPAIRS {
                        __m256 sc = _mm256_mul_ps(dm[p], ds);
                        macc[p][t] = _mm256_add_ps(macc[p][t], sc);
                        __m256i v =
                            _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(q[p].lo, xlo),
                                                               _mm256_maddubs_epi16(q[p].hi, xhi)),
                                              ones);
                        acc[p][t] = _mm256_fmadd_ps(_mm256_permute_ps(sc, 0x00),
                                                    _mm256_cvtepi32_ps(v), acc[p][t]);
                    }
                }
            }
        }
    }
    TOKENS TPAIRS {
        float a[8], m[8];
        _mm256_storeu_ps(a, acc[p][t]);
        _mm256_storeu_ps(m, macc[p][t]);
        for (int k = 0; k < 2; k++) {
            int c = out_col[2 * p + k];
            float v = (a[4 * k] + a[4 * k + 1]) + (a[4 * k + 2] + a[4 * k + 3]);
            if (c >= 0)
                out[t * ldo + c] = KIND == KQ_Q6K ? v : v - m[4 * k + 1];
        }
    }
}

/*
 * Prefill tile of the K types: one row pair x PAIR_TOK tokens, bit for bit kq_tile's
 * outputs. The integer part and its scale d*sc*dx are kq_tile's per output (the same lane
 * sums, fma(d*sc * dx, float(isum), acc) per sub-block in order). Q4_K/Q5_K's min terms
 * (dmin*m) * s, which kq_tile sums in lane 1 of a second accumulator per output, are summed
 * here in one vector per row whose lane t is token t (the same products, added in the same
 * sub-block order): the s of the tile's tokens are gathered once per super-block. Q6_K's
 * -32 goes to the weights (w = q - 32 in [-32, 31]) and the activations are made unsigned
 * (x + 128): maddubs(x + 128, w) - 128 * (w0 + w1) is the exact pair sum (|.| <= 2 * 255 *
 * 32 before the correction, which is computed once per pair and sub-block instead of
 * kq_tile's 32 * sum(x) per token).
 */
INLINE void kq_ptile(int KIND, const char *ra0, const char *rb0, size_t pf, const bt_q8 *x,
                     const uint8_t *xu, int64_t xs, int64_t nb, float *out, int64_t ldo, int ca,
                     int cb) {
    const __m256i ones = _mm256_set1_epi16(1), k80 = _mm256_set1_epi8((char)0x80);
    const __m256i k32 = _mm256_set1_epi8(32);
    const size_t bsz = KIND == KQ_Q4K   ? sizeof(bt_block_q4_k)
                       : KIND == KQ_Q5K ? 176
                                        : sizeof(bt_block_q6_k);
    __m256 acc[PAIR_TOK], mina = _mm256_setzero_ps(), minb = _mm256_setzero_ps();
    PTOKENS acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ra = (const uint8_t *)ra0 + (size_t)i * bsz;
        const uint8_t *rb = (const uint8_t *)rb0 + (size_t)i * bsz;
        for (size_t c = 0; c < bsz; c += 64) {
            _mm_prefetch((const char *)ra + pf + c, _MM_HINT_T0);
            _mm_prefetch((const char *)rb + pf + c, _MM_HINT_T0);
        }
        float sm[2][16], st[8][PAIR_TOK];
        int16_t sc6[2][16];
        __m256 d6 = _mm256_setzero_ps();
        __m256i qh0 = _mm256_setzero_si256(), qh1 = _mm256_setzero_si256();
        const bt_block_q6_k *a6 = (const void *)ra, *b6 = (const void *)rb;
        if (KIND == KQ_Q6K) {
            _mm256_storeu_si256((__m256i *)sc6[0],
                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)a6->scales)));
            _mm256_storeu_si256((__m256i *)sc6[1],
                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b6->scales)));
            d6 = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_set1_ps(half_f32(a6->d))),
                                      _mm_set1_ps(half_f32(b6->d)), 1);
        } else {
            bt_half dda[2], ddb[2];
            memcpy(dda, ra, 4);
            memcpy(ddb, rb, 4);
            k_scale_floats(ra + 4, dda, sm[0]);
            k_scale_floats(rb + 4, ddb, sm[1]);
            if (KIND == KQ_Q5K) {
                qh0 = two16(ra + 16, rb + 16);
                qh1 = two16(ra + 32, rb + 32);
            }
            for (int j = 0; j < 8; j++)
                PTOKENS st[j][t] = x[t * xs + 8 * i + j].s;
        }
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            qpair q;
            __m256 dd;
            __m256i scl = _mm256_setzero_si256(), sch = scl, cl = scl, ch = scl;
            if (KIND == KQ_Q6K) {
                q = k6_pair_at(a6, b6, j);
                q.lo = _mm256_sub_epi8(q.lo, k32);
                q.hi = _mm256_sub_epi8(q.hi, k32);
                cl = _mm256_maddubs_epi16(k80, q.lo);
                ch = _mm256_maddubs_epi16(k80, q.hi);
                scl = two_set16(sc6[0][2 * j], sc6[1][2 * j]);
                sch = two_set16(sc6[0][2 * j + 1], sc6[1][2 * j + 1]);
                dd = d6;
            } else {
                size_t qo = KIND == KQ_Q4K ? 16 : 48;
                q = k4_pair(ra + qo, rb + qo, j);
                if (KIND == KQ_Q5K) {
                    q.lo = _mm256_or_si256(q.lo, k5_bit(qh0, j));
                    q.hi = _mm256_or_si256(q.hi, k5_bit(qh1, j));
                }
                dd = _mm256_permute_ps(two_pairs_f(sm[0] + 2 * j, sm[1] + 2 * j), 0x00);
                __m256 sj = _mm256_loadu_ps(st[j]);
                mina = _mm256_add_ps(mina, _mm256_mul_ps(_mm256_set1_ps(sm[0][2 * j + 1]), sj));
                minb = _mm256_add_ps(minb, _mm256_mul_ps(_mm256_set1_ps(sm[1][2 * j + 1]), sj));
            }
            PTOKENS {
                const bt_q8 *xb = x + t * xs + 8 * i + j;
                __m256 sc = _mm256_mul_ps(dd, _mm256_broadcast_ss(&xb->d));
                __m256i v;
                if (KIND == KQ_Q6K) {
                    const uint8_t *ut = xu + 32 * (t * xs + 8 * i + j);
                    __m256i pl = _mm256_sub_epi16(_mm256_maddubs_epi16(bcast16(ut), q.lo), cl);
                    __m256i ph = _mm256_sub_epi16(_mm256_maddubs_epi16(bcast16(ut + 16), q.hi), ch);
                    v = _mm256_add_epi32(_mm256_madd_epi16(pl, scl), _mm256_madd_epi16(ph, sch));
                } else {
                    __m256i xlo = bcast16(xb->qs), xhi = bcast16(xb->qs + 16);
                    v = _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(q.lo, xlo),
                                                           _mm256_maddubs_epi16(q.hi, xhi)),
                                          ones);
                }
                acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(v), acc[t]);
            }
        }
    }
    float ma[8], mb[8];
    _mm256_storeu_ps(ma, mina);
    _mm256_storeu_ps(mb, minb);
    PTOKENS {
        float a8[8];
        _mm256_storeu_ps(a8, acc[t]);
        float va = (a8[0] + a8[1]) + (a8[2] + a8[3]), vb = (a8[4] + a8[5]) + (a8[6] + a8[7]);
        out[t * ldo + ca] = KIND == KQ_Q6K ? va : va - ma[t];
        if (cb >= 0)
            out[t * ldo + cb] = KIND == KQ_Q6K ? vb : vb - mb[t];
    }
}

#define q4_k_ptile(ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)                                    \
    kq_ptile(KQ_Q4K, ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)
#define q5_k_ptile(ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)                                    \
    kq_ptile(KQ_Q5K, ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)
#define q6_k_ptile(ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)                                    \
    kq_ptile(KQ_Q6K, ra, rb, pf, x, xu, xs, nb, out, ldo, ca, cb)

#define q4_k_tile(NP, rows, pf, x, xs, NT, nb, out, ldo, col)                                      \
    kq_tile(KQ_Q4K, NP, rows, pf, x, xs, NT, nb, out, ldo, col)
#define q5_k_tile(NP, rows, pf, x, xs, NT, nb, out, ldo, col)                                      \
    kq_tile(KQ_Q5K, NP, rows, pf, x, xs, NT, nb, out, ldo, col)
#define q6_k_tile(NP, rows, pf, x, xs, NT, nb, out, ldo, col)                                      \
    kq_tile(KQ_Q6K, NP, rows, pf, x, xs, NT, nb, out, ldo, col)

/* Tile shapes: two row pairs for 1-2 tokens of the legacy types (decode of few streams: more
 * independent chains and one activation load per 4 rows), one pair for 3-4 tokens (the
 * registers) and for the K types (two pairs' unpacking and scales spill: Q6_K at one token
 * ran 20% slower with two). A lone last
 * row is paired with itself and its twin's output dropped (out_col -1). Each block's weights
 * two tiles ahead (8 rows: the next call's rows as bt_matmul walks them) are prefetched: four
 * interleaved row streams defeat the hardware prefetcher, and a Q8_0 output matrix streamed
 * for one token lost a third of its speed without it. */
#define TILE(name)                                                                                 \
    static void tile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x, int64_t xs,      \
                            int n_tok, int64_t n, float *out, int64_t ldo) {                       \
        const char *wb = w;                                                                        \
        int64_t nb = n / name##_ELEMS;                                                             \
        int max_pairs = n_tok <= 2 && name##_ELEMS == BT_QK ? 2 : 1;                               \
        for (int r = 0; r < n_rows;) {                                                             \
            const char *rows[4];                                                                   \
            int col[4], np = 0;                                                                    \
            while (np < max_pairs && r < n_rows) {                                                 \
                rows[2 * np] = wb + (size_t)r * rb;                                                \
                col[2 * np] = r;                                                                   \
                int twin = r + 1 < n_rows;                                                         \
                rows[2 * np + 1] = wb + (size_t)(r + twin) * rb;                                   \
                col[2 * np + 1] = twin ? r + 1 : -1;                                               \
                r += 1 + twin;                                                                     \
                np++;                                                                              \
            }                                                                                      \
            if (np == 2)                                                                           \
                BT_WITH_NT(n_tok, name##_tile(2, rows, 8 * rb, x, xs, NT_, nb, out, ldo, col))     \
            else                                                                                   \
                BT_WITH_NT(n_tok, name##_tile(1, rows, 4 * rb, x, xs, NT_, nb, out, ldo, col))     \
        }                                                                                          \
    }

#define q4_1_ELEMS BT_QK
#define q5_1_ELEMS BT_QK
#define q8_0_ELEMS BT_QK
#define q4_0_ELEMS BT_QK
#define q5_0_ELEMS BT_QK
#define q4_k_ELEMS BT_QK_K
#define q5_k_ELEMS BT_QK_K
#define q6_k_ELEMS BT_QK_K

TILE(q4_1)
TILE(q5_1)
TILE(q8_0)
TILE(q4_0)
TILE(q5_0)
TILE(q4_k)
TILE(q5_k)
TILE(q6_k)

PTILE(q4_1)
PTILE(q5_1)
PTILE(q8_0)
PTILE(q4_0)
PTILE(q5_0)
PTILE(q4_k)
PTILE(q5_k)
PTILE(q6_k)

/* The outputs of half h of a group (rows 8h..8h+7) whose bits are set in `rows`. */
INLINE void store_half(int NT, const __m256 *acc, int h, float *out, int64_t ldo, uint32_t rows) {
    uint32_t mine = rows >> 8 * h & 0xFF;
    for (int t = 0; t < NT; t++) {
        if (mine == 0xFF) {
            _mm256_storeu_ps(out + t * ldo + 8 * h, acc[t]);
        } else {
            float a[8];
            _mm256_storeu_ps(a, acc[t]);
            for (int r = 0; r < 8; r++)
                if (mine >> r & 1)
                    out[t * ldo + 8 * h + r] = a[r];
        }
    }
}

/*
 * Packed Q5_0 and Q4_0 (kernels_internal.h, bt_block_q5_0x16 and bt_block_q4_0x16; HI: Q5_0,
 * whose fifth bits Q4_0 lacks): one half of a group at a time, its 8 rows in the 8 lanes (the
 * 256-bit half h of each group vector), so a token's elements 4g..4g+3 of x + 128 are one
 * 32-bit broadcast and 8 maddubs give every row's block sum: the int16 sum of the 8 groups
 * less their 128 * (weight sum) (computed once per block, for every token), both modulo 2^16,
 * is the exact dot of 16 products (|.| <= 16 * 16 * 127 = 32512; Q4_0's weights are the
 * nibble less 8), whatever wrapped on the way, widened by one madd. A group at a time for 8 tokens,
 * each token's sum a chain (keep_chain); a prompt tile's 16 tokens take two such passes over
 * each block's weights, unpacked once. Then one convert and one FMA serve the 8 rows:
 * fma(fl(d_r * dx), isum, acc) in block order, the scalar tile's bits (kernels_scalar.c) and
 * the AVX-512 tile's.
 */
/* 16 in the bytes whose bit g is set, else 0: group g's bit plane (nohi) moved to bit 4. */
INLINE __m256i plane16(__m256i nohi, int g) {
    __m256i v = g < 4   ? _mm256_slli_epi16(nohi, 4 - g)
                : g > 4 ? _mm256_srli_epi16(nohi, g - 4)
                        : nohi;
    return _mm256_and_si256(v, _mm256_set1_epi8(16));
}

INLINE __m256i bcast32(const uint8_t *p) {
    int v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* The fields of a packed Q5_0 (HI) or Q4_0 block b: its size, its qs[j], d and (Q5_0) nohi. */
INLINE size_t nib0_size(int HI) {
    return HI ? sizeof(bt_block_q5_0x16) : sizeof(bt_block_q4_0x16);
}

INLINE const uint8_t *nib0_qs(int HI, const char *b, int j) {
    return HI ? ((const bt_block_q5_0x16 *)b)->qs[j] : ((const bt_block_q4_0x16 *)b)->qs[j];
}

INLINE const bt_half *nib0_d(int HI, const char *b) {
    return HI ? ((const bt_block_q5_0x16 *)b)->d : ((const bt_block_q4_0x16 *)b)->d;
}

INLINE __m256i nib0_nohi(int HI, const char *b, int h) {
    return HI ? _mm256_loadu_si256((const __m256i *)(((const bt_block_q5_0x16 *)b)->nohi + 32 * h))
              : _mm256_setzero_si256();
}

INLINE void nib0x8_tile(int HI, int XU, int NT, const char *b, int h, int64_t nb, const bt_q8 *x,
                        const uint8_t *xu, int64_t xs, float *out, int64_t ldo, uint32_t rows) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), k80 = _mm256_set1_epi8((char)0x80),
                  k8 = _mm256_set1_epi8(8), ones = _mm256_set1_epi16(1);
    __m256 acc[BT_PREFILL_TOK];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b += nib0_size(HI)) {
        _Pragma("GCC unroll 8") for (int c = 0; c < (int)nib0_size(HI); c += 64)
            _mm_prefetch(b + 1024 + c, _MM_HINT_T0);
        __m256i q[8];
        const __m256i nohi = nib0_nohi(HI, b, h);
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(nib0_qs(HI, b, j) + 32 * h));
            __m256i l = _mm256_and_si256(v, lo4),
                    u = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
            q[j] = _mm256_sub_epi8(l, HI ? plane16(nohi, j) : k8);
            q[j + 4] = _mm256_sub_epi8(u, HI ? plane16(nohi, j + 4) : k8);
        }
        /* 128 * (the weight sums), in int16 modulo 2^16 as the x + 128 sums below: the
         * difference, the exact dot, fits int16, so it comes out exact whatever wraps */
        __m256i c = _mm256_maddubs_epi16(k80, q[0]);
        _Pragma("GCC unroll 7") for (int g = 1; g < 8; g++) c =
            _mm256_add_epi16(c, _mm256_maddubs_epi16(k80, q[g]));
        __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(nib0_d(HI, b) + 8 * h)));
        uint8_t ub[BT_PREFILL_TOK][32]; /* without xu: x + 128 of the block's tokens */
        if (!XU)
            for (int t = 0; t < NT; t++)
                _mm256_storeu_si256(
                    (__m256i *)ub[t],
                    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[i + t * xs].qs), k80));
        _Pragma("GCC unroll 2") for (int t0 = 0; t0 < NT; t0 += PAIR_TOK) {
            const int nt = NT - t0 < PAIR_TOK ? NT - t0 : PAIR_TOK;
            __m256i s16[PAIR_TOK];
            _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) {
                _Pragma("GCC unroll 8") for (int t = t0; t < t0 + nt; t++) {
                    const uint8_t *u = XU ? xu + 32 * (i + t * xs) : ub[t];
                    __m256i p = _mm256_maddubs_epi16(bcast32(u + 4 * g), q[g]);
                    s16[t - t0] = keep_chain(g ? _mm256_add_epi16(s16[t - t0], p) : p);
                }
            }
            _Pragma("GCC unroll 8") for (int t = t0; t < t0 + nt; t++) {
                __m256i v = _mm256_madd_epi16(_mm256_sub_epi16(s16[t - t0], c), ones);
                __m256 sc = _mm256_mul_ps(dd, _mm256_broadcast_ss(&x[i + t * xs].d));
                acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(v), acc[t]);
            }
        }
    }
    store_half(NT, acc, h, out, ldo, rows);
}

/*
 * Packed Q4_K, Q5_K and Q6_K, one half (8 rows) at a time, with the AVX-512 tiles' operations
 * in 8 lanes (kernels_avx512.c; Q5_K has no AVX-512 tile, that level runs these) and their bits:
 *   Q4_K: maddubs(q, x) of the 8 groups summed in int16 (|.| <= 8 * 2 * 15 * 127 = 30480),
 *         one madd: the sub-block's sum per row (Q5_K: k45x8_tile).
 *   Q6_K: maddubs(x + 128, q) of a half's four groups summed in int16, less their
 *         128 * (weight sums) (computed per sub-block, for every token), both modulo 2^16:
 *         the exact dot of 8 products (|.| <= 8 * 127 * 32 = 32512) whatever wrapped on the
 *         way; one madd gives the half's sum.
 * Their prompt tiles go a group at a time over 8 tokens, each token's sum a chain
 * (keep_chain); Q6_K's unpacks a half's four groups once for the prompt tile's 16 tokens.
 */
INLINE __m256 lane_u8f(__m256i v, int byte) {
    return _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srli_epi32(v, 8 * byte), _mm256_set1_epi32(0xFF)));
}

INLINE __m256 lane_s8f(__m256i v, int byte) {
    return _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(v, 24 - 8 * byte), 24));
}

/* d * scale (dd[j]) and dmin * min (mm[j]) of the 8 sub-blocks of half h of a packed Q4_K
 * super-block (or the Q4_K part of a packed Q5_K one), the 6-bit scales and mins unpacked from
 * sm. */
INLINE void k4x8_scales(const bt_block_q4_kx16 *b, int h, __m256 *dd, __m256 *mm) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), k3f = _mm256_set1_epi8(0x3F),
                  k03 = _mm256_set1_epi8(0x03);
    __m256i u0 = _mm256_loadu_si256((const __m256i *)(b->sm[0] + 8 * h));
    __m256i u1 = _mm256_loadu_si256((const __m256i *)(b->sm[1] + 8 * h));
    __m256i u2 = _mm256_loadu_si256((const __m256i *)(b->sm[2] + 8 * h));
    __m256i sc03 = _mm256_and_si256(u0, k3f), m03 = _mm256_and_si256(u1, k3f);
    __m256i sc47 =
        _mm256_or_si256(_mm256_and_si256(u2, lo4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u0, 6), k03), 4));
    __m256i m47 =
        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(u2, 4), lo4),
                        _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(u1, 6), k03), 4));
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b->d + 8 * h)));
    __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b->dmin + 8 * h)));
    _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
        dd[j] = _mm256_mul_ps(d, lane_u8f(j < 4 ? sc03 : sc47, j % 4));
        mm[j] = _mm256_mul_ps(dmin, lane_u8f(j < 4 ? m03 : m47, j % 4));
    }
}

/* Packed Q4_K and Q5_K (Q5: a bt_block_q5_kx16, whose first part is a bt_block_q4_kx16): the
 * size of a block, and group g of sub-block j of half h as unsigned quants, the nibble (Q4_K,
 * 0..15) or the nibble with the fifth bit above it (Q5_K, 0..31). */
INLINE size_t k45_size(int Q5) {
    return Q5 ? sizeof(bt_block_q5_kx16) : sizeof(bt_block_q4_kx16);
}

INLINE __m256i k45x8_quants(int Q5, const char *b, int j, int g, int h) {
    const bt_block_q4_kx16 *k4 = (const bt_block_q4_kx16 *)b;
    __m256i v = _mm256_loadu_si256((const __m256i *)(k4->qs[j / 2][g] + 32 * h));
    __m256i q = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(0x0F));
    if (!Q5)
        return q;
    __m256i hb =
        _mm256_loadu_si256((const __m256i *)(((const bt_block_q5_kx16 *)b)->qh[g] + 32 * h));
    if (!__builtin_constant_p(j)) /* a rolled loop: one shift by j, bit j to bit 0, then to 4 */
        return _mm256_or_si256(
            q, _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(hb, _mm_cvtsi32_si128(j)), 4),
                                _mm256_set1_epi8(16)));
    return _mm256_or_si256(q, plane16(hb, j));
}

/*
 * NT tokens of half h. Q4_K (NT <= PAIR_TOK): maddubs(q, x) of the 8 groups summed in int16
 * (|.| <= 8 * 2 * 15 * 127 = 30480), one madd: the sub-block's sum per row. Q5_K (NT up to
 * BT_PREFILL_TOK): groups 0..3 and 4..7 so (each |.| <= 4 * 2 * 31 * 127 = 31496), one madd
 * each, their int32 sums added: the same exact sum; each four groups are unpacked once for
 * all NT tokens, PAIR_TOK tokens at a time. Then fma(fl(fl(d * sc) * dx), isum, acc) and
 * fnmadd(fl(dmin * m), s, acc), the sub-blocks in order.
 */
INLINE void k45x8_tile(int Q5, int NT, const char *b, int h, int64_t nb, const bt_q8 *x, int64_t xs,
                       float *out, int64_t ldo, uint32_t rows) {
    const __m256i ones = _mm256_set1_epi16(1);
    const int NG = Q5 ? 4 : 8, NH = Q5 ? 2 : 1; /* groups per int16 chain, chains */
    __m256 acc[BT_PREFILL_TOK];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b += k45_size(Q5)) {
        __m256 dd[8], mm[8];
        k4x8_scales((const bt_block_q4_kx16 *)b, h, dd, mm);
        for (int j = 0; j < 8; j++) {
            for (int c = 0; c < (int)k45_size(Q5); c += 64 * 8)
                _mm_prefetch(b + k45_size(Q5) + c + 64 * j, _MM_HINT_T0);
            const bt_q8 *xj = x + 8 * i + j;
            __m256i part[BT_PREFILL_TOK]; /* Q5_K: the madd of groups 0..3 */
            _Pragma("GCC unroll 2") for (int n = 0; n < NH; n++) {
                __m256i q5[4]; /* Q5_K: its four groups, unpacked once; Q4_K: each as used */
                _Pragma("GCC unroll 4") for (int g = 0; g < 4 && Q5; g++) q5[g] =
                    k45x8_quants(Q5, b, j, NG * n + g, h);
                _Pragma("GCC unroll 2") for (int t0 = 0; t0 < NT; t0 += PAIR_TOK) {
                    const int nt = NT - t0 < PAIR_TOK ? NT - t0 : PAIR_TOK;
                    __m256i s16[PAIR_TOK];
                    _Pragma("GCC unroll 8") for (int g = 0; g < NG; g++) {
                        __m256i qg = Q5 ? q5[g % 4] : k45x8_quants(Q5, b, j, g, h);
                        _Pragma("GCC unroll 8") for (int t = 0; t < nt; t++) {
                            const uint8_t *xq = (const uint8_t *)xj[(t0 + t) * xs].qs;
                            __m256i p = _mm256_maddubs_epi16(qg, bcast32(xq + 4 * (NG * n + g)));
                            s16[t] = keep_chain(g ? _mm256_add_epi16(s16[t], p) : p);
                        }
                    }
                    _Pragma("GCC unroll 8") for (int t = t0; t < t0 + nt; t++) {
                        __m256i isum = _mm256_madd_epi16(s16[t - t0], ones);
                        if (Q5 && n == 0) {
                            part[t] = isum;
                            continue;
                        }
                        if (Q5)
                            isum = _mm256_add_epi32(part[t], isum);
                        const bt_q8 *xt = xj + t * xs;
                        __m256 sc = _mm256_mul_ps(dd[j], _mm256_broadcast_ss(&xt->d));
                        acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc[t]);
                        acc[t] = _mm256_fnmadd_ps(mm[j], _mm256_broadcast_ss(&xt->s), acc[t]);
                    }
                }
            }
        }
    }
    store_half(NT, acc, h, out, ldo, rows);
}

/* Super-blocks ahead that the one-token Q4_K tile prefetches: 3 (6.9 KB). Out of cache it
 * kept 91-94% of a prefetched read's speed with 1 and 96-101% with 3 (bench_stream, one
 * thread, stop 35); Q5_K, held back by its arithmetic, keeps 1. */
#define K4_AHEAD(Q5) ((Q5) ? 1 : 3)

/* Packed Q4_K and Q5_K at one token (decode): both halves of each sub-block before the next.
 * At one token k45x8_tile waits on its one accumulator, an fma and an fnmadd a sub-block; here
 * the two halves' chains run side by side. Each half's operations are k45x8_tile's, in its
 * order: the same bits. */
INLINE void k45x16_one(int Q5, const char *b, int64_t nb, const bt_q8 *x, float *out,
                       uint32_t rows) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++, b += k45_size(Q5)) {
        __m256 dd[2][8], mm[2][8];
        for (int h = 0; h < 2; h++)
            k4x8_scales((const bt_block_q4_kx16 *)b, h, dd[h], mm[h]);
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            sched_fence(); /* the prefetches below stay in this sub-block */
            for (int c = 0; c < (int)k45_size(Q5); c += 64 * 8)
                _mm_prefetch(b + K4_AHEAD(Q5) * k45_size(Q5) + c + 64 * j, _MM_HINT_T0);
            const bt_q8 *xt = x + 8 * i + j;
            const char *bj = Q5 ? fresh_ptr(b) : b; /* Q5_K: each sub-block loads its bytes */
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
                _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) {
                    __m256i p = _mm256_maddubs_epi16(k45x8_quants(Q5, bj, j, g, h),
                                                     bcast32((const uint8_t *)xt->qs + 4 * g));
                    if (Q5 && g >= 4)
                        s1 = _mm256_add_epi16(s1, p);
                    else
                        s0 = _mm256_add_epi16(s0, p);
                }
                __m256i isum = _mm256_madd_epi16(s0, ones);
                if (Q5)
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s1, ones));
                __m256 sc = _mm256_mul_ps(dd[h][j], _mm256_broadcast_ss(&xt->d));
                acc[h] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc[h]);
                acc[h] = _mm256_fnmadd_ps(mm[h][j], _mm256_broadcast_ss(&xt->s), acc[h]);
            }
        }
    }
    for (int h = 0; h < 2; h++)
        if (rows >> 8 * h & 0xFF)
            store_half(1, &acc[h], h, out, 0, rows);
}

/* Group g of sub-block j of half h of a packed Q6_K super-block: its 8 rows' quants
 * unsigned, q + 32 in 0..63 (the low 4 bits with the 2 high bits moved above them). */
INLINE __m256i q6_kx8_quants(const bt_block_q6_kx16 *b, int j, int g, int h) {
    const int n = j / 4, m = j % 4;
    __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql[n][m & 1][g] + 32 * h));
    l = _mm256_and_si256(m >> 1 ? _mm256_srli_epi16(l, 4) : l, _mm256_set1_epi8(0x0F));
    __m256i hb = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(b->qh[n][g] + 32 * h)),
                                  _mm256_set1_epi8((char)(3 << 2 * m)));
    hb = m < 2 ? _mm256_slli_epi16(hb, 4 - 2 * m) : m > 2 ? _mm256_srli_epi16(hb, 2) : hb;
    return _mm256_or_si256(l, hb);
}

INLINE void q6_kx8_tile(int XU, int NT, const bt_block_q6_kx16 *b, int h, int64_t nb,
                        const bt_q8 *x, const uint8_t *xu, int64_t xs, float *out, int64_t ldo,
                        uint32_t rows) {
    const __m256i k32 = _mm256_set1_epi8(32), k80 = _mm256_set1_epi8((char)0x80),
                  ones = _mm256_set1_epi16(1);
    __m256 acc[BT_PREFILL_TOK];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b++) {
        __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b->d + 8 * h)));
        for (int j = 0; j < 8; j++) {
            for (int c = 0; c < 3360; c += 64 * 8)
                _mm_prefetch((const char *)(b + 1) + c + 64 * j, _MM_HINT_T0);
            __m256i scw = _mm256_loadu_si256((const __m256i *)(b->sc[j / 2] + 32 * h));
            __m256 scl = lane_s8f(scw, 2 * (j % 2)), sch = lane_s8f(scw, 2 * (j % 2) + 1);
            uint8_t ub[BT_PREFILL_TOK][32]; /* without xu: x + 128 of the sub-block's tokens */
            if (!XU)
                for (int t = 0; t < NT; t++)
                    _mm256_storeu_si256(
                        (__m256i *)ub[t],
                        _mm256_xor_si256(
                            _mm256_loadu_si256((const __m256i *)x[8 * i + j + t * xs].qs), k80));
            __m256 lo[BT_PREFILL_TOK]; /* scl * (the low half's sum) of each token */
            _Pragma("GCC unroll 2") for (int n = 0; n < 2; n++) { /* groups 4n..4n+3 */
                __m256i q[4], c = _mm256_setzero_si256();
                _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                    q[g] = _mm256_sub_epi8(q6_kx8_quants(b, j, 4 * n + g, h), k32);
                    c = _mm256_add_epi16(c, _mm256_maddubs_epi16(k80, q[g]));
                }
                _Pragma("GCC unroll 2") for (int t0 = 0; t0 < NT; t0 += PAIR_TOK) {
                    const int nt = NT - t0 < PAIR_TOK ? NT - t0 : PAIR_TOK;
                    __m256i s16[PAIR_TOK];
                    _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                        _Pragma("GCC unroll 8") for (int t = t0; t < t0 + nt; t++) {
                            const uint8_t *u = XU ? xu + 32 * (8 * i + j + t * xs) : ub[t];
                            __m256i p = _mm256_maddubs_epi16(bcast32(u + 4 * (4 * n + g)), q[g]);
                            s16[t - t0] = keep_chain(g ? _mm256_add_epi16(s16[t - t0], p) : p);
                        }
                    }
                    _Pragma("GCC unroll 8") for (int t = t0; t < t0 + nt; t++) {
                        __m256 f = _mm256_cvtepi32_ps(
                            _mm256_madd_epi16(_mm256_sub_epi16(s16[t - t0], c), ones));
                        if (n == 0) {
                            lo[t] = _mm256_mul_ps(scl, f);
                            continue;
                        }
                        __m256 v = _mm256_fmadd_ps(sch, f, lo[t]);
                        __m256 dx = _mm256_broadcast_ss(&x[8 * i + j + t * xs].d);
                        acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dx), v, acc[t]);
                    }
                }
            }
        }
    }
    store_half(NT, acc, h, out, ldo, rows);
}

/* Packed Q6_K at one token (decode), both halves of each sub-block before the next, so each
 * cache line of the super-block is used once. No xu and no weight sums, as nib0x16_one: the
 * weights go in unsigned, q + 32 in 0..63, against the signed x; groups 2p, 2p + 1 in int16
 * (|.| <= 2 * 2 * 63 * 127 = 32004), one madd each, and less 32 * sum(x) of each half of the
 * sub-block (made once for both halves of the rows) give the same exact sums as
 * q6_kx8_tile's, used in the same order: the same bits. */
INLINE void q6_kx16_one(const bt_block_q6_kx16 *b, int64_t nb, const bt_q8 *x, float *out,
                        uint32_t rows) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++, b++) {
        __m256 d[2] = {_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)b->d)),
                       _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b->d + 8)))};
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            sched_fence(); /* the prefetches below stay in this sub-block */
            for (int c = 0; c < (int)sizeof *b; c += 64 * 8)
                _mm_prefetch((const char *)(b + 1) + c + 64 * j, _MM_HINT_T0);
            const bt_q8 *xt = x + 8 * i + j;
            const __m256i sx_lo = _mm256_set1_epi32(32 * xt->sum[0]), /* 32 * sum(x) */
                sx_hi = _mm256_set1_epi32(32 * xt->sum[1]);
            __m256 dx = _mm256_broadcast_ss(&xt->d);
            const bt_block_q6_kx16 *bj = (const void *)fresh_ptr((const char *)b);
            _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
                __m256i e[4];
                _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
                    __m256i q[2];
                    _Pragma("GCC unroll 2") for (int k = 0; k < 2; k++) q[k] =
                        q6_kx8_quants(bj, j, 2 * p + k, h);
                    e[p] = _mm256_madd_epi16(
                        _mm256_add_epi16(
                            _mm256_maddubs_epi16(q[0], bcast32((const uint8_t *)xt->qs + 8 * p)),
                            _mm256_maddubs_epi16(q[1],
                                                 bcast32((const uint8_t *)xt->qs + 8 * p + 4))),
                        ones);
                }
                __m256i lo = _mm256_sub_epi32(_mm256_add_epi32(e[0], e[1]), sx_lo);
                __m256i hi = _mm256_sub_epi32(_mm256_add_epi32(e[2], e[3]), sx_hi);
                __m256i scw = _mm256_loadu_si256((const __m256i *)(b->sc[j / 2] + 32 * h));
                __m256 scl = lane_s8f(scw, 2 * (j % 2)), sch = lane_s8f(scw, 2 * (j % 2) + 1);
                __m256 v = _mm256_fmadd_ps(sch, _mm256_cvtepi32_ps(hi),
                                           _mm256_mul_ps(scl, _mm256_cvtepi32_ps(lo)));
                acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(d[h], dx), v, acc[h]);
            }
        }
    }
    for (int h = 0; h < 2; h++)
        if (rows >> 8 * h & 0xFF)
            store_half(1, &acc[h], h, out, 0, rows);
}

/* Packed Q4_1 and Q5_1 (HI: bt_block_q5_1x16, whose fields are Q4_1's with the fifth bits'
 * plane hi): the block's size and fields. */
INLINE size_t q41_size(int HI) {
    return HI ? sizeof(bt_block_q5_1x16) : sizeof(bt_block_q4_1x16);
}

INLINE const uint8_t *q41_qs(int HI, const char *b, int j) {
    return HI ? ((const bt_block_q5_1x16 *)b)->qs[j] : ((const bt_block_q4_1x16 *)b)->qs[j];
}

INLINE const bt_half *q41_d(int HI, const char *b) {
    return HI ? ((const bt_block_q5_1x16 *)b)->d : ((const bt_block_q4_1x16 *)b)->d;
}

INLINE const bt_half *q41_m(int HI, const char *b) {
    return HI ? ((const bt_block_q5_1x16 *)b)->m : ((const bt_block_q4_1x16 *)b)->m;
}

/* Packed Q4_1: maddubs(q, x) of the 8 groups summed in int16 as for Q4_K, then
 * fma(fl(d * dx), isum, acc) and fma(m, s, acc). Q5_1 (HI): the fifth bit or'ed in above the
 * nibble, groups 0, 4, 1, 5 and 2, 6, 3, 7 in two int16 sums (each |.| <= 4 * 2 * 31 * 127 =
 * 31496), one madd each: the same exact isum. One block of half h for NT tokens. */
INLINE void q41x8_block(int HI, int NT, const char *b, int h, const bt_q8 *x, int64_t xs,
                        __m256 *acc) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const __m256i hi =
        HI ? _mm256_loadu_si256((const __m256i *)(((const bt_block_q5_1x16 *)b)->hi + 32 * h))
           : _mm256_setzero_si256();
    __m256i s16[PAIR_TOK], part[PAIR_TOK];
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(q41_qs(HI, b, j) + 32 * h));
        __m256i ql = _mm256_and_si256(v, lo4), qh = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
        if (HI) {
            ql = _mm256_or_si256(ql, plane16(hi, j));
            qh = _mm256_or_si256(qh, plane16(hi, j + 4));
        }
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
            const uint8_t *xq = (const uint8_t *)x[t * xs].qs;
            __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(ql, bcast32(xq + 4 * j)),
                                         _mm256_maddubs_epi16(qh, bcast32(xq + 4 * j + 16)));
            s16[t] = keep_chain(j % (HI ? 2 : 4) ? _mm256_add_epi16(s16[t], p) : p);
        }
        if (HI && j == 1)
            _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) part[t] =
                _mm256_madd_epi16(s16[t], ones);
    }
    __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(q41_d(HI, b) + 8 * h)));
    __m256 mm = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(q41_m(HI, b) + 8 * h)));
    _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
        const bt_q8 *xt = x + t * xs;
        __m256i isum = _mm256_madd_epi16(s16[t], ones);
        if (HI)
            isum = _mm256_add_epi32(part[t], isum);
        __m256 sc = _mm256_mul_ps(dd, _mm256_broadcast_ss(&xt->d));
        acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(isum), acc[t]);
        acc[t] = _mm256_fmadd_ps(mm, _mm256_broadcast_ss(&xt->s), acc[t]);
    }
}

/* Packed Q8_0: |w| up to 128 against x overflows int16 in pairs, so each group is
 * maddubs(|w|, sign(x, w)) with its own madd, and the 8 int32 are added: the exact block
 * dot, then fma(fl(d * dx), isum, acc). One block of half h for NT tokens, a group at a time
 * (w and |w| in two registers) for all NT tokens, each token's sum a chain of adds
 * (keep_chain): 8 tokens fit the registers with no spill. */
INLINE void q8_0x8_block(int NT, const bt_block_q8_0x16 *b, int h, const bt_q8 *x, int64_t xs,
                         __m256 *acc) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i v[PAIR_TOK];
    _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) v[t] = _mm256_setzero_si256();
    _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(b->qs[g] + 32 * h));
        __m256i a = _mm256_sign_epi8(q, q);
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) v[t] = _mm256_add_epi32(
            v[t], _mm256_madd_epi16(
                      _mm256_maddubs_epi16(
                          a, _mm256_sign_epi8(bcast32((const uint8_t *)x[t * xs].qs + 4 * g), q)),
                      ones));
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) v[t] = keep_chain(v[t]);
    }
    __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b->d + 8 * h)));
    _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++) {
        __m256 sc = _mm256_mul_ps(dd, _mm256_broadcast_ss(&x[t * xs].d));
        acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(v[t]), acc[t]);
    }
}

/* KIND 3: Q4_1, 4: Q8_0, 6: Q5_1: one block (at bp) of half h for NT tokens. */
INLINE void legacy8_block(int KIND, int NT, const char *bp, int h, const bt_q8 *x, int64_t xs,
                          __m256 *acc) {
    if (KIND == 3 || KIND == 6)
        q41x8_block(KIND == 6, NT, bp, h, x, xs, acc);
    else
        q8_0x8_block(NT, (const void *)bp, h, x, xs, acc);
}

INLINE size_t legacy_size(int KIND) {
    return KIND == 4 ? sizeof(bt_block_q8_0x16) : q41_size(KIND == 6);
}

/* The same over all nb blocks, for half h of the group. */
INLINE void legacy8_tile(int KIND, int NT, const void *wg, int h, int64_t nb, const bt_q8 *x,
                         int64_t xs, float *out, int64_t ldo, uint32_t rows) {
    const size_t bsz = legacy_size(KIND);
    __m256 acc[PAIR_TOK];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *bp = (const char *)wg + (size_t)i * bsz;
        for (size_t c = 0; c < bsz; c += 64)
            _mm_prefetch(bp + 1024 + c, _MM_HINT_T0);
        legacy8_block(KIND, NT, bp, h, x + i, xs, acc);
    }
    store_half(NT, acc, h, out, ldo, rows);
}

/* The same for one token, both halves of each block before the next: every cache line of
 * the group is used once, as it arrives, and each block is prefetched once. */
INLINE void legacy16_one(int KIND, const void *wg, int64_t nb, const bt_q8 *x, float *out,
                         uint32_t rows) {
    const size_t bsz = legacy_size(KIND);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++) {
        const char *bp = (const char *)wg + (size_t)i * bsz;
        for (size_t c = 0; c < bsz; c += 64)
            _mm_prefetch(bp + 1024 + c, _MM_HINT_T0);
        for (int h = 0; h < 2; h++)
            legacy8_block(KIND, 1, bp, h, x + i, 0, &acc[h]);
    }
    for (int h = 0; h < 2; h++)
        if (rows >> 8 * h & 0xFF)
            store_half(1, &acc[h], h, out, 0, rows);
}

/* KIND 1: Q4_K, 2: Q6_K, 3: Q4_1, 4: Q8_0, 5: Q5_K, 6: Q5_1; the group's two halves. */
INLINE void kx16_rows(int KIND, int XU, int NT, const void *wg, int64_t nb, const bt_q8 *x,
                      const uint8_t *xu, int64_t xs, float *out, int64_t ldo, uint32_t rows) {
    if ((KIND == 3 || KIND == 4 || KIND == 6) && NT == 1) {
        legacy16_one(KIND, wg, nb, x, out, rows);
        return;
    }
    if ((KIND == 1 || KIND == 5) && NT == 1) {
        k45x16_one(KIND == 5, wg, nb, x, out, rows);
        return;
    }
    if (KIND == 2 && NT == 1) {
        q6_kx16_one(wg, nb, x, out, rows);
        return;
    }
    for (int h = 0; h < 2; h++) {
        if (!(rows >> 8 * h & 0xFF))
            continue;
        if (KIND == 1 || KIND == 5)
            k45x8_tile(KIND == 5, NT, wg, h, nb, x, xs, out, ldo, rows);
        else if (KIND == 3 || KIND == 4 || KIND == 6)
            legacy8_tile(KIND, NT, wg, h, nb, x, xs, out, ldo, rows);
        else
            q6_kx8_tile(XU, NT, wg, h, nb, x, xu, xs, out, ldo, rows);
    }
}

#define PACKED_K(name, KIND)                                                                       \
    static void packed_tile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,  \
                                   int64_t xs, int n_tok, float *out, int64_t ldo,                 \
                                   uint32_t rows) {                                                \
        if (xu)                                                                                    \
            BT_WITH_NT(n_tok, kx16_rows(KIND, 1, NT_, wg, nb, x, xu, xs, out, ldo, rows))          \
        else                                                                                       \
            BT_WITH_NT(n_tok, kx16_rows(KIND, 0, NT_, wg, nb, x, NULL, xs, out, ldo, rows))        \
    }                                                                                              \
    static void packed_ptile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu, \
                                    int64_t xs, int n_tok, float *out, int64_t ldo,                \
                                    uint32_t rows) {                                               \
        (void)n_tok;                                                                               \
        if (KIND == 2 || KIND == 5) /* a single pass over the weights for all 16 tokens */         \
            kx16_rows(KIND, KIND == 2, BT_PREFILL_TOK, wg, nb, x, xu, xs, out, ldo, rows);         \
        else                                                                                       \
            for (int t = 0; t < BT_PREFILL_TOK; t += PAIR_TOK)                                     \
                kx16_rows(KIND, 0, PAIR_TOK, wg, nb, x + t * xs, NULL, xs, out + t * ldo, ldo,     \
                          rows);                                                                   \
    }

PACKED_K(q4_k, 1)
PACKED_K(q6_k, 2)
PACKED_K(q4_1, 3)
PACKED_K(q8_0, 4)
PACKED_K(q5_k, 5)
PACKED_K(q5_1, 6)

/* Packed Q5_0 (HI) and Q4_0 at one token (decode), both halves of each block before the next,
 * so each cache line of the group is used once, as it arrives. No xu and no weight sums: the
 * weights go in unsigned, Q5_0's q + 16 = l | 16 * (fifth bit) in 0..31 and Q4_0's nibble
 * q + 8, against the signed x. The maddubs of groups 0..3 and of groups 4..7 (each |.| <= 4 * 2
 * * 31 * 128 = 31744), one madd each, less 16 (Q4_0: 8) * sum(x) of the block (made once for
 * both halves), are the same exact block dot as nib0x8_tile's, in the same order: the same
 * bits. In cache it is 15-20% faster than nib0x8_tile at one token, which makes x + 128 per
 * block and spends a weight-sum maddubs per group that one token cannot share. */
INLINE void nib0x16_one(int HI, const char *b, int64_t nb, const bt_q8 *x, float *out,
                        uint32_t rows) {
    const __m256i lo4 = _mm256_set1_epi8(0x0F), k16 = _mm256_set1_epi8(16),
                  ones = _mm256_set1_epi16(1);
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t i = 0; i < nb; i++, b += nib0_size(HI)) {
        _Pragma("GCC unroll 8") for (int c = 0; c < (int)nib0_size(HI); c += 64)
            _mm_prefetch(b + 1024 + c, _MM_HINT_T0);
        const bt_q8 *xt = x + i;
        const __m256i sx = /* 16 (Q4_0: 8) * sum(x) of the block */
            _mm256_set1_epi32((HI ? 16 : 8) * (xt->sum[0] + xt->sum[1]));
        __m256 dx = _mm256_broadcast_ss(&xt->d);
        _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++) {
            const __m256i nohi = nib0_nohi(HI, b, h);
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
            _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(nib0_qs(HI, b, j) + 32 * h));
                __m256i l = _mm256_and_si256(v, lo4),
                        u = _mm256_and_si256(_mm256_srli_epi16(v, 4), lo4);
                if (HI) {
                    l = _mm256_or_si256(l, _mm256_xor_si256(plane16(nohi, j), k16));
                    u = _mm256_or_si256(u, _mm256_xor_si256(plane16(nohi, j + 4), k16));
                }
                s0 = _mm256_add_epi16(
                    s0, _mm256_maddubs_epi16(l, bcast32((const uint8_t *)xt->qs + 4 * j)));
                s1 = _mm256_add_epi16(
                    s1, _mm256_maddubs_epi16(u, bcast32((const uint8_t *)xt->qs + 16 + 4 * j)));
            }
            __m256i v = _mm256_sub_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones)), sx);
            __m256 dd = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(nib0_d(HI, b) + 8 * h)));
            acc[h] = _mm256_fmadd_ps(_mm256_mul_ps(dd, dx), _mm256_cvtepi32_ps(v), acc[h]);
        }
    }
    for (int h = 0; h < 2; h++)
        if (rows >> 8 * h & 0xFF)
            store_half(1, &acc[h], h, out, 0, rows);
}

/* The group's two halves; NT tokens (up to BT_KERNEL_MAX_TOK, or PAIR_TOK with xu). Folded
 * into kx16_rows as its KIND 0, Q5_0's prompt tile measured 9% slower (bench_kernels avx2). */
INLINE void nib0x16_rows(int HI, int XU, int NT, const void *wg, int64_t nb, const bt_q8 *x,
                         const uint8_t *xu, int64_t xs, float *out, int64_t ldo, uint32_t rows) {
    for (int h = 0; h < 2; h++)
        if (rows >> 8 * h & 0xFF)
            nib0x8_tile(HI, XU, NT, wg, h, nb, x, xu, xs, out, ldo, rows);
}

/* Decode tiles, and prompt tiles (BT_PREFILL_TOK tokens with xu, PAIR_TOK at a time). */
#define PACKED_NIB0(name, HI)                                                                      \
    static void packed_tile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,  \
                                   int64_t xs, int n_tok, float *out, int64_t ldo,                 \
                                   uint32_t rows) {                                                \
        if (n_tok == 1)                                                                            \
            nib0x16_one(HI, wg, nb, x, out, rows);                                                 \
        else if (xu)                                                                               \
            BT_WITH_NT(n_tok, nib0x16_rows(HI, 1, NT_, wg, nb, x, xu, xs, out, ldo, rows))         \
        else                                                                                       \
            BT_WITH_NT(n_tok, nib0x16_rows(HI, 0, NT_, wg, nb, x, NULL, xs, out, ldo, rows))       \
    }                                                                                              \
    static void packed_ptile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu, \
                                    int64_t xs, int n_tok, float *out, int64_t ldo,                \
                                    uint32_t rows) {                                               \
        (void)n_tok;                                                                               \
        nib0x16_rows(HI, 1, BT_PREFILL_TOK, wg, nb, x, xu, xs, out, ldo, rows);                    \
    }

PACKED_NIB0(q5_0, 1)
PACKED_NIB0(q4_0, 0)

/* Float weights: 8 columns per step, converted to f32 once and used for every token. */
INLINE __m256 load_w(int kind, const void *w, int64_t c) {
    if (kind == 0)
        return _mm256_loadu_ps((const float *)w + c);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + c));
    if (kind == 1)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE float load_w1(int kind, const void *w, int64_t c) {
    if (kind == 0)
        return ((const float *)w)[c];
    if (kind == 1)
        return half_f32(((const bt_half *)w)[c]);
    return bt_bf16_to_f32(((const uint16_t *)w)[c]);
}

INLINE void float_nt(int kind, const void *w, const float *x, int64_t xs, int NT, int64_t n,
                     float *out, int64_t ldo) {
    __m256 acc[NT_MAX][2];
    TOKENS acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 16 <= n; c += 16) {
        __m256 w0 = load_w(kind, w, c), w1 = load_w(kind, w, c + 8);
        TOKENS {
            acc[t][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + t * xs + c), acc[t][0]);
            acc[t][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + t * xs + c + 8), acc[t][1]);
        }
    }
    TOKENS {
        float s = hsum8(_mm256_add_ps(acc[t][0], acc[t][1]));
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

INLINE float round_f16(float v) {
    return _cvtsh_ss(_cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT));
}

/* Same arithmetic as bt_quantize_q8_ref, so the bytes are identical: amax, d = amax/127,
 * id = 127/amax, q = cvtps2dq(x * id) (nearest even), d and s = d * sum(q) rounded to fp16
 * (F16C, nearest even, as bt_f32_to_half), and the halves' sums of q. */
static void quantize_q8(const float *x, bt_q8 *y, int64_t n) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (int64_t i = 0; i < n / BT_QK; i++) {
        const float *xb = x + i * BT_QK;
        __m256 v0 = _mm256_loadu_ps(xb), v1 = _mm256_loadu_ps(xb + 8);
        __m256 v2 = _mm256_loadu_ps(xb + 16), v3 = _mm256_loadu_ps(xb + 24);
        __m256 mx =
            _mm256_max_ps(_mm256_max_ps(_mm256_and_ps(v0, absmask), _mm256_and_ps(v1, absmask)),
                          _mm256_max_ps(_mm256_and_ps(v2, absmask), _mm256_and_ps(v3, absmask)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float d;
        __m256 id = _mm256_set1_ps(bt_q8_scale_inv(_mm_cvtss_f32(m4), &d));
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        /* the halves' sums: lanes 0, 1 of (lo | hi) after two horizontal adds */
        __m256i h = _mm256_hadd_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        h = _mm256_hadd_epi32(h, h);
        __m128i s2 = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        const int lo = _mm_cvtsi128_si32(s2), hi = _mm_extract_epi32(s2, 1);
        /* packs interleave the 128-bit lanes; the permute restores element order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[i].qs, p);
        y[i].d = round_f16(d);
        y[i].s = round_f16(d * (float)(lo + hi));
        y[i].sum[0] = (int16_t)lo;
        y[i].sum[1] = (int16_t)hi;
    }
}

/* Dequantizers: same operations in the same order as bt_dequant_row, so results are equal. */
INLINE void store_bytes_f(float *dst, __m256i q, __m256 d) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
    _mm256_storeu_ps(
        dst + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
    _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
    _mm256_storeu_ps(
        dst + 24,
        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
}

static void dequant_q8_0(const void *w, float *dst, int64_t n) {
    const bt_block_q8_0 *b = w;
    for (int64_t i = 0; i < n / BT_QK; i++)
        store_bytes_f(dst + 32 * i, _mm256_loadu_si256((const __m256i *)b[i].qs),
                      _mm256_set1_ps(half_f32(b[i].d)));
}

static void dequant_q4_0(const void *w, float *dst, int64_t n) {
    const bt_block_q4_0 *b = w;
    for (int64_t i = 0; i < n / BT_QK; i++)
        store_bytes_f(dst + 32 * i, _mm256_sub_epi8(unpack_nibbles(b[i].qs), _mm256_set1_epi8(8)),
                      _mm256_set1_ps(half_f32(b[i].d)));
}

static void dequant_q4_1(const void *w, float *dst, int64_t n) {
    const bt_block_q4_1 *b = w;
    for (int64_t i = 0; i < n / BT_QK; i++) {
        __m256 d = _mm256_set1_ps(half_f32(b[i].d)), m = _mm256_set1_ps(half_f32(b[i].m));
        float *o = dst + 32 * i;
        store_bytes_f(o, unpack_nibbles(b[i].qs), d);
        for (int k = 0; k < 32; k += 8)
            _mm256_storeu_ps(o + k, _mm256_add_ps(_mm256_loadu_ps(o + k), m));
    }
}

/* 32 byte values (int8) -> floats: the first 16 times s0, the last 16 times s1, then minus
 * m when `sub` (in that order, as tensor_type.c's dequantizers: scale * q - min). */
INLINE void store_bytes_f2(float *dst, __m256i q, __m256 s0, __m256 s1, __m256 m, int sub) {
    __m128i h[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
    for (int k = 0; k < 4; k++) {
        __m128i b = k & 1 ? _mm_srli_si128(h[k / 2], 8) : h[k / 2];
        __m256 v = _mm256_mul_ps(k < 2 ? s0 : s1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
        _mm256_storeu_ps(dst + 8 * k, sub ? _mm256_sub_ps(v, m) : v);
    }
}

/* Q4_K and Q5_K (hbits: Q5_K's qh, else NULL): d*sc and dmin*m as tensor_type.c computes
 * them (d * sc in float, the 6-bit fields unpacked as k_scale_floats does). */
INLINE void dequant_k45(const uint8_t *blk, const uint8_t *qs, const uint8_t *qh, float *out) {
    bt_half dd[2];
    memcpy(dd, blk, 4);
    float sm[16];
    k_scale_floats(blk + 4, dd, sm);
    const __m256i lo4 = _mm256_set1_epi8(0x0F), b16 = _mm256_set1_epi8(16);
    __m256i h = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        for (int k = 0; k < 2; k++) {
            int j = 2 * c + k;
            __m256i q = _mm256_and_si256(k ? _mm256_srli_epi16(raw, 4) : raw, lo4);
            if (qh) {
                __m256i bit = _mm256_set1_epi8((char)(1 << j));
                q = _mm256_add_epi8(
                    q, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit), b16));
            }
            __m256 d1 = _mm256_set1_ps(sm[2 * j]);
            store_bytes_f2(out + 32 * j, q, d1, d1, _mm256_set1_ps(sm[2 * j + 1]), 1);
        }
    }
}

static void dequant_q4_k(const void *w, float *dst, int64_t n) {
    const bt_block_q4_k *b = w;
    for (int64_t i = 0; i < n / BT_QK_K; i++)
        dequant_k45((const uint8_t *)(b + i), b[i].qs, NULL, dst + BT_QK_K * i);
}

static void dequant_q5_k(const void *w, float *dst, int64_t n) {
    const uint8_t *b = w; /* d, dmin, scales[12], qh[32], qs[128]: 176 bytes */
    for (int64_t i = 0; i < n / BT_QK_K; i++, b += 176)
        dequant_k45(b, b + 48, b + 16, dst + BT_QK_K * i);
}

static void dequant_q6_k(const void *w, float *dst, int64_t n) {
    const bt_block_q6_k *b = w;
    const __m256i lo4 = _mm256_set1_epi8(0x0F), m3 = _mm256_set1_epi8(3);
    const __m256i k32 = _mm256_set1_epi8(32);
    for (int64_t i = 0; i < n / BT_QK_K; i++) {
        float d = half_f32(b[i].d);
        for (int n2 = 0; n2 < 2; n2++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * n2));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * n2 + 32));
            __m256i h = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * n2));
            const int8_t *sc = b[i].scales + 8 * n2;
            float *out = dst + BT_QK_K * i + 128 * n2;
            for (int k = 0; k < 4; k++) {
                __m256i l = k & 1 ? l1 : l0;
                if (k >= 2)
                    l = _mm256_srli_epi16(l, 4);
                __m256i hb = _mm256_and_si256(_mm256_srli_epi16(h, 2 * k), m3);
                __m256i q = _mm256_sub_epi8(
                    _mm256_or_si256(_mm256_and_si256(l, lo4), _mm256_slli_epi16(hb, 4)), k32);
                store_bytes_f2(out + 32 * k, q, _mm256_set1_ps(d * sc[2 * k]),
                               _mm256_set1_ps(d * sc[2 * k + 1]), _mm256_setzero_ps(), 0);
            }
        }
    }
}

static void dequant_f16(const void *w, float *dst, int64_t n) {
    const bt_half *h = w;
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + c))));
    for (; c < n; c++)
        dst[c] = half_f32(h[c]);
}

BT_CEPHES_EXP(exp8, 256, BT_ROUND256, INLINE)

/* Max, then sum of exp(x - max) in 8 float lanes per block of 1024 values, blocks summed in
 * double (a row of 49152 logits costs tens of microseconds instead of half a millisecond). */
static float log_sum_exp(const float *x, int64_t n, float *max_out) {
    __m256 vm = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vm), _mm256_extractf128_ps(vm, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (int64_t k = i; k < n; k++)
        mx = x[k] > mx ? x[k] : mx;
    __m256 vmx = _mm256_set1_ps(mx);
    double sum = 0.0;
    for (i = 0; i + 8 <= n;) {
        __m256 acc = _mm256_setzero_ps();
        int64_t end = i + 1024 < n ? i + 1024 : n;
        for (; i + 8 <= end; i += 8)
            acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmx)));
        sum += hsum8(acc);
    }
    for (; i < n; i++)
        sum += expf(x[i] - mx);
    *max_out = mx;
    return (float)log(sum);
}

/* bt_swiglu_ref lane by lane: the same fmas, products and division as bt_ggml_expf and the
 * reference; 2^n is built from its exponent bits, which equals scalbnf for |n| <= 126 (both
 * round j * 2^n once, to nearest). A group with a lane outside that range (|g| above ~87, or
 * NaN) takes the scalar path, so every input gives the reference's bits. */
static void swiglu(float *g, const float *u, int64_t n) {
    const __m256 shift = _mm256_set1_ps(BT_GGML_EXPF_SHIFT), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 x = _mm256_sub_ps(_mm256_setzero_ps(), gv);
        __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(BT_GGML_EXPF_LOG2E), shift);
        __m256 nf = _mm256_sub_ps(z, shift);
        /* |n| <= 126 and not NaN (an unordered compare is false) */
        __m256 in = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), nf),
                                  _mm256_set1_ps(126.0f), _CMP_LE_OQ);
        if (_mm256_movemask_ps(in) != 0xFF) {
            bt_swiglu_ref(g + i, u + i, 8);
            continue;
        }
        __m256 b = _mm256_fnmadd_ps(nf, _mm256_set1_ps(BT_GGML_EXPF_LN2_LO),
                                    _mm256_fnmadd_ps(nf, _mm256_set1_ps(BT_GGML_EXPF_LN2_HI), x));
        __m256 b2 = _mm256_mul_ps(b, b);
        __m256 hi =
            _mm256_fmadd_ps(_mm256_set1_ps(BT_GGML_EXPF_C5), b, _mm256_set1_ps(BT_GGML_EXPF_C4));
        __m256 mid =
            _mm256_fmadd_ps(_mm256_set1_ps(BT_GGML_EXPF_C3), b, _mm256_set1_ps(BT_GGML_EXPF_C2));
        __m256 lo = _mm256_fmadd_ps(_mm256_set1_ps(BT_GGML_EXPF_C1), b, one);
        __m256 j = _mm256_fmadd_ps(_mm256_fmadd_ps(hi, b2, mid), b2, lo);
        __m256i e =
            _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nf), _mm256_set1_epi32(127)), 23);
        __m256 ex = _mm256_mul_ps(j, _mm256_castsi256_ps(e));
        __m256 r = _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, ex)), _mm256_loadu_ps(u + i));
        _mm256_storeu_ps(g + i, r);
    }
    if (i < n)
        bt_swiglu_ref(g + i, u + i, n - i);
}

void bt_kernels_fill_avx2(bt_kernel_table *t) {
    t->tile_rows = 4;
    t->quantize_q8 = quantize_q8;
    t->log_sum_exp = log_sum_exp;
    t->swiglu = swiglu;
    t->tile_q8[BT_TYPE_Q8_0] = tile_q8_0;
    t->tile_q8[BT_TYPE_Q4_0] = tile_q4_0;
    t->tile_q8[BT_TYPE_Q4_1] = tile_q4_1;
    t->tile_q8[BT_TYPE_Q5_0] = tile_q5_0;
    t->tile_q8[BT_TYPE_Q5_1] = tile_q5_1;
    t->tile_q8[BT_TYPE_Q4_K] = tile_q4_k;
    t->tile_q8[BT_TYPE_Q5_K] = tile_q5_k;
    t->tile_q8[BT_TYPE_Q6_K] = tile_q6_k;
    t->ptile_q8[BT_TYPE_Q4_1] = ptile_q4_1;
    t->ptile_q8[BT_TYPE_Q5_1] = ptile_q5_1;
    t->ptile_q8[BT_TYPE_Q8_0] = ptile_q8_0; /* the sign trick: no xu */
    t->ptile_q8[BT_TYPE_Q4_0] = ptile_q4_0;
    t->ptile_xu[BT_TYPE_Q4_0] = t->ptile_xu[BT_TYPE_Q5_0] = t->ptile_xu[BT_TYPE_Q6_K] = true;
    t->ptile_q8[BT_TYPE_Q5_0] = ptile_q5_0;
    t->ptile_q8[BT_TYPE_Q4_K] = ptile_q4_k;
    t->ptile_q8[BT_TYPE_Q5_K] = ptile_q5_k;
    t->ptile_q8[BT_TYPE_Q6_K] = ptile_q6_k;
    t->packed_tile[BT_TYPE_Q5_0] = packed_tile_q5_0;
    t->packed_ptile[BT_TYPE_Q5_0] = packed_ptile_q5_0;
    t->packed_tile[BT_TYPE_Q4_0] = packed_tile_q4_0;
    t->packed_ptile[BT_TYPE_Q4_0] = packed_ptile_q4_0;
    t->packed_xu[BT_TYPE_Q5_0] = t->packed_xu[BT_TYPE_Q4_0] = true;
    t->packed_tile[BT_TYPE_Q8_0] = packed_tile_q8_0;
    t->packed_ptile[BT_TYPE_Q8_0] = packed_ptile_q8_0;
    t->packed_tile[BT_TYPE_Q4_1] = packed_tile_q4_1;
    t->packed_ptile[BT_TYPE_Q4_1] = packed_ptile_q4_1;
    t->packed_tile[BT_TYPE_Q5_1] = packed_tile_q5_1;
    t->packed_ptile[BT_TYPE_Q5_1] = packed_ptile_q5_1;
    t->packed_tile[BT_TYPE_Q4_K] = packed_tile_q4_k;
    t->packed_ptile[BT_TYPE_Q4_K] = packed_ptile_q4_k;
    t->packed_tile[BT_TYPE_Q5_K] = packed_tile_q5_k;
    t->packed_ptile[BT_TYPE_Q5_K] = packed_ptile_q5_k;
    t->packed_tile[BT_TYPE_Q6_K] = packed_tile_q6_k;
    t->packed_ptile[BT_TYPE_Q6_K] = packed_ptile_q6_k;
    t->packed_xu[BT_TYPE_Q6_K] = true;
    t->rowdot_f32[BT_TYPE_F32] = rowdot_f32;
    t->rowdot_f32[BT_TYPE_F16] = rowdot_f16;
    t->rowdot_f32[BT_TYPE_BF16] = rowdot_bf16;
    t->dequant[BT_TYPE_Q8_0] = dequant_q8_0;
    t->dequant[BT_TYPE_Q4_0] = dequant_q4_0;
    t->dequant[BT_TYPE_Q4_1] = dequant_q4_1;
    t->dequant[BT_TYPE_Q4_K] = dequant_q4_k;
    t->dequant[BT_TYPE_Q5_K] = dequant_q5_k;
    t->dequant[BT_TYPE_Q6_K] = dequant_q6_k;
    t->dequant[BT_TYPE_F16] = dequant_f16;
}
