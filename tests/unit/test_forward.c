/*
 * test_forward.c - the forward pass of bt_stage against a naive reference written here
 * (every weight dequantized to f32 with the scalar bt_dequant_row, plain loops, full
 * softmax), and the properties the pipeline relies on:
 *   (a) reference == stage (sgemm path tightly; quantized path loosely, same argmax)
 *   (b) prefill of N rows == N single-row decode steps
 *   (c) layers split over two stages == one stage, bit for bit
 *   (d) two sequences interleaved in one batch == each alone
 *   (e) KV accounting: seq_free returns blocks; a full cache refuses without corruption;
 *       bad rows are refused with INVALID_ARG.
 * Runs on a tiny random model built in memory (always) and on SmolLM2 when present.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "hparams.h"
#include "stage.h"
#include "tensor_type.h"

/* ---------------- tiny model ---------------- */

static uint64_t rng_state = 0x12345678u;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) & 0xffffff) / (float)(1 << 23) - 1.0f;
}

static void quant_q8_0(const float *x, int64_t n, bt_block_q8_0 *out)
{
    for (int64_t b = 0; b < n / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        out[b].d = bt_f32_to_half(d);
        for (int j = 0; j < 32; j++)
            out[b].qs[j] = (int8_t)roundf(x[b * 32 + j] * id);
    }
}

