/*
 * gguf.h - read-only GGUF (v2, v3) reader over a memory map.
 *
 * Owns: the mapping (or borrows caller memory), an index of metadata key/values and the
 * tensor directory, all validated at open. After a successful open every accessor is a
 * bounds-safe lookup; nothing here re-parses bytes.
 *
 * Validation at open (each failure names the field and value in err->msg):
 *   magic, version (2 or 3), counts against the file size, string lengths, key uniqueness,
 *   value types, array element types (no nested arrays) and counts, general.alignment
 *   (u32, non-zero power of two), tensor names (unique, <= 63 bytes), n_dims (1..4),
 *   dims (>= 1 ... product without overflow), type (known id), ne[0] % block size,
 *   offsets (aligned, inside the data section, non-overlapping) and sizes.
 *
 * Threading: a bt_gguf is immutable after open; any thread may read it concurrently.
 */
#ifndef BT_GGUF_H
#define BT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define BT_GGUF_MAX_DIMS 4
#define BT_GGUF_MAX_NAME 63 /* bytes, excluding the NUL we add */

/* Metadata value types as stored in the file. */
typedef enum bt_gguf_type {
    BT_GGUF_U8 = 0,
    BT_GGUF_I8 = 1,
    BT_GGUF_U16 = 2,
    BT_GGUF_I16 = 3,
    BT_GGUF_U32 = 4,
    BT_GGUF_I32 = 5,
    BT_GGUF_F32 = 6,
    BT_GGUF_BOOL = 7,
    BT_GGUF_STRING = 8,
    BT_GGUF_ARRAY = 9,
    BT_GGUF_U64 = 10,
    BT_GGUF_I64 = 11,
    BT_GGUF_F64 = 12,
    BT_GGUF_TYPE_COUNT
} bt_gguf_type;

/* A string inside the mapping: not NUL-terminated, borrowed for the bt_gguf's lifetime. */
typedef struct bt_str {
    const char *ptr;
    size_t len;
} bt_str;

/* One tensor directory entry. Borrowed from the bt_gguf; valid until bt_gguf_free. */
typedef struct bt_gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t n_dims;  /* 1..4 */
    int64_t ne[4];    /* ggml order: ne[0] is the row length; unused dims are 1 */
    uint32_t type;    /* ggml type id (bt_type in tensor_type.h), validated as known */
    uint64_t offset;  /* relative to the data section */
    size_t n_bytes;   /* ggml_nbytes: rows * row_bytes */
    size_t row_bytes; /* bytes of one ne[0] row */
    const void *data; /* into the mapping */
} bt_gguf_tensor;

typedef struct bt_gguf bt_gguf;

/* Maps `path` read-only and validates it. On success *out is owned by the caller
 * (bt_gguf_free). On failure *out is NULL and err says what is wrong. */
bt_status bt_gguf_open(const char *path, bt_gguf **out, bt_error *err);

/* Same over caller memory, which must outlive the returned bt_gguf (used by the fuzzer
 * and tests). */
bt_status bt_gguf_open_memory(const void *data, size_t size, bt_gguf **out, bt_error *err);

void bt_gguf_free(bt_gguf *g); /* NULL is a no-op */

/* Exit status of a process whose mapped model file was truncated or rewritten under it. */
#define BT_GGUF_EXIT_TRUNCATED 1

/* Installs a SIGBUS handler (process-wide): a fault inside a file mapped by bt_gguf_open
 * prints "baton: model file '<path>' was truncated or changed while in use" and exits with
 * BT_GGUF_EXIT_TRUNCATED; any other SIGBUS goes to the handler that was there before (or the
 * default action). Call from main, and again after a library installs its own handlers. */
void bt_gguf_catch_truncation(void);

/* The mapped bytes [p, p + n) will not be read for a while (a copy of them is used instead):
 * the whole pages among them leave the process's resident set, and a later read maps them
 * again from the file. A no-op for a bt_gguf over memory. */
void bt_gguf_drop_pages(const bt_gguf *g, const void *p, size_t n);

uint32_t bt_gguf_version(const bt_gguf *g);
size_t bt_gguf_alignment(const bt_gguf *g);
size_t bt_gguf_file_size(const bt_gguf *g);
const void *bt_gguf_base(const bt_gguf *g);   /* start of the mapping */
size_t bt_gguf_data_offset(const bt_gguf *g); /* file offset of the data section */
/* File offset one past the metadata: bytes [BT_GGUF_KV_BEGIN, bt_gguf_kv_end) are the
 * key/values as stored, which a slice (worker/slice.h) copies verbatim. */
#define BT_GGUF_KV_BEGIN 24 /* magic, version, tensor_count, kv_count */
size_t bt_gguf_kv_end(const bt_gguf *g);

/* ---- metadata ---- */
size_t bt_gguf_n_kv(const bt_gguf *g);
bt_str bt_gguf_kv_key(const bt_gguf *g, size_t i);
bt_gguf_type bt_gguf_kv_type(const bt_gguf *g, size_t i);
/* For arrays: element type and count (0 / BT_GGUF_TYPE_COUNT for scalars). */
bt_gguf_type bt_gguf_kv_arr_type(const bt_gguf *g, size_t i);
uint64_t bt_gguf_kv_arr_len(const bt_gguf *g, size_t i);

/* Index of key, or -1 when absent. */
int64_t bt_gguf_find_kv(const bt_gguf *g, const char *key);

/* Typed getters. BT_ERR_NOT_FOUND (message names the key) when absent; BT_ERR_FORMAT when
 * the stored type does not fit. Integer getters accept any integer type (and bool) whose
 * value is in range for the target; f32 accepts F32 and F64. */
bt_status bt_gguf_get_u32(const bt_gguf *g, const char *key, uint32_t *out, bt_error *err);
bt_status bt_gguf_get_i64(const bt_gguf *g, const char *key, int64_t *out, bt_error *err);
bt_status bt_gguf_get_f32(const bt_gguf *g, const char *key, float *out, bt_error *err);
bt_status bt_gguf_get_bool(const bt_gguf *g, const char *key, bool *out, bt_error *err);
bt_status bt_gguf_get_str(const bt_gguf *g, const char *key, bt_str *out, bt_error *err);

/* Array of fixed-size elements: requires element type `elem` exactly; *data points into
 * the mapping (possibly unaligned: read with memcpy), *n is the element count. */
bt_status bt_gguf_get_arr(const bt_gguf *g, const char *key, bt_gguf_type elem, const void **data,
                          uint64_t *n, bt_error *err);

/* Array of strings: *n elements; bt_gguf_get_arr_str() returns element i (bounds-checked
 * by assert: the caller got n from here). Element pointers into the mapping are indexed at
 * open, so access is O(1). */
bt_status bt_gguf_get_arr_str_len(const bt_gguf *g, const char *key, uint64_t *n, bt_error *err);
bt_str bt_gguf_get_arr_str(const bt_gguf *g, const char *key, uint64_t i);

/* ---- tensors ---- */
size_t bt_gguf_n_tensors(const bt_gguf *g);
const bt_gguf_tensor *bt_gguf_tensor_at(const bt_gguf *g, size_t i);
const bt_gguf_tensor *bt_gguf_find_tensor(const bt_gguf *g, const char *name); /* or NULL */

/* Type names for messages ("u32", "string", ...). */
const char *bt_gguf_type_name(bt_gguf_type t);
/* Bytes of one value of a fixed-size type (1, 2, 4 or 8); 0 for STRING, ARRAY and unknown. */
size_t bt_gguf_type_size(bt_gguf_type t);

#endif
