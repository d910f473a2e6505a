/* mpi_common.h - helpers shared by the multi-rank tests: frame contents from a seed, and a
 * barrier built on the transport itself (tests reach MPI only through transport.h). */
#ifndef BT_MPI_COMMON_H
#define BT_MPI_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "transport.h"

#define BARRIER_MAGIC 0x42415252u /* "BARR" */

static inline void mt_fill(uint8_t *buf, size_t len, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (uint8_t)(x >> 24);
    }
}

/* Whether buf holds mt_fill(seed), compared without a second buffer. */
static inline int mt_same(const uint8_t *buf, size_t len, uint32_t seed) {
    uint32_t x = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1664525u + 1013904223u;
        if (buf[i] != (uint8_t)(x >> 24))
            return 0;
    }
    return 1;
}

static inline void mt_sleep_us(int64_t us) {
    struct timespec ts = {.tv_sec = (time_t)(us / 1000000), .tv_nsec = (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static inline double mt_process_cpu_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* Three steps: rank 0 sends "go" to every rank (so no rank sends before rank 0 is done with
 * the previous phase), every rank answers rank 0, rank 0 sends "done" to every rank. A rank
 * leaves only after rank 0 has collected every answer, and rank 0's "done" precedes anything
 * rank 0 sends next. Any other frame from rank 0, or at rank 0, is a leftover of an earlier
 * phase: BT_ERR_PROTOCOL. */
static inline bt_status mt_expect_barrier(bt_transport *t, int src, int64_t timeout_us,
                                          bt_error *err) {
    const void *f;
    size_t len;
    int from;
    uint32_t magic = BARRIER_MAGIC;
    bt_status st = bt_transport_recv(t, src, &f, &len, &from, timeout_us, err);
    if (st != BT_OK)
        return st;
    if (len != sizeof(magic) || memcmp(f, &magic, sizeof(magic)) != 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "barrier: stray frame of %zu bytes from rank %d",
                            len, from);
    return BT_OK;
}

static inline bt_status mt_barrier(bt_transport *t, int64_t timeout_us, bt_error *err) {
    uint32_t magic = BARRIER_MAGIC;
    bt_status st;
    if (t->rank == 0) {
        for (int step = 0; step < 2; step++) {
            for (int r = 1; r < t->size; r++) {
                st = bt_transport_send(t, r, &magic, sizeof(magic), timeout_us, err);
                if (st != BT_OK)
                    return st;
            }
            for (int i = 1; i < t->size && step == 0; i++) {
                st = mt_expect_barrier(t, BT_RANK_ANY, timeout_us, err);
                if (st != BT_OK)
                    return st;
            }
        }
        return BT_OK;
    }
    st = mt_expect_barrier(t, 0, timeout_us, err);
    if (st == BT_OK)
        st = bt_transport_send(t, 0, &magic, sizeof(magic), timeout_us, err);
    if (st == BT_OK)
        st = mt_expect_barrier(t, 0, timeout_us, err);
    return st;
}

/* Every other rank sends one frame to rank 0, which waits for them all; rank 0 sends
 * nothing. */
static inline bt_status mt_gather(bt_transport *t, int64_t timeout_us, bt_error *err) {
    uint32_t magic = BARRIER_MAGIC;
    if (t->rank != 0)
        return bt_transport_send(t, 0, &magic, sizeof(magic), timeout_us, err);
    for (int i = 1; i < t->size; i++) {
        bt_status st = mt_expect_barrier(t, BT_RANK_ANY, timeout_us, err);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

#endif
