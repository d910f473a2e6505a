/* sched_core.c - the scheduler's core: the queue, admission, KV block accounting, preemption,
 * forming micro-batches and taking their results (see scheduler.h for the policy and
 * sched_impl.h for the invariants). Groups and beams are in sched_family.c, text in
 * sched_text.c. */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "beam.h" /* a group's width, in a message */
#include "clock.h"
#include "log.h"
#include "sched_impl.h"

bt_status bt_sched_new(const bt_sched_params *p, bt_sched **out, bt_error *err) {
    *out = NULL;
    if (p->max_seqs < 1 || p->kv_tokens < BT_KV_BLOCK_TOKENS || p->max_batch < 1 ||
        p->prefill_chunk < 1 || p->max_inflight < 1 || p->n_stages < 1 || p->n_ctx < 2 ||
        p->n_ctx > p->kv_tokens)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "scheduler: max_seqs %d, kv_tokens %d, max_batch %d, prefill_chunk "
                            "%d, max_inflight %d, n_stages %d, n_ctx %d",
                            p->max_seqs, p->kv_tokens, p->max_batch, p->prefill_chunk,
                            p->max_inflight, p->n_stages, p->n_ctx);
    bt_sched *s = calloc(1, sizeof *s);
    if (!s)
        return bt_error_set(err, BT_ERR_NOMEM, "scheduler: out of memory");
    s->p = *p;
    s->kv_blocks = p->kv_tokens / BT_KV_BLOCK_TOKENS;
    s->watermark = s->kv_blocks / 100;
    s->next_step = 1;
    size_t B = (size_t)p->max_batch, S = (size_t)p->max_seqs;
    s->slots = calloc(S, sizeof *s->slots);
    s->order = calloc(S, sizeof *s->order);
    s->pending = calloc(2 * S, sizeof *s->pending);
    s->ring = calloc((size_t)p->max_inflight, sizeof *s->ring);
    bt_sched_batch *b = &s->batch;
    b->seq = calloc(B, sizeof *b->seq);
    b->pos = calloc(B, sizeof *b->pos);
    b->token = calloc(B, sizeof *b->token);
    b->want = calloc(B, 1);
    b->target = calloc(B, sizeof *b->target);
    b->ops = calloc(2 * S, sizeof *b->ops);
    b->new_reqs = calloc(S, sizeof *b->new_reqs);
    s->tcap = p->vocab ? bt_detok_out_max(p->vocab) + 8 : 8;
    s->tbuf = malloc(s->tcap);
    s->sbuf = malloc(s->tcap + BT_STOP_MAX_BYTES);
    bool ok = s->slots && s->order && s->pending && s->ring && b->seq && b->pos && b->token &&
              b->want && b->target && b->ops && b->new_reqs && s->tbuf && s->sbuf;
    for (int i = 0; ok && i < p->max_inflight; i++) {
        s->ring[i].seq = calloc(B, sizeof *s->ring[i].seq);
        s->ring[i].pos = calloc(B, sizeof *s->ring[i].pos);
        s->ring[i].want = calloc(B, 1);
        s->ring[i].scored = calloc(B, 1);
        ok = s->ring[i].seq && s->ring[i].pos && s->ring[i].want && s->ring[i].scored;
    }
    if (!ok) {
        bt_sched_free(s);
        return bt_error_set(err, BT_ERR_NOMEM, "scheduler: out of memory");
    }
    *out = s;
    return BT_OK;
}

void bt_sched_free(bt_sched *s) {
    if (!s)
        return;
    for (int i = 0; s->ring && i < s->p.max_inflight; i++) {
        free(s->ring[i].seq);
        free(s->ring[i].pos);
        free(s->ring[i].want);
        free(s->ring[i].scored);
    }
    free(s->ring);
    free(s->slots);
    free(s->order);
    free(s->pending);
    free(s->batch.seq);
    free(s->batch.pos);
    free(s->batch.token);
    free(s->batch.want);
    free(s->batch.target);
    free(s->batch.ops);
    free(s->batch.new_reqs);
    free(s->tbuf);
    free(s->sbuf);
    free(s);
}

/* ---- queue ---- */

static void q_push_back(bt_sched *s, bt_request *r) {
    r->q_next = NULL;
    r->q_prev = s->q_tail;
    if (s->q_tail)
        s->q_tail->q_next = r;
    else
        s->q_head = r;
    s->q_tail = r;
    s->n_queued++;
}

