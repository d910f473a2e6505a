/*
 * test_threadpool.c - every task runs exactly once per section, thread indices are in range,
 * many short sections in a row (the decode pattern) and sections after an idle sleep work.
 */
#include <stdatomic.h>
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
        bt_threadpool_free(pool);
        pool = NULL;
    }
    return check_finish();
}
