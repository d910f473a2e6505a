/*
 * threadpool.c - parallel-for over a fixed set of threads.
 *
 * Protocol of one section (all atomics sequentially consistent unless noted):
 *   owner:  fn/ctx <- section; runs <- the n_tasks tasks cut into n_threads contiguous runs;
 *           pending = n_workers; gen++ (publishes); if any worker sleeps: futex_wake(gen).
 *           Then it takes tasks itself, then waits for pending == 0 (spin, then
 *           futex_wait(pending)).
 *   worker: waits for gen != seen (spin, then sleeping++ and futex_wait(gen, seen)); takes
 *           tasks; pending--; the last one wakes the owner if it sleeps.
 * Taking tasks: a thread takes its own run from the front, in order, then steals from the
 * back of the others' runs until every run is empty. A run is one 64-bit word (next << 32 |
 * end) changed by compare-and-swap, on a cache line of its own, so taking from one's own run
 * costs no cache-line transfer until someone steals from it. In order and contiguous, a
 * thread's tasks walk memory as one stream (a matrix section's rows: the kernels' prefetch
 * of the next rows lands in rows the same thread computes next); a shared counter dealt
 * them out alternately, and on 2 cores one task per thread was 6-10% faster than 4 dealt.
 * The sleeping counters and the futex value check close the lost-wakeup window: a sleeper
 * registers before re-checking the word in the kernel, the waker publishes before reading
 * the counter.
 */
#include "threadpool.h"

#include <limits.h>
#include <stdbool.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Pause iterations before sleeping: tens of microseconds (a pause is 10-140 cycles), which
 * covers the gap between the sections of one forward pass but not the gap between passes.
 * Longer spins cost a lot when the machine is oversubscribed. */
#define SPIN_ITERS 2000

/* Tasks [next, end) of one thread's run: next << 32 | end. */
typedef struct {
    _Alignas(64) _Atomic uint64_t word;
} task_run;

struct bt_threadpool {
    int n_threads;
    pthread_t *threads; /* [n_threads - 1] */

    _Atomic uint32_t gen;     /* futex word: bumped once per section */
    _Atomic uint32_t pending; /* futex word: workers not yet done with the section */
    _Atomic int n_sleeping;   /* workers in futex_wait(gen) */
    _Atomic int owner_sleeping;
    _Atomic int stop;
    task_run *runs; /* [n_threads] */

    bt_threadpool_fn fn; /* section; written by the owner before gen++ */
    void *ctx;
};

typedef struct {
    bt_threadpool *pool;
    int index;
} worker_arg;

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* The front task of run r (front) or its back task (a steal), or -1 when it is empty. */
static int take(task_run *r, bool front) {
    uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
    for (;;) {
        uint32_t next = (uint32_t)(w >> 32), end = (uint32_t)w;
        if (next >= end)
            return -1;
        uint64_t nw = front ? w + ((uint64_t)1 << 32) : w - 1;
        if (atomic_compare_exchange_weak_explicit(&r->word, &w, nw, memory_order_relaxed,
                                                  memory_order_relaxed))
            return (int)(front ? next : end - 1);
    }
}

static void run_tasks(bt_threadpool *pool, int thread) {
    bt_threadpool_fn fn = pool->fn;
    void *ctx = pool->ctx;
    int i, n = pool->n_threads;
    while ((i = take(&pool->runs[thread], true)) >= 0)
        fn(ctx, i, thread);
    for (int k = 1; k < n; k++) { /* runs only shrink: one pass over the others ends it */
        task_run *r = &pool->runs[(thread + k) % n];
        while ((i = take(r, false)) >= 0)
            fn(ctx, i, thread);
    }
}

