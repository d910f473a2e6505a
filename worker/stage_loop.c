/*
 * stage_loop.c - the stage role (see stage_loop.h for the state table).
 *
 * Heartbeats while computing. The coordinator judges each stage by its own last frame
 * (cluster.c), so a stage must keep heartbeating however long a micro-batch takes and while
 * its activations wait for a slow next stage. The transport endpoint is confined to one thread
 * and MPI runs at MPI_THREAD_FUNNELED (transport.h), so heartbeats cannot come from a second
 * thread: instead the forward pass runs on a compute thread of this loop, and the loop's own
 * thread, which owns the transport, waits for it on a condition variable and sends a
 * Heartbeat every heartbeat_ms meanwhile (forward_live). The bt_stage passes between the two
 * threads under the mutex (one user at a time, as stage.h asks). A send to the next stage that
 * finds its queue full is retried in heartbeat_ms slices, heartbeating in between, with no
 * deadline of its own (send_next): if the next stage has stopped, it is silent and the
 * coordinator names it; this stage, still heartbeating, is not blamed.
 */
#include "stage_loop.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "clock.h"
#include "codec.h"
#include "hparams.h"
#include "log.h"
#include "mem_budget.h"
#include "msg.h"
#include "probe.h"
#include "proc_space.h"
#include "sampler.h"
#include "slice.h"
#include "stage.h"
#include "stage_layout.h"
#include "threadpool.h"

#define ARENA_BYTES (4u << 20)
#define MAX_BATCH_LIMIT 65536
#define MAX_SEQS_LIMIT 65536
#define HB_FRAME_BYTES (BT_FRAME_HEADER_BYTES + 128) /* a Heartbeat: five varints */
#define SEND_TIMEOUT_US (10 * 1000000LL)

enum { JOB_NONE, JOB_POSTED, JOB_DONE }; /* the compute thread's job */

bt_stage_loop_params bt_stage_loop_default_params(void) {
    return (bt_stage_loop_params){.n_threads = 1, .hello_timeout_us = 300 * 1000000LL};
}

size_t bt_stage_loop_max_frame(int max_batch, int max_seqs, int n_embd) {
    size_t rows = (size_t)max_batch, seqs = (size_t)max_seqs;
    /* varints of every row; per sequence: ops, sampling params with a full logit_bias, or a
     * result with its top logprobs */
    size_t header =
        4096 + rows * 40 + seqs * (96 + BT_MAX_LOGIT_BIAS * 12 + BT_MAX_TOP_LOGPROBS * 12);
    size_t payload = rows * (size_t)n_embd * sizeof(float); /* f32 is the largest raw codec */
    return BT_FRAME_HEADER_BYTES + header + payload + payload / 128 + 1024; /* zstd bound */
}

/* Everything the loop owns; one per stage rank. */
typedef struct bt_stage_loop {
    bt_transport *t;  /* NULL when opened by bt_stage_loop_open */
    const bt_gguf *g; /* the weights: borrowed, or own_g */
    bt_gguf *own_g;   /* owned: the model file or slice this loop opened itself */
    uint8_t model_hash[BT_MODEL_HASH_BYTES]; /* of the model g is (or is a slice of) */
    bt_weights_source source;
    uint64_t load_us, shipped_bytes;
    int rank, n_ranks, prev, next; /* next = 0 on the last stage (results go to rank 0) */
    Baton__Hello cfg;              /* copy of the scalar fields of the Hello */
    bt_stage *stage;
    bt_codec *codec;
    /* last stage only: */
    bt_sampler **samplers; /* [n_samplers]: one per compute thread (sample_task) */
    int n_samplers;
    bt_sampler_hist *hist;      /* tokens of every sequence slot, for the penalties */
    bt_sampler_params *seqs;    /* [max_seqs] */
    int32_t *n_prompt;          /* [max_seqs] prompt length from the SamplingParams */
    uint8_t *seq_has_params;    /* [max_seqs] */
    uint8_t *hist_partial;      /* [max_seqs] a TRUNCATE left tokens in the history that the
                                   sequence no longer has: penalties would be wrong */
    float *act_in, *act_out;    /* [max_batch][n_embd] */
    float *logits;              /* [n_logit_rows][n_vocab] last stage only */
    int n_logit_rows;           /* min(max_batch, min(max_seqs, max_batch) + BT_SCORE_ROWS) */
    uint8_t *want;              /* [max_batch] */
    uint8_t *need_logits;       /* [max_batch] want or a target: the forward's logit rows */
    float *res_target_lp;       /* [BT_SCORE_ROWS] */
    int32_t *res_seq, *res_tok; /* [max_seqs] */
    float *res_lp;              /* [max_seqs] */
    uint32_t *res_ntop;         /* [max_seqs] */
    int32_t *res_top_tok;       /* [max_seqs][BT_MAX_TOP_LOGPROBS] */
    float *res_top_lp;          /* [max_seqs][BT_MAX_TOP_LOGPROBS] */
    bt_sample *samples;         /* [max_seqs] the sampled rows of a batch, in row order */
    int32_t *task_row;          /* [min(max_seqs, max_batch) + BT_SCORE_ROWS] batch row of each
                                   sample_task task */
    int32_t *task_logits;       /* [same] its logit row */
    uint8_t *out;               /* outgoing frame buffer, max_frame */
    bt_arena arena;
    int n_embd, n_vocab;
    uint64_t busy_us;
    uint64_t act_bytes_sent;        /* StageBatch frames sent on to the next stage (Heartbeat) */
    uint8_t hb_out[HB_FRAME_BYTES]; /* Heartbeat frames: `out` may hold a frame being sent */
    uint32_t kv_free;               /* for heartbeats; refreshed while the stage is not computing */
    int64_t last_hb_us;             /* when the last heartbeat went out (bt_now_us) */
    bool computing;                 /* loop thread only: the compute thread holds the stage */
    /* The compute thread: one forward pass at a time, posted by forward_live. Guarded by mu:
     * job, quit, the job_* fields. cv (CLOCK_MONOTONIC) signals a posted, finished or quit
     * job. */
    pthread_t worker;
    bool sync_ok, worker_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int job;
    bool quit;
    const bt_batch *job_batch; /* borrowed for the job */
    const float *job_in;
    float *job_out, *job_logits;
    bt_status job_st;
    bt_error job_err;
} loop;

static bt_status send_msg(loop *L, int dst, bt_msg_kind kind, const ProtobufCMessage *m,
                          bt_error *err) {
    size_t len;
    bt_status st = bt_frame_finish(L->out, L->t->max_frame, kind, m, 0, 0, 0, &len, err);
    if (st != BT_OK)
        return st;
    return bt_transport_send(L->t, dst, L->out, len, SEND_TIMEOUT_US, err);
}

