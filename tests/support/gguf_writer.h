/*
 * gguf_writer.h - a small in-memory GGUF (v3 by default) writer for tests and tools.
 *
 * Owns: copies of every key, value and tensor payload handed to it, until bt_gw_free.
 * Big files (tests/tools/synth_model.c: gigabytes) are streamed instead: tensors declared
 * with bt_gw_add_tensor_info hold no payload, and bt_gw_stream_* writes the header, then
 * takes the payloads in declaration order straight to the file.
 * It writes exactly what it is told and checks nothing the reader checks, so tests can
 * craft malformed files with it (n_dims 5, unknown types, duplicate keys, forced offsets).
 * Callers: tests/unit, tests/tools, tests/fuzz, tests/support/bad_gguf_cases.c.
 *
 * Errors are sticky: a failed add (out of memory) makes every later write return the same
 * status, so a builder may check only the final bt_gw_write_*.
 *
 * Threading: a bt_gw is confined to one thread.
 */
#ifndef BT_GGUF_WRITER_H
#define BT_GGUF_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "status.h"

/* ---- raw little-endian byte buffer (for crafting headers by hand) ---- */

typedef struct bt_gw_buf {
    uint8_t *data; /* owned; bt_gw_buf_free */
    size_t len;
    size_t cap;
    bool oom; /* sticky: an append failed */
} bt_gw_buf;

void bt_gw_buf_bytes(bt_gw_buf *b, const void *p, size_t n);
void bt_gw_buf_u8(bt_gw_buf *b, uint8_t v);
void bt_gw_buf_u32(bt_gw_buf *b, uint32_t v);
void bt_gw_buf_u64(bt_gw_buf *b, uint64_t v);
void bt_gw_buf_str(bt_gw_buf *b, const char *s);            /* u64 length + bytes */
void bt_gw_buf_strn(bt_gw_buf *b, const char *s, size_t n); /* same, explicit length */
void bt_gw_buf_zeros(bt_gw_buf *b, size_t n);
void bt_gw_buf_pad(bt_gw_buf *b, size_t alignment); /* zeros up to a multiple */
void bt_gw_buf_free(bt_gw_buf *b);                  /* leaves an empty buffer */

/* Overwrite a little-endian value at byte offset `off` of an existing buffer (no-op when it
 * does not fit). For patching headers of a file written by bt_gw_write_mem. */
void bt_gw_patch_u32(uint8_t *buf, size_t size, size_t off, uint32_t v);
void bt_gw_patch_u64(uint8_t *buf, size_t size, size_t off, uint64_t v);

/* ---- structured writer ---- */

typedef struct bt_gw bt_gw;

bt_gw *bt_gw_new(void);    /* NULL when out of memory */
void bt_gw_free(bt_gw *w); /* NULL is a no-op */

/* Header version written (default 3). */
void bt_gw_set_version(bt_gw *w, uint32_t version);
/* Layout alignment of the data section and tensors (default 32, must be a power of two).
 * When `write_key`, also adds the u32 key general.alignment. */
bt_status bt_gw_set_alignment(bt_gw *w, uint32_t alignment, bool write_key);

/* Metadata, written in the order added. Keys are copied. */
bt_status bt_gw_add_u8(bt_gw *w, const char *key, uint8_t v);
bt_status bt_gw_add_i8(bt_gw *w, const char *key, int8_t v);
bt_status bt_gw_add_u16(bt_gw *w, const char *key, uint16_t v);
bt_status bt_gw_add_i16(bt_gw *w, const char *key, int16_t v);
bt_status bt_gw_add_u32(bt_gw *w, const char *key, uint32_t v);
bt_status bt_gw_add_i32(bt_gw *w, const char *key, int32_t v);
bt_status bt_gw_add_u64(bt_gw *w, const char *key, uint64_t v);
bt_status bt_gw_add_i64(bt_gw *w, const char *key, int64_t v);
bt_status bt_gw_add_f32(bt_gw *w, const char *key, float v);
bt_status bt_gw_add_f64(bt_gw *w, const char *key, double v);
bt_status bt_gw_add_bool(bt_gw *w, const char *key, bool v);
bt_status bt_gw_add_str(bt_gw *w, const char *key, const char *v);
/* Array of fixed-size elements (any type but STRING/ARRAY); `data` holds n elements in the
 * host's (little-endian) layout. */
