/*
 * runner.h - a model opened for the single-process commands (generate, perplexity, bench,
 * info): the GGUF, its vocabulary, and one in-process stage holding every layer.
 *
 * Owns all three; the stage and vocabulary borrow from the GGUF, which is closed last.
 * Confined to the thread that opened it.
 */
#ifndef BT_RUNNER_H
#define BT_RUNNER_H

#include <stdint.h>

#include "gguf.h"
#include "stage.h"
#include "status.h"
#include "vocab.h"

typedef struct bt_runner_params {
    const char *model_path;
    int n_threads;      /* 0 = online CPUs */
    int n_ctx;          /* context (KV capacity) in tokens; 0 = min(4096, trained context) */
    int max_batch;      /* rows per forward (prefill chunk) */
    int max_logit_rows; /* rows of logits one forward may return */
    bt_numerics numerics;
} bt_runner_params;

bt_runner_params bt_runner_default_params(void);

typedef struct bt_runner {
    bt_gguf *gguf;
    bt_vocab *vocab;
    bt_stage *stage;
    int n_ctx;
    int n_vocab;
    int n_threads;
    int max_batch;
    int max_logit_rows;
    float *logits;              /* [max_logit_rows][n_vocab] */
    int32_t *row_seq, *row_pos; /* [max_batch] batch scratch */
    uint8_t *row_logits;        /* [max_batch] */
} bt_runner;

/* Opens the model; on failure everything opened so far is closed and err says why. */
bt_status bt_runner_open(const bt_runner_params *p, bt_runner *r, bt_error *err);
void bt_runner_close(bt_runner *r);

/* Called for each row whose logits were requested: `i` indexes the ids given to eval. */
typedef void (*bt_runner_logits_fn)(void *ctx, int i, const float *logits);

/*
 * Appends ids[0..n) to sequence `seq` (positions continue from its current length), in
 * chunks of max_batch rows, on the prefill path (the tokens are given text, not sampled). Logits
 * are computed for every row i >= first_logit_row and passed to fn (fn may be NULL when
 * first_logit_row >= n).
 */
bt_status bt_runner_eval(bt_runner *r, int seq, const int32_t *ids, int n, int first_logit_row,
                         bt_runner_logits_fn fn, void *ctx, bt_error *err);

#endif
