/*
 * weights.c - finding and checking a stage's tensors by name, and their packed copies.
 */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"

static bt_status find(const bt_gguf *g, const char *name, bool required, const bt_gguf_tensor **out,
                      bt_error *err) {
    *out = bt_gguf_find_tensor(g, name);
    if (!*out && required)
        return bt_error_set(err, BT_ERR_NOT_FOUND, "weights: tensor %s is missing", name);
    return BT_OK;
}

static bt_status load_vector(const bt_gguf *g, const char *name, int64_t n, bool required,
                             const float **out, bt_error *err) {
    const bt_gguf_tensor *t;
    *out = NULL;
    bt_status st = find(g, name, required, &t, err);
    if (st != BT_OK || !t)
        return st;
    if (t->type != BT_TYPE_F32)
        return bt_error_set(err, BT_ERR_UNSUPPORTED, "weights: tensor %s has type %s, want f32",
                            name, bt_type_name(t->type));
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "weights: tensor %s has shape [%lld, %lld, %lld, %lld], want [%lld]",
                            name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                            (long long)t->ne[3], (long long)n);
    if ((uintptr_t)t->data % sizeof(float) != 0)
        return bt_error_set(err, BT_ERR_FORMAT, "weights: tensor %s data is not 4-byte aligned",
                            name);
    *out = t->data;
    return BT_OK;
}

static bt_status load_matrix(const bt_gguf *g, const char *name, int64_t n_cols, int64_t n_rows,
                             bool required, bt_matrix *out, bt_error *err) {
    const bt_gguf_tensor *t;
    memset(out, 0, sizeof(*out));
    bt_status st = find(g, name, required, &t, err);
    if (st != BT_OK || !t)
        return st;
    const bt_type_traits *tr = bt_type_traits_of(t->type);
    if (!tr || !tr->supported)
        return bt_error_set(err, BT_ERR_UNSUPPORTED, "weights: tensor %s has unsupported type %s",
                            name, bt_type_name(t->type));
    if (t->ne[0] != n_cols || t->ne[1] != n_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "weights: tensor %s has shape [%lld, %lld, %lld, %lld], want "
                            "[%lld, %lld]",
                            name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                            (long long)t->ne[3], (long long)n_cols, (long long)n_rows);
    size_t row_bytes;
    if (bt_type_row_bytes(t->type, n_cols, &row_bytes) != BT_OK)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "weights: tensor %s row of %lld is not whole %s blocks", name,
                            (long long)n_cols, bt_type_name(t->type));
    if (row_bytes != t->row_bytes || t->n_bytes != row_bytes * (size_t)n_rows)
        return bt_error_set(err, BT_ERR_FORMAT, "weights: tensor %s has %zu bytes, want %zu", name,
                            t->n_bytes, row_bytes * (size_t)n_rows);
    out->data = t->data;
    out->type = (bt_type)t->type;
    out->row_bytes = row_bytes;
    out->n_rows = n_rows;
    out->n_cols = n_cols;
    return BT_OK;
}

/* Rows [row0, row0 + n_rows) of m as a matrix of their own (a view: same mapping). */
static bt_matrix row_view(const bt_matrix *m, int64_t row0, int64_t n_rows) {
    bt_matrix v = *m;
    v.data = (const uint8_t *)m->data + (size_t)row0 * m->row_bytes;
    v.n_rows = n_rows;
    return v;
}

/* Phi-3's fused tensors, as row views of one matrix so the forward pass sees separate ones:
 * attn_qkv.weight [n_embd, Q + 2 KV] holds the Q rows, then K, then V (llama.cpp's build_qkv
 * views); ffn_up.weight [n_embd, 2 n_ff] holds the gate rows, then the up rows (ggml_swiglu:
 * silu of the first half times the second). *fused_qkv / *fused_up say which were found. A
 * fused attn_qkv.bias splits the same way. */
static bt_status load_fused(const bt_gguf *g, const bt_hparams *hp, int il, bt_layer_weights *lw,
                            bool *fused_qkv, bool *fused_up, bt_error *err) {
    char name[96];
    int64_t E = hp->n_embd, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp), F = hp->n_ff;
    bt_matrix m;
    bt_status st;
    *fused_qkv = *fused_up = false;
    snprintf(name, sizeof name, "blk.%d.attn_qkv.weight", il);
    if (bt_gguf_find_tensor(g, name)) {
        if ((st = load_matrix(g, name, E, Q + 2 * KV, true, &m, err)))
            return st;
        lw->wq = row_view(&m, 0, Q);
        lw->wk = row_view(&m, Q, KV);
        lw->wv = row_view(&m, Q + KV, KV);
        *fused_qkv = true;
        const float *b;
        snprintf(name, sizeof name, "blk.%d.attn_qkv.bias", il);
        if ((st = load_vector(g, name, Q + 2 * KV, false, &b, err)))
            return st;
        if (b) {
            lw->bq = b;
            lw->bk = b + Q;
            lw->bv = b + Q + KV;
        }
    }
    snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", il);
    if (!bt_gguf_find_tensor(g, name)) {
        /* No separate gate: ffn_up must be the fused [n_embd, 2 n_ff] one (the shape check
         * names the tensor if it is not). */
        snprintf(name, sizeof name, "blk.%d.ffn_up.weight", il);
        if ((st = load_matrix(g, name, E, 2 * F, true, &m, err)))
            return st;
        lw->w_gate = row_view(&m, 0, F);
        lw->w_up = row_view(&m, F, F);
        *fused_up = true;
    }
    return BT_OK;
}

