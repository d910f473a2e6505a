/*
 * sched_family.c - several completions of one request: n/best_of branches that fork from a
 * shared prompt, and beam search (beam.c chooses; this file moves sequences and KV).
 *
 * Slots for all of a group's children are reserved when the group is admitted (so forks
 * never wait for a slot: n_held in sched_impl.h).
 *   - n/best_of: the group prefills positions [0, n_prompt - 1) of its prompt (no sample),
 *     then, in the next micro-batch, best_of branches take over: branch 0 takes the group's
 *     sequence, the others are FORKs of it; each branch then decodes the last prompt token
 *     and samples its first token with its own seed (request.c: splitmix64 of (seed, i)).
 *     Accounting: the prefix's whole blocks are charged once, to the group (kv_shared), until
 *     the last branch that references them (n_holders) is freed or preempted; each branch is
 *     charged its own blocks from the prefix's partial block on (kv_base: the copy-on-write
 *     copy it will make). A preempted branch is recomputed alone and charged in full.
 *   - beams: the group prefills the whole prompt; the last stage returns the top 2W raw
 *     logprobs of every beam's last token (top_logprobs = 2W, temperature 0). When every live
 *     beam has reported, beam.c chooses the next W; a parent's first kept child continues on
 *     the parent's sequence, the others are FORKs of it (FREEs of dropped beams go first in
 *     the op list, so their slots can be reused). Forked beams are charged their full length
 *     (conservative: shared blocks are counted once per beam). Beams are never preempted. A
 *     step whose forks find no KV, even after the dropped beams' release and the preemption
 *     of newer sequences, waits (step_waiting) and is tried again before each batch
 *     (sched_beam_retry), while other sequences run and finish; a step or growth that waits
 *     for blocks nothing in flight will free fails the request (BT_ERR_LIMIT in its error,
 *     sched_unstick).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "beam.h"
#include "clock.h"
#include "sched_impl.h"

bool sched_is_beam_child(const bt_request *r) {
    return r->parent && r->parent->beam;
}

/* Slots a group still needs for children beyond its own sequence. */
int sched_extra_slots(const bt_request *r) {
    if (r->parent || r->forked)
        return 0;
    if (r->beam)
        return r->beam->width - 1;
    return r->n_branch > 1 ? r->n_branch - 1 : 0;
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

void sched_group_end(bt_sched *s, bt_request *g, bt_finish why) {
    if (g->state == BT_REQ_QUEUED)
        sched_q_remove(s, g);
    sched_drop_held(s, g);
    sched_release(s, g);
    for (int i = 0; i < g->n_branch; i++) {
        bt_request *c = g->branch[i];
        if (c->state == BT_REQ_QUEUED)
            sched_q_remove(s, c);
        if (c->seq >= 0 || c->state != BT_REQ_DONE) {
            sched_release(s, c);
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

bool sched_any_in_flight(const bt_request *g) {
    if (g->in_flight)
        return true;
    for (int i = 0; i < g->n_branch; i++)
        if (g->branch[i]->seq >= 0 && g->branch[i]->in_flight)
            return true;
    return false;
}

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
    sched_text_begin(s, c);
}

/* n/best_of: the group's prefix is cached; its branches take over (see the top of this file). False
 * when the copy-on-write blocks cannot be reserved yet. With `fit`, as many branches as the
 * free blocks allow take over (at least branch 0, which needs none) and the others are queued
 * at the front, to be computed alone from the prompt, as a preempted branch is. */
bool sched_fork_branches(bt_sched *s, bt_request *g, bool fit) {
    int32_t at = g->n_cached;
    int full = at / BT_KV_BLOCK_TOKENS, partial = blocks_for(at) - full;
    int n_fork = g->n_branch;
    if (!sched_reserve_blocks(s, g, (n_fork - 1) * partial)) {
        if (!fit)
            return false;
        n_fork = 1 + (s->kv_blocks - s->kv_used) / partial; /* partial is 1 here */
        bool ok = sched_reserve_blocks(s, g, (n_fork - 1) * partial);
        assert(ok && n_fork < g->n_branch);
        (void)ok;
    }
    g->kv_shared = full;
    g->n_holders = full > 0 ? n_fork : 0;
    for (int i = 0; i < g->n_branch; i++) {
        bt_request *c = g->branch[i];
        child_start(s, g, c, g);
        if (i >= n_fork) { /* requeued below, in branch order */
            c->seq = -1;
            c->n_cached = 0;
            s->n_held--;
            g->slots_held--;
            continue;
        }
        c->kv_base = full * BT_KV_BLOCK_TOKENS;
        if (i == 0) {
            c->seq = g->seq;
            s->slots[g->seq] = c;
        } else {
            sched_take_slot(s, c);
            s->n_held--;
            g->slots_held--;
            if (at > 0)
                sched_push_op(s, BT_SCHED_OP_FORK, g->seq, c->seq);
        }
    }
    for (int i = g->n_branch - 1; i >= n_fork; i--)
        sched_requeue(s, g->branch[i]);
    g->seq = -1;
    g->n_cached = 0;
    g->forked = true;
    g->n_live = g->n_branch;
    return true;
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
    sched_text_whole(s, h);
}

/* Ends beam group g: offers the live beams as hypotheses when it ran out of length. */
static void beam_end(bt_sched *s, bt_request *g, bt_finish live_why) {
    if (live_why != BT_FINISH_NONE)
        for (int i = 0; i < g->n_live; i++) {
            bt_request *r = g->live[i];
            beam_hyp(s, g, r, r->logprob_sum, r->n_generated, live_why);
        }
    sched_group_end(s, g, BT_FINISH_NONE);
}

/* A beam group fails: every live beam is freed. */
static void beam_fail(bt_sched *s, bt_request *g, bt_status st, const char *what) {
    bt_error_set(&g->error, st, "%s", what);
    sched_group_end(s, g, BT_FINISH_ERROR);
}

/* A beam group that cannot grow fails (BT_ERR_LIMIT). */
static bool beam_fail_stuck(bt_sched *s) {
    bt_request *g = NULL;
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i], *h = NULL;
        if (r)
            h = sched_is_beam_child(r) ? r->parent : r->beam ? r : NULL;
        if (h && h->state != BT_REQ_DONE && (!g || h->admit_order > g->admit_order))
            g = h;
    }
    if (!g)
        return false;
    char what[160];
    snprintf(what, sizeof what,
             "beam search: %d beams of %d tokens found no free block in the %d-token KV cache "
             "(raise --kv-tokens)",
             g->beam->width, (g->n_live ? g->live[0]->n_tokens : g->n_tokens) + 1,
             s->kv_blocks * BT_KV_BLOCK_TOKENS);
    beam_fail(s, g, BT_ERR_LIMIT, what);
    return true;
}

bool sched_unstick(bt_sched *s) {
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i];
        if (r && sched_fork_due(r))
            return sched_fork_branches(s, r, true);
    }
    return beam_fail_stuck(s);
}

