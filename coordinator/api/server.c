/* server.c - libmicrohttpd front of the engine (see server.h for the threads and lifetimes). */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h> /* POLLRDHUP: _GNU_SOURCE, set for the whole build */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "chat_page.h"
#include "clock.h"
#include "metrics.h"

/* ---- connections and the idle watchdog ---- */

/* One TCP connection, from libmicrohttpd's NOTIFY_CONNECTION STARTED to CLOSED. Guarded by
 * the server's mutex. */
typedef struct conn {
    int fd;
    int64_t since_us; /* start, or the end of the last answered request */
    bool busy;        /* a complete request is being answered: no idle limit */
    struct conn *prev, *next;
} conn;

struct bt_api_server {
    bt_api_server_params p;
    bt_engine *engine;
    const bt_api_model *model;
    bt_api_metrics *metrics;
    struct MHD_Daemon *daemon;
    int port;
    int64_t created; /* wall-clock seconds of start: /v1/models */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* watchdog wakeups and "a call ended" */
    conn *conns;       /* every open connection */
    int n_calls;       /* requests not yet completed (stop waits for them) */
    bool stopping;     /* the watchdog ends */
    bool draining;     /* completions get 503 */
    uint64_t next_id;  /* response ids */
    pthread_t watchdog;
    bool watchdog_started;
};

static void *watchdog_main(void *arg) {
    bt_api_server *s = arg;
    int64_t limit_us = (int64_t)s->p.idle_timeout_s * 1000000;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        int64_t now = bt_now_us(), next = 0;
        for (conn *c = s->conns; c; c = c->next) {
            if (c->busy || c->fd < 0)
                continue;
            int64_t due = c->since_us + limit_us;
            if (due <= now) {
                /* libmicrohttpd's thread sees the end of the stream and closes it */
                shutdown(c->fd, SHUT_RDWR);
                c->fd = -1;
            } else if (!next || due < next) {
                next = due;
            }
        }
        if (!next) {
            pthread_cond_wait(&s->cv, &s->mu);
        } else {
            bt_cond_wait_until(&s->cv, &s->mu, next + 1000);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    bt_api_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        conn *c = calloc(1, sizeof *c);
        if (!c)
            return; /* unwatched: libmicrohttpd still serves it */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = ci ? ci->connect_fd : -1;
        c->since_us = bt_now_us();
        pthread_mutex_lock(&s->mu);
        c->next = s->conns;
        if (s->conns)
            s->conns->prev = c;
        s->conns = c;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        *socket_context = c;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        conn *c = *socket_context;
        if (!c)
            return;
        pthread_mutex_lock(&s->mu);
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        pthread_mutex_unlock(&s->mu);
        free(c);
        *socket_context = NULL;
    }
}

static conn *conn_of(struct MHD_Connection *connection) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* busy: a complete request is being answered (no idle limit). Back to idle, the connection
 * gets a new --idle-timeout for its next request (keep-alive). */