static void q_push_front(bt_sched *s, bt_request *r) {
    r->q_prev = NULL;
    r->q_next = s->q_head;
    if (s->q_head)
        s->q_head->q_prev = r;
    else
        s->q_tail = r;
    s->q_head = r;
    s->n_queued++;
}

void sched_q_remove(bt_sched *s, bt_request *r) {
    if (r->q_prev)
        r->q_prev->q_next = r->q_next;
    else
        s->q_head = r->q_next;
    if (r->q_next)
        r->q_next->q_prev = r->q_prev;
    else
        s->q_tail = r->q_prev;
    r->q_prev = r->q_next = NULL;
    s->n_queued--;
}

/* ---- life cycle ---- */

void sched_push_op(bt_sched *s, bt_sched_op_kind kind, int32_t seq, int32_t dst) {
    assert(s->n_pending < 2 * s->p.max_seqs);
    s->pending[s->n_pending++] = (bt_sched_op){.kind = kind, .seq = seq, .dst = dst};
}

int sched_take_slot(bt_sched *s, bt_request *r) {
    int slot = 0;
    while (s->slots[slot])
        slot++;
    s->slots[slot] = r;
    s->n_running++;
    r->seq = slot;
    return slot;
}

/* Returns the group's reserved slots that no child took. */
void sched_drop_held(bt_sched *s, bt_request *g) {
    s->n_held -= g->slots_held;
    g->slots_held = 0;
}

/* A child stops referencing its group's shared prefix. */
static void drop_holder(bt_sched *s, bt_request *g) {
    if (--g->n_holders == 0) {
        s->kv_used -= g->kv_shared;
        g->kv_shared = 0;
    }
}

/* Releases r's slot and KV (a FREE op tells the stages). */
void sched_release(bt_sched *s, bt_request *r) {
    if (r->seq < 0)
        return;
    s->kv_used -= sched_own_blocks(r);
    sched_push_op(s, BT_SCHED_OP_FREE, r->seq, 0);
    s->slots[r->seq] = NULL;
    s->n_running--;
    r->seq = -1;
    r->n_cached = 0;
    r->params_sent = false;
    if (r->kv_base > 0) {
        r->kv_base = 0;
        drop_holder(s, r->parent);
    }
}

void sched_finish(bt_sched *s, bt_request *r, bt_finish why) {
    if (!r->parent && !r->forked && (r->beam || r->n_branch > 1)) {
        sched_group_end(s, r, why); /* a group that never forked */
        return;
    }
    if (r->state == BT_REQ_QUEUED)
        sched_q_remove(s, r);
    sched_release(s, r);
    r->state = BT_REQ_DONE;
    r->finish = why;
    r->score = r->logprob_sum;
    r->t_done = bt_now_us();
    if (why != BT_FINISH_CANCELLED && why != BT_FINISH_ERROR)
        sched_text_end(s, r);
    if (r->p.on_finish)
        r->p.on_finish(r, r->p.ctx);
    bt_request *g = r->parent;
    if (!g) {
        r->n_out = 1;
        r->out[0] = r;
        if (r->p.on_done)
            r->p.on_done(r, r->p.ctx);
        return;
    }
    if (why == BT_FINISH_ERROR && !g->error.msg[0])
        g->error = r->error;
    if (--g->n_live == 0 && !g->beam)
        sched_group_end(s, g, BT_FINISH_NONE);
}

void bt_sched_submit(bt_sched *s, bt_request *r) {
    r->state = BT_REQ_QUEUED;
    r->seq = -1;
    sched_text_begin(s, r);
    q_push_back(s, r);
    if (1 + sched_extra_slots(r) > s->p.max_seqs) {
        bt_error_set(&r->error, BT_ERR_LIMIT, "%s %d needs %d sequence slots, the cluster has %d",
                     r->beam ? "beam_width" : "best_of", r->beam ? r->beam->width : r->n_branch,
                     1 + sched_extra_slots(r), s->p.max_seqs);
        sched_finish(s, r, BT_FINISH_ERROR);
        return;
    }
    /* A scoring request generates nothing (max_tokens does not apply); a prompt of one token
     * has nothing to score. */
    if (r->p.score_prompt ? r->n_tokens < 2 : r->p.max_tokens == 0)
        sched_finish(s, r, BT_FINISH_LENGTH);
}

