/*
 * test_engine.c - the engine as a service (engine.h), in process: bt_engine_serve on the main
 * thread (the transport's) over 1 or 2 stage threads (local transport), a client thread that
 * talks to it only through the thread-safe door, on a tiny random 6-layer llama
 * (make_tiny_model from BT_BUILD_DIR):
 *
 *   - requests submitted from another thread while serving give exactly the tokens of the
 *     same requests submitted before serving; the client's reference outlives DONE
 *     (cancel after DONE is harmless) and is dropped from the client thread;
 *   - queue_capacity requests live: the next submit is BT_ERR_BUSY; a prompt that leaves no
 *     room in the context is BT_ERR_LIMIT naming both numbers; after serve, UNAVAILABLE;
 *   - cancel of running and queued requests: DONE with CANCELLED, the scheduler's KV count
 *     back to 0 and every stage's own count (heartbeats, metrics) back to 0;
 *   - drain: running requests finish, new ones are refused (UNAVAILABLE), ready false;
 *     a drain deadline cancels what is left;
 *   - queue timeout: a request never admitted within it ends with BT_ERR_TIMEOUT (the engine
 *     thread held in a sink past the timeout, so admission cannot win the race);
 *   - events of n = 2: TOKENs of each completion, then its FINISH, then one DONE; the tokens,
 *     alternatives and text of the events equal DONE's completions; usage counts both;
 *   - a stage killed while serving: DONE with BT_ERR_UNAVAILABLE naming the rank, serve
 *     returns the error, metrics say failed.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "engine.h"
#include "engine_client.h"
#include "engine_impl.h"
#include "gguf.h"
#include "hparams.h"
#include "kernel_level.h"
#include "launch.h"
#include "request_impl.h"
#include "vocab.h"

#define MAX_REQ 8
#define MAX_TOK 256
#define WAIT_US (120 * 1000000LL) /* bound of every wait: a hung engine fails, not hangs */

/* ---- an in-process cluster ---- */

typedef bt_test_cluster cluster;

typedef struct opts {
    int stages, max_seqs, kv_tokens, queue_capacity;
    int64_t queue_timeout_us;
} opts;

static bt_status cluster_open(cluster *c, const char *model, const opts *o, bt_error *err) {
    bt_engine_params ep = bt_engine_default_params();
    ep.cluster.max_batch = 256;
    ep.cluster.max_seqs = o->max_seqs ? o->max_seqs : 4;
    ep.cluster.kv_tokens = o->kv_tokens ? o->kv_tokens : 2048;
    ep.cluster.heartbeat_ms = 20; /* the stages' own KV counts arrive quickly */
    ep.prefill_chunk = 32;
    ep.n_ctx = 256;
    ep.queue_capacity = o->queue_capacity;
    ep.queue_timeout_us = o->queue_timeout_us;
    return bt_test_cluster_open(c, model, o->stages ? o->stages : 1, ep, err);
}

static void cluster_close(cluster *c) {
    bt_test_cluster_close(c);
}

static void make_prompt(int32_t n_vocab, int idx, int n, int32_t *ids) {
    uint64_t x = 0xD1B54A32D192ED03ULL * (uint64_t)(idx + 1);
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)(3 + (x >> 33) % (uint64_t)(n_vocab - 3));
    }
}

static bt_request_params greedy(int max_tokens) {
    bt_request_params p = bt_request_default_params();
    p.max_tokens = max_tokens;
    p.ignore_eos = true;
    p.sampling.temperature = 0;
    return p;
}

/* ---- what a client sees: events recorded per request, waited for with a bound ---- */

