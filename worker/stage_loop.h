/*
 * stage_loop.h - the stage role: what ranks 1..S run (and the in-process stage thread of a
 * singleton run). Receives the Hello, maps its slice of the model, answers with what it
 * holds, then serves micro-batches until Shutdown:
 *
 *   state         event                         next
 *   WAIT_HELLO    Hello (valid, model matches)  SERVING (after HelloReply)
 *   WAIT_HELLO    timeout / bad Hello           DONE (error)
 *   SERVING       StageBatch from the previous  SERVING: ops, forward, then activations to
 *                 rank                          the next stage, or samples to rank 0
 *   SERVING       nothing for heartbeat_ms      SERVING (Heartbeat to rank 0)
 *   SERVING       Shutdown from rank 0          DONE (ok)
 *   SERVING       invalid frame or failure      DONE (Error to rank 0, then error)
 *
 * Every received message is validated against the model and the configuration (row counts,
 * token ids, sequence ids, op kinds, payload size) before it touches the stage; a failed
 * validation is a protocol error reported to rank 0 with the field named.
 *
 * Heartbeats: every heartbeat_ms while idle, while a micro-batch computes and while a send
 * to the next stage waits (stage_loop.c), so that the coordinator can judge each stage by its
 * own last frame.
 *
 * Threading: runs on the calling thread, which alone uses the transport (MPI FUNNELED); the
 * forward pass runs on one compute thread started after the Hello, with the stage's compute
 * pool under it, while the calling thread heartbeats.
 */
#ifndef BT_STAGE_LOOP_H
#define BT_STAGE_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"
#include "transport.h"

typedef struct bt_stage_loop_params {
    int n_threads;
    int64_t hello_timeout_us; /* how long to wait for the coordinator's Hello */
} bt_stage_loop_params;

bt_stage_loop_params bt_stage_loop_default_params(void);

/* Runs the stage role for rank t->rank >= 1 on the model g (borrowed). Returns BT_OK after a
 * Shutdown; otherwise the error, already sent to rank 0 when possible. *reported (may be
 * NULL) is false only when the caller should print the error itself: rank 0 was reachable
 * but did not take it. Otherwise rank 0 reports it, or has already ended the job over a
 * failure it reported (this endpoint or rank 0 gone), so that a failure shows once, not once
 * per stage. */
bt_status bt_stage_loop_run(bt_transport *t, const bt_gguf *g, const bt_stage_loop_params *p,
                            bool *reported, bt_error *err);

/* Largest frame the protocol sends for these sizes (both ends size their transports with
 * it): a StageBatch header for max_batch rows with up to max_seqs ops and sampling entries,
 * plus f32 activations for max_batch rows (every codec, with zstd, fits in that bound). */
size_t bt_stage_loop_max_frame(int max_batch, int max_seqs, int n_embd);

#endif
