/*
 * kernels_avx512.c - AVX-512 VNNI kernels: tiles of the legacy quant types (Q4_1, Q5_1, Q8_0,
 * Q4_0, Q5_0) and the float weight row dots. The other types keep their AVX2 kernels
 * (dispatch.c fills the AVX2 table first). Compiled with AVX-512F/BW/VL/DQ/VNNI and only
 * called after dispatch.c has checked CPUID.
 *
 * Quant dots use vpdpbusd (u8 x s8 -> int32, one instruction instead of maddubs + madd) on
 * 512-bit vectors.
 */
#include <immintrin.h>
#include <string.h>

#include "kernels_internal.h"
#include "simd_avx2.h"

#define NT_MAX BT_KERNEL_MAX_TOK
#define TOKENS _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)
#define GROUPS _Pragma("GCC unroll 2") for (int g = 0; g < (NT + 3) / 4; g++)

/*
 * Tiles of the legacy types (kernels_internal.h, bt_tile_q8_fn and bt_ptile_q8_fn): four rows
 * A..D in the four 128-bit lanes of a 512-bit vector x NT tokens (up to BT_KERNEL_MAX_TOK for
 * decode, BT_PREFILL_TOK for prompts), one block at a time. The quad's quants are two vectors
 * lo = [A 0..15 | B 0..15 | C 0..15 | D 0..15] and hi = [.. 16..31 ..], each token's block is
 * broadcast to every lane as [x 0..15] x4 and [x 16..31] x4, and two vpdpbusd give every
 * row's partial sums at once: int32 lane 4k + i of row k = the products of its bytes 4i..4i+3
 * and 16+4i..16+4i+3. The unsigned types (Q4_1, Q5_1) are the u8 operand; the signed ones
 * (Q8_0, Q4_0, Q5_0) are the s8 operand against x + 128 (a xor per token, shared by the
 * quad's rows), with 128 * (the sum of each lane's four weights) subtracted by starting the
 * accumulation at its negation (computed once per quad and block, for every token).
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

enum { L_Q4_1, L_Q5_1, L_Q8_0, L_Q4_0, L_Q5_0 };

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

/* The halves at offsets 0 and 2 of each row's block (d and, for Q4_1/Q5_1, m) as floats:
 * d_k in lanes 4k..4k+3 of *d, the second half in those of *m. */
INLINE int load32(const char *p) {
    int v;
    memcpy(&v, p, 4);
    return v;
}

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

INLINE void legacy_tile(int KIND, const char *const *rows, size_t bsz, size_t pf, const bt_q8 *x,
                        int64_t xs, int NT, int64_t nb, float *out, int64_t ldo,
                        const int *out_col) {
    const int MIN = KIND == L_Q4_1 || KIND == L_Q5_1;
    const __m512i k80 = _mm512_set1_epi8((char)0x80);
    __m512 acc[BT_PREFILL_TOK], macc[2];
    TOKENS acc[t] = _mm512_setzero_ps();
    GROUPS macc[g] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const char *r[4];
        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++) {
            r[k] = rows[k] + (size_t)i * bsz;
            _mm_prefetch(r[k] + pf, _MM_HINT_T0);
        }
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
            __m512i xlo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)xt->qs));
            __m512i xhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(xt->qs + 16)));
            __m512i v;
            if (MIN) {
                v = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, q.lo, xlo), q.hi, xhi);
            } else {
                v = _mm512_dpbusd_epi32(init, _mm512_xor_si512(xlo, k80), q.lo);
                v = _mm512_dpbusd_epi32(v, _mm512_xor_si512(xhi, k80), q.hi);
            }
            __m512 sc = _mm512_mul_ps(dd, _mm512_set1_ps(xt->d));
            acc[t] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(v), acc[t]);
        }
    }
    float m[2][16];
    GROUPS _mm512_storeu_ps(m[g], macc[g]);
    TOKENS {
        float a[16];
        _mm512_storeu_ps(a, acc[t]);
        for (int k = 0; k < 4; k++) {
            float v = (a[4 * k] + a[4 * k + 1]) + (a[4 * k + 2] + a[4 * k + 3]);
            if (out_col[k] >= 0)
                out[t * ldo + out_col[k]] = MIN ? v + m[t / 4][4 * k + t % 4] : v;
        }
    }
}

/* Rows in quads; a short last quad repeats its last row (those outputs dropped). The next
 * tile's rows (4 ahead, as bt_matmul walks them) are prefetched. */
INLINE void legacy_rows(int KIND, const void *w, size_t rb, int n_rows, const bt_q8 *x, int64_t xs,
                        int NT, int64_t n, float *out, int64_t ldo) {
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
        legacy_tile(KIND, rows, bsz[KIND], 4 * rb, x, xs, NT, n / BT_QK, out, ldo, col);
    }
}

#define LEGACY(name, KIND)                                                                         \
    static void tile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x, int64_t xs,      \
                            int n_tok, int64_t n, float *out, int64_t ldo) {                       \
        BT_WITH_NT(n_tok, legacy_rows(KIND, w, rb, n_rows, x, xs, NT_, n, out, ldo))               \
    }                                                                                              \
    static void ptile_##name(const void *w, size_t rb, int n_rows, const bt_q8 *x, int64_t xs,     \
                             int64_t n, float *out, int64_t ldo) {                                 \
        legacy_rows(KIND, w, rb, n_rows, x, xs, BT_PREFILL_TOK, n, out, ldo);                      \
    }

LEGACY(q4_1, L_Q4_1)
LEGACY(q5_1, L_Q5_1)
LEGACY(q8_0, L_Q8_0)
LEGACY(q4_0, L_Q4_0)
LEGACY(q5_0, L_Q5_0)

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
    t->tile_q8[BT_TYPE_Q4_1] = tile_q4_1;
    t->ptile_q8[BT_TYPE_Q4_1] = ptile_q4_1;
    t->tile_q8[BT_TYPE_Q5_1] = tile_q5_1;
    t->ptile_q8[BT_TYPE_Q5_1] = ptile_q5_1;
    t->tile_q8[BT_TYPE_Q8_0] = tile_q8_0;
    t->ptile_q8[BT_TYPE_Q8_0] = ptile_q8_0;
    t->tile_q8[BT_TYPE_Q4_0] = tile_q4_0;
    t->ptile_q8[BT_TYPE_Q4_0] = ptile_q4_0;
    t->tile_q8[BT_TYPE_Q5_0] = tile_q5_0;
    t->ptile_q8[BT_TYPE_Q5_0] = ptile_q5_0;
    t->rowdot_f32[BT_TYPE_F32] = rowdot_f32;
    t->rowdot_f32[BT_TYPE_F16] = rowdot_f16;
    t->rowdot_f32[BT_TYPE_BF16] = rowdot_bf16;
}
