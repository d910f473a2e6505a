/*
 * gguf.c - the hardened GGUF v2/v3 reader behind gguf.h.
 *
 * Open parses the whole header once, in one pass over the bytes, and refuses anything it
 * cannot prove safe: every length and count is compared with the bytes that remain before
 * it is used, every product and sum goes through __builtin_*_overflow. What survives is an
 * index (kv table, string-array element table, tensor directory, two sorted name indexes)
 * that the accessors read without touching file bytes again, except through pointers the
 * parse already bounds-checked.
 *
 * Invariants after a successful open:
 *   - every kv's value bytes lie inside [base, base+size);
 *   - strs[kv.str_first .. kv.str_first+kv.arr_len) are the elements of a string array;
 *   - tensor data lies inside the data section, aligned, and no two tensors overlap;
 *   - kv_order / tensor_order sort the keys / names bytewise (binary search, no dups).
 */
#include "gguf.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tensor_type.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_KEY 65535u
/* Smallest encodings, used to refuse counts that cannot fit in the remaining bytes. */
#define GGUF_MIN_KV_BYTES (8 + 1 + 4 + 1)         /* key len, 1-byte key, type, u8 value */
#define GGUF_MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8) /* name len, n_dims, one ne, type, offset */

typedef struct kv_entry {
    bt_str key;
    bt_gguf_type type;
    bt_gguf_type arr_type; /* BT_GGUF_TYPE_COUNT for scalars */
    uint64_t arr_len;      /* 0 for scalars */
    const uint8_t *val;    /* scalar bytes, or first array element; NULL for strings */
    bt_str str;            /* STRING value */
    size_t str_first;      /* ARRAY of STRING: index of element 0 in g->strs */
} kv_entry;

struct bt_gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    size_t kv_end; /* file offset one past the last metadata key/value */

    size_t n_kv;
    kv_entry *kvs;
    size_t *kv_order; /* kv indexes sorted by key */

    size_t n_strs;
    bt_str *strs; /* every string-array element, one allocation */

    size_t n_tensors;
    bt_gguf_tensor *tensors;
    char (*names)[BT_GGUF_MAX_NAME + 1];
    size_t *tensor_order; /* tensor indexes sorted by name */
};

/* ---- cursor with error context ---- */

typedef struct reader {
    const uint8_t *p;
    size_t size;
    size_t pos;
    bt_error *err;
    const char *ctx_kind; /* "kv", "tensor" or NULL */
    size_t ctx_index;
    bt_str ctx_name; /* empty until known */
} reader;

static bt_status fail(reader *r, bt_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static bt_status fail(reader *r, bt_status st, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!r->ctx_kind)
        return bt_error_set(r->err, st, "gguf: %s", msg);
    if (r->ctx_name.ptr) {
        int n = r->ctx_name.len > 80 ? 80 : (int)r->ctx_name.len;
        return bt_error_set(r->err, st, "gguf: %s '%.*s'%s: %s", r->ctx_kind, n, r->ctx_name.ptr,
                            r->ctx_name.len > 80 ? "..." : "", msg);
    }
    return bt_error_set(r->err, st, "gguf: %s #%zu: %s", r->ctx_kind, r->ctx_index, msg);
}

static size_t remaining(const reader *r) {
    return r->size - r->pos;
}

static bt_status take(reader *r, size_t n, const char *what, const uint8_t **out) {
    if (n > remaining(r))
        return fail(r, BT_ERR_FORMAT,
                    "truncated reading %s: need %zu bytes at offset %zu, %zu left", what, n, r->pos,
                    remaining(r));
    *out = r->p + r->pos;
    r->pos += n;
    return BT_OK;
}

static uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t load_u64(const uint8_t *p) {
    return (uint64_t)load_u32(p) | (uint64_t)load_u32(p + 4) << 32;
}

static bt_status read_u32(reader *r, const char *what, uint32_t *out) {
    const uint8_t *p = NULL;
    bt_status st = take(r, 4, what, &p);
    if (st == BT_OK)
        *out = load_u32(p);
    return st;
}

static bt_status read_u64(reader *r, const char *what, uint64_t *out) {
    const uint8_t *p = NULL;
    bt_status st = take(r, 8, what, &p);
    if (st == BT_OK)
        *out = load_u64(p);
    return st;
}

static bt_status read_str(reader *r, const char *what, bt_str *out) {
    uint64_t len;
    bt_status st = read_u64(r, what, &len);
    if (st != BT_OK)
        return st;
    if (len > remaining(r))
        return fail(r, BT_ERR_FORMAT,
                    "%s length %" PRIu64 " at offset %zu exceeds the %zu bytes left", what, len,
                    r->pos - 8, remaining(r));
    const uint8_t *p = NULL;
    st = take(r, (size_t)len, what, &p);
    if (st == BT_OK) {
        out->ptr = (const char *)p;
        out->len = (size_t)len;
    }
    return st;
}

/* ---- types ---- */