bt_status bt_gw_add_arr(bt_gw *w, const char *key, bt_gguf_type elem, const void *data, uint64_t n);
bt_status bt_gw_add_arr_str(bt_gw *w, const char *key, const char *const *strs, uint64_t n);
/* Key, then the u32 `type`, then `n` value bytes verbatim (for malformed values). */
bt_status bt_gw_add_raw(bt_gw *w, const char *key, uint32_t type, const void *value, size_t n);
size_t bt_gw_n_kv(const bt_gw *w);

/* Tensor info + payload (copied; data NULL with n_bytes > 0: zeros, as an info-only tensor). n_dims
 * may be 1..8 (the writer does not enforce the format's 4); ne has n_dims entries; type is a ggml
 * type id, written as given. Data offsets are assigned in order, each padded to the alignment. */
bt_status bt_gw_add_tensor(bt_gw *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t type, const void *data, size_t n_bytes);
/* Tensor info only, for streaming: the payload of n_bytes comes later through
 * bt_gw_stream_write (bt_gw_write_mem writes zeros in its place). */
bt_status bt_gw_add_tensor_info(bt_gw *w, const char *name, uint32_t n_dims, const int64_t *ne,
                                uint32_t type, size_t n_bytes);
/* Forces the info's offset of tensor `i` (0-based, in add order). The payload is still
 * copied there when it fits inside the data section the normal layout produces. */
void bt_gw_tensor_set_offset(bt_gw *w, size_t i, uint64_t offset);
size_t bt_gw_n_tensors(const bt_gw *w);

/* Byte offsets of the sections in the written file (same for every write). */
typedef struct bt_gw_layout {
    size_t kv_start;     /* first kv (always 24) */
    size_t tensor_start; /* first tensor info */
    size_t data_start;   /* data section */
    size_t size;         /* whole file */
} bt_gw_layout;

/* Writes the file into a malloc'd buffer: *buf owned by the caller (free()). layout may be
 * NULL. */
bt_status bt_gw_write_mem(bt_gw *w, uint8_t **buf, size_t *size, bt_gw_layout *layout);
bt_status bt_gw_write_file(bt_gw *w, const char *path, bt_error *err);

/* ---- streaming writer ----
 * Memory: the header (metadata and tensor infos) plus stdio's buffer; payloads pass through.
 * Usage: declare every tensor (bt_gw_add_tensor_info or bt_gw_add_tensor), then
 * bt_gw_stream_open writes header, metadata, infos and padding; bt_gw_stream_write appends
 * payload bytes, in declaration order, padding after each tensor as it completes (a call may
 * span tensors); bt_gw_stream_close checks every tensor got exactly its n_bytes. Payloads
 * held by bt_gw_add_tensor are not written by the stream: pass them to bt_gw_stream_write
 * like the others. Forced offsets are not supported (BT_ERR_INVALID_ARG). The bt_gw must
 * outlive the stream and not change meanwhile. On any failure the partial file is left:
 * the caller removes it. */
typedef struct bt_gw_stream bt_gw_stream;

bt_status bt_gw_stream_open(bt_gw *w, const char *path, bt_gw_stream **out, bt_gw_layout *layout,
                            bt_error *err);
bt_status bt_gw_stream_write(bt_gw_stream *s, const void *data, size_t n, bt_error *err);
/* Index of the tensor whose bytes come next (bt_gw_n_tensors when all are complete). */
size_t bt_gw_stream_tensor(const bt_gw_stream *s);
/* Closes the file and frees s (NULL is a no-op); BT_ERR_IO when a tensor is short or the
 * close fails. */
bt_status bt_gw_stream_close(bt_gw_stream *s, bt_error *err);

#endif
