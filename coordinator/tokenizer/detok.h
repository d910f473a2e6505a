/*
 * detok.h - incremental detokenizer: token ids in, complete UTF-8 characters out.
 *
 * Owns: at most 3 held-back bytes of an incomplete UTF-8 character. A byte sequence that
 * can no longer become a valid character (bad lead byte, missing continuation, overlong,
 * surrogate, > U+10FFFF) is replaced by U+FFFD per maximal subpart, as Unicode recommends;
 * an incomplete tail is held until the next push or bt_detok_flush. No allocation: the state
 * lives in the caller's bt_detok. No clean_spaces (that is a whole-text pass, bt_detokenize).
 *
 * Threading: a bt_detok is confined to one thread (one per request); the bt_vocab it reads
 * is immutable and shared.
 */
#ifndef BT_DETOK_H
#define BT_DETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"
#include "vocab.h"

typedef struct bt_detok {
    const bt_vocab *vocab; /* borrowed; must outlive the detok */
    bool special;          /* render CONTROL/UNKNOWN token texts */
    uint8_t n_pending;
    unsigned char pending[4];
} bt_detok;

/* Caller's storage; vocab must outlive d. */
void bt_detok_init(bt_detok *d, const bt_vocab *vocab, bool special);

/* Bytes an output buffer needs so that any single push or flush fits. */
size_t bt_detok_out_max(const bt_vocab *vocab);

/* Appends token id. Writes the newly completed characters to out[0..*n_out) (no NUL).
 * BT_ERR_RANGE for a bad id, BT_ERR_LIMIT when cap is short (*n_out = the bytes needed);
 * on error the state is unchanged. */
bt_status bt_detok_push(bt_detok *d, int32_t id, char *out, size_t cap, size_t *n_out);

/* Emits whatever is held back (an incomplete character becomes U+FFFD) and resets.
 * cap >= 3 always suffices. */
bt_status bt_detok_flush(bt_detok *d, char *out, size_t cap, size_t *n_out);

#endif
