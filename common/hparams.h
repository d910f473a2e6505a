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
} bt_hparams;

/* Fills *out from g; BT_ERR_UNSUPPORTED for another architecture, BT_ERR_FORMAT (message
 * naming the key and value) for a missing or inconsistent value. */
bt_status bt_hparams_load(const bt_gguf *g, bt_hparams *out, bt_error *err);

/* The context used when none is asked for: the trained one, at most 4096 tokens. */
static inline int bt_hparams_default_ctx(const bt_hparams *hp) {
    return hp->n_ctx_train > 0 && hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
}

static inline int bt_hparams_q_dim(const bt_hparams *hp) {
    return hp->n_head * hp->head_dim;
}
static inline int bt_hparams_kv_dim(const bt_hparams *hp) {
    return hp->n_head_kv * hp->head_dim;
}

#endif
