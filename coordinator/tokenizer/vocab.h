/*
 * vocab.h - the tokenizer: vocabulary from a GGUF's tokenizer.* keys, text -> token ids,
 * token ids -> text.
 *
 * Owns: per-token attributes and scores, the hash maps text -> id and BPE merge -> rank,
 * the compiled pre-tokenizer regexes, the special-token list and the decoded piece of every
 * token. Token texts and merge strings are BORROWED from the bt_gguf: the bt_gguf must
 * outlive the bt_vocab.
 *
 * Supported: tokenizer.ggml.model "gpt2" (byte-level BPE, pre-tokenizers of the gpt-2,
 * llama3, smollm/starcoder and qwen2 families and "default") and "llama" (SentencePiece-style
 * with byte fallback). Other models and unknown pre names are refused at load.
 * Behaviour follows llama.cpp's llama-vocab.cpp (see model-format.md section 4).
 *
 * Callers: the coordinator (prompt tokenization, chat template, stop tokens, output text).
 * Threading: a bt_vocab is immutable after load; any thread may tokenize concurrently.
 * bt_tokenize allocates scratch proportional to the input for the duration of the call
 * (per request, never per generated token); bt_token_to_piece never allocates.
 */
#ifndef BT_VOCAB_H
#define BT_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"
#include "token.h"

/* Loads the vocabulary from g's tokenizer.* keys. On success *out is owned by the caller
 * (bt_vocab_free) and borrows strings from g, which must stay open until then. On failure
 * *out is NULL and err names the key and value (BT_ERR_UNSUPPORTED for an unknown model or
 * pre-tokenizer name, BT_ERR_FORMAT for malformed arrays, duplicate tokens, ...). */
bt_status bt_vocab_load(const bt_gguf *g, bt_vocab **out, bt_error *err);
void bt_vocab_free(bt_vocab *v); /* NULL is a no-op */

bt_vocab_kind bt_vocab_kind_get(const bt_vocab *v);
int32_t bt_vocab_n_tokens(const bt_vocab *v);
/* Special ids, BT_TOKEN_NULL when the vocabulary has none. */
int32_t bt_vocab_bos(const bt_vocab *v);
int32_t bt_vocab_eos(const bt_vocab *v);
int32_t bt_vocab_eot(const bt_vocab *v);
int32_t bt_vocab_unk(const bt_vocab *v);
int32_t bt_vocab_pad(const bt_vocab *v);
int32_t bt_vocab_nl(const bt_vocab *v); /* the token of "\n" */
bool bt_vocab_add_bos(const bt_vocab *v);
bool bt_vocab_add_eos(const bt_vocab *v);
/* End of generation: eos, eot, eom, FIM pad/rep/sep and tokens named like <|im_end|>. */
bool bt_vocab_is_eog(const bt_vocab *v, int32_t id);
/* The EOG ids, ascending; *n receives the count. Borrowed from v. */
const int32_t *bt_vocab_eog_ids(const bt_vocab *v, size_t *n);
bool bt_vocab_is_control(const bt_vocab *v, int32_t id);
uint32_t bt_vocab_token_attr(const bt_vocab *v, int32_t id); /* 0 for an out-of-range id */
/* Raw token text as stored (GPT-2 byte-mapped or with U+2581); {NULL,0} out of range. */
bt_str bt_vocab_token_text(const bt_vocab *v, int32_t id);
float bt_vocab_token_score(const bt_vocab *v, int32_t id);
/* Token id of exactly `text`, or BT_TOKEN_NULL. */
int32_t bt_vocab_find(const bt_vocab *v, const char *text, size_t len);
/* "smollm", "gpt-2", ... as in the file ("default" when absent); "" for SPM. */
const char *bt_vocab_pre_name(const bt_vocab *v);
/* Longest bt_token_to_piece output over all tokens (special = true). */
size_t bt_vocab_max_piece_bytes(const bt_vocab *v);

/* Tokenizes text[0..len) (any bytes; invalid UTF-8 is handled as llama.cpp does, never read
 * past len). add_special: prepend BOS / append EOS as the vocabulary asks (add_bos/add_eos).
 * parse_special: CONTROL tokens' texts in the input become their ids (USER_DEFINED texts
 * always do), longest first. Writes at most cap ids; *n_out receives the number of ids the
 * text needs. BT_ERR_LIMIT (message says the needed count) when that exceeds cap. */
bt_status bt_tokenize(const bt_vocab *v, const char *text, size_t len, bool add_special,
                      bool parse_special, int32_t *ids, size_t cap, size_t *n_out, bt_error *err);

/* The bytes of one token (no NUL written). special = false outputs nothing for CONTROL and
 * UNKNOWN tokens. BT_ERR_RANGE for a bad id; BT_ERR_LIMIT when cap is short (*n_out = the
 * size needed). The bytes may be a partial UTF-8 character (use bt_detok to stream). */
bt_status bt_token_to_piece(const bt_vocab *v, int32_t id, bool special, char *buf, size_t cap,
                            size_t *n_out);

/* Same bytes, borrowed from v (valid until bt_vocab_free); {"", 0} for a bad id or a
 * suppressed special. */
bt_str bt_vocab_token_piece(const bt_vocab *v, int32_t id, bool special);

/* Whole-sequence decode as llama.cpp's detokenize: remove_special drops a leading BOS and
 * trailing EOS when the vocabulary adds them; unparse_special renders CONTROL tokens; SPM
 * strips the prefix space of the first piece; pre-tokenizers with clean_spaces remove the
 * spaces before ?!., and 's 'm 're 've. BT_ERR_LIMIT with *n_out = needed when cap is short;
 * BT_ERR_RANGE for a bad id. No NUL is written. */
bt_status bt_detokenize(const bt_vocab *v, const int32_t *ids, size_t n_ids, bool remove_special,
                        bool unparse_special, char *buf, size_t cap, size_t *n_out, bt_error *err);

#endif
