/* split.c - layer split balanced by bytes, compute or measured time (see split.h). */
#include "split.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hparams.h"
#include "kv_plan.h"
#include "stage_layout.h"
#include "stage_loop.h"

#define MAX_LAYERS 4096
#define MIB (1024.0 * 1024.0)

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
    else if (strcmp(name, "measured") == 0)
        *out = BT_SPLIT_MEASURED;
    else
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "--split '%s': expected 'memory', 'compute' or 'measured'", name);
    return BT_OK;
}

bt_status bt_split_mode_of_flags(const char *split, const char *stage_speed, bt_split_mode *out,
                                 bt_error *err) {
    *out = stage_speed ? BT_SPLIT_MEASURED : BT_SPLIT_MEMORY;
    bt_status st;
    if (split && (st = bt_split_mode_parse(split, out, err)) != BT_OK)
        return st;
    if (stage_speed && *out != BT_SPLIT_MEASURED)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "--stage-speed '%s' applies to --split measured, not --split %s",
                            stage_speed, split);
    if (stage_speed) { /* its syntax now: as many values as it has */
        int n = 1;
        for (const char *p = stage_speed; *p; p++)
            n += *p == ',';
        double v[BT_MAX_STAGES];
        if (n > BT_MAX_STAGES)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "--stage-speed '%.64s...': %d values, at most %d stages",
                                stage_speed, n, BT_MAX_STAGES);
        if ((st = bt_split_speed_parse(stage_speed, n, v, err)) != BT_OK)
            return st;
    }
    return BT_OK;
}

bt_status bt_split_speed_parse(const char *list, int n_stages, double *out, bt_error *err) {
    const char *p = list;
    int n = 0;
    double lo = INFINITY, hi = 0;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        size_t len = strcspn(p, ",");
        if (end == p || (*end != ',' && *end != '\0') || errno == ERANGE || !isfinite(v) ||
            !(v > 0))
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "--stage-speed '%s': value %d '%.*s' is not a positive number",
                                list, n + 1, (int)(len < 32 ? len : 32), p);
        if (n < n_stages)
            out[n] = v;
        n++;
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    if (n != n_stages)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "--stage-speed '%s': %d values for %d stages",
                            list, n, n_stages);
    if (hi > lo * BT_SPLIT_MAX_SPEED_RATIO)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "--stage-speed '%s': the fastest stage is %g times the slowest, at "
                            "most %g",
                            list, hi / lo, BT_SPLIT_MAX_SPEED_RATIO);
    return BT_OK;
}

uint64_t bt_split_scratch_bytes(const bt_hparams *hp, int max_batch, int max_seqs, bool last) {
    uint64_t B = (uint64_t)max_batch, S = (uint64_t)max_seqs, E = (uint64_t)hp->n_embd,
             F = (uint64_t)hp->n_ff, Q = (uint64_t)bt_hparams_q_dim(hp),
             KV = (uint64_t)bt_hparams_kv_dim(hp), V = (uint64_t)hp->n_vocab,
             D = (uint64_t)hp->head_dim;
    /* forward.c: x, xn, tmp [B][E]; q, att [B][Q]; k, v [B][KV]; gate, up [B][F]; rope [B][D]
     * (twice with a sliding window);
     * the q8 copy of the widest input (a 44-byte bt_q8 per 32 values) and its xu (32) */
    uint64_t widest = E > F ? E : F;
    widest = widest > Q ? widest : Q;
    uint64_t rope = hp->sliding_window > 0 ? 2 * D : D; /* local layers' own rope cache */
    uint64_t bytes = B * (3 * E + 2 * Q + 2 * KV + 2 * F + rope) * 4 + B * (widest / 32 + 1) * 76;
    /* attention's chunk partials (stage_layout.h) at the trained context, the stages' default
     * sequence limit (4096 when the model does not say) */
    uint64_t ctx = hp->n_ctx_train > 0 ? (uint64_t)hp->n_ctx_train : 4096;
    bytes += BT_ATTN_SPLIT_MAX_ROWS * ((ctx + BT_ATTN_CHUNK_KEYS - 1) / BT_ATTN_CHUNK_KEYS) *
             (uint64_t)hp->n_head * (D + 2) * 4;
    /* stage_loop.c: act_in, act_out [B][E] f32; its outgoing frame, and the transport's
     * incoming one and one queued send (proto/transport_*.c hold at most that many) */
    bytes += 2 * B * E * 4 + 3 * (uint64_t)bt_stage_loop_max_frame(max_batch, max_seqs, hp->n_embd);
    if (last) {
        /* logits of min(B, min(S, B) + BT_SCORE_ROWS) rows; sampler.c: the token history
         * (int32 counts and a bitmap per sequence) and two [V] work arrays */
        uint64_t rows = (S < B ? S : B) + BT_SCORE_ROWS;
        rows = rows < B ? rows : B;
        bytes += rows * V * 4 + S * V * 4 + S * (V / 8 + 8) + V * 16;
    }
    return bytes;
}

