/* engine.c - the generation loop of the coordinator (see engine.h). */
#include "engine.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "hparams.h"

#define POLL_US (100 * 1000) /* wait per poll; liveness is checked when it expires */

struct bt_engine {
    bt_engine_params p;
    const bt_vocab *vocab;
    bt_cluster *cluster;
    bt_sched *sched;
    int n_ctx;
    bool failed;
    const volatile sig_atomic_t *stop; /* borrowed, see bt_engine_set_stop */
    bool stopping;
    bt_engine_stats stats;
};

bt_engine_params bt_engine_default_params(void) {
    return (bt_engine_params){.cluster = bt_cluster_default_params(),
                              .prefill_chunk = 256,
                              .max_inflight = 0,
                              .n_ctx = 0};
}

void bt_engine_set_stop(bt_engine *e, const volatile sig_atomic_t *stop) {
    e->stop = stop;
}

static bool is_eog(int32_t token, void *ctx) {
    return bt_vocab_is_eog((const bt_vocab *)ctx, token);
}

bt_status bt_engine_new(bt_transport *t, const bt_gguf *g, const bt_vocab *v,
                        const bt_engine_params *p, bt_engine **out, bt_error *err) {
    *out = NULL;
    bt_engine *e = calloc(1, sizeof *e);
    if (!e)
        return bt_error_set(err, BT_ERR_NOMEM, "engine: out of memory");
    e->p = *p;
    e->vocab = v;
    bt_status st = bt_cluster_start(t, g, &p->cluster, &e->cluster, err);
    if (st != BT_OK)
        goto fail;
    bt_hparams hp;
    if ((st = bt_hparams_load(g, &hp, err)) != BT_OK)
        goto fail;
    int kv = bt_cluster_kv_tokens(e->cluster);
    e->n_ctx = p->n_ctx ? p->n_ctx : (hp.n_ctx_train > 0 ? hp.n_ctx_train : kv);
    if (e->n_ctx > kv)
        e->n_ctx = kv;
    int n_stages = bt_cluster_n_stages(e->cluster);
    bt_sched_params sp = {.max_seqs = p->cluster.max_seqs,
                          .kv_tokens = kv,
                          .max_batch = p->cluster.max_batch,
                          .prefill_chunk = p->prefill_chunk,
                          .max_inflight = p->max_inflight ? p->max_inflight : 2 * n_stages,
                          .n_ctx = e->n_ctx,
                          .is_eog = is_eog,
                          .eog_ctx = (void *)v,
                          .vocab = v};
    if ((st = bt_sched_new(&sp, &e->sched, err)) != BT_OK)
        goto fail;
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
    if (e->cluster && !e->failed)
        bt_cluster_shutdown(e->cluster);
    bt_cluster_free(e->cluster);
    bt_sched_free(e->sched);
    free(e);
}

bool bt_engine_failed(const bt_engine *e) {
    return e->failed;
}

int bt_engine_n_ctx(const bt_engine *e) {
    return e->n_ctx;
}
const bt_cluster *bt_engine_cluster(const bt_engine *e) {
    return e->cluster;
}
const bt_sched *bt_engine_sched(const bt_engine *e) {
    return e->sched;
}

void bt_engine_submit(bt_engine *e, bt_request *r) {
    bt_sched_submit(e->sched, r);
}

void bt_engine_get_stats(const bt_engine *e, bt_engine_stats *out) {
    *out = e->stats;
    out->preemptions = bt_sched_n_preemptions(e->sched);
}

static bt_status fail(bt_engine *e, bt_error *err) {
    e->failed = true;
    bt_sched_fail_all(e->sched, err);
    return err ? err->status : BT_ERR_INTERNAL;
}

bt_status bt_engine_run(bt_engine *e, bt_error *err) {
    if (e->failed)
        return bt_error_set(err, BT_ERR_INTERNAL, "engine: the cluster has failed");
    int64_t t0 = bt_now_us();
    bt_status st = BT_OK;
    while (bt_sched_n_active(e->sched) > 0 || bt_sched_n_inflight(e->sched) > 0) {
        if (e->stop && *e->stop && !e->stopping) {
            e->stopping = true;
            bt_sched_cancel_all(e->sched); /* in-flight steps still land, then end */
        }
        bt_sched_batch *b;
        while (bt_sched_next_batch(e->sched, &b)) {
            if ((st = bt_cluster_send_batch(e->cluster, b, err)) != BT_OK)
                goto out;
            e->stats.rows += (uint64_t)b->n_rows;
        }
        if (bt_sched_n_inflight(e->sched) == 0) {
            if (bt_sched_n_active(e->sched) == 0)
                break;
            st = bt_error_set(err, BT_ERR_INTERNAL,
                              "scheduler stalled: %d requests active, nothing schedulable",
                              bt_sched_n_active(e->sched));
            goto out;
        }
        bt_cluster_results res;
        if ((st = bt_cluster_poll(e->cluster, POLL_US, &res, err)) != BT_OK)
            goto out;
        if (res.n < 0)
            continue;
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
        if ((st = bt_sched_on_results_top(e->sched, &sr, err)) != BT_OK)
            goto out;
        e->stats.steps++;
    }
out:
    e->stats.run_us += bt_now_us() - t0;
    if (st != BT_OK)
        return fail(e, err);
    return BT_OK;
}
