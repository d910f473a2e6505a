/*
 * requant.c - rewrites a GGUF with each tensor in the type a manifest names, the way
 * llama-quantize does it without an importance matrix: same metadata (general.file_type
 * moved to the end with the manifest's value, as llama.cpp's gguf_set_val does), each
 * tensor whose type changes dequantized with ggml's arithmetic (bt_dequant_row) and
 * requantized with ggml's reference quantizer (tests/support/quantize_ref.c); a tensor that
 * keeps its type is copied byte for byte (llama-quantize copies it too).
 *
 * usage: requant IN.gguf MANIFEST OUT.gguf
 *
 * MANIFEST: one "TENSOR_NAME TYPE" per line (TYPE as quantize_ref names it: f32, q8_0,
 * q5_0, q4_K, q6_K, ...), '#' comments and blank lines ignored, and optionally one line
 * "general.file_type N" (the llama_ftype number: 15 for Q4_K_M, 7 for Q8_0). Every tensor
 * of IN must be named exactly once, and nothing else.
 *
 * Used by tests/e2e/test_quant_variants.sh (the Q4_K_M and Q8_0 variants of SmolLM2, built
 * from the manifests in tests/data/quant/) and tests/bench/make_quant_variants.sh (which checks
 * that the result is llama-quantize's, tensor by tensor and as a whole). Tensors are written
 * in llama-quantize's order (by layer, then name), so for SmolLM2 the whole file is
 * llama-quantize's byte for byte. Single-threaded: SmolLM2 takes seconds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "quantize_ref.h"
#include "tensor_type.h"

#define FILE_TYPE_KEY "general.file_type"

typedef struct manifest_entry {
    char name[BT_GGUF_MAX_NAME + 1];
    bt_type type;
    bool used; /* matched a tensor of IN */
} manifest_entry;

typedef struct manifest {
    manifest_entry *entries; /* owned; free() */
    size_t n;
    bool has_file_type;
    uint32_t file_type;
} manifest;

static bt_status manifest_read(const char *path, manifest *m, bt_error *err) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f)
        return bt_error_set(err, BT_ERR_IO, "manifest '%s': %s", path, strerror(errno));
    char line[512];
    size_t cap = 0, lineno = 0;
    bt_status st = BT_OK;
    while (st == BT_OK && fgets(line, sizeof line, f)) {
        lineno++;
        char name[256], type[64], extra[8];
        int n = sscanf(line, "%255s %63s %7s", name, type, extra);
        if (n <= 0 || name[0] == '#')
            continue;
        if (n != 2) {
            st = bt_error_set(err, BT_ERR_FORMAT,
                              "manifest '%s' line %zu: want 'TENSOR TYPE', got '%.80s'", path,
                              lineno, strtok(line, "\n"));
            break;
        }
        if (strcmp(name, FILE_TYPE_KEY) == 0) {
            char *end;
            unsigned long v = strtoul(type, &end, 10);
            if (*end || v > UINT32_MAX) {
                st =
                    bt_error_set(err, BT_ERR_FORMAT, "manifest '%s' line %zu: %s '%s' is not a u32",
                                 path, lineno, FILE_TYPE_KEY, type);
                break;
            }
            m->has_file_type = true;
            m->file_type = (uint32_t)v;
            continue;
        }
        if (strlen(name) > BT_GGUF_MAX_NAME) {
            st = bt_error_set(err, BT_ERR_FORMAT,
                              "manifest '%s' line %zu: tensor name '%s' is over %d bytes", path,
                              lineno, name, BT_GGUF_MAX_NAME);
            break;
        }
        bt_type t;
        if (bt_quantize_type_from_name(type, &t) != BT_OK) {
            char known[256];
            bt_quantize_type_list(known, sizeof known);
            st = bt_error_set(err, BT_ERR_FORMAT,
                              "manifest '%s' line %zu: tensor %s: type '%s' has no quantizer "
                              "(known: %s)",
                              path, lineno, name, type, known);
            break;
        }
        for (size_t i = 0; i < m->n; i++) {
            if (strcmp(m->entries[i].name, name) == 0) {
                st = bt_error_set(err, BT_ERR_FORMAT,
                                  "manifest '%s' line %zu: tensor %s named twice", path, lineno,
                                  name);
                break;
            }
        }
        if (st != BT_OK)
            break;
        if (m->n == cap) {
            cap = cap ? 2 * cap : 256;
            manifest_entry *e = realloc(m->entries, cap * sizeof *e);
            if (!e) {
                st = bt_error_set(err, BT_ERR_NOMEM, "manifest '%s': out of memory", path);
                break;
            }
            m->entries = e;
        }
        manifest_entry *e = &m->entries[m->n++];
        snprintf(e->name, sizeof e->name, "%s", name);
        e->type = t;
        e->used = false;
    }
    fclose(f);
    if (st != BT_OK) {
        free(m->entries);
        m->entries = NULL;
    }
    return st;
}

