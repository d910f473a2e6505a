/*
 * hparams.c - reading and validating the <arch>.* hyper-parameters.
 */
#include "hparams.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define BT_ARCH_NAME(e, name) name,
static const char *const arch_names[] = {BT_ARCH_LIST(BT_ARCH_NAME)};
#undef BT_ARCH_NAME

const char *bt_arch_name(bt_arch a) {
    return (unsigned)a < BT_ARCH_COUNT ? arch_names[a] : "?";
}

/* The architectures whose forward pass is complete (the others are refused at load). Qwen 2,
 * Qwen 3 and Phi-3 differ from llama only in what their files hold (biases, Q/K norms, fused
 * tensors: worker/weights.c) and in NeoX rope; the rest of their keys are llama's. */
static bool arch_supported(bt_arch a) {
    return a == BT_ARCH_LLAMA || a == BT_ARCH_QWEN2 || a == BT_ARCH_QWEN3 || a == BT_ARCH_PHI3 ||
           a == BT_ARCH_GEMMA3;
}

/* Key "<arch>.<suffix>" in buf (every key name is far shorter than buf). */
static const char *akey(char *buf, size_t size, bt_arch a, const char *suffix) {
    snprintf(buf, size, "%s.%s", bt_arch_name(a), suffix);
    return buf;
}

/* Tensors that change the result in ways baton does not implement, refused by name rather
 * than ignored: Phi-3's longrope factors (its 128k files) and an output bias. Checked here,
 * where the coordinator reads the whole file, because a stage's slice would not carry them. */
static bt_status refuse_unsupported_tensors(const bt_gguf *g, bt_error *err) {
    static const char *const names[] = {"rope_factors_long.weight", "rope_factors_short.weight",
                                        "output.bias"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (bt_gguf_find_tensor(g, names[i]))
            return bt_error_set(err, BT_ERR_UNSUPPORTED, "hparams: tensor %s is not supported",
                                names[i]);
    return BT_OK;
}

/* Keys of Qwen 2/3 and Phi-3 that change their forward pass in ways baton does not implement:
 * refused by name rather than run wrong (llama's files are checked as they always were;
 * Gemma 3 reads its own). Phi-3's sliding window is not among them: llama.cpp ignores it
 * too ("Phi SWA is currently disabled"), so ignoring it stays equal to llama.cpp. */
static bt_status refuse_unsupported_keys(const bt_gguf *g, bt_arch a, bt_error *err) {
    static const char *const keys[] = {"attention.sliding_window", "rope.scaling.attn_factor",
                                       "rope.scaling.original_context_length",
                                       "attention.logit_softcapping"};
    char k[96];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (a == BT_ARCH_PHI3 && i == 0)
            continue;
        if (bt_gguf_find_kv(g, akey(k, sizeof k, a, keys[i])) >= 0)
            return bt_error_set(err, BT_ERR_UNSUPPORTED,
                                "hparams: %s is set; baton does not implement it for %s", k,
                                bt_arch_name(a));
    }
    return BT_OK;
}

static bt_status get_int(const bt_gguf *g, const char *key, int64_t lo, int64_t hi, int *out,
                         bt_error *err) {
    int64_t v;
    bt_status st = bt_gguf_get_i64(g, key, &v, err);
    if (st != BT_OK)
        return st;
    if (v < lo || v > hi)
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s = %lld not in [%lld, %lld]", key,
                            (long long)v, (long long)lo, (long long)hi);
    *out = (int)v;
    return BT_OK;
}

/* Optional integer key: leaves *out unchanged when absent. */
static bt_status get_int_opt(const bt_gguf *g, const char *key, int64_t lo, int64_t hi, int *out,
                             bt_error *err) {
    if (bt_gguf_find_kv(g, key) < 0)
        return BT_OK;
    return get_int(g, key, lo, hi, out, err);
}

static bt_status get_f32_opt(const bt_gguf *g, const char *key, float *out, bt_error *err) {
    if (bt_gguf_find_kv(g, key) < 0)
        return BT_OK;
    bt_status st = bt_gguf_get_f32(g, key, out, err);
    if (st != BT_OK)
        return st;
    if (!isfinite(*out))
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s = %g is not finite", key, *out);
    return BT_OK;
}

/* Gemma 3's steps (llama.cpp's llama_model_gemma3): embeddings times sqrt(n_embd), post norms,
 * GeGLU, sliding-window attention on five layers of six with their own rope base, and the
 * query scale of query_pre_attn_scalar. */
