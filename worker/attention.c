/*
 * attention.c - chunked (flash-decoding) online-softmax attention over the paged KV cache.
 *
 * A chunk (BT_ATTN_CHUNK_KEYS keys, attention.h) is reduced one KV block (16 keys) at a time.
 * Per block and head: scores s_t = (q/sqrt(D)).k_t; if the block max exceeds the running max
 * m, the accumulator and the running sum are rescaled by exp(m_old - m_new); then
 * p_t = exp(s_t - m), l += p_t, acc += p_t v_t. The chunks' partials are folded in order by
 * fold() (one compiled function for every variant and schedule), and out = acc / l.
 *
 * Variants (from CPUID and the kernel level): AVX2 (head_dim % 32 == 0) reads K and V rows
 * straight from the cache, converting f16 (F16C) or q8_0 (int8 times the block's scale) to
 * f32 in registers, each row once for up to three query heads of the GQA group; it computes four
 * key dots at a time and keeps the accumulators in registers while the block's values stream
 * by, with a polynomial exp accurate to about 2 ulp. The values accumulate in two FMA chains
 * (even and odd keys, added at the block's end), so it differs from the scalar reference in
 * the summation orders and exp. While it computes a block it prefetches the next one, spread
 * over the block's work rather than in one burst (a burst of 192 lines stalls on the core's
 * outstanding misses), and a task over several KV heads prefetches all their rows in its
 * first head's pass: at 4k keys this took decode attention from 7 to 13 GB/s of K/V on this
 * machine's two Zen 2 cores. The AVX-512 variant (at the AVX-512 kernel level) computes the
 * AVX2 variant's bits in 512-bit registers (below). The scalar variant (dequantize the block
 * into a tile, plain loops, expf) is the reference.
 */
#include "attention.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cpu.h"
#include "hparams.h"
#include "kernels/kernels.h"

#define TILE BT_KV_BLOCK_TOKENS
#define MAXD BT_HPARAMS_MAX_HEAD_DIM
#define MAXH BT_ATTN_MAX_TASK_HEADS

_Static_assert(BT_ATTN_CHUNK_KEYS % BT_KV_BLOCK_TOKENS == 0,
               "a chunk is whole KV blocks: its blocks' keys never straddle two chunks");

/* Reduction state of a task's heads: one chunk's partial, or the fold of chunks so far. */
typedef struct {
    float m[MAXH], l[MAXH];
    float acc[MAXH][MAXD] __attribute__((aligned(64)));
} red_state;

/* Reduces keys [k0, k1) (whole blocks but the last) of KV head g for nh heads whose scaled
 * queries are qs[0..nh) into st, from an empty state. pf_heads: KV heads from g on whose rows
 * of the next block a SIMD variant prefetches (1, every head when the task goes on to the
 * others, or 0 when an earlier call of the task brought the chunk into cache). */
typedef void (*chunk_fn)(const bt_kv_cache *kv, int layer, const int32_t *table, int g, int k0,
                         int k1, int nh, int D, const float (*qs)[MAXD], red_state *st,
                         int pf_heads);

static void state_clear(red_state *st, int nh, int D) {
    for (int j = 0; j < nh; j++) {
        st->m[j] = -INFINITY;
        st->l[j] = 0.0f;
        memset(st->acc[j], 0, sizeof(float) * (size_t)D);
    }
}

/* Folds the partial (m2, l2, acc2) of the next chunk into (m, l, acc). Every schedule and
 * variant folds through this one function, in chunk order. */
static void fold(float *m, float *l, float *acc, float m2, float l2, const float *acc2, int D) {
    float mx = m2 > *m ? m2 : *m;
    float a = expf(*m - mx), b = expf(m2 - mx);
    *l = *l * a + l2 * b;
    for (int i = 0; i < D; i++)
        acc[i] = acc[i] * a + acc2[i] * b;
    *m = mx;
}

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

/* nk rows of the cache's type at src (row_bytes apart) as f32, with the scalar conversions. */
static void rows_to_f32(bt_type type, const char *src, size_t row_bytes, int nk, int D,
                        float *dst) {
    for (int t = 0; t < nk; t++) {
        const char *r = src + (size_t)t * row_bytes;
        float *y = dst + (size_t)t * D;
        if (type == BT_TYPE_F16)
            for (int i = 0; i < D; i++)
                y[i] = bt_half_to_f32(((const bt_half *)r)[i]);
        else if (type == BT_TYPE_Q8_0)
            bt_dequant_row(BT_TYPE_Q8_0, r, y, D);
        else
            memcpy(y, r, sizeof(float) * (size_t)D);
    }
}

static void chunk_scalar(const bt_kv_cache *kv, int layer, const int32_t *table, int g, int k0,
                         int k1, int nh, int D, const float (*qs)[MAXD], red_state *st,
                         int pf_heads) {
    (void)pf_heads;
    static _Thread_local float kt[TILE * MAXD], vt[TILE * MAXD];
    bt_type type = bt_kv_cache_params(kv)->type;
    size_t rb = bt_kv_row_bytes(type, D), head_off = (size_t)g * TILE * rb;
    state_clear(st, nh, D);
    for (int b = k0 / TILE; b * TILE < k1; b++) {
        /* Keys [t0, nk) of the block: t0 > 0 only in a window's first block. */
        int t0 = k0 > b * TILE ? k0 - b * TILE : 0;
        int nk = (k1 - b * TILE < TILE ? k1 - b * TILE : TILE) - t0;
        size_t off = head_off + (size_t)t0 * rb;
        rows_to_f32(type, (const char *)bt_kv_block_k(kv, layer, table[b]) + off, rb, nk, D, kt);
        rows_to_f32(type, (const char *)bt_kv_block_v(kv, layer, table[b]) + off, rb, nk, D, vt);
        for (int j = 0; j < nh; j++)
            tile_scalar(qs[j], kt, vt, nk, D, &st->m[j], &st->l[j], st->acc[j]);
    }
}

