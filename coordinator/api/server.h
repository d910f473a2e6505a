/*
 * server.h - the HTTP server of `baton serve`: libmicrohttpd in thread-per-connection mode in
 * front of the engine (engine.h). Routes, limits and errors are in docs/api.md.
 *
 * Threads:
 *   - libmicrohttpd's listening thread accepts; each connection gets its own thread, which
 *     parses the request (openai.h), submits it and then blocks (poll, never a spin) on the
 *     request's wakeup descriptor and on the client's socket until the engine's sink pushed
 *     bytes or the request is done. A client that hangs up is seen there (POLLRDHUP) and its
 *     request is cancelled (bt_engine_cancel), so its KV is freed on every stage.
 *   - the engine thread calls each request's sink: it renders the event into the request's
 *     outbox (SSE chunks or the whole body) under the request's mutex and signals; it never
 *     touches a socket.
 *   - a watchdog thread closes connections that have not delivered a complete request within
 *     the idle limit (slowloris: libmicrohttpd's own timeout counts inactivity only, so a
 *     client trickling a byte a second would be kept forever). It sleeps until the earliest
 *     deadline.
 *
 * Lifetimes: a request's state is reference-counted: libmicrohttpd's request (until
 * NOTIFY_COMPLETED), the engine's sink (until DONE) and a streamed response (until its free
 * callback) each hold one reference.
 *
 * bt_api_server is thread-safe; start/stop from the thread that owns it (main).
 */
#ifndef BT_API_SERVER_H
#define BT_API_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "openai.h"
#include "status.h"

typedef struct bt_api_server_params {
    const char *host;        /* numeric address or name to bind ("127.0.0.1") */
    int port;                /* 0: any free port (bt_api_server_port says which) */
    const char *api_key;     /* NULL or "": no key; else "Authorization: Bearer KEY" */
    size_t max_body_bytes;   /* larger Content-Length: 413 before the body is read */
    size_t max_header_bytes; /* request line + headers; more: 431 */
    int max_connections;
    int idle_timeout_s; /* a connection without a complete request this long is closed */
} bt_api_server_params;

bt_api_server_params bt_api_server_default_params(void);

typedef struct bt_api_server bt_api_server;

/* Binds and starts serving. e and m are borrowed and must outlive the server; m is read by
 * every connection thread (immutable). */
bt_status bt_api_server_start(const bt_api_server_params *p, bt_engine *e, const bt_api_model *m,
                              bt_api_server **out, bt_error *err);

/* The port actually bound. */
int bt_api_server_port(const bt_api_server *s);

/* From now on completion requests get 503 (draining) before they reach the engine. */
void bt_api_server_drain(bt_api_server *s);

/* Stops accepting, gives the requests still being answered up to grace_us to finish sending,
 * then closes every connection and joins all threads. Frees s. NULL is a no-op. */
void bt_api_server_stop(bt_api_server *s, int64_t grace_us);

/* Constant-time comparison of a presented key with the expected one (time depends only on
 * the presented length). */
bool bt_api_key_equal(const char *expected, const char *presented);

#endif
