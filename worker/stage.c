/*
 * stage.c - a pipeline stage: validation and KV bookkeeping around bt_forward_run.
 *
 * bt_stage_forward: validate every row (ids, positions contiguous per sequence, tokens) ->
 * count the KV blocks the batch needs; refuse if they are not free -> reserve them ->
 * compute -> commit the new sequence lengths. Per-sequence scratch (expected next position)
 * lives in the stage, sized max_seqs, and is reset for the touched sequences after each call.
 */
#include "stage.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "hparams.h"
#include "kernels/kernels.h"
#include "kv_cache.h"
#include "kv_plan.h"
#include "log.h"
#include "threadpool.h"
#include "weights.h"

struct bt_stage {
    bt_stage_params params;
    bt_hparams hp;
    bt_weights w;
    bt_kv_cache *kv;
    bt_threadpool *pool;
    bt_forward *fw;
    int32_t *next_pos; /* [max_seqs] -1 = untouched in this batch, else next position */
    int32_t *touched;  /* [max_batch] sequences touched by the batch */
    int32_t *grow_to;  /* [max_batch] their lengths after the batch (KV check) */
    int32_t *out_rows; /* [max_batch] rows whose logits are wanted */
};

bt_stage_params bt_stage_default_params(void) {
    bt_stage_params p;
    p.layer_begin = -1;
    p.layer_end = -1;
    p.n_threads = 1;
    p.kv_tokens = 4096;
    p.max_batch = 512;
    p.max_seqs = 64;
    p.max_seq_tokens = 0;
    p.kv_type = BT_TYPE_F16; /* the coordinator's default --kv-type */
    p.numerics = BT_NUMERICS_FAST;
    return p;
}

bt_status bt_stage_check_model(const bt_gguf *g, bt_numerics n, bt_type kv_type, bt_error *err) {
    bt_hparams hp;
    bt_weights w;
    bt_status st = bt_hparams_load(g, &hp, err);
    if (st != BT_OK || (st = bt_weights_load(g, &hp, 0, hp.n_layer, &w, err)) != BT_OK)
        return st;
    st = bt_forward_check_numerics(&hp, &w, kv_type, n, err);
    if (st == BT_OK && kv_type == BT_TYPE_Q8_0 && hp.head_dim % BT_QK != 0)
        st =
            bt_error_set(err, BT_ERR_UNSUPPORTED,
                         "--kv-type q8_0: head_dim %d is not a multiple of %d", hp.head_dim, BT_QK);
    bt_weights_deinit(&w);
    return st;
}

