/* test_transport_local.c - the in-process transport: threads as ranks. Checks contents and
 * per-sender order, timeouts, backpressure, killed ranks, size limits and idle CPU. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "clock.h"
#include "transport.h"

#define MAX_FRAME (256 * 1024)

static void fill(uint8_t *buf, size_t len, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (uint8_t)(x >> 24);
    }
}

static int same(const uint8_t *buf, size_t len, uint32_t seed, uint8_t *scratch) {
    fill(scratch, len, seed);
    return memcmp(buf, scratch, len) == 0;
}

static int has(const bt_error *e, const char *needle) {
    return strstr(e->msg, needle) != NULL;
}

static void sleep_us(int64_t us) {
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- ping-pong: rank 1 echoes every frame back to rank 0 ---- */

static const size_t pp_sizes[] = {0, 1, 7, 100, 4096, 65537, MAX_FRAME};
#define PP_ROUNDS 20

typedef struct echo_arg {
    bt_transport *t;
    int n_frames;
    int failures;
} echo_arg;

static void *echo_main(void *p) {
    echo_arg *a = p;
    for (int i = 0; i < a->n_frames; i++) {
        const void *f = NULL;
        size_t len = 0;
        int from = -1;
        bt_error err;
        bt_error_init(&err);
        if (bt_transport_recv(a->t, 0, &f, &len, &from, 2000000, &err) != BT_OK || from != 0 ||
            bt_transport_send(a->t, 0, f, len, 2000000, &err) != BT_OK) {
            fprintf(stderr, "echo: %s\n", err.msg);
            a->failures++;
            return NULL;
        }
    }
    return NULL;
}

static void test_ping_pong(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(2, MAX_FRAME, 4, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    CHECK(t0 && t0->rank == 0 && t0->size == 2 && t0->max_frame == MAX_FRAME);
    int n_sizes = (int)(sizeof(pp_sizes) / sizeof(pp_sizes[0]));
    echo_arg a = {bt_local_hub_endpoint(hub, 1), n_sizes * PP_ROUNDS, 0};
    pthread_t th;
    pthread_create(&th, NULL, echo_main, &a);
    static uint8_t out[MAX_FRAME], scratch[MAX_FRAME];
    int bad = 0;
    for (int r = 0; r < PP_ROUNDS; r++) {
        for (int k = 0; k < n_sizes; k++) {
            uint32_t seed = (uint32_t)(r * 100 + k);
            fill(out, pp_sizes[k], seed);
            bt_error err;
            bt_error_init(&err);
            const void *f = NULL;
            size_t len = 0;
            int from = -1;
            if (bt_transport_send(t0, 1, out, pp_sizes[k], 1000000, &err) != BT_OK ||
                bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 2000000, &err) != BT_OK) {
                fprintf(stderr, "ping: %s\n", err.msg);
                bad++;
                continue;
            }
            if (from != 1 || len != pp_sizes[k] || !same(f, len, seed, scratch))
                bad++;
        }
    }
    pthread_join(th, NULL);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(a.failures, 0);
    bt_transport_free(t0); /* no-op: owned by the hub */
    bt_local_hub_free(hub);
}

/* ---- order per sender: ranks 1..3 each stream numbered frames to rank 0 ---- */

#define ORDER_N 300

typedef struct stream_arg {
    bt_transport *t;
    int dst, n;
    int failures;
} stream_arg;

static void *stream_main(void *p) {
    stream_arg *a = p;
    uint8_t buf[64];
    for (int i = 0; i < a->n; i++) {
        size_t len = 8 + (size_t)(i % 50);
        memset(buf, 0, sizeof(buf));
        memcpy(buf, &i, sizeof(i));
        buf[4] = (uint8_t)a->t->rank;
        fill(buf + 8, len - 8, (uint32_t)(a->t->rank * 100000 + i));
        bt_error err;
        bt_error_init(&err);
        if (bt_transport_send(a->t, a->dst, buf, len, 2000000, &err) != BT_OK) {
            fprintf(stderr, "stream: %s\n", err.msg);
            a->failures++;
            return NULL;
        }
    }
    return NULL;
}

