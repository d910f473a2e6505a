/* openai_response.c - engine events into OpenAI response bodies and SSE chunks (see
 * openai.h). */
#include "openai.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* A token's text for logprobs: its piece when valid UTF-8, else "bytes:\xNN..." as vLLM. */
static json_t *token_json(const bt_vocab *v, int32_t id) {
    bt_str s = bt_vocab_token_piece(v, id, true);
    json_t *j = json_stringn(s.ptr, s.len);
    if (j)
        return j;
    char buf[8 + 4 * 256];
    size_t k = (size_t)snprintf(buf, sizeof buf, "bytes:");
    for (size_t i = 0; i < s.len && k + 5 < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "\\x%02x", (unsigned char)s.ptr[i]);
    return json_stringn(buf, k);
}

static json_t *token_bytes_json(const bt_vocab *v, int32_t id) {
    bt_str s = bt_vocab_token_piece(v, id, true);
    json_t *a = json_array();
    for (size_t i = 0; a && i < s.len; i++)
        json_array_append_new(a, json_integer((unsigned char)s.ptr[i]));
    return a;
}

/* Logprobs may be -inf (a banned token); JSON has no infinity, OpenAI writes -9999. */
static json_t *logprob_json(float lp) {
    return json_real(isfinite(lp) ? (double)lp : -9999.0);
}

/* ---- responses ---- */

const char *bt_api_finish_reason(bt_finish f) {
    switch (f) {
    case BT_FINISH_STOP:
        return "stop";
    case BT_FINISH_LENGTH:
    case BT_FINISH_CONTEXT:
        return "length";
    default:
        return "abort";
    }
}

void bt_api_resp_init(bt_api_resp *r, const bt_api_req *q, const bt_api_model *m, uint64_t id_seq,
                      int64_t created) {
    memset(r, 0, sizeof *r);
    r->kind = q->kind;
    snprintf(r->id, sizeof r->id, "%s-%016llx%08llx", q->kind == BT_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)created * 2654435761ull, (unsigned long long)id_seq);
    r->created = created;
    r->model = m->name;
    r->vocab = m->vocab;
    r->logprobs = q->logprobs;
    r->n_choices = q->params.n > 0 ? q->params.n : 1;
    r->include_usage = q->include_usage;
    int32_t n = r->n_choices;
    r->whole_at_done = q->params.beam_width > 0 || (q->params.best_of > n);
}

/* Logprobs of tokens [0, n) with their alternatives (stride top_stride, n_top[i] each). */
typedef struct lp_span {
    const int32_t *tokens;
    const float *logprobs;
    int n;
    int top_stride;
    const uint8_t *n_top;
    const int32_t *top_token;
    const float *top_logprob;
} lp_span;

static json_t *completion_logprobs(const bt_api_resp *r, const lp_span *s, size_t *offset) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int i = 0; i < s->n; i++) {
        json_array_append_new(tokens, token_json(r->vocab, s->tokens[i]));
        json_array_append_new(lps, logprob_json(s->logprobs[i]));
        json_t *top = json_object();
        int k_n = s->n_top ? s->n_top[i] : 0;
        for (int k = 0; k < k_n; k++) {
            int32_t id = s->top_token[(size_t)i * (size_t)s->top_stride + (size_t)k];
            json_t *key = token_json(r->vocab, id);
            json_object_set_new(
                top, json_string_value(key),
                logprob_json(s->top_logprob[(size_t)i * (size_t)s->top_stride + (size_t)k]));
            json_decref(key);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer((json_int_t)*offset));
        *offset += bt_vocab_token_piece(r->vocab, s->tokens[i], false).len;
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps,
                     "top_logprobs", tops, "text_offset", offs);
}

static json_t *chat_logprobs(const bt_api_resp *r, const lp_span *s) {
    json_t *content = json_array();
    for (int i = 0; i < s->n; i++) {
        json_t *tops = json_array();
        int k_n = s->n_top ? s->n_top[i] : 0;
        for (int k = 0; k < k_n; k++) {
            size_t at = (size_t)i * (size_t)s->top_stride + (size_t)k;
            json_array_append_new(tops, json_pack("{s:o, s:o, s:o}", "token",
                                                  token_json(r->vocab, s->top_token[at]), "logprob",
                                                  logprob_json(s->top_logprob[at]), "bytes",
                                                  token_bytes_json(r->vocab, s->top_token[at])));
        }
        json_array_append_new(
            content, json_pack("{s:o, s:o, s:o, s:o}", "token", token_json(r->vocab, s->tokens[i]),
                               "logprob", logprob_json(s->logprobs[i]), "bytes",
                               token_bytes_json(r->vocab, s->tokens[i]), "top_logprobs", tops));
    }
    return json_pack("{s:o}", "content", content);
}

static json_t *logprobs_json(const bt_api_resp *r, const lp_span *s, size_t *offset) {
    if (!r->logprobs)
        return json_null();
    return r->kind == BT_API_CHAT ? chat_logprobs(r, s) : completion_logprobs(r, s, offset);
}

static lp_span span_of(const bt_completion_view *c) {
    lp_span s = {c->tokens, c->logprobs,  c->n_tokens,   c->top_stride,
                 c->n_top,  c->top_token, c->top_logprob};
    return s;
}

static json_t *usage_json(const bt_event *done) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", (json_int_t)done->usage_prompt_tokens,
                     "completion_tokens", (json_int_t)done->usage_completion_tokens, "total_tokens",
                     (json_int_t)done->usage_prompt_tokens + done->usage_completion_tokens);
}

static const char *object_of(const bt_api_resp *r, bool chunk) {
    if (r->kind == BT_API_CHAT)
        return chunk ? "chat.completion.chunk" : "chat.completion";
    return "text_completion";
}

