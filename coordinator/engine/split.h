/*
 * split.h - which layers each stage holds; the split minimises the largest stage's cost.
 *
 *   BT_SPLIT_MEMORY (default): a stage's cost is the memory it holds: its layers' weights
 *     and their KV cache for kv_tokens tokens (a local layer's: its window pool, kv_plan.h), the
 * token embedding on the first stage, the final norm and output head on the last (a tied embedding
 * counts on both). This balances what each machine must fit, the usual reason to split a model.
 *   BT_SPLIT_COMPUTE: a stage's cost is its decode time per token, modelled as one unit per
 *     weight byte streamed plus one per multiply-add: the embedding counts nothing (one row
 *     is read per token) and the head counts in full. This balances time per micro-batch,
 *     which sets pipeline throughput; it differs from the memory split when the vocabulary
 *     is a large part of the model (SmolLM2: the tied head is as much work as 10 of its 30
 *     layers).
 *   BT_SPLIT_MEASURED: the compute cost divided by the stage's speed (relative, any scale:
 *     `--stage-speed`, or each stage's Probe: probe.h), so the split balances time per token
 *     across uneven hosts and a slow host gets fewer layers.
 *
 * `--layers 0-11,12-23,24-29` overrides both.
 *
 * Memory budgets (bt_split_mem, --stage-mem or what each stage reported: mem_budget.h): a
 * stage needs weight_bytes + kv_bytes + scratch_bytes + BT_SPLIT_OVERHEAD_BYTES
 * (docs/architecture.md, "Memory model"). Every split, balanced or --layers, must fit each
 * stage's budget with at least one context of KV (n_ctx tokens): when the balanced split does
 * not, the balanced split among those that fit is taken; when none fits, the plan is refused
 * naming the stage, what it needs and what it has. A stage whose budget leaves less than the
 * requested KV gets the KV that fits (kv_tokens[s] < the request, in whole KV blocks); one
 * that leaves more keeps the request. Reads only the GGUF directory; pure; thread-safe.
 */
#ifndef BT_SPLIT_H
#define BT_SPLIT_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"
#include "hparams.h"
#include "mem_budget.h"
#include "status.h"
#include "tensor_type.h"

#define BT_MAX_STAGES 256
/* What a stage process holds besides weights, KV and the scratch bt_split_scratch_bytes
 * counts: code and data of baton and its libraries, MPI's buffers, the heap's slack. */
#define BT_SPLIT_OVERHEAD_BYTES (24ull << 20)

typedef struct bt_split {
    int n_stages, n_layer;
    int begin[BT_MAX_STAGES], end[BT_MAX_STAGES]; /* layers [begin, end) */
    uint64_t weight_bytes[BT_MAX_STAGES];         /* tensors the stage maps */
    uint64_t kv_bytes[BT_MAX_STAGES];             /* its KV cache for kv_tokens[s] (kv_plan.h) */
    /* With a bt_split_mem (else 0, and kv_tokens[s] is the request): */
    int kv_tokens[BT_MAX_STAGES];          /* KV capacity the stage is asked for */
    uint64_t scratch_bytes[BT_MAX_STAGES]; /* bt_split_scratch_bytes */
    uint64_t overhead_bytes;               /* BT_SPLIT_OVERHEAD_BYTES, per stage */
    uint64_t budget_bytes[BT_MAX_STAGES];  /* 0: no limit known */
    bt_mem_source budget_source[BT_MAX_STAGES];
    bool uneven; /* the balanced split did not fit and another was taken */
    /* Every mode: the stage's relative speed as planned with (the fastest 1; all 1 unless
     * measured) and its predicted share of a token's time through the pipeline (compute cost
     * / speed, over the sum of all stages'; sums to 1). */
    double speed[BT_MAX_STAGES];
    double time_share[BT_MAX_STAGES];
} bt_split;

/* The memory side of a plan. */
typedef struct bt_split_mem {
    uint64_t budget[BT_MAX_STAGES]; /* per stage; 0 = no limit known */
    bt_mem_source source[BT_MAX_STAGES];
    int n_ctx;               /* the least KV a stage may be given, in tokens (one context) */
    int max_batch, max_seqs; /* for the scratch estimate */
} bt_split_mem;

typedef enum bt_split_mode {
    BT_SPLIT_MEMORY = 0,
    BT_SPLIT_COMPUTE = 1,
    BT_SPLIT_MEASURED = 2
} bt_split_mode;

/* "memory" / "compute" / "measured"; BT_ERR_INVALID_ARG naming the value otherwise. */
bt_status bt_split_mode_parse(const char *name, bt_split_mode *out, bt_error *err);
/* The mode of the flags --split (NULL: not given) and --stage-speed (NULL: not given): --split's,
 * else measured when --stage-speed is given, else memory. --stage-speed with another mode is
 * refused (BT_ERR_INVALID_ARG naming both), as is a --stage-speed that is not a list of
 * positive numbers (its count is checked once the stages are known). */
bt_status bt_split_mode_of_flags(const char *split, const char *stage_speed, bt_split_mode *out,
                                 bt_error *err);

/* Largest ratio between the fastest and the slowest stage's speed a plan accepts. */
#define BT_SPLIT_MAX_SPEED_RATIO 1000.0

/* --stage-speed "S1,S2,...": exactly n_stages positive finite numbers (relative speeds, any
 * scale), the fastest at most BT_SPLIT_MAX_SPEED_RATIO times the slowest. BT_ERR_INVALID_ARG
 * naming the flag and the value otherwise. */
bt_status bt_split_speed_parse(const char *list, int n_stages, double *out, bt_error *err);

/* kv_type: the stages' KV element type (--kv-type). A stage's KV is that of
 * common/kv_plan.h: kv_tokens for its global layers, and for its local (sliding-window) layers
 * the window pool sized from mem's max_seqs and max_batch; without mem, every layer counts
 * kv_tokens (a cache without the window, the most it can be). spec: NULL for the balanced split,
 * else "a-b,c-d,..." (inclusive ranges). mem: NULL plans without budgets or scratch (as before
 * budgets existed). speed: [n_stages] relative speeds, positive (BT_SPLIT_MEASURED needs them;
 * other modes take NULL, all equal). The reported weight_bytes and kv_bytes are memory in either
 * mode. A plan that cannot fit: BT_ERR_RANGE with the message "stage rank R (layers A-B) needs N
 * MiB (weights W + KV K for T tokens + scratch S + overhead O) but has B MiB (SOURCE)". */
bt_status bt_split_plan(const bt_gguf *g, int n_stages, int kv_tokens, bt_type kv_type,
                        bt_split_mode mode, const double *speed, const char *spec,
                        const bt_split_mem *mem, bt_split *out, bt_error *err);

/* Activations, frames and (last stage) logits and sampler state of one stage process, as
 * worker/stage_loop.c, forward.c and sampler.c allocate them for max_batch rows and max_seqs
 * sequences. */
uint64_t bt_split_scratch_bytes(const bt_hparams *hp, int max_batch, int max_seqs, bool last);

#endif
