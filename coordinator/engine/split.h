/*
 * split.h - which layers each stage holds; the split minimises the largest stage's cost.
 *
 *   BT_SPLIT_MEMORY (default): a stage's cost is the memory it holds: its layers' weights
 *     and their KV cache for kv_tokens tokens, the token embedding on the first stage, the
 *     final norm and output head on the last (a tied embedding counts on both). This balances
 *     what each machine must fit, the usual reason to split a model.
 *   BT_SPLIT_COMPUTE: a stage's cost is its decode time per token, modelled as one unit per
 *     weight byte streamed plus one per multiply-add: the embedding counts nothing (one row
 *     is read per token) and the head counts in full. This balances time per micro-batch,
 *     which sets pipeline throughput; it differs from the memory split when the vocabulary
 *     is a large part of the model (SmolLM2: the tied head is as much work as 10 of its 30
 *     layers).
 *
 * `--layers 0-11,12-23,24-29` overrides both. Reads only the GGUF directory; pure;
 * thread-safe.
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

typedef enum bt_split_mode { BT_SPLIT_MEMORY = 0, BT_SPLIT_COMPUTE = 1 } bt_split_mode;

/* "memory" / "compute"; BT_ERR_INVALID_ARG naming the value otherwise. */
bt_status bt_split_mode_parse(const char *name, bt_split_mode *out, bt_error *err);

/* kv_bytes_per_token_layer: K and V of one token in one layer (2 * kv_dim * element size).
 * spec: NULL for the balanced split, else "a-b,c-d,..." (inclusive ranges). The reported
 * weight_bytes and kv_bytes are memory in either mode. */
bt_status bt_split_plan(const bt_gguf *g, int n_stages, int kv_tokens,
                        uint64_t kv_bytes_per_token_layer, bt_split_mode mode, const char *spec,
                        bt_split *out, bt_error *err);

#endif
