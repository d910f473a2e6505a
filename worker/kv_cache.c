/*
 * kv_cache.c - block pools and block tables of the paged KV cache (the global pool, and the
 * window pool of the local layers), and the f16 <-> f32 conversions of its storage.
 */
#include "kv_cache.h"

#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "kv_plan.h"

typedef struct {
    int len;      /* committed positions */
    int n_blocks; /* entries of the tables in use (both tables: logical block numbers) */
    int lo;       /* window table: entries [0, lo) released (-1); 0 without a window pool */
} seq_state;

/* One pool of blocks with the layers stored in it and a block table per sequence. */
typedef struct {
    int n_layer;        /* layers stored in this pool */
    int n_blocks;       /* 0: no pool (a window pool without local layers) */
    char *k;            /* [n_layer][n_blocks][n_head_kv][16][row_bytes] of p.type */
    char *v;            /* same */
    int32_t *free_list; /* [n_blocks], stack of free block ids; n_free used */
    int n_free;
    int32_t *refs;   /* [n_blocks] */
    int32_t *tables; /* [max_seqs][max_blocks_per_seq]; -1 where released */
} kv_pool;

enum { GLOBAL = 0, WINDOW = 1 };

struct bt_kv_cache {
    bt_kv_params p;
    int max_blocks_per_seq;
    size_t row_bytes;    /* one head's K (or V) of one position: bt_kv_row_bytes */
    size_t block_bytes;  /* one block of one layer, K or V: n_head_kv * 16 * row_bytes */
    kv_pool pool[2];     /* GLOBAL, WINDOW */
    uint8_t *layer_pool; /* [n_layer] GLOBAL or WINDOW */
    int32_t *layer_slot; /* [n_layer] the layer's index among its pool's layers */
    seq_state *seqs;     /* [max_seqs] */
};

static void pool_deinit(kv_pool *pl) {
    free(pl->k);
    free(pl->v);
    free(pl->free_list);
    free(pl->refs);
    free(pl->tables);
}

/* Allocates a pool of n_blocks for n_layer layers (storage only when both are >= 1). */
static bool pool_init(kv_pool *pl, const bt_kv_cache *kv, int n_layer, int n_blocks) {
    pl->n_layer = n_layer;
    pl->n_blocks = n_blocks;
    if (n_blocks == 0)
        return true;
    size_t n_bytes = (size_t)n_layer * (size_t)n_blocks * kv->block_bytes;
    if (n_bytes > 0) {
        size_t alloc_bytes = (n_bytes + 63) / 64 * 64;
        pl->k = aligned_alloc(64, alloc_bytes);
        pl->v = aligned_alloc(64, alloc_bytes);
        if (!pl->k || !pl->v)
            return false;
    }
    pl->free_list = malloc((size_t)n_blocks * sizeof(int32_t));
    pl->refs = calloc((size_t)n_blocks, sizeof(int32_t));
    pl->tables = malloc((size_t)kv->p.max_seqs * (size_t)kv->max_blocks_per_seq * sizeof(int32_t));
    if (!pl->free_list || !pl->refs || !pl->tables)
        return false;
    /* Pop order 0, 1, 2, ...: the stack holds the ids in reverse. */
    for (int i = 0; i < n_blocks; i++)
        pl->free_list[i] = n_blocks - 1 - i;
    pl->n_free = n_blocks;
    return true;
}

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
    int n_window_layers = 0;
    for (int l = 0; p->window > 0 && p->window_layers && l < p->n_layer; l++)
        n_window_layers += p->window_layers[l] != 0;
    if (n_window_layers > 0 && p->max_step_rows < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "kv: window %d on %d layers needs max_step_rows >= 1, not %d",
                            p->window, n_window_layers, p->max_step_rows);
    bt_kv_cache *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return bt_error_set(err, BT_ERR_NOMEM, "kv: out of memory");
    kv->p = *p;
    kv->p.window_layers = NULL; /* borrowed for this call only */
    if (n_window_layers == 0)
        kv->p.window = 0;
    kv->max_blocks_per_seq = (p->max_seq_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
    if (kv->max_blocks_per_seq > p->n_blocks)
        kv->max_blocks_per_seq = p->n_blocks;
    kv->row_bytes = bt_kv_row_bytes(p->type, p->head_dim);
    kv->block_bytes = (size_t)p->n_head_kv * BT_KV_BLOCK_TOKENS * kv->row_bytes;
    kv->layer_pool = malloc((size_t)p->n_layer);
    kv->layer_slot = malloc((size_t)p->n_layer * sizeof(int32_t));
    kv->seqs = calloc((size_t)p->max_seqs, sizeof(seq_state));
    if (!kv->layer_pool || !kv->layer_slot || !kv->seqs) {
        bt_kv_cache_free(kv);
        return bt_error_set(err, BT_ERR_NOMEM, "kv: out of memory");
    }
    int n_in[2] = {0, 0};
    for (int l = 0; l < p->n_layer; l++) {
        int which = n_window_layers > 0 && p->window_layers[l] ? WINDOW : GLOBAL;
        kv->layer_pool[l] = (uint8_t)which;
        kv->layer_slot[l] = n_in[which]++;
    }
    int n_window_blocks = n_window_layers > 0 ? bt_kv_window_blocks(p->n_blocks, p->window,
                                                                    p->max_seqs, p->max_step_rows)
                                              : 0;
    if (!pool_init(&kv->pool[GLOBAL], kv, n_in[GLOBAL], p->n_blocks) ||
        !pool_init(&kv->pool[WINDOW], kv, n_in[WINDOW], n_window_blocks)) {
        size_t n_bytes = bt_kv_cache_bytes(kv);
        bt_kv_cache_free(kv);
        return bt_error_set(err, BT_ERR_NOMEM,
                            "kv: cannot allocate %zu bytes for %d blocks and %d window blocks",
                            n_bytes, p->n_blocks, n_window_blocks);
    }
    *out = kv;
    return BT_OK;
}