static bt_status load_gemma3(const bt_gguf *g, bt_hparams *hp, bt_error *err) {
    char k[96];
    bt_status st;
    hp->embd_scale = sqrtf((float)hp->n_embd);
    hp->post_norms = true;
    hp->ffn_act = BT_FFN_GELU;
    hp->swa_pattern = 6;
    if ((st = get_int_opt(g, akey(k, sizeof k, hp->arch, "attention.sliding_window"), 0, INT32_MAX,
                          &hp->sliding_window, err)))
        return st;
    snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", bt_arch_name(hp->arch));
    if (bt_gguf_find_kv(g, k) >= 0) {
        int64_t v;
        if (bt_gguf_get_i64(g, k, &v, NULL) != BT_OK)
            return bt_error_set(err, BT_ERR_UNSUPPORTED,
                                "hparams: %s is not an integer (a per-layer array is not "
                                "supported)",
                                k);
        if (v < 0 || v > BT_HPARAMS_MAX_LAYERS)
            return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s = %lld not in [0, %d]", k,
                                (long long)v, BT_HPARAMS_MAX_LAYERS);
        hp->swa_pattern = (int)v;
    }
    if ((st = get_f32_opt(g, akey(k, sizeof k, hp->arch, "rope.freq_base_swa"), &hp->rope_base_swa,
                          err)) ||
        (st = get_f32_opt(g, akey(k, sizeof k, hp->arch, "final_logit_softcapping"),
                          &hp->logit_softcap, err)))
        return st;
    if (!(hp->rope_base_swa > 0.0f))
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s.rope.freq_base_swa %g <= 0",
                            bt_arch_name(hp->arch), hp->rope_base_swa);
    if (hp->logit_softcap < 0.0f)
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s.final_logit_softcapping %g < 0",
                            bt_arch_name(hp->arch), hp->logit_softcap);
    /* llama.cpp (gemma_pytorch config.py): the 27B model, and only it, scales queries by
     * 1/sqrt(n_embd / n_head) instead of 1/sqrt(head_dim). */
    if (hp->n_layer == 62)
        hp->attn_scale = 1.0f / sqrtf((float)(hp->n_embd / hp->n_head));
    return BT_OK;
}

bt_status bt_hparams_load(const bt_gguf *g, bt_hparams *out, bt_error *err) {
    bt_hparams hp;
    memset(&hp, 0, sizeof(hp));
    bt_str arch;
    bt_status st = bt_gguf_get_str(g, "general.architecture", &arch, err);
    if (st != BT_OK)
        return st;
    hp.arch = BT_ARCH_COUNT;
    for (int a = 0; a < BT_ARCH_COUNT; a++)
        if (arch.len == strlen(arch_names[a]) && memcmp(arch.ptr, arch_names[a], arch.len) == 0)
            hp.arch = (bt_arch)a;
    if (hp.arch == BT_ARCH_COUNT || !arch_supported(hp.arch)) {
        char runs[128] = "";
        for (int a = 0; a < BT_ARCH_COUNT; a++)
            if (arch_supported((bt_arch)a))
                snprintf(runs + strlen(runs), sizeof runs - strlen(runs), "%s%s",
                         runs[0] ? ", " : "", arch_names[a]);
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "hparams: general.architecture '%.*s' is not supported (baton runs: "
                            "%s)",
                            (int)(arch.len > 64 ? 64 : arch.len), arch.ptr, runs);
    }
    char k[96];