static bt_status load_layer(const bt_gguf *g, const bt_hparams *hp, int il, bt_layer_weights *lw,
                            bt_error *err) {
    char name[96];
    int64_t E = hp->n_embd, Q = bt_hparams_q_dim(hp), KV = bt_hparams_kv_dim(hp), F = hp->n_ff;
    bool fqkv, fup;
    bt_status st = load_fused(g, hp, il, lw, &fqkv, &fup, err);
    if (st)
        return st;
#define NAME(suffix) (snprintf(name, sizeof(name), "blk.%d.%s", il, suffix), name)
    if ((st = load_vector(g, NAME("attn_norm.weight"), E, true, &lw->attn_norm, err)) ||
        (!fqkv && (st = load_matrix(g, NAME("attn_q.weight"), E, Q, true, &lw->wq, err))) ||
        (!fqkv && (st = load_matrix(g, NAME("attn_k.weight"), E, KV, true, &lw->wk, err))) ||
        (!fqkv && (st = load_matrix(g, NAME("attn_v.weight"), E, KV, true, &lw->wv, err))) ||
        (st = load_matrix(g, NAME("attn_output.weight"), Q, E, true, &lw->wo, err)) ||
        (!lw->bq && (st = load_vector(g, NAME("attn_q.bias"), Q, false, &lw->bq, err))) ||
        (!lw->bk && (st = load_vector(g, NAME("attn_k.bias"), KV, false, &lw->bk, err))) ||
        (!lw->bv && (st = load_vector(g, NAME("attn_v.bias"), KV, false, &lw->bv, err))) ||
        (st = load_vector(g, NAME("attn_output.bias"), E, false, &lw->bo, err)) ||
        (st = load_vector(g, NAME("attn_q_norm.weight"), hp->head_dim, false, &lw->q_norm, err)) ||
        (st = load_vector(g, NAME("attn_k_norm.weight"), hp->head_dim, false, &lw->k_norm, err)) ||
        (st = load_vector(g, NAME("ffn_norm.weight"), E, true, &lw->ffn_norm, err)) ||
        (!fup && (st = load_matrix(g, NAME("ffn_gate.weight"), E, F, true, &lw->w_gate, err))) ||
        (!fup && (st = load_matrix(g, NAME("ffn_up.weight"), E, F, true, &lw->w_up, err))) ||
        (st = load_matrix(g, NAME("ffn_down.weight"), F, E, true, &lw->w_down, err)))
        return st;
    if (hp->post_norms &&
        ((st = load_vector(g, NAME("post_attention_norm.weight"), E, true, &lw->post_attn_norm,
                           err)) ||
         (st = load_vector(g, NAME("post_ffw_norm.weight"), E, true, &lw->post_ffn_norm, err))))
        return st;
#undef NAME
    const char *unsupported[] = {"ffn_gate.bias", "ffn_up.bias", "ffn_down.bias"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        snprintf(name, sizeof(name), "blk.%d.%s", il, unsupported[i]);
        if (bt_gguf_find_tensor(g, name))
            return bt_error_set(err, BT_ERR_UNSUPPORTED, "weights: tensor %s is not supported",
                                name);
    }
    return BT_OK;
}

bt_status bt_weights_load(const bt_gguf *g, const bt_hparams *hp, int layer_begin, int layer_end,
                          bt_weights *out, bt_error *err) {
    memset(out, 0, sizeof(*out));
    if (layer_begin < 0 || layer_end > hp->n_layer || layer_begin >= layer_end)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "weights: layer range [%d, %d) not inside [0, %d)", layer_begin,
                            layer_end, hp->n_layer);
    bt_weights w;
    memset(&w, 0, sizeof(w));
    w.layer_begin = layer_begin;
    w.layer_end = layer_end;
    w.has_embd = layer_begin == 0;
    w.has_head = layer_end == hp->n_layer;
    bt_status st = BT_OK;
    w.layers = calloc((size_t)(layer_end - layer_begin), sizeof(*w.layers));
    if (!w.layers)
        return bt_error_set(err, BT_ERR_NOMEM, "weights: out of memory");
    for (int il = layer_begin; il < layer_end; il++)
        if ((st = load_layer(g, hp, il, &w.layers[il - layer_begin], err)) != BT_OK)
            goto fail;
    if ((st = load_vector(g, "rope_freqs.weight", hp->head_dim / 2, false, &w.rope_freqs, err)))
        goto fail;
    bool need_embd = w.has_embd;
    if (w.has_head) {
        if ((st = load_vector(g, "output_norm.weight", hp->n_embd, true, &w.output_norm, err)) ||
            (st = load_matrix(g, "output.weight", hp->n_embd, hp->n_vocab, false, &w.output, err)))
            goto fail;
        if (!w.output.data)
            need_embd = true; /* tied */
    }
    if (need_embd && (st = load_matrix(g, "token_embd.weight", hp->n_embd, hp->n_vocab, true,
                                       &w.token_embd, err)))
        goto fail;
    if (w.has_head && !w.output.data)
        w.output = w.token_embd;
    *out = w;
    return BT_OK;