/* Query heads per task, clamped to the group and BT_ATTN_MAX_TASK_HEADS. */
static int task_hpt(const bt_attn_args *a) {
    int group = a->n_head / a->n_head_kv;
    int hpt = a->heads_per_task < 1 ? 1 : a->heads_per_task;
    hpt = hpt > group ? group : hpt;
    return hpt > MAXH ? MAXH : hpt;
}

int bt_attention_n_chunks(int pos) {
    return pos / BT_ATTN_CHUNK_KEYS + 1;
}

/* The first key a row sees: 0, or the window's first key. */
static int first_key(const bt_attn_args *a, int row) {
    int lo = a->window > 0 ? a->pos[row] + 1 - a->window : 0;
    return lo > 0 ? lo : 0;
}

/* The row's chunks that meet its keys: from the one holding first_key to the last. */
static int row_chunks(const bt_attn_args *a, int row) {
    return bt_attention_n_chunks(a->pos[row]) - first_key(a, row) / BT_ATTN_CHUNK_KEYS;
}

size_t bt_attention_partials_floats(int n_rows, int max_keys, int n_head, int head_dim) {
    int n_chunks = bt_attention_n_chunks(max_keys > 0 ? max_keys - 1 : 0);
    return (size_t)n_rows * (size_t)n_chunks * (size_t)n_head * (size_t)(head_dim + 2);
}

static int task_rows(const bt_attn_args *a) {
    int r = a->rows_per_task < 1 ? 1 : a->rows_per_task;
    return r > BT_ATTN_MAX_TASK_ROWS ? BT_ATTN_MAX_TASK_ROWS : r;
}

/* KV heads per task with partials, clamped to [1, n_head_kv]. */
static int task_kv_heads(const bt_attn_args *a) {
    int k = a->kv_heads_per_task < 1 ? 1 : a->kv_heads_per_task;
    return k > a->n_head_kv ? a->n_head_kv : k;
}

/* Tasks of one row: per chunk and run of KV heads with partials, else one per head slice. */
static int row_tasks(const bt_attn_args *a, int row) {
    int group = a->n_head / a->n_head_kv, hpt = task_hpt(a), kpt = task_kv_heads(a);
    if (a->partials)
        return row_chunks(a, row) * ((a->n_head_kv + kpt - 1) / kpt);
    return a->n_head_kv * ((group + hpt - 1) / hpt);
}

int bt_attention_n_tasks(const bt_attn_args *a) {
    if (!a->partials) {
        int R = task_rows(a);
        return (a->n_rows + R - 1) / R * row_tasks(a, 0);
    }
    int n = 0;
    for (int r = 0; r < a->n_rows; r++)
        n += row_tasks(a, r);
    return n;
}

int bt_attention_split_kv_heads(const bt_attn_args *a, int n_threads) {
    int chunks = 0;
    for (int r = 0; r < a->n_rows; r++)
        chunks += row_chunks(a, r);
    return 2 * chunks >= 3 * n_threads ? a->n_head_kv : 1;
}

/* The partial of (row, chunk c, head h): [m, l, acc[D]]. Rows' chunks in order, heads inside. */
static float *partial_of(const bt_attn_args *a, int row, int c, int h) {
    size_t off = 0;
    for (int r = 0; r < row; r++)
        off += (size_t)row_chunks(a, r);
    off = (off + (size_t)c) * (size_t)a->n_head + (size_t)h;
    return a->partials + off * (size_t)(a->head_dim + 2);
}

/* The scaled queries of heads [h0, h0 + nh) of row. */
static void scale_queries(const bt_attn_args *a, int row, int h0, int nh, float (*qs)[MAXD]) {
    int D = a->head_dim;
    float scale = a->scale > 0.0f ? a->scale : 1.0f / sqrtf((float)D);
    for (int j = 0; j < nh; j++) {
        const float *q = a->q + ((size_t)row * a->n_head + (size_t)(h0 + j)) * D;
        for (int i = 0; i < D; i++)
            qs[j][i] = q[i] * scale;
    }
}

/* Keys [k0, k1) of chunk ca of a row whose keys are [k_lo, n_keys). */
static void chunk_keys(int ca, int k_lo, int n_keys, int *k0, int *k1) {
    const int CH = BT_ATTN_CHUNK_KEYS;
    *k0 = ca * CH > k_lo ? ca * CH : k_lo;
    *k1 = (ca + 1) * CH < n_keys ? (ca + 1) * CH : n_keys;
}

/* With partials: chunk c (counted from the row's first) of one row into its partials. */
static void attend_chunk(const bt_attn_args *a, int row, int c, int g, int h0, int nh, int pf_heads,
                         chunk_fn chunk) {
    static _Thread_local float qs[MAXH][MAXD] __attribute__((aligned(64)));
    static _Thread_local red_state part;
    int D = a->head_dim, k_lo = first_key(a, row), k0, k1;
    chunk_keys(k_lo / BT_ATTN_CHUNK_KEYS + c, k_lo, a->pos[row] + 1, &k0, &k1);
    scale_queries(a, row, h0, nh, qs);
    chunk(a->kv, a->layer, bt_kv_layer_table(a->kv, a->layer, a->seq[row]), g, k0, k1, nh, D,
          (const float(*)[MAXD])qs, &part, pf_heads);
    for (int j = 0; j < nh; j++) {
        float *p = partial_of(a, row, c, h0 + j);
        p[0] = part.m[j];
        p[1] = part.l[j];
        memcpy(p + 2, part.acc[j], sizeof(float) * (size_t)D);
    }
}

/* Without partials: rows [r0, r1) whole, chunk by chunk. Row r's running state is m[r - r0],
 * l[r - r0] and its output slice as the accumulator: its first chunk is copied there, each
 * later one folded (fold), then the slice is divided by l: per row the arithmetic of a task
 * of that row alone, in the same order. Rows that see the same keys of a chunk (a prompt's
 * rows below the chunk's end) go through one chunk call, their heads stacked as one group's:
 * a chunk function computes each head on its own, so a row's bits do not change. */
