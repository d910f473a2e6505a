/*
 * transport_local.c - the in-process transport: ranks are threads of one process and a hub
 * of bounded mailboxes carries frames between them. Serves the singleton run (coordinator
 * and one stage without mpirun) and the unit tests; behaves like the MPI transport so that
 * code tested here runs unchanged under mpirun.
 *
 * Each rank owns one mailbox: a slab of n_slots = max_pending * n_ranks + 1 slots of
 * max_frame bytes, allocated at hub creation (nothing is allocated per frame), a FIFO of
 * occupied slots in arrival order, one mutex and two condition variables (arrived: a frame
 * was queued or a rank died; taken: a frame was dequeued or a rank died).
 *
 * Invariants (under the mailbox mutex):
 *   - n_from[s] (frames from rank s queued, not yet dequeued) <= max_pending. A sender with
 *     max_pending undelivered frames at a destination waits on `taken` until the receiver
 *     dequeues one, or the deadline (BT_ERR_TIMEOUT naming the destination).
 *   - Slots in use = queued frames + the one frame the owner holds (`held`), so the
 *     +1 slot makes a free slot always exist for a sender under its max_pending limit.
 *   - A frame returned by recv stays in its slot (`held`) until the next recv on that
 *     endpoint, which releases it first.
 *
 * Peer failure (bt_local_hub_kill, abort): a rank's `dead` flag only goes 0 -> 1.
 *   - send to a dead rank, and any call on a dead endpoint: BT_ERR_IO naming the rank.
 *   - recv from a specific dead rank: frames it queued before dying are still delivered in
 *     order; once none is left, BT_ERR_IO naming it.
 *   - recv from BT_RANK_ANY: queued frames first; then each dead peer is reported once as
 *     BT_ERR_IO naming it (so a coordinator waiting on any stage learns of a failure without
 *     waiting for its deadline); afterwards it keeps waiting for the live peers, and fails
 *     with BT_ERR_IO when every peer is dead.
 *   - flush: waits until every frame this endpoint sent has been dequeued by its
 *     destination; frames to a dead destination are BT_ERR_IO naming it.
 *
 * Timeouts: timeout_us < 0 waits without deadline, 0 checks once, > 0 waits at most that
 * long. Waiting is a timed wait on a CLOCK_MONOTONIC condition variable, never a spin.
 *
 * Threading: the hub is thread-safe; each endpoint is confined to one thread;
 * bt_local_hub_kill may be called from any thread; bt_local_hub_free only once no thread
 * uses an endpoint any more.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "transport.h"

/* One mailbox slot; `data` points into the mailbox slab (max_frame bytes). */
typedef struct slot {
    uint8_t *data;
    size_t len;
    int src;
} slot;

typedef struct mailbox {
    pthread_mutex_t mu;
    pthread_cond_t arrived; /* a frame was queued, or a rank died */
    pthread_cond_t taken;   /* a frame was dequeued, or a rank died */
    uint8_t *slab;          /* [n_slots * max_frame] bytes */
    slot *slots;            /* [n_slots] */
    int *free_ids;          /* [n_slots] stack of free slot ids */
    int n_free;
    int *fifo; /* [n_slots] queued slot ids, arrival order (oldest first) */
    int n_queued;
    int *n_from; /* [n_ranks] queued frames per sender */
    int held;    /* slot id returned by the last recv, -1 when none */
    int sync_ok; /* mutex and conds initialised */
} mailbox;

typedef struct local_endpoint {
    bt_transport base; /* first: the hub hands out &ep->base */
    struct bt_local_hub *hub;
    char *reported_dead; /* [n_ranks] death already reported to recv(ANY) */
} local_endpoint;

struct bt_local_hub {
    int n_ranks;
    int max_pending;
    size_t max_frame;
    int n_slots;
    atomic_int *dead;    /* [n_ranks] 0 alive, 1 dead; only goes 0 -> 1 */
    mailbox *boxes;      /* [n_ranks] */
    local_endpoint *eps; /* [n_ranks] */
};

static bt_status local_send(bt_transport *t, int dst, const void *frame, size_t len,
                            int64_t timeout_us, bt_error *err);