/* Best effort: tell the coordinator why this stage stops. Returns whether the caller need not
 * print the error itself: it reached rank 0, which reports it, or rank 0 cannot be reached
 * (BT_ERR_IO: this endpoint or rank 0 is gone), which happens when the coordinator has
 * already ended the job after a failure it reported. */
static bool report_error(loop *L, const bt_error *e) {
    Baton__Error m = BATON__ERROR__INIT;
    m.rank = (uint32_t)L->rank;
    m.status = (uint32_t)e->status;
    m.message = (char *)e->msg;
    bt_error sent;
    bt_error_init(&sent);
    bt_status st = send_msg(L, 0, BT_MSG_ERROR, &m.base, &sent);
    if (st == BT_OK)
        st = bt_transport_flush(L->t, 2 * 1000000LL, &sent);
    return st == BT_OK || st == BT_ERR_IO;
}

/* What a Hello must be before this stage looks for its weights. */
static bt_status check_hello_wire(const loop *L, const Baton__Hello *h, bt_error *err) {
    if (h->protocol_version != BT_PROTOCOL_VERSION)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: protocol version %u, this stage speaks %u", h->protocol_version,
                            BT_PROTOCOL_VERSION);
    if (h->n_stages != (uint32_t)(L->n_ranks - 1) || h->stage_index != (uint32_t)(L->rank - 1))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: stage %u of %u, but this is rank %d of %d", h->stage_index,
                            h->n_stages, L->rank, L->n_ranks);
    if (h->layer_begin >= h->layer_end || h->layer_end > (1u << 20))
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: layers [%u, %u)", h->layer_begin,
                            h->layer_end);
    if ((h->stage_index == 0) != (h->layer_begin == 0))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: layers [%u, %u) do not fit stage %u of %u", h->layer_begin,
                            h->layer_end, h->stage_index, h->n_stages);
    if (h->model_hash.len != BT_MODEL_HASH_BYTES)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: model_hash of %zu bytes, want %d",
                            h->model_hash.len, BT_MODEL_HASH_BYTES);
    if (h->codec >= BT_CODEC_KIND_COUNT || h->zstd_level > 19)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: codec %u / zstd level %u", h->codec,
                            h->zstd_level);
    if (h->max_batch < 1 || h->max_batch > MAX_BATCH_LIMIT || h->max_seqs < 1 ||
        h->max_seqs > MAX_SEQS_LIMIT || h->kv_tokens < 1 || h->kv_tokens > (1u << 26))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: max_batch %u, max_seqs %u or kv_tokens %u out of range",
                            h->max_batch, h->max_seqs, h->kv_tokens);
    if (h->heartbeat_ms < 1 || h->heartbeat_ms > 600000)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: heartbeat_ms %u", h->heartbeat_ms);
    if (h->n_eog > BT_SAMPLER_MAX_EOG)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: eog has %zu ids, at most %d", h->n_eog,
                            BT_SAMPLER_MAX_EOG);
    return BT_OK;
}

/* What a Hello must be against the weights this stage has found (L->g, L->model_hash). */
static bt_status check_hello_model(const loop *L, const Baton__Hello *h, bt_error *err) {
    bt_hparams hp;
    if (bt_hparams_load(L->g, &hp, err) != BT_OK)
        return BT_ERR_FORMAT;
    int n_layer = hp.n_layer;
    if (h->layer_end > (uint32_t)n_layer)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: layers [%u, %u) outside the model's %d",
                            h->layer_begin, h->layer_end, n_layer);
    if ((h->stage_index + 1 == h->n_stages) != (h->layer_end == (uint32_t)n_layer))
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: layers [%u, %u) do not fit stage %u of %u", h->layer_begin,
                            h->layer_end, h->stage_index, h->n_stages);
    if (memcmp(h->model_hash.data, L->model_hash, BT_MODEL_HASH_BYTES) != 0)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Hello: the coordinator's model differs from this stage's file "
                            "(model hash mismatch)");
    /* A stage rank sized its frames before it knew the model (BT_STAGE_FRAME_EMBD). */
    size_t need = bt_stage_loop_max_frame((int)h->max_batch, (int)h->max_seqs, hp.n_embd);
    if (L->t && need > L->t->max_frame)
        return bt_error_set(err, BT_ERR_LIMIT,
                            "stage rank %d: its frames hold %zu bytes; this model's activations "
                            "(n_embd %d, max_batch %u) need %zu",
                            L->rank, L->t->max_frame, hp.n_embd, h->max_batch, need);
    return BT_OK;
}

static void hash_of(const bt_gguf *g, uint8_t out[BT_MODEL_HASH_BYTES]) {
    bt_model_hash(bt_gguf_base(g), bt_gguf_data_offset(g), bt_gguf_file_size(g), out);
}

/* Receives the slice of the Hello h from rank 0 into the cache dir: a SliceRequest, then its
 * SliceChunks, each checked and written as it arrives (bt_slice_writer). */
static bt_status fetch_slice(loop *L, const Baton__Hello *h, const char *dir,
                             const bt_slice_key *key, int64_t chunk_timeout_us, bt_error *err) {
    Baton__SliceRequest r = BATON__SLICE_REQUEST__INIT;
    r.rank = (uint32_t)L->rank;
    r.model_hash = h->model_hash;
    r.layer_begin = h->layer_begin;
    r.layer_end = h->layer_end;
    int64_t t0 = bt_now_us();
    bt_status st = send_msg(L, 0, BT_MSG_SLICE_REQUEST, &r.base, err);
    if (st != BT_OK)
        return st;
    /* Its own arena: the Hello lives in L->arena until the stage is set up. */
    bt_arena arena;
    if ((st = bt_arena_init(&arena, 64u << 10, err)) != BT_OK)
        return st;
    bt_slice_writer *w = NULL;
    size_t zbytes = 0;
    uint32_t n_got = 0;
    do {
        const void *buf;
        size_t len;
        int from;
        bt_frame_view f;
        ProtobufCMessage *m;
        bt_arena_reset(&arena);
        if ((st = bt_transport_recv(L->t, 0, &buf, &len, &from, chunk_timeout_us, err)) != BT_OK) {
            bt_error_wrap(err, "rank %d waiting for chunk %u of its slice", L->rank, n_got);
            break;
        }
        if ((st = bt_frame_parse(buf, len, &f, err)) != BT_OK ||
            (st = bt_msg_unpack(&f, BT_MSG_SLICE_CHUNK, &arena, &m, err)) != BT_OK)
            break;
        const Baton__SliceChunk *c = (const Baton__SliceChunk *)m;
        if (!w &&
            (st = bt_slice_writer_new(dir, key, c->total_bytes, c->n_chunks, &w, err)) != BT_OK)
            break;
        if ((st = bt_slice_writer_put(w, &f, c, err)) != BT_OK)
            break;
        zbytes += f.payload_len;
        n_got++;
    } while (!bt_slice_writer_complete(w));
    if (st == BT_OK)
        st = bt_slice_writer_finish(w, err);
    if (st == BT_OK) {
        char path[4096];
        bt_slice_cache_path(dir, key, path, sizeof path);
        L->shipped_bytes = bt_slice_writer_total(w);
        BT_INFO("stage rank %d: layers %u-%u: received its slice, %.1f MiB (%.1f MiB "
                "compressed) in %.2f s, cached as %s",
                L->rank, h->layer_begin, h->layer_end - 1, (double)L->shipped_bytes / 1048576.0,
                (double)zbytes / 1048576.0, (double)(bt_now_us() - t0) / 1e6, path);
    }
    bt_slice_writer_free(w);
    bt_arena_deinit(&arena);
    return st;
}

