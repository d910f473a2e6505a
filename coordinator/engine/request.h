/*
 * request.h - one generation request as the coordinator tracks it: the prompt and every
 * token generated so far, its parameters, and where it is in its life:
 *
 *   state      event                                   next            by
 *   QUEUED     KV blocks and a sequence slot free      RUNNING         bt_sched_next_batch
 *   RUNNING    sampled EOS / max_tokens / context end  DONE            bt_sched_on_results
 *   RUNNING    KV blocks run out (newest is chosen)    QUEUED (front)  bt_sched_next_batch
 *   any        bt_sched_cancel / a stage failure       DONE (error)    bt_sched_cancel/fail_all
 *
 * Invariants: tokens[0..n_tokens) are the prompt followed by the generated tokens; while
 * RUNNING, positions [0, n_cached) of the sequence are in the KV cache of every stage (or in
 * an in-flight micro-batch, in_flight true); a RUNNING request not in flight with
 * n_cached == n_tokens - 1 is ready to decode its last token.
 *
 * Ownership: created by bt_request_new, owned by the caller, which frees it after it is DONE
 * (the scheduler only borrows it). Confined to the coordinator's scheduling thread.
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

typedef enum bt_req_state { BT_REQ_QUEUED, BT_REQ_RUNNING, BT_REQ_DONE } bt_req_state;

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
    /* Prompt scoring (perplexity): no generation (max_tokens, sampling and stop strings do
     * not apply; n 1, no best_of, no beams). Rows [0, n_prompt - 1) are computed, and when it
     * is DONE (finish LENGTH) r->logprobs[i] is log p(prompt[i] | prompt[0, i)) for i in
     * [score_from, n_prompt), the raw log-softmax of the model's logits; the others are 0. */
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

/* max_tokens 128, n 1, best_of 1, no beams, length_penalty 1, sampler defaults. */
bt_request_params bt_request_default_params(void);

/* Adds a stop string (len bytes, may hold any bytes but NUL). BT_ERR_RANGE naming `stop`
 * when it is empty, longer than 256 bytes, or the 17th. */
bt_status bt_request_params_add_stop(bt_request_params *p, const char *s, size_t len,
                                     bt_error *err);

/* Every parameter and combination; the message names the parameter. n_vocab bounds token
 * ids (0 skips). */
bt_status bt_request_params_validate(const bt_request_params *p, int32_t n_vocab, bt_error *err);

typedef struct bt_beam bt_beam;

struct bt_request {
    uint64_t id;
    bt_request_params p;
    int32_t *tokens; /* [cap] prompt then generated */
    float *logprobs; /* [cap] logprob of each generated token at its position */
    /* top_logprobs > 0 (not beams): the alternatives of each generated token at its
     * position, best first: n_top[pos] of them at [pos * top_logprobs] */
    uint8_t *n_top;     /* [cap] */
    int32_t *top_token; /* [cap * top_logprobs] */
    float *top_logprob; /* [cap * top_logprobs] */
    int32_t n_prompt, n_tokens, cap;

    /* scheduler state */
    bt_req_state state;
    int32_t seq;      /* slot while RUNNING, else -1 */
    int32_t n_cached; /* positions whose KV is computed or in flight */
    bool in_flight;
    bool params_sent;    /* the last stage has this sequence's sampling params */
    bool cancel_pending; /* cancelled while in flight: ends when its results arrive */
    uint64_t admit_order;
    bt_request *q_prev, *q_next; /* queue links while QUEUED */
    int n_preempted;
    int32_t kv_base; /* positions [0, kv_base) (whole blocks) are charged to the parent */

    /* family: a child's group, and a group's children (owned, allocated with it) */
    bt_request *parent; /* NULL for the caller's request */
    int32_t index;      /* a child's branch or beam index */
    int32_t n_branch;   /* best_of when > 1 or beams, else 0 */
    bt_request *branch[BT_MAX_COMPLETIONS];
    int32_t fork_at; /* best_of > 1: prefill [0, fork_at) and fork there; else -1 */
    bool forked;
    int n_live;     /* children not yet done */
    int slots_held; /* slots reserved for children not yet forked */
    int kv_shared;  /* blocks of the shared prefix, held until the last child is done */
    int n_holders;  /* children that still reference the shared prefix */
    bt_beam *beam;  /* beam search state, NULL otherwise */
    bt_request *live[BT_MAX_BEAM]; /* beams: the live beams, n_live of them */

    /* text of this completion (only with a scheduler vocabulary) */
    bt_detok detok;
    bt_stop stop;
    char *text; /* [text_cap] final text, NUL-terminated */
    size_t n_text, text_cap;

    /* outcome */
    int n_out;
    bt_request *out[BT_MAX_COMPLETIONS]; /* completions, best first (borrowed from r) */
    double score; /* beams: the hypothesis score; else the cumulative logprob */
    bt_finish finish;
    int32_t n_generated;
    float logprob_sum;
    bt_error error;

    /* timing, bt_now_us() */
    int64_t t_submit, t_admit, t_first_token, t_done;
};

/* Validates p (bt_request_params_validate), copies the prompt; room for n_prompt +
 * max_tokens tokens, capped at n_ctx, for the request and each of its children. BT_ERR_LIMIT
 * (message with both numbers) when the prompt does not leave room for one token. */
bt_status bt_request_new(const int32_t *prompt, int32_t n_prompt, const bt_request_params *p,
                         int32_t n_ctx, bt_request **out, bt_error *err);
void bt_request_free(bt_request *r);

#endif
