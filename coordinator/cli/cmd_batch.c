/*
 * cmd_batch.c - `baton batch`: an OpenAI batch file through the cluster, exactly once across
 * crashes and restarts (flags, formats and exit codes in docs/api.md, "baton batch").
 *
 * Order of work on the coordinator: the input is scanned whole (malformed lines, missing or
 * repeated custom_ids refuse the job: nothing is computed), the output journal is opened (its
 * sidecar must name this input; a torn last line is dropped; the custom_ids it holds are
 * skipped), then the model and the stages come up and the run starts.
 *
 * Threads during the run:
 *   main      the engine loop (bt_engine_serve: the transport belongs to this thread); the
 *             sink runs here at each request's DONE and renders its output line (the same
 *             body `baton serve` returns) into `pending`;
 *   feeder    reads the input again, parses each line (bt_batch_entry_parse, then
 *             bt_api_parse_json: the server's parser and messages), writes a 400 line for a
 *             request the server would refuse, and submits the rest while fewer than
 *             --max-queue are live, so the engine always has requests waiting to be admitted
 *             and the pipeline never drains between groups; at the end it asks the engine to
 *             finish (drain);
 *   writer    appends `pending` to the output and makes it durable (fdatasync) every
 *             --sync-lines lines or --sync-ms, whichever comes first; draws the progress;
 *   sigwatch  SIGTERM/SIGUSR1/SIGINT: stop feeding, give running requests --drain-timeout,
 *             then abandon them (not written: a rerun computes them); a second signal abandons
 *             them at once.
 * run.mu guards everything the threads share (the fields marked so below); run.cv wakes the
 * feeder (room in the queue, stop) and the writer (lines, the end).
 *
 * A request is written only when it ended for a reason a rerun would give again: a result
 * (200) or a refusal (400/404). One that was cancelled (drain) or failed with the cluster
 * (a stage died: 503) is left out, and the exit status says to run again (1, or 75 after a
 * signal).
 */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "batch_io.h"
#include "chat.h"
#include "clock.h"
#include "cmd_common.h"
#include "commands.h"
#include "openai.h"
#include "sigwatch.h"
#include "term_watch.h"
#include "transport.h"

#define EXIT_LINE_ERRORS 3
#define EXIT_INTERRUPTED 75                 /* EX_TEMPFAIL: run again to go on */
#define PENDING_MAX_BYTES ((size_t)1 << 20) /* lines the feeder may queue ahead of the writer */

/* ---- latency percentiles in constant memory ---- */

/* Bucket i holds [10 us * 1.05^i, 10 us * 1.05^(i+1)): 5% resolution up to about an hour. */
#define HIST_BUCKETS 440
typedef struct hist {
    uint64_t n;
    uint64_t b[HIST_BUCKETS];
} hist;

static void hist_add(hist *h, double us) {
    int i = us <= 10 ? 0 : (int)(log(us / 10) / log(1.05));
    h->b[i < HIST_BUCKETS ? i : HIST_BUCKETS - 1]++;
    h->n++;
}

/* The q-quantile in ms (the geometric middle of its bucket); 0 when empty. */
static double hist_ms(const hist *h, double q) {
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->n), seen = 0;
    int i = 0;
    for (; i < HIST_BUCKETS - 1; i++)
        if ((seen += h->b[i]) >= rank)
            break;
    return 10 * pow(1.05, i + 0.5) / 1e3;
}

/* ---- the run ---- */

typedef struct batch_run {
    /* fixed before the threads start */
    bt_engine *engine;
    const bt_api_model *model;
    bt_batch_input *in;   /* feeder's */
    bt_batch_output *out; /* writer's (bt_batch_output_has: any thread) */
    int64_t n_requests;   /* of the input */
    uint64_t input_hash;  /* the scan's */
    int64_t n_done_before, n_failed_before;
    int64_t max_queue;
    bool sync; /* false: --no-sync */
    int64_t sync_lines, sync_us, drain_us, progress_us;
    bool tty;
    int64_t t_start;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu */
    bt_api_buf pending; /* whole output lines, not yet appended (the feeder's refusals: at
                           most about PENDING_MAX_BYTES) */
    int64_t n_pending;
    int64_t n_live;   /* submitted, DONE not yet */
    bool feeder_done; /* it has submitted or queued every line it will */
    bool engine_done; /* serve returned: no sink call comes any more */
    int stop_sig;     /* the first signal (0: none) */
    int n_signals;
    bool failed;         /* an I/O error or the cluster failed: stop */
    char fail_msg[512];  /* the first failure */
    int64_t n_ok, n_err; /* lines made this run (200 / refusals) */
    int64_t n_written;   /* of them, appended */
    int64_t n_durable;   /* of them, synced */
    int64_t n_abandoned; /* cancelled or failed with the cluster: not written */
    int64_t n_skipped;   /* already in the output */
    uint64_t prompt_tokens, completion_tokens;
    int64_t n_syncs;
    hist ttft, tpot;
    uint64_t next_seq;
} batch_run;

