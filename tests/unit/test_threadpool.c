/*
 * test_threadpool.c - every task runs exactly once per section, thread indices are in range,
 * many short sections in a row (the decode pattern) and sections after an idle sleep work; a
 * thread's run is in order, and a thread held up in its first task does not hold up the rest
 * of its run (the others steal it).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "threadpool.h"

#define MAX_TASKS 1000

typedef struct {
    _Atomic int hits[MAX_TASKS];
    _Atomic int bad_thread;
    int n_threads;
    _Atomic long sum;
} ctx_t;

static void task_fn(void *p, int task, int thread) {
    ctx_t *c = p;
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread >= c->n_threads)
        atomic_store(&c->bad_thread, 1);
    atomic_fetch_add(&c->sum, task);
}

static void check_section(bt_threadpool *pool, int n_tasks) {
    static ctx_t c;
    memset(&c, 0, sizeof(c));
    c.n_threads = bt_threadpool_n_threads(pool);
    bt_threadpool_run(pool, task_fn, &c, n_tasks);
    int wrong = 0;
    for (int i = 0; i < n_tasks; i++)
        wrong += atomic_load(&c.hits[i]) != 1;
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(atomic_load(&c.bad_thread), 0);
    CHECK_EQ_INT(atomic_load(&c.sum), (long)n_tasks * (n_tasks - 1) / 2);
}

/* Records which thread ran each task, and when (a global sequence number). */
typedef struct {
    int by[64], seq[64];
    _Atomic int clock, done;
    bool hold; /* thread 0's first task waits (up to 10 s) until every other task is done */
    bool held;
} steal_t;

static void steal_fn(void *p, int task, int thread) {
    steal_t *s = p;
    s->by[task] = thread;
    s->seq[task] = atomic_fetch_add(&s->clock, 1);
    if (thread == 0 && s->hold && !s->held) {
        s->held = true;
        for (int ms = 0; ms < 10000 && atomic_load(&s->done) < 63; ms++)
            usleep(1000);
    }
    atomic_fetch_add(&s->done, 1);
}

/* Thread t's run is tasks [64 t / n, 64 (t + 1) / n). */
static void check_runs(bt_threadpool *pool) {
    static steal_t s;
    int n = bt_threadpool_n_threads(pool);
    /* Each thread takes its own run front to back: the tasks of its run that it ran are in
     * increasing order of time. */
    memset(&s, 0, sizeof(s));
    bt_threadpool_run(pool, steal_fn, &s, 64);
    int out_of_order = 0;
    for (int t = 0; t < n; t++) {
        int last = -1;
        for (int i = 64 * t / n; i < 64 * (t + 1) / n; i++)
            if (s.by[i] == t) {
                out_of_order += s.seq[i] < last;
                last = s.seq[i];
            }
    }
    CHECK_EQ_INT(out_of_order, 0);
    /* Thread 0 held up in its first task: the others run every other task, the rest of its
     * run included (they steal it), instead of waiting for it. Without stealing the hold
     * would time out and thread 0 would run the rest of its run (64 / n tasks) itself. */
    memset(&s, 0, sizeof(s));
    s.hold = true;
    bt_threadpool_run(pool, steal_fn, &s, 64);
    int by_0 = 0;
    for (int i = 0; i < 64; i++)
        by_0 += s.by[i] == 0;
    CHECK(by_0 <= 1);
}

static void count_fn(void *p, int task, int thread) {
    (void)task;
    (void)thread;
    atomic_fetch_add((_Atomic long *)p, 1);
}

int main(void) {
    bt_error err;
    bt_error_init(&err);
    bt_threadpool *pool = NULL;
    CHECK_EQ_INT(bt_threadpool_new(0, &pool, &err), BT_ERR_INVALID_ARG);
    CHECK(pool == NULL);
    bt_threadpool_free(NULL);

    for (int n_threads = 1; n_threads <= 4; n_threads++) {
        CHECK_OK(bt_threadpool_new(n_threads, &pool, &err));
        CHECK_EQ_INT(bt_threadpool_n_threads(pool), n_threads);
        check_section(pool, 0);
        check_section(pool, 1);
        check_section(pool, 3);
        check_section(pool, MAX_TASKS);
        /* Many tiny sections back to back, as in a decode step. */
        _Atomic long count = 0;
        for (int i = 0; i < 20000; i++)
            bt_threadpool_run(pool, count_fn, &count, 7);
        CHECK_EQ_INT(atomic_load(&count), 20000L * 7);
        /* After the workers went to sleep. */
        usleep(50 * 1000);
        check_section(pool, 17);
        if (n_threads > 1)
            check_runs(pool);
        bt_threadpool_free(pool);
        pool = NULL;
    }
    return check_finish();
}