bt_status bt_stage_new(const bt_gguf *g, const bt_stage_params *params, bt_stage **out,
                       bt_error *err) {
    *out = NULL;
    bt_status st;
    bt_stage *s = calloc(1, sizeof(*s));
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "stage: out of memory");
    s->params = *params;
    bt_stage_params *p = &s->params;
    if ((st = bt_hparams_load(g, &s->hp, err)) != BT_OK)
        goto fail;
    if (p->layer_begin == -1)
        p->layer_begin = 0;
    if (p->layer_end == -1)
        p->layer_end = s->hp.n_layer;
    if (p->n_threads < 1 || p->n_threads > BT_THREADPOOL_MAX_THREADS) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: n_threads %d not in [1, %d]",
                          p->n_threads, BT_THREADPOOL_MAX_THREADS);
        goto fail;
    }
    if (p->kv_tokens < 1 || p->kv_tokens > (1 << 30) - BT_KV_BLOCK_TOKENS) {
        st =
            bt_error_set(err, BT_ERR_INVALID_ARG, "stage: kv_tokens %d out of range", p->kv_tokens);
        goto fail;
    }
    if (p->max_batch < 1 || p->max_batch > (1 << 20)) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: max_batch %d not in [1, %d]",
                          p->max_batch, 1 << 20);
        goto fail;
    }
    if (p->max_seqs < 1 || p->max_seqs > (1 << 20)) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: max_seqs %d not in [1, %d]", p->max_seqs,
                          1 << 20);
        goto fail;
    }
    if (p->max_seq_tokens < 0) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: max_seq_tokens %d < 0",
                          p->max_seq_tokens);
        goto fail;
    }
    if (p->max_seq_tokens == 0) {
        p->max_seq_tokens = p->kv_tokens;
        if (s->hp.n_ctx_train > 0 && s->hp.n_ctx_train < p->max_seq_tokens)
            p->max_seq_tokens = s->hp.n_ctx_train;
    }
    if ((unsigned)p->numerics > BT_NUMERICS_MAX) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: numerics %d unknown", (int)p->numerics);
        goto fail;
    }
    if (p->kv_type != BT_TYPE_F16 && p->kv_type != BT_TYPE_F32 && p->kv_type != BT_TYPE_Q8_0) {
        st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: kv_type %d (%s) is not f16, q8_0 or f32",
                          (int)p->kv_type, bt_type_name((uint32_t)p->kv_type));
        goto fail;
    }
    if ((st = bt_weights_load(g, &s->hp, p->layer_begin, p->layer_end, &s->w, err)) != BT_OK)
        goto fail;
    /* The fast numerics read the matrices the kernels have a packed layout for packed (the
     * llamacpp numerics read the file's bytes). */
    size_t packed = 0;
    if (p->numerics == BT_NUMERICS_FAST && (st = bt_weights_pack(&s->w, g, &packed, err)) != BT_OK)
        goto fail;
    if (packed)
        BT_DEBUG("stage: layers [%d, %d): %.1f MiB of weights packed for the %s kernels",
                 p->layer_begin, p->layer_end, (double)packed / (1 << 20),
                 bt_kernels_level_name(bt_kernels_level()));
    /* The local (sliding-window) layers keep only their window, in the cache's window pool
     * (not with BATON_KV_WINDOW=off: kv_plan.h). */
    uint8_t window_layers[BT_HPARAMS_MAX_LAYERS];
    bool window_off = bt_kv_window_off();
    for (int il = p->layer_begin; il < p->layer_end; il++)
        window_layers[il - p->layer_begin] = !window_off && bt_hparams_is_swa(&s->hp, il);
    bt_kv_params kp = {
        .n_layer = p->layer_end - p->layer_begin,
        .n_head_kv = s->hp.n_head_kv,
        .head_dim = s->hp.head_dim,
        .n_blocks = (p->kv_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS,
        .max_seqs = p->max_seqs,
        .max_seq_tokens = p->max_seq_tokens,
        .type = p->kv_type,
        .window = s->hp.sliding_window,
        .window_layers = window_layers,
        .max_step_rows = p->max_batch,
    };
    if ((st = bt_kv_cache_new(&kp, &s->kv, err)) != BT_OK ||
        (st = bt_threadpool_new(p->n_threads, &s->pool, err)) != BT_OK ||
        (st = bt_forward_new(&s->hp, &s->w, s->kv, s->pool, p->max_batch, &s->fw, err)) != BT_OK)
        goto fail;
    if (p->numerics != BT_NUMERICS_FAST &&
        (st = bt_forward_set_numerics(s->fw, p->numerics, err)) != BT_OK)
        goto fail;
    s->next_pos = malloc(sizeof(int32_t) * (size_t)p->max_seqs);
    s->touched = malloc(sizeof(int32_t) * (size_t)p->max_batch);
    s->grow_to = malloc(sizeof(int32_t) * (size_t)p->max_batch);
    s->out_rows = malloc(sizeof(int32_t) * (size_t)p->max_batch);
    if (!s->next_pos || !s->touched || !s->grow_to || !s->out_rows) {
        st = bt_error_set(err, BT_ERR_NOMEM, "stage: out of memory");
        goto fail;
    }
    for (int i = 0; i < p->max_seqs; i++)
        s->next_pos[i] = -1;
    *out = s;
    return BT_OK;
fail:
    bt_stage_free(s);
    return st;
}

