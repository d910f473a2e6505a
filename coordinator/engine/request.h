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

typedef struct bt_request_params {
    int32_t max_tokens;
    bool ignore_eos;
    bt_sampler_params sampling; /* beam search overrides temperature and top_logprobs */
    int32_t n;                  /* completions returned, [1, 16]; 0 = 1 */
    int32_t best_of;            /* branches sampled, [n, 16]; 0 = n; best n by cum logprob */
    int32_t beam_width;         /* 0 = off, [1, 8]; temperature must be 0, n <= beam_width */
    float length_penalty;       /* beam score = cum_logprob / length^length_penalty */
    bool early_stopping;        /* beams: stop once beam_width hypotheses are finished */
    int32_t n_stop;             /* [0, 16] */
    char stop[BT_MAX_STOP][BT_STOP_MAX_BYTES + 1]; /* NUL-terminated, 1..256 bytes */
    bt_request_token_fn on_token;                  /* may be NULL */
    bt_request_text_fn on_text;                    /* may be NULL */
    bt_request_done_fn on_finish;                  /* may be NULL */
    bt_request_done_fn on_done;                    /* may be NULL */
    void *ctx;
} bt_request_params;

/* max_tokens 128, n 1, best_of 1, no beams, length_penalty 1, sampler defaults. */
bt_request_params bt_request_default_params(void);

/* Adds a stop string (len bytes, may hold any bytes but NUL). BT_ERR_RANGE naming `stop`
 * when it is empty, longer than 256 bytes, or the 17th. */
bt_status bt_request_params_add_stop(bt_request_params *p, const char *s, size_t len,
                                     bt_error *err);

/* Every parameter and combination; the message names the parameter. n_vocab bounds token
 * ids (0 skips). */
bt_status bt_request_params_validate(const bt_request_params *p, int32_t n_vocab, bt_error *err);

/* A request's handle: opaque outside coordinator/engine/ (request_impl.h), reference
 * counted. bt_request_new (request_impl.h) returns it with one reference. */
void bt_request_ref(bt_request *r);
void bt_request_unref(bt_request *r); /* NULL is a no-op; frees at zero */

#endif