static bt_status local_recv(bt_transport *t, int src, const void **frame, size_t *len, int *from,
                            int64_t timeout_us, bt_error *err);
static bt_status local_flush(bt_transport *t, int64_t timeout_us, bt_error *err);
static bt_status local_progress(bt_transport *t, int64_t *next_due_us, bt_error *err);
static void local_abort(bt_transport *t, int code);
static void local_free(bt_transport *t);

static const bt_transport_ops local_ops = {
    .send = local_send,
    .recv = local_recv,
    .flush = local_flush,
    .progress = local_progress,
    .abort = local_abort,
    .free = local_free,
};

static int is_dead(const bt_local_hub *hub, int rank) {
    return atomic_load(&hub->dead[rank]) != 0;
}

/* Absolute CLOCK_MONOTONIC deadline for pthread_cond_timedwait. */
static struct timespec deadline_ts(int64_t timeout_us) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (timeout_us % 1000000) * 1000;
    ts.tv_sec += (time_t)(timeout_us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

/* Waits on `cond` until signalled or the deadline. Returns 0, or ETIMEDOUT once the
 * deadline has passed (timeout_us == 0 times out at once; < 0 never does). */
static int wait_until(pthread_cond_t *cond, pthread_mutex_t *mu, int64_t timeout_us,
                      const struct timespec *deadline) {
    if (timeout_us == 0)
        return ETIMEDOUT;
    if (timeout_us < 0)
        return pthread_cond_wait(cond, mu);
    return pthread_cond_timedwait(cond, mu, deadline);
}

static void mailbox_release_held(mailbox *mb) {
    if (mb->held >= 0) {
        mb->free_ids[mb->n_free++] = mb->held;
        mb->held = -1;
    }
}

/* Removes queue position `pos` from the FIFO, makes it the held slot. Caller holds mu. */
static void mailbox_take(mailbox *mb, int pos) {
    int id = mb->fifo[pos];
    memmove(&mb->fifo[pos], &mb->fifo[pos + 1], (size_t)(mb->n_queued - pos - 1) * sizeof(int));
    mb->n_queued--;
    mb->n_from[mb->slots[id].src]--;
    mb->held = id;
    pthread_cond_broadcast(&mb->taken);
}

/* Position of the oldest queued frame from src (or any when src == BT_RANK_ANY), or -1. */
static int mailbox_find(const mailbox *mb, int src) {
    for (int i = 0; i < mb->n_queued; i++)
        if (src == BT_RANK_ANY || mb->slots[mb->fifo[i]].src == src)
            return i;
    return -1;
}

static bt_status local_send(bt_transport *t, int dst, const void *frame, size_t len,
                            int64_t timeout_us, bt_error *err) {
    local_endpoint *ep = (local_endpoint *)t;
    bt_local_hub *hub = ep->hub;
    int self = t->rank;
    if (dst < 0 || dst >= hub->n_ranks)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: send to rank %d, size is %d", dst,
                            hub->n_ranks);
    if (len > hub->max_frame)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "transport: frame of %zu bytes to rank %d exceeds max_frame %zu", len,
                            dst, hub->max_frame);
    if (len > 0 && !frame)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: NULL frame of %zu bytes", len);
    if (is_dead(hub, self))
        return bt_error_set(err, BT_ERR_IO, "transport: rank %d (this endpoint) is gone", self);

    mailbox *mb = &hub->boxes[dst];
    struct timespec deadline = deadline_ts(timeout_us > 0 ? timeout_us : 0);
    bt_status st = BT_OK;
    pthread_mutex_lock(&mb->mu);
    for (;;) {
        if (is_dead(hub, dst)) {
            st = bt_error_set(err, BT_ERR_IO, "transport: rank %d is gone", dst);
            break;
        }
        if (is_dead(hub, self)) {
            st = bt_error_set(err, BT_ERR_IO, "transport: rank %d (this endpoint) is gone", self);
            break;
        }
        if (mb->n_from[self] < hub->max_pending)
            break;
        if (wait_until(&mb->taken, &mb->mu, timeout_us, &deadline) == ETIMEDOUT) {
            st = bt_error_set(err, BT_ERR_TIMEOUT,
                              "transport: send to rank %d: %d frames still undelivered after "
                              "%lld us",
                              dst, mb->n_from[self], (long long)timeout_us);
            break;
        }
    }
    if (st == BT_OK) {
        /* n_from[self] < max_pending, so a free slot exists (see the invariants). */
        if (mb->n_free <= 0) {
            pthread_mutex_unlock(&mb->mu);
            return bt_error_set(err, BT_ERR_INTERNAL,
                                "transport: mailbox of rank %d has no "
                                "free slot",
                                dst);
        }
        int id = mb->free_ids[--mb->n_free];
        slot *s = &mb->slots[id];
        if (len > 0)
            memcpy(s->data, frame, len);
        s->len = len;
        s->src = self;
        mb->fifo[mb->n_queued++] = id;
        mb->n_from[self]++;
        pthread_cond_broadcast(&mb->arrived);
    }
    pthread_mutex_unlock(&mb->mu);
    return st;
}

