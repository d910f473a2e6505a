/* scheduler.c - continuous batching, KV block accounting and preemption (see scheduler.h). */
#include "scheduler.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "beam.h"
#include "request_impl.h"
#include "clock.h"

#define BT_DECODE_GROUP 4 /* tokens per weight pass in bt_matmul (worker/kernels) */
#include "detok.h"

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

    int n_held; /* slots reserved for children of admitted groups, not yet forked */
    char *tbuf; /* [tcap] detokenized bytes of one token */
    char *sbuf; /* [tcap + BT_STOP_MAX_BYTES] text made final by one token */
    size_t tcap;
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
    b->ops = calloc(2 * S, sizeof *b->ops);
    b->new_reqs = calloc(S, sizeof *b->new_reqs);
    s->tcap = p->vocab ? bt_detok_out_max(p->vocab) + 8 : 8;
    s->tbuf = malloc(s->tcap);
    s->sbuf = malloc(s->tcap + BT_STOP_MAX_BYTES);
    bool ok = s->slots && s->order && s->pending && s->ring && b->seq && b->pos && b->token &&
              b->want && b->ops && b->new_reqs && s->tbuf && s->sbuf;
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

static bool is_beam_child(const bt_request *r) {
    return r->parent && r->parent->beam;
}

/* Slots a group still needs for children beyond its own sequence. */
static int extra_slots(const bt_request *r) {
    if (r->parent || r->forked)
        return 0;
    if (r->beam)
        return r->beam->width - 1;
    return r->n_branch > 1 ? r->n_branch - 1 : 0;
}

static int take_slot(bt_sched *s, bt_request *r) {
    int slot = 0;
    while (s->slots[slot])
        slot++;
    s->slots[slot] = r;
    s->n_running++;
    r->seq = slot;
    return slot;
}