/* Finds this stage's weights for the Hello h (see bt_stage_loop_run): sets L->g, its
 * model hash and where it came from. */
static bt_status resolve_weights(loop *L, const Baton__Hello *h, const bt_stage_loop_params *p,
                                 bt_error *err) {
    int64_t t0 = bt_now_us();
    const uint8_t *want = h->model_hash.data;
    bt_error e;
    bt_error_init(&e);
    L->source = BT_WEIGHTS_LOCAL;
    if (L->g) { /* the in-process stage: the coordinator's own model */
        hash_of(L->g, L->model_hash);
        return BT_OK;
    }
    if (p->model_path && access(p->model_path, F_OK) == 0) {
        bt_gguf *g = NULL;
        if (bt_gguf_open(p->model_path, &g, &e) == BT_OK) {
            hash_of(g, L->model_hash);
            if (memcmp(L->model_hash, want, BT_MODEL_HASH_BYTES) == 0) {
                L->g = L->own_g = g;
                L->load_us = (uint64_t)(bt_now_us() - t0);
                return BT_OK;
            }
            BT_WARN("stage rank %d: '%s' is another model than the coordinator's (model hash "
                    "differs); using its slice instead",
                    L->rank, p->model_path);
            bt_gguf_free(g);
        } else {
            BT_WARN("stage rank %d: cannot use '%s' (%s); using its slice instead", L->rank,
                    p->model_path, e.msg);
        }
    }
    char dir[4096];
    if (p->slice_cache && *p->slice_cache)
        snprintf(dir, sizeof dir, "%s", p->slice_cache);
    else if (bt_slice_cache_default(dir, sizeof dir, err) != BT_OK)
        return BT_ERR_NOT_FOUND;
    bt_slice_key key;
    memcpy(key.model_hash, want, BT_MODEL_HASH_BYTES);
    key.layer_begin = (int)h->layer_begin;
    key.layer_end = (int)h->layer_end;
    key.first = h->stage_index == 0;
    key.last = h->stage_index + 1 == h->n_stages;
    char path[4096];
    bt_slice_cache_path(dir, &key, path, sizeof path);
    memcpy(L->model_hash, want, BT_MODEL_HASH_BYTES);
    bt_status st = bt_slice_cache_verify(dir, &key, &e);
    if (st == BT_OK) {
        if ((st = bt_gguf_open(path, &L->own_g, &e)) == BT_OK) {
            L->g = L->own_g;
            L->source = BT_WEIGHTS_CACHE;
            L->load_us = (uint64_t)(bt_now_us() - t0);
            BT_INFO("stage rank %d: layers %u-%u from the slice cache: %s", L->rank, h->layer_begin,
                    h->layer_end - 1, path);
            return BT_OK;
        }
    }
    if (st != BT_ERR_NOT_FOUND) {
        BT_WARN("stage rank %d: %s; deleting the entry and fetching the slice again", L->rank,
                e.msg);
        bt_slice_cache_remove(dir, &key);
    }
    /* Checked before asking: the coordinator sends the whole slice once asked. */
    if ((st = bt_slice_cache_prepare(dir, err)) != BT_OK ||
        (st = fetch_slice(L, h, dir, &key, p->hello_timeout_us, err)) != BT_OK)
        return st;
    if ((st = bt_slice_cache_verify(dir, &key, err)) != BT_OK ||
        (st = bt_gguf_open(path, &L->own_g, err)) != BT_OK)
        return bt_error_wrap(err, "stage rank %d: its fetched slice", L->rank), st;
    L->g = L->own_g;
    L->source = BT_WEIGHTS_SHIPPED;
    L->load_us = (uint64_t)(bt_now_us() - t0);
    return BT_OK;
}

