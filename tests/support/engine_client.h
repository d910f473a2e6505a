/*
 * engine_client.h - the engine used by tests as the CLI uses it: requests submitted before
 * serving (or each one from the previous one's DONE), bt_engine_serve on the calling thread
 * (the transport's), and the engine shut down (drain) from the sink once every DONE arrived.
 */
#ifndef BT_ENGINE_CLIENT_H
#define BT_ENGINE_CLIENT_H

#include <stdbool.h>

#include "engine.h"

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

#endif
