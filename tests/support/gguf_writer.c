/* gguf_writer.c - in-memory GGUF writer for tests and tools (see gguf_writer.h). */
#include "gguf_writer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- raw buffer ---- */

static bool buf_reserve(bt_gw_buf *b, size_t n) {
    if (b->oom)
        return false;
    if (n <= b->cap - b->len)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void bt_gw_buf_bytes(bt_gw_buf *b, const void *p, size_t n) {
    if (!n || !buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void bt_gw_buf_u8(bt_gw_buf *b, uint8_t v) {
    bt_gw_buf_bytes(b, &v, 1);
}

void bt_gw_buf_u32(bt_gw_buf *b, uint32_t v) {
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    bt_gw_buf_bytes(b, p, 4);
}

void bt_gw_buf_u64(bt_gw_buf *b, uint64_t v) {
    bt_gw_buf_u32(b, (uint32_t)v);
    bt_gw_buf_u32(b, (uint32_t)(v >> 32));
}

void bt_gw_buf_strn(bt_gw_buf *b, const char *s, size_t n) {
    bt_gw_buf_u64(b, n);
    bt_gw_buf_bytes(b, s, n);
}

void bt_gw_buf_str(bt_gw_buf *b, const char *s) {
    bt_gw_buf_strn(b, s, strlen(s));
}

void bt_gw_buf_zeros(bt_gw_buf *b, size_t n) {
    if (!n || !buf_reserve(b, n))
        return;
    memset(b->data + b->len, 0, n);
    b->len += n;
}

void bt_gw_buf_pad(bt_gw_buf *b, size_t alignment) {
    if (alignment > 1)
        bt_gw_buf_zeros(b, (alignment - b->len % alignment) % alignment);
}

void bt_gw_buf_free(bt_gw_buf *b) {
    free(b->data);
    *b = (bt_gw_buf){0};
}

void bt_gw_patch_u32(uint8_t *buf, size_t size, size_t off, uint32_t v) {
    if (off > size || size - off < 4)
        return;
    for (int i = 0; i < 4; i++)
        buf[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

void bt_gw_patch_u64(uint8_t *buf, size_t size, size_t off, uint64_t v) {
    if (off > size || size - off < 8)
        return;
    for (int i = 0; i < 8; i++)
        buf[off + (size_t)i] = (uint8_t)(v >> (8 * i));
}

/* ---- writer ---- */

typedef struct gw_tensor {
    char *name;
    uint32_t n_dims;
    int64_t ne[8];
    uint32_t type;
    uint8_t *data;
    size_t n_bytes;
    bool forced;
    uint64_t offset;
} gw_tensor;

struct bt_gw {
    uint32_t version;
    uint32_t alignment;
    bt_gw_buf kv; /* serialized kvs */
    size_t n_kv;
    gw_tensor *tensors;
    size_t n_tensors, cap_tensors;
    bt_status status; /* sticky */
};

bt_gw *bt_gw_new(void) {
    bt_gw *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->version = 3;
    w->alignment = 32;
    return w;
}

void bt_gw_free(bt_gw *w) {
    if (!w)
        return;
    bt_gw_buf_free(&w->kv);
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w);
}

void bt_gw_set_version(bt_gw *w, uint32_t version) {
    w->version = version;
}

static bt_status kv_done(bt_gw *w) {
    if (w->kv.oom && w->status == BT_OK)
        w->status = BT_ERR_NOMEM;
    if (w->status == BT_OK)
        w->n_kv++;
    return w->status;
}

static void kv_head(bt_gw *w, const char *key, uint32_t type) {
    bt_gw_buf_str(&w->kv, key);
    bt_gw_buf_u32(&w->kv, type);
}

bt_status bt_gw_set_alignment(bt_gw *w, uint32_t alignment, bool write_key) {
    if (alignment == 0 || (alignment & (alignment - 1)))
        return BT_ERR_INVALID_ARG;
    w->alignment = alignment;
    return write_key ? bt_gw_add_u32(w, "general.alignment", alignment) : w->status;
}

bt_status bt_gw_add_raw(bt_gw *w, const char *key, uint32_t type, const void *value, size_t n) {
    kv_head(w, key, type);
    bt_gw_buf_bytes(&w->kv, value, n);
    return kv_done(w);
}

#define GW_SCALAR(fn, ctype, tid)                                                                  \
    bt_status fn(bt_gw *w, const char *key, ctype v) {                                             \
        return bt_gw_add_raw(w, key, tid, &v, sizeof v);                                           \
    }

GW_SCALAR(bt_gw_add_u8, uint8_t, BT_GGUF_U8)
GW_SCALAR(bt_gw_add_i8, int8_t, BT_GGUF_I8)
GW_SCALAR(bt_gw_add_u16, uint16_t, BT_GGUF_U16)
GW_SCALAR(bt_gw_add_i16, int16_t, BT_GGUF_I16)
GW_SCALAR(bt_gw_add_u32, uint32_t, BT_GGUF_U32)
GW_SCALAR(bt_gw_add_i32, int32_t, BT_GGUF_I32)
GW_SCALAR(bt_gw_add_u64, uint64_t, BT_GGUF_U64)
GW_SCALAR(bt_gw_add_i64, int64_t, BT_GGUF_I64)
GW_SCALAR(bt_gw_add_f32, float, BT_GGUF_F32)
GW_SCALAR(bt_gw_add_f64, double, BT_GGUF_F64)

bt_status bt_gw_add_bool(bt_gw *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return bt_gw_add_raw(w, key, BT_GGUF_BOOL, &b, 1);
}

bt_status bt_gw_add_str(bt_gw *w, const char *key, const char *v) {
    kv_head(w, key, BT_GGUF_STRING);
    bt_gw_buf_str(&w->kv, v);
    return kv_done(w);
}

bt_status bt_gw_add_arr(bt_gw *w, const char *key, bt_gguf_type elem, const void *data,
                        uint64_t n) {
    size_t es = bt_gguf_type_size(elem);
    if (!es || n > SIZE_MAX / es)
        return BT_ERR_INVALID_ARG;
    kv_head(w, key, BT_GGUF_ARRAY);
    bt_gw_buf_u32(&w->kv, (uint32_t)elem);
    bt_gw_buf_u64(&w->kv, n);
    bt_gw_buf_bytes(&w->kv, data, (size_t)n * es);
    return kv_done(w);
}

bt_status bt_gw_add_arr_str(bt_gw *w, const char *key, const char *const *strs, uint64_t n) {
    kv_head(w, key, BT_GGUF_ARRAY);
    bt_gw_buf_u32(&w->kv, BT_GGUF_STRING);
    bt_gw_buf_u64(&w->kv, n);
    for (uint64_t i = 0; i < n; i++)
        bt_gw_buf_str(&w->kv, strs[i]);
    return kv_done(w);
}

size_t bt_gw_n_kv(const bt_gw *w) {
    return w->n_kv;
}

/* Appends a tensor entry; data NULL declares the info only (payload streamed later). */
static bt_status add_tensor(bt_gw *w, const char *name, uint32_t n_dims, const int64_t *ne,
                            uint32_t type, const void *data, size_t n_bytes) {
    if (w->status != BT_OK)
        return w->status;
    if (n_dims > 8)
        return BT_ERR_INVALID_ARG;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? w->cap_tensors * 2 : 16;
        gw_tensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t)
            return w->status = BT_ERR_NOMEM;
        w->tensors = t;
        w->cap_tensors = cap;
    }
    gw_tensor *t = &w->tensors[w->n_tensors];
    memset(t, 0, sizeof *t);
    size_t name_len = strlen(name);
    t->name = malloc(name_len + 1);
    t->data = data ? malloc(n_bytes ? n_bytes : 1) : NULL;
    if (!t->name || (data && !t->data)) {
        free(t->name);
        free(t->data);
        return w->status = BT_ERR_NOMEM;
    }
    memcpy(t->name, name, name_len + 1);
    if (data && n_bytes)
        memcpy(t->data, data, n_bytes);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < n_dims; d++)
        t->ne[d] = ne[d];
    t->type = type;
    t->n_bytes = n_bytes;
    w->n_tensors++;
    return BT_OK;
}

bt_status bt_gw_add_tensor(bt_gw *w, const char *name, uint32_t n_dims, const int64_t *ne,
                           uint32_t type, const void *data, size_t n_bytes) {
    static const uint8_t empty = 0;
    /* No payload: an empty one, or zeros (as write_mem writes for an info-only tensor). */
    if (!data && n_bytes == 0)
        data = &empty;
    return add_tensor(w, name, n_dims, ne, type, data, n_bytes);
}

bt_status bt_gw_add_tensor_info(bt_gw *w, const char *name, uint32_t n_dims, const int64_t *ne,
                                uint32_t type, size_t n_bytes) {
    return add_tensor(w, name, n_dims, ne, type, NULL, n_bytes);
}

void bt_gw_tensor_set_offset(bt_gw *w, size_t i, uint64_t offset) {
    if (i < w->n_tensors) {
        w->tensors[i].forced = true;
        w->tensors[i].offset = offset;
    }
}

size_t bt_gw_n_tensors(const bt_gw *w) {
    return w->n_tensors;
}

/* Header, metadata, tensor infos and the padding up to the data section into *b; natural[i]
 * (caller frees) receives tensor i's offset in the natural layout, *data_size the data
 * section's size. */
static bt_status build_head(const bt_gw *w, bt_gw_buf *b, uint64_t **natural_out,
                            uint64_t *data_size_out, bt_gw_layout *layout) {
    *b = (bt_gw_buf){0};
    bt_gw_buf_bytes(b, "GGUF", 4);
    bt_gw_buf_u32(b, w->version);
    bt_gw_buf_u64(b, w->n_tensors);
    bt_gw_buf_u64(b, w->n_kv);
    size_t kv_start = b->len;
    bt_gw_buf_bytes(b, w->kv.data, w->kv.len);
    size_t tensor_start = b->len;

    /* Natural layout: each payload at the running sum, padded to the alignment. */
    uint64_t *natural = calloc(w->n_tensors ? w->n_tensors : 1, sizeof *natural);
    if (!natural) {
        bt_gw_buf_free(b);
        return BT_ERR_NOMEM;
    }
    uint64_t data_size = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        natural[i] = data_size;
        data_size += w->tensors[i].n_bytes;
        data_size += (w->alignment - data_size % w->alignment) % w->alignment;
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        const gw_tensor *t = &w->tensors[i];
        bt_gw_buf_str(b, t->name);
        bt_gw_buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            bt_gw_buf_u64(b, (uint64_t)t->ne[d]);
        bt_gw_buf_u32(b, t->type);
        bt_gw_buf_u64(b, t->forced ? t->offset : natural[i]);
    }
    if (w->n_tensors)
        bt_gw_buf_pad(b, w->alignment);
    if (b->oom) {
        free(natural);
        bt_gw_buf_free(b);
        return BT_ERR_NOMEM;
    }
    if (layout)
        *layout = (bt_gw_layout){kv_start, tensor_start, b->len, b->len + (size_t)data_size};
    *natural_out = natural;
    *data_size_out = data_size;
    return BT_OK;
}

