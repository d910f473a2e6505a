/*
 * kernels_avx512.c - AVX-512 VNNI kernels: the tiles of every quant type with an AVX2 tile
 * (Q4_1, Q5_1, Q8_0, Q4_0, Q5_0, Q4_K, Q5_K, Q6_K), giving the AVX2 tiles' bits, and the float
 * weight row dots. Everything else (activation quantization, dequantization, softmax, SwiGLU)
 * keeps its AVX2 kernel (dispatch.c fills the AVX2 table first). Compiled with
 * AVX-512F/BW/VL/DQ/VNNI and only called after dispatch.c has checked CPUID.
 *
 * Quant dots use vpdpbusd (u8 x s8 -> int32, one instruction instead of maddubs + madd) on
 * 512-bit vectors.
 */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "kernels_internal.h"
#include "simd_avx2.h"

#define NT_MAX BT_KERNEL_MAX_TOK
#define TOKENS _Pragma("GCC unroll 16") for (int t = 0; t < NT; t++)
#define GROUPS _Pragma("GCC unroll 4") for (int g = 0; g < (NT + 3) / 4; g++)

/*
 * Tiles of the legacy types (kernels_internal.h, bt_tile_q8_fn and bt_ptile_q8_fn): four rows
 * A..D in the four 128-bit lanes of a 512-bit vector x NT tokens (up to BT_KERNEL_MAX_TOK for
 * decode, BT_PREFILL_TOK for prompts), one block at a time. The quad's quants are two vectors
 * lo = [A 0..15 | B 0..15 | C 0..15 | D 0..15] and hi = [.. 16..31 ..], each token's block is
 * broadcast to every lane as [x 0..15] x4 and [x 16..31] x4, and two vpdpbusd give every
 * row's partial sums at once: int32 lane 4k + i of row k = the products of its bytes 4i..4i+3
 * and 16+4i..16+4i+3. The unsigned types (Q4_1, Q5_1) are the u8 operand; the signed ones
 * (Q8_0, Q4_0, Q5_0) are the s8 operand against x + 128 (a xor per token in the decode
 * tiles; the prefill tiles read bt_matmul's xu, made once by its caller), with 128 * (the
 * sum of each lane's four weights) subtracted by starting the accumulation at its negation
 * (computed once per quad and block, for every token).
 *
 * Bits: these are exactly the AVX2 pair tiles' outputs (kernels_avx2.c). Each output's four
 * integer lane sums are the same integers (exact arithmetic: how they are formed does not
 * matter), each block adds fma(fl(d_r * dx), float(isum lane), acc lane) to them in block
 * order, the min terms fl(m_r * s) of Q4_1/Q5_1 are summed in block order from 0 in a lane of
 * their own, and the result is ((l0 + l1) + (l2 + l3)) + min. So the AVX-512 level and the
 * AVX2 level agree bit for bit on these types, and batch invariance holds as there: nothing
 * of an output depends on the tile's shape or its place in it.
 *
 * The min terms: lane 4k + j of a quad's min accumulator for token group g holds row k x token
 * 4g + j, one multiply and one add per block for four tokens.
 */
typedef struct quad {
    __m512i lo, hi;
} quad;

/* 16 bytes at offset `off` of each of the four rows, row k in lane k. */
INLINE __m512i four16(const char *const *r, size_t off) {
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(r[0] + off)));
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[1] + off)), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[2] + off)), 2);
    return _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(r[3] + off)), 3);
}

INLINE quad nibbles_quad(const char *const *r, size_t off) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F);
    __m512i v = four16(r, off);
    quad q = {_mm512_and_si512(v, lo4), _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4)};
    return q;
}

/* The fifth bits of Q5_0/Q5_1 (a 32-bit word per row at `off`): bit j of row k, for the lo
 * vector (j < 16) or the hi one, as byte mask bit 16k + j % 16. */
INLINE __mmask64 high_bits(const char *const *r, size_t off, int hi) {
    uint64_t m = 0;
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        uint32_t h;
        memcpy(&h, r[k] + off, 4);
        m |= (uint64_t)(hi ? h >> 16 : h & 0xFFFF) << (16 * k);
    }
    return (__mmask64)m;
}

/* The types with tiles here: the legacy ones first, then the K types (kq_tile below). */
enum { L_Q4_1, L_Q5_1, L_Q8_0, L_Q4_0, L_Q5_0, K_Q4K, K_Q5K, K_Q6K };

/* The quad's quants: unsigned 0..31 for Q4_1/Q5_1, signed for the others. */
INLINE quad legacy_quad(int KIND, const char *const *r) {
    quad q;
    const __m512i k8 = _mm512_set1_epi8(8), k16 = _mm512_set1_epi8(16);
    switch (KIND) {
    case L_Q4_1:
        return nibbles_quad(r, 4);
    case L_Q5_1:
        q = nibbles_quad(r, 8);
        q.lo = _mm512_mask_add_epi8(q.lo, high_bits(r, 4, 0), q.lo, k16);
        q.hi = _mm512_mask_add_epi8(q.hi, high_bits(r, 4, 1), q.hi, k16);
        return q;
    case L_Q8_0:
        q.lo = four16(r, 2);
        q.hi = four16(r, 18);
        return q;
    case L_Q4_0:
        q = nibbles_quad(r, 2);
        q.lo = _mm512_sub_epi8(q.lo, k8);
        q.hi = _mm512_sub_epi8(q.hi, k8);
        return q;
    default: /* L_Q5_0: q4 + 16 * bit - 16 */
        q = nibbles_quad(r, 6);
        q.lo = _mm512_mask_sub_epi8(q.lo, (__mmask64)~high_bits(r, 2, 0), q.lo, k16);
        q.hi = _mm512_mask_sub_epi8(q.hi, (__mmask64)~high_bits(r, 2, 1), q.hi, k16);
        return q;
    }
}

INLINE int load32(const char *p) {
    int v;
    memcpy(&v, p, 4);
    return v;
}

/* The halves at offsets 0 and 2 of each row's block (d and, for Q4_1/Q5_1, m) as floats:
 * d_k in lanes 4k..4k+3 of *d, the second half in those of *m. */
INLINE void quad_scales(const char *const *r, __m512 *d, __m512 *m) {
    __m256i h = _mm256_permutevar8x32_epi32(
        _mm256_castsi128_si256(
            _mm_setr_epi32(load32(r[0]), load32(r[1]), load32(r[2]), load32(r[3]))),
        _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)); /* [d0 m0 d0 m0 | d1 m1 d1 m1 | ..] */
    __m512 f = _mm512_cvtph_ps(h);
    *d = _mm512_permute_ps(f, 0x00);
    *m = _mm512_permute_ps(f, 0x55);
}

