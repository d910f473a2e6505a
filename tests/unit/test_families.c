/*
 * test_families.c - what Qwen 2, Qwen 3 and Phi-3 files change at load (issue 13), on small
 * GGUFs built in memory with F32 weights: which architectures load and with which rope,
 * Phi-3's fused attn_qkv / ffn_up read as row views in the order llama.cpp uses (Q, K, V;
 * gate, up), the fused bias split the same way, what a stage's slice must hold
 * (bt_weights_needs), and the refusals naming the key or tensor baton does not implement.
 * The forward pass of each family against llama.cpp is tests/e2e/test_families.sh.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "hparams.h"
#include "weights.h"

enum { E = 64, F = 96, H = 4, HKV = 2, D = 16, L = 2, V = 40 };

/* What a test file holds besides a plain llama layer. */
typedef struct spec {
    const char *arch;
    bool fused_qkv, fused_up, qkv_bias, fused_bias, qk_norm;
    const char *extra_key;    /* a u32 key "<arch>.<extra_key>" = 128, or NULL */
    const char *extra_tensor; /* an F32 [D/2] tensor of that name, or NULL */
    int64_t up_rows;          /* rows of a fused ffn_up (2 F when right) */
} spec;

static int add_f32(bt_gw *w, const char *name, int64_t n_cols, int64_t n_rows) {
    int64_t ne[2] = {n_cols, n_rows};
    size_t n = (size_t)(n_cols * n_rows);
    float *data = malloc(n * sizeof *data);
    if (!data)
        return 1;
    for (size_t i = 0; i < n; i++)
        data[i] = (float)(i % 7) * 0.01f; /* values do not matter here, only layout */
    bt_status st =
        bt_gw_add_tensor(w, name, n_rows > 1 ? 2 : 1, ne, BT_TYPE_F32, data, n * sizeof *data);
    free(data);
    return st != BT_OK;
}

/* The file of s in *buf (malloc'd, the caller frees it). */
static int build(const spec *s, uint8_t **buf, size_t *size) {
    bt_gw *w = bt_gw_new();
    char k[128];
    int bad = !w;
    if (bad)
        return 1;
#define KEY(suffix) (snprintf(k, sizeof k, "%s.%s", s->arch, suffix), k)
    bt_gw_add_str(w, "general.architecture", s->arch);
    bt_gw_add_u32(w, KEY("block_count"), L);
    bt_gw_add_u32(w, KEY("embedding_length"), E);
    bt_gw_add_u32(w, KEY("feed_forward_length"), F);
    bt_gw_add_u32(w, KEY("attention.head_count"), H);
    bt_gw_add_u32(w, KEY("attention.head_count_kv"), HKV);
    bt_gw_add_u32(w, KEY("vocab_size"), V);
    bt_gw_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    if (s->extra_key)
        bt_gw_add_u32(w, KEY(s->extra_key), 128);
#undef KEY
    bad |= add_f32(w, "token_embd.weight", E, V) || add_f32(w, "output_norm.weight", E, 1);
    if (s->extra_tensor)
        bad |= add_f32(w, s->extra_tensor, D / 2, 1);
    const int Q = H * D, KV = HKV * D;
    for (int l = 0; l < L && !bad; l++) {
        char n[96];
#define T(suffix) (snprintf(n, sizeof n, "blk.%d.%s", l, suffix), n)
        bad |= add_f32(w, T("attn_norm.weight"), E, 1);
        if (s->fused_qkv)
            bad |= add_f32(w, T("attn_qkv.weight"), E, Q + 2 * KV);
        else
            bad |= add_f32(w, T("attn_q.weight"), E, Q) || add_f32(w, T("attn_k.weight"), E, KV) ||
                   add_f32(w, T("attn_v.weight"), E, KV);
        if (s->qkv_bias)
            bad |= add_f32(w, T("attn_q.bias"), Q, 1) || add_f32(w, T("attn_k.bias"), KV, 1) ||
                   add_f32(w, T("attn_v.bias"), KV, 1);
        if (s->fused_bias)
            bad |= add_f32(w, T("attn_qkv.bias"), Q + 2 * KV, 1);
        if (s->qk_norm)
            bad |= add_f32(w, T("attn_q_norm.weight"), D, 1) ||
                   add_f32(w, T("attn_k_norm.weight"), D, 1);
        bad |= add_f32(w, T("attn_output.weight"), Q, E) || add_f32(w, T("ffn_norm.weight"), E, 1);
        if (s->fused_up)
            bad |= add_f32(w, T("ffn_up.weight"), E, s->up_rows);
        else
            bad |= add_f32(w, T("ffn_gate.weight"), E, F) || add_f32(w, T("ffn_up.weight"), E, F);
        bad |= add_f32(w, T("ffn_down.weight"), F, E);
#undef T
    }
    if (!bad)
        bad = bt_gw_write_mem(w, buf, size, NULL) != BT_OK;
    bt_gw_free(w);
    return bad;
}