typedef struct record {
    int n_token[2];
    int32_t tok[2][MAX_TOK];
    float lp[2][MAX_TOK];
    int32_t top[2][MAX_TOK][4];
    int n_top[2][MAX_TOK];
    char text[2][4 * MAX_TOK * 8];
    size_t n_text[2];
    int n_finish[2];
    bt_finish finish[2];
    int32_t n_generated[2];
    bool token_after_finish;
    int n_done;
    bt_status status;
    char message[512];
    int n_comp;
    int32_t comp_tok[2][MAX_TOK];
    int comp_n[2];
    char comp_text[2][4 * MAX_TOK * 8];
    size_t comp_n_text[2];
    bt_finish comp_finish[2];
    int top_mismatch;
    int32_t usage_prompt, usage_completion;
    int64_t t_admit, t_done;
    int kv_sched_at_done; /* the scheduler's count when DONE arrived (engine thread) */
} record;

typedef struct client {
    cluster *c;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    record rec[MAX_REQ];
    int n_done;
    int cancel_after; /* > 0: the sink counts TOKENs; the client acts after that many */
    int n_tokens_seen;
    int kill_rank; /* > 0: the sink kills this stage at the first TOKEN */
    /* > 0: at the first TOKEN the sink waits for `released`, then holds the engine thread
     * this long (an engine too busy to admit anything) */
    int64_t hold_us;
    bool released;
    bt_status serve_st;
    char serve_msg[512];
} client;

typedef struct slot {
    client *cl;
    int i;
} slot;

