/*
 * transport_mpi.c - the MPI transport, and the only file of baton that includes <mpi.h>.
 * One rank per process, frames are MPI_BYTE messages with one tag on MPI_COMM_WORLD.
 *
 * Send side: per destination a ring of max_pending buffers of max_frame bytes (allocated at
 * creation; untouched pages cost no memory) with one MPI_Isend request each. A send copies
 * the frame into the next free buffer and starts MPI_Isend; when all max_pending are busy it
 * waits for the oldest, polling with a backoff, until the deadline.
 *
 * Receive side: a pool of n_queue + 2 buffers of max_frame bytes. Exactly one MPI_Irecv
 * (MPI_ANY_SOURCE, the frame tag) is posted at all times between calls, so the next frame
 * lands while the caller works on the current one. recv waits for the posted receive,
 * re-posts at once into a free buffer of the pool and returns the completed buffer (held
 * until the next recv). A frame from another rank than the one asked for is queued by
 * moving its buffer into the queue (no copy); later recv calls take queued frames first, in
 * arrival order, so per-sender order holds.
 *
 * Buffer accounting (n_bufs = n_queue + 2): posted (1) + held (0..1) + queued
 * (0..n_queue) + free. recv releases the held buffer first, and only waits on the posted
 * receive while the queue has room, so a free buffer for the re-post always exists. When the
 * queue is full and the asked-for rank's frame has not come, recv returns BT_ERR_LIMIT
 * without losing a frame (a later recv from BT_RANK_ANY drains the queue).
 *
 * Waiting: never MPI_Wait/MPI_Recv (they spin a core a stage needs). A wait polls MPI_Test
 * a few times, then sleeps 20 us for 2 ms, then doubling up to 1 ms between polls. Every
 * send/recv/flush also tests pending sends, which drives MPI progress for large (rendezvous)
 * messages.
 *
 * Errors: MPI_ERRORS_RETURN is set on MPI_COMM_WORLD; every MPI return code is turned into a
 * bt_status with MPI's error string and the peer rank. A truncated receive (a frame larger
 * than max_frame) is BT_ERR_PROTOCOL naming the sender; the receive is re-posted.
 *
 * Timeouts: timeout_us < 0 waits without deadline, 0 checks once, > 0 waits at most that
 * long. Threading: MPI_THREAD_FUNNELED; one endpoint, used by the thread that called
 * bt_mpi_init.
 *
 * Link delay (BT_LINK_DELAY builds only; transport.h): a send copies the frame into the ring
 * with release time now + delay_us and starts no MPI_Isend; reap_all, which every send, recv,
 * flush and progress call runs, starts the frames whose time has come, oldest first, so the
 * order per destination holds. Of a ring's n_pending frames the oldest n_started have their
 * MPI_Isend; the rest wait. The rings get LINK_DELAY_SLOTS slots more than max_pending for
 * the frames that wait (a link of 20 ms holds many frames), and the waits wake at the
 * earliest release time (next_due_us). Without a delay n_started == n_pending always and
 * the path is the one above.
 */
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "transport.h"

#define FRAME_TAG 7
#define POLLS_BEFORE_SLEEP 16
#define BACKOFF_MIN_US 20
#define BACKOFF_MAX_US 250
#define BACKOFF_FLAT_US 2000
#define FREE_WAIT_US 1000000       /* how long free() waits for pending sends */
#define LINK_DELAY_MAX_US 10000000 /* 10 s: anything longer is a typo, not a link */
#define LINK_DELAY_SLOTS 60        /* ring slots for frames held back by the link delay */

#ifdef BT_LINK_DELAY
static const int link_delay_built = 1;
#else
static const int link_delay_built = 0;
#endif

typedef struct send_ring {
    uint8_t **bufs;      /* [cap] buffers of max_frame bytes */
    MPI_Request *reqs;   /* [cap]; MPI_REQUEST_NULL when not started or free */
    int *lens;           /* [cap] frame bytes */
    int64_t *release_us; /* [cap] bt_now_us time the frame may start (link delay) */
    int head;            /* oldest pending */
    int n_pending;       /* frames in the ring, started or held back */
    int n_started;       /* the oldest n_started of them have their MPI_Isend */
} send_ring;

