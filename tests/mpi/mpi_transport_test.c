/* mpi_transport_test.c - the MPI transport across real ranks (mpirun -np 2, 3, 4).
 *   ring: rank 0 -> 1 -> ... -> S -> 0 like the pipeline, W frames in flight, 1 B..1.5 MB,
 *         contents and order checked at every hop;
 *   specific source: rank 0 waits for rank S while the others also send (they get queued);
 *   queue limit: a flood from other ranks while waiting for one is BT_ERR_LIMIT, no loss;
 *   timeouts and idle CPU while waiting; argument and size checks.
 * Each rank prints "rank R: N passed, N failed"; a rank that cannot go on aborts the job. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "clock.h"
#include "mpi_common.h"
#include "transport.h"

#define MAX_FRAME (2u << 20)
#define MAX_PENDING 8
#define TIMEOUT_US 20000000 /* generous: 4 ranks share 2 cores */

static const size_t ring_sizes[] = {1,     2,       17,     100,    1000,    4096,    4097,
                                    65536, 1500000, 777777, 262144, 1048576, 1500000, 3};
#define RING_N 56
#define RING_WINDOW MAX_PENDING

static uint8_t *scratch; /* [MAX_FRAME] */

/* Stops the whole job when a rank cannot continue (the others would wait for it). */
static void must(bt_transport *t, bt_status st, const bt_error *err, const char *what) {
    if (st == BT_OK)
        return;
    fprintf(stderr, "rank %d: %s: %s (%s)\n", t->rank, what, bt_status_str(st), err->msg);
    bt_check_failed++;
    check_finish();
    bt_transport_abort(t, 1);
}

static size_t ring_size_of(int seq) {
    return ring_sizes[seq % (int)(sizeof(ring_sizes) / sizeof(ring_sizes[0]))];
}

static void test_args(bt_transport *t) {
    bt_error err;
    bt_error_init(&err);
    int peer = (t->rank + 1) % t->size;
    CHECK_EQ_INT(bt_transport_send(t, peer, scratch, MAX_FRAME + 1, 0, &err), BT_ERR_LIMIT);
    CHECK(strstr(err.msg, "max_frame") != NULL);
    CHECK_EQ_INT(bt_transport_send(t, t->size, scratch, 1, 0, &err), BT_ERR_INVALID_ARG);
    const void *f;
    size_t len;
    int from;
    CHECK_EQ_INT(bt_transport_recv(t, -5, &f, &len, &from, 0, &err), BT_ERR_INVALID_ARG);
    bt_transport *bad = NULL;
    CHECK_EQ_INT(bt_transport_mpi_new(0, 4, &bad, &err), BT_ERR_INVALID_ARG);
    CHECK(bad == NULL);
    CHECK(bt_mpi_launched());
}

static void test_ring(bt_transport *t) {
    bt_error err;
    bt_error_init(&err);
    int prev = (t->rank + t->size - 1) % t->size, next = (t->rank + 1) % t->size;
    int bad = 0;
    if (t->rank == 0) {
        int sent = 0, got = 0;
        size_t bytes = 0;
        int64_t t0 = bt_now_us();
        while (got < RING_N) {
            if (sent < RING_N && sent - got < RING_WINDOW) {
                size_t len = ring_size_of(sent);
                mt_fill(scratch, len, (uint32_t)sent);
                must(t, bt_transport_send(t, next, scratch, len, TIMEOUT_US, &err), &err,
                     "ring send");
                bytes += len;
                sent++;
                continue;
            }
            const void *f;
            size_t len;
            int from;
            must(t, bt_transport_recv(t, prev, &f, &len, &from, TIMEOUT_US, &err), &err,
                 "ring recv");
            if (from != prev || len != ring_size_of(got) || !mt_same(f, len, (uint32_t)got))
                bad++;
            got++;
        }
        double s = (double)(bt_now_us() - t0) / 1e6;
        printf("ring of %d ranks: %d frames, %.1f MB each way through every hop, %.3f s\n", t->size,
               RING_N, (double)bytes / 1e6, s);
    } else {
        for (int i = 0; i < RING_N; i++) {
            const void *f;
            size_t len;
            int from;
            must(t, bt_transport_recv(t, prev, &f, &len, &from, TIMEOUT_US, &err), &err,
                 "ring recv");
            if (from != prev || len != ring_size_of(i) || !mt_same(f, len, (uint32_t)i))
                bad++;
            must(t, bt_transport_send(t, next, f, len, TIMEOUT_US, &err), &err, "ring forward");
        }
    }
    CHECK_EQ_INT(bad, 0);
}