static uint64_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void *compute_main(void *arg) {
    loop *L = arg;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (L->job != JOB_POSTED && !L->quit)
            pthread_cond_wait(&L->cv, &L->mu);
        if (L->quit)
            break;
        pthread_mutex_unlock(&L->mu);
        bt_error e;
        bt_error_init(&e);
        bt_status st =
            bt_stage_forward(L->stage, L->job_batch, L->job_in, L->job_out, L->job_logits, &e);
        pthread_mutex_lock(&L->mu);
        L->job_st = st;
        L->job_err = e;
        L->job = JOB_DONE;
        pthread_cond_broadcast(&L->cv);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

static bt_status start_worker(loop *L, bt_error *err) {
    int rc = pthread_mutex_init(&L->mu, NULL);
    if (rc == 0 && (rc = bt_cond_init_monotonic(&L->cv)) != 0)
        pthread_mutex_destroy(&L->mu);
    if (rc != 0)
        return bt_error_set(err, BT_ERR_INTERNAL, "stage: mutex or condition variable: %s",
                            strerror(rc));
    L->sync_ok = true;
    if ((rc = pthread_create(&L->worker, NULL, compute_main, L)) != 0)
        return bt_error_set(err, BT_ERR_INTERNAL, "stage: cannot start the compute thread: %s",
                            strerror(rc));
    L->worker_started = true;
    return BT_OK;
}

static void *alloc_zero(size_t n, size_t size) {
    return calloc(n ? n : 1, size);
}

static bt_status setup(loop *L, const Baton__Hello *h, const bt_stage_loop_params *p,
                       bt_error *err) {
    L->cfg = *h;
    L->cfg.model_hash.data = NULL; /* not kept */
    L->cfg.n_eog = 0;
    L->cfg.eog = NULL;
    L->prev = L->rank - 1;
    L->next = L->rank + 1 < L->n_ranks ? L->rank + 1 : 0;
    bt_stage_params sp = bt_stage_default_params();
    sp.layer_begin = (int)h->layer_begin;
    sp.layer_end = (int)h->layer_end;
    sp.n_threads = p->n_threads;
    sp.kv_tokens = (int)h->kv_tokens;
    sp.max_batch = (int)h->max_batch;
    sp.max_seqs = (int)h->max_seqs;
    if (h->numerics > BT_NUMERICS_MAX)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: numerics %u unknown", h->numerics);
    sp.numerics = (bt_numerics)h->numerics;
    if (h->kv_type != 0 && h->kv_type != BT_TYPE_Q8_0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: kv_type %u is not 0 (f16) or 8 (q8_0)",
                            h->kv_type);
    sp.kv_type = h->kv_type == BT_TYPE_Q8_0 ? BT_TYPE_Q8_0 : BT_TYPE_F16;
    bt_status st = bt_stage_new(L->g, &sp, &L->stage, err);
    if (st != BT_OK)
        return st;
    L->n_embd = bt_stage_n_embd(L->stage);
    L->n_vocab = bt_stage_n_vocab(L->stage);
    for (size_t i = 0; i < h->n_eog; i++)
        if (h->eog[i] < 0 || h->eog[i] >= L->n_vocab)
            return bt_error_set(err, BT_ERR_PROTOCOL, "Hello: eog[%zu] %d not in [0, %d)", i,
                                h->eog[i], L->n_vocab);
    bt_codec_params cp = {.kind = (bt_codec_kind)h->codec,
                          .zstd_level = (int)h->zstd_level,
                          .n_embd = L->n_embd,
                          .max_rows = (int)h->max_batch};
    if ((st = bt_codec_new(&cp, &L->codec, err)) != BT_OK)
        return st;
    size_t B = h->max_batch, S = h->max_seqs, E = (size_t)L->n_embd;
    L->act_in = alloc_zero(B * E, sizeof(float));
    L->act_out = alloc_zero(B * E, sizeof(float));
    L->want = alloc_zero(B, 1);
    L->need_logits = alloc_zero(B, 1);
    L->res_target_lp = alloc_zero(BT_SCORE_ROWS, sizeof(float));
    L->res_seq = alloc_zero(S, sizeof(int32_t));
    L->res_tok = alloc_zero(S, sizeof(int32_t));
    L->res_lp = alloc_zero(S, sizeof(float));
    L->res_ntop = alloc_zero(S, sizeof(uint32_t));
    L->res_top_tok = alloc_zero(S * BT_MAX_TOP_LOGPROBS, sizeof(int32_t));
    L->res_top_lp = alloc_zero(S * BT_MAX_TOP_LOGPROBS, sizeof(float));
    if (!L->act_in || !L->act_out || !L->want || !L->need_logits || !L->res_target_lp ||
        !L->res_seq || !L->res_tok || !L->res_lp || !L->res_ntop || !L->res_top_tok ||
        !L->res_top_lp)
        return bt_error_set(err, BT_ERR_NOMEM, "stage: out of memory for %zu rows", B);
    if (bt_stage_is_last(L->stage)) {
        /* At most one sampled row per sequence per batch, and BT_SCORE_ROWS scored ones. */
        size_t rows = (S < B ? S : B) + BT_SCORE_ROWS;
        L->n_logit_rows = (int)(rows < B ? rows : B);
        L->logits = alloc_zero((size_t)L->n_logit_rows * (size_t)L->n_vocab, sizeof(float));
        L->seqs = alloc_zero(S, sizeof *L->seqs);
        L->seq_has_params = alloc_zero(S, 1);
        L->n_prompt = alloc_zero(S, sizeof(int32_t));
        L->hist_partial = alloc_zero(S, 1);
        L->samples = alloc_zero(S, sizeof *L->samples);
        /* a row may be both sampled and scored: a task each */
        L->task_row = alloc_zero(rows, sizeof(int32_t));
        L->task_logits = alloc_zero(rows, sizeof(int32_t));
        L->n_samplers = bt_threadpool_n_threads(bt_stage_pool(L->stage));
        L->samplers = alloc_zero((size_t)L->n_samplers, sizeof *L->samplers);
        if (!L->logits || !L->seqs || !L->seq_has_params || !L->n_prompt || !L->hist_partial ||
            !L->samples || !L->task_row || !L->task_logits || !L->samplers)
            return bt_error_set(err, BT_ERR_NOMEM, "stage: out of memory for logits");
        for (int i = 0; i < L->n_samplers; i++)
            if ((st = bt_sampler_new(L->n_vocab, h->eog, (int)h->n_eog, &L->samplers[i], err)) !=
                BT_OK)
                return st;
        if ((st = bt_sampler_hist_new((int32_t)S, L->n_vocab, &L->hist, err)) != BT_OK)
            return st;
    }
    return start_worker(L, err);
}

static void teardown(loop *L) {
    if (L->worker_started) {
        pthread_mutex_lock(&L->mu);
        L->quit = true;
        pthread_cond_broadcast(&L->cv);
        pthread_mutex_unlock(&L->mu);
        pthread_join(L->worker, NULL);
    }
    if (L->sync_ok) {
        pthread_cond_destroy(&L->cv);
        pthread_mutex_destroy(&L->mu);
    }
    bt_stage_free(L->stage);
    bt_gguf_free(L->own_g); /* after the stage, whose weights point into it */
    bt_codec_free(L->codec);
    for (int i = 0; L->samplers && i < L->n_samplers; i++)
        bt_sampler_free(L->samplers[i]);
    free(L->samplers);
    free(L->samples);
    free(L->task_row);
    free(L->task_logits);
    bt_sampler_hist_free(L->hist);
    free(L->seqs);
    free(L->seq_has_params);
    free(L->n_prompt);
    free(L->hist_partial);
    free(L->res_ntop);
    free(L->res_top_tok);
    free(L->res_top_lp);
    free(L->act_in);
    free(L->act_out);
    free(L->logits);
    free(L->want);
    free(L->need_logits);
    free(L->res_target_lp);
    free(L->res_seq);
    free(L->res_tok);
    free(L->res_lp);
    free(L->out);
    bt_arena_deinit(&L->arena);
}

static bt_status reply_hello(loop *L, bt_error *err) {
    Baton__HelloReply r = BATON__HELLO_REPLY__INIT;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    r.protocol_version = BT_PROTOCOL_VERSION;
    r.rank = (uint32_t)L->rank;
    r.model_hash.data = L->model_hash;
    r.model_hash.len = sizeof L->model_hash;
    r.layer_begin = (uint32_t)bt_stage_layer_begin(L->stage);
    r.layer_end = (uint32_t)bt_stage_layer_end(L->stage);
    r.weight_bytes = bt_stage_weight_bytes(L->stage);
    r.kv_bytes = bt_stage_kv_bytes(L->stage);
    r.kv_tokens = (uint32_t)bt_stage_kv_tokens_total(L->stage);
    r.rss_bytes = rss_bytes();
    r.hostname = host;
    char space[BT_PROC_SPACE_BYTES];
    bt_proc_space(space, sizeof space);
    r.pid = (uint32_t)getpid();
    r.proc_space = space;
    r.kv_block_tokens = BT_KV_BLOCK_TOKENS;
    r.decode_group = BT_DECODE_GROUP;
    r.score_rows = BT_SCORE_ROWS;
    r.weights_source = (uint32_t)L->source;
    r.weights_load_us = L->load_us;
    r.shipped_bytes = L->shipped_bytes;
    return send_msg(L, 0, BT_MSG_HELLO_REPLY, &r.base, err);
}

/* The stage's first message: its memory budget and host, which the coordinator plans the
 * split with (cluster.c, handshake). Read here, by this process: on another host, its host's
 * cgroup or free memory. */
static bt_status send_stage_info(loop *L, bt_error *err) {
    Baton__StageInfo si = BATON__STAGE_INFO__INIT;
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    uint64_t budget;
    bt_mem_source source;
    bt_mem_budget_read(&budget, &source);
    si.protocol_version = BT_PROTOCOL_VERSION;
    si.rank = (uint32_t)L->rank;
    si.mem_budget_bytes = budget;
    si.mem_source = (uint32_t)source;
    si.hostname = host;
    return send_msg(L, 0, BT_MSG_STAGE_INFO, &si.base, err);
}

/* A Probe (--split measured): checked field by field, run (probe.h), answered with what it
 * measured. Runs on the loop's thread before the Hello: the coordinator waits for the reply,
 * judging no liveness meanwhile, and no other stage runs a probe at the same time. */
static bt_status on_probe(loop *L, const Baton__Probe *pr, bt_error *err) {
    if (pr->n_types != BT_PROBE_N_MATRICES)
        return bt_error_set(err, BT_ERR_PROTOCOL, "Probe: %zu types, expected %d", pr->n_types,
                            BT_PROBE_N_MATRICES);
    if (pr->threads < 1 || pr->threads > BT_THREADPOOL_MAX_THREADS || pr->rows < 1 ||
        pr->rows > BT_PROBE_MAX_ROWS || pr->min_ms < 1 || pr->min_ms > BT_PROBE_MAX_MS)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Probe: threads %u (1..%d), rows %u (1..%d) or min_ms %u (1..%d) out "
                            "of range",
                            pr->threads, BT_THREADPOOL_MAX_THREADS, pr->rows, BT_PROBE_MAX_ROWS,
                            pr->min_ms, BT_PROBE_MAX_MS);
    if (pr->n_embd > BT_PROBE_MAX_DIM || pr->q_dim > BT_PROBE_MAX_DIM ||
        pr->kv_dim > BT_PROBE_MAX_DIM || pr->n_ff > BT_PROBE_MAX_DIM)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "Probe: n_embd %u, q_dim %u, kv_dim %u or n_ff %u above %d", pr->n_embd,
                            pr->q_dim, pr->kv_dim, pr->n_ff, BT_PROBE_MAX_DIM);
    bt_probe_shape shape = {.n_embd = (int)pr->n_embd,
                            .q_dim = (int)pr->q_dim,
                            .kv_dim = (int)pr->kv_dim,
                            .n_ff = (int)pr->n_ff};
    memcpy(shape.type, pr->types, sizeof shape.type);
    bt_probe_result res;
    bt_status st = bt_probe_check(&shape, err);
    if (st != BT_OK)
        return bt_error_wrap(err, "Probe"), BT_ERR_PROTOCOL;
    /* The layer must fit what this process may use (its StageInfo said so), with room for the
     * rest of the stage: half of it at most. */
    uint64_t budget, bytes = bt_probe_layer_bytes(&shape);
    bt_mem_source source;
    bt_mem_budget_read(&budget, &source);
    if (budget && bytes > budget / 2)
        return bt_error_set(err, BT_ERR_RANGE,
                            "Probe: a synthetic layer of %.1f MiB is more than half this stage's "
                            "%.1f MiB (%s)",
                            (double)bytes / (1024.0 * 1024.0), (double)budget / (1024.0 * 1024.0),
                            bt_mem_source_name(source));
    if ((st = bt_probe_run(&shape, (int)pr->threads, (int)pr->rows, (int64_t)pr->min_ms * 1000,
                           &res, err)) != BT_OK)
        return st;
    Baton__ProbeReply r = BATON__PROBE_REPLY__INIT;
    r.rank = (uint32_t)L->rank;
    r.passes = (uint32_t)res.passes;
    r.wall_us = (uint64_t)res.wall_us;
    r.cpu_us = res.cpu_us > 0 ? (uint64_t)res.cpu_us : 0;
    return send_msg(L, 0, BT_MSG_PROBE_REPLY, &r.base, err);
}

