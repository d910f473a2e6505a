/*
 * term_watch.h - SIGTERM under mpirun: the coordinator's last word names the stage that died.
 *
 * When one rank of a job ends, Open MPI's mpirun ends the others: SIGCONT, about a second,
 * SIGTERM to each rank in rank order (the coordinator first), then SIGKILL. The coordinator
 * checks its local stages' pids while it runs (cluster.c), which usually names the dead stage
 * within that second; when the second is cut short (mpirun's sleep is interrupted by any
 * child's state change) SIGTERM arrives first, and this handler prints, with async-signal-safe
 * calls only, one line for each local stage whose process no longer exists, then lets SIGTERM
 * end the process as it would have.
 *
 * A stage rank must not be mistaken for the dead one because mpirun's own SIGTERM ended it a
 * moment before the coordinator looked: a stage under mpirun holds SIGTERM for
 * BT_TERM_LINGER_MS before it obeys (bt_term_watch_linger), long after the coordinator, sent
 * the signal before it, has looked.
 *
 * Process-wide state (a signal handler has no other): at most one armed watch. Arm and disarm
 * from the coordinator's main thread only.
 */
#ifndef BT_TERM_WATCH_H
#define BT_TERM_WATCH_H

#include "cluster.h"
#include "status.h"

#define BT_TERM_LINGER_MS 300

/* Coordinator: prints on SIGTERM which of c's local stages are gone, each line starting
 * "baton CMD: ". Formats every line now; the handler only writes them. */
bt_status bt_term_watch_arm(const bt_cluster *c, const char *cmd, bt_error *err);
/* Back to the default SIGTERM; the lines are freed. A no-op when not armed. */
void bt_term_watch_disarm(void);

/* For a command that takes SIGTERM on a sigwait() thread (sigwatch.h), where the handler
 * above never runs: prints the line of each local stage that is gone and ends the process by
 * sig. Returns (printing nothing) when none is gone or nothing is armed. */
void bt_term_watch_fire(int sig);

/* Stage rank: SIGTERM takes effect BT_TERM_LINGER_MS after it arrives. */
void bt_term_watch_linger(void);

#endif
