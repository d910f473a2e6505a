/*
 * test_openai.c - the OpenAI wire format of `baton serve` (coordinator/api/openai.h): a corpus
 * of good request bodies and the parameters they give, a corpus of bad ones and the 400 (or
 * 404) naming the field, response bodies and SSE chunks in OpenAI's shapes, the error shape,
 * the API key comparison and the Prometheus exposition.
 *
 * Parsing and formatting need a vocabulary: those parts use the SmolLM2 model and are skipped
 * (77) without it; the rest runs everywhere.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "chat.h"
#include "check.h"
#include "engine.h"
#include "gguf.h"
#include "metrics.h"
#include "openai.h"
#include "server.h"
#include "vocab.h"

#define N_CTX 256

static bt_api_model model;

static bool parse(bt_api_kind kind, const char *body, bt_api_req *q, bt_api_error *e) {
    return bt_api_parse(&model, kind, body, strlen(body), q, e);
}

/* ---- bad bodies: each must give this status and name this field ---- */

typedef struct bad_case {
    bt_api_kind kind;
    const char *body;
    int http;
    const char *param; /* "" for none */
} bad_case;

#define C BT_API_COMPLETIONS
#define H BT_API_CHAT
static const bad_case bad_cases[] = {
    /* not JSON, not an object */
    {C, "", 400, ""},
    {C, "{", 400, ""},
    {C, "{\"prompt\": \"a\",}", 400, ""},
    {C, "[]", 400, ""},
    {C, "null", 400, ""},
    {C, "\"prompt\"", 400, ""},
    {C, "{\"prompt\": \"a\", \"prompt\": \"b\"}", 400, ""},
    {C, "{\"prompt\": \"\xff\xfe\"}", 400, ""},
    {C, "{\"prompt\": \"a\"} trailing", 400, ""},
    /* prompt */
    {C, "{}", 400, "prompt"},
    {C, "{\"prompt\": 5}", 400, "prompt"},
    {C, "{\"prompt\": []}", 400, "prompt"},
    {C, "{\"prompt\": [\"a\", \"b\"]}", 400, "prompt"},
    {C, "{\"prompt\": [1, \"a\"]}", 400, "prompt"},
    {C, "{\"prompt\": [-1]}", 400, "prompt"},
    {C, "{\"prompt\": [99999999]}", 400, "prompt"},
    {C, "{\"prompt\": [1.5]}", 400, "prompt"},
    {C, "{\"prompt\": [[1, 2], [3]]}", 400, "prompt"},
    {C, "{\"prompt\": {\"text\": \"a\"}}", 400, "prompt"},
    /* model */
    {C, "{\"prompt\": \"a\", \"model\": \"gpt-4\"}", 404, "model"},
    {C, "{\"prompt\": \"a\", \"model\": 5}", 400, "model"},
    /* scalar parameters: types */
    {C, "{\"prompt\": \"a\", \"temperature\": \"hot\"}", 400, "temperature"},
    {C, "{\"prompt\": \"a\", \"top_p\": true}", 400, "top_p"},
    {C, "{\"prompt\": \"a\", \"top_k\": 1.5}", 400, "top_k"},
    {C, "{\"prompt\": \"a\", \"seed\": \"x\"}", 400, "seed"},
    {C, "{\"prompt\": \"a\", \"n\": \"2\"}", 400, "n"},
    {C, "{\"prompt\": \"a\", \"ignore_eos\": \"yes\"}", 400, "ignore_eos"},
    {C, "{\"prompt\": \"a\", \"ignore_eos\": 1}", 400, "ignore_eos"},
    {C, "{\"prompt\": \"a\", \"include_stop_str_in_output\": 1}", 400,
     "include_stop_str_in_output"},
    {C, "{\"prompt\": \"a\", \"skip_special_tokens\": \"no\"}", 400, "skip_special_tokens"},
    {C, "{\"prompt\": \"a\", \"stream\": \"yes\"}", 400, "stream"},
    {C, "{\"prompt\": \"a\", \"stream_options\": 3}", 400, "stream_options"},
    {C, "{\"prompt\": \"a\", \"stream_options\": {\"include_usage\": 1}}", 400, "stream_options"},
    {C, "{\"prompt\": \"a\", \"use_beam_search\": 1}", 400, "use_beam_search"},
    /* scalar parameters: ranges */
    {C, "{\"prompt\": \"a\", \"temperature\": -1}", 400, "temperature"},
    {C, "{\"prompt\": \"a\", \"temperature\": 1000}", 400, "temperature"},
    {C, "{\"prompt\": \"a\", \"top_p\": 0}", 400, "top_p"},
    {C, "{\"prompt\": \"a\", \"top_p\": 1.5}", 400, "top_p"},
    {C, "{\"prompt\": \"a\", \"top_k\": -2}", 400, "top_k"},
    {C, "{\"prompt\": \"a\", \"min_p\": 2}", 400, "min_p"},
    {C, "{\"prompt\": \"a\", \"typical_p\": 0}", 400, "typical_p"},
    {C, "{\"prompt\": \"a\", \"repetition_penalty\": 0}", 400, "repetition_penalty"},
    {C, "{\"prompt\": \"a\", \"presence_penalty\": 3}", 400, "presence_penalty"},
    {C, "{\"prompt\": \"a\", \"frequency_penalty\": -2.5}", 400, "frequency_penalty"},
    {C, "{\"prompt\": \"a\", \"min_tokens\": -1}", 400, "min_tokens"},
    {C, "{\"prompt\": \"a\", \"seed\": -1}", 400, "seed"},
    {C, "{\"prompt\": \"a\", \"n\": 17}", 400, "n"},
    {C, "{\"prompt\": \"a\", \"best_of\": 17}", 400, "best_of"},
    {C, "{\"prompt\": \"a\", \"n\": 3, \"best_of\": 2}", 400, "best_of"},
    {C, "{\"prompt\": \"a\", \"max_tokens\": 0}", 400, "max_tokens"},
    {C, "{\"prompt\": \"a\", \"max_tokens\": -5}", 400, "max_tokens"},
    {C, "{\"prompt\": \"a\", \"max_tokens\": \"many\"}", 400, "max_tokens"},
    {C, "{\"prompt\": \"a\", \"max_completion_tokens\": 0}", 400, "max_completion_tokens"},
    /* logprobs */
    {C, "{\"prompt\": \"a\", \"logprobs\": 21}", 400, "logprobs"},
    {C, "{\"prompt\": \"a\", \"logprobs\": -1}", 400, "logprobs"},
    {C, "{\"prompt\": \"a\", \"logprobs\": true}", 400, "logprobs"},
    {H, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": 5}", 400,
     "logprobs"},
    {H,
     "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": true, "
     "\"top_logprobs\": 21}",
     400, "top_logprobs"},
    /* structured parameters */
    {C, "{\"prompt\": \"a\", \"stop\": 5}", 400, "stop"},
    {C, "{\"prompt\": \"a\", \"stop\": [\"a\", 3]}", 400, "stop"},
    {C, "{\"prompt\": \"a\", \"stop\": \"\"}", 400, "stop"},
    {C,
     "{\"prompt\": \"a\", \"stop\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\",\"10\","
     "\"11\",\"12\",\"13\",\"14\",\"15\",\"16\",\"17\"]}",
     400, "stop"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": [1]}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": {\"abc\": 1}}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": {\"-3\": 1}}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": {\"99999999\": 1}}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": {\"5\": \"x\"}}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"logit_bias\": {\"5\": 101}}", 400, "logit_bias"},
    {C, "{\"prompt\": \"a\", \"stop_token_ids\": \"2\"}", 400, "stop_token_ids"},
    {C, "{\"prompt\": \"a\", \"stop_token_ids\": [-1]}", 400, "stop_token_ids"},
    {C, "{\"prompt\": \"a\", \"echo\": true}", 400, "echo"},
    /* chat messages */
    {H, "{}", 400, "messages"},
    {H, "{\"messages\": []}", 400, "messages"},
    {H, "{\"messages\": \"hi\"}", 400, "messages"},
    {H, "{\"messages\": [\"hi\"]}", 400, "messages"},
    {H, "{\"messages\": [{\"role\": 5, \"content\": \"x\"}]}", 400, "messages"},
    {H, "{\"messages\": [{\"content\": \"x\"}]}", 400, "messages"},
    {H, "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}", 400, "messages"},
    {H, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", 400, "messages"},
    {H, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", 400,
     "messages"},
    /* jansson refuses \u0000 in strings: NUL never reaches a template or a stop string */
    {H, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}", 400, ""},
    {H, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"model\": \"x\"}", 404,
     "model"},
};
#undef C
#undef H

static void test_bad_bodies(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        bt_api_req q;
        bt_api_error e;
        memset(&e, 0, sizeof e);
        bool ok = parse(c->kind, c->body, &q, &e);
        if (ok || e.http != c->http || strcmp(e.param, c->param) != 0 || !e.message[0]) {
            check_fail(__FILE__, __LINE__,
                       "case %zu %s: ok %d, http %d param '%s' (%s); want %d '%s'", i, c->body, ok,
                       e.http, e.param, e.message, c->http, c->param);
            if (ok)
                bt_api_req_deinit(&q);
            continue;
        }
        bt_check_passed++;
        CHECK(q.prompt == NULL); /* nothing owned on failure */
        CHECK(strcmp(e.type, e.http == 404 || e.http == 400 ? "invalid_request_error" : "x") == 0);
    }
}

/* A prompt longer than the context: 400 context_length_exceeded with both numbers. */
static void test_context_overflow(void) {
    size_t n = N_CTX * 8;
    char *body = malloc(n + 64);
    strcpy(body, "{\"prompt\": \"");
    size_t k = strlen(body);
    for (size_t i = 0; i < N_CTX * 2; i++, k += 4)
        memcpy(body + k, " cat", 4);
    strcpy(body + k, "\"}");
    bt_api_req q;
    bt_api_error e;
    CHECK(!parse(BT_API_COMPLETIONS, body, &q, &e));
    CHECK_EQ_INT(e.http, 400);
    CHECK(strcmp(e.param, "prompt") == 0);
    CHECK(e.code && strcmp(e.code, "context_length_exceeded") == 0);
    char want[64];
    snprintf(want, sizeof want, "%d tokens", N_CTX);
    CHECK(strstr(e.message, want) != NULL);
    size_t need = 0;
    int32_t *all = malloc(n * sizeof *all);
    CHECK_OK(bt_tokenize(model.vocab, body + 12, k - 12, true, false, all, n, &need, &err_));
    snprintf(want, sizeof want, "has %zu tokens", need);
    CHECK(need > N_CTX && strstr(e.message, want) != NULL);
    free(all);
    free(body);

    /* token ids: exactly n_ctx leaves no room; n_ctx - 1 does */
    for (int len = N_CTX; len >= N_CTX - 1; len--) {
        bt_api_buf b = {0};
        bt_api_buf_append(&b, "{\"prompt\": [7", 13);
        for (int i = 1; i < len; i++)
            bt_api_buf_append(&b, ",7", 2);
        bt_api_buf_append(&b, "]}", 2);
        bool ok = parse(BT_API_COMPLETIONS, b.p, &q, &e);
        bt_api_buf_free(&b);
        if (len == N_CTX) {
            CHECK(!ok && e.code && strcmp(e.code, "context_length_exceeded") == 0);
            continue;
        }
        CHECK(ok);
        if (!ok)
            continue;
        CHECK_EQ_INT(q.n_prompt, N_CTX - 1);
        CHECK_EQ_INT(q.params.max_tokens, 1); /* capped at the context */
        bt_api_req_deinit(&q);
    }
}

static int32_t tokens_of(const char *text, int32_t *ids, size_t cap) {
    size_t n = 0;
    CHECK_OK(bt_tokenize(model.vocab, text, strlen(text), true, false, ids, cap, &n, &err_));
    return (int32_t)n;
}

static void test_good_bodies(void) {
    bt_api_req q;
    bt_api_error e;
    int32_t ids[64];

    /* defaults are OpenAI's */
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": \"Hello there\"}", &q, &e));
    bt_request_params d = bt_request_default_params_for(BT_PARAM_STYLE_OPENAI);
    int32_t n = tokens_of("Hello there", ids, 64);
    CHECK_EQ_INT(q.n_prompt, n);
    CHECK(memcmp(q.prompt, ids, (size_t)n * sizeof *ids) == 0);
    CHECK_EQ_INT(q.params.max_tokens, 16);
    CHECK_NEAR(q.params.sampling.temperature, 1.0, 0);
    CHECK_NEAR(q.params.sampling.top_p, 1.0, 0);
    CHECK_EQ_INT(q.params.sampling.top_k, 0);
    CHECK_NEAR(q.params.sampling.min_p, 0.0, 0);
    CHECK_NEAR(q.params.sampling.temperature, d.sampling.temperature, 0);
    CHECK(!q.stream && !q.include_usage && !q.logprobs);
    CHECK_EQ_INT(q.params.n_stop, 0);
    bt_api_req_deinit(&q);

    /* every field at once, with unknown fields and nulls ignored */
    const char *all =
        "{\"model\": \"smol\", \"prompt\": \"Hi\", \"max_tokens\": 5, \"temperature\": 0,"
        " \"top_p\": 0.9, \"top_k\": -1, \"min_p\": 0.05, \"typical_p\": 0.8,"
        " \"repetition_penalty\": 1.1, \"presence_penalty\": -0.5, \"frequency_penalty\": 0.5,"
        " \"seed\": 42, \"stop\": [\"\\n\", \"end\"], \"logprobs\": 3, \"n\": 2, \"best_of\": 3,"
        " \"logit_bias\": {\"15\": -100, \"7\": 2.5}, \"stream\": true,"
        " \"stream_options\": {\"include_usage\": true}, \"user\": \"u1\", \"whatever\": {\"a\": "
        "1},"
        " \"stop_token_ids\": [2, 3], \"ignore_eos\": true, \"min_tokens\": 2,"
        " \"include_stop_str_in_output\": true, \"skip_special_tokens\": false, \"suffix\": null,"
        " \"echo\": false, \"temperature_typo\": \"x\", \"top_a\": null}";
    CHECK(parse(BT_API_COMPLETIONS, all, &q, &e));
    const bt_sampler_params *s = &q.params.sampling;
    CHECK_EQ_INT(q.params.max_tokens, 5);
    CHECK_NEAR(s->temperature, 0, 0);
    CHECK_NEAR(s->top_p, 0.9, 1e-6);
    CHECK_EQ_INT(s->top_k, 0);
    CHECK_NEAR(s->min_p, 0.05, 1e-6);
    CHECK_NEAR(s->typical_p, 0.8, 1e-6);
    CHECK_NEAR(s->repetition_penalty, 1.1, 1e-6);
    CHECK_NEAR(s->presence_penalty, -0.5, 1e-6);
    CHECK_NEAR(s->frequency_penalty, 0.5, 1e-6);
    CHECK(s->seed == 42);
    CHECK_EQ_INT(q.params.n_stop, 2);
    CHECK(strcmp(q.params.stop[0], "\n") == 0 && strcmp(q.params.stop[1], "end") == 0);
    CHECK(q.logprobs);
    CHECK_EQ_INT(s->top_logprobs, 3);
    CHECK_EQ_INT(q.params.n, 2);
    CHECK_EQ_INT(q.params.best_of, 3);
    CHECK_EQ_INT(s->n_logit_bias, 2);
    CHECK(q.stream && q.include_usage);
    CHECK_EQ_INT(s->n_stop_token_ids, 2);
    CHECK_EQ_INT(s->stop_token_ids[1], 3);
    CHECK(q.params.ignore_eos);
    CHECK_EQ_INT(s->min_tokens, 2);
    CHECK(q.params.include_stop_str_in_output);
    CHECK(!q.params.skip_special_tokens);
    bt_api_req_deinit(&q);

    /* the prompt's other shapes */
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": [\"Hello there\"]}", &q, &e));
    CHECK(q.n_prompt == n && memcmp(q.prompt, ids, (size_t)n * sizeof *ids) == 0);
    bt_api_req_deinit(&q);
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": [1, 2, 3]}", &q, &e));
    CHECK(q.n_prompt == 3 && q.prompt[0] == 1 && q.prompt[2] == 3);
    bt_api_req_deinit(&q);
    CHECK(
        parse(BT_API_COMPLETIONS, "{\"prompt\": [[4, 5]], \"max_completion_tokens\": 7}", &q, &e));
    CHECK(q.n_prompt == 2 && q.prompt[1] == 5);
    CHECK_EQ_INT(q.params.max_tokens, 7);
    bt_api_req_deinit(&q);
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": \"a\", \"temperature\": null, \"model\": null}",
                &q, &e));
    CHECK_NEAR(q.params.sampling.temperature, 1.0, 0);
    bt_api_req_deinit(&q);

    /* beams: width max(n, best_of), greedy unless a temperature is given */
    CHECK(parse(BT_API_COMPLETIONS,
                "{\"prompt\": \"a\", \"use_beam_search\": true, \"n\": 2, \"best_of\": 3, "
                "\"length_penalty\": 0.5}",
                &q, &e));
    CHECK_EQ_INT(q.params.beam_width, 3);
    CHECK_NEAR(q.params.sampling.temperature, 0, 0);
    CHECK_NEAR(q.params.length_penalty, 0.5, 1e-6);
    bt_api_req_deinit(&q);

    /* chat: the template's tokens, content parts joined, max_tokens up to the context */
    CHECK(
        parse(BT_API_CHAT,
              "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
              " {\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"Capital of \"},"
              " {\"type\": \"text\", \"text\": \"France?\"}]}]}",
              &q, &e));
    bt_chat_msg msgs[] = {{"system", "Be brief."}, {"user", "Capital of France?"}};
    bt_chat_params cp = bt_chat_default_params();
    int32_t chat_ids[128];
    size_t n_chat = 0;
    CHECK_OK(
        bt_chat_tokenize(model.chat, model.vocab, msgs, 2, &cp, chat_ids, 128, &n_chat, &err_));
    CHECK_EQ_INT(q.n_prompt, (int)n_chat);
    CHECK(memcmp(q.prompt, chat_ids, n_chat * sizeof *chat_ids) == 0);
    CHECK_EQ_INT(q.params.max_tokens, N_CTX - (int)n_chat);
    CHECK(!q.logprobs && q.params.sampling.top_logprobs == 0);
    bt_api_req_deinit(&q);

    /* chat logprobs: a boolean, alternatives from top_logprobs (ignored without it) */
    CHECK(parse(BT_API_CHAT,
                "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}], \"logprobs\": true,"
                " \"top_logprobs\": 2, \"max_tokens\": 3}",
                &q, &e));
    CHECK(q.logprobs && q.params.sampling.top_logprobs == 2 && q.params.max_tokens == 3);
    bt_api_req_deinit(&q);
    CHECK(parse(BT_API_CHAT,
                "{\"messages\": [{\"role\": \"developer\", \"content\": null}, {\"role\": \"user\","
                " \"content\": \"a\"}], \"top_logprobs\": 2}",
                &q, &e));
    CHECK(!q.logprobs && q.params.sampling.top_logprobs == 0);
    bt_api_req_deinit(&q);

    /* no chat template: a 400 naming the fix */
    bt_api_model saved = model;
    model.chat = NULL;
    model.chat_error = "restart with --chat-template NAME";
    CHECK(
        !parse(BT_API_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", &q, &e));
    CHECK(e.http == 400 && strstr(e.message, "--chat-template") != NULL);
    model = saved;
}

/* ---- responses ---- */

static json_t *load(const char *s) {
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    if (!j)
        check_fail(__FILE__, __LINE__, "not JSON: %s (%s)", s, je.text);
    return j;
}

static const char *str_at(const json_t *j, const char *path) {
    /* "a.b.0.c": object keys and array indexes */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_string(cur) ? json_string_value(cur) : NULL;
}

static json_int_t int_at(const json_t *j, const char *path) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const json_t *cur = j;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur =
            json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok)) : json_object_get(cur, tok);
    return json_is_integer(cur) ? json_integer_value(cur) : -12345;
}

