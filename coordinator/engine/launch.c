/* launch.c - roles: coordinator and stages, over MPI or in-process (see launch.h). */
#include "launch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "term_watch.h"

#define MAX_PENDING 4

typedef struct local_stage {
    bt_transport *t;
    const bt_gguf *g;
    bt_stage_loop_params p;
    bt_local_hub *hub;
    bt_status status;
    bt_error err;
} local_stage;

static void *stage_main(void *arg) {
    local_stage *s = arg;
    bt_error_init(&s->err);
    bool reported = false;
    s->status = bt_stage_loop_run(s->t, s->g, &s->p, &reported, &s->err);
    if (s->status != BT_OK) {
        if (!reported) /* else the coordinator prints it, once for all stages */
            BT_ERROR("stage rank %d: %s", s->t->rank, s->err.msg);
        bt_local_hub_kill(s->hub, s->t->rank); /* peers see BT_ERR_IO naming this rank */
    }
    return NULL;
}

bool bt_launch_is_stage_rank(void) {
    static const char *const vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"};
    if (!bt_mpi_launched())
        return false;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v)
            return atoi(v) != 0;
    }
    return false;
}

bt_status bt_launch_start(bt_launch *L, const bt_gguf *g, const bt_launch_params *p,
                          bt_error *err) {
    memset(L, 0, sizeof *L);
    /* A stage rank without the model sizes its frames for the widest model it may get; the
     * pages of a frame buffer that no frame reaches are never touched, so cost no memory. */
    int n_embd = p->n_embd > 0 ? p->n_embd : BT_STAGE_FRAME_EMBD;
    size_t max_frame = bt_stage_loop_max_frame(p->max_batch, p->max_seqs, n_embd);
    if (p->n_embd <= 0 && max_frame > (1u << 30))
        max_frame = 1u << 30; /* the Hello says whether the model's frames fit */
    bt_stage_loop_params sp = bt_stage_loop_default_params();
    sp.n_threads = p->n_threads;
    sp.model_path = p->model_path;
    sp.slice_cache = p->slice_cache;
    bt_status st;

    if (bt_mpi_launched()) {
        if ((st = bt_mpi_init(NULL, NULL, &L->rank, &L->size, err)) != BT_OK)
            return st;
        bt_gguf_catch_truncation(); /* Open MPI installs its own SIGBUS handler; ours chains */
        L->mpi = true;
    }
    if (L->mpi && L->size > 1) {
        bt_transport *t;
        if ((st = bt_transport_mpi_new(max_frame, MAX_PENDING, &t, err)) != BT_OK)
            return st;
        if (L->rank == 0) {
            L->t = t;
            return BT_OK;
        }
        L->is_stage = true;
        /* mpirun's SIGTERM must not end this stage before the coordinator, signalled first,
         * has looked for the stage that died (term_watch.h). */
        bt_term_watch_linger();
        bt_error_init(&L->stage_error);
        bool reported = false;
        L->stage_status = bt_stage_loop_run(t, g, &sp, &reported, &L->stage_error);
        if (L->stage_status != BT_OK && !reported)
            BT_ERROR("stage rank %d: %s", L->rank, L->stage_error.msg);
        bt_transport_free(t);
        return BT_OK;
    }

    /* Singleton: coordinator here, stages on threads. */
    int n = p->local_stages > 0 ? p->local_stages : 1;
    L->rank = 0;
    L->size = n + 1;
    if ((st = bt_local_hub_new(n + 1, max_frame, MAX_PENDING, &L->hub, err)) != BT_OK)
        return st;
    L->t = bt_local_hub_endpoint(L->hub, 0);
    L->threads = calloc((size_t)n, sizeof *L->threads);
    L->stages = calloc((size_t)n, sizeof *L->stages);
    if (!L->threads || !L->stages)
        return bt_error_set(err, BT_ERR_NOMEM, "launch: out of memory");
    for (int i = 0; i < n; i++) {
        local_stage *s = &L->stages[i];
        s->t = bt_local_hub_endpoint(L->hub, i + 1);
        s->g = g;
        s->p = sp;
        s->hub = L->hub;
        if (pthread_create(&L->threads[i], NULL, stage_main, s) != 0)
            return bt_error_set(err, BT_ERR_INTERNAL, "launch: cannot start stage thread %d",
                                i + 1);
        L->n_threads_started++;
    }
    return BT_OK;
}

void bt_launch_abort(bt_launch *L, int code) {
    if (L->mpi && L->size > 1 && L->t)
        bt_transport_abort(L->t, code); /* does not return */
    for (int i = 1; L->hub && i < L->size; i++)
        bt_local_hub_kill(L->hub, i);
}

int bt_launch_finish(bt_launch *L, int coordinator_status) {
    int status = coordinator_status;
    for (int i = 0; i < L->n_threads_started; i++) {
        pthread_join(L->threads[i], NULL);
        if (status == 0 && L->stages[i].status != BT_OK)
            status = 1;
    }
    if (L->is_stage)
        status = L->stage_status == BT_OK ? 0 : 1;
    else if (L->mpi && L->t)
        bt_transport_free(L->t);
    bt_local_hub_free(L->hub);
    free(L->threads);
    free(L->stages);
    if (L->mpi)
        bt_mpi_finalize();
    memset(L, 0, sizeof *L);
    return status;
}