void bt_sched_cancel(bt_sched *s, bt_request *r) {
    if (r->state == BT_REQ_DONE)
        return;
    if (r->forked) {
        if (r->beam) {
            r->cancel_pending = true;
            if (!sched_any_in_flight(r))
                sched_group_end(s, r, BT_FINISH_CANCELLED);
            return;
        }
        r->cancel_pending = true;
        for (int i = 0; i < r->n_branch; i++) {
            bt_request *c = r->branch[i];
            if (c->state == BT_REQ_DONE)
                continue;
            if (c->in_flight)
                c->cancel_pending = true;
            else
                sched_finish(s, c, BT_FINISH_CANCELLED);
        }
        return;
    }
    if (r->in_flight) {
        r->cancel_pending = true;
        return;
    }
    sched_finish(s, r, BT_FINISH_CANCELLED);
}

void bt_sched_cancel_all(bt_sched *s) {
    /* A slot may hold a group's child: the group is what is cancelled. Cancelling a group
     * twice is harmless (bt_sched_cancel skips what is DONE or already pending). */
    for (int i = 0; i < s->p.max_seqs; i++)
        if (s->slots[i])
            bt_sched_cancel(s, s->slots[i]->parent ? s->slots[i]->parent : s->slots[i]);
    /* Queued: a request alone leaves the queue when cancelled; a preempted child of a group
     * whose cancel waits for steps in flight stays until that group ends. So: cancel the
     * first queued request whose group is not yet cancelled, and look again. */
    for (;;) {
        bt_request *r = s->q_head;
        while (r && ((r->parent ? r->parent : r)->cancel_pending ||
                     (r->parent ? r->parent : r)->state == BT_REQ_DONE))
            r = r->q_next;
        if (!r)
            break;
        bt_sched_cancel(s, r->parent ? r->parent : r);
    }
}

/* Fails every request with err's message. keep_ops: the stages live on, so the FREEs of the
 * failed sequences go with the next batch; else (a stage is gone) nothing more is sent. */
static void fail_every(bt_sched *s, const bt_error *err, bool keep_ops) {
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i];
        if (!r)
            continue;
        r->in_flight = false;
        r->error = *err;
        if (sched_is_beam_child(r)) {
            r->parent->error = *err;
            for (int k = 0; k < r->parent->n_branch; k++)
                r->parent->branch[k]->in_flight = false;
            sched_group_end(s, r->parent, BT_FINISH_ERROR);
        } else {
            sched_finish(s, r, BT_FINISH_ERROR);
        }
    }
    while (s->q_head) {
        bt_request *r = s->q_head;
        r->error = *err;
        sched_finish(s, r, BT_FINISH_ERROR);
    }
    if (!keep_ops) {
        s->n_inflight = 0;
        s->n_pending = 0;
    }
}

void bt_sched_fail_all(bt_sched *s, const bt_error *err) {
    fail_every(s, err, false);
}

void bt_sched_fail_stalled(bt_sched *s, const bt_error *err) {
    assert(s->n_inflight == 0);
    fail_every(s, err, true);
}

void sched_requeue(bt_sched *s, bt_request *r) {
    r->state = BT_REQ_QUEUED;
    r->n_preempted++;
    s->n_preempt++;
    q_push_front(s, r);
}

static void preempt(bt_sched *s, bt_request *r) {
    sched_release(s, r);
    sched_drop_held(s, r);
    sched_requeue(s, r);
}

/* Whether growth of r may preempt v: running, not in flight, not a beam (beams are never
 * preempted; nor is a beam group's prompt sequence whose first step waits, its forks' source),
 * and not older than r. */
static bool victim_for(const bt_request *v, const bt_request *r) {
    return v && v != r && !v->in_flight && !sched_is_beam_child(v) && !v->step_waiting &&
           v->admit_order >= r->admit_order;
}

/* The most recently admitted sequence growth of r may preempt, or NULL. */
static bt_request *pick_victim(bt_sched *s, const bt_request *r) {
    bt_request *v = NULL;
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *c = s->slots[i];
        if (victim_for(c, r) && (!v || c->admit_order > v->admit_order))
            v = c;
    }
    return v;
}

