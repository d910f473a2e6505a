/* request.c - creation of requests and the names of finish reasons. */
#include "request.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"

const char *bt_finish_name(bt_finish f) {
    switch (f) {
    case BT_FINISH_STOP:
        return "stop";
    case BT_FINISH_LENGTH:
        return "length";
    case BT_FINISH_CONTEXT:
        return "context";
    case BT_FINISH_CANCELLED:
        return "cancelled";
    case BT_FINISH_ERROR:
        return "error";
    case BT_FINISH_NONE:
        break;
    }
    return "none";
}

bt_status bt_request_new(const int32_t *prompt, int32_t n_prompt, const bt_request_params *p,
                         int32_t n_ctx, bt_request **out, bt_error *err) {
    *out = NULL;
    if (n_prompt < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "the prompt is empty");
    if (n_prompt >= n_ctx)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "prompt is %d tokens; the context holds %d including the generated "
                            "tokens",
                            n_prompt, n_ctx);
    if (p->max_tokens < 0)
        return bt_error_set(err, BT_ERR_RANGE, "max_tokens %d is negative", p->max_tokens);
    bt_status st = bt_sampler_params_validate(&p->sampling, 0, err);
    if (st != BT_OK)
        return st;
    int64_t cap = (int64_t)n_prompt + p->max_tokens;
    if (cap > n_ctx)
        cap = n_ctx;
    bt_request *r = calloc(1, sizeof *r);
    int32_t *tokens = malloc(sizeof *tokens * (size_t)cap);
    float *logprobs = calloc((size_t)cap, sizeof *logprobs);
    if (!r || !tokens || !logprobs) {
        free(r);
        free(tokens);
        free(logprobs);
        return bt_error_set(err, BT_ERR_NOMEM, "request: out of memory");
    }
    memcpy(tokens, prompt, sizeof *tokens * (size_t)n_prompt);
    r->p = *p;
    r->tokens = tokens;
    r->logprobs = logprobs;
    r->n_prompt = r->n_tokens = n_prompt;
    r->cap = (int32_t)cap;
    r->state = BT_REQ_QUEUED;
    r->seq = -1;
    bt_error_init(&r->error);
    r->t_submit = bt_now_us();
    *out = r;
    return BT_OK;
}

void bt_request_free(bt_request *r) {
    if (!r)
        return;
    free(r->tokens);
    free(r->logprobs);
    free(r);
}