typedef struct queued {
    int buf; /* pool index */
    int len;
    int src;
} queued;

typedef struct mpi_transport {
    bt_transport base;
    int max_pending;
    int cap;             /* ring slots per destination: max_pending (+ LINK_DELAY_SLOTS) */
    int64_t delay_us;    /* link delay, 0 = none (always 0 without BT_LINK_DELAY) */
    int64_t next_due_us; /* earliest release time of a held-back frame, INT64_MAX = none */
    send_ring *rings;    /* [size] */
    /* receive side */
    int n_bufs;     /* n_queue + 2 */
    uint8_t **pool; /* [n_bufs] buffers of max_frame bytes */
    int *free_ids;  /* [n_bufs] stack */
    int n_free;
    int posted; /* pool index of the posted MPI_Irecv, -1 when none */
    MPI_Request rreq;
    int held;      /* pool index returned by the last recv, -1 when none */
    queued *queue; /* [n_queue] arrival order, oldest first */
    int n_queue, n_queued;
} mpi_transport;

static bt_status mpi_send(bt_transport *t, int dst, const void *frame, size_t len,
                          int64_t timeout_us, bt_error *err);
static bt_status mpi_recv(bt_transport *t, int src, const void **frame, size_t *len, int *from,
                          int64_t timeout_us, bt_error *err);
static bt_status mpi_flush(bt_transport *t, int64_t timeout_us, bt_error *err);
static bt_status mpi_progress(bt_transport *t, int64_t *next_due_us, bt_error *err);
static void mpi_abort(bt_transport *t, int code);
static void mpi_free(bt_transport *t);

static const bt_transport_ops mpi_ops = {
    .send = mpi_send,
    .recv = mpi_recv,
    .flush = mpi_flush,
    .progress = mpi_progress,
    .abort = mpi_abort,
    .free = mpi_free,
};

/* "MPI_Isend to rank 3: MPI_ERR_...: <MPI's text>" into err. */
static bt_status mpi_fail(bt_error *err, bt_status st, int rc, const char *what, int rank) {
    char text[MPI_MAX_ERROR_STRING] = "";
    int n = 0;
    if (MPI_Error_string(rc, text, &n) != MPI_SUCCESS)
        snprintf(text, sizeof(text), "MPI error %d", rc);
    if (rank >= 0)
        return bt_error_set(err, st, "transport: %s (rank %d): %s", what, rank, text);
    return bt_error_set(err, st, "transport: %s: %s", what, text);
}

/* Polling wait: a few plain polls, then sleeps of 20 us for the first BACKOFF_FLAT_US of
 * the wait (a large frame arrives in fragments, each needing a progress call from both
 * sides: long sleeps there cut bandwidth tenfold), then doubling to 250 us: a stage waiting
 * for its next micro-batch wakes within 1/4 ms of it (at 1 ms the waits cost 2-stage decode
 * a tenth of its throughput), and an idle rank still costs about 1% of a core. A sleep never
 * runs past wake_us (the next held-back frame's release time; INT64_MAX: none). */
typedef struct backoff {
    int polls;
    int64_t sleep_us;
    int64_t start_us;
} backoff;

static void backoff_wait(backoff *b, int64_t wake_us) {
    if (b->polls < POLLS_BEFORE_SLEEP) {
        if (b->polls++ == 0)
            b->start_us = bt_now_us();
        return;
    }
    if (b->sleep_us == 0)
        b->sleep_us = BACKOFF_MIN_US;
    int64_t us = b->sleep_us;
    if (wake_us != INT64_MAX) {
        int64_t left = wake_us - bt_now_us();
        if (left <= 0)
            return;
        if (left < us)
            us = left;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)us * 1000};
    nanosleep(&ts, NULL);
    if (bt_now_us() - b->start_us >= BACKOFF_FLAT_US)
        b->sleep_us = b->sleep_us * 2 > BACKOFF_MAX_US ? BACKOFF_MAX_US : b->sleep_us * 2;
}

