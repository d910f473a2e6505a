/*
 * attention.h - causal multi-head attention (GQA) of a batch of query rows over the paged KV
 * cache (f16, q8_0 or f32 storage).
 *
 * Chunks (flash-decoding): a row's keys 0..pos are cut into chunks of BT_ATTN_CHUNK_KEYS keys
 * (the last one partial). Each chunk is reduced on its own, from an empty state, with an
 * online softmax over its KV blocks (running max m and sum l, rescaling the accumulator acc)
 * to a partial (m, l, acc[head_dim]). The partials are then folded in chunk order,
 * 0, 1, 2, ...: M = max(m, m'), l = l e^(m-M) + l' e^(m'-M), acc likewise; out = acc / l.
 * Scores are scaled by `scale` (default 1/sqrt(head_dim)); query head h reads kv head
 * h / (n_head/n_head_kv). With a window (Gemma 3's local layers) a row's keys are only the last
 * `window` positions; its chunks are those of the full row that meet them.
 * A task handles up to heads_per_task query heads of one row that share a KV head, so each
 * K/V row is loaded and converted to f32 (in registers) once for all of them.
 *
 * Two schedules of the same arithmetic: without partials each task reduces its rows' chunks
 * in chunk order, folding each into the row's running state (a task of several rows of one
 * prompt reduces chunk c for each of them before chunk c + 1: the chunk's K/V are read from
 * cache by all but the first); with partials (a few long rows, too few tasks for the threads)
 * each task reduces one chunk of kv_heads_per_task KV heads into the scratch and
 * bt_attention_merge folds them. A task of several KV heads streams whole KV blocks (all heads'
 * rows of a block are adjacent) and prefetches each next block while it computes. The
 * chunking depends only on the row's own position, so every schedule gives the same bits.
 *
 * Numerics: the result of a (row, head) depends only on its q, its sequence's K/V and the
 * CPU's SIMD level, never on the batch, on heads_per_task, kv_heads_per_task or rows_per_task,
 * on the schedule or on the thread that runs it.
 *
 * Threads: bt_attention_task is pure over its arguments; tasks of one call write disjoint
 * output (or partial) slices and may run concurrently. bt_attention_merge runs after them.
 */
#ifndef BT_ATTENTION_H
#define BT_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "kv_cache.h"

#define BT_ATTN_MAX_TASK_HEADS 8 /* upper bound of heads_per_task */
#define BT_ATTN_MAX_TASK_ROWS 16 /* upper bound of rows_per_task */
/* BT_ATTN_CHUNK_KEYS and BT_ATTN_SPLIT_MAX_ROWS: stage_layout.h (the split's scratch estimate
 * counts the partials). */

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
    /* NULL: a task per (row, query-head slice). Else a task per (row, chunk, run of
     * kv_heads_per_task KV heads), each writing its partials here
     * ([bt_attention_partials_floats] floats, borrowed for the call; n_rows <=
     * BT_ATTN_SPLIT_MAX_ROWS), and bt_attention_merge writes out. */
    float *partials;
    /* Appended for Gemma 3; zero keeps the plain causal attention. */
    float scale; /* query scale; 0: 1/sqrt(head_dim) */
    int window;  /* > 0: a row at pos sees only keys pos - window < p0 <= pos (llama.cpp's
                    is_masked_swa STANDARD); its chunks are those of the full row that meet
                    the window, the first one starting at the window's first key. K/V are
                    read through the layer's table (bt_kv_layer_table: a local layer's window
                    table, whose entries before the window are released, -1: never walked) */
    /* Without partials: rows per task, 1..BT_ATTN_MAX_TASK_ROWS (0 counts as 1). A task takes
     * consecutive rows and walks chunk by chunk, each chunk for every row of the task that
     * sees it, so a prompt's rows meet a chunk's K/V while it is in cache (prefill tiling);
     * each row still runs its own chunks in order. */
    int rows_per_task;
    /* With partials: KV heads per task, 1..n_head_kv (0 counts as 1), each with every query
     * head of its group. */
    int kv_heads_per_task;
} bt_attn_args;

/* Chunks of a row at position pos: ceil((pos + 1) / BT_ATTN_CHUNK_KEYS). */
int bt_attention_n_chunks(int pos);

/* Floats of the partials of rows whose positions are below max_keys. */
size_t bt_attention_partials_floats(int n_rows, int max_keys, int n_head, int head_dim);

/* Number of independent tasks of a call: without partials ceil(n_rows / rows_per_task) *
 * n_head_kv * ceil(group / heads_per_task) (group = n_head / n_head_kv); with partials the sum
 * over rows of the row's chunks * ceil(n_head_kv / kv_heads_per_task). */
int bt_attention_n_tasks(const bt_attn_args *a);

/* kv_heads_per_task for a call with partials on n_threads threads: every KV head (whole
 * blocks streamed) where the rows' chunks give at least 1.5 tasks per thread, else 1. */
int bt_attention_split_kv_heads(const bt_attn_args *a, int n_threads);

/* Computes one task with the best SIMD variant of this CPU for a head_dim that is a multiple
 * of 32 (AVX2 with FMA and F16C; at the AVX-512 kernel level, kernels.h, the same bits in
 * 512-bit registers), else the scalar one. */
void bt_attention_task(const bt_attn_args *a, int task);

/* The same with plain scalar loops and expf (tests compare the two). */
void bt_attention_task_ref(const bt_attn_args *a, int task);

/* With partials: folds each (row, head)'s chunks in order and writes out. No-op without. */
void bt_attention_merge(const bt_attn_args *a);

#endif