/* The sampler's parameters from the wire, checked (bt_msg_sampling_unpack: list lengths,
 * then the coordinator's own range checks against the vocabulary), and n_prompt >= 0. The
 * message names the field. */
static bt_status params_from_msg(const loop *L, const Baton__SamplingParams *sp,
                                 bt_sampler_params *p, bt_error *err) {
    if (sp->n_prompt < 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "seq %d: n_prompt %d is negative", sp->seq,
                            sp->n_prompt);
    return bt_msg_sampling_unpack(sp, L->n_vocab, p, err);
}

static bool uses_penalties(const bt_sampler_params *p) {
    return p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
           p->frequency_penalty != 0.0f;
}

/* Checks a StageBatch against the configuration and the model before anything is applied. */
static bt_status check_batch(const loop *L, const Baton__StageBatch *b, const bt_frame_view *f,
                             bt_error *err) {
    /* Shapes, ids and ops (shared with the fuzz target); then what only a stage knows. */
    bt_status st =
        bt_msg_check_stage_batch(b, (int)L->cfg.max_batch, (int)L->cfg.max_seqs, L->n_vocab, err);
    if (st != BT_OK)
        return st;
    size_t n = b->n_seq;
    for (size_t i = 0; i < b->n_new_seqs; i++) {
        const Baton__SamplingParams *sp = b->new_seqs[i];
        if (sp->seq < 0 || (uint32_t)sp->seq >= L->cfg.max_seqs)
            return bt_error_set(err, BT_ERR_PROTOCOL, "StageBatch new_seqs %zu: seq %d", i,
                                sp->seq);
        bt_sampler_params p;
        if (params_from_msg(L, sp, &p, err) != BT_OK)
            return bt_error_wrap(err, "StageBatch new_seqs %zu", i), BT_ERR_PROTOCOL;
    }
    int first = L->rank == 1;
    if (first && f->payload_len != 0)
        return bt_error_set(err, BT_ERR_PROTOCOL,
                            "StageBatch %llu: %zu payload bytes sent to the first stage",
                            (unsigned long long)b->step, f->payload_len);
    if (!first && n > 0 && f->payload_len == 0)
        return bt_error_set(err, BT_ERR_PROTOCOL, "StageBatch %llu: %zu rows without activations",
                            (unsigned long long)b->step, n);
    return BT_OK;
}