/* What a stage of layers [k, l) needs besides its KV; weights by the byte measure. */
typedef struct fit_ctx {
    const bt_split_mem *mem;
    const uint64_t *mem_prefix; /* [n_layer + 1] prefix sums of layer bytes */
    uint64_t mem_embd, mem_head;
    bool tied;
    int n_stages, n_layer;
    const bt_hparams *hp;
    bt_type kv_type;
    uint64_t scratch_mid, scratch_last;
    int min_tokens; /* one context in whole KV blocks */
} fit_ctx;

static uint64_t stage_weights(const fit_ctx *f, int s, int k, int l) {
    uint64_t w = f->mem_prefix[l] - f->mem_prefix[k];
    if (s == 0)
        w += f->mem_embd;
    if (l == f->n_layer)
        w += f->mem_head;
    if (s == 0 && l == f->n_layer && f->tied)
        w -= f->mem_embd; /* one stage maps the tied embedding once */
    return w;
}

/* K and V of a stage of layers [k, l) with KV for `tokens`, as the stage allocates it
 * (kv_plan.h): the local layers' window pool sized from the memory side's max_seqs and
 * max_batch; without a memory side (no such numbers) as a cache without the window. */
static uint64_t stage_kv(const fit_ctx *f, int k, int l, int tokens) {
    bt_kv_plan p;
    if (!f->mem) {
        bt_kv_plan_stage(f->hp, k, l, tokens, 1, 1, f->kv_type, &p);
        return p.full_bytes;
    }
    bt_kv_plan_stage(f->hp, k, l, tokens, f->mem->max_seqs, f->mem->max_batch, f->kv_type, &p);
    return bt_kv_plan_bytes(&p);
}

static uint64_t stage_fixed(const fit_ctx *f, int s, int k, int l) {
    return stage_weights(f, s, k, l) + (l == f->n_layer ? f->scratch_last : f->scratch_mid) +
           BT_SPLIT_OVERHEAD_BYTES;
}

/* Whether stage s holding [k, l) fits its budget with one context of KV. */
static bool fits(const fit_ctx *f, int s, int k, int l) {
    if (!f || !f->mem || !f->mem->budget[s])
        return true;
    return stage_fixed(f, s, k, l) + stage_kv(f, k, l, f->min_tokens) <= f->mem->budget[s];
}

/* cost x factor (factor in [1, BT_SPLIT_MAX_SPEED_RATIO]), saturating below UINT64_MAX (which
 * marks "no split" in balance). */
static uint64_t scale_cost(uint64_t cost, double factor) {
    double v = (double)cost * factor;
    return v >= 1.8e19 ? UINT64_MAX - 1 : (uint64_t)v;
}

/* The split of layers over stages that minimises the largest stage cost, among the splits
 * where every stage fits (fit NULL: all). cost[s][l]: the least possible largest stage cost
 * when stages 0..s hold layers 0..l-1, via prefix sums; O(S * L^2) on a few hundred layers at
 * most. False when no split fits. */