/* Whether the deadline has passed (timeout_us < 0: never). */
static int expired(int64_t timeout_us, int64_t start_us) {
    return timeout_us >= 0 && bt_now_us() - start_us >= timeout_us;
}

/* Starts the held-back frames to dst whose release time has come, oldest first; lowers
 * m->next_due_us to the release time of the first one that must still wait. */
static bt_status ring_start_due(mpi_transport *m, int dst, int64_t now_us, bt_error *err) {
    send_ring *r = &m->rings[dst];
    while (r->n_started < r->n_pending) {
        int i = (r->head + r->n_started) % m->cap;
        if (r->release_us[i] > now_us) {
            if (r->release_us[i] < m->next_due_us)
                m->next_due_us = r->release_us[i];
            break;
        }
        int rc = MPI_Isend(r->bufs[i], r->lens[i], MPI_BYTE, dst, FRAME_TAG, MPI_COMM_WORLD,
                           &r->reqs[i]);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, BT_ERR_IO, rc, "MPI_Isend", dst);
        r->n_started++;
    }
    return BT_OK;
}

/* Completes the started sends to dst that are done, oldest first. */
static bt_status ring_reap(mpi_transport *m, int dst, bt_error *err) {
    send_ring *r = &m->rings[dst];
    while (r->n_started > 0) {
        int done = 0;
        MPI_Status status;
        int rc = MPI_Test(&r->reqs[r->head], &done, &status);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, BT_ERR_IO, rc, "MPI_Isend", dst);
        if (!done)
            break;
        r->reqs[r->head] = MPI_REQUEST_NULL;
        r->head = (r->head + 1) % m->cap;
        r->n_pending--;
        r->n_started--;
    }
    return BT_OK;
}

/* Starts the held-back frames that are due and tests every destination's pending sends:
 * MPI progress for rendezvous transfers. Recomputes m->next_due_us. */
static bt_status reap_all(mpi_transport *m, bt_error *err) {
    int64_t now = m->delay_us > 0 ? bt_now_us() : 0;
    m->next_due_us = INT64_MAX;
    for (int d = 0; d < m->base.size; d++) {
        if (m->rings[d].n_pending == 0)
            continue;
        bt_status st = BT_OK;
        if (link_delay_built && m->delay_us > 0)
            st = ring_start_due(m, d, now, err);
        if (st == BT_OK)
            st = ring_reap(m, d, err);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

static bt_status mpi_send(bt_transport *t, int dst, const void *frame, size_t len,
                          int64_t timeout_us, bt_error *err) {
    mpi_transport *m = (mpi_transport *)t;
    if (dst < 0 || dst >= t->size)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: send to rank %d, size is %d", dst,
                            t->size);
    if (len > t->max_frame)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "transport: frame of %zu bytes to rank %d exceeds max_frame %zu", len,
                            dst, t->max_frame);
    if (len > 0 && !frame)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: NULL frame of %zu bytes", len);
    bt_status st = reap_all(m, err);
    if (st != BT_OK)
        return st;
    send_ring *r = &m->rings[dst];
    int64_t start = bt_now_us();
    backoff b = {0, 0, 0};
    while (r->n_pending == m->cap) {
        if (expired(timeout_us, start))
            return bt_error_set(err, BT_ERR_TIMEOUT,
                                "transport: send to rank %d: %d frames still in flight after "
                                "%lld us",
                                dst, r->n_pending, (long long)timeout_us);
        backoff_wait(&b, m->next_due_us);
        st = reap_all(m, err);
        if (st != BT_OK)
            return st;
    }
    int i = (r->head + r->n_pending) % m->cap;
    if (len > 0)
        memcpy(r->bufs[i], frame, len);
    r->lens[i] = (int)len;
    r->n_pending++;
    if (link_delay_built && m->delay_us > 0) {
        /* Held back: reap_all starts it at its release time. */
        r->release_us[i] = bt_now_us() + m->delay_us;
        if (r->release_us[i] < m->next_due_us)
            m->next_due_us = r->release_us[i];
        return BT_OK;
    }
    int rc = MPI_Isend(r->bufs[i], (int)len, MPI_BYTE, dst, FRAME_TAG, MPI_COMM_WORLD, &r->reqs[i]);
    if (rc != MPI_SUCCESS) {
        r->n_pending--;
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Isend", dst);
    }
    r->n_started++;
    return BT_OK;
}

