/*
 * attention.h - causal multi-head attention (GQA) of a batch of query rows over the paged KV
 * cache.
 *
 * Each (row, head) reads its sequence's keys 0..pos through the block table one block
 * (BT_KV_BLOCK_TOKENS keys) at a time with an online softmax (running max and sum,
 * rescaling the accumulator), so the memory used is independent of the context length.
 * Scores are scaled by 1/sqrt(head_dim); query head h reads kv head h / (n_head/n_head_kv).
 *
 * Threads: bt_attention_task is pure over its arguments; tasks of one call write disjoint
 * output slices and may run concurrently.
 */
#ifndef BT_ATTENTION_H
#define BT_ATTENTION_H

#include <stdint.h>

#include "kv_cache.h"

typedef struct bt_attn_args {
    const bt_kv_cache *kv;
    int layer;         /* layer index inside the KV cache (stage-local) */
    int n_rows;
    const int32_t *seq; /* [n_rows] sequence ids */
    const int32_t *pos; /* [n_rows] positions; K/V of 0..pos must be in the cache */
    const float *q;    /* [n_rows][n_head*head_dim], rope applied */
    float *out;        /* [n_rows][n_head*head_dim] */
    int n_head, n_head_kv, head_dim;
} bt_attn_args;

/* Number of independent tasks of a call: n_rows * n_head. */
static inline int bt_attention_n_tasks(const bt_attn_args *a) { return a->n_rows * a->n_head; }

/* Computes output row task / n_head, head task % n_head. */
void bt_attention_task(const bt_attn_args *a, int task);

/* The same with plain scalar loops (tests compare the two). */
void bt_attention_task_ref(const bt_attn_args *a, int task);

#endif