fail:
    free(w.layers);
    return st;
}

bool bt_weights_needs(const bt_gguf *g, const char *name, int layer_begin, int layer_end,
                      int n_layer) {
    bool first = layer_begin == 0, last = layer_end == n_layer;
    if (strncmp(name, "blk.", 4) == 0) {
        char *end;
        long il = strtol(name + 4, &end, 10);
        return end != name + 4 && *end == '.' && il >= layer_begin && il < layer_end;
    }
    if (strcmp(name, "rope_freqs.weight") == 0)
        return true;
    if (strcmp(name, "token_embd.weight") == 0)
        return first || (last && !bt_gguf_find_tensor(g, "output.weight"));
    if (strcmp(name, "output_norm.weight") == 0 || strcmp(name, "output.weight") == 0)
        return last;
    return false;
}

/* The matrices that bt_weights_pack may pack: every layer's 7, then the output head (when
 * tied, token_embd's bytes; token_embd itself is never packed, only given the head's copy). */
static int n_packable(const bt_weights *w) {
    return 7 * (w->layer_end - w->layer_begin) + (w->has_head ? 1 : 0);
}

static bt_matrix *packable(bt_weights *w, int i) {
    if (i == 7 * (w->layer_end - w->layer_begin))
        return &w->output;
    bt_layer_weights *l = &w->layers[i / 7];
    bt_matrix *m[] = {&l->wq, &l->wk, &l->wv, &l->wo, &l->w_gate, &l->w_up, &l->w_down};
    return m[i % 7];
}

bt_status bt_weights_pack(bt_weights *w, const bt_gguf *g, size_t *n_bytes, bt_error *err) {
    size_t total = 0, page = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < n_packable(w); i++) {
        bt_matrix *m = packable(w, i);
        if (!m->data || m->packed || !bt_pack_wanted(m->type, m->n_rows, m->n_cols))
            continue;
        size_t bytes = m->row_bytes * (size_t)m->n_rows;
        void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
        if (!p)
            return bt_error_set(err, BT_ERR_NOMEM,
                                "weights: out of memory packing a %zu-byte matrix", bytes);
        /* A few hundred KiB at a time, each part's file pages dropped once packed: the
         * resident set never holds a whole matrix twice (Gemma 3's tied head is 178 MiB). */
        int64_t step = (int64_t)((256u << 10) / m->row_bytes) / BT_PACK_ROWS * BT_PACK_ROWS;
        step = step < BT_PACK_ROWS ? BT_PACK_ROWS : step;
        const char *src = m->data, *kept = src; /* pages before `kept` are dropped */
        for (int64_t r = 0; r < m->n_rows; r += step) {
            int64_t n = m->n_rows - r < step ? m->n_rows - r : step;
            size_t off = (size_t)r * m->row_bytes, len = (size_t)n * m->row_bytes;
            bt_pack_rows(m->type, src + off, m->row_bytes, n, m->n_cols, (char *)p + off);
            bt_gguf_drop_pages(g, kept, (size_t)(src + off + len - kept));
            /* the page the next part begins in, which this call could not drop whole */
            kept = (const char *)((uintptr_t)(src + off + len) / page * page);
            kept = kept < src ? src : kept;
        }
        m->packed = p;
        total += bytes;
    }
    /* A tied head's embedding rows come from its packed copy: the file's bytes are not read. */
    if (w->has_embd && w->has_head && w->output.data == w->token_embd.data)
        w->token_embd.packed = w->output.packed;
    if (n_bytes)
        *n_bytes = total;
    return BT_OK;
}

void bt_weights_deinit(bt_weights *w) {
    if (!w)
        return;
    if (w->layers)
        for (int i = 0; i < n_packable(w); i++)
            free((void *)packable(w, i)->packed);
    free(w->layers);
    memset(w, 0, sizeof(*w));
}

static size_t matrix_bytes(const bt_matrix *m) {
    return m->data ? m->row_bytes * (size_t)m->n_rows : 0;
}

size_t bt_weights_bytes(const bt_weights *w) {
    size_t n = 0;
    for (int i = 0; i < w->layer_end - w->layer_begin; i++) {
        const bt_layer_weights *l = &w->layers[i];
        n += matrix_bytes(&l->wq) + matrix_bytes(&l->wk) + matrix_bytes(&l->wv) +
             matrix_bytes(&l->wo) + matrix_bytes(&l->w_gate) + matrix_bytes(&l->w_up) +
             matrix_bytes(&l->w_down);
    }
    if (w->has_embd || (w->has_head && w->output.data == w->token_embd.data))
        n += matrix_bytes(&w->token_embd);
    if (w->has_head && w->output.data != w->token_embd.data)
        n += matrix_bytes(&w->output);
    return n;
}