static bt_status post_recv(mpi_transport *m, bt_error *err) {
    if (m->n_free <= 0)
        return bt_error_set(err, BT_ERR_INTERNAL, "transport: no free receive buffer");
    int id = m->free_ids[--m->n_free];
    int rc = MPI_Irecv(m->pool[id], (int)m->base.max_frame, MPI_BYTE, MPI_ANY_SOURCE, FRAME_TAG,
                       MPI_COMM_WORLD, &m->rreq);
    if (rc != MPI_SUCCESS) {
        m->free_ids[m->n_free++] = id;
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Irecv", -1);
    }
    m->posted = id;
    return BT_OK;
}

static void release_buf(mpi_transport *m, int id) {
    m->free_ids[m->n_free++] = id;
}

/* Tests the posted receive. On completion fills *got = 1, *buf, *len, *src and re-posts.
 * A truncated frame is BT_ERR_PROTOCOL naming the sender (also re-posted). */
static bt_status test_posted(mpi_transport *m, int *got, int *buf, int *len, int *src,
                             bt_error *err) {
    *got = 0;
    if (m->posted < 0) {
        bt_status st = post_recv(m, err);
        if (st != BT_OK)
            return st;
    }
    int done = 0;
    MPI_Status status;
    memset(&status, 0, sizeof(status));
    int rc = MPI_Test(&m->rreq, &done, &status);
    if (rc != MPI_SUCCESS) {
        int cls = 0;
        MPI_Error_class(rc, &cls);
        if (cls == MPI_ERR_TRUNCATE ||
            (rc == MPI_ERR_IN_STATUS && status.MPI_ERROR == MPI_ERR_TRUNCATE)) {
            /* The request is complete; the frame is lost (it could never fit). */
            int from = status.MPI_SOURCE;
            int id = m->posted;
            m->posted = -1;
            m->rreq = MPI_REQUEST_NULL;
            release_buf(m, id);
            bt_status st = post_recv(m, err);
            if (st != BT_OK)
                return st;
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "transport: frame from rank %d is larger than max_frame %zu "
                                "(MPI truncated it)",
                                from, m->base.max_frame);
        }
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Irecv", status.MPI_SOURCE);
    }
    if (!done)
        return BT_OK;
    int count = 0;
    rc = MPI_Get_count(&status, MPI_BYTE, &count);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Get_count", status.MPI_SOURCE);
    if (count < 0 || (size_t)count > m->base.max_frame || status.MPI_SOURCE < 0 ||
        status.MPI_SOURCE >= m->base.size) {
        release_buf(m, m->posted);
        m->posted = -1;
        m->rreq = MPI_REQUEST_NULL;
        bt_status st = post_recv(m, err);
        if (st != BT_OK)
            return st;
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "transport: received count %d from rank %d "
                            "out of range",
                            count, status.MPI_SOURCE);
    }
    *got = 1;
    *buf = m->posted;
    *len = count;
    *src = status.MPI_SOURCE;
    m->posted = -1;
    m->rreq = MPI_REQUEST_NULL;
    return post_recv(m, err);
}

