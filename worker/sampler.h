/*
 * sampler.h - turns one row of logits into a token, on the last stage.
 *
 * Chain (fixed order): temperature == 0 -> greedy argmax. Otherwise
 *   top-k -> top-p -> min-p -> temperature -> softmax -> draw with the sequence's RNG.
 * The logprob reported is log softmax of the raw logits (temperature 1, before filtering), as
 * OpenAI and vLLM report it, so it is comparable across sampling settings.
 *
 * A bt_sampler is per sequence (it owns that sequence's RNG state) and is confined to the
 * thread of the stage that samples. Scratch space is owned by the sampler and sized at
 * creation for n_vocab: sampling allocates nothing.
 */
#ifndef BT_SAMPLER_H
#define BT_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

typedef struct bt_sampler_params {
    float temperature; /* 0 = greedy */
    int32_t top_k;     /* 0 = off */
    float top_p;       /* 1 = off */
    float min_p;       /* 0 = off */
    uint64_t seed;
} bt_sampler_params;

bt_sampler_params bt_sampler_default_params(void);

/* Range checks, naming the parameter. */
bt_status bt_sampler_params_validate(const bt_sampler_params *p, bt_error *err);

typedef struct bt_sampler bt_sampler;

bt_status bt_sampler_new(const bt_sampler_params *p, int32_t n_vocab, bt_sampler **out,
                         bt_error *err);
void bt_sampler_free(bt_sampler *s);

/* Picks a token from logits[n_vocab] (not modified). *logprob may be NULL. */
int32_t bt_sampler_sample(bt_sampler *s, const float *logits, float *logprob);

/* The RNG: xoshiro256** seeded through splitmix64. Exposed for tests. */
typedef struct bt_rng {
    uint64_t s[4];
} bt_rng;
void bt_rng_seed(bt_rng *r, uint64_t seed);
uint64_t bt_rng_next(bt_rng *r);
double bt_rng_uniform(bt_rng *r); /* [0, 1) with 53 bits */

#endif