/* Bytes of the metadata value of type t at p (bounded by end); 0 when malformed. The reader
 * validated the file at open, so this only walks it. */
static size_t kv_value_size(const uint8_t *p, const uint8_t *end, uint32_t t) {
    if (t == BT_GGUF_STRING) {
        uint64_t n;
        if (end - p < 8)
            return 0;
        memcpy(&n, p, 8);
        return n <= (uint64_t)(end - p - 8) ? 8 + (size_t)n : 0;
    }
    if (t == BT_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if (end - p < 12)
            return 0;
        memcpy(&et, p, 4);
        memcpy(&n, p + 4, 8);
        size_t off = 12;
        for (uint64_t i = 0; i < n; i++) {
            size_t s = kv_value_size(p + off, end, et);
            if (s == 0)
                return 0;
            off += s;
        }
        return off;
    }
    size_t s = bt_gguf_type_size((bt_gguf_type)t);
    return s && s <= (size_t)(end - p) ? s : 0;
}

/* llama-quantize's tensor order (llama_model_loader's weight_name_comparer): tensors outside
 * the blocks first, then block by block ("blk.N." numerically), by name within each. Keeping
 * it makes requant's file llama-quantize's byte for byte, header included. */
typedef struct order_key {
    int layer; /* N of "blk.N.", -1 for the others */
    const char *name;
    size_t index; /* in the source file */
} order_key;