static json_t *envelope(const bt_api_resp *r, bool chunk, json_t *choices) {
    return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", r->id, "object", object_of(r, chunk),
                     "created", (json_int_t)r->created, "model", r->model, "choices", choices);
}

json_t *bt_api_body_json(const bt_api_resp *r, const bt_event *done) {
    json_t *choices = json_array();
    for (int i = 0; i < done->n_completions; i++) {
        const bt_completion_view *c = &done->completions[i];
        lp_span s = span_of(c);
        size_t offset = 0;
        json_t *text = bt_api_json_text(c->text, c->n_text);
        json_t *choice;
        if (r->kind == BT_API_CHAT)
            choice =
                json_pack("{s:i, s:{s:s, s:o}, s:o, s:s}", "index", i, "message", "role",
                          "assistant", "content", text, "logprobs", logprobs_json(r, &s, &offset),
                          "finish_reason", bt_api_finish_reason(c->finish));
        else
            choice = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "text", text, "logprobs",
                               logprobs_json(r, &s, &offset), "finish_reason",
                               bt_api_finish_reason(c->finish));
        json_array_append_new(choices, choice);
    }
    json_t *body = envelope(r, false, choices);
    if (body)
        json_object_set_new(body, "usage", usage_json(done));
    return body;
}

static bool sse_json(bt_api_buf *out, json_t *j) {
    bool ok = j && bt_api_buf_append(out, "data: ", 6) && bt_api_buf_json(out, j) &&
              bt_api_buf_append(out, "\n\n", 2);
    json_decref(j);
    return ok;
}

/* One chunk for choice `index`: text (may be empty), logprobs of s (or null), finish. */
static bool sse_choice(bt_api_resp *r, int index, const char *text, size_t n_text, const lp_span *s,
                       const char *finish, bt_api_buf *out) {
    json_t *lp = s && s->n ? logprobs_json(r, s, &r->text_offset[index]) : json_null();
    json_t *fin = finish ? json_string(finish) : json_null();
    json_t *choice;
    if (r->kind == BT_API_CHAT) {
        json_t *delta = json_object();
        if (text && (n_text || !finish))
            json_object_set_new(delta, "content", bt_api_json_text(text, n_text));
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs", lp,
                           "finish_reason", fin);
    } else {
        choice = json_pack("{s:i, s:o, s:o, s:o}", "index", index, "text",
                           bt_api_json_text(text ? text : "", text ? n_text : 0), "logprobs", lp,
                           "finish_reason", fin);
    }
    return sse_json(out, envelope(r, true, json_pack("[o]", choice)));
}

bool bt_api_sse_start(bt_api_resp *r, bt_api_buf *out) {
    if (r->kind != BT_API_CHAT)
        return true;
    for (int i = 0; i < r->n_choices; i++) {
        json_t *choice = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", i, "delta", "role",
                                   "assistant", "content", "", "logprobs", "finish_reason");
        if (!sse_json(out, envelope(r, true, json_pack("[o]", choice))))
            return false;
    }
    return true;
}

bool bt_api_sse_error(const bt_api_error *e, bt_api_buf *out) {
    return sse_json(out, bt_api_error_json(e)) && bt_api_buf_append(out, "data: [DONE]\n\n", 14);
}

bool bt_api_sse_event(bt_api_resp *r, const bt_event *ev, bt_api_buf *out) {
    if (ev->kind != BT_EVENT_DONE && r->whole_at_done)
        return true; /* the winners are known only at DONE */
    if (ev->kind == BT_EVENT_TOKEN) {
        if (ev->index < 0 || ev->index >= BT_MAX_COMPLETIONS)
            return true;
        uint8_t n_top = (uint8_t)ev->n_top;
        lp_span s = {&ev->token,    &ev->logprob,   1, ev->n_top, &n_top,
                     ev->top_token, ev->top_logprob};
        /* A token whose text is held back (stop strings, a cut character) still carries its
         * logprobs; without logprobs an empty chunk says nothing and is skipped. */
        if (ev->n_text == 0 && !r->logprobs)
            return true;
        return sse_choice(r, ev->index, ev->text, ev->n_text, r->logprobs ? &s : NULL, NULL, out);
    }
    if (ev->kind == BT_EVENT_FINISH) {
        if (ev->index < 0 || ev->index >= BT_MAX_COMPLETIONS || r->finished[ev->index])
            return true;
        r->finished[ev->index] = true;
        /* with the text held back until the end (a partial stop string, a cut character) */
        return sse_choice(r, ev->index, ev->text, ev->n_text, NULL,
                          bt_api_finish_reason(ev->finish), out);
    }
    /* DONE */
    if (ev->status != BT_OK) {
        bt_api_error e;
        bt_api_error_from_status(&e, ev->status, ev->message);
        return bt_api_sse_error(&e, out);
    }
    for (int i = 0; i < ev->n_completions; i++) {
        if (i >= BT_MAX_COMPLETIONS || r->finished[i])
            continue;
        /* best_of > n and beams: the winners are known only now, sent whole */
        const bt_completion_view *c = &ev->completions[i];
        lp_span s = span_of(c);
        r->finished[i] = true;
        if (!sse_choice(r, i, c->text, c->n_text, r->logprobs ? &s : NULL,
                        bt_api_finish_reason(c->finish), out))
            return false;
    }
    if (r->include_usage) {
        json_t *chunk = envelope(r, true, json_array());
        if (chunk)
            json_object_set_new(chunk, "usage", usage_json(ev));
        if (!sse_json(out, chunk))
            return false;
    }
    return bt_api_buf_append(out, "data: [DONE]\n\n", 14);
}