/* Group g's shared prefix if preempting every sequence growth of r may preempt frees it (all
 * its holders are among them), counted once: at i, the lowest slot holding it; else 0. */
static int prefix_freeable(const bt_sched *s, const bt_request *g, const bt_request *r, int i) {
    int holders = 0;
    for (int j = 0; j < s->p.max_seqs; j++) {
        const bt_request *w = s->slots[j];
        if (!w || w->parent != g || w->kv_base == 0)
            continue;
        if (j < i || !victim_for(w, r))
            return 0;
        holders++;
    }
    return holders == g->n_holders ? g->kv_shared : 0;
}

/* Blocks that preempting every sequence growth of r may preempt would free: their own, and
 * the shared prefixes it would release. */
int sched_freeable_for(const bt_sched *s, const bt_request *r) {
    int n = 0;
    for (int i = 0; i < s->p.max_seqs; i++) {
        const bt_request *v = s->slots[i];
        if (!victim_for(v, r))
            continue;
        n += sched_own_blocks(v);
        if (v->kv_base > 0)
            n += prefix_freeable(s, v->parent, r, i);
    }
    return n;
}

/* Makes `need` more blocks free for r, preempting newer sequences if that frees enough (and
 * none if it would not: a preempted sequence that held nothing, admitted again and preempted
 * again at every step, kept the oldest waiting for ever). */
bool sched_reserve_blocks(bt_sched *s, bt_request *r, int need) {
    if (s->kv_blocks - s->kv_used < need &&
        s->kv_blocks - s->kv_used + sched_freeable_for(s, r) < need)
        return false;
    while (s->kv_blocks - s->kv_used < need) {
        bt_request *v = pick_victim(s, r);
        if (!v)
            return false;
        preempt(s, v);
    }
    s->kv_used += need;
    return true;
}

/* Admits queued requests while a slot and their first chunk's blocks are free. The blocks
 * are reserved only when the rows are formed, so the ones promised to requests admitted in
 * this call are counted here. The watermark is headroom for running sequences to grow into;
 * with none running it would only refuse a first chunk that fills the pool, for ever. */
static void admit(bt_sched *s) {
    int promised = 0;
    while (s->q_head && s->n_running + s->n_held < s->p.max_seqs) {
        bt_request *r = s->q_head;
        int extra = sched_extra_slots(r);
        if (s->n_running + s->n_held + 1 + extra > s->p.max_seqs)
            return;
        int32_t first_chunk = r->n_tokens < s->p.prefill_chunk ? r->n_tokens : s->p.prefill_chunk;
        int need = blocks_for(first_chunk);
        int headroom = s->n_running + s->n_held > 0 ? s->watermark : 0;
        if (s->kv_blocks - s->kv_used - promised < need + headroom)
            return;
        promised += need;
        sched_q_remove(s, r);
        sched_take_slot(s, r);
        r->slots_held = extra;
        s->n_held += extra;
        r->state = BT_REQ_RUNNING;
        r->n_cached = 0;
        r->admit_order = ++s->admit_counter;
        if (!r->t_admit)
            r->t_admit = bt_now_us();
    }
}

static int cmp_admit(const void *a, const void *b) {
    const bt_request *x = *(bt_request *const *)a, *y = *(bt_request *const *)b;
    if (x->admit_order != y->admit_order)
        return x->admit_order > y->admit_order ? 1 : -1;
    return (x->seq > y->seq) - (x->seq < y->seq); /* children of one group */
}

/* A scoring request's first row with a target: row pos predicts token pos + 1. */
static int32_t scored_row(const bt_request *r) {
    return r->p.score_from > 1 ? r->p.score_from - 1 : 0;
}

/* Adds rows [n_cached, n_cached + n) of r to the batch. */
static void add_rows(bt_sched *s, bt_request *r, int32_t n) {
    bt_sched_batch *b = &s->batch;
    for (int32_t i = 0; i < n; i++) {
        int32_t pos = r->n_cached + i;
        int k = b->n_rows++;
        b->seq[k] = r->seq;
        b->pos[k] = pos;
        b->token[k] = r->tokens[pos];
        b->want[k] = (uint8_t)(pos == r->n_tokens - 1);
        bool scored = r->p.score_prompt && pos >= scored_row(r);
        b->target[k] = scored ? r->tokens[pos + 1] : -1;
        b->n_scored += scored;
    }
    r->n_cached += n;
    r->in_flight = true;
    if (r->parent && !r->parent->t_admit)
        r->parent->t_admit = r->t_admit;
    if (!r->params_sent) {
        b->new_reqs[b->n_new++] = r;
        r->params_sent = true;
    }
}

