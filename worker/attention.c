/*
 * attention.c - tiled online-softmax attention over the paged KV cache.
 *
 * A tile is one KV block of one KV head, converted to f32 once per task (f16 cache) and used
 * by every query head of the task. Per tile and head: scores s_t = (q/sqrt(D)).k_t; if the
 * tile max exceeds the running max m, the accumulator and the running sum are rescaled by
 * exp(m_old - m_new); then p_t = exp(s_t - m), l += p_t, acc += p_t v_t. Output = acc / l.
 *
 * Variants (chosen once from CPUID): AVX-512 (head_dim % 16 == 0) and AVX2 (head_dim % 8 ==
 * 0) compute four key dots at a time and keep the accumulator in registers while streaming
 * the tile's values; both use a polynomial exp accurate to about 2 ulp. The value
 * accumulation is a sequential FMA over keys in both, so they differ only in the dots'
 * summation order. The scalar variant is the reference.
 */
#include "attention.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "cpu.h"
#include "hparams.h"

#define TILE BT_KV_BLOCK_TOKENS

/* One tile of one head: updates the running max *m, sum *l and acc[D]. qs is q * scale. */
typedef void (*tile_fn)(const float *qs, const float *k, const float *v, int nk, int D, float *m,
                        float *l, float *acc);

static void tile_scalar(const float *qs, const float *k, const float *v, int nk, int D, float *m,
                        float *l, float *acc) {
    float s[TILE], mx = -INFINITY;
    for (int t = 0; t < nk; t++) {
        float d = 0.0f;
        for (int i = 0; i < D; i++)
            d += qs[i] * k[(size_t)t * D + i];
        s[t] = d;
        mx = d > mx ? d : mx;
    }
    if (mx > *m) {
        float corr = expf(*m - mx);
        for (int i = 0; i < D; i++)
            acc[i] *= corr;
        *l *= corr;
        *m = mx;
    }
    for (int t = 0; t < nk; t++) {
        float p = expf(s[t] - *m);
        *l += p;
        for (int i = 0; i < D; i++)
            acc[i] += p * v[(size_t)t * D + i];
    }
}

/* Decodes a task into its row, KV head and query heads [h0, h1). */
static void task_heads(const bt_attn_args *a, int task, int *row, int *g, int *h0, int *h1) {
    int group = a->n_head / a->n_head_kv;
    int hpt = a->heads_per_task < 1 ? 1 : a->heads_per_task;
    hpt = hpt > group ? group : hpt;
    hpt = hpt > BT_ATTN_MAX_TASK_HEADS ? BT_ATTN_MAX_TASK_HEADS : hpt;
    int n_sub = (group + hpt - 1) / hpt;
    *row = task / (a->n_head_kv * n_sub);
    int rem = task % (a->n_head_kv * n_sub);
    *g = rem / n_sub;
    *h0 = *g * group + (rem % n_sub) * hpt;
    *h1 = *h0 + hpt < (*g + 1) * group ? *h0 + hpt : (*g + 1) * group;
}

int bt_attention_n_tasks(const bt_attn_args *a) {
    int group = a->n_head / a->n_head_kv;
    int hpt = a->heads_per_task < 1 ? 1 : a->heads_per_task;
    hpt = hpt > group ? group : hpt;
    hpt = hpt > BT_ATTN_MAX_TASK_HEADS ? BT_ATTN_MAX_TASK_HEADS : hpt;
    return a->n_rows * a->n_head_kv * ((group + hpt - 1) / hpt);
}