/* Whether the step of g that keeps keep[0..nk) can have its forks' blocks now: after the
 * release of the beams it drops (sched_own_blocks) and, as sched_reserve_blocks
 * would, the preemption of newer sequences. */
static bool beam_forks_fit(const bt_sched *s, const bt_request *g, const bt_beam_cand *keep, int nk,
                           int need) {
    int n_child[BT_BEAM_MAX] = {0}, freed = 0;
    for (int i = 0; i < nk; i++)
        n_child[keep[i].beam]++;
    for (int i = 0; i < g->n_live; i++) {
        const bt_request *p = g->live[i];
        if (p != g && n_child[i] == 0 && p->seq >= 0)
            freed += sched_own_blocks(p);
    }
    return s->kv_blocks - s->kv_used + freed + sched_freeable_for(s, g) >= need;
}

/* Every live beam of g has reported its candidates: one step of the search, or none yet
 * (g->step_waiting) when its forks do not fit. */
static void beam_step(bt_sched *s, bt_request *g) {
    bt_beam *b = g->beam;
    int W = b->width, nl = g->n_live;
    double cum[BT_BEAM_MAX];
    for (int i = 0; i < nl; i++)
        cum[i] = g->live[i] == g ? 0.0 : (double)g->live[i]->logprob_sum;
    int32_t len = g->live[0]->n_tokens - g->n_prompt; /* generated so far, all beams */
    /* every beam's cached positions, read before dropped parents are released (which clears
     * theirs): each fork is charged this many positions */
    int32_t cached = g->live[0]->n_cached;
    bt_beam_cand keep[BT_BEAM_MAX], fin[BT_BEAM_MAX];
    int nk, nf;
    bool use_eog = !g->p.ignore_eos && s->p.is_eog;
    bt_beam_select(b, nl, cum, use_eog ? beam_is_eog : NULL, s, keep, &nk, fin, &nf);
    /* Every fork is charged its parent's length (all beams have the same). */
    int n_forks = 0;
    bool first[BT_BEAM_MAX] = {false};
    for (int i = 0; i < nk; i++) {
        if (first[keep[i].beam])
            n_forks++; /* the first child of each parent keeps the parent's sequence */
        first[keep[i].beam] = true;
    }
    int need = n_forks * blocks_for(cached);
    g->step_waiting = nk > 0 && !beam_forks_fit(s, g, keep, nk, need);
    if (g->step_waiting)
        return; /* nothing changed: the same candidates choose the same step when retried */
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
            sched_release(s, p);
            p->state = BT_REQ_DONE;
            g->slots_held++;
            s->n_held++;
        } else {
            busy[p->index] = true;
        }
    }
    if (nk > 0 && !sched_reserve_blocks(s, g, need)) {
        assert(!"beam_forks_fit said the forks fit"); /* it counts what this frees */
        beam_fail(s, g, BT_ERR_LIMIT, "beam search: no KV blocks left for a new beam");
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
            sched_take_slot(s, c);
            s->n_held--;
            g->slots_held--;
            sched_push_op(s, BT_SCHED_OP_FORK, p->seq, c->seq);
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

void sched_beam_retry(bt_sched *s) {
    for (int i = 0; i < s->p.max_seqs; i++) {
        bt_request *r = s->slots[i], *g = r ? (sched_is_beam_child(r) ? r->parent : r) : NULL;
        /* once per group: from the slot of its first live beam */
        if (g && g->beam && g->step_waiting && g->live[0] == r && g->state != BT_REQ_DONE &&
            !g->cancel_pending)
            beam_step(s, g);
    }
}

/* Position of beam sequence r among its group's live beams, or -1. */
static int live_index(const bt_request *g, const bt_request *r) {
    for (int i = 0; i < g->n_live; i++)
        if (g->live[i] == r)
            return i;
    return -1;
}

/* A beam's candidates arrived. */
bt_status sched_beam_result(bt_sched *s, bt_request *r, uint32_t n_top, const int32_t *tok,
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
        sched_group_end(s, g, BT_FINISH_CANCELLED);
        return BT_OK;
    }
    beam_step(s, g);
    return BT_OK;
}