bool bt_sched_next_batch(bt_sched *s, bt_sched_batch **out) {
    if (s->n_inflight >= s->p.max_inflight)
        return false;
    bt_sched_batch *b = &s->batch;
    b->n_rows = b->n_ops = b->n_new = b->n_scored = 0;
    sched_beam_retry(s); /* before admission: a waiting step is older than what comes in */
    admit(s);

    int n = 0;
    for (int i = 0; i < s->p.max_seqs; i++)
        if (s->slots[i])
            s->order[n++] = s->slots[i];
    qsort(s->order, (size_t)n, sizeof *s->order, cmp_admit);

    /* Groups whose shared prefix is cached fork now (their ops go with this batch). */
    for (int i = 0; i < n; i++) {
        bt_request *r = s->order[i];
        if (sched_fork_due(r))
            sched_fork_branches(s, r, false);
    }
    n = 0;
    for (int i = 0; i < s->p.max_seqs; i++)
        if (s->slots[i])
            s->order[n++] = s->slots[i];
    qsort(s->order, (size_t)n, sizeof *s->order, cmp_admit);

    /* Decode rows first (latency), spread over the micro-batches in flight. */
    /* Above one group, rounded up to the kernels' token group (BT_DECODE_GROUP): a weight row
     * is read once per group, so 6 rows cost as much as 8. Small caps are kept, so that few
     * sequences still spread over every stage. */
    int decode_cap = (s->n_running + s->p.max_inflight - 1) / s->p.max_inflight, n_decode = 0;
    if (decode_cap > BT_DECODE_GROUP)
        decode_cap = (decode_cap + BT_DECODE_GROUP - 1) / BT_DECODE_GROUP * BT_DECODE_GROUP;
    /* Never split into single rows: a second row costs almost nothing in the kernels, and
     * measured on 2 stages, 4 sequences as 2 + 2 decode 30% faster than as 4 x 1. */
    if (decode_cap < 2 && s->n_running >= 2)
        decode_cap = 2;
    /* Never below a prompt tile's rows once every stage can have that many: below it the
     * decode tiles unpack each weight block 4x as often, which costs more than the spare
     * micro-batches save (2 stages, 32 streams: 4 x 8 rows 550, 2 x 16 rows 765 tok/s,
     * over a 1 Gbit/s link as on one host). */
    if (s->n_running >= BT_PROMPT_GROUP * s->p.n_stages && decode_cap < BT_PROMPT_GROUP) {
        if (!s->told_prompt_group)
            BT_DEBUG("scheduler: %d running on %d stage(s): decode rows in micro-batches of %d "
                     "(a prompt tile), not %d",
                     s->n_running, s->p.n_stages, BT_PROMPT_GROUP, decode_cap);
        s->told_prompt_group = true;
        decode_cap = BT_PROMPT_GROUP;
    }
    for (int i = 0; i < n && n_decode < decode_cap && b->n_rows < s->p.max_batch; i++) {
        bt_request *r = s->order[i];
        if (r->state != BT_REQ_RUNNING || r->in_flight || sched_row_end(r) - r->n_cached != 1)
            continue;
        if (r->p.score_prompt && r->n_cached >= scored_row(r) && b->n_scored == BT_SCORE_ROWS)
            continue;
        int need = blocks_for(r->n_cached + 1) - blocks_for(r->n_cached);
        if (!sched_reserve_blocks(s, r, need))
            continue;
        add_rows(s, r, 1);
        n_decode++;
    }
    /* Then prefill chunks (prompts, and recomputation after preemption). */
    for (int i = 0; i < n && b->n_rows < s->p.max_batch; i++) {
        bt_request *r = s->order[i];
        if (r->state != BT_REQ_RUNNING || r->in_flight || sched_row_end(r) - r->n_cached < 2)
            continue;
        int32_t rows = sched_row_end(r) - r->n_cached;
        if (rows > s->p.prefill_chunk)
            rows = s->p.prefill_chunk;
        if (rows > s->p.max_batch - b->n_rows)
            rows = s->p.max_batch - b->n_rows;
        if (r->p.score_prompt) {
            /* Scored rows (the last stage's logits rows) are at most BT_SCORE_ROWS a batch;
             * the rows before the first scored one are not counted. */
            int32_t first = scored_row(r) > r->n_cached ? scored_row(r) : r->n_cached;
            if (rows > first - r->n_cached + BT_SCORE_ROWS - b->n_scored)
                rows = first - r->n_cached + BT_SCORE_ROWS - b->n_scored;
            /* Never a pass of one row, nor one left for later: --numerics llamacpp computes
             * attention of a lone row in another order (worker/llamacpp.h), and a score
             * must not depend on how the prompt was cut. */
            int32_t left = sched_row_end(r) - r->n_cached - rows;
            if (left == 1)
                rows--;
            if (rows < 2)
                continue;
        }
        int need = blocks_for(r->n_cached + rows) - blocks_for(r->n_cached);
        if (!sched_reserve_blocks(s, r, need))
            continue;
        add_rows(s, r, rows);
    }
    /* Nothing formed and nothing in flight to free a block: see sched_unstick. Its ops go
     * now, the rows it makes possible in the next batch; without ops, those rows now. */
    if (b->n_rows == 0 && s->n_pending == 0 && s->n_inflight == 0 && sched_unstick(s) &&
        s->n_pending == 0)
        return bt_sched_next_batch(s, out);
    memcpy(b->ops, s->pending, sizeof *b->ops * (size_t)s->n_pending);
    b->n_ops = s->n_pending;
    s->n_pending = 0;
    if (b->n_rows == 0 && b->n_ops == 0)
        return false;

    b->step = s->next_step++;
    inflight *e = &s->ring[(s->ring_head + s->n_inflight) % s->p.max_inflight];
    s->n_inflight++;
    e->step = b->step;
    e->n_rows = b->n_rows;
    e->n_want = 0;
    e->n_scored = b->n_scored;
    for (int i = 0; i < b->n_rows; i++) {
        e->seq[i] = b->seq[i];
        e->pos[i] = b->pos[i];
        e->want[i] = b->want[i];
        e->n_want += b->want[i];
        e->scored[i] = (uint8_t)(b->target[i] >= 0);
    }
    *out = b;
    return true;
}

