/*
 * weights.h - the read-only weights of one pipeline stage: layers [layer_begin, layer_end),
 * the token embedding on the first stage, the final norm and output projection on the last.
 *
 * Every pointer points into the GGUF mapping, which the bt_gguf owns; a bt_weights borrows
 * it and must not outlive it. The one exception is a matrix's packed copy (bt_weights_pack),
 * which the bt_weights owns. Tensors are looked up by name and every shape and type is
 * checked against the hyper-parameters at load, the error naming the tensor.
 *
 * Immutable after bt_weights_load (and bt_weights_pack, where the stage calls it); any thread
 * may read it.
 */
#ifndef BT_WEIGHTS_H
#define BT_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "hparams.h"
#include "tensor_type.h"

/* A 2-D weight in GGUF order: n_rows rows of n_cols elements of `type`; y = W x gives
 * n_rows outputs from n_cols inputs. */
typedef struct bt_matrix {
    const void *data; /* [n_cols, n_rows] of `type`, rows of row_bytes; NULL when absent */
    bt_type type;
    size_t row_bytes;
    int64_t n_rows;
    int64_t n_cols;
    /* The same rows in the kernels' packed layout (kernels.h, bt_pack_rows), or NULL: what the
     * fast numerics' products read. Owned by the bt_weights (bt_weights_pack); token_embd's is
     * the tied output head's, borrowed. */
    const void *packed;
} bt_matrix;

/* wq, wk, wv are row views of one fused attn_qkv.weight, and w_gate, w_up of one
 * [n_embd, 2 n_ff] ffn_up.weight, when the file has them fused (Phi-3); bq, bk, bv then point
 * into attn_qkv.bias if the file has one. */
typedef struct bt_layer_weights {
    const float *attn_norm; /* [n_embd] F32 */
    bt_matrix wq;           /* [n_embd, n_head*head_dim] any supported type */
    bt_matrix wk;           /* [n_embd, n_head_kv*head_dim] */
    bt_matrix wv;           /* [n_embd, n_head_kv*head_dim] */
    bt_matrix wo;           /* [n_head*head_dim, n_embd] */
    const float *bq;        /* [n_head*head_dim] F32, optional (NULL) */
    const float *bk;        /* [n_head_kv*head_dim] F32, optional */
    const float *bv;        /* [n_head_kv*head_dim] F32, optional */
    const float *bo;        /* [n_embd] F32, optional */
    const float *q_norm;    /* [head_dim] F32, optional: RMS norm of each query head before
                               rope (Qwen 3, Gemma 3) */
    const float *k_norm;    /* [head_dim] F32, optional: the same for each key head */
    const float *ffn_norm;  /* [n_embd] F32 */
    bt_matrix w_gate;       /* [n_embd, n_ff] */
    bt_matrix w_up;         /* [n_embd, n_ff] */
    bt_matrix w_down;       /* [n_ff, n_embd] */

    /* Gemma 3, iff hp->post_norms (else NULL): [n_embd] F32 each, the RMS norms of the
     * attention output (blk.N.post_attention_norm) and of the FFN output (post_ffw_norm)
     * before their residual adds. */
    const float *post_attn_norm;
    const float *post_ffn_norm;
} bt_layer_weights;

typedef struct bt_weights {
    int layer_begin, layer_end; /* this stage's layers [begin, end) */
    bool has_embd;              /* first stage */
    bool has_head;              /* last stage */
    bt_matrix token_embd;       /* [n_embd, n_vocab]; when has_embd, or when has_head and tied */
    const float *output_norm;   /* [n_embd] F32; when has_head */
    bt_matrix output;           /* [n_embd, n_vocab]; when has_head (token_embd if tied) */
    const float *rope_freqs;    /* [head_dim/2] F32, optional rope frequency factors */
    bt_layer_weights *layers;   /* [layer_end - layer_begin], owned */
} bt_weights;

/* Loads the slice [layer_begin, layer_end) of g; has_embd iff layer_begin == 0, has_head iff
 * layer_end == hp->n_layer. g and hp must outlive *out. */
bt_status bt_weights_load(const bt_gguf *g, const bt_hparams *hp, int layer_begin, int layer_end,
                          bt_weights *out, bt_error *err);
void bt_weights_deinit(bt_weights *w);

/* Gives every matrix of w that the kernels read faster packed (kernels.h, bt_pack_wanted at
 * the level bt_kernels_init chose) its packed copy, for the fast numerics, and lets the pages
 * of the file's copy leave the resident set (bt_gguf_drop_pages): memory stays about the
 * size of the file's bytes. g is the bt_gguf w was loaded from. Call once, after
 * bt_weights_load and before any thread reads w; *n_bytes (optional) gets the bytes packed. */
bt_status bt_weights_pack(bt_weights *w, const bt_gguf *g, size_t *n_bytes, bt_error *err);

/* The one rule of which tensors layers [layer_begin, layer_end) of a model of n_layer layers
 * read (what bt_weights_load looks up): every tensor of blocks layer_begin..layer_end-1
 * (fused ones included), rope_freqs.weight, token_embd.weight on the first stage and, when g has no
 * output.weight (tied), on the last, output_norm.weight and output.weight on the last. A slice
 * (worker/slice.h) holds exactly these, so bt_weights_load finds in it what it finds in g. */
bool bt_weights_needs(const bt_gguf *g, const char *name, int layer_begin, int layer_end,
                      int n_layer);

/* Bytes of weight data this slice reads (for balancing and reports). */
size_t bt_weights_bytes(const bt_weights *w);

#endif
