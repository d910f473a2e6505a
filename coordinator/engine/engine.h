/*
 * engine.h - the engine: one long-running loop that owns the scheduler and the link to the
 * stages, and the thread-safe door that other threads (HTTP, batch reader, CLI) use.
 *
 * Threads: bt_engine_serve runs the loop on the thread that owns the transport (MPI is
 * FUNNELED: the thread that called MPI_Init, i.e. main). Every other function here is
 * thread-safe unless it says otherwise. Events reach a request's sink ON THE ENGINE THREAD:
 * the sink copies what it needs and returns quickly (never blocks on a client socket); it may
 * call bt_engine_submit, bt_engine_cancel, bt_engine_shutdown and bt_request_unref.
 *
 * The loop sleeps on a condition variable (inbox wakeup) while idle, waking at the latest
 * when stage liveness/heartbeats need looking at (bt_cluster_idle_interval_us); while
 * micro-batches are in flight it polls the transport (bt_cluster_poll).
 *
 * States of the engine (docs/architecture.md, "The engine service"):
 *   NEW      after bt_engine_new: submit queues requests; nothing runs
 *   SERVING  inside bt_engine_serve; ready once the probe came back
 *   DRAINING bt_engine_shutdown(drain): submit refuses, the rest finish (or the deadline)
 *   ENDED    serve returned: submit refuses; failed when a stage failed
 */
#ifndef BT_ENGINE_H
#define BT_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "gguf.h"
#include "request.h" /* bt_request_params, bt_finish (public part only) */
#include "status.h"
#include "transport.h"
#include "vocab.h"

typedef struct bt_engine_params {
    bt_cluster_params cluster;
    int prefill_chunk;        /* prompt rows of one sequence per micro-batch */
    int max_inflight;         /* 0 = 1 on one stage, else 2 x stages (architecture.md) */
    int n_ctx;                /* tokens per sequence; 0 = min(trained context, KV capacity) */
    int queue_capacity;       /* requests accepted and not yet done (queued + running); submit
                                 beyond it is BT_ERR_BUSY. 0 = 4 x max_seqs */
    int64_t queue_timeout_us; /* a request still QUEUED (never admitted) after this ends with
                                 BT_ERR_TIMEOUT; 0 = none */
} bt_engine_params;
bt_engine_params bt_engine_default_params(void);

typedef struct bt_engine bt_engine;

/* Handshake with every stage (bt_cluster_start), scheduler, inbox. t, g, v borrowed, must
 * outlive the engine. Runs on the transport's thread. */
bt_status bt_engine_new(bt_transport *t, const bt_gguf *g, const bt_vocab *v,
                        const bt_engine_params *p, bt_engine **out, bt_error *err);
/* After bt_engine_serve returned (or instead of it: then the stages are told to exit here,
 * unless the engine failed). Frees; every handle still referenced by a client stays valid
 * until its last unref. Transport thread. */
void bt_engine_free(bt_engine *e);

/* Runs the loop on the calling thread until bt_engine_shutdown's conditions are met.
 * First sends a one-token probe (BOS, max_tokens 1, greedy) through every stage; ready
 * turns true when it comes back. Returns BT_OK after an orderly end (stages told to exit),
 * or the failure (a stage died/hung/errored): every live request got a DONE event with
 * status BT_ERR_UNAVAILABLE and a message naming the rank; ready false; failed true.
 * Once per engine. */
bt_status bt_engine_serve(bt_engine *e, bt_error *err);

/* Ends the loop. drain = true: submit refuses with BT_ERR_UNAVAILABLE ("draining"), ready
 * turns false, queued and running requests go on; at deadline_us (bt_now_us clock; 0 = no
 * deadline) the rest are cancelled; serve returns when none is left. drain = false: cancel
 * everything now, serve returns once in-flight steps have landed. Thread-safe, idempotent
 * (a later call may only tighten: drain->cancel, earlier deadline). NOT async-signal-safe:
 * signal handlers write to a pipe/flag that some thread turns into this call (sigwatch.h).
 * Called before serve, serve ends as soon as what was submitted is done (or cancelled). */
void bt_engine_shutdown(bt_engine *e, bool drain, int64_t deadline_us);

/* Facts fixed after bt_engine_new; any thread. */
typedef struct bt_engine_info {
    int n_ctx; /* max prompt + generated tokens of one sequence */
    int n_stages;
    int kv_tokens; /* KV capacity of the fullest stage */
    int max_seqs;
    int queue_capacity;
    int32_t n_vocab;
} bt_engine_info;
void bt_engine_get_info(const bt_engine *e, bt_engine_info *out);

/* The cluster (stage reports, split) for the transport's thread: before serve, after it, or
 * from a sink. */
const bt_cluster *bt_engine_cluster(const bt_engine *e);

/* ---- requests ---- */
/* bt_request (opaque, refcounted), bt_request_ref, bt_request_unref: request.h */

typedef enum bt_event_kind {
    /* A sampled token of completion `index` (plain sampling and n > 1 with best_of == n;
     * never for best_of > n or beams, whose winners are only known at the end). Not sent for
     * the EOS / stop token that ends a completion. text/n_text: the text that became final
     * with this token (stop strings held back; may be empty, may be more than this token's
     * piece when held-back text is released). */
    BT_EVENT_TOKEN,
    /* Completion `index` ended (finish, n_generated); every TOKEN of it came before.
     * text/n_text: text held back (a possible stop string, an incomplete UTF-8 sequence)
     * that became final at the end without a TOKEN of its own (e.g. the completion ended
     * with EOS); usually empty. For best_of > n and beams, sent for each returned completion
     * (index as returned) just before DONE. */
    BT_EVENT_FINISH,
    /* The request ended: the last event, exactly once. status BT_OK or the error; the
     * completions that are returned (n of them, best first for best_of/beams, by index
     * otherwise) with their whole text and tokens; usage. A cancelled request has status
     * BT_OK and its unfinished completions finish BT_FINISH_CANCELLED. */
    BT_EVENT_DONE,
} bt_event_kind;