static void quant_q4_1(const float *x, int64_t n, bt_block_q4_1 *out)
{
    for (int64_t b = 0; b < n / 32; b++) {
        const float *v = x + b * 32;
        float mn = v[0], mx = v[0];
        for (int j = 1; j < 32; j++) {
            mn = fminf(mn, v[j]);
            mx = fmaxf(mx, v[j]);
        }
        float d = (mx - mn) / 15.0f, id = d ? 1.0f / d : 0.0f;
        out[b].d = bt_f32_to_half(d);
        out[b].m = bt_f32_to_half(mn);
        for (int j = 0; j < 16; j++) {
            int q0 = (int)fminf(15.0f, roundf((v[j] - mn) * id));
            int q1 = (int)fminf(15.0f, roundf((v[j + 16] - mn) * id));
            out[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

enum { T_E = 64, T_F = 96, T_H = 4, T_HKV = 2, T_D = 16, T_V = 128, T_L = 4 };

static void add_weight(bt_gw *gw, const char *name, int64_t cols, int64_t rows, uint32_t type,
                       float amp)
{
    int64_t n = cols * rows;
    float *x = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        x[i] = amp * frand();
    int64_t ne[2] = {cols, rows};
    if (rows == 1) { /* norm vector: around 1 */
        for (int64_t i = 0; i < n; i++)
            x[i] = 1.0f + 0.2f * x[i] / amp;
        bt_gw_add_tensor(gw, name, 1, ne, BT_TYPE_F32, x, sizeof(float) * (size_t)n);
    } else if (type == BT_TYPE_Q4_1) {
        bt_block_q4_1 *q = malloc(sizeof(*q) * (size_t)(n / 32));
        quant_q4_1(x, n, q);
        bt_gw_add_tensor(gw, name, 2, ne, type, q, sizeof(*q) * (size_t)(n / 32));
        free(q);
    } else if (type == BT_TYPE_Q8_0) {
        bt_block_q8_0 *q = malloc(sizeof(*q) * (size_t)(n / 32));
        quant_q8_0(x, n, q);
        bt_gw_add_tensor(gw, name, 2, ne, type, q, sizeof(*q) * (size_t)(n / 32));
        free(q);
    } else {
        bt_gw_add_tensor(gw, name, 2, ne, BT_TYPE_F32, x, sizeof(float) * (size_t)n);
    }
    free(x);
}

/* Layers alternate Q4_1 and F32 matrices; tied Q8_0 embedding. *buf owned by the caller. */
static bt_gguf *make_tiny(uint8_t **buf)
{
    bt_gw *gw = bt_gw_new();
    bt_gw_add_str(gw, "general.architecture", "llama");
    bt_gw_add_u32(gw, "llama.block_count", T_L);
    bt_gw_add_u32(gw, "llama.embedding_length", T_E);
    bt_gw_add_u32(gw, "llama.feed_forward_length", T_F);
    bt_gw_add_u32(gw, "llama.attention.head_count", T_H);
    bt_gw_add_u32(gw, "llama.attention.head_count_kv", T_HKV);
    bt_gw_add_u32(gw, "llama.rope.dimension_count", T_D);
    bt_gw_add_f32(gw, "llama.rope.freq_base", 10000.0f);
    bt_gw_add_f32(gw, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    bt_gw_add_u32(gw, "llama.context_length", 512);
    bt_gw_add_u32(gw, "llama.vocab_size", T_V);
    add_weight(gw, "token_embd.weight", T_E, T_V, BT_TYPE_Q8_0, 1.0f);
    add_weight(gw, "output_norm.weight", T_E, 1, BT_TYPE_F32, 1.0f);
    char name[64];
    for (int l = 0; l < T_L; l++) {
        uint32_t ty = l % 2 ? BT_TYPE_F32 : BT_TYPE_Q4_1;
        float a = 0.25f;
#define W(suffix, cols, rows)                                                                      \
    (snprintf(name, sizeof(name), "blk.%d.%s", l, suffix), add_weight(gw, name, cols, rows, ty, a))
        W("attn_norm.weight", T_E, 1);
        W("attn_q.weight", T_E, T_H * T_D);
        W("attn_k.weight", T_E, T_HKV * T_D);
        W("attn_v.weight", T_E, T_HKV * T_D);
        W("attn_output.weight", T_H * T_D, T_E);
        W("ffn_norm.weight", T_E, 1);
        W("ffn_gate.weight", T_E, T_F);
        W("ffn_up.weight", T_E, T_F);
        W("ffn_down.weight", T_F, T_E);
#undef W
    }
    size_t size = 0;
    bt_gguf *g = NULL;
    if (bt_gw_write_mem(gw, buf, &size, NULL) != BT_OK) {
        bt_gw_free(gw);
        return NULL;
    }
    bt_gw_free(gw);
    bt_error err;
    bt_error_init(&err);
    if (bt_gguf_open_memory(*buf, size, &g, &err) != BT_OK) {
        fprintf(stderr, "tiny model: %s\n", err.msg);
        return NULL;
    }
    return g;
}

/* ---------------- naive reference ---------------- */

static float *deq(const bt_gguf *g, const char *name, int64_t *cols, int64_t *rows)
{
    const bt_gguf_tensor *t = bt_gguf_find_tensor(g, name);
    if (!t)
        return NULL;
    int64_t c = t->ne[0], r = t->ne[1];
    float *out = malloc(sizeof(float) * (size_t)(c * r));
    for (int64_t i = 0; i < r; i++)
        bt_dequant_row((bt_type)t->type, (const char *)t->data + (size_t)i * t->row_bytes,
                       out + i * c, c);
    if (cols)
        *cols = c;
    if (rows)
        *rows = r;
    return out;
}

static void matvec(const float *w, const float *x, float *y, int64_t cols, int64_t rows)
{
    for (int64_t r = 0; r < rows; r++) {
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++)
            s += (double)w[r * cols + c] * x[c];
        y[r] = (float)s;
    }
}

static void ref_rmsnorm(float *y, const float *x, const float *w, int n, float eps)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(s / n + eps);
    for (int i = 0; i < n; i++)
        y[i] = (float)(x[i] * scale) * w[i];
}

static void ref_rope(float *v, int n_heads, int D, int pos, float base)
{
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < D; i += 2) {
            double th = pos * pow(base, -(double)i / D);
            double c = cos(th), s = sin(th);
            float x0 = v[h * D + i], x1 = v[h * D + i + 1];
            v[h * D + i] = (float)(x0 * c - x1 * s);
            v[h * D + i + 1] = (float)(x0 * s + x1 * c);
        }
}

/* logits [T][V] of one sequence of T tokens at positions 0..T-1. */
static void ref_forward(const bt_gguf *g, const bt_hparams *hp, const int32_t *tok, int T,
                        float *logits)
{
    int E = hp->n_embd, H = hp->n_head, HKV = hp->n_head_kv, D = hp->head_dim, F = hp->n_ff;
    int Q = H * D, KV = HKV * D, V = hp->n_vocab;
    float *emb = deq(g, "token_embd.weight", NULL, NULL);
    float *x = malloc(sizeof(float) * (size_t)T * E);
    for (int t = 0; t < T; t++)
        memcpy(x + (size_t)t * E, emb + (size_t)tok[t] * E, sizeof(float) * (size_t)E);
    float *h = malloc(sizeof(float) * (size_t)E), *q = malloc(sizeof(float) * (size_t)T * Q);
    float *K = malloc(sizeof(float) * (size_t)T * KV), *Vv = malloc(sizeof(float) * (size_t)T * KV);
    float *o = malloc(sizeof(float) * (size_t)Q), *tmp = malloc(sizeof(float) * (size_t)E);
    float *gt = malloc(sizeof(float) * (size_t)F), *up = malloc(sizeof(float) * (size_t)F);
    float *sc = malloc(sizeof(float) * (size_t)T);
    char name[64];
    for (int l = 0; l < hp->n_layer; l++) {
#define L(suffix) (snprintf(name, sizeof(name), "blk.%d.%s", l, suffix), deq(g, name, NULL, NULL))
        float *an = L("attn_norm.weight"), *wq = L("attn_q.weight"), *wk = L("attn_k.weight");
        float *wv = L("attn_v.weight"), *wo = L("attn_output.weight"), *fn = L("ffn_norm.weight");
        float *wg = L("ffn_gate.weight"), *wu = L("ffn_up.weight"), *wd = L("ffn_down.weight");
#undef L
        for (int t = 0; t < T; t++) {
            ref_rmsnorm(h, x + (size_t)t * E, an, E, hp->rms_eps);
            matvec(wq, h, q + (size_t)t * Q, E, Q);
            matvec(wk, h, K + (size_t)t * KV, E, KV);
            matvec(wv, h, Vv + (size_t)t * KV, E, KV);
            ref_rope(q + (size_t)t * Q, H, D, t, hp->rope_base);
            ref_rope(K + (size_t)t * KV, HKV, D, t, hp->rope_base);
        }
        for (int t = 0; t < T; t++) {
            for (int hh = 0; hh < H; hh++) {
                int gg = hh / (H / HKV);
                double mx = -INFINITY, sum = 0.0;
                for (int i = 0; i <= t; i++) {
                    double s = 0.0;
                    for (int d = 0; d < D; d++)
                        s += (double)q[(size_t)t * Q + hh * D + d] * K[(size_t)i * KV + gg * D + d];
                    sc[i] = (float)(s / sqrt((double)D));
                    mx = sc[i] > mx ? sc[i] : mx;
                }
                for (int i = 0; i <= t; i++)
                    sum += exp(sc[i] - mx);
                for (int d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int i = 0; i <= t; i++)
                        acc += exp(sc[i] - mx) / sum * Vv[(size_t)i * KV + gg * D + d];
                    o[hh * D + d] = (float)acc;
                }
            }
            float *xt = x + (size_t)t * E;
            matvec(wo, o, tmp, Q, E);
            for (int i = 0; i < E; i++)
                xt[i] += tmp[i];
            ref_rmsnorm(h, xt, fn, E, hp->rms_eps);
            matvec(wg, h, gt, E, F);
            matvec(wu, h, up, E, F);
            for (int i = 0; i < F; i++)
                gt[i] = (float)(gt[i] / (1.0 + exp(-(double)gt[i])) * up[i]);
            matvec(wd, gt, tmp, F, E);
            for (int i = 0; i < E; i++)
                xt[i] += tmp[i];
        }
        free(an), free(wq), free(wk), free(wv), free(wo), free(fn), free(wg), free(wu), free(wd);
    }
    float *onorm = deq(g, "output_norm.weight", NULL, NULL);
    float *wout = deq(g, "output.weight", NULL, NULL);
    for (int t = 0; t < T; t++) {
        ref_rmsnorm(h, x + (size_t)t * E, onorm, E, hp->rms_eps);
        matvec(wout ? wout : emb, h, logits + (size_t)t * V, E, V);
    }
    free(onorm), free(wout), free(emb), free(x), free(h), free(q), free(K), free(Vv), free(o);
    free(tmp), free(gt), free(up), free(sc);
}

/* ---------------- comparisons ---------------- */

#define Q8_TOL 0.12

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* max |a-b| / max(1, max |b|) over n values. */
static double rel_diff(const float *a, const float *b, int n)
{
    double md = 0.0, mb = 1.0;
    for (int i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

/* Checks row by row; `tol` relative, argmax equal when want_argmax. */
static void compare_rows(const char *what, const float *got, const float *want, int n_rows,
                         int V, double tol, int want_argmax)
{
    double worst = 0.0;
    int argmax_bad = 0;
    for (int r = 0; r < n_rows; r++) {
        double d = rel_diff(got + (size_t)r * V, want + (size_t)r * V, V);
        worst = fmax(worst, d);
        if (want_argmax && argmax(got + (size_t)r * V, V) != argmax(want + (size_t)r * V, V))
            argmax_bad++;
    }
    printf("  %-44s max rel diff %.2e, argmax mismatches %d\n", what, worst, argmax_bad);
    if (!(worst <= tol))
        check_fail(__FILE__, __LINE__, "%s: rel diff %.3g > %.3g", what, worst, tol);
    else
        bt_check_passed++;
    CHECK_EQ_INT(argmax_bad, 0);
}

static bt_stage *new_stage(const bt_gguf *g, int begin, int end, int blas_min, int kv_tokens)
{
    bt_stage_params p = bt_stage_default_params();
    p.layer_begin = begin;
    p.layer_end = end;
    p.n_threads = 2;
    p.kv_tokens = kv_tokens;
    p.max_batch = 64;
    p.max_seqs = 8;
    p.blas_min_rows = blas_min;
    bt_stage *st = NULL;
    bt_error err;
    bt_error_init(&err);
    if (bt_stage_new(g, &p, &st, &err) != BT_OK)
        check_fail(__FILE__, __LINE__, "bt_stage_new: %s", err.msg);
    return st;
}

/* Runs rows [0, n) of one sequence as one batch from position pos0, all logits wanted. */
static bt_status run_seq(bt_stage *st, int seq, const int32_t *tok, int pos0, int n,
                         float *logits)
{
    int32_t s[64], p[64];
    uint8_t want[64];
    for (int i = 0; i < n; i++) {
        s[i] = seq;
        p[i] = pos0 + i;
        want[i] = 1;
    }
    bt_batch b = {n, s, p, tok, want};
    bt_error err;
    bt_error_init(&err);
    bt_status rc = bt_stage_forward(st, &b, NULL, NULL, logits, &err);
    if (rc != BT_OK)
        printf("  forward: %s\n", err.msg);
    return rc;
}

static void test_model(const bt_gguf *g, const char *label)
{
    printf("%s\n", label);
    bt_hparams hp;
    bt_error err;
    bt_error_init(&err);
    CHECK_OK(bt_hparams_load(g, &hp, &err));
    int V = hp.n_vocab, E = hp.n_embd, NL = hp.n_layer;
    enum { T = 20 };
    int32_t tok[T];
    for (int i = 0; i < T; i++)
        tok[i] = (int32_t)((i * 7919 + 13) % V);
    tok[0] = 1;
    float *ref = malloc(sizeof(float) * T * (size_t)V);
    float *a = malloc(sizeof(float) * T * (size_t)V), *b = malloc(sizeof(float) * T * (size_t)V);
    float *c = malloc(sizeof(float) * 2 * T * (size_t)V);
    float *dq = NULL;
    ref_forward(g, &hp, tok, T, ref);

    /* (a) sgemm path and quantized path against the reference. */
    bt_stage *sb = new_stage(g, -1, -1, 1, 256);  /* every batch through sgemm */
    bt_stage *sq = new_stage(g, -1, -1, 1 << 20, 256); /* every batch quantized */
    if (!sb || !sq)
        goto done;
    CHECK_OK(run_seq(sb, 0, tok, 0, T, a));
    compare_rows("(a) sgemm prefill vs reference", a, ref, T, V, 2e-3, 1);
    CHECK_OK(run_seq(sq, 0, tok, 0, T, b));
    /* q8 activations (as llama.cpp) are noisier: ~1e-2 relative is normal, a bug is O(1). */
    compare_rows("(a) q8 prefill vs reference", b, ref, T, V, Q8_TOL, 0);
    CHECK_EQ_INT(argmax(b + (size_t)(T - 1) * V, V), argmax(ref + (size_t)(T - 1) * V, V));

    /* (b) one row at a time == the whole prefill, on both paths. */
    bt_stage_seq_free(sb, 0);
    bt_stage_seq_free(sq, 0);
    for (int i = 0; i < T; i++) {
        CHECK_OK(run_seq(sb, 1, tok + i, i, 1, c + (size_t)i * V));
        CHECK_OK(run_seq(sq, 2, tok + i, i, 1, c + (size_t)(T + i) * V));
    }
    compare_rows("(b) sgemm decode vs sgemm prefill", c, a, T, V, 1e-4, 1);
    /* Different batch shapes round activations differently on the q8 path. */
    compare_rows("(b) q8 decode vs q8 prefill", c + (size_t)T * V, b, T, V, Q8_TOL, 0);
    dq = malloc(sizeof(float) * 3 * (size_t)V); /* q8 decode of rows 0..2 */
    memcpy(dq, c + (size_t)T * V, sizeof(float) * 3 * (size_t)V);
    CHECK_EQ_INT(bt_stage_seq_len(sb, 1), T);

    /* (b') default thresholds: prefill chunk (sgemm) then decode steps (q8). */
    bt_stage *sd = new_stage(g, -1, -1, 0, 256);
    if (sd) {
        CHECK_OK(run_seq(sd, 0, tok, 0, 16, c));
        for (int i = 16; i < T; i++)
            CHECK_OK(run_seq(sd, 0, tok + i, i, 1, c + (size_t)i * V));
        compare_rows("(b) default prefill+decode vs reference", c, ref, T, V, Q8_TOL, 0);
        CHECK_EQ_INT(argmax(c + (size_t)(T - 1) * V, V), argmax(ref + (size_t)(T - 1) * V, V));
    }
    bt_stage_free(sd);

    /* (c) two stages, activations passed on, == one stage bit for bit (both paths). */
    {
        int mid = NL / 2;
        bt_stage *s0 = new_stage(g, 0, mid, 1, 256), *s1 = new_stage(g, mid, NL, 1, 256);
        float *act = malloc(sizeof(float) * T * (size_t)E);
        if (s0 && s1) {
            CHECK(bt_stage_is_first(s0) && !bt_stage_is_last(s0));
            CHECK(!bt_stage_is_first(s1) && bt_stage_is_last(s1));
            int32_t sq_[T], ps[T];
            uint8_t want[T];
            for (int i = 0; i < T; i++)
                sq_[i] = 3, ps[i] = i, want[i] = 1;
            bt_batch bb = {T, sq_, ps, tok, want};
            CHECK_OK(bt_stage_forward(s0, &bb, NULL, act, NULL, &err));
            CHECK_OK(bt_stage_forward(s1, &bb, act, NULL, c, &err));
            CHECK(memcmp(c, a, sizeof(float) * T * (size_t)V) == 0);
            /* One decode row through the split (q8 path) vs the single q8 stage. */
            bt_batch b1 = {1, sq_, ps, tok, want};
            bt_stage *t0 = new_stage(g, 0, mid, 1 << 20, 256);
            bt_stage *t1 = new_stage(g, mid, NL, 1 << 20, 256);
            if (t0 && t1) {
                for (int i = 0; i < 3; i++) {
                    ps[0] = i;
                    b1.token = tok + i;
                    CHECK_OK(bt_stage_forward(t0, &b1, NULL, act, NULL, &err));
                    CHECK_OK(bt_stage_forward(t1, &b1, act, NULL, c + (size_t)i * V, &err));
                }
                CHECK(memcmp(c, dq, sizeof(float) * 3 * (size_t)V) == 0);
            }
            bt_stage_free(t0);
            bt_stage_free(t1);
            printf("  (c) split stages bit-identical: checked\n");
        }
        free(act);
        bt_stage_free(s0);
        bt_stage_free(s1);
    }

    /* (d) two sequences interleaved in one batch == each alone (q8 path, 6 + 6 rows). */
    {
        int32_t tok2[T];
        for (int i = 0; i < T; i++)
            tok2[i] = (int32_t)((i * 104729 + 5) % V);
        float *alone = malloc(sizeof(float) * 12 * (size_t)V);
        bt_stage_seq_free(sq, 1);
        bt_stage_seq_free(sq, 2);
        CHECK_OK(run_seq(sq, 1, tok, 0, 6, alone));
        CHECK_OK(run_seq(sq, 2, tok2, 0, 6, alone + 6 * (size_t)V));
        bt_stage_seq_free(sq, 1);
        bt_stage_seq_free(sq, 2);
        int32_t s[12], p[12], tk[12];
        uint8_t want[12];
        for (int i = 0; i < 12; i++) {
            s[i] = 1 + i % 2;   /* 1, 2, 1, 2, ... */
            p[i] = i / 2;
            tk[i] = i % 2 ? tok2[i / 2] : tok[i / 2];
            want[i] = 1;
        }
        bt_batch bb = {12, s, p, tk, want};
        CHECK_OK(bt_stage_forward(sq, &bb, NULL, NULL, c, &err));
        /* Reorder to (seq 1 rows, seq 2 rows). */
        float *mixed = malloc(sizeof(float) * 12 * (size_t)V);
        for (int i = 0; i < 12; i++)
            memcpy(mixed + (size_t)((i % 2) * 6 + i / 2) * V, c + (size_t)i * V,
                   sizeof(float) * (size_t)V);
        compare_rows("(d) interleaved vs alone (q8)", mixed, alone, 12, V, Q8_TOL, 0);
        /* The same through sgemm: 12 rows interleaved vs 6 + 6. */
        bt_stage_seq_free(sb, 1);
        CHECK_OK(run_seq(sb, 1, tok, 0, 6, alone));
        CHECK_OK(run_seq(sb, 2, tok2, 0, 6, alone + 6 * (size_t)V));
        bt_stage_seq_free(sb, 1);
        bt_stage_seq_free(sb, 2);
        CHECK_OK(bt_stage_forward(sb, &bb, NULL, NULL, c, &err));
        for (int i = 0; i < 12; i++)
            memcpy(mixed + (size_t)((i % 2) * 6 + i / 2) * V, c + (size_t)i * V,
                   sizeof(float) * (size_t)V);
        compare_rows("(d) interleaved vs alone (sgemm)", mixed, alone, 12, V, 1e-4, 1);
        free(mixed);
        free(alone);
    }

    /* (e) KV accounting and refusals. */
    {
        bt_stage *sk = new_stage(g, -1, -1, 0, 32); /* 2 blocks */
        if (sk) {
            CHECK_EQ_INT(bt_stage_kv_tokens_total(sk), 32);
            CHECK_OK(run_seq(sk, 0, tok, 0, T, c));
            CHECK_EQ_INT(bt_stage_kv_tokens_free(sk), 0);
            CHECK_EQ_INT(bt_stage_seq_len(sk, 0), T);
            CHECK_EQ_INT(run_seq(sk, 1, tok, 0, 1, c), BT_ERR_LIMIT);
            CHECK_EQ_INT(bt_stage_seq_len(sk, 1), 0);
            CHECK_EQ_INT(bt_stage_kv_tokens_free(sk), 0);
            /* Positions 20..31 fit in seq 0's blocks; 32 does not. */
            CHECK_EQ_INT(bt_stage_seq_tokens_left(sk, 0), 12);
            /* Wrong position, bad seq id, bad token: refused, nothing changed. */
            CHECK_EQ_INT(run_seq(sk, 0, tok, 5, 1, c), BT_ERR_INVALID_ARG);
            CHECK_EQ_INT(run_seq(sk, 99, tok, 0, 1, c), BT_ERR_INVALID_ARG);
            int32_t badtok = V;
            CHECK_EQ_INT(run_seq(sk, 0, &badtok, T, 1, c), BT_ERR_INVALID_ARG);
            CHECK_EQ_INT(bt_stage_seq_len(sk, 0), T);
            /* Free returns the blocks; the cache still computes correctly. */
            bt_stage_seq_free(sk, 0);
            CHECK_EQ_INT(bt_stage_kv_tokens_free(sk), 32);
            CHECK_EQ_INT(bt_stage_seq_len(sk, 0), 0);
            CHECK_OK(run_seq(sk, 1, tok, 0, 16, c));
            for (int i = 16; i < T; i++)
                CHECK_OK(run_seq(sk, 1, tok + i, i, 1, c + (size_t)i * V));
            compare_rows("(e) after free, reuse vs reference", c, ref, T, V, Q8_TOL, 0);
            /* Truncate and recompute the tail: same logits as before. */
            CHECK_OK(bt_stage_seq_truncate(sk, 1, 17, &err));
            CHECK_OK(run_seq(sk, 1, tok + 17, 17, 3, a));
            compare_rows("(e) truncate + recompute", a, c + (size_t)17 * V, 3, V, Q8_TOL, 0);
        }
        bt_stage_free(sk);
    }
done:
    bt_stage_free(sb);
    bt_stage_free(sq);
    free(dq);
    free(ref);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    uint8_t *buf = NULL;
    bt_gguf *tiny = make_tiny(&buf);
    CHECK(tiny != NULL);
    if (tiny)
        test_model(tiny, "tiny random model (4 layers, Q4_1/F32, tied Q8_0 head)");
    bt_gguf_free(tiny);
    free(buf);

    const char *path = check_model_path("SmolLM2 forward tests");
    if (path) {
        bt_gguf *g = NULL;
        bt_error err;
        bt_error_init(&err);
        CHECK_OK(bt_gguf_open(path, &g, &err));
        if (g)
            test_model(g, path);
        bt_gguf_free(g);
    }
    return check_finish();
}