bt_status bt_gw_write_mem(bt_gw *w, uint8_t **buf, size_t *size, bt_gw_layout *layout) {
    *buf = NULL;
    *size = 0;
    if (w->status != BT_OK)
        return w->status;
    bt_gw_buf b;
    uint64_t *natural, data_size;
    bt_status st = build_head(w, &b, &natural, &data_size, layout);
    if (st != BT_OK)
        return st;
    size_t data_start = b.len;
    bt_gw_buf_zeros(&b, (size_t)data_size);
    if (!b.oom) {
        for (size_t i = 0; i < w->n_tensors; i++) {
            const gw_tensor *t = &w->tensors[i];
            uint64_t off = t->forced ? t->offset : natural[i];
            if (t->data && off <= data_size && t->n_bytes <= data_size - off && t->n_bytes)
                memcpy(b.data + data_start + off, t->data, t->n_bytes);
        }
    }
    free(natural);
    if (b.oom) {
        bt_gw_buf_free(&b);
        return BT_ERR_NOMEM;
    }
    *buf = b.data;
    *size = b.len;
    return BT_OK;
}

bt_status bt_gw_write_file(bt_gw *w, const char *path, bt_error *err) {
    uint8_t *buf;
    size_t size;
    bt_status st = bt_gw_write_mem(w, &buf, &size, NULL);
    if (st != BT_OK)
        return bt_error_set(err, st, "gguf writer: building %s: %s", path, bt_status_str(st));
    FILE *f = fopen(path, "wb");
    if (!f) {
        int e = errno;
        free(buf);
        return bt_error_set(err, BT_ERR_IO, "gguf writer: cannot create %s: %s", path, strerror(e));
    }
    size_t n = fwrite(buf, 1, size, f);
    int bad = fclose(f) != 0 || n != size;
    free(buf);
    if (bad)
        return bt_error_set(err, BT_ERR_IO, "gguf writer: short write to %s", path);
    return BT_OK;
}

