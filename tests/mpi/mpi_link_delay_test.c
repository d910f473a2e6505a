/* mpi_link_delay_test.c - the link delay of test builds (proto/transport.h), mpirun -np 2:
 *
 *   mpi_link_delay_test DELAY_US
 *
 * DELAY_US is what BT_LINK_DELAY_US says in this run (0: unset). This program compiles its
 * own transport_mpi.c with BT_LINK_DELAY, whatever the build's option. Both ranks share
 * the machine's CLOCK_MONOTONIC, so rank 1 measures one-way times from rank 0's send
 * stamps. Checks, with D = DELAY_US (slack for a loaded 2-core machine):
 *   - one-way time of a frame >= D, and <= D + 10 ms (median of 10); round trip >= 2 D, and
 *     its median <= 2 D + 20 ms (without a delay: <= 20 ms, measured 0.15);
 *   - send returns at once (< 2 ms) although the frame waits D;
 *   - a burst of 20 frames (more than max_pending) is sent at once and arrives complete and
 *     in order, the last one D to D + 10 ms after its send;
 *   - a sender that sleeps 3 D after a send, calling only bt_transport_progress at the time
 *     it names, gets its frame out after D to D + 10 ms, not 3 D (what a stage does while it
 *     computes).
 * Prints "rank R: N passed, N failed". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "clock.h"
#include "mpi_common.h"
#include "transport.h"

#define TIMEOUT_US 20000000
#define SLACK_US 10000 /* a loaded 2-core machine oversleeps by milliseconds */
#define N_RTT 10
#define N_BURST 20

typedef struct stamp {
    uint32_t kind; /* 1 ping, 2 burst, 3 one-way probe, 4 stop */
    uint32_t seq;
    int64_t sent_us; /* rank 0's bt_now_us at the send call */
} stamp;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static bt_status send_stamp(bt_transport *t, int dst, uint32_t kind, uint32_t seq, int64_t *call_us,
                            bt_error *err) {
    stamp s = {.kind = kind, .seq = seq, .sent_us = bt_now_us()};
    bt_status st = bt_transport_send(t, dst, &s, sizeof s, TIMEOUT_US, err);
    if (call_us)
        *call_us = bt_now_us() - s.sent_us;
    return st;
}

/* Rank 1: answers pings at once, checks bursts, reports one-way times of probes. */
static void echo(bt_transport *t) {
    const void *f;
    size_t len;
    int from;
    uint32_t next_burst = 0;
    for (;;) {
        bt_error err;
        bt_error_init(&err);
        if (bt_transport_recv(t, 0, &f, &len, &from, TIMEOUT_US, &err) != BT_OK) {
            check_fail(__FILE__, __LINE__, "rank 1 recv: %s", err.msg);
            return;
        }
        stamp s;
        CHECK_EQ_INT(len, sizeof s);
        if (len != sizeof s)
            return;
        memcpy(&s, f, sizeof s);
        int64_t oneway = bt_now_us() - s.sent_us;
        if (s.kind == 4)
            return;
        if (s.kind == 2) { /* in order, nothing lost: seq 0, 1, ... */
            CHECK_EQ_INT(s.seq, next_burst);
            next_burst = s.seq + 1;
            if (s.seq + 1 < N_BURST)
                continue;
            next_burst = 0;
        }
        /* The answer carries the one-way time of what it answers. */
        stamp r = {.kind = s.kind, .seq = s.seq, .sent_us = oneway};
        CHECK_OK(bt_transport_send(t, 0, &r, sizeof r, TIMEOUT_US, &err_));
    }
}

static bt_status await(bt_transport *t, uint32_t kind, stamp *out, bt_error *err) {
    const void *f;
    size_t len;
    int from;
    bt_status st = bt_transport_recv(t, 1, &f, &len, &from, TIMEOUT_US, err);
    if (st != BT_OK)
        return st;
    if (len != sizeof *out)
        return bt_error_set(err, BT_ERR_PROTOCOL, "answer of %zu bytes", len);
    memcpy(out, f, sizeof *out);
    if (out->kind != kind)
        return bt_error_set(err, BT_ERR_PROTOCOL, "answer kind %u, want %u", out->kind, kind);
    return BT_OK;
}

