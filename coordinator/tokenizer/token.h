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
};

typedef enum bt_vocab_kind {
    BT_VOCAB_BPE, /* tokenizer.ggml.model "gpt2" */
    BT_VOCAB_SPM, /* tokenizer.ggml.model "llama" */
} bt_vocab_kind;

typedef struct bt_vocab bt_vocab;

#endif
