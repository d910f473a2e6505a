/* runner.c - model, vocabulary and one local stage for single-process commands. */
#include "runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hparams.h"
#include "threadpool.h"

bt_runner_params bt_runner_default_params(void) {
    return (bt_runner_params){
        .model_path = NULL, .n_threads = 0, .n_ctx = 0, .max_batch = 512, .max_logit_rows = 1};
}

bt_status bt_runner_open(const bt_runner_params *p, bt_runner *r, bt_error *err) {
    memset(r, 0, sizeof *r);
    bt_status st = bt_gguf_open(p->model_path, &r->gguf, err);
    if (st != BT_OK)
        return st;
    if ((st = bt_vocab_load(r->gguf, &r->vocab, err)) != BT_OK)
        goto fail;

    bt_hparams hp;
    if ((st = bt_hparams_load(r->gguf, &hp, err)) != BT_OK)
        goto fail;
    r->n_ctx = p->n_ctx ? p->n_ctx : bt_hparams_default_ctx(&hp);
    if (hp.n_ctx_train > 0 && r->n_ctx > hp.n_ctx_train) {
        st = bt_error_set(err, BT_ERR_RANGE, "--ctx %d exceeds the model's trained context %d",
                          r->n_ctx, hp.n_ctx_train);
        goto fail;
    }
    r->n_threads = p->n_threads > 0 ? p->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (r->n_threads < 1)
        r->n_threads = 1;
    if (r->n_threads > BT_THREADPOOL_MAX_THREADS) /* the stage's limit; --threads has it too */
        r->n_threads = BT_THREADPOOL_MAX_THREADS;
    r->max_batch = p->max_batch > r->n_ctx ? r->n_ctx : p->max_batch;
    r->max_logit_rows = p->max_logit_rows < 1 ? 1 : p->max_logit_rows;
    if (r->max_logit_rows > r->max_batch)
        r->max_logit_rows = r->max_batch;

    bt_stage_params sp = bt_stage_default_params();
    sp.n_threads = r->n_threads;
    sp.kv_tokens = r->n_ctx;
    sp.max_batch = r->max_batch;
    sp.max_seqs = 1;
    sp.max_seq_tokens = r->n_ctx;
    sp.numerics = p->numerics;
    if ((st = bt_stage_new(r->gguf, &sp, &r->stage, err)) != BT_OK)
        goto fail;
    r->n_vocab = bt_stage_n_vocab(r->stage);

    r->logits = malloc(sizeof(float) * (size_t)r->max_logit_rows * (size_t)r->n_vocab);
    r->row_seq = malloc(sizeof(int32_t) * (size_t)r->max_batch);
    r->row_pos = malloc(sizeof(int32_t) * (size_t)r->max_batch);
    r->row_logits = malloc((size_t)r->max_batch);
    if (!r->logits || !r->row_seq || !r->row_pos || !r->row_logits) {
        st = bt_error_set(err, BT_ERR_NOMEM, "runner: out of memory");
        goto fail;
    }
    return BT_OK;
fail:
    bt_runner_close(r);
    return st;
}

void bt_runner_close(bt_runner *r) {
    bt_stage_free(r->stage);
    bt_vocab_free(r->vocab);
    bt_gguf_free(r->gguf);
    free(r->logits);
    free(r->row_seq);
    free(r->row_pos);
    free(r->row_logits);
    memset(r, 0, sizeof *r);
}

bt_status bt_runner_eval(bt_runner *r, int seq, const int32_t *ids, int n, int first_logit_row,
                         bt_runner_logits_fn fn, void *ctx, bt_error *err) {
    int done = 0;
    while (done < n) {
        int len = bt_stage_seq_len(r->stage, seq);
        if (len < 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "sequence %d is not valid", seq);
        /* A chunk never holds more logit rows than the buffer. */
        int rows = n - done < r->max_batch ? n - done : r->max_batch;
        int n_wanted = 0;
        for (int i = 0; i < rows; i++) {
            int want = done + i >= first_logit_row && n_wanted < r->max_logit_rows;
            if (done + i >= first_logit_row && !want) {
                rows = i;
                break;
            }
            r->row_seq[i] = seq;
            r->row_pos[i] = len + i;
            r->row_logits[i] = (uint8_t)want;
            n_wanted += want;
        }
        bt_batch b = {.n_rows = rows,
                      .seq = r->row_seq,
                      .pos = r->row_pos,
                      .token = ids + done,
                      .logits = r->row_logits};
        bt_status st = bt_stage_forward(r->stage, &b, NULL, NULL, r->logits, err);
        if (st != BT_OK)
            return st;
        int k = 0;
        for (int i = 0; i < rows; i++)
            if (r->row_logits[i])
                fn(ctx, done + i, r->logits + (size_t)(k++) * (size_t)r->n_vocab);
        done += rows;
    }
    return BT_OK;
}
