/*
 * llamacpp_avx2.c - llama.cpp's CPU arithmetic (llamacpp.h). Compiled with -mavx2 -mfma
 * -mf16c and -ffp-contract=off: every fused multiply-add below is written as one (fmaf or
 * _mm256_fmadd_ps) exactly where GCC fuses ggml's code, and nowhere else. Called only after
 * bt_lc_cpu_ok().
 *
 * The 16-lane AVX-512 sums of ggml are written as arrays of 16 floats: lane-wise FMAs are
 * exact per lane whatever the vector width, and the reductions follow the add trees of
 * GCC's _mm512_reduce_add_ps and ggml's GGML_F32x16_REDUCE.
 */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "llamacpp.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- weight products ---- */

INLINE float half_f32(bt_half h) {
    return _cvtsh_ss(h);
}

/* ggml hsum_float_8: ((a0+a4) + (a2+a6)) + ((a1+a5) + (a3+a7)). */
INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 int32 lanes, lane i = sum of the u8 x s8 products of bytes 4i..4i+3 (exact). */
INLINE __m256 dot_us(__m256i u, __m256i s) {
    return _mm256_cvtepi32_ps(
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles are elements 0..15, high nibbles 16..31. */
INLINE __m256i nibbles(const uint8_t *qs) {
    __m128i v = _mm_loadu_si128((const __m128i *)qs);
    __m256i b = _mm256_insertf128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
    return _mm256_and_si256(b, _mm256_set1_epi8(0x0F));
}

/* ggml_vec_dot_q4_1_q8_1. */
static float dot_q4_1(const bt_block_q4_1 *x, const bt_q8 *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float summs = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        summs = fmaf(half_f32(x[i].m), y[i].s, summs);
        __m256 d = _mm256_set1_ps(half_f32(x[i].d) * y[i].d);
        __m256 p = dot_us(nibbles(x[i].qs), _mm256_loadu_si256((const __m256i *)y[i].qs));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    return hsum8(acc) + summs;
}

/* ggml_vec_dot_q8_0_q8_0. */
static float dot_q8_0(const bt_block_q8_0 *x, const bt_q8 *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        __m256 d = _mm256_set1_ps(half_f32(x[i].d) * y[i].d);
        __m256i qx = _mm256_loadu_si256((const __m256i *)x[i].qs);
        __m256i qy = _mm256_loadu_si256((const __m256i *)y[i].qs);
        __m256 p = dot_us(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
        acc = _mm256_fmadd_ps(d, p, acc);
    }
    return hsum8(acc);
}

void bt_lc_matmul(bt_type type, const void *w, size_t row_bytes, int64_t n_cols, const bt_q8 *xq,
                  int64_t n_tok, float *y, int64_t ldy, int64_t r0, int64_t r1) {
    int64_t nb = n_cols / 32;
    for (int64_t r = r0; r < r1; r++) {
        const void *row = (const char *)w + (size_t)r * row_bytes;
        for (int64_t t = 0; t < n_tok; t++) {
            const bt_q8 *x = xq + (size_t)(t * nb);
            y[t * ldy + r] = type == BT_TYPE_Q4_1 ? dot_q4_1(row, x, nb) : dot_q8_0(row, x, nb);
        }
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

/* ggml_v_expf, AVX-512 variant (ARM optimized-routines polynomial; 2^n by scalef). */
static float v_expf(float x) {
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r);
    float n = z - r;
    float b = fmaf(-n, 0x1.7f7d1cp-20f, fmaf(-n, 0x1.62e4p-1f, x));
    if (isnan(n))
        return n;
    if (fabsf(n) > 192.0f) /* out of range: 0 or inf by the sign of n */
        return n <= 0.0f ? 0.0f : INFINITY;
    float u = b * b;
    float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                        fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                   u, fmaf(0x1.ffffecp-1f, b, 1.0f));
    return scalbnf(j, (int)n);
}

void bt_lc_swiglu(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + v_expf(0.0f - g[i])) * u[i];
}

/* ---- attention ---- */

/* GCC's _mm512_reduce_add_ps: halves of 8, then of 4, then (0+2) + (1+3). */
static float reduce16(const float v[16]) {
    float t8[8], t4[4];
    for (int i = 0; i < 8; i++)
        t8[i] = v[8 + i] + v[i];
    for (int i = 0; i < 4; i++)
        t4[i] = t8[4 + i] + t8[i];
    return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

/* ggml's GGML_F32x16_REDUCE of four accumulators, then reduce16. */
static float reduce4x16(float acc[4][16]) {
    for (int t = 0; t < 16; t++) {
        acc[0][t] = acc[0][t] + acc[2][t];
        acc[1][t] = acc[1][t] + acc[3][t];
    }
    for (int t = 0; t < 16; t++)
        acc[0][t] = acc[0][t] + acc[1][t];
    return reduce16(acc[0]);
}

/* Products in ggml's lane structure: tinyBLAS (batched) keeps one 16-lane FMA chain, element
 * i in lane i % 16; ggml_vec_dot_f16 (single row) keeps four, element i in chain (i/16) % 4. */
typedef struct {
    float acc[4][16];
} lanes;

INLINE float *lane_of(lanes *l, bool batched, int64_t i) {
    return batched ? &l->acc[0][i % 16] : &l->acc[(i / 16) % 4][i % 16];
}

static float lanes_sum(lanes *l, bool batched) {
    return batched ? reduce16(l->acc[0]) : reduce4x16(l->acc);
}

static float f16_round(float x) {
    return _cvtsh_ss(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

void bt_lc_attention(const bt_kv_cache *kv, int layer, int seq, int pos, int kv_head,
                     int head_dim, const float *q, bool batched, float *scratch, float *out) {
    const int B = BT_KV_BLOCK_TOKENS, D = head_dim;
    const int32_t *table = bt_kv_seq_table(kv, seq);
    int n = pos + 1;
    float qh[BT_LC_MAX_HEAD_DIM];
    for (int i = 0; i < D; i++)
        qh[i] = f16_round(q[i]);

    /* KQ: s_j = K_j . fp16(q), then scaled by 1/sqrt(D) as ggml_soft_max_ext does. */
    const float scale = 1.0f / sqrtf((float)D);
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) {
        const bt_half *k = (const bt_half *)bt_kv_block_k(kv, layer, table[j / B]) +
                           ((size_t)kv_head * B + (size_t)(j % B)) * (size_t)D;
        lanes l;
        memset(&l, 0, sizeof(l));
        for (int i = 0; i < D; i++) {
            float *c = lane_of(&l, batched, i);
            *c = fmaf(half_f32(k[i]), qh[i], *c);
        }
        float s = lanes_sum(&l, batched) * scale;
        scratch[j] = s;
        mx = s > mx ? s : mx;
    }
    /* Softmax: ggml_v_expf(s - max), 16-key chunk sums (reduce_add_ps) accumulated in double,
     * then p * (float)(1/sum), rounded to f16 for the f16 product. */
    double sum = 0.0;
    for (int c = 0; c < n; c += 16) {
        float chunk[16] = {0};
        for (int j = c; j < n && j < c + 16; j++)
            chunk[j - c] = scratch[j] = v_expf(scratch[j] - mx);
        sum += (double)reduce16(chunk);
    }
    float inv = (float)(1.0 / sum);
    for (int j = 0; j < n; j++)
        scratch[j] = f16_round(scratch[j] * inv);

    /* KQV: out_d = sum_j V_j[d] * fp16(p_j), every d in its own lanes. */
    lanes acc[BT_LC_MAX_HEAD_DIM];
    memset(acc, 0, sizeof(lanes) * (size_t)D);
    for (int j = 0; j < n; j++) {
        const bt_half *v = (const bt_half *)bt_kv_block_v(kv, layer, table[j / B]) +
                           ((size_t)kv_head * B + (size_t)(j % B)) * (size_t)D;
        float p = scratch[j];
        for (int d = 0; d < D; d++) {
            float *c = lane_of(&acc[d], batched, j);
            *c = fmaf(half_f32(v[d]), p, *c);
        }
    }
    for (int d = 0; d < D; d++)
        out[d] = lanes_sum(&acc[d], batched);
}