/* First dead, not yet reported peer (the endpoint marks it reported), or -1. */
static int next_unreported_death(local_endpoint *ep) {
    bt_local_hub *hub = ep->hub;
    for (int r = 0; r < hub->n_ranks; r++) {
        if (r != ep->base.rank && !ep->reported_dead[r] && is_dead(hub, r)) {
            ep->reported_dead[r] = 1;
            return r;
        }
    }
    return -1;
}

static int all_peers_dead(const bt_local_hub *hub, int self) {
    for (int r = 0; r < hub->n_ranks; r++)
        if (r != self && !is_dead(hub, r))
            return 0;
    return 1;
}

static bt_status local_recv(bt_transport *t, int src, const void **frame, size_t *len, int *from,
                            int64_t timeout_us, bt_error *err) {
    local_endpoint *ep = (local_endpoint *)t;
    bt_local_hub *hub = ep->hub;
    int self = t->rank;
    mailbox *mb = &hub->boxes[self];
    if (src != BT_RANK_ANY && (src < 0 || src >= hub->n_ranks))
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: recv from rank %d, size is %d",
                            src, hub->n_ranks);
    struct timespec deadline = deadline_ts(timeout_us > 0 ? timeout_us : 0);
    bt_status st = BT_OK;
    pthread_mutex_lock(&mb->mu);
    mailbox_release_held(mb);
    for (;;) {
        if (is_dead(hub, self)) {
            st = bt_error_set(err, BT_ERR_IO, "transport: rank %d (this endpoint) is gone", self);
            break;
        }
        int pos = mailbox_find(mb, src);
        if (pos >= 0) {
            mailbox_take(mb, pos);
            break;
        }
        if (src != BT_RANK_ANY && is_dead(hub, src)) {
            st = bt_error_set(err, BT_ERR_IO, "transport: rank %d is gone", src);
            break;
        }
        if (src == BT_RANK_ANY) {
            int gone = next_unreported_death(ep);
            if (gone >= 0) {
                st = bt_error_set(err, BT_ERR_IO, "transport: rank %d is gone", gone);
                break;
            }
            if (hub->n_ranks > 1 && all_peers_dead(hub, self)) {
                st = bt_error_set(err, BT_ERR_IO, "transport: every peer of rank %d is gone", self);
                break;
            }
        }
        if (wait_until(&mb->arrived, &mb->mu, timeout_us, &deadline) == ETIMEDOUT) {
            if (src == BT_RANK_ANY)
                st = bt_error_set(err, BT_ERR_TIMEOUT,
                                  "transport: no frame from any rank within %lld us",
                                  (long long)timeout_us);
            else
                st = bt_error_set(err, BT_ERR_TIMEOUT,
                                  "transport: no frame from rank %d within %lld us", src,
                                  (long long)timeout_us);
            break;
        }
    }
    if (st == BT_OK) {
        const slot *s = &mb->slots[mb->held];
        *frame = s->data;
        *len = s->len;
        if (from)
            *from = s->src;
    }
    pthread_mutex_unlock(&mb->mu);
    return st;
}