static void conn_set_busy(bt_api_server *s, conn *c, bool busy) {
    if (!c)
        return;
    pthread_mutex_lock(&s->mu);
    c->busy = busy;
    if (!busy)
        c->since_us = bt_now_us();
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- one request ---- */

typedef enum route_id {
    ROUTE_NONE,
    ROUTE_PAGE,
    ROUTE_HEALTH,
    ROUTE_READY,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_TOKENIZE,
    ROUTE_DETOKENIZE,
} route_id;

/* path, method, route, open (no API key: the load balancer's probes, and the page, which
 * must load to ask for the key) */
#define ROUTE_LIST(X)                                                                              \
    X("/", "GET", ROUTE_PAGE, true)                                                                \
    X("/health", "GET", ROUTE_HEALTH, true)                                                        \
    X("/ready", "GET", ROUTE_READY, true)                                                          \
    X("/metrics", "GET", ROUTE_METRICS, false)                                                     \
    X("/v1/models", "GET", ROUTE_MODELS, false)                                                    \
    X("/v1/completions", "POST", ROUTE_COMPLETIONS, false)                                         \
    X("/v1/chat/completions", "POST", ROUTE_CHAT, false)                                           \
    X("/tokenize", "POST", ROUTE_TOKENIZE, false)                                                  \
    X("/detokenize", "POST", ROUTE_DETOKENIZE, false)

typedef struct route {
    const char *path, *method;
    route_id id;
    bool open;
} route;

static const route routes[] = {
#define ROUTE_ROW(path, method, id, open) {path, method, id, open},
    ROUTE_LIST(ROUTE_ROW)
#undef ROUTE_ROW
};

/* State of one HTTP request. Reference-counted (see server.h); mu guards what the sink and
 * the connection thread share: out, out_off, done, status, message. */
typedef struct call {
    bt_api_server *srv;
    conn *conn;
    const route *route;
    bt_api_buf body;
    bool answered;  /* a response is queued (or being produced) */
    bool too_large; /* a chunked body passed --max-body-bytes: the rest is dropped, then 413 */

    pthread_mutex_t mu;
    int refs;
    int wake_fd; /* eventfd: the sink signals new bytes or DONE */
    int client_fd;
    bt_request *req;
    bt_api_req q;
    bt_api_resp resp;
    bool stream;
    bt_api_buf out; /* bytes for the client: SSE chunks, or the body at DONE */
    size_t out_off;
    bool done;
    bool client_gone;
    bt_api_error error; /* DONE with an error (non-streamed) */
    bool failed;
    int64_t t_last_token[BT_MAX_COMPLETIONS];
} call;

static call *call_new(bt_api_server *s, struct MHD_Connection *connection, conn *c,
                      const route *r) {
    call *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (k->wake_fd < 0 || pthread_mutex_init(&k->mu, NULL) != 0) {
        if (k->wake_fd >= 0)
            close(k->wake_fd);
        free(k);
        return NULL;
    }
    k->srv = s;
    k->conn = c;
    k->route = r;
    k->refs = 1;
    const union MHD_ConnectionInfo *ci =
        connection ? MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD) : NULL;
    k->client_fd = ci ? ci->connect_fd : -1;
    pthread_mutex_lock(&s->mu);
    s->n_calls++;
    pthread_mutex_unlock(&s->mu);
    return k;
}

static void call_ref(call *k) {
    pthread_mutex_lock(&k->mu);
    k->refs++;
    pthread_mutex_unlock(&k->mu);
}

