/*
 * openai.h - the OpenAI wire format of `baton serve`: request bodies (JSON) into engine
 * requests, engine events into response bodies and server-sent-event chunks, and the error
 * shape {"error": {"message", "type", "param", "code"}}.
 *
 * No sockets here: server.c calls these with bytes it read and writes what they return, and
 * tests/unit/test_openai.c calls them directly. Everything is a pure function of its
 * arguments (plus the immutable vocabulary and chat template), so any thread may call them.
 *
 * Parsing follows OpenAI and vLLM: unknown fields are ignored, a field with the wrong type or
 * range is a 400 whose `param` names it, `null` means "the default". Scalar sampling fields go
 * through the parameter table (request.h: bt_request_param_find/set), so their names, ranges
 * and defaults are written once, in request.h/sampling.h.
 */
#ifndef BT_OPENAI_H
#define BT_OPENAI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "chat.h"
#include "request.h"
#include "vocab.h"

struct bt_event; /* engine.h */

typedef enum bt_api_kind { BT_API_COMPLETIONS, BT_API_CHAT } bt_api_kind;

/* One error response. http is the status; type and code are OpenAI's strings (code may be
 * NULL); param names the request field ("" for none). */
typedef struct bt_api_error {
    int http;
    const char *type;
    const char *code;
    char param[64];
    char message[512];
} bt_api_error;

/* Fills e and returns false (so a parser reads `return api_fail(...)`). param may be NULL. */
bool bt_api_error_set(bt_api_error *e, int http, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The error as an engine status maps to it: a refused submit or a failed DONE. BT_ERR_BUSY
 * and BT_ERR_UNAVAILABLE (queue full, draining, not ready, a stage failed) and BT_ERR_TIMEOUT
 * (queue deadline) are 503; BT_ERR_LIMIT, BT_ERR_RANGE and BT_ERR_INVALID_ARG are 400 (param
 * taken from the message's first word when it is a request field); the rest 500. */
void bt_api_error_from_status(bt_api_error *e, bt_status st, const char *message);

/* {"error": {...}} as a new JSON object (caller json_decref), or NULL when out of memory. */
json_t *bt_api_error_json(const bt_api_error *e);

/* What the parser needs to know about the served model. Borrowed; immutable while serving. */
typedef struct bt_api_model {
    const char *name; /* the model id requests must name */
    const bt_vocab *vocab;
    const bt_chat_template *chat; /* NULL: chat requests get a 400 with chat_error */
    const char *chat_error;       /* why there is no template, naming the fix */
    int32_t n_ctx;
} bt_api_model;

/* A parsed request: the engine parameters and the tokenized prompt. */
typedef struct bt_api_req {
    bt_api_kind kind;
    bt_request_params params;
    int32_t *prompt; /* [n_prompt], owned (bt_api_req_deinit) */
    int32_t n_prompt;
    bool stream;
    bool include_usage; /* stream_options.include_usage */
    bool logprobs;      /* report logprobs (completions: "logprobs" given; chat: true) */
} bt_api_req;

/* Parses body[0..n) as a request of `kind` for model m: JSON, every field's type and range
 * (bt_request_params_validate last, with the vocabulary's size), the model name (404), the
 * prompt tokenized (completions: a string, a list of one string, a list of token ids or a list
 * of one such list; chat: messages rendered by the template) and checked against the context
 * (400 context_length_exceeded giving both numbers). On false, e holds the error and out owns
 * nothing. Defaults are OpenAI's (bt_request_default_params_for(BT_PARAM_STYLE_OPENAI));
 * chat without max_tokens may use the rest of the context. */
bool bt_api_parse(const bt_api_model *m, bt_api_kind kind, const char *body, size_t n,
                  bt_api_req *out, bt_api_error *e);
/* The same for a body already parsed (a batch line's "body"); root borrowed, not changed. */
bool bt_api_parse_json(const bt_api_model *m, bt_api_kind kind, json_t *root, bt_api_req *out,
                       bt_api_error *e);
void bt_api_req_deinit(bt_api_req *r);

/* ---- responses ---- */

/* The identity every body and chunk of one response shares, and the state of a stream. */
typedef struct bt_api_resp {
    bt_api_kind kind;
    char id[48]; /* "cmpl-..." / "chatcmpl-..." */
    int64_t created;
    const char *model;     /* borrowed */
    const bt_vocab *vocab; /* borrowed: token strings of logprobs */
    bool logprobs;
    int n_choices;
    bool include_usage;
    bool whole_at_done; /* best_of > n or beams: choices are sent whole at DONE */
    /* streams: per choice, whether its finish was sent and the text offset so far */
    bool finished[BT_MAX_COMPLETIONS];
    size_t text_offset[BT_MAX_COMPLETIONS];
} bt_api_resp;

/* Sets up r for request q; id_seq makes the id unique within this process. */
void bt_api_resp_init(bt_api_resp *r, const bt_api_req *q, const bt_api_model *m, uint64_t id_seq,
                      int64_t created);

/* A growing byte buffer (responses, SSE chunks). Owned by whoever holds it; free with
 * bt_api_buf_free. Appends fail only when out of memory. */
typedef struct bt_api_buf {
    char *p;
    size_t n, cap;
} bt_api_buf;
bool bt_api_buf_append(bt_api_buf *b, const void *p, size_t n);
void bt_api_buf_free(bt_api_buf *b);

/* The whole JSON body of a finished request (DONE with status BT_OK). */
json_t *bt_api_body_json(const bt_api_resp *r, const struct bt_event *done);

/* Appends the SSE bytes ("data: {...}\n\n") an event produces in a stream: the first chunk of
 * each choice (chat: role "assistant") from bt_api_sse_start; a TOKEN's text (and logprobs);
 * a FINISH's finish_reason; at DONE, the whole text of choices that had no TOKEN events (best_of
 * > n, beams), the usage chunk when asked for, an error chunk when the request failed, and
 * "data: [DONE]". False when out of memory. */
bool bt_api_sse_start(bt_api_resp *r, bt_api_buf *out);
bool bt_api_sse_event(bt_api_resp *r, const struct bt_event *ev, bt_api_buf *out);
/* An error chunk then [DONE]: for a failure after the stream started. */
bool bt_api_sse_error(const bt_api_error *e, bt_api_buf *out);

/* OpenAI's finish_reason of f: "stop", "length" (max_tokens or the context), "abort". */
const char *bt_api_finish_reason(bt_finish f);

/* Appends json_dumps(j) (compact) to out; false when out of memory. Does not take j. */
bool bt_api_buf_json(bt_api_buf *out, const json_t *j);

/* A JSON string of the bytes s[0..n): as is when valid UTF-8, else with each invalid byte
 * replaced by U+FFFD. New reference, NULL only when out of memory. */
json_t *bt_api_json_text(const char *s, size_t n);

#endif
