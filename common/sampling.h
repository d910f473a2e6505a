/*
 * sampling.h - the sampling parameters of one sequence: chosen by the coordinator (CLI, HTTP
 * request), validated there, carried in the protocol, applied on the last stage
 * (worker/sampler.h, which documents the order of the chain). Plain data; thread-safe.
 *
 * The scalar parameters are defined once, in BT_SAMPLER_PARAM_LIST below; the struct, the
 * defaults, the range checks, the protobuf copy (proto/msg.c), the request table and the CLI
 * flags (coordinator/engine/request.h) are expansions of it. A new scalar parameter is one
 * line here plus its field in proto/baton.proto (same name) and its use in worker/sampler.c.
 */
#ifndef BT_SAMPLING_H
#define BT_SAMPLING_H

#include <stdbool.h>
#include <stdint.h>

#include "status.h"

#define BT_MAX_LOGIT_BIAS 64
#define BT_MAX_TOP_LOGPROBS 20
#define BT_MAX_STOP_TOKEN_IDS 16
#define BT_SAMPLER_MAX_EOG 256 /* end-of-generation ids a last stage accepts (min_tokens) */

/* How a table parameter is stored and parsed (JSON number, CLI value, 0/1 for BOOL). */
typedef enum bt_param_kind {
    BT_PARAM_INT,
    BT_PARAM_FLOAT,
    BT_PARAM_BOOL,
    BT_PARAM_U64
} bt_param_kind;

#define BT_PARAM_CTYPE_INT int32_t
#define BT_PARAM_CTYPE_FLOAT float
#define BT_PARAM_CTYPE_BOOL bool
#define BT_PARAM_CTYPE_U64 uint64_t

/* Marks a row whose CLI flag is written by hand (different semantics on the command line). */
#define BT_PARAM_HAND_FLAG "-"

/*
 * X(kind, field, min, max, off, cli, openai, flag, doc)
 *   field   the C field, the protobuf field of SamplingParams and the JSON name
 *   min/max inclusive range
 *   off     the value at which the step does nothing (bt_sampler_default_params)
 *   cli     default of baton generate (BT_PARAM_STYLE_CLI)
 *   openai  default of the OpenAI-compatible API (BT_PARAM_STYLE_OPENAI, vLLM's)
 *   flag    NULL: the CLI flag is --field with '_' -> '-'; "--x": that flag plus an older
 *           alias --x; BT_PARAM_HAND_FLAG: the CLI declares its own flag
 */
#define BT_SAMPLER_PARAM_LIST(X)                                                                   \
    X(FLOAT, temperature, 0, 100, 0, 0.8, 1, NULL, "0 = greedy")                                   \
    X(INT, top_k, 0, 1 << 24, 0, 40, 0, NULL, "keep the k most likely, 0 = off")                   \
    X(FLOAT, top_p, 1e-6, 1, 1, 0.95, 1, NULL, "nucleus mass, 1 = off")                            \
    X(FLOAT, min_p, 0, 1, 0, 0.05, 0, NULL, "drop below min_p * max prob, 0 = off")                \
    X(FLOAT, typical_p, 1e-6, 1, 1, 1, 1, NULL, "locally typical mass, 1 = off")                   \
    X(FLOAT, repetition_penalty, 1e-6, 10, 1, 1, 1, "--repeat-penalty",                            \
      "divides the logits of prompt and output tokens, 1 = off")                                   \
    X(FLOAT, presence_penalty, -2, 2, 0, 0, 0, NULL,                                               \
      "subtracted once from generated tokens' logits")                                             \
    X(FLOAT, frequency_penalty, -2, 2, 0, 0, 0, NULL, "subtracted per occurrence in the output")   \
    X(INT, min_tokens, 0, 1 << 24, 0, 0, 0, NULL,                                                  \
      "end-of-generation and stop ids banned until this many")                                     \
    X(INT, top_logprobs, 0, BT_MAX_TOP_LOGPROBS, 0, 0, 0, "--logprobs",                            \
      "alternatives reported with each token")                                                     \
    X(U64, seed, 0, 18446744073709551615.0, 0, 0, 0, BT_PARAM_HAND_FLAG,                           \
      "RNG seed; not given: random (CLI: --seed, -1 = random)")

typedef struct bt_logit_bias {
    int32_t token;
    float bias; /* added to the token's logit; [-100, 100] */
} bt_logit_bias;

typedef struct bt_sampler_params {
#define BT_SAMPLER_FIELD(kind, field, ...) BT_PARAM_CTYPE_##kind field;
    BT_SAMPLER_PARAM_LIST(BT_SAMPLER_FIELD)
#undef BT_SAMPLER_FIELD
    int32_t n_logit_bias; /* [0, BT_MAX_LOGIT_BIAS] */
    bt_logit_bias logit_bias[BT_MAX_LOGIT_BIAS];
    /* ids that end the completion with finish "stop" (the coordinator ends it; the last stage
     * bans them before min_tokens, as end-of-generation ids); [0, BT_MAX_STOP_TOKEN_IDS] */
    int32_t n_stop_token_ids;
    int32_t stop_token_ids[BT_MAX_STOP_TOKEN_IDS];
} bt_sampler_params;

/* Every step off ("off" column): greedy, no filters, no penalties. */
bt_sampler_params bt_sampler_default_params(void);

/* Range checks from the list, then logit_bias and stop_token_ids; the message names the
 * parameter and its value. n_vocab bounds the token ids (0 skips that check). */
bt_status bt_sampler_params_validate(const bt_sampler_params *p, int32_t n_vocab, bt_error *err);

/* Whether token is one of p's stop_token_ids (it ends the completion, like end-of-generation;
 * never part of the output). */
static inline bool bt_sampler_is_stop_token(const bt_sampler_params *p, int32_t token) {
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (p->stop_token_ids[i] == token)
            return true;
    return false;
}

/* The range check of one table value: finite, inside [min, max], and whole for INT/U64.
 * BT_ERR_RANGE naming `name` and v. Shared by the sampler and request tables. */
bt_status bt_param_check(const char *name, bt_param_kind kind, double v, double min, double max,
                         bt_error *err);

#endif