/* A finished request as the engine reports it: one completion "Paris." of 2 tokens. */
typedef struct fake_done {
    int32_t tokens[2];
    float logprobs[2];
    uint8_t n_top[2];
    int32_t top_token[4];
    float top_logprob[4];
    bt_completion_view view;
    bt_event ev;
} fake_done;

static void make_done(fake_done *f) {
    memset(f, 0, sizeof *f);
    size_t n = 0;
    CHECK_OK(bt_tokenize(model.vocab, "Paris.", 6, false, false, f->tokens, 2, &n, &err_));
    CHECK_EQ_INT(n, 2);
    f->logprobs[0] = -0.25f;
    f->logprobs[1] = -INFINITY; /* -inf must still be JSON */
    f->n_top[0] = f->n_top[1] = 2;
    f->top_token[0] = f->tokens[0];
    f->top_token[1] = 42;
    f->top_token[2] = f->tokens[1];
    f->top_token[3] = 43;
    f->top_logprob[0] = -0.25f;
    f->top_logprob[1] = -2.0f;
    f->top_logprob[2] = -0.5f;
    f->top_logprob[3] = -3.0f;
    f->view = (bt_completion_view){.index = 0,
                                   .text = "Paris.",
                                   .n_text = 6,
                                   .tokens = f->tokens,
                                   .logprobs = f->logprobs,
                                   .n_tokens = 2,
                                   .top_stride = 2,
                                   .n_top = f->n_top,
                                   .top_token = f->top_token,
                                   .top_logprob = f->top_logprob,
                                   .finish = BT_FINISH_LENGTH};
    f->ev.kind = BT_EVENT_DONE;
    f->ev.status = BT_OK;
    f->ev.message = "";
    f->ev.n_completions = 1;
    f->ev.completions = &f->view;
    f->ev.usage_prompt_tokens = 9;
    f->ev.usage_completion_tokens = 2;
}

