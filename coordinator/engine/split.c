/* split.c - layer split balanced by bytes (see split.h). */
#include "split.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hparams.h"

#define MAX_LAYERS 4096

/* Cost of the tensors named blk.<l>.* and of the embedding and head: their bytes, or with
 * `compute` a model of decode time fitted on our machines, one unit per byte streamed plus
 * one per multiply-add (SmolLM2's Q8_0 head then weighs as much as 10 of its Q4_1 layers, as
 * measured, where bytes alone say 13 and multiply-adds alone 8). */
static bt_status measure(const bt_gguf *g, int n_layer, bool compute, uint64_t *layer_bytes,
                         uint64_t *embd, uint64_t *head, bt_error *err) {
    memset(layer_bytes, 0, sizeof *layer_bytes * (size_t)n_layer);
    *embd = *head = 0;
    bool tied = bt_gguf_find_tensor(g, "output.weight") == NULL;
    for (size_t i = 0; i < bt_gguf_n_tensors(g); i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        uint64_t cost = t->n_bytes;
        if (compute)
            cost +=
                (uint64_t)t->ne[0] * (uint64_t)t->ne[1] * (uint64_t)t->ne[2] * (uint64_t)t->ne[3];
        int l;
        char rest[64];
        if (sscanf(t->name, "blk.%d.%63s", &l, rest) == 2) {
            if (l < 0 || l >= n_layer)
                return bt_error_set(err, BT_ERR_FORMAT, "tensor '%s': layer %d outside [0, %d)",
                                    t->name, l, n_layer);
            layer_bytes[l] += cost;
        } else if (strcmp(t->name, "token_embd.weight") == 0) {
            *embd += cost;
            if (tied)
                *head += cost;
        } else {
            *head += cost; /* output_norm, output, rope_freqs */
        }
    }
    return BT_OK;
}

static bt_status parse_spec(const char *spec, int n_stages, int n_layer, bt_split *out,
                            bt_error *err) {
    const char *p = spec;
    int s = 0, expect = 0;
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10);
        if (end == p || *end != '-')
            return bt_error_set(err, BT_ERR_INVALID_ARG, "--layers '%s': expected a-b at '%s'",
                                spec, p);
        p = end + 1;
        long b = strtol(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0'))
            return bt_error_set(err, BT_ERR_INVALID_ARG, "--layers '%s': expected a-b at '%s'",
                                spec, p);
        p = *end == ',' ? end + 1 : end;
        if (s >= n_stages)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "--layers '%s': more ranges than the %d stages", spec, n_stages);
        if (a != expect || b < a || b >= n_layer)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "--layers '%s': range %ld-%ld must start at %d and end before %d",
                                spec, a, b, expect, n_layer);
        out->begin[s] = (int)a;
        out->end[s] = (int)b + 1;
        expect = (int)b + 1;
        s++;
    }
    if (s != n_stages || expect != n_layer)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "--layers '%s': %d ranges covering %d layers; need %d stages "
                            "covering all %d layers",
                            spec, s, expect, n_stages, n_layer);
    return BT_OK;
}

bt_status bt_split_mode_parse(const char *name, bt_split_mode *out, bt_error *err) {
    if (strcmp(name, "memory") == 0)
        *out = BT_SPLIT_MEMORY;
    else if (strcmp(name, "compute") == 0)
        *out = BT_SPLIT_COMPUTE;
    else
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--split '%s': expected 'memory' or 'compute'",
                            name);
    return BT_OK;
}

