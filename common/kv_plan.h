/*
 * kv_plan.h - how many KV blocks and bytes a stage's cache holds, computed once here for the
 * stage that allocates it (worker/kv_cache.c), the coordinator that plans the split and checks
 * each stage's HelloReply (coordinator/engine/split.c, cluster.c) and `baton info`.
 *
 * A stage's cache has two pools of blocks of BT_KV_BLOCK_TOKENS positions
 * (docs/architecture.md, "KV cache"):
 *   - the global pool, n_blocks = ceil(kv_tokens / 16), holding K and V of the global layers
 *     (every layer of a model without a sliding window). The scheduler counts these blocks.
 *   - the window pool, for the local layers (bt_hparams_is_swa: Gemma 3's sliding-window
 *     layers), which keeps of each sequence only the blocks its next queries can see and is
 *     sized by bt_kv_window_blocks so that it never runs dry whatever the scheduler admits.
 *
 * Pure functions; thread-safe.
 */
#ifndef BT_KV_PLAN_H
#define BT_KV_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "hparams.h"
#include "stage_layout.h"
#include "tensor_type.h"

/*
 * Blocks of the window pool of a stage whose global pool has n_blocks, for local layers of
 * window `window` (> 0), sequences ids [0, max_seqs) and at most max_batch rows per step.
 *
 * Why it suffices: a query at p sees keys p - window < p0 <= p (attention.h), so after a step
 * that leaves a sequence at length len the window table keeps the blocks that meet
 * [len - window + 1, len) and releases those wholly before (kv_cache.h). A step that writes
 * n rows at [len, len + n) needs the blocks that meet [len - window + 1, len + n): a run of
 * window - 1 + n positions, which meets at most floor((window + 13 + n) / 16) + 1 blocks (when
 * it starts on a block's last slot). With q = (window + 13) / 16 and c = (window + 13) % 16
 * that is q + 1 + floor((c + n) / 16): q + 1 for a sequence without rows, one more once it
 * gets 16 - c rows, one more per 16 rows after. The most max_seqs sequences whose rows total
 * max_batch can hold is max_seqs (q + 1) + k + (max_batch - k (16 - c)) / 16, k = min(max_seqs,
 * max_batch / (16 - c)) sequences given their first 16 - c rows (the cheapest extra blocks).
 * Shared blocks (fork) count once in the pool and once per table here, so the bound holds with
 * forks. It is capped at n_blocks: a sequence's window entries are a subset of its global
 * entries, shared alike, so the window pool never holds more blocks than the global one.
 */
int bt_kv_window_blocks(int n_blocks, int window, int max_seqs, int max_batch);

/* Whether the window pool is switched off by the environment: BATON_KV_WINDOW=off makes every
 * layer keep every position in the global pool, the cache as it was before the window pool
 * (for comparisons: tests/mpi/test_gemma3_window.sh, docs/benchmarks.md). Read on each call;
 * every process of a run must see the same value (the handshake compares the KV bytes). */
bool bt_kv_window_off(void);

/* The KV cache of a stage of layers [layer_begin, layer_end) of hp (every layer global with
 * BATON_KV_WINDOW=off). */
typedef struct bt_kv_plan {
    int n_global_layers, n_window_layers; /* the stage's layers of each pool */
    int n_blocks;                         /* global pool: ceil(kv_tokens / 16) */
    int n_window_blocks;                  /* window pool; 0 without local layers */
    uint64_t global_bytes, window_bytes;  /* K and V of each pool */
    uint64_t full_bytes; /* K and V if every layer held n_blocks (a cache without the window) */
} bt_kv_plan;

/* Fills *out as worker/kv_cache.c allocates the stage's cache (to the byte: the handshake
 * compares). kv_tokens >= 1, max_seqs >= 1, max_batch >= 1; kv_type F16, Q8_0 or F32. */
void bt_kv_plan_stage(const bt_hparams *hp, int layer_begin, int layer_end, int kv_tokens,
                      int max_seqs, int max_batch, bt_type kv_type, bt_kv_plan *out);

static inline uint64_t bt_kv_plan_bytes(const bt_kv_plan *p) {
    return p->global_bytes + p->window_bytes;
}

#endif
