/*
 * engine_client.h - the engine used by tests as the CLI uses it: requests submitted before
 * serving (or each one from the previous one's DONE), bt_engine_serve on the calling thread
 * (the transport's), and the engine shut down (drain) from the sink once every DONE arrived.
 */
#ifndef BT_ENGINE_CLIENT_H
#define BT_ENGINE_CLIENT_H

#include <stdbool.h>

#include "engine.h"
#include "gguf.h"
#include "hparams.h"
#include "launch.h"
#include "vocab.h"

typedef struct bt_test_job {
    const int32_t *prompt; /* borrowed until serve returns */
    int32_t n_prompt;
    bt_request_params p;
} bt_test_job;

/* Called first with every event of request i (engine thread). */
typedef void (*bt_test_observer)(int i, const bt_event *ev, void *ctx);

/* Serves jobs[0..n) on e (once per engine). reqs[i] get a reference each (NULL when refused;
 * bt_request_unref them). Returns serve's status, or the first refused submit's. */
bt_status bt_test_serve(bt_engine *e, int n, const bt_test_job *jobs, bool sequential,
                        bt_request **reqs, bt_test_observer observer, void *ctx, bt_error *err);

/* A model, its vocabulary and an engine over in-process stages, as the unit tests use them. */
typedef struct bt_test_cluster {
    bt_gguf *g;
    bt_vocab *v;
    bt_hparams hp;
    bt_launch L;
    bool launched;
    bt_engine *e;
} bt_test_cluster;

/* Opens model and starts `stages` local stages (1 thread each) sized by ep's cluster
 * max_batch and max_seqs, then the engine with ep (codec f32; n_ctx capped at the trained
 * context). On failure what was opened stays in c for bt_test_cluster_close. */
bt_status bt_test_cluster_open(bt_test_cluster *c, const char *model, int stages,
                               bt_engine_params ep, bt_error *err);
/* Frees everything; the stages must have exited 0 unless the engine failed (CHECK). */
void bt_test_cluster_close(bt_test_cluster *c);

#endif