/* One submitted request: what the sink needs to render its line. Freed by the sink at DONE. */
typedef struct batch_call {
    batch_run *run;
    bt_api_resp resp;
    char custom_id[BT_BATCH_MAX_CUSTOM_ID_BYTES + 1];
} batch_call;

/* Records the first failure and stops the run (mu held). */
static void fail_locked(batch_run *b, const char *msg) {
    if (!b->failed)
        snprintf(b->fail_msg, sizeof b->fail_msg, "%s", msg);
    b->failed = true;
    pthread_cond_broadcast(&b->cv);
}

/* Queues one output line (mu held). */
static void push_locked(batch_run *b, const bt_api_buf *line, bool ok) {
    if (!bt_api_buf_append(&b->pending, line->p, line->n)) {
        fail_locked(b, "out of memory");
        return;
    }
    b->n_pending++;
    if (ok)
        b->n_ok++;
    else
        b->n_err++;
    pthread_cond_broadcast(&b->cv);
}

static uint64_t next_seq(batch_run *b) {
    pthread_mutex_lock(&b->mu);
    uint64_t seq = ++b->next_seq;
    pthread_mutex_unlock(&b->mu);
    return seq;
}

/* The line of a refused request: the error body the server would send, with its status. */
static bool error_line(batch_run *b, bt_api_buf *line, const char *custom_id,
                       const bt_api_error *e) {
    char request_id[48];
    snprintf(request_id, sizeof request_id, "batch-err-%lld-%llu", (long long)time(NULL),
             (unsigned long long)next_seq(b));
    json_t *body = bt_api_error_json(e);
    bool ok = body && bt_batch_record(line, custom_id, e->http, request_id, body);
    json_decref(body);
    return ok;
}

static bool any_cancelled(const bt_event *ev) {
    for (int i = 0; i < ev->n_completions; i++)
        if (ev->completions[i].finish == BT_FINISH_CANCELLED)
            return true;
    return ev->n_completions == 0 && ev->finish == BT_FINISH_CANCELLED;
}