static bt_status apply_ops(loop *L, const Baton__StageBatch *b, bt_error *err) {
    for (size_t i = 0; i < b->n_ops; i++) {
        const Baton__SeqOp *op = b->ops[i];
        bt_status st = BT_OK;
        switch (op->kind) {
        case BATON__SEQ_OP__KIND__FREE:
            bt_stage_seq_free(L->stage, op->seq);
            if (L->seqs) {
                L->seq_has_params[op->seq] = 0;
                L->hist_partial[op->seq] = 0;
                bt_sampler_hist_reset(L->hist, op->seq);
            }
            break;
        case BATON__SEQ_OP__KIND__FORK:
            st = bt_stage_seq_fork(L->stage, op->seq, op->dst, err);
            if (st == BT_OK && L->seqs) {
                L->seqs[op->dst] = L->seqs[op->seq];
                L->seq_has_params[op->dst] = L->seq_has_params[op->seq];
                L->n_prompt[op->dst] = L->n_prompt[op->seq];
                L->hist_partial[op->dst] = L->hist_partial[op->seq];
                bt_sampler_hist_copy(L->hist, op->seq, op->dst);
            }
            break;
        case BATON__SEQ_OP__KIND__TRUNCATE:
            st = bt_stage_seq_truncate(L->stage, op->seq, op->n_tokens, err);
            /* The history keeps counts, not the token list: truncating to 0 empties it, any
             * other length leaves tokens it cannot take back out. */
            if (st == BT_OK && L->seqs) {
                if (op->n_tokens == 0) {
                    bt_sampler_hist_reset(L->hist, op->seq);
                    L->hist_partial[op->seq] = 0;
                } else {
                    L->hist_partial[op->seq] = 1;
                }
            }
            break;
        default:
            break;
        }
        if (st != BT_OK)
            return st;
    }
    if (L->seqs)
        for (size_t i = 0; i < b->n_new_seqs; i++) {
            const Baton__SamplingParams *sp = b->new_seqs[i];
            bt_status st = params_from_msg(L, sp, &L->seqs[sp->seq], err); /* checked already */
            if (st != BT_OK)
                return st;
            L->n_prompt[sp->seq] = sp->n_prompt;
            L->seq_has_params[sp->seq] = 1;
        }
    return BT_OK;
}

static bt_status send_heartbeat(loop *L, bt_error *err) {
    if (!L->computing && L->stage)
        L->kv_free = (uint32_t)bt_stage_kv_tokens_free(L->stage);
    Baton__Heartbeat h = BATON__HEARTBEAT__INIT;
    h.rank = (uint32_t)L->rank;
    h.busy_us = L->busy_us;
    h.kv_tokens_free = L->kv_free;
    h.act_bytes_sent = L->act_bytes_sent;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        h.peak_rss_bytes = (uint64_t)ru.ru_maxrss * 1024u;
    size_t len;
    bt_status st =
        bt_frame_finish(L->hb_out, sizeof L->hb_out, BT_MSG_HEARTBEAT, &h.base, 0, 0, 0, &len, err);
    if (st != BT_OK)
        return st;
    L->last_hb_us = bt_now_us();
    return bt_transport_send(L->t, 0, L->hb_out, len, SEND_TIMEOUT_US, err);
}

/* bt_stage_forward on the compute thread; this thread heartbeats every heartbeat_ms until it
 * is done, and meanwhile wakes for the transport when it holds a frame back (the link delay
 * of test builds: the frame sent before this pass leaves on time, not after it). A failed
 * heartbeat or transport call is returned once the pass has ended (the pass uses L's
 * buffers, so it is never abandoned). */
static bt_status forward_live(loop *L, const bt_batch *b, const float *in, float *out,
                              float *logits, bt_error *err) {
    const int64_t hb_us = (int64_t)L->cfg.heartbeat_ms * 1000;
    bt_status hb_st = BT_OK;
    bt_error hb_err;
    bt_error_init(&hb_err);
    L->kv_free = (uint32_t)bt_stage_kv_tokens_free(L->stage);
    L->computing = true;
    pthread_mutex_lock(&L->mu);
    L->job_batch = b;
    L->job_in = in;
    L->job_out = out;
    L->job_logits = logits;
    L->job = JOB_POSTED;
    pthread_cond_broadcast(&L->cv);
    int64_t next_hb = bt_now_us() + hb_us;
    int64_t due = 0; /* when the transport next needs a call (INT64_MAX: never) */
    while (L->job != JOB_DONE) {
        int64_t now = bt_now_us();
        if (now >= next_hb) {
            if (hb_st == BT_OK) {
                pthread_mutex_unlock(&L->mu);
                hb_st = send_heartbeat(L, &hb_err);
                pthread_mutex_lock(&L->mu);
            }
            next_hb = now + hb_us;
            continue;
        }
        if (now >= due) {
            due = INT64_MAX;
            if (hb_st == BT_OK) {
                pthread_mutex_unlock(&L->mu);
                hb_st = bt_transport_progress(L->t, &due, &hb_err);
                pthread_mutex_lock(&L->mu);
            }
            continue;
        }
        bt_cond_wait_until(&L->cv, &L->mu, due < next_hb ? due : next_hb);
    }
    L->job = JOB_NONE;
    bt_status st = L->job_st;
    if (st != BT_OK && err)
        *err = L->job_err;
    pthread_mutex_unlock(&L->mu);
    L->computing = false;
    if (st != BT_OK)
        return st;
    if (hb_st != BT_OK && err)
        *err = hb_err;
    return hb_st;
}

/* Sends the len-byte frame in L->out to the next stage. While the transport holds the
 * maximum of unsent frames for it (the next stage is slow or stopped), waits in heartbeat_ms
 * slices with a Heartbeat in between and no deadline of its own: the coordinator's per-stage
 * deadline names the stage that stopped, and ends the job. */
static bt_status send_next(loop *L, size_t len, bt_error *err) {
    const int64_t hb_us = (int64_t)L->cfg.heartbeat_ms * 1000;
    for (;;) {
        bt_status st = bt_transport_send(L->t, L->next, L->out, len, hb_us, err);
        if (st != BT_ERR_TIMEOUT)
            return st;
        if ((st = send_heartbeat(L, err)) != BT_OK)
            return st;
    }
}

