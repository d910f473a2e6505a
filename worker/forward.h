/*
 * forward.h - the layer math of a llama-architecture stage (model-format.md section 6):
 * embedding lookup, RMSNorm, adjacent-pair (NORM) RoPE, Q/K/V, attention over the paged KV
 * cache, output projection, SwiGLU FFN, residuals, final norm and logits.
 *
 * Owns: the run state, i.e. every scratch buffer of a pass, sized at bt_forward_new for
 * max_rows rows; bt_forward_run allocates nothing.
 * Borrows: hparams, weights, KV cache and thread pool, which must outlive it.
 *
 * Matrix products: every row, prompt or generated, takes one path: its activations are
 * quantized to q8 (bt_quantize_q8, as llama.cpp quantizes activations in every matmul) and
 * the quantized kernels (bt_matmul; float weights see the f32 activations) compute each
 * output whole, split across the pool by weight rows. The kernels are batch-invariant, so a
 * row's numbers do not depend on what it is batched with, how its prompt was chunked, or
 * whether it is a recomputation after a preemption or the first token of a fork. (A BLAS
 * sgemm was used for prompt rows before: its per-row results depend on how many rows are
 * multiplied together and on the kernel OpenBLAS picks for the CPU model, so it could not
 * keep that promise.)
 *
 * Threads: confined to the thread that owns the stage; it drives the pool.
 */
#ifndef BT_FORWARD_H
#define BT_FORWARD_H

#include <stdint.h>

#include "hparams.h"
#include "kv_cache.h"
#include "numerics.h"
#include "threadpool.h"
#include "weights.h"

typedef struct bt_forward bt_forward;

bt_status bt_forward_new(const bt_hparams *hp, const bt_weights *w, bt_kv_cache *kv,
                         bt_threadpool *pool, int max_rows, bt_forward **out, bt_error *err);
void bt_forward_free(bt_forward *fw); /* NULL is a no-op */

/* Switches the numerics (numerics.h; BT_NUMERICS_LLAMACPP: every row takes the quantized
 * path, and attention's summation order depends on whether the pass has one row or more, as
 * in llama.cpp). BT_ERR_UNSUPPORTED (nothing changed) when this CPU, a weight type,
 * the head size or the KV cache type cannot be computed as llama.cpp does; the message names
 * which. */
bt_status bt_forward_set_numerics(bt_forward *fw, bt_numerics n, bt_error *err);
/* The check bt_forward_set_numerics makes, on its own: BT_OK if a pass over these weights with
 * this KV type can use numerics n on this CPU. */
bt_status bt_forward_check_numerics(const bt_hparams *hp, const bt_weights *w, bt_type kv_type,
                                    bt_numerics n, bt_error *err);
bt_numerics bt_forward_numerics(const bt_forward *fw);

/*
 * One pass over the stage's layers. The caller has validated everything and reserved KV
 * capacity for every (seq, pos) of the batch:
 *   seq, pos:  [n_rows] (n_rows <= max_rows)
 *   tokens:    [n_rows], read when act_in is NULL (first stage) to embed
 *   act_in:    [n_rows][n_embd] input activations, or NULL on the first stage
 *   act_out:   [n_rows][n_embd] output activations (may be NULL on the last stage)
 *   out_rows:  [n_out] indices of the rows whose logits are wanted (last stage only)
 *   logits:    [n_out][n_vocab]
 * Writes K/V of every row into the cache at (seq, pos).
 */
void bt_forward_run(bt_forward *fw, int n_rows, const int32_t *seq, const int32_t *pos,
                    const int32_t *tokens, const float *act_in, float *act_out,
                    const int32_t *out_rows, int n_out, float *logits);

/* Weight rows per task of a matrix section of total_rows rows over n_threads threads: about 4
 * tasks per thread, so threads that free up early take the rest, in multiples of 16 rows. The
 * split never changes a result (each output is computed whole by one kernel call). The probe
 * (probe.h) times its sections with the same split. */
static inline int64_t bt_forward_rows_per_task(int64_t total_rows, int n_threads) {
    int64_t per = (total_rows + 4 * n_threads - 1) / (4 * n_threads);
    per = (per + 15) / 16 * 16;
    return per < 16 ? 16 : per;
}

#endif