/* ---- streaming writer ---- */

struct bt_gw_stream {
    const bt_gw *w;
    FILE *f;
    char *path;  /* owned copy, for messages */
    size_t cur;  /* tensor whose bytes come next */
    size_t done; /* bytes of tensor `cur` written */
    bool failed; /* sticky: a write failed */
};

static const uint8_t zeros_64[64];

static bt_status stream_put(bt_gw_stream *s, const void *p, size_t n, bt_error *err) {
    if (n && fwrite(p, 1, n, s->f) != n) {
        int e = errno;
        s->failed = true;
        return bt_error_set(err, BT_ERR_IO, "gguf writer: writing %s: %s", s->path,
                            e ? strerror(e) : "short write");
    }
    return BT_OK;
}

/* Zeros after tensor `cur` up to the alignment (the natural layout's padding). */
static bt_status stream_pad(bt_gw_stream *s, bt_error *err) {
    size_t a = s->w->alignment, n = s->w->tensors[s->cur].n_bytes;
    size_t pad = (a - n % a) % a;
    while (pad) {
        size_t k = pad < sizeof zeros_64 ? pad : sizeof zeros_64;
        bt_status st = stream_put(s, zeros_64, k, err);
        if (st != BT_OK)
            return st;
        pad -= k;
    }
    return BT_OK;
}