static void test_order_per_sender(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(4, 1024, 3, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    pthread_t th[4];
    stream_arg a[4];
    for (int r = 1; r < 4; r++) {
        a[r] = (stream_arg){bt_local_hub_endpoint(hub, r), 0, ORDER_N, 0};
        pthread_create(&th[r], NULL, stream_main, &a[r]);
    }
    int next[4] = {0, 0, 0, 0};
    int bad = 0, n_specific = 0;
    uint8_t scratch[64];
    for (int got = 0; got < 3 * ORDER_N; got++) {
        /* Every 5th receive asks for rank 3 while it still sends: others queue meanwhile. */
        int want = (got % 5 == 0 && next[3] < ORDER_N) ? 3 : BT_RANK_ANY;
        const void *f = NULL;
        size_t len = 0;
        int from = -1;
        bt_error err;
        bt_error_init(&err);
        if (bt_transport_recv(t0, want, &f, &len, &from, 2000000, &err) != BT_OK) {
            fprintf(stderr, "order: %s\n", err.msg);
            bad++;
            break;
        }
        const uint8_t *b = f;
        int seq;
        memcpy(&seq, b, sizeof(seq));
        if (want != BT_RANK_ANY) {
            n_specific++;
            if (from != want)
                bad++;
        }
        if (from < 1 || from > 3 || b[4] != from || seq != next[from] ||
            len != 8 + (size_t)(seq % 50) ||
            !same(b + 8, len - 8, (uint32_t)(from * 100000 + seq), scratch))
            bad++;
        else
            next[from]++;
    }
    for (int r = 1; r < 4; r++) {
        pthread_join(th[r], NULL);
        CHECK_EQ_INT(a[r].failures, 0);
        CHECK_EQ_INT(next[r], ORDER_N);
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(n_specific > 0);
    bt_local_hub_free(hub);
}

/* ---- timeouts ---- */

static void test_timeouts(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(3, 64, 2, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    const void *f;
    size_t len;
    int from;
    bt_error err;
    bt_error_init(&err);

    int64_t t = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 50000, &err), BT_ERR_TIMEOUT);
    int64_t dt = bt_now_us() - t;
    CHECK(dt >= 50000 && dt < 150000);
    CHECK(has(&err, "any rank"));

    t = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t0, 2, &f, &len, &from, 30000, &err), BT_ERR_TIMEOUT);
    dt = bt_now_us() - t;
    CHECK(dt >= 30000 && dt < 130000);
    CHECK(has(&err, "rank 2"));

    t = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t0, 1, &f, &len, &from, 0, &err), BT_ERR_TIMEOUT);
    CHECK(bt_now_us() - t < 20000);

    /* A frame already queued comes back with timeout 0; the frame from 2 waits its turn. */
    bt_transport *t1 = bt_local_hub_endpoint(hub, 1), *t2 = bt_local_hub_endpoint(hub, 2);
    CHECK_OK(bt_transport_send(t2, 0, "two", 3, 0, &err_));
    CHECK_OK(bt_transport_send(t1, 0, "one", 3, 0, &err_));
    CHECK_OK(bt_transport_recv(t0, 1, &f, &len, &from, 0, &err_));
    CHECK(from == 1 && len == 3 && memcmp(f, "one", 3) == 0);
    CHECK_OK(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 0, &err_));
    CHECK(from == 2 && len == 3 && memcmp(f, "two", 3) == 0);
    bt_local_hub_free(hub);
}

/* ---- backpressure: max_pending undelivered frames per destination ---- */

typedef struct delayed_recv_arg {
    bt_transport *t;
    int64_t delay_us;
    int n_recv;
    int ok;
} delayed_recv_arg;

static void *delayed_recv_main(void *p) {
    delayed_recv_arg *a = p;
    sleep_us(a->delay_us);
    for (int i = 0; i < a->n_recv; i++) {
        const void *f;
        size_t len;
        int from;
        if (bt_transport_recv(a->t, 0, &f, &len, &from, 1000000, NULL) == BT_OK)
            a->ok++;
    }
    return NULL;
}