static void test_bodies(void) {
    fake_done f;
    make_done(&f);
    bt_api_req q;
    bt_api_error e;
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": 2}", &q, &e));
    bt_api_resp r;
    bt_api_resp_init(&r, &q, &model, 7, 1700000000);
    json_t *body = bt_api_body_json(&r, &f.ev);
    CHECK(body != NULL);
    CHECK(strncmp(str_at(body, "id"), "cmpl-", 5) == 0);
    CHECK(strcmp(str_at(body, "object"), "text_completion") == 0);
    CHECK_EQ_INT(int_at(body, "created"), 1700000000);
    CHECK(strcmp(str_at(body, "model"), model.name) == 0);
    CHECK(strcmp(str_at(body, "choices.0.text"), "Paris.") == 0);
    CHECK(strcmp(str_at(body, "choices.0.finish_reason"), "length") == 0);
    CHECK_EQ_INT(int_at(body, "choices.0.index"), 0);
    CHECK_EQ_INT(int_at(body, "usage.prompt_tokens"), 9);
    CHECK_EQ_INT(int_at(body, "usage.completion_tokens"), 2);
    CHECK_EQ_INT(int_at(body, "usage.total_tokens"), 11);
    const json_t *lp =
        json_object_get(json_array_get(json_object_get(body, "choices"), 0), "logprobs");
    CHECK(strcmp(str_at(lp, "tokens.0"), "Paris") == 0);
    CHECK(strcmp(str_at(lp, "tokens.1"), ".") == 0);
    CHECK_NEAR(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 0)), -0.25,
               1e-6);
    CHECK_NEAR(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 1)), -9999, 0);
    CHECK_EQ_INT(int_at(lp, "text_offset.0"), 0);
    CHECK_EQ_INT(int_at(lp, "text_offset.1"), 5);
    const json_t *top0 = json_array_get(json_object_get(lp, "top_logprobs"), 0);
    CHECK_EQ_INT(json_object_size(top0), 2);
    CHECK_NEAR(json_real_value(json_object_get(top0, "Paris")), -0.25, 1e-6);
    json_decref(body);
    bt_api_req_deinit(&q);

    /* chat: message, logprobs.content with bytes and top_logprobs */
    CHECK(parse(BT_API_CHAT,
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true,"
                " \"top_logprobs\": 2}",
                &q, &e));
    bt_api_resp_init(&r, &q, &model, 8, 1700000001);
    f.view.finish = BT_FINISH_STOP;
    body = bt_api_body_json(&r, &f.ev);
    CHECK(strncmp(str_at(body, "id"), "chatcmpl-", 9) == 0);
    CHECK(strcmp(str_at(body, "object"), "chat.completion") == 0);
    CHECK(strcmp(str_at(body, "choices.0.message.role"), "assistant") == 0);
    CHECK(strcmp(str_at(body, "choices.0.message.content"), "Paris.") == 0);
    CHECK(strcmp(str_at(body, "choices.0.finish_reason"), "stop") == 0);
    CHECK(strcmp(str_at(body, "choices.0.logprobs.content.0.token"), "Paris") == 0);
    CHECK_EQ_INT(int_at(body, "choices.0.logprobs.content.0.bytes.0"), 'P');
    CHECK_EQ_INT(int_at(body, "choices.0.logprobs.content.1.bytes.0"), '.');
    CHECK(strcmp(str_at(body, "choices.0.logprobs.content.0.top_logprobs.0.token"), "Paris") == 0);
    CHECK(str_at(body, "choices.0.logprobs.content.0.top_logprobs.1.token") != NULL);
    json_decref(body);
    bt_api_req_deinit(&q);
}

