/*
 * cmd_serve.c - `baton serve`: the cluster behind an OpenAI-compatible HTTP server
 * (coordinator/api/server.h; flags, routes and errors in docs/api.md).
 *
 * Threads: main opens the session (stages: threads of this process, or MPI ranks that serve
 * and return from bt_session_open), starts the HTTP server and then runs the engine loop
 * (bt_engine_serve: the transport belongs to this thread). SIGINT/SIGTERM arrive on the
 * sigwatch thread, which drains: the server refuses new requests, the engine finishes the
 * running ones until --shutdown-timeout and then cancels the rest; serve returns, the server
 * sends what is left and stops. A second signal cancels at once. Under mpirun the signal goes
 * to rank 0; stage ranks keep their own SIGTERM handling (they end when the engine tells them).
 *
 * Exit status: 0 after a drain, 1 when a stage failed (so a supervisor restarts it), 2 for
 * bad flags or a model that cannot be served.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "openai.h"
#include "server.h"
#include "sigwatch.h"
#include "term_watch.h"

/* After a stage failure the server answers 503 this long before the process exits. */
#define FAIL_LINGER_MS 2000

/* What the signal thread needs; guarded by mu (the server appears after the signal watch). */
typedef struct serve_ctl {
    pthread_mutex_t mu;
    bt_engine *engine;
    bt_api_server *server;
    int64_t shutdown_timeout_us;
    int n_signals;
} serve_ctl;

static void on_signal(int sig, void *ctx) {
    serve_ctl *c = ctx;
    /* mpirun's SIGTERM because a stage died: name it and end (term_watch.h); else drain */
    if (sig == SIGTERM)
        bt_term_watch_fire(sig);
    pthread_mutex_lock(&c->mu);
    int n = ++c->n_signals;
    if (c->server)
        bt_api_server_drain(c->server);
    if (c->engine) {
        if (n == 1)
            bt_engine_shutdown(c->engine, true,
                               c->shutdown_timeout_us ? bt_now_us() + c->shutdown_timeout_us : 0);
        else
            bt_engine_shutdown(c->engine, false, 0);
    }
    pthread_mutex_unlock(&c->mu);
    fprintf(stderr, "baton serve: %s: %s\n", strsignal(sig),
            n == 1 ? "draining (a second signal cancels the running requests)"
                   : "cancelling the running requests");
}