/* The s of token t's block (0 past the tile's tokens). */
INLINE float s_of(const bt_q8 *xb, int64_t xs, int t, int NT) {
    return t < NT ? xb[t * xs].s : 0.0f;
}

/* Block i of each of the quad's rows, and the prefetch of its lines pf bytes ahead. */
INLINE void quad_block(const char *const *rows, int64_t i, size_t bsz, size_t pf, const char **r) {
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        r[k] = rows[k] + (size_t)i * bsz;
        for (size_t c = 0; c < bsz; c += 64)
            _mm_prefetch(r[k] + pf + c, _MM_HINT_T0);
    }
}

/* A quad tile's outputs: ((l0 + l1) + (l2 + l3)) of each row's four lanes, then plus (MIN > 0:
 * Q4_1, Q5_1) or minus (MIN < 0: Q4_K, Q5_K) its min term, lane 4k + t % 4 of the min
 * accumulator of token group t / 4. Rows with out_col -1 (a short quad's repeats) are dropped.
 * In vectors: two in-lane swaps and adds leave row k's sum in lane 4k (float addition is
 * commutative, so each lane holds exactly the scalar order's value), the min term is spread
 * to the row's lanes by an in-lane broadcast, and lanes 0, 4, 8, 12 are the four outputs. */
INLINE void quad_store(int MIN, const __m512 *acc, const __m512 *macc, int NT, float *out,
                       int64_t ldo, const int *out_col) {
    const __m512i pick = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    int whole = out_col[3] == out_col[0] + 3; /* four consecutive columns, none dropped */
    TOKENS {
        __m512 a = acc[t];
        a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(2, 3, 0, 1)));
        a = _mm512_add_ps(a, _mm512_permute_ps(a, _MM_SHUFFLE(1, 0, 3, 2)));
        if (MIN) {
            __m512 m = _mm512_permutevar_ps(macc[t / 4], _mm512_set1_epi32(t % 4));
            a = MIN > 0 ? _mm512_add_ps(a, m) : _mm512_sub_ps(a, m);
        }
        __m128 v = _mm512_castps512_ps128(_mm512_permutexvar_ps(pick, a));
        if (whole) {
            _mm_storeu_ps(out + t * ldo + out_col[0], v);
        } else {
            float o[4];
            _mm_storeu_ps(o, v);
            for (int k = 0; k < 4; k++)
                if (out_col[k] >= 0)
                    out[t * ldo + out_col[k]] = o[k];
        }
    }
}

/* The unsigned operand x + 128 of token block xt (the signed types): from ut (XU, prefill:
 * block xt's 32 bytes in xu; NULL otherwise) or by a xor. */
INLINE void x_plus_128(int XU, const bt_q8 *xt, const uint8_t *ut, __m512i *lo, __m512i *hi) {
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    if (XU) {
        *lo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)ut));
        *hi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(ut + 16)));
    } else {
        *lo =
            _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xt->qs)), k80);
        *hi = _mm512_xor_si512(
            _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xt->qs + 16))), k80);
    }
}

INLINE void legacy_tile(int KIND, int XU, const char *const *rows, size_t bsz, size_t pf,
                        const bt_q8 *x, const uint8_t *xu, int64_t xs, int NT, int64_t nb,
                        float *out, int64_t ldo, const int *out_col) {
    const int MIN = KIND == L_Q4_1 || KIND == L_Q5_1;
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    __m512 acc[BT_PREFILL_TOK], macc[BT_PREFILL_TOK / 4];
    TOKENS acc[t] = _mm512_setzero_ps();
    GROUPS macc[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *r[4];
        quad_block(rows, i, bsz, pf, r);
        __m512 dd, mm;
        quad_scales(r, &dd, &mm);
        quad q = legacy_quad(KIND, r);
        __m512i init = _mm512_setzero_si512();
        if (!MIN) /* -128 * (the sum of each lane's weights) */
            init = _mm512_sub_epi32(
                init, _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, k80, q.lo), k80, q.hi));
        const bt_q8 *xb = x + i;
        if (MIN)
            GROUPS {
                __m128 s4 = _mm_setr_ps(s_of(xb, xs, 4 * g, NT), s_of(xb, xs, 4 * g + 1, NT),
                                        s_of(xb, xs, 4 * g + 2, NT), s_of(xb, xs, 4 * g + 3, NT));
                __m512 sv = _mm512_broadcast_f32x4(s4);
                macc[g] = _mm512_add_ps(macc[g], _mm512_mul_ps(mm, sv));
            }
        TOKENS {
            const bt_q8 *xt = xb + t * xs;
            __m512i v;
            if (MIN) {
                __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xt->qs));
                __m512i xhi =
                    _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xt->qs + 16)));
                v = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, q.lo, xlo), q.hi, xhi);
            } else {
                __m512i ulo, uhi;
                x_plus_128(XU, xt, XU ? xu + 32 * (i + t * xs) : NULL, &ulo, &uhi);
                v = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, ulo, q.lo), uhi, q.hi);
            }
            __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xt->d));
            acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(v), acc[t]);
        }
    }
    quad_store(MIN, acc, macc, NT, out, ldo, out_col);
}

/*
 * K-quant tiles (Q4_K, Q5_K, Q6_K): the same quads, one 32-element sub-block (one bt_q8 block)
 * at a time, with exactly the AVX2 K tiles' bits (kernels_avx2.c, kq_tile): per output and
 * sub-block the same integer lane sums, fma(fl(fl(d * sc) * dx), float(isum), acc) in order,
 * and for Q4_K/Q5_K the min terms fl(fl(dmin * m) * s) summed in order and subtracted at the
 * end. The 6-bit scales and mins of a quad's four rows are unpacked together, one row per
 * lane (bytes 0..7 the scales, 8..15 the mins), and each sub-block's are spread over the
 * row's four lanes by one byte shuffle.
 *
 * Q6_K's quants are the s8 operand as w = q - 32, against x + 128 as for the signed legacy
 * types. Its int8 scales, one per 16 elements, multiply the lo and hi lane sums in float:
 * every term is an integer below 2^24 in magnitude (|sum| <= 4 * 127 * 32, |sc| <= 128), so
 * fma(sc_hi, float(hi), sc_lo * float(lo)) is exactly the AVX2 tile's int32
 * sc_lo * lo + sc_hi * hi.
 */
/* The half at `off` of each row as floats, row k in lanes 4k..4k+3 (Q6_K's d). */
INLINE __m512 quad_half(const char *const *r, size_t off) {
    int h[4];
    _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
        uint16_t v;
        memcpy(&v, r[k] + off, 2);
        h[k] = (int)((uint32_t)v << 16 | v); /* the half twice */
    }
    return _mm512_cvtph_ps(
        _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(_mm_setr_epi32(h[0], h[1], h[2], h[3])),
                                    _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3)));
}