static void call_unref(call *k) {
    pthread_mutex_lock(&k->mu);
    int left = --k->refs;
    pthread_mutex_unlock(&k->mu);
    if (left > 0)
        return;
    bt_api_server *s = k->srv;
    bt_request_unref(k->req);
    bt_api_req_deinit(&k->q);
    bt_api_buf_free(&k->body);
    bt_api_buf_free(&k->out);
    close(k->wake_fd);
    pthread_mutex_destroy(&k->mu);
    free(k);
    pthread_mutex_lock(&s->mu);
    s->n_calls--;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void wake(call *k) {
    uint64_t one = 1;
    ssize_t w = write(k->wake_fd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already non-zero, the waiter wakes anyway */
}

/* The engine's sink (engine thread): renders the event into the outbox and signals. */
static void sink(const bt_event *ev, void *ctx) {
    call *k = ctx;
    bt_api_server *s = k->srv;
    if (ev->kind == BT_EVENT_TOKEN && ev->index >= 0 && ev->index < BT_MAX_COMPLETIONS) {
        int64_t now = bt_now_us();
        if (k->t_last_token[ev->index])
            bt_api_metrics_observe(s->metrics, BT_API_HIST_ITL,
                                   (double)(now - k->t_last_token[ev->index]) / 1e6);
        k->t_last_token[ev->index] = now;
    }
    if (ev->kind == BT_EVENT_DONE) {
        bt_api_metrics_on_done(s->metrics, ev);
        if (ev->status != BT_OK) {
            bt_api_error e;
            bt_api_error_from_status(&e, ev->status, ev->message);
            bt_api_metrics_on_error(s->metrics, e.http);
        }
    }
    pthread_mutex_lock(&k->mu);
    if (!k->client_gone) {
        bool ok = true;
        if (k->stream) {
            ok = bt_api_sse_event(&k->resp, ev, &k->out);
        } else if (ev->kind == BT_EVENT_DONE && ev->status == BT_OK) {
            json_t *body = bt_api_body_json(&k->resp, ev);
            ok = bt_api_buf_json(&k->out, body);
            json_decref(body);
        } else if (ev->kind == BT_EVENT_DONE) {
            bt_api_error_from_status(&k->error, ev->status, ev->message);
            k->failed = true;
        }
        if (!ok) {
            bt_api_error_set(&k->error, 500, NULL, "internal_error", "out of memory");
            k->failed = true;
        }
    }
    bool done = ev->kind == BT_EVENT_DONE;
    if (done)
        k->done = true;
    pthread_mutex_unlock(&k->mu);
    wake(k);
    if (done)
        call_unref(k); /* the engine's reference */
}

/* Blocks until the sink signalled or the client hung up. False: the client is gone (its
 * request has been cancelled). */
static bool wait_for_engine(call *k) {
    struct pollfd fds[2] = {{.fd = k->wake_fd, .events = POLLIN},
                            {.fd = k->client_fd, .events = POLLRDHUP}};
    for (;;) {
        int n = poll(fds, k->client_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return true; /* cannot happen with valid descriptors; re-check the state */
        if (fds[0].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(k->wake_fd, &v, sizeof v);
            (void)r;
            return true;
        }
        if (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
            pthread_mutex_lock(&k->mu);
            k->client_gone = true;
            pthread_mutex_unlock(&k->mu);
            bt_engine_cancel(k->srv->engine, k->req);
            return false;
        }
    }
}

/* ---- responses ---- */

static enum MHD_Result send_bytes(struct MHD_Connection *c, int status, const char *type,
                                  const void *p, size_t n) {
    struct MHD_Response *r = MHD_create_response_from_buffer(n, (void *)p, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (status == 503)
        MHD_add_response_header(r, "Retry-After", "1");
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, json_t *j) {
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s)
        return MHD_NO;
    enum MHD_Result ret = send_bytes(c, status, "application/json", s, strlen(s));
    free(s);
    return ret;
}

static enum MHD_Result send_error(bt_api_server *s, struct MHD_Connection *c,
                                  const bt_api_error *e) {
    bt_api_metrics_on_error(s->metrics, e->http);
    return send_json(c, e->http, bt_api_error_json(e));
}

static enum MHD_Result fail(bt_api_server *s, struct MHD_Connection *c, int http, const char *param,
                            const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result fail(bt_api_server *s, struct MHD_Connection *c, int http, const char *param,
                            const char *code, const char *fmt, ...) {
    bt_api_error e;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    bt_api_error_set(&e, http, param, code, "%s", msg);
    return send_error(s, c, &e);
}

/* ---- routes ---- */

static bool is_draining(bt_api_server *s) {
    pthread_mutex_lock(&s->mu);
    bool d = s->draining;
    pthread_mutex_unlock(&s->mu);
    return d;
}

static enum MHD_Result on_ready(bt_api_server *s, struct MHD_Connection *c) {
    bt_engine_metrics m;
    bt_engine_get_metrics(s->engine, &m);
    bool draining = is_draining(s);
    if (m.ready && !draining)
        return send_json(c, 200, json_pack("{s:s}", "status", "ready"));
    const char *why = m.failed ? "a stage failed"
                      : m.draining || draining
                          ? "draining"
                          : "loading: the probe has not gone through every stage";
    /* a health check, not a failed request: not counted in request_errors_total */
    bt_api_error e;
    bt_api_error_set(&e, 503, NULL, "service_unavailable", "not ready: %s", why);
    return send_json(c, 503, bt_api_error_json(&e));
}

static enum MHD_Result on_metrics(bt_api_server *s, struct MHD_Connection *c) {
    bt_engine_metrics *m = malloc(sizeof *m);
    bt_api_buf out = {0};
    enum MHD_Result ret;
    if (!m)
        return MHD_NO;
    bt_engine_get_metrics(s->engine, m);
    if (bt_api_metrics_render(s->metrics, m, &out))
        ret = send_bytes(c, 200, "text/plain; version=0.0.4; charset=utf-8", out.p, out.n);
    else
        ret = fail(s, c, 500, NULL, "internal_error", "metrics: out of memory");
    bt_api_buf_free(&out);
    free(m);
    return ret;
}

static enum MHD_Result on_models(bt_api_server *s, struct MHD_Connection *c) {
    json_t *model = json_pack("{s:s, s:s, s:I, s:s, s:i}", "id", s->model->name, "object", "model",
                              "created", (json_int_t)s->created, "owned_by", "baton",
                              "max_model_len", (int)s->model->n_ctx);
    return send_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model));
}

static json_t *load_body(const call *k, bt_api_error *e) {
    json_error_t jerr;
    json_t *j = json_loadb(k->body.p ? k->body.p : "", k->body.n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        bt_api_error_set(e, 400, NULL, "invalid_json", "the body is not valid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        bt_api_error_set(e, 400, NULL, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

static enum MHD_Result on_tokenize(bt_api_server *s, struct MHD_Connection *c, call *k) {
    bt_api_error e;
    json_t *j = load_body(k, &e);
    if (!j)
        return send_error(s, c, &e);
    const json_t *prompt = json_object_get(j, "prompt");
    const json_t *add = json_object_get(j, "add_special");
    enum MHD_Result ret;
    if (!json_is_string(prompt)) {
        ret = fail(s, c, 400, "prompt", "invalid_type", "prompt must be a string");
    } else if (add && !json_is_boolean(add) && !json_is_null(add)) {
        ret = fail(s, c, 400, "add_special", "invalid_type", "add_special must be a boolean");
    } else {
        size_t len = json_string_length(prompt), need = 0;
        /* a token is at least one byte, plus BOS/EOS */
        size_t cap = len + 2;
        int32_t *ids = malloc(cap * sizeof *ids);
        bt_error err;
        bt_error_init(&err);
        bt_status st =
            ids ? bt_tokenize(s->model->vocab, json_string_value(prompt), len,
                              add ? json_is_true(add) : true, false, ids, cap, &need, &err)
                : BT_ERR_NOMEM;
        if (st != BT_OK) {
            ret = fail(s, c, st == BT_ERR_NOMEM ? 500 : 400, "prompt", "invalid_value",
                       "prompt: %s", err.msg[0] ? err.msg : bt_status_str(st));
        } else {
            json_t *a = json_array();
            for (size_t i = 0; i < need; i++)
                json_array_append_new(a, json_integer(ids[i]));
            ret = send_json(c, 200,
                            json_pack("{s:o, s:i, s:i}", "tokens", a, "count", (int)need,
                                      "max_model_len", (int)s->model->n_ctx));
        }
        free(ids);
    }
    json_decref(j);
    return ret;
}

static enum MHD_Result on_detokenize(bt_api_server *s, struct MHD_Connection *c, call *k) {
    bt_api_error e;
    json_t *j = load_body(k, &e);
    if (!j)
        return send_error(s, c, &e);
    const json_t *tokens = json_object_get(j, "tokens");
    int32_t n_vocab = bt_vocab_n_tokens(s->model->vocab);
    enum MHD_Result ret = MHD_NO;
    size_t n = json_array_size(tokens);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    bool ok = json_is_array(tokens) && ids;
    if (!json_is_array(tokens))
        ret = fail(s, c, 400, "tokens", "invalid_type", "tokens must be a list of token ids");
    for (size_t i = 0; ok && i < n; i++) {
        const json_t *t = json_array_get(tokens, i);
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) >= n_vocab) {
            ok = false;
            ret = fail(s, c, 400, "tokens", "invalid_value",
                       "tokens[%zu] is not a token id in [0, %d)", i, n_vocab);
        } else {
            ids[i] = (int32_t)json_integer_value(t);
        }
    }
    if (ok) {
        size_t cap = n * bt_vocab_max_piece_bytes(s->model->vocab) + 1, len = 0;
        char *text = malloc(cap);
        bt_error err;
        bt_error_init(&err);
        if (text &&
            bt_detokenize(s->model->vocab, ids, n, false, true, text, cap, &len, &err) == BT_OK)
            ret = send_json(c, 200, json_pack("{s:o}", "prompt", bt_api_json_text(text, len)));
        else
            ret = fail(s, c, 500, NULL, "internal_error", "detokenize: %s",
                       err.msg[0] ? err.msg : "out of memory");
        free(text);
    }
    free(ids);
    json_decref(j);
    return ret;
}

/* The content reader of a streamed response (connection thread): bytes from the outbox, or
 * a wait for the sink. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    call *k = cls;
    for (;;) {
        pthread_mutex_lock(&k->mu);
        if (k->out.n > k->out_off) {
            size_t n = k->out.n - k->out_off;
            if (n > max)
                n = max;
            memcpy(buf, k->out.p + k->out_off, n);
            k->out_off += n;
            if (k->out_off == k->out.n)
                k->out.n = k->out_off = 0;
            pthread_mutex_unlock(&k->mu);
            return (ssize_t)n;
        }
        bool done = k->done;
        pthread_mutex_unlock(&k->mu);
        if (done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!wait_for_engine(k))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls) {
    call_unref(cls);
}

static enum MHD_Result on_generate(bt_api_server *s, struct MHD_Connection *c, call *k) {
    if (is_draining(s))
        return fail(s, c, 503, NULL, "service_unavailable",
                    "the server is draining (shutting down) and takes no new requests");
    bt_api_error e;
    bt_api_kind kind = k->route->id == ROUTE_CHAT ? BT_API_CHAT : BT_API_COMPLETIONS;
    if (!bt_api_parse(s->model, kind, k->body.p ? k->body.p : "", k->body.n, &k->q, &e))
        return send_error(s, c, &e);
    pthread_mutex_lock(&s->mu);
    uint64_t seq = ++s->next_id;
    pthread_mutex_unlock(&s->mu);
    bt_api_resp_init(&k->resp, &k->q, s->model, seq, (int64_t)time(NULL));
    k->stream = k->q.stream;
    if (k->stream && !bt_api_sse_start(&k->resp, &k->out))
        return fail(s, c, 500, NULL, "internal_error", "out of memory");

    call_ref(k); /* the engine's, released by the sink at DONE */
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_engine_submit(s->engine, k->q.prompt, k->q.n_prompt, &k->q.params, sink, k,
                                    &k->req, &err);
    if (st != BT_OK) {
        call_unref(k);
        bt_api_error_from_status(&e, st, err.msg);
        return send_error(s, c, &e);
    }

    if (k->stream) {
        struct MHD_Response *r =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_read, k, stream_free);
        if (!r) {
            bt_engine_cancel(s->engine, k->req);
            return MHD_NO;
        }
        call_ref(k); /* the response's, released by stream_free */
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        if (ret != MHD_YES)
            bt_engine_cancel(s->engine, k->req);
        return ret;
    }

    for (;;) {
        pthread_mutex_lock(&k->mu);
        bool done = k->done;
        pthread_mutex_unlock(&k->mu);
        if (done)
            break;
        if (!wait_for_engine(k))
            return MHD_NO; /* client gone: close the connection */
    }
    if (k->failed)
        return send_json(c, k->error.http, bt_api_error_json(&k->error)); /* counted by the sink */
    return send_bytes(c, 200, "application/json", k->out.p, k->out.n);
}

/* ---- the access handler ---- */

static const route *find_route(const char *url, const char *method, bool *path_known) {
    *path_known = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(routes[i].path, url) != 0)
            continue;
        *path_known = true;
        if (strcmp(routes[i].method, method) == 0)
            return &routes[i];
    }
    return NULL;
}