#define KEY(suffix) akey(k, sizeof k, hp.arch, suffix)
    hp.rope_neox = hp.arch != BT_ARCH_LLAMA;
    hp.embd_scale = 1.0f;
    hp.ffn_act = BT_FFN_SILU;
    hp.rope_base_swa = 10000.0f;
    if ((hp.arch == BT_ARCH_QWEN2 || hp.arch == BT_ARCH_QWEN3 || hp.arch == BT_ARCH_PHI3) &&
        (st = refuse_unsupported_keys(g, hp.arch, err)))
        return st;
    if ((st = refuse_unsupported_tensors(g, err)))
        return st;

    if ((st = get_int(g, KEY("block_count"), 1, BT_HPARAMS_MAX_LAYERS, &hp.n_layer, err)) ||
        (st = get_int(g, KEY("embedding_length"), 1, BT_HPARAMS_MAX_EMBD, &hp.n_embd, err)) ||
        (st = get_int(g, KEY("feed_forward_length"), 1, BT_HPARAMS_MAX_FF, &hp.n_ff, err)) ||
        (st = get_int(g, KEY("attention.head_count"), 1, BT_HPARAMS_MAX_HEADS, &hp.n_head, err)))
        return st;
    hp.n_head_kv = hp.n_head;
    if ((st = get_int_opt(g, KEY("attention.head_count_kv"), 1, BT_HPARAMS_MAX_HEADS, &hp.n_head_kv,
                          err)))
        return st;
    if (hp.n_head % hp.n_head_kv != 0)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "hparams: %s.attention.head_count %d is not a multiple of "
                            "head_count_kv %d",
                            bt_arch_name(hp.arch), hp.n_head, hp.n_head_kv);
    hp.head_dim = hp.n_embd / hp.n_head;
    if (bt_gguf_find_kv(g, KEY("attention.key_length")) < 0 && hp.n_embd % hp.n_head != 0)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "hparams: embedding_length %d not a multiple of head_count %d",
                            hp.n_embd, hp.n_head);
    if ((st = get_int_opt(g, KEY("attention.key_length"), 1, BT_HPARAMS_MAX_HEAD_DIM, &hp.head_dim,
                          err)))
        return st;
    int v_len = hp.head_dim;
    if ((st = get_int_opt(g, KEY("attention.value_length"), 1, BT_HPARAMS_MAX_HEAD_DIM, &v_len,
                          err)))
        return st;
    if (v_len != hp.head_dim)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "hparams: %s.attention.value_length %d != key_length %d",
                            bt_arch_name(hp.arch), v_len, hp.head_dim);
    if (hp.head_dim % 2 != 0 || hp.head_dim > BT_HPARAMS_MAX_HEAD_DIM)
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: head dimension %d is odd or too large",
                            hp.head_dim);
    int n_rot = hp.head_dim;
    if ((st = get_int_opt(g, KEY("rope.dimension_count"), 1, BT_HPARAMS_MAX_HEAD_DIM, &n_rot, err)))
        return st;
    if (n_rot != hp.head_dim)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "hparams: %s.rope.dimension_count %d != head dimension %d",
                            bt_arch_name(hp.arch), n_rot, hp.head_dim);

    hp.n_vocab = 0;
    if (bt_gguf_find_kv(g, KEY("vocab_size")) >= 0) {
        if ((st = get_int(g, KEY("vocab_size"), 1, BT_HPARAMS_MAX_VOCAB, &hp.n_vocab, err)))
            return st;
    } else {
        uint64_t n = 0;
        if (bt_gguf_get_arr_str_len(g, "tokenizer.ggml.tokens", &n, NULL) == BT_OK && n > 0 &&
            n <= BT_HPARAMS_MAX_VOCAB)
            hp.n_vocab = (int)n;
    }
    if (hp.n_vocab == 0) {
        const bt_gguf_tensor *t = bt_gguf_find_tensor(g, "token_embd.weight");
        if (t && t->ne[1] >= 1 && t->ne[1] <= BT_HPARAMS_MAX_VOCAB)
            hp.n_vocab = (int)t->ne[1];
    }
    if (hp.n_vocab == 0)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "hparams: no vocabulary size (%s.vocab_size, tokenizer.ggml.tokens)",
                            bt_arch_name(hp.arch));
    if ((st = get_int_opt(g, KEY("context_length"), 0, INT32_MAX, &hp.n_ctx_train, err)))
        return st;

    hp.rope_base = 10000.0f;
    hp.rope_freq_scale = 1.0f;
    hp.rms_eps = 1e-5f;
    float factor = 1.0f;
    if ((st = get_f32_opt(g, KEY("rope.freq_base"), &hp.rope_base, err)) ||
        (st = get_f32_opt(g, KEY("rope.scaling.factor"), &factor, err)) ||
        (st = get_f32_opt(g, KEY("attention.layer_norm_rms_epsilon"), &hp.rms_eps, err)))
        return st;
    if (bt_gguf_find_kv(g, KEY("rope.scaling.type")) >= 0) {
        bt_str type;
        if ((st = bt_gguf_get_str(g, KEY("rope.scaling.type"), &type, err)))
            return st;
        bool none = type.len == 4 && memcmp(type.ptr, "none", 4) == 0;
        bool linear = type.len == 6 && memcmp(type.ptr, "linear", 6) == 0;
        if (!none && !linear)
            return bt_error_set(
                err, BT_ERR_UNSUPPORTED, "hparams: %s.rope.scaling.type '%.*s' (only none, linear)",
                bt_arch_name(hp.arch), (int)(type.len > 32 ? 32 : type.len), type.ptr);
    }
    if (!(hp.rope_base > 0.0f))
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s.rope.freq_base %g <= 0",
                            bt_arch_name(hp.arch), hp.rope_base);
    if (!(factor > 0.0f))
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: %s.rope.scaling.factor %g <= 0",
                            bt_arch_name(hp.arch), factor);
    hp.rope_freq_scale = 1.0f / factor;
    if (!(hp.rms_eps > 0.0f) || hp.rms_eps > 1.0f)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "hparams: %s.attention.layer_norm_rms_epsilon %g not in (0, 1]",
                            bt_arch_name(hp.arch), hp.rms_eps);

    /* Activations are quantized in blocks of 32 for the decode kernels. */
    if (hp.n_embd % 32 || hp.n_ff % 32 || (hp.n_head * hp.head_dim) % 32)
        return bt_error_set(err, BT_ERR_UNSUPPORTED,
                            "hparams: n_embd %d, n_ff %d, n_head*head_dim %d must be multiples "
                            "of 32",
                            hp.n_embd, hp.n_ff, hp.n_head * hp.head_dim);
    if ((int64_t)hp.n_head * hp.head_dim > BT_HPARAMS_MAX_EMBD * 4)
        return bt_error_set(err, BT_ERR_FORMAT, "hparams: n_head*head_dim %lld too large",
                            (long long)hp.n_head * hp.head_dim);
    hp.attn_scale = 1.0f / sqrtf((float)hp.head_dim);
    if (hp.arch == BT_ARCH_GEMMA3 && (st = load_gemma3(g, &hp, err)))
        return st;
    *out = hp;
    return BT_OK;
}
