/*
 * kv_cache.c - block pool and block tables of the paged KV cache, and the f16 <-> f32
 * conversions of its storage.
 */
#include "kv_cache.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"

typedef struct {
    int len;      /* committed positions */
    int n_blocks; /* entries of the table in use */
} seq_state;

struct bt_kv_cache {
    bt_kv_params p;
    int max_blocks_per_seq;
    size_t row_bytes;   /* one head's K (or V) of one position: bt_kv_row_bytes */
    size_t block_bytes; /* one block of one layer, K or V: n_head_kv * 16 * row_bytes */
    char *k;            /* [n_layer][n_blocks][n_head_kv][16][row_bytes] of p.type */
    char *v;            /* same */
    int32_t *free_list; /* [n_blocks], stack of free block ids; n_free used */
    int n_free;
    int32_t *refs;   /* [n_blocks] */
    int32_t *tables; /* [max_seqs][max_blocks_per_seq] */
    seq_state *seqs; /* [max_seqs] */
};

bt_status bt_kv_cache_new(const bt_kv_params *params, bt_kv_cache **out, bt_error *err) {
    *out = NULL;
    const bt_kv_params *p = params;
    if (p->n_layer < 1 || p->n_head_kv < 1 || p->head_dim < 1 || p->n_blocks < 1 ||
        p->max_seqs < 1 || p->max_seq_tokens < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "kv: n_layer %d, n_head_kv %d, head_dim %d, n_blocks %d, max_seqs "
                            "%d, max_seq_tokens %d must all be >= 1",
                            p->n_layer, p->n_head_kv, p->head_dim, p->n_blocks, p->max_seqs,
                            p->max_seq_tokens);
    if (p->type != BT_TYPE_F16 && p->type != BT_TYPE_F32 && p->type != BT_TYPE_Q8_0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "kv: type %d (%s) is not f16, f32 or q8_0",
                            (int)p->type, bt_type_name((uint32_t)p->type));
    if (p->type == BT_TYPE_Q8_0 && p->head_dim % BT_QK != 0)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "kv: q8_0 needs head_dim a multiple of %d, the model's is %d", BT_QK,
                            p->head_dim);
    bt_kv_cache *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return bt_error_set(err, BT_ERR_NOMEM, "kv: out of memory");
    kv->p = *p;
    kv->max_blocks_per_seq = (p->max_seq_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
    if (kv->max_blocks_per_seq > p->n_blocks)
        kv->max_blocks_per_seq = p->n_blocks;
    kv->row_bytes = bt_kv_row_bytes(p->type, p->head_dim);
    kv->block_bytes = (size_t)p->n_head_kv * BT_KV_BLOCK_TOKENS * kv->row_bytes;
    size_t n_bytes = (size_t)p->n_layer * (size_t)p->n_blocks * kv->block_bytes;
    size_t alloc_bytes = (n_bytes + 63) / 64 * 64;
    kv->k = aligned_alloc(64, alloc_bytes);
    kv->v = aligned_alloc(64, alloc_bytes);
    kv->free_list = malloc((size_t)p->n_blocks * sizeof(int32_t));
    kv->refs = calloc((size_t)p->n_blocks, sizeof(int32_t));
    kv->tables = malloc((size_t)p->max_seqs * (size_t)kv->max_blocks_per_seq * sizeof(int32_t));
    kv->seqs = calloc((size_t)p->max_seqs, sizeof(seq_state));
    if (!kv->k || !kv->v || !kv->free_list || !kv->refs || !kv->tables || !kv->seqs) {
        bt_kv_cache_free(kv);
        return bt_error_set(err, BT_ERR_NOMEM, "kv: cannot allocate %zu bytes for %d blocks",
                            2 * n_bytes, p->n_blocks);
    }
    /* Pop order 0, 1, 2, ...: the stack holds the ids in reverse. */
    for (int i = 0; i < p->n_blocks; i++)
        kv->free_list[i] = p->n_blocks - 1 - i;
    kv->n_free = p->n_blocks;
    *out = kv;
    return BT_OK;
}

void bt_kv_cache_free(bt_kv_cache *kv) {
    if (!kv)
        return;
    free(kv->k);
    free(kv->v);
    free(kv->free_list);
    free(kv->refs);
    free(kv->tables);
    free(kv->seqs);
    free(kv);
}

const bt_kv_params *bt_kv_cache_params(const bt_kv_cache *kv) {
    return &kv->p;
}
int bt_kv_n_blocks_free(const bt_kv_cache *kv) {
    return kv->n_free;
}

size_t bt_kv_cache_bytes(const bt_kv_cache *kv) {
    return 2 * (size_t)kv->p.n_layer * (size_t)kv->p.n_blocks * kv->block_bytes;
}

static int32_t *table_of(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->tables + (size_t)seq * (size_t)kv->max_blocks_per_seq;
}

int bt_kv_seq_len(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].len;
}

int bt_kv_seq_n_blocks(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].n_blocks;
}

const int32_t *bt_kv_seq_table(const bt_kv_cache *kv, int seq) {
    return table_of(kv, seq);
}

