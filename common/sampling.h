/*
 * sampling.h - the sampling parameters of one sequence: chosen by the coordinator (CLI, HTTP
 * request), validated there, carried in the protocol, applied on the last stage
 * (worker/sampler.h, which documents the order of the chain). Plain data; thread-safe.
 */
#ifndef BT_SAMPLING_H
#define BT_SAMPLING_H

#include <stdint.h>

#include "status.h"

#define BT_MAX_LOGIT_BIAS 64
#define BT_MAX_TOP_LOGPROBS 20
#define BT_SAMPLER_MAX_EOG 256 /* end-of-generation ids a last stage accepts (min_tokens) */

typedef struct bt_logit_bias {
    int32_t token;
    float bias; /* added to the token's logit; [-100, 100] */
} bt_logit_bias;

typedef struct bt_sampler_params {
    float temperature;        /* [0, 100]; 0 = greedy */
    int32_t top_k;            /* >= 0; 0 = off */
    float top_p;              /* (0, 1]; 1 = off */
    float min_p;              /* [0, 1]; 0 = off */
    float typical_p;          /* (0, 1]; 1 = off */
    float repetition_penalty; /* (0, 10]; 1 = off; prompt and generated tokens (HF, vLLM) */
    float presence_penalty;   /* [-2, 2]; generated tokens (OpenAI) */
    float frequency_penalty;  /* [-2, 2]; generated tokens (OpenAI) */
    int32_t min_tokens;       /* >= 0: end-of-generation tokens are banned until then */
    int32_t top_logprobs;     /* [0, 20] alternatives reported with each token */
    int32_t n_logit_bias;     /* [0, BT_MAX_LOGIT_BIAS] */
    bt_logit_bias logit_bias[BT_MAX_LOGIT_BIAS];
    uint64_t seed;
} bt_sampler_params;

bt_sampler_params bt_sampler_default_params(void);

/* Range checks; the message names the parameter and its value. n_vocab bounds the
 * logit_bias token ids (0 skips that check). */
bt_status bt_sampler_params_validate(const bt_sampler_params *p, int32_t n_vocab, bt_error *err);

#endif
