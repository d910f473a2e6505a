/* openai_request.c - OpenAI request bodies into engine requests, and the error shape (see
 * openai.h). */
#include "openai.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---- */

static const char *type_of(int http) {
    switch (http) {
    case 401:
        return "authentication_error";
    case 404:
    case 400:
    case 405:
    case 413:
    case 431:
        return "invalid_request_error";
    default:
        return "server_error";
    }
}

bool bt_api_error_set(bt_api_error *e, int http, const char *param, const char *code,
                      const char *fmt, ...) {
    e->http = http;
    e->type = type_of(http);
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return false;
}

/* The leading field name of a validation message ("temperature 3 is outside ...",
 * "stop: string 2 is empty"), when it is one a request may carry. */
static void param_of_message(const char *msg, char *out, size_t cap) {
    size_t n = 0;
    while (msg[n] && (islower((unsigned char)msg[n]) || msg[n] == '_'))
        n++;
    out[0] = '\0';
    if (n == 0 || n >= cap)
        return;
    char name[64];
    memcpy(name, msg, n);
    name[n] = '\0';
    static const char *const hand[] = {
        "stop", "logit_bias", "stop_token_ids", "prompt", "messages", "max_tokens", "n", "best_of"};
    bool known = bt_request_param_find(name) != NULL;
    for (size_t i = 0; !known && i < sizeof hand / sizeof hand[0]; i++)
        known = strcmp(hand[i], name) == 0;
    if (known)
        memcpy(out, name, n + 1);
}

void bt_api_error_from_status(bt_api_error *e, bt_status st, const char *message) {
    const char *msg = message && message[0] ? message : bt_status_str(st);
    char param[64];
    switch (st) {
    case BT_ERR_BUSY:
        bt_api_error_set(e, 503, NULL, "queue_full", "the server is busy: %s", msg);
        break;
    case BT_ERR_UNAVAILABLE:
        bt_api_error_set(e, 503, NULL, "service_unavailable", "%s", msg);
        break;
    case BT_ERR_TIMEOUT:
        bt_api_error_set(e, 503, NULL, "queue_timeout", "%s", msg);
        break;
    case BT_ERR_LIMIT:
    case BT_ERR_RANGE:
    case BT_ERR_INVALID_ARG:
        param_of_message(msg, param, sizeof param);
        bt_api_error_set(e, 400, param,
                         st == BT_ERR_LIMIT ? "context_length_exceeded" : "invalid_value", "%s",
                         msg);
        break;
    default:
        bt_api_error_set(e, 500, NULL, "internal_error", "%s", msg);
        break;
    }
}

json_t *bt_api_error_json(const bt_api_error *e) {
    json_t *inner = json_pack("{s:o, s:s, s:o, s:o}", "message",
                              bt_api_json_text(e->message, strlen(e->message)), "type", e->type,
                              "param", e->param[0] ? json_string(e->param) : json_null(), "code",
                              e->code ? json_string(e->code) : json_null());
    return inner ? json_pack("{s:o}", "error", inner) : NULL;
}

/* ---- JSON text ---- */

json_t *bt_api_json_text(const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    /* Invalid UTF-8 (a token cut inside a character): each bad byte becomes U+FFFD. */
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && c != 0;
        for (size_t b = 1; ok && b < len; b++)
            ok = ((unsigned char)s[i + b] & 0xC0) == 0x80;
        if (ok && len > 1) { /* overlongs, surrogates and > U+10FFFF as jansson refuses them */
            json_t *one = json_stringn(s + i, len);
            ok = one != NULL;
            json_decref(one);
        }
        if (ok) {
            memcpy(o + k, s + i, len);
            k += len;
            i += len;
        } else {
            memcpy(o + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        }
    }
    j = json_stringn(o, k);
    free(o);
    return j;
}

/* ---- request parsing ---- */

static bool type_error(bt_api_error *e, const char *field, const char *want) {
    return bt_api_error_set(e, 400, field, "invalid_type", "%s must be %s", field, want);
}

/* Sets a table parameter from a JSON value of the row's kind. */
static bool set_param(bt_request_params *p, const bt_param_desc *d, const json_t *v,
                      bt_api_error *e) {
    double x;
    switch (d->kind) {
    case BT_PARAM_BOOL:
        if (!json_is_boolean(v))
            return type_error(e, d->name, "a boolean");
        x = json_is_true(v) ? 1 : 0;
        break;
    case BT_PARAM_FLOAT:
        if (!json_is_number(v))
            return type_error(e, d->name, "a number");
        x = json_number_value(v);
        break;
    default: /* INT, U64: an integer, also when written as 3.0 */
        if (!json_is_number(v))
            return type_error(e, d->name, "an integer");
        x = json_number_value(v);
        break;
    }
    /* vLLM writes "top_k off" as -1; the table's off is 0. */
    if (strcmp(d->name, "top_k") == 0 && x == -1)
        x = 0;
    bt_error err;
    bt_error_init(&err);
    if (bt_request_param_set(p, d, x, &err) != BT_OK)
        return bt_api_error_set(e, 400, d->name, "invalid_value", "%s", err.msg);
    return true;
}