static void *worker_main(void *p) {
    worker_arg *arg = p;
    bt_threadpool *pool = arg->pool;
    int thread = arg->index;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        for (int spin = 0; g == seen && spin < SPIN_ITERS; spin++) {
            cpu_relax();
            g = atomic_load_explicit(&pool->gen, memory_order_acquire);
        }
        while (g == seen) {
            atomic_fetch_add(&pool->n_sleeping, 1);
            futex_wait(&pool->gen, seen);
            atomic_fetch_sub(&pool->n_sleeping, 1);
            g = atomic_load(&pool->gen);
        }
        seen = g;
        if (atomic_load(&pool->stop))
            break;
        run_tasks(pool, thread);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->owner_sleeping))
            futex_wake(&pool->pending, 1);
    }
    free(arg);
    return NULL;
}

static void publish(bt_threadpool *pool) {
    atomic_fetch_add(&pool->gen, 1);
    if (atomic_load(&pool->n_sleeping) > 0)
        futex_wake(&pool->gen, INT_MAX);
}

bt_status bt_threadpool_new(int n_threads, bt_threadpool **out, bt_error *err) {
    *out = NULL;
    if (n_threads < 1 || n_threads > BT_THREADPOOL_MAX_THREADS)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "threadpool: n_threads %d not in [1, %d]",
                            n_threads, BT_THREADPOOL_MAX_THREADS);
    bt_threadpool *pool = calloc(1, sizeof(*pool));
    if (pool)
        pool->runs = aligned_alloc(_Alignof(task_run), (size_t)n_threads * sizeof(task_run));
    if (!pool || !pool->runs) {
        free(pool);
        return bt_error_set(err, BT_ERR_NOMEM, "threadpool: out of memory");
    }
    pool->n_threads = 1;
    if (n_threads > 1) {
        pool->threads = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!pool->threads) {
            free(pool->runs);
            free(pool);
            return bt_error_set(err, BT_ERR_NOMEM, "threadpool: out of memory");
        }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *arg = malloc(sizeof(*arg));
        if (arg) {
            arg->pool = pool;
            arg->index = i;
        }
        int rc = arg ? pthread_create(&pool->threads[i - 1], NULL, worker_main, arg) : -1;
        if (rc != 0) {
            free(arg);
            bt_threadpool_free(pool);
            return bt_error_set(err, BT_ERR_NOMEM, "threadpool: cannot create thread %d of %d", i,
                                n_threads);
        }
        pool->n_threads = i + 1;
    }
    *out = pool;
    return BT_OK;
}

void bt_threadpool_free(bt_threadpool *pool) {
    if (!pool)
        return;
    atomic_store(&pool->stop, 1);
    publish(pool);
    for (int i = 1; i < pool->n_threads; i++)
        pthread_join(pool->threads[i - 1], NULL);
    free(pool->threads);
    free(pool->runs);
    free(pool);
}

int bt_threadpool_n_threads(const bt_threadpool *pool) {
    return pool->n_threads;
}

void bt_threadpool_run(bt_threadpool *pool, bt_threadpool_fn fn, void *ctx, int n_tasks) {
    if (n_tasks <= 0)
        return;
    if (pool->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i, 0);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    for (int t = 0; t < pool->n_threads; t++) {
        uint64_t lo = (uint64_t)n_tasks * (uint64_t)t / (uint64_t)pool->n_threads;
        uint64_t hi = (uint64_t)n_tasks * (uint64_t)(t + 1) / (uint64_t)pool->n_threads;
        atomic_store_explicit(&pool->runs[t].word, lo << 32 | hi, memory_order_relaxed);
    }
    atomic_store(&pool->pending, (uint32_t)(pool->n_threads - 1));
    publish(pool);
    run_tasks(pool, 0);
    uint32_t p = atomic_load_explicit(&pool->pending, memory_order_acquire);
    for (int spin = 0; p != 0 && spin < SPIN_ITERS; spin++) {
        cpu_relax();
        p = atomic_load_explicit(&pool->pending, memory_order_acquire);
    }
    while (p != 0) {
        atomic_store(&pool->owner_sleeping, 1);
        futex_wait(&pool->pending, p);
        atomic_store(&pool->owner_sleeping, 0);
        p = atomic_load(&pool->pending);
    }
}