static void attend(const bt_attn_args *a, int task, tile_fn tile) {
    int row, g, h0, h1, D = a->head_dim;
    task_heads(a, task, &row, &g, &h0, &h1);
    int nh = h1 - h0;
    assert(nh >= 1 && nh <= BT_ATTN_MAX_TASK_HEADS && D <= BT_HPARAMS_MAX_HEAD_DIM);
    int n_keys = a->pos[row] + 1;
    const int32_t *table = bt_kv_seq_table(a->kv, a->seq[row]);
    int f16 = bt_kv_cache_params(a->kv)->type == BT_TYPE_F16;
    float scale = 1.0f / sqrtf((float)D);
    static _Thread_local float qs[BT_ATTN_MAX_TASK_HEADS][BT_HPARAMS_MAX_HEAD_DIM]
        __attribute__((aligned(64)));
    static _Thread_local float acc[BT_ATTN_MAX_TASK_HEADS][BT_HPARAMS_MAX_HEAD_DIM]
        __attribute__((aligned(64)));
    static _Thread_local float kt[TILE * BT_HPARAMS_MAX_HEAD_DIM] __attribute__((aligned(64)));
    static _Thread_local float vt[TILE * BT_HPARAMS_MAX_HEAD_DIM] __attribute__((aligned(64)));
    float m[BT_ATTN_MAX_TASK_HEADS], l[BT_ATTN_MAX_TASK_HEADS];
    for (int j = 0; j < nh; j++) {
        const float *q = a->q + ((size_t)row * a->n_head + (size_t)(h0 + j)) * D;
        for (int i = 0; i < D; i++) {
            qs[j][i] = q[i] * scale;
            acc[j][i] = 0.0f;
        }
        m[j] = -INFINITY;
        l[j] = 0.0f;
    }
    size_t tile_off = (size_t)g * TILE * (size_t)D; /* elements */
    for (int b = 0; b * TILE < n_keys; b++) {
        int nk = n_keys - b * TILE < TILE ? n_keys - b * TILE : TILE;
        const void *kb = bt_kv_block_k(a->kv, a->layer, table[b]);
        const void *vb = bt_kv_block_v(a->kv, a->layer, table[b]);
        const float *k, *v;
        if (f16) {
            bt_kv_f16_to_f32((const bt_half *)kb + tile_off, kt, nk * D);
            bt_kv_f16_to_f32((const bt_half *)vb + tile_off, vt, nk * D);
            k = kt;
            v = vt;
        } else {
            k = (const float *)kb + tile_off;
            v = (const float *)vb + tile_off;
        }
        for (int j = 0; j < nh; j++)
            tile(qs[j], k, v, nk, D, &m[j], &l[j], acc[j]);
    }
    for (int j = 0; j < nh; j++) {
        float *out = a->out + ((size_t)row * a->n_head + (size_t)(h0 + j)) * D;
        float inv = 1.0f / l[j];
        for (int i = 0; i < D; i++)
            out[i] = acc[j][i] * inv;
    }
}

void bt_attention_task_ref(const bt_attn_args *a, int task) {
    attend(a, task, tile_scalar);
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma,f16c")))

static AVX2 inline float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* Cephes-style expf on 8 lanes; inputs clamped to [-87, 88]. */
static AVX2 inline __m256 exp8(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* Max of s[0..nk), rescale of the state, p = exp(s - m) with p[nk..16) = 0, l += sum p. */
static AVX2 inline void softmax_step(float *s, float *p, int nk, int D, float *m, float *l,
                                     float *acc) {
    float mx = s[0];
    for (int t = 1; t < nk; t++)
        mx = s[t] > mx ? s[t] : mx;
    if (mx > *m) {
        float corr = expf(*m - mx);
        __m256 c = _mm256_set1_ps(corr);
        for (int i = 0; i < D; i += 8)
            _mm256_store_ps(acc + i, _mm256_mul_ps(_mm256_load_ps(acc + i), c));
        *l *= corr;
        *m = mx;
    }
    __m256 mm = _mm256_set1_ps(*m);
    _mm256_store_ps(p, exp8(_mm256_sub_ps(_mm256_load_ps(s), mm)));
    _mm256_store_ps(p + 8, exp8(_mm256_sub_ps(_mm256_load_ps(s + 8), mm)));
    for (int t = nk; t < TILE; t++)
        p[t] = 0.0f;
    for (int t = 0; t < nk; t++)
        *l += p[t];
}

static AVX2 void tile_avx2(const float *qs, const float *k, const float *v, int nk, int D, float *m,
                           float *l, float *acc) {
    float s[TILE] __attribute__((aligned(32)));
    float p[TILE] __attribute__((aligned(32)));
    for (int t = nk; t < TILE; t++)
        s[t] = -INFINITY;
    int t = 0;
    for (; t + 4 <= nk; t += 4) {
        const float *k0 = k + (size_t)t * D, *k1 = k0 + D, *k2 = k1 + D, *k3 = k2 + D;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < D; i += 8) {
            __m256 q = _mm256_load_ps(qs + i);
            a0 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k0 + i), a0);
            a1 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k1 + i), a1);
            a2 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k2 + i), a2);
            a3 = _mm256_fmadd_ps(q, _mm256_loadu_ps(k3 + i), a3);
        }
        __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        _mm_storeu_ps(s + t, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
    for (; t < nk; t++) {
        const float *k0 = k + (size_t)t * D;
        __m256 a0 = _mm256_setzero_ps();
        for (int i = 0; i < D; i += 8)
            a0 = _mm256_fmadd_ps(_mm256_load_ps(qs + i), _mm256_loadu_ps(k0 + i), a0);
        s[t] = hsum8(a0);
    }
    softmax_step(s, p, nk, D, m, l, acc);
    /* acc += sum_t p_t v_t: 32 columns in registers while the keys stream by. */
    int i = 0;
    for (; i + 32 <= D; i += 32) {
        __m256 c0 = _mm256_load_ps(acc + i), c1 = _mm256_load_ps(acc + i + 8);
        __m256 c2 = _mm256_load_ps(acc + i + 16), c3 = _mm256_load_ps(acc + i + 24);
        for (t = 0; t < nk; t++) {
            __m256 pt = _mm256_set1_ps(p[t]);
            const float *vr = v + (size_t)t * D + i;
            c0 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vr), c0);
            c1 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vr + 8), c1);
            c2 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vr + 16), c2);
            c3 = _mm256_fmadd_ps(pt, _mm256_loadu_ps(vr + 24), c3);
        }
        _mm256_store_ps(acc + i, c0);
        _mm256_store_ps(acc + i + 8, c1);
        _mm256_store_ps(acc + i + 16, c2);
        _mm256_store_ps(acc + i + 24, c3);
    }
    for (; i < D; i += 8) {
        __m256 c0 = _mm256_load_ps(acc + i);
        for (t = 0; t < nk; t++)
            c0 = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), _mm256_loadu_ps(v + (size_t)t * D + i), c0);
        _mm256_store_ps(acc + i, c0);
    }
}

