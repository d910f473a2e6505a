/*
 * hparams.h - hyper-parameters of a model, read from the GGUF `<arch>.*` keys (model-format.md
 * section 2; <arch> is general.architecture) and validated so that the rest of the worker can
 * rely on them: positive sizes inside hard limits, n_head a multiple of n_head_kv, rope
 * dimension equal to the head dimension, every matrix width a multiple of 32 (the q8 block).
 *
 * Immutable after bt_hparams_load; any thread may read it.
 */
#ifndef BT_HPARAMS_H
#define BT_HPARAMS_H

#include <stdbool.h>

#include "gguf.h"
#include "status.h"

#define BT_HPARAMS_MAX_LAYERS 1024
#define BT_HPARAMS_MAX_EMBD 65536
#define BT_HPARAMS_MAX_FF (1 << 20)
#define BT_HPARAMS_MAX_HEADS 1024
#define BT_HPARAMS_MAX_HEAD_DIM 1024
#define BT_HPARAMS_MAX_VOCAB (1 << 22)

/* Every architecture baton knows by its general.architecture name (X(ENUM, "name")). The
 * keys of each are read under its name ("qwen2.block_count"); what differs in the forward pass
 * is in bt_hparams' fields, not in tests of the architecture. */
#define BT_ARCH_LIST(X)                                                                            \
    X(LLAMA, "llama")                                                                              \
    X(QWEN2, "qwen2")                                                                              \
    X(QWEN3, "qwen3")                                                                              \
    X(PHI3, "phi3")                                                                                \
    X(GEMMA3, "gemma3")

#define BT_ARCH_ENUM(e, name) BT_ARCH_##e,
typedef enum bt_arch { BT_ARCH_LIST(BT_ARCH_ENUM) BT_ARCH_COUNT } bt_arch;
#undef BT_ARCH_ENUM

/* "llama", ...; "?" out of range. */
const char *bt_arch_name(bt_arch a);

/* The activation of the gated FFN: act(gate) * up. */
typedef enum bt_ffn_act {
    BT_FFN_SILU = 0, /* SwiGLU (llama, Qwen, Phi-3) */
    BT_FFN_GELU,     /* GeGLU with the tanh approximation of GELU (Gemma), evaluated as ggml
                        does: through a table indexed by the f16 rounding of the input */
} bt_ffn_act;

typedef struct bt_hparams {
    bt_arch arch;          /* general.architecture */
    int n_layer;           /* <arch>.block_count */
    int n_embd;            /* <arch>.embedding_length */
    int n_ff;              /* <arch>.feed_forward_length */
    int n_head;            /* <arch>.attention.head_count */
    int n_head_kv;         /* <arch>.attention.head_count_kv (default n_head) */
    int head_dim;          /* <arch>.attention.key_length (default n_embd / n_head) */
    int n_vocab;           /* <arch>.vocab_size, else the length of tokenizer.ggml.tokens */
    int n_ctx_train;       /* <arch>.context_length (0 if absent) */
    float rope_base;       /* <arch>.rope.freq_base (default 10000) */
    float rope_freq_scale; /* 1 / <arch>.rope.scaling.factor (default 1) */
    float rms_eps;         /* <arch>.attention.layer_norm_rms_epsilon */
    bool rope_neox;        /* rope rotates pairs (i, i + head_dim/2), not (2i, 2i+1): GPT-NeoX
                              style, as Qwen, Phi-3 and Gemma (ggml's LLAMA_ROPE_TYPE_NEOX) */

    /* Gemma 3 (each a plain value for the other architectures, so that the forward pass tests
     * these fields, never the architecture). */
    float embd_scale;    /* token embeddings are multiplied by it: sqrtf(n_embd) (Gemma), else 1 */
    bool post_norms;     /* RMS norms of the attention and FFN outputs before each residual add
                            (blk.N.post_attention_norm, blk.N.post_ffw_norm) */
    bt_ffn_act ffn_act;  /* BT_FFN_SILU but for Gemma */
    int sliding_window;  /* <arch>.attention.sliding_window: a local layer's query at p sees
                            keys p - sliding_window < p0 <= p (llama.cpp's is_masked_swa
                            STANDARD); 0: every layer global */
    int swa_pattern;     /* <arch>.attention.sliding_window_pattern (Gemma 3: 6): layer il is
                            local iff il % swa_pattern < swa_pattern - 1, as llama.cpp's
                            set_swa_pattern; 0 with a window: every layer local */
    float rope_base_swa; /* <arch>.rope.freq_base_swa (default 10000): local layers' rope base */
    float attn_scale;    /* query scale of attention: 1/sqrt(head_dim), except Gemma 3 27B's
                            1/sqrt(n_embd/n_head) (query_pre_attn_scalar) */
    float logit_softcap; /* <arch>.final_logit_softcapping: logits = c tanh(logits / c); 0 none */
} bt_hparams;

/* Fills *out from g; BT_ERR_UNSUPPORTED for another architecture, BT_ERR_FORMAT (message
 * naming the key and value) for a missing or inconsistent value. */
bt_status bt_hparams_load(const bt_gguf *g, bt_hparams *out, bt_error *err);

/* The context used when none is asked for: the trained one, at most 4096 tokens. */
static inline int bt_hparams_default_ctx(const bt_hparams *hp) {
    return hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
}

/* Whether layer il (global index) attends over a sliding window (bt_hparams.sliding_window). */
static inline bool bt_hparams_is_swa(const bt_hparams *hp, int il) {
    if (hp->sliding_window <= 0)
        return false;
    return hp->swa_pattern <= 0 || il % hp->swa_pattern < hp->swa_pattern - 1;
}

static inline int bt_hparams_q_dim(const bt_hparams *hp) {
    return hp->n_head * hp->head_dim;
}
static inline int bt_hparams_kv_dim(const bt_hparams *hp) {
    return hp->n_head_kv * hp->head_dim;
}

#endif