/* log_softmax(logits)[target], as perplexity has always computed it (float max, double sum):
 * the scalar arithmetic, not the SIMD bt_log_sum_exp, so that a score does not depend on the
 * CPU's kernel family. */
static float target_logprob(const float *logits, int n_vocab, int32_t target) {
    float mx = logits[0];
    for (int v = 1; v < n_vocab; v++)
        mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0.0;
    for (int v = 0; v < n_vocab; v++)
        sum += exp((double)(logits[v] - mx));
    return (float)((double)(logits[target] - mx) - log(sum));
}

/* The last stage's work on a pass's logits, one task per row on the stage's threads (a row
 * is a pure function of its logits, parameters and history, so the thread that runs it
 * changes no bit): task k < n_want samples the k-th wanted row into samples[k], the others
 * score a target into res_target_lp. Histories are complete before the section starts. */
typedef struct {
    loop *L;
    const Baton__StageBatch *b;
    int n_want;
} sample_ctx;

static void sample_task(void *p, int task, int thread) {
    const sample_ctx *c = p;
    loop *L = c->L;
    const Baton__StageBatch *b = c->b;
    int i = L->task_row[task];
    const float *logits = L->logits + (size_t)L->task_logits[task] * (size_t)L->n_vocab;
    if (task >= c->n_want) {
        L->res_target_lp[task - c->n_want] = target_logprob(logits, L->n_vocab, b->target[i]);
        return;
    }
    int32_t s = b->seq[i];
    int32_t n_generated = b->pos[i] + 1 - L->n_prompt[s];
    bt_sampler_history h = bt_sampler_hist_view(L->hist, s, n_generated > 0 ? n_generated : 0);
    bt_sampler_sample(L->samplers[thread], &L->seqs[s], &h, b->pos[i] + 1, logits,
                      &L->samples[task]);
}

static bt_status on_batch(loop *L, const bt_frame_view *f, Baton__StageBatch *b, bt_error *err) {
    bt_status st = check_batch(L, b, f, err);
    if (st != BT_OK)
        return st;
    int64_t t0 = bt_now_us();
    int n = (int)b->n_seq;
    if (n > 0 && L->rank != 1 &&
        (st = bt_codec_decode(L->codec, (bt_codec_kind)f->codec, f->zstd, f->payload,
                              f->payload_len, n, L->act_in, err)) != BT_OK)
        return st;
    if ((st = apply_ops(L, b, err)) != BT_OK)
        return st;
    int last = bt_stage_is_last(L->stage);
    int n_want = 0;
    for (int i = 0; i < n; i++) {
        L->want[i] = (uint8_t)(b->want[i] != 0);
        L->need_logits[i] = (uint8_t)(L->want[i] || (b->n_target && b->target[i] >= 0));
        n_want += L->want[i];
        if (last && L->want[i] && !L->seq_has_params[b->seq[i]])
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch row %d: seq %d is sampled without sampling params", i,
                                b->seq[i]);
    }
    if (n > 0) {
        bt_batch batch = {
            .n_rows = n, .seq = b->seq, .pos = b->pos, .token = b->token, .logits = L->need_logits};
        st = forward_live(L, &batch, L->rank == 1 ? NULL : L->act_in, L->act_out, L->logits, err);
        if (st != BT_OK)
            return st;
    }
    uint64_t compute_us = (uint64_t)(bt_now_us() - t0);
    L->busy_us += compute_us;

    if (!last) { /* pass the same header on, with our activations */
        size_t off = bt_frame_payload_offset(&b->base), enc = 0, len;
        if (n > 0 && (st = bt_codec_encode(L->codec, L->act_out, n, L->out + off,
                                           L->t->max_frame - off, &enc, err)) != BT_OK)
            return st;
        if ((st = bt_frame_finish(L->out, L->t->max_frame, BT_MSG_STAGE_BATCH, &b->base, enc,
                                  (int)L->cfg.codec, L->cfg.zstd_level > 0 && n > 0, &len, err)) !=
            BT_OK)
            return st;
        if ((st = send_next(L, len, err)) != BT_OK)
            return st;
        L->act_bytes_sent += len;
        return send_heartbeat(L, err); /* the coordinator's sign that this stage is alive */
    }
    /* Last stage: every row's token joins its sequence's history (a row at position 0 starts
     * a new one: a recomputed sequence replays all its tokens), then the wanted rows are
     * sampled, in row order. A wanted row is its sequence's last in the batch, so its
     * history is complete. */
    for (int i = 0; i < n; i++) {
        int32_t s = b->seq[i];
        if (b->pos[i] == 0) {
            bt_sampler_hist_reset(L->hist, s);
            L->hist_partial[s] = 0;
        }
        bool generated = L->seq_has_params[s] && b->pos[i] >= L->n_prompt[s];
        bt_sampler_hist_add(L->hist, s, b->token[i], generated);
    }
    /* Tasks: the sampled rows (0..n_want-1, in row order), then the scored ones. */
    int n_scored = 0, k = 0;
    for (int i = 0, row = -1; i < n; i++) {
        if (!L->need_logits[i])
            continue;
        row++;
        if (!L->want[i])
            continue;
        int32_t s = b->seq[i];
        if (L->hist_partial[s] && uses_penalties(&L->seqs[s]))
            return bt_error_set(err, BT_ERR_PROTOCOL,
                                "StageBatch row %d: seq %d asks for penalties after a TRUNCATE "
                                "(the last stage keeps token counts, not the token list)",
                                i, s);
        L->task_row[k] = i;
        L->task_logits[k++] = row;
    }
    for (int i = 0, row = -1; i < n; i++) {
        if (!L->need_logits[i])
            continue;
        row++;
        if (b->n_target && b->target[i] >= 0) {
            L->task_row[n_want + n_scored] = i;
            L->task_logits[n_want + n_scored++] = row;
        }
    }
    sample_ctx sc = {L, b, n_want};
    bt_threadpool_run(bt_stage_pool(L->stage), sample_task, &sc, n_want + n_scored);
    size_t n_top = 0;
    for (k = 0; k < n_want; k++) {
        const bt_sample *out = &L->samples[k];
        L->res_seq[k] = b->seq[L->task_row[k]];
        L->res_tok[k] = out->token;
        L->res_lp[k] = out->logprob;
        L->res_ntop[k] = (uint32_t)out->n_top;
        memcpy(L->res_top_tok + n_top, out->top_token, sizeof *out->top_token * (size_t)out->n_top);
        memcpy(L->res_top_lp + n_top, out->top_logprob,
               sizeof *out->top_logprob * (size_t)out->n_top);
        n_top += (size_t)out->n_top;
    }
    Baton__SampleResults r = BATON__SAMPLE_RESULTS__INIT;
    r.step = b->step;
    r.n_seq = r.n_token = r.n_logprob = (size_t)n_want;
    r.seq = L->res_seq;
    r.token = L->res_tok;
    r.logprob = L->res_lp;
    if (n_top > 0) { /* n_top is sent only when some result has alternatives */
        r.n_n_top = (size_t)n_want;
        r.n_top = L->res_ntop;
        r.n_top_token = r.n_top_logprob = n_top;
        r.top_token = L->res_top_tok;
        r.top_logprob = L->res_top_lp;
    }
    r.n_target_logprob = (size_t)n_scored;
    r.target_logprob = L->res_target_lp;
    r.compute_us = (uint64_t)(bt_now_us() - t0);
    return send_msg(L, 0, BT_MSG_SAMPLE_RESULTS, &r.base, err);
}