/* Returns the group's reserved slots that no child took. */
static void drop_held(bt_sched *s, bt_request *g) {
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
static void release(bt_sched *s, bt_request *r) {
    if (r->seq < 0)
        return;
    s->kv_used -= blocks_for(r->n_cached) - r->kv_base / BT_KV_BLOCK_TOKENS;
    push_op(s, BT_SCHED_OP_FREE, r->seq, 0);
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

/* ---- text ---- */

static void text_append(bt_request *r, const char *t, size_t n) {
    if (n == 0)
        return;
    if (r->n_text + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < r->n_text + n + 1)
            cap *= 2;
        char *p = realloc(r->text, cap);
        if (!p)
            return; /* the text is lost, the tokens are not */
        r->text = p;
        r->text_cap = cap;
    }
    memcpy(r->text + r->n_text, t, n);
    r->n_text += n;
    r->text[r->n_text] = '\0';
    if (r->p.on_text)
        r->p.on_text(r, t, n, r->p.ctx);
}

static void text_begin(bt_sched *s, bt_request *r) {
    r->n_text = 0;
    if (r->text)
        r->text[0] = '\0';
    if (s->p.vocab)
        bt_detok_init(&r->detok, s->p.vocab, false);
    bt_stop_init(&r->stop, r->p.stop, r->p.n_stop);
}

/* Feeds token's text through the detokenizer and the stop strings. True: a stop string
 * completed. */
static bool text_push(bt_sched *s, bt_request *r, int32_t token) {
    if (!s->p.vocab)
        return false;
    size_t n = 0, m = 0;
    if (bt_detok_push(&r->detok, token, s->tbuf, s->tcap, &n) != BT_OK)
        return false;
    bool hit = bt_stop_push(&r->stop, s->tbuf, n, s->sbuf, &m);
    text_append(r, s->sbuf, m);
    return hit;
}

/* The completion ended without a stop string: what is held back becomes final. */
static void text_end(bt_sched *s, bt_request *r) {
    if (!s->p.vocab || r->stop.matched)
        return;
    size_t n = 0, m = 0;
    if (bt_detok_flush(&r->detok, s->tbuf, s->tcap, &n) == BT_OK && n) {
        if (bt_stop_push(&r->stop, s->tbuf, n, s->sbuf, &m)) {
            text_append(r, s->sbuf, m);
            return;
        }
        text_append(r, s->sbuf, m);
    }
    bt_stop_flush(&r->stop, s->sbuf, &m);
    text_append(r, s->sbuf, m);
}

/* The whole text of a finished hypothesis (no callbacks). */
static void text_whole(bt_sched *s, bt_request *r) {
    bt_request_text_fn fn = r->p.on_text;
    r->p.on_text = NULL;
    text_begin(s, r);
    for (int32_t i = r->n_prompt; i < r->n_tokens; i++)
        text_push(s, r, r->tokens[i]);
    text_end(s, r);
    r->p.on_text = fn;
}

/* ---- groups ---- */

static int cmp_score(const void *a, const void *b) {
    const bt_request *x = *(bt_request *const *)a, *y = *(bt_request *const *)b;
    /* A cancelled completion is unfinished: every finished one ranks before it. */
    bool xc = x->finish == BT_FINISH_CANCELLED, yc = y->finish == BT_FINISH_CANCELLED;
    if (xc != yc)
        return xc ? 1 : -1;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static void group_end(bt_sched *s, bt_request *g, bt_finish why);

static void finish(bt_sched *s, bt_request *r, bt_finish why) {
    if (!r->parent && !r->forked && (r->beam || r->n_branch > 1)) {
        group_end(s, r, why); /* a group that never forked */
        return;
    }
    if (r->state == BT_REQ_QUEUED)
        q_remove(s, r);
    release(s, r);
    r->state = BT_REQ_DONE;
    r->finish = why;
    r->score = r->logprob_sum;
    r->t_done = bt_now_us();
    if (why != BT_FINISH_CANCELLED && why != BT_FINISH_ERROR)
        text_end(s, r);
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
        group_end(s, g, BT_FINISH_NONE);
}

/* Ends group g: frees what it and its children still hold, picks its completions and calls
 * on_done. why NONE: the reason of the best completion. */
static void group_end(bt_sched *s, bt_request *g, bt_finish why) {
    if (g->state == BT_REQ_QUEUED)
        q_remove(s, g);
    drop_held(s, g);
    release(s, g);
    for (int i = 0; i < g->n_branch; i++) {
        bt_request *c = g->branch[i];
        if (c->state == BT_REQ_QUEUED)
            q_remove(s, c);
        if (c->seq >= 0 || c->state != BT_REQ_DONE) {
            release(s, c);
            c->state = BT_REQ_DONE;
            if (!g->beam) {
                c->finish = why;
                c->score = c->logprob_sum;
            }
        }
    }
    if (g->kv_shared) {
        s->kv_used -= g->kv_shared;
        g->kv_shared = 0;
    }
    g->n_holders = 0;
    g->n_live = 0;
    g->n_out = 0;
    if (g->beam) {
        int W = g->beam->width;
        for (int i = 0; i < g->beam->n_hyp; i++)
            g->out[g->n_out++] = g->branch[W + i];
    } else if (g->forked) {
        for (int i = 0; i < g->n_branch; i++)
            g->out[g->n_out++] = g->branch[i];
    }
    if (g->beam || g->p.best_of > g->p.n)
        qsort(g->out, (size_t)g->n_out, sizeof *g->out, cmp_score);
    if (g->n_out > g->p.n)
        g->n_out = g->p.n;
    g->state = BT_REQ_DONE;
    g->finish = why != BT_FINISH_NONE ? why : g->n_out ? g->out[0]->finish : BT_FINISH_ERROR;
    if (g->n_out) {
        g->n_generated = g->out[0]->n_generated;
        g->logprob_sum = g->out[0]->logprob_sum;
        g->score = g->out[0]->score;
        if (!g->t_first_token)
            g->t_first_token = g->out[0]->t_first_token;
    }
    g->t_done = bt_now_us();
    if (g->p.on_done)
        g->p.on_done(g, g->p.ctx);
}

void bt_sched_submit(bt_sched *s, bt_request *r) {
    r->state = BT_REQ_QUEUED;
    r->seq = -1;
    text_begin(s, r);
    q_push_back(s, r);
    if (1 + extra_slots(r) > s->p.max_seqs) {
        bt_error_set(&r->error, BT_ERR_LIMIT, "%s %d needs %d sequence slots, the cluster has %d",
                     r->beam ? "beam_width" : "best_of", r->beam ? r->beam->width : r->n_branch,
                     1 + extra_slots(r), s->p.max_seqs);
        finish(s, r, BT_FINISH_ERROR);
        return;
    }
    if (r->p.max_tokens == 0)
        finish(s, r, BT_FINISH_LENGTH);
}

static bool any_in_flight(const bt_request *g) {
    if (g->in_flight)
        return true;
    for (int i = 0; i < g->n_branch; i++)
        if (g->branch[i]->seq >= 0 && g->branch[i]->in_flight)
            return true;
    return false;
}

void bt_sched_cancel(bt_sched *s, bt_request *r) {
    if (r->state == BT_REQ_DONE)
        return;
    if (r->forked) {
        if (r->beam) {
            r->cancel_pending = true;
            if (!any_in_flight(r))
                group_end(s, r, BT_FINISH_CANCELLED);
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
                finish(s, c, BT_FINISH_CANCELLED);
        }
        return;
    }
    if (r->in_flight) {
        r->cancel_pending = true;
        return;
    }
    finish(s, r, BT_FINISH_CANCELLED);
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

void bt_sched_fail_all(bt_sched *s, const bt_error *err) {
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i];
        if (!r)
            continue;
        r->in_flight = false;
        r->error = *err;
        if (is_beam_child(r)) {
            r->parent->error = *err;
            for (int k = 0; k < r->parent->n_branch; k++)
                r->parent->branch[k]->in_flight = false;
            group_end(s, r->parent, BT_FINISH_ERROR);
        } else {
            finish(s, r, BT_FINISH_ERROR);
        }
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
    drop_held(s, r);
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
        if (r && r != keep && !r->in_flight && !is_beam_child(r) &&
            (!v || r->admit_order > v->admit_order))
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
    while (s->q_head && s->n_running + s->n_held < s->p.max_seqs) {
        bt_request *r = s->q_head;
        int extra = extra_slots(r);
        if (s->n_running + s->n_held + 1 + extra > s->p.max_seqs)
            return;
        int32_t first_chunk = r->n_tokens < s->p.prefill_chunk ? r->n_tokens : s->p.prefill_chunk;
        int need = blocks_for(first_chunk);
        if (s->kv_blocks - s->kv_used - promised < need + s->watermark)
            return;
        promised += need;
        q_remove(s, r);
        take_slot(s, r);
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

/* End of the rows to compute: a group that forks stops before the prompt's last token. */
static int32_t row_end(const bt_request *r) {
    return r->fork_at >= 0 && !r->forked ? r->fork_at : r->n_tokens;
}

/* Sets up child c as a copy of src's tokens, cached up to n_cached. */
static void child_start(bt_sched *s, bt_request *g, bt_request *c, const bt_request *src) {
    memcpy(c->tokens, src->tokens, sizeof *c->tokens * (size_t)src->n_tokens);
    memcpy(c->logprobs, src->logprobs, sizeof *c->logprobs * (size_t)src->n_tokens);
    c->n_prompt = g->n_prompt;
    c->n_tokens = src->n_tokens;
    c->n_cached = src->n_cached;
    c->n_generated = src->n_generated;
    c->logprob_sum = src->logprob_sum;
    c->kv_base = 0;
    c->state = BT_REQ_RUNNING;
    c->finish = BT_FINISH_NONE;
    c->in_flight = c->cancel_pending = false;
    c->params_sent = false;
    c->admit_order = g->admit_order;
    c->t_submit = g->t_submit;
    c->t_admit = g->t_admit;
    c->t_first_token = src->t_first_token;
    c->n_preempted = 0;
    text_begin(s, c);
}

/* n/best_of: the group's prefix is cached; its branches take over (see scheduler.h). False
 * when the copy-on-write blocks cannot be reserved yet. */
static bool fork_branches(bt_sched *s, bt_request *g) {
    int32_t at = g->n_cached;
    int full = at / BT_KV_BLOCK_TOKENS, partial = blocks_for(at) - full;
    if (!reserve_blocks(s, g, (g->n_branch - 1) * partial))
        return false;
    g->kv_shared = full;
    g->n_holders = full > 0 ? g->n_branch : 0;
    for (int i = 0; i < g->n_branch; i++) {
        bt_request *c = g->branch[i];
        child_start(s, g, c, g);
        c->kv_base = full * BT_KV_BLOCK_TOKENS;
        if (i == 0) {
            c->seq = g->seq;
            s->slots[g->seq] = c;
        } else {
            take_slot(s, c);
            s->n_held--;
            g->slots_held--;
            if (at > 0)
                push_op(s, BT_SCHED_OP_FORK, g->seq, c->seq);
        }
    }
    g->seq = -1;
    g->n_cached = 0;
    g->forked = true;
    g->n_live = g->n_branch;
    return true;
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

    /* Groups whose shared prefix is cached fork now (their ops go with this batch). */
    for (int i = 0; i < n; i++) {
        bt_request *r = s->order[i];
        if (r->fork_at >= 0 && !r->forked && !r->in_flight && r->state == BT_REQ_RUNNING &&
            r->n_cached == r->fork_at)
            fork_branches(s, r);
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
    for (int i = 0; i < n && n_decode < decode_cap && b->n_rows < s->p.max_batch; i++) {
        bt_request *r = s->order[i];
        if (r->state != BT_REQ_RUNNING || r->in_flight || row_end(r) - r->n_cached != 1)
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
        if (r->state != BT_REQ_RUNNING || r->in_flight || row_end(r) - r->n_cached < 2)
            continue;
        int32_t rows = row_end(r) - r->n_cached;
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
static void accept_token(bt_sched *s, bt_request *r, int32_t token, float logprob, uint32_t n_top,
                         const int32_t *top_token, const float *top_logprob) {
    if (!r->t_first_token)
        r->t_first_token = bt_now_us();
    if (!r->p.ignore_eos && s->p.is_eog && s->p.is_eog(token, s->p.eog_ctx)) {
        finish(s, r, BT_FINISH_STOP);
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
    if (text_push(s, r, token))
        finish(s, r, BT_FINISH_STOP);
    else if (r->n_generated >= r->p.max_tokens)
        finish(s, r, BT_FINISH_LENGTH);
    else if (r->n_tokens >= s->p.n_ctx || r->n_tokens >= r->cap)
        finish(s, r, BT_FINISH_CONTEXT);
}

/* ---- beams ---- */

static bool beam_is_eog(int32_t token, void *ctx) {
    const bt_sched *s = ctx;
    return s->p.is_eog(token, s->p.eog_ctx);
}

/* Offers c (cumulative cum at generated length len) as a finished hypothesis. */
static void beam_hyp(bt_sched *s, bt_request *g, const bt_request *src, double cum, int32_t len,
                     bt_finish why) {
    bt_beam *b = g->beam;
    double score = bt_beam_score(b, cum, len);
    int slot = bt_beam_hyp_add(b, score);
    if (slot < 0)
        return;
    bt_request *h = g->branch[b->width + slot];
    child_start(s, g, h, src);
    h->n_cached = 0;
    h->state = BT_REQ_DONE;
    h->index = slot;
    h->logprob_sum = (float)cum;
    h->score = score;
    h->finish = why;
    h->t_done = bt_now_us();
    text_whole(s, h);
}

/* Ends beam group g: offers the live beams as hypotheses when it ran out of length. */
static void beam_end(bt_sched *s, bt_request *g, bt_finish live_why) {
    if (live_why != BT_FINISH_NONE)
        for (int i = 0; i < g->n_live; i++) {
            bt_request *r = g->live[i];
            beam_hyp(s, g, r, r->logprob_sum, r->n_generated, live_why);
        }
    group_end(s, g, BT_FINISH_NONE);
}

/* A beam group fails: every live beam is freed. */
static void beam_fail(bt_sched *s, bt_request *g, bt_status st, const char *what) {
    bt_error_set(&g->error, st, "%s", what);
    group_end(s, g, BT_FINISH_ERROR);
}

/* Every live beam of g has reported its candidates: one step of the search. */
static void beam_step(bt_sched *s, bt_request *g) {
    bt_beam *b = g->beam;
    int W = b->width, nl = g->n_live;
    double cum[BT_BEAM_MAX];
    for (int i = 0; i < nl; i++)
        cum[i] = g->live[i] == g ? 0.0 : (double)g->live[i]->logprob_sum;
    int32_t len = g->live[0]->n_tokens - g->n_prompt; /* generated so far, all beams */
    bt_beam_cand keep[BT_BEAM_MAX], fin[BT_BEAM_MAX];
    int nk, nf;
    bool use_eog = !g->p.ignore_eos && s->p.is_eog;
    bt_beam_select(b, nl, cum, use_eog ? beam_is_eog : NULL, s, keep, &nk, fin, &nf);
    for (int i = 0; i < BT_BEAM_MAX; i++)
        b->have[i] = false;
    for (int i = 0; i < nf; i++) {
        bt_request *p = g->live[fin[i].beam];
        beam_hyp(s, g, p, fin[i].cum, len + 1, BT_FINISH_STOP);
    }
    /* Parents without a kept child are freed first: their slots and records are reused. */
    int n_child[BT_BEAM_MAX] = {0};
    bool busy[BT_BEAM_MAX] = {false}; /* records in use after this step */
    for (int i = 0; i < nk; i++)
        n_child[keep[i].beam]++;
    for (int i = 0; i < nl; i++) {
        bt_request *p = g->live[i];
        if (p == g)
            continue;
        if (n_child[i] == 0) {
            release(s, p);
            p->state = BT_REQ_DONE;
            g->slots_held++;
            s->n_held++;
        } else {
            busy[p->index] = true;
        }
    }
    /* Every fork is charged its parent's length (all beams have the same). */
    int n_forks = 0;
    bool first[BT_BEAM_MAX] = {false};
    for (int i = 0; i < nk; i++) {
        if (first[keep[i].beam])
            n_forks++; /* the first child of each parent keeps the parent's sequence */
        first[keep[i].beam] = true;
    }
    if (nk > 0 && !reserve_blocks(s, g, n_forks * blocks_for(g->live[0]->n_cached))) {
        beam_fail(s, g, BT_ERR_LIMIT,
                  "beam search: no KV blocks left for a new beam (raise --kv-tokens)");
        return;
    }
    bt_request *next[BT_BEAM_MAX];
    for (int i = 0; i < BT_BEAM_MAX; i++)
        first[i] = false;
    for (int i = 0; i < nk; i++) {
        int pi = keep[i].beam;
        bt_request *p = g->live[pi];
        if (!first[pi] && p != g) {
            first[pi] = true;
            next[i] = p; /* continues on the parent's sequence, appended below */
            continue;
        }
        int ri = 0;
        while (ri < W && busy[ri])
            ri++;
        assert(ri < W);
        busy[ri] = true;
        bt_request *c = g->branch[ri];
        child_start(s, g, c, p);
        if (!first[pi]) {
            /* the prompt sequence itself: the first child takes it over */
            first[pi] = true;
            c->seq = g->seq;
            s->slots[g->seq] = c;
            c->params_sent = g->params_sent;
        } else {
            take_slot(s, c);
            s->n_held--;
            g->slots_held--;
            push_op(s, BT_SCHED_OP_FORK, p->seq, c->seq);
        }
        next[i] = c;
    }
    if (g->seq >= 0 && s->slots[g->seq] != g) { /* the prompt sequence was taken over */
        g->seq = -1;
        g->n_cached = 0;
    }
    /* Append each kept token (forks above copied their parent before this). */
    for (int i = 0; i < nk; i++) {
        bt_request *c = next[i];
        c->logprobs[c->n_tokens] = keep[i].logprob;
        c->tokens[c->n_tokens++] = keep[i].token;
        c->n_generated++;
        c->logprob_sum = (float)keep[i].cum;
        if (!c->t_first_token)
            c->t_first_token = bt_now_us();
        c->index = i;
    }
    g->forked = true;
    if (!g->t_first_token)
        g->t_first_token = bt_now_us();
    for (int i = 0; i < nk; i++)
        g->live[i] = next[i];
    g->n_live = nk;
    /* Record indices must follow the records, not the live order. */
    for (int i = 0; i < nk; i++)
        for (int ri = 0; ri < W; ri++)
            if (g->branch[ri] == next[i])
                next[i]->index = ri;
    if (nk == 0) {
        beam_end(s, g, BT_FINISH_NONE);
        return;
    }
    int32_t new_len = len + 1;
    if (new_len >= g->p.max_tokens) {
        beam_end(s, g, BT_FINISH_LENGTH);
        return;
    }
    if (next[0]->n_tokens >= s->p.n_ctx || next[0]->n_tokens >= next[0]->cap) {
        beam_end(s, g, BT_FINISH_CONTEXT);
        return;
    }
    if (bt_beam_is_done(b, keep[0].cum, new_len))
        beam_end(s, g, BT_FINISH_NONE);
}

/* Position of beam sequence r among its group's live beams, or -1. */
static int live_index(const bt_request *g, const bt_request *r) {
    for (int i = 0; i < g->n_live; i++)
        if (g->live[i] == r)
            return i;
    return -1;
}

/* A beam's candidates arrived. */
static bt_status beam_result(bt_sched *s, bt_request *r, uint32_t n_top, const int32_t *tok,
                             const float *lp, bt_error *err) {
    bt_request *g = r->beam ? r : r->parent;
    bt_beam *b = g->beam;
    if (r == g) {
        g->n_live = 1;
        g->live[0] = g;
    }
    int i = live_index(g, r);
    if (i < 0)
        return BT_OK;
    if (n_top == 0)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "SampleResults: beam seq %d has no top logprobs (want %d)", r->seq,
                            2 * b->width);
    int m = n_top < (uint32_t)(2 * b->width) ? (int)n_top : 2 * b->width;
    b->n_cand[i] = m;
    for (int k = 0; k < m; k++) {
        b->cand_token[i][k] = tok[k];
        b->cand_logprob[i][k] = lp[k];
    }
    b->have[i] = true;
    for (int k = 0; k < g->n_live; k++)
        if (!b->have[k])
            return BT_OK;
    if (g->cancel_pending) {
        group_end(s, g, BT_FINISH_CANCELLED);
        return BT_OK;
    }
    beam_step(s, g);
    return BT_OK;
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
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        uint32_t nt = res->n_top ? res->n_top[k] : 0;
        const int32_t *tt = res->top_token ? res->top_token + off : NULL;
        const float *tl = res->top_logprob ? res->top_logprob + off : NULL;
        off += nt;
        bt_request *r = s->slots[seq[k]];
        if (!r || r->state != BT_REQ_RUNNING)
            continue;
        if (r->beam || is_beam_child(r)) {
            bt_status st = beam_result(s, r, tt ? nt : 0, tt, tl, err);
            if (st != BT_OK)
                return st;
            continue;
        }
        if (r->cancel_pending) {
            finish(s, r, BT_FINISH_CANCELLED);
            continue;
        }
        accept_token(s, r, res->token[k], res->logprob[k], tt ? nt : 0, tt, tl);
    }
    /* Cancelled sequences whose step carried no sample (mid-prompt chunk). */
    for (int i = 0; i < e->n_rows; i++) {
        bt_request *r = s->slots[e->seq[i]];
        if (!r || r->in_flight)
            continue;
        bt_request *g = r->parent;
        if (g && g->beam && g->cancel_pending && g->state != BT_REQ_DONE && !any_in_flight(g))
            group_end(s, g, BT_FINISH_CANCELLED);
        else if (r->cancel_pending)
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
int bt_sched_kv_blocks(const bt_sched *s) {
    return s->kv_blocks;
}
uint64_t bt_sched_n_preemptions(const bt_sched *s) {
    return s->n_preempt;
}