/* The 12 bytes of 6-bit scales and mins at r[k] + 4, one row per lane, unpacked as
 * tensor_type.c's scale_min_k4: bytes 0..7 = sc[0..7], bytes 8..15 = m[0..7]. In 32-bit words
 * (u0, u1, u2 the packed ones): [u0 & k1, (u2 & k2) | ((u0 >> 6) & k3) << 4, u1 & k1,
 * ((u2 >> 4) & k2) | ((u1 >> 6) & k3) << 4]. */
INLINE __m512i k_scales_quad(const char *const *r) {
    __m512i u = four16(r, 4);
    __m512i a = _mm512_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0)); /* u0 u2 u1 u2 */
    __m512i b = _mm512_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0)); /* u0 u0 u1 u1 */
    const __m512i lo_mask = _mm512_set4_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f);
    const __m512i hi_mask = _mm512_set4_epi32(0x03030303, 0, 0x03030303, 0);
    __m512i lo = _mm512_and_si512(_mm512_srlv_epi32(a, _mm512_set4_epi32(4, 0, 0, 0)), lo_mask);
    __m512i hi = _mm512_and_si512(_mm512_srli_epi32(b, 6), hi_mask);
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 4));
}

/* Byte `byte` of each 128-bit lane of v as a float in each of the lane's four words, as uint8
 * or (sign) as int8. */
INLINE __m512 lane_byte(__m512i v, int byte, int sign) {
    __m512i w =
        _mm512_shuffle_epi8(v, _mm512_set1_epi32(sign ? (int)((uint32_t)byte << 24 | 0xFFFFFFu)
                                                      : (int)(0xFFFFFF00u | (uint32_t)byte)));
    return _mm512_cvtepi32_ps(sign ? _mm512_srai_epi32(w, 24) : w);
}

/* Sub-block j of a Q6_K quad as w = q - 32: element e of the 32 is bits 4 * (k >> 1) of
 * ql[64 n + 32 (k & 1) + e] and bits 2k of qh[32 n + e] (n = j / 4, k = j % 4). The four
 * sub-blocks of one n share their bytes: ql[64 n .. 64 n + 63] (l[0..3], 16 each) and
 * qh[32 n .. 32 n + 31] (h[0..1]), loaded once for them (k6_bytes). */
INLINE void k6_bytes(const char *const *r, int n, __m512i *l, __m512i *h) {
    for (int i = 0; i < 4; i++)
        l[i] = four16(r, (size_t)(64 * n + 16 * i));
    for (int i = 0; i < 2; i++)
        h[i] = four16(r, (size_t)(128 + 32 * n + 16 * i));
}

INLINE quad k6_quad(const __m512i *l6, const __m512i *h6, int k) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F), k32 = _mm512_set1_epi8(32);
    quad q;
    for (int h = 0; h < 2; h++) {
        __m512i l = _mm512_and_si512(_mm512_srli_epi16(l6[2 * (k & 1) + h], 4 * (k >> 1)), lo4);
        /* bits 2k, 2k + 1 of each qh byte to bits 4, 5: masked first, so that no bit crosses
         * into the neighbouring byte of the 16-bit shift */
        __m512i hb = _mm512_and_si512(h6[h], _mm512_set1_epi8((char)(3 << 2 * k)));
        hb = k < 2 ? _mm512_slli_epi16(hb, 4 - 2 * k) : k > 2 ? _mm512_srli_epi16(hb, 2) : hb;
        __m512i v = _mm512_sub_epi8(_mm512_or_si512(l, hb), k32);
        if (h == 0)
            q.lo = v;
        else
            q.hi = v;
    }
    return q;
}

INLINE void kq_tile(int KIND, int XU, const char *const *rows, size_t pf, const bt_q8 *x,
                    const uint8_t *xu, int64_t xs, int NT, int64_t nb, float *out, int64_t ldo,
                    const int *out_col) {
    const size_t bsz = KIND == K_Q4K   ? sizeof(bt_block_q4_k)
                       : KIND == K_Q5K ? 176
                                       : sizeof(bt_block_q6_k);
    const __m512i lo4 = _mm512_set1_epi8(0x0F), k16 = _mm512_set1_epi8(16),
                  k80 = _mm512_set1_epi8((char)0x80);
    __m512 acc[BT_PREFILL_TOK], macc[BT_PREFILL_TOK / 4];
    TOKENS acc[t] = _mm512_setzero_ps();
    GROUPS macc[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *r[4];
        quad_block(rows, i, bsz, pf, r);
        __m512 d, dmin = _mm512_setzero_ps();
        __m512i sm = _mm512_setzero_si512(), qh0 = sm, qh1 = sm, v0 = sm, v1 = sm;
        if (KIND == K_Q6K) {
            d = quad_half(r, 208);
            sm = four16(r, 192);
        } else {
            quad_scales(r, &d, &dmin);
            sm = k_scales_quad(r);
            if (KIND == K_Q5K) {
                qh0 = four16(r, 16);
                qh1 = four16(r, 32);
            }
        }
        const bt_q8 *xi = x + 8 * i;
        __m512i l6[4], h6[2]; /* Q6_K: the bytes of sub-blocks 4n..4n+3 */
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            quad q;
            __m512 dd = d, scl = _mm512_setzero_ps(), sch = scl;
            const __m512i zero = _mm512_setzero_si512();
            __m512i init_lo = zero, init_hi = zero; /* Q6_K: -128 * each lane's weights */
            if (KIND == K_Q6K) {
                if (j % 4 == 0)
                    k6_bytes(r, j / 4, l6, h6);
                q = k6_quad(l6, h6, j % 4);
                init_lo = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k80, q.lo));
                init_hi = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k80, q.hi));
                scl = lane_byte(sm, 2 * j, 1);
                sch = lane_byte(sm, 2 * j + 1, 1);
            } else {
                size_t qo = KIND == K_Q4K ? 16 : 48;
                if (j % 2 == 0) {
                    v0 = four16(r, qo + 32 * (size_t)(j / 2));
                    v1 = four16(r, qo + 32 * (size_t)(j / 2) + 16);
                }
                q.lo = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v0, 4) : v0, lo4);
                q.hi = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v1, 4) : v1, lo4);
                if (KIND == K_Q5K) {
                    const __m512i bit = _mm512_set1_epi8((char)(1 << j));
                    q.lo = _mm512_mask_add_epi8(q.lo, _mm512_test_epi8_mask(qh0, bit), q.lo, k16);
                    q.hi = _mm512_mask_add_epi8(q.hi, _mm512_test_epi8_mask(qh1, bit), q.hi, k16);
                }
                dd = _mm512_mul_ps(lane_byte(sm, j, 0), d);
                __m512 mm = _mm512_mul_ps(lane_byte(sm, 8 + j, 0), dmin);
                const bt_q8 *xb = xi + j;
                GROUPS {
                    __m128 s4 =
                        _mm_setr_ps(s_of(xb, xs, 4 * g, NT), s_of(xb, xs, 4 * g + 1, NT),
                                    s_of(xb, xs, 4 * g + 2, NT), s_of(xb, xs, 4 * g + 3, NT));
                    macc[g] = _mm512_add_ps(macc[g], _mm512_mul_ps(mm, _mm512_broadcast_f32x4(s4)));
                }
            }
            TOKENS {
                const bt_q8 *xt = xi + t * xs + j;
                __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xt->d)), v;
                if (KIND == K_Q6K) {
                    __m512i ulo, uhi;
                    x_plus_128(XU, xt, XU ? xu + 32 * (8 * i + j + t * xs) : NULL, &ulo, &uhi);
                    __m512i lo = _mm512_dpbusd_epi32(init_lo, ulo, q.lo);
                    __m512i hi = _mm512_dpbusd_epi32(init_hi, uhi, q.hi);
                    v = _mm512_fmadd_ps(sch, _mm512_cvtepi32_ps(hi),
                                        _mm512_mul_ps(scl, _mm512_cvtepi32_ps(lo)));
                } else {
                    __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xt->qs));
                    __m512i xhi =
                        _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xt->qs + 16)));
                    v = _mm512_cvtepi32_ps(
                        _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, q.lo, xlo), q.hi, xhi));
                }
                acc[t] = _mm512_fmadd_ps(sc, v, acc[t]);
            }
        }
    }
    quad_store(KIND == K_Q6K ? 0 : -1, acc, macc, NT, out, ldo, out_col);
}

