/*
 * spm.h - SentencePiece-style merging of one text fragment (tokenizer.ggml.model "llama").
 * PRIVATE to the tokenizer; called by vocab.c only.
 *
 * Dependencies: spm.c uses vocab_map.h (layout, lookups), never vocab.c.
 */
#ifndef BT_SPM_H
#define BT_SPM_H

#include <stddef.h>

#include "status.h"
#include "vocab_map.h"

/* Appends the ids of text[0..len) to out; the caller has already escaped spaces as U+2581
 * and added the prefix space. */
bt_status bt_spm_tokenize(const bt_vocab *v, const char *text, size_t len, bt_tok_out *out,
                          bt_error *err);

#endif
