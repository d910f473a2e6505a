/*
 * llamacpp_avx2.c - llama.cpp's CPU arithmetic (llamacpp.h). Compiled with -mavx2 -mfma
 * -mf16c and -ffp-contract=off: every fused multiply-add below is written as one (fmaf or
 * _mm256_fmadd_ps) exactly where GCC fuses ggml's code, and nowhere else. Called only after
 * bt_lc_cpu_ok().
 *
 * ggml's 16-lane AVX-512 sums are kept here as two 8-lane halves (or lane-major arrays):
 * a lane's FMAs give the same bits whatever the vector width, and the reductions follow the
 * add trees of GCC's _mm512_reduce_add_ps and ggml's GGML_F32x16_REDUCE.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/ggml_expf.h" /* the softmax's exp */
#include "kernels/simd_avx2.h"
#include "llamacpp.h"

/* ---- weight products ---- */

/* dot_us as the 8 float lanes ggml's mul_sum_us8_pairs_float gives. */
INLINE __m256 dot_us_f(__m256i u, __m256i s) {
    return _mm256_cvtepi32_ps(dot_us(u, s));
}

/* A weight row against NT token rows (x[t] = x + t * xs blocks), each token with its own
 * accumulators: every token's sums are exactly ggml's single vec_dot; only the unpacked
 * weights are shared. */

/* ggml_vec_dot_q4_1_q8_1. */
INLINE void dot_q4_1(const bt_block_q4_1 *w, const bt_q8 *x, int64_t xs, int NT, int64_t nb,
                     float *out, int64_t ldo) {
    __m256 acc[4];
    float summs[4];
    for (int t = 0; t < NT; t++) {
        acc[t] = _mm256_setzero_ps();
        summs[t] = 0.0f;
    }
    for (int64_t i = 0; i < nb; i++) {
        float dw = half_f32(w[i].d), mw = half_f32(w[i].m);
        __m256i q = unpack_nibbles(w[i].qs);
        for (int t = 0; t < NT; t++) {
            const bt_q8 *y = x + t * xs + i;
            summs[t] = fmaf(mw, y->s, summs[t]);
            __m256 p = dot_us_f(q, _mm256_loadu_si256((const __m256i *)y->qs));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y->d), p, acc[t]);
        }
    }
    for (int t = 0; t < NT; t++)
        out[t * ldo] = hsum8(acc[t]) + summs[t];
}

/* ggml_vec_dot_q8_0_q8_0. */
INLINE void dot_q8_0(const bt_block_q8_0 *w, const bt_q8 *x, int64_t xs, int NT, int64_t nb,
                     float *out, int64_t ldo) {
    __m256 acc[4];
    for (int t = 0; t < NT; t++)
        acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        float dw = half_f32(w[i].d);
        __m256i qw = _mm256_loadu_si256((const __m256i *)w[i].qs);
        __m256i aw = _mm256_sign_epi8(qw, qw);
        for (int t = 0; t < NT; t++) {
            const bt_q8 *y = x + t * xs + i;
            __m256i qy = _mm256_loadu_si256((const __m256i *)y->qs);
            __m256 p = dot_us_f(aw, _mm256_sign_epi8(qy, qw));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y->d), p, acc[t]);
        }
    }
    for (int t = 0; t < NT; t++)
        out[t * ldo] = hsum8(acc[t]);
}

/* Instances with a constant token count, so the accumulators stay in registers. */
#define DOT_NT(name, block_t, nt)                                                                  \
    static void name##_##nt(const void *w, const bt_q8 *x, int64_t xs, int64_t nb, float *out,     \
                            int64_t ldo) {                                                         \
        name((const block_t *)w, x, xs, nt, nb, out, ldo);                                         \
    }
#define DOT_ALL(name, block_t)                                                                     \
    DOT_NT(name, block_t, 1)                                                                       \
    DOT_NT(name, block_t, 2) DOT_NT(name, block_t, 3) DOT_NT(name, block_t, 4)
DOT_ALL(dot_q4_1, bt_block_q4_1)
DOT_ALL(dot_q8_0, bt_block_q8_0)

typedef void (*dot_fn)(const void *w, const bt_q8 *x, int64_t xs, int64_t nb, float *out,
                       int64_t ldo);