/* Splits "data: X\n\n" events; returns the count, payloads in out (borrowed from buf). */
static int sse_split(char *buf, char **out, int cap) {
    int n = 0;
    for (char *p = buf; *p && n < cap;) {
        if (strncmp(p, "data: ", 6) != 0)
            return -1;
        char *end = strstr(p, "\n\n");
        if (!end)
            return -1;
        *end = '\0';
        out[n++] = p + 6;
        p = end + 2;
    }
    return n;
}

static void test_stream(void) {
    bt_api_req q;
    bt_api_error e;
    CHECK(parse(BT_API_CHAT,
                "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream\": true,"
                " \"stream_options\": {\"include_usage\": true}}",
                &q, &e));
    bt_api_resp r;
    bt_api_resp_init(&r, &q, &model, 9, 1700000002);
    bt_api_buf out = {0};
    CHECK(bt_api_sse_start(&r, &out));
    fake_done f;
    make_done(&f);
    bt_event tok = {.kind = BT_EVENT_TOKEN,
                    .index = 0,
                    .token = f.tokens[0],
                    .logprob = -0.25f,
                    .text = "Paris",
                    .n_text = 5};
    CHECK(bt_api_sse_event(&r, &tok, &out));
    tok.token = f.tokens[1];
    tok.text = ".";
    tok.n_text = 1;
    CHECK(bt_api_sse_event(&r, &tok, &out));
    bt_event fin = {.kind = BT_EVENT_FINISH, .index = 0, .finish = BT_FINISH_STOP};
    CHECK(bt_api_sse_event(&r, &fin, &out));
    CHECK(bt_api_sse_event(&r, &f.ev, &out));
    char *ev[16];
    int n = sse_split(out.p, ev, 16);
    CHECK_EQ_INT(n, 6); /* role, 2 tokens, finish, usage, [DONE] */
    if (n == 6) {
        json_t *c[5];
        for (int i = 0; i < 5; i++)
            c[i] = load(ev[i]);
        for (int i = 0; i < 5; i++) {
            CHECK(strcmp(str_at(c[i], "id"), r.id) == 0);
            CHECK_EQ_INT(int_at(c[i], "created"), 1700000002);
            CHECK(strcmp(str_at(c[i], "object"), "chat.completion.chunk") == 0);
        }
        CHECK(strcmp(str_at(c[0], "choices.0.delta.role"), "assistant") == 0);
        CHECK(strcmp(str_at(c[1], "choices.0.delta.content"), "Paris") == 0);
        CHECK(strcmp(str_at(c[2], "choices.0.delta.content"), ".") == 0);
        CHECK(str_at(c[1], "choices.0.delta.role") == NULL);
        CHECK(json_is_null(
            json_object_get(json_array_get(json_object_get(c[1], "choices"), 0), "finish_reason")));
        CHECK(strcmp(str_at(c[3], "choices.0.finish_reason"), "stop") == 0);
        CHECK_EQ_INT(json_array_size(json_object_get(c[4], "choices")), 0);
        CHECK_EQ_INT(int_at(c[4], "usage.total_tokens"), 11);
        CHECK(strcmp(ev[5], "[DONE]") == 0);
        for (int i = 0; i < 5; i++)
            json_decref(c[i]);
    }
    bt_api_buf_free(&out);
    bt_api_req_deinit(&q);

    /* text held back until the end (a partial stop string) comes with the finish */
    CHECK(parse(BT_API_COMPLETIONS, "{\"prompt\": \"x\", \"stream\": true}", &q, &e));
    bt_api_resp_init(&r, &q, &model, 11, 1700000004);
    bt_event held = {
        .kind = BT_EVENT_FINISH, .index = 0, .finish = BT_FINISH_STOP, .text = "!", .n_text = 1};
    CHECK(bt_api_sse_event(&r, &held, &out));
    n = sse_split(out.p, ev, 16);
    CHECK_EQ_INT(n, 1);
    if (n == 1) {
        json_t *c = load(ev[0]);
        CHECK(strcmp(str_at(c, "choices.0.text"), "!") == 0);
        CHECK(strcmp(str_at(c, "choices.0.finish_reason"), "stop") == 0);
        json_decref(c);
    }
    bt_api_buf_free(&out);
    bt_api_req_deinit(&q);

    /* completions, best_of > n: nothing until DONE, then the winner whole */
    CHECK(
        parse(BT_API_COMPLETIONS, "{\"prompt\": \"x\", \"stream\": true, \"best_of\": 2}", &q, &e));
    bt_api_resp_init(&r, &q, &model, 10, 1700000003);
    CHECK(bt_api_sse_start(&r, &out));
    CHECK(bt_api_sse_event(&r, &tok, &out));
    CHECK(bt_api_sse_event(&r, &fin, &out));
    CHECK_EQ_INT(out.n, 0);
    CHECK(bt_api_sse_event(&r, &f.ev, &out));
    n = sse_split(out.p, ev, 16);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        json_t *c = load(ev[0]);
        CHECK(strcmp(str_at(c, "object"), "text_completion") == 0);
        CHECK(strcmp(str_at(c, "choices.0.text"), "Paris.") == 0);
        CHECK(strcmp(str_at(c, "choices.0.finish_reason"), "length") == 0);
        json_decref(c);
    }
    bt_api_buf_free(&out);

    /* a failure after the stream started: an error chunk, then [DONE] */
    bt_event failed = {.kind = BT_EVENT_DONE,
                       .status = BT_ERR_UNAVAILABLE,
                       .message = "stage 2 (rank 2) failed: process gone"};
    CHECK(bt_api_sse_event(&r, &failed, &out));
    n = sse_split(out.p, ev, 16);
    CHECK_EQ_INT(n, 2);
    if (n == 2) {
        json_t *c = load(ev[0]);
        CHECK(strstr(str_at(c, "error.message"), "rank 2") != NULL);
        CHECK(strcmp(str_at(c, "error.type"), "server_error") == 0);
        CHECK(strcmp(ev[1], "[DONE]") == 0);
        json_decref(c);
    }
    bt_api_buf_free(&out);
    bt_api_req_deinit(&q);
}

