/* engine_client.c - see engine_client.h. */
#include "engine_client.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine_impl.h"

typedef struct client {
    bt_engine *e;
    int n, next, pending;
    const bt_test_job *jobs;
    bt_request **reqs;
    bt_test_observer observer;
    void *ctx;
    bool sequential;
    bt_status st;
    bt_error err;
    struct slot {
        struct client *c;
        int i;
    } * slots;
} client;

static void sink(const bt_event *ev, void *ctx);

static bt_status submit(client *c, bt_error *err) {
    int i = c->next++;
    c->slots[i] = (struct slot){c, i};
    bt_status st = bt_engine_submit(c->e, c->jobs[i].prompt, c->jobs[i].n_prompt, &c->jobs[i].p,
                                    sink, &c->slots[i], &c->reqs[i], err);
    if (st == BT_OK)
        c->pending++;
    return st;
}

static void sink(const bt_event *ev, void *ctx) {
    struct slot *s = ctx;
    client *c = s->c;
    if (c->observer)
        c->observer(s->i, ev, c->ctx);
    if (ev->kind != BT_EVENT_DONE)
        return;
    c->pending--;
    if (c->sequential && c->next < c->n && c->st == BT_OK)
        c->st = submit(c, &c->err);
    if (c->pending == 0)
        bt_engine_shutdown(c->e, true, 0);
}

bt_status bt_test_serve(bt_engine *e, int n, const bt_test_job *jobs, bool sequential,
                        bt_request **reqs, bt_test_observer observer, void *ctx, bt_error *err) {
    client c = {.e = e,
                .n = n,
                .jobs = jobs,
                .reqs = reqs,
                .observer = observer,
                .ctx = ctx,
                .sequential = sequential};
    bt_error_init(&c.err);
    memset(reqs, 0, sizeof *reqs * (size_t)n);
    c.slots = calloc((size_t)(n > 0 ? n : 1), sizeof *c.slots);
    if (!c.slots)
        return bt_error_set(err, BT_ERR_NOMEM, "out of memory");
    bt_status st = BT_OK;
    while (st == BT_OK && c.next < n && (!sequential || c.next == 0))
        st = submit(&c, err);
    if (st != BT_OK || n == 0)
        bt_engine_shutdown(e, false, 0);
    bt_status sst = bt_engine_serve(e, err);
    if (st == BT_OK)
        st = sst;
    if (st == BT_OK && c.st != BT_OK) {
        st = c.st;
        if (err)
            *err = c.err;
    }
    free(c.slots);
    return st;
}

bt_status bt_test_cluster_open(bt_test_cluster *c, const char *model, int stages,
                               bt_engine_params ep, bt_error *err) {
    memset(c, 0, sizeof *c);
    bt_status st;
    if ((st = bt_gguf_open(model, &c->g, err)) != BT_OK ||
        (st = bt_hparams_load(c->g, &c->hp, err)) != BT_OK ||
        (st = bt_vocab_load(c->g, &c->v, err)) != BT_OK)
        return st;
    bt_launch_params lp = {.n_threads = 1,
                           .local_stages = stages,
                           .max_batch = ep.cluster.max_batch,
                           .max_seqs = ep.cluster.max_seqs,
                           .n_embd = c->hp.n_embd};
    if ((st = bt_launch_start(&c->L, c->g, &lp, err)) != BT_OK)
        return st;
    c->launched = true;
    ep.cluster.codec = BT_CODEC_F32;
    if (c->hp.n_ctx_train > 0 && ep.n_ctx > c->hp.n_ctx_train)
        ep.n_ctx = c->hp.n_ctx_train;
    return bt_engine_new(c->L.t, c->g, c->v, &ep, &c->e, err);
}

void bt_test_cluster_close(bt_test_cluster *c) {
    bool ok = c->e && !c->e->failed;
    if (c->launched && !ok)
        bt_launch_abort(&c->L, 1);
    bt_engine_free(c->e);
    if (c->launched) {
        int rc = bt_launch_finish(&c->L, ok ? 0 : 1);
        if (ok)
            CHECK_EQ_INT(rc, 0);
    }
    bt_vocab_free(c->v);
    bt_gguf_free(c->g);
}