void bt_kv_cache_free(bt_kv_cache *kv) {
    if (!kv)
        return;
    pool_deinit(&kv->pool[GLOBAL]);
    pool_deinit(&kv->pool[WINDOW]);
    free(kv->layer_pool);
    free(kv->layer_slot);
    free(kv->seqs);
    free(kv);
}

const bt_kv_params *bt_kv_cache_params(const bt_kv_cache *kv) {
    return &kv->p;
}
int bt_kv_n_blocks_free(const bt_kv_cache *kv) {
    return kv->pool[GLOBAL].n_free;
}
int bt_kv_n_window_blocks(const bt_kv_cache *kv) {
    return kv->pool[WINDOW].n_blocks;
}
int bt_kv_window_blocks_free(const bt_kv_cache *kv) {
    return kv->pool[WINDOW].n_free;
}
int bt_kv_n_window_layers(const bt_kv_cache *kv) {
    return kv->pool[WINDOW].n_layer;
}

size_t bt_kv_cache_bytes(const bt_kv_cache *kv) {
    return bt_kv_global_bytes(kv) + bt_kv_window_bytes(kv);
}
size_t bt_kv_global_bytes(const bt_kv_cache *kv) {
    const kv_pool *pl = &kv->pool[GLOBAL];
    return 2 * (size_t)pl->n_layer * (size_t)pl->n_blocks * kv->block_bytes;
}
size_t bt_kv_window_bytes(const bt_kv_cache *kv) {
    const kv_pool *pl = &kv->pool[WINDOW];
    return 2 * (size_t)pl->n_layer * (size_t)pl->n_blocks * kv->block_bytes;
}

static int32_t *table_of(const bt_kv_cache *kv, int which, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->pool[which].tables + (size_t)seq * (size_t)kv->max_blocks_per_seq;
}

int bt_kv_seq_len(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].len;
}

int bt_kv_seq_n_blocks(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].n_blocks;
}

int bt_kv_seq_window_lo(const bt_kv_cache *kv, int seq) {
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].lo;
}

const int32_t *bt_kv_seq_table(const bt_kv_cache *kv, int seq) {
    return table_of(kv, GLOBAL, seq);
}

const int32_t *bt_kv_seq_window_table(const bt_kv_cache *kv, int seq) {
    assert(kv->pool[WINDOW].n_blocks > 0);
    return table_of(kv, WINDOW, seq);
}

