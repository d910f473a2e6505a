/*
 * engine_impl.h - the engine's record, shared by engine.c (the loop and its events, on the
 * engine thread) and inbox.c (the thread-safe door). PRIVATE to coordinator/engine/ and to
 * unit tests that look inside (bt_engine_sched).
 *
 * Thread rules: fields under "mutex" are read and written with mu held; the rest belong to
 * the engine thread (the transport's), or are fixed after bt_engine_new (p, info, vocab).
 */
#ifndef BT_ENGINE_IMPL_H
#define BT_ENGINE_IMPL_H

#include <pthread.h>

#include "engine.h"
#include "request_impl.h"
#include "scheduler.h"

typedef enum bt_engine_phase {
    BT_ENGINE_NEW,     /* before serve: submit queues */
    BT_ENGINE_SERVING, /* inside serve */
    BT_ENGINE_ENDED    /* serve returned */
} bt_engine_phase;

struct bt_engine {
    /* fixed after bt_engine_new */
    bt_engine_params p;
    bt_engine_info info;
    const bt_vocab *vocab;
    int64_t t_start;

    /* engine thread */
    bt_cluster *cluster;
    bt_sched *sched;
    bt_request *live_head; /* handed to the scheduler, DONE not yet delivered (e_prev/e_next) */
    bt_request *reap;      /* DONE delivered: the engine's reference goes next (e_next) */
    bt_request *probe;     /* the readiness probe (engine's reference) */
    bool probe_ok, ready, failed, failing, stages_shut;
    bt_error fail_err;
    uint64_t steps, rows, prompt_total, gen_total;
    bt_request *tok_r; /* completion whose TOKEN event waits for its text */
    char *tok_text;
    size_t n_tok_text, tok_text_cap;
    bt_request *fin_r; /* completion whose released text waits for its FINISH */
    char *fin_text;
    size_t n_fin_text, fin_text_cap;

    /* mutex */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the engine thread sleeps here while idle */
    bool sync_init;
    bt_engine_phase phase;
    bt_request *in_head, *in_tail; /* submitted, not yet taken by the engine (e_next) */
    bt_request *cancel_head;       /* cancel asked (cancel_next), one reference each */
    int n_live;                    /* accepted, DONE not yet delivered (uncounted as it is) */
    bool wake;                     /* something for the engine thread to look at */
    bool draining, cancel_all, cancelled_all;
    int64_t deadline_us; /* drain deadline, 0 = none */
    bt_engine_metrics metrics;
    int64_t hb_us[BT_ENGINE_MAX_STAGES]; /* each stage's last heartbeat, for the snapshot */
};

/* engine.c */
void bt_engine_set_callbacks(bt_engine *e, bt_request_params *p);
void bt_engine_flush(bt_engine *e); /* sends a pending TOKEN event */
void bt_engine_reap(bt_engine *e);  /* drops the references of requests whose DONE went out */
/* inbox.c: the metrics snapshot from the engine thread's state. */
void bt_engine_publish(bt_engine *e);

/* For tests that check the coordinator's accounting from a sink (engine thread). */
const bt_sched *bt_engine_sched(const bt_engine *e);

#endif