static void drive(bt_transport *t, int64_t d) {
    stamp a;
    int64_t call_us = 0, max_call_us = 0;
    for (uint32_t i = 0; i < 3; i++) { /* warm-up: connections, first-touch */
        CHECK_OK(send_stamp(t, 1, 1, i, NULL, &err_));
        CHECK_OK(await(t, 1, &a, &err_));
    }
    int64_t rtt[N_RTT], oneway[N_RTT];
    for (uint32_t i = 0; i < N_RTT; i++) {
        int64_t t0 = bt_now_us();
        CHECK_OK(send_stamp(t, 1, 1, i, &call_us, &err_));
        if (call_us > max_call_us)
            max_call_us = call_us;
        CHECK_OK(await(t, 1, &a, &err_));
        rtt[i] = bt_now_us() - t0;
        oneway[i] = a.sent_us;
    }
    qsort(rtt, N_RTT, sizeof rtt[0], cmp_i64);
    qsort(oneway, N_RTT, sizeof oneway[0], cmp_i64);
    int64_t rtt_med = rtt[N_RTT / 2];
    printf("delay %lld us: round trip min %lld median %lld us; one-way min %lld max %lld us; "
           "longest send call %lld us\n",
           (long long)d, (long long)rtt[0], (long long)rtt_med, (long long)oneway[0],
           (long long)oneway[N_RTT - 1], (long long)max_call_us);
    CHECK(oneway[0] >= d);
    CHECK(oneway[N_RTT / 2] <= d + SLACK_US);
    CHECK(rtt[0] >= 2 * d);
    CHECK(rtt_med <= 2 * d + 2 * SLACK_US);
    CHECK(max_call_us < 2000);

    /* A burst: all sends return at once, the frames wait together. */
    int64_t b0 = bt_now_us();
    for (uint32_t i = 0; i < N_BURST; i++)
        CHECK_OK(send_stamp(t, 1, 2, i, NULL, &err_));
    int64_t burst_call_us = bt_now_us() - b0;
    CHECK_OK(await(t, 2, &a, &err_));
    printf("burst of %d frames: sent in %lld us, the last arrived %lld us after its send\n",
           N_BURST, (long long)burst_call_us, (long long)a.sent_us);
    CHECK(burst_call_us < 5000);
    CHECK_EQ_INT(a.seq, N_BURST - 1);
    CHECK(a.sent_us >= d && a.sent_us <= d + SLACK_US);

    /* The caller "computes" for 3 D after a send, calling only progress when told. */
    int64_t due = 0;
    int64_t s0 = bt_now_us();
    CHECK_OK(send_stamp(t, 1, 3, 0, NULL, &err_));
    CHECK_OK(bt_transport_progress(t, &due, &err_));
    if (d == 0) {
        CHECK(due == INT64_MAX);
    } else {
        CHECK(due >= s0 + d && due <= s0 + d + SLACK_US);
        while (due != INT64_MAX) {
            int64_t left = due - bt_now_us();
            if (left > 0)
                mt_sleep_us(left);
            CHECK_OK(bt_transport_progress(t, &due, &err_));
        }
        int64_t rest = s0 + 3 * d - bt_now_us();
        if (rest > 0)
            mt_sleep_us(rest);
    }
    CHECK_OK(await(t, 3, &a, &err_));
    printf("sleeping sender with progress calls: one-way %lld us (delay %lld, sleep %lld)\n",
           (long long)a.sent_us, (long long)d, (long long)(3 * d));
    CHECK(a.sent_us >= d && a.sent_us <= d + SLACK_US);
    CHECK_OK(send_stamp(t, 1, 4, 0, NULL, &err_));
}

int main(int argc, char **argv) {
    int rank = -1, size = 0;
    bt_error err;
    bt_error_init(&err);
    if (argc != 2) {
        fprintf(stderr, "usage: mpi_link_delay_test DELAY_US (what BT_LINK_DELAY_US says)\n");
        return 2;
    }
    int64_t d = strtoll(argv[1], NULL, 10);
    if (bt_mpi_init(&argc, &argv, &rank, &size, &err) != BT_OK) {
        fprintf(stderr, "bt_mpi_init: %s\n", err.msg);
        return 1;
    }
    if (size != 2) {
        printf("SKIP mpi_link_delay_test: needs 2 ranks, have %d\n", size);
        bt_mpi_finalize();
        return 77;
    }
    CHECK_EQ_INT(bt_transport_link_delay_built(), 1);
    bt_transport *t = NULL;
    if (bt_transport_mpi_new(1024, 4, &t, &err) != BT_OK) {
        fprintf(stderr, "rank %d: bt_transport_mpi_new: %s\n", rank, err.msg);
        return 1;
    }
    if (rank == 0)
        drive(t, d);
    else
        echo(t);
    CHECK_OK(bt_transport_flush(t, TIMEOUT_US, &err_));
    bt_transport_free(t);
    printf("rank %d: ", rank);
    int rc = check_finish();
    bt_mpi_finalize();
    return rc;
}
