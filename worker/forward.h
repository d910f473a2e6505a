/*
 * forward.h - the layer math of a llama-architecture stage (model-format.md section 6):
 * embedding lookup, RMSNorm, adjacent-pair (NORM) RoPE, Q/K/V, attention over the paged KV
 * cache, output projection, SwiGLU FFN, residuals, final norm and logits.
 *
 * Owns: the run state, i.e. every scratch buffer of a pass, sized at bt_forward_new for
 * max_rows rows; bt_forward_run allocates nothing.
 * Borrows: hparams, weights, KV cache and thread pool, which must outlive it.
 *
 * Matrix products: the path is a property of each row, never of the batch it came in
 * (so a sequence gets the same numbers whatever it is batched with):
 *   - decode rows (generated tokens): activations quantized to q8 (bt_quantize_q8), then the
 *     quantized kernels (bt_matmul) split across the pool by weight rows;
 *   - prefill rows (prompt tokens): tiles of weight rows dequantized into per-thread scratch
 *     and multiplied with OpenBLAS sgemm (one BLAS thread, tiles spread over our pool). For
 *     quantized weights the activations are first replaced by their q8 round trip (quantize,
 *     then x' = qs * d), as llama.cpp quantizes activations in every matmul, so prefill and
 *     decode differ only in summation order. F32/F16/BF16 weights see the f32 activations.
 * Rows are reordered internally (decode rows first, then prefill rows, each in batch order)
 * so that each class is contiguous; inputs, outputs and logits keep the batch order.
 * Fallback: when OpenBLAS runs one of its generic (pre-AVX) cores, which are slower than our
 * quantized kernels, prefill rows take the decode path too (set OPENBLAS_CORETYPE to avoid
 * it); bt_forward_set_prefill_sgemm overrides the choice.
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
 * which. BT_NUMERICS_LLAMACPP turns sgemm prefill off. */
bt_status bt_forward_set_numerics(bt_forward *fw, bt_numerics n, bt_error *err);
/* The check bt_forward_set_numerics makes, on its own: BT_OK if a pass over these weights with
 * this KV type can use numerics n on this CPU. */
bt_status bt_forward_check_numerics(const bt_hparams *hp, const bt_weights *w, bt_type kv_type,
                                    bt_numerics n, bt_error *err);
bt_numerics bt_forward_numerics(const bt_forward *fw);

/* Whether prefill rows use sgemm (never with BT_NUMERICS_LLAMACPP): mode 1 always, 0 never
 * (they take the decode path), -1 automatic (the default: yes unless OpenBLAS runs a generic
 * core). */
void bt_forward_set_prefill_sgemm(bt_forward *fw, int mode);
/* Whether prefill rows currently use sgemm. */
int bt_forward_prefill_sgemm(const bt_forward *fw);

/*
 * One pass over the stage's layers. The caller has validated everything and reserved KV
 * capacity for every (seq, pos) of the batch:
 *   seq, pos:  [n_rows] (n_rows <= max_rows)
 *   prefill:   [n_rows] nonzero = the row's token is part of a prompt (prefill path), zero
 *              = a generated token (decode path); NULL = every row takes the decode path
 *   tokens:    [n_rows], read when act_in is NULL (first stage) to embed
 *   act_in:    [n_rows][n_embd] input activations, or NULL on the first stage
 *   act_out:   [n_rows][n_embd] output activations (may be NULL on the last stage)
 *   out_rows:  [n_out] indices of the rows whose logits are wanted (last stage only)
 *   logits:    [n_out][n_vocab]
 * Writes K/V of every row into the cache at (seq, pos).
 */
void bt_forward_run(bt_forward *fw, int n_rows, const int32_t *seq, const int32_t *pos,
                    const uint8_t *prefill, const int32_t *tokens, const float *act_in,
                    float *act_out, const int32_t *out_rows, int n_out, float *logits);

#endif