/*
 * Rows per tile call (kernels_internal.h, tile_rows), in quads; a short last quad repeats its
 * last row (those outputs dropped). Each block's weights TILE_ROWS rows ahead, the next call's
 * rows as bt_matmul walks them, are prefetched. On this project's Xeon a single-stream decode
 * ran 23% faster with 16 rows per call than with 4 (tg128 265-271 -> 331 tok/s), most of it
 * from the longer prefetch distance (4-row tiles prefetching 16 rows ahead: 311-316).
 */
#define TILE_ROWS 16

/* XU: prefill, with bt_matmul's xu. */
INLINE void quad_rows(int KIND, int XU, const void *w, size_t rb, int n_rows, const bt_q8 *x,
                      const uint8_t *xu, int64_t xs, int NT, int64_t n, float *out, int64_t ldo) {
    static const size_t bsz[] = {sizeof(bt_block_q4_1), sizeof(bt_block_q5_1),
                                 sizeof(bt_block_q8_0), sizeof(bt_block_q4_0),
                                 sizeof(bt_block_q5_0)};
    const char *wb = w;
    for (int r0 = 0; r0 < n_rows; r0 += 4) {
        const char *rows[4];
        int col[4];
        for (int k = 0; k < 4; k++) {
            int r = r0 + k < n_rows ? r0 + k : n_rows - 1;
            rows[k] = wb + (size_t)r * rb;
            col[k] = r0 + k < n_rows ? r0 + k : -1;
        }
        if (KIND >= K_Q4K)
            kq_tile(KIND, XU, rows, TILE_ROWS * rb, x, xu, xs, NT, n / BT_QK_K, out, ldo, col);
        else
            legacy_tile(KIND, XU, rows, bsz[KIND], TILE_ROWS * rb, x, xu, xs, NT, n / BT_QK, out,
                        ldo, col);
    }
}

#define TILES(name, KIND)                                                                          \
    static void tile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x, int64_t xs,      \
                            int n_tok, int64_t n, float *out, int64_t ldo) {                       \
        BT_WITH_NT(n_tok, quad_rows(KIND, 0, w, rb, n_rows, x, NULL, xs, NT_, n, out, ldo))        \
    }                                                                                              \
    static void ptile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x,                 \
                             const uint8_t *xu, int64_t xs, int64_t n, float *out, int64_t ldo) {  \
        quad_rows(KIND, 1, w, rb, n_rows, x, xu, xs, BT_PREFILL_TOK, n, out, ldo);                 \
    }

TILES(q4_1, L_Q4_1)
TILES(q5_1, L_Q5_1)
TILES(q8_0, L_Q8_0)
TILES(q4_0, L_Q4_0)
TILES(q5_0, L_Q5_0)
TILES(q4_k, K_Q4K)
TILES(q5_k, K_Q5K)
TILES(q6_k, K_Q6K)

/*
 * Packed legacy types (kernels_internal.h, bt_block_q5_0x16 and its kin): the 16 rows of a
 * group in the 16 lanes, so group g's weights are one vector and token t's elements 4g..4g+3
 * one 32-bit broadcast (from memory, into vpdpbusd): 8 vpdpbusd per token and block give every
 * row's whole block sum, and one convert and one FMA serve the 16 rows. Per block, the quants
 * are four loads and their nibbles (Q8_0: eight loads). The signed types (Q5_0: eight masked
 * subtracts of 16, nohi; Q4_0: the nibble - 8; Q8_0) go against x + 128, with -128 * (each
 * row's weight sum) as the accumulation's start, once for every token; the unsigned ones
 * (Q4_1; Q5_1: eight masked adds of 16, hi) against x, and their min adds fma(m, s, acc) after
 * the block's fma. One token has a tile of its own, legacy16_one. Bits: the integer block sums
 * are exact, then the float operations of the scalar packed tile in kernels_scalar.c, in block
 * order.
 */
enum { P_Q5_0, P_Q4_1, P_Q8_0, P_Q4_0, P_Q5_1 };

/* Whether a packed legacy type has a min (Q4_1, Q5_1): unsigned quants against x, and no
 * x + 128 (xu). */
INLINE int p16_min(int KIND) {
    return KIND == P_Q4_1 || KIND == P_Q5_1;
}

INLINE size_t p16_size(int KIND) {
    return KIND == P_Q5_0   ? sizeof(bt_block_q5_0x16)
           : KIND == P_Q4_1 ? sizeof(bt_block_q4_1x16)
           : KIND == P_Q8_0 ? sizeof(bt_block_q8_0x16)
           : KIND == P_Q4_0 ? sizeof(bt_block_q4_0x16)
                            : sizeof(bt_block_q5_1x16);
}