void bt_lc_matmul(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, const bt_q8 *xq,
                  int64_t n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1) {
    static const dot_fn q4_1[4] = {dot_q4_1_1, dot_q4_1_2, dot_q4_1_3, dot_q4_1_4};
    static const dot_fn q8_0[4] = {dot_q8_0_1, dot_q8_0_2, dot_q8_0_3, dot_q8_0_4};
    const dot_fn *fns = type == BT_TYPE_Q4_1 ? q4_1 : q8_0;
    int64_t nb = n_cols / 32;
    for (int64_t t0 = 0; t0 < n_tok; t0 += 4) {
        int nt = n_tok - t0 < 4 ? (int)(n_tok - t0) : 4;
        for (int64_t r = r0; r < r1; r++)
            fns[nt - 1]((const char *)w + (size_t)r * row_bytes, xq + (size_t)(t0 * nb), nb, nb,
                        y + t0 * ldy + r, ldy);
    }
}

/* ---- element-wise ---- */

void bt_lc_rope(float *x, const float *cs, int n_heads, int D) {
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * D;
        for (int i = 0; i < D; i += 2) {
            float x0 = v[i], x1 = v[i + 1], c = cs[i], s = cs[i + 1];
            v[i] = fmaf(x0, c, -(x1 * s));
            v[i + 1] = fmaf(x0, s, x1 * c);
        }
    }
}

/* ---- attention ---- */

/* GCC's _mm512_reduce_add_ps of the 16 lanes lo (0..7), hi (8..15): hi + lo, then the
 * 128-bit halves, then (0+2) + (1+3), which is hsum_float_8 of hi + lo. */
INLINE float reduce16(__m256 lo, __m256 hi) {
    return hsum8(_mm256_add_ps(hi, lo));
}

/* ggml's GGML_F32x16_REDUCE of four 16-lane accumulators c[k] = (lo, hi): c0 + c2, c1 + c3,
 * then their sum, then reduce16. */
INLINE float reduce4x16(const __m256 c[4][2]) {
    __m256 lo0 = _mm256_add_ps(c[0][0], c[2][0]), hi0 = _mm256_add_ps(c[0][1], c[2][1]);
    __m256 lo1 = _mm256_add_ps(c[1][0], c[3][0]), hi1 = _mm256_add_ps(c[1][1], c[3][1]);
    return reduce16(_mm256_add_ps(lo0, lo1), _mm256_add_ps(hi0, hi1));
}