void bt_stage_free(bt_stage *s) {
    if (!s)
        return;
    bt_forward_free(s->fw);
    bt_threadpool_free(s->pool);
    bt_kv_cache_free(s->kv);
    bt_weights_deinit(&s->w);
    free(s->next_pos);
    free(s->touched);
    free(s->grow_to);
    free(s->out_rows);
    free(s);
}

static void reset_touched(bt_stage *s, int n_touched) {
    for (int i = 0; i < n_touched; i++)
        s->next_pos[s->touched[i]] = -1;
}

bt_status bt_stage_forward(bt_stage *s, const bt_batch *b, const float *act_in, float *act_out,
                           float *logits, bt_error *err) {
    const bt_stage_params *p = &s->params;
    int n = b->n_rows;
    if (n < 1 || n > p->max_batch)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: n_rows %d not in [1, %d]", n,
                            p->max_batch);
    if (!b->seq || !b->pos)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: batch seq/pos arrays missing");
    if (s->w.has_embd && !act_in && !b->token)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: first stage needs tokens");
    if (!s->w.has_embd && !act_in)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "stage: act_in is NULL but layer %d is not the first",
                            s->w.layer_begin);
    if (!s->w.has_head && !act_out)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: act_out is NULL on a middle stage");

    int n_out = 0;
    for (int r = 0; r < n; r++)
        if (b->logits ? b->logits[r] != 0 : r == n - 1)
            s->out_rows[n_out++] = r;
    if (s->w.has_head && n_out > 0 && !logits)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: logits buffer is NULL");

    int n_touched = 0;
    bt_status st = BT_OK;
    for (int r = 0; r < n; r++) {
        int32_t seq = b->seq[r], pos = b->pos[r];
        if (seq < 0 || seq >= p->max_seqs) {
            st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: row %d seq %d not in [0, %d)", r,
                              seq, p->max_seqs);
            goto out;
        }
        if (s->next_pos[seq] < 0) {
            s->next_pos[seq] = bt_kv_seq_len(s->kv, seq);
            s->touched[n_touched++] = seq;
        }
        if (pos != s->next_pos[seq]) {
            st = bt_error_set(err, BT_ERR_INVALID_ARG,
                              "stage: row %d seq %d pos %d, expected %d (positions must be "
                              "contiguous)",
                              r, seq, pos, s->next_pos[seq]);
            goto out;
        }
        if (pos >= p->max_seq_tokens) {
            st = bt_error_set(err, BT_ERR_LIMIT, "stage: row %d seq %d pos %d >= limit %d", r, seq,
                              pos, p->max_seq_tokens);
            goto out;
        }
        s->next_pos[seq] = pos + 1;
        if (!act_in && (b->token[r] < 0 || b->token[r] >= s->hp.n_vocab)) {
            st = bt_error_set(err, BT_ERR_INVALID_ARG, "stage: row %d token %d not in [0, %d)", r,
                              b->token[r], s->hp.n_vocab);
            goto out;
        }
    }
    for (int i = 0; i < n_touched; i++)
        s->grow_to[i] = s->next_pos[s->touched[i]];
    int need = bt_kv_batch_blocks_needed(s->kv, n_touched, s->touched, s->grow_to);
    if (need > bt_kv_n_blocks_free(s->kv)) {
        st = bt_error_set(err, BT_ERR_LIMIT, "stage: batch needs %d KV blocks, %d free", need,
                          bt_kv_n_blocks_free(s->kv));
        goto out;
    }
    /* The window pool is sized for any batch of at most max_batch rows over max_seqs
     * sequences (bt_kv_window_blocks): it cannot run dry, whatever the scheduler admits. */
    assert(bt_kv_batch_window_blocks_needed(s->kv, n_touched, s->touched, s->grow_to) <=
           bt_kv_window_blocks_free(s->kv));
    for (int i = 0; i < n_touched; i++) {
        st = bt_kv_seq_reserve(s->kv, s->touched[i], s->next_pos[s->touched[i]], err);
        if (st != BT_OK) /* cannot happen after the count above */
            goto out;
    }
    bt_forward_run(s->fw, n, b->seq, b->pos, b->token, act_in, s->w.has_head ? NULL : act_out,
                   s->out_rows, s->w.has_head ? n_out : 0, logits);
    for (int i = 0; i < n_touched; i++)
        bt_kv_seq_set_len(s->kv, s->touched[i], s->next_pos[s->touched[i]]);