/* A local send is complete when it returns, and there is no link delay between threads. */
static bt_status local_progress(bt_transport *t, int64_t *next_due_us, bt_error *err) {
    (void)t;
    (void)err;
    *next_due_us = INT64_MAX;
    return BT_OK;
}

static bt_status local_flush(bt_transport *t, int64_t timeout_us, bt_error *err) {
    local_endpoint *ep = (local_endpoint *)t;
    bt_local_hub *hub = ep->hub;
    int self = t->rank;
    struct timespec deadline = deadline_ts(timeout_us > 0 ? timeout_us : 0);
    for (int dst = 0; dst < hub->n_ranks; dst++) {
        mailbox *mb = &hub->boxes[dst];
        bt_status st = BT_OK;
        pthread_mutex_lock(&mb->mu);
        while (mb->n_from[self] > 0) {
            if (is_dead(hub, dst)) {
                st = bt_error_set(err, BT_ERR_IO,
                                  "transport: rank %d is gone with %d frames "
                                  "undelivered",
                                  dst, mb->n_from[self]);
                break;
            }
            if (dst != self && is_dead(hub, self)) {
                st = bt_error_set(err, BT_ERR_IO, "transport: rank %d (this endpoint) is gone",
                                  self);
                break;
            }
            if (dst == self) {
                /* Only this thread can dequeue its own mailbox: waiting would never end. */
                st = bt_error_set(err, BT_ERR_TIMEOUT,
                                  "transport: %d frames to rank %d (self) "
                                  "are not received yet",
                                  mb->n_from[self], self);
                break;
            }
            if (wait_until(&mb->taken, &mb->mu, timeout_us, &deadline) == ETIMEDOUT) {
                st = bt_error_set(err, BT_ERR_TIMEOUT,
                                  "transport: flush: %d frames to rank %d "
                                  "undelivered after %lld us",
                                  mb->n_from[self], dst, (long long)timeout_us);
                break;
            }
        }
        pthread_mutex_unlock(&mb->mu);
        if (st != BT_OK)
            return st;
    }
    return BT_OK;
}

/* Marks `rank` dead and wakes every waiter so it re-checks. */
static void hub_mark_dead(bt_local_hub *hub, int rank) {
    atomic_store(&hub->dead[rank], 1);
    for (int r = 0; r < hub->n_ranks; r++) {
        mailbox *mb = &hub->boxes[r];
        /* Taking the lock orders the flag before any waiter's next check: no lost wakeup. */
        pthread_mutex_lock(&mb->mu);
        pthread_cond_broadcast(&mb->arrived);
        pthread_cond_broadcast(&mb->taken);
        pthread_mutex_unlock(&mb->mu);
    }
}

static void local_abort(bt_transport *t, int code) {
    (void)code;
    bt_local_hub *hub = ((local_endpoint *)t)->hub;
    for (int r = 0; r < hub->n_ranks; r++)
        hub_mark_dead(hub, r);
}

static void local_free(bt_transport *t) {
    (void)t; /* endpoints are owned by the hub */
}

static void mailbox_deinit(mailbox *mb) {
    if (mb->sync_ok) {
        pthread_cond_destroy(&mb->taken);
        pthread_cond_destroy(&mb->arrived);
        pthread_mutex_destroy(&mb->mu);
    }
    free(mb->slab);
    free(mb->slots);
    free(mb->free_ids);
    free(mb->fifo);
    free(mb->n_from);
}