/* The 8 group vectors of a packed legacy block's quants (unsigned for Q4_1, Q5_1). */
INLINE void p16_quants(int KIND, const char *bp, __m512i q[8]) {
    const __m512i lo4 = _mm512_set1_epi8(0x0F), k16 = _mm512_set1_epi8(16);
    if (KIND == P_Q8_0) {
        _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) q[g] =
            _mm512_loadu_si512(((const bt_block_q8_0x16 *)(const void *)bp)->qs[g]);
        return;
    }
    /* the nibble types begin with qs (the static assertion below); Q5_0 and Q5_1 then have
     * their fifth bits */
    const uint8_t(*qs)[64] = (const uint8_t(*)[64])(const void *)bp;
    const __m512i fifth =
        KIND == P_Q5_0   ? _mm512_loadu_si512(((const bt_block_q5_0x16 *)(const void *)bp)->nohi)
        : KIND == P_Q5_1 ? _mm512_loadu_si512(((const bt_block_q5_1x16 *)(const void *)bp)->hi)
                         : _mm512_setzero_si512();
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        __m512i v = _mm512_loadu_si512(qs[j]);
        __m512i l = _mm512_and_si512(v, lo4), h = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
        if (KIND == P_Q4_0) {
            l = _mm512_sub_epi8(l, _mm512_set1_epi8(8));
            h = _mm512_sub_epi8(h, _mm512_set1_epi8(8));
        } else if (KIND == P_Q5_0 || KIND == P_Q5_1) {
            __mmask64 ml = _mm512_test_epi8_mask(fifth, _mm512_set1_epi8((char)(1 << j)));
            __mmask64 mh = _mm512_test_epi8_mask(fifth, _mm512_set1_epi8((char)(16 << j)));
            l = KIND == P_Q5_0 ? _mm512_mask_sub_epi8(l, ml, l, k16)
                               : _mm512_mask_add_epi8(l, ml, l, k16);
            h = KIND == P_Q5_0 ? _mm512_mask_sub_epi8(h, mh, h, k16)
                               : _mm512_mask_add_epi8(h, mh, h, k16);
        }
        q[j] = l;
        q[j + 4] = h;
    }
}

_Static_assert(offsetof(bt_block_q4_0x16, qs) == 0 && offsetof(bt_block_q4_1x16, qs) == 0 &&
                   offsetof(bt_block_q5_0x16, qs) == 0 && offsetof(bt_block_q5_1x16, qs) == 0,
               "p16_quants reads qs at the block's start");

/* A packed legacy block's row scales (d) and, for Q4_1 and Q5_1, mins (m), as floats. */
INLINE void p16_scales(int KIND, const char *bp, __m512 *d, __m512 *m) {
    const size_t dof = KIND == P_Q5_0   ? offsetof(bt_block_q5_0x16, d)
                       : KIND == P_Q4_1 ? offsetof(bt_block_q4_1x16, d)
                       : KIND == P_Q8_0 ? offsetof(bt_block_q8_0x16, d)
                       : KIND == P_Q4_0 ? offsetof(bt_block_q4_0x16, d)
                                        : offsetof(bt_block_q5_1x16, d);
    const size_t mof =
        KIND == P_Q4_1 ? offsetof(bt_block_q4_1x16, m) : offsetof(bt_block_q5_1x16, m);
    *d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(bp + dof)));
    *m = p16_min(KIND) ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(bp + mof))) : *d;
}

INLINE void legacy16_tile(int KIND, int XU, int NT, const void *wg, int64_t nb, const bt_q8 *x,
                          const uint8_t *xu, int64_t xs, float *out, int64_t ldo, __mmask16 rows) {
    const int MIN = p16_min(KIND);
    const __m512i k80 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    const size_t bsz = p16_size(KIND);
    __m512 acc[BT_PREFILL_TOK];
    TOKENS acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *bp = (const char *)wg + (size_t)i * bsz;
        for (int c = 0; c < (int)bsz + 64; c += 64)
            _mm_prefetch(bp + 1024 + c, _MM_HINT_T0);
        __m512i q[8];
        p16_quants(KIND, bp, q);
        __m512i init = zero; /* the signed types: -128 * (each row's weight sum) */
        if (!MIN) {
            __m512i s0 = zero, s1 = zero;
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                s0 = _mm512_dpbusd_epi32(s0, k80, q[g]);
                s1 = _mm512_dpbusd_epi32(s1, k80, q[g + 4]);
            }
            init = _mm512_sub_epi32(zero, _mm512_add_epi32(s0, s1));
        }
        __m512 dd, mm;
        p16_scales(KIND, bp, &dd, &mm);
        uint8_t ub[NT_MAX][32]; /* the signed types without xu: x + 128 of the block's tokens */
        if (!MIN && !XU)
            TOKENS _mm256_storeu_si256(
                (__m256i *)ub[t],
                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[i + t * xs].qs),
                                 _mm256_set1_epi8((char)0x80)));
        TOKENS {
            const bt_q8 *xt = x + i + t * xs;
            const uint8_t *u = MIN ? (const uint8_t *)xt->qs : XU ? xu + 32 * (i + t * xs) : ub[t];
            __m512i a = init, c = zero;
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                __m512i u0 = _mm512_set1_epi32(load32((const char *)u + 4 * g));
                __m512i u1 = _mm512_set1_epi32(load32((const char *)u + 16 + 4 * g));
                a = MIN ? _mm512_dpbusd_epi32(a, q[g], u0) : _mm512_dpbusd_epi32(a, u0, q[g]);
                c = MIN ? _mm512_dpbusd_epi32(c, q[g + 4], u1)
                        : _mm512_dpbusd_epi32(c, u1, q[g + 4]);
            }
            __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xt->d));
            acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_add_epi32(a, c)), acc[t]);
            if (MIN)
                acc[t] = _mm512_fmadd_ps(mm, _mm512_set1_ps(xt->s), acc[t]);
        }
    }
    TOKENS _mm512_mask_storeu_ps(out + t * ldo, rows, acc[t]);
}

/* Packed legacy types at one token (decode), each group's quants made where its dot takes them
 * (made all first, as legacy16_tile does for its tokens to share, one token ran 1.2-1.35x
 * slower). The signed types need no xu and no weight sums here: their quants go in unsigned,
 * q + z (Q4_0: the nibble, z = 8; Q5_0: the nibble + 16 where its fifth bit is set, z = 16;
 * Q8_0: q ^ 0x80, z = 128), against the signed x, from -z * (the block's sum of x, bt_q8.sum).
 * The same exact block sums as legacy16_tile's and the same float operations: the same bits. */
