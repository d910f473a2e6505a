/*
 * launch.h - who this process is, and starting its role.
 *
 *   under mpirun/srun with N > 1 ranks: rank 0 is the coordinator, ranks 1..N-1 stages,
 *                                       over the MPI transport;
 *   otherwise (a singleton):            the coordinator on the calling thread and
 *                                       `local_stages` stage threads in this process,
 *                                       over the local transport - the same code paths.
 *
 * bt_launch_start returns on every rank. On a stage rank it has already served until the
 * coordinator's Shutdown (or a failure): the caller just exits with bt_launch_finish's
 * status. On the coordinator it returns a transport connected to the stages.
 *
 * Ownership: a bt_launch owns the transport, the local hub and the stage threads; the GGUF is
 * borrowed (opened by the caller before, closed after bt_launch_finish). A stage rank may be
 * started without one (g NULL): its stage loop finds its weights after the Hello (the file at
 * model_path, its slice cache, or its slice shipped by the coordinator; stage_loop.h).
 */
#ifndef BT_LAUNCH_H
#define BT_LAUNCH_H

#include <pthread.h>
#include <stdbool.h>

#include "gguf.h"
#include "stage_loop.h"
#include "status.h"
#include "transport.h"

typedef struct bt_launch_params {
    int n_threads;                   /* compute threads per stage */
    int local_stages;                /* stage threads of a singleton run (default 1) */
    int max_batch, max_seqs, n_embd; /* frame size; n_embd 0: not known (a stage rank that has
                                        not opened the model: BT_STAGE_FRAME_EMBD) */
    const char *model_path;          /* a stage rank's --model path (borrowed; may not exist on
                                        its host) when g is NULL */
    const char *slice_cache;         /* --slice-cache (borrowed) or NULL for the default */
} bt_launch_params;

typedef struct bt_launch {
    bool mpi;
    bool is_stage;          /* this rank served as a stage and is done */
    bt_status stage_status; /* its outcome */
    bt_error stage_error;
    int rank, size;
    bt_transport *t; /* the coordinator's endpoint (rank 0) */
    bt_local_hub *hub;
    pthread_t *threads; /* [local_stages] */
    struct local_stage *stages;
    int n_threads_started;
} bt_launch;

/* Before bt_launch_start: whether this process is a stage rank of an MPI job (its launcher's
 * rank variable says a rank other than 0). Commands that take signals on a thread of their
 * own (sigwatch.h) leave stage ranks their default signal handling. */
bool bt_launch_is_stage_rank(void);

bt_status bt_launch_start(bt_launch *L, const bt_gguf *g, const bt_launch_params *p, bt_error *err);

/* Coordinator: after a failure, make sure no rank is left behind (MPI_Abort under MPI,
 * every local stage thread woken and ended). */
void bt_launch_abort(bt_launch *L, int code);

/* Joins stage threads, frees the transport, finalises MPI. Returns the exit status the
 * process should end with given the coordinator's own (stage ranks: their outcome). */
int bt_launch_finish(bt_launch *L, int coordinator_status);

#endif
