/*
 * threadpool.h - a fixed set of worker threads running parallel-for sections.
 *
 * Owns: n_threads - 1 pthreads created by bt_threadpool_new and joined by bt_threadpool_free.
 * The calling thread is thread 0 and takes part in every section, so a pool of 1 thread
 * creates no thread at all and runs sections inline.
 *
 * A section is cheap to start (a token step has a few hundred): workers spin briefly on an
 * atomic generation counter, then sleep on a futex so that an idle pool does not burn a core
 * that another process needs. Each thread takes a contiguous run of the tasks in order, then
 * steals from the others' runs, so a section with uneven tasks or a thread that was
 * descheduled still balances.
 *
 * Threads: bt_threadpool_run must be called by one thread at a time (the owner of the pool);
 * it returns when every task of the section has finished. Sections do not nest.
 */
#ifndef BT_THREADPOOL_H
#define BT_THREADPOOL_H

#include "status.h"

#define BT_THREADPOOL_MAX_THREADS 256

/* One task: index in [0, n_tasks), thread in [0, n_threads) (for per-thread scratch). */
typedef void (*bt_threadpool_fn)(void *ctx, int task, int thread);

typedef struct bt_threadpool bt_threadpool;

/* n_threads in [1, BT_THREADPOOL_MAX_THREADS]. *out is owned by the caller. */
bt_status bt_threadpool_new(int n_threads, bt_threadpool **out, bt_error *err);
void bt_threadpool_free(bt_threadpool *pool); /* NULL is a no-op */

int bt_threadpool_n_threads(const bt_threadpool *pool);

/* Runs fn(ctx, i, thread) for every i in [0, n_tasks) across the pool and waits for all of
 * them. n_tasks <= 0 does nothing. */
void bt_threadpool_run(bt_threadpool *pool, bt_threadpool_fn fn, void *ctx, int n_tasks);

#endif