INLINE void legacy16_one(int KIND, const void *wg, int64_t nb, const bt_q8 *x, float *out,
                         __mmask16 rows) {
    const int MIN = p16_min(KIND), z = KIND == P_Q8_0 ? 128 : KIND == P_Q5_0 ? 16 : 8;
    const __m512i lo4 = _mm512_set1_epi8(0x0F), k16 = _mm512_set1_epi8(16),
                  k80 = _mm512_set1_epi8((char)0x80);
    const size_t bsz = p16_size(KIND);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *bp = (const char *)wg + (size_t)i * bsz;
        for (int c = 0; c < (int)bsz + 64; c += 64)
            _mm_prefetch(bp + 1024 + c, _MM_HINT_T0);
        const bt_q8 *xt = x + i;
        __m512i a = MIN ? _mm512_setzero_si512()
                        : _mm512_set1_epi32(-z * (xt->sum[0] + xt->sum[1])),
                c = _mm512_setzero_si512();
        const __m512i fifth =
            KIND == P_Q5_0 ? _mm512_loadu_si512(((const bt_block_q5_0x16 *)(const void *)bp)->nohi)
            : KIND == P_Q5_1 ? _mm512_loadu_si512(((const bt_block_q5_1x16 *)(const void *)bp)->hi)
                             : lo4;
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            __m512i l, h;
            if (KIND == P_Q8_0) {
                const bt_block_q8_0x16 *b = (const bt_block_q8_0x16 *)(const void *)bp;
                l = _mm512_xor_si512(_mm512_loadu_si512(b->qs[j]), k80);
                h = _mm512_xor_si512(_mm512_loadu_si512(b->qs[j + 4]), k80);
            } else {
                __m512i v = _mm512_loadu_si512(((const uint8_t(*)[64])(const void *)bp)[j]);
                l = _mm512_and_si512(v, lo4);
                h = _mm512_and_si512(_mm512_srli_epi16(v, 4), lo4);
                /* + 16 where the fifth bit is set: Q5_0's nohi bit clear, Q5_1's hi bit set */
                const __m512i bl = _mm512_set1_epi8((char)(1 << j)),
                              bh = _mm512_set1_epi8((char)(16 << j));
                if (KIND == P_Q5_0) {
                    l = _mm512_mask_add_epi8(l, _mm512_testn_epi8_mask(fifth, bl), l, k16);
                    h = _mm512_mask_add_epi8(h, _mm512_testn_epi8_mask(fifth, bh), h, k16);
                } else if (KIND == P_Q5_1) {
                    l = _mm512_mask_add_epi8(l, _mm512_test_epi8_mask(fifth, bl), l, k16);
                    h = _mm512_mask_add_epi8(h, _mm512_test_epi8_mask(fifth, bh), h, k16);
                }
            }
            a = _mm512_dpbusd_epi32(a, l, _mm512_set1_epi32(load32((const char *)xt->qs + 4 * j)));
            c = _mm512_dpbusd_epi32(c, h,
                                    _mm512_set1_epi32(load32((const char *)xt->qs + 16 + 4 * j)));
        }
        __m512 dd, mm;
        p16_scales(KIND, bp, &dd, &mm);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(dd, _mm512_set1_ps(xt->d)),
                              _mm512_cvtepi32_ps(_mm512_add_epi32(a, c)), acc);
        if (MIN)
            acc = _mm512_fmadd_ps(mm, _mm512_set1_ps(xt->s), acc);
    }
    _mm512_mask_storeu_ps(out, rows, acc);
}

#define PACKED_LEGACY(name, KIND)                                                                  \
    static void packed_tile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,  \
                                   int64_t xs, int n_tok, float *out, int64_t ldo,                 \
                                   uint32_t rows) {                                                \
        if (n_tok == 1)                                                                            \
            legacy16_one(KIND, wg, nb, x, out, (__mmask16)rows);                                   \
        else if (xu && !p16_min(KIND))                                                             \
            BT_WITH_NT(n_tok,                                                                      \
                       legacy16_tile(KIND, 1, NT_, wg, nb, x, xu, xs, out, ldo, (__mmask16)rows))  \
        else                                                                                       \
            BT_WITH_NT(n_tok, legacy16_tile(KIND, 0, NT_, wg, nb, x, NULL, xs, out, ldo,           \
                                            (__mmask16)rows))                                      \
    }                                                                                              \
    static void packed_ptile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu, \
                                    int64_t xs, int n_tok, float *out, int64_t ldo,                \
                                    uint32_t rows) {                                               \
        (void)n_tok; /* BT_PREFILL_TOK */                                                          \
        legacy16_tile(KIND, !p16_min(KIND), BT_PREFILL_TOK, wg, nb, x, xu, xs, out, ldo,           \
                      (__mmask16)rows);                                                            \
    }

PACKED_LEGACY(q5_0, P_Q5_0)
PACKED_LEGACY(q4_1, P_Q4_1)
PACKED_LEGACY(q8_0, P_Q8_0)
PACKED_LEGACY(q4_0, P_Q4_0)
PACKED_LEGACY(q5_1, P_Q5_1)

/*
 * Packed Q4_K, Q5_K and Q6_K (kernels_internal.h): the same 16 rows in 16 lanes, one
 * sub-block (one bt_q8 block) at a time, so each token's sub-block is 8 vpdpbusd with its
 * 4-byte groups broadcast from memory, one convert and one or two FMAs for the 16 rows.
 *   Q4_K: unsigned quants against signed x; per sub-block, fma(fl(fl(d * sc) * dx), isum,
 *         acc), then fma(-fl(dmin * m), s, acc): the min term goes into the same accumulator,
 *         so 16 tokens' accumulators fit the registers. The 6-bit scales and mins come from
 *         the three words per row as scale_min_k4 unpacks them, all rows at once.
 *   Q5_K: as Q4_K, each group's quants + 16 where bit j of its fifth-bit vector is set.
 *   Q6_K: signed quants (q - 32) against x + 128, less 128 * (the weight sums) of each
 *         16-element half; the two halves' exact sums times their int8 scales are one exact
 *         integer below 2^24 (fma(sc_hi, hi, sc_lo * lo), as in kq_tile), then
 *         fma(fl(d * dx), that, acc).
 * The scalar packed tile in kernels_scalar.c gives the same bits.
 */
INLINE __m512 lane_u8f(__m512i v, int byte) { /* byte `byte` of each 32-bit lane, as a float */
    return _mm512_cvtepi32_ps(
        _mm512_and_si512(_mm512_srli_epi32(v, 8 * byte), _mm512_set1_epi32(0xFF)));
}

INLINE __m512 lane_s8f(__m512i v, int byte) { /* the same, as int8 */
    return _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * byte), 24));
}

