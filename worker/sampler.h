/*
 * sampler.h - turns one row of logits into a token, on the last stage.
 *
 * Chain (fixed order): temperature == 0 -> greedy argmax. Otherwise
 *   top-k -> top-p -> min-p -> temperature -> softmax -> draw with the sequence's RNG.
 * The logprob reported is log softmax of the raw logits (temperature 1, before filtering), as
 * OpenAI and vLLM report it, so it is comparable across sampling settings.
 *
 * Per-sequence state is a bt_seq_sampler (parameters and the sequence's own RNG, caller's
 * storage), so a sequence's draws do not depend on what else is sampled. The bt_sampler holds
 * the n_vocab scratch shared by all sequences sampled on one thread (the last stage's loop);
 * sampling allocates nothing. Both are confined to that thread.
 */
#ifndef BT_SAMPLER_H
#define BT_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "rng.h"
#include "sampling.h"
#include "status.h"

/* One sequence's sampling state. */
typedef struct bt_seq_sampler {
    bt_sampler_params p;
    bt_rng rng;
} bt_seq_sampler;

/* p must be valid (bt_sampler_params_validate). */
void bt_seq_sampler_init(bt_seq_sampler *s, const bt_sampler_params *p);

typedef struct bt_sampler bt_sampler;

bt_status bt_sampler_new(int32_t n_vocab, bt_sampler **out, bt_error *err);
void bt_sampler_free(bt_sampler *s);

/* Picks a token for `seq` from logits[n_vocab] (not modified). *logprob may be NULL. */
int32_t bt_sampler_sample(bt_sampler *s, bt_seq_sampler *seq, const float *logits,
                          float *logprob);

#endif