int bt_kv_block_refs(const bt_kv_cache *kv, int block) {
    assert(block >= 0 && block < kv->p.n_blocks);
    return kv->refs[block];
}

static size_t block_offset(const bt_kv_cache *kv, int layer, int block) {
    assert(layer >= 0 && layer < kv->p.n_layer && block >= 0 && block < kv->p.n_blocks);
    return ((size_t)layer * (size_t)kv->p.n_blocks + (size_t)block) * kv->block_bytes;
}

void *bt_kv_block_k(const bt_kv_cache *kv, int layer, int block) {
    return kv->k + block_offset(kv, layer, block);
}

void *bt_kv_block_v(const bt_kv_cache *kv, int layer, int block) {
    return kv->v + block_offset(kv, layer, block);
}

/* ---- f16 conversions ---- */

static void f32_to_f16_scalar(const float *src, bt_half *dst, int n) {
    for (int i = 0; i < n; i++)
        dst[i] = bt_f32_to_half(src[i]);
}

static void f16_to_f32_scalar(const bt_half *src, float *dst, int n) {
    for (int i = 0; i < n; i++)
        dst[i] = bt_half_to_f32(src[i]);
}

#if defined(__x86_64__)
#include <immintrin.h>

#define F16C __attribute__((target("avx2,f16c,fma")))

static F16C void f32_to_f16_f16c(const float *src, bt_half *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    f32_to_f16_scalar(src + i, dst + i, n - i);
}

static F16C void f16_to_f32_f16c(const bt_half *src, float *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    f16_to_f32_scalar(src + i, dst + i, n - i);
}

static int have_f16c(void) {
    static _Atomic int cached = -1; /* benign race: every thread computes the same value */
    if (cached < 0)
        cached = bt_cpu_has(BT_CPU_F16C) && bt_cpu_has(BT_CPU_AVX2);
    return cached;
}

void bt_kv_f32_to_f16(const float *src, bt_half *dst, int n) {
    if (have_f16c())
        f32_to_f16_f16c(src, dst, n);
    else
        f32_to_f16_scalar(src, dst, n);
}

void bt_kv_f16_to_f32(const bt_half *src, float *dst, int n) {
    if (have_f16c())
        f16_to_f32_f16c(src, dst, n);
    else
        f16_to_f32_scalar(src, dst, n);
}
#else
void bt_kv_f32_to_f16(const float *src, bt_half *dst, int n) {
    f32_to_f16_scalar(src, dst, n);
}
void bt_kv_f16_to_f32(const bt_half *src, float *dst, int n) {
    f16_to_f32_scalar(src, dst, n);
}
#endif

size_t bt_kv_row_bytes(bt_type type, int head_dim) {
    switch (type) {
    case BT_TYPE_F16:
        return (size_t)head_dim * sizeof(bt_half);
    case BT_TYPE_Q8_0:
        return (size_t)(head_dim / BT_QK) * sizeof(bt_block_q8_0);
    default:
        return (size_t)head_dim * sizeof(float);
    }
}

void bt_kv_store(bt_kv_cache *kv, int layer, int block, int slot, const float *k, const float *v) {
    int D = kv->p.head_dim;
    assert(slot >= 0 && slot < BT_KV_BLOCK_TOKENS);
    char *kb = bt_kv_block_k(kv, layer, block), *vb = bt_kv_block_v(kv, layer, block);
    for (int g = 0; g < kv->p.n_head_kv; g++) {
        size_t off = ((size_t)g * BT_KV_BLOCK_TOKENS + (size_t)slot) * kv->row_bytes;
        const float *kg = k + (size_t)g * D, *vg = v + (size_t)g * D;
        switch (kv->p.type) {
        case BT_TYPE_F16:
            bt_kv_f32_to_f16(kg, (bt_half *)(kb + off), D);
            bt_kv_f32_to_f16(vg, (bt_half *)(vb + off), D);
            break;
        case BT_TYPE_Q8_0:
            bt_quantize_row_q8_0(kg, (bt_block_q8_0 *)(kb + off), D);
            bt_quantize_row_q8_0(vg, (bt_block_q8_0 *)(vb + off), D);
            break;
        default:
            memcpy(kb + off, kg, sizeof(float) * (size_t)D);
            memcpy(vb + off, vg, sizeof(float) * (size_t)D);
            break;
        }
    }
}