/* Loads s: hparams then all layers; the status, the message in err, the weights in *out when
 * BT_OK (the caller deinits them and frees *gp). */
static bt_status load(const spec *s, bt_gguf **gp, uint8_t **buf, bt_hparams *hp, bt_weights *out,
                      bt_error *err) {
    size_t size;
    *gp = NULL;
    if (build(s, buf, &size)) {
        check_fail(__FILE__, __LINE__, "building the %s file", s->arch);
        return BT_ERR_INTERNAL;
    }
    bt_status st = bt_gguf_open_memory(*buf, size, gp, err);
    if (st == BT_OK)
        st = bt_hparams_load(*gp, hp, err);
    if (st == BT_OK)
        st = bt_weights_load(*gp, hp, 0, L, out, err);
    return st;
}

static void free_all(bt_gguf *g, uint8_t *buf) {
    bt_gguf_free(g);
    free(buf);
}

/* Expects s to be refused with status want and a message containing every one of needles. */
static void refused(const spec *s, bt_status want, const char *needle, const char *needle2) {
    bt_gguf *g;
    uint8_t *buf = NULL;
    bt_hparams hp;
    bt_weights w;
    bt_error err;
    bt_error_init(&err);
    bt_status st = load(s, &g, &buf, &hp, &w, &err);
    CHECK_EQ_INT(st, want);
    if (st == BT_OK)
        bt_weights_deinit(&w);
    if (!strstr(err.msg, needle) || (needle2 && !strstr(err.msg, needle2)))
        check_fail(__FILE__, __LINE__, "%s: message '%s' lacks '%s'%s%s", s->arch, err.msg, needle,
                   needle2 ? " or " : "", needle2 ? needle2 : "");
    free_all(g, buf);
}

static void test_archs_load(void) {
    const spec specs[] = {{.arch = "llama"},
                          {.arch = "qwen2", .qkv_bias = true},
                          {.arch = "qwen3", .qk_norm = true},
                          {.arch = "phi3", .fused_qkv = true, .fused_up = true, .up_rows = 2 * F}};
    const bool neox[] = {false, true, true, true};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        bt_gguf *g;
        uint8_t *buf = NULL;
        bt_hparams hp;
        bt_weights w;
        bt_error err;
        bt_error_init(&err);
        bt_status st = load(&specs[i], &g, &buf, &hp, &w, &err);
        if (st != BT_OK) {
            check_fail(__FILE__, __LINE__, "%s: %s", specs[i].arch, err.msg);
            free_all(g, buf);
            continue;
        }
        CHECK(strcmp(bt_arch_name(hp.arch), specs[i].arch) == 0);
        CHECK_EQ_INT(hp.rope_neox, neox[i]);
        CHECK_EQ_INT(w.layers[1].bq != NULL, specs[i].qkv_bias);
        CHECK_EQ_INT(w.layers[1].q_norm != NULL, specs[i].qk_norm);
        CHECK_EQ_INT(w.layers[1].k_norm != NULL, specs[i].qk_norm);
        CHECK(w.output.data == w.token_embd.data); /* tied: no output.weight */
        bt_weights_deinit(&w);
        free_all(g, buf);
    }
}

