/*
 * attention.c - tiled online-softmax attention over the paged KV cache.
 *
 * A tile is one KV block. Per tile: scores s_t = q.k_t / sqrt(D); if the tile max exceeds the
 * running max m, the accumulator and the running sum are rescaled by exp(m_old - m_new);
 * then p_t = exp(s_t - m), l += p_t, acc += p_t v_t. Output = acc / l.
 * The AVX2 variant (chosen at run time from CPUID) computes the same with 8-wide FMAs and a
 * polynomial exp accurate to about 2 ulp.
 */
#include "attention.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "hparams.h"

#define TILE BT_KV_BLOCK_TOKENS

void bt_attention_task_ref(const bt_attn_args *a, int task)
{
    int row = task / a->n_head, h = task % a->n_head, D = a->head_dim;
    int g = h / (a->n_head / a->n_head_kv);
    int n_keys = a->pos[row] + 1;
    const int32_t *table = bt_kv_seq_table(a->kv, a->seq[row]);
    const float *q = a->q + ((size_t)row * a->n_head + h) * D;
    float *out = a->out + ((size_t)row * a->n_head + h) * D;
    float scale = 1.0f / sqrtf((float)D);
    float acc[BT_HPARAMS_MAX_HEAD_DIM];
    float m = -INFINITY, l = 0.0f;
    memset(acc, 0, sizeof(float) * (size_t)D);
    for (int b = 0; b * TILE < n_keys; b++) {
        const float *kb = bt_kv_block_k(a->kv, a->layer, table[b]) + (size_t)g * TILE * D;
        const float *vb = bt_kv_block_v(a->kv, a->layer, table[b]) + (size_t)g * TILE * D;
        int nk = n_keys - b * TILE < TILE ? n_keys - b * TILE : TILE;
        float s[TILE], mx = -INFINITY;
        for (int t = 0; t < nk; t++) {
            float d = 0.0f;
            for (int i = 0; i < D; i++)
                d += q[i] * kb[t * D + i];
            s[t] = d * scale;
            mx = s[t] > mx ? s[t] : mx;
        }
        if (mx > m) {
            float corr = expf(m - mx);
            for (int i = 0; i < D; i++)
                acc[i] *= corr;
            l *= corr;
            m = mx;
        }
        for (int t = 0; t < nk; t++) {
            float p = expf(s[t] - m);
            l += p;
            for (int i = 0; i < D; i++)
                acc[i] += p * vb[t * D + i];
        }
    }
    for (int i = 0; i < D; i++)
        out[i] = acc[i] / l;
}

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

static AVX2 inline float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* Cephes-style expf on 8 lanes; inputs clamped to [-87, 88]. */
static AVX2 inline __m256 exp8(__m256 x)
{
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
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

static AVX2 void attention_task_avx2(const bt_attn_args *a, int task)
{
    int row = task / a->n_head, h = task % a->n_head, D = a->head_dim;
    int g = h / (a->n_head / a->n_head_kv);
    int n_keys = a->pos[row] + 1;
    const int32_t *table = bt_kv_seq_table(a->kv, a->seq[row]);
    const float *q = a->q + ((size_t)row * a->n_head + h) * D;
    float *out = a->out + ((size_t)row * a->n_head + h) * D;
    float scale = 1.0f / sqrtf((float)D);
    float acc[BT_HPARAMS_MAX_HEAD_DIM] __attribute__((aligned(32)));
    float qs[BT_HPARAMS_MAX_HEAD_DIM] __attribute__((aligned(32)));
    float m = -INFINITY, l = 0.0f;
    for (int i = 0; i < D; i++) {
        acc[i] = 0.0f;
        qs[i] = q[i] * scale; /* fold the scale into q once */
    }
    for (int b = 0; b * TILE < n_keys; b++) {
        const float *kb = bt_kv_block_k(a->kv, a->layer, table[b]) + (size_t)g * TILE * D;
        const float *vb = bt_kv_block_v(a->kv, a->layer, table[b]) + (size_t)g * TILE * D;
        int nk = n_keys - b * TILE < TILE ? n_keys - b * TILE : TILE;
        float s[TILE] __attribute__((aligned(32)));
        for (int t = 0; t < TILE; t++)
            s[t] = -INFINITY;
        for (int t = 0; t < nk; t++) {
            const float *k = kb + (size_t)t * D;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
            int i = 0;
            for (; i + 16 <= D; i += 16) {
                s0 = _mm256_fmadd_ps(_mm256_load_ps(qs + i), _mm256_loadu_ps(k + i), s0);
                s1 = _mm256_fmadd_ps(_mm256_load_ps(qs + i + 8), _mm256_loadu_ps(k + i + 8), s1);
            }
            for (; i < D; i += 8)
                s0 = _mm256_fmadd_ps(_mm256_load_ps(qs + i), _mm256_loadu_ps(k + i), s0);
            s[t] = hsum8(_mm256_add_ps(s0, s1));
        }
        float mx = s[0];
        for (int t = 1; t < nk; t++)
            mx = s[t] > mx ? s[t] : mx;
        if (mx > m) {
            float corr = expf(m - mx);
            __m256 c = _mm256_set1_ps(corr);
            for (int i = 0; i < D; i += 8)
                _mm256_store_ps(acc + i, _mm256_mul_ps(_mm256_load_ps(acc + i), c));
            l *= corr;
            m = mx;
        }
        float p[TILE] __attribute__((aligned(32)));
        __m256 mm = _mm256_set1_ps(m);
        _mm256_store_ps(p, exp8(_mm256_sub_ps(_mm256_load_ps(s), mm)));
        _mm256_store_ps(p + 8, exp8(_mm256_sub_ps(_mm256_load_ps(s + 8), mm)));
        for (int t = nk; t < TILE; t++)
            p[t] = 0.0f;
        for (int t = 0; t < nk; t++)
            l += p[t];
        /* acc += sum_t p_t v_t, two keys per pass to halve the accumulator traffic. */
        int t = 0;
        for (; t + 2 <= nk; t += 2) {
            __m256 p0 = _mm256_set1_ps(p[t]), p1 = _mm256_set1_ps(p[t + 1]);
            const float *v0 = vb + (size_t)t * D, *v1 = v0 + D;
            for (int i = 0; i < D; i += 8) {
                __m256 x = _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + i), _mm256_load_ps(acc + i));
                _mm256_store_ps(acc + i, _mm256_fmadd_ps(p1, _mm256_loadu_ps(v1 + i), x));
            }
        }
        for (; t < nk; t++) {
            __m256 p0 = _mm256_set1_ps(p[t]);
            const float *v0 = vb + (size_t)t * D;
            for (int i = 0; i < D; i += 8)
                _mm256_store_ps(acc + i,
                                _mm256_fmadd_ps(p0, _mm256_loadu_ps(v0 + i), _mm256_load_ps(acc + i)));
        }
    }
    __m256 inv = _mm256_set1_ps(1.0f / l);
    for (int i = 0; i < D; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_load_ps(acc + i), inv));
}

static _Atomic int use_avx2 = -1;

void bt_attention_task(const bt_attn_args *a, int task)
{
    if (use_avx2 < 0) /* benign race: every thread computes the same value */
        use_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (use_avx2 && a->head_dim % 8 == 0)
        attention_task_avx2(a, task);
    else
        bt_attention_task_ref(a, task);
}
#else
void bt_attention_task(const bt_attn_args *a, int task)
{
    bt_attention_task_ref(a, task);
}
#endif