static int order_cmp(const void *pa, const void *pb) {
    const order_key *a = pa, *b = pb;
    if (a->layer != b->layer)
        return a->layer < b->layer ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Fills order[0..n_t) with source indices in llama-quantize's order. */
static bt_status quantize_order(const bt_gguf *g, size_t *order, bt_error *err) {
    const size_t n_t = bt_gguf_n_tensors(g);
    order_key *keys = malloc((n_t ? n_t : 1) * sizeof *keys);
    if (!keys)
        return bt_error_set(err, BT_ERR_NOMEM, "tensor order: out of memory");
    for (size_t i = 0; i < n_t; i++) {
        const char *name = bt_gguf_tensor_at(g, i)->name;
        keys[i].layer = -1;
        if (sscanf(name, "blk.%d.", &keys[i].layer) != 1)
            keys[i].layer = -1;
        keys[i].name = name;
        keys[i].index = i;
    }
    qsort(keys, n_t, sizeof *keys, order_cmp);
    for (size_t i = 0; i < n_t; i++)
        order[i] = keys[i].index;
    free(keys);
    return BT_OK;
}

/* Header: the metadata of g verbatim except general.file_type, which goes last with the
 * manifest's value (llama-quantize's order), then one info per tensor, in `order`, of the
 * type in `types` (indexed like g's tensors). */
static bt_status write_header(const bt_gguf *g, const manifest *m, const bt_type *types,
                              const size_t *order, bt_gw_buf *b, bt_error *err) {
    const uint8_t *base = bt_gguf_base(g);
    const uint8_t *p = base + BT_GGUF_KV_BEGIN, *end = base + bt_gguf_kv_end(g);
    const size_t n_kv = bt_gguf_n_kv(g), n_t = bt_gguf_n_tensors(g);
    const bool had = bt_gguf_find_kv(g, FILE_TYPE_KEY) >= 0;
    bt_gw_buf_bytes(b, "GGUF", 4);
    bt_gw_buf_u32(b, bt_gguf_version(g));
    bt_gw_buf_u64(b, n_t);
    bt_gw_buf_u64(b, n_kv + (m->has_file_type && !had ? 1 : 0));
    for (size_t i = 0; i < n_kv; i++) {
        uint64_t klen;
        memcpy(&klen, p, 8);
        const uint8_t *vp = p + 8 + klen + 4;
        uint32_t t;
        memcpy(&t, vp - 4, 4);
        size_t vs = kv_value_size(vp, end, t);
        if (vs == 0)
            return bt_error_set(err, BT_ERR_FORMAT,
                                "metadata key %zu: value of type %u runs past the metadata", i, t);
        bool is_ft = klen == strlen(FILE_TYPE_KEY) && memcmp(p + 8, FILE_TYPE_KEY, klen) == 0;
        if (!(is_ft && m->has_file_type))
            bt_gw_buf_bytes(b, p, (size_t)(vp + vs - p));
        p = vp + vs;
    }
    if (m->has_file_type) {
        bt_gw_buf_str(b, FILE_TYPE_KEY);
        bt_gw_buf_u32(b, BT_GGUF_U32);
        bt_gw_buf_u32(b, m->file_type);
    }
    const size_t align = bt_gguf_alignment(g);
    uint64_t offset = 0;
    for (size_t i = 0; i < n_t; i++) {
        const size_t k = order[i];
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, k);
        bt_gw_buf_str(b, t->name);
        bt_gw_buf_u32(b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            bt_gw_buf_u64(b, (uint64_t)t->ne[d]);
        bt_gw_buf_u32(b, (uint32_t)types[k]);
        bt_gw_buf_u64(b, offset);
        size_t row_bytes;
        bt_status st = bt_type_row_bytes((uint32_t)types[k], t->ne[0], &row_bytes);
        if (st != BT_OK)
            return bt_error_set(err, st,
                                "tensor %s: ne[0] %lld is not a multiple of %s's block of %u",
                                t->name, (long long)t->ne[0], bt_type_name((uint32_t)types[k]),
                                bt_type_traits_of((uint32_t)types[k])->block_elems);
        offset +=
            (row_bytes * (size_t)(t->ne[1] * t->ne[2] * t->ne[3]) + align - 1) / align * align;
    }
    bt_gw_buf_pad(b, align);
    return b->oom ? bt_error_set(err, BT_ERR_NOMEM, "header: out of memory") : BT_OK;
}

static bt_status write_pad(FILE *f, size_t n, const char *path, bt_error *err) {
    static const uint8_t zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k)
            return bt_error_set(err, BT_ERR_IO, "'%s': write: %s", path, strerror(errno));
        n -= k;
    }
    return BT_OK;
}

/* One tensor's data: copied when its type stays, else each row dequantized and quantized. */
static bt_status write_tensor(FILE *f, const bt_gguf_tensor *t, bt_type to, size_t align,
                              const char *path, bt_error *err) {
    const int64_t n_rows = t->ne[1] * t->ne[2] * t->ne[3];
    size_t out_row = 0;
    bt_status st = bt_type_row_bytes((uint32_t)to, t->ne[0], &out_row);
    if (st != BT_OK)
        return bt_error_set(err, st, "tensor %s: cannot be %s", t->name,
                            bt_type_name((uint32_t)to));
    const size_t n_bytes = out_row * (size_t)n_rows;
    if ((uint32_t)to == t->type) {
        if (fwrite(t->data, 1, t->n_bytes, f) != t->n_bytes)
            return bt_error_set(err, BT_ERR_IO, "'%s': write %s: %s", path, t->name,
                                strerror(errno));
    } else {
        const bt_type_traits *from = bt_type_traits_of(t->type);
        if (!from || !from->supported)
            return bt_error_set(err, BT_ERR_UNSUPPORTED,
                                "tensor %s: source type %s cannot be dequantized", t->name,
                                bt_type_name(t->type));
        float *row = malloc((size_t)t->ne[0] * sizeof *row);
        uint8_t *q = malloc(out_row);
        if (!row || !q) {
            free(row);
            free(q);
            return bt_error_set(err, BT_ERR_NOMEM, "tensor %s: out of memory", t->name);
        }
        for (int64_t r = 0; r < n_rows && st == BT_OK; r++) {
            bt_dequant_row((bt_type)t->type, (const uint8_t *)t->data + (size_t)r * t->row_bytes,
                           row, t->ne[0]);
            st = bt_quantize_row_ref(to, row, q, t->ne[0]);
            if (st != BT_OK)
                st = bt_error_set(err, st, "tensor %s row %lld: quantizing to %s: %s", t->name,
                                  (long long)r, bt_type_name((uint32_t)to), bt_status_str(st));
            else if (fwrite(q, 1, out_row, f) != out_row)
                st = bt_error_set(err, BT_ERR_IO, "'%s': write %s: %s", path, t->name,
                                  strerror(errno));
        }
        free(row);
        free(q);
        if (st != BT_OK)
            return st;
    }
    return write_pad(f, (n_bytes + align - 1) / align * align - n_bytes, path, err);
}

