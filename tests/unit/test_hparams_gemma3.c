/*
 * test_hparams_gemma3.c - the Gemma 3 hyper-parameters (common/hparams.c, load_gemma3) from
 * GGUF metadata written here: which layers are local (llama.cpp's set_swa_pattern: il % n <
 * n - 1, default n = 6; 0 makes every layer local), the local layers' rope base (default
 * 10000), the embedding scale sqrtf(n_embd), post norms, GeGLU, the query scale (1/sqrt of the
 * head size, but 1/sqrt(n_embd / n_head) for the 62-layer 27B), the logit softcap; a llama
 * file keeps the plain values; bad values are refused naming the key.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf_writer.h"
#include "hparams.h"

/* Metadata of a gemma3 file with n_layer layers; extra(w) adds keys. */
static bt_status load(const char *arch, int n_layer, void (*extra)(bt_gw *), bt_hparams *hp,
                      bt_error *err) {
    char k[96];
    bt_gw *w = bt_gw_new();
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", arch, s), k)
    bt_gw_add_str(w, "general.architecture", arch);
    bt_gw_add_u32(w, KEY("block_count"), (uint32_t)n_layer);
    bt_gw_add_u32(w, KEY("embedding_length"), 640);
    bt_gw_add_u32(w, KEY("feed_forward_length"), 2048);
    bt_gw_add_u32(w, KEY("attention.head_count"), 4);
    bt_gw_add_u32(w, KEY("attention.head_count_kv"), 1);
    bt_gw_add_u32(w, KEY("attention.key_length"), 256);
    bt_gw_add_u32(w, KEY("attention.value_length"), 256);
    bt_gw_add_f32(w, KEY("rope.freq_base"), 1e6f);
    bt_gw_add_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    bt_gw_add_u32(w, KEY("vocab_size"), 1024);
    if (strcmp(arch, "gemma3") == 0)
        bt_gw_add_u32(w, KEY("attention.sliding_window"), 512);
#undef KEY
    if (extra)
        extra(w);
    uint8_t *buf = NULL;
    size_t size = 0;
    bt_gguf *g = NULL;
    bt_status st = bt_gw_write_mem(w, &buf, &size, NULL);
    bt_gw_free(w);
    if (st != BT_OK)
        bt_error_set(err, st, "test: cannot write the GGUF");
    if (st == BT_OK)
        st = bt_gguf_open_memory(buf, size, &g, err);
    if (st == BT_OK)
        st = bt_hparams_load(g, hp, err);
    bt_gguf_free(g);
    free(buf);
    return st;
}

static void pattern_3(bt_gw *w) {
    bt_gw_add_u32(w, "gemma3.attention.sliding_window_pattern", 3);
}
static void pattern_0(bt_gw *w) {
    bt_gw_add_u32(w, "gemma3.attention.sliding_window_pattern", 0);
}
static void pattern_array(bt_gw *w) {
    const uint8_t is_swa[4] = {1, 1, 1, 0};
    bt_gw_add_arr(w, "gemma3.attention.sliding_window_pattern", BT_GGUF_BOOL, is_swa, 4);
}
static void rope_swa_and_softcap(bt_gw *w) {
    bt_gw_add_f32(w, "gemma3.rope.freq_base_swa", 20000.0f);
    bt_gw_add_f32(w, "gemma3.final_logit_softcapping", 30.0f);
}
static void softcap_negative(bt_gw *w) {
    bt_gw_add_f32(w, "gemma3.final_logit_softcapping", -1.0f);
}

int main(void) {
    bt_error err;
    bt_error_init(&err);
    bt_hparams hp;

    /* Gemma 3 270M's keys: 15 local layers of 18, the global ones 5, 11, 17. */
    CHECK_OK(load("gemma3", 18, NULL, &hp, &err));
    CHECK(hp.arch == BT_ARCH_GEMMA3);
    CHECK_EQ_INT(hp.sliding_window, 512);
    CHECK_EQ_INT(hp.swa_pattern, 6);
    int n_swa = 0;
    for (int il = 0; il < 18; il++) {
        n_swa += bt_hparams_is_swa(&hp, il);
        CHECK(bt_hparams_is_swa(&hp, il) == (il != 5 && il != 11 && il != 17));
    }
    CHECK_EQ_INT(n_swa, 15);
    CHECK(hp.rope_base == 1e6f && hp.rope_base_swa == 10000.0f);
    CHECK(hp.embd_scale == sqrtf(640.0f));
    CHECK(hp.post_norms && hp.ffn_act == BT_FFN_GELU && hp.rope_neox);
    CHECK(hp.attn_scale == 1.0f / 16.0f);
    CHECK(hp.logit_softcap == 0.0f);

    /* The pattern and the other optional keys when present. */
    CHECK_OK(load("gemma3", 18, pattern_3, &hp, &err));
    CHECK(bt_hparams_is_swa(&hp, 0) && bt_hparams_is_swa(&hp, 1) && !bt_hparams_is_swa(&hp, 2));
    CHECK_OK(load("gemma3", 18, pattern_0, &hp, &err));
    for (int il = 0; il < 18; il++)
        CHECK(bt_hparams_is_swa(&hp, il));
    CHECK_OK(load("gemma3", 18, rope_swa_and_softcap, &hp, &err));
    CHECK(hp.rope_base_swa == 20000.0f && hp.logit_softcap == 30.0f);

    /* The 27B (62 layers) scales queries by 1/sqrt(n_embd / n_head) = 1/sqrt(160). */
    CHECK_OK(load("gemma3", 62, NULL, &hp, &err));
    CHECK(hp.attn_scale == 1.0f / sqrtf(160.0f));

    /* Refused by name: a per-layer pattern array, a negative softcap. */
    CHECK(load("gemma3", 18, pattern_array, &hp, &err) == BT_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "gemma3.attention.sliding_window_pattern is not an integer") != NULL);
    bt_error_init(&err);
    CHECK(load("gemma3", 18, softcap_negative, &hp, &err) == BT_ERR_FORMAT);
    CHECK(strstr(err.msg, "gemma3.final_logit_softcapping -1 < 0") != NULL);

    /* llama keeps the plain pass: no window, SwiGLU, no post norms, embeddings unscaled. */
    bt_error_init(&err);
    CHECK_OK(load("llama", 18, NULL, &hp, &err));
    CHECK(hp.sliding_window == 0 && !bt_hparams_is_swa(&hp, 0));
    CHECK(hp.embd_scale == 1.0f && !hp.post_norms && hp.ffn_act == BT_FFN_SILU);
    CHECK(hp.attn_scale == 1.0f / 16.0f && hp.logit_softcap == 0.0f);
    return check_finish();
}
