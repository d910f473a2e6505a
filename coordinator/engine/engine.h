/*
 * engine.h - the coordinator's generation loop: requests in, tokens out, through the
 * scheduler (what runs next) and the cluster (the stages). One engine per job.
 *
 * bt_engine_run drives everything on the calling thread: it keeps the pipeline full
 * (bt_sched_next_batch -> bt_cluster_send_batch while fewer than --inflight micro-batches are
 * out), waits for results with a deadline (bt_cluster_poll) and hands them to the scheduler,
 * which calls the requests' callbacks. A stage failure fails every request with the stage's
 * message and returns the error; the caller then ends the job.
 *
 * Confined to the thread that created it (the only thread that speaks to the transport).
 */
#ifndef BT_ENGINE_H
#define BT_ENGINE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "gguf.h"
#include "request.h"
#include "scheduler.h"
#include "status.h"
#include "transport.h"
#include "vocab.h"

typedef struct bt_engine_params {
    bt_cluster_params cluster;
    int prefill_chunk; /* prompt rows of one sequence per micro-batch */
    int max_inflight;  /* 0 = 2 x stages (docs/architecture.md) */
    int n_ctx;         /* tokens per sequence; 0 = min(trained context, KV capacity) */
} bt_engine_params;

bt_engine_params bt_engine_default_params(void);

typedef struct bt_engine bt_engine;

/* Starts the cluster on t (handshake with every stage) and the scheduler. t, g and v are
 * borrowed and must outlive the engine. */
bt_status bt_engine_new(bt_transport *t, const bt_gguf *g, const bt_vocab *v,
                        const bt_engine_params *p, bt_engine **out, bt_error *err);
/* Sends Shutdown to the stages (unless the engine failed) and frees. */
void bt_engine_free(bt_engine *e);

int bt_engine_n_ctx(const bt_engine *e);
/* True once a stage has failed: the stages cannot be shut down in order. */
bool bt_engine_failed(const bt_engine *e);
const bt_cluster *bt_engine_cluster(const bt_engine *e);
const bt_sched *bt_engine_sched(const bt_engine *e);

/* Queues r (see bt_sched_submit). r must have been created with n_ctx <= bt_engine_n_ctx. */
void bt_engine_submit(bt_engine *e, bt_request *r);

/* Once *stop is non-zero (a signal handler or a failed output sets it), bt_engine_run
 * cancels every request (bt_sched_cancel_all) and returns when the steps in flight have
 * landed; it is checked at least every poll interval (100 ms). stop is borrowed, may be
 * NULL. */
void bt_engine_set_stop(bt_engine *e, const volatile sig_atomic_t *stop);

/* Runs until no request is queued or running. */
bt_status bt_engine_run(bt_engine *e, bt_error *err);

/* Statistics of the work so far. */
typedef struct bt_engine_stats {
    uint64_t steps; /* micro-batches completed */
    uint64_t rows;  /* rows computed */
    int64_t run_us; /* wall time inside bt_engine_run */
    uint64_t preemptions;
} bt_engine_stats;
void bt_engine_get_stats(const bt_engine *e, bt_engine_stats *out);

#endif
