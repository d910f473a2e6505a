/* engine.c - the engine's loop on the transport's thread, and its events (see engine.h).
 * The thread-safe door (submit, cancel, shutdown, metrics) is in inbox.c; what both share is
 * engine_impl.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "engine_impl.h"
#include "hparams.h"
#include "log.h"

#define POLL_US (100 * 1000) /* longest wait for results while micro-batches are in flight */

bt_engine_params bt_engine_default_params(void) {
    return (bt_engine_params){.cluster = bt_cluster_default_params(),
                              .prefill_chunk = 256,
                              .max_inflight = 0,
                              .n_ctx = 0,
                              .queue_capacity = 0,
                              .queue_timeout_us = 0};
}

static bool is_eog(int32_t token, void *ctx) {
    return bt_vocab_is_eog((const bt_vocab *)ctx, token);
}

/* Micro-batches in flight, unless the caller chose: a pipeline keeps a spare one per stage
 * queued (2 x stages, docs/architecture.md); one stage has no other stage to keep busy, and
 * splitting its decode rows over two batches only halves the rows each weight load serves. */
static int default_inflight(int chosen, int n_stages) {
    if (chosen > 0)
        return chosen;
    return n_stages == 1 ? 1 : 2 * n_stages;
}

bt_status bt_engine_new(bt_transport *t, const bt_gguf *g, const bt_vocab *v,
                        const bt_engine_params *p, bt_engine **out, bt_error *err) {
    *out = NULL;
    if (p->queue_capacity < 0 || p->queue_timeout_us < 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "engine: queue_capacity %d and queue_timeout_us %lld must be >= 0",
                            p->queue_capacity, (long long)p->queue_timeout_us);
    bt_engine *e = calloc(1, sizeof *e);
    if (!e)
        return bt_error_set(err, BT_ERR_NOMEM, "engine: out of memory");
    e->p = *p;
    e->vocab = v;
    pthread_mutex_init(&e->mu, NULL);
    bt_cond_init_monotonic(&e->cv); /* deadlines are bt_now_us */
    e->sync_init = true;
    bt_status st = bt_cluster_start(t, g, &p->cluster, &e->cluster, err);
    if (st != BT_OK)
        goto fail;
    bt_hparams hp;
    if ((st = bt_hparams_load(g, &hp, err)) != BT_OK)
        goto fail;
    int kv = bt_cluster_kv_tokens(e->cluster);
    int n_ctx = p->n_ctx ? p->n_ctx : (hp.n_ctx_train > 0 ? hp.n_ctx_train : kv);
    if (n_ctx > kv)
        n_ctx = kv;
    int n_stages = bt_cluster_n_stages(e->cluster);
    bt_sched_params sp = {.max_seqs = p->cluster.max_seqs,
                          .kv_tokens = kv,
                          .max_batch = p->cluster.max_batch,
                          .prefill_chunk = p->prefill_chunk,
                          .max_inflight = default_inflight(p->max_inflight, n_stages),
                          .n_stages = n_stages,
                          .n_ctx = n_ctx,
                          .is_eog = is_eog,
                          .eog_ctx = (void *)v,
                          .vocab = v};
    if ((st = bt_sched_new(&sp, &e->sched, err)) != BT_OK)
        goto fail;
    e->info = (bt_engine_info){.n_ctx = n_ctx,
                               .n_stages = n_stages,
                               .kv_tokens = kv,
                               .max_seqs = p->cluster.max_seqs,
                               .queue_capacity =
                                   p->queue_capacity ? p->queue_capacity : 4 * p->cluster.max_seqs,
                               .n_vocab = bt_vocab_n_tokens(v)};
    e->t_start = bt_now_us();
    bt_engine_publish(e);
    *out = e;
    return BT_OK;
fail:
    e->failed = true;
    bt_engine_free(e);
    return st;
}