/* ---- model-independent parts ---- */

static void test_errors(void) {
    bt_api_error e;
    bt_api_error_from_status(&e, BT_ERR_BUSY, "queue full (64 requests)");
    CHECK_EQ_INT(e.http, 503);
    bt_api_error_from_status(&e, BT_ERR_UNAVAILABLE, "draining");
    CHECK_EQ_INT(e.http, 503);
    bt_api_error_from_status(&e, BT_ERR_TIMEOUT, "not admitted within 60 s");
    CHECK_EQ_INT(e.http, 503);
    bt_api_error_from_status(&e, BT_ERR_LIMIT, "prompt has 300 tokens, context 256");
    CHECK_EQ_INT(e.http, 400);
    bt_api_error_from_status(&e, BT_ERR_RANGE, "temperature 300 is outside [0, 100]");
    CHECK(e.http == 400 && strcmp(e.param, "temperature") == 0);
    bt_api_error_from_status(&e, BT_ERR_INTERNAL, "");
    CHECK_EQ_INT(e.http, 500);

    bt_api_error_set(&e, 401, NULL, "invalid_api_key", "wrong key");
    json_t *j = bt_api_error_json(&e);
    CHECK(strcmp(str_at(j, "error.message"), "wrong key") == 0);
    CHECK(strcmp(str_at(j, "error.type"), "authentication_error") == 0);
    CHECK(strcmp(str_at(j, "error.code"), "invalid_api_key") == 0);
    const json_t *err = json_object_get(j, "error");
    CHECK(json_is_null(json_object_get(err, "param")));
    CHECK_EQ_INT(json_object_size(err), 4);
    json_decref(j);

    json_t *t = bt_api_json_text("a\xe2\x82"
                                 "b",
                                 4); /* a cut character */
    CHECK(t && strcmp(json_string_value(t), "a\xef\xbf\xbd\xef\xbf\xbd"
                                            "b") == 0);
    json_decref(t);
}