static bool balance(int n_stages, int n_layer, const uint64_t *layer, uint64_t cost_embd,
                    uint64_t head, const double *slowness, const fit_ctx *fit, bt_split *out,
                    bt_error *err, bt_status *st) {
    uint64_t prefix[MAX_LAYERS + 1];
    prefix[0] = 0;
    for (int l = 0; l < n_layer; l++)
        prefix[l + 1] = prefix[l] + layer[l];
    uint64_t *cost = calloc((size_t)n_stages * (size_t)(n_layer + 1), sizeof *cost);
    int *cut = calloc((size_t)n_stages * (size_t)(n_layer + 1), sizeof *cut);
    if (!cost || !cut) {
        free(cost);
        free(cut);
        *st = bt_error_set(err, BT_ERR_NOMEM, "split: out of memory");
        return false;
    }
#define COST(s, l) cost[(size_t)(s) * (size_t)(n_layer + 1) + (size_t)(l)]
#define CUT(s, l) cut[(size_t)(s) * (size_t)(n_layer + 1) + (size_t)(l)]
    for (int s = 0; s < n_stages; s++) {
        for (int l = 0; l <= n_layer; l++) {
            COST(s, l) = UINT64_MAX;
            int lo = s == 0 ? 0 : s; /* each earlier stage keeps at least one layer */
            for (int k = lo; k < l; k++) {
                uint64_t before = s == 0 ? (k == 0 ? 0 : UINT64_MAX) : COST(s - 1, k);
                if (before == UINT64_MAX || !fits(fit, s, k, l))
                    continue;
                uint64_t mine = prefix[l] - prefix[k];
                if (s == 0)
                    mine += cost_embd;
                if (l == n_layer)
                    mine += head;
                if (slowness) /* measured: time, the cost over the stage's speed */
                    mine = scale_cost(mine, slowness[s]);
                uint64_t worst = before > mine ? before : mine;
                if (worst < COST(s, l)) {
                    COST(s, l) = worst;
                    CUT(s, l) = k;
                }
            }
        }
    }
    bool found = COST(n_stages - 1, n_layer) != UINT64_MAX;
    if (found) {
        int l = n_layer;
        for (int s = n_stages - 1; s >= 0; s--) {
            out->end[s] = l;
            out->begin[s] = CUT(s, l);
            l = out->begin[s];
        }
    }
#undef COST
#undef CUT
    free(cost);
    free(cut);
    *st = BT_OK;
    return found;
}

/* The first stage of out that does not fit, or -1. */
static int first_misfit(const fit_ctx *f, const bt_split *out) {
    for (int s = 0; s < out->n_stages; s++)
        if (!fits(f, s, out->begin[s], out->end[s]))
            return s;
    return -1;
}

static bt_status refuse(const fit_ctx *f, const bt_split *out, int s, const char *why,
                        bt_error *err) {
    int k = out->begin[s], l = out->end[s];
    uint64_t w = stage_weights(f, s, k, l);
    uint64_t kv = stage_kv(f, k, l, f->min_tokens);
    uint64_t scratch = l == f->n_layer ? f->scratch_last : f->scratch_mid;
    uint64_t need = w + kv + scratch + BT_SPLIT_OVERHEAD_BYTES;
    return bt_error_set(err, BT_ERR_RANGE,
                        "stage rank %d (layers %d-%d of %d stages) needs %.1f MiB (weights %.1f + "
                        "KV %.1f for %d tokens + scratch %.1f + overhead %.1f) but has %.1f MiB "
                        "(%s)%s",
                        s + 1, k, l - 1, f->n_stages, (double)need / MIB, (double)w / MIB,
                        (double)kv / MIB, f->min_tokens, (double)scratch / MIB,
                        (double)BT_SPLIT_OVERHEAD_BYTES / MIB, (double)f->mem->budget[s] / MIB,
                        bt_mem_source_name(f->mem->source[s]), why);
}