void bt_engine_free(bt_engine *e) {
    if (!e)
        return;
    if (e->cluster && !e->failed && !e->stages_shut)
        bt_cluster_shutdown(e->cluster);
    bt_cluster_free(e->cluster);
    bt_sched_free(e->sched);
    /* The engine's references: requests never served, and the probe. */
    bt_request *r = e->in_head;
    while (r) {
        bt_request *next = r->e_next;
        bt_request_unref(r);
        r = next;
    }
    for (r = e->cancel_head; r;) {
        bt_request *next = r->cancel_next;
        bt_request_unref(r);
        r = next;
    }
    for (r = e->live_head; r;) {
        bt_request *next = r->e_next;
        bt_request_unref(r);
        r = next;
    }
    bt_request_unref(e->probe);
    free(e->tok_text);
    free(e->fin_text);
    if (e->sync_init) {
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
    }
    free(e);
}

void bt_engine_get_info(const bt_engine *e, bt_engine_info *out) {
    *out = e->info;
}

const bt_cluster *bt_engine_cluster(const bt_engine *e) {
    return e->cluster;
}

const bt_sched *bt_engine_sched(const bt_engine *e) {
    return e->sched;
}

/* ---- events: the scheduler's callbacks turned into bt_event, on the engine thread ----
 *
 * The scheduler calls on_token(r) after appending a token, on_text(r) with the text that
 * became final (after on_token, or from finish() when held-back text is released), then
 * on_finish(r) and on_done(group). A TOKEN event waits (pending) until its text is known:
 * it goes out at the next on_token, on_finish, on_done, or when the scheduler call returns
 * (bt_engine_flush). Text of a completion that arrives without a pending token of its own is
 * released at the end and goes with its FINISH. */

static bt_request *group_of(bt_request *r) {
    return r->parent ? r->parent : r;
}

/* Whether r's completions are streamed: their indices are known from the start. */
static bool streams(const bt_request *g) {
    return !g->beam && g->p.best_of <= g->p.n;
}

static bool grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p)
        return false; /* the text is lost, the tokens are not */
    *buf = p;
    *cap = c;
    return true;
}

void bt_engine_flush(bt_engine *e) {
    bt_request *c = e->tok_r;
    if (!c)
        return;
    e->tok_r = NULL;
    bt_request *g = group_of(c);
    int32_t pos = c->n_tokens - 1;
    int k = c->n_top ? c->p.sampling.top_logprobs : 0;
    bt_event ev = {.kind = BT_EVENT_TOKEN,
                   .index = c->parent ? c->index : 0,
                   .token = c->tokens[pos],
                   .logprob = c->logprobs[pos],
                   .n_top = k > 0 ? c->n_top[pos] : 0,
                   .top_token = k > 0 ? c->top_token + (size_t)pos * (size_t)k : NULL,
                   .top_logprob = k > 0 ? c->top_logprob + (size_t)pos * (size_t)k : NULL,
                   .text = e->tok_text ? e->tok_text : "",
                   .n_text = e->n_tok_text,
                   .message = ""};
    e->n_tok_text = 0;
    g->sink(&ev, g->sink_ctx);
}

static void on_token(bt_request *r, int32_t token, float logprob, void *ctx) {
    (void)token;
    (void)logprob;
    bt_engine *e = ctx;
    bt_engine_flush(e);
    if (!streams(group_of(r)))
        return;
    e->tok_r = r;
    e->n_tok_text = 0;
}

static void on_text(bt_request *r, const char *delta, size_t n, void *ctx) {
    bt_engine *e = ctx;
    if (!streams(group_of(r)) || n == 0)
        return;
    if (e->tok_r == r) {
        if (grow(&e->tok_text, &e->tok_text_cap, e->n_tok_text + n + 1)) {
            memcpy(e->tok_text + e->n_tok_text, delta, n);
            e->n_tok_text += n;
            e->tok_text[e->n_tok_text] = '\0';
        }
        return;
    }
    bt_engine_flush(e);
    if (e->fin_r != r) {
        e->fin_r = r;
        e->n_fin_text = 0;
    }
    if (grow(&e->fin_text, &e->fin_text_cap, e->n_fin_text + n + 1)) {
        memcpy(e->fin_text + e->n_fin_text, delta, n);
        e->n_fin_text += n;
        e->fin_text[e->n_fin_text] = '\0';
    }
}

static void send_finish(bt_request *g, int index, const bt_request *c, const char *text,
                        size_t n_text) {
    bt_event ev = {.kind = BT_EVENT_FINISH,
                   .index = index,
                   .text = text ? text : "",
                   .n_text = n_text,
                   .finish = c->finish,
                   .n_generated = c->n_generated,
                   .message = ""};
    g->sink(&ev, g->sink_ctx);
}