static void test_api_key(void) {
    CHECK(bt_api_key_equal("sekret", "sekret"));
    CHECK(!bt_api_key_equal("sekret", "sekreT"));
    CHECK(!bt_api_key_equal("sekret", "sekret1"));
    CHECK(!bt_api_key_equal("sekret", "sek"));
    CHECK(!bt_api_key_equal("sekret", ""));
    CHECK(!bt_api_key_equal("", ""));
}

static void test_metrics(void) {
    bt_api_metrics *m = bt_api_metrics_new();
    bt_api_metrics_observe(m, BT_API_HIST_TTFT, 0.003);
    bt_api_metrics_observe(m, BT_API_HIST_TTFT, 0.5);
    bt_api_metrics_on_error(m, 503);
    bt_api_metrics_on_error(m, 503);
    bt_api_metrics_on_error(m, 418); /* counted as 500 */
    bt_engine_metrics *em = calloc(1, sizeof *em);
    em->n_stages = 2;
    em->stage[1].kv_blocks_used = 3;
    em->stage[1].kv_blocks_total = 12;
    em->generation_tokens_total = 77;
    bt_api_buf out = {0};
    CHECK(bt_api_metrics_render(m, em, &out));
    const char *want[] = {
        "# TYPE baton:time_to_first_token_seconds histogram\n",
        "baton:time_to_first_token_seconds_bucket{le=\"0.001\"} 0\n",
        "baton:time_to_first_token_seconds_bucket{le=\"0.005\"} 1\n",
        "baton:time_to_first_token_seconds_bucket{le=\"0.5\"} 2\n",
        "baton:time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n",
        "baton:time_to_first_token_seconds_count 2\n",
        "baton:time_to_first_token_seconds_sum 0.503\n",
        "baton:request_errors_total{code=\"503\"} 2\n",
        "baton:request_errors_total{code=\"500\"} 1\n",
        "baton:generation_tokens_total 77\n",
        "baton:kv_blocks_used{stage=\"2\"} 3\n",
        "baton:kv_cache_usage_perc{stage=\"2\"} 0.25\n",
        "baton:kv_blocks_total{stage=\"1\"} 0\n",
        "# TYPE baton:inter_token_latency_seconds histogram\n",
        "# TYPE baton:request_success_total counter\n",
        "# TYPE baton:num_requests_waiting gauge\n",
        "# TYPE baton:stage_seconds_since_heartbeat gauge\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!out.p || !strstr(out.p, want[i]))
            check_fail(__FILE__, __LINE__, "metrics lack: %s", want[i]);
        else
            bt_check_passed++;
    /* every sample line is "name{labels} value" or "name value" */
    for (char *line = out.p; line && *line;) {
        char *end = strchr(line, '\n');
        CHECK(end != NULL);
        if (!end)
            break;
        if (line[0] != '#')
            CHECK(strncmp(line, "baton:", 6) == 0 && memchr(line, ' ', (size_t)(end - line)));
        line = end + 1;
    }
    bt_api_buf_free(&out);
    free(em);
    bt_api_metrics_free(m);
}

int main(void) {
    test_errors();
    test_api_key();
    test_metrics();
    const char *path = check_model_path("OpenAI request parsing and formatting on SmolLM2");
    if (!path)
        return check_finish();
    bt_gguf *g = NULL;
    bt_vocab *v = NULL;
    bt_error err;
    bt_error_init(&err);
    bt_chat_template t;
    if (bt_gguf_open(path, &g, &err) != BT_OK || bt_vocab_load(g, &v, &err) != BT_OK ||
        bt_chat_template_detect(g, &t, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
        bt_vocab_free(v);
        bt_gguf_free(g);
        return check_finish();
    }
    model =
        (bt_api_model){.name = "smol", .vocab = v, .chat = &t, .chat_error = "", .n_ctx = N_CTX};
    test_bad_bodies();
    test_context_overflow();
    test_good_bodies();
    test_bodies();
    test_stream();
    bt_vocab_free(v);
    bt_gguf_free(g);
    return check_finish();
}