/* Appends a sampled token to r and ends it when it is done. */
static void accept_token(bt_sched *s, bt_request *r, int32_t token, float logprob, uint32_t n_top,
                         const int32_t *top_token, const float *top_logprob) {
    if (!r->t_first_token)
        r->t_first_token = bt_now_us();
    if ((!r->p.ignore_eos && s->p.is_eog && s->p.is_eog(token, s->p.eog_ctx)) ||
        bt_sampler_is_stop_token(&r->p.sampling, token)) {
        sched_finish(s, r, BT_FINISH_STOP);
        return;
    }
    int32_t k = r->n_top ? r->p.sampling.top_logprobs : 0;
    if (k > 0) {
        uint32_t m = n_top < (uint32_t)k ? n_top : (uint32_t)k;
        r->n_top[r->n_tokens] = (uint8_t)m;
        for (uint32_t i = 0; i < m; i++) {
            r->top_token[(size_t)r->n_tokens * (size_t)k + i] = top_token[i];
            r->top_logprob[(size_t)r->n_tokens * (size_t)k + i] = top_logprob[i];
        }
    }
    r->logprobs[r->n_tokens] = logprob;
    r->tokens[r->n_tokens++] = token;
    r->n_generated++;
    r->logprob_sum += logprob;
    if (r->p.on_token)
        r->p.on_token(r, token, logprob, r->p.ctx);
    if (sched_text_push(s, r, token))
        sched_finish(s, r, BT_FINISH_STOP);
    else if (r->n_generated >= r->p.max_tokens)
        sched_finish(s, r, BT_FINISH_LENGTH);
    else if (r->n_tokens >= s->p.n_ctx || r->n_tokens >= r->cap)
        sched_finish(s, r, BT_FINISH_CONTEXT);
}

bt_status bt_sched_on_results(bt_sched *s, uint64_t step, int n, const int32_t *seq,
                              const int32_t *token, const float *logprob, bt_error *err) {
    bt_sched_results res = {.step = step, .n = n, .seq = seq, .token = token, .logprob = logprob};
    return bt_sched_on_results_top(s, &res, err);
}