static void on_finish(bt_request *r, void *ctx) {
    bt_engine *e = ctx;
    bt_engine_flush(e);
    bt_request *g = group_of(r);
    if (!streams(g))
        return;
    bool mine = e->fin_r == r;
    send_finish(g, r->parent ? r->index : 0, r, mine ? e->fin_text : "", mine ? e->n_fin_text : 0);
    e->fin_r = NULL;
    e->n_fin_text = 0;
}

static int32_t completion_tokens(const bt_request *g) {
    if (g->beam) { /* the returned hypotheses: what the search kept */
        int32_t n = 0;
        for (int i = 0; i < g->n_out; i++)
            n += g->out[i]->n_generated;
        return n;
    }
    if (g->n_branch == 0)
        return g->n_generated;
    int32_t n = 0;
    for (int i = 0; i < g->n_branch; i++)
        n += g->branch[i]->n_generated;
    return n;
}

static void on_done(bt_request *g, void *ctx) {
    bt_engine *e = ctx;
    bt_engine_flush(e);
    if (g->done_sent)
        return;
    g->done_sent = true;
    if (!streams(g))
        for (int i = 0; i < g->n_out; i++)
            send_finish(g, i, g->out[i], "", 0);
    bt_completion_view views[BT_MAX_COMPLETIONS];
    int n_pre = g->n_preempted;
    for (int i = 0; i < g->n_branch; i++)
        n_pre += g->branch[i]->n_preempted;
    for (int i = 0; i < g->n_out; i++) {
        const bt_request *c = g->out[i];
        int k = c->n_top ? c->p.sampling.top_logprobs : 0;
        int32_t np = c->n_prompt;
        views[i] = (bt_completion_view){
            .index = i,
            .text = c->text ? c->text : "",
            .n_text = c->text ? c->n_text : 0,
            .tokens = c->tokens + np,
            .logprobs = c->logprobs + np,
            .n_tokens = c->n_tokens - np,
            .top_stride = k,
            .n_top = k > 0 ? c->n_top + np : NULL,
            .top_token = k > 0 ? c->top_token + (size_t)np * (size_t)k : NULL,
            .top_logprob = k > 0 ? c->top_logprob + (size_t)np * (size_t)k : NULL,
            .finish = c->finish,
            .score = c->score,
            .n_generated = c->n_generated,
            .logprob_sum = c->logprob_sum};
    }
    bt_event ev = {.kind = BT_EVENT_DONE,
                   .status = BT_OK,
                   .message = "",
                   .n_completions = g->n_out,
                   .completions = views,
                   .finish = g->finish,
                   .n_generated = g->n_generated,
                   .usage_prompt_tokens = g->n_prompt,
                   .prompt_logprobs = g->p.score_prompt ? g->logprobs : NULL,
                   .usage_completion_tokens = completion_tokens(g),
                   .n_preemptions = n_pre,
                   .t_submit_us = g->t_submit,
                   .t_admit_us = g->t_admit,
                   .t_first_token_us = g->t_first_token,
                   .t_done_us = g->t_done};
    char msg[sizeof e->fail_err.msg + 64];
    if (e->failing) {
        ev.status = BT_ERR_UNAVAILABLE;
        ev.message = e->fail_err.msg;
    } else if (g->timed_out) {
        ev.status = BT_ERR_TIMEOUT;
        snprintf(msg, sizeof msg, "the request waited in the queue for more than %lld ms",
                 (long long)(e->p.queue_timeout_us / 1000));
        ev.message = msg;
    } else if (g->finish == BT_FINISH_ERROR) {
        ev.status = g->error.status != BT_OK ? g->error.status : BT_ERR_INTERNAL;
        ev.message = g->error.msg[0] ? g->error.msg : "the request failed";
    }
    if (g != e->probe) {
        e->prompt_total += (uint64_t)ev.usage_prompt_tokens;
        e->gen_total += (uint64_t)ev.usage_completion_tokens;
    }
    /* The request no longer counts against the queue once its client can see DONE: a
     * client that submits again from the sink, or as soon as it has seen it, finds the room. */
    if (g != e->probe) {
        pthread_mutex_lock(&e->mu);
        e->n_live--;
        pthread_mutex_unlock(&e->mu);
    }
    g->sink(&ev, g->sink_ctx);
    /* The engine's reference goes when the scheduler is out of its call (it may still
     * touch g's family on its way out). */
    if (g == e->probe)
        return;
    if (g->e_prev)
        g->e_prev->e_next = g->e_next;
    else
        e->live_head = g->e_next;
    if (g->e_next)
        g->e_next->e_prev = g->e_prev;
    g->e_prev = NULL;
    g->e_next = e->reap;
    e->reap = g;
}