/* The engine's sink (engine thread): at DONE, the request's output line. */
static void sink(const bt_event *ev, void *ctx) {
    if (ev->kind != BT_EVENT_DONE)
        return;
    batch_call *c = ctx;
    batch_run *b = c->run;
    bt_api_buf line = {0};
    bool ok = false, written = false, rendered = true;
    bt_api_error e;
    if (ev->status == BT_OK && !any_cancelled(ev)) {
        json_t *body = bt_api_body_json(&c->resp, ev);
        rendered = body && bt_batch_record(&line, c->custom_id, 200, c->resp.id, body);
        json_decref(body);
        ok = written = true;
    } else if (ev->status != BT_OK) {
        /* A refusal a rerun would repeat (400) is the request's result; a failure of the
         * cluster (503) or a timeout is not: the request runs again. */
        bt_api_error_from_status(&e, ev->status, ev->message);
        if (e.http >= 400 && e.http < 500) {
            rendered = error_line(b, &line, c->custom_id, &e);
            written = true;
        }
    }
    pthread_mutex_lock(&b->mu);
    b->n_live--;
    if (!rendered)
        fail_locked(b, "out of memory");
    else if (written)
        push_locked(b, &line, ok);
    else
        b->n_abandoned++;
    if (ok) {
        b->prompt_tokens += (uint64_t)ev->usage_prompt_tokens;
        b->completion_tokens += (uint64_t)ev->usage_completion_tokens;
        if (ev->t_first_token_us > 0) {
            hist_add(&b->ttft, (double)(ev->t_first_token_us - ev->t_submit_us));
            if (ev->n_generated > 1)
                hist_add(&b->tpot,
                         (double)(ev->t_done_us - ev->t_first_token_us) / (ev->n_generated - 1));
        }
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    bt_api_buf_free(&line);
    free(c);
}

/* Feeder: true to go on, false when the run stops (signal, failure). */
static bool wait_for_room(batch_run *b) {
    pthread_mutex_lock(&b->mu);
    while (b->n_live >= b->max_queue && !b->stop_sig && !b->failed)
        pthread_cond_wait(&b->cv, &b->mu);
    bool go = !b->stop_sig && !b->failed;
    if (go)
        b->n_live++;
    pthread_mutex_unlock(&b->mu);
    return go;
}

/* Feeder: one line. False when the run stops. */
static bool feed_line(batch_run *b, const bt_batch_line *l) {
    bt_batch_entry en;
    bt_api_error e;
    bt_api_req q;
    bt_api_buf line = {0};
    bool parsed = bt_batch_entry_parse(l, &en, &e);
    if (bt_batch_output_has(b->out, en.custom_id)) {
        bt_batch_entry_deinit(&en);
        pthread_mutex_lock(&b->mu);
        b->n_skipped++;
        pthread_mutex_unlock(&b->mu);
        return true;
    }
    if (parsed && (parsed = bt_api_parse_json(b->model, en.kind, en.body, &q, &e)) && q.stream) {
        bt_api_req_deinit(&q);
        parsed = bt_api_error_set(&e, 400, "stream", "invalid_value",
                                  "\"stream\": true is not possible in a batch: each result is "
                                  "written whole");
    }
    bool go = true;
    if (parsed && !(go = wait_for_room(b))) {
        bt_api_req_deinit(&q);
    } else if (parsed) {
        batch_call *c = calloc(1, sizeof *c);
        bt_status st = BT_ERR_NOMEM;
        bt_error err;
        bt_error_init(&err);
        if (c) {
            c->run = b;
            snprintf(c->custom_id, sizeof c->custom_id, "%s", en.custom_id);
            bt_api_resp_init(&c->resp, &q, b->model, next_seq(b), (int64_t)time(NULL));
            /* Never BT_ERR_BUSY: fewer than max_queue (<= the engine's capacity) are live, and
             * the engine stops counting a request before its DONE reaches the sink. */
            st = bt_engine_submit(b->engine, q.prompt, q.n_prompt, &q.params, sink, c, NULL, &err);
        }
        bt_api_req_deinit(&q);
        if (st != BT_OK) {
            free(c);
            pthread_mutex_lock(&b->mu);
            b->n_live--;
            pthread_mutex_unlock(&b->mu);
            bt_api_error_from_status(&e, st, err.msg[0] ? err.msg : bt_status_str(st));
            if (e.http >= 500) { /* the engine is draining or failed: nothing more runs */
                pthread_mutex_lock(&b->mu);
                if (!b->stop_sig)
                    fail_locked(b, e.message);
                pthread_mutex_unlock(&b->mu);
                go = false;
            } else {
                parsed = false; /* the engine's own check (context, parameters): a 400 line */
            }
        }
    }
    if (!parsed && go) {
        bool rendered = error_line(b, &line, en.custom_id, &e);
        pthread_mutex_lock(&b->mu);
        /* Refusals cost no compute, so nothing else bounds how fast they come: wait while the
         * writer is behind. (Results are bounded by --max-queue.) */
        while (b->pending.n >= PENDING_MAX_BYTES && !b->failed)
            pthread_cond_wait(&b->cv, &b->mu);
        if (rendered)
            push_locked(b, &line, false);
        else
            fail_locked(b, "out of memory");
        go = !b->failed;
        pthread_mutex_unlock(&b->mu);
    }
    bt_api_buf_free(&line);
    bt_batch_entry_deinit(&en);
    return go;
}

static void *feeder_main(void *arg) {
    batch_run *b = arg;
    bt_error err;
    bt_error_init(&err);
    bt_status st = bt_batch_input_rewind(b->in, &err);
    bool eof = false;
    while (st == BT_OK) {
        bt_batch_line l;
        if ((st = bt_batch_input_next(b->in, &l, &eof, &err)) != BT_OK || eof)
            break;
        if (!feed_line(b, &l))
            break;
    }
    pthread_mutex_lock(&b->mu);
    if (st == BT_OK && eof && bt_batch_input_hash(b->in) != b->input_hash)
        st = bt_error_set(&err, BT_ERR_IO,
                          "the input changed since it was checked (its hash is not the same); "
                          "the lines written are results of the old input: --restart starts over");
    if (st != BT_OK) /* the input changed since the scan, or became unreadable */
        fail_locked(b, err.msg);
    b->feeder_done = true;
    bool failed = b->failed;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* Everything is submitted: the engine ends when the last request is done. A failure ends
     * it now (the requests it abandons run again next time). */
    bt_engine_shutdown(b->engine, !failed, 0);
    return NULL;
}

/* ---- the writer: durability and progress ---- */

static void fmt_eta(char *out, size_t cap, double s) {
    if (!(s >= 0) || s > 99 * 3600)
        snprintf(out, cap, "--:--");
    else if (s >= 3600)
        snprintf(out, cap, "%d:%02d:%02d", (int)s / 3600, (int)s / 60 % 60, (int)s % 60);
    else
        snprintf(out, cap, "%d:%02d", (int)s / 60, (int)s % 60);
}

/* One progress report (mu held): a bar redrawn in place on a terminal, a line otherwise. */
static void progress_locked(const batch_run *b, bool final) {
    double wall = (double)(bt_now_us() - b->t_start) / 1e6;
    int64_t done = b->n_done_before + b->n_durable, total = b->n_requests;
    int64_t run_done = b->n_durable;
    double rps = wall > 0 ? (double)run_done / wall : 0;
    double tps = wall > 0 ? (double)b->completion_tokens / wall : 0;
    char eta[32];
    fmt_eta(eta, sizeof eta, rps > 0 ? (double)(total - done) / rps : -1);
    if (b->tty) {
        enum { W = 30 };
        char bar[W + 1];
        int fill = total ? (int)(W * done / total) : W;
        for (int i = 0; i < W; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[W] = '\0';
        fprintf(stderr, "\r[%s] %lld/%lld  %.1f req/s  %.0f tok/s  ETA %s\033[K%s", bar,
                (long long)done, (long long)total, rps, tps, eta, final ? "\n" : "");
    } else if (!final) {
        fprintf(stderr,
                "baton batch: %lld/%lld done (%lld failed), %.1f req/s, %.0f tok/s, ETA %s\n",
                (long long)done, (long long)total, (long long)(b->n_failed_before + b->n_err), rps,
                tps, eta);
    }
}

/* Test hook (docs/testing.md): with BT_FAULT_BATCH_TORN_LINE=N the writer appends only the
 * first half of the N-th line it writes in this run and then SIGKILLs its own process: a crash
 * in the middle of a write (tests/mpi/test_batch_crash.sh). */
static void fault_torn_line(batch_run *b, const bt_api_buf *take, int64_t n) {
    static int64_t at = -1;
    if (at < 0) {
        const char *v = getenv("BT_FAULT_BATCH_TORN_LINE");
        at = v ? atoll(v) : 0;
    }
    if (at <= b->n_written || at > b->n_written + n)
        return;
    size_t begin = 0, end = 0;
    for (int64_t k = b->n_written + 1;; k++) {
        end = (size_t)((const char *)memchr(take->p + begin, '\n', take->n - begin) - take->p);
        if (k == at)
            break;
        begin = end + 1;
    }
    bt_error err;
    bt_batch_output_append(b->out, take->p, begin + (end - begin) / 2, &err);
    raise(SIGKILL);
}

static void *writer_main(void *arg) {
    batch_run *b = arg;
    bt_api_buf take = {0};
    int64_t unsynced = 0, t_unsynced = 0; /* lines appended, not synced; when the first was */
    int64_t tick_us = b->tty ? 500000 : b->progress_us, t_tick = bt_now_us() + tick_us;
    bt_error err;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (b->n_pending == 0 && !(b->engine_done && b->feeder_done)) {
            int64_t now = bt_now_us();
            int64_t until = t_tick;
            if (unsynced && t_unsynced + b->sync_us < until)
                until = t_unsynced + b->sync_us;
            if (now >= until)
                break;
            bt_cond_wait_until(&b->cv, &b->mu, until);
        }
        bt_api_buf tmp = b->pending;
        b->pending = take;
        take = tmp;
        int64_t n = b->n_pending;
        b->n_pending = 0;
        if (n)
            pthread_cond_broadcast(&b->cv);          /* room in `pending` for the feeder */
        bool end = b->engine_done && b->feeder_done; /* nothing more can come */
        pthread_mutex_unlock(&b->mu);

        bt_error_init(&err);
        bt_status st = BT_OK;
        if (n > 0)
            fault_torn_line(b, &take, n); /* reads n_written: only this thread changes it */
        if (n > 0 && (st = bt_batch_output_append(b->out, take.p, take.n, &err)) == BT_OK) {
            if (!unsynced)
                t_unsynced = bt_now_us();
            unsynced += n;
        }
        take.n = 0;
        int64_t now = bt_now_us();
        bool sync_now = unsynced && (end || unsynced >= b->sync_lines ||
                                     now - t_unsynced >= b->sync_us || st != BT_OK);
        int64_t synced = 0;
        if (sync_now) {
            bt_error serr;
            bt_error_init(&serr);
            bt_status sst = bt_batch_output_sync(b->out, &serr);
            if (sst == BT_OK)
                synced = unsynced;
            else if (st == BT_OK)
                st = sst, err = serr;
            unsynced = 0;
        }

        pthread_mutex_lock(&b->mu);
        b->n_written += n;
        b->n_durable += synced;
        b->n_syncs += sync_now && b->sync; /* --no-sync: no fdatasync was made */
        if (st != BT_OK)
            fail_locked(b, err.msg);
        if (now >= t_tick) {
            progress_locked(b, false);
            t_tick = now + tick_us;
        }
        if (st != BT_OK || (end && b->n_pending == 0))
            break;
    }
    if (b->failed && b->engine && !b->engine_done) {
        pthread_mutex_unlock(&b->mu);
        bt_engine_shutdown(b->engine, false, 0); /* the output is broken: stop computing */
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    bt_api_buf_free(&take);
    return NULL;
}

/* ---- signals ---- */

/* The run the signal thread acts on, set while its threads exist; a signal that comes before
 * (the model is loading) is kept in g_early_sig and stops the run as it starts. */
static pthread_mutex_t g_signal_mu = PTHREAD_MUTEX_INITIALIZER;
static batch_run *g_signal_run; /* under g_signal_mu */
static int g_early_sig;         /* under g_signal_mu */

static void on_signal(int sig, void *ctx) {
    (void)ctx;
    if (sig == SIGTERM)
        bt_term_watch_fire(sig); /* mpirun's SIGTERM because a stage died: name it, end */
    pthread_mutex_lock(&g_signal_mu);
    batch_run *b = g_signal_run;
    int n = 0, early = g_early_sig;
    if (!b && !early)
        g_early_sig = sig;
    if (b) {
        pthread_mutex_lock(&b->mu);
        n = ++b->n_signals;
        if (!b->stop_sig)
            b->stop_sig = sig;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        bt_engine_shutdown(b->engine, n == 1, n == 1 ? bt_now_us() + b->drain_us : 0);
    }
    pthread_mutex_unlock(&g_signal_mu);
    if (!b && early) { /* a second one before the run: end as the signal would */
        bt_sigwatch_die(sig);
        return;
    }
    if (!b) {
        fprintf(stderr, "baton batch: %s: the run stops as soon as the model is up\n",
                strsignal(sig));
        return;
    }
    fprintf(stderr,
            n == 1 ? "\nbaton batch: %s: no new requests; the running ones get %.0f s, then are "
                     "left for the next run (a second signal leaves them now)\n"
                   : "\nbaton batch: %s: leaving the running requests for the next run\n",
            strsignal(sig), (double)b->drain_us / 1e6);
}

/* ---- the command ---- */

/* Stage busy time (us) per stage, from the transport's thread. */
static void stage_busy(const bt_engine *e, uint64_t *busy, int n) {
    const bt_cluster *c = bt_engine_cluster(e);
    for (int i = 0; i < n; i++)
        busy[i] = bt_cluster_stage(c, i)->busy_us;
}

static void summary(const batch_run *b, const uint64_t *busy0, const uint64_t *busy1, int n_stages,
                    const bt_engine_metrics *m0, const bt_engine_metrics *m1) {
    double wall = (double)(bt_now_us() - b->t_start) / 1e6;
    int64_t total_lines = b->n_done_before + b->n_durable;
    fprintf(stderr,
            "baton batch: %lld of %lld requests have a line: %lld ok, %lld refused; this run: "
            "%lld lines (%lld ok) in %.1f s, %.2f req/s",
            (long long)total_lines, (long long)b->n_requests,
            (long long)(total_lines - b->n_failed_before - b->n_err),
            (long long)(b->n_failed_before + b->n_err), (long long)b->n_durable, (long long)b->n_ok,
            wall, wall > 0 ? (double)b->n_durable / wall : 0.0);
    if (b->n_skipped)
        fprintf(stderr, ", %lld skipped (done before)", (long long)b->n_skipped);
    if (b->n_abandoned)
        fprintf(stderr, ", %lld left for the next run", (long long)b->n_abandoned);
    fprintf(stderr,
            "\nbaton batch: tokens: %llu prompt, %llu generated (%.1f tok/s generated, %.1f "
            "tok/s prompt + generated)\n",
            (unsigned long long)b->prompt_tokens, (unsigned long long)b->completion_tokens,
            wall > 0 ? (double)b->completion_tokens / wall : 0.0,
            wall > 0 ? (double)(b->prompt_tokens + b->completion_tokens) / wall : 0.0);
    fprintf(stderr,
            "baton batch: TTFT p50 %.1f ms, p90 %.1f ms, p99 %.1f ms (from submission); TPOT p50 "
            "%.2f ms, p90 %.2f ms, p99 %.2f ms\n",
            hist_ms(&b->ttft, 0.5), hist_ms(&b->ttft, 0.9), hist_ms(&b->ttft, 0.99),
            hist_ms(&b->tpot, 0.5), hist_ms(&b->tpot, 0.9), hist_ms(&b->tpot, 0.99));
    fprintf(stderr, "baton batch: pipeline: stage busy");
    for (int i = 0; i < n_stages; i++)
        fprintf(stderr, "%s %.1f%%", i ? "," : "",
                wall > 0 ? 100.0 * (double)(busy1[i] - busy0[i]) / 1e6 / wall : 0.0);
    uint64_t steps = m1->steps - m0->steps, rows = m1->rows - m0->rows;
    fprintf(stderr,
            " of the run (the rest is the bubble: waiting for work); %llu micro-batches of "
            "%.1f rows on average; %lld fdatasync%s\n",
            (unsigned long long)steps, steps ? (double)rows / (double)steps : 0.0,
            (long long)b->n_syncs, b->n_syncs == 1 ? "" : "s");
}

/* Ends the job before the run with `status` (a refusal, or nothing left to do). Under mpirun
 * the stages wait for the coordinator's handshake: they are brought up and told to end, so the
 * job ends in order. */
static int end_before_run(bt_model_flags *mf, bt_cluster_flags *cf, int status) {
    if (bt_mpi_launched()) {
        bt_session s;
        if (bt_session_open(&s, "batch", mf, cf) < 0)
            return bt_session_close(&s, status);
    }
    return status;
}

/* What the command line asked for. */
typedef struct batch_flags {
    const char *input, *output, *model_name, *chat_name;
    bool restart, no_sync;
    int64_t sync_lines, sync_ms, max_queue, drain_timeout, max_line, progress_interval;
} batch_flags;

/* The coordinator's work before anything runs: the whole input is scanned, then the output
 * journal opened. Returns -1 to go on (in, out, scan and st filled), else the exit status:
 * 2 refused, 0 or 3 when every request already has a line (then nothing is left open). */
static int open_files(const batch_flags *f, bt_batch_input **in, bt_batch_output **out,
                      bt_batch_scan *scan, bt_batch_output_state *st) {
    bt_error err;
    bt_error_init(&err);
    struct stat si, so;
    if (stat(f->input, &si) == 0 && stat(f->output, &so) == 0 && si.st_dev == so.st_dev &&
        si.st_ino == so.st_ino) {
        fprintf(stderr, "baton batch: --output %s is the input file\n", f->output);
        return 2;
    }
    if (bt_batch_input_open(f->input, (size_t)f->max_line, in, &err) != BT_OK ||
        bt_batch_input_scan(*in, scan, &err) != BT_OK) {
        fprintf(stderr, "baton batch: %s\n", err.msg);
        goto refused;
    }
    if (scan->n_problems > 0) {
        fprintf(stderr, "baton batch: %s: %lld line%s refused, nothing was run:\n%s", f->input,
                (long long)scan->n_problems, scan->n_problems == 1 ? " is" : "s are", scan->report);
        goto refused;
    }
    if (scan->n_requests == 0) {
        fprintf(stderr, "baton batch: %s has no requests\n", f->input);
        goto refused;
    }
    bt_batch_output_params op = {.path = f->output,
                                 .input_hash = scan->input_hash,
                                 .input_bytes = scan->input_bytes,
                                 .n_requests = scan->n_requests,
                                 .restart = f->restart,
                                 .sync = !f->no_sync};
    if (bt_batch_output_open(&op, out, st, &err) != BT_OK) {
        fprintf(stderr, "baton batch: %s\n", err.msg);
        goto refused;
    }
    if (st->torn_bytes)
        fprintf(stderr,
                "baton batch: %s: dropped a torn last line (%lld bytes) of an interrupted write\n",
                f->output, (long long)st->torn_bytes);
    if (st->resumed)
        fprintf(stderr, "baton batch: %s: resuming: %lld of %lld requests are done\n", f->output,
                (long long)st->n_done, (long long)scan->n_requests);
    if (st->n_done < scan->n_requests)
        return -1;
    fprintf(stderr, "baton batch: %s: every request already has a line\n", f->output);
    bt_batch_output_close(*out);
    bt_batch_input_close(*in);
    *out = NULL;
    *in = NULL;
    return st->n_failed ? EXIT_LINE_ERRORS : 0;
refused:
    bt_batch_input_close(*in);
    *in = NULL;
    return 2;
}

/* The exit status of a run that ended, with its last words on stderr. */
static int outcome(const batch_run *b, const char *output) {
    int64_t total = b->n_done_before + b->n_durable;
    const char *again = "run the same command again to go on";
    if (b->failed) {
        fprintf(stderr, "baton batch: %s\nbaton batch: %lld of %lld requests are done; %s\n",
                b->fail_msg, (long long)total, (long long)b->n_requests, again);
        return 1;
    }
    if (total < b->n_requests && (b->stop_sig || b->n_abandoned)) {
        fprintf(stderr, "baton batch: %lld of %lld requests are done; %s\n", (long long)total,
                (long long)b->n_requests, again);
        return b->stop_sig ? EXIT_INTERRUPTED : 1;
    }
    if (total != b->n_requests) {
        /* Every line was fed and none left over, yet the count is off: the input changed since
         * the scan, or two custom_ids share a 64-bit hash (batch_io.h). Not something a
         * rerun mends. */
        fprintf(stderr,
                "baton batch: %s has %lld lines for %lld requests: was the input changed "
                "during the run? --restart starts over\n",
                output, (long long)total, (long long)b->n_requests);
        return 1;
    }
    fprintf(stderr, "baton batch: wrote %s\n", output);
    return b->n_failed_before + b->n_err > 0 ? EXIT_LINE_ERRORS : 0;
}

/* The run on the coordinator: feeder and writer threads around the engine loop on this
 * thread. Returns the exit status; *serve_st is the engine's outcome (a stage failure). */
static int run(batch_run *b, const bt_engine_info *info, const char *output, bt_status *serve_st) {
    uint64_t busy0[BT_ENGINE_MAX_STAGES] = {0}, busy1[BT_ENGINE_MAX_STAGES] = {0};
    int n_stages = info->n_stages < BT_ENGINE_MAX_STAGES ? info->n_stages : BT_ENGINE_MAX_STAGES;
    stage_busy(b->engine, busy0, n_stages);
    bt_engine_metrics m0, m1;
    bt_engine_get_metrics(b->engine, &m0);
    b->t_start = bt_now_us();

    pthread_mutex_lock(&g_signal_mu);
    g_signal_run = b;
    b->stop_sig = g_early_sig; /* the feeder submits nothing: the engine ends at once */
    pthread_mutex_unlock(&g_signal_mu);
    pthread_t feeder, writer;
    bool feeder_up = pthread_create(&feeder, NULL, feeder_main, b) == 0;
    bool writer_up = feeder_up && pthread_create(&writer, NULL, writer_main, b) == 0;
    if (!writer_up) {
        pthread_mutex_lock(&b->mu);
        fail_locked(b, "cannot start a thread");
        pthread_mutex_unlock(&b->mu);
        bt_engine_shutdown(b->engine, false, 0);
    }
    bt_error err;
    bt_error_init(&err);
    *serve_st = bt_engine_serve(b->engine, &err);
    stage_busy(b->engine, busy1, n_stages);
    bt_engine_get_metrics(b->engine, &m1);

    pthread_mutex_lock(&b->mu);
    b->engine_done = true;
    if (*serve_st != BT_OK)
        fail_locked(b, err.msg[0] ? err.msg : bt_status_str(*serve_st));
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (feeder_up)
        pthread_join(feeder, NULL);
    if (writer_up)
        pthread_join(writer, NULL);
    pthread_mutex_lock(&g_signal_mu);
    g_signal_run = NULL;
    pthread_mutex_unlock(&g_signal_mu);

    progress_locked(b, true); /* no other thread is left */
    summary(b, busy0, busy1, n_stages, &m0, &m1);
    return outcome(b, output);
}

int bt_cmd_batch(int argc, char **argv) {
    bt_model_flags mf;
    bt_cluster_flags cf;
    bt_model_flags_init(&mf);
    bt_cluster_flags_init(&cf);
    batch_flags f = {.sync_lines = 64,
                     .sync_ms = 1000,
                     .drain_timeout = 30,
                     .max_line = (int64_t)BT_BATCH_MAX_LINE_BYTES_DEFAULT,
                     .progress_interval = 10};
    const bt_cli_opt opts[] = {
        BT_MODEL_FLAG_OPTS(mf),
        BT_CLUSTER_FLAG_OPTS(cf),
        {"--input", BT_CLI_STR, &f.input, 0, 0, "the batch file: one request a line (required)"},
        {"--output", BT_CLI_STR, &f.output, 0, 0,
         "results, one line per custom_id; rerunning resumes (required)"},
        {"--restart", BT_CLI_FLAG, &f.restart, 0, 0, "start over: truncate the output"},
        {"--sync-lines", BT_CLI_INT, &f.sync_lines, 1, 1 << 24,
         "fdatasync the output once this many lines are unsynced (64)"},
        {"--sync-ms", BT_CLI_INT, &f.sync_ms, 1, 3600000,
         "... or this long after the oldest unsynced line (1000)"},
        {"--no-sync", BT_CLI_FLAG, &f.no_sync, 0, 0,
         "never fdatasync (measures what durability costs)"},
        {"--max-queue", BT_CLI_INT, &f.max_queue, 1, 1 << 20,
         "requests submitted and not done (4 x max-seqs)"},
        {"--drain-timeout", BT_CLI_INT, &f.drain_timeout, 0, 86400,
         "seconds SIGTERM/SIGUSR1 lets running requests finish (30)"},
        {"--max-line-bytes", BT_CLI_INT, &f.max_line, 64, (int64_t)1 << 32,
         "longest input line (16 MiB)"},
        {"--progress-interval", BT_CLI_INT, &f.progress_interval, 1, 86400,
         "seconds between progress lines when stderr is not a terminal (10)"},
        {"--model-name", BT_CLI_STR, &f.model_name, 0, 0,
         "model id the bodies may name (the file name without .gguf)"},
        {"--chat-template", BT_CLI_STR, &f.chat_name, 0, 0,
         "chatml, llama3, llama2, mistral, gemma, phi3 (default: the model's)"},
    };
    int n_opts = (int)(sizeof opts / sizeof opts[0]);
    const char *synopsis = "--input IN.jsonl --output OUT.jsonl [flags]  (under mpirun: rank 0 "
                           "coordinates, ranks 1.. are stages)";
    int rc = bt_cmd_parse("batch", synopsis, opts, n_opts, &mf.help, argc, argv);
    if (rc >= 0)
        return rc;
    if (!f.input || !f.output) {
        fprintf(stderr, "baton batch: %s is required\n", !f.input ? "--input" : "--output");
        return 2;
    }
    if (bt_chat_template_flag_check("batch", f.chat_name) != 0)
        return 2;
    cf.queue_timeout_us = 0; /* a batch waits as long as it takes */

    /* Stage ranks go straight to serving; the coordinator checks its files first. */
    bool stage_rank = bt_launch_is_stage_rank();
    bt_batch_input *in = NULL;
    bt_batch_output *out = NULL;
    bt_batch_scan scan = {0};
    bt_batch_output_state ost = {0};
    bt_error err;
    bt_error_init(&err);
    if (!stage_rank) {
        if ((rc = open_files(&f, &in, &out, &scan, &ost)) >= 0)
            return end_before_run(&mf, &cf, rc);
        if (bt_sigwatch_start(on_signal, NULL, &err) != BT_OK) {
            fprintf(stderr, "baton batch: %s\n", err.msg);
            bt_batch_output_close(out);
            bt_batch_input_close(in);
            return end_before_run(&mf, &cf, 1);
        }
    }
    bt_session s;
    rc = bt_session_open(&s, "batch", &mf, &cf);
    if (rc >= 0) { /* a stage rank that served, or the model/cluster failed */
        if (!stage_rank) {
            bt_sigwatch_stop();
            bt_batch_output_close(out);
            bt_batch_input_close(in);
        }
        return rc;
    }

    bt_status serve_st = BT_OK;
    bt_engine_info info;
    bt_engine_get_info(s.engine, &info);
    bt_cmd_api_model am;
    if ((rc = bt_cmd_api_model_init(&am, "batch", &s, &mf, f.model_name, f.chat_name)) != 0)
        goto closed;
    const bt_api_model *model = &am.m;
    fprintf(stderr, "baton batch: %s: %lld requests, %lld to run, on %d stage%s (model %s)\n",
            f.input, (long long)scan.n_requests, (long long)(scan.n_requests - ost.n_done),
            info.n_stages, info.n_stages == 1 ? "" : "s", model->name);

    static batch_run r; /* the signal thread may look at it until sigwatch stops */
    memset(&r, 0, sizeof r);
    pthread_mutex_init(&r.mu, NULL);
    bt_cond_init_monotonic(&r.cv); /* deadlines are bt_now_us */
    r.engine = s.engine;
    r.model = model;
    r.in = in;
    r.out = out;
    r.n_requests = scan.n_requests;
    r.input_hash = scan.input_hash;
    r.n_done_before = ost.n_done;
    r.n_failed_before = ost.n_failed;
    r.max_queue =
        f.max_queue && f.max_queue < info.queue_capacity ? f.max_queue : info.queue_capacity;
    r.sync = !f.no_sync;
    r.sync_lines = f.sync_lines;
    r.sync_us = f.sync_ms * 1000;
    r.drain_us = f.drain_timeout * 1000000;
    r.progress_us = f.progress_interval * 1000000;
    r.tty = isatty(STDERR_FILENO);
    rc = run(&r, &info, f.output, &serve_st);
    bt_api_buf_free(&r.pending);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
closed:
    bt_sigwatch_stop();
    bt_batch_output_close(out);
    bt_batch_input_close(in);
    /* A stage failure is the job's failure (1) whatever else happened. */
    return bt_session_close(&s, serve_st != BT_OK ? 1 : rc);
}