const int32_t *bt_kv_layer_table(const bt_kv_cache *kv, int layer, int seq) {
    assert(layer >= 0 && layer < kv->p.n_layer);
    return table_of(kv, kv->layer_pool[layer], seq);
}

int bt_kv_layer_is_window(const bt_kv_cache *kv, int layer) {
    assert(layer >= 0 && layer < kv->p.n_layer);
    return kv->layer_pool[layer] == WINDOW;
}

int bt_kv_block_refs(const bt_kv_cache *kv, int block) {
    assert(block >= 0 && block < kv->pool[GLOBAL].n_blocks);
    return kv->pool[GLOBAL].refs[block];
}

int bt_kv_window_block_refs(const bt_kv_cache *kv, int block) {
    assert(block >= 0 && block < kv->pool[WINDOW].n_blocks);
    return kv->pool[WINDOW].refs[block];
}

/* Storage of (layer, block) in the layer's pool; block -1 (a released window entry) or out of
 * the pool is a reader's bug, caught here. */
static size_t block_offset(const bt_kv_cache *kv, int layer, int block) {
    assert(layer >= 0 && layer < kv->p.n_layer);
    const kv_pool *pl = &kv->pool[kv->layer_pool[layer]];
    assert(block >= 0 && block < pl->n_blocks);
    return ((size_t)kv->layer_slot[layer] * (size_t)pl->n_blocks + (size_t)block) * kv->block_bytes;
}

void *bt_kv_block_k(const bt_kv_cache *kv, int layer, int block) {
    return kv->pool[kv->layer_pool[layer]].k + block_offset(kv, layer, block);
}