void bt_engine_reap(bt_engine *e) {
    bt_engine_flush(e);
    while (e->reap) {
        bt_request *r = e->reap;
        e->reap = r->e_next;
        r->e_next = NULL;
        bt_request_unref(r);
    }
}

void bt_engine_set_callbacks(bt_engine *e, bt_request_params *p) {
    p->on_token = on_token;
    p->on_text = on_text;
    p->on_finish = on_finish;
    p->on_done = on_done;
    p->ctx = e;
}

/* ---- the loop ---- */

static void probe_sink(const bt_event *ev, void *ctx) {
    bt_engine *e = ctx;
    if (ev->kind == BT_EVENT_DONE)
        e->probe_ok = ev->status == BT_OK;
}

static bt_status start_probe(bt_engine *e, bt_error *err) {
    bt_request_params p = bt_request_default_params();
    p.max_tokens = 1;
    p.ignore_eos = true;
    p.sampling.temperature = 0;
    bt_engine_set_callbacks(e, &p);
    int32_t bos = bt_vocab_bos(e->vocab);
    if (bos < 0)
        bos = 0;
    bt_status st = bt_request_new(&bos, 1, &p, e->info.n_ctx, &e->probe, err);
    if (st != BT_OK)
        return st;
    e->probe->sink = probe_sink;
    e->probe->sink_ctx = e;
    bt_sched_submit(e->sched, e->probe);
    return BT_OK;
}

/* Hands what arrived in the inbox to the scheduler and applies cancels (engine thread). */
static void take_inbox(bt_engine *e) {
    pthread_mutex_lock(&e->mu);
    bt_request *in = e->in_head, *cancels = e->cancel_head;
    e->in_head = e->in_tail = NULL;
    e->cancel_head = NULL;
    for (bt_request *c = cancels; c; c = c->cancel_next)
        c->cancel_listed = false;
    bool cancel_all = e->cancel_all && !e->cancelled_all;
    int64_t deadline = e->deadline_us;
    pthread_mutex_unlock(&e->mu);
    while (in) {
        bt_request *r = in;
        in = r->e_next;
        r->e_prev = NULL;
        r->e_next = e->live_head;
        if (e->live_head)
            e->live_head->e_prev = r;
        e->live_head = r;
        bt_sched_submit(e->sched, r); /* may end it at once (DONE) */
    }
    while (cancels) {
        bt_request *r = cancels;
        cancels = r->cancel_next;
        r->cancel_next = NULL;
        if (!r->done_sent)
            bt_sched_cancel(e->sched, r);
        bt_request_unref(r); /* the cancel list's reference */
    }
    if (!cancel_all && deadline > 0 && bt_now_us() >= deadline)
        cancel_all = true;
    if (cancel_all) {
        bt_sched_cancel_all(e->sched);
        pthread_mutex_lock(&e->mu);
        e->cancelled_all = true;
        pthread_mutex_unlock(&e->mu);
    }
    if (e->p.queue_timeout_us > 0) {
        int64_t now = bt_now_us();
        for (bt_request *r = e->live_head; r;) {
            bt_request *next = r->e_next; /* cancel may end r and unlink it */
            if (r->state == BT_REQ_QUEUED && !r->t_admit && !r->timed_out &&
                now - r->t_submit > e->p.queue_timeout_us) {
                r->timed_out = true;
                bt_sched_cancel(e->sched, r);
            }
            r = next;
        }
    }
    bt_engine_reap(e);
}

