/*
 * vocab_map.h - PRIVATE to the tokenizer: the bt_vocab layout and its lookup tables, the
 * lowest unit of the tokenizer files. Everyone outside includes vocab.h and detok.h.
 *
 * Dependencies point one way (nothing calls up):
 *   vocab.c  -> bpe.h, spm.h, vocab_map.h   load, special-token partition, bt_tokenize,
 *                                           pieces, bt_detokenize
 *   bpe.c    -> vocab_map.h                 pre-tokenizer regexes (PCRE2) + byte-level BPE
 *   spm.c    -> vocab_map.h                 SentencePiece-style merging
 *   vocab_map.c -> token.h only             hashing, UTF-8, text -> id, merge -> rank
 * token.h holds the plain types (ids, attributes, kinds) every level shares; it has no
 * implementation.
 *
 * Invariant after load: every token with a non-empty text is in the text map; map ids and
 * merge ranks are in range; pieces[] holds token_to_piece(id, special = true) for every id.
 * The pre-tokenizer fields are written by bt_bpe_init (bpe.c) during load and read-only after.
 */
#ifndef BT_VOCAB_MAP_H
#define BT_VOCAB_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"
#include "token.h"

typedef struct pcre2_real_code_8 bt_pcre2_code;

#define BT_PRE_MAX_REGEX 4

/* Open-addressing hash map from a borrowed string to an int32 value. Keys are not stored:
 * the map holds ids, and a key function turns an id back into its text. */
typedef struct bt_strmap {
    int32_t *slots; /* [cap] id or -1 */
    uint32_t cap;   /* power of two */
} bt_strmap;

struct bt_vocab {
    bt_vocab_kind kind;
    int32_t n_tokens;
    const bt_str *text; /* [n_tokens] borrowed from the gguf */
    float *score;       /* [n_tokens] */
    uint32_t *attr;     /* [n_tokens] BT_TOKEN_ATTR_* */
    bt_strmap token_map;

    /* BPE merges: merge i is text[..split] " " text[split+1..]; rank = i. */
    uint64_t n_merges;
    const bt_str *merge;   /* [n_merges] borrowed */
    uint32_t *merge_split; /* [n_merges] byte offset of the separating space */
    bt_strmap merge_map;

    /* Pre-tokenizer (BPE). */
    char pre_name[64];
    int n_regex;
    bt_pcre2_code *regex[BT_PRE_MAX_REGEX];
    bool ignore_merges;
    bool clean_spaces;
    bool add_space_prefix;

    int32_t bos, eos, eot, eom, unk, sep, pad, nl;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    bool add_bos, add_eos;

    int32_t *eog; /* [n_eog] ascending */
    size_t n_eog;
    int32_t *specials; /* [n_specials] CONTROL|USER_DEFINED|UNKNOWN ids, longest text first */
    size_t n_specials;

    char *pieces;        /* decoded pieces, concatenated */
    uint32_t *piece_off; /* [n_tokens + 1] */
    size_t max_piece;

    /* Byte-level map: byte -> UTF-8 of its code point (<= 2 bytes), and the inverse for
     * code points U+0000..U+0143 (-1 when a code point is not a mapped byte). */
    char byte_utf8[256][2];
    uint8_t byte_utf8_len[256];
    int16_t cpt_to_byte[0x144];
};

/* Output sink: ids past cap are counted, not written. */
typedef struct bt_tok_out {
    int32_t *ids;
    size_t cap;
    size_t n;
} bt_tok_out;

static inline void bt_tok_out_push(bt_tok_out *o, int32_t id) {
    if (o->n < o->cap)
        o->ids[o->n] = id;
    o->n++;
}

/* A binary heap over a work struct's `heap` array (capacity is the caller's) and `n_heap`
 * count: defines static prefix##_push(W *, T) and prefix##_pop(W *) for elements of type T,
 * where before(&a, &b) says a leaves the heap first. Used by the BPE and SPM merge loops. */
#define BT_DEFINE_HEAP(prefix, W, T, before)                                                       \
    static void prefix##_push(W *w, T b) {                                                         \
        size_t i = w->n_heap++;                                                                    \
        while (i > 0) {                                                                            \
            size_t p = (i - 1) / 2;                                                                \
            if (!before(&b, &w->heap[p]))                                                          \
                break;                                                                             \
            w->heap[i] = w->heap[p];                                                               \
            i = p;                                                                                 \
        }                                                                                          \
        w->heap[i] = b;                                                                            \
    }                                                                                              \
    static T prefix##_pop(W *w) {                                                                  \
        T top = w->heap[0];                                                                        \
        T last = w->heap[--w->n_heap];                                                             \
        size_t i = 0, n = w->n_heap;                                                               \
        for (;;) {                                                                                 \
            size_t c = 2 * i + 1;                                                                  \
            if (c >= n)                                                                            \
                break;                                                                             \
            if (c + 1 < n && before(&w->heap[c + 1], &w->heap[c]))                                 \
                c++;                                                                               \
            if (!before(&w->heap[c], &last))                                                       \
                break;                                                                             \
            w->heap[i] = w->heap[c];                                                               \
            i = c;                                                                                 \
        }                                                                                          \
        if (n > 0)                                                                                 \
            w->heap[i] = last;                                                                     \
        return top;                                                                                \
    }

/* vocab_map.c */
uint32_t bt_vocab_hash(const char *s, size_t n, uint32_t h);
#define BT_HASH_SEED 2166136261u
/* The id of the token whose text is s[0..n), or BT_TOKEN_NULL. */
int32_t bt_vocab_lookup(const bt_vocab *v, const char *s, size_t n);
/* Rank of merge (left, right), or -1. */
int32_t bt_vocab_merge_rank(const bt_vocab *v, const char *l, size_t ln, const char *r, size_t rn);
/* Decodes one UTF-8 sequence at s[0..n): returns its length (1..4) and the code point, or 0
 * when the bytes at s are not a valid sequence (strict: no overlongs or surrogates). */
size_t bt_utf8_decode(const unsigned char *s, size_t n, uint32_t *cpt);
/* Length of a UTF-8 sequence from its lead byte, as llama.cpp's unicode_len_utf8. */
size_t bt_utf8_len_lead(unsigned char c);
/* Writes the UTF-8 of code point cp (<= U+10FFFF) to out[0..4): returns its length. */
size_t bt_utf8_encode(uint32_t cp, char *out);
/* An empty map with room for n keys (slots all -1). BT_ERR_LIMIT / BT_ERR_NOMEM. */
bt_status bt_strmap_init(bt_strmap *m, uint64_t n, bt_error *err);

#endif