/* Skips zero-byte tensors at `cur`. */
static bt_status stream_skip_empty(bt_gw_stream *s, bt_error *err) {
    while (s->cur < s->w->n_tensors && s->w->tensors[s->cur].n_bytes == 0) {
        bt_status st = stream_pad(s, err);
        if (st != BT_OK)
            return st;
        s->cur++;
    }
    return BT_OK;
}

bt_status bt_gw_stream_open(bt_gw *w, const char *path, bt_gw_stream **out, bt_gw_layout *layout,
                            bt_error *err) {
    *out = NULL;
    if (w->status != BT_OK)
        return bt_error_set(err, w->status, "gguf writer: building %s: %s", path,
                            bt_status_str(w->status));
    for (size_t i = 0; i < w->n_tensors; i++)
        if (w->tensors[i].forced)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "gguf writer: tensor '%s' has a forced offset, which a stream "
                                "cannot write",
                                w->tensors[i].name);
    bt_gw_buf b;
    uint64_t *natural, data_size;
    bt_status st = build_head(w, &b, &natural, &data_size, layout);
    if (st != BT_OK)
        return bt_error_set(err, st, "gguf writer: building %s: %s", path, bt_status_str(st));
    free(natural);
    bt_gw_stream *s = calloc(1, sizeof *s);
    char *copy = s ? malloc(strlen(path) + 1) : NULL;
    if (!s || !copy) {
        free(s);
        bt_gw_buf_free(&b);
        return bt_error_set(err, BT_ERR_NOMEM, "gguf writer: out of memory for %s", path);
    }
    strcpy(copy, path);
    s->w = w;
    s->path = copy;
    s->f = fopen(path, "wb");
    if (!s->f) {
        int e = errno;
        free(s->path);
        free(s);
        bt_gw_buf_free(&b);
        return bt_error_set(err, BT_ERR_IO, "gguf writer: cannot create %s: %s", path, strerror(e));
    }
    st = stream_put(s, b.data, b.len, err);
    bt_gw_buf_free(&b);
    if (st == BT_OK)
        st = stream_skip_empty(s, err);
    if (st != BT_OK) {
        fclose(s->f);
        free(s->path);
        free(s);
        return st;
    }
    *out = s;
    return BT_OK;
}

bt_status bt_gw_stream_write(bt_gw_stream *s, const void *data, size_t n, bt_error *err) {
    const uint8_t *p = data;
    if (s->failed)
        return bt_error_set(err, BT_ERR_IO, "gguf writer: %s: an earlier write failed", s->path);
    while (n) {
        if (s->cur >= s->w->n_tensors)
            return bt_error_set(err, BT_ERR_INVALID_ARG,
                                "gguf writer: %s: %zu bytes beyond the last tensor", s->path, n);
        size_t left = s->w->tensors[s->cur].n_bytes - s->done;
        size_t k = n < left ? n : left;
        bt_status st = stream_put(s, p, k, err);
        if (st != BT_OK)
            return st;
        p += k;
        n -= k;
        s->done += k;
        if (s->done == s->w->tensors[s->cur].n_bytes) {
            if ((st = stream_pad(s, err)) != BT_OK)
                return st;
            s->cur++;
            s->done = 0;
            if ((st = stream_skip_empty(s, err)) != BT_OK)
                return st;
        }
    }
    return BT_OK;
}

size_t bt_gw_stream_tensor(const bt_gw_stream *s) {
    return s->cur;
}

bt_status bt_gw_stream_close(bt_gw_stream *s, bt_error *err) {
    if (!s)
        return BT_OK;
    bt_status st = BT_OK;
    if (!s->failed && s->cur < s->w->n_tensors)
        st = bt_error_set(err, BT_ERR_IO, "gguf writer: %s: tensor '%s' got %zu of its %zu bytes",
                          s->path, s->w->tensors[s->cur].name, s->done,
                          s->w->tensors[s->cur].n_bytes);
    else if (s->failed)
        st = BT_ERR_IO; /* the failing write set the message */
    if (fclose(s->f) != 0 && st == BT_OK) {
        int e = errno;
        st = bt_error_set(err, BT_ERR_IO, "gguf writer: closing %s: %s", s->path, strerror(e));
    }
    free(s->path);
    free(s);
    return st;
}