void *bt_kv_block_v(const bt_kv_cache *kv, int layer, int block) {
    return kv->pool[kv->layer_pool[layer]].v + block_offset(kv, layer, block);
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

/* The block of pool `which` that growing seq to n_tokens writes into first when that block is
 * already allocated (a partly filled last block), else -1. Never a released window entry: the
 * window keeps the block of position len (released blocks lie wholly before len - window + 1). */
static int32_t written_block(const bt_kv_cache *kv, int which, int seq, int n_tokens) {
    const seq_state *s = &kv->seqs[seq];
    if (n_tokens <= s->len || s->len % BT_KV_BLOCK_TOKENS == 0 ||
        s->len / BT_KV_BLOCK_TOKENS >= s->n_blocks)
        return -1;
    int32_t b = table_of(kv, which, seq)[s->len / BT_KV_BLOCK_TOKENS];
    assert(b >= 0);
    return b;
}

/* Whether writing position `len` of seq would hit a shared block of pool `which`. */
static int write_needs_copy(const bt_kv_cache *kv, int which, int seq, int n_tokens) {
    int32_t b = written_block(kv, which, seq, n_tokens);
    return b >= 0 && kv->pool[which].refs[b] > 1;
}

static int new_blocks(const bt_kv_cache *kv, int seq, int n_tokens) {
    int need = blocks_for(n_tokens) - kv->seqs[seq].n_blocks;
    return need > 0 ? need : 0;
}

int bt_kv_seq_blocks_needed(const bt_kv_cache *kv, int seq, int n_tokens) {
    return new_blocks(kv, seq, n_tokens) + write_needs_copy(kv, GLOBAL, seq, n_tokens);
}

static int batch_needed(const bt_kv_cache *kv, int which, int n, const int32_t *seq,
                        const int32_t *n_tokens) {
    int need = 0;
    for (int i = 0; i < n; i++) {
        need += new_blocks(kv, seq[i], n_tokens[i]);
        int32_t b = written_block(kv, which, seq[i], n_tokens[i]);
        if (b < 0)
            continue;
        /* Writers of a shared block copy it while others still hold it; the last holder
         * writes in place. Earlier writers in this batch have dropped their reference. */
        int refs = kv->pool[which].refs[b];
        for (int j = 0; j < i; j++)
            refs -= written_block(kv, which, seq[j], n_tokens[j]) == b;
        need += refs > 1;
    }
    return need;
}

int bt_kv_batch_blocks_needed(const bt_kv_cache *kv, int n, const int32_t *seq,
                              const int32_t *n_tokens) {
    return batch_needed(kv, GLOBAL, n, seq, n_tokens);
}

int bt_kv_batch_window_blocks_needed(const bt_kv_cache *kv, int n, const int32_t *seq,
                                     const int32_t *n_tokens) {
    return kv->pool[WINDOW].n_blocks > 0 ? batch_needed(kv, WINDOW, n, seq, n_tokens) : 0;
}

static int32_t pop_block(kv_pool *pl) {
    assert(pl->n_free > 0);
    int32_t b = pl->free_list[--pl->n_free];
    assert(pl->refs[b] == 0);
    pl->refs[b] = 1;
    return b;
}

static void release_block(kv_pool *pl, int32_t b) {
    assert(b >= 0 && pl->refs[b] > 0);
    if (--pl->refs[b] == 0)
        pl->free_list[pl->n_free++] = b;
}

/* Copy-on-write of the shared block seq writes into first, in pool `which`. */
static void copy_written(bt_kv_cache *kv, int which, int seq, int n_tokens) {
    if (!write_needs_copy(kv, which, seq, n_tokens))
        return;
    kv_pool *pl = &kv->pool[which];
    int32_t *table = table_of(kv, which, seq);
    int idx = kv->seqs[seq].len / BT_KV_BLOCK_TOKENS;
    int32_t old = table[idx], copy = pop_block(pl);
    size_t layer_bytes = (size_t)pl->n_blocks * kv->block_bytes;
    for (int l = 0; l < pl->n_layer; l++) {
        memcpy(pl->k + l * layer_bytes + (size_t)copy * kv->block_bytes,
               pl->k + l * layer_bytes + (size_t)old * kv->block_bytes, kv->block_bytes);
        memcpy(pl->v + l * layer_bytes + (size_t)copy * kv->block_bytes,
               pl->v + l * layer_bytes + (size_t)old * kv->block_bytes, kv->block_bytes);
    }
    release_block(pl, old);
    table[idx] = copy;
}

bt_status bt_kv_seq_reserve(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err) {
    seq_state *s = &kv->seqs[seq];
    if (n_tokens > kv->p.max_seq_tokens || blocks_for(n_tokens) > kv->max_blocks_per_seq)
        return bt_error_set(err, BT_ERR_LIMIT, "kv: sequence %d length %d exceeds limit %d", seq,
                            n_tokens, kv->p.max_seq_tokens);
    int need = bt_kv_seq_blocks_needed(kv, seq, n_tokens);
    if (need > kv->pool[GLOBAL].n_free)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "kv: sequence %d needs %d blocks for %d tokens, %d free", seq, need,
                            n_tokens, kv->pool[GLOBAL].n_free);
    bool window = kv->pool[WINDOW].n_blocks > 0;
    int need_w =
        window ? new_blocks(kv, seq, n_tokens) + write_needs_copy(kv, WINDOW, seq, n_tokens) : 0;
    if (need_w > kv->pool[WINDOW].n_free)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "kv: sequence %d needs %d window blocks for %d tokens, %d free of %d "
                            "(sized for %d sequences and %d rows per step)",
                            seq, need_w, n_tokens, kv->pool[WINDOW].n_free,
                            kv->pool[WINDOW].n_blocks, kv->p.max_seqs, kv->p.max_step_rows);
    copy_written(kv, GLOBAL, seq, n_tokens);
    if (window)
        copy_written(kv, WINDOW, seq, n_tokens);
    int32_t *tg = table_of(kv, GLOBAL, seq);
    int32_t *tw = window ? table_of(kv, WINDOW, seq) : NULL;
    while (s->n_blocks < blocks_for(n_tokens)) {
        if (tw)
            tw[s->n_blocks] = pop_block(&kv->pool[WINDOW]);
        tg[s->n_blocks++] = pop_block(&kv->pool[GLOBAL]);
    }
    return BT_OK;
}

/* The first window entry that the next query of a sequence of length len needs: the block of
 * its first key, len - window + 1 (attention.h). */
static int window_first(const bt_kv_cache *kv, int len) {
    int first_key = len - kv->p.window + 1;
    return first_key > 0 ? first_key / BT_KV_BLOCK_TOKENS : 0;
}