bt_status bt_split_plan(const bt_gguf *g, int n_stages, int kv_tokens,
                        uint64_t kv_bytes_per_token_layer, bt_split_mode mode, const char *spec,
                        bt_split *out, bt_error *err) {
    memset(out, 0, sizeof *out);
    bt_hparams hp;
    bt_status st = bt_hparams_load(g, &hp, err);
    if (st != BT_OK)
        return st;
    int n_layer = hp.n_layer;
    if (n_layer < 1 || n_layer > MAX_LAYERS)
        return bt_error_set(err, BT_ERR_FORMAT, "block_count %d out of range", n_layer);
    if (n_stages < 1 || n_stages > BT_MAX_STAGES || n_stages > n_layer)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "%d stages for a model of %d layers", n_stages,
                            n_layer);
    out->n_stages = n_stages;
    out->n_layer = n_layer;

    uint64_t layer[MAX_LAYERS], embd, head, mem_layer[MAX_LAYERS], mem_embd, mem_head;
    if ((st = measure(g, n_layer, mode == BT_SPLIT_COMPUTE, layer, &embd, &head, err)) != BT_OK ||
        (st = measure(g, n_layer, false, mem_layer, &mem_embd, &mem_head, err)) != BT_OK)
        return st;
    uint64_t kv_layer = (uint64_t)kv_tokens * kv_bytes_per_token_layer;
    /* Costs to balance: memory, or weight bytes streamed per token. */
    uint64_t cost_layer_extra = mode == BT_SPLIT_MEMORY ? kv_layer : 0;
    uint64_t cost_embd = mode == BT_SPLIT_MEMORY ? embd : 0;
    for (int l = 0; l < n_layer; l++)
        layer[l] += cost_layer_extra;

    if (spec) {
        if ((st = parse_spec(spec, n_stages, n_layer, out, err)) != BT_OK)
            return st;
    } else {
        /* cost[s][l]: the least possible largest stage cost when stages 0..s hold layers
         * 0..l-1, via prefix sums; O(S * L^2) on a few hundred layers at most. */
        uint64_t prefix[MAX_LAYERS + 1];
        prefix[0] = 0;
        for (int l = 0; l < n_layer; l++)
            prefix[l + 1] = prefix[l] + layer[l];
        uint64_t *cost = malloc(sizeof *cost * (size_t)n_stages * (size_t)(n_layer + 1));
        int *cut = malloc(sizeof *cut * (size_t)n_stages * (size_t)(n_layer + 1));
        if (!cost || !cut) {
            free(cost);
            free(cut);
            return bt_error_set(err, BT_ERR_NOMEM, "split: out of memory");
        }
#define COST(s, l) cost[(size_t)(s) * (size_t)(n_layer + 1) + (size_t)(l)]
#define CUT(s, l) cut[(size_t)(s) * (size_t)(n_layer + 1) + (size_t)(l)]
        for (int s = 0; s < n_stages; s++) {
            for (int l = 0; l <= n_layer; l++) {
                COST(s, l) = UINT64_MAX;
                int lo = s == 0 ? 0 : s; /* each earlier stage keeps at least one layer */
                for (int k = lo; k < l; k++) {
                    uint64_t mine = prefix[l] - prefix[k];
                    if (s == 0)
                        mine += cost_embd;
                    if (l == n_layer)
                        mine += head;
                    uint64_t before = s == 0 ? (k == 0 ? 0 : UINT64_MAX) : COST(s - 1, k);
                    if (before == UINT64_MAX)
                        continue;
                    uint64_t worst = before > mine ? before : mine;
                    if (worst < COST(s, l)) {
                        COST(s, l) = worst;
                        CUT(s, l) = k;
                    }
                }
            }
        }
        int l = n_layer;
        for (int s = n_stages - 1; s >= 0; s--) {
            out->end[s] = l;
            out->begin[s] = CUT(s, l);
            l = out->begin[s];
        }
#undef COST
#undef CUT
        free(cost);
        free(cut);
    }
    for (int s = 0; s < n_stages; s++) {
        for (int l = out->begin[s]; l < out->end[s]; l++)
            out->weight_bytes[s] += mem_layer[l];
        if (s == 0)
            out->weight_bytes[s] += mem_embd;
        if (s == n_stages - 1)
            out->weight_bytes[s] += mem_head;
        if (s == 0 && s == n_stages - 1 && bt_gguf_find_tensor(g, "output.weight") == NULL)
            out->weight_bytes[s] -= mem_embd; /* one stage maps the tied embedding once */
        out->kv_bytes[s] = kv_layer * (uint64_t)(out->end[s] - out->begin[s]);
    }
    return BT_OK;
}
