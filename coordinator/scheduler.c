/* scheduler.c - continuous batching, KV block accounting and preemption (see scheduler.h). */
#include "scheduler.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

typedef struct inflight {
    uint64_t step;
    int n_rows, n_want;
    int32_t *seq;  /* [max_batch] */
    uint8_t *want; /* [max_batch] */
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
};

static int blocks_for(int32_t tokens) {
    return (tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
}

bt_status bt_sched_new(const bt_sched_params *p, bt_sched **out, bt_error *err) {
    *out = NULL;
    if (p->max_seqs < 1 || p->kv_tokens < BT_KV_BLOCK_TOKENS || p->max_batch < 1 ||
        p->prefill_chunk < 1 || p->max_inflight < 1 || p->n_ctx < 2 || p->n_ctx > p->kv_tokens)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "scheduler: max_seqs %d, kv_tokens %d, max_batch %d, prefill_chunk "
                            "%d, max_inflight %d, n_ctx %d",
                            p->max_seqs, p->kv_tokens, p->max_batch, p->prefill_chunk,
                            p->max_inflight, p->n_ctx);
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
    b->prefill = calloc(B, 1);
    b->ops = calloc(2 * S, sizeof *b->ops);
    b->new_reqs = calloc(S, sizeof *b->new_reqs);
    bool ok = s->slots && s->order && s->pending && s->ring && b->seq && b->pos && b->token &&
              b->want && b->prefill && b->ops && b->new_reqs;
    for (int i = 0; ok && i < p->max_inflight; i++) {
        s->ring[i].seq = calloc(B, sizeof *s->ring[i].seq);
        s->ring[i].want = calloc(B, 1);
        ok = s->ring[i].seq && s->ring[i].want;
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
        free(s->ring[i].want);
    }
    free(s->ring);
    free(s->slots);
    free(s->order);
    free(s->pending);
    free(s->batch.seq);
    free(s->batch.pos);
    free(s->batch.token);
    free(s->batch.want);
    free(s->batch.prefill);
    free(s->batch.ops);
    free(s->batch.new_reqs);
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

static void q_remove(bt_sched *s, bt_request *r) {
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

static void push_op(bt_sched *s, bt_sched_op_kind kind, int32_t seq, int32_t dst) {
    assert(s->n_pending < 2 * s->p.max_seqs);
    s->pending[s->n_pending++] = (bt_sched_op){.kind = kind, .seq = seq, .dst = dst};
}

/* Releases r's slot and KV (a FREE op tells the stages). */
static void release(bt_sched *s, bt_request *r) {
    if (r->seq < 0)
        return;
    s->kv_used -= blocks_for(r->n_cached);
    push_op(s, BT_SCHED_OP_FREE, r->seq, 0);
    s->slots[r->seq] = NULL;
    s->n_running--;
    r->seq = -1;
    r->n_cached = 0;
    r->params_sent = false;
}

static void finish(bt_sched *s, bt_request *r, bt_finish why) {
    if (r->state == BT_REQ_QUEUED)
        q_remove(s, r);
    release(s, r);
    r->state = BT_REQ_DONE;
    r->finish = why;
    r->t_done = bt_now_us();
    if (r->p.on_done)
        r->p.on_done(r, r->p.ctx);
}

void bt_sched_submit(bt_sched *s, bt_request *r) {
    r->state = BT_REQ_QUEUED;
    r->seq = -1;
    q_push_back(s, r);
    if (r->p.max_tokens == 0)
        finish(s, r, BT_FINISH_LENGTH);
}

void bt_sched_cancel(bt_sched *s, bt_request *r) {
    if (r->state == BT_REQ_DONE)
        return;
    if (r->in_flight) {
        r->cancel_pending = true;
        return;
    }
    finish(s, r, BT_FINISH_CANCELLED);
}

void bt_sched_fail_all(bt_sched *s, const bt_error *err) {
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i];
        if (!r)
            continue;
        r->in_flight = false;
        r->error = *err;
        finish(s, r, BT_FINISH_ERROR);
    }
    while (s->q_head) {
        bt_request *r = s->q_head;
        r->error = *err;
        finish(s, r, BT_FINISH_ERROR);
    }
    s->n_inflight = 0;
    s->n_pending = 0;
}

static void preempt(bt_sched *s, bt_request *r) {
    release(s, r);
    r->state = BT_REQ_QUEUED;
    r->n_preempted++;
    s->n_preempt++;
    q_push_front(s, r);
}

/* The most recently admitted running sequence other than `keep` that is not in flight. */
static bt_request *pick_victim(bt_sched *s, const bt_request *keep) {
    bt_request *v = NULL;
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i];
        if (r && r != keep && !r->in_flight && (!v || r->admit_order > v->admit_order))
            v = r;
    }
    return v;
}

/* Makes `need` more blocks free for r, preempting newer sequences if that helps. */
static bool reserve_blocks(bt_sched *s, bt_request *r, int need) {
    while (s->kv_blocks - s->kv_used < need) {
        bt_request *v = pick_victim(s, r);
        if (!v || v->admit_order < r->admit_order)
            return false; /* never preempt an older sequence for a newer one */
        preempt(s, v);
    }
    s->kv_used += need;
    return true;
}

/* Admits queued requests while a slot and their first chunk's blocks are free. The blocks
 * are reserved only when the rows are formed, so the ones promised to requests admitted in
 * this call are counted here. */