bool bt_api_key_equal(const char *expected, const char *presented) {
    size_t ne = strlen(expected), np = strlen(presented);
    unsigned char diff = ne != np;
    for (size_t i = 0; i < np; i++)
        diff |= (unsigned char)(presented[i] ^ (ne ? expected[i % ne] : 0));
    return ne > 0 && diff == 0;
}

static bool authorized(bt_api_server *s, struct MHD_Connection *c) {
    if (!s->p.api_key || !s->p.api_key[0])
        return true;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    return bt_api_key_equal(s->p.api_key, h + 7);
}

static enum MHD_Result header_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    (void)kind;
    size_t *n = cls;
    *n += strlen(key) + (value ? strlen(value) : 0) + 4;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    bt_api_server *s = cls;
    call *k = *con_cls;
    if (!k) {
        /* First call: headers only. Route, key and size limits are answered before any body
         * byte is read. */
        bool path_known;
        const route *r = find_route(url, method, &path_known);
        conn *cn = conn_of(connection);
        k = call_new(s, connection, cn, r);
        if (!k)
            return MHD_NO;
        *con_cls = k;
        size_t hdr = strlen(url) + strlen(method) + 16;
        MHD_get_connection_values(connection, MHD_HEADER_KIND, header_bytes, &hdr);
        k->answered = true; /* unless the body is wanted below */
        if (hdr > s->p.max_header_bytes)
            return fail(s, connection, 431, NULL, "request_header_fields_too_large",
                        "the request's headers are %zu bytes, more than --max-header-bytes %zu",
                        hdr, s->p.max_header_bytes);
        if (!r && path_known)
            return fail(s, connection, 405, NULL, "method_not_allowed",
                        "method %s is not allowed on %s", method, url);
        if (!r)
            return fail(s, connection, 404, NULL, "not_found", "no route %s %s", method, url);
        if (!r->open && !authorized(s, connection))
            return fail(s, connection, 401, NULL, "invalid_api_key",
                        "missing or wrong API key: send \"Authorization: Bearer KEY\"");
        const char *cl = MHD_lookup_connection_value(connection, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno || *end || n > s->p.max_body_bytes)
                return fail(s, connection, 413, NULL, "request_too_large",
                            "the body (Content-Length %s) is larger than --max-body-bytes %zu", cl,
                            s->p.max_body_bytes);
        }
        if (strcmp(method, "POST") == 0) {
            k->answered = false; /* the body has to arrive within the idle limit first */
            return MHD_YES;
        }
        conn_set_busy(s, cn, true);
    } else if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (k->answered || k->too_large)
            return MHD_YES; /* the rest of a refused body */
        if (k->body.n + n > s->p.max_body_bytes) {
            /* A chunked body has no Content-Length: the limit is seen while reading. A response
             * cannot be queued in the middle of the body, so the rest is read and dropped (the
             * idle limit bounds how long) and the 413 follows. */
            k->too_large = true;
            bt_api_buf_free(&k->body);
            return MHD_YES;
        }
        if (!bt_api_buf_append(&k->body, upload_data, n))
            return MHD_NO;
        return MHD_YES;
    } else if (!k->answered) {
        k->answered = true;
        if (k->too_large)
            return fail(s, connection, 413, NULL, "request_too_large",
                        "the body is larger than --max-body-bytes %zu", s->p.max_body_bytes);
        conn_set_busy(s, k->conn, true);
    } else {
        return MHD_YES; /* the answer is queued */
    }

    switch (k->route->id) {
    case ROUTE_PAGE:
        return send_bytes(connection, 200, "text/html; charset=utf-8", bt_chat_page,
                          bt_chat_page_len);
    case ROUTE_HEALTH:
        return send_bytes(connection, 200, "application/json", "{}", 2);
    case ROUTE_READY:
        return on_ready(s, connection);
    case ROUTE_METRICS:
        return on_metrics(s, connection);
    case ROUTE_MODELS:
        return on_models(s, connection);
    case ROUTE_TOKENIZE:
        return on_tokenize(s, connection, k);
    case ROUTE_DETOKENIZE:
        return on_detokenize(s, connection, k);
    case ROUTE_COMPLETIONS:
    case ROUTE_CHAT:
        return on_generate(s, connection, k);
    case ROUTE_NONE:
        break;
    }
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    bt_api_server *s = cls;
    call *k = *con_cls;
    if (!k)
        return;
    *con_cls = NULL;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && k->req) {
        pthread_mutex_lock(&k->mu);
        k->client_gone = true;
        pthread_mutex_unlock(&k->mu);
        bt_engine_cancel(s->engine, k->req); /* idempotent, fine after DONE */
    }
    conn_set_busy(s, conn_of(connection), false);
    call_unref(k);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    (void)fmt;
    (void)ap; /* libmicrohttpd's per-connection complaints (client resets) are not ours */
}