static bool parse_stop(bt_request_params *p, const json_t *v, bt_api_error *e) {
    bt_error err;
    bt_error_init(&err);
    if (json_is_string(v)) {
        if (bt_request_params_add_stop(p, json_string_value(v), json_string_length(v), &err) !=
            BT_OK)
            return bt_api_error_set(e, 400, "stop", "invalid_value", "%s", err.msg);
        return true;
    }
    if (!json_is_array(v))
        return type_error(e, "stop", "a string or a list of strings");
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s))
            return type_error(e, "stop", "a string or a list of strings");
        if (bt_request_params_add_stop(p, json_string_value(s), json_string_length(s), &err) !=
            BT_OK)
            return bt_api_error_set(e, 400, "stop", "invalid_value", "%s", err.msg);
    }
    return true;
}

static bool parse_int_id(const json_t *v, int32_t n_vocab, int32_t *out) {
    if (!json_is_integer(v))
        return false;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x >= n_vocab)
        return false;
    *out = (int32_t)x;
    return true;
}

static bool parse_logit_bias(bt_sampler_params *s, const json_t *v, int32_t n_vocab,
                             bt_api_error *e) {
    if (!json_is_object(v))
        return type_error(e, "logit_bias", "an object of token id -> bias");
    const char *key;
    json_t *b;
    json_object_foreach((json_t *)v, key, b) {
        char *end;
        long id = strtol(key, &end, 10);
        if (!key[0] || *end || id < 0 || id >= n_vocab)
            return bt_api_error_set(e, 400, "logit_bias", "invalid_value",
                                    "logit_bias: key '%.40s' is not a token id in [0, %d)", key,
                                    n_vocab);
        if (!json_is_number(b))
            return type_error(e, "logit_bias", "an object of token id -> number");
        if (s->n_logit_bias >= BT_MAX_LOGIT_BIAS)
            return bt_api_error_set(e, 400, "logit_bias", "invalid_value",
                                    "logit_bias: more than %d entries", BT_MAX_LOGIT_BIAS);
        s->logit_bias[s->n_logit_bias].token = (int32_t)id;
        s->logit_bias[s->n_logit_bias].bias = (float)json_number_value(b);
        s->n_logit_bias++;
    }
    return true;
}

static bool parse_stop_token_ids(bt_sampler_params *s, const json_t *v, int32_t n_vocab,
                                 bt_api_error *e) {
    if (!json_is_array(v))
        return type_error(e, "stop_token_ids", "a list of token ids");
    if (json_array_size(v) > BT_MAX_STOP_TOKEN_IDS)
        return bt_api_error_set(e, 400, "stop_token_ids", "invalid_value",
                                "stop_token_ids: %zu ids, at most %d", json_array_size(v),
                                BT_MAX_STOP_TOKEN_IDS);
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        if (!parse_int_id(t, n_vocab, &s->stop_token_ids[i]))
            return bt_api_error_set(e, 400, "stop_token_ids", "invalid_value",
                                    "stop_token_ids[%zu] is not a token id in [0, %d)", i, n_vocab);
    }
    s->n_stop_token_ids = (int32_t)json_array_size(v);
    return true;
}

static bool context_error(const bt_api_model *m, const char *field, size_t n_prompt,
                          bt_api_error *e) {
    return bt_api_error_set(e, 400, field, "context_length_exceeded",
                            "This model's maximum context length is %d tokens; the %s has %zu "
                            "tokens, which leaves no room for a completion",
                            (int)m->n_ctx, field, n_prompt);
}

/* Token ids from a JSON list (a completions prompt given as ids). */
static bool prompt_ids(const bt_api_model *m, const json_t *a, bt_api_req *q, bt_api_error *e) {
    size_t n = json_array_size(a);
    int32_t n_vocab = bt_vocab_n_tokens(m->vocab);
    if (n == 0)
        return bt_api_error_set(e, 400, "prompt", "invalid_value", "prompt is empty");
    if (n + 1 > (size_t)m->n_ctx)
        return context_error(m, "prompt", n, e);
    q->prompt = malloc(n * sizeof *q->prompt);
    if (!q->prompt)
        return bt_api_error_set(e, 500, NULL, "internal_error", "out of memory");
    size_t i;
    json_t *t;
    json_array_foreach(a, i, t) {
        if (!parse_int_id(t, n_vocab, &q->prompt[i]))
            return bt_api_error_set(e, 400, "prompt", "invalid_value",
                                    "prompt[%zu] is not a token id in [0, %d)", i, n_vocab);
    }
    q->n_prompt = (int32_t)n;
    return true;
}