INLINE void q45_kx16_tile(int Q5, int NT, const void *wg, int64_t nb, const bt_q8 *x, int64_t xs,
                          float *out, int64_t ldo, __mmask16 rows) {
    const size_t bsz = Q5 ? sizeof(bt_block_q5_kx16) : sizeof(bt_block_q4_kx16);
    const __m512i lo4 = _mm512_set1_epi8(0x0F), k3f = _mm512_set1_epi8(0x3F),
                  k03 = _mm512_set1_epi8(0x03), k16 = _mm512_set1_epi8(16),
                  zero = _mm512_setzero_si512();
    __m512 acc[BT_PREFILL_TOK];
    TOKENS acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *bp = (const char *)wg + (size_t)i * bsz;
        const bt_block_q4_kx16 *b = (const bt_block_q4_kx16 *)(const void *)bp;
        const uint8_t(*qh)[64] = ((const bt_block_q5_kx16 *)(const void *)bp)->qh; /* Q5 */
        __m512i u0 = _mm512_loadu_si512(b->sm[0]), u1 = _mm512_loadu_si512(b->sm[1]),
                u2 = _mm512_loadu_si512(b->sm[2]);
        __m512i sc03 = _mm512_and_si512(u0, k3f), m03 = _mm512_and_si512(u1, k3f);
        __m512i sc47 =
            _mm512_or_si512(_mm512_and_si512(u2, lo4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u0, 6), k03), 4));
        __m512i m47 =
            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(u2, 4), lo4),
                            _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(u1, 6), k03), 4));
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->d));
        __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->dmin));
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            for (int c = 0; c < (int)bsz; c += 64 * 8) /* the next block, over its 8 sub-blocks */
                _mm_prefetch(bp + bsz + c + 64 * j, _MM_HINT_T0);
            __m512i q[8];
            _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) {
                __m512i v = _mm512_loadu_si512(b->qs[j / 2][g]);
                q[g] = _mm512_and_si512(j % 2 ? _mm512_srli_epi16(v, 4) : v, lo4);
                if (Q5) /* + 16 where bit j of the group's fifth bits is set */
                    q[g] = _mm512_mask_add_epi8(
                        q[g],
                        _mm512_test_epi8_mask(_mm512_loadu_si512(qh[g]),
                                              _mm512_set1_epi8((char)(1 << j))),
                        q[g], k16);
            }
            __m512 dd = _mm512_mul_ps(d, lane_u8f(j < 4 ? sc03 : sc47, j % 4));
            __m512 mm = _mm512_mul_ps(dmin, lane_u8f(j < 4 ? m03 : m47, j % 4));
            const bt_q8 *xj = x + 8 * i + j;
            TOKENS {
                const bt_q8 *xt = xj + t * xs;
                __m512i a = zero, c = zero;
                _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                    a = _mm512_dpbusd_epi32(
                        a, q[g], _mm512_set1_epi32(load32((const char *)xt->qs + 4 * g)));
                    c = _mm512_dpbusd_epi32(
                        c, q[g + 4], _mm512_set1_epi32(load32((const char *)xt->qs + 16 + 4 * g)));
                }
                __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xt->d));
                acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(_mm512_add_epi32(a, c)), acc[t]);
                acc[t] = _mm512_fnmadd_ps(mm, _mm512_set1_ps(xt->s), acc[t]);
            }
        }
    }
    TOKENS _mm512_mask_storeu_ps(out + t * ldo, rows, acc[t]);
}

/* Group g of sub-block j = 4n + m of a packed Q6_K super-block: its 16 rows' quants unsigned,
 * q + 32 in 0..63: the low 4 bits of the nibble's byte, or'ed with the high bits 2m, 2m + 1 of
 * each qh byte moved to bits 4, 5 (masked first, so that no bit crosses into the neighbouring
 * byte of the 16-bit shift). One vpternlog for the and and the or made the 4-token tile 3%
 * slower (bench_kernels), so it is two operations. */
INLINE __m512i q6_kx16_quants(const bt_block_q6_kx16 *b, int j, int g) {
    const int n = j / 4, m = j % 4;
    __m512i l = _mm512_loadu_si512(b->ql[n][m & 1][g]);
    l = m >> 1 ? _mm512_srli_epi16(l, 4) : l;
    __m512i h =
        _mm512_and_si512(_mm512_loadu_si512(b->qh[n][g]), _mm512_set1_epi8((char)(3 << 2 * m)));
    h = m < 2 ? _mm512_slli_epi16(h, 4 - 2 * m) : m > 2 ? _mm512_srli_epi16(h, 2) : h;
    return _mm512_or_si512(_mm512_and_si512(l, _mm512_set1_epi8(0x0F)), h);
}

INLINE void q6_kx16_tile(int XU, int NT, const bt_block_q6_kx16 *b, int64_t nb, const bt_q8 *x,
                         const uint8_t *xu, int64_t xs, float *out, int64_t ldo, __mmask16 rows) {
    const __m512i k32 = _mm512_set1_epi8(32), k80 = _mm512_set1_epi8((char)0x80),
                  zero = _mm512_setzero_si512();
    __m512 acc[BT_PREFILL_TOK];
    TOKENS acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b++) {
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->d));
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            for (int c = 0; c < 3360; c += 64 * 8)
                _mm_prefetch((const char *)(b + 1) + c + 64 * j, _MM_HINT_T0);
            __m512i q[8];
            _Pragma("GCC unroll 8") for (int g = 0; g < 8; g++) q[g] =
                _mm512_sub_epi8(q6_kx16_quants(b, j, g), k32);
            __m512i s0 = zero, s1 = zero;
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                s0 = _mm512_dpbusd_epi32(s0, k80, q[g]);
                s1 = _mm512_dpbusd_epi32(s1, k80, q[g + 4]);
            }
            __m512i init_lo = _mm512_sub_epi32(zero, s0), init_hi = _mm512_sub_epi32(zero, s1);
            __m512i scw = _mm512_loadu_si512(b->sc[j / 2]);
            __m512 scl = lane_s8f(scw, 2 * (j % 2)), sch = lane_s8f(scw, 2 * (j % 2) + 1);
            uint8_t ub[NT_MAX][32]; /* without xu: x + 128 of the sub-block's tokens */
            if (!XU)
                TOKENS _mm256_storeu_si256(
                    (__m256i *)ub[t],
                    _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x[8 * i + j + t * xs].qs),
                                     _mm256_set1_epi8((char)0x80)));
            TOKENS {
                const bt_q8 *xt = x + 8 * i + j + t * xs;
                const uint8_t *u = XU ? xu + 32 * (8 * i + j + t * xs) : ub[t];
                __m512i a = init_lo, c = init_hi;
                _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                    a = _mm512_dpbusd_epi32(a, _mm512_set1_epi32(load32((const char *)u + 4 * g)),
                                            q[g]);
                    c = _mm512_dpbusd_epi32(
                        c, _mm512_set1_epi32(load32((const char *)u + 16 + 4 * g)), q[g + 4]);
                }
                __m512 v = _mm512_fmadd_ps(sch, _mm512_cvtepi32_ps(c),
                                           _mm512_mul_ps(scl, _mm512_cvtepi32_ps(a)));
                acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(xt->d)), v, acc[t]);
            }
        }
    }
    TOKENS _mm512_mask_storeu_ps(out + t * ldo, rows, acc[t]);
}