static AVX512 void tile_avx512(const float *qs, const float *k, const float *v, int nk, int D,
                               float *m, float *l, float *acc) {
    float s[TILE] __attribute__((aligned(32)));
    float p[TILE] __attribute__((aligned(32)));
    for (int t = nk; t < TILE; t++)
        s[t] = -INFINITY;
    int t = 0;
    for (; t + 4 <= nk; t += 4) {
        const float *k0 = k + (size_t)t * D, *k1 = k0 + D, *k2 = k1 + D, *k3 = k2 + D;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < D; i += 16) {
            __m512 q = _mm512_load_ps(qs + i);
            a0 = _mm512_fmadd_ps(q, _mm512_loadu_ps(k0 + i), a0);
            a1 = _mm512_fmadd_ps(q, _mm512_loadu_ps(k1 + i), a1);
            a2 = _mm512_fmadd_ps(q, _mm512_loadu_ps(k2 + i), a2);
            a3 = _mm512_fmadd_ps(q, _mm512_loadu_ps(k3 + i), a3);
        }
        s[t] = _mm512_reduce_add_ps(a0);
        s[t + 1] = _mm512_reduce_add_ps(a1);
        s[t + 2] = _mm512_reduce_add_ps(a2);
        s[t + 3] = _mm512_reduce_add_ps(a3);
    }
    for (; t < nk; t++) {
        const float *k0 = k + (size_t)t * D;
        __m512 a0 = _mm512_setzero_ps();
        for (int i = 0; i < D; i += 16)
            a0 = _mm512_fmadd_ps(_mm512_load_ps(qs + i), _mm512_loadu_ps(k0 + i), a0);
        s[t] = _mm512_reduce_add_ps(a0);
    }
    softmax_step(s, p, nk, D, m, l, acc);
    int i = 0;
    for (; i + 64 <= D; i += 64) {
        __m512 c0 = _mm512_load_ps(acc + i), c1 = _mm512_load_ps(acc + i + 16);
        __m512 c2 = _mm512_load_ps(acc + i + 32), c3 = _mm512_load_ps(acc + i + 48);
        for (t = 0; t < nk; t++) {
            __m512 pt = _mm512_set1_ps(p[t]);
            const float *vr = v + (size_t)t * D + i;
            c0 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(vr), c0);
            c1 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(vr + 16), c1);
            c2 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(vr + 32), c2);
            c3 = _mm512_fmadd_ps(pt, _mm512_loadu_ps(vr + 48), c3);
        }
        _mm512_store_ps(acc + i, c0);
        _mm512_store_ps(acc + i + 16, c1);
        _mm512_store_ps(acc + i + 32, c2);
        _mm512_store_ps(acc + i + 48, c3);
    }
    for (; i < D; i += 16) {
        __m512 c0 = _mm512_load_ps(acc + i);
        for (t = 0; t < nk; t++)
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(p[t]), _mm512_loadu_ps(v + (size_t)t * D + i), c0);
        _mm512_store_ps(acc + i, c0);
    }
}

static _Atomic int level = -1; /* 0 scalar, 1 AVX2, 2 AVX-512; benign race on first use */

void bt_attention_task(const bt_attn_args *a, int task) {
    if (level < 0) {
        int lv = 0;
        if (bt_cpu_has(BT_CPU_AVX2) && bt_cpu_has(BT_CPU_FMA) && bt_cpu_has(BT_CPU_F16C))
            lv = 1;
        if (lv == 1 && bt_cpu_has(BT_CPU_AVX512F) && bt_cpu_has(BT_CPU_AVX512DQ))
            lv = 2;
        level = lv;
    }
    if (level == 2 && a->head_dim % 16 == 0)
        attend(a, task, tile_avx512);
    else if (level >= 1 && a->head_dim % 8 == 0)
        attend(a, task, tile_avx2);
    else
        attend(a, task, tile_scalar);
}
#else
void bt_attention_task(const bt_attn_args *a, int task) {
    attend(a, task, tile_scalar);
}
#endif