static bt_status requant(const char *in, const char *manifest_path, const char *out,
                         bt_error *err) {
    manifest m;
    bt_status st = manifest_read(manifest_path, &m, err);
    if (st != BT_OK)
        return st;
    bt_gguf *g = NULL;
    bt_type *types = NULL;
    size_t *order = NULL;
    FILE *f = NULL;
    bt_gw_buf hdr = {0};
    st = bt_gguf_open(in, &g, err);
    if (st != BT_OK)
        goto done;
    const size_t n_t = bt_gguf_n_tensors(g);
    types = calloc(n_t ? n_t : 1, sizeof *types);
    order = calloc(n_t ? n_t : 1, sizeof *order);
    if (!types || !order) {
        st = bt_error_set(err, BT_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_t && st == BT_OK; i++) {
        const bt_gguf_tensor *t = bt_gguf_tensor_at(g, i);
        size_t k = 0;
        while (k < m.n && strcmp(m.entries[k].name, t->name) != 0)
            k++;
        if (k == m.n)
            st = bt_error_set(err, BT_ERR_NOT_FOUND, "tensor %s of '%s' is not in manifest '%s'",
                              t->name, in, manifest_path);
        else {
            types[i] = m.entries[k].type;
            m.entries[k].used = true;
        }
    }
    for (size_t k = 0; k < m.n && st == BT_OK; k++)
        if (!m.entries[k].used)
            st = bt_error_set(err, BT_ERR_NOT_FOUND,
                              "manifest '%s' names tensor %s, which '%s' lacks", manifest_path,
                              m.entries[k].name, in);
    if (st != BT_OK)
        goto done;
    st = quantize_order(g, order, err);
    if (st != BT_OK)
        goto done;
    st = write_header(g, &m, types, order, &hdr, err);
    if (st != BT_OK)
        goto done;
    f = fopen(out, "wb");
    if (!f) {
        st = bt_error_set(err, BT_ERR_IO, "'%s': %s", out, strerror(errno));
        goto done;
    }
    if (fwrite(hdr.data, 1, hdr.len, f) != hdr.len)
        st = bt_error_set(err, BT_ERR_IO, "'%s': write header: %s", out, strerror(errno));
    for (size_t i = 0; i < n_t && st == BT_OK; i++)
        st = write_tensor(f, bt_gguf_tensor_at(g, order[i]), types[order[i]], bt_gguf_alignment(g),
                          out, err);
    if (fclose(f) != 0 && st == BT_OK)
        st = bt_error_set(err, BT_ERR_IO, "'%s': close: %s", out, strerror(errno));
    if (st != BT_OK)
        remove(out);
done:
    bt_gw_buf_free(&hdr);
    free(types);
    free(order);
    bt_gguf_free(g);
    free(m.entries);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: requant IN.gguf MANIFEST OUT.gguf\n");
        return 2;
    }
    bt_error err;
    bt_error_init(&err);
    if (requant(argv[1], argv[2], argv[3], &err) != BT_OK) {
        fprintf(stderr, "requant: %s\n", err.msg);
        return 1;
    }
    return 0;
}