static void test_backpressure(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(2, 128, 2, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    bt_error err;
    bt_error_init(&err);
    uint8_t buf[128] = {1, 2, 3};
    CHECK_OK(bt_transport_send(t0, 1, buf, 10, 0, &err_));
    CHECK_OK(bt_transport_send(t0, 1, buf, 20, 0, &err_));
    int64_t t = bt_now_us();
    CHECK_EQ_INT(bt_transport_send(t0, 1, buf, 30, 40000, &err), BT_ERR_TIMEOUT);
    int64_t dt = bt_now_us() - t;
    CHECK(dt >= 40000 && dt < 140000);
    CHECK(has(&err, "rank 1"));
    CHECK_EQ_INT(bt_transport_flush(t0, 20000, &err), BT_ERR_TIMEOUT);
    CHECK(has(&err, "rank 1"));

    /* A receiver that wakes after 50 ms unblocks the waiting sender, and flush completes. */
    delayed_recv_arg a = {bt_local_hub_endpoint(hub, 1), 50000, 3, 0};
    pthread_t th;
    pthread_create(&th, NULL, delayed_recv_main, &a);
    t = bt_now_us();
    CHECK_OK(bt_transport_send(t0, 1, buf, 30, 1000000, &err_));
    dt = bt_now_us() - t;
    CHECK(dt >= 30000 && dt < 800000);
    CHECK_OK(bt_transport_flush(t0, 1000000, &err_));
    pthread_join(th, NULL);
    CHECK_EQ_INT(a.ok, 3);
    bt_local_hub_free(hub);
}

/* ---- killed ranks ---- */

typedef struct blocked_arg {
    bt_transport *t;
    int src;
    bt_status st;
    int64_t waited_us;
    bt_error err;
} blocked_arg;

static void *blocked_recv_main(void *p) {
    blocked_arg *a = p;
    const void *f;
    size_t len;
    int from;
    bt_error_init(&a->err);
    int64_t t = bt_now_us();
    a->st = bt_transport_recv(a->t, a->src, &f, &len, &from, 5000000, &a->err);
    a->waited_us = bt_now_us() - t;
    return NULL;
}

typedef struct blocked_send_arg {
    bt_transport *t;
    int dst;
    bt_status st;
    int64_t waited_us;
    bt_error err;
} blocked_send_arg;

static void *blocked_send_main(void *p) {
    blocked_send_arg *a = p;
    bt_error_init(&a->err);
    int64_t t = bt_now_us();
    a->st = bt_transport_send(a->t, a->dst, "z", 1, 5000000, &a->err);
    a->waited_us = bt_now_us() - t;
    return NULL;
}

static void test_kill(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(3, 64, 2, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0), *t1 = bt_local_hub_endpoint(hub, 1);
    const void *f;
    size_t len;
    int from;
    bt_error err;
    bt_error_init(&err);

    /* A waiter on rank 1 is woken by the kill, not by its 5 s deadline. */
    blocked_arg a = {t0, 1, BT_OK, 0, {0}};
    pthread_t th;
    pthread_create(&th, NULL, blocked_recv_main, &a);
    CHECK_OK(bt_transport_send(t1, 0, "last", 4, 0, &err_)); /* sent before dying */
    sleep_us(30000);
    pthread_join(th, NULL);
    CHECK_EQ_INT(a.st, BT_OK); /* got "last" */

    pthread_create(&th, NULL, blocked_recv_main, &a);
    sleep_us(30000);
    CHECK_OK(bt_transport_send(t1, 0, "late", 4, 0, &err_));
    bt_local_hub_kill(hub, 1);
    pthread_join(th, NULL);
    CHECK_EQ_INT(a.st, BT_OK); /* "late" was queued before the kill: delivered */
    CHECK_EQ_INT(bt_transport_recv(t0, 1, &f, &len, &from, 5000000, &err), BT_ERR_IO);
    CHECK(has(&err, "rank 1"));

    bt_local_hub_free(hub);

    /* Fresh hub: blocked waiter, then kill. */
    CHECK_OK(bt_local_hub_new(3, 64, 2, &hub, &err_));
    t0 = bt_local_hub_endpoint(hub, 0);
    a = (blocked_arg){t0, 1, BT_OK, 0, {0}};
    pthread_create(&th, NULL, blocked_recv_main, &a);
    sleep_us(30000);
    bt_local_hub_kill(hub, 1);
    pthread_join(th, NULL);
    CHECK_EQ_INT(a.st, BT_ERR_IO);
    CHECK(has(&a.err, "rank 1"));
    CHECK(a.waited_us < 1000000);

    /* Send to the dead rank fails; recv(ANY) reports the death once, then waits for rank 2. */
    CHECK_EQ_INT(bt_transport_send(t0, 1, "x", 1, 100000, &err), BT_ERR_IO);
    CHECK(has(&err, "rank 1"));
    CHECK_EQ_INT(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 100000, &err), BT_ERR_IO);
    CHECK(has(&err, "rank 1"));
    CHECK_EQ_INT(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 20000, &err), BT_ERR_TIMEOUT);
    bt_transport *t2 = bt_local_hub_endpoint(hub, 2);
    CHECK_OK(bt_transport_send(t2, 0, "hi", 2, 0, &err_));
    CHECK_OK(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 0, &err_));
    CHECK(from == 2 && len == 2);

    /* Rank 2 waiting on dead rank 1 fails at once. */
    a = (blocked_arg){t2, 1, BT_OK, 0, {0}};
    blocked_recv_main(&a);
    CHECK_EQ_INT(a.st, BT_ERR_IO);
    CHECK(a.waited_us < 100000);

    /* A sender blocked on a full mailbox is woken by the kill of its destination. */
    CHECK_OK(bt_transport_send(t0, 2, "a", 1, 0, &err_));
    CHECK_OK(bt_transport_send(t0, 2, "b", 1, 0, &err_));
    blocked_send_arg s = {t0, 2, BT_OK, 0, {0}};
    pthread_create(&th, NULL, blocked_send_main, &s);
    sleep_us(30000);
    bt_local_hub_kill(hub, 2);
    pthread_join(th, NULL);
    CHECK_EQ_INT(s.st, BT_ERR_IO);
    CHECK(has(&s.err, "rank 2"));
    CHECK(s.waited_us >= 20000 && s.waited_us < 1000000);
    int64_t t;
    /* Every peer gone: recv(ANY) fails at once (after reporting rank 2 once). */
    CHECK_EQ_INT(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 2000000, &err), BT_ERR_IO);
    CHECK(has(&err, "rank 2"));
    t = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t0, BT_RANK_ANY, &f, &len, &from, 2000000, &err), BT_ERR_IO);
    CHECK(has(&err, "every peer"));
    CHECK(bt_now_us() - t < 100000);
    bt_local_hub_free(hub);

    /* abort kills every rank, the caller's own included. */
    CHECK_OK(bt_local_hub_new(2, 64, 2, &hub, &err_));
    t0 = bt_local_hub_endpoint(hub, 0);
    bt_transport_abort(t0, 3);
    CHECK_EQ_INT(bt_transport_send(t0, 1, "x", 1, 0, &err), BT_ERR_IO);
    CHECK_EQ_INT(bt_transport_recv(bt_local_hub_endpoint(hub, 1), 0, &f, &len, &from, 0, &err),
                 BT_ERR_IO);
    bt_local_hub_free(hub);
}

