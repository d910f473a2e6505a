/*
 * sampler.h - turns one row of logits into a token, on the last stage.
 *
 * Chain (fixed order): temperature == 0 -> greedy argmax. Otherwise
 *   top-k -> top-p -> min-p -> temperature -> softmax -> draw with the sequence's RNG.
 * The logprob reported is log softmax of the raw logits (temperature 1, before filtering), as
 * OpenAI and vLLM report it, so it is comparable across sampling settings.
 *
 * Determinism: the random draw for the token at position `pos` of a sequence comes from an
 * RNG seeded with (seed, pos), so it does not depend on what else is sampled, on the number
 * of stages, on batching, or on a preemption that recomputes the sequence.
 *
 * The bt_sampler holds the n_vocab scratch shared by all sequences sampled on one thread
 * (the last stage's loop); sampling allocates nothing. Confined to that thread.
 */
#ifndef BT_SAMPLER_H
#define BT_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "rng.h"
#include "sampling.h"
#include "status.h"

typedef struct bt_sampler bt_sampler;

bt_status bt_sampler_new(int32_t n_vocab, bt_sampler **out, bt_error *err);
void bt_sampler_free(bt_sampler *s);

/* Picks the token at position pos of a sequence from logits[n_vocab] (not modified) with
 * parameters p (valid: bt_sampler_params_validate). *logprob may be NULL. */
int32_t bt_sampler_sample(bt_sampler *s, const bt_sampler_params *p, int32_t pos,
                          const float *logits, float *logprob);

#endif
