/*
 * stage_layout.h - facts of the stages' memory and kernels that the coordinator plans with.
 * Defined once here for both sides: the worker builds its KV cache and kernels from them, the
 * coordinator's scheduler and split count with them, and the handshake checks that every
 * stage was built with the same values (HelloReply.kv_block_tokens, .decode_group).
 *
 * Immutable (compile-time constants and pure functions).
 */
#ifndef BT_STAGE_LAYOUT_H
#define BT_STAGE_LAYOUT_H

#include <stdint.h>

#include "tensor_type.h"

/* Token positions per KV block: the unit of the stages' KV allocation and of the
 * scheduler's accounting (worker/kv_cache.h). */
#define BT_KV_BLOCK_TOKENS 16

/* Token rows one weight pass of bt_matmul serves (worker/kernels): 6 rows cost as much as 8,
 * so the scheduler rounds decode rows up to a multiple of it. */
#define BT_DECODE_GROUP 4

/* Token rows of one prompt tile (worker/kernels, BT_PREFILL_TOK): bt_matmul runs each full
 * group of this many rows through tiles that unpack a weight block once for all of them, 4x
 * fewer unpackings than BT_DECODE_GROUP's. So the scheduler does not cut decode rows into
 * micro-batches below it once every stage can have one that big. */
#define BT_PROMPT_GROUP 16

/* Rows of one micro-batch whose logits a prompt-scoring request may ask for (StageBatch
 * .target): the last stage keeps logits for this many rows beyond its sampled ones
 * (n_vocab floats each), and the scheduler puts no more scored rows in a batch. */
#define BT_SCORE_ROWS 64

/* Keys per attention chunk (worker/attention.h, flash-decoding): a multiple of
 * BT_KV_BLOCK_TOKENS. 256 keys of SmolLM2's 64-wide heads are 32 KiB of f16 K and V per KV
 * head, enough work per task to hide the merge. */
#define BT_ATTN_CHUNK_KEYS 256
/* Rows of a forward pass whose chunks may run as separate tasks; the pass keeps the chunk
 * partials of this many rows at the longest context: BT_ATTN_SPLIT_MAX_ROWS * ceil(context /
 * BT_ATTN_CHUNK_KEYS) * n_head * (head_dim + 2) floats. */
#define BT_ATTN_SPLIT_MAX_ROWS 4

/* K and V of one token in one layer, kv_dim = n_head_kv * head_dim, in the stages' KV cache
 * of element type kv_type (--kv-type; worker/kv_cache.h): f16 2 bytes per value (the
 * default), q8_0 34 bytes per 32 values (head_dim a multiple of 32), f32 4. */
static inline uint64_t bt_kv_bytes_per_token_layer(int kv_dim, bt_type kv_type) {
    uint64_t per_value_x32 = kv_type == BT_TYPE_Q8_0 ? 34u : kv_type == BT_TYPE_F32 ? 128u : 64u;
    return 2u * (uint64_t)kv_dim * per_value_x32 / 32u;
}

#endif