/* Tokenizes with room for the whole context; a longer prompt is the context error. */
static bool prompt_text(const bt_api_model *m, const char *s, size_t len, bt_api_req *q,
                        bt_api_error *e) {
    size_t cap = (size_t)m->n_ctx, need = 0;
    q->prompt = malloc(cap * sizeof *q->prompt);
    if (!q->prompt)
        return bt_api_error_set(e, 500, NULL, "internal_error", "out of memory");
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_tokenize(m->vocab, s, len, true, false, q->prompt, cap, &need, &err);
    if (st == BT_ERR_LIMIT || (st == BT_OK && need + 1 > cap))
        return context_error(m, "prompt", need, e);
    if (st != BT_OK)
        return bt_api_error_set(e, 400, "prompt", "invalid_value", "prompt: %s", err.msg);
    q->n_prompt = (int32_t)need;
    return true;
}

static bool parse_prompt(const bt_api_model *m, const json_t *v, bt_api_req *q, bt_api_error *e) {
    if (!v)
        return bt_api_error_set(e, 400, "prompt", "missing_required_parameter",
                                "prompt is required");
    if (json_is_string(v))
        return prompt_text(m, json_string_value(v), json_string_length(v), q, e);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return type_error(e, "prompt", "a string, a list of token ids, or a list of one of those");
    const json_t *first = json_array_get(v, 0);
    if (json_is_integer(first))
        return prompt_ids(m, v, q, e);
    if (json_array_size(v) != 1)
        return bt_api_error_set(e, 400, "prompt", "invalid_value",
                                "prompt: %zu prompts given; one request takes one prompt",
                                json_array_size(v));
    if (json_is_string(first))
        return prompt_text(m, json_string_value(first), json_string_length(first), q, e);
    if (json_is_array(first))
        return prompt_ids(m, first, q, e);
    return type_error(e, "prompt", "a string, a list of token ids, or a list of one of those");
}

/* A message's content: a string, or a list of {"type": "text", "text": ...} parts joined. The
 * returned string is malloc'd; it has no NUL inside (jansson refuses \u0000 unless asked). */
static bool message_content(const json_t *c, const char *role, size_t i, char **out,
                            bt_api_error *e) {
    bt_api_buf b = {0};
    if (json_is_null(c) || !c) {
        /* only an assistant turn (one that called tools) may come without content */
        if (strcmp(role, "assistant") != 0)
            return bt_api_error_set(e, 400, "messages", "missing_required_parameter",
                                    "messages[%zu].content is required for role '%.40s'", i, role);
    } else if (json_is_string(c)) {
        bt_api_buf_append(&b, json_string_value(c), json_string_length(c));
    } else if (json_is_array(c)) {
        size_t k;
        json_t *part;
        json_array_foreach(c, k, part) {
            const json_t *type = json_object_get(part, "type");
            const json_t *text = json_object_get(part, "text");
            if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
                !json_is_string(text)) {
                bt_api_buf_free(&b);
                return bt_api_error_set(e, 400, "messages", "invalid_value",
                                        "messages[%zu].content[%zu]: only {\"type\": \"text\", "
                                        "\"text\": string} parts are supported",
                                        i, k);
            }
            bt_api_buf_append(&b, json_string_value(text), json_string_length(text));
        }
    } else {
        return type_error(e, "messages", "a list of {role, content} with string content");
    }
    if (!bt_api_buf_append(&b, "", 1)) {
        bt_api_buf_free(&b);
        return bt_api_error_set(e, 500, NULL, "internal_error", "out of memory");
    }
    *out = b.p;
    return true;
}