void bt_kv_seq_set_len(bt_kv_cache *kv, int seq, int n_tokens) {
    seq_state *s = &kv->seqs[seq];
    assert(n_tokens >= 0 && blocks_for(n_tokens) <= s->n_blocks);
    assert(kv->pool[WINDOW].n_blocks == 0 || n_tokens >= s->len);
    s->len = n_tokens;
    if (kv->pool[WINDOW].n_blocks == 0)
        return;
    /* Release the window blocks lying wholly before the next query's first key. */
    int lo = window_first(kv, n_tokens);
    int32_t *tw = table_of(kv, WINDOW, seq);
    for (; s->lo < lo && s->lo < s->n_blocks; s->lo++) {
        release_block(&kv->pool[WINDOW], tw[s->lo]);
        tw[s->lo] = -1;
    }
}

/* Releases the entries [keep, n_blocks) of both tables, and with keep 0 the window's released
 * prefix too. */
static void drop_blocks(bt_kv_cache *kv, int seq, int keep) {
    seq_state *s = &kv->seqs[seq];
    int32_t *tg = table_of(kv, GLOBAL, seq);
    int32_t *tw = kv->pool[WINDOW].n_blocks > 0 ? table_of(kv, WINDOW, seq) : NULL;
    while (s->n_blocks > keep) {
        --s->n_blocks;
        release_block(&kv->pool[GLOBAL], tg[s->n_blocks]);
        if (tw && s->n_blocks >= s->lo)
            release_block(&kv->pool[WINDOW], tw[s->n_blocks]);
    }
    if (s->lo > s->n_blocks)
        s->lo = s->n_blocks;
}

bt_status bt_kv_seq_truncate(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err) {
    seq_state *s = &kv->seqs[seq];
    if (n_tokens < 0 || n_tokens > s->len)
        return bt_error_set(err, BT_ERR_RANGE, "kv: truncate sequence %d to %d, length is %d", seq,
                            n_tokens, s->len);
    if (kv->pool[WINDOW].n_blocks > 0 && n_tokens > 0 && window_first(kv, n_tokens) < s->lo) {
        int first_key = n_tokens - kv->p.window + 1;
        return bt_error_set(err, BT_ERR_RANGE,
                            "kv: truncate sequence %d to %d: the local layers' window of %d keys "
                            "needs position %d on, but positions before %d were released (only "
                            "truncate to 0 or to at least %d)",
                            seq, n_tokens, kv->p.window, first_key > 0 ? first_key : 0,
                            s->lo * BT_KV_BLOCK_TOKENS,
                            s->lo * BT_KV_BLOCK_TOKENS + kv->p.window - 1);
    }
    drop_blocks(kv, seq, blocks_for(n_tokens));
    s->len = n_tokens;
    return BT_OK;
}

void bt_kv_seq_free(bt_kv_cache *kv, int seq) {
    drop_blocks(kv, seq, 0);
    kv->seqs[seq].len = 0;
}

bt_status bt_kv_seq_fork(bt_kv_cache *kv, int src, int dst, bt_error *err) {
    if (src == dst || kv->seqs[dst].n_blocks != 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "kv: fork %d -> %d: destination must be another, empty sequence", src,
                            dst);
    seq_state *s = &kv->seqs[src], *d = &kv->seqs[dst];
    /* Only the blocks holding committed positions are shared; the window's released entries
     * stay released. */
    int n = blocks_for(s->len);
    const int32_t *ts = table_of(kv, GLOBAL, src);
    int32_t *td = table_of(kv, GLOBAL, dst);
    for (int i = 0; i < n; i++) {
        td[i] = ts[i];
        kv->pool[GLOBAL].refs[ts[i]]++;
    }
    d->lo = 0;
    if (kv->pool[WINDOW].n_blocks > 0) {
        const int32_t *ws = table_of(kv, WINDOW, src);
        int32_t *wd = table_of(kv, WINDOW, dst);
        d->lo = s->lo < n ? s->lo : n;
        for (int i = 0; i < d->lo; i++)
            wd[i] = -1;
        for (int i = d->lo; i < n; i++) {
            wd[i] = ws[i];
            kv->pool[WINDOW].refs[ws[i]]++;
        }
    }
    d->n_blocks = n;
    d->len = s->len;
    return BT_OK;
}
