/*
 * stage_loop.h - the stage role: what ranks 1..S run (and the in-process stage thread of a
 * singleton run). Sends its StageInfo, times a Probe if one comes (--split measured, probe.h),
 * receives the Hello, maps its slice of the model, answers with what it holds, then serves
 * micro-batches until Shutdown:
 *
 *   state         event                         next
 *   (start)       -                             WAIT_HELLO (after StageInfo)
 *   WAIT_HELLO    Probe, the first (valid)      WAIT_HELLO (after timing it: ProbeReply)
 *   WAIT_HELLO    a second Probe                DONE (error)
 *   WAIT_HELLO    Hello (valid)                 LOADING
 *   WAIT_HELLO    timeout / bad Hello           DONE (error)
 *   LOADING       model file or cache entry     SERVING (after HelloReply)
 *                 found with the Hello's hash
 *   LOADING       neither                       FETCHING (SliceRequest to rank 0)
 *   FETCHING      SliceChunk (checked, written) FETCHING; after the last: SERVING (after
 *                                               HelloReply)
 *   FETCHING      timeout / bad chunk           DONE (error)
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

#include "frame.h"
#include "gguf.h"
#include "msg.h"
#include "stage.h"
#include "status.h"
#include "transport.h"

typedef struct bt_stage_loop_params {
    int n_threads;
    int64_t hello_timeout_us; /* how long to wait for the coordinator's Hello (and, when the
                                 slice is fetched, for each of its chunks) */
    const char *model_path;   /* where this host may have the model file (borrowed; need not
                                 exist); used when bt_stage_loop_run gets no model */
    const char *slice_cache;  /* slice cache directory (borrowed), or NULL for the default
                                 (bt_slice_cache_default, worker/slice.h) */
} bt_stage_loop_params;

bt_stage_loop_params bt_stage_loop_default_params(void);

/* Where a stage's weights came from (HelloReply.weights_source). */
typedef enum bt_weights_source {
    BT_WEIGHTS_LOCAL = 0,   /* the model file at its path (or the in-process stage's model) */
    BT_WEIGHTS_CACHE = 1,   /* a verified entry of the slice cache */
    BT_WEIGHTS_SHIPPED = 2, /* fetched from the coordinator now, then cached */
} bt_weights_source;

/* Runs the stage role for rank t->rank >= 1. Its weights: g when given (borrowed: the
 * in-process stage of a singleton run); else, once the Hello says which model and layers,
 * (1) the file at p->model_path if it exists and has the Hello's model hash, else (2) the
 * slice cache's entry for (model hash, layers, role) if it verifies (a corrupt or partial
 * entry is logged, naming it and why, deleted, and fetched again), else (3) its slice fetched
 * from rank 0 (SliceRequest, SliceChunks), written to the cache, verified and mapped.
 * Returns BT_OK after a Shutdown; otherwise the error, already sent to rank 0 when possible.
 * *reported (may be NULL) is false only when the caller should print the error itself: rank
 * 0 was reachable but did not take it. Otherwise rank 0 reports it, or has already ended the
 * job over a failure it reported (this endpoint or rank 0 gone), so that a failure shows
 * once, not once per stage. */
bt_status bt_stage_loop_run(bt_transport *t, const bt_gguf *g, const bt_stage_loop_params *p,
                            bool *reported, bt_error *err);

/* The model width a stage rank sizes its frames for before it knows its model (its
 * transport exists before the Hello): the widest of the shapes baton plans for (Llama-70B).
 * A model wider than the frames is refused after the Hello, naming both sizes. */
#define BT_STAGE_FRAME_EMBD 8192

/* Largest frame the protocol sends for these sizes (both ends size their transports with
 * it): a StageBatch header for max_batch rows with up to max_seqs ops and sampling entries,
 * plus f32 activations for max_batch rows (every codec, with zstd, fits in that bound). */
size_t bt_stage_loop_max_frame(int max_batch, int max_seqs, int n_embd);

/*
 * The stage role without a transport, for tests/fuzz/fuzz_stage_batch.c: the code
 * bt_stage_loop_run runs on a Hello and on each StageBatch, so that the fuzz target drives
 * the stage's own validation against the model and its KV state, not a copy of it.
 *
 * bt_stage_loop_open: checks the Hello as rank `rank` of `n_ranks` (coordinator included)
 * would and sets the stage up (the model g is borrowed and outlives the loop); on success
 * *out is owned by the caller and freed by bt_stage_loop_close (NULL is a no-op).
 * bt_stage_loop_check_apply: a received StageBatch b with its frame f (both borrowed for the
 * call): the stage's checks (bt_msg_check_stage_batch, sampling parameters, payload presence),
 * then its FREE/FORK/TRUNCATE ops and new sampling parameters, in order. What a failed op
 * leaves is what the stage would be left with; the stage role then stops (DONE).
 * bt_stage_loop_stage: the stage the loop owns (borrowed until bt_stage_loop_close), to run the
 * batch's rows as the loop does next.
 * Confined to one thread.
 */
typedef struct bt_stage_loop bt_stage_loop;
bt_status bt_stage_loop_open(const bt_gguf *g, const Baton__Hello *h, int rank, int n_ranks,
                             bt_stage_loop **out, bt_error *err);
void bt_stage_loop_close(bt_stage_loop *L);
bt_status bt_stage_loop_check_apply(bt_stage_loop *L, const bt_frame_view *f,
                                    const Baton__StageBatch *b, bt_error *err);
bt_stage *bt_stage_loop_stage(bt_stage_loop *L);

#endif