static void sink(const bt_event *ev, void *ctx) {
    slot *s = ctx;
    client *cl = s->cl;
    pthread_mutex_lock(&cl->mu);
    record *r = &cl->rec[s->i];
    int k = ev->index >= 0 && ev->index < 2 ? ev->index : 0;
    switch (ev->kind) {
    case BT_EVENT_TOKEN:
        if (r->n_finish[k])
            r->token_after_finish = true;
        if (r->n_token[k] < MAX_TOK) {
            int j = r->n_token[k]++;
            r->tok[k][j] = ev->token;
            r->lp[k][j] = ev->logprob;
            r->n_top[k][j] = ev->n_top;
            for (int t = 0; t < ev->n_top && t < 4; t++)
                r->top[k][j][t] = ev->top_token[t];
        }
        cl->n_tokens_seen++;
        if (cl->kill_rank > 0 && cl->n_tokens_seen == 1)
            bt_local_hub_kill(cl->c->L.hub, cl->kill_rank);
        /* fall through */
    case BT_EVENT_FINISH:
        if (r->n_text[k] + ev->n_text < sizeof r->text[k]) {
            memcpy(r->text[k] + r->n_text[k], ev->text, ev->n_text);
            r->n_text[k] += ev->n_text;
        }
        if (ev->kind == BT_EVENT_FINISH) {
            r->n_finish[k]++;
            r->finish[k] = ev->finish;
            r->n_generated[k] = ev->n_generated;
        }
        break;
    case BT_EVENT_DONE:
        r->n_done++;
        r->status = ev->status;
        snprintf(r->message, sizeof r->message, "%s", ev->message);
        r->n_comp = ev->n_completions;
        for (int i = 0; i < ev->n_completions && i < 2; i++) {
            const bt_completion_view *v = &ev->completions[i];
            r->comp_n[i] = v->n_tokens < MAX_TOK ? v->n_tokens : MAX_TOK;
            memcpy(r->comp_tok[i], v->tokens, sizeof(int32_t) * (size_t)r->comp_n[i]);
            r->comp_n_text[i] = v->n_text < sizeof r->comp_text[i] ? v->n_text : 0;
            memcpy(r->comp_text[i], v->text, r->comp_n_text[i]);
            r->comp_finish[i] = v->finish;
            /* the alternatives of the view equal those of the TOKEN events */
            for (int j = 0; j < r->comp_n[i] && j < r->n_token[i]; j++) {
                int nt = v->top_stride ? v->n_top[j] : 0;
                if (nt != r->n_top[i][j])
                    r->top_mismatch++;
                for (int t = 0; t < nt && t < 4; t++)
                    if (v->top_token[(size_t)j * (size_t)v->top_stride + (size_t)t] !=
                        r->top[i][j][t])
                        r->top_mismatch++;
            }
        }
        r->usage_prompt = ev->usage_prompt_tokens;
        r->usage_completion = ev->usage_completion_tokens;
        r->t_admit = ev->t_admit_us;
        r->t_done = ev->t_done_us;
        r->kv_sched_at_done = bt_sched_kv_blocks_used(bt_engine_sched(cl->c->e));
        cl->n_done++;
        break;
    }
    pthread_cond_broadcast(&cl->cv);
    bool hold = ev->kind == BT_EVENT_TOKEN && cl->hold_us > 0 && cl->n_tokens_seen == 1;
    int64_t until = bt_now_us() + WAIT_US;
    while (hold && !cl->released && bt_now_us() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
    }
    pthread_mutex_unlock(&cl->mu);
    if (hold) {
        struct timespec ts = {.tv_sec = (time_t)(cl->hold_us / 1000000),
                              .tv_nsec = (long)(cl->hold_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Waits (bounded) until cond(cl, arg) holds; mu held while cond is evaluated. */
static bool wait_until(client *cl, bool (*cond)(client *, int), int arg) {
    int64_t until = bt_now_us() + WAIT_US;
    pthread_mutex_lock(&cl->mu);
    bool ok;
    while (!(ok = cond(cl, arg))) {
        int64_t now = bt_now_us();
        if (now >= until)
            break;
        /* the condvar uses CLOCK_REALTIME: wait in short slices against our own clock */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cl->cv, &cl->mu, &ts);
    }
    pthread_mutex_unlock(&cl->mu);
    return ok;
}

static bool done_at_least(client *cl, int n) {
    return cl->n_done >= n;
}
static bool tokens_at_least(client *cl, int n) {
    return cl->n_tokens_seen >= n;
}
static bool req_done(client *cl, int i) {
    return cl->rec[i].n_done > 0;
}

/* Sleeps in 10 ms steps until the engine's snapshot satisfies cond (bounded). */
static bool wait_metrics(bt_engine *e, bool (*cond)(const bt_engine_metrics *, int), int arg,
                         bt_engine_metrics *m) {
    int64_t until = bt_now_us() + WAIT_US;
    for (;;) {
        bt_engine_get_metrics(e, m);
        if (cond(m, arg))
            return true;
        if (bt_now_us() >= until)
            return false;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}
static bool is_ready(const bt_engine_metrics *m, int arg) {
    (void)arg;
    return m->ready;
}
/* Some stage reports KV in use (the first stage heartbeats after every micro-batch it
 * forwards; the last one only when idle). */
static bool some_stage_kv(const bt_engine_metrics *m, int arg) {
    (void)arg;
    for (int i = 0; i < m->n_stages; i++)
        if (m->stage[i].kv_blocks_used > 0)
            return true;
    return false;
}

/* Every stage's own count is 0, in a heartbeat sent after `since_us` (bt_now_us). */
static int64_t since_us;
static bool stages_kv_free(const bt_engine_metrics *m, int arg) {
    (void)arg;
    double since = (double)(bt_now_us() - since_us) / 1e6;
    for (int i = 0; i < m->n_stages; i++)
        if (m->stage[i].kv_blocks_used != 0 || m->stage[i].kv_blocks_total <= 0 ||
            m->stage[i].seconds_since_heartbeat >= since)
            return false;
    return m->n_stages > 0;
}

/* ---- the scenarios, each on a client thread while main serves ---- */

typedef struct scenario {
    client *cl;
    void (*fn)(client *cl);
} scenario;

static bt_status submit(client *cl, int i, const int32_t *ids, int n, const bt_request_params *p,
                        bt_request **out, bt_error *err) {
    static slot slots[MAX_REQ];
    slots[i] = (slot){cl, i};
    return bt_engine_submit(cl->c->e, ids, n, p, sink, &slots[i], out, err);
}

static void *scenario_main(void *arg) {
    scenario *s = arg;
    s->fn(s->cl);
    return NULL;
}

/* Opens a cluster, runs fn on a client thread while serving here, closes. */
static void run_scenario(const char *model, const opts *o, void (*fn)(client *cl), client *cl) {
    cluster c;
    bt_error err;
    bt_error_init(&err);
    memset(cl, 0, sizeof *cl);
    pthread_mutex_init(&cl->mu, NULL);
    pthread_cond_init(&cl->cv, NULL);
    bt_status st = cluster_open(&c, model, o, &err);
    CHECK_OK(st);
    if (st != BT_OK)
        printf("cluster: %s\n", err.msg);
    cl->c = &c;
    if (st == BT_OK) {
        scenario s = {cl, fn};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, scenario_main, &s) == 0);
        cl->serve_st = bt_engine_serve(c.e, &err);
        snprintf(cl->serve_msg, sizeof cl->serve_msg, "%s", err.msg);
        pthread_join(t, NULL);
    }
    cluster_close(&c);
    cl->c = NULL;
    pthread_mutex_destroy(&cl->mu);
    pthread_cond_destroy(&cl->cv);
}

/* 1. Submit from another thread while serving == submitted before serving. */
static int32_t ref_tok[3][MAX_TOK];
static int ref_n[3];
static const int sub_np[3] = {5, 40, 17}, sub_ng[3] = {12, 7, 20};

static void fn_submit_while_serving(client *cl) {
    bt_error err;
    bt_error_init(&err);
    bt_engine_metrics m;
    CHECK(wait_metrics(cl->c->e, is_ready, 0, &m)); /* the probe came back */
    CHECK(m.ready && !m.draining && !m.failed);
    bt_request *r[3] = {0};
    for (int i = 0; i < 3; i++) {
        int32_t ids[64];
        make_prompt(cl->c->hp.n_vocab, i, sub_np[i], ids);
        bt_request_params p = greedy(sub_ng[i]);
        CHECK_OK(submit(cl, i, ids, sub_np[i], &p, &r[i], &err));
        CHECK(r[i] != NULL);
    }
    CHECK(wait_until(cl, done_at_least, 3));
    /* The client's reference outlives DONE: cancel after DONE is harmless, then it is
     * dropped here, on the client thread (ASan: no leak, no use after free). */
    for (int i = 0; i < 3; i++) {
        bt_engine_cancel(cl->c->e, r[i]);
        bt_request_unref(r[i]);
    }
    bt_engine_shutdown(cl->c->e, true, 0);
}

static void sink_ref(const bt_event *ev, void *ctx) {
    if (ev->kind != BT_EVENT_DONE || ev->n_completions < 1)
        return;
    int i = (int)(intptr_t)ctx;
    ref_n[i] = ev->completions[0].n_tokens;
    memcpy(ref_tok[i], ev->completions[0].tokens, sizeof(int32_t) * (size_t)ref_n[i]);
}

static void test_submit_while_serving(const char *model) {
    bt_error err;
    bt_error_init(&err);
    /* reference: submitted before serving, no client thread, no references kept */
    cluster c;
    opts o = {.stages = 2};
    bt_status ost = cluster_open(&c, model, &o, &err);
    CHECK_OK(ost);
    for (int i = 0; i < 3 && ost == BT_OK; i++) {
        int32_t ids[64];
        make_prompt(c.hp.n_vocab, i, sub_np[i], ids);
        bt_request_params p = greedy(sub_ng[i]);
        CHECK_OK(
            bt_engine_submit(c.e, ids, sub_np[i], &p, sink_ref, (void *)(intptr_t)i, NULL, &err));
    }
    if (ost == BT_OK) {
        bt_engine_shutdown(c.e, true, 0); /* before serve: ends when those are done */
        CHECK_OK(bt_engine_serve(c.e, &err));
    } else {
        printf("reference run: %s\n", err.msg);
    }
    cluster_close(&c);

    static client cl;
    run_scenario(model, &o, fn_submit_while_serving, &cl);
    CHECK_OK(cl.serve_st);
    int same = 0;
    for (int i = 0; i < 3; i++) {
        record *r = &cl.rec[i];
        CHECK_EQ_INT(r->n_done, 1);
        CHECK_OK(r->status);
        CHECK_EQ_INT(r->comp_n[0], sub_ng[i]);
        same += r->comp_n[0] == ref_n[i] &&
                memcmp(r->comp_tok[0], ref_tok[i], sizeof(int32_t) * (size_t)ref_n[i]) == 0;
        /* streamed tokens == the completion */
        CHECK_EQ_INT(r->n_token[0], r->comp_n[0]);
        CHECK(memcmp(r->tok[0], r->comp_tok[0], sizeof(int32_t) * (size_t)r->comp_n[0]) == 0);
    }
    CHECK_EQ_INT(same, 3);
    printf("submit from another thread while serving: %d/3 equal to submitted before serving\n",
           same);
}

/* 2. Queue full, context overflow, refused after the end. */
static void test_limits(const char *model) {
    bt_error err;
    bt_error_init(&err);
    cluster c;
    opts o = {.stages = 1, .queue_capacity = 2};
    bt_status ost = cluster_open(&c, model, &o, &err);
    CHECK_OK(ost);
    if (ost != BT_OK) {
        printf("limits: %s\n", err.msg);
        cluster_close(&c);
        return;
    }
    bt_engine_info info;
    bt_engine_get_info(c.e, &info);
    CHECK_EQ_INT(info.queue_capacity, 2);
    CHECK_EQ_INT(info.n_ctx, 256);
    static client cl;
    memset(&cl, 0, sizeof cl);
    pthread_mutex_init(&cl.mu, NULL);
    pthread_cond_init(&cl.cv, NULL);
    cl.c = &c;
    int32_t ids[300];
    make_prompt(c.hp.n_vocab, 0, 300, ids);
    bt_request_params p = greedy(300); /* more than the context: ends at the context */
    bt_request *r0 = NULL;
    CHECK_OK(submit(&cl, 0, ids, 250, &p, &r0, &err));
    bt_request_params q = greedy(4);
    CHECK_OK(submit(&cl, 1, ids, 8, &q, NULL, &err));
    bt_request *r2 = (bt_request *)&err; /* must become NULL */
    bt_status st = submit(&cl, 2, ids, 8, &q, &r2, &err);
    CHECK_EQ_INT(st, BT_ERR_BUSY);
    CHECK(r2 == NULL);
    CHECK(strstr(err.msg, "capacity 2") != NULL);
    printf("queue full: %s: %s\n", bt_status_str(st), err.msg);
    /* the context: 261 prompt tokens in 256 */
    bt_error_init(&err);
    st = submit(&cl, 2, ids, 261, &q, NULL, &err);
    CHECK_EQ_INT(st, BT_ERR_LIMIT);
    CHECK(strstr(err.msg, "261") != NULL && strstr(err.msg, "256") != NULL);
    printf("context overflow: %s: %s\n", bt_status_str(st), err.msg);
    /* a parameter: named */
    bt_request_params bad = greedy(4);
    bad.n = 40;
    bt_error_init(&err);
    CHECK_EQ_INT(submit(&cl, 2, ids, 8, &bad, NULL, &err), BT_ERR_RANGE);
    CHECK(strstr(err.msg, "n 40") != NULL);
    bt_engine_shutdown(c.e, true, 0);
    CHECK_OK(bt_engine_serve(c.e, &err));
    CHECK_EQ_INT(cl.n_done, 2);
    /* 250 + 6 = the context: finish context, whatever max_tokens said */
    CHECK_EQ_INT(cl.rec[0].comp_n[0], 6);
    CHECK_EQ_INT(cl.rec[0].comp_finish[0], BT_FINISH_CONTEXT);
    CHECK_EQ_INT(cl.rec[1].comp_n[0], 4);
    /* after serve: refused */
    bt_error_init(&err);
    CHECK_EQ_INT(submit(&cl, 3, ids, 8, &q, NULL, &err), BT_ERR_UNAVAILABLE);
    bt_engine_metrics m;
    bt_engine_get_metrics(c.e, &m);
    CHECK(!m.ready && !m.failed);
    CHECK_EQ_INT(m.n_running + m.n_waiting, 0);
    CHECK(m.prompt_tokens_total == 258 && m.generation_tokens_total == 10);
    bt_request_unref(r0);
    cluster_close(&c);
    pthread_mutex_destroy(&cl.mu);
    pthread_cond_destroy(&cl.cv);
}

/* 3. Cancel of running and queued requests frees every KV block, on every stage. */
static bt_request *cancel_reqs[4];

static void fn_cancel(client *cl) {
    bt_error err;
    bt_error_init(&err);
    bt_engine_metrics m;
    CHECK(wait_metrics(cl->c->e, is_ready, 0, &m));
    /* 2 slots: requests 0 and 1 run, 2 and 3 wait */
    for (int i = 0; i < 4; i++) {
        int32_t ids[64];
        make_prompt(cl->c->hp.n_vocab, i, 60, ids);
        bt_request_params p = greedy(190);
        CHECK_OK(submit(cl, i, ids, 60, &p, &cancel_reqs[i], &err));
    }
    CHECK(wait_until(cl, tokens_at_least, 6));
    /* while they run, the stages report KV in use */
    CHECK(wait_metrics(cl->c->e, some_stage_kv, 0, &m));
    int used_running = m.stage[0].kv_blocks_used;
    for (int i = 3; i >= 0; i--)
        bt_engine_cancel(cl->c->e, cancel_reqs[i]);
    CHECK(wait_until(cl, done_at_least, 4));
    /* the stages' own counts, from heartbeats after the FREEs */
    since_us = bt_now_us();
    bool freed = wait_metrics(cl->c->e, stages_kv_free, 0, &m);
    CHECK(freed);
    printf("cancel: stage KV blocks %d while running, %d/%d after (every stage: %s), "
           "scheduler %d\n",
           used_running, m.stage[0].kv_blocks_used, m.stage[0].kv_blocks_total,
           freed ? "0" : "NOT 0", m.kv_blocks_used);
    CHECK_EQ_INT(m.kv_blocks_used, 0);
    for (int i = 0; i < 4; i++)
        bt_request_unref(cancel_reqs[i]);
    bt_engine_shutdown(cl->c->e, true, 0);
}

static void test_cancel(const char *model) {
    static client cl;
    opts o = {.stages = 2, .max_seqs = 2};
    run_scenario(model, &o, fn_cancel, &cl);
    CHECK_OK(cl.serve_st);
    int queued_never_admitted = 0;
    for (int i = 0; i < 4; i++) {
        record *r = &cl.rec[i];
        CHECK_EQ_INT(r->n_done, 1);
        CHECK_OK(r->status);
        CHECK_EQ_INT(r->comp_finish[0], BT_FINISH_CANCELLED);
        CHECK(r->comp_n[0] < 190);
        queued_never_admitted += r->t_admit == 0;
    }
    CHECK(queued_never_admitted >= 1);
    int last = 0;
    for (int i = 1; i < 4; i++)
        if (cl.rec[i].t_done > cl.rec[last].t_done)
            last = i;
    CHECK_EQ_INT(cl.rec[last].kv_sched_at_done, 0);
}

/* 4. Drain: running requests finish, new ones are refused; a deadline cancels the rest. */
static void fn_drain(client *cl) {
    bt_error err;
    bt_error_init(&err);
    int32_t ids[64];
    make_prompt(cl->c->hp.n_vocab, 1, 10, ids);
    bt_request_params p = greedy(30);
    CHECK_OK(submit(cl, 0, ids, 10, &p, NULL, &err));
    CHECK_OK(submit(cl, 1, ids, 10, &p, NULL, &err));
    CHECK(wait_until(cl, tokens_at_least, 2));
    bt_engine_shutdown(cl->c->e, true, 0);
    bt_engine_metrics m;
    bt_engine_get_metrics(cl->c->e, &m);
    CHECK(!m.ready && m.draining);
    bt_error_init(&err);
    CHECK_EQ_INT(submit(cl, 2, ids, 10, &p, NULL, &err), BT_ERR_UNAVAILABLE);
    CHECK(strstr(err.msg, "draining") != NULL);
}

static void fn_drain_deadline(client *cl) {
    bt_error err;
    bt_error_init(&err);
    int32_t ids[64];
    make_prompt(cl->c->hp.n_vocab, 1, 10, ids);
    bt_request_params p = greedy(240);
    CHECK_OK(submit(cl, 0, ids, 10, &p, NULL, &err));
    CHECK(wait_until(cl, tokens_at_least, 2));
    bt_engine_shutdown(cl->c->e, true, bt_now_us() + 1000); /* 1 ms */
}

static void test_drain(const char *model) {
    static client cl;
    opts o = {.stages = 2};
    run_scenario(model, &o, fn_drain, &cl);
    CHECK_OK(cl.serve_st);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(cl.rec[i].n_done, 1);
        CHECK_EQ_INT(cl.rec[i].comp_finish[0], BT_FINISH_LENGTH);
        CHECK_EQ_INT(cl.rec[i].comp_n[0], 30);
    }
    CHECK_EQ_INT(cl.rec[2].n_done, 0);
    run_scenario(model, &o, fn_drain_deadline, &cl);
    CHECK_OK(cl.serve_st);
    CHECK_EQ_INT(cl.rec[0].n_done, 1);
    CHECK_EQ_INT(cl.rec[0].comp_finish[0], BT_FINISH_CANCELLED);
    printf("drain: 2 running finished (30 tokens), a new one refused; deadline: cancelled after "
           "%d tokens\n",
           cl.rec[0].comp_n[0]);
}

/* 5. Queue timeout: one slot, A runs; B is submitted while the engine thread is held (in
 * A's sink) for longer than the timeout, so B cannot have been admitted in time. */
static void fn_timeout(client *cl) {
    bt_error err;
    bt_error_init(&err);
    int32_t ids[64];
    make_prompt(cl->c->hp.n_vocab, 2, 10, ids);
    bt_request_params p = greedy(240);
    bt_request *a = NULL;
    pthread_mutex_lock(&cl->mu);
    cl->hold_us = 700 * 1000;
    pthread_mutex_unlock(&cl->mu);
    CHECK_OK(submit(cl, 0, ids, 10, &p, &a, &err));
    CHECK(wait_until(cl, tokens_at_least, 1)); /* A is admitted; the engine waits for B */
    bt_request_params q = greedy(5);
    CHECK_OK(submit(cl, 1, ids, 10, &q, NULL, &err));
    pthread_mutex_lock(&cl->mu);
    cl->released = true;
    pthread_cond_broadcast(&cl->cv);
    pthread_mutex_unlock(&cl->mu);
    CHECK(wait_until(cl, req_done, 1));
    bt_engine_cancel(cl->c->e, a); /* A's own end does not matter */
    bt_request_unref(a);
    bt_engine_shutdown(cl->c->e, true, 0);
}

static void test_queue_timeout(const char *model) {
    static client cl;
    opts o = {.stages = 1, .max_seqs = 1, .queue_timeout_us = 500 * 1000};
    run_scenario(model, &o, fn_timeout, &cl);
    CHECK_OK(cl.serve_st);
    record *b = &cl.rec[1];
    CHECK_EQ_INT(b->n_done, 1);
    CHECK_EQ_INT(b->status, BT_ERR_TIMEOUT);
    CHECK(b->t_admit == 0);
    CHECK(strstr(b->message, "queue") != NULL);
    CHECK_EQ_INT(cl.rec[0].status, BT_OK);
    printf("queue timeout: %s: %s\n", bt_status_str(b->status), b->message);
}

/* 6. Events of n = 2. */
static void fn_events(client *cl) {
    bt_error err;
    bt_error_init(&err);
    int32_t ids[64];
    make_prompt(cl->c->hp.n_vocab, 3, 12, ids);
    bt_request_params p = greedy(10);
    p.n = 2;
    p.best_of = 2;
    p.sampling.temperature = 0.9f;
    p.sampling.seed = 42;
    p.sampling.top_logprobs = 3;
    CHECK_OK(submit(cl, 0, ids, 12, &p, NULL, &err));
    CHECK(wait_until(cl, done_at_least, 1));
    bt_engine_shutdown(cl->c->e, true, 0);
}

static void test_events(const char *model) {
    static client cl;
    opts o = {.stages = 2};
    run_scenario(model, &o, fn_events, &cl);
    CHECK_OK(cl.serve_st);
    record *r = &cl.rec[0];
    CHECK_EQ_INT(r->n_done, 1);
    CHECK_EQ_INT(r->n_comp, 2);
    CHECK(!r->token_after_finish);
    CHECK_EQ_INT(r->top_mismatch, 0);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(r->n_finish[k], 1);
        CHECK_EQ_INT(r->n_generated[k], 10);
        CHECK_EQ_INT(r->n_token[k], 10);
        CHECK_EQ_INT(r->comp_n[k], 10);
        CHECK(memcmp(r->tok[k], r->comp_tok[k], sizeof(int32_t) * 10) == 0);
        CHECK_EQ_INT((int)r->n_text[k], (int)r->comp_n_text[k]);
        CHECK(memcmp(r->text[k], r->comp_text[k], r->n_text[k]) == 0);
        for (int j = 0; j < 10; j++)
            CHECK(r->n_top[k][j] >= 1 && r->n_top[k][j] <= 3);
    }
    CHECK(memcmp(r->tok[0], r->tok[1], sizeof(int32_t) * 10) != 0); /* own seeds */
    CHECK_EQ_INT(r->usage_prompt, 12);
    CHECK_EQ_INT(r->usage_completion, 20);
    printf("events n=2: 2 x 10 TOKENs, 2 FINISH, 1 DONE; text %zu+%zu bytes as returned\n",
           r->n_text[0], r->n_text[1]);
}