bt_status bt_sched_on_results_top(bt_sched *s, const bt_sched_results *res, bt_error *err) {
    uint64_t step = res->step;
    int n = res->n;
    const int32_t *seq = res->seq;
    if (s->n_inflight == 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults for step %llu, none in flight",
                            (unsigned long long)step);
    inflight *e = &s->ring[s->ring_head];
    if (e->step != step)
        return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults for step %llu, expected %llu",
                            (unsigned long long)step, (unsigned long long)e->step);
    if (n != e->n_want)
        return bt_error_set(err, BT_ERR_PROTOCOL, "SampleResults step %llu: %d results for %d rows",
                            (unsigned long long)step, n, e->n_want);
    if (res->n_scored != e->n_scored || (e->n_scored > 0 && !res->scored_logprob))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults step %llu: %d target_logprob for %d scored rows",
                            (unsigned long long)step, res->n_scored, e->n_scored);
    for (int i = 0, k = 0; i < e->n_rows; i++) {
        if (!e->want[i])
            continue;
        if (seq[k] != e->seq[i])
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "SampleResults step %llu: result %d is for seq %d, expected %d",
                                (unsigned long long)step, k, seq[k], e->seq[i]);
        k++;
    }
    s->ring_head = (s->ring_head + 1) % s->p.max_inflight;
    s->n_inflight--;
    /* Everything in the step has landed: its sequences may be scheduled again. */
    for (int i = 0; i < e->n_rows; i++)
        if (s->slots[e->seq[i]])
            s->slots[e->seq[i]]->in_flight = false;
    /* Scored rows: row at position pos predicts token pos + 1 (request.h, score_prompt). */
    for (int i = 0, k = 0; i < e->n_rows; i++) {
        if (!e->scored[i])
            continue;
        bt_request *r = s->slots[e->seq[i]];
        float lp = res->scored_logprob[k++];
        if (r && r->p.score_prompt && r->state == BT_REQ_RUNNING)
            r->logprobs[e->pos[i] + 1] = lp;
    }
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        uint32_t nt = res->n_top ? res->n_top[k] : 0;
        const int32_t *tt = res->top_token ? res->top_token + off : NULL;
        const float *tl = res->top_logprob ? res->top_logprob + off : NULL;
        off += nt;
        bt_request *r = s->slots[seq[k]];
        if (!r || r->state != BT_REQ_RUNNING)
            continue;
        if (r->beam || sched_is_beam_child(r)) {
            bt_status st = sched_beam_result(s, r, tt ? nt : 0, tt, tl, err);
            if (st != BT_OK)
                return st;
            continue;
        }
        if (r->cancel_pending) {
            sched_finish(s, r, BT_FINISH_CANCELLED);
            continue;
        }
        accept_token(s, r, res->token[k], res->logprob[k], tt ? nt : 0, tt, tl);
    }
    /* Cancelled sequences whose step carried no sample (mid-prompt chunk), and scoring
     * requests whose last rows landed. */
    for (int i = 0; i < e->n_rows; i++) {
        bt_request *r = s->slots[e->seq[i]];
        if (!r || r->in_flight)
            continue;
        bt_request *g = r->parent;
        if (g && g->beam && g->cancel_pending && g->state != BT_REQ_DONE && !sched_any_in_flight(g))
            sched_group_end(s, g, BT_FINISH_CANCELLED);
        else if (r->cancel_pending)
            sched_finish(s, r, BT_FINISH_CANCELLED);
        else if (r->p.score_prompt && r->state == BT_REQ_RUNNING && r->n_cached == sched_row_end(r))
            sched_finish(s, r, BT_FINISH_LENGTH); /* every prompt token is scored */
    }
    return BT_OK;
}

int bt_sched_n_inflight(const bt_sched *s) {
    return s->n_inflight;
}
int bt_sched_n_active(const bt_sched *s) {
    return s->n_queued + s->n_running;
}
int bt_sched_n_running(const bt_sched *s) {
    return s->n_running;
}
int bt_sched_kv_blocks_used(const bt_sched *s) {
    return s->kv_used;
}
int bt_sched_kv_blocks(const bt_sched *s) {
    return s->kv_blocks;
}
uint64_t bt_sched_n_preemptions(const bt_sched *s) {
    return s->n_preempt;
}
