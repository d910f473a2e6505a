/*
 * sched_impl.h - the scheduler's private state, shared by its three files and nobody else:
 *   sched_core.c    queue, admission, KV block accounting, preemption, micro-batches, results
 *   sched_family.c  n/best_of branches and beam search (forks, shared prefixes, beam.c)
 *   sched_text.c    incremental detokenization, stop strings, a completion's text buffer
 * scheduler.h is the public header. Confined to the coordinator's scheduling thread.
 *
 * Invariants of struct bt_sched (checked by tests/unit/test_scheduler.c):
 *   - kv_used = the blocks charged to running sequences (blocks_for(n_cached) less the
 *     whole blocks of a shared prefix, kv_base) plus each group's kv_shared; <= kv_blocks.
 *   - n_running = the non-NULL slots; n_running + n_held <= max_seqs (n_held: slots reserved
 *     for children of admitted groups that have not forked yet).
 *   - ring holds the n_inflight micro-batches in flight, oldest at ring_head; results must
 *     come back in that order.
 *   - pending holds the FREE/FORK ops not yet sent; they go with the next micro-batch.
 */
#ifndef BT_SCHED_IMPL_H
#define BT_SCHED_IMPL_H

#include "request_impl.h"
#include "scheduler.h"

typedef struct inflight {
    uint64_t step;
    int n_rows, n_want, n_scored;
    int32_t *seq;    /* [max_batch] */
    int32_t *pos;    /* [max_batch] */
    uint8_t *want;   /* [max_batch] */
    uint8_t *scored; /* [max_batch] the row has a target (prompt scoring) */
} inflight;

struct bt_sched {
    bt_sched_params p;
    int kv_blocks, kv_used, watermark;
    bt_request **slots; /* [max_seqs] RUNNING requests by sequence id */
    int n_running;
    bt_request *q_head, *q_tail;
    int n_queued;
    uint64_t next_step, admit_counter, n_preempt;

    bt_sched_op *pending; /* [2 * max_seqs] ops not yet sent */
    int n_pending;

    inflight *ring; /* [max_inflight], oldest at ring_head */
    int ring_head, n_inflight;

    bt_sched_batch batch;
    bt_request **order; /* [max_seqs] running requests by admission, scratch */

    int n_held;             /* slots reserved for children of admitted groups, not yet forked */
    bool told_prompt_group; /* the debug line of the decode cap's 16-row floor went out */
    char *tbuf;             /* [tcap] detokenized bytes of one token */
    char *sbuf;             /* [tcap + BT_STOP_MAX_BYTES] text made final by one token */
    size_t tcap;
};

static inline int blocks_for(int32_t tokens) {
    return (tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

/* The blocks r's release frees: its cached positions' blocks, less the shared prefix below
 * kv_base that its group holds. */
static inline int sched_own_blocks(const bt_request *r) {
    return blocks_for(r->n_cached) - r->kv_base / BT_KV_BLOCK_TOKENS;
}

/* End of the rows to compute: a group that forks stops before the prompt's last token, and a
 * prompt-scoring request before its last token (which predicts nothing). */
static inline int32_t sched_row_end(const bt_request *r) {
    if (r->p.score_prompt)
        return r->n_tokens - 1;
    return r->fork_at >= 0 && !r->forked ? r->fork_at : r->n_tokens;
}

/* n/best_of: g's shared prefix is cached and nothing of it is in flight: it forks now. */
static inline bool sched_fork_due(const bt_request *g) {
    return g->fork_at >= 0 && !g->forked && !g->in_flight && g->state == BT_REQ_RUNNING &&
           g->n_cached == g->fork_at;
}

/* ---- sched_core.c ---- */
void sched_q_remove(bt_sched *s, bt_request *r);
/* Queues r (holding no slot or KV) again at the front, to be recomputed from its tokens next,
 * and counts it as a preemption. */
void sched_requeue(bt_sched *s, bt_request *r);
/* Queues a FREE or FORK op for the next micro-batch. */
void sched_push_op(bt_sched *s, bt_sched_op_kind kind, int32_t seq, int32_t dst);
/* Gives r the lowest free slot (one must be free); returns it. */
int sched_take_slot(bt_sched *s, bt_request *r);
/* Returns the group's reserved slots that no child took. */
void sched_drop_held(bt_sched *s, bt_request *g);
/* Releases r's slot and KV (a FREE op tells the stages). */
void sched_release(bt_sched *s, bt_request *r);
/* Makes `need` more blocks free for r, preempting newer sequences if together they free
 * enough (none otherwise); charges them. False (nothing charged) when they cannot be had. */
bool sched_reserve_blocks(bt_sched *s, bt_request *r, int need);
/* Blocks that preempting every sequence growth of r may preempt would free. */
int sched_freeable_for(const bt_sched *s, const bt_request *r);
/* Ends completion r (DONE, why), frees its KV, calls its callbacks; a group that never
 * forked ends as a whole (sched_group_end). */
void sched_finish(bt_sched *s, bt_request *r, bt_finish why);

/* ---- sched_family.c ---- */
bool sched_is_beam_child(const bt_request *r);
/* Slots a group still needs for children beyond its own sequence. */
int sched_extra_slots(const bt_request *r);
/* True when g or any child of g with a sequence is in flight. */
bool sched_any_in_flight(const bt_request *g);
/* Ends group g: frees what it and its children still hold, picks its completions and calls
 * on_done. why NONE: the reason of the best completion. */
void sched_group_end(bt_sched *s, bt_request *g, bt_finish why);
/* n/best_of: g's prefix is cached; its branches take over. False when the copy-on-write
 * blocks cannot be reserved yet; with fit, the branches that do not fit are queued instead. */
bool sched_fork_branches(bt_sched *s, bt_request *g, bool fit);
/* Nothing is in flight and no row could be formed: what waits for KV blocks waits for ever
 * (and the engine would stop, stalled). A group waiting for its forks' blocks forks what fits
 * (sched_fork_branches with fit), else the most recently admitted beam group fails (beams are
 * never preempted). Either leaves ops pending; false when neither applies. */
bool sched_unstick(bt_sched *s);
/* Runs the beam steps that wait for their forks' blocks, where those fit now. */
void sched_beam_retry(bt_sched *s);
/* Beam r's 2W candidates arrived; a beam step runs once every live beam has reported, or
 * waits (step_waiting) while its forks' blocks are not free. */
bt_status sched_beam_result(bt_sched *s, bt_request *r, uint32_t n_top, const int32_t *tok,
                            const float *lp, bt_error *err);

/* ---- sched_text.c ---- */
/* Resets r's text, detokenizer and stop-string matcher. */
void sched_text_begin(bt_sched *s, bt_request *r);
/* Feeds token's text through the detokenizer and the stop strings. True: a stop string
 * completed. */
bool sched_text_push(bt_sched *s, bt_request *r, int32_t token);
/* The completion ended without a stop string: what is held back becomes final. */
void sched_text_end(bt_sched *s, bt_request *r);
/* The whole text of a finished hypothesis (no callbacks). */
void sched_text_whole(bt_sched *s, bt_request *r);

#endif