static bt_status mailbox_init(mailbox *mb, const bt_local_hub *hub, int rank, bt_error *err) {
    int n = hub->n_slots;
    mb->held = -1;
    mb->slab = malloc((size_t)n * hub->max_frame);
    mb->slots = calloc((size_t)n, sizeof(slot));
    mb->free_ids = calloc((size_t)n, sizeof(int));
    mb->fifo = calloc((size_t)n, sizeof(int));
    mb->n_from = calloc((size_t)hub->n_ranks, sizeof(int));
    if (!mb->slab || !mb->slots || !mb->free_ids || !mb->fifo || !mb->n_from)
        return bt_error_set(err, BT_ERR_NOMEM,
                            "transport: mailbox of rank %d: %d slots of %zu bytes", rank, n,
                            hub->max_frame);
    for (int i = 0; i < n; i++) {
        mb->slots[i].data = mb->slab + (size_t)i * hub->max_frame;
        mb->free_ids[i] = n - 1 - i;
    }
    mb->n_free = n;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return bt_error_set(err, BT_ERR_INTERNAL, "transport: pthread_condattr_init failed");
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_mutex_init(&mb->mu, NULL);
    if (rc == 0) {
        rc = pthread_cond_init(&mb->arrived, &ca);
        if (rc == 0) {
            rc = pthread_cond_init(&mb->taken, &ca);
            if (rc != 0)
                pthread_cond_destroy(&mb->arrived);
        }
        if (rc != 0)
            pthread_mutex_destroy(&mb->mu);
    }
    pthread_condattr_destroy(&ca);
    if (rc != 0)
        return bt_error_set(err, BT_ERR_INTERNAL,
                            "transport: mailbox of rank %d: pthread init "
                            "failed (%s)",
                            rank, strerror(rc));
    mb->sync_ok = 1;
    return BT_OK;
}

bt_status bt_local_hub_new(int n_ranks, size_t max_frame, int max_pending, bt_local_hub **out,
                           bt_error *err) {
    *out = NULL;
    if (n_ranks < 1 || n_ranks > 4096)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: n_ranks %d not in [1, 4096]",
                            n_ranks);
    if (max_frame == 0 || max_frame > ((size_t)1 << 31))
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: max_frame %zu not in [1, 2^31]",
                            max_frame);
    if (max_pending < 1 || max_pending > 1024)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "transport: max_pending %d not in [1, 1024]",
                            max_pending);
    bt_local_hub *hub = calloc(1, sizeof(*hub));
    if (!hub)
        return bt_error_set(err, BT_ERR_NOMEM, "transport: hub");
    hub->n_ranks = n_ranks;
    hub->max_pending = max_pending;
    hub->max_frame = max_frame;
    hub->n_slots = max_pending * n_ranks + 1;
    hub->dead = calloc((size_t)n_ranks, sizeof(atomic_int));
    hub->boxes = calloc((size_t)n_ranks, sizeof(mailbox));
    hub->eps = calloc((size_t)n_ranks, sizeof(local_endpoint));
    bt_status st = BT_OK;
    if (!hub->dead || !hub->boxes || !hub->eps) {
        st = bt_error_set(err, BT_ERR_NOMEM, "transport: hub of %d ranks", n_ranks);
        goto cleanup;
    }
    for (int r = 0; r < n_ranks; r++) {
        atomic_init(&hub->dead[r], 0);
        st = mailbox_init(&hub->boxes[r], hub, r, err);
        if (st != BT_OK)
            goto cleanup;
        local_endpoint *ep = &hub->eps[r];
        ep->base.ops = &local_ops;
        ep->base.rank = r;
        ep->base.size = n_ranks;
        ep->base.max_frame = max_frame;
        ep->hub = hub;
        ep->reported_dead = calloc((size_t)n_ranks, 1);
        if (!ep->reported_dead) {
            st = bt_error_set(err, BT_ERR_NOMEM, "transport: endpoint of rank %d", r);
            goto cleanup;
        }
    }
    *out = hub;
    return BT_OK;
cleanup:
    bt_local_hub_free(hub);
    return st;
}

bt_transport *bt_local_hub_endpoint(bt_local_hub *hub, int rank) {
    if (!hub || rank < 0 || rank >= hub->n_ranks)
        return NULL;
    return &hub->eps[rank].base;
}

void bt_local_hub_kill(bt_local_hub *hub, int rank) {
    if (!hub || rank < 0 || rank >= hub->n_ranks)
        return;
    hub_mark_dead(hub, rank);
}

void bt_local_hub_free(bt_local_hub *hub) {
    if (!hub)
        return;
    for (int r = 0; r < hub->n_ranks; r++) {
        if (hub->boxes)
            mailbox_deinit(&hub->boxes[r]);
        if (hub->eps)
            free(hub->eps[r].reported_dead);
    }
    free(hub->boxes);
    free(hub->eps);
    free(hub->dead);
    free(hub);
}