static void attend_rows(const bt_attn_args *a, int r0, int r1, int g, int h0, int nh,
                        chunk_fn chunk) {
    /* the rows' scaled queries, row by row: rows [r, rn) stacked are qs[(r - r0) * nh..) */
    static _Thread_local float qs[BT_ATTN_MAX_TASK_ROWS * MAXH][MAXD] __attribute__((aligned(64)));
    static _Thread_local red_state part;
    const int CH = BT_ATTN_CHUNK_KEYS, D = a->head_dim, stack = MAXH / nh;
    float m[BT_ATTN_MAX_TASK_ROWS][MAXH], l[BT_ATTN_MAX_TASK_ROWS][MAXH];
    int c_first = INT_MAX, c_last = 0;
    for (int r = r0; r < r1; r++) {
        int lo = first_key(a, r) / CH, hi = a->pos[r] / CH;
        c_first = lo < c_first ? lo : c_first;
        c_last = hi > c_last ? hi : c_last;
        scale_queries(a, r, h0, nh, qs + (r - r0) * nh);
    }
    for (int ca = c_first; ca <= c_last; ca++) {
        /* a sequence's first call in the chunk prefetches each next block; its later rows
         * find them cached (a decode batch's rows are other sequences: each prefetches) */
        int prev_seq = -1;
        for (int r = r0, rn; r < r1; r = rn) {
            int k_lo = first_key(a, r), n_keys = a->pos[r] + 1, k0, k1;
            rn = r + 1;
            if (ca < k_lo / CH || ca > a->pos[r] / CH)
                continue;
            chunk_keys(ca, k_lo, n_keys, &k0, &k1);
            /* the next rows of the same sequence with the same keys in this chunk */
            while (rn < r1 && rn - r < stack && a->seq[rn] == a->seq[r]) {
                int j0, j1;
                if (ca < first_key(a, rn) / CH || ca > a->pos[rn] / CH)
                    break;
                chunk_keys(ca, first_key(a, rn), a->pos[rn] + 1, &j0, &j1);
                if (j0 != k0 || j1 != k1)
                    break;
                rn++;
            }
            chunk(a->kv, a->layer, bt_kv_layer_table(a->kv, a->layer, a->seq[r]), g, k0, k1,
                  (rn - r) * nh, D, (const float(*)[MAXD])(qs + (r - r0) * nh), &part,
                  a->seq[r] != prev_seq);
            prev_seq = a->seq[r];
            for (int q = r; q < rn; q++)
                for (int j = 0; j < nh; j++) {
                    int js = (q - r) * nh + j;
                    float *acc = a->out + ((size_t)q * a->n_head + (size_t)(h0 + j)) * D;
                    if (ca == first_key(a, q) / CH) {
                        m[q - r0][j] = part.m[js];
                        l[q - r0][j] = part.l[js];
                        memcpy(acc, part.acc[js], sizeof(float) * (size_t)D);
                    } else {
                        fold(&m[q - r0][j], &l[q - r0][j], acc, part.m[js], part.l[js],
                             part.acc[js], D);
                    }
                }
        }
    }
    for (int r = r0; r < r1; r++)
        for (int j = 0; j < nh; j++) {
            float *out = a->out + ((size_t)r * a->n_head + (size_t)(h0 + j)) * D;
            float inv = 1.0f / l[r - r0][j];
            for (int i = 0; i < D; i++)
                out[i] = out[i] * inv;
        }
}

/* Decodes a task into its rows, chunk (with partials), KV head g and query heads [h0, h1),
 * and computes it. */
static void attend(const bt_attn_args *a, int task, chunk_fn chunk) {
    int group = a->n_head / a->n_head_kv, hpt = task_hpt(a), n_sub = (group + hpt - 1) / hpt;
    assert(a->head_dim <= MAXD);
    if (a->partials) { /* (row, chunk, KV heads [g0, g1)), the first pass prefetching all */
        assert(a->n_rows <= BT_ATTN_SPLIT_MAX_ROWS);
        int row = 0, kpt = task_kv_heads(a), runs = (a->n_head_kv + kpt - 1) / kpt;
        for (; task >= row_tasks(a, row); row++)
            task -= row_tasks(a, row);
        int c = task / runs, g0 = task % runs * kpt;
        int g1 = g0 + kpt < a->n_head_kv ? g0 + kpt : a->n_head_kv;
        /* slices of hpt heads, a group's last one possibly short */
        for (int h0 = g0 * group, h1; h0 < g1 * group; h0 = h1) {
            int g = h0 / group;
            h1 = h0 + hpt < (g + 1) * group ? h0 + hpt : (g + 1) * group;
            attend_chunk(a, row, c, g, h0, h1 - h0, h0 == g0 * group ? g1 - g0 : 1, chunk);
        }
        return;
    }
    int row = task / (a->n_head_kv * n_sub) * task_rows(a), rem = task % (a->n_head_kv * n_sub);
    int g = rem / n_sub;
    int h0 = g * group + (rem % n_sub) * hpt;
    int h1 = h0 + hpt < (g + 1) * group ? h0 + hpt : (g + 1) * group;
    assert(h1 - h0 >= 1 && h1 - h0 <= MAXH);
    attend_rows(a, row, row + task_rows(a) < a->n_rows ? row + task_rows(a) : a->n_rows, g, h0,
                h1 - h0, chunk);
}

void bt_attention_merge(const bt_attn_args *a) {
    if (!a->partials)
        return;
    int D = a->head_dim;
    static _Thread_local float acc[MAXD];
    for (int row = 0; row < a->n_rows; row++) {
        int n_chunks = row_chunks(a, row);
        for (int h = 0; h < a->n_head; h++) {
            const float *p = partial_of(a, row, 0, h);
            float m = p[0], l = p[1];
            memcpy(acc, p + 2, sizeof(float) * (size_t)D);
            for (int c = 1; c < n_chunks; c++) {
                p = partial_of(a, row, c, h);
                fold(&m, &l, acc, p[0], p[1], p + 2, D);
            }
            float *out = a->out + ((size_t)row * a->n_head + (size_t)h) * D;
            float inv = 1.0f / l;
            for (int i = 0; i < D; i++)
                out[i] = acc[i] * inv;
        }
    }
}

