/*
 * scheduler.h - continuous batching through a pipeline, on the coordinator.
 *
 * Owns: the queue of waiting requests, the sequence slots [0, max_seqs), the KV block
 * accounting for all stages (every stage holds the same positions of a sequence for its own
 * layers, so one count serves all; capacity = the smallest stage's), the sequence ops that
 * must reach the stages with the next micro-batch, and the micro-batches in flight.
 *
 * A micro-batch (bt_sched_batch) holds decode rows (one token of a sequence whose last
 * token was just sampled) and prefill chunks (up to prefill_chunk prompt or recompute rows),
 * at most max_batch rows. A sequence is in at most one in-flight micro-batch. Up to
 * max_inflight micro-batches are in flight, and decode rows are spread over them (at most
 * ceil(running / max_inflight) per batch, rounded up to a multiple of 4 above 4 and never
 * below 2) so that every stage has work. Once running >= BT_PROMPT_GROUP x n_stages, the cap
 * is at least BT_PROMPT_GROUP: every stage can still have a micro-batch, and each one's rows
 * go through the kernels' prompt tiles (measured on 2 stages, 32 streams as 2 x 16 rows
 * decode 1.4x faster than as 4 x 8; docs/architecture.md).
 *
 * Admission: the oldest queued request is admitted when a slot is free and its first chunk's
 * blocks (plus a 1% watermark while other sequences run) are free. Growth that finds no free
 * block preempts the most recently admitted sequences that are not in flight, newest first,
 * if together they free enough (none otherwise: the growth waits): their KV is freed on every
 * stage and they are queued again at the front, to be recomputed from their tokens; nothing
 * else is failed. Sampling is a function of (seed, position), so a recomputed sequence
 * samples the same tokens it would have. Beams are never preempted (sched_family.c).
 *
 * Several completions of one request (request.h): n/best_of branches fork from the group's
 * cached prompt; beams fork and drop sequences at every step (beam.c chooses). Slots for all
 * of a group's children are reserved when the group is admitted. How their KV is charged:
 * sched_family.c.
 *
 * Text: with a vocabulary (params.vocab) every completion detokenizes incrementally and runs
 * its stop strings (stop.h); a completed stop string ends it (FINISH_STOP) and frees its KV
 * (sched_text.c).
 *
 * The implementation is three files by concept with one private header (sched_impl.h):
 * sched_core.c, sched_family.c, sched_text.c.
 *
 * Confined to the coordinator's scheduling thread. Nothing is allocated per step: batch
 * arrays are sized at creation (a completion's text buffer grows by doubling).
 */
#ifndef BT_SCHEDULER_H
#define BT_SCHEDULER_H

#include <stdbool.h>
#include <stdint.h>

#include "request.h"
#include "stage_layout.h" /* BT_KV_BLOCK_TOKENS, BT_DECODE_GROUP */
#include "status.h"
#include "vocab.h"

typedef struct bt_sched_params {
    int max_seqs;      /* sequence slots (scored rows per batch: BT_SCORE_ROWS) */
    int kv_tokens;     /* KV capacity in tokens of the fullest stage */
    int max_batch;     /* rows per micro-batch */
    int prefill_chunk; /* prompt rows of one sequence per micro-batch */
    int max_inflight;  /* micro-batches in flight */
    int n_stages;      /* stages each micro-batch passes through (>= 1) */
    int n_ctx;         /* tokens per sequence (<= kv_tokens) */
    /* End-of-generation test for sampled tokens (the vocabulary's EOG set). */
    bool (*is_eog)(int32_t token, void *ctx);
    void *eog_ctx;
    const bt_vocab *vocab; /* borrowed; NULL: no text, stop strings are not matched */
} bt_sched_params;

typedef enum bt_sched_op_kind { BT_SCHED_OP_FREE = 0, BT_SCHED_OP_FORK = 1 } bt_sched_op_kind;

