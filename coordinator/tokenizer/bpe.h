/*
 * bpe.h - byte-level BPE (tokenizer.ggml.model "gpt2"): the pre-tokenizer and the merging of
 * one text fragment. PRIVATE to the tokenizer; called by vocab.c only.
 *
 * Dependencies: bpe.c uses vocab_map.h (layout, lookups) and PCRE2, never vocab.c.
 */
#ifndef BT_BPE_H
#define BT_BPE_H

#include <stddef.h>

#include "status.h"
#include "vocab_map.h"

/* Compiles the regexes of pre-tokenizer `pre` into v (BT_ERR_UNSUPPORTED naming an unknown
 * name) and sets its flags (clean_spaces, ignore_merges, add_bos). */
bt_status bt_bpe_init(bt_vocab *v, const char *pre, bt_error *err);
void bt_bpe_deinit(bt_vocab *v); /* frees the regexes; safe after a failed init */
/* Appends the ids of text[0..len) (no special tokens inside) to out. */
bt_status bt_bpe_tokenize(const bt_vocab *v, const char *text, size_t len, bt_tok_out *out,
                          bt_error *err);

#endif