void bt_attention_task_ref(const bt_attn_args *a, int task) {
    attend(a, task, chunk_scalar);
}

#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels/cephes_exp.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE_AVX2 __attribute__((target("avx2,fma,f16c"), always_inline)) inline

static INLINE_AVX2 float hsum8(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

BT_CEPHES_EXP(exp8, 256, BT_ROUND256, static INLINE_AVX2)

/* s[0..16) are a block's scores, -inf past its keys. Max of them, rescale of the state,
 * p = exp(s - m) with 0 past the keys, l += sum p (as a tree: the two halves, then hsum8). */
static INLINE_AVX2 void softmax_step(const float *s, float *p, int D, float *m, float *l,
                                     float *acc) {
    __m256 s0 = _mm256_load_ps(s), s1 = _mm256_load_ps(s + 8);
    __m256 x = _mm256_max_ps(s0, s1);
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float mx = _mm_cvtss_f32(h); /* exact: the order of a max does not matter */
    if (mx > *m) {
        float corr = expf(*m - mx);
        __m256 c = _mm256_set1_ps(corr);
        for (int i = 0; i < D; i += 8)
            _mm256_store_ps(acc + i, _mm256_mul_ps(_mm256_load_ps(acc + i), c));
        *l *= corr;
        *m = mx;
    }
    __m256 mm = _mm256_set1_ps(*m), ninf = _mm256_set1_ps(-INFINITY);
    __m256 p0 = _mm256_and_ps(exp8(_mm256_sub_ps(s0, mm)), _mm256_cmp_ps(s0, ninf, _CMP_NEQ_OQ));
    __m256 p1 = _mm256_and_ps(exp8(_mm256_sub_ps(s1, mm)), _mm256_cmp_ps(s1, ninf, _CMP_NEQ_OQ));
    _mm256_store_ps(p, p0);
    _mm256_store_ps(p + 8, p1);
    *l += hsum8(_mm256_add_ps(p0, p1));
}

enum { KT_F16, KT_Q8, KT_F32 };

/* The q8_0 scale of the block holding value i0 of a row, broadcast (zero for other types,
 * whose loads ignore it). */
static INLINE_AVX2 __m256 ldd(const char *row, int i0, const int kt) {
    if (kt != KT_Q8)
        return _mm256_setzero_ps();
    return _mm256_set1_ps(_cvtsh_ss(((const bt_block_q8_0 *)row)[i0 >> 5].d));
}

/* Eight values [i, i+8) of a K or V row of type kt as f32 (i a multiple of 8); d is
 * ldd(row, i, kt). */
static INLINE_AVX2 __m256 ld8(const char *row, int i, __m256 d, const int kt) {
    if (kt == KT_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(row + 2 * (size_t)i)));
    if (kt == KT_F32)
        return _mm256_loadu_ps((const float *)row + i);
    const bt_block_q8_0 *b = (const bt_block_q8_0 *)row + (i >> 5);
    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(b->qs + (i & 31))));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(q), d);
}

/* Scores of keys [t, t+4) of the block for NH (1..3) heads: s[j][t..t+4). Each key's row is
 * converted once for the NH heads. */
