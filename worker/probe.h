/*
 * probe.h - how fast this stage computes a layer, measured before it has any weights
 * (`--split measured`; the Probe message, docs/protocol.md).
 *
 * A probe times the matrix products of one llama layer, the bulk of a layer's decode time, with
 * the stage's own kernels (bt_matmul on q8 activations, worker/kernels/) and a thread pool of the
 * size its forward pass uses, tiled by weight rows as forward.c tiles them, on synthetic
 * weights of the layer's shape and types: q, k, v, o, gate, up, down. It needs no model file,
 * so a stage whose slice is shipped to it after the Hello can be probed too. Attention, norms
 * and rope are left out (a few percent of a decode pass at short contexts).
 *
 * The weights are a constant byte pattern: every scale it makes is a normal number, and the
 * kernels' time does not depend on the values (no data-dependent branches), only on the shape
 * and type. One layer is small next to a stage's slice, so a probe may run from caches that the
 * real pass streams past; the coordinator compares stages with one another, never with an
 * absolute time, so that cancels out wherever the stages have alike caches.
 *
 * The passes repeat until min_us of wall-clock time has passed, long enough to see a CFS CPU
 * quota (a quota of half a core lets the process run 50 ms of every 100 ms period).
 *
 * Pure apart from its own allocations and threads; any thread may call it.
 */
#ifndef BT_PROBE_H
#define BT_PROBE_H

#include <stdint.h>

#include "status.h"
#include "tensor_type.h"

enum { BT_PROBE_Q, BT_PROBE_K, BT_PROBE_V, BT_PROBE_O, BT_PROBE_GATE, BT_PROBE_UP, BT_PROBE_DOWN };
#define BT_PROBE_N_MATRICES 7
#define BT_PROBE_MAX_DIM (1 << 18) /* any dimension; Llama-3-405B's widest is 53248 */
#define BT_PROBE_MAX_ROWS 64
#define BT_PROBE_MAX_MS 60000
#define BT_PROBE_MAX_BYTES (8ull << 30) /* one layer; Llama-3-405B's in Q4_0 is about 2 GiB */

/* One layer's matrices: n_rows outputs from n_cols inputs each, as bt_matrix. */
typedef struct bt_probe_shape {
    int n_embd, q_dim, kv_dim, n_ff;
    uint32_t type[BT_PROBE_N_MATRICES]; /* bt_type, in the enum's order */
} bt_probe_shape;

typedef struct bt_probe_result {
    int passes;      /* layer passes of `rows` rows done, >= 1 */
    int64_t wall_us; /* their wall-clock time (CLOCK_MONOTONIC), >= min_us */
    int64_t cpu_us;  /* CPU time of the whole process meanwhile (CLOCK_PROCESS_CPUTIME_ID) */
} bt_probe_result;

/* The shape is one a stage can time: every dimension a multiple of 32 in [32,
 * BT_PROBE_MAX_DIM] and of the block of each type it feeds, every type one the kernels compute,
 * the layer at most BT_PROBE_MAX_BYTES. BT_ERR_INVALID_ARG naming the field and value
 * otherwise. */
bt_status bt_probe_check(const bt_probe_shape *s, bt_error *err);
/* Bytes of the synthetic layer of a checked shape (its weights). */
uint64_t bt_probe_layer_bytes(const bt_probe_shape *s);

/* Times passes of `rows` token rows (1..BT_PROBE_MAX_ROWS) over the layer with n_threads
 * threads until min_us (1 ms..BT_PROBE_MAX_MS) have passed, after one untimed pass. Allocates
 * the layer (BT_ERR_NOMEM naming its bytes) and frees it before returning. */
bt_status bt_probe_run(const bt_probe_shape *s, int n_threads, int rows, int64_t min_us,
                       bt_probe_result *out, bt_error *err);

#endif
