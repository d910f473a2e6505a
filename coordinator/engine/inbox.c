/* inbox.c - the engine's thread-safe door: submit, cancel, shutdown and the metrics snapshot
 * (see engine.h). Everything here holds the engine's mutex only briefly and never calls into
 * the scheduler or the transport: those belong to the engine thread (engine.c). */
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "engine_impl.h"

/* Wakes the engine thread (mu held). */
static void wake(bt_engine *e) {
    e->wake = true;
    pthread_cond_signal(&e->cv);
}

bt_status bt_engine_submit(bt_engine *e, const int32_t *prompt, int32_t n_prompt,
                           const bt_request_params *p, bt_sink_fn sink, void *ctx, bt_request **out,
                           bt_error *err) {
    if (out)
        *out = NULL;
    if (!sink)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "submit: no sink for the events");
    if (n_prompt < 1 || !prompt)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "the prompt is empty");
    bt_status st = bt_request_params_validate(p, e->info.n_vocab, err);
    if (st != BT_OK)
        return st;
    /* A scoring request computes positions [0, n_prompt - 1) only (request.h). */
    if ((int64_t)n_prompt + (p->score_prompt ? 0 : 1) > e->info.n_ctx)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "the prompt is %d tokens and the context holds %d tokens, prompt and "
                            "generated together (at most %d prompt tokens)",
                            n_prompt, e->info.n_ctx, e->info.n_ctx - 1);
    for (int32_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->info.n_vocab)
            return bt_error_set(err, BT_ERR_RANGE, "prompt token %d (at %d) is not in [0, %d)",
                                prompt[i], i, e->info.n_vocab);
    bt_request_params rp = *p;
    bt_engine_set_callbacks(e, &rp);
    bt_request *r;
    if ((st = bt_request_new(prompt, n_prompt, &rp, e->info.n_ctx, &r, err)) != BT_OK)
        return st;
    r->sink = sink;
    r->sink_ctx = ctx;
    if (out)
        bt_request_ref(r); /* before the engine can see it: its DONE may come at once */
    pthread_mutex_lock(&e->mu);
    if (e->phase == BT_ENGINE_ENDED)
        st = bt_error_set(err, BT_ERR_UNAVAILABLE, "the engine is not serving%s",
                          e->metrics.failed ? ": a stage failed" : " (it has shut down)");
    else if (e->draining || e->cancel_all)
        st = bt_error_set(err, BT_ERR_UNAVAILABLE, "the engine is draining (shutting down)");
    else if (e->n_live >= e->info.queue_capacity)
        st = bt_error_set(err, BT_ERR_BUSY,
                          "the queue is full: %d requests are queued or running (capacity %d)",
                          e->n_live, e->info.queue_capacity);
    if (st == BT_OK) {
        r->e_next = NULL;
        if (e->in_tail)
            e->in_tail->e_next = r;
        else
            e->in_head = r;
        e->in_tail = r;
        e->n_live++;
        wake(e);
    }
    pthread_mutex_unlock(&e->mu);
    if (st != BT_OK) {
        if (out)
            bt_request_unref(r);
        bt_request_unref(r);
        return st;
    }
    if (out)
        *out = r;
    return BT_OK;
}

void bt_engine_cancel(bt_engine *e, bt_request *r) {
    if (!r)
        return;
    pthread_mutex_lock(&e->mu);
    if (!r->cancel_listed && e->phase != BT_ENGINE_ENDED) {
        r->cancel_listed = true;
        bt_request_ref(r); /* the list's: r outlives the caller's unref until the engine looks */
        r->cancel_next = e->cancel_head;
        e->cancel_head = r;
        wake(e);
    }
    pthread_mutex_unlock(&e->mu);
}

void bt_engine_shutdown(bt_engine *e, bool drain, int64_t deadline_us) {
    pthread_mutex_lock(&e->mu);
    e->draining = true;
    if (!drain)
        e->cancel_all = true;
    else if (deadline_us > 0 && (e->deadline_us == 0 || deadline_us < e->deadline_us))
        e->deadline_us = deadline_us;
    e->metrics.draining = true;
    e->metrics.ready = false;
    wake(e);
    pthread_mutex_unlock(&e->mu);
}

void bt_engine_publish(bt_engine *e) {
    bt_engine_metrics m;
    memset(&m, 0, sizeof m);
    int64_t hb[BT_ENGINE_MAX_STAGES];
    for (const bt_request *r = e->live_head; r; r = r->e_next)
        m.n_running += r->t_admit != 0;
    m.prompt_tokens_total = e->prompt_total;
    m.generation_tokens_total = e->gen_total;
    m.preemptions_total = bt_sched_n_preemptions(e->sched);
    m.steps = e->steps;
    m.rows = e->rows;
    m.kv_blocks_used = bt_sched_kv_blocks_used(e->sched);
    m.kv_blocks_total = bt_sched_kv_blocks(e->sched);
    m.n_stages = e->info.n_stages < BT_ENGINE_MAX_STAGES ? e->info.n_stages : BT_ENGINE_MAX_STAGES;
    int64_t now = bt_now_us();
    for (int i = 0; i < m.n_stages; i++) {
        const bt_stage_report *s = bt_cluster_stage(e->cluster, i);
        bt_engine_stage_metrics *o = &m.stage[i];
        o->rank = s->rank;
        o->layer_begin = s->layer_begin;
        o->layer_end = s->layer_end;
        o->kv_blocks_total = s->kv_tokens / BT_KV_BLOCK_TOKENS;
        o->kv_blocks_used =
            (s->kv_tokens - s->kv_tokens_free + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS;
        o->busy_fraction =
            now > s->start_us ? (double)s->busy_us / (double)(now - s->start_us) : 0.0;
        o->act_bytes_sent = s->act_bytes_sent;
        hb[i] = s->last_heartbeat_us;
    }
    pthread_mutex_lock(&e->mu);
    m.n_waiting = e->n_live - m.n_running;
    m.draining = e->draining;
    m.failed = e->failed;
    m.ready = e->ready && !e->draining && !e->failed;
    e->metrics = m;
    memcpy(e->hb_us, hb, sizeof hb[0] * (size_t)m.n_stages);
    pthread_mutex_unlock(&e->mu);
}

void bt_engine_get_metrics(bt_engine *e, bt_engine_metrics *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->metrics;
    int64_t now = bt_now_us();
    for (int i = 0; i < out->n_stages; i++)
        out->stage[i].seconds_since_heartbeat = (double)(now - e->hb_us[i]) / 1e6;
    pthread_mutex_unlock(&e->mu);
}