static INLINE_AVX2 void scores4(const char *k, size_t rb, int t, int D, const float (*qs)[MAXD],
                                float (*s)[TILE], const int NH, const int kt) {
    const char *r = k + (size_t)t * rb;
    __m256 a[3][4];
#pragma GCC unroll 3
    for (int j = 0; j < NH; j++)
        a[j][0] = a[j][1] = a[j][2] = a[j][3] = _mm256_setzero_ps();
    for (int i0 = 0; i0 < D; i0 += 32) { /* one q8_0 block: its four scales loaded once */
        __m256 d[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            d[c] = ldd(r + (size_t)c * rb, i0, kt);
#pragma GCC unroll 4
        for (int i = i0; i < i0 + 32; i += 8)
        /* key by key, each query load an FMA operand: 12 accumulators and one key (four
         * keys at once spilled registers) */
#pragma GCC unroll 4
            for (int c = 0; c < 4; c++) {
                __m256 kc = ld8(r + (size_t)c * rb, i, d[c], kt);
#pragma GCC unroll 3
                for (int j = 0; j < NH; j++)
                    a[j][c] = _mm256_fmadd_ps(_mm256_load_ps(qs[j] + i), kc, a[j][c]);
            }
    }
#pragma GCC unroll 3
    for (int j = 0; j < NH; j++) {
        __m256 h =
            _mm256_hadd_ps(_mm256_hadd_ps(a[j][0], a[j][1]), _mm256_hadd_ps(a[j][2], a[j][3]));
        _mm_storeu_ps(s[j] + t, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
    }
}

/* The score of key t alone (one of a block's last nk % 4 keys) for nh heads: one 8-lane FMA
 * chain, then hsum8 (another summation tree than scores4's: which keys take it depends only on
 * the row's own position). */
static INLINE_AVX2 void score1(const char *r, int D, const float (*qs)[MAXD], float (*s)[TILE],
                               int t, int nh, const int kt) {
    for (int j = 0; j < nh; j++) {
        __m256 a0 = _mm256_setzero_ps();
        for (int i = 0; i < D; i += 8)
            a0 = _mm256_fmadd_ps(_mm256_load_ps(qs[j] + i), ld8(r, i, ldd(r, i, kt), kt), a0);
        s[j][t] = hsum8(a0);
    }
}

/* acc[j][i0..i0+16) += sum_t p[j][t] v_t for NH heads; each value row converted once. */
static INLINE_AVX2 void values16(const char *v, size_t rb, int nk, int i0, const float (*p)[TILE],
                                 red_state *st, int j0, const int NH, const int kt) {
    /* c[j][0..1]: even keys onto the state, c[j][2..3]: odd keys from zero (two chains per
     * output: an FMA's latency is hidden), added at the end */
    __m256 c[3][4];
#pragma GCC unroll 3
    for (int j = 0; j < NH; j++) {
        c[j][0] = _mm256_load_ps(st->acc[j0 + j] + i0);
        c[j][1] = _mm256_load_ps(st->acc[j0 + j] + i0 + 8);
        c[j][2] = c[j][3] = _mm256_setzero_ps();
    }
    for (int t = 0; t < nk; t += 2)
#pragma GCC unroll 2
        for (int e = 0; e < 2; e++) { /* key t + e into chain e */
            if (t + e == nk)
                break;
            const char *r = v + (size_t)(t + e) * rb;
            __m256 d = ldd(r, i0, kt); /* i0 % 32 is 0 or 16: one q8_0 block */
            __m256 v0 = ld8(r, i0, d, kt), v1 = ld8(r, i0 + 8, d, kt);
#pragma GCC unroll 3
            for (int j = 0; j < NH; j++) {
                __m256 pt = _mm256_set1_ps(p[j0 + j][t + e]);
                c[j][2 * e] = _mm256_fmadd_ps(pt, v0, c[j][2 * e]);
                c[j][2 * e + 1] = _mm256_fmadd_ps(pt, v1, c[j][2 * e + 1]);
            }
        }
#pragma GCC unroll 3
    for (int j = 0; j < NH; j++) {
        _mm256_store_ps(st->acc[j0 + j] + i0, _mm256_add_ps(c[j][0], c[j][2]));
        _mm256_store_ps(st->acc[j0 + j] + i0 + 8, _mm256_add_ps(c[j][1], c[j][3]));
    }
}

/* Prefetches part [i, i + n) of `of` equal parts of bytes at p (the next block's K or V rows,
 * spread over a block's work: one burst of all of it stalled on the outstanding misses). */
static INLINE_AVX2 void prefetch_part(const char *p, size_t bytes, int i, int n, int of) {
    for (size_t c = bytes * (size_t)i / (size_t)of; c < bytes * (size_t)(i + n) / (size_t)of;
         c += 64)
        _mm_prefetch(p + c, _MM_HINT_T0);
}

/* One block (nk keys) for nh heads: scores, softmax step per head, values. While it runs, the
 * pbytes at pk and pv are prefetched: K's during the scores of the first heads, V's during the
 * values. */
static INLINE_AVX2 void block_avx2(const char *k, const char *v, size_t rb, int nk, int D, int nh,
                                   const float (*qs)[MAXD], red_state *st, const char *pk,
                                   const char *pv, size_t pbytes, const int kt) {
    float s[MAXH][TILE] __attribute__((aligned(32)));
    float p[MAXH][TILE] __attribute__((aligned(32)));
    for (int j0 = 0; j0 < nh; j0 += 3) {
        int nj = nh - j0 < 3 ? nh - j0 : 3;
        int t = 0;
        for (; t + 4 <= nk; t += 4) {
            if (j0 == 0)
                prefetch_part(pk, pbytes, t, 4, TILE);
            if (nj == 3)
                scores4(k, rb, t, D, qs + j0, s + j0, 3, kt);
            else if (nj == 2)
                scores4(k, rb, t, D, qs + j0, s + j0, 2, kt);
            else
                scores4(k, rb, t, D, qs + j0, s + j0, 1, kt);
        }
        for (; t < nk; t++) /* the last block's odd keys */
            score1(k + (size_t)t * rb, D, qs + j0, s + j0, t, nj, kt);
    }
    for (int j = 0; j < nh; j++) {
        for (int t = nk; t < TILE; t++)
            s[j][t] = -INFINITY;
        softmax_step(s[j], p[j], D, &st->m[j], &st->l[j], st->acc[j]);
    }
    for (int i0 = 0; i0 < D; i0 += 16) {
        prefetch_part(pv, pbytes, i0, 16, D);
        for (int j0 = 0; j0 < nh; j0 += 3) {
            int nj = nh - j0 < 3 ? nh - j0 : 3;
            if (nj == 3)
                values16(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, 3, kt);
            else if (nj == 2)
                values16(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, 2, kt);
            else
                values16(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, 1, kt);
        }
    }
}

/* Block b of keys [k0, k1) of KV head g: its keys' K and V rows (nk of them, from key t0 of the
 * block: t0 > 0 only in a window's first block), and the rows of pf_heads heads of the next
 * block to prefetch (pbytes 0 at the last block). Plain C: both SIMD levels walk with it. */
typedef struct {
    const char *k, *v, *kn, *vn;
    int nk;
    size_t pbytes;
} kv_block;

static inline kv_block block_at(const bt_kv_cache *kv, int layer, const int32_t *table, int g,
                                int k0, int k1, int b, size_t rb, int pf_heads) {
    size_t head_off = (size_t)g * TILE * rb;
    int t0 = k0 > b * TILE ? k0 - b * TILE : 0; /* as chunk_scalar */
    kv_block kb;
    kb.nk = (k1 - b * TILE < TILE ? k1 - b * TILE : TILE) - t0;
    kb.k = (const char *)bt_kv_block_k(kv, layer, table[b]) + head_off + (size_t)t0 * rb;
    kb.v = (const char *)bt_kv_block_v(kv, layer, table[b]) + head_off + (size_t)t0 * rb;
    kb.kn = kb.k;
    kb.vn = kb.v;
    kb.pbytes = 0;
    if ((b + 1) * TILE < k1) {
        kb.kn = (const char *)bt_kv_block_k(kv, layer, table[b + 1]) + head_off;
        kb.vn = (const char *)bt_kv_block_v(kv, layer, table[b + 1]) + head_off;
        kb.pbytes = (size_t)pf_heads * TILE * rb;
    }
    return kb;
}

static INLINE_AVX2 void chunk_avx2(const bt_kv_cache *kv, int layer, const int32_t *table, int g,
                                   int k0, int k1, int nh, int D, const float (*qs)[MAXD],
                                   red_state *st, int pf_heads, const int kt) {
    size_t rb = bt_kv_row_bytes(bt_kv_cache_params(kv)->type, D);
    state_clear(st, nh, D);
    for (int b = k0 / TILE; b * TILE < k1; b++) {
        kv_block kb = block_at(kv, layer, table, g, k0, k1, b, rb, pf_heads);
        block_avx2(kb.k, kb.v, rb, kb.nk, D, nh, qs, st, kb.kn, kb.vn, kb.pbytes, kt);
    }
}

/* The chunk_fn entry points of one level, one per cache type. */
#define CHUNK_FNS(level, ATTR)                                                                     \
    static ATTR void chunk_##level##_f16(const bt_kv_cache *kv, int layer, const int32_t *table,   \
                                         int g, int k0, int k1, int nh, int D,                     \
                                         const float(*qs)[MAXD], red_state *st, int pf_heads) {    \
        chunk_##level(kv, layer, table, g, k0, k1, nh, D, qs, st, pf_heads, KT_F16);               \
    }                                                                                              \
    static ATTR void chunk_##level##_q8(const bt_kv_cache *kv, int layer, const int32_t *table,    \
                                        int g, int k0, int k1, int nh, int D,                      \
                                        const float(*qs)[MAXD], red_state *st, int pf_heads) {     \
        chunk_##level(kv, layer, table, g, k0, k1, nh, D, qs, st, pf_heads, KT_Q8);                \
    }                                                                                              \
    static ATTR void chunk_##level##_f32(const bt_kv_cache *kv, int layer, const int32_t *table,   \
                                         int g, int k0, int k1, int nh, int D,                     \
                                         const float(*qs)[MAXD], red_state *st, int pf_heads) {    \
        chunk_##level(kv, layer, table, g, k0, k1, nh, D, qs, st, pf_heads, KT_F32);               \
    }