static bool parse_messages(const bt_api_model *m, const json_t *v, bt_api_req *q, bt_api_error *e) {
    if (!v)
        return bt_api_error_set(e, 400, "messages", "missing_required_parameter",
                                "messages is required");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return type_error(e, "messages", "a non-empty list of {role, content}");
    if (!m->chat)
        return bt_api_error_set(e, 400, "messages", "chat_template_unsupported", "%s",
                                m->chat_error ? m->chat_error : "the model has no chat template");
    size_t n = json_array_size(v);
    bt_chat_msg *msgs = calloc(n, sizeof *msgs);
    char **texts = calloc(n, sizeof *texts);
    bool ok = msgs && texts;
    if (!ok)
        bt_api_error_set(e, 500, NULL, "internal_error", "out of memory");
    for (size_t i = 0; ok && i < n; i++) {
        const json_t *msg = json_array_get(v, i);
        const json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            ok = bt_api_error_set(e, 400, "messages", "invalid_value",
                                  "messages[%zu] must be an object with a string role", i);
            break;
        }
        msgs[i].role = json_string_value(role);
        /* OpenAI's newer name for the system role */
        if (strcmp(msgs[i].role, "developer") == 0)
            msgs[i].role = "system";
        ok = message_content(json_object_get(msg, "content"), msgs[i].role, i, &texts[i], e);
        msgs[i].content = texts[i];
    }
    if (ok) {
        size_t cap = (size_t)m->n_ctx, need = 0;
        bt_chat_params cp = bt_chat_default_params();
        bt_error err;
        bt_error_init(&err);
        q->prompt = malloc(cap * sizeof *q->prompt);
        bt_status st = q->prompt ? bt_chat_tokenize(m->chat, m->vocab, msgs, n, &cp, q->prompt, cap,
                                                    &need, &err)
                                 : BT_ERR_NOMEM;
        if (st == BT_ERR_LIMIT || (st == BT_OK && need + 1 > cap))
            ok = context_error(m, "messages", need, e);
        else if (st == BT_ERR_NOMEM)
            ok = bt_api_error_set(e, 500, NULL, "internal_error", "out of memory");
        else if (st != BT_OK)
            ok = bt_api_error_set(e, 400, "messages", "invalid_value", "%s", err.msg);
        else
            q->n_prompt = (int32_t)need;
    }
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(msgs);
    return ok;
}

/* The fields with a shape of their own (not a scalar of the table). */
static bool parse_special(const bt_api_model *m, const char *key, const json_t *v, bt_api_req *q,
                          bool *max_given, bt_api_error *e) {
    bt_request_params *p = &q->params;
    int32_t n_vocab = bt_vocab_n_tokens(m->vocab);
    if (strcmp(key, "stream") == 0) {
        if (!json_is_boolean(v))
            return type_error(e, key, "a boolean");
        q->stream = json_is_true(v);
    } else if (strcmp(key, "stream_options") == 0) {
        const json_t *u = json_object_get(v, "include_usage");
        if (!json_is_object(v) || (u && !json_is_boolean(u) && !json_is_null(u)))
            return type_error(e, key, "an object {\"include_usage\": boolean}");
        q->include_usage = json_is_true(u);
    } else if (strcmp(key, "stop") == 0) {
        return parse_stop(p, v, e);
    } else if (strcmp(key, "logit_bias") == 0) {
        return parse_logit_bias(&p->sampling, v, n_vocab, e);
    } else if (strcmp(key, "stop_token_ids") == 0) {
        return parse_stop_token_ids(&p->sampling, v, n_vocab, e);
    } else if (strcmp(key, "logprobs") == 0) {
        if (q->kind == BT_API_CHAT) {
            if (!json_is_boolean(v))
                return type_error(e, key, "a boolean");
            q->logprobs = json_is_true(v);
        } else {
            if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                json_integer_value(v) > BT_MAX_TOP_LOGPROBS)
                return bt_api_error_set(e, 400, key, "invalid_value",
                                        "logprobs must be an integer in [0, %d]",
                                        BT_MAX_TOP_LOGPROBS);
            q->logprobs = true;
            p->sampling.top_logprobs = (int32_t)json_integer_value(v);
        }
    } else if (strcmp(key, "max_tokens") == 0 || strcmp(key, "max_completion_tokens") == 0) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > INT32_MAX)
            return bt_api_error_set(e, 400, key, "invalid_value", "%s must be a positive integer",
                                    key);
        p->max_tokens = (int32_t)json_integer_value(v);
        *max_given = true;
    } else if (strcmp(key, "use_beam_search") == 0) {
        if (!json_is_boolean(v))
            return type_error(e, key, "a boolean");
        p->beam_width = json_is_true(v) ? 1 : 0; /* widened to max(n, best_of) at the end */
    } else if (strcmp(key, "echo") == 0) {
        if (json_is_true(v))
            return bt_api_error_set(e, 400, key, "unsupported", "echo is not supported");
    } else if (strcmp(key, "suffix") == 0) {
        if (!json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
            return bt_api_error_set(e, 400, key, "unsupported", "suffix is not supported");
    }
    return true;
}

