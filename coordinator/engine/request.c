/* request.c - request parameters and their validation, creation of requests (and the
 * children of n/best_of and beam search), the names of finish reasons. */
#include "request_impl.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "beam.h"
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

/* ---- the parameter table (expansions of BT_REQUEST_PARAM_LIST and BT_SAMPLER_PARAM_LIST) */

#define REQ_ROW(kind, field, min, max, cli, openai, flag, doc)                                     \
    {#field, BT_PARAM_##kind, offsetof(bt_request_params, field), min, max, cli, openai, flag, doc},
#define SAMPLER_ROW(kind, field, min, max, off, cli, openai, flag, doc)                            \
    {#field,                                                                                       \
     BT_PARAM_##kind,                                                                              \
     offsetof(bt_request_params, sampling) + offsetof(bt_sampler_params, field),                   \
     min,                                                                                          \
     max,                                                                                          \
     cli,                                                                                          \
     openai,                                                                                       \
     flag,                                                                                         \
     doc},
static const bt_param_desc param_table[] = {BT_REQUEST_PARAM_LIST(REQ_ROW)
                                                BT_SAMPLER_PARAM_LIST(SAMPLER_ROW)};
#undef REQ_ROW
#undef SAMPLER_ROW

#define N_PARAMS (sizeof param_table / sizeof param_table[0])

const bt_param_desc *bt_request_param_table(size_t *n) {
    *n = N_PARAMS;
    return param_table;
}

const bt_param_desc *bt_request_param_find(const char *name) {
    for (size_t i = 0; name && i < N_PARAMS; i++)
        if (strcmp(param_table[i].name, name) == 0)
            return &param_table[i];
    return NULL;
}

/* Stores v (valid for d) without checks. */
static void put(bt_request_params *p, const bt_param_desc *d, double v) {
    void *f = (char *)p + d->offset;
    switch (d->kind) {
    case BT_PARAM_INT:
        *(int32_t *)f = (int32_t)v;
        break;
    case BT_PARAM_FLOAT:
        *(float *)f = (float)v;
        break;
    case BT_PARAM_BOOL:
        *(bool *)f = v != 0;
        break;
    case BT_PARAM_U64:
        /* max is UINT64_MAX, which a double rounds up to 2^64 */
        *(uint64_t *)f = v >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)v;
        break;
    }
}

double bt_request_param_get(const bt_request_params *p, const bt_param_desc *d) {
    const void *f = (const char *)p + d->offset;
    switch (d->kind) {
    case BT_PARAM_INT:
        return *(const int32_t *)f;
    case BT_PARAM_FLOAT:
        return *(const float *)f;
    case BT_PARAM_BOOL:
        return *(const bool *)f;
    case BT_PARAM_U64:
        return (double)*(const uint64_t *)f;
    }
    return 0;
}

bt_status bt_request_param_set(bt_request_params *p, const bt_param_desc *d, double v,
                               bt_error *err) {
    bt_status st = bt_param_check(d->name, d->kind, v, d->min, d->max, err);
    if (st != BT_OK)
        return st;
    put(p, d, v);
    return BT_OK;
}

bt_request_params bt_request_default_params_for(bt_param_style style) {
    bt_request_params p;
    memset(&p, 0, sizeof p);
    p.sampling = bt_sampler_default_params();
    for (size_t i = 0; i < N_PARAMS; i++) {
        const bt_param_desc *d = &param_table[i];
        put(&p, d, style == BT_PARAM_STYLE_OPENAI ? d->openai_default : d->cli_default);
    }
    return p;
}

bt_request_params bt_request_default_params(void) {
    return bt_request_default_params_for(BT_PARAM_STYLE_CLI);
}

bt_status bt_request_params_add_stop(bt_request_params *p, const char *s, size_t len,
                                     bt_error *err) {
    if (p->n_stop >= BT_MAX_STOP)
        return bt_error_set(err, BT_ERR_RANGE, "stop: more than %d strings", BT_MAX_STOP);
    if (len == 0)
        return bt_error_set(err, BT_ERR_RANGE, "stop: string %d is empty", p->n_stop);
    if (len > BT_STOP_MAX_BYTES)
        return bt_error_set(err, BT_ERR_RANGE, "stop: string %d is %zu bytes, at most %d",
                            p->n_stop, len, BT_STOP_MAX_BYTES);
    if (memchr(s, '\0', len))
        return bt_error_set(err, BT_ERR_RANGE, "stop: string %d contains a NUL byte", p->n_stop);
    memcpy(p->stop[p->n_stop], s, len);
    p->stop[p->n_stop][len] = '\0';
    p->n_stop++;
    return BT_OK;
}