/* Phi-3: the views point at the rows llama.cpp reads for each. */
static void test_phi3_views(void) {
    spec s = {
        .arch = "phi3", .fused_qkv = true, .fused_up = true, .fused_bias = true, .up_rows = 2 * F};
    bt_gguf *g;
    uint8_t *buf = NULL;
    bt_hparams hp;
    bt_weights w;
    bt_error err;
    bt_error_init(&err);
    if (load(&s, &g, &buf, &hp, &w, &err) != BT_OK) {
        check_fail(__FILE__, __LINE__, "phi3: %s", err.msg);
        free_all(g, buf);
        return;
    }
    const int Q = H * D, KV = HKV * D;
    for (int l = 0; l < L; l++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_qkv.weight", l);
        const bt_gguf_tensor *qkv = bt_gguf_find_tensor(g, n);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", l);
        const bt_gguf_tensor *up = bt_gguf_find_tensor(g, n);
        snprintf(n, sizeof n, "blk.%d.attn_qkv.bias", l);
        const bt_gguf_tensor *bias = bt_gguf_find_tensor(g, n);
        const bt_layer_weights *lw = &w.layers[l];
        const size_t row = E * sizeof(float);
        const uint8_t *base = qkv->data, *ubase = up->data;
        const float *b = bias->data;
        CHECK(lw->wq.data == base && lw->wq.n_rows == Q && lw->wq.n_cols == E);
        CHECK(lw->wk.data == base + (size_t)Q * row && lw->wk.n_rows == KV);
        CHECK(lw->wv.data == base + (size_t)(Q + KV) * row && lw->wv.n_rows == KV);
        CHECK(lw->w_gate.data == ubase && lw->w_gate.n_rows == F);
        CHECK(lw->w_up.data == ubase + (size_t)F * row && lw->w_up.n_rows == F);
        CHECK(lw->bq == b && lw->bk == b + Q && lw->bv == b + Q + KV);
        CHECK(lw->wq.row_bytes == row && lw->w_up.row_bytes == row);
    }
    /* A stage of layers [1, 2) reads its own fused tensors and not layer 0's. */
    CHECK(bt_weights_needs(g, "blk.1.attn_qkv.weight", 1, 2, L));
    CHECK(bt_weights_needs(g, "blk.1.ffn_up.weight", 1, 2, L));
    CHECK(!bt_weights_needs(g, "blk.0.attn_qkv.weight", 1, 2, L));
    CHECK(bt_weights_needs(g, "token_embd.weight", 1, 2, L)); /* tied: the head needs it */
    bt_weights_deinit(&w);
    free_all(g, buf);
}

static void test_refusals(void) {
    /* An ffn_up with n_ff rows and no ffn_gate is neither layout: named with its shape. */
    spec s = {.arch = "phi3", .fused_qkv = true, .fused_up = true, .up_rows = F};
    refused(&s, BT_ERR_FORMAT, "blk.0.ffn_up.weight", "want [64, 192]");
    spec swa = {.arch = "qwen2", .extra_key = "attention.sliding_window"};
    refused(&swa, BT_ERR_UNSUPPORTED, "qwen2.attention.sliding_window", "qwen2");
    spec soft = {.arch = "qwen3", .qk_norm = true, .extra_key = "attention.logit_softcapping"};
    refused(&soft, BT_ERR_UNSUPPORTED, "qwen3.attention.logit_softcapping", NULL);
    spec longrope = {.arch = "phi3",
                     .fused_qkv = true,
                     .fused_up = true,
                     .up_rows = 2 * F,
                     .extra_tensor = "rope_factors_long.weight"};
    refused(&longrope, BT_ERR_UNSUPPORTED, "hparams: tensor rope_factors_long.weight", NULL);
    spec other = {.arch = "gpt2"};
    refused(&other, BT_ERR_UNSUPPORTED, "'gpt2' is not supported", "llama, qwen2, qwen3, phi3");
    /* Phi-3's sliding window is ignored, as llama.cpp ignores it: the file loads. */
    spec phi_swa = {.arch = "phi3",
                    .fused_qkv = true,
                    .fused_up = true,
                    .up_rows = 2 * F,
                    .extra_key = "attention.sliding_window"};
    bt_gguf *g;
    uint8_t *buf = NULL;
    bt_hparams hp;
    bt_weights w;
    bt_error err;
    bt_error_init(&err);
    bt_status st = load(&phi_swa, &g, &buf, &hp, &w, &err);
    CHECK_EQ_INT(st, BT_OK);
    if (st == BT_OK)
        bt_weights_deinit(&w);
    free_all(g, buf);
}

int main(void) {
    test_archs_load();
    test_phi3_views();
    test_refusals();
    return check_finish();
}