/* Rank 0 takes K frames from rank S first while ranks 1..S-1 send theirs earlier. */
static void test_specific_source(bt_transport *t) {
    bt_error err;
    bt_error_init(&err);
    const int k = MAX_PENDING;
    int last = t->size - 1;
    uint8_t buf[600];
    if (t->rank != 0) {
        if (t->rank == last) {
            /* The others' frames reach rank 0 first: they tell rank S once sent. */
            for (int i = 1; i < last; i++) {
                const void *f;
                size_t len;
                int from;
                must(t, bt_transport_recv(t, BT_RANK_ANY, &f, &len, &from, TIMEOUT_US, &err), &err,
                     "specific: wait for the others");
            }
        }
        for (int i = 0; i < k; i++) {
            size_t len = 8 + (size_t)(i * 67 % 590);
            uint32_t hdr[2] = {(uint32_t)t->rank, (uint32_t)i};
            memcpy(buf, hdr, sizeof(hdr));
            mt_fill(buf + 8, len - 8, (uint32_t)(t->rank * 1000 + i));
            must(t, bt_transport_send(t, 0, buf, len, TIMEOUT_US, &err), &err, "specific send");
        }
        if (t->rank != last)
            must(t, bt_transport_send(t, last, "sent", 4, TIMEOUT_US, &err), &err,
                 "specific: tell rank S");
        return;
    }
    int next[64] = {0};
    int bad = 0;
    for (int n = 0; n < k * (t->size - 1); n++) {
        int want = n < k ? last : BT_RANK_ANY;
        /* After rank S's frames, the rest was queued meanwhile: it must come at once. */
        int64_t timeout = (n >= k && t->size > 2) ? 0 : TIMEOUT_US;
        const void *f;
        size_t len;
        int from;
        bt_status st = bt_transport_recv(t, want, &f, &len, &from, timeout, &err);
        if (st != BT_OK && timeout == 0) {
            bad++; /* not queued; wait for it so the later phases stay in step */
            st = bt_transport_recv(t, want, &f, &len, &from, TIMEOUT_US, &err);
        }
        must(t, st, &err, "specific recv");
        uint32_t hdr[2];
        memcpy(hdr, f, sizeof(hdr));
        if ((want != BT_RANK_ANY && from != want) || from < 1 || from >= t->size ||
            hdr[0] != (uint32_t)from || hdr[1] != (uint32_t)next[from] ||
            len != 8 + (size_t)(hdr[1] * 67 % 590) ||
            !mt_same((const uint8_t *)f + 8, len - 8, (uint32_t)(from * 1000) + hdr[1]))
            bad++;
        else
            next[from]++;
    }
    for (int r = 1; r < t->size; r++)
        CHECK_EQ_INT(next[r], k);
    CHECK_EQ_INT(bad, 0);
}

/* Rank 1 floods rank 0 while rank 0 waits for rank S (>= 3 ranks): the queue fills, recv
 * says BT_ERR_LIMIT, and every frame still comes out, in order. */