size_t bt_gguf_type_size(bt_gguf_type t) {
    switch (t) {
    case BT_GGUF_U8:
    case BT_GGUF_I8:
    case BT_GGUF_BOOL:
        return 1;
    case BT_GGUF_U16:
    case BT_GGUF_I16:
        return 2;
    case BT_GGUF_U32:
    case BT_GGUF_I32:
    case BT_GGUF_F32:
        return 4;
    case BT_GGUF_U64:
    case BT_GGUF_I64:
    case BT_GGUF_F64:
        return 8;
    default:
        return 0; /* STRING, ARRAY, unknown */
    }
}

const char *bt_gguf_type_name(bt_gguf_type t) {
    static const char *const names[BT_GGUF_TYPE_COUNT] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                          "i32", "f32", "bool", "string", "array",
                                                          "u64", "i64", "f64"};
    if ((unsigned)t >= BT_GGUF_TYPE_COUNT)
        return "unknown";
    return names[t];
}

static bool str_eq(bt_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && memcmp(s.ptr, c, n) == 0;
}

static int str_cmp(bt_str a, bt_str b) {
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

/* ---- metadata parsing ---- */

/* Parses one value of scalar or string type `t` (not ARRAY). */
static bt_status parse_scalar(reader *r, bt_gguf_type t, kv_entry *kv) {
    if (t == BT_GGUF_STRING)
        return read_str(r, "string value", &kv->str);
    size_t n = bt_gguf_type_size(t);
    const uint8_t *p = NULL;
    bt_status st = take(r, n, "value", &p);
    if (st != BT_OK)
        return st;
    if (t == BT_GGUF_BOOL && p[0] > 1)
        return fail(r, BT_ERR_FORMAT, "bool value %u is not 0 or 1", p[0]);
    kv->val = p;
    return BT_OK;
}

static bt_status parse_array(reader *r, kv_entry *kv, size_t *n_strs) {
    uint32_t et;
    uint64_t n;
    bt_status st = read_u32(r, "array element type", &et);
    if (st == BT_OK)
        st = read_u64(r, "array count", &n);
    if (st != BT_OK)
        return st;
    if (et == BT_GGUF_ARRAY)
        return fail(r, BT_ERR_FORMAT, "nested array (array of array) is not supported");
    if (et >= BT_GGUF_TYPE_COUNT)
        return fail(r, BT_ERR_FORMAT, "unknown array element type %" PRIu32, et);
    kv->arr_type = (bt_gguf_type)et;
    kv->arr_len = n;
    if (et == BT_GGUF_STRING) {
        /* Each element needs at least its 8-byte length. */
        if (n > remaining(r) / 8)
            return fail(r, BT_ERR_FORMAT,
                        "array count %" PRIu64 " of strings exceeds the %zu bytes left", n,
                        remaining(r));
        kv->str_first = *n_strs;
        kv->val = r->p + r->pos;
        for (uint64_t i = 0; i < n; i++) {
            bt_str s;
            st = read_str(r, "array string element", &s);
            if (st != BT_OK)
                return st;
        }
        *n_strs += (size_t)n;
        return BT_OK;
    }
    size_t es = bt_gguf_type_size((bt_gguf_type)et);
    size_t total;
    if (__builtin_mul_overflow(n, (uint64_t)es, &total) || n > SIZE_MAX)
        return fail(r, BT_ERR_FORMAT, "array count %" PRIu64 " x %zu bytes overflows", n, es);
    if (total > remaining(r))
        return fail(r, BT_ERR_FORMAT,
                    "array count %" PRIu64 " of %s needs %zu bytes, %zu left (truncated array)", n,
                    bt_gguf_type_name((bt_gguf_type)et), total, remaining(r));
    const uint8_t *p = NULL;
    st = take(r, total, "array data", &p);
    kv->val = p;
    return st;
}

/* Known keys whose type matters: refused at open when stored with another type. */
typedef struct known_key {
    const char *key;
    bt_gguf_type type;
    bt_gguf_type arr_type; /* BT_GGUF_TYPE_COUNT for scalars */
} known_key;

static const known_key KNOWN_KEYS[] = {
    {"general.alignment", BT_GGUF_U32, BT_GGUF_TYPE_COUNT},
    {"general.architecture", BT_GGUF_STRING, BT_GGUF_TYPE_COUNT},
    {"tokenizer.ggml.tokens", BT_GGUF_ARRAY, BT_GGUF_STRING},
    {"tokenizer.ggml.merges", BT_GGUF_ARRAY, BT_GGUF_STRING},
    {"tokenizer.ggml.token_type", BT_GGUF_ARRAY, BT_GGUF_I32},
    {"tokenizer.ggml.scores", BT_GGUF_ARRAY, BT_GGUF_F32},
};

static bt_status check_known_key(reader *r, const kv_entry *kv) {
    for (size_t i = 0; i < sizeof KNOWN_KEYS / sizeof KNOWN_KEYS[0]; i++) {
        const known_key *k = &KNOWN_KEYS[i];
        if (!str_eq(kv->key, k->key))
            continue;
        if (kv->type != k->type || (k->type == BT_GGUF_ARRAY && kv->arr_type != k->arr_type)) {
            const char *want = k->type == BT_GGUF_ARRAY ? bt_gguf_type_name(k->arr_type)
                                                        : bt_gguf_type_name(k->type);
            const char *got = kv->type == BT_GGUF_ARRAY ? bt_gguf_type_name(kv->arr_type)
                                                        : bt_gguf_type_name(kv->type);
            return fail(r, BT_ERR_FORMAT, "wrong type: expected %s%s, found %s%s",
                        k->type == BT_GGUF_ARRAY ? "array of " : "", want,
                        kv->type == BT_GGUF_ARRAY ? "array of " : "", got);
        }
        return BT_OK;
    }
    return BT_OK;
}

/* qsort items: the compared value and the original index, so sorting needs no global
 * context and ties keep file order. */
typedef struct sort_item {
    const void *ref; /* bt_str* for keys, const char* for names, uint64_t* for offsets */
    size_t index;
} sort_item;

static int cmp_item_str(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    int c = str_cmp(*(const bt_str *)x->ref, *(const bt_str *)y->ref);
    if (c)
        return c;
    return x->index < y->index ? -1 : 1;
}

static int cmp_item_name(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    int c = strcmp((const char *)x->ref, (const char *)y->ref);
    if (c)
        return c;
    return x->index < y->index ? -1 : 1;
}

static int cmp_item_offset(const void *a, const void *b) {
    const sort_item *x = a, *y = b;
    uint64_t oa = *(const uint64_t *)x->ref, ob = *(const uint64_t *)y->ref;
    if (oa != ob)
        return oa < ob ? -1 : 1;
    return x->index < y->index ? -1 : 1;
}

static bt_status parse_kvs(reader *r, bt_gguf *g) {
    size_t n_strs = 0;
    for (size_t i = 0; i < g->n_kv; i++) {
        kv_entry *kv = &g->kvs[i];
        r->ctx_kind = "kv";
        r->ctx_index = i;
        r->ctx_name = (bt_str){NULL, 0};
        bt_status st = read_str(r, "key", &kv->key);
        if (st != BT_OK)
            return st;
        if (kv->key.len == 0)
            return fail(r, BT_ERR_FORMAT, "empty key");
        if (kv->key.len > GGUF_MAX_KEY)
            return fail(r, BT_ERR_FORMAT, "key length %zu > %u", kv->key.len, GGUF_MAX_KEY);
        r->ctx_name = kv->key;
        uint32_t t;
        st = read_u32(r, "value type", &t);
        if (st != BT_OK)
            return st;
        if (t >= BT_GGUF_TYPE_COUNT)
            return fail(r, BT_ERR_FORMAT, "unknown value type %" PRIu32, t);
        kv->type = (bt_gguf_type)t;
        kv->arr_type = BT_GGUF_TYPE_COUNT;
        kv->arr_len = 0;
        st =
            kv->type == BT_GGUF_ARRAY ? parse_array(r, kv, &n_strs) : parse_scalar(r, kv->type, kv);
        if (st != BT_OK)
            return st;
        st = check_known_key(r, kv);
        if (st != BT_OK)
            return st;
    }
    r->ctx_kind = NULL;

    /* Duplicate keys: sort an index by key and compare neighbours. */
    sort_item *items = NULL;
    if (g->n_kv) {
        items = malloc(g->n_kv * sizeof *items);
        g->kv_order = malloc(g->n_kv * sizeof *g->kv_order);
        if (!items || !g->kv_order) {
            free(items);
            return bt_error_set(r->err, BT_ERR_NOMEM, "gguf: out of memory indexing %zu keys",
                                g->n_kv);
        }
        for (size_t i = 0; i < g->n_kv; i++)
            items[i] = (sort_item){&g->kvs[i].key, i};
        qsort(items, g->n_kv, sizeof *items, cmp_item_str);
        for (size_t i = 0; i < g->n_kv; i++) {
            g->kv_order[i] = items[i].index;
            if (i && str_cmp(g->kvs[items[i - 1].index].key, g->kvs[items[i].index].key) == 0) {
                bt_str k = g->kvs[items[i].index].key;
                size_t a = items[i - 1].index, b = items[i].index;
                free(items);
                return bt_error_set(r->err, BT_ERR_FORMAT,
                                    "gguf: duplicate key '%.*s' (kv %zu and kv %zu)",
                                    k.len > 80 ? 80 : (int)k.len, k.ptr, a, b);
            }
        }
        free(items);
    }

    /* Index every string-array element: one allocation, filled from bytes already checked. */
    g->n_strs = n_strs;
    if (n_strs) {
        g->strs = malloc(n_strs * sizeof *g->strs);
        if (!g->strs)
            return bt_error_set(r->err, BT_ERR_NOMEM,
                                "gguf: out of memory indexing %zu array strings", n_strs);
        for (size_t i = 0; i < g->n_kv; i++) {
            const kv_entry *kv = &g->kvs[i];
            if (kv->type != BT_GGUF_ARRAY || kv->arr_type != BT_GGUF_STRING)
                continue;
            const uint8_t *p = kv->val;
            for (uint64_t j = 0; j < kv->arr_len; j++) {
                size_t len = (size_t)load_u64(p);
                g->strs[kv->str_first + j] = (bt_str){(const char *)p + 8, len};
                p += 8 + len;
            }
        }
    }
    return BT_OK;
}

static const kv_entry *find(const bt_gguf *g, const char *key) {
    bt_str k = {key, strlen(key)};
    size_t lo = 0, hi = g->n_kv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = str_cmp(g->kvs[g->kv_order[mid]].key, k);
        if (c == 0)
            return &g->kvs[g->kv_order[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bt_status parse_alignment(reader *r, bt_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kv_entry *kv = find(g, "general.alignment");
    if (!kv)
        return BT_OK;
    uint32_t a = load_u32(kv->val); /* type checked as u32 by check_known_key */
    if (a == 0 || (a & (a - 1)) != 0)
        return bt_error_set(r->err, BT_ERR_FORMAT,
                            "gguf: general.alignment %" PRIu32 " is not a non-zero power of two",
                            a);
    g->alignment = a;
    return BT_OK;
}

/* ---- tensor directory ---- */

static bt_status parse_tensor(reader *r, bt_gguf *g, size_t i) {
    bt_gguf_tensor *t = &g->tensors[i];
    r->ctx_kind = "tensor";
    r->ctx_index = i;
    r->ctx_name = (bt_str){NULL, 0};
    bt_str name;
    bt_status st = read_str(r, "tensor name", &name);
    if (st != BT_OK)
        return st;
    if (name.len > BT_GGUF_MAX_NAME) {
        r->ctx_name = name;
        return fail(r, BT_ERR_FORMAT, "name length %zu > %d", name.len, BT_GGUF_MAX_NAME);
    }
    if (memchr(name.ptr, '\0', name.len))
        return fail(r, BT_ERR_FORMAT, "name contains a NUL byte");
    memcpy(g->names[i], name.ptr, name.len);
    g->names[i][name.len] = '\0';
    t->name = g->names[i];
    r->ctx_name = name;

    uint32_t n_dims;
    st = read_u32(r, "n_dims", &n_dims);
    if (st != BT_OK)
        return st;
    if (n_dims < 1 || n_dims > BT_GGUF_MAX_DIMS)
        return fail(r, BT_ERR_FORMAT, "n_dims %" PRIu32 " %s", n_dims, n_dims < 1 ? "< 1" : "> 4");
    t->n_dims = n_dims;
    int64_t n_elems = 1;
    for (uint32_t d = 0; d < BT_GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < n_dims) {
            st = read_u64(r, "ne", &ne);
            if (st != BT_OK)
                return st;
            if (ne > INT64_MAX)
                return fail(r, BT_ERR_FORMAT, "ne[%" PRIu32 "] %" PRId64 " is negative", d,
                            (int64_t)ne);
            if (ne == 0)
                return fail(r, BT_ERR_FORMAT, "ne[%" PRIu32 "] is 0", d);
        }
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elems, t->ne[d], &n_elems))
            return fail(r, BT_ERR_FORMAT, "element count overflows at ne[%" PRIu32 "] %" PRId64, d,
                        t->ne[d]);
    }

    uint32_t type;
    st = read_u32(r, "tensor type", &type);
    if (st != BT_OK)
        return st;
    const bt_type_traits *tr = bt_type_traits_of(type);
    if (!tr || tr->block_elems == 0 || tr->block_bytes == 0)
        return fail(r, BT_ERR_FORMAT, "unknown tensor type %" PRIu32, type);
    t->type = type;
    if (t->ne[0] % tr->block_elems != 0)
        return fail(r, BT_ERR_FORMAT, "ne[0] %" PRId64 " is not a multiple of the %s block size %u",
                    t->ne[0], tr->name, tr->block_elems);
    uint64_t row_bytes, n_bytes, rows;
    rows = (uint64_t)(n_elems / t->ne[0]);
    if (__builtin_mul_overflow((uint64_t)(t->ne[0] / tr->block_elems), (uint64_t)tr->block_bytes,
                               &row_bytes) ||
        __builtin_mul_overflow(row_bytes, rows, &n_bytes) || n_bytes > SIZE_MAX)
        return fail(r, BT_ERR_FORMAT, "byte size overflows (%" PRId64 " elements of %s)", n_elems,
                    tr->name);
    t->row_bytes = (size_t)row_bytes;
    t->n_bytes = (size_t)n_bytes;

    st = read_u64(r, "tensor offset", &t->offset);
    if (st != BT_OK)
        return st;
    if (t->offset % g->alignment != 0)
        return fail(r, BT_ERR_FORMAT, "offset %" PRIu64 " is not aligned to %zu", t->offset,
                    g->alignment);
    return BT_OK;
}

static bt_status check_tensor_data(reader *r, bt_gguf *g) {
    size_t data_size = g->size - g->data_offset;
    for (size_t i = 0; i < g->n_tensors; i++) {
        bt_gguf_tensor *t = &g->tensors[i];
        uint64_t end;
        if (__builtin_add_overflow(t->offset, (uint64_t)t->n_bytes, &end) || end > data_size)
            return bt_error_set(r->err, BT_ERR_FORMAT,
                                "gguf: tensor '%s': data [%" PRIu64 ", +%zu) outside the %zu-byte "
                                "data section (past end of file)",
                                t->name, t->offset, t->n_bytes, data_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2)
        return BT_OK;
    sort_item *items = malloc(g->n_tensors * sizeof *items);
    if (!items)
        return bt_error_set(r->err, BT_ERR_NOMEM, "gguf: out of memory sorting tensors");
    for (size_t i = 0; i < g->n_tensors; i++)
        items[i] = (sort_item){&g->tensors[i].offset, i};
    qsort(items, g->n_tensors, sizeof *items, cmp_item_offset);
    bt_status st = BT_OK;
    for (size_t i = 1; i < g->n_tensors; i++) {
        const bt_gguf_tensor *a = &g->tensors[items[i - 1].index];
        const bt_gguf_tensor *b = &g->tensors[items[i].index];
        if (a->offset + a->n_bytes > b->offset && a->n_bytes && b->n_bytes) {
            st = bt_error_set(r->err, BT_ERR_FORMAT,
                              "gguf: tensor '%s' [%" PRIu64 ", +%zu) overlaps tensor '%s' at "
                              "offset %" PRIu64,
                              a->name, a->offset, a->n_bytes, b->name, b->offset);
            break;
        }
    }
    free(items);
    return st;
}

static bt_status index_tensor_names(reader *r, bt_gguf *g) {
    if (!g->n_tensors)
        return BT_OK;
    sort_item *items = malloc(g->n_tensors * sizeof *items);
    g->tensor_order = malloc(g->n_tensors * sizeof *g->tensor_order);
    if (!items || !g->tensor_order) {
        free(items);
        return bt_error_set(r->err, BT_ERR_NOMEM, "gguf: out of memory indexing tensors");
    }
    for (size_t i = 0; i < g->n_tensors; i++)
        items[i] = (sort_item){g->tensors[i].name, i};
    qsort(items, g->n_tensors, sizeof *items, cmp_item_name);
    bt_status st = BT_OK;
    for (size_t i = 0; i < g->n_tensors; i++) {
        g->tensor_order[i] = items[i].index;
        if (i &&
            strcmp(g->tensors[items[i - 1].index].name, g->tensors[items[i].index].name) == 0) {
            st = bt_error_set(r->err, BT_ERR_FORMAT,
                              "gguf: duplicate tensor name '%s' (tensor %zu and tensor %zu)",
                              g->tensors[items[i].index].name, items[i - 1].index, items[i].index);
            break;
        }
    }
    free(items);
    return st;
}

static bt_status parse(bt_gguf *g, bt_error *err) {
    reader r = {.p = g->base, .size = g->size, .pos = 0, .err = err};
    const uint8_t *magic = NULL;
    bt_status st = take(&r, 4, "magic", &magic);
    if (st != BT_OK)
        return st;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0)
        return fail(&r, BT_ERR_FORMAT, "bad magic %02x %02x %02x %02x (expected \"GGUF\")",
                    magic[0], magic[1], magic[2], magic[3]);
    st = read_u32(&r, "version", &g->version);
    if (st != BT_OK)
        return st;
    if (g->version != 2 && g->version != 3) {
        if (g->version == 1)
            return fail(&r, BT_ERR_UNSUPPORTED, "version 1 is not supported (32-bit counts)");
        if ((g->version & 0xffff) == 0)
            return fail(&r, BT_ERR_UNSUPPORTED,
                        "version %" PRIu32 " (0x%08" PRIx32 "): big-endian files are not supported",
                        g->version, g->version);
        return fail(&r, BT_ERR_UNSUPPORTED, "version %" PRIu32 " is not 2 or 3", g->version);
    }
    uint64_t n_tensors, n_kv;
    st = read_u64(&r, "tensor_count", &n_tensors);
    if (st == BT_OK)
        st = read_u64(&r, "kv_count", &n_kv);
    if (st != BT_OK)
        return st;
    size_t left = remaining(&r);
    if (n_tensors > left / GGUF_MIN_TENSOR_BYTES)
        return fail(&r, BT_ERR_FORMAT,
                    "tensor_count %" PRIu64 " cannot fit in the %zu bytes after the header",
                    n_tensors, left);
    if (n_kv > left / GGUF_MIN_KV_BYTES)
        return fail(&r, BT_ERR_FORMAT,
                    "kv_count %" PRIu64 " cannot fit in the %zu bytes after the header", n_kv,
                    left);
    if (n_tensors * GGUF_MIN_TENSOR_BYTES + n_kv * GGUF_MIN_KV_BYTES > left)
        return fail(&r, BT_ERR_FORMAT,
                    "tensor_count %" PRIu64 " and kv_count %" PRIu64
                    " cannot fit in the %zu bytes after the header",
                    n_tensors, n_kv, left);
    g->n_kv = (size_t)n_kv;
    g->n_tensors = (size_t)n_tensors;

    if (g->n_kv) {
        g->kvs = calloc(g->n_kv, sizeof *g->kvs);
        if (!g->kvs)
            return bt_error_set(err, BT_ERR_NOMEM, "gguf: out of memory for %zu kvs", g->n_kv);
    }
    st = parse_kvs(&r, g);
    g->kv_end = r.pos;
    if (st == BT_OK)
        st = parse_alignment(&r, g);
    if (st != BT_OK)
        return st;

    if (g->n_tensors) {
        g->tensors = calloc(g->n_tensors, sizeof *g->tensors);
        g->names = calloc(g->n_tensors, sizeof *g->names);
        if (!g->tensors || !g->names)
            return bt_error_set(err, BT_ERR_NOMEM, "gguf: out of memory for %zu tensors",
                                g->n_tensors);
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        st = parse_tensor(&r, g, i);
        if (st != BT_OK)
            return st;
    }
    r.ctx_kind = NULL;
    st = index_tensor_names(&r, g);
    if (st != BT_OK)
        return st;

    /* data_start = align_up(end of tensor infos). A file with no tensors may end right after
     * the infos without padding (vocab-only files do). */
    size_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    if (pad > remaining(&r)) {
        if (g->n_tensors)
            return fail(&r, BT_ERR_FORMAT,
                        "truncated before the data section: need %zu padding bytes at offset %zu, "
                        "%zu left",
                        pad, r.pos, remaining(&r));
        pad = remaining(&r);
    }
    g->data_offset = r.pos + pad;
    return check_tensor_data(&r, g);
}

/* ---- truncation of a mapped file ----
 *
 * A model file truncated (or rewritten in place) while mapped makes the next read of a page
 * past its new end raise SIGBUS. The mapped regions are listed here so that the handler can
 * tell such a fault from any other and say which file it was. A slot is published by storing
 * its base last (release) and read by the handler with acquire; the handler only loads
 * atomics, write()s a message prepared at open and _exit()s. */

#define WATCH_SLOTS 8
#define WATCH_MSG 4200

typedef struct watch_slot {
    _Atomic uintptr_t base; /* 0: free */
    size_t size;
    size_t msg_len;
    char msg[WATCH_MSG];
} watch_slot;

static watch_slot watched[WATCH_SLOTS];
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction prev_sigbus; /* the handler before ours, for faults that are not ours */

static void watch_mapping(const void *base, size_t size, const char *path) {
    pthread_mutex_lock(&watch_lock);
    for (int i = 0; i < WATCH_SLOTS; i++) {
        watch_slot *w = &watched[i];
        if (atomic_load_explicit(&w->base, memory_order_relaxed))
            continue;
        w->size = size;
        int n = snprintf(w->msg, sizeof w->msg,
                         "baton: model file '%s' was truncated or changed while in use\n", path);
        w->msg_len = n < 0 ? 0 : (size_t)n < sizeof w->msg ? (size_t)n : sizeof w->msg - 1;
        atomic_store_explicit(&w->base, (uintptr_t)base, memory_order_release);
        break; /* all slots taken: this mapping's faults end the process unexplained */
    }
    pthread_mutex_unlock(&watch_lock);
}

static void unwatch_mapping(const void *base) {
    pthread_mutex_lock(&watch_lock);
    for (int i = 0; i < WATCH_SLOTS; i++)
        if (atomic_load_explicit(&watched[i].base, memory_order_relaxed) == (uintptr_t)base)
            atomic_store_explicit(&watched[i].base, 0, memory_order_release);
    pthread_mutex_unlock(&watch_lock);
}

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < WATCH_SLOTS; i++) {
        watch_slot *w = &watched[i];
        uintptr_t b = atomic_load_explicit(&w->base, memory_order_acquire);
        if (b && a >= b && a - b < w->size) {
            ssize_t r = write(STDERR_FILENO, w->msg, w->msg_len);
            (void)r;
            _exit(BT_GGUF_EXIT_TRUNCATED);
        }
    }
    /* Not a mapped model: what would have happened without us. */
    if (prev_sigbus.sa_flags & SA_SIGINFO) {
        if (prev_sigbus.sa_sigaction) {
            prev_sigbus.sa_sigaction(sig, si, uctx);
            return;
        }
    } else if (prev_sigbus.sa_handler != SIG_DFL && prev_sigbus.sa_handler != SIG_IGN) {
        prev_sigbus.sa_handler(sig);
        return;
    }
    signal(SIGBUS, SIG_DFL);
    raise(SIGBUS);
}

