/*
 * codec.h - activation codecs: how a micro-batch's hidden states [n_rows][n_embd] f32 travel
 * from one stage to the next.
 *
 *   f32   lossless, 4 bytes per value
 *   f16   IEEE half, round to nearest even (2 B)
 *   bf16  upper half of f32, round to nearest even (2 B)
 *   q8    blocks of 32 values: f32 scale + 32 int8 (36 B per 32 values, 1.125 B/value);
 *         row length must be a multiple of 32
 * each optionally followed by zstd at a chosen level (1..19).
 *
 * A bt_codec owns reusable buffers and the zstd contexts, sized at creation for the largest
 * batch: encode and decode allocate nothing. Decoding is bounded: the decoded size is
 * computed from the frame's row count and the model's n_embd (never trusted from the
 * sender), and zstd output is capped at that size; anything else is BT_ERR_PROTOCOL.
 *
 * Threading: a bt_codec is confined to one thread (one per stage loop / coordinator).
 */
#ifndef BT_CODEC_H
#define BT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum bt_codec_kind {
    BT_CODEC_F32 = 0,
    BT_CODEC_F16 = 1,
    BT_CODEC_BF16 = 2,
    BT_CODEC_Q8 = 3,
    BT_CODEC_KIND_COUNT
} bt_codec_kind;

typedef struct bt_codec_params {
    bt_codec_kind kind;
    int zstd_level; /* 0 = no zstd, else 1..19 */
    int n_embd;     /* values per row */
    int max_rows;   /* largest batch */
} bt_codec_params;

/* "f32", "f16", "bf16", "q8"; parses back with bt_codec_kind_parse (BT_ERR_INVALID_ARG). */
const char *bt_codec_kind_name(bt_codec_kind kind);
bt_status bt_codec_kind_parse(const char *name, bt_codec_kind *out, bt_error *err);

typedef struct bt_codec bt_codec;

bt_status bt_codec_new(const bt_codec_params *p, bt_codec **out, bt_error *err);
void bt_codec_free(bt_codec *c);

/* Bytes of the raw (pre-zstd) encoding of n_rows rows. */
size_t bt_codec_raw_bytes(bt_codec_kind kind, int n_embd, int n_rows);
/* Upper bound of bt_codec_encode's output for n_rows (for sizing frame buffers). */
size_t bt_codec_max_encoded_bytes(const bt_codec *c, int n_rows);

/*
 * Encodes x[n_rows][n_embd] into out (capacity cap); *n_out receives the bytes written.
 * The returned bytes are what travels; kind and zstd flag travel in the frame header.
 */
bt_status bt_codec_encode(bt_codec *c, const float *x, int n_rows, void *out, size_t cap,
                          size_t *n_out, bt_error *err);

/*
 * Decodes `len` bytes produced with (kind, zstd) into x[n_rows][n_embd]. The expected raw
 * size follows from kind, n_embd and n_rows; any mismatch, zstd error or output beyond it is
 * BT_ERR_PROTOCOL with a message naming the field. kind/zstd may differ from the codec's own
 * (a receiver accepts what the header says), n_rows <= max_rows.
 */
bt_status bt_codec_decode(bt_codec *c, bt_codec_kind kind, int zstd, const void *in, size_t len,
                          int n_rows, float *x, bt_error *err);

#endif
