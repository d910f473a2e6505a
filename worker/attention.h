/*
 * attention.h - causal multi-head attention (GQA) of a batch of query rows over the paged KV
 * cache (f16 or f32 storage).
 *
 * Each (row, query head) reads its sequence's keys 0..pos through the block table one block
 * (BT_KV_BLOCK_TOKENS keys) at a time with an online softmax (running max and sum,
 * rescaling the accumulator), so the memory used is independent of the context length.
 * Scores are scaled by 1/sqrt(head_dim); query head h reads kv head h / (n_head/n_head_kv).
 * A task handles up to heads_per_task query heads of one row that share a KV head, so each
 * K/V tile is converted to f32 once for all of them.
 *
 * Numerics: the result of a (row, head) depends only on its q, its sequence's K/V and the
 * CPU's SIMD level, never on the batch, on heads_per_task or on the thread that runs it.
 *
 * Threads: bt_attention_task is pure over its arguments; tasks of one call write disjoint
 * output slices and may run concurrently.
 */
#ifndef BT_ATTENTION_H
#define BT_ATTENTION_H

#include <stdint.h>

#include "kv_cache.h"

#define BT_ATTN_MAX_TASK_HEADS 8 /* upper bound of heads_per_task */

typedef struct bt_attn_args {
    const bt_kv_cache *kv;
    int layer; /* layer index inside the KV cache (stage-local) */
    int n_rows;
    const int32_t *seq; /* [n_rows] sequence ids */
    const int32_t *pos; /* [n_rows] positions; K/V of 0..pos must be in the cache */
    const float *q;     /* [n_rows][n_head*head_dim], rope applied */
    float *out;         /* [n_rows][n_head*head_dim] */
    int n_head, n_head_kv, head_dim;
    int heads_per_task; /* 1..BT_ATTN_MAX_TASK_HEADS query heads of one KV group per task */
} bt_attn_args;

/* Number of independent tasks of a call: n_rows * n_head_kv * ceil(group / heads_per_task),
 * group = n_head / n_head_kv. */
int bt_attention_n_tasks(const bt_attn_args *a);

/* Computes one task (row, kv head, slice of its query heads) with the best SIMD variant of
 * this CPU (AVX-512, AVX2 or scalar, chosen once from CPUID). */
void bt_attention_task(const bt_attn_args *a, int task);

/* The same with plain scalar loops and expf (tests compare the two). */
void bt_attention_task_ref(const bt_attn_args *a, int task);

#endif