bt_status bt_request_params_add_stop_token_id(bt_request_params *p, int32_t id, bt_error *err) {
    bt_sampler_params *sp = &p->sampling;
    if (sp->n_stop_token_ids >= BT_MAX_STOP_TOKEN_IDS)
        return bt_error_set(err, BT_ERR_RANGE, "stop_token_ids: more than %d ids",
                            BT_MAX_STOP_TOKEN_IDS);
    if (id < 0)
        return bt_error_set(err, BT_ERR_RANGE, "stop_token_ids: id %d is negative", id);
    sp->stop_token_ids[sp->n_stop_token_ids++] = id;
    return BT_OK;
}

static int32_t n_of(const bt_request_params *p) {
    return p->n ? p->n : 1;
}

static int32_t best_of_of(const bt_request_params *p) {
    return p->best_of ? p->best_of : n_of(p);
}

bt_status bt_request_params_validate(const bt_request_params *p, int32_t n_vocab, bt_error *err) {
    bt_status st;
    /* n 0 means 1 (callers that fill the struct by hand): the range is checked on the
     * value used. */
    bt_request_params q;
    memcpy(&q, p, offsetof(bt_request_params, sampling));
    q.n = n_of(p);
    int32_t n = q.n;
#define REQ_CHECK(kind, field, min, max, ...)                                                      \
    if ((st = bt_param_check(#field, BT_PARAM_##kind, (double)q.field, min, max, err)) != BT_OK)   \
        return st;
    BT_REQUEST_PARAM_LIST(REQ_CHECK)
#undef REQ_CHECK
    if ((st = bt_sampler_params_validate(&p->sampling, n_vocab, err)) != BT_OK)
        return st;
    if (best_of_of(p) < n)
        return bt_error_set(err, BT_ERR_RANGE, "best_of %d is less than n %d", p->best_of, n);
    if (p->n_stop < 0 || p->n_stop > BT_MAX_STOP)
        return bt_error_set(err, BT_ERR_RANGE, "stop: %d strings, at most %d", p->n_stop,
                            BT_MAX_STOP);
    for (int i = 0; i < p->n_stop; i++) {
        size_t len = strnlen(p->stop[i], BT_STOP_MAX_BYTES + 1);
        if (len == 0 || len > BT_STOP_MAX_BYTES)
            return bt_error_set(err, BT_ERR_RANGE, "stop: string %d is %zu bytes, not 1..%d", i,
                                len, BT_STOP_MAX_BYTES);
    }
    if (p->beam_width > 0) {
        if (p->sampling.temperature > 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "beam_width %d: beam search needs temperature 0, not %g",
                                p->beam_width, (double)p->sampling.temperature);
        if (n > p->beam_width)
            return bt_error_set(err, BT_ERR_INVALID_ARG, "n %d is more than beam_width %d", n,
                                p->beam_width);
        if (best_of_of(p) != n)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "best_of %d cannot be combined with beam_width %d", p->best_of,
                                p->beam_width);
        if (p->n_stop > 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "stop strings cannot be combined with beam_width %d",
                                p->beam_width);
        if (p->sampling.n_stop_token_ids > 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "stop_token_ids cannot be combined with beam_width %d",
                                p->beam_width);
        if (p->sampling.top_logprobs > 0)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "top_logprobs %d cannot be combined with beam_width %d",
                                p->sampling.top_logprobs, p->beam_width);
    } else if (p->early_stopping) {
        return bt_error_set(err, BT_ERR_INVALID_ARG, "early_stopping needs beam_width > 0");
    }
    if (p->score_from < 0)
        return bt_error_set(err, BT_ERR_RANGE, "score_from %d is negative", p->score_from);
    if (p->score_prompt && (n_of(p) > 1 || best_of_of(p) > 1 || p->beam_width > 0))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "score_prompt scores one prompt: n %d, best_of %d and beam_width %d "
                            "must be 1, 1 and 0",
                            n_of(p), best_of_of(p), p->beam_width);
    return BT_OK;
}