typedef struct bt_sched_op {
    bt_sched_op_kind kind;
    int32_t seq, dst;
} bt_sched_op;

/* One micro-batch, struct of arrays. Valid until the next bt_sched_next_batch. */
typedef struct bt_sched_batch {
    uint64_t step;
    int n_rows;
    int32_t *seq, *pos, *token; /* [max_batch] */
    uint8_t *want;              /* [max_batch] */
    int32_t *target;            /* [max_batch] -1, or the token whose logprob the row returns */
    int n_scored;               /* rows with a target, <= BT_SCORE_ROWS */
    int n_ops;
    bt_sched_op *ops; /* [2 * max_seqs] applied before the rows */
    int n_new;
    bt_request **new_reqs; /* [max_seqs] sequences whose sampling params go with this batch */
} bt_sched_batch;

typedef struct bt_sched bt_sched;

bt_status bt_sched_new(const bt_sched_params *p, bt_sched **out, bt_error *err);
void bt_sched_free(bt_sched *s);

/* Queues r (QUEUED, borrowed until DONE). max_tokens 0 finishes it at once; a group wider
 * than the sequence slots ends at once with FINISH_ERROR (the message names both). */
void bt_sched_submit(bt_sched *s, bt_request *r);

/* Forms the next micro-batch if one can go now (fewer than max_inflight in flight and rows
 * or ops to send). Returns false when there is nothing to send. */
bool bt_sched_next_batch(bt_sched *s, bt_sched_batch **out);

/* Results of in-flight step `step`: one (seq, token, logprob) per wanted row, in row order.
 * Appends tokens, calls the requests' callbacks, finishes and frees what is done.
 * BT_ERR_PROTOCOL (naming the field) when the results do not match the step's wanted rows. */
bt_status bt_sched_on_results(bt_sched *s, uint64_t step, int n, const int32_t *seq,
                              const int32_t *token, const float *logprob, bt_error *err);

/* The same with alternatives: result i has n_top[i] (token, logprob) pairs, best first, back
 * to back in top_token/top_logprob (n_top NULL: none). Beams need 2W of them. */
typedef struct bt_sched_results {
    uint64_t step;
    int n;
    const int32_t *seq, *token;
    const float *logprob;
    const uint32_t *n_top;
    const int32_t *top_token;
    const float *top_logprob;
    int n_scored;                /* one per row of the step with a target, in row order */
    const float *scored_logprob; /* NULL when n_scored is 0 */
} bt_sched_results;
bt_status bt_sched_on_results_top(bt_sched *s, const bt_sched_results *res, bt_error *err);

/* Ends r (CANCELLED): queued requests leave the queue; running ones free their KV. A group
 * cancels all its children (those in flight when their results arrive). */
void bt_sched_cancel(bt_sched *s, bt_request *r);

/* Cancels every queued and running request (bt_sched_cancel on each; groups as a whole).
 * Completions of a group that had already finished keep their finish reason. */
void bt_sched_cancel_all(bt_sched *s);

/* Fails every request (a stage is gone): DONE with FINISH_ERROR and err's message. */
void bt_sched_fail_all(bt_sched *s, const bt_error *err);
/* Fails every request as bt_sched_fail_all does, with nothing in flight, while the stages live
 * on: the FREEs of their sequences go with the next batch, and new requests run as before.
 * For a stall (requests active, nothing schedulable): a scheduler fault no known input
 * reaches, which must not end a server. */
void bt_sched_fail_stalled(bt_sched *s, const bt_error *err);

/* Counters. */
int bt_sched_n_inflight(const bt_sched *s);
int bt_sched_n_active(const bt_sched *s); /* queued + running */
int bt_sched_n_running(const bt_sched *s);
int bt_sched_kv_blocks_used(const bt_sched *s);
int bt_sched_kv_blocks(const bt_sched *s); /* capacity */
uint64_t bt_sched_n_preemptions(const bt_sched *s);

#endif
