/*
 * request.h - what a caller may know of a generation request: its parameters (and their
 * validation), the finish reasons, and the opaque, reference-counted handle. The record the
 * scheduler keeps (states, tokens, family) is in request_impl.h, private to
 * coordinator/engine/ and to the unit tests of the scheduler.
 */
#ifndef BT_REQUEST_H
#define BT_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "detok.h"
#include "sampling.h"
#include "status.h"
#include "stop.h"

#define BT_MAX_COMPLETIONS 16 /* n and best_of */
#define BT_MAX_BEAM 8

typedef enum bt_finish {
    BT_FINISH_NONE,
    BT_FINISH_STOP,    /* end-of-generation token or a stop string */
    BT_FINISH_LENGTH,  /* max_tokens */
    BT_FINISH_CONTEXT, /* the sequence filled the context */
    BT_FINISH_CANCELLED,
    BT_FINISH_ERROR
} bt_finish;

const char *bt_finish_name(bt_finish f);

typedef struct bt_request bt_request;

/* Called on the scheduling thread: on_token for every generated token (not for the EOS that
 * ends it; not for beams, whose tokens are only known at the end), on_text with text that is
 * final (stop strings resolved, never the stop text; only when the scheduler has a
 * vocabulary), on_finish when a sampled completion (a lone request or an n/best_of child)
 * ends for any reason, and on_done once when the request (the group) is done. r is the
 * completion (a child for n/best_of); r->parent ? r->parent : r is the request. */
typedef void (*bt_request_token_fn)(bt_request *r, int32_t token, float logprob, void *ctx);
typedef void (*bt_request_text_fn)(bt_request *r, const char *delta, size_t n, void *ctx);
typedef void (*bt_request_done_fn)(bt_request *r, void *ctx);

/*
 * The request's scalar parameters, defined once. X(kind, field, min, max, cli, openai, flag,
 * doc) as in BT_SAMPLER_PARAM_LIST (common/sampling.h), without the "off" column; the field
 * is the JSON name. Expanded into the struct below, bt_request_default_params_for, the range
 * checks of bt_request_params_validate, the descriptor table (bt_request_param_table) and
 * the CLI flags of baton generate. The sampler's rows (p->sampling.*) join the table after
 * these.
 */
#define BT_REQUEST_PARAM_LIST(X)                                                                   \
    X(INT, max_tokens, 0, 1 << 24, 128, 16, NULL,                                                  \
      "tokens to generate (OpenAI chat: up to the context)")                                       \
    X(BOOL, ignore_eos, 0, 1, 0, 0, NULL, "do not stop at end-of-generation tokens")               \
    X(INT, n, 1, BT_MAX_COMPLETIONS, 1, 1, NULL, "completions returned")                           \
    X(INT, best_of, 0, BT_MAX_COMPLETIONS, 0, 0, NULL,                                             \
      "completions sampled, the n best by logprob returned; 0 = n")                                \
    X(INT, beam_width, 0, BT_MAX_BEAM, 0, 0, NULL, "beam search, 0 = off; needs temperature 0")    \
    X(FLOAT, length_penalty, -10, 10, 1, 1, NULL, "beam score = logprob / length^length_penalty")  \
    X(BOOL, early_stopping, 0, 1, 0, 0, NULL, "beams: stop once beam_width hypotheses finished")   \
    X(BOOL, include_stop_str_in_output, 0, 1, 0, 0, "--include-stop-str",                          \
      "a matched stop string stays at the end of the text")                                        \
    X(BOOL, skip_special_tokens, 0, 1, 1, 1, "--no-skip-special", "control tokens produce no text")

