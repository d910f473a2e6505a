/*
 * forward.h - the layer math of a llama-architecture stage (model-format.md section 6):
 * embedding lookup, RMSNorm, adjacent-pair (NORM) RoPE, Q/K/V, attention over the paged KV
 * cache, output projection, SwiGLU FFN, residuals, final norm and logits.
 *
 * Owns: the run state, i.e. every scratch buffer of a pass, sized at bt_forward_new for
 * max_rows rows; bt_forward_run allocates nothing.
 * Borrows: hparams, weights, KV cache and thread pool, which must outlive it.
 *
 * Matrix products: with >= BT_FORWARD_BLAS_MIN_ROWS rows, tiles of weight rows are
 * dequantized into per-thread scratch and multiplied with OpenBLAS sgemm (one BLAS thread,
 * tiles spread over our pool); below that the activations are quantized once to q8 and the
 * quantized kernels run split across the pool by weight rows.
 *
 * Threads: confined to the thread that owns the stage; it drives the pool.
 */
#ifndef BT_FORWARD_H
#define BT_FORWARD_H

#include <stdint.h>

#include "hparams.h"
#include "kv_cache.h"
#include "threadpool.h"
#include "weights.h"

#define BT_FORWARD_BLAS_MIN_ROWS 16

typedef struct bt_forward bt_forward;

bt_status bt_forward_new(const bt_hparams *hp, const bt_weights *w, bt_kv_cache *kv,
                         bt_threadpool *pool, int max_rows, bt_forward **out, bt_error *err);
void bt_forward_free(bt_forward *fw); /* NULL is a no-op */

/* Batches of at least n rows use sgemm (tests force either path). Default
 * BT_FORWARD_BLAS_MIN_ROWS, or never when OpenBLAS runs its generic kernels (see forward.c). */
void bt_forward_set_blas_min_rows(bt_forward *fw, int n);

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

#endif