void bt_gguf_catch_truncation(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &old) != 0)
        return;
    /* Called again after a library (Open MPI) put its own handler in: chain to that one. */
    if (!((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_sigbus))
        prev_sigbus = old;
}

/* ---- open / free ---- */

static bt_status open_common(const void *data, size_t size, bool mapped, bt_gguf **out,
                             bt_error *err) {
    bt_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        if (mapped)
            munmap((void *)data, size);
        return bt_error_set(err, BT_ERR_NOMEM, "gguf: out of memory");
    }
    g->base = data;
    g->size = size;
    g->mapped = mapped;
    bt_status st = parse(g, err);
    if (st != BT_OK) {
        bt_gguf_free(g);
        return st;
    }
    *out = g;
    return BT_OK;
}

bt_status bt_gguf_open_memory(const void *data, size_t size, bt_gguf **out, bt_error *err) {
    *out = NULL;
    if (!data && size)
        return bt_error_set(err, BT_ERR_INVALID_ARG, "gguf: NULL data with size %zu", size);
    static const uint8_t empty[1];
    return open_common(data ? data : empty, size, false, out, err);
}

bt_status bt_gguf_open(const char *path, bt_gguf **out, bt_error *err) {
    *out = NULL;
    /* O_NONBLOCK: a FIFO would block open() until a writer came; it is refused below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return bt_error_set(err, BT_ERR_IO, "gguf: cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return bt_error_set(err, BT_ERR_IO, "gguf: cannot stat %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return bt_error_set(err, BT_ERR_IO, "gguf: %s is not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return bt_error_set(err, BT_ERR_LIMIT, "gguf: %s is too large to map", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size == 0) {
        close(fd);
        bt_status st = bt_gguf_open_memory(NULL, 0, out, err);
        return st == BT_OK ? st : bt_error_wrap(err, "%s", path);
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (p == MAP_FAILED)
        return bt_error_set(err, BT_ERR_IO, "gguf: cannot map %s (%zu bytes): %s", path, size,
                            strerror(e));
    bt_status st = open_common(p, size, true, out, err);
    if (st != BT_OK)
        bt_error_wrap(err, "%s", path);
    else
        watch_mapping(p, size, path);
    return st;
}

void bt_gguf_free(bt_gguf *g) {
    if (!g)
        return;
    if (g->mapped) {
        unwatch_mapping(g->base);
        munmap((void *)g->base, g->size);
    }
    free(g->kvs);
    free(g->kv_order);
    free(g->strs);
    free(g->tensors);
    free(g->names);
    free(g->tensor_order);
    free(g);
}

void bt_gguf_drop_pages(const bt_gguf *g, const void *p, size_t n) {
    if (!g->mapped || n == 0)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
    assert((uintptr_t)p >= (uintptr_t)g->base && (uintptr_t)p + n <= (uintptr_t)g->base + g->size);
    if (hi > lo) /* advice only: on failure the pages just stay */
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* ---- simple accessors ---- */

uint32_t bt_gguf_version(const bt_gguf *g) {
    return g->version;
}

size_t bt_gguf_alignment(const bt_gguf *g) {
    return g->alignment;
}

size_t bt_gguf_file_size(const bt_gguf *g) {
    return g->size;
}

const void *bt_gguf_base(const bt_gguf *g) {
    return g->base;
}

size_t bt_gguf_data_offset(const bt_gguf *g) {
    return g->data_offset;
}

size_t bt_gguf_kv_end(const bt_gguf *g) {
    return g->kv_end;
}

size_t bt_gguf_n_kv(const bt_gguf *g) {
    return g->n_kv;
}

bt_str bt_gguf_kv_key(const bt_gguf *g, size_t i) {
    assert(i < g->n_kv);
    return g->kvs[i].key;
}

bt_gguf_type bt_gguf_kv_type(const bt_gguf *g, size_t i) {
    assert(i < g->n_kv);
    return g->kvs[i].type;
}

bt_gguf_type bt_gguf_kv_arr_type(const bt_gguf *g, size_t i) {
    assert(i < g->n_kv);
    return g->kvs[i].arr_type;
}

uint64_t bt_gguf_kv_arr_len(const bt_gguf *g, size_t i) {
    assert(i < g->n_kv);
    return g->kvs[i].arr_len;
}

int64_t bt_gguf_find_kv(const bt_gguf *g, const char *key) {
    const kv_entry *kv = find(g, key);
    return kv ? (int64_t)(kv - g->kvs) : -1;
}

/* ---- typed getters ---- */

static bt_status lookup(const bt_gguf *g, const char *key, const kv_entry **out, bt_error *err) {
    *out = find(g, key);
    if (!*out)
        return bt_error_set(err, BT_ERR_NOT_FOUND, "gguf: key '%s' not found", key);
    return BT_OK;
}

static bt_status wrong_type(const kv_entry *kv, const char *key, const char *want, bt_error *err) {
    if (kv->type == BT_GGUF_ARRAY)
        return bt_error_set(err, BT_ERR_FORMAT, "gguf: key '%s' has type array of %s, expected %s",
                            key, bt_gguf_type_name(kv->arr_type), want);
    return bt_error_set(err, BT_ERR_FORMAT, "gguf: key '%s' has type %s, expected %s", key,
                        bt_gguf_type_name(kv->type), want);
}

/* Integer value of an integer or bool kv: *neg tells whether it is negative (then *mag is
 * the two's complement i64 value), else *mag is the unsigned value. */
static bool int_value(const kv_entry *kv, bool *neg, uint64_t *u, int64_t *s) {
    const uint8_t *p = kv->val;
    int64_t v;
    switch (kv->type) {
    case BT_GGUF_U8:
    case BT_GGUF_BOOL:
        v = p[0];
        break;
    case BT_GGUF_I8:
        v = (int8_t)p[0];
        break;
    case BT_GGUF_U16:
        v = (uint16_t)(p[0] | p[1] << 8);
        break;
    case BT_GGUF_I16:
        v = (int16_t)(uint16_t)(p[0] | p[1] << 8);
        break;
    case BT_GGUF_U32:
        v = load_u32(p);
        break;
    case BT_GGUF_I32:
        v = (int32_t)load_u32(p);
        break;
    case BT_GGUF_U64:
        *neg = false;
        *u = load_u64(p);
        *s = 0;
        return true;
    case BT_GGUF_I64:
        v = (int64_t)load_u64(p);
        break;
    default:
        return false;
    }
    *neg = v < 0;
    *s = v;
    *u = v < 0 ? 0 : (uint64_t)v;
    return true;
}

bt_status bt_gguf_get_u32(const bt_gguf *g, const char *key, uint32_t *out, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    bool neg;
    uint64_t u;
    int64_t s;
    if (!int_value(kv, &neg, &u, &s))
        return wrong_type(kv, key, "u32", err);
    if (neg || u > UINT32_MAX)
        return bt_error_set(
            err, BT_ERR_FORMAT, "gguf: key '%s' (%s) value %s%" PRIu64 " is out of range for u32",
            key, bt_gguf_type_name(kv->type), neg ? "-" : "", neg ? (uint64_t)0 - (uint64_t)s : u);
    *out = (uint32_t)u;
    return BT_OK;
}

bt_status bt_gguf_get_i64(const bt_gguf *g, const char *key, int64_t *out, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    bool neg;
    uint64_t u;
    int64_t s;
    if (!int_value(kv, &neg, &u, &s))
        return wrong_type(kv, key, "i64", err);
    if (neg) {
        *out = s;
        return BT_OK;
    }
    if (u > INT64_MAX)
        return bt_error_set(err, BT_ERR_FORMAT,
                            "gguf: key '%s' (%s) value %" PRIu64 " is out of range for i64", key,
                            bt_gguf_type_name(kv->type), u);
    *out = (int64_t)u;
    return BT_OK;
}

bt_status bt_gguf_get_f32(const bt_gguf *g, const char *key, float *out, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    if (kv->type == BT_GGUF_F32) {
        memcpy(out, kv->val, 4);
        return BT_OK;
    }
    if (kv->type == BT_GGUF_F64) {
        double d;
        memcpy(&d, kv->val, 8);
        if (d == d && (d > 3.4028234663852886e38 || d < -3.4028234663852886e38) && d != 1.0 / 0.0 &&
            d != -1.0 / 0.0)
            return bt_error_set(err, BT_ERR_FORMAT,
                                "gguf: key '%s' (f64) value %g is out of range for f32", key, d);
        *out = (float)d;
        return BT_OK;
    }
    return wrong_type(kv, key, "f32", err);
}

bt_status bt_gguf_get_bool(const bt_gguf *g, const char *key, bool *out, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    if (kv->type != BT_GGUF_BOOL)
        return wrong_type(kv, key, "bool", err);
    *out = kv->val[0] != 0;
    return BT_OK;
}

bt_status bt_gguf_get_str(const bt_gguf *g, const char *key, bt_str *out, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    if (kv->type != BT_GGUF_STRING)
        return wrong_type(kv, key, "string", err);
    *out = kv->str;
    return BT_OK;
}

bt_status bt_gguf_get_arr(const bt_gguf *g, const char *key, bt_gguf_type elem, const void **data,
                          uint64_t *n, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    if (elem == BT_GGUF_STRING || elem == BT_GGUF_ARRAY || bt_gguf_type_size(elem) == 0)
        return bt_error_set(err, BT_ERR_INVALID_ARG,
                            "gguf: key '%s': bt_gguf_get_arr needs a fixed-size element type, "
                            "not %s",
                            key, bt_gguf_type_name(elem));
    if (kv->type != BT_GGUF_ARRAY || kv->arr_type != elem) {
        char want[32];
        snprintf(want, sizeof want, "array of %s", bt_gguf_type_name(elem));
        return wrong_type(kv, key, want, err);
    }
    *data = kv->val;
    *n = kv->arr_len;
    return BT_OK;
}

bt_status bt_gguf_get_arr_str_len(const bt_gguf *g, const char *key, uint64_t *n, bt_error *err) {
    const kv_entry *kv;
    bt_status st = lookup(g, key, &kv, err);
    if (st != BT_OK)
        return st;
    if (kv->type != BT_GGUF_ARRAY || kv->arr_type != BT_GGUF_STRING)
        return wrong_type(kv, key, "array of string", err);
    *n = kv->arr_len;
    return BT_OK;
}

bt_str bt_gguf_get_arr_str(const bt_gguf *g, const char *key, uint64_t i) {
    const kv_entry *kv = find(g, key);
    assert(kv && kv->type == BT_GGUF_ARRAY && kv->arr_type == BT_GGUF_STRING);
    assert(i < kv->arr_len);
    return g->strs[kv->str_first + (size_t)i];
}

/* ---- tensors ---- */

size_t bt_gguf_n_tensors(const bt_gguf *g) {
    return g->n_tensors;
}

const bt_gguf_tensor *bt_gguf_tensor_at(const bt_gguf *g, size_t i) {
    assert(i < g->n_tensors);
    return &g->tensors[i];
}

const bt_gguf_tensor *bt_gguf_find_tensor(const bt_gguf *g, const char *name) {
    size_t lo = 0, hi = g->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(g->tensors[g->tensor_order[mid]].name, name);
        if (c == 0)
            return &g->tensors[g->tensor_order[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}
