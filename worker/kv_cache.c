/*
 * kv_cache.c - block pool and block tables of the paged KV cache.
 */
#include "kv_cache.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int len;      /* committed positions */
    int n_blocks; /* entries of the table in use */
} seq_state;

struct bt_kv_cache {
    bt_kv_params p;
    int max_blocks_per_seq;
    size_t block_floats;    /* floats of one block of one layer, K or V */
    float *k;               /* [n_layer][n_blocks][n_head_kv][16][head_dim] */
    float *v;               /* same */
    int32_t *free_list;     /* [n_blocks], stack of free block ids; n_free used */
    int n_free;
    int32_t *refs;          /* [n_blocks] */
    int32_t *tables;        /* [max_seqs][max_blocks_per_seq] */
    seq_state *seqs;        /* [max_seqs] */
};

bt_status bt_kv_cache_new(const bt_kv_params *params, bt_kv_cache **out, bt_error *err)
{
    *out = NULL;
    const bt_kv_params *p = params;
    if (p->n_layer < 1 || p->n_head_kv < 1 || p->head_dim < 1 || p->n_blocks < 1 ||
        p->max_seqs < 1 || p->max_seq_tokens < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "kv: n_layer %d, n_head_kv %d, head_dim %d, n_blocks %d, max_seqs "
                            "%d, max_seq_tokens %d must all be >= 1", p->n_layer, p->n_head_kv,
                            p->head_dim, p->n_blocks, p->max_seqs, p->max_seq_tokens);
    bt_kv_cache *kv = calloc(1, sizeof(*kv));
    if (!kv)
        return bt_error_set(err, BT_ERR_NOMEM, "kv: out of memory");
    kv->p = *p;
    kv->max_blocks_per_seq = (p->max_seq_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
    if (kv->max_blocks_per_seq > p->n_blocks)
        kv->max_blocks_per_seq = p->n_blocks;
    kv->block_floats = (size_t)p->n_head_kv * BT_KV_BLOCK_TOKENS * (size_t)p->head_dim;
    size_t n_floats = (size_t)p->n_layer * (size_t)p->n_blocks * kv->block_floats;
    kv->k = aligned_alloc(64, n_floats * sizeof(float));
    kv->v = aligned_alloc(64, n_floats * sizeof(float));
    kv->free_list = malloc((size_t)p->n_blocks * sizeof(int32_t));
    kv->refs = calloc((size_t)p->n_blocks, sizeof(int32_t));
    kv->tables = malloc((size_t)p->max_seqs * (size_t)kv->max_blocks_per_seq * sizeof(int32_t));
    kv->seqs = calloc((size_t)p->max_seqs, sizeof(seq_state));
    if (!kv->k || !kv->v || !kv->free_list || !kv->refs || !kv->tables || !kv->seqs) {
        bt_kv_cache_free(kv);
        return bt_error_set(err, BT_ERR_NOMEM, "kv: cannot allocate %zu bytes for %d blocks",
                            2 * n_floats * sizeof(float), p->n_blocks);
    }
    /* Pop order 0, 1, 2, ...: the stack holds the ids in reverse. */
    for (int i = 0; i < p->n_blocks; i++)
        kv->free_list[i] = p->n_blocks - 1 - i;
    kv->n_free = p->n_blocks;
    *out = kv;
    return BT_OK;
}

void bt_kv_cache_free(bt_kv_cache *kv)
{
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

const bt_kv_params *bt_kv_cache_params(const bt_kv_cache *kv) { return &kv->p; }
int bt_kv_n_blocks_free(const bt_kv_cache *kv) { return kv->n_free; }

size_t bt_kv_cache_bytes(const bt_kv_cache *kv)
{
    return 2 * (size_t)kv->p.n_layer * (size_t)kv->p.n_blocks * kv->block_floats * sizeof(float);
}

static int32_t *table_of(const bt_kv_cache *kv, int seq)
{
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->tables + (size_t)seq * (size_t)kv->max_blocks_per_seq;
}

int bt_kv_seq_len(const bt_kv_cache *kv, int seq)
{
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].len;
}

int bt_kv_seq_n_blocks(const bt_kv_cache *kv, int seq)
{
    assert(seq >= 0 && seq < kv->p.max_seqs);
    return kv->seqs[seq].n_blocks;
}

const int32_t *bt_kv_seq_table(const bt_kv_cache *kv, int seq) { return table_of(kv, seq); }

int bt_kv_block_refs(const bt_kv_cache *kv, int block)
{
    assert(block >= 0 && block < kv->p.n_blocks);
    return kv->refs[block];
}

float *bt_kv_block_k(const bt_kv_cache *kv, int layer, int block)
{
    return kv->k + ((size_t)layer * (size_t)kv->p.n_blocks + (size_t)block) * kv->block_floats;
}

float *bt_kv_block_v(const bt_kv_cache *kv, int layer, int block)
{
    return kv->v + ((size_t)layer * (size_t)kv->p.n_blocks + (size_t)block) * kv->block_floats;
}

static int blocks_for(int n_tokens)
{
    return (n_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

/* Whether writing position `len` of seq would hit a shared block. */
static int write_needs_copy(const bt_kv_cache *kv, int seq, int n_tokens)
{
    const seq_state *s = &kv->seqs[seq];
    if (n_tokens <= s->len || s->len % BT_KV_BLOCK_TOKENS == 0 ||
        s->len / BT_KV_BLOCK_TOKENS >= s->n_blocks)
        return 0;
    return kv->refs[table_of(kv, seq)[s->len / BT_KV_BLOCK_TOKENS]] > 1;
}

int bt_kv_seq_blocks_needed(const bt_kv_cache *kv, int seq, int n_tokens)
{
    const seq_state *s = &kv->seqs[seq];
    int need = blocks_for(n_tokens) - s->n_blocks;
    return (need > 0 ? need : 0) + write_needs_copy(kv, seq, n_tokens);
}

static int32_t pop_block(bt_kv_cache *kv)
{
    assert(kv->n_free > 0);
    int32_t b = kv->free_list[--kv->n_free];
    assert(kv->refs[b] == 0);
    kv->refs[b] = 1;
    return b;
}

static void release_block(bt_kv_cache *kv, int32_t b)
{
    assert(kv->refs[b] > 0);
    if (--kv->refs[b] == 0)
        kv->free_list[kv->n_free++] = b;
}

bt_status bt_kv_seq_reserve(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err)
{
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
            memcpy(bt_kv_block_k(kv, l, copy), bt_kv_block_k(kv, l, old),
                   kv->block_floats * sizeof(float));
            memcpy(bt_kv_block_v(kv, l, copy), bt_kv_block_v(kv, l, old),
                   kv->block_floats * sizeof(float));
        }
        release_block(kv, old);
        table[idx] = copy;
    }
    while (s->n_blocks < blocks_for(n_tokens))
        table[s->n_blocks++] = pop_block(kv);
    return BT_OK;
}

void bt_kv_seq_set_len(bt_kv_cache *kv, int seq, int n_tokens)
{
    seq_state *s = &kv->seqs[seq];
    assert(n_tokens >= 0 && blocks_for(n_tokens) <= s->n_blocks);
    s->len = n_tokens;
}

bt_status bt_kv_seq_truncate(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err)
{
    seq_state *s = &kv->seqs[seq];
    if (n_tokens < 0 || n_tokens > s->len)
        return bt_error_set(err, BT_ERR_RANGE, "kv: truncate sequence %d to %d, length is %d",
                            seq, n_tokens, s->len);
    int32_t *table = table_of(kv, seq);
    int keep = blocks_for(n_tokens);
    while (s->n_blocks > keep)
        release_block(kv, table[--s->n_blocks]);
    s->len = n_tokens;
    return BT_OK;
}

void bt_kv_seq_free(bt_kv_cache *kv, int seq)
{
    seq_state *s = &kv->seqs[seq];
    int32_t *table = table_of(kv, seq);
    while (s->n_blocks > 0)
        release_block(kv, table[--s->n_blocks]);
    s->len = 0;
}

bt_status bt_kv_seq_fork(bt_kv_cache *kv, int src, int dst, bt_error *err)
{
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
