/*
 * kv_cache.h - the paged KV cache of one stage: fixed pools of blocks of BT_KV_BLOCK_TOKENS
 * token positions and, per pool, one block table per sequence. K and V are stored as IEEE half
 * (BT_TYPE_F16, rounded to nearest even, as llama.cpp's default cache; half the memory), as
 * q8_0 blocks (BT_TYPE_Q8_0: each head's row of head_dim values is head_dim/32 blocks of an f16
 * scale and 32 int8, 34 bytes per 32 values, quantized on store as llama.cpp's
 * quantize_row_q8_0) or as f32.
 *
 * Two pools (common/kv_plan.h):
 *   - global: n_blocks blocks, each holding K and V of every global layer of the stage (every
 *     layer without a window). Its free count is what the scheduler accounts.
 *   - window (only with window > 0 and some window_layers): the local layers (Gemma 3's
 *     sliding-window layers) in their own blocks, bt_kv_window_blocks of them. A sequence's
 *     window table is indexed by the same logical block number (p / 16) as its global table,
 *     but the blocks wholly before its next query's first key, len - window + 1, are released
 *     (entry -1) when the length is committed. The pool is sized so that it cannot run dry
 *     for max_seqs sequences and max_step_rows rows per step; a stage asserts it.
 *
 * Owns: the K/V storage, the pools (free lists, reference counts) and the per-sequence block
 * tables, all allocated at bt_kv_cache_new; nothing is allocated afterwards.
 *
 * Invariants (per pool):
 *   - A block is either on the free list (ref 0) or referenced by ref >= 1 block-table
 *     entries. n_free + the number of used blocks == n_blocks.
 *   - Sequence s owns table[s][0 .. n_blocks(s)) and ceil(len(s)/16) <= n_blocks(s).
 *     Position p of s lives in block table[s][p/16], slot p%16.
 *   - Window table: entries [0, lo(s)) are -1 and lo(s) <= max(0, len - window + 1) / 16, so
 *     every key a query of the next step can see is present; entries [lo, n_blocks) are
 *     blocks. Attention walks only keys from pos - window + 1 (attention.h), never a -1.
 *   - A block shared by several sequences (ref > 1, after bt_kv_seq_fork) is never written:
 *     bt_kv_seq_reserve copies it first (copy-on-write), in each pool.
 * States of a sequence:  empty --reserve--> capacity >= len --(caller writes K/V rows,
 *   then set_len: the window slides)--> len grows;  --truncate(n)--> len n (refused when the
 *   window of n needs released positions, unless n is 0);  --free--> empty.
 *   fork(src, dst): dst (empty) shares src's blocks of both pools.
 *
 * Threads: confined to the stage's thread, except that during a forward pass the pool
 * threads write the rows the stage reserved and read K/V (different rows, no table change).
 */
#ifndef BT_KV_CACHE_H
#define BT_KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "stage_layout.h" /* BT_KV_BLOCK_TOKENS */
#include "status.h"
#include "tensor_type.h"

typedef struct bt_kv_params {
    int n_layer; /* layers of this stage */
    int n_head_kv;
    int head_dim;
    int n_blocks;       /* pool size */
    int max_seqs;       /* sequence ids are [0, max_seqs) */
    int max_seq_tokens; /* per-sequence length limit */
    bt_type type;       /* element type of K and V: BT_TYPE_F16, BT_TYPE_Q8_0 or BT_TYPE_F32 */
    /* Sliding window (zero: none, every layer in the global pool). */
    int window;                   /* keys a local layer's query sees (hparams sliding_window) */
    const uint8_t *window_layers; /* [n_layer] nonzero: a local layer (window pool); NULL:
                                     none. Borrowed for bt_kv_cache_new only. */
    int max_step_rows; /* rows one step writes over all sequences (the stage's max_batch):
                          sizes the window pool; >= 1 when there is one */
} bt_kv_params;

typedef struct bt_kv_cache bt_kv_cache;

/* *out is owned by the caller (bt_kv_cache_free). BT_ERR_NOMEM if the pool does not fit,
 * BT_ERR_INVALID_ARG for a count < 1 or a type other than F16/Q8_0/F32, BT_ERR_UNSUPPORTED
 * for Q8_0 with a head_dim that is not a multiple of 32. */
bt_status bt_kv_cache_new(const bt_kv_params *params, bt_kv_cache **out, bt_error *err);
void bt_kv_cache_free(bt_kv_cache *kv); /* NULL is a no-op */

/* The params as given, but window_layers NULL and window 0 when no layer is local. */
const bt_kv_params *bt_kv_cache_params(const bt_kv_cache *kv);
int bt_kv_n_blocks_free(const bt_kv_cache *kv);   /* global pool */
int bt_kv_n_window_blocks(const bt_kv_cache *kv); /* window pool size; 0 without one */
int bt_kv_window_blocks_free(const bt_kv_cache *kv);
int bt_kv_n_window_layers(const bt_kv_cache *kv); /* layers in the window pool */
size_t bt_kv_cache_bytes(const bt_kv_cache *kv);  /* K and V storage of both pools */
size_t bt_kv_global_bytes(const bt_kv_cache *kv); /* of the global pool */
size_t bt_kv_window_bytes(const bt_kv_cache *kv); /* of the window pool */