static bt_status mpi_recv(bt_transport *t, int src, const void **frame, size_t *len, int *from,
                          int64_t timeout_us, bt_error *err) {
    mpi_transport *m = (mpi_transport *)t;
    if (src != BT_RANK_ANY && (src < 0 || src >= t->size))
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: recv from rank %d, size is %d",
                            src, t->size);
    if (m->held >= 0) {
        release_buf(m, m->held);
        m->held = -1;
    }
    int64_t start = bt_now_us();
    bt_status st = reap_all(m, err);
    if (st != BT_OK)
        return st;
    /* Queued frames first, oldest first. */
    for (int i = 0; i < m->n_queued; i++) {
        if (src != BT_RANK_ANY && m->queue[i].src != src)
            continue;
        queued q = m->queue[i];
        memmove(&m->queue[i], &m->queue[i + 1], (size_t)(m->n_queued - i - 1) * sizeof(queued));
        m->n_queued--;
        m->held = q.buf;
        *frame = m->pool[q.buf];
        *len = (size_t)q.len;
        if (from)
            *from = q.src;
        return BT_OK;
    }
    backoff b = {0, 0, 0};
    for (;;) {
        if (m->n_queued == m->n_queue)
            return bt_error_set(err, BT_ERR_LIMIT,
                                "transport: waiting for rank %d, %d frames from other ranks are "
                                "queued (the limit); receive from any rank to drain them",
                                src, m->n_queued);
        int got = 0, buf = -1, n = 0, s = -1;
        st = test_posted(m, &got, &buf, &n, &s, err);
        if (st != BT_OK)
            return st;
        if (got) {
            if (src == BT_RANK_ANY || s == src) {
                m->held = buf;
                *frame = m->pool[buf];
                *len = (size_t)n;
                if (from)
                    *from = s;
                return BT_OK;
            }
            m->queue[m->n_queued++] = (queued){.buf = buf, .len = n, .src = s};
            continue; /* another frame may already be there: test again before sleeping */
        }
        if (expired(timeout_us, start)) {
            if (src == BT_RANK_ANY)
                return bt_error_set(err, BT_ERR_TIMEOUT,
                                    "transport: no frame from any rank within %lld us",
                                    (long long)timeout_us);
            return bt_error_set(err, BT_ERR_TIMEOUT,
                                "transport: no frame from rank %d within %lld us", src,
                                (long long)timeout_us);
        }
        backoff_wait(&b, m->next_due_us);
        st = reap_all(m, err);
        if (st != BT_OK)
            return st;
    }
}

static bt_status mpi_flush(bt_transport *t, int64_t timeout_us, bt_error *err) {
    mpi_transport *m = (mpi_transport *)t;
    int64_t start = bt_now_us();
    backoff b = {0, 0, 0};
    for (;;) {
        bt_status st = reap_all(m, err);
        if (st != BT_OK)
            return st;
        int busy = -1;
        for (int d = 0; d < t->size && busy < 0; d++)
            if (m->rings[d].n_pending > 0)
                busy = d;
        if (busy < 0)
            return BT_OK;
        if (expired(timeout_us, start))
            return bt_error_set(err, BT_ERR_TIMEOUT,
                                "transport: flush: %d frames to rank %d still in flight after "
                                "%lld us",
                                m->rings[busy].n_pending, busy, (long long)timeout_us);
        backoff_wait(&b, m->next_due_us);
    }
}

static bt_status mpi_progress(bt_transport *t, int64_t *next_due_us, bt_error *err) {
    mpi_transport *m = (mpi_transport *)t;
    bt_status st = reap_all(m, err);
    *next_due_us = m->next_due_us;
    return st;
}

static void mpi_abort(bt_transport *t, int code) {
    (void)t;
    MPI_Abort(MPI_COMM_WORLD, code ? code : 1);
    _Exit(code ? code : 1); /* MPI_Abort does not return; never leave a rank behind */
}

/* Cancels the posted receive; a frame that completed meanwhile is dropped. */
static void cancel_posted(mpi_transport *m) {
    if (m->posted < 0)
        return;
    MPI_Cancel(&m->rreq);
    int done = 0;
    backoff b = {0, 0, 0};
    int64_t start = bt_now_us();
    MPI_Status status;
    while (MPI_Test(&m->rreq, &done, &status) == MPI_SUCCESS && !done &&
           !expired(FREE_WAIT_US, start))
        backoff_wait(&b, INT64_MAX);
    if (!done && m->rreq != MPI_REQUEST_NULL)
        MPI_Request_free(&m->rreq);
    m->posted = -1;
}

