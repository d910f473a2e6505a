/*
 * stage.h - the public interface of a pipeline stage: a contiguous slice of a llama model's
 * layers, its KV cache and the compute to run batches through it. The coordinator (and the
 * stage role of an MPI rank) reaches the worker only through this header.
 *
 * A stage owns: hyper-parameters, the weights slice (pointers into the borrowed bt_gguf),
 * a paged KV cache of fixed capacity (kv_tokens for the global layers; the local layers of a
 * sliding-window model hold only their window, sized from max_seqs and max_batch:
 * common/kv_plan.h), a thread pool and the run state. Nothing is allocated
 * after bt_stage_new.
 *
 * Sequences: ids in [0, max_seqs). A sequence's rows must arrive in order: the position of
 * a row equals the sequence's current length (plus the rows of the same sequence earlier in
 * the batch). A batch may mix sequences (continuous batching) and carry many rows of one
 * sequence (a prefill chunk). Every stage of a pipeline sees the same batches, so the KV
 * positions of all stages stay in step.
 *
 * Determinism (BT_NUMERICS_FAST): a row's numbers depend only on its token (or input
 * activations), its position and its sequence's KV, never on the other rows of the batch,
 * on whether it is a prompt or a generated token, or on how a prompt is chunked
 * (forward.h): the same bits alone, batched with anything, or recomputed after a preemption.
 *
 * Invariant: a failed bt_stage_forward changes nothing (validation and KV reservation happen
 * before any compute).
 *
 * Threads: a bt_stage is confined to one thread (it drives its own pool internally).
 */
#ifndef BT_STAGE_H
#define BT_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "numerics.h"
#include "status.h"
#include "threadpool.h"
#include "tensor_type.h"

typedef struct bt_stage_params {
    int layer_begin, layer_end; /* this stage's layers [begin, end); -1 = 0 / n_layer */
    int n_threads;              /* compute threads incl. the caller (default 1) */
    int kv_tokens;              /* KV capacity in tokens, rounded up to blocks of 16 */
    int max_batch;              /* max rows per bt_stage_forward */
    int max_seqs;               /* sequence ids are [0, max_seqs) */
    int max_seq_tokens;         /* per-sequence length limit; 0 = min(kv_tokens, n_ctx_train) */
    bt_type kv_type;            /* KV cache element type: BT_TYPE_F16 (default), Q8_0 or F32 */
    bt_numerics numerics;       /* BT_NUMERICS_FAST (default) or BT_NUMERICS_LLAMACPP */
} bt_stage_params;

bt_stage_params bt_stage_default_params(void);

/* One micro-batch: struct of arrays, all [n_rows], borrowed for the call. */
typedef struct bt_batch {
    int n_rows;
    const int32_t *seq;    /* sequence id of each row */
    const int32_t *pos;    /* position of each row in its sequence */
    const int32_t *token;  /* token id (read by the first stage only; may be NULL elsewhere) */
    const uint8_t *logits; /* nonzero = logits wanted for that row; NULL = only the last row */
} bt_batch;

typedef struct bt_stage bt_stage;

/* Whether stages of this model can run with numerics n and a KV cache of kv_type on this
 * CPU: the
 * checks bt_stage_new makes of the whole model (every tensor present with the shape and a
 * supported type that the hyper-parameters say, the numerics), from the tensor directory
 * alone (no weight is read), so a launcher refuses a broken or unsupported model before any
 * stage starts. The message names the tensor or what is not supported. */
bt_status bt_stage_check_model(const bt_gguf *g, bt_numerics n, bt_type kv_type, bt_error *err);

/* g is borrowed and must outlive the stage. On success *out is owned by the caller. */

bt_status bt_stage_new(const bt_gguf *g, const bt_stage_params *params, bt_stage **out,
                       bt_error *err);
void bt_stage_free(bt_stage *st); /* NULL is a no-op */

/*
 * Runs the batch through this stage's layers.
 *   act_in:  NULL on the first stage (tokens are embedded), else [n_rows][n_embd]
 *   act_out: [n_rows][n_embd] when not the last stage (ignored and may be NULL on the last)
 *   logits:  [n_wanted][n_vocab] on the last stage, rows in batch order of the wanted rows
 * Errors (nothing changed): BT_ERR_INVALID_ARG for a bad row (message names the row, field
 * and value) or a missing buffer, BT_ERR_LIMIT when the KV cache or a sequence is full.
 */
bt_status bt_stage_forward(bt_stage *st, const bt_batch *b, const float *act_in, float *act_out,
                           float *logits, bt_error *err);

/* Sequence operations, applied in the same order on every stage. */
void bt_stage_seq_free(bt_stage *st, int seq); /* invalid ids are ignored */
bt_status bt_stage_seq_truncate(bt_stage *st, int seq, int n_tokens, bt_error *err);
bt_status bt_stage_seq_fork(bt_stage *st, int src, int dst, bt_error *err);
int bt_stage_seq_len(const bt_stage *st, int seq); /* -1 for an invalid id */

/* Shape and accounting queries. */
int bt_stage_n_embd(const bt_stage *st);
int bt_stage_n_vocab(const bt_stage *st);
int bt_stage_n_layer_total(const bt_stage *st);
int bt_stage_layer_begin(const bt_stage *st);
int bt_stage_layer_end(const bt_stage *st);
int bt_stage_is_first(const bt_stage *st);
int bt_stage_is_last(const bt_stage *st);
int bt_stage_max_batch(const bt_stage *st);
int bt_stage_max_seqs(const bt_stage *st);
int bt_stage_kv_tokens_total(const bt_stage *st); /* capacity in tokens */
int bt_stage_kv_tokens_free(const bt_stage *st);  /* free blocks * 16 */
size_t bt_stage_kv_bytes(const bt_stage *st);     /* K and V storage of the whole cache */
/* Of it, the window pool of the local layers (kv_cache.h; 0 without one), and its blocks. */
size_t bt_stage_kv_window_bytes(const bt_stage *st);
int bt_stage_kv_window_blocks(const bt_stage *st);
size_t bt_stage_weight_bytes(const bt_stage *st); /* bytes of this stage's weight slice */
bt_type bt_stage_kv_type(const bt_stage *st);     /* BT_TYPE_F16, Q8_0 or F32 */
/* Tokens a sequence can still grow by before BT_ERR_LIMIT (ignores other sequences). */
int bt_stage_seq_tokens_left(const bt_stage *st, int seq);

/* The stage's compute threads, borrowed, for work on a pass's results (the last stage's
 * sampling): only the thread that holds the stage may run sections on it, between passes. */
bt_threadpool *bt_stage_pool(bt_stage *st);

#endif