static int blocks_for(int n_tokens) {
    return (n_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

/* The block that growing seq to n_tokens writes into first when that block is already
 * allocated (a partly filled last block), else -1. */
static int32_t written_block(const bt_kv_cache *kv, int seq, int n_tokens) {
    const seq_state *s = &kv->seqs[seq];
    if (n_tokens <= s->len || s->len % BT_KV_BLOCK_TOKENS == 0 ||
        s->len / BT_KV_BLOCK_TOKENS >= s->n_blocks)
        return -1;
    return table_of(kv, seq)[s->len / BT_KV_BLOCK_TOKENS];
}

/* Whether writing position `len` of seq would hit a shared block. */
static int write_needs_copy(const bt_kv_cache *kv, int seq, int n_tokens) {
    int32_t b = written_block(kv, seq, n_tokens);
    return b >= 0 && kv->refs[b] > 1;
}

static int new_blocks(const bt_kv_cache *kv, int seq, int n_tokens) {
    int need = blocks_for(n_tokens) - kv->seqs[seq].n_blocks;
    return need > 0 ? need : 0;
}

int bt_kv_seq_blocks_needed(const bt_kv_cache *kv, int seq, int n_tokens) {
    return new_blocks(kv, seq, n_tokens) + write_needs_copy(kv, seq, n_tokens);
}

int bt_kv_batch_blocks_needed(const bt_kv_cache *kv, int n, const int32_t *seq,
                              const int32_t *n_tokens) {
    int need = 0;
    for (int i = 0; i < n; i++) {
        need += new_blocks(kv, seq[i], n_tokens[i]);
        int32_t b = written_block(kv, seq[i], n_tokens[i]);
        if (b < 0)
            continue;
        /* Writers of a shared block copy it while others still hold it; the last holder
         * writes in place. Earlier writers in this batch have dropped their reference. */
        int refs = kv->refs[b];
        for (int j = 0; j < i; j++)
            refs -= written_block(kv, seq[j], n_tokens[j]) == b;
        need += refs > 1;
    }
    return need;
}

static int32_t pop_block(bt_kv_cache *kv) {
    assert(kv->n_free > 0);
    int32_t b = kv->free_list[--kv->n_free];
    assert(kv->refs[b] == 0);
    kv->refs[b] = 1;
    return b;
}

static void release_block(bt_kv_cache *kv, int32_t b) {
    assert(kv->refs[b] > 0);
    if (--kv->refs[b] == 0)
        kv->free_list[kv->n_free++] = b;
}

bt_status bt_kv_seq_reserve(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err) {
    seq_state *s = &kv->seqs[seq];
    if (n_tokens > kv->p.max_seq_tokens || blocks_for(n_tokens) > kv->max_blocks_per_seq)
        return bt_error_set(err, BT_ERR_LIMIT, "kv: sequence %d length %d exceeds limit %d", seq,
                            n_tokens, kv->p.max_seq_tokens);
    int need = bt_kv_seq_blocks_needed(kv, seq, n_tokens);
    if (need > kv->n_free)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "kv: sequence %d needs %d blocks for %d tokens, %d free", seq, need,
                            n_tokens, kv->n_free);
    int32_t *table = table_of(kv, seq);
    if (write_needs_copy(kv, seq, n_tokens)) {
        int idx = s->len / BT_KV_BLOCK_TOKENS;
        int32_t old = table[idx], copy = pop_block(kv);
        for (int l = 0; l < kv->p.n_layer; l++) {
            memcpy(bt_kv_block_k(kv, l, copy), bt_kv_block_k(kv, l, old), kv->block_bytes);
            memcpy(bt_kv_block_v(kv, l, copy), bt_kv_block_v(kv, l, old), kv->block_bytes);
        }
        release_block(kv, old);
        table[idx] = copy;
    }
    while (s->n_blocks < blocks_for(n_tokens))
        table[s->n_blocks++] = pop_block(kv);
    return BT_OK;
}

void bt_kv_seq_set_len(bt_kv_cache *kv, int seq, int n_tokens) {
    seq_state *s = &kv->seqs[seq];
    assert(n_tokens >= 0 && blocks_for(n_tokens) <= s->n_blocks);
    s->len = n_tokens;
}

bt_status bt_kv_seq_truncate(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err) {
    seq_state *s = &kv->seqs[seq];
    if (n_tokens < 0 || n_tokens > s->len)
        return bt_error_set(err, BT_ERR_RANGE, "kv: truncate sequence %d to %d, length is %d", seq,
                            n_tokens, s->len);
    int32_t *table = table_of(kv, seq);
    int keep = blocks_for(n_tokens);
    while (s->n_blocks > keep)
        release_block(kv, table[--s->n_blocks]);
    s->len = n_tokens;
    return BT_OK;
}

void bt_kv_seq_free(bt_kv_cache *kv, int seq) {
    seq_state *s = &kv->seqs[seq];
    int32_t *table = table_of(kv, seq);
    while (s->n_blocks > 0)
        release_block(kv, table[--s->n_blocks]);
    s->len = 0;
}

bt_status bt_kv_seq_fork(bt_kv_cache *kv, int src, int dst, bt_error *err) {
    if (src == dst || kv->seqs[dst].n_blocks != 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "kv: fork %d -> %d: destination must be another, empty sequence", src,
                            dst);
    seq_state *s = &kv->seqs[src], *d = &kv->seqs[dst];
    const int32_t *ts = table_of(kv, src);
    int32_t *td = table_of(kv, dst);
    /* Only the blocks holding committed positions are shared. */
    int n = blocks_for(s->len);
    for (int i = 0; i < n; i++) {
        td[i] = ts[i];
        kv->refs[ts[i]]++;
    }
    d->n_blocks = n;
    d->len = s->len;
    return BT_OK;
}