/* Frees what the transport owns. Returns 1 when pending sends could not complete, in which
 * case the send buffers are left allocated (MPI may still read them). */
static int wait_sends(mpi_transport *m) {
    int64_t start = bt_now_us();
    backoff b = {0, 0, 0};
    for (;;) {
        if (reap_all(m, NULL) != BT_OK)
            return 1;
        int pending = 0;
        for (int d = 0; d < m->base.size; d++)
            pending += m->rings[d].n_pending;
        if (pending == 0)
            return 0;
        if (expired(FREE_WAIT_US + m->delay_us, start)) /* held frames leave first */
            return 1;
        backoff_wait(&b, m->next_due_us);
    }
}

static void transport_destroy(mpi_transport *m, int leak_send_bufs) {
    if (m->rings) {
        for (int d = 0; d < m->base.size; d++) {
            send_ring *r = &m->rings[d];
            if (leak_send_bufs) {
                for (int k = 0; k < r->n_started; k++) {
                    int i = (r->head + k) % m->cap;
                    MPI_Request_free(&r->reqs[i]);
                }
                continue; /* buffers stay allocated: MPI may still read them */
            }
            if (r->bufs)
                for (int i = 0; i < m->cap; i++)
                    free(r->bufs[i]);
            free(r->bufs);
            free(r->reqs);
            free(r->lens);
            free(r->release_us);
        }
        if (!leak_send_bufs)
            free(m->rings);
    }
    if (m->pool)
        for (int i = 0; i < m->n_bufs; i++)
            free(m->pool[i]);
    free(m->pool);
    free(m->free_ids);
    free(m->queue);
    free(m);
}

static void mpi_free(bt_transport *t) {
    mpi_transport *m = (mpi_transport *)t;
    cancel_posted(m);
    int stuck = wait_sends(m);
    if (stuck)
        BT_WARN("transport: rank %d: sends still in flight at free; leaving their buffers",
                t->rank);
    transport_destroy(m, stuck);
}

bt_status bt_mpi_init(int *argc, char ***argv, int *rank, int *size, bt_error *err) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: MPI was already finalized");
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS)
            return mpi_fail(err, BT_ERR_IO, rc, "MPI_Init_thread", -1);
        if (provided < MPI_THREAD_FUNNELED)
            BT_WARN("transport: MPI provides thread level %d < FUNNELED", provided);
    }
    int rc = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Comm_set_errhandler", -1);
    int r = 0, s = 0;
    rc = MPI_Comm_rank(MPI_COMM_WORLD, &r);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(MPI_COMM_WORLD, &s);
    if (rc != MPI_SUCCESS)
        return mpi_fail(err, BT_ERR_IO, rc, "MPI_Comm_rank/size", -1);
    if (rank)
        *rank = r;
    if (size)
        *size = s;
    return BT_OK;
}

int bt_mpi_launched(void) {
    static const char *const vars[] = {
        "OMPI_COMM_WORLD_SIZE", /* Open MPI mpirun */
        "PMIX_RANK",            /* PMIx launchers: srun --mpi=pmix, prterun */
        "PMI_SIZE",             /* PMI-1/2: MPICH hydra, srun --mpi=pmi2 */
        "PMI_RANK",
        "MPI_LOCALNRANKS", /* MPICH hydra */
    };
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

int bt_transport_link_delay_built(void) {
    return link_delay_built;
}

/* BT_LINK_DELAY_US from the environment into *out (0 when unset or empty). A build without
 * BT_LINK_DELAY refuses a nonzero value: a test that asked for a delay must not run without. */
static bt_status link_delay_from_env(int64_t *out, bt_error *err) {
    *out = 0;
    const char *v = getenv("BT_LINK_DELAY_US");
    if (!v || !*v)
        return BT_OK;
    char *end = NULL;
    long long us = strtoll(v, &end, 10);
    if (*end != '\0' || v[0] == '-' || v[0] == '+' || v[0] == ' ' || us < 0 ||
        us > LINK_DELAY_MAX_US)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "transport: BT_LINK_DELAY_US='%s' is not a delay in microseconds "
                            "(0 to %d)",
                            v, LINK_DELAY_MAX_US);
    if (us > 0 && !link_delay_built)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "transport: BT_LINK_DELAY_US=%lld is set, but this baton was built "
                            "without the link delay (a test build: cmake -DBT_LINK_DELAY=ON)",
                            us);
    *out = (int64_t)us;
    return BT_OK;
}