/* 7. A stage dies while serving. */
static void fn_fail(client *cl) {
    bt_error err;
    bt_error_init(&err);
    int32_t ids[64];
    make_prompt(cl->c->hp.n_vocab, 4, 10, ids);
    bt_request_params p = greedy(200);
    cl->kill_rank = 2;
    CHECK_OK(submit(cl, 0, ids, 10, &p, NULL, &err));
    CHECK_OK(submit(cl, 1, ids, 10, &p, NULL, &err));
    CHECK(wait_until(cl, done_at_least, 2));
}

static void test_stage_failure(const char *model) {
    static client cl;
    opts o = {.stages = 2};
    run_scenario(model, &o, fn_fail, &cl);
    CHECK(cl.serve_st != BT_OK);
    CHECK(strstr(cl.serve_msg, "rank 2") != NULL);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(cl.rec[i].n_done, 1);
        CHECK_EQ_INT(cl.rec[i].status, BT_ERR_UNAVAILABLE);
        CHECK(strstr(cl.rec[i].message, "rank 2") != NULL);
    }
    printf("stage failure: serve: %s; DONE: %s: %s\n", cl.serve_msg,
           bt_status_str(cl.rec[0].status), cl.rec[0].message);
}

int main(void) {
    if (bt_test_kernel_level_skip())
        return 77;
    const char *tiny = check_make_tiny_model("test_engine");
    if (!tiny)
        return check_finish();
    test_submit_while_serving(tiny);
    test_limits(tiny);
    test_cancel(tiny);
    test_drain(tiny);
    test_queue_timeout(tiny);
    test_events(tiny);
    test_stage_failure(tiny);
    unlink(tiny);
    return check_finish();
}