typedef struct bt_request_params {
#define BT_REQUEST_FIELD(kind, field, ...) BT_PARAM_CTYPE_##kind field;
    BT_REQUEST_PARAM_LIST(BT_REQUEST_FIELD)
#undef BT_REQUEST_FIELD
    /* n 0 = 1 and best_of 0 = n for callers that fill the struct by hand; start from
     * bt_request_default_params*() (skip_special_tokens is true there, not 0). */
    bt_sampler_params sampling; /* beam search overrides temperature and top_logprobs */
    /* Prompt scoring (perplexity; not an API parameter): no generation (max_tokens, sampling
     * and stop strings do not apply; n 1, no best_of, no beams). Rows [0, n_prompt - 1) are
     * computed; the DONE event's prompt_logprobs[i] is log p(prompt[i] | prompt[0, i)) for i
     * in [score_from, n_prompt), the raw log-softmax of the model's logits; the others are 0
     * (finish LENGTH). n_prompt may equal the context: position n_prompt - 1 is not computed. */
    bool score_prompt;
    int32_t score_from; /* score_prompt: first token scored, >= 0 (0 and 1: every token
                           from 1); the rows before it are computed without logits */
    int32_t n_stop;     /* [0, 16] */
    char stop[BT_MAX_STOP][BT_STOP_MAX_BYTES + 1]; /* NUL-terminated, 1..256 bytes */
    bt_request_token_fn on_token;                  /* may be NULL */
    bt_request_text_fn on_text;                    /* may be NULL */
    bt_request_done_fn on_finish;                  /* may be NULL */
    bt_request_done_fn on_done;                    /* may be NULL */
    void *ctx;
} bt_request_params;

typedef enum bt_param_style {
    BT_PARAM_STYLE_CLI,    /* baton generate/bench/batch defaults (the "cli" column) */
    BT_PARAM_STYLE_OPENAI, /* OpenAI/vLLM: temperature 1, top_p 1, top_k off, min_p off,
                              max_tokens 16 for /v1/completions (chat: up to the context) */
} bt_param_style;

/* Every table parameter at the style's default; no stop strings, logit_bias or stop ids; no
 * callbacks. */
bt_request_params bt_request_default_params_for(bt_param_style style);

/* = bt_request_default_params_for(BT_PARAM_STYLE_CLI). */
bt_request_params bt_request_default_params(void);

typedef struct bt_param_desc {
    const char *name; /* JSON name ("temperature", "top_k", "skip_special_tokens", ...) */
    bt_param_kind kind;
    size_t offset;   /* of the field inside bt_request_params */
    double min, max; /* inclusive range checked by bt_request_param_set */
    double cli_default, openai_default;
    const char *flag; /* NULL: --name with '_' -> '-'; "--x": also the alias --x;
                         BT_PARAM_HAND_FLAG: the CLI declares its own flag */
    const char *doc;
} bt_param_desc;

/* The table (static storage, immutable), *n rows: the request's rows, then the sampler's. */
const bt_param_desc *bt_request_param_table(size_t *n);

/* Finds a row by JSON name; NULL if none. */
const bt_param_desc *bt_request_param_find(const char *name);

/* Stores v (parsed from JSON/CLI as a number, or 0/1 for a bool) into p's field.
 * BT_ERR_RANGE naming d->name and the value when out of range, or not an integer for
 * INT/U64; p is unchanged then. */
bt_status bt_request_param_set(bt_request_params *p, const bt_param_desc *d, double v,
                               bt_error *err);

/* The field's value as a double (for help texts, docs and tests). */
double bt_request_param_get(const bt_request_params *p, const bt_param_desc *d);

/* Adds a stop string (len bytes, may hold any bytes but NUL). BT_ERR_RANGE naming `stop`
 * when it is empty, longer than 256 bytes, or the 17th. */
bt_status bt_request_params_add_stop(bt_request_params *p, const char *s, size_t len,
                                     bt_error *err);

/* Adds a stop token id (p->sampling.stop_token_ids). BT_ERR_RANGE naming `stop_token_ids`
 * when id is negative, or the 17th. The bound n_vocab is checked by validate. */
bt_status bt_request_params_add_stop_token_id(bt_request_params *p, int32_t id, bt_error *err);

/* The table's ranges (the message names the JSON field and the value), the sampler's lists,
 * the stop strings, then every combination; n_vocab bounds token ids (0 skips). */
bt_status bt_request_params_validate(const bt_request_params *p, int32_t n_vocab, bt_error *err);

/* A request's handle: opaque outside coordinator/engine/ (request_impl.h), reference
 * counted. bt_request_new (request_impl.h) returns it with one reference. */
void bt_request_ref(bt_request *r);
void bt_request_unref(bt_request *r); /* NULL is a no-op; frees at zero */

#endif