bt_api_server_params bt_api_server_default_params(void) {
    bt_api_server_params p = {
        .host = "127.0.0.1",
        .port = 8080,
        .api_key = NULL,
        .max_body_bytes = 1 << 20,
        .max_header_bytes = 16 << 10,
        .max_connections = 256,
        .idle_timeout_s = 10,
    };
    return p;
}

bt_status bt_api_server_start(const bt_api_server_params *p, bt_engine *e, const bt_api_model *m,
                              bt_api_server **out, bt_error *err) {
    *out = NULL;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", p->port);
    int rc = getaddrinfo(p->host, port, &hints, &ai);
    if (rc != 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--host '%s': %s", p->host, gai_strerror(rc));
    bt_api_server *s = calloc(1, sizeof *s);
    if (!s) {
        freeaddrinfo(ai);
        return bt_error_set(err, BT_ERR_NOMEM, "server: out of memory");
    }
    s->p = *p;
    s->engine = e;
    s->model = m;
    s->created = (int64_t)time(NULL);
    s->metrics = bt_api_metrics_new();
    pthread_mutex_init(&s->mu, NULL);
    bt_cond_init_monotonic(&s->cv); /* the watchdog's deadlines */
    if (!s->metrics) {
        freeaddrinfo(ai);
        bt_api_server_stop(s, 0);
        return bt_error_set(err, BT_ERR_NOMEM, "server: out of memory");
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Headers share the connection's memory pool with the read buffer and the response
     * headers; the explicit --max-header-bytes check is in on_request. */
    size_t pool = p->max_header_bytes * 2 + 16384;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)p->max_connections,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE,
        (unsigned)1, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        int e0 = errno;
        bt_api_server_stop(s, 0);
        return bt_error_set(err, BT_ERR_IO, "cannot listen on %s:%d: %s", p->host, p->port,
                            e0 ? strerror(e0) : "libmicrohttpd refused to start");
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : p->port;
    if (pthread_create(&s->watchdog, NULL, watchdog_main, s) != 0) {
        bt_api_server_stop(s, 0);
        return bt_error_set(err, BT_ERR_INTERNAL, "server: cannot start the watchdog thread");
    }
    s->watchdog_started = true;
    *out = s;
    return BT_OK;
}

int bt_api_server_port(const bt_api_server *s) {
    return s->port;
}

void bt_api_server_drain(bt_api_server *s) {
    pthread_mutex_lock(&s->mu);
    s->draining = true;
    pthread_mutex_unlock(&s->mu);
}

void bt_api_server_stop(bt_api_server *s, int64_t grace_us) {
    if (!s)
        return;
    if (s->daemon) {
        MHD_socket lfd = MHD_quiesce_daemon(s->daemon);
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
        /* Requests whose answers are still being written get grace_us to finish. */
        int64_t deadline = bt_now_us() + grace_us;
        pthread_mutex_lock(&s->mu);
        while (s->n_calls > 0) {
            int64_t left = deadline - bt_now_us();
            if (left <= 0)
                break;
            bt_cond_wait_until(&s->cv, &s->mu, deadline);
        }
        pthread_mutex_unlock(&s->mu);
        MHD_stop_daemon(s->daemon);
    }
    if (s->watchdog_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->watchdog, NULL);
    }
    bt_api_metrics_free(s->metrics);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}