/* One returned completion, valid only during the sink call. */
typedef struct bt_completion_view {
    int index;        /* 0..n-1 as returned */
    const char *text; /* final text (no stop string unless include_stop_str_in_output) */
    size_t n_text;
    const int32_t *tokens; /* generated tokens [n_tokens] */
    const float *logprobs; /* [n_tokens] */
    int n_tokens;
    int top_stride;           /* top_logprobs requested (0: none) */
    const uint8_t *n_top;     /* [n_tokens] alternatives per token, NULL when top_stride 0 */
    const int32_t *top_token; /* [n_tokens * top_stride], best first */
    const float *top_logprob; /* [n_tokens * top_stride] */
    bt_finish finish;
    double score; /* cumulative logprob, or the beam score */
    /* additions to the spec: */
    int32_t n_generated; /* sampled tokens (a beam hypothesis counts its EOS) */
    float logprob_sum;   /* their cumulative logprob, summed as the scheduler sums it */
} bt_completion_view;

typedef struct bt_event {
    bt_event_kind kind;
    int index; /* TOKEN, FINISH: the completion */
    /* TOKEN */
    int32_t token;
    float logprob;
    int n_top;
    const int32_t *top_token; /* [n_top] best first */
    const float *top_logprob;
    const char *text; /* TOKEN, FINISH */
    size_t n_text;
    /* FINISH; DONE: the request's (its best completion's, or why it ended without one) */
    bt_finish finish;
    int32_t n_generated;
    /* DONE */
    bt_status status;    /* BT_OK, or why it failed: BT_ERR_UNAVAILABLE (stage failure,
                            message names the rank), BT_ERR_TIMEOUT (queue deadline),
                            BT_ERR_LIMIT (e.g. beams ran out of KV) ... */
    const char *message; /* "" when ok */
    int n_completions;
    const bt_completion_view *completions;
    int32_t usage_prompt_tokens;
    int32_t usage_completion_tokens; /* every sampled token of every branch */
    int n_preemptions;
    /* p->score_prompt requests (perplexity): logprob of prompt token i given tokens [0, i),
     * for i in [max(1, p->score_from), usage_prompt_tokens); the others are 0. NULL
     * otherwise. */
    const float *prompt_logprobs;
    int64_t t_submit_us, t_admit_us, t_first_token_us, t_done_us; /* bt_now_us; 0: never */
} bt_event;

/* Called on the engine thread; ev and everything it points to is valid only during the call. */
typedef void (*bt_sink_fn)(const bt_event *ev, void *ctx);

/* Hands a tokenized prompt to the engine (the caller tokenized it with the immutable vocab on
 * its own thread). Checks, before any stage sees it: parameters (bt_request_params_validate,
 * message names the field), BT_ERR_LIMIT when n_prompt + 1 > n_ctx (message gives both
 * numbers; generation ends at the context, finish BT_FINISH_CONTEXT, whatever max_tokens
 * says), BT_ERR_UNAVAILABLE when draining, failed or ended, BT_ERR_BUSY when queue_capacity
 * requests are live (a request stops counting as its DONE is delivered, so a sink may submit
 * another in its place). Accepted before serve (queued until it runs). On BT_OK *out holds one
 * reference for the caller (unref when done with it; out may be NULL: no reference) and the
 * sink will get events until DONE; on error no event is ever sent and *out is NULL. sink
 * and ctx must stay valid until DONE has been delivered. p's on_token/on_text/on_finish/
 * on_done/ctx are ignored (the engine uses them). */
bt_status bt_engine_submit(bt_engine *e, const int32_t *prompt, int32_t n_prompt,
                           const bt_request_params *p, bt_sink_fn sink, void *ctx, bt_request **out,
                           bt_error *err);

/* Asks the engine to end r (client gone, deadline): its KV is freed on every stage with the
 * next micro-batch; DONE still comes (finish BT_FINISH_CANCELLED unless it had finished).
 * Any thread, idempotent, fine after DONE. */
void bt_engine_cancel(bt_engine *e, bt_request *r);

/* ---- metrics: a snapshot published by the engine thread after every step/heartbeat ---- */
#define BT_ENGINE_MAX_STAGES 64
typedef struct bt_engine_stage_metrics {
    int rank, layer_begin, layer_end;
    int kv_blocks_used, kv_blocks_total; /* the stage's own count from its heartbeat
                                            (kv_tokens_free), in BT_KV_BLOCK_TOKENS blocks */
    double busy_fraction;                /* busy_us over wall time since start */
    uint64_t act_bytes_sent;             /* activation bytes this stage sent on */
    double seconds_since_heartbeat;
} bt_engine_stage_metrics;

typedef struct bt_engine_metrics {
    bool ready; /* probe done, not draining, not failed */
    bool draining, failed;
    int n_running, n_waiting; /* requests: admitted (not done) / accepted, never admitted */
    uint64_t prompt_tokens_total, generation_tokens_total; /* of requests done */
    uint64_t preemptions_total;
    uint64_t steps, rows;
    int kv_blocks_used, kv_blocks_total; /* the coordinator's accounting */
    int n_stages;
    bt_engine_stage_metrics stage[BT_ENGINE_MAX_STAGES];
} bt_engine_metrics;
void bt_engine_get_metrics(bt_engine *e, bt_engine_metrics *out);

#endif