/* Seed of branch i: splitmix64 of (seed, i), so branches differ and are reproducible. */
static uint64_t branch_seed(uint64_t seed, int i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static bt_request *alloc_one(const bt_request_params *p, int32_t cap) {
    bt_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->tokens = malloc(sizeof *r->tokens * (size_t)cap);
    r->logprobs = calloc((size_t)cap, sizeof *r->logprobs);
    int32_t k = p->beam_width > 0 ? 0 : p->sampling.top_logprobs;
    if (k > 0) {
        r->n_top = calloc((size_t)cap, 1);
        r->top_token = calloc((size_t)cap * (size_t)k, sizeof *r->top_token);
        r->top_logprob = calloc((size_t)cap * (size_t)k, sizeof *r->top_logprob);
    }
    if (!r->tokens || !r->logprobs || (k > 0 && (!r->n_top || !r->top_token || !r->top_logprob))) {
        free(r->tokens);
        free(r->logprobs);
        free(r->n_top);
        free(r->top_token);
        free(r->top_logprob);
        free(r);
        return NULL;
    }
    r->p = *p;
    r->cap = cap;
    r->state = BT_REQ_QUEUED;
    r->seq = -1;
    r->fork_at = -1;
    atomic_init(&r->refs, 1);
    bt_error_init(&r->error);
    return r;
}

bt_status bt_request_new(const int32_t *prompt, int32_t n_prompt, const bt_request_params *p,
                         int32_t n_ctx, bt_request **out, bt_error *err) {
    *out = NULL;
    if (n_prompt < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "the prompt is empty");
    /* A scoring request computes positions [0, n_prompt - 1) only. */
    if (p->score_prompt ? n_prompt > n_ctx : n_prompt >= n_ctx)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "prompt is %d tokens; the context holds %d including the generated "
                            "tokens",
                            n_prompt, n_ctx);
    bt_status st = bt_request_params_validate(p, 0, err);
    if (st != BT_OK)
        return st;
    int64_t cap = (int64_t)n_prompt + p->max_tokens;
    if (cap > n_ctx || p->score_prompt)
        cap = p->score_prompt ? n_prompt : n_ctx;
    bt_request_params gp = *p;
    gp.n = n_of(p);
    gp.best_of = best_of_of(p);
    int W = p->beam_width;
    if (W > 0) {
        gp.sampling.temperature = 0;
        gp.sampling.top_logprobs = 2 * W;
    }
    bt_request *r = alloc_one(&gp, (int32_t)cap);
    if (!r)
        return bt_error_set(err, BT_ERR_NOMEM, "request: out of memory");
    int n_children = W > 0 ? 2 * W : (gp.best_of > 1 ? gp.best_of : 0);
    bool ok = true;
    for (int i = 0; i < n_children && ok; i++) {
        bt_request_params cp = gp;
        if (W == 0)
            cp.sampling.seed = branch_seed(p->sampling.seed, i);
        bt_request *c = alloc_one(&cp, (int32_t)cap);
        if (!c) {
            ok = false;
            break;
        }
        c->parent = r;
        c->index = W > 0 ? i % W : i;
        c->state = BT_REQ_DONE;
        r->branch[r->n_branch++] = c;
    }
    if (ok && W > 0 && !(r->beam = bt_beam_new(W, gp.length_penalty, gp.early_stopping)))
        ok = false;
    if (!ok) {
        bt_request_free(r);
        return bt_error_set(err, BT_ERR_NOMEM, "request: out of memory");
    }
    if (W == 0 && gp.best_of > 1)
        r->fork_at = n_prompt - 1;
    memcpy(r->tokens, prompt, sizeof *r->tokens * (size_t)n_prompt);
    r->n_prompt = r->n_tokens = n_prompt;
    r->t_submit = bt_now_us();
    *out = r;
    return BT_OK;
}

void bt_request_free(bt_request *r) {
    if (!r)
        return;
    for (int i = 0; i < r->n_branch; i++)
        bt_request_free(r->branch[i]);
    bt_beam_free(r->beam);
    free(r->tokens);
    free(r->logprobs);
    free(r->n_top);
    free(r->top_token);
    free(r->top_logprob);
    free(r->text);
    free(r);
}

void bt_request_ref(bt_request *r) {
    atomic_fetch_add_explicit(&r->refs, 1, memory_order_relaxed);
}

void bt_request_unref(bt_request *r) {
    /* acq_rel: whatever a thread wrote before its unref is seen by the one that frees. */
    if (r && atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) == 1)
        bt_request_free(r);
}
