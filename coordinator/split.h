/*
 * split.h - which layers each stage holds. Balanced by bytes: each stage's cost is its
 * layers' weights plus their KV cache for kv_tokens tokens, plus the token embedding on the
 * first stage and the final norm and output head on the last (the tied embedding counts on
 * both); the split minimises the largest stage's cost. `--layers 0-11,12-23,24-29`
 * overrides it. Reads only the GGUF directory; pure; thread-safe.
 */
#ifndef BT_SPLIT_H
#define BT_SPLIT_H

#include <stdint.h>

#include "gguf.h"
#include "status.h"

#define BT_MAX_STAGES 256

typedef struct bt_split {
    int n_stages, n_layer;
    int begin[BT_MAX_STAGES], end[BT_MAX_STAGES]; /* layers [begin, end) */
    uint64_t weight_bytes[BT_MAX_STAGES];         /* tensors the stage maps */
    uint64_t kv_bytes[BT_MAX_STAGES];             /* its KV cache for kv_tokens */
} bt_split;

/* kv_bytes_per_token_layer: K and V of one token in one layer (2 * kv_dim * element size).
 * spec: NULL for the balanced split, else "a-b,c-d,..." (inclusive ranges). */
bt_status bt_split_plan(const bt_gguf *g, int n_stages, int kv_tokens,
                        uint64_t kv_bytes_per_token_layer, const char *spec, bt_split *out,
                        bt_error *err);

#endif
