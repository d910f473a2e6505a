/*
 * sigwatch.h - SIGINT, SIGTERM and SIGUSR1 turned into calls on an ordinary thread.
 *
 * A signal handler may do almost nothing (no locks, no bt_engine_shutdown). Instead, SIGINT,
 * SIGTERM and SIGUSR1 (what Slurm sends ahead of a time limit with --signal=B:USR1@T, and
 * mpirun forwards to every rank) are blocked in every thread, and one thread sigwait()s for
 * them and calls fn(sig, ctx) there, where anything thread-safe may be called.
 *
 * Process-wide state: at most one watch. Start it in main before any thread starts (so every
 * thread inherits the mask; a thread started before could take the signal with its default
 * action); stop it from the same thread.
 */
#ifndef BT_SIGWATCH_H
#define BT_SIGWATCH_H

#include "status.h"

/* Blocks SIGINT, SIGTERM and SIGUSR1 in the calling thread (and so in every thread it starts later)
 * and starts a thread that sigwait()s for them and calls fn(sig, ctx) on that thread. */
bt_status bt_sigwatch_start(void (*fn)(int sig, void *ctx), void *ctx, bt_error *err);

/* Ends the thread (joined) and restores the calling thread's mask: a signal that arrives
 * after this has its usual effect. A no-op when not started. */
void bt_sigwatch_stop(void);

/* From fn: ends the process by sig as its default action would (a second Ctrl-C). */
void bt_sigwatch_die(int sig);

#endif