static void test_queue_limit(bt_transport *t) {
    if (t->size < 3)
        return;
    bt_error err;
    bt_error_init(&err);
    int n = MAX_PENDING * (t->size - 1) + 3; /* the queue holds MAX_PENDING * (size - 1) */
    /* Ranks 2..S stay silent: they wait in the barrier for rank 0's "go". */
    if (t->rank == 1) {
        for (int i = 0; i < n; i++)
            must(t, bt_transport_send(t, 0, &i, sizeof(i), TIMEOUT_US, &err), &err, "flood send");
        return;
    }
    if (t->rank != 0)
        return;
    const void *f;
    size_t len;
    int from;
    bt_status st = bt_transport_recv(t, t->size - 1, &f, &len, &from, TIMEOUT_US, &err);
    CHECK_EQ_INT(st, BT_ERR_LIMIT);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        must(t, bt_transport_recv(t, BT_RANK_ANY, &f, &len, &from, TIMEOUT_US, &err), &err,
             "flood recv");
        int v = -1;
        if (len == sizeof(v))
            memcpy(&v, f, sizeof(v));
        if (from != 1 || v != i)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* Nothing is in flight after a barrier: recv times out in about the asked time, using
 * little CPU while it waits. */
static void test_timeout_and_idle(bt_transport *t) {
    bt_error err;
    bt_error_init(&err);
    const void *f;
    size_t len;
    int from;
    double c0 = mt_process_cpu_us();
    int64_t t0 = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t, BT_RANK_ANY, &f, &len, &from, 300000, &err), BT_ERR_TIMEOUT);
    int64_t dt = bt_now_us() - t0;
    double cpu = (mt_process_cpu_us() - c0) / (double)dt;
    CHECK(dt >= 300000 && dt < 1500000);
    CHECK(strstr(err.msg, "any rank") != NULL);
    printf("rank %d: recv(ANY) timeout of 300 ms took %.1f ms, %.1f%% of a core\n", t->rank,
           (double)dt / 1e3, cpu * 100.0);
    CHECK(cpu < 0.20);

    /* A rank that sends nothing to us during this phase (ourselves when there is none). */
    int peer = t->rank == 0 ? 1 : t->rank % (t->size - 1) + 1;
    t0 = bt_now_us();
    CHECK_EQ_INT(bt_transport_recv(t, peer, &f, &len, &from, 50000, &err), BT_ERR_TIMEOUT);
    dt = bt_now_us() - t0;
    CHECK(dt >= 50000 && dt < 1000000);
    char want[32];
    snprintf(want, sizeof(want), "rank %d", peer);
    CHECK(strstr(err.msg, want) != NULL);
    CHECK_EQ_INT(bt_transport_recv(t, peer, &f, &len, &from, 0, &err), BT_ERR_TIMEOUT);
}

int main(int argc, char **argv) {
    int rank = -1, size = 0;
    bt_error err;
    bt_error_init(&err);
    if (bt_mpi_init(&argc, &argv, &rank, &size, &err) != BT_OK) {
        fprintf(stderr, "bt_mpi_init: %s\n", err.msg);
        return 1;
    }
    if (size < 2 || size > 64) {
        printf("SKIP mpi_transport_test: needs 2..64 ranks, have %d\n", size);
        bt_mpi_finalize();
        return 77;
    }
    bt_transport *t = NULL;
    if (bt_transport_mpi_new(MAX_FRAME, MAX_PENDING, &t, &err) != BT_OK) {
        fprintf(stderr, "rank %d: bt_transport_mpi_new: %s\n", rank, err.msg);
        return 1;
    }
    CHECK(t->rank == rank && t->size == size && t->max_frame == MAX_FRAME);
    scratch = malloc(MAX_FRAME + 1);
    if (!scratch)
        bt_transport_abort(t, 1);
    memset(scratch, 0, MAX_FRAME + 1);

    test_args(t);
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");
    test_ring(t);
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");
    test_specific_source(t);
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");
    test_queue_limit(t);
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");
    /* Nothing may arrive during a timeout test: rank 0 runs it while the others wait in the
     * barrier; then the others run it while rank 0 waits for their "done". */
    if (rank == 0)
        test_timeout_and_idle(t);
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");
    if (rank != 0)
        test_timeout_and_idle(t);
    must(t, mt_gather(t, TIMEOUT_US, &err), &err, "gather");
    must(t, mt_barrier(t, TIMEOUT_US, &err), &err, "barrier");

    CHECK_OK(bt_transport_flush(t, TIMEOUT_US, &err_));
    bt_transport_free(t);
    free(scratch);
    printf("rank %d: ", rank);
    int rc = check_finish();
    bt_mpi_finalize();
    return rc;
}