/* Whether serve may return: shut down, and nothing left. */
static bool finished(bt_engine *e) {
    pthread_mutex_lock(&e->mu);
    bool stop = (e->draining || e->cancel_all) && !e->in_head;
    pthread_mutex_unlock(&e->mu);
    return stop && bt_sched_n_active(e->sched) == 0 && bt_sched_n_inflight(e->sched) == 0;
}

/* Sleeps until something arrives in the inbox or the next liveness check is due. */
static void idle_wait(bt_engine *e) {
    int64_t until = bt_now_us() + bt_cluster_idle_interval_us(e->cluster);
    pthread_mutex_lock(&e->mu);
    if (e->deadline_us > 0 && e->deadline_us < until)
        until = e->deadline_us;
    while (!e->wake)
        if (bt_cond_wait_until(&e->cv, &e->mu, until) != 0)
            break; /* timed out */
    e->wake = false;
    pthread_mutex_unlock(&e->mu);
}

bt_status bt_engine_serve(bt_engine *e, bt_error *err) {
    pthread_mutex_lock(&e->mu);
    bool again = e->phase != BT_ENGINE_NEW;
    if (!again)
        e->phase = BT_ENGINE_SERVING;
    pthread_mutex_unlock(&e->mu);
    if (again)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "engine: bt_engine_serve runs once");
    bt_status st = start_probe(e, err);
    while (st == BT_OK) {
        take_inbox(e);
        if (!e->ready && e->probe && e->probe->done_sent) {
            e->ready = e->probe_ok;
            bt_engine_publish(e);
        }
        if (finished(e))
            break;
        bt_sched_batch *b;
        while (bt_sched_next_batch(e->sched, &b)) {
            if ((st = bt_cluster_send_batch(e->cluster, b, err)) != BT_OK)
                break;
            e->rows += (uint64_t)b->n_rows;
        }
        if (st != BT_OK)
            break;
        if (bt_sched_n_inflight(e->sched) == 0) {
            if (bt_sched_n_active(e->sched) > 0) {
                /* A scheduler fault: those requests fail, the engine goes on. */
                bt_error stall;
                bt_error_init(&stall);
                bt_error_set(&stall, BT_ERR_INTERNAL,
                             "scheduler stalled: %d requests active, nothing schedulable (a "
                             "baton bug: please report it)",
                             bt_sched_n_active(e->sched));
                BT_ERROR("engine: %s; failing them", stall.msg);
                bt_sched_fail_stalled(e->sched, &stall);
                bt_engine_reap(e);
                bt_engine_publish(e);
                continue;
            }
            idle_wait(e);
            st = bt_cluster_idle_check(e->cluster, err);
            bt_engine_publish(e);
            continue;
        }
        bt_cluster_results res;
        if ((st = bt_cluster_poll(e->cluster, POLL_US, &res, err)) != BT_OK)
            break;
        if (res.n < 0) {
            bt_engine_publish(e); /* a heartbeat, or nothing */
            continue;
        }
        bt_sched_results sr = {.step = res.step,
                               .n = res.n,
                               .seq = res.seq,
                               .token = res.token,
                               .logprob = res.logprob,
                               .n_top = res.n_top,
                               .top_token = res.top_token,
                               .top_logprob = res.top_logprob,
                               .n_scored = res.n_scored,
                               .scored_logprob = res.scored_logprob};
        st = bt_sched_on_results_top(e->sched, &sr, err);
        bt_engine_reap(e);
        if (st != BT_OK)
            break;
        e->steps++;
        bt_engine_publish(e);
    }
    if (st == BT_OK) {
        bt_cluster_shutdown(e->cluster);
        e->stages_shut = true;
        pthread_mutex_lock(&e->mu);
        e->phase = BT_ENGINE_ENDED;
        pthread_mutex_unlock(&e->mu);
        e->ready = false;
        bt_engine_publish(e);
        return BT_OK;
    }
    /* A stage failed (or the protocol broke): every live request ends with the message. */
    e->failed = true;
    e->failing = true;
    e->ready = false;
    e->fail_err = *err;
    pthread_mutex_lock(&e->mu);
    e->phase = BT_ENGINE_ENDED;
    pthread_mutex_unlock(&e->mu);
    take_inbox(e); /* what was submitted meanwhile fails too */
    bt_sched_fail_all(e->sched, err);
    bt_engine_reap(e);
    bt_engine_publish(e);
    return st;
}