CHUNK_FNS(avx2, AVX2)

/*
 * AVX-512 variant: the AVX2 variant's arithmetic, bit for bit, in 512-bit registers (each
 * output lane sees the same IEEE operations on the same operands in the same order, and
 * -ffp-contract=off keeps the compiler from fusing any of them; the level changes the speed
 * only, which unit.test_attention checks):
 *  - scores: a key pair per register, key a in lanes 0-7 and key b in lanes 8-15, each lane the
 *    AVX2 8-lane FMA chain of its key; the queries' 8 floats broadcast to both halves. Eight keys
 *    (4 registers) per head are reduced together with scores4's tree ((l0+l1) + (l2+l3)) +
 *    ((l4+l5) + (l6+l7)) per key, by shuffles instead of hadds; the keys past the last group of
 *    4 take score1 as in the AVX2 variant.
 *  - softmax: exp16, exp8's one definition (BT_CEPHES_EXP) on 16 lanes; the max and the sum
 *    of p by the AVX2 trees.
 *  - values: 16 dimensions per register and up to 64 per pass over the keys, so each p_t
 *    broadcast serves 4 registers; the even and odd keys' chains as in values16.
 */
#define AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c")))
#define INLINE_AVX512                                                                              \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c"),                     \
                   always_inline)) inline

BT_CEPHES_EXP(exp16, 512, BT_ROUND512, static INLINE_AVX512)

/* softmax_step on 16 lanes. */
static INLINE_AVX512 void softmax_step16(const float *s, float *p, int D, float *m, float *l,
                                         float *acc) {
    __m512 sv = _mm512_load_ps(s);
    __m256 x = _mm256_max_ps(_mm512_castps512_ps256(sv), _mm512_extractf32x8_ps(sv, 1));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    float mx = _mm_cvtss_f32(h);
    if (mx > *m) {
        float corr = expf(*m - mx);
        __m512 c = _mm512_set1_ps(corr);
        for (int i = 0; i < D; i += 16)
            _mm512_store_ps(acc + i, _mm512_mul_ps(_mm512_load_ps(acc + i), c));
        *l *= corr;
        *m = mx;
    }
    __mmask16 live = _mm512_cmp_ps_mask(sv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    __m512 pv = _mm512_maskz_mov_ps(live, exp16(_mm512_sub_ps(sv, _mm512_set1_ps(*m))));
    _mm512_store_ps(p, pv);
    *l += hsum8(_mm256_add_ps(_mm512_castps512_ps256(pv), _mm512_extractf32x8_ps(pv, 1)));
}

/* ldd for a key pair: [d_a x8 | d_b x8] (zero for other types). */
static INLINE_AVX512 __m512 ldd2(const char *ra, const char *rb2, int i0, const int kt) {
    if (kt != KT_Q8)
        return _mm512_setzero_ps();
    return _mm512_insertf32x8(_mm512_castps256_ps512(ldd(ra, i0, kt)), ldd(rb2, i0, kt), 1);
}

/* Values [i, i+8) of K rows a (lanes 0-7) and b (lanes 8-15) as f32; d is ldd2(ra, rb2, i). */
static INLINE_AVX512 __m512 ld8x2(const char *ra, const char *rb2, int i, __m512 d, const int kt) {
    if (kt == KT_F16)
        return _mm512_cvtph_ps(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(ra + 2 * (size_t)i))),
            _mm_loadu_si128((const __m128i *)(rb2 + 2 * (size_t)i)), 1));
    if (kt == KT_F32)
        return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps((const float *)ra + i)),
                                  _mm256_loadu_ps((const float *)rb2 + i), 1);
    const bt_block_q8_0 *ba = (const bt_block_q8_0 *)ra + (i >> 5);
    const bt_block_q8_0 *bb = (const bt_block_q8_0 *)rb2 + (i >> 5);
    __m128i q = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(ba->qs + (i & 31))),
                                   _mm_loadl_epi64((const __m128i *)(bb->qs + (i & 31))));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d);
}

/* ldd on 16 lanes. */
static INLINE_AVX512 __m512 ldd512(const char *row, int i0, const int kt) {
    if (kt != KT_Q8)
        return _mm512_setzero_ps();
    return _mm512_set1_ps(_cvtsh_ss(((const bt_block_q8_0 *)row)[i0 >> 5].d));
}

/* Sixteen values [i, i+16) of a V row as f32 (i a multiple of 16); d is ldd512(row, i). */
static INLINE_AVX512 __m512 ld16(const char *row, int i, __m512 d, const int kt) {
    if (kt == KT_F16)
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + 2 * (size_t)i)));
    if (kt == KT_F32)
        return _mm512_loadu_ps((const float *)row + i);
    const bt_block_q8_0 *b = (const bt_block_q8_0 *)row + (i >> 5);
    __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + (i & 31))));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
}