/* Packed Q6_K at one token (decode), as the AVX2 level's q6_kx16_one: no xu and no weight
 * sums. The quants go in unsigned, q + 32 in 0..63, against the signed x, from -32 * (each
 * half's sum of x, bt_q8.sum): the same exact lane sums as q6_kx16_tile's, used in the same
 * order, so the same bits. Each group's quants are made where its dot takes them: made all
 * first, as in the tile, one token ran 45% slower. */
INLINE void q6_kx16_one(const bt_block_q6_kx16 *b, int64_t nb, const bt_q8 *x, float *out,
                        __mmask16 rows) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b++) {
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)b->d));
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            for (int c = 0; c < (int)sizeof *b; c += 64 * 8)
                _mm_prefetch((const char *)(b + 1) + c + 64 * j, _MM_HINT_T0);
            const bt_q8 *xt = x + 8 * i + j;
            __m512i a = _mm512_set1_epi32(-32 * xt->sum[0]),
                    c = _mm512_set1_epi32(-32 * xt->sum[1]);
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; g++) {
                a = _mm512_dpbusd_epi32(a, q6_kx16_quants(b, j, g),
                                        _mm512_set1_epi32(load32((const char *)xt->qs + 4 * g)));
                c = _mm512_dpbusd_epi32(
                    c, q6_kx16_quants(b, j, g + 4),
                    _mm512_set1_epi32(load32((const char *)xt->qs + 16 + 4 * g)));
            }
            __m512i scw = _mm512_loadu_si512(b->sc[j / 2]);
            __m512 scl = lane_s8f(scw, 2 * (j % 2)), sch = lane_s8f(scw, 2 * (j % 2) + 1);
            __m512 v = _mm512_fmadd_ps(sch, _mm512_cvtepi32_ps(c),
                                       _mm512_mul_ps(scl, _mm512_cvtepi32_ps(a)));
            acc = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(xt->d)), v, acc);
        }
    }
    _mm512_mask_storeu_ps(out, rows, acc);
}

#define PACKED_K45(name, Q5)                                                                       \
    static void packed_tile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,  \
                                   int64_t xs, int n_tok, float *out, int64_t ldo,                 \
                                   uint32_t rows) {                                                \
        (void)xu;                                                                                  \
        BT_WITH_NT(n_tok, q45_kx16_tile(Q5, NT_, wg, nb, x, xs, out, ldo, (__mmask16)rows))        \
    }                                                                                              \
    static void packed_ptile_##name(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu, \
                                    int64_t xs, int n_tok, float *out, int64_t ldo,                \
                                    uint32_t rows) {                                               \
        (void)xu, (void)n_tok; /* BT_PREFILL_TOK */                                                \
        q45_kx16_tile(Q5, BT_PREFILL_TOK, wg, nb, x, xs, out, ldo, (__mmask16)rows);               \
    }

PACKED_K45(q4_k, 0)
PACKED_K45(q5_k, 1)

static void packed_tile_q6_k(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,
                             int64_t xs, int n_tok, float *out, int64_t ldo, uint32_t rows) {
    if (n_tok == 1)
        q6_kx16_one(wg, nb, x, out, (__mmask16)rows);
    else if (xu)
        BT_WITH_NT(n_tok, q6_kx16_tile(1, NT_, wg, nb, x, xu, xs, out, ldo, (__mmask16)rows))
    else
        BT_WITH_NT(n_tok, q6_kx16_tile(0, NT_, wg, nb, x, NULL, xs, out, ldo, (__mmask16)rows))
}

static void packed_ptile_q6_k(const void *wg, int64_t nb, const bt_q8 *x, const uint8_t *xu,
                              int64_t xs, int n_tok, float *out, int64_t ldo, uint32_t rows) {
    (void)n_tok;
    q6_kx16_tile(1, BT_PREFILL_TOK, wg, nb, x, xu, xs, out, ldo, (__mmask16)rows);
}

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
    t->tile_rows = TILE_ROWS;
    t->tile_q8[BT_TYPE_Q4_1] = tile_q4_1;
    t->ptile_q8[BT_TYPE_Q4_1] = ptile_q4_1;
    t->tile_q8[BT_TYPE_Q5_1] = tile_q5_1;
    t->ptile_q8[BT_TYPE_Q5_1] = ptile_q5_1;
    t->tile_q8[BT_TYPE_Q8_0] = tile_q8_0;
    t->ptile_q8[BT_TYPE_Q8_0] = ptile_q8_0;
    t->ptile_xu[BT_TYPE_Q8_0] = true; /* Q4_0, Q5_0 and Q6_K: as at the AVX2 level */
    t->tile_q8[BT_TYPE_Q4_0] = tile_q4_0;
    t->ptile_q8[BT_TYPE_Q4_0] = ptile_q4_0;
    t->tile_q8[BT_TYPE_Q5_0] = tile_q5_0;
    t->ptile_q8[BT_TYPE_Q5_0] = ptile_q5_0;
    t->tile_q8[BT_TYPE_Q4_K] = tile_q4_k;
    t->ptile_q8[BT_TYPE_Q4_K] = ptile_q4_k;
    t->tile_q8[BT_TYPE_Q5_K] = tile_q5_k;
    t->ptile_q8[BT_TYPE_Q5_K] = ptile_q5_k;
    t->tile_q8[BT_TYPE_Q6_K] = tile_q6_k;
    t->ptile_q8[BT_TYPE_Q6_K] = ptile_q6_k;
    t->packed_tile[BT_TYPE_Q5_0] = packed_tile_q5_0;
    t->packed_ptile[BT_TYPE_Q5_0] = packed_ptile_q5_0;
    t->packed_xu[BT_TYPE_Q5_0] = true;
    t->packed_tile[BT_TYPE_Q8_0] = packed_tile_q8_0;
    t->packed_ptile[BT_TYPE_Q8_0] = packed_ptile_q8_0;
    t->packed_xu[BT_TYPE_Q8_0] = true;
    t->packed_tile[BT_TYPE_Q4_0] = packed_tile_q4_0;
    t->packed_ptile[BT_TYPE_Q4_0] = packed_ptile_q4_0;
    t->packed_xu[BT_TYPE_Q4_0] = true;
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
}