int bt_cmd_serve(int argc, char **argv) {
    bt_model_flags mf;
    bt_cluster_flags cf;
    bt_model_flags_init(&mf);
    bt_cluster_flags_init(&cf);
    bt_api_server_params sp = bt_api_server_default_params();
    const char *model_name = NULL, *chat_name = NULL;
    int64_t port = sp.port, max_queue = 0, queue_timeout = 60,
            max_body = (int64_t)sp.max_body_bytes, max_header = (int64_t)sp.max_header_bytes,
            max_conn = sp.max_connections, idle = sp.idle_timeout_s, shutdown_timeout = 30;
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--host", BT_CLI_STR, &sp.host, 0, 0, "address to listen on (127.0.0.1)"},
        {"--port", BT_CLI_INT, &port, 0, 65535, "TCP port (8080; 0 = any free port)"},
        {"--api-key", BT_CLI_STR, &sp.api_key, 0, 0, "require \"Authorization: Bearer KEY\""},
        {"--model-name", BT_CLI_STR, &model_name, 0, 0, "model id (the file name without .gguf)"},
        {"--max-queue", BT_CLI_INT, &max_queue, 1, 1 << 20,
         "requests queued + running; more get 503 (4 x max-seqs)"},
        {"--queue-timeout", BT_CLI_INT, &queue_timeout, 0, 86400,
         "seconds a request may wait for admission (60; 0 = none)"},
        {"--max-body-bytes", BT_CLI_INT, &max_body, 16, 1 << 30, "request body limit (1 MiB)"},
        {"--max-header-bytes", BT_CLI_INT, &max_header, 1024, 1 << 20,
         "request line + headers limit (16 KiB)"},
        {"--max-connections", BT_CLI_INT, &max_conn, 1, 65536, "open connections (256)"},
        {"--idle-timeout", BT_CLI_INT, &idle, 1, 86400,
         "seconds a connection may take to deliver a request (10)"},
        {"--shutdown-timeout", BT_CLI_INT, &shutdown_timeout, 0, 86400,
         "seconds SIGTERM lets running requests finish (30)"},
        {"--chat-template", BT_CLI_STR, &chat_name, 0, 0,
         "chatml, llama3, llama2, mistral, gemma, phi3 (default: the model's)"},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    const char *synopsis = "[flags]  (under mpirun: rank 0 serves HTTP, ranks 1.. are stages)";
    int rc = bt_cmd_parse("serve", synopsis, opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    sp.port = (int)port;
    sp.max_body_bytes = (size_t)max_body;
    sp.max_header_bytes = (size_t)max_header;
    sp.max_connections = (int)max_conn;
    sp.idle_timeout_s = (int)idle;
    cf.queue_capacity = max_queue;
    cf.queue_timeout_us = queue_timeout * 1000000;

    bt_error err;
    bt_error_init(&err);
    serve_ctl ctl = {.shutdown_timeout_us = shutdown_timeout * 1000000};
    pthread_mutex_init(&ctl.mu, NULL);
    if (bt_chat_template_flag_check("serve", chat_name) != 0) /* before the model loads */
        return 2;
    /* Before any thread starts (stage threads, MPI's, the server's), so all inherit the mask.
     * Stage ranks of an MPI job keep their own SIGTERM handling (term_watch.h): they end when
     * the coordinator tells them, or when mpirun ends the job. */
    bool stage_rank = bt_launch_is_stage_rank();
    if (!stage_rank && bt_sigwatch_start(on_signal, &ctl, &err) != BT_OK) {
        fprintf(stderr, "baton serve: %s\n", err.msg);
        return 1;
    }
    bt_session s;
    rc = bt_session_open(&s, "serve", &mf, &cf);
    if (rc >= 0) {
        if (!stage_rank)
            bt_sigwatch_stop();
        return rc;
    }

    bt_engine_info info;
    bt_engine_get_info(s.engine, &info);
    bt_cmd_api_model am; /* the server's threads read it until bt_api_server_stop below */
    if (bt_cmd_api_model_init(&am, "serve", &s, &mf, model_name, chat_name) != 0) {
        bt_sigwatch_stop();
        return bt_session_close(&s, 2);
    }
    const bt_api_model *model = &am.m;

    bt_api_server *server = NULL;
    bt_error_init(&err);
    bt_status st;
    if ((st = bt_api_server_start(&sp, s.engine, model, &server, &err)) != BT_OK) {
        /* a bad --host or a port in use is the user's to fix: 2 */
        fprintf(stderr, "baton serve: %s\n", err.msg);
        bt_sigwatch_stop();
        return bt_session_close(&s, bt_cmd_exit_status(st));
    }
    pthread_mutex_lock(&ctl.mu);
    ctl.engine = s.engine;
    ctl.server = server;
    bool early = ctl.n_signals > 0; /* a signal during start-up: drain at once */
    pthread_mutex_unlock(&ctl.mu);
    if (early) {
        bt_api_server_drain(server);
        bt_engine_shutdown(s.engine, true, bt_now_us() + ctl.shutdown_timeout_us);
    }
    char ready[2048];
    fprintf(stderr, "baton serve: listening on http://%s:%d (model %s, %d stages; %s)\n", sp.host,
            bt_api_server_port(server), model->name, info.n_stages,
            bt_session_ready_line(&s, ready, sizeof ready));

    bt_error_init(&err);
    st = bt_engine_serve(s.engine, &err);
    if (st != BT_OK) {
        /* A stage failed. The server stays up a moment, answering 503 (/ready, new requests)
         * so that a load balancer's health check sees the failure rather than a refused
         * connection, and the running requests' errors are written; then the exit. */
        fprintf(stderr, "baton serve: %s\n", err.msg[0] ? err.msg : bt_status_str(st));
        struct timespec linger = {.tv_sec = FAIL_LINGER_MS / 1000,
                                  .tv_nsec = (FAIL_LINGER_MS % 1000) * 1000000L};
        nanosleep(&linger, NULL);
    }
    /* Every request has had its DONE: give the connection threads a moment to send it. */
    bt_api_server_drain(server);
    pthread_mutex_lock(&ctl.mu);
    ctl.server = NULL;
    ctl.engine = NULL;
    pthread_mutex_unlock(&ctl.mu);
    bt_api_server_stop(server, 5 * 1000000);
    bt_sigwatch_stop();
    pthread_mutex_destroy(&ctl.mu);
    if (st == BT_OK)
        fprintf(stderr, "baton serve: drained, exiting\n");
    return bt_session_close(&s, st == BT_OK ? 0 : 1);
}