/* The scores of 8 keys from 4 registers of key pairs (z[p]: keys 2p, 2p+1), in key order, each
 * by scores4's tree: adjacent lanes, then pairs of those (the sum over a 128-bit lane, 4 of a
 * key's 8 lanes), then a key's two 128-bit lanes. */
static INLINE_AVX512 __m256 reduce8(__m512 z0, __m512 z1, __m512 z2, __m512 z3) {
    __m512 p01 = _mm512_add_ps(_mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_ps(z0, z1, _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 p23 = _mm512_add_ps(_mm512_shuffle_ps(z2, z3, _MM_SHUFFLE(2, 0, 2, 0)),
                               _mm512_shuffle_ps(z2, z3, _MM_SHUFFLE(3, 1, 3, 1)));
    /* 128-bit lane c of q: z0..z3's sums over their lane c */
    __m512 q = _mm512_add_ps(_mm512_shuffle_ps(p01, p23, _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_ps(p01, p23, _MM_SHUFFLE(3, 1, 3, 1)));
    /* lanes 0-3: keys 0, 2, 4, 6; lanes 8-11: keys 1, 3, 5, 7 */
    __m512 r = _mm512_add_ps(q, _mm512_shuffle_f32x4(q, q, _MM_SHUFFLE(2, 3, 0, 1)));
    const __m512i order = _mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(order, r));
}

/* Scores of keys [t, t + 2 * NP) (NP 2 or 4 pairs) for NH (1..3) heads: s[j][t..). */
static INLINE_AVX512 void scores_pairs(const char *k, size_t rb, int t, int D,
                                       const float (*qs)[MAXD], float (*s)[TILE], const int NP,
                                       const int NH, const int kt) {
    const char *r = k + (size_t)t * rb;
    __m512 z[6][4];
#pragma GCC unroll 6
    for (int j = 0; j < NH; j++)
        z[j][0] = z[j][1] = z[j][2] = z[j][3] = _mm512_setzero_ps();
    for (int i0 = 0; i0 < D; i0 += 32) {
        __m512 d[4];
#pragma GCC unroll 4
        for (int c = 0; c < NP; c++)
            d[c] = ldd2(r + (size_t)(2 * c) * rb, r + (size_t)(2 * c + 1) * rb, i0, kt);
#pragma GCC unroll 4
        for (int i = i0; i < i0 + 32; i += 8) {
            __m512 qb[6];
#pragma GCC unroll 6
            for (int j = 0; j < NH; j++)
                qb[j] = _mm512_broadcast_f32x8(_mm256_load_ps(qs[j] + i));
#pragma GCC unroll 4
            for (int c = 0; c < NP; c++) {
                __m512 kc =
                    ld8x2(r + (size_t)(2 * c) * rb, r + (size_t)(2 * c + 1) * rb, i, d[c], kt);
#pragma GCC unroll 6
                for (int j = 0; j < NH; j++)
                    z[j][c] = _mm512_fmadd_ps(qb[j], kc, z[j][c]);
            }
        }
    }
#pragma GCC unroll 6
    for (int j = 0; j < NH; j++) {
        if (NP == 4)
            _mm256_storeu_ps(s[j] + t, reduce8(z[j][0], z[j][1], z[j][2], z[j][3]));
        else
            _mm_storeu_ps(s[j] + t,
                          _mm256_castps256_ps128(reduce8(z[j][0], z[j][1], z[j][0], z[j][1])));
    }
}

/* acc[j][i0..i0+16*ND) += sum_t p[j][t] v_t for NH heads (ND 2 or 4 registers of 16); each
 * value row converted once. The first pass of the first heads prefetches part of the next
 * block's V rows per key pair (pbytes 0: none). */
static INLINE_AVX512 void values64(const char *v, size_t rb, int nk, int i0, const float (*p)[TILE],
                                   red_state *st, int j0, const char *pv, size_t pbytes,
                                   const int ND, const int NH, const int kt) {
    __m512 c[6][2][4]; /* [head][chain: even keys onto the state, odd keys from zero][16 dims] */
#pragma GCC unroll 6
    for (int j = 0; j < NH; j++)
#pragma GCC unroll 4
        for (int g = 0; g < ND; g++) {
            c[j][0][g] = _mm512_load_ps(st->acc[j0 + j] + i0 + 16 * g);
            c[j][1][g] = _mm512_setzero_ps();
        }
    for (int t = 0; t < nk; t += 2) {
        prefetch_part(pv, pbytes, t, 2, TILE);
#pragma GCC unroll 2
        for (int e = 0; e < 2; e++) {
            if (t + e == nk)
                break;
            const char *r = v + (size_t)(t + e) * rb;
            __m512 x[4];
#pragma GCC unroll 4
            for (int g = 0; g < ND; g++)
                x[g] = ld16(r, i0 + 16 * g, ldd512(r, i0 + 16 * g, kt), kt);
#pragma GCC unroll 6
            for (int j = 0; j < NH; j++) {
                __m512 pt = _mm512_set1_ps(p[j0 + j][t + e]);
#pragma GCC unroll 4
                for (int g = 0; g < ND; g++)
                    c[j][e][g] = _mm512_fmadd_ps(pt, x[g], c[j][e][g]);
            }
        }
    }
#pragma GCC unroll 6
    for (int j = 0; j < NH; j++)
#pragma GCC unroll 4
        for (int g = 0; g < ND; g++)
            _mm512_store_ps(st->acc[j0 + j] + i0 + 16 * g, _mm512_add_ps(c[j][0][g], c[j][1][g]));
}

/* values64 for nj (1..3, or 6) heads: the register count fixed at compile time (6 heads: 32
 * dimensions per pass). */
static INLINE_AVX512 void values_heads(const char *v, size_t rb, int nk, int i0,
                                       const float (*p)[TILE], red_state *st, int j0, int nj,
                                       const char *pv, size_t pbytes, const int ND, const int kt) {
    if (nj == 6)
        values64(v, rb, nk, i0, p, st, j0, pv, pbytes, 2, 6, kt);
    else if (nj == 3)
        values64(v, rb, nk, i0, p, st, j0, pv, pbytes, ND, 3, kt);
    else if (nj == 2)
        values64(v, rb, nk, i0, p, st, j0, pv, pbytes, ND, 2, kt);
    else
        values64(v, rb, nk, i0, p, st, j0, pv, pbytes, ND, 1, kt);
}

/* scores_pairs for nj (1..3, or 6) heads. */
static INLINE_AVX512 void scores_heads(const char *k, size_t rb, int t, int D,
                                       const float (*qs)[MAXD], float (*s)[TILE], int nj,
                                       const int NP, const int kt) {
    if (nj == 6)
        scores_pairs(k, rb, t, D, qs, s, NP, 6, kt);
    else if (nj == 3)
        scores_pairs(k, rb, t, D, qs, s, NP, 3, kt);
    else if (nj == 2)
        scores_pairs(k, rb, t, D, qs, s, NP, 2, kt);
    else
        scores_pairs(k, rb, t, D, qs, s, NP, 1, kt);
}

/* block_avx2 in 512-bit registers: keys in groups of 8, then 4, then one by one (score1, as
 * block_avx2 takes the keys past its groups of 4); values 64 dimensions per pass. Heads go 3 at
 * a time, or 6 (values 32 dimensions per pass) when attend_rows stacks 2 rows of a group of 3:
 * each K and V row converted once for more heads; per head the same operations. */
static INLINE_AVX512 void block_avx512(const char *k, const char *v, size_t rb, int nk, int D,
                                       int nh, const float (*qs)[MAXD], red_state *st,
                                       const char *pk, const char *pv, size_t pbytes,
                                       const int kt) {
    float s[MAXH][TILE] __attribute__((aligned(64)));
    float p[MAXH][TILE] __attribute__((aligned(64)));
    const int G = nh >= 6 ? 6 : 3; /* heads per pass: 6 when a task's rows are stacked */
    for (int j0 = 0; j0 < nh; j0 += G) {
        int nj = nh - j0 < G ? nh - j0 : G, t = 0;
        for (; t + 8 <= nk; t += 8) {
            if (j0 == 0)
                prefetch_part(pk, pbytes, t, 8, TILE);
            scores_heads(k, rb, t, D, qs + j0, s + j0, nj, 4, kt);
        }
        if (t + 4 <= nk) {
            if (j0 == 0)
                prefetch_part(pk, pbytes, t, 4, TILE);
            scores_heads(k, rb, t, D, qs + j0, s + j0, nj, 2, kt);
            t += 4;
        }
        for (; t < nk; t++)
            score1(k + (size_t)t * rb, D, qs + j0, s + j0, t, nj, kt);
    }
    for (int j = 0; j < nh; j++) {
        for (int t = nk; t < TILE; t++)
            s[j][t] = -INFINITY;
        softmax_step16(s[j], p[j], D, &st->m[j], &st->l[j], st->acc[j]);
    }
    for (int i0 = 0; i0 < D; i0 += 64)
        for (int j0 = 0; j0 < nh; j0 += G) {
            int nj = nh - j0 < G ? nh - j0 : G;
            size_t pf = i0 == 0 && j0 == 0 ? pbytes : 0;
            if (nj > 3) { /* 32 dimensions per pass */
                values_heads(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, nj, pv, pf, 2, kt);
                if (D - i0 > 32)
                    values_heads(v, rb, nk, i0 + 32, (const float(*)[TILE])p, st, j0, nj, pv, 0, 2,
                                 kt);
            } else if (D - i0 >= 64)
                values_heads(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, nj, pv, pf, 4, kt);
            else /* D % 32 == 0: a last pass of 32 */
                values_heads(v, rb, nk, i0, (const float(*)[TILE])p, st, j0, nj, pv, pf, 2, kt);
        }
}

static INLINE_AVX512 void chunk_avx512(const bt_kv_cache *kv, int layer, const int32_t *table,
                                       int g, int k0, int k1, int nh, int D,
                                       const float (*qs)[MAXD], red_state *st, int pf_heads,
                                       const int kt) {
    size_t rb = bt_kv_row_bytes(bt_kv_cache_params(kv)->type, D);
    state_clear(st, nh, D);
    for (int b = k0 / TILE; b * TILE < k1; b++) {
        kv_block kb = block_at(kv, layer, table, g, k0, k1, b, rb, pf_heads);
        block_avx512(kb.k, kb.v, rb, kb.nk, D, nh, qs, st, kb.kn, kb.vn, kb.pbytes, kt);
    }
}

CHUNK_FNS(avx512, AVX512)

static _Atomic int avx2_ok = -1; /* benign race on first use */

/* The variant for this call: the AVX-512 one at the AVX-512 kernel level (BATON_KERNELS and
 * bt_kernels_force move both: their results are equal, so the level is a matter of speed),
 * else the AVX2 one where the CPU has it (a head_dim of whole 32s), else the scalar one. */
static chunk_fn chunk_for(const bt_attn_args *a) {
    if (avx2_ok < 0)
        avx2_ok = bt_cpu_has(BT_CPU_AVX2) && bt_cpu_has(BT_CPU_FMA) && bt_cpu_has(BT_CPU_F16C);
    if (!avx2_ok || a->head_dim % 32 != 0)
        return chunk_scalar;
    bool wide = bt_kernels_level() >= BT_KERNELS_AVX512;
    switch (bt_kv_cache_params(a->kv)->type) {
    case BT_TYPE_F16:
        return wide ? chunk_avx512_f16 : chunk_avx2_f16;
    case BT_TYPE_Q8_0:
        return wide ? chunk_avx512_q8 : chunk_avx2_q8;
    default:
        return wide ? chunk_avx512_f32 : chunk_avx2_f32;
    }
}

void bt_attention_task(const bt_attn_args *a, int task) {
    attend(a, task, chunk_for(a));
}
#else
void bt_attention_task(const bt_attn_args *a, int task) {
    attend(a, task, chunk_scalar);
}
#endif
