/*
 * stop.h - stop-string matcher of one completion, on the coordinator: detokenized text in,
 * text that is final out.
 *
 * Owns: the held-back tail of the text - the longest suffix that could still be the start of
 * a stop string (at most BT_STOP_MAX_BYTES - 1 bytes). Text is emitted only once no stop
 * string can start inside it; when a stop string completes (possibly across many pushes),
 * the text before it is emitted, the stop string and everything after it never are, and
 * the matcher refuses further input. Among stop strings the earliest match in the text wins
 * (overlapping stop strings: the one that starts first). Input arrives as whole UTF-8
 * characters (bt_detok); a held-back suffix is a prefix of a stop string, so if the stop
 * strings are valid UTF-8 the emitted text always ends on a character boundary.
 *
 * The stop strings are borrowed (the request's parameters) and must outlive the matcher.
 * No allocation. Confined to one thread (one per completion).
 */
#ifndef BT_STOP_H
#define BT_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define BT_MAX_STOP 16
#define BT_STOP_MAX_BYTES 256

typedef struct bt_stop {
    const char (*stop)[BT_STOP_MAX_BYTES + 1]; /* [n_stop] borrowed, NUL-terminated */
    int n_stop;
    bool matched;
    bool include_match; /* set after init: the matched stop string is emitted too (vLLM's
                           include_stop_str_in_output); text after it never is */
    size_t n_hold;
    char buf[2 * BT_STOP_MAX_BYTES]; /* held text, then the piece being examined */
} bt_stop;

/* Caller's storage. stop[0..n_stop) are non-empty strings of at most BT_STOP_MAX_BYTES.
 * include_match starts false. */
void bt_stop_init(bt_stop *m, const char (*stop)[BT_STOP_MAX_BYTES + 1], int n_stop);

/* Appends in[0..n). Writes the text that became final to out[0..*n_out); out needs
 * n + BT_STOP_MAX_BYTES bytes. Sets m->matched (and returns true) when a stop string
 * completed; input after a match is dropped. */
bool bt_stop_push(bt_stop *m, const char *in, size_t n, char *out, size_t *n_out);

/* The text ends without a match: writes the held text (out needs BT_STOP_MAX_BYTES) and
 * resets the hold. Nothing when matched. */
void bt_stop_flush(bt_stop *m, char *out, size_t *n_out);

#endif