void bt_mpi_finalize(void) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized)
        MPI_Finalize();
}

bt_status bt_transport_mpi_new(size_t max_frame, int max_pending, bt_transport **out,
                               bt_error *err) {
    *out = NULL;
    if (max_frame == 0 || max_frame > (size_t)INT_MAX)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: max_frame %zu not in [1, %d]",
                            max_frame, INT_MAX);
    if (max_pending < 1 || max_pending > 1024)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: max_pending %d not in [1, 1024]",
                            max_pending);
    int64_t delay_us = 0;
    bt_status st = link_delay_from_env(&delay_us, err);
    if (st != BT_OK)
        return st;
    int rank = 0, size = 0;
    st = bt_mpi_init(NULL, NULL, &rank, &size, err);
    if (st != BT_OK)
        return st;
    mpi_transport *m = calloc(1, sizeof(*m));
    if (!m)
        return bt_error_set(err, BT_ERR_NOMEM, "transport: mpi transport");
    m->base.ops = &mpi_ops;
    m->base.rank = rank;
    m->base.size = size;
    m->base.max_frame = max_frame;
    m->max_pending = max_pending;
    m->delay_us = delay_us;
    m->cap = max_pending + (delay_us > 0 ? LINK_DELAY_SLOTS : 0);
    m->next_due_us = INT64_MAX;
    m->posted = -1;
    m->held = -1;
    m->rreq = MPI_REQUEST_NULL;
    /* Room for every peer's ring of frames while waiting for one rank (a peer with a link
     * delay has cap of them in flight, as this rank does: the delay is the job's). */
    m->n_queue = m->cap * (size > 1 ? size - 1 : 1);
    m->n_bufs = m->n_queue + 2;
    m->rings = calloc((size_t)size, sizeof(send_ring));
    m->pool = calloc((size_t)m->n_bufs, sizeof(uint8_t *));
    m->free_ids = calloc((size_t)m->n_bufs, sizeof(int));
    m->queue = calloc((size_t)m->n_queue, sizeof(queued));
    if (!m->rings || !m->pool || !m->free_ids || !m->queue)
        goto nomem;
    for (int d = 0; d < size; d++) {
        send_ring *r = &m->rings[d];
        r->bufs = calloc((size_t)m->cap, sizeof(uint8_t *));
        r->reqs = calloc((size_t)m->cap, sizeof(MPI_Request));
        r->lens = calloc((size_t)m->cap, sizeof(int));
        r->release_us = calloc((size_t)m->cap, sizeof(int64_t));
        if (!r->bufs || !r->reqs || !r->lens || !r->release_us)
            goto nomem;
        for (int i = 0; i < m->cap; i++) {
            r->reqs[i] = MPI_REQUEST_NULL;
            r->bufs[i] = malloc(max_frame);
            if (!r->bufs[i])
                goto nomem;
        }
    }
    for (int i = 0; i < m->n_bufs; i++) {
        m->pool[i] = malloc(max_frame);
        if (!m->pool[i])
            goto nomem;
        m->free_ids[m->n_free++] = m->n_bufs - 1 - i;
    }
    st = post_recv(m, err);
    if (st != BT_OK) {
        transport_destroy(m, 0);
        return st;
    }
    *out = &m->base;
    return BT_OK;
nomem:
    transport_destroy(m, 0);
    return bt_error_set(err, BT_ERR_NOMEM,
                        "transport: rank %d: buffers for %d ranks x %d pending x %zu bytes", rank,
                        size, max_pending, max_frame);
}