static bt_status serve(loop *L, bt_error *err) {
    const int64_t hb_us = (int64_t)L->cfg.heartbeat_ms * 1000;
    for (;;) {
        const void *buf;
        size_t len;
        int from;
        bt_status st = bt_transport_recv(L->t, BT_RANK_ANY, &buf, &len, &from, hb_us, err);
        if (st == BT_ERR_TIMEOUT) {
            if ((st = send_heartbeat(L, err)) != BT_OK)
                return st;
            continue;
        }
        if (st != BT_OK)
            return st;
        bt_frame_view f;
        if ((st = bt_frame_parse(buf, len, &f, err)) != BT_OK)
            return bt_error_wrap(err, "from rank %d", from), st;
        bt_arena_reset(&L->arena);
        if (f.kind == BT_MSG_SHUTDOWN && from == 0)
            return BT_OK;
        if (f.kind != BT_MSG_STAGE_BATCH || from != L->prev)
            return bt_error_set(err, BT_ERR_PROTOCOL, "unexpected %s from rank %d",
                                bt_msg_kind_name(f.kind), from);
        ProtobufCMessage *m;
        if ((st = bt_msg_unpack(&f, BT_MSG_STAGE_BATCH, &L->arena, &m, err)) != BT_OK)
            return st;
        if ((st = on_batch(L, &f, (Baton__StageBatch *)m, err)) != BT_OK)
            return st;
        /* Under steady load recv never times out and no single pass lasts heartbeat_ms, so
         * the heartbeat (KV use, busy time: the coordinator's /metrics) is also due here. */
        if (bt_now_us() - L->last_hb_us >= hb_us && (st = send_heartbeat(L, err)) != BT_OK)
            return st;
    }
}

bt_status bt_stage_loop_run(bt_transport *t, const bt_gguf *g, const bt_stage_loop_params *p,
                            bool *reported, bt_error *err) {
    loop L;
    memset(&L, 0, sizeof L);
    L.t = t;
    L.g = g;
    L.rank = t->rank;
    L.n_ranks = t->size;
    bt_status st;
    bool told;
    L.out = malloc(t->max_frame);
    if (!L.out)
        return bt_error_set(err, BT_ERR_NOMEM, "stage: no memory for a %zu-byte frame",
                            t->max_frame);
    if ((st = bt_arena_init(&L.arena, ARENA_BYTES, err)) != BT_OK)
        goto done;

    if ((st = send_stage_info(&L, err)) != BT_OK)
        goto done;
    bt_frame_view f;
    ProtobufCMessage *m = NULL;
    /* The Hello, after at most one Probe (--split measured). */
    for (int probes = 0;; probes++) {
        const void *buf;
        size_t len;
        int from;
        st = bt_transport_recv(t, 0, &buf, &len, &from, p->hello_timeout_us, err);
        if (st != BT_OK) {
            bt_error_wrap(err, "rank %d waiting for the coordinator's Hello", L.rank);
            goto done;
        }
        if ((st = bt_frame_parse(buf, len, &f, err)) != BT_OK)
            goto done;
        if (f.kind != BT_MSG_PROBE)
            break;
        if (probes > 0) {
            st = bt_error_set(err, BT_ERR_PROTOCOL, "a second Probe before the Hello");
            goto done;
        }
        if ((st = bt_msg_unpack(&f, BT_MSG_PROBE, &L.arena, &m, err)) != BT_OK ||
            (st = on_probe(&L, (const Baton__Probe *)m, err)) != BT_OK)
            goto done;
        bt_arena_reset(&L.arena);
    }
    if ((st = bt_msg_unpack(&f, BT_MSG_HELLO, &L.arena, &m, err)) != BT_OK ||
        (st = check_hello_wire(&L, (Baton__Hello *)m, err)) != BT_OK ||
        (st = resolve_weights(&L, (Baton__Hello *)m, p, err)) != BT_OK ||
        (st = check_hello_model(&L, (Baton__Hello *)m, err)) != BT_OK ||
        (st = setup(&L, (Baton__Hello *)m, p, err)) != BT_OK ||
        (st = reply_hello(&L, err)) != BT_OK)
        goto done;
    bt_arena_reset(&L.arena);
    st = serve(&L, err);
done:
    told = st == BT_OK || report_error(&L, err); /* an error goes to rank 0 first */
    if (reported)
        *reported = told;
    bt_transport_flush(t, 2 * 1000000LL, NULL);
    teardown(&L);
    return st;
}

bt_status bt_stage_loop_open(const bt_gguf *g, const Baton__Hello *h, int rank, int n_ranks,
                             bt_stage_loop **out, bt_error *err) {
    *out = NULL;
    if (rank < 1 || rank >= n_ranks)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "stage loop: rank %d not in [1, %d)", rank,
                            n_ranks);
    loop *L = calloc(1, sizeof *L);
    if (!L)
        return bt_error_set(err, BT_ERR_NOMEM, "stage loop: out of memory");
    L->g = g;
    L->rank = rank;
    L->n_ranks = n_ranks;
    bt_stage_loop_params p = bt_stage_loop_default_params();
    hash_of(g, L->model_hash);
    bt_status st = check_hello_wire(L, h, err);
    if (st == BT_OK)
        st = check_hello_model(L, h, err);
    if (st == BT_OK)
        st = setup(L, h, &p, err);
    if (st != BT_OK) {
        bt_stage_loop_close(L);
        return st;
    }
    *out = L;
    return BT_OK;
}

void bt_stage_loop_close(bt_stage_loop *L) {
    if (!L)
        return;
    teardown(L);
    free(L);
}

bt_status bt_stage_loop_check_apply(bt_stage_loop *L, const bt_frame_view *f,
                                    const Baton__StageBatch *b, bt_error *err) {
    bt_status st = check_batch(L, b, f, err);
    return st != BT_OK ? st : apply_ops(L, b, err);
}

bt_stage *bt_stage_loop_stage(bt_stage_loop *L) {
    return L->stage;
}