static void admit(bt_sched *s) {
    int promised = 0;
    while (s->q_head && s->n_running < s->p.max_seqs) {
        bt_request *r = s->q_head;
        int32_t first_chunk = r->n_tokens < s->p.prefill_chunk ? r->n_tokens : s->p.prefill_chunk;
        int need = blocks_for(first_chunk);
        if (s->kv_blocks - s->kv_used - promised < need + s->watermark)
            return;
        promised += need;
        int slot = 0;
        while (s->slots[slot])
            slot++;
        q_remove(s, r);
        s->slots[slot] = r;
        s->n_running++;
        r->seq = slot;
        r->state = BT_REQ_RUNNING;
        r->n_cached = 0;
        r->admit_order = ++s->admit_counter;
        if (!r->t_admit)
            r->t_admit = bt_now_us();
    }
}

static int cmp_admit(const void *a, const void *b) {
    const bt_request *x = *(bt_request *const *)a, *y = *(bt_request *const *)b;
    return (x->admit_order > y->admit_order) - (x->admit_order < y->admit_order);
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
        b->prefill[k] = (uint8_t)(pos < r->n_prompt);
    }
    r->n_cached += n;
    r->in_flight = true;
    if (!r->params_sent) {
        b->new_reqs[b->n_new++] = r;
        r->params_sent = true;
    }
}

bool bt_sched_next_batch(bt_sched *s, bt_sched_batch **out) {
    if (s->n_inflight >= s->p.max_inflight)
        return false;
    bt_sched_batch *b = &s->batch;
    b->n_rows = b->n_ops = b->n_new = 0;
    admit(s);

    int n = 0;
    for (int i = 0; i < s->p.max_seqs; i++)
        if (s->slots[i])
            s->order[n++] = s->slots[i];
    qsort(s->order, (size_t)n, sizeof *s->order, cmp_admit);

    /* Decode rows first (latency), spread over the micro-batches in flight. */
    int decode_cap = (s->n_running + s->p.max_inflight - 1) / s->p.max_inflight, n_decode = 0;
    for (int i = 0; i < n && n_decode < decode_cap && b->n_rows < s->p.max_batch; i++) {
        bt_request *r = s->order[i];
        if (r->state != BT_REQ_RUNNING || r->in_flight || r->n_tokens - r->n_cached != 1)
            continue;
        int need = blocks_for(r->n_cached + 1) - blocks_for(r->n_cached);
        if (!reserve_blocks(s, r, need))
            continue;
        add_rows(s, r, 1);
        n_decode++;
    }
    /* Then prefill chunks (prompts, and recomputation after preemption). */
    for (int i = 0; i < n && b->n_rows < s->p.max_batch; i++) {
        bt_request *r = s->order[i];
        if (r->state != BT_REQ_RUNNING || r->in_flight || r->n_tokens - r->n_cached < 2)
            continue;
        int32_t rows = r->n_tokens - r->n_cached;
        if (rows > s->p.prefill_chunk)
            rows = s->p.prefill_chunk;
        if (rows > s->p.max_batch - b->n_rows)
            rows = s->p.max_batch - b->n_rows;
        int need = blocks_for(r->n_cached + rows) - blocks_for(r->n_cached);
        if (!reserve_blocks(s, r, need))
            continue;
        add_rows(s, r, rows);
    }
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
    for (int i = 0; i < b->n_rows; i++) {
        e->seq[i] = b->seq[i];
        e->want[i] = b->want[i];
        e->n_want += b->want[i];
    }
    *out = b;
    return true;
}

/* Appends a sampled token to r and ends it when it is done. */
static void accept_token(bt_sched *s, bt_request *r, int32_t token, float logprob) {
    if (!r->t_first_token)
        r->t_first_token = bt_now_us();
    if (!r->p.ignore_eos && s->p.is_eog && s->p.is_eog(token, s->p.eog_ctx)) {
        finish(s, r, BT_FINISH_STOP);
        return;
    }
    r->logprobs[r->n_tokens] = logprob;
    r->tokens[r->n_tokens++] = token;
    r->n_generated++;
    r->logprob_sum += logprob;
    if (r->p.on_token)
        r->p.on_token(r, token, logprob, r->p.ctx);
    if (r->n_generated >= r->p.max_tokens)
        finish(s, r, BT_FINISH_LENGTH);
    else if (r->n_tokens >= s->p.n_ctx || r->n_tokens >= r->cap)
        finish(s, r, BT_FINISH_CONTEXT);
}

bt_status bt_sched_on_results(bt_sched *s, uint64_t step, int n, const int32_t *seq,
                              const int32_t *token, const float *logprob, bt_error *err) {
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
    for (int k = 0; k < n; k++) {
        bt_request *r = s->slots[seq[k]];
        if (!r || r->state != BT_REQ_RUNNING)
            continue;
        if (r->cancel_pending) {
            finish(s, r, BT_FINISH_CANCELLED);
            continue;
        }
        accept_token(s, r, token[k], logprob[k]);
    }
    /* Cancelled sequences whose step carried no sample (mid-prompt chunk). */
    for (int i = 0; i < e->n_rows; i++) {
        bt_request *r = s->slots[e->seq[i]];
        if (r && r->cancel_pending && !r->in_flight)
            finish(s, r, BT_FINISH_CANCELLED);
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
uint64_t bt_sched_n_preemptions(const bt_sched *s) {
    return s->n_preempt;
}