/* Sequence queries; seq must be in [0, max_seqs) (asserted: callers validate ids). */
int bt_kv_seq_len(const bt_kv_cache *kv, int seq);
int bt_kv_seq_n_blocks(const bt_kv_cache *kv, int seq);
const int32_t *bt_kv_seq_table(const bt_kv_cache *kv, int seq); /* global table */
/* Window table (there must be a window pool): -1 below bt_kv_seq_window_lo. */
const int32_t *bt_kv_seq_window_table(const bt_kv_cache *kv, int seq);
int bt_kv_seq_window_lo(const bt_kv_cache *kv, int seq);
/* The table of the pool that holds `layer` (stage-local): what readers and writers of that
 * layer's K/V index blocks with. */
const int32_t *bt_kv_layer_table(const bt_kv_cache *kv, int layer, int seq);
int bt_kv_layer_is_window(const bt_kv_cache *kv, int layer);
int bt_kv_block_refs(const bt_kv_cache *kv, int block);        /* global pool */
int bt_kv_window_block_refs(const bt_kv_cache *kv, int block); /* window pool */

/* Blocks bt_kv_seq_reserve(kv, seq, n_tokens) would take from the pool (new blocks plus a
 * copy of a shared block that would be written). */
int bt_kv_seq_blocks_needed(const bt_kv_cache *kv, int seq, int n_tokens);
/* Blocks that reserving n_tokens[i] for each seq[i] in turn takes (bt_kv_seq_reserve in that
 * order; the seqs distinct): a shared block written by several of them is copied by all but
 * the last holder, so their sum of bt_kv_seq_blocks_needed overcounts. */
int bt_kv_batch_blocks_needed(const bt_kv_cache *kv, int n, const int32_t *seq,
                              const int32_t *n_tokens);
/* The same for the window pool (0 without one). */
int bt_kv_batch_window_blocks_needed(const bt_kv_cache *kv, int n, const int32_t *seq,
                                     const int32_t *n_tokens);
/* Makes room for positions [len, n_tokens) of seq in both pools: BT_ERR_LIMIT (nothing
 * changed) when a pool or the per-sequence limit is exhausted (the window pool only when used
 * beyond its sizing: more sequences or rows per step than it was made for). */
bt_status bt_kv_seq_reserve(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err);
/* Commits the length after the rows up to n_tokens were written (n_tokens <= capacity, and
 * not below the committed length when there is a window pool) and releases the window blocks
 * wholly before n_tokens - window + 1. */
void bt_kv_seq_set_len(bt_kv_cache *kv, int seq, int n_tokens);
/* Keeps the first n_tokens positions (n_tokens <= len) and releases the blocks past them.
 * BT_ERR_RANGE (nothing changed) for n_tokens > len, and with a window pool for 0 < n_tokens
 * whose window (n_tokens - window + 1 on) reaches released positions; 0 always works. */
bt_status bt_kv_seq_truncate(bt_kv_cache *kv, int seq, int n_tokens, bt_error *err);
void bt_kv_seq_free(bt_kv_cache *kv, int seq);
/* dst (must be empty) shares all of src's blocks holding committed positions, in both pools
 * (the window's released entries stay released). */
bt_status bt_kv_seq_fork(bt_kv_cache *kv, int src, int dst, bt_error *err);

/* Bytes of one head's K (or V) row of one position: head_dim * 2 (F16), head_dim / 32 * 34
 * (Q8_0), head_dim * 4 (F32). */
size_t bt_kv_row_bytes(bt_type type, int head_dim);

/* K and V of one block of one layer, block a block id of the layer's pool (index with
 * bt_kv_layer_table; a -1 entry is asserted against): [n_head_kv][BT_KV_BLOCK_TOKENS] rows of
 * bt_kv_row_bytes each, of the cache's type (bt_half bits for F16, bt_block_q8_0 for Q8_0,
 * float for F32). Readers convert with bt_kv_f16_to_f32 or bt_dequant_row (or use the floats
 * directly). */
void *bt_kv_block_k(const bt_kv_cache *kv, int layer, int block);
void *bt_kv_block_v(const bt_kv_cache *kv, int layer, int block);

/* Writes K and V of one position: k, v are [n_head_kv][head_dim] f32, stored converted to
 * the cache type into (layer, block, slot). Pure over its slot: concurrent calls for
 * different slots are safe. */
void bt_kv_store(bt_kv_cache *kv, int layer, int block, int slot, const float *k, const float *v);

/* Conversions used by the cache (F16C when the CPU has it, else the scalar
 * bt_f32_to_half / bt_half_to_f32; both round to nearest even, so the bits are the same). */
void bt_kv_f32_to_f16(const float *src, bt_half *dst, int n);
void bt_kv_f16_to_f32(const bt_half *src, float *dst, int n);

#endif
