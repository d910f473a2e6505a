/*
 * token.h - the tokenizer's plain types: token ids, attributes, vocabulary kinds and the
 * opaque bt_vocab. No functions, so every tokenizer level (vocab_map, bpe, spm, vocab) can
 * include it without depending on the one above; users include vocab.h, which includes this.
 */
#ifndef BT_TOKEN_H
#define BT_TOKEN_H

#define BT_TOKEN_NULL (-1)

/* Token attributes (bit set), as llama.cpp's llama_token_attr. */
enum {
    BT_TOKEN_ATTR_UNDEFINED = 0,
    BT_TOKEN_ATTR_UNKNOWN = 1 << 0,
    BT_TOKEN_ATTR_UNUSED = 1 << 1,
    BT_TOKEN_ATTR_NORMAL = 1 << 2,
    BT_TOKEN_ATTR_CONTROL = 1 << 3,
    BT_TOKEN_ATTR_USER_DEFINED = 1 << 4,
    BT_TOKEN_ATTR_BYTE = 1 << 5,
    /* Whitespace beside the special token's text is dropped when the input is split at it
     * (left of it / right of it); set by model name, as llama.cpp does (Phi-3: RSTRIP). */
    BT_TOKEN_ATTR_LSTRIP = 1 << 7,
    BT_TOKEN_ATTR_RSTRIP = 1 << 8,
};

typedef enum bt_vocab_kind {
    BT_VOCAB_BPE, /* tokenizer.ggml.model "gpt2" */
    BT_VOCAB_SPM, /* tokenizer.ggml.model "llama" */
} bt_vocab_kind;

typedef struct bt_vocab bt_vocab;

#endif