out:
    reset_touched(s, n_touched);
    return st;
}

static int seq_ok(const bt_stage *s, int seq) {
    return seq >= 0 && seq < s->params.max_seqs;
}

void bt_stage_seq_free(bt_stage *s, int seq) {
    if (seq_ok(s, seq))
        bt_kv_seq_free(s->kv, seq);
}

bt_status bt_stage_seq_truncate(bt_stage *s, int seq, int n_tokens, bt_error *err) {
    if (!seq_ok(s, seq))
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: truncate seq %d not in [0, %d)", seq,
                            s->params.max_seqs);
    return bt_kv_seq_truncate(s->kv, seq, n_tokens, err);
}

bt_status bt_stage_seq_fork(bt_stage *s, int src, int dst, bt_error *err) {
    if (!seq_ok(s, src) || !seq_ok(s, dst))
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage: fork %d -> %d: ids not in [0, %d)",
                            src, dst, s->params.max_seqs);
    return bt_kv_seq_fork(s->kv, src, dst, err);
}

int bt_stage_seq_len(const bt_stage *s, int seq) {
    return seq_ok(s, seq) ? bt_kv_seq_len(s->kv, seq) : -1;
}

int bt_stage_n_embd(const bt_stage *s) {
    return s->hp.n_embd;
}
int bt_stage_n_vocab(const bt_stage *s) {
    return s->hp.n_vocab;
}
int bt_stage_n_layer_total(const bt_stage *s) {
    return s->hp.n_layer;
}
int bt_stage_layer_begin(const bt_stage *s) {
    return s->w.layer_begin;
}
int bt_stage_layer_end(const bt_stage *s) {
    return s->w.layer_end;
}
int bt_stage_is_first(const bt_stage *s) {
    return s->w.has_embd;
}
int bt_stage_is_last(const bt_stage *s) {
    return s->w.has_head;
}
bt_threadpool *bt_stage_pool(bt_stage *s) {
    return s->pool;
}
int bt_stage_max_batch(const bt_stage *s) {
    return s->params.max_batch;
}
int bt_stage_max_seqs(const bt_stage *s) {
    return s->params.max_seqs;
}

int bt_stage_kv_tokens_total(const bt_stage *s) {
    return bt_kv_cache_params(s->kv)->n_blocks * BT_KV_BLOCK_TOKENS;
}

int bt_stage_kv_tokens_free(const bt_stage *s) {
    return bt_kv_n_blocks_free(s->kv) * BT_KV_BLOCK_TOKENS;
}

size_t bt_stage_kv_bytes(const bt_stage *s) {
    return bt_kv_cache_bytes(s->kv);
}
size_t bt_stage_kv_window_bytes(const bt_stage *s) {
    return bt_kv_window_bytes(s->kv);
}
int bt_stage_kv_window_blocks(const bt_stage *s) {
    return bt_kv_n_window_blocks(s->kv);
}
size_t bt_stage_weight_bytes(const bt_stage *s) {
    return bt_weights_bytes(&s->w);
}
bt_type bt_stage_kv_type(const bt_stage *s) {
    return bt_kv_cache_params(s->kv)->type;
}
int bt_stage_seq_tokens_left(const bt_stage *s, int seq) {
    if (!seq_ok(s, seq))
        return 0;
    int len = bt_kv_seq_len(s->kv, seq);
    int in_blocks = bt_kv_seq_n_blocks(s->kv, seq) * BT_KV_BLOCK_TOKENS - len;
    int left = in_blocks + bt_kv_n_blocks_free(s->kv) * BT_KV_BLOCK_TOKENS;
    int limit = s->params.max_seq_tokens - len;
    return left < limit ? left : limit;
}
