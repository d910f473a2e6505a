/*
 * transport.h - moving frames between ranks. Two implementations behind one interface:
 *   MPI    (transport_mpi.c, the only file that includes <mpi.h>): one rank per process;
 *   local  (transport_local.c): ranks are threads of one process, with bounded in-memory
 *          mailboxes; used by the singleton run (coordinator + one stage, no mpirun) and by
 *          tests.
 *
 * Semantics (both implementations):
 *   - bt_transport_send copies the frame and returns without waiting for the receiver. At
 *     most `max_pending` sends per destination may be outstanding; beyond that send waits
 *     for the oldest to complete, until the deadline (BT_ERR_TIMEOUT, naming the rank).
 *   - bt_transport_recv returns the next frame from any rank (or the given one) in arrival
 *     order per sender, waiting at most timeout_us. Waiting polls with an increasing sleep
 *     (no core is spun). The returned frame stays valid until the next recv on this
 *     transport: a receive for the following frame is already posted while the caller
 *     works on this one.
 *   - Errors are returned, never fatal. A peer that is gone is BT_ERR_IO naming the rank.
 *   - Frames are at most max_frame bytes; larger ones are refused on send (BT_ERR_LIMIT) and
 *     can never be received.
 *   - bt_transport_progress moves pending sends on without waiting, and says when the
 *     transport next has something to do by itself: a caller that sleeps for long (a stage
 *     while its compute thread works) calls it by then. Only test builds with a link delay
 *     (below) ever name a time; otherwise *next_due_us is INT64_MAX.
 *
 * Link delay (test builds only: cmake -DBT_LINK_DELAY=ON; bt_transport_link_delay_built says
 * which): with BT_LINK_DELAY_US=N in the environment, the MPI transport holds each frame
 * for N us after the send call before it starts the MPI send, so a frame arrives N us later
 * than it would, as over a link of that one-way delay. send still returns at once: the frame
 * waits in the send ring with its release time and is started by the first send, recv,
 * flush or progress call at or after that time (the waits in recv/send/flush wake for it).
 * A build without it refuses a nonzero BT_LINK_DELAY_US rather than ignoring it.
 *
 * Threading: a bt_transport endpoint is confined to one thread (its rank's main loop).
 */
#ifndef BT_TRANSPORT_H
#define BT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define BT_RANK_ANY (-1)

typedef struct bt_transport bt_transport;

typedef struct bt_transport_ops {
    bt_status (*send)(bt_transport *t, int dst, const void *frame, size_t len, int64_t timeout_us,
                      bt_error *err);
    bt_status (*recv)(bt_transport *t, int src, const void **frame, size_t *len, int *from,
                      int64_t timeout_us, bt_error *err);
    /* Waits until every pending send has completed (or the timeout). */
    bt_status (*flush)(bt_transport *t, int64_t timeout_us, bt_error *err);
    /* Moves pending sends on without waiting; *next_due_us: bt_now_us time of the next frame
     * it holds back (link delay), INT64_MAX when none. */
    bt_status (*progress)(bt_transport *t, int64_t *next_due_us, bt_error *err);
    /* Ends the job after a detected failure so no rank is left behind: MPI_Abort for MPI
     * (does not return); the local hub marks every rank dead and returns. */
    void (*abort)(bt_transport *t, int code);
    void (*free)(bt_transport *t);
} bt_transport_ops;

struct bt_transport {
    const bt_transport_ops *ops;
    int rank, size;
    size_t max_frame;
};

static inline bt_status bt_transport_send(bt_transport *t, int dst, const void *frame, size_t len,
                                          int64_t timeout_us, bt_error *err) {
    return t->ops->send(t, dst, frame, len, timeout_us, err);
}
static inline bt_status bt_transport_recv(bt_transport *t, int src, const void **frame, size_t *len,
                                          int *from, int64_t timeout_us, bt_error *err) {
    return t->ops->recv(t, src, frame, len, from, timeout_us, err);
}
static inline bt_status bt_transport_flush(bt_transport *t, int64_t timeout_us, bt_error *err) {
    return t->ops->flush(t, timeout_us, err);
}
static inline bt_status bt_transport_progress(bt_transport *t, int64_t *next_due_us,
                                              bt_error *err) {
    return t->ops->progress(t, next_due_us, err);
}
static inline void bt_transport_abort(bt_transport *t, int code) {
    t->ops->abort(t, code);
}
static inline void bt_transport_free(bt_transport *t) {
    if (t)
        t->ops->free(t);
}

/* ---- MPI (transport_mpi.c) ---- */

/* MPI_Init_thread (FUNNELED) unless already initialised; errors return, MPI errors are set
 * to return (MPI_ERRORS_RETURN) rather than abort. Reports rank and size. */
bt_status bt_mpi_init(int *argc, char ***argv, int *rank, int *size, bt_error *err);
/* True when launched under mpirun/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE... set). */
int bt_mpi_launched(void);
bt_status bt_transport_mpi_new(size_t max_frame, int max_pending, bt_transport **out,
                               bt_error *err);
void bt_mpi_finalize(void);
/* 1 when this build honours BT_LINK_DELAY_US (cmake -DBT_LINK_DELAY=ON, test builds), else 0. */
int bt_transport_link_delay_built(void);

/* ---- local (transport_local.c) ---- */

typedef struct bt_local_hub bt_local_hub;

/* A hub connects n_ranks endpoints; each endpoint is used by one thread. */
bt_status bt_local_hub_new(int n_ranks, size_t max_frame, int max_pending, bt_local_hub **out,
                           bt_error *err);
/* Endpoint of `rank`; owned by the hub (bt_transport_free on it is a no-op). */
bt_transport *bt_local_hub_endpoint(bt_local_hub *hub, int rank);
/* Marks a rank dead: its peers' recv from it and sends to it fail with BT_ERR_IO (tests of
 * failure handling, and a stage thread that exits on error). */
void bt_local_hub_kill(bt_local_hub *hub, int rank);
void bt_local_hub_free(bt_local_hub *hub);

#endif