INLINE __m256 load_h8(const bt_half *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static float f16_round(float x) {
    return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

/* K_j . q16 over D (a multiple of 64). Batched (tinyBLAS): one 16-lane chain, element i in
 * lane i % 16. Single (ggml_vec_dot_f16): four chains, element i in chain (i/16) % 4. */
static float kq_dot(const bt_half *k, const float *q16, int D, bool batched) {
    if (batched) {
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (int i = 0; i < D; i += 16) {
            lo = _mm256_fmadd_ps(load_h8(k + i), _mm256_loadu_ps(q16 + i), lo);
            hi = _mm256_fmadd_ps(load_h8(k + i + 8), _mm256_loadu_ps(q16 + i + 8), hi);
        }
        return reduce16(lo, hi);
    }
    __m256 c[4][2];
    for (int a = 0; a < 4; a++)
        c[a][0] = c[a][1] = _mm256_setzero_ps();
    for (int i = 0; i < D; i += 64)
        for (int a = 0; a < 4; a++) {
            int o = i + 16 * a;
            c[a][0] = _mm256_fmadd_ps(load_h8(k + o), _mm256_loadu_ps(q16 + o), c[a][0]);
            c[a][1] = _mm256_fmadd_ps(load_h8(k + o + 8), _mm256_loadu_ps(q16 + o + 8), c[a][1]);
        }
    return reduce4x16((const __m256(*)[2])c);
}

void bt_lc_attention(const bt_kv_cache *kv, int layer, int seq, int pos, int kv_head, int head_dim,
                     int n_q, const float *q, bool batched, float *scratch, float *out) {
    const int B = BT_KV_BLOCK_TOKENS, D = head_dim, n = pos + 1;
    const int32_t *table = bt_kv_layer_table(kv, layer, seq);
    const float scale = 1.0f / sqrtf((float)D);
    /* scratch: probabilities [n_q][n], then accumulators [n_q][4 chains][16 lanes][D] */
    float *prob = scratch;
    float *acc = scratch + (size_t)n_q * (size_t)n;
    for (int h = 0; h < n_q; h++) {
        float q16[BT_LC_MAX_HEAD_DIM];
        for (int i = 0; i < D; i++)
            q16[i] = f16_round(q[(size_t)h * D + i]);
        /* KQ, then scaled by 1/sqrt(D) as ggml_soft_max_ext does. */
        float *s = prob + (size_t)h * n, mx = -INFINITY;
        for (int j = 0; j < n; j++) {
            const bt_half *k = (const bt_half *)bt_kv_block_k(kv, layer, table[j / B]) +
                               ((size_t)kv_head * B + (size_t)(j % B)) * (size_t)D;
            s[j] = kq_dot(k, q16, D, batched) * scale;
            mx = s[j] > mx ? s[j] : mx;
        }
        /* ggml_v_expf(s - max); 16-key chunk sums (reduce_add_ps) accumulated in double;
         * p * (float)(1/sum), rounded to f16 for the f16 product. */
        double sum = 0.0;
        for (int c = 0; c < n; c += 16) {
            float e[16] = {0};
            for (int j = c; j < n && j < c + 16; j++)
                e[j - c] = s[j] = bt_ggml_expf(s[j] - mx);
            sum += (double)reduce16(_mm256_loadu_ps(e), _mm256_loadu_ps(e + 8));
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++)
            s[j] = f16_round(s[j] * inv);
    }

    /* KQV: out_d = sum_j V_j[d] * p_j, key j in lane j % 16 (and chain (j/16) % 4 for a single
     * row). The accumulators are stored lane-major, acc[chain][lane][d], so one key's FMAs run
     * along its contiguous value row; each (d, lane) still sees its keys in ggml's order. Keys
     * past pos are masked in llama.cpp (exact zero terms) and skipped here. */
    memset(acc, 0, sizeof(float) * (size_t)n_q * 64 * (size_t)D);
    for (int j = 0; j < n; j++) {
        const bt_half *v = (const bt_half *)bt_kv_block_v(kv, layer, table[j / B]) +
                           ((size_t)kv_head * B + (size_t)(j % B)) * (size_t)D;
        int lane = (batched ? 0 : (j / 16) % 4) * 16 + j % 16;
        for (int h = 0; h < n_q; h++) {
            __m256 p = _mm256_set1_ps(prob[(size_t)h * n + (size_t)j]);
            float *a = acc + ((size_t)h * 64 + (size_t)lane) * (size_t)D;
            for (int d = 0; d < D; d += 8)
                _mm256_storeu_ps(a + d, _mm256_fmadd_ps(load_h8(v + d), p, _mm256_loadu_ps(a + d)));
        }
    }
    /* Lane reductions for 8 values of d at a time: chains (c0 + c2) + (c1 + c3) for a single
     * row, then reduce16's tree over the lanes: l[8+i] + l[i], then [4+i] + [i], then
     * (0 + 2) + (1 + 3). */
    for (int h = 0; h < n_q; h++)
        for (int d = 0; d < D; d += 8) {
            const float *a = acc + (size_t)h * 64 * (size_t)D + (size_t)d;
            __m256 l[16];
            for (int t = 0; t < 16; t++) {
                if (batched) {
                    l[t] = _mm256_loadu_ps(a + (size_t)t * D);
                } else {
                    __m256 c0 = _mm256_loadu_ps(a + (size_t)(t + 0) * D);
                    __m256 c1 = _mm256_loadu_ps(a + (size_t)(t + 16) * D);
                    __m256 c2 = _mm256_loadu_ps(a + (size_t)(t + 32) * D);
                    __m256 c3 = _mm256_loadu_ps(a + (size_t)(t + 48) * D);
                    l[t] = _mm256_add_ps(_mm256_add_ps(c0, c2), _mm256_add_ps(c1, c3));
                }
            }
            for (int i = 0; i < 8; i++)
                l[i] = _mm256_add_ps(l[8 + i], l[i]);
            for (int i = 0; i < 4; i++)
                l[i] = _mm256_add_ps(l[4 + i], l[i]);
            _mm256_storeu_ps(out + (size_t)h * D + d,
                             _mm256_add_ps(_mm256_add_ps(l[0], l[2]), _mm256_add_ps(l[1], l[3])));
        }
}
