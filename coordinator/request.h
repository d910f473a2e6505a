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

#include "sampling.h"
#include "status.h"

typedef enum bt_req_state { BT_REQ_QUEUED, BT_REQ_RUNNING, BT_REQ_DONE } bt_req_state;

typedef enum bt_finish {
    BT_FINISH_NONE,
    BT_FINISH_STOP,    /* end-of-generation token */
    BT_FINISH_LENGTH,  /* max_tokens */
    BT_FINISH_CONTEXT, /* the sequence filled the context */
    BT_FINISH_CANCELLED,
    BT_FINISH_ERROR
} bt_finish;

const char *bt_finish_name(bt_finish f);

typedef struct bt_request bt_request;

/* Called on the scheduling thread for every generated token (not for the EOS that ends
 * it), and once when the request is done. */
typedef void (*bt_request_token_fn)(bt_request *r, int32_t token, float logprob, void *ctx);
typedef void (*bt_request_done_fn)(bt_request *r, void *ctx);

typedef struct bt_request_params {
    int32_t max_tokens;
    bool ignore_eos;
    bt_sampler_params sampling;
    bt_request_token_fn on_token; /* may be NULL */
    bt_request_done_fn on_done;   /* may be NULL */
    void *ctx;
} bt_request_params;

struct bt_request {
    uint64_t id;
    bt_request_params p;
    int32_t *tokens;  /* [cap] prompt then generated */
    float *logprobs;  /* [cap] logprob of each generated token at its position */
    int32_t n_prompt, n_tokens, cap;

    /* scheduler state */
    bt_req_state state;
    int32_t seq;      /* slot while RUNNING, else -1 */
    int32_t n_cached; /* positions whose KV is computed or in flight */
    bool in_flight;
    bool params_sent; /* the last stage has this sequence's sampling params */
    bool cancel_pending; /* cancelled while in flight: ends when its results arrive */
    uint64_t admit_order;
    bt_request *q_prev, *q_next; /* queue links while QUEUED */
    int n_preempted;

    /* outcome */
    bt_finish finish;
    int32_t n_generated;
    float logprob_sum;
    bt_error error;

    /* timing, bt_now_us() */
    int64_t t_submit, t_admit, t_first_token, t_done;
};

/* Copies the prompt; room for n_prompt + max_tokens tokens, capped at n_ctx. BT_ERR_LIMIT
 * (message with both numbers) when the prompt does not leave room for one token. */
bt_status bt_request_new(const int32_t *prompt, int32_t n_prompt, const bt_request_params *p,
                         int32_t n_ctx, bt_request **out, bt_error *err);
void bt_request_free(bt_request *r);

#endif
