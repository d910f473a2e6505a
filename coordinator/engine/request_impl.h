/*
 * request_impl.h - one generation request as the coordinator tracks it: the prompt and every
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
 * PRIVATE to the sources of coordinator/engine/ and to unit tests that drive the scheduler
 * directly; everyone else sees the opaque handle of request.h and the events of engine.h.
 *
 * Ownership: reference counted (refs, atomic). bt_request_new returns one reference; the
 * engine holds one from submit until DONE is delivered, each client its own. The scheduler
 * only borrows. Fields other than refs are confined to the coordinator's scheduling thread;
 * the engine's inbox fields are guarded by the engine's mutex (engine.c).
 */
#ifndef BT_REQUEST_IMPL_H
#define BT_REQUEST_IMPL_H

#include <stdatomic.h>

#include "request.h"

typedef enum bt_req_state { BT_REQ_QUEUED, BT_REQ_RUNNING, BT_REQ_DONE } bt_req_state;

struct bt_event;
struct bt_engine;

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
    bool step_waiting;   /* beam group: its step's forks wait for KV (sched_beam_retry) */
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

    /* life of the handle and the engine's bookkeeping (engine.c) */
    atomic_int refs;
    void (*sink)(const struct bt_event *ev, void *ctx); /* the caller's; engine thread */
    void *sink_ctx;
    bt_request *e_prev, *e_next; /* engine: inbox list (mutex) or live list (engine thread) */
    bt_request *cancel_next;     /* engine: cancel list (mutex) */
    bool cancel_listed;          /* in the engine's cancel list (mutex) */
    bool done_sent;              /* DONE delivered (engine thread) */
    bool timed_out;              /* cancelled by the queue deadline (engine thread) */
};

/* Validates p (bt_request_params_validate), copies the prompt; room for n_prompt +
 * max_tokens tokens, capped at n_ctx, for the request and each of its children. BT_ERR_LIMIT
 * (message with both numbers) when the prompt does not leave room for one token. */
bt_status bt_request_new(const int32_t *prompt, int32_t n_prompt, const bt_request_params *p,
                         int32_t n_ctx, bt_request **out, bt_error *err);
void bt_request_free(bt_request *r);

#endif