/* ---- limits and arguments ---- */

static void test_limits(void) {
    bt_local_hub *hub = NULL;
    bt_error err;
    bt_error_init(&err);
    CHECK_EQ_INT(bt_local_hub_new(0, 64, 2, &hub, &err), BT_ERR_INVALID_ARG);
    CHECK(hub == NULL);
    CHECK_EQ_INT(bt_local_hub_new(2, 0, 2, &hub, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_local_hub_new(2, 64, 0, &hub, &err), BT_ERR_INVALID_ARG);
    CHECK_OK(bt_local_hub_new(2, 64, 2, &hub, &err_));
    bt_transport *t0 = bt_local_hub_endpoint(hub, 0);
    CHECK(bt_local_hub_endpoint(hub, 2) == NULL);
    CHECK(bt_local_hub_endpoint(hub, -1) == NULL);
    uint8_t big[65] = {0};
    CHECK_EQ_INT(bt_transport_send(t0, 1, big, 65, 0, &err), BT_ERR_LIMIT);
    CHECK(has(&err, "65") && has(&err, "rank 1"));
    CHECK_OK(bt_transport_send(t0, 1, big, 64, 0, &err_));
    CHECK_EQ_INT(bt_transport_send(t0, 2, big, 1, 0, &err), BT_ERR_INVALID_ARG);
    CHECK_EQ_INT(bt_transport_send(t0, -1, big, 1, 0, &err), BT_ERR_INVALID_ARG);
    const void *f;
    size_t len;
    int from;
    CHECK_EQ_INT(bt_transport_recv(t0, 5, &f, &len, &from, 0, &err), BT_ERR_INVALID_ARG);
    /* Self-send works (the singleton may loop a frame back to itself). */
    CHECK_OK(bt_transport_send(t0, 0, "me", 2, 0, &err_));
    CHECK_OK(bt_transport_recv(t0, 0, &f, &len, &from, 0, &err_));
    CHECK(from == 0 && len == 2 && memcmp(f, "me", 2) == 0);
    bt_local_hub_free(hub);
    bt_local_hub_free(NULL);
    bt_transport_free(NULL);
}

/* ---- a rank waiting in recv uses almost no CPU ---- */

typedef struct idle_arg {
    bt_transport *t;
    double cpu_fraction;
} idle_arg;

static void *idle_main(void *p) {
    idle_arg *a = p;
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    int64_t t = bt_now_us();
    const void *f;
    size_t len;
    int from;
    bt_transport_recv(a->t, BT_RANK_ANY, &f, &len, &from, 300000, NULL);
    int64_t wall = bt_now_us() - t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double cpu_us = (double)(c1.tv_sec - c0.tv_sec) * 1e6 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e3;
    a->cpu_fraction = cpu_us / (double)wall;
    return NULL;
}

static void test_idle_cpu(void) {
    bt_local_hub *hub = NULL;
    CHECK_OK(bt_local_hub_new(2, 64, 2, &hub, &err_));
    idle_arg a = {bt_local_hub_endpoint(hub, 1), 1.0};
    pthread_t th;
    pthread_create(&th, NULL, idle_main, &a);
    pthread_join(th, NULL);
    printf("local recv wait: %.2f%% of a core\n", a.cpu_fraction * 100.0);
    CHECK(a.cpu_fraction < 0.05);
    bt_local_hub_free(hub);
}

int main(void) {
    test_ping_pong();
    test_order_per_sender();
    test_timeouts();
    test_backpressure();
    test_kill();
    test_limits();
    test_idle_cpu();
    return check_finish();
}