bt_status bt_split_plan(const bt_gguf *g, int n_stages, int kv_tokens, bt_type kv_type,
                        bt_split_mode mode, const double *speed, const char *spec,
                        const bt_split_mem *mem, bt_split *out, bt_error *err) {
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
    if (kv_tokens < 1)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "split: kv_tokens %d", kv_tokens);
    if (mem &&
        (mem->n_ctx < 1 || mem->n_ctx > kv_tokens || mem->max_batch < 1 || mem->max_seqs < 1))
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "split: context %d (at most kv_tokens %d), max_batch %d, max_seqs %d",
                            mem->n_ctx, kv_tokens, mem->max_batch, mem->max_seqs);
    if (mode == BT_SPLIT_MEASURED && !speed)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "split: measured without stage speeds");
    /* Speeds relative to the fastest; slowness = 1 / speed, in [1, BT_SPLIT_MAX_SPEED_RATIO]. */
    double fastest = 0, slowness[BT_MAX_STAGES];
    for (int s = 0; speed && s < n_stages; s++) {
        if (!(speed[s] > 0) || !isfinite(speed[s]))
            return bt_error_set(err, BT_ERR_INVALID_ARG, "split: stage rank %d has speed %g", s + 1,
                                speed[s]);
        fastest = speed[s] > fastest ? speed[s] : fastest;
    }
    for (int s = 0; s < n_stages; s++) {
        out->speed[s] = speed ? speed[s] / fastest : 1.0;
        slowness[s] = 1.0 / out->speed[s];
        if (slowness[s] > BT_SPLIT_MAX_SPEED_RATIO)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "split: stage rank %d is %g times slower than the fastest, at "
                                "most %g",
                                s + 1, slowness[s], BT_SPLIT_MAX_SPEED_RATIO);
    }
    out->n_stages = n_stages;
    out->n_layer = n_layer;

    bool compute = mode != BT_SPLIT_MEMORY;
    uint64_t layer[MAX_LAYERS], embd, head, mem_layer[MAX_LAYERS], mem_embd, mem_head;
    uint64_t time_layer[MAX_LAYERS], time_embd, time_head;
    if ((st = measure(g, n_layer, compute, layer, &embd, &head, err)) != BT_OK ||
        (st = measure(g, n_layer, false, mem_layer, &mem_embd, &mem_head, err)) != BT_OK ||
        (st = measure(g, n_layer, true, time_layer, &time_embd, &time_head, err)) != BT_OK)
        return st;
    const double *slow = mode == BT_SPLIT_MEASURED ? slowness : NULL;
    uint64_t mem_prefix[MAX_LAYERS + 1];
    mem_prefix[0] = 0;
    for (int l = 0; l < n_layer; l++)
        mem_prefix[l + 1] = mem_prefix[l] + mem_layer[l];
    fit_ctx fc = {.mem = mem,
                  .mem_prefix = mem_prefix,
                  .mem_embd = mem_embd,
                  .mem_head = mem_head,
                  .tied = bt_gguf_find_tensor(g, "output.weight") == NULL,
                  .n_stages = n_stages,
                  .n_layer = n_layer,
                  .hp = &hp,
                  .kv_type = kv_type};
    /* Costs to balance: memory (a local layer's KV is its window pool's), or weight bytes
     * streamed per token. */
    uint64_t cost_embd = mode == BT_SPLIT_MEMORY ? embd : 0;
    for (int l = 0; mode == BT_SPLIT_MEMORY && l < n_layer; l++)
        layer[l] += stage_kv(&fc, l, l + 1, kv_tokens);

    if (mem) {
        fc.scratch_mid = bt_split_scratch_bytes(&hp, mem->max_batch, mem->max_seqs, false);
        fc.scratch_last = bt_split_scratch_bytes(&hp, mem->max_batch, mem->max_seqs, true);
        fc.min_tokens =
            (mem->n_ctx + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS * BT_KV_BLOCK_TOKENS;
    }
    const fit_ctx *fit = mem ? &fc : NULL;

    if (spec) {
        if ((st = parse_spec(spec, n_stages, n_layer, out, err)) != BT_OK)
            return st;
        int bad = first_misfit(fit, out);
        if (bad >= 0)
            return refuse(&fc, out, bad, " with --layers", err);
    } else {
        if (!balance(n_stages, n_layer, layer, cost_embd, head, slow, NULL, out, err, &st))
            return st != BT_OK ? st : bt_error_set(err, BT_ERR_INTERNAL, "split: no split");
        int bad = first_misfit(fit, out);
        if (bad >= 0) {
            /* The balanced split does not fit: the best of those that do, if any. */
            bt_split tried = *out;
            if (!balance(n_stages, n_layer, layer, cost_embd, head, slow, fit, out, err, &st)) {
                if (st != BT_OK)
                    return st;
                return refuse(&fc, &tried, bad,
                              n_stages > 1 ? ", and no other split of the layers fits" : "", err);
            }
            out->uneven = true;
        }
    }
    /* Predicted time per token of each stage, compute cost / speed (the embedding is one row
     * read: no time), as shares of the pipeline's. */
    double time_sum = 0;
    for (int s = 0; s < n_stages; s++) {
        double c = 0;
        for (int l = out->begin[s]; l < out->end[s]; l++)
            c += (double)time_layer[l];
        if (out->end[s] == n_layer)
            c += (double)time_head;
        out->time_share[s] = c * slowness[s];
        time_sum += out->time_share[s];
    }
    for (int s = 0; s < n_stages; s++)
        out->time_share[s] = time_sum > 0 ? out->time_share[s] / time_sum : 0;
    (void)time_embd;
    for (int s = 0; s < n_stages; s++) {
        int k = out->begin[s], l = out->end[s];
        out->weight_bytes[s] = stage_weights(&fc, s, k, l);
        out->kv_tokens[s] = kv_tokens;
        if (!mem) {
            out->kv_bytes[s] = stage_kv(&fc, k, l, kv_tokens);
            continue;
        }
        out->scratch_bytes[s] = l == n_layer ? fc.scratch_last : fc.scratch_mid;
        out->overhead_bytes = BT_SPLIT_OVERHEAD_BYTES;
        out->budget_bytes[s] = mem->budget[s];
        out->budget_source[s] = mem->source[s];
        /* The stage allocates whole KV blocks; keep the request when it fits, else the most
         * whole blocks that fit (at least one context: fits() said so). The KV bytes grow with
         * the blocks, the window pool's only up to its bound: search the blocks. */
        int want = (kv_tokens + BT_KV_BLOCK_TOKENS - 1) / BT_KV_BLOCK_TOKENS * BT_KV_BLOCK_TOKENS;
        uint64_t fixed = stage_fixed(&fc, s, k, l);
        if (mem->budget[s] && fixed + stage_kv(&fc, k, l, want) > mem->budget[s]) {
            int lo = fc.min_tokens / BT_KV_BLOCK_TOKENS, hi = want / BT_KV_BLOCK_TOKENS - 1;
            if (fixed + stage_kv(&fc, k, l, lo * BT_KV_BLOCK_TOKENS) > mem->budget[s])
                return refuse(&fc, out, s, "", err); /* fits() held: cannot happen */
            while (lo < hi) { /* the most blocks in [lo, hi] that fit; lo fits */
                int mid = lo + (hi - lo + 1) / 2;
                if (fixed + stage_kv(&fc, k, l, mid * BT_KV_BLOCK_TOKENS) <= mem->budget[s])
                    lo = mid;
                else
                    hi = mid - 1;
            }
            want = lo * BT_KV_BLOCK_TOKENS;
            out->kv_tokens[s] = want;
        }
        out->kv_bytes[s] = stage_kv(&fc, k, l, want);
    }
    return BT_OK;
}