static bool is_special(const char *key) {
    static const char *const keys[] = {"stream",
                                       "stream_options",
                                       "stop",
                                       "logit_bias",
                                       "logprobs",
                                       "max_tokens",
                                       "max_completion_tokens",
                                       "use_beam_search",
                                       "echo",
                                       "suffix",
                                       "stop_token_ids"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (strcmp(keys[i], key) == 0)
            return true;
    return false;
}

bool bt_api_parse(const bt_api_model *m, bt_api_kind kind, const char *body, size_t n,
                  bt_api_req *out, bt_api_error *e) {
    memset(out, 0, sizeof *out);
    json_error_t jerr;
    json_t *root = json_loadb(body, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return bt_api_error_set(e, 400, NULL, "invalid_json",
                                "the body is not valid JSON: %s (at byte %d)", jerr.text,
                                jerr.position);
    bool ok = bt_api_parse_json(m, kind, root, out, e);
    json_decref(root);
    return ok;
}

bool bt_api_parse_json(const bt_api_model *m, bt_api_kind kind, json_t *root, bt_api_req *out,
                       bt_api_error *e) {
    memset(out, 0, sizeof *out);
    out->kind = kind;
    out->params = bt_request_default_params_for(BT_PARAM_STYLE_OPENAI);
    bool ok = true, max_given = false;
    if (!json_is_object(root))
        ok = bt_api_error_set(e, 400, NULL, "invalid_json", "the body must be a JSON object");
    const json_t *model = ok ? json_object_get(root, "model") : NULL;
    if (ok && model && !json_is_null(model)) {
        if (!json_is_string(model))
            ok = type_error(e, "model", "a string");
        else if (strcmp(json_string_value(model), m->name) != 0)
            ok = bt_api_error_set(e, 404, "model", "model_not_found",
                                  "The model '%.200s' does not exist; this server serves '%.200s'",
                                  json_string_value(model), m->name);
    }
    const char *key;
    json_t *v;
    if (ok) {
        json_object_foreach(root, key, v) {
            if (json_is_null(v))
                continue; /* null: the default, as OpenAI */
            if (is_special(key)) {
                ok = parse_special(m, key, v, out, &max_given, e);
            } else {
                const bt_param_desc *d = bt_request_param_find(key);
                /* max_tokens has its own rule above; unknown fields are ignored */
                if (d)
                    ok = set_param(&out->params, d, v, e);
            }
            if (!ok)
                break;
        }
    }
    bt_request_params *p = &out->params;
    if (ok && kind == BT_API_CHAT && !out->logprobs && p->sampling.top_logprobs > 0)
        ok = bt_api_error_set(e, 400, "top_logprobs", "invalid_value",
                              "top_logprobs needs \"logprobs\": true"); /* as OpenAI */
    if (ok && p->beam_width) {
        int32_t n_out = p->n ? p->n : 1;
        int32_t best = p->best_of > n_out ? p->best_of : n_out;
        p->beam_width = best;
        p->best_of = 0;
        if (!json_object_get(root, "temperature"))
            p->sampling.temperature = 0; /* beams are deterministic */
    }
    if (ok)
        ok = kind == BT_API_CHAT ? parse_messages(m, json_object_get(root, "messages"), out, e)
                                 : parse_prompt(m, json_object_get(root, "prompt"), out, e);
    if (ok && kind == BT_API_CHAT && !max_given)
        p->max_tokens = m->n_ctx - out->n_prompt; /* up to the context */
    if (ok && p->max_tokens > m->n_ctx - out->n_prompt)
        p->max_tokens = m->n_ctx - out->n_prompt; /* capped at the context, as vLLM */
    if (ok) {
        bt_error err;
        bt_error_init(&err);
        if (bt_request_params_validate(p, bt_vocab_n_tokens(m->vocab), &err) != BT_OK) {
            char param[64];
            param_of_message(err.msg, param, sizeof param);
            ok = bt_api_error_set(e, 400, param, "invalid_value", "%s", err.msg);
        }
    }
    if (!ok)
        bt_api_req_deinit(out);
    return ok;
}

void bt_api_req_deinit(bt_api_req *r) {
    free(r->prompt);
    r->prompt = NULL;
    r->n_prompt = 0;
}

/* ---- buffers ---- */

bool bt_api_buf_append(bt_api_buf *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            return false;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

void bt_api_buf_free(bt_api_buf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

bool bt_api_buf_json(bt_api_buf *out, const json_t *j) {
    if (!j)
        return false;
    char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return false;
    bool ok = bt_api_buf_append(out, s, strlen(s));
    free(s);
    return ok;
}
